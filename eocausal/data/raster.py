"""Chips from georeferenced rasters (GeoTIFF, COG, any GDAL raster): :class:`RasterSource`.

How a chip is cut
-----------------
* Point unit: a square of ``chip_size_m`` metres centred on the point, drawn in the point's UTM
  zone (UPS beyond 84N / 80S). The square's edges are densified (21 points per edge, as
  ``rasterio.warp.transform_bounds``) and reprojected to the raster CRS; the chip covers the
  bounding box there, resampled to ``chip_px`` x ``chip_px``. In a geographic raster (EPSG:4326) the
  chip therefore spans more degree-pixels east-west than north-south, but about ``chip_size_m``
  metres each way on the ground; in Web Mercator (EPSG:3857) it spans ``chip_size_m / cos(lat)``
  map metres, which is ``chip_size_m`` on the ground.
* Polygon unit: the square around the polygon's bounds in its UTM zone (side = the larger
  extent, or ``chip_size_m`` when given), then as above. ``mask_polygons=True`` sets the pixels
  whose centres fall outside the polygon to invalid.

Reading
-------
Reads go through GDAL's float-window ``RasterIO`` with ``out_shape`` (windows are not rounded
to whole pixels) into float32. Overviews are chosen explicitly, the same way on every path:
the coarsest overview whose decimation factor is not larger than the chip's raster pixels per
chip pixel (so from 2x coarser on, with overviews 2/4/8), opened with GDAL's
``OVERVIEW_LEVEL``; GDAL's own choice is switched off (``OVERVIEW_LEVEL=NONE``).
A chip inside one all-valid file (no nodata, no mask) that touches no other file is read from
that file directly: the fast path. Any other chip (near an edge, on nodata, across tiles, with
``nodata=``) is read from a virtual mosaic (an in-memory GDAL VRT, Float32) of all files,
padded on every side, where a pixel without valid data is NaN; the mosaic is read at its own
resolution over the whole pixels around the chip (plus the resampling kernel's reach) and
resampled from that block by the same float-window read, because GDAL's VRT, resampling a
fractional window, clips each source to whole output pixels (chips across two tiles came out
shifted by up to half a chip pixel). A chip counts as inside one file only when the resampling
kernel's reach (bilinear 1, cubic 2, lanczos 3 source pixels) is inside it too, so a chip near a
tile edge sees the neighbouring tile, not the edge repeated: a chip cut from tiles equals the
chip cut from one file holding them, for every resampling. GDAL resamples integer files
read directly in their own type, so those averages are rounded to whole numbers (within 0.5
of the mosaic path's unrounded ones). Several files are one surface: they must share the band
count and the CRS (reproject first, e.g. with ``gdalwarp``); where they overlap, the first
file in ``paths`` with a valid pixel wins, pixel by pixel and band by band.

Validity
--------
A band of a chip pixel is valid when at least one valid source pixel falls in it (average and
the other area resamplings, which average the valid ones) or the sampled source pixel is valid
(nearest); source pixels are invalid outside every file, under the file's mask or nodata value,
or equal to ``nodata=``. Whether a chip pixel is valid is the ``valid`` setting:

* ``"all-bands"`` (default): every band of the pixel is valid. A pixel with data in some bands
  and fill in others is invalid (for example water in ``landsat7.tif``, whose red and green
  are 0, the declared nodata, while blue is not);
* ``"any-band"``: at least one band is valid (GDAL and rasterio's dataset-mask convention: a
  pixel is nodata only when all its bands are). Use it when a band's nodata value is also a
  real value of that band.

Every band of an invalid pixel is set to 0, and an invalid band of a valid pixel (``"any-band"``)
too. A unit's valid fraction is the share of valid chip pixels (with ``mask_polygons``, of the
chip pixels inside the polygon); over a speckled mask it is larger with ``"average"`` than with
``"nearest"``, which counts at the sample points. A unit with no valid pixel (outside every
raster, or all nodata) or a fraction below ``min_valid`` (default 0.5: a chip at least half
real imagery) is handled by ``on_invalid``: ``"drop"`` (default; a DataQualityWarning with their
number, ids in ``last_report_``), ``"fail"`` (InputError listing the units) or ``"keep"``
(kept, zero-filled).

Reading order
-------------
Units are read in Z-order (Morton) of their chip centres, so neighbours reuse GDAL's cached
blocks; chips are returned in the caller's order.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from math import ceil, floor

import numpy as np

from eocausal.data._raster_common import (DEFAULT_MIN_VALID, apply_policy, as_dates,
                                          check_compatible, check_dates, check_policy,
                                          check_valid_rule, chip_boxes, common_factors, label,
                                          file_fingerprint, morton_order, pick_factor,
                                          pixel_validity, read_meta, resolve_bands,
                                          resolve_paths, select_keys, unit_geometries,
                                          vrt_mosaic)
from eocausal.errors import DataFileError, InputError

RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode",
               "gauss", "rms")
CHIP_RULE = "utm-square-bbox/densify21/float-window/v1"  # changes when chip geometry changes
_EPS = 1e-6
#: source pixels a resampling kernel reaches beyond a chip pixel's footprint (GDAL's kernels)
_KERNEL_REACH = {"nearest": 0.0, "average": 0.0, "mode": 0.0, "rms": 0.0, "bilinear": 1.0, "cubic": 2.0,
                 "cubic_spline": 2.0, "gauss": 2.0, "lanczos": 3.0}
_MAX_OPEN = 64  # open datasets kept per thread


def check_chip_size(chip_size_m, chip_px) -> tuple[float | None, int | None]:
    """Validate ``chip_size_m`` (metres > 0 or None) and ``chip_px`` (int >= 1 or None)."""
    if chip_size_m is not None:
        try:
            chip_size_m = float(chip_size_m)
        except (TypeError, ValueError):
            raise InputError(f"chip_size_m: expected a chip side in metres, got {chip_size_m!r}") from None
        if not np.isfinite(chip_size_m) or chip_size_m <= 0:
            raise InputError(f"chip_size_m: expected a positive chip side in metres, got {chip_size_m!r}")
    if chip_px is not None:
        if isinstance(chip_px, bool) or not isinstance(chip_px, (int, np.integer)) or chip_px < 1:
            raise InputError(f"chip_px: expected a positive whole number of pixels, got {chip_px!r}")
        chip_px = int(chip_px)
    return chip_size_m, chip_px


class RasterSource:
    """Image chips cut from one or more georeferenced raster files.

    Parameters
    ----------
    paths : path or list of paths
        One raster, or several (a mosaic or tiles) read as one surface. They must share the
        band count and the CRS.
    bands : None, int, str or sequence, optional
        Bands to read, in this order: 1-based numbers (as rasterio) or band descriptions
        (such as ``"B4"``). Default: all bands.
    chip_size_m : float, optional
        Default chip side in metres (needed for point units).
    chip_px : int, optional
        Default chip side in pixels (needed by :meth:`load`).
    dates : date-like or sequence, optional
        Acquisition date(s) of the imagery, for :meth:`check_dates` and the fingerprint.
    resampling : str
        GDAL resampling from raster to chip grid: ``"average"`` (default), ``"nearest"``,
        ``"bilinear"``, ``"cubic"``, ``"cubic_spline"``, ``"lanczos"``, ``"mode"``,
        ``"gauss"``, ``"rms"``.
    nodata : float, optional
        Pixel value to treat as invalid, replacing the files' own nodata and masks.
    min_valid : float
        Least valid-pixel fraction a unit needs (in [0, 1]; default 0.5); a unit also needs one
        valid pixel.
    on_invalid : {"drop", "fail", "keep"}
        What to do with units below ``min_valid``; see the module notes.
    valid : {"all-bands", "any-band"}
        When a chip pixel counts as valid: all its bands hold data (default), or any band does.
    mask_polygons : bool
        Default for :meth:`chips`: invalidate pixels outside polygon units.

    Attributes
    ----------
    crs : rasterio.crs.CRS
        The CRS of the files.
    bands : tuple of str
        Names of the bands read (descriptions, else ``"b<number>"``).
    band_indexes : tuple of int
        Their 1-based numbers.
    last_report_ : dict or None
        After each :meth:`chips` or :meth:`load`: ``n_requested``, ``n_kept``, ``n_dropped``,
        ``dropped_ids``, ``n_invalid``, ``invalid_ids``, ``invalid_valid_fraction``,
        ``policy``, ``min_valid`` and ``reason``.

    Notes
    -----
    Files are opened once, lazily, per thread (GDAL handles are not thread-safe); call
    :meth:`close` or use the source as a context manager to release them. A pickled source
    reopens its files from their paths.

    Examples
    --------
    >>> with RasterSource("scene.tif", bands=["B4", "B3", "B2"]) as src:   # doctest: +SKIP
    ...     x = src.chips(units, chip_size_m=1000, chip_px=33)              # (n, 3, 33, 33)
    """

    def __init__(self, paths, *, bands=None, chip_size_m=None, chip_px=None, dates=None,
                 resampling: str = "average", nodata=None, min_valid: float = DEFAULT_MIN_VALID,
                 on_invalid: str = "drop", valid: str = "all-bands", mask_polygons: bool = False):
        self.paths = resolve_paths(paths)
        self.chip_size_m, self.chip_px = check_chip_size(chip_size_m, chip_px)
        if resampling not in RESAMPLINGS:
            raise InputError(f"resampling: expected one of {RESAMPLINGS}, got {resampling!r}")
        self.resampling = resampling
        if nodata is not None:
            try:
                nodata = float(nodata)
            except (TypeError, ValueError):
                raise InputError(f"nodata: expected a number, got {nodata!r}") from None
        self.nodata = nodata
        self.min_valid = check_policy(min_valid, on_invalid)
        self.on_invalid = on_invalid
        self.valid = check_valid_rule(valid)
        self.mask_polygons = bool(mask_polygons)
        self.dates = None if dates is None else as_dates(dates)
        self.files = tuple(read_meta(p) for p in self.paths)
        check_compatible(self.files)
        self.band_indexes, self.bands = resolve_bands(bands, self.files)
        self.crs = self.files[0].crs
        self.last_report_: dict | None = None
        self._grids: dict = {}  # (-1, factor) -> (xml, transform, width, height) of mosaic VRTs
        self._init_handles()

    @classmethod
    def from_stac(cls, items, bands, **options) -> "RasterSource":
        """A source over STAC items: bands chosen by asset key or band name, scale/offset and
        nodata as the items declare them, dates from the items, all items one mosaic.

        ``items``: a ``pystac.ItemCollection``, ``Catalog``/``Collection``, ``Item``, list of
        items, a path to STAC JSON, or a ``pystac_client`` search. ``options`` as for the
        constructor (``chip_size_m``, ``chip_px``, ``resampling``, ...). Needs pystac
        (``pip install 'eocausal[stac]'``); see :mod:`eocausal.data.stac`.
        """
        from eocausal.data.stac import stac_source

        return stac_source(items, bands, **options)

    @classmethod
    def from_xarray(cls, data, path=None, **options) -> "RasterSource":
        """A source over a georeferenced ``xarray.DataArray`` (rioxarray's ``.rio`` CRS and
        transform; dims (band, y, x) or (y, x)), as odc-stac or stackstac load it.

        The array is written once as a tiled GeoTIFF (to ``path``, or a temporary file removed
        with the source) and read like any raster, so chips follow the same rules. Needs
        rioxarray (``pip install 'eocausal[xarray]'``); see :mod:`eocausal.data.xarray_sources`.
        """
        from eocausal.data.xarray_sources import xarray_source

        return xarray_source(data, path=path, **options)

    # ------------------------------------------------------------------ handles
    def _init_handles(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._opened: list = []

    def _source(self, k: int, factor: int) -> tuple:
        """(dataset, transform, width, height, indexes) of file ``k`` (-1: the mosaic) at ``factor``.

        Opened once per thread, with GDAL's own overview choice switched off (OVERVIEW_LEVEL).
        At most ``_MAX_OPEN`` handles stay open per thread (least recently used closed first),
        so mosaics of many tiles do not exhaust file descriptors.
        """
        import rasterio

        h = getattr(self._local, "h", None)
        if h is None:
            h = self._local.h = OrderedDict()
        key = (k, factor)
        if key in h:
            h.move_to_end(key)
        else:
            if len(h) >= _MAX_OPEN:
                old = h.popitem(last=False)[1][0]
                with self._lock:
                    self._opened.remove(old)
                old.close()
            if k < 0:
                if key not in self._grids:
                    self._grids[key] = vrt_mosaic(self.files, self.band_indexes, self.nodata, factor)
                xml, t, w, hgt = self._grids[key]
                ds, indexes = rasterio.open(xml, OVERVIEW_LEVEL="NONE"), None
            else:
                t, w, hgt, ov = self.files[k].level(factor)
                ds = rasterio.open(self.files[k].path, OVERVIEW_LEVEL="NONE" if ov is None else str(ov))
                indexes = list(self.band_indexes)
            with self._lock:
                self._opened.append(ds)
            h[key] = (ds, t, w, hgt, indexes)
        return h[key]

    def close(self) -> None:
        """Close every open file handle (of every thread); later reads reopen them."""
        with self._lock:
            for ds in self._opened:
                ds.close()
            self._opened.clear()
            self._local = threading.local()

    def __enter__(self) -> "RasterSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for k in ("_lock", "_local", "_opened"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_handles()

    def __repr__(self) -> str:
        what = label(self.paths[0]) if len(self.paths) == 1 else f"{len(self.paths)} files"
        return (f"RasterSource({what}, bands={list(self.bands)}, crs={self.crs.to_string()}, "
                f"chip_size_m={self.chip_size_m}, chip_px={self.chip_px})")

    @property
    def count(self) -> int:
        """Number of channels of a chip."""
        return len(self.band_indexes)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Union of the files' bounds, in the raster CRS."""
        b = np.array([f.bounds for f in self.files])
        return (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())

    # ------------------------------------------------------------------ chips
    def chips(self, units, chip_size_m=None, chip_px=None, mask_polygons=None, return_valid: bool = False):
        """Chips for ``units``, in their order, under the source's ``on_invalid`` policy.

        Parameters
        ----------
        units : Units, GeoDataFrame or GeoSeries
            Points or polygons with a CRS, indexed by unit id.
        chip_size_m, chip_px : optional
            Chip side in metres and in pixels (default: the source's).
        mask_polygons : bool, optional
            Invalidate pixels outside polygon units (default: the source's).
        return_valid : bool
            Also return each unit's valid-pixel fraction.

        Returns
        -------
        chips : numpy.ndarray
            float32 (n_kept, C, chip_px, chip_px), channels first, invalid pixels 0. Units dropped under
            ``on_invalid="drop"`` are left out; their ids are in ``last_report_``.
        valid : numpy.ndarray
            (n_kept,) valid fractions in [0, 1], when ``return_valid``.
        """
        geoms = unit_geometries(units)
        data, valid = self._read(geoms, chip_size_m, chip_px, mask_polygons)
        keep, self.last_report_ = apply_policy(geoms.index.to_numpy(), valid, self.min_valid,
                                               self.on_invalid, stacklevel=3)
        if not keep.all():
            data, valid = data[keep], valid[keep]
        return (data, valid) if return_valid else data

    def _read(self, geoms, chip_size_m, chip_px, mask_polygons) -> tuple[np.ndarray, np.ndarray]:
        """(n, C, chip_px, chip_px) chips with invalid pixels 0, and valid fractions; no policy."""
        import rasterio
        from affine import Affine
        from rasterio.enums import Resampling
        from rasterio.features import geometry_mask

        chip_size_m, chip_px = check_chip_size(self.chip_size_m if chip_size_m is None else chip_size_m,
                                               self.chip_px if chip_px is None else chip_px)
        if chip_px is None:
            raise InputError("chip_px: no chip size in pixels; pass chip_px= to chips() or to the source")
        mask_polygons = self.mask_polygons if mask_polygons is None else bool(mask_polygons)
        boxes = chip_boxes(geoms, self.crs, chip_size_m)
        n = len(geoms)
        hits, plain, factor = self._plan(boxes, chip_px)
        polys = None
        if mask_polygons:
            polygonal = (geoms.geom_type != "Point").to_numpy()
            if polygonal.any():
                polys = np.full(n, None, dtype=object)
                polys[polygonal] = geoms[polygonal].to_crs(self.crs).to_numpy()
        data = np.zeros((n, self.count, chip_px, chip_px), np.float32)
        valid = np.zeros(n)
        rs = Resampling[self.resampling]
        order = morton_order((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2)
        for u in order:
            if not hits[u].any():
                continue
            chip = data[u]
            chip[...] = np.nan
            src = self._source(int(plain[u]), int(factor[u]))
            try:
                (_read_window if plain[u] >= 0 else _read_mosaic_window)(src, boxes[u], chip_px, rs, chip)
            except rasterio.errors.RasterioError as exc:
                raise DataFileError(
                    f"paths: reading a chip for unit {geoms.index[u]!r} from {[label(p) for p in self.paths]} "
                    f"failed ({exc}); check that the files are complete and readable"
                ) from exc
            nan = np.isnan(chip)
            ok_px = pixel_validity(chip, self.valid)
            if nan.any():
                chip[nan] = 0.0
                chip[:, ~ok_px] = 0.0
            if polys is not None and polys[u] is not None:
                x0, y0, x1, y1 = boxes[u]
                tr = Affine((x1 - x0) / chip_px, 0.0, x0, 0.0, (y0 - y1) / chip_px, y1)
                inside = geometry_mask([polys[u]], (chip_px, chip_px), tr, invert=True)
                if not inside.any():  # polygon thinner than a pixel: every touched pixel
                    inside = geometry_mask([polys[u]], (chip_px, chip_px), tr, invert=True, all_touched=True)
                valid[u] = (ok_px & inside).sum() / max(inside.sum(), 1)
                ok_px &= inside
            else:
                valid[u] = ok_px.mean()
            if polys is not None and not ok_px.all():
                chip[:, ~ok_px] = 0.0
        return data, valid

    def _plan(self, boxes: np.ndarray, chip_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per unit: which files its box hits (n, F); the file to read directly, or -1 for the
        mosaic; and the overview factor (the coarsest not coarser than the chip)."""
        fb = np.array([f.bounds for f in self.files])
        ok = np.isfinite(boxes).all(1)[:, None]
        # grown by the resampling kernel's reach (source pixels, scaled when a chip pixel spans
        # several): a chip whose kernel reaches past a file's edge is read from the mosaic, so it
        # sees the neighbouring tile's pixels (or no data) rather than the file's edge repeated
        px = np.array([[f.transform.a, -f.transform.e] for f in self.files]).max(0)
        span = np.maximum((boxes[:, 2] - boxes[:, 0]) / px[0], (boxes[:, 3] - boxes[:, 1]) / px[1]) / chip_px
        grow = _KERNEL_REACH[self.resampling] * np.where(np.isfinite(span), np.maximum(span, 1.0), 0.0)
        x0, y0, x1, y1 = (boxes[:, None, k] + sgn * (grow * px[k % 2])[:, None]
                          for k, sgn in enumerate((-1, -1, 1, 1)))
        hits = ok & (x0 < fb[:, 2]) & (x1 > fb[:, 0]) & (y0 < fb[:, 3]) & (y1 > fb[:, 1])
        within = ok & (x0 >= fb[:, 0]) & (x1 <= fb[:, 2]) & (y0 >= fb[:, 1]) & (y1 <= fb[:, 3])
        direct_ok = np.array([f.all_valid for f in self.files]) & (self.nodata is None)
        plain = np.where((hits.sum(1) == 1) & (within & direct_ok).any(1), within.argmax(1), -1)
        res = np.array([[f.transform.a, -f.transform.e] for f in self.files])[np.maximum(plain, 0)]
        ratio = np.minimum((boxes[:, 2] - boxes[:, 0]) / res[:, 0],
                           (boxes[:, 3] - boxes[:, 1]) / res[:, 1]) / chip_px
        factor = pick_factor(common_factors(self.files), ratio)
        for k in np.unique(plain[plain >= 0]):
            sel = plain == k
            factor[sel] = pick_factor(common_factors([self.files[k]]), ratio[sel])
        return hits, plain, factor

    # ------------------------------------------------------------------ engine protocol
    def keys_for(self, units) -> np.ndarray:
        """One key per unit (its id): each unit gets its own chip."""
        geoms = unit_geometries(units)
        if geoms.index.has_duplicates:
            raise InputError("units: duplicate unit ids; each unit needs a unique id to key its chip")
        return geoms.index.to_numpy()

    def load(self, keys, units) -> np.ndarray:
        """float32 chips (len(keys), C, chip_px, chip_px) for the units whose ids are ``keys``.

        Uses the source's ``chip_size_m``, ``chip_px``, ``mask_polygons``, ``min_valid`` and
        ``on_invalid``. The shape never shrinks: under ``"drop"`` the chips of invalid units
        are all NaN (so their embeddings are NaN and the caller drops them), with a
        DataQualityWarning; the ids are in ``last_report_["dropped_ids"]``.
        """
        if self.chip_px is None:
            raise InputError("chip_px: load() needs the chip size; construct the source with chip_px= "
                             "(and chip_size_m= for point units)")
        geoms = select_keys(unit_geometries(units), keys)
        data, valid = self._read(geoms, None, None, None)
        keep, self.last_report_ = apply_policy(geoms.index.to_numpy(), valid, self.min_valid,
                                               self.on_invalid, stacklevel=3)
        data[~keep] = np.nan
        return data

    def fingerprint(self) -> dict:
        """JSON-able identity of the files and the chip parameters, for cache keys."""
        return {
            "kind": "raster",
            "files": [file_fingerprint(p) for p in self.paths],
            "bands": list(self.band_indexes), "band_names": list(self.bands),
            "chip_size_m": self.chip_size_m, "chip_px": self.chip_px, "resampling": self.resampling,
            "mask_polygons": self.mask_polygons, "nodata": self.nodata,
            "dates": None if self.dates is None else [str(d) for d in self.dates],
            "min_valid": self.min_valid, "on_invalid": self.on_invalid, "valid": self.valid,
            "chip_rule": CHIP_RULE,
        }

    def check_dates(self, treatment_date) -> np.ndarray:
        """Warn (ImageDateWarning) if the imagery postdates ``treatment_date``; mask of dates after."""
        return check_dates(self.dates, treatment_date, stacklevel=3)


def _read_mosaic_window(src, box, chip_px: int, resampling, out: np.ndarray) -> None:
    """:func:`_read_window` for the mosaic VRT: its sources are composed exactly first, then resampled.

    GDAL's VRT clips each of several sources to whole output pixels when a request resamples a
    fractional window, which shifts a chip that spans two tiles by up to half a chip pixel (measured:
    9 of 300 chips of studies/data/scene.tif cut into two tiles, nearest resampling). So the
    mosaic is read at its own resolution over the whole pixels around the box (a margin of the
    resampling kernel's reach), put in an in-memory GeoTIFF, and resampled from there by the same
    float-window read as a single file: a chip across tiles equals the chip of one file holding them
    (to GDAL's rounding of integer files read directly, within 0.5). Chips of one file keep the plain
    read: with a single source the VRT is exact, and the kernels of cubic and lanczos resampling then
    reach past the file's edge as in the file itself.
    """
    from affine import Affine
    from rasterio.io import MemoryFile
    from rasterio.windows import Window

    ds, t, width, height, indexes = src
    col0, row0 = (box[0] - t.c) / t.a, (box[3] - t.f) / t.e
    col1, row1 = (box[2] - t.c) / t.a, (box[1] - t.f) / t.e
    margin = int(ceil(4 * max((col1 - col0) / chip_px, (row1 - row0) / chip_px, 1.0))) + 1
    c0, r0 = max(0, floor(col0) - margin), max(0, floor(row0) - margin)
    c1, r1 = min(width, ceil(col1) + margin), min(height, ceil(row1) + margin)
    if c1 <= c0 or r1 <= r0:
        return
    block = ds.read(indexes, window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype=np.float32)
    sub = t @ Affine.translation(c0, r0)
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=c1 - c0, height=r1 - r0, count=len(block), dtype="float32",
                      transform=sub, nodata=float("nan")) as tmp:
            tmp.write(block)
        with mem.open() as tmp:
            _read_window((tmp, sub, c1 - c0, r1 - r0, None), box, chip_px, resampling, out)


def _read_window(src, box, chip_px: int, resampling, out: np.ndarray) -> None:
    """Read ``box`` (raster CRS) resampled to ``out`` (C, chip_px, chip_px); parts off the grid stay NaN."""
    from rasterio.windows import Window

    ds, t, width, height, indexes = src
    col, row = (box[0] - t.c) / t.a, (box[3] - t.f) / t.e
    sx, sy = (box[2] - box[0]) / t.a / chip_px, (box[1] - box[3]) / t.e / chip_px
    i0, i1 = max(0, ceil(-col / sx - _EPS)), min(chip_px, floor((width - col) / sx + _EPS))
    j0, j1 = max(0, ceil(-row / sy - _EPS)), min(chip_px, floor((height - row) / sy + _EPS))
    if i1 <= i0 or j1 <= j0:
        return
    c0, r0 = max(0.0, col + i0 * sx), max(0.0, row + j0 * sy)
    win = Window(c0, r0, min((i1 - i0) * sx, width - c0), min((j1 - j0) * sy, height - r0))
    if (i0, j0, i1, j1) == (0, 0, chip_px, chip_px):
        ds.read(indexes, window=win, out=out, resampling=resampling)
    else:
        out[:, j0:j1, i0:i1] = ds.read(indexes, window=win, out_shape=(out.shape[0], j1 - j0, i1 - i0),
                                       out_dtype=np.float32, resampling=resampling)
