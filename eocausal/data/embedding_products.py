"""Published per-pixel embedding products as image confounders, with their pitfalls handled once.

Many users take a published embedding product instead of computing image features. Each product
has facts that decide whether the numbers read are right: how values are quantised, which value
is nodata, how files are tiled (one UTM zone per file), which way rows run, which year a layer
summarises, and what licence and attribution text it carries. :class:`Product` holds them;
:data:`ALPHAEARTH` is the annual 64-dimensional 10 m AlphaEarth Foundations Satellite Embedding
(Google / Google DeepMind) as distributed in int8 COGs per UTM zone and year:

- de-quantisation (the product's documentation): value = sign(q) (|q| / 127.5)^2 for q in
  [-127, 127], so values lie in [-1, 1] and each pixel's vector has unit length;
- q = -128 is nodata (in all 64 bands at once);
- one directory per year, one set of files per UTM zone (EPSG:326xx / 327xx): a study that
  spans zones reads each unit from the file of its own zone (:meth:`EmbeddingProduct.sample`);
- some copies (e.g. the Source Cooperative mirror) store rows bottom-up (positive y pixel size):
  pixel rows are computed from each file's geotransform, never assumed north-up;
- licence CC-BY 4.0 with the attribution text "The AlphaEarth Foundations Satellite Embedding
  dataset is produced by Google and Google DeepMind.";
- one layer per calendar year, summarising that year's imagery.

Other per-pixel products are declared with :func:`as_product` (``quantisation='linear'``: value =
q * scale + offset, or 'none').

Pre-treatment guard: an annual layer of year Y summarises imagery up to 31 December of Y, so for a
unit treated on date t the layers of years Y >= year(t) include post-treatment imagery (a
variable the treatment may have changed: adjusting for it biases the effect). Such a choice is
refused (:class:`~eocausal.errors.PostTreatmentError`, naming the units and dates) unless
``allow_post_treatment=True``, which the provenance records so that it reaches the effect table's
notes.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from eocausal.data._raster_common import file_fingerprint, listed, read_meta, resolve_paths, unit_geometries
from eocausal.errors import DataFileError, DataQualityWarning, InputError, PostTreatmentError

__all__ = ["ALPHAEARTH", "QUANTISATIONS", "EmbeddingProduct", "Product", "as_product", "dequantize"]

#: How a product's stored integers map to embedding values.
QUANTISATIONS = ("signed-square", "linear", "none")


@dataclass(frozen=True)
class Product:
    """The facts of a per-pixel embedding product.

    ``quantisation``: 'signed-square' (sign(q) (|q| / ``scale``)^2, AlphaEarth's), 'linear'
    (q * ``scale`` + ``offset``) or 'none' (values as stored). ``nodata``: the stored value that
    marks a missing pixel (None: the file's own nodata). ``years``: the first and last year
    published (None: any). ``prefix``: column names are ``prefix`` + a two-digit band number.
    """

    name: str
    version: str
    dims: int
    resolution_m: float
    licence: str
    attribution: str
    quantisation: str = "none"
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    years: tuple[int, int] | None = None
    prefix: str = "e"
    notes: str = field(default="", compare=False)

    def __post_init__(self):
        if self.quantisation not in QUANTISATIONS:
            raise InputError(f"quantisation={self.quantisation!r}: use one of {list(QUANTISATIONS)}")
        if not self.dims >= 1:
            raise InputError(f"dims={self.dims}: a product has at least one band")
        if self.quantisation != "none" and not (np.isfinite(self.scale) and self.scale != 0):
            raise InputError(f"scale={self.scale}: a quantised product needs a finite, non-zero scale")

    @property
    def columns(self) -> list[str]:
        return [f"{self.prefix}{i:02d}" for i in range(self.dims)]

    def provenance(self) -> dict:
        """JSON-able facts for the manifest, the table's notes and the report."""
        out = asdict(self)
        out["years"] = None if self.years is None else list(self.years)
        return out


ALPHAEARTH = Product(
    name="AlphaEarth Foundations Satellite Embedding", version="v1 (annual)", dims=64, resolution_m=10.0,
    licence="CC-BY-4.0",
    attribution="The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google DeepMind.",
    quantisation="signed-square", scale=127.5, nodata=-128, years=(2017, 2025), prefix="A",
    notes="int8 COGs per UTM zone and year; unit-length 64-d vectors after de-quantisation")

_PRODUCTS = {"alphaearth": ALPHAEARTH}


def as_product(spec) -> Product:
    """A :class:`Product` from a name ('alphaearth'), a Product, or a mapping of its fields
    (a study file's ``[embeddings.product]`` table)."""
    if isinstance(spec, Product):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower().replace("_", "").replace("-", "").replace(" ", "")
        if key in ("alphaearth", "aef", "alphaearthfoundations", "googlesatelliteembedding"):
            return ALPHAEARTH
        raise InputError(f"product={spec!r}: unknown product; use one of {sorted(_PRODUCTS)} or declare it "
                         "with name, version, dims, resolution_m, licence, attribution and quantisation")
    if isinstance(spec, dict):
        fields = set(Product.__dataclass_fields__)
        unknown = sorted(set(spec) - fields)
        if unknown:
            raise InputError(f"product: unknown keys {unknown}; known: {sorted(fields)}")
        missing = [k for k in ("name", "version", "dims", "resolution_m", "licence", "attribution") if k not in spec]
        if missing:
            raise InputError(f"product: declare {missing} (a product's facts travel into the outputs)")
        kw = dict(spec)
        if kw.get("years") is not None:
            kw["years"] = tuple(int(y) for y in kw["years"])
        return Product(**kw)
    raise InputError(f"product: expected a name, a Product or a mapping, got {type(spec).__name__}")


def dequantize(values, prod: Product = ALPHAEARTH) -> np.ndarray:
    """Stored values -> embedding values (float64), NaN where a pixel is ``prod.nodata``."""
    q = np.asarray(values)
    v = q.astype(float)
    missing = np.zeros(q.shape, dtype=bool) if prod.nodata is None else (q == prod.nodata)
    if prod.quantisation == "signed-square":
        v = np.sign(v) * (np.abs(v) / prod.scale) ** 2
    elif prod.quantisation == "linear":
        v = v * prod.scale + prod.offset
    v[missing] = np.nan
    return v


def _year_of(path: str) -> int | None:
    """The year in a path ('.../2021/36N/x.tif' or 'aef_2021_...'): the last 4-digit 19xx/20xx."""
    found = re.findall(r"(?<!\d)(19\d\d|20\d\d)(?!\d)", path)
    return int(found[-1]) if found else None


def _utm_epsg(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    zone = np.clip(np.floor((np.asarray(lon) + 180.0) / 6.0).astype(int) + 1, 1, 60)
    return np.where(np.asarray(lat) >= 0, 32600, 32700) + zone


class EmbeddingProduct:
    """Per-pixel embedding product files (one or more years, one or more UTM zones) as confounders.

    Parameters
    ----------
    files : path, sequence of paths, or mapping {year: path(s)}
        The product's raster files, or folders (their .tif files, recursively). Without a mapping
        each file's year is read from its path (the last 19xx/20xx in it, as in the product's
        ``<year>/<zone>/`` layout).
    product : str, Product or mapping
        The product's facts (:func:`as_product`); default AlphaEarth.

    The files must have ``product.dims`` bands and a CRS. Files of one year may be in different
    CRSs (UTM zones): each unit is read from a file of its own zone when one covers it, else from
    any file that covers it with a valid pixel.
    """

    def __init__(self, files, *, product="alphaearth"):
        self.product = as_product(product)
        by_year: dict[int, list[str]] = {}
        if isinstance(files, dict):
            for year, paths in files.items():
                by_year.setdefault(int(year), []).extend(_expand(resolve_paths(paths, f"files[{year}]")))
        else:
            for p in _expand(resolve_paths(files, "files")):
                year = _year_of(p)
                if year is None:
                    raise InputError(f"files: no year in the path {p!r}; pass a mapping {{year: paths}}")
                by_year.setdefault(year, []).append(p)
        if not by_year:
            raise InputError("files: no product files given")
        yrs = self.product.years
        for year in by_year:
            if yrs is not None and not yrs[0] <= year <= yrs[1]:
                raise InputError(f"files: year {year} is outside {self.product.name}'s years {yrs[0]}-{yrs[1]}")
        self.files = {y: [read_meta(p, bottom_up=True) for p in sorted(ps)] for y, ps in sorted(by_year.items())}
        for year, metas in self.files.items():
            for m in metas:
                if m.count != self.product.dims:
                    raise DataFileError(f"{m.path}: {m.count} bands, but {self.product.name} has "
                                        f"{self.product.dims}; is this the right product?")
                if m.crs is None:
                    raise DataFileError(f"{m.path}: no CRS; a product file must be georeferenced")

    @property
    def years(self) -> list[int]:
        return list(self.files)

    def __repr__(self) -> str:
        n = sum(len(v) for v in self.files.values())
        return f"EmbeddingProduct({self.product.name!r}, years {self.years}, {n} files)"

    def choose_years(self, ids, treatment_dates=None, year=None, *, per_unit: bool = False) -> np.ndarray:
        """One product year per unit.

        ``year`` (one, or one per unit) when given. Otherwise from the treatment dates: by default
        one common layer for every unit, the latest published year before the earliest treatment's
        year, so the layer read does not differ between treated and control units (a year that
        did would be a proxy of treatment); with ``per_unit=True`` (staggered adoption) each
        treated unit's own latest year before its treatment's year, and units without a date the
        common layer.
        """
        n = len(ids)
        if year is not None:
            out = np.broadcast_to(np.asarray(year, dtype=int), (n,)).copy()
            bad = sorted(set(out.tolist()) - set(self.years))
            if bad:
                raise InputError(f"year: no product files for {bad}; available: {self.years}")
            return out
        if treatment_dates is None:
            raise InputError("year: pass year= (one or per unit) or treatment_dates= to choose the layer")
        t_year = _treatment_years(treatment_dates, n)
        dated = t_year < np.iinfo(np.int64).max
        if not dated.any():
            raise InputError("treatment_dates: no unit has a treatment date; pass year= to choose the layer")
        avail = np.array(self.years)
        first = int(t_year[dated].min())
        if not (avail < first).any():
            early = np.flatnonzero(dated & (t_year <= avail[0]))
            raise PostTreatmentError(
                f"{len(early)} units were treated in or before the first available year {avail[0]}, so every "
                f"layer includes post-treatment imagery: {listed(pd.Index(ids)[early])}. Add earlier years "
                "or drop these units")
        common = int(avail[avail < first][-1])
        out = np.full(n, common, dtype=int)
        if per_unit:
            for i in np.flatnonzero(dated):
                out[i] = avail[avail < t_year[i]][-1]
        return out

    def sample(self, units, *, year=None, treatment_dates=None, per_unit: bool = False,
               allow_post_treatment: bool = False) -> pd.DataFrame:
        """One row of embedding values per unit, indexed by unit id, with the product's facts.

        ``year``: the layer to read (one year, or one per unit); None chooses it from
        ``treatment_dates`` (one per unit, None for units never treated) by
        :meth:`choose_years` (``per_unit``: each treated unit's own pre-treatment layer). With
        both, every unit with a treatment date is checked: a layer of the treatment's year or
        later is refused (:class:`~eocausal.errors.PostTreatmentError`) unless
        ``allow_post_treatment=True``. Units off every file, or on nodata, get NaN rows (with a
        DataQualityWarning). The frame's ``attrs['provenance']`` holds the product's facts, the
        years and files read, and the post-treatment setting; the column ``year`` is not added
        (the frame holds only embedding columns), ``attrs['year']`` maps unit id -> year.
        """
        geoms = unit_geometries(units)
        ids = geoms.index
        years = self.choose_years(ids, treatment_dates, year, per_unit=per_unit)
        post = np.zeros(len(ids), dtype=bool)
        if treatment_dates is not None:
            post = years >= _treatment_years(treatment_dates, len(ids))
            if post.any() and not allow_post_treatment:
                tds = pd.Series(np.asarray(treatment_dates), index=ids)[post]
                shown = ", ".join(f"{u} (treated {d}, layer {y})" for u, d, y in
                                  zip(tds.index[:8], tds.to_numpy()[:8], years[post][:8]))
                raise PostTreatmentError(
                    f"{int(post.sum())} units would be read from a layer of their treatment's year or later, "
                    f"which summarises post-treatment imagery: {shown}. Choose earlier years (year=), or pass "
                    "allow_post_treatment=True to keep them (the effect table's notes will say so)")
        pts = geoms.to_crs("EPSG:4326").centroid if (geoms.geom_type != "Point").any() else geoms.to_crs("EPSG:4326")
        lon, lat = pts.x.to_numpy(), pts.y.to_numpy()
        own = _utm_epsg(lon, lat)
        out = np.full((len(ids), self.product.dims), np.nan)
        used: dict[str, dict] = {}
        for y in np.unique(years):
            rows = np.flatnonzero(years == y)
            self._read_year(int(y), geoms.iloc[rows], own[rows], out, rows, used)
        frame = pd.DataFrame(out, index=ids.copy(), columns=self.product.columns)
        missing = np.isnan(out).all(axis=1)
        if missing.any():
            warnings.warn(f"{int(missing.sum())} of {len(out)} units have no valid {self.product.name} pixel (off "
                          f"every file, or nodata): {listed(ids[missing])}. Their rows are NaN; drop or impute them",
                          DataQualityWarning, stacklevel=2)
        frame.attrs["year"] = dict(zip(ids.tolist(), years.tolist()))
        frame.attrs["provenance"] = {
            "product": self.product.provenance(), "years": sorted({int(v) for v in years}),
            "files": sorted(used.values(), key=lambda f: f["path"]),
            "post_treatment_allowed": bool(allow_post_treatment),
            "post_treatment_units": int(post.sum()),
        }
        return frame

    def _read_year(self, year: int, geoms, own_epsg: np.ndarray, out: np.ndarray, rows: np.ndarray, used: dict):
        """Fill ``out[rows]`` from this year's files: first each unit's own UTM zone, then any file."""
        import rasterio
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        metas = self.files[year]
        epsgs = np.array([m.crs.to_epsg() or -1 for m in metas])
        done = np.zeros(len(rows), dtype=bool)
        for own_zone_only in (True, False):
            for k, m in enumerate(metas):
                todo = np.flatnonzero(~done & ((own_epsg == epsgs[k]) if own_zone_only else True))
                if not len(todo):
                    continue
                pts = geoms.iloc[todo].to_crs(m.crs)
                pts = pts.centroid if (pts.geom_type != "Point").any() else pts
                x, y = pts.x.to_numpy(), pts.y.to_numpy()
                t = m.transform  # rows from the geotransform: north-up (e < 0) and bottom-up (e > 0) alike
                col, row = np.floor((x - t.c) / t.a), np.floor((y - t.f) / t.e)
                inside = (col >= 0) & (col < m.width) & (row >= 0) & (row < m.height)
                if not inside.any():
                    continue
                try:
                    with rasterio.open(m.path) as ds:
                        for j in np.flatnonzero(inside):
                            q = ds.read(window=Window(int(col[j]), int(row[j]), 1, 1))[:, 0, 0]
                            v = dequantize(q, self.product)
                            if np.isfinite(v).all():
                                out[rows[todo[j]]] = v
                                done[todo[j]] = True
                                used.setdefault(m.path, {"year": year, **file_fingerprint(m.path)})
                except RasterioError as exc:
                    raise DataFileError(f"{m.path}: reading failed ({exc}); check the file") from exc


def _expand(paths) -> list[str]:
    """Files as given, folders replaced by the .tif/.tiff files under them (sorted)."""
    from pathlib import Path

    out: list[str] = []
    for p in paths:
        if Path(p).is_dir():
            found = sorted(str(f) for f in Path(p).rglob("*") if f.suffix.lower() in (".tif", ".tiff"))
            if not found:
                raise InputError(f"files: no .tif files under the folder {p}")
            out += found
        else:
            out.append(p)
    return out


def _treatment_years(treatment_dates, n: int) -> np.ndarray:
    from eocausal.data._raster_common import treatment_days

    days = treatment_days(treatment_dates, n)
    years = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)  # no date: never post-treatment
    has = ~np.isnat(days)
    years[has] = days[has].astype("datetime64[Y]").astype(int) + 1970
    return years
