"""Pretrained backbones from local weights: naming, prefixes, band adaptation, normalization, errors.

Every checkpoint is saved by the test from a random initialisation (no download), as TorchGeo's
model tests do. Forward passes are checked against a functional re-implementation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eocausal
from eocausal.encoders import Pretrained, RandomFeatures
from eocausal.encoders.backbones import adapt_first_conv, build_backbone, extract_state_dict
from eocausal.encoders.device import run_batched
from eocausal.errors import DataFileError, DeviceError, InputError, MissingFileError, NotFittedError

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _random_state(arch: str, in_chans: int, seed: int = 0) -> dict:
    """A random backbone state dict with non-trivial batch-norm statistics and a classifier head."""
    torch.manual_seed(seed)
    sd = build_backbone(arch, in_chans).state_dict()
    g = torch.Generator().manual_seed(seed + 1)
    for k, v in sd.items():
        if k.endswith("running_mean") or (k.endswith(".bias") and "bn" in k) or k.endswith("downsample.1.bias"):
            sd[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif (k.endswith(".weight") and v.ndim == 1 and "norm" not in k) or k.endswith("downsample.1.weight"):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g)
    width = sd["layer4.1.bn2.weight"].shape[0] if "layer4.1.bn2.weight" in sd else 384
    sd["fc.weight"], sd["fc.bias"] = torch.randn(10, width), torch.zeros(10)
    return sd


def _chips(n=3, c=3, px=32, seed=0, high=255.0):
    return np.random.default_rng(seed).uniform(0, high, (n, c, px, px)).astype(np.float32)


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        False, 0.0, 1e-5)


def _manual_resnet18(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """ResNet-18 written out functionally from torchvision's definition."""
    x = F.max_pool2d(F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1")), 3, 2, 1)
    for i in range(1, 5):
        for j in range(2):
            p, stride = f"layer{i}.{j}", (2 if i > 1 and j == 0 else 1)
            out = F.relu(_bn(F.conv2d(x, sd[p + ".conv1.weight"], stride=stride, padding=1), sd, p + ".bn1"))
            out = _bn(F.conv2d(out, sd[p + ".conv2.weight"], padding=1), sd, p + ".bn2")
            short = x
            if p + ".downsample.0.weight" in sd:
                short = _bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride), sd, p + ".downsample.1")
            x = F.relu(out + short)
    return x.mean(dim=(2, 3))


def _save(path, sd, meta=None):
    torch.save(sd, path)
    if meta is not None:
        (path.parent / (path.name + ".json")).write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """A random ResNet-18 in torchvision naming under a Lightning-style 'state_dict' + 'model.' prefix."""
    sd = _random_state("resnet18", 3)
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    meta = {"arch": "resnet18", "in_chans": 3, "scale": 255, "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "bands": ["red", "green", "blue"]}
    _save(path, {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3}, meta)
    return path, sd, meta


def test_resnet18_equals_functional_forward_with_sidecar_normalization(r18):
    path, sd, meta = r18
    chips = _chips()
    enc = Pretrained(weights=path, device="cpu", batch_size=2)
    feats = enc.fit_transform(chips)
    assert feats.shape == (3, 512) and feats.dtype == np.float32
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    expect = _manual_resnet18(sd, (torch.from_numpy(chips) / 255 - mean) / std).numpy()
    assert np.allclose(feats, expect, rtol=1e-4, atol=1e-5)
    assert enc.norm_source_ == "sidecar" and enc.scale_ == 255 and enc.arch_ == "resnet18"
    assert enc.band_adaptation_ == "none" and enc.bands_ == meta["bands"]
    # deterministic: the same weights and batch size give bit-identical features, in a new encoder too
    again = Pretrained(weights=path, device="cpu", batch_size=2).fit(chips)
    assert np.array_equal(again.transform(chips), feats)
    assert again.state_hash() == enc.state_hash()


def test_constructor_normalization_overrides_the_sidecar(r18):
    path, _, meta = r18
    chips = _chips()
    plain = Pretrained(weights=path, mean=0.0, std=1.0, scale=1.0, device="cpu").fit(chips)
    assert plain.norm_source_ == "arguments"
    manual = (chips / 255 - np.reshape(meta["mean"], (1, 3, 1, 1))) / np.reshape(meta["std"], (1, 3, 1, 1))
    sidecar = Pretrained(weights=path, device="cpu").fit(chips)
    assert np.allclose(sidecar.transform(chips), plain.transform(manual.astype(np.float32)), rtol=1e-4, atol=1e-5)


def test_without_normalization_metadata_the_band_moments_are_learned(tmp_path):
    path = _save(tmp_path / "bare.pt", _random_state("resnet18", 3))
    chips = _chips(n=4)
    enc = Pretrained(weights=path, scale=255, device="cpu").fit(chips)
    assert enc.norm_source_ == "data" and enc.arch_ == "resnet18"
    band = (chips.astype(np.float64) / 255).transpose(1, 0, 2, 3).reshape(3, -1)
    assert np.allclose(enc.mean_, band.mean(1), rtol=1e-5) and np.allclose(enc.std_, band.std(1), rtol=1e-5)


@pytest.mark.parametrize(("ckpt_bands", "data_bands"), [(3, 7), (7, 3), (7, 7), (7, 1), (3, 6)])
def test_first_conv_is_adapted_to_the_data_bands(tmp_path, ckpt_bands, data_bands):
    st = pytest.importorskip("safetensors.torch")
    sd = _random_state("resnet18", ckpt_bands, seed=ckpt_bands)
    path = tmp_path / "w.safetensors"
    st.save_file({f"backbone.{k}": v.contiguous() for k, v in sd.items()}, str(path))  # timm/TorchGeo prefix
    chips = _chips(n=2, c=data_bands, px=24)
    enc = Pretrained(weights=path, mean=0.5, std=0.25, scale=255, device="cpu").fit(chips)
    w0, w = sd["conv1.weight"], enc.model_.conv1.weight.detach()
    assert w.shape == (64, data_bands, 7, 7) and enc.ckpt_in_chans_ == ckpt_bands
    if data_bands == ckpt_bands:
        expect, label = w0, "none"
    elif data_bands == 1:
        expect, label = w0.sum(1, keepdim=True), "sum"
    else:
        expect = torch.stack([w0[:, j % ckpt_bands] for j in range(data_bands)], 1) * ckpt_bands / data_bands
        label = "repeated cyclically"
    assert torch.allclose(w, expect, atol=1e-6)
    assert label in enc.band_adaptation_
    if data_bands % ckpt_bands == 0 or data_bands == 1:  # then a constant image excites it as before
        assert torch.allclose(w.sum((1, 2, 3)), w0.sum((1, 2, 3)), atol=1e-4)
    if ckpt_bands == 3 and data_bands == 7:  # the whole forward with the adapted kernel
        ref = dict(sd, **{"conv1.weight": w})
        x = (torch.from_numpy(chips) / 255 - 0.5) / 0.25
        assert np.allclose(enc.transform(chips), _manual_resnet18(ref, x).numpy(), rtol=1e-4, atol=1e-5)


def test_sidecar_mean_is_repeated_with_the_bands(r18):
    path, _, meta = r18
    enc = Pretrained(weights=path, device="cpu").fit(_chips(n=2, c=5))
    assert np.allclose(enc.mean_, np.resize(meta["mean"], 5)) and "cyclically" in enc.norm_source_


def test_timm_names_prefixes_and_heads_are_recognised():
    sd = _random_state("resnet18", 3)
    for wrapped in ({f"module.model.{k}": v for k, v in sd.items()}, {"model": sd},
                    {**{f"encoder.{k}": v for k, v in sd.items()}, "projector.0.weight": torch.zeros(2)}):
        out, prefix = extract_state_dict(wrapped)
        assert "fc.weight" not in out and "conv1.weight" in out and "layer1.0.conv1.weight" in out
        assert "projector.0.weight" not in out
    with pytest.raises(InputError, match="no first convolution"):
        extract_state_dict({"stem.weight": torch.zeros(1)})


def test_resnet50_reads_its_layout_from_the_file(tmp_path):
    torch.manual_seed(0)
    sd = {f"backbone.{k}": v for k, v in build_backbone("resnet50", 4).state_dict().items()}
    meta = {"model": "resnet50", "in_chans": 4, "scale": 10000, "mean": [0.1] * 4, "std": [0.2] * 4}
    path = _save(tmp_path / "r50.pth", sd, meta)
    enc = Pretrained(weights=path, device="cpu")
    feats = enc.fit_transform(_chips(n=2, c=4, px=32, high=10000))
    assert feats.shape == (2, 2048) and enc.arch_ == "resnet50" and np.isfinite(feats).all()


def test_mismatched_weights_are_refused_with_the_first_mismatches(r18, tmp_path):
    path, sd, _ = r18
    with pytest.raises(InputError, match=r"missing \d+: layer1\.0\.conv3\.weight") as err:
        Pretrained(weights=path, arch="resnet50", device="cpu").fit(_chips(n=1))
    assert "wrong shape" in str(err.value) and "arch=" in str(err.value)
    bad = dict(sd)
    bad["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    with pytest.raises(InputError, match=r"layer2\.0\.conv1\.weight: file \(128, 32, 3, 3\)"):
        Pretrained(weights=_save(tmp_path / "bad.pth", bad), device="cpu").fit(_chips(n=1))
    with pytest.raises(InputError, match="in_chans=4"):
        Pretrained(weights=_save(tmp_path / "side.pth", sd, {"in_chans": 4}), device="cpu").fit(_chips(n=1))
    with pytest.raises(InputError, match="arch='resnet7'"):
        Pretrained(weights=path, arch="resnet7", device="cpu").fit(_chips(n=1))
    with pytest.raises(InputError, match="mean: 4 values"):
        Pretrained(weights=path, mean=[0.0] * 4, std=1.0, device="cpu").fit(_chips(n=1))


def test_a_pickled_object_is_not_loaded(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": _random_state("resnet18", 3), "optimizer": object}, path)
    with pytest.raises(DataFileError, match="weights_only"):
        Pretrained(weights=path, device="cpu").fit(_chips(n=1))


def test_missing_weights_file_says_where_to_put_it(tmp_path):
    where = tmp_path / "models" / "resnet50_s2.pth"
    with pytest.raises(MissingFileError) as err:
        Pretrained(weights=where).fit(_chips(n=1))
    msg = str(err.value)
    assert str(where) in msg and "never downloads" in msg and "torch.save" in msg and "TorchGeo" in msg
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(NotFittedError):
        Pretrained(weights=where).transform(_chips(n=1))


def test_chips_are_checked(r18):
    path, _, _ = r18
    enc = Pretrained(weights=path, device="cpu").fit(_chips(n=1))
    with pytest.raises(InputError, match="TemporalPool"):
        enc.transform(np.zeros((1, 2, 3, 8, 8), np.float32))
    with pytest.raises(InputError, match="5 bands"):
        enc.transform(_chips(n=1, c=5))
    bad = _chips(n=3)
    bad[2, 1, 4, 4] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        enc.transform(bad)


# ----------------------------------------------------------------------------- ViT
def _manual_vit(sd, x, patch, heads, grid0):
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    gh, gw = t.shape[-2:]
    t = t.flatten(2).transpose(1, 2)
    pos = sd["pos_embed"]
    if (gh, gw) != grid0:
        p = pos[:, 1:].reshape(1, *grid0, -1).permute(0, 3, 1, 2)
        p = F.interpolate(p, size=(gh, gw), mode="bicubic", align_corners=False, antialias=True)
        pos = torch.cat([pos[:, :1], p.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], 1)
    t = torch.cat([sd["cls_token"].expand(len(t), -1, -1), t], 1) + pos
    d = t.shape[-1]
    for i in range(len({k.split(".")[1] for k in sd if k.startswith("blocks.")})):
        p = f"blocks.{i}."
        h = F.layer_norm(t, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
        q, k, v = (h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]).chunk(3, dim=-1)
        split = lambda z: z.reshape(len(z), -1, heads, d // heads).transpose(1, 2)  # noqa: E731
        a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / np.sqrt(d // heads), -1) @ split(v)
        t = t + a.transpose(1, 2).reshape(len(t), -1, d) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = F.layer_norm(t, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
        h = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        t = t + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return F.layer_norm(t, (d,), sd["norm.weight"], sd["norm.bias"], 1e-6)[:, 0]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A 2-block ViT (dim 32, 2 heads, patch 8, trained size 32) in timm naming, with a head."""
    from eocausal.encoders.backbones import VisionTransformer

    torch.manual_seed(1)
    model = VisionTransformer(in_chans=3, patch_size=8, img_size=32, embed_dim=32, depth=2, num_heads=2)
    sd = {k: v + 0.02 * torch.randn_like(v) if "norm" in k else v for k, v in model.state_dict().items()}
    sd["head.weight"], sd["head.bias"] = torch.zeros(5, 32), torch.zeros(5)
    path = tmp_path_factory.mktemp("vit") / "vit.pth"
    _save(path, {f"encoder.{k}": v for k, v in sd.items()},
          {"model": "vit_small_patch8_32", "num_heads": 2, "scale": 1, "mean": [0, 0, 0], "std": [1, 1, 1]})
    return path, sd


def test_vit_equals_functional_forward_at_trained_and_other_sizes(tiny_vit):
    path, sd = tiny_vit
    x32, x48 = _chips(n=2, px=32, high=1.0), _chips(n=2, px=48, high=1.0)
    enc = Pretrained(weights=path, arch="vit", device="cpu").fit(x32)
    assert enc.model_.num_features == 32
    for x in (x32, x48):  # 48 px: 6x6 patches, the 4x4 position embedding is resampled
        expect = _manual_vit(sd, torch.from_numpy(x), 8, 2, (4, 4)).numpy()
        assert np.allclose(enc.transform(x), expect, rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="multiple of the ViT patch size 8"):
        enc.transform(_chips(n=1, px=36))
    resized = Pretrained(weights=path, arch="vit", image_size=32, device="cpu").fit(x32)
    x40 = _chips(n=2, px=40, high=1.0)
    small = F.interpolate(torch.from_numpy(x40), size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert np.allclose(resized.transform(x40), enc.transform(small.numpy()), rtol=1e-4, atol=1e-5)


def test_vit_named_small_does_not_fit_a_tiny_file(tiny_vit):
    with pytest.raises(InputError, match="wrong shape"):
        Pretrained(weights=tiny_vit[0], device="cpu").fit(_chips(n=1))  # sidecar says vit_small: 384 dims


# ----------------------------------------------------------------------------- batching and embed
def test_run_batched_halves_the_batch_on_out_of_memory():
    sizes = []

    def fn(batch):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.as_tensor(batch) * 2

    x = np.arange(10, dtype=np.float32)
    assert np.array_equal(run_batched(fn, x, 16), x * 2)
    assert sizes[:4] == [10, 8, 4, 2] and max(sizes[4:]) <= 2

    def never(batch):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(DeviceError, match="single chip"):
        run_batched(never, x, 4)

    def broken(batch):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batched(broken, x, 4)


def test_embed_with_a_pretrained_encoder(r18):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 32, 32, 3)).astype(np.uint8)
    import pandas as pd

    df = pd.DataFrame({"id": [f"u{i}" for i in range(6)], "w": [0, 1] * 3, "y": 0.0, "key": [0, 0, 1, 2, 3, 3]})
    units = eocausal.Units.from_frame(df, id="id", treatment="w", outcome="y", image_key="key")
    Z = eocausal.embed(units, eocausal.ArraySource(images), Pretrained(weights=r18[0]), device="cpu")
    assert Z.shape == (6, 512) and np.array_equal(Z.iloc[0].to_numpy(), Z.iloc[1].to_numpy())


# ----------------------------------------------------------------------------- CUDA
@gpu
@needs_cuda
def test_cuda_fp32_equals_cpu(r18, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    chips = _chips(n=5, px=64)
    cpu = Pretrained(weights=r18[0], device="cpu").fit(chips).transform(chips)
    cuda = Pretrained(weights=r18[0], device="cuda", amp="off").fit(chips).transform(chips)
    assert np.allclose(cuda, cpu, rtol=1e-3, atol=1e-4)
    rf_cpu = RandomFeatures(n_features=64, seed=0, device="cpu").fit(chips)
    rf_cuda = RandomFeatures(n_features=64, seed=0, device="cuda").fit(chips)
    assert np.allclose(rf_cuda.transform(chips), rf_cpu.transform(chips), rtol=1e-4, atol=1e-5)


@gpu
@needs_cuda
def test_cuda_bf16_resnet50_runs(tmp_path):
    torch.manual_seed(0)
    path = _save(tmp_path / "r50.pth", build_backbone("resnet50", 13).state_dict(),
                 {"arch": "resnet50", "in_chans": 13, "scale": 10000, "mean": [0.0] * 13, "std": [1.0] * 13})
    chips = _chips(n=70, c=13, px=64, high=10000)
    enc = Pretrained(weights=path, device="cuda", amp="bf16", batch_size=32).fit(chips)
    feats = enc.transform(chips)
    ref = Pretrained(weights=path, device="cuda", amp="off").fit(chips).transform(chips)
    assert feats.shape == (70, 2048) and feats.dtype == np.float32 and np.isfinite(feats).all()
    corr = np.corrcoef(feats.ravel(), ref.ravel())[0, 1]
    assert corr > 0.99


def test_adapt_first_conv_keeps_dtype():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float16)
    out, how = adapt_first_conv(w, 5)
    assert out.dtype == torch.float16 and out.shape == (4, 5, 3, 3) and "3/5" in how
