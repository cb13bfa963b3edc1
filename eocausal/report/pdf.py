"""The report as a PDF, from the same content as the HTML page, typeset by Typst.

Typst (https://typst.app) comes as one self-contained wheel, ``typst`` on PyPI (extra ``[pdf]``):
no system libraries, no browser, no TeX. Figures go in as SVG, so they stay vector (the example
chips inside them keep their pixels), and the text is real text: selectable and searchable.

Nothing from the data is ever read as Typst markup. The template (``templates/report.typ``) is
fixed; the content reaches it as one JSON document through Typst's ``sys.inputs``, and the template
places each string as text. A unit name, note or title such as ``#set page(height: 1cm)`` or
``$x$ *y* <z> @w`` appears in the PDF exactly as written.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from eocausal.errors import OutputError, require
from eocausal.report.document import Document, build_document
from eocausal.results import EffectTable

__all__ = ["document_pdf", "render_pdf"]

#: width of the PDF's text area in inches (A4, 1.6 cm margins): a figure is drawn at its own size
#: in inches, or shrunk to this width
TEXT_WIDTH_IN = (21.0 - 2 * 1.6) / 2.54


def render_pdf(table: EffectTable, **kwargs) -> bytes:
    """The report of ``table`` as PDF bytes; keywords as :func:`eocausal.report.html.render_report`."""
    return document_pdf(build_document(table, **kwargs))


def _text(v) -> str:
    return "" if v is None else str(v)


def _blocks(blocks) -> list[dict[str, Any]]:
    """The blocks as data; a row's blocks one after the other (the page is narrow)."""
    return [_block(x) for b in blocks for x in (b.blocks if b.kind == "row" else (b,))]


def _block(b) -> dict[str, Any]:
    if b.kind == "table":
        return {"kind": "table", "header": b.header, "body": b.body, "index": b.index,
                "groups": [[_text(label), int(span)] for label, span in b.groups], "caption": _text(b.caption),
                "numeric_from": 3 if b.css == "effects" else 1}
    if b.kind == "figure":
        width_in = float(b.figure.get_figwidth())
        return {"kind": "figure", "svg": b.svg, "caption": _text(b.caption),
                "width": min(1.0, width_in / TEXT_WIDTH_IN)}
    if b.kind == "notes":
        return {"kind": "notes", "items": [_text(n) for n in b.items]}
    return {"kind": "text", "text": _text(b.text)}


def document_data(doc: Document) -> dict[str, Any]:
    """The JSON document the Typst template typesets: only strings, numbers, lists and maps."""
    h = doc.headline
    head = None
    if h is not None:
        head = {"estimand": h.row.estimand, "label": h.label, "estimate": h.estimate,
                "interval": f"95% CI [{h.ci_low}, {h.ci_high}]" if h.ci_low else "",
                "meaning": h.meaning, "imagery": h.imagery, "rule": f"The headline row is {h.rule}.",
                "checks": [{"name": c.name, "ok": bool(c.ok), "text": c.text} for c in h.checks]}
    return {
        "title": _text(doc.title), "description": _text(doc.description), "headline": head,
        "truth": "" if doc.true_effect is None else f"Simulated study: the true effect is {doc.true_effect}.",
        "design": [[_text(k), _text(v)] for k, v in doc.design],
        "sections": [{"title": _text(s.title), "intro": _text(s.intro), "blocks": _blocks(s.blocks)}
                     for s in doc.sections],
        "reproducibility": [[_text(k), _text(v)] for k, v in doc.reproducibility],
    }


def document_pdf(doc: Document) -> bytes:
    """The PDF of a :class:`~eocausal.report.document.Document` (A4; the same bytes for the same content).

    Raises
    ------
    DependencyError
        The ``typst`` package is not installed (``pip install 'eocausal[pdf]'``).
    OutputError
        Typst could not typeset the document (the message carries Typst's).
    """
    typst = require("typst", "pdf", "the PDF report")
    template = resources.files("eocausal.report").joinpath("templates", "report.typ").read_bytes()
    data = json.dumps(document_data(doc), ensure_ascii=False, allow_nan=False)
    try:
        return typst.compile(template, format="pdf", sys_inputs={"report": data}, ignore_system_fonts=True)
    except RuntimeError as exc:  # typst.TypstError
        raise OutputError(f"report.pdf: Typst could not typeset the report ({exc}); the HTML report has the "
                          "same content") from None
