"""The one fold assignment (eocausal.data.folds.grouped_folds): clusters whole, sizes balanced."""

from __future__ import annotations

import numpy as np
import pytest

from eocausal.data.folds import grouped_folds
from eocausal.errors import InputError


def test_grouped_folds_keep_clusters_whole_and_balance():
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 97, 1000)
    f = grouped_folds(1000, clusters, 5, seed=1)
    for g in np.unique(clusters):
        assert len(np.unique(f[clusters == g])) == 1
    sizes = np.bincount(f)
    assert len(sizes) == 5 and sizes.max() - sizes.min() <= np.bincount(clusters).max()
    # integer fold labels of one seed: reproducible exactly; another seed deals them differently
    assert np.array_equal(f, grouped_folds(1000, clusters, 5, seed=1))
    assert not np.array_equal(f, grouped_folds(1000, clusters, 5, seed=2))


def test_labels_of_any_kind_give_the_same_folds():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 40, 300)
    names = np.array([f"village-{c:03d}" for c in codes], dtype=object)  # sorts as the codes do
    w = (rng.uniform(size=300) < 0.4).astype(float)
    np.testing.assert_array_equal(grouped_folds(300, names, 4, seed=0, stratify=w),
                                  grouped_folds(300, codes, folds=4, seed=0, stratify=w))


def test_stratify_puts_both_arms_in_every_fold():
    w = np.r_[np.ones(12), np.zeros(88)]
    f = grouped_folds(100, None, 5, seed=0, stratify=w)
    for k in range(5):
        assert 0 < w[f == k].sum() < (f == k).sum()


def test_singleton_round_robin_equals_the_greedy_deal():
    # every cluster of size 1: dealt round robin, so fold sizes differ by at most one
    f = grouped_folds(103, None, 5, seed=4)
    assert np.ptp(np.bincount(f)) <= 1


def test_errors_name_the_argument_and_the_fix():
    with pytest.raises(InputError, match="at least 5 clusters"):
        grouped_folds(10, np.r_[np.zeros(5), np.ones(5)], 5)
    with pytest.raises(InputError, match="folds=1: must be at least 2"):
        grouped_folds(10, None, 1)
    for bad in (2.5, "5", True):
        with pytest.raises(InputError, match="folds=.*expected an integer"):
            grouped_folds(10, None, bad)
    with pytest.raises(InputError, match=r"clusters: missing cluster labels in rows \[1, 4\]"):
        grouped_folds(6, np.array([0, np.nan, 1, 2, np.nan, 3]), 2)
    with pytest.raises(InputError, match=r"clusters: missing cluster labels in rows \[2\]"):
        grouped_folds(4, np.array(["a", "b", None, "c"], dtype=object), 2)
    with pytest.raises(InputError, match=r"clusters: expected shape \(10,\)"):
        grouped_folds(10, np.arange(9), 2)
    with pytest.raises(InputError, match="stratify: must hold only 0 and 1"):
        grouped_folds(10, None, 2, stratify=np.arange(10))
