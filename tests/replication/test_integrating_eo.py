"""The 'Integrating Earth Observation Data into Causal Inference' simulations
(replication/integrating_eo/run.py) in their --quick mode.

Reads the real Landsat scene in ../shared/data/landsat; skipped when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "replication" / "integrating_eo" / "run.py"
RASTER = ROOT.parent / "shared" / "data" / "landsat" / "landsat.tif"

needs_landsat = pytest.mark.skipif(not RASTER.exists(), reason="../shared/data/landsat is absent")
SETTINGS = ("A:unadjusted", "A:oracle", "A:f1", "A:f2", "A:f4", "A:f8",
            "B:unadjusted", "B:oracle", "B:misspecified", "B:remedy")
METRICS = ("bias", "bias_mcse", "rmse", "sd", "mean_se", "coverage", "coverage_mcse", "reps")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, run_quick):
    out = tmp_path_factory.mktemp("integrating_eo_quick")
    return out, run_quick(RUN, out)


@pytest.mark.slow
@pytest.mark.shared
@needs_landsat
def test_quick_run_has_every_setting_with_its_metrics(quick_run):
    out, res = quick_run
    settings = {s["key"]: s for s in res["settings"]}
    assert tuple(settings) == SETTINGS
    reps = res["config"]["reps"]
    for key, s in settings.items():
        methods = ("dim",) if key.endswith("unadjusted") else ("ipw-hajek", "aipw")
        assert tuple(s["methods"]) == methods
        for m in methods:
            v = s["methods"][m]
            assert set(METRICS) <= set(v) and v["reps"] == reps
            assert 0 <= v["coverage"] <= 1 and v["rmse"] >= abs(v["bias"]) - 1e-12
    table = (out / "results.md").read_text()
    for label in ("image, pooling 1 (64 px)", "image, pooling 8 (8 px)", "(misspecified)", "oracle (true C)"):
        assert label in table
    for r in res["rows"]:
        assert {"quantity", "target", "source", "eocausal", "status"} <= set(r)


@pytest.mark.slow
@pytest.mark.shared
@needs_landsat
def test_bias_at_the_finest_scale_is_smaller_than_at_the_coarsest(quick_run):
    _, res = quick_run
    s = {x["key"]: x["methods"] for x in res["settings"]}
    for m in ("ipw-hajek", "aipw"):
        fine, coarse = s["A:f1"][m], s["A:f8"][m]
        tol = 3 * np.hypot(fine["bias_mcse"], coarse["bias_mcse"])  # Monte Carlo error of the difference
        assert abs(fine["bias"]) + tol < abs(coarse["bias"]), (m, fine, coarse)
        # coarsening past the confounder's scale leaves the unadjusted bias (same draws of W and Y)
        unadjusted = s["A:unadjusted"]["dim"]["bias"]
        assert coarse["bias"] == pytest.approx(unadjusted, abs=3 * coarse["bias_mcse"])
        # the misspecified confounder (layout) is invisible to the whole-chip encoder
        mis, unadj_b = s["B:misspecified"][m], s["B:unadjusted"]["dim"]
        assert mis["bias"] == pytest.approx(unadj_b["bias"], abs=3 * mis["bias_mcse"])
    # pooling by 4 and 8 removes the planted 2-px stripes exactly
    diff = res["design"]["max_abs_pooled_difference_planted_vs_original"]
    assert diff["4"] < 1e-9 and diff["8"] < 1e-9 and diff["1"] > 1


@pytest.mark.slow
@pytest.mark.shared
@needs_landsat
def test_quick_run_writes_the_readme_block_and_the_plot(quick_run):
    out, _ = quick_run
    readme = (out / "README.md").read_text()
    start, end = readme.index("<!-- results:start -->"), readme.index("<!-- results:end -->")
    assert "| quantity | target | source | eocausal | status |" in readme[start:end]
    template = (RUN.parent / "README.md").read_text()
    assert readme[:start] == template.split("<!-- results:start -->")[0]  # only the block is rewritten
    assert readme[end:] == "<!-- results:end -->" + template.split("<!-- results:end -->")[1]
    for name in ("bias_rmse_coverage.png", "chips.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stripes_vanish_under_pooling_beyond_their_scale(load_script):
    mod = load_script(RUN)
    rng = np.random.default_rng(0)
    chips = rng.uniform(0, 255, size=(3, 3, mod.PX, mod.PX))
    planted = mod.plant(chips, np.array([10.0, 20.0, 30.0]), np.array([[0, 8], [16, 32], [32, 0]]),
                        np.array([0, 1, 0]))
    for f in (4, 8):
        np.testing.assert_allclose(mod.pool(planted, f), mod.pool(chips, f), atol=1e-9)
    assert np.abs(mod.pool(planted, 2) - mod.pool(chips, 2)).max() == pytest.approx(30.0)
