"""Peak memory of ``eocausal.embed`` for 10,000 vs 100,000 chips: flat, because shards stream to disk.

Each size runs in a fresh Python subprocess that builds the units, then embeds synthetic
16 x 16 x 3 chips, made on the fly in ``load`` (nothing is held in memory beforehand), with
``RandomFeatures(n_features=256)`` into a cache on disk. The child reports its peak resident
set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its RSS just before ``embed``
(after imports, units and source).

Two modes are measured:

* ``cache``: ``embed(..., cache_dir=..., return_frame=False)`` fills the cache and returns
  statistics only. This is the streaming part, whose peak should not grow with the number
  of chips (goal: within 10%).
* ``frame``: the usual ``embed(..., cache_dir=...)`` that also returns the DataFrame. Its
  peak adds the output, n x 256 float32 (100 MB at n = 100,000), which no streaming can avoid.

Prints machine information and a Markdown table, and appends a row per size to
benchmarks/results/embed_memory.md.

Usage: python -m benchmarks.embed_memory [--sizes 10000 100000] [--modes cache frame]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks._machine import RESULTS_DIR, ROOT, command, machine_line, utc_stamp

RESULTS = RESULTS_DIR / "embed_memory.md"
PX, BANDS, DIM = 16, 3, 256


class LazySource:
    """Synthetic chips made in ``load`` from the integer keys: nothing is stored."""

    def __init__(self, n: int):
        self.n = n

    def keys_for(self, units):
        return units.ids

    def load(self, keys, units=None) -> np.ndarray:
        k = np.asarray(keys, dtype=np.float64)[:, None]
        j = np.arange(BANDS * PX * PX, dtype=np.float64)[None, :]
        x = np.sin(k * 0.7311 + j * 0.1373) + np.cos(k * 0.0191 * (1 + j % 7))
        return x.astype(np.float32).reshape(len(k), BANDS, PX, PX)

    def fingerprint(self) -> dict:
        return {"kind": "synthetic-benchmark", "n": self.n, "px": PX, "bands": BANDS}


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(n: int, mode: str, cache_dir: str) -> dict:
    """Run one embedding in this (fresh) process; return its figures."""
    import pandas as pd

    import eocausal
    from eocausal.encoders import RandomFeatures

    units = eocausal.Units.from_frame(pd.DataFrame({"id": np.arange(n)}), id="id", treatment=None,
                                      outcome=None)
    source = LazySource(n)
    encoder = RandomFeatures(n_features=DIM, seed=0, device="cpu")
    before = rss_mb()
    t = time.perf_counter()
    out = eocausal.embed(units, source, encoder, cache_dir=cache_dir, batch_size=256, shard_size=4096,
                         num_workers=2, return_frame=mode == "frame")
    seconds = time.perf_counter() - t
    stats = out if mode == "cache" else out.attrs["embed_stats"]
    if mode == "frame":
        assert out.shape == (n, DIM)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"n": n, "mode": mode, "peak_mb": peak, "before_embed_mb": before, "seconds": seconds,
            "computed": stats["computed"], "n_shards": stats["n_shards"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--modes", nargs="+", default=["cache", "frame"], choices=["cache", "frame"])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="cache", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.mode, args.cache)))
        return

    import torch

    import eocausal

    rows = []
    for mode in args.modes:
        for n in args.sizes:
            with tempfile.TemporaryDirectory(prefix="eocausal-bench-") as tmp:
                res = subprocess.run([sys.executable, "-m", "benchmarks.embed_memory", "--child", str(n), "--mode",
                                      mode, "--cache", tmp], capture_output=True, text=True, check=True, cwd=ROOT)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{mode:5s} n={n:>7,}: peak {r['peak_mb']:.0f} MB (before embed {r['before_embed_mb']:.0f} MB), "
                  f"{r['seconds']:.1f} s, {r['computed']} shards", flush=True)

    when = utc_stamp()
    machine = machine_line()
    load = f"{os.getloadavg()[0]:.2f}"
    versions = f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, eocausal {eocausal.__version__}"
    cmd = command("embed_memory")
    lines = []
    for mode in args.modes:
        sel = [r for r in rows if r["mode"] == mode]
        base = sel[0]
        for r in sel:
            ratio = r["peak_mb"] / base["peak_mb"]
            lines.append(f"| {when} | {machine} | {load} | {mode} | {r['n']:,} | {r['peak_mb']:.0f} | "
                         f"{r['before_embed_mb']:.0f} | {r['peak_mb'] - r['before_embed_mb']:.0f} | {ratio:.3f} | "
                         f"{r['seconds']:.1f} | {versions} |")
    header = ("| date | machine | load (1 min) | mode | chips | peak RSS MB | RSS before embed MB | "
              "peak - before MB | peak / first size | seconds | versions |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    print(f"\n{cmd}\n{machine}\n\n{header}" + "\n".join(lines))
    if not RESULTS.exists():
        RESULTS.write_text("# eocausal.embed peak memory, 10,000 vs 100,000 chips\n\n" + header)
    with RESULTS.open("a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
