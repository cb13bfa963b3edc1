"""The report's heterogeneity section calls the diagnostics (RATE, BLP/GATES) on a CATE result."""

from __future__ import annotations

import numpy as np
import pytest

from eocausal.diagnostics import blp_gates, rate
from eocausal.estimators.cate import CateResult
from eocausal.report import plots, sections


def _figures(sec):
    return [b for b in sec.blocks if b.kind == "figure"]


def _cells(sec) -> set[str]:
    return {c for b in sec.blocks if b.kind == "table" for row in [b.header, *b.body] for c in row}


@pytest.fixture(scope="module")
def result() -> CateResult:
    """A CATE result built from known arrays (no learner fit): the effect grows with x."""
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=n)
    w = (rng.random(n) < 0.5).astype(float)
    mu0, mu1 = 0.5 * x, 0.5 * x + 1 + x
    y = np.where(w == 1, mu1, mu0) + rng.normal(size=n)
    e = np.full(n, 0.5)
    scores = mu1 - mu0 + w * (y - mu1) / e - (1 - w) * (y - mu0) / (1 - e)
    return CateResult(tau_hat=1 + x + 0.3 * rng.normal(size=n), scores=scores, mu0=mu0, mu1=mu1,
                      propensity_scores=e, y=y, w=w, fold_ids=np.arange(n) % 5,
                      clusters=np.repeat(np.arange(n // 4), 4), learner="t", feature_names=("x",), n_tabular=1,
                      propensity_known=True)


def test_a_cate_result_gives_rate_and_gates(result, monkeypatch):
    drawn = []
    real = plots.gates_plot
    monkeypatch.setattr(plots, "gates_plot", lambda frame: drawn.append(frame) or real(frame))
    sec = sections.heterogeneity_section(result)
    figs = _figures(sec)
    assert sec.title == "Heterogeneity" and len(figs) == 2
    assert "95% band" in figs[0].caption and "5 groups" in figs[1].caption
    # the GATES drawn are blp_gates(result)'s, without the G5 - G1 row
    expected = blp_gates(result).gates
    (frame,) = drawn
    assert list(frame["group"]) == ["G1", "G2", "G3", "G4", "G5"]
    assert np.allclose(frame["estimate"], expected["estimate"][:5], rtol=1e-12)
    assert frame["estimate"].iloc[-1] > frame["estimate"].iloc[0]
    cells = _cells(sec)
    for term in ("ATE", "HET", "G5 - G1", "priority"):
        assert term in cells
    r = rate(result)
    assert f"{r.estimate:.3f}" in cells and r.n_clusters == 100  # the result's clusters


def test_a_rate_result_gives_the_toc_only_and_none_gives_no_section(result):
    sec = sections.heterogeneity_section(rate(result, n_boot=20, alpha=0.1))
    assert len(_figures(sec)) == 1 and "90% band" in _figures(sec)[0].caption and "GATES" not in sec.intro
    assert sections.heterogeneity_section(None) is None
