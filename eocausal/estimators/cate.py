"""Conditional average treatment effects through EconML (or, for large n, eocausal's own
DR-learner, :mod:`eocausal.estimators.dr_boost`), cross-fitted by cluster.

:func:`cate` fits one of EconML's CATE learners on any mix of tabular covariates and image or
image-sequence embeddings (an embedding is just more columns) and returns a
:class:`CateResult` holding what the evaluation needs (docs/heterogeneity.md):

- ``tau_hat``: out-of-fold CATE predictions. Units are split into K folds that keep clusters
  whole (:func:`~eocausal.data.folds.grouped_folds`); for each fold k a fresh EconML
  estimator is fitted on the other folds (EconML's own nuisance cross-fitting inside it is
  grouped by the same clusters) and predicts fold k. Each unit's priority therefore comes from
  a model that never saw its outcome, which RATE and the calibration tests require.
- ``scores``: doubly robust (AIPW) scores
  Gamma_i = mu1_i - mu0_i + W_i (Y_i - mu1_i) / e_i - (1 - W_i)(Y_i - mu0_i) / (1 - e_i),
  with mu_w fitted per arm on the other folds (``outcome_model``, ridge by default) and e known
  (an RCT: pass ``propensity_scores=``) or out of fold: by default from fold k's own EconML
  estimator, whose fitted propensity models never saw fold k (no extra fit), else cross-fitted on
  the same folds (``propensity``). Given X_i,
  E[Gamma_i | X_i] = tau(X_i) when e is right, whatever mu is, because the nuisances never saw
  unit i.
- ``estimator_``: the same EconML estimator fitted on all units, for :meth:`CateResult.predict`
  outside the trial (transport).

Evaluating the predictions (RATE, grf's calibration test, BLP/GATES, CLAN, effects by a
variable) is a step of its own, in :mod:`eocausal.diagnostics`, whose functions take a
:class:`CateResult`: ``eocausal.rate(result)``, ``eocausal.diagnostics.test_calibration(result)``,
``eocausal.diagnostics.blp_gates(result)``, ``eocausal.diagnostics.clan(result, X)``,
``eocausal.diagnostics.effects_by(result, values)``.

Known propensities (RCTs) replace the learner's propensity model: they are passed to EconML as
the last column of ``W`` (controls) and read back by a classifier that returns that column, so
the DML residuals W - e and the DR learner's inverse weights use the design's e exactly. The
T-learner has no propensity model; the X-learner's weighting function g(x) uses the constant
share when e is constant, and EconML's default propensity model otherwise.

EconML options are passed through untouched (``**econml_kwargs`` go to the learner's
constructor, with EconML's names: ``n_estimators``, ``model_y``, ``model_final``, ``cv``...).
Where the user passes none, eocausal fills the nuisance and final models (the table in
:func:`cate`'s docstring): eocausal's own ridge and ridge-logistic models for the nuisances
(EconML's ``'auto'`` models run a lasso / logistic model selection in every fit that raised
46 ConvergenceWarnings per call with estimated propensities and took 2 to 6 times as long), a random forest averaging at
least 20 units per leaf for the final stages that regress noisy pseudo-outcomes
(:data:`DEFAULT_FINAL_FOREST`), a random forest for the T/X meta-learners' outcome models
(:data:`DEFAULT_FOREST`), ``discrete_treatment=True`` for the DML learners and
``random_state=seed``. ``econml`` is imported inside :func:`cate` (``import econml.dml`` takes
seconds).

Transport: this module stays in the estimator layer (arrays in, arrays out; it never imports
the diagnostics). The caller composes :meth:`CateResult.predict` with
:func:`eocausal.data.transport.support_diagnostic` and
:func:`~eocausal.data.transport.effects_to_geodataframe` or
:func:`~eocausal.data.transport.write_effect_raster` (see docs/heterogeneity.md).
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from eocausal._validation import check_clusters
from eocausal.data.folds import grouped_folds, training_splits
from eocausal.errors import InputError, NotEstimableError, NotFittedError
from eocausal.estimators.aipw import aipw_scores
from eocausal.estimators.learners import BlockStandardizer, make_outcome_model
from eocausal.estimators.propensity import crossfit_propensity

#: learner name -> (EconML module, class)
LEARNERS = {
    "causal_forest": ("econml.dml", "CausalForestDML"),
    "dr_boost": ("eocausal.estimators.dr_boost", "BoostedDR"),
    "dr": ("econml.dr", "DRLearner"),
    "r": ("econml.dml", "NonParamDML"),
    "t": ("econml.metalearners", "TLearner"),
    "x": ("econml.metalearners", "XLearner"),
}
#: the constructor argument that holds each learner's propensity model
_PROPENSITY_ARG = {"causal_forest": "model_t", "r": "model_t", "dr": "model_propensity",
                   "x": "propensity_model", "t": None}
_DML = ("causal_forest", "r", "dr")  # learners whose fit takes W= and groups=
#: The learners' propensity model where the user passes none (and e is not known): an L2-penalised
#: logistic regression on block-standardised inputs (tabular columns one by one, an embedding as one
#: block, see :class:`~eocausal.estimators.learners.BlockStandardizer`).
DEFAULT_LOGIT = {"C": 1.0, "max_iter": 5000}
#: Random forest filled in as the T- and X-learners' ``models`` (outcome regressions per arm, and
#: the X-learner's effect models) where the user passes none.
DEFAULT_FOREST = {"n_estimators": 100, "min_samples_leaf": 5}
#: Random forest filled in as the final stage of the DR-learner and NonParamDML (R-learner) where
#: the user passes none. Their final stage regresses pseudo-outcomes whose noise is several times
#: the outcome's; 20 units per leaf average it out (on the simulation of docs/heterogeneity.md,
#: correlation with the true CATE 0.90 for dr and 0.91 for r, against 0.87 for r with 5 per leaf;
#: benchmarks/results/cate_defaults.md for the defaults).
DEFAULT_FINAL_FOREST = {"n_estimators": 100, "min_samples_leaf": 20}


class KnownPropensity(ClassifierMixin, BaseEstimator):
    """A 'classifier' whose P(W = 1) is the last column of its input (known propensities).

    :func:`cate` appends the design's propensities to EconML's ``W``; EconML hands the
    propensity model hstack([X, W]), so the last column is e.
    """

    def fit(self, X, y, sample_weight=None):
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X):
        p = np.asarray(X, dtype=float)[:, -1]
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


class ConstantPropensity(ClassifierMixin, BaseEstimator):
    """A 'classifier' that returns one known P(W = 1) for every unit (X-learner with constant e)."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def fit(self, X, y, sample_weight=None):
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X):
        m = len(X)
        return np.column_stack([np.full(m, 1 - self.p), np.full(m, self.p)])

    def predict(self, X):
        return np.full(len(X), int(self.p > 0.5))


# ----------------------------------------------------------------------------- inputs


def _block(a, name: str, n: int | None) -> tuple[np.ndarray, list[str]]:
    if isinstance(a, pd.DataFrame):
        names = [str(c) for c in a.columns]
        bad = [c for c in a.columns if not pd.api.types.is_numeric_dtype(a[c])]
        if bad:
            raise InputError(f"{name}: columns {bad} are not numeric; encode them first")
        arr = a.to_numpy(dtype=float)
    else:
        arr = np.asarray(a, dtype=float)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            extra = (" (image sequences: pool the frame embeddings first, e.g. with "
                     "eocausal.encoders.TemporalPool, or reshape to (n, T*d))") if arr.ndim == 3 else ""
            raise InputError(f"{name}: expected a 2-d array (n, d), got shape {arr.shape}{extra}")
        names = [f"{name}_{j}" for j in range(arr.shape[1])]
    if n is not None and arr.shape[0] != n:
        raise InputError(f"{name}: {arr.shape[0]} rows for {n} units; pass one row per unit")
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: {int((~np.isfinite(arr)).sum())} non-finite values; impute or drop them first")
    return arr, names


def _embedding_blocks(embeddings) -> list[tuple[str, object]]:
    if embeddings is None:
        return []
    if isinstance(embeddings, Mapping):
        return [(str(k), v) for k, v in embeddings.items()]
    if isinstance(embeddings, (list, tuple)):
        return [(f"emb{j}", v) for j, v in enumerate(embeddings)]
    return [("emb", embeddings)]


def _features(X, embeddings, n: int | None):
    """Stack tabular columns and embedding blocks; return (F, names, n_tabular, layout)."""
    parts, names, layout = [], [], []
    n_tab = 0
    if X is not None:
        a, nm = _block(X, "X", n)
        parts.append(a)
        names += nm
        n_tab = a.shape[1]
        layout.append(("X", a.shape[1], tuple(nm) if isinstance(X, pd.DataFrame) else None))
    for key, v in _embedding_blocks(embeddings):
        a, nm = _block(v, key, n)
        parts.append(a)
        names += nm
        layout.append((key, a.shape[1], None))
    if not parts:
        raise InputError("X, embeddings: a CATE model needs effect modifiers; pass tabular covariates X, "
                         "embeddings, or both")
    if n is None:
        n = parts[0].shape[0]
    rows = {p.shape[0] for p in parts}
    if len(rows) > 1:
        raise InputError(f"X, embeddings: blocks have different numbers of rows {sorted(rows)}")
    return np.hstack(parts), names, n_tab, tuple(layout)


# ----------------------------------------------------------------------------- EconML


class _Learner:
    """Builds, fits and queries fresh EconML estimators with one set of options."""

    def __init__(self, learner: str, econml_kwargs: dict, seed, e_mode: str | None, e_const: float | None,
                 n_tabular: int = 0):
        if learner not in LEARNERS:
            raise InputError(f"learner={learner!r}: use one of {', '.join(LEARNERS)}")
        prop = _PROPENSITY_ARG[learner]
        if e_mode is not None and prop is not None and prop in econml_kwargs:
            raise InputError(
                f"propensity_scores= and {prop}=: known propensities replace the learner's propensity model; "
                "pass one of them")
        mod, name = LEARNERS[learner]
        self.cls = getattr(importlib.import_module(mod), name)
        self.learner = learner
        self.kwargs = econml_kwargs
        self.seed = seed
        self.e_mode = e_mode  # None (estimated), 'column' (W's last column), 'constant'
        self.e_const = e_const
        self.n_tabular = n_tabular

    def make(self):
        """A fresh EconML estimator: the user's options untouched, eocausal's defaults where none was given."""
        from sklearn.ensemble import RandomForestRegressor

        kw = copy.deepcopy(self.kwargs)
        lr = self.learner
        # the nuisances see [X, W] (and the DR regression [X, W, T]): the leading n_tabular columns are
        # the tabular covariates, the rest (embedding, known propensities, treatment) scaled as one block
        ridge = make_outcome_model("ridge", seed=self.seed, n_tabular=self.n_tabular)
        # a fixed L2 penalty, not eocausal's 'ridge-logit': EconML takes over the CV of a LogisticRegressionCV
        # (warning that its cv is ignored) and then fails on scikit-learn >= 1.8's fitted attributes
        logit = _default_logit(self.n_tabular)
        if lr in ("causal_forest", "r"):
            kw.setdefault("discrete_treatment", True)
            kw.setdefault("model_y", ridge)
            kw.setdefault("model_t", logit)
        if lr in _DML:
            kw.setdefault("random_state", self.seed)
        if lr == "dr":
            kw.setdefault("model_regression", ridge)
            kw.setdefault("model_propensity", logit)
        if lr in ("r", "dr"):
            kw.setdefault("model_final", RandomForestRegressor(random_state=self.seed, **DEFAULT_FINAL_FOREST))
        if lr in ("t", "x"):
            kw.setdefault("models", RandomForestRegressor(random_state=self.seed, **DEFAULT_FOREST))
        if lr == "x" and self.e_mode != "constant":
            kw.setdefault("propensity_model", logit)
        if self.e_mode is not None:
            if lr in _DML:
                kw[_PROPENSITY_ARG[lr]] = KnownPropensity()
            elif lr == "x" and self.e_mode == "constant":
                kw["propensity_model"] = ConstantPropensity(self.e_const)
        return self.cls(**kw)

    def fit(self, y, w, F, e, clusters):
        est = self.make()
        kw = {"X": F}
        if self.learner in _DML:
            if self.e_mode is not None:
                kw["W"] = e[:, None]
            if clusters is not None:
                kw["groups"] = clusters  # EconML's name
        est.fit(y, w, **kw)
        return est

    @staticmethod
    def effect(est, F) -> np.ndarray:
        return np.asarray(est.effect(F), dtype=float).reshape(len(F))

    def propensity(self, est, F) -> np.ndarray | None:
        """P(W = 1 | X) of new rows from the estimator's own fitted propensity models, or None.

        The DML and DR learners keep one fitted model per inner cross-fitting fold
        (``models_t``, ``models_propensity``; their input is X, as no W is passed when e is
        estimated); the X-learner keeps ``propensity_models``. Their predictions are averaged.
        The T-learner has none.
        """
        if self.learner in ("causal_forest", "r"):
            models = [m for fold in est.models_t for m in fold]
        elif self.learner == "dr":
            models = [m for fold in est.models_propensity for m in fold]
        elif self.learner == "x":
            models = list(est.propensity_models)
        else:
            return None
        preds = []
        for m in models:
            proba = np.asarray(m.predict_proba(F), dtype=float)
            classes = list(getattr(m, "classes_", range(proba.shape[1])))
            preds.append(proba[:, classes.index(1)] if 1 in classes else proba[:, -1])
        return np.mean(preds, axis=0)


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class CateResult:
    """Cross-fitted CATE predictions, doubly robust scores and a final model for transport.

    Attributes
    ----------
    tau_hat : numpy.ndarray (n,)
        Out-of-fold CATE predictions (the priority scores for RATE and calibration).
    scores : numpy.ndarray (n,)
        Doubly robust scores Gamma_i with out-of-fold nuisances; for 'dr_boost' cross-fitted
        within each half, so that a unit's score and its priority share no data.
    mu0, mu1 : numpy.ndarray (n,)
        Out-of-fold outcome regressions per arm (those of ``scores``).
    propensity_scores : numpy.ndarray (n,)
        Propensities used in the scores (known, or out-of-fold and clipped).
    y, w : numpy.ndarray (n,)
    fold_ids : numpy.ndarray (n,)
        Cross-fitting fold of each unit's ``tau_hat``; for 'dr_boost' the two halves of its honest
        split (the nuisances of ``scores`` are cross-fitted within each half).
    clusters : numpy.ndarray or None
        Cluster labels (folds, EconML's inner cross-fitting, bootstrap draws and SEs).
    learner : str
    feature_names : tuple of str
    n_tabular : int
        Leading tabular columns of the features.
    propensity_known : bool
        True when ``propensity_scores`` were given (an RCT's design), False when estimated.
    estimator_ : EconML estimator or None
        Fitted on all units (None with ``fit_final=False``).
    fold_estimators_ : tuple
        The per-fold EconML estimators when ``keep_fold_models=True``.
    n_clipped : int
        Estimated propensities changed by clipping.
    propensity_source : str
        Where ``propensity_scores`` came from: 'known', 'learner' (the per-fold EconML estimators' own
        propensity models) or the name of the cross-fitted model.
    """

    tau_hat: np.ndarray
    scores: np.ndarray
    mu0: np.ndarray
    mu1: np.ndarray
    propensity_scores: np.ndarray
    y: np.ndarray
    w: np.ndarray
    fold_ids: np.ndarray
    clusters: np.ndarray | None
    learner: str
    feature_names: tuple
    n_tabular: int
    propensity_known: bool
    estimator_: object = field(default=None, repr=False)
    fold_estimators_: tuple = field(default=(), repr=False)
    n_clipped: int = 0
    propensity_source: str = "known"
    _layout: tuple = field(default=(), repr=False)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def m_hat(self) -> np.ndarray:
        """Out-of-fold E[Y | X] = e mu1 + (1 - e) mu0 (for grf's calibration test)."""
        e = self.propensity_scores
        return e * self.mu1 + (1 - e) * self.mu0

    # ------------------------------------------------------------------ prediction
    def predict(self, X=None, embeddings=None) -> np.ndarray:
        """CATE of new units from the model fitted on all trial units (transport).

        ``X`` and ``embeddings`` must have the blocks and widths used in :func:`cate` (a
        DataFrame ``X`` is matched by column name).
        """
        if self.estimator_ is None:
            raise NotFittedError("CateResult.predict: the final model was not fitted; call cate(..., fit_final=True)")
        blocks = _embedding_blocks(embeddings)
        want = [name for name, _, _ in self._layout]
        got = (["X"] if X is not None else []) + [k for k, _ in blocks]
        if got != want:
            raise InputError(f"predict: the model was fitted on blocks {want}, got {got}; pass the same inputs")
        for name, width, cols in self._layout:
            if name == "X" and cols is not None and isinstance(X, pd.DataFrame):
                missing = [c for c in cols if c not in X.columns]
                if missing:
                    raise InputError(f"X: columns {missing} used in fitting are missing")
                X = X[list(cols)]
        F, _, _, layout = _features(X, embeddings, None)
        widths = [wd for _, wd, _ in layout]
        if widths != [wd for _, wd, _ in self._layout]:
            raise InputError(f"predict: block widths {widths} differ from the fitted ones "
                             f"{[wd for _, wd, _ in self._layout]}")
        return _Learner.effect(self.estimator_, F)

    def effect(self, X=None, embeddings=None) -> np.ndarray:
        """EconML's verb for :meth:`predict` (the CATE of W = 1 against W = 0)."""
        return self.predict(X, embeddings)

    # ------------------------------------------------------------------ summaries
    def ate(self) -> tuple[float, float]:
        """AIPW average effect mean(Gamma) and its (cluster-robust) standard error."""
        psi = self.scores - self.scores.mean()
        if self.clusters is None:
            se = np.sqrt(np.sum(psi**2)) / self.n
        else:
            codes = np.unique(self.clusters, return_inverse=True)[1].reshape(-1)
            se = np.sqrt(np.sum(np.bincount(codes, weights=psi) ** 2)) / self.n
        return float(self.scores.mean()), float(se)

    def extremes(self, k: int = 8) -> pd.DataFrame:
        """The k units with the highest and the k with the lowest out-of-fold predictions.

        Returns a frame with ``index`` (row position in the inputs, to pick the images),
        ``group`` ('highest'/'lowest'), ``rank`` (1 = most extreme) and ``tau_hat``; the
        report draws the images.
        """
        k = int(min(k, self.n // 2))
        order = np.argsort(-self.tau_hat, kind="stable")
        hi, lo = order[:k], order[::-1][:k]
        return pd.DataFrame({"index": np.r_[hi, lo], "group": ["highest"] * k + ["lowest"] * k,
                             "rank": np.r_[np.arange(1, k + 1), np.arange(1, k + 1)],
                             "tau_hat": self.tau_hat[np.r_[hi, lo]]})


# ----------------------------------------------------------------------------- cate


def cate(y, w, X=None, embeddings=None, *, learner: str = "causal_forest", propensity_scores=None,
         clusters=None, folds: int = 5, seed: int | None = 0, outcome_model="ridge", propensity="learner",
         clip: float = 1e-3, fit_final: bool = True, keep_fold_models: bool = False,
         **econml_kwargs) -> CateResult:
    """Cross-fitted CATEs with an EconML learner, doubly robust scores and a final model.

    Parameters
    ----------
    y : array (n,)
        Outcome.
    w : array (n,)
        Binary treatment (0/1).
    X : DataFrame or array (n, p), optional
        Tabular covariates (effect modifiers).
    embeddings : array (n, d), or a dict / list of such arrays, optional
        Image and/or sequence embeddings; each block is appended to ``X`` (a dict's keys name
        the blocks, e.g. ``{"image": Z, "sequence": S}``).
    learner : {'causal_forest', 'dr', 'r', 't', 'x', 'dr_boost'}
        EconML's CausalForestDML, DRLearner, NonParamDML (R-learner), TLearner, XLearner; or
        'dr_boost', eocausal's DR-learner for large n (:mod:`eocausal.estimators.dr_boost`:
        nuisances by eocausal's own solvers, a histogram gradient-boosting final stage, and a
        two-way honest split: each half's CATEs from a model fitted on the other half, its
        scores from nuisances cross-fitted within it; ``**econml_kwargs`` then set the final
        stage, scikit-learn's ``HistGradientBoostingRegressor`` names). It scales linearly in
        n: 100,000 units in seconds where the causal forest takes minutes
        (docs/heterogeneity.md, "Large n").
    propensity_scores : array (n,) or float, optional
        Known propensities (RCTs). They replace the learner's propensity model and enter the
        scores. None: the learner keeps its own propensity model and the scores use
        ``propensity``.
    clusters : array (n,), optional
        Cluster labels (an image key, a village): folds keep clusters whole and EconML's inner
        cross-fitting is grouped too (EconML's ``groups=``).
    folds : int
        Outer cross-fitting folds K. With 'dr_boost', the sub-folds of each half on which its
        nuisances are cross-fitted (the CATEs are cross-fitted over the two halves, which
        ``fold_ids`` then holds).
    seed : int or None
        Seeds the folds and fills ``random_state`` where EconML takes one.
    outcome_model : {'ridge', 'linear', 'gbm', 'forest'} or regressor
        Per-arm outcome regressions mu_w of the scores; the names mean the same models as in
        AIPW (:func:`eocausal.estimators.learners.make_outcome_model`).
    propensity : 'learner', str or classifier
        Propensities of the scores when ``propensity_scores`` is None. 'learner' (default): fold k's EconML
        estimator predicts fold k with its own fitted propensity models (``model_t``,
        ``model_propensity``; averaged over its inner folds), which never saw fold k, so no
        extra model is fitted; the T-learner has none and falls back to 'ridge-logit'; 'dr_boost'
        uses the learners' default logistic model (:data:`DEFAULT_LOGIT`), cross-fitted. Any other
        value: a model cross-fitted on the same folds (see
        :func:`eocausal.estimators.learners.make_propensity_model`).
    clip : float
        Estimated propensities are clipped to [clip, 1 - clip] in the scores (known ones never).
    fit_final : bool
        Fit the learner once more on all units, for :meth:`CateResult.predict`.
    keep_fold_models : bool
        Keep the K per-fold EconML estimators in ``fold_estimators_``.
    **econml_kwargs
        Passed untouched to the EconML constructor (EconML's names). A model given here is
        used as given; eocausal fills only the ones not given (below).

    Notes
    -----
    Default models, filled in where ``**econml_kwargs`` gives none. Nuisances: "ridge" is
    eocausal's ridge outcome model (``RidgeCV`` on block-standardised inputs,
    :func:`eocausal.estimators.learners.make_outcome_model`); "logit" is an L2 logistic
    regression (C = 1) on block-standardised inputs (:data:`DEFAULT_LOGIT`), replaced by the
    known propensities when ``propensity_scores`` is given. Both converge in every fit (EconML's
    ``'auto'`` models raised up to 46 ConvergenceWarnings per call, and the DR-learner's linear
    final stage "Inference will be invalid!" with a correlation of 0.85). corr: correlation of the
    out-of-fold predictions with the true CATE on the simulation of docs/heterogeneity.md
    (replication/rct_heterogeneity, tabular + sequence embedding, n = 2000, seed 0, known
    e = 0.5; ``python -m benchmarks.cate_defaults``, benchmarks/results/cate_defaults.md).

    ============= ====================================== ================================================ =====
    learner       nuisances                              final stage / effect models                       corr
    ============= ====================================== ================================================ =====
    causal_forest model_y ridge, model_t logit           EconML's causal forest (100 trees, 5 per leaf)    0.92
    dr            model_regression ridge,                random forest, 100 trees, 20 per leaf            0.90
                  model_propensity logit                 (:data:`DEFAULT_FINAL_FOREST`; no inference)
    r             model_y ridge, model_t logit           random forest, 100 trees, 20 per leaf            0.91
    t             none                                   random forest per arm, 100 trees, 5 per leaf     0.81
                                                         (:data:`DEFAULT_FOREST`)
    x             propensity_model logit (constant e     random forest, 100 trees, 5 per leaf, for the    0.91
                  when known and constant)               outcome and the imputed-effect models
    ============= ====================================== ================================================ =====

    What each is for: the causal forest (the default) finds non-linear heterogeneity and is
    the learner grf's evaluation was designed around; 'dr' and 'r' regress pseudo-outcomes, so
    their forests average at least 20 units per leaf; 't' fits the arms separately (simple, the
    least accurate when the effect is small next to the outcome's variation); 'x' suits
    unequal arms. For a linear effect model pass ``model_final=`` (e.g. a ridge pipeline); for
    EconML's own defaults pass them by name (``model_y="auto"``, ...).

    Returns
    -------
    CateResult
        Evaluate it with :func:`eocausal.rate`, :func:`eocausal.diagnostics.test_calibration`,
        :func:`eocausal.diagnostics.blp_gates` and the other functions of :mod:`eocausal.diagnostics`.

    Raises
    ------
    InputError
        Bad shapes or values, an unknown learner, ``propensity_scores`` together with the
        learner's propensity model, or folds that cannot hold both arms.
    """
    y = np.asarray(y, dtype=float)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"y: expected shape (n,), got {y.shape}")
    n = len(y)
    if not np.isfinite(y).all():
        raise InputError(f"y: {int((~np.isfinite(y)).sum())} non-finite outcomes; drop those units first")
    w = np.asarray(w)
    if w.shape != (n,):
        raise InputError(f"w: expected shape ({n},), got {w.shape}")
    if not np.isin(w, (0, 1)).all():
        raise InputError("w: the treatment must be binary 0/1; recode it")
    w = w.astype(int)
    if w.min() == w.max():
        raise NotEstimableError(f"w: all units are {'treated' if w[0] else 'controls'}; no effect is estimable")
    F, names, n_tab, layout = _features(X, embeddings, n)
    clusters = check_clusters(clusters, n)  # None stays None; missing labels are refused
    e_mode, e_const = None, None
    e = propensity_scores
    if e is not None:
        e_arr = np.broadcast_to(np.asarray(e, dtype=float), (n,)).copy() if np.ndim(e) == 0 else np.asarray(e, float)
        if e_arr.shape != (n,):
            raise InputError(f"propensity_scores: expected {n} propensities or one number, got shape {e_arr.shape}")
        if not (np.isfinite(e_arr).all() and ((e_arr > 0) & (e_arr < 1)).all()):
            raise InputError(f"propensity_scores: known propensities must lie strictly inside (0, 1), got range "
                             f"[{np.nanmin(e_arr):.3g}, {np.nanmax(e_arr):.3g}]; pass the design's assignment "
                             "probabilities")
        e_mode = "constant" if np.ptp(e_arr) == 0 else "column"
        e_const = float(e_arr[0])
    if not 0 <= clip < 0.5:
        raise InputError(f"clip={clip}: must lie in [0, 0.5)")

    if learner == "dr_boost":
        return _cate_dr_boost(y, w, F, names, n_tab, layout, clusters, e_arr if e_mode else None, folds, seed,
                              outcome_model, propensity, clip, fit_final, econml_kwargs)
    learn = _Learner(learner, dict(econml_kwargs), seed, e_mode, e_const, n_tabular=n_tab)
    fold_ids = grouped_folds(n, clusters, folds, seed, stratify=w)
    tau = np.empty(n)
    mu = np.empty((2, n))
    fold_models = []
    from_learner = e_mode is None and isinstance(propensity, str) and propensity == "learner"
    e_hat = np.full(n, np.nan)
    for _, test, train in training_splits(fold_ids, w, "folds"):
        wt = w[train]
        est = learn.fit(y[train], wt, F[train], e_arr[train] if e_mode else None,
                        None if clusters is None else clusters[train])
        tau[test] = learn.effect(est, F[test])
        if from_learner:
            p = learn.propensity(est, F[test])
            if p is None:
                from_learner = False
            else:
                e_hat[test] = p
        if keep_fold_models:
            fold_models.append(est)
        for arm in (0, 1):
            rows = train & (w == arm)
            reg = make_outcome_model(outcome_model, seed=seed, n_tabular=n_tab)
            reg.fit(F[rows], y[rows])
            mu[arm, test] = np.asarray(reg.predict(F[test]), dtype=float).reshape(-1)

    n_clipped = 0
    source = "known"
    if e_mode is None:
        if from_learner:
            source = "learner"
        else:
            model = "ridge-logit" if isinstance(propensity, str) and propensity == "learner" else propensity
            e_hat, _ = crossfit_propensity(F, w, clusters=clusters, propensity=model, seed=seed,
                                           fold_ids=fold_ids, n_tabular=n_tab)
            source = model if isinstance(model, str) else type(model).__name__
        e_used = np.clip(e_hat, clip, 1 - clip)
        n_clipped = int(np.sum(e_used != e_hat))
    else:
        e_used = e_arr
    mu0, mu1 = mu
    scores = aipw_scores(y, w, e_used, mu0, mu1)
    final = learn.fit(y, w, F, e_arr if e_mode else None, clusters) if fit_final else None
    return CateResult(tau_hat=tau, scores=scores, mu0=mu0, mu1=mu1, propensity_scores=e_used, y=y,
                      w=w.astype(float), fold_ids=fold_ids, clusters=clusters, learner=learner,
                      feature_names=tuple(names), n_tabular=n_tab, propensity_known=e_mode is not None,
                      estimator_=final,
                      fold_estimators_=tuple(fold_models), n_clipped=n_clipped, propensity_source=source,
                      _layout=layout)


def _default_logit(n_tab: int):
    """The learners' default propensity model (:data:`DEFAULT_LOGIT` on block-standardised inputs)."""
    return make_pipeline(BlockStandardizer(n_tab), LogisticRegression(**DEFAULT_LOGIT))


def _cate_dr_boost(y, w, F, names, n_tab, layout, clusters, e_known, folds, seed, outcome_model, propensity,
                   clip, fit_final, final_kwargs) -> CateResult:
    """``learner='dr_boost'``: :mod:`eocausal.estimators.dr_boost` on the same folds and inputs."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from eocausal.estimators.dr_boost import crossfit_dr_boost

    unknown = sorted(set(final_kwargs) - set(HistGradientBoostingRegressor().get_params()))
    if unknown:
        raise InputError(f"learner='dr_boost': {unknown} are not HistGradientBoostingRegressor parameters; "
                         "the keyword arguments set its final stage (scikit-learn's names)")
    model = _default_logit(n_tab) if isinstance(propensity, str) and propensity == "learner" else propensity
    halves = grouped_folds(len(y), clusters, 2, seed, stratify=w)  # the honest split (module docstring)
    out = crossfit_dr_boost(F, y, w, halves, clusters=clusters, e_known=e_known, propensity=model,
                            outcome_model=outcome_model, n_tabular=n_tab, seed=seed, clip=clip, fit_final=fit_final,
                            inner_folds=folds, **final_kwargs)
    n_clipped = 0 if e_known is not None else int(np.sum(out["e"] != out["e_raw"]))
    if e_known is not None:
        source = "known"
    elif model is propensity:
        source = propensity if isinstance(propensity, str) else type(propensity).__name__
    else:
        source = "logit"
    return CateResult(tau_hat=out["tau_hat"], scores=out["scores"], mu0=out["mu0"], mu1=out["mu1"],
                      propensity_scores=out["e"], y=y, w=w.astype(float), fold_ids=halves, clusters=clusters,
                      learner="dr_boost", feature_names=tuple(names), n_tabular=n_tab,
                      propensity_known=e_known is not None, estimator_=out["final"], n_clipped=n_clipped,
                      propensity_source=source, _layout=layout)
