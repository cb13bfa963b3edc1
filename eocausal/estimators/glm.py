"""Native cross-fitting for linear and logistic nuisance models, sharing work across folds.

Why: with scikit-learn learners, each fold and arm is a separate black-box fit on a copied row
subset. On the aid-study benchmark (34 trials, 68,619 units, 89 confounders;
benchmarks/results/trials.md) 170 L-BFGS logistic fits and 340 ``LinearRegression`` fits were 86%
of the time. The same models, solved here, cost a small fraction of that:

- The confounders are centred and scaled once by their mean and SD over all rows (columns with
  SD 0 keep scale 1) and the rows are ordered by fold (and arm), so every training set is a few
  contiguous slices of one array: views, not copies.
- A learner's own scaler (``StandardScaler`` or
  :class:`~eocausal.estimators.learners.BlockStandardizer`, fitted on its training rows) and
  its penalty become a diagonal penalty in these coordinates. With a free intercept, an affine
  change of the features with the penalty rescaled to match is the same model, so the fitted
  predictions are those of the learner. Training-set means and variances come from per-fold
  sums by subtraction.
- Logistic models (scikit-learn's objective ``C * sum(loss) + ||beta||^2 / 2``, intercept not
  penalised) are solved by Newton's method with step halving, to a step below 1e-9 in the scaled
  coordinates, warm-started from the previous fold's solution. That is tighter than L-BFGS at
  scikit-learn's default ``tol=1e-4``, so the two differ by what L-BFGS leaves unconverged, which
  depends on the data and grows with the number of columns. Largest absolute difference in the
  out-of-fold propensities, native against ``solver='sklearn'`` (scikit-learn's own lbfgs fit at
  its default tolerance), on the design of tests/estimators/test_glm.py (800 units, 5 grouped
  folds): 7e-5 to 6e-4 with 8 confounders (seeds 1-10; 'logit', fixed C = 1 and 0.01,
  'ridge-logit'), 8e-4 to 2.3e-3 ('logit') and 6e-4 to 9e-4 ('ridge-logit') with 64 (seeds 1-5);
  not 1e-5.
  Solved to the optimum by scikit-learn (``solver='newton-cholesky'``, ``tol=1e-12``) the two
  agree to below 1e-9 (same tests).
- Least squares and ridge (scikit-learn's ``LinearRegression``, ``Ridge``: centred, intercept not
  penalised) use cross-products: one X'X per (fold, arm) block, training sets by subtraction.
  ``RidgeCV``'s penalty is chosen by the same efficient leave-one-out error (hat values from one
  eigendecomposition per training set, all penalties at once).

The penalty search of ``LogisticRegressionCV`` (inner folds, held-out log-loss, refit at the
best ``C``) runs along a warm-started path of Newton fits.

Wide designs (embeddings of 1,024 or 2,048 columns; from :data:`REDUCE_MIN_COLUMNS` columns):
a ridge-penalised fit depends on the design only through the row space of its training rows, of
dimension r <= min(n_train, distinct rows). Ridge-logistic fits are solved in that space, in a
basis where the training rows' Gram matrix is diagonal (:class:`RowSpace`: from one n x n kernel
shared by all inner folds, or p x p Grams by subtraction of per-fold Grams), by Newton's method
whose steps are conjugate-gradient solves preconditioned by that diagonal
(:func:`newton_cg_logistic`: O(n r) per product where a Newton Hessian costs O(n r^2)).
``RidgeCV``'s eigendecomposition comes from the training rows' kernel when they are fewer than
the columns (:func:`_ridge_loo_kernel`), else from the Gram's range (:func:`_eigh_range`). All
are exact rewrites of the same problems: on the Uganda data with 1,024 random features
(benchmarks/results/high_dim.md) the propensities equal the full-dimensional solvers' to 3e-11
and the effects to 2e-12 (relative), at 6-7 s instead of 160 s on one core.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.special import expit

from eocausal.errors import InputError, NotEstimableError, SeparationError

__all__ = ["SCALERS", "SEPARATION_BOUND", "FoldLayout", "LinearSpec", "LogisticCrossfit", "LogisticSpec",
           "check_separation", "chord_logistic", "crossfit_linear", "crossfit_logistic", "fit_logistic",
           "newton_logistic", "penalty_weights", "solve_spd"]

SCALERS = ("standard", "block", "none")
_STEP_TOL = 1e-9


@dataclass(frozen=True)
class LogisticSpec:
    """A logistic propensity model eocausal solves natively.

    ``C``: inverse penalty (``np.inf`` for none); None chooses it from ``Cs`` by ``inner_folds``-fold
    CV on the held-out log-loss, as ``LogisticRegressionCV(scoring='neg_log_loss')``.
    ``scaler``: how the features are scaled before the penalty applies ('standard': each column
    to unit variance; 'block': the first ``n_tabular`` columns each, the rest by their pooled SD;
    'none').
    """

    C: float | None
    Cs: tuple[float, ...] = ()
    scaler: str = "standard"
    n_tabular: int = 0
    inner_folds: int = 3


@dataclass(frozen=True)
class LinearSpec:
    """A least-squares outcome model eocausal solves natively.

    ``alpha``: ridge penalty (0 for OLS); None chooses it from ``alphas`` by efficient
    leave-one-out error, as ``RidgeCV``. ``scaler`` as in :class:`LogisticSpec`.
    """

    alpha: float | None
    alphas: tuple[float, ...] = ()
    scaler: str = "none"
    n_tabular: int = 0


# ----------------------------------------------------------------------------- layout
class FoldLayout:
    """Confounders centred and scaled once, rows sorted by block key (fold, or fold and arm).

    ``X[starts[k]:ends[k]]`` holds the rows of block k; ``order`` maps sorted rows to the input
    rows (``X = standardise(V[order])``).
    """

    def __init__(self, V: np.ndarray, keys: np.ndarray, n_keys: int):
        V = np.asarray(V, dtype=float)
        self.order = np.argsort(keys, kind="stable")
        X = V[self.order]  # the one copy; centred and scaled in place
        self.mean = X.mean(axis=0)
        X -= self.mean
        sd = np.sqrt(np.einsum("ij,ij->j", X, X) / max(len(X), 1))
        self.scale = np.where(sd > 0, sd, 1.0)
        X /= self.scale
        self.X = X
        self.keys = np.asarray(keys)
        counts = np.bincount(keys, minlength=n_keys)
        self.ends = np.cumsum(counts)
        self.starts = self.ends - counts
        self.n, self.p = self.X.shape
        self._X32 = None

    @property
    def X32(self) -> np.ndarray:
        """``X`` in float32, for Hessians (the Newton direction needs no more precision)."""
        if self._X32 is None:
            self._X32 = self.X.astype(np.float32)
        return self._X32

    def block(self, k: int) -> slice:
        return slice(int(self.starts[k]), int(self.ends[k]))

    def span(self, first: int, last: int) -> slice:
        """Rows of blocks ``first`` to ``last`` (inclusive), which are contiguous."""
        return slice(int(self.starts[first]), int(self.ends[last]))

    @classmethod
    def by_fold_and_arm(cls, V: np.ndarray, fold_ids: np.ndarray, w: np.ndarray) -> "FoldLayout":
        """Blocks keyed by 2 * fold + arm: a fold's rows are blocks 2k and 2k + 1, contiguous.

        One layout serves both the propensity (by fold) and the outcome models (by fold and arm).
        """
        _, codes = _fold_codes(fold_ids)
        K = int(codes.max()) + 1
        lay = cls(V, codes * 2 + (np.asarray(w) == 1), 2 * K)
        lay.n_folds = K
        return lay

    def matches(self, V: np.ndarray, fold_ids: np.ndarray, w: np.ndarray) -> bool:
        """Whether this layout was built from ``V``'s shape with these folds and treatment."""
        _, codes = _fold_codes(fold_ids)
        return (getattr(self, "n_folds", None) is not None and self.X.shape == np.shape(V)
                and np.array_equal(self.keys, codes * 2 + (np.asarray(w) == 1)))

    def to_raw(self, beta: np.ndarray) -> tuple[float, np.ndarray]:
        """Intercept and slopes on the input (unscaled) confounders."""
        slopes = beta[1:] / self.scale
        return float(beta[0] - self.mean @ slopes), slopes


def penalty_weights(scaler: str, n_tabular: int, var: np.ndarray, scale: np.ndarray,
                    mean: np.ndarray | None = None) -> np.ndarray:
    """Diagonal penalty weights d_j in layout coordinates for a learner's scaler.

    ``var``, ``mean``: the training rows' variances (ddof 0) and means in layout coordinates;
    ``scale``: the layout's column scales. A learner penalising ||b||^2 on its own scaled features
    penalises sum_j d_j g_j^2 on the layout coordinates' coefficients g, with
    d_j = (its scale_j / scale_j)^2.

    A column constant on the training rows is scaled by 1, as scikit-learn's scalers do. Training
    variances come from sums of squares by subtraction, which leave rounding noise of order
    1e-16 (var + mean^2) where the true variance is 0 (e.g. a dummy that is 0 for every control
    of the training folds); a variance below 1e-10 (1 + mean^2) in layout coordinates (where the
    whole sample's variance is 1) counts as constant. Without that tolerance such a column would
    be left almost unpenalised and fitted to rounding noise.
    """
    if scaler == "none":
        return 1.0 / scale**2
    var = np.maximum(var, 0.0)
    m2 = 0.0 if mean is None else np.asarray(mean) ** 2
    const = var <= 1e-10 * (1.0 + m2)
    raw = np.where(const, 0.0, var) * scale**2
    s2 = np.where(const, 1.0, raw)  # scikit-learn scales a constant column by 1
    if scaler == "block" and n_tabular < len(var):
        pooled = raw[n_tabular:].mean()
        s2[n_tabular:] = pooled if pooled > 0 else 1.0
    elif scaler not in ("standard", "block"):
        raise InputError(f"scaler={scaler!r}: use one of {list(SCALERS)}")
    return s2 / scale**2


# ----------------------------------------------------------------------------- logistic
#: Fitted log-odds beyond which an unpenalised logistic fit may have no finite maximiser (e within
#: 1e-13 of 0 or 1), and the slope per SD of a column beyond which it has run off.
SEPARATION_BOUND = 30.0


def check_separation(max_logodds: float, scaled_slopes: np.ndarray, converged: bool) -> None:
    """Refuse an unpenalised logistic fit whose maximiser is not finite ((quasi-)separation).

    Separated data have no finite maximiser: Newton's iterates run off until the fitted
    probabilities are 0 or 1 in floating point. The one rule (used by :func:`newton_logistic` and
    :func:`eocausal.estimators.inference.fit_logit`): fitted log-odds beyond
    :data:`SEPARATION_BOUND` (30) together with either no convergence or a slope beyond 30 per
    standard deviation of its column. Large log-odds alone do not suffice: one extreme covariate
    value (a unit 50 SD out, with an ordinary slope of 1 per SD) gives log-odds of 50 at a finite,
    converged maximiser, which is returned.

    Parameters
    ----------
    max_logodds : float
        Largest absolute fitted log-odds.
    scaled_slopes : array
        Slopes times the SD of their column (the intercept excluded).
    converged : bool
        Whether Newton's method met its step tolerance.

    Raises
    ------
    SeparationError
        When the rule above holds.
    """
    steep = np.max(np.abs(scaled_slopes), initial=0.0) > SEPARATION_BOUND
    if max_logodds > SEPARATION_BOUND and (not converged or steep):
        raise SeparationError(
            "propensity: the unpenalised logistic regression has (nearly) no finite maximum: fitted "
            f"log-odds reach {max_logodds:.3g}" + (" with a slope of more than 30 per SD of a confounder"
                                                   if steep else " and Newton's method did not converge")
            + ", so the confounders separate treated from control units. Remove confounders that are "
            "functions of the treatment, or use a ridge penalty (propensity='ridge-logit')")


def _log1pexp(z):
    return np.logaddexp(0.0, z)


def _logistic_start(blocks, targets, pen: np.ndarray, beta0):
    """(b, z, objective) of a penalised logistic fit: the coefficients ``beta0`` (or the
    intercept-only fit), the linear predictor per block, and the penalised objective of (z, b)."""
    n = sum(len(t) for t in targets)
    b = np.zeros(len(pen) + 1)
    if beta0 is not None:
        b[:] = beta0
    else:
        share = np.clip(sum(t.sum() for t in targets) / n, 1e-6, 1 - 1e-6)
        b[0] = np.log(share / (1 - share))
    z = [Xb @ b[1:] + b[0] for Xb in blocks]

    def objective(zs, bb):
        return float(sum(np.sum(_log1pexp(zb) - t * zb) for zb, t in zip(zs, targets)) + 0.5 * pen @ bb[1:] ** 2)

    return b, z, objective


def _damped_step(blocks, z, b, step, f, objective, tol, quadratic=True):
    """Take a Newton step, halved until the objective does not increase (skipped near the optimum).

    Returns (b, z, objective or None, converged): converged once the step taken is below
    ``tol``, or (``quadratic``: exact Newton steps) a full step below ``sqrt(tol)``, quadratic
    convergence putting the next one below about ``tol``.
    """
    dz = [Xb @ step[1:] + step[0] for Xb in blocks]
    size = np.max(np.abs(step))
    t = 1.0
    while True:
        zn = [zb - t * d for zb, d in zip(z, dz)]
        if size < 1e-3 and t == 1.0:  # close to the optimum of a convex objective: the full step
            f = None
            break
        if f is None:
            f = objective(z, b)
        fn = objective(zn, b - t * step)
        if fn <= f + 1e-12 * abs(f) or t < 1e-10:
            f = fn
            break
        t /= 2
    return b - t * step, zn, f, bool(t * size < tol or (quadratic and t == 1.0 and size < np.sqrt(tol)))


def newton_logistic(blocks, targets, pen: np.ndarray, beta0: np.ndarray | None = None, *,
                    blocks32=None, tol: float = _STEP_TOL, max_iter: int = 100) -> np.ndarray:
    """Penalised logistic regression over row blocks by Newton's method with step halving.

    Minimises sum_i [log(1 + exp(z_i)) - W_i z_i] + sum_j pen_j b_j^2 / 2 with z = b_0 + X b_{1:}
    over the rows of all ``blocks`` (arrays (n_b, p)) and their 0/1 ``targets``. Returns
    (b_0, b_1, ..., b_p). Without a penalty, data the confounders (quasi-)separate have no finite
    maximiser: that raises :class:`SeparationError` by the rule of :func:`check_separation`
    (the blocks are in scaled coordinates, SD about 1, as :class:`FoldLayout` makes them, so the
    slopes are per SD): an extreme covariate value alone gives large log-odds with ordinary slopes,
    and is returned.

    ``blocks32``: the same blocks in float32, used for the Hessian only (half the memory traffic
    and twice the speed of its product); gradients, objective and predictions stay in float64,
    so the solution is the float64 optimum. Once a full step is below ``sqrt(tol)`` (in the
    scaled coordinates), Newton's quadratic convergence puts the next step below about ``tol``,
    so the iteration stops there instead of computing one more Hessian to confirm it.
    """
    hblocks = blocks if blocks32 is None else blocks32
    p = len(pen)
    b, z, objective = _logistic_start(blocks, targets, pen, beta0)
    f = objective(z, b)
    unpenalised = not np.any(pen > 0)
    H = np.empty((p + 1, p + 1))
    g = np.empty(p + 1)
    converged = False
    for _ in range(max_iter):
        H.fill(0.0)
        g.fill(0.0)
        for Xb, Hb, t, zb in zip(blocks, hblocks, targets, z):
            e = expit(zb)
            v = e * (1 - e)
            r = e - t
            g[0] += r.sum()
            g[1:] += Xb.T @ r
            sv = np.sqrt(v).astype(Hb.dtype)
            Xs = Hb * sv[:, None]
            H[0, 0] += v.sum()
            H[1:, 0] += Xs.T @ sv
            H[1:, 1:] += Xs.T @ Xs
        H[0, 1:] = H[1:, 0]
        g[1:] += pen * b[1:]
        H[np.arange(1, p + 1), np.arange(1, p + 1)] += pen
        step = solve_spd(H, g)
        b, z, f, done = _damped_step(blocks, z, b, step, f, objective, tol)
        if done:
            converged = True
            break
    if unpenalised:
        check_separation(max((np.abs(zb).max() for zb in z if len(zb)), default=0.0), b[1:], converged)
    return b


def newton_cg_logistic(blocks, targets, lam: float, sigma: np.ndarray, beta0: np.ndarray | None = None, *,
                       eigvecs: np.ndarray | None = None, blocks32=None, tol: float = _STEP_TOL,
                       max_iter: int = 100) -> np.ndarray:
    """Ridge-logistic regression by Newton's method with preconditioned conjugate-gradient steps.

    Minimises the objective of :func:`newton_logistic` with the penalty ``lam * ||b||^2 / 2``
    (``lam`` > 0) over rows (``blocks``) in coordinates whose Gram matrix sum_b X_b' X_b is
    ``diag(sigma)`` (:class:`RowSpace`'s), or ``eigvecs diag(sigma) eigvecs'`` when the
    eigenvectors are given (the design's own coordinates). Newton's method needs the Hessian
    H = [1, X]' V [1, X] + diag(0, lam), V = diag(e (1 - e)): O(n r^2) to form and O(r^3) to
    factor at every iteration. Here each Newton system is solved by conjugate gradients instead,
    whose products with H cost two passes over the rows (O(n r)), preconditioned by the same
    matrix with V replaced by the scalar v0 = mean(e (1 - e)): diag(v0 sigma + lam) with the
    intercept by its Schur complement, O(r) to apply. The preconditioned system's eigenvalues lie
    between the smallest and largest e (1 - e) / v0 where the data dominate the penalty and near
    1 where the penalty does, so tens of products solve it, to the relative residual
    min(0.1, size of the last step) (inexact Newton with quadratic forcing; the gradient is exact
    and in float64, so the iteration converges to the optimum of the float64 objective).
    ``blocks32``: the rows in float32, for the products with H only. Step halving as in
    :func:`newton_logistic`; it stops once a step is below ``tol``.
    """
    hblocks = blocks if blocks32 is None else blocks32
    r = len(sigma)
    n = sum(len(t) for t in targets)
    c = sum(Xb.sum(axis=0) for Xb in blocks)  # X'1: the intercept's coupling
    if eigvecs is not None:
        c = eigvecs.T @ c
    b, z, objective = _logistic_start(blocks, targets, np.full(r, lam), beta0)
    f = objective(z, b)
    prev = np.inf  # the last step's size: the relative residual asked of the next is min(0.1, prev)
    for _ in range(max_iter):
        g = np.zeros(r + 1)
        v = []
        for Xb, t, zb in zip(blocks, targets, z):
            e = expit(zb)
            res = e - t
            g[0] += res.sum()
            g[1:] += Xb.T @ res
            v.append(e * (1 - e))
        g[1:] += lam * b[1:]
        v0 = max(sum(vb.sum() for vb in v) / n, 1e-12)
        diag = v0 * sigma + lam
        cd = v0 * c / diag
        schur = v0 * n - v0 * (c @ cd)

        def precondition(q):
            x0 = (q[0] - cd @ q[1:]) / schur
            return np.r_[x0, (q[1:] - v0 * x0 * c) / diag]

        if eigvecs is not None:  # the same in the eigenbasis
            rotate = precondition

            def precondition(q):
                x = rotate(np.r_[q[0], eigvecs.T @ q[1:]])
                return np.r_[x[0], eigvecs @ x[1:]]

        def hess(q):
            out = np.zeros(r + 1)
            for Hb, vb in zip(hblocks, v):
                u = vb * (Hb @ q[1:].astype(Hb.dtype) + q[0])
                out[0] += u.sum()
                out[1:] += Hb.T @ u.astype(Hb.dtype)
            out[1:] += lam * q[1:]
            return out

        step = np.zeros(r + 1)
        res = g.copy()
        y = precondition(res)
        p = y.copy()
        ry = ry0 = float(res @ y)
        stop = min(0.1, prev) * np.sqrt(ry0)
        for _ in range(4 * (r + 1)):
            Hp = hess(p)
            alpha = ry / float(p @ Hp)
            step += alpha * p
            res -= alpha * Hp
            y = precondition(res)
            ry_new = float(res @ y)
            if np.sqrt(max(ry_new, 0.0)) <= stop:
                break
            p = y + (ry_new / ry) * p
            ry = ry_new
        # the shortcut of newton_logistic (a full step below sqrt(tol) ends the iteration) holds
        # for a step solved to a relative residual below sqrt(tol) too: the next step is
        # O(size^2 + residual * size)
        exact = ry_new <= tol * ry0
        b, z, f, done = _damped_step(blocks, z, b, step, f, objective, tol, quadratic=exact)
        if done:
            break
        prev = float(np.max(np.abs(step)))
    return b


def _equilibrate(H: np.ndarray) -> np.ndarray:
    """1 / sqrt(diag H): the symmetric diagonal scaling that gives the system a unit diagonal.

    A penalty on a nearly constant column is huge in the layout's unit-variance coordinates
    (its scikit-learn scale is the block's pooled SD, about 1e7 times the column's own SD, so its
    penalty weight is about 1e14), while the data's curvature is of order n: the diagonal of the
    Newton system then spans about 17 orders of magnitude. Solved as is, the factorisation fails
    and a least-squares fallback with the usual cutoff drops every direction the data carry (the
    fit stays at the intercept: a constant propensity). Scaled to a unit diagonal, the same system
    is well conditioned (Jacobi equilibration; van der Sluis 1969: within a factor p of the best
    diagonal scaling).
    """
    d = np.diag(H)
    return 1.0 / np.sqrt(np.where(d > 0, d, 1.0))


def solve_spd(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Solve H x = g for a symmetric positive (semi)definite H (a Newton system, a sandwich's
    information), equilibrated first (:func:`_equilibrate`); a singular system by least squares."""
    s = _equilibrate(H)
    Hs = H * s[:, None] * s[None, :]
    try:
        with warnings.catch_warnings():  # a singular system falls back to least squares
            warnings.simplefilter("error", linalg.LinAlgWarning)
            y = linalg.solve(Hs, g * s, assume_a="pos", check_finite=False)
    except (linalg.LinAlgError, linalg.LinAlgWarning, ValueError):
        y = np.linalg.lstsq(Hs, g * s, rcond=None)[0]
    return y * s


def _hessian(X32: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Unpenalised logistic Hessian sum_i e_i (1 - e_i) [1, x_i][1, x_i]' of one block, at log-odds z."""
    e = expit(z)
    v = e * (1 - e)
    sv = np.sqrt(v).astype(X32.dtype)
    Xs = X32 * sv[:, None]
    p = X32.shape[1]
    H = np.empty((p + 1, p + 1))
    H[0, 0] = v.sum()
    H[1:, 0] = Xs.T @ sv
    H[0, 1:] = H[1:, 0]
    H[1:, 1:] = Xs.T @ Xs
    return H


def chord_logistic(blocks, targets, pen: np.ndarray, beta: np.ndarray, H: np.ndarray, *,
                   tol: float = _STEP_TOL, max_iter: int = 30) -> np.ndarray | None:
    """Newton iterations with a fixed Hessian ``H`` (unpenalised; the penalty is added here).

    For a warm start from a neighbouring fold, the Hessian at the neighbour's solution differs
    from the exact one by a few per cent, so each step shrinks the error by about that factor
    (linear convergence to the same optimum: the gradient is exact) at the cost of a gradient,
    not a Hessian. Returns None when the steps do not shrink fast (ratio above 0.5), so the
    caller can fall back to :func:`newton_logistic`.
    """
    A = H.copy()
    p = len(pen)
    A[np.arange(1, p + 1), np.arange(1, p + 1)] += pen
    s = _equilibrate(A)  # a unit diagonal, as in newton_logistic
    try:
        factor = linalg.cho_factor(A * s[:, None] * s[None, :], check_finite=False)
    except (linalg.LinAlgError, ValueError):
        return None
    b = np.array(beta, dtype=float)
    z = [Xb @ b[1:] + b[0] for Xb in blocks]
    g = np.empty(p + 1)
    prev = np.inf
    for _ in range(max_iter):
        g.fill(0.0)
        for Xb, t, zb in zip(blocks, targets, z):
            r = expit(zb) - t
            g[0] += r.sum()
            g[1:] += Xb.T @ r
        g[1:] += pen * b[1:]
        step = linalg.cho_solve(factor, g * s, check_finite=False) * s
        size = float(np.max(np.abs(step)))
        if size > 0.5 * prev or size > 1.0:
            return None
        b -= step
        if size < tol:
            return b
        z = [zb - (Xb @ step[1:] + step[0]) for Xb, zb in zip(blocks, z)]
        prev = size
    return None


def _log_loss(w: np.ndarray, z: np.ndarray) -> float:
    eps = np.finfo(float).eps
    e = np.clip(expit(z), eps, 1 - eps)
    return float(-np.mean(w * np.log(e) + (1 - w) * np.log1p(-e)))


@dataclass(frozen=True)
class LogisticCrossfit:
    """Out-of-fold propensities and, per fold, the inverse penalty used."""

    e: np.ndarray
    C: np.ndarray


def _fold_codes(fold_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, codes = np.unique(fold_ids, return_inverse=True)
    return labels, codes.astype(np.intp)


def _prepare(V, w, fold_ids, layout):
    """Float arrays, fold labels and codes, and the (fold, arm) layout (built unless given)."""
    V = np.asarray(V, dtype=float)
    w = np.asarray(w, dtype=float)
    labels, codes = _fold_codes(fold_ids)
    return V, w, labels, codes, layout if layout is not None else FoldLayout.by_fold_and_arm(V, fold_ids, w)


def crossfit_logistic(V: np.ndarray, w: np.ndarray, fold_ids: np.ndarray, spec: LogisticSpec, *,
                      clusters: np.ndarray | None = None, seed: int | None = 0,
                      layout: FoldLayout | None = None) -> LogisticCrossfit:
    """Out-of-fold P(W = 1 | V) from a logistic model fitted on the other folds.

    Equivalent to fitting ``spec``'s scikit-learn pipeline on each training fold (see the module
    docstring). With ``spec.C`` None the penalty is chosen per training fold by inner CV: folds
    grouped by ``clusters`` when given (as :func:`~eocausal.estimators.propensity.crossfit_propensity`
    does), else scikit-learn's ``StratifiedKFold`` without shuffling, as ``LogisticRegressionCV(cv=3)``.

    With a fixed ``C``, the first fold is solved by Newton's method; at its solution the Hessian
    of every fold's rows is kept, and each later fold starts from the previous solution with
    the sum of its training folds' Hessians (:func:`chord_logistic`), recomputed only when the
    steps stop shrinking fast. ``layout``: a :meth:`FoldLayout.by_fold_and_arm` of ``V`` for
    these folds and treatment, to share with :func:`crossfit_linear`.
    """
    V, w, labels, codes, lay = _prepare(V, w, fold_ids, layout)
    K = len(labels)
    ws = w[lay.order]
    e_sorted = np.empty(lay.n)
    Cs = np.empty(K)
    folds = [lay.span(2 * k, 2 * k + 1) for k in range(K)]
    if spec.C is not None:
        S1 = np.stack([lay.X[sl].sum(axis=0) for sl in folds])
        S2 = np.stack([np.einsum("ij,ij->j", lay.X[sl], lay.X[sl]) for sl in folds])
        nk = np.array([sl.stop - sl.start for sl in folds])
        lam = 0.0 if np.isinf(spec.C) else 1.0 / spec.C
        beta, Hk = None, None
        for k in range(K):
            sl = folds[k]
            n_t = lay.n - nk[k]
            _check_train(ws[: sl.start], ws[sl.stop:], labels[k])
            m = (S1.sum(0) - S1[k]) / n_t
            var = (S2.sum(0) - S2[k]) / n_t - m**2
            pen = lam * penalty_weights(spec.scaler, spec.n_tabular, var, lay.scale, m)
            blocks = [lay.X[: sl.start], lay.X[sl.stop:]]
            targets = [ws[: sl.start], ws[sl.stop:]]
            new = None
            if Hk is not None:
                new = chord_logistic(blocks, targets, pen, beta, sum(Hk[j] for j in range(K) if j != k))
            if new is None:
                blocks32 = [lay.X32[: sl.start], lay.X32[sl.stop:]]
                new = newton_logistic(blocks, targets, pen, beta, blocks32=blocks32)
                if K > 2:  # keep each fold's Hessian at this solution for the next folds
                    Hk = [_hessian(lay.X32[f], lay.X[f] @ new[1:] + new[0]) for f in folds]
            beta = new
            e_sorted[sl] = expit(lay.X[sl] @ beta[1:] + beta[0])
            Cs[k] = spec.C
    else:
        for k in range(K):
            sl = folds[k]
            _check_train(ws[: sl.start], ws[sl.stop:], labels[k])
            train = np.flatnonzero(codes != k)  # input order, as the pipeline would see them
            C, intercept, slopes = _cv_logistic(V[train], w[train], spec,
                                                None if clusters is None else np.asarray(clusters)[train], seed)
            e_sorted[sl] = expit(V[lay.order[sl]] @ slopes + intercept)
            Cs[k] = C
    e = np.empty(lay.n)
    e[lay.order] = e_sorted
    return LogisticCrossfit(e=e, C=Cs)


def fit_logistic(V: np.ndarray, w: np.ndarray, spec: LogisticSpec, *, clusters: np.ndarray | None = None,
                 seed: int | None = 0) -> tuple[float, float, np.ndarray]:
    """(C, intercept, slopes on V) of ``spec``'s logistic model fitted on all units.

    The in-sample counterpart of :func:`crossfit_logistic` (``estimate(crossfit=False)``): with
    ``spec.C`` None the penalty is chosen by the same inner CV (grouped by ``clusters``), then the
    model is refitted on every unit.
    """
    V = np.asarray(V, dtype=float)
    w = np.asarray(w, dtype=float)
    _check_train(w, w[:0], "all units")
    if spec.C is None:
        return _cv_logistic(V, w, spec, clusters, seed)
    lay = FoldLayout(V, np.zeros(len(w), dtype=np.intp), 1)
    d = penalty_weights(spec.scaler, spec.n_tabular, lay.X.var(axis=0), lay.scale, lay.X.mean(axis=0))
    lam = 0.0 if np.isinf(spec.C) else 1.0 / spec.C
    beta = newton_logistic([lay.X], [w[lay.order]], lam * d, blocks32=[lay.X32])
    intercept, slopes = lay.to_raw(beta)
    return float(spec.C), intercept, slopes


def _check_train(a: np.ndarray, b: np.ndarray, label) -> None:
    s = a.sum() + b.sum()
    n = len(a) + len(b)
    if s == 0 or s == n:
        raise NotEstimableError(
            f"propensity: the training folds for fold {label} hold only {'treated' if s else 'control'} "
            "units; use fewer folds or check the treatment and cluster columns")


def _inner_folds(w: np.ndarray, clusters, k: int, seed) -> np.ndarray:
    if clusters is not None:
        from eocausal.data.folds import grouped_folds

        return grouped_folds(len(w), clusters, k, seed, stratify=w)
    from sklearn.model_selection import StratifiedKFold

    ids = np.empty(len(w), dtype=np.intp)
    for j, (_, test) in enumerate(StratifiedKFold(k).split(np.zeros(len(w)), w)):
        ids[test] = j
    return ids


def _cv_logistic(V: np.ndarray, w: np.ndarray, spec: LogisticSpec, clusters, seed, *,
                 reduce: bool | None = None):
    """(best C, intercept, slopes on V) by inner CV on the held-out log-loss, then a refit.

    ``reduce``: solve each fit in the row space of its training rows (:class:`RowSpace`);
    None does so when there are at least :data:`REDUCE_MIN_COLUMNS` columns.
    """
    inner = _inner_folds(w, clusters, spec.inner_folds, seed)
    J = int(inner.max()) + 1
    lay = FoldLayout(V, inner, J)
    ws = w[lay.order]
    var = lay.X.var(axis=0)  # the pipeline's scaler is fitted on all of V
    d = penalty_weights(spec.scaler, spec.n_tabular, var, lay.scale, lay.X.mean(axis=0))
    Cs = np.asarray(spec.Cs, dtype=float)
    if reduce is None:
        reduce = lay.p >= REDUCE_MIN_COLUMNS
    reduce = reduce and bool(np.all(np.isfinite(Cs)))
    scores = np.zeros(len(Cs))
    if reduce:
        space = _RowSpaces(lay.X, d, [lay.block(j) for j in range(J)])
    for j in range(J):
        sl = lay.block(j)
        blocks = [lay.X[: sl.start], lay.X[sl.stop:]]
        targets = [ws[: sl.start], ws[sl.stop:]]
        beta = None
        if reduce:
            rs = space.without(j)
            test = rs.coordinates(sl)
            for c, C in enumerate(Cs):
                beta = newton_cg_logistic(rs.blocks, targets, 1.0 / C, rs.sigma, beta, eigvecs=rs.V,
                                          blocks32=rs.blocks32)
                scores[c] -= _log_loss(ws[sl], test @ beta[1:] + beta[0])
            continue
        blocks32 = [lay.X32[: sl.start], lay.X32[sl.stop:]]
        for c, C in enumerate(Cs):
            beta = newton_logistic(blocks, targets, d / C, beta, blocks32=blocks32)
            scores[c] -= _log_loss(ws[sl], lay.X[sl] @ beta[1:] + beta[0])
    best = float(Cs[int(np.argmax(scores))])
    if reduce:
        rs = space.without(None)
        theta = newton_cg_logistic(rs.blocks, [ws], 1.0 / best, rs.sigma, eigvecs=rs.V, blocks32=rs.blocks32)
        beta = rs.to_layout(theta)
    else:
        beta = newton_logistic([lay.X], [ws], d / best, blocks32=[lay.X32])
    intercept, slopes = lay.to_raw(beta)
    return best, intercept, slopes


#: Column count from which penalised logistic fits are solved in the row space of their
#: training rows (:class:`RowSpace`). Below it the p x p Newton systems are cheap anyway.
REDUCE_MIN_COLUMNS = 256


class RowSpace:
    """A ridge-penalised design rewritten in the row space of its training rows.

    A fit minimising loss(b_0 + X b) + sum_j d_j b_j^2 / (2 C) (``d`` > 0, any loss of the
    linear predictor) is, with g = sqrt(d) b and S = X / sqrt(d), the same fit with the penalty
    ||g||^2 / (2 C). Its gradient in g is S' r + g / C, so the optimum lies in the row space of
    the training rows S: g = Q t for an orthonormal basis Q (p, r) of that space, and then
    S g = (S Q) t with ||g|| = ||t||. The fit is solved in t (r coordinates, a penalty
    ||t||^2 / (2 C)): the same optimum, at the cost of r-dimensional Newton systems. r is at
    most the number of training rows and at most the number of distinct rows: on the Uganda
    data, 1,024 random features of 327 images have r of about 250 in a training fold.

    The basis is orthonormal and makes the training rows' Gram matrix diagonal (F'F = diag(sigma),
    F = S Q the training rows' coordinates), so :func:`newton_cg_logistic` preconditions its
    conjugate-gradient steps in O(r). The rank comes from a Cholesky factorisation with pivoting
    (LAPACK ``pstrf``) of the smaller Gram matrix, which stops once the largest remaining pivot
    is below ``RTOL * m * eps`` of the largest diagonal entry (m: its size); the directions left
    out hold the rounding noise of exactly repeated or collinear rows, which the full-dimensional
    solver fits to noise.

    - n x n (``kernel`` = S S' of all rows, when the training rows are fewer than p): the
      training rows' kernel K_T = U diag(sigma) U' (:func:`_kernel_eigh`); Q = S_T' U sigma^{-1/2},
      so the coordinates of any row s are K(s, T) U sigma^{-1/2} and the training rows' are
      U sigma^{1/2}: no p-dimensional product is needed.
    - p x p (``gram`` = S'S of the training rows), well below full rank: Q is the QR basis of the
      pivot columns of S'S rotated to the eigenbasis of Q'S'SQ; the coordinates of rows are S Q.
    - p x p at (nearly) full rank: the design's own coordinates (``blocks`` are views of S,
      ``blocks32`` of ``S32``), with the eigenvectors ``V`` of S'S kept for the preconditioner.

    ``S``: all rows, scaled (n, p); ``parts``: the training rows, as slices of S in block order;
    ``root``: sqrt(d). Attributes: ``blocks`` (the training rows' coordinates, one per part),
    ``blocks32`` (the same in float32, for Hessian products), ``rank`` (r), ``sigma`` (the
    diagonal of F'F, or the eigenvalues of S'S), ``V`` (None, or those eigenvectors).
    """

    RTOL = 10.0

    def __init__(self, S: np.ndarray, parts: list[slice], root: np.ndarray, *,
                 gram: np.ndarray | None = None, kernel: np.ndarray | None = None, S32: np.ndarray | None = None):
        self.S, self.root, self.kernel = S, root, kernel
        train = np.concatenate([np.arange(len(S))[part] for part in parts])
        cuts = np.cumsum([len(range(*part.indices(len(S)))) for part in parts])[:-1]
        self.Q = self.T = self.D = self.V = None
        if kernel is not None:
            sigma, U = _kernel_eigh(kernel[np.ix_(train, train)])
            F = U * np.sqrt(sigma)
            self.T = train
            self.D = U / np.sqrt(sigma)
        else:
            G = gram if gram is not None else _gram(S[train])
            piv, rank, _ = _pivoted_cholesky(G)
            if rank <= 0.75 * len(G):  # a basis of the range, then the eigenbasis of G within it
                Q = linalg.qr(G[:, np.sort(piv[:rank])], mode="economic", check_finite=False)[0]
                sigma, R = np.linalg.eigh(Q.T @ G @ Q)
                self.Q = Q @ R
                F = [S[part] @ self.Q for part in parts]
            else:  # (nearly) full rank: the design's own coordinates, G's eigenbasis for the preconditioner
                sigma, self.V = np.linalg.eigh(G)
                F = [S[part] for part in parts]  # views
        self.sigma = np.maximum(sigma, 0.0)
        self.blocks = F if self.T is None else np.split(F, cuts)
        self.rank = self.blocks[0].shape[1]
        if self.V is not None and S32 is not None:
            self.blocks32 = [S32[part] for part in parts]
        else:
            self.blocks32 = [b.astype(np.float32) for b in self.blocks]

    def coordinates(self, rows: np.ndarray | slice) -> np.ndarray:
        """Coordinates of other rows of S (e.g. a test fold; indices or a slice) in this basis."""
        if self.T is not None:
            return self.kernel[rows][:, self.T] @ self.D
        return self.S[rows] if self.Q is None else self.S[rows] @ self.Q

    def to_layout(self, theta: np.ndarray) -> np.ndarray:
        """(b_0, b) in the design's coordinates from (b_0, t) in this basis."""
        if self.T is not None:
            g = self.S[self.T].T @ (self.D @ theta[1:])
        else:
            g = theta[1:] if self.Q is None else self.Q @ theta[1:]
        return np.r_[theta[0], g / self.root]


class _RowSpaces:
    """The :class:`RowSpace` of every leave-one-block-out training set of one layout, and of all rows.

    The Gram matrices come once: per block (p x p, training sets by subtraction) when the
    training rows outnumber the columns, else one n x n kernel of all rows.
    """

    def __init__(self, X: np.ndarray, d: np.ndarray, blocks: list[slice]):
        self.root = np.sqrt(np.asarray(d, dtype=float))
        self.S = X / self.root
        self.blocks = blocks
        n, p = self.S.shape
        self.n, self.p = n, p
        smallest = n - max(b.stop - b.start for b in blocks)
        self.grams = self.kernel = self.S32 = None
        if smallest >= p:
            self.grams = [_gram(self.S[b]) for b in blocks]
            self.total = sum(self.grams)
        elif n <= p:
            self.kernel = self.S @ self.S.T
        # in between (some training sets longer than p, all rows not): each fit forms its own

    def without(self, j: int | None) -> RowSpace:
        """The basis of all rows but block ``j`` (None: all rows), its blocks split where ``j`` was."""
        parts = [slice(0, self.n)]
        gram = None if self.grams is None else self.total
        if j is not None:
            b = self.blocks[j]
            parts = [slice(0, b.start), slice(b.stop, self.n)]
            gram = None if self.grams is None else self.total - self.grams[j]
        if self.grams is not None and self.S32 is None:
            self.S32 = self.S.astype(np.float32)  # shared by the full-rank fits' Hessian products
        return RowSpace(self.S, parts, self.root, gram=gram, kernel=self.kernel, S32=self.S32)


def _pivoted_cholesky(G: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """(pivot order, rank, c) of a PSD matrix by LAPACK pstrf: G[piv][:, piv] = L L' with L the lower
    triangle of c's first ``rank`` columns (``np.tril(c[:, :rank])``)."""
    from scipy.linalg import lapack

    m = len(G)
    top = float(np.max(np.diag(G), initial=0.0))
    if top <= 0:
        return np.arange(m), 0, np.zeros((m, m))
    c, piv, rank, info = lapack.dpstrf(G, tol=RowSpace.RTOL * m * np.finfo(float).eps * top, lower=1)
    if info < 0:
        raise NotEstimableError(f"propensity: the pivoted Cholesky factorisation failed (LAPACK info {info})")
    return piv - 1, int(rank), c


def _kernel_eigh(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero eigenpairs (L, U) of a PSD kernel matrix K = U diag(L) U', rounding noise left out.

    The rank comes from a pivoted Cholesky factorisation (:func:`_pivoted_cholesky`,
    K = C C' with C of ``rank`` columns). Well below full rank (few distinct rows), the eigenpairs
    are those of the small C'C = R diag(L) R': U = C R diag(L)^{-1/2}, at O(m r^2) instead of
    O(m^3); otherwise K's own eigenpairs, its ``m - rank`` smallest left out.
    """
    m = len(K)
    piv, rank, c = _pivoted_cholesky(K)
    if rank <= 0.75 * m:
        C = np.empty((m, rank))
        C[piv] = np.tril(c[:, :rank])
        lam, R = np.linalg.eigh(_gram(C))
        lam = np.maximum(lam, np.finfo(float).tiny)
        return lam, (C @ R) / np.sqrt(lam)
    lam, U = np.linalg.eigh(K)
    return np.maximum(lam[m - rank:], np.finfo(float).tiny), U[:, m - rank:]


def _gram(S: np.ndarray) -> np.ndarray:
    """S'S (numpy computes the product of an array with its own transpose by BLAS syrk, half a gemm)."""
    return S.T @ S


# ----------------------------------------------------------------------------- least squares
def crossfit_linear(V: np.ndarray, y: np.ndarray, w: np.ndarray, fold_ids: np.ndarray,
                    spec: LinearSpec, *, layout: FoldLayout | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold mu0, mu1: least squares / ridge fitted by arm on the other folds.

    Same predictions as fitting ``spec``'s scikit-learn model on the control and on the treated
    units of the training folds (DoubleML's IRM ``ml_g``), from one pass of cross-products.
    """
    V, w, labels, codes, lay = _prepare(V, w, fold_ids, layout)
    y = np.asarray(y, dtype=float)
    K = len(labels)
    ys = y[lay.order]
    p = lay.p
    nb = (lay.ends - lay.starts).astype(float)
    # wide designs whose training sets (per fold and arm) have fewer rows than columns are solved
    # through the training rows' n x n kernel (:func:`_ridge_loo_kernel`): no p x p Grams
    by_arm = nb.reshape(K, 2)
    dual = spec.alpha is None and p >= REDUCE_MIN_COLUMNS and np.max(by_arm.sum(0) - by_arm) < p
    S1 = np.empty((2 * K, p))
    S2 = np.empty((2 * K, p))
    G = None if dual else np.empty((2 * K, p, p))
    Sy = np.empty(2 * K)
    Xy = np.empty((2 * K, p))
    for b in range(2 * K):
        Xb, yb = lay.X[lay.block(b)], ys[lay.block(b)]
        S1[b] = Xb.sum(axis=0)
        S2[b] = np.einsum("ij,ij->j", Xb, Xb)
        if G is not None:
            G[b] = Xb.T @ Xb
        Sy[b] = yb.sum()
        Xy[b] = Xb.T @ yb
    mu = np.empty((2, lay.n))
    for k in range(K):
        test = slice(int(lay.starts[2 * k]), int(lay.ends[2 * k + 1]))
        Xt = lay.X[test]
        for a in (0, 1):
            tb = [2 * j + a for j in range(K) if j != k]
            n_t = nb[tb].sum()
            if n_t == 0:
                raise NotEstimableError(
                    f"outcome model: training folds for fold {labels[k]} hold no "
                    f"{'treated' if a else 'control'} units; use fewer folds or check the treatment and "
                    "cluster columns")
            m = S1[tb].sum(0) / n_t
            ybar = Sy[tb].sum() / n_t
            c = Xy[tb].sum(0) - n_t * m * ybar
            var = S2[tb].sum(0) / n_t - m**2
            d = penalty_weights(spec.scaler, spec.n_tabular, var, lay.scale, m)
            # a column constant on these training rows has no fitted effect (scikit-learn's solvers
            # give it 0); its cross-products hold only rounding noise, so it is left out
            keep = var > 1e-10 * (1.0 + m**2)
            gamma = np.zeros(p)
            if keep.any() and dual:
                k_ = np.flatnonzero(keep)
                Xtr = np.concatenate([lay.X[lay.block(b)][:, k_] for b in tb])
                ytr = np.concatenate([ys[lay.block(b)] for b in tb])
                gamma[k_] = _ridge_loo_kernel(Xtr, ytr, m[k_], d[k_], np.asarray(spec.alphas, float))
            elif keep.any():
                Gc = G[tb].sum(0) - n_t * np.outer(m, m)
                k_ = np.flatnonzero(keep)
                sub = np.ix_(k_, k_)
                if spec.alpha is None:
                    blocks = [(lay.X[lay.block(b)] if keep.all() else lay.X[lay.block(b)][:, k_], ys[lay.block(b)])
                              for b in tb]
                    gamma[k_] = _ridge_loo(blocks, Gc[sub], c[k_], m[k_], ybar, n_t, d[k_],
                                           np.asarray(spec.alphas, float))
                else:
                    gamma[k_] = _ridge_solve(Gc[sub], c[k_], spec.alpha, d[k_])
            mu[a, test] = ybar + (Xt - m) @ gamma
    out = np.empty((2, lay.n))
    out[:, lay.order] = mu
    return out[0], out[1]


def _ridge_solve(Gc: np.ndarray, c: np.ndarray, alpha: float, d: np.ndarray) -> np.ndarray:
    """Slopes g minimising ||y - X g||^2 + alpha sum_j d_j g_j^2 (centred X: Gc = X'X, c = X'y).

    With alpha = 0 (least squares) and collinear columns the minimiser is not unique; as
    scikit-learn's ``LinearRegression`` (scipy's ``lstsq``) returns the minimum-norm solution in
    the learner's own coordinates, this returns the minimiser of sum_j d_j g_j^2 (d_j: the metric
    of those coordinates, :func:`penalty_weights`), which gives the same predictions off the
    training rows too.
    """
    if alpha > 0 and np.all(d > 0):
        try:
            return linalg.solve(Gc + alpha * np.diag(d), c, assume_a="pos", check_finite=False)
        except (linalg.LinAlgError, ValueError):
            pass
    r = 1.0 / np.sqrt(d)
    M = (Gc * r[:, None]) * r[None, :]
    M[np.diag_indices_from(M)] += alpha
    vals, vecs = np.linalg.eigh(M)
    keep = vals > vals.max() * len(vals) * np.finfo(float).eps
    return r * (vecs[:, keep] @ ((vecs[:, keep].T @ (r * c)) / vals[keep]))


def _eigh_range(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of a PSD matrix, those of its null space left out when that saves work.

    With at least :data:`REDUCE_MIN_COLUMNS` columns, M = Q (Q'MQ) Q' for an orthonormal basis Q
    (p, r) of M's range (see :class:`RowSpace`), so the eigenpairs of the r x r matrix Q'MQ, rotated
    by Q, are M's nonzero ones: O(p^2 r) instead of O(p^3). For a ridge fit on centred rows
    X (M = X'X / scales) the left-out directions carry no weight: X'y lies in M's range and the
    training rows have no component in its null space, so the fit and its leave-one-out hat
    values are unchanged (up to the rounding noise the full decomposition finds there).
    """
    p = len(M)
    if p >= REDUCE_MIN_COLUMNS:
        piv, rank, _ = _pivoted_cholesky(M)
        cols = np.sort(piv[:rank])
        if len(cols) <= 0.75 * p:
            Q = linalg.qr(M[:, cols], mode="economic", check_finite=False)[0]
            lam, W = np.linalg.eigh(Q.T @ M @ Q)
            return lam, Q @ W
    return np.linalg.eigh(M)


def _ridge_loo(blocks, Gc, c, m, ybar, n_t, d, alphas) -> np.ndarray:
    """Ridge slopes at the penalty with the least leave-one-out squared error (as RidgeCV's GCV)."""
    r = 1.0 / np.sqrt(d)
    M = (Gc * r[:, None]) * r[None, :]
    lam, U = _eigh_range(M)
    lam = np.maximum(lam, 0.0)
    P = U * r[:, None]  # gamma = P diag(1/(lam + alpha)) P' c
    qy = P.T @ c
    inv = 1.0 / (lam[:, None] + alphas[None, :])  # (p, n_alpha)
    mP = m @ P
    sse = np.zeros(len(alphas))
    for Xb, yb in blocks:
        Q = Xb @ P - mP
        fit = ybar + Q @ (qy[:, None] * inv)
        h = 1.0 / n_t + (Q * Q) @ inv
        sse += np.sum(((yb[:, None] - fit) / (1.0 - h)) ** 2, axis=0)
    best = int(np.argmin(sse))
    return P @ (qy * inv[:, best])


def _ridge_loo_kernel(X: np.ndarray, y: np.ndarray, m: np.ndarray, d: np.ndarray, alphas) -> np.ndarray:
    """:func:`_ridge_loo` from the training rows' n x n kernel, for fewer rows than columns.

    With A = (X - m) / sqrt(d) (centred, scaled training rows) and its kernel A A' = U L U', the
    nonzero eigenpairs of A'A are L and A'U L^{-1/2}: the same fit and leave-one-out errors as the
    p x p route, at O(n^2 p) where that costs O(n p^2) to form and O(p^2 r) to decompose.
    """
    r = 1.0 / np.sqrt(d)
    A = (X - m) * r
    lam, U = _kernel_eigh(A @ A.T)
    ybar = y.mean()
    yc = y - ybar
    qy = U.T @ yc * np.sqrt(lam)  # P'c with P = A'U / sqrt(lam) scaled back, c = A'y
    inv = 1.0 / (lam[:, None] + alphas[None, :])
    fit = ybar + U @ ((np.sqrt(lam) * qy)[:, None] * inv)  # fitted values of the training rows
    h = 1.0 / len(y) + (U * U * lam) @ inv
    sse = np.sum(((y[:, None] - fit) / (1.0 - h)) ** 2, axis=0)
    best = int(np.argmin(sse))
    return r * (A.T @ (U @ (qy * inv[:, best] / np.sqrt(lam))))
