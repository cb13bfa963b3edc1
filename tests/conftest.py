"""Fixtures shared by the test files.

pytest runs with ``--import-mode=importlib`` (pyproject.toml), so test files cannot import each
other or this file; what several of them need is here, as fixtures. Helpers that a test calls
with its own arguments are fixtures that return the function (``load_script``, ``array_units``,
``small_study_toml``, ...). Each helper is also a plain function of this module, for code that runs
outside pytest (the subprocess of tests/encoders/test_embed_cache.py loads this file by path).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Statuses of the rows of a replication's results.json (the schema of replication/make_readme.py).
ROW_FIELDS = ("target", "source", "eocausal", "status")


# ----------------------------------------------------------------------------- plain helpers
def load_script_module(path: Path, name: str | None = None):
    """Import the script at ``path`` as a module, as ``python path`` would run it.

    Its folder is first on ``sys.path`` while it executes (so that it imports its neighbours by
    name), and it is registered in ``sys.modules`` under ``name`` (default: the folder and file
    name), because dataclasses look their module up while the class is built.
    """
    path = Path(path).resolve()
    name = name or f"{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(path.parent))
    return mod


def run_quick_script(script: Path, out: Path, *args: str, timeout: float = 600) -> dict:
    """Run ``python script --quick --out out *args`` from the repository root with one BLAS thread;
    its ``results.json``. A failing run fails the test with the end of its stderr."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out", str(out), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((Path(out) / "results.json").read_text())


def is_valid_status(status: str) -> bool:
    """A status of replication/make_readme.py's schema (``differs: `` needs a reason)."""
    return (status in ("reproduced", "not reproducible without restricted data")
            or (status.startswith("differs: ") and len(status) > len("differs: ")))


def assert_result_rows(rows) -> None:
    """``rows`` of a results.json: non-empty, every field a non-empty string, a valid status, unique ids."""
    assert isinstance(rows, list) and rows
    for r in rows:
        assert all(isinstance(r.get(k), str) and r[k] for k in ROW_FIELDS), r
        assert is_valid_status(r["status"]), r
    assert len({r["id"] for r in rows}) == len(rows)


def make_array_units(n_images: int = 12, per: int = 2, seed: int = 0, *, px: int = 10, dtype=np.float32,
                     shift: float = 0):
    """``(Units, ArraySource)``: ``per`` units on each of ``n_images`` random RGB images of ``px``
    pixels (channels last); ``shift`` is added to the pixels of image 0."""
    import eocausal

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n_images, px, px, 3)).astype(dtype)
    images[0] += np.asarray(shift).astype(dtype)
    keys = [f"img{i:03d}" for i in range(n_images)]
    n = n_images * per
    df = pd.DataFrame({"id": [f"u{i:03d}" for i in range(n)], "w": np.arange(n) % 2,
                       "y": rng.normal(size=n), "key": np.repeat(keys, per)})
    units = eocausal.Units.from_frame(df, id="id", treatment="w", outcome="y", image_key="key")
    return units, eocausal.ArraySource(images, keys=keys)


def small_study_text(name: str, seed: int, *, methods=("dim", "ipw-hajek"), description: str | None = None,
                     simulate: str = "", estimate: str = "", extra: str = "") -> str:
    """A study file of the demo's simulation at a small size (120 images of 2 units, 16 px, 32
    random features, 3 folds): fast enough for an end-to-end run in a test.

    ``simulate``, ``estimate``: more lines of those sections; ``extra``: more sections at the end.
    """
    desc = "" if description is None else f"description = {json.dumps(description)}\n"
    return (f"[study]\nname = {json.dumps(name)}\nseed = {seed}\n{desc}"
            '[units]\nformat = "demo"\n'
            f"[simulate]\nn_images = 120\nunits_per_image = 2\npx = 16\n{simulate}"
            "[encoder]\nn_features = 32\n"
            f"[estimate]\nmethods = {json.dumps(list(methods))}\nfolds = 3\n{estimate}{extra}")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def load_script():
    """:func:`load_script_module`: import a script (replication/*/run.py, ...) as a module."""
    return load_script_module


@pytest.fixture(scope="session")
def run_quick():
    """:func:`run_quick_script`: run a replication script with ``--quick``; its results.json."""
    return run_quick_script


@pytest.fixture(scope="session")
def check_rows():
    """:func:`assert_result_rows`: check the rows of a replication's results.json."""
    return assert_result_rows


@pytest.fixture(scope="session")
def array_units():
    """:func:`make_array_units`: units sharing random in-memory images, and their ArraySource."""
    return make_array_units


@pytest.fixture(scope="session")
def small_study_toml():
    """:func:`small_study_text`: the text of a small demo study file."""
    return small_study_text


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module: tiny models run fastest on one, and the test machine's
    cores are shared. Use as ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
