"""Image sequences: encode each frame, then pool the frame embeddings over time.

For frame embeddings e_1, ..., e_T of one unit (each of d dims):

- ``concat``:    [e_1, ..., e_T]                        (T*d)
- ``mean_diff``: [mean_t e_t, e_T - e_1]                (2d)
- ``mean_var``:  [mean_t e_t, (1/T) sum_t (e_t - mean)^2] (2d; population variance, ddof = 0)
- ``attention``: sum_t a_t e_t with a = softmax_t(q . tanh(W e_t + b)) (d), a learned query
  (gated-attention pooling as in Ilse et al. 2018). The query starts at zero, so an untrained
  pool weighs every frame 1/T and returns the mean; it is trained only inside
  :class:`eocausal.encoders.PropensityCNN`, jointly with the per-frame CNN.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import clone
from torch import nn

from eocausal.encoders._base import EncoderBase, hash_arrays, nested_state_hash, with_runtime_params
from eocausal.errors import InputError

HOWS = ("concat", "mean_diff", "mean_var", "attention")


class AttentionPool(nn.Module):
    """Attention pooling over the time axis of (n, T, d) embeddings; zero query = plain mean."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or min(dim, 64)
        self.key = nn.Linear(dim, hidden)
        self.query = nn.Parameter(torch.zeros(hidden))

    def weights(self, e: torch.Tensor) -> torch.Tensor:
        """Frame weights (n, T), summing to one over T."""
        return torch.softmax(torch.tanh(self.key(e)) @ self.query, dim=1)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return (self.weights(e).unsqueeze(-1) * e).sum(dim=1)


def pool_frames(e: torch.Tensor, how: str, attention: AttentionPool | None = None) -> torch.Tensor:
    """Aggregate frame embeddings (n, T, d) as ``how`` says (differentiable)."""
    if how == "concat":
        return e.reshape(e.shape[0], -1)
    if how == "mean_diff":
        return torch.cat([e.mean(dim=1), e[:, -1] - e[:, 0]], dim=1)
    if how == "mean_var":
        return torch.cat([e.mean(dim=1), e.var(dim=1, unbiased=False)], dim=1)
    if how == "attention":
        if attention is None:
            raise InputError("how='attention': no attention module")
        return attention(e)
    raise InputError(f"how={how!r}: use one of {', '.join(HOWS)}")


def _validate_sequences(chips) -> np.ndarray:
    x = np.asarray(chips)
    if x.ndim != 5:
        raise InputError(f"chips: TemporalPool expects image sequences (n, T, C, H, W), got shape {x.shape}")
    if x.shape[1] < 1:
        raise InputError("chips: sequences need at least one frame")
    return x


class TemporalPool(EncoderBase):
    """Per-frame encoder plus a pooling over time (a scikit-learn meta-estimator).

    Parameters
    ----------
    encoder : encoder object
        Any encoder of single images (``fit``/``transform`` on (n, C, H, W)), e.g.
        :class:`RandomFeatures` or :class:`Pretrained`. ``fit`` fits a clone of it on all frames
        stacked (``encoder_``); ``encoder`` itself stays as given. Its parameters are part of
        ``get_params(deep=True)`` as ``encoder__<name>``; its output-invariant settings (device,
        batch size) reach the fitted clone when they change after ``fit``.
    how : {'concat', 'mean_diff', 'mean_var', 'attention'}
        The aggregation (module docstring). Stand-alone, 'attention' is untrained and equals
        the mean; train it through :class:`PropensityCNN` on sequences.
    seed : int
        Seeds the attention module's initialisation (it does not change an untrained pool's
        output, but stays in the cache key with every other argument).

    Attributes
    ----------
    encoder_ : encoder object
        The fitted clone of ``encoder``.
    n_frames_, frame_dim_ : int
        T and d seen in ``fit``.
    attention_ : AttentionPool or None
    """

    _fitted_attr = "frame_dim_"

    def __init__(self, encoder, *, how: str = "mean_diff", seed: int = 0):
        self.encoder = encoder
        self.how = how
        self.seed = seed

    def _hash_state(self, h) -> None:
        """The frame encoder's fitted state, T, d and the attention weights."""
        h.update(nested_state_hash(self.encoder_, "encoder").encode())
        h.update(f"frames={self.n_frames_};dim={self.frame_dim_};".encode())
        if self.attention_ is not None:
            hash_arrays(h, *(v.detach().cpu().numpy() for v in self.attention_.state_dict().values()))

    def _frame_encoder(self):
        """The fitted frame encoder, with ``encoder``'s current device and batch size."""
        self._check_fitted()
        return with_runtime_params(self.encoder_, self.encoder)

    def fit(self, chips, y=None) -> "TemporalPool":
        """Fit a clone of the frame encoder on all frames of ``chips`` (n, T, C, H, W).

        ``y`` is ignored (scikit-learn's signature, so the encoder fits in a Pipeline).
        """
        if self.how not in HOWS:
            raise InputError(f"how={self.how!r}: use one of {', '.join(HOWS)}")
        for method in ("fit", "transform"):
            if not callable(getattr(self.encoder, method, None)):
                raise InputError(f"encoder: {type(self.encoder).__name__} lacks {method}(); pass an image "
                                 "encoder such as RandomFeatures(...)")
        x = _validate_sequences(chips)
        n, t = x.shape[:2]
        frames = x.reshape(n * t, *x.shape[2:])
        encoder = clone(self.encoder, safe=False).fit(frames)  # deep copy of a non-estimator
        frame_dim = int(encoder.transform(frames[:1]).shape[1])
        attention = None
        if self.how == "attention":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                attention = AttentionPool(frame_dim).eval().requires_grad_(False)
        self.encoder_, self.n_frames_, self.attention_ = encoder, t, attention
        self.frame_dim_ = frame_dim  # set last: a failed fit leaves no fitted state
        return self

    def _check_frames(self, x) -> None:
        if self.how == "concat" and x.shape[1] != self.n_frames_:
            raise InputError(f"chips: {x.shape[1]} frames; how='concat' was fitted on T={self.n_frames_}")

    def transform(self, chips) -> np.ndarray:
        """Pooled embeddings (n, T*d) for 'concat', (n, 2d) for 'mean_diff'/'mean_var', (n, d) for 'attention'."""
        encoder = self._frame_encoder()
        x = _validate_sequences(chips)
        self._check_frames(x)
        n, t = x.shape[:2]
        e = encoder.transform(x.reshape(n * t, *x.shape[2:])).reshape(n, t, -1)
        with torch.inference_mode():
            out = pool_frames(torch.from_numpy(np.ascontiguousarray(e, dtype=np.float32)), self.how, self.attention_)
        return out.numpy().astype(np.float32, copy=False)

    def torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable pooled features of raw sequences ``x`` (n, T, C, H, W)."""
        encoder = self._frame_encoder()
        if x.ndim != 5:
            raise InputError(f"x: expected (n, T, C, H, W), got {tuple(x.shape)}")
        self._check_frames(x)
        if not hasattr(encoder, "torch_forward"):
            raise InputError(f"{type(encoder).__name__} has no differentiable torch_forward")
        n, t = x.shape[:2]
        e = encoder.torch_forward(x.reshape(n * t, *x.shape[2:])).reshape(n, t, -1)
        att = self.attention_.to(x.device) if self.attention_ is not None else None
        return pool_frames(e, self.how, att)
