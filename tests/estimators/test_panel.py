"""Two-way fixed effects: agreement with OLS on unit and period dummies and with pyfixest itself.

Reference computations: statsmodels OLS with an intercept, U - 1 unit dummies and T - 1 period
dummies. pyfixest's CRV1 (fixest's default small-sample correction) equals statsmodels'
uncorrected cluster covariance times G/(G-1) * (n-1)/(n-k), where k counts the coefficients and
the dummies of the fixed effects that are not nested in the clusters: with units nested in the
clusters, k = #coefficients + T (intercept and T - 1 period dummies); with clusters that cut
across units, k = every column of the dummy regression (statsmodels' own default correction).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from eocausal._types import EffectRow
from eocausal.errors import ColumnError, DataQualityWarning, InputError, NotEstimableError
from eocausal.estimators.panel import TWFE_ESTIMAND, panel_fe, to_effect_row

RTOL = 1e-8
# pyfixest 0.60 under pandas 3 warns about its own use of ``inplace=`` when called directly
PANDAS_INPLACE = "ignore:The inplace keyword in DataFrame:DeprecationWarning"


def _panel(U=40, T=4, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"unit": np.repeat(np.arange(U), T), "period": np.tile(np.arange(T), U)})
    df["adm2"] = df["unit"] // 5  # units nested in 8 admin units
    df["crossing"] = rng.integers(0, 9, len(df))  # a cluster variable that cuts across units
    a = rng.normal(size=U)[df["unit"]]
    b = rng.normal(size=T)[df["period"]]
    df["x1"] = rng.normal(size=len(df)) + 0.5 * a
    df["w"] = (rng.uniform(size=len(df)) < 0.25 + 0.3 * (a > 0)).astype(float)
    df["y"] = 0.5 * df["w"] + a + b + 0.3 * df["x1"] + rng.normal(size=len(df))
    return df


def _dummies_ols(df, regressors):
    D = pd.get_dummies(df[["unit", "period"]].astype(str), drop_first=True).astype(float)
    X = sm.add_constant(pd.concat([df[regressors].reset_index(drop=True), D.reset_index(drop=True)], axis=1))
    return sm.OLS(df["y"].to_numpy(), X), X


def test_iid_equals_ols_with_unit_and_period_dummies():
    df = _panel()
    fit = panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", controls=["x1"], se="iid")
    model, X = _dummies_ols(df, ["w", "x1"])
    ols = model.fit()
    assert fit.estimate == pytest.approx(ols.params["w"], rel=RTOL)
    assert fit.std_error == pytest.approx(ols.bse["w"], rel=RTOL)
    assert fit.dof_resid == ols.df_resid == len(df) - X.shape[1]
    assert fit.p_value == pytest.approx(ols.pvalues["w"], rel=1e-6)
    lo, hi = ols.conf_int(alpha=0.05).loc["w"]
    assert fit.ci == pytest.approx((lo, hi), rel=1e-7)
    assert (fit.n, fit.n_units, fit.n_periods, fit.n_clusters) == (160, 40, 4, None)
    assert fit.n_treated == int(df["w"].sum())


def test_hetero_equals_statsmodels_hc1():
    df = _panel(seed=1)
    fit = panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", se="hetero")
    ols = _dummies_ols(df, ["w"])[0].fit(cov_type="HC1")
    assert fit.estimate == pytest.approx(ols.params["w"], rel=RTOL)
    assert fit.std_error == pytest.approx(ols.bse["w"], rel=RTOL)
    assert fit.se_type.startswith("HC1")


@pytest.mark.parametrize("cluster,nested", [("adm2", True), ("unit", True), ("crossing", False)])
def test_crv1_equals_statsmodels_cluster_cov_with_fixest_factors(cluster, nested):
    df = _panel(seed=2)
    fit = panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", clusters=cluster,
                   controls=["x1"])
    model, X = _dummies_ols(df, ["w", "x1"])
    raw = model.fit(cov_type="cluster", cov_kwds={"groups": df[cluster].to_numpy(), "use_correction": False})
    n, G, T = len(df), df[cluster].nunique(), df["period"].nunique()
    k_full = X.shape[1]
    k = 2 + T if nested else k_full  # 2 coefficients (w, x1) + intercept + T - 1 period dummies
    se = np.sqrt(raw.cov_params().loc["w", "w"] * G / (G - 1) * (n - 1) / (n - k))
    assert fit.estimate == pytest.approx(raw.params["w"], rel=RTOL)
    assert fit.std_error == pytest.approx(se, rel=RTOL)
    if nested:  # the nested rule matters: the full-k factor gives a visibly different SE
        se_full = np.sqrt(raw.cov_params().loc["w", "w"] * G / (G - 1) * (n - 1) / (n - k_full))
        assert abs(fit.std_error / se_full - 1) > 0.05
    else:  # statsmodels' default cluster correction is the same factor with the full k
        sm_default = model.fit(cov_type="cluster", cov_kwds={"groups": df[cluster].to_numpy()})
        assert fit.std_error == pytest.approx(sm_default.bse["w"], rel=RTOL)
    q = stats.t.ppf(0.975, G - 1)  # t with G - 1 degrees of freedom
    assert fit.ci == pytest.approx((fit.estimate - q * se, fit.estimate + q * se), rel=1e-7)
    assert fit.p_value == pytest.approx(2 * stats.t.sf(abs(fit.estimate / se), G - 1), rel=1e-6)
    assert fit.n_clusters == G
    assert fit.se_type == f"CRV1, clustered by {cluster}"


@pytest.mark.filterwarnings(PANDAS_INPLACE)
def test_equals_pyfixest_called_directly():
    import pyfixest as pf

    df = _panel(seed=3)
    fit = panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", clusters="adm2",
                   controls=["x1"], alpha=0.1)
    ref = pf.feols("y ~ w + x1 | unit + period", data=df, vcov={"CRV1": "adm2"})
    assert fit.estimate == pytest.approx(ref.coef()["w"], rel=1e-12)
    assert fit.std_error == pytest.approx(ref.se()["w"], rel=1e-12)
    assert fit.p_value == pytest.approx(ref.pvalue()["w"], rel=1e-12)
    ci = ref.confint(alpha=0.1).loc["w"]
    assert fit.ci == pytest.approx((ci.iloc[0], ci.iloc[1]), rel=1e-12)
    assert fit.formula == "y ~ w + x1 | unit + period"


def test_cluster_column_is_respected():
    df = _panel(seed=4)
    kw = dict(outcome="y", treatment="w", unit="unit", period="period")
    by_adm, by_unit = panel_fe(df, clusters="adm2", **kw), panel_fe(df, clusters="unit", **kw)
    assert by_adm.estimate == by_unit.estimate
    assert (by_adm.n_clusters, by_unit.n_clusters) == (8, 40)
    assert abs(by_adm.std_error - by_unit.std_error) > 1e-4
    # relabelling the clusters changes nothing; merging two admin units does
    relabelled = panel_fe(df.assign(adm2=df["adm2"].map(lambda g: f"adm-{g}")), clusters="adm2", **kw)
    assert relabelled.std_error == pytest.approx(by_adm.std_error, rel=1e-12)
    merged = panel_fe(df.assign(adm2=df["adm2"].replace({1: 0})), clusters="adm2", **kw)
    assert merged.n_clusters == 7 and abs(merged.std_error - by_adm.std_error) > 1e-4


def test_missing_values_raise_input_error():
    df = _panel()
    df.loc[5, "x1"] = np.nan
    with pytest.raises(InputError, match=r"missing values in \{'x1': 1\}"):
        panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", controls=["x1"])
    df = _panel()
    df.loc[7, "adm2"] = np.nan
    with pytest.raises(InputError, match="adm2"):
        panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", clusters="adm2")


def test_bad_inputs_raise_typed_errors():
    df = _panel()
    with pytest.raises(ColumnError, match="nope"):
        panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", clusters="nope")
    with pytest.raises(InputError, match="0/1"):
        panel_fe(df.assign(w=df["w"] * 2), outcome="y", treatment="w", unit="unit", period="period")
    with pytest.raises(InputError, match="se="):
        panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", se="HC3")


def test_unit_observed_once_is_dropped_as_a_singleton():
    df = _panel(seed=5)
    extra = pd.DataFrame({"unit": [999], "period": [2], "adm2": [0], "crossing": [0], "x1": [0.3],
                          "w": [1.0], "y": [7.0]})
    with_single = pd.concat([df, extra], ignore_index=True)
    kw = dict(outcome="y", treatment="w", unit="unit", period="period", controls=["x1"], se="iid")
    with pytest.warns(DataQualityWarning, match=r"dropped 1 singleton observation.*from 161 to 160"):
        fit = panel_fe(with_single, **kw)
    ref = panel_fe(df, **kw)
    assert fit.n_singletons == 1
    assert (fit.n, fit.n_units) == (160, 40)
    assert fit.estimate == pytest.approx(ref.estimate, rel=1e-10)
    assert fit.std_error == pytest.approx(ref.std_error, rel=1e-10)
    assert fit.n_treated == ref.n_treated


def test_no_singleton_warning_on_a_balanced_panel(recwarn):
    fit = panel_fe(_panel(), outcome="y", treatment="w", unit="unit", period="period")
    assert fit.n_singletons == 0
    assert not [w for w in recwarn if issubclass(w.category, DataQualityWarning)]


def test_treatment_absorbed_by_unit_effects_is_not_estimable():
    df = _panel()
    df["w"] = (df["unit"] < 20).astype(float)  # never changes within a unit
    with pytest.raises(NotEstimableError, match="does not vary within 'unit'"):
        panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", controls=["x1"])
    with pytest.raises(NotEstimableError, match="does not vary within 'unit'"):
        panel_fe(df, outcome="y", treatment="w", unit="unit", period="period")


def test_embedding_components_enter_as_controls():
    from sklearn.decomposition import PCA

    df = _panel(seed=6)
    rng = np.random.default_rng(6)
    Z = rng.normal(size=(len(df), 24)) + df[["y"]].to_numpy() * rng.normal(size=24)  # informative
    fit = panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", embeddings=Z,
                   n_components=3, se="iid")
    P = PCA(n_components=3, svd_solver="full").fit(Z)
    pcs = pd.DataFrame(P.transform(Z), columns=["p1", "p2", "p3"])
    ols = _dummies_ols(pd.concat([df, pcs], axis=1), ["w", "p1", "p2", "p3"])[0].fit()
    assert fit.estimate == pytest.approx(ols.params["w"], rel=RTOL)
    assert fit.std_error == pytest.approx(ols.bse["w"], rel=RTOL)
    assert fit.n_embedding_components == 3
    assert fit.embedding_variance_share == pytest.approx(P.explained_variance_ratio_.sum(), rel=1e-12)
    assert fit.formula == "y ~ w + emb_pc1 + emb_pc2 + emb_pc3 | unit + period"
    # a frame is aligned on the data's index, not by position
    Zf = pd.DataFrame(Z, index=df.index)
    shuffled = panel_fe(df, outcome="y", treatment="w", unit="unit", period="period",
                        embeddings=Zf.sample(frac=1.0, random_state=0), n_components=3, se="iid")
    assert shuffled.estimate == pytest.approx(fit.estimate, rel=1e-8)
    with pytest.raises(InputError, match="n_components"):
        panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", embeddings=Z, n_components=17)


def test_embeddings_constant_within_units_are_absorbed_and_reported():
    df = _panel(seed=7)
    rng = np.random.default_rng(7)
    Z = rng.normal(size=(df["unit"].nunique(), 8))[df["unit"]]  # one image per unit
    with pytest.warns(DataQualityWarning, match="absorbed by the unit effects"):
        fit = panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", embeddings=Z,
                       n_components=2, se="iid")
    ref = panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", se="iid")
    assert fit.dropped == ("emb_pc1", "emb_pc2")
    assert fit.estimate == pytest.approx(ref.estimate, rel=1e-8)


def test_to_effect_row():
    df = _panel()
    fit = panel_fe(df, outcome="y", treatment="w", unit="unit", period="period", clusters="adm2",
                   controls=["x1"])
    row = to_effect_row(fit, trial="china-health")
    assert isinstance(row, EffectRow)
    assert (row.method, row.estimand, row.adjustment, row.trial) == ("fe", TWFE_ESTIMAND, "tabular", "china-health")
    assert (row.estimate, row.std_error, row.ci_low, row.ci_high, row.p_value) == (
        fit.estimate, fit.std_error, fit.ci_low, fit.ci_high, fit.p_value)
    assert (row.n, row.n_treated, row.n_clusters) == (fit.n, fit.n_treated, 8)
    assert "staggered" in row.note and "unit + period" in row.note
    bare = panel_fe(df, outcome="y", treatment="w", unit="unit", period="period")
    assert to_effect_row(bare).adjustment == "none"
    assert to_effect_row(bare, adjustment="tabular").adjustment == "tabular"
    with pytest.raises(InputError):
        to_effect_row({"estimate": 1.0})
