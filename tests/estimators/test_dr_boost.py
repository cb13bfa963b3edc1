"""cate(learner='dr_boost'): the large-n DR-learner (eocausal.estimators.dr_boost).

What is checked:

- honesty of the two-way split, both ways: a half's CATEs do not depend on its own outcomes
  (perturbing them leaves those predictions unchanged to rounding and changes the others), and a
  half's scores do not depend on the other half's outcomes (the data its CATEs were learned from),
  which RATE and the calibration test require; each check has power: with nuisances fitted on
  all folds both fail (checked against those variants);
- the scores are the AIPW scores of nuisances cross-fitted within each half on the sub-folds
  (clusters kept whole); too few clusters per half is refused;
- accuracy on a design with a known CATE (correlation with the truth, the AIPW ATE within 3 SE of
  the truth, a RATE that detects the heterogeneity);
- known propensities are used as given; clusters reach the evaluation;
- transport (predict), its errors, and bad options.
"""

from __future__ import annotations

import numpy as np
import pytest

import eocausal
from eocausal.data.folds import grouped_folds
from eocausal.errors import InputError, NotEstimableError, NotFittedError
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


def test_scores_do_not_depend_on_the_data_of_their_priorities():
    """Fold k's scores (and their nuisances) use fold k alone: perturbing the other half's outcomes,
    from which fold k's CATEs were learned, leaves them unchanged to rounding."""
    y, w, X, Z, _, _ = _design(n=1500)
    base = eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", fit_final=False)
    assert set(np.unique(base.fold_ids)) == {0, 1}  # the two halves
    fold = base.fold_ids == base.fold_ids[0]
    y2 = y.copy()
    y2[~fold] += np.random.default_rng(5).normal(scale=3.0, size=(~fold).sum())
    moved = eocausal.cate(y2, w, X=X, embeddings=Z, learner="dr_boost", fit_final=False)
    np.testing.assert_array_equal(moved.fold_ids, base.fold_ids)
    for name in ("scores", "mu0", "mu1", "propensity_scores"):
        np.testing.assert_allclose(getattr(moved, name)[fold], getattr(base, name)[fold], rtol=0, atol=1e-10)
    assert np.max(np.abs(moved.tau_hat[fold] - base.tau_hat[fold])) > 1e-3  # the priorities did move
    assert np.max(np.abs(moved.scores[~fold] - base.scores[~fold])) > 1e-3


def test_shared_cross_fit_scores_would_see_the_data_of_their_priorities():
    """The check above has power: scores whose nuisances are cross-fitted on all folds (the usual
    cross-fit, the previous dr_boost) move when the other half's outcomes move."""
    y, w, X, Z, _, e = _design(n=1500)
    F = np.hstack([X, Z])
    folds = eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", propensity_scores=e,
                          fit_final=False).fold_ids
    fold = folds == folds[0]

    def shared(y_):
        mu0, mu1 = crossfit_outcome(F, y_, w, folds, "ridge", n_tabular=3)
        return (mu1 - mu0 + w * (y_ - mu1) / e - (1 - w) * (y_ - mu0) / (1 - e))[fold]

    y2 = y.copy()
    y2[~fold] += np.random.default_rng(5).normal(scale=3.0, size=(~fold).sum())
    assert np.max(np.abs(shared(y) - shared(y2))) > 1e-3


def test_without_nesting_the_fold_predictions_would_see_their_outcomes():
    """The first check has power: with nuisances cross-fitted on all folds, the final model of
    fold k is trained on pseudo-outcomes whose outcome models saw fold k."""
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
    np.testing.assert_array_equal(res.fold_ids, grouped_folds(len(y), None, 2, 0, stratify=w))
    mu0, mu1 = np.empty(len(y)), np.empty(len(y))
    for half in (0, 1):  # cross-fitted within each half, on 5 sub-folds of it
        rows = np.flatnonzero(res.fold_ids == half)
        sub = grouped_folds(len(rows), None, 5, 0, stratify=w[rows])
        mu0[rows], mu1[rows] = crossfit_outcome(F[rows], y[rows], w[rows], sub, "ridge", n_tabular=3)
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


def test_clusters_stay_whole_in_the_sub_folds_and_the_transport_scores():
    y, w, X, Z, _, e = _design(n=1200)
    F = np.hstack([X, Z])
    g = np.arange(len(y)) // 6
    halves = grouped_folds(len(y), g, 2, 0, stratify=w)
    out = dr_boost.crossfit_dr_boost(F, y, w, halves, clusters=g, e_known=e, propensity=None, n_tabular=3,
                                     max_iter=20)
    sub = out["sub_ids"]
    assert len(np.unique(sub)) == 10
    for ids in (sub, halves):
        assert all(len(np.unique(ids[g == c])) == 1 for c in np.unique(g))  # no cluster straddles a split
    assert all(len(np.unique(halves[sub == s])) == 1 for s in np.unique(sub))  # sub-folds nest in halves
    mu0, mu1 = crossfit_outcome(F, y, w, sub, "ridge", n_tabular=3)  # transport: over all sub-folds
    expect = mu1 - mu0 + w * (y - mu1) / e - (1 - w) * (y - mu0) / (1 - e)
    np.testing.assert_allclose(out["scores_full"], expect, rtol=1e-12, atol=1e-12)
    with pytest.raises(NotEstimableError, match="at least 2 clusters"):
        eocausal.cate(y, w, X=X, embeddings=Z, learner="dr_boost", propensity_scores=e,
                      clusters=(np.arange(len(y)) < 600).astype(int), fit_final=False)


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
