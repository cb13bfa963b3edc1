"""Standard errors under dependence (eocausal.estimators.robust_se).

Wild cluster bootstrap. The reference is the wildboottest package (0.3.2; the engine behind
pyfixest's ``Feols.wildboottest``), restricted wild cluster bootstrap-t ("WCR", type '11'),
Rademacher weights. For the difference in means (DIM) the influence function
psi_i = (W_i - p) u_i / (p (1 - p)) is the OLS score of the coefficient on W in y ~ 1 + W, and
b_i = (W_i - p)^2 / (p (1 - p)) its jacobian. The score bootstrap holds the intercept at its
estimate; OLS re-estimates it in every draw, which adds -c_b sum_{i in g} (W_i - p) to cluster g's
bootstrap score. So:

- regressing y - ybar on the centred W - p alone (no intercept to re-estimate), wildboottest's
  WCR is the score bootstrap exactly, in any design;
- with y ~ 1 + W, the two agree exactly when every cluster has the same treated share p.

In both cases the only difference is a tie convention: the draws v = +1 and v = -1 (all
clusters alike) reproduce the observed statistic exactly; eocausal counts them (|t*| >= |T|),
wildboottest counts only |t*| > |T| (rounding decides), so enumerated p-values over 2**10 sign
vectors may differ by 2/1024. Measured with G = 10 (enumerated): centred regression, 5 data sets
x 6 null values, max |difference| 0.00195 = 2/1024; y ~ 1 + W with equal shares, 30 data sets,
max 0.00195. With y ~ 1 + W and cluster treated shares drawn from U(0.2, 0.8) the intercept term
matters: differences up to 0.076 (mean 0.017) over 5 data sets x 6 null values, so that
comparison is only reported here, not asserted. On the same kinds of data an unstudentised
bootstrap differs from wildboottest by up to 0.04-0.08 and unrestricted scores by up to
0.07-0.13; the tests check that they would fail the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from eocausal.errors import InputError, NotEstimableError
from eocausal.estimators.robust_se import (
    EARTH_RADIUS_KM,
    WEBB_MAX_CLUSTERS,
    conley_se,
    cr1_factor,
    t_critical,
    wild_cluster_bootstrap,
)

TIE = 2 / 1024  # the v = +-1 draws, counted by eocausal, not by wildboottest (module docstring)


# ----------------------------------------------------------------------------- helpers


def _clustered(G, seed, balanced=False, lo=0.2, hi=0.8):
    """Clusters of 6-38 units, cluster effects, heteroskedastic noise; treated share per cluster in (lo, hi)."""
    rng = np.random.default_rng(seed)
    sizes = 2 * rng.integers(3, 20, G)
    cl = np.repeat(np.arange(G), sizes)
    if balanced:
        w = np.concatenate([rng.permutation(np.r_[np.ones(s // 2), np.zeros(s // 2)]) for s in sizes])
    else:
        w = (rng.uniform(size=len(cl)) < rng.uniform(lo, hi, G)[cl]).astype(float)
    y = 0.2 * w + rng.normal(size=G)[cl] * (1 + w) + rng.normal(size=len(cl)) * (1 + cl % 3)
    return y, w, cl


def _dim(y, w):
    p = w.mean()
    y1, y0 = y[w == 1].mean(), y[w == 0].mean()
    psi = w * (y - y1) / p - (1 - w) * (y - y0) / (1 - p)
    return y1 - y0, psi, (w - p) ** 2 / (p * (1 - p))


def _wildboottest_p(X, y, cl, n_boot, seed=0):
    """wildboottest's WCR '11' p-value for the last column of X (null 0), Rademacher weights."""
    from wildboottest.wildboottest import WildboottestCL

    bt = WildboottestCL(X=X, Y=y, cluster=cl, R=np.eye(X.shape[1])[-1], B=n_boot, seed=seed, parallel=False)
    bt.get_scores(bootstrap_type="11", impose_null=True)
    bt.get_weights(weights_type="rademacher")
    bt.get_numer()
    bt.get_denom()
    bt.get_tboot()
    bt.get_vcov()
    bt.get_tstat()
    bt.get_pvalue()
    return float(bt.pvalue), int(bt.B)


def _wrong_p(psi, b, est, cl, t0, kind):
    """Enumerated p-values of two wrong bootstraps, to show the tolerance would catch them."""
    G, n = cl.max() + 1, len(psi)
    V = ((np.arange(2**G)[:, None] >> np.arange(G)) & 1) * 2.0 - 1.0
    Psi, Bg = np.bincount(cl, psi), np.bincount(cl, b)
    se = np.sqrt(G / (G - 1) * np.sum(Psi**2)) / n
    d = est - t0
    if kind == "unstudentised":
        return np.mean(np.abs(V @ (Psi + d * Bg) / n) >= abs(d) * (1 - 1e-9))
    shift = V @ Psi / n  # unrestricted: scores at the estimate, not at t0
    U = V * Psi - shift[:, None] * Bg
    t_star = shift / (np.sqrt(G / (G - 1) * (U**2).sum(1)) / n)
    return np.mean(np.abs(t_star) >= abs(d / se) * (1 - 1e-9))


# ----------------------------------------------------------------------------- critical values


def test_t_critical_and_cr1_factor():
    assert t_critical(0.05, None) == pytest.approx(1.959964, abs=1e-6)
    assert t_critical(0.05, 10) == pytest.approx(2.262157, abs=1e-6)  # t(9), 97.5% (tables)
    assert t_critical(0.10, 31) == pytest.approx(stats.t.ppf(0.95, 30), rel=1e-12)
    assert cr1_factor(None) == 1.0
    assert cr1_factor(5) == pytest.approx(np.sqrt(5 / 4), rel=1e-15)
    with pytest.raises(InputError, match="n_clusters=1: must be at least 2"):
        t_critical(0.05, 1)
    with pytest.raises(InputError, match="alpha=1.5: must be a number in"):
        t_critical(1.5, 10)
    with pytest.raises(InputError, match="n_clusters=2.5"):
        cr1_factor(2.5)


# ----------------------------------------------------------------------------- wild bootstrap vs wildboottest


@pytest.mark.parametrize("seed", [100, 103])
def test_wild_equals_wildboottest_on_the_centred_regression_any_design(seed):
    """y - ybar on W - p (no intercept): the OLS WCR bootstrap is the score bootstrap; G = 10, enumerated."""
    y, w, cl = _clustered(10, seed)  # treated shares U(0.2, 0.8): the intercept would matter
    est, psi, b = _dim(y, w)
    p_ = w.mean()
    base = wild_cluster_bootstrap(psi, b, est, cl, n_boot=9999, weights="rademacher")
    assert base.enumerated and base.n_boot == 1024 and base.weights == "rademacher"
    worst_wrong = 0.0
    for k in (-2.5, 0.0, 0.7, 1.8):
        t0 = est + k * base.std_error
        ours = wild_cluster_bootstrap(psi, b, est, cl, n_boot=9999, weights="rademacher", null=t0).p_value
        yt = y - t0 * w  # testing beta_W = t0 is testing 0 on y - t0 W
        ref, n_ref = _wildboottest_p((w - p_)[:, None], yt - yt.mean(), cl, 9999)
        assert n_ref == 1024
        assert abs(ours - ref) <= TIE + 1e-12, (k, ours, ref)
        for kind in ("unstudentised", "unrestricted"):
            worst_wrong = max(worst_wrong, abs(_wrong_p(psi, b, est, cl, t0, kind) - ref))
    assert worst_wrong > 2 * TIE  # a wrong statistic would fail the tolerance above


def test_wild_equals_wildboottest_ols_with_intercept_when_shares_are_equal():
    """y ~ 1 + W with every cluster half treated: re-estimating the intercept changes nothing."""
    worst_wrong = 0.0
    for seed in (200, 201):
        y, w, cl = _clustered(10, seed, balanced=True)
        est, psi, b = _dim(y, w)
        r = wild_cluster_bootstrap(psi, b, est, cl, n_boot=2000, weights="rademacher")
        ref, _ = _wildboottest_p(np.column_stack([np.ones_like(w), w]), y, cl, 2000)
        assert r.enumerated and abs(r.p_value - ref) <= TIE + 1e-12, (seed, r.p_value, ref)
        for kind in ("unstudentised", "unrestricted"):
            worst_wrong = max(worst_wrong, abs(_wrong_p(psi, b, est, cl, 0.0, kind) - ref))
    assert worst_wrong > 2 * TIE


def test_wild_with_sampled_draws_agrees_with_wildboottest_within_monte_carlo_error():
    """G = 30: 2**30 sign vectors cannot be enumerated; each package draws its own 9999 (independent)."""
    n_boot = 9999
    for seed in (300, 301):
        y, w, cl = _clustered(30, seed)
        est, psi, b = _dim(y, w)
        p_ = w.mean()
        r = wild_cluster_bootstrap(psi, b, est, cl, n_boot=n_boot, weights="rademacher", seed=seed)
        assert not r.enumerated and r.n_boot == n_boot
        ref, _ = _wildboottest_p((w - p_)[:, None], y - y.mean(), cl, n_boot, seed=seed)
        # two independent estimates of one p-value: SD of the difference sqrt(2 p (1 - p) / B) (<= 0.0071)
        mc_sd = np.sqrt(2 * max(ref * (1 - ref), 0.01) / n_boot)
        assert abs(r.p_value - ref) <= 4 * mc_sd + TIE, (seed, r.p_value, ref)


# ----------------------------------------------------------------------------- coverage with few, unequal clusters


def test_wild_interval_covers_where_normal_cr0_undercovers():
    """10 clusters of 200 ... 5 units, treatment by unit, cluster-level effect heterogeneity.

    With this seed: CR0 with normal quantiles covers 0.714 (mean SE / SD of estimates 0.60), the
    wild interval (Webb weights, 399 draws) 0.966; 0.953-0.963 with four other seeds (400
    replications each). Band: 0.95 +- 3 MC SE (sqrt(0.95 * 0.05 / 500) = 0.0097). With the
    treatment assigned by cluster instead (5 of the 10 treated), the wild interval covered only
    0.905 (1000 replications): few treated clusters of unequal size, MacKinnon and Webb (2017).
    """
    sizes = np.array([200, 100, 50, 30, 20, 10, 10, 5, 5, 5])
    G, reps, tau = len(sizes), 500, 1.0
    cl = np.repeat(np.arange(G), sizes)
    n = len(cl)
    rng = np.random.default_rng(7)
    cover_normal = cover_wild = 0
    for r in range(reps):
        w = (rng.uniform(size=n) < 0.5).astype(float)
        y = rng.normal(size=G)[cl] + (tau + rng.normal(size=G)[cl]) * w + rng.normal(size=n)
        est, psi, b = _dim(y, w)
        se0 = np.sqrt(np.sum(np.bincount(cl, psi) ** 2)) / n
        cover_normal += abs(est - tau) <= 1.959964 * se0
        wb = wild_cluster_bootstrap(psi, b, est, cl, n_boot=399, seed=r)
        cover_wild += wb.ci_low <= tau <= wb.ci_high
    assert wb.weights == "webb"  # 'auto' with G = 10 <= WEBB_MAX_CLUSTERS
    mc_se = np.sqrt(0.95 * 0.05 / reps)
    assert cover_normal / reps < 0.85
    assert abs(cover_wild / reps - 0.95) <= 3 * mc_se, cover_wild / reps


# ----------------------------------------------------------------------------- properties


def test_enumeration_is_deterministic_and_the_interval_is_coherent():
    y, w, cl = _clustered(9, 5)
    est, psi, b = _dim(y, w)
    one = wild_cluster_bootstrap(psi, b, est, cl, n_boot=999, weights="rademacher", seed=1)
    two = wild_cluster_bootstrap(psi, b, est, cl, n_boot=999, weights="rademacher", seed=None)
    assert one.enumerated and one.n_boot == 512
    assert one == two  # enumeration: every field seed-free
    assert one.ci_low < est < one.ci_high
    # p(t0) just inside each end exceeds alpha, just outside it does not; it steps by 2 / 512 there
    eps = 1e-4 * one.std_error
    for end, inward in ((one.ci_low, 1), (one.ci_high, -1)):
        p_in = wild_cluster_bootstrap(psi, b, est, cl, n_boot=999, weights="rademacher", null=end + inward * eps)
        p_out = wild_cluster_bootstrap(psi, b, est, cl, n_boot=999, weights="rademacher", null=end - inward * eps)
        assert p_in.p_value > 0.05 >= p_out.p_value
        assert p_in.p_value - 0.05 <= 4 / 512
    # sampled draws (Webb): one seed reproduces itself, another differs
    a = wild_cluster_bootstrap(psi, b, est, cl, seed=3)
    assert a.weights == "webb" and not a.enumerated and a.n_boot == 999
    assert a == wild_cluster_bootstrap(psi, b, est, cl, seed=3)
    assert a.ci != wild_cluster_bootstrap(psi, b, est, cl, seed=4).ci


def test_std_error_is_cr1_and_auto_switches_weights_above_webb_max_clusters():
    y, w, cl = _clustered(WEBB_MAX_CLUSTERS + 1, 9)
    est, psi, b = _dim(y, w)
    r = wild_cluster_bootstrap(psi, b, est, cl)
    G, n = WEBB_MAX_CLUSTERS + 1, len(psi)
    assert r.weights == "rademacher" and r.n_clusters == G
    assert r.std_error == pytest.approx(np.sqrt(G / (G - 1) * np.sum(np.bincount(cl, psi) ** 2)) / n, rel=1e-12)
    # the jacobian's scale does not matter (normalised to mean 1); without clusters each unit is one
    assert wild_cluster_bootstrap(psi, 3.0 * b, est, cl) == r
    hc = wild_cluster_bootstrap(psi, b, est, None, n_boot=199)
    assert hc.n_clusters == n and hc.weights == "rademacher" and hc.n_boot == 199


def test_very_few_clusters_give_an_unbounded_interval():
    # 4 clusters, Rademacher: the smallest attainable p-value is 2/16 > 0.05, so nothing is rejected
    y, w, cl = _clustered(4, 11)
    est, psi, b = _dim(y, w)
    r = wild_cluster_bootstrap(psi, b, est, cl, weights="rademacher")
    assert r.enumerated and r.n_boot == 16
    assert r.ci == (-np.inf, np.inf)


def test_wild_bootstrap_refuses_bad_input_before_work():
    y, w, cl = _clustered(10, 1)
    est, psi, b = _dim(y, w)
    with pytest.raises(InputError, match="n_boot=50: must be at least 99"):
        wild_cluster_bootstrap(psi, b, est, cl, n_boot=50)
    with pytest.raises(InputError, match="n_boot=999.0: expected an integer"):
        wild_cluster_bootstrap(psi, b, est, cl, n_boot=999.0)
    with pytest.raises(InputError, match=r"weights='mammen': use one of \['auto', 'rademacher', 'webb'\]"):
        wild_cluster_bootstrap(psi, b, est, cl, weights="mammen")
    with pytest.raises(InputError, match="alpha=0: must be a number in"):
        wild_cluster_bootstrap(psi, b, est, cl, alpha=0)
    with pytest.raises(InputError, match=rf"jacobian: expected shape \({len(psi)},\)"):
        wild_cluster_bootstrap(psi, b[:-1], est, cl)
    with pytest.raises(InputError, match="psi: NaN or infinite"):
        wild_cluster_bootstrap(np.r_[np.nan, psi[1:]], b, est, cl)
    with pytest.raises(InputError, match="jacobian: must have a positive sum"):
        wild_cluster_bootstrap(psi, -b, est, cl)
    with pytest.raises(InputError, match="at least 2 clusters, got 1"):
        wild_cluster_bootstrap(psi, b, est, np.zeros(len(psi)))
    with pytest.raises(InputError, match="null=nan: expected a finite number"):
        wild_cluster_bootstrap(psi, b, est, cl, null=float("nan"))
    with pytest.raises(NotEstimableError, match="cluster-robust SE is 0"):
        wild_cluster_bootstrap(np.zeros(len(psi)), b, est, cl)


# ----------------------------------------------------------------------------- Conley


def _haversine_km(coords):
    lon, lat = np.radians(coords[:, 0]), np.radians(coords[:, 1])
    a = (np.sin((lat[:, None] - lat[None, :]) / 2) ** 2
         + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin((lon[:, None] - lon[None, :]) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _conley_direct(psi, coords, cutoff, kernel):
    """O(n^2) double sum over every pair (Conley 1999), the definition."""
    psi = psi - psi.mean()
    total = 0.0
    D = _haversine_km(coords)
    for i in range(len(psi)):
        for j in range(len(psi)):
            d = D[i, j]
            k = float(d <= cutoff) if kernel == "uniform" else max(0.0, 1 - d / cutoff)
            total += k * psi[i] * psi[j]
    return np.sqrt(total) / len(psi)


@pytest.mark.parametrize("kernel", ["uniform", "bartlett"])
def test_conley_equals_the_direct_double_sum(kernel, monkeypatch):
    rng = np.random.default_rng(0)
    n = 300
    coords = np.column_stack([rng.uniform(30, 33, n), rng.uniform(-1.5, 1.5, n)])  # ~330 km square
    psi = rng.normal(size=n) + np.sin(coords[:, 0] * 3)  # spatially smooth part: positive correlation
    want = _conley_direct(psi, coords, 80.0, kernel)
    assert conley_se(psi, coords, 80.0, kernel=kernel) == pytest.approx(want, rel=1e-9)
    # chunking of the neighbour search does not change the sum
    import eocausal.estimators.robust_se as rse

    monkeypatch.setattr(rse, "_CONLEY_CHUNK", 37)
    assert conley_se(psi, coords, 80.0, kernel=kernel) == pytest.approx(want, rel=1e-9)
    # and it is not the iid SE: pairs matter here
    assert abs(want / (np.sqrt(np.sum((psi - psi.mean()) ** 2)) / n) - 1) > 0.2


def _separated_clusters(seed=1, G=12):
    """G tight clusters (radius < 2 km) at least ~220 km apart; DIM data with cluster effects."""
    rng = np.random.default_rng(seed)
    centres = np.column_stack([20 + 2 * np.arange(G) % 8, -10 + 2 * (np.arange(G) // 4)])
    sizes = rng.integers(8, 30, G)
    cl = np.repeat(np.arange(G), sizes)
    coords = centres[cl] + rng.uniform(-0.01, 0.01, (len(cl), 2))
    w = (rng.uniform(size=len(cl)) < 0.4).astype(float)
    y = 1.0 * w + rng.normal(size=G)[cl] + 0.8 * rng.normal(size=G)[cl] * w + rng.normal(size=len(cl))
    return y, w, cl, coords


def test_conley_uniform_is_the_cluster_se_and_tiny_cutoff_the_iid_se():
    y, w, cl, coords = _separated_clusters()
    D = _haversine_km(coords)
    same = cl[:, None] == cl[None, :]
    assert D[same].max() < 5 and D[~same].min() > 150  # the layout the test relies on
    _, psi, _ = _dim(y, w)
    n, c = len(psi), psi - psi.mean()
    cr0 = np.sqrt(np.sum(np.bincount(cl, c) ** 2)) / n
    assert conley_se(psi, coords, 50.0, kernel="uniform") == pytest.approx(cr0, rel=1e-10)
    tiny = 0.5 * D[~np.eye(n, dtype=bool)].min()
    assert conley_se(psi, coords, tiny, kernel="bartlett") == pytest.approx(np.sqrt(np.sum(c**2)) / n, rel=1e-10)
    assert conley_se(psi, coords, tiny, kernel="uniform") == pytest.approx(np.sqrt(np.sum(c**2)) / n, rel=1e-10)


def test_conley_agrees_with_statsmodels_cluster_robust_ols():
    """Peer check: DIM = OLS of y on (1, w); statsmodels' CR0 cluster SE (no correction) of w."""
    y, w, cl, coords = _separated_clusters(seed=4)
    est, psi, _ = _dim(y, w)
    ols = sm.OLS(y, sm.add_constant(w)).fit(cov_type="cluster", cov_kwds={"groups": cl, "use_correction": False})
    assert ols.params[1] == pytest.approx(est, rel=1e-10)
    assert conley_se(psi, coords, 100.0, kernel="uniform") == pytest.approx(ols.bse[1], rel=1e-8)


def test_conley_refuses_bad_input_and_a_negative_double_sum():
    rng = np.random.default_rng(2)
    psi = rng.normal(size=5)
    ll = np.column_stack([rng.uniform(0, 1, 5), rng.uniform(0, 1, 5)])
    with pytest.raises(InputError, match="reproject the units to EPSG:4326"):
        conley_se(psi, ll * 1e5, 10.0)  # projected metres
    with pytest.raises(InputError, match=r"coords: expected shape \(5, 2\)"):
        conley_se(psi, np.c_[ll, ll[:, :1]], 10.0)
    for bad in (0, -3.0, float("inf"), "10"):
        with pytest.raises(InputError, match="cutoff_km=.*must be a positive"):
            conley_se(psi, ll, bad)
    with pytest.raises(InputError, match=r"kernel='gaussian': use one of \['bartlett', 'uniform'\]"):
        conley_se(psi, ll, 10.0, kernel="gaussian")
    # a 7 x 7 grid, 10 km apart, cutoff 15 km: the Bartlett kernel matrix has a negative direction
    # (smallest eigenvalue of the centred kernel matrix -0.037); psi along it has a negative sum
    g = np.arange(7) * 10 / (np.pi / 180 * EARTH_RADIUS_KM)
    grid = np.array([(a, b) for a in g for b in g])
    K = np.clip(1 - _haversine_km(grid) / 15.0, 0, None)
    P = np.eye(49) - 1 / 49
    vals, vecs = np.linalg.eigh(P @ K @ P)
    assert vals[0] < -0.03
    with pytest.raises(NotEstimableError, match="use the uniform kernel or another cutoff"):
        conley_se(vecs[:, 0], grid, 15.0, kernel="bartlett")
