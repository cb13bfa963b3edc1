"""One options object for estimation: :class:`EstimateOptions`.

It is the single source of the settings of :func:`eocausal.estimate`, of
:func:`eocausal.debiased_effects`, of the study file's ``[estimate]`` section (its keys, types,
defaults, allowed values and error messages are derived from the fields below), of the runner
and of the manifest. Nothing copies the list of settings by hand: the study schema calls
:func:`toml_schema`, ``estimate(**settings)`` builds an ``EstimateOptions`` and the manifest
records :meth:`EstimateOptions.to_dict`.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from eocausal._types import ADJUSTMENTS, ESTIMANDS, METHODS, OUTCOME_MODELS, PROPENSITY_MODELS, SOLVERS
from eocausal.errors import InputError
from eocausal.estimators.robust_se import CONLEY_KERNELS, WILD_WEIGHTS

#: adjustment sets a user can ask for ('none' is the difference in means')
ADJUSTMENT_SETS = ADJUSTMENTS[1:]
SE_TYPES = ("if", "bootstrap", "wild", "conley")
CI_TYPES = ("normal", "percentile")
IPW_SE = ("auto", "corrected", "known-e")
TRIM_RULES = ("optimal", "rule-of-thumb")
CROSSFIT = (True, False, "auto")

__all__ = ["EstimateOptions", "toml_schema", "METHODS", "ESTIMANDS", "ADJUSTMENT_SETS", "PROPENSITY_MODELS",
           "OUTCOME_MODELS", "SE_TYPES", "CI_TYPES", "IPW_SE", "SOLVERS", "WILD_WEIGHTS", "CONLEY_KERNELS"]


def _opt(default, *, toml: tuple[type, ...], choices: tuple | None = None, doc: str = ""):
    """A field with its study-file type(s), allowed values and one line of documentation."""
    return field(default=default, metadata={"toml": toml, "choices": choices, "doc": doc})


def _choice_list(value, name: str, choices: tuple, allow_empty: bool = False) -> tuple:
    """A list of allowed values as a tuple without repeats; a bare string is refused (not split)."""
    if isinstance(value, str):
        raise InputError(f"{name}={value!r}: pass a list, even of one value, e.g. {name}=[{value!r}]")
    try:
        items = list(value)
    except TypeError:
        raise InputError(f"{name}={value!r}: pass a list of {list(choices)}") from None
    if not items and not allow_empty:
        raise InputError(f"{name}=[]: name at least one of {list(choices)}")
    bad = [x for x in items if x not in choices]
    if bad:
        raise InputError(f"{name}: unknown {bad}; choose from {list(choices)}")
    return tuple(dict.fromkeys(items))


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class EstimateOptions:
    """Settings of an estimation, validated once when the object is built.

    Every field is also a keyword of :func:`eocausal.estimate` and a key of the study file's
    ``[estimate]`` section (``seed`` comes from ``[study]`` there).

    Parameters
    ----------
    methods : list of {'dim', 'ipw-ht', 'ipw-hajek', 'aipw'}
        Difference in means, Horvitz-Thompson IPW, Hajek IPW and cross-fitted AIPW (DML).
    estimand : {'ATE', 'ATT', 'ATO'}
        Target of the weighting methods (the difference in means is the ATE under randomisation;
        AIPW estimates the ATE or the ATT).
    adjustments : list of {'tabular', 'image', 'tabular+image'}, optional
        Confounder sets of the weighting methods; None: every set the inputs allow.
    folds : int
        Cross-fitting folds (at least 2); clusters are never split between folds.
    clip : float
        Propensities are clipped to [clip, 1 - clip] (causalimages uses 1e-3); every unit is kept.
    trim : float, 'optimal' or 'rule-of-thumb', optional
        Trimming, distinct from clipping: units with a propensity outside [a, 1 - a] are dropped
        (a given, or from Crump et al. 2009); the estimand becomes the overlap population's.
    propensity : {'ridge-logit', 'logit', 'gbm'} or scikit-learn classifier
        Propensity model ('ridge-logit': penalty chosen by grouped cross-validation).
    outcome_model : {'ridge', 'linear', 'gbm'} or scikit-learn regressor
        Outcome regressions of AIPW, fitted by arm on the cross-fitting folds.
    seed : int or None
        Seeds the fold assignment and randomised models.
    alpha : float
        1 - confidence level of the intervals (0.05: 95% intervals).
    se : {'if', 'bootstrap', 'wild', 'conley'}
        'if': influence-function SEs; with clusters, cluster-robust with the CR1 factor
        sqrt(G / (G - 1)) and t(G - 1) critical values and p-values (Cameron, Gelbach and Miller
        2008). 'bootstrap': a (cluster) bootstrap with the nuisances held fixed. 'wild': the wild
        cluster bootstrap of the influence function with the null imposed (Kline and Santos 2012;
        MacKinnon and Webb 2018), p-values and intervals by test inversion; for fewer than about
        30 clusters. 'conley': Conley (1999) spatial-HAC SEs on the units' coordinates within
        ``conley_km``.
    n_boot : int
        Bootstrap draws (at least 50); the wild bootstrap enumerates all 2^G sign vectors when
        that is no more than ``n_boot``.
    wild_weights : {'auto', 'rademacher', 'webb'}
        Cluster weights of the wild bootstrap; 'auto': Webb's six-point weights with 12 clusters
        or fewer, Rademacher above.
    conley_km : float, optional
        Distance cutoff (km) of the Conley SEs (required with ``se='conley'``).
    conley_kernel : {'bartlett', 'uniform'}
        Weight of a pair of units at distance d: max(0, 1 - d / cutoff) or 1{d <= cutoff}.
    block_km : float, optional
        Spatial-block cross-fitting: units in one square block of this size (km) are never split
        between training and held-out folds (blocks and clusters are both kept whole).
    crossfit : bool or 'auto'
        Whether the IPW rows' propensity is cross-fitted. False: fitted on all units (a logistic
        model only), with the exact M-estimation (stacked sandwich) influence function. 'auto':
        all units for logistic models with a fixed penalty ('logit', a ``LogisticRegression``),
        cross-fitted for 'ridge-logit' (penalty chosen by CV) and flexible classifiers (evidence:
        :data:`eocausal.analysis.AUTO_IN_SAMPLE`). AIPW is always cross-fitted.
    ci : {'normal', 'percentile'}
        Interval of the bootstrap rows; with ``repeats > 1`` only 'normal' is defined.
    ipw_se : {'auto', 'corrected', 'known-e'}
        Influence function of the IPW rows: corrected for the estimated logistic propensity,
        treating the propensities as known (conservative for the ATE), or 'auto': always
        corrected for a propensity fitted on all units (``crossfit``); for a cross-fitted one,
        known-e when its penalty was chosen by cross-validation ('ridge-logit') and corrected for
        a fixed penalty with enough clusters per coefficient
        (:data:`eocausal.analysis.CORRECTION_CLUSTERS_PER_COEF`).
    solver : {'native', 'sklearn'}
        'native': logistic and least-squares nuisances solved by eocausal's fold-sharing solvers
        (the same models, solved tighter and faster); 'sklearn': each learner's own ``fit``.
    repeats : int
        Repeated cross-fitting: the median over ``repeats`` fold assignments (seeds seed,
        seed + 1, ...) with Chernozhukov et al.'s (2018, eq. 3.8) SE.
    min_arm : int
        A trial with fewer treated or control units gives rows marked not estimable.
    """

    methods: tuple = _opt(METHODS, toml=(list,), choices=METHODS,
                         doc="estimators to run: dim, ipw-ht, ipw-hajek, aipw")
    estimand: str = _opt("ATE", toml=(str,), choices=ESTIMANDS, doc="ATE, ATT or ATO")
    adjustments: tuple | None = _opt(None, toml=(list,), choices=ADJUSTMENT_SETS,
                                    doc="confounder sets; default: every set the inputs allow")
    folds: int = _opt(5, toml=(int,), doc="cross-fitting folds, at least 2")
    clip: float = _opt(1e-3, toml=(int, float), doc="propensities clipped to [clip, 1 - clip]")
    trim: Any = _opt(None, toml=(int, float, str), doc="trimming threshold in [0, 0.5), 'optimal' or 'rule-of-thumb'")
    propensity: Any = _opt("ridge-logit", toml=(str,), choices=PROPENSITY_MODELS, doc="propensity model")
    outcome_model: Any = _opt("ridge", toml=(str,), choices=OUTCOME_MODELS, doc="outcome model of AIPW")
    seed: int | None = _opt(0, toml=(int,), doc="seed of folds and randomised models")
    alpha: float = _opt(0.05, toml=(float,), doc="1 - confidence level")
    se: str = _opt("if", toml=(str,), choices=SE_TYPES, doc="standard errors: if, bootstrap, wild or conley")
    n_boot: int = _opt(1000, toml=(int,), doc="bootstrap draws, at least 50")
    ci: str = _opt("normal", toml=(str,), choices=CI_TYPES, doc="bootstrap interval: normal or percentile")
    ipw_se: str = _opt("auto", toml=(str,), choices=IPW_SE, doc="IPW influence function: auto, corrected, known-e")
    solver: str = _opt("native", toml=(str,), choices=SOLVERS, doc="nuisance solver: native or sklearn")
    repeats: int = _opt(1, toml=(int,), doc="cross-fitting splits (median rule), at least 1")
    min_arm: int = _opt(10, toml=(int,), doc="minimum treated and control units of a trial")
    wild_weights: str = _opt("auto", toml=(str,), choices=WILD_WEIGHTS,
                             doc="wild bootstrap weights: auto, rademacher or webb")
    conley_km: float | None = _opt(None, toml=(int, float), doc="distance cutoff (km) of se = 'conley'")
    conley_kernel: str = _opt("bartlett", toml=(str,), choices=CONLEY_KERNELS,
                              doc="Conley kernel: bartlett or uniform")
    block_km: float | None = _opt(None, toml=(int, float), doc="spatial blocks (km) kept whole by the folds")
    crossfit: Any = _opt("auto", toml=(bool, str), choices=CROSSFIT,
                         doc="cross-fit the IPW propensity: true, false or auto (all units for a fixed-penalty logit)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", _choice_list(self.methods, "methods", METHODS))
        if self.estimand not in ESTIMANDS:
            raise InputError(f"estimand={self.estimand!r}: use one of {list(ESTIMANDS)}")
        if self.adjustments is not None:
            object.__setattr__(self, "adjustments",
                               _choice_list(self.adjustments, "adjustments", ADJUSTMENT_SETS, allow_empty=True))
        self._check_int("folds", 2)
        self._check_int("n_boot", 50)
        self._check_int("repeats", 1)
        self._check_int("min_arm", 1)
        if not _is_number(self.clip) or not 0 <= self.clip < 0.5:
            raise InputError(f"clip={self.clip!r}: must be a number in [0, 0.5), e.g. 1e-3")
        object.__setattr__(self, "clip", float(self.clip))
        if not _is_number(self.alpha) or not 0 < self.alpha < 1:
            raise InputError(f"alpha={self.alpha!r}: must be a number in (0, 1), e.g. 0.05 for 95% intervals")
        object.__setattr__(self, "alpha", float(self.alpha))
        if self.trim is not None:
            if isinstance(self.trim, str):
                if self.trim not in TRIM_RULES:
                    raise InputError(f"trim={self.trim!r}: use a threshold in [0, 0.5) or one of {list(TRIM_RULES)}")
            elif not _is_number(self.trim) or not 0 <= self.trim < 0.5:
                raise InputError(f"trim={self.trim!r}: use a threshold in [0, 0.5) or one of {list(TRIM_RULES)}")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise InputError(f"seed={self.seed!r}: use a non-negative integer, or None for unseeded")
        for name in ("conley_km", "block_km"):
            v = getattr(self, name)
            if v is not None:
                if not _is_number(v) or not 0 < v < float("inf"):
                    raise InputError(f"{name}={v!r}: must be a positive distance in km, e.g. 50")
                object.__setattr__(self, name, float(v))
        if (self.se == "conley") != (self.conley_km is not None):
            raise InputError("conley_km: give it (a cutoff in km, e.g. conley_km=50) exactly when se='conley'"
                             if self.se == "conley" else
                             f"conley_km={self.conley_km!r} is used only by se='conley' (se={self.se!r}); "
                             "set se='conley' or drop conley_km")
        if not any(self.crossfit is c for c in CROSSFIT[:2]) and self.crossfit != "auto":
            raise InputError(f"crossfit={self.crossfit!r}: use True, False or 'auto'")
        if self.crossfit is False and isinstance(self.propensity, str) and self.propensity == "gbm":
            raise InputError("crossfit=False fits the IPW propensity on all units, which needs a logistic model "
                             "(its M-estimation SE is exact); use propensity='ridge-logit' or 'logit', or "
                             "crossfit=True for 'gbm'")
        for name, allowed in (("se", SE_TYPES), ("ci", CI_TYPES), ("ipw_se", IPW_SE), ("solver", SOLVERS),
                              ("wild_weights", WILD_WEIGHTS), ("conley_kernel", CONLEY_KERNELS)):
            v = getattr(self, name)
            if v not in allowed:
                raise InputError(f"{name}={v!r}: use one of {list(allowed)}")
        for name, allowed, need in (("propensity", PROPENSITY_MODELS, "predict_proba"),
                                    ("outcome_model", OUTCOME_MODELS, "predict")):
            v = getattr(self, name)
            if isinstance(v, str):
                if v not in allowed:
                    raise InputError(f"{name}={v!r}: use one of {list(allowed)} or a scikit-learn estimator")
            elif not (hasattr(v, "fit") and hasattr(v, need)):
                raise InputError(f"{name}: {type(v).__name__} has no fit/{need}; pass a name from "
                                 f"{list(allowed)} or a scikit-learn estimator")
        if "aipw" in self.methods and self.estimand == "ATO":
            raise InputError("methods: 'aipw' estimates the ATE or the ATT; use estimand='ATE' or 'ATT', "
                             "or drop 'aipw' for the ATO")
        if self.repeats > 1 and self.seed is None:
            raise InputError("repeats: repeated cross-fitting needs a seed (splits use seed, seed + 1, ...)")
        if self.repeats > 1 and self.se == "bootstrap" and self.ci == "percentile":
            raise InputError("ci='percentile' with repeats > 1: the median rule over splits gives a normal "
                             "interval only; use ci='normal' or repeats=1")

    def _check_int(self, name: str, minimum: int) -> None:
        v = getattr(self, name)
        if not _is_int(v) or v < minimum:
            raise InputError(f"{name}={v!r}: must be an integer of at least {minimum}")
        object.__setattr__(self, name, int(v))

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, options: "EstimateOptions | None" = None, **settings) -> "EstimateOptions":
        """``options`` (or the defaults) with ``settings`` replaced; unknown names are refused."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise InputError(f"unknown setting(s) {unknown}; the settings are {sorted(names)}")
        if options is None:
            return cls(**settings)
        if not isinstance(options, cls):
            raise InputError(f"options: expected an EstimateOptions, got {type(options).__name__}")
        return replace(options, **settings) if settings else options

    def to_dict(self) -> dict:
        """Plain values for a manifest (estimators given as objects appear as their class name)."""
        out = asdict(self)
        out["methods"] = list(self.methods)
        out["adjustments"] = None if self.adjustments is None else list(self.adjustments)
        for k in ("propensity", "outcome_model"):
            if not isinstance(out[k], str):
                out[k] = type(getattr(self, k)).__name__
        return out

    @property
    def propensity_name(self) -> str:
        return self.propensity if isinstance(self.propensity, str) else type(self.propensity).__name__

    @property
    def outcome_model_name(self) -> str:
        return self.outcome_model if isinstance(self.outcome_model, str) else type(self.outcome_model).__name__


def toml_schema(exclude: tuple[str, ...] = ("seed",)) -> dict[str, tuple[tuple[type, ...], Any, tuple | None]]:
    """key -> (TOML types, default, allowed values) for the study file's ``[estimate]`` section.

    List-valued keys carry the allowed values of their elements. ``seed`` comes from ``[study]``.
    """
    out = {}
    for f in fields(EstimateOptions):
        if f.name in exclude:
            continue
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        out[f.name] = (f.metadata["toml"], default, f.metadata["choices"])
    return out


def field_docs() -> dict[str, str]:
    """key -> one line of documentation (for the study-file reference)."""
    return {f.name: f.metadata["doc"] for f in fields(EstimateOptions)}

