"""grf's calibration test, BLP/GATES (CDDF), CLAN and effects by a variable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from eocausal.diagnostics import calibration as cal
from eocausal.errors import InputError

Z = 4.0  # tolerance in standard errors for estimates checked against their truth


def _trial(n=4000, seed=0, varying_e=True):
    """Well-specified simulation: true m(X), e(X) and tau(X) are known."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    e = 1 / (1 + np.exp(-0.5 * x)) if varying_e else np.full(n, 0.5)
    w = (rng.random(n) < e).astype(float)
    tau = 1 + x
    mu0 = 0.5 * x
    y = mu0 + w * tau + rng.normal(size=n)
    m = mu0 + e * tau  # E[Y | X]
    return x, y, w, e, m, tau, rng


def test_well_specified_predictions_give_alpha_and_beta_near_one():
    x, y, w, e, m, tau, _ = _trial()
    r = cal.test_calibration(y=y, w=w, propensity_scores=e, m_hat=m, tau_hat=tau)
    assert abs(r.alpha - 1) < Z * r.alpha_se
    assert abs(r.beta - 1) < Z * r.beta_se
    assert r.beta_p < 1e-6 and r.alpha_p < 1e-6  # one-sided, coefficients clearly > 0
    assert r.se == "HC3" and r.df == len(y) - 2
    assert list(r.tidy()["term"]) == ["mean_prediction", "differential_prediction"]
    assert "held-out" in r.summary()


def test_noise_priority_gives_beta_near_zero():
    x, y, w, e, m, tau, rng = _trial(seed=1)
    noise = tau.mean() + rng.normal(size=len(y))  # the right mean, no information on who benefits
    r = cal.test_calibration(y=y, w=w, propensity_scores=e, m_hat=m, tau_hat=noise)
    assert abs(r.beta) < Z * r.beta_se
    assert r.beta_p > 0.001
    assert abs(r.alpha - 1) < Z * r.alpha_se


def test_constant_prediction_leaves_beta_undefined():
    x, y, w, e, m, tau, _ = _trial(n=500, seed=2)
    r = cal.test_calibration(y=y, w=w, propensity_scores=e, m_hat=m, tau_hat=np.full(len(y), 1.0))
    assert np.isnan(r.beta) and np.isfinite(r.alpha)


@pytest.mark.parametrize("se", ["HC0", "HC1", "HC3"])
def test_equals_statsmodels_ols_on_the_constructed_regressors(se):
    x, y, w, e, m, tau, rng = _trial(n=800, seed=3)
    tau_hat = tau + 0.5 * rng.normal(size=len(y))
    r = cal.test_calibration(y=y, w=w, propensity_scores=e, m_hat=m, tau_hat=tau_hat, se=se)
    mt = tau_hat.mean()
    X = np.column_stack([mt * (w - e), (tau_hat - mt) * (w - e)])
    f = sm.OLS(y - m, X).fit(cov_type=se)
    assert np.allclose([r.alpha, r.beta], f.params, rtol=1e-10)
    assert np.allclose([r.alpha_se, r.beta_se], f.bse, rtol=1e-10)


def test_clustered_standard_errors_match_statsmodels_and_the_hc3_formula():
    x, y, w, e, m, tau, rng = _trial(n=600, seed=4)
    clusters = rng.integers(0, 60, len(y))
    mt = tau.mean()
    X = np.column_stack([mt * (w - e), (tau - mt) * (w - e)])
    # HC1 with clusters = statsmodels' cluster-robust covariance (G/(G-1) (n-1)/(n-k))
    r = cal.test_calibration(y=y, w=w, propensity_scores=e, m_hat=m, tau_hat=tau, clusters=clusters, se="HC1")
    f = sm.OLS(y - m, X).fit(cov_type="cluster", cov_kwds={"groups": clusters})
    assert np.allclose([r.alpha_se, r.beta_se], f.bse, rtol=1e-10)
    assert r.n_clusters == len(np.unique(clusters))
    # HC3 with clusters (grf via sandwich::vcovCL): residuals of cluster g times (I - H_gg)^{-1}
    r3 = cal.test_calibration(y=y, w=w, propensity_scores=e, m_hat=m, tau_hat=tau, clusters=clusters)
    A = np.linalg.inv(X.T @ X)
    res = (y - m) - X @ (A @ X.T @ (y - m))
    meat = np.zeros((2, 2))
    for g in np.unique(clusters):
        ix = clusters == g
        u = X[ix].T @ np.linalg.solve(np.eye(ix.sum()) - X[ix] @ A @ X[ix].T, res[ix])
        meat += np.outer(u, u)
    assert np.allclose([r3.alpha_se, r3.beta_se], np.sqrt(np.diag(A @ meat @ A)), rtol=1e-10)
    # singleton clusters reduce clustered HC3 to HC3
    r1 = cal.test_calibration(y=y, w=w, propensity_scores=e, m_hat=m, tau_hat=tau, clusters=np.arange(len(y)))
    r0 = cal.test_calibration(y=y, w=w, propensity_scores=e, m_hat=m, tau_hat=tau)
    assert np.allclose([r1.alpha_se, r1.beta_se], [r0.alpha_se, r0.beta_se], rtol=1e-10)


def _grouped_trial(n=5000, seed=5):
    """Five equal groups with known effects 1..5, a randomised treatment with e = 0.5."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(5), n // 5)
    x = rng.normal(size=n)
    w = (rng.random(n) < 0.5).astype(float)
    y = x + w * (group + 1.0) + rng.normal(size=n)
    return group, x, w, y, rng


def test_gates_recover_known_group_effects():
    group, x, w, y, rng = _grouped_trial()
    proxy = group + 0.0  # the groups themselves (ties within groups)
    r = cal.blp_gates(y=y, w=w, propensity_scores=0.5, proxy=proxy, baseline=x)
    g = r.gates.set_index("term")
    for k in range(5):
        row = g.loc[f"G{k + 1}"]
        assert abs(row["estimate"] - (k + 1)) < Z * row["std_error"]
        assert row["share"] == pytest.approx(0.2)
    diff = g.loc["G5 - G1"]
    assert abs(diff["estimate"] - 4) < Z * diff["std_error"]
    assert np.array_equal(r.groups, group)
    blp = r.blp.set_index("term")
    # tau = proxy + 1, so the BLP slope on (W - e)(S - mean S) is 1 and beta1 is the ATE 3
    assert abs(blp.loc["HET", "estimate"] - 1) < Z * blp.loc["HET", "std_error"]
    assert abs(blp.loc["ATE", "estimate"] - 3) < Z * blp.loc["ATE", "std_error"]
    assert r.n_splits == 1 and r.alpha == r.interval_alpha == 0.05
    assert np.allclose(g["ci_high"] - g["estimate"], 1.959964 * g["std_error"], rtol=1e-6, equal_nan=True)


def test_gates_weighted_regression_equals_statsmodels_wls():
    group, x, w, y, rng = _grouped_trial(n=1000, seed=6)
    e = np.clip(0.3 + 0.1 * (x > 0), 0.05, 0.95)
    s = group + 0.1 * rng.normal(size=len(y))
    r = cal.blp_gates(y=y, w=w, propensity_scores=e, proxy=s)
    X = np.column_stack([np.ones(len(y)), w - e, (w - e) * (s - s.mean())])
    f = sm.WLS(y, X, weights=1 / (e * (1 - e))).fit(cov_type="HC1")
    blp = r.blp.set_index("term")
    assert np.allclose(blp.loc[["ATE", "HET"], "estimate"], f.params[1:], rtol=1e-10)
    assert np.allclose(blp.loc[["ATE", "HET"], "std_error"], f.bse[1:], rtol=1e-10)


def test_repeated_splits_aggregate_by_medians():
    group, x, w, y, rng = _grouped_trial(n=2000, seed=7)
    calls = []

    def proxy(train, test):
        assert len(np.intersect1d(train, test)) == 0
        calls.append(len(test))
        return group[test] + 0.0, x[test]

    r = cal.blp_gates(y=y, w=w, propensity_scores=0.5, proxy=proxy, n_splits=7, seed=1)
    assert len(calls) == 7 and r.n_splits == 7
    assert r.alpha == 0.05 and r.interval_alpha == pytest.approx(0.10)  # median of 95% intervals: 90%
    per = r.split_estimates
    g5 = per[per["term"] == "G5"]
    row = r.gates.set_index("term").loc["G5"]
    assert row["estimate"] == pytest.approx(np.median(g5["estimate"]))
    assert row["ci_low"] == pytest.approx(np.median(g5["ci_low"]))
    assert row["p_value"] == pytest.approx(min(1.0, 2 * np.median(g5["p_value"])))
    assert abs(row["estimate"] - 5) < Z * row["std_error"]


def test_clan_table_and_effects_by_a_variable():
    group, x, w, y, rng = _grouped_trial(n=1000, seed=8)
    covs = pd.DataFrame({"x": x, "g": group + 0.0})
    t = cal.clan(group, covs)
    means = covs.groupby(group).mean()
    assert np.allclose(t.loc["x", ["G1", "G2", "G3", "G4", "G5"]], means["x"])
    assert t.loc["g", "G5 - G1"] == pytest.approx(4.0)
    assert t.loc["x", "std_error"] > 0
    scores = y * 0 + (group + 1.0) + rng.normal(size=len(y))
    tab = cal.effects_by(None, np.array(["a", "b", "c", "d", "e"])[group], tau_hat=group + 1.0, scores=scores)
    assert list(tab["group"]) == ["a", "b", "c", "d", "e"]
    assert np.allclose(tab["dr_estimate"], pd.Series(scores).groupby(group).mean())
    binned = cal.effects_by(None, x, tau_hat=group + 1.0, scores=scores, bins=4)
    assert list(binned["group"]) == ["Q1", "Q2", "Q3", "Q4"] and binned["n"].sum() == len(y)
    # alpha = 0.05 gives 95% intervals (z = 1.959964), alpha = 0.10 90% ones (z = 1.644854)
    assert np.allclose(tab["ci_high"] - tab["dr_estimate"], 1.959964 * tab["std_error"], rtol=1e-6)
    tab90 = cal.effects_by(None, np.array(["a", "b", "c", "d", "e"])[group], tau_hat=group + 1.0, scores=scores,
                           alpha=0.10)
    assert np.allclose(tab90["ci_high"] - tab90["dr_estimate"], 1.644854 * tab90["std_error"], rtol=1e-6)
    t90 = cal.clan(group, covs, alpha=0.10)
    assert t90.loc["x", "ci_high"] - t90.loc["x", "G5 - G1"] == pytest.approx(1.644854 * t90.loc["x", "std_error"],
                                                                              rel=1e-6)


def test_calibration_input_errors():
    kw = dict(y=[1.0, 2, 3], m_hat=[0, 0, 0], tau_hat=[1, 2, 3])
    with pytest.raises(InputError, match=r"propensity_scores: must lie strictly inside \(0, 1\), got range \[0, 0.5\]"):
        cal.test_calibration(w=[0, 1, 0], propensity_scores=[0, 0.5, 0.5], **kw)
    with pytest.raises(InputError, match="only 0 and 1"):
        cal.test_calibration(w=[0, 2, 0], propensity_scores=0.5, **kw)
    with pytest.raises(InputError, match=r"se='HC2': use one of HC0, HC1, HC3"):
        cal.test_calibration(y=np.arange(6.0), w=[0, 1] * 3, propensity_scores=0.5, m_hat=np.zeros(6),
                             tau_hat=np.arange(6.0), se="HC2")
    with pytest.raises(InputError, match=r"^w, propensity_scores: required without a CateResult"):
        cal.test_calibration(**kw)
    with pytest.raises(InputError, match="result: expected a CateResult from eocausal.cate, got ndarray"):
        cal.test_calibration(np.arange(3.0), w=[0, 1, 0], propensity_scores=0.5, **kw)
    with pytest.raises(InputError, match="proxy: required without a CateResult"):
        cal.blp_gates(y=[1.0, 2, 3], w=[0, 1, 0], propensity_scores=0.5)
    with pytest.raises(InputError, match="baseline: only with an array proxy"):
        cal.blp_gates(y=[1.0, 2, 3], w=[0, 1, 0], propensity_scores=0.5, proxy=lambda tr, te: te, baseline=[0, 0, 0])
    with pytest.raises(InputError, match=r"alpha=95: must lie in \(0, 1\)"):
        cal.blp_gates(y=[1.0, 2, 3], w=[0, 1, 0], propensity_scores=0.5, proxy=[1, 2, 3], alpha=95)
    with pytest.raises(InputError, match="integer group labels"):
        cal.clan(np.array([0.5, 1.5]), np.zeros((2, 1)))
