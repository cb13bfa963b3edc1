"""Carry predicted effects outside the trial: support diagnostic, GeoDataFrame and GeoTIFF outputs.

Predicting a CATE for a place outside the trial is an extrapolation unless the place's
embedding looks like the trial's. :func:`support_diagnostic` flags such places;
:func:`effects_to_geodataframe` and :func:`write_effect_raster` put the predictions and flags on
a map. This module takes arrays (it never imports an estimator): the caller composes it with
:meth:`eocausal.estimators.cate.CateResult.predict`::

    tau_new = result.predict(X_new, embeddings=Z_new)
    support = support_diagnostic(Z_trial, Z_new)
    gdf = effects_to_geodataframe(units_new, tau_new, support)
    # or, for a grid of H x W pixels with one embedding each:
    write_effect_raster("effects.tif", tau_new.reshape(H, W), transform, crs,
                        outside=support.outside.reshape(H, W))
    # or, for a grid larger than memory, a block of rows at a time:
    write_effect_raster_blocks("effects.tif", predict_rows, (H, W), transform, crs)

Support methods:

- ``"mahalanobis_pca"`` (default): PCA of the trial embeddings (centred), keeping the
  components that explain ``variance`` of the variance (or ``n_components``). Distance
  D(z) = sqrt(sum_j t_j^2 / lambda_j) on the component scores t, and the residual norm
  R(z) = ||z - mean - t V'|| off the kept components. The thresholds are quantiles of the
  *out-of-sample* D and R of the trial units (5-fold: each unit's distances from a PCA fitted
  without it), at 1 - (1 - quantile)/2 each (Bonferroni), so a new place drawn like the trial
  units is flagged with probability about 1 - quantile. Outside = D above its threshold or R
  above its threshold (only D when the kept components span the embeddings).
- ``"range"``: outside when any dimension lies outside the trial's [min, max]; the distance is
  the largest exceedance in units of that dimension's trial SD (0 inside). ``quantile`` is not
  used. Simple, but with many dimensions it flags only gross departures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eocausal.data._raster_common import write_geotiff
from eocausal.errors import CRSError, InputError, OutputError

#: Rules :func:`support_diagnostic` can flag places by (``method=``).
SUPPORT_METHODS = ("mahalanobis_pca", "range")


@dataclass(frozen=True)
class SupportResult:
    """Which new places lie outside the trial's embedding support.

    Attributes
    ----------
    outside : numpy.ndarray of bool (m,)
        True where the place is outside the support.
    distance : numpy.ndarray (m,)
        Mahalanobis distance on the kept components ('mahalanobis_pca') or the largest
        exceedance in SD units ('range').
    threshold : float
        Flagging threshold of ``distance``.
    residual : numpy.ndarray or None
        Distance off the kept components ('mahalanobis_pca').
    residual_threshold : float or None
    method : str
    n_components : int or None
    quantile : float
    """

    outside: np.ndarray
    distance: np.ndarray
    threshold: float
    residual: np.ndarray | None
    residual_threshold: float | None
    method: str
    n_components: int | None
    quantile: float

    @property
    def share_outside(self) -> float:
        """Fraction of the new places flagged."""
        return float(np.mean(self.outside)) if len(self.outside) else 0.0


def _matrix(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2-d array (units, dimensions), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: {int((~np.isfinite(a)).sum())} non-finite values; fill or drop those rows first")
    return a


class _PCA:
    def __init__(self, Z: np.ndarray, n_components: int | None, variance: float):
        self.mean = Z.mean(axis=0)
        _, s, vt = np.linalg.svd(Z - self.mean, full_matrices=False)
        lam = s**2 / max(len(Z) - 1, 1)
        keep = lam > lam[0] * 1e-10 if len(lam) and lam[0] > 0 else np.zeros(len(lam), bool)
        lam, vt = lam[keep], vt[keep]
        if len(lam) == 0:
            raise InputError("train_embeddings: the trial embeddings are constant; there is no support to measure")
        if n_components is None:
            share = np.cumsum(lam) / lam.sum()
            k = int(np.searchsorted(share, variance - 1e-12) + 1)
        else:
            k = int(n_components)
        self.k = max(1, min(k, len(lam)))
        self.lam, self.vt = lam[: self.k], vt[: self.k]

    def distances(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = Z - self.mean
        t = c @ self.vt.T
        d = np.sqrt(np.sum(t**2 / self.lam, axis=1))
        r = np.sqrt(np.maximum(np.sum(c**2, axis=1) - np.sum(t**2, axis=1), 0.0))
        return d, r


def support_diagnostic(train_embeddings, new_embeddings, *, method: str = "mahalanobis_pca",
                       quantile: float = 0.99, n_components: int | None = None, variance: float = 0.95,
                       seed: int | None = 0) -> SupportResult:
    """Flag new places whose embeddings lie outside the range of the trial's.

    Parameters
    ----------
    train_embeddings : array (n, d)
        Embeddings (or any features) of the trial units.
    new_embeddings : array (m, d)
        Embeddings of the places to predict for.
    method : {'mahalanobis_pca', 'range'}
        See the module docstring.
    quantile : float
        'mahalanobis_pca': about this share of places drawn like the trial units are kept
        inside (thresholds from the trial's out-of-sample distances).
    n_components : int, optional
        PCA components kept; default: enough to explain ``variance``.
    variance : float
        Share of variance the kept components explain when ``n_components`` is None.
    seed : int or None
        Seeds the 5-fold split behind the thresholds.

    Returns
    -------
    SupportResult
    """
    Z = _matrix(train_embeddings, "train_embeddings")
    N = _matrix(new_embeddings, "new_embeddings")
    if Z.shape[1] != N.shape[1]:
        raise InputError(f"new_embeddings: {N.shape[1]} dimensions, the trial embeddings have {Z.shape[1]}; "
                         "encode both with the same encoder")
    if method not in SUPPORT_METHODS:
        raise InputError(f"method={method!r}: use one of {', '.join(SUPPORT_METHODS)}")
    if not 0 < quantile < 1:
        raise InputError(f"quantile={quantile}: must lie in (0, 1)")
    if method == "range":
        lo, hi = Z.min(axis=0), Z.max(axis=0)
        sd = Z.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        exceed = np.maximum(np.maximum(N - hi, lo - N), 0.0) / sd
        dist = exceed.max(axis=1) if N.shape[1] else np.zeros(len(N))
        return SupportResult(outside=dist > 0, distance=dist, threshold=0.0, residual=None,
                             residual_threshold=None, method=method, n_components=None, quantile=quantile)
    if len(Z) < 10:
        raise InputError(f"train_embeddings: {len(Z)} trial units; the PCA support needs at least 10")
    if not 0 < variance <= 1:
        raise InputError(f"variance={variance}: must lie in (0, 1]")
    pca = _PCA(Z, n_components, variance)
    # out-of-sample distances of the trial units (5 folds) set the thresholds
    folds = np.random.default_rng(seed).permutation(len(Z)) % 5
    d_oos = np.empty(len(Z))
    r_oos = np.empty(len(Z))
    for f in range(5):
        test = folds == f
        p = _PCA(Z[~test], pca.k, variance)
        d_oos[test], r_oos[test] = p.distances(Z[test])
    d, r = pca.distances(N)
    full_rank = pca.k >= min(Z.shape[1], len(Z) - 1)
    if full_rank:
        thr_d = float(np.quantile(d_oos, quantile))
        thr_r, outside = None, d > thr_d
    else:  # two criteria, each at 1 - (1 - quantile)/2 (Bonferroni), so about 1 - quantile overall
        q2 = 1 - (1 - quantile) / 2
        thr_d, thr_r = float(np.quantile(d_oos, q2)), float(np.quantile(r_oos, q2))
        outside = (d > thr_d) | (r > thr_r)
    return SupportResult(outside=outside, distance=d, threshold=thr_d, residual=None if full_rank else r,
                         residual_threshold=thr_r, method=method, n_components=pca.k, quantile=quantile)


# ----------------------------------------------------------------------------- outputs


def effects_to_geodataframe(units_or_points, values, flags=None, *, column: str = "cate"):
    """Predicted effects (and support flags) as a GeoDataFrame with the units' geometry.

    Parameters
    ----------
    units_or_points : GeoDataFrame, GeoSeries or :class:`eocausal.data.units.Units`
        The places (points or polygons), with a CRS.
    values : array (n,)
        Predicted effects, one per place in the same order.
    flags : array of bool (n,) or SupportResult, optional
        Outside-support flags; a :class:`SupportResult` also adds ``support_distance``.
    column : str
        Name of the effect column.

    Returns
    -------
    geopandas.GeoDataFrame
        A copy of the units with ``column``, and ``outside_support`` (and ``support_distance``)
        when flags are given.
    """
    import geopandas as gpd

    obj = getattr(units_or_points, "frame", units_or_points)  # Units -> its frame
    if isinstance(obj, gpd.GeoSeries):
        gdf = gpd.GeoDataFrame(geometry=obj.reset_index(drop=True))
    elif isinstance(obj, gpd.GeoDataFrame):
        gdf = obj.copy()
    else:
        raise InputError(f"units_or_points: expected a GeoDataFrame, GeoSeries or Units, got {type(obj).__name__}; "
                         "build one with geopandas.points_from_xy and set its CRS")
    if gdf.crs is None:
        raise CRSError("units_or_points: no CRS; set it with .set_crs(...) before mapping effects")
    v = np.asarray(values, dtype=float).reshape(-1)
    if len(v) != len(gdf):
        raise InputError(f"values: {len(v)} effects for {len(gdf)} places; pass one per place")
    gdf[column] = v
    if flags is not None:
        if isinstance(flags, SupportResult):
            out, dist = flags.outside, flags.distance
        else:
            out, dist = np.asarray(flags), None
        if out.shape != (len(gdf),):
            raise InputError(f"flags: {out.shape[0] if out.ndim else 0} flags for {len(gdf)} places")
        gdf["outside_support"] = out.astype(bool)
        if dist is not None:
            gdf["support_distance"] = dist
    return gdf


def _grid(transform, crs):
    """(affine transform, rasterio CRS) of an effect grid, validated."""
    from affine import Affine
    from rasterio.crs import CRS

    if crs is None:
        raise CRSError("crs: a GeoTIFF of effects needs a CRS; pass the grid's CRS (e.g. 'EPSG:32612')")
    try:
        crs = CRS.from_user_input(crs)
    except Exception as exc:  # rasterio raises its own CRSError subclasses
        raise CRSError(f"crs={crs!r}: not a valid CRS ({exc})") from exc
    if not isinstance(transform, Affine):
        t = tuple(transform)
        if len(t) not in (6, 9):
            raise InputError(f"transform: expected an affine.Affine or 6 numbers, got {len(t)}")
        transform = Affine(*t[:6])
    return transform, crs


def _bands(values, outside, nodata: float, width: int | None = None) -> np.ndarray:
    """The float32 bands (cate, and outside_support when given) of a block of rows."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or (width is not None and v.shape[1] != width):
        want = "a 2-d grid (H, W)" if width is None else f"a block of shape (rows, {width})"
        raise InputError(f"values: expected {want}, got shape {v.shape}; reshape the predictions")
    bands = [v]
    if outside is not None:
        o = np.asarray(outside)
        if o.shape != v.shape:
            raise InputError(f"outside: shape {o.shape} differs from values {v.shape}")
        ob = o.astype(float)
        ob[~np.isfinite(v)] = nodata
        bands.append(ob)
    data = np.stack(bands).astype(np.float32)
    data[:, ~np.isfinite(v)] = nodata
    return data


def _write_atomically(path, height: int, width: int, count: int, transform, crs, nodata: float, blocks) -> Path:
    """Write ``blocks`` (an iterable of (row offset, bands)) into a new GeoTIFF, then rename it into place."""
    names = ("cate", "outside_support")[:count]
    try:
        return write_geotiff(path, width=width, height=height, count=count, dtype="float32", transform=transform,
                             crs=crs, nodata=nodata, blocks=blocks, descriptions=names)
    except OSError as exc:
        raise OutputError(f"path={str(path)!r}: cannot write the effect raster ({exc})") from exc


def write_effect_raster(path, values, transform, crs, *, outside=None, nodata: float = np.nan) -> Path:
    """Write predicted effects on a grid as a GeoTIFF, atomically (temporary file, then rename).

    Parameters
    ----------
    path : path
        Destination ``.tif``; its folder is created. An existing file is replaced only once the
        new one is complete.
    values : array (H, W)
        Predicted effects per pixel (NaN = no prediction).
    transform : affine.Affine or sequence of 6 numbers
        Pixel-to-CRS transform (rasterio/affine order a, b, c, d, e, f).
    crs : str, int or rasterio CRS
        Coordinate reference system of the grid.
    outside : array of bool (H, W), optional
        Outside-support flags, written as a second band (1 = outside, 0 = inside, nodata where
        ``values`` is NaN).
    nodata : float
        Nodata value (NaN by default).

    Returns
    -------
    pathlib.Path
        The written file. Band 1 is described ``cate``, band 2 ``outside_support``.

    See Also
    --------
    write_effect_raster_blocks : the same file, computed and written a block of rows at a time.
    """
    data = _bands(values, outside, nodata)
    transform, crs = _grid(transform, crs)
    return _write_atomically(path, data.shape[1], data.shape[2], len(data), transform, crs, nodata, [(0, data)])


def write_effect_raster_blocks(path, predict, shape, transform, crs, *, block_rows: int = 256,
                               nodata: float = np.nan) -> Path:
    """Write an effect map larger than memory: predict and write one block of rows at a time.

    The transport step of a trial maps effects over whole regions (every 10 m pixel of a
    district is tens of millions of predictions, each from a 64- to 1,024-dimensional embedding).
    Here only one block of ``block_rows`` x W pixels (its features, predictions and flags) is in
    memory at a time; the file is tiled, compressed, BigTIFF when needed, and written atomically
    like :func:`write_effect_raster` (a failure leaves any earlier file untouched).

    Parameters
    ----------
    path : path
        Destination ``.tif``.
    predict : callable
        ``predict(rows)`` with ``rows`` a ``slice`` of grid rows returns the effects of those rows,
        an array (len(rows), W), or a pair (effects, outside flags) of that shape. Typically it
        reads the rows' embeddings from a raster window and calls
        :meth:`~eocausal.estimators.cate.CateResult.predict` (docs/heterogeneity.md).
    shape : (H, W)
        Grid size in pixels.
    transform, crs, nodata
        As in :func:`write_effect_raster`.
    block_rows : int
        Rows per block.

    Returns
    -------
    pathlib.Path
        The written file: band 1 ``cate``, band 2 ``outside_support`` when ``predict`` returns flags.
    """
    if not callable(predict):
        raise InputError("predict: expected a function of a slice of grid rows; for an array in memory use "
                         "write_effect_raster")
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape: expected (H, W), got {shape!r}") from None
    if height < 1 or width < 1:
        raise InputError(f"shape: expected a positive (H, W), got {shape!r}")
    if int(block_rows) < 1:
        raise InputError(f"block_rows={block_rows}: must be at least 1")
    transform, crs = _grid(transform, crs)

    def block(start):
        rows = slice(start, min(start + int(block_rows), height))
        out = predict(rows)
        values, outside = out if isinstance(out, tuple) else (out, None)
        data = _bands(values, outside, nodata, width)
        if data.shape[1] != rows.stop - rows.start:
            raise InputError(f"predict: rows {rows.start}:{rows.stop} gave {data.shape[1]} rows of effects")
        return data

    first = block(0)
    count = len(first)

    def blocks():
        yield 0, first
        for start in range(int(block_rows), height, int(block_rows)):
            data = block(start)
            if len(data) != count:
                raise InputError("predict: returned outside flags for some blocks and not others")
            yield start, data

    return _write_atomically(path, height, width, count, transform, crs, nodata, blocks())
