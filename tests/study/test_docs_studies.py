"""Issue 14, item 3: the study-file reference is generated from the schema, and the examples in
the docs are the files under studies/, which validate and run.

docs/study.md is the output of :func:`eocausal.study.schema.reference_markdown`. After changing
the schema (a key, a default, a line of DOCS or of eocausal/options.py), regenerate it with

    python -m eocausal.study.schema > docs/study.md
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eocausal.cli import main
from eocausal.options import field_docs, toml_schema
from eocausal.study.inputs import check_study
from eocausal.study.schema import DOCS, SCHEMA, load_study, reference_markdown

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted((ROOT / "studies").glob("*.toml"))
SHARED = ROOT.parent / "shared" / "data"
NEEDS_SHARED = {"causalimages_uganda.toml"}  # studies that read ../shared/data
SLOW = {"demo.toml", "causalimages_uganda.toml"}  # runs of more than a few seconds
DOCS_DIR = ROOT / "docs"


def _param(p: Path):
    marks = []
    if p.name in NEEDS_SHARED:
        marks += [pytest.mark.shared, pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")]
    return pytest.param(p, marks=marks, id=p.stem)


def _run_param(p: Path):
    param = _param(p)
    marks = list(param.marks) + ([pytest.mark.slow] if p.name in SLOW else [])
    return pytest.param(p, marks=marks, id=p.stem)


# ----------------------------------------------------------------------------- the reference page
def test_docs_study_md_is_the_generated_reference():
    # Regenerate with: python -m eocausal.study.schema > docs/study.md
    assert (DOCS_DIR / "study.md").read_text(encoding="utf-8") == reference_markdown()


def test_every_key_has_a_line_of_documentation():
    for section, spec in SCHEMA.items():
        docs = field_docs() if section == "estimate" else DOCS[section]
        missing = [k for k in spec if not docs.get(k)]
        assert not missing, (section, missing)
        if section != "estimate":
            assert set(DOCS[section]) == set(spec), section  # no line for a key that is gone
    assert set(SCHEMA["estimate"]) == set(toml_schema())


def test_reference_lists_every_key_with_type_and_default():
    md = reference_markdown()
    sections = re.split(r"^## ", md, flags=re.M)
    by_name = {s.split("\n", 1)[0]: s for s in sections}
    for section, spec in SCHEMA.items():
        body = by_name[f"[{section}]"]
        rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", body, flags=re.M)}
        assert list(rows) == list(spec), section
    imagery = by_name["[imagery]"]
    assert re.search(r"^\| `min_valid` \| number \| `0.5` \| .*only with format raster, stac", imagery, re.M)
    assert re.search(r"^\| `chip_px` \| integer \| required for raster, stac \| between 1 and 4096", imagery, re.M)
    assert re.search(r"^\| `folds` \| integer \| `5` \|", by_name["[estimate]"], re.M)
    assert re.search(r"^\| `name` \| string \| required \|", by_name["[study]"], re.M)
    assert "| `csv` | `raster`, `npz`, `causalimages-tfrecord`, `stac`, `embedding-product`, `chip-table` (required" in md


def test_reference_page_is_in_the_site_navigation():
    assert re.search(r"^\s+- Study files: study\.md$", (ROOT / "mkdocs.yml").read_text(), re.M)


# ----------------------------------------------------------------------------- examples in the docs
def _toml_blocks(text: str) -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```", text, flags=re.M | re.S)


def test_study_examples_in_the_docs_are_files_under_studies():
    """No study file is written inline in the docs (the old one was not valid TOML): a ```toml
    block is an include of a file under studies/ (pymdownx.snippets), and that file exists."""
    included = set()
    for page in sorted(DOCS_DIR.glob("*.md")) + [ROOT / "README.md"]:
        for block in _toml_blocks(page.read_text(encoding="utf-8")):
            inc = re.fullmatch(r'--8<-- "(studies/[\w./-]+\.toml)"\n', block)
            if inc:
                assert (ROOT / inc.group(1)).is_file(), (page.name, inc.group(1))
                included.add(inc.group(1))
                continue
            doc = tomllib.loads(block)  # a fragment must at least be valid TOML
            assert "study" not in doc and "units" not in doc, \
                f"{page.name}: an inline study file; include one from studies/"
    assert "studies/villages_geotiff.toml" in included


def test_every_study_file_is_mentioned_in_the_docs():
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS_DIR.glob("*.md"))
    for p in STUDIES:
        assert f"studies/{p.name}" in text, p.name


# ----------------------------------------------------------------------------- the study files
@pytest.mark.parametrize("path", [_param(p) for p in STUDIES])
def test_every_study_file_validates(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert f"valid study {load_study(path).name!r}" in capsys.readouterr().out
    check_study(load_study(path))


@pytest.mark.parametrize("path", [_run_param(p) for p in STUDIES])
def test_every_study_file_runs(path, tmp_path, recwarn):
    """Each study runs end to end through the CLI and writes its outputs; studies with a known
    effect (simulated) recover it within four standard errors with images in the adjustment."""
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    effects = pd.read_csv(out / "effects.csv")
    man = json.loads((out / "manifest.json").read_text())
    assert man["study"] == load_study(path).name
    assert len(effects) > 0 and effects["estimate"].notna().all()
    truth = {"villages_geotiff.toml": 1.0, "villages_stac.toml": 1.0, "villages_alphaearth.toml": 1.0,
             "demo.toml": man["true_effect"]}.get(path.name)
    if truth is not None:
        img = effects[(effects["adjustment"] == "tabular+image") & (effects["method"] != "dim")]
        assert len(img) > 0
        assert (abs(img["estimate"] - truth) < 4 * img["std_error"]).all(), img[["method", "estimate", "std_error"]]


def test_villages_study_shows_the_confounding(tmp_path):
    """The example's story: the difference in means is biased up by the built-up share."""
    out = tmp_path / "v"
    assert main(["run", str(ROOT / "studies" / "villages_geotiff.toml"), "--out", str(out), "--quiet"]) == 0
    e = pd.read_csv(out / "effects.csv")
    dim = e[e["method"] == "dim"].iloc[0]
    assert dim["estimate"] - 1.0 > 3 * dim["std_error"]
    assert json.loads((out / "manifest.json").read_text())["dropped_units"]["n"] == 0


def test_example_data_are_what_their_script_writes(tmp_path, load_script):
    import rasterio

    script = load_script(ROOT / "studies" / "data" / "make_data.py")
    tif, csv = script.write(tmp_path)
    committed = ROOT / "studies" / "data"
    pd.testing.assert_frame_equal(pd.read_csv(csv), pd.read_csv(committed / "villages.csv"))
    with rasterio.open(tif) as new, rasterio.open(committed / "scene.tif") as old:
        np.testing.assert_array_equal(new.read(), old.read())
        assert new.transform == old.transform and new.crs == old.crs
        assert new.descriptions == old.descriptions == ("red", "green", "blue")
    assert (committed / "scene.tif").stat().st_size < 16_000
    # the STAC catalog (item JSON and band COGs) and the embedding product's layers
    new_files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    old_files = sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and p.suffix != ".py")
    assert new_files == old_files
    for rel in new_files:
        if rel.suffix == ".json":
            assert json.loads((tmp_path / rel).read_text()) == json.loads((committed / rel).read_text()), rel
        elif rel.suffix == ".tif" and rel.name != "scene.tif":
            with rasterio.open(tmp_path / rel) as new, rasterio.open(committed / rel) as old:
                np.testing.assert_array_equal(new.read(), old.read())
                assert new.transform == old.transform and new.crs == old.crs and new.nodata == old.nodata
    assert sum(p.stat().st_size for p in committed.rglob("*") if p.is_file()) < 400_000
