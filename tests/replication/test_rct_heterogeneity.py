"""The RCT-heterogeneity simulation (replication/rct_heterogeneity/run.py) in its --quick mode."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "replication" / "rct_heterogeneity" / "run.py"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.slow
def test_quick_run_writes_the_table_and_sequences_beat_the_last_frame(tmp_path, load_script, check_rows):
    path = load_script(RUN).main(["--quick", "--out", str(tmp_path)])
    assert path == tmp_path / "results.md"
    text = path.read_text()
    rows = {_cells(line)[0]: _cells(line) for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| ---") and not line.startswith("| inputs")}
    assert list(rows) == ["tabular", "image (last frame)", "sequence", "combined"]
    num = re.compile(r"(-?\d+\.\d+) \((\d+\.\d+)\)")
    diff, diff_se = map(float, num.fullmatch(rows["sequence"][2]).groups())
    # the paired half-sample SE of RATE(sequence) - RATE(last frame): a one-sided 2-SE margin
    assert diff > 2 * diff_se
    seq_rate = float(num.fullmatch(rows["sequence"][1]).group(1))
    last_rate = float(num.fullmatch(rows["image (last frame)"][1]).group(1))
    assert seq_rate > last_rate
    assert float(rows["sequence"][3]) > float(rows["image (last frame)"][3])  # correlation with the true CATE
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["quick"] is True and len(res["replications"]) == 1
    check_rows(res["rows"])
    status = {r["id"]: r["status"] for r in res["rows"]}
    assert status["rate_sequence"] == "reproduced" and status["rate_sequence_vs_last"] == "reproduced"



def test_status_rule_says_differs_when_the_numbers_are_wrong(load_script):
    mod = load_script(RUN)
    # ten replications in which the sequence finds nothing and the last frame is better
    reps = []
    for k in range(10):
        rep = {name: dict(rate=0.0 + 0.01 * (k % 3 - 1), rate_se=0.05, diff=-0.2 + 0.01 * (k % 2), diff_se=0.05,
                          corr=0.3 + 0.01 * (k % 2), beta=0.5 + 0.01 * (k % 2), beta_se=0.1) for name in mod.INPUTS}
        rep["image (last frame)"]["corr"] = 0.6 + 0.01 * (k % 3)
        rep["_true_autoc"] = 0.8
        reps.append(rep)
    status = {r["id"]: r["status"] for r in mod.claim_rows(reps, 2000)}
    for key in ("rate_sequence", "rate_sequence_vs_last", "corr_sequence_vs_last", "calibration_sequence"):
        assert status[key].startswith("differs: "), (key, status[key])
