"""Issue 14, data side: what a new user ran, end to end (items 1, 4, 6, 8, 16, 17).

Runs ``eocausal run`` / ``eocausal embed`` / ``eocausal report`` through the CLI's ``main`` and
the Python calls a user makes, on rasters these tests write and, where present, on
../shared/data (tests marked ``shared``)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import eocausal
from eocausal.cli import main
from eocausal.data.arrays import ArraySource
from eocausal.data.embedding_files import read_embeddings, write_embeddings
from eocausal.data.raster import RasterSource
from eocausal.encoders import PropensityCNN, RandomFeatures
from eocausal.errors import DataFileError, DataQualityWarning, InputError, StudyFileError
from eocausal.study.schema import load_study

ROOT = Path(__file__).resolve().parents[1]
LANDSAT7 = ROOT.parent / "shared" / "data" / "landsat" / "landsat7.tif"
needs_landsat = pytest.mark.skipif(not LANDSAT7.is_file(), reason="../shared/data not present")

UTM = "EPSG:32612"
X0, Y0, RES, SIZE = 500_000.0, 4_500_000.0, 10.0, 200
DEAD, WATER = (0, 50), (150, 200)  # column ranges: all bands nodata; bands 1-2 nodata, band 3 data


# ----------------------------------------------------------------------------- fixtures
def write_raster(path: Path) -> Path:
    """3 float32 bands, 200 x 200 px of 10 m; nodata -9999 in every band on columns 0-49 and in
    bands 1 and 2 on columns 150-199 ("water": only the third band holds data)."""
    import rasterio
    from affine import Affine

    data = np.random.default_rng(7).uniform(1, 1000, (3, SIZE, SIZE)).astype(np.float32)
    data[:, :, DEAD[0]:DEAD[1]] = -9999
    data[:2, :, WATER[0]:WATER[1]] = -9999
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="float32",
                       crs=UTM, transform=Affine(RES, 0, X0, 0, -RES, Y0), nodata=-9999) as ds:
        ds.write(data)
    return path


def region_points(n_dead=20, n_land=60, n_water=20, seed=0) -> pd.DataFrame:
    """Points whose 50 m chips lie inside one region each; columns region, lon, lat (WGS84)."""
    from pyproj import Transformer

    rng = np.random.default_rng(seed)
    spans = {"dead": (DEAD[0] + 5, DEAD[1] - 5), "land": (DEAD[1] + 5, WATER[0] - 5),
             "water": (WATER[0] + 5, WATER[1] - 5)}
    rows = []
    for region, n in (("dead", n_dead), ("land", n_land), ("water", n_water)):
        cols = rng.uniform(*spans[region], n)
        rws = rng.uniform(5, SIZE - 5, n)
        rows.append(pd.DataFrame({"region": region, "x": X0 + cols * RES, "y": Y0 - rws * RES}))
    df = pd.concat(rows, ignore_index=True)
    lon, lat = Transformer.from_crs(UTM, 4326, always_xy=True).transform(df.x.to_numpy(), df.y.to_numpy())
    return df.assign(lon=lon, lat=lat).drop(columns=["x", "y"])


def units_table(points: pd.DataFrame, seed=1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(points)
    x1 = rng.normal(size=n)
    w = rng.binomial(1, 0.5, n)
    return points.assign(id=np.arange(1, n + 1) * 10, x1=x1, w=w, y=0.5 * w + x1 + rng.normal(size=n))


def study_text(raster, *, imagery: str = "", methods=("dim", "ipw-hajek"), n_features=32) -> str:
    return (
        '[study]\nname = "points"\nseed = 3\n'
        '[units]\nformat = "csv"\npath = "units.csv"\nid = "id"\ntreatment = "w"\noutcome = "y"\n'
        'covariates = ["x1"]\nlon = "lon"\nlat = "lat"\ncrs = "EPSG:4326"\n'
        f'[imagery]\nformat = "raster"\npath = {json.dumps(str(raster))}\nchip_size_m = 50\nchip_px = 5\n{imagery}'
        f"[encoder]\nn_features = {n_features}\n"
        f"[estimate]\nmethods = {json.dumps(list(methods))}\nfolds = 3\n"
    )


@pytest.fixture
def raster_study(tmp_path):
    raster = write_raster(tmp_path / "scene.tif")
    table = units_table(region_points())
    table.to_csv(tmp_path / "units.csv", index=False)

    def write(imagery: str = "", name: str = "study.toml", **kw) -> Path:
        p = tmp_path / name
        p.write_text(study_text(raster, imagery=imagery, **kw), encoding="utf-8")
        return p

    return write, table, raster


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("eocausal: warning:")]


# ----------------------------------------------------------------------------- item 1, 16: run with nodata chips
def test_run_finishes_and_the_manifest_counts_the_dropped_units(raster_study, tmp_path, capsys):
    write, table, _ = raster_study
    out = tmp_path / "out"
    assert main(["run", str(write()), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    man = json.loads((out / "manifest.json").read_text())
    expected = table.id[table.region != "land"].tolist()  # all-bands: the dead and the water chips
    assert man["dropped_units"]["n"] == len(expected) == 40
    assert sorted(man["dropped_units"]["ids"]) == sorted(expected)
    assert "min_valid=0.5" in man["dropped_units"]["reason"]
    effects = pd.read_csv(out / "effects.csv")
    assert (effects["n"] == 60).all()
    # item 8: warnings are single lines without file paths or source lines
    lines = warning_lines(err)
    assert any("40 of 100 units have no embedding" in line for line in lines)
    assert not re.search(r"\.py:\d+", err) and "warnings.warn" not in err


def test_valid_rule_and_min_valid_are_study_keys(raster_study, tmp_path, capsys):
    write, table, _ = raster_study
    out = tmp_path / "any"
    assert main(["run", str(write('valid = "any-band"\n')), "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert sorted(man["dropped_units"]["ids"]) == sorted(table.id[table.region == "dead"])  # water now valid
    assert man["source"]["valid"] == "any-band"
    out = tmp_path / "fail"
    assert main(["run", str(write('on_invalid = "fail"\n', name="fail.toml")), "--out", str(out)]) == 2
    assert "40 of 100 units have too few valid pixels" in capsys.readouterr().err and not out.exists()


def test_run_with_nothing_dropped_records_zero(raster_study, tmp_path):
    write, table, _ = raster_study
    land = table[table.region == "land"]
    land.to_csv(tmp_path / "units.csv", index=False)
    out = tmp_path / "out"
    assert main(["run", str(write()), "--out", str(out), "--quiet"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["dropped_units"] == {"n": 0, "ids": [], "reason": None}


def test_mostly_nodata_chips_are_dropped_by_default_and_counted(tmp_path):
    """Item 16: a chip 20% on data is dropped under the default min_valid=0.5, and counted;
    one 80% on data is kept. min_valid=0 keeps both (the old behaviour, now a choice)."""
    import geopandas as gpd

    raster = write_raster(tmp_path / "scene.tif")
    cols = [DEAD[1] - 1.5, DEAD[1] + 1.5]  # 5 px chips: cols 46-51 (1 of 5 on data), 49-54 (4 of 5)
    g = gpd.GeoSeries(gpd.points_from_xy([X0 + c * RES for c in cols], [Y0 - 100 * RES] * 2), crs=UTM,
                      index=["mostly_nodata", "mostly_data"])
    src = RasterSource(raster, chip_size_m=50, chip_px=5)
    assert src.min_valid == 0.5 and src.on_invalid == "drop" and src.valid == "all-bands"
    with pytest.warns(DataQualityWarning, match=r"1 of 2 units dropped .*min_valid=0.5.*'mostly_nodata'"):
        chips, valid = src.chips(g, return_valid=True)
    assert valid.tolist() == [pytest.approx(0.8)] and len(chips) == 1
    assert src.last_report_["invalid_valid_fraction"] == [pytest.approx(0.2)]
    _, valid = RasterSource(raster, chip_size_m=50, chip_px=5, min_valid=0).chips(g, return_valid=True)
    assert valid.tolist() == [pytest.approx(0.2), pytest.approx(0.8)]
    # through embed(): the count in the warning, the ids in attrs
    frame = pd.DataFrame({"id": ["mostly_nodata", "mostly_data"], "w": [0, 1], "y": [0.0, 1.0],
                          "x": g.x.to_numpy(), "yy": g.y.to_numpy()})
    units = eocausal.Units.from_frame(frame, id="id", treatment="w", outcome="y", lon="x", lat="yy", crs=UTM)
    with pytest.warns(DataQualityWarning, match=r"1 of 2 units have no embedding .*min_valid=0.5"):
        Z = eocausal.embed(units, src, RandomFeatures(n_features=8, seed=0), progress=False)
    assert Z.index.tolist() == ["mostly_data"] and Z.attrs["dropped_ids"] == ["mostly_nodata"]


def test_study_imagery_keys_are_validated(tmp_path, raster_study):
    write, _, _ = raster_study
    study = load_study(write())
    assert {k: study["imagery"][k] for k in ("min_valid", "on_invalid", "nodata", "valid")} == \
        {"min_valid": 0.5, "on_invalid": "drop", "nodata": None, "valid": "all-bands"}
    for line, match in (("min_valid = 1.5\n", r"min_valid = 1.5 must be a fraction in \[0, 1\]"),
                        ('on_invalid = "skip"\n', r"on_invalid = 'skip' is not one of \['drop', 'keep', 'fail'\]"),
                        ('valid = "some"\n', "valid = 'some' is not one of"),
                        ("nodata = nan\n", "nodata = nan must be a finite number")):
        with pytest.raises(StudyFileError, match=match):
            load_study(write(line, name="bad.toml"))


@needs_landsat
@pytest.mark.shared
def test_landsat7_400_random_points_run_end_to_end(tmp_path, capsys):
    """Item 1 as reported: 400 random points on landsat7.tif through a study file."""
    import rasterio
    from pyproj import Transformer

    with rasterio.open(LANDSAT7) as ds:
        b = ds.bounds
        crs = ds.crs
    rng = np.random.default_rng(400)
    x, y = rng.uniform(b.left, b.right, 400), rng.uniform(b.bottom, b.top, 400)
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(x, y)
    table = units_table(pd.DataFrame({"lon": lon, "lat": lat}), seed=4)
    table.to_csv(tmp_path / "units.csv", index=False)
    study = tmp_path / "landsat.toml"
    study.write_text(study_text(LANDSAT7).replace("chip_size_m = 50\nchip_px = 5", "chip_size_m = 900\nchip_px = 16"),
                     encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    # the units dropped are exactly those whose chips are under half valid by the all-bands rule
    units = eocausal.Units.from_frame(table, id="id", treatment="w", outcome="y", lon="lon", lat="lat",
                                      crs="EPSG:4326")
    _, valid = RasterSource(LANDSAT7, chip_size_m=900, chip_px=16, on_invalid="keep").chips(units.geometry, return_valid=True)
    expected = table.id[valid < 0.5].tolist()
    assert 0 < man["dropped_units"]["n"] == len(expected) < 400
    assert man["dropped_units"]["ids"] == expected[:50]  # the first 50, in the units' order
    assert (pd.read_csv(out / "effects.csv")["n"] == 400 - len(expected)).all()
    assert any("units have no embedding" in line for line in warning_lines(capsys.readouterr().err))


@needs_landsat
@pytest.mark.shared
def test_landsat7_water_is_invalid_under_all_bands_and_valid_under_any_band():
    import geopandas as gpd

    water = gpd.GeoSeries(gpd.points_from_xy([-13621575.0], [4550685.0]), crs="EPSG:3857", index=["water"])
    land = gpd.GeoSeries(gpd.points_from_xy([-13601595.0], [4545705.0]), crs="EPSG:3857", index=["land"])
    g = pd.concat([water, land])
    _, v_all = RasterSource(LANDSAT7, chip_size_m=900, chip_px=16, on_invalid="keep").chips(g, return_valid=True)
    chips, v_any = RasterSource(LANDSAT7, chip_size_m=900, chip_px=16, valid="any-band").chips(g, return_valid=True)
    assert v_all.tolist() == [0.0, 1.0] and v_any.tolist() == [1.0, 1.0]
    assert (chips[0, :2] == 0).all() and (chips[0, 2] > 0).all()  # R = G = 0 (nodata), B > 0
    with pytest.warns(DataQualityWarning, match=r"1 of 2 units dropped.*'water'"):
        kept = RasterSource(LANDSAT7, chip_size_m=900, chip_px=16).chips(g)
    assert len(kept) == 1


# ----------------------------------------------------------------------------- item 4: ids keep their dtype
@pytest.mark.parametrize("suffix", [".npz", ".csv", ".parquet"])
def test_cli_embed_file_keeps_integer_ids_and_estimate_joins_it(raster_study, tmp_path, capsys, suffix):
    write, table, _ = raster_study
    land = table[table.region == "land"]
    land.to_csv(tmp_path / "units.csv", index=False)
    dest = tmp_path / f"Z{suffix}"
    assert main(["embed", str(write()), "--out", str(dest), "--quiet"]) == 0
    assert "read_embeddings" in capsys.readouterr().out
    Z = read_embeddings(dest)
    assert Z.index.dtype == np.int64 and Z.index.tolist() == land.id.tolist()
    assert Z.shape == (60, 32) and Z.index.name == "id"
    units = eocausal.Units.from_frame(land, id="id", treatment="w", outcome="y", covariates=["x1"])
    assert units.ids.dtype == Z.index.dtype
    table_ = eocausal.estimate(units, embeddings=Z, methods=["dim", "ipw-hajek"], folds=3, seed=0)
    assert len(table_.tidy()) >= 2
    if suffix == ".parquet":  # GeoParquet: the units' places and the encoder's identity
        import geopandas as gpd

        layer = gpd.read_parquet(dest)
        assert layer.crs is not None and (layer.geometry.geom_type == "Point").all()
        np.testing.assert_allclose(layer.to_crs("EPSG:4326").geometry.x, land.lon, atol=1e-9)
        assert Z.attrs["metadata"]["encoder"]["class"].endswith("RandomFeatures")
        assert Z.attrs["metadata"]["encoder"]["state"]


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".parquet"])
@pytest.mark.parametrize("ids", [[3, 1, 2], ["007", "10", "a b"], [0.5, 1.5, 2.5]])
def test_embedding_files_round_trip_ids_with_their_dtype(tmp_path, suffix, ids):
    values = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    Z = pd.DataFrame(values, index=pd.Index(ids, name="unit"), columns=[f"z{j:04d}" for j in range(4)])
    back = read_embeddings(write_embeddings(Z, tmp_path / f"Z{suffix}"))
    pd.testing.assert_frame_equal(back, Z, check_exact=True)
    assert type(back.index[0]) is type(Z.index[0]) or np.dtype(type(back.index[0])) == np.dtype(type(Z.index[0]))


def test_embed_out_writes_geoparquet_that_reads_back_the_same_frame(array_units, tmp_path):
    import geopandas as gpd

    units, src = array_units()
    dest = tmp_path / "sub" / "Z.parquet"
    with pytest.raises(InputError, match="out=.*\\.npz, \\.csv or \\.parquet|use a file name ending"):
        eocausal.embed(units, src, RandomFeatures(n_features=8), out=tmp_path / "Z.txt")
    Z = eocausal.embed(units, src, RandomFeatures(n_features=8, seed=1), out=dest, progress=False)
    back = read_embeddings(dest)
    pd.testing.assert_frame_equal(back, Z, check_exact=True)
    assert back.attrs["metadata"]["encoder"] == Z.attrs["provenance"]["encoder"]
    if units.has_place:
        assert len(gpd.read_parquet(dest)) == len(Z)
    # a product's facts given as metadata travel too
    meta = {"product": "AlphaEarth Foundations Satellite Embedding", "year": 2021, "licence": "CC-BY-4.0"}
    again = read_embeddings(write_embeddings(Z, tmp_path / "Z2.parquet", metadata=meta))
    assert again.attrs["metadata"] == meta


def test_embedding_files_refuse_what_would_not_round_trip(tmp_path):
    Z = pd.DataFrame(np.ones((2, 2)), index=pd.Index([1, "a"], dtype=object))
    with pytest.raises(InputError, match="ids of type 'mixed-integer'.*astype"):
        write_embeddings(Z, tmp_path / "Z.npz")
    with pytest.raises(InputError, match=".npz, .csv or .parquet"):
        write_embeddings(Z, tmp_path / "Z.h5")
    plain = tmp_path / "plain.csv"
    pd.DataFrame(np.ones((2, 2))).to_csv(plain)
    with pytest.raises(DataFileError, match="not an embedding CSV eocausal wrote"):
        read_embeddings(plain)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataFileError, match="cannot be read as an eocausal embedding file"):
        read_embeddings(bad)


# ----------------------------------------------------------------------------- item 17: typed errors
def test_embed_with_zero_units_is_a_typed_error(array_units):
    units, src = array_units()
    with pytest.raises(InputError, match="no units to embed"):
        eocausal.embed(units.subset(np.zeros(units.n, bool)), src, RandomFeatures(n_features=8))


def test_n_features_absurd_is_refused_by_validate(tmp_path, capsys, small_study_toml):
    p = tmp_path / "s.toml"
    p.write_text(small_study_toml("s", 0).replace("n_features = 32", "n_features = 1000000000000"))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "n_features = 1000000000000 must be an even number from 2 to 65536" in err and "Traceback" not in err


def test_channels_first_arrays_are_refused_with_the_transpose():
    images = np.zeros((5, 3, 32, 32), np.float32)
    with pytest.raises(InputError, match=r"looks channels-first .*np.moveaxis\(images, 1, -1\)"):
        ArraySource(images)
    assert ArraySource(np.moveaxis(images, 1, -1)).chip_shape == (3, 32, 32)
    with pytest.raises(InputError, match=r"np.moveaxis\(images, 2, -1\)"):
        ArraySource(np.zeros((2, 4, 6, 32, 32)))  # sequences (n, T, C, H, W)
    assert ArraySource(np.zeros((2, 16, 16, 32))).chip_shape == (32, 16, 16)  # 32 bands, channels last


def test_a_folder_given_as_raster_path_says_it_is_a_folder(tmp_path, raster_study):
    with pytest.raises(DataFileError, match="is a folder, not a raster file.*glob"):
        RasterSource(tmp_path)
    write, _, _ = raster_study
    study = write().read_text().replace(json.dumps(str(tmp_path / "scene.tif")), json.dumps(str(tmp_path)))
    (tmp_path / "folder.toml").write_text(study)
    assert main(["run", str(tmp_path / "folder.toml"), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize("damage", ["manifest.json", "effects.csv"])
def test_report_on_corrupt_outputs_is_one_error_line(tmp_path, capsys, small_study_toml, damage):
    from eocausal.study.runner import run_study

    p = tmp_path / "s.toml"
    p.write_text(small_study_toml("s", 0))
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_study(p, out)
    (out / damage).write_text('{"truncated' if damage.endswith("json") else "trial,estimand\n1,2,3,4\n\x00")
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eocausal: error:") and damage in err and "Traceback" not in err


# ----------------------------------------------------------------------------- item 6, 8: progress
def test_embed_progress_appears_when_asked_and_not_otherwise(array_units, capfd, monkeypatch):
    import importlib

    embed_module = importlib.import_module("eocausal.encoders.embed")  # the module, not the function
    units, src = array_units()
    eocausal.embed(units, src, RandomFeatures(n_features=8), progress=True)
    assert "embedding" in capfd.readouterr().err
    eocausal.embed(units, src, RandomFeatures(n_features=8))  # default: stderr here is not a terminal
    assert capfd.readouterr().err == ""
    monkeypatch.setattr(embed_module, "_stderr_is_terminal", lambda: True)  # an interactive session
    eocausal.embed(units, src, RandomFeatures(n_features=8))
    assert "embedding" in capfd.readouterr().err
    eocausal.embed(units, src, RandomFeatures(n_features=8), progress=False)
    assert capfd.readouterr().err == ""


def test_progress_bar_ends_its_line_before_the_next_stage_line(array_units, capfd):
    from eocausal.cli import _log

    units, src = array_units()
    eocausal.embed(units, src, RandomFeatures(n_features=8), progress=True)
    _log("[3/4] estimating effects")
    err = capfd.readouterr().err
    assert "\n[3/4] estimating effects\n" in err and err.split("\n")[-2] == "[3/4] estimating effects"
    last_bar = err.split("\n[3/4]")[0].split("\r")[-1]
    assert "embedding" in last_bar and "100%" in last_bar


def test_propensity_cnn_reports_folds_and_epochs_when_asked(capfd):
    rng = np.random.default_rng(0)
    chips = rng.normal(size=(24, 2, 6, 6)).astype(np.float32)
    w = np.arange(24) % 2
    PropensityCNN(folds=2, epochs=2, width=2, batch_size=8, device="cpu", progress=True).fit_oof(chips, w)
    err = capfd.readouterr().err
    assert "PropensityCNN" in err and "fold 2, epoch 2/2" in err and "4/4" in err
    PropensityCNN(folds=2, epochs=2, width=2, batch_size=8, device="cpu").fit_oof(chips, w)
    assert capfd.readouterr().err == ""  # default: not a terminal here
    assert "progress" in PropensityCNN._output_invariant_params  # not part of the cache key
