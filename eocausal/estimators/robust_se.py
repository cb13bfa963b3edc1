"""Standard errors under dependence: small-sample cluster inference, the wild cluster bootstrap, Conley spatial HAC.

Every estimator here is linearised by an influence function psi (n,) with
estimate - truth ~ mean(psi) (:mod:`eocausal.estimators.weighting`); this module turns psi into
honest intervals when units are dependent.

- Few clusters. The cluster-robust (CR0) variance sum_g Psi_g^2 / n^2, Psi_g = sum_{i in g} psi_i,
  is biased down with few clusters, and its t statistic is not normal. :func:`cr1_factor` scales
  the SE by sqrt(G / (G - 1)) and :func:`t_critical` takes the critical value from t with G - 1
  degrees of freedom (Cameron, Gelbach and Miller 2008; the default of Stata and fixest).
- Very few or unequal clusters. :func:`wild_cluster_bootstrap` is a score wild cluster bootstrap
  with the null imposed (Kline and Santos 2012), the analogue for linearised estimators of the
  restricted wild cluster (WCR) bootstrap-t of Cameron, Gelbach and Miller (2008) and MacKinnon
  and Webb (2017, 2018); its interval inverts the bootstrap test.
- Spatial correlation. :func:`conley_se` is Conley's (1999) spatial-HAC SE: pairs of units closer
  than a cutoff (great-circle distance in km) contribute psi_i psi_j with a kernel weight.

References
----------
Cameron, A. C., Gelbach, J. B. and Miller, D. L. (2008). Bootstrap-based improvements for
inference with clustered errors. Review of Economics and Statistics 90(3), 414-427.
Kline, P. and Santos, A. (2012). A score based approach to wild bootstrap inference. Journal of
Econometric Methods 1(1), 23-41.
MacKinnon, J. G. and Webb, M. D. (2017). Wild bootstrap inference for wildly different cluster
sizes. Journal of Applied Econometrics 32(2), 233-254.
MacKinnon, J. G. and Webb, M. D. (2018). The wild bootstrap for few (treated) clusters. The
Econometrics Journal 21(2), 114-135.
Webb, M. D. (2023). Reworking wild bootstrap-based inference for clustered errors. Canadian
Journal of Economics 56(3), 839-858 (working paper 2014).
Roodman, D., MacKinnon, J. G., Nielsen, M. O. and Webb, M. D. (2019). Fast and wild: bootstrap
inference in Stata using boottest. The Stata Journal 19(1), 4-60.
Conley, T. G. (1999). GMM estimation with cross sectional dependence. Journal of Econometrics
92(1), 1-45.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eocausal._validation import check_choice, check_clusters, check_matrix, check_positive_int, check_vector
from eocausal.errors import InputError, NotEstimableError

__all__ = ["CONLEY_KERNELS", "EARTH_RADIUS_KM", "WEBB_MAX_CLUSTERS", "WILD_WEIGHTS", "WildBootstrap", "conley_se",
           "cr1_factor", "t_critical", "wild_cluster_bootstrap"]

#: Mean Earth radius in km (IUGG R1), for great-circle distances.
EARTH_RADIUS_KM = 6371.0088
#: Kernels of :func:`conley_se`.
CONLEY_KERNELS = ("bartlett", "uniform")
#: Names accepted by ``weights=`` of :func:`wild_cluster_bootstrap`.
WILD_WEIGHTS = ("auto", "rademacher", "webb")
#: ``weights='auto'`` uses Webb's six-point weights with at most this many clusters, Rademacher
#: weights above. Rademacher weights give only 2**G distinct bootstrap samples (half of them
#: mirror images), too few for a smooth p-value when G is about 12 or less; Webb's six-point
#: distribution has 6**G and performs as well as Rademacher otherwise (Webb 2023; MacKinnon and
#: Webb 2018, section 4, recommend it "when G is smaller than about 12"; boottest's and
#: fwildclusterboot's advice is the same).
WEBB_MAX_CLUSTERS = 12

# Points of Webb's six-point distribution, each with probability 1/6 (mean 0, variance 1).
_WEBB_POINTS = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])
# Relative slack when comparing |t*| with |T|: the draws v = +-1 reproduce T exactly in exact
# arithmetic, and must count as ties (|t*| >= |T|) whatever rounding does.
_TIE_RTOL = 1e-9
# Units per chunk of the neighbour search in conley_se (memory is O(pairs of one chunk)).
_CONLEY_CHUNK = 2048


def _check_alpha(alpha) -> float:
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.floating, np.integer)) \
            or not 0 < float(alpha) < 1:
        raise InputError(f"alpha={alpha!r}: must be a number in (0, 1), e.g. 0.05 for 95% intervals")
    return float(alpha)


def _check_n_clusters(n_clusters) -> int | None:
    if n_clusters is None:
        return None
    return check_positive_int(n_clusters, "n_clusters", minimum=2)


def t_critical(alpha: float, n_clusters: int | None) -> float:
    """Two-sided critical value of a 1 - ``alpha`` interval.

    With ``n_clusters`` = G: the 1 - alpha/2 quantile of Student's t with G - 1 degrees of
    freedom, the reference distribution of a cluster-robust t statistic with few clusters
    (Cameron, Gelbach and Miller 2008, section II; Stata's and fixest's default). Without
    clusters: the standard normal quantile.

    Parameters
    ----------
    alpha : float
        In (0, 1); 0.05 gives the 97.5% quantile.
    n_clusters : int or None
        Number of clusters G (at least 2), or None for independent units.

    Returns
    -------
    float
    """
    from scipy import stats

    alpha = _check_alpha(alpha)
    g = _check_n_clusters(n_clusters)
    if g is None:
        return float(stats.norm.ppf(1 - alpha / 2))
    return float(stats.t.ppf(1 - alpha / 2, g - 1))


def cr1_factor(n_clusters: int | None) -> float:
    """sqrt(G / (G - 1)): the CR1 scaling of a CR0 cluster-robust SE (1.0 for None).

    CR1 multiplies the CR0 variance sum_g Psi_g^2 / n^2 by G / (G - 1), the small-sample
    correction of Stata and fixest (without their (n - 1) / (n - k) factor, which is 1 to first
    order for a mean of influence functions); Cameron, Gelbach and Miller (2008), section II.
    """
    g = _check_n_clusters(n_clusters)
    return 1.0 if g is None else float(np.sqrt(g / (g - 1)))


# ----------------------------------------------------------------------------- wild cluster bootstrap


@dataclass(frozen=True)
class WildBootstrap:
    """Result of :func:`wild_cluster_bootstrap`.

    Attributes
    ----------
    estimate : float
        The estimate as given.
    std_error : float
        CR1 SE, sqrt(G / (G - 1) * sum_g Psi_g^2) / n, the studentising SE of the bootstrap-t.
    p_value : float
        Symmetric bootstrap p-value of the null ``estimate == null``.
    ci_low, ci_high : float
        1 - alpha interval: the values t0 whose bootstrap p-value exceeds alpha. Infinite on a
        side where no value is rejected (possible with very few clusters: with G Rademacher
        clusters no p-value falls below 2 / 2**G).
    n_clusters : int
        G (the number of units when no clusters were given).
    weights : str
        'rademacher' or 'webb' (what ``'auto'`` chose).
    n_boot : int
        Bootstrap draws used (2**G when enumerated).
    enumerated : bool
        True when all 2**G Rademacher sign vectors were used: the p-value is then exact and
        does not depend on the seed.
    """

    estimate: float
    std_error: float
    p_value: float
    ci_low: float
    ci_high: float
    n_clusters: int
    weights: str
    n_boot: int
    enumerated: bool

    @property
    def ci(self) -> tuple[float, float]:
        """(ci_low, ci_high)."""
        return self.ci_low, self.ci_high


def _wild_weights(kind: str, n_clusters: int, n_boot: int, seed) -> tuple[np.ndarray, bool]:
    """(draws x clusters) matrix of wild weights, and whether it enumerates all sign vectors."""
    if kind == "rademacher" and 2**n_clusters <= n_boot:
        codes = np.arange(2**n_clusters)[:, None] >> np.arange(n_clusters)[None, :]
        return (codes & 1) * 2.0 - 1.0, True
    rng = np.random.default_rng(seed)
    if kind == "rademacher":
        return rng.integers(0, 2, size=(n_boot, n_clusters)) * 2.0 - 1.0, False
    return _WEBB_POINTS[rng.integers(0, 6, size=(n_boot, n_clusters))], False


def wild_cluster_bootstrap(psi, jacobian, estimate, clusters=None, *, n_boot: int = 999, weights: str = "auto",
                           alpha: float = 0.05, seed=0, null: float = 0.0) -> WildBootstrap:
    """Score wild cluster bootstrap-t with the null imposed: p-value and test-inversion interval.

    The estimator's estimating equation is linearised around the estimate as
    m_i(t) = psi_i - (t - estimate) b_i, where psi is the influence function (centred here) and
    b = ``jacobian`` / mean(``jacobian``) (so mean(b) = 1). For a hypothesised value t0, with
    cluster sums M_g = sum_{i in g} m_i(t0) = Psi_g + (estimate - t0) B_g:

    - observed statistic T(t0) = (estimate - t0) / se, se = sqrt(G/(G-1) sum_g Psi_g^2) / n (CR1);
    - draw b, with cluster weights v_g: tau*_b - t0 = sum_g v_g M_g / sum_i b_i, bootstrap scores
      U_g = v_g M_g - (tau*_b - t0) B_g, se*_b = sqrt(G/(G-1) sum_g U_g^2) / sum_i b_i and
      t*_b = (tau*_b - t0) / se*_b;
    - p(t0) = share of draws with |t*_b| >= |T(t0)| (symmetric test).

    This is Kline and Santos's (2012) score bootstrap with the null imposed on the scores; for
    OLS it is the restricted wild cluster bootstrap-t (WCR, "11" in Roodman et al. 2019) with the
    other coefficients held at their estimates instead of re-estimated. The interval is
    {t0 : p(t0) > alpha}, found by bisection on each side of the estimate, with ONE matrix of
    weights reused for every t0 so that the p-value function is coherent (Roodman et al. 2019,
    section 3.5).

    Parameters
    ----------
    psi : array (n,)
        Influence function, estimate - truth ~ mean(psi).
    jacobian : array (n,)
        b_i, minus the derivative of unit i's estimating equation in the effect (any positive
        scale; e.g. ``PointEstimate.jacobian``). Its sum must be positive.
    estimate : float
    clusters : array (n,), optional
        Cluster labels; None makes every unit its own cluster (the heteroskedastic wild bootstrap).
    n_boot : int
        Draws, at least 99. With Rademacher weights and 2**G <= n_boot, all 2**G sign vectors
        are enumerated instead (as wildboottest and fwildclusterboot do).
    weights : {'auto', 'rademacher', 'webb'}
        'rademacher' (v = +-1), 'webb' (six points +-sqrt(1/2), +-1, +-sqrt(3/2), each 1/6;
        Webb 2023) or 'auto': Webb with at most :data:`WEBB_MAX_CLUSTERS` clusters, else
        Rademacher.
    alpha : float
        1 - confidence level of the interval.
    seed : int, None or anything :func:`numpy.random.default_rng` accepts
        Seeds the draws (unused when enumerating).
    null : float
        Value of the effect under the null hypothesis of ``p_value``.

    Returns
    -------
    WildBootstrap

    Raises
    ------
    InputError
        Bad ``n_boot``, ``weights``, ``alpha``, ``estimate`` or ``null``; ``psi`` and ``jacobian``
        of different lengths or not finite; a jacobian whose sum is not positive; fewer than 2
        clusters.
    NotEstimableError
        The CR1 SE is 0 (every cluster sum of psi is 0), so no t statistic exists.
    """
    psi = check_vector(psi, "psi")
    n = len(psi)
    jac = check_vector(jacobian, "jacobian", n)
    n_boot = check_positive_int(n_boot, "n_boot", minimum=99)
    kind = check_choice(weights, "weights", WILD_WEIGHTS)
    alpha = _check_alpha(alpha)
    for name, value in (("estimate", estimate), ("null", null)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not np.isfinite(value):
            raise InputError(f"{name}={value!r}: expected a finite number")
    estimate, null = float(estimate), float(null)
    codes = np.arange(n) if clusters is None else check_clusters(clusters, n)
    n_clusters = int(codes.max()) + 1 if n else 0
    if n_clusters < 2:
        raise InputError(f"clusters: the wild bootstrap needs at least 2 clusters, got {n_clusters}; "
                         "give finer clusters (or none, for independent units)")
    if not jac.sum() > 0:
        raise InputError(f"jacobian: must have a positive sum (it is minus the derivative of the estimating "
                         f"equation in the effect), got sum {jac.sum():.4g}; pass the estimator's jacobian, "
                         "e.g. PointEstimate.jacobian")
    if kind == "auto":
        kind = "webb" if n_clusters <= WEBB_MAX_CLUSTERS else "rademacher"

    b = jac / jac.mean()
    psi = psi - psi.mean()
    Psi = np.bincount(codes, weights=psi, minlength=n_clusters)
    Bg = np.bincount(codes, weights=b, minlength=n_clusters)
    ssc = n_clusters / (n_clusters - 1)
    se = float(np.sqrt(ssc * np.sum(Psi**2)) / n)
    if not se > 0:
        raise NotEstimableError("psi: every cluster sum of the influence function is 0, so the cluster-robust SE "
                                "is 0 and the bootstrap-t is undefined; check the outcome varies")
    V, enumerated = _wild_weights(kind, n_clusters, n_boot, seed)
    sum_b = float(b.sum())  # = n after normalising; kept explicit to follow the formula
    VPsi, VB = V @ Psi, V @ Bg
    # U is formed directly (not expanded as a quadratic in t0, whose terms cancel catastrophically far
    # from the estimate), in chunks of draws so memory stays O(chunk x G) for unclustered data
    chunk = max(1, int(4_000_000 // n_clusters))

    def pvalue(t0: float) -> float:
        d = estimate - t0
        stat = abs(d / se)
        shift = (VPsi + d * VB) / sum_b  # tau*_b - t0 for every draw
        M = Psi + d * Bg
        ss = np.empty(len(shift))
        for s in range(0, len(shift), chunk):
            U = V[s:s + chunk] * M[None, :] - shift[s:s + chunk, None] * Bg[None, :]
            ss[s:s + chunk] = np.einsum("bg,bg->b", U, U)
        se_star = np.sqrt(ssc * ss) / sum_b
        with np.errstate(divide="ignore", invalid="ignore"):
            t_star = np.abs(shift / se_star)
        return float(np.mean(t_star >= stat * (1 - _TIE_RTOL)))

    def endpoint(direction: float) -> float:
        # bracket: inner accepted (p > alpha), outer rejected (p <= alpha), then bisect
        inner, step = estimate, t_critical(alpha, n_clusters) * se
        outer = estimate + direction * step
        while pvalue(outer) > alpha:
            inner, step = outer, 2 * step
            if step > 1e8 * se:
                return direction * np.inf
            outer = estimate + direction * step
        while abs(outer - inner) > 1e-6 * se:
            mid = 0.5 * (inner + outer)
            if pvalue(mid) > alpha:
                inner = mid
            else:
                outer = mid
        return 0.5 * (inner + outer)

    return WildBootstrap(estimate=estimate, std_error=se, p_value=pvalue(null), ci_low=endpoint(-1.0),
                         ci_high=endpoint(1.0), n_clusters=n_clusters, weights=kind, n_boot=int(V.shape[0]),
                         enumerated=enumerated)


# ----------------------------------------------------------------------------- Conley spatial HAC


def _check_coords(coords, n: int, name: str = "coords") -> np.ndarray:
    xy = check_matrix(coords, name, n)
    if xy.shape[1] != 2:
        raise InputError(f"{name}: expected shape ({n}, 2), longitude and latitude in degrees, got {xy.shape}")
    lon, lat = xy[:, 0], xy[:, 1]
    bad = (np.abs(lon) > 180) | (np.abs(lat) > 90)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(f"{name}: longitude must lie in [-180, 180] and latitude in [-90, 90] degrees, got "
                         f"lon range [{lon.min():.6g}, {lon.max():.6g}], lat range [{lat.min():.6g}, "
                         f"{lat.max():.6g}] (rows {rows[:8].tolist()}, {len(rows)} in all); projected "
                         "coordinates? reproject the units to EPSG:4326 (units.to_crs(4326)) and pass (lon, lat)")
    return xy


def _check_cutoff(cutoff_km) -> float:
    if isinstance(cutoff_km, (bool, np.bool_)) or not isinstance(cutoff_km, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(cutoff_km) and cutoff_km > 0):
        raise InputError(f"cutoff_km={cutoff_km!r}: must be a positive, finite distance in km (e.g. the range of "
                         "spatial correlation, from a variogram of the residuals)")
    return float(cutoff_km)


def _kernel_sum(scores: np.ndarray, coords: np.ndarray, cutoff_km: float, kernel: str) -> float:
    """sum_i sum_j K(d_ij / cutoff) s_i s_j over pairs within the cutoff (i = j included), O(pairs) memory per chunk.

    ``coords`` (n, 2) are validated (lon, lat) degrees; d_ij is the haversine distance in km.
    """
    from sklearn.neighbors import BallTree

    X = np.radians(coords[:, ::-1])  # BallTree's haversine metric takes (lat, lon) in radians
    tree = BallTree(X, metric="haversine")
    radius = cutoff_km / EARTH_RADIUS_KM
    total = 0.0
    for start in range(0, len(X), _CONLEY_CHUNK):
        stop = min(start + _CONLEY_CHUNK, len(X))
        ind, dist = tree.query_radius(X[start:stop], r=radius, return_distance=True)
        lengths = np.fromiter(map(len, ind), dtype=np.intp, count=stop - start)
        rows = np.repeat(np.arange(start, stop), lengths)
        cols = np.concatenate(ind).astype(np.intp, copy=False)
        if kernel == "uniform":
            k = 1.0
        else:
            k = np.clip(1.0 - np.concatenate(dist) * EARTH_RADIUS_KM / cutoff_km, 0.0, None)
        total += float(np.sum(k * scores[rows] * scores[cols]))
    return total


def conley_se(psi, coords, cutoff_km: float, *, kernel: str = "bartlett") -> float:
    """Conley (1999) spatial-HAC standard error of a linearised estimator.

    Var = (1/n^2) sum_i sum_j K(d_ij / cutoff) psi_i psi_j, with psi centred, d_ij the
    great-circle (haversine) distance in km on a sphere of radius :data:`EARTH_RADIUS_KM`, and

    - uniform: K = 1{d_ij <= cutoff};
    - bartlett: K = max(0, 1 - d_ij / cutoff) (Conley 1999, section 4).

    With a cutoff below the smallest distance between units it is the iid SE sqrt(sum psi^2) / n;
    with units in tight clusters farther apart than the cutoff, the uniform kernel gives the CR0
    cluster-robust SE. There is no small-sample scaling. Pairs come from a ball tree
    (:class:`sklearn.neighbors.BallTree`, haversine metric), chunked over units, so memory grows
    with the number of pairs within the cutoff, not with n^2.

    Parameters
    ----------
    psi : array (n,)
        Influence function, estimate - truth ~ mean(psi).
    coords : array (n, 2)
        Longitude and latitude in degrees (EPSG:4326), one row per unit (e.g. the centroids).
    cutoff_km : float
        Distance beyond which units are treated as uncorrelated, in km.
    kernel : {'bartlett', 'uniform'}

    Returns
    -------
    float

    Raises
    ------
    InputError
        Bad shapes or values (coordinates outside lon [-180, 180] / lat [-90, 90], i.e. not
        reprojected to EPSG:4326), a cutoff that is not positive, an unknown kernel.
    NotEstimableError
        The weighted double sum is negative: neither kernel is positive definite on the sphere,
        so this can happen with irregular layouts.
    """
    psi = check_vector(psi, "psi")
    n = len(psi)
    xy = _check_coords(coords, n)
    cutoff_km = _check_cutoff(cutoff_km)
    kernel = check_choice(kernel, "kernel", CONLEY_KERNELS)
    if n == 0:
        raise InputError("psi: no units")
    psi = psi - psi.mean()
    total = _kernel_sum(psi, xy, cutoff_km, kernel)
    if total < 0:
        other = "the uniform kernel" if kernel == "bartlett" else "the Bartlett kernel"
        raise NotEstimableError(
            f"conley_se: the {kernel}-weighted double sum of the influence function is negative ({total:.4g}) at "
            f"cutoff_km={cutoff_km:g}, so there is no spatial-HAC variance (neither kernel is positive definite in "
            f"2-D; Conley 1999, section 4); use {other} or another cutoff")
    return float(np.sqrt(total) / n)
