"""The One Map, Many Trials replication script runs end to end (quick mode) and its corrections
reduce the attenuation of the naive estimate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "replication" / "one_map_many_trials" / "run.py"


@pytest.mark.slow
def test_quick_run_writes_the_table_and_corrects_attenuation(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "results.md").read_text()
    assert "| method | paper's slope | eocausal slope |" in md and "| LCC | 1.01 |" in md
    assert "Target vs eocausal" in (tmp_path / "README.md").read_text()
    res = json.loads((tmp_path / "results.json").read_text())["paper_design"]
    naive = res["naive"]["slope"]
    assert naive < 0.8  # attenuated
    for m in ("lcc", "tweedie"):
        assert abs(res[m]["slope"] - 1) < abs(naive - 1)
        assert 0 <= res[m]["coverage"] <= 1 and res[m]["mean_se"] > 0
