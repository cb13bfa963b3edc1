"""Tests for eocausal.results (EffectTable, Summary, concat) and eocausal._types (EffectRow)."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest

from eocausal._types import TIDY_COLUMNS, EffectRow, PropensityFit
from eocausal.results import EffectTable, Summary, concat

NAN = math.nan


def row(**kw) -> EffectRow:
    base = dict(trial="main", estimand="ATE", method="dim", adjustment="none", estimate=1.2346,
                std_error=0.25, ci_low=0.7446, ci_high=1.7246, p_value=0.0123, n=200, n_treated=90)
    base.update(kw)
    return EffectRow(**base)


ROWS = (
    row(),
    row(method="ipw-ht", adjustment="image", estimate=0.98765, std_error=0.1, ci_low=0.79165,
        ci_high=1.18365, p_value=0.0004, n_clusters=50, se_type="cluster", clip=0.001, n_clipped=3),
    row(method="ipw-hajek", adjustment="tabular+image", estimate=-0.5, std_error=0.5,
        ci_low=-1.48, ci_high=0.48, p_value=0.3173),
)
NOTES = ("Standard errors are heteroscedasticity robust (HC1).", "Propensities clipped to [0.001, 0.999].")
DESIGN = {"study": "demo", "n": 200, "n_treated": 90, "n_clusters": 50, "outcome": "y",
          "propensity": "ridge-logit"}


@pytest.fixture
def table() -> EffectTable:
    return EffectTable(rows=ROWS, notes=NOTES, design=DESIGN)


# ----------------------------------------------------------------------------- EffectRow / tidy
def test_tidy_columns_are_the_effectrow_fields():
    assert TIDY_COLUMNS == tuple(f.name for f in dataclasses.fields(EffectRow))
    assert TIDY_COLUMNS[:4] == ("trial", "estimand", "method", "adjustment")
    assert "note" in TIDY_COLUMNS and "p_value" in TIDY_COLUMNS


def test_effectrow_defaults_and_as_dict():
    r = row()
    d = r.as_dict()
    assert tuple(d) == TIDY_COLUMNS
    assert d["n_clusters"] is None and d["se_type"] == "" and d["outcome_type"] == "observed"
    assert d["clip"] is None and d["n_clipped"] == 0 and d["n_trimmed"] == 0
    assert math.isnan(d["ess_treated"]) and math.isnan(d["ess_control"])
    assert d["estimate"] == 1.2346
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.estimate = 2.0


def test_tidy_columns_and_values_equal_rows(table):
    t = table.tidy()
    assert isinstance(t, pd.DataFrame)
    assert tuple(t.columns) == TIDY_COLUMNS
    assert len(t) == 3
    for i, r in enumerate(ROWS):
        for col, val in r.as_dict().items():
            got = t.iloc[i][col]
            if isinstance(val, float) and math.isnan(val):
                assert math.isnan(got)
            elif val is None:
                assert got is None or (isinstance(got, float) and math.isnan(got))
            else:
                assert got == val, (i, col)
    assert t["method"].tolist() == ["dim", "ipw-ht", "ipw-hajek"]
    np.testing.assert_allclose(t["estimate"], [1.2346, 0.98765, -0.5], rtol=0, atol=0)


def test_tidy_of_empty_table_has_columns():
    t = EffectTable(rows=()).tidy()
    assert tuple(t.columns) == TIDY_COLUMNS and len(t) == 0


def test_len_and_iter(table):
    assert len(table) == 3
    assert list(table) == list(ROWS)


def test_effecttable_is_frozen(table):
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.notes = ()


# ----------------------------------------------------------------------------- row()
def test_row_lookup(table):
    assert table.row(method="ipw-ht") is ROWS[1]
    assert table.row(method="dim", adjustment="none", trial="main", estimand="ATE") is ROWS[0]


def test_row_lookup_none_or_several_raise_keyerror(table):
    with pytest.raises(KeyError, match=r"0 rows match method='ipw-ht', adjustment='tabular'"):
        table.row(method="ipw-ht", adjustment="tabular")
    with pytest.raises(KeyError, match="0 rows match method='aipw'"):
        table.row(method="aipw")
    two = EffectTable(rows=(row(), row(adjustment="image")))
    with pytest.raises(KeyError, match="2 rows match method='dim'"):
        two.row(method="dim")
    assert two.row(method="dim", adjustment="image").adjustment == "image"


# ----------------------------------------------------------------------------- summary
def test_summary_text(table):
    s = table.summary()
    assert isinstance(s, Summary)
    text = str(s)
    assert repr(s) == text
    lines = text.splitlines()
    assert lines[0] == "Causal effect estimates"
    assert lines[1] == "=" * 23
    assert re.search(r"^Study:\s+demo$", text, re.M)
    assert re.search(r"^Units:\s+200$", text, re.M)
    assert re.search(r"^Treated:\s+90$", text, re.M)
    assert re.search(r"^Clusters:\s+50$", text, re.M)
    assert re.search(r"^Outcome:\s+y$", text, re.M)
    assert re.search(r"^Propensity:\s+ridge-logit$", text, re.M)
    header = next(ln for ln in lines if ln.startswith("Estimand"))
    for col in ("Method", "Adjustment", "Estimate", "Std. error", "95% CI", "p", "N", "Treated"):
        assert col in header
    i = lines.index(header)
    assert set(lines[i + 1]) == {"-"} and len(lines[i + 1]) == len(header)
    body = lines[i + 2:i + 5]
    assert "Difference in means" in body[0] and "1.235" in body[0] and "[0.745, 1.725]" in body[0]
    assert "0.012" in body[0] and body[0].rstrip().endswith("90")
    assert "IPW (Horvitz-Thompson)" in body[1] and "<0.001" in body[1] and "0.988" in body[1]
    assert "IPW (Hajek)" in body[2] and "-0.500" in body[2] and "0.317" in body[2]
    assert lines[-2:] == [f"[1] {NOTES[0]}", f"[2] {NOTES[1]}"]


def test_summary_has_no_date_or_time(table):
    text = str(table.summary())
    assert not re.search(r"\d{4}-\d{2}-\d{2}", text)
    assert not re.search(r"\d{1,2}:\d{2}", text)
    for word in ("Date", "Time", "time:"):
        assert word not in text


def test_summary_without_design_says_no_clusters_and_omits_blanks():
    text = str(EffectTable(rows=ROWS[:1]).summary())
    assert re.search(r"^Clusters:\s+none$", text, re.M)
    assert "Study:" not in text and "Units:" not in text
    assert "[1]" not in text


def test_repr_contains_summary(table):
    r = repr(table)
    assert r.startswith("EffectTable(3 rows)\n")
    assert str(table.summary()) in r


def test_multi_trial_adds_trial_column():
    t = EffectTable(rows=(row(trial="north"), row(trial="south", estimate=2.0)))
    text = str(t.summary())
    assert "Trial" in text and "north" in text and "south" in text
    assert "Trial" not in str(EffectTable(rows=ROWS).summary())
    assert t.tidy()["trial"].tolist() == ["north", "south"]


# ----------------------------------------------------------------------------- markdown
def test_markdown_layout(table):
    md = table.to_markdown()
    lines = md.splitlines()
    assert md.endswith("\n")
    assert lines[0] == ("| Estimand | Method | Adjustment | Estimate | Std. error | 95% CI | p | N "
                        "| Treated |")
    assert lines[1] == "|---|---|---|---:|---:|---|---:|---:|---:|"
    body = lines[2:5]
    assert body[0] == ("| ATE | Difference in means | none | 1.235 | 0.250 | [0.745, 1.725] | 0.012 "
                       "| 200 | 90 |")
    assert body[1].startswith("| ATE | IPW (Horvitz-Thompson) | image | 0.988 | 0.100 |")
    assert "| <0.001 |" in body[1]
    assert body[2].count("|") == lines[0].count("|")
    assert lines[5] == ""
    assert lines[6:] == [f"[1] {NOTES[0]}", f"[2] {NOTES[1]}"]


def test_markdown_escapes_pipes_and_has_no_notes_block_without_notes():
    t = EffectTable(rows=(row(note="a|b"),))
    lines = t.to_markdown().splitlines()
    assert lines[0].endswith("| Note |")
    assert "a\\|b" in lines[2]
    assert len(lines) == 3


# ----------------------------------------------------------------------------- latex
def test_latex_booktabs_and_balanced(table):
    tex = table.to_latex(caption="Effects", label="tab:effects")
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(cmd) == 1
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"\hline" not in tex
    begins = re.findall(r"\\begin\{(\w+)\}", tex)
    ends = re.findall(r"\\end\{(\w+)\}", tex)
    assert sorted(begins) == sorted(ends) == ["table", "tabular"]
    assert r"\begin{tabular}{lllrrlrrr}" in tex
    assert r"\caption{Effects}" in tex and r"\label{tab:effects}" in tex
    assert r"95\% CI" in tex
    assert r"\textless{}0.001" in tex
    assert tex.count(r" \\") >= 4  # header + 3 rows
    assert tex.count("{") == tex.count("}")


def test_latex_escapes_cells_and_notes():
    t = EffectTable(rows=(row(trial="a", adjustment="tab_img"),
                          row(trial="b&c", method="my_method#2", note="50% & more_x #1")),
                    notes=("Clipped 5% of p_scores & trimmed #3",))
    tex = t.to_latex()
    assert r"b\&c" in tex
    assert r"my\_method\#2" in tex
    assert r"tab\_img" in tex
    assert r"50\% \& more\_x \#1" in tex
    assert r"[1] Clipped 5\% of p\_scores \& trimmed \#3" in tex
    # no unescaped special characters survive in the body
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 2
    for line in body:
        assert line.endswith(r" \\")
        cells = line[: -len(r" \\")].split(" & ")
        assert len(cells) == 11  # Trial + 9 columns + Note
        for cell in cells:
            assert not re.search(r"(?<!\\)[&%_#]", cell), cell


def test_latex_without_caption_label_or_notes():
    tex = EffectTable(rows=ROWS[:1]).to_latex()
    assert r"\caption" not in tex and r"\label" not in tex
    assert r"\footnotesize" not in tex
    assert tex.endswith("\\end{table}\n")


def test_latex_escapes_backslash():
    tex = EffectTable(rows=ROWS[:1], notes=(r"path C:\data",)).to_latex()
    assert r"C:\textbackslash{}data" in tex


# ----------------------------------------------------------------------------- html
def test_html_structure(table):
    h = table.to_html()
    assert h.startswith('<table class="effects"><thead><tr><th>Estimand</th>')
    assert h.count("<tr>") == 4  # header + 3 rows
    assert h.count("<li>") == 2 and '<ol class="notes">' in h
    assert "<td>&lt;0.001</td>" in h
    assert table._repr_html_() == h
    assert "<ol" not in EffectTable(rows=ROWS[:1]).to_html()


def test_html_escapes_malicious_strings():
    evil = "<script>alert(1)</script>"
    t = EffectTable(rows=(row(trial=evil), row(trial="ok", method=evil, note=evil)),
                    notes=(evil, 'a "quoted" & <b>bold</b>'))
    h = t.to_html()
    assert evil not in h
    assert "<script" not in h.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in h
    assert h.count("&lt;script&gt;") == 4  # trial cell, method cell, note cell, note item
    assert "<b>" not in h and "&lt;b&gt;bold&lt;/b&gt;" in h
    assert "&quot;quoted&quot; &amp;" in h


# ----------------------------------------------------------------------------- NaN and p-values
def test_nan_estimates_render_as_empty_strings():
    nan_row = row(method="ipw-ht", estimate=NAN, std_error=NAN, ci_low=NAN, ci_high=NAN,
                  p_value=NAN, note="too few treated units")
    t = EffectTable(rows=(row(), nan_row))
    d = t._display()
    assert d.loc[1, ["Estimate", "Std. error", "95% CI", "p"]].tolist() == ["", "", "", ""]
    assert d.loc[1, "Note"] == "too few treated units"
    assert d.loc[0, "Note"] == ""
    for text in (t.to_markdown(), t.to_latex(), t.to_html(), str(t.summary())):
        assert "nan" not in text.lower()
    md_line = t.to_markdown().splitlines()[3]
    assert md_line == ("| ATE | IPW (Horvitz-Thompson) | none |  |  |  |  | 200 | 90 "
                       "| too few treated units |")
    assert "<td></td><td></td><td></td><td></td>" in t.to_html()


@pytest.mark.parametrize("p,shown", [(0.0, "<0.001"), (1e-12, "<0.001"), (0.000999, "<0.001"),
                                     (0.001, "0.001"), (0.04999, "0.050"), (1.0, "1.000")])
def test_p_value_formatting(p, shown):
    d = EffectTable(rows=(row(p_value=p),))._display()
    assert d.loc[0, "p"] == shown


def test_numbers_rounded_to_three_digits():
    d = EffectTable(rows=(row(estimate=2.0, std_error=0.00049, ci_low=-0.0004, ci_high=10.0),))._display()
    assert d.loc[0, "Estimate"] == "2.000"
    assert d.loc[0, "Std. error"] == "0.000"
    assert d.loc[0, "95% CI"] == "[-0.000, 10.000]"
    assert d.loc[0, "N"] == "200" and d.loc[0, "Treated"] == "90"


def test_unknown_method_label_shown_verbatim():
    d = EffectTable(rows=(row(method="tmle-x"),))._display()
    assert d.loc[0, "Method"] == "tmle-x"


# ----------------------------------------------------------------------------- concat
def test_concat_merges_rows_and_deduplicates_notes():
    e = np.array([0.3, 0.7])
    fit = PropensityFit(adjustment="image", e_raw=e, e=e, w=np.array([0, 1]), clip=0.001,
                        n_clipped=0, folds=5, model="ridge-logit")
    a = EffectTable(rows=ROWS[:2], notes=("n1", "n2"), design={"study": "a"})
    b = EffectTable(rows=ROWS[2:], notes=("n2", "n3", "n1"), design={"study": "b"},
                    propensities={"image": fit})
    c = concat([a, b])
    assert c.rows == ROWS
    assert c.notes == ("n1", "n2", "n3")
    assert c.design == {"study": "a"}
    assert c.propensities == {"image": fit}
    assert c.design is not a.design
    assert len(c.tidy()) == 3


def test_concat_of_nothing_is_empty():
    c = concat([])
    assert c.rows == () and c.notes == () and dict(c.design) == {}


def test_summary_of_empty_table():
    text = str(concat([]).summary())
    assert text.startswith("Causal effect estimates")


# ----------------------------------------------------------------------------- determinism
def test_rendering_is_deterministic(table):
    again = EffectTable(rows=tuple(ROWS), notes=tuple(NOTES), design=dict(DESIGN))
    assert str(table.summary()) == str(table.summary()) == str(again.summary())
    assert table.to_markdown() == table.to_markdown() == again.to_markdown()
    assert table.to_latex("c", "l") == table.to_latex("c", "l") == again.to_latex("c", "l")
    assert table.to_html() == table.to_html() == again.to_html()
    pd.testing.assert_frame_equal(table.tidy(), again.tidy())
