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


def data_section(units) -> Section | None:
    """Where the units are and which are treated (needs a GeoDataFrame with a CRS)."""
    frame = getattr(units, "frame", units)
    treat = getattr(units, "treatment", None)
    if frame is None or getattr(frame, "crs", None) is None or treat is None:
        return None
    desc = units.describe() if hasattr(units, "describe") else {}
    facts = pd.DataFrame({"value": [", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
                                    for v in desc.values()]}, index=pd.Index(list(desc), name="fact"))
    gdf = frame[[treat, frame.geometry.name]].copy()
    gdf[treat] = gdf[treat].map({0: "control", 1: "treated"})
    return Section("Data", "The study units, coloured by treatment.", frame_html(facts),
                   (_fig(plots.unit_map(gdf, treat, title="units by treatment", categorical=True), "units"),))


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
    """From a CATE result with ``rate()`` (and ``gates()``), or a RATE result with ``toc``."""
    if result is None:
        return None
    rate = result.rate() if hasattr(result, "rate") and callable(result.rate) else result
    figs = [_fig(plots.toc_plot(rate.toc, title=f"TOC ({rate.target})"),
                 "Targeting operator characteristic with pointwise 95% band (half-sample bootstrap).")]
    parts = [frame_html(rate.tidy().set_index("rule"))]
    if hasattr(result, "gates") and callable(result.gates):
        g = result.gates()
        gt = getattr(g, "table", g)
        if isinstance(gt, pd.DataFrame) and {"group", "estimate", "ci_low", "ci_high"} <= set(gt.columns):
            figs.append(_fig(plots.gates_plot(gt), "Group average treatment effects by predicted-effect quintile."))
            parts.append(frame_html(gt.set_index("group")))
    intro = ("RATE as grf defines it (Yadlowsky et al. 2021): how much better units prioritised by the "
             "predicted effect fare than the average; AUTOC weighs the top of the ranking most.")
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
