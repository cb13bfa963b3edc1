"""Debiasing ML-predicted outcomes ("one map, many trials").

When the outcome of a trial is itself predicted from imagery (a wealth-index map), effects
estimated on the predictions are attenuated: a model trained with squared error shrinks its
predictions toward the mean (Pettersson, Jerzak and Daoud, "One Map, Many Trials", AAAI-26;
docs/methods.md, Debiasing predicted outcomes; usage in docs/debiasing.md). This package corrects
the outcome and carries the correction's uncertainty into the standard errors.

- :class:`LinearCalibration` (LCC): Y~ = (P - m)/k from OLS of P on Y on a calibration set.
- :class:`Tweedie`: Y~ = P - sigma^2 d/dP log p(P), p a Gaussian KDE with an analytic score
  (Efron 2011).
- :class:`PPI`, :func:`ppi_mean`: prediction-powered inference with labels on some trial units
  (Angelopoulos et al. 2023).
- :mod:`.effects`: what :func:`eocausal.debiased_effects` needs from this layer (map and trials
  readers, the debiasers by name, the joint bootstrap's contrast); the effects themselves go
  through the per-trial core of :func:`eocausal.estimate`.
- :func:`check_calibration`, :func:`compare_debiasers`: warnings and a cross-validated choice.

Names are imported on first use (:mod:`eocausal._lazy`), so ``import eocausal.debias`` loads
neither the modules nor scikit-learn.
"""

from __future__ import annotations

from eocausal._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "LinearCalibration": "eocausal.debias.calibration",
        "Tweedie": "eocausal.debias.tweedie",
        "kde_score": "eocausal.debias.tweedie",
        "kde_bandwidth": "eocausal.debias.tweedie",
        "PPI": "eocausal.debias.ppi",
        "PPIResult": "eocausal.debias.ppi",
        "ppi_mean": "eocausal.debias.ppi",
        "ppi_effect": "eocausal.debias.ppi",
        "check_calibration": "eocausal.debias.diagnostics",
        "compare_debiasers": "eocausal.debias.diagnostics",
        "CalibrationCheck": "eocausal.debias.diagnostics",
        "DebiaserComparison": "eocausal.debias.diagnostics",
        "OUTCOME_TYPES": "eocausal.debias.effects",
    },
)
