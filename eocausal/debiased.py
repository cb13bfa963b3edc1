"""Effects on ML-predicted outcomes, debiased, through the same per-trial core as ``estimate``.

:func:`debiased_effects` takes one map of predictions (every unit's predicted outcome), a
calibration set (out-of-sample predictions with labels, disjoint from the trial units) and one
trial or many. Each debiaser is a transform of the outcome: the corrected outcomes of every
debiaser ('predicted', 'predicted+lcc', 'predicted+tweedie', and 'observed' where every trial unit
has a label) are the outcomes of :func:`eocausal.analysis.estimate_trial`, so folds, propensity
fits, clipping, the rows, their facts, the p-value adjustment across trials and the notes are
those of :func:`eocausal.estimate`. What is particular to debiasing is the standard error:

- ``se='bootstrap'`` (default): B joint draws. Draw b resamples the calibration pairs (multinomial
  counts), refits every debiaser on them, and resamples the trial units (whole clusters when
  ``clusters`` is given), then recomputes the estimate; SE = sd of the draws, normal interval. The
  calibration resamples are shared by every trial of the call (the draws of different trials
  share calibration error, as the estimates do). Propensities and folds are held fixed.
- ``se='if'``: influence-function SEs for the naive, observed and PPI rows; the delta method for
  LCC, Var(tau_LCC) = Var_trial(T(P - m))/k^2 + g' Cov(m, k) g
  (:func:`eocausal.debias.effects.lcc_delta_se`; equal to Var(tau_P)/k^2 + tau_P^2 Var(k)/k^4
  except for HT, whose T(1) is random); Tweedie has no closed form and is bootstrapped (its
  se_type says so). With clusters, the influence-function and delta SEs take the CR1 factor and
  t(G - 1) critical values and p-values, as in :func:`eocausal.estimate`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Mapping

import numpy as np
from scipy import stats
from sklearn.base import clone

from eocausal._types import EffectRow
from eocausal._validation import check_clusters
from eocausal.analysis import TrialData, TrialResult, run_trials, table_notes
from eocausal.debias.calibration import check_pair
from eocausal.debias.diagnostics import check_calibration
from eocausal.debias.effects import (OUTCOME_TYPES, Contrast, debias_notes, lcc_delta_se, make_debiasers,
                                     read_column, read_map, read_trials, resample_counts, rowdot)
from eocausal.debias.ppi import ppi_effect
from eocausal.errors import DebiasWarning, InputError, NotEstimableError
from eocausal.options import EstimateOptions
from eocausal.results import EffectTable

__all__ = ["debiased_effects"]

#: Bootstrap replicates processed together (fixed, so results do not depend on memory settings).
_CHUNK = 25


def debiased_effects(predictions, treatment=None, *, calibration, debiasers="auto", propensity_scores=None,
                     trials=None, unit_ids=None, calibration_ids=None, allow_overlap: bool = False,
                     clusters=None, labels=None, confounders=None, lam: float = 1.0,
                     prediction_col: str = "prediction", columns: Mapping[str, str] | None = None,
                     options: EstimateOptions | None = None, **settings) -> EffectTable:
    """Naive and debiased effects of one or many trials on one map of predicted outcomes.

    Parameters
    ----------
    predictions : array (n,), Series or (Geo)DataFrame
        The map: one predicted outcome per unit (a DataFrame holds it in ``prediction_col``;
        sample a raster at the units first, e.g. with ``EmbeddingRaster.sample``). The index of
        a Series/DataFrame gives the unit ids.
    treatment : array (n,) or column name, optional
        Treatment of every map unit, for a single trial. Use ``trials`` for many.
    calibration : (predictions, labels)
        Out-of-sample predictions and labels of units outside the trials.
    debiasers : 'auto' or sequence
        Any of 'observed', 'naive', 'lcc', 'tweedie', 'ppi', or configured
        :class:`~eocausal.debias.LinearCalibration` / :class:`~eocausal.debias.Tweedie` instances
        (e.g. ``Tweedie(density_on='map')``). 'auto' gives naive, lcc, tweedie, plus ppi when
        ``labels`` are given.
    propensity_scores : array (n,) or column name, optional
        Propensities of the single trial (in ``trials``: a 'propensity' column); rows of
        adjustment 'given'. Without them, ``confounders`` give cross-fitted propensities
        (adjustment 'tabular').
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
        Cluster of each unit (folds, cluster bootstrap and SEs); labels with NaN where unlabelled
        (PPI, 'observed'); confounders (n, p) for AIPW's outcome models and for propensities when
        none are given.
    lam : float
        PPI power-tuning parameter (1: classical PPI).
    prediction_col, columns :
        Column of the predictions in a DataFrame map; names of the trials table's columns.
    options : EstimateOptions, optional
        Settings as one object; ``settings`` replace its fields.
    **settings
        Fields of :class:`~eocausal.options.EstimateOptions`, as for :func:`eocausal.estimate`.
        Defaults particular to this function: ``se='bootstrap'`` (or 'if': IF / delta method),
        ``n_boot=200``, ``outcome_model='linear'`` (AIPW's outcome models must be least squares,
        so every bootstrap replicate is one product), ``min_arm=2``, and ``methods``
        ['ipw-hajek'] when propensities or confounders are given, else ['dim'].

    Returns
    -------
    EffectTable
        One row per (trial, method, adjustment, outcome type); Holm and BH p-values across trials.
    """
    defaults = dict(se="bootstrap", n_boot=200, outcome_model="linear", min_arm=2)
    if options is None:
        settings = {**defaults, **settings}
    se_kind = settings.pop("se", options.se if options is not None else "bootstrap")
    if se_kind not in ("if", "bootstrap"):
        raise InputError(f"se={se_kind!r}: use 'bootstrap' (joint bootstrap) or 'if' (influence function, delta "
                         "method for LCC)")
    P, ids, table = read_map(predictions, prediction_col, unit_ids)
    n_map = len(P)
    w_arr = read_column(table, treatment, "treatment", n_map)
    e_arr = read_column(table, propensity_scores, "propensity_scores", n_map)
    g_arr = read_column(table, clusters, "clusters", n_map)
    y_arr = read_column(table, labels, "labels", n_map)
    V = read_column(table, confounders, "confounders", n_map)
    g_arr = check_clusters(g_arr, n_map)
    if y_arr is not None:
        y_arr = y_arr.astype(float)
        if np.isinf(y_arr).any():
            raise InputError("labels: infinite values; use NaN for unlabelled units")
    if V is not None and V.ndim == 1:
        V = V[:, None]
    trial_list = read_trials(trials, w_arr, e_arr, ids, n_map, columns)
    has_e = any(t.e is not None for t in trial_list)
    if options is None and "methods" not in settings:
        settings["methods"] = ["ipw-hajek"] if (has_e or V is not None) else ["dim"]
    opts = EstimateOptions.build(options, se="if", **settings)
    if opts.trim is not None or opts.repeats > 1:
        raise InputError("debiased_effects: trim= and repeats= are not available for debiased effects (the joint "
                         "bootstrap holds the propensities and folds fixed); use clip= and repeats=1")
    if "aipw" in opts.methods and (opts.outcome_model != "linear" or V is None):
        raise InputError("methods: debiased AIPW needs confounders= and outcome_model='linear' (least-squares "
                         "outcome models keep every bootstrap replicate one product)")
    needs_e = [m for m in opts.methods if m != "dim"]
    if needs_e and not has_e and V is None:
        raise InputError(f"methods {needs_e} need propensities: pass propensity_scores= (or a 'propensity' column "
                         "in trials) or confounders=")
    if not isinstance(calibration, (tuple, list)) or len(calibration) != 2:
        raise InputError("calibration: pass (predictions, labels) of the calibration units")
    P_cal, Y_cal = check_pair(*calibration)
    deb = make_debiasers(debiasers, y_arr is not None)

    used = np.unique(np.concatenate([t.idx for t in trial_list]))
    notes = [_calibration_overlap(ids, used, calibration_ids, len(P_cal), allow_overlap)]
    facts = check_calibration(P_cal, Y_cal, P[used], stacklevel=2)
    fitted = _fit_debiasers(deb, P_cal, Y_cal, P)
    outcome_of = {"naive": P, **{k: v.transform(P) for k, v in fitted.items()}}
    notes += debias_notes(fitted, facts, len(P_cal))

    boot = _JointBootstrap(deb, fitted, P, P_cal, Y_cal, y_arr, lam, opts, se_kind, used)
    data = [_trial_data(t, deb, outcome_of, y_arr, V, g_arr, P) for t in trial_list]
    adj = () if has_e else (("tabular",) if V is not None else ())
    opts = replace(opts, adjustments=adj)
    by_name = {t.name: (i, t) for i, t in enumerate(trial_list)}
    result = run_trials(opts, data, cluster_name="clusters" if g_arr is not None else None, raise_single=False,
                        trial_hook=lambda o, td, res: boot.trial(o, td, res, *by_name[td.name]))
    asked = [OUTCOME_TYPES[k] for k in deb]
    rows = _order(_fill_missing([r for r in result.rows if r.outcome_type in asked], asked), asked)
    n_clusters = None if g_arr is None else int(g_arr.max() + 1)
    notes += table_notes(rows, result.fits, {}, opts, cluster_name="clusters", n_clusters=n_clusters,
                         n_trials=len(trial_list), se_notes=False)
    notes.append(_se_note(rows, opts, se_kind, g_arr is not None))
    design = {"n": n_map, "n_clusters": n_clusters, "estimand": opts.estimand, "trials": len(trial_list),
              "outcome": "predicted from imagery, debiased (" + ", ".join(OUTCOME_TYPES[k] for k in deb) + ")"}
    return EffectTable(rows=tuple(rows), notes=tuple(notes), design=design, propensities=result.fits)


def _calibration_overlap(ids, used, calibration_ids, n_cal: int, allow_overlap: bool) -> str:
    """The note on calibration and trial units; refuses an overlap unless allowed."""
    if calibration_ids is None or ids is None:
        return "Overlap of calibration and trial units not checked (pass unit ids and calibration_ids)."
    cal_ids = np.asarray(calibration_ids)
    if len(cal_ids) != n_cal:
        raise InputError(f"calibration_ids: {len(cal_ids)} ids for {n_cal} calibration pairs")
    both = np.intersect1d(ids[used], cal_ids)
    if len(both) and not allow_overlap:
        raise InputError(
            f"calibration: {len(both)} calibration units are also trial units (e.g. {both[:5].tolist()}); "
            "a calibration set that overlaps the trials makes the correction fit the outcomes it "
            "corrects. Drop them from one side, or pass allow_overlap=True to accept it")
    return "Calibration set and trial units " + (f"overlap in {len(both)} units (allowed)." if len(both)
                                                 else "are disjoint (checked on unit ids).")


def _fit_debiasers(deb, P_cal, Y_cal, P) -> dict:
    """The fitted LCC and Tweedie corrections asked for (name -> fitted debiaser)."""
    fitted = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DebiasWarning)  # check_calibration has warned once
        for name, d in deb.items():
            if name == "lcc":
                fitted[name] = clone(d).fit(P_cal, Y_cal)
            elif name == "tweedie":
                fitted[name] = clone(d).fit(P_cal, Y_cal, map_predictions=P)
    return fitted


def _trial_data(t, deb, outcome_of, y_arr, V, g_arr, P) -> TrialData:
    """One trial of the map as the core's TrialData: every debiaser's corrected outcome is an outcome."""
    outcomes = {OUTCOME_TYPES[k]: outcome_of[k][t.idx] for k in deb if k in outcome_of}
    if "observed" in deb and y_arr is not None and not np.isnan(y_arr[t.idx]).any():
        outcomes = {"observed": y_arr[t.idx], **outcomes}
    if not outcomes:  # only 'ppi' or 'observed' asked: the core still needs an outcome for the folds
        outcomes = {"predicted": P[t.idx]}
    return TrialData(name=t.name, w=t.w, outcomes=outcomes, X=np.empty((len(t.idx), 0)) if V is None else V[t.idx],
                     clusters=None if g_arr is None else g_arr[t.idx], scores={} if t.e is None else {"given": t.e})


def _fill_missing(rows: list[EffectRow], asked: list[str]) -> list[EffectRow]:
    """A not-estimable row, with the reason, for each asked outcome a (trial, method, adjustment) lacks."""
    cells: dict[tuple, list[EffectRow]] = {}
    for r in rows:
        cells.setdefault((r.trial, r.method, r.adjustment), []).append(r)
    out = list(rows)
    for cell_rows in cells.values():
        lead = cell_rows[0]
        for ot in asked:
            if any(r.outcome_type == ot for r in cell_rows):
                continue
            why = (lead.note.removeprefix("not estimable: ") if not math.isfinite(lead.estimate) else
                   "'observed' needs a label for every trial unit" if ot == "observed" else "no rows computed")
            out.append(_nan_like(lead, ot, why))
    return out


def _nan_like(r: EffectRow, outcome_type: str, why: str) -> EffectRow:
    nan = math.nan
    return replace(r, outcome_type=outcome_type, se_type="", estimate=nan, std_error=nan, ci_low=nan, ci_high=nan, p_value=nan,
                   p_holm=nan, p_bh=nan, note=f"not estimable: {why}")


def _order(rows: list[EffectRow], asked: list[str]) -> list[EffectRow]:
    """Rows by trial (first appearance), method, adjustment, then the debiasers' order."""
    rank = {ot: i for i, ot in enumerate(asked)}
    trials = list(dict.fromkeys(r.trial for r in rows))
    cells = list(dict.fromkeys((r.method, r.adjustment) for r in rows))
    return sorted(rows, key=lambda r: (trials.index(r.trial), cells.index((r.method, r.adjustment)),
                                       rank.get(r.outcome_type, 99)))


def _se_note(rows, opts: EstimateOptions, se_kind: str, clustered: bool) -> str:
    types = {r.se_type for r in rows if np.isfinite(r.estimate)}
    level = int(round(100 * (1 - opts.alpha)))
    if se_kind == "bootstrap":
        return (f"SE: bootstrap, {opts.n_boot} joint draws resampling the calibration pairs (debiasers refitted) and "
                "the trial units" + (" by cluster" if clustered else "") + "; calibration resamples shared by all "
                f"trials; propensities and folds held fixed; {level}% normal intervals.")
    parts = ["influence function (naive, observed, PPI)"]
    if any(s.startswith("delta") for s in types):
        parts.append("delta method (LCC; calibration and trial samples independent)")
    if any(s.startswith("bootstrap") for s in types):
        parts.append(f"bootstrap with {opts.n_boot} joint draws (Tweedie)")
    if clustered:
        return ("SE: " + ", ".join(parts) + "; clustered, with the CR1 factor sqrt(G/(G-1)) and "
                f"{level}% intervals and p-values from t with G - 1 df (bootstrap rows: normal intervals).")
    return "SE: " + ", ".join(parts) + f"; {level}% normal intervals."


class _JointBootstrap:
    """Joint bootstrap of the debiased rows: calibration resamples shared by every trial.

    Built once per call (the B calibration resamples and the refitted debiasers' transforms of
    every trial unit's prediction); :meth:`trial` then replaces the SEs of one trial's rows
    (and adds its PPI rows) from that trial's propensities and folds, with the trial's own
    generator, in chunks of ``_CHUNK`` replicates.
    """

    def __init__(self, deb, fitted, P, P_cal, Y_cal, y_arr, lam, opts, se_kind, used):
        self.deb, self.fitted, self.P, self.y_arr, self.lam = deb, fitted, P, y_arr, lam
        self.se_kind, self.B, self.seed = se_kind, opts.n_boot, 0 if opts.seed is None else opts.seed
        self.names = [k for k in deb if se_kind == "bootstrap" or k == "tweedie"]
        self.res = {}
        self.targets = P[used]
        self.col_of = np.full(len(P), -1)
        self.col_of[used] = np.arange(len(used))
        if self.names:
            C_cal = resample_counts(np.random.default_rng([self.seed, 0]), self.B, None, len(P_cal))
            if "lcc" in fitted and "lcc" in self.names:
                self.res["lcc"] = fitted["lcc"].resample(P_cal, Y_cal, C_cal)
            if "tweedie" in fitted:
                self.res["tweedie"] = fitted["tweedie"].resample(P_cal, Y_cal, C_cal, self.targets, map_predictions=P)

    def trial(self, opts: EstimateOptions, td: TrialData, res: TrialResult, ti: int, t) -> TrialResult:
        from eocausal.estimators.robust_se import t_critical

        z = float(stats.norm.ppf(1 - opts.alpha / 2))
        g = td.clusters
        G = None if g is None else int(len(np.unique(g)))
        crit = t_critical(opts.alpha, G)  # influence-function rows: t(G - 1) with clusters
        by_cell: dict[tuple, dict[str, int]] = {}
        rows = list(res.rows)
        for i, r in enumerate(rows):
            by_cell.setdefault((r.method, r.adjustment), {})[r.outcome_type] = i
        contrasts = {}
        for (m, adj), idx in by_cell.items():
            fit = res.fits.get(adj)
            e = None if fit is None else fit.e_aipw if m == "aipw" and fit.e_aipw is not None else fit.e
            V = td.X if td.X.shape[1] else None
            contrasts[(m, adj)] = Contrast(m, rows[next(iter(idx.values()))].estimand, td.w, e, V,
                                           None if fit is None else fit.fold_ids)
        # analytic SEs: the delta method for LCC; PPI rows
        for (m, adj), idx in by_cell.items():
            con, lead = contrasts[(m, adj)], rows[next(iter(idx.values()))]
            if "lcc" in self.deb and "predicted+lcc" in idx and self.se_kind == "if":
                k = idx["predicted+lcc"]
                _, s = lcc_delta_se(self.fitted["lcc"], con, self.P[t.idx], g)
                rows[k] = _with_se(rows[k], s, crit, "delta method (calibration + trial"
                                   + (", CR1, t with G - 1 df)" if G else ")"), G)
            if "ppi" in self.deb:
                rows.append(self._ppi_row(lead, con, td, t, m, crit, G))
                idx["ppi"] = len(rows) - 1
        if self.names:
            self._draws(rows, by_cell, contrasts, td, t, ti, z)
        return replace(res, rows=rows)

    def _ppi_row(self, lead: EffectRow, con: Contrast, td: TrialData, t, m: str, crit: float,
                 G: int | None) -> EffectRow:
        try:
            if m == "aipw":
                raise NotEstimableError("PPI is implemented for dim and IPW, not AIPW")
            if self.y_arr is None:
                raise NotEstimableError("no labels")
            tau, s, _ = ppi_effect(self.P[t.idx], self.y_arr[t.idx], td.w, e=con.e, method=m,
                                   estimand=lead.estimand, lam=self.lam, clusters=td.clusters)
        except NotEstimableError as exc:
            return _nan_like(lead, "ppi", str(exc))
        from eocausal.estimators.robust_se import cr1_factor

        s = s * cr1_factor(G)
        r = replace(lead, outcome_type="ppi", estimate=float(tau),
                    note=f"{int(np.sum(~np.isnan(self.y_arr[t.idx])))} labelled trial units")
        return _with_se(r, float(s), crit, "IF" + (", clustered (CR1, t with G - 1 df)" if G else ", iid"), G)

    def _draws(self, rows, by_cell, contrasts, td: TrialData, t, ti: int, z: float) -> None:
        g = td.clusters
        codes, G = (None, td.n) if g is None else (g, int(g.max()) + 1)
        rng = np.random.default_rng([self.seed, 1, ti])
        lab = None if self.y_arr is None else ~np.isnan(self.y_arr[t.idx])
        cols = self.col_of[t.idx]
        draws: dict[tuple, list] = {}
        for start in range(0, self.B, _CHUNK):
            rows_b = slice(start, min(self.B, start + _CHUNK))
            C = resample_counts(rng, rows_b.stop - rows_b.start, codes, G)
            Yres = {name: r.transform(self.targets, rows_b)[:, cols] for name, r in self.res.items()
                    if name in self.names and name != "lcc"}
            for cell, idx in by_cell.items():
                con = contrasts[cell]
                with np.errstate(divide="ignore", invalid="ignore"):
                    Wt = con.weights(C)

                    def est(Y, con=con, Wt=Wt):
                        return con.draws(C, Y) if Wt is None else rowdot(Wt, Y)

                    for name in self.names:
                        ot = OUTCOME_TYPES[name]
                        if ot not in idx:
                            continue
                        if name == "lcc":
                            k_b, icpt_b = self.res["lcc"].slope[rows_b], self.res["lcc"].intercept[rows_b]
                            d = (est(self.P[t.idx]) - icpt_b * est(np.ones(td.n))) / k_b
                            d[~(k_b > 0)] = np.nan
                        elif name in Yres:
                            d = est(Yres[name])
                        elif name == "ppi":
                            if lab is None or cell[0] == "aipw":
                                continue
                            r = np.where(lab, self.y_arr[t.idx] - self.lam * self.P[t.idx], 0.0)
                            d = con.draws(C, self.lam * self.P[t.idx]) + con.draws(C * lab, r)
                        elif name == "observed":
                            d = est(self.y_arr[t.idx])
                        else:
                            d = est(self.P[t.idx])
                        draws.setdefault((cell, ot), []).append(d)
        kind = f"bootstrap ({self.B} joint draws" + (", clustered)" if g is not None else ")")
        for (cell, ot), parts in draws.items():
            k = by_cell[cell][ot]
            if not math.isfinite(rows[k].estimate):
                continue
            d = np.concatenate(parts)
            ok = np.isfinite(d)
            if ok.sum() < 2:
                continue
            note = rows[k].note + (f"; {int((~ok).sum())} of {self.B} draws failed" if (~ok).any() else "")
            rows[k] = replace(_with_se(rows[k], float(np.std(d[ok], ddof=1)), z, kind), note=note.lstrip("; "))


def _with_se(r: EffectRow, s: float, crit: float, se_type: str, G: int | None = None) -> EffectRow:
    """The row with SE ``s``, interval estimate -/+ crit s and its p-value (t with G - 1 df when G is given)."""
    stat = abs(r.estimate / s) if s > 0 else math.nan
    p = (2 * stats.t.sf(stat, G - 1) if G else 2 * stats.norm.sf(stat)) if math.isfinite(stat) else math.nan
    return replace(r, std_error=s, ci_low=r.estimate - crit * s, ci_high=r.estimate + crit * s,
                   p_value=float(p), se_type=se_type)
