"""`eocausal report DIR` renders a finished output again without loss: tables byte for byte, every
report section, from effects.csv plus the results sidecar (issue 13)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eocausal import cli
from eocausal._types import TIDY_COLUMNS, EffectRow
from eocausal.errors import ColumnError, DataQualityWarning, InputError
from eocausal.report.outputs import read_outputs
from eocausal.results import EffectTable
from eocausal.study.runner import run_study

ROOT = Path(__file__).resolve().parents[1]
UGANDA = ROOT.parent / "shared" / "data" / "causalimages"
RENDERED = ("report.html", "tables/effects.md", "tables/effects.tex")


def _h2(html: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", html)


def _same_rows(a: EffectTable, b: EffectTable) -> None:
    assert len(a.rows) == len(b.rows)
    for ra, rb in zip(a.rows, b.rows):
        for c in TIDY_COLUMNS:
            va, vb = getattr(ra, c), getattr(rb, c)
            assert type(va) is type(vb), (c, va, vb)
            assert va == vb or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)), (c, va, vb)


def _same_table(a: EffectTable, b: EffectTable) -> None:
    _same_rows(a, b)
    assert a.notes == b.notes and len(a.notes) > 0
    assert dict(a.design) == dict(b.design)
    assert list(a.propensities) == list(b.propensities) and a.propensities
    for name, fa in a.propensities.items():
        fb = b.propensities[name]
        for f in fa.__dataclass_fields__:
            va, vb = getattr(fa, f), getattr(fb, f)
            if isinstance(va, np.ndarray):
                assert va.dtype == vb.dtype and np.array_equal(va, vb, equal_nan=True), (name, f)
            elif isinstance(va, dict):
                assert list(va) == list(vb) and all(np.array_equal(va[k], vb[k]) for k in va), (name, f)
            else:
                assert va == vb and type(va) is type(vb), (name, f, va, vb)
    assert list(a.balance) == list(b.balance) and a.balance
    for name, ba in a.balance.items():
        pd.testing.assert_frame_equal(ba, b.balance[name], check_exact=True)
        assert ba.attrs == b.balance[name].attrs


def _rerender_and_compare(out: Path, table: EffectTable) -> str:
    """Delete the rendered files, run `eocausal report`, compare with the run's own bytes."""
    written = {f: (out / f).read_bytes() for f in RENDERED}
    kept = {f: (out / f).read_bytes() for f in ("effects.csv", "results.json", "results.npz", "manifest.json")}
    for f in RENDERED:
        (out / f).unlink()  # so an unchanged file cannot pass for a re-rendered one
    assert cli.main(["report", str(out)]) == 0
    for f in RENDERED:
        assert (out / f).read_bytes() == written[f], f
    for f, data in kept.items():
        assert (out / f).read_bytes() == data, f
    again, _ = read_outputs(out)
    _same_table(table, again)
    return written["report.html"].decode("utf-8")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, small_study_toml):
    """The demo study at a small size (the embedded demo.toml runs 1000 units with 256 features)."""
    study = tmp_path_factory.mktemp("study") / "small.toml"
    study.write_text(small_study_toml("small demo: <b>image</b> & 100% simulated", 11,
                                      description="The demo's data-generating process, small.",
                                      methods=["dim", "ipw-ht", "ipw-hajek"], simulate="tau = 1.0\n",
                                      extra='[report]\nformats = ["html", "md", "tex"]\n'))
    return run_study(study, tmp_path_factory.mktemp("run") / "out")


def test_report_reproduces_tables_and_every_section(small_run, capsys):
    html = _rerender_and_compare(small_run.out, small_run.table)
    # the headline sits above these; the example chips (Imagery) survive the re-render
    assert _h2(html) == ["Design", "Imagery", "Estimates", "Overlap and balance", "Data", "Sensitivity",
                         "Reproducibility"]
    md = (small_run.out / "tables" / "effects.md").read_text()
    assert "[1] " in md and "Balance:" in md  # the numbered notes survive
    assert "true effect is <strong>1.0</strong>" in html
    assert "wrote " in capsys.readouterr().out


def test_report_twice_gives_the_same_bytes(small_run):
    before = {f: (small_run.out / f).read_bytes() for f in RENDERED}
    assert cli.main(["report", str(small_run.out)]) == 0
    assert {f: (small_run.out / f).read_bytes() for f in RENDERED} == before


def test_effects_csv_reads_back_exactly(small_run):
    table, _ = read_outputs(small_run.out)
    _same_rows(small_run.table, table)
    # floats with all their digits, not rounded for display
    est = small_run.table.rows[0].estimate
    assert repr(est) in (small_run.out / "effects.csv").read_text()


def test_from_tidy_inverts_tidy_for_every_field(small_run):
    t = small_run.table
    back = EffectTable.from_tidy(t.tidy(), notes=t.notes, design=t.design, propensities=t.propensities,
                                 balance=t.balance)
    _same_rows(t, back)
    assert back.to_markdown() == t.to_markdown() and back.to_latex(caption="c") == t.to_latex(caption="c")


def test_from_tidy_converts_cells_to_the_field_types():
    frame = pd.DataFrame({"trial": ["all"], "estimand": ["ATE"], "method": ["dim"], "adjustment": ["none"],
                          "estimate": ["0.5"], "std_error": [None], "ci_low": [np.nan], "ci_high": [1.0],
                          "p_value": [0.2], "n": [10.0], "n_treated": ["4"], "n_clusters": [np.nan],
                          "clip": [None], "note": [np.nan]})
    r = EffectTable.from_tidy(frame).rows[0]
    assert r.estimate == 0.5 and math.isnan(r.std_error) and math.isnan(r.ci_low)
    assert r.n == 10 and type(r.n) is int and r.n_treated == 4 and type(r.n_treated) is int
    assert r.n_clusters is None and r.clip is None and r.note == ""
    assert r.se_type == EffectRow.__dataclass_fields__["se_type"].default  # absent column: the default


def test_from_tidy_refuses_missing_unknown_and_bad_cells():
    ok = dict(trial="all", estimand="ATE", method="dim", adjustment="none", estimate=0.5, std_error=0.1,
              ci_low=0.3, ci_high=0.7, p_value=0.01, n=10, n_treated=4)
    with pytest.raises(ColumnError, match=r"lacks columns \['n_treated'\]"):
        EffectTable.from_tidy(pd.DataFrame([{k: v for k, v in ok.items() if k != "n_treated"}]))
    with pytest.raises(ColumnError, match="not EffectRow fields.*'bogus'"):
        EffectTable.from_tidy(pd.DataFrame([{**ok, "bogus": 1}]))
    with pytest.raises(InputError, match="column 'n', row 0: 10.5 is not a int"):
        EffectTable.from_tidy(pd.DataFrame([{**ok, "n": 10.5}]))
    with pytest.raises(InputError, match="column 'n_treated', row 1: empty"):
        EffectTable.from_tidy(pd.DataFrame([ok, {**ok, "n_treated": None}], dtype=object))


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.skipif(not UGANDA.is_dir(), reason="needs ../shared/data/causalimages")
def test_uganda_report_reproduces_tables_and_every_section(tmp_path):
    with pytest.warns(DataQualityWarning, match="imputed 7 missing covariate values"):
        res = run_study(ROOT / "studies" / "causalimages_uganda.toml", tmp_path / "uganda")
    html = _rerender_and_compare(res.out, res.table)
    assert {"Design", "Data", "Estimates", "Overlap and balance", "Sensitivity", "Reproducibility"} <= set(_h2(html))
    assert len(html) > 200_000  # the figures are back (the lossy report was 42 KB)
