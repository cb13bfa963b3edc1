"""Repeated cross-fitting in ``estimate(repeats=R)`` and stabilised weights.

Repeated cross-fitting (Chernozhukov et al. 2018, Definition 3.3 and eq. 3.8): the R splits use
seeds seed, seed + 1, ...; each row is the median of the R single-split estimates, with SE
median_r sqrt(se_r^2 + (est_r - median)^2). The test rebuilds that from R separate
``repeats=1`` calls, so it fails if the splits, the median or the SE rule were wrong.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit

import eocausal
from eocausal.errors import InputError
from eocausal.estimators import weighting


def _frame(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    w = (rng.uniform(size=n) < expit(0.8 * X[:, 0] - 0.5 * X[:, 1])).astype(int)
    y = 1.0 * w + X @ np.array([1.0, 0.5, -0.5]) + rng.normal(size=n)
    return pd.DataFrame({"y": y, "w": w, "x1": X[:, 0], "x2": X[:, 1], "x3": X[:, 2],
                         "village": np.arange(n) // 3})


KW = dict(treatment="w", outcome="y", confounders=["x1", "x2", "x3"], clusters="village",
          methods=["ipw-hajek", "aipw"], propensity="logit", outcome_model="linear")


def test_repeats_is_the_median_rule_over_single_splits():
    df = _frame()
    R = 3
    table = eocausal.estimate(df, repeats=R, seed=10, **KW).tidy()
    singles = [eocausal.estimate(df, seed=10 + r, **KW).tidy() for r in range(R)]
    ests = np.column_stack([s["estimate"].to_numpy() for s in singles])
    ses = np.column_stack([s["std_error"].to_numpy() for s in singles])
    assert np.ptp(ests, axis=1).max() > 0  # the splits differ, so the rule is exercised
    med = np.median(ests, axis=1)
    se = np.median(np.sqrt(ses**2 + (ests - med[:, None]) ** 2), axis=1)
    np.testing.assert_allclose(table["estimate"], med, rtol=1e-12)
    np.testing.assert_allclose(table["std_error"], se, rtol=1e-12)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(table["ci_low"], med - z * se, rtol=1e-12)
    assert table["se_type"].str.contains("3 splits").all()
    assert table["note"].str.contains("median over 3 cross-fitting splits").all()


def test_repeats_validation():
    df = _frame(200)
    with pytest.raises(InputError, match="repeats"):
        eocausal.estimate(df, repeats=0, **KW)
    with pytest.raises(InputError, match="seed"):
        eocausal.estimate(df, repeats=2, seed=None, **KW)


@pytest.mark.parametrize("estimand", ["ATE", "ATT", "ATO"])
def test_stabilized_weights_leave_hajek_and_ess_unchanged(estimand):
    rng = np.random.default_rng(3)
    n = 500
    e = rng.uniform(0.1, 0.9, n)
    w = (rng.uniform(size=n) < e).astype(float)
    y = rng.normal(size=n) + w
    w1, w0 = weighting.arm_weights(w, e, estimand)
    s1, s0 = weighting.stabilized_weights(w, e, estimand)
    # a constant rescaling per arm
    assert np.ptp((s1 / np.where(w1 > 0, w1, 1))[w == 1]) < 1e-12
    assert np.ptp((s0 / np.where(w0 > 0, w0, 1))[w == 0]) < 1e-12
    hajek_stab = np.sum(s1 * y) / s1.sum() - np.sum(s0 * y) / s0.sum()
    assert hajek_stab == pytest.approx(weighting.hajek(y, w, e, estimand).estimate, rel=1e-12)
    ess = weighting.effective_sample_size
    assert ess(s1[w == 1]) == pytest.approx(ess(w1[w == 1]), rel=1e-12)
    if estimand == "ATE":  # P(W=1)/e (Robins, Hernan and Brumback 2000)
        np.testing.assert_allclose(s1[w == 1], w.mean() / e[w == 1])
    # each arm's weights sum to about its size (their expectation is n P(W=a))
    assert abs(s1.sum() - w.sum()) < 4 * np.sqrt(n) and abs(s0.sum() - (n - w.sum())) < 4 * np.sqrt(n)
