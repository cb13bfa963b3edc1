"""What every ``replication/<folder>/run.py`` shares: threads, paths, arguments, output helpers.

A script puts this folder on ``sys.path`` and imports from here before it imports numpy::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # replication/: _common, make_readme
    from _common import ...  # noqa: E402

so that it runs as ``python replication/<folder>/run.py`` from the repository root and as
``python run.py`` from its own folder. Importing this module

- sets one BLAS/OpenMP thread unless the environment says otherwise (before numpy is imported:
  on a shared, loaded machine OpenBLAS threads spin against each other; a 564 x 128 PCA took 7 s
  instead of 0.07 s, and the ridge fits of the Uganda run were about 7x slower);
- puts the repository root on ``sys.path``, so that a checkout runs without installing eocausal.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPLICATION = Path(__file__).resolve().parent
ROOT = REPLICATION.parent
#: The data shared beside the repository (``../shared/data``).
SHARED_DATA = ROOT.parent / "shared" / "data"
if str(ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

from eocausal._atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from make_readme import END, START  # noqa: E402  (replication/ is on sys.path: see above)

#: Default ``--seed`` of every script.
SEED = 20260101

__all__ = ["END", "ROOT", "SEED", "SHARED_DATA", "START", "atomic_write_bytes", "atomic_write_text", "fnum",
           "jsonable", "machine", "output_folder", "parser", "quick_out", "save_figure", "update_readme",
           "with_results_block"]


def quick_out(folder: str) -> Path:
    """Default ``--out`` of ``--quick``: outside the repository, never the committed full results."""
    return Path(tempfile.gettempdir()) / "eocausal-replication" / f"{folder}-quick"


def parser(doc: str, folder: str, *, quick: str, threads: str | None = None, **kw) -> argparse.ArgumentParser:
    """An argument parser with the flags every script has: ``--quick``, ``--out``, ``--seed``.

    ``doc``: the script's docstring (its first line describes the parser); ``folder``: the
    replication folder (names the ``--quick`` default of ``--out``); ``quick``: help of
    ``--quick``; ``threads``: help of a ``--threads`` flag (default 1), none when None.
    Other keywords go to :class:`argparse.ArgumentParser`.
    """
    p = argparse.ArgumentParser(description=doc.split("\n")[0], **kw)
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default: this folder; with --quick {quick_out(folder)})")
    p.add_argument("--seed", type=int, default=SEED)
    if threads is not None:
        p.add_argument("--threads", type=int, default=1, help=threads)
    return p


def output_folder(args: argparse.Namespace, folder: str) -> Path:
    """``--out``, or its default: the script's folder, and with ``--quick`` :func:`quick_out`."""
    if args.out is not None:
        return Path(args.out)
    return quick_out(folder) if args.quick else REPLICATION / folder


def fnum(v, d: int = 3) -> str:
    """A table cell: '' for None and non-finite floats, integers with thousands separators."""
    if v is None:
        return ""
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, float) and not np.isfinite(v):
        return ""
    return f"{v:.{d}f}"


def jsonable(o):
    """``o`` with numpy values as Python ones and non-finite floats as None (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def machine(**extra) -> dict:
    """Facts of the machine for results.json: Python, cores, 1-minute load average, and ``extra``."""
    return dict(python=platform.python_version(), **extra, cores=os.cpu_count(),
                load_avg_1min=round(os.getloadavg()[0], 2))


def save_figure(fig, path: Path) -> str:
    """Write ``fig`` as a PNG without a timestamp (atomically); its file name."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    return path.name


def with_results_block(text: str, block: str) -> str:
    """``text`` with everything between the results markers replaced by ``block``.

    Text without the markers gets them, under a heading "Target vs eocausal", at its end (unlike
    ``make_readme.replace_block``, which refuses such text).
    """
    pat = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    new = f"{START}\n{block.strip()}\n{END}"
    if pat.search(text):
        return pat.sub(lambda _m: new, text, count=1)
    return text.rstrip() + "\n\n## Target vs eocausal\n\n" + new + "\n"


def update_readme(out: Path, block: str, *, folder: str, title: str) -> None:
    """Rewrite only the results block of ``out/README.md``.

    A README that does not exist yet is started from the folder's own README.md, or from a
    heading ``title`` when there is none.
    """
    target = out / "README.md"
    base = target if target.exists() else REPLICATION / folder / "README.md"
    text = base.read_text(encoding="utf-8") if base.exists() else f"# {title}\n"
    atomic_write_text(target, with_results_block(text, block))
