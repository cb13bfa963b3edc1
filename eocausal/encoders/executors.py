"""Executors for :func:`eocausal.embed`: who reads the chips and runs the encoder.

An executor receives the shards still to compute (:class:`ShardTask`: a shard number and its
chip keys, in order) and hands each finished shard, as an (n_keys, dim) array, to a ``sink``
callable; :func:`eocausal.embed` owns the cache and writes what the sink receives. So every
executor fills the same content-addressed cache, and whichever executor computed a shard,
later runs reuse it.

* :class:`LocalExecutor` (``executor="local"``): one process. A thread pool of
  ``num_workers`` readers calls ``source.load`` for the next batches while the current batch
  is encoded (GDAL releases the GIL during raster reads); the encoder runs in the calling
  thread, on the GPU when the encoder's device says so. Only the shard being filled and the
  prefetched batches are in memory.
* :class:`RayExecutor` (``executor="ray"``, extra ``eocausal[ray]``): the same encoder as a
  Ray Data pipeline over batches of the shards: ``from_items`` (batch descriptors) ->
  ``map_batches`` reader actors on CPUs -> ``map_batches`` encoder actors, one GPU each when
  the cluster has GPUs. The driver collects the rows of each shard and passes whole shards
  to the sink, so the cache is written by the driver only (one writer, on the driver's
  disk); the workers never touch it.

A chip that is not finite (a unit the source dropped under its invalid-unit policy comes
back all NaN) is not given to the encoder; its embedding row is NaN.
"""

from __future__ import annotations

import pickle
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from eocausal.errors import CacheError, InputError, require

Sink = Callable[[int, np.ndarray], None]


@dataclass(frozen=True)
class ShardTask:
    """One shard to compute: its number and its chip keys, in the cache's order."""

    index: int
    keys: np.ndarray


class ChipEncoder:
    """Calls ``encoder.transform`` on the finite chips of a batch; NaN rows for the others.

    Parameters
    ----------
    encoder : fitted encoder
        Anything with ``transform(chips) -> (n, dim)``.
    """

    def __init__(self, encoder):
        self.encoder = encoder
        self.dim: int | None = None

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips)
        ok = np.isfinite(chips.reshape(len(chips), -1)).all(axis=1)
        if ok.all():
            z = np.asarray(self.encoder.transform(chips))
            self.dim = z.shape[1]
            return z
        if ok.any():
            z = np.asarray(self.encoder.transform(chips[ok]))
            self.dim = z.shape[1]
            out = np.full((len(chips), self.dim), np.nan, dtype=z.dtype)
            out[ok] = z
            return out
        if self.dim is None:  # no valid chip seen yet: learn the width on one blank chip
            self.dim = np.asarray(self.encoder.transform(np.zeros_like(chips[:1]))).shape[1]
        return np.full((len(chips), self.dim), np.nan, dtype=np.float32)


def _batches(tasks: Sequence[ShardTask], batch_size: int) -> list[tuple[int, int, int]]:
    """(shard number, first row, end row) of every batch, in order."""
    return [(t.index, lo, min(lo + batch_size, len(t.keys)))
            for t in tasks for lo in range(0, len(t.keys), batch_size)]


def _bar(total: int, enabled: bool, unit: str):
    if not enabled:
        return None
    import sys

    from tqdm.auto import tqdm

    # leave=True: the finished bar ends with a newline, so the next log line starts on its own line
    return tqdm(total=total, desc="embedding", unit=unit, leave=True, file=sys.stderr)


class LocalExecutor:
    """Read with a thread pool, encode in this process (CPU or GPU).

    Parameters
    ----------
    num_workers : int
        Reader threads prefetching the next batches while one is encoded. 0 reads in the
        calling thread (for sources whose ``load`` is not thread-safe).
    """

    def __init__(self, *, num_workers: int = 2):
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise InputError(f"num_workers={num_workers!r}: expected a whole number >= 0 (0: no reader threads)")
        self.num_workers = int(num_workers)

    def __repr__(self) -> str:
        return f"LocalExecutor(num_workers={self.num_workers})"

    def run(self, tasks: Sequence[ShardTask], *, source, units, encoder, batch_size: int,
            sink: Sink, device=None, progress: bool = False) -> None:
        """Compute ``tasks`` and pass each finished shard to ``sink(index, values)``.

        ``device`` is ignored: :func:`eocausal.embed` has already set the encoder's device.
        """
        keys = {t.index: t.keys for t in tasks}
        jobs = _batches(tasks, batch_size)
        left = {t.index: len(t.keys) for t in tasks}
        parts: dict[int, list[np.ndarray]] = {t.index: [] for t in tasks}
        encode = ChipEncoder(encoder)
        bar = _bar(len(jobs), progress, "batch")

        def load(job):
            shard, lo, hi = job
            return source.load(keys[shard][lo:hi], units)

        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="eocausal-read") if self.num_workers else None
        pending: deque = deque()
        try:
            for j, job in enumerate(jobs):
                if pool is None:
                    chips = load(job)
                else:
                    while len(pending) < self.num_workers + 1 and j + len(pending) < len(jobs):
                        pending.append(pool.submit(load, jobs[j + len(pending)]))
                    chips = pending.popleft().result()
                shard, lo, hi = job
                _check_chips(chips, hi - lo, shard)
                parts[shard].append(encode(chips))
                del chips
                left[shard] -= hi - lo
                if left[shard] == 0:
                    values = np.concatenate(parts.pop(shard), axis=0)
                    sink(shard, values)
                    del values
                if bar is not None:
                    bar.update(1)
        finally:
            if pool is not None:
                for f in pending:
                    f.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()


def _check_chips(chips, n: int, shard: int) -> None:
    if not isinstance(chips, np.ndarray) or chips.ndim < 2 or len(chips) != n:
        shape = getattr(chips, "shape", type(chips).__name__)
        raise InputError(
            f"source.load returned {shape} for {n} keys of shard {shard}; load(keys, units) must "
            "return one chip per key, with all-NaN chips for units it drops (see RasterSource.load)"
        )


# ----------------------------------------------------------------------------- Ray
class _ReadStage:
    """Ray Data reader actor: a batch descriptor -> the chips of its keys."""

    def __init__(self, shared: list):
        import ray

        self.source, self.units, self.keys = ray.get(shared[0])

    def __call__(self, batch: dict) -> dict:
        shards, rows, chips = [], [], []
        for shard, lo, hi in zip(batch["shard"], batch["lo"], batch["hi"]):
            shard, lo, hi = int(shard), int(lo), int(hi)
            x = self.source.load(self.keys[shard][lo:hi], self.units)
            _check_chips(x, hi - lo, shard)
            chips.append(np.ascontiguousarray(x, dtype=np.float32))
            shards.append(np.full(hi - lo, shard, np.int64))
            rows.append(np.arange(lo, hi, dtype=np.int64))
        return {"shard": np.concatenate(shards), "row": np.concatenate(rows),
                "chips": np.concatenate(chips)}


class _EncodeStage:
    """Ray Data encoder actor: holds one copy of the fitted encoder, on its GPU if it has one."""

    def __init__(self, shared: list, state_hash: str | None):
        import ray

        # the encoder keeps the device embed() gave it: with 'auto' it takes this actor's GPU
        # when Ray assigned one (CUDA_VISIBLE_DEVICES), else the CPU
        encoder = pickle.loads(ray.get(shared[0]))
        if state_hash is not None and encoder.state_hash() != state_hash:
            raise CacheError("executor='ray': the encoder arrived at a worker with another fitted state "
                             "than the driver's; check that its pickling keeps every fitted attribute")
        self.encode = ChipEncoder(encoder)

    def __call__(self, batch: dict) -> dict:
        return {"shard": batch["shard"], "row": batch["row"], "z": self.encode(batch["chips"])}


class RayExecutor:
    """Run the encoder as a Ray Data ``map_batches`` stage (CPU readers, GPU encoders).

    Uses the Ray instance this process is connected to (call ``ray.init(address=...)`` for a
    cluster); without one, Ray Data starts a local instance. The fitted encoder is shipped to
    the encoder actors once, pickled on the CPU (its fitted arrays, not a GPU module), and each
    actor checks that its copy has the driver's ``state_hash()``.

    Parameters
    ----------
    concurrency : int, optional
        Encoder actors (default: the cluster's GPUs when it has any, else 1).
    read_concurrency : int
        Reader actors (each holds the source, so raster handles stay open between batches).
    num_gpus : float, optional
        GPUs per encoder actor (default: 1 when the cluster has GPUs and ``device`` is not
        ``"cpu"``, else 0 and one CPU).
    num_cpus_read : float
        CPUs per reader actor.
    """

    def __init__(self, *, concurrency: int | None = None, read_concurrency: int = 1,
                 num_gpus: float | None = None, num_cpus_read: float = 1.0):
        for name, v in (("concurrency", concurrency), ("read_concurrency", read_concurrency)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise InputError(f"{name}={v!r}: expected a whole number of actors >= 1")
        self.concurrency = concurrency
        self.read_concurrency = int(read_concurrency)
        self.num_gpus = num_gpus
        self.num_cpus_read = num_cpus_read

    def __repr__(self) -> str:
        return (f"RayExecutor(concurrency={self.concurrency}, read_concurrency={self.read_concurrency}, "
                f"num_gpus={self.num_gpus})")

    def run(self, tasks: Sequence[ShardTask], *, source, units, encoder, batch_size: int,
            sink: Sink, device=None, progress: bool = False) -> None:
        """Compute ``tasks`` on Ray; the driver passes each finished shard to ``sink``."""
        ray = require("ray", extra="ray", purpose="executor='ray'")
        require("ray.data", extra="ray", purpose="executor='ray'")
        if not tasks:
            return
        if not ray.is_initialized():
            ray.init()
        gpus = ray.cluster_resources().get("GPU", 0)
        num_gpus = self.num_gpus if self.num_gpus is not None else (1 if gpus and device != "cpu" else 0)
        concurrency = self.concurrency or (max(1, int(gpus)) if num_gpus else 1)
        encode_res = {"num_gpus": num_gpus} if num_gpus else {"num_cpus": 1}
        state_hash = encoder.state_hash() if callable(getattr(encoder, "state_hash", None)) else None
        keys = {t.index: t.keys for t in tasks}
        need = {t.index: len(t.keys) for t in tasks}
        items = [{"shard": s, "lo": lo, "hi": hi} for s, lo, hi in _batches(tasks, batch_size)]

        ctx = ray.data.DataContext.get_current()
        old_bars = ctx.enable_progress_bars
        ctx.enable_progress_bars = bool(progress)
        try:
            # the source and the encoder go to the object store once; actors get them by reference
            # (inside a list, so Ray passes the reference rather than the object)
            inputs = [ray.put((source, units, keys))]
            state = [ray.put(pickle.dumps(encoder))]
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(_ReadStage, batch_size=1, num_cpus=self.num_cpus_read,
                                compute=ray.data.ActorPoolStrategy(size=self.read_concurrency),
                                fn_constructor_kwargs={"shared": inputs})
            ds = ds.map_batches(_EncodeStage, batch_size=batch_size,
                                compute=ray.data.ActorPoolStrategy(size=concurrency),
                                fn_constructor_kwargs={"shared": state, "state_hash": state_hash},
                                **encode_res)
            filling: dict[int, np.ndarray] = {}
            for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                z = out["z"]
                for shard in np.unique(out["shard"]):
                    sel = out["shard"] == shard
                    buf = filling.get(int(shard))
                    if buf is None:
                        buf = filling[int(shard)] = np.empty((len(keys[int(shard)]), z.shape[1]), z.dtype)
                    buf[out["row"][sel]] = z[sel]
                    need[int(shard)] -= int(sel.sum())
                    if need[int(shard)] == 0:
                        sink(int(shard), filling.pop(int(shard)))
        finally:
            ctx.enable_progress_bars = old_bars
        if filling or any(need.values()):
            raise CacheError(f"executor='ray': shards {sorted(k for k, v in need.items() if v)} came back "
                             "incomplete from the Ray pipeline; rerun (finished shards are cached)")


def resolve_executor(executor, num_workers: int):
    """``"local"``, ``"ray"`` or an executor object -> an executor object."""
    if executor == "local":
        return LocalExecutor(num_workers=num_workers)
    if executor == "ray":
        return RayExecutor()
    if isinstance(executor, str) or not callable(getattr(executor, "run", None)):
        raise InputError(f"executor={executor!r}: use 'local', 'ray', or an executor object such as "
                         "eocausal.encoders.executors.RayExecutor(concurrency=4)")
    return executor


__all__ = ["ChipEncoder", "LocalExecutor", "RayExecutor", "ShardTask", "resolve_executor"]
