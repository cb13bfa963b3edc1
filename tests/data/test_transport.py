"""Transport outputs: support diagnostic, GeoDataFrame of effects, effect GeoTIFF (atomic)."""

from __future__ import annotations

import os

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine

from eocausal.data import transport
from eocausal.data.transport import (effects_to_geodataframe, support_diagnostic, write_effect_raster,
                                     write_effect_raster_blocks)
from eocausal.errors import CRSError, InputError, OutputError


TR = Affine(10, 0, 500_000, 0, -10, 4_500_000)


def _embeddings(n, rng, shift=0.0):
    A = np.random.default_rng(42).normal(size=(5, 30))  # a 5-dim structure in 30 dims
    return rng.normal(size=(n, 5)) @ A + 0.1 * rng.normal(size=(n, 30)) + shift


def test_mahalanobis_support_flags_about_one_minus_quantile_of_trial_like_places():
    rng = np.random.default_rng(0)
    train, new = _embeddings(2000, rng), _embeddings(4000, rng)
    s = support_diagnostic(train, new, quantile=0.95)
    # places drawn like the trial units: flagged with probability about 5%; binomial SE ~ 0.35%
    assert s.share_outside == pytest.approx(0.05, abs=4 * np.sqrt(0.05 * 0.95 / 4000) + 0.01)
    assert s.method == "mahalanobis_pca" and 1 <= s.n_components <= 30
    assert s.outside.dtype == bool and s.distance.shape == (4000,)
    far = support_diagnostic(train, _embeddings(200, rng, shift=3.0))
    assert far.share_outside > 0.95


def test_range_support_and_errors():
    rng = np.random.default_rng(1)
    train = rng.uniform(size=(500, 4))
    new = np.array([[0.5, 0.5, 0.5, 0.5], [1.5, 0.5, 0.5, 0.5]])
    s = support_diagnostic(train, new, method="range")
    assert s.outside.tolist() == [False, True] and s.distance[0] == 0 and s.distance[1] > 0
    with pytest.raises(InputError, match="dimensions"):
        support_diagnostic(train, np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"method='knn': use one of mahalanobis_pca, range"):
        support_diagnostic(train, new, method="knn")
    for method in transport.SUPPORT_METHODS:  # every rule the constant names runs
        assert support_diagnostic(train, new, method=method).method == method
    with pytest.raises(InputError, match="non-finite"):
        support_diagnostic(train, np.full((1, 4), np.nan))


def test_effects_to_geodataframe_adds_effects_and_flags():
    rng = np.random.default_rng(2)
    pts = gpd.GeoSeries(gpd.points_from_xy([30.1, 30.2, 30.3], [0.1, 0.2, 0.3]), crs="EPSG:4326")
    sup = support_diagnostic(rng.uniform(size=(100, 2)), np.array([[0.5, 0.5], [2, 2], [0.1, 0.9]]), method="range")
    gdf = effects_to_geodataframe(pts, [1.0, 2.0, 3.0], sup)
    assert list(gdf.columns) == ["geometry", "cate", "outside_support", "support_distance"]
    assert gdf.crs.to_epsg() == 4326 and gdf["outside_support"].tolist() == [False, True, False]
    units = gpd.GeoDataFrame({"id": [1, 2, 3]}, geometry=pts)
    out = effects_to_geodataframe(units, np.zeros(3), np.array([True, False, False]), column="tau")
    assert "id" in out and "tau" in out and "support_distance" not in out and "tau" not in units
    with pytest.raises(CRSError):
        effects_to_geodataframe(gpd.GeoSeries(gpd.points_from_xy([0], [0])), [1.0])
    with pytest.raises(InputError, match="one per place"):
        effects_to_geodataframe(pts, [1.0, 2.0])


def test_write_effect_raster_writes_a_georeferenced_two_band_tif(tmp_path):
    values = np.arange(12, dtype=float).reshape(3, 4)
    values[0, 0] = np.nan
    outside = values > 8
    tr = Affine(10, 0, 500_000, 0, -10, 4_500_000)
    path = write_effect_raster(tmp_path / "sub" / "effects.tif", values, tr, "EPSG:32612", outside=outside)
    with rasterio.open(path) as ds:
        assert ds.count == 2 and ds.crs.to_epsg() == 32612 and ds.transform == tr
        assert ds.descriptions == ("cate", "outside_support")
        band = ds.read(1)
        assert np.isnan(band[0, 0]) and np.allclose(band[1:], values[1:])
        flags = ds.read(2)
        assert np.isnan(flags[0, 0]) and np.array_equal(flags[1:] == 1, outside[1:])
    assert os.listdir(tmp_path / "sub") == ["effects.tif"]
    # a 6-tuple transform and a single band
    p2 = write_effect_raster(tmp_path / "one.tif", values, tuple(tr)[:6], 32612)
    with rasterio.open(p2) as ds:
        assert ds.count == 1 and ds.transform == tr


def test_write_effect_raster_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "effects.tif"
    write_effect_raster(path, np.ones((2, 2)), TR, "EPSG:32612")
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)  # the writer (write_geotiff) renames with os.replace
    with pytest.raises(OutputError, match="disk full"):
        write_effect_raster(path, np.zeros((2, 2)), TR, "EPSG:32612")
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["effects.tif"]  # and no temporary file is left


def test_write_effect_raster_errors(tmp_path):
    with pytest.raises(InputError, match="2-d"):
        write_effect_raster(tmp_path / "x.tif", np.zeros(4), TR, "EPSG:4326")
    with pytest.raises(CRSError):
        write_effect_raster(tmp_path / "x.tif", np.zeros((2, 2)), TR, None)
    with pytest.raises(InputError, match="outside"):
        write_effect_raster(tmp_path / "x.tif", np.zeros((2, 2)), TR, "EPSG:4326",
                            outside=np.zeros((3, 3), bool))


def test_blockwise_raster_equals_the_in_memory_one(tmp_path):
    """A map written a block of rows at a time (predict called per block, never on the whole grid)
    equals the one written from the full array; blocks that do not divide the height work."""
    rng = np.random.default_rng(0)
    H, W = 37, 23
    values = rng.normal(size=(H, W))
    values[5, 7] = np.nan
    outside = values > 1.0
    calls = []

    def predict(rows):
        calls.append((rows.start, rows.stop))
        return values[rows], outside[rows]

    tr = Affine(10, 0, 500_000, 0, -10, 4_500_000)
    a = write_effect_raster_blocks(tmp_path / "blocks.tif", predict, (H, W), tr, "EPSG:32612", block_rows=8)
    b = write_effect_raster(tmp_path / "full.tif", values, tr, "EPSG:32612", outside=outside)
    assert calls == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 37)]
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert da.count == 2 and da.crs == db.crs and da.transform == db.transform
        assert da.descriptions == ("cate", "outside_support")
        np.testing.assert_array_equal(da.read(), db.read())
    # effects only: one band
    c = write_effect_raster_blocks(tmp_path / "one.tif", lambda rows: values[rows], (H, W), tr, 32612, block_rows=50)
    with rasterio.open(c) as ds:
        assert ds.count == 1
        np.testing.assert_array_equal(ds.read(1), values.astype(np.float32))


def test_blockwise_raster_refuses_bad_blocks_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "effects.tif"
    write_effect_raster(path, np.ones((4, 3)), TR, "EPSG:32612")
    before = path.read_bytes()

    def wrong_width(rows):
        return np.zeros((rows.stop - rows.start, 2))

    with pytest.raises(InputError, match=r"\(rows, 3\)"):
        write_effect_raster_blocks(path, wrong_width, (4, 3), TR, "EPSG:32612", block_rows=2)

    def fails_late(rows):
        if rows.start >= 2:
            raise RuntimeError("out of memory in block 2")
        return np.zeros((rows.stop - rows.start, 3))

    with pytest.raises(RuntimeError, match="block 2"):
        write_effect_raster_blocks(path, fails_late, (4, 3), TR, "EPSG:32612", block_rows=2)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["effects.tif"]
    with pytest.raises(InputError, match="shape"):
        write_effect_raster_blocks(path, wrong_width, (0, 3), TR, "EPSG:32612")
    with pytest.raises(InputError, match="function"):
        write_effect_raster_blocks(path, np.zeros((4, 3)), (4, 3), TR, "EPSG:32612")
