"""Output safety (issue 14, item 15): an unwritable --out fails before any work; a process
killed at any step of writing or swapping an output folder leaves the earlier output (or the
new one) in place, and the next run cleans what the dead one left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import eocausal._atomic as atomic
from eocausal._atomic import atomic_directory, check_output_dir, check_output_file, stale_temporaries
from eocausal.cli import main
from eocausal.errors import OutputError

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def earlier_output(out: Path) -> dict[str, bytes]:
    out.mkdir()
    (out / "manifest.json").write_text('{"run": 1}', encoding="utf-8")
    (out / "tables").mkdir()
    (out / "tables" / "effects.md").write_text("old table", encoding="utf-8")
    return snapshot(out)


NEW = {"manifest.json": b'{"run": 2}', "tables/effects.md": b"new table"}


# ----------------------------------------------------------------------------- unwritable --out
def _unwritable_parent() -> Path:
    """A folder this process cannot create entries in (root ignores permission bits: use /sys)."""
    sys_dir = Path("/sys")
    try:
        os.rmdir(tempfile.mkdtemp(dir=sys_dir))
    except OSError:
        return sys_dir
    pytest.skip("no read-only folder on this machine")


def test_run_with_unwritable_out_fails_before_any_work(tmp_path, monkeypatch):
    import eocausal.study.inputs as inputs
    from eocausal.study.runner import demo_study_path, run_study

    def no_work(*a, **k):
        raise AssertionError("inputs were read before the output folder was checked")

    monkeypatch.setattr(inputs, "load_inputs", no_work)
    with pytest.raises(OutputError, match=r"cannot write in '/sys'.*nothing was computed"):
        run_study(demo_study_path(), _unwritable_parent() / "eocausal-out")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write in"):
        run_study(demo_study_path(), blocker / "sub" / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_run_with_read_only_parent_fails_before_any_work(tmp_path):
    from eocausal.study.runner import demo_study_path, run_study

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write in"):
            run_study(demo_study_path(), ro / "out")
    finally:
        ro.chmod(0o755)


def test_cli_unwritable_out_is_one_error_line(capsys, tmp_path):
    bad = _unwritable_parent()
    assert main(["demo", "--out", str(bad / "eocausal-demo")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eocausal: error: --out") and "Traceback" not in err and err.count("\n") == 1
    study = tmp_path / "s.toml"
    study.write_text('[study]\nname = "s"\n[units]\nformat = "demo"\n', encoding="utf-8")
    assert main(["embed", str(study), "--out", str(bad / "Z.npz")]) == 2
    err = capsys.readouterr().err
    assert "eocausal: error: --out" in err and "[1/2]" not in err  # refused before reading anything


# ----------------------------------------------------------------------------- stale temporaries
def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "out"
    earlier_output(out)
    host = atomic._host()
    dead, live = dead_pid(), os.getpid()
    stale_tmp = tmp_path / f".out.{host}-{dead}.abc123de.tmp"
    stale_tmp.mkdir()
    (stale_tmp / "effects.csv").write_text("half written")
    stale_file = tmp_path / f".out.{host}-{dead}.zz9.tmp"
    stale_file.write_text("x")
    live_tmp = tmp_path / f".out.{host}-{live}.q1w2e3r4.tmp"
    live_tmp.mkdir()
    other_host = tmp_path / f".out.elsewhere-{dead}.q1w2e3r4.tmp"
    other_host.mkdir()
    other_name = tmp_path / f".other.{host}-{dead}.q1w2e3r4.tmp"
    other_name.mkdir()
    assert sorted(p.name for p in stale_temporaries(out)) == sorted([stale_tmp.name, stale_file.name])
    check_output_dir(out)
    assert not stale_tmp.exists() and not stale_file.exists()
    assert live_tmp.exists() and other_host.exists() and other_name.exists()  # not ours to remove


def test_stale_temporary_of_an_output_file_is_removed(tmp_path):
    dest = tmp_path / "Z.npz"
    stale = tmp_path / f".Z.npz.{atomic._host()}-{dead_pid()}.k3j4.tmp"
    stale.write_bytes(b"partial")
    check_output_file(dest)
    assert not stale.exists()
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path)


# ----------------------------------------------------------------------------- kills at each step
KILL_SCRIPT = textwrap.dedent("""
    import os, shutil, sys
    from pathlib import Path
    import eocausal._atomic as atomic

    out, mode, step = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    die = lambda: os._exit(9)  # like SIGKILL: no cleanup runs
    if mode == "fallback":  # no one-step exchange: the two-rename swap
        atomic._exchange = lambda a, b: False
    real_replace, real_exchange, real_rmtree = os.replace, atomic._exchange, shutil.rmtree
    calls = []

    def replace(src, dst):
        calls.append(1)
        if step == f"before-rename-{len(calls)}":
            die()
        real_replace(src, dst)
        if step == f"after-rename-{len(calls)}":
            die()

    def exchange(a, b):
        if step == "before-exchange":
            die()
        ok = real_exchange(a, b)
        if step == "after-exchange":
            die()
        return ok

    def rmtree(path, *a, **k):
        if step == "mid-cleanup":
            files = [p for p in Path(path).rglob("*") if p.is_file()]
            files[0].unlink()
            die()
        return real_rmtree(path, *a, **k)

    with atomic.atomic_directory(out) as tmp:
        (tmp / "tables").mkdir()
        (tmp / "manifest.json").write_text('{"run": 2}')
        if step == "writing":
            die()
        (tmp / "tables" / "effects.md").write_text("new table")
        os.replace, atomic._exchange, shutil.rmtree = replace, exchange, rmtree
    """)

STEPS = [("exchange", s) for s in ("writing", "before-exchange", "after-exchange", "mid-cleanup")] + [
    ("fallback", s) for s in ("writing", "before-rename-1", "after-rename-1", "after-rename-2",
                              "mid-cleanup")]


@pytest.mark.parametrize("mode,step", STEPS)
def test_a_kill_at_any_step_leaves_a_complete_output(tmp_path, mode, step):
    out = tmp_path / "out"
    old = earlier_output(out)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), mode, step], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr  # it did die at that step
    between = mode == "fallback" and step == "after-rename-1"
    if between:
        assert not out.exists()  # the one moment without an output; the next start repairs it
    else:
        assert snapshot(out) in (old, NEW)
    check_output_dir(out)  # the next run starts here
    after = snapshot(out)
    assert after == (NEW if step in ("after-exchange", "after-rename-2", "mid-cleanup") else old)
    assert leftovers(tmp_path, "out") == []
    with atomic_directory(out) as tmp:
        (tmp / "manifest.json").write_text('{"run": 3}')
    assert snapshot(out) == {"manifest.json": b'{"run": 3}'} and leftovers(tmp_path, "out") == []


def test_exchange_keeps_the_output_name_complete_at_every_instant(tmp_path, monkeypatch):
    """With the one-step exchange, os.replace is never used on an existing output."""
    out = tmp_path / "out"
    earlier_output(out)
    monkeypatch.setattr(os, "replace", lambda *a: pytest.fail("two-rename swap used"))
    with atomic_directory(out) as tmp:
        (tmp / "manifest.json").write_text('{"run": 2}')
    monkeypatch.undo()
    assert snapshot(out) == {"manifest.json": b'{"run": 2}'} and leftovers(tmp_path, "out") == []


SIGTERM_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import eocausal._atomic as atomic
    from eocausal.cli import _cli_environment, _Terminated

    with _cli_environment():
        try:
            with atomic.atomic_directory(Path(sys.argv[1])) as tmp:
                (tmp / "manifest.json").write_text('{"run": 2}')
                print("writing", flush=True)
                time.sleep(60)
        except _Terminated:
            sys.exit(143)
    """)


def test_sigterm_mid_write_removes_the_temporary_and_keeps_the_earlier_output(tmp_path):
    out = tmp_path / "out"
    old = earlier_output(out)
    with subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, str(out)], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout.readline().strip() == "writing"
        assert len(leftovers(tmp_path, "out")) == 1  # its temporary folder, being written
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    assert snapshot(out) == old and leftovers(tmp_path, "out") == []
