"""estimate()'s inference options (issue 15): in-sample IPW propensities (crossfit), CR1 + t(G-1)
cluster inference, the wild cluster bootstrap, Conley SEs and spatial-block folds.

Each test checks a row against an independent computation of the same quantity (the stacked
sandwich of ``ipw_logit_if``, the CR0 SE of the row's own influence function, a direct double sum),
so a wrong factor, wrong degrees of freedom or a wrong propensity fit fails it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import eocausal
from eocausal.errors import InputError
from eocausal.estimators.inference import ipw_logit_if
from eocausal.estimators.weighting import hajek, se_from_psi


def _clustered(G=60, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.integers(3, 8, G)
    cl = np.repeat(np.arange(G), m)
    n = len(cl)
    a = rng.normal(size=G)[cl]
    x1 = rng.normal(size=n)
    w = (rng.uniform(size=n) < 1 / (1 + np.exp(-(0.8 * a + 0.3 * x1)))).astype(int)
    y = w + 2 * a + x1 + rng.normal(size=G)[cl] + rng.normal(size=n)
    lon = 32 + rng.uniform(0, 1.0, G)[cl] + rng.normal(0, 0.002, n)
    lat = 2 + rng.uniform(0, 1.0, G)[cl] + rng.normal(0, 0.002, n)
    return pd.DataFrame({"W": w, "Y": y, "a": a, "x1": x1, "v": cl, "lon": lon, "lat": lat})


def _quiet(data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return eocausal.estimate(data, **kw)


def test_crossfit_false_is_the_textbook_logit_ipw_with_its_stacked_sandwich():
    df = _clustered()
    V = df[["a", "x1"]].to_numpy()
    y, w, g = df["Y"].to_numpy(), df["W"].to_numpy(float), df["v"].to_numpy()
    G = len(np.unique(g))
    for estimand in ("ATE", "ATT"):
        t = _quiet(data=df, treatment="W", outcome="Y", confounders=["a", "x1"], clusters="v",
                   methods=["ipw-hajek"], propensity="logit", crossfit=False, estimand=estimand)
        r = t.rows[0]
        ref = ipw_logit_if(y, w, V, estimator="hajek", estimand=estimand)
        # 'logit' is LogisticRegression(C=1e6): the unpenalised fit up to a penalty of 1e-6
        assert r.estimate == pytest.approx(ref.estimate, abs=1e-6)
        se_ref = se_from_psi(ref.psi, g)[0] * np.sqrt(G / (G - 1))
        assert r.std_error == pytest.approx(se_ref, rel=1e-5)
        crit = stats.t.ppf(0.975, G - 1)
        assert r.ci_high - r.estimate == pytest.approx(crit * r.std_error, rel=1e-12)
        assert r.p_value == pytest.approx(2 * stats.t.sf(abs(r.estimate / r.std_error), G - 1), rel=1e-10)
        assert r.folds is None and "logit-corrected" in r.se_type and "CR1, t with" in r.se_type
        fit = t.propensities["tabular"]
        assert fit.in_sample and fit.e_aipw is None
        np.testing.assert_allclose(fit.e_raw, ref.e, atol=1e-6)


def test_auto_fits_fixed_penalty_logit_on_all_units_and_keeps_aipw_crossfitted():
    df = _clustered(seed=1)
    kw = dict(treatment="W", outcome="Y", confounders=["a", "x1"], clusters="v", methods=["ipw-hajek", "aipw"])
    t = _quiet(df, propensity="logit", **kw)
    by = {r.method: r for r in t.rows}
    assert by["ipw-hajek"].folds is None and by["aipw"].folds == 5
    assert "logit-corrected" in by["ipw-hajek"].se_type
    fit = t.propensities["tabular"]
    assert fit.in_sample and fit.e_aipw is not None
    assert not np.allclose(fit.e, fit.e_aipw)  # in-sample and out-of-fold propensities differ
    # crossfit=True: both from the folds, the IPW row's SE by the ipw_se rule
    t2 = _quiet(df, propensity="logit", crossfit=True, **kw)
    by2 = {r.method: r for r in t2.rows}
    assert by2["ipw-hajek"].folds == 5 and not t2.propensities["tabular"].in_sample
    assert by2["aipw"].estimate == pytest.approx(by["aipw"].estimate, rel=1e-12)
    # the default 'ridge-logit' (penalty chosen by CV) is cross-fitted, with the known-e IF
    t0 = _quiet(df, **kw)
    r0 = next(r for r in t0.rows if r.method == "ipw-hajek")
    assert r0.folds == 5 and not t0.propensities["tabular"].in_sample
    assert "known e: cross-fitted, penalty chosen by cross-validation" in r0.se_type
    # crossfit=False fits ridge-logit on all units too (its penalty then held fixed in the sandwich)
    t1 = _quiet(df, crossfit=False, **kw)
    assert t1.propensities["tabular"].in_sample and "logit-corrected" in t1.rows[0].se_type
    # a flexible classifier is cross-fitted under 'auto', and refused in-sample
    t3 = _quiet(data=df, treatment="W", outcome="Y", confounders=["a", "x1"], clusters="v",
                methods=["ipw-hajek"], propensity="gbm")
    assert t3.rows[0].folds == 5
    with pytest.raises(InputError, match="crossfit=False"):
        eocausal.estimate(df, treatment="W", outcome="Y", confounders=["a", "x1"], propensity="gbm", crossfit=False)


def test_clustered_if_rows_use_cr1_and_t_with_g_minus_1_df():
    df = _clustered(G=25, seed=2)
    g = df["v"].to_numpy()
    G = len(np.unique(g))
    t = _quiet(data=df, treatment="W", outcome="Y", confounders=["a", "x1"], clusters="v",
               methods=["dim", "ipw-hajek", "aipw"])
    fit = t.propensities["tabular"]
    for r in t.rows:
        if r.method == "dim":
            continue
        se0 = se_from_psi(fit.psi[r.method], g)[0]
        assert r.std_error == pytest.approx(se0 * np.sqrt(G / (G - 1)), rel=1e-10)
        assert (r.ci_high - r.ci_low) / 2 == pytest.approx(stats.t.ppf(0.975, G - 1) * r.std_error, rel=1e-10)
    # unclustered rows stay normal
    t_iid = _quiet(data=df, treatment="W", outcome="Y", confounders=["a", "x1"], methods=["dim"])
    r = t_iid.rows[0]
    assert (r.ci_high - r.ci_low) / 2 == pytest.approx(stats.norm.ppf(0.975) * r.std_error, rel=1e-10)
    assert r.se_type == "IF, iid"


def test_wild_rows_invert_the_wild_bootstrap_and_keep_the_cr1_se():
    from eocausal.estimators.robust_se import wild_cluster_bootstrap

    df = _clustered(G=12, seed=3)
    g = df["v"].to_numpy()
    t = eocausal.estimate(df, treatment="W", outcome="Y", confounders=["a", "x1"], clusters="v",
                          methods=["dim", "ipw-hajek"], se="wild", n_boot=999, min_arm=5)
    for r in t.rows:
        assert "wild cluster bootstrap by v" in r.se_type
        assert r.ci_low < r.estimate < r.ci_high
    dim = t.rows[0]
    y, w = df["Y"].to_numpy(), df["W"].to_numpy()
    pe = eocausal.estimators.weighting.difference_in_means(y, w)
    wb = wild_cluster_bootstrap(pe.psi, pe.jacobian, pe.estimate, g, n_boot=999, alpha=0.05, seed=0)
    assert (dim.ci_low, dim.ci_high, dim.p_value) == pytest.approx((wb.ci_low, wb.ci_high, wb.p_value), rel=1e-9)
    assert dim.std_error == pytest.approx(se_from_psi(pe.psi, g)[0] * np.sqrt(12 / 11), rel=1e-10)


def test_conley_and_spatial_blocks_need_places_and_use_them():
    df = _clustered(seed=4)
    with pytest.raises(InputError, match="se='conley' needs each unit's place"):
        eocausal.estimate(df, treatment="W", outcome="Y", confounders=["a", "x1"], se="conley", conley_km=20)
    with pytest.raises(InputError, match="conley_km"):
        eocausal.estimate(df, treatment="W", outcome="Y", confounders=["a", "x1"], se="conley")
    with pytest.raises(InputError, match="block_km=5 needs each unit's place"):
        eocausal.estimate(df, treatment="W", outcome="Y", confounders=["a", "x1"], block_km=5)
    from eocausal.data.folds import spatial_blocks
    from eocausal.data.units import Units
    from eocausal.estimators.robust_se import conley_se

    units = Units.from_frame(df, treatment="W", outcome="Y", covariates=["a", "x1"], clusters="v",
                             lon="lon", lat="lat")
    t = _quiet(data=units, methods=["dim", "aipw"], se="conley", conley_km=30, conley_kernel="uniform")
    fit = t.propensities["tabular"]
    coords = df[["lon", "lat"]].to_numpy()
    aipw_row = next(r for r in t.rows if r.method == "aipw")
    assert aipw_row.std_error == pytest.approx(conley_se(fit.psi["aipw"], coords, 30, kernel="uniform"), rel=1e-10)
    assert aipw_row.se_type == "IF, Conley (uniform, 30 km)"
    # spatial-block folds: no 20 km block is split between folds
    t2 = _quiet(data=units, methods=["aipw"], block_km=20)
    folds = t2.propensities["tabular"].fold_ids
    blocks = spatial_blocks(coords, 20)
    for b in np.unique(blocks):
        assert len(np.unique(folds[blocks == b])) == 1
    assert any("20 km spatial blocks" in n for n in t2.notes)


def test_new_settings_are_validated_before_work():
    df = _clustered()
    bad = [dict(se="wild", wild_weights="mammen"), dict(crossfit="sometimes"), dict(block_km=0),
           dict(se="conley", conley_km=-3), dict(conley_kernel="gaussian"), dict(conley_km=10)]
    for kw in bad:
        with pytest.raises(InputError):
            eocausal.estimate(df, treatment="W", outcome="Y", confounders=["a", "x1"], **kw)


def test_progress_can_be_forced_on_and_off(capsys):
    df = _clustered()
    kw = dict(treatment="W", outcome="Y", confounders=["a", "x1"], methods=["ipw-hajek", "aipw"])
    eocausal.estimate(df, progress=False, **kw)
    assert capsys.readouterr().err == ""
    eocausal.estimate(df, progress=True, **kw)
    err = capsys.readouterr().err
    assert "estimate" in err and "all: tabular: propensity" in err
    with pytest.raises(InputError, match="progress="):
        eocausal.estimate(df, progress="yes", **kw)


def test_blocks_that_merge_every_cluster_are_refused_with_the_reason():
    from eocausal.data.units import Units

    df = _clustered(G=40, seed=5)
    units = Units.from_frame(df, treatment="W", outcome="Y", covariates=["a", "x1"], clusters="v",
                             lon="lon", lat="lat")
    with pytest.raises(InputError, match=r"block_km=500: the units fall into 1 group\(s\).*fewer than folds=5"):
        eocausal.estimate(units, methods=["aipw"], block_km=500)
