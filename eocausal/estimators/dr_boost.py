"""A doubly robust CATE learner for large n: native cross-fitted nuisances, a boosted final stage.

``cate(..., learner="dr_boost")`` (docs/heterogeneity.md, "Large n"). EconML's learners fit
their nuisances with scikit-learn estimators inside every fold and their forests grow with n
faster than linearly (CausalForestDML with 100 trees: 7.5 s at n = 10,000, 137 s at n = 100,000;
issue 19). This learner is the DR-learner (Kennedy 2023) built from the per-trial core:

1. Nuisances: out-of-fold propensities (:func:`~eocausal.estimators.propensity.crossfit_propensity`,
   known ones in an RCT) and per-arm outcome regressions
   (:func:`~eocausal.estimators.aipw.crossfit_outcome`), by eocausal's fold-sharing solvers
   (:mod:`eocausal.estimators.glm`: one pass of cross-products per fold for ridge, Newton with
   shared Hessians for the logistic model) or any scikit-learn learner ('gbm': histogram gradient
   boosting).
2. Pseudo-outcomes: the AIPW scores
   Gamma_i = mu1_i - mu0_i + W_i (Y_i - mu1_i) / e_i - (1 - W_i)(Y_i - mu0_i) / (1 - e_i).
3. Final stage: scikit-learn's ``HistGradientBoostingRegressor`` of Gamma on the features
   (:data:`FINAL_BOOST`: learning rate 0.05, at most 1,000 rounds stopped early on a 10%
   validation split, leaves of at least :func:`min_leaf` units, the pseudo-outcomes' noise being
   several times the outcome's). Histogram boosting costs O(n p) per round, so the stage scales
   linearly in n.

Honesty (what RATE, the calibration test and BLP/GATES require): unit i's priority tau_hat_i must
not depend on its outcome, and its evaluation score Gamma_i must not depend on the data tau_hat_i
was learned from. A two-way split gives both (grf's advice for RATE):
:func:`~eocausal.estimators.cate.cate` splits the units into two halves A and B (``fold_ids``; clusters kept whole, balanced by arm), and

- the nuisances (e, mu0, mu1) of each half are cross-fitted within that half alone, on K
  sub-folds of it (``folds``; clusters kept whole): Gamma_i of a unit of B is a function of B's
  data only (without its own sub-fold);
- B's priorities come from a final model fitted on A's scores, A's from one fitted on B's:
  tau_hat_i of a unit of B is a function of A's data and x_i.

So a half's scores and its priorities share no data (tests/estimators/test_dr_boost.py perturbs
each half's outcomes and checks both). The scheme this replaced had K folds, fold k's priorities
from a model fitted on the other folds (nuisances nested within them) and scores whose nuisances
were cross-fitted on those same other folds: an outcome model that overfit D_-k pushed tau_hat_i
and Gamma_i the same way, and at n = 2,000 the 95% RATE interval covered 0.90 (SD of the error
0.064 against a mean SE of 0.056). With the split it covers 0.95 (SD 0.072, mean SE 0.072, 200
replications; benchmarks/results/cate_scale.md, "RATE interval coverage"). Scores cross-fitted
within each of the K folds would keep the K-fold priorities, but their nuisances see
(K - 1) n / K^2 units: at n = 2,000 their SE was ten times larger (0.56). The price of the split is priorities
learned from half the units (correlation with the true CATE 0.30 against 0.42 at n = 2,000, 0.867
against 0.887 at n = 100,000, 0.931 against 0.936 at n = 1,000,000), and scores whose nuisances
see (K - 1) / (2K) of the units; the half-sample SE accounts for their noise. ``scores`` (and the
``mu0``, ``mu1``, ``e`` with them) are these within-half scores; ``CateResult.ate()`` averages
them. The transport model (``fit_final=True``) is fitted on all units' scores with nuisances
cross-fitted over all 2K sub-folds (``scores_full``). Cost: one cross-fit's worth of nuisance
fits (2K fits on (K - 1) / (2K) of the units each) and two final models on n / 2 units, plus the
transport model; each half needs at least 2 clusters. Memory: one training set at a time; the
pseudo-outcomes and predictions are n-vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eocausal.data.folds import grouped_folds, training_splits
from eocausal.estimators.aipw import aipw_scores
from eocausal.errors import InputError, NotEstimableError

__all__ = ["FINAL_BOOST", "BoostedDR", "crossfit_dr_boost", "min_leaf"]

#: The final stage's ``HistGradientBoostingRegressor`` settings (``min_samples_leaf`` from
#: :func:`min_leaf`). Early stopping is on: the number of rounds adapts to how much signal the
#: noisy pseudo-outcomes carry.
FINAL_BOOST = {"learning_rate": 0.05, "max_iter": 1000, "max_leaf_nodes": 15, "early_stopping": True,
               "validation_fraction": 0.1, "n_iter_no_change": 20, "l2_regularization": 1.0}


def min_leaf(n: int) -> int:
    """Smallest leaf of the final stage: 20 units (as eocausal's pseudo-outcome forests), growing
    as n / 1,000 for large n so each leaf averages the pseudo-outcomes' noise over more units."""
    return int(max(20, n // 1000))


@dataclass
class BoostedDR:
    """The fitted final stage: ``effect(F)`` predicts the CATE of new feature rows (transport)."""

    model: object
    n_features: int

    def effect(self, F) -> np.ndarray:
        F = np.asarray(F, dtype=float)
        if F.ndim != 2 or F.shape[1] != self.n_features:
            raise InputError(f"features: expected {self.n_features} columns, got shape {F.shape}")
        return np.asarray(self.model.predict(F), dtype=float)

    predict = effect


def _final_model(n: int, seed, kwargs: dict):
    from sklearn.ensemble import HistGradientBoostingRegressor

    params = {**FINAL_BOOST, "min_samples_leaf": min_leaf(n), "random_state": seed}
    params.update(kwargs)
    return HistGradientBoostingRegressor(**params)


def _nuisances(F, y, w, fold_ids, clusters, e_known, propensity, outcome_model, n_tab, seed, clip):
    """Out-of-fold (e, mu0, mu1) on these rows and folds, e clipped; and the unclipped e."""
    from eocausal.estimators.aipw import crossfit_outcome
    from eocausal.estimators.propensity import crossfit_propensity

    mu0, mu1 = crossfit_outcome(F, y, w, fold_ids, outcome_model, n_tabular=n_tab, seed=seed)
    if e_known is not None:
        return e_known, e_known, mu0, mu1
    e_raw, _ = crossfit_propensity(F, w, clusters=clusters, propensity=propensity, seed=seed,
                                   fold_ids=fold_ids, n_tabular=n_tab)
    return np.clip(e_raw, clip, 1 - clip), e_raw, mu0, mu1


def _within_block_nuisances(F, y, w, blocks, clusters, e_known, propensity, outcome_model, n_tab, seed, clip,
                            inner_folds: int):
    """(e, e_raw, mu0, mu1, sub_ids): each block's nuisances cross-fitted within that block alone
    (``inner_folds`` sub-folds keeping clusters whole, stratified by arm), so a unit's score
    uses no data outside its block. ``sub_ids``: the sub-fold of each unit, unique over blocks."""
    n = len(y)
    e, e_raw, mu0, mu1 = (np.empty(n) for _ in range(4))
    sub_ids = np.empty(n, dtype=np.intp)
    for b, k in enumerate(np.unique(blocks)):
        rows = np.flatnonzero(blocks == k)
        cl = None if clusters is None else np.asarray(clusters)[rows]
        n_groups = len(rows) if cl is None else len(np.unique(cl))
        if n_groups < 2:
            raise NotEstimableError(
                f"dr_boost: fold {k} holds {n_groups} cluster; its scores are cross-fitted within the fold and "
                "need at least 2 clusters there; pass more clusters (a finer cluster column)")
        inner = grouped_folds(len(rows), cl, min(inner_folds, n_groups), seed, stratify=w[rows])
        ek = None if e_known is None else e_known[rows]
        e[rows], e_raw[rows], mu0[rows], mu1[rows] = _nuisances(
            F[rows], y[rows], w[rows], inner, cl, ek, propensity, outcome_model, n_tab, seed, clip)
        sub_ids[rows] = b * inner_folds + inner
    return e, e_raw, mu0, mu1, sub_ids


def crossfit_dr_boost(F, y, w, fold_ids, *, clusters=None, e_known=None, propensity, outcome_model="ridge",
                      n_tabular: int = 0, seed=0, clip: float = 1e-3, fit_final: bool = True,
                      inner_folds: int = 5, **final_kwargs) -> dict:
    """Out-of-fold CATEs, scores and nuisances of the boosted DR-learner (see the module
    docstring, "Honesty").

    ``F``: features (n, p); ``fold_ids``: the honest blocks (:func:`~eocausal.estimators.cate.cate`
    passes two halves; clusters kept whole): a block's CATEs come from a final model fitted on the
    other blocks, its scores from nuisances cross-fitted within it on ``inner_folds`` sub-folds
    (fewer where a block holds fewer clusters); ``e_known``: known propensities or None;
    ``propensity`` / ``outcome_model``: nuisance models as in
    :func:`~eocausal.estimators.aipw.crossfit_aipw`; ``final_kwargs``: overrides of
    :data:`FINAL_BOOST` (scikit-learn's names).
    Returns a dict with ``tau_hat``; ``scores`` (within-block AIPW scores: the evaluation scores and
    the final models' pseudo-outcomes) with their ``mu0``, ``mu1``, ``e`` (as used) and
    ``e_raw``; ``sub_ids`` (each unit's sub-fold, unique over blocks); ``scores_full`` (AIPW scores
    with nuisances cross-fitted over all sub-folds, the transport model's pseudo-outcomes; None
    with ``fit_final=False``); ``final`` (a :class:`BoostedDR` fitted on all units, or None).
    """
    F = np.asarray(F, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.asarray(w, dtype=float)
    n, p = F.shape
    fold_ids = np.asarray(fold_ids)
    inner_folds = int(inner_folds)
    if inner_folds < 2:
        raise InputError(f"folds={inner_folds}: the within-half cross-fit needs at least 2 sub-folds")
    e, e_raw, mu0, mu1, sub_ids = _within_block_nuisances(F, y, w, fold_ids, clusters, e_known, propensity,
                                                          outcome_model, n_tabular, seed, clip, inner_folds)
    scores = aipw_scores(y, w, e, mu0, mu1)
    tau = np.empty(n)
    for _, test, train in training_splits(fold_ids, w.astype(int), "folds"):
        model = _final_model(int(train.sum()), seed, final_kwargs).fit(F[train], scores[train])
        tau[test] = model.predict(F[test])
    final = scores_full = None
    if fit_final:
        e_f, _, m0, m1 = _nuisances(F, y, w, sub_ids, clusters, e_known, propensity, outcome_model,
                                    n_tabular, seed, clip)
        scores_full = aipw_scores(y, w, e_f, m0, m1)
        del e_f, m0, m1
        final = BoostedDR(_final_model(n, seed, final_kwargs).fit(F, scores_full), p)
    return {"tau_hat": tau, "scores": scores, "mu0": mu0, "mu1": mu1, "e": e, "e_raw": e_raw,
            "sub_ids": sub_ids, "scores_full": scores_full, "final": final}
