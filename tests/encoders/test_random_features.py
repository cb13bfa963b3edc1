"""RandomFeatures (MOSAIKS): determinism, equality with a direct computation, whitening, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eocausal.encoders import RandomFeatures
from eocausal.encoders.device import resolve_device
from eocausal.errors import DeviceError, InputError, NotFittedError


def _chips(n=12, c=3, h=16, w=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, c, h, w)).astype(np.float32)


def _direct(enc: RandomFeatures, chips: np.ndarray) -> np.ndarray:
    """Unchunked float64 computation straight from the definition."""
    lo = enc.band_low_.astype(np.float64)[None, :, None, None]
    hi = enc.band_high_.astype(np.float64)[None, :, None, None]
    x = np.clip((chips.astype(np.float64) - lo) / (hi - lo), 0, 1)
    f = enc.filters_.numpy().astype(np.float64)
    m, c, k, _ = f.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # n, c, H', W', k, k
    act = np.einsum("nchwij,mcij->nmhw", win, f)  # cross-correlation, valid
    pos = np.maximum(act - enc.bias, 0).mean(axis=(2, 3))
    neg = np.maximum(-act - enc.bias, 0).mean(axis=(2, 3))
    return np.concatenate([pos, neg], axis=1)


@pytest.mark.parametrize("bias", [0.0, 0.5])
def test_chunked_equals_direct_unchunked_computation(bias):
    chips = _chips()
    enc = RandomFeatures(n_features=22, kernel=3, bias=bias, seed=3, chunk_size=4, batch_size=5, device="cpu")
    feats = enc.fit_transform(chips)
    assert feats.shape == (12, 22) and feats.dtype == np.float32
    assert np.allclose(feats, _direct(enc, chips), rtol=1e-4, atol=1e-5)
    # the chunk size does not change the result
    enc.chunk_size = 11
    assert np.allclose(enc.transform(chips), feats, rtol=1e-5, atol=1e-6)


def test_deterministic_per_seed():
    chips = _chips()
    a = RandomFeatures(n_features=32, seed=7, device="cpu").fit_transform(chips)
    b = RandomFeatures(n_features=32, seed=7, device="cpu").fit_transform(chips)
    c = RandomFeatures(n_features=32, seed=8, device="cpu").fit_transform(chips)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert RandomFeatures(n_features=32, seed=7).fit(chips).state_hash() == \
        RandomFeatures(n_features=32, seed=7).fit(chips).state_hash()


def test_filters_are_zca_whitened_patches():
    chips = _chips(n=40, c=2, h=20, w=20)
    enc = RandomFeatures(n_features=2000, kernel=2, seed=0, zca_eps=1e-9).fit(chips)
    f = enc.filters_.numpy().reshape(1000, -1).astype(np.float64)
    cov = np.cov(f, rowvar=False, bias=True)
    assert np.allclose(cov, np.eye(8), atol=1e-3)


def test_band_scaling_and_multispectral_input():
    chips = _chips(n=6, c=7)
    chips[:, 6] = 5.0  # a constant band
    enc = RandomFeatures(n_features=8, seed=0, device="cpu").fit(chips)
    assert enc.band_low_.shape == (7,) and enc.filters_.shape == (4, 7, 3, 3)
    assert np.allclose(enc.band_low_[:6], chips[:, :6].min(axis=(0, 2, 3)))
    assert np.allclose(enc.band_high_[:6], chips[:, :6].max(axis=(0, 2, 3)))
    assert np.isfinite(enc.transform(chips)).all()
    pct = RandomFeatures(n_features=8, seed=0, scaling="percentile").fit(chips)
    assert (pct.band_high_[:6] < enc.band_high_[:6]).all()


def test_errors():
    chips = _chips()
    with pytest.raises(InputError, match="even"):
        RandomFeatures(n_features=7).fit(chips)
    with pytest.raises(InputError, match="scaling='max'"):
        RandomFeatures(n_features=4, scaling="max").fit(chips)
    with pytest.raises(NotFittedError, match="fit"):
        RandomFeatures().transform(chips)
    with pytest.raises(InputError, match="TemporalPool"):
        RandomFeatures(n_features=4).fit(np.zeros((2, 3, 3, 8, 8)))
    enc = RandomFeatures(n_features=4, device="cpu").fit(chips)
    with pytest.raises(InputError, match="fitted on 3"):
        enc.transform(_chips(c=4))
    with pytest.raises(InputError, match="smaller than kernel"):
        RandomFeatures(kernel=5).fit(np.zeros((2, 3, 4, 4)))
    bad = chips.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        enc.transform(bad)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(DeviceError, match="not a device"):
        resolve_device("tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    chips = _chips(n=16, h=32, w=32)
    enc = RandomFeatures(n_features=64, seed=0, device="cpu").fit(chips)
    cpu = enc.transform(chips)
    enc.device = "cuda"
    assert np.allclose(enc.transform(chips), cpu, rtol=1e-3, atol=1e-4)
