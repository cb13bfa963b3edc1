"""eocausal.cate: EconML learners, out-of-fold predictions, known propensities, folds by cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeCV

from eocausal.errors import InputError, NotFittedError
from eocausal.estimators.cate import ConstantPropensity, KnownPropensity, cate


def _trial(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    Z = rng.normal(size=(n, 6))  # an "embedding"; its first dimension modifies the effect
    groups = np.repeat(np.arange(n // 4), 4)
    w = (rng.random(n) < 0.5).astype(int)
    tau = 1 + X["x2"].to_numpy() + 0.5 * Z[:, 0]
    y = X["x1"].to_numpy() + w * tau + rng.normal(size=n)
    return X, Z, groups, w, y, tau


# Small, fast and deterministic settings per learner (EconML's names, passed through untouched).
# The forest: drate=False skips EconML's out-of-bag ATE (with 24 trees some units have no
# out-of-bag prediction and EconML warns); n_jobs=1 keeps sums in one order, so refits are
# bit-identical (threads reorder floating-point sums at the 1e-16 level).
FAST = {
    "causal_forest": dict(model_y=RidgeCV(), n_estimators=24, min_samples_leaf=10, drate=False, n_jobs=1),
    "dr": dict(model_regression=RidgeCV(), model_final=LinearRegression()),
    "r": dict(model_y=RidgeCV(), model_final=LinearRegression()),
    "t": dict(models=RidgeCV()),
    "x": dict(models=RidgeCV()),
}


@pytest.mark.parametrize("learner", list(FAST))
def test_each_learner_runs_and_finds_the_heterogeneity(learner):
    X, Z, groups, w, y, tau = _trial()
    r = cate(y, w, X, {"image": Z}, learner=learner, propensity_scores=0.5, clusters=groups, folds=3, seed=0,
             **FAST[learner])
    assert r.tau_hat.shape == (400,) and np.isfinite(r.tau_hat).all() and np.isfinite(r.scores).all()
    assert r.feature_names[:2] == ("x1", "x2") and r.feature_names[2] == "image_0" and r.n_tabular == 2
    assert np.corrcoef(r.tau_hat, tau)[0, 1] > 0.6
    new = r.predict(X.iloc[:5], {"image": Z[:5]})
    assert new.shape == (5,) and np.isfinite(new).all()
    assert np.array_equal(new, r.effect(X.iloc[:5], {"image": Z[:5]}))  # EconML's verb


def test_predictions_for_a_fold_do_not_change_when_its_outcomes_change():
    X, Z, groups, w, y, tau = _trial(seed=1)
    kw = dict(learner="causal_forest", propensity_scores=0.5, clusters=groups, folds=4, seed=3, fit_final=False,
              **FAST["causal_forest"])
    a = cate(y, w, X, Z, **kw)
    k = a.fold_ids == 2
    y2 = y.copy()
    y2[k] += np.random.default_rng(9).normal(scale=5, size=k.sum())
    b = cate(y2, w, X, Z, **kw)
    assert np.array_equal(a.fold_ids, b.fold_ids)  # folds never depend on the outcome
    assert np.array_equal(a.tau_hat[k], b.tau_hat[k])  # fold 2's priorities never saw fold 2
    assert not np.allclose(a.tau_hat[~k], b.tau_hat[~k])  # the other folds' models did see it
    assert np.array_equal(a.mu1[k], b.mu1[k]) and np.array_equal(a.mu0[k], b.mu0[k])


def test_known_propensities_replace_the_learners_propensity_model():
    X, Z, groups, w, y, tau = _trial(seed=2)
    e = np.where(X["x1"] > 0, 0.3, 0.6)  # a stratified design
    r = cate(y, w, X, learner="dr", propensity_scores=e, clusters=groups, folds=3, keep_fold_models=True, **FAST["dr"])
    assert r.propensity_known and np.array_equal(r.propensity_scores, e)
    est = r.fold_estimators_[0]
    assert isinstance(est.model_propensity, KnownPropensity)
    # the DR learner's propensity model returns the design's e for the rows it is given
    p = est.models_propensity[0][0].predict_proba(np.column_stack([X.to_numpy()[:4], e[:4]]))
    assert np.allclose(p[:, 1], e[:4])
    mu0, mu1 = r.mu0, r.mu1
    expected = mu1 - mu0 + w * (y - mu1) / e - (1 - w) * (y - mu0) / (1 - e)
    assert np.allclose(r.scores, expected)
    # constant e: the X-learner's weighting uses it
    rx = cate(y, w, X, learner="x", propensity_scores=0.5, folds=3, fit_final=True, **FAST["x"])
    assert isinstance(rx.estimator_.propensity_model, ConstantPropensity)
    with pytest.raises(InputError, match="known propensities replace"):
        cate(y, w, X, learner="dr", propensity_scores=0.5, model_propensity=LogisticRegression(), **FAST["dr"])


def test_estimated_propensities_are_out_of_fold_when_propensity_scores_are_not_given():
    X, Z, groups, w, y, tau = _trial(seed=3)
    # default: fold k's EconML estimator predicts fold k with its own fitted propensity models
    r = cate(y, w, X, learner="dr", clusters=groups, folds=3, keep_fold_models=True,
             model_propensity=LogisticRegression(), **FAST["dr"])
    assert not r.propensity_known and r.propensity_source == "learner"
    k = r.fold_ids == 1
    est = r.fold_estimators_[1]
    expected = np.mean([m.predict_proba(X.to_numpy()[k])[:, 1] for fold in est.models_propensity for m in fold],
                       axis=0)
    assert np.allclose(r.propensity_scores[k], np.clip(expected, 1e-3, 1 - 1e-3))
    # the T-learner has no propensity model: a cross-fitted one on the same folds
    t = cate(y, w, X, learner="t", clusters=groups, folds=3, **FAST["t"])
    assert t.propensity_source == "ridge-logit" and ((t.propensity_scores > 0) & (t.propensity_scores < 1)).all()
    lg = cate(y, w, X, learner="t", clusters=groups, folds=3, propensity="logit", **FAST["t"])
    assert lg.propensity_source == "logit" and not np.allclose(lg.propensity_scores, lg.propensity_scores[0])


def test_folds_keep_clusters_whole_and_the_ate_uses_the_clusters():
    X, Z, groups, w, y, tau = _trial(seed=4)
    r = cate(y, w, X, Z, learner="t", propensity_scores=0.5, clusters=groups, folds=5, **FAST["t"])
    assert np.array_equal(r.clusters, groups)
    for g in np.unique(groups):
        assert len(np.unique(r.fold_ids[groups == g])) == 1
    ext = r.extremes(3)
    assert (ext[ext.group == "highest"].tau_hat.min() >= ext[ext.group == "lowest"].tau_hat.max())
    est, se = r.ate()
    assert abs(est - tau.mean()) < 4 * se
    # the cluster-robust SE by hand: sum the centred scores within each cluster
    psi = r.scores - r.scores.mean()
    by_cluster = np.bincount(np.unique(groups, return_inverse=True)[1], weights=psi)
    assert se == pytest.approx(np.sqrt(np.sum(by_cluster**2)) / len(y), rel=1e-12)
    # the evaluation lives in eocausal.diagnostics (layer 5), not on the result (layer 4)
    assert not any(hasattr(r, m) for m in ("rate", "calibration", "gates", "blp", "clan", "effects_by"))


def test_cate_input_errors():
    X, Z, groups, w, y, tau = _trial(n=80, seed=5)
    with pytest.raises(InputError, match="binary"):
        cate(y, w * 2, X, learner="t", **FAST["t"])
    with pytest.raises(InputError, match="effect modifiers"):
        cate(y, w, learner="t", **FAST["t"])
    with pytest.raises(InputError, match="learner"):
        cate(y, w, X, learner="s")
    with pytest.raises(InputError, match="TemporalPool"):
        cate(y, w, embeddings=np.zeros((80, 4, 3)), learner="t", **FAST["t"])
    with pytest.raises(InputError, match="non-finite"):
        cate(np.r_[np.nan, y[1:]], w, X, learner="t", **FAST["t"])
    with pytest.raises(InputError, match=r"clusters: expected shape \(80,\), one cluster label per unit"):
        cate(y, w, X, learner="t", clusters=groups[:-1], **FAST["t"])
    with pytest.raises(InputError, match=r"propensity_scores: .*inside \(0, 1\), got range \[0, 0.5\]"):
        cate(y, w, X, learner="t", propensity_scores=np.r_[0.0, np.full(79, 0.5)], **FAST["t"])
    r = cate(y, w, X, learner="t", propensity_scores=0.5, folds=2, fit_final=False, **FAST["t"])
    with pytest.raises(NotFittedError):
        r.predict(X)
    r = cate(y, w, X, learner="t", propensity_scores=0.5, folds=2, **FAST["t"])
    with pytest.raises(InputError, match="blocks"):
        r.predict(X, Z)
