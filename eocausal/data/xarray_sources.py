"""Imagery handed over as xarray: :meth:`RasterSource.from_xarray` and :meth:`RasterSequence.from_xarray`.

Users of odc-stac and stackstac hold their imagery as an ``xarray.DataArray`` whose CRS and
transform rioxarray knows (``data.rio.crs``, ``data.rio.transform()``). Such an array is written
once as a tiled GeoTIFF (per time step for a sequence), band by band, so a lazy (dask) array is
computed one band at a time, and then read by :class:`~eocausal.data.raster.RasterSource` like
any file: the chip rules (UTM squares, GDAL resampling, overviews none, validity) are the same
as for the files the array came from.

* Dims: (band, y, x) or (y, x) for a source; (time, band, y, x) or (time, y, x) for a sequence.
  The spatial dims are rioxarray's (``x``/``y`` or ``longitude``/``latitude``); the other dim is
  the band dim whatever its name, and its coordinate values (when strings) name the bands.
* Rows running south-up (y increasing) are flipped north-up before writing.
* Invalid pixels: the array's nodata (``data.rio.nodata`` or ``data.rio.encoded_nodata``);
  a float array without one has NaN invalid.
* ``path=`` keeps the GeoTIFF (a sequence: ``<stem>_<date><suffix>`` per step); without it
  the files go to a temporary folder removed when the source is garbage collected, so a source
  meant for other processes (Ray workers) should be given a ``path``.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import warnings
import weakref
from pathlib import Path

import numpy as np

from eocausal.data._raster_common import as_dates, write_geotiff
from eocausal.errors import CRSError, InputError, OutputError, require

__all__ = ["xarray_source", "xarray_sequence"]


def _check(data):
    require("rioxarray", "xarray", "reading xarray imagery")
    import xarray as xr

    if isinstance(data, xr.Dataset):
        raise InputError("data: an xarray Dataset; pass one DataArray, e.g. ds.to_array('band') for all "
                         "variables as bands or ds['red'] for one")
    if not isinstance(data, xr.DataArray):
        raise InputError(f"data: expected an xarray.DataArray, got {type(data).__name__}")
    try:
        xdim, ydim = data.rio.x_dim, data.rio.y_dim
    except Exception as exc:  # rioxarray's MissingSpatialDimensionError
        raise InputError(f"data: no spatial dims found ({exc}); name them x/y or longitude/latitude, or "
                         "set them with data.rio.set_spatial_dims(x_dim=..., y_dim=...)") from exc
    if data.rio.crs is None:
        raise CRSError("data: the DataArray has no CRS, so its pixels cannot be placed on the ground; set it "
                       "with data.rio.write_crs('EPSG:32636') (the array's real CRS)")
    return xdim, ydim


def _write(data, xdim: str, ydim: str, path: Path) -> Path:
    """Write a (band, y, x) or (y, x) DataArray north-up as a GeoTIFF at ``path`` (atomically)."""
    others = [d for d in data.dims if d not in (xdim, ydim)]
    if len(others) > 1:
        raise InputError(f"data: dims {tuple(data.dims)}: expected (band, y, x) or (y, x) per image; select "
                         f"or stack the extra dims {others[1:]} first")
    if not others:
        data = data.expand_dims("band")
        others = ["band"]
    bdim = others[0]
    data = data.transpose(bdim, ydim, xdim)
    if data.sizes[ydim] > 1 and float(data[ydim][1] - data[ydim][0]) > 0:
        data = data.isel({ydim: slice(None, None, -1)})  # south-up -> north-up
    transform = data.rio.transform(recalc=True)
    dtype = np.dtype(data.dtype)
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    elif dtype.kind == "f" and dtype.itemsize < 4:
        dtype = np.dtype(np.float32)
    elif dtype.kind not in "uif":
        raise InputError(f"data: dtype {data.dtype} is not a raster type; cast to a number type first")
    nodata = data.rio.nodata if data.rio.nodata is not None else data.rio.encoded_nodata
    if nodata is None and dtype.kind == "f":
        nodata = float("nan")
    coords = data[bdim].values if bdim in data.coords else None
    names = [str(v) for v in coords] if coords is not None and all(isinstance(v, str) for v in coords) else None

    def blocks():
        for k in range(data.sizes[bdim]):  # one band at a time: a dask array is computed per band
            yield 0, np.asarray(data.isel({bdim: k}).values, dtype=dtype)[None], [k + 1]

    try:
        write_geotiff(path, width=data.sizes[xdim], height=data.sizes[ydim], count=data.sizes[bdim],
                      dtype=dtype.name, transform=transform, crs=data.rio.crs, nodata=nodata, blocks=blocks(),
                      descriptions=names)
    except OSError as exc:
        raise OutputError(f"path={str(path)!r}: cannot write the array as a GeoTIFF ({exc}); choose a "
                          "writable path") from exc
    return path


class _TempFolder:
    """A temporary folder removed when the last source holding it is garbage collected. A pickled
    copy (a Ray worker's) refers to the same folder without owning it."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="eocausal-xarray-"))
        weakref.finalize(self, shutil.rmtree, self.path, True)

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]


def _quiet_rioxarray(func):
    """rioxarray 0.19 multiplies Affine objects with ``*``, which affine 3 flags on every call; the
    warning is about their code, not the user's data."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Use `@` matmul", category=PendingDeprecationWarning)
            return func(*args, **kwargs)
    return wrapper


@_quiet_rioxarray
def xarray_source(data, path=None, **options):
    """A :class:`~eocausal.data.raster.RasterSource` over a georeferenced DataArray (module notes)."""
    from eocausal.data.raster import RasterSource

    xdim, ydim = _check(data)
    holder = _TempFolder() if path is None else None
    target = Path(path) if path is not None else holder.path / "image.tif"
    _write(data, xdim, ydim, target)
    src = RasterSource(target, **options)
    src._xarray_files = holder  # the folder lives as long as the source
    return src


@_quiet_rioxarray
def xarray_sequence(data, time_dim: str = "time", path=None, **options):
    """A :class:`~eocausal.data.sequences.RasterSequence`, one frame per ``time_dim`` step."""
    from eocausal.data.sequences import RasterSequence

    xdim, ydim = _check(data)
    if time_dim not in data.dims:
        raise InputError(f"time_dim: {time_dim!r} is not a dim of the array (dims {tuple(data.dims)}); name "
                         "the time dim")
    if time_dim not in data.coords:
        raise InputError(f"time_dim: the dim {time_dim!r} has no coordinate; the frames need their dates")
    dates = as_dates(data[time_dim].values, time_dim)
    if len(np.unique(dates)) < len(dates):
        raise InputError(f"{time_dim}: several steps fall on one day; composite them per day first "
                         "(e.g. data.groupby('time.date').median()) since a frame is one date")
    holder = _TempFolder() if path is None else None
    if path is None:
        folder, stem, suffix = holder.path, "frame", ".tif"
    else:
        p = Path(path)
        folder, stem, suffix = p.parent, p.stem, p.suffix or ".tif"
    by_date = {}
    for k, d in enumerate(dates):
        target = folder / f"{stem}_{d}{suffix}"
        by_date[d] = _write(data.isel({time_dim: k}), xdim, ydim, target)
    seq = RasterSequence(by_date, **options)
    seq._xarray_files = holder
    return seq
