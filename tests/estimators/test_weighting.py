"""Weighting estimators: formulas, agreement with statsmodels, honest influence-function SEs."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.special import expit

from eocausal.errors import InputError, NotEstimableError
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


def test_stabilized_weights_equal_the_textbook_formulas_by_hand():
    """ATE: Robins, Hernan and Brumback (2000); ATT/ATO: Li, Morgan and Zaslavsky's (2018) weights
    h/e and h/(1-e), h = e or e(1-e), times the arm share over mean(h), written out unit by unit."""
    w = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    e = np.array([0.8, 0.4, 0.5, 0.2, 0.6])
    p = 2 / 5  # P(W=1)
    mean_e = (0.8 + 0.4 + 0.5 + 0.2 + 0.6) / 5  # 0.5
    mean_v = (0.16 + 0.24 + 0.25 + 0.16 + 0.24) / 5  # mean e(1-e) = 0.21
    hand = {
        "ATE": ([p / 0.8, 0, p / 0.5, 0, 0],
                [0, (1 - p) / 0.6, 0, (1 - p) / 0.8, (1 - p) / 0.4]),
        "ATT": ([p / mean_e, 0, p / mean_e, 0, 0],
                [0, (1 - p) * (0.4 / 0.6) / mean_e, 0, (1 - p) * (0.2 / 0.8) / mean_e,
                 (1 - p) * (0.6 / 0.4) / mean_e]),
        "ATO": ([p * 0.2 / mean_v, 0, p * 0.5 / mean_v, 0, 0],
                [0, (1 - p) * 0.4 / mean_v, 0, (1 - p) * 0.2 / mean_v, (1 - p) * 0.6 / mean_v]),
    }
    for estimand, (h1, h0) in hand.items():
        s1, s0 = W.stabilized_weights(w, e, estimand)
        np.testing.assert_allclose(s1, h1, rtol=1e-14, atol=0, err_msg=estimand)
        np.testing.assert_allclose(s0, h0, rtol=1e-14, atol=0, err_msg=estimand)


@pytest.mark.parametrize("estimand", ["ATE", "ATT", "ATO"])
def test_stabilized_weights_sum_to_arm_sizes_in_expectation(estimand):
    # E[sum of an arm's stabilised weights] = the arm's expected size; the spread of the sum over
    # 400 samples of 2,000 units is checked against that, to 5 Monte Carlo SEs
    rng = np.random.default_rng(11)
    sums = []
    for _ in range(400):
        e = expit(rng.normal(0.3, 1.0, size=2000))
        w = (rng.uniform(size=2000) < e).astype(float)
        s1, s0 = W.stabilized_weights(w, e, estimand)
        sums.append((s1.sum() - w.sum(), s0.sum() - (1 - w).sum()))
    d = np.array(sums)
    mc_se = d.std(axis=0, ddof=1) / np.sqrt(len(d))
    assert (np.abs(d.mean(axis=0)) < 5 * mc_se + 1e-9).all()


def test_stabilised_weights_change_ht_not_hajek_or_ess():
    y, w, e = _data(n=800, seed=5)
    s1, s0 = W.stabilized_weights(w, e)
    hajek_stab = np.sum(s1 * y) / s1.sum() - np.sum(s0 * y) / s0.sum()
    assert hajek_stab == pytest.approx(W.hajek(y, w, e).estimate, rel=1e-12)
    ht_stab = np.mean(s1 * y - s0 * y)
    assert abs(ht_stab - W.horvitz_thompson(y, w, e).estimate) > 0.1
    w1, w0 = W.arm_weights(w, e, "ATE")
    assert W.effective_sample_size(s1[w == 1]) == pytest.approx(W.effective_sample_size(w1[w == 1]), rel=1e-12)
    assert W.effective_sample_size(s0[w == 0]) == pytest.approx(W.effective_sample_size(w0[w == 0]), rel=1e-12)


def test_weighting_inputs_are_checked():
    y, w, e = _data(n=50, seed=4)
    bad = e.copy()
    bad[7] = 1.0
    with pytest.raises(InputError, match=r"propensity: values must lie strictly inside \(0, 1\)"):
        W.hajek(y, w, bad)
    W.hajek(y, w, np.clip(bad, 0, 1), "ATO")  # overlap weights stay finite at e = 1
    with pytest.raises(InputError, match="treatment: must hold only 0 and 1"):
        W.stabilized_weights(w * 2, e)
    with pytest.raises(NotEstimableError, match="no treated units"):
        W.difference_in_means(y, np.zeros_like(w))
    with pytest.raises(InputError, match="clusters: missing cluster labels in rows \\[2\\]"):
        W.se_from_psi(y - y.mean(), np.r_[0.0, 1.0, np.nan, np.ones(47)])


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
