"""Issue 14, item 8: the API a pyfixest/DoubleML user expects, on the user's own calls.

forest_plot(table) on an EffectTable with readable labels; Comparison's repr; compare()'s
default column labels; coef()/se()/confint() derived from tidy(); BlpGatesResult.summary().
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import eocausal
from eocausal.diagnostics import blp_gates
from eocausal.errors import ColumnError, InputError
from eocausal.report import plots
from eocausal.results import Comparison, EffectRow, EffectTable, compare

KEY = ["trial", "estimand", "method", "adjustment", "outcome_type"]


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 300
    x1, x2 = rng.normal(size=(2, n))
    w = (rng.random(n) < 1 / (1 + np.exp(-0.5 * x1))).astype(int)
    y = x1 + 0.5 * x2 + w * 1.0 + rng.normal(size=n)
    return pd.DataFrame({"Y": y, "W": w, "x1": x1, "x2": x2})


@pytest.fixture(scope="module")
def table(data) -> EffectTable:
    return eocausal.estimate(data, treatment="W", outcome="Y", confounders=["x1", "x2"],
                             methods=["dim", "ipw-hajek", "aipw"], adjustments=["tabular"], seed=0)


# ----------------------------------------------------------------------------- forest_plot
def test_forest_plot_takes_the_effect_table_with_readable_labels(table):
    fig = plots.forest_plot(table)  # was: TypeError 'EffectTable' object is not subscriptable
    (ax,) = fig.get_axes()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    t = table.tidy()
    assert len(labels) == len(t) == 3
    # the method as the estimates table names it, and the adjustment; not 'all / ipw-hajek / tabular'
    assert labels == ["Difference in means, no adjustment", "IPW (Hajek), tabular", "AIPW (DML), tabular"]
    assert not any("/" in lab or "ipw-hajek" in lab for lab in labels)
    points = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
    assert np.allclose(points[0].get_xdata(), t["estimate"])
    # the tidy frame draws the same figure
    assert [x.get_text() for x in plots.forest_plot(t).get_axes()[0].get_yticklabels()] == labels


def test_forest_plot_labels_name_what_varies_and_stay_unique(table):
    two = eocausal.results.concat([table, table])
    tidy = two.tidy()
    tidy.loc[3:, "trial"] = "north"
    labels = [t.get_text() for t in plots.forest_plot(tidy).get_axes()[0].get_yticklabels()]
    assert labels[0] == "all, Difference in means, no adjustment" and labels[4] == "north, IPW (Hajek), tabular"
    # the same rows twice: numbered, not repeated
    same = [t.get_text() for t in plots.forest_plot(two).get_axes()[0].get_yticklabels()]
    assert len(set(same)) == 6 and same[1] == "IPW (Hajek), tabular (1)" and same[4] == "IPW (Hajek), tabular (2)"
    # an explicit label column
    only = [t.get_text() for t in plots.forest_plot(tidy, label="trial").get_axes()[0].get_yticklabels()]
    assert only[:3] == ["all (1)", "all (2)", "all (3)"]
    with pytest.raises(ColumnError, match="label"):
        plots.forest_plot(tidy, label="village")
    with pytest.raises(InputError, match="EffectTable or a tidy DataFrame"):
        plots.forest_plot(table.rows)


# ----------------------------------------------------------------------------- compare / Comparison
def test_compare_labels_default_to_what_differs(data):
    Z = np.random.default_rng(1).normal(size=(len(data), 4))
    kw = {"treatment": "W", "outcome": "Y", "confounders": ["x1", "x2"], "embeddings": Z, "methods": ["ipw-hajek"], "seed": 0}
    by_adj = eocausal.estimate(data, adjustments=["tabular", "tabular+image"], **kw)
    c = compare(by_adj)  # was: "(1)", "(2)"
    assert c.labels == ("tabular", "tabular+image")
    both = eocausal.estimate(data, methods=["ipw-hajek", "aipw"], adjustments=["tabular"],
                             **{k: v for k, v in kw.items() if k != "methods"})
    assert compare(both).labels == ("IPW (Hajek)", "AIPW (DML)")
    mixed = compare([by_adj, both])
    assert mixed.labels == ("IPW (Hajek), tabular (1)", "IPW (Hajek), tabular+image", "IPW (Hajek), tabular (2)",
                            "AIPW (DML), tabular")
    assert list(mixed.to_frame().columns) == list(mixed.labels)  # no column lost to a repeated label
    assert compare(by_adj, labels=["raw", "adjusted"]).labels == ("raw", "adjusted")
    with pytest.raises(InputError, match=r"labels: \['a'\] given more than once"):
        compare(by_adj, labels=["a", "a"])


def test_comparison_repr_is_the_text_table(table):
    c = compare(table)
    assert isinstance(c, Comparison)
    text = repr(c)
    assert text == str(c) == c.to_frame().to_string()
    assert "Comparison(rows=" not in text and "EffectRow(" not in text
    first = text.splitlines()[0]
    assert "IPW (Hajek)" in first and "AIPW (DML)" in first
    assert f"{table.row(method='aipw').estimate:.3f}" in text


# ----------------------------------------------------------------------------- coef / se / confint
def test_coef_se_confint_come_from_tidy(table):
    t = table.tidy()
    coef, se, ci = table.coef(), table.se(), table.confint()
    assert isinstance(coef, pd.Series) and isinstance(se, pd.Series) and isinstance(ci, pd.DataFrame)
    assert list(coef.index.names) == KEY and coef.name == "estimate" and se.name == "std_error"
    assert list(ci.columns) == ["ci_low", "ci_high"] and ci.index.equals(coef.index) and se.index.equals(coef.index)
    assert coef.index.is_unique
    for r in table.rows:
        key = (r.trial, r.estimand, r.method, r.adjustment, r.outcome_type)
        assert coef.loc[key] == r.estimate and se.loc[key] == r.std_error
        assert tuple(ci.loc[key]) == (r.ci_low, r.ci_high)
    assert np.array_equal(coef.to_numpy(), t["estimate"].to_numpy())
    assert coef.xs("aipw", level="method").iloc[0] == table.row(method="aipw").estimate


def test_accessors_keep_outcome_types_apart():
    def r(outcome_type, est):
        return EffectRow(trial="a", estimand="ATE", method="ipw-hajek", adjustment="tabular", estimate=est,
                         std_error=0.1, ci_low=est - 0.2, ci_high=est + 0.2, p_value=0.01, n=100, n_treated=50,
                         outcome_type=outcome_type)

    t = EffectTable(rows=(r("observed", 1.0), r("predicted", 0.4)))
    assert t.coef().xs("predicted", level="outcome_type").iloc[0] == 0.4
    assert t.coef().index.is_unique
    empty = EffectTable(rows=())
    assert len(empty.coef()) == 0 and list(empty.confint().columns) == ["ci_low", "ci_high"]


# ----------------------------------------------------------------------------- BLP / GATES summary
def test_blp_gates_summary_and_repr():
    rng = np.random.default_rng(3)
    n = 800
    x = rng.normal(size=n)
    w = (rng.random(n) < 0.5).astype(float)
    y = x + w * (1 + x) + rng.normal(size=n)
    village = np.repeat(np.arange(n // 4), 4)
    g = blp_gates(y=y, w=w, propensity_scores=0.5, proxy=x + rng.normal(0, 0.5, n), baseline=x, clusters=village)
    text = g.summary()
    lines = text.splitlines()
    assert lines[0].startswith("Best linear predictor (BLP)") and set(lines[1]) == {"="}
    assert "Units:" in text and "800" in text and "Clusters:" in text and "200" in text
    het = g.blp.set_index("term").loc["HET"]
    (het_line,) = [ln for ln in lines if ln.startswith("HET (beta2)")]
    assert f"{het['estimate']:.3f}" in het_line and f"{het['std_error']:.3f}" in het_line
    assert "95% CI" in text
    g5 = g.gates.set_index("term").loc["G5 - G1"]
    (diff_line,) = [ln for ln in lines if ln.startswith("G5 - G1")]
    assert f"{g5['estimate']:.3f}" in diff_line
    assert any(ln.startswith("G1 (least affected)") for ln in lines)
    assert "CR1, 200 clusters" in text and "One cross-fitted evaluation" in text
    assert repr(g) == "BlpGatesResult\n" + text
    assert g.n == n and g.n_clusters == 200 and g.baseline

    def proxy(train, test):
        return x[test]

    s = blp_gates(y=y, w=w, propensity_scores=0.5, proxy=proxy, n_splits=3, seed=1).summary()
    assert "90% CI" in s and "Medians over 3 random half splits" in s and "HC1" in s and "Clusters:" in s
