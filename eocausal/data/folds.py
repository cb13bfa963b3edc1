"""Grouped cross-fitting folds: units sharing a cluster (or an image) never straddle a split.

The one fold assignment of eocausal: the estimators (propensity and outcome cross-fitting, CATE
folds, inner CV folds) and the encoders (:class:`~eocausal.encoders.PropensityCNN`) all call
:func:`grouped_folds`. It lives in the data layer because it needs nothing but the units.
"""

from __future__ import annotations

import numpy as np

from eocausal._validation import check_clusters, check_positive_int, check_treatment
from eocausal.errors import InputError, NotEstimableError

__all__ = ["grouped_folds", "training_splits"]


def grouped_folds(n: int, clusters=None, folds: int = 5, seed=0, stratify=None) -> np.ndarray:
    """Assign each of ``n`` units to one of ``folds`` folds, keeping clusters whole.

    Clusters are shuffled with ``seed`` and dealt greedily to the fold with the fewest units so
    far (largest clusters first), which balances fold sizes when cluster sizes vary. With
    ``stratify`` (a binary treatment), clusters are dealt separately by their majority arm so
    every fold holds treated and control units.

    Parameters
    ----------
    n : int
        Number of units.
    clusters : array (n,), optional
        Cluster labels (any hashable values, no missing ones); None makes every unit its own
        cluster.
    folds : int
        Number of folds, at least 2 and at most the number of clusters.
    seed : int, None or anything :func:`numpy.random.default_rng` accepts
        Seeds the shuffle; None draws fresh entropy (not reproducible).
    stratify : array (n,) of 0/1, optional
        Binary treatment to deal clusters by majority arm.

    Returns
    -------
    numpy.ndarray of int, shape (n,)
        Fold index (0 .. folds - 1) of each unit.

    Raises
    ------
    InputError
        ``folds`` is not an integer >= 2, there are fewer clusters than folds, labels are missing
        or of the wrong length, or ``stratify`` is not 0/1.
    """
    n = check_positive_int(n, "n", minimum=1)
    k = check_positive_int(folds, "folds", minimum=2)
    codes = np.arange(n) if clusters is None else check_clusters(clusters, n)
    n_groups = int(codes.max()) + 1
    if n_groups < k:
        raise InputError(
            f"folds={k}: {k} folds need at least {k} clusters, the data have {n_groups}; "
            "use fewer folds or a finer cluster column"
        )
    rng = np.random.default_rng(seed)
    sizes = np.bincount(codes, minlength=n_groups)
    if stratify is not None:
        s = check_treatment(stratify, "stratify", n)
        share = np.bincount(codes, weights=s, minlength=n_groups) / sizes
        strata = (share >= 0.5).astype(int)
    else:
        strata = np.zeros(n_groups, int)
    fold_of_group = np.empty(n_groups, int)
    load = np.zeros(k)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        idx = idx[rng.permutation(len(idx))]
        if (sizes[idx] == 1).all():
            # singleton clusters: the greedy deal below is a round robin; do it in one step
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
    return fold_of_group[codes]


def training_splits(fold_ids, w, what: str = "folds"):
    """(fold label, held-out mask, training mask) of each fold, in sorted order of the labels.

    Raises :class:`~eocausal.errors.NotEstimableError` when the training folds of a fold hold only
    treated or only control units (``what`` names the model being fitted in the message).
    """
    fold_ids, w = np.asarray(fold_ids), np.asarray(w)
    for f in np.unique(fold_ids):
        test = fold_ids == f
        train = ~test
        wt = w[train]
        if wt.min() == wt.max():
            raise NotEstimableError(
                f"{what}: the training folds for fold {f} hold only {'treated' if wt[0] else 'control'} units; "
                "use fewer folds or check the treatment and cluster columns")
        yield f, test, train
