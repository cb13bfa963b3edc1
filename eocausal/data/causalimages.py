"""Interop with the causalimages R package: its RData tutorial workspace and its TFRecords.

Neither R nor TensorFlow is needed. :func:`read_causalimages` reads the tutorial workspace
(``CausalImagesTutorialData.RData``) into :class:`~eocausal.data.units.Units` and an
:class:`~eocausal.data.arrays.ArraySource`; :func:`read_tfrecord` reads the image TFRecords
that ``causalimages::WriteTfRecord()`` writes, decoding the protobuf wire format by hand
(:mod:`eocausal.data._protobuf`).

The causalimages package (Connor T. Jerzak and Adel Daoud) is GPL-3; its data are read here,
never copied into this package.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from eocausal.data import _protobuf as pb
from eocausal.data.arrays import ArraySource
from eocausal.data.units import Units
from eocausal.errors import (
    ColumnError,
    DataFileError,
    DataQualityWarning,
    InputError,
    MissingFileError,
)

__all__ = ["CausalImagesData", "TFRecordImages", "read_causalimages", "read_tfrecord"]

#: Names given to the 7 columns of the workspace's ``X`` matrix, in order.
X_COLUMNS = ("X1_W", "xA", "X3_WxA", "xC", "X5_WxC", "xB", "X7_WxB")
#: The pre-treatment covariates among them (binary A, continuous C, binary B).
PRETREATMENT = ("xA", "xC", "xB")
#: Columns that are functions of the treatment W, and the covariate each multiplies.
TREATMENT_DERIVED = {"X1_W": None, "X3_WxA": "xA", "X5_WxC": "xC", "X7_WxB": "xB"}
#: The covariates of the R tutorials, ``X[, -1]`` (columns 2..7).
TUTORIAL = X_COLUMNS[1:]
BANDS = ("red", "green", "blue")

_OBJECTS = ("FullImageArray", "KeysOfImages", "KeysOfObservations", "LongLat", "obsW", "obsY", "X")
_IMPUTE = ("mean", "drop", None)
_MAX_LISTED = 8


@dataclass(frozen=True, eq=False)
class CausalImagesData:
    """The causalimages tutorial data, read by :func:`read_causalimages`.

    Attributes
    ----------
    units : Units
        2082 units (id column ``unit``, 1..2082 in the workspace's row order) with treatment
        ``W``, outcome ``Y``, ``image_key``, ``cluster`` (= ``image_key``), point geometry in
        EPSG:4326 from ``geo_long``/``geo_lat``, the 7 named ``X`` columns, and the selected
        covariates.
    images : ArraySource
        The 327 images, (327, 35, 35, 3) float32 with integer values 0..255, keyed by
        ``KeysOfImages`` (int), bands ``("red", "green", "blue")``.
    notes : tuple of str
        What the reader found and did: column identities, covariates chosen, imputation.
    """

    units: Units
    images: ArraySource
    notes: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class TFRecordImages:
    """Images read from a causalimages TFRecord by :func:`read_tfrecord`.

    Attributes
    ----------
    keys : numpy.ndarray of str
        One key per record, as written (``"199"``).
    images : numpy.ndarray of float32
        (n, H, W, C), or (n, T, H, W, C) for video records.
    index : numpy.ndarray of int64
        The records' ``index`` feature (1..n as causalimages writes it).
    """

    keys: np.ndarray
    images: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def to_source(self, *, key_type: Callable | None = None,
                  bands: Sequence[str] | None = None) -> ArraySource:
        """An :class:`ArraySource` of these images.

        Parameters
        ----------
        key_type : callable, optional
            Applied to each key, e.g. ``int`` to match the integer ``image_key`` column of
            :func:`read_causalimages`' units. Keys stay strings when omitted.
        bands : sequence of str, optional
            Band names (for the tutorial records, ``("red", "green", "blue")``).
        """
        keys = self.keys if key_type is None else np.array([key_type(k) for k in self.keys.tolist()])
        return ArraySource(self.images, keys=keys, bands=bands)


# ============================================================================= RData


def read_causalimages(path: str | PathLike, *, covariates: str | Sequence[str] = "pretreatment",
                      impute: str | None = "mean") -> CausalImagesData:
    """Read the causalimages tutorial workspace (``CausalImagesTutorialData.RData``).

    The workspace holds ``FullImageArray`` (327 images, 35x35 RGB), ``KeysOfImages``,
    ``KeysOfObservations`` (the image of each of 2082 observations), ``LongLat``, the
    treatment ``obsW``, the outcome ``obsY`` and an unnamed 7-column matrix ``X``.

    The columns of ``X`` are named here after what they hold, and the reader checks these
    identities exactly, refusing the file if one fails:

    ========  ==========  =========================================
    column    name        content
    ========  ==========  =========================================
    1         ``X1_W``    ``X1_W == W`` (the treatment itself)
    2         ``xA``      binary covariate A
    3         ``X3_WxA``  ``X3_WxA == W * xA``
    4         ``xC``      continuous covariate C (7 missing values)
    5         ``X5_WxC``  ``X5_WxC == W * xC`` (missing where xC is)
    6         ``xB``      binary covariate B
    7         ``X7_WxB``  ``X7_WxB == W * xB``
    ========  ==========  =========================================

    Columns 1, 3, 5 and 7 are functions of the treatment. Adjusting for them as confounders
    is a bad-control error (they are post-treatment); only ``xA``, ``xC``, ``xB`` are
    pre-treatment covariates. The package's tutorials use ``X[, -1]`` (columns 2..7).

    Parameters
    ----------
    path : str or path-like
        The ``.RData`` file.
    covariates : {"pretreatment", "tutorial", "all"} or sequence of str
        Which X columns become the units' covariates: ``"pretreatment"`` (default) is
        ``("xA", "xC", "xB")``; ``"tutorial"`` is the R tutorials' ``X[, -1]``, columns 2..7,
        three of which are treatment-derived; ``"all"`` is all 7 columns, including ``X1_W``,
        a copy of the treatment (for inspection, not adjustment); or a list of names from
        ``X_COLUMNS``.
    impute : {"mean", "drop", None}
        Missing values of the selected covariates: ``"mean"`` fills each with its column mean
        over all 2082 units and adds the 0/1 indicator ``xC_missing`` to the covariates (one
        indicator serves ``xC`` and ``X5_WxC``, which are missing for the same units), with a
        :class:`~eocausal.errors.DataQualityWarning`; ``"drop"`` drops those units, with the
        same warning; ``None`` raises :class:`~eocausal.errors.InputError` if any is missing.
        Columns not selected are left as read (NaN kept).

    Returns
    -------
    CausalImagesData
        ``units``, ``images`` and ``notes``.

    Raises
    ------
    MissingFileError
        If ``path`` does not exist.
    DataFileError
        If the file is not an R workspace, lacks one of the seven objects, or its objects do
        not have the documented shapes and identities.
    InputError
        For an unknown ``covariates`` mode or name, an unknown ``impute`` policy, or missing
        values with ``impute=None``.

    Warns
    -----
    DataQualityWarning
        When values were imputed or units dropped; the message gives the counts.

    Examples
    --------
    >>> data = read_causalimages("CausalImagesTutorialData.RData")  # doctest: +SKIP
    >>> data.units.covariates  # doctest: +SKIP
    ('xA', 'xC', 'xB', 'xC_missing')
    >>> data.images.chips(data.units.keys()[:4]).shape  # doctest: +SKIP
    (4, 3, 35, 35)
    """
    if impute not in _IMPUTE:
        raise InputError(f"impute: expected 'mean', 'drop' or None, got {impute!r}")
    selected = _resolve_covariates(covariates)
    path = _existing_file(path)
    objs = _load_workspace(path)
    frame, images, keys_img = _tables(objs, path)
    notes = [
        "X columns named by content and checked exactly: X1_W == W, X3_WxA == W*xA, "
        "X5_WxC == W*xC, X7_WxB == W*xB; X1_W, X3_WxA, X5_WxC, X7_WxB are functions of the "
        "treatment, so adjusting for them is a bad-control error",
    ]
    derived = [c for c in selected if c in TREATMENT_DERIVED]
    mode = covariates if isinstance(covariates, str) else "list"
    notes.append(f"covariates ({mode}): {list(selected)}")
    if derived:
        notes.append(
            f"covariates include treatment-derived columns {derived}: estimates adjusted for "
            "them are not causal effects of W; use covariates='pretreatment'"
        )

    frame, selected, done = _handle_missing(frame, selected, impute)
    if done is not None:
        note, message = done
        notes.append(note)
        warnings.warn(message, DataQualityWarning, stacklevel=2)

    units = Units.from_frame(frame, id="unit", treatment="W", outcome="Y", covariates=selected,
                             clusters="cluster", image_key="image_key", lon="geo_long",
                             lat="geo_lat")
    source = ArraySource(images, keys=keys_img, bands=BANDS)
    return CausalImagesData(units=units, images=source, notes=tuple(notes))


def _resolve_covariates(covariates) -> tuple[str, ...]:
    modes = {"pretreatment": PRETREATMENT, "tutorial": TUTORIAL, "all": X_COLUMNS}
    if isinstance(covariates, str):
        if covariates not in modes:
            raise InputError(
                f"covariates: unknown mode {covariates!r}; use 'pretreatment', 'tutorial', 'all' "
                f"or a list of names from {list(X_COLUMNS)}"
            )
        return modes[covariates]
    names = tuple(covariates)
    unknown = [c for c in names if c not in X_COLUMNS]
    if unknown:
        raise ColumnError(
            f"covariates: unknown columns {unknown}; the X columns are {list(X_COLUMNS)}"
        )
    if len(set(names)) != len(names):
        raise InputError(f"covariates: {list(names)} lists a column more than once")
    return names


def _existing_file(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"path: no such file {str(p)!r}")
    if not p.is_file():
        raise DataFileError(f"path: {str(p)!r} is not a file")
    return p


def _load_workspace(path: Path) -> dict:
    import rdata

    head = _decompressed_head(path)
    if not head.startswith((b"RDX2\n", b"RDX3\n")):
        raise DataFileError(
            f"{str(path)!r} is not an R workspace (.RData saved by save()): it starts with "
            f"{head[:8]!r}, not RDX2/RDX3"
        )
    try:
        with warnings.catch_warnings():
            # rdata has no data.table constructor and falls back to data.frame, which is right
            warnings.filterwarnings("ignore", message='Missing constructor for R class "data.table"')
            warnings.filterwarnings("ignore", message="Wrong extension")
            objs = rdata.conversion.convert(rdata.parser.parse_file(path))
    except Exception as exc:  # rdata raises many kinds (EOFError, NotImplementedError, ...)
        raise DataFileError(f"{str(path)!r}: cannot parse the R workspace: {exc}") from exc
    if not isinstance(objs, dict):
        raise DataFileError(f"{str(path)!r}: expected a workspace of named objects")
    missing = [name for name in _OBJECTS if name not in objs]
    if missing:
        raise DataFileError(
            f"{str(path)!r}: missing the objects {missing} of the causalimages tutorial data; "
            f"the file holds {sorted(objs)}"
        )
    return objs


def _decompressed_head(path: Path, n: int = 5) -> bytes:
    with open(path, "rb") as f:
        magic = f.read(6)
    opener = {b"\x1f\x8b": gzip.open, b"BZ": bz2.open, b"\xfd7": lzma.open}.get(magic[:2])
    if opener is None:
        return magic[:n]
    try:
        with opener(path, "rb") as f:
            return f.read(n)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise DataFileError(f"{str(path)!r}: corrupt compressed file: {exc}") from exc


def _array(objs: dict, name: str, ndim: int, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(objs[name])
    except (TypeError, ValueError) as exc:
        raise DataFileError(f"{str(path)!r}: object {name} is not an array: {exc}") from exc
    if arr.ndim != ndim or not np.issubdtype(arr.dtype, np.number):
        raise DataFileError(
            f"{str(path)!r}: object {name} should be a numeric {ndim}-d array, got "
            f"shape {arr.shape} of dtype {arr.dtype}"
        )
    return arr


def _tables(objs: dict, path: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    where = repr(str(path))
    images = _array(objs, "FullImageArray", 4, path)
    keys_img = _array(objs, "KeysOfImages", 1, path).astype(np.int64)
    keys_obs = _array(objs, "KeysOfObservations", 1, path).astype(np.int64)
    w = _array(objs, "obsW", 1, path)
    y = _array(objs, "obsY", 1, path).astype(float)
    # R's NA_real_ is a signalling NaN: quieten it, or arithmetic on it warns "invalid value"
    x = _array(objs, "X", 2, path).astype(float)
    x[np.isnan(x)] = np.nan
    y[np.isnan(y)] = np.nan
    lon, lat = _long_lat(objs["LongLat"], path)
    n = len(w)
    sizes = {"obsY": len(y), "KeysOfObservations": len(keys_obs), "X rows": x.shape[0],
             "LongLat rows": len(lon)}
    bad = {k: v for k, v in sizes.items() if v != n}
    if bad:
        raise DataFileError(f"{where}: obsW has {n} observations but {bad}")
    if x.shape[1] != len(X_COLUMNS):
        raise DataFileError(f"{where}: X has {x.shape[1]} columns, expected {len(X_COLUMNS)}")
    if images.shape[0] != len(keys_img) or images.shape[-1] != len(BANDS):
        raise DataFileError(
            f"{where}: FullImageArray has shape {images.shape}; expected "
            f"({len(keys_img)}, H, W, {len(BANDS)}) for {len(keys_img)} KeysOfImages"
        )
    unknown = np.setdiff1d(keys_obs, keys_img)
    if unknown.size:
        raise DataFileError(
            f"{where}: KeysOfObservations holds keys {unknown[:_MAX_LISTED].tolist()} that are "
            "not in KeysOfImages"
        )
    if np.isnan(w.astype(float)).any() or not np.isin(w, (0, 1)).all():
        raise DataFileError(f"{where}: obsW must be 0/1 without missing values")
    _check_identities(x, w.astype(float), where)
    frame = pd.DataFrame({
        "unit": np.arange(1, n + 1, dtype=np.int64),
        "W": w.astype(np.int64),
        "Y": y,
        "image_key": keys_obs,
        "geo_long": lon,
        "geo_lat": lat,
        "cluster": keys_obs,
    })
    for j, name in enumerate(X_COLUMNS):
        frame[name] = x[:, j]
    return frame, np.ascontiguousarray(images, dtype=np.float32), keys_img


def _long_lat(obj, path: Path) -> tuple[np.ndarray, np.ndarray]:
    cols = ("geo_long", "geo_lat")
    if isinstance(obj, pd.DataFrame) or isinstance(obj, dict):
        have = list(obj.keys()) if isinstance(obj, dict) else list(obj.columns)
        if all(c in have for c in cols):
            return (np.asarray(obj["geo_long"], dtype=float), np.asarray(obj["geo_lat"], dtype=float))
        raise DataFileError(f"{str(path)!r}: LongLat should have columns {list(cols)}, has {have}")
    raise DataFileError(
        f"{str(path)!r}: LongLat should be a data.frame with columns {list(cols)}, "
        f"got {type(obj).__name__}"
    )


def _check_identities(x: np.ndarray, w: np.ndarray, where: str) -> None:
    col = {name: x[:, j] for j, name in enumerate(X_COLUMNS)}
    checks = {"X1_W == W": (col["X1_W"], w)}
    for derived, base in TREATMENT_DERIVED.items():
        if base is not None:
            checks[f"{derived} == W*{base}"] = (col[derived], w * col[base])
    failed = [k for k, (a, b) in checks.items() if not np.array_equal(a, b, equal_nan=True)]
    if failed:
        raise DataFileError(
            f"{where}: the X matrix does not have the structure of the causalimages tutorial "
            f"data: {failed} fail. This reader names the columns by these identities; build "
            "Units yourself from the arrays for other data"
        )


def _handle_missing(frame: pd.DataFrame, selected: tuple[str, ...], impute):
    """Apply the ``impute`` policy to the selected covariates.

    Returns the frame, the covariates (with indicators) and ``(note, warning message)`` or
    None when nothing was changed.
    """
    na = {c: int(frame[c].isna().sum()) for c in selected}
    na = {c: k for c, k in na.items() if k}
    if not na:
        return frame, selected, None
    counts = ", ".join(f"{c}: {k}" for c, k in na.items())
    rows = frame[list(na)].isna().any(axis=1)
    ids = frame.loc[rows, "unit"].tolist()
    if impute is None:
        raise InputError(
            f"covariates: missing values ({counts}) in units {ids[:_MAX_LISTED]}; pass "
            "impute='mean' (mean + missingness indicator) or impute='drop'"
        )
    if impute == "drop":
        frame = frame.loc[~rows].reset_index(drop=True)
        note = (f"impute='drop': dropped {len(ids)} units with missing covariates ({counts}): "
                f"units {ids}; {len(frame)} units remain")
        message = (f"read_causalimages: dropped {len(ids)} of {len(rows)} units with missing "
                   f"covariate values ({counts}); pass impute='mean' to keep them")
        return frame, selected, (note, message)
    frame = frame.copy()
    filled = []
    indicators: list[str] = []
    for c, k in na.items():
        miss = frame[c].isna()
        mean = float(frame[c].mean())
        frame[c] = frame[c].fillna(mean)
        filled.append(f"{c}: {k} values filled with the column mean {mean:.6g}")
        base = TREATMENT_DERIVED.get(c) or c
        ind = f"{base}_missing"
        if ind not in indicators:
            frame[ind] = miss.astype(np.int64)
            indicators.append(ind)
        elif not np.array_equal(frame[ind].to_numpy(), miss.to_numpy(dtype=np.int64)):
            raise DataFileError(f"{c} and {base} are missing for different units")
    covs = selected + tuple(indicators)
    note = (f"impute='mean': {'; '.join(filled)} (units {ids}); missingness indicator "
            f"{indicators} added to the covariates")
    message = (f"read_causalimages: imputed {sum(na.values())} missing covariate values "
               f"({counts}) in {len(ids)} units with column means and added the indicator "
               f"{indicators}; pass impute='drop' to drop these units instead")
    return frame, covs, (note, message)


# ============================================================================= TFRecord

def read_tfrecord(path: str | PathLike) -> TFRecordImages:
    """Read image records written by ``causalimages::WriteTfRecord()``, without TensorFlow.

    Each record is a ``tf.train.Example`` with int64 features ``height``, ``width``,
    ``channels`` (and ``time`` for video records) and ``index``, and bytes features ``key``
    and ``raw_image`` that hold serialized ``tf.TensorProto`` messages: a string key and the
    image (``DT_HALF`` as causalimages writes it; float, double and integer dtypes are read
    too). Both CRC-32C checksums of every record are verified. A gzip-compressed file is
    decompressed first.

    Parameters
    ----------
    path : str or path-like
        The ``.tfrecord`` file.

    Returns
    -------
    TFRecordImages
        ``keys`` (str), ``images`` float32 (n, H, W, C) or (n, T, H, W, C), ``index``
        (int64); ``.to_source(key_type=int)`` gives an :class:`ArraySource` whose keys match
        the ``image_key`` of :func:`read_causalimages`.

    Raises
    ------
    MissingFileError
        If ``path`` does not exist.
    DataFileError
        If a record is truncated, fails its checksum, is not a ``tf.train.Example`` with the
        features above, or has a different shape from the first record; the message names
        the record (0-based).
    """
    path = _existing_file(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataFileError(f"{str(path)!r}: corrupt gzip-compressed TFRecord: {exc}") from exc
    keys: list[str] = []
    images: list[np.ndarray] = []
    index: list[int] = []
    shape = None
    try:
        for i, payload in enumerate(pb.iter_tfrecords(data)):
            key, img, idx = _decode_record(payload)
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise pb.DecodeError(f"image shape {img.shape} differs from record 0's {shape}")
            keys.append(key)
            images.append(img)
            index.append(i + 1 if idx is None else idx)
    except pb.DecodeError as exc:
        msg = str(exc)
        if not msg.startswith("record "):
            msg = f"record {len(keys)}: {msg}"
        raise DataFileError(f"{str(path)!r}: not a valid causalimages TFRecord: {msg}") from exc
    if not keys:
        raise DataFileError(f"{str(path)!r}: the TFRecord holds no records")
    return TFRecordImages(keys=np.array(keys, dtype=str), images=np.stack(images),
                          index=np.array(index, dtype=np.int64))


def _int_feature(feats: dict, name: str, required: bool = True) -> int | None:
    if name not in feats:
        if required:
            raise pb.DecodeError(f"no {name!r} feature; the record has {sorted(feats)}")
        return None
    kind, values = feats[name]
    if kind != "int64" or len(values) != 1:
        raise pb.DecodeError(f"feature {name!r} should be one int64, got {kind} x {len(values)}")
    return int(values[0])


def _tensor_feature(feats: dict, name: str) -> np.ndarray:
    if name not in feats:
        raise pb.DecodeError(f"no {name!r} feature; the record has {sorted(feats)}")
    kind, values = feats[name]
    if kind != "bytes" or len(values) != 1:
        raise pb.DecodeError(f"feature {name!r} should be one serialized tensor (bytes)")
    return pb.decode_tensor(values[0])


def _decode_record(payload) -> tuple[str, np.ndarray, int | None]:
    feats = pb.parse_example(payload)
    if "key" in feats and feats["key"][0] == "int64":
        key = str(_int_feature(feats, "key"))
    else:
        key_t = _tensor_feature(feats, "key")
        if key_t.size != 1 or key_t.dtype != object:
            raise pb.DecodeError(f"feature 'key' should be one string, got {key_t.dtype} {key_t.shape}")
        try:
            key = key_t.reshape(-1)[0].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise pb.DecodeError(f"feature 'key' is not UTF-8 text: {exc}") from None
    dims = [_int_feature(feats, d) for d in ("height", "width", "channels")]
    t = _int_feature(feats, "time", required=False)
    shape = tuple(dims) if t is None else (t, *dims)
    img = _tensor_feature(feats, "raw_image")
    if img.dtype == object:
        raise pb.DecodeError("feature 'raw_image' holds strings, not pixels")
    if img.size != int(np.prod(shape)):
        raise pb.DecodeError(
            f"raw_image has {img.size} values (shape {img.shape}) but the features say {shape}"
        )
    return key, img.reshape(shape).astype(np.float32), _int_feature(feats, "index", required=False)
