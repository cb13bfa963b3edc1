"""Quick coverage study: benchmarks/coverage_study.py's cell ``g40-k3`` with 200 replications.

40 clusters of 4-8 units (about 240 units); the clusters' built-up share s confounds a
cluster-level treatment and units of a cluster share an outcome shock, so SEs must be clustered,
and 40 clusters is few enough for the small-sample corrections (CR1, t(39), the wild cluster
bootstrap) to matter. The propensity has 3 coefficients (intercept, x_img and the oracle s).
Each replication calls ``eocausal.estimate`` with its defaults (ridge-logit, ridge outcome,
5 folds, ``se='if'``, ``crossfit='auto'``) for the ATE, and the difference in means on a
cluster-randomised treatment drawn in the same replication; the wild cluster bootstrap is
computed from each row's influence function. The full study (500 replications per cell, every
cell, the ATT, crossfit=True and the spatial cell) is in benchmarks/results/coverage.md.

Bands: with R replications the Monte Carlo SE of a coverage near 0.95 is sqrt(0.95 * 0.05 / R)
(0.015 at R = 200); a coverage must lie within 0.95 +- 3.5 of those (0.896-1.004). That band
cannot catch an SE that is too large, so the SE must also match the spread of the estimates:
mean SE / SD within [0.80, 1.25] (the SD's own relative error is 1/sqrt(2R) = 0.05; 4 of those).
The IPW and AIPW estimates have a few outliers at 40 clusters (propensities near the clip), so
their spread is also measured robustly: median SE / (IQR / 1.349) within 1 +- 3.5 x 1.1 / sqrt(R)
(the IQR-based SD's relative error at the normal is about 1.1 / sqrt(R)), i.e. [0.73, 1.27].
An unclustered SE (SE/SD about 0.4) fails these bands, and so does the known-e IF of the IPW
rows (SE/SD about 1.45 here), which the last test checks.

The default Hajek row (ridge-logit cross-fitted, known-e IF under ipw_se='auto') must not be
anti-conservative; the corrected IF of the same cross-fitted fit (too small) and the known-e IF of
the textbook logit fitted on all units (too large) must fail the bands, which the last test checks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

# the repository root is on sys.path (pyproject: pythonpath)
from benchmarks import coverage_study as cov

R = 200
BAND = 3.5 * np.sqrt(0.95 * 0.05 / R)
SE_SD = (0.80, 1.25)
ROBUST = (1 - 3.5 * 1.1 / np.sqrt(R), 1 + 3.5 * 1.1 / np.sqrt(R))


@pytest.fixture(scope="module")
def summary():
    cell = dataclasses.replace(cov.CELLS["g40-k3"], att=False, crossfit_true=True)
    with threadpool_limits(1):
        pool = cov.make_pool(600)
        results = cov.run_cell(pool, cov.pool_pcs(pool), cell, R, seed=7, jobs=1)
        truths = cov.true_effects(pool)
    errors = [r["error"] for r in results if r["error"]]
    assert len(errors) <= R // 50, errors  # separation in a few replications at most
    df = cov.summarise_cell(results, truths)
    assert (df.estimand == "ATE").all()
    return df.set_index(["row", "se"])


@pytest.mark.slow
@pytest.mark.parametrize("se", ["CR1-t", "wild"])
def test_dim_covers_with_cluster_and_wild_se(summary, se):
    r = summary.loc[("dim", se)]
    assert r.R >= R - R // 50
    assert abs(r.coverage - 0.95) <= BAND, (se, r.coverage, BAND)
    assert SE_SD[0] <= r.se_sd <= SE_SD[1], (se, r.se_sd)
    assert abs(r.bias) < 4 * r.mcse_bias, (se, r.bias, r.mcse_bias)  # randomised: unbiased


@pytest.mark.slow
@pytest.mark.parametrize("se", ["CR1-t", "wild"])
def test_aipw_covers_with_cluster_and_wild_se(summary, se):
    r = summary.loc[("aipw", se)]
    assert abs(r.coverage - 0.95) <= BAND, (se, r.coverage, BAND)
    assert ROBUST[0] <= r.se_sd_robust <= ROBUST[1], (se, r.se_sd_robust)
    assert abs(r.bias) < 4 * r.mcse_bias, (se, r.bias, r.mcse_bias)


@pytest.mark.slow
def test_default_hajek_se_is_never_too_small(summary):
    """The default Hajek row (cross-fitted ridge-logit, known-e IF under ipw_se='auto') is conservative,
    not anti-conservative: its coverage is not below the band and its SE is not below the spread (the
    full study: 0.950 / SE/SD 1.04 / bias +0.28 SD in this cell; conservative from 80 clusters on)."""
    r = summary.loc[("ipw-hajek|auto", "CR1-t")]
    assert r.coverage >= 0.95 - BAND, (r.coverage, BAND)
    assert r.se_sd >= SE_SD[0] and r.se_sd_robust >= ROBUST[0], (r.se_sd, r.se_sd_robust)
    assert abs(r.bias_sd) < 0.5, r.bias_sd


@pytest.mark.slow
@pytest.mark.parametrize("row", ["dim", "ipw-hajek|auto", "aipw"])
def test_wrong_ses_fail_the_bands(summary, row):
    """The bands above are not vacuous: an unclustered SE, the corrected IF of the cross-fitted ridge fit
    and the known-e IF of the in-sample logit fall outside them."""
    iid, cr1 = summary.loc[(row, "iid")], summary.loc[(row, "CR1-t")]
    assert iid.se_sd_robust < ROBUST[0] and iid.se_sd < SE_SD[0], (row, iid.se_sd_robust, iid.se_sd)
    assert iid.coverage < 0.95 - BAND, (row, iid.coverage)
    assert iid.mean_se < 0.75 * cr1.mean_se, (row, iid.mean_se, cr1.mean_se)
    if row == "ipw-hajek|auto":
        small = summary.loc[("ipw-hajek|crossfit", "CR1-t")]  # the corrected IF of the same cross-fitted fit
        assert small.se_sd < SE_SD[0] and small.coverage < 0.95 - BAND, (small.se_sd, small.coverage)
        large = summary.loc[("ipw-hajek|logit|known-e", "CR1-t")]
        assert large.se_sd > SE_SD[1] and large.se_sd_robust > ROBUST[1], (large.se_sd, large.se_sd_robust)
