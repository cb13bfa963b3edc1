"""Diagnostics for debiasing predicted outcomes: warnings that say what to do, and a
cross-validated comparison of the debiasers on the calibration set.

:func:`check_calibration` warns (:class:`~eocausal.errors.DebiasWarning`) when

- the calibration set is small (fewer than ``min_labels`` = 100 labels: sigma^2, the slope and
  the KDE are noisy, and the delta method leans on asymptotics);
- the calibration slope k (OLS of P on Y) is weak (< ``min_slope`` = 0.2: LCC divides by k, so
  noise is multiplied by 1/k; k <= 0 means the map does not track the truth);
- a large share (> ``max_outside`` = 5%) of the trial predictions lies outside the range of the
  calibration predictions, where LCC extrapolates a straight line and the KDE score of Tweedie
  rests on a few kernels.

:func:`compare_debiasers` builds pseudo-trials inside the calibration set, where the truth is
known: in each cross-validation fold the debiasers are fitted on the other folds, and the
held-out units are split into two pseudo-arms with selection on the label,
P(arm 1) = logistic(s (Y - mean Y) / sd Y) with s drawn uniformly from [-strength, strength].
Selecting on Y shifts the arms' mean outcome (the synthetic effect, known from the labels) the
way a treatment does, and the contrast of predictions is attenuated just as a treatment effect
is. Per debiaser it reports the bias, MAE and RMSE of the estimated against the true contrasts
and the slope of estimated on true contrasts (1 is unbiased); it recommends the smallest MAE.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone

from eocausal.debias.calibration import LinearCalibration, check_pair, check_predictions
from eocausal.debias.tweedie import Tweedie
from eocausal.errors import DebiasWarning, InputError

CITATION = "Pettersson, Jerzak and Daoud, AAAI-26"


@dataclass(frozen=True)
class CalibrationCheck:
    """Facts about a calibration set (and the trial predictions it must cover)."""

    n: int
    slope: float
    slope_se: float
    calibration_range: tuple[float, float]
    share_outside: float


def check_calibration(predictions, labels, trial_predictions=None, *, min_labels: int = 100,
                      min_slope: float = 0.2, max_outside: float = 0.05, stacklevel: int = 2) -> CalibrationCheck:
    """Check a calibration set and warn with the numbers and the remedy.

    Parameters
    ----------
    predictions, labels : arrays (n_cal,)
        Calibration predictions and labels.
    trial_predictions : array, optional
        Predictions of the trial units the corrections will be applied to.
    min_labels, min_slope, max_outside : thresholds of the warnings (see the module docstring).
    stacklevel : int
        Passed to ``warnings.warn`` (points at the caller's caller by default).

    Returns
    -------
    CalibrationCheck
    """
    p, y = check_pair(predictions, labels)
    n = len(p)
    yc = y - y.mean()
    k = float(yc @ (p - p.mean()) / (yc @ yc))
    resid = p - p.mean() - k * yc
    se_k = math.sqrt(float(np.sum(yc**2 * resid**2)) * n / (n - 2)) / float(yc @ yc)
    lo, hi = float(p.min()), float(p.max())
    share = 0.0
    if trial_predictions is not None:
        t = check_predictions(trial_predictions, "trial predictions")
        share = float(np.mean((t < lo) | (t > hi))) if len(t) else 0.0
    if n < min_labels:
        warnings.warn(
            f"calibration set: {n} labelled units (fewer than {min_labels}); the slope, sigma^2 and the "
            "density behind the corrections are noisy. The bootstrap SEs include this noise, but intervals "
            "will be wide and the delta method unreliable: add calibration labels, or label some trial units "
            f"and use 'ppi' ({CITATION})", DebiasWarning, stacklevel=stacklevel)
    if k < min_slope:
        warnings.warn(
            f"calibration slope: OLS of predictions on labels gives k = {k:.3f} (SE {se_k:.3f}), below "
            f"{min_slope}; the map barely tracks the truth and LCC multiplies noise by 1/k"
            + (" (k <= 0: LCC is refused)" if k <= 0 else f" = {1 / k:.1f}")
            + ". Use a better prediction model, or labels on trial units with 'ppi'",
            DebiasWarning, stacklevel=stacklevel)
    if share > max_outside:
        warnings.warn(
            f"calibration support: {100 * share:.1f}% of the trial predictions lie outside the calibration "
            f"range [{lo:.4g}, {hi:.4g}] (threshold {100 * max_outside:.0f}%); LCC extrapolates a straight line "
            "and Tweedie's score rests on few kernels there. Collect calibration labels that cover these "
            "predictions, or restrict the trials to the covered range", DebiasWarning, stacklevel=stacklevel)
    return CalibrationCheck(n=n, slope=k, slope_se=se_k, calibration_range=(lo, hi), share_outside=share)


@dataclass(frozen=True)
class DebiaserComparison:
    """Cross-validated performance of debiasers on pseudo-trials, and the recommended one."""

    table: pd.DataFrame
    recommended: str
    reason: str

    def __str__(self) -> str:
        return self.table.to_string(index=False, float_format=lambda v: f"{v:.4f}") + "\n" + self.reason


def compare_debiasers(predictions, labels, *, debiasers=("naive", "lcc", "tweedie"), folds: int = 5,
                      n_pseudo: int = 100, strength: float = 1.5, seed: int = 0) -> DebiaserComparison:
    """Cross-validated bias, MAE and slope of debiasers on pseudo-contrasts in the calibration set.

    Parameters
    ----------
    predictions, labels : arrays (n_cal,)
        The calibration set.
    debiasers : sequence
        Names ('naive', 'lcc', 'tweedie') or configured :class:`LinearCalibration` /
        :class:`Tweedie` instances.
    folds : int
        Cross-validation folds.
    n_pseudo : int
        Pseudo-trials per held-out fold.
    strength : float
        Largest selection strength s (see the module docstring).
    seed : int

    Returns
    -------
    DebiaserComparison
        ``table`` with columns debiaser, bias, mae, rmse, slope, n_pseudo; the recommendation
        (smallest MAE) and a sentence with the numbers.
    """
    p, y = check_pair(predictions, labels)
    n = len(p)
    if folds < 2 or n < 10 * folds:
        raise InputError(f"compare_debiasers: {n} calibration pairs are too few for {folds} folds "
                         f"(need at least {10 * folds}); use fewer folds")
    models = {}
    for d in debiasers:
        if isinstance(d, LinearCalibration):
            models["lcc"] = d
        elif isinstance(d, Tweedie):
            models["tweedie"] = d
        elif d in ("naive", "lcc", "tweedie"):
            models[d] = {"naive": None, "lcc": LinearCalibration(), "tweedie": Tweedie()}[d]
        else:
            raise InputError(f"debiasers: unknown {d!r}; use 'naive', 'lcc', 'tweedie' or an instance")
    rng = np.random.default_rng(seed)
    fold = rng.permutation(np.arange(n) % folds)
    est = {k: [] for k in models}
    truth = []
    failed = {k: "" for k in models}
    for f in range(folds):
        tr, te = fold != f, fold == f
        ys = y[te]
        s = rng.uniform(-strength, strength, size=n_pseudo)
        prob = 1 / (1 + np.exp(-s[:, None] * ((ys - y[tr].mean()) / y[tr].std())[None, :]))
        A = (rng.uniform(size=prob.shape) < prob).astype(float)
        ok = (A.sum(1) >= 2) & ((1 - A).sum(1) >= 2)
        A = A[ok]

        def contrast(v):
            return A @ v / A.sum(1) - (1 - A) @ v / (1 - A).sum(1)

        truth.append(contrast(ys))
        for name, model in models.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DebiasWarning)
                    v = p[te] if model is None else clone(model).fit(
                        p[tr], y[tr]).transform(p[te])
                est[name].append(contrast(v))
            except InputError as exc:
                failed[name] = str(exc)
                est[name].append(np.full(int(ok.sum()), np.nan))
    t = np.concatenate(truth)
    recs = []
    for name in models:
        e = np.concatenate(est[name])
        good = np.isfinite(e)
        if good.sum() < 2:
            recs.append(dict(debiaser=name, bias=np.nan, mae=np.nan, rmse=np.nan, slope=np.nan, n_pseudo=0))
            continue
        err = e[good] - t[good]
        tc = t[good] - t[good].mean()
        recs.append(dict(debiaser=name, bias=float(err.mean()), mae=float(np.abs(err).mean()),
                         rmse=float(np.sqrt(np.mean(err**2))), slope=float(tc @ e[good] / (tc @ tc)),
                         n_pseudo=int(good.sum())))
    table = pd.DataFrame(recs, columns=["debiaser", "bias", "mae", "rmse", "slope", "n_pseudo"])
    if table["mae"].notna().sum() == 0:
        raise InputError("compare_debiasers: no debiaser could be fitted on the calibration folds: "
                         + "; ".join(v for v in failed.values() if v))
    best = table.loc[table["mae"].idxmin()]
    reason = (f"Recommended: {best['debiaser']} (cross-validated MAE {best['mae']:.4g}, bias {best['bias']:.3g}, "
              f"slope of estimated on true pseudo-contrasts {best['slope']:.3f}; {folds} folds, "
              f"{int(best['n_pseudo'])} pseudo-trials).")
    return DebiaserComparison(table=table, recommended=str(best["debiaser"]), reason=reason)
