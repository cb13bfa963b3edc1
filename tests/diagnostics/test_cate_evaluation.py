"""CATE evaluation functions taking the result of eocausal.cate (grf's convention) or arrays.

Each function's result form must equal its array form on the arrays the result carries
(including its clusters), and the two forms must not mix silently.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import RidgeCV

from eocausal.diagnostics import (
    blp_gates,
    clan,
    effects_by,
    quantile_groups,
    rate,
    test_calibration,
)
from eocausal.errors import InputError
from eocausal.estimators.cate import cate


def _trial(n=400, seed=4):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    clusters = np.repeat(np.arange(n // 4), 4)
    w = (rng.random(n) < 0.5).astype(int)
    y = X["x1"].to_numpy() + w * (1 + X["x2"].to_numpy()) + rng.normal(size=n)
    return X, clusters, w, y


@pytest.fixture(scope="module")
def fits():
    X, clusters, w, y = _trial()
    kw = dict(learner="t", propensity_scores=0.5, clusters=clusters, folds=5, seed=0, fit_final=False,
              models=RidgeCV())
    return X, cate(y, w, X, **kw), cate(y, w, X[["x1"]], **kw)


def test_rate_of_a_result_equals_rate_of_its_arrays(fits):
    X, res, res_x1 = fits
    r = rate(res, n_boot=50, seed=1)
    a = rate(res.tau_hat, res.scores, clusters=res.clusters, n_boot=50, seed=1)
    assert r.n_clusters == 100 and r.estimate > 2 * r.std_error  # x2 modifies the effect
    assert r.estimate == pytest.approx(a.estimate, rel=1e-12)
    assert r.std_error == pytest.approx(a.std_error, rel=1e-12)
    # without the result's clusters the draws differ (units, not villages, are drawn)
    assert rate(res.tau_hat, res.scores, n_boot=50, seed=1).n_clusters == 400
    # a second result as the comparison stands for its predictions, on the same draws
    c = rate(res, compare=res_x1, n_boot=50, seed=1)
    ca = rate(res.tau_hat, res.scores, clusters=res.clusters, compare=res_x1.tau_hat, n_boot=50, seed=1)
    assert c.diff == pytest.approx(ca.diff, rel=1e-12) and c.diff_se == pytest.approx(ca.diff_se, rel=1e-12)
    assert rate(res, compare=res, n_boot=20).diff == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InputError, match="scores: given together with a CateResult"):
        rate(res, res.scores)
    X2, cl2, w2, y2 = _trial(n=200, seed=5)
    other = cate(y2, w2, X2, learner="t", propensity_scores=0.5, folds=2, fit_final=False, models=RidgeCV())
    with pytest.raises(InputError, match="compare: the CateResult was fitted on other units"):
        rate(res, compare=other)


def test_calibration_of_a_result_equals_the_array_form(fits):
    X, res, _ = fits
    c = test_calibration(res)
    a = test_calibration(y=res.y, w=res.w, propensity_scores=res.propensity_scores, m_hat=res.m_hat,
                         tau_hat=res.tau_hat, clusters=res.clusters)
    assert c.n_clusters == 100 and c.se == "HC3" and c.beta > 0
    assert [c.alpha, c.beta, c.alpha_se, c.beta_se] == pytest.approx([a.alpha, a.beta, a.alpha_se, a.beta_se],
                                                                     rel=1e-12)
    assert test_calibration(res, se="HC1").beta_se != pytest.approx(c.beta_se, rel=1e-6)
    with pytest.raises(InputError, match=r"^y, tau_hat: given together with a CateResult, which carries them"):
        test_calibration(res, y=res.y, tau_hat=res.tau_hat)


def test_blp_gates_clan_and_effects_by_of_a_result(fits):
    X, res, _ = fits
    g = blp_gates(res)
    a = blp_gates(y=res.y, w=res.w, propensity_scores=res.propensity_scores, proxy=res.tau_hat,
                  baseline=res.mu0, clusters=res.clusters)
    assert list(g.gates["term"])[-1] == "G5 - G1" and list(g.blp["term"]) == ["ATE", "HET"]
    assert np.allclose(g.gates[["estimate", "std_error"]], a.gates[["estimate", "std_error"]], rtol=1e-12)
    assert np.array_equal(g.groups, quantile_groups(res.tau_hat, 5))
    # a given proxy replaces the result's predictions (and its baseline)
    own = blp_gates(res, proxy=res.mu1 - res.mu0)
    assert not np.allclose(own.gates["estimate"], g.gates["estimate"], equal_nan=True)
    with pytest.raises(InputError, match="propensity_scores: given together with a CateResult"):
        blp_gates(res, propensity_scores=0.5)

    t = clan(res, X)
    assert list(t.index) == ["x1", "x2"]
    ta = clan(quantile_groups(res.tau_hat, 5), X, clusters=res.clusters)
    assert np.allclose(t.to_numpy(), ta.to_numpy(), rtol=1e-12)
    # the GATES groups of blp_gates (a BlpGatesResult carries no clusters: pass them)
    assert np.allclose(clan(g, X, clusters=res.clusters).to_numpy(), t.to_numpy(), rtol=1e-12)
    assert t.loc["x2", "G5 - G1"] > 3 * t.loc["x2", "std_error"]  # the most affected have high x2

    e = effects_by(res, X["x2"].to_numpy(), bins=4)
    ea = effects_by(None, X["x2"].to_numpy(), tau_hat=res.tau_hat, scores=res.scores, clusters=res.clusters,
                    bins=4)
    assert len(e) == 4 and np.allclose(e[["dr_estimate", "std_error"]], ea[["dr_estimate", "std_error"]],
                                       rtol=1e-12)
    with pytest.raises(InputError, match="scores: given together with a CateResult"):
        effects_by(res, X["x2"].to_numpy(), scores=res.scores)
    with pytest.raises(InputError, match="tau_hat, scores: required without a CateResult"):
        effects_by(None, X["x2"].to_numpy())


def test_importing_diagnostics_is_cheap_and_every_public_name_resolves():
    code = ("import sys, eocausal.diagnostics as d\n"
            "heavy = [m for m in ('scipy', 'sklearn', 'econml', 'eocausal.estimators') if m in sys.modules]\n"
            "import eocausal.diagnostics.rank_average, eocausal.diagnostics.calibration\n"
            "from eocausal.diagnostics import rate\n"
            "missing = [n for n in d.__all__ if not hasattr(d, n)]\n"
            "print(heavy, missing, callable(rate) and rate.__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] [] eocausal.diagnostics.rank_average"
