"""The self-contained HTML report (figures inlined, no external requests).

Every string that comes from data or a study file is escaped: the template environment has
autoescape on, and the effect table's HTML escapes its cells itself.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from jinja2 import Environment, PackageLoader, select_autoescape

from eocausal.report.sections import (Section, data_section, debiasing_section, estimates_section,
                                      heterogeneity_section, overlap_section, salience_section,
                                      sensitivity_section)
from eocausal.results import EffectTable

_ENV = Environment(loader=PackageLoader("eocausal.report", "templates"),
                   autoescape=select_autoescape(default=True, default_for_string=True),
                   keep_trailing_newline=True)


def render_report(table: EffectTable, *, title: str | None = None, description: str = "",
                  true_effect: float | None = None,
                  reproducibility: Mapping[str, object] | None = None,
                  units=None, heterogeneity=None, debiasing: EffectTable | None = None,
                  calibration=None, salience=None, extra_sections: Sequence[Section] = ()) -> str:
    """Render results as one self-contained HTML page; sections appear when their results exist.

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
        ``chips``, ``maps``, ``titles`` for the salience gallery.
    extra_sections : sequence of Section
        Further sections, appended before the appendix.
    """
    d = table.design
    design = [(k, v) for k, v in (
        ("Study", d.get("study")), ("Treatment", d.get("treatment")), ("Outcome", d.get("outcome")),
        ("Units", d.get("n")), ("Treated", d.get("n_treated")), ("Clusters", d.get("n_clusters")),
        ("Trials", d.get("trials") if (d.get("trials") or 1) > 1 else None),
        ("Estimand", d.get("estimand")),
        ("Tabular confounders", ", ".join(d.get("confounders") or []) or None),
        ("Embedding dimensions", d.get("embedding_dim")), ("Propensity model", d.get("propensity")),
    ) if v not in (None, "")]
    sections = [s for s in (
        data_section(units) if units is not None else None,
        estimates_section(table, true_effect),
        overlap_section(table),
        salience_section(salience),
        heterogeneity_section(heterogeneity),
        debiasing_section(debiasing, calibration),
        sensitivity_section(table),
        *extra_sections,
    ) if s is not None]
    return _ENV.get_template("report.html.j2").render(
        title=title or f"eocausal report: {d.get('study', '')}".strip(),
        description=description, design=design, true_effect=true_effect, sections=sections,
        reproducibility=list((reproducibility or {}).items()),
    )
