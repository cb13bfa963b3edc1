"""Covariate balance before and after weighting: standardized mean differences and variance ratios.

For each covariate x, each leading principal component of the image embeddings and, when given,
each coordinate (longitude, latitude), :func:`balance_table` reports how far the treated and
control arms differ, unweighted and after weighting.

Definitions (v_i >= 0 is unit i's weight in its own arm; v_i = 1 before weighting)::

    m_a(v)   = sum_{i in a} v_i x_i / sum_{i in a} v_i                       weighted mean of arm a
    s2_a(v)  = sum_{i in a} v_i (x_i - m_a(v))^2 * V1 / (V1^2 - V2)          weighted variance,
               with V1 = sum_{i in a} v_i, V2 = sum_{i in a} v_i^2
    s        = sqrt((s2_1(1) + s2_0(1)) / 2)   ATE: pooled SD of the unweighted arms
             = sqrt(s2_1(1))                   ATT: SD of the unweighted treated arm
             = sqrt(s2_all(v))                 ATO: SD of all units, weighted by v
             = sqrt(s2_all(1))                 where the above is 0 (a row constant in the arm(s) used)
    SMD      = (m_1(v) - m_0(v)) / s
    VR       = s2_1(v) / s2_0(v)

The weighted variance is the "reliability weights" estimator; with v = 1 it is the usual sample
variance (denominator n_a - 1), and it is unchanged when the weights of an arm are multiplied by a
constant (so stabilised and unstabilised weights give the same table). The SMD before and after
weighting share one denominator, so that a change in the SMD is a change in the means, not in the
yardstick. The denominator follows the estimand as cobalt's default ``s.d.denom`` does (Greifer,
cobalt, ``get.s.d.denom`` and ``compute_s.d.denom``): the pooled SD of the unweighted arms for the
ATE (``"pooled"``); the SD of the unweighted treated arm for the ATT (``"treated"``: the ATT's
target population is the treated, so their spread is the yardstick; Stuart 2010); for the overlap
estimand ATO, the SD of all units weighted by the balancing weights (``"weighted"``); and, where
that SD is 0, the unweighted SD of all units, as cobalt falls back to. Unlike cobalt's default
(``binary = "raw"``), binary
covariates are standardized too, with the same variance formula (Austin 2009 writes p(1 - p), which
differs by the factor (n_a - 1) / n_a).

A common rule of thumb treats |SMD| > 0.1 as meaningful imbalance (Austin 2009; Stuart 2010);
variance ratios far from 1 (outside about [0.5, 2]) flag imbalance in spread that SMDs miss
(Rubin 2001).

References
----------
Austin, P. C. (2009). Balance diagnostics for comparing the distribution of baseline covariates
between treatment groups in propensity-score matched samples. Statistics in Medicine 28(25),
3083-3107.
Rubin, D. B. (2001). Using propensity scores to help design observational studies. Health
Services and Outcomes Research Methodology 2, 169-188.
Stuart, E. A. (2010). Matching methods for causal inference: a review and a look forward.
Statistical Science 25(1), 1-21.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from eocausal.errors import BalanceWarning, InputError

#: Columns of the table returned by :func:`balance_table`, in order.
BALANCE_COLUMNS = ("kind", "mean_treated", "mean_control", "mean_treated_weighted",
                   "mean_control_weighted", "smd_before", "smd_after", "var_ratio_before",
                   "var_ratio_after", "share_of_variance", "imbalanced")

#: The SMD's denominator per estimand, by cobalt's names (its default ``s.d.denom``): the SDs of the
#: unweighted arms pooled, the SD of the unweighted treated arm, or the SD of all units weighted.
SMD_DENOMINATORS = {"ATE": "pooled", "ATT": "treated", "ATO": "weighted"}

#: Rows named in the warning.
_WORST = 5


def weighted_mean_var(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted means and reliability-weighted variances of the columns of ``x``.

    ``m = sum v x / sum v`` and ``s2 = sum v (x - m)^2 * V1 / (V1^2 - V2)`` with V1 = sum v,
    V2 = sum v^2 (the sample variance, denominator n - 1, when v = 1). The variance is NaN when
    fewer than two units carry weight (V1^2 = V2).
    """
    x = np.asarray(x, dtype=float)
    v = np.asarray(v, dtype=float)
    v1, v2 = v.sum(), np.sum(v**2)
    m = v @ x / v1
    const = np.ptp(x, axis=0) == 0  # exact 0 variance (the weighted mean may be off by rounding)
    m[const] = x[0, const]
    denom = v1**2 - v2
    if denom <= 0 or not np.isfinite(denom):
        return m, np.full(x.shape[1], np.nan)
    s2 = v @ (x - m) ** 2 * v1 / denom
    s2[const] = 0.0
    return m, s2


def _as_matrix(X, names, what: str) -> tuple[np.ndarray, list[str]]:
    if isinstance(X, pd.DataFrame):
        cols = [str(c) for c in X.columns]
        try:
            M = X.to_numpy(dtype=float)
        except (TypeError, ValueError) as exc:
            bad = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])]
            raise InputError(f"{what}: columns {bad} are not numeric; encode them (e.g. pd.get_dummies) first") from exc
    else:
        M = np.asarray(X, dtype=float)
        if M.ndim == 1:
            M = M[:, None]
        if M.ndim != 2:
            raise InputError(f"{what}: expected a 2-D array (n, p), got shape {M.shape}")
        cols = [f"x{j + 1}" for j in range(M.shape[1])]
    if names is not None:
        names = [str(s) for s in names]
        if len(names) != M.shape[1]:
            raise InputError(f"names: {len(names)} names for {M.shape[1]} columns of {what}")
        cols = names
    if not np.isfinite(M).all():
        rows = np.flatnonzero(~np.isfinite(M).all(axis=1))
        raise InputError(f"{what}: missing or non-finite values in rows {rows[:8].tolist()} "
                         f"({len(rows)} in all); impute or drop these units before checking balance")
    return M, cols


def _check_treatment(w, n: int) -> np.ndarray:
    w = np.asarray(w, dtype=float).reshape(-1)
    if w.shape != (n,):
        raise InputError(f"w: expected {n} treatment values (one per row of X), got {w.shape[0]}")
    if not np.isin(w, (0.0, 1.0)).all():
        raise InputError(f"w: the treatment must be 0/1, got values {np.unique(w)[:6].tolist()}")
    n1 = int(w.sum())
    if n1 < 2 or n - n1 < 2:
        raise InputError(f"w: balance needs at least 2 treated and 2 control units, got {n1} treated "
                         f"and {n - n1} control")
    return w


def _check_weights(weights, w: np.ndarray) -> np.ndarray:
    v = np.asarray(weights, dtype=float).reshape(-1)
    if v.shape != w.shape:
        raise InputError(f"weights: expected {len(w)} values (one per unit), got {v.shape[0]}")
    if not np.isfinite(v).all() or (v < 0).any():
        raise InputError("weights: must be finite and non-negative; pass each unit's weight in its own "
                         "arm, e.g. w1 + w0 from eocausal.estimators.weighting.arm_weights")
    for arm, name in ((1, "treated"), (0, "control")):
        if v[w == arm].sum() <= 0:
            raise InputError(f"weights: every {name} unit has weight 0")
    return v


def _arm_stats(M: np.ndarray, w: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    t, c = w == 1, w == 0
    m1, s1 = weighted_mean_var(M[t], v[t])
    m0, s0 = weighted_mean_var(M[c], v[c])
    return dict(m1=m1, m0=m0, s1=s1, s0=s0)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    return np.where(b > 0, r, np.nan)


def balance_table(
    X,
    w,
    weights=None,
    *,
    names: Sequence[str] | None = None,
    embeddings=None,
    n_components: int = 5,
    coords=None,
    pcs: tuple | None = None,
    estimand: str = "ATE",
    threshold: float = 0.1,
    warn: bool = True,
    stacklevel: int = 2,
) -> pd.DataFrame:
    """Balance of covariates, embedding principal components and coordinates between the arms.

    Parameters
    ----------
    X : DataFrame or array (n, p), or None
        Tabular covariates (numeric; encode categories first). Row names come from the frame's
        columns, from ``names``, or are ``x1, x2, ...``. ``None`` or zero columns: no covariate rows.
    w : array (n,)
        Binary treatment (0/1).
    weights : array (n,), optional
        Each unit's weight in its own arm, e.g. ``w1 + w0`` from
        :func:`eocausal.estimators.weighting.arm_weights` (ATE: 1/e for the treated, 1/(1-e) for
        the controls). Without weights the "after" columns are NaN and nothing is flagged.
    names : sequence of str, optional
        Names of the columns of ``X`` (overrides a frame's column names).
    embeddings : array or DataFrame (n, d), optional
        Image embeddings, rows in the order of ``X``. A PCA (centered, not scaled) is fitted on
        all n units and the first ``n_components`` components become rows ``PC1, PC2, ...``; the
        share of the embeddings' variance each explains is in ``share_of_variance``. Balance on
        the leading components is a low-dimensional check of balance on the image.
    n_components : int
        Number of principal components (at most d and n).
    pcs : (array (n, k), array (k,)), optional
        Precomputed principal-component scores of the embeddings and their shares of variance,
        used instead of fitting a PCA on ``embeddings`` (``estimate`` fits one PCA on all units
        and reuses it for every trial and adjustment, so the rows mean the same in each).
    coords : array or DataFrame (n, 2), optional
        Longitude and latitude of each unit (in that order); rows ``longitude`` and ``latitude``
        show whether the weights balance location, as causalimages reports.
    estimand : {'ATE', 'ATT', 'ATO'}
        The estimand the weights target; it sets the SMD's denominator as cobalt's default does:
        the pooled SD of the unweighted arms for 'ATE', the SD of the unweighted treated arm for
        'ATT', the SD of all units weighted by ``weights`` for 'ATO' (see the module docstring).
    threshold : float
        |SMD after weighting| above which a row is flagged (``imbalanced``) and the warning is
        issued; 0.1 by convention (Austin 2009).
    warn : bool
        Issue a :class:`~eocausal.errors.BalanceWarning` when a row is flagged.
    stacklevel : int
        Passed to :func:`warnings.warn`; raise it by one per wrapper between the user and this call.

    Returns
    -------
    DataFrame
        Indexed by row name, with columns :data:`BALANCE_COLUMNS`: ``kind`` ('covariate',
        'embedding PC' or 'coordinate'); ``mean_treated``/``mean_control`` (unweighted);
        ``mean_treated_weighted``/``mean_control_weighted``; ``smd_before``/``smd_after``;
        ``var_ratio_before``/``var_ratio_after`` (treated / control); ``share_of_variance``
        (PC rows only); ``imbalanced`` (|smd_after| > threshold). The SMD and variance ratio are
        NaN for a constant row. ``DataFrame.attrs`` holds ``n_treated``, ``n_control``,
        ``ess_treated``, ``ess_control`` (Kish's (sum v)^2 / sum v^2 per arm; n_a without
        weights), ``threshold``, ``weighted``, ``n_imbalanced``, ``estimand`` and
        ``smd_denominator`` (cobalt's name of the SD used: 'pooled', 'treated' or 'weighted').

    Warns
    -----
    BalanceWarning
        When some |smd_after| exceeds ``threshold``, naming the worst rows.

    Notes
    -----
    Formulas are in the module docstring: weighted means, reliability-weighted variances, and one
    SD as the common denominator of both SMDs, chosen by ``estimand`` as cobalt's defaults do:
    pooled, sqrt((s1^2 + s0^2) / 2), for the ATE; the treated arm's s1 for the ATT; all units
    weighted for the ATO.
    """
    if estimand not in SMD_DENOMINATORS:
        raise InputError(f"estimand={estimand!r}: use one of {list(SMD_DENOMINATORS)} (it sets the SMD's "
                         "denominator: pooled SD for 'ATE', the treated arm's SD for 'ATT', the weighted SD "
                         "of all units for 'ATO')")
    blocks: list[tuple[np.ndarray, list[str], str, np.ndarray]] = []
    n = None
    if X is not None:
        M, cols = _as_matrix(X, names, "X")
        n = M.shape[0]
        if M.shape[1]:
            blocks.append((M, cols, "covariate", np.full(M.shape[1], np.nan)))
    elif names is not None:
        raise InputError("names: given without X")
    if embeddings is not None:
        Z, _ = _as_matrix(embeddings, None, "embeddings")
        if n is not None and Z.shape[0] != n:
            raise InputError(f"embeddings: {Z.shape[0]} rows for {n} units")
        n = Z.shape[0]
        if not isinstance(n_components, (int, np.integer)) or n_components < 1:
            raise InputError(f"n_components={n_components!r}: must be a positive integer")
        if not np.ptp(Z, axis=0).any():
            raise InputError("embeddings: every column is constant; there is no image variation to check")
        from sklearn.decomposition import PCA

        k = int(min(n_components, Z.shape[1], Z.shape[0]))
        pca = PCA(n_components=k, svd_solver="full").fit(Z)
        blocks.append((pca.transform(Z), [f"PC{j + 1}" for j in range(k)], "embedding PC",
                       pca.explained_variance_ratio_))
    if pcs is not None:
        if embeddings is not None:
            raise InputError("balance_table: give embeddings or pcs, not both")
        P = np.asarray(pcs[0], dtype=float)
        share = np.asarray(pcs[1], dtype=float)
        if P.ndim != 2 or share.shape != (P.shape[1],) or (n is not None and P.shape[0] != n):
            raise InputError(f"pcs: expected scores (n, k) and k shares, got {P.shape} and {share.shape}")
        n = P.shape[0]
        blocks.append((P, [f"PC{j + 1}" for j in range(P.shape[1])], "embedding PC", share))
    if coords is not None:
        C, _ = _as_matrix(coords, None, "coords")
        if C.shape[1] != 2:
            raise InputError(f"coords: expected 2 columns (longitude, latitude), got {C.shape[1]}")
        if n is not None and C.shape[0] != n:
            raise InputError(f"coords: {C.shape[0]} rows for {n} units")
        n = C.shape[0]
        blocks.append((C, ["longitude", "latitude"], "coordinate", np.full(2, np.nan)))
    if not blocks:
        raise InputError("balance_table: nothing to check; give X, embeddings or coords")
    if not 0 < threshold:
        raise InputError(f"threshold={threshold}: must be positive")

    M = np.hstack([b[0] for b in blocks])
    rows = [r for b in blocks for r in b[1]]
    dup = sorted({r for r in rows if rows.count(r) > 1})
    if dup:
        raise InputError(f"balance_table: duplicate row names {dup}; rename the covariates "
                         "(PC1.., longitude and latitude are used for embeddings and coordinates)")
    w = _check_treatment(w, M.shape[0])
    ones = np.ones_like(w)
    before = _arm_stats(M, w, ones)
    if weights is not None:
        v = _check_weights(weights, w)
        after = _arm_stats(M, w, v)
    else:
        v = ones
        after = {k: np.full(M.shape[1], np.nan) for k in before}
    denominator = SMD_DENOMINATORS[estimand]
    s_ref = np.sqrt({"pooled": (before["s1"] + before["s0"]) / 2, "treated": before["s1"],
                     "weighted": weighted_mean_var(M, v)[1]}[denominator])
    zero = ~(s_ref > 0)
    if zero.any():  # cobalt's fallback: the unweighted SD of all units
        s_ref[zero] = np.sqrt(weighted_mean_var(M[:, zero], ones)[1])

    smd_before = _ratio(before["m1"] - before["m0"], s_ref)
    smd_after = _ratio(after["m1"] - after["m0"], s_ref)
    imbalanced = np.abs(np.nan_to_num(smd_after, nan=0.0)) > threshold
    table = pd.DataFrame(
        {
            "kind": [b[2] for b in blocks for _ in b[1]],
            "mean_treated": before["m1"],
            "mean_control": before["m0"],
            "mean_treated_weighted": after["m1"],
            "mean_control_weighted": after["m0"],
            "smd_before": smd_before,
            "smd_after": smd_after,
            "var_ratio_before": _ratio(before["s1"], before["s0"]),
            "var_ratio_after": _ratio(after["s1"], after["s0"]),
            "share_of_variance": np.concatenate([b[3] for b in blocks]),
            "imbalanced": imbalanced,
        },
        index=pd.Index(rows, name="variable"),
    )
    t, c = w == 1, w == 0
    table.attrs.update(
        n_treated=int(t.sum()), n_control=int(c.sum()),
        ess_treated=float(v[t].sum() ** 2 / np.sum(v[t] ** 2)),
        ess_control=float(v[c].sum() ** 2 / np.sum(v[c] ** 2)),
        threshold=float(threshold), weighted=weights is not None, n_imbalanced=int(imbalanced.sum()),
        estimand=estimand, smd_denominator=denominator,
    )
    if warn and imbalanced.any():
        warnings.warn(_balance_message(table, threshold), BalanceWarning, stacklevel=stacklevel)
    return table


def _balance_message(table: pd.DataFrame, threshold: float) -> str:
    bad = table[table["imbalanced"]]
    worst = bad["smd_after"].abs().sort_values(ascending=False).index[:_WORST]
    listed = ", ".join(f"{r} {table.at[r, 'smd_after']:+.3f} (before {table.at[r, 'smd_before']:+.3f})"
                       for r in worst)
    more = f" and {len(bad) - _WORST} more" if len(bad) > _WORST else ""
    return (
        f"{len(bad)} of {len(table)} balance rows have |standardized mean difference| > {threshold:g} "
        f"after weighting: {listed}{more} (effective sample sizes: treated "
        f"{table.attrs['ess_treated']:.1f} of {table.attrs['n_treated']}, control "
        f"{table.attrs['ess_control']:.1f} of {table.attrs['n_control']}). The propensity model does "
        "not balance these variables: consider adding interactions or nonlinear terms of them, a "
        "richer propensity model, or a doubly robust estimator (AIPW), whose outcome model corrects "
        "residual imbalance. Austin (2009), Statistics in Medicine 28, 3083-3107."
    )
