"""AIPW / DML: agreement with DoubleML's DoubleMLIRM and EconML's LinearDRLearner, clustered SEs.

Agreement settings (same data, same folds, same nuisance predictions):

- DoubleML: ``DoubleMLIRM(score='ATE'|'ATTE', normalize_ipw=False,
  ps_processor_config=PSProcessorConfig(clipping_threshold=c))`` (the non-deprecated spelling of
  ``trimming_threshold``, which clips), folds via ``set_sample_splitting``, learners
  ``LinearRegression()`` and ``LogisticRegression(C=np.inf)`` (unpenalised; ``penalty=None`` is
  deprecated in scikit-learn 1.8). DoubleML fits ml_g separately on the treated and the control
  units of each training fold, as :func:`crossfit_outcome` does, on the same rows in the same order.
- EconML: ``LinearDRLearner`` fits ``model_regression`` on [W, T] jointly. Passing
  :class:`ByArmRegressor` (a wrapper that fits the given regressor separately on T = 0 and T = 1
  rows and predicts by the T column) makes its mu0/mu1 identical to ours; its propensity model is
  fitted on W with the same folds (``cv`` = list of (train, test) index pairs). Its ATE then
  equals ours, and its SE equals ours with ``StatsModelsInferenceDiscrete(cov_type='HC0')``
  (the default HC1 is larger by sqrt(n / (n - 1))). With a plain ``LinearRegression`` on [W, T]
  (one slope vector for both arms) the nuisances, and hence the estimates, differ.

No DoubleML or EconML warning is raised in these settings, so no warning filter is needed.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.special import expit
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.linear_model import LinearRegression, LogisticRegression

from eocausal.data.folds import grouped_folds
from eocausal.errors import InputError, NotEstimableError
from eocausal.estimators import aipw as A
from eocausal.estimators.learners import make_outcome_model
from eocausal.estimators.weighting import se_from_psi

RTOL = 1e-8  # agreement tolerance with DoubleML / EconML (observed: ~1e-15)


def _data(n=600, p=4, seed=0):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, p))
    e = expit(0.2 + V @ np.r_[1.2, -0.8, np.zeros(p - 2)])
    w = (rng.uniform(size=n) < e).astype(float)
    y = 1 + 2 * w + V @ np.r_[1.5, 1.0, np.zeros(p - 2)] + w * V[:, 0] + rng.normal(size=n)
    return V, y, w


def _smpls(fold):
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in np.unique(fold)]


class ByArmRegressor(RegressorMixin, BaseEstimator):
    """Fit ``estimator`` separately on rows whose last column (the treatment) is 0 and 1."""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        X, y = np.asarray(X), np.asarray(y)
        t = X[:, -1]
        self.models_ = [clone(self.estimator).fit(X[t == a, :-1], y[t == a]) for a in (0, 1)]
        return self

    def predict(self, X):
        X = np.asarray(X)
        t = X[:, -1]
        out = np.empty(len(X))
        for a in (0, 1):
            if (t == a).any():
                out[t == a] = self.models_[a].predict(X[t == a, :-1])
        return out


# Solved to the optimum by scikit-learn too, so that eocausal's native Newton solver (solver="native",
# the default) and scikit-learn's own fit inside DoubleML give the same model to ~1e-12.
LOGIT = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=1000)
# scikit-learn's defaults (L-BFGS, tol=1e-4): agreement to the last digit needs solver="sklearn",
# which calls the learner's own fit on each fold as DoubleML does.
LOGIT_LBFGS = LogisticRegression(C=np.inf)


@pytest.mark.parametrize("solver", ["native", "sklearn"])
@pytest.mark.parametrize("score,estimand", [("ATE", "ATE"), ("ATTE", "ATT")])
def test_aipw_equals_doubleml_irm(score, estimand, solver):
    dml = pytest.importorskip("doubleml")
    from doubleml.utils import PSProcessorConfig

    V, y, w = _data()
    fold = grouped_folds(len(y), None, 5, 0, stratify=w)
    clip = 0.08  # some propensities are clipped, so the clipping rules must match too
    logit = LOGIT if solver == "native" else LOGIT_LBFGS
    fit = A.crossfit_aipw(V, y, w, fold, propensity=logit, outcome_model=LinearRegression(),
                          estimand=estimand, clip=clip, solver=solver)
    assert fit.n_clipped[0] > 0
    m = dml.DoubleMLIRM(dml.DoubleMLData.from_arrays(V, y, w), LinearRegression(), logit, n_folds=5,
                        score=score, normalize_ipw=False, draw_sample_splitting=False,
                        ps_processor_config=PSProcessorConfig(clipping_threshold=clip))
    m.set_sample_splitting(_smpls(fold)).fit()
    assert fit.estimate == pytest.approx(m.coef[0], rel=RTOL)
    assert fit.std_error == pytest.approx(m.se[0], rel=RTOL)
    preds = m.predictions
    np.testing.assert_allclose(fit.e[0], preds["ml_m"][:, 0, 0], rtol=RTOL)
    np.testing.assert_allclose(fit.mu0[0], preds["ml_g0"][:, 0, 0], rtol=RTOL)


def test_repeated_crossfitting_equals_doubleml_n_rep():
    dml = pytest.importorskip("doubleml")
    from doubleml.utils import PSProcessorConfig

    V, y, w = _data(seed=1)
    folds = np.stack([grouped_folds(len(y), None, 4, s, stratify=w) for s in range(3)])
    fit = A.crossfit_aipw(V, y, w, folds, propensity=LOGIT, outcome_model=LinearRegression(), clip=0.01,
                          combine="doubleml")
    m = dml.DoubleMLIRM(dml.DoubleMLData.from_arrays(V, y, w), LinearRegression(), LOGIT,
                        draw_sample_splitting=False, ps_processor_config=PSProcessorConfig(clipping_threshold=0.01))
    m.set_sample_splitting([_smpls(f) for f in folds]).fit()
    np.testing.assert_allclose(fit.estimates, m.all_coef[0], rtol=RTOL)
    np.testing.assert_allclose(fit.std_errors, m.all_se[0], rtol=RTOL)
    assert fit.estimate == pytest.approx(m.coef[0], rel=RTOL)
    assert fit.std_error == pytest.approx(m.se[0], rel=RTOL)
    # METHODS.md rule (Chernozhukov et al. 2018, eq. 3.8), by hand
    med = np.median(fit.estimates)
    est, se = A.combine_repeated(fit.estimates, fit.std_errors, "median")
    assert est == med
    assert se == pytest.approx(np.median(np.sqrt(fit.std_errors**2 + (fit.estimates - med) ** 2)), rel=1e-14)


def test_median_rule_is_not_doubleml_before_0_9():
    """DoubleML < 0.9 (_agg_cross_fit): sqrt(median(n se^2 + (tau_r - tau)^2) / n); the spread / n."""
    t, s, n = np.array([1.0, 1.3, 0.8]), np.array([0.1, 0.1, 0.1]), 500
    est, se = A.combine_repeated(t, s, "median")
    pre_09 = np.sqrt(np.median(n * s**2 + (t - 1.0) ** 2) / n)
    assert (est, se) == pytest.approx((1.0, np.sqrt(0.1**2 + 0.2**2)), rel=1e-14)  # the spread enters whole
    assert pre_09 == pytest.approx(np.sqrt(0.1**2 + 0.2**2 / n), rel=1e-14)  # divided by n: about 0.1
    assert se / pre_09 > 2
    # DoubleML >= 0.9: the median upper bound, which with equal SEs ignores the spread
    assert A.combine_repeated(t, s, "doubleml") == pytest.approx((1.0, 0.1), rel=1e-12)


@pytest.mark.parametrize("cov_type,factor", [("HC0", 1.0), ("HC1", None)])
def test_aipw_ate_equals_econml_lineardrlearner(cov_type, factor):
    pytest.importorskip("econml")
    from econml.dr import LinearDRLearner
    from econml.inference import StatsModelsInferenceDiscrete

    V, y, w = _data(seed=2)
    n = len(y)
    fold = grouped_folds(n, None, 5, 0, stratify=w)
    fit = A.crossfit_aipw(V, y, w, fold, propensity=LOGIT, outcome_model=LinearRegression(), clip=1e-6)
    est = LinearDRLearner(model_propensity=LOGIT, model_regression=ByArmRegressor(LinearRegression()),
                          cv=_smpls(fold), min_propensity=1e-6)
    est.fit(y, w, X=None, W=V, inference=StatsModelsInferenceDiscrete(cov_type=cov_type))
    assert est.ate(T0=0, T1=1) == pytest.approx(fit.estimate, rel=RTOL)
    factor = np.sqrt(n / (n - 1)) if factor is None else factor
    assert est.ate_inference(T0=0, T1=1).stderr_mean == pytest.approx(factor * fit.std_error, rel=RTOL)


def test_clustered_se_equals_formula_and_statsmodels():
    V, y, w = _data(n=800, seed=3)
    g = np.repeat(np.arange(200), 4)
    fold = grouped_folds(len(y), g, 5, 0, stratify=w)
    fit = A.crossfit_aipw(V, y, w, fold, propensity=LOGIT, outcome_model=LinearRegression(), clusters=g)
    psi = fit.psi[0]
    direct = np.sqrt(sum(psi[g == c].sum() ** 2 for c in range(200))) / len(y)
    assert fit.n_clusters == 200
    assert fit.std_error == pytest.approx(direct, rel=1e-12)
    # AIPW ATE = OLS of phi = psi + tau on a constant; cluster covariance without small-sample factor
    ols = sm.OLS(psi + fit.estimate, np.ones(len(y))).fit(
        cov_type="cluster", cov_kwds={"groups": g, "use_correction": False})
    assert ols.params[0] == pytest.approx(fit.estimate, rel=1e-12)
    assert ols.bse[0] == pytest.approx(fit.std_error, rel=1e-10)


def test_att_influence_function_matches_ratio_formula():
    V, y, w = _data(seed=4)
    rng = np.random.default_rng(0)
    e = np.clip(expit(V[:, 0]), 0.05, 0.95)
    mu0, mu1 = V @ np.r_[1.5, 1.0, 0, 0] + 1, rng.normal(size=len(y))
    pe = A.aipw(y, w, e, mu0, mu1, "ATT")
    h = w * (y - mu0) - (1 - w) * e * (y - mu0) / (1 - e)
    assert pe.estimate == pytest.approx(h.sum() / w.sum(), rel=1e-14)
    assert abs(pe.psi.mean()) < 1e-12
    # delta method for a ratio of means, cluster-robust
    g = np.arange(len(y)) // 3
    se, G = se_from_psi(pe.psi, g)
    d = h - pe.estimate * w
    direct = np.sqrt(np.sum(np.bincount(g, weights=d) ** 2)) / w.sum()
    assert se == pytest.approx(direct, rel=1e-12)


def test_aipw_recovers_the_effect_and_is_doubly_robust():
    rng = np.random.default_rng(5)
    n = 4000
    V = rng.normal(size=(n, 3))
    w = (rng.uniform(size=n) < expit(V[:, 0] - 0.5 * V[:, 1])).astype(float)
    y = 1.0 * w + 2 * V[:, 0] + V[:, 1] + rng.normal(size=n)
    fold = grouped_folds(n, None, 5, 0, stratify=w)
    e, _ = A.crossfit_propensity(V, w, propensity=LOGIT, fold_ids=fold)
    # outcome model misspecified (no covariates), propensity right
    mu0, mu1 = A.crossfit_outcome(V[:, :0], y, w, fold)
    pe = A.aipw(y, w, e, mu0, mu1)
    se, _ = se_from_psi(pe.psi)
    assert abs(pe.estimate - 1.0) < 4 * se
    naive = y[w == 1].mean() - y[w == 0].mean()
    assert abs(naive - 1.0) > 10 * se


def test_gbm_outcome_model_is_seeded_histgradientboosting():
    # fitting it is left out: HistGradientBoosting's OpenMP threads take ~30 s on a shared 2-core box
    from sklearn.ensemble import HistGradientBoostingRegressor

    m = make_outcome_model("gbm", seed=3)
    assert isinstance(m, HistGradientBoostingRegressor) and m.random_state == 3


@pytest.mark.parametrize("model", ["ridge", "linear"])
def test_outcome_models_by_name(model):
    V, y, w = _data(n=300, seed=6)
    fold = grouped_folds(len(y), None, 3, 0, stratify=w)
    mu0, mu1 = A.crossfit_outcome(V, y, w, fold, model)
    assert np.isfinite(mu0).all() and np.isfinite(mu1).all()
    assert np.corrcoef(mu1 - mu0, V[:, 0])[0, 1] > 0.3  # effect modification by V0 is picked up


def test_crossfit_outcome_fits_by_arm_on_training_folds_only():
    V, y, w = _data(n=200, seed=7)
    fold = grouped_folds(len(y), None, 4, 0, stratify=w)
    mu0, mu1 = A.crossfit_outcome(V, y, w, fold, LinearRegression())
    test = fold == 2
    for arm, mu in ((0, mu0), (1, mu1)):
        rows = ~test & (w == arm)
        ref = LinearRegression().fit(V[rows], y[rows]).predict(V[test])
        np.testing.assert_allclose(mu[test], ref, rtol=1e-12)


def test_errors_are_typed_and_say_what_to_do():
    V, y, w = _data(n=100, seed=8)
    fold = grouped_folds(len(y), None, 2, 0, stratify=w)
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(InputError, match=r"outcome: NaN or infinite values in rows \[3\]"):
        A.crossfit_outcome(V, bad, w, fold)
    with pytest.raises(InputError, match="shape"):
        A.crossfit_outcome(V[:50], y, w, fold)
    # every treated unit in fold 0: the training folds for fold 0 hold no treated unit
    fold_bad = np.where(w == 1, 0, np.arange(len(y)) % 2)
    with pytest.raises(NotEstimableError, match="no treated units"):
        A.crossfit_outcome(V, y, w, fold_bad)
    e = np.full(len(y), 0.5)
    e[0] = 0.0
    with pytest.raises(InputError, match="clip"):
        A.aipw(y, w, e, y, y)
    with pytest.raises(NotEstimableError):
        A.aipw(y, np.zeros_like(w), np.full(len(y), 0.5), y, y)
    with pytest.raises(InputError, match="ATO"):
        A.aipw(y, w, np.full(len(y), 0.5), y, y, "ATO")
    with pytest.raises(InputError, match="rule='mean'"):
        A.combine_repeated([1.0, 2.0], [0.1, 0.1], "mean")
    with pytest.raises(InputError, match="outcome_model: object has no fit/predict"):
        make_outcome_model(object())
    with pytest.raises(InputError, match=r"solver='fast': use one of \['native', 'sklearn'\]"):
        A.crossfit_outcome(V, y, w, fold, solver="fast")
    with pytest.raises(InputError, match="solver=True"):
        A.crossfit_aipw(V, y, w, fold, solver=True)
