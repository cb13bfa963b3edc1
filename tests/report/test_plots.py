"""Each figure of eocausal.report.plots draws its data on small inputs, and inlines deterministically."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from eocausal._types import PropensityFit
from eocausal.errors import InputError
from eocausal.report import plots

N = 80


@pytest.fixture(scope="module")
def fits() -> dict[str, PropensityFit]:
    rng = np.random.default_rng(0)
    out = {}
    for name, shift in (("tabular", 0.5), ("tabular+image", 1.5)):
        x = rng.normal(size=N)
        e_raw = 1 / (1 + np.exp(-shift * x))
        w = (rng.uniform(size=N) < e_raw).astype(float)
        e = np.clip(e_raw, 0.01, 0.99)
        out[name] = PropensityFit(adjustment=name, e_raw=e_raw, e=e, w=w, clip=0.01,
                                  n_clipped=int((e != e_raw).sum()), folds=3, model="ridge-logit")
    return out


@pytest.fixture(scope="module")
def balance() -> pd.DataFrame:
    names = ["x1", "x2", "PC1", "PC2", "lon", "lat"]
    return pd.DataFrame({"smd_before": [0.4, -0.3, 0.25, 0.05, -0.12, 0.2],
                         "smd_after": [0.02, -0.05, 0.03, 0.01, 0.04, -0.08]},
                        index=pd.Index(names, name="covariate"))


@pytest.fixture(scope="module")
def tidy() -> pd.DataFrame:
    return pd.DataFrame({"trial": ["all"] * 3, "method": ["dim", "ipw-hajek", "aipw"],
                         "adjustment": ["none", "tabular+image", "tabular+image"],
                         "estimate": [3.0, 1.1, 0.95], "ci_low": [2.5, 0.6, 0.5], "ci_high": [3.5, 1.6, 1.4]})


def _data_uri_png(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    png = base64.b64decode(uri[len(prefix):], validate=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return png


def _check(fig, n_axes: int | None = None):
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert axes, "the figure has no axes"
    if n_axes is not None:
        assert len([a for a in axes if a.get_label() != "<colorbar>"]) >= n_axes
    return axes


def test_overlap_plot_draws_both_arms_per_adjustment(fits):
    fig = plots.overlap_plot(fits, bins=10)
    axes = _check(fig, 2)
    for ax, (name, fit) in zip(axes, fits.items()):
        heights = np.array([p.get_height() for p in ax.patches])
        assert len(heights) == 20  # 10 bins per arm
        assert heights[heights > 0].sum() == (fit.w == 1).sum()
        assert -heights[heights < 0].sum() == (fit.w == 0).sum()
        assert name in ax.get_title()


def test_love_plot_shows_before_and_after(balance):
    fig = plots.love_plot(balance, threshold=0.1)
    (ax,) = _check(fig, 1)
    before, after = ax.collections[:2]
    assert np.allclose(before.get_offsets()[:, 0], np.abs(balance["smd_before"]))
    assert np.allclose(after.get_offsets()[:, 0], np.abs(balance["smd_after"]))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(balance.index)
    assert list(ax.get_yticks()) == list(range(len(balance)))[::-1]  # first row on top
    assert any(np.allclose(line.get_xdata(), 0.1) for line in ax.get_lines())


@pytest.mark.parametrize("estimand", ["ATE", "ATT", "ATO"])
def test_weight_plot_histograms(fits, estimand):
    fig = plots.weight_plot(fits, estimand=estimand, bins=12)
    axes = _check(fig, 2)
    for ax in axes:
        counts = sum(p.get_height() for p in ax.patches)
        assert counts == N
        assert ax.get_xscale() == "log"
        assert estimand in ax.get_title()


def test_forest_plot_one_line_per_estimate(tidy):
    fig = plots.forest_plot(tidy, truth=1.0)
    (ax,) = _check(fig, 1)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["Difference in means, no adjustment", "IPW (Hajek), tabular+image", "AIPW (DML), tabular+image"]
    assert list(ax.get_yticks()) == [2, 1, 0]  # first row on top
    points = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
    assert points and np.allclose(points[0].get_xdata(), tidy["estimate"])
    assert "true effect 1" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_forest_plot_skips_missing_estimates(tidy):
    t = pd.concat([tidy, tidy.iloc[[0]].assign(estimate=np.nan, ci_low=np.nan, ci_high=np.nan)])
    (ax,) = _check(plots.forest_plot(t), 1)
    assert len(ax.get_yticks()) == 3


def test_unit_map_draws_every_unit():
    gpd = pytest.importorskip("geopandas")
    rng = np.random.default_rng(1)
    gdf = gpd.GeoDataFrame({"W": np.where(rng.uniform(size=30) < 0.5, "treated", "control")},
                           geometry=gpd.points_from_xy(rng.uniform(32, 35, 30), rng.uniform(1, 4, 30)),
                           crs="EPSG:4326")
    fig = plots.unit_map(gdf, "W", title="units by treatment", categorical=True)
    ax = _check(fig, 1)[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 30
    assert ax.get_xlabel() == "longitude" and ax.get_title() == "units by treatment"
    gdf["e"] = rng.uniform(size=30)
    fig = plots.unit_map(gdf, "e")  # continuous: a colour bar
    assert len(fig.get_axes()) == 2


def test_toc_plot_with_band():
    q = np.linspace(0.1, 1, 10)
    toc = pd.DataFrame({"q": q, "toc": 1 - q, "lower": 0.8 - q, "upper": 1.2 - q})
    (ax,) = _check(plots.toc_plot(toc, title="TOC (AUTOC)"), 1)
    curve = ax.get_lines()[0]
    assert np.allclose(curve.get_xdata(), q) and np.allclose(curve.get_ydata(), 1 - q)
    assert ax.collections, "no confidence band"
    assert ax.get_title() == "TOC (AUTOC)"
    (ax,) = _check(plots.toc_plot(toc[["q", "toc"]]), 1)
    assert not ax.collections


def test_gates_plot_bars_and_intervals():
    gates = pd.DataFrame({"group": [1, 2, 3, 4, 5], "estimate": [0.1, 0.3, 0.5, 0.8, 1.2]})
    gates["ci_low"], gates["ci_high"] = gates.estimate - 0.2, gates.estimate + 0.2
    (ax,) = _check(plots.gates_plot(gates), 1)
    assert np.allclose([p.get_height() for p in ax.patches], gates.estimate)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4", "5"]


def test_calibration_plot_points_and_diagonal():
    rng = np.random.default_rng(2)
    y = rng.normal(size=50)
    p = 0.5 * y + rng.normal(0, 0.2, 50)
    (ax,) = _check(plots.calibration_plot(p, y, {"lcc": 2 * p, "tweedie": p + 0.1}), 1)
    assert len(ax.collections) == 3
    assert all(len(c.get_offsets()) == 50 for c in ax.collections)
    diag = ax.get_lines()[0]
    assert np.allclose(diag.get_xdata(), diag.get_ydata())
    assert {"prediction", "lcc", "tweedie", "y = x"} <= {t.get_text() for t in ax.get_legend().get_texts()}


@pytest.mark.parametrize("bands", [3, 1])
def test_salience_gallery_chips_over_maps(bands):
    rng = np.random.default_rng(3)
    chips = rng.uniform(0, 255, (3, bands, 12, 12))
    maps = rng.uniform(size=(3, 12, 12))
    fig = plots.salience_gallery(chips, maps, ["a", "b", "c"])
    axes = _check(fig, 6)
    assert all(len(ax.images) == 1 for ax in axes)
    assert [ax.get_title() for ax in axes[:3]] == ["a", "b", "c"]
    rgb = axes[0].images[0].get_array()
    assert rgb.shape == (12, 12, 3) and 0 <= rgb.min() and rgb.max() <= 1
    assert np.allclose(axes[3].images[0].get_array(), maps[0])


def test_figure_to_data_uri_is_a_deterministic_png(fits, balance):
    from PIL import Image

    uri = plots.figure_to_data_uri(plots.overlap_plot(fits), dpi=50)
    png = _data_uri_png(uri)
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (round(2 * 3.6 * 50), round(2.7 * 50))
        pixels = np.asarray(im.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # drawn, not blank
    # the same input gives the same bytes (no timestamps or software tags in the PNG)
    assert plots.figure_to_data_uri(plots.overlap_plot(fits), dpi=50) == uri
    assert plots.figure_to_data_uri(plots.love_plot(balance), dpi=50) == \
        plots.figure_to_data_uri(plots.love_plot(balance), dpi=50)
    assert b"tIME" not in png and b"Software" not in png


def _overlapping_tick_labels(fig) -> list[tuple[str, str]]:
    """Pairs of visible tick labels, on one axis of one panel, whose drawn boxes intersect."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    clashes = []
    for ax in fig.get_axes():
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t for t in axis.get_ticklabels(minor=False) + axis.get_ticklabels(minor=True)
                      if t.get_visible() and t.get_text()]
            shown = [(lab, box) for lab, box in
                     ((lab, lab.get_window_extent(renderer)) for lab in labels) if box.width > 0]
            for i, (a, ba) in enumerate(shown):
                for b, bb in shown[i + 1:]:
                    if ba.overlaps(bb) and (ba.x0, ba.y0) != (bb.x0, bb.y0):
                        clashes.append((a.get_text(), b.get_text()))
    return clashes


@pytest.mark.parametrize("spread", [0.05, 0.3, 1.0, 2.5, 6.0])
def test_weight_plot_tick_labels_do_not_overlap(spread):
    """Log-scale weights over a narrow range (under a decade: where matplotlib labels minor ticks) up to
    many decades; an ATE weight is 1/e, so the spread of logit(e) sets the range."""
    rng = np.random.default_rng(7)
    out = {}
    for name, scale in (("tabular", spread), ("image", spread * 1.5), ("tabular+image", spread * 2)):
        e = 1 / (1 + np.exp(-rng.normal(0, scale, 400)))
        e = np.clip(e, 1e-6, 1 - 1e-6)
        w = (rng.uniform(size=400) < e).astype(float)
        out[name] = PropensityFit(adjustment=name, e_raw=e, e=e, w=w, clip=1e-6, n_clipped=0, folds=3,
                                  model="ridge-logit")
    fig = plots.weight_plot(out)
    assert _overlapping_tick_labels(fig) == []
    for ax in fig.get_axes():
        assert len([t for t in ax.get_xticklabels() if t.get_text()]) >= 2  # still labelled


def test_other_figures_tick_labels_do_not_overlap(fits, balance, tidy):
    two = {"tabular": balance, "tabular+image": balance.assign(smd_after=balance["smd_after"] / 2)}
    for fig in (plots.overlap_plot(fits), plots.love_plot(two), plots.forest_plot(tidy)):
        assert _overlapping_tick_labels(fig) == []


def test_overlap_check_sees_overlapping_labels():
    """The check is not blind: labels forced onto one place collide."""
    fig = Figure(figsize=(2, 2))
    ax = fig.subplots()
    ax.set_xticks([0, 0.01, 0.02], ["a long label", "another long label", "third"])
    assert _overlapping_tick_labels(fig)


def test_love_plot_of_all_adjustment_sets_in_one_panel(balance):
    two = {"tabular": balance, "tabular+image": balance.assign(smd_after=balance["smd_after"] / 2)}
    fig = plots.love_plot(two)
    (ax,) = fig.get_axes()
    before, tab, both = ax.collections
    assert np.allclose(before.get_offsets()[:, 0], np.abs(balance["smd_before"]))
    assert np.allclose(tab.get_offsets()[:, 0], np.abs(balance["smd_after"]))
    assert np.allclose(both.get_offsets()[:, 0], np.abs(balance["smd_after"]) / 2)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["before weighting", "after: tabular",
                                                                 "after: tabular+image"]


def test_chip_gallery_rows_by_arm():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, (5, 6, 6, 3), dtype=np.uint8)
    fig = plots.chip_gallery(images, ["control", "treated", "treated", "control", "treated"],
                             titles=["c1", "t1", "t2", "c2", "t3"])
    axes = fig.get_axes()
    assert len(axes) == 6  # 2 arms x 3 columns
    assert axes[0].get_ylabel() == "treated" and axes[3].get_ylabel() == "control"
    assert [a.get_title() for a in axes if a.images] == ["t1", "t2", "t3", "c1", "c2"]
    np.testing.assert_array_equal(axes[3].images[0].get_array(), images[0])
    with pytest.raises(InputError, match="images: expected"):
        plots.chip_gallery(images[..., 0], ["treated"] * 5)


def test_figure_to_svg_is_vector_and_deterministic(balance):
    svg = plots.figure_to_svg(plots.love_plot(balance))
    assert svg.startswith("<?xml") and "<path" in svg and "<image" not in svg
    assert plots.figure_to_svg(plots.love_plot(balance)) == svg
