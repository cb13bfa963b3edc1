"""eocausal.embed on an in-memory source."""

from __future__ import annotations

import numpy as np
import pytest

import eocausal
from eocausal.encoders import RandomFeatures
from eocausal.errors import InputError


@pytest.fixture
def embed_inputs(array_units):
    """30 units, 3 on each of 10 random 12 x 12 uint8 images."""
    return array_units(n_images=10, per=3, px=12, dtype=np.uint8)


def test_units_sharing_an_image_share_an_embedding(embed_inputs):
    units, src = embed_inputs
    Z = eocausal.embed(units, src, RandomFeatures(n_features=16, seed=0), device="cpu")
    assert Z.shape == (30, 16) and list(Z.index) == list(units.ids)
    assert Z.columns[0] == "z0000"
    assert np.array_equal(Z.iloc[0].to_numpy(), Z.iloc[2].to_numpy())
    assert not np.array_equal(Z.iloc[0].to_numpy(), Z.iloc[3].to_numpy())


def test_embed_equals_encoder_on_the_images_and_is_deterministic(embed_inputs):
    units, src = embed_inputs
    enc = RandomFeatures(n_features=16, seed=0, device="cpu")
    Z = eocausal.embed(units, src, enc, batch_size=4)
    direct = enc.transform(src.chips(units.keys()))
    assert np.allclose(Z.to_numpy(), direct)
    Z2 = eocausal.embed(units, src, RandomFeatures(n_features=16, seed=0), batch_size=7)
    # another batch size: float32 sums may differ in the last bits on some CPUs (BLAS order), no more
    np.testing.assert_allclose(Z.to_numpy(), Z2.to_numpy(), rtol=1e-5, atol=1e-6)


def test_embed_errors(embed_inputs):
    units, src = embed_inputs
    with pytest.raises(InputError, match="Units"):
        eocausal.embed(units.frame, src, RandomFeatures())
    with pytest.raises(InputError, match="lacks keys_for"):
        eocausal.embed(units, np.zeros((3, 8, 8, 3)), RandomFeatures())
    with pytest.raises(InputError, match="batch_size"):
        eocausal.embed(units, src, RandomFeatures(), batch_size=0)
    other = eocausal.ArraySource(np.zeros((2, 12, 12, 3)), keys=["a", "b"])
    with pytest.raises(InputError, match="not in the image source"):
        eocausal.embed(units, other, RandomFeatures(n_features=4))
