"""Cross-fitted propensity scores e(V) = P(W = 1 | V).

The default model is a ridge-penalised logistic regression on standardised confounders, its
penalty chosen by cross-validation inside each training fold (folds grouped by cluster). Any
scikit-learn classifier with ``predict_proba`` can be passed instead.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from eocausal.errors import InputError
from eocausal.estimators.crossfit import grouped_folds

#: Inverse penalties searched by the ridge-logistic model.
RIDGE_CS = np.logspace(-4, 2, 9)
# scikit-learn >= 1.8 asks for l1_ratios/use_legacy_attributes explicitly (and warns otherwise)
_NEW_LOGITCV_API = "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters


class BlockStandardizer(TransformerMixin, BaseEstimator):
    """Standardise tabular columns one by one and embedding columns as one block.

    The first ``n_tabular`` columns are centred and scaled to unit variance each; the rest (an
    embedding) are centred and divided by their pooled standard deviation, which keeps the
    relative scale of embedding dimensions. Scaling each of hundreds of random features to unit
    variance would give near-constant noise features the same prior weight as informative ones
    under a ridge penalty; on the demo study that doubled the IPW error (see
    tests/estimators/test_propensity.py).
    """

    def __init__(self, n_tabular: int = 0):
        self.n_tabular = n_tabular

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        k = self.n_tabular
        self.mean_ = X.mean(axis=0)
        scale = np.empty(X.shape[1])
        sd = X[:, :k].std(axis=0)
        scale[:k] = np.where(sd > 0, sd, 1.0)
        if X.shape[1] > k:
            pooled = (X[:, k:] - self.mean_[k:]).std()
            scale[k:] = pooled if pooled > 0 else 1.0
        self.scale_ = scale
        return self

    def transform(self, X):
        return (np.asarray(X, dtype=float) - self.mean_) / self.scale_


def make_propensity_model(model="ridge-logit", *, inner_cv=None, seed: int | None = 0,
                          n_tabular: int | None = None):
    """A fresh classifier for a model name or a scikit-learn estimator (cloned).

    ``n_tabular``: how many leading columns are tabular covariates (the rest are embedding
    dimensions, scaled as one block); None standardises every column.
    """
    if not isinstance(model, str):
        if not hasattr(model, "predict_proba"):
            raise InputError(f"propensity: {type(model).__name__} has no predict_proba; pass a classifier")
        return clone(model)
    if model == "ridge-logit":
        cv = inner_cv if inner_cv is not None else 3
        extra = ({"l1_ratios": (0.0,), "use_legacy_attributes": False}
                 if _NEW_LOGITCV_API else {})
        scaler = StandardScaler() if n_tabular is None else BlockStandardizer(n_tabular)
        return make_pipeline(
            scaler,
            LogisticRegressionCV(Cs=RIDGE_CS, cv=cv, scoring="neg_log_loss", max_iter=3000, **extra),
        )
    if model == "logit":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1e6, max_iter=5000))
    if model == "gbm":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed)
    raise InputError(
        f"propensity={model!r}: unknown model; use 'ridge-logit', 'logit', 'gbm' or a "
        "scikit-learn classifier"
    )


def small_problem_threads(V: np.ndarray):
    """One BLAS thread for small design matrices (a context manager).

    L-BFGS on a few hundred columns makes many tiny BLAS calls; with several threads, and
    worse on a busy machine, thread hand-offs dominate: on the demo study one thread was 3x
    faster on 2 cores. Large problems keep the library's threads.
    """
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas") if V.size < 20_000_000 else nullcontext()


def logistic_spec(model, n_tabular: int | None = None):
    """The :class:`~eocausal.estimators.glm.LogisticSpec` of a propensity model, or None.

    Recognised: 'ridge-logit', 'logit', and scikit-learn's ``LogisticRegression`` with an L2 (or
    no) penalty, a free intercept, no class weights and a solver other than liblinear (which
    penalises the intercept), alone or after a ``StandardScaler`` or :class:`BlockStandardizer`
    in a ``Pipeline``. Anything else (gradient boosting, other classifiers) is fitted as given.
    """
    from eocausal.estimators.glm import LogisticSpec

    block = n_tabular is not None
    if isinstance(model, str):
        if model == "ridge-logit":
            return LogisticSpec(C=None, Cs=tuple(RIDGE_CS), scaler="block" if block else "standard",
                                n_tabular=n_tabular or 0)
        if model == "logit":
            return LogisticSpec(C=1e6, scaler="standard")
        return None
    parts = split_scaler(model)
    if parts is None:
        return None
    scaler, n_tab, est = parts
    if type(est) is not LogisticRegression:
        return None
    prm = est.get_params()
    if (prm.get("penalty") not in ("l2", "deprecated", None) or prm.get("l1_ratio") not in (None, 0, 0.0)
            or not prm["fit_intercept"] or prm["class_weight"] is not None or prm["solver"] == "liblinear"
            or prm.get("dual")):
        return None
    C = np.inf if prm.get("penalty") is None else float(prm["C"])
    return LogisticSpec(C=C, scaler=scaler, n_tabular=n_tab)


def split_scaler(model):
    """(scaler kind, n_tabular, final estimator) of a learner, or None when eocausal cannot map it.

    A bare estimator has scaler 'none'; a ``Pipeline`` of a ``StandardScaler`` (or
    :class:`BlockStandardizer`) and an estimator gives 'standard' (or 'block' with its
    ``n_tabular``); any other pipeline gives None.
    """
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline):
        return "none", 0, model
    steps = [s for _, s in model.steps if s is not None and s != "passthrough"]
    if len(steps) == 1:
        return "none", 0, steps[0]
    if len(steps) != 2:
        return None
    kind = _scaler_kind(steps[0])
    if kind is None:
        return None
    if isinstance(kind, tuple):
        return kind[0], kind[1], steps[1]
    return kind, 0, steps[1]


def _scaler_kind(step):
    """'standard', ('block', n_tabular), 'none' for a recognised scaling step, else None."""
    if type(step) is StandardScaler:
        return "standard" if step.with_std else "none"
    if type(step) is BlockStandardizer:
        return ("block", int(step.n_tabular))
    return None


def crossfit_propensity(V: np.ndarray, w: np.ndarray, *, groups: np.ndarray | None = None,
                        folds: int = 5, model="ridge-logit", seed: int | None = 0,
                        fold_ids: np.ndarray | None = None,
                        n_tabular: int | None = None, native: bool = True,
                        details: dict | None = None, layout=None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold propensities.

    Parameters
    ----------
    V : array (n, p)
        Confounders (covariates and/or embeddings). p = 0 gives the marginal share.
    w : array (n,)
        Binary treatment.
    groups : array (n,), optional
        Cluster codes; folds never split a group.
    folds : int
        Number of cross-fitting folds.
    model : str or classifier
        See :func:`make_propensity_model`.
    fold_ids : array (n,), optional
        Precomputed fold assignment (overrides ``folds``/``seed``).
    n_tabular : int, optional
        Number of leading tabular columns of ``V``; the remaining columns are an embedding,
        scaled as one block (see :class:`BlockStandardizer`). None scales every column.
    native : bool
        Solve logistic models (see :func:`logistic_spec`) with eocausal's fold-sharing Newton
        solver (:mod:`eocausal.estimators.glm`): the same model, solved to a tighter tolerance
        than scikit-learn's L-BFGS default and several times faster. False calls the
        learner's own ``fit`` on each fold, exactly as DoubleML does.
    details : dict, optional
        Filled with ``spec`` (the recognised :class:`~eocausal.estimators.glm.LogisticSpec` or
        None) and ``C`` (the inverse penalty per fold, when solved natively).
    layout : FoldLayout, optional
        ``glm.FoldLayout.by_fold_and_arm(V, fold_ids, w)``, built once and shared with
        :func:`~eocausal.estimators.aipw.crossfit_outcome` (native solvers only).

    Returns
    -------
    e : array (n,)
        Out-of-fold P(W=1 | V), unclipped.
    fold_ids : array (n,)
        The fold of each unit.
    """
    V = np.asarray(V, dtype=float)
    w = np.asarray(w, dtype=float)
    n = len(w)
    if V.ndim != 2 or V.shape[0] != n:
        raise InputError(f"confounders: expected shape ({n}, p), got {V.shape}")
    if not np.isfinite(V).all():
        raise InputError("confounders: non-finite values; impute or drop them before estimating")
    if fold_ids is None:
        fold_ids = grouped_folds(n, groups, folds, seed, stratify=w)
    spec = logistic_spec(model, n_tabular) if V.shape[1] else None
    if details is not None:
        details.update(spec=spec, C=None)
    e = np.empty(n)
    with small_problem_threads(V):
        if native and spec is not None:
            from eocausal.estimators.glm import crossfit_logistic

            _check_layout(layout, V, fold_ids, w)
            fit = crossfit_logistic(V, w, fold_ids, spec, groups=groups, seed=seed, layout=layout)
            e[:] = fit.e
            if details is not None:
                details["C"] = fit.C
        else:
            Cs = _fit_folds(V, w, e, fold_ids, groups, model, seed, n_tabular)
            if details is not None and spec is not None and all(c is not None for c in Cs):
                details["C"] = np.array(Cs, dtype=float)
    return e, fold_ids


def _check_layout(layout, V, fold_ids, w) -> None:
    if layout is not None and not layout.matches(V, fold_ids, w):
        raise InputError("layout: it was built for other data, folds or treatment; build it with "
                         "FoldLayout.by_fold_and_arm(V, fold_ids, w) for this call, or leave it out")


def _fit_folds(V, w, e, fold_ids, groups, model, seed, n_tabular) -> list:
    """Fit the learner on each training fold; returns the inverse penalty per fold (None if unknown)."""
    Cs = []
    for f in np.unique(fold_ids):
        test = fold_ids == f
        train = ~test
        wt = w[train]
        if wt.min() == wt.max():
            raise InputError(
                f"propensity: training fold {f} holds only {'treated' if wt[0] else 'control'} units; "
                "use fewer folds or check the cluster column"
            )
        if V.shape[1] == 0:
            e[test] = wt.mean()
            Cs.append(None)
            continue
        inner = None
        if isinstance(model, str) and model == "ridge-logit" and groups is not None:
            inner_ids = grouped_folds(int(train.sum()), np.asarray(groups)[train], 3, seed, stratify=wt)
            inner = [(np.flatnonzero(inner_ids != j), np.flatnonzero(inner_ids == j)) for j in range(3)]
        clf = make_propensity_model(model, inner_cv=inner, seed=seed, n_tabular=n_tabular)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(V[train], wt)
        e[test] = clf.predict_proba(V[test])[:, 1]
        final = clf.steps[-1][1] if hasattr(clf, "steps") else clf
        C = getattr(final, "C_", getattr(final, "C", None))
        Cs.append(None if C is None else float(np.ravel(C)[0]))
    return Cs
