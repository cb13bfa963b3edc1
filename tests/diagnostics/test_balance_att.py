"""The SMD's denominator follows the estimand, as cobalt's default ``s.d.denom`` does (issue 15).

cobalt (Greifer; ``get.s.d.denom`` and ``compute_s.d.denom`` in its R/utilities.R): ATT ->
"treated", the SD of the treated arm with sampling weights only (unweighted here); ATE -> "pooled",
sqrt((s1^2 + s0^2) / 2) of the unweighted arms; ATO -> "weighted", the SD of all units weighted by
the balancing weights; where the chosen SD is 0, the unweighted SD of all units. Variances are
cobalt's ``col.w.v``: sum v (x - m)^2 * V1 / (V1^2 - V2), the sample variance (n - 1) for v = 1.
Each is computed here by hand, then compared to ``balance_table``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eocausal.diagnostics.balance import balance_table
from eocausal.errors import InputError


def _data(seed=0, n=600):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    e = 1 / (1 + np.exp(-(0.8 * x1 - 0.3)))
    w = (rng.uniform(size=n) < e).astype(float)
    # spread differs by arm, so the treated SD is far from the pooled one
    x2 = np.where(w == 1, 3.0, 0.5) * rng.normal(size=n) + 0.4 * w
    x3 = (rng.uniform(size=n) < 0.3 + 0.2 * w).astype(float)  # binary
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3}), w, e


def _wvar(x, v):
    v1, v2 = v.sum(), np.sum(v**2)
    m = v @ x / v1
    return v @ (x - m) ** 2 * v1 / (v1**2 - v2)


def _hand(X, w, v, estimand):
    t, c = w == 1, w == 0
    out = {}
    for col in X.columns:
        x = X[col].to_numpy()
        sd = {"ATT": np.std(x[t], ddof=1),
              "ATE": np.sqrt((np.var(x[t], ddof=1) + np.var(x[c], ddof=1)) / 2),
              "ATO": np.sqrt(_wvar(x, v))}[estimand]
        before = (x[t].mean() - x[c].mean()) / sd
        after = (np.average(x[t], weights=v[t]) - np.average(x[c], weights=v[c])) / sd
        out[col] = (before, after)
    return out


@pytest.mark.parametrize("estimand", ["ATT", "ATE", "ATO"])
def test_smd_matches_cobalts_rule_by_hand(estimand):
    X, w, e = _data()
    v = {"ATT": np.where(w == 1, 1.0, e / (1 - e)),
         "ATE": np.where(w == 1, 1 / e, 1 / (1 - e)),
         "ATO": np.where(w == 1, 1 - e, e)}[estimand]
    t = balance_table(X, w, v, estimand=estimand, warn=False)
    for col, (before, after) in _hand(X, w, v, estimand).items():
        assert t.at[col, "smd_before"] == pytest.approx(before, rel=1e-10)
        assert t.at[col, "smd_after"] == pytest.approx(after, rel=1e-10)
    assert t.attrs["estimand"] == estimand
    assert t.attrs["smd_denominator"] == {"ATT": "treated", "ATE": "pooled", "ATO": "weighted"}[estimand]


def test_att_no_longer_uses_the_pooled_sd():
    X, w, e = _data()
    v = np.where(w == 1, 1.0, e / (1 - e))
    att = balance_table(X, w, v, estimand="ATT", warn=False)
    pooled = balance_table(X, w, v, warn=False)  # the default, and the old rule for every estimand
    sd_t = X.loc[w == 1, "x2"].std(ddof=1)
    sd_pool = np.sqrt((X.loc[w == 1, "x2"].var(ddof=1) + X.loc[w == 0, "x2"].var(ddof=1)) / 2)
    assert sd_t / sd_pool > 1.3  # the design makes the two yardsticks differ
    ratio = pooled.at["x2", "smd_after"] / att.at["x2", "smd_after"]
    assert ratio == pytest.approx(sd_t / sd_pool, rel=1e-10)
    # the means and variance ratios do not depend on the estimand
    cols = ["mean_treated_weighted", "mean_control_weighted", "var_ratio_before", "var_ratio_after"]
    pd.testing.assert_frame_equal(att[cols], pooled[cols])


def test_zero_treated_sd_falls_back_to_all_units():
    X, w, e = _data(seed=1)
    X["urban"] = np.where(w == 1, 1.0, (np.arange(len(w)) % 3 == 0).astype(float))  # constant among treated
    v = np.where(w == 1, 1.0, e / (1 - e))
    t = balance_table(X, w, v, estimand="ATT", warn=False)
    x = X["urban"].to_numpy()
    sd_all = np.std(x, ddof=1)
    assert t.at["urban", "smd_before"] == pytest.approx((1.0 - x[w == 0].mean()) / sd_all, rel=1e-10)
    assert t.at["urban", "imbalanced"]
    # a column constant everywhere stays NaN and unflagged
    c = balance_table(X.assign(const=2.0), w, v, estimand="ATT", warn=False)
    assert np.isnan(c.at["const", "smd_after"]) and not c.at["const", "imbalanced"]


def test_bad_estimand_is_refused():
    X, w, e = _data()
    with pytest.raises(InputError, match=r"estimand='ATC'.*'ATE', 'ATT', 'ATO'"):
        balance_table(X, w, np.ones(len(w)), estimand="ATC")
