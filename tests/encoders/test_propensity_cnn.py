"""PropensityCNN: cross-fitted out-of-fold propensities on an image-confounded simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eocausal.data.simulate import simulate_demo
from eocausal.encoders import PropensityCNN, RandomFeatures
from eocausal.errors import InputError, NotFittedError
from eocausal.estimators.weighting import difference_in_means, hajek, se_from_psi


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _auc(score, w):
    """Mann-Whitney AUC (ties count one half)."""
    pos, neg = score[w == 1], score[w == 0]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                 / (len(pos) * len(neg)))


@pytest.fixture(scope="module")
def demo():
    d = simulate_demo(n_images=200, units_per_image=2, px=16, seed=1)
    return d, d.source.load(d.units.keys())


@pytest.fixture(scope="module")
def fitted(demo):
    d, chips = demo
    u = d.units
    model = PropensityCNN(folds=3, epochs=15, patience=5, lr=3e-3, width=8, batch_size=32, seed=0, device="cpu")
    return model.fit_oof(chips, u.w(), X=u.x(), clusters=u.keys())


def test_oof_propensities_predict_treatment_and_ipw_covers_the_effect(demo, fitted):
    d, _ = demo
    u = d.units
    w, y, keys = u.w(), u.y(), u.keys()
    e = fitted.oof_propensity_
    assert e.shape == (400,) and np.all((e > 0) & (e < 1))
    auc = _auc(e, w)
    assert auc > 0.7, auc  # the true propensity's AUC here is about 0.79
    est = hajek(y, w, np.clip(e, 0.01, 0.99))
    se, n_clusters = se_from_psi(est.psi, keys)
    assert n_clusters == 200
    assert est.estimate - 1.96 * se <= d.true_effect <= est.estimate + 1.96 * se, (est.estimate, se)
    naive = difference_in_means(y, w).estimate
    assert abs(est.estimate - d.true_effect) < abs(naive - d.true_effect)


def test_folds_keep_images_whole_and_outputs_are_shaped(demo, fitted):
    d, chips = demo
    keys = d.units.keys()
    for k in np.unique(keys):
        assert len(np.unique(fitted.fold_ids_[keys == k])) == 1
    assert sorted(np.unique(fitted.fold_ids_)) == [0, 1, 2]
    assert fitted.oof_embedding_.shape == (400, 16) and fitted.oof_embedding_.dtype == np.float32
    assert len(fitted.history_) == 3 and len(fitted.models_) == 3
    for h in fitted.history_:
        assert h["n_val"] > 0 and h["n_train"] + h["n_val"] + h["n_test"] == 400
        assert 0 <= h["best_epoch"] < len(h["train_loss"]) <= 15 and len(h["val_loss"]) == len(h["train_loss"])
    new = chips[:7]
    p = fitted.predict_propensity(new, X=d.units.x()[:7])
    assert p.shape == (7,) and np.all((p > 0) & (p < 1))
    assert fitted.transform(new, X=d.units.x()[:7]).shape == (7, 16)
    with pytest.raises(InputError, match="X: 0 columns"):
        fitted.transform(new)
    # the differentiable path agrees with inference
    logit = fitted.torch_logit(torch.from_numpy(new), X=d.units.x()[:7]).detach().numpy()
    assert logit.shape == (7,) and np.corrcoef(logit, p)[0, 1] > 0.95  # mean logit vs mean probability
    emb = fitted.torch_forward(torch.from_numpy(new), X=d.units.x()[:7]).detach().numpy()
    assert np.allclose(emb, fitted.transform(new, X=d.units.x()[:7]), rtol=1e-4, atol=1e-5)


def _small(n=48, px=8, t=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, 2, px, px) if t is None else (n, t, 2, px, px)
    chips = rng.normal(0, 1, shape).astype(np.float32)
    w = (rng.uniform(size=n) < 0.5).astype(int)
    chips[w == 1] += 0.8
    return chips, w


def test_deterministic_on_cpu_for_a_seed():
    chips, w = _small()
    fit = lambda seed: PropensityCNN(folds=2, epochs=3, width=4, batch_size=16, seed=seed,  # noqa: E731
                                     device="cpu").fit_oof(chips, w)
    a, b, c = fit(0), fit(0), fit(1)
    assert np.array_equal(a.oof_propensity_, b.oof_propensity_) and a.state_hash() == b.state_hash()
    assert not np.array_equal(a.oof_propensity_, c.oof_propensity_)
    state = torch.random.get_rng_state()
    fit(0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone


def test_early_stopping_restores_the_best_epoch():
    chips, w = _small(n=60)
    m = PropensityCNN(folds=2, epochs=40, patience=2, lr=2e-2, width=4, batch_size=8, seed=0,
                      device="cpu").fit_oof(chips, w)
    for h in m.history_:
        stopped = len(h["train_loss"])
        assert stopped < 40 and h["best_epoch"] == stopped - 3
        assert h["val_loss"][h["best_epoch"]] == min(h["val_loss"])


def test_sequences_train_the_attention_pool():
    chips, w = _small(n=40, t=3)
    m = PropensityCNN(folds=2, epochs=3, width=4, batch_size=10, seed=0, device="cpu").fit_oof(chips, w)
    assert m.oof_propensity_.shape == (40,) and m.sequence_
    assert all(float(mod.pool.query.detach().abs().sum()) > 0 for mod in m.models_)  # moved off the zero (mean) start
    assert m.transform(chips[:3]).shape == (3, 8)
    with pytest.raises(InputError, match="sequences"):
        m.transform(chips[:3, 0])


def test_frozen_backbone_and_given_folds():
    chips, w = _small(n=40)
    folds = np.arange(40) % 4
    m = PropensityCNN(epochs=3, width=4, backbone=RandomFeatures(n_features=16, seed=0), seed=0,
                      val_fraction=0.0, device="cpu").fit_oof(chips, w, fold_ids=folds)
    assert np.array_equal(m.fold_ids_, folds) and m.backbone_.is_fitted
    assert not m.backbone.is_fitted  # the clone was fitted; the argument stays as given
    assert all(h["n_val"] == 0 and len(h["train_loss"]) == 3 for h in m.history_)
    emb = m.torch_forward(torch.from_numpy(chips[:4])).detach().numpy()
    assert np.allclose(emb, m.transform(chips[:4]), rtol=1e-4, atol=1e-5)


def test_input_errors():
    chips, w = _small(n=20)
    m = PropensityCNN(folds=2, epochs=1, width=4, device="cpu")
    with pytest.raises(InputError, match="values in"):
        m.fit_oof(chips, w * 2)
    with pytest.raises(InputError, match="fit_oof"):
        m.fit(chips)
    with pytest.raises(InputError, match="one arm"):
        m.fit_oof(chips, np.r_[np.zeros(10), np.ones(10)], fold_ids=np.r_[np.zeros(10), np.ones(10)])
    with pytest.raises(InputError, match="only 1 clusters"):
        m.fit_oof(chips, w, clusters=np.zeros(20))
    with pytest.raises(NotFittedError):
        m.transform(chips)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mixed_precision_training_runs():
    chips, w = _small(n=64, px=16)
    m = PropensityCNN(folds=2, epochs=2, width=8, device="cuda", amp="bf16").fit_oof(chips, w)
    assert np.isfinite(m.oof_propensity_).all() and m.oof_embedding_.shape == (64, 16)
