"""Helpers shared by the benchmark scripts: machine facts for result files, subprocess workers.

Scripts import it with ``sys.path.append(<benchmarks folder>)`` (appended, so that a script name
never shadows an installed package) and ``from _machine import ...``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time


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


def run_json_worker(script: str, args: list[str], *, threads: int | None, cwd) -> dict:
    """Run ``python script args`` in a fresh process and parse the JSON of its last stdout line.

    ``threads`` sets the BLAS/OpenMP thread variables of the worker (None or 0: library default).
    The result gets ``wall_s``; a failing worker raises RuntimeError with the end of its stderr.
    """
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, cwd=cwd)
    if res.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def machine() -> dict:
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
