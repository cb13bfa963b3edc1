#!/usr/bin/env python3
"""Fill the table of replication/README.md from each folder's results.json.

Every replication folder's script writes ``replication/<folder>/results.json``; this script
reads them and rewrites the block between ``<!-- results:start -->`` and
``<!-- results:end -->`` of replication/README.md with one table over all folders. Nothing in
the table is typed by hand.

The schema of results.json (documented in replication/README.md): a JSON object with a key
``"rows"`` holding a list (a bare list is accepted too) of objects with the string fields

- ``target``: the claim or number checked (a paper's estimate, or a property on simulated data);
- ``source``: where the target comes from (paper, table, version; or the simulation);
- ``eocausal``: eocausal's number for it (text, may hold an interval);
- ``status``: ``reproduced``, ``differs: <why>`` or ``not reproducible without restricted data``.

Missing folders or files give a row "not run yet"; a file that is not valid JSON or lacks the
rows gives a row saying so. The rewrite is atomic (temporary file, then rename).

Usage::

    python replication/make_readme.py            # rewrite replication/README.md
    python replication/make_readme.py --check    # exit 1 when the README is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eocausal._atomic import atomic_write_text  # noqa: E402

START, END = "<!-- results:start -->", "<!-- results:end -->"
#: Folders in the order of the table; any other folder with a results.json or run.py follows.
FOLDERS = ("causalimages_uganda", "integrating_eo", "aid_africa", "rct_heterogeneity", "one_map_many_trials")
FIELDS = ("target", "source", "eocausal", "status")
STATUSES = ("reproduced", "differs", "not reproducible without restricted data", "not run yet")


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def folder_rows(folder: Path) -> list[dict]:
    """Rows of one folder's results.json, or one row saying why there are none."""
    path = folder / "results.json"
    if not folder.is_dir():
        return [dict(target="", source="", eocausal="", status="not run yet (no folder)")]
    if not path.exists():
        return [dict(target="", source="", eocausal="", status="not run yet (no results.json)")]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [dict(target="", source="", eocausal="", status=f"not run yet (results.json unreadable: {exc})")]
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows:
        return [dict(target="", source="", eocausal="",
                     status="not run yet (results.json has no 'rows' list in the schema above)")]
    out = []
    for r in rows:
        if not isinstance(r, dict):
            out.append(dict(target=_cell(r), source="", eocausal="", status="malformed row (not an object)"))
            continue
        out.append({k: _cell(r.get(k, "")) for k in FIELDS})
    return out


def folders(root: Path = HERE) -> list[str]:
    extra = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in FOLDERS
                   and not p.name.startswith((".", "_")) and ((p / "results.json").exists() or (p / "run.py").exists()))
    return list(FOLDERS) + extra


def table(root: Path = HERE) -> str:
    """The Markdown table over all folders."""
    lines = ["| folder | target | source | eocausal | status |", "|---|---|---|---|---|"]
    for name in folders(root):
        for r in folder_rows(root / name):
            lines.append(f"| [{name}]({name}/) | {r['target']} | {r['source']} | {r['eocausal']} | {r['status']} |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str, *, where: str = "README") -> str:
    """``text`` with the part between the markers replaced by ``block``."""
    i, j = text.find(START), text.find(END)
    if i < 0 or j < 0 or j < i or text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"{where}: needs exactly one {START} followed by one {END}; add them around the table")
    return text[:i + len(START)] + "\n" + block.rstrip("\n") + "\n" + text[j:]


def rewrite_block(path: Path, block: str) -> bool:
    """Rewrite the block of ``path`` atomically; True when the file changed."""
    path = Path(path)
    old = path.read_text(encoding="utf-8")
    new = replace_block(old, block, where=str(path))
    if new != old:
        atomic_write_text(path, new)
    return new != old


def main(argv=None, root: Path = HERE) -> int:
    p = argparse.ArgumentParser(description="Fill replication/README.md's table from the folders' results.json")
    p.add_argument("--check", action="store_true", help="only check that the README is up to date (exit 1 if not)")
    p.add_argument("--readme", type=Path, default=None, help="README to rewrite (default: replication/README.md)")
    a = p.parse_args(argv)
    readme = a.readme or root / "README.md"
    block = table(root)
    if a.check:
        old = readme.read_text(encoding="utf-8")
        if replace_block(old, block, where=str(readme)) != old:
            print(f"{readme} is out of date: run python replication/make_readme.py", file=sys.stderr)
            return 1
        return 0
    rewrite_block(readme, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
