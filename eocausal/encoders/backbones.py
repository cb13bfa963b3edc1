"""Backbone architectures in plain torch, with torchvision/timm parameter names.

ResNet-18/34/50/101/152 (He et al. 2016; torchvision/timm layout ``conv1, bn1, layer1.0.conv1,
..., fc``) and ViT (Dosovitskiy et al. 2021; timm layout ``patch_embed.proj, cls_token,
pos_embed, blocks.N.attn.qkv, ..., norm, head``), so state dicts saved by torchvision, timm or
TorchGeo load without conversion. Each backbone's ``forward`` returns the pooled penultimate
features: global-average-pooled ``layer4`` for a ResNet (512 or 2048 dims), the final-normed
class token (or the mean patch token with ``fc_norm``) for a ViT.

Helpers map a checkpoint onto these modules: :func:`extract_state_dict` unwraps and strips
prefixes (``model.``, ``backbone.``, ``encoder.``, ``module.``, ``_orig_mod.``) and drops the
classifier head; :func:`adapt_first_conv` maps the first convolution to another band count as
timm's ``adapt_input_conv`` does (which TorchGeo uses); :func:`load_checked` loads strictly and
lists the first mismatches.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from eocausal.errors import InputError

RESNETS = {  # name -> (block kind, blocks per stage)
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
VITS = {  # name -> (embed_dim, depth, num_heads); patch and image size come from the weights
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
}
_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "_orig_mod.")
_HEADS = ("fc.", "head.", "head_drop.", "pre_logits.", "decoder", "mask_token")  # classifier, MAE decoder


# ----------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride here: ResNet v1.5
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _downsample(inplanes, planes * 4, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _downsample(inplanes: int, outplanes: int, stride: int):
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes))


class ResNet(nn.Module):
    """ResNet feature extractor; ``forward`` returns (n, 512 * expansion) pooled features."""

    def __init__(self, block: str = "basic", layers=(2, 2, 2, 2), in_chans: int = 3):
        super().__init__()
        cls = BasicBlock if block == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, n_blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n_blocks):
                blocks.append(cls(inplanes, planes, 2 if (i > 0 and j == 0) else 1))
                inplanes = planes * cls.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


# ----------------------------------------------------------------------------- ViT
class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class _LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x):
        return x * self.gamma


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_hidden, qkv_bias, layer_scale):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads, qkv_bias)
        self.ls1 = _LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, mlp_hidden)
        self.ls2 = _LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT feature extractor (timm names); ``forward`` returns (n, embed_dim) pooled features.

    Images whose patch grid differs from the one the position embedding was trained on get a
    bicubically resampled position embedding (as timm's ``resample_abs_pos_embed``).
    """

    def __init__(self, *, in_chans=3, patch_size=16, img_size=224, embed_dim=384, depth=12, num_heads=6,
                 mlp_hidden=None, qkv_bias=True, class_token=True, no_embed_class=False, layer_scale=False,
                 pool="token"):
        super().__init__()
        if embed_dim % num_heads:
            raise InputError(f"num_heads={num_heads}: does not divide embed_dim={embed_dim}")
        self.patch_size, self.grid = patch_size, (img_size // patch_size, img_size // patch_size)
        self.no_embed_class, self.pool, self.num_features = no_embed_class, pool, embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        n_pos = self.grid[0] * self.grid[1] + (1 if class_token and not no_embed_class else 0)
        self.pos_embed = nn.Parameter(torch.randn(1, n_pos, embed_dim) * 0.02)
        self.blocks = nn.Sequential(*[_Block(embed_dim, num_heads, mlp_hidden or 4 * embed_dim, qkv_bias,
                                             layer_scale) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6) if pool == "token" else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if pool == "avg" else nn.Identity()

    def _pos(self, grid: tuple[int, int]) -> torch.Tensor:
        n_prefix = 1 if (self.cls_token is not None and not self.no_embed_class) else 0
        pos = self.pos_embed
        if grid == self.grid:
            return pos
        prefix, patch = pos[:, :n_prefix], pos[:, n_prefix:]
        d = patch.shape[-1]
        patch = patch.reshape(1, *self.grid, d).permute(0, 3, 1, 2)
        patch = F.interpolate(patch.float(), size=grid, mode="bicubic", align_corners=False, antialias=True)
        return torch.cat([prefix, patch.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d).to(pos.dtype)], 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise InputError(f"chips: {h}x{w} px is not a multiple of the ViT patch size {self.patch_size}; "
                             f"pass image_size= (a multiple of {self.patch_size}) to resize")
        x = self.patch_embed.proj(x)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        pos = self._pos(grid)
        if self.cls_token is None:
            x = x + pos
        elif self.no_embed_class:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x + pos], 1)
        else:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + pos
        x = self.norm(self.blocks(x))
        if self.pool == "token" and self.cls_token is not None:
            return x[:, 0]
        start = 1 if self.cls_token is not None else 0
        return self.fc_norm(x[:, start:].mean(dim=1))


# ----------------------------------------------------------------------------- checkpoints
def extract_state_dict(obj) -> tuple[dict, str]:
    """The backbone's tensors from a loaded checkpoint, prefix stripped, classifier head dropped.

    Unwraps ``{"state_dict": ...}``, ``{"model": ...}`` and ``{"model_state_dict": ...}``; finds
    the prefix (a chain of ``module.``, ``model.``, ``backbone.``, ``encoder.``, ``_orig_mod.``)
    in front of ``conv1.weight`` or ``patch_embed.proj.weight``; keeps the keys under it and drops
    the classifier head (``fc.*``, ``head.*``) and an MAE decoder (``decoder*``, ``mask_token``).

    Returns
    -------
    (dict, str)
        The state dict and the prefix that was stripped.
    """
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model_state_dict", "model", "module")
                          if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise InputError(f"weights: expected a state dict (a dict of tensors), got {type(obj).__name__}")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    pattern = re.compile(r"^((?:%s)*)(conv1\.weight|patch_embed\.proj\.weight)$"
                         % "|".join(re.escape(p) for p in _PREFIXES))
    found = sorted((m.group(1) for k in sd if (m := pattern.match(k))), key=len)
    if not found:
        raise InputError(
            "weights: no first convolution ('conv1.weight' for a ResNet, 'patch_embed.proj.weight' for a "
            f"ViT, optionally under {', '.join(_PREFIXES)}) in the state dict; it holds keys like "
            f"{list(sd)[:6]}"
        )
    prefix = found[0]
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    sd = {k: v for k, v in sd.items() if not k.startswith(_HEADS)}
    return sd, prefix


def first_conv_key(sd: dict) -> str:
    return "conv1.weight" if "conv1.weight" in sd else "patch_embed.proj.weight"


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> tuple[torch.Tensor, str]:
    """Map a first-layer kernel (O, C_ckpt, k, k) to ``in_chans`` input bands.

    As timm's ``adapt_input_conv`` (used by TorchGeo): one band -> the sum over the checkpoint's
    bands; otherwise the checkpoint's filters repeated cyclically over the bands, truncated to
    ``in_chans`` and rescaled by C_ckpt / in_chans (timm's rule for C_ckpt = 3, generalised). A
    constant image then excites the layer as before when ``in_chans`` is 1 or a multiple of
    C_ckpt, and about as before otherwise.

    Returns
    -------
    (torch.Tensor, str)
        The kernel and a description of what was done ('none' when the counts agree).
    """
    c_ckpt = weight.shape[1]
    if in_chans == c_ckpt:
        return weight, "none"
    w = weight.float()
    if in_chans == 1:
        return w.sum(dim=1, keepdim=True).to(weight.dtype), f"sum of the checkpoint's {c_ckpt} bands"
    reps = math.ceil(in_chans / c_ckpt)
    w = w.repeat(1, reps, 1, 1)[:, :in_chans] * (c_ckpt / in_chans)
    how = f"{c_ckpt} checkpoint bands repeated cyclically to {in_chans}, scaled by {c_ckpt}/{in_chans}"
    return w.to(weight.dtype), how


def infer_arch(sd: dict) -> str:
    """The architecture family a (stripped) state dict belongs to: a RESNETS/VITS name or 'resnet'/'vit'."""
    if "patch_embed.proj.weight" in sd:
        dim = sd["patch_embed.proj.weight"].shape[0]
        depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
        return next((n for n, (d, dp, _) in VITS.items() if (d, dp) == (dim, depth)), "vit")
    kind, layers = _resnet_layout(sd)
    return next((n for n, spec in RESNETS.items() if spec == (kind, layers)), "resnet")


def _resnet_layout(sd: dict) -> tuple[str, tuple[int, ...]]:
    kind = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    layers = tuple(len({k.split(".")[1] for k in sd if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    return kind, layers


def _vit_layout(sd: dict) -> dict:
    w = sd["patch_embed.proj.weight"]
    dim, patch = w.shape[0], w.shape[-1]
    cls = "cls_token" in sd
    n_pos = sd["pos_embed"].shape[1] if "pos_embed" in sd else 0
    side = math.isqrt(n_pos)
    no_embed_class = cls and side * side == n_pos
    if not no_embed_class and cls:
        side = math.isqrt(n_pos - 1)
    return {"patch_size": patch, "img_size": side * patch, "embed_dim": dim,
            "depth": len({k.split(".")[1] for k in sd if k.startswith("blocks.")}),
            "mlp_hidden": sd["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in sd else None,
            "qkv_bias": "blocks.0.attn.qkv.bias" in sd, "class_token": cls, "no_embed_class": no_embed_class,
            "layer_scale": "blocks.0.ls1.gamma" in sd, "pool": "avg" if "fc_norm.weight" in sd else "token"}


def build_backbone(arch: str, in_chans: int, sd: dict | None = None, num_heads: int | None = None) -> nn.Module:
    """A randomly initialised backbone for ``arch``, shaped after ``sd`` where the name leaves it open.

    ``arch`` is a RESNETS or VITS name, or 'resnet'/'vit' to take the whole layout from ``sd``.
    A ViT's patch and image size, pooling and biases always come from ``sd`` when given; its
    number of heads from ``num_heads``, the VITS table, or embed_dim // 64 (timm's convention).
    """
    if arch in RESNETS or arch == "resnet":
        kind, layers = RESNETS[arch] if arch in RESNETS else _resnet_layout(sd or {})
        if not all(layers):
            raise InputError(f"weights: cannot read a ResNet layout from the state dict (blocks per stage {layers})")
        return ResNet(kind, layers, in_chans)
    if arch in VITS or arch == "vit":
        cfg = _vit_layout(sd) if sd is not None and "patch_embed.proj.weight" in sd else {}
        if arch in VITS:
            cfg["embed_dim"], cfg["depth"], heads = VITS[arch]
        else:
            heads = max(1, cfg.get("embed_dim", 384) // 64)
        return VisionTransformer(in_chans=in_chans, num_heads=num_heads or heads, **cfg)
    raise InputError(f"arch={arch!r}: use one of {', '.join([*RESNETS, *VITS])}")


def load_checked(model: nn.Module, sd: dict, source: str = "weights") -> None:
    """Load ``sd`` strictly into ``model``; on any mismatch raise InputError listing the first few."""
    own = model.state_dict()
    optional = ("num_batches_tracked",)
    missing = [k for k in own if k not in sd and not k.endswith(optional)]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label} {len(items)}: {'; '.join(items[:5])}{more}")
        raise InputError(f"{source}: the state dict does not fit the {type(model).__name__} built for it - "
                         + " | ".join(parts) + ". Check arch= (or the sidecar's 'arch') against the file")
    model.load_state_dict(sd, strict=False)
