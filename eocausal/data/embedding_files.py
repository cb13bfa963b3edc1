"""Embeddings on disk: :func:`write_embeddings` and :func:`read_embeddings` (.npz or .csv).

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
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from eocausal.errors import DataFileError, InputError, MissingFileError

FORMAT = "eocausal-embeddings/1"
SUFFIXES = (".npz", ".csv")
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
        raise InputError(f"{arg}={str(path)!r}: use a file name ending in .npz or .csv")
    return p


def embeddings_bytes(Z: pd.DataFrame, suffix: str) -> bytes:
    """The bytes of ``Z`` written as ``suffix`` (``".npz"`` or ``".csv"``); see the module notes."""
    Z = _check_frame(Z)
    kind = _id_kind(Z.index)
    ids = np.asarray(Z.index.to_numpy(), dtype=str if kind == "str" else kind)
    if suffix == ".npz":
        buf = io.BytesIO()
        np.savez_compressed(buf, ids=ids, embeddings=Z.to_numpy(),
                            columns=np.asarray([str(c) for c in Z.columns], dtype=str),
                            id_name=np.asarray("" if Z.index.name is None else str(Z.index.name)),
                            format=np.asarray(FORMAT))
        return buf.getvalue()
    if suffix != ".csv":
        raise InputError(f"suffix={suffix!r}: expected '.npz' or '.csv'")
    values = Z.to_numpy()
    head = {"id_dtype": kind, "id_name": Z.index.name, "dtype": str(values.dtype)}
    frame = pd.DataFrame(values, index=pd.Index(ids, name="id" if Z.index.name is None else Z.index.name),
                         columns=[str(c) for c in Z.columns])
    return (_CSV_PREFIX + json.dumps(head) + "\n" + frame.to_csv()).encode("utf-8")


def write_embeddings(Z: pd.DataFrame, path) -> Path:
    """Write an embedding frame (indexed by unit id) to ``path`` (.npz or .csv), atomically.

    Parameters
    ----------
    Z : pandas.DataFrame
        One row per unit, indexed by unit id (as :func:`eocausal.embed` returns).
    path : str or path
        File name ending in ``.npz`` or ``.csv``.

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
    return atomic_write_bytes(p, embeddings_bytes(Z, p.suffix.lower()))


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


__all__ = ["read_embeddings", "write_embeddings"]
