"""Linear calibration correction: exact removal of attenuation under linear shrinkage, the OLS
covariance behind the delta method, warnings and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from sklearn.base import clone

from eocausal.debias import LinearCalibration
from eocausal.errors import DebiasWarning, InputError, NotFittedError


def _shrunk(n, rho=0.5, mu=40.0, sy=10.0, seed=0):
    """Y ~ N(mu, sy^2), P = E[Y | X] for X = Y + noise: P = mu + rho (X - mu)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(mu, sy, n)
    p = mu + rho * (y + rng.normal(0, sy * np.sqrt((1 - rho) / rho), n) - mu)
    return p, y


def test_slope_is_the_shrinkage_and_the_correction_removes_it():
    p, y = _shrunk(20_000, rho=0.5)
    lcc = LinearCalibration().fit(p, y)
    se_k = np.sqrt(lcc.cov_[1, 1])
    assert abs(lcc.slope_ - 0.5) < 4 * se_k
    assert abs(lcc.intercept_ - (1 - 0.5) * 40) < 4 * np.sqrt(lcc.cov_[0, 0])
    # an effect tau on Y moves P by k tau; (P - m)/k moves by tau
    rng = np.random.default_rng(1)
    w = rng.integers(0, 2, 20_000)
    yt = y + 3.0 * w
    pt = 20 + 0.5 * (yt + rng.normal(0, 10, 20_000) - 40) + 20
    naive = pt[w == 1].mean() - pt[w == 0].mean()
    fixed = lcc.transform(pt)
    corrected = fixed[w == 1].mean() - fixed[w == 0].mean()
    se = np.sqrt(fixed[w == 1].var() / (w == 1).sum() + fixed[w == 0].var() / (w == 0).sum())
    assert abs(naive - 1.5) < 4 * se / 2
    assert abs(corrected - 3.0) < 4 * se


@pytest.mark.parametrize("cov_type", ["HC1", "HC0", "nonrobust"])
def test_covariance_matches_statsmodels(cov_type):
    p, y = _shrunk(300, seed=2)
    lcc = LinearCalibration(cov_type=cov_type).fit(p, y)
    ols = sm.OLS(p, sm.add_constant(y)).fit(cov_type=cov_type)
    np.testing.assert_allclose([lcc.intercept_, lcc.slope_], ols.params, rtol=1e-10)
    np.testing.assert_allclose(lcc.cov_, ols.cov_params(), rtol=1e-10)
    assert lcc.r2_ == pytest.approx(ols.rsquared, rel=1e-10)


def test_delta_method_formula():
    p, y = _shrunk(500, seed=3)
    lcc = LinearCalibration().fit(p, y)
    k, var_k = lcc.slope_, lcc.cov_[1, 1]
    tau, se = lcc.delta_se(1.2, 0.3)
    assert tau == pytest.approx(1.2 / k)
    assert se == pytest.approx(np.sqrt(0.3**2 / k**2 + 1.2**2 * var_k / k**4), rel=1e-12)
    # Horvitz-Thompson: the intercept enters through c = HT(1)
    tau_c, _ = lcc.delta_se(1.2, 0.3, c=0.1)
    assert tau_c == pytest.approx((1.2 - lcc.intercept_ * 0.1) / k)


def test_resample_with_unit_counts_reproduces_the_fit():
    p, y = _shrunk(200, seed=4)
    lcc = LinearCalibration().fit(p, y)
    r = lcc.resample(p, y, np.ones((3, 200)))
    np.testing.assert_allclose(r.slope, lcc.slope_, rtol=1e-10)
    np.testing.assert_allclose(r.transform(p, slice(0, 1))[0], lcc.transform(p), rtol=1e-10)


def test_estimator_contract():
    lcc = LinearCalibration(min_slope=0.3, cov_type="HC0")
    assert clone(lcc).get_params() == {"min_slope": 0.3, "cov_type": "HC0"}
    with pytest.raises(NotFittedError):
        lcc.transform([1.0, 2.0])
    p, y = _shrunk(200, seed=5)
    assert lcc.fit(p, y) is lcc
    np.testing.assert_allclose(LinearCalibration().fit_transform(p, y), LinearCalibration().fit(p, y).transform(p))


def test_weak_slope_warns_and_negative_slope_is_refused():
    rng = np.random.default_rng(6)
    y = rng.normal(size=400)
    with pytest.warns(DebiasWarning, match=r"slope k = 0\.\d+ .*below 0\.2"):
        LinearCalibration().fit(0.1 * y + rng.normal(0, 0.1, 400), y)
    with pytest.raises(InputError, match="<= 0"):
        LinearCalibration().fit(-0.5 * y + rng.normal(0, 0.1, 400), y)
    LinearCalibration().fit(0.6 * y + rng.normal(0, 0.1, 400), y)  # silent (warnings are errors)


def test_bad_inputs():
    p, y = _shrunk(50, seed=7)
    with pytest.raises(InputError, match="50 predictions but 49 labels"):
        LinearCalibration().fit(p, y[:-1])
    with pytest.raises(InputError, match="NaN"):
        LinearCalibration().fit(np.r_[p[:-1], np.nan], y)
    with pytest.raises(InputError, match="constant"):
        LinearCalibration().fit(np.full(50, 3.0), y)
    with pytest.raises(InputError, match="constant|variation"):
        LinearCalibration().fit(p, np.full(50, 3.0))
    with pytest.raises(InputError, match="cov_type"):
        LinearCalibration(cov_type="HC3").fit(p, y)
    with pytest.raises(InputError, match="1-D"):
        LinearCalibration().fit(np.ones((50, 2)), y)
