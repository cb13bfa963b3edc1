"""The debiasing layer's part of effects on ML-predicted outcomes: inputs, debiasers, joint bootstrap.

:func:`eocausal.debiased_effects` (in :mod:`eocausal.debiased`) runs each trial through the same
per-trial core as :func:`eocausal.estimate`, with the corrected outcomes of the debiasers as the
outcomes; this module supplies what is particular to debiasing:

- reading the map, the trials table and the per-unit columns (:func:`read_map`, :func:`read_column`,
  :func:`read_trials`);
- the debiasers by name or instance (:func:`make_debiasers`) and the notes describing their fits
  (:func:`debias_notes`);
- :class:`Contrast`: one trial's contrast estimator (difference in means, Hajek or HT IPW, AIPW with
  least-squares outcome models on given folds) for a matrix of resampling counts, from which the
  joint bootstrap computes every replicate in one product (:func:`resample_counts`);
- :func:`lcc_delta_se`: the delta-method SE of an LCC row (``se='if'``), whose trial part is the
  influence function of the contrast on the centred predictions P - m (for Horvitz-Thompson this
  carries the sampling variance of HT(1)).

============== ===================== ===============================================
debiaser        outcome_type          outcome
============== ===================== ===============================================
'observed'      observed              the labels (every trial unit must have one)
'naive'         predicted             the predictions P
'lcc'           predicted+lcc         Y~ = (P - m)/k (:class:`LinearCalibration`)
'tweedie'       predicted+tweedie     Y~ = P - sigma^2 s(P) (:class:`Tweedie`)
'ppi'           ppi                   P on all units, rectified by labelled units (:mod:`.ppi`)
============== ===================== ===============================================

References: Pettersson, Jerzak and Daoud, "One Map, Many Trials" (AAAI-26); Efron (2011);
Angelopoulos et al. (2023), Science 382, 669-674; Efron and Tibshirani (1993) for the bootstrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from sklearn.base import clone

from eocausal.debias.calibration import LinearCalibration, _check_fitted, check_predictions
from eocausal.debias.tweedie import Tweedie
from eocausal.errors import InputError, NotEstimableError
from eocausal.estimators.aipw import aipw
from eocausal.estimators.weighting import arm_weights, difference_in_means, hajek, horvitz_thompson, se_from_psi

OUTCOME_TYPES = {"observed": "observed", "naive": "predicted", "lcc": "predicted+lcc",
                 "tweedie": "predicted+tweedie", "ppi": "ppi"}
TRIAL_COLUMNS = {"trial": "trial", "unit": "unit", "treated": "treated", "propensity": "propensity"}


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class MapTrial:
    name: str
    idx: np.ndarray            # positions in the map
    w: np.ndarray
    e: np.ndarray | None


def read_column(data, value, name, n):
    """An array aligned with the map: a column name of a DataFrame map, or array-like."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else (list(value) if name == "confounders" and isinstance(
        value, (list, tuple)) and value and all(isinstance(v, str) for v in value) else None)
    if names is not None:
        missing = [v for v in names if not isinstance(data, pd.DataFrame) or v not in data.columns]
        if missing:
            raise InputError(f"{name}={value!r}: {missing} not column(s) of the predictions table")
        value = data[names[0]].to_numpy() if isinstance(value, str) else data[names].to_numpy(float)
    a = np.asarray(value)
    if a.ndim == 2 and name == "confounders":
        if a.shape[0] != n:
            raise InputError(f"confounders: {a.shape[0]} rows for {n} map units")
        return a.astype(float)
    a = a.reshape(-1) if a.ndim == 2 and 1 in a.shape else a
    if a.ndim != 1 or len(a) != n:
        raise InputError(f"{name}: {len(a) if a.ndim else 0} values for {n} map units; pass one per unit, "
                         "in the order of the predictions")
    return a


def read_map(predictions, prediction_col, unit_ids):
    """(P, ids or None, table or None) from an array, a Series or a (Geo)DataFrame."""
    if isinstance(predictions, pd.DataFrame):
        if prediction_col not in predictions.columns:
            raise InputError(f"prediction_col={prediction_col!r}: not a column of the predictions table "
                             f"(columns: {list(predictions.columns)[:10]})")
        p = check_predictions(predictions[prediction_col].to_numpy(), f"predictions[{prediction_col!r}]")
        if isinstance(unit_ids, str):
            ids = predictions[unit_ids].to_numpy()
        else:
            ids = predictions.index.to_numpy() if unit_ids is None else np.asarray(unit_ids)
        return p, ids, predictions
    if isinstance(predictions, pd.Series):
        p = check_predictions(predictions.to_numpy())
        return p, (predictions.index.to_numpy() if unit_ids is None else np.asarray(unit_ids)), None
    p = check_predictions(predictions)
    return p, (None if unit_ids is None else np.asarray(unit_ids)), None


def _positions(ids, units, trial_name):
    if ids is None:
        pos = np.asarray(units)
        if not np.issubdtype(pos.dtype, np.integer):
            raise InputError(f"trial {trial_name!r}: units must be integer positions when the map has no ids")
        return pos
    lookup = pd.Index(ids)
    if not lookup.is_unique:
        raise InputError("unit ids of the map are not unique")
    pos = lookup.get_indexer(np.asarray(units))
    if (pos < 0).any():
        missing = np.asarray(units)[pos < 0][:5].tolist()
        raise InputError(f"trial {trial_name!r}: {int((pos < 0).sum())} units are not on the map, e.g. {missing}")
    return pos


def _trial_table(trials, ids, columns) -> list[MapTrial]:
    out = []
    if isinstance(trials, pd.DataFrame):
        cols = {**TRIAL_COLUMNS, **(columns or {})}
        for key in ("trial", "unit", "treated"):
            if cols[key] not in trials.columns:
                raise InputError(f"trials: no {cols[key]!r} column (columns: {list(trials.columns)}); "
                                 f"name it with columns={{{key!r}: ...}}")
        for name, g in trials.groupby(cols["trial"], sort=False):
            pos = _positions(ids, g[cols["unit"]].to_numpy(), name)
            te = g[cols["propensity"]].to_numpy(float) if cols["propensity"] in g.columns else None
            out.append(MapTrial(str(name), pos, g[cols["treated"]].to_numpy(float), te))
    elif isinstance(trials, Mapping):
        for name, (treated, control) in trials.items():
            pos = _positions(ids, np.concatenate([np.asarray(treated), np.asarray(control)]), name)
            out.append(MapTrial(str(name), pos, np.r_[np.ones(len(treated)), np.zeros(len(control))], None))
    else:
        raise InputError("trials: pass a DataFrame (trial, unit, treated[, propensity]) or a mapping "
                         "name -> (treated units, control units)")
    return out


def read_trials(trials, w, e, ids, n, columns) -> list[MapTrial]:
    """The trials of a call: one from ``treatment`` (and ``propensity_scores``), or a trials table."""
    if trials is None:
        if w is None:
            raise InputError("treatment: pass treatment= (one 0/1 value per unit) or trials= (a table of trials)")
        out = [MapTrial("all", np.arange(n), w.astype(float), None if e is None else e.astype(float))]
    elif w is not None:
        raise InputError("pass either treatment= (one trial) or trials= (many trials), not both")
    else:
        out = _trial_table(trials, ids, columns)
    for t in out:
        if not np.isin(t.w, (0.0, 1.0)).all():
            raise InputError(f"trial {t.name!r}: treatment must be 0/1")
        if len(np.unique(t.idx)) != len(t.idx):
            raise InputError(f"trial {t.name!r}: a unit appears more than once")
        if t.e is not None and not (np.isfinite(t.e) & (t.e > 0) & (t.e < 1)).all():
            raise InputError(f"trial {t.name!r}: propensities must be finite and strictly inside (0, 1); "
                             "clip them (e.g. np.clip(e, 1e-3, 1 - 1e-3)) or drop the units")
    return out


def make_debiasers(debiasers, has_labels):
    """name -> unfitted debiaser (None for 'naive', 'observed', 'ppi'); 'auto' adds 'ppi' with labels."""
    if isinstance(debiasers, str) and debiasers == "auto":
        debiasers = ("naive", "lcc", "tweedie") + (("ppi",) if has_labels else ())
    if isinstance(debiasers, (str, LinearCalibration, Tweedie)):
        debiasers = (debiasers,)
    out = {}
    for d in debiasers:
        if isinstance(d, LinearCalibration):
            out["lcc"] = clone(d)
        elif isinstance(d, Tweedie):
            out["tweedie"] = clone(d)
        elif d in ("lcc", "tweedie", "naive", "observed", "ppi"):
            out[d] = {"lcc": LinearCalibration(), "tweedie": Tweedie()}.get(d)
        else:
            raise InputError(f"debiasers: unknown {d!r}; use 'naive', 'lcc', 'tweedie', 'ppi', 'observed', "
                             "or a LinearCalibration/Tweedie instance")
    return out


# ----------------------------------------------------------------------------- estimators
class Contrast:
    """One trial's contrast estimator, for an outcome vector or a matrix of replicate outcomes.

    ``e`` are the clipped propensities and ``fold_ids`` the folds of the per-trial core, so the
    replicates recompute exactly the estimator of the point estimate (AIPW with least-squares
    outcome models, linear in the outcome).
    """

    def __init__(self, method, estimand, w, e, V=None, fold_ids=None):
        self.method, self.estimand, self.w, self.e = method, estimand, w, e
        self.treated = np.flatnonzero(w == 1)
        if method == "dim":
            self.a1, self.a0 = w, 1 - w
        elif method == "aipw":
            if estimand not in ("ATE", "ATT"):
                raise InputError(f"estimand={estimand!r}: AIPW estimates 'ATE' or 'ATT'")
            self._smoother(V, fold_ids)
        else:
            self.a1, self.a0 = arm_weights(w, e, estimand)
            self.d = {"ATE": np.ones_like(w), "ATT": w, "ATO": e * (1 - e)}[estimand]

    def _smoother(self, V, fold_ids):
        """Least-squares outcome models per (fold, arm) on the core's folds, as linear operators."""
        n = len(self.w)
        X = np.column_stack([np.ones(n), V])
        self.ops = []
        for f in np.unique(fold_ids):
            test = np.flatnonzero(fold_ids == f)
            for arm in (0, 1):
                rows = np.flatnonzero((fold_ids != f) & (self.w == arm))
                if len(rows) == 0:
                    raise NotEstimableError(f"AIPW: a training fold holds no {'treated' if arm else 'control'} "
                                            "units; use fewer folds")
                self.ops.append((arm, test, rows, X[test], np.linalg.pinv(X[rows])))

    def mu(self, Y):
        """Out-of-fold OLS predictions mu0, mu1 for outcome(s) Y, shape (n,) or (m, n)."""
        mu = [np.empty_like(Y), np.empty_like(Y)]
        for arm, test, rows, Xt, pinv in self.ops:
            mu[arm][..., test] = (Xt @ (pinv @ Y[..., rows].T)).T if Y.ndim == 2 else Xt @ (pinv @ Y[rows])
        return mu

    def point(self, y):
        if self.method == "dim":
            return difference_in_means(y, self.w)
        if self.method == "ipw-hajek":
            return hajek(y, self.w, self.e, self.estimand)
        if self.method == "ipw-ht":
            return horvitz_thompson(y, self.w, self.e, self.estimand)
        mu0, mu1 = self.mu(y)
        return aipw(y, self.w, self.e, mu0, mu1, self.estimand)

    def const(self) -> float:
        """The estimator applied to an outcome of 1 (0 except for Horvitz-Thompson)."""
        return float(self.point(np.ones_like(self.w)).estimate) if self.method == "ipw-ht" else 0.0

    def weights(self, C):
        """(m, n) matrix W_b with estimate_b(Y) = sum_i W_bi Y_bi for counts C (None for AIPW).

        Hajek / difference in means: W_bi = C_bi (a1_i / sum_j C_bj a1_j - a0_i / sum_j C_bj a0_j);
        Horvitz-Thompson: W_bi = C_bi (a1_i - a0_i) / sum_j C_bj d_j. Built once per trial and
        chunk of replicates, then shared by every debiaser.
        """
        if self.method == "aipw":
            return None
        if self.method == "ipw-ht":
            M = np.multiply(C, self.a1 - self.a0, out=np.empty_like(C))
            M *= (1.0 / rowdot(C, self.d))[:, None]
            return M
        # a1 and a0 have disjoint supports (treated / control): scale every column by the
        # control arm's 1/den0, then rescale the (usually fewer) treated columns
        u1, u0 = 1.0 / rowdot(C, self.a1), -1.0 / rowdot(C, self.a0)
        M = np.multiply(C, self.a1 + self.a0, out=np.empty_like(C))
        M *= u0[:, None]
        M[:, self.treated] *= (u1 / u0)[:, None]
        return M

    def draws(self, C, Y):
        """Replicate estimates for counts C (m, n) and outcome Y (n,) or (m, n)."""
        if self.method != "aipw":
            return rowdot(self.weights(C), Y)
        mu0, mu1 = self.mu(Y)
        w, e = self.w, self.e
        if self.estimand == "ATE":
            score, den = mu1 - mu0 + w * (Y - mu1) / e - (1 - w) * (Y - mu0) / (1 - e), C.sum(1)
        else:
            r0 = Y - mu0
            score, den = w * r0 - (1 - w) * e / (1 - e) * r0, rowdot(C, w)
        return rowdot(C, score) / den


def lcc_delta_se(lcc: LinearCalibration, contrast: Contrast, predictions: np.ndarray,
                 clusters: np.ndarray | None = None) -> tuple[float, float]:
    """LCC effect of one trial's contrast and its delta-method SE (``se='if'`` of the LCC rows).

    With T the contrast (linear in the outcome), (m, k) the fitted calibration and c = T(1)::

        tau_LCC = T((P - m) / k) = (T(P) - m c) / k
        Var(tau_LCC) = Var_trial(T(P - m)) / k^2 + g' Cov(m, k) g,   g = (-c / k, -tau_LCC / k)

    The trial part is the influence function of T on the centred predictions P - m (clustered,
    with the CR1 factor sqrt(G / (G - 1)), when ``clusters`` are given), so for Horvitz-Thompson it carries the sampling variance of
    c = T(1) and its covariance with T(P); the calibration part is the gradient in (m, k) times
    their HC covariance (calibration and trial samples independent). Derivation and the coverage
    it restores: :mod:`eocausal.debias.calibration`.

    Parameters
    ----------
    lcc : LinearCalibration
        Fitted on the calibration set.
    contrast : Contrast
        The trial's estimator (its propensities held fixed, as in the joint bootstrap).
    predictions : array (n,)
        The predictions P of the trial's units, in the contrast's order.
    clusters : array (n,), optional
        Cluster codes of the trial's units.

    Returns
    -------
    (tau_LCC, se) : tuple of float
    """
    if not isinstance(lcc, LinearCalibration):
        raise InputError(f"lcc: expected a fitted LinearCalibration, got {type(lcc).__name__}")
    _check_fitted(lcc, "slope_")
    P = np.asarray(predictions, dtype=float)
    centred = contrast.point(P - lcc.intercept_)  # T(P - m) = T(P) - m c
    se_trial, G = se_from_psi(centred.psi, clusters)
    if G is not None:  # CR1, as every clustered influence-function SE of the core
        from eocausal.estimators.robust_se import cr1_factor

        se_trial *= cr1_factor(G)
    c = contrast.const()
    return lcc.delta_se(float(centred.estimate) + lcc.intercept_ * c, se_trial, c)


def rowdot(C, v):
    """Row-wise dot products C @ v for v (n,) or (m, n) (einsum: one pass, no BLAS threading)."""
    return np.einsum("ij,j->i", C, v) if v.ndim == 1 else np.einsum("ij,ij->i", C, v)


def resample_counts(rng, m, codes, G):
    """(m, n) multinomial resampling counts, drawn per cluster and expanded to units."""
    idx = rng.integers(0, G, size=(m, G)) + (np.arange(m) * G)[:, None]
    C = np.bincount(idx.ravel(), minlength=m * G).reshape(m, G).astype(float)
    return C if codes is None else C[:, codes]


def debias_notes(fitted, facts, n_cal):
    out = [f"Outcome predicted from imagery; calibration set of {n_cal} labelled units "
           f"(slope of predictions on labels {facts.slope:.3f}; {100 * facts.share_outside:.1f}% of trial "
           "predictions outside the calibration range)."]
    if "lcc" in fitted:
        f = fitted["lcc"]
        out.append(f"predicted+lcc: Y~ = (P - m)/k, m = {f.intercept_:.4g}, k = {f.slope_:.4g} "
                   f"(SE {math.sqrt(f.cov_[1, 1]):.3g}) (Pettersson, Jerzak and Daoud, AAAI-26).")
    if "tweedie" in fitted:
        f = fitted["tweedie"]
        rule = f.bandwidth if isinstance(f.bandwidth, str) else "given"
        out.append(f"predicted+tweedie: Y~ = P - sigma^2 s(P), sigma^2 = {f.sigma2_:.4g}, Gaussian KDE on the "
                   f"{f.density_on} predictions, bandwidth {f.bandwidth_:.4g} ({rule}) (Efron 2011).")
    return out


