"""Salience maps: gradients of the propensity log-odds w.r.t. pixels, checked and localised."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eocausal.encoders import PropensityCNN, RandomFeatures, TemporalPool, salience_examples, salience_maps
from eocausal.errors import InputError


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _chips(n=6, c=2, px=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 100, (n, c, px, px)).astype(np.float32)


def _logit_np(enc, chips, coef, intercept, mean, scale):
    return intercept + ((enc.transform(chips).astype(np.float64) - mean) / scale) @ coef


def test_random_features_torch_forward_equals_transform():
    chips = _chips()
    enc = RandomFeatures(n_features=16, seed=0, chunk_size=5, device="cpu").fit(chips)
    out = enc.torch_forward(torch.from_numpy(chips))
    assert torch.equal(out, torch.from_numpy(enc.transform(chips)))
    with pytest.raises(InputError, match="expected"):
        enc.torch_forward(torch.zeros(1, 3, 8, 8))


def test_salience_is_the_l2_norm_of_finite_difference_gradients():
    chips = _chips(n=2)
    enc = RandomFeatures(n_features=12, seed=1, device="cpu").fit(_chips(n=10, seed=1))
    rng = np.random.default_rng(2)
    coef, mean, scale = rng.normal(size=12), rng.normal(size=12) * 0.01, rng.uniform(0.5, 2, 12)
    maps = salience_maps(enc, chips, coef, 0.3, feature_mean=mean, feature_scale=scale)
    assert maps.shape == (2, 8, 8) and maps.dtype == np.float32
    h = 0.5  # pixel units; the features are piecewise linear in the pixels
    for (i, r, q) in [(0, 2, 3), (1, 5, 1), (1, 7, 7)]:
        grad = []
        for c in range(2):
            up, down = chips.copy(), chips.copy()
            up[i, c, r, q] += h
            down[i, c, r, q] -= h
            diff = _logit_np(enc, up, coef, 0.3, mean, scale) - _logit_np(enc, down, coef, 0.3, mean, scale)
            grad.append(diff[i] / (2 * h))
        assert maps[i, r, q] == pytest.approx(np.linalg.norm(grad), rel=0.05, abs=1e-6)


def _square_driven(n=200, px=16, seed=0):
    """Noise everywhere; a square in the top-left quadrant whose brightness drives treatment."""
    rng = np.random.default_rng(seed)
    b = rng.uniform(0, 1, n)
    chips = rng.uniform(0, 80, (n, 3, px, px)).astype(np.float32)
    chips[:, :, 1:7, 1:7] += (170 * b)[:, None, None, None].astype(np.float32)
    w = (rng.uniform(size=n) < 1 / (1 + np.exp(-8 * (b - 0.5)))).astype(int)
    return chips, w


def _quadrant_means(maps):
    h = maps.shape[-1] // 2
    return np.stack([maps[:, :h, :h].mean((1, 2)), maps[:, :h, h:].mean((1, 2)),
                     maps[:, h:, :h].mean((1, 2)), maps[:, h:, h:].mean((1, 2))], axis=1)


def test_salience_is_highest_where_treatment_is_decided():
    chips, w = _square_driven()
    cnn = PropensityCNN(folds=2, epochs=10, width=8, lr=3e-3, batch_size=32, augment=False, seed=0,
                        device="cpu").fit_oof(chips, w)
    gal = salience_examples(cnn, chips, cnn.oof_propensity_, w, n_per_arm=4)  # the CNN's own log-odds
    assert gal["treated_maps"].shape == (4, 16, 16) and gal["control_maps"].shape == (4, 16, 16)
    assert np.all(w[gal["treated_index"]] == 1) and np.all(w[gal["control_index"]] == 0)
    e = cnn.oof_propensity_
    assert gal["treated_propensity"][0] == e[w == 1].max() and gal["control_propensity"][0] == e[w == 0].min()
    assert np.all(np.diff(gal["treated_propensity"]) <= 0) and np.all(np.diff(gal["control_propensity"]) >= 0)
    q = _quadrant_means(gal["treated_maps"])
    assert np.all(q[:, 0] > q[:, 1:].max(axis=1)), q  # top-left beats every other quadrant, unit by unit


def test_sequences_give_one_map_per_frame():
    seq = np.random.default_rng(0).uniform(0, 1, (3, 2, 2, 8, 8)).astype(np.float32)
    pool = TemporalPool(RandomFeatures(n_features=6, seed=0), how="mean_diff").fit(seq)
    maps = salience_maps(pool, seq, np.ones(12), batch_size=2, device="cpu")
    assert maps.shape == (3, 2, 8, 8) and np.isfinite(maps).all() and maps.max() > 0


def test_salience_errors():
    chips = _chips(n=2)
    enc = RandomFeatures(n_features=4, seed=0, device="cpu").fit(chips)
    with pytest.raises(InputError, match="4 features"):
        salience_maps(enc, chips, np.ones(3))
    with pytest.raises(InputError, match="only PropensityCNN"):
        salience_maps(enc, chips)
    with pytest.raises(InputError, match="feature_scale"):
        salience_maps(enc, chips, np.ones(4), feature_scale=np.ones(2))

    class NoGrad:
        device = "cpu"

        def transform(self, x):
            return np.zeros((len(x), 1))

    with pytest.raises(InputError, match="torch_forward"):
        salience_maps(NoGrad(), chips, np.ones(1))
    with pytest.raises(InputError, match="one per chip"):
        salience_examples(enc, chips, np.ones(3) / 2, np.ones(2), np.ones(4))
    with pytest.raises(InputError, match="n_per_arm=0"):
        salience_examples(enc, chips, np.ones(2) / 2, np.array([0, 1]), np.ones(4), n_per_arm=0)
