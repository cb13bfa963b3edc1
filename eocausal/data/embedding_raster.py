"""Precomputed embeddings stored as a raster (one band per embedding dimension).

Some products ship embeddings as multi-band GeoTIFFs (a vector per pixel). For those there is
nothing to encode: :meth:`EmbeddingRaster.sample` reads one row per unit, ready to join to the
units as confounder columns.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from eocausal.data._raster_common import (chip_boxes, file_fingerprint, listed, read_meta,
                                          resolve_paths, unit_geometries)
from eocausal.data.raster import check_chip_size
from eocausal.errors import DataFileError, DataQualityWarning, InputError

HOWS = ("point", "mean")


class EmbeddingRaster:
    """A raster whose bands are embedding dimensions.

    Parameters
    ----------
    path : path
        One raster file with a CRS.
    how : {"point", "mean"}
        ``"point"``: the pixel under each point (under the centroid of a polygon, computed in
        the raster CRS). ``"mean"``: the mean over the valid pixels whose centres fall in the
        polygon, or, for points, in the ``chip_size_m`` square around the point (its bounding box
        in the raster CRS, as for chips); a polygon covering no pixel centre uses every pixel
        it touches.
    chip_size_m : float, optional
        Side of the square, in metres, for ``how="mean"`` on point units.

    Attributes
    ----------
    columns : list of str
        Column names: the band descriptions when every band has a unique one, else
        ``e00, e01, ...``.
    """

    def __init__(self, path, *, how: str = "point", chip_size_m=None):
        paths = resolve_paths(path, "path")
        if len(paths) != 1:
            raise InputError(f"path: expected one embedding raster, got {len(paths)} files")
        if how not in HOWS:
            raise InputError(f"how: expected one of {HOWS}, got {how!r}")
        self.path, self.how = paths[0], how
        self.chip_size_m, _ = check_chip_size(chip_size_m, None)
        self.file = read_meta(self.path)
        self.crs = self.file.crs
        desc = list(self.file.descriptions)
        if all(desc) and len(set(desc)) == len(desc):
            self.columns = desc
        else:
            width = max(2, len(str(self.file.count - 1)))
            self.columns = [f"e{i:0{width}d}" for i in range(self.file.count)]

    def __repr__(self) -> str:
        return f"EmbeddingRaster({self.path}, {self.file.count} dims, how={self.how!r})"

    def fingerprint(self) -> dict:
        """JSON-able identity of the file and the sampling rule."""
        return {"kind": "embedding-raster", "file": file_fingerprint(self.path), "how": self.how,
                "chip_size_m": self.chip_size_m}

    def sample(self, units) -> pd.DataFrame:
        """One row of embedding values per unit, indexed by unit id.

        Units off the raster or on nodata get a NaN row, with a DataQualityWarning giving
        their number: drop or impute them before estimating.
        """
        import rasterio
        from rasterio.errors import RasterioError

        geoms = unit_geometries(units)
        out = np.full((len(geoms), self.file.count), np.nan)
        try:
            with rasterio.open(self.path) as ds:
                if self.how == "point":
                    self._points(ds, geoms, out)
                else:
                    self._means(ds, geoms, out)
        except RasterioError as exc:
            raise DataFileError(f"path: reading {self.path} failed ({exc}); check the file") from exc
        frame = pd.DataFrame(out, index=geoms.index.copy(), columns=list(self.columns))
        missing = np.isnan(out).all(axis=1)
        if missing.any():
            warnings.warn(
                f"{int(missing.sum())} of {len(out)} units have no valid embedding pixel (off the "
                f"raster, or nodata): {listed(geoms.index[missing])}. Their rows are NaN; drop "
                "them, impute them, or use how='mean' with a larger chip_size_m",
                DataQualityWarning, stacklevel=2,
            )
        return frame

    def _points(self, ds, geoms, out: np.ndarray) -> None:
        import shapely
        from rasterio.windows import Window

        pts = shapely.centroid(geoms.to_crs(self.crs).to_numpy())
        x, y = shapely.get_x(pts), shapely.get_y(pts)
        t = self.file.transform
        col, row = np.floor((x - t.c) / t.a), np.floor((y - t.f) / t.e)
        inside = (col >= 0) & (col < self.file.width) & (row >= 0) & (row < self.file.height)
        for u in np.flatnonzero(inside)[np.lexsort((col[inside], row[inside]))]:
            v = ds.read(window=Window(int(col[u]), int(row[u]), 1, 1), masked=True)[:, 0, 0]
            if not np.ma.getmaskarray(v).any():
                out[u] = v.astype(float)

    def _means(self, ds, geoms, out: np.ndarray) -> None:
        from affine import Affine
        from rasterio.features import geometry_mask
        from rasterio.windows import Window
        from shapely.geometry import box

        is_point = (geoms.geom_type == "Point").to_numpy()
        regions = np.empty(len(geoms), dtype=object)
        if is_point.any():
            if self.chip_size_m is None:
                raise InputError("chip_size_m: how='mean' on point units needs the square's side in metres; "
                                 "pass chip_size_m= (or use how='point')")
            boxes = chip_boxes(geoms[is_point], self.crs, self.chip_size_m)
            regions[is_point] = [box(*b) if np.isfinite(b).all() else None for b in boxes]
        if (~is_point).any():
            regions[~is_point] = geoms[~is_point].to_crs(self.crs).to_numpy()
        t = self.file.transform
        for u, geom in enumerate(regions):
            if geom is None:
                continue
            minx, miny, maxx, maxy = geom.bounds
            c0, r0 = max(0, int(np.floor((minx - t.c) / t.a))), max(0, int(np.floor((maxy - t.f) / t.e)))
            c1 = min(self.file.width, int(np.ceil((maxx - t.c) / t.a)))
            r1 = min(self.file.height, int(np.ceil((miny - t.f) / t.e)))
            if c1 <= c0 or r1 <= r0:
                continue
            win = Window(c0, r0, c1 - c0, r1 - r0)
            data = ds.read(window=win, masked=True)
            tr = Affine(t.a, 0.0, t.c + c0 * t.a, 0.0, t.e, t.f + r0 * t.e)
            inside = geometry_mask([geom], data.shape[1:], tr, invert=True)
            if not inside.any():
                inside = geometry_mask([geom], data.shape[1:], tr, invert=True, all_touched=True)
            values = np.asarray(data, dtype=float)
            ok = inside & ~np.ma.getmaskarray(data).any(axis=0) & ~np.isnan(values).any(axis=0)
            if ok.any():
                out[u] = values[:, ok].mean(axis=1)
