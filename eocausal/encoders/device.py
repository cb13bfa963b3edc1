"""Compute-device selection for encoders: ``"auto"`` picks CUDA, then MPS, then CPU."""

from __future__ import annotations

import torch

from eocausal.errors import DeviceError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device`` ("auto", "cpu", "cuda", "cuda:1", "mps")."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"device={device!r}: not a device name; use 'auto', 'cpu', 'cuda' or 'mps'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={device!r}: CUDA is not available on this machine; use device='auto' or 'cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device={device!r}: MPS is not available on this machine; use device='auto' or 'cpu'")
    return dev
