"""Chip-level embedding tables in GeoParquet, joined to the study's units.

Earth Index, Major TOM and similar projects publish one row per image chip: an id, the chip's
footprint (or centre) as geometry, an embedding stored as an array column, and metadata naming
the model, its version and the imagery's year (as table metadata or as columns). A unit takes
the embedding of the chip that contains it (``how='contains'``) or of the nearest chip within
``max_distance_m`` (``how='nearest'``); the distance of every join is kept
(``attrs['join_distance_m']``) and summarised in the provenance, so a reader can see how far the
confounders were taken from.

Coordinates in the other axis order (latitude first in a longitude/latitude CRS) are a common
fault of published tables; a join on them silently matches nothing or the wrong chips. The reader
refuses such a table with the fix: latitudes beyond +/-90, or units that fall on chips only when
the table's coordinates are swapped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eocausal.data._raster_common import listed, unit_geometries
from eocausal.errors import DataFileError, InputError

__all__ = ["JOINS", "ChipTable", "read_chip_table"]

#: How units are matched to chips.
JOINS = ("contains", "nearest")
_META_KEYS = ("model", "version", "year", "licence", "license", "attribution", "source")


class ChipTable:
    """Chip embeddings (one row per chip) with their geometry and metadata.

    Attributes
    ----------
    chips : geopandas.GeoDataFrame
        ``id``, geometry, and the embedding columns ``columns``.
    columns : list of str
    metadata : dict
        Model, version, year, licence/attribution (from the file's metadata or constant columns).
    """

    def __init__(self, chips, columns: list[str], metadata: dict, path: str | None = None):
        self.chips, self.columns, self.metadata, self.path = chips, list(columns), dict(metadata), path

    def __repr__(self) -> str:
        return f"ChipTable({len(self.chips)} chips, {len(self.columns)} dims, {self.metadata.get('model', '?')})"

    def join(self, units, *, how: str = "contains", max_distance_m: float | None = None) -> pd.DataFrame:
        """One row of chip embeddings per unit, indexed by unit id.

        ``how='contains'``: the chip whose footprint contains the unit's point (its centroid for
        a polygon); ``'nearest'``: the nearest chip (footprint or centre) within
        ``max_distance_m`` metres (required), measured in the units' local UTM zone. Units without
        a chip get NaN rows. ``attrs['join_distance_m']`` (unit id -> metres, 0 inside a chip) and
        ``attrs['provenance']`` (the table's metadata and the join rule with the largest and
        median distance) travel with the frame.
        """
        import geopandas as gpd

        if how not in JOINS:
            raise InputError(f"how={how!r}: use one of {list(JOINS)}")
        if how == "nearest" and (max_distance_m is None or not max_distance_m > 0):
            raise InputError("max_distance_m: how='nearest' needs the largest distance in metres a unit may be "
                             "from its chip (e.g. max_distance_m=500)")
        geoms = unit_geometries(units)
        pts = geoms.to_crs(self.chips.crs)
        pts = pts.centroid if (pts.geom_type != "Point").any() else pts
        self._check_axis_order(pts)
        left = gpd.GeoDataFrame({"_unit": np.arange(len(pts))}, geometry=pts.to_numpy(), crs=self.chips.crs)
        right = self.chips[["geometry"]].assign(_chip=np.arange(len(self.chips)))
        chip = np.full(len(pts), -1)
        dist = np.full(len(pts), np.nan)
        inside = gpd.sjoin(left, right, how="inner", predicate="within")
        inside = inside.sort_values(["_unit", "_chip"]).drop_duplicates("_unit")
        chip[inside["_unit"].to_numpy()] = inside["_chip"].to_numpy()
        dist[inside["_unit"].to_numpy()] = 0.0
        if how == "nearest":
            todo = np.flatnonzero(chip < 0)
            if len(todo):
                metric = left.iloc[todo].estimate_utm_crs()
                near = gpd.sjoin_nearest(left.iloc[todo].to_crs(metric), right.to_crs(metric), how="inner",
                                         max_distance=float(max_distance_m), distance_col="_d")
                near = near.sort_values(["_unit", "_d", "_chip"]).drop_duplicates("_unit")
                chip[near["_unit"].to_numpy()] = near["_chip"].to_numpy()
                dist[near["_unit"].to_numpy()] = near["_d"].to_numpy()
        values = np.full((len(pts), len(self.columns)), np.nan)
        ok = chip >= 0
        values[ok] = self.chips[self.columns].to_numpy(dtype=float)[chip[ok]]
        frame = pd.DataFrame(values, index=geoms.index.copy(), columns=self.columns)
        frame.attrs["join_distance_m"] = dict(zip(geoms.index.tolist(), dist.tolist()))
        frame.attrs["chip_id"] = dict(zip(geoms.index[ok].tolist(), self.chips["id"].to_numpy()[chip[ok]].tolist()))
        found = dist[np.isfinite(dist)]
        frame.attrs["provenance"] = {
            "product": {**self.metadata, "kind": "chip-table", "path": self.path},
            "join": {"how": how, "max_distance_m": max_distance_m, "units_joined": int(ok.sum()),
                     "units_without_chip": int((~ok).sum()),
                     "largest_distance_m": float(found.max()) if len(found) else None,
                     "median_distance_m": float(np.median(found)) if len(found) else None},
        }
        if (~ok).any():
            import warnings

            from eocausal.errors import DataQualityWarning

            warnings.warn(f"{int((~ok).sum())} of {len(ok)} units have no chip ({how}"
                          f"{'' if how == 'contains' else f' within {max_distance_m} m'}): "
                          f"{listed(geoms.index[~ok])}. Their rows are NaN", DataQualityWarning, stacklevel=2)
        return frame

    def _check_axis_order(self, pts) -> None:
        """Refuse chip coordinates in (lat, lon) order in a geographic CRS."""
        if not self.chips.crs.is_geographic:
            return
        b = self.chips.total_bounds  # minx, miny, maxx, maxy
        if b[1] < -90 or b[3] > 90:
            raise DataFileError(
                f"chip table: latitudes beyond +/-90 ({b[1]:.3f} to {b[3]:.3f}), so its coordinates are in "
                "(latitude, longitude) order; swap them when writing the table (x = longitude, y = latitude), "
                "e.g. gdf.geometry = shapely.transform(gdf.geometry.to_numpy(), lambda c: c[:, ::-1])")
        import shapely

        xy = shapely.get_coordinates(pts.to_numpy())
        box = shapely.box(*b)
        straight = shapely.contains_xy(box, xy[:, 0], xy[:, 1]).mean()
        swapped = shapely.contains_xy(box, xy[:, 1], xy[:, 0]).mean()
        if straight == 0 and swapped > 0.5:
            raise DataFileError(
                "chip table: no unit lies within the chips, but most would if the table's coordinates were "
                "swapped: its geometries are in (latitude, longitude) order. Swap them when writing the table "
                "(x = longitude, y = latitude)")


def read_chip_table(path, *, embedding: str | None = None, id: str = "id", metadata: dict | None = None) -> ChipTable:
    """Read a GeoParquet chip table: an ``id`` column, a geometry, an embedding array column.

    ``embedding``: the array column (one list or array of floats per row; default: the only such
    column), or None when the table stores one column per dimension (all numeric columns but the
    id and metadata columns). ``metadata``: values for model, version, year, licence that the
    file lacks (the file's own key-value metadata and constant columns are read first).
    Needs pyarrow (``pip install eocausal[products]``).
    """
    from eocausal.errors import require

    require("pyarrow", "products", "GeoParquet chip tables")
    import geopandas as gpd
    import pyarrow.parquet as pq

    try:
        gdf = gpd.read_parquet(path)
        kv = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:
        raise DataFileError(f"path: {path} cannot be read as GeoParquet ({exc}); check the file") from exc
    if gdf.crs is None:
        raise DataFileError(f"path: {path} has no CRS in its GeoParquet metadata; write it with the CRS set")
    if id not in gdf.columns:
        raise InputError(f"id={id!r}: no such column in {path}; columns: {list(gdf.columns)}")
    meta = {}
    for k, v in kv.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        if key.lower() in _META_KEYS:
            meta[key.lower()] = v.decode() if isinstance(v, bytes) else v
    for key in _META_KEYS:
        if key in gdf.columns and gdf[key].nunique(dropna=True) == 1:
            meta.setdefault(key, gdf[key].dropna().iloc[0].item() if hasattr(gdf[key].dropna().iloc[0], "item")
                            else gdf[key].dropna().iloc[0])
    meta.update(metadata or {})
    if "license" in meta:
        meta.setdefault("licence", meta.pop("license"))
    arrays = [c for c in gdf.columns if c not in (id, gdf.geometry.name)
              and gdf[c].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).all()]
    if embedding is None and len(arrays) == 1:
        embedding = arrays[0]
    if embedding is not None:
        if embedding not in gdf.columns:
            raise InputError(f"embedding={embedding!r}: no such column; array columns: {arrays}")
        vals = np.stack(gdf[embedding].map(lambda v: np.asarray(v, dtype=float)).to_numpy())
        if vals.ndim != 2:
            raise DataFileError(f"{path}: the embedding column {embedding!r} holds arrays of different lengths")
        width = max(2, len(str(vals.shape[1] - 1)))
        columns = [f"e{i:0{width}d}" for i in range(vals.shape[1])]
        chips = gpd.GeoDataFrame(pd.DataFrame(vals, columns=columns).assign(id=gdf[id].to_numpy()),
                                 geometry=gdf.geometry.to_numpy(), crs=gdf.crs)
    else:
        skip = {id, gdf.geometry.name, *(_META_KEYS)}
        columns = [c for c in gdf.columns if c not in skip and pd.api.types.is_numeric_dtype(gdf[c])]
        if not columns:
            raise InputError(f"{path}: no embedding found; name the array column with embedding=")
        chips = gdf[[id, *columns]].set_geometry(gdf.geometry)
        if id != "id":
            chips = chips.rename(columns={id: "id"})
    if chips["id"].duplicated().any():
        raise DataFileError(f"{path}: duplicate chip ids {listed(chips['id'][chips['id'].duplicated()])}")
    return ChipTable(chips, columns, meta, str(path))
