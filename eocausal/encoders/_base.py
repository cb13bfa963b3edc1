"""What every eocausal encoder shares: the scikit-learn estimator contract and the cache's hooks.

An encoder is a scikit-learn transformer of image chips: ``__init__`` only stores its keyword
arguments, ``fit`` validates them, learns, sets attributes ending in ``_`` and returns ``self``,
so ``get_params``, ``set_params`` and ``sklearn.base.clone`` work. Two more hooks feed the
embedding cache's key (:func:`eocausal.encoders.embed.encoder_fingerprint`):

- ``_output_invariant_params``: the class's constructor arguments that cannot change what
  ``transform`` returns (where it runs, how many chips at a time, ...). Every other argument
  enters the key, so a new argument is part of the key unless it is added here on purpose.
- :meth:`EncoderBase.state_hash`: the sha256 of the fitted state (learned arrays, weights),
  written by each class in ``_hash_state``.
"""

from __future__ import annotations

import hashlib

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import TransformerTags

from eocausal.encoders.device import amp_precision
from eocausal.errors import InputError, NotFittedError


class EncoderBase(BaseEstimator):
    """Base class of the encoders (not public: subclass it to write an encoder that caches).

    Subclasses set ``_fitted_attr`` (an attribute that ``fit`` sets last) and
    ``_output_invariant_params``, and write ``_hash_state(h)``. Not a ``TransformerMixin``:
    its ``set_output`` wrapping would rename ``transform``'s first argument to ``X`` (which
    :class:`~eocausal.encoders.PropensityCNN` uses for the tabular covariates) and has no
    feature names to give embeddings.
    """

    _output_invariant_params: tuple[str, ...] = ()
    _fitted_attr: str = ""

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` has run (what :func:`eocausal.embed` checks before fitting)."""
        return hasattr(self, self._fitted_attr)

    def __sklearn_is_fitted__(self) -> bool:
        return self.is_fitted

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags()
        return tags

    def fit_transform(self, chips, y=None) -> np.ndarray:
        """``fit(chips, y)``, then ``transform(chips)``."""
        return self.fit(chips, y).transform(chips)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__}: call fit(chips) (or eocausal.embed) before transform")

    def state_hash(self) -> str:
        """sha256 of the fitted state (learned arrays and weights), not of the settings.

        The settings enter the cache key separately, through ``get_params``
        (:func:`eocausal.encoders.embed.encoder_fingerprint`).
        """
        self._check_fitted()
        h = hashlib.sha256(type(self).__name__.encode())
        self._hash_state(h)
        return h.hexdigest()

    def _hash_state(self, h) -> None:  # pragma: no cover - every encoder defines it
        raise NotImplementedError

    def _key_precision(self) -> str | None:
        """The floating-point precision ``transform`` runs in, where two settings decide it together.

        For an encoder with an ``amp`` argument: the precision ``amp`` gives on the resolved
        device ('auto' is bfloat16 on CUDA and float32 elsewhere), since the device itself is
        not part of the cache key. None for the others (float32 whatever the settings).
        """
        params = self.get_params(deep=False)
        if "amp" not in params:
            return None
        return amp_precision(params.get("device", "auto"), params["amp"])


def hash_arrays(h, *arrays) -> None:
    """Feed each array's dtype, shape and bytes to the hash ``h`` (None counts as absent)."""
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())


def nested_state_hash(estimator, name: str) -> str:
    """The ``state_hash()`` of a fitted encoder held by another (a frame encoder, a backbone)."""
    fn = getattr(estimator, "state_hash", None)
    if not callable(fn):
        raise InputError(f"{name}: {type(estimator).__name__} lacks state_hash(), which the cache key "
                         "needs; use an eocausal encoder, or pass cache_dir=None")
    return fn()


def with_runtime_params(fitted, template):
    """``fitted`` (a fitted clone of ``template``) given ``template``'s output-invariant settings.

    A meta-encoder fits a clone of the encoder it wraps; settings that cannot change the
    output (device, batch size) may change after ``fit`` (``eocausal.embed(device=...)`` sets
    them on the template), and reach the fitted clone here.
    """
    names = getattr(type(template), "_output_invariant_params", ())
    if not names or not hasattr(template, "get_params"):
        return fitted
    params = template.get_params(deep=False)
    return fitted.set_params(**{k: params[k] for k in names if k in params})
