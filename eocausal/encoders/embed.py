"""``eocausal.embed``: imagery around each unit -> one embedding row per unit.

Any image source that implements the source protocol works: ``keys_for(units)`` (the chip
key of each unit; units with equal keys share one chip and one embedding), ``load(keys, units)``
(float32 chips for those keys, all-NaN chips for units the source drops) and ``fingerprint()``
(the source's identity, for caches).

How a run proceeds
------------------
1. The distinct chip keys are sorted (``numpy.unique``): a fixed order, cut into shards of
   ``shard_size`` keys.
2. An unfitted encoder is fitted on up to ``fit_sample`` chips drawn with ``seed`` (sorted
   positions, so the same units, seed and source always give the same fitted state).
3. With ``cache_dir``, the run's key (:func:`eocausal.data.cache.cache_key`) covers the
   encoder's :func:`encoder_fingerprint` (its settings and fitted state), the source's
   ``fingerprint()`` (files, chip parameters), the keys, and, for sources that cut chips
   around places (anything but an :class:`~eocausal.data.arrays.ArraySource`), the units'
   geometry as WKB and its CRS;
   each shard's sidecar holds the digest of its own keys. Verified shards are reused; missing,
   damaged or mismatched ones are (re)computed by the executor and written as they finish.
4. The frame is assembled shard by shard into one (n_units, dim) array.

Memory stays flat in the number of chips: one shard of embeddings plus the prefetched
batches of chips, and the output array (n_units x dim, unavoidable when a frame is returned).
"""

from __future__ import annotations

import hashlib
import pathlib
import sys
import warnings

import numpy as np
import pandas as pd

from eocausal.data.arrays import ArraySource
from eocausal.data.cache import EmbeddingCache, keys_digest
from eocausal.data.units import Units
from eocausal.encoders.executors import ShardTask, resolve_executor
from eocausal.errors import CacheWarning, DataQualityWarning, InputError

# RasterSource.load warns per batch about the units it drops; embed warns once, for all.
_SOURCE_DROP_MESSAGE = r"\d+ of \d+ units dropped under on_invalid="


def embed(units: Units, source, encoder, *, cache_dir=None, device: str | None = "auto",
          executor="local", batch_size: int = 256, shard_size: int = 4096, num_workers: int = 2,
          fit_sample: int = 2000, seed: int | None = 0, progress: bool | None = None,
          return_frame: bool = True, out=None):
    """Embed the imagery of each unit, shard by shard, optionally through an on-disk cache.

    Parameters
    ----------
    units : Units
        The study units (their image keys, or places for raster sources).
    source : ArraySource, RasterSource or any object with the source protocol
        Where the chips come from.
    encoder : encoder object
        For example :class:`eocausal.encoders.RandomFeatures`. An unfitted encoder is fitted
        first on up to ``fit_sample`` distinct chips drawn with ``seed`` (invalid, all-NaN
        chips left out). With ``cache_dir`` it needs ``get_params()`` and ``state_hash()``
        (:func:`encoder_fingerprint`), as every eocausal encoder has.
    cache_dir : str or path, optional
        Folder of the content-addressed embedding cache (created if missing). Shards are
        written there as they finish; a later run with the same key reuses every verified
        shard and computes only the others, so an interrupted run resumes. None: nothing is
        written to disk.
    device : str or None
        Overrides the encoder's device ('auto', 'cpu', 'cuda', 'mps'), and that of the encoders
        it wraps (every ``device`` in ``get_params(deep=True)``); None keeps them. With
        ``executor="ray"``, 'auto' puts the encoders on the cluster's GPUs when it has any.
    executor : {'local', 'ray'} or executor object
        'local': reader threads and the encoder in this process
        (:class:`~eocausal.encoders.executors.LocalExecutor`); 'ray': a Ray Data pipeline
        (:class:`~eocausal.encoders.executors.RayExecutor`, extra ``eocausal[ray]``); or an
        instance of either, configured.
    batch_size : int
        Chips read and encoded at a time.
    shard_size : int
        Distinct chips per cache shard. Part of the cache key.
    num_workers : int
        Reader threads of the local executor (0: read in the calling thread).
    fit_sample : int
        Chips used to fit an unfitted encoder.
    seed : int or None
        Seeds the draw of the fitting sample.
    progress : bool or None
        Show a progress bar (tqdm) on stderr. None (default): only when stderr is a terminal,
        so interactive sessions see progress and logs and pipes stay clean; False: never.
    return_frame : bool
        False fills the cache only (``cache_dir`` required) and returns the run's statistics
        instead of a frame, without holding the n_units x dim output in memory.
    out : str or path, optional
        Also write the frame there, atomically (:func:`eocausal.data.embedding_files.write_embeddings`):
        ``.parquet`` gives GeoParquet with the units' places and the encoder's identity (class,
        settings, fitted-state hash) as metadata; ``.npz`` / ``.csv`` as there. The name is
        checked before any work.

    Returns
    -------
    pandas.DataFrame
        Indexed by unit id, columns ``z0000, z0001, ...``, one row per unit with a valid
        chip. ``.attrs["dropped_ids"]`` lists the units left out (their chips were invalid), an
        empty list when none was; :func:`eocausal.estimate` drops those units with a note.
        ``.attrs["embed_stats"]`` holds ``n_shards``, ``reused``, ``computed``, ``recomputed``
        (shards found damaged or mismatched, and computed again), ``rejected`` (their reasons),
        ``cache_dir``, ``cache_key``, ``n_dropped`` and ``dropped_reason``. When
        ``return_frame`` is False, that statistics dict (with ``dropped_ids``) instead.

    Raises
    ------
    InputError
        A bad argument, or a source that does not follow the protocol.
    CacheError
        ``cache_dir`` cannot be created or written to.

    Warns
    -----
    DataQualityWarning
        When units are left out for invalid chips, with their number.
    CacheWarning
        When cached shards were found damaged or mismatched and computed again, with their
        number and reasons.

    Examples
    --------
    >>> Z = eocausal.embed(units, RasterSource("scene.tif", chip_size_m=1000, chip_px=33),   # doctest: +SKIP
    ...                    RandomFeatures(n_features=1024), cache_dir="~/.cache/eocausal")
    """
    _check_args(units, source, batch_size, shard_size, fit_sample, return_frame, cache_dir)
    dest = None
    if out is not None:
        from eocausal._atomic import check_output_file
        from eocausal.data.embedding_files import _check_path

        dest = _check_path(out, "out")
        check_output_file(dest)
        if not return_frame:
            raise InputError("out= writes the returned frame; it needs return_frame=True")
    if progress is None:
        progress = _stderr_is_terminal()
    runner = resolve_executor(executor, num_workers)
    if device is not None:
        _set_device(encoder, device)
    unit_keys = np.asarray(source.keys_for(units))
    if unit_keys.ndim != 1 or len(unit_keys) != units.n:
        raise InputError(f"source.keys_for(units) returned {unit_keys.shape} keys for {units.n} units; "
                         "it must return one chip key per unit")
    uniq, first, inverse = np.unique(unit_keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    bounds = list(range(0, len(uniq), shard_size)) + [len(uniq)]
    shards = [(i, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SOURCE_DROP_MESSAGE, category=DataQualityWarning)
        if not getattr(encoder, "is_fitted", True):
            _fit(encoder, source, units, uniq, fit_sample, seed)
        digests = _shard_digests(units, source, uniq, first, shards)
        out = _Assembly(inverse, len(uniq), return_frame)
        run = None
        if cache_dir is not None:
            fp = encoder_fingerprint(encoder)
            unit_digest = hashlib.sha256("\n".join(digests).encode()).hexdigest()
            run = EmbeddingCache(cache_dir).open_run(fp, _source_fingerprint(source), unit_digest,
                                                     shard_size=shard_size, n_shards=len(shards))
        tasks = []
        for i, lo, hi in shards:
            values = run.load_shard(i, digests[i]) if run is not None else None
            if values is None:
                tasks.append(ShardTask(i, uniq[lo:hi]))
            else:
                out.place(lo, values)

        def sink(i: int, values: np.ndarray) -> None:
            lo, hi = bounds[i], bounds[i + 1]
            if values.shape[0] != hi - lo:
                raise InputError(f"encoder returned {values.shape[0]} rows for the {hi - lo} chips of shard {i}")
            if run is not None:
                run.write_shard(i, values, uniq[lo:hi], digests[i])
            out.place(lo, values)

        runner.run(tasks, source=source, units=units, encoder=encoder, batch_size=batch_size,
                   sink=sink, device=device, progress=progress)

    dropped = out.dropped_units()
    ids = units.ids
    reason = _dropped_reason(source)
    stats = {"n_shards": len(shards), "reused": len(shards) - len(tasks), "computed": len(tasks),
             "recomputed": run.counts["rejected"] if run is not None else 0,
             "rejected": list(run.rejected) if run is not None else [],
             "cache_dir": None if run is None else str(run.cache.root),
             "cache_key": None if run is None else run.key, "n_dropped": int(dropped.sum()),
             "dropped_reason": reason if dropped.any() else None}
    if run is not None and run.rejected:
        why = "; ".join(f"shard {i}: {r}" for i, r in run.rejected[:5])
        more = f" and {len(run.rejected) - 5} more" if len(run.rejected) > 5 else ""
        warnings.warn(
            f"{len(run.rejected)} of {len(shards)} cached embedding shards in {str(run.dir)!r} were "
            f"rejected and computed again ({why}{more}). The cache was damaged or written by another "
            "run; the embeddings returned are recomputed, not read from those shards",
            CacheWarning, stacklevel=2)
    if dropped.any():
        warnings.warn(
            f"{int(dropped.sum())} of {units.n} units have no embedding and are left out ({reason}), "
            f"e.g. ids {ids[dropped][:5].tolist()}. Their ids are in the result's .attrs['dropped_ids'] "
            "and estimate() drops them with a note. To keep them, pass the source a lower min_valid=, "
            "valid='any-band' (a pixel counts when any band holds data) or on_invalid='keep' (in a "
            "study file: [imagery] min_valid, valid, on_invalid)",
            DataQualityWarning, stacklevel=2)
    if not return_frame:
        return {**stats, "dropped_ids": ids[dropped].tolist()}
    Z = out.values if not dropped.any() else out.values[~dropped]
    cols = [f"z{j:04d}" for j in range(Z.shape[1])]
    frame = pd.DataFrame(Z, index=pd.Index(ids[~dropped], name=units.frame.index.name),
                         columns=cols, copy=False)
    frame.attrs["dropped_ids"] = ids[dropped].tolist()
    frame.attrs["embed_stats"] = stats
    try:
        frame.attrs["provenance"] = {"encoder": encoder_fingerprint(encoder)}
    except InputError:  # an encoder without get_params / state_hash: its class only
        frame.attrs["provenance"] = {"encoder": {"class": _class_name(encoder)}}
    imagery = getattr(source, "provenance", None)  # a STAC source: its items, dates, bands
    if isinstance(imagery, dict):
        frame.attrs["provenance"]["imagery"] = dict(imagery)
    if dest is not None:
        from eocausal.data.embedding_files import write_embeddings

        write_embeddings(frame, dest, units=units if units.has_place else None)
    return frame


class _Assembly:
    """Scatters each shard's rows (one per distinct key) into the (n_units, dim) output."""

    def __init__(self, inverse: np.ndarray, n_keys: int, keep_values: bool):
        self.inverse = inverse
        self.order = np.argsort(inverse, kind="stable")
        self.sorted_keys = inverse[self.order]
        self.bad_keys = np.zeros(n_keys, dtype=bool)
        self.keep_values = keep_values
        self.values: np.ndarray | None = None

    def place(self, lo: int, values: np.ndarray) -> None:
        hi = lo + len(values)
        self.bad_keys[lo:hi] = ~np.isfinite(values).all(axis=1)
        if not self.keep_values:
            return
        if self.values is None:
            self.values = np.empty((len(self.inverse), values.shape[1]), dtype=values.dtype)
        a, b = np.searchsorted(self.sorted_keys, [lo, hi])
        pos = self.order[a:b]
        self.values[pos] = values[self.inverse[pos] - lo]

    def dropped_units(self) -> np.ndarray:
        return self.bad_keys[self.inverse]


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _dropped_reason(source) -> str:
    """Why the source drops units, from its policy settings where it has them."""
    parts = [f"{k}={getattr(source, k)!r}" for k in ("min_valid", "on_invalid", "valid") if hasattr(source, k)]
    policy = f" ({', '.join(parts)})" if parts else ""
    return ("their chips are invalid: off the imagery, or too few valid pixels under the source's "
            f"policy{policy}; or the encoder returned non-finite values")


def _check_args(units, source, batch_size, shard_size, fit_sample, return_frame, cache_dir) -> None:
    if not isinstance(units, Units):
        raise InputError(f"units: expected eocausal Units, got {type(units).__name__}")
    if units.n == 0:
        raise InputError("units: no units to embed (0 rows); check the filter or the file that built them")
    for attr in ("keys_for", "load", "fingerprint"):
        if not callable(getattr(source, attr, None)):
            raise InputError(f"source: {type(source).__name__} lacks {attr}(); pass an ArraySource or RasterSource")
    for name, v in (("batch_size", batch_size), ("shard_size", shard_size), ("fit_sample", fit_sample)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name}={v!r}: must be a whole number, at least 1")
    if not return_frame and cache_dir is None:
        raise InputError("return_frame=False keeps the embeddings only in the cache; pass cache_dir= too")


def _fit(encoder, source, units, uniq, fit_sample: int, seed) -> None:
    """Fit on a seeded sample of distinct chips, in sorted key order, invalid chips left out."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(uniq), size=min(fit_sample, len(uniq)), replace=False))
    chips = np.asarray(source.load(uniq[pick], units))
    ok = np.isfinite(chips.reshape(len(chips), -1)).all(axis=1)
    if not ok.any():
        raise InputError(f"encoder: none of the {len(chips)} chips drawn to fit it is valid (all are "
                         "NaN: the source dropped those units); check that the units fall on the imagery")
    encoder.fit(chips if ok.all() else chips[ok])


def _shard_digests(units: Units, source, uniq, first, shards) -> list[str]:
    """Digest of each shard's keys, plus the units' WKB and CRS for place-based sources."""
    wkb = crs = None
    if units.has_place and not isinstance(source, ArraySource):
        import shapely

        wkb = shapely.to_wkb(units.geometry.to_numpy()[first])
        crs = units.crs.to_wkt()
    return [keys_digest(uniq[lo:hi], None if wkb is None else wkb[lo:hi], crs) for _, lo, hi in shards]


def _set_device(encoder, device) -> None:
    """Set ``device`` on the encoder and on every encoder it wraps."""
    if callable(getattr(encoder, "get_params", None)) and callable(getattr(encoder, "set_params", None)):
        names = [k for k in encoder.get_params(deep=True) if k == "device" or k.endswith("__device")]
        if names:
            encoder.set_params(**dict.fromkeys(names, device))
    elif hasattr(encoder, "device"):
        encoder.device = device


def encoder_fingerprint(encoder) -> dict:
    """What identifies an encoder's output: its class, the settings that matter, its fitted state.

    The embedding cache's key covers this (with the image source and the units), and the
    study manifest records it. Settings are read from ``get_params(deep=True)``, so an
    encoder wrapped in another (``TemporalPool(RandomFeatures(...))``, a ``backbone``) enters
    with its own settings as ``encoder__n_features``, ...; every setting is kept except those
    its class names in ``_output_invariant_params`` (device, batch size, ...: how the
    features are computed, not what they are). So a new constructor argument enters the key
    unless it is declared invariant.

    Parameters
    ----------
    encoder : fitted encoder
        An eocausal encoder, or any scikit-learn-style estimator with ``get_params()`` and a
        ``state_hash()`` of its fitted state.

    Returns
    -------
    dict
        JSON-serialisable: ``class`` (module and name), ``params`` (name -> value; a wrapped
        encoder's entry is its class), ``precision`` (where a setting such as ``amp`` makes
        the arithmetic precision depend on the device: the one in effect, e.g.
        ``{"precision": "bfloat16"}``; else empty) and ``state`` (``state_hash()``).

    Raises
    ------
    InputError
        The encoder lacks ``get_params()`` or ``state_hash()``, or a setting has no stable
        text form (an arbitrary object).
    NotFittedError
        The encoder is not fitted yet.
    """
    missing = [m for m in ("get_params", "state_hash") if not callable(getattr(encoder, m, None))]
    if missing:
        raise InputError(f"encoder: {type(encoder).__name__} lacks {', '.join(m + '()' for m in missing)}, "
                         "which the cache key needs; subclass sklearn.base.BaseEstimator and add "
                         "state_hash() (as eocausal's encoders do), or pass cache_dir=None")
    params: dict = {}
    precision: dict = {}
    _collect(encoder, "", params, precision)
    return {"class": _class_name(encoder), "params": params, "precision": precision,
            "state": encoder.state_hash()}


def _class_name(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _is_estimator(value) -> bool:
    return callable(getattr(value, "get_params", None)) and not isinstance(value, type)


def _collect(est, prefix: str, params: dict, precision: dict) -> None:
    """Flatten ``est``'s settings as get_params(deep=True) names them, less the invariant ones."""
    invariant = set(getattr(type(est), "_output_invariant_params", ()))
    prec = est._key_precision() if callable(getattr(est, "_key_precision", None)) else None
    if prec is not None:
        precision[f"{prefix}precision"] = prec
    for name, value in sorted(est.get_params(deep=False).items()):
        if name in invariant:
            continue
        if _is_estimator(value):
            params[prefix + name] = _class_name(value)
            _collect(value, f"{prefix}{name}__", params, precision)
        else:
            params[prefix + name] = _plain(value, prefix + name)


def _plain(value, name: str):
    """A JSON value for one setting; refuses objects whose text form would not identify them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, name) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    raise InputError(f"encoder setting {name}={value!r}: a {type(value).__name__} cannot be part of the "
                     "embedding-cache key; pass a plain value (number, text, list) or an estimator "
                     "with get_params(), or use cache_dir=None")


def _source_fingerprint(source) -> dict:
    fp = source.fingerprint()
    if not isinstance(fp, dict):
        raise InputError(f"source: fingerprint() returned {type(fp).__name__}; it must return a dict")
    return fp
