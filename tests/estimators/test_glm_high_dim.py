"""The native solvers' high-dimensional path (eocausal.estimators.glm.RowSpace) against the full one.

With at least ``REDUCE_MIN_COLUMNS`` columns, ridge-logistic fits are solved in the row space of
their training rows and ridge leave-one-out fits use only the range of the Gram matrix. Both are
exact rewrites of the same optimisation problems, so the fitted propensities and regressions must
equal those of the full p-dimensional solvers (and of scikit-learn) up to rounding. What is
checked:

- more columns than training rows (n = 300, d = 1,024), where the row space has dimension n_train;
- few distinct embedding rows (many units share an image, as on the Uganda data), where the row
  space is much smaller than both n and d;
- the block scaler (tabular columns first, then an embedding) and the standard scaler, whose
  penalty weights differ by column, so a basis built on the unweighted design would be wrong;
- ``RIDGE_CS`` choices identical; the row-space fit is the optimum in all d coordinates (its full
  gradient below 1e-9 of the gradient at the intercept-only fit); propensities within 1e-7 of the
  full-dimensional solver's, whose Newton steps use a float32 Hessian and stop once a step is
  below 3e-5, leaving gradients up to about 5e-7 where the penalty weights span many orders
  (block scaler, few distinct rows); regressions to 1e-8 of their SD. A wrong basis (a missed
  direction) or a wrong penalty map moves them by far more (checked by
  ``test_a_basis_missing_a_direction_is_caught``).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from eocausal.data.folds import grouped_folds
from eocausal.estimators import glm
from eocausal.estimators.aipw import crossfit_outcome
from eocausal.estimators.learners import logistic_spec
from eocausal.estimators.propensity import crossfit_propensity


def _wide(n=300, d=1024, n_tab=0, distinct=None, seed=0):
    """Tabular columns on mixed scales, then an embedding (optionally of ``distinct`` images only)."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(distinct or n, d)) * rng.uniform(0.2, 3.0, d) + rng.uniform(-2, 2, d)
    Z = rows[rng.integers(0, distinct, n)] if distinct else rows
    X = rng.normal(size=(n, n_tab)) * rng.uniform(0.5, 20, n_tab)
    V = np.hstack([X, Z])
    Vs = (V - V.mean(0)) / V.std(0)
    w = (rng.uniform(size=n) < expit(0.4 * Vs[:, :6].sum(1))).astype(float)
    y = w + Vs[:, :10] @ rng.normal(size=10) + rng.normal(size=n)
    return V, w, y


def _count_calls(monkeypatch, name: str) -> list[int]:
    """Count the calls of glm.<name> (a step only the high-dimensional path takes)."""
    calls = [0]
    real = getattr(glm, name)

    def spy(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(glm, name, spy)
    return calls


CASES = {
    "d>n": dict(n=300, d=1024, n_tab=0),
    "d>n, tabular first": dict(n=200, d=500, n_tab=3),
    "few distinct images": dict(n=700, d=512, n_tab=3, distinct=90),
    "more rows than columns, few distinct": dict(n=1500, d=300, n_tab=2, distinct=120),
}


@pytest.mark.parametrize(("case", "block"), [("d>n", False), ("d>n, tabular first", True),
                                             ("few distinct images", True), ("few distinct images", False),
                                             ("more rows than columns, few distinct", True)])
def test_ridge_logit_row_space_equals_full_dimension(case, block):
    V, w, _ = _wide(**CASES[case])
    n_tab = CASES[case]["n_tab"]
    spec = logistic_spec("ridge-logit", n_tab if block else None)
    fast = glm._cv_logistic(V, w, spec, None, 0, reduce=True)
    slow = glm._cv_logistic(V, w, spec, None, 0, reduce=False)
    assert fast[0] == slow[0]  # the same C chosen
    e_fast, e_slow = expit(V @ fast[2] + fast[1]), expit(V @ slow[2] + slow[1])
    np.testing.assert_allclose(e_fast, e_slow, rtol=0, atol=1e-7)
    # the row-space fit is the optimum of the full problem: its gradient in all d coordinates vanishes
    lay = glm.FoldLayout(V, np.zeros(len(w), dtype=np.intp), 1)
    d = glm.penalty_weights(spec.scaler, spec.n_tabular, lay.X.var(0), lay.scale, lay.X.mean(0))
    grad = lay.X.T @ (e_fast - w) + d / fast[0] * (fast[2] * lay.scale)
    assert abs(np.sum(e_fast - w)) < 1e-9 * len(w)
    assert np.max(np.abs(grad)) < 1e-9 * np.max(np.abs(lay.X.T @ (w - w.mean())))


def _all_rows(V, scaler="block"):
    """The layout of V (one block), its penalty weights and the row space of all its rows."""
    lay = glm.FoldLayout(V, np.zeros(len(V), dtype=np.intp), 1)
    d = glm.penalty_weights(scaler, 0, lay.X.var(0), lay.scale, lay.X.mean(0))
    return lay, d, glm._RowSpaces(lay.X, d, [slice(0, len(V))]).without(None)


@pytest.mark.parametrize(("n", "d", "distinct"), [(300, 1024, None), (1500, 400, 150)])
def test_row_space_fit_equals_scikit_learn(n, d, distinct):
    """One penalised fit in the row space against LogisticRegression: d > n (the n x n kernel
    path) and n > d with few distinct rows (the p x p Gram path)."""
    V, w, _ = _wide(n=n, d=d, distinct=distinct)
    lay, dw, rs = _all_rows(V)
    assert rs.rank == (n - 1 if distinct is None else distinct - 1)  # centred rows
    C = 0.05
    theta = glm.newton_cg_logistic(rs.blocks, [w], 1 / C, rs.sigma, blocks32=rs.blocks32)
    beta = rs.to_layout(theta)
    e = expit(lay.X @ beta[1:] + beta[0])
    # scikit-learn's objective C sum(loss) + |g|^2 / 2 on X / sqrt(d) is ours with g = sqrt(d) b
    Xs = lay.X / np.sqrt(dw)
    ref = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=200).fit(Xs, w)
    np.testing.assert_allclose(e, ref.predict_proba(Xs)[:, 1], rtol=0, atol=1e-8)
    # the fit is the optimum in all d coordinates: the full gradient vanishes
    grad = lay.X.T @ (e - w) + dw / C * beta[1:]
    assert np.max(np.abs(grad)) < 1e-7 * np.max(np.abs(lay.X.T @ (w - w.mean())))
    # and the coordinates of rows computed afresh are those of the fit
    np.testing.assert_allclose(rs.coordinates(np.arange(10)), rs.blocks[0][:10], rtol=0, atol=1e-9)


def test_a_basis_missing_a_direction_is_caught():
    """The comparisons above detect a basis that misses part of the row space."""
    V, w, _ = _wide(n=300, d=600)
    lay, _, rs = _all_rows(V)
    e = []
    for drop in (0, 5):
        k = rs.rank - drop
        theta = glm.newton_logistic([b[:, :k] for b in rs.blocks], [w], np.ones(k))
        beta = rs.to_layout(np.r_[theta, np.zeros(drop)])
        e.append(expit(lay.X @ beta[1:] + beta[0]))
    assert np.max(np.abs(e[0] - e[1])) > 1e-5


@pytest.mark.parametrize("case", ["d>n, tabular first", "few distinct images", "more rows than columns, few distinct"])
def test_crossfit_propensity_high_dim_native_equals_full(case, monkeypatch):
    """Whole cross-fits (grouped folds, inner CV by clusters): row space vs full dimension."""
    V, w, _ = _wide(**CASES[case])
    n_tab = CASES[case]["n_tab"]
    g = np.arange(len(w)) // 4
    folds = grouped_folds(len(w), g, 3, 0, stratify=w)
    calls = _count_calls(monkeypatch, "newton_cg_logistic")
    fast, _ = crossfit_propensity(V, w, clusters=g, fold_ids=folds, n_tabular=n_tab)
    assert calls[0] > 0  # the row-space path ran
    monkeypatch.setattr(glm, "REDUCE_MIN_COLUMNS", 10**9)
    slow, _ = crossfit_propensity(V, w, clusters=g, fold_ids=folds, n_tabular=n_tab)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-7)  # the full solver's accuracy (docstring)


@pytest.mark.parametrize("case", list(CASES))
def test_ridge_outcome_high_dim_equals_full_and_scikit_learn(case, monkeypatch):
    """RidgeCV's leave-one-out choice from the training rows' kernel (fewer rows than columns) or on
    the Gram's range: same mu0, mu1 as the full eigendecomposition and as scikit-learn's RidgeCV
    (block scaler) per fold and arm."""
    V, w, y = _wide(**CASES[case])
    n_tab = CASES[case]["n_tab"]
    folds = grouped_folds(len(w), np.arange(len(w)), 3, 0, stratify=w)
    dual = CASES[case]["d"] > CASES[case]["n"] / 2  # every training set (fold and arm) has fewer rows than columns
    calls = _count_calls(monkeypatch, "_ridge_loo_kernel" if dual else "_pivoted_cholesky")
    fast = np.array(crossfit_outcome(V, y, w, folds, "ridge", n_tabular=n_tab))
    assert calls[0] > 0  # the kernel, or the Gram's range, was used
    ref = np.array(crossfit_outcome(V, y, w, folds, "ridge", n_tabular=n_tab, solver="sklearn"))
    monkeypatch.setattr(glm, "REDUCE_MIN_COLUMNS", 10**9)
    slow = np.array(crossfit_outcome(V, y, w, folds, "ridge", n_tabular=n_tab))
    sd = y.std()
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-8 * sd)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-8 * sd)


def test_eigh_range_equals_full_eigendecomposition():
    """The nonzero eigenpairs of a low-rank PSD matrix, from its range, equal numpy's."""
    rng = np.random.default_rng(3)
    A = rng.normal(size=(400, 60)) * rng.uniform(0.1, 10, 60)
    M = A @ A.T
    lam, U = glm._eigh_range(M)
    assert len(lam) == 60
    ref_lam, ref_U = np.linalg.eigh(M)
    np.testing.assert_allclose(lam, ref_lam[-60:], rtol=1e-9)
    np.testing.assert_allclose(U @ np.diag(lam) @ U.T, M, rtol=0, atol=1e-9 * np.abs(M).max())
