"""Diagnostics: balance, overlap, sensitivity, and the evaluation of CATE predictions.

The CATE evaluation functions take the result of :func:`eocausal.cate` (as grf's take a
forest) or, as their twins, arrays computed elsewhere: :func:`rate` (RATE, TOC curve),
:func:`test_calibration` (grf's calibration test), :func:`blp_gates` (BLP and GATES),
:func:`clan` and :func:`effects_by`.

Names are imported on first use (:mod:`eocausal._lazy`), so ``import eocausal.diagnostics``
loads none of the modules (nor scipy, scikit-learn or EconML). No function shares its name with a module here (RATE lives
in ``rank_average.py``): ``from eocausal.diagnostics import rate`` is always the function.
"""

from __future__ import annotations

from eocausal._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "balance_table": "eocausal.diagnostics.balance",
        "OverlapSummary": "eocausal.diagnostics.overlap",
        "overlap_summary": "eocausal.diagnostics.overlap",
        "check_overlap": "eocausal.diagnostics.overlap",
        "EValue": "eocausal.diagnostics.sensitivity",
        "e_value": "eocausal.diagnostics.sensitivity",
        "RobustnessValue": "eocausal.diagnostics.sensitivity",
        "robustness_value": "eocausal.diagnostics.sensitivity",
        "DMLSensitivity": "eocausal.diagnostics.sensitivity",
        "dml_sensitivity": "eocausal.diagnostics.sensitivity",
        "RateResult": "eocausal.diagnostics.rank_average",
        "rate": "eocausal.diagnostics.rank_average",
        "CalibrationResult": "eocausal.diagnostics.calibration",
        "test_calibration": "eocausal.diagnostics.calibration",
        "BlpGatesResult": "eocausal.diagnostics.calibration",
        "blp_gates": "eocausal.diagnostics.calibration",
        "clan": "eocausal.diagnostics.calibration",
        "effects_by": "eocausal.diagnostics.calibration",
        "quantile_groups": "eocausal.diagnostics.calibration",
    },
)
