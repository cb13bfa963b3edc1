"""Debiasing ML-predicted outcomes ("one map, many trials").

When the outcome of a trial is itself predicted from imagery (a wealth-index map), effects
estimated on the predictions are attenuated: a model trained with squared error shrinks its
predictions toward the mean (Pettersson, Jerzak and Daoud, "One Map, Many Trials", AAAI-26;
METHODS.md section 5). This package corrects the outcome and carries the correction's
uncertainty into the standard errors.

- :class:`LinearCalibration` (LCC): Y~ = (P - m)/k from OLS of P on Y on a calibration set.
- :class:`Tweedie`: Y~ = P - sigma^2 d/dP log p(P), p a Gaussian KDE with an analytic score
  (Efron 2011).
- :class:`PPI`, :func:`ppi_mean`: prediction-powered inference with labels on some trial units
  (Angelopoulos et al. 2023).
- :func:`debiased_effects`: naive, LCC, Tweedie and PPI effects of one or many trials on one map,
  through difference in means, Hajek/HT IPW or AIPW, with joint bootstrap or delta-method SEs.
- :func:`check_calibration`, :func:`compare_debiasers`: warnings and a cross-validated choice.
"""

from eocausal.debias.calibration import LinearCalibration
from eocausal.debias.diagnostics import CalibrationCheck, DebiaserComparison, check_calibration, compare_debiasers
from eocausal.debias.effects import OUTCOME_TYPES, debiased_effects
from eocausal.debias.ppi import PPI, PPIResult, ppi_effect, ppi_mean
from eocausal.debias.tweedie import Tweedie, kde_bandwidth, kde_score

__all__ = ["LinearCalibration", "Tweedie", "PPI", "PPIResult", "ppi_mean", "ppi_effect", "debiased_effects",
           "check_calibration", "compare_debiasers", "CalibrationCheck", "DebiaserComparison", "kde_score",
           "kde_bandwidth", "OUTCOME_TYPES"]
