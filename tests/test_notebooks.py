"""The notebooks in docs/notebooks execute from top to bottom without an exception.

They run on a kernel of this interpreter (a kernel spec written to a temporary JUPYTER_PATH, so
no system-wide ``python3`` spec can point elsewhere), in their own folder, with their outputs
written to a temporary folder. Warnings in a notebook are printed there, not failures; any
exception fails the test with the cell that raised it. The notebooks are stored without
outputs, which is checked too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "docs" / "notebooks"
UGANDA_DATA = ROOT.parent / "shared" / "data" / "causalimages" / "CausalImagesTutorialData.RData"
KERNEL = "eocausal-test-venv"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "eocausal tests", "language": "python"}), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silences jupyter_core's path-migration warning
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("EOCAUSAL_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # small linear algebra on a busy machine: one BLAS thread is much faster than several
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    return tmp_path / "out"


def _execute(name: str, timeout: int = 300):
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, allow_errors=False,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def _stderr(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("name") == "stderr")


@pytest.mark.parametrize("name", ["uganda_tutorial.ipynb", "many_trials_debiased.ipynb",
                                  "catalogs_and_products.ipynb"])
def test_notebooks_are_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(c.outputs == [] and c.execution_count is None for c in code), \
        f"{name}: clear the outputs before committing (jupyter nbconvert --clear-output --inplace)"


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.skipif(not UGANDA_DATA.is_file(), reason=f"{UGANDA_DATA} not found (../shared/data beside the repo)")
def test_uganda_tutorial_runs(kernel_env):
    nb = _execute("uganda_tutorial.ipynb")
    report = kernel_env / "uganda_report.html"
    assert report.is_file() and report.stat().st_size > 50_000
    html = report.read_text(encoding="utf-8")
    assert "Overlap and balance" in html and "data:image/png;base64," in html
    assert "Traceback" not in _stderr(nb)
    # the side-by-side table was displayed with its five columns
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert any('class="compare"' in o["data"]["text/html"] and "AIPW, tabular + image" in o["data"]["text/html"]
               for o in shown)


@pytest.mark.slow
def test_many_trials_notebook_runs(kernel_env):
    nb = _execute("many_trials_debiased.ipynb")
    report = kernel_env / "many_trials_report.html"
    assert report.is_file()
    assert "Debiased outcomes" in report.read_text(encoding="utf-8")
    assert "Traceback" not in _stderr(nb)


@pytest.mark.slow
def test_catalogs_and_products_notebook_runs(kernel_env):
    """Issue 17: a study from a local STAC catalog and one from an embedding product, end to end."""
    nb = _execute("catalogs_and_products.ipynb")
    assert (kernel_env / "stac" / "report.html").is_file() and (kernel_env / "aef" / "manifest.json").is_file()
    assert "Traceback" not in _stderr(nb)
    text = "\n".join(o.get("text", "") or "".join(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "largest difference (reflectance)" in text and "STAC imagery" in text
    assert "[2020]" in text and "Google DeepMind" in text and "post-treatment" in text
