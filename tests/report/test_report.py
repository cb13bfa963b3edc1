"""The report a policy reader acts on: the headline (and the rule that picks its row), the imagery
gallery, the compact diagnostics, the PDF, and an output folder that renders them all again.

The end-to-end fixture runs the embedded demo study (the same methods, adjustments and report) at a
small size, with ``[report] pdf = true``.
"""

from __future__ import annotations

import csv
import html as htmllib
import io
import math
import re

import numpy as np
import pandas as pd
import pytest

from eocausal import cli
from eocausal._types import EffectRow, PropensityFit
from eocausal.errors import InputError, StudyFileError
from eocausal.report.document import build_document
from eocausal.report.headline import OVERLAP_BOUND, OVERLAP_MAX_SHARE, headline, preferred_row
from eocausal.report.imagery import ChipGallery, true_colour, true_colour_bands
from eocausal.report.outputs import read_outputs, rerender_outputs
from eocausal.report.pdf import render_pdf
from eocausal.report.sections import UnitsView, data_section
from eocausal.results import EffectTable
from eocausal.study.runner import demo_study_path, run_study
from eocausal.study.schema import validate

pypdf = pytest.importorskip("pypdf")
pytest.importorskip("typst")


def _pdf_text(data: bytes) -> tuple[int, str]:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return len(reader.pages), "\n".join(p.extract_text() for p in reader.pages)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _flat(blocks) -> list:
    """The blocks of a section, with those of its rows in order."""
    return [x for b in blocks for x in (b.blocks if b.kind == "row" else (b,))]


# ============================================================================= the demo, small
@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    text = demo_study_path().read_text(encoding="utf-8")
    for old, new in (("n_images = 500", "n_images = 120"), ("px = 32", "px = 16"), ("n_features = 256", "n_features = 32"),
                     ("folds = 5", "folds = 3"), ('formats = ["html", "md", "tex"]', 'formats = ["html", "md", "tex"]\npdf = true')):
        assert old in text, old
        text = text.replace(old, new)
    base = tmp_path_factory.mktemp("demo")
    (base / "demo.toml").write_text(text, encoding="utf-8")
    return run_study(base / "demo.toml", base / "out").out


@pytest.fixture(scope="module")
def effects(demo_out) -> list[dict]:
    with open(demo_out / "effects.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _headline_html(page: str) -> str:
    m = re.search(r'<section class="headline" id="headline">(.*?)</section>', page, re.DOTALL)
    assert m, "no headline block"
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", m.group(1)))


def test_headline_names_the_preferred_row_with_its_numbers_from_effects_csv(demo_out, effects):
    row = next(r for r in effects if r["method"] == "ipw-hajek" and r["adjustment"] == "tabular+image")
    tabular = next(r for r in effects if r["method"] == "ipw-hajek" and r["adjustment"] == "tabular")
    page = (demo_out / "report.html").read_text(encoding="utf-8")
    top = _squash(_headline_html(page))
    est, lo, hi = (f"{float(row[c]):.3f}" for c in ("estimate", "ci_low", "ci_high"))
    assert f"Preferred estimate (ATE, IPW (Hajek), tabular+image): {est} 95% CI [{lo}, {hi}]" in top, top
    assert f"from {float(tabular['estimate']):.3f} (IPW (Hajek), tabular) to {est}" in top
    for name in ("Overlap:", "Balance:", "Clusters:"):
        assert top.count(name) == 1, name
    # the headline comes first: before the design block and every section
    assert page.index('class="headline"') < page.index("<h2>Design</h2>") < page.index("<h2>Imagery</h2>")


def test_headline_rule_prefers_aipw_then_hajek_and_the_most_adjusted():
    def row(method, adjustment, estimate=1.0, trial="all"):
        return EffectRow(trial=trial, estimand="ATE", method=method, adjustment=adjustment, estimate=estimate,
                         std_error=0.1, ci_low=estimate - 0.2, ci_high=estimate + 0.2, p_value=0.01, n=100,
                         n_treated=40)

    rows = [row("dim", "none"), row("ipw-hajek", "tabular+image"), row("aipw", "tabular"), row("aipw", "image"),
            row("ipw-ht", "tabular+image")]
    t = EffectTable(rows=tuple(rows))
    assert preferred_row(t) is rows[3]  # AIPW before Hajek; image before tabular
    assert preferred_row(EffectTable(rows=tuple(rows[:2] + rows[4:]))) is rows[1]
    assert preferred_row(EffectTable(rows=(rows[0], rows[4]))) is rows[4]  # neither: Horvitz-Thompson
    assert preferred_row(t, "ipw-hajek") is rows[1]
    assert preferred_row(t, "aipw/tabular") is rows[2]
    assert preferred_row(t, "auto") is rows[3]
    # a row without an estimate is skipped; trial "all" comes before other trials
    nan_row = row("aipw", "tabular+image", estimate=math.nan)
    other = row("aipw", "tabular+image", trial="north")
    assert preferred_row(EffectTable(rows=(other, nan_row, *rows))) is rows[3]
    with pytest.raises(InputError, match=r"preferred='aipw/tabular\+image': the table has no estimable row.*"
                                         r"it has dim/none, ipw-hajek/tabular\+image"):
        preferred_row(t, "aipw/tabular+image")
    with pytest.raises(InputError, match=r"method 'lasso' is not one of"):
        preferred_row(t, "lasso")
    assert preferred_row(EffectTable(rows=(nan_row,))) is None


def _fit(e_raw, w, adjustment="tabular+image"):
    e_raw, w = np.asarray(e_raw, float), np.asarray(w, float)
    return PropensityFit(adjustment=adjustment, e_raw=e_raw, e=e_raw, w=w, clip=1e-3, n_clipped=0, folds=3,
                         model="ridge-logit")


def test_checks_warn_when_their_line_is_crossed():
    """Overlap (the share of propensities within OVERLAP_BOUND of 0 or 1), balance (|SMD| after weighting) and
    clusters (fewer than analysis.FEW_CLUSTERS) each say ok or warn, from the table as estimated."""
    from eocausal.analysis import FEW_CLUSTERS
    from eocausal.diagnostics import check_overlap
    import inspect

    defaults = inspect.signature(check_overlap).parameters
    assert (OVERLAP_BOUND, OVERLAP_MAX_SHARE) == (defaults["bound"].default, defaults["max_share"].default)
    n = 100
    w = np.r_[np.ones(40), np.zeros(60)]
    bal = pd.DataFrame({"smd_before": [0.5, 0.3], "smd_after": [0.02, -0.25]}, index=pd.Index(["x1", "PC1"]))
    bal.attrs["threshold"] = 0.1

    def table(e, n_clusters, balance):
        r = EffectRow(trial="all", estimand="ATE", method="ipw-hajek", adjustment="tabular+image", estimate=1.0,
                      std_error=0.1, ci_low=0.8, ci_high=1.2, p_value=0.01, n=n, n_treated=40, n_clusters=n_clusters,
                      se_type="IF, clustered by v", ess_treated=30.0, ess_control=50.0)
        return EffectTable(rows=(r,), design={"treatment": "W", "outcome": "Y", "outcome_sd": 2.0},
                           propensities={"tabular+image": _fit(e, w)}, balance={"tabular+image": balance})

    good = headline(table(np.linspace(0.2, 0.8, n), 200, bal.assign(smd_after=[0.02, 0.05])))
    assert [c.ok for c in good.checks] == [True, True, True]
    assert "0.50 standard deviations of Y" in good.meaning and "1.000" in good.meaning
    e = np.linspace(0.2, 0.8, n)
    e[:6] = 0.995  # 6% of units beyond 0.99: more than OVERLAP_MAX_SHARE
    bad = headline(table(e, FEW_CLUSTERS - 1, bal))
    overlap, balance, clusters = bad.checks
    assert not overlap.ok and "6.0% of units" in overlap.text
    assert not balance.ok and "1 of 2 rows has |SMD| > 0.1" in balance.text and "PC1 0.25" in balance.text
    assert not clusters.ok and f"only {FEW_CLUSTERS - 1} clusters" in clusters.text
    e[:6] = 0.5
    e[:5] = 0.995  # exactly 5%: not more than the tolerated share
    assert headline(table(e, 200, bal)).checks[0].ok


def test_gallery_holds_chips_of_both_arms(demo_out):
    _, inputs = read_outputs(demo_out)
    g = inputs.gallery
    assert g is not None and g.images.dtype == np.uint8 and g.images.shape[-1] == 3
    assert sorted(set(g.labels)) == ["control", "treated"]
    assert list(g.labels).count("treated") == list(g.labels).count("control") == 4
    assert len(set(g.ids)) == 8 and "true colour (red, green, blue)" in g.how
    page = (demo_out / "report.html").read_text(encoding="utf-8")
    imagery = page[page.index("<h2>Imagery</h2>"):page.index("<h2>Estimates</h2>")]
    assert imagery.count("<img ") == 1 and 'alt="Example chips of treated (top) and control (bottom)' in imagery


def test_gallery_chips_are_the_units_chips_in_true_colour(array_units):
    import eocausal

    units, _ = array_units(n_images=12, per=2, seed=4)
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 3000, (12, 8, 8, 4)).astype(np.float32)
    source = eocausal.ArraySource(images, keys=[f"img{i:03d}" for i in range(12)], bands=["nir", "Blue", "green", "RED"])
    g = ChipGallery.from_source(units, source, per_arm=3, seed=1)
    assert list(g.labels) == ["treated"] * 3 + ["control"] * 3
    frame = units.frame
    for uid, arm in zip(g.ids, g.labels):
        assert frame.loc[uid, units.treatment] == (1 if arm == "treated" else 0)
    chips = source.chips(frame.loc[list(g.ids), "key"])
    assert true_colour_bands(source.bands) == ((3, 2, 1), "true colour (RED, green, Blue)")
    np.testing.assert_array_equal(g.images, true_colour(chips, (3, 2, 1)))
    # one stretch per band for all chips: each band's percentiles 2 and 98 over the chips map to 0 and 255
    for channel, band in enumerate((3, 2, 1)):
        values = chips[:, band]
        lo, hi = np.percentile(values, [2, 98])
        shown = g.images[..., channel]
        assert np.all(shown[values <= lo] == 0) and np.all(shown[values >= hi] == 255)
        mid = (values > lo) & (values < hi)
        assert np.abs(shown[mid] - (values[mid] - lo) / (hi - lo) * 255).max() <= 0.5 + 1e-6  # linear between
    assert ChipGallery.from_source(units, source, per_arm=3, seed=1, ids=[]) is None
    assert true_colour_bands(["b1", "b2", "b3", "b4"])[0] == (0, 1, 2)
    assert true_colour_bands(["B08", "B04", "B03", "B02"])[0] == (1, 2, 3)
    assert true_colour_bands(["pan"]) == ((0,), "band pan in grey")


def test_diagnostics_are_one_love_plot_one_balance_table_and_means_by_arm(demo_out):
    table, inputs = read_outputs(demo_out)
    doc = build_document(table, units=inputs.units, gallery=inputs.gallery)
    sec = next(s for s in doc.sections if s.title == "Overlap and balance")
    figs = [b for b in _flat(sec.blocks) if b.kind == "figure"]
    loves = [f for f in figs if f.caption.startswith("Balance")]
    assert len(loves) == 1 and len(figs) == 3  # overlap, weights, one love plot
    (ax,) = loves[0].figure.get_axes()
    sets = list(table.balance)
    assert sets == ["tabular", "image", "tabular+image"]
    assert len(ax.collections) == 1 + len(sets)  # before once, after per set
    for coll, name in zip(ax.collections[1:], sets):
        assert np.allclose(coll.get_offsets()[:, 0], table.balance[name]["smd_after"].abs())
    tables = [b for b in _flat(sec.blocks) if b.kind == "table"]
    assert len(tables) == 2
    means, bal = tables
    assert bal.groups == (("Before weighting", 2), *((f"After: {s}", 2) for s in sets))
    assert bal.frame.shape == (len(table.balance["tabular"]), 8)
    b = table.balance["tabular+image"]
    covs = b[b["kind"] != "embedding PC"]
    assert list(means.frame.index) == list(covs.index) and means.groups[1] == ("Weighted: tabular+image", 2)
    np.testing.assert_array_equal(means.frame.to_numpy(), np.vectorize(lambda v: f"{v:.3f}")(
        covs[["mean_treated", "mean_control", "mean_treated_weighted", "mean_control_weighted"]].to_numpy()))


def test_labels_are_the_estimates_tables_everywhere(demo_out):
    table, _ = read_outputs(demo_out)
    doc = build_document(table)
    est = next(s for s in doc.sections if s.title == "Estimates")
    methods = set(est.blocks[0].frame["Method"])
    assert "IPW (Hajek)" in methods and "ipw-hajek" not in methods
    forest = next(b for b in est.blocks if b.kind == "figure").figure.get_axes()[0]
    assert "IPW (Hajek), tabular+image" in [t.get_text() for t in forest.get_yticklabels()]
    sens = next(s for s in doc.sections if s.title == "Sensitivity").blocks[0].frame
    assert set(sens["Method"]) == methods


def test_data_facts_do_not_repeat_the_design():
    view = UnitsView(facts=(("n", 3), ("n_treated", 2), ("covariates", ["x1"]), ("crs", "EPSG:4326"),
                            ("n_clusters", 7)),
                     treatment="W", labels=np.array(["control", "treated", "treated"]),
                     geometry=np.array([__import__("shapely").Point(0, i) for i in range(3)], dtype=object),
                     crs="EPSG:4326")
    sec = data_section(view, {"n": 3, "n_treated": 2, "confounders": ["x1"], "n_clusters": 3})
    facts = next(b for b in _flat(sec.blocks) if b.kind == "table").frame
    assert list(facts.index) == ["crs", "n_clusters"]  # n_clusters differs from the design's: kept


def test_rerendered_report_keeps_headline_gallery_and_diagnostics(demo_out, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(demo_out, folder)
    first = {n: (folder / n).read_bytes() for n in ("report.html", "report.pdf")}
    for n in first:
        (folder / n).unlink()
    written = {p.name for p in rerender_outputs(folder)}
    assert {"report.html", "report.pdf"} <= written
    for n, data in first.items():
        assert (folder / n).read_bytes() == data, n
    page = first["report.html"].decode()
    for part in ('class="headline"', "<h2>Imagery</h2>", "<h2>Overlap and balance</h2>", "Weighted: tabular+image"):
        assert page.count(part) == 1, part


def test_pdf_has_the_headline_text_the_figures_and_few_pages(demo_out, effects):
    data = (demo_out / "report.pdf").read_bytes()
    assert data[:5] == b"%PDF-"
    pages, text = _pdf_text(data)
    assert pages <= 8, pages
    row = next(r for r in effects if r["method"] == "ipw-hajek" and r["adjustment"] == "tabular+image")
    first = _squash(pypdf.PdfReader(io.BytesIO(data)).pages[0].extract_text())
    assert (f"Preferred estimate (ATE, IPW (Hajek), tabular+image): {float(row['estimate']):.3f} 95% CI "
            f"[{float(row['ci_low']):.3f}, {float(row['ci_high']):.3f}]") in first, first[:600]
    table, inputs = read_outputs(demo_out)
    doc = build_document(table, units=inputs.units, gallery=inputs.gallery, true_effect=inputs.true_effect)
    captions = [b.caption for s in doc.sections for b in _flat(s.blocks) if b.kind == "figure"]
    assert len(captions) == 6  # gallery, forest, overlap, weights, love plot, map
    flat = _squash(text)
    for i, cap in enumerate(captions, 1):
        assert f"Figure {i}: {_squash(cap)[:40]}" in flat, cap
    # figures are vector: the only bitmaps are the example chips, one per chip
    images = [im for p in pypdf.PdfReader(io.BytesIO(data)).pages for im in p.images]
    assert len(images) == len(inputs.gallery.ids) == 8


def test_cli_report_pdf_writes_the_pdf(demo_out, tmp_path, capsys):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(demo_out, folder)
    (folder / "report.pdf").unlink()
    assert cli.main(["report", str(folder)]) == 0  # the run asked for a PDF: it is written again
    assert (folder / "report.pdf").is_file()
    (folder / "report.pdf").unlink()
    side = (folder / "results.json").read_text()
    (folder / "results.json").write_text(side.replace('"pdf": true', '"pdf": false'))
    assert cli.main(["report", str(folder)]) == 0 and not (folder / "report.pdf").exists()
    assert cli.main(["report", str(folder), "--pdf"]) == 0
    assert (folder / "report.pdf").read_bytes()[:5] == b"%PDF-" and "report.pdf" in capsys.readouterr().out


# ============================================================================= escaping
HOSTILE = '#set page(height: 1cm) #panic("boom") $x^2$ *bold* _it_ <lab> @ref `raw` \\ ] [ // /* = head'


def test_pdf_shows_strings_from_data_as_text_never_as_markup():
    rng = np.random.default_rng(0)
    n = 60
    w = (np.arange(n) % 2).astype(float)
    e = rng.uniform(0.2, 0.8, n)
    bal = pd.DataFrame({"kind": ["covariate"], "mean_treated": [1.0], "mean_control": [0.5],
                        "mean_treated_weighted": [0.8], "mean_control_weighted": [0.7], "smd_before": [0.3],
                        "smd_after": [0.05]}, index=pd.Index([f"x {HOSTILE}"], name="variable"))
    rows = tuple(EffectRow(trial="all", estimand="ATE", method=m, adjustment=a, estimate=1.5, std_error=0.2,
                           ci_low=1.1, ci_high=1.9, p_value=0.001, n=n, n_treated=30, note=f"note {HOSTILE}")
                 for m, a in (("dim", "none"), ("ipw-hajek", "tabular")))
    table = EffectTable(rows=rows, notes=(f"[1] {HOSTILE}",), design={"study": HOSTILE, "treatment": f"W{HOSTILE}",
                                                                      "outcome": "Y"},
                        propensities={"tabular": _fit(e, w, "tabular")}, balance={"tabular": bal})
    data = render_pdf(table, title=f"Title {HOSTILE}", description=HOSTILE,
                      reproducibility={f"key {HOSTILE}": HOSTILE})
    pages, text = _pdf_text(data)
    flat = _squash(text)
    # the page-height rule and panic did not run: the document has normal pages and every string is there
    assert pages <= 3
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert all(float(p.mediabox.height) > 800 for p in reader.pages)  # A4: 842 pt
    for marker in ('#set page(height: 1cm) #panic("boom") $x^2$ *bold* _it_ <lab> @ref `raw`', "] [ // /* = head"):
        assert flat.count(marker) >= 7, (marker, flat.count(marker))  # title, description, design, notes, ...


# ============================================================================= the study keys
def _doc(**report):
    return {"study": {"name": "s"}, "units": {"format": "demo"},
            "estimate": {"methods": ["dim", "ipw-hajek"], "adjustments": ["tabular", "tabular+image"]},
            "report": report}


@pytest.mark.parametrize("value", ["auto", "dim", "ipw-hajek", "ipw-hajek/tabular", "dim/none"])
def test_report_preferred_takes_a_row_the_study_estimates(value):
    study = validate(_doc(preferred=value, pdf=True))
    assert study["report"]["preferred"] == value and study["report"]["pdf"] is True
    assert validate(_doc())["report"] == {"formats": ["html", "md", "tex"], "title": None, "preferred": "auto",
                                          "pdf": False}


@pytest.mark.parametrize("value, match", [
    ("aipw", r"method 'aipw' is not among \[estimate\] methods \['dim', 'ipw-hajek'\]"),
    ("ipw-hajek/image", r"adjustment 'image' is not among \[estimate\] adjustments"),
    ("ipw-hajek/none", r"only the difference in means \(dim\) has the adjustment 'none'"),
    ("hajek", r"\[report\] preferred='hajek': method 'hajek' is not one of"),
    ("ipw-hajek/sat", r"adjustment 'sat' is not one of"),
])
def test_report_preferred_is_refused_before_any_work(value, match):
    with pytest.raises(StudyFileError, match=match):
        validate(_doc(preferred=value))
    with pytest.raises(StudyFileError, match=r"\[report\] pdf = 'yes' should be true/false"):
        validate(_doc(pdf="yes"))


def test_the_study_preferred_row_is_the_headline(demo_out, tmp_path):
    """write_outputs keeps the rule, so `eocausal report DIR` renders the same headline; a rule naming a row
    the table lacks is refused before anything is written."""
    from eocausal.report.outputs import write_outputs

    table, inputs = read_outputs(demo_out)
    (tmp_path / "manifest.json").write_text("{}")
    write_outputs(tmp_path, table, formats=["html"], preferred="dim", gallery=inputs.gallery)
    _, back = read_outputs(tmp_path)
    assert back.preferred == "dim"
    top = _squash(_headline_html((tmp_path / "report.html").read_text(encoding="utf-8")))
    assert "Preferred estimate (ATE, Difference in means, no adjustment)" in top
    assert "chosen by [report] preferred = 'dim'" in top
    hajek = next(r for r in table.rows if r.method == "ipw-hajek" and r.adjustment == "tabular+image")
    assert (f"This estimate does not adjust for the imagery; adjusting for it (IPW (Hajek), tabular+image) gives "
            f"{hajek.estimate:.3f}.") in top  # dim has no image-adjusted twin: the default rule's row
    with pytest.raises(InputError, match="no estimable row"):
        write_outputs(tmp_path / "x", table, preferred="ipw-hajek/none")
    assert not (tmp_path / "x").exists()
