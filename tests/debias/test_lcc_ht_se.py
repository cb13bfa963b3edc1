"""The delta-method SE of linear calibration (LCC) with Horvitz-Thompson (issue 15).

HT is not invariant to a shift of the outcome: HT(P - m) = HT(P) - m HT(1), and HT(1) =
mean(w/e - (1 - w)/(1 - e)) is 0 only in expectation. The old rule took the trial part of the
variance from HT(P) alone, dropping Var(HT(1)) and Cov(HT(P), HT(1)); how wrong that is depends on
where the predictions sit relative to the calibration intercept. In this design (mean outcome 50,
slope 0.8) the old SE/SD was 1.42, 0.73 and 0.15 for intercepts 20, -10 and -40 (1,000
replications). The trial part is now the influence function of HT on P - m.

Checks: (i) on one data set per intercept, the delta SE against a pairs bootstrap written here by
hand (calibration pairs and trial units resampled independently, LCC refitted, propensities fixed)
and against ``debiased_effects(se='bootstrap')``, within the bootstrap's own error; (ii) a
fixed-seed Monte Carlo at intercept -40: SE/SD within a band from the Monte Carlo error.
"""

from __future__ import annotations

import numpy as np
import pytest

from eocausal.debias import LinearCalibration
from eocausal.debias.effects import Contrast, lcc_delta_se
from eocausal.errors import InputError, NotFittedError
from eocausal.estimators.weighting import se_from_psi

TAU, K0 = 2.0, 0.8


def _draw(rng, m0, n=400, n_cal=300):
    """Trial: Y = 50 + 2 W + 5 x + N(0, 25), e = expit(0.6 x); map and calibration P = m0 + 0.8 Y + N(0, 9)."""
    x = rng.normal(size=n)
    e = 1 / (1 + np.exp(-0.6 * x))
    w = (rng.uniform(size=n) < e).astype(float)
    y = 50 + TAU * w + 5 * x + rng.normal(0, 5, n)
    p = m0 + K0 * y + rng.normal(0, 3, n)
    yc = 50 + rng.integers(0, 2, n_cal) + 5 * rng.normal(size=n_cal) + rng.normal(0, 5, n_cal)
    pc = m0 + K0 * yc + rng.normal(0, 3, n_cal)
    return p, w, e, pc, yc


def _lcc(pc, yc):
    return LinearCalibration().fit(pc, yc)


def _old_rule(lcc, con, p):
    """The rule before issue 15: the trial part from HT(P) alone."""
    naive = con.point(p)
    return lcc.delta_se(naive.estimate, se_from_psi(naive.psi)[0], con.const())[1]


def _bootstrap_by_hand(p, w, e, pc, yc, B, seed):
    """HT on (P - m_b)/k_b over B joint resamples, written without the package's estimators."""
    rng = np.random.default_rng(seed)
    h = w / e - (1 - w) / (1 - e)
    out = np.empty(B)
    for b in range(B):
        i = rng.integers(0, len(p), len(p))
        j = rng.integers(0, len(pc), len(pc))
        k_b, m_b = np.polyfit(yc[j], pc[j], 1)
        out[b] = np.mean(h[i] * (p[i] - m_b) / k_b)
    return out.std(ddof=1)


@pytest.mark.parametrize("m0,old_ratio", [(20.0, (1.2, 1.8)), (-10.0, (0.5, 0.85)), (-40.0, (0.05, 0.4))])
def test_delta_se_agrees_with_a_pairs_bootstrap(m0, old_ratio):
    p, w, e, pc, yc = _draw(np.random.default_rng(7), m0)
    lcc = _lcc(pc, yc)
    con = Contrast("ipw-ht", "ATE", w, e)
    tau, se = lcc_delta_se(lcc, con, p)
    # the point estimate is HT on the corrected outcome
    assert tau == pytest.approx(con.point(lcc.transform(p)).estimate, rel=1e-10)
    B = 2000
    se_boot = _bootstrap_by_hand(p, w, e, pc, yc, B, seed=11)
    # relative SD of a bootstrap SE ~ 1/sqrt(2B) = 1.6%; 4 of them plus 3% for the delta method's
    # own approximation at n = 400
    tol = 4 / np.sqrt(2 * B) + 0.03
    assert se / se_boot == pytest.approx(1.0, abs=tol)
    # the old rule is outside that band, on the side the Monte Carlo showed
    lo, hi = old_ratio
    assert lo < _old_rule(lcc, con, p) / se_boot < hi


def test_debiased_effects_if_and_bootstrap_agree_for_ht():
    import eocausal

    p, w, e, pc, yc = _draw(np.random.default_rng(8), -40.0)
    kw = dict(calibration=(pc, yc), debiasers=["lcc"], propensity_scores=e, methods=["ipw-ht"], seed=3)
    B = 1000
    boot = eocausal.debiased_effects(p, w, se="bootstrap", n_boot=B, **kw).tidy()
    delta = eocausal.debiased_effects(p, w, se="if", **kw).tidy()
    rb = boot[boot.outcome_type == "predicted+lcc"].iloc[0]
    rd = delta[delta.outcome_type == "predicted+lcc"].iloc[0]
    assert rd.se_type.startswith("delta")
    assert rd.estimate == pytest.approx(rb.estimate, rel=1e-10)
    lcc = _lcc(pc, yc)
    assert rd.std_error == pytest.approx(lcc_delta_se(lcc, Contrast("ipw-ht", "ATE", w, e), p)[1], rel=1e-8)
    assert rd.std_error / rb.std_error == pytest.approx(1.0, abs=4 / np.sqrt(2 * B) + 0.03)


def test_monte_carlo_se_over_sd_at_intercept_minus_40():
    """200 replications; the old rule's SE/SD here is about 0.15."""
    rng = np.random.default_rng(2024)
    R = 200
    est, se, old = np.empty(R), np.empty(R), np.empty(R)
    for r in range(R):
        p, w, e, pc, yc = _draw(rng, -40.0)
        lcc = _lcc(pc, yc)
        con = Contrast("ipw-ht", "ATE", w, e)
        est[r], se[r] = lcc_delta_se(lcc, con, p)
        old[r] = _old_rule(lcc, con, p)
    sd = est.std(ddof=1)
    # the SD of R normal draws has relative SE 1/sqrt(2(R-1)) = 0.05; mean SE varies far less.
    # band: 3 Monte Carlo SEs around 1 (0.85-1.15)
    band = 3 / np.sqrt(2 * (R - 1))
    assert se.mean() / sd == pytest.approx(1.0, abs=band)
    assert old.mean() / sd < 1 - 3 * band
    cover = np.mean(np.abs(est - TAU) <= 1.96 * se)
    assert cover == pytest.approx(0.95, abs=3 * np.sqrt(0.95 * 0.05 / R))


def test_shift_invariant_contrasts_keep_the_naive_trial_se():
    """For Hajek and DIM (c = 0) the trial part is the SE of the naive effect, as before."""
    p, w, e, pc, yc = _draw(np.random.default_rng(9), -40.0)
    lcc = _lcc(pc, yc)
    for con in (Contrast("ipw-hajek", "ATE", w, e), Contrast("dim", "ATE", w, e),
                Contrast("ipw-hajek", "ATT", w, e)):
        naive = con.point(p)
        expect = lcc.delta_se(naive.estimate, se_from_psi(naive.psi)[0])
        assert lcc_delta_se(lcc, con, p) == pytest.approx(expect, rel=1e-9)


def test_clusters_enter_the_trial_part():
    p, w, e, pc, yc = _draw(np.random.default_rng(10), 20.0)
    lcc = _lcc(pc, yc)
    con = Contrast("ipw-ht", "ATE", w, e)
    g = np.arange(len(p)) // 8
    centred = con.point(p - lcc.intercept_)
    c = con.const()
    tau = centred.estimate / lcc.slope_
    grad = np.array([-c / lcc.slope_, -tau / lcc.slope_])
    se0, G = se_from_psi(centred.psi, g)
    cr1 = se0 * np.sqrt(G / (G - 1))  # clustered trial part: CR1, as every clustered IF SE
    expect = np.sqrt(cr1**2 / lcc.slope_**2 + grad @ lcc.cov_ @ grad)
    assert lcc_delta_se(lcc, con, p, g)[1] == pytest.approx(expect, rel=1e-10)


def test_refuses_what_is_not_a_fitted_calibration():
    p, w, e, _, _ = _draw(np.random.default_rng(0), 0.0)
    con = Contrast("ipw-ht", "ATE", w, e)
    with pytest.raises(NotFittedError, match="not fitted"):
        lcc_delta_se(LinearCalibration(), con, p)
    with pytest.raises(InputError, match="LinearCalibration"):
        lcc_delta_se({"intercept": 1.0}, con, p)
