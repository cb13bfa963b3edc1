"""Reports: figures and the self-contained HTML report."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from eocausal._atomic import atomic_write_text
from eocausal.report.html import render_report

__all__ = ["render_report", "report"]


def report(table, path: str | Path | None = None, **kwargs) -> str:
    """Render ``table`` as a self-contained HTML report; write it atomically to ``path`` if given.

    Keyword arguments go to :func:`eocausal.report.html.render_report`. Returns the HTML.
    """
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
