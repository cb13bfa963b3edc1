"""eocausal: causal inference with satellite imagery.

The top level holds the sub-packages and the verbs and objects a notebook types; everything else
lives in its sub-package (``eocausal.diagnostics.test_calibration``, ``eocausal.study.run_study``).
Names are imported on first use (:mod:`eocausal._lazy`), so ``import eocausal`` stays fast and
imports neither torch nor scikit-learn; torch loads only when an encoder is used.
"""

from __future__ import annotations

from eocausal._lazy import attach

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = attach(
    __name__,
    {  # the data names resolve through eocausal.data's own lazy map
        **dict.fromkeys(("Units", "ArraySource", "RasterSource", "RasterSequence", "EmbeddingRaster",
                         "read_causalimages", "read_tfrecord"), "eocausal.data"),
        "embed": "eocausal.encoders.embed",
        "estimate": "eocausal.analysis",
        "EstimateOptions": "eocausal.options",
        "debiased_effects": "eocausal.debiased",
        "cate": "eocausal.estimators.cate",
        "rate": "eocausal.diagnostics.rank_average",
        "EffectTable": "eocausal.results",
        "compare": "eocausal.results",
    },
    # ``eocausal.report`` is a sub-package that is also the verb: calling it renders a report.
    submodules=("data", "encoders", "estimators", "diagnostics", "debias", "report", "study", "analysis",
                "options", "results", "errors"),
    defined=("__version__", "report"),
)
