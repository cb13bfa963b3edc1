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


def test_heterogeneity_large_n_examples_run(tmp_path, monkeypatch):
    """docs/heterogeneity.md section 7 runs as written: dr_boost on 20,000 units, RATE, GATES and the
    calibration test, then a blockwise effect map from a 64-band embedding raster (written here)."""
    import numpy as np
    import rasterio
    from affine import Affine

    text = (ROOT / "docs" / "heterogeneity.md").read_text(encoding="utf-8")
    section = text[text.index("## 7. Large n"):text.index("## References")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    H, W = 40, 30
    rng = np.random.default_rng(1)
    with rasterio.open("embeddings_64band.tif", "w", driver="GTiff", height=H, width=W, count=64,
                       dtype="float32", crs="EPSG:32636", transform=Affine(10, 0, 400_000, 0, -10, 300_000)) as dst:
        dst.write(rng.standard_normal((64, H, W)).astype(np.float32))
    ns: dict = {}
    for code in blocks:
        exec(compile(code, "docs/heterogeneity.md", "exec"), ns)  # noqa: S102 - our own documentation
    assert ns["r"].estimate / ns["r"].std_error > 3  # the heterogeneity is found
    with rasterio.open(tmp_path / "effects.tif") as ds:
        assert (ds.height, ds.width, ds.count) == (H, W, 1) and ds.crs.to_epsg() == 32636
        band = ds.read(1)
    with rasterio.open("embeddings_64band.tif") as src:
        z = src.read().reshape(64, -1).T
    expect = ns["res"].predict(np.zeros((len(z), 10), np.float32), embeddings=z).reshape(H, W)
    np.testing.assert_allclose(band, expect, rtol=1e-6, atol=1e-6)
