"""eocausal: causal inference with satellite imagery.

Public names are imported lazily, so ``import eocausal`` stays fast and never imports torch;
torch loads only when an encoder is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Units": "eocausal.data.units",
    "ArraySource": "eocausal.data.arrays",
    "RasterSource": "eocausal.data.raster",
    "RasterSequence": "eocausal.data.sequences",
    "EmbeddingRaster": "eocausal.data.embedding_raster",
    "read_causalimages": "eocausal.data.causalimages",
    "read_tfrecord": "eocausal.data.causalimages",
    "embed": "eocausal.encoders.embed",
    "estimate": "eocausal.analysis",
    "cate": "eocausal.estimators.cate",
    "CateResult": "eocausal.estimators.cate",
    "rate": "eocausal.diagnostics.rate",
    "test_calibration": "eocausal.diagnostics.calibration",
    "blp_gates": "eocausal.diagnostics.calibration",
    "Formula": "eocausal.analysis",
    "EffectTable": "eocausal.results",
    "compare": "eocausal.results",
    "EffectRow": "eocausal._types",
    "report": "eocausal.report",
    "run_study": "eocausal.study.runner",
    "load_study": "eocausal.study.schema",
}
_SUBMODULES = {"errors", "data", "encoders", "estimators", "diagnostics", "results", "report", "study", "debias"}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"eocausal.{name}")
    raise AttributeError(f"module 'eocausal' has no attribute {name!r}")


def __dir__():
    return __all__
