"""Crump et al. (2009) trimming, clipping and stabilised weights as distinct operations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import expit

from eocausal.errors import InputError, NotEstimableError
from eocausal.estimators import trimming as T
from eocausal.estimators import weighting as W


def _uniform_root():
    # e ~ U(0, 1): E[g | a <= e <= 1-a] = 2 log((1-a)/a) / (1-2a), so the condition
    # 1/(a(1-a)) = 2 E[g | g <= 1/(a(1-a))] is solved by a = 0.1018...
    return brentq(lambda a: 1 / (a * (1 - a)) - 4 * np.log((1 - a) / a) / (1 - 2 * a), 0.01, 0.3)


def test_crump_threshold_on_uniform_propensities_is_about_the_rule_of_thumb():
    e = np.random.default_rng(0).uniform(size=200_000)
    a = T.crump_threshold(e)
    assert _uniform_root() == pytest.approx(0.1018, abs=1e-4)
    assert a == pytest.approx(_uniform_root(), abs=2e-3)
    assert a == pytest.approx(T.RULE_OF_THUMB, abs=5e-3)
    assert T.crump_threshold(e, "rule-of-thumb") == 0.1
    gamma, rhs = T.crump_condition(e, a)  # the defining condition holds at the solution
    assert gamma == pytest.approx(rhs, rel=1e-3)


def test_crump_threshold_agrees_with_econml_auto_trimming():
    pytest.importorskip("econml")
    from econml.dr._drlearner import _calculate_crump_threshold  # private; same rule, first root

    rng = np.random.default_rng(1)
    for a, b in [(2, 2), (1, 3), (0.5, 0.5)]:
        e = rng.beta(a, b, size=50_000)
        assert T.crump_threshold(e) == pytest.approx(_calculate_crump_threshold(np.c_[1 - e, e]), abs=1e-3)


def test_crump_threshold_minimises_the_sample_variance_bound():
    e = expit(np.random.default_rng(2).normal(scale=2.0, size=400))
    g = np.sort(1 / (e * (1 - e)))
    k_best = int(np.argmin(np.cumsum(g) / np.arange(1, 401) ** 2)) + 1
    tr = T.trim(e, T.crump_threshold(e))
    assert tr.n_kept == k_best


def test_no_trimming_when_overlap_is_good():
    e = np.random.default_rng(3).uniform(0.3, 0.7, size=1000)  # sup g <= 2 E[g]
    assert T.crump_threshold(e) == 0.0
    assert T.trim(e, "optimal").n_trimmed == 0


def test_trimming_drops_units_and_changes_the_estimand_clipping_keeps_them():
    rng = np.random.default_rng(4)
    n = 3000
    x = rng.normal(scale=1.5, size=n)
    e = expit(2 * x)
    w = (rng.uniform(size=n) < e).astype(float)
    y = w * (1 + x) + x + rng.normal(size=n)  # effect varies with x: trimming moves the target
    tr = T.trim(e, 0.1, w=w)
    outside = (e < 0.1) | (e > 0.9)
    assert tr.n_trimmed == outside.sum() > 0 and tr.n_kept == n - tr.n_trimmed
    np.testing.assert_array_equal(tr.keep, ~outside)
    ec, n_clipped = T.clip(e, 0.1)
    assert len(ec) == n and n_clipped == outside.sum()
    assert ec.min() == 0.1 and ec.max() == 0.9
    full = W.hajek(y, w, ec).estimate
    trimmed = W.hajek(y[tr.keep], w[tr.keep], e[tr.keep]).estimate
    assert abs(full - trimmed) > 0.05  # a different estimand (effect on the overlap population)


def test_trim_that_empties_an_arm_is_not_estimable():
    e = np.r_[np.full(10, 0.02), np.full(10, 0.5)]
    w = np.r_[np.ones(10), np.zeros(10)]
    with pytest.raises(NotEstimableError, match="treated"):
        T.trim(e, 0.1, w=w)


def test_input_errors():
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        T.crump_threshold(np.r_[0.2, 1.3])
    with pytest.raises(InputError, match="rule"):
        T.crump_threshold(np.r_[0.2, 0.3], rule="fast")
    with pytest.raises(InputError, match="threshold"):
        T.trim(np.r_[0.2, 0.3], 0.7)
    with pytest.raises(InputError, match="clip"):
        T.clip(np.r_[0.2, 0.3], -0.1)
    with pytest.raises(NotEstimableError):
        T.crump_threshold(np.r_[0.0, 1.0])
