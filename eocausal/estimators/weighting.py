"""Difference in means and inverse-probability weighting (Horvitz-Thompson and Hajek).

Formulas (docs/methods.md, Weighting estimators; Imbens and Rubin 2015, ch. 12; Hirano, Imbens
and Ridder 2003; Li, Morgan and Zaslavsky 2018 for overlap weights):

- Horvitz-Thompson, ATE: tau = (1/n) sum_i [W_i Y_i / e_i - (1 - W_i) Y_i / (1 - e_i)].
- Hajek (weights normalised within each arm):
  tau = sum_i w1_i Y_i / sum_i w1_i - sum_i w0_i Y_i / sum_i w0_i, with
  (w1, w0) = (W/e, (1-W)/(1-e)) for the ATE, (W, (1-W) e/(1-e)) for the ATT and
  (W (1-e), (1-W) e) for the ATO.

Each estimator returns its estimate and its influence function psi_i (mean zero), from which
:func:`se_from_psi` gives iid or cluster-robust standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eocausal._validation import check_clusters, check_propensity, check_treatment, check_vector
from eocausal.errors import InputError, NotEstimableError

__all__ = ["ESTIMANDS", "PointEstimate", "arm_weights", "stabilized_weights", "difference_in_means", "hajek",
           "horvitz_thompson", "se_from_psi", "effective_sample_size"]

#: Estimands of the weighting estimators.
ESTIMANDS = ("ATE", "ATT", "ATO")


@dataclass(frozen=True)
class PointEstimate:
    """An estimate, its influence function and the weights it used.

    ``jacobian``: b_i with mean 1, minus the derivative of unit i's estimating equation in the
    effect, so that m_i(t) = psi_i - (t - estimate) b_i linearises it; the wild bootstrap imposes
    a null value through it (:func:`eocausal.estimators.robust_se.wild_cluster_bootstrap`). The
    difference in means and Hajek are weighted least squares of Y on (1, W), with
    b_i = c_i (W_i - p_c)^2 / mean(c (W - p_c)^2) (weights c, p_c the weighted treated share);
    Horvitz-Thompson and AIPW are ratios of means, with b_i = d_i / mean(d) for their denominator d.
    """

    estimate: float
    psi: np.ndarray
    weights: np.ndarray | None = None
    jacobian: np.ndarray | None = None


def _wls_jacobian(w: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    """b_i of a (weighted) least-squares difference between arms: c_i (W_i - p_c)^2 / mean(c (W - p_c)^2)."""
    c = np.ones(len(w)) if c is None else np.asarray(c, dtype=float)
    p_c = np.sum(c * w) / np.sum(c)
    b = c * (w - p_c) ** 2
    return b / b.mean()


def arm_weights(w: np.ndarray, e: np.ndarray, estimand: str) -> tuple[np.ndarray, np.ndarray]:
    """Treated-arm and control-arm weights (w1, w0) for an estimand.

    With the tilting function h = 1 (ATE), e (ATT) or e(1 - e) (ATO) of Li, Morgan and Zaslavsky
    (2018, Table 1): w1 = W h / e and w0 = (1 - W) h / (1 - e).
    """
    if estimand == "ATE":
        return w / e, (1 - w) / (1 - e)
    if estimand == "ATT":
        return w.astype(float), (1 - w) * e / (1 - e)
    if estimand == "ATO":
        return w * (1 - e), (1 - w) * e
    raise InputError(f"estimand={estimand!r}: use one of {list(ESTIMANDS)}")


def _tilt(e: np.ndarray, estimand: str) -> np.ndarray:
    """h(e) of Li, Morgan and Zaslavsky (2018): 1 (ATE), e (ATT), e(1 - e) (ATO)."""
    return {"ATE": np.ones_like(e), "ATT": e, "ATO": e * (1 - e)}[estimand]


def _check(w, e, estimand: str, y=None):
    """Validated (w, e[, y]): 0/1 treatment; e inside (0, 1), or in [0, 1] for the ATO (weights stay finite)."""
    if estimand not in ESTIMANDS:
        raise InputError(f"estimand={estimand!r}: use one of {list(ESTIMANDS)}")
    w = check_treatment(w)
    e = check_propensity(e, n=len(w), open_interval=estimand != "ATO")
    if y is None:
        return w, e
    return w, e, check_vector(y, "outcome", len(w))


def stabilized_weights(w: np.ndarray, e: np.ndarray, estimand: str = "ATE") -> tuple[np.ndarray, np.ndarray]:
    """Stabilised arm weights (sw1, sw0): :func:`arm_weights` scaled so each arm sums to its size in expectation.

    With p = mean(W) and the tilting function h = 1 (ATE), e (ATT), e(1 - e) (ATO) of Li, Morgan
    and Zaslavsky (2018, Table 1)::

        sw1_i = W_i       p       h_i / (e_i       mean(h))
        sw0_i = (1 - W_i) (1 - p) h_i / ((1 - e_i) mean(h))

    - ATE (h = 1): sw1 = P(W=1) / e, sw0 = P(W=0) / (1 - e), the stabilised weights of Robins,
      Hernan and Brumback (2000) for a point treatment.
    - ATT (h = e): sw1 = p / mean(e) (about 1), sw0 = (1 - p) e / ((1 - e) mean(e)): the odds
      ("standardised mortality ratio") weights of Sato and Matsuyama (2003), stabilised the same
      way (with mean(e) estimating P(W=1)).
    - ATO (h = e(1 - e)): sw1 = p (1 - e) / mean(e(1 - e)), sw0 = (1 - p) e / mean(e(1 - e)),
      the overlap weights of Li, Morgan and Zaslavsky (2018) on the same scale.

    Since E[W h / e] = E[(1 - W) h / (1 - e)] = E[h], each arm's weights sum to n p and
    n (1 - p), its size, in expectation (not exactly). Each arm is rescaled by a constant, so Hajek
    estimates and per-arm effective sample sizes are unchanged; Horvitz-Thompson with stabilised
    weights is not an unbiased estimator, so eocausal's HT rows use the unstabilised weights.

    References
    ----------
    Robins, J. M., Hernan, M. A. and Brumback, B. (2000). Marginal structural models and causal
    inference in epidemiology. Epidemiology 11(5), 550-560.
    Sato, T. and Matsuyama, Y. (2003). Marginal structural models as a tool for standardization.
    Epidemiology 14(6), 680-686.
    Li, F., Morgan, K. L. and Zaslavsky, A. M. (2018). Balancing covariates via propensity score
    weighting. Journal of the American Statistical Association 113(521), 390-400.
    """
    w, e = _check(w, e, estimand)
    w1, w0 = arm_weights(w, e, estimand)
    p1 = w.mean()
    hbar = _tilt(e, estimand).mean()
    return w1 * (p1 / hbar), w0 * ((1 - p1) / hbar)


def difference_in_means(y: np.ndarray, w: np.ndarray) -> PointEstimate:
    """Unadjusted difference in means, with its influence function."""
    y = check_vector(y, "outcome")
    w = check_treatment(w, n=len(y))
    _both_arms(w)
    p1 = w.mean()
    mu1 = y[w == 1].mean()
    mu0 = y[w == 0].mean()
    psi = w * (y - mu1) / p1 - (1 - w) * (y - mu0) / (1 - p1)
    return PointEstimate(mu1 - mu0, psi, jacobian=_wls_jacobian(w))


def _both_arms(w: np.ndarray) -> None:
    n1 = w.sum()
    if n1 == 0 or n1 == len(w):
        raise NotEstimableError(f"treatment: no {'treated' if n1 == 0 else 'control'} units; the effect is not "
                                "estimable")


def hajek(y: np.ndarray, w: np.ndarray, e: np.ndarray, estimand: str = "ATE") -> PointEstimate:
    """Hajek (self-normalised) IPW estimate for ATE, ATT or ATO."""
    w, e, y = _check(w, e, estimand, y)
    _both_arms(w)
    w1, w0 = arm_weights(w, e, estimand)
    mu1 = np.sum(w1 * y) / np.sum(w1)
    mu0 = np.sum(w0 * y) / np.sum(w0)
    psi = w1 * (y - mu1) / w1.mean() - w0 * (y - mu0) / w0.mean()
    return PointEstimate(mu1 - mu0, psi, w1 + w0, _wls_jacobian(w, w1 + w0))


def horvitz_thompson(y: np.ndarray, w: np.ndarray, e: np.ndarray, estimand: str = "ATE") -> PointEstimate:
    """Horvitz-Thompson IPW estimate: arm totals divided by the target population size.

    The target size is n for the ATE, the number of treated units for the ATT and
    sum_i e_i (1 - e_i) for the ATO.
    """
    w, e, y = _check(w, e, estimand, y)
    _both_arms(w)
    w1, w0 = arm_weights(w, e, estimand)
    if estimand == "ATE":
        h = w1 * y - w0 * y
        tau = h.mean()
        psi = h - tau
        d = np.ones_like(y)
    else:
        # ratio of means: tau = mean(h) / mean(d), psi = (h - tau d) / mean(d)
        h = w1 * y - w0 * y
        d = w if estimand == "ATT" else e * (1 - e)
        tau = h.sum() / d.sum()
        psi = (h - tau * d) / d.mean()
    return PointEstimate(tau, psi, w1 + w0, d / d.mean())


def se_from_psi(psi: np.ndarray, clusters: np.ndarray | None = None) -> tuple[float, int | None]:
    """Standard error of a mean-of-influence-function estimator.

    iid: sqrt(sum psi_i^2) / n. Clustered (docs/methods.md, Standard errors):
    sqrt(sum_g (sum_{i in g} psi_i)^2) / n. Returns (se, number of clusters or None).
    """
    psi = check_vector(psi, "psi")
    n = len(psi)
    psi = psi - psi.mean()
    codes = check_clusters(clusters, n)
    if codes is None:
        return float(np.sqrt(np.sum(psi**2)) / n), None
    sums = np.bincount(codes, weights=psi)
    return float(np.sqrt(np.sum(sums**2)) / n), int(len(sums))


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2."""
    s2 = np.sum(weights**2)
    return float(np.sum(weights) ** 2 / s2) if s2 > 0 else 0.0
