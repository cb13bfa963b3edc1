"""Embeddings on disk: :func:`write_embeddings` and :func:`read_embeddings` (.npz, .csv or GeoParquet).

Unit ids keep their type through a file: integer ids come back as integers, text ids as text
(also text such as ``"007"`` that looks like a number), so a frame read back joins the units
it was computed for. Ids of mixed types (some numbers, some text) are refused on writing.

Formats
-------
``.npz`` (numpy, no pickles): arrays ``ids`` (in the ids' own dtype: int64, float64 or
unicode), ``embeddings`` (n, d), ``columns`` (the d column names), ``id_name`` (the index
name, "" for none) and ``format`` (``"eocausal-embeddings/1"``).

``.csv``: a first line ``# eocausal-embeddings/1 {json}`` recording the id dtype, the index
name and the value dtype, then an ordinary CSV table whose first column holds the ids. Other
tools read it with ``pandas.read_csv(path, skiprows=1, index_col=0)`` (pandas then guesses
the id type: read it with :func:`read_embeddings` to keep text ids as text).

``.parquet`` (GeoParquet when the units' geometry is given; needs pyarrow, the ``products``
extra): one row per unit with the column ``id`` (its own type), ``geometry`` and one column per
embedding dimension; the file's key-value metadata ``eocausal`` holds the format, the id's dtype
and name, and ``metadata`` (the encoder or product, its version and settings, the weights hash,
the year(s), licence and attribution), which :func:`read_embeddings` returns in
``frame.attrs['metadata']``. GIS tools (QGIS, DuckDB, geopandas) read it as a point layer.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from eocausal.errors import DataFileError, InputError, MissingFileError

FORMAT = "eocausal-embeddings/1"
SUFFIXES = (".npz", ".csv", ".parquet")
_CSV_PREFIX = f"# {FORMAT} "


def _id_kind(index: pd.Index) -> str:
    """'int64', 'float64' or 'str' for the ids; InputError for mixed or other types."""
    if pd.api.types.is_bool_dtype(index.dtype):
        kind = "boolean"
    else:
        kind = pd.api.types.infer_dtype(index, skipna=False)
    if kind == "integer":
        return "int64"
    if kind == "floating":
        return "float64"
    if kind in ("string", "empty"):
        return "str"
    raise InputError(
        f"embeddings: unit ids of type {kind!r} (e.g. {index[:3].tolist()}) cannot be written with "
        "their type kept; use ids that are all integers or all text, e.g. Z.index = Z.index.astype(str)"
    )


def _check_frame(Z) -> pd.DataFrame:
    if not isinstance(Z, pd.DataFrame):
        raise InputError(f"embeddings: expected a DataFrame indexed by unit id (as embed() returns), "
                         f"got {type(Z).__name__}")
    if Z.index.has_duplicates:
        dup = Z.index[Z.index.duplicated()].unique()[:5].tolist()
        raise InputError(f"embeddings: duplicate unit ids {dup}; one row per unit is expected")
    return Z


def _check_path(path, arg: str = "path") -> Path:
    p = Path(path).expanduser()
    if p.suffix.lower() not in SUFFIXES:
        raise InputError(f"{arg}={str(path)!r}: use a file name ending in .npz, .csv or .parquet")
    return p


def embeddings_bytes(Z: pd.DataFrame, suffix: str, *, geometry=None, metadata: dict | None = None) -> bytes:
    """The bytes of ``Z`` written as ``suffix`` (``".npz"``, ``".csv"`` or ``".parquet"``); see the
    module notes. ``geometry`` (a GeoSeries indexed by unit id) and ``metadata`` (JSON-able) go
    into a ``.parquet`` file only."""
    Z = _check_frame(Z)
    kind = _id_kind(Z.index)
    ids = np.asarray(Z.index.to_numpy(), dtype=str if kind == "str" else kind)
    if suffix == ".parquet":
        return _parquet_bytes(Z, ids, kind, geometry, metadata)
    if suffix == ".npz":
        buf = io.BytesIO()
        np.savez_compressed(buf, ids=ids, embeddings=Z.to_numpy(),
                            columns=np.asarray([str(c) for c in Z.columns], dtype=str),
                            id_name=np.asarray("" if Z.index.name is None else str(Z.index.name)),
                            format=np.asarray(FORMAT))
        return buf.getvalue()
    if suffix != ".csv":
        raise InputError(f"suffix={suffix!r}: expected '.npz', '.csv' or '.parquet'")
    values = Z.to_numpy()
    head = {"id_dtype": kind, "id_name": Z.index.name, "dtype": str(values.dtype)}
    frame = pd.DataFrame(values, index=pd.Index(ids, name="id" if Z.index.name is None else Z.index.name),
                         columns=[str(c) for c in Z.columns])
    return (_CSV_PREFIX + json.dumps(head) + "\n" + frame.to_csv()).encode("utf-8")


def write_embeddings(Z: pd.DataFrame, path, *, units=None, metadata: dict | None = None) -> Path:
    """Write an embedding frame (indexed by unit id) to ``path`` (.npz, .csv or .parquet), atomically.

    Parameters
    ----------
    Z : pandas.DataFrame
        One row per unit, indexed by unit id (as :func:`eocausal.embed` returns).
    path : str or path
        File name ending in ``.npz``, ``.csv`` or ``.parquet`` (GeoParquet with ``units``).
    units : Units, GeoDataFrame or GeoSeries, optional
        The units' places, written as the GeoParquet geometry (``.parquet`` only).
    metadata : dict, optional
        Encoder or product, version, year(s), weights hash, licence (``.parquet`` only; default
        ``Z.attrs['provenance']`` when there is one).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        Not a frame, duplicate ids, ids of mixed types, or another suffix.
    """
    from eocausal._atomic import atomic_write_bytes

    p = _check_path(path)
    geometry = None
    if units is not None:
        from eocausal.data._raster_common import unit_geometries

        geometry = unit_geometries(units)
    meta = metadata if metadata is not None else Z.attrs.get("provenance") if isinstance(Z, pd.DataFrame) else None
    return atomic_write_bytes(p, embeddings_bytes(Z, p.suffix.lower(), geometry=geometry, metadata=meta))


def read_embeddings(path) -> pd.DataFrame:
    """Read a file written by :func:`write_embeddings` (or ``eocausal embed --out``).

    Parameters
    ----------
    path : str or path
        An ``.npz`` or ``.csv`` file.

    Returns
    -------
    pandas.DataFrame
        Indexed by unit id, with the ids' type as written (int64, float64 or text), ready to
        pass as ``embeddings=`` to :func:`eocausal.estimate`.

    Raises
    ------
    MissingFileError
        The file does not exist.
    DataFileError
        The file is not an embedding file eocausal wrote (or is damaged).
    """
    p = _check_path(path)
    if not p.is_file():
        raise MissingFileError(f"path={str(path)!r}: no such embedding file")
    try:
        if p.suffix.lower() == ".npz":
            return _read_npz(p)
        if p.suffix.lower() == ".parquet":
            return _read_parquet(p)
        return _read_csv(p)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        if isinstance(exc, (DataFileError, InputError)):
            raise
        raise DataFileError(f"path={str(path)!r}: cannot be read as an eocausal embedding file "
                            f"({type(exc).__name__}: {exc}); write it again with eocausal embed") from exc


def _read_npz(p: Path) -> pd.DataFrame:
    with np.load(p, allow_pickle=False) as z:
        missing = [k for k in ("ids", "embeddings") if k not in z.files]
        if missing:
            raise DataFileError(f"path={str(p)!r}: an embedding .npz needs the arrays 'ids' and "
                                f"'embeddings'; it lacks {missing} (it has {z.files})")
        ids, values = z["ids"], z["embeddings"]
        cols = z["columns"].tolist() if "columns" in z.files else [f"z{j:04d}" for j in range(values.shape[1])]
        name = str(z["id_name"]) if "id_name" in z.files else ""
    if values.ndim != 2 or len(ids) != len(values) or len(cols) != values.shape[1]:
        raise DataFileError(f"path={str(p)!r}: {len(ids)} ids, embeddings of shape {values.shape} and "
                            f"{len(cols)} column names do not fit together")
    index = pd.Index(ids.astype(object) if ids.dtype.kind == "U" else ids, name=name or None)
    return pd.DataFrame(values, index=index, columns=cols)


def _read_csv(p: Path) -> pd.DataFrame:
    with open(p, encoding="utf-8") as fh:
        first = fh.readline()
        if not first.startswith(_CSV_PREFIX):
            raise DataFileError(f"path={str(p)!r}: the first line is not '{_CSV_PREFIX}{{...}}', so this is "
                                "not an embedding CSV eocausal wrote (the id types are unknown); write it "
                                "with eocausal.data.embedding_files.write_embeddings")
        head = json.loads(first[len(_CSV_PREFIX):])
        frame = pd.read_csv(fh, index_col=0, dtype=str, keep_default_na=False)
    kind = head.get("id_dtype")
    if kind not in ("int64", "float64", "str"):
        raise DataFileError(f"path={str(p)!r}: unknown id_dtype {kind!r} in its first line")
    ids = frame.index.to_numpy()
    index = pd.Index(ids.astype(kind) if kind != "str" else ids.astype(object), name=head.get("id_name"))
    values = frame.to_numpy().astype(np.float64).astype(head.get("dtype", "float64"))
    return pd.DataFrame(values, index=index, columns=list(frame.columns))


def _parquet_bytes(Z: pd.DataFrame, ids: np.ndarray, kind: str, geometry, metadata) -> bytes:
    from eocausal.errors import require

    require("pyarrow", "products", "GeoParquet embedding files")
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = [str(c) for c in Z.columns]
    if "id" in cols or "geometry" in cols:
        raise InputError("embeddings: columns named 'id' or 'geometry' clash with the GeoParquet layout; rename them")
    frame = pd.DataFrame(Z.to_numpy(), columns=cols)
    frame.insert(0, "id", ids.astype(object) if kind == "str" else ids)
    if geometry is not None:
        import geopandas as gpd

        missing = Z.index.difference(geometry.index)
        if len(missing):
            raise InputError(f"units: no place for {len(missing)} embedded units (e.g. {missing[:3].tolist()}); "
                             "pass the units the embeddings were computed for")
        buf = io.BytesIO()
        gpd.GeoDataFrame(frame, geometry=geometry.loc[Z.index].to_numpy(), crs=geometry.crs).to_parquet(buf)
        table = pq.read_table(io.BytesIO(buf.getvalue()))
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    head = {"format": FORMAT, "id_dtype": kind, "id_name": Z.index.name, "dtype": str(Z.to_numpy().dtype),
            "metadata": metadata or {}}
    try:
        note = json.dumps(head, allow_nan=False, default=str)
    except ValueError as exc:
        raise InputError(f"metadata: not JSON-writable ({exc})") from None
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"eocausal": note.encode("utf-8")})
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _read_parquet(p: Path) -> pd.DataFrame:
    from eocausal.errors import require

    require("pyarrow", "products", "GeoParquet embedding files")
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    raw = (table.schema.metadata or {}).get(b"eocausal")
    if raw is None:
        raise DataFileError(f"path={str(p)!r}: no 'eocausal' metadata, so this is not an embedding file eocausal "
                            "wrote; for a published chip table use eocausal.data.chip_tables.read_chip_table")
    head = json.loads(raw.decode("utf-8"))
    frame = table.drop([c for c in ("geometry",) if c in table.column_names]).to_pandas()
    kind = head.get("id_dtype")
    if kind not in ("int64", "float64", "str"):
        raise DataFileError(f"path={str(p)!r}: unknown id_dtype {kind!r} in its metadata")
    ids = frame.pop("id").to_numpy()
    index = pd.Index(ids.astype(kind) if kind != "str" else ids.astype(object), name=head.get("id_name"))
    values = frame.to_numpy().astype(np.float64).astype(head.get("dtype", "float64"))
    out = pd.DataFrame(values, index=index, columns=list(frame.columns))
    out.attrs["metadata"] = head.get("metadata", {})
    return out


__all__ = ["read_embeddings", "write_embeddings"]
