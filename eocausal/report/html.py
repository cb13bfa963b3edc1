"""The self-contained HTML report (figures inlined, no external requests).

Every string that comes from data or a study file is escaped: the template environment has
autoescape on, and sections hand it plain strings, never markup.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from jinja2 import Environment, PackageLoader, select_autoescape

from eocausal.report.document import Document, build_document
from eocausal.report.sections import Section
from eocausal.results import EffectTable

_ENV = Environment(loader=PackageLoader("eocausal.report", "templates"),
                   autoescape=select_autoescape(default=True, default_for_string=True),
                   keep_trailing_newline=True)


def render_report(table: EffectTable, *, title: str | None = None, description: str = "",
                  true_effect: float | None = None,
                  reproducibility: Mapping[str, object] | None = None,
                  units=None, heterogeneity=None, debiasing: EffectTable | None = None,
                  calibration=None, salience=None, gallery=None, preferred: str | None = None,
                  extra_sections: Sequence[Section] = ()) -> str:
    """Render results as one self-contained HTML page; sections appear when their results exist.

    The page opens with the headline: the preferred estimate (chosen by
    :func:`eocausal.report.headline.preferred_row`) with its interval, what it means in the
    outcome's units, how adjusting for the imagery moved it, and one line each on overlap, balance
    and clusters.

    Parameters
    ----------
    table : EffectTable
        The effect estimates (with their propensity fits and balance tables).
    title, description : str
        Shown at the top (escaped).
    true_effect : float, optional
        For simulated studies.
    reproducibility : mapping
        Facts for the appendix (versions, seeds, hashes); no wall times, so the same inputs
        give the same bytes.
    units : Units or UnitsView, optional
        Adds the data section (the units' facts and a map of them by treatment); a
        :class:`~eocausal.report.sections.UnitsView` is what an output folder keeps of them.
    heterogeneity : CATE or RATE result, optional
        Adds the heterogeneity section (TOC curve, RATE, GATES).
    debiasing : EffectTable, optional
        Debiased-outcome estimates; ``calibration`` = (P_cal, Y_cal, {name: corrected}) adds
        the calibration plot.
    salience : dict, optional
        ``chips``, ``maps``, ``titles`` for the salience gallery (in the imagery section).
    gallery : ChipGallery, optional
        Example chips of each arm (:class:`eocausal.report.imagery.ChipGallery`), in the imagery section.
    preferred : str, optional
        Which row is the headline: "METHOD/ADJUSTMENT", "METHOD" or None for the default rule
        (see :func:`eocausal.report.headline.preferred_row`).
    extra_sections : sequence of Section
        Further sections, appended before the appendix.
    """
    return document_html(build_document(
        table, title=title, description=description, true_effect=true_effect, reproducibility=reproducibility,
        units=units, heterogeneity=heterogeneity, debiasing=debiasing, calibration=calibration,
        salience=salience, gallery=gallery, preferred=preferred, extra_sections=extra_sections))


def document_html(doc: Document) -> str:
    """The HTML page of a :class:`~eocausal.report.document.Document`."""
    return _ENV.get_template("report.html.j2").render(doc=doc)
