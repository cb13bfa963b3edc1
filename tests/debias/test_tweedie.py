"""Tweedie's correction: analytic KDE score against finite differences and scipy, grid error,
exactness on the Gaussian shrinkage model, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import gaussian_kde

from eocausal.debias import Tweedie, kde_bandwidth, kde_score
from eocausal.debias.tweedie import ScoreGrid
from eocausal.errors import InputError, NotFittedError


def _bimodal(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n) * 0.7 + rng.choice([0.0, 1.5], size=n)


def _log_p(z, c, h):
    """log of the Gaussian KDE (up to a constant), computed directly with logsumexp."""
    return logsumexp(-0.5 * ((z[:, None] - c[None, :]) / h) ** 2, axis=1)


def _fd_score(z, c, h):
    """Richardson-extrapolated central difference of log p: error O(eps^4)."""
    eps = 1e-3 * h
    d1 = (_log_p(z + eps, c, h) - _log_p(z - eps, c, h)) / (2 * eps)
    d2 = (_log_p(z + 2 * eps, c, h) - _log_p(z - 2 * eps, c, h)) / (4 * eps)
    return (4 * d1 - d2) / 3


@pytest.mark.parametrize("rule, factor", [("scott", lambda n: n ** -0.2), ("silverman", lambda n: (0.75 * n) ** -0.2)])
def test_bandwidth_matches_scipy(rule, factor):
    c = _bimodal(500)
    kde = gaussian_kde(c, bw_method=rule)
    assert kde_bandwidth(c, rule) == pytest.approx(kde.factor * np.std(c, ddof=1), rel=1e-12)
    assert kde_bandwidth(c, rule) == pytest.approx(factor(500) * np.std(c, ddof=1), rel=1e-12)
    assert kde_bandwidth(c, 0.3) == 0.3


def test_analytic_score_equals_finite_difference():
    c = _bimodal(400)
    h = kde_bandwidth(c)
    z = np.r_[np.linspace(-3, 4.5, 301), -6.0, 9.0]  # inside the data and out in both tails
    s, ds = kde_score(z, c, h, method="exact", derivative=True)
    fd = _fd_score(z, c, h)
    scale = np.abs(fd) + 1 / h
    np.testing.assert_array_less(np.abs(s - fd) / scale, 1e-6)
    # the derivative of the score, against a difference of the analytic score
    eps = 1e-4 * h
    fd2 = (kde_score(z + eps, c, h, method="exact") - kde_score(z - eps, c, h, method="exact")) / (2 * eps)
    np.testing.assert_allclose(ds, fd2, rtol=1e-5, atol=1e-5 / h**2)


def test_score_equals_scipy_gaussian_kde_difference():
    """The reference approach: scipy's gaussian_kde (Scott) and a central difference of logpdf."""
    c = _bimodal(1000, seed=1)
    h = kde_bandwidth(c)
    z = np.linspace(-2.5, 3.5, 500)
    kde = gaussian_kde(c)
    eps = 1e-5
    ref = (kde.logpdf(z + eps) - kde.logpdf(z - eps)) / (2 * eps)
    s = kde_score(z, c, h, method="exact")
    np.testing.assert_array_less(np.abs(s - ref) / (np.abs(ref) + 1 / h), 1e-6)


def test_grid_interpolation_error_is_within_the_documented_bound():
    c = _bimodal(1000, seed=2)
    h = kde_bandwidth(c)
    z = np.random.default_rng(3).normal(0.5, 1.2, size=5_000)
    exact = kde_score(z, c, h, method="exact")
    grid = kde_score(z, c, h, method="grid")  # 32 nodes per bandwidth
    scale = np.abs(exact) + 1 / h
    assert np.max(np.abs(grid - exact) / scale) < 1e-7
    coarse = kde_score(z, c, h, method="grid", grid_density=16)
    # cubic Hermite: halving the step divides the error by about 2^4
    ratio = np.max(np.abs(coarse - exact)) / np.max(np.abs(grid - exact))
    assert 8 < ratio < 32


def test_truncation_and_weights():
    c = _bimodal(300, seed=4)
    h = kde_bandwidth(c)
    z = np.linspace(-4, 5, 200)
    np.testing.assert_allclose(kde_score(z, c, h, method="exact", cutoff=8.0),
                               kde_score(z, c, h, method="exact", cutoff=None), rtol=1e-11, atol=1e-11)
    counts = np.random.default_rng(5).integers(0, 3, size=len(c)).astype(float)
    repeated = np.repeat(c, counts.astype(int))
    np.testing.assert_allclose(kde_score(z, c, h, weights=counts, method="exact"),
                               kde_score(z, repeated, h, method="exact"), rtol=1e-10, atol=1e-10)


def test_score_is_finite_far_outside_the_data():
    c = _bimodal(200)
    h = kde_bandwidth(c)
    z = np.array([-1e3, -50.0, 60.0, 1e4])
    s = kde_score(z, c, h, method="exact")
    assert np.isfinite(s).all()
    # beyond every centre the nearest one dominates: s(z) -> -(z - nearest)/h^2
    np.testing.assert_allclose(s[[0, 3]], -(z[[0, 3]] - c[[np.argmin(c), np.argmax(c)]]) / h**2, rtol=1e-9)


def test_tweedie_is_exact_for_gaussian_shrinkage():
    """Y ~ N(mu, s^2), P = mu + rho (Y + eps - mu): Y~ = mu + (P - mu)/rho, slope 1/rho in P."""
    rng = np.random.default_rng(6)
    mu, sy, rho, n = 40.0, 10.0, 0.5, 20_000
    y = rng.normal(mu, sy, n)
    p = mu + rho * (y + rng.normal(0, sy * np.sqrt((1 - rho) / rho), n) - mu)
    tw = Tweedie().fit(p, y)
    assert tw.sigma2_ == pytest.approx(sy**2 * (1 - rho), rel=0.03)
    inner = np.abs(p - p.mean()) < 1.5 * p.std()  # the KDE is close to Gaussian where data are dense
    slope = np.polyfit(p[inner], tw.transform(p[inner]), 1)[0]
    assert slope == pytest.approx(1 / rho, rel=0.05)


def test_sigma_zero_is_the_identity():
    p = _bimodal(300)
    tw = Tweedie().fit(p, p)
    assert tw.sigma2_ == 0
    np.testing.assert_array_equal(tw.transform(p), p)


def test_density_on_map():
    rng = np.random.default_rng(7)
    y = rng.normal(size=300)
    p = 0.6 * y + rng.normal(0, 0.4, 300)
    m = 0.6 * rng.normal(size=5000) + rng.normal(0, 0.4, 5000)
    with pytest.raises(InputError, match="map_predictions"):
        Tweedie(density_on="map").fit(p, y)
    tw = Tweedie(density_on="map").fit(p, y, map_predictions=m)
    assert len(tw.centres_) == 5000 and tw.bandwidth_ == pytest.approx(kde_bandwidth(m))
    assert np.isfinite(tw.transform(p)).all()


def test_resample_with_unit_counts_reproduces_the_fit():
    rng = np.random.default_rng(8)
    y = rng.normal(size=500)
    p = 0.5 * y + rng.normal(0, 0.5, 500)
    tw = Tweedie().fit(p, y)
    targets = rng.normal(0, 0.6, 2000)
    res = tw.resample(p, y, np.ones((2, 500)), targets)
    np.testing.assert_allclose(res.transform(targets, slice(0, 2))[1], tw.transform(targets), rtol=0, atol=1e-7)
    grid = ScoreGrid.build(targets, 0.01)
    assert grid.nodes[grid.cell].max() <= targets.max() and (grid.nodes[grid.cell + 1] >= targets).all()


def test_bad_inputs():
    p = _bimodal(100)
    with pytest.raises(NotFittedError):
        Tweedie().transform(p)
    with pytest.raises(InputError, match="100 predictions but 99 labels"):
        Tweedie().fit(p, p[:-1])
    with pytest.raises(InputError, match="NaN"):
        Tweedie().fit(np.r_[p[:-1], np.nan], p)
    with pytest.raises(InputError, match="constant"):
        Tweedie().fit(np.ones(100), p)
    with pytest.raises(InputError, match="bandwidth"):
        Tweedie(bandwidth="wide").fit(p, p + 0.1)
    with pytest.raises(InputError, match="bandwidth"):
        Tweedie(bandwidth=-1.0).fit(p, p + 0.1)
    tw = Tweedie().fit(p, p + np.random.default_rng(0).normal(size=100))
    with pytest.raises(InputError, match="NaN"):
        tw.transform(np.array([1.0, np.nan]))
