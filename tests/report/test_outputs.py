"""An output folder written by write_outputs reads back without loss, and a broken one says which file
and what to do."""

from __future__ import annotations

import json
import math
import zipfile

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from eocausal import cli
from eocausal._types import TIDY_COLUMNS, EffectRow, PropensityFit
from eocausal.errors import DataFileError, InputError, MissingFileError, OutputError
from eocausal.report.outputs import read_outputs, rerender_outputs, write_outputs
from eocausal.report.sections import UnitsView
from eocausal.results import EffectTable

N = 40


def _row(**kw) -> EffectRow:
    base = dict(trial="all", estimand="ATE", method="ipw-hajek", adjustment="image", estimate=0.1 + 0.2,
                std_error=1e-300, ci_low=-math.inf, ci_high=math.inf, p_value=math.nan, n=N, n_treated=17)
    return EffectRow(**{**base, **kw})


@pytest.fixture
def table() -> EffectTable:
    rng = np.random.default_rng(3)
    w = (rng.uniform(size=N) < 0.4).astype(float)
    e_raw = rng.uniform(0.0005, 0.9995, size=N)
    fit = PropensityFit(adjustment="image", e_raw=e_raw, e=np.clip(e_raw, 1e-3, 1 - 1e-3), w=w, clip=1e-3,
                        n_clipped=2, folds=4, model="ridge-logit", penalties=(0.1, 1.0), y=rng.normal(size=N),
                        psi={"ipw-hajek": rng.normal(size=N), "aipw": rng.normal(size=N)})
    bal = pd.DataFrame({"kind": ["covariate", "embedding PC"], "smd_before": [0.4, np.nan],
                        "smd_after": [0.02, -0.0], "imbalanced": [False, True]},
                       index=pd.Index(["x1", "PC1"], name="variable"))
    bal.attrs.update(n_treated=17, ess_treated=12.25, threshold=0.1, weighted=True)
    rows = (_row(),
            _row(method="dim", adjustment="none", n_clusters=None, clip=None, se_type='IF, "quoted", a,b',
                 note="line one\nline two, ünïcode | pipe", estimate=-0.0, p_holm=0.05),
            _row(method="aipw", n_clusters=12, clip=1e-3, n_clipped=3, ess_treated=9.5, note=""))
    design = {"study": "t", "n": N, "n_clusters": None, "confounders": ["x1"], "outcome_sd": 1.5,
              "shape": (2, 3), "odd": {"$key": math.nan, 3: "int key"}, "flag": np.bool_(True),
              "count": np.int64(7)}
    return EffectTable(rows=rows, notes=("[SE] robust", "Clipped at 0.001."), design=design,
                       propensities={"image": fit}, balance={"image": bal})


@pytest.fixture
def units() -> UnitsView:
    pts = gpd.GeoDataFrame({"W": [0, 1, 1]}, geometry=gpd.points_from_xy([32.1, 32.5, 33.0], [2.0, 2.5, 3.25]),
                           crs="EPSG:4326")
    geoms = np.asarray(list(pts.geometry) [:2] + [shapely.box(33.0, 3.0, 33.5, 3.5)], dtype=object)
    return UnitsView(facts=(("n", 3), ("covariates", ["x1", "x2"]), ("crs", "EPSG:4326")), treatment="W",
                     labels=np.array(["control", "treated", "treated"]), geometry=geoms, crs=pts.crs.to_wkt())


def _write(folder, table, units=None, **kw):
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text("{}")
    return write_outputs(folder, table, title="T <i>", description="d", true_effect=1.0,
                         reproducibility={"seed": 3, "eocausal": "x"}, units=units, caption="cap", **kw)


def test_everything_reads_back(tmp_path, table, units):
    _write(tmp_path, table, units)
    back, inputs = read_outputs(tmp_path)
    for a, b in zip(table.rows, back.rows):
        for c in TIDY_COLUMNS:
            va, vb = getattr(a, c), getattr(b, c)
            assert type(va) is type(vb) and (va == vb or (math.isnan(va) and math.isnan(vb))), (c, va, vb)
    assert math.copysign(1, back.rows[1].estimate) == -1  # -0.0 stays -0.0
    assert back.notes == table.notes
    assert back.design == {**table.design, "odd": back.design["odd"]}
    assert type(back.design["shape"]) is tuple and type(back.design["confounders"]) is list
    assert math.isnan(back.design["odd"]["$key"]) and back.design["odd"][3] == "int key"
    fa, fb = table.propensities["image"], back.propensities["image"]
    assert fb.penalties == (0.1, 1.0) and fb.mu0 is None and fb.folds == 4 and fb.model == "ridge-logit"
    for f in ("e_raw", "e", "w", "y"):
        assert np.array_equal(getattr(fa, f), getattr(fb, f)) and getattr(fb, f).dtype == getattr(fa, f).dtype
    assert list(fb.psi) == ["ipw-hajek", "aipw"] and np.array_equal(fb.psi["aipw"], fa.psi["aipw"])
    pd.testing.assert_frame_equal(back.balance["image"], table.balance["image"], check_exact=True)
    assert back.balance["image"].attrs == table.balance["image"].attrs
    assert inputs.formats == ("html", "md", "tex") and inputs.title == "T <i>" and inputs.caption == "cap"
    assert inputs.reproducibility == (("seed", 3), ("eocausal", "x")) and inputs.true_effect == 1.0
    assert inputs.units.facts == units.facts and list(inputs.units.labels) == list(units.labels)
    assert all(a.equals_exact(b, 0) for a, b in zip(inputs.units.geometry, units.geometry))
    assert inputs.units.crs == units.crs


def test_rerender_gives_the_same_bytes(tmp_path, table, units):
    paths = _write(tmp_path, table, units)
    assert {p.relative_to(tmp_path).as_posix() for p in paths} == {
        "effects.csv", "results.json", "results.npz", "tables/effects.md", "tables/effects.tex", "report.html"}
    first = {p: p.read_bytes() for p in paths}
    for p in paths:
        if p.suffix in (".md", ".tex", ".html"):
            p.unlink()
    assert len(rerender_outputs(tmp_path)) == 3
    assert {p: p.read_bytes() for p in paths} == first
    html = first[tmp_path / "report.html"].decode()
    assert "<h2>Data</h2>" in html and "<h2>Overlap and balance</h2>" in html and "T &lt;i&gt;" in html


def test_same_results_give_the_same_bytes(tmp_path, table, units):
    _write(tmp_path / "a", table, units)
    _write(tmp_path / "b", table, units)
    for f in ("effects.csv", "results.json", "results.npz", "report.html"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_formats_choose_the_rendered_files(tmp_path, table):
    _write(tmp_path, table, formats=["md"])
    assert (tmp_path / "tables" / "effects.md").is_file()
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "tables" / "effects.tex").exists()
    assert [p.name for p in rerender_outputs(tmp_path)] == ["effects.md"]
    with pytest.raises(InputError, match=r"formats=\['pdf'\]"):
        _write(tmp_path / "x", table, formats=["pdf"])


def test_sidecar_is_plain_json_and_arrays_without_pickles(tmp_path, table, units):
    _write(tmp_path, table, units)
    side = json.loads((tmp_path / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert side["notes"] == list(table.notes) and side["rows"] == 3
    with np.load(tmp_path / "results.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    with zipfile.ZipFile(tmp_path / "results.npz") as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_values_that_cannot_be_saved_are_refused_by_name(tmp_path, table):
    bad = EffectTable(rows=table.rows, design={"model": object()})
    with pytest.raises(OutputError, match=r"design\['model'\]: a object cannot be saved"):
        _write(tmp_path, bad)
    assert not (tmp_path / "effects.csv").exists()  # nothing written before the refusal


@pytest.mark.parametrize("name", ["manifest.json", "effects.csv", "results.json", "results.npz"])
def test_missing_file_is_named(tmp_path, table, name, capsys):
    _write(tmp_path, table)
    (tmp_path / name).unlink()
    with pytest.raises(MissingFileError, match=f"{name}: not found"):
        read_outputs(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err and "eocausal run" in err


@pytest.mark.parametrize("name, text, match", [
    ("manifest.json", "{", "manifest.json: not readable JSON"),
    ("results.json", "[1, 2]", "results.json: not an eocausal results file"),
    ("results.json", '{"format": "eocausal results", "version": 2, "rows": 3}', "incomplete or inconsistent"),
    ("results.npz", "not a zip", "results.npz: cannot be read"),
    ("effects.csv", "", "effects.csv: empty"),
    ("effects.csv", "trial,n\nall,1,2\n", "line 2: 3 cells for 2 columns"),
    ("effects.csv", "trial,estimand,bogus\n", "not EffectRow fields"),
])
def test_corrupt_file_is_named(tmp_path, table, name, text, match):
    _write(tmp_path, table)
    (tmp_path / name).write_text(text)
    with pytest.raises(DataFileError, match=match) as info:
        read_outputs(tmp_path)
    assert "rerun `eocausal run" in str(info.value)


def test_bad_cell_and_mismatched_files_are_refused(tmp_path, table):
    _write(tmp_path, table)
    csv = tmp_path / "effects.csv"
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("n")] = "40.5"
    csv.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    with pytest.raises(DataFileError, match=r"effects.csv: tidy: column 'n', row 0: '40.5' is not a int"):
        read_outputs(tmp_path)
    csv.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(DataFileError, match=r"effects.csv: not the file results.json was written with \(1 rows, "
                                             r"results.json has 3\)"):
        read_outputs(tmp_path)
    cells[header.index("n")] = "41"  # a whole number, but not the number that was written
    csv.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    with pytest.raises(DataFileError, match="not the file results.json was written with"):
        read_outputs(tmp_path)
