"""STAC and xarray sources: chips from a static catalog the tests write (local COG assets, dated
items, per-band assets with a declared scale, offset and nodata) equal the same files read
directly; nothing touches the network."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import pickle
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine

from eocausal.data.raster import RasterSource
from eocausal.data.sequences import RasterSequence
from eocausal.errors import CRSError, InputError

pystac = pytest.importorskip("pystac")

_spec = importlib.util.spec_from_file_location("raster_fixtures", Path(__file__).with_name("rasters.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

SCALE, OFFSET, NODATA = 0.0001, -0.1, 0
BANDS = (("B04", "red"), ("B03", "green"), ("B08", "nir"))
DATES = ("2021-03-02", "2021-07-19")
TILES = (("w", 0, 32), ("e", 32, 64))


def _raw(date_k: int) -> np.ndarray:
    """(3, 64, 64) uint16 digital numbers of a date; 0 (nodata) on rows 0-3 of columns 40-47."""
    rng = np.random.default_rng(100 + date_k)
    a = rng.integers(1000, 30000, (3, fx.SIZE, fx.SIZE)).astype(np.uint16)
    a[:, :4, 40:48] = NODATA
    return a


def _cog(path: Path, data: np.ndarray, col0: int, nodata=None) -> Path:
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
                   crs=fx.CRS, transform=Affine(fx.RES, 0, fx.ORIGIN_X + col0 * fx.RES, 0, -fx.RES, fx.ORIGIN_Y),
                   nodata=nodata)
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data)
        with mem.open() as ds:
            rasterio.shutil.copy(ds, path, driver="COG")
    return path


def write_catalog(root: Path) -> dict:
    """A static catalog: per date, two tiles (west/east halves), one single-band COG per band with
    eo:bands and raster:bands (scale, offset, nodata); plus, per tile and date, the three bands
    in one file (``stack_<date>_<tile>.tif``, not in the catalog) to read directly."""
    root.mkdir(parents=True, exist_ok=True)
    cat = pystac.Catalog(id="test", description="written by tests/data/test_stac.py")
    direct = {}
    for k, date in enumerate(DATES):
        raw = _raw(k)
        for tile, c0, c1 in TILES:
            item = pystac.Item(id=f"{date}-{tile}", geometry=None, bbox=None,
                               datetime=dt.datetime.fromisoformat(date + "T10:00:00+00:00"), properties={})
            folder = root / item.id
            folder.mkdir()
            for b, (key, common) in enumerate(BANDS):
                tif = _cog(folder / f"{key}.tif", raw[b:b + 1, :, c0:c1].copy(), c0)
                item.add_asset(key, pystac.Asset(
                    href=str(tif), media_type=pystac.MediaType.COG, roles=["data"],
                    extra_fields={"eo:bands": [{"name": key, "common_name": common}],
                                  "raster:bands": [{"scale": SCALE, "offset": OFFSET, "nodata": NODATA}]}))
            item.add_asset("thumbnail", pystac.Asset(href=str(folder / "thumb.png"), media_type="image/png",
                                                     roles=["thumbnail"]))
            cat.add_item(item)
            phys = np.where(raw[:, :, c0:c1] == NODATA, np.nan, raw[:, :, c0:c1] * SCALE + OFFSET).astype(np.float32)
            direct[(date, tile)] = _cog(root / f"stack_{date}_{tile}.tif", phys, c0, nodata=float("nan"))
    cat.normalize_hrefs(str(root))
    cat.make_all_asset_hrefs_relative()
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return {"catalog": root / "catalog.json", "direct": direct}


@pytest.fixture(scope="module")
def stac(tmp_path_factory):
    return write_catalog(tmp_path_factory.mktemp("stac") / "catalog")


def units(n=40, seed=3) -> gpd.GeoSeries:
    rng = np.random.default_rng(seed)
    x = fx.ORIGIN_X + rng.uniform(40, 600, n)
    y = fx.ORIGIN_Y - rng.uniform(40, 600, n)
    x[:6] = fx.ORIGIN_X + 320 + rng.uniform(-25, 25, 6)  # across the seam between the tiles
    y[6:9] = fx.ORIGIN_Y - rng.uniform(5, 30, 3)         # on the nodata patch's rows
    x[6:9] = fx.ORIGIN_X + 440
    return gpd.GeoSeries(gpd.points_from_xy(x, y), crs=fx.CRS, index=[f"u{i}" for i in range(n)])


KW = dict(chip_size_m=90, chip_px=6, on_invalid="keep")


def _items(stac, date):
    cat = pystac.Catalog.from_file(str(stac["catalog"]))
    return [i for i in cat.get_items(recursive=True) if i.id.startswith(date)]


def test_stac_chips_equal_the_same_files_read_directly(stac):
    g = units()
    for date in DATES:
        via_stac, v1 = RasterSource.from_stac(_items(stac, date), bands=["red", "green", "nir"], **KW).chips(
            g, return_valid=True)
        files = [stac["direct"][(date, t)] for t, *_ in TILES]
        direct, v2 = RasterSource(files, **KW).chips(g, return_valid=True)
        np.testing.assert_allclose(via_stac, direct, atol=1e-6)  # scale and offset applied, nodata invalid
        np.testing.assert_array_equal(v1, v2)
        assert (v1[6:9] < 1).all() and (v1[9:] == 1).all()


def test_bands_by_asset_key_or_common_name_in_the_order_asked(stac):
    items = _items(stac, DATES[0])
    by_name = RasterSource.from_stac(items, bands=["nir", "red"], **KW)
    by_key = RasterSource.from_stac(items, bands=["B08", "B04"], **KW)
    assert by_name.bands == ("nir", "red") and by_key.bands == ("B08", "B04")
    g = units(10)
    np.testing.assert_array_equal(by_name.chips(g), by_key.chips(g))
    full = RasterSource.from_stac(items, bands=["red", "green", "nir"], **KW).chips(g)
    np.testing.assert_array_equal(by_name.chips(g), full[:, [2, 0]])


def test_every_kind_of_item_container_gives_the_same_source(stac, tmp_path):
    cat = pystac.Catalog.from_file(str(stac["catalog"]))
    items = [i for i in cat.get_items(recursive=True) if i.id.startswith(DATES[1])]
    coll = pystac.ItemCollection(items)
    coll_path = tmp_path / "search.json"
    coll.save_object(dest_href=str(coll_path))

    class Search:  # what pystac_client.Client.search() returns, offline
        def item_collection(self):
            return coll

    g = units(12)
    ref = RasterSource.from_stac(items, bands="red", **KW).chips(g)
    for given in (coll, coll_path, Search(), list(coll)):
        np.testing.assert_array_equal(RasterSource.from_stac(given, bands="red", **KW).chips(g), ref)
    one = RasterSource.from_stac(items[0], bands="red", **KW)
    assert one.stac_items == (items[0].id,)


def test_sequence_has_one_frame_per_item_date(stac):
    seq = RasterSequence.from_stac(stac["catalog"], bands=["red", "nir"], **KW)
    assert [str(d) for d in seq.dates] == list(DATES)
    g = units(15)
    x = seq.chips(g)
    assert x.shape == (15, 2, 2, 6, 6)
    for k, date in enumerate(DATES):
        files = [stac["direct"][(date, t)] for t, *_ in TILES]
        np.testing.assert_allclose(x[:, k], RasterSource(files, bands=[1, 3], **KW).chips(g), atol=1e-6)
    src = RasterSource.from_stac(stac["catalog"], bands="red", **KW)  # all dates: one mosaic, dates kept
    assert [str(d) for d in src.dates] == list(DATES)


def test_a_stac_source_pickles_and_fingerprints_its_assets(stac, tmp_path):
    src = RasterSource.from_stac(stac["catalog"], bands=["red"], **KW)
    g = units(12)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(src)).chips(g), src.chips(g))
    fp = src.fingerprint()
    srcs = [s["path"] for f in fp["files"] for s in f["sources"]]
    assert len(srcs) == 4 and all(p.endswith("B04.tif") for p in srcs)
    assert "a band stack of" in repr(RasterSource.from_stac(_items(stac, DATES[0])[0], bands="red", **KW))


def test_stac_errors_say_what_to_change(stac, tmp_path):
    items = _items(stac, DATES[0])
    with pytest.raises(InputError, match=r"no asset or band named 'swir'.*'B04'.*'red'"):
        RasterSource.from_stac(items, bands=["swir"], **KW)
    with pytest.raises(InputError, match="name the bands"):
        RasterSource.from_stac(items, bands=[], **KW)
    with pytest.raises(InputError, match="dates from the items"):
        RasterSource.from_stac(items, bands="red", dates=["2020-01-01"], **KW)
    # a band offered by two assets: ask by key
    twin = items[0].clone()
    twin.assets["red-copy"] = twin.assets["B04"].clone()
    with pytest.raises(InputError, match=r"several assets.*'B04', 'red-copy'"):
        RasterSource.from_stac([twin], bands="red", **KW)
    # items in two CRSs
    other = tmp_path / "zone13.tif"
    with rasterio.open(other, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint16", crs="EPSG:32613",
                       transform=Affine(10, 0, 300000, 0, -10, 4500000)) as ds:
        ds.write(np.ones((1, 4, 4), np.uint16))
    alien = items[0].clone()
    alien.id = "zone-13"
    alien.assets["B04"].href = str(other)
    with pytest.raises(CRSError, match=r"share a CRS.*zone-13: EPSG:32613"):
        RasterSource.from_stac([items[0], alien], bands="B04", **KW)
    # relative hrefs of items built in memory, without a self link
    bare = pystac.Item(id="bare", geometry=None, bbox=None, datetime=dt.datetime(2020, 1, 1), properties={})
    bare.add_asset("B04", pystac.Asset(href="B04.tif"))
    with pytest.raises(InputError, match="relative href"):
        RasterSource.from_stac([bare], bands="B04", **KW)
    empty = pystac.Catalog(id="e", description="empty")
    with pytest.raises(InputError, match="holds no items"):
        RasterSource.from_stac(empty, bands="red", **KW)
    with pytest.raises(InputError, match="not a file"):
        RasterSource.from_stac(tmp_path / "nope.json", bands="red", **KW)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "Catalog"}))
    with pytest.raises(Exception, match="not a valid STAC document"):
        RasterSource.from_stac(bad, bands="red", **KW)


# ============================================================================ xarray
rioxarray = pytest.importorskip("rioxarray")
# rioxarray 0.19 itself multiplies Affine objects with `*` (affine 3 warns): not ours to fix
xr_warning = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


@xr_warning
def test_a_rioxarray_array_gives_the_chips_of_its_file(tmp_path):
    files = fx.write_fixtures(tmp_path / "r")
    g = units(20)
    direct = RasterSource(files["full"], **KW).chips(g)
    da = rioxarray.open_rasterio(files["full"])
    np.testing.assert_allclose(RasterSource.from_xarray(da, **KW).chips(g), direct, atol=1e-5)
    # rows stored south-up (as some loaders give them) are flipped by the geotransform
    flipped = da.isel(y=slice(None, None, -1))
    np.testing.assert_allclose(RasterSource.from_xarray(flipped, **KW).chips(g), direct, atol=1e-5)
    # the temporary file lives as long as the source; a pickled copy reads it too
    src = RasterSource.from_xarray(da, **KW)
    folder = Path(src.paths[0]).parent
    np.testing.assert_allclose(pickle.loads(pickle.dumps(src)).chips(g), direct, atol=1e-5)
    del src
    import gc

    gc.collect()
    assert not folder.exists()
    # band names from a string coordinate; a kept file at path=
    named = da.assign_coords(band=["red", "green", "blue"])
    src = RasterSource.from_xarray(named, path=tmp_path / "kept.tif", bands=["blue"], **KW)
    assert src.bands == ("blue",) and (tmp_path / "kept.tif").exists()
    np.testing.assert_allclose(src.chips(g), direct[:, 2:3], atol=1e-5)
    # NaN is invalid in a float array without a nodata value
    holes = da.astype("float32").copy()
    holes.attrs.pop("_FillValue", None)
    holes.values[:, :10, :] = np.nan
    _, valid = RasterSource.from_xarray(holes.rio.write_nodata(None), **KW).chips(g, return_valid=True)
    _, valid_ref = RasterSource(files["full"], nodata=-1e30, **KW).chips(g, return_valid=True)
    assert (valid <= valid_ref).all() and (valid < valid_ref).any()


@xr_warning
def test_an_xarray_time_series_is_a_sequence(tmp_path):
    import xarray as xr

    files = fx.write_fixtures(tmp_path / "r")
    frames = [rioxarray.open_rasterio(files[f"date_2020-0{m}-01"]) for m in (1, 2, 3)]
    da = xr.concat(frames, dim="time").assign_coords(time=np.array(["2020-01-01", "2020-02-01", "2020-03-01"],
                                                                   dtype="datetime64[ns]"))
    seq = RasterSequence.from_xarray(da, path=tmp_path / "frames" / "s2.tif", **KW)
    assert [str(d) for d in seq.dates] == ["2020-01-01", "2020-02-01", "2020-03-01"]
    assert (tmp_path / "frames" / "s2_2020-02-01.tif").exists()
    ref = RasterSequence({f"2020-0{m}-01": files[f"date_2020-0{m}-01"] for m in (1, 2, 3)}, **KW)
    g = units(10)
    np.testing.assert_allclose(seq.chips(g), ref.chips(g), atol=1e-4)


@xr_warning
def test_xarray_errors_say_what_to_change(tmp_path):
    import xarray as xr

    files = fx.write_fixtures(tmp_path / "r")
    da = rioxarray.open_rasterio(files["full"])
    with pytest.raises(CRSError, match="write_crs"):
        RasterSource.from_xarray(xr.DataArray(da.values, dims=da.dims, coords={"x": da.x, "y": da.y}), **KW)
    with pytest.raises(InputError, match="Dataset"):
        RasterSource.from_xarray(da.to_dataset(name="v"), **KW)
    with pytest.raises(InputError, match="extra dims"):
        RasterSource.from_xarray(da.expand_dims(run=[1, 2]), **KW)
    with pytest.raises(InputError, match="time_dim"):
        RasterSequence.from_xarray(da, **KW)


# ============================================================================ study files
ROOT = Path(__file__).resolve().parents[2]


def _stac_study(tmp_path, treated_on: str, extra: str = "") -> Path:
    import shutil

    import pandas as pd

    shutil.copytree(ROOT / "studies" / "data" / "stac", tmp_path / "stac")
    v = pd.read_csv(ROOT / "studies" / "data" / "villages.csv")
    v["treated_on"] = np.where(v["treated"] == 1, treated_on, "")
    v.to_csv(tmp_path / "villages.csv", index=False)
    text = (ROOT / "studies" / "villages_stac.toml").read_text()
    text = text.replace('path = "data/villages.csv"', 'path = "villages.csv"')
    text = text.replace('path = "data/stac/catalog.json"', 'path = "stac/catalog.json"')
    text = text.replace('n_features = 64', 'n_features = 16').replace('[imagery]', '[imagery]\n' + extra, 1)
    study = tmp_path / "study.toml"
    study.write_text(text)
    return study


def test_a_stac_study_refuses_imagery_dated_after_a_treatment(tmp_path, capsys):
    from eocausal.cli import main

    study = _stac_study(tmp_path, "2020-06-15")  # treated the day the items were taken
    assert main(["run", str(study), "--out", str(tmp_path / "out"), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "127 units were treated on or before the latest imagery (2020-06-15" in err
    assert "allow_post_treatment = true" in err and not (tmp_path / "out").exists()


def test_a_stac_study_with_post_treatment_imagery_allowed_says_so(tmp_path):
    import json

    from eocausal.cli import main

    study = _stac_study(tmp_path, "2020-01-01", extra="allow_post_treatment = true")
    assert main(["run", str(study), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    res = (tmp_path / "out" / "results.json").read_text()
    assert "127 units were treated on or before the latest item" in res and "post-treatment imagery" in res
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["embedding_source"]["imagery"]["items"] == ["scene-west", "scene-east"]
    assert any(p.endswith("B4.tif") for p in man["data_files"])
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "imagery (STAC)" in html and "scene-west" in html


def test_a_stac_study_names_its_bands(tmp_path):
    from eocausal.errors import StudyFileError
    from eocausal.study.schema import load_study

    study = _stac_study(tmp_path, "2021-06-01")
    study.write_text(study.read_text().replace('bands = ["red", "green", "blue"]', "bands = [1, 2, 3]"))
    with pytest.raises(StudyFileError, match="named"):
        load_study(study)
    import re

    study.write_text(re.sub(r"^bands = .*\n", "", study.read_text(), flags=re.M))
    with pytest.raises(StudyFileError, match="needs the key 'bands'"):
        load_study(study)


def test_missing_optional_dependencies_name_their_extra(monkeypatch, tmp_path):
    import sys

    from eocausal.errors import DependencyError

    monkeypatch.setitem(sys.modules, "pystac", None)  # import pystac -> ImportError
    with pytest.raises(DependencyError, match=r"pip install 'eocausal\[stac\]'"):
        RasterSource.from_stac(tmp_path / "catalog.json", bands="red")
    monkeypatch.setitem(sys.modules, "rioxarray", None)
    with pytest.raises(DependencyError, match=r"pip install 'eocausal\[xarray\]'"):
        RasterSource.from_xarray(object())
