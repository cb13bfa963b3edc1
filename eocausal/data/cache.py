"""A content-addressed store of embedding shards on disk: :class:`EmbeddingCache`.

Layout
------
One folder per run, named by its key (:func:`cache_key`), under the cache root::

    root/<key>/meta.json            key material, shard size, number of shards, dim, dtype
    root/<key>/shard-00000.npy      rows of shard 0 (numpy .npy, float)
    root/<key>/shard-00000.json     sidecar: sha256 of the .npy bytes, the keys it covers
                                    and their digest, its shape and dtype

The key is the sha256 of everything that decides the embeddings: the encoder's fingerprint
(:func:`eocausal.encoders.embed.encoder_fingerprint`: its class, every setting except those it
declares unable to change the output, and its fitted state), the image source's identity (files, chip parameters), the digest of the
chip keys (and, for sources that cut chips around places, the units' geometry) and the shard
size. Change any of them and the run gets a new folder; nothing is ever overwritten with
different content under the same key.

Writes are atomic (temporary file, fsync, rename), the ``.npy`` first and its sidecar last,
so a shard counts only once its sidecar exists and matches: a run killed mid-write leaves at
worst a hidden ``.tmp`` file or an ``.npy`` without a sidecar, both ignored (and overwritten)
by the next run. There are no locks: each shard has a single writer per run, and a rename is
atomic, so two runs on one key at worst compute a shard twice and write identical bytes.

Reading verifies before use: :meth:`EmbeddingCache.load_shard` returns None for a shard that
is missing, truncated, fails its checksum, covers other keys, or belongs to another run, and
records why in :attr:`EmbeddingCache.rejected`. Bad data are never returned.

This module is numpy, json and hashlib only (layer 2: no torch).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from eocausal._atomic import atomic_write_bytes
from eocausal.errors import CacheError, InputError

CACHE_FORMAT = 2  # changes when the layout or the key material changes (2: encoder fingerprint from get_params)
_SHARD = "shard-{:05d}"


# ----------------------------------------------------------------------------- digests
def _canonical(key) -> str:
    """A process-independent text form of one chip key (numpy scalars as Python values)."""
    if isinstance(key, np.generic):
        key = key.item()
    return f"{type(key).__name__}:{key!r}"


def keys_digest(keys: Iterable, geometry_wkb: Sequence[bytes] | None = None,
                crs: str | None = None) -> str:
    """sha256 of a sequence of chip keys, in order, and optionally of their places.

    Parameters
    ----------
    keys : iterable
        Chip keys (str, int, ...; numpy scalars count as their Python values).
    geometry_wkb : sequence of bytes, optional
        The WKB of the geometry each key's chip is cut around (one per key), for sources
        whose chips depend on the units' places: moving a unit then changes the digest.
    crs : str, optional
        The CRS of those geometries (WKB carries none).

    Returns
    -------
    str
        Hex digest.
    """
    h = hashlib.sha256()
    keys = list(keys)
    h.update(f"keys:{len(keys)}\n".encode())
    h.update("\n".join(_canonical(k) for k in keys).encode("utf-8"))
    if geometry_wkb is not None:
        if len(geometry_wkb) != len(keys):
            raise InputError(f"geometry_wkb: {len(geometry_wkb)} geometries for {len(keys)} keys; "
                             "pass one geometry per key, in the keys' order")
        h.update(f"\ngeometry:{crs}\n".encode())
        for wkb in geometry_wkb:
            h.update(len(wkb).to_bytes(8, "little"))
            h.update(wkb)
    return h.hexdigest()


def cache_key(encoder_fingerprint: dict, source_fingerprint: dict, unit_keys_digest: str,
              shard_size: int) -> str:
    """The run key: sha256 of the key material (see :func:`key_material`)."""
    material = key_material(encoder_fingerprint, source_fingerprint, unit_keys_digest, shard_size)
    return hashlib.sha256(_dumps(material).encode("utf-8")).hexdigest()


def key_material(encoder_fingerprint: dict, source_fingerprint: dict, unit_keys_digest: str,
                 shard_size: int) -> dict:
    """Everything the run key covers, as one JSON-able dict (stored in ``meta.json``)."""
    return {"format": CACHE_FORMAT, "encoder": encoder_fingerprint, "source": source_fingerprint,
            "units": unit_keys_digest, "shard_size": int(shard_size)}


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def _jsonable_key(key):
    if isinstance(key, np.generic):
        key = key.item()
    return key if isinstance(key, (str, int, float, bool)) or key is None else repr(key)


# ----------------------------------------------------------------------------- the store
class EmbeddingCache:
    """Embedding shards under ``root``, one folder per run key.

    Parameters
    ----------
    root : str or path
        The cache folder; created if missing. It must be writable.

    Raises
    ------
    CacheError
        If ``root`` cannot be created or written to (the message names the folder).

    Examples
    --------
    >>> cache = EmbeddingCache(tmp)                                        # doctest: +SKIP
    >>> run = cache.open_run(enc_fp, src_fp, digest, shard_size=4096, n_shards=3)
    >>> run.write_shard(0, Z0, keys0, digest0)
    >>> run.load_shard(0, digest0)                                         # Z0, verified
    """

    def __init__(self, root):
        self.root = Path(root).expanduser()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise CacheError(
                f"cache_dir {str(self.root)!r} cannot be created or written to ({exc.strerror or exc}); "
                "pass a writable folder as cache_dir=, or cache_dir=None to keep embeddings in memory"
            ) from exc

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r})"

    def open_run(self, encoder_fingerprint: dict, source_fingerprint: dict, unit_keys_digest: str,
                 *, shard_size: int, n_shards: int) -> "CacheRun":
        """Create (or reopen) the folder of the run with this key material.

        ``meta.json`` is written atomically when absent, or when it does not hold this key
        material (a damaged file); shards are verified one by one on reading anyway.
        """
        material = json.loads(_dumps(key_material(encoder_fingerprint, source_fingerprint,
                                                  unit_keys_digest, shard_size)))
        key = hashlib.sha256(_dumps(material).encode("utf-8")).hexdigest()
        run = CacheRun(self, key)
        old = run.read_meta()
        if old is None or old.get("key") != key or old.get("material") != material:
            run._write(run.dir / "meta.json", _dumps({
                "key": key, "material": material, "shard_size": int(shard_size),
                "n_shards": int(n_shards), "dim": None, "dtype": None}).encode("utf-8"))
        return run


class CacheRun:
    """The shards of one run (one key) in an :class:`EmbeddingCache`.

    Attributes
    ----------
    key : str
        The run key (:func:`cache_key`).
    dir : pathlib.Path
        ``root/<key>``.
    counts : dict
        ``{"hit", "missing", "rejected", "written"}``: shards found valid, absent, present but
        refused, and written through this object.
    rejected : list of (shard, reason)
        The shards refused by :meth:`load_shard` and why ("checksum mismatch", ...).
    """

    def __init__(self, cache: EmbeddingCache, key: str):
        self.cache = cache
        self.key = key
        self.dir = cache.root / key
        self.counts = {"hit": 0, "missing": 0, "rejected": 0, "written": 0}
        self.rejected: list[tuple[int, str]] = []

    def __repr__(self) -> str:
        return f"CacheRun({str(self.dir)!r})"

    def read_meta(self) -> dict | None:
        """The run's ``meta.json``, or None when it is missing or unreadable."""
        try:
            return json.loads((self.dir / "meta.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def shard_paths(self, index: int) -> tuple[Path, Path]:
        """(``.npy``, sidecar ``.json``) paths of shard ``index``."""
        stem = _SHARD.format(index)
        return self.dir / f"{stem}.npy", self.dir / f"{stem}.json"

    def write_shard(self, index: int, values: np.ndarray, keys: Sequence, keys_digest: str) -> None:
        """Write shard ``index``: the ``.npy`` atomically, then its sidecar atomically.

        Parameters
        ----------
        index : int
            Shard number.
        values : numpy.ndarray (n, dim)
            The shard's embedding rows, one per key, in the order of ``keys``.
        keys : sequence
            The chip keys the rows belong to (stored in the sidecar, for people).
        keys_digest : str
            Their digest (:func:`keys_digest`), checked again by :meth:`load_shard`.
        """
        values = np.ascontiguousarray(values)
        if values.ndim != 2 or len(values) != len(keys):
            raise InputError(f"values: shard {index} expects ({len(keys)}, dim) values (one row per key), "
                             f"got shape {values.shape}")
        buf = io.BytesIO()
        np.save(buf, values, allow_pickle=False)
        data = buf.getvalue()
        del buf
        npy, side = self.shard_paths(index)
        sidecar = {"key": self.key, "shard": int(index), "n_rows": int(values.shape[0]),
                   "dim": int(values.shape[1]), "dtype": values.dtype.str,
                   "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                   "keys_digest": keys_digest, "keys": [_jsonable_key(k) for k in keys]}
        self._write(npy, data)
        self._write(side, _dumps(sidecar).encode("utf-8"))
        self.counts["written"] += 1
        meta = self.read_meta()
        if meta is not None and (meta.get("dim"), meta.get("dtype")) != (sidecar["dim"], sidecar["dtype"]):
            meta.update(dim=sidecar["dim"], dtype=sidecar["dtype"])
            self._write(self.dir / "meta.json", _dumps(meta).encode("utf-8"))

    def load_shard(self, index: int, expected_keys_digest: str) -> np.ndarray | None:
        """Shard ``index`` if it is present and verified, else None.

        Verified means: the sidecar parses and names this run and shard, its keys digest
        equals ``expected_keys_digest``, the ``.npy`` bytes have the recorded length and
        sha256, and they decode to the recorded shape and dtype. A failure is counted in
        :attr:`counts` and explained in :attr:`rejected`; no warning is issued (the caller
        recomputes the shard).
        """
        npy, side = self.shard_paths(index)
        if not side.exists():
            self.counts["missing"] += 1
            return None
        reason = meta = data = None
        try:
            meta = json.loads(side.read_text("utf-8"))
            data = npy.read_bytes()
        except FileNotFoundError:
            reason = "sidecar without its .npy"
        except (OSError, ValueError) as exc:
            reason = f"unreadable ({exc.__class__.__name__})"
        if reason is None:
            reason = _check(meta, data, self.key, index, expected_keys_digest)
        values = None
        if reason is None:
            try:
                values = np.load(io.BytesIO(data), allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                reason = f"not a .npy array ({exc.__class__.__name__})"
            else:
                if values.shape != (meta["n_rows"], meta["dim"]) or values.dtype.str != meta["dtype"]:
                    reason = f"shape {values.shape} {values.dtype.str} differs from its sidecar"
        if reason is not None:
            self.counts["rejected"] += 1
            self.rejected.append((int(index), reason))
            return None
        self.counts["hit"] += 1
        return values

    def _write(self, path: Path, data: bytes) -> None:
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise CacheError(
                f"cache_dir {str(self.cache.root)!r}: cannot write {path.name} in {str(path.parent)!r} "
                f"({exc.strerror or exc}); free disk space or pass another writable cache_dir="
            ) from exc


def _check(meta, data: bytes, key: str, index: int, expected: str) -> str | None:
    """Why a shard's sidecar and bytes do not match this run and keys, or None if they do."""
    if not isinstance(meta, dict):
        return "sidecar is not a JSON object"
    need = ("key", "shard", "n_rows", "dim", "dtype", "sha256", "bytes", "keys_digest")
    if any(k not in meta for k in need):
        return "sidecar lacks fields"
    if meta["key"] != key or meta["shard"] != index:
        return f"sidecar belongs to run {str(meta['key'])[:12]}, shard {meta['shard']}"
    if meta["keys_digest"] != expected:
        return "covers other keys (keys digest differs)"
    if len(data) != meta["bytes"]:
        return f"truncated or grown ({len(data)} bytes, sidecar says {meta['bytes']})"
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        return "checksum mismatch"
    return None


__all__ = ["CACHE_FORMAT", "CacheRun", "EmbeddingCache", "cache_key", "key_material", "keys_digest"]
