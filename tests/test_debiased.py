"""debiased_effects: attenuation and its removal, delta vs bootstrap SEs, many trials in one
call, AIPW, diagnostics and bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import eocausal

from eocausal import debiased_effects
from eocausal.debias import Tweedie, check_calibration, compare_debiasers
from eocausal.errors import DebiasWarning, InputError

RHO, MU, SY = 0.5, 40.0, 10.0


def _predict(y, rng):
    """The population-exact model: P = E[Y | X] for X = Y + Gaussian noise, Y ~ N(MU, SY^2)."""
    return MU + RHO * (y + rng.normal(0, SY * np.sqrt((1 - RHO) / RHO), len(y)) - MU)


def _world(n=6000, n_cal=1500, tau=2.0, seed=0):
    rng = np.random.default_rng(seed)
    y_cal = rng.normal(MU, SY, n_cal)
    w = rng.integers(0, 2, n).astype(float)
    y = rng.normal(MU, SY, n) + tau * w
    return dict(p=_predict(y, rng), y=y, w=w, p_cal=_predict(y_cal, rng), y_cal=y_cal)


def _est(tab, outcome_type, trial=None):
    rows = [r for r in tab if r.outcome_type == outcome_type and (trial is None or r.trial == trial)]
    assert len(rows) == 1
    return rows[0]


def test_attenuation_and_its_removal():
    d = _world(n=20_000, n_cal=3000, tau=4.0)
    tab = debiased_effects(d["p"], d["w"], calibration=(d["p_cal"], d["y_cal"]), n_boot=100, seed=1)
    naive, lcc, tw = (_est(tab, k) for k in ("predicted", "predicted+lcc", "predicted+tweedie"))
    assert naive.method == "dim" and naive.outcome_type == "predicted"
    assert abs(naive.estimate - RHO * 4.0) < 4 * naive.std_error  # slope about rho
    assert naive.estimate + 6 * naive.std_error < 4.0  # clearly attenuated
    for r in (lcc, tw):
        assert abs(r.estimate - 4.0) < 4 * r.std_error
        assert r.ci_low < r.estimate < r.ci_high and r.se_type.startswith("bootstrap")
    assert any("predicted+lcc" in n for n in tab.notes) and any("Tweedie" in n or "tweedie" in n for n in tab.notes)


def test_delta_and_bootstrap_ses_agree():
    d = _world(n=4000, n_cal=500, tau=3.0, seed=2)
    B = 400
    kw = dict(calibration=(d["p_cal"], d["y_cal"]), debiasers=("naive", "lcc"), n_boot=B, seed=3)
    boot = debiased_effects(d["p"], d["w"], se="bootstrap", **kw)
    delta = debiased_effects(d["p"], d["w"], se="if", **kw)
    tol = 3 / np.sqrt(2 * B)  # Monte Carlo error of a bootstrap SD, three times over
    for ot in ("predicted", "predicted+lcc"):
        b, a = _est(boot, ot), _est(delta, ot)
        assert b.estimate == pytest.approx(a.estimate, rel=1e-12)
        assert b.std_error == pytest.approx(a.std_error, rel=tol)
    assert _est(delta, "predicted+lcc").se_type.startswith("delta")
    # calibration uncertainty matters: the LCC SE exceeds naive SE / k
    k = _est(delta, "predicted+lcc").estimate / _est(delta, "predicted").estimate
    assert _est(delta, "predicted+lcc").std_error > _est(delta, "predicted").std_error * k


def test_many_trials_in_one_call_match_single_calls():
    rng = np.random.default_rng(4)
    d = _world(n=3000, seed=4)
    ids = np.array([f"u{i}" for i in range(3000)])
    p = pd.Series(d["p"], index=ids)
    recs = []
    for t in range(4):
        units = rng.choice(3000, 800, replace=False)
        e = np.clip(rng.uniform(0.2, 0.8, 800), 0.05, 0.95)
        recs.append(pd.DataFrame({"trial": f"T{t}", "unit": ids[units], "treated": rng.binomial(1, e),
                                  "propensity": e}))
    trials = pd.concat(recs)
    cal = (d["p_cal"], d["y_cal"])
    tab = debiased_effects(p, trials=trials, calibration=cal, n_boot=50, seed=5)
    assert len(tab) == 4 * 3
    assert {r.method for r in tab} == {"ipw-hajek"} and {r.trial for r in tab} == {"T0", "T1", "T2", "T3"}
    assert all(np.isfinite(r.p_holm) for r in tab)
    sub = trials[trials.trial == "T2"]
    pos = pd.Index(ids).get_indexer(sub.unit)
    one = debiased_effects(d["p"][pos], sub.treated.to_numpy(), propensity_scores=sub.propensity.to_numpy(), calibration=cal,
                           n_boot=50, seed=5)
    for ot in ("predicted", "predicted+lcc", "predicted+tweedie"):
        assert _est(tab, ot, "T2").estimate == pytest.approx(_est(one, ot).estimate, rel=1e-6)
    # a mapping of trials works as well (difference in means)
    tab2 = debiased_effects(p, trials={"a": (ids[:100], ids[100:300])}, calibration=cal, n_boot=50)
    assert {r.method for r in tab2} == {"dim"} and {r.n for r in tab2} == {300}
    # same seed, same table
    again = debiased_effects(p, trials=trials, calibration=cal, n_boot=50, seed=5)
    pd.testing.assert_frame_equal(tab.tidy(), again.tidy())


def test_dataframe_map_with_named_columns():
    d = _world(n=1200, seed=16)
    rng = np.random.default_rng(17)
    gdf = pd.DataFrame({"id": [f"cell{i}" for i in range(1200)], "iwi_pred": d["p"], "adm2": rng.integers(0, 60, 1200),
                        "treated": d["w"], "x1": rng.normal(size=1200), "x2": rng.normal(size=1200)})
    tab = debiased_effects(gdf, "treated", prediction_col="iwi_pred", unit_ids="id", clusters="adm2",
                           calibration=(d["p_cal"], d["y_cal"]), calibration_ids=[f"cal{i}" for i in range(1500)],
                           debiasers=("naive", "lcc"), n_boot=50)
    assert {r.n_clusters for r in tab} == {60} and any("disjoint" in n for n in tab.notes)
    tab = debiased_effects(gdf, "treated", prediction_col="iwi_pred", confounders=["x1", "x2"], methods=["aipw"],
                           propensity_scores=np.full(1200, 0.5), calibration=(d["p_cal"], d["y_cal"]), debiasers=("lcc",), se="if")
    assert tab.rows[0].method == "aipw" and np.isfinite(tab.rows[0].std_error)
    with pytest.raises(InputError, match="not column"):
        debiased_effects(gdf, "treated", prediction_col="iwi_pred", clusters="adm3", calibration=(d["p_cal"], d["y_cal"]))
    with pytest.raises(InputError, match="prediction_col"):
        debiased_effects(gdf, "treated", calibration=(d["p_cal"], d["y_cal"]))


def test_cluster_bootstrap_ppi_observed_and_ht():
    d = _world(n=3000, seed=6)
    rng = np.random.default_rng(7)
    lab = np.where(rng.uniform(size=3000) < 0.2, d["y"], np.nan)
    g = np.arange(3000) // 6
    tab = debiased_effects(d["p"], d["w"], propensity_scores=np.full(3000, 0.5), calibration=(d["p_cal"], d["y_cal"]),
                           labels=lab, clusters=g, methods=["ipw-hajek", "ipw-ht"], n_boot=60, seed=8)
    assert {r.outcome_type for r in tab} == {"predicted", "predicted+lcc", "predicted+tweedie", "ppi"}
    assert all(r.n_clusters == 500 and "clustered" in r.se_type for r in tab)
    ppi = [r for r in tab if r.outcome_type == "ppi"]
    assert all(np.isfinite(r.std_error) and abs(r.estimate - 2.0) < 4 * r.std_error for r in ppi)
    obs = debiased_effects(d["p"], d["w"], calibration=(d["p_cal"], d["y_cal"]), labels=d["y"],
                           debiasers=("observed", "naive"), n_boot=50)
    truth = d["y"][d["w"] == 1].mean() - d["y"][d["w"] == 0].mean()
    assert _est(obs, "observed").estimate == pytest.approx(truth)


def test_aipw_lcc_is_naive_over_k():
    rng = np.random.default_rng(9)
    n = 3000
    x = rng.normal(size=(n, 2))
    e = 1 / (1 + np.exp(-x[:, 0]))
    w = (rng.uniform(size=n) < e).astype(float)
    y = MU + 2 * w + 3 * x[:, 0] + rng.normal(0, SY, n)
    d = _world(seed=10)
    tab = debiased_effects(_predict(y, rng), w, propensity_scores=e, confounders=x, methods=["aipw"],
                           calibration=(d["p_cal"], d["y_cal"]), debiasers=("naive", "lcc"), se="if")
    from eocausal.debias import LinearCalibration

    k = LinearCalibration().fit(d["p_cal"], d["y_cal"]).slope_
    assert _est(tab, "predicted+lcc").estimate == pytest.approx(_est(tab, "predicted").estimate / k, rel=1e-9)
    sub = slice(0, 1000)  # propensities estimated from the confounders (cross-fitted logit)
    boot = debiased_effects(_predict(y[sub], rng), w[sub], confounders=x[sub], methods=["aipw"], propensity="logit",
                            calibration=(d["p_cal"], d["y_cal"]), debiasers=("lcc", Tweedie(density_on="map")),
                            n_boot=50)
    assert all(np.isfinite(r.std_error) and r.adjustment == "tabular" for r in boot)


def test_calibration_overlapping_trials_is_refused_unless_allowed():
    d = _world(n=500, n_cal=200, seed=11)
    ids = np.arange(1000, 1500)
    kw = dict(calibration=(d["p_cal"], d["y_cal"]), unit_ids=ids, n_boot=50)
    overlapping = np.r_[ids[:5], np.arange(5000, 5195)]
    with pytest.raises(InputError, match="5 calibration units are also trial units"):
        debiased_effects(d["p"], d["w"], calibration_ids=overlapping, **kw)
    tab = debiased_effects(d["p"], d["w"], calibration_ids=overlapping, allow_overlap=True, **kw)
    assert any("overlap in 5 units (allowed)" in n for n in tab.notes)
    tab = debiased_effects(d["p"], d["w"], calibration_ids=np.arange(5000, 5200), **kw)
    assert any("disjoint" in n for n in tab.notes)


def test_bad_inputs():
    d = _world(n=500, n_cal=200, seed=12)
    cal = (d["p_cal"], d["y_cal"])
    with pytest.raises(InputError, match="499 values for 500"):
        debiased_effects(d["p"], d["w"][:-1], calibration=cal)
    with pytest.raises(InputError, match="NaN"):
        debiased_effects(np.r_[d["p"][:-1], np.nan], d["w"], calibration=cal)
    with pytest.raises(InputError, match="200 predictions but 199 labels"):
        debiased_effects(d["p"], d["w"], calibration=(d["p_cal"], d["y_cal"][:-1]))
    with pytest.raises(InputError, match="constant"):
        debiased_effects(d["p"], d["w"], calibration=(np.full(200, 40.0), d["y_cal"]))
    with pytest.raises(InputError, match="NaN"):
        debiased_effects(d["p"], d["w"], calibration=(d["p_cal"], np.r_[d["y_cal"][:-1], np.nan]))
    with pytest.raises(InputError, match="treatment= .* or trials="):
        debiased_effects(d["p"], calibration=cal)
    with pytest.raises(InputError, match="propensities"):
        debiased_effects(d["p"], d["w"], calibration=cal, methods=["ipw-hajek"])
    with pytest.raises(InputError, match="strictly inside"):
        debiased_effects(d["p"], d["w"], propensity_scores=np.r_[0.0, np.full(499, 0.5)], calibration=cal)
    with pytest.raises(InputError, match="debiasers"):
        debiased_effects(d["p"], d["w"], calibration=cal, debiasers=("magic",))


def test_warnings_say_what_to_do():
    d = _world(n=500, n_cal=60, seed=13)
    with pytest.warns(DebiasWarning, match="60 labelled units .*add calibration labels"):
        debiased_effects(d["p"], d["w"], calibration=(d["p_cal"], d["y_cal"]), n_boot=50)
    rng = np.random.default_rng(14)
    y = rng.normal(size=300)
    with pytest.warns(DebiasWarning, match=r"slope.*k = 0\.0?9"):
        check_calibration(0.1 * y + rng.normal(0, 0.05, 300), y)
    with pytest.warns(DebiasWarning, match=r"% of the trial predictions lie outside"):
        check_calibration(y, y + rng.normal(0, 0.1, 300), np.r_[y, y + 10])
    facts = check_calibration(d["p_cal"][:50].repeat(3), d["y_cal"][:50].repeat(3), d["p"][:10])  # silent
    assert facts.n == 150 and 0 < facts.slope < 1


def test_compare_debiasers_recommends_a_correction():
    d = _world(n_cal=2000, seed=15)
    cmp = compare_debiasers(d["p_cal"], d["y_cal"], n_pseudo=40, seed=0)
    t = cmp.table.set_index("debiaser")
    assert t.loc["naive", "slope"] == pytest.approx(RHO, abs=0.05)
    assert abs(t.loc["lcc", "slope"] - 1) < 0.05 and abs(t.loc["tweedie", "slope"] - 1) < 0.08
    assert cmp.recommended in ("lcc", "tweedie") and "Recommended" in str(cmp)


def test_observed_rows_are_the_rows_of_estimate():
    """One per-trial core: the 'observed' rows of debiased_effects are estimate()'s rows on the labels,
    with the same folds, propensities, outcome models, SEs and p-value adjustment across trials."""
    rng = np.random.default_rng(21)
    n = 1200
    x = rng.normal(size=(n, 2))
    e = 1 / (1 + np.exp(-0.8 * x[:, 0]))
    w = (rng.uniform(size=n) < e).astype(float)
    y = MU + 2 * w + 3 * x[:, 0] + rng.normal(0, SY, n)
    g = np.arange(n) // 3
    d = _world(seed=22)
    settings = dict(methods=["ipw-hajek", "aipw"], outcome_model="linear", propensity="logit", folds=4, seed=9)
    tab = debiased_effects(_predict(y, rng), w, calibration=(d["p_cal"], d["y_cal"]), labels=y, confounders=x,
                           clusters=g, debiasers=("observed", "naive"), se="if", **settings)
    df = pd.DataFrame({"y": y, "w": w, "x1": x[:, 0], "x2": x[:, 1], "g": g})
    ref = eocausal.estimate(df, treatment="w", outcome="y", confounders=["x1", "x2"], clusters="g", **settings)
    for m in ("ipw-hajek", "aipw"):
        a = ref.row(method=m, adjustment="tabular")
        b = [r for r in tab if r.method == m and r.outcome_type == "observed"][0]
        assert b.estimate == pytest.approx(a.estimate, rel=1e-10)
        assert b.std_error == pytest.approx(a.std_error, rel=1e-10)
        assert (b.folds, b.propensity, b.se_type.split(",")[0]) == (a.folds, a.propensity, a.se_type.split(",")[0])


def test_clustered_if_rows_use_cr1_and_t_intervals():
    """se='if' with clusters: the PPI and LCC-delta rows take the CR1 factor and t(G - 1), as estimate()'s rows."""
    from scipy import stats

    from eocausal.debias.ppi import ppi_effect

    d = _world(n=600, seed=31)
    rng = np.random.default_rng(32)
    lab = np.where(rng.uniform(size=600) < 0.3, d["y"], np.nan)
    g = np.arange(600) // 30  # 20 clusters
    G = 20
    tab = debiased_effects(d["p"], d["w"], calibration=(d["p_cal"], d["y_cal"]), labels=lab, clusters=g,
                           debiasers=("naive", "lcc", "ppi"), se="if", methods=["dim"], seed=3)
    crit = stats.t.ppf(0.975, G - 1)
    for r in tab:
        assert (r.ci_high - r.ci_low) / 2 == pytest.approx(crit * r.std_error, rel=1e-10), r.outcome_type
        assert r.p_value == pytest.approx(2 * stats.t.sf(abs(r.estimate / r.std_error), G - 1), rel=1e-8)
    ppi = next(r for r in tab if r.outcome_type == "ppi")
    _, s0, _ = ppi_effect(d["p"], lab, d["w"], method="dim", lam=1.0, clusters=g)
    # the PPI SE is the CR0 SE of its influence function (lam = 1, the default) times sqrt(G/(G-1))
    assert ppi.std_error == pytest.approx(s0 * np.sqrt(G / (G - 1)), rel=1e-10) and "CR1" in ppi.se_type
    assert any("CR1" in n and "G - 1" in n for n in tab.notes)
