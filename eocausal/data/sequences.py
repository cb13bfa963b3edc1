"""Dated image sequences from rasters: :class:`RasterSequence`.

Each date is one :class:`~eocausal.data.raster.RasterSource` (one file or a mosaic); a chip is
(T, C, chip_px, chip_px), frames ordered by date. The valid-pixel policy applies to a unit's worst frame.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from eocausal.data._raster_common import (DEFAULT_MIN_VALID, apply_policy, as_dates, check_dates,
                                          check_policy, select_keys, unit_geometries)
from eocausal.data.raster import RasterSource
from eocausal.errors import DataFileError, InputError


class RasterSequence:
    """Image sequences: one raster (or mosaic) per acquisition date.

    Parameters
    ----------
    paths_by_date : dict
        ``{date: path or list of paths}``; dates as ``datetime.date``, ``numpy.datetime64``
        or ``"YYYY-MM-DD"``. Every date must offer the same bands.
    **options
        As for :class:`~eocausal.data.raster.RasterSource`: ``bands``, ``chip_size_m``, ``chip_px``,
        ``resampling``, ``nodata``, ``min_valid`` (default 0.5), ``on_invalid``, ``valid``
        (``"all-bands"`` or ``"any-band"``: when a chip pixel counts as valid),
        ``mask_polygons``. ``min_valid`` and ``on_invalid`` apply to each unit's least valid
        frame.

    Attributes
    ----------
    dates : numpy.ndarray
        The T dates, sorted, as ``datetime64[D]``.
    frames : tuple of RasterSource
        One source per date, in date order.
    last_report_ : dict or None
        As for :class:`~eocausal.data.raster.RasterSource`.
    """

    def __init__(self, paths_by_date: Mapping, **options):
        if not isinstance(paths_by_date, Mapping) or not paths_by_date:
            raise InputError("paths_by_date: expected a non-empty dict {date: path or list of paths}")
        if "dates" in options:
            raise InputError("dates: a sequence takes its dates from the keys of paths_by_date")
        dates = as_dates(list(paths_by_date), "paths_by_date")
        uniq, counts = np.unique(dates, return_counts=True)
        if (counts > 1).any():
            raise InputError(f"paths_by_date: the same date given twice: {[str(d) for d in uniq[counts > 1]]}")
        self.min_valid = check_policy(options.pop("min_valid", DEFAULT_MIN_VALID),
                                      options.get("on_invalid", "drop"))
        self.on_invalid = options.pop("on_invalid", "drop")
        order = np.argsort(dates)
        paths = list(paths_by_date.values())
        self.dates = dates[order]
        self.frames = tuple(RasterSource(paths[i], dates=[dates[i]], min_valid=0.0, on_invalid="keep",
                                         **options) for i in order)
        names = {f.bands for f in self.frames}
        if len(names) > 1:
            detail = "; ".join(f"{d}: {list(f.bands)}" for d, f in zip(self.dates, self.frames))
            raise DataFileError(
                f"paths_by_date: every date must offer the same bands, got {detail}. Select common "
                "bands with bands=[...]"
            )
        first = self.frames[0]
        self.bands, self.chip_size_m, self.chip_px = first.bands, first.chip_size_m, first.chip_px
        self.mask_polygons, self.valid = first.mask_polygons, first.valid
        self.last_report_: dict | None = None

    @classmethod
    def from_stac(cls, items, bands, **options) -> "RasterSequence":
        """One frame per date of the STAC items (each a mosaic of that day's items); bands and
        options as :meth:`RasterSource.from_stac <eocausal.data.raster.RasterSource.from_stac>`."""
        from eocausal.data.stac import stac_sequence

        return stac_sequence(items, bands, **options)

    @classmethod
    def from_xarray(cls, data, time_dim: str = "time", path=None, **options) -> "RasterSequence":
        """One frame per step of ``time_dim`` of a georeferenced ``xarray.DataArray`` (dims
        (time, band, y, x)); dates from that coordinate. See
        :meth:`RasterSource.from_xarray <eocausal.data.raster.RasterSource.from_xarray>`."""
        from eocausal.data.xarray_sources import xarray_sequence

        return xarray_sequence(data, time_dim=time_dim, path=path, **options)

    def __repr__(self) -> str:
        return (f"RasterSequence({len(self.dates)} dates {self.dates[0]}..{self.dates[-1]}, "
                f"bands={list(self.bands)}, chip_size_m={self.chip_size_m}, chip_px={self.chip_px})")

    def __enter__(self) -> "RasterSequence":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close every frame's open files."""
        for f in self.frames:
            f.close()

    def _read(self, geoms, chip_size_m, chip_px, mask_polygons) -> tuple[np.ndarray, np.ndarray]:
        parts = [f._read(geoms, chip_size_m, chip_px, mask_polygons) for f in self.frames]
        return np.stack([p[0] for p in parts], axis=1), np.stack([p[1] for p in parts], axis=1)

    def chips(self, units, chip_size_m=None, chip_px=None, mask_polygons=None, return_valid: bool = False):
        """Chip sequences (n_kept, T, C, chip_px, chip_px), frames in date order.

        Parameters and policy as :meth:`RasterSource.chips`; the valid fractions returned with
        ``return_valid`` are (n_kept, T), and a unit is invalid when its worst frame is.
        """
        geoms = unit_geometries(units)
        data, valid = self._read(geoms, chip_size_m, chip_px, mask_polygons)
        keep, self.last_report_ = apply_policy(geoms.index.to_numpy(), valid.min(axis=1),
                                               self.min_valid, self.on_invalid, stacklevel=3)
        if not keep.all():
            data, valid = data[keep], valid[keep]
        return (data, valid) if return_valid else data

    def keys_for(self, units) -> np.ndarray:
        """One key per unit (its id)."""
        return self.frames[0].keys_for(units)

    def load(self, keys, units) -> np.ndarray:
        """float32 (len(keys), T, C, chip_px, chip_px) for the units whose ids are ``keys``.

        Invalid units under ``on_invalid="drop"`` come back all NaN, as in
        :meth:`RasterSource.load`.
        """
        if self.chip_px is None:
            raise InputError("chip_px: load() needs the chip size; construct the sequence with chip_px= "
                             "(and chip_size_m= for point units)")
        geoms = select_keys(unit_geometries(units), keys)
        data, valid = self._read(geoms, None, None, None)
        keep, self.last_report_ = apply_policy(geoms.index.to_numpy(), valid.min(axis=1),
                                               self.min_valid, self.on_invalid, stacklevel=3)
        data[~keep] = np.nan
        return data

    def fingerprint(self) -> dict:
        """JSON-able identity of every frame's files and the chip parameters."""
        frames = [f.fingerprint() for f in self.frames]
        return {"kind": "raster-sequence", "dates": [str(d) for d in self.dates],
                "frames": frames, "min_valid": self.min_valid, "on_invalid": self.on_invalid}

    def check_dates(self, treatment_date) -> np.ndarray:
        """Warn (ImageDateWarning) about frames after ``treatment_date``; boolean mask over frames.

        Embeddings of such frames may be post-treatment variables; frames dated on the
        treatment day itself are not flagged.
        """
        return check_dates(self.dates, treatment_date, stacklevel=3)
