"""Linear calibration correction (LCC) of ML-predicted outcomes, and input checks shared by debiasers.

Formula (docs/methods.md, Debiasing predicted outcomes; Pettersson, Jerzak and Daoud, "One Map,
Many Trials", AAAI-26)::

    OLS on the calibration set:   P_cal = m + k Y_cal + e
    corrected outcome:            Y~ = (P - m) / k

A model trained with squared error predicts roughly E[Y | image]: its predictions move by only k
(< 1) per unit change of the truth, so an effect estimated on P is attenuated by k. Dividing by
k undoes this: for any estimator linear in the outcome with weights summing to zero across arms
(difference in means, Hajek, AIPW with an intercept), tau(Y~) = tau(P) / k.

Delta method (calibration and trial samples independent; ``cov_`` is the covariance of (m, k)).
For an estimator T linear in the outcome, tau_LCC = T((P - m)/k) = (T(P) - m c) / k with
c = T(1), the estimator applied to a constant outcome of 1 (0 for Hajek, difference in means and
AIPW with an intercept; for Horvitz-Thompson c = mean(w/e - (1 - w)/(1 - e)) at the ATE, which is
0 only in expectation and varies with the trial sample). Its influence function has a
trial part, the influence function of T on the centred predictions P - m (that is, of T(P) - m c
with both T(P) and c random), divided by k, and a calibration part, the gradient
g = (d tau/dm, d tau/dk) = (-c / k, -tau_LCC / k) times the influence function of (m, k)::

    Var(tau_LCC) = Var_trial(T(P - m)) / k^2 + g' cov g

    Var_trial(T(P - m)) = Var(T(P)) - 2 m Cov(T(P), c) + m^2 Var(c)

For c = 0 identically (difference in means, Hajek, AIPW) T(P - m) = T(P) and this is
Var(T(P))/k^2 + tau_LCC^2 Var(k)/k^2 = Var(tau_P)/k^2 + tau_P^2 Var(k)/k^4. For Horvitz-Thompson
the SE of T(P) alone is wrong, by a factor that depends on where the predictions sit: with Var(c)
and Cov(T(P), c) dropped, the mean SE over the SD of the estimates was 1.42, 0.73 and 0.15 for
calibration intercepts 20, -10 and -40 (95% coverage 0.995, 0.834, 0.221; the design of
tests/debias/test_lcc_ht_se.py, 1,000 replications); with them, 0.96 in all three (coverage 0.943).
:func:`eocausal.debias.effects.lcc_delta_se` computes it for a trial's contrast.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator

from eocausal._validation import align_pandas
from eocausal.errors import DebiasWarning, InputError, NotFittedError

COV_TYPES = ("HC1", "HC0", "nonrobust")


# ----------------------------------------------------------------------------- checks
def check_predictions(x, name: str = "predictions") -> np.ndarray:
    """A finite 1-D float array (a column vector (n, 1) is accepted)."""
    a = np.asarray(x, dtype=float)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of predictions, got shape {a.shape}")
    bad = int(np.sum(~np.isfinite(a)))
    if bad:
        raise InputError(f"{name}: {bad} of {len(a)} values are NaN or infinite; drop those units "
                         "(or fill the map's nodata) before debiasing")
    return a


def check_pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    """Calibration predictions and labels: same length, finite, not constant, at least 3 pairs.

    Two pandas Series are paired on their index (in any order); arrays are paired by position.
    """
    pair = align_pandas({"calibration predictions": predictions, "calibration labels": labels}, "calibration")
    predictions, labels = pair["calibration predictions"], pair["calibration labels"]
    p = check_predictions(predictions, "calibration predictions")
    y = check_predictions(labels, "calibration labels")
    if len(p) != len(y):
        raise InputError(f"calibration: {len(p)} predictions but {len(y)} labels; pass one label per "
                         "calibration prediction, in the same order")
    if len(p) < 3:
        raise InputError(f"calibration: {len(p)} pairs; a correction needs at least 3 (and 100 or more "
                         "for stable estimates)")
    if np.ptp(p) == 0:
        raise InputError(f"calibration predictions: all {len(p)} values equal {p[0]:.6g}; constant "
                         "predictions carry no information to calibrate")
    if np.ptp(y) == 0:
        raise InputError(f"calibration labels: all {len(y)} values equal {y[0]:.6g}; a calibration set "
                         "needs variation in the outcome")
    return p, y


def _check_fitted(est, attr: str) -> None:
    if not hasattr(est, attr):
        raise NotFittedError(f"{type(est).__name__} is not fitted yet: call fit(predictions, labels) first")


# ----------------------------------------------------------------------------- estimator
class LinearCalibration(BaseEstimator):
    """Linear calibration correction Y~ = (P - m) / k, with (m, k) from OLS of P on Y.

    Parameters
    ----------
    min_slope : float
        Warn (:class:`~eocausal.errors.DebiasWarning`) when the calibration slope k is below this;
        dividing by a small, noisy k amplifies noise. k <= 0 is always refused.
    cov_type : {'HC1', 'HC0', 'nonrobust'}
        Covariance of (m, k) for the delta method: heteroskedasticity-robust (HC1, default; what a
        pairs bootstrap of the calibration set estimates) or classical OLS.

    Attributes
    ----------
    intercept_ : float
        m.
    slope_ : float
        k.
    cov_ : ndarray (2, 2)
        Covariance of (m, k).
    n_calibration_ : int
        Number of calibration pairs.
    r2_ : float
        R^2 of the calibration regression.

    References
    ----------
    Pettersson, Jerzak and Daoud (AAAI-26); White (1980) for the HC covariance.
    """

    def __init__(self, *, min_slope: float = 0.2, cov_type: str = "HC1"):
        self.min_slope = min_slope
        self.cov_type = cov_type

    def fit(self, predictions, labels) -> "LinearCalibration":
        """OLS of the calibration predictions on their labels.

        Raises
        ------
        InputError
            Lengths differ, NaN, constant predictions or labels, or slope k <= 0.
        """
        p, y = check_pair(predictions, labels)
        if self.cov_type not in COV_TYPES:
            raise InputError(f"cov_type={self.cov_type!r}: use one of {list(COV_TYPES)}")
        n = len(p)
        X = np.column_stack([np.ones(n), y])
        XtX_inv = np.linalg.inv(X.T @ X)
        beta = XtX_inv @ (X.T @ p)
        resid = p - X @ beta
        m, k = float(beta[0]), float(beta[1])
        if not k > 0:
            raise InputError(
                f"calibration slope k = {k:.4g} <= 0: the predictions do not increase with the truth on the "
                f"{n} calibration units, so (P - m) / k would reverse effects. Check that predictions and "
                "labels are aligned and on the same scale; do not debias with this map")
        if self.cov_type == "nonrobust":
            cov = XtX_inv * float(resid @ resid) / (n - 2)
        else:
            meat = (X * (resid**2)[:, None]).T @ X
            cov = XtX_inv @ meat @ XtX_inv
            if self.cov_type == "HC1":
                cov *= n / (n - 2)
        if self.min_slope is not None and k < self.min_slope:
            warnings.warn(
                f"LinearCalibration: calibration slope k = {k:.3f} (SE {math.sqrt(cov[1, 1]):.3f}) is below "
                f"{self.min_slope}: the predictions barely track the truth and Y~ = (P - m)/k multiplies "
                f"their noise by {1 / k:.1f}. Use a better prediction model, more calibration labels, or "
                "PPI with labels on trial units (Pettersson, Jerzak and Daoud, AAAI-26)",
                DebiasWarning, stacklevel=2)
        self.intercept_ = m
        self.slope_ = k
        self.cov_ = cov
        self.n_calibration_ = n
        self.r2_ = float(1 - resid @ resid / np.sum((p - p.mean()) ** 2))
        return self

    def transform(self, predictions) -> np.ndarray:
        """Corrected outcomes Y~ = (P - m) / k."""
        _check_fitted(self, "slope_")
        return (check_predictions(predictions) - self.intercept_) / self.slope_

    def fit_transform(self, predictions, labels) -> np.ndarray:
        return self.fit(predictions, labels).transform(predictions)

    def delta_se(self, tau_naive: float, se_trial: float, c: float = 0.0) -> tuple[float, float]:
        """LCC effect and its delta-method SE from a naive effect on predictions.

        tau_LCC = (tau_naive - m c) / k and Var(tau_LCC) = se_trial^2 / k^2 + g' cov_ g with
        g = (-c / k, -tau_LCC / k); see the module docstring for the derivation.

        Parameters
        ----------
        tau_naive : float
            The effect estimated on the predictions P.
        se_trial : float
            The SE from trial sampling alone of the same estimator applied to the centred
            predictions P - m (m = ``intercept_``). For estimators that a constant shift of the
            outcome does not move (c = 0: difference in means, Hajek, AIPW with an intercept) it
            is the SE of ``tau_naive``; for Horvitz-Thompson it is not, because T(P - m) =
            T(P) - m T(1) and T(1) varies with the trial sample (use
            :func:`eocausal.debias.effects.lcc_delta_se`, which computes it).
        c : float
            The same estimator applied to a constant outcome of 1 (0 unless Horvitz-Thompson).
        """
        _check_fitted(self, "slope_")
        m, k = self.intercept_, self.slope_
        tau = (tau_naive - m * c) / k
        g = np.array([-c / k, -tau / k])
        var = se_trial**2 / k**2 + float(g @ self.cov_ @ g)
        return float(tau), float(math.sqrt(var))

    # ------------------------------------------------------------------ bootstrap support
    def resample(self, predictions, labels, counts: np.ndarray, targets=None) -> "LinearResamples":
        """Refit on B calibration resamples (rows of ``counts``: weights per calibration pair)."""
        p, y = check_pair(predictions, labels)
        C = np.asarray(counts, dtype=float)
        n = C.sum(1)
        my, mp = C @ y / n, C @ p / n
        syy = C @ (y * y) / n - my**2
        spy = C @ (p * y) / n - mp * my
        with np.errstate(divide="ignore", invalid="ignore"):
            k = spy / syy
        m = mp - k * my
        return LinearResamples(intercept=m, slope=k)


class LinearResamples:
    """LCC refitted on B calibration resamples: per-resample intercepts and slopes."""

    def __init__(self, intercept: np.ndarray, slope: np.ndarray):
        self.intercept = intercept
        self.slope = slope

    def transform(self, targets: np.ndarray, rows: slice, columns: np.ndarray | None = None) -> np.ndarray:
        z = targets if columns is None else targets[columns]
        return (z[None, :] - self.intercept[rows, None]) / self.slope[rows, None]
