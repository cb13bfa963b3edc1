"""Atomic writes: a file or a folder appears whole under its final name, or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from eocausal.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_output_dir(out: str | Path, marker: str = "manifest.json") -> Path:
    """Refuse an output folder that exists and is not empty nor an earlier eocausal output.

    Called before any work so a wrong ``--out`` fails at once and nothing is overwritten.
    """
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"--out {str(out)!r} exists and is a file; choose a folder path")
        if any(out.iterdir()) and not (out / marker).exists():
            raise OutputError(
                f"--out {str(out)!r} exists, is not empty and holds no {marker}: it does not look like "
                "an earlier eocausal output, so it is left alone. Choose a new or empty folder"
            )
    return out


@contextmanager
def atomic_directory(out: str | Path, marker: str = "manifest.json") -> Iterator[Path]:
    """Build a folder under a temporary name; on success swap it in place of ``out``.

    On any error the temporary folder is removed and ``out`` (if it existed) is untouched.
    An existing ``out`` is replaced only if it is empty or an earlier eocausal output.
    """
    out = check_output_dir(out, marker).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the output folder gets the usual mode
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "previous")
        os.replace(tmp, out)
    except BaseException:
        if old is not None and (old / "previous").exists() and not out.exists():
            os.replace(old / "previous", out)  # put the earlier output back
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
