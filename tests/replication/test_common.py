"""replication/_common.py: the preamble the replication scripts share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMON = ROOT / "replication" / "_common.py"
SCRIPTS = sorted((ROOT / "replication").glob("*/run.py"))


@pytest.fixture(scope="module")
def common(load_script):
    return load_script(COMMON)


def test_results_block_is_the_only_part_rewritten(common):
    text = "# Title\n\nProse.\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nMore prose.\n"
    new = common.with_results_block(text, "| a |\n| --- |")
    assert new == "# Title\n\nProse.\n\n<!-- results:start -->\n| a |\n| --- |\n<!-- results:end -->\n\nMore prose.\n"
    assert common.with_results_block(new, "| a |\n| --- |") == new  # idempotent
    added = common.with_results_block("# T\n", "x")
    assert added == "# T\n\n## Target vs eocausal\n\n<!-- results:start -->\nx\n<!-- results:end -->\n"


def test_update_readme_starts_from_the_folder_readme_or_the_title(common, tmp_path):
    common.update_readme(tmp_path, "| b |", folder="no_such_folder", title="A title")
    assert (tmp_path / "README.md").read_text().startswith("# A title\n\n## Target vs eocausal\n")
    common.update_readme(tmp_path, "| c |", folder="no_such_folder", title="ignored")
    text = (tmp_path / "README.md").read_text()
    assert "| c |" in text and "| b |" not in text and "ignored" not in text
    other = tmp_path / "other"
    other.mkdir()
    common.update_readme(other, "| d |", folder="rct_heterogeneity", title="ignored")
    own = (ROOT / "replication" / "rct_heterogeneity" / "README.md").read_text()
    assert (other / "README.md").read_text().startswith(own.split("\n", 1)[0])


def test_parser_and_output_folder(common):
    p = common.parser("First line.\n\nMore.", "some_folder", quick="quick help", threads="torch threads")
    a = p.parse_args([])
    assert (a.quick, a.out, a.seed, a.threads) == (False, None, common.SEED, 1)
    assert p.description == "First line."
    assert common.output_folder(a, "some_folder") == ROOT / "replication" / "some_folder"
    q = p.parse_args(["--quick"])
    assert common.output_folder(q, "some_folder") == common.quick_out("some_folder")
    assert ROOT not in common.quick_out("some_folder").resolve().parents  # never the committed results
    assert common.output_folder(p.parse_args(["--quick", "--out", "x"]), "some_folder") == Path("x")
    assert not hasattr(common.parser("d", "f", quick="q").parse_args([]), "threads")


def test_jsonable_and_fnum(common):
    obj = {1: (np.int64(3), np.float32(0.5), np.bool_(True)), "a": np.array([1.0, np.nan]), "b": float("inf")}
    out = common.jsonable(obj)
    assert out == {"1": [3, 0.5, True], "a": [1.0, None], "b": None}
    assert json.dumps(out, allow_nan=False)
    assert type(out["1"][0]) is int and type(out["1"][2]) is bool
    assert [common.fnum(v) for v in (None, 1234, np.int32(5), 0.12345, float("nan"))] == ["", "1,234", "5", "0.123", ""]
    assert common.fnum(2.0, 1) == "2.0"


def test_import_sets_one_blas_thread_unless_the_environment_says_otherwise():
    code = f"import sys; sys.path.insert(0, {str(COMMON.parent)!r}); import _common, os; print(os.environ['{{}}'])"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                            "MKL_NUM_THREADS")}
    got = subprocess.run([sys.executable, "-c", code.format("OPENBLAS_NUM_THREADS")], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert got == "1"
    got = subprocess.run([sys.executable, "-c", code.format("OPENBLAS_NUM_THREADS")],
                         env=dict(env, OPENBLAS_NUM_THREADS="3"), capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "3"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.parent.name for s in SCRIPTS])
@pytest.mark.parametrize("where", ["root", "own folder"])
def test_every_script_starts_from_the_root_and_from_its_folder(script, where):
    cwd = ROOT if where == "root" else script.parent
    arg = str(script.relative_to(ROOT)) if where == "root" else script.name
    proc = subprocess.run([sys.executable, arg, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--quick" in proc.stdout and "--out" in proc.stdout and "--seed" in proc.stdout


@pytest.mark.parametrize("folder", ["causalimages_uganda", "one_map_many_trials", "rct_heterogeneity"])
def test_quick_default_output_is_outside_the_repository(folder, load_script):
    assert ROOT not in load_script(ROOT / "replication" / folder / "run.py").QUICK_OUT.resolve().parents


@pytest.mark.parametrize("folder", ["one_map_many_trials", "rct_heterogeneity"])
def test_committed_results_have_rows_in_the_make_readme_schema(folder, check_rows):
    res = json.loads((ROOT / "replication" / folder / "results.json").read_text())
    assert res["quick"] is False  # a --quick run must not overwrite the committed results
    check_rows(res["rows"])
