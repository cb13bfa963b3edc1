"""Random convolutional features (MOSAIKS; Rolf et al. 2021, Nature Communications 12:4392).

Fit: scale each band to [0, 1] with bounds learned on the data; sample K/2 patches of
k x k x C pixels from the training chips; ZCA-whiten the patch set (ridge ``zca_eps``); use the
whitened patches as convolution filters (valid, no padding). Transform: for each filter f,
two features, the spatial means of ReLU(f * x - b) and ReLU(-f * x - b) (b = ``bias``).

Filters are processed in chunks with the pooling done per chunk, so memory does not grow with
the number of features: the full K x H x W activation map of one 256 px chip with K = 4096 is
about 1 GB, a chunk of 256 filters about 64 MB.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from eocausal.encoders._base import EncoderBase, hash_arrays
from eocausal.encoders.device import resolve_device
from eocausal.errors import InputError


#: Activation elements held at once per row chunk (2 MB of float32 on a CPU, 1 GB on a GPU). On the
#: 2-core CPU of benchmarks/results/random_features.md, 512K elements in sub-batches of 8 chips
#: (128 positions x 512 filters x 8 chips: the block stays in cache between the product and the
#: ReLU-sum) gave 25.8 chips/s against 21.7 with 2M elements and 14.3 with 64K.
_CHUNK_ELEMENTS = 512 * 1024
_CHUNK_ELEMENTS_CUDA = 256 * 1024 * 1024
_CPU_SUB_BATCH = 8


class RandomFeatures(EncoderBase):
    """MOSAIKS random convolutional features (a scikit-learn transformer of chips).

    Parameters
    ----------
    n_features : int
        Number of output features K (even); K/2 filters, two features each.
    kernel : int
        Patch (filter) size k.
    bias : float
        The ReLU threshold b.
    seed : int
        Seeds the patch draw; the same seed and data give the same filters.
    zca_eps : float
        Ridge added to the patch covariance's eigenvalues before whitening.
    scaling : {'minmax', 'percentile'}
        Per-band scaling to [0, 1]: the data's min/max, or its 1st/99th percentiles (clipped).
    chunk_size : int
        Filters per matrix product; positions are also processed in row chunks so that at
        most about 2M activations (8 MB) are held at once on a CPU.
    batch_size : int
        Chips per forward pass.
    device : str
        'auto', 'cpu', 'cuda', 'mps'.

    Attributes
    ----------
    filters_ : torch.Tensor (K/2, C, k, k)
        Whitened patches, on the CPU.
    band_low_, band_high_ : numpy.ndarray (C,)
        Per-band scaling bounds.

    Notes
    -----
    ``chunk_size``, ``batch_size`` and ``device`` decide how the features are computed, not
    their values (up to float rounding), so they are left out of the embedding-cache key
    (:func:`eocausal.encoders.embed.encoder_fingerprint`).
    """

    _output_invariant_params = ("chunk_size", "batch_size", "device")
    _fitted_attr = "n_bands_"  # set last by fit

    def __init__(self, *, n_features: int = 1024, kernel: int = 3, bias: float = 0.0, seed: int = 0,
                 zca_eps: float = 1e-3, scaling: str = "minmax", chunk_size: int = 1024,
                 batch_size: int = 64, device: str = "auto"):
        self.n_features = n_features
        self.kernel = kernel
        self.bias = bias
        self.seed = seed
        self.zca_eps = zca_eps
        self.scaling = scaling
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.device = device

    def _hash_state(self, h) -> None:
        hash_arrays(h, self.filters_.numpy(), self.band_low_, self.band_high_)

    def _validate(self, chips) -> np.ndarray:
        x = np.asarray(chips)
        if x.ndim == 5:
            raise InputError(
                "chips: got image sequences (n, T, C, H, W); wrap the encoder as "
                "TemporalPool(RandomFeatures(...)) or pass single images (n, C, H, W)"
            )
        if x.ndim != 4:
            raise InputError(f"chips: expected (n, C, H, W), got shape {x.shape}")
        if min(x.shape[2:]) < self.kernel:
            raise InputError(f"chips: {x.shape[2]}x{x.shape[3]} px is smaller than kernel={self.kernel}")
        if not np.isfinite(x).all():
            raise InputError("chips: non-finite pixels; fill nodata before encoding")
        return x

    # ------------------------------------------------------------------ fit
    def fit(self, chips, y=None) -> "RandomFeatures":
        """Learn the band scaling and draw and whiten K/2 patches from ``chips`` (n, C, H, W).

        ``y`` is ignored (scikit-learn's signature, so the encoder fits in a Pipeline).
        """
        if self.n_features < 2 or self.n_features % 2:
            raise InputError(f"n_features={self.n_features}: must be a positive even number")
        if self.scaling not in ("minmax", "percentile"):
            raise InputError(f"scaling={self.scaling!r}: use 'minmax' (the data's range) or 'percentile' "
                             "(its 1st to 99th percentile)")
        x = self._validate(chips).astype(np.float64, copy=False)
        n, c, h, w = x.shape
        per_band = x.transpose(1, 0, 2, 3).reshape(c, -1)
        if self.scaling == "minmax":
            lo, hi = per_band.min(axis=1), per_band.max(axis=1)
        else:
            lo, hi = np.percentile(per_band, 1, axis=1), np.percentile(per_band, 99, axis=1)
        hi = np.where(hi > lo, hi, lo + 1.0)  # a constant band scales to 0
        self.band_low_, self.band_high_ = lo.astype(np.float32), hi.astype(np.float32)

        k, m = self.kernel, self.n_features // 2
        rng = np.random.default_rng(self.seed)
        img = rng.integers(0, n, m)
        r = rng.integers(0, h - k + 1, m)
        q = rng.integers(0, w - k + 1, m)
        scaled = self._scale_np(x)
        idx = np.arange(k)
        patches = scaled[img[:, None, None, None], np.arange(c)[None, :, None, None],
                         (r[:, None] + idx)[:, None, :, None], (q[:, None] + idx)[:, None, None, :]]
        flat = patches.reshape(m, -1)
        centered = flat - flat.mean(axis=0)
        cov = centered.T @ centered / m
        vals, vecs = np.linalg.eigh(cov)
        zca = (vecs * (1.0 / np.sqrt(np.clip(vals, 0, None) + self.zca_eps))) @ vecs.T
        white = centered @ zca
        self.filters_ = torch.from_numpy(white.reshape(m, c, k, k).astype(np.float32))
        self.n_bands_ = c
        return self

    def _scale_np(self, x: np.ndarray) -> np.ndarray:
        lo = self.band_low_.reshape(1, -1, 1, 1)
        hi = self.band_high_.reshape(1, -1, 1, 1)
        return np.clip((x - lo) / (hi - lo), 0.0, 1.0)

    # ------------------------------------------------------------------ transform
    def transform(self, chips) -> np.ndarray:
        """Features (n, n_features) float32: [ReLU(f*x - b) means | ReLU(-f*x - b) means]."""
        self._check_fitted()
        x = self._validate(chips)
        if x.shape[1] != self.n_bands_:
            raise InputError(f"chips: {x.shape[1]} bands, the encoder was fitted on {self.n_bands_}")
        dev = resolve_device(self.device)
        filters = self.filters_.to(dev)
        lo = torch.as_tensor(self.band_low_, device=dev).view(1, -1, 1, 1)
        hi = torch.as_tensor(self.band_high_, device=dev).view(1, -1, 1, 1)
        m = filters.shape[0]
        out = np.empty((len(x), 2 * m), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(x), self.batch_size):
                xb = torch.as_tensor(np.ascontiguousarray(x[s:s + self.batch_size]), dtype=torch.float32).to(dev)
                xb = ((xb - lo) / (hi - lo)).clamp_(0.0, 1.0)
                out[s:s + len(xb)] = self._pooled(xb, filters).cpu().numpy()
        return out

    def _pooled(self, xb: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        """Pooled features of a batch, as a matrix product over row chunks of the patch matrix.

        The valid convolution is ``cols @ F`` with ``cols`` the (L x C k k) patch matrix of a
        chip and ``F`` the (C k k x m) filter matrix. Rows are processed in chunks of at most
        ``_CHUNK_ELEMENTS / m`` positions and pooled at once, so memory stays flat in the
        number of filters. With b = 0 one ReLU pass suffices, since
        ``mean ReLU(-a) = mean ReLU(a) - mean a`` and ``mean a = (mean cols) @ F``; with
        b != 0, ``ReLU(-a - b) = ReLU(a + b) - (a + b)`` gives the second feature from a
        second pass.
        """
        if not xb.is_cuda and xb.shape[0] > _CPU_SUB_BATCH:  # keep each product's rows cache-sized
            return torch.cat([self._pooled(xb[i:i + _CPU_SUB_BATCH], filters)
                              for i in range(0, xb.shape[0], _CPU_SUB_BATCH)])
        B = xb.shape[0]
        m = filters.shape[0]
        cols = F.unfold(xb, self.kernel).transpose(1, 2)  # (B, L, C k k), a view
        L = cols.shape[1]
        col_mean = cols.mean(dim=1)  # (B, C k k)
        budget = _CHUNK_ELEMENTS_CUDA if xb.is_cuda else _CHUNK_ELEMENTS
        out = torch.empty((B, 2 * m), dtype=torch.float32, device=xb.device)
        for a in range(0, m, self.chunk_size):
            fm = filters[a:a + self.chunk_size].reshape(-1, cols.shape[2]).t().contiguous()  # (C k k, mc)
            mc = fm.shape[1]
            rows = max(1, min(L, budget // max(1, B * mc)))
            pos = torch.zeros((B, mc), dtype=torch.float32, device=xb.device)
            shifted = torch.zeros_like(pos) if self.bias else None
            for s in range(0, L, rows):
                act = torch.matmul(cols[:, s:s + rows], fm)  # (B, r, mc)
                if self.bias:
                    shifted += torch.relu(act + self.bias).sum(dim=1)
                    act.sub_(self.bias)
                pos += act.clamp_(min=0).sum(dim=1)
            mean_act = col_mean @ fm  # (B, mc): spatial mean of the convolution
            pos /= L
            neg = shifted / L - (mean_act + self.bias) if self.bias else pos - mean_act
            out[:, a:a + mc] = pos
            out[:, m + a:m + a + mc] = neg.clamp_(min=0)
        return out

    def torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable features of raw chips ``x`` (n, C, H, W), on ``x``'s device.

        The same computation as :meth:`transform` (used for salience maps); pixels outside the
        fitted band range are clamped and get zero gradient.
        """
        self._check_fitted()
        if x.ndim != 4 or x.shape[1] != self.n_bands_:
            raise InputError(f"x: expected (n, {self.n_bands_}, H, W), got {tuple(x.shape)}")
        lo = torch.as_tensor(self.band_low_, device=x.device).view(1, -1, 1, 1)
        hi = torch.as_tensor(self.band_high_, device=x.device).view(1, -1, 1, 1)
        xs = ((x.float() - lo) / (hi - lo)).clamp(0.0, 1.0)
        return self._pooled(xs, self.filters_.to(x.device))
