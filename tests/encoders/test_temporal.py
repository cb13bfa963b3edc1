"""TemporalPool: per-frame encoding, then concat / mean_diff / mean_var / attention over time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import eocausal
from eocausal.encoders import RandomFeatures, TemporalPool, encoder_fingerprint
from eocausal.encoders.temporal import AttentionPool
from eocausal.errors import InputError, NotFittedError


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _seq(n=5, t=4, c=2, px=10, seed=0):
    return np.random.default_rng(seed).uniform(0, 100, (n, t, c, px, px)).astype(np.float32)


def test_the_frame_encoder_is_fitted_on_all_frames_stacked():
    seq = _seq()
    pool = TemporalPool(RandomFeatures(n_features=8, seed=1, device="cpu"), how="concat").fit(seq)
    direct = RandomFeatures(n_features=8, seed=1).fit(seq.reshape(-1, *seq.shape[2:]))
    assert np.array_equal(pool.encoder_.filters_.numpy(), direct.filters_.numpy())
    assert not pool.encoder.is_fitted  # a clone is fitted; the argument stays as given
    assert pool.n_frames_ == 4 and pool.frame_dim_ == 8


@pytest.mark.parametrize("how", ["concat", "mean_diff", "mean_var", "attention"])
def test_pooled_values_equal_a_direct_numpy_computation(how):
    seq = _seq()
    pool = TemporalPool(RandomFeatures(n_features=8, seed=1, device="cpu"), how=how).fit(seq)
    out = pool.transform(seq)
    e = pool.encoder_.transform(seq.reshape(-1, *seq.shape[2:])).reshape(5, 4, 8).astype(np.float64)
    expect = {
        "concat": e.reshape(5, 32),
        "mean_diff": np.concatenate([e.mean(1), e[:, -1] - e[:, 0]], 1),
        "mean_var": np.concatenate([e.mean(1), e.var(1)], 1),
        "attention": e.mean(1),  # untrained attention weighs every frame 1/T
    }[how]
    assert out.dtype == np.float32 and out.shape == expect.shape
    assert np.allclose(out, expect, rtol=1e-5, atol=1e-6)
    # the differentiable path gives the same numbers
    assert np.allclose(pool.torch_forward(torch.from_numpy(seq)).detach().numpy(), out, rtol=1e-5, atol=1e-6)


def test_trained_attention_weights_frames():
    att = AttentionPool(3, hidden=2)
    with torch.no_grad():
        att.key.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 0]]))
        att.key.bias.zero_()
        att.query.copy_(torch.tensor([5.0, 0.0]))
    e = torch.tensor([[[2.0, 0, 0], [-2.0, 1, 1]]])
    a = torch.softmax(torch.tensor([5 * np.tanh(2.0), 5 * np.tanh(-2.0)]), 0)
    assert torch.allclose(att.weights(e)[0], a.float())
    assert torch.allclose(att(e)[0], a[0] * e[0, 0] + a[1] * e[0, 1])


def test_shapes_errors_and_hash():
    seq = _seq(n=3, t=2, px=8)
    enc = lambda: RandomFeatures(n_features=6, seed=0)  # noqa: E731
    assert TemporalPool(enc(), how="mean_var").fit_transform(seq).shape == (3, 12)
    a = TemporalPool(enc(), how="attention", seed=3).fit(seq)
    b = TemporalPool(enc(), how="attention", seed=3).fit(seq)
    assert a.transform(seq).shape == (3, 6) and a.state_hash() == b.state_hash()
    params = encoder_fingerprint(a)["params"]
    assert params["encoder"].endswith("RandomFeatures") and params["encoder__n_features"] == 6
    with pytest.raises(InputError, match="how='max'"):
        TemporalPool(enc(), how="max").fit(seq)
    with pytest.raises(InputError, match=r"\(n, T, C, H, W\)"):
        TemporalPool(enc()).fit(seq[:, 0])
    with pytest.raises(NotFittedError):
        TemporalPool(enc()).transform(seq)
    cat = TemporalPool(enc(), how="concat").fit(seq)
    with pytest.raises(InputError, match="T=2"):
        cat.transform(_seq(n=3, t=3, px=8))
    # other poolings take any number of frames
    assert TemporalPool(enc(), how="mean_diff").fit(seq).transform(_seq(n=3, t=5, px=8)).shape == (3, 12)


def test_embed_pools_image_sequences():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 4, 8, 8, 2)).astype(np.uint8)  # (n, T, H, W, C)
    df = pd.DataFrame({"id": ["a", "b", "c", "d"], "w": [0, 1, 0, 1], "y": 0.0, "key": [0, 1, 2, 2]})
    units = eocausal.Units.from_frame(df, id="id", treatment="w", outcome="y", image_key="key")
    pool = TemporalPool(RandomFeatures(n_features=4, seed=0), how="mean_diff")
    Z = eocausal.embed(units, eocausal.ArraySource(images), pool, device="cpu")
    assert Z.shape == (4, 8) and pool.encoder.device == "cpu"
    assert np.array_equal(Z.loc["c"].to_numpy(), Z.loc["d"].to_numpy())
