"""Tests for eocausal._atomic: atomic file writes and atomic output folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from eocausal._atomic import atomic_directory, atomic_write_bytes, atomic_write_text, check_output_dir
from eocausal.errors import EocausalError, OutputError


class Boom(RuntimeError):
    pass


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path, name: str) -> list[str]:
    """Temporary siblings left behind by atomic_directory/atomic_write for ``name``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# ----------------------------------------------------------------------------- files
def test_atomic_write_text_writes_utf8(tmp_path):
    p = tmp_path / "sub" / "deeper" / "a.txt"
    out = atomic_write_text(p, "héllo\nwörld\n")
    assert out == p
    assert p.read_bytes() == "héllo\nwörld\n".encode("utf-8")
    assert leftovers(p.parent, "a.txt") == []


def test_atomic_write_text_replaces(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old content that is longer", encoding="utf-8")
    atomic_write_text(str(p), "new")
    assert p.read_text(encoding="utf-8") == "new"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_write_bytes(tmp_path):
    p = tmp_path / "b.bin"
    atomic_write_bytes(p, b"\x00\x01\xff")
    assert p.read_bytes() == b"\x00\x01\xff"


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "a.txt"
    p.write_text("old", encoding="utf-8")

    def fail(*a, **k):
        raise Boom("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(Boom):
        atomic_write_text(p, "new")
    monkeypatch.undo()
    assert p.read_text(encoding="utf-8") == "old"
    assert leftovers(tmp_path, "a.txt") == []


def test_atomic_write_respects_umask(tmp_path, umask_022):
    p = tmp_path / "report.md"
    atomic_write_text(p, "x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


# ----------------------------------------------------------------------------- folders: success
def test_atomic_directory_creates_new_folder(tmp_path):
    out = tmp_path / "parent" / "out"
    with atomic_directory(out) as tmp:
        assert tmp != out and tmp.parent == out.parent.absolute()
        assert not out.exists()
        (tmp / "manifest.json").write_text("{}", encoding="utf-8")
        (tmp / "tables").mkdir()
        (tmp / "tables" / "t.md").write_text("| a |", encoding="utf-8")
    assert snapshot(out) == {"manifest.json": b"{}", "tables/t.md": b"| a |"}
    assert not tmp.exists()
    assert leftovers(out.parent, "out") == []


def test_empty_existing_folder_is_fine(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("a", encoding="utf-8")
    assert snapshot(out) == {"a.txt": b"a"}
    assert leftovers(tmp_path, "out") == []


def test_earlier_output_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    (out / "tables").mkdir(parents=True)
    (out / "manifest.json").write_text('{"run": 1}', encoding="utf-8")
    (out / "old_only.csv").write_text("stale", encoding="utf-8")
    (out / "tables" / "old.tex").write_text("stale", encoding="utf-8")
    with atomic_directory(out) as tmp:
        (tmp / "manifest.json").write_text('{"run": 2}', encoding="utf-8")
        (tmp / "effects.csv").write_text("new", encoding="utf-8")
    assert snapshot(out) == {"manifest.json": b'{"run": 2}', "effects.csv": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_created_folder_respects_umask(tmp_path, umask_022):
    out = tmp_path / "out"
    with atomic_directory(out) as tmp:
        (tmp / "f").write_text("x", encoding="utf-8")
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode != 0o700
    assert mode == 0o755


def test_created_folder_respects_stricter_umask(tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "out"
        with atomic_directory(out):
            pass
        assert stat.S_IMODE(out.stat().st_mode) == 0o750
    finally:
        os.umask(old)


def test_relative_out_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with atomic_directory("rel_out") as tmp:
        assert tmp.is_absolute()
        (tmp / "x").write_text("1", encoding="utf-8")
    assert (tmp_path / "rel_out" / "x").read_text(encoding="utf-8") == "1"


# ----------------------------------------------------------------------------- folders: failure
def test_exception_removes_temp_and_keeps_existing_output(tmp_path):
    out = tmp_path / "out"
    (out / "tables").mkdir(parents=True)
    (out / "manifest.json").write_text('{"run": 1}', encoding="utf-8")
    (out / "tables" / "effects.md").write_text("old table", encoding="utf-8")
    before = snapshot(out)
    seen = {}
    with pytest.raises(Boom, match="halfway"):
        with atomic_directory(out) as tmp:
            seen["tmp"] = tmp
            (tmp / "manifest.json").write_text('{"run": 2}', encoding="utf-8")
            (tmp / "partial.csv").write_text("half", encoding="utf-8")
            raise Boom("halfway")
    assert not seen["tmp"].exists()
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_exception_without_existing_output_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(out) as tmp:
            (tmp / "x").write_text("x", encoding="utf-8")
            raise KeyboardInterrupt
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_foreign_non_empty_folder_refused_before_body_runs(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious", encoding="utf-8")
    ran = []
    with pytest.raises(OutputError) as ei:
        with atomic_directory(out):
            ran.append(True)
    assert isinstance(ei.value, OSError) and isinstance(ei.value, EocausalError)
    msg = str(ei.value)
    assert str(out) in msg and "manifest.json" in msg and "not empty" in msg
    assert ran == []
    assert snapshot(out) == {"chapter1.tex": b"precious"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_custom_marker(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("{}", encoding="utf-8")
    with pytest.raises(OutputError, match="holds no manifest.json"):
        check_output_dir(out)
    assert check_output_dir(out, marker="run.json") == out
    with atomic_directory(out, marker="run.json") as tmp:
        (tmp / "new").write_text("n", encoding="utf-8")
    assert snapshot(out) == {"new": b"n"}


def test_path_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "out"
    f.write_text("i am a file", encoding="utf-8")
    ran = []
    with pytest.raises(OutputError, match="is a file") as ei:
        with atomic_directory(f):
            ran.append(True)
    assert isinstance(ei.value, OSError)
    assert ran == []
    assert f.read_text(encoding="utf-8") == "i am a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_check_output_dir_accepts_new_empty_and_earlier(tmp_path):
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "empty").mkdir()
    assert check_output_dir(str(tmp_path / "empty")) == tmp_path / "empty"
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "manifest.json").write_text("{}", encoding="utf-8")
    assert check_output_dir(tmp_path / "earlier") == tmp_path / "earlier"


def test_failed_swap_restores_earlier_output(tmp_path, monkeypatch):
    import eocausal._atomic as atomic

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # the two-rename fallback
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"run": 1}', encoding="utf-8")
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the rename of the new folder onto ``out``
            raise OSError("simulated failure")
        return real_replace(src, dst)

    with pytest.raises(OutputError, match="simulated failure.*earlier output.*kept"):
        with atomic_directory(out) as tmp:
            (tmp / "manifest.json").write_text('{"run": 2}', encoding="utf-8")
            monkeypatch.setattr(os, "replace", flaky_replace)
    monkeypatch.undo()
    assert len(calls) >= 2  # the failing swap, then the restore of the earlier output
    assert snapshot(out) == {"manifest.json": b'{"run": 1}'}
