"""Effects on ML-predicted outcomes, debiased, with SEs that include calibration uncertainty.

:func:`debiased_effects` takes one map of predictions (every unit's predicted outcome), a
calibration set (out-of-sample predictions with labels, disjoint from the trial units) and one
trial or many (treated and control units of the map, with propensities where treatment was
not randomised), and returns one :class:`~eocausal.EffectTable` with a row per
(trial, method, debiaser). ``outcome_type`` says which outcome each row used:

============== ===================== ===============================================
debiaser        outcome_type          outcome
============== ===================== ===============================================
'observed'      observed              the labels (every trial unit must have one)
'naive'         predicted             the predictions P
'lcc'           predicted+lcc         Y~ = (P - m)/k (:class:`LinearCalibration`)
'tweedie'       predicted+tweedie     Y~ = P - sigma^2 s(P) (:class:`Tweedie`)
'ppi'           ppi                   P on all units, rectified by labelled units (:mod:`.ppi`)
============== ===================== ===============================================

Methods ('dim', 'ipw-hajek', 'ipw-ht', 'aipw') are the estimators of
:mod:`eocausal.estimators.weighting` and :mod:`eocausal.estimators.aipw` applied to the corrected
outcome. AIPW uses cross-fitted OLS outcome models (per arm, grouped folds), which keeps it
linear in the outcome so the outcomes of every calibration resample are fitted in one product.

Standard errors (``se``):

- ``'bootstrap'`` (default): B joint draws. Draw b resamples the calibration pairs (multinomial
  counts), refits every debiaser on them, and resamples the trial units (whole clusters when
  ``clusters`` is given), then recomputes the estimate; SE = sd of the draws, normal interval.
  The B calibration resamples and refitted debiasers are shared by all trials of the call, so
  the draws of different trials are jointly valid (they share calibration error, as the
  estimates do). Propensities and, for AIPW, the cross-fitting folds are held fixed.
- ``'delta'``: influence-function SEs for the naive, observed and PPI rows; the delta method
  for LCC, Var(tau_LCC) = Var(tau_P)/k^2 + tau_P^2 Var(k)/k^4 (+ the intercept term for HT; see
  :mod:`.calibration`); Tweedie has no closed form and is bootstrapped (the note says so).

References: Pettersson, Jerzak and Daoud, "One Map, Many Trials" (AAAI-26); Efron (2011);
Angelopoulos et al. (2023), Science 382, 669-674; Efron and Tibshirani (1993) for the bootstrap.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone

from eocausal._types import EffectRow
from eocausal.debias.calibration import LinearCalibration, check_pair, check_predictions
from eocausal.debias.diagnostics import check_calibration
from eocausal.debias.ppi import ppi_effect
from eocausal.debias.tweedie import Tweedie
from eocausal.errors import DebiasWarning, InputError, NotEstimableError
from eocausal.estimators.aipw import aipw
from eocausal.estimators.crossfit import grouped_folds
from eocausal.estimators.weighting import (arm_weights, difference_in_means, hajek, horvitz_thompson,
                                           se_from_psi)
from eocausal.results import EffectTable

OUTCOME_TYPES = {"observed": "observed", "naive": "predicted", "lcc": "predicted+lcc",
                 "tweedie": "predicted+tweedie", "ppi": "ppi"}
METHODS = ("dim", "ipw-hajek", "ipw-ht", "aipw")
SE_TYPES = ("bootstrap", "delta")
TRIAL_COLUMNS = {"trial": "trial", "unit": "unit", "treated": "treated", "propensity": "propensity"}
#: Bootstrap replicates processed together (fixed, so results do not depend on memory settings).
_CHUNK = 25


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Trial:
    name: str
    idx: np.ndarray            # positions in the map
    w: np.ndarray
    e: np.ndarray | None


def _column(data, value, name, n):
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


def _map(predictions, prediction_col, unit_ids):
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


def _trial_table(trials, ids, columns) -> list[_Trial]:
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
            out.append(_Trial(str(name), pos, g[cols["treated"]].to_numpy(float), te))
    elif isinstance(trials, Mapping):
        for name, (treated, control) in trials.items():
            pos = _positions(ids, np.concatenate([np.asarray(treated), np.asarray(control)]), name)
            out.append(_Trial(str(name), pos, np.r_[np.ones(len(treated)), np.zeros(len(control))], None))
    else:
        raise InputError("trials: pass a DataFrame (trial, unit, treated[, propensity]) or a mapping "
                         "name -> (treated units, control units)")
    return out


def _trials(trials, w, e, ids, n, columns) -> list[_Trial]:
    if trials is None:
        if w is None:
            raise InputError("treatment: pass w= (one 0/1 value per unit) or trials= (a table of trials)")
        out = [_Trial("all", np.arange(n), w.astype(float), None if e is None else e.astype(float))]
    elif w is not None:
        raise InputError("pass either w= (one trial) or trials= (many trials), not both")
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


def _debiasers(debiasers, has_labels):
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
class _Design:
    """One trial's contrast estimator, for an outcome vector or a matrix of replicate outcomes."""

    def __init__(self, method, estimand, w, e, V=None, clusters=None, folds=5, seed=0):
        self.method, self.estimand, self.w, self.e = method, estimand, w, e
        self.treated = np.flatnonzero(w == 1)
        if method == "dim":
            self.a1, self.a0 = w, 1 - w
        elif method == "aipw":
            if estimand not in ("ATE", "ATT"):
                raise InputError(f"estimand={estimand!r}: AIPW estimates 'ATE' or 'ATT'")
            self._smoother(V, clusters, folds, seed)
        else:
            self.a1, self.a0 = arm_weights(w, e, estimand)
            self.d = {"ATE": np.ones_like(w), "ATT": w, "ATO": e * (1 - e)}[estimand]

    def _smoother(self, V, clusters, folds, seed):
        n = len(self.w)
        fold_ids = grouped_folds(n, clusters, folds, seed, stratify=self.w)
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
            M *= (1.0 / _rowdot(C, self.d))[:, None]
            return M
        # a1 and a0 have disjoint supports (treated / control): scale every column by the
        # control arm's 1/den0, then rescale the (usually fewer) treated columns
        u1, u0 = 1.0 / _rowdot(C, self.a1), -1.0 / _rowdot(C, self.a0)
        M = np.multiply(C, self.a1 + self.a0, out=np.empty_like(C))
        M *= u0[:, None]
        M[:, self.treated] *= (u1 / u0)[:, None]
        return M

    def draws(self, C, Y):
        """Replicate estimates for counts C (m, n) and outcome Y (n,) or (m, n)."""
        if self.method != "aipw":
            return _rowdot(self.weights(C), Y)
        mu0, mu1 = self.mu(Y)
        w, e = self.w, self.e
        if self.estimand == "ATE":
            score, den = mu1 - mu0 + w * (Y - mu1) / e - (1 - w) * (Y - mu0) / (1 - e), C.sum(1)
        else:
            r0 = Y - mu0
            score, den = w * r0 - (1 - w) * e / (1 - e) * r0, _rowdot(C, w)
        return _rowdot(C, score) / den


def _rowdot(C, v):
    """Row-wise dot products C @ v for v (n,) or (m, n) (einsum: one pass, no BLAS threading)."""
    return np.einsum("ij,j->i", C, v) if v.ndim == 1 else np.einsum("ij,ij->i", C, v)


def _counts(rng, m, codes, G):
    """(m, n) multinomial resampling counts, drawn per cluster and expanded to units."""
    idx = rng.integers(0, G, size=(m, G)) + (np.arange(m) * G)[:, None]
    C = np.bincount(idx.ravel(), minlength=m * G).reshape(m, G).astype(float)
    return C if codes is None else C[:, codes]


def _adjust_pvalues(rows):
    from statsmodels.stats.multitest import multipletests

    fam = {}
    for i, r in enumerate(rows):
        if np.isfinite(r.p_value):
            fam.setdefault((r.estimand, r.method, r.outcome_type), []).append(i)
    out = list(rows)
    for idx in fam.values():
        p = np.array([rows[i].p_value for i in idx])
        holm, bh = multipletests(p, method="holm")[1], multipletests(p, method="fdr_bh")[1]
        for j, i in enumerate(idx):
            out[i] = replace(rows[i], p_holm=float(holm[j]), p_bh=float(bh[j]))
    return out


# ----------------------------------------------------------------------------- main entry
def debiased_effects(predictions, w=None, *, calibration, debiasers="auto", e=None, trials=None,
                     unit_ids=None, calibration_ids=None, allow_overlap: bool = False, clusters=None,
                     labels=None, confounders=None, method=None, estimand: str = "ATE",
                     se: str = "bootstrap", bootstrap: int = 200, seed: int = 0, alpha: float = 0.05,
                     lam: float = 1.0, folds: int = 5, clip: float = 1e-3, propensity="ridge-logit",
                     adjustment: str | None = None,
                     prediction_col: str = "prediction", columns: Mapping[str, str] | None = None) -> EffectTable:
    """Naive and debiased effects of one or many trials on one map of predicted outcomes.

    Parameters
    ----------
    predictions : array (n,), Series or (Geo)DataFrame
        The map: one predicted outcome per unit (a DataFrame holds it in ``prediction_col``;
        sample a raster at the units first, e.g. with ``EmbeddingRaster.sample``). The index of
        a Series/DataFrame gives the unit ids.
    w : array (n,) or column name, optional
        Treatment of every map unit, for a single trial. Use ``trials`` for many.
    calibration : (predictions, labels)
        Out-of-sample predictions and labels of units outside the trials.
    debiasers : 'auto' or sequence
        Any of 'observed', 'naive', 'lcc', 'tweedie', 'ppi', or configured
        :class:`LinearCalibration` / :class:`Tweedie` instances (e.g.
        ``Tweedie(density_on='map')``: the KDE then uses every map prediction). 'auto' gives
        naive, lcc, tweedie, plus ppi when ``labels`` are given.
    e : array (n,) or column name, optional
        Propensities of the single trial (in ``trials``: a 'propensity' column).
    trials : DataFrame or mapping, optional
        Long table with columns trial, unit (map id, or position when the map has no ids),
        treated and optionally propensity (names via ``columns``), or a mapping
        name -> (treated units, control units).
    unit_ids : array or column name, optional
        Ids of the map units (default: the Series/DataFrame index; none for a plain array).
    calibration_ids : array, optional
        Ids of the calibration units. With map ids, units in both a trial and the calibration set
        raise InputError unless ``allow_overlap=True``.
    clusters, labels, confounders : arrays aligned with the map (or column names), optional
        Cluster of each unit (cluster bootstrap and SEs); labels with NaN where unlabelled (PPI,
        'observed'); confounders (n, p) for AIPW and for propensities when none are given.
    method : str or sequence, optional
        'dim', 'ipw-hajek', 'ipw-ht', 'aipw'. Default: 'ipw-hajek' when propensities or
        confounders are given, else 'dim'.
    estimand : {'ATE', 'ATT', 'ATO'}
    se : {'bootstrap', 'delta'}
    bootstrap : int
        Number of joint draws B.
    seed : int
        Seeds the bootstrap (same seed, same table).
    alpha : float
        Intervals cover with probability 1 - alpha.
    lam : float
        PPI power-tuning parameter (1: classical PPI).
    folds, clip : int, float
        Cross-fitting folds (AIPW outcome models, estimated propensities); clipping of estimated
        propensities to [clip, 1 - clip].
    propensity : str or classifier
        Propensity model when propensities are estimated from ``confounders`` (see
        :func:`eocausal.estimators.propensity.make_propensity_model`).
    adjustment : str, optional
        Label of the adjustment behind the propensities (default: 'none' for 'dim', 'tabular' when
        propensities are estimated from ``confounders``, else 'given').

    Returns
    -------
    EffectTable
        One row per (trial, method, debiaser); Holm and BH p-values across trials.
    """
    if se not in SE_TYPES:
        raise InputError(f"se={se!r}: use one of {list(SE_TYPES)}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha}: must lie in (0, 1)")
    if bootstrap < 2 and (se == "bootstrap"):
        raise InputError(f"bootstrap={bootstrap}: need at least 2 draws")
    P, ids, table = _map(predictions, prediction_col, unit_ids)
    n_map = len(P)
    w_arr = _column(table, w, "w", n_map)
    e_arr = _column(table, e, "e", n_map)
    g_arr = _column(table, clusters, "clusters", n_map)
    y_arr = _column(table, labels, "labels", n_map)
    V = _column(table, confounders, "confounders", n_map)
    if y_arr is not None:
        y_arr = y_arr.astype(float)
        if np.isinf(y_arr).any():
            raise InputError("labels: infinite values; use NaN for unlabelled units")
    if V is not None and V.ndim == 1:
        V = V[:, None]
    trial_list = _trials(trials, w_arr, e_arr, ids, n_map, columns)
    if not isinstance(calibration, (tuple, list)) or len(calibration) != 2:
        raise InputError("calibration: pass (predictions, labels) of the calibration units")
    P_cal, Y_cal = check_pair(*calibration)
    deb = _debiasers(debiasers, y_arr is not None)
    methods = ((method,) if isinstance(method, str) else tuple(method)) if method is not None else None

    # overlap of calibration and trial units
    notes = []
    used = np.unique(np.concatenate([t.idx for t in trial_list]))
    if calibration_ids is not None and ids is not None:
        cal_ids = np.asarray(calibration_ids)
        if len(cal_ids) != len(P_cal):
            raise InputError(f"calibration_ids: {len(cal_ids)} ids for {len(P_cal)} calibration pairs")
        both = np.intersect1d(ids[used], cal_ids)
        if len(both) and not allow_overlap:
            raise InputError(
                f"calibration: {len(both)} calibration units are also trial units (e.g. {both[:5].tolist()}); "
                "a calibration set that overlaps the trials makes the correction fit the outcomes it "
                "corrects. Drop them from one side, or pass allow_overlap=True to accept it")
        notes.append(f"Calibration set and trial units {'overlap in ' + str(len(both)) + ' units (allowed)' if len(both) else 'are disjoint (checked on unit ids)'}.")
    else:
        notes.append("Overlap of calibration and trial units not checked (pass unit ids and calibration_ids).")

    facts = check_calibration(P_cal, Y_cal, P[used], stacklevel=3)
    fitted = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DebiasWarning)  # check_calibration has warned once
        for name, d in deb.items():
            if name == "lcc":
                fitted[name] = clone(d).fit(P_cal, Y_cal)
            elif name == "tweedie":
                fitted[name] = clone(d).fit(P_cal, Y_cal, map_predictions=P)
    transformed = {"naive": P, **{k: v.transform(P) for k, v in fitted.items()}}
    notes += _debias_notes(fitted, facts, len(P_cal))

    # per-trial designs and point estimates
    rows, designs = [], []
    z = stats.norm.ppf(1 - alpha / 2)
    for ti, t in enumerate(trial_list):
        g = None if g_arr is None else g_arr[t.idx]
        te, adj = t.e, adjustment
        Vt = None if V is None else V[t.idx]
        if te is None and Vt is not None:
            from eocausal.estimators.propensity import crossfit_propensity

            te = np.clip(crossfit_propensity(Vt, t.w, groups=g, folds=folds, model=propensity, seed=seed)[0],
                         clip, 1 - clip)
            adj = adj or "tabular"
        mt = methods or (("ipw-hajek",) if te is not None else ("dim",))
        n1 = int(t.w.sum())
        common = dict(trial=t.name, n=len(t.idx), n_treated=n1,
                      n_clusters=None if g is None else int(len(np.unique(g))))
        for m in mt:
            base = {**common, "adjustment": adj or ("given" if te is not None else "none")}
            if m not in METHODS:
                raise InputError(f"method={m!r}: use one of {list(METHODS)}")
            if m != "dim" and te is None:
                raise InputError(f"method={m!r} needs propensities: pass e= (or a 'propensity' column) or confounders=")
            if m == "aipw" and Vt is None:
                raise InputError("method='aipw' needs confounders= for the outcome models")
            est = estimand if m != "dim" else "ATE"
            if m == "dim":
                base = {**base, "adjustment": "none"}
            try:
                if min(n1, len(t.w) - n1) < 2:
                    raise NotEstimableError(f"{n1} treated and {len(t.w) - n1} control units")
                des = _Design(m, est, t.w, te, Vt, g, folds, seed)
            except NotEstimableError as exc:
                for name in deb:
                    rows.append(_nan_row(base, m, est, name, str(exc)))
                continue
            designs.append((ti, t, m, des, g, len(rows)))
            for name in deb:
                rows.append(_point_row(name, des, t, P, transformed, fitted, y_arr, g, base, m, est, lam, se, z))

    if se == "bootstrap" or "tweedie" in deb:
        rows = _bootstrap(rows, designs, deb, fitted, P, P_cal, Y_cal, transformed, y_arr, g_arr, lam,
                          bootstrap, seed, se, z, used)
    if len(trial_list) > 1:
        rows = _adjust_pvalues(rows)
    se_note = (f"SE: bootstrap, {bootstrap} joint draws resampling the calibration pairs (debiasers refitted) "
               "and the trial units" + (" by cluster" if g_arr is not None else "") +
               "; calibration resamples shared by all trials; propensities held fixed; normal intervals."
               if se == "bootstrap" else
               "SE: influence function (naive, observed, PPI), delta method (LCC; calibration and trial samples "
               f"independent), bootstrap with {bootstrap} joint draws (Tweedie).")
    notes.append(se_note)
    design = {"n": n_map, "n_clusters": None if g_arr is None else int(len(np.unique(g_arr))),
              "outcome": "predicted from imagery, debiased (" + ", ".join(OUTCOME_TYPES[k] for k in deb) + ")"}
    return EffectTable(rows=tuple(rows), notes=tuple(notes), design=design)


def _debias_notes(fitted, facts, n_cal):
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


def _row(base, method, estimand, name, est, se, z, **extra):
    stat = est / se if se > 0 else math.nan
    return EffectRow(**base, method=method, estimate=float(est), std_error=float(se),
                     ci_low=float(est - z * se), ci_high=float(est + z * se),
                     p_value=float(2 * stats.norm.sf(abs(stat))) if math.isfinite(stat) else math.nan,
                     outcome_type=OUTCOME_TYPES[name], estimand=estimand, **extra)


def _nan_row(base, method, estimand, name, why):
    nan = math.nan
    return EffectRow(**base, method=method, estimand=estimand, estimate=nan, std_error=nan, ci_low=nan,
                     ci_high=nan, p_value=nan, outcome_type=OUTCOME_TYPES[name], note=f"not estimable: {why}")


def _point_row(name, des, t, P, transformed, fitted, y_arr, g, base, m, est, lam, se, z):
    se_type = "IF" + (" (clustered)" if g is not None else " (iid)")
    try:
        if name == "ppi":
            if m == "aipw":
                raise NotEstimableError("PPI is implemented for dim and IPW, not AIPW")
            if y_arr is None:
                raise NotEstimableError("no labels")
            tau, s, _ = ppi_effect(P[t.idx], y_arr[t.idx], t.w, e=des.e, method=m, estimand=est, lam=lam,
                                   clusters=g)
            return _row(base, m, est, name, tau, s, z, se_type=se_type,
                        note=f"{int(np.sum(~np.isnan(y_arr[t.idx])))} labelled trial units")
        if name == "observed":
            if y_arr is None or np.isnan(y_arr[t.idx]).any():
                raise NotEstimableError("'observed' needs a label for every trial unit")
            y = y_arr[t.idx]
        else:
            y = transformed[name][t.idx]
        pe = des.point(y)
        s, _ = se_from_psi(pe.psi, g)
        if name == "lcc" and se == "delta":
            pn = des.point(P[t.idx])
            sn, _ = se_from_psi(pn.psi, g)
            tau, s = fitted["lcc"].delta_se(pn.estimate, sn, des.const())
            return _row(base, m, est, name, tau, s, z, se_type="delta method (calibration + trial)")
        return _row(base, m, est, name, pe.estimate, s, z, se_type=se_type)
    except NotEstimableError as exc:
        return _nan_row(base, m, est, name, str(exc))


def _bootstrap(rows, designs, deb, fitted, P, P_cal, Y_cal, transformed, y_arr, g_arr, lam, B, seed, se, z,
               used):
    """Joint bootstrap: calibration resamples shared across trials, trial units resampled per trial.

    Replicates are processed in chunks of ``_CHUNK``: per chunk, each refitted debiaser
    transforms the predictions of every trial unit once, and every trial then draws its unit
    counts (one generator per trial, so every method of a trial sees the same draws).
    """
    rng_cal = np.random.default_rng([seed, 0])
    C_cal = _counts(rng_cal, B, None, len(P_cal))
    targets = P[used]
    col_of = np.full(len(P), -1)
    col_of[used] = np.arange(len(used))
    res = {}
    if "lcc" in fitted:
        res["lcc"] = fitted["lcc"].resample(P_cal, Y_cal, C_cal)
    if "tweedie" in fitted:
        res["tweedie"] = fitted["tweedie"].resample(P_cal, Y_cal, C_cal, targets, map_predictions=P)
    boot_names = [n for n in deb if se == "bootstrap" or n == "tweedie"]
    by_trial: dict[int, list] = {}
    for d in designs:
        by_trial.setdefault(d[0], []).append(d)
    state = {}
    for ti, ds in by_trial.items():
        t, g = ds[0][1], ds[0][4]
        codes, G = (None, len(t.idx)) if g is None else (lambda c: (c, int(c.max()) + 1))(
            np.unique(g, return_inverse=True)[1].reshape(-1))
        lab = None if y_arr is None else ~np.isnan(y_arr[t.idx])
        cols = col_of[t.idx]
        state[ti] = dict(rng=np.random.default_rng([seed, 1, ti]), codes=codes, G=G, cols=cols, lab=lab,
                         full=len(cols) == len(targets) and bool(np.all(cols == np.arange(len(targets)))))
    draws = {(r0, name): [] for (_, _, _, _, _, r0) in designs for name in boot_names}
    for start in range(0, B, _CHUNK):
        rows_b = slice(start, min(B, start + _CHUNK))
        m_b = rows_b.stop - rows_b.start
        # LCC is affine in P, and every estimator is linear in the outcome given the counts:
        # tau_b((P - m_b)/k_b) = (tau_b(P) - m_b tau_b(1)) / k_b, so LCC needs no (m x n) matrix.
        Yres = {name: r.transform(targets, rows_b) for name, r in res.items()
                if name in boot_names and name != "lcc"}
        for ti, ds in by_trial.items():
            st, t = state[ti], ds[0][1]
            C = _counts(st["rng"], m_b, st["codes"], st["G"])
            lab = st["lab"]
            for _, _, m, des, _, r0 in ds:
                with np.errstate(divide="ignore", invalid="ignore"):
                    Wt = des.weights(C)

                    def est(Y, des=des, Wt=Wt):
                        if Wt is None:
                            return des.draws(C, Y)
                        return _rowdot(Wt, Y)

                    for name in boot_names:
                        if name == "lcc":
                            k_b, icpt_b = res["lcc"].slope[rows_b], res["lcc"].intercept[rows_b]
                            d = (est(P[t.idx]) - icpt_b * est(np.ones(len(t.idx)))) / k_b
                            d[~(k_b > 0)] = np.nan
                        elif name in Yres:
                            d = est(Yres[name] if st["full"] else Yres[name][:, st["cols"]])
                        elif name == "ppi":
                            if lab is None or m == "aipw":
                                continue
                            r = np.where(lab, y_arr[t.idx] - lam * P[t.idx], 0.0)
                            d = des.draws(C, lam * P[t.idx]) + des.draws(C * lab, r)
                        elif name == "observed":
                            if y_arr is None or not lab.all():
                                continue
                            d = est(y_arr[t.idx])
                        else:
                            d = est(transformed[name][t.idx])
                        draws[(r0, name)].append(d)
    out = list(rows)
    for _, _, _, _, g, r0 in designs:
        for k, name in enumerate(deb):
            if name not in boot_names or not draws[(r0, name)] or not math.isfinite(out[r0 + k].estimate):
                continue
            d = np.concatenate(draws[(r0, name)])
            ok = np.isfinite(d)
            if ok.sum() < 2:
                continue
            s = float(np.std(d[ok], ddof=1))
            old = out[r0 + k]
            note = old.note + (f"; {int((~ok).sum())} of {B} draws failed" if (~ok).any() else "")
            out[r0 + k] = replace(old, std_error=s, ci_low=old.estimate - z * s, ci_high=old.estimate + z * s,
                                  p_value=float(2 * stats.norm.sf(abs(old.estimate / s))) if s > 0 else math.nan,
                                  se_type=f"bootstrap ({B} joint draws" + (", clustered)" if g is not None else ")"),
                                  note=note.lstrip("; "))
    return out
