"""Grouped folds and cross-fitted propensities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from eocausal.errors import InputError
from eocausal.estimators.crossfit import grouped_folds
from eocausal.estimators.propensity import BlockStandardizer, crossfit_propensity


def test_grouped_folds_keep_groups_whole_and_balance():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 97, 1000)
    f = grouped_folds(1000, groups, 5, seed=1)
    for g in np.unique(groups):
        assert len(np.unique(f[groups == g])) == 1
    sizes = np.bincount(f)
    assert len(sizes) == 5 and sizes.max() - sizes.min() <= np.bincount(groups).max()
    assert np.array_equal(f, grouped_folds(1000, groups, 5, seed=1))
    assert not np.array_equal(f, grouped_folds(1000, groups, 5, seed=2))


def test_grouped_folds_stratify_puts_both_arms_in_every_fold():
    w = np.r_[np.ones(12), np.zeros(88)]
    f = grouped_folds(100, None, 5, seed=0, stratify=w)
    for k in range(5):
        assert 0 < w[f == k].sum() < (f == k).sum()


def test_grouped_folds_errors():
    with pytest.raises(InputError, match="at least 5 clusters"):
        grouped_folds(10, np.r_[np.zeros(5), np.ones(5)], 5)
    with pytest.raises(InputError, match="at least 2"):
        grouped_folds(10, None, 1)


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
    e1, folds = crossfit_propensity(V, w, groups=groups, folds=4, seed=0)
    w2 = w.copy()
    k = folds == 0
    w2[k] = 1 - w2[k]
    e2, folds2 = crossfit_propensity(V, w2, groups=groups, fold_ids=folds, seed=0)
    assert np.allclose(e1[k], e2[k])
    assert not np.allclose(e1[~k], e2[~k])


def test_ridge_logit_recovers_the_propensity():
    V, w, e = _confounded(n=3000, seed=1)
    ehat, _ = crossfit_propensity(V, w, folds=5, seed=0)
    assert np.corrcoef(ehat, e)[0, 1] > 0.97
    assert np.mean(np.abs(ehat - e)) < 0.05


def test_any_classifier_and_empty_confounders():
    V, w, _ = _confounded(n=300)
    e, _ = crossfit_propensity(V, w, model=RandomForestClassifier(n_estimators=20, random_state=0), seed=0)
    assert e.shape == (300,) and ((e >= 0) & (e <= 1)).all()
    e0, folds = crossfit_propensity(np.empty((300, 0)), w, seed=0)
    for k in np.unique(folds):
        assert np.allclose(e0[folds == k], w[folds != k].mean())
    with pytest.raises(InputError, match="predict_proba"):
        crossfit_propensity(V, w, model=object())


def test_nonfinite_confounders_are_refused():
    V, w, _ = _confounded(n=100)
    V[3, 1] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        crossfit_propensity(V, w)


def test_block_standardizer_scales_embedding_as_one_block():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(5, 3, 200), rng.normal(0, 1, (200, 2)) * [10.0, 0.1]])
    out = BlockStandardizer(n_tabular=1).fit_transform(X)
    assert out[:, 0].std() == pytest.approx(1.0)
    # the embedding block keeps its internal ratio of scales (10 : 0.1)
    assert out[:, 1].std() / out[:, 2].std() == pytest.approx(X[:, 1].std() / X[:, 2].std())
    assert np.allclose(out.mean(axis=0), 0)
