"""Prediction-powered inference (PPI) for means and treatment effects on predicted outcomes.

One sample (Angelopoulos, Bates, Fannjiang, Jordan and Zrnic 2023, "Prediction-powered
inference", Science 382, 669-674; ``ppi_py.ppi_mean_pointestimate`` / ``ppi_mean_ci``): with n
labelled pairs (Y_i, P_i) and N unlabelled predictions P~_j::

    theta = lam mean_j P~_j + mean_i (Y_i - lam P_i)
    se    = sqrt( sd(lam P~)^2 / N + sd(Y - lam P)^2 / n )        (sd with ddof = 0)

lam = 1 is classical PPI; other values are PPI++'s power tuning (Angelopoulos, Duchi and Zrnic
2023), given here as a number. :func:`ppi_mean` reproduces ``ppi_py`` to rounding.

Two arms (eocausal's extension; ppi_py implements the one-sample case): labels are known on a
subset L of the trial units (missing completely at random within the trial). For an estimator
tau(.) that is a weighting estimator of a contrast (difference in means, Hajek or
Horvitz-Thompson IPW)::

    tau_PPI = tau_all(lam P) + tau_L(Y - lam P)

i.e. per arm, the (weighted) mean of lam P over all N units of the arm plus the (weighted) mean
of the rectifier Y - lam P over the labelled units of the arm. Its influence function combines
both parts, a_i (all units) and b_i (labelled units), as c_i = a_i / N + 1{i in L} b_i / n_L,
so Var = sum_g (sum_{i in g} c_i)^2 (iid: g = i). Because the labelled units are also among
all units, this includes the covariance term 2 sum_{i in L} a_i b_i / (N n_L), which ppi_py's
formula (disjoint labelled and unlabelled samples) leaves out; it is of order 1/N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.base import BaseEstimator

from eocausal.debias.calibration import _check_fitted, check_predictions
from eocausal.errors import InputError, NotEstimableError
from eocausal.estimators.weighting import difference_in_means, hajek, horvitz_thompson

PPI_METHODS = ("dim", "ipw-hajek", "ipw-ht")


@dataclass(frozen=True)
class PPIResult:
    """A PPI estimate, its SE and normal confidence interval."""

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float


def ppi_mean(labels, predictions_labelled, predictions_unlabelled, *, lam: float = 1.0,
             alpha: float = 0.05) -> PPIResult:
    """Prediction-powered estimate and interval of a mean (one sample, as ``ppi_py``).

    Parameters
    ----------
    labels, predictions_labelled : arrays (n,)
        Gold-standard labels and the predictions for the same units.
    predictions_unlabelled : array (N,)
        Predictions for the units without labels.
    lam : float
        Power-tuning parameter; 1 is classical PPI, 0 the classical mean of the labels.
    alpha : float
        The interval covers with probability 1 - alpha.

    Returns
    -------
    PPIResult
        Same estimate and (two-sided) interval as ``ppi_py.ppi_mean_ci(..., lam=lam)``.
    """
    y = check_predictions(labels, "labels")
    p = check_predictions(predictions_labelled, "predictions_labelled")
    pu = check_predictions(predictions_unlabelled, "predictions_unlabelled")
    if len(y) != len(p):
        raise InputError(f"ppi_mean: {len(y)} labels but {len(p)} labelled predictions")
    if len(y) < 2 or len(pu) < 2:
        raise InputError("ppi_mean: need at least 2 labelled and 2 unlabelled units")
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha}: must lie in (0, 1)")
    est = float(np.mean(lam * pu) + np.mean(y - lam * p))
    se = math.sqrt(np.std(lam * pu) ** 2 / len(pu) + np.std(y - lam * p) ** 2 / len(y))
    z = stats.norm.ppf(1 - alpha / 2)
    return PPIResult(est, se, est - z * se, est + z * se)


def _contrast(x, w, e, method, estimand):
    if method == "dim":
        return difference_in_means(x, w)
    if method == "ipw-hajek":
        return hajek(x, w, e, estimand)
    if method == "ipw-ht":
        return horvitz_thompson(x, w, e, estimand)
    raise InputError(f"PPI method={method!r}: use one of {list(PPI_METHODS)}")


def ppi_effect(predictions, labels, w, *, e=None, method: str = "dim", estimand: str = "ATE",
               lam: float = 1.0, clusters=None) -> tuple[float, float, np.ndarray]:
    """Two-arm PPI effect, its SE and per-unit influence contributions.

    Parameters
    ----------
    predictions : array (n,)
        Predictions for every trial unit.
    labels : array (n,)
        Labels, NaN for the unlabelled units.
    w : array (n,)
        Binary treatment.
    e : array (n,), optional
        Propensities (needed for the IPW methods).
    method : {'dim', 'ipw-hajek', 'ipw-ht'}
    estimand : {'ATE', 'ATT', 'ATO'}
    lam : float
        Power-tuning parameter (1: classical PPI).
    clusters : array (n,), optional
        Cluster labels for a cluster-robust SE.

    Returns
    -------
    estimate, se, c
        ``c`` holds c_i (see the module docstring); se = sqrt(sum_g (sum_{i in g} c_i)^2).
    """
    p = check_predictions(predictions)
    y = np.asarray(labels, dtype=float).reshape(-1)
    w = np.asarray(w, dtype=float).reshape(-1)
    n = len(p)
    if y.shape != (n,) or w.shape != (n,):
        raise InputError(f"PPI: predictions ({n}), labels ({len(y)}) and treatment ({len(w)}) differ in length")
    if np.isinf(y).any():
        raise InputError("PPI labels: infinite values; use NaN for unlabelled units")
    lab = ~np.isnan(y)
    if method != "dim" and e is None:
        raise InputError(f"PPI method={method!r} needs propensities e; pass e= or use method='dim'")
    e = None if e is None else np.asarray(e, dtype=float).reshape(-1)
    for arm in (0, 1):
        k = int(np.sum(lab & (w == arm)))
        if k < 2:
            raise NotEstimableError(
                f"PPI: {k} labelled {'treated' if arm else 'control'} units; PPI needs at least 2 labels in "
                "each arm (label more trial units, or use the calibration-based corrections)")
        if np.sum(w == arm) == 0:
            raise NotEstimableError(f"PPI: no {'treated' if arm else 'control'} units")
    a = _contrast(lam * p, w, e, method, estimand)
    el = None if e is None else e[lab]
    b = _contrast(y[lab] - lam * p[lab], w[lab], el, method, estimand)
    c = a.psi / n
    c[lab] += b.psi / int(lab.sum())
    if clusters is None:
        se = float(math.sqrt(np.sum(c**2)))
    else:
        codes = np.unique(np.asarray(clusters), return_inverse=True)[1].reshape(-1)
        se = float(math.sqrt(np.sum(np.bincount(codes, weights=c) ** 2)))
    return float(a.estimate + b.estimate), se, c


class PPI(BaseEstimator):
    """Prediction-powered effect: predictions on all trial units, labels on some of them.

    Parameters
    ----------
    method : {'dim', 'ipw-hajek', 'ipw-ht'}
        The contrast estimator applied to both parts (see :func:`ppi_effect`).
    estimand : {'ATE', 'ATT', 'ATO'}
    lam : float
        Power-tuning parameter (1: classical PPI; Angelopoulos et al. 2023).
    alpha : float
        Confidence level 1 - alpha of ``confint``.

    Attributes
    ----------
    estimate_, std_error_ : float
    n_labelled_ : tuple (treated, control)
        Labelled units per arm.
    influence_ : ndarray (n,)
        Per-unit contributions c_i to the estimate's variance.

    References
    ----------
    Angelopoulos, Bates, Fannjiang, Jordan and Zrnic (2023), Science 382, 669-674.
    """

    def __init__(self, *, method: str = "dim", estimand: str = "ATE", lam: float = 1.0, alpha: float = 0.05):
        self.method = method
        self.estimand = estimand
        self.lam = lam
        self.alpha = alpha

    def fit(self, predictions, labels, w, *, e=None, clusters=None) -> "PPI":
        """Estimate the effect from predictions, partial labels (NaN = unlabelled) and treatment."""
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha={self.alpha}: must lie in (0, 1)")
        est, se, c = ppi_effect(predictions, labels, w, e=e, method=self.method, estimand=self.estimand,
                                lam=self.lam, clusters=clusters)
        y = np.asarray(labels, dtype=float)
        w = np.asarray(w, dtype=float)
        self.estimate_ = est
        self.std_error_ = se
        self.influence_ = c
        self.n_labelled_ = (int(np.sum(~np.isnan(y) & (w == 1))), int(np.sum(~np.isnan(y) & (w == 0))))
        return self

    def confint(self) -> tuple[float, float]:
        """Normal interval estimate -/+ z_{1 - alpha/2} se."""
        _check_fitted(self, "estimate_")
        z = stats.norm.ppf(1 - self.alpha / 2)
        return self.estimate_ - z * self.std_error_, self.estimate_ + z * self.std_error_
