"""Figures for reports and notebooks. Each function returns a matplotlib Figure.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI
backend), so they work in scripts, servers and notebooks alike.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from eocausal._types import PropensityFit
from eocausal.errors import ColumnError, InputError
from eocausal.results import EffectTable, _row_labels

TREATED, CONTROL = "#c0392b", "#2c7fb8"


def overlap_plot(fits: dict[str, PropensityFit], *, bins: int = 30) -> Figure:
    """Propensity overlap by arm: one panel per adjustment set, treated above, control below."""
    k = max(len(fits), 1)
    fig = Figure(figsize=(3.6 * k, 2.7), layout="constrained")
    axes = fig.subplots(1, k, squeeze=False)[0]
    edges = np.linspace(0, 1, bins + 1)
    for ax, (name, fit) in zip(axes, fits.items()):
        e, w = np.asarray(fit.e_raw), np.asarray(fit.w)
        h1, _ = np.histogram(e[w == 1], edges)
        h0, _ = np.histogram(e[w == 0], edges)
        mids, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        ax.bar(mids, h1, width=width, color=TREATED, alpha=0.85, label=f"treated (n={int((w == 1).sum())})")
        ax.bar(mids, -h0, width=width, color=CONTROL, alpha=0.85, label=f"control (n={int((w == 0).sum())})")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlim(0, 1)
        ax.set_title(f"adjustment: {name}", fontsize=10)
        ax.set_xlabel("out-of-fold propensity")
        ticks = ax.get_yticks()
        ax.set_yticks(ticks, [f"{abs(int(t))}" for t in ticks])
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    axes[0].set_ylabel("units (control below)")
    return fig


def figure_to_data_uri(fig: Figure, dpi: int = 110) -> str:
    """PNG data URI of a figure, for inlining in a self-contained HTML file."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure_to_svg(fig: Figure) -> str:
    """The figure as SVG text (vector; text drawn as paths, so no font is needed to show it).

    The same figure gives the same text: no date in the metadata, and element ids hashed with a
    fixed salt (matplotlib's ``svg.hashsalt``) instead of a random one.
    """
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "eocausal", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def _style(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=8)


#: markers of the adjustment sets in the love plot, in the order the sets come
_SET_MARKERS = ("o", "s", "D", "^", "v", "P")
_SET_COLOURS = (TREATED, "#2ca25f", "#8e44ad", "#e67e22", "#16a085", "#7f8c8d")


def love_plot(balance, *, threshold: float = 0.1, max_rows: int = 30) -> Figure:
    """Absolute standardised mean differences before and after weighting (cobalt's love plot).

    Parameters
    ----------
    balance : DataFrame or dict of str to DataFrame
        One balance table, or one per adjustment set (``EffectTable.balance``): each indexed by
        row name with columns ``smd_before`` and ``smd_after`` (as
        :func:`eocausal.diagnostics.balance.balance_table` returns). With several tables, all
        sets share one panel: the unweighted SMDs once (open circles; they do not depend on the
        weights) and each set's weighted SMDs with its own marker and colour. Rows are those of
        the first table, then rows only later tables have.
    threshold : float
        Where the dashed line is drawn (0.1 by convention, Austin 2009).
    max_rows : int
        Rows shown, from the top.
    """
    tables = dict(balance) if isinstance(balance, dict) else {"": balance}
    names = list(dict.fromkeys(i for b in tables.values() for i in b.index))[:max_rows]
    before = pd.concat([b["smd_before"] for b in tables.values()]).groupby(level=0).first().reindex(names)
    fig = Figure(figsize=(5.8, 0.26 * len(names) + 1.3), layout="constrained")
    ax = fig.subplots()
    ypos = np.arange(len(names))[::-1]
    ax.scatter(np.abs(before.to_numpy(float)), ypos, marker="o", facecolors="none", edgecolors="#555555",
               label="before weighting")
    for (name, b), marker, colour in zip(tables.items(), _SET_MARKERS, _SET_COLOURS):
        after = b["smd_after"].reindex(names).to_numpy(float)
        ax.scatter(np.abs(after), ypos, marker=marker, color=colour, s=22, alpha=0.85,
                   label=f"after: {name}" if name else "after weighting")
    ax.axvline(threshold, color="grey", ls="--", lw=0.8)
    ax.set_yticks(ypos, [str(i) for i in names])
    ax.set_xlabel("|standardised mean difference|")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncol=min(len(tables) + 1, 4),
               fontsize=7, frameon=False)
    _style(ax)
    return fig


def _log_ticks(ax) -> None:
    """Log-axis ticks at 1, 2, 5 times powers of ten, labelled plainly, at most about six of them, and
    no labels on the minor ticks (matplotlib labels those too when a range spans under a decade,
    which is what made the labels collide)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_xlim()
    decades = np.log10(hi) - np.log10(lo)
    subs = (1.0, 2.0, 5.0) if decades <= 2 else (1.0,) if decades <= 6 else None
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs or (1.0,), numticks=7))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def weight_plot(fits: dict[str, PropensityFit], *, estimand: str = "ATE", bins: int = 40) -> Figure:
    """Distribution of the IPW weights by arm, one panel per adjustment set (log scale)."""
    k = max(len(fits), 1)
    fig = Figure(figsize=(3.6 * k, 2.5), layout="constrained")
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, (name, fit) in zip(axes, fits.items()):
        e, w = np.asarray(fit.e), np.asarray(fit.w)
        if estimand == "ATT":
            wt = np.where(w == 1, 1.0, e / (1 - e))
        elif estimand == "ATO":
            wt = np.where(w == 1, 1 - e, e)
        else:
            wt = np.where(w == 1, 1 / e, 1 / (1 - e))
        edges = np.logspace(np.log10(max(wt.min(), 1e-3)), np.log10(wt.max() * 1.01), bins)
        ax.hist(wt[w == 1], edges, color=TREATED, alpha=0.7, label="treated")
        ax.hist(wt[w == 0], edges, color=CONTROL, alpha=0.7, label="control")
        ax.set_xscale("log")
        ax.set_xlim(edges[0], edges[-1])
        _log_ticks(ax)
        ax.set_title(f"{name}: {estimand} weights", fontsize=9)
        ax.set_xlabel("weight")
        ax.legend(fontsize=7, frameon=False)
        _style(ax)
    return fig


def forest_plot(table, *, label: str | Sequence[str] | None = None, truth: float | None = None) -> Figure:
    """Estimates with confidence intervals, one line per row, the first row on top.

    Parameters
    ----------
    table : EffectTable or pandas.DataFrame
        An effect table, or a tidy frame (``EffectTable.tidy()``, or any frame with the columns
        ``estimate``, ``ci_low``, ``ci_high`` and some of trial, estimand, method, adjustment,
        outcome_type). Rows without an estimate are left out.
    label : str or sequence of str, optional
        The column(s) that name each line. None: the fields among trial, estimand, method,
        adjustment and outcome_type whose values differ between the rows (method and adjustment
        when none differs), e.g. "IPW (Hajek), tabular+image"; methods are named as in the
        estimates table and labels that would repeat are numbered (as ``eocausal.compare``
        labels its columns).
    truth : float, optional
        A known effect (simulations), drawn as a dashed line.
    """
    if isinstance(table, EffectTable):
        table = table.tidy()
    elif not isinstance(table, pd.DataFrame):
        raise InputError(f"table: expected an EffectTable or a tidy DataFrame, got {type(table).__name__}; pass "
                         "the table estimate() returned or its tidy()")
    columns = [label] if isinstance(label, str) else (list(label) if label is not None else None)
    missing = [c for c in ["estimate", "ci_low", "ci_high", *(columns or [])] if c not in table.columns]
    if missing:
        raise ColumnError(f"table: lacks columns {missing}; pass an EffectTable or its tidy() frame"
                          + (f" and a label among {list(table.columns)}" if columns else ""))
    t = table[table["estimate"].notna()].reset_index(drop=True)
    fig = Figure(figsize=(6.0, 0.26 * len(t) + 1.1), layout="constrained")
    ax = fig.subplots()
    ypos = np.arange(len(t))[::-1]
    ax.errorbar(t["estimate"], ypos, xerr=[t["estimate"] - t["ci_low"], t["ci_high"] - t["estimate"]],
                fmt="o", color="#333333", ecolor="#777777", capsize=2, ms=4)
    ax.set_yticks(ypos, _row_labels(t, columns))
    ax.axvline(0, color="grey", lw=0.8)
    if truth is not None:
        ax.axvline(truth, color=TREATED, ls="--", lw=1, label=f"true effect {truth:g}")
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel("estimate (95% CI)")
    _style(ax)
    return fig


def unit_map(gdf, column: str, *, title: str = "", categorical: bool | None = None) -> Figure:
    """Units coloured by a column (treatment, propensity, predicted effect), with geopandas."""
    from matplotlib.colors import ListedColormap

    fig = Figure(figsize=(4.6, 3.8), layout="constrained")
    ax = fig.subplots()
    cat = categorical if categorical is not None else gdf[column].nunique() <= 2
    arms = cat and set(gdf[column].astype(str)) <= {"control", "treated"}  # the report's arm colours
    cmap = (ListedColormap([CONTROL if v == "control" else TREATED for v in sorted(set(gdf[column].astype(str)))])
            if arms else None if cat else "coolwarm")  # geopandas orders categories sorted
    gdf.plot(ax=ax, column=column, categorical=cat, legend=True, markersize=5, cmap=cmap,
             legend_kwds={"fontsize": 7} if cat else {"shrink": 0.7})
    ax.set_title(title or column, fontsize=10)
    ax.set_xlabel("x" if gdf.crs is None or not gdf.crs.is_geographic else "longitude")
    ax.set_ylabel("y" if gdf.crs is None or not gdf.crs.is_geographic else "latitude")
    _style(ax)
    return fig


def toc_plot(toc, *, title: str = "") -> Figure:
    """The targeting operator characteristic with its confidence band.

    ``toc``: a DataFrame with columns ``q`` (share treated by priority), ``toc`` and optional
    ``lower``/``upper``.
    """
    fig = Figure(figsize=(5.0, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(toc["q"], toc["toc"], color=TREATED)
    if {"lower", "upper"} <= set(toc.columns):
        ax.fill_between(toc["q"], toc["lower"], toc["upper"], color=TREATED, alpha=0.2, lw=0)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("share of units treated (by priority)")
    ax.set_ylabel("TOC")
    ax.set_title(title, fontsize=10)
    _style(ax)
    return fig


def gates_plot(gates) -> Figure:
    """Group average treatment effects by priority group with intervals.

    ``gates``: a DataFrame with columns ``group``, ``estimate``, ``ci_low``, ``ci_high``.
    """
    fig = Figure(figsize=(4.8, 3.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(gates))
    ax.bar(x, gates["estimate"], color=CONTROL, alpha=0.8)
    ax.errorbar(x, gates["estimate"], yerr=[gates["estimate"] - gates["ci_low"], gates["ci_high"] - gates["estimate"]],
                fmt="none", ecolor="#333333", capsize=3)
    ax.set_xticks(x, [str(g) for g in gates["group"]])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("group (by predicted effect)")
    ax.set_ylabel("GATE")
    _style(ax)
    return fig


def calibration_plot(pred_cal, y_cal, corrected: dict | None = None) -> Figure:
    """Predictions against labels on the calibration set, with the debiasers' corrections.

    ``corrected``: optional mapping name -> corrected predictions for the same units.
    """
    fig = Figure(figsize=(4.6, 4.2), layout="constrained")
    ax = fig.subplots()
    y_cal = np.asarray(y_cal)
    ax.scatter(y_cal, pred_cal, s=6, alpha=0.5, color="#555555", label="prediction")
    for (name, vals), col in zip((corrected or {}).items(), (TREATED, CONTROL, "#2ca25f")):
        ax.scatter(y_cal, vals, s=6, alpha=0.5, color=col, label=name)
    lo, hi = float(np.min(y_cal)), float(np.max(y_cal))
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--", label="y = x")
    ax.set_xlabel("label (calibration set)")
    ax.set_ylabel("prediction")
    ax.legend(fontsize=7, frameon=False)
    _style(ax)
    return fig


def salience_gallery(chips, maps, titles, *, rgb_bands=(0, 1, 2)) -> Figure:
    """Chips (top row) and their salience maps (bottom row).

    ``chips``: (k, C, H, W) arrays; ``maps``: (k, H, W); ``titles``: k strings.
    """
    chips, maps = np.asarray(chips, float), np.asarray(maps, float)
    k = len(chips)
    fig = Figure(figsize=(1.7 * max(k, 1), 3.6), layout="constrained")
    axes = fig.subplots(2, max(k, 1), squeeze=False)
    for j in range(k):
        c = chips[j][list(rgb_bands)] if chips.shape[1] >= 3 else np.repeat(chips[j][:1], 3, 0)
        lo, hi = np.percentile(c, 2), np.percentile(c, 98)
        axes[0, j].imshow(np.clip((c.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-9), 0, 1))
        axes[1, j].imshow(maps[j], cmap="magma")
        axes[0, j].set_title(titles[j], fontsize=7)
        for ax in axes[:, j]:
            ax.set_axis_off()
    return fig


def chip_gallery(images, labels, *, titles: Sequence[str] | None = None, caption_bands: str = "") -> Figure:
    """Example chips by arm: one row per arm (treated on top), each chip as given.

    Parameters
    ----------
    images : array (k, H, W, 3)
        True-colour chips, uint8 or floats in [0, 1] (see
        :class:`eocausal.report.imagery.ChipGallery`, which stretches them).
    labels : sequence of str
        Each chip's arm: "treated" or "control" (other labels get rows of their own, after these).
    titles : sequence of str, optional
        A title over each chip (e.g. the unit id).
    caption_bands : str
        Shown under the figure (e.g. which bands are red, green and blue).
    """
    images, labels = np.asarray(images), [str(v) for v in labels]
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
        raise InputError(f"images: expected (k, H, W, 3) chips with one label each, got shape {images.shape} "
                         f"and {len(labels)} labels")
    arms = [a for a in ("treated", "control") if a in labels] + \
        [a for a in dict.fromkeys(labels) if a not in ("treated", "control")]
    per = max((labels.count(a) for a in arms), default=1)
    fig = Figure(figsize=(1.35 * per + 0.5, 1.45 * max(len(arms), 1) + (0.2 if caption_bands else 0)),
                 layout="constrained")
    axes = fig.subplots(max(len(arms), 1), per, squeeze=False)
    for r, arm in enumerate(arms):
        idx = [i for i, lab in enumerate(labels) if lab == arm]
        for c in range(per):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c >= len(idx):
                continue
            ax.imshow(images[idx[c]], interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[idx[c]]), fontsize=7)
        axes[r, 0].set_ylabel(arm, fontsize=9, color=TREATED if arm == "treated" else CONTROL)
    if caption_bands:
        fig.supxlabel(caption_bands, fontsize=7, color="#555555")
    return fig
