"""The self-contained HTML report (figures inlined, no external requests).

Every string that comes from data or a study file is escaped: the template environment has
autoescape on, and the effect table's HTML escapes its cells itself.
"""

from __future__ import annotations

from typing import Mapping

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from eocausal.report.plots import figure_to_data_uri, overlap_plot
from eocausal.results import EffectTable

_ENV = Environment(loader=PackageLoader("eocausal.report", "templates"),
                   autoescape=select_autoescape(default=True, default_for_string=True),
                   keep_trailing_newline=True)


def render_report(table: EffectTable, *, title: str | None = None, description: str = "",
                  true_effect: float | None = None,
                  reproducibility: Mapping[str, object] | None = None) -> str:
    """Render an EffectTable (and its propensity fits) as one self-contained HTML page.

    Parameters
    ----------
    table : EffectTable
    title, description : str
        Shown at the top (escaped).
    true_effect : float, optional
        For simulated studies.
    reproducibility : mapping
        Facts for the appendix (versions, seeds, hashes); no wall times, so the same inputs
        give the same bytes.
    """
    d = table.design
    design = [(k, v) for k, v in (
        ("Study", d.get("study")), ("Treatment", d.get("treatment")), ("Outcome", d.get("outcome")),
        ("Units", d.get("n")), ("Treated", d.get("n_treated")), ("Clusters", d.get("n_clusters")),
        ("Estimand", d.get("estimand")),
        ("Tabular confounders", ", ".join(d.get("confounders") or []) or None),
        ("Embedding dimensions", d.get("embedding_dim")), ("Propensity model", d.get("propensity")),
    ) if v not in (None, "")]
    overlap = None
    if table.propensities:
        overlap = figure_to_data_uri(overlap_plot(dict(table.propensities)))
    return _ENV.get_template("report.html.j2").render(
        title=title or f"eocausal report: {d.get('study', '')}".strip(),
        description=description, design=design, true_effect=true_effect,
        effects_html=Markup(table.to_html()), overlap_uri=overlap,
        reproducibility=list((reproducibility or {}).items()),
    )
