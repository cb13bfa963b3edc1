"""Calibration of CATE predictions: grf's test_calibration, BLP/GATES/CLAN, effects by a variable.

Each evaluation takes a CATE result (``test_calibration(result)``, as grf's functions take a
forest) or, as its twin, arrays computed elsewhere passed by keyword
(``test_calibration(y=..., w=..., propensity_scores=..., m_hat=..., tau_hat=...)``).

- :func:`test_calibration` (grf's ``test_calibration``; Chernozhukov, Demirer, Duflo and
  Fernandez-Val 2018 for the form). OLS without intercept of Y - m(X) on
  alpha * mean_tau (W - e) + beta * (tau(X) - mean_tau)(W - e), with out-of-fold m, e and tau.
  alpha = 1: the mean prediction is right; beta = 1: the heterogeneity is right; beta > 0
  (one-sided test): the predictions carry heterogeneity. Standard errors: HC3 without clusters
  (equal to statsmodels' ``cov_type='HC3'`` and to sandwich's ``vcovCL(type='HC3')``, which grf
  calls); with clusters, sandwich's clustered HC3 (each cluster's residuals multiplied by
  (I - H_gg)^{-1}, Bell and McCaffrey 2002), as grf does. p-values use a t distribution with
  n - 2 degrees of freedom, as ``lmtest::coeftest`` on an ``lm`` does in grf.
- :func:`blp_gates` (Chernozhukov, Demirer, Duflo and Fernandez-Val, "Generic machine learning
  inference on heterogeneous treatment effects in randomized experiments", arXiv:1712.04802;
  Econometrica 2025). Weighted least squares with weights 1 / (e (1 - e)) on the main sample:
  BLP:   Y ~ [1, B(X)] + beta1 (W - e) + beta2 (W - e)(S - mean S)
  GATES: Y ~ [1, B(X)] + sum_k gamma_k (W - e) 1{S in k-th quantile group}
  with S a CATE proxy and B a baseline proxy (E[Y | W = 0, X]) trained on the auxiliary half.
  Repeated over random half splits, aggregated by medians: the point estimate is the median of
  the split estimates, the interval is [median of lower bounds, median of upper bounds] of
  per-split intervals at level 1 - alpha (so the aggregated interval has level 1 - 2 alpha), and the
  p-value is min(1, 2 x median of p-values) (CDDF section 4, "variational inference").
- :func:`clan`: means of covariates by GATES group and the most - least affected difference.
- :func:`effects_by`: doubly robust average effects (mean of the scores Gamma) and mean
  predictions by the levels or quantile bins of one variable (a land-cover class, NDVI).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from eocausal._validation import check_vector
from eocausal.diagnostics._cate_input import arrays_from, as_cate_result
from eocausal.errors import InputError

#: Sandwich types of :func:`linear_fit` (``se=``); with ``clusters`` each is its clustered variant.
SE_TYPES = ("HC0", "HC1", "HC3")


# ----------------------------------------------------------------------------- helpers


def _propensity(e, n: int) -> np.ndarray:
    e = (np.broadcast_to(np.asarray(e, dtype=float), (n,)).copy() if np.ndim(e) == 0
         else check_vector(e, "propensity_scores", n))
    if not ((e > 0) & (e < 1)).all():
        raise InputError(f"propensity_scores: must lie strictly inside (0, 1), got range [{e.min():.3g}, "
                         f"{e.max():.3g}]; clip them or trim the units first")
    return e


def _alpha(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha}: must lie in (0, 1); 0.05 gives 95% intervals")
    return float(alpha)


def _treatment(w, n: int | None = None) -> np.ndarray:
    w = check_vector(w, "w", n)
    if not np.isin(w, (0.0, 1.0)).all():
        raise InputError("w: the treatment must hold only 0 and 1; recode it")
    return w


def _codes(clusters, n: int) -> np.ndarray | None:
    if clusters is None:
        return None
    c = np.asarray(clusters)
    if c.shape != (n,):
        raise InputError(f"clusters: expected {n} labels, got shape {c.shape}")
    return np.unique(c, return_inverse=True)[1].reshape(-1)


@dataclass(frozen=True)
class _Fit:
    coef: np.ndarray
    vcov: np.ndarray
    resid: np.ndarray
    df: int


def linear_fit(X: np.ndarray, y: np.ndarray, *, weights: np.ndarray | None = None, clusters=None,
               se: str = "HC3") -> _Fit:
    """(Weighted) least squares with sandwich covariance, as R's sandwich::vcovCL computes it.

    Without clusters: HC0 (sum x x' r^2), HC1 (x n/(n-k)), HC3 (r / (1 - h)) - each equal to
    statsmodels' ``cov_type`` of the same name (``se=``). With clusters: HC0 and HC1 multiply the
    cluster sums by G/(G-1) (HC1 also by (n-1)/(n-k); this is statsmodels' ``cov_type='cluster'``);
    HC3 replaces each cluster's residuals by (I - H_gg)^{-1} r_g (no G/(G-1), as in sandwich).
    Weights enter as sqrt(w) times rows (WLS), as in R's ``lm(weights=)``.
    """
    if se not in SE_TYPES:
        raise InputError(f"se={se!r}: use one of {', '.join(SE_TYPES)} (clustered when clusters are given)")
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    if weights is not None:
        sw = np.sqrt(np.asarray(weights, float))
        X = X * sw[:, None]
        y = y * sw
    n, k = X.shape
    xtx = np.einsum("ij,ik->jk", X, X)
    try:
        bread = np.linalg.inv(xtx)
    except np.linalg.LinAlgError as exc:
        raise InputError("regressors are collinear (a constant or all-zero column); check the inputs") from exc
    if np.linalg.cond(xtx) > 1e12:
        raise InputError("regressors are (nearly) collinear; check for a constant prediction or a zero column")
    coef = bread @ np.einsum("ij,i->j", X, y)
    r = y - X @ coef
    codes = _codes(clusters, n) if clusters is not None else None
    if codes is None:
        if se == "HC3":
            h = np.einsum("ij,jk,ik->i", X, bread, X)
            u = X * (r / (1 - h))[:, None]
        else:
            u = X * r[:, None]
        meat = u.T @ u
        if se == "HC1":
            meat *= n / (n - k)
    else:
        G = int(codes.max()) + 1
        s = np.stack([np.bincount(codes, weights=X[:, j] * r, minlength=G) for j in range(k)], axis=1)  # (G, k)
        if se == "HC3":
            P = np.zeros((G, k, k))
            for a in range(k):
                for b in range(a, k):
                    P[:, a, b] = P[:, b, a] = np.bincount(codes, weights=X[:, a] * X[:, b], minlength=G)
            # X_g'(I - H_gg)^{-1} r_g = s_g + P_g (X'X - P_g)^{-1} s_g   (Woodbury)
            M = xtx[None] - P
            try:
                s = s + np.einsum("gab,gb->ga", P, np.linalg.solve(M, s[:, :, None])[:, :, 0])
            except np.linalg.LinAlgError as exc:
                raise InputError("clustered HC3: a cluster holds all the information on a regressor; "
                                 "use se='HC1' or coarser/finer clusters") from exc
            meat = s.T @ s
        else:
            meat = s.T @ s * (G / (G - 1))
            if se == "HC1":
                meat *= (n - 1) / (n - k)
    return _Fit(coef=coef, vcov=bread @ meat @ bread, resid=r, df=n - k)


# ----------------------------------------------------------------------------- test_calibration


@dataclass(frozen=True)
class CalibrationResult:
    """grf's calibration test: alpha (mean prediction) and beta (differential prediction).

    Attributes
    ----------
    alpha, beta : float
        Coefficients on mean_tau (W - e) and (tau - mean_tau)(W - e). beta is NaN when the
        predictions are constant.
    alpha_se, beta_se : float
    alpha_p, beta_p : float
        One-sided p-values for H1: coefficient > 0 (grf's convention), t with ``df`` d.o.f.
    mean_prediction : float
        mean_tau.
    n, n_clusters : int
    se : str
        Sandwich type (clustered when ``n_clusters`` is set).
    df : int
    """

    alpha: float
    beta: float
    alpha_se: float
    beta_se: float
    alpha_p: float
    beta_p: float
    mean_prediction: float
    n: int
    n_clusters: int | None
    se: str
    df: int

    def tidy(self) -> pd.DataFrame:
        """Rows ``mean_prediction`` (alpha) and ``differential_prediction`` (beta), as grf prints."""
        rows = []
        for name, est, se, p in (("mean_prediction", self.alpha, self.alpha_se, self.alpha_p),
                                 ("differential_prediction", self.beta, self.beta_se, self.beta_p)):
            rows.append({"term": name, "estimate": est, "std_error": se,
                         "t_value": est / se if se > 0 else np.nan, "p_value_one_sided": p})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        cl = f", clusters = {self.n_clusters}" if self.n_clusters else ""
        return (f"Best linear fit using forest predictions (on held-out data)\nn = {self.n}{cl}; "
                f"SE: {self.se}{' (clustered)' if self.n_clusters else ''}; one-sided p for coefficient > 0\n"
                + self.tidy().to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def test_calibration(result=None, *, y=None, w=None, propensity_scores=None, m_hat=None, tau_hat=None,
                     clusters=None, se: str = "HC3") -> CalibrationResult:
    """grf's omnibus calibration test of CATE predictions.

    Regress Y - m(X) on mean_tau (W - e) and (tau(X) - mean_tau)(W - e) without intercept
    (grf ``test_calibration``; all inputs out of fold).

    Parameters
    ----------
    result : CateResult, optional
        A result of :func:`eocausal.cate`: its outcomes, treatments, propensities, out-of-fold
        m(X) = e mu1 + (1 - e) mu0 and predictions, and its clusters. Or pass the five arrays
        below instead (not both).
    y, w : arrays (n,)
        Outcome and binary treatment.
    propensity_scores : array (n,) or float
        Propensities (known in an RCT, else out-of-fold estimates).
    m_hat : array (n,)
        Out-of-fold E[Y | X] (e.g. e mu1 + (1 - e) mu0).
    tau_hat : array (n,)
        Out-of-fold CATE predictions.
    clusters : array (n,), optional
        Cluster labels for clustered SEs. None: the result's clusters (if any).
    se : {'HC3', 'HC1', 'HC0'}
        Sandwich type, clustered when there are clusters; 'HC3' is grf's default (see
        :func:`linear_fit`).

    Returns
    -------
    CalibrationResult

    Raises
    ------
    InputError
        Bad shapes or values, the arrays missing without a result or given with one, an
        unknown ``se``, or a mean prediction of exactly 0.
    """
    a = arrays_from(result, "test_calibration",
                    dict(y=y, w=w, propensity_scores=propensity_scores, m_hat=m_hat, tau_hat=tau_hat),
                    dict(y="y", w="w", propensity_scores="propensity_scores", m_hat="m_hat", tau_hat="tau_hat"))
    if clusters is None and result is not None:
        clusters = result.clusters
    y = check_vector(a["y"], "y")
    n = len(y)
    w = _treatment(a["w"], n)
    e = _propensity(a["propensity_scores"], n)
    m_hat = check_vector(a["m_hat"], "m_hat", n)
    tau_hat = check_vector(a["tau_hat"], "tau_hat", n)
    mean_tau = float(tau_hat.mean())
    d = w - e
    target = y - m_hat
    x1 = mean_tau * d
    x2 = (tau_hat - mean_tau) * d
    if mean_tau == 0:
        raise InputError("tau_hat: the mean prediction is exactly 0, so alpha is not identified")
    constant = np.ptp(tau_hat) <= 1e-12 * max(1.0, abs(mean_tau))
    X = x1[:, None] if constant else np.column_stack([x1, x2])
    fit = linear_fit(X, target, clusters=clusters, se=se)
    std = np.sqrt(np.diag(fit.vcov))
    df = n - 2
    tvals = fit.coef / std
    p = stats.t.sf(tvals, df)
    codes = _codes(clusters, n)
    beta, beta_se, beta_p = (np.nan, np.nan, np.nan) if constant else (fit.coef[1], std[1], p[1])
    return CalibrationResult(alpha=float(fit.coef[0]), beta=float(beta), alpha_se=float(std[0]),
                             beta_se=float(beta_se), alpha_p=float(p[0]), beta_p=float(beta_p),
                             mean_prediction=mean_tau, n=n,
                             n_clusters=None if codes is None else int(codes.max()) + 1,
                             se=se, df=df)


# ----------------------------------------------------------------------------- BLP / GATES


def quantile_groups(s: np.ndarray, n_groups: int) -> np.ndarray:
    """Group 0..K-1 of each value by the K quantile intervals [l_{k-1}, l_k) of ``s`` (CDDF).

    Ties fall in one group, so groups can be unequal (or empty) when ``s`` has few values.
    """
    s = np.asarray(s, float)
    edges = np.quantile(s, np.linspace(0, 1, n_groups + 1))
    return np.clip(np.searchsorted(edges[1:-1], s, side="right"), 0, n_groups - 1)


@dataclass(frozen=True)
class BlpGatesResult:
    """BLP and GATES of a CATE proxy (CDDF), aggregated over splits by medians.

    Attributes
    ----------
    blp : pandas.DataFrame
        Rows ``ATE`` (beta1) and ``HET`` (beta2, the heterogeneity loading): estimate,
        std_error (median over splits), ci_low, ci_high, p_value.
    gates : pandas.DataFrame
        Rows ``G1`` (least affected) ... ``GK`` (most affected) and ``GK - G1``; same columns,
        plus ``share`` (the fraction of evaluated units in the group).
    n_splits : int
        Splits aggregated (1 for cross-fitted proxies given as an array).
    alpha : float
        Significance level of each split's interval (0.05: 95%); the median interval has
        significance level ``interval_alpha``.
    interval_alpha : float
        2 alpha with several splits (CDDF), ``alpha`` with one.
    groups : numpy.ndarray or None
        GATES group (0..K-1) of each unit, for a single cross-fitted evaluation.
    split_estimates : pandas.DataFrame
        One row per split and term (estimate, std_error, ci_low, ci_high, p_value).
    n : int or None
        Units in the evaluation (all units; each split evaluates on its main half).
    n_clusters : int or None
        Clusters behind the cluster-robust SEs (None: HC1 without clusters).
    baseline : bool
        Whether a baseline proxy B(X) entered the regressions.

    ``summary()`` renders the tables as text (``print(g.summary())``); the REPL shows it as the
    result's repr.
    """

    blp: pd.DataFrame
    gates: pd.DataFrame
    n_splits: int
    alpha: float
    interval_alpha: float
    groups: np.ndarray | None = field(default=None, repr=False)
    split_estimates: pd.DataFrame | None = field(default=None, repr=False)
    n: int | None = None
    n_clusters: int | None = None
    baseline: bool = False

    def summary(self) -> str:
        """An R-style text block: header, the BLP table, the GATES table, notes on SEs and splits."""
        level = f"{100 * (1 - self.interval_alpha):g}% CI"
        header = [("Units", self.n), ("Clusters", self.n_clusters or "none"),
                  ("Proxy", "out-of-fold predictions, one evaluation on all units" if self.n_splits == 1
                   else f"refitted on {self.n_splits} random half splits (auxiliary / main)"),
                  ("Baseline B(X)", "yes" if self.baseline else "no"),
                  ("Groups", f"{len(self.gates) - 1} quantile groups of the proxy")]
        header = [(k, v) for k, v in header if v is not None]
        width = max(len(k) for k, _ in header)
        title = "Best linear predictor (BLP) and sorted group effects (GATES)"
        lines = [title, "=" * len(title)]
        lines += [f"{k + ':':<{width + 1}} {v}" for k, v in header]

        def fmt(v, p=False):
            if v is None or not np.isfinite(v):
                return ""
            return ("<0.001" if v < 0.001 else f"{v:.3f}") if p else f"{v:.3f}"

        def block(frame: pd.DataFrame, names: dict, share: bool) -> list[str]:
            cols = ["Term", *(["Share"] if share else []), "Estimate", "Std. error", level, "p"]
            body = [[names.get(r.term, r.term), *([fmt(r.share)] if share else []), fmt(r.estimate),
                     fmt(r.std_error), f"[{fmt(r.ci_low)}, {fmt(r.ci_high)}]" if np.isfinite(r.ci_low) else "",
                     fmt(r.p_value, p=True)] for r in frame.itertuples(index=False)]
            widths = [max(len(c), *(len(b[j]) for b in body)) for j, c in enumerate(cols)]

            def row(vals):
                return "  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(vals, widths)))

            return [row(cols), "-" * len(row(cols)), *(row(b).rstrip() for b in body)]

        k = len(self.gates) - 1
        lines += ["", "BLP"]
        lines += block(self.blp, {"ATE": "ATE (beta1)", "HET": "HET (beta2)"}, share=False)
        lines += ["", "GATES"]
        lines += block(self.gates, {"G1": "G1 (least affected)", f"G{k}": f"G{k} (most affected)"}, share=True)
        se = (f"cluster-robust (CR1, {self.n_clusters} clusters"
              f"{'; splits keep clusters whole' if self.n_splits > 1 else ''})" if self.n_clusters
              else "heteroskedasticity-robust (HC1)")
        notes = [f"Weighted least squares with weights 1 / (e (1 - e)); standard errors {se}; two-sided "
                 "normal p-values. HET > 0: the proxy carries heterogeneity (beta2 = 1: its spread is right)."]
        if self.n_splits > 1:
            notes.append(f"Medians over {self.n_splits} random half splits (CDDF): estimates, standard errors and "
                         f"interval limits are medians of the per-split values; each split's interval is "
                         f"{100 * (1 - self.alpha):g}%, so the median interval is {level[:-3]}; p = min(1, 2 x median "
                         "p); Share is the median share of the main half in the group.")
        else:
            notes.append("One cross-fitted evaluation: each unit's proxy comes from a model that never saw it; "
                         "Share is the fraction of units in the group (ties can make groups unequal).")
        lines.append("")
        lines += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "BlpGatesResult\n" + self.summary()


def _blp_gates_once(y, w, e, s, b, clusters, n_groups, alpha):
    """One evaluation sample: BLP and GATES terms -> list of dicts, and the groups."""
    n = len(y)
    d = w - e
    weights = 1.0 / (e * (1 - e))
    base = [np.ones(n)] + ([b] if b is not None else [])
    z = stats.norm.ppf(1 - alpha / 2)
    rows = []

    def add(term, est, se):
        p = float(2 * stats.norm.sf(abs(est / se))) if se > 0 else np.nan
        rows.append({"term": term, "estimate": float(est), "std_error": float(se),
                     "ci_low": float(est - z * se), "ci_high": float(est + z * se), "p_value": p})

    sd = s - s.mean()
    het = np.ptp(s) > 1e-12 * max(1.0, abs(s).max())
    cols = base + [d] + ([d * sd] if het else [])
    fit = linear_fit(np.column_stack(cols), y, weights=weights, clusters=clusters, se="HC1")
    se = np.sqrt(np.diag(fit.vcov))
    kb = len(base)
    add("ATE", fit.coef[kb], se[kb])
    if het:
        add("HET", fit.coef[kb + 1], se[kb + 1])
    else:
        rows.append({"term": "HET", "estimate": np.nan, "std_error": np.nan, "ci_low": np.nan,
                     "ci_high": np.nan, "p_value": np.nan})
    g = quantile_groups(s, n_groups)
    present = [k for k in range(n_groups) if (g == k).any()]
    cols = base + [d * (g == k) for k in present]
    fit = linear_fit(np.column_stack(cols), y, weights=weights, clusters=clusters, se="HC1")
    se = np.sqrt(np.diag(fit.vcov))
    for j, k in enumerate(present):
        add(f"G{k + 1}", fit.coef[kb + j], se[kb + j])
    for k in range(n_groups):
        if k not in present:
            rows.append({"term": f"G{k + 1}", "estimate": np.nan, "std_error": np.nan, "ci_low": np.nan,
                         "ci_high": np.nan, "p_value": np.nan})
    if present and present[0] == 0 and present[-1] == n_groups - 1 and len(present) > 1:
        c = np.zeros(len(cols))
        c[kb + len(present) - 1], c[kb] = 1.0, -1.0
        add(f"G{n_groups} - G1", c @ fit.coef, np.sqrt(c @ fit.vcov @ c))
    else:
        rows.append({"term": f"G{n_groups} - G1", "estimate": np.nan, "std_error": np.nan, "ci_low": np.nan,
                     "ci_high": np.nan, "p_value": np.nan})
    shares = {f"G{k + 1}": float(np.mean(g == k)) for k in range(n_groups)}
    return rows, g, shares


def _aggregate(split_rows: pd.DataFrame, n_splits: int) -> pd.DataFrame:
    agg = split_rows.groupby("term", sort=False).agg(
        estimate=("estimate", "median"), std_error=("std_error", "median"),
        ci_low=("ci_low", "median"), ci_high=("ci_high", "median"), p_value=("p_value", "median"))
    if n_splits > 1:
        agg["p_value"] = np.minimum(1.0, 2 * agg["p_value"])
    return agg


def blp_gates(result=None, *, y=None, w=None, propensity_scores=None, proxy=None, baseline=None, clusters=None,
              n_groups: int = 5, n_splits: int = 20, seed: int | None = 0, alpha: float = 0.05) -> BlpGatesResult:
    """Best linear predictor and sorted group average treatment effects (CDDF).

    Parameters
    ----------
    result : CateResult, optional
        A result of :func:`eocausal.cate`: its outcomes, treatments, propensities and clusters,
        with its out-of-fold predictions ``tau_hat`` as the proxy and ``mu0`` as the baseline
        (one cross-fitted evaluation on all units) unless ``proxy`` is given. Or pass ``y``,
        ``w``, ``propensity_scores`` and ``proxy`` instead.
    y, w : arrays (n,)
        Outcome and binary treatment.
    propensity_scores : array (n,) or float
        Propensities (known in an RCT).
    proxy : array (n,) or callable, optional
        Either out-of-fold CATE predictions S (each from a model that never saw the unit):
        one evaluation on all units (the cross-fitted variant; ``n_splits`` is not used); or a
        function ``proxy(train_idx, test_idx)`` returning S on ``test_idx`` (or a pair
        ``(S, B)`` with the baseline proxy) from models trained on ``train_idx``: CDDF's
        repeated half splits (auxiliary = train, main = test) with median aggregation. With a
        ``result``, a given proxy replaces its predictions (and its baseline).
    baseline : array (n,), optional
        Out-of-fold baseline proxy B(X) = E[Y | W = 0, X] (array proxy only); a regressor that
        reduces the variance, not needed for identification.
    clusters : array (n,), optional
        Cluster labels: splits keep clusters whole and SEs are cluster-robust (CR1).
        Without clusters the SEs are HC1. None: the result's clusters (if any).
    n_groups : int
        GATES groups (quintiles by default).
    n_splits : int
        Random half splits for a callable proxy.
    seed : int or None
        Seeds the splits.
    alpha : float
        Significance level of each split's interval (0.05: 95%; see :class:`BlpGatesResult`
        for the level of the aggregated interval).

    Returns
    -------
    BlpGatesResult

    Raises
    ------
    InputError
        Bad shapes or values, the arrays missing without a result or given with one, a
        ``baseline`` with a callable proxy, or fewer than 2 groups or 1 split.
    """
    a = arrays_from(result, "blp_gates", dict(y=y, w=w, propensity_scores=propensity_scores),
                    dict(y="y", w="w", propensity_scores="propensity_scores"))
    res = as_cate_result(result)
    if res is not None:
        clusters = res.clusters if clusters is None else clusters
        if proxy is None:
            proxy, baseline = res.tau_hat, (res.mu0 if baseline is None else baseline)
    elif proxy is None:
        raise InputError("proxy: required without a CateResult; pass out-of-fold CATE predictions or a "
                         "function proxy(train_idx, test_idx), or blp_gates(result)")
    if callable(proxy) and baseline is not None:
        raise InputError("baseline: only with an array proxy; a callable proxy returns its baseline as "
                         "(S, B) for each split")
    alpha = _alpha(alpha)
    y = check_vector(a["y"], "y")
    n = len(y)
    w = _treatment(a["w"], n)
    e = _propensity(a["propensity_scores"], n)
    if n_groups < 2:
        raise InputError(f"n_groups={n_groups}: need at least 2 groups")
    codes = _codes(clusters, n)
    if not callable(proxy):
        s = check_vector(proxy, "proxy", n)
        b = check_vector(baseline, "baseline", n) if baseline is not None else None
        rows, g, shares = _blp_gates_once(y, w, e, s, b, codes, n_groups, alpha)
        split = pd.DataFrame(rows).assign(split=0)
        agg = _aggregate(split, 1)
        return _result(agg, shares, 1, alpha, g, split, n_groups, n, codes, b is not None)
    if n_splits < 1:
        raise InputError(f"n_splits={n_splits}: need at least 1 split")
    from eocausal.data.folds import grouped_folds

    all_rows, share_list = [], []
    rng = np.random.default_rng(seed)
    for r in range(n_splits):
        half = grouped_folds(n, codes, 2, seed=int(rng.integers(2**31)), stratify=w)
        aux, main = np.flatnonzero(half == 0), np.flatnonzero(half == 1)
        out = proxy(aux, main)
        s_m, b_m = (out if isinstance(out, tuple) else (out, None))
        with_baseline = b_m is not None
        s_m = check_vector(s_m, "proxy(train, test)", len(main))
        b_m = check_vector(b_m, "baseline from proxy(train, test)", len(main)) if b_m is not None else None
        rows, _, shares = _blp_gates_once(y[main], w[main], e[main], s_m, b_m,
                                          None if codes is None else codes[main], n_groups, alpha)
        all_rows += [dict(row, split=r) for row in rows]
        share_list.append(shares)
    split = pd.DataFrame(all_rows)
    agg = _aggregate(split, n_splits)
    shares = {k: float(np.median([s[k] for s in share_list])) for k in share_list[0]}
    return _result(agg, shares, n_splits, alpha, None, split, n_groups, n, codes, with_baseline)


def _result(agg, shares, n_splits, alpha, groups, split, n_groups, n, codes, baseline: bool) -> BlpGatesResult:
    blp = agg.loc[["ATE", "HET"]].reset_index()
    gnames = [f"G{k + 1}" for k in range(n_groups)] + [f"G{n_groups} - G1"]
    gates = agg.loc[gnames].reset_index()
    gates["share"] = [shares.get(t, np.nan) for t in gates["term"]]
    return BlpGatesResult(blp=blp, gates=gates, n_splits=n_splits, alpha=alpha,
                          interval_alpha=2 * alpha if n_splits > 1 else alpha,
                          groups=groups, split_estimates=split, n=n,
                          n_clusters=None if codes is None else int(codes.max()) + 1, baseline=baseline)


# ----------------------------------------------------------------------------- CLAN and effects by a variable


def _as_frame(covariates, n: int) -> pd.DataFrame:
    if isinstance(covariates, pd.Series):
        covariates = covariates.to_frame()
    if isinstance(covariates, pd.DataFrame):
        df = covariates.reset_index(drop=True)
    else:
        a = np.asarray(covariates, dtype=float)
        if a.ndim == 1:
            a = a[:, None]
        df = pd.DataFrame(a, columns=[f"x{j}" for j in range(a.shape[1])])
    if len(df) != n:
        raise InputError(f"covariates: {len(df)} rows for {n} units")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise InputError(f"covariates: columns {bad} are not numeric; encode them (e.g. one-hot) first")
    return df.astype(float)


def clan(result, covariates, *, n_groups: int = 5, clusters=None, alpha: float = 0.05) -> pd.DataFrame:
    """Classification analysis (CLAN): covariate means by GATES group (CDDF).

    Parameters
    ----------
    result : CateResult, BlpGatesResult or array (n,) of int
        Where the GATES groups come from: a :func:`eocausal.cate` result (the ``n_groups``
        quantile groups of its out-of-fold predictions, and its clusters), the result of a
        cross-fitted :func:`blp_gates` evaluation (its ``groups``), or the group of each unit,
        0 = least affected ... K-1 = most affected (e.g. :func:`quantile_groups` of
        predictions computed elsewhere).
    covariates : DataFrame or array (n, p)
        Covariates to describe (tabular, or summaries of the images such as NDVI).
    n_groups : int
        Quantile groups of a CateResult's predictions (not used otherwise).
    clusters : array (n,), optional
        Cluster labels for the SE of the difference. None: the CateResult's clusters (if any; a
        BlpGatesResult or group labels carry none, so pass them here).
    alpha : float
        Significance level of the interval of the difference (0.05: 95%).

    Returns
    -------
    pandas.DataFrame
        One row per covariate: the mean in each group ``G1`` ... ``GK``, ``GK - G1``, its
        ``std_error`` (from an OLS of the covariate on a most-affected indicator within
        G1 and GK, HC1 or clustered CR1), ``ci_low``, ``ci_high`` and ``p_value``.
    """
    res = as_cate_result(result)
    if res is not None:
        if n_groups < 2:
            raise InputError(f"n_groups={n_groups}: need at least 2 groups")
        g = quantile_groups(res.tau_hat, n_groups)
        clusters = res.clusters if clusters is None else clusters
    elif isinstance(result, BlpGatesResult):
        if result.groups is None:
            raise InputError("result: this BlpGatesResult comes from repeated half splits and has no group per "
                             "unit; pass the CateResult, or the BlpGatesResult of an array proxy")
        g = result.groups
    else:
        g = np.asarray(result)
        if g.ndim != 1 or not np.issubdtype(g.dtype, np.integer):
            raise InputError(f"result: expected a CateResult, a BlpGatesResult or integer group labels 0..K-1 "
                             f"(one per unit), got {type(result).__name__} with dtype {getattr(g, 'dtype', None)} "
                             f"and shape {g.shape}")
    n = len(g)
    df = _as_frame(covariates, n)
    z = stats.norm.ppf(1 - _alpha(alpha) / 2)
    K = int(g.max()) + 1
    codes = _codes(clusters, n)
    ends = (g == 0) | (g == K - 1)
    top = (g[ends] == K - 1).astype(float)
    rows = []
    for col in df.columns:
        x = df[col].to_numpy()
        row = {"covariate": col}
        for k in range(K):
            row[f"G{k + 1}"] = float(x[g == k].mean()) if (g == k).any() else np.nan
        if top.min() != top.max():
            fit = linear_fit(np.column_stack([np.ones(ends.sum()), top]), x[ends],
                             clusters=None if codes is None else codes[ends], se="HC1")
            est, se = float(fit.coef[1]), float(np.sqrt(fit.vcov[1, 1]))
        else:
            est, se = np.nan, np.nan
        row.update({f"G{K} - G1": est, "std_error": se, "ci_low": est - z * se, "ci_high": est + z * se,
                    "p_value": float(2 * stats.norm.sf(abs(est / se))) if se > 0 else np.nan})
        rows.append(row)
    return pd.DataFrame(rows).set_index("covariate")


def effects_by(result, values, *, tau_hat=None, scores=None, bins: int | None = 5, clusters=None,
               alpha: float = 0.05, max_levels: int = 20) -> pd.DataFrame:
    """How effects vary with one variable: by its levels (classes) or quantile bins.

    For each level of a categorical variable (a land-cover class) or each quantile bin of a
    numeric one (NDVI, a band index), the doubly robust average effect mean(Gamma) with its
    (cluster-robust) SE, and the mean prediction mean(tau_hat). Gamma's nuisances are out of
    fold, so mean(Gamma) within a group defined by pre-treatment values is an unbiased
    estimate of the group's average effect; mean(tau_hat) is what the model predicts for it.

    Parameters
    ----------
    result : CateResult or None
        A result of :func:`eocausal.cate` (its out-of-fold predictions, doubly robust scores
        and clusters); None to pass ``tau_hat`` and ``scores`` instead.
    values : array (n,)
        The variable. Non-numeric values, or numeric ones with at most ``max_levels``
        distinct values, are treated as classes; other numeric values are binned.
    tau_hat, scores : arrays (n,), optional
        Out-of-fold CATE predictions and doubly robust scores (without a result).
    bins : int or None
        Quantile bins for a numeric variable (None: every distinct value is a class).
    clusters : array (n,), optional
        Cluster labels for the SEs. None: the result's clusters (if any).
    alpha : float
        Significance level of the intervals (0.05: 95%).
    max_levels : int
        Numeric variables with at most this many distinct values are treated as classes.

    Returns
    -------
    pandas.DataFrame
        Rows per level/bin: ``group, n, lower, upper`` (bin bounds; NaN for classes),
        ``mean_prediction, dr_estimate, std_error, ci_low, ci_high``.
    """
    a = arrays_from(result, "effects_by", dict(tau_hat=tau_hat, scores=scores),
                    dict(tau_hat="tau_hat", scores="scores"))
    if clusters is None and result is not None:
        clusters = result.clusters
    tau_hat = check_vector(a["tau_hat"], "tau_hat")
    n = len(tau_hat)
    scores = check_vector(a["scores"], "scores", n)
    z = stats.norm.ppf(1 - _alpha(alpha) / 2)
    v = np.asarray(values)
    if v.ndim != 1 or len(v) != n:
        raise InputError(f"values: expected {n} values, got shape {v.shape}")
    codes = _codes(clusters, n)
    numeric = np.issubdtype(v.dtype, np.number)
    if numeric and not np.isfinite(v.astype(float)).all():
        raise InputError("values: non-finite values; drop or fill them first")
    categorical = (not numeric) or len(np.unique(v)) <= max_levels or bins is None
    if categorical:
        labels, g = np.unique(v, return_inverse=True)
        bounds = [(np.nan, np.nan)] * len(labels)
    else:
        g = quantile_groups(v.astype(float), bins)
        labels = [f"Q{k + 1}" for k in range(bins)]
        bounds = [(float(v[g == k].min()), float(v[g == k].max())) if (g == k).any() else (np.nan, np.nan)
                  for k in range(bins)]
    rows = []
    for k, lab in enumerate(labels):
        m = g == k
        if not m.any():
            continue
        sc = scores[m]
        est = float(sc.mean())
        psi = sc - est
        if codes is None:
            se = float(np.sqrt(np.sum(psi**2)) / m.sum())
        else:
            sums = np.bincount(codes[m], weights=psi)
            se = float(np.sqrt(np.sum(sums**2)) / m.sum())
        rows.append({"group": lab, "n": int(m.sum()), "lower": bounds[k][0], "upper": bounds[k][1],
                     "mean_prediction": float(tau_hat[m].mean()), "dr_estimate": est, "std_error": se,
                     "ci_low": est - z * se, "ci_high": est + z * se})
    return pd.DataFrame(rows)


test_calibration.__test__ = False  # a library function named like a test: keep pytest from collecting it
