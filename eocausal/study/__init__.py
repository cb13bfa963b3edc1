"""Study files and the runner that wires data, encoders, estimators and reports together.

Names are imported on first use (:mod:`eocausal._lazy`).
"""

from __future__ import annotations

from eocausal._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "Study": "eocausal.study.schema",
        "load_study": "eocausal.study.schema",
        "RunResult": "eocausal.study.runner",
        "run_study": "eocausal.study.runner",
        "demo_study_path": "eocausal.study.runner",
    },
)
