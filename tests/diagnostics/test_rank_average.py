"""RATE (grf definition): hand computations, the half-sample bootstrap and paired comparisons."""

from __future__ import annotations

import numpy as np
import pytest

import eocausal.diagnostics.rank_average as rank_average
from eocausal.diagnostics.rank_average import half_sample_masks, rate
from eocausal.errors import InputError

# Hand-computed case (ties on purpose). Priorities and scores by unit:
#   S     = [0.5, 2, 2, 1, 0.5],  Gamma = [3, 4, 0, 1, -1]
# sorted by S (descending), tie groups averaged: S=2 -> (4+0)/2 = 2, 2; S=1 -> 1; S=0.5 -> (3-1)/2 = 1, 1
#   Gamma' = [2, 2, 1, 1, 1], mean 7/5; C_j = [2, 4, 5, 6, 7]; C_j/j = [2, 2, 5/3, 3/2, 7/5]
#   TOC_j = [3/5, 3/5, 4/15, 1/10, 0]
#   AUTOC = (1/5) sum TOC_j = 47/150;  QINI = (1/5) sum (j/5) TOC_j = (3/5 + 6/5 + 4/5 + 2/5)/25 = 3/25
#   TOC(q) with x = 5q: q=0.2 -> C_1/1 - 7/5 = 3/5; q=0.3 -> (C_1 + 0.5*2)/1.5 - 7/5 = 3/5;
#   q=0.5 -> (C_2 + 0.5*1)/2.5 - 7/5 = 2/5; q=1 -> 0
S_HAND = np.array([0.5, 2, 2, 1, 0.5])
G_HAND = np.array([3.0, 4, 0, 1, -1])


def test_rate_equals_hand_computation_with_ties():
    r = rate(S_HAND, G_HAND, target="AUTOC", n_boot=0, q=[0.2, 0.3, 0.5, 1.0])
    assert r.estimate == pytest.approx(47 / 150, abs=1e-14)
    assert np.allclose(r.toc["toc"], [3 / 5, 3 / 5, 2 / 5, 0.0], atol=1e-14)
    assert r.target == "AUTOC" and np.isnan(r.std_error)
    q = rate(S_HAND, G_HAND, target="QINI", n_boot=0)
    assert q.estimate == pytest.approx(3 / 25, abs=1e-14)
    # ignoring the ties (stable order 4, 0, 1, 3, -1) would give (13/5 + 3/5 + 4/15 + 3/5 + 0)/5 = 61/75
    assert abs(r.estimate - 61 / 75) > 0.3


def test_rate_does_not_depend_on_the_order_of_tied_units():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 200).astype(float)
    g = rng.normal(size=200)
    perm = rng.permutation(200)
    for target in ("AUTOC", "QINI"):
        a = rate(s, g, target=target, n_boot=0).estimate
        b = rate(s[perm], g[perm], target=target, n_boot=0).estimate
        assert a == pytest.approx(b, abs=1e-12)


def test_qini_and_autoc_on_constant_and_concentrated_priorities():
    rng = np.random.default_rng(1)
    g = rng.normal(size=300)
    # one tie group: every score is replaced by the mean, the TOC is 0 everywhere
    for target in ("AUTOC", "QINI"):
        r = rate(np.ones(300), g, target=target, n_boot=0)
        assert r.estimate == pytest.approx(0.0, abs=1e-12)
        assert np.allclose(r.toc["toc"], 0.0, atol=1e-12)
    # the effect sits on the top 5% only: AUTOC (weight 1 on every TOC_j) exceeds QINI (weight j/n)
    tau = np.r_[np.full(15, 10.0), np.zeros(285)]
    s = np.r_[np.linspace(2, 1, 15), np.linspace(0, -1, 285)]
    autoc = rate(s, tau, target="AUTOC", n_boot=0).estimate
    qini = rate(s, tau, target="QINI", n_boot=0).estimate
    assert autoc > qini > 0
    # a rule that ranks by the scores themselves is the best one: its RATE exceeds a reversed rule's
    assert rate(tau, tau, n_boot=0).estimate > 0 > rate(-s, tau, n_boot=0).estimate


def _naive(pr, g, target, q):
    """Direct translation of the definitions (sort, average ties, cumulative sums)."""
    o = np.argsort(-pr, kind="stable")
    ps, gs = pr[o], g[o].copy()
    for v in np.unique(ps):
        gs[ps == v] = gs[ps == v].mean()
    n = len(gs)
    j = np.arange(1, n + 1)
    toc = np.cumsum(gs) / j - gs.mean()
    val = toc.mean() if target == "AUTOC" else np.mean(j / n * toc)
    tq = []
    for qq in q:
        x = qq * n
        f = min(int(np.floor(x + 1e-15)), n)
        c = gs[:f].sum() + (x - f) * gs[min(f, n - 1)]
        tq.append(c / x - gs.mean())
    return val, np.array(tq)


@pytest.mark.parametrize("path", ["matrix", "per-draw"])
@pytest.mark.parametrize("target", ["AUTOC", "QINI"])
def test_vectorised_draws_equal_a_naive_loop(target, path, monkeypatch):
    # small n uses (draws x units) matrices, large n one draw at a time: both must agree with a loop
    monkeypatch.setattr(rank_average, "MATRIX_MAX_UNITS", 10**9 if path == "matrix" else 0)
    rng = np.random.default_rng(2)
    n = 90
    clusters = rng.integers(0, 30, n)
    pr = np.round(rng.normal(size=n), 1)  # ties
    g = pr + rng.normal(size=n)
    q = [0.1, 0.25, 0.5, 1.0]
    r = rate(pr, g, target=target, clusters=clusters, n_boot=7, seed=5, q=q)
    labels, codes = np.unique(clusters, return_inverse=True)
    naive = [_naive(pr[m[codes]], g[m[codes]], target, q) for m in half_sample_masks(len(labels), 7, 5)]
    assert np.allclose(r.draws, [v for v, _ in naive], rtol=0, atol=1e-12)
    toc_sd = np.std([t for _, t in naive], axis=0, ddof=1)
    assert np.allclose(r.toc["std_error"], toc_sd, rtol=0, atol=1e-12)
    assert r.std_error == pytest.approx(np.std([v for v, _ in naive], ddof=1), abs=1e-12)
    full, full_toc = _naive(pr, g, target, q)
    assert r.estimate == pytest.approx(full, abs=1e-12)
    assert np.allclose(r.toc["toc"], full_toc, atol=1e-12)


def test_half_sample_masks_draw_exactly_half_the_clusters_uniformly():
    masks = half_sample_masks(11, 4000, seed=3)
    assert masks.shape == (4000, 11) and (masks.sum(axis=1) == 5).all()
    # each cluster is in a draw with probability 5/11; SE of the share over 4000 draws ~ 0.008
    assert np.allclose(masks.mean(axis=0), 5 / 11, atol=5 * np.sqrt(5 / 11 * 6 / 11 / 4000))
    again = half_sample_masks(11, 4000, seed=3)
    assert np.array_equal(masks, again)


def test_clusters_are_kept_whole_and_matter_for_the_se():
    rng = np.random.default_rng(4)
    n, n_boot = 400, 500
    x = rng.uniform(size=n)
    s, g = x + 0.3 * rng.normal(size=n), x + rng.normal(size=n)
    base = rate(s, g, n_boot=n_boot, seed=1)
    # every unit copied three times: the statistic barely changes; with the copies as clusters the
    # half-sample SE stays that of the original units, without them it shrinks by about sqrt(3)
    s3, g3, c3 = np.repeat(s, 3), np.repeat(g, 3), np.repeat(np.arange(n), 3)
    clustered = rate(s3, g3, clusters=c3, n_boot=n_boot, seed=1)
    naive = rate(s3, g3, n_boot=n_boot, seed=1)
    assert clustered.n_clusters == n and naive.n_clusters == 3 * n
    assert clustered.estimate == pytest.approx(base.estimate, abs=0.01)
    # an SD over n_boot draws has relative SE about 1/sqrt(2(n_boot-1)) = 3%; a ratio of two, about 4.5%
    tol = 4 * np.sqrt(2) / np.sqrt(2 * (n_boot - 1))
    assert clustered.std_error == pytest.approx(base.std_error, rel=tol)
    assert naive.std_error == pytest.approx(base.std_error / np.sqrt(3), rel=tol)
    # each clustered draw holds whole triples: the draws equal the statistic on the drawn units
    masks = half_sample_masks(n, 3, seed=9)
    r = rate(s3, g3, clusters=c3, n_boot=3, seed=9)
    for b in range(3):
        keep = masks[b][c3]
        assert keep.sum() == 3 * (n // 2)
        assert r.draws[b] == pytest.approx(rate(s3[keep], g3[keep], n_boot=0).estimate, abs=1e-12)


def test_half_sample_se_matches_the_monte_carlo_sd():
    R, n = 100, 400
    rng = np.random.default_rng(5)
    est, se = np.empty(R), np.empty(R)
    for r in range(R):
        x = rng.uniform(size=n)
        est[r], se[r] = (lambda res: (res.estimate, res.std_error))(
            rate(x + 0.5 * rng.normal(size=n), x + 2 * rng.normal(size=n), n_boot=200, seed=r))
    mc_sd = est.std(ddof=1)
    # the SD of R estimates has relative SE about 1/sqrt(2(R-1)); the mean SE is far more precise
    tol = 3 / np.sqrt(2 * (R - 1))
    assert se.mean() / mc_sd == pytest.approx(1.0, abs=tol)


def test_paired_comparison_se_is_smaller_than_the_sum_of_ses():
    rng = np.random.default_rng(6)
    n = 1000
    x = rng.uniform(size=n)
    g = x + rng.normal(size=n)
    p1 = x + 0.2 * rng.normal(size=n)
    p2 = x + 0.2 * rng.normal(size=n)  # correlated with p1 through x
    r = rate(p1, g, compare=p2, n_boot=200, seed=2)
    r2 = rate(p2, g, n_boot=200, seed=2)
    assert r.compare_estimate == pytest.approx(r2.estimate)
    assert r.compare_std_error == pytest.approx(r2.std_error)  # same seed, same draws
    assert r.diff == pytest.approx(r.estimate - r.compare_estimate)
    assert r.diff_se < np.hypot(r.std_error, r.compare_std_error) < r.std_error + r.compare_std_error
    assert np.allclose(r.draws - r.compare_draws, r.draws - r2.draws)
    tidy = r.tidy()
    assert list(tidy["rule"]) == ["priority", "compare", "priority - compare"]


def test_rate_is_deterministic_and_reports_a_summary():
    rng = np.random.default_rng(7)
    s, g = rng.normal(size=50), rng.normal(size=50)
    a, b = rate(s, g, n_boot=20, seed=3), rate(s, g, n_boot=20, seed=3)
    assert np.array_equal(a.draws, b.draws)
    lo, hi = a.conf_int()
    assert lo < a.estimate < hi
    assert "AUTOC" in a.summary() and list(a.toc.columns) == ["q", "toc", "std_error", "lower", "upper"]


def test_alpha_is_the_significance_level_of_every_interval():
    rng = np.random.default_rng(8)
    s, g = rng.normal(size=60), rng.normal(size=60)
    r = rate(s, g, n_boot=30, seed=1)
    assert r.alpha == 0.05 and r.n_boot == 30
    # alpha = 0.05: 95% intervals, z = 1.959964; alpha = 0.10: 90%, z = 1.644854
    lo, hi = r.conf_int()
    assert hi - r.estimate == pytest.approx(1.959964 * r.std_error, rel=1e-6)
    lo90, hi90 = r.conf_int(alpha=0.10)
    assert hi90 - r.estimate == pytest.approx(1.644854 * r.std_error, rel=1e-6) and lo < lo90
    assert np.allclose(r.toc["upper"] - r.toc["toc"], 1.959964 * r.toc["std_error"], rtol=1e-6)
    row = r.tidy().iloc[0]
    assert row["ci_high"] == pytest.approx(hi, rel=1e-12) and row["n_boot"] == 30
    r90 = rate(s, g, n_boot=30, seed=1, alpha=0.10)
    assert r90.tidy().iloc[0]["ci_high"] == pytest.approx(hi90, rel=1e-12)
    assert np.allclose(r90.toc["upper"] - r90.toc["toc"], 1.644854 * r90.toc["std_error"], rtol=1e-6)
    with pytest.raises(InputError, match=r"alpha=1.0: must lie in \(0, 1\); 0.05 gives"):
        r.conf_int(alpha=1.0)
    with pytest.raises(InputError, match="alpha=1.5"):
        rate(s, g, alpha=1.5)


def test_rate_input_errors():
    with pytest.raises(InputError, match="target"):
        rate([1, 2, 3, 4], [1, 2, 3, 4], target="AUUC")
    with pytest.raises(InputError, match="at least 4"):
        rate(np.arange(10.0), np.arange(10.0), clusters=np.repeat([0, 1, 2], [3, 3, 4]))
    with pytest.raises(InputError, match="NaN or infinite"):
        rate([1, np.nan, 3, 4, 5], [1, 2, 3, 4, 5])
    with pytest.raises(InputError, match=r"expected shape \(5,\), one value per unit"):
        rate([1, 2, 3], [1, 2, 3, 4, 5])
    with pytest.raises(InputError, match="q"):
        rate(np.arange(10.0), np.arange(10.0), q=[0.5, 0.9])
    with pytest.raises(InputError, match="n_boot=-1"):
        rate(np.arange(10.0), np.arange(10.0), n_boot=-1)
    with pytest.raises(InputError, match="scores: required when priority is an array"):
        rate(np.arange(10.0))
    three = np.repeat([0, 1, 2], [3, 3, 4])
    assert np.isfinite(rate(np.arange(10.0), np.arange(10.0), clusters=three, n_boot=0).estimate)
