"""Figures for reports and notebooks. Each function returns a matplotlib Figure.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI
backend), so they work in scripts, servers and notebooks alike.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.figure import Figure

from eocausal._types import PropensityFit

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
        ax.legend(fontsize=7, frameon=False, loc="upper center")
    axes[0].set_ylabel("units (control below)")
    return fig


def figure_to_data_uri(fig: Figure, dpi: int = 110) -> str:
    """PNG data URI of a figure, for inlining in a self-contained HTML file."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
