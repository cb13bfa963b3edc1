"""The causalimages tutorial-data replication (replication/causalimages_uganda/run.py) in its
--quick mode, and the study file studies/causalimages_uganda.toml.

Reads ../shared/data/causalimages (GPL-3 data of the R package causalimages); skipped when it
is absent.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from eocausal.errors import DataQualityWarning

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "replication" / "causalimages_uganda" / "run.py"
STUDY = ROOT / "studies" / "causalimages_uganda.toml"
DATA = ROOT.parent / "shared" / "data" / "causalimages" / "CausalImagesTutorialData.RData"

needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data/causalimages is absent")
STATUSES = ("reproduced", "differs: ", "no published target; eocausal's estimate reported",
            "not reproducible without restricted data")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, run_quick):
    out = tmp_path_factory.mktemp("uganda_quick")
    return out, run_quick(RUN, out)


@pytest.mark.slow
@pytest.mark.shared
@needs_data
def test_quick_run_rows_have_target_source_value_and_status(quick_run):
    out, res = quick_run
    rows = {r["id"]: r for r in res["rows"]}
    for r in res["rows"]:
        assert {"quantity", "target", "source", "eocausal", "status"} <= set(r)
        assert r["status"].startswith(STATUSES), r
    for fact in ("n_units", "n_treated", "n_images", "x_structure", "x_na", "x_missing", "dim"):
        assert rows[fact]["status"] == "reproduced", rows[fact]
    assert rows["n_units"]["eocausal"] == 2082 and rows["n_treated"]["eocausal"] == 825
    assert rows["n_images"]["eocausal"] == 327
    # every estimate of the pre-treatment analyses is reported, with an SE, as having no target
    for key in ("tabular_ipw-hajek", "tabular_aipw", "rf_image_aipw", "rf_tabular+image_ipw-hajek",
                "cnn_emb_tabular+image_aipw", "cnn_prop_ipw-hajek"):
        assert rows[key]["status"] == "no published target; eocausal's estimate reported"
        assert rows[key]["std_error"] > 0 and rows[key]["ci"][0] < rows[key]["eocausal"] < rows[key]["ci"][1]
    assert res["quick"] is True and res["timing"]["total"] > 0


@pytest.mark.slow
@pytest.mark.shared
@needs_data
def test_quick_run_catches_the_bad_controls(quick_run):
    _, res = quick_run
    bad = res["bad_control"]
    tut = bad["tutorial X, tabular"]
    caught = {w["type"] for w in tut["warnings"]} | ({tut["error"]["type"]} if tut["error"] else set())
    assert caught & {"OverlapWarning", "SeparationError"}
    if tut["error"] is None:
        assert tut["overlap"]["tabular"]["n_clipped"] > 100  # propensities pile up at the clip
    allx = bad["all X (X1 = W), tabular"]
    assert allx["error"]["type"] == "SeparationError"
    statuses = [r["status"] for r in res["rows"] if r["id"].startswith("bad_control")]
    assert statuses and all(s == "reproduced" for s in statuses)


@pytest.mark.slow
@pytest.mark.shared
@needs_data
def test_quick_run_writes_tables_readme_block_and_figures(quick_run):
    out, res = quick_run
    readme = (out / "README.md").read_text()
    start, end = readme.index("<!-- results:start -->"), readme.index("<!-- results:end -->")
    block = readme[start:end]
    assert "| quantity | target | source | eocausal | status |" in block and "QUICK MODE" in block
    # the folder's own README text outside the block was carried over
    assert readme[:start] == (RUN.parent / "README.md").read_text().split("<!-- results:start -->")[0]
    assert "| units | 2,082 |" in (out / "results.md").read_text()
    for name in ("overlap.png", "overlap_bad_control.png", "love.png", "salience.png", "forest.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(res["figures"].values()) >= {"overlap.png", "salience.png", "love.png"}


def test_committed_results_are_the_full_run():
    res = json.loads((RUN.parent / "results.json").read_text())
    assert res["quick"] is False  # a --quick run must not overwrite the committed results


@needs_data
def test_study_file_validates_and_resolves_the_data():
    from eocausal.study.schema import load_study

    study = load_study(STUDY)
    assert study["units"]["format"] == "causalimages-rdata"
    assert study.resolve(study["units"]["path"]).resolve() == DATA.resolve()
    assert study["units"]["covariate_set"] == "pretreatment"
    assert "aipw" in study["estimate"]["methods"]


@pytest.mark.slow
@pytest.mark.shared
@needs_data
def test_study_runs_end_to_end_with_a_small_encoder(tmp_path):
    from threadpoolctl import threadpool_limits

    from eocausal.study.runner import run_study
    from eocausal.study.schema import Study, load_study

    study = load_study(STUDY)
    sections = copy.deepcopy(study.sections)
    sections["encoder"].update(n_features=16, device="cpu")
    sections["estimate"].update(folds=3)
    sections["report"].update(formats=["md"])
    small = Study(sections=sections, path=study.path, sha256=study.sha256, base_dir=study.base_dir)
    with threadpool_limits(1), pytest.warns(DataQualityWarning, match="imputed 7 missing covariate values"):
        result = run_study(small, tmp_path / "run")
    effects = pd.read_csv(tmp_path / "run" / "effects.csv")
    assert set(effects["method"]) == {"dim", "ipw-hajek", "aipw"}
    assert set(effects["adjustment"]) == {"none", "tabular", "image", "tabular+image"}
    assert (effects["n"] == 2082).all() and (effects["n_treated"] == 825).all()
    dim = effects.loc[effects["method"] == "dim", "estimate"].item()
    assert dim == pytest.approx(0.7414915, abs=1e-6)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["study"] == "causalimages tutorial data (Uganda)"
    assert (tmp_path / "run" / "tables" / "effects.md").exists()
    assert result.table.design["n_clusters"] == 327
