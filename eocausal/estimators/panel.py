"""Two-way fixed effects (unit + period) regressions for panels, through pyfixest.

The model (docs/methods.md, Panel fixed effects; how to use it: docs/panel.md)::

    Y_it = tau W_it + X_it' beta + P_it' gamma + a_i + b_t + e_it

with unit effects a_i, period effects b_t, optional controls X_it and, optionally, the first k
principal components P_it of the image embeddings. It is estimated by :func:`pyfixest.feols`
(``"y ~ w + x1 + ... | unit + period"``), which sweeps out both sets of effects, so the estimate
equals OLS with unit and period dummies (and R's fixest and Stata's reghdfe).

Estimand caveat. tau is the ATT only under a homogeneous effect with parallel trends. With
staggered adoption or effects that vary over time or units, the TWFE coefficient is a weighted
average of all 2x2 difference-in-differences comparisons, including "forbidden" ones that use
already-treated units as controls; some weights can be negative (Goodman-Bacon 2021; de
Chaisemartin and D'Haultfoeuille 2020). eocausal therefore labels it "ATT (TWFE)" and reports it
as a robustness check next to the cross-sectional estimates, not as the ATT itself.

Standard errors (pyfixest's defaults, which follow fixest):

- clustered (``se='CRV1'``, the default; by the ``clusters`` column, or by the ``unit`` column when
  none is given, since a unit's errors are serially correlated: Bertrand, Duflo and Mullainathan
  2004. With AR(1) errors, rho = 0.8, 100 units x 8 periods and staggered adoption, the 95%
  interval covered 0.845 with HC1 (SE/SD 0.71) and 0.94 clustered by unit (SE/SD 0.96), 200
  replications in tests/estimators/test_panel_default_clusters.py): CRV1,
  V = G/(G-1) * (n-1)/(n-k) * (X'X)^-1 [sum_g X_g' u_g u_g' X_g] (X'X)^-1 on the demeaned design,
  with G clusters and k = number of coefficients plus the fixed-effect levels that are *not*
  nested in the clusters (fixest's ``fixef.K = "nested"``; pyfixest's ``k_fixef="nonnested"``).
  Clustering by ADM2 or by unit nests the unit effects, so k = #coefficients + #periods
  (the intercept and T - 1 period dummies); a cluster variable that cuts across units counts
  every dummy, k = #coefficients + #units + #periods - 1. Tests and p-values use a t
  distribution with G - 1 degrees of freedom.
- ``se='iid'``: sigma^2 (X'X)^-1 with sigma^2 = RSS / (n - k), k counting every fixed effect;
  ``se='hetero'``: HC1. Both use t with n - k degrees of freedom, and both assume errors
  independent across periods of a unit: explicit choices only.
- ``se='conley'``: Conley (1999) spatial HAC with serial correlation within units (Hsiang 2010;
  fixest's ``vcov_conley`` combined with clustering by unit). With the within (FWL) residual
  x~_it of the treatment on the fixed effects and the other controls and the residual u_it, the
  score is s_it = x~_it u_it and
  V = [sum_t sum_{i,j} K(d_ij / cutoff) s_it s_jt + sum_i sum_{t != t'} s_it s_it'] / (sum x~_it^2)^2,
  i.e. every pair of unit-periods in the same period weighted by the spatial kernel K of their
  great-circle distance d_ij (``conley_kernel``: Bartlett 1 - d / cutoff or uniform, cutoff
  ``conley_km``; :func:`eocausal.estimators.robust_se.conley_se`), plus every pair of periods of
  the same unit with weight 1 (clustering by unit over time, all lags). Pairs of different
  units in different periods get weight 0. There is no small-sample scaling; with a cutoff
  below the smallest distance between units it equals the unit-clustered CR0 SE. Tests and
  intervals use t with (#units - 1) degrees of freedom, as the unit-clustered SE does.

Singletons. Observations whose unit (or period) occurs only once are dropped before estimation,
as fixest and reghdfe do (Correia 2015): their fixed effect fits them exactly, so they do not
change tau, but they would inflate n and shrink the SEs. The number dropped is reported
(``n_singletons``) and a :class:`~eocausal.errors.DataQualityWarning` says so.

Embeddings as controls. An embedding has hundreds of dimensions; entered as is, every dimension
costs a coefficient in an unpenalised within regression, which eats the within-unit variation
(most of an embedding varies across units, and the unit effects absorb that part), makes the
demeaned design near-collinear and inflates the SE of tau. A PCA to at most 16 components keeps
the dominant image variation as a handful of controls. Embeddings that are constant within a
unit (one image per unit) are absorbed by the unit effects entirely; they are dropped and a
warning says so: time-varying controls need imagery per period.

References
----------
Goodman-Bacon, A. (2021). Difference-in-differences with variation in treatment timing. Journal
of Econometrics 225(2), 254-277.
de Chaisemartin, C. and D'Haultfoeuille, X. (2020). Two-way fixed effects estimators with
heterogeneous treatment effects. American Economic Review 110(9), 2964-2996.
Correia, S. (2015). Singletons, cluster-robust standard errors and fixed effects: a bad mix.
Working paper.
Conley, T. G. (1999). GMM estimation with cross sectional dependence. Journal of Econometrics
92(1), 1-45.
Hsiang, S. M. (2010). Temperatures and cyclones strongly associated with economic production in
the Caribbean and Central America. PNAS 107(35), 15367-15372 (its spatial-HAC code).
Bertrand, M., Duflo, E. and Mullainathan, S. (2004). How much should we trust
differences-in-differences estimates? Quarterly Journal of Economics 119(1), 249-275.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from eocausal._types import EffectRow
from eocausal.errors import ColumnError, DataQualityWarning, DependencyError, InputError, NotEstimableError, require

__all__ = ["MAX_EMBEDDING_COMPONENTS", "TWFE_ESTIMAND", "PanelFit", "panel_fe", "to_effect_row"]

#: Most principal components of the embeddings used as controls.
MAX_EMBEDDING_COMPONENTS = 16
#: The estimand label of a TWFE coefficient (see the module docstring for the caveat).
TWFE_ESTIMAND = "ATT (TWFE)"

# pyfixest 0.60 under pandas 3 emits these pandas deprecation warnings from its own code; they say
# nothing about the user's data (narrow message, deprecation category only).
_PANDAS_INPLACE = r"The inplace keyword in DataFrame\.\w+ is deprecated"
_SINGLETON = r"\d+ singleton fixed effect\(s\) dropped"
_MULTICOL = r"\s*\d+ variables dropped due to multicollinearity"


@dataclass(frozen=True)
class PanelFit:
    """Result of :func:`panel_fe`.

    Attributes
    ----------
    estimate, std_error, t_stat, p_value : float
        Coefficient of the treatment, its SE, t statistic and two-sided p-value (t distribution,
        see the module docstring for the degrees of freedom).
    ci_low, ci_high : float
        1 - alpha interval from pyfixest (t quantiles).
    n : int
        Observations used (after dropping singletons).
    n_units, n_periods : int
        Distinct units and periods among them.
    n_clusters : int or None
        Distinct clusters (None with ``se='hetero'`` or ``'iid'``).
    n_treated : int
        Treated unit-periods used.
    n_singletons : int
        Observations dropped as singletons.
    dof_resid : int
        n - #coefficients - (#units + #periods - 1): residual degrees of freedom of the
        dummy-variable regression (for :func:`eocausal.diagnostics.sensitivity.robustness_value`);
        exact when the panel is connected (every balanced panel is).
    se_type : str
        For tables, e.g. ``"CRV1, clustered by adm2"`` or, by default,
        ``"CRV1, clustered by unit (default)"``.
    se : str
        How the SE was computed: ``'CRV1'``, ``'iid'``, ``'hetero'`` or ``'conley'``.
    formula : str
        The regression in the user's column names, e.g. ``"y ~ w + x1 + emb_pc1 | unit + period"``.
    clusters : str or None
        The column the SEs are clustered by (the unit column by default; None with ``se='hetero'``
        or ``'iid'``).
    controls : tuple of str
        Tabular controls as given.
    n_embedding_components : int
        Principal components of the embeddings used (0 without embeddings).
    embedding_variance_share : float
        Share of the embeddings' variance those components keep (NaN without embeddings).
    dropped : tuple of str
        Controls pyfixest dropped as collinear with the fixed effects (or each other).
    alpha : float
    """

    estimate: float
    std_error: float
    t_stat: float
    p_value: float
    ci_low: float
    ci_high: float
    n: int
    n_units: int
    n_periods: int
    n_clusters: int | None
    n_treated: int
    n_singletons: int
    dof_resid: int
    se_type: str
    se: str
    formula: str
    clusters: str | None
    controls: tuple[str, ...]
    n_embedding_components: int
    embedding_variance_share: float
    dropped: tuple[str, ...]
    alpha: float

    @property
    def ci(self) -> tuple[float, float]:
        """(ci_low, ci_high)."""
        return self.ci_low, self.ci_high


def _embedding_components(embeddings, data: pd.DataFrame, n_components: int) -> tuple[np.ndarray, float]:
    if isinstance(embeddings, pd.DataFrame):
        missing = data.index.difference(embeddings.index)
        if len(missing):
            raise InputError(f"embeddings: no rows for index labels {missing[:8].tolist()} ({len(missing)} in "
                             "all); an embedding frame must share the data's index (one row per unit-period)")
        Z = embeddings.loc[data.index].to_numpy(dtype=float)
    else:
        Z = np.asarray(embeddings, dtype=float)
    if Z.ndim != 2 or Z.shape[0] != len(data):
        raise InputError(f"embeddings: expected shape ({len(data)}, d), one row per row of data, got {Z.shape}")
    if not np.isfinite(Z).all():
        rows = np.flatnonzero(~np.isfinite(Z).all(axis=1))
        raise InputError(f"embeddings: missing or non-finite values in rows {rows[:8].tolist()} ({len(rows)} in all)")
    if not isinstance(n_components, (int, np.integer)) or not 1 <= n_components <= MAX_EMBEDDING_COMPONENTS:
        raise InputError(f"n_components={n_components!r}: must be an integer in 1..{MAX_EMBEDDING_COMPONENTS}")
    if not np.ptp(Z, axis=0).any():
        raise InputError("embeddings: every column is constant; they carry no information to control for")
    from sklearn.decomposition import PCA

    k = int(min(n_components, Z.shape[1], Z.shape[0] - 1))
    pca = PCA(n_components=k, svd_solver="full").fit(Z)
    return pca.transform(Z), float(pca.explained_variance_ratio_.sum())


def panel_fe(
    data: pd.DataFrame,
    *,
    outcome: str,
    treatment: str,
    unit: str,
    period: str,
    clusters: str | None = None,
    controls: Sequence[str] = (),
    embeddings=None,
    n_components: int = MAX_EMBEDDING_COMPONENTS,
    se: str = "CRV1",
    alpha: float = 0.05,
    coords: Sequence[str] | None = None,
    conley_km: float | None = None,
    conley_kernel: str = "bartlett",
) -> PanelFit:
    """Two-way fixed effects estimate of a binary treatment's effect, ``outcome ~ treatment + controls | unit + period``.

    Parameters
    ----------
    data : DataFrame
        One row per unit-period.
    outcome, treatment, unit, period : str
        Column names; the treatment must be 0/1.
    clusters : str, optional
        Column to cluster the SEs by (CRV1), e.g. the ADM2 code when treatment is assigned there.
        Default: the ``unit`` column, since a unit's outcomes are serially correlated (Bertrand,
        Duflo and Mullainathan 2004).
    controls : sequence of str
        Numeric time-varying control columns.
    embeddings : array (n, d) or DataFrame, optional
        Image embeddings, one row per row of ``data`` (a frame is aligned on ``data.index``);
        their first ``n_components`` principal components (PCA centered, not scaled, fitted on
        these rows) enter as controls ``emb_pc1, emb_pc2, ...``.
    n_components : int
        At most :data:`MAX_EMBEDDING_COMPONENTS` (16); see the module docstring for why.
    se : {'CRV1', 'hetero', 'iid', 'conley'}
        'CRV1' (default): cluster-robust, by ``clusters`` or else by ``unit``. 'hetero' (HC1) and
        'iid' (classical) treat every unit-period as independent, which understates the SE under
        serial correlation; they take no ``clusters``.
        'conley': Conley spatial HAC across units within a period plus clustering by unit over
        time (module docstring); needs ``coords`` and ``conley_km``, takes no ``clusters``.
    alpha : float
        1 - confidence level of the interval.
    coords : (str, str), optional
        Names of the longitude and latitude columns (degrees, EPSG:4326), for ``se='conley'``.
    conley_km : float, optional
        Distance cutoff in km of the Conley SE (required with ``se='conley'``).
    conley_kernel : {'bartlett', 'uniform'}
        Spatial kernel of the Conley SE.

    Returns
    -------
    PanelFit

    Raises
    ------
    ColumnError
        A named column is missing.
    InputError
        Missing values in a used column, a non-binary treatment, a bad argument.
    NotEstimableError
        The treatment does not vary within units and periods (absorbed by the fixed effects).

    Warns
    -----
    DataQualityWarning
        Singleton observations were dropped, or controls were dropped as collinear with the
        fixed effects.

    Notes
    -----
    Formulas, SE conventions and the estimand caveat are in the module docstring.
    """
    pf = require("pyfixest", purpose="panel fixed effects")
    if not isinstance(data, pd.DataFrame):
        raise InputError(f"data: expected a pandas DataFrame with one row per unit-period, got {type(data).__name__}")
    controls = tuple(controls)
    roles = {"outcome": outcome, "treatment": treatment, "unit": unit, "period": period}
    if clusters is not None:
        roles["clusters"] = clusters
    roles.update({f"controls[{j}]": c for j, c in enumerate(controls)})
    if se == "conley":
        if coords is None or isinstance(coords, str) or len(tuple(coords)) != 2:
            raise InputError(f"coords={coords!r}: se='conley' needs the names of the longitude and latitude "
                             "columns, e.g. coords=('lon', 'lat')")
        roles.update({"coords[0] (longitude)": tuple(coords)[0], "coords[1] (latitude)": tuple(coords)[1]})
    missing = {r: c for r, c in roles.items() if c not in data.columns}
    if missing:
        raise ColumnError(f"panel_fe: columns {missing} are not in the data (columns: {list(data.columns)[:20]})")
    if len(set(controls)) != len(controls) or set(controls) & {outcome, treatment, unit, period}:
        raise InputError(f"controls={list(controls)}: repeat a column or name the outcome, treatment, unit or period")
    if se not in ("CRV1", "hetero", "iid", "conley"):
        raise InputError(f"se={se!r}: use 'CRV1' (clustered by clusters=, default the unit column), 'hetero' (HC1), "
                         "'iid' or 'conley' (spatial HAC, with coords= and conley_km=)")
    if se == "conley":
        from eocausal.estimators.robust_se import CONLEY_KERNELS, _check_cutoff

        if clusters is not None:
            raise InputError(f"clusters={clusters!r} with se='conley': the Conley SE already clusters by the unit "
                             "over time and by distance within a period; drop clusters= (or use se='CRV1')")
        if conley_km is None:
            raise InputError("conley_km=None: se='conley' needs a distance cutoff in km, e.g. conley_km=50")
        _check_cutoff(conley_km)
        if conley_kernel not in CONLEY_KERNELS:
            raise InputError(f"conley_kernel={conley_kernel!r}: use one of {list(CONLEY_KERNELS)}")
    elif coords is not None or conley_km is not None:
        raise InputError(f"coords={coords!r}, conley_km={conley_km!r} with se={se!r}: they are used only by "
                         "se='conley'; pass se='conley' or drop them")
    if se in ("hetero", "iid") and clusters is not None:
        raise InputError(f"clusters={clusters!r} with se={se!r}: {se!r} SEs are not clustered; use se='CRV1' "
                         "(the default) to cluster by that column, or drop clusters=")
    cluster_col = (unit if clusters is None else clusters) if se == "CRV1" else None
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha}: must lie in (0, 1)")
    used = list(dict.fromkeys(roles.values()))
    na = data[used].isna()
    if na.any().any():
        counts = {c: int(k) for c, k in na.sum().items() if k}
        rows = data.index[na.any(axis=1).to_numpy()][:8].tolist()
        raise InputError(f"panel_fe: missing values in {counts} (rows {rows}); drop or impute them first, so "
                         "the sample is the one you chose, not one the regression picks")
    if se == "conley":
        from eocausal.estimators.robust_se import _check_coords

        lonlat = _check_coords(np.column_stack([_numeric(data[c], c) for c in tuple(coords)]), len(data),
                               f"coords={tuple(coords)!r}")

    frame = pd.DataFrame(index=pd.RangeIndex(len(data)))
    frame["_y"] = _numeric(data[outcome], outcome)
    w = _numeric(data[treatment], treatment)
    if not np.isin(w, (0.0, 1.0)).all():
        raise InputError(f"treatment={treatment!r}: must be 0/1, got values {np.unique(w)[:6].tolist()}")
    frame["_w"] = w
    frame["_u"] = pd.factorize(data[unit])[0]
    frame["_t"] = pd.factorize(data[period])[0]
    ctrl_names = []
    for j, c in enumerate(controls):
        frame[f"_c{j}"] = _numeric(data[c], c)
        ctrl_names.append((f"_c{j}", c))
    share, k_emb = float("nan"), 0
    if embeddings is not None:
        P, share = _embedding_components(embeddings, data, n_components)
        k_emb = P.shape[1]
        for j in range(k_emb):
            frame[f"_p{j}"] = P[:, j]
            ctrl_names.append((f"_p{j}", f"emb_pc{j + 1}"))
    if cluster_col is not None:
        frame["_g"] = pd.factorize(data[cluster_col])[0]
        vc: str | dict = {"CRV1": "_g"}
    else:
        vc = "iid" if se == "conley" else se  # the Conley SE is computed below from the residuals
    rhs = " + ".join(["_w"] + [i for i, _ in ctrl_names])
    shown = " + ".join([treatment] + [s for _, s in ctrl_names])
    formula = f"{outcome} ~ {shown} | {unit} + {period}"

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PANDAS_INPLACE, category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=_SINGLETON, category=UserWarning)
        warnings.filterwarnings("ignore", message=_MULTICOL, category=UserWarning)
        try:
            fit = pf.feols(f"_y ~ {rhs} | _u + _t", data=frame, vcov=vc)
        except ValueError as exc:
            if "collinear" not in str(exc):
                raise
            raise NotEstimableError(_absorbed(treatment, unit, period)) from exc
        coefs = fit.coef()
        if "_w" not in coefs.index:
            raise NotEstimableError(_absorbed(treatment, unit, period))
        ci = fit.confint(alpha=alpha).loc["_w"]
        std_error, t_stat, p = float(fit.se()["_w"]), float(fit.tstat()["_w"]), float(fit.pvalue()["_w"])

    # rows pyfixest dropped (singletons; missing values were refused above). pyfixest 0.60 keeps them in
    # the private ``_na_index``; its public ``na_index`` is an unfilled placeholder.
    dropped_rows = np.array(sorted(getattr(fit, "_na_index", ())), dtype=int)
    if len(frame) - len(dropped_rows) != int(getattr(fit, "_N", len(frame) - len(dropped_rows))):
        raise DependencyError("panel_fe: cannot tell which rows pyfixest dropped; this pyfixest version is not "
                              "supported: install the version in constraints.txt")  # pragma: no cover
    kept = np.ones(len(frame), bool)
    kept[dropped_rows] = False
    n_single = int(len(dropped_rows))
    if n_single:
        warnings.warn(
            f"panel_fe: dropped {n_single} singleton observation(s) (a unit or period observed once, e.g. "
            f"rows {data.index[dropped_rows[:8]].tolist()}); their fixed effect fits them exactly, so the "
            f"estimate is unchanged but n falls from {len(frame)} to {int(kept.sum())}, as in fixest and "
            "reghdfe. Correia (2015), 'Singletons, cluster-robust standard errors and fixed effects'.",
            DataQualityWarning, stacklevel=2)
    dropped = tuple(s for i, s in ctrl_names if i not in coefs.index)
    if dropped:
        warnings.warn(
            f"panel_fe: controls {list(dropped)} are collinear with the unit and period fixed effects (or each "
            "other) and were dropped; a control constant within units (e.g. an embedding of one image per "
            "unit) is absorbed by the unit effects. Use time-varying controls (imagery per period).",
            DataQualityWarning, stacklevel=2)
    sub = frame[kept]
    n, n_units, n_periods = int(kept.sum()), int(sub["_u"].nunique()), int(sub["_t"].nunique())
    n_coef = len(coefs)
    n_clusters = int(sub["_g"].nunique()) if cluster_col is not None else None
    if se == "conley":
        from scipy import stats

        std_error = _conley_se(pf, frame, fit, coefs, kept, lonlat, float(conley_km), conley_kernel)
        cluster_col, n_clusters = unit, n_units
        t_stat = float(coefs["_w"]) / std_error
        p = float(2 * stats.t.sf(abs(t_stat), n_units - 1))
        q = float(stats.t.ppf(1 - alpha / 2, n_units - 1))
        ci = pd.Series([float(coefs["_w"]) - q * std_error, float(coefs["_w"]) + q * std_error])
        se_type = f"Conley ({conley_kernel}, {float(conley_km):g} km) + clustered by {unit}"
    else:
        se_type = (f"CRV1, clustered by {cluster_col}" + (" (default)" if clusters is None else "")
                   if cluster_col is not None else {"hetero": "HC1 (heteroskedasticity-robust)", "iid": "iid"}[se])
    return PanelFit(
        estimate=float(coefs["_w"]), std_error=std_error, t_stat=t_stat, p_value=p,
        ci_low=float(ci.iloc[0]), ci_high=float(ci.iloc[1]), n=n, n_units=n_units, n_periods=n_periods,
        n_clusters=n_clusters, n_treated=int(sub["_w"].sum()), n_singletons=n_single,
        dof_resid=n - n_coef - (n_units + n_periods - 1), se_type=se_type,
        se=se, formula=formula, clusters=cluster_col, controls=controls,
        n_embedding_components=k_emb, embedding_variance_share=share, dropped=dropped, alpha=float(alpha))


def _conley_se(pf, frame: pd.DataFrame, fit, coefs: pd.Series, kept: np.ndarray, lonlat: np.ndarray,
               cutoff_km: float, kernel: str) -> float:
    """Conley spatial-HAC SE of the treatment coefficient with clustering by unit over time (module docstring).

    x~ is the residual of the treatment on the fixed effects and the controls the main fit kept
    (Frisch-Waugh-Lovell), from a second pyfixest regression on the same rows.
    """
    from eocausal.estimators.robust_se import _kernel_sum

    others = [c for c in coefs.index if c != "_w"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PANDAS_INPLACE, category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=_SINGLETON, category=UserWarning)
        warnings.filterwarnings("ignore", message=_MULTICOL, category=UserWarning)
        aux = pf.feols(f"_w ~ {' + '.join(others) or '1'} | _u + _t", data=frame, vcov="iid")
    x_res = np.asarray(aux.resid(), dtype=float)
    u = np.asarray(fit.resid(), dtype=float)
    if not len(x_res) == len(u) == int(kept.sum()):
        raise DependencyError("panel_fe: pyfixest kept different rows in the treatment's within regression; this "
                              "pyfixest version is not supported: install the version in constraints.txt")  # pragma: no cover
    score = x_res * u
    sub = frame[kept]
    units, periods, ll = sub["_u"].to_numpy(), sub["_t"].to_numpy(), lonlat[kept]
    # same period: every pair of unit-periods, weighted by the spatial kernel (i = j included)
    spatial = sum(_kernel_sum(score[periods == t], ll[periods == t], cutoff_km, kernel) for t in np.unique(periods))
    # same unit, different periods: weight 1 (rows of one unit-period were counted above)
    cell = np.unique(units * (int(periods.max()) + 1) + periods, return_inverse=True)[1].reshape(-1)
    serial = np.sum(np.bincount(units, weights=score) ** 2) - np.sum(np.bincount(cell, weights=score) ** 2)
    total = spatial + serial
    if not total > 0:
        other = "the uniform kernel" if kernel == "bartlett" else "the Bartlett kernel"
        raise NotEstimableError(
            f"se='conley': the kernel-weighted double sum of the scores is {total:.4g}, not positive, at "
            f"conley_km={cutoff_km:g} with the {kernel} kernel (neither kernel is positive definite in 2-D; "
            f"Conley 1999); use {other} or another cutoff")
    return float(np.sqrt(total) / np.sum(x_res**2))


def _numeric(col: pd.Series, name: str) -> np.ndarray:
    if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
        raise InputError(f"column {name!r}: must be numeric, got dtype {col.dtype}")
    v = col.to_numpy(dtype=float)
    if not np.isfinite(v).all():
        raise InputError(f"column {name!r}: non-finite values (inf) in rows {np.flatnonzero(~np.isfinite(v))[:8].tolist()}")
    return v


def _absorbed(treatment: str, unit: str, period: str) -> str:
    return (f"treatment {treatment!r} does not vary within {unit!r} once {period!r} effects are removed (it is "
            "collinear with the fixed effects), so the two-way fixed effects regression cannot estimate its "
            "effect; check that some units change treatment status over the periods")


def to_effect_row(result: PanelFit, *, trial: str = "all", adjustment: str | None = None,
                  estimand: str = TWFE_ESTIMAND) -> EffectRow:
    """An :class:`~eocausal._types.EffectRow` (method ``'fe'``) for effect tables.

    Parameters
    ----------
    result : PanelFit
    trial : str
        Trial name of the row.
    adjustment : str, optional
        Defaults to 'none' (fixed effects only), 'tabular' (controls), 'image' (embeddings) or
        'tabular+image' (both), after the controls the fit used.
    estimand : str
        Label of the estimand; "ATT (TWFE)" by default, because under staggered adoption or
        heterogeneous effects the TWFE coefficient is a weighted average of comparisons that may
        differ from the ATT (Goodman-Bacon 2021; de Chaisemartin and D'Haultfoeuille 2020).
    """
    if not isinstance(result, PanelFit):
        raise InputError(f"result: expected a PanelFit from panel_fe, got {type(result).__name__}")
    if adjustment is None:
        tab, img = bool(result.controls), result.n_embedding_components > 0
        adjustment = {(False, False): "none", (True, False): "tabular", (False, True): "image",
                      (True, True): "tabular+image"}[(tab, img)]
    note = f"unit + period fixed effects: {result.formula}"
    if result.n_singletons:
        note += f"; {result.n_singletons} singleton observations dropped"
    if result.dropped:
        note += f"; collinear controls dropped: {', '.join(result.dropped)}"
    if result.n_embedding_components:
        note += (f"; embeddings as {result.n_embedding_components} principal components "
                 f"({result.embedding_variance_share:.0%} of their variance)")
    note += "; TWFE weights comparisons and may differ from the ATT under staggered adoption"
    return EffectRow(
        trial=trial, estimand=estimand, method="fe", adjustment=adjustment, estimate=result.estimate,
        std_error=result.std_error, ci_low=result.ci_low, ci_high=result.ci_high, p_value=result.p_value,
        n=result.n, n_treated=result.n_treated, n_clusters=result.n_clusters, se_type=result.se_type,
        note=note)
