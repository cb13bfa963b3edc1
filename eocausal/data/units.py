"""Study units: one validated table of ids, places, treatment, outcome and covariates.

Validation happens once, in :meth:`Units.from_frame`, before any imagery is read or any model
fitted. Every error names the column and the offending rows, and says what to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from eocausal.errors import ColumnError, CRSError, InputError

_MAX_LISTED = 8


def _rows(index: pd.Index | Sequence, limit: int = _MAX_LISTED) -> str:
    items = list(index)
    shown = ", ".join(repr(i) for i in items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"[{shown}{more}]"


def _require_column(frame: pd.DataFrame, col: str, role: str) -> None:
    if col not in frame.columns:
        raise ColumnError(
            f"{role}={col!r}: no such column; the table has {sorted(map(str, frame.columns))}. "
            f"Pass the name of an existing column as {role}=."
        )


@dataclass(frozen=True)
class Units:
    """A validated table of study units.

    Build it with :meth:`Units.from_frame`. The table keeps the user's columns; the role
    attributes (``treatment``, ``outcome``, ...) name the columns that play each role.

    Attributes
    ----------
    frame : pandas.DataFrame or geopandas.GeoDataFrame
        One row per unit, indexed by the unit id (unique). A GeoDataFrame when the units have
        a place (geometry or lon/lat columns).
    treatment, outcome : str or None
        Names of the binary treatment and numeric outcome columns.
    covariates : tuple of str
        Numeric pre-treatment covariates.
    clusters, period, trial, image_key : str or None
        Optional columns: clusters for grouped folds and clustered SEs, period for panels,
        trial for many trials in one table, image_key mapping units to images.
    """

    frame: pd.DataFrame
    treatment: str | None
    outcome: str | None
    covariates: tuple[str, ...]
    clusters: str | None = None
    period: str | None = None
    trial: str | None = None
    image_key: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        data: pd.DataFrame,
        *,
        id: str | None = None,
        treatment: str | None,
        outcome: str | None,
        covariates: Sequence[str] = (),
        clusters: str | None = None,
        period: str | None = None,
        trial: str | None = None,
        image_key: str | None = None,
        lon: str | None = None,
        lat: str | None = None,
        crs: object | None = None,
        allow_missing_outcome: bool = False,
    ) -> "Units":
        """Validate ``data`` and return :class:`Units`.

        Parameters
        ----------
        data : DataFrame or GeoDataFrame
            One row per unit. A GeoDataFrame must carry a CRS; a DataFrame may give the place
            as ``lon``/``lat`` columns (taken as EPSG:4326 unless ``crs`` says otherwise) or
            carry no place at all (array-only studies).
        id : str, optional
            Column with unique unit ids; the index is used when omitted.
        treatment : str or None
            Binary (0/1 or boolean) treatment column; None for units outside any trial.
        outcome : str or None
            Numeric outcome column; None when no outcome is observed.
        covariates : sequence of str
            Numeric pre-treatment covariates. Missing values are refused: impute first.
        clusters, period, trial, image_key : str, optional
            Columns for clusters, panel periods, trials and the unit -> image mapping.
        lon, lat : str, optional
            Longitude/latitude columns for a DataFrame without geometry.
        crs : optional
            CRS of ``lon``/``lat`` (default EPSG:4326). Never used to relabel a GeoDataFrame.
        allow_missing_outcome : bool
            Keep units whose outcome is missing (for example units outside the trial).

        Raises
        ------
        ColumnError, InputError, CRSError
            With the column, the rows and the fix in the message.
        """
        if not isinstance(data, pd.DataFrame):
            raise InputError(
                f"data: expected a pandas DataFrame or geopandas GeoDataFrame, got {type(data).__name__}"
            )
        if len(data) == 0:
            raise InputError("data: the table has no rows; a study needs at least one unit")
        covariates = tuple(covariates)
        roles = {"treatment": treatment, "outcome": outcome, "clusters": clusters,
                 "period": period, "trial": trial, "image_key": image_key, "lon": lon, "lat": lat}
        if id is not None:
            roles["id"] = id
        for role, col in roles.items():
            if col is not None:
                _require_column(data, col, role)
        for col in covariates:
            _require_column(data, col, "covariates")
        dup_cov = [c for c in set(covariates) if covariates.count(c) > 1]
        if dup_cov:
            raise InputError(f"covariates: {sorted(dup_cov)} listed more than once")
        role_cols = {treatment, outcome} - {None}
        clash = role_cols.intersection(covariates)
        if clash:
            raise InputError(
                f"covariates: {sorted(clash)} is also the treatment or outcome; "
                "remove it from covariates"
            )

        frame = data.copy()
        # ---- ids
        if id is not None:
            ids = frame[id]
            if ids.isna().any():
                raise InputError(f"id={id!r}: missing ids in rows {_rows(frame.index[ids.isna()])}")
            frame = frame.set_index(id, drop=False)
            frame.index.name = id
        dup = frame.index.duplicated(keep=False)
        if dup.any():
            where = "column " + repr(id) if id is not None else "the index"
            raise InputError(
                f"id: {where} has duplicate ids {_rows(pd.unique(frame.index[dup]))}; "
                "each unit needs a unique id (aggregate repeated rows, or pass a period column "
                "and a unit-period id for panels)"
            )

        # ---- treatment
        if treatment is not None:
            frame[treatment] = _binary(frame[treatment], treatment)
        # ---- outcome
        if outcome is not None:
            y = frame[outcome]
            if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
                y_num = pd.to_numeric(y, errors="coerce")
                bad = y_num.isna() & y.notna()
                if bad.any():
                    raise ColumnError(
                        f"outcome={outcome!r}: non-numeric values in rows {_rows(frame.index[bad])} "
                        f"(e.g. {y[bad].iloc[0]!r}); the outcome must be numeric"
                    )
                y = y_num
            y = y.astype(float)
            miss = y.isna() | ~np.isfinite(y.to_numpy(dtype=float, na_value=np.nan))
            if miss.any() and not allow_missing_outcome:
                raise InputError(
                    f"outcome={outcome!r}: missing or infinite values in rows {_rows(frame.index[miss])}; "
                    "drop these units, or pass allow_missing_outcome=True for units outside the trial"
                )
            frame[outcome] = y
        # ---- covariates
        non_numeric = [c for c in covariates if not pd.api.types.is_numeric_dtype(frame[c])]
        if non_numeric:
            ex = {c: frame[c].dropna().iloc[0] if frame[c].notna().any() else None for c in non_numeric}
            raise ColumnError(
                f"covariates: {non_numeric} are not numeric (e.g. {ex}); encode categories as "
                "indicator columns (pandas.get_dummies) before building units"
            )
        for c in covariates:
            v = frame[c].astype(float)
            bad = ~np.isfinite(v.to_numpy())
            if bad.any():
                raise InputError(
                    f"covariates: column {c!r} has missing or infinite values in rows "
                    f"{_rows(frame.index[bad])}; impute them (and consider a missingness "
                    "indicator) or drop these units"
                )
            frame[c] = v
        # ---- optional keys
        for role, col in (("clusters", clusters), ("period", period), ("trial", trial), ("image_key", image_key)):
            if col is not None and frame[col].isna().any():
                raise InputError(
                    f"{role}={col!r}: missing values in rows {_rows(frame.index[frame[col].isna()])}"
                )
        # ---- place
        frame = _with_place(frame, lon=lon, lat=lat, crs=crs)
        return cls(frame=frame, treatment=treatment, outcome=outcome, covariates=covariates,
                   clusters=clusters, period=period, trial=trial, image_key=image_key)

    # ------------------------------------------------------------------ accessors
    @property
    def n(self) -> int:
        """Number of units."""
        return len(self.frame)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def ids(self) -> np.ndarray:
        """Unit ids, in table order."""
        return self.frame.index.to_numpy()

    @property
    def has_place(self) -> bool:
        """True when the units carry a geometry with a CRS."""
        return _geometry_name(self.frame) is not None and self.frame.crs is not None

    @property
    def crs(self):
        """The CRS of the geometries, or None."""
        return getattr(self.frame, "crs", None) if self.has_place else None

    @property
    def geometry(self):
        """The units' GeoSeries (raises CRSError if the units have no place)."""
        if not self.has_place:
            raise CRSError("units have no geometry: build them from a GeoDataFrame or pass lon=/lat=")
        return self.frame.geometry

    def w(self) -> np.ndarray:
        """Treatment as a float array of 0/1."""
        if self.treatment is None:
            raise InputError("units have no treatment column; pass treatment= to Units.from_frame")
        return self.frame[self.treatment].to_numpy(dtype=float)

    def y(self) -> np.ndarray:
        """Outcome as a float array."""
        if self.outcome is None:
            raise InputError("units have no outcome column; pass outcome= to Units.from_frame")
        return self.frame[self.outcome].to_numpy(dtype=float)

    def x(self) -> np.ndarray:
        """Covariates as a float matrix (n, p); p may be 0."""
        if not self.covariates:
            return np.empty((self.n, 0))
        return self.frame[list(self.covariates)].to_numpy(dtype=float)

    def cluster_codes(self) -> np.ndarray | None:
        """Integer codes of the cluster column, else of the image key, else None.

        Cross-fitting folds and clustered SEs group by these codes, so units sharing one image
        never fall on both sides of a split.
        """
        col = self.clusters or self.image_key
        if col is None:
            return None
        return pd.factorize(self.frame[col], sort=True)[0]

    def keys(self) -> np.ndarray:
        """Image key of each unit (the unit id when no image_key column was named)."""
        if self.image_key is None:
            return self.frame.index.to_numpy()
        return self.frame[self.image_key].to_numpy()

    def subset(self, mask: np.ndarray) -> "Units":
        """Units for a boolean mask or integer positions, with the same roles."""
        return Units(frame=self.frame.iloc[np.asarray(mask)] if np.asarray(mask).dtype != bool
                     else self.frame.loc[np.asarray(mask)],
                     treatment=self.treatment, outcome=self.outcome, covariates=self.covariates,
                     clusters=self.clusters, period=self.period, trial=self.trial,
                     image_key=self.image_key)

    def describe(self) -> dict:
        """Counts for reports and manifests."""
        out = {"n": self.n, "covariates": list(self.covariates)}
        if self.treatment is not None:
            out["n_treated"] = int(self.w().sum())
        g = self.cluster_codes()
        if g is not None:
            out["n_clusters"] = int(g.max() + 1)
        if self.has_place:
            out["crs"] = self.crs.to_string()
        return out


def _binary(s: pd.Series, name: str) -> pd.Series:
    if s.isna().any():
        raise InputError(f"treatment={name!r}: missing values in rows {_rows(s.index[s.isna()])}")
    if pd.api.types.is_bool_dtype(s):
        v = s.astype(int)
    else:
        v = pd.to_numeric(s, errors="coerce")
        bad = v.isna() | ~v.isin([0, 1])
        if bad.any():
            vals = [repr(v) for v in sorted(pd.unique(s[bad]).tolist(), key=str)[:5]]
            raise InputError(
                f"treatment={name!r}: must be binary 0/1 (or boolean); rows {_rows(s.index[bad])} "
                f"hold {', '.join(vals)}. Recode the treatment, or make one trial per treatment level"
            )
        v = v.astype(int)
    if v.nunique() < 2:
        raise InputError(
            f"treatment={name!r}: constant (every unit has {int(v.iloc[0])}); an effect needs "
            "treated and control units"
        )
    return v


def _geometry_name(frame: pd.DataFrame) -> str | None:
    """The active geometry column of a GeoDataFrame, or None (plain frame or none set)."""
    import geopandas as gpd

    if not isinstance(frame, gpd.GeoDataFrame):
        return None
    name = getattr(frame, "active_geometry_name", None)
    return name if name is not None and name in frame.columns else None


def _with_place(frame: pd.DataFrame, *, lon, lat, crs) -> pd.DataFrame:
    import geopandas as gpd

    if _geometry_name(frame) is not None:
        if lon is not None or lat is not None:
            raise InputError("lon=/lat=: the table already has a geometry; pass either, not both")
        if frame.crs is None:
            raise CRSError(
                "units: the GeoDataFrame has no CRS; set the CRS the coordinates are in with "
                "gdf.set_crs('EPSG:4326') (or the right code) before building units"
            )
        geom = frame.geometry
        if geom.isna().any() or geom.is_empty.any():
            bad = geom.isna() | geom.is_empty
            raise InputError(f"geometry: missing or empty geometries in rows {_rows(frame.index[bad])}")
        kinds = set(geom.geom_type)
        allowed = {"Point", "Polygon", "MultiPolygon"}
        if not kinds <= allowed:
            raise InputError(
                f"geometry: units must be points or polygons, got {sorted(kinds - allowed)}; "
                "buffer lines into polygons or take centroids first"
            )
        return frame
    if (lon is None) != (lat is None):
        raise InputError("lon=/lat=: give both coordinate columns, or neither")
    if lon is None:
        return frame
    for col in (lon, lat):
        v = pd.to_numeric(frame[col], errors="coerce")
        bad = ~np.isfinite(v.to_numpy(dtype=float))
        if bad.any():
            raise InputError(f"{col!r}: missing or non-numeric coordinates in rows {_rows(frame.index[bad])}")
    crs = crs if crs is not None else "EPSG:4326"
    x, y = frame[lon].astype(float), frame[lat].astype(float)
    gdf = gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(x, y), crs=crs)
    if gdf.crs.is_geographic:
        bad = (x.abs() > 180) | (y.abs() > 90)
        if bad.any():
            raise CRSError(
                f"lon/lat: values outside [-180, 180] x [-90, 90] in rows {_rows(frame.index[bad])} "
                f"for geographic CRS {gdf.crs.to_string()}; if these are projected coordinates "
                "pass crs= with their CRS"
            )
    return gdf
