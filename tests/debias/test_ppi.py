"""PPI: the one-sample estimate and interval equal ppi_py's; the two-arm extension's arm means
equal ppi_py's point estimates and its SE adds the labelled-within-all covariance term."""

from __future__ import annotations

import numpy as np
import pytest
from ppi_py import ppi_mean_ci, ppi_mean_pointestimate

from eocausal.debias import PPI, ppi_effect, ppi_mean
from eocausal.errors import InputError, NotEstimableError


def _data(n=2000, n_lab=200, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 2, n).astype(float)
    y = 40 + 3 * w + rng.normal(0, 10, n)
    p = 40 + 0.5 * (y - 40) + rng.normal(0, 4, n)
    lab = np.zeros(n, bool)
    lab[rng.choice(n, n_lab, replace=False)] = True
    return p, np.where(lab, y, np.nan), w, y


@pytest.mark.parametrize("lam", [1.0, 0.7, 0.0])
def test_one_sample_equals_ppi_py(lam):
    rng = np.random.default_rng(1)
    y = rng.normal(size=150)
    p = 0.6 * y + rng.normal(0, 0.5, 150)
    pu = 0.6 * rng.normal(size=3000) + rng.normal(0, 0.5, 3000)
    r = ppi_mean(y, p, pu, lam=lam, alpha=0.1)
    assert r.estimate == pytest.approx(float(ppi_mean_pointestimate(y, p, pu, lam=lam)[0]), abs=1e-10)
    lo, hi = ppi_mean_ci(y, p, pu, alpha=0.1, lam=lam)
    assert r.ci_low == pytest.approx(float(lo[0]), abs=1e-10)
    assert r.ci_high == pytest.approx(float(hi[0]), abs=1e-10)


def test_two_arm_point_estimate_equals_ppi_py_per_arm():
    p, y, w, _ = _data()
    tau, se, c = ppi_effect(p, y, w, method="dim")
    lab = ~np.isnan(y)
    arms = []
    for a in (1, 0):
        m = w == a
        arms.append(float(ppi_mean_pointestimate(y[m & lab], p[m & lab], p[m], lam=1)[0]))
    assert tau == pytest.approx(arms[0] - arms[1], abs=1e-10)
    # SE: per arm var0(P)/N_a + var0(R)/n_a + 2 cov(P, R on labelled)/(N_a n_a), arms independent
    var = 0.0
    for a in (1, 0):
        m = w == a
        ml = m & lab
        r = y[ml] - p[ml]
        var += np.var(p[m]) / m.sum() + np.var(r) / ml.sum()
        var += 2 * np.sum((p[ml] - p[m].mean()) * (r - r.mean())) / (m.sum() * ml.sum())
    assert se == pytest.approx(np.sqrt(var), rel=1e-10)
    assert np.sum(c) == pytest.approx(0, abs=1e-12)


def test_hajek_ppi_with_weights_equals_ppi_py_weighted():
    p, y, w, _ = _data(seed=2)
    e = np.full(len(w), 0.5)
    e[::3] = 0.3
    tau, _, _ = ppi_effect(p, y, w, e=e, method="ipw-hajek")
    lab = ~np.isnan(y)
    arms = []
    for a, wt in ((1, 1 / e), (0, 1 / (1 - e))):
        m = w == a
        ml = m & lab
        # ppi_py's weights are used as given (mean of w x), so normalise them to mean 1
        arms.append(float(ppi_mean_pointestimate(y[ml], p[ml], p[m], lam=1, w=wt[ml] / wt[ml].mean(),
                                                 w_unlabeled=wt[m] / wt[m].mean())[0]))
    assert tau == pytest.approx(arms[0] - arms[1], abs=1e-10)


def test_ppi_recovers_the_effect_and_estimator_contract():
    p, y, w, truth = _data(n=20_000, n_lab=2000, seed=3)
    est = PPI().fit(p, y, w)
    assert abs(est.estimate_ - 3.0) < 4 * est.std_error_
    lo, hi = est.confint()
    assert lo < est.estimate_ < hi
    assert est.n_labelled_[0] + est.n_labelled_[1] == 2000
    naive = p[w == 1].mean() - p[w == 0].mean()
    assert abs(naive - 1.5) < 0.3  # the predictions alone are attenuated
    # clustered SE runs and is at least of the same order
    g = np.arange(len(p)) // 10
    assert PPI().fit(p, y, w, clusters=g).std_error_ > 0.5 * est.std_error_


def test_bad_inputs():
    p, y, w, _ = _data(n=100, n_lab=3)
    with pytest.raises(NotEstimableError, match="labelled"):
        ppi_effect(p, y, w)
    with pytest.raises(InputError, match="length"):
        ppi_effect(p, y[:-1], w)
    with pytest.raises(InputError, match="propensities"):
        ppi_effect(p, y, w, method="ipw-hajek")
    with pytest.raises(InputError, match="labels"):
        ppi_mean([1.0, 2.0], [1.0], [1.0, 2.0, 3.0])
