"""Quick coverage study: benchmarks/coverage_study.py's ``more-images`` design with 80 replications.

600 images (clusters) of 4-8 units; the image's built-up share confounds an image-level treatment,
and units of one image share an outcome shock, so SEs must be clustered. The full study (500
replications per design) is in benchmarks/results/coverage.md; this test keeps it honest at a
small cost.

Bands: with R replications the Monte Carlo SE of a coverage near 0.95 is sqrt(0.95 * 0.05 / R)
(0.024 at R = 80); clustered coverage must lie within 0.95 +- 4 of those (0.863-1.037). That band
cannot catch an SE that is too large (coverage 1.0 lies inside it), so the mean SE must also lie
within [0.75, 1.33] times the Monte Carlo SD of the estimates (the SD's own relative error is about
1/sqrt(2R) = 0.08): the known-propensity IF that ``estimate()`` used for Hajek before the logistic
correction gave 1.58 here. Unclustered SEs of the same estimates must cover at least 0.10 less
and sit far below 0.95.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from benchmarks import coverage_study as cov  # the repository root is on sys.path (pyproject: pythonpath)

R = 80


@pytest.fixture(scope="module")
def summary():
    design = dataclasses.replace(cov.DESIGNS["more-images"], refit_boot=0)
    with threadpool_limits(1):
        pool = cov.make_pool(600)
        results = cov.run_design(pool, design, R, seed=7, jobs=1)
    errors = [r["error"] for r in results if r["error"]]
    assert not errors, errors
    return cov.summarise(results).set_index("method")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ipw-hajek", "aipw"])
def test_clustered_intervals_cover(summary, method):
    row = summary.loc[method]
    assert row.R == R
    band = 4 * np.sqrt(0.95 * 0.05 / R)
    assert abs(row.cov_cl - 0.95) <= band, (method, row.cov_cl, band)
    # the estimator is not wildly off: bias well inside the spread of the estimates
    assert abs(row.bias) < row.sd, (method, row.bias, row.sd)
    # the SE is honest, not just large enough
    assert 0.75 <= row.se_cl / row.sd <= 1.33, (method, row.se_cl, row.sd)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ipw-hajek", "aipw"])
def test_unclustered_intervals_undercover(summary, method):
    row = summary.loc[method]
    band = 4 * np.sqrt(0.95 * 0.05 / R)
    assert row.cov_iid <= row.cov_cl - 0.10, (method, row.cov_iid, row.cov_cl)
    assert row.cov_iid < 0.95 - band, (method, row.cov_iid)
    assert row.se_iid < 0.75 * row.se_cl, (method, row.se_iid, row.se_cl)
