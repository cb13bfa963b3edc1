"""Estimators on arrays and frames: propensity and outcome models, weights, IPW/AIPW, inference,
CATE fits and panels. An embedding is just more confounder columns; nothing here imports torch.

Names are imported on first use (:mod:`eocausal._lazy`), so ``import eocausal.estimators``
loads neither the modules nor scikit-learn, statsmodels or EconML. The solver internals
(:mod:`eocausal.estimators.glm`) and the bootstrap's building blocks stay in their modules.
The functions ``aipw`` and ``cate`` share their names with their modules, so they are not
listed here: use :func:`eocausal.cate` and ``eocausal.estimators.aipw.aipw``.
"""

from __future__ import annotations

from eocausal._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "PointEstimate": "eocausal.estimators.weighting",
        "difference_in_means": "eocausal.estimators.weighting",
        "hajek": "eocausal.estimators.weighting",
        "horvitz_thompson": "eocausal.estimators.weighting",
        "arm_weights": "eocausal.estimators.weighting",
        "stabilized_weights": "eocausal.estimators.weighting",
        "effective_sample_size": "eocausal.estimators.weighting",
        "crossfit_propensity": "eocausal.estimators.propensity",
        "fit_propensity": "eocausal.estimators.propensity",
        "make_propensity_model": "eocausal.estimators.learners",
        "make_outcome_model": "eocausal.estimators.learners",
        "AIPWFit": "eocausal.estimators.aipw",
        "crossfit_aipw": "eocausal.estimators.aipw",
        "crossfit_outcome": "eocausal.estimators.aipw",
        "Trimmed": "eocausal.estimators.trimming",
        "trim": "eocausal.estimators.trimming",
        "clip": "eocausal.estimators.trimming",
        "crump_threshold": "eocausal.estimators.trimming",
        "LogitIPW": "eocausal.estimators.inference",
        "fit_logit": "eocausal.estimators.inference",
        "BootstrapResult": "eocausal.estimators.inference",
        "bootstrap_ipw": "eocausal.estimators.inference",
        "bootstrap_aipw": "eocausal.estimators.inference",
        "multiplier_bootstrap": "eocausal.estimators.inference",
        "WildBootstrap": "eocausal.estimators.robust_se",
        "wild_cluster_bootstrap": "eocausal.estimators.robust_se",
        "conley_se": "eocausal.estimators.robust_se",
        "PanelFit": "eocausal.estimators.panel",
        "panel_fe": "eocausal.estimators.panel",
        "CateResult": "eocausal.estimators.cate",
        "BoostedDR": "eocausal.estimators.dr_boost",
        "crossfit_dr_boost": "eocausal.estimators.dr_boost",
    },
)
