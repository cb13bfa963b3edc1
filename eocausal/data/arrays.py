"""In-memory image source: an array of images with keys, and a unit -> image-key mapping.

Images are stored as given by the user in (n_images, H, W, C) or, for sequences,
(n_images, T, H, W, C) -- the layout of the causalimages R package -- and handed to encoders as
channels-first float32 chips: (n, C, H, W) or (n, T, C, H, W).
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np

from eocausal.errors import InputError


_MAX_BANDS_GUESS = 16  # more bands than this on the channel axis is not a channels-first mistake


def _refuse_channels_first(shape: tuple[int, ...]) -> None:
    """InputError for the likely mistake of channels-first images, (n, C, H, W) or (n, T, C, H, W):
    a few values on the axis that should be H, square H x W on the last two axes."""
    c_axis = 1 if len(shape) == 4 else 2
    c, h, w = shape[c_axis], shape[-2], shape[-1]
    if c <= _MAX_BANDS_GUESS < w and h == w and c != shape[c_axis + 1]:
        want = "(n_images, H, W, C)" if len(shape) == 4 else "(n_images, T, H, W, C)"
        raise InputError(
            f"images: shape {shape} looks channels-first ({c} bands of {h} x {w} pixels), but an "
            f"ArraySource takes channels last, {want}, as causalimages stores them. Transpose first: "
            f"ArraySource(np.moveaxis(images, {c_axis}, -1), ...)"
        )


class ArraySource:
    """Images held in memory, addressed by key.

    Parameters
    ----------
    images : array-like
        (n_images, H, W, C) single images or (n_images, T, H, W, C) image sequences.
        Channels last, as causalimages stores them. Any numeric dtype. Channels-first arrays
        (a few values on the H axis and square images on the last two axes, such as
        (n, 3, 64, 64)) are refused with the transpose to apply.
    keys : sequence, optional
        One unique key per image (default ``0..n_images-1``). Units point at images through
        their ``image_key`` column; many units may share one image.
    dates : sequence, optional
        For sequences, the T acquisition dates (anything ``numpy.datetime64`` accepts).
    bands : sequence of str, optional
        Names of the C bands.

    Examples
    --------
    >>> src = ArraySource(np.zeros((2, 8, 8, 3)), keys=["a", "b"])
    >>> src.chips(["b", "b", "a"]).shape
    (3, 3, 8, 8)
    """

    def __init__(self, images, keys: Sequence | None = None, *, dates: Sequence | None = None,
                 bands: Sequence[str] | None = None):
        arr = np.asarray(images)
        if arr.ndim not in (4, 5):
            raise InputError(
                f"images: expected shape (n_images, H, W, C) or (n_images, T, H, W, C), got {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise InputError(f"images: expected a real numeric array, got dtype {arr.dtype}")
        if arr.shape[0] == 0 or 0 in arr.shape:
            raise InputError(f"images: an empty dimension in shape {arr.shape}")
        _refuse_channels_first(arr.shape)
        n = arr.shape[0]
        if keys is None:
            keys = np.arange(n)
        else:
            klist = list(keys)
            # mixed key types stay as they are (numpy would turn them all into strings)
            keys = np.asarray(klist, dtype=object) if len({type(k) for k in klist}) > 1 else np.asarray(klist)
        if keys.ndim != 1 or len(keys) != n:
            raise InputError(f"keys: expected {n} keys (one per image), got {len(keys)}")
        uniq, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            raise InputError(f"keys: duplicate image keys {uniq[counts > 1][:8].tolist()}; keys must be unique")
        nonfinite = ~np.isfinite(arr.reshape(n, -1)).all(axis=1) if np.issubdtype(arr.dtype, np.floating) else np.zeros(n, bool)
        if nonfinite.any():
            raise InputError(
                f"images: non-finite pixels in images with keys {keys[nonfinite][:8].tolist()}; "
                "replace NaN (nodata) by a fill value and record a mask, or drop those images"
            )
        self.images = arr
        self.keys = keys
        self._pos = {k: i for i, k in enumerate(keys.tolist())}
        self.is_sequence = arr.ndim == 5
        c = arr.shape[-1]
        if bands is not None and len(bands) != c:
            raise InputError(f"bands: {len(bands)} names for {c} bands")
        self.bands = tuple(bands) if bands is not None else tuple(f"b{i + 1}" for i in range(c))
        if dates is not None:
            if not self.is_sequence:
                raise InputError("dates: only image sequences (n_images, T, H, W, C) carry dates")
            if len(dates) != arr.shape[1]:
                raise InputError(f"dates: {len(dates)} dates for T={arr.shape[1]} frames")
            dates = np.asarray(dates, dtype="datetime64[D]")
        self.dates = dates

    # ------------------------------------------------------------------ properties
    @property
    def n_images(self) -> int:
        return self.images.shape[0]

    @property
    def chip_shape(self) -> tuple[int, ...]:
        """Shape of one chip as handed to encoders: (C, H, W) or (T, C, H, W)."""
        s = self.images.shape[1:]
        return (s[0], s[3], s[1], s[2]) if self.is_sequence else (s[2], s[0], s[1])

    def __repr__(self) -> str:
        kind = "sequences" if self.is_sequence else "images"
        return f"ArraySource({self.n_images} {kind}, chip {self.chip_shape})"

    # ------------------------------------------------------------------ access
    def positions(self, keys: Iterable) -> np.ndarray:
        """Row positions of ``keys`` in the image array; unknown keys raise InputError."""
        keys = np.asarray(list(keys) if not isinstance(keys, np.ndarray) else keys)
        try:
            return np.fromiter((self._pos[k] for k in keys.tolist()), dtype=np.int64, count=len(keys))
        except KeyError:
            missing = sorted({k for k in keys.tolist() if k not in self._pos}, key=str)
            raise InputError(
                f"image keys {missing[:8]} ({len(missing)} in all) are not in the image source; "
                f"it holds keys like {self.keys[:5].tolist()}. Check the units' image_key column"
            ) from None

    def chips(self, keys: Iterable) -> np.ndarray:
        """Channels-first float32 chips for ``keys``: (n, C, H, W) or (n, T, C, H, W)."""
        pos = self.positions(keys)
        arr = self.images[pos]
        axes = (0, 1, 4, 2, 3) if self.is_sequence else (0, 3, 1, 2)
        return np.ascontiguousarray(arr.transpose(axes), dtype=np.float32)

    def identity(self) -> str:
        """A content hash of the images, keys and dates (for caches and manifests)."""
        h = hashlib.sha256()
        h.update(str((self.images.shape, str(self.images.dtype))).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(repr(self.keys.tolist()).encode())
        if self.dates is not None:
            h.update(self.dates.astype("int64").tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ engine protocol
    def keys_for(self, units) -> np.ndarray:
        """Image key of each unit (``units.keys()``): units sharing an image share one chip."""
        from eocausal.data.units import Units

        if not isinstance(units, Units):
            raise InputError(
                f"units: an ArraySource maps Units to images through their image_key column; got "
                f"{type(units).__name__}. Build Units with Units.from_frame(..., image_key=...)"
            )
        return units.keys()

    def load(self, keys, units=None) -> np.ndarray:
        """Channels-first float32 chips for image ``keys`` (``units`` is not needed here)."""
        return self.chips(keys)

    def fingerprint(self) -> dict:
        """JSON-able identity of the images, for cache keys."""
        return {"kind": "arrays", "sha256": self.identity(), "shape": list(self.images.shape),
                "dtype": str(self.images.dtype)}
