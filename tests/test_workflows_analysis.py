"""Issue 14, the estimation side of a user's workflow: each test runs the call a user ran.

Shared images without clusters, NaN cluster labels, one alignment rule for per-unit inputs,
few clusters, a constant outcome, row order, units dropped by the embedding step, and notes
that agree with the rows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import eocausal
from eocausal.data.folds import grouped_folds
from eocausal.errors import DataQualityWarning, FewClustersWarning, InputError

CONF = ["x1", "x2"]


def _villages(n_villages=150, per=4, seed=0, d=3):
    """Units sharing one image per village: the image embedding confounds treatment and outcome."""
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n_villages, d))
    v = np.repeat(np.arange(n_villages), per)
    x1 = rng.normal(size=len(v))
    e = expit(0.8 * img[v, 0] + 0.4 * x1)
    w = (rng.uniform(size=len(v)) < e).astype(int)
    y = 1.0 * w + img[v, 0] + 0.5 * x1 + rng.normal(0, 1, n_villages)[v] + rng.normal(size=len(v))
    df = pd.DataFrame({"Y": y, "W": w, "x1": x1, "x2": rng.normal(size=len(v)), "village": v})
    Z = img[v]
    return df, Z


def test_formula_api_clusters_units_that_share_an_image():
    df, Z = _villages()
    t = eocausal.estimate("Y ~ W | x1", df, embeddings=Z, methods=["ipw-hajek"], adjustments=["image"])
    r = t.row(method="ipw-hajek", adjustment="image")
    assert r.n_clusters == 150 and "clustered by shared embedding" in r.se_type
    assert any("share embeddings (150 distinct embeddings for 600 units" in n for n in t.notes)
    # the clusters are the villages: the row's SE is the village-clustered SE of its influence function,
    # and no fold splits a village
    from eocausal.estimators.weighting import se_from_psi

    fit = t.propensities["image"]
    se0, G = se_from_psi(fit.psi["ipw-hajek"], df["village"].to_numpy())
    assert r.std_error == pytest.approx(se0 * np.sqrt(G / (G - 1)), rel=1e-12)
    assert (pd.Series(fit.fold_ids).groupby(df["village"].to_numpy()).nunique() == 1).all()
    iid = eocausal.estimate("Y ~ W | x1", df, embeddings=Z + np.random.default_rng(1).normal(0, 1e-9, Z.shape),
                            methods=["ipw-hajek"], adjustments=["image"])
    assert iid.rows[0].n_clusters is None  # distinct embeddings: no clustering is invented


@pytest.mark.parametrize("how", ["column", "array"])
def test_nan_cluster_labels_are_refused_with_the_rows(how):
    df, _ = _villages(seed=2)
    df["village"] = df["village"].astype(float)
    df.loc[[3, 17], "village"] = np.nan
    clusters = "village" if how == "column" else df["village"].to_numpy()
    with pytest.raises(InputError, match=r"missing .*\[3, 17\]"):
        eocausal.estimate(df, treatment="W", outcome="Y", confounders=CONF, clusters=clusters)


def test_pandas_inputs_align_on_unit_ids_and_arrays_by_position():
    df, _ = _villages(seed=3)
    df.index = pd.Index(np.arange(len(df)) * 10 + 7, name="uid")
    e = pd.Series(expit(0.4 * df["x1"].to_numpy()), index=df.index)
    kw = dict(treatment="W", outcome="Y", methods=["ipw-hajek"], adjustments=[])
    aligned = eocausal.estimate(df, propensity_scores=e, **kw).rows[0]
    reversed_ = eocausal.estimate(df, propensity_scores=e.iloc[::-1], **kw).rows[0]
    positional = eocausal.estimate(df, propensity_scores=e.to_numpy(), **kw).rows[0]
    assert reversed_.estimate == pytest.approx(aligned.estimate, rel=1e-12)
    assert positional.estimate == pytest.approx(aligned.estimate, rel=1e-12)
    wrong = eocausal.estimate(df, propensity_scores=e.to_numpy()[::-1], **kw).rows[0]
    assert wrong.estimate != pytest.approx(aligned.estimate, rel=1e-3)  # position means position
    with pytest.raises(InputError, match="exactly the unit ids"):
        eocausal.estimate(df, propensity_scores=e.iloc[:-1], **kw)
    with pytest.raises(InputError, match="default RangeIndex"):
        eocausal.estimate(df, propensity_scores=e.reset_index(drop=True), **kw)
    with pytest.raises(InputError, match="600 units"):
        eocausal.estimate(df, propensity_scores=e.to_numpy()[:-1], **kw)
    # the same rule for embeddings and clusters
    Z = pd.DataFrame(np.random.default_rng(0).normal(size=(len(df), 2)), index=df.index)
    a = eocausal.estimate(df, treatment="W", outcome="Y", embeddings=Z, methods=["ipw-hajek"]).rows[0]
    b = eocausal.estimate(df, treatment="W", outcome="Y", embeddings=Z.sample(frac=1, random_state=0),
                          methods=["ipw-hajek"]).rows[0]
    assert a.estimate == pytest.approx(b.estimate, rel=1e-10)
    with pytest.raises(InputError, match="default RangeIndex"):
        eocausal.estimate(df, treatment="W", outcome="Y", embeddings=Z.reset_index(drop=True))
    with pytest.raises(InputError, match="holds str ids but the units' ids are int64"):
        eocausal.estimate(df, treatment="W", outcome="Y", embeddings=Z.set_axis(Z.index.astype(str)))


def test_few_clusters_warn_with_the_counts():
    df, _ = _villages(n_villages=12, per=30, seed=4)
    with pytest.warns(FewClustersWarning, match=r"12 clusters .*Cameron, Gelbach and Miller"):
        eocausal.estimate(df, treatment="W", outcome="Y", confounders=CONF, clusters="village",
                          methods=["dim", "ipw-hajek"], folds=3)
    many, _ = _villages(n_villages=150, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewClustersWarning)
        eocausal.estimate(many, treatment="W", outcome="Y", confounders=CONF, clusters="village",
                          methods=["dim", "ipw-hajek"])


def test_constant_outcome_is_not_estimable_not_p_zero():
    df, _ = _villages(seed=5)
    df["t0"] = df["W"]
    df["t1"] = np.where(np.arange(len(df)) % 2, df["W"], np.nan)
    const = df.assign(Y=4.0)
    t = eocausal.estimate(const, treatment="W", outcome="Y", confounders=CONF, methods=["dim", "ipw-hajek"])
    assert all(np.isnan(r.estimate) and np.isnan(r.p_value) and "constant" in r.note for r in t.rows)
    multi = eocausal.estimate(const, outcome="Y", confounders=CONF, trials=["t0", "t1"], methods=["dim"]).tidy()
    assert multi["p_value"].isna().all() and multi["p_holm"].isna().all() and multi["p_bh"].isna().all()


def test_results_do_not_depend_on_row_order():
    df, _ = _villages(seed=6)
    df.index = pd.Index([f"u{i:04d}" for i in range(len(df))], name="uid")
    kw = dict(treatment="W", outcome="Y", confounders=CONF, methods=["ipw-hajek", "aipw"], seed=11)
    a = eocausal.estimate(df, **kw).tidy().set_index(["method", "adjustment"])
    b = eocausal.estimate(df.sample(frac=1, random_state=3), **kw).tidy().set_index(["method", "adjustment"])
    np.testing.assert_allclose(b.loc[a.index, "estimate"], a["estimate"], rtol=1e-9)
    np.testing.assert_allclose(b.loc[a.index, "std_error"], a["std_error"], rtol=1e-9)
    # the folds themselves are a function of the ids and the seed
    codes = np.unique(df.index, return_inverse=True)[1]
    perm = np.random.default_rng(0).permutation(len(df))
    f1 = grouped_folds(len(df), codes, 5, 11)
    f2 = grouped_folds(len(df), codes[perm], 5, 11)
    assert np.array_equal(f1[perm], f2)


def test_units_dropped_by_the_embedding_step_leave_the_study_with_a_note():
    df, Z = _villages(seed=7)
    units = eocausal.Units.from_frame(df, treatment="W", outcome="Y", covariates=CONF, clusters="village")
    frame = pd.DataFrame(Z, index=units.ids)
    gone = units.ids[:8]
    kept = frame.drop(index=gone)
    kept.attrs["dropped_ids"] = list(gone)
    with pytest.warns(DataQualityWarning, match="8 of 600 units left the study"):
        t = eocausal.estimate(units, embeddings=kept, methods=["dim", "ipw-hajek"])
    assert {r.n for r in t.rows} == {592} and t.design["n_dropped"] == 8
    assert any("8 of 600 units left the study" in n for n in t.notes)
    not_listed = frame.drop(index=gone)  # missing without the embedding step's word: an error
    with pytest.raises(InputError, match="no entry for"):
        eocausal.estimate(units, embeddings=not_listed)


def test_nan_clusters_are_refused_by_rate_cate_and_debiased_effects():
    from eocausal.diagnostics import rate

    rng = np.random.default_rng(8)
    n = 400
    g = (np.arange(n) // 4).astype(float)
    g[[5, 9]] = np.nan
    with pytest.raises(InputError, match=r"missing cluster labels in rows \[5, 9\]"):
        rate(rng.normal(size=n), rng.normal(size=n), clusters=g)
    with pytest.raises(InputError, match=r"missing cluster labels in rows \[5, 9\]"):
        eocausal.cate(rng.normal(size=n), rng.integers(0, 2, n), rng.normal(size=(n, 2)), clusters=g,
                      learner="t")
    p = rng.normal(40, 5, n)
    with pytest.raises(InputError, match=r"missing cluster labels in rows \[5, 9\]"):
        eocausal.debiased_effects(p, rng.integers(0, 2, n), clusters=g,
                                  calibration=(rng.normal(40, 5, 200), rng.normal(40, 5, 200)))


def test_rate_and_calibration_pairs_align_pandas_inputs_on_their_index():
    from eocausal.debias import LinearCalibration
    from eocausal.debias.calibration import check_pair
    from eocausal.diagnostics import rate

    rng = np.random.default_rng(9)
    n = 600
    ids = pd.Index([f"v{i}" for i in range(n)])
    tau = rng.normal(size=n)
    scores = pd.Series(tau + rng.normal(0, 0.5, n), index=ids)
    priority = pd.Series(tau, index=ids)
    aligned = rate(priority, scores, n_boot=0).estimate
    assert rate(priority.iloc[::-1], scores, n_boot=0).estimate == pytest.approx(aligned, rel=1e-12)
    assert aligned > 0.5  # the priority ranks the effects: a reversed, position-matched one would not
    with pytest.raises(InputError, match="pandas inputs with an index and plain arrays"):
        rate(priority.iloc[::-1], scores.to_numpy())
    y = rng.normal(50, 10, 300)
    p = pd.Series(40 + 0.5 * (y - 50) + rng.normal(0, 2, 300), index=[f"c{i}" for i in range(300)])
    y = pd.Series(y, index=p.index)
    a = LinearCalibration().fit(*check_pair(p, y))
    b = LinearCalibration().fit(*check_pair(p.sample(frac=1, random_state=1), y))
    assert b.slope_ == pytest.approx(a.slope_, rel=1e-12) and a.slope_ == pytest.approx(0.5, abs=0.1)
    with pytest.raises(InputError, match="other labels"):
        check_pair(p, y.set_axis([f"d{i}" for i in range(300)]))
