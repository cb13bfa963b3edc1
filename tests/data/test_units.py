"""Tests for eocausal.data.units: Units.from_frame validation and the Units accessors."""

from __future__ import annotations

import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import LineString, Point, Polygon, box

from eocausal.data.units import Units
from eocausal.errors import ColumnError, CRSError, EocausalError, InputError


# ----------------------------------------------------------------------------- fixtures
def make_frame(n: int = 6) -> pd.DataFrame:
    """A small valid table: ids u0..u5, alternating treatment, numeric outcome and covariates."""
    return pd.DataFrame(
        {
            "uid": [f"u{i}" for i in range(n)],
            "w": [i % 2 for i in range(n)],
            "y": [float(i) * 1.5 for i in range(n)],
            "x1": [float(i) for i in range(n)],
            "x2": [10 * i for i in range(n)],
            "village": ["b", "a", "b", "c", "a", "c"][:n],
            "img": ["k2", "k1", "k1", "k3", "k2", "k3"][:n],
            "lon": [10.0 + i for i in range(n)],
            "lat": [-5.0 + i for i in range(n)],
        }
    )


def build(df: pd.DataFrame | None = None, **kw) -> Units:
    args = {"id": "uid", "treatment": "w", "outcome": "y", "covariates": ("x1", "x2")}
    args.update(kw)
    return Units.from_frame(make_frame() if df is None else df, **args)


# ----------------------------------------------------------------------------- construction
def test_dataframe_with_lon_lat_becomes_geodataframe_in_epsg4326():
    u = build(lon="lon", lat="lat")
    assert isinstance(u.frame, gpd.GeoDataFrame)
    assert u.has_place
    assert u.crs.to_epsg() == 4326
    assert list(u.frame.index) == [f"u{i}" for i in range(6)]
    pts = u.geometry
    assert pts.geom_type.unique().tolist() == ["Point"]
    assert pts.iloc[3].x == pytest.approx(13.0, abs=0)
    assert pts.iloc[3].y == pytest.approx(-2.0, abs=0)
    # the user's columns are kept
    assert {"lon", "lat", "village", "img"} <= set(u.frame.columns)


def test_lon_lat_in_projected_crs_are_not_range_checked():
    df = make_frame()
    df["lon"] = [500_000.0 + 10 * i for i in range(6)]
    df["lat"] = [4_000_000.0 + 10 * i for i in range(6)]
    u = build(df, lon="lon", lat="lat", crs="EPSG:32612")
    assert u.crs.to_epsg() == 32612
    assert u.geometry.iloc[0].x == pytest.approx(500_000.0, abs=0)


def test_geodataframe_with_points():
    df = make_frame()
    gdf = gpd.GeoDataFrame(df.drop(columns=["lon", "lat"]),
                           geometry=[Point(i, i) for i in range(6)], crs="EPSG:4326")
    u = build(gdf)
    assert u.has_place
    assert u.crs.to_epsg() == 4326
    assert u.geometry.iloc[2].equals(Point(2, 2))
    assert u.describe()["crs"] == "EPSG:4326"


def test_geodataframe_with_polygons_and_multipolygons():
    df = make_frame()
    geoms = [box(i, i, i + 1, i + 1) for i in range(6)]
    gdf = gpd.GeoDataFrame(df, geometry=geoms, crs="EPSG:32612")
    u = build(gdf)
    assert u.has_place
    assert u.crs.to_epsg() == 32612
    assert set(u.geometry.geom_type) == {"Polygon"}
    assert u.geometry.iloc[5].area == pytest.approx(1.0, rel=1e-12)


def test_geodataframe_crs_is_never_relabelled_by_crs_argument():
    gdf = gpd.GeoDataFrame(make_frame(), geometry=[Point(i, i) for i in range(6)], crs="EPSG:3857")
    u = build(gdf, crs="EPSG:4326")
    assert u.crs.to_epsg() == 3857


def test_no_place():
    u = build()
    assert not isinstance(u.frame, gpd.GeoDataFrame)
    assert u.has_place is False
    assert u.crs is None
    assert "crs" not in u.describe()
    with pytest.raises(CRSError, match="no geometry"):
        u.geometry


def test_input_frame_is_not_modified():
    df = make_frame()
    df["w"] = df["w"].astype(bool)
    before = df.copy()
    build(df, lon="lon", lat="lat")
    pd.testing.assert_frame_equal(df, before)


def test_index_used_as_ids_when_id_is_omitted():
    df = make_frame().set_index("uid")
    u = Units.from_frame(df, treatment="w", outcome="y")
    assert u.ids.tolist() == [f"u{i}" for i in range(6)]


def test_boolean_treatment_accepted_as_0_1():
    df = make_frame()
    df["w"] = [False, True, True, False, True, False]
    u = build(df)
    assert u.frame["w"].dtype.kind == "i"
    np.testing.assert_array_equal(u.w(), [0.0, 1.0, 1.0, 0.0, 1.0, 0.0])


def test_float_0_1_treatment_accepted():
    df = make_frame()
    df["w"] = df["w"].astype(float)
    np.testing.assert_array_equal(build(df).w(), [0, 1, 0, 1, 0, 1])


def test_treatment_and_outcome_may_be_none():
    u = build(treatment=None, outcome=None)
    with pytest.raises(InputError, match="no treatment column"):
        u.w()
    with pytest.raises(InputError, match="no outcome column"):
        u.y()
    assert "n_treated" not in u.describe()


# ----------------------------------------------------------------------------- accessors
def test_w_y_x_values_and_dtypes():
    u = build()
    w, y, x = u.w(), u.y(), u.x()
    assert w.dtype == np.float64 and y.dtype == np.float64 and x.dtype == np.float64
    np.testing.assert_array_equal(w, [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(y, [0.0, 1.5, 3.0, 4.5, 6.0, 7.5])
    assert x.shape == (6, 2)
    np.testing.assert_array_equal(x[:, 0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(x[:, 1], [0, 10, 20, 30, 40, 50])


def test_x_without_covariates_is_n_by_0():
    u = build(covariates=())
    assert u.x().shape == (6, 0)


def test_integer_outcome_becomes_float():
    df = make_frame()
    df["y"] = [1, 2, 3, 4, 5, 6]
    u = build(df)
    assert u.frame["y"].dtype == np.float64
    np.testing.assert_array_equal(u.y(), [1, 2, 3, 4, 5, 6])


def test_groups_from_cluster_are_sorted_codes():
    u = build(clusters="village", image_key="img")
    # village: b a b c a c -> sorted codes a=0, b=1, c=2 (cluster wins over image_key)
    np.testing.assert_array_equal(u.cluster_codes(), [1, 0, 1, 2, 0, 2])


def test_groups_from_image_key_when_no_cluster():
    u = build(image_key="img")
    # img: k2 k1 k1 k3 k2 k3 -> k1=0, k2=1, k3=2
    np.testing.assert_array_equal(u.cluster_codes(), [1, 0, 0, 2, 1, 2])


def test_groups_none_without_cluster_or_image_key():
    assert build().cluster_codes() is None


def test_keys_are_image_keys_or_ids():
    assert build(image_key="img").keys().tolist() == ["k2", "k1", "k1", "k3", "k2", "k3"]
    assert build().keys().tolist() == [f"u{i}" for i in range(6)]


def test_ids_len_and_n():
    u = build()
    assert u.ids.tolist() == ["u0", "u1", "u2", "u3", "u4", "u5"]
    assert len(u) == 6 and u.n == 6


def test_subset_by_boolean_mask_and_positions_keeps_roles():
    u = build(clusters="village", image_key="img", lon="lon", lat="lat")
    mask = np.array([True, False, True, False, False, True])
    s = u.subset(mask)
    assert s.ids.tolist() == ["u0", "u2", "u5"]
    assert (s.treatment, s.outcome, s.covariates, s.clusters, s.image_key) == (
        "w", "y", ("x1", "x2"), "village", "img")
    np.testing.assert_array_equal(s.y(), [0.0, 3.0, 7.5])
    assert s.has_place and s.crs.to_epsg() == 4326
    p = u.subset(np.array([4, 1]))
    assert p.ids.tolist() == ["u4", "u1"]
    np.testing.assert_array_equal(p.w(), [0, 1])
    # the original is unchanged
    assert u.n == 6


def test_describe_counts():
    d = build(clusters="village", lon="lon", lat="lat").describe()
    assert d == {"n": 6, "covariates": ["x1", "x2"], "n_treated": 3, "n_clusters": 3,
                 "crs": "EPSG:4326"}


def test_units_is_frozen():
    u = build()
    with pytest.raises(AttributeError):
        u.treatment = "x1"


# ----------------------------------------------------------------------------- errors: input
def test_non_dataframe_input():
    with pytest.raises(InputError, match=r"expected a pandas DataFrame.*got dict") as ei:
        Units.from_frame({"w": [0, 1], "y": [1.0, 2.0]}, treatment="w", outcome="y")
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, EocausalError)


def test_empty_table():
    with pytest.raises(InputError, match="no rows") as ei:
        Units.from_frame(make_frame().iloc[:0], treatment="w", outcome="y")
    assert isinstance(ei.value, ValueError)


@pytest.mark.parametrize("role", ["treatment", "outcome", "clusters", "period", "trial",
                                  "image_key", "lon", "lat", "id"])
def test_missing_column_names_role_column_and_available_columns(role):
    kw = {"treatment": "w", "outcome": "y", role: "nosuch"}
    if role in ("lon", "lat"):
        kw.update({"lon": "lon", "lat": "lat", role: "nosuch"})
    with pytest.raises(ColumnError) as ei:
        Units.from_frame(make_frame(), **kw)
    msg = str(ei.value)
    assert isinstance(ei.value, KeyError) and isinstance(ei.value, ValueError)
    assert f"{role}='nosuch'" in msg
    assert "no such column" in msg
    # the available columns are listed
    assert str(sorted(make_frame().columns)) in msg
    # ColumnError does not quote its message like a plain KeyError would
    assert not msg.startswith('"')


def test_missing_covariate_column():
    with pytest.raises(ColumnError, match=r"covariates='x9': no such column.*'x1'"):
        build(covariates=("x1", "x9"))


def test_missing_column_caught_as_keyerror():
    with pytest.raises(KeyError):
        build(treatment="treated")


def test_duplicate_ids_in_column_named():
    df = make_frame()
    df.loc[3, "uid"] = "u1"
    df.loc[5, "uid"] = "u4"
    with pytest.raises(InputError) as ei:
        build(df)
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert "duplicate ids" in msg and "'uid'" in msg
    assert "'u1'" in msg and "'u4'" in msg
    assert "'u0'" not in msg and "'u2'" not in msg


def test_duplicate_ids_in_index_named():
    df = make_frame().set_index("uid")
    df.index = ["a", "b", "a", "c", "d", "e"]
    with pytest.raises(InputError, match=r"the index has duplicate ids \['a'\]"):
        Units.from_frame(df, treatment="w", outcome="y")


def test_many_duplicate_ids_are_truncated_in_message():
    n = 24
    df = pd.DataFrame({"uid": [i // 2 for i in range(n)], "w": [i % 2 for i in range(n)],
                       "y": np.arange(n, dtype=float)})
    with pytest.raises(InputError, match=r"duplicate ids \[0, 1, 2, 3, 4, 5, 6, 7 and 4 more\]"):
        Units.from_frame(df, id="uid", treatment="w", outcome="y")


def test_missing_ids():
    df = make_frame()
    df.loc[2, "uid"] = None
    with pytest.raises(InputError, match=r"id='uid': missing ids in rows \[2\]"):
        build(df)


# ----------------------------------------------------------------------------- errors: treatment
def test_non_binary_treatment_names_rows_and_values():
    df = make_frame()
    df["w"] = [0, 1, 2, 1, 0, 3]
    with pytest.raises(InputError) as ei:
        build(df)
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert "treatment='w'" in msg and "binary" in msg
    assert "rows ['u2', 'u5']" in msg
    assert re.search(r"\b2\b", msg.split("hold")[1]) and re.search(r"\b3\b", msg.split("hold")[1])


def test_string_treatment_names_values():
    df = make_frame()
    df["w"] = ["no", "yes", "no", "yes", "no", "yes"]
    with pytest.raises(InputError, match=r"rows \['u0', 'u1', 'u2', 'u3', 'u4', 'u5'\] hold 'no', 'yes'"):
        build(df)


def test_constant_treatment():
    df = make_frame()
    df["w"] = 1
    with pytest.raises(InputError, match=r"treatment='w': constant \(every unit has 1\)"):
        build(df)


def test_constant_boolean_treatment():
    df = make_frame()
    df["w"] = False
    with pytest.raises(InputError, match=r"constant \(every unit has 0\)"):
        build(df)


def test_missing_treatment():
    df = make_frame()
    df["w"] = [0, 1, None, 1, np.nan, 0]
    with pytest.raises(InputError, match=r"treatment='w': missing values in rows \['u2', 'u4'\]") as ei:
        build(df)
    assert isinstance(ei.value, ValueError)


# ----------------------------------------------------------------------------- errors: outcome
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_missing_or_infinite_outcome(bad):
    df = make_frame()
    df.loc[1, "y"] = bad
    df.loc[4, "y"] = bad
    with pytest.raises(InputError) as ei:
        build(df)
    msg = str(ei.value)
    assert "outcome='y'" in msg and "rows ['u1', 'u4']" in msg
    assert "allow_missing_outcome=True" in msg


def test_allow_missing_outcome_keeps_nan():
    df = make_frame()
    df.loc[1, "y"] = np.nan
    u = build(df, allow_missing_outcome=True)
    y = u.y()
    assert np.isnan(y[1])
    np.testing.assert_array_equal(np.delete(y, 1), [0.0, 3.0, 4.5, 6.0, 7.5])


def test_non_numeric_outcome_names_rows_and_example():
    df = make_frame()
    df["y"] = ["1.0", "2.5", "high", "4", "n/a", "6"]
    with pytest.raises(ColumnError) as ei:
        build(df)
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, KeyError)
    assert "outcome='y'" in msg and "non-numeric" in msg
    assert "rows ['u2', 'u4']" in msg
    assert "'high'" in msg


def test_numeric_strings_in_outcome_are_converted():
    df = make_frame()
    df["y"] = ["1.0", "2.5", "3", "4", "5", "6"]
    np.testing.assert_array_equal(build(df).y(), [1.0, 2.5, 3.0, 4.0, 5.0, 6.0])


# ----------------------------------------------------------------------------- errors: covariates
def test_non_numeric_covariates_named():
    df = make_frame()
    with pytest.raises(ColumnError) as ei:
        build(df, covariates=("x1", "village"))
    msg = str(ei.value)
    assert isinstance(ei.value, KeyError) and isinstance(ei.value, ValueError)
    assert "['village'] are not numeric" in msg
    assert "'b'" in msg  # example value
    assert "get_dummies" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_covariates_name_column_and_rows(bad):
    df = make_frame()
    df["x1"] = df["x1"].astype(float)
    df.loc[0, "x1"] = bad
    df.loc[5, "x1"] = bad
    with pytest.raises(InputError, match=r"column 'x1' has missing or infinite values in rows \['u0', 'u5'\]"):
        build(df)


def test_nullable_integer_covariate_with_na_refused():
    df = make_frame()
    df["x2"] = pd.array([1, 2, None, 4, 5, 6], dtype="Int64")
    with pytest.raises(InputError, match=r"column 'x2'.*rows \['u2'\]"):
        build(df)


@pytest.mark.parametrize("role", ["w", "y"])
def test_covariate_equal_to_treatment_or_outcome(role):
    with pytest.raises(InputError, match=rf"covariates: \['{role}'\] is also the treatment or outcome"):
        build(covariates=("x1", role))


def test_duplicated_covariates():
    with pytest.raises(InputError, match=r"covariates: \['x1'\] listed more than once"):
        build(covariates=("x1", "x2", "x1"))


def test_covariates_stored_as_float_and_as_tuple():
    u = build(covariates=["x2"])
    assert u.covariates == ("x2",)
    assert u.frame["x2"].dtype == np.float64


# ----------------------------------------------------------------------------- errors: keys
@pytest.mark.parametrize("role,col", [("clusters", "village"), ("image_key", "img"),
                                      ("period", "village"), ("trial", "village")])
def test_missing_key_values(role, col):
    df = make_frame()
    df.loc[3, col] = None
    with pytest.raises(InputError, match=rf"{role}='{col}': missing values in rows \['u3'\]"):
        build(df, **{role: col})


# ----------------------------------------------------------------------------- errors: place
def test_geodataframe_without_crs():
    gdf = gpd.GeoDataFrame(make_frame(), geometry=[Point(i, i) for i in range(6)])
    with pytest.raises(CRSError, match=r"no CRS.*set_crs") as ei:
        build(gdf)
    assert isinstance(ei.value, ValueError)


def test_geodataframe_without_crs_not_relabelled_by_crs_argument():
    gdf = gpd.GeoDataFrame(make_frame(), geometry=[Point(i, i) for i in range(6)])
    with pytest.raises(CRSError, match="no CRS"):
        build(gdf, crs="EPSG:4326")


def test_lines_refused():
    geoms = [Point(0, 0)] * 4 + [LineString([(0, 0), (1, 1)])] * 2
    gdf = gpd.GeoDataFrame(make_frame(), geometry=geoms, crs="EPSG:4326")
    with pytest.raises(InputError, match=r"points or polygons, got \['LineString'\]"):
        build(gdf)


@pytest.mark.parametrize("empty", [None, Polygon()])
def test_empty_or_missing_geometry_names_rows(empty):
    geoms = [Point(i, i) for i in range(6)]
    geoms[1] = empty
    geoms[4] = empty
    gdf = gpd.GeoDataFrame(make_frame(), geometry=geoms, crs="EPSG:4326")
    with pytest.raises(InputError, match=r"missing or empty geometries in rows \['u1', 'u4'\]"):
        build(gdf)


def test_geometry_and_lon_lat_together_refused():
    gdf = gpd.GeoDataFrame(make_frame(), geometry=[Point(i, i) for i in range(6)], crs="EPSG:4326")
    with pytest.raises(InputError, match="already has a geometry"):
        build(gdf, lon="lon", lat="lat")


@pytest.mark.parametrize("kw", [{"lon": "lon"}, {"lat": "lat"}])
def test_only_one_coordinate_column(kw):
    with pytest.raises(InputError, match="give both coordinate columns"):
        build(**kw)


@pytest.mark.parametrize("col,val", [("lon", 181.0), ("lon", -200.0), ("lat", 91.0), ("lat", -90.5)])
def test_lon_lat_out_of_range(col, val):
    df = make_frame()
    df.loc[2, col] = val
    with pytest.raises(CRSError) as ei:
        build(df, lon="lon", lat="lat")
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert "outside [-180, 180] x [-90, 90]" in msg
    assert "rows ['u2']" in msg
    assert "EPSG:4326" in msg and "crs=" in msg


def test_lon_lat_boundaries_accepted():
    df = make_frame()
    df["lon"] = [-180.0, 180.0, 0.0, 1.0, 2.0, 3.0]
    df["lat"] = [-90.0, 90.0, 0.0, 1.0, 2.0, 3.0]
    assert build(df, lon="lon", lat="lat").has_place


def test_missing_or_non_numeric_coordinates():
    df = make_frame()
    df["lat"] = df["lat"].astype(object)
    df.loc[3, "lat"] = "north"
    with pytest.raises(InputError, match=r"'lat': missing or non-numeric coordinates in rows \['u3'\]"):
        build(df, lon="lon", lat="lat")


# ----------------------------------------------------------------------------- geometry name
def test_has_place_with_renamed_geometry_column():
    gdf = gpd.GeoDataFrame(make_frame(), geometry=[Point(i, i) for i in range(6)],
                           crs="EPSG:4326").rename_geometry("geom")
    u = build(gdf)
    assert u.has_place
    assert u.crs.to_epsg() == 4326
    assert u.geometry.name == "geom"
    assert u.geometry.iloc[1].equals(Point(1, 1))


def test_renamed_geometry_column_is_still_validated():
    gdf = gpd.GeoDataFrame(make_frame(), geometry=[Point(i, i) for i in range(6)]).rename_geometry("geom")
    with pytest.raises(CRSError, match="no CRS"):
        build(gdf)


def test_geodataframe_without_geometry_column_has_no_place():
    u = build(gpd.GeoDataFrame(make_frame()))
    assert u.has_place is False
    assert u.crs is None
    with pytest.raises(CRSError, match="no geometry"):
        u.geometry
    # lon/lat still give such a table a place
    v = build(gpd.GeoDataFrame(make_frame()), lon="lon", lat="lat")
    assert v.has_place and v.crs.to_epsg() == 4326
