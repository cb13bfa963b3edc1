"""eocausal.embed on an in-memory source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import eocausal
from eocausal.encoders import RandomFeatures
from eocausal.errors import InputError


def _setup(n_images=10, per=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n_images, 12, 12, 3)).astype(np.uint8)
    keys = [f"img{i}" for i in range(n_images)]
    n = n_images * per
    df = pd.DataFrame({"id": [f"u{i}" for i in range(n)], "w": np.arange(n) % 2, "y": rng.normal(size=n),
                       "key": np.repeat(keys, per)})
    units = eocausal.Units.from_frame(df, id="id", treatment="w", outcome="y", image_key="key")
    return units, eocausal.ArraySource(images, keys=keys)


def test_units_sharing_an_image_share_an_embedding():
    units, src = _setup()
    Z = eocausal.embed(units, src, RandomFeatures(n_features=16, seed=0), device="cpu")
    assert Z.shape == (30, 16) and list(Z.index) == list(units.ids)
    assert Z.columns[0] == "z0000"
    assert np.array_equal(Z.iloc[0].to_numpy(), Z.iloc[2].to_numpy())
    assert not np.array_equal(Z.iloc[0].to_numpy(), Z.iloc[3].to_numpy())


def test_embed_equals_encoder_on_the_images_and_is_deterministic():
    units, src = _setup()
    enc = RandomFeatures(n_features=16, seed=0, device="cpu")
    Z = eocausal.embed(units, src, enc, batch_size=4)
    direct = enc.transform(src.chips(units.keys()))
    assert np.allclose(Z.to_numpy(), direct)
    Z2 = eocausal.embed(units, src, RandomFeatures(n_features=16, seed=0), batch_size=7)
    assert np.array_equal(Z.to_numpy(), Z2.to_numpy())


def test_embed_errors():
    units, src = _setup()
    with pytest.raises(InputError, match="Units"):
        eocausal.embed(units.frame, src, RandomFeatures())
    with pytest.raises(InputError, match="lacks keys_for"):
        eocausal.embed(units, np.zeros((3, 8, 8, 3)), RandomFeatures())
    with pytest.raises(InputError, match="batch_size"):
        eocausal.embed(units, src, RandomFeatures(), batch_size=0)
    other = eocausal.ArraySource(np.zeros((2, 12, 12, 3)), keys=["a", "b"])
    with pytest.raises(InputError, match="not in the image source"):
        eocausal.embed(units, other, RandomFeatures(n_features=4))
