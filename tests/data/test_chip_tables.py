"""GeoParquet chip-embedding tables (eocausal.data.chip_tables) on tables the tests write.

A 4 x 4 grid of 100 m chips near Gulu (UTM 36N), each with a 8-dim embedding array column and
model/version/year metadata in the file, as Earth Index / Major TOM publish them. Checked: units
inside a chip take its embedding (distance 0); 'nearest' takes the nearest chip within the
distance and reports it; units beyond it get NaN rows with a warning; a table written in
(lat, lon) order is refused, both when its latitudes exceed 90 and when only the swapped
coordinates would match; metadata and provenance.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from shapely.geometry import box

from eocausal.data.chip_tables import read_chip_table
from eocausal.errors import DataFileError, DataQualityWarning, InputError

X0, Y0, SIDE = 430_000.0, 300_000.0, 100.0  # UTM 36N, near 2.7 N 32.4 E


def _chips(path, crs="EPSG:32636", swap=False, metadata=True):
    geoms, ids, emb = [], [], []
    for i in range(4):
        for j in range(4):
            geoms.append(box(X0 + i * SIDE, Y0 + j * SIDE, X0 + (i + 1) * SIDE, Y0 + (j + 1) * SIDE))
            ids.append(f"c{i}{j}")
            emb.append([float(10 * i + j + k / 10) for k in range(8)])
    gdf = gpd.GeoDataFrame({"id": ids, "embedding": emb}, geometry=geoms, crs="EPSG:32636").to_crs(crs)
    if swap:
        gdf.geometry = shapely.transform(gdf.geometry.to_numpy(), lambda c: c[:, ::-1])
    gdf.to_parquet(path)
    if metadata:
        table = pq.read_table(path)
        meta = dict(table.schema.metadata or {})
        meta.update({b"model": b"clay-v1.5", b"version": b"1.5.0", b"year": b"2021", b"licence": b"ODC-By-1.0"})
        pq.write_table(table.replace_schema_metadata(meta), path)
    return gdf


def _units(xy, crs="EPSG:32636"):
    return gpd.GeoSeries(gpd.points_from_xy(*np.asarray(xy).T), index=[f"u{k}" for k in range(len(xy))], crs=crs)


def test_units_inside_chips_take_their_embedding(tmp_path):
    _chips(tmp_path / "chips.parquet")
    table = read_chip_table(tmp_path / "chips.parquet")
    assert table.metadata == {"model": "clay-v1.5", "version": "1.5.0", "year": "2021", "licence": "ODC-By-1.0"}
    units = _units([(X0 + 50, Y0 + 50), (X0 + 250, Y0 + 150), (X0 + 399, Y0 + 301)]).to_crs("EPSG:4326")
    frame = table.join(units)
    np.testing.assert_allclose(frame.loc["u0"].to_numpy(), [0 + k / 10 for k in range(8)])
    np.testing.assert_allclose(frame.loc["u1"].to_numpy(), [21 + k / 10 for k in range(8)])
    np.testing.assert_allclose(frame.loc["u2"].to_numpy(), [33 + k / 10 for k in range(8)])
    assert frame.attrs["chip_id"] == {"u0": "c00", "u1": "c21", "u2": "c33"}
    assert set(frame.attrs["join_distance_m"].values()) == {0.0}
    prov = frame.attrs["provenance"]
    assert prov["product"]["model"] == "clay-v1.5" and prov["join"]["units_joined"] == 3


def test_nearest_within_a_distance_reports_the_distance(tmp_path):
    _chips(tmp_path / "chips.parquet", crs="EPSG:4326")
    table = read_chip_table(tmp_path / "chips.parquet")
    units = _units([(X0 - 30, Y0 + 50), (X0 + 450, Y0 + 350), (X0 + 2000, Y0)])  # 30 m west, 50 m east, far
    with pytest.warns(DataQualityWarning, match="1 of 3 units have no chip"):
        frame = table.join(units, how="nearest", max_distance_m=100)
    d = frame.attrs["join_distance_m"]
    assert d["u0"] == pytest.approx(30, abs=0.5) and d["u1"] == pytest.approx(50, abs=0.5) and np.isnan(d["u2"])
    np.testing.assert_allclose(frame.loc["u1"].to_numpy(), [33 + k / 10 for k in range(8)])
    assert frame.loc["u2"].isna().all()
    assert frame.attrs["provenance"]["join"]["largest_distance_m"] == pytest.approx(50, abs=0.5)
    with pytest.warns(DataQualityWarning):
        assert table.join(units, how="contains").loc[["u0", "u1"]].isna().all().all()  # outside every chip
    with pytest.raises(InputError, match="max_distance_m"):
        table.join(units, how="nearest")


def test_a_table_in_lat_lon_order_is_refused(tmp_path):
    units = _units([(X0 + 50, Y0 + 50), (X0 + 250, Y0 + 150)])
    _chips(tmp_path / "swapped.parquet", crs="EPSG:4326", swap=True)  # y = longitude ~32.4: within +/-90
    with pytest.raises(DataFileError, match="latitude, longitude"):
        read_chip_table(tmp_path / "swapped.parquet").join(units)
    # a table far from the equator: its 'latitudes' are longitudes beyond 90
    far = gpd.GeoDataFrame({"id": ["a"], "embedding": [[1.0, 2.0]]},
                           geometry=[box(45.0, 120.0, 45.1, 120.1)], crs="EPSG:4326")
    far.to_parquet(tmp_path / "far.parquet")
    with pytest.raises(DataFileError, match="beyond"):
        read_chip_table(tmp_path / "far.parquet").join(_units([(120.05, 45.05)], crs="EPSG:4326"))


def test_reader_errors_and_one_column_per_dimension(tmp_path):
    gdf = _chips(tmp_path / "chips.parquet", metadata=False)
    with pytest.raises(InputError, match="id='chip'"):
        read_chip_table(tmp_path / "chips.parquet", id="chip")
    wide = gpd.GeoDataFrame({"chip": gdf["id"], "f0": np.arange(16.0), "f1": np.ones(16), "year": 2020},
                            geometry=gdf.geometry, crs=gdf.crs)
    wide.to_parquet(tmp_path / "wide.parquet")
    t = read_chip_table(tmp_path / "wide.parquet", id="chip", metadata={"model": "mine"})
    assert t.columns == ["f0", "f1"] and t.metadata == {"year": 2020, "model": "mine"}
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataFileError, match="GeoParquet"):
        read_chip_table(tmp_path / "bad.parquet")
    assert pa is not None


def test_a_study_file_runs_on_a_chip_table(tmp_path, capsys):
    """[imagery] format = 'chip-table': validated, run; the join and the table's metadata reach the
    manifest and the notes; units without a chip leave the study with a note."""
    import json

    import pandas as pd

    from eocausal.cli import main

    _chips(tmp_path / "chips.parquet", crs="EPSG:4326")
    rng = np.random.default_rng(0)
    n = 160
    x = X0 + rng.uniform(-20, 420, n)  # a few units just outside the grid
    y = Y0 + rng.uniform(0, 400, n)
    lonlat = gpd.GeoSeries(gpd.points_from_xy(x, y), crs="EPSG:32636").to_crs("EPSG:4326")
    w = rng.integers(0, 2, n)
    pd.DataFrame({"id": np.arange(n), "lon": lonlat.x, "lat": lonlat.y, "w": w,
                  "y": w + rng.normal(size=n)}).to_csv(tmp_path / "units.csv", index=False)
    study = tmp_path / "chips.toml"
    study.write_text("""
[study]
name = "chip table study"
[units]
format = "csv"
path = "units.csv"
id = "id"
treatment = "w"
outcome = "y"
lon = "lon"
lat = "lat"
[imagery]
format = "chip-table"
path = "chips.parquet"
join = "nearest"
max_distance_m = 10
[estimate]
methods = ["dim", "ipw-hajek"]
folds = 3
""", encoding="utf-8")
    assert main(["validate", str(study)]) == 0
    assert "ChipTable(16 chips, 8 dims" in capsys.readouterr().out
    assert main(["run", str(study), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    src = man["embedding_source"]
    assert src["product"]["model"] == "clay-v1.5" and src["join"]["how"] == "nearest"
    far = int(np.sum((x < X0 - 10) | (x > X0 + 4 * SIDE + 10)))
    assert src["join"]["units_without_chip"] == far == man["dropped_units"]["n"] > 0
    assert src["join"]["largest_distance_m"] <= 10
    text = (tmp_path / "out" / "results.json").read_text()
    assert "clay-v1.5" in text and "units matched to chips by nearest" in text
    study.write_text(study.read_text().replace("max_distance_m = 10\n", ""), encoding="utf-8")
    assert main(["validate", str(study)]) == 2
    assert "join = 'nearest' needs max_distance_m" in capsys.readouterr().err
