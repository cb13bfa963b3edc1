"""Tests of the raster readers: RasterSource, RasterSequence, EmbeddingRaster.

Real-imagery tests read ../shared/data/landsat (see its README); the rest read tiny GeoTIFFs
written by tests/data/rasters.py into a temporary folder. Every raster fixture lies in UTM 12N
on a 10 m grid near the central meridian, so a chip's square is the same square on the grid.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import warnings
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from shapely.geometry import Polygon, box

from eocausal.data._raster_common import chip_boxes
from eocausal.data.arrays import ArraySource
from eocausal.data.embedding_raster import EmbeddingRaster
from eocausal.data.raster import RasterSource
from eocausal.data.sequences import RasterSequence
from eocausal.data.units import Units
from eocausal.errors import (CRSError, DataFileError, DataQualityWarning, ImageDateWarning,
                             InputError, MissingFileError)

_spec = importlib.util.spec_from_file_location("raster_fixtures", Path(__file__).with_name("rasters.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LANDSAT = SHARED / "data" / "landsat" / "landsat.tif"
LANDSAT7 = SHARED / "data" / "landsat" / "landsat7.tif"
LANDSAT7_CRS = "EPSG:3857"
needs_landsat = pytest.mark.skipif(not LANDSAT.exists(), reason="../shared/data/landsat is absent")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return fx.write_fixtures(tmp_path_factory.mktemp("rasters"))


def pts(xy, ids=None, crs=fx.CRS) -> gpd.GeoSeries:
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return gpd.GeoSeries(gpd.points_from_xy(xy[:, 0], xy[:, 1]), crs=crs, index=ids)


def centre(row, col) -> tuple[float, float]:
    """Map coordinates of the centre of fixture pixel (row, col)."""
    return fx.ORIGIN_X + (col + 0.5) * fx.RES, fx.ORIGIN_Y - (row + 0.5) * fx.RES


# ============================================================================ real Landsat files
def _distinct_pixel(path, row, col):
    """Search near (row, col) for a pixel whose band vector differs from all 8 neighbours."""
    with rasterio.open(path) as ds:
        block = ds.read(window=Window(col - 20, row - 20, 41, 41)).astype(int)
    for r in range(1, 40):
        for c in range(1, 40):
            v = block[:, r, c]
            nb = block[:, r - 1:r + 2, c - 1:c + 2].reshape(len(v), 9)
            if v.min() > 0 and sum((nb == v[:, None]).all(0)) == 1:
                return row - 20 + r, col - 20 + c, v
    raise AssertionError("no distinct pixel found")


@needs_landsat
@pytest.mark.parametrize("path,row,col", [(LANDSAT, 700, 650), (LANDSAT, 200, 1300), (LANDSAT7, 1000, 1800)])
def test_point_given_in_utm_covers_the_right_pixel(path, row, col):
    r, c, expected = _distinct_pixel(path, row, col)
    with rasterio.open(path) as ds:
        x, y = ds.xy(r, c)  # pixel centre, raster CRS
        crs = ds.crs
    point = pts([[x, y]], crs=crs).to_crs("EPSG:32612" if path == LANDSAT else "EPSG:32610")
    src = RasterSource(path, resampling="nearest")
    chip = src.chips(point, chip_size_m=90, chip_px=3)
    assert chip.shape == (1, len(expected), 3, 3)
    np.testing.assert_array_equal(chip[0, :, 1, 1], expected)


@needs_landsat
@pytest.mark.parametrize("path,lonlat,zone", [(LANDSAT, (-112.7, 40.8), 32612), (LANDSAT7, (-122.3, 37.8), 32610)])
def test_chip_size_in_metres_in_both_crs(path, lonlat, zone):
    lon, lat = lonlat
    point = pts([lonlat], crs=4326)
    with rasterio.open(path) as ds:
        crs, t = ds.crs, ds.transform
    (minx, miny, maxx, maxy), = chip_boxes(point, crs, 1000.0)
    ux, uy = point.to_crs(zone).iloc[0].coords[0]
    ref = transform_bounds(zone, crs, ux - 500, uy - 500, ux + 500, uy + 500, densify_pts=21)
    np.testing.assert_allclose([minx, miny, maxx, maxy], ref, rtol=0, atol=abs(t.a) * 1e-6)
    cols, rows = (maxx - minx) / t.a, (maxy - miny) / -t.e
    if crs.is_geographic:  # degrees: 1000 m is 1000/111.2 km of latitude, /cos(lat) of longitude
        want_cols = 1000 / (111_320 * np.cos(np.radians(lat))) / t.a
        want_rows = 1000 / 110_950 / -t.e
    else:  # Web Mercator: 1000 ground metres are 1000/cos(lat) map metres
        want_cols = want_rows = 1000 / np.cos(np.radians(lat)) / t.a
    # the UTM square is rotated (grid convergence) in the raster CRS: its box grows ~1-2 %
    assert want_cols <= cols <= 1.03 * want_cols
    assert want_rows <= rows <= 1.03 * want_rows
    # and the chip is that window, resampled to 33 x 33
    with rasterio.open(path) as ds:
        direct = ds.read(window=from_bounds(*ref, t), out_shape=(ds.count, 33, 33),
                         resampling=Resampling.nearest)
    chip = RasterSource(path, resampling="nearest").chips(point, chip_size_m=1000, chip_px=33)
    np.testing.assert_array_equal(chip[0], direct)


def _expected_valid(mask, t, bounds, px):
    """Valid fractions by the documented rule, computed from the raster's dataset mask:
    (any valid source pixel in the chip pixel's footprint, valid source pixel at its centre)."""
    minx, miny, maxx, maxy = bounds
    col0, row0 = (minx - t.c) / t.a, (maxy - t.f) / t.e
    sx, sy = (maxx - minx) / t.a / px, (maxy - miny) / -t.e / px
    footprint, centre_px = np.zeros((px, px), bool), np.zeros((px, px), bool)
    for j in range(px):
        r0, r1 = row0 + j * sy, row0 + (j + 1) * sy
        for i in range(px):
            c0, c1 = col0 + i * sx, col0 + (i + 1) * sx
            footprint[j, i] = mask[int(np.floor(r0)):int(np.ceil(r1)), int(np.floor(c0)):int(np.ceil(c1))].any()
            centre_px[j, i] = mask[int((r0 + r1) / 2), int((c0 + c1) / 2)]
    return footprint.mean(), centre_px.mean()


@needs_landsat
def test_landsat7_nodata_edge_gives_a_partial_valid_fraction():
    with rasterio.open(LANDSAT7) as ds:
        mask = ds.dataset_mask() > 0  # nodata 0: a pixel is nodata when all 3 bands are 0
        t = ds.transform
        row, col = 1700, 449  # the lower-left corner is filled with 0 in all bands
        assert mask[row - 20:row + 20, col - 30:col].mean() < 0.1 and mask[row, col]
        edge = pts([ds.xy(row, col)], ids=["edge"], crs=ds.crs)
        inner = pts([ds.xy(1000, 1800)], ids=["inner"], crs=ds.crs)
        assert mask[970:1031, 1770:1831].all()
    (bounds,) = chip_boxes(edge, LANDSAT7_CRS, 1000.0)
    by_footprint, by_centre = _expected_valid(mask, t, bounds, 33)
    assert 0.1 < by_centre < by_footprint < 0.9
    src = RasterSource(LANDSAT7, chip_size_m=1000, chip_px=33, valid="any-band", min_valid=0)  # the dataset mask's rule
    chips, valid = src.chips(pd.concat([edge, inner]), return_valid=True)
    assert valid[0] == pytest.approx(by_footprint, abs=0.01)  # average: any valid source pixel
    assert valid[1] == 1.0
    assert ((chips[0] == 0).all(axis=0)).mean() == pytest.approx(1 - valid[0], abs=1e-9)
    assert (chips[1] > 0).any(axis=0).all()
    _, valid = RasterSource(LANDSAT7, resampling="nearest", valid="any-band", min_valid=0).chips(
        edge, chip_size_m=1000, chip_px=33, return_valid=True)
    assert valid[0] == pytest.approx(by_centre, abs=0.01)  # nearest: the sampled source pixel


@needs_landsat
def test_landsat_interior_and_mosaic_paths_agree_within_rounding():
    g = pts([(-112.7, 40.8), (-112.6, 40.7)], crs=4326)
    plain = RasterSource(LANDSAT).chips(g, chip_size_m=1000, chip_px=33)
    via_vrt = RasterSource(LANDSAT, nodata=-1).chips(g, chip_size_m=1000, chip_px=33)  # forces the mosaic path
    assert np.abs(plain - via_vrt).max() <= 0.5  # GDAL rounds averages read from uint8 files
    assert np.abs(plain - via_vrt).mean() < 0.3


# ============================================================================ generated rasters
def test_mosaic_of_two_tiles_equals_the_single_file(files):
    seam = fx.ORIGIN_X + 32 * fx.RES
    xy = [(seam - 7, fx.ORIGIN_Y - 200), (seam + 3, fx.ORIGIN_Y - 321), (seam + 12, fx.ORIGIN_Y - 77)]
    g = pts(xy)
    boxes = chip_boxes(g, fx.CRS, 105.0)
    assert ((boxes[:, 0] < seam) & (boxes[:, 2] > seam)).all()  # every chip crosses the seam
    single = RasterSource(files["full"]).chips(g, chip_size_m=105, chip_px=7)
    mosaic = RasterSource([files["tile_left"], files["tile_right"]]).chips(g, chip_size_m=105, chip_px=7)
    assert np.abs(single - mosaic).max() <= 1e-3
    right_only = RasterSource(files["tile_right"], on_invalid="keep").chips(g, chip_size_m=105, chip_px=7)
    assert np.abs(single - right_only).max() > 100  # the left tile matters


@pytest.mark.parametrize("resampling", ["nearest", "average", "bilinear", "cubic", "lanczos"])
@pytest.mark.parametrize("size_m,px", [(100, 10), (80, 5), (250, 5)])
def test_chips_across_tiles_equal_the_single_file_for_every_resampling(files, resampling, size_m, px):
    """Chips at sub-pixel offsets across the seam, beside it (the kernel reaching the other tile) and
    over the raster's edge: tiles read as one mosaic give the single file's chips and valid fractions.
    (GDAL's VRT alone shifted chips across the seam by up to half a chip pixel: 9 of 300 at 1:1.)"""
    rng = np.random.default_rng(5)
    seam = fx.ORIGIN_X + 32 * fx.RES
    x = np.concatenate([seam + rng.uniform(-60, 60, 40), [fx.ORIGIN_X + 3.3, fx.ORIGIN_X + 631.7]])
    y = np.concatenate([fx.ORIGIN_Y - rng.uniform(20, 620, 40), [fx.ORIGIN_Y - 300.2, fx.ORIGIN_Y - 17.9]])
    g = pts(np.c_[x, y])
    kw = dict(chip_size_m=size_m, chip_px=px, resampling=resampling, on_invalid="keep")
    single, v1 = RasterSource(files["full"], **kw).chips(g, return_valid=True)
    tiles, v2 = RasterSource([files["tile_left"], files["tile_right"]], **kw).chips(g, return_valid=True)
    forced, v3 = RasterSource(files["full"], nodata=-1e30, **kw).chips(g, return_valid=True)  # all via the mosaic
    assert np.abs(single - tiles).max() <= 1e-3 and np.abs(v1 - v2).max() == 0
    assert np.abs(single - forced).max() <= 1e-3 and np.abs(v1 - v3).max() == 0


def test_open_handles_are_capped(files, monkeypatch):
    import eocausal.data.raster as raster_module

    g = pts([centre(10, 5), centre(10, 50), centre(40, 3), centre(40, 60)])  # one tile each, in turn
    src = RasterSource([files["tile_left"], files["tile_right"]], chip_size_m=30, chip_px=3)
    expected = src.chips(g)
    assert len(src._opened) == 2
    src.close()
    monkeypatch.setattr(raster_module, "_MAX_OPEN", 1)
    np.testing.assert_array_equal(src.chips(g), expected)
    assert len(src._opened) == 1


def test_first_file_with_a_valid_pixel_wins(files):
    full = fx.full_array()
    g = pts([centre(30, 35), centre(5, 35)], ids=["overlap", "a_nodata"])
    ab = RasterSource([files["tile_a"], files["tile_b"]], resampling="nearest").chips(g, chip_size_m=30, chip_px=3)
    ba = RasterSource([files["tile_b"], files["tile_a"]], resampling="nearest").chips(g, chip_size_m=30, chip_px=3)
    np.testing.assert_allclose(ab[0, :, 1, 1], full[:, 30, 35])
    np.testing.assert_allclose(ba[0, :, 1, 1], full[:, 30, 35] + 1000)
    np.testing.assert_allclose(ab[1, :, 1, 1], full[:, 5, 35] + 1000)  # tile_a has nodata there


def test_chips_come_back_in_the_callers_order(files):
    full = fx.full_array()
    cells = [(40, 3), (2, 60), (33, 33), (10, 11), (61, 20)]
    g = pts([centre(r, c) for r, c in cells], ids=list("abcde"))
    src = RasterSource(files["full"], resampling="nearest", chip_size_m=10, chip_px=1)
    chips = src.chips(g)
    np.testing.assert_allclose(chips[:, :, 0, 0], np.array([full[:, r, c] for r, c in cells]))
    rev = src.chips(g.iloc[::-1])
    np.testing.assert_array_equal(rev, chips[::-1])


def test_boundless_chip_at_a_corner_has_the_full_shape(files):
    full = fx.full_array()
    src = RasterSource(files["full"], resampling="nearest", min_valid=0)
    chip, valid = src.chips(pts([(fx.ORIGIN_X, fx.ORIGIN_Y)]), chip_size_m=200, chip_px=20, return_valid=True)
    assert chip.shape == (1, 3, 20, 20)
    assert valid[0] == pytest.approx(0.25)
    np.testing.assert_allclose(chip[0, :, 10:, 10:], full[:, :10, :10])
    assert (chip[0, :, :10, :] == 0).all() and (chip[0, :, :, :10] == 0).all()


def test_unit_outside_every_raster_follows_the_policy(files):
    g = pts([centre(10, 10), (fx.ORIGIN_X - 5000, fx.ORIGIN_Y), centre(50, 50)], ids=["in", "out", "in2"])
    src = RasterSource(files["full"], chip_size_m=50, chip_px=5)
    with pytest.warns(DataQualityWarning, match=r"1 of 3 units dropped.*'out'") as rec:
        chips, valid = src.chips(g, return_valid=True)
    assert rec[0].filename == __file__  # stacklevel points at the caller
    assert chips.shape == (2, 3, 5, 5) and valid.tolist() == [1.0, 1.0]
    assert src.last_report_["dropped_ids"] == ["out"] and src.last_report_["n_kept"] == 2
    json.dumps(src.last_report_)
    failing = RasterSource(files["full"], chip_size_m=50, chip_px=5, on_invalid="fail")
    with pytest.raises(InputError, match="'out'"):
        failing.chips(g)
    keeping = RasterSource(files["full"], chip_size_m=50, chip_px=5, on_invalid="keep")
    chips, valid = keeping.chips(g, return_valid=True)
    assert chips.shape == (3, 3, 5, 5) and valid[1] == 0 and (chips[1] == 0).all()
    assert keeping.last_report_["invalid_ids"] == ["out"] and keeping.last_report_["n_dropped"] == 0


def test_min_valid_drops_partly_covered_units(files):
    g = pts([(fx.ORIGIN_X, fx.ORIGIN_Y - 320), centre(30, 30)], ids=["edge", "inner"])
    src = RasterSource(files["full"], chip_size_m=100, chip_px=10, min_valid=0.6)
    with pytest.warns(DataQualityWarning, match="'edge'"):
        chips = src.chips(g)
    assert chips.shape[0] == 1 and src.last_report_["invalid_valid_fraction"] == [0.5]


def test_raster_without_crs_is_refused(files):
    with pytest.raises(CRSError, match="rio edit-info.*gdal_edit"):
        RasterSource(files["no_crs"])


def test_units_without_crs_are_refused(files):
    src = RasterSource(files["full"], chip_size_m=50, chip_px=5)
    with pytest.raises(CRSError, match="set_crs"):
        src.chips(gpd.GeoSeries(gpd.points_from_xy([fx.ORIGIN_X], [fx.ORIGIN_Y])))
    no_place = Units.from_frame(pd.DataFrame({"w": [0, 1], "y": [1.0, 2.0]}), treatment="w", outcome="y")
    with pytest.raises(CRSError):
        src.chips(no_place)


def test_units_table_with_lon_lat_is_read(files):
    x, y = centre(20, 20)
    lon, lat = pts([(x, y)]).to_crs(4326).iloc[0].coords[0]
    frame = pd.DataFrame({"id": ["u1", "u2"], "w": [0, 1], "y": [1.0, 2.0],
                          "lon": [lon, lon], "lat": [lat, lat - 0.0009]})
    units = Units.from_frame(frame, id="id", treatment="w", outcome="y", lon="lon", lat="lat")
    src = RasterSource(files["full"], resampling="nearest")
    chips = src.chips(units, chip_size_m=10, chip_px=1)
    np.testing.assert_allclose(chips[0, :, 0, 0], fx.full_array()[:, 20, 20], rtol=1e-6)
    assert list(src.keys_for(units)) == ["u1", "u2"]


def test_bands_by_number_and_description(files):
    g = pts([centre(5, 7)])
    src = RasterSource(files["described"], bands=["B8", "B2"], resampling="nearest")
    assert src.bands == ("B8", "B2") and src.band_indexes == (4, 1)
    np.testing.assert_array_equal(src.chips(g, chip_size_m=10, chip_px=1)[0, :, 0, 0], [4007, 1007])
    by_number = RasterSource(files["described"], bands=[4, 1], resampling="nearest")
    np.testing.assert_array_equal(by_number.chips(g, chip_size_m=10, chip_px=1), src.chips(g, chip_size_m=10, chip_px=1))
    with pytest.raises(InputError, match=r"'B5'.*\['B2', 'B3', 'B4', 'B8'\]"):
        RasterSource(files["described"], bands=["B5"])
    with pytest.raises(InputError, match="1..4"):
        RasterSource(files["described"], bands=[5])


def test_mixed_band_counts_are_refused(files):
    with pytest.raises(DataFileError, match=r"full\.tif: 3 bands.*two_bands\.tif: 2 bands"):
        RasterSource([files["full"], files["two_bands"]])


def test_unreadable_and_missing_files(files, tmp_path):
    with pytest.raises(DataFileError, match="corrupt.tif"):
        RasterSource(files["corrupt"])
    truncated = RasterSource(files["truncated"], chip_size_m=50, chip_px=5)
    with pytest.raises(DataFileError, match="truncated.tif"):
        truncated.chips(pts([centre(30, 30)]))
    missing = tmp_path / "nope.tif"
    with pytest.raises(MissingFileError, match="nope.tif") as info:
        RasterSource([files["full"], missing])
    assert isinstance(info.value, FileNotFoundError)


def test_polygon_bounding_square_and_mask(files):
    full = fx.full_array()
    x0, y0 = fx.ORIGIN_X + 100, fx.ORIGIN_Y - 100  # pixel corner (10, 10)
    ell = Polygon([(x0, y0), (x0 + 100, y0), (x0 + 100, y0 - 50), (x0 + 50, y0 - 50),
                   (x0 + 50, y0 - 100), (x0, y0 - 100)])  # an L over rows 10-19, cols 10-19
    g = gpd.GeoSeries([ell], crs=fx.CRS, index=["L"])
    src = RasterSource(files["full"], min_valid=0)
    plain = src.chips(g, chip_px=10)
    np.testing.assert_allclose(plain[0], full[:, 10:20, 10:20], rtol=1e-6)
    masked, valid = src.chips(g, chip_px=10, mask_polygons=True, return_valid=True)
    inside = np.zeros((10, 10), bool)
    inside[:5, :] = True
    inside[5:, :5] = True
    np.testing.assert_allclose(masked[0][:, inside], full[:, 10:20, 10:20][:, inside], rtol=1e-6)
    assert (masked[0][:, ~inside] == 0).all() and valid[0] == 1.0
    in_degrees = src.chips(g.to_crs(4326), chip_px=10, mask_polygons=True)  # same L, lon/lat
    np.testing.assert_allclose(in_degrees, masked, rtol=1e-4)
    off = gpd.GeoSeries([ell], crs=fx.CRS).translate(-150, 0)  # now over cols -5..4
    _, valid = src.chips(off, chip_px=10, mask_polygons=True, return_valid=True)
    assert valid[0] == pytest.approx(25 / 75)  # 75 pixels in the L; on the raster: rows 0-4, cols 0-4


def test_overviews_are_used_for_coarse_chips(files):
    # overview_trap: overviews hold 1, full resolution holds 2
    g = pts([(fx.ORIGIN_X + 320, fx.ORIGIN_Y - 320), (fx.ORIGIN_X, fx.ORIGIN_Y)], ids=["mid", "corner"])
    for nodata in (None, -12345):  # the direct and the mosaic (VRT) paths
        src = RasterSource(files["overview_trap"], nodata=nodata, on_invalid="keep")
        fine = src.chips(g, chip_size_m=640, chip_px=64)
        coarse = src.chips(g, chip_size_m=640, chip_px=16)
        assert (fine[0] == 2).all() and (coarse[0] == 1).all()
        assert (coarse[1][:, 8:, 8:] == 1).all()


def test_explicit_nodata_value(files):
    full = fx.full_array()
    value = float(full[0, 12, 12])
    g = pts([centre(12, 12), centre(40, 40)])
    src = RasterSource(files["full"], bands=[1], nodata=value, resampling="nearest", on_invalid="keep")
    chips, valid = src.chips(g, chip_size_m=30, chip_px=3, return_valid=True)
    assert chips[0, 0, 1, 1] == 0 and valid[0] == pytest.approx(8 / 9) and valid[1] == 1.0


def test_engine_protocol(files):
    full = fx.full_array()
    g = gpd.GeoDataFrame({"v": [1, 2, 3]}, geometry=pts([centre(3, 4), centre(50, 9), centre(20, 60)]).values,
                         crs=fx.CRS, index=pd.Index(["a", "b", "c"], name="unit"))
    src = RasterSource(files["full"], chip_size_m=10, chip_px=1, resampling="nearest")
    keys = src.keys_for(g)
    assert keys.tolist() == ["a", "b", "c"]
    out = src.load(["c", "a"], g)
    assert out.dtype == np.float32 and out.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(out[:, :, 0, 0], [full[:, 20, 60], full[:, 3, 4]])
    with pytest.raises(InputError, match="'zz'"):
        src.load(["zz"], g)
    far = pd.concat([g, gpd.GeoDataFrame({"v": [4]}, geometry=pts([(0, 0)]).values, crs=fx.CRS,
                                          index=pd.Index(["far"], name="unit"))])
    with pytest.warns(DataQualityWarning):
        out = src.load(["far", "b"], far)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    assert src.last_report_["dropped_ids"] == ["far"]


def test_fingerprint_tracks_files_and_parameters(files, tmp_path):
    src = RasterSource(files["full"], chip_size_m=50, chip_px=5)
    fp = src.fingerprint()
    json.dumps(fp)
    f = fp["files"][0]
    assert f["path"] == str(Path(files["full"]).resolve()) and f["size"] > 0 and len(f["sha256_head_tail"]) == 64
    assert RasterSource(files["full"], chip_size_m=50, chip_px=5).fingerprint() == fp
    assert RasterSource(files["full"], chip_size_m=50, chip_px=6).fingerprint() != fp
    copy = tmp_path / "copy.tif"
    copy.write_bytes(Path(files["full"]).read_bytes())
    before = RasterSource(copy).fingerprint()["files"][0]
    with rasterio.open(copy, "r+") as ds:
        ds.write(np.zeros((3, 64, 64), np.float32))
    after = RasterSource(copy).fingerprint()["files"][0]
    assert after["sha256_head_tail"] != before["sha256_head_tail"]


def test_pickle_close_and_context_manager(files):
    g = pts([centre(10, 10), centre(30, 40)])
    with RasterSource(files["full"], chip_size_m=50, chip_px=5) as src:
        first = src.chips(g)
        clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.chips(g), first)
    assert src._opened == []
    np.testing.assert_array_equal(src.chips(g), first)  # reopens after close
    src.close()


def test_threads_read_the_same_chips(files):
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    g = pts(np.column_stack([fx.ORIGIN_X + rng.uniform(0, 640, 40), fx.ORIGIN_Y - rng.uniform(0, 640, 40)]))
    src = RasterSource([files["tile_left"], files["tile_right"]], chip_size_m=55, chip_px=4, on_invalid="keep")
    keys = src.keys_for(g)
    expected = src.load(keys, g)
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda k: src.load(k, g), np.array_split(keys, 8)))
    np.testing.assert_array_equal(np.concatenate(parts), expected)
    assert len(src._opened) >= 2  # the worker threads opened their own handles
    src.close()


def test_bad_arguments(files):
    with pytest.raises(InputError, match="on_invalid"):
        RasterSource(files["full"], on_invalid="skip")
    with pytest.raises(InputError, match="min_valid"):
        RasterSource(files["full"], min_valid=2)
    with pytest.raises(InputError, match="resampling"):
        RasterSource(files["full"], resampling="sum")
    src = RasterSource(files["full"])
    with pytest.raises(InputError, match="chip_size_m"):
        src.chips(pts([centre(1, 1)]), chip_px=5)
    with pytest.raises(InputError, match="chip_px"):
        src.chips(pts([centre(1, 1)]), chip_size_m=50)


# ============================================================================ sequences
def test_sequence_chips_are_ordered_by_date(files):
    full = fx.full_array()
    seq = RasterSequence({"2020-03-01": files["date_2020-03-01"], date(2020, 1, 1): files["date_2020-01-01"],
                          np.datetime64("2020-02-01"): files["date_2020-02-01"]},
                         resampling="nearest", chip_size_m=10, chip_px=1)
    assert seq.dates.dtype == np.dtype("datetime64[D]")
    assert [str(d) for d in seq.dates] == ["2020-01-01", "2020-02-01", "2020-03-01"]
    g = pts([centre(4, 9), centre(40, 2)], ids=["p", "q"])
    chips = seq.chips(g)
    assert chips.shape == (2, 3, 3, 1, 1)
    for t in range(3):
        np.testing.assert_allclose(chips[:, t, :, 0, 0], [full[:, 4, 9] + 10000 * t, full[:, 40, 2] + 10000 * t])
    np.testing.assert_array_equal(seq.load(["q"], g), chips[1:])
    json.dumps(seq.fingerprint())


def test_sequence_date_check_warns_about_post_treatment_frames(files):
    seq = RasterSequence({d: files[f"date_{d}"] for d in ("2020-01-01", "2020-02-01", "2020-03-01")})
    with pytest.warns(ImageDateWarning, match=r"2 of 3 .*2020-02-01, 2020-03-01.*post-treatment") as rec:
        after = seq.check_dates("2020-01-15")
    assert after.tolist() == [False, True, True]
    assert rec[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not seq.check_dates(date(2020, 3, 1)).any()


def test_sequence_drops_a_unit_invalid_in_any_frame(files):
    seq = RasterSequence({"2020-01-01": files["full"], "2020-02-01": files["tile_left"]}, chip_size_m=30, chip_px=3)
    g = pts([centre(10, 5), centre(10, 50)], ids=["both", "first_only"])
    with pytest.warns(DataQualityWarning, match="first_only"):
        chips, valid = seq.chips(g, return_valid=True)
    assert chips.shape == (1, 2, 3, 3, 3) and valid.shape == (1, 2)


def test_sequence_valid_rule_reaches_every_frame(files, tmp_path):
    """valid= of a sequence applies to each frame: a pixel whose first band is nodata while the
    others hold data is invalid under 'all-bands' and valid under 'any-band'."""
    data = fx.full_array()
    data[0, :, :32] = -9999  # band 1 missing on the left half, bands 2-3 present
    partial = fx._write(tmp_path / "partial.tif", data, nodata=-9999)
    paths = {"2020-01-01": files["full"], "2020-02-01": partial}
    g = pts([centre(20, 10), centre(20, 50)], ids=["left", "right"])
    kw = dict(chip_size_m=30, chip_px=3, on_invalid="keep")
    _, strict = RasterSequence(paths, **kw).chips(g, return_valid=True)
    any_band, loose = RasterSequence(paths, valid="any-band", **kw).chips(g, return_valid=True)
    assert strict.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert loose.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert (any_band[0, 1, 0] == 0).all() and (any_band[0, 1, 1:] > 0).all()  # the missing band is 0-filled


# ============================================================================ embedding rasters
def test_embedding_raster_point_and_mean(files):
    with rasterio.open(files["embedding"]) as ds:
        emb = ds.read()
    g = pts([centre(20, 30), centre(40, 10)], ids=["a", "b"])
    out = EmbeddingRaster(files["embedding"]).sample(g)
    assert list(out.columns) == [f"e{i:02d}" for i in range(8)] and list(out.index) == ["a", "b"]
    np.testing.assert_allclose(out.loc["a"], emb[:, 20, 30], rtol=1e-6)
    np.testing.assert_allclose(out.loc["b"], emb[:, 40, 10], rtol=1e-6)
    x0, y0 = fx.ORIGIN_X + 300, fx.ORIGIN_Y - 200  # corner of pixel (20, 30)
    square = gpd.GeoSeries([box(x0, y0 - 40, x0 + 40, y0)], crs=fx.CRS, index=["sq"])
    mean = EmbeddingRaster(files["embedding"], how="mean").sample(square)
    np.testing.assert_allclose(mean.loc["sq"], emb[:, 20:24, 30:34].mean(axis=(1, 2)), rtol=1e-5)
    point_mean = EmbeddingRaster(files["embedding"], how="mean", chip_size_m=40).sample(pts([(x0 + 20, y0 - 20)]))
    np.testing.assert_allclose(point_mean.iloc[0], emb[:, 20:24, 30:34].mean(axis=(1, 2)), rtol=1e-5)
    on_polygon = EmbeddingRaster(files["embedding"]).sample(square)  # centroid: pixel (22, 32)
    np.testing.assert_allclose(on_polygon.loc["sq"], emb[:, 22, 32], rtol=1e-6)


def test_embedding_raster_nodata_gives_nan_rows(files):
    g = pts([centre(3, 3), centre(30, 30), (0.0, 0.0)], ids=["nodata", "ok", "off"])
    with pytest.warns(DataQualityWarning, match=r"2 of 3 units"):
        out = EmbeddingRaster(files["embedding"]).sample(g)
    assert out.loc[["nodata", "off"]].isna().all(axis=None) and out.loc["ok"].notna().all()
    named = EmbeddingRaster(files["embedding_named"]).sample(g.iloc[[1]])
    assert list(named.columns) == ["dim_a", "dim_b"]
    with pytest.raises(InputError, match="chip_size_m"):
        EmbeddingRaster(files["embedding"], how="mean").sample(g.iloc[[1]])


# ============================================================================ ArraySource protocol
def test_array_source_protocol():
    images = np.arange(2 * 4 * 4 * 3, dtype=float).reshape(2, 4, 4, 3)
    src = ArraySource(images, keys=["x", "y"])
    units = Units.from_frame(pd.DataFrame({"w": [0, 1, 1], "y": [1.0, 2, 3], "img": ["y", "x", "y"]}),
                             treatment="w", outcome="y", image_key="img")
    assert src.keys_for(units).tolist() == ["y", "x", "y"]
    np.testing.assert_array_equal(src.load(["y"], units), src.chips(["y"]))
    fp = src.fingerprint()
    assert fp["kind"] == "arrays" and fp["shape"] == [2, 4, 4, 3] and fp["sha256"] == src.identity()
    json.dumps(fp)
    with pytest.raises(InputError, match="image_key"):
        src.keys_for(pd.DataFrame({"a": [1]}))
