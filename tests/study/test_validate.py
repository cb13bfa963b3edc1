"""Issue 14, item 2: ``eocausal validate`` rejects what ``eocausal run`` would, before any work.

Each case is a study file a user wrote; the test runs ``eocausal validate`` and ``eocausal run``
through the CLI's ``main`` and asserts that both stop with the same one-line error, naming the
section, the key, the file and the fix, and that ``run`` stops before its first stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eocausal.cli import main
from eocausal.errors import ColumnError, DataFileError, MissingFileError, StudyFileError
from eocausal.study.inputs import check_study
from eocausal.study.schema import load_study

ROOT = Path(__file__).resolve().parents[2]
UGANDA = ROOT.parent / "shared" / "data" / "causalimages" / "CausalImagesTutorialData.RData"
UTM = "EPSG:32636"


# ----------------------------------------------------------------------------- fixtures
def write_raster(path: Path, count: int = 3, descriptions=("red", "green", "blue")) -> Path:
    import rasterio
    from affine import Affine

    data = np.random.default_rng(0).integers(1, 255, (count, 40, 40)).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=count, dtype="uint8",
                       crs=UTM, transform=Affine(30.0, 0, 500_000.0, 0, -30.0, 100_000.0)) as ds:
        ds.write(data)
        ds.descriptions = tuple(descriptions)[:count]
    return path


def units_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"vid": np.arange(n), "w": rng.binomial(1, 0.5, n), "y": rng.normal(size=n),
                         "x1": rng.normal(size=n), "cl": np.arange(n) % 12, "scene": np.arange(n) % 5,
                         "lon": 33.0015 + rng.uniform(0, 0.0075, n), "lat": 0.8955 + rng.uniform(0, 0.007, n)})


UNITS = ('[units]\nformat = "csv"\npath = "units.csv"\nid = "vid"\ntreatment = "w"\noutcome = "y"\n'
         'covariates = ["x1"]\nclusters = "cl"\nlon = "lon"\nlat = "lat"\n')
RASTER = '[imagery]\nformat = "raster"\npath = "scene.tif"\nchip_size_m = 90\nchip_px = 3\n'


@pytest.fixture
def folder(tmp_path):
    units_frame().to_csv(tmp_path / "units.csv", index=False)
    write_raster(tmp_path / "scene.tif")
    return tmp_path


def study(folder: Path, text: str, name: str = "study.toml") -> Path:
    p = folder / name
    p.write_text('[study]\nname = "s"\n' + text + "[encoder]\nn_features = 8\n[estimate]\nfolds = 2\n",
                 encoding="utf-8")
    return p


def validate_and_run(path: Path, capsys, out: Path) -> tuple[str, str]:
    """(validate's error line, run's error line); both commands must fail with status 2."""
    assert main(["validate", str(path)]) == 2
    v_err = capsys.readouterr().err
    assert main(["run", str(path), "--out", str(out)]) == 2
    r_err = capsys.readouterr().err
    assert "[1/4]" not in r_err, "run started working before it checked the study"
    assert not out.exists()
    assert "Traceback" not in v_err + r_err
    return v_err.strip(), r_err.strip()


# ----------------------------------------------------------------------------- what validate accepts
def test_a_valid_study_prints_what_was_checked(folder, capsys):
    assert main(["validate", str(study(folder, UNITS + RASTER + 'bands = ["blue", 1]\n'))]) == 0
    out = capsys.readouterr().out
    assert "valid study 's'" in out
    assert f"units: {folder / 'units.csv'} (csv, 8 columns)" in out
    assert f"imagery: {folder / 'scene.tif'} (raster, 3 bands, {UTM})" in out
    assert "bands: ['blue', 'red']" in out


def test_causalimages_units_without_imagery_section_use_their_own_images(tmp_path, capsys):
    """The reported case: no [imagery] section, and validate said 'valid' while run blamed a
    default format = 'demo' the user never wrote. The units' own images are the default now."""
    fake = tmp_path / "ws.RData"
    fake.write_bytes(b"RDX3\nX\n")  # the header validate reads; run parses the whole file
    p = tmp_path / "ci.toml"
    p.write_text(f'[study]\nname = "ci"\n[units]\nformat = "causalimages-rdata"\npath = "{fake.name}"\n')
    s = load_study(p)
    assert s["imagery"]["format"] == "causalimages-rdata"
    assert main(["validate", str(p)]) == 0
    assert "imagery: causalimages-rdata (the units' own images)" in capsys.readouterr().out


@pytest.mark.shared
@pytest.mark.skipif(not UGANDA.is_file(), reason="../shared/data not present")
def test_uganda_study_without_imagery_section_validates(tmp_path, capsys):
    text = (ROOT / "studies" / "causalimages_uganda.toml").read_text(encoding="utf-8")
    head, _, rest = text.partition("[imagery]")
    text = head + rest[rest.index("[encoder]"):]
    p = tmp_path / "uganda.toml"
    p.write_text(text.replace("../../shared/data", str(UGANDA.parents[1])), encoding="utf-8")
    assert "[imagery]" not in p.read_text()
    assert main(["validate", str(p)]) == 0
    assert "demo" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- files
def test_missing_csv(folder, capsys):
    v, r = validate_and_run(study(folder, UNITS.replace("units.csv", "absent.csv") + RASTER), capsys,
                            folder / "out")
    assert v == r
    assert "[units] path = 'absent.csv'" in v and f"{folder / 'absent.csv'} does not exist" in v
    assert "relative paths are taken from the study file's folder" in v


def test_folder_where_a_file_belongs(folder, capsys):
    (folder / "tiles").mkdir()
    v, r = validate_and_run(study(folder, UNITS + RASTER.replace('"scene.tif"', '"tiles"')), capsys,
                            folder / "out")
    assert v == r and "[imagery] path = 'tiles'" in v and "is a folder; name the file itself" in v


@pytest.mark.parametrize("key,line", [
    ("id", 'id = "village"'), ("treatment", 'treatment = "treated"'), ("outcome", 'outcome = "Y"'),
    ("covariates", 'covariates = ["x1", "x9"]'), ("clusters", 'clusters = "district"'),
    ("image_key", 'image_key = "tile"'), ("lon", 'lon = "longitude"'), ("lat", 'lat = "latitude"'),
])
def test_a_column_missing_from_the_csv_header(folder, capsys, key, line):
    text = "\n".join(line if ln.startswith(f"{key} =") else ln for ln in UNITS.splitlines()) + "\n"
    if key == "image_key":
        text += line + "\n"
    v, r = validate_and_run(study(folder, text + RASTER), capsys, folder / "out")
    assert v == r
    missing = line.split('"')[-2]
    assert f"[units] {key} = " in v and f"no column {missing!r} in {folder / 'units.csv'}" in v
    assert "its columns: ['vid', 'w', 'y', 'x1', 'cl', 'scene', 'lon', 'lat']" in v


def test_csv_header_only_is_read(folder, monkeypatch):
    """validate reads the header row, not the rows (the check is cheap on a large file)."""
    calls = []
    real = pd.read_csv

    def spy(*a, **k):
        calls.append(k.get("nrows"))
        return real(*a, **k)

    monkeypatch.setattr(pd, "read_csv", spy)
    check_study(load_study(study(folder, UNITS + RASTER)))
    assert calls == [0]


def test_empty_csv(folder, capsys):
    (folder / "units.csv").write_text("")
    v, r = validate_and_run(study(folder, UNITS + RASTER), capsys, folder / "out")
    assert v == r and "[units] path = 'units.csv'" in v and "cannot be read as csv" in v


def test_a_band_missing_from_the_raster(folder, capsys):
    v, r = validate_and_run(study(folder, UNITS + RASTER + 'bands = ["red", "nir"]\n'), capsys, folder / "out")
    assert v == r
    assert "[imagery] bands = ['red', 'nir']" in v and str(folder / "scene.tif") in v
    assert "no band described as 'nir'" in v and "fix the band list in the study file" in v
    v, _ = validate_and_run(study(folder, UNITS + RASTER + "bands = [4]\n"), capsys, folder / "out")
    assert "band 4 does not exist; bands are numbered 1..3" in v


def test_a_file_that_is_not_a_raster(folder, capsys):
    (folder / "notes.tif").write_text("not a raster")
    v, r = validate_and_run(study(folder, UNITS + RASTER.replace("scene.tif", "notes.tif")), capsys, folder / "out")
    assert v == r and "[imagery] path = 'notes.tif'" in v and "cannot be read as a raster" in v


def test_rasters_of_a_mosaic_must_match(folder, capsys):
    write_raster(folder / "two.tif", count=2)
    text = UNITS + RASTER.replace('"scene.tif"', '["scene.tif", "two.tif"]')
    v, r = validate_and_run(study(folder, text), capsys, folder / "out")
    assert v == r and "[imagery] path:" in v and "same number of bands" in v
    text = UNITS + RASTER.replace('"scene.tif"', '["scene.tif", "absent.tif"]')
    v, _ = validate_and_run(study(folder, text), capsys, folder / "out")
    assert "[imagery] path = 'absent.tif'" in v and "does not exist" in v


def test_npz_images_are_checked_from_the_archive_index(folder, capsys):
    np.savez(folder / "imgs.npz", pictures=np.zeros((5, 4, 4, 3)))
    npz = '[imagery]\nformat = "npz"\npath = "imgs.npz"\n'
    units = UNITS.replace('lon = "lon"\nlat = "lat"\n', 'image_key = "scene"\n')
    v, r = validate_and_run(study(folder, units + npz), capsys, folder / "out")
    assert v == r and "has no array named 'images' (it has ['pictures'])" in v
    np.savez(folder / "imgs.npz", images=np.zeros((5, 4, 4)), keys=np.arange(5))
    v, _ = validate_and_run(study(folder, units + npz), capsys, folder / "out")
    assert "'images' in" in v and "has shape (5, 4, 4); expected (n_images, H, W, C)" in v
    np.savez(folder / "imgs.npz", images=np.zeros((5, 4, 4, 3)), keys=np.arange(5))
    assert main(["validate", str(study(folder, units + npz))]) == 0
    assert "(npz, images (5, 4, 4, 3), keys)" in capsys.readouterr().out


def test_a_file_that_is_not_a_tfrecord(folder, capsys):
    (folder / "x.tfrecord").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00rest")
    text = UNITS.replace('lon = "lon"\nlat = "lat"\n', "") + \
        '[imagery]\nformat = "causalimages-tfrecord"\npath = "x.tfrecord"\n'
    v, r = validate_and_run(study(folder, text), capsys, folder / "out")
    assert v == r and "is not a TFRecord file" in v


def test_a_file_that_is_not_an_r_workspace(folder, capsys):
    (folder / "ws.RData").write_text("village,w,y\n")
    text = '[units]\nformat = "causalimages-rdata"\npath = "ws.RData"\n'
    v, r = validate_and_run(study(folder, text), capsys, folder / "out")
    assert v == r and "[units] path = 'ws.RData'" in v and "is not an R workspace" in v
    (folder / "ws.RData").write_bytes(b"RDX3\n")
    text = '[units]\nformat = "causalimages-rdata"\npath = "ws.RData"\ncovariates = ["xA", "xD"]\n'
    v, _ = validate_and_run(study(folder, text), capsys, folder / "out")
    assert "[units] covariates = ['xA', 'xD']: ['xD'] are not columns of the workspace's X" in v


def test_vector_units_header_and_geometry(folder, capsys):
    import geopandas as gpd

    f = units_frame()
    g = gpd.GeoDataFrame(f.drop(columns=["lon", "lat"]), geometry=gpd.points_from_xy(f.lon, f.lat), crs=4326)
    g.to_file(folder / "units.gpkg")
    base = (UNITS.replace('"csv"', '"vector"').replace("units.csv", "units.gpkg")
            .replace('lon = "lon"\nlat = "lat"\n', ""))
    assert main(["validate", str(study(folder, base + RASTER))]) == 0
    assert "(vector, 6 columns, Point)" in capsys.readouterr().out
    v, r = validate_and_run(study(folder, base.replace('"x1"', '"x2"') + RASTER), capsys, folder / "out")
    assert v == r and "[units] covariates = ['x2']: no column 'x2'" in v
    v, _ = validate_and_run(study(folder, base + RASTER.replace("chip_size_m = 90\n", "")), capsys, folder / "out")
    assert "needs chip_size_m: the units in" in v and "are points (Point)" in v


# ----------------------------------------------------------------------------- formats and keys
@pytest.mark.parametrize("line", ["chip_size_m = 100", "chip_px = 8", "min_valid = 0.2", 'on_invalid = "keep"',
                                  "nodata = 0", 'valid = "any-band"', 'bands = ["red"]'])
def test_raster_keys_are_refused_with_npz_imagery(folder, capsys, line):
    key = line.split(" =")[0]
    text = UNITS + f'[imagery]\nformat = "npz"\npath = "imgs.npz"\n{line}\n'
    v, r = validate_and_run(study(folder, text), capsys, folder / "out")
    assert v == r
    assert f"[imagery] {key} applies only to [imagery] format = 'raster' or 'stac', not 'npz'; remove the key" in v


@pytest.mark.parametrize("units,key,fmt", [
    ('[units]\nformat = "demo"\npath = "u.csv"\n', "path", "demo"),
    ('[units]\nformat = "causalimages-rdata"\npath = "ws.RData"\ntreatment = "w"\n', "treatment", "causalimages-rdata"),
    (UNITS + 'covariate_set = "all"\n', "covariate_set", "csv"),
    (UNITS.replace('"csv"', '"vector"'), "lon", "vector"),
])
def test_units_keys_of_another_format_are_refused(folder, units, key, fmt):
    with pytest.raises(StudyFileError, match=rf"\[units\] {key} applies only to \[units\] format = .*, not '{fmt}'"):
        load_study(study(folder, units + (RASTER if "csv" in units or "vector" in units else "")))


def test_csv_units_need_an_imagery_section(folder, capsys):
    v, r = validate_and_run(study(folder, UNITS), capsys, folder / "out")
    assert v == r
    assert "[units] format = 'csv' has no images of its own; add an [imagery] section with format = 'raster'" in v
    assert "demo" not in v


@pytest.mark.parametrize("text,needle", [
    (UNITS.replace('lon = "lon"\nlat = "lat"\n', "") + RASTER,
     "name the coordinate columns in [units] with lon and lat"),
    (UNITS.replace('lat = "lat"\n', "") + RASTER, "[units] lon is given without lat"),
    (UNITS + RASTER.replace("chip_size_m = 90\n", ""), "needs chip_size_m for point units"),
    (UNITS + RASTER.replace("chip_px = 3\n", ""), "[imagery] format = 'raster' needs the key 'chip_px'"),
    (UNITS + '[imagery]\nformat = "npz"\n', "[imagery] format = 'npz' needs the key 'path'"),
    (UNITS + '[imagery]\nformat = "npz"\npath = ["a.npz", "b.npz"]\n', "format = 'npz' takes one file"),
    (UNITS + '[imagery]\nformat = "causalimages-rdata"\n',
     "[imagery] format = 'causalimages-rdata' does not go with [units] format = 'csv'"),
])
def test_combinations_of_keys(folder, capsys, text, needle):
    v, r = validate_and_run(study(folder, text), capsys, folder / "out")
    assert v == r and needle in v


# ----------------------------------------------------------------------------- run and embed check first
def test_run_study_checks_before_reading_anything(folder, monkeypatch):
    from eocausal.study import inputs, runner

    def never(*a, **k):
        raise AssertionError("load_inputs was called before the study was checked")

    monkeypatch.setattr(inputs, "load_inputs", never)
    with pytest.raises(ColumnError, match="no column 'treated'"):
        runner.run_study(study(folder, UNITS.replace('"w"', '"treated"') + RASTER), folder / "out")
    with pytest.raises(MissingFileError):
        runner.run_study(study(folder, UNITS + RASTER.replace("scene.tif", "gone.tif")), folder / "out")
    assert not (folder / "out").exists()


def test_embed_checks_first(folder, capsys):
    p = study(folder, UNITS + RASTER + 'bands = ["nir"]\n')
    assert main(["embed", str(p), "--out", str(folder / "z.npz")]) == 2
    err = capsys.readouterr().err
    assert "no band described as 'nir'" in err and "[1/2]" not in err
    assert not (folder / "z.npz").exists()


def test_a_valid_small_study_runs(folder, capsys):
    """The counterpart: what validate accepts, run completes (a guard against over-strict checks)."""
    p = study(folder, UNITS + RASTER)
    assert main(["validate", str(p)]) == 0
    assert main(["run", str(p), "--out", str(folder / "out"), "--quiet"]) == 0
    man = json.loads((folder / "out" / "manifest.json").read_text())
    assert man["units"]["n"] == 60 and man["dropped_units"]["n"] == 0


def test_errors_are_typed(folder):
    with pytest.raises(DataFileError):
        (folder / "x.tif").write_text("x")
        check_study(load_study(study(folder, UNITS + RASTER.replace("scene.tif", "x.tif"))))
    with pytest.raises(ColumnError) as ei:
        check_study(load_study(study(folder, UNITS.replace('"x1"', '"x7"') + RASTER)))
    assert isinstance(ei.value, KeyError) and isinstance(ei.value, ValueError)
