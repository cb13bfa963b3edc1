"""``estimate(propensity_scores=..., fold_ids=...)``: propensities and folds computed elsewhere.

The causalimages workflow: an image-trained CNN (``PropensityCNN.fit_oof``) gives out-of-fold
propensities and its fold assignment; IPW and AIPW then use them. The tests pass eocausal's own
cross-fitted propensities and folds back in as "given" and require the same rows as the fitted
adjustment, so they fail if the scores, the folds or the outcome models were routed wrongly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import eocausal
from eocausal.errors import InputError
from eocausal.data.folds import grouped_folds
from eocausal.estimators.propensity import crossfit_propensity
from eocausal.estimators.weighting import hajek, se_from_psi

CONF = ["x1", "x2", "x3"]


def _frame(n=900, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    w = (rng.uniform(size=n) < expit(0.9 * X[:, 0] - 0.4 * X[:, 1])).astype(int)
    y = 1.0 * w + X @ np.array([1.0, 1.0, 0.5]) + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "w": w, **{c: X[:, j] for j, c in enumerate(CONF)}, "village": np.arange(n) // 3})
    g = pd.factorize(df["village"], sort=True)[0]
    return df, X, w.astype(float), g


KW = dict(treatment="w", outcome="y", confounders=CONF, clusters="village", propensity="logit",
          outcome_model="linear", ipw_se="known-e", crossfit=True)


def test_given_scores_and_folds_reproduce_the_fitted_rows():
    df, X, w, g = _frame()
    fold = grouped_folds(len(w), g, 5, 0, stratify=w)
    e_raw, _ = crossfit_propensity(X, w, clusters=g, propensity="logit", fold_ids=fold)
    t = eocausal.estimate(df, methods=["ipw-hajek", "ipw-ht", "aipw"], adjustments=["tabular"],
                          propensity_scores={"mine": e_raw}, fold_ids=fold, **KW).tidy()
    fitted = t[t.adjustment == "tabular"].set_index("method")
    given = t[t.adjustment == "mine"].set_index("method")
    assert len(fitted) == len(given) == 3
    for col in ("estimate", "std_error", "ci_low", "ci_high"):
        np.testing.assert_allclose(given[col], fitted.loc[given.index, col], rtol=1e-12)
    # and by hand: Hajek at the clipped given scores, SE clustered by village
    pe = hajek(df["y"].to_numpy(), w, np.clip(e_raw, 1e-3, 1 - 1e-3))
    assert given.loc["ipw-hajek", "estimate"] == pytest.approx(pe.estimate, rel=1e-12)
    G = len(np.unique(g))
    assert given.loc["ipw-hajek", "std_error"] == pytest.approx(se_from_psi(pe.psi, g)[0] * np.sqrt(G / (G - 1)),
                                                                rel=1e-12)
    assert "known e" in given.loc["ipw-hajek", "se_type"]


def test_only_given_scores_and_their_fit_record():
    df, X, w, g = _frame(seed=1)
    e = expit(0.9 * X[:, 0] - 0.4 * X[:, 1])  # the true propensity
    table = eocausal.estimate(df, methods=["ipw-hajek"], adjustments=[], propensity_scores=e, **KW)
    t = table.tidy()
    assert t["adjustment"].tolist() == ["given"]
    fit = table.propensities["given"]
    assert fit.model == "given" and np.array_equal(fit.e_raw, e)
    assert any("Propensity scores given (given)" in n for n in table.notes)
    assert not any(n.startswith("Propensity: ") for n in table.notes)  # no fitted model to describe


def test_given_scores_with_trials_are_subset_per_trial():
    df, X, w, g = _frame(seed=2)
    rng = np.random.default_rng(5)
    e = expit(0.9 * X[:, 0] - 0.4 * X[:, 1])
    df["t_a"] = np.where(rng.uniform(size=len(df)) < 0.6, df["w"], np.nan)
    df["t_b"] = np.where(rng.uniform(size=len(df)) < 0.6, df["w"], np.nan)
    t = eocausal.estimate(df, outcome="y", confounders=CONF, clusters="village", trials=["t_a", "t_b"],
                          methods=["ipw-hajek"], adjustments=[], propensity_scores={"true": e},
                          propensity="logit", ipw_se="known-e").tidy().set_index("trial")
    for col in ("t_a", "t_b"):
        m = df[col].notna().to_numpy()
        pe = hajek(df["y"].to_numpy()[m], df[col].to_numpy()[m], e[m])
        assert t.loc[col, "estimate"] == pytest.approx(pe.estimate, rel=1e-12)


@pytest.mark.parametrize("bad,match", [
    (dict(propensity_scores=np.zeros(900)), "strictly inside"),
    (dict(propensity_scores=np.full(10, 0.5)), "10 entries for 900 units"),
    (dict(propensity_scores={"tabular": np.full(900, 0.5)}), "other than"),
    (dict(fold_ids=np.arange(900) % 5), "straddle"),
    (dict(fold_ids=np.zeros(900)), "at least 2 folds"),
    (dict(fold_ids=(np.arange(900) // 3) % 5, repeats=2), "repeats"),
    (dict(propensity_scores=np.full(900, 0.5), methods=["dim"]), "methods"),
])
def test_bad_given_inputs_are_refused(bad, match):
    df, *_ = _frame()
    kw = {**KW, "methods": ["ipw-hajek"], **bad}
    with pytest.raises(InputError, match=match):
        eocausal.estimate(df, **kw)
