"""Cross-fitted propensities (the folds themselves: tests/data/test_folds.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from eocausal.errors import InputError, NotEstimableError
from eocausal.estimators.learners import BlockStandardizer
from eocausal.estimators.propensity import crossfit_propensity


def _confounded(n=600, seed=0):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, 3))
    e = 1 / (1 + np.exp(-(V[:, 0] - 0.5 * V[:, 1])))
    w = (rng.uniform(size=n) < e).astype(float)
    return V, w, e


def test_predictions_are_out_of_fold():
    """Changing the labels inside one fold leaves that fold's predictions unchanged."""
    V, w, _ = _confounded()
    groups = np.arange(len(w)) // 3
    e1, folds = crossfit_propensity(V, w, clusters=groups, folds=4, seed=0)
    w2 = w.copy()
    k = folds == 0
    w2[k] = 1 - w2[k]
    e2, folds2 = crossfit_propensity(V, w2, clusters=groups, fold_ids=folds, seed=0)
    assert np.allclose(e1[k], e2[k])
    assert not np.allclose(e1[~k], e2[~k])


def test_ridge_logit_recovers_the_propensity():
    V, w, e = _confounded(n=3000, seed=1)
    ehat, _ = crossfit_propensity(V, w, folds=5, seed=0)
    assert np.corrcoef(ehat, e)[0, 1] > 0.97
    assert np.mean(np.abs(ehat - e)) < 0.05


def test_any_classifier_and_empty_confounders():
    V, w, _ = _confounded(n=300)
    e, _ = crossfit_propensity(V, w, propensity=RandomForestClassifier(n_estimators=20, random_state=0), seed=0)
    assert e.shape == (300,) and ((e >= 0) & (e <= 1)).all()
    e0, folds = crossfit_propensity(np.empty((300, 0)), w, seed=0)
    for k in np.unique(folds):
        assert np.allclose(e0[folds == k], w[folds != k].mean())
    with pytest.raises(InputError, match="predict_proba"):
        crossfit_propensity(V, w, propensity=object())


def test_nonfinite_confounders_are_refused():
    V, w, _ = _confounded(n=100)
    V[3, 1] = np.nan
    with pytest.raises(InputError, match=r"confounders: NaN or infinite values in rows \[3\]"):
        crossfit_propensity(V, w)


def test_solver_and_training_folds_are_checked():
    V, w, _ = _confounded(n=100)
    with pytest.raises(InputError, match=r"solver=False: use one of \['native', 'sklearn'\]"):
        crossfit_propensity(V, w, solver=False)
    one_arm_out = np.where(w == 1, 0, 1 + np.arange(len(w)) % 2)  # every treated unit in fold 0
    with pytest.raises(NotEstimableError, match="training folds for fold 0 hold only control units"):
        crossfit_propensity(V, w, fold_ids=one_arm_out, propensity="logit")
    with pytest.raises(NotEstimableError, match="training folds for fold 0 hold only control units"):
        crossfit_propensity(V, w, fold_ids=one_arm_out, propensity="logit", solver="sklearn")


def test_block_standardizer_scales_embedding_as_one_block():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(5, 3, 200), rng.normal(0, 1, (200, 2)) * [10.0, 0.1]])
    out = BlockStandardizer(n_tabular=1).fit_transform(X)
    assert out[:, 0].std() == pytest.approx(1.0)
    # the embedding block keeps its internal ratio of scales (10 : 0.1)
    assert out[:, 1].std() / out[:, 2].std() == pytest.approx(X[:, 1].std() / X[:, 2].std())
    assert np.allclose(out.mean(axis=0), 0)
