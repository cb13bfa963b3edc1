"""The One Map, Many Trials replication script runs end to end (quick mode) and its corrections
reduce the attenuation of the naive estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "replication" / "one_map_many_trials" / "run.py"


@pytest.mark.slow
def test_quick_run_writes_the_table_and_corrects_attenuation(tmp_path, run_quick, check_rows):
    full = run_quick(SCRIPT, tmp_path, timeout=300)
    md = (tmp_path / "results.md").read_text()
    assert "| method | paper's slope | eocausal slope |" in md and "| LCC | 1.01 |" in md
    assert "Target vs eocausal" in (tmp_path / "README.md").read_text()
    assert full["quick"] is True
    check_rows(full["rows"])
    assert "## Claims checked" in md
    res = full["paper_design"]
    naive = res["naive"]["slope"]
    assert naive < 0.8  # attenuated
    for m in ("lcc", "tweedie"):
        assert abs(res[m]["slope"] - 1) < abs(naive - 1)
        assert 0 <= res[m]["coverage"] <= 1 and res[m]["mean_se"] > 0



def test_status_rule_says_differs_when_the_numbers_are_wrong(load_script):
    import numpy as np

    mod = load_script(SCRIPT)
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
