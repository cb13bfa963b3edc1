"""cate(learner='dr_boost'): the large-n DR-learner (eocausal.estimators.dr_boost).

What is checked:

- honesty: fold k's CATEs do not depend on fold k's outcomes (perturbing them leaves those
  predictions unchanged to rounding and changes the others), which RATE and the calibration test
  require; with nuisances fitted on all folds this fails (checked against that variant);
- the scores are the AIPW scores of the native cross-fitted nuisances on the same folds;
- accuracy on a design with a known CATE (correlation with the truth, the AIPW ATE within 3 SE of
  the truth, a RATE that detects the heterogeneity);
- known propensities are used as given; clusters reach the evaluation;
- transport (predict), its errors, and bad options.
"""

from __future__ import annotations

import numpy as np
import pytest

import eocausal
from eocausal.errors import InputError, NotFittedError
from eocausal.estimators import dr_boost
from eocausal.estimators.aipw import crossfit_outcome


def _design(n=3000, d=16, seed=0, heterogeneous=True):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, d))
    X = rng.standard_normal((n, 3))
    tau = 1.0 + (0.8 * np.tanh(Z[:, 0] + Z[:, 1]) + 0.5 * X[:, 0] if heterogeneous else 0.0)
    e = 1 / (1 + np.exp(-(0.5 * Z[:, 2] + 0.3 * X[:, 1])))
    w = (rng.uniform(size=n) < e).astype(int)
    y = Z[:, :4].sum(1) + X[:, :2].sum(1) + w * tau + rng.standard_normal(n)
    return y, w, X, Z, np.broadcast_to(tau, (n,)).astype(float), e


def test_fold_predictions_do_not_depend_on_their_own_outcomes():
    y, w, X, Z, _, e = _design(n=1500)
    base = eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", propensity_scores=e, fit_final=False)
    k = base.fold_ids[0]
    y2 = y.copy()
    fold = base.fold_ids == k
    y2[fold] += np.random.default_rng(5).normal(scale=3.0, size=fold.sum())
    moved = eocausal.cate(y2, w, X=X, embeddings=Z, learner="dr_boost", propensity_scores=e, fit_final=False)
    np.testing.assert_array_equal(moved.fold_ids, base.fold_ids)
    np.testing.assert_allclose(moved.tau_hat[fold], base.tau_hat[fold], rtol=0, atol=1e-10)
    assert np.max(np.abs(moved.tau_hat[~fold] - base.tau_hat[~fold])) > 1e-3  # the others did move


def test_without_nesting_the_fold_predictions_would_see_their_outcomes():
    """The check above has power: with the nuisances of the cross-fit on all folds (no nesting),
    the final model of fold k is trained on pseudo-outcomes whose outcome models saw fold k."""
    y, w, X, Z, _, e = _design(n=1500)
    F = np.hstack([X, Z])
    folds = eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", propensity_scores=e,
                          fit_final=False).fold_ids
    fold = folds == folds[0]

    def leaky(y_):
        mu0, mu1 = crossfit_outcome(F, y_, w, folds, "ridge", n_tabular=3)
        gamma = mu1 - mu0 + w * (y_ - mu1) / e - (1 - w) * (y_ - mu0) / (1 - e)
        model = dr_boost._final_model(int((~fold).sum()), 0, {}).fit(F[~fold], gamma[~fold])
        return model.predict(F[fold])

    y2 = y.copy()
    y2[fold] += np.random.default_rng(5).normal(scale=3.0, size=fold.sum())
    assert np.max(np.abs(leaky(y) - leaky(y2))) > 1e-3


def test_scores_are_the_aipw_scores_of_the_cross_fitted_nuisances():
    y, w, X, Z, _, _ = _design(n=1200)
    res = eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", fit_final=False)
    F = np.hstack([X, Z])
    mu0, mu1 = crossfit_outcome(F, y, w, res.fold_ids, "ridge", n_tabular=3)
    np.testing.assert_allclose(res.mu0, mu0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.mu1, mu1, rtol=0, atol=1e-10)
    e = res.propensity_scores
    expect = mu1 - mu0 + w * (y - mu1) / e - (1 - w) * (y - mu0) / (1 - e)
    np.testing.assert_allclose(res.scores, expect, rtol=1e-12, atol=1e-12)
    assert res.propensity_source == "logit" and not res.propensity_known
    assert np.all((e >= 1e-3) & (e <= 1 - 1e-3))


def test_recovers_a_known_cate():
    y, w, X, Z, tau, _ = _design(n=6000, seed=1)
    g = np.arange(len(y)) // 4
    res = eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", clusters=g)
    assert res.clusters is not None and len(np.unique(res.clusters)) == len(y) // 4
    assert np.corrcoef(res.tau_hat, tau)[0, 1] > 0.75
    ate, se = res.ate()
    assert abs(ate - tau.mean()) < 3 * se
    r = eocausal.rate(res, n_boot=100)
    assert r.n_clusters == len(y) // 4
    assert r.estimate / r.std_error > 4  # the heterogeneity is detected
    # transport: the final model predicts new rows
    assert np.corrcoef(res.predict(X[:500], embeddings=Z[:500]), tau[:500])[0, 1] > 0.75


def test_known_propensities_are_used_as_given():
    y, w, X, Z, _, e = _design(n=1000)
    res = eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", propensity_scores=e, fit_final=False)
    np.testing.assert_array_equal(res.propensity_scores, e)
    assert res.propensity_known and res.propensity_source == "known" and res.n_clipped == 0


def test_options_and_errors():
    y, w, X, Z, _, e = _design(n=800)
    res = eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", propensity_scores=e, fit_final=False,
                        max_iter=30, learning_rate=0.2)
    assert res.learner == "dr_boost"
    with pytest.raises(NotFittedError, match="fit_final=True"):
        res.predict(X, embeddings=Z)
    with pytest.raises(InputError, match="n_estimators.*HistGradientBoostingRegressor"):
        eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", n_estimators=10)
    final = eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", propensity_scores=e, max_iter=20)
    with pytest.raises(InputError, match="blocks"):
        final.predict(X)
    with pytest.raises(InputError, match="19 columns"):
        final.estimator_.effect(np.zeros((3, 5)))


def test_min_leaf_grows_with_n():
    assert dr_boost.min_leaf(500) == 20 and dr_boost.min_leaf(1_000_000) == 1000
