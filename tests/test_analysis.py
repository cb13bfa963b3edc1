"""eocausal.estimate: the notebook face, its formula form and its errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import eocausal
from eocausal.analysis import Formula, _check_overlap
from eocausal.errors import InputError, OverlapError, OverlapWarning, SeparationError


def _frame(n=600, seed=0, tau=1.0):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=(2, n))
    e = 1 / (1 + np.exp(-(0.8 * x1 - 0.4 * x2)))
    w = (rng.uniform(size=n) < e).astype(int)
    y = tau * w + 1.5 * x1 + 0.5 * x2 + rng.normal(size=n)
    return pd.DataFrame({"y": y, "w": w, "x1": x1, "x2": x2, "village": np.arange(n) // 3})


def test_formula_parse():
    f = Formula.parse("y ~ w | x1 + x2")
    assert (f.outcome, f.treatment, f.confounders) == ("y", "w", ("x1", "x2"))
    assert Formula.parse("y~w").confounders == ()


@pytest.mark.parametrize("bad, match", [
    ("y w", "one '~'"), ("y ~ w | a | b", "at most one"), ("y + z ~ w", "left side"),
    ("y ~ w + v | x", "treatment"), ("y ~ w | log(x)", "not column names"),
])
def test_formula_errors_quote_the_formula(bad, match):
    with pytest.raises(InputError, match=match) as exc:
        Formula.parse(bad)
    assert repr(bad) in str(exc.value)


def test_formula_equals_keyword_form_and_adjustment_removes_bias():
    df = _frame()
    a = eocausal.estimate("y ~ w | x1 + x2", df, methods=["dim", "ipw-hajek"])
    b = eocausal.estimate(df, treatment="w", outcome="y", confounders=["x1", "x2"], methods=["dim", "ipw-hajek"])
    pd.testing.assert_frame_equal(a.tidy(), b.tidy())
    naive = a.row(method="dim")
    ipw = a.row(method="ipw-hajek", adjustment="tabular")
    assert naive.adjustment == "none" and naive.estimate - 1.0 > 4 * naive.std_error
    assert abs(ipw.estimate - 1.0) < 3 * ipw.std_error
    assert ipw.ci_low < ipw.estimate < ipw.ci_high
    assert ipw.ci_high - ipw.ci_low == pytest.approx(2 * 1.959964 * ipw.std_error, rel=1e-5)


def test_rows_columns_and_clustering():
    df = _frame()
    t = eocausal.estimate("y ~ w | x1", df, clusters="village")
    tidy = t.tidy()
    for col in ["trial", "estimand", "method", "estimate", "std_error", "ci_low", "ci_high", "n", "n_treated", "adjustment"]:
        assert col in tidy.columns
    assert set(tidy["method"]) == {"dim", "ipw-ht", "ipw-hajek", "aipw"}
    assert (tidy["n_clusters"] == 200).all()
    assert tidy["se_type"].str.contains("village").all()
    assert any("clustered by village (200 clusters)" in n for n in t.notes)


def test_embeddings_give_image_adjustments_and_must_align():
    df = _frame(n=300)
    units = eocausal.Units.from_frame(df, treatment="w", outcome="y", covariates=["x1"])
    Z = pd.DataFrame(np.random.default_rng(0).normal(size=(300, 4)), index=units.ids)
    t = eocausal.estimate(units, embeddings=Z, methods=["ipw-hajek"])
    assert [r.adjustment for r in t.rows] == ["tabular", "image", "tabular+image"]
    assert t.design["embedding_dim"] == 4
    with pytest.raises(InputError, match="no entry for"):
        eocausal.estimate(units, embeddings=Z.iloc[5:])
    with pytest.raises(InputError, match="10 entries for 300 units"):
        eocausal.estimate(units, embeddings=np.zeros((10, 2)))
    with pytest.raises(InputError, match=r"expected shape \(300, d\)"):
        eocausal.estimate(units, embeddings=np.zeros(300))
    with pytest.raises(InputError, match="needs embeddings"):
        eocausal.estimate(units, adjustments=["image"])


@pytest.mark.parametrize("kwargs, match", [
    ({"methods": ["aipw-x"]}, "unknown"), ({"estimand": "LATE"}, "estimand"), ({"clip": 0.7}, "clip"),
    ({"alpha": 1.5}, "alpha"), ({"adjustments": ["none"]}, "adjustments"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        eocausal.estimate("y ~ w | x1", _frame(n=100), **kwargs)


def test_bad_data_arguments():
    df = _frame(n=100)
    with pytest.raises(InputError, match="second argument"):
        eocausal.estimate("y ~ w")
    with pytest.raises(InputError, match="not both"):
        eocausal.estimate("y ~ w", df, treatment="w")
    with pytest.raises(InputError, match="treatment= and outcome="):
        eocausal.estimate(df)
    with pytest.raises(InputError, match="expected Units"):
        eocausal.estimate([1, 2, 3])


def test_att_and_ato_estimands():
    df = _frame(n=2000, seed=3)
    for est in ("ATT", "ATO"):
        t = eocausal.estimate("y ~ w | x1 + x2", df, estimand=est, methods=["ipw-hajek"], propensity="logit")
        r = t.rows[0]
        assert r.estimand == est
        assert abs(r.estimate - 1.0) < 3.5 * r.std_error  # constant effect: every estimand is 1


def test_overlap_warning_and_error():
    w = np.r_[np.ones(50), np.zeros(50)]
    good = np.full(100, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_overlap(good, w, 1e-3, "image")  # silent when overlap is fine
    piled = np.r_[np.full(20, 0.999), np.full(80, 0.5)]
    with pytest.warns(OverlapWarning, match=r"20.0% of units.*trim.*Crump"):
        _check_overlap(piled, w, 1e-3, "image")
    with pytest.raises(OverlapError, match="do not overlap"):
        _check_overlap(np.r_[np.full(25, 1.0), np.zeros(25), np.full(25, 1.0), np.zeros(25)], w, 1e-3, "tabular")
    with pytest.raises(SeparationError):
        _check_overlap(np.r_[np.full(50, 0.6), np.full(50, 0.4)], w, 1e-3, "tabular")


def test_separable_treatment_is_caught():
    """A confounder that is the treatment itself (a bad control) cannot pass silently."""
    df = _frame(n=400)
    df["w_copy"] = df["w"] * 3.0
    with pytest.raises(SeparationError, match="separate the arms perfectly.*functions of the treatment"):
        eocausal.estimate("y ~ w | w_copy", df, methods=["ipw-hajek"], propensity="logit")
    # a separation error is also an overlap error and a ValueError
    assert issubclass(SeparationError, OverlapError) and issubclass(SeparationError, ValueError)


def _trials_frame(n=900, seed=4):
    rng = np.random.default_rng(seed)
    df = _frame(n=n, seed=seed)
    # three trials as treatment columns: 1 treated, 0 control, NaN not in the trial
    for j, tau in enumerate((0.0, 1.0, 2.0)):
        member = rng.uniform(size=n) < 0.6
        e = 1 / (1 + np.exp(-(0.7 * df.x1 - 0.2)))
        wj = (rng.uniform(size=n) < e).astype(float)
        df[f"t{j}"] = np.where(member, wj, np.nan)
        df["y"] += np.where(member & (wj == 1), tau, 0.0)
    df["tiny"] = np.where(np.arange(n) < 40, (np.arange(n) < 3).astype(float), np.nan)
    return df


def test_many_trials_as_treatment_columns():
    df = _trials_frame()
    t = eocausal.estimate(df, outcome="y", confounders=["x1", "x2"], trials=["t0", "t1", "t2", "tiny"],
                          methods=["dim", "ipw-hajek"], propensity="logit")
    tidy = t.tidy()
    assert list(dict.fromkeys(tidy["trial"])) == ["t0", "t1", "t2", "tiny"]
    # each trial equals a separate call on its own units (shared work changes nothing)
    for col in ("t0", "t2"):
        sub = df[df[col].notna()].assign(w=lambda d, c=col: d[c].astype(int))
        one = eocausal.estimate(sub, treatment="w", outcome="y", confounders=["x1", "x2"],
                                methods=["dim", "ipw-hajek"], propensity="logit")
        mine = tidy[tidy.trial == col].reset_index(drop=True)
        assert np.allclose(mine["estimate"], one.tidy()["estimate"])
        assert np.allclose(mine["std_error"], one.tidy()["std_error"])
        assert mine["n"].iloc[0] == df[col].notna().sum()
    # the trial with 3 treated units is reported, not dropped, with the reason
    tiny = tidy[tidy.trial == "tiny"]
    assert len(tiny) == 2 and tiny["estimate"].isna().all()
    assert tiny["note"].str.contains("3 treated and 37 control").all()
    # the IPW estimates recover each trial's effect
    for col, tau in (("t0", 0.0), ("t1", 1.0), ("t2", 2.0)):
        r = t.row(method="ipw-hajek", trial=col)
        assert abs(r.estimate - tau) < 3.5 * r.std_error


def test_multiple_testing_adjustment_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    df = _trials_frame(seed=5)
    t = eocausal.estimate(df, outcome="y", confounders=["x1"], trials=["t0", "t1", "t2"],
                          methods=["ipw-hajek"], propensity="logit").tidy()
    assert np.allclose(t["p_holm"], multipletests(t["p_value"], method="holm")[1])
    assert np.allclose(t["p_bh"], multipletests(t["p_value"], method="fdr_bh")[1])
    assert (t["p_holm"] >= t["p_value"]).all()


def test_trial_column_and_errors():
    df = _frame(n=600)
    df["site"] = np.where(np.arange(600) % 2, "north", "south")
    units = eocausal.Units.from_frame(df, treatment="w", outcome="y", covariates=["x1"], trial="site")
    t = eocausal.estimate(units, trials="site", methods=["dim"])
    assert [r.trial for r in t.rows] == ["north", "south"] and all(r.n == 300 for r in t.rows)
    with pytest.raises(InputError, match="no such column"):
        eocausal.estimate(units, trials="region")
    bad = _trials_frame(n=200)
    bad.loc[3, "t0"] = 2
    with pytest.raises(InputError, match=r"'t0' must hold 1 \(treated\), 0"):
        eocausal.estimate(bad, outcome="y", trials=["t0"])
    with pytest.raises(InputError, match="not in the data"):
        eocausal.estimate(bad, outcome="y", trials=["nope"])


def test_balance_tables_and_sensitivity_come_with_the_table():
    df = _frame(n=800, seed=7)
    units = eocausal.Units.from_frame(df.assign(lon=32 + df.x1 * 0.01, lat=2.0), treatment="w", outcome="y",
                                      covariates=["x1", "x2"], lon="lon", lat="lat")
    Z = np.column_stack([df.x1 + np.random.default_rng(1).normal(0, 0.1, 800), np.random.default_rng(2).normal(size=800)])
    t = eocausal.estimate(units, embeddings=Z, methods=["ipw-hajek"], propensity="logit")
    assert set(t.balance) == {"tabular", "image", "tabular+image"}
    b = t.balance["tabular"]
    assert {"x1", "x2", "PC1", "longitude", "latitude"} <= set(b.index)
    # x1 drives treatment: imbalanced before, balanced after weighting on the tabular covariates
    assert abs(b.loc["x1", "smd_before"]) > 0.3 and abs(b.loc["x1", "smd_after"]) < 0.1
    # the longitude is a function of x1 here: weighting balances it as well
    assert abs(b.loc["longitude", "smd_after"]) < 0.1
    s = t.sensitivity()
    assert len(s) == 3 and (s["e_value"] >= 1).all() and (s["e_value_ci"] <= s["e_value"]).all()


def test_aipw_row_equals_the_estimator_on_the_same_folds_and_bootstrap_agrees():
    from eocausal.estimators.aipw import aipw, crossfit_outcome
    from eocausal.data.folds import grouped_folds
    from eocausal.estimators.propensity import crossfit_propensity
    from eocausal.estimators.weighting import se_from_psi

    df = _frame(n=1200, seed=11)
    g = df["village"].to_numpy()
    t = eocausal.estimate("y ~ w | x1 + x2", df, methods=["aipw"], clusters="village", propensity="logit", seed=3)
    r = t.row(method="aipw")
    V, y, w = df[["x1", "x2"]].to_numpy(), df["y"].to_numpy(), df["w"].to_numpy(float)
    codes = pd.factorize(g, sort=True)[0]
    folds = grouped_folds(len(y), codes, 5, 3, stratify=w)
    e, _ = crossfit_propensity(V, w, clusters=codes, propensity="logit", fold_ids=folds, seed=3)
    mu0, mu1 = crossfit_outcome(V, y, w, folds, "ridge", n_tabular=None, seed=3)
    pe = aipw(y, w, np.clip(e, 1e-3, 1 - 1e-3), mu0, mu1)
    assert r.estimate == pytest.approx(pe.estimate, rel=1e-10)
    G = len(np.unique(codes))  # CR1: sqrt(G / (G - 1)) times the CR0 SE of the influence function
    assert r.std_error == pytest.approx(se_from_psi(pe.psi, codes)[0] * np.sqrt(G / (G - 1)), rel=1e-10)
    assert abs(r.estimate - 1.0) < 3.5 * r.std_error
    b = eocausal.estimate("y ~ w | x1 + x2", df, methods=["aipw"], clusters="village", propensity="logit", seed=3,
                          se="bootstrap", n_boot=400).row(method="aipw")
    assert b.estimate == r.estimate
    # the bootstrap SD of 400 draws is within its Monte Carlo error (about 1/sqrt(2*400) = 3.5%) of the IF SE
    assert b.std_error == pytest.approx(r.std_error, rel=0.15)
    assert "bootstrap (B=400" in b.se_type
    with pytest.raises(InputError, match="ATE or the ATT"):
        eocausal.estimate("y ~ w | x1", df, methods=["aipw"], estimand="ATO")


def test_trimming_is_distinct_from_clipping_and_reported():
    from eocausal.estimators.trimming import trim

    df = _frame(n=1500, seed=21)
    df["x1"] *= 2.5  # strong confounding: propensities near 0 and 1
    # crossfit=True: both rows share one (cross-fitted) propensity, so one trimmed set
    base = eocausal.estimate("y ~ w | x1 + x2", df, methods=["ipw-hajek", "aipw"], propensity="logit", clip=0.01,
                             crossfit=True)
    tr = eocausal.estimate("y ~ w | x1 + x2", df, methods=["ipw-hajek", "aipw"], propensity="logit", clip=0.01,
                           trim=0.1, crossfit=True)
    fit = base.propensities["tabular"]
    expect = trim(fit.e_raw, 0.1)
    for m in ("ipw-hajek", "aipw"):
        b, t = base.row(method=m), tr.row(method=m)
        assert b.n == 1500 and b.n_trimmed == 0 and b.n_clipped == t.n_clipped
        assert t.n_trimmed == expect.n_trimmed > 0 and t.n == 1500 - expect.n_trimmed
        assert "overlap population" in t.note and t.estimate != b.estimate
    keep = expect.keep
    from eocausal.estimators.weighting import hajek
    e = np.clip(fit.e_raw, 0.01, 0.99)
    assert tr.row(method="ipw-hajek").estimate == pytest.approx(
        hajek(df.y.to_numpy()[keep], df.w.to_numpy(float)[keep], e[keep]).estimate, rel=1e-12)
