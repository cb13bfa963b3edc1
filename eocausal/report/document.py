"""What a report says, before it is HTML or PDF: the headline, the design, the sections, the appendix.

:func:`build_document` gathers it from the results; :func:`eocausal.report.html.render_report`
renders it as one self-contained HTML page and :func:`eocausal.report.pdf.render_pdf` as a PDF,
so both show the same content in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from eocausal.report.headline import Headline, headline
from eocausal.report.sections import (Section, data_section, debiasing_section, estimates_section,
                                      heterogeneity_section, imagery_section, overlap_section,
                                      sensitivity_section)
from eocausal.results import EffectTable

__all__ = ["Document", "build_document"]


@dataclass(frozen=True)
class Document:
    """A report's content.

    Attributes
    ----------
    title, description : str
        The heading and the paragraph under it.
    headline : Headline or None
        The preferred estimate, what it means, how the imagery moved it, and the checks.
    true_effect : float or None
        The known effect of a simulated study.
    design : tuple of (str, object)
        The design facts (study, treatment, outcome, units, ...).
    sections : tuple of Section
        In order: imagery, estimates, overlap and balance, data, heterogeneity, debiased outcomes,
        sensitivity, then any extra sections.
    reproducibility : tuple of (str, object)
        The appendix.
    """

    title: str
    description: str = ""
    headline: Headline | None = None
    true_effect: object = None
    design: tuple = ()
    sections: tuple[Section, ...] = ()
    reproducibility: tuple = field(default_factory=tuple)


def build_document(table: EffectTable, *, title: str | None = None, description: str = "",
                   true_effect: float | None = None, reproducibility: Mapping[str, object] | None = None,
                   units=None, heterogeneity=None, debiasing: EffectTable | None = None, calibration=None,
                   salience=None, gallery=None, preferred: str | None = None,
                   extra_sections: Sequence[Section] = ()) -> Document:
    """The content of a report; the arguments are :func:`eocausal.report.html.render_report`'s."""
    d = table.design
    design = tuple((k, v) for k, v in (
        ("Study", d.get("study")), ("Treatment", d.get("treatment")), ("Outcome", d.get("outcome")),
        ("Units", d.get("n")), ("Treated", d.get("n_treated")), ("Clusters", d.get("n_clusters")),
        ("Trials", d.get("trials") if (d.get("trials") or 1) > 1 else None),
        ("Estimand", d.get("estimand")),
        ("Tabular confounders", ", ".join(d.get("confounders") or []) or None),
        ("Embedding dimensions", d.get("embedding_dim")), ("Propensity model", d.get("propensity")),
    ) if v not in (None, ""))
    head = headline(table, preferred)
    sections = tuple(s for s in (
        imagery_section(gallery, salience),
        estimates_section(table, true_effect),
        overlap_section(table, head.row.adjustment if head is not None else None),
        data_section(units, dict(d)) if units is not None else None,
        heterogeneity_section(heterogeneity),
        debiasing_section(debiasing, calibration),
        sensitivity_section(table),
        *extra_sections,
    ) if s is not None)
    return Document(title=title or f"eocausal report: {d.get('study', '')}".strip(), description=description,
                    headline=head, true_effect=true_effect, design=design, sections=sections,
                    reproducibility=tuple((reproducibility or {}).items()))
