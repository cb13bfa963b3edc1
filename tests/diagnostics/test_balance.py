"""Balance table: formulas against numpy and a hand example; the BalanceWarning fires and stays silent."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.decomposition import PCA

from eocausal.diagnostics.balance import BALANCE_COLUMNS, balance_table
from eocausal.errors import BalanceWarning, InputError


def _data(n=500, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"age": rng.normal(40, 10, n), "rain": rng.gamma(2.0, 1.0, n),
                      "road": rng.uniform(size=n) < 0.4})
    e = expit(-0.5 + 0.05 * (X["age"] - 40) + 0.4 * X["rain"] - 0.8 * X["road"])
    w = (rng.uniform(size=n) < e).astype(float)
    return X, w, e.to_numpy()


def _ipw(w, e):
    return np.where(w == 1, 1 / e, 1 / (1 - e))


def test_hand_example():
    X = np.array([[1.0], [2.0], [3.0], [2.0], [4.0]])
    w = np.array([1, 1, 1, 0, 0])
    v = np.array([1, 1, 2, 1, 3])
    with pytest.warns(BalanceWarning):
        t = balance_table(X, w, v, names=["x"])
    r = t.loc["x"]
    # treated 1,2,3 (mean 2, var 1); control 2,4 (mean 3, var 2); pooled SD sqrt(1.5)
    assert r["mean_treated"] == 2.0 and r["mean_control"] == 3.0
    assert r["smd_before"] == pytest.approx(-1 / np.sqrt(1.5), rel=1e-12)
    # weighted means 9/4 and 14/4; same denominator
    assert r["mean_treated_weighted"] == pytest.approx(2.25) and r["mean_control_weighted"] == pytest.approx(3.5)
    assert r["smd_after"] == pytest.approx(-1.25 / np.sqrt(1.5), rel=1e-12)
    # weighted variances: 2.75 * 4 / (16 - 6) = 1.1 and 3 * 4 / (16 - 10) = 2
    assert r["var_ratio_before"] == pytest.approx(0.5, rel=1e-12)
    assert r["var_ratio_after"] == pytest.approx(1.1 / 2.0, rel=1e-12)
    assert bool(r["imbalanced"])


def test_matches_numpy_computations():
    X, w, e = _data()
    v = _ipw(w, e)
    with pytest.warns(BalanceWarning):  # a logistic propensity leaves some imbalance in n = 500
        t = balance_table(X, w, v, threshold=1e-6)
    assert list(t.columns) == list(BALANCE_COLUMNS)
    assert list(t.index) == ["age", "rain", "road"]
    M = X.to_numpy(dtype=float)
    for j, name in enumerate(X.columns):
        x1, x0, v1, v0 = M[w == 1, j], M[w == 0, j], v[w == 1], v[w == 0]
        pooled = np.sqrt((np.var(x1, ddof=1) + np.var(x0, ddof=1)) / 2)
        m1, m0 = np.average(x1, weights=v1), np.average(x0, weights=v0)
        # np.cov with aweights is the reliability-weighted variance
        s1, s0 = np.cov(x1, aweights=v1), np.cov(x0, aweights=v0)
        r = t.loc[name]
        assert r["smd_before"] == pytest.approx((x1.mean() - x0.mean()) / pooled, rel=1e-10)
        assert r["smd_after"] == pytest.approx((m1 - m0) / pooled, rel=1e-10)
        assert r["var_ratio_before"] == pytest.approx(np.var(x1, ddof=1) / np.var(x0, ddof=1), rel=1e-10)
        assert r["var_ratio_after"] == pytest.approx(s1 / s0, rel=1e-10)
    assert t.attrs["ess_treated"] == pytest.approx(v[w == 1].sum() ** 2 / np.sum(v[w == 1] ** 2), rel=1e-12)
    assert t.attrs["n_treated"] == int(w.sum()) and t.attrs["weighted"]
    # weighting with the true propensity shrinks the imbalance of every covariate
    assert (t["smd_after"].abs() < t["smd_before"].abs()).all()


def test_weights_scale_free_and_unweighted_table():
    X, w, e = _data(seed=1)
    v = _ipw(w, e)
    stabilised = np.where(w == 1, w.mean() * v, (1 - w.mean()) * v)
    a = balance_table(X, w, v, warn=False)
    b = balance_table(X, w, stabilised, warn=False)
    pd.testing.assert_frame_equal(a, b, rtol=1e-10)
    plain = balance_table(X, w)  # no weights: "after" is undefined, nothing flagged, no warning
    assert plain["smd_after"].isna().all() and not plain["imbalanced"].any()
    assert plain.attrs["ess_control"] == (w == 0).sum()


def test_embedding_components_and_coordinates():
    X, w, e = _data(seed=2)
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(len(w), 12)) + np.outer(w, rng.normal(size=12))  # imbalanced image features
    lonlat = np.column_stack([rng.uniform(30, 31, len(w)) + 0.2 * w, rng.uniform(0, 1, len(w))])
    with pytest.warns(BalanceWarning):
        t = balance_table(X, w, _ipw(w, e), embeddings=Z, n_components=3, coords=lonlat)
    assert list(t.index) == ["age", "rain", "road", "PC1", "PC2", "PC3", "longitude", "latitude"]
    assert list(t["kind"]) == ["covariate"] * 3 + ["embedding PC"] * 3 + ["coordinate"] * 2
    pca = PCA(n_components=3, svd_solver="full").fit(Z)
    np.testing.assert_allclose(t.loc[["PC1", "PC2", "PC3"], "share_of_variance"], pca.explained_variance_ratio_,
                               rtol=1e-12)
    assert t.loc[["age", "longitude"], "share_of_variance"].isna().all()
    P = pca.transform(Z)
    pooled = np.sqrt((np.var(P[w == 1, 0], ddof=1) + np.var(P[w == 0, 0], ddof=1)) / 2)
    assert t.at["PC1", "smd_before"] == pytest.approx((P[w == 1, 0].mean() - P[w == 0, 0].mean()) / pooled, rel=1e-10)
    # the treatment shifts the embeddings and longitude, and the tabular propensity does not fix that
    assert abs(t.at["PC1", "smd_after"]) > 0.5 and bool(t.at["PC1", "imbalanced"])
    assert abs(t.at["longitude", "smd_after"]) > 0.3 and bool(t.at["longitude", "imbalanced"])


def test_warning_names_the_worst_rows_and_points_at_the_caller():
    X, w, e = _data(seed=3)
    X = X.assign(bad=X["age"] + 30 * w)  # weighting on e cannot balance a post-treatment column
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t = balance_table(X, w, _ipw(w, e))
    hits = [r for r in rec if issubclass(r.category, BalanceWarning)]
    assert len(hits) == 1
    msg = str(hits[0].message)
    assert hits[0].filename == __file__
    assert f"bad {t.at['bad', 'smd_after']:+.3f}" in msg
    assert "of 4 balance rows" in msg and "> 0.1" in msg
    assert "interactions" in msg and "AIPW" in msg and "Austin (2009)" in msg


def test_warning_silent_when_weights_balance_exactly():
    # strata indicators are balanced exactly by weights 1/e with the empirical stratum propensity
    rng = np.random.default_rng(4)
    s = rng.integers(0, 3, 600)
    w = (rng.uniform(size=600) < np.array([0.2, 0.5, 0.7])[s]).astype(float)
    e_hat = pd.Series(w).groupby(s).transform("mean").to_numpy()
    X = pd.get_dummies(pd.Series(s, name="s").astype(str), prefix="s").astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        t = balance_table(X, w, _ipw(w, e_hat))
    assert t["smd_after"].abs().max() < 1e-12
    assert t["smd_before"].abs().max() > 0.2  # there was imbalance to remove
    assert t.attrs["n_imbalanced"] == 0


def test_constant_column_is_nan_not_flagged():
    X, w, e = _data(seed=5)
    t = balance_table(X.assign(const=1.0), w, _ipw(w, e), threshold=10.0)
    assert np.isnan(t.at["const", "smd_after"]) and np.isnan(t.at["const", "var_ratio_after"])
    assert not t.at["const", "imbalanced"]


def test_bad_inputs():
    X, w, e = _data(seed=6)
    v = _ipw(w, e)
    with pytest.raises(InputError, match="missing or non-finite"):
        balance_table(X.assign(age=np.where(np.arange(len(w)) == 3, np.nan, X["age"])), w, v)
    with pytest.raises(InputError, match="0/1"):
        balance_table(X, w * 2, v)
    with pytest.raises(InputError, match="non-negative"):
        balance_table(X, w, -v)
    with pytest.raises(InputError, match="duplicate row names"):
        balance_table(X.rename(columns={"age": "PC1"}), w, v, embeddings=np.random.default_rng(0).normal(size=(len(w), 3)))
    with pytest.raises(InputError, match="constant"):
        balance_table(X, w, v, embeddings=np.ones((len(w), 3)))
    with pytest.raises(InputError, match="2 columns"):
        balance_table(X, w, v, coords=np.zeros((len(w), 3)))
    with pytest.raises(InputError, match="not numeric"):
        balance_table(X.assign(region="north"), w, v)
