"""replication/aid_africa: the AidData reader's errors, the panel's treatment and outcome, the
simulated study's consistency, and the --quick run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eocausal.errors import ColumnError, DataFileError, DataQualityWarning, InputError, MissingFileError

FOLDER = Path(__file__).resolve().parents[2] / "replication" / "aid_africa"


@pytest.fixture(scope="module")
def aid(load_script):
    """replication/aid_africa/aiddata.py as a module."""
    return load_script(FOLDER / "aiddata.py")


@pytest.fixture(scope="module")
def simulate(load_script):
    """replication/aid_africa/simulate.py as a module (it imports aiddata by name)."""
    return load_script(FOLDER / "simulate.py")

PROJECTS = pd.DataFrame({"project_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
                         "funder": ["China", "China", "World Bank", "china", "China", "WB"],
                         "sector": ["140", "14010", "210", "140", "210", "110|210"],
                         "start_year": ["2006", "2003", "2012", "2015", "2004", "2009"]})
LOCATIONS = pd.DataFrame({"project_id": ["p1", "p2", "p3", "p4", "p5", "p6", "p6"],
                          "precision": ["1", "2", "1", "1", "3", "2", "4"],
                          "latitude": ["1.0", "2.0", "2.1", "1.1", "1.2", "2.2", "9.0"],
                          "longitude": ["30.0", "31.0", "31.1", "30.1", "30.2", "31.2", "35.0"],
                          "adm2": ["A", "B", "B", "A", "A", "B", "C"]})


def _write(tmp_path, projects=PROJECTS, locations=LOCATIONS):
    p, q = tmp_path / "projects.csv", tmp_path / "locations.csv"
    projects.to_csv(p, index=False)
    locations.to_csv(q, index=False)
    return p, q


# ----------------------------------------------------------------------------- reader
def test_reader_normalises_codes_funders_and_drops_coarse_locations(tmp_path, aid):
    recs = aid.read_aiddata(*_write(tmp_path))
    assert list(recs.columns) == ["project_id", "funder", "sector", "start_year", "precision", "latitude",
                                  "longitude", "adm2"]
    got = {(r.project_id, r.funder, r.sector, r.adm2) for r in recs.itertuples()}
    assert got == {("p1", "China", 140, "A"), ("p2", "China", 140, "B"),  # 14010 -> 140
                   ("p3", "World Bank", 210, "B"), ("p4", "China", 140, "A"),
                   ("p6", "World Bank", 110, "B"), ("p6", "World Bank", 210, "B")}  # '|' split; precision 4 dropped
    assert recs.attrs["dropped_precision"] == 2 and recs.attrs["unlocated_projects"] == 1  # p5 only at precision 3
    wider = aid.read_aiddata(*_write(tmp_path), precision_max=3)
    assert "p5" in set(wider["project_id"])


def test_reader_accepts_aiddata_column_names_and_a_funder_per_release(tmp_path, aid):
    proj = PROJECTS.drop(columns="funder").rename(columns={"sector": "ad_sector_codes",
                                                           "start_year": "transactions_start_year"})
    loc = LOCATIONS.rename(columns={"precision": "precision_code"})
    recs = aid.read_aiddata(*_write(tmp_path, proj, loc), funder="World Bank")
    assert set(recs["funder"]) == {"World Bank"}
    with pytest.raises(ColumnError, match="funder='China'"):
        aid.read_aiddata(*_write(tmp_path, proj, loc))


@pytest.mark.parametrize("table, column, value, exc, match", [
    ("projects", "funder", "USAID", InputError, r"column 'funder' holds \['USAID'\].*allowed"),
    ("projects", "sector", "health", InputError, r"column 'sector'.*3-digit OECD CRS.*\['health'\]"),
    ("projects", "sector", "1401", InputError, r"column 'sector'"),
    ("projects", "start_year", "20x6", InputError, r"column 'start_year' must hold whole numbers"),
    ("projects", "start_year", "206", InputError, r"four-digit calendar years"),
    ("projects", "project_id", "p2", InputError, r"repeats ids \['p2'\]"),
    ("locations", "precision", "9", InputError, r"column 'precision'.*1 \(exact\) to 8"),
    ("locations", "latitude", "95", InputError, r"column 'latitude'.*\[-90, 90\]"),
    ("locations", "longitude", "east", InputError, r"column 'longitude'"),
    ("locations", "project_id", "p99", InputError, r"project ids \['p99'\].*not in the projects table"),
])
def test_reader_errors_name_the_column_and_the_fix(tmp_path, table, column, value, exc, match, aid):
    frames = {"projects": PROJECTS.copy(), "locations": LOCATIONS.copy()}
    frames[table].loc[0, column] = value
    with pytest.raises(exc, match=match):
        aid.read_aiddata(*_write(tmp_path, frames["projects"], frames["locations"]))


def test_reader_missing_columns_files_and_values(tmp_path, aid):
    with pytest.raises(ColumnError, match=r"no 'sector' column.*ad_sector_codes.*columns=\{'sector'"):
        aid.read_aiddata(*_write(tmp_path, PROJECTS.drop(columns="sector")))
    with pytest.raises(ColumnError, match=r"locations: no 'adm2' column"):
        aid.read_aiddata(*_write(tmp_path, locations=LOCATIONS.drop(columns="adm2")))
    p, q = _write(tmp_path)
    with pytest.raises(MissingFileError, match="no file at") as info:
        aid.read_aiddata(tmp_path / "nope.csv", q)
    assert isinstance(info.value, FileNotFoundError)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataFileError, match="is empty"):
        aid.read_aiddata(empty, q)
    header_only = tmp_path / "header.csv"
    header_only.write_text("project_id,funder,sector,start_year\n")
    with pytest.raises(DataFileError, match="no rows"):
        aid.read_aiddata(header_only, q)
    with pytest.raises(DataFileError, match="is a folder"):
        aid.read_aiddata(tmp_path, q)
    proj = PROJECTS.copy()
    proj.loc[1, "start_year"] = None
    with pytest.raises(InputError, match=r"'start_year' is missing in rows \[1\].*on_missing='drop'"):
        aid.read_aiddata(*_write(tmp_path, proj))
    with pytest.warns(DataQualityWarning, match="dropped 1 row"):
        recs = aid.read_aiddata(*_write(tmp_path, proj), on_missing="drop")
    assert "p2" not in set(recs["project_id"])
    with pytest.raises(InputError, match="precision_max"):
        aid.read_aiddata(p, q, precision_max=0)


# ----------------------------------------------------------------------------- panel
def _neighbourhoods():
    ids, adm = ["n1", "n2", "n3"], ["A", "A", "B"]
    wealth = {"n1": [10, 11, 12, 13], "n2": [20, 21, 22, 23], "n3": [30, 31, 32, 33]}
    rows = [(i, a, year, wealth[i][t], 0.5 * wealth[i][t]) for i, a in zip(ids, adm)
            for t, year in enumerate((2002, 2005, 2008, 2011))]
    return pd.DataFrame(rows, columns=["neighbourhood", "adm2", "period", "wealth", "wealth_pred"])


def test_panel_treatment_and_next_period_outcome_on_a_tiny_example(tmp_path, aid):
    recs = aid.read_aiddata(*_write(tmp_path))
    panel = aid.build_panel(_neighbourhoods(), recs, carry_next=["wealth_pred"])
    assert [c for c, _, _ in panel.attrs["trials"]] == ["China_140", "WorldBank_110", "WorldBank_210"]
    assert panel.attrs["projects_outside_periods"] == 1  # p4 starts in 2015
    key = panel.set_index(["neighbourhood", "t"])
    # China 140: p1 in A starting 2006 (period 1), p2 in B starting 2003 (period 0)
    expect = {("n1", 1): 1, ("n2", 1): 1, ("n3", 0): 1}
    for idx, v in key["China_140"].items():
        assert v == expect.get(idx, 0), idx
    # World Bank 210: p3 in B starting 2012 (period 3) and p6 in B starting 2009 (period 2)
    assert key["WorldBank_210"][key["WorldBank_210"] == 1].index.tolist() == [("n3", 2), ("n3", 3)]
    assert key["WorldBank_110"][key["WorldBank_110"] == 1].index.tolist() == [("n3", 2)]
    # outcome = wealth of the next period; missing in the last period
    assert key.loc["n1", "outcome"].tolist()[:3] == [11, 12, 13] and np.isnan(key.loc[("n1", 3), "outcome"])
    assert key.loc["n3", "wealth_pred_next"].tolist()[:3] == [15.5, 16.0, 16.5]
    assert key.loc["n2", "period"].tolist() == ["2002-2004", "2005-2007", "2008-2010", "2011-2013"]
    # trial membership: no outcome -> out; earlier project of the same kind and none now -> out
    design = aid.trial_design(panel, "China_140")
    got = dict(zip(zip(panel["neighbourhood"], panel["t"]), design))
    assert got[("n1", 0)] == 0 and got[("n1", 1)] == 1 and np.isnan(got[("n1", 2)]) and np.isnan(got[("n1", 3)])
    assert got[("n3", 0)] == 1 and np.isnan(got[("n3", 1)]) and np.isnan(got[("n3", 2)])
    keep_prior = aid.trial_design(panel, "China_140", exclude_prior=False)
    assert dict(zip(zip(panel["neighbourhood"], panel["t"]), keep_prior))[("n3", 1)] == 0


def test_panel_validation_errors(tmp_path, aid):
    recs = aid.read_aiddata(*_write(tmp_path))
    nb = _neighbourhoods()
    with pytest.raises(ColumnError, match="no 'wealth' column"):
        aid.build_panel(nb.drop(columns="wealth"), recs)
    bad = nb.copy()
    bad.loc[0, "period"] = 1999
    with pytest.raises(InputError, match=r"'period' holds \[1999\].*2002-2004"):
        aid.build_panel(bad, recs)
    bad = nb.copy()
    bad.loc[1, "period"] = 2003  # two rows of n1 in 2002-2004
    with pytest.raises(InputError, match="repeated"):
        aid.build_panel(bad, recs)
    bad = nb.copy()
    bad.loc[0, "wealth"] = 120
    with pytest.raises(InputError, match=r"\[0, 100\]"):
        aid.build_panel(bad, recs)
    bad = nb.copy()
    bad.loc[0, "adm2"] = "B"
    with pytest.raises(InputError, match="several ADM2s"):
        aid.build_panel(bad, recs)
    with pytest.raises(InputError, match="increasing"):
        aid.build_panel(nb, recs, periods=((2002, 2006), (2005, 2007)))
    with pytest.raises(ColumnError, match="carry_next"):
        aid.build_panel(nb, recs, carry_next=["nope"])


# ----------------------------------------------------------------------------- simulation
def test_simulated_records_rebuild_the_true_placements(tmp_path, aid, simulate):
    sim = simulate.simulate_aid(quick=True, seed=3)
    paths = sim.write(tmp_path)
    projects = pd.read_csv(paths["projects"], dtype=str)
    assert projects["sector"].str.len().eq(5).any() and projects["sector"].str.contains("|", regex=False).any()
    assert (pd.read_csv(paths["locations"])["precision"] > 2).any()  # decoys the reader must drop
    recs = aid.read_aiddata(paths["projects"], paths["locations"])
    panel = aid.build_panel(pd.read_csv(paths["panel"]), recs, trials=sim.trials)
    pos = {a: i for i, a in enumerate(sim.placement["adm2"])}
    a, t = panel["adm2"].map(pos).to_numpy(), panel["t"].to_numpy()
    for k, (col, _, _) in enumerate(panel.attrs["trials"]):
        assert (panel[col].to_numpy() == sim.placement["placed"][k, a, t]).all(), col
    assert not set(sim.calibration["unit"]) & set(panel["neighbourhood"])
    assert len(sim.trials) == 6 and any(v == 0 for v in sim.true_effects.values())
    assert sim.chips.shape == (sim.config["n_neighbourhoods"], 12, 12, 3) and sim.chips.dtype == np.uint8
    assert "SIMULATED" in sim.config["simulated"]


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_quick_run_writes_its_table_and_recovers_the_fixed_effects(tmp_path):
    proc = subprocess.run([sys.executable, str(FOLDER / "run.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["simulated"] is True and "SIMULATED" in res["data"]
    for row in res["rows"]:
        assert set(row) == {"target", "source", "eocausal", "status"}
        assert row["status"].startswith(("reproduced", "differs: ", "not reproducible without restricted data"))
    assert sum(r["status"] == "not reproducible without restricted data" for r in res["rows"]) == 2
    md = (tmp_path / "results.md").read_text()
    assert md.startswith("**SIMULATED data**")
    header = next(line for line in md.splitlines() if line.startswith("| trial |"))
    for col in ("IPW image+tabular", "IPW tabular-only", "FE (unit + period)", "Predicted outcome, naive",
                "Debiased, LCC", "Debiased, Tweedie", "true effect (simulated)"):
        assert f"| {col} |" in header + "|" or header.endswith(f"| {col} |"), col
    assert md.count("| China ") + md.count("| World Bank ") == 6
    rec = {r["column"]: r for r in res["recovery"]}
    assert abs(rec["FE (unit + period)"]["bias"]) < 1.0
    assert rec["IPW tabular-only"]["bias"] > rec["IPW image+tabular"]["bias"]
    assert (tmp_path / "figures" / "forest.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "recovery.png").exists()


@pytest.mark.slow
def test_real_file_mode_runs_the_same_design_on_user_files(tmp_path, simulate):
    sim = simulate.simulate_aid(quick=True, seed=5)
    paths = sim.write(tmp_path / "in")
    projects = pd.read_csv(paths["projects"], dtype=str)
    china = projects["funder"] == "China"
    locations = pd.read_csv(paths["locations"], dtype=str)
    files = []
    for name, part in (("china", china), ("wb", ~china)):  # one release per funder, without a funder column
        p, q = tmp_path / "in" / f"{name}_projects.csv", tmp_path / "in" / f"{name}_locations.csv"
        projects[part].drop(columns="funder").rename(columns={"sector": "ad_sector_codes"}).to_csv(p, index=False)
        locations[locations["project_id"].isin(projects.loc[part, "project_id"])].to_csv(q, index=False)
        files.append((p, q))
    out = tmp_path / "out"
    cmd = [sys.executable, str(FOLDER / "run.py"), "--projects", str(files[0][0]), str(files[1][0]),
           "--locations", str(files[0][1]), str(files[1][1]), "--funder", "China", "World Bank",
           "--panel", str(paths["panel"]), "--calibration", str(paths["calibration"]), "--max-trials", "4",
           "--n-boot", "50", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["simulated"] is False and res["true_effects"] is None and res["recovery"] is None
    assert len(res["rows"]) == 2 and {r["status"].split(":")[0] for r in res["rows"]} <= {
        "reproduced", "differs", "not reproducible without restricted data"}
    md = (out / "results.md").read_text()
    assert "SIMULATED" not in md and "true effect" not in md and "IPW image+tabular" not in md  # no embeddings
    assert md.count("| China ") + md.count("| World Bank ") == 4 and "Debiased, LCC" in md
    no_out = subprocess.run(cmd[:-2], capture_output=True, text=True, timeout=120)
    assert no_out.returncode == 2 and "pass --out" in no_out.stderr
