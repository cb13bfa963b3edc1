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
    fig = Figure(figsize=(3.6 * k, 3.0), layout="constrained")
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


def _style(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=8)


def love_plot(balance, *, threshold: float = 0.1, max_rows: int = 30) -> Figure:
    """Absolute standardised mean differences before and after weighting (cobalt's love plot).

    ``balance``: a DataFrame indexed by covariate name with columns ``smd_before`` and
    ``smd_after`` (as :func:`eocausal.diagnostics.balance.balance_table` returns).
    """
    b = balance.head(max_rows)
    fig = Figure(figsize=(5.5, 0.28 * len(b) + 1.2), layout="constrained")
    ax = fig.subplots()
    ypos = np.arange(len(b))[::-1]
    ax.scatter(np.abs(b["smd_before"]), ypos, marker="o", facecolors="none", edgecolors=CONTROL, label="before")
    ax.scatter(np.abs(b["smd_after"]), ypos, marker="o", color=TREATED, label="after weighting")
    ax.axvline(threshold, color="grey", ls="--", lw=0.8)
    ax.set_yticks(ypos, [str(i) for i in b.index])
    ax.set_xlabel("|standardised mean difference|")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    _style(ax)
    return fig


def weight_plot(fits: dict[str, PropensityFit], *, estimand: str = "ATE", bins: int = 40) -> Figure:
    """Distribution of the IPW weights by arm, one panel per adjustment set (log scale)."""
    k = max(len(fits), 1)
    fig = Figure(figsize=(3.6 * k, 2.8), layout="constrained")
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
    fig = Figure(figsize=(6.0, 0.3 * len(t) + 1.2), layout="constrained")
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
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    cat = categorical if categorical is not None else gdf[column].nunique() <= 2
    gdf.plot(ax=ax, column=column, categorical=cat, legend=True, markersize=6,
             cmap="coolwarm" if not cat else None, legend_kwds={"fontsize": 7} if cat else {"shrink": 0.7})
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
