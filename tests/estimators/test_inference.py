"""Inference: Lunceford-Davidian IF against a numeric sandwich, vectorised bootstraps, DoubleML's
multiplier bootstrap, and the bootstrap that refits the propensity.

Bootstrap tolerances: the relative sampling error of a bootstrap SE from B replicates is about
1/sqrt(2B), so SEs are compared at rel = 3/sqrt(2B) (plus 1/G for cluster bootstraps with G
clusters, whose resampling variance carries a (G-1)/G factor).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit
from sklearn.linear_model import LinearRegression, LogisticRegression

from eocausal.data.folds import grouped_folds
from eocausal.errors import InputError, NotEstimableError, SeparationError
from eocausal.estimators import aipw as A
from eocausal.estimators import inference as I
from eocausal.estimators import weighting as W


def _data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, 2))
    w = (rng.uniform(size=n) < expit(0.3 + V @ [0.8, -0.5])).astype(float)
    y = 1 + 2 * w + V @ [1.5, 1.0] + rng.normal(size=n)
    return V, y, w


def _tol(B, G=None):
    return 3 / np.sqrt(2 * B) + (1 / G if G else 0)


# ----------------------------------------------------------------------------- Lunceford-Davidian
@pytest.mark.parametrize("C", [np.inf, 0.5])
def test_fit_logit_equals_sklearn(C):
    V, _, w = _data(seed=1)
    X = np.c_[np.ones(len(w)), V]
    b = I.fit_logit(X, w, penalty=0.0 if np.isinf(C) else 1 / C)
    sk = LogisticRegression(C=C, tol=1e-12, max_iter=10000).fit(V, w)
    np.testing.assert_allclose(b, np.r_[sk.intercept_, sk.coef_[0]], rtol=1e-6, atol=1e-8)


def _stacked_sandwich(y, w, X, estimator, estimand, fit):
    """Var(tau) from the stacked estimating equations, Jacobian by central differences."""
    n = len(y)

    def m(theta):
        e = expit(X @ theta[2:])
        w1, w0 = W.arm_weights(w, e, estimand)
        if estimator == "hajek":
            a, c = w1 * (y - theta[0]), w0 * (y - theta[1])
        else:
            d = {"ATE": np.ones(n), "ATT": w, "ATO": e * (1 - e)}[estimand]
            a, c = (w1 - w0) * y - theta[0] * d, theta[1] * np.ones(n)  # theta[1] is a dummy = 0
        return np.column_stack([a, c, X * (w - e)[:, None]])

    w1, w0 = W.arm_weights(w, fit.e, estimand)
    if estimator == "hajek":
        theta = np.r_[np.sum(w1 * y) / w1.sum(), np.sum(w0 * y) / w0.sum(), fit.beta]
        contrast = np.r_[1.0, -1.0, np.zeros(X.shape[1])]
    else:
        theta = np.r_[fit.estimate, 0.0, fit.beta]
        contrast = np.r_[1.0, 0.0, np.zeros(X.shape[1])]
    k, h = len(theta), 1e-6
    J = np.empty((k, k))
    for j in range(k):
        step = np.zeros(k)
        step[j] = h
        J[:, j] = (m(theta + step).mean(0) - m(theta - step).mean(0)) / (2 * h)
    M = m(theta)
    Jinv = np.linalg.inv(J)
    cov = Jinv @ (M.T @ M / n) @ Jinv.T / n
    return float(np.sqrt(contrast @ cov @ contrast))


@pytest.mark.parametrize("estimator", ["hajek", "ht"])
@pytest.mark.parametrize("estimand", ["ATE", "ATT", "ATO"])
def test_lunceford_davidian_if_equals_numeric_sandwich(estimator, estimand):
    V, y, w = _data()
    fit = I.ipw_logit_if(y, w, V, estimator=estimator, estimand=estimand)
    ref = {"hajek": W.hajek, "ht": W.horvitz_thompson}[estimator](y, w, fit.e, estimand)
    assert fit.estimate == pytest.approx(ref.estimate, rel=1e-14)
    se, _ = W.se_from_psi(fit.psi)
    X = np.c_[np.ones(len(y)), V]
    assert se == pytest.approx(_stacked_sandwich(y, w, X, estimator, estimand, fit), rel=1e-6)


def test_estimated_propensity_se_is_smaller_than_known_e_se_for_the_ate():
    """Simulation: the LD SE tracks the sampling sd; the known-e SE overstates it."""
    n, reps = 500, 200
    rng = np.random.default_rng(11)
    est, se_adj, se_known = [], [], []
    for _ in range(reps):
        V = rng.normal(size=(n, 2))
        w = (rng.uniform(size=n) < expit(0.2 + V @ [1.0, -0.7])).astype(float)
        y = 1 + 2 * w + V @ [2.0, 1.5] + rng.normal(size=n)
        fit = I.ipw_logit_if(y, w, V, estimator="hajek")
        est.append(fit.estimate)
        se_adj.append(W.se_from_psi(fit.psi)[0])
        se_known.append(W.se_from_psi(fit.psi_known_e)[0])
    sd = np.std(est, ddof=1)
    se_adj, se_known = np.array(se_adj), np.array(se_known)
    assert (se_adj < se_known).all()
    # the sd of 200 estimates is itself uncertain by ~1/sqrt(2 * 200) = 5%
    assert np.mean(se_adj) == pytest.approx(sd, rel=0.2)
    assert np.mean(se_known) > 1.3 * sd


def test_separated_arms_raise_separation_error():
    V = np.linspace(-2, 2, 100)[:, None]
    w = (V[:, 0] > 0).astype(float)
    with pytest.raises(SeparationError, match="separate"):
        I.ipw_logit_if(V[:, 0] + w, w, V)


# ----------------------------------------------------------------------------- nonparametric bootstrap
def test_score_bootstrap_se_matches_if_se_and_is_deterministic():
    V, y, w = _data(seed=2)
    e = expit(0.3 + V @ [0.8, -0.5])
    pe = A.aipw(y, w, e, 1 + V @ [1.5, 1.0], 3 + V @ [1.5, 1.0])
    B = 2000
    boot = I.bootstrap_scores(pe.psi, pe.estimate, n_boot=B, seed=1)
    se, _ = W.se_from_psi(pe.psi)
    assert boot.n_boot == B
    assert boot.std_error == pytest.approx(se, rel=_tol(B))
    # chunking does not change the draws: replicate b's counts depend on (seed, b) only, and the
    # totals differ at most in the last bits (BLAS summation order depends on the chunk's shape)
    again = I.bootstrap_scores(pe.psi, pe.estimate, n_boot=B, seed=1, chunk_size=7)
    np.testing.assert_allclose(again.draws, boot.draws, rtol=1e-12, atol=0)
    assert again.std_error == pytest.approx(boot.std_error, rel=1e-12)
    # ... while another seed gives other draws (so the tolerance above can fail)
    other = I.bootstrap_scores(pe.psi, pe.estimate, n_boot=B, seed=2)
    assert np.max(np.abs(other.draws - boot.draws)) > se
    aipw_boot = I.bootstrap_aipw(y, w, e, 1 + V @ [1.5, 1.0], 3 + V @ [1.5, 1.0], n_boot=B, seed=1)
    np.testing.assert_allclose(aipw_boot.draws, boot.draws, rtol=1e-10)  # ATE: the same statistic


@pytest.mark.parametrize("weights", ["normal", "rademacher", "mammen", "bayes"])
def test_multiplier_draws_do_not_depend_on_the_chunk_size(weights):
    psi = np.random.default_rng(0).standard_t(3, size=500)
    g = np.arange(500) // 4
    kw = dict(n_boot=300, weights=weights, clusters=g, seed=9)
    whole = I.multiplier_bootstrap(psi, 0.0, **kw)
    chunked = I.multiplier_bootstrap(psi, 0.0, chunk_size=7, **kw)
    np.testing.assert_allclose(chunked.draws, whole.draws, rtol=1e-12, atol=1e-15 * np.abs(psi).sum())
    assert np.std(whole.draws) > 0.5 * np.sqrt(np.sum(np.bincount(g, psi) ** 2)) / 500
    # replicate b is drawn from (seed, b): the first 50 replicates of B = 300 and of B = 50 agree
    head = I.multiplier_bootstrap(psi, 0.0, **{**kw, "n_boot": 50})
    np.testing.assert_allclose(head.draws, whole.draws[:50], rtol=1e-12, atol=1e-15 * np.abs(psi).sum())


def test_bootstrap_counts_of_a_replicate_depend_only_on_seed_and_index():
    g = np.random.default_rng(1).integers(0, 30, size=200)
    for counts in ("multinomial", "poisson"):
        C = I.bootstrap_counts(200, g, n_boot=40, counts=counts, seed=3)
        np.testing.assert_array_equal(I.bootstrap_counts(200, g, n_boot=10, counts=counts, seed=3), C[:10])
        assert not np.array_equal(I.bootstrap_counts(200, g, n_boot=10, counts=counts, seed=4), C[:10])


def test_bootstrap_totals_equal_explicit_counts_and_keep_clusters_whole():
    V, y, w = _data(n=300, seed=3)
    g = np.random.default_rng(0).integers(0, 40, size=300)
    C = I.bootstrap_counts(300, g, n_boot=50, seed=5)
    assert C.shape == (50, 300)
    for c in np.unique(g):  # every unit of a cluster carries its cluster's count
        assert (C[:, g == c] == C[:, g == c][:, :1]).all()
    assert (np.bincount(np.unique(g, return_inverse=True)[1], minlength=40) > 0).all()
    G_counts = np.stack([C[:, np.flatnonzero(g == c)[0]] for c in np.unique(g)], axis=1)
    assert (G_counts.sum(axis=1) == 40).all()  # multinomial: 40 cluster draws per replicate
    e = expit(0.3 + V @ [0.8, -0.5])
    boot = I.bootstrap_ipw(y, w, e, n_boot=50, clusters=g, seed=5)
    w1, w0 = W.arm_weights(w, e, "ATE")
    direct = (C @ (w1 * y)) / (C @ w1) - (C @ (w0 * y)) / (C @ w0)
    np.testing.assert_allclose(boot.draws, direct, rtol=1e-12)
    assert boot.n_clusters == 40


@pytest.mark.parametrize("estimator", ["hajek", "ht"])
@pytest.mark.parametrize("estimand", ["ATE", "ATT", "ATO"])
def test_ipw_bootstrap_se_matches_if_se(estimator, estimand):
    V, y, w = _data(seed=4)
    e = expit(0.3 + V @ [0.8, -0.5])
    B = 1000
    boot = I.bootstrap_ipw(y, w, e, estimator=estimator, estimand=estimand, n_boot=B, seed=2)
    pe = {"hajek": W.hajek, "ht": W.horvitz_thompson}[estimator](y, w, e, estimand)
    assert boot.estimate == pe.estimate
    assert boot.std_error == pytest.approx(W.se_from_psi(pe.psi)[0], rel=_tol(B))


def test_cluster_and_poisson_bootstraps_match_cluster_if_se():
    V, y, w = _data(n=2000, seed=5)
    g = np.repeat(np.arange(200), 10)
    y = y + w * np.repeat(np.random.default_rng(1).normal(size=200), 10)  # cluster-level effects
    e = expit(0.3 + V @ [0.8, -0.5])
    r0 = y - (1 + V @ [1.5, 1.0])
    h_att = w * r0 - (1 - w) * e / (1 - e) * r0
    pe = A.aipw(y, w, e, 1 + V @ [1.5, 1.0], 3 + V @ [1.5, 1.0], "ATT")
    se, G = W.se_from_psi(pe.psi, g)
    B = 1500
    for counts in ("multinomial", "poisson"):
        boot = I.bootstrap_aipw(y, w, e, 1 + V @ [1.5, 1.0], 3 + V @ [1.5, 1.0], estimand="ATT",
                                n_boot=B, clusters=g, counts=counts, seed=3)
        assert boot.estimate == pytest.approx(h_att.sum() / w.sum(), rel=1e-12)
        assert boot.std_error == pytest.approx(se, rel=_tol(B, G))
    assert se > 1.2 * W.se_from_psi(pe.psi)[0]  # clustering matters here


def test_percentile_and_normal_intervals():
    rng = np.random.default_rng(6)
    psi = rng.exponential(size=20) - 1.0  # skewed scores; few units so the mean stays skewed
    boot = I.bootstrap_scores(psi, 0.0, n_boot=20000, seed=0)
    lo_n, hi_n = boot.confint(0.1, "normal")
    z = stats.norm.ppf(0.95)
    assert (lo_n, hi_n) == pytest.approx((-z * boot.std_error, z * boot.std_error), rel=1e-12)
    lo_p, hi_p = boot.confint(0.1, "percentile")
    assert (lo_p, hi_p) == pytest.approx(tuple(np.quantile(boot.draws, [0.05, 0.95])), rel=1e-12)
    # right-skewed scores: the percentile interval leans right of the symmetric normal one
    assert hi_p - 0.0 > 0.0 - lo_p
    assert hi_p > hi_n and lo_p > lo_n
    with pytest.raises(InputError, match="percentile"):
        boot.confint(0.1, "basic")


# ----------------------------------------------------------------------------- multiplier bootstrap
@pytest.mark.parametrize("method,ours", [("normal", "normal"), ("Bayes", "bayes")])
def test_multiplier_bootstrap_equals_doubleml(method, ours):
    dml = pytest.importorskip("doubleml")
    from doubleml.utils import PSProcessorConfig

    V, y, w = _data(n=500, seed=7)
    fold = grouped_folds(len(y), None, 5, 0, stratify=w)
    logit = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=1000)  # as native Newton
    fit = A.crossfit_aipw(V, y, w, fold, propensity=logit, outcome_model=LinearRegression(), clip=0.01)
    m = dml.DoubleMLIRM(dml.DoubleMLData.from_arrays(V, y, w), LinearRegression(), logit,
                        draw_sample_splitting=False, ps_processor_config=PSProcessorConfig(clipping_threshold=0.01))
    m.set_sample_splitting([(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(5)]).fit()
    np.random.seed(42)
    m.bootstrap(method=method, n_rep_boot=300)
    boot = I.multiplier_bootstrap(fit.psi[0], fit.estimate, n_boot=300, weights=ours,
                                  seed=np.random.RandomState(42), chunk_size=64)
    t = (boot.draws - fit.estimate) / fit.std_error
    # DoubleML's scores are -psi (psi_a = -1), so its t-statistics have the opposite sign
    np.testing.assert_allclose(t, -m.boot_t_stat[:, 0, 0], rtol=1e-8, atol=1e-9)  # nuisances agree to ~1e-11 (Newton vs newton-cholesky)


@pytest.mark.parametrize("weights", ["normal", "rademacher", "mammen", "bayes"])
def test_multiplier_bootstrap_se_matches_if_se(weights):
    V, y, w = _data(seed=8)
    e = expit(0.3 + V @ [0.8, -0.5])
    pe = A.aipw(y, w, e, 1 + V @ [1.5, 1.0], 3 + V @ [1.5, 1.0])
    g = np.repeat(np.arange(400), 5)
    B = 1500
    for clusters in (None, g):
        se, G = W.se_from_psi(pe.psi, clusters)
        boot = I.multiplier_bootstrap(pe.psi, pe.estimate, n_boot=B, weights=weights, clusters=clusters, seed=4)
        assert boot.std_error == pytest.approx(se, rel=_tol(B))
        assert boot.n_clusters == G


def test_exact_normal_multiplier_draws_have_the_if_law():
    rng = np.random.default_rng(9)
    psi = rng.normal(size=1000) ** 2 - 1
    B = 3000
    exact = I.multiplier_bootstrap(psi, 0.5, n_boot=B, draw="exact", seed=1)
    full = I.multiplier_bootstrap(psi, 0.5, n_boot=B, draw="full", seed=1)
    se = W.se_from_psi(psi)[0]
    assert exact.std_error == pytest.approx(se, rel=_tol(B))
    assert full.std_error == pytest.approx(se, rel=_tol(B))
    assert stats.ks_2samp(exact.draws, full.draws).pvalue > 1e-3
    with pytest.raises(InputError, match="normal"):
        I.multiplier_bootstrap(psi, 0.5, weights="rademacher", draw="exact")


# ----------------------------------------------------------------------------- refit bootstrap
def test_refit_bootstrap_matches_lunceford_davidian_se():
    V, y, w = _data(n=1500, seed=10)
    B = 300
    boot = I.refit_bootstrap_ipw(V, y, w, n_boot=B, C=1e8, clip=0.0, seed=0)
    ld = I.ipw_logit_if(y, w, V)
    assert boot.estimate == pytest.approx(ld.estimate, rel=1e-6)
    se_ld, se_known = W.se_from_psi(ld.psi)[0], W.se_from_psi(ld.psi_known_e)[0]
    assert boot.std_error == pytest.approx(se_ld, rel=_tol(B))
    assert boot.std_error < se_known


def test_refit_bootstrap_crossfitted_clustered_with_chosen_penalty():
    V, y, w = _data(n=600, seed=12)
    g = np.repeat(np.arange(150), 4)
    fold = grouped_folds(600, g, 3, 0, stratify=w)
    C = I.choose_ridge_penalty(V, w, clusters=g)
    assert C > 0
    boot = I.refit_bootstrap_ipw(V, y, w, n_boot=40, C=C, clusters=g, fold_ids=fold, estimator="ht", seed=1)
    assert boot.n_clusters == 150 and boot.n_boot + boot.n_failed == 40
    assert np.isfinite(boot.draws).all() and 0 < boot.std_error < 1
    assert "refit" in boot.method


def test_bootstrap_input_errors():
    psi = np.ones(10)
    with pytest.raises(InputError, match="n_boot"):
        I.bootstrap_scores(psi, 0.0, n_boot=1)
    with pytest.raises(InputError, match="counts"):
        I.bootstrap_scores(psi, 0.0, counts="bayes")
    with pytest.raises(InputError, match="weights"):
        I.multiplier_bootstrap(psi, 0.0, weights="wild")
    with pytest.raises(InputError, match="clusters"):
        I.bootstrap_scores(psi, 0.0, clusters=np.arange(5))
    with pytest.raises(InputError, match=r"psi: NaN or infinite values in rows \[10\]"):
        I.multiplier_bootstrap(np.r_[psi, np.nan], 0.0)
    for bad in (2.5, "100", True):  # n_boot must be an integer: 2.5, a string and a bool are refused
        with pytest.raises(InputError, match="n_boot=.*expected an integer"):
            I.bootstrap_scores(psi, 0.0, n_boot=bad)
    with pytest.raises(InputError, match="chunk_size=0: must be at least 1"):
        I.bootstrap_scores(psi, 0.0, chunk_size=0)
    with pytest.raises(InputError, match="clusters: missing cluster labels"):
        I.bootstrap_scores(psi, 0.0, clusters=np.r_[np.zeros(9), np.nan])
    # one treated unit in cluster 0 of 2: draws without cluster 0 are undefined, dropped and counted
    y, w = np.arange(6.0), np.r_[1.0, 0, 0, 0, 0, 0]
    boot = I.bootstrap_ipw(y, w, np.full(6, 0.5), n_boot=40, clusters=np.arange(6) // 3, seed=0)
    assert boot.n_failed > 0 and boot.n_boot + boot.n_failed == 40 and np.isfinite(boot.draws).all()
    with pytest.raises(NotEstimableError, match="replicates"):
        I.bootstrap_totals(np.ones((6, 1)), lambda T: np.full(len(T), np.nan), 0.0, n_boot=5)
