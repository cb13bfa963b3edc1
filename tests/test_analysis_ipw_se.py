"""eocausal.estimate: the IPW standard error choice (ipw_se), native solvers and shared embedding PCs.

What is checked, and why:

- ``ipw_se='auto'`` corrects the IPW influence function for a cross-fitted logistic propensity
  with a fixed penalty only when there are at least ``CORRECTION_CLUSTERS_PER_COEF`` clusters per
  propensity coefficient (with more coefficients the projection on the score overfits and the SE is too
  small). Few confounders and many clusters must give 'IF (logit-corrected)'; an embedding with
  too many dimensions for the clusters must give 'IF (known e)'; 'corrected' and 'known-e'
  force either; other values are refused. On data where the confounders drive the outcome the
  corrected Hajek SE is smaller than the known-e one (Lunceford and Davidian 2004), so the
  correction visibly acts. AIPW rows do not depend on ``ipw_se``.
- The influence function kept in ``table.propensities[adj].psi`` is the one behind each row's
  SE, so re-clustering it (``se_from_psi``) reproduces the SE to rounding (1e-12 relative).
- ``solver="native"`` (eocausal's solvers) and ``solver="sklearn"`` (scikit-learn's fits per fold) fit
  the same models; with a Newton-Cholesky learner at ``tol=1e-12`` the propensities agree to
  ~1e-8, so the estimates agree to a tiny fraction (1e-3) of their SE.
- With several trials the embedding PCA is computed once per call, so the embedding PC rows
  of every trial's balance table report the same share of variance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import eocausal
from eocausal.analysis import CORRECTION_CLUSTERS_PER_COEF
from eocausal.errors import InputError
from eocausal.estimators.weighting import se_from_psi

N, N_CLUSTERS, D = 1200, 300, 20
CONF = ["x1", "x2", "x3"]


def _frame(n=N, n_clusters=N_CLUSTERS, d=D, seed=0):
    """Three confounders driving treatment (moderately) and outcome (strongly), clusters, an embedding."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    e = 1 / (1 + np.exp(-(0.7 * X[:, 0] - 0.5 * X[:, 1] + 0.3 * X[:, 2])))
    w = (rng.uniform(size=n) < e).astype(int)
    y = 1.0 * w + X @ np.array([2.0, 1.5, -1.0]) + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "w": w, **{c: X[:, j] for j, c in enumerate(CONF)},
                       "village": rng.permutation(np.arange(n) % n_clusters)})
    Z = np.column_stack([X[:, :2] + rng.normal(0, 0.5, (n, 2)), rng.normal(size=(n, d - 2))])
    return df, Z


@pytest.fixture(scope="module")
def frame():
    return _frame()


def _est(df, Z=None, **kw):
    # the clusters-per-coefficient rule is about cross-fitted propensities with a fixed penalty (in-sample
    # fits are always corrected; a CV-tuned ridge penalty cross-fitted keeps the known-e IF)
    kw = {"treatment": "w", "outcome": "y", "confounders": CONF, "clusters": "village", "crossfit": True,
          "propensity": make_pipeline(StandardScaler(), LogisticRegression(C=1.0)), **kw}
    return eocausal.estimate(df, embeddings=Z, **kw)


@pytest.fixture(scope="module")
def tables(frame):
    df, Z = frame
    return {mode: _est(df, Z, ipw_se=mode, adjustments=["tabular", "image"])
            for mode in ("auto", "corrected", "known-e")}


def test_design_sits_on_both_sides_of_the_threshold():
    # tabular: 3 slopes + intercept; image: D slopes + intercept
    assert N_CLUSTERS >= CORRECTION_CLUSTERS_PER_COEF * (len(CONF) + 1)
    assert N_CLUSTERS < CORRECTION_CLUSTERS_PER_COEF * (D + 1)


def test_auto_corrects_only_with_enough_clusters_per_coefficient(tables):
    t = tables["auto"]
    for m in ("ipw-ht", "ipw-hajek"):
        assert "IF (logit-corrected)" in t.row(method=m, adjustment="tabular").se_type
        assert "IF (known e: fewer than 50 clusters per propensity coefficient)" in t.row(method=m, adjustment="image").se_type
    assert any("logit-corrected" in note for note in t.notes)
    assert any("clusters per propensity coefficient" in note for note in t.notes)


@pytest.mark.parametrize("mode, label", [("corrected", "IF (logit-corrected)"), ("known-e", "IF (known e: ipw_se='known-e')")])
def test_forced_modes(tables, mode, label):
    t = tables[mode]
    for adj in ("tabular", "image"):
        for m in ("ipw-ht", "ipw-hajek"):
            assert label in t.row(method=m, adjustment=adj).se_type
    # the estimates themselves do not depend on the SE choice
    for r_auto, r in zip(tables["auto"].rows, t.rows):
        assert (r.method, r.adjustment) == (r_auto.method, r_auto.adjustment)
        assert r.estimate == r_auto.estimate


def test_bad_ipw_se_is_refused(frame):
    df, _ = frame
    with pytest.raises(InputError, match="ipw_se"):
        _est(df, ipw_se="sandwich")


def test_corrected_hajek_se_is_smaller_when_confounders_drive_the_outcome(tables):
    for adj in ("tabular", "image"):
        corr = tables["corrected"].row(method="ipw-hajek", adjustment=adj)
        known = tables["known-e"].row(method="ipw-hajek", adjustment=adj)
        assert corr.std_error < known.std_error
    # on the tabular set (what 'auto' corrects) the difference is large, not rounding
    corr = tables["auto"].row(method="ipw-hajek", adjustment="tabular")
    known = tables["known-e"].row(method="ipw-hajek", adjustment="tabular")
    assert corr.std_error < 0.8 * known.std_error


def test_aipw_rows_do_not_depend_on_ipw_se(tables):
    for adj in ("tabular", "image"):
        ref = tables["auto"].row(method="aipw", adjustment=adj)
        for mode in ("corrected", "known-e"):
            r = tables[mode].row(method="aipw", adjustment=adj)
            assert (r.estimate, r.std_error, r.se_type) == (ref.estimate, ref.std_error, ref.se_type)


@pytest.mark.parametrize("mode", ["auto", "known-e"])
def test_kept_psi_reproduces_the_row_se(frame, tables, mode):
    df, _ = frame
    codes = pd.factorize(df["village"], sort=True)[0]
    t = tables[mode]
    for adj in ("tabular", "image"):
        fit = t.propensities[adj]
        for m in ("ipw-ht", "ipw-hajek", "aipw"):
            se, G = se_from_psi(fit.psi[m], codes)
            assert G == N_CLUSTERS
            se *= np.sqrt(G / (G - 1))  # CR1
            assert se == pytest.approx(t.row(method=m, adjustment=adj).std_error, rel=1e-12, abs=0)


def test_native_and_sklearn_fits_agree(frame):
    df, _ = frame
    kw = dict(methods=["ipw-hajek", "aipw"], outcome_model=LinearRegression(),
              propensity=make_pipeline(StandardScaler(),
                                       LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-12)))
    a = _est(df, solver="native", **kw)
    b = _est(df, solver="sklearn", **kw)
    assert np.max(np.abs(a.propensities["tabular"].e_raw - b.propensities["tabular"].e_raw)) < 1e-8
    for ra, rb in zip(a.rows, b.rows):
        assert (ra.method, ra.adjustment, ra.se_type) == (rb.method, rb.adjustment, rb.se_type)
        assert abs(ra.estimate - rb.estimate) < 1e-3 * ra.std_error
        assert ra.std_error == pytest.approx(rb.std_error, rel=1e-3)
    # a fixed-C logistic after a scaler is a recognised logistic model: its IPW SE is corrected
    assert "logit-corrected" in a.row(method="ipw-hajek", adjustment="tabular").se_type


def test_trials_share_one_embedding_pca(frame):
    df, Z = frame
    rng = np.random.default_rng(5)
    df = df.copy()
    for j in range(3):
        t = df["w"].astype(float).where(rng.uniform(size=N) < 0.6)  # each trial: a random 60% of units
        df[f"t{j}"] = t
    t = eocausal.estimate(df, outcome="y", confounders=CONF, clusters="village", embeddings=Z,
                          trials=["t0", "t1", "t2"], methods=["ipw-hajek"], adjustments=["tabular", "image"])
    shares = []
    for trial in ("t0", "t1", "t2"):
        for adj in ("tabular", "image"):
            b = t.balance[f"{trial}: {adj}"]
            pcs = [f"PC{k}" for k in range(1, 6)]
            assert set(pcs) <= set(b.index)
            shares.append(b.loc[pcs, "share_of_variance"].to_numpy(dtype=float))
    assert np.all(np.isfinite(shares[0])) and np.all(np.diff(shares[0]) <= 0)
    for s in shares[1:]:
        np.testing.assert_array_equal(s, shares[0])


def test_sklearn_path_corrects_with_the_fitted_penalties(frame):
    """solver="sklearn" with the default ridge-logit: the per-fold C_ of LogisticRegressionCV enter the
    correction (the SE was NaN when they were not passed on), and it matches the native path."""
    df, _ = frame
    kw = dict(methods=["ipw-hajek"], adjustments=["tabular"], propensity="ridge-logit", ipw_se="corrected")
    sk = _est(df, solver="sklearn", **kw).tidy().iloc[0]
    nat = _est(df, solver="native", **kw).tidy().iloc[0]
    assert "logit-corrected" in sk["se_type"] and "logit-corrected" in nat["se_type"]
    assert np.isfinite(sk["std_error"]) and sk["std_error"] > 0
    # the two fits solve the same penalised models (L-BFGS at tol 1e-4 vs Newton): close, not equal
    assert sk["estimate"] == pytest.approx(nat["estimate"], abs=0.02 * nat["std_error"])
    assert sk["std_error"] == pytest.approx(nat["std_error"], rel=0.02)
