"""Compute devices for encoders.

``resolve_device("auto")`` picks CUDA, then MPS, then CPU; :func:`run_batched` runs a function
over batches and halves the batch on out-of-memory; :func:`autocast` gives bf16/fp16 autocast
on CUDA and nothing elsewhere (CPU results stay float32 and deterministic).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from eocausal.errors import DeviceError, InputError


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


def encoder_device(encoder) -> str:
    """The device an encoder is set to run on: its ``device`` argument, or that of the encoder it
    wraps (``encoder__device``, ``backbone__device``); 'auto' when it names none."""
    params = encoder.get_params(deep=True) if callable(getattr(encoder, "get_params", None)) else {}
    if "device" in params:
        return params["device"]
    nested = sorted(k for k in params if k.endswith("__device"))
    if nested:
        return params[min(nested, key=lambda k: k.count("__"))]
    return getattr(encoder, "device", "auto")


# ----------------------------------------------------------------------------- batching, precision

_AMP = ("auto", "bf16", "fp16", "off")


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_batched(fn, x, batch_size: int) -> np.ndarray:
    """Apply ``fn`` to consecutive slices of ``x`` and concatenate the results.

    On an out-of-memory error (``torch.OutOfMemoryError``, or MPS's "out of memory"
    RuntimeError) the batch size is halved and the same slice retried, down to one item; an
    item that does not fit alone raises :class:`DeviceError` with advice.

    Parameters
    ----------
    fn : callable
        Maps a slice of ``x`` to an array or tensor whose first axis matches the slice.
    x : array-like
        Anything sliceable along its first axis (numpy array, tensor).
    batch_size : int
        The first batch size tried.

    Returns
    -------
    numpy.ndarray
        The outputs of ``fn`` concatenated along the first axis.
    """
    if int(batch_size) < 1:
        raise InputError(f"batch_size={batch_size}: must be at least 1")
    bs, start, parts = int(batch_size), 0, []
    while start < len(x):
        oom = None
        try:
            out = fn(x[start:start + bs])
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            oom = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if oom is not None:  # handled outside the except block so the failed batch's tensors are freed
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if bs == 1:
                raise DeviceError(
                    f"out of memory on a single chip ({oom}); use smaller chips (image_size=...), "
                    "amp='bf16', a smaller model, or device='cpu'"
                )
            bs = max(1, bs // 2)
            continue
        if isinstance(out, torch.Tensor):
            out = out.detach().float().cpu().numpy()
        parts.append(np.asarray(out))
        start += bs
    if not parts:
        raise InputError("run_batched: got no items to process")
    return np.concatenate(parts, axis=0)


def check_amp(amp) -> str:
    """Validate an ``amp`` argument: 'auto', 'bf16', 'fp16' or 'off' (None and False mean 'off')."""
    amp = "off" if amp in (None, False) else amp
    if amp not in _AMP:
        raise InputError(f"amp={amp!r}: use 'auto' (bf16 on CUDA), 'bf16', 'fp16' or 'off'")
    return amp


def amp_precision(device, amp="auto") -> str:
    """The precision :func:`autocast` gives for ``amp`` on ``device``: 'float32', 'bfloat16' or 'float16'."""
    amp = check_amp(amp)
    if resolve_device(device).type != "cuda" or amp == "off":
        return "float32"
    return "float16" if amp == "fp16" else "bfloat16"


def autocast(device: torch.device, amp="auto"):
    """The autocast context for ``amp`` on ``device``: bf16/fp16 on CUDA only, a no-op elsewhere."""
    amp = check_amp(amp)
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def to_tensor(x, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """float32 tensor on ``device``; channels-last memory format for 4-d inputs on CUDA if asked."""
    t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x, dtype=torch.float32)
    t = t.to(device, non_blocking=device.type == "cuda")
    if channels_last and device.type == "cuda" and t.ndim == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t
