"""Difference in means and inverse-probability weighting (Horvitz-Thompson and Hajek).

Formulas (METHODS.md section 1; Imbens and Rubin 2015, ch. 12; Hirano, Imbens and Ridder 2003;
Li, Morgan and Zaslavsky 2018 for overlap weights):

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

from eocausal.errors import InputError


@dataclass(frozen=True)
class PointEstimate:
    """An estimate, its influence function and the weights it used."""

    estimate: float
    psi: np.ndarray
    weights: np.ndarray | None = None


def arm_weights(w: np.ndarray, e: np.ndarray, estimand: str) -> tuple[np.ndarray, np.ndarray]:
    """Treated-arm and control-arm weights (w1, w0) for an estimand."""
    if estimand == "ATE":
        return w / e, (1 - w) / (1 - e)
    if estimand == "ATT":
        return w.astype(float), (1 - w) * e / (1 - e)
    if estimand == "ATO":
        return w * (1 - e), (1 - w) * e
    raise InputError(f"estimand={estimand!r}: use 'ATE', 'ATT' or 'ATO'")


def stabilized_weights(w: np.ndarray, e: np.ndarray, estimand: str = "ATE") -> tuple[np.ndarray, np.ndarray]:
    """Stabilised arm weights: :func:`arm_weights` times the arm's marginal share.

    ATE: P(W=1)/e for the treated and P(W=0)/(1-e) for the controls (Robins, Hernan and Brumback
    2000); ATT and ATO: the arm weights scaled so that each arm's weights average to its share.
    Each arm's weights then sum to about its size, which keeps weighted counts readable. Hajek
    estimates and effective sample sizes are unchanged (each arm's weights are rescaled by a
    constant); Horvitz-Thompson with stabilised weights is not an unbiased estimator of the ATE,
    so eocausal's HT rows use the unstabilised weights.
    """
    w = np.asarray(w, dtype=float)
    w1, w0 = arm_weights(w, e, estimand)
    p1 = w.mean()
    if estimand == "ATE":
        return p1 * w1, (1 - p1) * w0
    n = len(w)
    return w1 * (p1 * n / w1.sum()), w0 * ((1 - p1) * n / w0.sum())


def difference_in_means(y: np.ndarray, w: np.ndarray) -> PointEstimate:
    """Unadjusted difference in means, with its influence function."""
    p1 = w.mean()
    mu1 = y[w == 1].mean()
    mu0 = y[w == 0].mean()
    psi = w * (y - mu1) / p1 - (1 - w) * (y - mu0) / (1 - p1)
    return PointEstimate(mu1 - mu0, psi)


def hajek(y: np.ndarray, w: np.ndarray, e: np.ndarray, estimand: str = "ATE") -> PointEstimate:
    """Hajek (self-normalised) IPW estimate for ATE, ATT or ATO."""
    w1, w0 = arm_weights(w, e, estimand)
    mu1 = np.sum(w1 * y) / np.sum(w1)
    mu0 = np.sum(w0 * y) / np.sum(w0)
    psi = w1 * (y - mu1) / w1.mean() - w0 * (y - mu0) / w0.mean()
    return PointEstimate(mu1 - mu0, psi, w1 + w0)


def horvitz_thompson(y: np.ndarray, w: np.ndarray, e: np.ndarray, estimand: str = "ATE") -> PointEstimate:
    """Horvitz-Thompson IPW estimate: arm totals divided by the target population size.

    The target size is n for the ATE, the number of treated units for the ATT and
    sum_i e_i (1 - e_i) for the ATO.
    """
    w1, w0 = arm_weights(w, e, estimand)
    if estimand == "ATE":
        h = w1 * y - w0 * y
        tau = h.mean()
        psi = h - tau
    else:
        # ratio of means: tau = mean(h) / mean(d), psi = (h - tau d) / mean(d)
        h = w1 * y - w0 * y
        d = w if estimand == "ATT" else e * (1 - e)
        tau = h.sum() / d.sum()
        psi = (h - tau * d) / d.mean()
    return PointEstimate(tau, psi, w1 + w0)


def se_from_psi(psi: np.ndarray, clusters: np.ndarray | None = None) -> tuple[float, int | None]:
    """Standard error of a mean-of-influence-function estimator.

    iid: sqrt(sum psi_i^2) / n. Clustered (METHODS.md section 2):
    sqrt(sum_g (sum_{i in g} psi_i)^2) / n. Returns (se, number of clusters or None).
    """
    n = len(psi)
    psi = psi - psi.mean()
    if clusters is None:
        return float(np.sqrt(np.sum(psi**2)) / n), None
    codes = np.unique(clusters, return_inverse=True)[1]
    sums = np.bincount(codes, weights=psi)
    return float(np.sqrt(np.sum(sums**2)) / n), int(len(sums))


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2."""
    s2 = np.sum(weights**2)
    return float(np.sum(weights) ** 2 / s2) if s2 > 0 else 0.0
