"""A small CNN trained to predict treatment from imagery (+ tabular covariates), cross-fitted.

causalimages' end-to-end path (Jerzak, Johansson and Daoud 2023): the propensity model itself
learns which image features predict treatment. Units are split into ``folds`` folds grouped by
image key (units sharing an image never straddle a split; groups dealt by majority arm so each
fold holds both arms). For each fold, a model is trained on the other folds, with about
``val_fraction`` of their groups held out for early stopping (validation log-loss, patience
``patience``, best epoch's weights restored), and predicts the held-out fold:

- ``oof_propensity_``: each unit's P(W = 1 | image, X) from the model that did not see it;
- ``oof_embedding_``: the model's penultimate layer (2 * width dims) for the same unit.

Training: AdamW, binary cross-entropy on label-smoothed targets W (1 - eps) + eps / 2,
per-band standardisation of the pixels (and of X) fitted on the training part of each fold,
dropout before the two linear layers, random flips and quarter turns of each training batch
(``augment``), bf16 autocast on CUDA. Every fold model starts from the same initialisation (seeded), which
keeps runs deterministic on CPU and the folds' embedding axes comparable; they are still
separately trained networks, so treat ``oof_embedding_`` columns as fold-specific features,
not as one shared coordinate system (the propensity itself has no such issue).

Architecture: three blocks conv3x3-BN-ReLU (widths w, 2w, 4w; 2x2 max-pool after the first
two), global average pool, [image features, standardised X] -> Linear -> ReLU (the
embedding) -> Linear (the logit). With ``backbone`` (a fitted or unfitted encoder), its
features replace the CNN (frozen; standardised per fold). Sequences (n, T, C, H, W): the
per-frame CNN feeds an :class:`~eocausal.encoders.temporal.AttentionPool` trained jointly.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import clone
from torch import nn

from eocausal.data.folds import grouped_folds
from eocausal.encoders._base import EncoderBase, hash_arrays, nested_state_hash, with_runtime_params
from eocausal.encoders.device import autocast, check_amp, resolve_device, run_batched, to_tensor
from eocausal.encoders.pretrained import band_moments
from eocausal.encoders.temporal import AttentionPool
from eocausal.errors import InputError, NotFittedError


class _Net(nn.Module):
    """CNN (or frozen features) -> [optional attention over frames] -> hidden -> logit."""

    def __init__(self, *, in_dim: int, width: int, n_tab: int, image: bool, sequence: bool, dropout: float):
        super().__init__()
        self.image = image
        self.drop = nn.Dropout(dropout)
        if image:
            layers, c = [], in_dim
            for i, out in enumerate((width, 2 * width, 4 * width)):
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                if i < 2:
                    layers.append(nn.MaxPool2d(2, ceil_mode=True))
                c = out
            self.trunk = nn.Sequential(*layers)
            feat = 4 * width
        else:
            feat = in_dim
        self.pool = AttentionPool(feat) if sequence else None
        self.hidden = nn.Linear(feat + n_tab, 2 * width)
        self.out = nn.Linear(2 * width, 1)
        shape = (1, in_dim, 1, 1) if image else (1, in_dim)
        self.register_buffer("in_mean", torch.zeros(shape))
        self.register_buffer("in_std", torch.ones(shape))
        self.register_buffer("tab_mean", torch.zeros(1, n_tab))
        self.register_buffer("tab_std", torch.ones(1, n_tab))

    def forward(self, x: torch.Tensor, tab: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        seq = self.pool is not None
        n = x.shape[0]
        if seq:
            x = x.reshape(n * x.shape[1], *x.shape[2:])
        x = (x - self.in_mean) / self.in_std
        f = self.trunk(x).mean(dim=(2, 3)) if self.image else x
        if seq:
            f = self.pool(f.reshape(n, -1, f.shape[-1]))
        if tab is not None and tab.shape[1]:
            f = torch.cat([f, (tab - self.tab_mean) / self.tab_std], dim=1)
        emb = F.relu(self.hidden(self.drop(f)))
        return self.out(self.drop(emb)).squeeze(1), emb


def _moments(a: np.ndarray, band_axis: int) -> tuple[np.ndarray, np.ndarray]:
    m, s = band_moments(a, band_axis)
    return m.astype(np.float32), np.where(s > 0, s, 1.0).astype(np.float32)


def _training_bar(progress, total: int):
    """A tqdm bar on stderr, or None (``progress`` None: only when stderr is a terminal)."""
    if progress is None:
        try:
            progress = sys.stderr.isatty()
        except (AttributeError, ValueError):
            progress = False
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="PropensityCNN", unit="epoch", leave=True, file=sys.stderr)


class PropensityCNN(EncoderBase):
    """Cross-fitted CNN propensity model; out-of-fold propensities and embeddings (a scikit-learn estimator).

    Parameters
    ----------
    folds : int
        Cross-fitting folds (units of one cluster, ``clusters``, stay in one fold).
    epochs, patience : int
        Maximum epochs; early-stopping patience on the validation log-loss.
    lr, weight_decay : float
        AdamW step size and decoupled weight decay. With a few hundred units (few steps per
        epoch) 1e-3 stopped early with propensities shrunk toward 1/2 in the tests'
        simulation, leaving confounding in the IPW estimate; hence 3e-3.
    label_smoothing : float
        eps in the smoothed targets W (1 - eps) + eps / 2.
    dropout : float
        Dropout rate on the pooled features and on the embedding.
    augment : bool
        Random horizontal flips and quarter turns of the training chips (not with ``backbone``).
    width : int
        Channels of the first conv block (then 2w, 4w); the embedding has 2w dims.
    backbone : encoder, optional
        A frozen image encoder (``fit``/``transform``, e.g. :class:`Pretrained`) whose features
        replace the CNN. A fitted one is used as it is; an unfitted one is cloned and the clone
        fitted on the chips (without the treatment), as ``backbone_``.
    seed : int
        Seeds folds, initialisation and batch order; the same seed gives the same result on CPU.
    device : str
        'auto', 'cpu', 'cuda', 'mps'.
    batch_size : int
        Units per step (inference batches halve on out-of-memory).
    val_fraction : float
        Share of the training folds' groups held out for early stopping (0: no early stopping).
    amp : {'auto', 'bf16', 'fp16', 'off'}
        Mixed precision on CUDA ('auto' = bf16).
    progress : bool or None
        Report training on stderr: a bar over folds x epochs with the fold, the epoch and the
        latest training and validation losses. None (default): only when stderr is a terminal
        (interactive sessions); False: never. It does not change the fit.

    Attributes
    ----------
    oof_propensity_ : numpy.ndarray (n,)
    oof_embedding_ : numpy.ndarray (n, 2 * width), float32
    fold_ids_ : numpy.ndarray (n,) of int
    history_ : list of dict
        Per fold: train and validation losses by epoch, the best epoch, units used.
    models_ : list of torch.nn.Module
        The fold models (CPU, eval mode).
    backbone_ : encoder or None
        The fitted backbone (``backbone`` itself when it came fitted).

    Notes
    -----
    Only ``device`` and ``progress`` are left out of the embedding-cache key
    (:func:`eocausal.encoders.embed.encoder_fingerprint`): ``batch_size`` and ``amp`` change the
    training; ``amp`` enters with the precision it gives on the device.
    """

    _output_invariant_params = ("device", "progress")
    _fitted_attr = "models_"

    def __init__(self, *, folds: int = 5, epochs: int = 30, patience: int = 5, lr: float = 3e-3,
                 weight_decay: float = 1e-4, label_smoothing: float = 0.05, width: int = 32, backbone=None,
                 dropout: float = 0.2, augment: bool = True, seed: int = 0, device: str = "auto",
                 batch_size: int = 64, val_fraction: float = 0.2, amp: str = "auto",
                 progress: bool | None = None):
        self.folds = folds
        self.epochs = epochs
        self.patience = patience
        self.lr = lr
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.width = width
        self.backbone = backbone
        self.dropout = dropout
        self.augment = augment
        self.seed = seed
        self.device = device
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.amp = amp
        self.progress = progress

    def _hash_state(self, h) -> None:
        """Every fold model's parameters and buffers, and the fitted backbone's state."""
        if self.backbone_ is not None:
            h.update(nested_state_hash(self.backbone_, "backbone").encode())
        h.update(f"sequence={self.sequence_};n_tab={self.n_tab_};".encode())
        for m in self.models_:
            hash_arrays(h, *(v.detach().float().cpu().numpy() for v in m.state_dict().values()))

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("PropensityCNN: call fit_oof(chips, w, X, clusters) first")

    # ------------------------------------------------------------------ inputs
    def _inputs(self, chips, *, fit_backbone: bool = False) -> np.ndarray:
        """Chips as float32, or the backbone's features of them; ``fit_backbone`` sets ``backbone_``
        (the backbone as given when it is fitted, else a clone fitted on these frames)."""
        x = np.asarray(chips)
        if x.ndim not in (4, 5):
            raise InputError(f"chips: expected (n, C, H, W) or (n, T, C, H, W), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise InputError("chips: non-finite pixels; fill nodata before encoding")
        if self.backbone is None:
            return np.ascontiguousarray(x, dtype=np.float32)
        frames = x.reshape(-1, *x.shape[-3:])
        if fit_backbone:
            fitted = getattr(self.backbone, "is_fitted", True)
            self.backbone_ = self.backbone if fitted else clone(self.backbone, safe=False).fit(frames)
        feats = np.asarray(self._backbone().transform(frames), dtype=np.float32)
        return feats.reshape(*x.shape[:-3], feats.shape[1])

    def _backbone(self):
        """The fitted backbone, with ``backbone``'s current device and batch size."""
        return with_runtime_params(self.backbone_, self.backbone)

    @staticmethod
    def _tabular(X, n: int, n_tab: int | None = None) -> np.ndarray:
        if X is None:
            tab = np.zeros((n, 0), np.float32)
        else:
            tab = np.asarray(X, dtype=np.float32)
            tab = tab.reshape(n, -1) if tab.ndim == 1 else tab
            if tab.shape[0] != n or tab.ndim != 2:
                raise InputError(f"X: expected {n} rows (n, p), got shape {np.shape(X)}")
            if not np.isfinite(tab).all():
                raise InputError("X: non-finite values; impute or drop them first")
        if n_tab is not None and tab.shape[1] != n_tab:
            raise InputError(f"X: {tab.shape[1]} columns, the model was fitted with {n_tab}")
        return tab

    # ------------------------------------------------------------------ fit
    def fit(self, chips, w=None, X=None, clusters=None, fold_ids=None) -> "PropensityCNN":
        """Same as :meth:`fit_oof`; the treatment ``w`` is required."""
        if w is None:
            raise InputError("w: PropensityCNN learns to predict the treatment; call fit_oof(chips, w, X, clusters)")
        return self.fit_oof(chips, w, X, clusters, fold_ids)

    def fit_transform(self, chips, w=None, X=None, clusters=None, fold_ids=None) -> np.ndarray:
        """Fit, then return the out-of-fold embeddings ``oof_embedding_`` (n, 2 * width).

        Unlike ``fit(...).transform(chips)`` (the mean of every fold model, each of which saw
        most of these units), each row comes from the model that did not see the unit, as
        scikit-learn's ``TargetEncoder.fit_transform`` does.
        """
        return self.fit(chips, w, X, clusters, fold_ids).oof_embedding_

    def fit_oof(self, chips, w, X=None, clusters=None, fold_ids=None) -> "PropensityCNN":
        """Cross-fit the CNN and store out-of-fold propensities and embeddings.

        Parameters
        ----------
        chips : numpy.ndarray
            (n, C, H, W) images or (n, T, C, H, W) sequences, one row per unit.
        w : array-like (n,)
            Binary treatment.
        X : array-like (n, p), optional
            Tabular covariates fed next to the image features.
        clusters : array-like (n,), optional
            Image keys or cluster labels; units of one cluster stay in one fold (default: each
            unit alone).
        fold_ids : array-like (n,) of int, optional
            Use these folds (e.g. the estimator's) instead of drawing them.

        Returns
        -------
        self
        """
        if self.folds < 2 and fold_ids is None:
            raise InputError(f"folds={self.folds}: need at least 2 cross-fitting folds")
        if not 0 <= self.val_fraction < 0.5:
            raise InputError(f"val_fraction={self.val_fraction}: use a share in [0, 0.5)")
        if not 0 <= self.label_smoothing < 1:
            raise InputError(f"label_smoothing={self.label_smoothing}: use a value in [0, 1)")
        check_amp(self.amp)
        if self.backbone is None:
            self.backbone_ = None
        data = self._inputs(chips, fit_backbone=True)
        n = len(data)
        wv = np.asarray(w)
        if wv.shape != (n,) or wv.dtype.kind not in "biuf" or not np.isin(wv, (0, 1)).all():
            seen = np.unique(wv)[:5].tolist() if wv.dtype.kind in "biuf" else wv.dtype
            raise InputError(f"w: expected {n} values in {{0, 1}}, got shape {wv.shape} ({seen})")
        wv = wv.astype(np.float32)
        tab = self._tabular(X, n)
        g = np.arange(n) if clusters is None else np.asarray(clusters)
        if len(g) != n:
            raise InputError(f"clusters: {len(g)} labels for {n} units")
        rng = np.random.default_rng(self.seed)
        if fold_ids is not None:
            fold = np.unique(np.asarray(fold_ids), return_inverse=True)[1]
            if len(fold) != n or fold.max() < 1:
                raise InputError(f"fold_ids: expected {n} labels naming at least 2 folds, got {len(fold)} "
                                 f"labels and {fold.max() + 1 if len(fold) else 0} folds")
        else:
            if len(np.unique(g)) < self.folds:
                raise InputError(f"folds={self.folds}: the data have only {len(np.unique(g))} clusters")
            fold = grouped_folds(n, g, self.folds, seed=rng.integers(2**63), stratify=wv)
        dev = resolve_device(self.device)
        self.sequence_, self.n_tab_ = data.ndim == (3 if self.backbone is not None else 5), tab.shape[1]
        models, history = [], []
        oof_p, oof_e = np.empty(n), np.empty((n, 2 * self.width), np.float32)
        n_folds = int(fold.max()) + 1
        bar = _training_bar(self.progress, n_folds * self.epochs)
        try:
            for k in range(n_folds):
                model, hist, logit, emb, test, n_train, n_val = self._fit_fold(
                    data, tab, wv, g, fold, k, rng, dev, bar)
                oof_p[test], oof_e[test] = 1.0 / (1.0 + np.exp(-logit)), emb
                hist.update(fold=k, n_train=n_train, n_val=n_val, n_test=len(test))
                models.append(model.cpu())
                history.append(hist)
        finally:
            if bar is not None:
                bar.close()
        self.models_, self.history_ = models, history  # set last: a failed fit leaves no fitted state
        self.fold_ids_, self.oof_propensity_, self.oof_embedding_ = fold, oof_p, oof_e
        return self

    def _fit_fold(self, data, tab, wv, g, fold, k, rng, dev, bar):
        """Train fold ``k``'s model; its out-of-fold logits and embeddings."""
        test = np.flatnonzero(fold == k)
        train = np.flatnonzero(fold != k)
        if len(np.unique(wv[train])) < 2:
            raise InputError(f"fold {k}: its training units hold one arm only; use fewer folds")
        val = np.empty(0, int)
        n_val_folds = max(2, int(round(1 / self.val_fraction))) if self.val_fraction > 0 else 0
        if n_val_folds and len(np.unique(g[train])) >= n_val_folds:
            inner = grouped_folds(len(train), g[train], n_val_folds, seed=rng.integers(2**63), stratify=wv[train])
            val, train = train[inner == 0], train[inner != 0]
        model, hist = self._train(data, tab, wv, train, val, dev, k, bar)
        logit, emb = self._predict(model, data[test], tab[test], dev)
        return model, hist, logit, emb, test, len(train), len(val)

    def _make_net(self, data: np.ndarray) -> _Net:
        image = self.backbone is None
        in_dim = data.shape[-3] if image else data.shape[-1]
        return _Net(in_dim=in_dim, width=self.width, n_tab=self.n_tab_, image=image, sequence=self.sequence_,
                    dropout=self.dropout)

    def _train(self, data, tab, wv, train, val, dev, k, bar=None):
        cuda = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # seeded without touching the caller's RNG state
            torch.manual_seed(self.seed)  # the same initialisation for every fold
            net = self._make_net(data)
            torch.manual_seed(int(np.random.default_rng([self.seed, k]).integers(2**31)))  # dropout
            return self._train_loop(net, data, tab, wv, train, val, dev, k, bar)

    def _train_loop(self, net, data, tab, wv, train, val, dev, k, bar=None):
        m, s = _moments(data[train], data.ndim - (3 if self.backbone is None else 1))
        net.in_mean.copy_(torch.from_numpy(m).view_as(net.in_mean))
        net.in_std.copy_(torch.from_numpy(s).view_as(net.in_std))
        if self.n_tab_:
            m, s = _moments(tab[train], 1)
            net.tab_mean.copy_(torch.from_numpy(m)[None])
            net.tab_std.copy_(torch.from_numpy(s)[None])
        net = net.to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and self.amp == "fp16")
        eps = self.label_smoothing
        rng = np.random.default_rng([self.seed, k])
        hist = {"train_loss": [], "val_loss": [], "best_epoch": None}
        best, best_state, bad = np.inf, None, 0
        n_batches = max(1, int(np.ceil(len(train) / self.batch_size)))
        for epoch in range(self.epochs):
            net.train()
            total = 0.0
            for idx in np.array_split(train[rng.permutation(len(train))], n_batches):
                xb, tb = to_tensor(self._augment(data[idx], rng), dev), to_tensor(tab[idx], dev)
                yb = to_tensor(wv[idx] * (1 - eps) + eps / 2, dev)
                with autocast(dev, self.amp):
                    logit, _ = net(xb, tb)
                loss = F.binary_cross_entropy_with_logits(logit.float(), yb)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total += float(loss.detach()) * len(idx)
            hist["train_loss"].append(total / len(train))
            if len(val):
                logit, _ = self._predict(net, data[val], tab[val], dev)
                vl = float(F.binary_cross_entropy_with_logits(torch.from_numpy(logit), torch.from_numpy(wv[val])))
                hist["val_loss"].append(vl)
            if bar is not None:
                bar.set_postfix_str(f"fold {k + 1}, epoch {epoch + 1}/{self.epochs}, train loss "
                                    f"{hist['train_loss'][-1]:.4f}"
                                    + (f", val loss {hist['val_loss'][-1]:.4f}" if len(val) else ""), refresh=False)
                bar.update(1)
            if len(val):
                if vl < best - 1e-6:
                    best, bad, hist["best_epoch"] = vl, 0, epoch
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    bad += 1
                    if bad >= self.patience:
                        if bar is not None:  # early stop: the fold's remaining epochs are done
                            bar.update(self.epochs - epoch - 1)
                        break
        if best_state is not None:
            net.load_state_dict(best_state)
        else:
            hist["best_epoch"] = len(hist["train_loss"]) - 1
        return net.eval(), hist

    def _augment(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random flips and quarter turns (one per batch): imagery has no preferred orientation."""
        if not self.augment or self.backbone is not None:
            return x
        if rng.random() < 0.5:
            x = x[..., ::-1]
        if x.shape[-1] == x.shape[-2]:
            x = np.rot90(x, int(rng.integers(4)), axes=(-2, -1))
        return np.ascontiguousarray(x)

    def _predict(self, net: _Net, data, tab, dev) -> tuple[np.ndarray, np.ndarray]:
        net.eval()

        def run(ib):
            with torch.inference_mode(), autocast(dev, self.amp):
                logit, emb = net(to_tensor(data[ib], dev), to_tensor(tab[ib], dev))
            return torch.cat([logit.float()[:, None], emb.float()], dim=1)

        out = run_batched(run, np.arange(len(data)), self.batch_size)
        return out[:, 0].astype(np.float64), out[:, 1:].astype(np.float32)

    # ------------------------------------------------------------------ new units
    def _average(self, chips, X):
        self._check_fitted()
        data = self._inputs(chips)
        if (data.ndim == (3 if self.backbone is not None else 5)) != self.sequence_:
            raise InputError("chips: the model was fitted on " + ("sequences" if self.sequence_ else "single images"))
        tab = self._tabular(X, len(data), self.n_tab_)
        dev = resolve_device(self.device)
        outs = [self._predict(m.to(dev), data, tab, dev) for m in self.models_]
        for m in self.models_:
            m.cpu()
        return outs

    def predict_propensity(self, chips, X=None) -> np.ndarray:
        """P(W = 1) for new units (n,): the mean of the fold models' propensities."""
        return np.mean([1.0 / (1.0 + np.exp(-lg)) for lg, _ in self._average(chips, X)], axis=0)

    def transform(self, chips, X=None) -> np.ndarray:
        """Embeddings for new units (n, 2 * width) float32: the mean over the fold models."""
        return np.mean([e for _, e in self._average(chips, X)], axis=0).astype(np.float32)

    def _torch_both(self, x: torch.Tensor, X):
        self._check_fitted()
        n = x.shape[0]
        tab = torch.as_tensor(self._tabular(None if X is None else np.asarray(X), n, self.n_tab_), device=x.device)
        if self.backbone is not None:
            frames = x.reshape(-1, *x.shape[-3:])
            backbone = self._backbone()
            if not hasattr(backbone, "torch_forward"):
                raise InputError(f"backbone {type(backbone).__name__} has no differentiable torch_forward")
            f = backbone.torch_forward(frames)
            x = f.reshape(*x.shape[:-3], f.shape[-1])
        res = [m.to(x.device).eval()(x.float(), tab) for m in self.models_]
        return torch.stack([r[0] for r in res]).mean(0), torch.stack([r[1] for r in res]).mean(0)

    def torch_forward(self, x: torch.Tensor, X=None) -> torch.Tensor:
        """Differentiable embedding (mean over fold models) of raw chips ``x``."""
        return self._torch_both(x, X)[1]

    def torch_logit(self, x: torch.Tensor, X=None) -> torch.Tensor:
        """Differentiable propensity log-odds (mean of the fold models' logits) of raw chips ``x``."""
        return self._torch_both(x, X)[0]
