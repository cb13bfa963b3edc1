"""replication/make_readme.py fills replication/README.md's table from the folders' results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "replication" / "make_readme.py"


@pytest.fixture(scope="module")
def mr(load_script):
    """replication/make_readme.py as a module."""
    return load_script(SCRIPT)

README = """# Replications

Intro text that must survive.

<!-- results:start -->
old table
<!-- results:end -->

## Status
Footer that must survive.
"""


def _row(target="t", source="s", eocausal="e", status="reproduced"):
    return {"target": target, "source": source, "eocausal": eocausal, "status": status}


@pytest.fixture
def tree(tmp_path):
    """replication/ with: a full folder, a bare-list folder, a schema-less one, a broken one,
    an extra folder with only run.py, and the other known folders missing."""
    (tmp_path / "README.md").write_text(README)
    a = tmp_path / "aid_africa"
    a.mkdir()
    (a / "results.json").write_text(json.dumps({"rows": [
        _row("paper number | with a pipe", "paper", "n/a", "not reproducible without restricted data"),
        _row("Simulated: recovery", "simulate.py", "bias 0.1", "reproduced")], "config": {"seed": 1}}))
    b = tmp_path / "rct_heterogeneity"
    b.mkdir()
    (b / "results.json").write_text(json.dumps([_row("bare list", status="differs: other data")]))
    c = tmp_path / "one_map_many_trials"
    c.mkdir()
    (c / "results.json").write_text(json.dumps({"config": {}, "paper_slopes": {"naive": 0.53}}))
    d = tmp_path / "integrating_eo"
    d.mkdir()
    (d / "results.json").write_text("{not json")
    e = tmp_path / "zz_extra"
    e.mkdir()
    (e / "run.py").write_text("")
    (tmp_path / "__pycache__").mkdir()
    return tmp_path


def _table_lines(text):
    block = text.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    return [line for line in block.strip().splitlines() if line.startswith("| [")]


def test_table_covers_every_folder_in_order_and_says_why_rows_are_missing(tree, mr):
    assert mr.main([], root=tree) == 0
    text = (tree / "README.md").read_text()
    assert text.startswith("# Replications\n\nIntro text that must survive.")
    assert text.rstrip().endswith("Footer that must survive.")
    assert "old table" not in text
    lines = _table_lines(text)
    folders = [line.split("]")[0][3:] for line in lines]
    assert folders == ["causalimages_uganda", "integrating_eo", "aid_africa", "aid_africa", "rct_heterogeneity",
                       "one_map_many_trials", "zz_extra"]
    by = dict(zip(folders, lines))
    assert "not run yet (no folder)" in by["causalimages_uganda"]
    assert "not run yet (results.json unreadable" in by["integrating_eo"]
    assert "not run yet (results.json has no 'rows' list" in by["one_map_many_trials"]
    assert "not run yet (no results.json)" in by["zz_extra"]
    assert "| bare list | s | e | differs: other data |" in by["rct_heterogeneity"]
    assert "paper number \\| with a pipe" in lines[2]  # a pipe in a cell does not break the table
    assert lines[3].endswith("| Simulated: recovery | simulate.py | bias 0.1 | reproduced |")
    assert "__pycache__" not in text


def test_rewrite_is_idempotent_atomic_and_check_detects_stale_tables(tree, mr):
    assert mr.main(["--check"], root=tree) == 1  # the README still holds "old table"
    mr.main([], root=tree)
    first = (tree / "README.md").read_text()
    assert mr.main(["--check"], root=tree) == 0
    assert mr.rewrite_block(tree / "README.md", mr.table(tree)) is False  # unchanged: not rewritten
    assert (tree / "README.md").read_text() == first
    assert not [p for p in tree.iterdir() if p.name.endswith(".tmp")]
    (tree / "aid_africa" / "results.json").write_text(json.dumps({"rows": [_row("new target")]}))
    assert mr.main(["--check"], root=tree) == 1
    mr.main([], root=tree)
    assert "| new target |" in (tree / "README.md").read_text()


def test_missing_or_repeated_markers_are_refused(tree, mr):
    (tree / "README.md").write_text("# no markers here\n")
    with pytest.raises(ValueError, match="results:start"):
        mr.main([], root=tree)
    twice = README + "\n<!-- results:start -->\n<!-- results:end -->\n"
    (tree / "README.md").write_text(twice)
    with pytest.raises(ValueError, match="exactly one"):
        mr.main([], root=tree)
    assert (tree / "README.md").read_text() == twice  # left untouched


def test_malformed_rows_are_shown_not_dropped(tree, mr):
    (tree / "aid_africa" / "results.json").write_text(json.dumps({"rows": ["just text", {"target": "partial"}]}))
    lines = [line for line in _table_lines(mr.replace_block(README, mr.table(tree))) if "aid_africa" in line]
    assert "malformed row (not an object)" in lines[0]
    assert lines[1].startswith("| [aid_africa](aid_africa/) | partial |  |  |  |")


def test_the_repository_readme_has_the_markers(mr):
    text = (SCRIPT.parent / "README.md").read_text()
    assert text.count(mr.START) == 1 and text.count(mr.END) == 1
    mr.replace_block(text, mr.table())  # the real folders render without error
