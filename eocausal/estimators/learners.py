"""The one factory of nuisance learners: propensity and outcome models by name.

Every part of eocausal that fits a propensity or an outcome model by name (IPW and AIPW
cross-fitting, the refit bootstrap, the scores of CATE fits) builds it here, so a name means the
same model everywhere:

- propensity: 'ridge-logit' (standardised confounders, ``LogisticRegressionCV`` over
  :data:`RIDGE_CS`), 'logit' (nearly unpenalised), 'gbm' (``HistGradientBoostingClassifier``);
- outcome_model: 'ridge' (standardised confounders, ``RidgeCV`` over :data:`RIDGE_ALPHAS`),
  'linear' (OLS), 'gbm' (``HistGradientBoostingRegressor``), 'forest'
  (``RandomForestRegressor``).

Any scikit-learn classifier (with ``predict_proba``) or regressor is accepted instead and cloned.
:func:`logistic_spec` and :func:`linear_spec` say which models eocausal's native fold-sharing
solvers (:mod:`eocausal.estimators.glm`) reproduce.
"""

from __future__ import annotations

import inspect

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from eocausal._types import OUTCOME_MODELS, PROPENSITY_MODELS
from eocausal.errors import InputError

__all__ = [
    "RIDGE_CS",
    "RIDGE_ALPHAS",
    "BlockStandardizer",
    "make_propensity_model",
    "make_outcome_model",
    "logistic_spec",
    "linear_spec",
    "split_scaler",
]

#: Inverse penalties searched by the ridge-logistic propensity model.
RIDGE_CS = np.logspace(-4, 2, 9)
#: Penalties searched by the ridge outcome model (efficient leave-one-out CV, scikit-learn's RidgeCV).
RIDGE_ALPHAS = np.logspace(-3, 4, 15)
# scikit-learn >= 1.8 asks for l1_ratios/use_legacy_attributes explicitly (and warns otherwise)
_NEW_LOGITCV_API = "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters


class BlockStandardizer(TransformerMixin, BaseEstimator):
    """Standardise tabular columns one by one and embedding columns as one block.

    The first ``n_tabular`` columns are centred and scaled to unit variance each; the rest (an
    embedding) are centred and divided by their pooled standard deviation, which keeps the
    relative scale of embedding dimensions. Scaling each of hundreds of random features to unit
    variance would give near-constant noise features the same prior weight as informative ones
    under a ridge penalty; on the demo study that doubled the IPW error (see
    tests/estimators/test_propensity.py).
    """

    def __init__(self, n_tabular: int = 0):
        self.n_tabular = n_tabular

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        k = self.n_tabular
        self.mean_ = X.mean(axis=0)
        scale = np.empty(X.shape[1])
        sd = X[:, :k].std(axis=0)
        scale[:k] = np.where(sd > 0, sd, 1.0)
        if X.shape[1] > k:
            pooled = (X[:, k:] - self.mean_[k:]).std()
            scale[k:] = pooled if pooled > 0 else 1.0
        self.scale_ = scale
        return self

    def transform(self, X):
        return (np.asarray(X, dtype=float) - self.mean_) / self.scale_


def _scaler(n_tabular: int | None):
    return StandardScaler() if n_tabular is None else BlockStandardizer(n_tabular)


def make_propensity_model(propensity="ridge-logit", *, inner_cv=None, seed: int | None = 0,
                          n_tabular: int | None = None):
    """A fresh classifier for a propensity model name or a scikit-learn classifier (cloned).

    Parameters
    ----------
    propensity : {'ridge-logit', 'logit', 'gbm'} or classifier
        'ridge-logit': standardised confounders and ``LogisticRegressionCV`` (L2) with the inverse
        penalty chosen by log-loss CV over :data:`RIDGE_CS`; 'logit': standardised confounders
        and ``LogisticRegression(C=1e6)``; 'gbm': ``HistGradientBoostingClassifier(max_iter=200,
        learning_rate=0.05)``; or any object with ``predict_proba``.
    inner_cv : int or iterable of (train, test) index pairs, optional
        The CV of 'ridge-logit' (default 3 folds).
    seed : int or None
        ``random_state`` of randomised models ('gbm').
    n_tabular : int, optional
        How many leading columns are tabular covariates (the rest are embedding dimensions,
        scaled as one block by :class:`BlockStandardizer`); None standardises every column.
    """
    if not isinstance(propensity, str):
        if not hasattr(propensity, "predict_proba"):
            raise InputError(f"propensity: {type(propensity).__name__} has no predict_proba; pass a classifier "
                             f"or one of {list(PROPENSITY_MODELS)}")
        return clone(propensity)
    if propensity == "ridge-logit":
        cv = inner_cv if inner_cv is not None else 3
        extra = ({"l1_ratios": (0.0,), "use_legacy_attributes": False}
                 if _NEW_LOGITCV_API else {})
        return make_pipeline(
            _scaler(n_tabular),
            LogisticRegressionCV(Cs=RIDGE_CS, cv=cv, scoring="neg_log_loss", max_iter=3000, **extra),
        )
    if propensity == "logit":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1e6, max_iter=5000))
    if propensity == "gbm":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed)
    raise InputError(f"propensity={propensity!r}: unknown model; use one of {list(PROPENSITY_MODELS)} or a "
                     "scikit-learn classifier")


def make_outcome_model(outcome_model="ridge", *, seed: int | None = 0, n_tabular: int | None = None):
    """A fresh regressor for an outcome model name or a scikit-learn regressor (cloned).

    Parameters
    ----------
    outcome_model : {'ridge', 'linear', 'gbm', 'forest'} or regressor
        'ridge': standardised confounders (see :class:`BlockStandardizer`) and ``RidgeCV`` with the
        penalty chosen by efficient leave-one-out CV over :data:`RIDGE_ALPHAS`; 'linear': OLS;
        'gbm': ``HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05)``; 'forest':
        ``RandomForestRegressor(n_estimators=200, min_samples_leaf=5)``; or any object with
        ``fit`` and ``predict``.
    seed : int or None
        ``random_state`` of randomised models ('gbm', 'forest').
    n_tabular : int, optional
        Leading tabular columns of the design (the rest is an embedding scaled as one block);
        None standardises every column.
    """
    if not isinstance(outcome_model, str):
        if not (hasattr(outcome_model, "fit") and hasattr(outcome_model, "predict")):
            raise InputError(f"outcome_model: {type(outcome_model).__name__} has no fit/predict; pass a "
                             f"regressor or one of {list(OUTCOME_MODELS)}")
        return clone(outcome_model)
    if outcome_model == "ridge":
        from sklearn.linear_model import RidgeCV

        return make_pipeline(_scaler(n_tabular), RidgeCV(alphas=RIDGE_ALPHAS))
    if outcome_model == "linear":
        from sklearn.linear_model import LinearRegression

        return LinearRegression()
    if outcome_model == "gbm":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=seed)
    if outcome_model == "forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=200, min_samples_leaf=5, random_state=seed)
    raise InputError(f"outcome_model={outcome_model!r}: unknown model; use one of {list(OUTCOME_MODELS)} or a "
                     "scikit-learn regressor")


def logistic_spec(propensity, n_tabular: int | None = None):
    """The :class:`~eocausal.estimators.glm.LogisticSpec` of a propensity model, or None.

    Recognised: 'ridge-logit', 'logit', and scikit-learn's ``LogisticRegression`` with an L2 (or
    no) penalty, a free intercept, no class weights and a solver other than liblinear (which
    penalises the intercept), alone or after a ``StandardScaler`` or :class:`BlockStandardizer`
    in a ``Pipeline``. Anything else (gradient boosting, other classifiers) is fitted as given.
    """
    from eocausal.estimators.glm import LogisticSpec

    block = n_tabular is not None
    if isinstance(propensity, str):
        if propensity == "ridge-logit":
            return LogisticSpec(C=None, Cs=tuple(RIDGE_CS), scaler="block" if block else "standard",
                                n_tabular=n_tabular or 0)
        if propensity == "logit":
            return LogisticSpec(C=1e6, scaler="standard")
        return None
    parts = split_scaler(propensity)
    if parts is None:
        return None
    scaler, n_tab, est = parts
    if type(est) is not LogisticRegression:
        return None
    prm = est.get_params()
    if (prm.get("penalty") not in ("l2", "deprecated", None) or prm.get("l1_ratio") not in (None, 0, 0.0)
            or not prm["fit_intercept"] or prm["class_weight"] is not None or prm["solver"] == "liblinear"
            or prm.get("dual")):
        return None
    C = np.inf if prm.get("penalty") is None else float(prm["C"])
    return LogisticSpec(C=C, scaler=scaler, n_tabular=n_tab)


def linear_spec(outcome_model, n_tabular: int | None = None):
    """The :class:`~eocausal.estimators.glm.LinearSpec` of an outcome model, or None.

    Recognised: 'ridge', 'linear', and scikit-learn's ``LinearRegression``, ``Ridge`` (one
    penalty) and ``RidgeCV`` (leave-one-out choice: ``cv=None``, default scoring, one penalty for
    the target), each with a free intercept and no positivity constraint, alone or after a
    ``StandardScaler`` or :class:`BlockStandardizer` in a ``Pipeline``. Anything else is fitted as
    given.
    """
    from sklearn.linear_model import LinearRegression, Ridge, RidgeCV

    from eocausal.estimators.glm import LinearSpec

    if isinstance(outcome_model, str):
        if outcome_model == "ridge":
            return LinearSpec(alpha=None, alphas=tuple(RIDGE_ALPHAS),
                              scaler="standard" if n_tabular is None else "block", n_tabular=n_tabular or 0)
        if outcome_model == "linear":
            return LinearSpec(alpha=0.0)
        return None
    parts = split_scaler(outcome_model)
    if parts is None:
        return None
    scaler, n_tab, est = parts
    prm = est.get_params() if hasattr(est, "get_params") else {}
    if not prm.get("fit_intercept", False) or prm.get("positive", False):
        return None
    if type(est) is LinearRegression:
        return LinearSpec(alpha=0.0, scaler=scaler, n_tabular=n_tab)
    if type(est) is Ridge and np.ndim(prm["alpha"]) == 0 and prm["alpha"] > 0:
        return LinearSpec(alpha=float(prm["alpha"]), scaler=scaler, n_tabular=n_tab)
    if (type(est) is RidgeCV and prm["cv"] is None and prm["scoring"] is None
            and not prm["alpha_per_target"] and np.all(np.asarray(prm["alphas"]) > 0)):
        return LinearSpec(alpha=None, alphas=tuple(np.ravel(prm["alphas"]).astype(float)), scaler=scaler,
                          n_tabular=n_tab)
    return None


def split_scaler(model):
    """(scaler kind, n_tabular, final estimator) of a learner, or None when eocausal cannot map it.

    A bare estimator has scaler 'none'; a ``Pipeline`` of a ``StandardScaler`` (or
    :class:`BlockStandardizer`) and an estimator gives 'standard' (or 'block' with its
    ``n_tabular``); any other pipeline gives None.
    """
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline):
        return "none", 0, model
    steps = [s for _, s in model.steps if s is not None and s != "passthrough"]
    if len(steps) == 1:
        return "none", 0, steps[0]
    if len(steps) != 2:
        return None
    kind = _scaler_kind(steps[0])
    if kind is None:
        return None
    if isinstance(kind, tuple):
        return kind[0], kind[1], steps[1]
    return kind, 0, steps[1]


def _scaler_kind(step):
    """'standard', ('block', n_tabular), 'none' for a recognised scaling step, else None."""
    if type(step) is StandardScaler:
        return "standard" if step.with_std else "none"
    if type(step) is BlockStandardizer:
        return ("block", int(step.n_tabular))
    return None
