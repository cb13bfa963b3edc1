"""Grouped cross-fitting folds: units sharing a cluster (or an image) never straddle a split."""

from __future__ import annotations

import numpy as np

from eocausal.errors import InputError


def grouped_folds(n: int, groups: np.ndarray | None, k: int, seed: int | None = 0,
                  stratify: np.ndarray | None = None) -> np.ndarray:
    """Assign each of ``n`` units to one of ``k`` folds, keeping groups whole.

    Groups are shuffled with ``seed`` and dealt greedily to the fold with the fewest units so
    far (largest groups first), which balances fold sizes when group sizes vary. With
    ``stratify`` (a binary treatment), groups are dealt separately by their majority arm so
    every fold holds treated and control units.

    Returns
    -------
    numpy.ndarray of int, shape (n,)
        Fold index of each unit.
    """
    if k < 2:
        raise InputError(f"folds: need at least 2 cross-fitting folds, got {k}")
    g = np.arange(n) if groups is None else np.asarray(groups)
    if len(g) != n:
        raise InputError(f"groups: {len(g)} labels for {n} units")
    codes, uniq_inv = np.unique(g, return_inverse=True)
    n_groups = len(codes)
    if n_groups < k:
        raise InputError(
            f"folds: {k} folds need at least {k} clusters, the data have {n_groups}; "
            "use fewer folds or a finer cluster column"
        )
    rng = np.random.default_rng(seed)
    sizes = np.bincount(uniq_inv, minlength=n_groups)
    if stratify is not None:
        share = np.bincount(uniq_inv, weights=np.asarray(stratify, float), minlength=n_groups) / sizes
        strata = (share >= 0.5).astype(int)
    else:
        strata = np.zeros(n_groups, int)
    fold_of_group = np.empty(n_groups, int)
    load = np.zeros(k)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        idx = idx[rng.permutation(len(idx))]
        if (sizes[idx] == 1).all():
            # singleton groups: the greedy deal below is a round robin; do it in one step
            start = int(np.lexsort((np.arange(k), load))[0])
            fold_of_group[idx] = (np.arange(len(idx)) + start) % k
            load += np.bincount(fold_of_group[idx], minlength=k)
            continue
        idx = idx[np.argsort(-sizes[idx], kind="stable")]
        sload = np.zeros(k)
        for gi in idx:
            # fewest units in this stratum, ties broken by total load then index
            f = int(np.lexsort((np.arange(k), load, sload))[0])
            fold_of_group[gi] = f
            sload[f] += sizes[gi]
            load[f] += sizes[gi]
    return fold_of_group[uniq_inv]
