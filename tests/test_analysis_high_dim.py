"""estimate() with wide embeddings: the balance PCs by randomized SVD, and the stage reports.

- ``_embedding_pcs`` uses scikit-learn's randomized SVD (fixed seed) from 500 rows and columns:
  its leading PCs (scores up to sign, variance shares) must equal the full SVD's on data with a
  decaying spectrum (as random features have). A PCA that picked a wrong or mixed component
  would differ by O(1) in the scores.
- ``progress``: estimate_trial reports 'trial: adjustment: propensity' and 'outcome model'
  stages to the callback (the terminal bar of estimate() is built on it); without a terminal
  no bar is made.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import eocausal
from eocausal import analysis


def test_randomized_pcs_equal_full_svd():
    rng = np.random.default_rng(0)
    n, d = 800, 700
    Z = (rng.normal(size=(n, 12)) * 2.0 ** -np.arange(12)) @ rng.normal(size=(12, d)) + 1e-3 * rng.normal(size=(n, d))
    scores, shares = analysis._embedding_pcs(Z)
    from sklearn.decomposition import PCA

    ref = PCA(n_components=5, svd_solver="full").fit(Z)
    ref_scores = ref.transform(Z)
    signs = np.sign(np.sum(scores * ref_scores, axis=0))
    np.testing.assert_allclose(scores * signs, ref_scores, rtol=0, atol=1e-8 * ref_scores.std(0).max())
    np.testing.assert_allclose(shares, ref.explained_variance_ratio_, rtol=1e-10)


def _frame(n=400, d=8, seed=0):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d))
    x = rng.normal(size=n)
    w = (rng.uniform(size=n) < 1 / (1 + np.exp(-(0.6 * x + 0.4 * Z[:, 0])))).astype(int)
    y = w + x + Z[:, 0] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "w": w, "x": x}), Z


def test_stages_are_reported_to_the_progress_hook(monkeypatch):
    df, Z = _frame()
    stages: list[str] = []

    class Recorder:
        def stage(self, text):
            stages.append(text)

        def close(self):
            stages.append("closed")

    monkeypatch.setattr(analysis, "_stage_bar", lambda progress=None: Recorder())
    eocausal.estimate(df, treatment="w", outcome="y", confounders=["x"], embeddings=Z, methods=["ipw-hajek", "aipw"])
    assert stages == ["all: tabular: propensity", "all: tabular: outcome model (observed)",
                      "all: image: propensity", "all: image: outcome model (observed)",
                      "all: tabular+image: propensity", "all: tabular+image: outcome model (observed)", "closed"]


def test_no_bar_without_a_terminal(monkeypatch):
    import io

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert analysis._stage_bar() is None
