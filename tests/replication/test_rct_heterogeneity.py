"""The RCT-heterogeneity simulation (replication/rct_heterogeneity/run.py) in its --quick mode."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "replication" / "rct_heterogeneity" / "run.py"


def _load():
    spec = importlib.util.spec_from_file_location("rct_heterogeneity_run", RUN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.slow
def test_quick_run_writes_the_table_and_sequences_beat_the_last_frame(tmp_path):
    path = _load().main(["--quick", "--out", str(tmp_path)])
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
