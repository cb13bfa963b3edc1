"""Helpers shared by the benchmark scripts: machine facts, result files, subprocess workers.

The scripts are modules of the ``benchmarks`` package: run them from the repository root as
``python -m benchmarks.NAME`` (the root is then on ``sys.path``, so ``eocausal`` is imported
from the checkout) and they import this module as ``from benchmarks._machine import ...``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from eocausal._atomic import atomic_write_text

#: The repository root (the working folder of every worker).
ROOT = Path(__file__).resolve().parents[1]
#: Where each benchmark appends its runs: ``results/<name>.md``.
RESULTS_DIR = ROOT / "benchmarks" / "results"
#: How :func:`versions` names a package (by its import name) when that differs.
_LABELS = {"sklearn": "scikit-learn", "doubleml": "DoubleML"}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_line() -> str:
    """'CPU model, N cores, OS release' for a run block."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def utc_stamp() -> str:
    """The time now, for a run block: '2026-11-27 04:00 UTC'."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command(name: str, argv: list[str] | None = None) -> str:
    """The command that ran benchmark ``name`` with ``argv`` (default: this process's arguments)."""
    return " ".join(["python -m benchmarks." + name, *(sys.argv[1:] if argv is None else argv)])


def versions(*packages: str) -> str:
    """'python 3.11.7, numpy 2.4.6, scikit-learn 1.9.1, ...' for the packages named by import name."""
    return ", ".join([f"python {platform.python_version()}"]
                     + [f"{_LABELS.get(p, p)} {importlib.import_module(p).__version__}" for p in packages])


def append_block(path: Path, header: str, block: list[str], *, write: bool = True) -> str:
    """Append a run block (its lines) to the results file ``path``, started with ``header`` when it
    does not exist yet; written atomically unless ``write`` is False. The file's new text."""
    text = path.read_text() if path.exists() else header
    out = text.rstrip("\n") + "\n\n" + "\n".join(block).rstrip("\n") + "\n"
    if write:
        atomic_write_text(path, out)
    return out


def append_text(path: Path, header: str, text: str) -> None:
    """Append ``text`` as it is (table rows, a section) to ``path``, started with ``header`` when it
    does not exist yet; written atomically."""
    old = path.read_text() if path.exists() else header
    atomic_write_text(path, old + text)


def run_json_worker(module: str, args: list[str], *, threads: int | None) -> dict:
    """Run ``python -m module args`` from the repository root in a fresh process and parse the JSON
    of its last stdout line.

    ``threads`` sets the BLAS/OpenMP thread variables of the worker (None or 0: library default).
    The result gets ``wall_s``; a failing worker raises RuntimeError with the end of its stderr.
    """
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def machine() -> dict:
    """Machine facts as a dict: CPU, cores, Python, date, torch and its threads (and GPU), load."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "date": _dt.date.today().isoformat()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info
