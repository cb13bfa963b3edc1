"""The notebook face: ``eocausal.estimate`` and its formula form ``"y ~ w | x1 + x2"``.

This module wires the estimators (layer 4) into an :class:`~eocausal.results.EffectTable`
(layer 6). It sees only arrays and frames: embeddings are just more confounder columns.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from eocausal._types import ADJUSTMENTS, ESTIMANDS, EffectRow, PropensityFit
from eocausal.data.units import Units
from eocausal.errors import (InputError, NotEstimableError, OverlapError, OverlapWarning,
                             SeparationError)
from eocausal.diagnostics.balance import balance_table
from eocausal.diagnostics.overlap import check_overlap
from eocausal.estimators import weighting
from eocausal.estimators.aipw import aipw, crossfit_outcome
from eocausal.estimators.trimming import trim as trim_units
from eocausal.estimators.crossfit import grouped_folds
from eocausal.estimators.propensity import crossfit_propensity, small_problem_threads
from eocausal.results import EffectTable

METHODS = ("dim", "ipw-ht", "ipw-hajek", "aipw")
IPW_SE = ("auto", "corrected", "known-e")
#: ``ipw_se='auto'`` corrects the IPW influence function for the estimated logistic propensity
#: only with at least this many clusters (or units) per propensity coefficient. Evidence
#: (benchmarks/results/coverage.md, 500 replications per design, cross-fitted Hajek): with 75 and
#: 150 clusters per coefficient the corrected SE matched the spread of the estimates (SE/SD
#: 0.92-0.93, coverage 0.940-0.944); with 37.5 it was too small (SE/SD 0.78, coverage 0.904), and
#: with 2.3 (64 embedding dimensions, 150 clusters) 0.70. 50 lies between; it is an empirical
#: threshold, not a theorem, and below it the conservative known-e IF is used.
CORRECTION_CLUSTERS_PER_COEF = 50
_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"


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


def estimate(
    data,
    formula_data=None,
    /,
    *,
    treatment: str | None = None,
    outcome: str | None = None,
    confounders: Sequence[str] | None = None,
    embeddings=None,
    methods: Sequence[str] = METHODS,
    estimand: str = "ATE",
    adjustments: Sequence[str] | None = None,
    clusters: str | np.ndarray | None = None,
    folds: int = 5,
    clip: float = 1e-3,
    trim: float | str | None = None,
    propensity="ridge-logit",
    seed: int | None = 0,
    alpha: float = 0.05,
    trial: str = "all",
    trials: str | Sequence[str] | None = None,
    min_arm: int = 10,
    outcome_model="ridge",
    se: str = "if",
    n_boot: int = 1000,
    ci: str = "normal",
    native: bool = True,
    ipw_se: str = "auto",
    repeats: int = 1,
    propensity_scores=None,
    fold_ids=None,
    study: str = "",
) -> EffectTable:
    """Estimate average effects with several methods and adjustment sets side by side.

    Call it with units, a data frame, or a formula and a data frame::

        estimate(units, embeddings=Z)
        estimate(df, treatment="w", outcome="y", confounders=["x1"], embeddings=Z)
        estimate("y ~ w | x1 + x2", df, embeddings=Z, clusters="village")

    Parameters
    ----------
    data : Units, DataFrame or str
        The units, or a formula (then the data frame comes second).
    treatment, outcome, confounders : str, str, list of str
        Column roles for a DataFrame (taken from ``Units`` otherwise).
    embeddings : array (n, d) or DataFrame indexed by unit id, optional
        Image embeddings, used as confounders in the ``image`` adjustments.
    methods : sequence of {'dim', 'ipw-ht', 'ipw-hajek', 'aipw'}
        Difference in means, Horvitz-Thompson IPW, Hajek IPW, and cross-fitted AIPW (DML)
        with outcome regressions fitted separately by arm on the same folds.
    estimand : {'ATE', 'ATT', 'ATO'}
        For the weighting methods (the difference in means always estimates the ATE under
        randomisation).
    adjustments : sequence of {'tabular', 'image', 'tabular+image'}, optional
        Confounder sets for the weighting methods; by default every set the inputs allow.
    clusters : str or array, optional
        Cluster column (or labels): folds keep clusters whole and SEs are cluster-robust.
        Defaults to the units' cluster (or image key) column.
    folds : int
        Cross-fitting folds for the propensity model.
    clip : float
        Propensities are clipped to [clip, 1 - clip] (causalimages uses 1e-3); the number of
        clipped units is reported in each row.
    trim : float, 'optimal' or 'rule-of-thumb', optional
        Trimming, distinct from clipping: drop units whose propensity lies outside
        [a, 1 - a], with a given or from Crump et al. (2009) ('optimal' solves their condition,
        'rule-of-thumb' is 0.1). The estimand becomes the effect in the overlap population;
        each row counts the dropped units (``n_trimmed``) and says so in ``note``.
    propensity : str or scikit-learn classifier
        'ridge-logit' (penalty by grouped CV), 'logit', 'gbm', or any classifier.
    seed : int or None
        Seeds the fold assignment and any randomised model.
    alpha : float
        1 - confidence level of the intervals.
    trial : str
        Name of the single trial in the table (when ``trials`` is None).
    trials : str or list of str, optional
        Many trials in one call: the name of a trial column (each unit belongs to the trial
        its label names; treatment as usual), or a list of treatment columns, one per trial,
        holding 1 (treated), 0 (control) or missing (not in that trial), as in funder x
        sector designs. Embeddings and folds are shared; each trial gets its own propensity
        model; p-values are adjusted across trials (``p_holm``, ``p_bh``).
    min_arm : int
        A trial with fewer treated or control units is reported as not estimable (a row with
        the reason in ``note``), not dropped.
    outcome_model : str or scikit-learn regressor
        Outcome regression for AIPW: 'ridge' (penalty by CV), 'gbm', or any regressor.
    se : {'if', 'bootstrap'}
        Influence-function SEs (clustered when clusters are known), or a nonparametric
        bootstrap (cluster bootstrap with clusters) with the cross-fitted nuisances held fixed,
        vectorised over draws.
    n_boot : int
        Bootstrap draws.
    ci : {'normal', 'percentile'}
        Interval type for the bootstrap.
    native : bool
        Solve logistic propensity models ('ridge-logit', 'logit', scikit-learn's
        ``LogisticRegression``, optionally after a ``StandardScaler``) and least-squares outcome
        models ('ridge', 'linear', ``LinearRegression``, ``Ridge``, ``RidgeCV``) with eocausal's
        fold-sharing solvers (:mod:`eocausal.estimators.glm`): the same models, solved to a
        tighter tolerance and several times faster. False calls each learner's own ``fit`` per
        fold, exactly as DoubleML does.
    ipw_se : {'auto', 'corrected', 'known-e'}
        Influence function of the IPW rows (with ``se='if'``). 'corrected': the IF corrected for
        the estimated logistic propensity (Lunceford and Davidian 2004; the projection on the
        logistic score, with the ridge penalty in the information). 'known-e': the IF treating the
        cross-fitted propensities as known, conservative for the ATE. 'auto' corrects when the
        propensity model is logistic and has at most one coefficient per
        :data:`CORRECTION_CLUSTERS_PER_COEF` clusters (units without clusters); otherwise the
        conservative IF is kept. Each row's ``se_type`` says which was used.
    repeats : int
        Repeated cross-fitting: the whole estimation is run on ``repeats`` fold assignments
        (seeds ``seed, seed + 1, ...``); each row reports the median estimate over the splits and
        the SE median_r sqrt(se_r^2 + (estimate_r - median)^2) (Chernozhukov et al. 2018,
        eq. 3.8), with a normal interval. Propensities and balance tables are those of the
        first split.
    propensity_scores : array (n,) or dict of name -> array (n,), optional
        Out-of-fold propensities computed elsewhere, e.g. ``PropensityCNN(...).fit_oof(...)
        .oof_propensity_`` (an image-trained CNN, as causalimages does). Each gives its own rows,
        with the adjustment named by its key ('given' for a bare array), next to the
        ``adjustments`` eocausal fits (pass ``adjustments=[]`` for only these). They are clipped
        and checked like fitted ones; their IPW SEs treat them as known (conservative), and
        AIPW's outcome models use every confounder and embedding column.
    fold_ids : array (n,), optional
        Cross-fitting fold of each unit (e.g. ``PropensityCNN``'s ``fold_ids_``, so that the
        outcome models of AIPW use the folds the given propensities were fitted on). Folds must
        keep clusters whole. Replaces ``folds``/``seed`` for the fold assignment.
    study : str
        Study name for the table header.

    Returns
    -------
    EffectTable
    """
    multi = isinstance(trials, (list, tuple))
    units, conf_names = _as_units(data, formula_data, treatment, outcome, confounders, clusters,
                                  need_treatment=not multi)
    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise InputError(f"methods: unknown {bad}; choose from {list(METHODS)}")
    if estimand not in ESTIMANDS:
        raise InputError(f"estimand={estimand!r}: use one of {list(ESTIMANDS)}")
    if not 0 <= clip < 0.5:
        raise InputError(f"clip={clip}: must lie in [0, 0.5)")
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha}: must lie in (0, 1)")
    if min_arm < 1:
        raise InputError(f"min_arm={min_arm}: must be at least 1")
    if "aipw" in methods and estimand == "ATO":
        raise InputError("methods: 'aipw' estimates the ATE or the ATT; use estimand='ATE' or 'ATT', "
                         "or drop 'aipw' for the ATO")
    if not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise InputError(f"repeats={repeats!r}: the number of cross-fitting splits must be a positive integer")
    if repeats > 1 and seed is None:
        raise InputError("repeats: repeated cross-fitting needs a seed (splits use seed, seed + 1, ...)")
    if ipw_se not in IPW_SE:
        raise InputError(f"ipw_se={ipw_se!r}: use one of {list(IPW_SE)}")
    if fold_ids is not None and repeats > 1:
        raise InputError("repeats: repeated cross-fitting draws its own folds; drop fold_ids= or use repeats=1")
    if se not in ("if", "bootstrap"):
        raise InputError(f"se={se!r}: use 'if' (influence function) or 'bootstrap'")
    if ci not in ("normal", "percentile"):
        raise InputError(f"ci={ci!r}: use 'normal' or 'percentile'")
    if se == "bootstrap" and n_boot < 50:
        raise InputError(f"n_boot={n_boot}: use at least 50 bootstrap draws (1000 for percentile intervals)")

    y = units.y()
    n = len(y)
    X = units.frame[list(conf_names)].to_numpy(dtype=float) if conf_names else np.empty((n, 0))
    Z = _align_embeddings(embeddings, units)
    g = _cluster_codes(clusters, units)
    cluster_name = clusters if isinstance(clusters, str) else (units.cluster or units.image_key)
    adjustments = _adjustment_sets(adjustments, X, Z)
    trial_list = _trials(units, trials, trial)
    given = _given_scores(propensity_scores, n)
    folds_given = _given_folds(fold_ids, n, g)
    if given and "aipw" not in methods and not any(m.startswith("ipw") for m in methods):
        raise InputError("propensity_scores: they are used by the weighting methods and AIPW; add one to methods=")

    ctx = _Context(methods=methods, estimand=estimand, adjustments=adjustments, folds=folds,
                   clip=clip, propensity=propensity, seed=seed, z=stats.norm.ppf(1 - alpha / 2),
                   cluster_name=cluster_name, min_arm=min_arm, conf_names=tuple(conf_names),
                   outcome_model=outcome_model, se=se, n_boot=n_boot, ci=ci, alpha=alpha, trim=trim,
                   native=native, ipw_se=ipw_se)
    coords = _coordinates(units)
    pcs = _embedding_pcs(Z)
    rows: list[EffectRow] = []
    fits: dict[str, PropensityFit] = {}
    balance: dict[str, pd.DataFrame] = {}
    for name, mask, w_t in trial_list:
        sub_g = None if g is None else g[mask]
        try:
            args = (name, y[mask], w_t, X[mask], None if Z is None else Z[mask], sub_g,
                    None if coords is None else coords[mask], None if pcs is None else (pcs[0][mask], pcs[1]),
                    {k: v[mask] for k, v in given.items()}, None if folds_given is None else folds_given[mask])
            t_rows, t_fits, t_bal = _estimate_trial(ctx, *args)
            if repeats > 1:
                from dataclasses import replace as _replace

                splits = [t_rows] + [_estimate_trial(_replace(ctx, seed=seed + r), *args)[0]
                                     for r in range(1, repeats)]
                t_rows = _combine_splits(splits, ctx.z)
        except (NotEstimableError, OverlapError) as exc:
            if trials is None:  # a single trial: the error is the answer
                raise
            t_rows, t_fits, t_bal = _not_estimable_rows(ctx, name, w_t, sub_g, str(exc)), {}, {}
        rows += t_rows
        key = (lambda a: a) if len(trial_list) == 1 else (lambda a, nm=name: f"{nm}: {a}")
        fits.update({key(a): f for a, f in t_fits.items()})
        balance.update({key(a): b for a, b in t_bal.items()})
    if len(trial_list) > 1:
        rows = _adjust_pvalues(rows)

    w_all = units.w() if units.treatment is not None else None
    n_clusters = int(len(np.unique(g))) if g is not None else None
    level = int(round(100 * (1 - alpha)))
    if se == "bootstrap":
        notes = [f"Standard errors from {n_boot} {'cluster ' if g is not None else ''}bootstrap draws"
                 + (f" of {cluster_name} ({n_clusters} clusters)" if g is not None else "")
                 + f" with the cross-fitted nuisances held fixed; {level}% {ci} intervals."]
    else:
        notes = [f"Standard errors from the influence function"
                 + (f", clustered by {cluster_name} ({n_clusters} clusters)." if g is not None else " (iid).")
                 + f" {level}% normal intervals."]
    if fits:
        model_txt = ("ridge-logistic (tabular columns standardised, embeddings scaled as one block), "
                     "penalty chosen by grouped 3-fold CV inside each training fold"
                     if propensity == "ridge-logit" else
                     propensity if isinstance(propensity, str) else type(propensity).__name__)
        n_folds = folds if folds_given is None else int(folds_given.max()) + 1
        if adjustments:
            notes.append(f"Propensity: {model_txt}; out-of-fold predictions from {n_folds} cross-fitting folds"
                         + (" (the fold_ids given)" if folds_given is not None else "")
                         + (f" grouped by {cluster_name}." if g is not None else "."))
        if given:
            notes.append(f"Propensity scores given ({', '.join(given)}): used as passed (then clipped); their IPW "
                         "standard errors treat them as known, which is conservative for the ATE when they were "
                         "estimated; AIPW's outcome models use every confounder and embedding column on "
                         + ("the fold_ids given." if folds_given is not None else f"{n_folds} folds."))
        clipped = ", ".join(f"{a}: {f.n_clipped}" for a, f in fits.items())
        notes.append(f"Propensities clipped to [{clip:g}, {1 - clip:g}] (units clipped: {clipped}); "
                     "clipping keeps every unit, unlike trimming.")
        from eocausal.estimators.propensity import logistic_spec

        if any(m.startswith("ipw") for m in methods):
            types = {r.se_type for r in rows if r.method.startswith("ipw") and np.isfinite(r.estimate)
                     and r.adjustment in adjustments}
            if any("logit-corrected" in t for t in types):
                notes.append("IPW rows with se_type 'IF (logit-corrected)' account for the estimated logistic "
                             "propensity: the influence function is corrected by its projection on the "
                             "logistic score (Lunceford and Davidian 2004), with the ridge penalty in the "
                             "information.")
            if any("logit-corrected" not in t for t in types) and adjustments:
                why = ("" if se != "if" else
                       " (trimming)" if trim is not None else
                       " (not a logistic model)" if logistic_spec(propensity, 0) is None else
                       " (ipw_se='known-e')" if ipw_se == "known-e" else
                       f" (fewer than {CORRECTION_CLUSTERS_PER_COEF} clusters per propensity coefficient, "
                       "where the correction overfits)")
                notes.append("Other IPW standard errors treat the cross-fitted propensities as known"
                             + why + ", which is conservative for the ATE (Lunceford and Davidian 2004).")
    if "aipw" in methods:
        om = outcome_model if isinstance(outcome_model, str) else type(outcome_model).__name__
        notes.append(f"AIPW: outcome regressions ({om}) fitted by arm on the same {folds} folds; "
                     "doubly robust score of Robins, Rotnitzky and Zhao (1994) as DoubleML's IRM.")
    if len(trial_list) > 1:
        notes.append(f"{len(trial_list)} trials; p_holm and p_bh adjust p-values across trials within "
                     "each (estimand, method, adjustment) by Holm's step-down and Benjamini-Hochberg. "
                     f"Trials with fewer than {min_arm} treated or control units are reported as not estimable.")
    design = dict(study=study, n=n, n_treated=None if w_all is None else int(w_all.sum()),
                  n_clusters=n_clusters, outcome=units.outcome, treatment=units.treatment,
                  estimand=estimand, trials=len(trial_list),
                  propensity=propensity if isinstance(propensity, str) else type(propensity).__name__,
                  confounders=list(conf_names), embedding_dim=None if Z is None else int(Z.shape[1]))
    worst = {a: int(b["imbalanced"].sum()) for a, b in balance.items() if b["imbalanced"].any()}
    if worst:
        notes.append("Balance: rows with |SMD| > 0.1 after weighting, by adjustment: "
                     + ", ".join(f"{a}: {k}" for a, k in worst.items())
                     + " (table.balance[adjustment] has the details).")
    design["outcome_sd"] = float(np.std(y, ddof=1))
    return EffectTable(rows=tuple(rows), notes=tuple(notes), design=design, propensities=fits,
                       balance=balance)


def _coordinates(units: Units) -> np.ndarray | None:
    """Longitude/latitude of each unit's centroid (for the coordinates' balance), or None."""
    if not units.has_place:
        return None
    geom = units.geometry
    if not units.crs.is_geographic:
        geom = geom.to_crs("EPSG:4326")
    pts = geom.representative_point() if not (geom.geom_type == "Point").all() else geom
    return np.column_stack([pts.x.to_numpy(), pts.y.to_numpy()])


@dataclass(frozen=True)
class _Context:
    methods: tuple[str, ...]
    estimand: str
    adjustments: tuple[str, ...]
    folds: int
    clip: float
    propensity: object
    seed: int | None
    z: float
    cluster_name: str | None
    min_arm: int
    conf_names: tuple[str, ...] = ()
    outcome_model: object = "ridge"
    se: str = "if"
    n_boot: int = 1000
    ci: str = "normal"
    alpha: float = 0.05
    trim: object = None
    native: bool = True
    ipw_se: str = "auto"


def _embedding_pcs(Z: np.ndarray | None, k: int = 5):
    """Scores and variance shares of the embeddings' leading principal components (one PCA per call)."""
    if Z is None or not np.ptp(Z, axis=0).any():
        return None
    from sklearn.decomposition import PCA

    pca = PCA(n_components=int(min(k, Z.shape[1], Z.shape[0])), svd_solver="full").fit(Z)
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


def _estimate_trial(ctx: _Context, name: str, y, w, X, Z, g, coords=None,
                    pcs=None, scores=None, folds=None) -> tuple[list[EffectRow], dict, dict]:
    """Every requested (method, adjustment) for one trial's units."""
    n, n1 = len(w), int(w.sum())
    if min(n1, n - n1) < ctx.min_arm:
        raise NotEstimableError(
            f"not estimable: {n1} treated and {n - n1} control units (minimum {ctx.min_arm} per arm)")
    n_clusters = int(len(np.unique(g))) if g is not None else None
    if ctx.se == "bootstrap":
        se_type = (f"bootstrap (B={ctx.n_boot}, {ctx.ci}"
                   + (f", clusters {ctx.cluster_name})" if g is not None else ")"))
    else:
        se_type = f"IF, clustered by {ctx.cluster_name}" if g is not None else "IF (iid)"
    base = dict(trial=name, n=n, n_treated=n1, n_clusters=n_clusters, se_type=se_type)

    def row(method, adjustment, est, est_name, boot=None, gg=g, se_note="", **extra):
        if boot is None:
            se, _ = weighting.se_from_psi(est.psi, gg)
            lo, hi = est.estimate - ctx.z * se, est.estimate + ctx.z * se
        else:
            b = boot(clusters=gg, n_boot=ctx.n_boot, seed=ctx.seed)
            se = b.std_error
            lo, hi = b.confint(ctx.alpha, kind=ctx.ci)
        stat = est.estimate / se if se > 0 else np.nan
        fields = {**base, **extra}
        if se_note:
            fields["se_type"] = fields["se_type"].replace("IF", f"IF ({se_note})", 1)
        return EffectRow(estimand=est_name, method=method, adjustment=adjustment,
                         estimate=float(est.estimate), std_error=float(se), ci_low=float(lo), ci_high=float(hi),
                         p_value=float(2 * stats.norm.sf(abs(stat))), **fields)

    def boot_for(kind, **kw):
        if ctx.se != "bootstrap":
            return None
        from eocausal.estimators import inference

        return lambda **b: getattr(inference, kind)(**kw, **b)

    rows: list[EffectRow] = []
    fits: dict[str, PropensityFit] = {}
    balance: dict[str, pd.DataFrame] = {}
    if "dim" in ctx.methods:
        dm = weighting.difference_in_means(y, w)
        rows.append(row("dim", "none", dm, "ATE", boot_for("bootstrap_ipw", y=y, w=w, e=np.full(n, n1 / n),
                                                         estimator="hajek", estimand="ATE")))
    weighting_methods = [m for m in ctx.methods if m in ("ipw-ht", "ipw-hajek")]
    if not weighting_methods and "aipw" not in ctx.methods:
        return rows, fits, balance
    fold_ids = grouped_folds(n, g, ctx.folds, ctx.seed, stratify=w) if folds is None else folds
    runs = [(adj, None) for adj in ctx.adjustments] + list((scores or {}).items())
    for adj, given in runs:
        if given is None:
            V = {"tabular": X, "image": Z, "tabular+image": np.hstack([X, Z]) if Z is not None else X}[adj]
            n_tab = {"tabular": None, "image": 0, "tabular+image": X.shape[1]}[adj]
        else:  # given propensities: the outcome models of AIPW use every confounder there is
            V = np.hstack([X, Z]) if Z is not None else X
            n_tab = X.shape[1] if Z is not None else None
        det: dict = {}
        layout = None
        if ctx.native and V.shape[1]:  # centred, scaled and sorted once for the propensity and outcome fits
            from eocausal.estimators.glm import FoldLayout

            layout = FoldLayout.by_fold_and_arm(V, fold_ids, w)
        if given is None:
            e_raw, _ = crossfit_propensity(V, w, groups=g, model=ctx.propensity, seed=ctx.seed, fold_ids=fold_ids,
                                           n_tabular=n_tab, native=ctx.native, details=det, layout=layout)
        else:
            e_raw = given
        e = np.clip(e_raw, ctx.clip, 1 - ctx.clip)
        n_clipped = int(np.sum(e != e_raw))
        _check_overlap(e_raw, w, ctx.clip, adj if name == "all" else f"{name}: {adj}", ctx.estimand)
        mu0 = mu1 = None
        w1, w0 = weighting.arm_weights(w, e, ctx.estimand)
        # trimming (distinct from clipping): drop units outside [a, 1 - a]; the estimand becomes
        # the effect in the overlap population, and the rows say so
        keep, trim_extra = np.ones(n, bool), {}
        if ctx.trim is not None:
            tr = trim_units(e_raw, ctx.trim, w)
            keep = tr.keep
            trim_extra = dict(n_trimmed=tr.n_trimmed, n=int(keep.sum()), n_treated=int(w[keep].sum()),
                              n_clusters=None if g is None else int(len(np.unique(g[keep]))),
                              note=f"trimmed to {tr.threshold:.3g} <= e <= {1 - tr.threshold:.3g}: "
                                   "effect in the overlap population")
        yk, wk, ek, gk = y[keep], w[keep], e[keep], None if g is None else g[keep]
        w1k, w0k = weighting.arm_weights(wk, ek, ctx.estimand)
        ess = dict(ess_treated=weighting.effective_sample_size(w1k[wk == 1]),
                   ess_control=weighting.effective_sample_size(w0k[wk == 0]), **trim_extra)
        psis: dict[str, np.ndarray] = {}
        units_or_clusters = n if g is None else int(len(np.unique(g)))
        adjust_se = (ctx.se == "if" and ctx.trim is None and det.get("spec") is not None
                     and (det.get("C") is not None or det["spec"].C is not None)
                     and V.shape[1] > 0 and bool(weighting_methods) and ctx.ipw_se != "known-e"
                     and (ctx.ipw_se == "corrected"
                          or units_or_clusters >= CORRECTION_CLUSTERS_PER_COEF * (V.shape[1] + 1)))
        if adjust_se:
            C = det["C"] if det.get("C") is not None else np.full(1, det["spec"].C)
            Xd, pen = _logit_design(V, det["spec"], C)
        for m in weighting_methods:
            fn = weighting.horvitz_thompson if m == "ipw-ht" else weighting.hajek
            kind = "ht" if m == "ipw-ht" else "hajek"
            boot = boot_for("bootstrap_ipw", y=yk, w=wk, e=ek, estimator=kind, estimand=ctx.estimand)
            pe = fn(yk, wk, ek, ctx.estimand)
            if adjust_se:
                from dataclasses import replace as _replace

                from eocausal.estimators.inference import logit_adjusted_psi

                pe = _replace(pe, psi=logit_adjusted_psi(pe, y, w, e_raw, Xd, estimator=kind,
                                                         estimand=ctx.estimand, penalty=pen, clip=ctx.clip))
            rows.append(row(m, adj, pe, ctx.estimand, boot, gk, clip=ctx.clip, n_clipped=n_clipped,
                            se_note="logit-corrected" if adjust_se else ("known e" if ctx.se == "if" else ""),
                            **ess))
            psis[m] = pe.psi
        if "aipw" in ctx.methods:
            mu0, mu1 = crossfit_outcome(V, y, w, fold_ids, ctx.outcome_model, n_tabular=n_tab, seed=ctx.seed,
                                        native=ctx.native, layout=layout)
            boot = boot_for("bootstrap_aipw", y=yk, w=wk, e=ek, mu0=mu0[keep], mu1=mu1[keep], estimand=ctx.estimand)
            pe = aipw(yk, wk, ek, mu0[keep], mu1[keep], ctx.estimand)
            rows.append(row("aipw", adj, pe, ctx.estimand, boot, gk, clip=ctx.clip, n_clipped=n_clipped, **ess))
            psis["aipw"] = pe.psi
        fits[adj] = PropensityFit(adjustment=adj, e_raw=e_raw, e=e, w=w, clip=ctx.clip,
                                  n_clipped=n_clipped, folds=int(len(np.unique(fold_ids))),
                                  model="given" if given is not None else
                                  ctx.propensity if isinstance(ctx.propensity, str)
                                  else type(ctx.propensity).__name__, y=y, mu0=mu0, mu1=mu1, psi=psis)
        with small_problem_threads(V):
            balance[adj] = balance_table(X if X.shape[1] else None, w, w1 + w0,
                                         names=list(ctx.conf_names) or None,
                                         embeddings=Z if pcs is None else None, pcs=pcs, coords=coords,
                                         warn=False)
    return rows, fits, balance


def _given_scores(scores, n: int) -> dict[str, np.ndarray]:
    """Validated ``propensity_scores``: name -> array (n,) strictly inside (0, 1)."""
    if scores is None:
        return {}
    items = scores.items() if isinstance(scores, dict) else [("given", scores)]
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
    from dataclasses import replace

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


def _not_estimable_rows(ctx: _Context, name: str, w, g, why: str) -> list[EffectRow]:
    nan = float("nan")
    cells = ([("dim", "none", "ATE")] if "dim" in ctx.methods else []) + [
        (m, a, ctx.estimand) for a in ctx.adjustments for m in ctx.methods if m != "dim"]
    return [EffectRow(trial=name, estimand=est, method=m, adjustment=a, estimate=nan, std_error=nan,
                      ci_low=nan, ci_high=nan, p_value=nan, n=len(w), n_treated=int(w.sum()),
                      n_clusters=None if g is None else int(len(np.unique(g))), note=why)
            for m, a, est in cells]


def _adjust_pvalues(rows: list[EffectRow]) -> list[EffectRow]:
    """Holm and Benjamini-Hochberg across trials, within each (estimand, method, adjustment)."""
    from dataclasses import replace

    from statsmodels.stats.multitest import multipletests

    out = list(rows)
    families: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if np.isfinite(r.p_value):
            families.setdefault((r.estimand, r.method, r.adjustment), []).append(i)
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
        if a not in ADJUSTMENTS or a == "none":
            raise InputError(f"adjustments: {a!r} is not one of {list(ADJUSTMENTS[1:])}")
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
        if trials not in units.frame.columns:
            raise InputError(f"trials={trials!r}: no such column in the units")
        labels = units.frame[trials]
        if labels.isna().any():
            raise InputError(f"trials={trials!r}: missing trial labels in rows "
                             f"{units.ids[labels.isna().to_numpy()][:8].tolist()}")
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
        return Units.from_frame(data, treatment=treatment, outcome=outcome, covariates=conf, cluster=cl), conf
    raise InputError(f"data: expected Units, a DataFrame or a formula string, got {type(data).__name__}")


def _align_embeddings(embeddings, units: Units) -> np.ndarray | None:
    if embeddings is None:
        return None
    if isinstance(embeddings, pd.DataFrame):
        missing = pd.Index(units.ids).difference(embeddings.index)
        if len(missing):
            raise InputError(
                f"embeddings: no rows for unit ids {missing[:8].tolist()} ({len(missing)} in all); "
                "the embedding frame must be indexed by the units' ids"
            )
        Z = embeddings.loc[units.ids].to_numpy(dtype=float)
    else:
        Z = np.asarray(embeddings, dtype=float)
    if Z.ndim != 2 or Z.shape[0] != units.n:
        raise InputError(f"embeddings: expected shape ({units.n}, d), got {Z.shape}")
    if not np.isfinite(Z).all():
        bad = np.flatnonzero(~np.isfinite(Z).all(axis=1))
        raise InputError(f"embeddings: non-finite values for units {units.ids[bad[:8]].tolist()}")
    return Z


def _cluster_codes(clusters, units: Units) -> np.ndarray | None:
    if clusters is None:
        return units.groups()
    if isinstance(clusters, str):
        if clusters not in units.frame.columns:
            raise InputError(f"clusters={clusters!r}: no such column in the units")
        return pd.factorize(units.frame[clusters], sort=True)[0]
    arr = np.asarray(clusters)
    if len(arr) != units.n:
        raise InputError(f"clusters: {len(arr)} labels for {units.n} units")
    return pd.factorize(arr, sort=True)[0]


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
    check_overlap(e, w, clip=clip, estimand=estimand, stacklevel=5)