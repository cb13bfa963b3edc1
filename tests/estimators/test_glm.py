"""Native logistic and least-squares cross-fitting (eocausal.estimators.glm) against scikit-learn.

What is checked, and why:

- The native solvers must fit *the same models* as the scikit-learn learners they replace, so
  every comparison is fold by fold, on the same folds (from ``grouped_folds``, with and without
  clusters), on features of very different scales and offsets (``normal * uniform(0.1, 10) +
  uniform(-5, 5)``): that exercises the translation of a learner's own scaler, fitted on its
  training rows, into a diagonal penalty in the native solver's globally standardised
  coordinates. A wrong translation shifts the propensities by far more than the tolerances.
- 'ridge-logit': the reference is ``LogisticRegressionCV`` with the same inner folds as the
  native code (``StratifiedKFold(3)`` without shuffling, or the grouped inner split of
  ``propensity._fit_folds`` with clusters), solved by Newton-Cholesky to ``tol=1e-12``. Both are
  then converged to near machine precision, so propensities must agree to 1e-9 (observed
  ~1e-14) and the chosen inverse penalty per fold must be identical.
- Fixed-penalty logistic models and least squares / ridge: native vs ``solver='sklearn'`` (the
  learner's own fit). The scikit-learn side is also Newton-Cholesky at ``tol=1e-12`` (logistic)
  or a direct solve (least squares), so 1e-8 / 1e-9 are generous (observed ~1e-12 or smaller).
- Models the native code cannot reproduce must be recognised as such (``logistic_spec`` /
  ``linear_spec`` return None) and still be fitted, by the learner's own ``fit``.
- ``newton_logistic`` refuses separated data without a penalty (no finite maximum).
- ``logit_adjusted_psi`` with a ridge penalty: a Monte-Carlo check that the corrected SE
  matches the sampling SD of the Hajek estimate while the known-e SE is clearly too large.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.linalg import LinAlgWarning
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import (
    Lasso,
    LinearRegression,
    LogisticRegression,
    LogisticRegressionCV,
    Ridge,
    RidgeCV,
)
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from threadpoolctl import threadpool_limits

from eocausal.data.folds import grouped_folds
from eocausal.errors import SeparationError
from eocausal.estimators.aipw import crossfit_outcome
from eocausal.estimators.glm import newton_logistic
from eocausal.estimators.inference import logit_adjusted_psi
from eocausal.estimators.learners import (
    RIDGE_CS,
    BlockStandardizer,
    linear_spec,
    logistic_spec,
)
from eocausal.estimators.propensity import crossfit_propensity
from eocausal.estimators.weighting import hajek, se_from_psi

N, P, K = 800, 8, 5
N_GROUPS = 120


def _data(seed=1, n=N, p=P):
    """Confounders on very different scales and offsets, a logistic treatment and a linear outcome."""
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, p)) * rng.uniform(0.1, 10, p) + rng.uniform(-5, 5, p)
    Vs = (V - V.mean(0)) / V.std(0)
    w = (rng.uniform(size=n) < expit(Vs[:, 0] - 0.7 * Vs[:, 1] + 0.3 * Vs[:, 4])).astype(float)
    y = 1.0 * w + Vs @ rng.normal(size=p) + rng.normal(size=n)
    groups = rng.integers(0, N_GROUPS, n)
    return V, w, y, groups


@pytest.fixture(scope="module")
def data():
    return _data()


def _inner_cv(w_train, g_train, seed=0):
    """The inner CV split the native code uses (and ``propensity._fit_folds`` with clusters)."""
    if g_train is None:
        return list(StratifiedKFold(3).split(np.zeros(len(w_train)), w_train))
    ids = grouped_folds(len(w_train), g_train, 3, seed, stratify=w_train)
    return [(np.flatnonzero(ids != j), np.flatnonzero(ids == j)) for j in range(3)]


def _reference(V, w, folds, make):
    """Fold-by-fold scikit-learn fit: out-of-fold propensities and the fitted estimators."""
    e = np.empty(len(w))
    fitted = []
    for k in np.unique(folds):
        tr = folds != k
        m = make(tr).fit(V[tr], w[tr])
        e[~tr] = m.predict_proba(V[~tr])[:, 1]
        fitted.append(m)
    return e, fitted


# ----------------------------------------------------------------------------- ridge-logit
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("n_tabular", [None, 4])
def test_ridge_logit_matches_logistic_regression_cv(data, grouped, n_tabular):
    V, w, _, groups = data
    g = groups if grouped else None
    folds = grouped_folds(N, g, K, 0, stratify=w)
    det: dict = {}
    e, _ = crossfit_propensity(V, w, clusters=g, fold_ids=folds, n_tabular=n_tabular, details=det, seed=0)

    def make(tr):
        scaler = StandardScaler() if n_tabular is None else BlockStandardizer(n_tabular)
        cv = _inner_cv(w[tr], None if g is None else g[tr])
        return make_pipeline(scaler, LogisticRegressionCV(
            Cs=RIDGE_CS, cv=cv, scoring="neg_log_loss", solver="newton-cholesky", tol=1e-12, max_iter=1000,
            l1_ratios=(0.0,), use_legacy_attributes=False))

    ref, fitted = _reference(V, w, folds, make)
    assert np.max(np.abs(e - ref)) < 1e-9
    assert np.array_equal(det["C"], np.array([float(m[-1].C_) for m in fitted]))
    assert det["spec"] == logistic_spec("ridge-logit", n_tabular)


# ----------------------------------------------------------------------------- fixed penalty
FIXED = {
    "alone": lambda: LogisticRegression(C=0.05, solver="newton-cholesky", tol=1e-12),
    "standard": lambda: make_pipeline(StandardScaler(),
                                      LogisticRegression(C=0.05, solver="newton-cholesky", tol=1e-12)),
    "block": lambda: make_pipeline(BlockStandardizer(4),
                                   LogisticRegression(C=0.05, solver="newton-cholesky", tol=1e-12)),
}


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("kind", list(FIXED))
def test_fixed_penalty_logistic_native_equals_sklearn(data, kind, grouped):
    V, w, _, groups = data
    g = groups if grouped else None
    folds = grouped_folds(N, g, K, 0, stratify=w)
    model = FIXED[kind]()
    assert logistic_spec(model) is not None
    e_nat, _ = crossfit_propensity(V, w, clusters=g, fold_ids=folds, propensity=model, solver="native")
    e_skl, _ = crossfit_propensity(V, w, clusters=g, fold_ids=folds, propensity=model, solver="sklearn")
    assert np.max(np.abs(e_nat - e_skl)) < 1e-8
    # the penalty matters here (C = 0.05 shrinks strongly), so agreement is not by accident
    e_weak, _ = crossfit_propensity(V, w, clusters=g, fold_ids=folds, propensity=FIXED[kind]().set_params(
        **{("logisticregression__C" if kind != "alone" else "C"): 100.0}))
    assert np.max(np.abs(e_nat - e_weak)) > 1e-2


def test_logit_matches_newton_cholesky_reference(data):
    """'logit' is StandardScaler + LogisticRegression(C=1e6); its own lbfgs fit stops at tol 1e-4."""
    V, w, _, groups = data
    folds = grouped_folds(N, groups, K, 0, stratify=w)
    det: dict = {}
    e, _ = crossfit_propensity(V, w, clusters=groups, fold_ids=folds, propensity="logit", details=det)
    assert det["spec"].C == 1e6 and np.all(det["C"] == 1e6)
    ref, _ = _reference(V, w, folds, lambda tr: make_pipeline(
        StandardScaler(), LogisticRegression(C=1e6, solver="newton-cholesky", tol=1e-12)))
    assert np.max(np.abs(e - ref)) < 1e-8
    e_lbfgs, _ = crossfit_propensity(V, w, clusters=groups, fold_ids=folds, propensity="logit", solver="sklearn")
    assert np.max(np.abs(e - e_lbfgs)) < 1e-3


# ----------------------------------------------------------------------------- not recognised
NOT_LOGISTIC = {
    "liblinear": LogisticRegression(solver="liblinear"),
    "balanced": LogisticRegression(class_weight="balanced"),
    "l1": LogisticRegression(l1_ratio=1.0, solver="saga", C=0.1),
    "no-intercept": LogisticRegression(fit_intercept=False),
    "gbm": HistGradientBoostingClassifier(max_iter=20, random_state=0),
    "poly": make_pipeline(PolynomialFeatures(2), LogisticRegression()),
}


@pytest.mark.parametrize("kind", list(NOT_LOGISTIC))
def test_unrecognised_classifiers_fall_back_to_their_own_fit(data, kind):
    V, w, _, groups = data
    model = NOT_LOGISTIC[kind]
    assert logistic_spec(model) is None
    assert logistic_spec(model, n_tabular=4) is None
    if kind in ("liblinear", "no-intercept", "gbm"):  # the others are slow or warn; recognition is the point
        folds = grouped_folds(N, groups, K, 0, stratify=w)
        det: dict = {}
        # one OpenMP thread: HistGradientBoosting's threads crawl on a busy two-core machine
        with threadpool_limits(1, user_api="openmp"):
            e_nat, _ = crossfit_propensity(V, w, clusters=groups, fold_ids=folds, propensity=model, solver="native",
                                           details=det)
            e_skl, _ = crossfit_propensity(V, w, clusters=groups, fold_ids=folds, propensity=model, solver="sklearn")
        assert det["spec"] is None and det["C"] is None
        assert np.all((e_nat > 0) & (e_nat < 1))
        np.testing.assert_array_equal(e_nat, e_skl)


def test_unrecognised_pipeline_still_fits():
    V, w, _, groups = _data(n=300)
    folds = grouped_folds(300, groups, 3, 0, stratify=w)
    model = make_pipeline(PolynomialFeatures(2), StandardScaler(), LogisticRegression())
    assert logistic_spec(model) is None
    e, _ = crossfit_propensity(V, w, clusters=groups, fold_ids=folds, propensity=model)
    e_skl, _ = crossfit_propensity(V, w, clusters=groups, fold_ids=folds, propensity=model, solver="sklearn")
    np.testing.assert_array_equal(e, e_skl)


# ----------------------------------------------------------------------------- least squares
OUTCOME = {
    "ridge": ("ridge", None),
    "ridge-block": ("ridge", 4),
    "linear": ("linear", None),
    "LinearRegression": (LinearRegression(), None),
    "Ridge": (Ridge(3.0), None),
    "scaled-Ridge": (make_pipeline(StandardScaler(), Ridge(10.0)), None),
    "RidgeCV": (RidgeCV(alphas=np.logspace(-2, 3, 7)), None),
}


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("kind", list(OUTCOME))
def test_outcome_native_equals_sklearn(data, kind, grouped):
    V, w, y, groups = data
    model, n_tab = OUTCOME[kind]
    assert linear_spec(model, n_tab) is not None
    folds = grouped_folds(N, groups if grouped else None, K, 0, stratify=w)
    mu_nat = crossfit_outcome(V, y, w, folds, model, n_tabular=n_tab, solver="native")
    mu_skl = crossfit_outcome(V, y, w, folds, model, n_tabular=n_tab, solver="sklearn")
    for a, b in zip(mu_nat, mu_skl):
        assert np.max(np.abs(a - b)) < 1e-9 * np.std(y)


def test_outcome_native_with_collinear_column(data):
    """A column that is an affine function of another: OLS is not unique, its predictions are."""
    V, w, y, groups = data
    V = V.copy()
    V[:, 3] = 2 * V[:, 2] + 1
    folds = grouped_folds(N, groups, K, 0, stratify=w)
    for model in (LinearRegression(), "linear", Ridge(3.0)):
        mu_nat = crossfit_outcome(V, y, w, folds, model, solver="native")
        mu_skl = crossfit_outcome(V, y, w, folds, model, solver="sklearn")
        for a, b in zip(mu_nat, mu_skl):
            assert np.all(np.isfinite(a))
            assert np.max(np.abs(a - b)) < 1e-9 * np.std(y)


@pytest.mark.parametrize("model", [Ridge(positive=True), Lasso(alpha=0.1), RidgeCV(cv=5),
                                   LinearRegression(fit_intercept=False),
                                   make_pipeline(PolynomialFeatures(2), LinearRegression())],
                         ids=["positive", "lasso", "ridgecv-kfold", "no-intercept", "poly"])
def test_linear_spec_rejects_models_it_cannot_reproduce(model):
    assert linear_spec(model) is None
    assert linear_spec(model, n_tabular=4) is None


def test_unrecognised_outcome_model_falls_back(data):
    V, w, y, groups = data
    folds = grouped_folds(N, groups, K, 0, stratify=w)
    mu_nat = crossfit_outcome(V, y, w, folds, Lasso(alpha=0.1), solver="native")
    mu_skl = crossfit_outcome(V, y, w, folds, Lasso(alpha=0.1), solver="sklearn")
    for a, b in zip(mu_nat, mu_skl):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- separation
def test_newton_logistic_separation():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    w = (X[:, 0] > 0).astype(float)  # perfectly separated by the first column
    # the diverging Newton iterates make ill-conditioned Hessians on the way; no scipy
    # LinAlgWarning may escape (an error under this project's filterwarnings): SeparationError
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinAlgWarning)
        with pytest.raises(SeparationError, match="separate"):
            newton_logistic([X], [w], np.zeros(3))
    b = newton_logistic([X], [w], np.full(3, 1.0))
    assert np.all(np.isfinite(b)) and b[1] > 0
    # the same solution with the rows split into two blocks
    b2 = newton_logistic([X[:70], X[70:]], [w[:70], w[70:]], np.full(3, 1.0))
    assert np.max(np.abs(b - b2)) < 1e-8


def test_newton_logistic_matches_sklearn_on_one_block():
    """pen = 1/C on all slopes is scikit-learn's LogisticRegression(C) on the same design."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(500, 4))
    w = (rng.uniform(size=500) < expit(0.3 + X @ np.array([1.0, -0.5, 0.0, 0.2]))).astype(float)
    b = newton_logistic([X], [w], np.full(4, 1 / 0.3))
    ref = LogisticRegression(C=0.3, solver="newton-cholesky", tol=1e-12).fit(X, w)
    assert np.max(np.abs(b - np.r_[ref.intercept_, ref.coef_[0]])) < 1e-8


# ----------------------------------------------------------------------------- corrected IF
def test_logit_adjusted_psi_with_ridge_penalty_matches_monte_carlo_sd():
    """Hajek ATE with an in-sample ridge logistic propensity: SE from the corrected IF vs the MC SD.

    Four confounders drive both the treatment (logistic, moderate) and the outcome (strongly, R^2
    about 0.9), the design in which treating the estimated propensity as known is conservative
    for the ATE (Lunceford and Davidian 2004): the known-e SE is then clearly above the sampling
    SD, and the corrected one must match it. With R = 300 replications the SD's relative error
    is about 1/sqrt(2R) = 4%, so the band 1 +- 0.15 is about 3.5 of those standard errors; the
    mean SE's own Monte-Carlo error is far smaller.
    """
    R, n, p, lam = 300, 1500, 4, 5.0
    beta_w = np.array([0.6, -0.5, 0.4, 0.3])
    beta_y = np.array([2.0, 1.5, -1.5, 1.0])
    est, se_corr, se_known = np.empty(R), np.empty(R), np.empty(R)
    for r in range(R):
        rng = np.random.default_rng(1000 + r)
        V = rng.normal(size=(n, p))
        w = (rng.uniform(size=n) < expit(-0.2 + V @ beta_w)).astype(float)
        y = 1.0 * w + V @ beta_y + rng.normal(size=n)
        Xs = (V - V.mean(0)) / V.std(0)
        pen = np.full(p, lam)
        b = newton_logistic([Xs], [w], pen)
        e = expit(b[0] + Xs @ b[1:])
        pe = hajek(y, w, e)
        Xd = np.hstack([np.ones((n, 1)), Xs])
        psi = logit_adjusted_psi(pe, y, w, e, Xd, penalty=np.r_[0.0, pen])
        est[r] = pe.estimate
        se_corr[r] = se_from_psi(psi)[0]
        se_known[r] = se_from_psi(pe.psi)[0]
    sd = est.std(ddof=1)
    ratio = se_corr.mean() / sd
    assert abs(ratio - 1) < 0.15, (ratio, se_known.mean() / sd)
    assert se_known.mean() / sd > 1.15, se_known.mean() / sd


# ----------------------------------------------------------------------------- degenerate columns
def _degenerate_design(seed=0, n=900):
    """Columns that are constant, or exactly collinear, within one arm's training rows.

    ``w * x1`` is 0 for every control and equals x1 for every treated unit; ``d * w`` is a dummy
    that is 0 for every control. Found on the causalimages data (an imputation dummy that is 0
    in one fold's treated rows): cross-products leave rounding noise where such a column's
    training variance is 0, and a solver that trusts it fits noise (predictions off by 30 there).
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * [1, 5, 0.1, 2] + [0, 10, 3, 0]
    w = (rng.uniform(size=n) < expit(X[:, 0])).astype(float)
    d = (rng.uniform(size=n) < 0.1).astype(float)
    V = np.column_stack([X, w * X[:, 1], d * w])
    y = X @ np.array([1, 0.2, 1, 0.5]) + w + rng.normal(size=n)
    return V, y, w, grouped_folds(n, None, 5, 0, stratify=w)


@pytest.mark.parametrize("model", ["ridge", "linear", LinearRegression(), Ridge(2.0),
                                   make_pipeline(StandardScaler(), Ridge(5.0)),
                                   RidgeCV(alphas=np.logspace(-2, 3, 6)),
                                   make_pipeline(StandardScaler(), LinearRegression())],
                         ids=["ridge", "linear", "LinearRegression", "Ridge", "scaled Ridge", "RidgeCV",
                              "scaled LinearRegression"])
def test_outcome_columns_constant_or_collinear_within_an_arm(model):
    V, y, w, fold = _degenerate_design()
    a = crossfit_outcome(V, y, w, fold, model, solver="sklearn")
    b = crossfit_outcome(V, y, w, fold, model, solver="native")
    # least squares with collinear columns: the minimum-norm solution in the learner's coordinates,
    # as scipy's lstsq, so even the predictions off the training rows agree
    for arm in (0, 1):
        np.testing.assert_allclose(b[arm], a[arm], atol=1e-8 * np.std(y))


@pytest.mark.parametrize("model", [make_pipeline(StandardScaler(), LogisticRegression(C=0.5, solver="newton-cholesky", tol=1e-12, max_iter=1000)),
                                   LogisticRegression(C=0.5, solver="newton-cholesky", tol=1e-12, max_iter=1000)], ids=["scaled", "raw"])
def test_logistic_column_constant_in_a_training_fold(model):
    V, _, w, fold = _degenerate_design(seed=1)
    V = V.copy()
    V[:, 5] = np.where(fold == 2, 1.0, 0.0) * (V[:, 0] > 0)  # nonzero only in fold 2: constant elsewhere
    a, _ = crossfit_propensity(V, w, propensity=model, fold_ids=fold, solver="sklearn")
    b, _ = crossfit_propensity(V, w, propensity=model, fold_ids=fold, solver="native")
    np.testing.assert_allclose(b, a, atol=1e-7)


def test_unpenalised_fit_with_an_extreme_covariate_value_is_not_separation():
    """A finite MLE with one huge fitted log-odds (an outlying x) is returned and equals scikit-learn's."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 2))
    X[0, 0] = 60.0
    w = (rng.uniform(size=2000) < expit(X[:, 0])).astype(float)
    w[0] = 1.0
    b = newton_logistic([X], [w], np.zeros(2))
    assert np.abs(X @ b[1:] + b[0]).max() > 30  # the case the separation check must not catch
    ref = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(X, w)
    np.testing.assert_allclose(b, np.r_[ref.intercept_, ref.coef_[0]], rtol=1e-7, atol=1e-9)
