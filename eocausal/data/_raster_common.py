"""Private helpers shared by the raster readers: files, bands, chip geometry, policies, dates.

Nothing here is public API; :mod:`eocausal.data.raster`, :mod:`eocausal.data.sequences` and
:mod:`eocausal.data.embedding_raster` build on it.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

from eocausal.errors import (CRSError, DataFileError, DataQualityWarning, ImageDateWarning,
                             InputError, MissingFileError)

_MAX_LISTED = 8
_DENSIFY = 21  # points added along each edge of a chip square before reprojection (as GDAL)
_HEAD_TAIL = 1 << 20  # bytes hashed at each end of a file by the fingerprint


def listed(items, limit: int = _MAX_LISTED) -> str:
    items = [i.item() if isinstance(i, np.generic) else i for i in items]
    shown = ", ".join(repr(i) for i in items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"[{shown}{more}]"


# ----------------------------------------------------------------------------- files
@dataclass(frozen=True)
class RasterFile:
    """What the readers need to know about one raster file (read once, at construction)."""

    path: str
    crs: object
    count: int
    dtype: str
    descriptions: tuple
    transform: object
    width: int
    height: int
    nodata: float | None
    all_valid: bool  # no nodata, no mask, no alpha: every pixel inside the footprint is valid
    overviews: tuple = ()  # (decimation factor, width, height) of each overview, in GDAL's order

    def level(self, factor: int):
        """(transform, width, height, overview index or None) at an overview factor (1: full)."""
        from affine import Affine

        t = self.transform
        for k, (fac, w, h) in enumerate(self.overviews):
            if fac == factor:
                return Affine(t.a * self.width / w, 0.0, t.c, 0.0, t.e * self.height / h, t.f), w, h, k
        return t, self.width, self.height, None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)


def is_inline_vrt(path: str) -> bool:
    """A band stack or scaling built in memory (:mod:`eocausal.data.stac`): VRT XML, not a file name."""
    return path.lstrip().startswith("<VRTDataset")


def is_remote(path: str) -> bool:
    """A GDAL virtual-file path or a URL (read through GDAL, never stat-ed locally)."""
    return path.startswith("/vsi") or "://" in path


def vrt_sources(xml: str) -> list[str]:
    """The files an inline VRT reads (its SourceFilename elements, in order, unescaped)."""
    from xml.sax.saxutils import unescape

    return [unescape(m) for m in re.findall(r"<SourceFilename[^>]*>(.*?)</SourceFilename>", xml, flags=re.S)]


def label(path: str) -> str:
    """How a path appears in messages: an inline VRT by the files it stacks."""
    if is_inline_vrt(path):
        srcs = list(dict.fromkeys(vrt_sources(path)))
        return f"a band stack of {listed(srcs, 4)}"
    return path


def resolve_paths(paths, arg: str = "paths") -> tuple[str, ...]:
    """One path or a sequence of paths -> tuple of absolute path strings (order kept)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    try:
        paths = list(paths)
    except TypeError:
        raise InputError(f"{arg}: expected a path or a list of paths, got {type(paths).__name__}") from None
    if not paths:
        raise InputError(f"{arg}: no raster file given; pass a path or a non-empty list of paths")
    out = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise InputError(f"{arg}: expected file paths, got {type(p).__name__} {p!r}")
        s = os.fspath(p)
        out.append(s if is_remote(s) or is_inline_vrt(s) else str(Path(s).expanduser().resolve()))
    dup = sorted({p for p in out if out.count(p) > 1})
    if dup:
        raise InputError(f"{arg}: files listed more than once: {listed(dup)}")
    return tuple(out)


def read_meta(path: str, *, bottom_up: bool = False) -> RasterFile:
    """Open ``path`` once and read its metadata; typed errors for missing, unreadable, no CRS.

    ``bottom_up``: accept rows stored bottom-up (a positive y pixel size, as some copies of
    embedding products ship); the caller then computes rows from the geotransform. Chip readers
    keep the default (they assume north-up windows) and refuse such files with the fix."""
    import rasterio
    from rasterio.enums import MaskFlags
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    local = not (is_remote(path) or is_inline_vrt(path))
    shown = label(path)
    if local and Path(path).is_dir():
        raise DataFileError(
            f"paths: {path} is a folder, not a raster file; pass the raster files in it, e.g. "
            f"sorted(Path({path!r}).glob('*.tif'))"
        )
    if local and not Path(path).is_file():
        raise MissingFileError(
            f"paths: raster file {path} does not exist; check the path (relative paths are "
            f"taken from the working directory {os.getcwd()})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                factors = ds.overviews(1) if ds.count else []
                meta = RasterFile(
                    path=path, crs=ds.crs, count=ds.count, dtype=ds.dtypes[0],
                    descriptions=tuple(ds.descriptions), transform=ds.transform,
                    width=ds.width, height=ds.height, nodata=ds.nodata,
                    all_valid=all(MaskFlags.all_valid in f for f in ds.mask_flag_enums),
                )
            ovs = []
            for k, fac in enumerate(factors):
                with rasterio.open(path, overview_level=k) as ov:
                    ovs.append((int(fac), ov.width, ov.height))
            meta = replace(meta, overviews=tuple(ovs))
    except RasterioError as exc:
        raise DataFileError(
            f"paths: {shown} cannot be read as a raster ({exc}); check that it is a GeoTIFF or "
            "another GDAL-readable raster and that the file is complete (not truncated)"
        ) from exc
    if meta.crs is None or not meta.crs.to_wkt():
        raise CRSError(
            f"paths: raster {shown} has no CRS, so its pixels cannot be placed on the ground. "
            f"Set the CRS it is in, e.g. `rio edit-info --crs EPSG:4326 {path}` or "
            f"`gdal_edit.py -a_srs EPSG:4326 {path}` (use the raster's real EPSG code)"
        )
    t = meta.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e == 0 or (t.e > 0 and not bottom_up):
        raise DataFileError(
            f"paths: raster {shown} has a rotated, sheared or south-up geotransform {tuple(t)[:6]}; "
            f"warp it north-up first: `gdalwarp {path} north_up.tif`"
        )
    return meta


def check_compatible(files: Sequence[RasterFile]) -> None:
    """All files of one surface must share the band count and the CRS."""
    counts = {f.count for f in files}
    if len(counts) > 1:
        detail = "; ".join(f"{label(f.path)}: {f.count} bands" for f in files)
        raise DataFileError(
            f"paths: the files of one source must have the same number of bands, got {detail}. "
            "Pass files of one product (or separate sources per product)"
        )
    first = files[0].crs
    other = [f for f in files[1:] if f.crs != first]
    if other:
        detail = "; ".join(f"{label(f.path)}: {f.crs.to_string()}" for f in [files[0], *other])
        raise CRSError(
            f"paths: the files of one source must share one CRS, got {detail}. Reproject them to "
            f"one CRS first, e.g. `gdalwarp -t_srs {first.to_string()} in.tif out.tif`"
        )


def resolve_bands(bands, files: Sequence[RasterFile]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``bands`` (None, 1-based ints or descriptions) -> (indexes, names)."""
    count = files[0].count
    desc = [next((f.descriptions[i] for f in files if f.descriptions[i]), None) for i in range(count)]
    if bands is None:
        idx = tuple(range(1, count + 1))
    else:
        items = [bands] if isinstance(bands, (str, int, np.integer)) else list(bands)
        if not items:
            raise InputError("bands: an empty list; pass None for all bands")
        idx = []
        for b in items:
            if isinstance(b, str):
                if b not in desc:
                    avail = [d for d in desc if d]
                    have = f"the available descriptions are {avail}" if avail else \
                        "the files carry no band descriptions"
                    raise InputError(
                        f"bands: no band described as {b!r}; {have}. Pass band numbers "
                        f"1..{count} or one of the descriptions"
                    )
                idx.append(desc.index(b) + 1)
            elif isinstance(b, (int, np.integer)) and not isinstance(b, bool):
                if not 1 <= int(b) <= count:
                    raise InputError(f"bands: band {int(b)} does not exist; bands are numbered 1..{count}")
                idx.append(int(b))
            else:
                raise InputError(f"bands: expected band numbers or descriptions, got {b!r}")
        idx = tuple(idx)
    names = tuple(desc[i - 1] or f"b{i}" for i in idx)
    return idx, names


def _snap(v: float) -> float:
    """A float within 1e-6 of a whole number becomes that number (keeps 1:1 sources unresampled)."""
    r = round(float(v))
    return float(r) if abs(v - r) < 1e-6 else float(v)


def _gt(transform) -> str:
    return ",".join(repr(float(v)) for v in transform.to_gdal())


def common_factors(files: Sequence[RasterFile]) -> tuple[int, ...]:
    """Overview factors every file has, with 1 (full resolution) first."""
    common = set.intersection(*({fac for fac, _, _ in f.overviews} for f in files))
    return (1, *sorted(common - {1}))


def pick_factor(factors: Sequence[int], ratio: np.ndarray) -> np.ndarray:
    """The largest overview factor not coarser than ``ratio`` raster pixels per chip pixel."""
    f = np.asarray(factors)
    k = np.searchsorted(f, np.nan_to_num(ratio, nan=1.0) * (1 + 1e-6), side="right") - 1
    return f[np.clip(k, 0, len(f) - 1)]


def vrt_mosaic(files: Sequence[RasterFile], indexes: Sequence[int], nodata,
               factor: int = 1) -> tuple[str, object, int, int]:
    """Float32 VRT over all files, at an overview factor, NaN where no file has a valid pixel.

    The grid is the first file's, extended to the union of the files and padded on every side
    by the union's size, so chips near an edge are read whole (outside = NaN = invalid).
    Files are painted last-to-first with their masks (or ``nodata``) transparent: the first
    file with a valid pixel wins. Sources open the overview chosen explicitly (OVERVIEW_LEVEL),
    never one GDAL would pick. Returns (xml, transform, width, height).
    """
    from affine import Affine

    levels = [f.level(factor) for f in files]
    t0 = levels[0][0]
    a, e = t0.a, t0.e
    lefts, bottoms, rights, tops = np.array([f.bounds for f in files]).T
    pad_x = np.ceil((rights.max() - lefts.min()) / a)
    pad_y = np.ceil((tops.max() - bottoms.min()) / -e)
    x0 = t0.c - (np.ceil((t0.c - lefts.min()) / a) + pad_x) * a
    y0 = t0.f - (np.ceil((tops.max() - t0.f) / -e) + pad_y) * e
    width = int(np.ceil((rights.max() - x0) / a) + pad_x)
    height = int(np.ceil((y0 - bottoms.min()) / -e) + pad_y)
    transform = Affine(a, 0.0, float(x0), 0.0, e, float(y0))
    bands = []
    for k, b in enumerate(indexes, 1):
        srcs = []
        for f, (t, w, h, ov) in zip(reversed(files), reversed(levels)):
            xo, yo = _snap((t.c - x0) / a), _snap((t.f - y0) / e)
            xs, ys = _snap(w * t.a / a), _snap(h * t.e / e)
            dst = f'<DstRect xOff="{xo!r}" yOff="{yo!r}" xSize="{xs!r}" ySize="{ys!r}"/>'
            level = "NONE" if ov is None else ov
            src = (f'<SourceFilename relativeToVRT="0">{escape(f.path)}</SourceFilename>'
                   f'<OpenOptions><OOI key="OVERVIEW_LEVEL">{level}</OOI></OpenOptions>'
                   f'<SourceBand>{b}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" '
                   f'ySize="{h}"/>{dst}')
            if nodata is not None:
                srcs.append(f"<ComplexSource>{src}<NODATA>{nodata!r}</NODATA></ComplexSource>")
            elif f.all_valid:
                srcs.append(f"<SimpleSource>{src}</SimpleSource>")
            else:
                srcs.append(f"<ComplexSource>{src}<UseMaskBand>true</UseMaskBand></ComplexSource>")
        bands.append(f'<VRTRasterBand dataType="Float32" band="{k}"><NoDataValue>nan</NoDataValue>'
                     f'{"".join(srcs)}</VRTRasterBand>')
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>'
           f"{escape(files[0].crs.to_wkt())}</SRS><GeoTransform>{_gt(transform)}</GeoTransform>"
           f'{"".join(bands)}</VRTDataset>')
    return xml, transform, width, height


def write_geotiff(path, *, width: int, height: int, count: int, dtype: str, transform, crs, nodata, blocks,
                  descriptions=None):
    """Write ``blocks`` (an iterable of (row offset, (count, rows, width) array), or of (row offset,
    (k, rows, width) array, the k 1-based bands it fills)) into a new tiled,
    deflate-compressed GeoTIFF beside ``path``, then rename it into place: the file appears whole
    or not at all (OSError otherwise, the temporary removed)."""
    import tempfile

    import rasterio
    from rasterio.windows import Window

    from eocausal._atomic import _umask

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.tif", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=crs,
                       transform=transform, nodata=nodata, compress="deflate", tiled=True, blockxsize=256,
                       blockysize=256, BIGTIFF="IF_SAFER")
        with rasterio.open(tmp, "w", **profile) as ds:
            for row, data, *bands in blocks:
                ds.write(data, *bands, window=Window(0, row, width, data.shape[1]))
            for k, name in enumerate(descriptions or (), 1):
                if name is not None:
                    ds.set_band_description(k, str(name))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_FINGERPRINTS: dict = {}


def file_fingerprint(path: str) -> dict:
    """Path, size, mtime_ns and sha256 of the first and last MiB (cached per size and mtime).

    An inline VRT: the sha256 of its XML and the fingerprints of the files it reads. A URL or
    GDAL virtual path: the path alone (a remote file's content is not read for a fingerprint)."""
    if is_inline_vrt(path):
        return {"vrt_sha256": hashlib.sha256(path.encode()).hexdigest(),
                "sources": [file_fingerprint(p) for p in dict.fromkeys(vrt_sources(path))]}
    if is_remote(path):
        return {"path": path}
    try:
        st = os.stat(path)
    except OSError as exc:
        raise MissingFileError(f"paths: raster file {path} is no longer readable ({exc})") from exc
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            h.update(fh.read(_HEAD_TAIL))
            if st.st_size > _HEAD_TAIL:
                fh.seek(max(_HEAD_TAIL, st.st_size - _HEAD_TAIL))
                h.update(fh.read(_HEAD_TAIL))
        _FINGERPRINTS[key] = {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                              "sha256_head_tail": h.hexdigest()}
    return dict(_FINGERPRINTS[key])


# ----------------------------------------------------------------------------- units
def unit_geometries(units, arg: str = "units"):
    """A :class:`Units`, GeoDataFrame or GeoSeries -> GeoSeries with a CRS, indexed by unit id."""
    import geopandas as gpd

    from eocausal.data.units import Units

    if isinstance(units, Units):
        geoms = units.geometry
    elif isinstance(units, gpd.GeoDataFrame):
        try:
            geoms = units.geometry
        except AttributeError:
            raise InputError(f"{arg}: the GeoDataFrame has no active geometry column; "
                             "call gdf.set_geometry(...) first") from None
    elif isinstance(units, gpd.GeoSeries):
        geoms = units
    else:
        raise InputError(f"{arg}: expected Units, a GeoDataFrame or a GeoSeries, got {type(units).__name__}")
    if geoms.crs is None:
        raise CRSError(
            f"{arg}: the geometries have no CRS, so they cannot be placed on the raster. Set the "
            "CRS their coordinates are in with gdf.set_crs('EPSG:4326') (or the right code)"
        )
    if len(geoms) == 0:
        raise InputError(f"{arg}: no units given")
    bad = geoms.isna().to_numpy() | geoms.is_empty.to_numpy()
    if bad.any():
        raise InputError(f"{arg}: missing or empty geometries for units {listed(geoms.index[bad])}")
    return geoms


def select_keys(geoms, keys, arg: str = "keys"):
    """The geometries of the units whose ids are ``keys``, in the order of ``keys``."""
    if geoms.index.has_duplicates:
        dup = geoms.index[geoms.index.duplicated()].unique()
        raise InputError(f"units: duplicate unit ids {listed(dup)}; keys need unique ids")
    keys = np.asarray(keys, dtype=object) if not isinstance(keys, np.ndarray) else keys
    missing = ~pd.Index(keys).isin(geoms.index)
    if missing.any():
        raise InputError(f"{arg}: {listed(keys[missing])} are not ids of the units given")
    return geoms.loc[list(keys)] if keys.dtype == object else geoms.loc[keys]


def local_metric_epsg(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """EPSG code of the UTM zone of each lon/lat (UPS beyond 84N / 80S)."""
    zone = (np.floor((np.asarray(lon) + 180.0) / 6.0).astype(np.int64) % 60) + 1
    code = np.where(lat >= 0, 32600, 32700) + zone
    code = np.where(lat > 84, 32661, code)
    return np.where(lat < -80, 32761, code)


def chip_boxes(geoms, dst_crs, chip_size_m: float | None) -> np.ndarray:
    """Bounds (minx, miny, maxx, maxy) in ``dst_crs`` of each unit's chip square.

    Points: a square of ``chip_size_m`` metres centred on the point in the point's UTM zone.
    Other geometries: the square around their bounds in that zone (side = the larger extent,
    or ``chip_size_m``). The square's edges are densified and reprojected; the result is the
    bounding box in ``dst_crs``. Rows are NaN where the reprojection fails.
    """
    from pyproj import Transformer

    is_point = (geoms.geom_type == "Point").to_numpy()
    if is_point.any() and chip_size_m is None:
        raise InputError(
            f"chip_size_m: point units need a chip size in metres (units {listed(geoms.index[is_point])} "
            "are points); pass chip_size_m= to the source or to chips()"
        )
    g84 = geoms.to_crs(4326)
    b = g84.bounds.to_numpy()
    epsg = local_metric_epsg((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2)
    out = np.full((len(geoms), 4), np.nan)
    t = np.linspace(0.0, 1.0, _DENSIFY + 2)[:-1]
    ring_x = np.concatenate([t, np.ones_like(t), 1 - t, np.zeros_like(t)]) * 2 - 1
    ring_y = np.concatenate([np.zeros_like(t), t, np.ones_like(t), 1 - t]) * 2 - 1
    for code in np.unique(epsg):
        sel = epsg == code
        lb = geoms[sel].to_crs(int(code)).bounds.to_numpy()
        cx, cy = (lb[:, 0] + lb[:, 2]) / 2, (lb[:, 1] + lb[:, 3]) / 2
        if chip_size_m is not None:
            half = np.full(len(cx), chip_size_m / 2.0)
        else:
            half = np.maximum(lb[:, 2] - lb[:, 0], lb[:, 3] - lb[:, 1]) / 2
            flat = ~(half > 0)
            if flat.any():
                raise InputError(
                    f"chip_size_m: units {listed(geoms.index[sel][flat])} have no extent; pass chip_size_m="
                )
        xs = cx[:, None] + half[:, None] * ring_x[None, :]
        ys = cy[:, None] + half[:, None] * ring_y[None, :]
        tr = Transformer.from_crs(int(code), dst_crs, always_xy=True)
        X, Y = tr.transform(xs, ys)
        X = np.where(np.isfinite(X), X, np.nan)
        Y = np.where(np.isfinite(Y), Y, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
            out[sel] = np.column_stack([np.nanmin(X, 1), np.nanmin(Y, 1), np.nanmax(X, 1), np.nanmax(Y, 1)])
    return out


def morton_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Order of points along a Z-order (Morton) curve, so neighbours are read one after another."""
    def scale(v):
        v = np.nan_to_num(v, nan=0.0)
        lo, hi = v.min(), v.max()
        return np.zeros(len(v), np.uint64) if hi <= lo else ((v - lo) / (hi - lo) * 65535).astype(np.uint64)

    def spread(v):
        v = (v | (v << np.uint64(8))) & np.uint64(0x00FF00FF)
        v = (v | (v << np.uint64(4))) & np.uint64(0x0F0F0F0F)
        v = (v | (v << np.uint64(2))) & np.uint64(0x33333333)
        return (v | (v << np.uint64(1))) & np.uint64(0x55555555)

    return np.argsort(spread(scale(x)) | (spread(scale(-np.asarray(y))) << np.uint64(1)), kind="stable")


# ----------------------------------------------------------------------------- policy
POLICIES = ("drop", "fail", "keep")
VALID_RULES = ("all-bands", "any-band")
DEFAULT_MIN_VALID = 0.5  # a chip at least half real imagery; below it the encoder mostly sees fill


def check_policy(min_valid, on_invalid) -> float:
    if on_invalid not in POLICIES:
        raise InputError(f"on_invalid: expected one of {POLICIES}, got {on_invalid!r}")
    try:
        v = float(min_valid)
    except (TypeError, ValueError):
        raise InputError(f"min_valid: expected a fraction in [0, 1], got {min_valid!r}") from None
    if not 0.0 <= v <= 1.0:
        raise InputError(f"min_valid: expected a fraction in [0, 1], got {min_valid!r}")
    return v


def check_valid_rule(valid) -> str:
    if valid not in VALID_RULES:
        raise InputError(
            f"valid: expected one of {VALID_RULES} (a chip pixel is valid when all its bands hold "
            f"data, or when any band does), got {valid!r}"
        )
    return valid


def pixel_validity(chip: np.ndarray, valid: str) -> np.ndarray:
    """(px, px) mask of valid chip pixels from a (C, px, px) chip whose invalid bands are NaN."""
    nan = np.isnan(chip)
    return ~nan.any(0) if valid == "all-bands" else ~nan.all(0)


def apply_policy(ids: np.ndarray, valid: np.ndarray, min_valid: float, on_invalid: str,
                 stacklevel: int = 3) -> tuple[np.ndarray, dict]:
    """Units with no valid pixel or a valid fraction below ``min_valid`` are invalid.

    Returns the boolean mask of units kept and the report dict. ``"fail"`` raises InputError,
    ``"drop"`` drops them with a DataQualityWarning, ``"keep"`` keeps them (chips zero-filled).
    """
    bad = (valid <= 0) | (valid < min_valid)
    reason = (f"valid-pixel fraction below min_valid={min_valid:g}, or no valid pixel at all "
              "(outside every raster, or nodata)")
    report = {"n_requested": int(len(ids)), "n_invalid": int(bad.sum()),
              "invalid_ids": ids[bad].tolist(), "invalid_valid_fraction": valid[bad].round(4).tolist(),
              "policy": on_invalid, "min_valid": min_valid, "reason": reason}
    drop = bad if on_invalid == "drop" else np.zeros(len(ids), bool)
    report.update(n_dropped=int(drop.sum()), dropped_ids=ids[drop].tolist(), n_kept=int((~drop).sum()))
    if bad.any() and on_invalid == "fail":
        detail = ", ".join(f"{i!r} ({v:.3f})" for i, v in zip(ids[bad][:_MAX_LISTED], valid[bad]))
        raise InputError(
            f"units: {int(bad.sum())} of {len(ids)} units have too few valid pixels ({reason}): "
            f"{detail}{' ...' if bad.sum() > _MAX_LISTED else ''}. Check that the units fall on the "
            "rasters, lower min_valid=, or pass on_invalid='drop' (or 'keep')"
        )
    if drop.any():
        warnings.warn(
            f"{int(drop.sum())} of {len(ids)} units dropped under on_invalid='drop' ({reason}): "
            f"{listed(ids[drop])}. Their ids are in the source's last_report_['dropped_ids']; pass "
            "on_invalid='keep' to keep them zero-filled, 'fail' to stop, a lower min_valid=, or "
            "valid='any-band' to count a pixel valid when any band holds data",
            DataQualityWarning, stacklevel=stacklevel,
        )
    return ~drop, report


# ----------------------------------------------------------------------------- dates
def as_dates(values, arg: str = "dates") -> np.ndarray:
    """Dates (date, datetime, str, datetime64) -> 1-D numpy datetime64[D]."""
    if isinstance(values, (str, bytes)) or np.ndim(values) == 0:
        values = [values]
    try:
        out = np.array([np.datetime64(pd.Timestamp(v).date(), "D") for v in values], dtype="datetime64[D]")
    except (TypeError, ValueError) as exc:
        raise InputError(f"{arg}: cannot read {list(values)[:5]} as dates ({exc}); use 'YYYY-MM-DD'") from None
    if np.isnat(out).any():
        raise InputError(f"{arg}: missing dates in {list(values)[:5]}")
    return out


def treatment_days(values, n: int) -> np.ndarray:
    """Units' treatment dates -> datetime64[D], NaT for units never treated (None, NaN, "")."""
    td = np.asarray(values, dtype=object)
    if td.shape != (n,):
        raise InputError(f"treatment_dates: expected one per unit ({n}), got shape {td.shape}")
    has = pd.notna(pd.Series(td)).to_numpy() & (pd.Series(td).astype(str).str.strip() != "").to_numpy()
    out = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    if has.any():
        out[has] = as_dates(td[has], "treatment_dates")
    return out


def check_dates(dates: np.ndarray | None, treatment_date, stacklevel: int = 3) -> np.ndarray:
    """Warn (ImageDateWarning) about images dated after ``treatment_date``; return that mask."""
    if dates is None or len(dates) == 0:
        raise InputError("dates: the source has no acquisition dates; pass dates= to check them")
    t = as_dates(treatment_date, "treatment_date")[0]
    after = dates > t
    if after.any():
        shown = ", ".join(str(d) for d in dates[after][:_MAX_LISTED])
        warnings.warn(
            f"{int(after.sum())} of {len(dates)} image dates postdate the treatment date {t}: "
            f"{shown}. Embeddings of these images may be post-treatment variables (affected by the "
            "treatment), which biases adjustment for them; use imagery dated on or before the "
            "treatment for confounders (frames on the treatment date itself are not flagged)",
            ImageDateWarning, stacklevel=stacklevel,
        )
    return after
