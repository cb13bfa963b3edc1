"""Grouped cross-fitting folds: units sharing a cluster (or an image) never straddle a split.

The one fold assignment of eocausal: the estimators (propensity and outcome cross-fitting, CATE
folds, inner CV folds) and the encoders (:class:`~eocausal.encoders.PropensityCNN`) all call
:func:`grouped_folds`. It lives in the data layer because it needs nothing but the units.

Spatial cross-fitting: :func:`spatial_blocks` labels each unit by the square block of a given
size in km it falls in, so that ``grouped_folds(n, spatial_blocks(coords, 50), ...)`` never puts
neighbours in the same block on both sides of a split (Roberts et al. 2017); with clusters as
well, :func:`merge_groups` joins the two labelings so that both stay whole.
"""

from __future__ import annotations

import numpy as np

from eocausal._validation import check_clusters, check_matrix, check_positive_int, check_treatment
from eocausal.errors import InputError, NotEstimableError

__all__ = ["grouped_folds", "merge_groups", "spatial_blocks", "training_splits"]

#: Mean Earth radius in km (IUGG R1), as in :mod:`eocausal.estimators.robust_se`.
EARTH_RADIUS_KM = 6371.0088


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


def spatial_blocks(coords, block_km: float) -> np.ndarray:
    """Integer codes of the square blocks of ``block_km`` x ``block_km`` km that the units fall in.

    The (longitude, latitude) degrees are projected to km by a local equirectangular projection,
    x = R (lon - lon0) cos(lat0), y = R lat (radians, R = 6371.0088 km), with lat0 the median
    latitude and lon0 the circular mean longitude (so a study across the antimeridian is not
    cut there); the blocks are the cells of a grid of side ``block_km`` on (x, y), anchored at
    x = y = 0. Codes are 0..K-1 in the order of the sorted (column, row) cells.

    Accuracy. North-south distances are exact on the sphere; east-west distances at latitude
    lat are scaled by cos(lat0) / cos(lat) relative to the truth, a relative error of about
    |tan(lat0)| |lat - lat0| (radians) to first order: a study 5 degrees of latitude either side
    of lat0 = 30 degrees has blocks at most about 5% too wide or too narrow at its edges, and 1 km
    or less in a block of 20 km. For continental extents, split the units by region first.

    Parameters
    ----------
    coords : array (n, 2)
        Longitude and latitude in degrees (EPSG:4326).
    block_km : float
        Side of a block in km, at least the range of spatial correlation that the folds must
        respect (e.g. the cutoff of a Conley SE).

    Returns
    -------
    numpy.ndarray of int, shape (n,)
        Block code of each unit; pass it as ``clusters`` to :func:`grouped_folds`.

    Raises
    ------
    InputError
        Coordinates not of shape (n, 2), not finite or outside lon [-180, 180] / lat [-90, 90]
        (projected coordinates: reproject to EPSG:4326); ``block_km`` not a positive number.

    References
    ----------
    Roberts, D. R. et al. (2017). Cross-validation strategies for data with temporal, spatial,
    hierarchical, or phylogenetic structure. Ecography 40(8), 913-929.
    Snyder, J. P. (1987). Map projections: a working manual. USGS Professional Paper 1395
    (equirectangular projection, p. 90).
    """
    xy = check_matrix(coords, "coords")
    if xy.shape[1] != 2:
        raise InputError(f"coords: expected shape (n, 2), longitude and latitude in degrees, got {xy.shape}")
    lon, lat = xy[:, 0], xy[:, 1]
    if (np.abs(lon) > 180).any() or (np.abs(lat) > 90).any():
        raise InputError(f"coords: longitude must lie in [-180, 180] and latitude in [-90, 90] degrees, got lon "
                         f"range [{lon.min():.6g}, {lon.max():.6g}], lat range [{lat.min():.6g}, {lat.max():.6g}]; "
                         "projected coordinates? reproject the units to EPSG:4326 (units.to_crs(4326))")
    if isinstance(block_km, (bool, np.bool_)) or not isinstance(block_km, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(block_km) and block_km > 0):
        raise InputError(f"block_km={block_km!r}: must be a positive, finite length in km")
    if len(xy) == 0:
        return np.zeros(0, dtype=int)
    lam, phi = np.radians(lon), np.radians(lat)
    lam0 = np.arctan2(np.sin(lam).mean(), np.cos(lam).mean())
    dlam = (lam - lam0 + np.pi) % (2 * np.pi) - np.pi
    x = EARTH_RADIUS_KM * dlam * np.cos(np.median(phi))
    y = EARTH_RADIUS_KM * phi
    cells = np.column_stack([np.floor(x / block_km), np.floor(y / block_km)]).astype(np.int64)
    return np.unique(cells, axis=0, return_inverse=True)[1].reshape(-1).astype(int)


def merge_groups(a, b) -> np.ndarray:
    """Codes of the coarsest labeling that keeps both labelings ``a`` and ``b`` whole.

    Units are joined when they share a label of ``a`` or a label of ``b``, transitively: the
    codes are the connected components of the bipartite graph between the labels of ``a`` and
    of ``b`` with one edge per unit (:func:`scipy.sparse.csgraph.connected_components`). E.g.
    with ``a`` the spatial blocks and ``b`` the villages, a village spanning two blocks merges
    them, so folds on the result split neither.

    Parameters
    ----------
    a, b : array (n,)
        Labels of any hashable kind, no missing ones.

    Returns
    -------
    numpy.ndarray of int, shape (n,)
        Codes 0..K-1, numbered in order of first appearance.
    """
    a_codes = check_clusters(a, len(np.asarray(a)), "a")
    b_codes = check_clusters(b, len(a_codes), "b")
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_a = int(a_codes.max()) + 1 if len(a_codes) else 0
    n_b = int(b_codes.max()) + 1 if len(b_codes) else 0
    graph = coo_matrix((np.ones(len(a_codes)), (a_codes, n_a + b_codes)), shape=(n_a + n_b, n_a + n_b))
    _, component = connected_components(graph, directed=False)
    comp = component[a_codes]
    _, first, inverse = np.unique(comp, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank of each component by first appearance
    return order[inverse].astype(int)
