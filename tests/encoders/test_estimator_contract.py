"""Encoders are scikit-learn estimators, and the embedding-cache key covers every setting that can
change their output: each one but those the class declares invariant (device, batch size, ...)."""

from __future__ import annotations

import copy
import inspect
import json

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn.utils.estimator_checks as sk_checks
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.validation import check_is_fitted

import eocausal
import eocausal.encoders
from eocausal.data.cache import cache_key
from eocausal.encoders import (
    Pretrained,
    PropensityCNN,
    RandomFeatures,
    TemporalPool,
    embed,
    encoder_fingerprint,
)
from eocausal.errors import InputError, NotFittedError

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _chips(n=12, c=3, px=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, c, px, px)).astype(np.float32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A 2-block ViT (dim 32) saved from a random initialisation, with its sidecar."""
    from eocausal.encoders.backbones import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(in_chans=3, patch_size=8, img_size=16, embed_dim=32, depth=2, num_heads=2)
    path = tmp_path_factory.mktemp("vit") / "vit.pth"
    torch.save(model.state_dict(), path)
    (path.parent / "vit.pth.json").write_text(json.dumps({"num_heads": 2, "scale": 1,
                                                           "mean": [0.5] * 3, "std": [0.25] * 3}))
    return path


@pytest.fixture(scope="module")
def fitted(weights):
    """One fitted encoder of each public class (PropensityCNN twice: with and without a backbone)."""
    chips = _chips()
    w = np.arange(12) % 2
    seq = np.random.default_rng(1).uniform(0, 1, (4, 3, 2, 8, 8)).astype(np.float32)
    return {
        "RandomFeatures": RandomFeatures(n_features=8, seed=0, device="cpu").fit(chips),
        "Pretrained": Pretrained(weights=weights, arch="vit", device="cpu", batch_size=4).fit(chips),
        "TemporalPool": TemporalPool(RandomFeatures(n_features=4, device="cpu"), how="attention").fit(seq),
        "PropensityCNN": PropensityCNN(folds=2, epochs=1, width=2, val_fraction=0.0, device="cpu").fit_oof(chips, w),
        "PropensityCNN+backbone": PropensityCNN(folds=2, epochs=1, width=2, val_fraction=0.0, device="cpu",
                                                backbone=RandomFeatures(n_features=4, device="cpu")).fit_oof(chips, w),
    }


NAMES = ["RandomFeatures", "Pretrained", "TemporalPool", "PropensityCNN", "PropensityCNN+backbone"]


def test_every_public_encoder_class_is_covered_here():
    public = {name for name in eocausal.encoders.__all__
              if inspect.isclass(getattr(eocausal.encoders, name))}
    assert public == {n.split("+")[0] for n in NAMES}
    for name in public:
        assert issubclass(getattr(eocausal.encoders, name), BaseEstimator)


# ----------------------------------------------------------------------------- the estimator contract
def _same_params(a: dict, b: dict) -> bool:
    """Equal parameter dicts, estimators compared by class and their own parameters."""
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if isinstance(x, BaseEstimator):
            if type(x) is not type(y) or not _same_params(x.get_params(), y.get_params()):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_clone_gives_an_unfitted_copy_with_the_same_params(fitted, name):
    est = fitted[name]
    check_is_fitted(est)
    c = clone(est)
    assert type(c) is type(est) and not c.is_fitted
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(c)
    assert _same_params(c.get_params(deep=True), est.get_params(deep=True))
    # get_params -> constructor -> get_params, and set_params of the deep params, round trip
    rebuilt = type(est)(**est.get_params(deep=False))
    assert _same_params(rebuilt.get_params(deep=True), est.get_params(deep=True))
    deep = est.get_params(deep=True)
    assert _same_params(clone(est).set_params(**deep).get_params(deep=True), deep)


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_leaves_the_params_alone(fitted, name):
    """scikit-learn's check_dont_overwrite_parameters, on chips: a wrapped encoder is cloned, not fitted."""
    est = clone(fitted[name])
    before = {k: joblib.hash(v) for k, v in est.get_params(deep=True).items()}
    chips = _chips()
    if name == "TemporalPool":
        out = est.fit(chips[:4].reshape(4, 3, 1, 16, 16)[:, :, :, :8, :8].repeat(2, axis=2))
    elif name.startswith("PropensityCNN"):
        out = est.fit(chips, np.arange(12) % 2)
    else:
        out = est.fit(chips)
    assert out is est and est.is_fitted
    assert {k: joblib.hash(v) for k, v in est.get_params(deep=True).items()} == before
    for inner in ("encoder", "backbone"):
        if isinstance(est.get_params().get(inner), BaseEstimator):
            assert not est.get_params()[inner].is_fitted and getattr(est, inner + "_").is_fitted


# the parts of scikit-learn's estimator checks that apply to an estimator of image chips (the
# others fit on 2-d tabular data, which no encoder takes)
SKLEARN_CHECKS = ["check_no_attributes_set_in_init", "check_get_params_invariance", "check_set_params",
                  "check_parameters_default_constructible", "check_estimator_repr",
                  "check_do_not_raise_errors_in_init_or_set_params", "check_estimator_cloneable",
                  "check_estimator_tags_renamed", "check_valid_tag_types", "check_mixin_order"]


@pytest.mark.parametrize("check", SKLEARN_CHECKS)
@pytest.mark.parametrize("name", NAMES)
def test_sklearn_estimator_checks(fitted, name, check):
    getattr(sk_checks, check)(name, clone(fitted[name]))


# ----------------------------------------------------------------------------- the cache key
class OtherFeatures(RandomFeatures):
    """Another encoder class with the same settings: its key must differ."""


_ALTERNATIVE = {"amp": ("auto", "bf16"), "scaling": ("minmax", "percentile"), "how": ("attention", "concat"),
                "device": ("cpu", "auto")}


def _changed(name: str, value):
    """A different, valid value for the setting ``name``."""
    base = name.rsplit("__", 1)[-1]
    if isinstance(value, BaseEstimator):
        return OtherFeatures(**value.get_params()) if type(value) is RandomFeatures else RandomFeatures()
    if base in _ALTERNATIVE and isinstance(value, str):
        a, b = _ALTERNATIVE[base]
        return b if value == a else a
    if value is None:
        return RandomFeatures(n_features=4) if base == "backbone" else 2.0
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 2
    if isinstance(value, float):
        return value * 2 + 0.5
    if isinstance(value, str):
        return value + "-other"
    if hasattr(value, "with_name"):  # a path
        return value.with_name("other.pth")
    raise AssertionError(f"no alternative value for {name}={value!r}; extend _changed")


def _invariant(est, name: str) -> bool:
    """Whether the class that owns the setting ``name`` declares it output-invariant."""
    *path, base = name.split("__")
    owner = est
    for p in path:
        owner = owner.get_params(deep=False)[p]
    return base in type(owner)._output_invariant_params


def _key(est) -> str:
    return cache_key(encoder_fingerprint(est), {"kind": "arrays"}, "units", 64)


@pytest.mark.parametrize("name", NAMES)
def test_every_setting_but_the_invariant_ones_changes_the_key(fitted, name):
    est = fitted[name]
    base = _key(est)
    params = est.get_params(deep=True)
    assert _key(copy.deepcopy(est)) == base  # an equal encoder: the same key
    seen_invariant = set()
    for param, value in params.items():
        other = copy.deepcopy(est).set_params(**{param: _changed(param, value)})
        if _invariant(est, param):
            seen_invariant.add(param.rsplit("__", 1)[-1])
            assert _key(other) == base, f"{name}: {param} is declared invariant but changed the key"
        else:
            assert _key(other) != base, f"{name}: changing {param} left the key unchanged"
    assert "device" in seen_invariant
    # every declared name is a real constructor argument (a typo would silently key nothing)
    assert set(type(est)._output_invariant_params) <= set(est.get_params(deep=False))


def test_a_bf16_and_an_fp32_pretrained_get_different_keys(fitted):
    enc = fitted["Pretrained"]
    keys = {amp: _key(copy.deepcopy(enc).set_params(amp=amp)) for amp in ("auto", "bf16", "fp16", "off")}
    assert len(set(keys.values())) == 4
    assert _key(copy.deepcopy(enc).set_params(device="auto", batch_size=1, channels_last=False)) == _key(enc)


def test_refitting_on_other_chips_changes_the_key_through_the_state(fitted):
    enc = fitted["RandomFeatures"]
    again = clone(enc).fit(_chips(seed=1))
    assert encoder_fingerprint(again)["params"] == encoder_fingerprint(enc)["params"]
    assert encoder_fingerprint(again)["state"] != encoder_fingerprint(enc)["state"]


def test_fingerprint_is_json_with_class_params_and_state(fitted):
    fp = encoder_fingerprint(fitted["TemporalPool"])
    assert json.loads(json.dumps(fp)) == fp  # plain JSON, no default= needed
    assert fp["class"] == "eocausal.encoders.temporal.TemporalPool"
    assert fp["params"]["encoder"] == "eocausal.encoders.random_features.RandomFeatures"
    assert fp["params"]["encoder__n_features"] == 4 and "encoder__device" not in fp["params"]
    assert fp["state"] == fitted["TemporalPool"].state_hash() and len(fp["state"]) == 64
    pre = encoder_fingerprint(fitted["Pretrained"])
    assert pre["precision"] == {"precision": "float32"}  # amp='auto' on the CPU
    assert pre["params"]["weights"] == str(fitted["Pretrained"].weights)


def test_fingerprint_errors(fitted):
    with pytest.raises(NotFittedError, match="fit"):
        encoder_fingerprint(RandomFeatures())
    odd = copy.deepcopy(fitted["RandomFeatures"]).set_params(seed=object())
    with pytest.raises(InputError, match="seed=<object"):
        encoder_fingerprint(odd)


def test_embed_device_reaches_a_fitted_wrapped_encoder():
    seq = np.random.default_rng(0).uniform(0, 1, (3, 2, 2, 8, 8)).astype(np.float32)
    pool = TemporalPool(RandomFeatures(n_features=4, batch_size=1), how="mean_diff").fit(seq)
    df = pd.DataFrame({"id": list("abc"), "w": [0, 1, 0], "y": 0.0, "key": [0, 1, 2]})
    units = eocausal.Units.from_frame(df, id="id", treatment="w", outcome="y", image_key="key")
    images = seq.transpose(0, 1, 3, 4, 2)  # (n, T, H, W, C)
    Z = embed(units, eocausal.ArraySource(images), pool, device="cpu")
    assert pool.encoder.device == "cpu" and pool.encoder_.device == "cpu"
    assert np.allclose(Z.to_numpy(), pool.transform(seq), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- CUDA
@gpu
@needs_cuda
def test_cuda_bf16_and_fp32_outputs_differ_and_so_do_their_keys(weights):
    chips = _chips(n=8)
    bf16 = Pretrained(weights=weights, arch="vit", device="cuda", amp="bf16").fit(chips)
    fp32 = Pretrained(weights=weights, arch="vit", device="cuda", amp="off").fit(chips)
    a, b = bf16.transform(chips), fp32.transform(chips)
    assert not np.allclose(a, b, rtol=1e-5, atol=1e-6)  # bfloat16 keeps 8 bits of mantissa
    assert encoder_fingerprint(bf16)["precision"] == {"precision": "bfloat16"}
    assert encoder_fingerprint(fp32)["precision"] == {"precision": "float32"}
    assert _key(bf16) != _key(fp32)
    auto = Pretrained(weights=weights, arch="vit", device="cuda", amp="auto").fit(chips)  # 'auto' is bf16 on CUDA
    assert encoder_fingerprint(auto)["precision"] == {"precision": "bfloat16"}
