"""Sensitivity to unobserved confounding: E-values, robustness values and DML bias bounds.

Three tools, one question: how strong would an omitted confounder have to be to explain an
estimate away?

- :func:`e_value` (VanderWeele and Ding 2017): the minimum strength of association, on the risk
  ratio scale, that a confounder would need with both the treatment and the outcome to move the
  point estimate (or its confidence limit) to the null. For a difference in means it uses
  VanderWeele and Ding's approximation for a standardized mean difference.
- :func:`robustness_value` (Cinelli and Hazlett 2020): for a linear (OLS / fixed effects)
  adjustment, the partial R^2 that a confounder would need with both the treatment and the
  outcome to reduce the estimate by 100 q % (RV_q), or to make it statistically insignificant at
  level alpha (RV_{q,alpha}).
- :func:`dml_sensitivity` (Chernozhukov, Cinelli, Newey, Sharma and Syrgkanis 2022, "Long story
  short"): bounds on the bias of an AIPW / DML estimate from the nuisance residuals, for given
  confounding strengths (cf_y, cf_d), and the robustness value at which the bound reaches the
  null. It reproduces DoubleML's ``DoubleMLIRM.sensitivity_analysis``.

References
----------
VanderWeele, T. J. and Ding, P. (2017). Sensitivity analysis in observational research:
introducing the E-value. Annals of Internal Medicine 167(4), 268-274.
Cinelli, C. and Hazlett, C. (2020). Making sense of sensitivity: extending omitted variable bias.
Journal of the Royal Statistical Society B 82(1), 39-67.
Chernozhukov, V., Cinelli, C., Newey, W., Sharma, A. and Syrgkanis, V. (2022). Long story short:
omitted variable bias in causal machine learning. NBER Working Paper 30302.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from eocausal.errors import EocausalWarning, InputError
from eocausal.estimators.aipw import aipw
from eocausal.estimators.weighting import se_from_psi

#: VanderWeele and Ding's (2017) factor for a standardized mean difference d: RR ~ exp(0.91 d).
SMD_TO_LOG_RR = 0.91
E_VALUE_KINDS = ("diff", "rr", "or")


# ----------------------------------------------------------------------------- E-value
@dataclass(frozen=True)
class EValue:
    """E-values of a point estimate and of its confidence limit closest to the null.

    ``rr``, ``rr_low``, ``rr_high`` are the estimate and confidence limits on the (approximate)
    risk ratio scale the E-values were computed from.
    """

    point: float
    ci: float
    rr: float
    rr_low: float
    rr_high: float
    kind: str


def _e_of_rr(rr: float) -> float:
    """E = RR + sqrt(RR (RR - 1)) for RR >= 1; RR < 1 is inverted first."""
    if not np.isfinite(rr) or rr <= 0:
        return math.nan
    r = rr if rr >= 1 else 1.0 / rr
    return float(r + math.sqrt(r * (r - 1.0)))


def e_value(estimate: float, ci_low: float | None = None, ci_high: float | None = None, *,
            sd: float | None = None, kind: str = "diff") -> EValue:
    """E-value of an estimate and of its confidence interval (VanderWeele and Ding 2017).

    For a risk ratio RR >= 1::

        E = RR + sqrt(RR (RR - 1))

    and for RR < 1 the same formula applied to 1 / RR. The E-value of the interval is that of the
    limit closest to the null (the lower limit when RR >= 1, the upper one when RR < 1), and 1
    when the interval covers the null (RR = 1).

    Conversions to the risk ratio scale (VanderWeele and Ding 2017, Table 2):

    - ``kind='diff'`` (a difference in means, the eocausal default): with the standardized mean
      difference d = estimate / sd, RR ~ exp(0.91 d); the limits are converted the same way,
      exp(0.91 ci / sd) (VanderWeele and Ding's exp(0.91 d -/+ 1.78 s_d) with s_d the SE of d,
      as 1.78 = 0.91 x 1.96).
    - ``kind='rr'``: the estimate is a risk ratio (or an odds or hazard ratio of a rare outcome).
    - ``kind='or'``: an odds ratio of a common outcome (prevalence > 15%): RR ~ sqrt(OR).

    Parameters
    ----------
    estimate : float
        The point estimate (difference in means, or ratio).
    ci_low, ci_high : float, optional
        Confidence limits on the same scale; without them the interval's E-value is NaN.
    sd : float
        For ``kind='diff'``: the standard deviation of the outcome (e.g. ``np.std(y, ddof=1)``
        over the analysed units), which makes the difference a standardized effect size.
    kind : {'diff', 'rr', 'or'}

    Returns
    -------
    EValue

    Examples
    --------
    VanderWeele and Ding's (2017) example: RR = 3.9 with 95% CI 1.8 to 8.7 gives E-values 7.26
    and 3.0.

    >>> ev = e_value(3.9, 1.8, 8.7, kind="rr")
    >>> round(ev.point, 2), round(ev.ci, 2)
    (7.26, 3.0)
    """
    if kind not in E_VALUE_KINDS:
        raise InputError(f"kind={kind!r}: use one of {list(E_VALUE_KINDS)}")
    vals = [estimate, ci_low, ci_high]
    if ci_low is not None and ci_high is not None and ci_low > ci_high:
        raise InputError(f"ci_low={ci_low} > ci_high={ci_high}: pass the interval limits in order")
    if kind == "diff":
        if sd is None or not np.isfinite(sd) or sd <= 0:
            raise InputError(f"sd={sd!r}: a difference in means needs the outcome's standard deviation "
                             "(a positive number) to be converted to a risk ratio")
        rr = [math.exp(SMD_TO_LOG_RR * v / sd) if v is not None else math.nan for v in vals]
    else:
        if any(v is not None and v <= 0 for v in vals):
            raise InputError(f"kind={kind!r}: ratios must be positive, got {vals}")
        rr = [(v if kind == "rr" else math.sqrt(v)) if v is not None else math.nan for v in vals]
    r, lo, hi = rr
    point = _e_of_rr(r)
    if np.isnan(lo) or np.isnan(hi):
        ci = math.nan
    elif lo <= 1 <= hi:
        ci = 1.0
    else:
        ci = _e_of_rr(lo if r >= 1 else hi)
    return EValue(point=point, ci=ci, rr=r, rr_low=lo, rr_high=hi, kind=kind)


# ----------------------------------------------------------------------------- OLS robustness value
@dataclass(frozen=True)
class RobustnessValue:
    """Cinelli and Hazlett's (2020) robustness values of one coefficient.

    ``rv_q``: reduce the estimate by 100 q %; ``rv_q_alpha``: make it insignificant at level
    ``alpha`` (NaN when no alpha was given); ``partial_r2``: of the treatment with the outcome,
    t^2 / (t^2 + dof), the bound for a confounder explaining all residual outcome variance.
    """

    rv_q: float
    rv_q_alpha: float
    partial_r2: float
    t_stat: float
    dof: int
    q: float
    alpha: float | None


def robustness_value(estimate: float, std_error: float, dof: int, q: float = 1.0,
                     alpha: float | None = None) -> RobustnessValue:
    """Robustness values RV_q and RV_{q,alpha} of a linear regression coefficient.

    With t = estimate / std_error, f_q = q |t| / sqrt(dof) (the partial Cohen's f of the
    treatment, scaled by q) (Cinelli and Hazlett 2020, eq. 18-19)::

        RV_q = (sqrt(f_q^4 + 4 f_q^2) - f_q^2) / 2

    and, with the critical value f* = |t*_{alpha/2, dof-1}| / sqrt(dof - 1) and f_{q,alpha} =
    f_q - f* (Cinelli and Hazlett 2020, section 4.2 and footnote; sensemakr's
    ``robustness_value``, which this follows)::

        RV_{q,alpha} = 0                                     if f_{q,alpha} <= 0
                     = (f_q^2 - f*^2) / (1 + f_q^2)          if f_q > 1 / f*   (extreme case)
                     = (sqrt(f_{q,alpha}^4 + 4 f_{q,alpha}^2) - f_{q,alpha}^2) / 2   otherwise.

    These formulas hold for an OLS coefficient with its classical (iid) SE and residual degrees of
    freedom ``dof``; with a robust or clustered SE the t statistic no longer maps onto partial
    R^2 exactly, and the result is an approximation.

    Parameters
    ----------
    estimate, std_error : float
        The coefficient of the treatment and its SE.
    dof : int
        Residual degrees of freedom of the regression (n - number of coefficients, fixed effects
        included).
    q : float
        Fraction of the estimate to explain away (1: bring it to zero).
    alpha : float, optional
        Significance level for RV_{q,alpha}.

    Examples
    --------
    sensemakr's Darfur example (Cinelli and Hazlett 2020, Table 1): RV_q = 13.9%, RV_{q,0.05} = 7.6%.

    >>> rv = robustness_value(0.09731582, 0.02325654, 783, alpha=0.05)
    >>> round(rv.rv_q, 4), round(rv.rv_q_alpha, 4)
    (0.1388, 0.0763)
    """
    if not np.isfinite(std_error) or std_error <= 0:
        raise InputError(f"std_error={std_error}: must be a positive number")
    if not np.isfinite(estimate):
        raise InputError(f"estimate={estimate}: must be finite")
    if int(dof) != dof or dof < 2:
        raise InputError(f"dof={dof}: residual degrees of freedom must be an integer >= 2")
    if not q > 0:
        raise InputError(f"q={q}: must be positive")
    if alpha is not None and not 0 < alpha < 1:
        raise InputError(f"alpha={alpha}: must lie in (0, 1)")
    dof = int(dof)
    t = estimate / std_error
    fq = q * abs(t) / math.sqrt(dof)
    rv = 0.5 * (math.sqrt(fq**4 + 4 * fq**2) - fq**2)
    rva = math.nan
    if alpha is not None:
        f_crit = abs(stats.t.ppf(alpha / 2, dof - 1)) / math.sqrt(dof - 1)
        fqa = fq - f_crit
        if fqa <= 0:
            rva = 0.0
        elif fq > 1 / f_crit:
            rva = (fq**2 - f_crit**2) / (1 + fq**2)
        else:
            rva = 0.5 * (math.sqrt(fqa**4 + 4 * fqa**2) - fqa**2)
    return RobustnessValue(rv_q=float(rv), rv_q_alpha=float(rva), partial_r2=float(t**2 / (t**2 + dof)),
                           t_stat=float(t), dof=dof, q=float(q), alpha=alpha)


# ----------------------------------------------------------------------------- DML bias bounds
@dataclass(frozen=True)
class DMLSensitivity:
    """Omitted-variable-bias bounds of an AIPW / DML estimate (see :func:`dml_sensitivity`).

    ``theta_lower``/``theta_upper``: the estimate minus/plus the bias bound; ``ci_lower``/
    ``ci_upper``: one-sided 1 - ``alpha`` confidence bounds for them; ``rv``/``rva``: robustness
    values (cf_y = cf_d at which the bound, or the confidence bound, reaches ``null``).
    """

    estimate: float
    std_error: float
    estimand: str
    sigma2: float
    nu2: float
    max_bias: float
    cf_y: float
    cf_d: float
    rho: float
    alpha: float
    null: float
    bias_bound: float
    theta_lower: float
    theta_upper: float
    se_lower: float
    se_upper: float
    ci_lower: float
    ci_upper: float
    rv: float
    rva: float
    nu2_rule: str


def _dml_elements(y, w, e, mu0, mu1, estimand):
    """sigma2, nu2 and their influence functions, DoubleML's ``_sensitivity_element_est``."""
    resid = y - w * mu1 - (1 - w) * mu0
    s_el = resid**2
    if estimand == "ATE":
        rr = w / e - (1 - w) / (1 - e)
        m_alpha = 1 / e + 1 / (1 - e)
    else:  # ATT, DoubleML score='ATTE': weights W/p, weights_bar e/p
        p = w.mean()
        rr = (e / p) * (w / e - (1 - w) / (1 - e))
        m_alpha = (w / p) * (e / p) * (1 / e + 1 / (1 - e))
    return s_el, 2 * m_alpha - rr**2, rr


def dml_sensitivity(
    y,
    w,
    e,
    mu0,
    mu1,
    *,
    estimand: str = "ATE",
    cf_y: float = 0.03,
    cf_d: float = 0.03,
    rho: float = 1.0,
    alpha: float = 0.05,
    null: float = 0.0,
    clusters=None,
) -> DMLSensitivity:
    """Bias bounds and robustness values of an AIPW / DML estimate (Chernozhukov et al. 2022).

    With out-of-fold nuisances g = W mu1 + (1 - W) mu0 (outcome regression) and e (propensity),
    and the Riesz representer of the estimand

        ATE: alpha = W/e - (1-W)/(1-e),     ATT: alpha = (W - (1-W) e/(1-e)) / P(W=1),

    the bias of the "short" estimate theta_s (confounders V) relative to the "long" one theta
    (V and a latent A) is bounded by (Chernozhukov et al. 2022, Theorem 2 and Corollary 1)::

        |theta_s - theta|^2 <= rho^2 C_Y^2 C_D^2 S^2,    S^2 = sigma^2 nu^2,
        sigma^2 = E[(Y - g_s)^2],                         nu^2 = E[alpha_s^2],
        C_Y^2 = cf_y = E[(g - g_s)^2] / E[(Y - g_s)^2]   (share of the residual outcome
                                                          variation that A explains),
        C_D^2 = cf_d / (1 - cf_d),  cf_d = 1 - E[alpha_s^2] / E[alpha^2]   (share of the long
                                                          Riesz representer's variation A adds),

    with g_s, alpha_s the short (estimated) and g, alpha the long regression and representer.

    nu^2 is estimated, as DoubleML does, by its debiased moment mean(2 m(alpha) - alpha^2) with
    m(alpha) = 1/e + 1/(1-e) for the ATE (W e/(P^2 e (1 - e)) for the ATT); when that is not
    positive, by mean(alpha^2) (``nu2_rule`` says which, and an
    :class:`~eocausal.errors.EocausalWarning` is issued). Then

        theta_-/+ = theta -/+ |rho| sqrt(cf_y cf_d / (1 - cf_d)) S,

    their SEs come from the influence functions psi_theta -/+ |rho| C psi_S with psi_S =
    (sigma^2 psi_nu2 + nu^2 psi_sigma2) / (2 S), and the confidence bounds are theta_- - z se_-
    and theta_+ + z se_+ with z = Phi^{-1}(1 - alpha) (one-sided, as DoubleML's level = 1 - alpha).
    The robustness value RV is the common cf = cf_y = cf_d at which the bound reaches ``null``:
    with c = |theta - null| / (|rho| S), cf^2 / (1 - cf) = c^2, so

        RV = (sqrt(c^4 + 4 c^2) - c^2) / 2

    (the same form as Cinelli and Hazlett's RV); RVa is the cf at which the confidence bound
    reaches ``null`` (solved numerically; 0 when the interval already covers it).

    Parameters
    ----------
    y, w : arrays (n,)
        Outcome and binary treatment.
    e : array (n,)
        Out-of-fold propensities as used by the estimate (clipped), in (0, 1).
    mu0, mu1 : arrays (n,)
        Out-of-fold outcome regressions (both are needed, also for the ATT).
    estimand : {'ATE', 'ATT'}
    cf_y, cf_d : float in [0, 1)
        Confounding strengths: share of the residual outcome variation and gain in the Riesz
        representer's variation due to the latent confounder.
    rho : float in [-1, 1]
        Correlation of the two confounding terms; |rho| = 1 is the adversarial (worst) case.
    alpha : float
        The bounds are one-sided 1 - alpha confidence bounds (0.05: DoubleML's level 0.95).
    null : float
        The effect the robustness values are computed against.
    clusters : array (n,), optional
        Cluster labels; SEs then use sqrt(sum_g (sum_{i in g} psi_i)^2) / n (docs/methods.md,
        Standard errors) instead of DoubleML's iid formula.

    Returns
    -------
    DMLSensitivity

    Notes
    -----
    DoubleML 0.11 (``DoubleMLFramework._calc_sensitivity_analysis``) combines its scaled score,
    which is minus the influence function for IRM models, with ``psi_max_bias``; its SE of the
    lower bound then equals the one computed here for the upper bound and vice versa. The
    point bounds, the bias bound and RV agree exactly; the confidence bounds differ only through
    this pairing of the SEs.
    """
    if estimand not in ("ATE", "ATT"):
        raise InputError(f"estimand={estimand!r}: dml_sensitivity covers the AIPW 'ATE' and 'ATT'")
    for name, v in (("cf_y", cf_y), ("cf_d", cf_d)):
        if not 0 <= v < 1:
            raise InputError(f"{name}={v}: must lie in [0, 1)")
    if not -1 <= rho <= 1:
        raise InputError(f"rho={rho}: must lie in [-1, 1]")
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha}: must lie in (0, 1), e.g. 0.05 for 95% one-sided bounds")
    pe = aipw(y, w, e, mu0, mu1, estimand)  # validates the arrays
    y, w, e, mu0, mu1 = (np.asarray(a, dtype=float).reshape(-1) for a in (y, w, e, mu0, mu1))
    s_el, nu_el, rr = _dml_elements(y, w, e, mu0, mu1, estimand)
    sigma2, nu2, rule = float(s_el.mean()), float(nu_el.mean()), "debiased"
    if nu2 <= 0:
        warnings.warn(
            f"dml_sensitivity: the debiased estimate of nu^2 = E[alpha^2] is {nu2:.3g} (not positive), a "
            "sign of extreme propensities; using the plug-in mean(alpha^2) instead, as DoubleML does. "
            "Check overlap (eocausal.diagnostics.overlap.check_overlap). Chernozhukov et al. (2022), "
            "NBER WP 30302.", EocausalWarning, stacklevel=2)
        nu_el, rule = rr**2, "plug-in"
        nu2 = float(nu_el.mean())
    S = math.sqrt(sigma2 * nu2)
    psi_S = (sigma2 * (nu_el - nu2) + nu2 * (s_el - sigma2)) / (2 * S)
    psi = pe.psi
    theta = pe.estimate
    se, _ = se_from_psi(psi, clusters)
    z = stats.norm.ppf(1 - alpha)
    a_rho = abs(rho)

    def strength(cy, cd):
        return a_rho * math.sqrt(cy * cd / (1 - cd))

    def bounds(cy, cd):
        c = strength(cy, cd)
        lo, hi = theta - c * S, theta + c * S
        se_lo, _ = se_from_psi(psi - c * psi_S, clusters)
        se_hi, _ = se_from_psi(psi + c * psi_S, clusters)
        return lo, hi, se_lo, se_hi, lo - z * se_lo, hi + z * se_hi

    lo, hi, se_lo, se_hi, ci_lo, ci_hi = bounds(cf_y, cf_d)
    side = "upper" if null > theta else "lower"
    if a_rho == 0 or S == 0:
        rv = rva = math.nan
    else:
        c = abs(theta - null) / (a_rho * S)
        rv = 0.5 * (math.sqrt(c**4 + 4 * c**2) - c**2)

        def gap(cf):
            b = bounds(cf, cf)
            return (b[4] - null) if side == "lower" else (null - b[5])

        if gap(0.0) <= 0:
            rva = 0.0
        elif gap(1 - 1e-12) > 0:
            rva = 1.0
        else:
            rva = float(optimize.brentq(gap, 0.0, 1 - 1e-12, xtol=1e-12))
    return DMLSensitivity(
        estimate=float(theta), std_error=float(se), estimand=estimand, sigma2=sigma2, nu2=nu2,
        max_bias=S, cf_y=float(cf_y), cf_d=float(cf_d), rho=float(rho), alpha=float(alpha),
        null=float(null), bias_bound=strength(cf_y, cf_d) * S, theta_lower=lo, theta_upper=hi,
        se_lower=se_lo, se_upper=se_hi, ci_lower=ci_lo, ci_upper=ci_hi, rv=float(rv), rva=rva,
        nu2_rule=rule)
