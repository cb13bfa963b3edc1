"""Rank-weighted average treatment effects (RATE), as grf defines them: :func:`rate`.

Definitions (Yadlowsky, Fleming, Shah, Brunskill and Wager 2021, "Evaluating treatment
prioritization rules via rank-weighted average treatment effects", arXiv:2111.07966; grf's
``rank_average_treatment_effect.fit``; docs/heterogeneity.md). Units i = 1..n carry a priority
S_i (computed by a model that never saw unit i) and a doubly robust score Gamma_i with
E[Gamma_i | X_i] = tau(X_i). Sort the units by S, highest first; within a group of tied
priorities replace each Gamma_i by the group's mean. With C_j the sum of the first j sorted
(tie-averaged) scores:

- TOC_j = C_j / j - mean(Gamma)                      (targeting operator characteristic)
- AUTOC = (1/n) sum_{j=1}^{n} TOC_j
- QINI  = (1/n) sum_{j=1}^{n} (j/n) TOC_j
- TOC(q) on a grid of fractions q (grf's default 0.1, 0.2, ..., 1) with x = q n:
  TOC(q) = (C_floor(x) + (x - floor(x)) Gamma_(floor(x)+1)) / x - mean(Gamma), i.e. the
  average of the top fraction q counting the unit at the boundary fractionally (grf's rule).

Standard errors: half-sample bootstrap over clusters. Each of ``n_boot`` draws takes floor(G/2) of the
G clusters without replacement (all units of a drawn cluster together, none of the others),
recomputes the statistic on those units (their own sort order, tie groups, mean and TOC) and
the SE is the standard deviation of the draws, with no rescaling (sampling half without
replacement already has the variance of the full-sample estimate). A paired comparison of two
priority rules computes both on the same draws and reports the SD of the differences. The
nuisance models behind Gamma are not refitted (grf does the same).

Vectorisation: the units are sorted once. For a draw with included positions p_1 < ... < p_W
(in priority order) and scores g_k = Gamma_(p_k),

    sum_j C_j / j = sum_k g_k (H(W) - H(k - 1)),      sum_j C_j = sum_k g_k (W - k + 1),

with H the harmonic numbers, so a draw costs a gather and a dot product of length W (plus a
segment sum for the TOC grid); no sort and no refit per draw. With ties, a draw needs only
each tie group's included count and score sum (two segment sums over the sorted units), since
the cumulative sum is piecewise linear within a group (see :func:`_grouped`). Up to
:data:`MATRIX_MAX_UNITS` units, blocks of draws are evaluated at once as (draws x n) 0/1
weight matrices (cumulative sums along the sorted axis give each included unit's rank c, and
the sums above become sum_i w_i g_i H(c_i - 1) and sum_i w_i g_i c_i); above it, draw by draw
on the included units. The draws are exact uniform half-samples, generated for all at once:
random bits, then each draw's surplus (or deficit) of included clusters is removed (added)
uniformly at random.

How this differs from other packages
------------------------------------
- EconML's ``econml.validate.DRTester.evaluate_uplift`` (``calc_uplift``): thresholds at the
  5th-95th percentiles of the *training* predictions (50 points), so the curve is truncated to
  [5%, 95%] and never reaches the top-1% units; units at or above a threshold form the group
  (ties go together, no averaging); the "coefficient" is a left Riemann sum over that grid;
  its 'qini' metric is q (mean of the group - ATE); SEs come from an i.i.d. influence function
  (no clusters, no half-sample bootstrap). ``econml.score.RScorer`` is a different object
  altogether: an R-loss based R^2 for model selection, not a ranking statistic.
- CausalML's ``get_cumgain``/``get_qini``/``auuc_score``/``qini_score`` rank by the model's
  scores but use differences in mean *observed* outcomes of treated and controls among the top
  k (no doubly robust scores, so no adjustment for propensities or covariates), weight the lift
  by the population count k (gain = k x lift; Qini = cum Y_t - cum Y_c n_t/n_c), normalise by
  the final value and subtract a curve for random orderings; ties follow the sort order and no
  standard error is given.
- eocausal follows grf: the full curve (1/n <= q <= 1), doubly robust scores, tie averaging,
  AUTOC weights 1 and QINI weights j/n, and cluster half-sample bootstrap SEs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd

from eocausal._validation import align_pandas, check_clusters, check_vector
from eocausal.diagnostics._cate_input import as_cate_result
from eocausal.errors import InputError

TARGETS = ("AUTOC", "QINI")
#: grf's default grid of fractions for the TOC curve.
DEFAULT_Q = tuple(np.round(np.arange(1, 11) / 10, 10))
_EPS = 1e-15  # grf's tolerance when locating q * n on the cumulative weights
_NORMAL = NormalDist()


@dataclass(frozen=True)
class RateResult:
    """A RATE estimate with its half-sample bootstrap standard error.

    Attributes
    ----------
    estimate, std_error : float
        RATE (AUTOC or QINI) of ``priority`` and the SD of the half-sample draws (NaN when
        ``n_boot`` < 2).
    target : {'AUTOC', 'QINI'}
    toc : pandas.DataFrame
        Columns ``q, toc, std_error, lower, upper``: the TOC curve on the grid q with bootstrap
        SEs and pointwise normal intervals at 1 - ``alpha``.
    n_boot : int
        Number of half-sample draws.
    n, n_clusters : int
        Units and clusters (clusters = units when none are given).
    draws : numpy.ndarray (n_boot,)
        The statistic on each half-sample.
    alpha : float
        Significance level of ``toc.lower/upper``, :meth:`tidy` and :meth:`conf_int`'s default
        (0.05: 95% intervals).
    compare_estimate, compare_std_error : float or None
        The same for the second priority rule of a paired comparison.
    diff, diff_se : float or None
        estimate - compare_estimate and the SD of the paired differences over the same draws.
    compare_toc : pandas.DataFrame or None
        TOC curve of the second priority rule.
    compare_draws : numpy.ndarray or None
    """

    estimate: float
    std_error: float
    target: str
    toc: pd.DataFrame
    n_boot: int
    n: int
    n_clusters: int
    draws: np.ndarray = field(repr=False)
    alpha: float = 0.05
    compare_estimate: float | None = None
    compare_std_error: float | None = None
    diff: float | None = None
    diff_se: float | None = None
    compare_toc: pd.DataFrame | None = field(default=None, repr=False)
    compare_draws: np.ndarray | None = field(default=None, repr=False)

    def conf_int(self, alpha: float | None = None) -> tuple[float, float]:
        """Normal interval estimate +- z_(1 - alpha/2) * std_error (default: the result's ``alpha``)."""
        a = self.alpha if alpha is None else alpha
        if not 0 < a < 1:
            raise InputError(f"alpha={a}: must lie in (0, 1); 0.05 gives a 95% interval")
        z = _NORMAL.inv_cdf(1 - a / 2)
        return self.estimate - z * self.std_error, self.estimate + z * self.std_error

    def tidy(self) -> pd.DataFrame:
        """One row per rule (and one for the difference): estimate, SE, interval, two-sided p."""
        z = _NORMAL.inv_cdf(1 - self.alpha / 2)
        rows = [("priority", self.estimate, self.std_error)]
        if self.diff is not None:
            rows += [("compare", self.compare_estimate, self.compare_std_error),
                     ("priority - compare", self.diff, self.diff_se)]
        out = []
        for rule, est, se in rows:
            p = float(2 * (1 - _NORMAL.cdf(abs(est / se)))) if se and se > 0 else np.nan
            out.append({"rule": rule, "target": self.target, "estimate": est, "std_error": se,
                        "ci_low": est - z * se, "ci_high": est + z * se, "p_value": p,
                        "n_boot": self.n_boot, "n": self.n, "n_clusters": self.n_clusters})
        return pd.DataFrame(out)

    def summary(self) -> str:
        """Plain-text table (no timestamps)."""
        head = (f"RATE ({self.target}, grf definition); n = {self.n}, clusters = {self.n_clusters}, "
                f"half-sample bootstrap n_boot = {self.n_boot}")
        return head + "\n" + self.tidy().drop(columns=["target", "n_boot", "n", "n_clusters"]).to_string(
            index=False, float_format=lambda v: f"{v:.4f}")


# ----------------------------------------------------------------------------- validation


def _cluster_codes(clusters, n: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    codes = check_clusters(clusters, n)
    return codes, int(codes.max()) + 1


def _check_q(q) -> np.ndarray:
    q = np.asarray(DEFAULT_Q if q is None else q, dtype=float).reshape(-1)
    if len(q) == 0 or np.any(np.diff(q) <= 0) or q[0] <= 0 or not np.isclose(q[-1], 1.0):
        raise InputError(f"q: expected an increasing grid of fractions in (0, 1] ending at 1, got {q.tolist()}")
    q[-1] = 1.0
    return q


# ----------------------------------------------------------------------------- the statistic


class _Sorted:
    """Sort order and tie structure of one priority rule."""

    def __init__(self, priority: np.ndarray, scores: np.ndarray):
        # any sort: tied units get the same (averaged) score, so their order never matters
        self.order = np.argsort(-priority)
        ps = priority[self.order]
        self.scores = np.ascontiguousarray(scores[self.order])
        new = np.empty(len(ps), bool)
        new[0] = True
        np.not_equal(ps[1:], ps[:-1], out=new[1:])
        self.has_ties = not new.all()
        self.tie_id = np.cumsum(new) - 1 if self.has_ties else None
        self.starts = np.flatnonzero(new) if self.has_ties else None


class _Kernel:
    """Evaluates RATE and TOC(q) for a sorted subset of scores; caches H and 0..n-1."""

    def __init__(self, n: int, q: np.ndarray, target: str):
        self.harmonic = np.concatenate(([0.0], np.cumsum(1.0 / np.arange(1, n + 1))))  # H(0..n)
        self.ranks = np.arange(n, dtype=float)
        self.q = q
        self.target = target

    def __call__(self, g: np.ndarray) -> tuple[float, np.ndarray]:
        # einsum rather than BLAS dot: one short vector product per draw, and a multithreaded
        # BLAS on a busy machine can take 100x longer than the product itself
        W = len(g)
        S = g.sum()
        ate = S / W
        if self.target == "AUTOC":
            # (1/W) sum_j C_j / j - ate, with sum_j C_j / j = sum_k g_k (H(W) - H(k - 1))
            val = (self.harmonic[W] * S - np.einsum("i,i->", g, self.harmonic[:W])) / W - ate
        else:
            # (1/W^2) sum_j (C_j - j ate), with sum_j C_j = sum_k g_k (W - k + 1)
            val = (W * S - np.einsum("i,i->", g, self.ranks[:W]) - ate * W * (W + 1) / 2) / (W * W)
        x = self.q * W
        f = np.minimum(np.floor(x + _EPS).astype(np.int64), W)
        # C_f at the few grid positions from segment sums (cheaper than a full cumulative sum)
        inner = np.unique(f[(f > 0) & (f < W)])
        points = np.concatenate(([0], inner, [W]))
        cvals = np.concatenate(([0.0], np.cumsum(np.add.reduceat(g, np.concatenate(([0], inner))))))
        csum_f = cvals[np.searchsorted(points, f)]
        nxt = g[np.minimum(f, W - 1)]
        toc = (csum_f + (x - f) * nxt) / x - ate
        return float(val), toc


def _grouped(kernel: _Kernel, W_t: np.ndarray, S_t: np.ndarray) -> tuple[float, np.ndarray]:
    """RATE and TOC(q) from per-tie-group counts W_t and score sums S_t (groups in priority order).

    Within group t every unit carries the group mean m_t = S_t / W_t, so the cumulative sum is
    piecewise linear: C(x) = S_<t + (x - W_<t) m_t for W_<t <= x <= W_<=t, and
    W AUTOC = sum_t (S_<t - m_t W_<t)(H(W_<=t) - H(W_<t)),
    sum_j C_j = sum_t [W_t S_<t + m_t (sum of the ranks j in t) - m_t W_<t W_t].
    Groups with no unit in the draw contribute nothing.
    """
    Wc = np.cumsum(W_t)
    Wp = Wc - W_t
    Sc = np.cumsum(S_t)
    Sp = Sc - S_t
    W, S = int(Wc[-1]), float(Sc[-1])
    ate = S / W
    m = S_t / np.maximum(W_t, 1)
    if kernel.target == "AUTOC":
        h = kernel.harmonic
        val = float(np.einsum("i,i->", Sp - m * Wp, h[Wc] - h[Wp])) / W
    else:
        ranks = (Wc * (Wc + 1.0) - Wp * (Wp + 1.0)) / 2  # sum of the ranks j in each group
        total = float(np.einsum("i,i->", W_t, Sp) + np.einsum("i,i->", m, ranks - Wp * W_t))
        val = (total - ate * W * (W + 1) / 2) / (W * W)
    x = kernel.q * W
    f = np.minimum(np.floor(x + _EPS).astype(np.int64), W)
    t = np.minimum(np.searchsorted(Wc, f, side="right"), len(Wc) - 1)  # the group of unit f + 1
    cx = np.where(f >= W, S, Sp[t] + (x - Wp[t]) * m[t])
    return val, cx / x - ate


def _statistic(sorted_: _Sorted, kernel: _Kernel, pos: np.ndarray | None) -> tuple[float, np.ndarray]:
    """RATE and TOC(q) on the units at sorted positions ``pos`` (None: all units)."""
    if not sorted_.has_ties:
        return kernel(sorted_.scores if pos is None else sorted_.scores[pos])
    K = len(sorted_.starts)
    tie = sorted_.tie_id if pos is None else sorted_.tie_id[pos]
    g = sorted_.scores if pos is None else sorted_.scores[pos]
    return _grouped(kernel, np.bincount(tie, minlength=K), np.bincount(tie, weights=g, minlength=K))


#: Elements per block of (draws x units) arrays: about 8 MB of float64.
_CHUNK = 1 << 20
#: Below this many units the draws are evaluated as (draws x units) matrices, above it one by one.
MATRIX_MAX_UNITS = 2_000


def _fix_counts(bits: np.ndarray, k: int, rng: np.random.Generator) -> None:
    """Make every row of ``bits`` (R, G) hold exactly ``k`` True entries, in place.

    A row with a surplus loses, and a row with a deficit gains, a uniformly random subset of
    its True (False) entries: i.i.d. uniform candidate positions, kept when they hold the state
    to flip, first occurrences in draw order. The distinct kept positions arrive in a uniformly
    random order, so the first ``need`` of them are a uniform subset. Vectorised over rows.
    """
    R, G = bits.shape
    d = np.count_nonzero(bits, axis=1).astype(np.int64) - k
    rows = np.flatnonzero(d)
    while len(rows):
        need = np.abs(d[rows])
        state = d[rows] > 0  # True: drop selected clusters; False: add unselected ones
        L = int(2 * need.max() + 16)
        cand = rng.integers(0, G, size=(len(rows), L))
        ok = (bits[rows[:, None], cand] == state[:, None]).ravel()
        idx = np.flatnonzero(ok)  # eligible candidates, row-major = draw order within a row
        key = (idx // L) * G + cand.ravel()[idx]
        _, first = np.unique(key, return_index=True)
        idx = np.sort(idx[first])  # distinct (row, position) pairs, in draw order
        r_local = idx // L
        rank = np.arange(len(idx)) - np.searchsorted(r_local, r_local, side="left")
        take = idx[rank < need[r_local]]
        rr, cc = rows[take // L], cand.ravel()[take]
        bits[rr, cc] = ~bits[rr, cc]
        got = np.bincount(take // L, minlength=len(rows))
        d[rows] -= np.sign(d[rows]) * got
        rows = rows[d[rows] != 0]


def _mask_chunks(n_clusters: int, n_boot: int, seed: int | None):
    """Yield blocks of half-sample masks (rows, G); the blocking depends on G only."""
    G = int(n_clusters)
    k = G // 2
    rng = np.random.default_rng(seed)
    per = max(1, _CHUNK // max(G, 1))
    for s in range(0, n_boot, per):
        rows = min(per, n_boot - s)
        raw = rng.integers(0, 256, size=(rows, (G + 7) // 8), dtype=np.uint8)
        bits = np.unpackbits(raw, axis=1, count=G).view(bool)
        _fix_counts(bits, k, rng)
        yield bits


def half_sample_masks(n_clusters: int, n_boot: int, seed: int | None = 0) -> np.ndarray:
    """The half-sample draws :func:`rate` uses, as a boolean (n_boot, G) matrix over clusters.

    Row b selects exactly floor(G/2) clusters (cluster codes in sorted order of the labels).
    Each row is a uniformly random subset of that size: random bits, then the surplus (or
    deficit) is removed (or added) uniformly at random; the procedure is invariant to permuting
    the clusters and always returns floor(G/2) of them. The same ``seed`` gives the same draws.
    """
    chunks = list(_mask_chunks(n_clusters, n_boot, seed))
    return np.vstack(chunks) if chunks else np.zeros((0, int(n_clusters)), bool)


def _matrix_statistics(rule: _Sorted, kernel: _Kernel, Wt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RATE and TOC(q) of many draws at once; ``Wt`` (draws, n) marks included units in sort order.

    With 0/1 weights w and c_i = cumsum(w)_i (the rank of an included unit among the included),
    sum_j C_j / j = H(W) S - sum_i w_i g_i H(c_i - 1) and sum_j C_j = (W + 1) S - sum_i w_i g_i c_i,
    so every draw is a few passes over its row; TOC(q) reads the cumulative sums where c = f.
    """
    R, n = Wt.shape
    if rule.has_ties:  # per draw, average the included scores within each tie group
        sums = np.add.reduceat(np.where(Wt, rule.scores, 0.0), rule.starts, axis=1)
        cnt = np.add.reduceat(Wt, rule.starts, axis=1, dtype=np.int64)
        gm = (sums / np.maximum(cnt, 1))[:, rule.tie_id]
        wg = np.where(Wt, gm, 0.0)
    else:
        gm = None
        wg = Wt * rule.scores
    W = np.count_nonzero(Wt, axis=1)
    S = wg.sum(axis=1)
    ate = S / W
    c = np.cumsum(Wt, axis=1, dtype=np.int64)
    if kernel.target == "AUTOC":
        # c - 1 = -1 before the first included unit picks harmonic[-1], multiplied by wg = 0
        T = np.einsum("ij,ij->i", wg, kernel.harmonic[c - 1])
        val = (kernel.harmonic[W] * S - T) / W - ate
    else:
        T = np.einsum("ij,ij->i", wg, c.astype(float))
        val = ((W + 1) * S - T - ate * W * (W + 1) / 2) / (W.astype(float) * W)
    x = kernel.q[None, :] * W[:, None]
    f = np.minimum(np.floor(x + _EPS).astype(np.int64), W[:, None])
    off = (np.arange(R, dtype=np.int64) * (n + 1))[:, None]
    cflat = (c + off).ravel()  # increasing across rows, since 0 <= c <= n
    csum = np.cumsum(wg, axis=1).ravel()
    pf = np.searchsorted(cflat, (np.maximum(f, 1) + off).ravel())  # position of the f-th included unit
    cf = np.where(f.ravel() > 0, csum[pf], 0.0)
    pn = np.searchsorted(cflat, (np.minimum(f + 1, W[:, None]) + off).ravel())  # the (f+1)-th
    nxt = rule.scores[pn % n] if gm is None else gm.ravel()[pn]
    toc = (cf.reshape(f.shape) + (x - f) * nxt.reshape(f.shape)) / x - ate[:, None]
    return val, toc


def rate(priority, scores=None, *, target: str = "AUTOC", clusters=None, n_boot: int = 200,
         seed: int | None = 0, compare=None, q=None, alpha: float = 0.05) -> RateResult:
    """Rank-weighted average treatment effect of a priority rule (grf's definition).

    Two forms, as grf's ``rank_average_treatment_effect`` and its ``.fit`` twin:
    ``rate(result)`` with a :class:`~eocausal.estimators.cate.CateResult` (its out-of-fold
    predictions ``tau_hat`` as the priority, its doubly robust ``scores`` and its ``clusters``),
    or ``rate(priority, scores)`` with priorities and scores computed elsewhere.

    Parameters
    ----------
    priority : CateResult or array (n,)
        A CATE result, or priority scores S_i (higher = treat first), e.g. out-of-fold CATE
        predictions. They must come from a model that never saw unit i's outcome.
    scores : array (n,), optional
        Doubly robust scores Gamma_i (e.g. AIPW scores with out-of-fold nuisances). Required
        with an array ``priority``; not allowed with a CateResult (it carries its own).
    target : {'AUTOC', 'QINI'}
        AUTOC weights every TOC_j by 1 (power when few units benefit); QINI by j/n (power when
        effects vary across the whole population).
    clusters : array (n,), optional
        Cluster labels: the half-sample bootstrap draws whole clusters. None: the CateResult's
        clusters, or each unit its own.
    n_boot : int
        Half-sample draws (grf's default 200). 0 computes the estimate and TOC only.
    seed : int or None
        Seeds the draws.
    compare : CateResult or array (n,), optional
        A second priority rule, evaluated on the same draws (paired comparison): ``diff`` and
        ``diff_se`` give RATE(priority) - RATE(compare) and its SE. A CateResult (fitted on the
        same units) stands for its ``tau_hat``.
    q : sequence of float, optional
        Grid for the TOC curve, increasing in (0, 1] and ending at 1 (default 0.1, ..., 1).
    alpha : float
        Significance level of the pointwise TOC intervals and of :meth:`RateResult.tidy`
        (0.05: 95% intervals).

    Returns
    -------
    RateResult

    Raises
    ------
    InputError
        Wrong shapes, non-finite values, an unknown target, ``scores`` missing (arrays) or given
        twice (CateResult), a ``compare`` result fitted on other units, or fewer than 4 clusters
        with ``n_boot`` > 0 (a half-sample needs at least 2 clusters).

    Notes
    -----
    See the module docstring for the formulas, the bootstrap and how this differs from EconML's
    ``DRTester`` and CausalML's uplift curves. Ties in ``priority`` are handled by averaging
    ``scores`` within each tie group (grf's rule); the result does not depend on the order of
    tied units.
    """
    t = str(target).upper()
    if t not in TARGETS:
        raise InputError(f"target={target!r}: use 'AUTOC' or 'QINI'")
    res = as_cate_result(priority)
    if res is not None:
        if scores is not None:
            raise InputError("scores: given together with a CateResult, which carries its own doubly robust "
                             "scores; pass rate(result), or rate(priority, scores) with arrays")
        priority, scores = res.tau_hat, res.scores
        clusters = res.clusters if clusters is None else clusters
    elif scores is None:
        raise InputError("scores: required when priority is an array; pass the doubly robust scores, "
                         "rate(priority, scores), or a CateResult alone, rate(result)")
    other_res = as_cate_result(compare)
    if other_res is None:  # one alignment rule: pandas inputs on their index, arrays by position
        a = align_pandas({"priority": priority, "scores": scores, "compare": compare, "clusters": clusters},
                         "rate()")
        priority, scores, compare, clusters = a["priority"], a["scores"], a["compare"], a["clusters"]
    scores = check_vector(scores, "scores")
    n = len(scores)
    if n < 2:
        raise InputError(f"scores: need at least 2 units, got {n}")
    priority = check_vector(priority, "priority", n)
    if other_res is not None:
        if other_res.n != n or (res is not None and not np.array_equal(other_res.y, res.y)):
            raise InputError(f"compare: the CateResult was fitted on other units ({other_res.n} units; {n} here, "
                             "or the same number with other outcomes); compare rules fitted on the same units")
        compare = other_res.tau_hat
    other = check_vector(compare, "compare", n) if compare is not None else None
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise InputError(f"n_boot={n_boot!r}: the number of half-sample draws must be an integer >= 0")
    B = int(n_boot)
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha}: must lie in (0, 1); 0.05 gives 95% intervals")
    qg = _check_q(q)
    codes, G = _cluster_codes(clusters, n)
    if B > 0 and G // 2 < 2:
        raise InputError(
            f"clusters: {G} cluster(s); a half-sample bootstrap needs at least 4 (2 per half). "
            "Pass finer clusters, or n_boot=0 for the estimate alone")

    rules = [_Sorted(priority, scores)] + ([_Sorted(other, scores)] if other is not None else [])
    kernel = _Kernel(n, qg, t)
    est = [_statistic(r, kernel, None) for r in rules]
    cl_sorted = [codes[r.order] for r in rules]
    draws = np.empty((len(rules), B))
    toc_draws = np.empty((len(rules), B, len(qg)))
    b = 0
    for masks in _mask_chunks(G, B, seed):
        if n <= MATRIX_MAX_UNITS:  # small n: whole blocks of draws as matrices (few numpy calls)
            per = max(1, _CHUNK // n)
            for s in range(0, len(masks), per):
                block = masks[s:s + per]
                for r, rule in enumerate(rules):
                    draws[r, b + s:b + s + len(block)], toc_draws[r, b + s:b + s + len(block)] = \
                        _matrix_statistics(rule, kernel, block[:, cl_sorted[r]])
        else:  # large n: draw by draw on the ~n/2 included units only
            for i, mask in enumerate(masks):
                for r, rule in enumerate(rules):
                    inc = mask[cl_sorted[r]]
                    if rule.has_ties:  # per tie group: included count and score sum (contiguous groups)
                        out = _grouped(kernel, np.add.reduceat(inc, rule.starts, dtype=np.int64),
                                       np.add.reduceat(rule.scores * inc, rule.starts))
                    else:
                        out = _statistic(rule, kernel, np.flatnonzero(inc))
                    draws[r, b + i], toc_draws[r, b + i] = out
        b += len(masks)

    z = _NORMAL.inv_cdf(1 - alpha / 2)

    def sd(a, axis=0):
        return np.std(a, axis=axis, ddof=1) if B >= 2 else np.full(np.shape(a)[1:] if np.ndim(a) > 1 else (), np.nan)

    def toc_frame(r):
        se = sd(toc_draws[r])
        return pd.DataFrame({"q": qg, "toc": est[r][1], "std_error": se,
                             "lower": est[r][1] - z * se, "upper": est[r][1] + z * se})

    kw = {}
    if other is not None:
        kw = dict(compare_estimate=est[1][0], compare_std_error=float(sd(draws[1])),
                  diff=est[0][0] - est[1][0], diff_se=float(sd(draws[0] - draws[1])),
                  compare_toc=toc_frame(1), compare_draws=draws[1])
    return RateResult(estimate=est[0][0], std_error=float(sd(draws[0])), target=t, toc=toc_frame(0), n_boot=B,
                      n=n, n_clusters=G, draws=draws[0], alpha=alpha, **kw)
