"""Cross-fitted propensity scores e(V) = P(W = 1 | V).

The default model is a ridge-penalised logistic regression on standardised confounders, its
penalty chosen by cross-validation inside each training fold (folds grouped by cluster). Any
scikit-learn classifier with ``predict_proba`` can be passed instead; the models are built by
:mod:`eocausal.estimators.learners`.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning

from eocausal._types import SOLVERS
from eocausal._validation import check_choice, check_clusters, check_fold_ids, check_matrix, check_treatment
from eocausal.data.folds import grouped_folds, training_splits
from eocausal.errors import InputError
from eocausal.estimators.learners import logistic_spec, make_propensity_model

__all__ = ["crossfit_propensity", "fit_propensity", "small_problem_threads"]


def small_problem_threads(V: np.ndarray):
    """One BLAS thread for small design matrices (a context manager).

    L-BFGS on a few hundred columns makes many tiny BLAS calls; with several threads, and
    worse on a busy machine, thread hand-offs dominate: on the demo study one thread was 3x
    faster on 2 cores. Large problems keep the library's threads.
    """
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas") if V.size < 20_000_000 else nullcontext()


def crossfit_propensity(V: np.ndarray, w: np.ndarray, *, clusters: np.ndarray | None = None,
                        folds: int = 5, propensity="ridge-logit", seed: int | None = 0,
                        fold_ids: np.ndarray | None = None, n_tabular: int | None = None,
                        solver: str = "native", details: dict | None = None,
                        layout=None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold propensities.

    Parameters
    ----------
    V : array (n, p)
        Confounders (covariates and/or embeddings). p = 0 gives the marginal share.
    w : array (n,)
        Binary treatment.
    clusters : array (n,), optional
        Cluster labels; folds (and the inner CV folds of 'ridge-logit') never split a cluster.
    folds : int
        Number of cross-fitting folds (ignored when ``fold_ids`` is given).
    propensity : str or classifier
        See :func:`~eocausal.estimators.learners.make_propensity_model`.
    seed : int or None
        Seeds the folds, the inner CV folds and randomised models.
    fold_ids : array (n,), optional
        Precomputed fold labels (overrides ``folds``/``seed`` for the outer folds).
    n_tabular : int, optional
        Number of leading tabular columns of ``V``; the remaining columns are an embedding,
        scaled as one block (see :class:`~eocausal.estimators.learners.BlockStandardizer`). None
        scales every column.
    solver : {'native', 'sklearn'}
        'native' solves recognised logistic models (see
        :func:`~eocausal.estimators.learners.logistic_spec`) with eocausal's fold-sharing Newton
        solver (:mod:`eocausal.estimators.glm`): the same model, solved to a tighter tolerance
        than scikit-learn's L-BFGS default and several times faster. 'sklearn' calls the
        learner's own ``fit`` on each fold, exactly as DoubleML does. Other models are always
        fitted by their own ``fit``.
    details : dict, optional
        Filled with ``spec`` (the recognised :class:`~eocausal.estimators.glm.LogisticSpec` or
        None) and ``C`` (the inverse penalty per fold, when known).
    layout : FoldLayout, optional
        ``glm.FoldLayout.by_fold_and_arm(V, fold_ids, w)``, built once and shared with
        :func:`~eocausal.estimators.aipw.crossfit_outcome` (native solver only).

    Returns
    -------
    e : array (n,)
        Out-of-fold P(W=1 | V), unclipped.
    fold_ids : array (n,)
        The fold of each unit.

    Raises
    ------
    InputError
        Arrays of the wrong shape, non-finite confounders, a non-binary treatment, an unknown
        solver or model.
    NotEstimableError
        A training fold holds units of one arm only.
    """
    w = check_treatment(w)
    n = len(w)
    V = check_matrix(V, "confounders", n)
    solver = check_choice(solver, "solver", SOLVERS)
    codes = check_clusters(clusters, n)
    if fold_ids is None:
        fold_ids = grouped_folds(n, codes, folds, seed, stratify=w)
    else:
        fold_ids = check_fold_ids(fold_ids, n)
    spec = logistic_spec(propensity, n_tabular) if V.shape[1] else None
    if details is not None:
        details.update(spec=spec, C=None)
    e = np.empty(n)
    with small_problem_threads(V):
        if solver == "native" and spec is not None:
            from eocausal.estimators.glm import crossfit_logistic

            _check_layout(layout, V, fold_ids, w)
            fit = crossfit_logistic(V, w, fold_ids, spec, clusters=codes, seed=seed, layout=layout)
            e[:] = fit.e
            if details is not None:
                details["C"] = fit.C
        else:
            Cs = _fit_folds(V, w, e, fold_ids, codes, propensity, seed, n_tabular)
            if details is not None and spec is not None and all(c is not None for c in Cs):
                details["C"] = np.array(Cs, dtype=float)
    return e, fold_ids


def fit_propensity(V: np.ndarray, w: np.ndarray, *, clusters: np.ndarray | None = None, propensity="ridge-logit",
                   seed: int | None = 0, n_tabular: int | None = None, solver: str = "native",
                   details: dict | None = None) -> np.ndarray:
    """In-sample propensities of a logistic model fitted on all units (``estimate(crossfit=False)``).

    The parametric propensity of textbook IPW (Lunceford and Davidian 2004): one fit on every
    unit, so the IPW estimate and the logistic score are one M-estimator and the stacked sandwich
    (:func:`~eocausal.estimators.inference.logit_adjusted_psi`) is its exact influence function.
    'ridge-logit' chooses its penalty by the same grouped inner CV as in
    :func:`crossfit_propensity`, then refits on every unit. Arguments as there.

    Raises
    ------
    InputError
        The model is not a logistic regression eocausal recognises
        (:func:`~eocausal.estimators.learners.logistic_spec`): an in-sample fit of a flexible
        classifier overfits and has no sandwich; cross-fit it instead.
    """
    w = check_treatment(w)
    n = len(w)
    V = check_matrix(V, "confounders", n)
    solver = check_choice(solver, "solver", SOLVERS)
    codes = check_clusters(clusters, n)
    if V.shape[1] == 0:
        if details is not None:
            details.update(spec=None, C=None)
        return np.full(n, w.mean())
    spec = logistic_spec(propensity, n_tabular)
    if spec is None:
        name = propensity if isinstance(propensity, str) else type(propensity).__name__
        raise InputError(f"propensity={name!r}: an in-sample fit (crossfit=False) needs a logistic model "
                         "('ridge-logit', 'logit' or a LogisticRegression); use crossfit=True for other models")
    with small_problem_threads(V):
        if solver == "native":
            from eocausal.estimators.glm import fit_logistic

            C, intercept, slopes = fit_logistic(V, w, spec, clusters=codes, seed=seed)
            e = expit(V @ slopes + intercept)
        else:
            e = np.empty(n)
            Cs = _fit_folds(V, w, e, np.zeros(n, dtype=np.intp), codes, propensity, seed, n_tabular, in_sample=True)
            C = Cs[0]
    if details is not None:
        details.update(spec=spec, C=None if C is None else np.array([C], dtype=float))
    return e


def _check_layout(layout, V, fold_ids, w) -> None:
    if layout is not None and not layout.matches(V, fold_ids, w):
        raise InputError("layout: it was built for other data, folds or treatment; build it with "
                         "FoldLayout.by_fold_and_arm(V, fold_ids, w) for this call, or leave it out")


def _fit_folds(V, w, e, fold_ids, codes, propensity, seed, n_tabular, in_sample: bool = False) -> list:
    """Fit the learner on each training fold; returns the inverse penalty per fold (None if unknown).

    ``in_sample``: one fit on every unit, predicted on every unit.
    """
    Cs = []
    splits = ([(0, np.ones(len(w), bool), np.ones(len(w), bool))] if in_sample
              else training_splits(fold_ids, w, "propensity"))
    for _, test, train in splits:
        wt = w[train]
        if V.shape[1] == 0:
            e[test] = wt.mean()
            Cs.append(None)
            continue
        inner = None
        if isinstance(propensity, str) and propensity == "ridge-logit" and codes is not None:
            inner_ids = grouped_folds(int(train.sum()), codes[train], 3, seed, stratify=wt)
            inner = [(np.flatnonzero(inner_ids != j), np.flatnonzero(inner_ids == j)) for j in range(3)]
        clf = make_propensity_model(propensity, inner_cv=inner, seed=seed, n_tabular=n_tabular)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(V[train], wt)
        e[test] = clf.predict_proba(V[test])[:, 1]
        final = clf.steps[-1][1] if hasattr(clf, "steps") else clf
        C = getattr(final, "C_", getattr(final, "C", None))
        Cs.append(None if C is None else float(np.ravel(C)[0]))
    return Cs
