"""Sensitivity: E-values (published examples), Cinelli-Hazlett robustness values (sensemakr's Darfur
example) and DML bias bounds (DoubleML's ``DoubleMLIRM.sensitivity_analysis`` on the same nuisances).

DoubleML settings as in tests/estimators/test_aipw.py: same folds (``set_sample_splitting``),
``LinearRegression`` and unpenalised ``LogisticRegression``, ``normalize_ipw=False``, the same clip.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit
from sklearn.linear_model import LinearRegression, LogisticRegression

from eocausal.diagnostics.sensitivity import dml_sensitivity, e_value, robustness_value
from eocausal.errors import EocausalWarning, InputError
from eocausal.estimators import aipw as A
from eocausal.data.folds import grouped_folds
from eocausal.estimators.weighting import se_from_psi

LOGIT = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=1000)  # as native Newton


# ----------------------------------------------------------------------------- E-value
def test_e_value_published_example():
    # VanderWeele and Ding (2017), Annals of Internal Medicine 167, 268-274: RR 3.9 (95% CI 1.8 to 8.7)
    ev = e_value(3.9, 1.8, 8.7, kind="rr")
    assert ev.point == pytest.approx(7.26, abs=0.005)
    assert ev.ci == pytest.approx(3.0, abs=1e-12)  # 1.8 + sqrt(1.8 * 0.8) = 3 exactly


def test_e_value_protective_estimate_is_inverted():
    ev = e_value(1 / 3.9, 1 / 8.7, 1 / 1.8, kind="rr")
    assert ev.point == pytest.approx(e_value(3.9, kind="rr").point, rel=1e-12)
    assert ev.ci == pytest.approx(3.0, rel=1e-12)  # the upper limit is the one closest to the null


def test_e_value_is_one_when_the_interval_covers_the_null():
    assert e_value(1.4, 0.9, 2.1, kind="rr").ci == 1.0
    assert e_value(0.3, -0.1, 0.7, sd=1.0).ci == 1.0
    assert math.isnan(e_value(0.3, sd=1.0).ci)


def test_e_value_for_a_difference_in_means():
    # d = 0.5 / 2 = 0.25; RR = exp(0.91 d)
    ev = e_value(0.5, 0.1, 0.9, sd=2.0)
    rr = math.exp(0.91 * 0.25)
    assert ev.rr == pytest.approx(rr, rel=1e-12)
    assert ev.point == pytest.approx(rr + math.sqrt(rr * (rr - 1)), rel=1e-12)
    rr_lo = math.exp(0.91 * 0.1 / 2.0)
    assert ev.ci == pytest.approx(rr_lo + math.sqrt(rr_lo * (rr_lo - 1)), rel=1e-12)
    # VanderWeele and Ding's limit exp(0.91 d - 1.78 se_d) is the same as converting the limit
    d, se_d = 0.5, 0.1
    lo = d - 1.96 * se_d
    assert math.exp(0.91 * lo) == pytest.approx(math.exp(0.91 * d - 1.78 * se_d), rel=2e-3)
    # the E-value grows with the standardized effect, so a larger sd gives a smaller E-value
    assert e_value(0.5, sd=4.0).point < ev.point
    # a negative difference gives the same E-value as its mirror image
    assert e_value(-0.5, -0.9, -0.1, sd=2.0).ci == pytest.approx(ev.ci, rel=1e-12)


def test_e_value_common_outcome_odds_ratio():
    ev = e_value(4.0, kind="or")
    assert ev.rr == 2.0 and ev.point == pytest.approx(2 + math.sqrt(2), rel=1e-12)


def test_e_value_bad_inputs():
    with pytest.raises(InputError, match="sd"):
        e_value(0.5, 0.1, 0.9)
    with pytest.raises(InputError, match="positive"):
        e_value(-1.0, kind="rr")
    with pytest.raises(InputError, match="in order"):
        e_value(0.5, 0.9, 0.1, sd=1.0)
    with pytest.raises(InputError, match="kind"):
        e_value(0.5, sd=1.0, kind="hr")


# ----------------------------------------------------------------------------- robustness value
def test_robustness_value_darfur():
    # sensemakr's documented Darfur example (Cinelli and Hazlett 2020, Table 1): directlyharmed
    rv = robustness_value(0.09731582, 0.02325654, 783, alpha=0.05)
    assert rv.rv_q == pytest.approx(0.1388, abs=5e-5)       # 13.9%
    assert rv.rv_q_alpha == pytest.approx(0.0763, abs=5e-5)  # 7.6%
    assert rv.partial_r2 == pytest.approx(0.021873, abs=5e-7)  # sensemakr partial_r2(t=4.18445, dof=783)
    assert rv.t_stat == pytest.approx(4.18445, abs=5e-5)
    assert math.isnan(robustness_value(0.09731582, 0.02325654, 783).rv_q_alpha)


def test_robustness_value_q_and_branches():
    half = robustness_value(0.09731582, 0.02325654, 783, q=0.5)
    full = robustness_value(0.09731582, 0.02325654, 783)
    assert half.rv_q < full.rv_q
    f = 0.5 * 4.184449 / math.sqrt(783)
    assert half.rv_q == pytest.approx(0.5 * (math.sqrt(f**4 + 4 * f**2) - f**2), rel=1e-5)
    # not significant: RV_{q,alpha} = 0
    assert robustness_value(0.01, 0.02, 500, alpha=0.05).rv_q_alpha == 0.0
    # extreme case f_q > 1 / f*: (f_q^2 - f*^2) / (1 + f_q^2), not the binding-constraint formula
    est, se, dof = 50.0, 1.0, 10
    fq = 50 / math.sqrt(10)
    fc = abs(stats.t.ppf(0.025, 9)) / 3
    assert fq > 1 / fc
    rv = robustness_value(est, se, dof, alpha=0.05)
    assert rv.rv_q_alpha == pytest.approx((fq**2 - fc**2) / (1 + fq**2), rel=1e-12)
    fqa = fq - fc
    assert abs(rv.rv_q_alpha - 0.5 * (math.sqrt(fqa**4 + 4 * fqa**2) - fqa**2)) > 1e-3
    with pytest.raises(InputError, match="std_error"):
        robustness_value(1.0, 0.0, 100)
    with pytest.raises(InputError, match="dof"):
        robustness_value(1.0, 0.5, 1)


# ----------------------------------------------------------------------------- DML bounds
def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, 3))
    e = expit(0.2 + V @ np.r_[1.0, -0.8, 0.0])
    w = (rng.uniform(size=n) < e).astype(float)
    y = 1 + 0.4 * w + V @ np.r_[1.5, 1.0, 0.0] + rng.normal(size=n)
    return V, y, w


def _smpls(fold):
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in np.unique(fold)]


@pytest.mark.parametrize("score,estimand", [("ATE", "ATE"), ("ATTE", "ATT")])
def test_dml_sensitivity_equals_doubleml(score, estimand):
    dml = pytest.importorskip("doubleml")
    from doubleml.utils import PSProcessorConfig

    V, y, w = _data()
    fold = grouped_folds(len(y), None, 5, 0, stratify=w)
    fit = A.crossfit_aipw(V, y, w, fold, propensity=LOGIT, outcome_model=LinearRegression(), estimand=estimand,
                          clip=0.01)
    m = dml.DoubleMLIRM(dml.DoubleMLData.from_arrays(V, y, w), LinearRegression(), LOGIT, n_folds=5,
                        score=score, normalize_ipw=False, draw_sample_splitting=False,
                        ps_processor_config=PSProcessorConfig(clipping_threshold=0.01))
    m.set_sample_splitting(_smpls(fold)).fit()
    m.sensitivity_analysis(cf_y=0.04, cf_d=0.03, rho=1.0, level=0.95)
    ref = m.sensitivity_params
    s = dml_sensitivity(y, w, fit.e[0], fit.mu0[0], fit.mu1[0], estimand=estimand, cf_y=0.04, cf_d=0.03)
    assert s.estimate == pytest.approx(m.coef[0], rel=1e-10)
    assert s.std_error == pytest.approx(m.se[0], rel=1e-10)
    assert s.sigma2 == pytest.approx(m.sensitivity_elements["sigma2"].item(), rel=1e-10)
    assert s.nu2 == pytest.approx(m.sensitivity_elements["nu2"].item(), rel=1e-10)
    assert s.theta_lower == pytest.approx(ref["theta"]["lower"][0], rel=1e-10)
    assert s.theta_upper == pytest.approx(ref["theta"]["upper"][0], rel=1e-10)
    # DoubleML finds RV with a bounded scalar search (xatol 1e-5); ours is closed form
    assert s.rv == pytest.approx(ref["rv"][0], abs=1e-4)
    # DoubleML 0.11 pairs the bound SEs the other way round (its scaled score is minus the
    # influence function); the two SEs themselves agree
    assert sorted([s.se_lower, s.se_upper]) == pytest.approx(sorted([ref["se"]["lower"][0], ref["se"]["upper"][0]]),
                                                            rel=1e-10)
    assert s.se_lower == pytest.approx(ref["se"]["upper"][0], rel=1e-10)


def test_dml_sensitivity_hand_formulas():
    V, y, w = _data(seed=1)
    fold = grouped_folds(len(y), None, 5, 1, stratify=w)
    fit = A.crossfit_aipw(V, y, w, fold, propensity=LOGIT, outcome_model=LinearRegression(), clip=0.01)
    e, mu0, mu1 = fit.e[0], fit.mu0[0], fit.mu1[0]
    s = dml_sensitivity(y, w, e, mu0, mu1, cf_y=0.1, cf_d=0.05, rho=0.8, alpha=0.1)
    g = np.where(w == 1, mu1, mu0)
    alpha = w / e - (1 - w) / (1 - e)
    sigma2 = np.mean((y - g) ** 2)
    nu2 = np.mean(2 * (1 / e + 1 / (1 - e)) - alpha**2)
    assert nu2 > 0 and s.nu2_rule == "debiased"
    assert s.nu2 == pytest.approx(nu2, rel=1e-12)
    bound = 0.8 * math.sqrt(0.1 * 0.05 / 0.95) * math.sqrt(sigma2 * nu2)
    assert s.bias_bound == pytest.approx(bound, rel=1e-12)
    assert (s.theta_lower, s.theta_upper) == pytest.approx((s.estimate - bound, s.estimate + bound), rel=1e-12)
    # the delta-method SE of the lower bound
    c = bound / s.max_bias
    psi_S = (sigma2 * (2 * (1 / e + 1 / (1 - e)) - alpha**2 - nu2) + nu2 * ((y - g) ** 2 - sigma2)) / (2 * s.max_bias)
    phi = mu1 - mu0 + alpha * (y - g)
    se_lo = np.sqrt(np.mean((phi - phi.mean() - c * psi_S) ** 2) / len(y))
    assert s.se_lower == pytest.approx(se_lo, rel=1e-10)
    assert s.ci_lower == pytest.approx(s.theta_lower - stats.norm.ppf(0.9) * se_lo, rel=1e-10)
    # RV: the bound with cf_y = cf_d = RV reaches zero
    rv = s.rv
    assert 0 < rv < 1
    assert s.estimate - 0.8 * rv / math.sqrt(1 - rv) * s.max_bias == pytest.approx(0.0, abs=1e-10)
    # RVa: the confidence bound with cf_y = cf_d = RVa reaches zero, and RVa < RV
    at = dml_sensitivity(y, w, e, mu0, mu1, cf_y=s.rva, cf_d=s.rva, rho=0.8, alpha=0.1)
    assert at.ci_lower == pytest.approx(0.0, abs=1e-8)
    assert 0 < s.rva < s.rv
    # no confounding: bounds collapse onto the estimate
    none = dml_sensitivity(y, w, e, mu0, mu1, cf_y=0.0, cf_d=0.0)
    assert none.theta_lower == none.theta_upper == none.estimate


def test_dml_sensitivity_clustered_se():
    V, y, w = _data(seed=2)
    clusters = np.repeat(np.arange(len(y) // 6), 6)
    fold = grouped_folds(len(y), clusters, 5, 2, stratify=w)
    fit = A.crossfit_aipw(V, y, w, fold, propensity=LOGIT, outcome_model=LinearRegression(), clip=0.01)
    s = dml_sensitivity(y, w, fit.e[0], fit.mu0[0], fit.mu1[0], clusters=clusters)
    iid = dml_sensitivity(y, w, fit.e[0], fit.mu0[0], fit.mu1[0])
    pe = A.aipw(y, w, fit.e[0], fit.mu0[0], fit.mu1[0])
    assert s.std_error == pytest.approx(se_from_psi(pe.psi, clusters)[0], rel=1e-12)
    assert s.std_error != pytest.approx(iid.std_error, rel=1e-6)
    assert s.theta_lower == iid.theta_lower  # clustering changes SEs, not the bounds


def test_dml_sensitivity_falls_back_to_plugin_nu2_with_a_warning():
    rng = np.random.default_rng(3)
    n = 400
    w = (np.arange(n) % 2).astype(float)
    e = np.where(w == 1, 0.02, 0.5)  # treated units with tiny propensities: debiased nu2 < 0
    y = rng.normal(size=n) + w
    with pytest.warns(EocausalWarning, match="not positive"):
        s = dml_sensitivity(y, w, e, np.zeros(n), np.ones(n))
    alpha = w / e - (1 - w) / (1 - e)
    assert s.nu2_rule == "plug-in" and s.nu2 == pytest.approx(np.mean(alpha**2), rel=1e-12)


def test_dml_sensitivity_silent_and_validates():
    V, y, w = _data(seed=4)
    e = np.full(len(y), w.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dml_sensitivity(y, w, e, np.zeros(len(y)), np.zeros(len(y)))
    with pytest.raises(InputError, match="cf_d"):
        dml_sensitivity(y, w, e, e, e, cf_d=1.0)
    with pytest.raises(InputError, match="estimand"):
        dml_sensitivity(y, w, e, e, e, estimand="ATO")
