"""Overlap summary and warning: numbers against numpy, Crump et al.'s condition, when the warning fires."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import optimize

from eocausal.diagnostics.overlap import check_overlap, overlap_summary
from eocausal.errors import InputError, OverlapWarning


def _draw(e, seed=0):
    return (np.random.default_rng(seed).uniform(size=len(e)) < e).astype(float)


def _poor(n=4000, seed=0):
    """Propensities piling up at both ends (Beta(0.3, 0.3))."""
    e = np.random.default_rng(seed).beta(0.3, 0.3, n)
    return e, _draw(e, seed + 1)


def _good(n=2000, seed=0):
    e = np.random.default_rng(seed).uniform(0.2, 0.8, n)
    return e, _draw(e, seed + 1)


def test_summary_matches_numpy():
    e, w = _poor(seed=2)
    s = overlap_summary(e, w, clip=0.01)
    t, c = e[w == 1], e[w == 0]
    assert (s.n, s.n_treated, s.n_control) == (len(e), len(t), len(c))
    assert s.quantiles.at["treated", "min"] == t.min() and s.quantiles.at["control", "max"] == c.max()
    assert s.quantiles.at["control", "q05"] == pytest.approx(np.quantile(c, 0.05), rel=1e-12)
    assert s.quantiles.at["all", "q50"] == pytest.approx(np.median(e), rel=1e-12)
    assert s.shares.at["treated", "below_0.01"] == pytest.approx(np.mean(t < 0.01), abs=1e-15)
    assert s.shares.at["all", "above_0.95"] == pytest.approx(np.mean(e > 0.95), abs=1e-15)
    assert s.n_clipped == int(np.sum((e < 0.01) | (e > 0.99))) > 0
    ec = np.clip(e, 0.01, 0.99)
    for est, (v1, v0) in {"ATE": (1 / ec, 1 / (1 - ec)), "ATT": (np.ones_like(ec), ec / (1 - ec)),
                          "ATO": (1 - ec, ec)}.items():
        ess1 = v1[w == 1].sum() ** 2 / np.sum(v1[w == 1] ** 2)
        ess0 = v0[w == 0].sum() ** 2 / np.sum(v0[w == 0] ** 2)
        assert s.ess.loc[est].tolist() == pytest.approx([ess1, ess0], rel=1e-12)
    assert s.ess.at["ATE", "treated"] < s.ess.at["ATO", "treated"]  # overlap weights are kinder
    d = s.as_dict()
    assert d["quantiles"]["treated"]["min"] == t.min() and d["crump_threshold"] == s.crump_threshold


def test_crump_condition_holds_at_the_returned_alpha():
    e, w = _poor(n=20000, seed=3)
    s = overlap_summary(e, w)
    a = s.crump_threshold
    assert s.crump_rule == "optimal" and 0 < a < 0.5
    g = 1 / (e * (1 - e))
    gamma = 1 / (a * (1 - a))
    rhs = 2 * g[g <= gamma * (1 + 1e-12)].mean()
    assert gamma == pytest.approx(rhs, rel=2e-3)  # equality up to the sample's granularity
    # units outside [a, 1 - a] are the ones trimming drops
    out = (e < a) | (e > 1 - a)
    assert abs(s.n_trimmed - out.sum()) <= 1
    assert s.n_trimmed_treated + s.n_trimmed_control == s.n_trimmed


def test_crump_threshold_matches_the_population_solution_for_uniform_propensities():
    # e ~ U(0, 1): E[g | a <= e <= 1 - a] = 2 log((1 - a) / a) / (1 - 2a), so the condition reads
    # 1 / (a (1 - a)) = 4 log((1 - a) / a) / (1 - 2a)
    a_pop = optimize.brentq(lambda a: 1 / (a * (1 - a)) - 4 * np.log((1 - a) / a) / (1 - 2 * a), 1e-4, 0.45)
    e = np.random.default_rng(4).uniform(size=50000)
    s = overlap_summary(e, _draw(e, 5))
    assert s.crump_threshold == pytest.approx(a_pop, abs=0.004)
    assert 0.05 < a_pop < 0.15  # close to Crump et al.'s rule of thumb 0.1


def test_no_trimming_when_overlap_is_good_and_fallback_when_unsolvable():
    e, w = _good()
    s = overlap_summary(e, w)
    assert (s.crump_threshold, s.crump_rule, s.n_trimmed) == (0.0, "no trimming", 0)
    s = overlap_summary(np.array([0.0, 0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0, 1.0]))
    assert (s.crump_threshold, s.crump_rule) == (0.1, "rule of thumb")
    assert np.isnan(s.ess.at["ATE", "treated"])


def test_check_overlap_warns_with_numbers_remedy_and_citation():
    e, w = _poor(seed=6)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s = check_overlap(e, w, clip=1e-3)
    hits = [r for r in rec if issubclass(r.category, OverlapWarning)]
    assert len(hits) == 1 and hits[0].filename == __file__
    msg = str(hits[0].message)
    tail = (e < 0.01) | (e > 0.99)
    assert f"{tail.mean():.1%} of units ({int(tail.sum())} of {len(e)}" in msg
    assert f"observed range {e.min():.3g}-{e.max():.3g}" in msg
    assert f"alpha = {s.crump_threshold:.3f}" in msg and f"drop {s.n_trimmed} units" in msg
    assert "ATO" in msg and "Crump, Hotz, Imbens and Mitnik (2009)" in msg
    assert f"{s.ess.at['ATE', 'treated']:.1f} of {s.n_treated} treated" in msg


def test_check_overlap_silent_when_overlap_is_fine():
    e, w = _good(seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = check_overlap(e, w)
    assert s.n_trimmed == 0


def test_check_overlap_depends_on_the_estimand():
    # e near 0 only: a problem for the ATE (1/e), not for the ATT (e/(1-e)) or the ATO
    rng = np.random.default_rng(8)
    e = np.concatenate([rng.uniform(0.001, 0.009, 400), rng.uniform(0.2, 0.8, 1600)])
    w = _draw(e, 9)
    with pytest.warns(OverlapWarning, match="near 0 or 1"):
        check_overlap(e, w, estimand="ATE")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_overlap(e, w, estimand="ATT")
        check_overlap(e, w, estimand="ATO")
    with pytest.warns(OverlapWarning, match="near 1"):
        check_overlap(1 - e, 1 - w, estimand="ATT")
    # the share threshold decides
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_overlap(e, w, estimand="ATE", max_share=0.25)


def test_bad_inputs():
    with pytest.raises(InputError, match="lie in"):
        overlap_summary(np.array([0.2, 1.2]), np.array([0, 1]))
    with pytest.raises(InputError, match="both arms"):
        overlap_summary(np.array([0.2, 0.3]), np.array([1, 1]))
    with pytest.raises(InputError, match="estimand"):
        check_overlap(np.array([0.2, 0.3]), np.array([0, 1]), estimand="ATX")
