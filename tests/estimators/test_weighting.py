"""Weighting estimators: formulas, agreement with statsmodels, honest influence-function SEs."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from eocausal.estimators import weighting as W


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    e = 1 / (1 + np.exp(-(0.3 + 0.8 * x)))
    w = (rng.uniform(size=n) < e).astype(float)
    y = 2.0 * w + 1.5 * x + rng.normal(size=n)
    return y, w, e


def test_ht_and_hajek_differ_on_the_same_data():
    y, w, e = _data()
    ht = W.horvitz_thompson(y, w, e).estimate
    hj = W.hajek(y, w, e).estimate
    # they estimate the same thing but are different estimators in finite samples
    assert abs(ht - hj) > 1e-3


@pytest.mark.parametrize("estimand", ["ATE", "ATT", "ATO"])
def test_hajek_equals_direct_computation(estimand):
    y, w, e = _data(seed=1)
    if estimand == "ATE":
        a1, a0 = w / e, (1 - w) / (1 - e)
    elif estimand == "ATT":
        a1, a0 = w, (1 - w) * e / (1 - e)
    else:
        a1, a0 = w * (1 - e), (1 - w) * e
    direct = sum(a1 * y) / sum(a1) - sum(a0 * y) / sum(a0)
    assert W.hajek(y, w, e, estimand).estimate == pytest.approx(direct, rel=1e-12)


def test_ht_equals_direct_computation():
    y, w, e = _data(seed=2)
    n = len(y)
    direct = sum(w[i] * y[i] / e[i] - (1 - w[i]) * y[i] / (1 - e[i]) for i in range(n)) / n
    assert W.horvitz_thompson(y, w, e).estimate == pytest.approx(direct, rel=1e-12)
    att = (np.sum(w * y) - np.sum((1 - w) * y * e / (1 - e))) / w.sum()
    assert W.horvitz_thompson(y, w, e, "ATT").estimate == pytest.approx(att, rel=1e-12)


def test_stabilised_weights_leave_hajek_unchanged():
    y, w, e = _data(seed=3)
    # Hajek is invariant to rescaling each arm's weights (stabilisation multiplies by arm share)
    a1, a0 = W.arm_weights(w, e, "ATE")
    p = w.mean()
    stab = np.sum(p * a1 * y) / np.sum(p * a1) - np.sum((1 - p) * a0 * y) / np.sum((1 - p) * a0)
    assert W.hajek(y, w, e).estimate == pytest.approx(stab, rel=1e-12)


def test_hajek_and_se_equal_statsmodels_wls_hc0():
    y, w, e = _data(seed=4)
    weights = w / e + (1 - w) / (1 - e)
    X = sm.add_constant(w)
    fit = sm.WLS(y, X, weights=weights).fit(cov_type="HC0")
    est = W.hajek(y, w, e)
    se, _ = W.se_from_psi(est.psi)
    assert est.estimate == pytest.approx(fit.params[1], rel=1e-10)
    assert se == pytest.approx(fit.bse[1], rel=1e-8)


def test_clustered_se_equals_statsmodels_cluster_without_correction():
    y, w, e = _data(n=600, seed=5)
    g = np.repeat(np.arange(150), 4)
    weights = w / e + (1 - w) / (1 - e)
    fit = sm.WLS(y, sm.add_constant(w), weights=weights).fit(
        cov_type="cluster", cov_kwds={"groups": g, "use_correction": False})
    est = W.hajek(y, w, e)
    se, G = W.se_from_psi(est.psi, g)
    assert G == 150
    assert se == pytest.approx(fit.bse[1], rel=1e-8)


def test_difference_in_means_equals_ols_with_hc0():
    y, w, _ = _data(seed=6)
    fit = sm.OLS(y, sm.add_constant(w)).fit(cov_type="HC0")
    est = W.difference_in_means(y, w)
    assert est.estimate == pytest.approx(fit.params[1], rel=1e-10)
    assert W.se_from_psi(est.psi)[0] == pytest.approx(fit.bse[1], rel=1e-8)


def test_influence_function_se_matches_monte_carlo_sd():
    """With the true propensity, the IF SE of Hajek and HT is close to the sampling SD."""
    ests, ses = {"ht": [], "hj": []}, {"ht": [], "hj": []}
    for r in range(300):
        y, w, e = _data(n=800, seed=100 + r)
        for k, f in (("ht", W.horvitz_thompson), ("hj", W.hajek)):
            pe = f(y, w, e)
            ests[k].append(pe.estimate)
            ses[k].append(W.se_from_psi(pe.psi)[0])
    for k in ests:
        sd, mean_se = np.std(ests[k], ddof=1), np.mean(ses[k])
        # the SD of 300 draws is known to about 1/sqrt(2*299) = 4%: allow 4 of those
        assert mean_se == pytest.approx(sd, rel=0.16), (k, sd, mean_se)
        # and the estimator is centred on the truth (2.0) within 4 Monte Carlo SEs
        assert abs(np.mean(ests[k]) - 2.0) < 4 * sd / np.sqrt(len(ests[k]))


def test_effective_sample_size():
    assert W.effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert W.effective_sample_size(np.array([1.0, 0, 0, 0])) == pytest.approx(1)
    assert W.effective_sample_size(np.zeros(3)) == 0.0


def test_unknown_estimand_is_refused():
    y, w, e = _data()
    with pytest.raises(ValueError, match="estimand"):
        W.hajek(y, w, e, "LATE")
