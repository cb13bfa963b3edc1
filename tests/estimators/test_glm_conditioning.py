"""Newton systems whose diagonal spans many orders of magnitude (a penalty on a nearly constant
embedding column) are solved, not truncated: the coverage study's 64-PC cells once got a constant
propensity from the native solver (the least-squares fallback dropped every data direction), while
scikit-learn fitted the confounding."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from eocausal.estimators.glm import solve_spd
from eocausal.estimators.learners import BlockStandardizer
from eocausal.estimators.propensity import fit_propensity


def _design(seed=0, n=900, d=12):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    Z = rng.normal(size=(n, d)) * np.r_[2.0, 0.5, 0.3, np.full(d - 5, 0.1), 1e-7, 1e-8]  # two columns ~constant
    w = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X[:, 0] + Z[:, 0])))).astype(float)
    return np.hstack([X, Z]), w


def test_native_ridge_logit_with_near_constant_columns_equals_sklearn():
    V, w = _design()
    C = 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error", linalg.LinAlgWarning)  # no ill-conditioned solve reaches the user
        e = fit_propensity(V, w, propensity=make_pipeline(BlockStandardizer(2), LogisticRegression(C=C)),
                           n_tabular=2)
    ref = make_pipeline(BlockStandardizer(2), LogisticRegression(C=C, tol=1e-12, max_iter=10_000)).fit(V, w)
    np.testing.assert_allclose(e, ref.predict_proba(V)[:, 1], atol=1e-6)
    assert e.std() > 0.1  # the confounding is fitted, not a constant


def test_solve_spd_handles_a_diagonal_spanning_17_orders():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(6, 6))
    H = B @ B.T + 6 * np.eye(6)
    H[5, 5] += 1e17  # a huge penalty on one coordinate
    x = rng.normal(size=6)
    g = H @ x
    np.testing.assert_allclose(solve_spd(H, g), x, rtol=1e-8, atol=1e-12)
