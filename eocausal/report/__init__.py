"""Reports: the self-contained HTML report, its PDF, the output folder of a run, and the figures.

:func:`report` renders an :class:`~eocausal.results.EffectTable` as one HTML page
(:func:`render_pdf` as a PDF of the same content, its headline row chosen by
:func:`preferred_row`); the output
folder of ``eocausal run`` is written and read back by :func:`write_outputs` and
:func:`read_outputs`; each figure of the report is also a function returning a matplotlib
``Figure``. Names are imported on first use, so ``import eocausal.report`` loads neither
matplotlib nor jinja2.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from eocausal._atomic import atomic_write_text
from eocausal._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "render_report": "eocausal.report.html",
        "ReportInputs": "eocausal.report.outputs",
        "write_outputs": "eocausal.report.outputs",
        "read_outputs": "eocausal.report.outputs",
        "rerender_outputs": "eocausal.report.outputs",
        "UnitsView": "eocausal.report.sections",
        "overlap_plot": "eocausal.report.plots",
        "love_plot": "eocausal.report.plots",
        "weight_plot": "eocausal.report.plots",
        "forest_plot": "eocausal.report.plots",
        "unit_map": "eocausal.report.plots",
        "toc_plot": "eocausal.report.plots",
        "gates_plot": "eocausal.report.plots",
        "calibration_plot": "eocausal.report.plots",
        "salience_gallery": "eocausal.report.plots",
        "chip_gallery": "eocausal.report.plots",
        "render_pdf": "eocausal.report.pdf",
        "preferred_row": "eocausal.report.headline",
        "ChipGallery": "eocausal.report.imagery",
    },
    defined=("report",),
)


def report(table, path: str | Path | None = None, **kwargs) -> str:
    """Render ``table`` as a self-contained HTML report; write it atomically to ``path`` if given.

    Keyword arguments go to :func:`eocausal.report.html.render_report`. Returns the HTML.
    """
    from eocausal.report.html import render_report

    text = render_report(table, **kwargs)
    if path is not None:
        atomic_write_text(path, text)
    return text


class _CallableModule(types.ModuleType):
    """``eocausal.report`` is both this package and the function :func:`report`.

    Importing a submodule (``eocausal.report.plots``) binds the package to the ``report``
    attribute of ``eocausal``, which would shadow the function; making the package callable
    keeps ``eocausal.report(table, path)`` working either way.
    """

    def __call__(self, *args, **kwargs):
        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
