"""Spatial-block folds (eocausal.data.folds.spatial_blocks, merge_groups)."""

from __future__ import annotations

import numpy as np
import pytest

from eocausal.data.folds import EARTH_RADIUS_KM, grouped_folds, merge_groups, spatial_blocks
from eocausal.errors import InputError


def _haversine_km(coords):
    lon, lat = np.radians(coords[:, 0]), np.radians(coords[:, 1])
    a = (np.sin((lat[:, None] - lat[None, :]) / 2) ** 2
         + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin((lon[:, None] - lon[None, :]) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def test_hand_built_layout_gives_the_expected_blocks():
    # near the equator, symmetric longitudes (circular mean 0): x = R lon cos(0.1 deg), y = R lat,
    # 1 degree = 111.195 km; 100 km blocks
    coords = np.array([
        [-0.5, 0.1],   # x = -55.6, y = 11.1  -> cell (-1, 0)
        [-0.3, 0.4],   # x = -33.4, y = 44.5  -> cell (-1, 0)
        [0.3, 0.4],    # x =  33.4            -> cell (0, 0)
        [0.5, 0.1],    # x =  55.6            -> cell (0, 0)
        [1.0, 0.1],    # x = 111.2            -> cell (1, 0)
        [-1.0, -0.1],  # x = -111.2, y = -11.1 -> cell (-2, -1)
    ])
    # codes number the cells in sorted (column, row) order: (-2,-1), (-1,0), (0,0), (1,0)
    np.testing.assert_array_equal(spatial_blocks(coords, 100.0), [1, 1, 2, 2, 3, 0])
    # 40 km blocks split both pairs: cells (-2, 0), (-1, 1), (0, 1), (1, 0), (2, 0), (-3, -1)
    np.testing.assert_array_equal(spatial_blocks(coords, 40.0), [1, 2, 3, 4, 5, 0])
    # a study across the antimeridian is not cut there: 179.99 E and 179.99 W are 2.2 km apart
    dateline = np.array([[179.99, -17.0], [-179.99, -17.0], [179.5, -17.0]])
    codes = spatial_blocks(dateline, 20.0)
    assert codes[0] == codes[1] != codes[2]


def test_blocks_are_compact_and_about_block_km_wide():
    rng = np.random.default_rng(0)
    n = 4000
    coords = np.column_stack([rng.uniform(10, 16, n), rng.uniform(47, 53, n)])  # lat0 ~ 50
    block = 50.0
    codes = spatial_blocks(coords, block)
    D = _haversine_km(coords)
    diam = max(D[np.ix_(codes == c, codes == c)].max() for c in np.unique(codes))
    # a square of side 50 km has diagonal 70.7 km; east-west scale error |tan(50)| * 3 deg = 6%
    assert 0.9 * block * np.sqrt(2) < diam < 1.07 * block * np.sqrt(2)
    # about (extent / block)^2 blocks: 6 deg of longitude at 50 N = 429 km, 6 of latitude = 667 km
    expected = (6 * 111.195 * np.cos(np.radians(50)) / block) * (6 * 111.195 / block)
    assert 0.9 * expected < len(np.unique(codes)) < 1.4 * expected  # partial blocks at the edges


def test_grouped_folds_on_blocks_never_split_a_block():
    rng = np.random.default_rng(1)
    n = 1500
    coords = np.column_stack([rng.uniform(30, 34, n), rng.uniform(-2, 2, n)])
    blocks = spatial_blocks(coords, 40.0)
    folds = grouped_folds(n, blocks, 5, seed=3)
    for b in np.unique(blocks):
        assert len(np.unique(folds[blocks == b])) == 1
    # neighbours closer than the block size straddle folds only across a block edge, so most
    # pairs within 5 km share a fold
    D = _haversine_km(coords)
    close = (D < 5) & ~np.eye(n, dtype=bool)
    same_fold = folds[:, None] == folds[None, :]
    assert same_fold[close].mean() > 0.85
    assert np.bincount(folds).min() > 0.1 * n


def test_merge_groups_keeps_both_labelings_whole():
    # hand example: a = blocks, b = villages; village 'v2' spans blocks 1 and 2, 'v4' blocks 3 and 4
    a = np.array([0, 0, 1, 2, 2, 3, 4, 5])
    b = np.array(["v1", "v1", "v2", "v2", "v3", "v4", "v4", "v5"], dtype=object)
    np.testing.assert_array_equal(merge_groups(a, b), [0, 0, 1, 1, 1, 2, 2, 3])
    # 100 villages of 5 units in 25 blocks; every tenth village has a unit in the next block
    village = np.repeat(np.arange(100), 5)
    block = village // 4
    spans = (village % 10 == 3) & (np.arange(500) % 5 == 4)
    block[spans] = (block[spans] + 1) % 25
    order = np.random.default_rng(2).permutation(500)
    a, b = block[order], village[order]
    m = merge_groups(a, b)
    assert len(np.unique(m)) == 15  # 25 blocks, 10 links between distinct pairs of neighbours
    for labels in (a, b):
        for g in np.unique(labels):
            assert len(np.unique(m[labels == g])) == 1
    # coarsest such labeling: each merged group is connected, so it is no union of smaller whole groups;
    # here, its count equals the number of connected components counted by union-find
    parent = list(range(125))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in zip(a, b + 25):
        parent[find(i)] = find(j)
    assert len(np.unique(m)) == len({find(i) for i in np.unique(a)})
    assert m.min() == 0 and set(np.unique(m)) == set(range(m.max() + 1))
    folds = grouped_folds(500, m, 3, seed=0)
    for labels in (a, b):
        for g in np.unique(labels):
            assert len(np.unique(folds[labels == g])) == 1


def test_spatial_blocks_and_merge_refuse_bad_input():
    ll = np.array([[30.0, 1.0], [30.1, 1.1]])
    with pytest.raises(InputError, match="reproject the units to EPSG:4326"):
        spatial_blocks(ll * 1e4, 10.0)
    with pytest.raises(InputError, match=r"coords: expected shape \(n, 2\)"):
        spatial_blocks(np.c_[ll, ll], 10.0)
    with pytest.raises(InputError, match="coords: NaN or infinite"):
        spatial_blocks(np.array([[30.0, np.nan]]), 10.0)
    for bad in (0, -1.0, float("nan"), "5"):
        with pytest.raises(InputError, match="block_km=.*must be a positive"):
            spatial_blocks(ll, bad)
    with pytest.raises(InputError, match=r"b: expected shape \(3,\)"):
        merge_groups([0, 1, 2], [0, 1])
    with pytest.raises(InputError, match="a: missing cluster labels"):
        merge_groups(np.array([0, np.nan]), [0, 1])
