"""End to end: the CLI on the demo study, determinism, atomic outputs, helpful errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from eocausal import cli
from eocausal.study.runner import demo_study_path, run_study

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ROOT.parent / "shared" / "checks"


@pytest.fixture
def study(tmp_path, small_study_toml):
    """A small demo study file, ``tmp_path / "small.toml"``."""
    path = tmp_path / "small.toml"
    path.write_text(small_study_toml("small <b>demo</b>", 7))
    return path


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    code = cli.main(["demo", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_demo_writes_every_output(demo_out):
    for f in ("effects.csv", "report.html", "manifest.json", "tables/effects.md", "tables/effects.tex"):
        assert (demo_out / f).is_file(), f
    man = json.loads((demo_out / "manifest.json").read_text())
    assert man["true_effect"] == 1.0
    assert man["seed"] == 20260101
    assert set(man["stage_seconds"]) >= {"inputs", "embed", "estimate", "write", "total"}
    assert man["versions"]["torch"] and man["versions"]["numpy"]
    assert len(man["embedding_cache_keys"][0]) == 64
    assert re.fullmatch(r"[0-9a-f]{64}", man["study_sha256"])


def test_demo_shows_the_confounding_story(demo_out):
    t = pd.read_csv(demo_out / "effects.csv")
    covers = (t.ci_low <= 1.0) & (1.0 <= t.ci_high)
    naive = t[t.adjustment == "none"]
    tab = t[(t.adjustment == "tabular") & t.method.str.startswith("ipw")]
    img = t[(t.adjustment == "tabular+image") & (t.method == "ipw-hajek")]
    assert len(naive) == 1 and not covers[naive.index].any()
    assert not covers[tab.index].any()  # tabular-only IPW is still biased
    assert covers[img.index].all()


@pytest.mark.skipif(not (CHECKS / "demo_output.py").exists(), reason="../shared/checks not beside the repo")
def test_shared_demo_check_passes(demo_out):
    r = subprocess.run([sys.executable, str(CHECKS / "demo_output.py"), str(demo_out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo ok" in r.stdout


def test_report_is_self_contained(demo_out):
    html = (demo_out / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<table" in html and "Hajek" in html


def test_packaged_demo_study_is_the_repository_copy():
    assert demo_study_path().read_bytes() == (ROOT / "studies" / "demo.toml").read_bytes()


def test_same_seed_gives_identical_outputs(tmp_path, study):
    a = run_study(study, tmp_path / "a")
    b = run_study(study, tmp_path / "b")
    for f in ("effects.csv", "report.html", "tables/effects.md", "tables/effects.tex"):
        assert (a.out / f).read_bytes() == (b.out / f).read_bytes(), f
    # study strings are escaped in the report
    html = (a.out / "report.html").read_text()
    assert "<b>demo</b>" not in html and "&lt;b&gt;demo&lt;/b&gt;" in html


def test_failing_run_leaves_no_partial_output(tmp_path, monkeypatch, study):
    out = tmp_path / "out"

    def boom(*a, **k):
        raise RuntimeError("estimation exploded")

    monkeypatch.setattr("eocausal.analysis.estimate", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        run_study(study, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [study]  # no temporary folder left behind


def test_failing_run_keeps_an_earlier_output(tmp_path, monkeypatch, study):
    first = run_study(study, tmp_path / "out")
    before = {p.relative_to(first.out): p.read_bytes() for p in first.out.rglob("*") if p.is_file()}
    monkeypatch.setattr("eocausal.analysis.estimate", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_study(study, tmp_path / "out")
    after = {p.relative_to(first.out): p.read_bytes() for p in first.out.rglob("*") if p.is_file()}
    assert before == after


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, study):
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "x"\n[units]\nformat = "demo"\n[estimate]\nfold = 3\n')
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'fold' in [estimate]" in err and "'folds'" in err
    assert not (tmp_path / "o").exists()
    assert cli.main(["validate", str(bad)]) == 2
    assert cli.main(["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a non-empty folder that is not an eocausal output is refused before any work
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "thesis.tex").write_text("precious")
    assert cli.main(["run", str(study), "--out", str(keep), "--quiet"]) == 2
    assert (keep / "thesis.tex").read_text() == "precious" and len(list(keep.iterdir())) == 1


def test_cli_validate_ok(capsys):
    assert cli.main(["validate", str(demo_study_path())]) == 0
    assert "valid study" in capsys.readouterr().out


def test_console_script_runs(tmp_path):
    exe = Path(sys.executable).with_name("eocausal")
    r = subprocess.run([str(exe), "validate", str(ROOT / "studies" / "demo.toml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_cli_embed_and_report(tmp_path, capsys, study):
    import numpy as np

    out = tmp_path / "emb.npz"
    assert cli.main(["embed", str(study), "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["embeddings"].shape == (240, 32) and z["ids"][0] == "u00000"
    assert cli.main(["embed", str(study), "--out", str(tmp_path / "emb.txt")]) == 2
    assert "use a .npz, .csv or .parquet" in capsys.readouterr().err
    res = run_study(study, tmp_path / "run")
    before = (res.out / "effects.csv").read_bytes()
    (res.out / "report.html").unlink()
    assert cli.main(["report", str(res.out)]) == 0
    html = (res.out / "report.html").read_text()
    assert "Hajek" in html and (res.out / "effects.csv").read_bytes() == before
    assert cli.main(["report", str(tmp_path)]) == 2
