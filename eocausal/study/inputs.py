"""Turn a validated study's [units], [simulate] and [imagery] sections into units and a source."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from eocausal.data.units import Units
from eocausal.errors import ColumnError, DataFileError, EocausalError, MissingFileError, StudyFileError
from eocausal.study.schema import Study

#: [units] keys that name a column of the units file
COLUMN_KEYS = ("id", "treatment", "outcome", "covariates", "clusters", "image_key", "lon", "lat")


@dataclass(frozen=True)
class Inputs:
    """What a study runs on."""

    units: Units
    source: object
    true_effect: float | None = None
    data_files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: embeddings read from a product or chip table ([imagery] format embedding-product / chip-table);
    #: then no encoder runs and ``source`` is None
    embeddings: object = None


def _where(study: Study) -> str:
    return f"study file {study.path}" if study.path else "study"


def _study_file(study: Study, section: str, key: str, p: str, folder_ok: bool = False) -> Path:
    """The file ``[section] key`` names: it exists, is a file (or, with ``folder_ok``, a folder) and
    can be opened for reading."""
    path = Path(os.path.normpath(study.resolve(p)))
    where = f"{_where(study)}: [{section}] {key} = {p!r}"
    if not path.exists():
        raise MissingFileError(f"{where}: {path} does not exist; fix the path (relative paths are taken "
                               f"from the study file's folder, {study.base_dir})")
    if path.is_dir() and folder_ok:
        return path
    if path.is_dir():
        raise DataFileError(f"{where}: {path} is a folder; name the file itself"
                            + (" (several rasters: a list of files)" if section == "imagery" else ""))
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise DataFileError(f"{where}: {path} cannot be read ({exc.strerror}); check its permissions") from exc
    return path


def _columns(study: Study, path: Path) -> tuple[list[str], str | None]:
    """(column names, geometry type or None) of the units file, from its header only."""
    fmt, where = study["units"]["format"], f"{_where(study)}: [units] path = {study['units']['path']!r}"
    try:
        if fmt == "csv":
            return [str(c) for c in pd.read_csv(path, nrows=0).columns], None
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            import json

            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            geo = json.loads((schema.metadata or {}).get(b"geo", b"{}"))
            geom_col = geo.get("primary_column")
            gtypes = geo.get("columns", {}).get(geom_col, {}).get("geometry_types") or ["Unknown"]
            cols = [c for c in schema.names if c != geom_col]
            return cols, (gtypes[0] if geom_col else None)
        import pyogrio

        info = pyogrio.read_info(path)
        return [str(c) for c in info["fields"]], info["geometry_type"]
    except ImportError:  # the header cannot be read without the optional reader: run reads the file
        return [], "Unknown"
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataFileError(f"{where}: {path} cannot be read as {fmt} ({exc}); check the format and "
                            "that the file is complete") from exc


def _check_units_file(study: Study, path: Path) -> str:
    u = study["units"]
    where = _where(study)
    if u["format"] == "causalimages-rdata":
        from eocausal.data.causalimages import X_COLUMNS, _decompressed_head

        head = _decompressed_head(path)
        if not head.startswith((b"RDX2\n", b"RDX3\n")):
            raise DataFileError(f"{where}: [units] path = {u['path']!r}: {path} is not an R workspace "
                                f"(.RData saved by save()): it starts with {head[:8]!r}; name the "
                                "causalimages tutorial workspace")
        bad = [c for c in (u["covariates"] or ()) if c not in X_COLUMNS]
        if bad:
            raise ColumnError(f"{where}: [units] covariates = {u['covariates']!r}: {bad} are not columns of "
                              f"the workspace's X; use names from {list(X_COLUMNS)}")
        return f"units: {path} (causalimages-rdata)"
    cols, geometry = _columns(study, path)
    if not cols and geometry == "Unknown":
        return f"units: {path} ({u['format']}; columns not checked: no reader for the header)"
    have = set(cols)
    for key in COLUMN_KEYS:
        names = u[key] if key == "covariates" else [u[key]]
        missing = [c for c in (names or ()) if c is not None and c not in have]
        if missing:
            shown = cols if len(cols) <= 30 else cols[:30] + ["..."]
            raise ColumnError(
                f"{where}: [units] {key} = {u[key]!r}: no column {missing[0]!r} in {path} (its columns: "
                f"{shown}); fix the name in the study file or in the file's header"
            )
    if u["format"] == "vector":
        im = study["imagery"]
        if geometry is None and im["format"] in ("raster", "stac"):
            raise DataFileError(f"{where}: [units] path = {u['path']!r}: {path} has no geometry, which "
                                f"[imagery] format = {im['format']!r} needs to place the chips; use a file with "
                                "geometries, or format = 'csv' with lon and lat")
        if (im["format"] in ("raster", "stac") and im["chip_size_m"] is None and geometry is not None
                and "point" in geometry.lower()):
            raise StudyFileError(f"{where}: [imagery] format = {im['format']!r} needs chip_size_m: the units in "
                                 f"{path} are points ({geometry}); give the chip side in metres")
    return f"units: {path} ({u['format']}, {len(cols)} columns{'' if geometry is None else ', ' + geometry})"


def _strip_arg(msg: str) -> str:
    head, sep, rest = msg.partition(": ")
    return rest if sep and head.isidentifier() else msg


def _check_imagery_files(study: Study) -> list[str]:
    im = study["imagery"]
    fmt, where = im["format"], _where(study)
    if fmt in ("demo", "causalimages-rdata"):
        return [f"imagery: {fmt} (the units' own images)"]
    paths = im["path"] if isinstance(im["path"], list) else [im["path"]]
    files = [_study_file(study, "imagery", "path", p, folder_ok=fmt == "embedding-product") for p in paths]
    if fmt == "embedding-product":
        from eocausal.data.embedding_products import EmbeddingProduct

        prod = EmbeddingProduct(files, product=im["product"])  # reads every file's metadata (folders: their .tif)
        return [f"imagery: {prod!r}"]
    if fmt == "stac":
        src = _stac_source(study, files[0])  # reads every item and the metadata of every asset
        return [f"imagery: {files[0]} (stac, {len(src.stac_items)} items, {src.count} bands "
                f"{list(src.bands)}, {src.crs.to_string()}, dates {[str(d) for d in src.dates]})"]
    if fmt == "chip-table":
        from eocausal.data.chip_tables import read_chip_table

        return [f"imagery: {read_chip_table(files[0], embedding=im['embedding'])!r}"]
    if fmt == "npz":
        path = files[0]
        try:
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if "images" not in names:
                    raise DataFileError(f"{where}: [imagery] path = {im['path']!r}: {path} has no array "
                                        f"named 'images' (it has {names}); save the images as "
                                        "np.savez(path, images=..., keys=...)")
                with z.zip.open("images.npy") as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    shape = read_header(fh)[0] if read_header else None
        except (OSError, ValueError) as exc:
            raise DataFileError(f"{where}: [imagery] path = {im['path']!r}: {path} cannot be read as .npz "
                                f"({exc})") from exc
        if shape is not None and len(shape) not in (4, 5):
            raise DataFileError(f"{where}: [imagery] path = {im['path']!r}: 'images' in {path} has shape "
                                f"{shape}; expected (n_images, H, W, C) or sequences (n_images, T, H, W, C)")
        return [f"imagery: {path} (npz, images {shape}{', keys' if 'keys' in names else ''})"]
    if fmt == "causalimages-tfrecord":
        import gzip
        import struct

        from eocausal.data._protobuf import masked_crc32c

        path = files[0]
        with open(path, "rb") as fh:
            head = fh.read(12)
        if head[:2] == b"\x1f\x8b":
            try:
                with gzip.open(path, "rb") as fh:
                    head = fh.read(12)
            except (OSError, EOFError) as exc:
                raise DataFileError(f"{where}: [imagery] path = {im['path']!r}: {path} is a corrupt gzip "
                                    f"file ({exc})") from exc
        if len(head) < 12 or masked_crc32c(head[:8]) != struct.unpack("<I", head[8:12])[0]:
            raise DataFileError(f"{where}: [imagery] path = {im['path']!r}: {path} is not a TFRecord file "
                                "(its first record header does not check); name a file written by "
                                "causalimages::WriteTfRecord()")
        return [f"imagery: {path} (causalimages-tfrecord)"]
    # raster: every file opens, the files make one surface, the bands exist
    from eocausal.data._raster_common import check_compatible, read_meta, resolve_bands

    metas = []
    for p, path in zip(paths, files):
        try:
            metas.append(read_meta(str(path)))
        except EocausalError as exc:
            raise type(exc)(f"{where}: [imagery] path = {p!r}: {_strip_arg(str(exc))}") from exc
    try:
        check_compatible(metas)
    except EocausalError as exc:
        raise type(exc)(f"{where}: [imagery] path: {_strip_arg(str(exc))}") from exc
    try:
        _, names = resolve_bands(im["bands"], metas)
    except EocausalError as exc:
        raise type(exc)(f"{where}: [imagery] bands = {im['bands']!r} ({', '.join(map(str, files))}): "
                        f"{_strip_arg(str(exc))}; fix the band list in the study file") from exc
    return [f"imagery: {path} (raster, {m.count} bands, {m.crs.to_string()})" for path, m in zip(files, metas)] + \
        [f"bands: {list(names)}"]


def check_study(study: Study) -> tuple[str, ...]:
    """Every check of a validated study that needs no computation, before any work.

    The files the study names exist, are files (not folders) and can be read; each reads as its
    declared format from its header (a CSV's header row, a vector file's schema, an R workspace's
    signature, an .npz file's array names and image shape, a TFRecord's first record header,
    each raster's metadata); the columns [units] names are in the units file; the rasters share
    one CRS and band count and hold the [imagery] bands. ``eocausal validate`` and
    :func:`~eocausal.study.runner.run_study` call it first.

    Returns
    -------
    tuple of str
        One line per thing checked (what ``eocausal validate`` prints).

    Raises
    ------
    MissingFileError, DataFileError, ColumnError, CRSError, StudyFileError
        Naming the section, the key, the file and the fix.
    """
    if study["units"]["format"] == "demo":
        return ("units: demo (simulated)", "imagery: demo (simulated)")
    path = _study_file(study, "units", "path", study["units"]["path"])
    return (_check_units_file(study, path), *_check_imagery_files(study))


def load_inputs(study: Study) -> Inputs:
    """Read the units and imagery a study names (nothing in them is executed)."""
    u, im = study["units"], study["imagery"]
    fmt = u["format"]
    if fmt == "demo":
        from eocausal.data.simulate import simulate_demo

        sim = study["simulate"]
        d = simulate_demo(n_images=sim["n_images"], units_per_image=sim["units_per_image"],
                          px=sim["px"], tau=float(sim["tau"]), seed=study.seed)
        return Inputs(units=d.units, source=d.source, true_effect=d.true_effect)

    files: list[Path] = []
    if fmt == "causalimages-rdata":
        from eocausal.data.causalimages import read_causalimages

        path = _study_file(study, "units", "path", u["path"])
        files.append(path)
        cov = u["covariates"] if u["covariates"] is not None else u["covariate_set"]
        data = read_causalimages(path, covariates=cov)
        units, source, notes = data.units, data.images, data.notes
        frame = None
    else:
        path = _study_file(study, "units", "path", u["path"])
        files.append(path)
        frame = _read_table(path, fmt)
        units = Units.from_frame(frame, id=u["id"], treatment=u["treatment"], outcome=u["outcome"],
                                 covariates=u["covariates"] or (), clusters=u["clusters"],
                                 image_key=u["image_key"], lon=u["lon"], lat=u["lat"], crs=u["crs"])
        source, notes = None, ()

    ifmt = im["format"]
    if ifmt == "npz":
        p = _study_file(study, "imagery", "path", im["path"])
        files.append(p)
        source = _read_npz(p)
    elif ifmt == "causalimages-tfrecord":
        from eocausal.data.causalimages import read_tfrecord

        p = _study_file(study, "imagery", "path", im["path"])
        files.append(p)
        source = read_tfrecord(p).to_source(key_type=int)
    elif ifmt == "raster":
        from eocausal.data.raster import RasterSource

        paths = im["path"] if isinstance(im["path"], list) else [im["path"]]
        resolved = [_study_file(study, "imagery", "path", p) for p in paths]
        files += resolved
        source = RasterSource(resolved, bands=im["bands"], chip_size_m=im["chip_size_m"],
                              chip_px=im["chip_px"], nodata=im["nodata"], min_valid=im["min_valid"],
                              on_invalid=im["on_invalid"], valid=im["valid"])
    elif ifmt == "stac":
        catalog = _study_file(study, "imagery", "path", im["path"])
        source = _stac_source(study, catalog)
        if im["treatment_date"] is not None:
            _stac_guard(study, source, units, frame)
        files.append(catalog)
        files += [Path(p) for p in _stac_asset_files(source)]
    elif ifmt in ("embedding-product", "chip-table"):
        paths = im["path"] if isinstance(im["path"], list) else [im["path"]]
        resolved = [_study_file(study, "imagery", "path", p, folder_ok=ifmt == "embedding-product") for p in paths]
        Z, read = _precomputed(study, units, frame, resolved)
        files += read
        return Inputs(units=units, source=None, data_files=tuple(files), notes=tuple(notes), embeddings=Z)
    if source is None:
        raise StudyFileError(f"[imagery]: no imagery for units of format {fmt!r}; set [imagery] format and path")
    return Inputs(units=units, source=source, data_files=tuple(files), notes=tuple(notes))


def _precomputed(study: Study, units: Units, frame: pd.DataFrame | None,
                 files: list[Path]) -> tuple[pd.DataFrame, list[Path]]:
    """Embeddings of an embedding-product or chip-table study, one row per unit with a valid one,
    and the data files behind them (a product's folders as their files); units without one are
    listed in ``attrs['dropped_ids']`` (estimate drops them with a note)."""
    im = study["imagery"]
    if im["format"] == "embedding-product":
        from eocausal.data.embedding_products import EmbeddingProduct

        dates = None
        if im["treatment_date"] is not None:
            col = im["treatment_date"]
            if frame is None or col not in frame.columns:
                raise ColumnError(f"{_where(study)}: [imagery] treatment_date = {col!r}: no such column in the units "
                                  "file")
            dates = frame[col].where(frame[col].notna(), None).to_numpy(dtype=object)
        prod = EmbeddingProduct(files, product=im["product"])
        read = [Path(m.path) for metas in prod.files.values() for m in metas]
        Z = prod.sample(
            units, year=im["year"], treatment_dates=dates, per_unit=im["per_unit_year"],
            allow_post_treatment=im["allow_post_treatment"])
    else:
        from eocausal.data.chip_tables import read_chip_table

        Z = read_chip_table(files[0], embedding=im["embedding"]).join(units, how=im["join"],
                                                                    max_distance_m=im["max_distance_m"])
        read = list(files)
    valid = Z.notna().all(axis=1).to_numpy()
    attrs = dict(Z.attrs)
    Z = Z[valid]
    Z.attrs.update(attrs)
    Z.attrs["dropped_ids"] = units.ids[~valid].tolist()
    Z.attrs["embed_stats"] = {"dropped_reason": "no embedding at the unit's place (off the product or chips, or "
                                                "nodata)"}
    return Z, read


def _stac_source(study: Study, catalog: Path):
    """The [imagery] format = 'stac' source: every item of the catalog, one mosaic."""
    from eocausal.data.raster import RasterSource

    im = study["imagery"]
    try:
        return RasterSource.from_stac(catalog, bands=im["bands"], chip_size_m=im["chip_size_m"],
                                      chip_px=im["chip_px"], nodata=im["nodata"], min_valid=im["min_valid"],
                                      on_invalid=im["on_invalid"], valid=im["valid"])
    except EocausalError as exc:
        raise type(exc)(f"{_where(study)}: [imagery] path = {im['path']!r} (stac): {_strip_arg(str(exc))}") from exc


def _stac_guard(study: Study, source, units: Units, frame: pd.DataFrame | None) -> None:
    """The pre-treatment guard of a STAC study: items dated on or after a unit's treatment date."""
    from eocausal.data._raster_common import listed
    from eocausal.data.stac import post_treatment_units
    from eocausal.errors import PostTreatmentError

    im, col = study["imagery"], study["imagery"]["treatment_date"]
    if frame is None or col not in frame.columns:
        raise ColumnError(f"{_where(study)}: [imagery] treatment_date = {col!r}: no such column in the units file")
    dates = frame[col].where(frame[col].notna(), None).to_numpy(dtype=object)
    post = post_treatment_units(source.item_dates, dates)
    if post.any() and not im["allow_post_treatment"]:
        shown = [f"{i} (treated {str(d)[:10]})" for i, d in zip(units.ids[post][:8], dates[post][:8])]
        raise PostTreatmentError(
            f"{_where(study)}: [imagery] {int(post.sum())} units were treated on or before the latest imagery "
            f"({max(source.item_dates)}; items dated {sorted({str(d) for d in source.item_dates})}): "
            f"{listed(shown)}. Their chips would be post-treatment variables. Use a catalog of items dated "
            "before the earliest treatment, or set allow_post_treatment = true (the effect table's notes will "
            "say so)")
    source.provenance.update(post_treatment_allowed=bool(im["allow_post_treatment"]),
                             post_treatment_units=int(post.sum()))


def _stac_asset_files(source) -> list[str]:
    """The local asset files a STAC source reads (for the manifest's hashes)."""
    from eocausal.data._raster_common import is_inline_vrt, is_remote, vrt_sources

    out = []
    for p in source.paths:
        for f in (vrt_sources(p) if is_inline_vrt(p) else [p]):
            if not is_remote(f) and f not in out:
                out.append(f)
    return out


def _read_table(path: Path, fmt: str) -> pd.DataFrame:
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        import geopandas as gpd

        if path.suffix.lower() in (".parquet", ".geoparquet"):
            return gpd.read_parquet(path)
        return gpd.read_file(path)
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{path}: cannot read units as {fmt} ({exc})") from exc


def _read_npz(path: Path):
    from eocausal.data.arrays import ArraySource

    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise DataFileError(f"{path}: an .npz image file needs an array named 'images' (has {z.files})")
            images = z["images"]
            keys = z["keys"] if "keys" in z.files else None
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{path}: cannot read images ({exc})") from exc
    return ArraySource(images, keys=keys)
