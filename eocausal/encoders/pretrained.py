"""Pretrained backbones (ResNet, ViT) from a local weights file; no download at run time.

The weights file is a state dict saved by torch (``.pth``/``.pt``/``.bin``, loaded with
``weights_only=True``) or a ``.safetensors`` file, in torchvision, timm or TorchGeo naming,
optionally under a prefix (``model.``, ``backbone.``, ``encoder.``, ``module.``). Next to it a
sidecar JSON (``<weights>.json``, or the weights' name with ``.json`` as suffix) carries the
metadata the weights were trained with (TorchGeo's ``weights.meta`` fields)::

    {"arch": "resnet50", "in_chans": 13, "scale": 10000, "mean": [...], "std": [...], "bands": [...]}

Preprocessing, in this order: ``x / scale``, then ``(x - mean) / std`` per band, then (if
``image_size``) a bilinear resize. Constructor arguments override the sidecar; without either,
``scale`` is 1 and the per-band mean and std are learned from the chips passed to ``fit``.
Chips with another band count than the weights get an adapted first convolution
(:func:`eocausal.encoders.backbones.adapt_first_conv`), reported in ``band_adaptation_``.
"""

from __future__ import annotations

import hashlib
import io
import json
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

from eocausal.encoders._base import EncoderBase, hash_arrays
from eocausal.encoders.backbones import (RESNETS, VITS, adapt_first_conv, build_backbone, extract_state_dict,
                                         first_conv_key, infer_arch, load_checked)
from eocausal.encoders.device import autocast, check_amp, resolve_device, run_batched, to_tensor
from eocausal.errors import DataFileError, InputError, MissingFileError, require

_WHERE = (
    "eocausal never downloads weights at run time. Put a state dict at that path: download it once "
    "on a machine with internet, e.g. TorchGeo's SSL4EO-S12 ResNet-50 "
    "(`from torchgeo.models import ResNet50_Weights; w = ResNet50_Weights.SENTINEL2_ALL_MOCO; "
    "torch.save(w.get_state_dict(progress=True), 'resnet50_s2.pth')`, with `w.meta` in "
    "'resnet50_s2.pth.json'), or `torch.save(model.state_dict(), path)` for a torchvision/timm model; "
    "copy the file (and its .json sidecar with arch, in_chans, scale, mean, std, bands) here and pass "
    "its path as weights="
)

_NONFINITE = "chips: non-finite pixels; fill nodata before encoding"


def _sidecar_path(path: pathlib.Path) -> pathlib.Path | None:
    for cand in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if cand.is_file():
            return cand
    return None


def band_moments(x: np.ndarray, band_axis: int, *, scale: float = 1.0, chunk: int = 64):
    """Per-band mean and population std of ``x / scale``, in float64 over chunks of the first axis.

    Memory stays at one chunk (Chan et al.'s pairwise update of means and sums of squares).
    Returns float64 arrays (C,); a constant band has std 0.
    """
    n_tot, mean, m2 = 0, 0.0, 0.0
    for s in range(0, len(x), chunk):
        a = np.moveaxis(np.asarray(x[s:s + chunk], dtype=np.float64) / scale, band_axis, 0)
        a = a.reshape(a.shape[0], -1)
        nb, mb = a.shape[1], a.mean(axis=1)
        m2b = ((a - mb[:, None]) ** 2).sum(axis=1)
        delta, tot = mb - mean, n_tot + nb
        mean = mean + delta * nb / tot
        m2 = m2 + m2b + delta**2 * n_tot * nb / tot
        n_tot = tot
    return np.asarray(mean, dtype=np.float64), np.sqrt(np.asarray(m2, dtype=np.float64) / max(n_tot, 1))


def _band_vector(values, n: int, name: str, ckpt_bands: int) -> tuple[np.ndarray, bool]:
    v = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if v.size == 1:
        return np.full(n, float(v[0])), False
    if v.size == n:
        return v, False
    if v.size == ckpt_bands:  # follows the first-conv adaptation: bands repeated cyclically
        return np.resize(v, n), True
    raise InputError(f"{name}: {v.size} values, the chips have {n} bands and the weights {ckpt_bands}")


def _arch_name(name) -> str:
    """'resnet50.tv_in1k' -> 'resnet50'; 'vit_small_patch16_224' -> 'vit_small' (timm/TorchGeo names)."""
    name = str(name).split(".")[0].lower()
    return "_".join(name.split("_")[:2]) if name.startswith("vit_") else name


class Pretrained(EncoderBase):
    """Features of a pretrained ResNet or ViT loaded from a local weights file (a scikit-learn transformer).

    Parameters
    ----------
    weights : str or path
        The state-dict file (``.pth``, ``.pt``, ``.bin`` or ``.safetensors``).
    arch : str, optional
        'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'vit_tiny', 'vit_small',
        'vit_base', 'vit_large'. Default: the sidecar's ``arch``, else read from the state dict.
    mean, std : sequence of float, optional
        Per-band normalization in scaled units (after division by ``scale``); override the sidecar.
    scale : float, optional
        Chips are divided by this first (255 for 8-bit, 10000 for Sentinel-2 L1C/L2A reflectance).
    image_size : int, optional
        Resize chips to ``image_size`` x ``image_size`` (bilinear) before the backbone.
    num_heads : int, optional
        ViT attention heads when neither the arch name nor the sidecar gives them.
    device : str
        'auto', 'cpu', 'cuda', 'mps'.
    batch_size : int
        Chips per forward pass (halved on out-of-memory).
    amp : {'auto', 'bf16', 'fp16', 'off'}
        Autocast on CUDA ('auto' = bf16); CPU and MPS always run float32.
    channels_last : bool
        Channels-last memory format on CUDA.

    Attributes
    ----------
    model_ : torch.nn.Module
        The backbone (eval mode, frozen).
    arch_, in_chans_, ckpt_in_chans_, band_adaptation_ : str, int, int, str
        Architecture, data bands, checkpoint bands and how the first layer was adapted.
    mean_, std_ : numpy.ndarray (C,)
        Per-band normalization applied; ``norm_source_`` says where it came from.
    scale_ : float

    Notes
    -----
    ``device``, ``batch_size`` and ``channels_last`` decide how the features are computed, not
    their values (up to float rounding), so they are left out of the embedding-cache key
    (:func:`eocausal.encoders.embed.encoder_fingerprint`); ``amp`` is in it, with the precision
    it gives on the device (bfloat16 features differ from float32 ones).
    """

    _output_invariant_params = ("device", "batch_size", "channels_last")
    _fitted_attr = "model_"

    def __init__(self, *, weights, arch: str | None = None, mean=None, std=None, scale: float | None = None,
                 image_size: int | None = None, num_heads: int | None = None, device: str = "auto",
                 batch_size: int = 64, amp: str = "auto", channels_last: bool = True):
        self.weights = weights
        self.arch = arch
        self.mean = mean
        self.std = std
        self.scale = scale
        self.image_size = image_size
        self.num_heads = num_heads
        self.device = device
        self.batch_size = batch_size
        self.amp = amp
        self.channels_last = channels_last

    def _hash_state(self, h) -> None:
        """The weights file's content (not its path), the resolved preprocessing and architecture."""
        h.update(json.dumps({"weights_sha256": self.weights_sha256_, "arch": self.arch_,
                             "in_chans": self.in_chans_, "ckpt_in_chans": self.ckpt_in_chans_,
                             "band_adaptation": self.band_adaptation_, "scale": self.scale_,
                             "num_features": self.num_features_}, sort_keys=True).encode())
        hash_arrays(h, self.mean_, self.std_)

    def _validate(self, chips, check_finite: bool = True) -> np.ndarray:
        x = np.asarray(chips)
        if x.ndim == 5:
            raise InputError("chips: got image sequences (n, T, C, H, W); wrap the encoder as "
                             "TemporalPool(Pretrained(...)) or pass single images (n, C, H, W)")
        if x.ndim != 4:
            raise InputError(f"chips: expected (n, C, H, W), got shape {x.shape}")
        if check_finite and not np.isfinite(x).all():
            raise InputError(_NONFINITE)
        return x

    # ------------------------------------------------------------------ loading
    def _read(self) -> tuple[dict, dict, str]:
        path = pathlib.Path(self.weights).expanduser()
        if not path.is_file():
            raise MissingFileError(f"weights: no file at {path}. {_WHERE}")
        raw = path.read_bytes()
        if path.suffix == ".safetensors":
            st = require("safetensors.torch", "pretrained", "reading .safetensors weights")
            try:
                obj = st.load(raw)
            except Exception as exc:  # safetensors raises its own error types
                raise DataFileError(f"weights: {path} is not a readable safetensors file ({exc})") from exc
        else:
            try:
                obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            except Exception as exc:  # pickle.UnpicklingError, RuntimeError, EOFError ...
                raise DataFileError(
                    f"weights: {path} is not a plain torch state dict ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}). Only weights_only loading is allowed; "
                    "re-save it with torch.save(model.state_dict(), path) or as .safetensors"
                ) from exc
        meta = {}
        side = _sidecar_path(path)
        if side is not None:
            try:
                meta = json.loads(side.read_text())
            except (OSError, ValueError) as exc:
                raise DataFileError(f"weights sidecar {side}: not readable JSON ({exc})") from exc
            if not isinstance(meta, dict):
                raise DataFileError(f"weights sidecar {side}: expected a JSON object, got {type(meta).__name__}")
        return obj, meta, hashlib.sha256(raw).hexdigest()

    # ------------------------------------------------------------------ fit
    def fit(self, chips, y=None) -> "Pretrained":
        """Load the weights and set the preprocessing for chips shaped like ``chips`` (n, C, H, W).

        ``y`` is ignored (scikit-learn's signature, so the encoder fits in a Pipeline).
        """
        x = self._validate(chips)
        if self.image_size is not None and int(self.image_size) < 1:
            raise InputError(f"image_size={self.image_size}: must be a positive number of pixels")
        obj, meta, digest = self._read()
        sd, _ = extract_state_dict(obj)
        key = first_conv_key(sd)
        c_ckpt, c = sd[key].shape[1], x.shape[1]
        if meta.get("in_chans") is not None and int(meta["in_chans"]) != c_ckpt:
            raise InputError(f"weights sidecar: in_chans={meta['in_chans']} but the first layer "
                             f"{key} takes {c_ckpt} bands")
        arch = _arch_name(self.arch or meta.get("arch") or meta.get("model") or infer_arch(sd))
        if arch not in RESNETS and arch not in VITS and arch not in ("resnet", "vit"):
            raise InputError(f"arch={arch!r}: use one of {', '.join([*RESNETS, *VITS])}")
        sd[key], self.band_adaptation_ = adapt_first_conv(sd[key], c)
        model = build_backbone(arch, c, sd, num_heads=self.num_heads or meta.get("num_heads"))
        load_checked(model, sd, source=f"weights {self.weights}")
        model.eval().requires_grad_(False)

        scale = self.scale if self.scale is not None else meta.get("scale", 1.0)
        try:
            self.scale_ = float(scale)
        except (TypeError, ValueError):
            self.scale_ = float("nan")
        if not np.isfinite(self.scale_) or self.scale_ <= 0:
            raise InputError(f"scale={scale!r}: must be a positive number (the divisor applied to the chips first)")
        mean = self.mean if self.mean is not None else meta.get("mean")
        std = self.std if self.std is not None else meta.get("std")
        src = "arguments" if self.mean is not None else ("sidecar" if mean is not None else "data")
        if mean is None or std is None:
            if (mean is None) != (std is None):
                raise InputError("mean/std: give both (in the constructor or the sidecar) or neither")
            mean, std = band_moments(x, 1, scale=self.scale_)
            std = np.where(std > 0, std, 1.0)
        mean, cyc_m = _band_vector(mean, c, "mean", c_ckpt)
        std, cyc_s = _band_vector(std, c, "std", c_ckpt)
        if (std <= 0).any():
            raise InputError(f"std: must be positive, got {std.tolist()}")
        self.norm_source_ = src + (" (repeated cyclically over the bands)" if cyc_m or cyc_s else "")
        self.mean_, self.std_ = mean.astype(np.float32), std.astype(np.float32)
        self.bands_ = meta.get("bands")
        self.arch_ = arch if arch in RESNETS or arch in VITS else infer_arch(sd)
        self.in_chans_, self.ckpt_in_chans_ = c, int(c_ckpt)
        self.num_features_ = int(model.num_features)
        self.weights_sha256_ = digest
        self.sidecar_ = meta
        self.model_ = model
        return self

    # ------------------------------------------------------------------ forward
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean_, device=x.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std_, device=x.device).view(1, -1, 1, 1)
        x = (x / self.scale_ - mean) / std
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            shrink = min(x.shape[-2:]) > int(self.image_size)
            x = F.interpolate(x, size=(int(self.image_size),) * 2, mode="bilinear", align_corners=False,
                              antialias=shrink)
        return x

    def _model_on(self, dev: torch.device) -> torch.nn.Module:
        model = self.model_.to(dev)
        if dev.type == "cuda" and self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable float32 features of raw chips ``x`` (n, C, H, W), on ``x``'s device."""
        self._check_fitted()
        if x.ndim != 4 or x.shape[1] != self.in_chans_:
            raise InputError(f"x: expected (n, {self.in_chans_}, H, W), got {tuple(x.shape)}")
        return self._model_on(x.device)(self._prepare(x.float())).float()

    def transform(self, chips) -> np.ndarray:
        """Pooled penultimate features (n, num_features_) float32."""
        self._check_fitted()
        x = self._validate(chips, check_finite=False)  # checked per batch, on the device
        if x.shape[1] != self.in_chans_:
            raise InputError(f"chips: {x.shape[1]} bands, the encoder was fitted on {self.in_chans_}")
        check_amp(self.amp)
        dev = resolve_device(self.device)
        model = self._model_on(dev)

        def run(batch):
            with torch.inference_mode(), autocast(dev, self.amp):
                xb = to_tensor(batch, dev)
                if not bool(torch.isfinite(xb).all()):
                    raise InputError(_NONFINITE)
                xb = self._prepare(xb)
                if dev.type == "cuda" and self.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                return model(xb).float()

        return run_batched(run, x, self.batch_size).astype(np.float32, copy=False)
