"""Report sections: each turns one kind of result into blocks (text, tables, notes, figures).

A section appears only when its result exists. Blocks hold plain strings and matplotlib figures,
never markup: the HTML template escapes every string (autoescape) and inlines each figure as a
PNG data URI; the PDF (:mod:`eocausal.report.pdf`) receives the same blocks as data and draws the
figures as SVG. So both formats show the same content, and nothing from data is ever read as markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from eocausal.report import plots
from eocausal.results import EffectTable, _fmt, _label_part

__all__ = ["Notes", "Plot", "Row", "Section", "Table", "Text", "UnitsView", "format_frame"]


@dataclass(frozen=True)
class Text:
    """A paragraph."""

    text: str
    kind = "text"


@dataclass(frozen=True)
class Notes:
    """Numbered notes (an effect table's)."""

    items: tuple[str, ...]
    kind = "notes"


@dataclass(frozen=True)
class Table:
    """A table of strings.

    Attributes
    ----------
    frame : DataFrame
        The cells, already formatted (:func:`format_frame`); its index is the first column when
        ``index`` (the index name heads it).
    groups : tuple of (str, int)
        Column groups over the columns after the index: a label and how many columns it spans.
    index : bool
        Show the index as the first column.
    css : str
        The HTML table's class ("frame"; "effects" for the estimates).
    caption : str
        A line above the table.
    """

    frame: pd.DataFrame
    groups: tuple[tuple[str, int], ...] = ()
    index: bool = True
    css: str = "frame"
    caption: str = ""
    kind = "table"

    @property
    def header(self) -> list[str]:
        return ([str(self.frame.index.name or "")] if self.index else []) + [str(c) for c in self.frame.columns]

    @property
    def body(self) -> list[list[str]]:
        rows = self.frame.astype(str).values.tolist()
        return [[str(i), *r] for i, r in zip(self.frame.index, rows)] if self.index else rows


@dataclass(frozen=True, eq=False)
class Plot:
    """A figure and its caption; rendered to PNG (HTML) or SVG (PDF) when asked, each once."""

    figure: Figure
    caption: str
    kind = "figure"

    #: pixels per inch of the PNG
    dpi = 110

    @property
    def px_width(self) -> int:
        """Width of the PNG in pixels."""
        return round(self.figure.get_figwidth() * self.dpi)

    @cached_property
    def uri(self) -> str:
        return plots.figure_to_data_uri(self.figure, dpi=self.dpi)

    @cached_property
    def svg(self) -> str:
        return plots.figure_to_svg(self.figure)


@dataclass(frozen=True)
class Row:
    """Blocks side by side where the page is wide enough (the HTML page); one after the other in the PDF."""

    blocks: tuple
    kind = "row"


@dataclass(frozen=True)
class Section:
    """One titled part of the report: an introduction and blocks (:class:`Text`, :class:`Table`,
    :class:`Notes`, :class:`Plot`, :class:`Row` of these), in order."""

    title: str
    intro: str = ""
    blocks: tuple = field(default_factory=tuple)


def format_frame(df: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """The frame's cells as strings: numbers rounded to ``digits``, NaN empty."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    return df.map(fmt)


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


#: facts of Units.describe() that the Design block already shows (fact -> design key)
_DESIGN_FACTS = {"n": "n", "n_treated": "n_treated", "n_clusters": "n_clusters", "covariates": "confounders",
                 "treatment": "treatment", "outcome": "outcome"}


def _fact_text(v) -> str:
    return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def data_section(units, design: dict | None = None) -> Section | None:
    """Where the units are and which are treated (a :class:`UnitsView`, or Units with a CRS).

    Facts the Design block shows with the same value (``design``: the table's design facts) are
    left out.
    """
    view = units if isinstance(units, UnitsView) else UnitsView.from_units(units)
    if view is None:
        return None
    design = design or {}
    facts = [(k, _fact_text(v)) for k, v in view.facts
             if not (k in _DESIGN_FACTS and _fact_text(design.get(_DESIGN_FACTS[k], "")) == _fact_text(v))]
    blocks: list = [Plot(plots.unit_map(view.to_frame(), view.treatment, title="units by treatment",
                                        categorical=True), "The study units, coloured by treatment.")]
    if facts:
        blocks.append(Table(pd.DataFrame({"value": [v for _, v in facts]},
                                         index=pd.Index([k for k, _ in facts], name="fact"))))
    return Section("Data", "", (Row(tuple(blocks)),))


def _balance_frame(balance: dict[str, pd.DataFrame]) -> Table:
    """One table for all adjustment sets: SMD and variance ratio before weighting (the same for every
    set), then after weighting, one column group per set."""
    names = list(dict.fromkeys(i for b in balance.values() for i in b.index))
    first = next(iter(balance.values()))
    cols, groups = {}, []
    n_before = 0
    for c, label in (("smd_before", "SMD"), ("var_ratio_before", "var. ratio")):
        parts = [b[c] for b in balance.values() if c in b]
        if parts:  # the same in every table (no weights): the first value of each row
            cols[("before", label)] = pd.concat(parts).groupby(level=0).first().reindex(names)
            n_before += 1
    if n_before:
        groups.append(("Before weighting", n_before))
    for name, b in balance.items():
        b = b.reindex(names)
        have = [c for c in ("smd_after", "var_ratio_after") if c in b]
        for c in have:
            cols[(name, "SMD" if c == "smd_after" else "var. ratio")] = b[c]
        groups.append((f"After: {name}", len(have)))
    frame = pd.DataFrame(np.column_stack([v.to_numpy(float) for v in cols.values()]),
                         index=pd.Index(names, name=first.index.name or "variable"),
                         columns=[label for (_, label) in cols])
    return Table(format_frame(frame), groups=tuple(groups), caption="Standardised mean differences (SMD) and "
                 "variance ratios (treated / control), before weighting and after, by adjustment set.")


def _means_frame(balance: pd.DataFrame, adjustment: str) -> Table | None:
    """Covariate means by arm, unweighted and weighted by ``adjustment``'s weights (embedding PCs left out)."""
    if not {"mean_treated", "mean_control"} <= set(balance.columns):
        return None
    b = balance[balance["kind"] != "embedding PC"] if "kind" in balance else balance
    if b.empty:
        return None
    cols, groups = ["mean_treated", "mean_control"], [("Unweighted", 2)]
    if adjustment != "none" and {"mean_treated_weighted", "mean_control_weighted"} <= set(b.columns):
        cols += ["mean_treated_weighted", "mean_control_weighted"]
        groups.append((f"Weighted: {adjustment}", 2))
    frame = pd.DataFrame(b[cols].to_numpy(float), index=pd.Index(b.index, name=b.index.name or "variable"),
                         columns=["treated", "control"] * (len(cols) // 2))
    return Table(format_frame(frame), groups=tuple(groups),
                 caption=f"Means of the covariates by arm, without weights and weighted as the preferred "
                         f"estimate ({adjustment}).")


def overlap_section(table: EffectTable, preferred_adjustment: str | None = None) -> Section | None:
    """Overlap (propensities and weights by arm), one love plot and one balance table for every adjustment
    set, and covariate means by arm weighted as ``preferred_adjustment`` (default: the last set)."""
    if not table.propensities:
        return None
    fits = dict(table.propensities)
    blocks = [Plot(plots.overlap_plot(fits), "Out-of-fold propensity scores by arm for each adjustment set."),
              Plot(plots.weight_plot(fits, estimand=table.design.get("estimand", "ATE")),
                   "Distribution of the weights by arm (log scale).")]
    balance = {k: b for k, b in table.balance.items() if {"smd_before", "smd_after"} <= set(b.columns)}
    if balance:
        love = Plot(plots.love_plot(balance), "Balance: |SMD| before weighting (open circles) and after, "
                    "one marker per adjustment set; dashed line at 0.1.")
        adj = preferred_adjustment if preferred_adjustment in balance else list(balance)[-1]
        means = _means_frame(balance[adj], preferred_adjustment or adj)
        blocks.append(Row((love, means)) if means is not None else love)
        blocks.append(_balance_frame(balance))
    intro = ("Mass near 0 or 1 in one arm with none in the other means weak overlap. Standardised mean "
             "differences below 0.1 after weighting indicate balance (Austin 2009); rows include the "
             "embeddings' leading principal components and, where units have places, their coordinates.")
    return Section("Overlap and balance", intro, tuple(blocks))


def estimates_section(table: EffectTable, true_effect: float | None) -> Section:
    d = table._display()
    blocks: list = [Table(d, index=False, css="effects")]
    if table.notes:
        blocks.append(Notes(tuple(table.notes)))
    if len(table.rows) > 1:
        blocks.append(Plot(plots.forest_plot(table.tidy(), truth=true_effect), "Estimates with 95% intervals."))
    return Section("Estimates", "", tuple(blocks))


def sensitivity_section(table: EffectTable) -> Section | None:
    s = table.sensitivity()
    if s.empty or s["e_value"].isna().all():
        return None
    intro = ("E-values (VanderWeele and Ding 2017): the minimum strength of association, on the risk-ratio "
             "scale, that an unmeasured confounder would need with both treatment and outcome to explain "
             "away the estimate (or to move its interval to include 0). Differences are converted with "
             "RR = exp(0.91 d), d = estimate / SD(outcome).")
    frame = pd.DataFrame({
        **({"Trial": s["trial"]} if s["trial"].nunique() > 1 else {}),
        "Method": [_label_part("method", m) for m in s["method"]],
        "Adjustment": s["adjustment"],
        "Estimate": [_fmt(v) for v in s["estimate"]],
        "E-value": [_fmt(v) for v in s["e_value"]],
        "E-value (CI)": [_fmt(v) for v in s["e_value_ci"]],
    })
    return Section("Sensitivity", intro, (Table(frame, index=False),))


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
    blocks: list = [Table(format_frame(r.tidy().set_index("rule"))),
                    Plot(plots.toc_plot(r.toc, title=f"TOC ({r.target})"),
                         f"Targeting operator characteristic with pointwise {1 - r.alpha:.0%} band (half-sample "
                         "bootstrap).")]
    if not isinstance(result, RateResult):
        g = blp_gates(result)
        gates = g.gates.rename(columns={"term": "group"})
        groups = gates[gates["group"].str.fullmatch(r"G\d+")]
        blocks.append(Table(format_frame(pd.concat([g.blp.rename(columns={"term": "group"}), gates]).set_index("group"))))
        blocks.append(Plot(plots.gates_plot(groups), f"Group average treatment effects by predicted-effect "
                           f"quantile group ({len(groups)} groups), with {1 - g.interval_alpha:.0%} intervals."))
    intro = ("RATE as grf defines it (Yadlowsky et al. 2021): how much better units prioritised by the "
             "predicted effect fare than the average; AUTOC weighs the top of the ranking most.")
    if not isinstance(result, RateResult):
        intro += (" BLP and GATES (Chernozhukov, Demirer, Duflo and Fernandez-Val): the average effect (ATE), "
                  "the loading on the predicted heterogeneity (HET) and the effect in each group of units "
                  "sorted by their out-of-fold predicted effect.")
    return Section("Heterogeneity", intro, tuple(blocks))


def debiasing_section(table: EffectTable | None, calibration=None) -> Section | None:
    """Debiased-outcome estimates; ``calibration`` = (P_cal, Y_cal, {name: corrected}) for the plot."""
    if table is None:
        return None
    d = table._display()
    blocks: list = [Table(d, index=False, css="effects")]
    if table.notes:
        blocks.append(Notes(tuple(table.notes)))
    if calibration is not None:
        p_cal, y_cal, corrected = calibration
        blocks.append(Plot(plots.calibration_plot(p_cal, y_cal, corrected),
                           "Calibration set: predictions (grey) and corrected values against labels."))
    intro = ("Effects on an ML-predicted outcome, naive and debiased (linear calibration, Tweedie's "
             "correction, prediction-powered inference), with standard errors that include the "
             "calibration uncertainty.")
    return Section("Debiased outcomes", intro, tuple(blocks))


def imagery_section(gallery=None, salience=None) -> Section | None:
    """Example chips of each arm (a :class:`~eocausal.report.imagery.ChipGallery`) and, when a propensity
    CNN was fitted, its salience maps (``salience``: dict with ``chips`` (k, C, H, W), ``maps``
    (k, H, W) and ``titles``)."""
    blocks = []
    if gallery is not None:
        blocks.append(Plot(plots.chip_gallery(gallery.images, gallery.labels, titles=gallery.ids),
                           f"Example chips of treated (top) and control (bottom) units, drawn at random; "
                           f"{gallery.how}. Titles are unit ids."))
    if salience:
        blocks.append(Text("Gradient of the propensity log-odds with respect to the pixels (L2 over bands) for "
                           "the most likely treated and the least likely control units: where the image drives "
                           "the propensity."))
        blocks.append(Plot(plots.salience_gallery(salience["chips"], salience["maps"], salience["titles"]),
                           "Chips (top) and salience (bottom)."))
    if not blocks:
        return None
    return Section("Imagery", "", tuple(blocks))
