"""Doubly robust (AIPW / DML) estimates of the ATE and the ATT with cross-fitted nuisances.

Formulas (docs/methods.md, Doubly robust estimation; Robins, Rotnitzky and Zhao 1994; Hahn 1998;
Chernozhukov et al. 2018, "Double/debiased machine learning", Econometrics Journal 21, C1-C68,
sections 5.1-5.2):

- ATE. phi_i = mu1_i - mu0_i + W_i (Y_i - mu1_i) / e_i - (1 - W_i)(Y_i - mu0_i) / (1 - e_i),
  tau = mean(phi), influence function psi_i = phi_i - tau.
- ATT (DoubleML's ``score='ATTE'``). h_i = W_i (Y_i - mu0_i) - (1 - W_i) e_i (Y_i - mu0_i) / (1 - e_i),
  tau = sum_i h_i / sum_i W_i, psi_i = (h_i - tau W_i) / mean(W).

mu_w, e are out-of-fold predictions: for each fold k, the outcome model is fitted separately on the
treated and on the control units of the other folds (as DoubleML's ``DoubleMLIRM`` does) and the
propensity model on all units of the other folds. Standard errors come from psi
(:func:`eocausal.estimators.weighting.se_from_psi`, iid or clustered). With R fold assignments
(repeated cross-fitting) the estimate is the median over splits and the SE is combined as in
Chernozhukov et al. (2018, Definition 3.3 and eq. 3.8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from eocausal._types import SOLVERS
from eocausal._validation import (
    check_choice,
    check_fold_ids,
    check_matrix,
    check_propensity,
    check_treatment,
    check_vector,
)
from eocausal.errors import InputError, NotEstimableError
from eocausal.estimators.learners import linear_spec, make_outcome_model
from eocausal.estimators.propensity import crossfit_propensity
from eocausal.estimators.weighting import PointEstimate, se_from_psi

__all__ = ["AIPW_ESTIMANDS", "COMBINE_RULES", "AIPWFit", "aipw", "aipw_scores", "combine_repeated",
           "crossfit_aipw", "crossfit_outcome"]

AIPW_ESTIMANDS = ("ATE", "ATT")
COMBINE_RULES = ("median", "doubleml")


def aipw_scores(y, w, e, mu0, mu1) -> np.ndarray:
    """The doubly robust (AIPW) scores of the ATE, one per unit (Robins, Rotnitzky and Zhao 1994):
    Gamma_i = mu1_i - mu0_i + W_i (Y_i - mu1_i) / e_i - (1 - W_i)(Y_i - mu0_i) / (1 - e_i).
    Their mean is the AIPW estimate; CATE learners regress on them and RATE weights them."""
    return mu1 - mu0 + w * (y - mu1) / e - (1 - w) * (y - mu0) / (1 - e)


def crossfit_outcome(V: np.ndarray, y: np.ndarray, w: np.ndarray, fold_ids: np.ndarray, outcome_model="ridge", *,
                     n_tabular: int | None = None, seed: int | None = 0, solver: str = "native",
                     layout=None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold outcome regressions mu0(V) = E[Y | W=0, V] and mu1(V) = E[Y | W=1, V].

    For each fold k, one model is fitted on the control units and one on the treated units of the
    other folds, and both predict every unit of fold k (DoubleML's IRM nuisance ``ml_g``;
    Chernozhukov et al. 2018, section 5.1).

    Parameters
    ----------
    V : array (n, p)
        Confounders. p = 0 gives the arm means of the training folds.
    y, w : arrays (n,)
        Outcome and binary treatment.
    fold_ids : array (n,)
        Cross-fitting fold of each unit (e.g. from :func:`eocausal.data.folds.grouped_folds`).
    outcome_model : str or regressor
        See :func:`~eocausal.estimators.learners.make_outcome_model`.
    n_tabular : int, optional
        Leading tabular columns of ``V`` (the rest is an embedding scaled as one block).
    seed : int or None
        ``random_state`` of randomised models.
    solver : {'native', 'sklearn'}
        'native' fits recognised least-squares models
        (:func:`~eocausal.estimators.learners.linear_spec`) from shared cross-products
        (:func:`eocausal.estimators.glm.crossfit_linear`): the same predictions to rounding
        (about 1e-10), much faster. 'sklearn' calls the learner's own ``fit`` per fold and arm.
    layout : FoldLayout, optional
        ``glm.FoldLayout.by_fold_and_arm(V, fold_ids, w)`` shared with the propensity fit.

    Returns
    -------
    mu0, mu1 : arrays (n,)

    Raises
    ------
    NotEstimableError
        A training fold holds no unit of an arm.
    """
    y = check_vector(y, "outcome")
    n = len(y)
    w = check_treatment(w, n=n)
    V = check_matrix(V, "confounders", n)
    fold_ids = check_fold_ids(fold_ids, n)
    solver = check_choice(solver, "solver", SOLVERS)
    folds = np.unique(fold_ids)
    spec = linear_spec(outcome_model, n_tabular) if (solver == "native" and V.shape[1]) else None
    if spec is not None:
        from eocausal.estimators.glm import crossfit_linear
        from eocausal.estimators.propensity import _check_layout, small_problem_threads

        _check_layout(layout, V, fold_ids, w)
        with small_problem_threads(V):  # many small dense products: one BLAS thread is faster
            return crossfit_linear(V, y, w, fold_ids, spec, layout=layout)
    mu = np.empty((2, n))
    for f in folds:
        test = fold_ids == f
        test_idx = np.flatnonzero(test)
        for arm in (0, 1):
            rows = np.flatnonzero(~test & (w == arm))
            if len(rows) == 0:
                raise NotEstimableError(
                    f"outcome model: training folds for fold {f} hold no {'treated' if arm else 'control'} "
                    "units; use fewer folds or check the treatment and cluster columns")
            if V.shape[1] == 0:
                mu[arm, test_idx] = y[rows].mean()
                continue
            reg = make_outcome_model(outcome_model, seed=seed, n_tabular=n_tabular)
            reg.fit(V[rows], y[rows])
            mu[arm, test_idx] = np.asarray(reg.predict(V[test_idx]), dtype=float).reshape(-1)
    return mu[0], mu[1]


def _check_scores(y, w, e, mu0, mu1):
    """(y, w, e, mu0, mu1) as float arrays of one length: w 0/1, e inside (0, 1), all finite."""
    y = check_vector(y, "outcome")
    n = len(y)
    return (y, check_treatment(w, n=n), check_propensity(e, n=n), check_vector(mu0, "mu0", n),
            check_vector(mu1, "mu1", n))


def aipw(y: np.ndarray, w: np.ndarray, e: np.ndarray, mu0: np.ndarray, mu1: np.ndarray,
         estimand: str = "ATE") -> PointEstimate:
    """AIPW (doubly robust) estimate and its efficient influence function.

    ATE (docs/methods.md, Doubly robust estimation; DoubleML ``score='ATE'``)::

        phi_i = mu1_i - mu0_i + W_i (Y_i - mu1_i) / e_i - (1 - W_i)(Y_i - mu0_i) / (1 - e_i)
        tau   = mean(phi),     psi_i = phi_i - tau

    ATT (DoubleML ``score='ATTE'``; Chernozhukov et al. 2018, eq. 5.4)::

        h_i = W_i (Y_i - mu0_i) - (1 - W_i) e_i (Y_i - mu0_i) / (1 - e_i)
        tau = sum_i h_i / sum_i W_i,     psi_i = (h_i - tau W_i) / mean(W)

    (mu1 cancels from the ATT score.) ``se_from_psi(psi)`` gives the SE, sqrt(sum psi_i^2) / n,
    which equals DoubleML's; pass clusters to it for the cluster-robust SE.

    Parameters
    ----------
    y, w : arrays (n,)
        Outcome and binary treatment.
    e : array (n,)
        Propensities in (0, 1), already clipped or trimmed as intended.
    mu0, mu1 : arrays (n,)
        Outcome regressions (out of fold).
    estimand : {'ATE', 'ATT'}

    Returns
    -------
    PointEstimate
        ``weights`` holds the IPW weights of the residual terms: W/e + (1-W)/(1-e) for the ATE,
        W + (1-W) e/(1-e) for the ATT.
    """
    y, w, e, mu0, mu1 = _check_scores(y, w, e, mu0, mu1)
    if estimand not in AIPW_ESTIMANDS:
        raise InputError(f"estimand={estimand!r}: AIPW estimates 'ATE' or 'ATT'; use hajek() for the ATO")
    n1 = w.sum()
    if n1 == 0 or n1 == len(w):
        raise NotEstimableError(f"treatment: no {'treated' if n1 == 0 else 'control'} units; the effect is not "
                                "estimable")
    if estimand == "ATE":
        phi = aipw_scores(y, w, e, mu0, mu1)
        tau = float(phi.mean())
        return PointEstimate(tau, phi - tau, w / e + (1 - w) / (1 - e), np.ones_like(y))
    r0 = y - mu0
    odds = e / (1 - e)
    h = w * r0 - (1 - w) * odds * r0
    tau = float(h.sum() / n1)
    return PointEstimate(tau, (h - tau * w) / (n1 / len(w)), w + (1 - w) * odds, w / (n1 / len(w)))


def combine_repeated(estimates: Sequence[float], std_errors: Sequence[float],
                     rule: str = "median") -> tuple[float, float]:
    """Combine estimates and SEs from R cross-fitting splits.

    Both rules take tau = median_r tau_r.

    - ``'median'``: se = median_r sqrt(se_r^2 + (tau_r - tau)^2): each split's SE is inflated by
      how far its estimate lies from the median, both terms on the scale of the estimate. This is
      the median adjustment for the uncertainty of sample splitting of Chernozhukov et al.
      (2018), sigma^2 = median_r (sigma_r^2 + (tau_r - tau)^2), with sigma_r^2 read as the
      variance of the estimate. It is *not* what DoubleML computed before 0.9
      (``DoubleML._agg_cross_fit``): se = sqrt(median_r (n se_r^2 + (tau_r - tau)^2) / n), which
      reads sigma_r^2 as the variance of sqrt(n) (tau_r - tau0), so the spread of the splits enters
      divided by n and barely moves the SE. For an odd R, median_r sqrt(.) = sqrt(median_r(.)).
    - ``'doubleml'`` (DoubleML 0.9 and later, ``doubleml.utils._estimation._aggregate_coefs_and_ses``):
      the median of the splits' upper 95% bounds turned back into an SE,
      se = (median_r (tau_r + z se_r) - tau) / z with z = 1.96 (DoubleML's fixed constant, whatever
      the interval level). It does not add the spread of the splits: with equal se_r it is se_r.

    Returns
    -------
    (estimate, se)
    """
    t = np.asarray(estimates, dtype=float).reshape(-1)
    s = np.asarray(std_errors, dtype=float).reshape(-1)
    if len(t) == 0 or t.shape != s.shape:
        raise InputError(f"estimates, std_errors: need two non-empty sequences of the same length, got "
                         f"{t.shape} and {s.shape}")
    med = float(np.median(t))
    if rule == "median":
        return med, float(np.median(np.sqrt(s**2 + (t - med) ** 2)))
    if rule == "doubleml":
        z = 1.96
        return med, float((np.median(t + z * s) - med) / z)
    raise InputError(f"rule={rule!r}: use one of {list(COMBINE_RULES)}")


@dataclass(frozen=True)
class AIPWFit:
    """Cross-fitted AIPW over one or more fold assignments (R = number of splits).

    ``estimate`` and ``std_error`` are combined over splits by ``combine`` (see
    :func:`combine_repeated`); ``estimates``/``std_errors`` hold the R per-split values;
    ``psi``, ``e`` (clipped), ``e_raw``, ``mu0``, ``mu1`` are (R, n) arrays; ``n_clipped`` the
    number of clipped propensities per split.
    """

    estimate: float
    std_error: float
    estimand: str
    n_clusters: int | None
    combine: str
    estimates: np.ndarray
    std_errors: np.ndarray
    psi: np.ndarray
    e: np.ndarray
    e_raw: np.ndarray
    mu0: np.ndarray
    mu1: np.ndarray
    n_clipped: np.ndarray

    def confint(self, alpha: float = 0.05) -> tuple[float, float]:
        """Normal interval estimate -/+ z_{1-alpha/2} se."""
        z = stats.norm.ppf(1 - alpha / 2)
        return self.estimate - z * self.std_error, self.estimate + z * self.std_error


def crossfit_aipw(V: np.ndarray, y: np.ndarray, w: np.ndarray, fold_ids, *, propensity="ridge-logit",
                  outcome_model="ridge", estimand: str = "ATE", clip: float = 1e-3,
                  clusters: np.ndarray | None = None, n_tabular: int | None = None,
                  seed: int | None = 0, combine: str = "median", solver: str = "native") -> AIPWFit:
    """Cross-fitted AIPW (DML) estimate, optionally repeated over R fold assignments.

    For each split r: out-of-fold propensities (:func:`crossfit_propensity`, clipped to
    [clip, 1 - clip]) and outcome regressions (:func:`crossfit_outcome`), then :func:`aipw` and its
    SE (clustered when ``clusters`` is given). The R results are combined by
    :func:`combine_repeated`.

    Parameters
    ----------
    V : array (n, p)
        Confounders (tabular columns first, then the embedding).
    y, w : arrays (n,)
        Outcome and binary treatment.
    fold_ids : array (n,), array (R, n) or sequence of R arrays (n,)
        Fold assignments; with clusters, build them with
        :func:`eocausal.data.folds.grouped_folds` so no cluster is split.
    propensity : str or classifier
        See :func:`~eocausal.estimators.learners.make_propensity_model`.
    outcome_model : str or regressor
        See :func:`~eocausal.estimators.learners.make_outcome_model`.
    estimand : {'ATE', 'ATT'}
    clip : float
        Propensities are clipped to [clip, 1 - clip] (DoubleML's ``clipping_threshold``); 0 keeps them.
    clusters : array (n,), optional
        Cluster labels for the cluster-robust SE (and the ridge-logit inner CV folds).
    n_tabular : int, optional
        Leading tabular columns of ``V`` (the rest is an embedding scaled as one block).
    seed : int or None
        Seeds the inner CV folds and randomised models.
    combine : {'median', 'doubleml'}
        How R > 1 splits are combined.
    solver : {'native', 'sklearn'}
        'native' solves recognised logistic and least-squares nuisances with eocausal's
        fold-sharing solvers (see :func:`crossfit_propensity` and :func:`crossfit_outcome`);
        'sklearn' calls each learner's own ``fit``, exactly as DoubleML does.
    """
    y = check_vector(y, "outcome")
    w = check_treatment(w, n=len(y))
    solver = check_choice(solver, "solver", SOLVERS)
    if not 0 <= clip < 0.5:
        raise InputError(f"clip={clip}: must lie in [0, 0.5)")
    combine = check_choice(combine, "combine", COMBINE_RULES)
    if estimand not in AIPW_ESTIMANDS:
        raise InputError(f"estimand={estimand!r}: AIPW estimates 'ATE' or 'ATT'")
    F = np.asarray(fold_ids)
    if F.ndim == 1:
        F = F[None, :]
    if F.ndim != 2 or F.shape[1] != len(y):
        raise InputError(f"fold_ids: expected shape ({len(y)},) or (R, {len(y)}), got {np.shape(fold_ids)}")
    R, n = F.shape
    out = {k: np.empty((R, n)) for k in ("psi", "e", "e_raw", "mu0", "mu1")}
    ests, ses, clipped = np.empty(R), np.empty(R), np.empty(R, dtype=int)
    n_clusters = None
    for r in range(R):
        e_raw, _ = crossfit_propensity(V, w, clusters=clusters, propensity=propensity, seed=seed,
                                       fold_ids=F[r], n_tabular=n_tabular, solver=solver)
        e = np.clip(e_raw, clip, 1 - clip) if clip > 0 else e_raw
        mu0, mu1 = crossfit_outcome(V, y, w, F[r], outcome_model, n_tabular=n_tabular, seed=seed, solver=solver)
        pe = aipw(y, w, e, mu0, mu1, estimand)
        ests[r] = pe.estimate
        ses[r], n_clusters = se_from_psi(pe.psi, clusters)
        clipped[r] = int(np.sum(e != e_raw))
        for k, v in zip(("psi", "e", "e_raw", "mu0", "mu1"), (pe.psi, e, e_raw, mu0, mu1)):
            out[k][r] = v
    est, se = (float(ests[0]), float(ses[0])) if R == 1 else combine_repeated(ests, ses, combine)
    return AIPWFit(estimate=est, std_error=se, estimand=estimand, n_clusters=n_clusters, combine=combine,
                   estimates=ests, std_errors=ses, n_clipped=clipped, **out)
