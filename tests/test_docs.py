"""The documentation site builds with warnings as errors, and its API page comes from the docstrings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f",
                        str(ROOT / "mkdocs.yml"), "-d", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert not re.search(r"^(WARNING|ERROR)", r.stderr, re.M), r.stderr[-4000:]
    return out


def test_every_page_is_built(site):
    for page in ("index.html", "quickstart/index.html", "guide/index.html", "methods/index.html",
                 "api/index.html", "study/index.html"):
        assert (site / page).is_file(), page


def test_api_reference_is_generated_from_docstrings(site):
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # text that exists only in the docstrings, not in docs/api.md
    assert "Estimate average effects with several methods and adjustment sets side by side" in api
    assert "Read the causalimages tutorial workspace" in api
    assert "as a self-contained HTML report" in api
    assert 'id="eocausal.analysis.estimate"' in api


def test_every_api_entry_is_rendered(site):
    """Each ``::: target`` of docs/api.md becomes a heading (tests/test_api.py checks the coverage)."""
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    targets = re.findall(r"^::: *([\w.]+)", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert len(targets) > 20
    missing = [t for t in targets if f'id="{t}"' not in api]
    assert not missing, missing


def test_guide_shows_the_screenshots(site):
    guide = (site / "guide" / "index.html").read_text(encoding="utf-8")
    for name in ("report.png", "overlap.png", "love_plot.png"):
        assert f"screenshots/{name}" in guide, name
        png = site / "screenshots" / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_inference_page_examples_run():
    """docs/inference.md's code blocks run as written, in order, in one namespace, and print what they say."""
    import contextlib
    import io
    import warnings

    text = (ROOT / "docs" / "inference.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 2
    ns: dict = {}
    out = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(out):
        warnings.simplefilter("ignore", DeprecationWarning)
        for code in blocks:
            exec(compile(code, "docs/inference.md", "exec"), ns)  # noqa: S102 - our own documentation
    printed = out.getvalue().splitlines()
    assert len(printed) == 3, printed
    for code, line in zip([c for b in blocks for c in b.splitlines() if c.startswith("print(")], printed):
        claim = code.split("# ", 1)[1].rstrip(". ") if "# " in code else ""
        assert claim.split("...")[0] in line, (claim, line)
