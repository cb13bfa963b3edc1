"""Example chips for the report: a few units of each arm in true colour.

A :class:`ChipGallery` holds the chips already turned into 8-bit true-colour images (so an
output folder keeps exactly what the report shows, and ``eocausal report DIR`` draws it again
without the imagery). True colour takes the bands named red, green and blue
(:func:`true_colour_bands`) and stretches each band linearly between its 2nd and 98th percentiles
over all the gallery's chips (QGIS's default "cumulative count cut" for multiband rasters), one
stretch for every chip, so brightness and colour compare across chips and arms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from eocausal.errors import InputError

__all__ = ["ChipGallery", "true_colour", "true_colour_bands"]

#: band names taken as red, green and blue: plain names (any case), and Sentinel-2 and Landsat 8/9 band
#: numbers as those products write them (B4, B04; SR_B4 in Landsat Collection 2 surface reflectance).
#: The numbers match only in upper case: "b1", "b2", ... are the generic names of unnamed bands.
_RGB_WORDS = ("red", "green", "blue")
_RGB_NUMBERS = ({"B4", "B04", "SR_B4"}, {"B3", "B03", "SR_B3"}, {"B2", "B02", "SR_B2"})
#: percentiles of the linear display stretch
STRETCH = (2.0, 98.0)


def true_colour_bands(bands: Sequence[str]) -> tuple[tuple[int, ...], str]:
    """Which bands show as red, green and blue, and a phrase saying so.

    Bands named red, green and blue (or their Sentinel-2 / Landsat 8-9 numbers B4, B3, B2) when the
    imagery names them; otherwise its first three bands; a single band is shown in grey.

    Returns
    -------
    indexes : tuple of int
        Three band positions (one for grey).
    how : str
        E.g. "true colour (red, green, blue)", "bands b1, b2, b3 as red, green, blue (no bands are
        named red, green and blue)".
    """
    names = [str(b) for b in bands]
    if not names:
        raise InputError("bands: the imagery has no bands to show")
    found = []
    for word, numbers in zip(_RGB_WORDS, _RGB_NUMBERS):
        hit = [i for i, n in enumerate(names) if n.strip().lower() in (word, word[0]) or n.strip() in numbers]
        found.append(hit[0] if hit else None)
    if None not in found:
        return tuple(found), f"true colour ({', '.join(names[i] for i in found)})"
    if len(names) >= 3:
        return (0, 1, 2), (f"bands {', '.join(names[:3])} as red, green, blue (no bands are named red, green "
                           "and blue)")
    return (0,), f"band {names[0]} in grey"


def true_colour(chips, indexes: Sequence[int], *, stretch: tuple[float, float] = STRETCH) -> np.ndarray:
    """8-bit display images (k, H, W, 3) of channels-first chips (k, C, H, W).

    Each band at ``indexes`` (three, or one shown in grey) is stretched linearly from its ``stretch``
    percentiles over all the chips' finite pixels to 0-255: one stretch per band for the whole set,
    so the chips compare. Non-finite pixels show black.
    """
    chips = np.asarray(chips, dtype=float)
    if chips.ndim != 4:
        raise InputError(f"chips: expected (k, C, H, W), got shape {chips.shape}")
    rgb = chips[:, list(indexes)]
    if rgb.shape[1] == 1:
        rgb = np.repeat(rgb, 3, axis=1)
    out = np.zeros(rgb.shape, dtype=np.uint8)
    for band in range(3):
        values = rgb[:, band]
        finite = values[np.isfinite(values)]
        if not finite.size:
            continue
        lo, hi = np.percentile(finite, stretch)
        scaled = np.clip((np.where(np.isfinite(values), values, lo) - lo) / max(hi - lo, 1e-12), 0, 1)
        out[:, band] = np.round(scaled * 255).astype(np.uint8)
    return out.transpose(0, 2, 3, 1)


@dataclass(frozen=True, eq=False)
class ChipGallery:
    """Example chips of each arm, as the report shows them.

    Attributes
    ----------
    images : ndarray of uint8, (k, H, W, 3)
        The chips in true colour (:func:`true_colour`).
    labels : ndarray of str
        "treated" or "control" for each chip.
    ids : ndarray of str
        The unit each chip belongs to.
    how : str
        Which bands show as red, green and blue, and the stretch (the figure's caption).
    """

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    how: str

    @classmethod
    def from_source(cls, units, source, *, per_arm: int = 4, seed: int = 0,
                    ids: Sequence | None = None) -> "ChipGallery | None":
        """Draw ``per_arm`` units of each arm at random (``seed``) and read their chips.

        Parameters
        ----------
        units : Units
            The study units (with a treatment).
        source : image source
            Anything with the source protocol (``keys_for(units)``, ``load(keys, units)``) and
            ``bands``: :class:`~eocausal.ArraySource`, :class:`~eocausal.RasterSource`.
        per_arm : int
            Chips per arm.
        seed : int
            Which units are drawn.
        ids : sequence, optional
            Draw only among these unit ids (e.g. the units that kept a valid chip and were estimated).

        Returns
        -------
        ChipGallery, or None when the units have no treatment or an arm has no valid chip.
        """
        if per_arm < 1:
            raise InputError(f"per_arm={per_arm}: show at least one chip per arm")
        frame, treat = getattr(units, "frame", None), getattr(units, "treatment", None)
        if frame is None or treat is None or source is None:
            return None
        keys = np.asarray(source.keys_for(units))
        unit_ids = frame.index.to_numpy()
        allowed = np.ones(len(frame), bool) if ids is None else np.isin(unit_ids, np.asarray(list(ids)))
        w = frame[treat].to_numpy()
        rng = np.random.default_rng(seed)
        picked, chips, labels = [], [], []
        for arm, value in (("treated", 1), ("control", 0)):
            pool = np.flatnonzero(allowed & (w == value))
            rng.shuffle(pool)
            got = 0
            for start in range(0, len(pool), 4 * per_arm):  # read a few more than needed: some may be invalid
                batch = pool[start:start + 4 * per_arm]
                data = np.asarray(source.load(keys[batch], units), dtype=float)
                if data.ndim == 5:  # image sequences (n, T, C, H, W): the last frame
                    data = data[:, -1]
                for i, chip in zip(batch, data):
                    if got < per_arm and np.isfinite(chip).all():
                        picked.append(i)
                        chips.append(chip)
                        labels.append(arm)
                        got += 1
                if got == per_arm:
                    break
            if got == 0:
                return None
        indexes, how = true_colour_bands(getattr(source, "bands", None) or
                                         [f"b{i + 1}" for i in range(chips[0].shape[0])])
        return cls(images=true_colour(np.stack(chips), indexes),
                   labels=np.array(labels, dtype=str),
                   ids=np.array([str(v) for v in unit_ids[picked]], dtype=str),
                   how=f"{how}, each band stretched linearly between its percentiles {STRETCH[0]:g} and "
                       f"{STRETCH[1]:g} over the chips shown")
