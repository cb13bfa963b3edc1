"""The One Map, Many Trials replication script runs end to end (quick mode) and its corrections
reduce the attenuation of the naive estimate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "replication" / "one_map_many_trials" / "run.py"
FIELDS = ("target", "source", "eocausal", "status")


def _valid_status(status: str) -> bool:
    return (status in ("reproduced", "not reproducible without restricted data")
            or (status.startswith("differs: ") and len(status) > len("differs: ")))


def _check_rows(rows):
    assert isinstance(rows, list) and rows
    for r in rows:
        assert all(isinstance(r.get(k), str) and r[k] for k in FIELDS), r
        assert _valid_status(r["status"]), r
    assert len({r["id"] for r in rows}) == len(rows)


@pytest.mark.slow
def test_quick_run_writes_the_table_and_corrects_attenuation(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "results.md").read_text()
    assert "| method | paper's slope | eocausal slope |" in md and "| LCC | 1.01 |" in md
    assert "Target vs eocausal" in (tmp_path / "README.md").read_text()
    full = json.loads((tmp_path / "results.json").read_text())
    assert full["quick"] is True
    _check_rows(full["rows"])
    assert "## Claims checked" in md
    res = full["paper_design"]
    naive = res["naive"]["slope"]
    assert naive < 0.8  # attenuated
    for m in ("lcc", "tweedie"):
        assert abs(res[m]["slope"] - 1) < abs(naive - 1)
        assert 0 <= res[m]["coverage"] <= 1 and res[m]["mean_se"] > 0


def test_committed_results_have_rows_in_the_make_readme_schema():
    full = json.loads((SCRIPT.parent / "results.json").read_text())
    assert full["quick"] is False  # a --quick run must not overwrite the committed results
    _check_rows(full["rows"])


def test_quick_default_output_is_outside_the_repository():
    import importlib.util

    spec = importlib.util.spec_from_file_location("one_map_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert SCRIPT.parents[2] not in mod.QUICK_OUT.resolve().parents


def test_status_rule_says_differs_when_the_numbers_are_wrong():
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("one_map_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    taus = np.linspace(-2, 2, 20)
    noise = np.random.default_rng(0).normal(0, 0.02, (5, 20))
    # naive not attenuated, corrections still attenuated: every slope claim must fail
    runs = [{"naive": {"estimate": t + noise[0, i]}, "lcc": {"estimate": 0.5 * t + noise[1, i]},
             "tweedie": {"estimate": 0.5 * t + noise[2, i]}, "ppi": {"estimate": 0.5 * t + noise[3, i]},
             "oracle": {"estimate": t + noise[4, i]}} for i, t in enumerate(taus)]
    summ = {m: dict(bias=-0.3, mc_se_bias=0.01, coverage=0.5, mean_se=0.05, sd_ratio=1.0)
            for m in ("naive", "lcc", "tweedie", "ppi")}
    summ["naive"]["coverage"] = 0.95
    rows = {r["id"]: r["status"] for r in mod.claim_rows(taus, runs, {}, summ, summ, 200, 200, 0.5, 0.01)}
    for key in ("slope_naive", "slope_lcc", "slope_tweedie", "slope_ppi", "bias_lcc", "coverage_naive",
                "coverage_lcc", "coverage_ppi_gaussian", "ppi_width"):
        assert rows[key].startswith("differs: "), (key, rows[key])
    assert rows["slope_oracle"] == "reproduced"
