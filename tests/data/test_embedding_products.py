"""Embedding products (eocausal.data.embedding_products) on int8 COGs the tests write.

The fixture mimics the AlphaEarth distribution: 64 int8 bands, nodata -128, one file per UTM zone
(36N: EPSG:32636, 37N: EPSG:32637, meeting at 36 degrees east) and year, the 37N file stored
bottom-up (positive y pixel size, as the Source Cooperative copy). Each file's pixel (row, col)
holds a value pattern that encodes its zone, year, row and column, so a value read tells where it
came from. Checked: the documented de-quantisation at known pixels; units on both sides of the
zone boundary read from their own zone's file, also where the files overlap; the bottom-up file
read by its geotransform; nodata -> NaN; the year chosen from treatment dates; the pre-treatment
guard; the provenance.
"""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from eocausal.data.embedding_products import ALPHAEARTH, EmbeddingProduct, as_product, dequantize
from eocausal.errors import DataFileError, DataQualityWarning, InputError, PostTreatmentError

SIZE = 40  # pixels per side
RES = 10.0


def _pattern(zone: int, year: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """int8 values (64, ...) encoding zone, year, row and column (never -128)."""
    band = np.arange(64)[:, None, None]
    v = (zone * 7 + (year - 2017) * 11 + rows * 3 + cols * 5 + band) % 250 - 125
    return v.astype(np.int8)


def _units(ids, lon, lat):
    return gpd.GeoSeries(gpd.points_from_xy(lon, lat), index=list(ids), crs="EPSG:4326")


def _origin(epsg: int, lon: float, lat: float) -> tuple[float, float]:
    return Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)


def _write(path, epsg, zone, year, lon0, lat0, bottom_up=False, nodata_at=None):
    """A SIZE x SIZE file whose top-left corner is at (lon0, lat0) (projected, then snapped)."""
    x0, y_top = _origin(epsg, lon0, lat0)
    x0, y_top = np.floor(x0), np.floor(y_top)
    r, c = np.mgrid[0:SIZE, 0:SIZE]  # r: row counted from the top
    data = _pattern(zone, year, r, c)
    if nodata_at is not None:
        data[:, nodata_at[0], nodata_at[1]] = -128
    if bottom_up:
        transform = Affine(RES, 0, x0, 0, RES, y_top - SIZE * RES)  # origin at the bottom-left
        data = data[:, ::-1, :]  # stored row 0 is the bottom row
    else:
        transform = Affine(RES, 0, x0, 0, -RES, y_top)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDAL notes the unusual (bottom-up) geotransform
        with rasterio.open(path, "w", driver="GTiff", height=SIZE, width=SIZE, count=64, dtype="int8",
                           crs=f"EPSG:{epsg}", transform=transform, nodata=-128, tiled=True, blockxsize=16,
                           blockysize=16) as ds:
            ds.write(np.ascontiguousarray(data))
    return transform, x0, y_top


@pytest.fixture()
def product_dir(tmp_path):
    """2020 and 2022, zones 36N (north-up) and 37N (bottom-up), both touching 36 E near 1 N.

    The 36N file extends east of 36 E (overlapping the 37N file), as zone files do."""
    info = {}
    for year in (2020, 2022):
        info[(year, 36)] = _write(tmp_path / str(year) / "36N" / "tile.tif", 32636, 36, year, 35.998, 1.0018,
                                  nodata_at=(5, 5))
        info[(year, 37)] = _write(tmp_path / str(year) / "37N" / "tile.tif", 32637, 37, year, 35.9995, 1.0018,
                                  bottom_up=True)
    return tmp_path, info


def _expected(info, year, zone, lon, lat):
    """The de-quantised vector of the pixel under (lon, lat) in the given file, from the pattern."""
    epsg = 32600 + zone
    _, x0, y_top = info[(year, zone)]
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    col, row_from_top = int(np.floor((x - x0) / RES)), int(np.floor((y_top - y) / RES))
    q = _pattern(zone, year, np.array(row_from_top), np.array(col))
    return dequantize(q, ALPHAEARTH).reshape(64)


def test_dequantisation_is_the_documented_formula():
    q = np.array([-127, -64, -1, 0, 1, 64, 127, -128], dtype=np.int8)
    v = dequantize(q, ALPHAEARTH)
    expect = np.sign(q[:-1]) * (np.abs(q[:-1].astype(float)) / 127.5) ** 2
    np.testing.assert_allclose(v[:-1], expect, rtol=0, atol=1e-15)
    assert np.isnan(v[-1])  # -128 is nodata
    assert v[0] == pytest.approx(-(127 / 127.5) ** 2) and v[3] == 0.0
    lin = as_product({"name": "p", "version": "1", "dims": 2, "resolution_m": 30, "licence": "CC0", "attribution": "x",
                      "quantisation": "linear", "scale": 0.01, "offset": -1.0, "nodata": 0})
    np.testing.assert_allclose(dequantize(np.array([0, 100, 250]), lin), [np.nan, 0.0, 1.5])


def test_units_on_both_sides_of_the_zone_boundary_read_their_own_zone(product_dir):
    root, info = product_dir
    prod = EmbeddingProduct(sorted(str(p) for p in root.rglob("*.tif")))
    assert prod.years == [2020, 2022]
    lon = np.array([35.9990, 35.9996, 36.0004, 36.0012])  # two west of 36 E, two east (in the overlap)
    lat = np.array([1.0010, 1.0005, 1.0010, 1.0005])
    units = _units(["w1", "w2", "e1", "e2"], lon, lat)
    frame = prod.sample(units, year=2022)
    assert list(frame.columns) == [f"A{i:02d}" for i in range(64)]
    for k, (x, y) in enumerate(zip(lon, lat)):
        zone = 36 if x < 36 else 37
        np.testing.assert_allclose(frame.iloc[k].to_numpy(), _expected(info, 2022, zone, x, y), rtol=0, atol=1e-15)
    # the east units are inside the 36N file too (it overlaps); their 36N pixel differs from what was read
    assert not np.allclose(frame.loc["e1"].to_numpy(), _expected(info, 2022, 36, lon[2], lat[2]))
    norms = np.linalg.norm(frame.to_numpy(), axis=1)
    assert np.all(norms > 0)
    prov = frame.attrs["provenance"]
    assert prov["product"]["licence"] == "CC-BY-4.0" and "Google DeepMind" in prov["product"]["attribution"]
    assert prov["years"] == [2022] and len(prov["files"]) == 2


def test_bottom_up_file_is_read_by_its_geotransform(product_dir, tmp_path):
    """The 37N file stored bottom-up gives the values of the same grid stored north-up."""
    root, info = product_dir
    _write(tmp_path / "topdown" / "2022" / "t.tif", 32637, 37, 2022, 35.9995, 1.0018)
    lon, lat = np.array([36.0004, 36.0020, 36.0030]), np.array([1.0010, 1.0001, 0.9990])
    units = _units([1, 2, 3], lon, lat)
    up = EmbeddingProduct({2022: root / "2022" / "37N" / "tile.tif"}).sample(units, year=2022)
    down = EmbeddingProduct({2022: tmp_path / "topdown" / "2022" / "t.tif"}).sample(units, year=2022)
    np.testing.assert_array_equal(up.to_numpy(), down.to_numpy())
    assert np.isfinite(up.to_numpy()).all()


def test_nodata_and_units_off_every_file_are_nan_with_a_warning(product_dir):
    root, info = product_dir
    _, x0, y_top = info[(2020, 36)]
    x, y = x0 + 5.5 * RES, y_top - 5.5 * RES  # the pixel set to -128
    lon, lat = Transformer.from_crs(32636, 4326, always_xy=True).transform(x, y)
    units = _units(["nodata", "far"], [lon, 20.0], [lat, 1.0])
    with pytest.warns(DataQualityWarning, match="2 of 2 units"):
        frame = EmbeddingProduct(root / "2020" / "36N" / "tile.tif").sample(units, year=2020)
    assert frame.isna().all().all()


def test_year_from_treatment_dates_and_the_pre_treatment_guard(product_dir):
    root, info = product_dir
    prod = EmbeddingProduct(sorted(str(p) for p in root.rglob("*.tif")))
    lon, lat = np.array([35.9990, 35.9996, 36.0004]), np.array([1.0010, 1.0005, 1.0010])
    units = _units(["a", "b", "c"], lon, lat)
    dates = ["2023-03-01", "2021-07-15", None]  # c: never treated (a control)
    # by default one layer for all: the latest before the earliest treatment's year (2021) -> 2020
    assert prod.choose_years(["a", "b", "c"], dates).tolist() == [2020, 2020, 2020]
    # staggered: each treated unit's own latest layer before its treatment's year; the control the common one
    assert prod.choose_years(["a", "b", "c"], dates, per_unit=True).tolist() == [2022, 2020, 2020]
    frame = prod.sample(units, treatment_dates=dates, per_unit=True)
    assert frame.attrs["year"] == {"a": 2022, "b": 2020, "c": 2020}
    np.testing.assert_allclose(frame.loc["b"].to_numpy(), _expected(info, 2020, 36, lon[1], lat[1]), atol=1e-15)
    np.testing.assert_allclose(frame.loc["a"].to_numpy(), _expected(info, 2022, 36, lon[0], lat[0]), atol=1e-15)
    # b was treated in 2021: the 2022 layer includes post-treatment imagery
    with pytest.raises(PostTreatmentError, match=r"b \(treated 2021-07-15, layer 2022\)"):
        prod.sample(units, year=2022, treatment_dates=dates)
    allowed = prod.sample(units, year=2022, treatment_dates=dates, allow_post_treatment=True)
    assert allowed.attrs["provenance"]["post_treatment_allowed"] and allowed.attrs["provenance"]["post_treatment_units"] == 1
    # a unit treated before the first layer cannot be read pre-treatment
    with pytest.raises(PostTreatmentError, match="first available year 2020"):
        prod.sample(units, treatment_dates=["2019-05-01", "2021-07-15", None])
    with pytest.raises(InputError, match="no unit has a treatment date"):
        prod.sample(units, treatment_dates=[None, None, None])


def test_errors_name_what_to_change(product_dir, tmp_path):
    root, _ = product_dir
    with pytest.raises(InputError, match="no year in the path"):
        EmbeddingProduct(tmp_path / "x.tif")
    with pytest.raises(InputError, match="outside"):
        EmbeddingProduct({2012: root / "2020" / "36N" / "tile.tif"})
    with pytest.raises(InputError, match="declare"):
        as_product({"name": "mine"})
    with pytest.raises(InputError, match="unknown product"):
        as_product("clay-v9")
    prod = EmbeddingProduct(root / "2020" / "36N" / "tile.tif")
    units = _units([1], [35.999], [1.001])
    with pytest.raises(InputError, match="no product files for \\[2021\\]"):
        prod.sample(units, year=2021)
    with pytest.raises(InputError, match="year= .* or treatment_dates="):
        prod.sample(units)
    three = tmp_path / "2020" / "three.tif"
    three.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(three, "w", driver="GTiff", height=2, width=2, count=3, dtype="int8", crs="EPSG:32636",
                       transform=Affine(10, 0, 0, 0, -10, 0)) as ds:
        ds.write(np.zeros((3, 2, 2), np.int8))
    with pytest.raises(DataFileError, match="3 bands"):
        EmbeddingProduct(three)


def test_product_provenance_reaches_the_effect_table(product_dir, tmp_path):
    """Embeddings sampled from a product carry its facts into the table's notes and design, and
    through the saved outputs (results.json) into a re-rendered table."""
    import eocausal
    from eocausal.report.outputs import read_outputs, write_outputs

    root, _ = product_dir
    rng = np.random.default_rng(0)
    n = 120
    lon = 35.9985 + rng.uniform(0, 0.0045, n)  # both zones
    lat = 0.9990 + rng.uniform(0, 0.0025, n)
    pts = _units(range(n), lon, lat)
    prod = EmbeddingProduct(sorted(str(p) for p in root.rglob("*.tif")))
    dates = np.where(rng.uniform(size=n) < 0.5, "2021-06-01", None)
    Z = prod.sample(pts, year=2020, treatment_dates=dates)
    w = (dates != None).astype(int)  # noqa: E711 - elementwise
    y = Z.to_numpy()[:, 0] * 5 + w + rng.normal(size=n)
    df = gpd.GeoDataFrame({"w": w, "y": y}, geometry=pts.to_numpy(), index=pts.index, crs=pts.crs)
    table = eocausal.estimate(df, treatment="w", outcome="y", embeddings=Z, methods=["dim", "ipw-hajek"], folds=3,
                              progress=False)
    note = [t for t in table.notes if t.startswith("Image embeddings")]
    assert len(note) == 1
    assert "AlphaEarth Foundations Satellite Embedding" in note[0] and "year 2020" in note[0]
    assert "CC-BY-4.0" in note[0] and "produced by Google and Google DeepMind" in note[0]
    assert table.design["embedding_source"]["product"]["licence"] == "CC-BY-4.0"
    out = tmp_path / "out"
    write_outputs(out, table)
    (out / "manifest.json").write_text("{}")  # what 'eocausal run' adds beside the outputs
    back, _ = read_outputs(out)
    assert back.notes == table.notes and back.design["embedding_source"] == table.design["embedding_source"]
    # allowed post-treatment layers are said in the notes
    Z2 = prod.sample(pts, year=2022, treatment_dates=dates, allow_post_treatment=True)
    t2 = eocausal.estimate(df, treatment="w", outcome="y", embeddings=Z2, methods=["dim"], progress=False)
    assert any("allow_post_treatment=True" in t for t in t2.notes)


def test_a_study_file_runs_on_a_product(product_dir, tmp_path, capsys):
    """[imagery] format = 'embedding-product': validated, run, and the product's facts in the
    manifest, the table's notes and the report; no encoder runs."""
    import json

    from eocausal.cli import main

    root, _ = product_dir
    rng = np.random.default_rng(3)
    n = 150
    lon = 35.9985 + rng.uniform(0, 0.0045, n)
    lat = 0.9990 + rng.uniform(0, 0.0025, n)
    w = rng.integers(0, 2, n)
    units = pd.DataFrame({"id": np.arange(n), "lon": lon, "lat": lat, "w": w, "y": w + rng.normal(size=n),
                          "treated_on": np.where(w == 1, "2023-02-01", "")})
    units.to_csv(tmp_path / "units.csv", index=False)
    study = tmp_path / "product.toml"
    study.write_text(f"""
[study]
name = "product study"
[units]
format = "csv"
path = "units.csv"
id = "id"
treatment = "w"
outcome = "y"
lon = "lon"
lat = "lat"
[imagery]
format = "embedding-product"
path = ["{root.as_posix()}"]
product = "alphaearth"
treatment_date = "treated_on"
[estimate]
methods = ["dim", "ipw-hajek"]
folds = 3
""", encoding="utf-8")
    assert main(["validate", str(study)]) == 0
    assert "EmbeddingProduct" in capsys.readouterr().out
    assert main(["run", str(study), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["encoder"] is None and man["embedding_source"]["product"]["licence"] == "CC-BY-4.0"
    assert man["embedding_source"]["years"] == [2022]  # the common layer before the 2023 treatments
    assert "AlphaEarth Foundations Satellite Embedding" in (tmp_path / "out" / "results.json").read_text()
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "produced by Google and Google DeepMind" in html
    # an [encoder] section with a precomputed product is refused, before any work
    study.write_text(study.read_text() + "[encoder]\nn_features = 64\n", encoding="utf-8")
    assert main(["validate", str(study)]) == 2
    assert "remove the [encoder] section" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # rioxarray 0.19's own Affine use
def test_docs_products_examples_run(tmp_path, monkeypatch):
    """docs/products.md's code blocks run as written, in order, on files written here under the
    names the page uses (AlphaEarth-like COGs in two zones and years, villages.csv, chips.parquet)."""
    import re
    from pathlib import Path

    from shapely.geometry import box

    text = (Path(__file__).resolve().parents[2] / "docs" / "products.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)
    import shutil

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "studies" / "data", tmp_path / "studies" / "data")  # the STAC catalog, scene.tif
    for year in (2020, 2022):
        _write(tmp_path / "aef" / str(year) / "36N" / "tile.tif", 32636, 36, year, 35.998, 1.0018)
        _write(tmp_path / "aef" / str(year) / "37N" / "tile.tif", 32637, 37, year, 35.9995, 1.0018, bottom_up=True)
    rng = np.random.default_rng(2)
    n = 120
    lon, lat = 35.9985 + rng.uniform(0, 0.0045, n), 0.9990 + rng.uniform(0, 0.0025, n)
    w = rng.integers(0, 2, n)
    pd.DataFrame({"id": np.arange(n), "lon": lon, "lat": lat, "w": w, "y": w + rng.normal(size=n),
                  "treated_on": np.where(w == 1, "2021-09-01", None)}).to_csv(tmp_path / "villages.csv", index=False)
    cells = [box(35.998 + i * 0.0012, 0.999 + j * 0.0007, 35.998 + (i + 1) * 0.0012, 0.999 + (j + 1) * 0.0007)
             for i in range(4) for j in range(4)]
    gpd.GeoDataFrame({"id": [f"c{k}" for k in range(16)], "embedding": [[float(k)] * 8 for k in range(16)],
                      "model": "clay-v1.5", "version": "1.5.0", "year": 2020},
                     geometry=cells, crs="EPSG:4326").to_parquet(tmp_path / "chips.parquet")
    ns: dict = {}
    for code in blocks:
        exec(compile(code, "docs/products.md", "exec"), ns)  # noqa: S102 - our own documentation
    assert ns["Z"].shape == (n, 64) and ns["Z"].attrs["provenance"]["years"] == [2020]
    assert any("Google DeepMind" in t for t in ns["table"].notes)
    assert ns["Zc"].notna().all().all() and ns["chips"].metadata["model"] == "clay-v1.5"
    assert ns["src"].stac_items == ("scene-west", "scene-east") and ns["Zs"].shape == (300, 64)
    assert any("STAC imagery" in t and "2020-06-15" in t for t in ns["effects"].notes)
    assert float(abs(ns["src_xr"].chips(ns["sites"]) - ns["same"].chips(ns["sites"])).max()) <= 1e-4
