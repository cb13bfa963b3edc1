"""Report sections: each turns one kind of result into HTML fragments and inlined figures.

A section appears only when its result exists. Every string from data is escaped here or by
the template (autoescape); figures are PNG data URIs, so the page makes no request.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from markupsafe import Markup

from eocausal.report import plots
from eocausal.results import EffectTable


@dataclass(frozen=True)
class Section:
    """One titled part of the report."""

    title: str
    intro: str = ""
    html: Markup = Markup("")
    figures: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (data URI, caption)


def frame_html(df: pd.DataFrame, *, digits: int = 3, index: bool = True) -> Markup:
    """An escaped HTML table of a DataFrame (numbers rounded, no styling from data)."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for idx, row in zip(df.index, df.itertuples(index=False)):
        cells = ([f"<th>{html.escape(str(idx))}</th>"] if index else []) + \
                [f"<td>{html.escape(fmt(v))}</td>" for v in row]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return Markup(f'<table class="frame"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _fig(fig, caption: str) -> tuple[str, str]:
    return plots.figure_to_data_uri(fig), caption


@dataclass(frozen=True, eq=False)
class UnitsView:
    """What the data section shows of the units: their facts, places and treatment.

    Build it with :meth:`from_units`; ``eocausal.report.outputs`` saves and reads it back, so a
    report rendered again from an output folder draws the same map.

    Attributes
    ----------
    facts : tuple of (str, object)
        The units' :meth:`~eocausal.data.units.Units.describe` facts, in order.
    treatment : str
        Name of the treatment column (the map's legend title).
    labels : ndarray of str
        "treated" or "control" for each unit.
    geometry : ndarray of shapely geometries
        Each unit's place.
    crs : str
        The places' coordinate reference system as WKT.
    """

    facts: tuple[tuple[str, object], ...]
    treatment: str
    labels: np.ndarray
    geometry: np.ndarray
    crs: str

    @classmethod
    def from_units(cls, units) -> "UnitsView | None":
        """The view of a :class:`~eocausal.data.units.Units` (None without places, CRS or treatment)."""
        frame = getattr(units, "frame", units)
        treat = getattr(units, "treatment", None)
        if frame is None or getattr(frame, "crs", None) is None or treat is None:
            return None
        desc = units.describe() if hasattr(units, "describe") else {}
        labels = np.array(["treated" if int(v) == 1 else "control" for v in frame[treat]], dtype=str)
        return cls(facts=tuple(desc.items()), treatment=str(treat), labels=labels,
                   geometry=np.asarray(frame.geometry.values, dtype=object), crs=frame.crs.to_wkt())

    def to_frame(self):
        """A GeoDataFrame with the treatment labels and the places."""
        import geopandas as gpd

        return gpd.GeoDataFrame({self.treatment: self.labels}, geometry=list(self.geometry), crs=self.crs)


def data_section(units) -> Section | None:
    """Where the units are and which are treated (a :class:`UnitsView`, or Units with a CRS)."""
    view = units if isinstance(units, UnitsView) else UnitsView.from_units(units)
    if view is None:
        return None
    facts = pd.DataFrame({"value": [", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
                                    for _, v in view.facts]}, index=pd.Index([k for k, _ in view.facts], name="fact"))
    return Section("Data", "The study units, coloured by treatment.", frame_html(facts),
                   (_fig(plots.unit_map(view.to_frame(), view.treatment, title="units by treatment",
                                        categorical=True), "units"),))


def overlap_section(table: EffectTable) -> Section | None:
    if not table.propensities:
        return None
    fits = dict(table.propensities)
    figs = [_fig(plots.overlap_plot(fits), "Out-of-fold propensity scores by arm for each adjustment set."),
            _fig(plots.weight_plot(fits, estimand=table.design.get("estimand", "ATE")),
                 "Distribution of the weights by arm (log scale).")]
    parts = []
    for name, b in table.balance.items():
        figs.append(_fig(plots.love_plot(b), f"Balance after weighting, adjustment {name}: |SMD| before "
                         "(open) and after (filled); dashed line at 0.1."))
        cols = [c for c in ("smd_before", "smd_after", "var_ratio_before", "var_ratio_after") if c in b]
        parts.append(Markup(f"<h3>Balance: {html.escape(name)}</h3>") + frame_html(b[cols]))
    intro = ("Mass near 0 or 1 in one arm with none in the other means weak overlap. Standardised mean "
             "differences below 0.1 after weighting indicate balance (Austin 2009); rows include the "
             "embeddings' leading principal components and, where units have places, their coordinates.")
    return Section("Overlap and balance", intro, Markup("").join(parts), tuple(figs))


def estimates_section(table: EffectTable, true_effect: float | None) -> Section:
    figs = ()
    if len(table.rows) > 1:
        figs = (_fig(plots.forest_plot(table.tidy(), truth=true_effect), "Estimates with 95% intervals."),)
    return Section("Estimates", "", Markup(table.to_html()), figs)


def sensitivity_section(table: EffectTable) -> Section | None:
    s = table.sensitivity()
    if s.empty or s["e_value"].isna().all():
        return None
    intro = ("E-values (VanderWeele and Ding 2017): the minimum strength of association, on the risk-ratio "
             "scale, that an unmeasured confounder would need with both treatment and outcome to explain "
             "away the estimate (or to move its interval to include 0). Differences are converted with "
             "RR = exp(0.91 d), d = estimate / SD(outcome).")
    cols = ["trial", "method", "adjustment", "estimate", "e_value", "e_value_ci"]
    if s["trial"].nunique() == 1:
        cols.remove("trial")
    return Section("Sensitivity", intro, frame_html(s[cols], index=False))


def heterogeneity_section(result) -> Section | None:
    """From a CATE result (:func:`eocausal.cate`), or a RATE result (:func:`eocausal.rate`).

    A CATE result shows RATE (AUTOC) with its TOC curve and the cross-fitted BLP/GATES
    (:func:`eocausal.diagnostics.blp_gates`); a RATE result shows its own RATE and TOC curve only.
    """
    if result is None:
        return None
    from eocausal.diagnostics.calibration import blp_gates
    from eocausal.diagnostics.rank_average import RateResult, rate

    r = result if isinstance(result, RateResult) else rate(result)
    figs = [_fig(plots.toc_plot(r.toc, title=f"TOC ({r.target})"),
                 f"Targeting operator characteristic with pointwise {1 - r.alpha:.0%} band (half-sample bootstrap).")]
    parts = [frame_html(r.tidy().set_index("rule"))]
    if not isinstance(result, RateResult):
        g = blp_gates(result)
        gates = g.gates.rename(columns={"term": "group"})
        groups = gates[gates["group"].str.fullmatch(r"G\d+")]
        figs.append(_fig(plots.gates_plot(groups), f"Group average treatment effects by predicted-effect "
                         f"quantile group ({len(groups)} groups), with {1 - g.interval_alpha:.0%} intervals."))
        parts.append(frame_html(pd.concat([g.blp.rename(columns={"term": "group"}), gates]).set_index("group")))
    intro = ("RATE as grf defines it (Yadlowsky et al. 2021): how much better units prioritised by the "
             "predicted effect fare than the average; AUTOC weighs the top of the ranking most.")
    if len(parts) > 1:
        intro += (" BLP and GATES (Chernozhukov, Demirer, Duflo and Fernandez-Val): the average effect (ATE), "
                  "the loading on the predicted heterogeneity (HET) and the effect in each group of units "
                  "sorted by their out-of-fold predicted effect.")
    return Section("Heterogeneity", intro, Markup("").join(parts), tuple(figs))


def debiasing_section(table: EffectTable | None, calibration=None) -> Section | None:
    """Debiased-outcome estimates; ``calibration`` = (P_cal, Y_cal, {name: corrected}) for the plot."""
    if table is None:
        return None
    figs = ()
    if calibration is not None:
        p_cal, y_cal, corrected = calibration
        figs = (_fig(plots.calibration_plot(p_cal, y_cal, corrected),
                     "Calibration set: predictions (grey) and corrected values against labels."),)
    intro = ("Effects on an ML-predicted outcome, naive and debiased (linear calibration, Tweedie's "
             "correction, prediction-powered inference), with standard errors that include the "
             "calibration uncertainty.")
    return Section("Debiased outcomes", intro, Markup(table.to_html()), figs)


def salience_section(salience) -> Section | None:
    """``salience``: dict with ``chips`` (k, C, H, W), ``maps`` (k, H, W) and ``titles``."""
    if not salience:
        return None
    fig = plots.salience_gallery(salience["chips"], salience["maps"], salience["titles"])
    intro = ("Gradient of the propensity log-odds with respect to the pixels (L2 over bands) for the most "
             "likely treated and the least likely control units: where the image drives the propensity.")
    return Section("Salience", intro, figures=(_fig(fig, "Chips (top) and salience (bottom)."),))
