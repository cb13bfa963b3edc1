"""Causal salience maps (causalimages; Jerzak, Johansson and Daoud 2023).

For a propensity model on image features, logit e(x) = a + ((f(x) - m) / s) . beta, the
salience of pixel (h, w) is the L2 norm over bands of d logit / d x[c, h, w]: where a change
of the raw pixels would move the estimated probability of treatment most. ``f`` is the
encoder's differentiable ``torch_forward``; the propensity's coefficients come in as plain
arrays (the estimators never import torch). A :class:`PropensityCNN` can also be asked for
the gradient of its own log-odds (``coef=None``).
"""

from __future__ import annotations

import numpy as np
import torch

from eocausal.encoders.device import encoder_device, resolve_device
from eocausal.errors import InputError


def _per_feature(values, default: float, d: int, name: str, dev) -> torch.Tensor:
    a = np.asarray(default if values is None else values, dtype=np.float64).ravel()
    if a.size == 1:
        a = np.full(d, a[0])
    if a.size != d:
        raise InputError(f"{name}: expected {d} values (one per feature) or a scalar, got {a.size}")
    return torch.as_tensor(a, dtype=torch.float32, device=dev)


def _logit_fn(encoder, coef, intercept, feature_mean, feature_scale, dev):
    if coef is None:
        if not hasattr(encoder, "torch_logit"):
            raise InputError(f"coef: required for {type(encoder).__name__} (only PropensityCNN has its own logit)")
        return lambda x, X: encoder.torch_logit(x, X) if X is not None else encoder.torch_logit(x)
    if not hasattr(encoder, "torch_forward"):
        raise InputError(f"encoder: {type(encoder).__name__} has no differentiable torch_forward")
    beta = np.asarray(coef, dtype=np.float64).ravel()
    mean = _per_feature(feature_mean, 0.0, beta.size, "feature_mean", dev)
    scale = _per_feature(feature_scale, 1.0, beta.size, "feature_scale", dev)
    if (scale == 0).any():
        raise InputError("feature_scale: zero entries; pass the scaler's scale_ (zeros replaced by 1)")
    b = torch.as_tensor(beta, dtype=torch.float32, device=dev)

    def logit(x, X):
        f = encoder.torch_forward(x, X) if X is not None else encoder.torch_forward(x)
        if f.shape[1] != b.shape[0]:
            raise InputError(f"coef: {b.shape[0]} coefficients, the encoder gives {f.shape[1]} features")
        return float(intercept) + ((f - mean) / scale) @ b

    return logit


def salience_maps(encoder, chips, coef=None, intercept: float = 0.0, *, feature_mean=None, feature_scale=None,
                  X=None, batch_size: int = 16, device: str | None = None) -> np.ndarray:
    """Gradient of the propensity log-odds with respect to the input pixels, L2 over bands.

    Parameters
    ----------
    encoder : fitted encoder with ``torch_forward``
        RandomFeatures, Pretrained, TemporalPool or PropensityCNN.
    chips : numpy.ndarray
        Raw chips (n, C, H, W), or sequences (n, T, C, H, W), as given to ``transform``.
    coef : array-like (d,), optional
        Logistic-regression coefficients on the (standardised) features; None for a
        PropensityCNN's own log-odds.
    intercept : float
        The logistic regression's intercept.
    feature_mean, feature_scale : array-like (d,), optional
        The standardisation the coefficients were fitted on (e.g. a StandardScaler's ``mean_``
        and ``scale_``); default none.
    X : array-like (n, p), optional
        Tabular covariates, for a PropensityCNN fitted with them.
    batch_size : int
        Chips per backward pass.
    device : str, optional
        Default: the encoder's device.

    Returns
    -------
    numpy.ndarray
        (n, H, W) float32, or (n, T, H, W) for sequences.
    """
    x = np.asarray(chips, dtype=np.float32)
    if x.ndim not in (4, 5):
        raise InputError(f"chips: expected (n, C, H, W) or (n, T, C, H, W), got shape {x.shape}")
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: must be at least 1")
    dev = resolve_device(device if device is not None else encoder_device(encoder))
    logit = _logit_fn(encoder, coef, intercept, feature_mean, feature_scale, dev)
    tab = None if X is None else np.asarray(X, dtype=np.float32).reshape(len(x), -1)
    out = np.empty((x.shape[0], *x.shape[-2:]) if x.ndim == 4 else (*x.shape[:2], *x.shape[-2:]), np.float32)
    with torch.enable_grad():
        for s in range(0, len(x), batch_size):
            xb = torch.tensor(x[s:s + batch_size], device=dev, requires_grad=True)
            lg = logit(xb, None if tab is None else tab[s:s + batch_size])
            (grad,) = torch.autograd.grad(lg.sum(), xb)  # units are independent: the sum's gradient is per unit
            out[s:s + len(xb)] = grad.float().pow(2).sum(dim=-3).sqrt().cpu().numpy()
    return out


def salience_examples(encoder, chips, propensity_scores, w, coef=None, intercept: float = 0.0, *,
                      n_per_arm: int = 4, feature_mean=None, feature_scale=None, X=None,
                      device: str | None = None) -> dict:
    """The most telling units of each arm, with their salience maps (arrays; no figure).

    "Most telling": the ``n_per_arm`` treated units with the highest propensity score and the
    ``n_per_arm`` controls with the lowest, as causalimages shows them. Draw them with
    :func:`eocausal.report.plots.salience_gallery`.

    Parameters
    ----------
    encoder, chips, coef, intercept, feature_mean, feature_scale, X, device
        As in :func:`salience_maps`.
    propensity_scores : array-like (n,)
        Each chip's propensity score (e.g. ``PropensityCNN.oof_propensity_``).
    w : array-like (n,)
        Binary treatment.
    n_per_arm : int
        Units shown per arm.

    Returns
    -------
    dict
        ``treated_index``, ``control_index`` (int arrays, most extreme first),
        ``treated_propensity``, ``control_propensity``, ``treated_maps``, ``control_maps``
        (n_per_arm, H, W) float32 (fewer rows when an arm has fewer units).
    """
    e = np.asarray(propensity_scores, dtype=np.float64).ravel()
    wv = np.asarray(w).ravel()
    n = len(np.asarray(chips))
    if len(e) != n or len(wv) != n:
        raise InputError(f"propensity_scores, w: expected {n} values each (one per chip), got {len(e)} "
                         f"and {len(wv)}; pass one score and one treatment per chip")
    if isinstance(n_per_arm, bool) or not isinstance(n_per_arm, (int, np.integer)) or n_per_arm < 1:
        raise InputError(f"n_per_arm={n_per_arm!r}: must be a whole number, at least 1")
    treated, control = np.flatnonzero(wv == 1), np.flatnonzero(wv == 0)
    ti = treated[np.argsort(-e[treated], kind="stable")[:n_per_arm]]
    ci = control[np.argsort(e[control], kind="stable")[:n_per_arm]]
    tab = None if X is None else np.asarray(X)
    res = {"treated_index": ti, "control_index": ci, "treated_propensity": e[ti], "control_propensity": e[ci]}
    for name, idx in (("treated", ti), ("control", ci)):
        res[f"{name}_maps"] = salience_maps(
            encoder, np.asarray(chips)[idx], coef, intercept, feature_mean=feature_mean,
            feature_scale=feature_scale, X=None if tab is None else tab[idx], device=device)
    return res
