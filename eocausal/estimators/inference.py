"""Inference for weighting and doubly robust estimators (docs/methods.md, Standard errors).

Three tools:

1. :func:`ipw_logit_if`: the M-estimation influence function of Horvitz-Thompson and Hajek IPW
   when e(V) = expit(X beta) is an estimated, unpenalised logistic regression on X = [1, V]
   (Lunceford and Davidian 2004, Statistics in Medicine 23, 2937-2960, section 3.2; Stefanski
   and Boos 2002 for the stacked estimating equations). With psi_i the influence function for a
   known e, A = E[e(1-e) X X^T] (minus the derivative of the logistic score S_i = X_i (W_i - e_i)),
   and H = E[d psi_i / d beta],

       psi_adj_i = psi_i + H^T A^{-1} S_i.

   For the ATE with a correctly specified model, H = -E[psi S^T] and the adjustment removes the
   projection of psi on the score, so asymptotically the SE is no larger than the known-e SE,
   which is conservative (Lunceford and Davidian 2004, eq. 21). Note the sign: + with
   H = E[d psi / d beta], because A is minus the derivative of S (checked against the stacked
   sandwich in tests/estimators/test_inference.py).
2. Vectorised bootstraps. Scores are summed per cluster once; each replicate draws cluster
   counts (multinomial or Poisson(1); a unit is its own cluster without clusters), and the
   replicate totals of every score component are one (B x G) @ (G x k) product, computed in
   chunks of replicates (no Python loop over units). Clusters stay whole by construction.
   Replicate b draws its counts (or multipliers) from its own random stream, seeded by
   (seed, b), so the draws do not depend on the chunk size; only the summation order of the
   product, and so the last bits of the totals, may.
   :func:`bootstrap_ipw` recomputes the Hajek/HT ratios per replicate from the weighted totals;
   :func:`bootstrap_aipw` bootstraps the AIPW scores with the nuisances fixed; and
   :func:`multiplier_bootstrap` perturbs the influence function with i.i.d. multipliers
   (normal, Rademacher, Mammen, or DoubleML's 'Bayes'), as DoubleML's ``bootstrap()`` does.
3. :func:`refit_bootstrap_ipw`: the nonparametric (cluster) bootstrap of IPW that refits a ridge
   logistic propensity on the fixed confounders/embeddings in every draw (docs/methods.md,
   Standard errors), with the penalty chosen once.

Intervals: percentile, (q_{alpha/2}, q_{1-alpha/2}) of the draws; normal, estimate -/+ z se_boot.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import expit

from eocausal._validation import (
    check_choice,
    check_clusters,
    check_fold_ids,
    check_matrix,
    check_positive_int,
    check_propensity,
    check_treatment,
    check_vector,
)
from eocausal.errors import InputError, NotEstimableError
from eocausal.estimators.aipw import aipw
from eocausal.estimators.glm import check_separation
from eocausal.estimators.weighting import arm_weights, hajek, horvitz_thompson

__all__ = ["COUNTS", "MULTIPLIERS", "BootstrapResult", "LogitIPW", "bootstrap_aipw", "bootstrap_counts",
           "bootstrap_ipw", "bootstrap_scores", "bootstrap_totals", "choose_ridge_penalty", "fit_logit",
           "ipw_logit_if", "logit_adjusted_psi", "multiplier_bootstrap", "refit_bootstrap_ipw"]

COUNTS = ("multinomial", "poisson")
MULTIPLIERS = ("normal", "rademacher", "mammen", "bayes")
_CHUNK_BYTES = 32 * 2**20


# ----------------------------------------------------------------------------- logistic fits
def fit_logit(X: np.ndarray, w: np.ndarray, *, sample_weight: np.ndarray | None = None, penalty: float = 0.0,
              beta0: np.ndarray | None = None, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """Weighted (optionally ridge-penalised) logistic regression by Newton-Raphson.

    Minimises sum_i c_i [log(1 + exp(x_i'b)) - W_i x_i'b] + (penalty / 2) ||b_{1:}||^2; column 0
    of ``X`` is the unpenalised intercept. ``penalty = 1/C`` gives scikit-learn's
    ``LogisticRegression(C=C)`` on the same design; integer ``sample_weight`` equals duplicating rows.

    Raises
    ------
    SeparationError
        Without a penalty, when the confounders (quasi-)separate the arms and the maximiser is not
        finite, by the one rule of :func:`eocausal.estimators.glm.check_separation`: fitted
        log-odds beyond 30 (e within 1e-13 of 0 or 1) together with no convergence or a slope
        beyond 30 per SD of its column. One outlying covariate value with an ordinary slope is fitted.
    """
    n, p = X.shape
    c = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    b = np.zeros(p) if beta0 is None else np.array(beta0, dtype=float)
    pen = np.full(p, float(penalty))
    pen[0] = 0.0

    def objective(beta):
        z = X @ beta
        return float(c @ (np.logaddexp(0.0, z) - w * z) + 0.5 * pen @ beta**2)

    f = objective(b)
    converged = False
    for _ in range(max_iter):
        e = expit(X @ b)
        grad = X.T @ (c * (e - w)) + pen * b
        hess = (X * (c * e * (1 - e))[:, None]).T @ X + np.diag(pen)
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        while True:  # step halving keeps the (convex) objective decreasing
            f_new = objective(b - t * step)
            if f_new <= f + 1e-12 * abs(f) or t < 1e-8:
                break
            t /= 2
        b, f = b - t * step, f_new
        if np.max(np.abs(t * step)) < tol * (1 + np.max(np.abs(b))):
            converged = True
            break
    used = c > 0
    if penalty == 0 and used.any():
        sd = X[used, 1:].std(axis=0)
        check_separation(float(np.abs(X[used] @ b).max()), b[1:] * sd, converged)
    return b


def _design(V: np.ndarray, n: int) -> np.ndarray:
    V = np.asarray(V, dtype=float)
    if V.ndim == 1:
        V = V[:, None]
    return np.hstack([np.ones((n, 1)), check_matrix(V, "confounders", n)])


def _outcome_treatment(y, w) -> tuple[np.ndarray, np.ndarray]:
    y = check_vector(y, "outcome")
    return y, check_treatment(w, n=len(y))


def _weight_derivatives(w, e, estimand):
    """Scalars (a1, a0) with d w1_i / d beta = a1_i X_i and d w0_i / d beta = a0_i X_i."""
    w1, w0 = arm_weights(w, e, estimand)
    if estimand == "ATE":
        return -w1 * (1 - e), w0 * e
    if estimand == "ATT":
        return np.zeros_like(e), w0
    return -w1 * e, w0 * (1 - e)  # ATO


@dataclass(frozen=True)
class LogitIPW:
    """IPW with an estimated logistic propensity: estimate and both influence functions.

    ``psi`` accounts for the estimated propensity (Lunceford and Davidian 2004);
    ``psi_known_e`` treats e as known. SEs: :func:`~eocausal.estimators.weighting.se_from_psi`.
    """

    estimate: float
    psi: np.ndarray
    psi_known_e: np.ndarray
    e: np.ndarray
    beta: np.ndarray
    weights: np.ndarray


def ipw_logit_if(y: np.ndarray, w: np.ndarray, V: np.ndarray, *, estimator: str = "hajek",
                 estimand: str = "ATE", beta: np.ndarray | None = None) -> LogitIPW:
    """HT or Hajek IPW with e = expit([1, V] beta) fitted by unpenalised ML, and its M-estimation IF.

    psi_adj_i = psi_i + H^T A^{-1} S_i, with S_i = X_i (W_i - e_i), A = mean_i e_i(1-e_i) X_i X_i^T
    and H = mean_i d psi_i / d beta, where (arm weights w1, w0 from ``arm_weights``;
    d w1_i/d beta = a1_i X_i, d w0_i/d beta = a0_i X_i):

    - Hajek: psi_i = w1_i (Y_i - mu1)/mean(w1) - w0_i (Y_i - mu0)/mean(w0), so
      H = mean_i [a1_i (Y_i - mu1)/mean(w1) - a0_i (Y_i - mu0)/mean(w0)] X_i.
    - HT: psi_i = ((w1_i - w0_i) Y_i - tau d_i)/mean(d) with d = 1 (ATE), W (ATT), e(1-e) (ATO), so
      H = mean_i [(a1_i - a0_i) Y_i - tau dd_i/dbeta] X_i / mean(d).

    Lunceford and Davidian (2004), eqs. 17-21 (ATE); the same stacking gives the ATT and ATO.
    This is the in-sample (not cross-fitted) logistic model the M-estimation theory covers.

    Parameters
    ----------
    y, w : arrays (n,)
    V : array (n, p)
        Propensity design without the intercept (added here).
    estimator : {'hajek', 'ht'}
    estimand : {'ATE', 'ATT', 'ATO'}
    beta : array (p + 1,), optional
        Logistic coefficients (intercept first); fitted by :func:`fit_logit` when omitted.
    """
    y, w = _outcome_treatment(y, w)
    n = len(y)
    X = _design(V, n)
    if estimator not in ("hajek", "ht"):
        raise InputError(f"estimator={estimator!r}: use 'hajek' or 'ht'")
    if estimand not in ("ATE", "ATT", "ATO"):
        raise InputError(f"estimand={estimand!r}: use 'ATE', 'ATT' or 'ATO'")
    if w.sum() in (0, n):
        raise NotEstimableError("treatment: both arms need units to estimate an effect")
    beta = fit_logit(X, w) if beta is None else np.asarray(beta, dtype=float)
    e = expit(X @ beta)
    pe = (hajek if estimator == "hajek" else horvitz_thompson)(y, w, e, estimand)
    psi = logit_adjusted_psi(pe, y, w, e, X, estimator=estimator, estimand=estimand)
    return LogitIPW(float(pe.estimate), psi, pe.psi, e, beta, pe.weights)


def logit_adjusted_psi(pe, y: np.ndarray, w: np.ndarray, e_raw: np.ndarray, X: np.ndarray, *,
                       estimator: str = "hajek", estimand: str = "ATE", penalty: np.ndarray | None = None,
                       clip: float = 0.0) -> np.ndarray:
    """The IPW influence function corrected for an estimated logistic propensity.

    psi_adj_i = psi_i + S_i' A^{-1} H (see :func:`ipw_logit_if`), with S_i = X_i (W_i - e_i),
    A = mean_i e_i (1 - e_i) X_i X_i' + diag(penalty) / n and H = mean_i d psi_i / d beta.

    Parameters
    ----------
    pe : PointEstimate
        :func:`~eocausal.estimators.weighting.hajek` or ``horvitz_thompson`` at the clipped
        propensities; ``pe.psi`` is the known-e influence function.
    e_raw : array (n,)
        The logistic model's propensities before clipping (they enter S and A).
    X : array (n, p + 1)
        The model's design, intercept first, in the coordinates ``penalty`` refers to.
    penalty : array (p + 1,), optional
        Ridge penalty on each coefficient of the summed log-likelihood (0 for the intercept);
        the fitted coefficients' sensitivity is then (A + diag(penalty)/n)^{-1}.
    clip : float
        Units whose propensity was clipped to [clip, 1 - clip] have weights that do not move with
        beta (their derivative is 0).

    Returns
    -------
    numpy.ndarray, shape (n,)
        The corrected influence function psi_adj.

    Notes
    -----
    With cross-fitted propensities (each fold's e from the other folds' fit), the first-order
    expansion of the estimate around the limit model is the same as for one in-sample fit, so
    this correction applies with e the out-of-fold propensities.
    """
    n = len(y)
    e = np.clip(e_raw, clip, 1 - clip) if clip > 0 else e_raw
    moving = (e == e_raw).astype(float)
    w1, w0 = arm_weights(w, e, estimand)
    a1, a0 = _weight_derivatives(w, e, estimand)
    a1, a0 = a1 * moving, a0 * moving
    if estimator == "hajek":
        mu1 = np.sum(w1 * y) / np.sum(w1)
        mu0 = np.sum(w0 * y) / np.sum(w0)
        coef = a1 * (y - mu1) / w1.mean() - a0 * (y - mu0) / w0.mean()
    elif estimand == "ATE":
        coef = (a1 - a0) * y
    elif estimand == "ATT":
        coef = (a1 - a0) * y / w.mean()
    else:
        v = e * (1 - e)
        coef = ((a1 - a0) * y - pe.estimate * v * (1 - 2 * e) * moving) / v.mean()
    H = X.T @ coef / n
    ve = e_raw * (1 - e_raw)
    A = (X * ve[:, None]).T @ X / n
    if penalty is not None:
        A[np.diag_indices_from(A)] += np.asarray(penalty, dtype=float) / n
    from eocausal.estimators.glm import solve_spd

    u = solve_spd(A, H)  # equilibrated: penalties on near-constant columns are huge in these coordinates
    return pe.psi + (X @ u) * (w - e_raw)


# ----------------------------------------------------------------------------- bootstrap core
@dataclass(frozen=True)
class BootstrapResult:
    """Bootstrap draws of a scalar estimate.

    ``draws`` holds the B replicate estimates (replicates whose statistic was undefined, e.g. an
    arm drawn empty, are dropped and counted in ``n_failed``).
    """

    estimate: float
    draws: np.ndarray
    method: str
    n_clusters: int | None = None
    n_failed: int = 0

    @property
    def n_boot(self) -> int:
        return int(len(self.draws))

    @property
    def std_error(self) -> float:
        """Standard deviation of the draws (ddof = 1)."""
        return float(np.std(self.draws, ddof=1))

    def confint(self, alpha: float = 0.05, kind: str = "percentile") -> tuple[float, float]:
        """Percentile interval (q_{alpha/2}, q_{1-alpha/2}) or normal interval estimate -/+ z se."""
        if not 0 < alpha < 1:
            raise InputError(f"alpha={alpha}: must lie in (0, 1)")
        if kind == "percentile":
            lo, hi = np.quantile(self.draws, [alpha / 2, 1 - alpha / 2])
            return float(lo), float(hi)
        if kind == "normal":
            z = stats.norm.ppf(1 - alpha / 2)
            return self.estimate - z * self.std_error, self.estimate + z * self.std_error
        raise InputError(f"kind={kind!r}: use 'percentile' or 'normal'")


def _seed_sequence(seed) -> np.random.SeedSequence:
    """The root of the per-draw streams: from an int, None (fresh entropy), a SeedSequence or a Generator."""
    if isinstance(seed, np.random.RandomState):
        raise InputError("seed: resampling counts need an int or a numpy Generator, not a RandomState")
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):  # consumes one draw of the caller's generator
        return np.random.SeedSequence(seed.integers(0, 2**63, size=2).tolist())
    return np.random.SeedSequence(seed)


def _draw_rng(root: np.random.SeedSequence, b: int) -> np.random.Generator:
    """The generator of replicate b: it depends only on (seed, b), never on how draws are chunked."""
    return np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (int(b),))))


def _codes(clusters, n):
    codes = check_clusters(clusters, n)
    return (None, n) if codes is None else (codes, int(codes.max()) + 1)


def _chunk(n_boot, G, chunk_size):
    if chunk_size is not None:
        return check_positive_int(chunk_size, "chunk_size", 1)
    return int(min(n_boot, max(1, _CHUNK_BYTES // (16 * G))))


def _count_chunks(G, n_boot, root, counts, chunk_size):
    """Yield (m, G) float matrices of cluster counts, m <= chunk, B rows in all.

    Row b is drawn from :func:`_draw_rng` (root, b) alone, so the counts are the same whatever the
    chunk size (only the float sums computed from them may differ in the last place, through the
    summation order of the matrix product).
    """
    check_choice(counts, "counts", COUNTS)
    m_max = _chunk(n_boot, G, chunk_size)
    for start in range(0, n_boot, m_max):
        m = min(m_max, n_boot - start)
        C = np.empty((m, G))
        for r in range(m):
            rng = _draw_rng(root, start + r)
            if counts == "multinomial":  # G cluster draws with replacement, tallied
                C[r] = np.bincount(rng.integers(0, G, size=G), minlength=G)
            else:
                C[r] = rng.poisson(1.0, size=G)
        yield C


def bootstrap_counts(n: int, clusters: np.ndarray | None = None, *, n_boot: int = 1000,
                     counts: str = "multinomial", seed=0) -> np.ndarray:
    """The (B, n) unit-level resampling counts the bootstraps use for the same ``seed``.

    Counts are drawn per cluster and expanded to units by indexing, so every unit of a cluster
    gets its cluster's count. Memory B x n: meant for inspection and tests.
    """
    n_boot = check_positive_int(n_boot, "n_boot", 1)
    codes, G = _codes(clusters, n)
    C = np.vstack(list(_count_chunks(G, n_boot, _seed_sequence(seed), counts, None)))
    return C if codes is None else C[:, codes]


def bootstrap_totals(components: np.ndarray, statistic, estimate: float, *, n_boot: int = 1000,
                     clusters: np.ndarray | None = None, counts: str = "multinomial", seed=0,
                     chunk_size: int | None = None, method: str = "nonparametric") -> BootstrapResult:
    """Bootstrap a statistic of weighted column totals.

    Replicate b has totals T_b = sum_i c_bi components_i (c_b the resampling counts, drawn per
    cluster) and estimate ``statistic(T)`` evaluated row-wise on the (m, k) matrix of totals. The
    components are summed per cluster once, so each chunk costs one (m, G) @ (G, k) product.

    Parameters
    ----------
    components : array (n, k)
        Per-unit terms whose totals define the statistic (e.g. [w1 y, w1, w0 y, w0] for Hajek).
    statistic : callable
        Maps an (m, k) array of totals to m replicate estimates.
    estimate : float
        The full-sample estimate (centre of the normal interval).
    n_boot : int
        Number of replicates B.
    clusters : array (n,), optional
        Resample whole clusters.
    counts : {'multinomial', 'poisson'}
        Multinomial (G draws with replacement) or independent Poisson(1) counts per cluster.
    seed : int, Generator or None
        Replicate b draws its counts from its own stream, seeded by (seed, b) (a Generator is
        turned into such a root with one draw), so the counts never depend on ``chunk_size``.
    chunk_size : int, optional
        Replicates per matrix product (default: about 32 MB of counts). It changes only the
        summation order of the totals (their last bits), not the counts.
    method : str
        Label of the bootstrap in the result.
    """
    Z = np.asarray(components, dtype=float)
    if Z.ndim == 1:
        Z = Z[:, None]
    n = Z.shape[0]
    n_boot = check_positive_int(n_boot, "n_boot", 2)
    if not np.isfinite(Z).all():
        raise InputError("bootstrap: non-finite score components; check the inputs for NaN")
    codes, G = _codes(clusters, n)
    S = Z if codes is None else np.stack([np.bincount(codes, weights=Z[:, j], minlength=G)
                                          for j in range(Z.shape[1])], axis=1)
    out = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for C in _count_chunks(G, n_boot, _seed_sequence(seed), counts, chunk_size):
            out.append(np.asarray(statistic(C @ S), dtype=float).reshape(-1))
    draws = np.concatenate(out)
    ok = np.isfinite(draws)
    if ok.sum() < 2:
        raise NotEstimableError("bootstrap: fewer than 2 replicates gave a finite estimate; "
                                "an arm is too small for the cluster bootstrap")
    return BootstrapResult(float(estimate), draws[ok], f"{method} ({counts}"
                           + (f", {G} clusters)" if codes is not None else ")"),
                           G if codes is not None else None, int(np.sum(~ok)))


def bootstrap_scores(psi: np.ndarray, estimate: float, **kwargs) -> BootstrapResult:
    """Bootstrap of a linearised estimator: draws = estimate + sum_i c_i psi_i / sum_i c_i.

    psi is centred first (as in ``se_from_psi``).
    For the AIPW ATE this is exactly the fixed-nuisance bootstrap of mean(phi). Keywords as in
    :func:`bootstrap_totals`.
    """
    psi = np.asarray(psi, dtype=float).reshape(-1)
    psi = psi - psi.mean()
    return bootstrap_totals(np.stack([psi, np.ones_like(psi)], axis=1),
                            lambda T: estimate + T[:, 0] / T[:, 1], estimate, method="scores", **kwargs)


def bootstrap_ipw(y: np.ndarray, w: np.ndarray, e: np.ndarray, *, estimator: str = "hajek",
                  estimand: str = "ATE", **kwargs) -> BootstrapResult:
    """Bootstrap Hajek or HT IPW with the propensities held fixed, ratios recomputed per replicate.

    Hajek: sum c w1 Y / sum c w1 - sum c w0 Y / sum c w0. HT: sum c (w1 - w0) Y / sum c d with
    d = 1 (ATE), W (ATT), e(1-e) (ATO). To include the propensity-model uncertainty use
    :func:`refit_bootstrap_ipw`. Keywords as in :func:`bootstrap_totals`.
    """
    y, w = _outcome_treatment(y, w)
    e = check_propensity(e, n=len(y), open_interval=estimand != "ATO")
    w1, w0 = arm_weights(w, e, estimand)
    if estimator == "hajek":
        est = hajek(y, w, e, estimand).estimate
        Z = np.stack([w1 * y, w1, w0 * y, w0], axis=1)
        return bootstrap_totals(Z, lambda T: T[:, 0] / T[:, 1] - T[:, 2] / T[:, 3], est,
                                method="hajek", **kwargs)
    if estimator == "ht":
        est = horvitz_thompson(y, w, e, estimand).estimate
        d = {"ATE": np.ones_like(y), "ATT": w, "ATO": e * (1 - e)}[estimand]
        return bootstrap_totals(np.stack([(w1 - w0) * y, d], axis=1), lambda T: T[:, 0] / T[:, 1], est,
                                method="ht", **kwargs)
    raise InputError(f"estimator={estimator!r}: use 'hajek' or 'ht'")


def bootstrap_aipw(y: np.ndarray, w: np.ndarray, e: np.ndarray, mu0: np.ndarray, mu1: np.ndarray, *,
                   estimand: str = "ATE", **kwargs) -> BootstrapResult:
    """Nonparametric bootstrap of AIPW with the cross-fitted nuisances held fixed.

    ATE: sum c phi / sum c; ATT: sum c h / sum c W (phi, h as in :func:`~eocausal.estimators.aipw.aipw`).
    Keywords as in :func:`bootstrap_totals`.
    """
    pe = aipw(y, w, e, mu0, mu1, estimand)  # validates the inputs
    y, w, e, mu0 = (np.asarray(a, dtype=float) for a in (y, w, e, mu0))
    if estimand == "ATE":
        Z = np.stack([pe.psi + pe.estimate, np.ones_like(y)], axis=1)
    else:
        r0 = y - mu0
        Z = np.stack([w * r0 - (1 - w) * e / (1 - e) * r0, w], axis=1)
    return bootstrap_totals(Z, lambda T: T[:, 0] / T[:, 1], pe.estimate, method="aipw", **kwargs)


# ----------------------------------------------------------------------------- multiplier bootstrap
def _multipliers(rng, kind, size):
    legacy = isinstance(rng, np.random.RandomState)
    if kind == "normal":
        return rng.normal(0.0, 1.0, size=size) if legacy else rng.standard_normal(size)
    if kind == "bayes":
        return rng.exponential(1.0, size=size) - 1.0
    if kind == "rademacher":
        if legacy:
            return 2.0 * rng.randint(0, 2, size=size) - 1.0
        m, G = size  # one random bit per multiplier
        bits = np.unpackbits(rng.integers(0, 256, size=(m, -(-G // 8)), dtype=np.uint8), axis=1)[:, :G]
        return 2.0 * bits - 1.0
    if kind == "mammen":
        s5 = np.sqrt(5.0)
        u = rng.random_sample(size) if legacy else rng.random(size)
        return np.where(u < (s5 + 1) / (2 * s5), -(s5 - 1) / 2, (s5 + 1) / 2)
    raise InputError(f"weights={kind!r}: use one of {list(MULTIPLIERS)}")


def multiplier_bootstrap(psi: np.ndarray, estimate: float, *, n_boot: int = 1000, weights: str = "normal",
                         clusters: np.ndarray | None = None, seed=0, chunk_size: int | None = None,
                         draw: str = "full") -> BootstrapResult:
    """Multiplier (score) bootstrap: draws = estimate + sum_g xi_g Psi_g / n.

    Psi_g is the sum of psi over cluster g (a unit is its own cluster without clusters) and xi_g
    are i.i.d. multipliers with mean 0 and variance 1 (Chernozhukov, Chetverikov and Kato 2013;
    DoubleML ``bootstrap(method=...)``): 'normal' N(0, 1), 'rademacher' +-1 with probability 1/2,
    'mammen' -(sqrt5-1)/2 w.p. (sqrt5+1)/(2 sqrt5) else (sqrt5+1)/2 (third moment 1), 'bayes'
    Exp(1) - 1 (DoubleML's 'Bayes'). The t-statistics (draws - estimate) / se_IF equal minus
    DoubleML's ``boot_t_stat`` when ``seed`` is a ``numpy.random.RandomState`` in the state
    ``np.random.seed(s)`` leaves (DoubleML draws from the global legacy generator; its scores
    have the opposite sign).

    Parameters
    ----------
    psi : array (n,)
        Influence function (mean zero).
    n_boot : int
        Number of replicates B (at least 2).
    weights : {'normal', 'rademacher', 'mammen', 'bayes'}
        Law of the multipliers.
    clusters : array (n,), optional
        Cluster labels: one multiplier per cluster.
    seed : int, None, Generator or RandomState
        An int, None or a Generator seeds one stream per replicate (replicate b depends only on
        the seed and b); a ``RandomState`` draws the B x G multipliers from its legacy stream in
        one call, as DoubleML does.
    chunk_size : int, optional
        Replicates per matrix product (default: about 32 MB of multipliers); it does not change
        the multipliers.
    draw : {'full', 'exact'}
        'full' draws the B x G multipliers. 'exact', for normal multipliers only, uses
        that sum_g xi_g Psi_g given the data is exactly N(0, sum_g Psi_g^2) and draws B normals:
        the same bootstrap distribution at O(B) cost. For one scalar estimate the normal multiplier
        bootstrap therefore reproduces the IF normal interval; Rademacher and Mammen multipliers
        (or :func:`bootstrap_scores`) also reflect the skewness of psi.
    """
    psi = check_vector(np.asarray(psi, dtype=float).reshape(-1), "psi")
    n = len(psi)
    n_boot = check_positive_int(n_boot, "n_boot", 2)
    check_choice(weights, "weights", MULTIPLIERS)
    check_choice(draw, "draw", ("full", "exact"))
    codes, G = _codes(clusters, n)
    P = psi if codes is None else np.bincount(codes, weights=psi, minlength=G)
    legacy = isinstance(seed, np.random.RandomState)
    if draw == "exact":
        if weights != "normal":
            raise InputError("draw='exact' needs weights='normal' (only then is the law of the draws closed-form)")
        rng = seed if isinstance(seed, (np.random.Generator, np.random.RandomState)) else np.random.default_rng(seed)
        scale = np.sqrt(np.sum(P**2)) / n
        dev = scale * rng.normal(0.0, 1.0, size=n_boot)
    else:
        m_max = _chunk(n_boot, G, chunk_size)
        # a RandomState (DoubleML's legacy stream) fills the whole B x G matrix in one call, as DoubleML
        # does; otherwise replicate b's multipliers come from its own stream (seed, b). Either way the
        # multipliers do not depend on the chunk size.
        xi_all = _multipliers(seed, weights, (n_boot, G)) if legacy else None
        root = None if legacy else _seed_sequence(seed)
        buf = np.empty((m_max, G))
        parts = []
        for start in range(0, n_boot, m_max):
            m = min(m_max, n_boot - start)
            if legacy:
                xi = xi_all[start:start + m]
            else:
                xi = buf[:m]
                for r in range(m):
                    rng = _draw_rng(root, start + r)
                    if weights == "normal":  # in place: no fresh array per replicate
                        rng.standard_normal(out=xi[r])
                    else:
                        xi[r] = _multipliers(rng, weights, (1, G))[0]
            parts.append(xi @ P / n)
        dev = np.concatenate(parts)
    label = f"multiplier ({weights}" + (f", {G} clusters)" if codes is not None else ")")
    return BootstrapResult(float(estimate), estimate + dev, label, G if codes is not None else None)


# ----------------------------------------------------------------------------- refit bootstrap
def choose_ridge_penalty(V: np.ndarray, w: np.ndarray, *, clusters: np.ndarray | None = None,
                         n_tabular: int | None = None, seed: int | None = 0) -> float:
    """The inverse penalty C of the ridge-logit propensity, chosen once by (grouped) 3-fold CV.

    Uses :func:`~eocausal.estimators.learners.make_propensity_model` ('ridge-logit') on all units.
    """
    from sklearn.exceptions import ConvergenceWarning

    from eocausal.data.folds import grouped_folds
    from eocausal.estimators.learners import make_propensity_model

    ids = grouped_folds(len(w), clusters, 3, seed, stratify=w)
    inner = [(np.flatnonzero(ids != j), np.flatnonzero(ids == j)) for j in range(3)]
    model = make_propensity_model("ridge-logit", inner_cv=inner, seed=seed, n_tabular=n_tabular)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(V, w)
    return float(np.ravel(model[-1].C_)[0])


def refit_bootstrap_ipw(V: np.ndarray, y: np.ndarray, w: np.ndarray, *, n_boot: int = 200,
                        estimator: str = "hajek", estimand: str = "ATE", C: float | None = None,
                        clip: float = 1e-3, clusters: np.ndarray | None = None,
                        fold_ids: np.ndarray | None = None, n_tabular: int | None = None,
                        counts: str = "multinomial", seed: int | None = 0) -> BootstrapResult:
    """Bootstrap of IPW that refits the ridge-logit propensity in every draw (docs/methods.md, Standard errors).

    The confounders are standardised once (as the 'ridge-logit' model does) and the inverse penalty
    C is fixed (``C``, or :func:`choose_ridge_penalty` once). Draw b resamples units (or whole
    clusters) as counts c_b, refits the logistic regression with weights c_b (equivalent to
    duplicating rows; Newton steps warm-started at the full-sample fit), clips e to
    [clip, 1 - clip] and recomputes the Hajek/HT estimate with the same counts. With
    ``fold_ids`` the propensity is cross-fitted in every draw (K fits on the resampled training
    folds; copies of a unit stay in its fold), as the point estimate is.

    Cost: B x (K or 1) Newton fits, each a few iterations of O(n p^2) (about 10 ms for
    n = 10,000, p = 64), against B x (n + p) for the fixed-propensity :func:`bootstrap_ipw`.
    The returned ``estimate`` is the full-sample estimate with the fixed-penalty model.
    """
    y, w = _outcome_treatment(y, w)
    n = len(y)
    check_choice(estimator, "estimator", ("hajek", "ht"))
    check_choice(estimand, "estimand", ("ATE", "ATT", "ATO"))
    n_boot = check_positive_int(n_boot, "n_boot", 2)
    if not 0 <= clip < 0.5:
        raise InputError(f"clip={clip}: must lie in [0, 0.5)")
    Vm = np.asarray(V, dtype=float)
    X = _design(Vm, n)
    if X.shape[1] > 1:
        from sklearn.preprocessing import StandardScaler

        from eocausal.estimators.learners import BlockStandardizer

        scaler = StandardScaler() if n_tabular is None else BlockStandardizer(n_tabular)
        X[:, 1:] = scaler.fit_transform(X[:, 1:])
    if C is None:
        C = choose_ridge_penalty(Vm, w, clusters=clusters, n_tabular=n_tabular, seed=seed)
    lam = 1.0 / C
    folds = None if fold_ids is None else check_fold_ids(fold_ids, n)
    fold_list = [None] if folds is None else list(np.unique(folds))

    def fit_predict(c, starts):
        e, betas = np.empty(n), []
        for f, b0 in zip(fold_list, starts):
            train = c if f is None else c * (folds != f)
            b = fit_logit(X, w, sample_weight=train, penalty=lam, beta0=b0)
            rows = slice(None) if f is None else folds == f
            e[rows] = expit(X[rows] @ b)
            betas.append(b)
        return np.clip(e, clip, 1 - clip) if clip > 0 else e, betas

    def stat(c, e):
        w1, w0 = arm_weights(w, e, estimand)
        if estimator == "hajek":
            return (c @ (w1 * y)) / (c @ w1) - (c @ (w0 * y)) / (c @ w0)
        d = {"ATE": np.ones(n), "ATT": w, "ATO": e * (1 - e)}[estimand]
        return (c @ ((w1 - w0) * y)) / (c @ d)

    ones = np.ones(n)
    e_full, betas = fit_predict(ones, [None] * len(fold_list))
    est = float(stat(ones, e_full))
    codes, G = _codes(clusters, n)
    draws = np.empty(n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        for b, Cg in enumerate(_count_chunks(G, n_boot, _seed_sequence(seed), counts, 1)):
            c = Cg[0] if codes is None else Cg[0][codes]
            if (c * w).sum() == 0 or (c * (1 - w)).sum() == 0:
                draws[b] = np.nan
                continue
            e_b, _ = fit_predict(c, betas)
            draws[b] = stat(c, e_b)
    ok = np.isfinite(draws)
    if ok.sum() < 2:
        raise NotEstimableError("refit bootstrap: fewer than 2 replicates gave a finite estimate")
    label = f"refit propensity ({counts}" + (f", {G} clusters)" if codes is not None else ")")
    return BootstrapResult(est, draws[ok], label, G if codes is not None else None, int(np.sum(~ok)))
