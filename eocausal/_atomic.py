"""Atomic writes: a file or a folder appears whole under its final name, or not at all.

Temporary names
---------------
A file or folder is built beside its destination under a hidden name that records who builds
it, ``.<name>.<host>-<pid>.<random>.tmp``, and renamed over the destination when complete.
A process killed mid-write (SIGKILL, power loss) leaves that temporary behind; the next
:func:`check_output_dir` / :func:`check_output_file` of the same destination removes it once
its process is gone (same host, pid no longer running). Temporaries of live processes and of
other hosts are left alone, so concurrent runs do not delete each other's work.

Swapping a folder in
--------------------
On Linux the finished folder and the earlier output are exchanged in one step
(``renameat2(RENAME_EXCHANGE)``): at every instant the output name holds a complete folder,
the earlier one or the new one. Where the exchange is unavailable (another OS, a file system
without it) the earlier output is first moved aside into ``.<name>.<host>-<pid>.<random>.old``
and the new folder renamed in; a death between those two renames leaves the output name
empty for a moment, and the next :func:`check_output_dir` of that name puts the earlier
output back before anything else.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from eocausal.errors import OutputError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]*)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.(?P<kind>tmp|old)$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64]


def _prefix(path: Path) -> str:
    """Start of the temporary names beside ``path`` made by this process."""
    return f".{path.name}.{_host()}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporaries (``.tmp``, ``.old``) of ``path`` left by processes of this host that are gone."""
    path = Path(path).absolute()
    host = _host()
    out = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for e in entries:
        m = _TEMP.match(e.name)
        if m and m["name"] == path.name and m["host"] == host and not _alive(int(m["pid"])):
            out.append(path.parent / e.name)
    return out


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def recover_output(out: str | Path) -> Path | None:
    """Put back an earlier output stranded by a death between the two renames of a swap, and
    remove the stale temporaries of ``out``. Returns the folder restored, or None."""
    out = Path(out).absolute()
    stale = stale_temporaries(out)
    restored = None
    if not out.exists():
        previous = [p / "previous" for p in stale if p.name.endswith(".old") and (p / "previous").is_dir()]
        if previous:
            newest = max(previous, key=lambda p: p.stat().st_mtime_ns)
            os.replace(newest, out)
            restored = out
    for p in stale:
        _remove(p)
    return restored


def _writable_dir(folder: Path, arg: str, what: str) -> None:
    """OutputError unless a file can be created in ``folder`` or, if it is missing, in the
    nearest folder above it (where it would be created)."""
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    try:
        if not probe_in.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file, not a folder", str(probe_in))
        os.rmdir(tempfile.mkdtemp(prefix=".eocausal-write-probe.", dir=probe_in))
    except OSError as exc:
        raise OutputError(
            f"{arg} {what}: cannot write in {str(probe_in)!r} ({exc.strerror or exc}); nothing was "
            "computed. Choose a folder you can write to"
        ) from exc


def check_output_dir(out: str | Path, marker: str = "manifest.json") -> Path:
    """Make ready to write output folder ``out``, or refuse it, before any work.

    First puts back an earlier output left aside by a run that died mid-swap and removes the
    stale temporaries of ``out`` (see the module notes). Then refuses, with an OutputError:
    ``out`` that is a file, that exists, is not empty and holds no ``marker`` (not an earlier
    eocausal output), or whose parent folder cannot be written to.
    """
    out = Path(out)
    recover_output(out)
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"--out {str(out)!r} exists and is a file; choose a folder path")
        if any(out.iterdir()) and not (out / marker).exists():
            raise OutputError(
                f"--out {str(out)!r} exists, is not empty and holds no {marker}: it does not look like "
                "an earlier eocausal output, so it is left alone. Choose a new or empty folder"
            )
    _writable_dir(out.absolute().parent, "--out", repr(str(out)))
    return out


def check_output_file(path: str | Path) -> Path:
    """Refuse an output file that cannot be written (before any work); remove its stale temporaries."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--out {str(path)!r} is a folder; pass a file name")
    for p in stale_temporaries(path):
        _remove(p)
    _writable_dir(path.absolute().parent, "--out", repr(str(path)))
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    Raises OutputError (an OSError) naming the file when it cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{str(path)!r}: cannot be written ({exc.strerror or exc}); choose a "
                          "writable folder or free disk space") from exc
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"{str(path)!r}: cannot be written ({exc.strerror or exc}); choose a "
                              "writable folder or free disk space") from exc
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2); False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``out`` (see the module notes)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    if _exchange(tmp, out):  # tmp now holds the earlier output
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(prefix=_prefix(out), suffix=".old", dir=out.parent))
    try:
        os.replace(out, old / "previous")
        os.replace(tmp, out)
    except BaseException:
        if (old / "previous").exists() and not out.exists():
            os.replace(old / "previous", out)  # put the earlier output back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(out: str | Path, marker: str = "manifest.json") -> Iterator[Path]:
    """Build a folder under a temporary name; on success swap it in place of ``out``.

    On any error the temporary folder is removed and ``out`` (if it existed) is untouched.
    An existing ``out`` is replaced only if it is empty or an earlier eocausal output.
    """
    out = check_output_dir(out, marker).absolute()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(out), suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"--out {str(out)!r}: cannot create a folder in {str(out.parent)!r} "
                          f"({exc.strerror or exc}); choose a folder you can write to") from exc
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the output folder gets the usual mode
    try:
        yield tmp
        try:
            _swap_in(tmp, out)
        except OSError as exc:
            raise OutputError(f"--out {str(out)!r}: the finished output could not be moved in place "
                              f"({exc.strerror or exc}); the earlier output, if any, is kept") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
