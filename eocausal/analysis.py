"""The per-trial core behind ``eocausal.estimate`` and ``eocausal.debiased_effects``.

One trial's units go through one pipeline (:func:`estimate_trial`): folds, propensity fits,
weights, the difference-in-means, IPW and AIPW rows for each outcome (the observed one, or the
corrected outcomes of a debiaser), and the facts of how each row was computed (folds used,
propensity model, SE type). :func:`run_trials` runs it over trials, combines repeated splits and
adjusts p-values across trials; :func:`table_notes` writes the table's notes from the rows' own
facts, never from the arguments. The settings are one :class:`~eocausal.options.EstimateOptions`.

This module sees only arrays and frames: embeddings are just more confounder columns.
"""

from __future__ import annotations

import json

import re
import sys
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from eocausal._types import ADJUSTMENTS, EffectRow, PropensityFit
from eocausal._validation import check_clusters
from eocausal.data.folds import grouped_folds
from eocausal.data.units import Units
from eocausal.diagnostics.balance import balance_table
from eocausal.diagnostics.overlap import check_overlap
from eocausal.errors import (DataQualityWarning, FewClustersWarning, InputError, NotEstimableError, OverlapError,
                             SeparationError)
from eocausal.estimators import weighting
from eocausal.estimators.aipw import aipw, crossfit_outcome
from eocausal.estimators.propensity import crossfit_propensity, fit_propensity, small_problem_threads
from eocausal.estimators.trimming import trim as trim_units
from eocausal.options import EstimateOptions
from eocausal.results import EffectTable

__all__ = ["estimate", "Formula", "EstimateOptions", "CORRECTION_CLUSTERS_PER_COEF", "AUTO_IN_SAMPLE"]

#: ``ipw_se='auto'`` corrects the IPW influence function for the estimated logistic propensity
#: only with at least this many clusters (or units) per propensity coefficient. Evidence
#: (benchmarks/results/coverage.md, 500 replications per design, cross-fitted Hajek): with 75 and
#: 150 clusters per coefficient the corrected SE matched the spread of the estimates (SE/SD
#: 0.92-0.93, coverage 0.940-0.944); with 37.5 it was too small (SE/SD 0.78, coverage 0.904), and
#: with 2.3 (64 embedding dimensions, 150 clusters) 0.70. 50 lies between; it is an empirical
#: threshold, not a theorem, and below it the conservative known-e IF is used.
CORRECTION_CLUSTERS_PER_COEF = 50
#: What ``crossfit='auto'`` fits on all units for the IPW rows: a logistic propensity with a fixed
#: penalty ('logit', a ``LogisticRegression``); then the estimate and the logistic score are one
#: M-estimator and the stacked sandwich is its influence function. 'ridge-logit' (penalty chosen by
#: cross-validation) and flexible classifiers are cross-fitted, with the known-e IF under
#: ``ipw_se='auto'``. Evidence (benchmarks/results/coverage.md, runs of 2026-12-03 13:13 and 13:53 UTC,
#: 500 replications per cell, G = 30-300 clusters, 3-64 propensity coefficients, Hajek ATE): fitted on
#: all units, the CV-tuned ridge penalty shrinks the propensity and biases Hajek towards the unadjusted
#: contrast by +0.6 to +1.4 SD (k <= 20; its sandwich SE itself is calibrated, SE/SD 0.84-0.96).
#: Cross-fitted (the default now), the bias is +0.1 to +0.6 SD; the corrected IF is too small in every
#: cell (SE/SD 0.52-0.93), the known-e IF gives SE/SD 0.85-1.04 and coverage 0.89-0.95 with 30-40
#: clusters and is conservative above (0.96-1.74; coverage 0.97-1.00). An unpenalised logit fitted on
#: all units has the sandwich that M-estimation theory covers (SE/SD 0.80-0.95, coverage 0.84-0.94,
#: bias +0.1 to +0.6 SD; with the true confounders and 300 clusters 0.900 / 0.91 / +0.10), and in a
#: check with the true confounders at 150 clusters it was the unbiased one (+0.03 SD, against -0.26
#: cross-fitted), so 'auto' keeps it in-sample. No IPW variant meets the study's goal in every cell;
#: AIPW comes closest (coverage 0.93-0.96 except where the embedding leaves residual confounding).
AUTO_IN_SAMPLE = "logistic models with a fixed penalty"
#: Cluster-robust SEs and normal intervals undercover with fewer clusters than this, or with fewer
#: treated or control clusters than FEW_ARM_CLUSTERS (Cameron, Gelbach and Miller 2008; MacKinnon and
#: Webb 2018): estimate() warns, naming the counts.
FEW_CLUSTERS = 30
FEW_ARM_CLUSTERS = 10
_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
#: why an IPW row's influence function treats the propensities as known (its se_type says which)
_KNOWN_E_WHY = {
    "trimming": "trimming",
    "model": "not a logistic model",
    "asked": "ipw_se='known-e'",
    "given": "propensities given",
    "few": f"fewer than {CORRECTION_CLUSTERS_PER_COEF} clusters per propensity coefficient",
    "cv": "cross-fitted, penalty chosen by cross-validation",
}


@dataclass(frozen=True)
class Formula:
    """A parsed ``"outcome ~ treatment | confounder + confounder"`` formula."""

    text: str
    outcome: str
    treatment: str
    confounders: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Formula":
        """Parse ``text``; errors quote the formula and say what form is expected."""
        form = "'outcome ~ treatment' or 'outcome ~ treatment | x1 + x2'"
        if not isinstance(text, str) or text.count("~") != 1:
            raise InputError(f"formula {text!r}: expected one '~', as in {form}")
        lhs, rhs = (s.strip() for s in text.split("~"))
        if rhs.count("|") > 1:
            raise InputError(f"formula {text!r}: at most one '|' (treatment | confounders), as in {form}")
        treat, _, conf = (s.strip() for s in rhs.partition("|"))
        if not re.fullmatch(_NAME, lhs or ""):
            raise InputError(f"formula {text!r}: the left side {lhs!r} must be one outcome column name")
        if not re.fullmatch(_NAME, treat or ""):
            raise InputError(f"formula {text!r}: the treatment {treat!r} must be one column name before '|'")
        confs: tuple[str, ...] = ()
        if conf:
            confs = tuple(c.strip() for c in conf.split("+"))
            bad = [c for c in confs if not re.fullmatch(_NAME, c)]
            if bad:
                raise InputError(
                    f"formula {text!r}: {bad} are not column names; transform columns in the data "
                    "frame first (eocausal formulas hold names joined by '+')"
                )
        return cls(text=text, outcome=lhs, treatment=treat, confounders=confs)


@dataclass(frozen=True)
class TrialData:
    """One trial's units, as arrays: what :func:`estimate_trial` needs.

    ``outcomes`` maps an outcome type to the outcome vector the rows are estimated on:
    ``{'observed': y}`` for :func:`estimate`; the corrected outcomes of the debiasers
    (``'predicted'``, ``'predicted+lcc'``, ...) for :func:`eocausal.debiased_effects`.
    """

    name: str
    w: np.ndarray
    outcomes: Mapping[str, np.ndarray]
    X: np.ndarray
    Z: np.ndarray | None = None
    clusters: np.ndarray | None = None  # integer codes
    coords: np.ndarray | None = None
    pcs: tuple | None = None
    scores: Mapping[str, np.ndarray] = field(default_factory=dict)  # given propensities
    fold_ids: np.ndarray | None = None
    conf_names: tuple[str, ...] = ()
    #: integer codes of the unit ids in sorted order: folds are dealt by these when there are no
    #: clusters, so the assignment depends on the ids and the seed, never on the row order
    id_codes: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.w)

    def subset(self, name: str, mask: np.ndarray, w: np.ndarray) -> "TrialData":
        """The units of ``mask`` (with treatment ``w``) as a trial of their own."""
        def take(a):
            return None if a is None else a[mask]

        return TrialData(name=name, w=w, outcomes={k: v[mask] for k, v in self.outcomes.items()},
                         X=self.X[mask], Z=take(self.Z), clusters=take(self.clusters), coords=take(self.coords),
                         pcs=None if self.pcs is None else (self.pcs[0][mask], self.pcs[1]),
                         scores={k: v[mask] for k, v in self.scores.items()}, fold_ids=take(self.fold_ids),
                         conf_names=self.conf_names, id_codes=take(self.id_codes))


@dataclass(frozen=True)
class TrialResult:
    """Rows of one trial, with the propensity fits and balance tables behind them."""

    rows: list
    fits: dict = field(default_factory=dict)
    balance: dict = field(default_factory=dict)


def estimate(
    data,
    formula_data=None,
    /,
    *,
    treatment: str | None = None,
    outcome: str | None = None,
    confounders: Sequence[str] | None = None,
    embeddings=None,
    clusters: str | np.ndarray | None = None,
    trials: str | Sequence[str] | None = None,
    trial: str = "all",
    propensity_scores=None,
    fold_ids=None,
    study: str = "",
    options: EstimateOptions | None = None,
    progress: bool | None = None,
    **settings,
) -> EffectTable:
    """Estimate average effects with several methods and adjustment sets side by side.

    Call it with units, a data frame, or a formula and a data frame::

        estimate(units, embeddings=Z)
        estimate(df, treatment="w", outcome="y", confounders=["x1"], embeddings=Z)
        estimate("y ~ w | x1 + x2", df, embeddings=Z, clusters="village", methods=["ipw-hajek"])

    Parameters
    ----------
    data : Units, DataFrame or str
        The units, or a formula (then the data frame comes second).
    treatment, outcome, confounders : str, str, list of str
        Column roles for a DataFrame (taken from ``Units`` otherwise).
    embeddings : array (n, d) or DataFrame indexed by unit id, optional
        Image embeddings, used as confounders in the ``image`` adjustments.
    clusters : str or array, optional
        Cluster column (or labels): folds keep clusters whole and SEs are cluster-robust.
        Defaults to the units' cluster (or image key) column.
    trials : str or list of str, optional
        Many trials in one call: the name of a trial column (each unit belongs to the trial
        its label names), or a list of treatment columns, one per trial, holding 1 (treated),
        0 (control) or missing (not in that trial), as in funder x sector designs. Embeddings
        and folds are shared; each trial gets its own propensity model; p-values are adjusted
        across trials (``p_holm``, ``p_bh``).
    trial : str
        Name of the single trial in the table (when ``trials`` is None).
    propensity_scores : array (n,) or dict of name -> array (n,), optional
        Out-of-fold propensities computed elsewhere, e.g. ``PropensityCNN(...).fit_oof(...)
        .oof_propensity_``. Each gives its own rows, with the adjustment named by its key
        ('given' for a bare array), next to the ``adjustments`` eocausal fits (pass
        ``adjustments=[]`` for only these). They are clipped and checked like fitted ones; their
        IPW SEs treat them as known (conservative), and AIPW's outcome models use every
        confounder and embedding column.
    fold_ids : array (n,), optional
        Cross-fitting fold of each unit (e.g. ``PropensityCNN``'s ``fold_ids_``). Folds must keep
        clusters whole. Replaces ``folds``/``seed`` for the fold assignment.
    study : str
        Study name for the table header.
    options : EstimateOptions, optional
        The settings as one object (e.g. shared by several calls); keywords in ``settings``
        replace its fields.
    progress : bool or None
        Report the stages (trial, adjustment, propensity or outcome model) on stderr. None
        (default): only when stderr is a terminal, and only once the call has run 3 s, so
        interactive sessions see long work and logs and pipes stay clean; True: always, at once;
        False: never.
    **settings
        Any field of :class:`~eocausal.options.EstimateOptions`: ``methods``, ``estimand``,
        ``adjustments``, ``folds``, ``clip``, ``trim``, ``propensity``, ``outcome_model``,
        ``seed``, ``alpha``, ``se``, ``n_boot``, ``ci``, ``ipw_se``, ``solver``, ``repeats``,
        ``min_arm`` (documented there). An unknown name is an error.

    Returns
    -------
    EffectTable
    """
    opts = EstimateOptions.build(options, **settings)
    multi = isinstance(trials, (list, tuple))
    units, conf_names = _as_units(data, formula_data, treatment, outcome, confounders, clusters,
                                  need_treatment=not multi)
    units, embeddings, dropped = _drop_units_without_embedding(units, embeddings)
    keep = None if dropped is None else dropped[1]
    y = units.y()
    n = len(y)
    X = units.frame[list(conf_names)].to_numpy(dtype=float) if conf_names else np.empty((n, 0))
    Z = _align_embeddings(embeddings, units)
    g = _cluster_codes(_per_unit(clusters, units, "clusters", keep) if not isinstance(clusters, str) else clusters,
                       units)
    cluster_name = clusters if isinstance(clusters, str) else (units.clusters or units.image_key)
    if clusters is not None and not isinstance(clusters, str):
        cluster_name = "clusters"
    shared = None
    if g is None and Z is not None:
        g, shared = _shared_embedding_clusters(Z)
        if g is not None:
            cluster_name = "shared embedding"
    adjustments = _adjustment_sets(opts.adjustments, X, Z)
    opts = replace(opts, adjustments=adjustments)
    trial_list = _trials(units, trials, trial)
    given = _given_scores(propensity_scores, units, keep)
    folds_given = _given_folds(_per_unit(fold_ids, units, "fold_ids", keep), n, g)
    coords = _coordinates(units)
    if coords is None and (opts.se == "conley" or opts.block_km is not None):
        what = "se='conley'" if opts.se == "conley" else f"block_km={opts.block_km:g}"
        raise InputError(f"{what} needs each unit's place: pass a GeoDataFrame, or Units.from_frame(df, lon=..., lat=..., "
                         "...) for a table with longitude/latitude columns")
    if opts.block_km is not None and folds_given is not None:
        raise InputError("block_km: spatial blocks decide the folds; drop fold_ids= or block_km=")
    if opts.repeats > 1 and folds_given is not None:
        raise InputError("repeats: repeated cross-fitting draws its own folds; drop fold_ids= or use repeats=1")
    weighting_asked = any(m != "dim" for m in opts.methods)
    if given and not weighting_asked:
        raise InputError("propensity_scores: they are used by the weighting methods and AIPW; add one to methods=")
    base = TrialData(name=trial, w=np.zeros(n), outcomes={"observed": y}, X=X, Z=Z, clusters=g,
                     coords=coords, pcs=_embedding_pcs(Z), scores=given, fold_ids=folds_given,
                     conf_names=tuple(conf_names), id_codes=_id_codes(units.ids))
    trial_data = [base.subset(name, mask, w_t) for name, mask, w_t in trial_list]
    if progress not in (None, True, False):
        raise InputError(f"progress={progress!r}: use True, False or None (on a terminal only)")
    bar = _stage_bar(progress)
    try:
        result = run_trials(opts, trial_data, cluster_name=cluster_name, raise_single=trials is None,
                            progress=None if bar is None else bar.stage)
    finally:
        if bar is not None:
            bar.close()
    rows = result.rows
    if opts.se in ("if", "bootstrap"):  # the wild bootstrap is the remedy; Conley SEs are not clustered
        _warn_few_clusters(rows, trial_data, cluster_name)
    w_all = units.w() if units.treatment is not None else None
    facts = dict(cluster_name=cluster_name, n_clusters=None if g is None else int(len(np.unique(g))),
                 folds_given=folds_given is not None, n_trials=len(trial_list),
                 weighting_without_confounders=weighting_asked and not adjustments and not given)
    notes = table_notes(rows, result.fits, result.balance, opts, **facts)
    if shared is not None:
        notes.insert(0, shared)
    if dropped is not None:
        notes.insert(0, dropped[0])
    source_note, source = embedding_source(embeddings)
    if source_note:
        notes.append(source_note)
    design = dict(study=study, n=n, n_treated=None if w_all is None else int(w_all.sum()),
                  n_clusters=facts["n_clusters"], outcome=units.outcome, treatment=units.treatment,
                  estimand=opts.estimand, trials=len(trial_list), propensity=_propensity_header(rows),
                  confounders=list(conf_names), embedding_dim=None if Z is None else int(Z.shape[1]),
                  outcome_sd=float(np.std(y, ddof=1)),
                  n_dropped=0 if dropped is None else int((~dropped[1]).sum()))
    if source is not None:
        design["embedding_source"] = source
    return EffectTable(rows=tuple(rows), notes=tuple(notes), design=design, propensities=result.fits,
                       balance=result.balance)


def run_trials(opts: EstimateOptions, trials: Sequence[TrialData], *, cluster_name: str | None = None,
               raise_single: bool = True,
               trial_hook: Callable[[EstimateOptions, TrialData, TrialResult], TrialResult] | None = None,
               progress: Callable[[str], None] | None = None) -> TrialResult:
    """:func:`estimate_trial` on every trial; repeated splits combined; p-values adjusted across trials.

    A trial that cannot be estimated (too few units in an arm, no overlap) gives rows marked not
    estimable, with the reason; with a single trial and ``raise_single`` the error is raised.
    ``trial_hook(opts, trial, result)`` may replace a trial's result (the debiased effects use it to
    replace SEs with their joint bootstrap); it sees the first split's propensities.
    ``progress(stage)``, when given, is called as each stage starts (see :func:`estimate_trial`).
    """
    rows: list[EffectRow] = []
    fits: dict[str, PropensityFit] = {}
    balance: dict[str, pd.DataFrame] = {}
    for t in trials:
        try:
            res = estimate_trial(opts, t, cluster_name, progress)
            if opts.repeats > 1:
                splits = [res.rows] + [estimate_trial(replace(opts, seed=opts.seed + r), t, cluster_name, progress).rows
                                       for r in range(1, opts.repeats)]
                res = replace(res, rows=_combine_splits(splits, _z(opts)))
            if trial_hook is not None:
                res = trial_hook(opts, t, res)
        except (NotEstimableError, OverlapError) as exc:
            if raise_single and len(trials) == 1:
                raise
            res = TrialResult(_not_estimable_rows(opts, t, str(exc)))
        rows += res.rows
        key = (lambda a: a) if len(trials) == 1 else (lambda a, nm=t.name: f"{nm}: {a}")
        fits.update({key(a): f for a, f in res.fits.items()})
        balance.update({key(a): b for a, b in res.balance.items()})
    if len(trials) > 1:
        rows = adjust_pvalues(rows)
    return TrialResult(rows, fits, balance)


def _z(opts: EstimateOptions) -> float:
    return float(stats.norm.ppf(1 - opts.alpha / 2))


def estimate_trial(opts: EstimateOptions, t: TrialData, cluster_name: str | None = None,
                   progress: Callable[[str], None] | None = None) -> TrialResult:
    """Every requested (method, adjustment, outcome) for one trial's units.

    For each adjustment set (and each set of given propensities): one fold assignment, the
    propensity fits (in-sample for the IPW rows when ``crossfit`` says so, cross-fitted for AIPW),
    then the IPW and AIPW rows of every outcome in ``t.outcomes``. Each row records the facts it
    was computed with (``folds``, ``propensity``, ``outcome_model``, ``se_type``), from which
    :func:`table_notes` writes the notes. ``progress(stage)``, when given, is called with
    'trial: adjustment: propensity' (and 'outcome model') as each starts.
    """
    first, y_obs = next(iter(t.outcomes.items()))  # the fits keep the first outcome's IF and regressions
    w, g, n = t.w, t.clusters, t.n
    n1 = int(w.sum())
    if min(n1, n - n1) < opts.min_arm:
        raise NotEstimableError(
            f"not estimable: {n1} treated and {n - n1} control units (minimum {opts.min_arm} per arm)")
    n_clusters = int(len(np.unique(g))) if g is not None else None
    base = dict(trial=t.name, n=n, n_treated=n1, n_clusters=n_clusters)

    def row(method, adjustment, est, estimand, outcome_type, boot=None, keep=None, se_note="", **extra):
        gg = g if keep is None or g is None else g[keep]
        cc = t.coords if keep is None or t.coords is None else t.coords[keep]
        se, lo, hi, p, se_type = _standard_error(opts, est, boot, gg, cc, cluster_name)
        fields_ = {**base, **extra, "se_type": se_type}
        if se_note:
            fields_["se_type"] = se_type.replace("IF", f"IF ({se_note})", 1)
        return EffectRow(estimand=estimand, method=method, adjustment=adjustment, outcome_type=outcome_type,
                         estimate=float(est.estimate), std_error=float(se), ci_low=float(lo), ci_high=float(hi),
                         p_value=float(p), **fields_)

    def boot_for(kind, **kw):
        if opts.se != "bootstrap":
            return None
        from eocausal.estimators import inference

        return lambda **b: getattr(inference, kind)(**kw, **b)

    rows: list[EffectRow] = []
    fits: dict[str, PropensityFit] = {}
    balance: dict[str, pd.DataFrame] = {}
    if "dim" in opts.methods:
        for ot, y in t.outcomes.items():
            dm = weighting.difference_in_means(y, w)
            rows.append(row("dim", "none", dm, "ATE", ot,
                            boot_for("bootstrap_ipw", y=y, w=w, e=np.full(n, n1 / n), estimator="hajek",
                                     estimand="ATE")))
    weighting_methods = [m for m in opts.methods if m in ("ipw-ht", "ipw-hajek")]
    if not weighting_methods and "aipw" not in opts.methods:
        return TrialResult(_constant_outcomes(rows, t), fits, balance)
    fold_key = _fold_key(opts, t)
    fold_ids = (grouped_folds(n, fold_key, opts.folds, opts.seed, stratify=w) if t.fold_ids is None else t.fold_ids)
    n_folds = int(len(np.unique(fold_ids)))
    X, Z = t.X, t.Z
    runs = [(adj, None) for adj in (opts.adjustments or ())] + list(t.scores.items())
    for adj, given in runs:
        if given is None:
            V = {"tabular": X, "image": Z, "tabular+image": np.hstack([X, Z]) if Z is not None else X}[adj]
            n_tab = {"tabular": None, "image": 0, "tabular+image": X.shape[1]}[adj]
        else:  # given propensities: the outcome models of AIPW use every confounder there is
            V = np.hstack([X, Z]) if Z is not None else X
            n_tab = X.shape[1] if Z is not None else None
        if progress is not None:
            progress(f"{t.name}: {adj}: propensity")
        where = adj if t.name == "all" else f"{t.name}: {adj}"
        in_sample = given is None and bool(weighting_methods) and _ipw_in_sample(opts, V, n_tab)
        folded = not in_sample or "aipw" in opts.methods  # some row uses out-of-fold nuisances
        layout = None
        if opts.solver == "native" and V.shape[1] and folded:
            from eocausal.estimators.glm import FoldLayout  # centred, scaled and sorted once for both nuisances

            layout = FoldLayout.by_fold_and_arm(V, fold_ids, w)
        det_cf: dict = {}
        e_cf = None
        if given is not None:
            e_cf = given
        elif folded:
            e_cf, _ = crossfit_propensity(V, w, clusters=fold_key, propensity=opts.propensity, seed=opts.seed,
                                          fold_ids=fold_ids, n_tabular=n_tab, solver=opts.solver, details=det_cf,
                                          layout=layout)
        det_is: dict = {}
        e_is = None
        if in_sample:
            e_is = fit_propensity(V, w, clusters=fold_key, propensity=opts.propensity, seed=opts.seed,
                                  n_tabular=n_tab, solver=opts.solver, details=det_is)
        model = "given" if given is not None else opts.propensity_name
        ipw = _Weighting.of(opts, t, e_is if in_sample else e_cf, where, folds=None if in_sample else n_folds,
                            model=model) if weighting_methods else None
        dr = (ipw if ipw is not None and not in_sample else
              _Weighting.of(opts, t, e_cf, where, folds=n_folds, model=model)) if "aipw" in opts.methods else None
        if ipw is not None:
            det = det_is if in_sample else det_cf
            why = _known_e_reason(opts, det, given, V, n if g is None else n_clusters, in_sample)
            correct = why is None and opts.se != "bootstrap"
            if correct:
                C = det["C"] if det.get("C") is not None else np.full(1, det["spec"].C)
                Xd, pen = _logit_design(V, det["spec"], C)
        psis: dict[str, np.ndarray] = {}
        mu = (None, None)
        for ot, y in t.outcomes.items():
            if ipw is not None:
                keep, yk, wk, ek = ipw.keep, y[ipw.keep], w[ipw.keep], ipw.e[ipw.keep]
                for m in weighting_methods:
                    fn = weighting.horvitz_thompson if m == "ipw-ht" else weighting.hajek
                    kind = "ht" if m == "ipw-ht" else "hajek"
                    boot = boot_for("bootstrap_ipw", y=yk, w=wk, e=ek, estimator=kind, estimand=opts.estimand)
                    pe = fn(yk, wk, ek, opts.estimand)
                    if correct:
                        from eocausal.estimators.inference import logit_adjusted_psi

                        pe = replace(pe, psi=logit_adjusted_psi(pe, y, w, ipw.e_raw, Xd, estimator=kind,
                                                                estimand=opts.estimand, penalty=pen,
                                                                clip=opts.clip))
                    note = ("" if opts.se == "bootstrap" else "logit-corrected" if correct
                            else f"known e: {_KNOWN_E_WHY[why]}")
                    rows.append(row(m, adj, pe, opts.estimand, ot, boot, keep if opts.trim is not None else None,
                                    se_note=note, **ipw.extra))
                    if ot == first:
                        psis[m] = pe.psi
            if dr is not None:
                if progress is not None:
                    progress(f"{t.name}: {adj}: outcome model ({ot})")
                mu0, mu1 = crossfit_outcome(V, y, w, fold_ids, opts.outcome_model, n_tabular=n_tab, seed=opts.seed,
                                            solver=opts.solver, layout=layout)
                keep = dr.keep
                yk, wk, ek = y[keep], w[keep], dr.e[keep]
                boot = boot_for("bootstrap_aipw", y=yk, w=wk, e=ek, mu0=mu0[keep], mu1=mu1[keep],
                                estimand=opts.estimand)
                pe = aipw(yk, wk, ek, mu0[keep], mu1[keep], opts.estimand)
                rows.append(row("aipw", adj, pe, opts.estimand, ot, boot, keep if opts.trim is not None else None,
                                outcome_model=opts.outcome_model_name, **dr.extra))
                if ot == first:
                    psis["aipw"] = pe.psi
                    mu = (mu0, mu1)
        main = ipw if ipw is not None else dr
        fits[adj] = PropensityFit(adjustment=adj, e_raw=main.e_raw, e=main.e, w=w, clip=opts.clip,
                                  n_clipped=main.n_clipped, folds=n_folds, model=model, y=y_obs, mu0=mu[0],
                                  mu1=mu[1], psi=psis, fold_ids=fold_ids, in_sample=in_sample,
                                  e_aipw=dr.e if dr is not None and dr is not main else None)
        if not X.shape[1] and Z is None and t.coords is None:
            continue  # nothing to balance (given propensities, no confounders)
        w1, w0 = weighting.arm_weights(w, main.e, opts.estimand)
        with small_problem_threads(V):
            balance[adj] = balance_table(X if X.shape[1] else None, w, w1 + w0,
                                         names=list(t.conf_names) or None,
                                         embeddings=Z if t.pcs is None else None, pcs=t.pcs, coords=t.coords,
                                         warn=False, estimand=opts.estimand)
    return TrialResult(_constant_outcomes(rows, t), fits, balance)


@dataclass(frozen=True)
class _Weighting:
    """One set of propensities, clipped, checked and (optionally) trimmed, with its row facts."""

    e_raw: np.ndarray
    e: np.ndarray
    n_clipped: int
    keep: np.ndarray
    extra: dict

    @classmethod
    def of(cls, opts: EstimateOptions, t: TrialData, e_raw: np.ndarray, where: str, *, folds: int | None,
           model: str) -> "_Weighting":
        w, g, n = t.w, t.clusters, t.n
        e = np.clip(e_raw, opts.clip, 1 - opts.clip)
        n_clipped = int(np.sum(e != e_raw))
        _check_overlap(e_raw, w, opts.clip, where, opts.estimand)
        # trimming (distinct from clipping): drop units outside [a, 1 - a]; the estimand becomes
        # the effect in the overlap population, and the rows say so
        keep, extra = np.ones(n, bool), {}
        if opts.trim is not None:
            tr = trim_units(e_raw, opts.trim, w)
            keep = tr.keep
            extra = dict(n_trimmed=tr.n_trimmed, n=int(keep.sum()), n_treated=int(w[keep].sum()),
                         n_clusters=None if g is None else int(len(np.unique(g[keep]))),
                         note=f"trimmed to {tr.threshold:.3g} <= e <= {1 - tr.threshold:.3g}: "
                              "effect in the overlap population")
        wk = w[keep]
        w1k, w0k = weighting.arm_weights(wk, e[keep], opts.estimand)
        extra.update(ess_treated=weighting.effective_sample_size(w1k[wk == 1]),
                     ess_control=weighting.effective_sample_size(w0k[wk == 0]), clip=opts.clip,
                     n_clipped=n_clipped, folds=folds, propensity=model)
        return cls(e_raw, e, n_clipped, keep, extra)


def _standard_error(opts: EstimateOptions, est, boot, clusters, coords, cluster_name):
    """(se, ci_low, ci_high, p_value, se_type) of one row under ``opts.se``.

    'if': CR1 cluster-robust SE with t(G - 1) intervals and p-values (iid: normal); 'bootstrap':
    the SD and interval of the draws; 'wild': the wild (cluster) bootstrap's test-inversion
    interval and p-value around the CR1 SE; 'conley': the spatial-HAC SE with normal intervals.
    """
    from eocausal.estimators import robust_se

    G = None if clusters is None else int(len(np.unique(clusters)))
    by = f" by {cluster_name}" if G is not None else ""
    if opts.se == "bootstrap":
        b = boot(clusters=clusters, n_boot=opts.n_boot, seed=opts.seed)
        se = b.std_error
        lo, hi = b.confint(opts.alpha, kind=opts.ci)
        p = 2 * stats.norm.sf(abs(est.estimate / se)) if se > 0 else np.nan
        return se, lo, hi, p, f"bootstrap (B={opts.n_boot}, {opts.ci}" + (f", clusters {cluster_name})" if G else ")")
    if opts.se == "wild":
        wb = robust_se.wild_cluster_bootstrap(est.psi, est.jacobian, est.estimate, clusters, n_boot=opts.n_boot,
                                              weights=opts.wild_weights, alpha=opts.alpha, seed=opts.seed)
        draws = f"all {wb.n_boot} sign vectors" if wb.enumerated else f"{wb.n_boot} draws"
        kind = "wild cluster bootstrap" if G is not None else "wild bootstrap"
        return (wb.std_error, wb.ci_low, wb.ci_high, wb.p_value,
                f"IF, {kind}{by} ({wb.weights}, {draws}; interval by test inversion)")
    if opts.se == "conley":
        se = robust_se.conley_se(est.psi, coords, opts.conley_km, kernel=opts.conley_kernel)
        crit = robust_se.t_critical(opts.alpha, None)
        p = 2 * stats.norm.sf(abs(est.estimate / se)) if se > 0 else np.nan
        return (se, est.estimate - crit * se, est.estimate + crit * se, p,
                f"IF, Conley ({opts.conley_kernel}, {opts.conley_km:g} km)")
    se, _ = weighting.se_from_psi(est.psi, clusters)
    crit = robust_se.t_critical(opts.alpha, G)
    if G is None:
        p = 2 * stats.norm.sf(abs(est.estimate / se)) if se > 0 else np.nan
        se_type = "IF, iid"
    else:
        se *= robust_se.cr1_factor(G)
        p = 2 * stats.t.sf(abs(est.estimate / se), G - 1) if se > 0 else np.nan
        se_type = f"IF, clustered{by} (CR1, t with {G - 1} df)"
    return se, est.estimate - crit * se, est.estimate + crit * se, p, se_type


def _fold_key(opts: EstimateOptions, t: TrialData) -> np.ndarray:
    """Labels the folds keep whole: the clusters (else the unit ids), merged with spatial blocks."""
    key = t.clusters if t.clusters is not None else t.id_codes
    if opts.block_km is None:
        return key
    from eocausal.data.folds import merge_groups, spatial_blocks

    blocks = spatial_blocks(t.coords, opts.block_km)
    key = blocks if t.clusters is None else merge_groups(t.clusters, blocks)
    n_groups = int(len(np.unique(key)))
    if t.fold_ids is None and n_groups < opts.folds:
        merged = "" if t.clusters is None else " (blocks and clusters that share units merged)"
        raise InputError(
            f"block_km={opts.block_km:g}: the units fall into {n_groups} group(s) of {opts.block_km:g} km blocks"
            f"{merged}, fewer than folds={opts.folds}; use smaller blocks, finer clusters or fewer folds")
    return key


def _ipw_in_sample(opts: EstimateOptions, V: np.ndarray, n_tab) -> bool:
    """Whether the IPW rows' propensity is fitted on all units (``crossfit``; see :data:`AUTO_IN_SAMPLE`)."""
    if opts.crossfit is True or V.shape[1] == 0:
        return False
    if opts.crossfit is False:
        return True
    from eocausal.estimators.learners import logistic_spec

    spec = logistic_spec(opts.propensity, n_tab)
    return spec is not None and spec.C is not None  # a fixed penalty (AUTO_IN_SAMPLE)


def _constant_outcomes(rows: list[EffectRow], t: TrialData) -> list[EffectRow]:
    """Rows of an outcome that is constant in the trial: not estimable (estimate and SE are 0 by
    construction, which would read as p = 0)."""
    const = {ot: y[0] for ot, y in t.outcomes.items() if len(y) and np.ptp(y) == 0}
    if not const:
        return rows
    nan = float("nan")
    return [replace(r, estimate=nan, std_error=nan, ci_low=nan, ci_high=nan, p_value=nan,
                    note=f"not estimable: the outcome is constant in this trial (every unit has {const[r.outcome_type]:g})")
            if r.outcome_type in const else r for r in rows]


def _known_e_reason(opts: EstimateOptions, det: dict, given, V: np.ndarray, units_or_clusters: int,
                    in_sample: bool = False) -> str | None:
    """Why the IPW influence function treats e as known (a key of _KNOWN_E_WHY), or None to correct it.

    In-sample logistic fits are always corrected (the stacked sandwich is their exact influence
    function); cross-fitted ones by ``ipw_se`` and :data:`CORRECTION_CLUSTERS_PER_COEF`.
    """
    if given is not None:
        return "given"
    if opts.trim is not None:
        return "trimming"
    spec = det.get("spec")
    if spec is None or (det.get("C") is None and spec.C is None) or V.shape[1] == 0:
        return "model"
    if opts.ipw_se == "known-e":
        return "asked"
    if opts.ipw_se == "auto" and not in_sample:
        if spec.C is None:  # a CV-tuned penalty: the corrected IF was too small (AUTO_IN_SAMPLE)
            return "cv"
        if units_or_clusters < CORRECTION_CLUSTERS_PER_COEF * (V.shape[1] + 1):
            return "few"
    return None


def table_notes(rows: Sequence[EffectRow], fits: Mapping[str, PropensityFit], balance: Mapping[str, pd.DataFrame],
                opts: EstimateOptions, *, cluster_name: str | None, n_clusters: int | None, folds_given: bool = False,
                n_trials: int = 1, weighting_without_confounders: bool = False, se_notes: bool = True) -> list[str]:
    """The numbered notes of a table, written from what the rows say was done.

    ``se_notes=False`` leaves the standard-error notes to the caller (the debiased effects write
    their own, for their joint bootstrap).
    """
    done = [r for r in rows if np.isfinite(r.estimate)]
    level = int(round(100 * (1 - opts.alpha)))
    notes: list[str] = []
    grouped = f" of {cluster_name} ({n_clusters} clusters)" if n_clusters is not None else ""
    if se_notes and any(r.se_type.startswith("bootstrap") for r in done):
        notes.append(f"Standard errors from {opts.n_boot} {'cluster ' if n_clusters is not None else ''}bootstrap "
                     f"draws{grouped} with the cross-fitted nuisances held fixed; {level}% {opts.ci} intervals.")
    if se_notes and any(r.se_type.startswith("IF") for r in done):
        notes.append(_se_note(opts, cluster_name, n_clusters, level))
    fitted = [r for r in done if r.propensity not in ("", "given")]
    folds_used = sorted({r.folds for r in done if r.folds is not None})
    folds_txt = " or ".join(str(k) for k in folds_used)
    if fitted:
        model = fitted[0].propensity
        model_txt = ("ridge-logistic (tabular columns standardised, embeddings scaled as one block), "
                     "penalty chosen by grouped 3-fold CV" if model == "ridge-logit" else model)
        in_sample = sorted({r.method for r in fitted if r.folds is None})
        crossfit = sorted({r.method for r in fitted if r.folds is not None})
        parts = []
        if in_sample:
            parts.append(f"{', '.join(in_sample)}: one fit on all units (crossfit={opts.crossfit!r}), so the "
                         "estimate and the logistic score are one M-estimator")
        if crossfit:
            parts.append(f"{', '.join(crossfit)}: out-of-fold predictions from {folds_txt} cross-fitting folds"
                         + (" (the fold_ids given)" if folds_given else "")
                         + (f" grouped by {cluster_name}" if n_clusters is not None else "")
                         + (f" and {opts.block_km:g} km spatial blocks" if opts.block_km is not None else ""))
        notes.append(f"Propensity: {model_txt}; " + "; ".join(parts) + ".")
    given = sorted({r.adjustment for r in done if r.propensity == "given"})
    if given:
        notes.append(f"Propensity scores given ({', '.join(given)}): used as passed (then clipped); their IPW "
                     "standard errors treat them as known, which is conservative for the ATE when they were "
                     "estimated.")
    if fits:
        clipped = ", ".join(f"{a}: {f.n_clipped}" for a, f in fits.items())
        notes.append(f"Propensities clipped to [{opts.clip:g}, {1 - opts.clip:g}] (units clipped: {clipped}); "
                     "clipping keeps every unit, unlike trimming.")
    types = {r.se_type for r in done if r.method.startswith("ipw")}
    if any("logit-corrected" in s for s in types):
        notes.append("IPW rows with se_type 'IF (logit-corrected)' account for the estimated logistic propensity: "
                     "the influence function is corrected by its projection on the logistic score (Lunceford and "
                     "Davidian 2004), with the ridge penalty in the information.")
    reasons = [why for why in _KNOWN_E_WHY.values() if any(f"known e: {why}" in s for s in types)]
    if reasons:
        notes.append("IPW rows with se_type 'IF (known e: ...)' treat the propensities as known ("
                     + "; ".join(reasons) + "), which is conservative for the ATE (Lunceford and Davidian 2004).")
    aipw_rows = [r for r in done if r.method == "aipw"]
    if aipw_rows:
        om = ", ".join(sorted({r.outcome_model for r in aipw_rows if r.outcome_model}))
        notes.append(f"AIPW: outcome regressions ({om}) fitted by arm on the same {folds_txt} folds; "
                     "doubly robust score of Robins, Rotnitzky and Zhao (1994) as DoubleML's IRM.")
    if weighting_without_confounders:
        notes.append("No confounders, embeddings or propensity scores were given, so only the difference in "
                     "means was estimated; pass confounders= or embeddings= for IPW and AIPW.")
    if n_trials > 1:
        notes.append(f"{n_trials} trials; p_holm and p_bh adjust p-values across trials within each (estimand, "
                     "method, adjustment, outcome) by Holm's step-down and Benjamini-Hochberg. Trials with fewer "
                     f"than {opts.min_arm} treated or control units are reported as not estimable.")
    worst = {a: int(b["imbalanced"].sum()) for a, b in balance.items() if b["imbalanced"].any()}
    if worst:
        notes.append("Balance: rows with |SMD| > 0.1 after weighting, by adjustment: "
                     + ", ".join(f"{a}: {k}" for a, k in worst.items())
                     + " (table.balance[adjustment] has the details).")
    return notes


def _se_note(opts: EstimateOptions, cluster_name: str | None, n_clusters: int | None, level: int) -> str:
    """The note on influence-function standard errors under ``opts.se``."""
    grouped = n_clusters is not None
    if opts.se == "wild":
        draws = f"{opts.wild_weights} weights, up to {opts.n_boot} draws (all sign vectors when fewer)"
        return (f"Standard errors from the influence function{' (CR1, clustered by ' + str(cluster_name) + ')' if grouped else ''}; "
                f"p-values and {level}% intervals from the wild {'cluster ' if grouped else ''}bootstrap of the "
                f"influence function with the null imposed ({draws}), the interval by inverting the test "
                "(Kline and Santos 2012; MacKinnon and Webb 2018). Nuisances are held at their estimates.")
    if opts.se == "conley":
        return (f"Conley (1999) spatial-HAC standard errors: pairs of units within {opts.conley_km:g} km, "
                f"{opts.conley_kernel} kernel on great-circle distances; {level}% normal intervals.")
    if grouped:
        return (f"Standard errors from the influence function, clustered by {cluster_name} ({n_clusters} "
                "clusters) with the CR1 factor sqrt(G/(G-1)); p-values and "
                f"{level}% intervals from t with G - 1 degrees of freedom (Cameron, Gelbach and Miller 2008).")
    return f"Standard errors from the influence function (iid). {level}% normal intervals."


def _propensity_header(rows: Sequence[EffectRow]) -> str:
    """The propensity models the rows used, for the table header ('' when none)."""
    return ", ".join(dict.fromkeys(r.propensity for r in rows if r.propensity and np.isfinite(r.estimate)))


def _coordinates(units: Units) -> np.ndarray | None:
    """Longitude/latitude of each unit's centroid (for the coordinates' balance), or None."""
    if not units.has_place:
        return None
    geom = units.geometry
    if not units.crs.is_geographic:
        geom = geom.to_crs("EPSG:4326")
    pts = geom.representative_point() if not (geom.geom_type == "Point").all() else geom
    return np.column_stack([pts.x.to_numpy(), pts.y.to_numpy()])


class _StageBar:
    """Stages of :func:`estimate` on stderr: a tqdm counter shown once the call has run 3 s."""

    def __init__(self, delay: float = 3.0):
        from tqdm.auto import tqdm

        # shown at once (delay 0): every stage is drawn; else tqdm's usual refresh interval
        self.bar = tqdm(desc="estimate", unit="stage", delay=delay, leave=False, file=sys.stderr,
                        mininterval=0.0 if delay == 0 else 0.1, miniters=1 if delay == 0 else None)

    def stage(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _stage_bar(progress: bool | None = None) -> _StageBar | None:
    """A :class:`_StageBar` for ``progress``: True (shown at once), False (None), or None: when
    stderr is a terminal (as ``embed(progress=None)``), shown after 3 s."""
    if progress is not None:
        return _StageBar(delay=0.0) if progress else None
    try:
        tty = bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stderr
        tty = False
    return _StageBar() if tty else None


def _embedding_pcs(Z: np.ndarray | None, k: int = 5):
    """Scores and variance shares of the embeddings' leading principal components (one PCA per call)."""
    if Z is None or not np.ptp(Z, axis=0).any():
        return None
    from sklearn.decomposition import PCA

    # a full SVD costs O(n d min(n, d)): 7 s at d = 2,048 on the Uganda data; the randomized one
    # (Halko et al. 2011, fixed seed) gives the same 5 leading PCs to 1e-11 there in 0.3 s
    big = min(Z.shape) >= 500
    pca = PCA(n_components=int(min(k, Z.shape[1], Z.shape[0])), svd_solver="randomized" if big else "full",
              random_state=0 if big else None).fit(Z)
    return pca.transform(Z), pca.explained_variance_ratio_


def _logit_design(V: np.ndarray, spec, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[1, V standardised] and the penalty on it implied by the per-fold inverse penalties ``C``."""
    from eocausal.estimators.glm import penalty_weights

    sd = V.std(axis=0)
    scale = np.where(sd > 0, sd, 1.0)
    Xd = np.hstack([np.ones((len(V), 1)), (V - V.mean(axis=0)) / scale])
    lam = float(np.median(1.0 / np.asarray(C, dtype=float)))
    pen = np.r_[0.0, lam * penalty_weights(spec.scaler, spec.n_tabular, np.ones(V.shape[1]), scale)]
    return Xd, pen


def _given_scores(scores, units: Units, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Validated ``propensity_scores``: name -> array (n,) strictly inside (0, 1), aligned on the unit ids."""
    if scores is None:
        return {}
    n = units.n
    items = scores.items() if isinstance(scores, dict) else [("given", scores)]
    items = [(k, _per_unit(v, units, f"propensity_scores[{k!r}]", keep)) for k, v in items]
    out = {}
    for key, arr in items:
        if not isinstance(key, str) or not key or key in ADJUSTMENTS:
            raise InputError(f"propensity_scores: name {key!r} must be a non-empty string other than "
                             f"{list(ADJUSTMENTS)}")
        a = np.asarray(arr, dtype=float)
        if a.shape != (n,):
            raise InputError(f"propensity_scores[{key!r}]: expected shape ({n},), got {a.shape}")
        bad = ~np.isfinite(a) | (a <= 0) | (a >= 1)
        if bad.any():
            raise InputError(f"propensity_scores[{key!r}]: {int(bad.sum())} values are not strictly inside (0, 1) "
                             f"(first at rows {np.flatnonzero(bad)[:5].tolist()}); pass probabilities, unclipped or "
                             "clipped away from 0 and 1")
        out[key] = a
    return out


def _given_folds(fold_ids, n: int, g) -> np.ndarray | None:
    """Validated ``fold_ids``: n labels, at least 2 folds, clusters never split."""
    if fold_ids is None:
        return None
    f = np.asarray(fold_ids)
    if f.shape != (n,):
        raise InputError(f"fold_ids: expected shape ({n},), got {f.shape}")
    if pd.isna(f).any() if f.dtype == object else (np.issubdtype(f.dtype, np.floating) and np.isnan(f).any()):
        raise InputError("fold_ids: missing values; give every unit a fold")
    codes = pd.factorize(f, sort=True)[0]
    if codes.max() < 1:
        raise InputError("fold_ids: need at least 2 folds for cross-fitting")
    if g is not None:
        per = pd.Series(codes).groupby(np.asarray(g)).nunique()
        split = per[per > 1]
        if len(split):
            raise InputError(f"fold_ids: {len(split)} clusters straddle folds (e.g. cluster codes "
                             f"{split.index[:5].tolist()}); cross-fitting folds must keep clusters whole")
    return codes


def _combine_splits(splits: list[list[EffectRow]], z: float) -> list[EffectRow]:
    """Median estimate and Chernozhukov et al. (2018, eq. 3.8) SE over repeated cross-fitting splits."""
    from eocausal.estimators.aipw import combine_repeated

    out = []
    for rows in zip(*splits):
        est, se = combine_repeated([r.estimate for r in rows], [r.std_error for r in rows], "median")
        stat = est / se if se > 0 else np.nan
        r0 = rows[0]
        note = "; ".join(x for x in (r0.note, f"median over {len(rows)} cross-fitting splits") if x)
        out.append(replace(r0, estimate=float(est), std_error=float(se), ci_low=float(est - z * se),
                           ci_high=float(est + z * se), p_value=float(2 * stats.norm.sf(abs(stat))),
                           se_type=f"{r0.se_type}; {len(rows)} splits (median rule)", note=note))
    return out


def _not_estimable_rows(opts: EstimateOptions, t: TrialData, why: str) -> list[EffectRow]:
    nan = float("nan")
    g = t.clusters
    cells = ([("dim", "none", "ATE")] if "dim" in opts.methods else []) + [
        (m, a, opts.estimand) for a in [*(opts.adjustments or ()), *t.scores] for m in opts.methods if m != "dim"]
    return [EffectRow(trial=t.name, estimand=est, method=m, adjustment=a, outcome_type=ot, estimate=nan,
                      std_error=nan, ci_low=nan, ci_high=nan, p_value=nan, n=t.n, n_treated=int(t.w.sum()),
                      n_clusters=None if g is None else int(len(np.unique(g))), note=why)
            for ot in t.outcomes for m, a, est in cells]


def adjust_pvalues(rows: Sequence[EffectRow]) -> list[EffectRow]:
    """Holm and Benjamini-Hochberg across trials, within each (estimand, method, adjustment, outcome_type)."""
    from statsmodels.stats.multitest import multipletests

    out = list(rows)
    families: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if np.isfinite(r.p_value):
            families.setdefault((r.estimand, r.method, r.adjustment, r.outcome_type), []).append(i)
    for idx in families.values():
        p = np.array([rows[i].p_value for i in idx])
        holm = multipletests(p, method="holm")[1]
        bh = multipletests(p, method="fdr_bh")[1]
        for j, i in enumerate(idx):
            out[i] = replace(rows[i], p_holm=float(holm[j]), p_bh=float(bh[j]))
    return out


def _adjustment_sets(adjustments, X, Z) -> tuple[str, ...]:
    possible = []
    if X.shape[1]:
        possible.append("tabular")
    if Z is not None:
        possible.append("image")
    if X.shape[1] and Z is not None:
        possible.append("tabular+image")
    chosen = tuple(possible) if adjustments is None else tuple(adjustments)
    for a in chosen:
        if a not in possible:
            need = {"tabular": "confounders", "image": "embeddings", "tabular+image": "confounders and embeddings"}[a]
            raise InputError(f"adjustments: {a!r} needs {need}, which were not given")
    return chosen


def _trials(units: Units, trials, default_name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, unit mask, treatment of the masked units) for each trial."""
    n = units.n
    if trials is None:
        return [(default_name, np.ones(n, bool), units.w())]
    if isinstance(trials, str):
        labels = _label_column(units, "trials", trials, "trial labels")
        w = units.w()
        return [(str(t), (labels == t).to_numpy(), w[(labels == t).to_numpy()])
                for t in sorted(pd.unique(labels), key=str)]
    out = []
    for col in trials:
        if col not in units.frame.columns:
            raise InputError(f"trials: treatment column {col!r} is not in the data")
        v = pd.to_numeric(units.frame[col], errors="coerce")
        raw = units.frame[col]
        bad = raw.notna() & ~v.isin([0, 1])
        if bad.any():
            raise InputError(
                f"trials: column {col!r} must hold 1 (treated), 0 (control) or missing (not in the "
                f"trial); rows {units.ids[bad.to_numpy()][:8].tolist()} hold other values")
        mask = v.notna().to_numpy()
        out.append((str(col), mask, v[mask].to_numpy(dtype=float)))
    if not out:
        raise InputError("trials: an empty list; name at least one treatment column")
    return out


# ----------------------------------------------------------------------------- helpers
def _as_units(data, formula_data, treatment, outcome, confounders, clusters, need_treatment=True):
    if isinstance(data, str):
        f = Formula.parse(data)
        if formula_data is None:
            raise InputError(f"formula {data!r}: pass the data frame as the second argument")
        if any(v is not None for v in (treatment, outcome, confounders)):
            raise InputError("formula: give the roles in the formula or as keywords, not both")
        data, treatment, outcome, confounders = formula_data, f.treatment, f.outcome, f.confounders
    elif formula_data is not None:
        raise InputError("estimate: a second positional argument is only taken after a formula string")
    if isinstance(data, Units):
        if treatment is not None or outcome is not None:
            raise InputError("estimate: units carry their treatment and outcome; do not pass them again")
        conf = tuple(data.covariates) if confounders is None else tuple(confounders)
        missing = [c for c in conf if c not in data.frame.columns]
        if missing:
            raise InputError(f"confounders: {missing} are not columns of the units")
        if data.outcome is None or (need_treatment and data.treatment is None):
            raise InputError("estimate: the units need a treatment and an outcome column")
        return data, conf
    if isinstance(data, pd.DataFrame):
        if outcome is None or (need_treatment and treatment is None):
            raise InputError("estimate: name the treatment= and outcome= columns (or use a formula)")
        conf = tuple(confounders or ())
        cl = clusters if isinstance(clusters, str) else None
        return Units.from_frame(data, treatment=treatment, outcome=outcome, covariates=conf, clusters=cl), conf
    raise InputError(f"data: expected Units, a DataFrame or a formula string, got {type(data).__name__}")


def _per_unit(value, units: Units, name: str, keep: np.ndarray | None = None):
    """The one alignment rule for per-unit inputs.

    A pandas Series or DataFrame is aligned on the unit ids: its index must hold exactly the units'
    ids (in any order); anything else is an error, as is a default RangeIndex that is not the ids in
    row order (a frame that lost its ids would otherwise be matched by accident). An array is
    positional and must have one entry per unit (per unit before ``keep`` dropped some).
    """
    if value is None or isinstance(value, str):
        return value
    ids = pd.Index(units.ids)
    if isinstance(value, (pd.Series, pd.DataFrame)):
        idx = value.index
        if isinstance(idx, pd.RangeIndex) and idx.name is None and not idx.equals(ids):
            raise InputError(
                f"{name}: a {type(value).__name__} with a default RangeIndex, while the unit ids are "
                f"{ids[:5].tolist()}...; pandas inputs are matched to units by their index: set it to the "
                f"unit ids ({name}.index = units.ids), or pass {name}.to_numpy() to match by position")
        if _id_kind(idx) != _id_kind(ids):
            raise InputError(f"{name}: its index holds {idx.dtype} ids but the units' ids are {ids.dtype}; "
                             f"convert one of them (e.g. {name}.index = {name}.index.astype({str(ids.dtype)!r}))")
        if not idx.is_unique:
            raise InputError(f"{name}: duplicate ids in its index, e.g. {idx[idx.duplicated()][:5].tolist()}")
        missing, extra = ids.difference(idx), idx.difference(ids)
        if len(missing) or len(extra):
            raise InputError(f"{name}: its index must hold exactly the unit ids; "
                             + (f"no entry for {missing[:8].tolist()} ({len(missing)} in all)" if len(missing) else "")
                             + ("; " if len(missing) and len(extra) else "")
                             + (f"{len(extra)} ids that are not units, e.g. {extra[:5].tolist()}" if len(extra) else ""))
        return value.loc[ids].to_numpy()
    arr = np.asarray(value)
    if keep is not None and arr.ndim >= 1 and arr.shape[0] == len(keep) and len(keep) != units.n:
        arr = arr[keep]
    if arr.ndim == 0 or arr.shape[0] != units.n:
        raise InputError(f"{name}: {0 if arr.ndim == 0 else arr.shape[0]} entries for {units.n} units; an array "
                         "is matched by position and needs one entry per unit (or pass a Series indexed by unit id)")
    return arr


def _id_kind(index: pd.Index) -> str:
    """'integer', 'string', 'float' or the dtype's name: ids of different kinds never match."""
    if pd.api.types.is_integer_dtype(index.dtype):
        return "integer"
    if pd.api.types.is_float_dtype(index.dtype):
        return "float"
    if pd.api.types.is_string_dtype(index.dtype) or index.dtype == object:
        return "string"
    return str(index.dtype)


def embedding_source(embeddings) -> tuple[str | None, dict | None]:
    """(note, provenance) of embeddings read from a published product or chip table.

    :meth:`~eocausal.data.embedding_products.EmbeddingProduct.sample` and
    :meth:`~eocausal.data.chip_tables.ChipTable.join` put the product's facts in
    ``attrs['provenance']``; the note names the product, version, year(s), licence and the
    attribution its licence requires, the join rule of a chip table, and post-treatment layers
    kept with ``allow_post_treatment=True``. Frames without them (``eocausal.embed``'s own, arrays)
    give (None, None).
    """
    prov = embeddings.attrs.get("provenance") if isinstance(embeddings, pd.DataFrame) else None
    if isinstance(prov, dict) and isinstance(prov.get("imagery"), dict) and not isinstance(prov.get("product"), dict):
        return _imagery_note(prov), json.loads(json.dumps(prov, default=str))
    if not isinstance(prov, dict) or not isinstance(prov.get("product"), dict):
        return None, None
    p = prov["product"]
    name = " ".join(str(p[k]) for k in ("name", "model") if p.get(k)) or "an embedding product"
    years = prov.get("years") or ([p["year"]] if p.get("year") else [])
    parts = [f"Image embeddings: {name}" + (f" {p['version']}" if p.get("version") else "")
             + (f", {'years' if len(years) > 1 else 'year'} {', '.join(str(y) for y in years)}" if years else "")]
    if p.get("licence"):
        parts.append(f"licence {p['licence']}")
    if p.get("attribution"):
        parts.append(f"attribution: \"{p['attribution']}\"")
    join = prov.get("join")
    if isinstance(join, dict):
        far = join.get("largest_distance_m")
        parts.append(f"units matched to chips by {join.get('how')}"
                     + (f" (largest distance {far:.0f} m)" if isinstance(far, (int, float)) else ""))
    note = "; ".join(parts) + "."
    if prov.get("post_treatment_allowed") and prov.get("post_treatment_units"):
        note += (f" {prov['post_treatment_units']} units' embeddings come from a layer of their treatment's year or "
                 "later (allow_post_treatment=True): post-treatment imagery, which the treatment may have changed, "
                 "so adjusting for it can bias the effects.")
    return note, json.loads(json.dumps(prov, default=str))


def _imagery_note(prov: dict) -> str:
    """The note of embeddings an encoder computed from catalogued imagery (a STAC source)."""
    im, enc = prov["imagery"], prov.get("encoder") or {}
    items, dates = im.get("items") or [], im.get("dates") or []
    span = (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}") if dates else "undated"
    where = f" of {im['catalog']}" if im.get("catalog") else ""
    note = (f"Image embeddings: {enc.get('class', 'an encoder')} of STAC imagery{where}: {len(items)} items "
            f"dated {span}, bands {', '.join(map(str, im.get('bands') or []))}.")
    if im.get("post_treatment_allowed") and im.get("post_treatment_units"):
        note += (f" {im['post_treatment_units']} units were treated on or before the latest item's date "
                 "(allow_post_treatment=True): post-treatment imagery, which the treatment may have changed, so "
                 "adjusting for it can bias the effects.")
    return note


def _drop_units_without_embedding(units: Units, embeddings):
    """Units whose chips the embedding step dropped (``Z.attrs['dropped_ids']``) leave the study.

    Returns (units, embeddings, None) when nothing is dropped, else (kept units, embeddings,
    (note, keep mask over the original units)). Units missing from the embeddings without being
    listed as dropped are an error (see :func:`_per_unit`).
    """
    if not isinstance(embeddings, pd.DataFrame):
        return units, embeddings, None
    dropped = embeddings.attrs.get("dropped_ids") or []
    if not len(dropped):
        return units, embeddings, None
    ids = pd.Index(units.ids)
    listed = ids.isin(pd.Index(dropped)) & ~ids.isin(embeddings.index)
    if not listed.any():
        return units, embeddings, None
    keep = ~np.asarray(listed)
    note = (f"{int(listed.sum())} of {units.n} units left the study: the embedding step dropped them (their chips "
            "were invalid: off the imagery or mostly nodata, under the source's min_valid/on_invalid policy); "
            f"e.g. ids {ids[listed][:5].tolist()}.")
    warnings.warn(note + " Estimates refer to the remaining units.", DataQualityWarning, stacklevel=3)
    return units.subset(keep), embeddings, (note, keep)


def _align_embeddings(embeddings, units: Units) -> np.ndarray | None:
    if embeddings is None:
        return None
    Z = _per_unit(embeddings, units, "embeddings")
    try:
        Z = np.asarray(Z, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"embeddings: not numeric ({exc})") from None
    if Z.ndim != 2 or Z.shape[0] != units.n:
        raise InputError(f"embeddings: expected shape ({units.n}, d), got {Z.shape}")
    if not np.isfinite(Z).all():
        bad = np.flatnonzero(~np.isfinite(Z).all(axis=1))
        raise InputError(f"embeddings: non-finite values for units {units.ids[bad[:8]].tolist()}")
    return Z


def _label_column(units: Units, arg: str, column: str, what: str) -> pd.Series:
    """A column of labels of the units, refused when absent or with missing labels (naming the units)."""
    if column not in units.frame.columns:
        raise InputError(f"{arg}={column!r}: no such column in the units")
    col = units.frame[column]
    if col.isna().any():
        raise InputError(f"{arg}={column!r}: missing {what} for units {units.ids[col.isna().to_numpy()][:8].tolist()} "
                         f"({int(col.isna().sum())} in all); give every unit one or drop those units")
    return col


def _cluster_codes(clusters, units: Units) -> np.ndarray | None:
    if clusters is None:
        return units.cluster_codes()
    if isinstance(clusters, str):
        return pd.factorize(_label_column(units, "clusters", clusters, "cluster labels"), sort=True)[0]
    return check_clusters(clusters, units.n)


def _shared_embedding_clusters(Z: np.ndarray):
    """Cluster codes of units whose embedding rows are identical (units sharing an image), or (None, None).

    Without clusters, units that share an image would be split across folds and treated as
    independent; estimate() clusters them by the shared embedding instead and says so.
    """
    _, codes = np.unique(Z, axis=0, return_inverse=True)
    codes = np.asarray(codes).reshape(-1)
    k = int(codes.max()) + 1
    if k == len(Z):
        return None, None
    note = (f"Units share embeddings ({k} distinct embeddings for {len(Z)} units, as when units share an "
            "image) and no clusters were given: folds and standard errors are clustered by the shared "
            "embedding. Pass clusters= to cluster otherwise.")
    return codes, note


def _id_codes(ids) -> np.ndarray:
    """Integer codes of the unit ids in sorted order (row order does not matter)."""
    try:
        return np.unique(np.asarray(ids), return_inverse=True)[1].reshape(-1)
    except TypeError:
        return pd.factorize(pd.Index(ids).astype(str), sort=True)[0]


def _warn_few_clusters(rows: Sequence[EffectRow], trials: Sequence[TrialData], cluster_name) -> None:
    """FewClustersWarning when a clustered trial has few clusters, or few treated or control clusters."""
    for t in trials:
        if t.clusters is None:
            continue
        G = int(len(np.unique(t.clusters)))
        g1 = int(len(np.unique(t.clusters[t.w == 1])))
        g0 = int(len(np.unique(t.clusters[t.w == 0])))
        if G < FEW_CLUSTERS or min(g1, g0) < FEW_ARM_CLUSTERS:
            where = "" if t.name == "all" else f"trial {t.name!r}: "
            warnings.warn(
                f"{where}standard errors are clustered by {cluster_name} with {G} clusters ({g1} with treated "
                f"units, {g0} with control units); with fewer than {FEW_CLUSTERS} clusters, or fewer than "
                f"{FEW_ARM_CLUSTERS} treated or control clusters, cluster-robust SEs are too small and intervals "
                "undercover even with the CR1 factor and t(G-1) critical values (Cameron, Gelbach and Miller 2008; "
                "MacKinnon and Webb 2018). Use se='wild' (the wild cluster bootstrap) and report the cluster counts",
                FewClustersWarning, stacklevel=3)


def _check_overlap(e: np.ndarray, w: np.ndarray, clip: float, adjustment: str, estimand: str = "ATE") -> None:
    treated, control = e[w == 1], e[w == 0]
    if treated.min() > control.max() or treated.max() < control.min():
        raise SeparationError(
            f"adjustment {adjustment!r}: the propensities separate the arms perfectly (treated "
            f"{treated.min():.3g}-{treated.max():.3g}, control {control.min():.3g}-{control.max():.3g}): "
            "some confounders predict the treatment exactly. Remove confounders that are functions "
            "of the treatment (post-treatment variables, interactions with it)"
        )
    beyond = (e <= clip) | (e >= 1 - clip)
    if beyond.all():
        raise OverlapError(
            f"adjustment {adjustment!r}: every propensity lies beyond the clip [{clip:g}, {1 - clip:g}] "
            f"(range {e.min():.2g}-{e.max():.2g}): treated and control units do not overlap. Remove "
            "confounders that are functions of the treatment, or estimate the ATO"
        )
    check_overlap(e, w, clip=clip, estimand=estimand, stacklevel=6)