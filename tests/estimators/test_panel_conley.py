"""panel_fe(se='conley'): Conley spatial HAC within periods plus clustering by unit over time.

Reference: a direct double loop over every pair of unit-periods of a balanced panel, with the
within transform done by hand (two-way demeaning is exact on a balanced panel) and the control
partialled out (Frisch-Waugh-Lovell):
V = sum_{(i,t),(j,s)} k_{it,js} x~_it u_it x~_js u_js / (sum x~^2)^2, with k = K(d_ij / cutoff)
when t = s, 1 when i = j, 0 otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from eocausal.errors import InputError, NotEstimableError
from eocausal.estimators.panel import panel_fe
from eocausal.estimators.robust_se import EARTH_RADIUS_KM

KW = dict(outcome="y", treatment="w", unit="unit", period="period")


def _spatial_panel(U=40, T=4, seed=0):
    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(30, 32, U), rng.uniform(-1, 1, U)  # ~220 km square
    df = pd.DataFrame({"unit": np.repeat(np.arange(U), T), "period": np.tile(np.arange(T), U)})
    df["lon"], df["lat"] = lon[df["unit"]], lat[df["unit"]]
    # period shocks that vary smoothly in space (spatially correlated errors within a period) and a
    # treatment that switches on in the eastern half from period 2 (spatially clustered)
    t = df["period"].to_numpy()
    wave = np.sin(3 * df["lon"].to_numpy() + t) + np.cos(4 * df["lat"].to_numpy() * (1 + t))
    a = rng.normal(size=U)[df["unit"]]
    df["x1"] = rng.normal(size=len(df)) + 0.3 * a
    df["w"] = (((df["lon"] > 31) & (t >= 2)) | (rng.uniform(size=len(df)) < 0.1)).astype(float)
    df["y"] = 0.5 * df["w"] + a + 0.2 * df["x1"] + wave + rng.normal(size=len(df))
    return df


def _haversine_km(lon, lat):
    lon, lat = np.radians(lon), np.radians(lat)
    h = (np.sin((lat[:, None] - lat[None, :]) / 2) ** 2
         + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin((lon[:, None] - lon[None, :]) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


def _direct(df, cutoff, kernel, controls=("x1",)):
    U, T = df["unit"].nunique(), df["period"].nunique()

    def within(v):
        m = np.asarray(v, float).reshape(U, T)
        return (m - m.mean(1, keepdims=True) - m.mean(0, keepdims=True) + m.mean()).ravel()

    yd, wd = within(df["y"]), within(df["w"])
    Xc = np.column_stack([within(df[c]) for c in controls]) if controls else np.zeros((len(df), 0))
    X = np.column_stack([wd, Xc])
    beta = np.linalg.lstsq(X, yd, rcond=None)[0]
    u = yd - X @ beta
    x_res = wd - Xc @ np.linalg.lstsq(Xc, wd, rcond=None)[0] if controls else wd
    s = x_res * u
    D = _haversine_km(df["lon"].to_numpy(), df["lat"].to_numpy())
    unit, period = df["unit"].to_numpy(), df["period"].to_numpy()
    total = 0.0
    for r in range(len(df)):
        for q in range(len(df)):
            if period[r] == period[q]:
                d = D[r, q]
                k = float(d <= cutoff) if kernel == "uniform" else max(0.0, 1 - d / cutoff)
            else:
                k = float(unit[r] == unit[q])
            total += k * s[r] * s[q]
    return beta[0], np.sqrt(total) / np.sum(x_res**2)


@pytest.mark.parametrize("kernel", ["bartlett", "uniform"])
def test_conley_panel_equals_the_direct_double_loop(kernel):
    df = _spatial_panel()
    est, se = _direct(df, 60.0, kernel)
    fit = panel_fe(df, **KW, controls=["x1"], se="conley", coords=("lon", "lat"), conley_km=60.0,
                   conley_kernel=kernel)
    assert fit.estimate == pytest.approx(est, rel=1e-8)
    assert fit.std_error == pytest.approx(se, rel=1e-8)
    U = df["unit"].nunique()
    q = stats.t.ppf(0.975, U - 1)
    assert fit.ci == pytest.approx((est - q * se, est + q * se), rel=1e-8)
    assert fit.p_value == pytest.approx(2 * stats.t.sf(abs(est / se), U - 1), rel=1e-8)
    assert (fit.se, fit.clusters, fit.n_clusters) == ("conley", "unit", U)
    assert fit.se_type == f"Conley ({kernel}, 60 km) + clustered by unit"
    # the spatial pairs matter here: not the unit-clustered SE of a tiny cutoff
    tiny = panel_fe(df, **KW, controls=["x1"], se="conley", coords=("lon", "lat"), conley_km=0.01)
    assert abs(fit.std_error / tiny.std_error - 1) > 0.01


def test_conley_panel_with_a_tiny_cutoff_is_the_unit_clustered_cr0_se():
    df = _spatial_panel(seed=1)
    fit = panel_fe(df, **KW, controls=["x1"], se="conley", coords=("lon", "lat"), conley_km=0.01)
    crv1 = panel_fe(df, **KW, controls=["x1"])  # CRV1 by unit: CR0 * sqrt(G/(G-1) (n-1)/(n-k))
    G, n, k = df["unit"].nunique(), len(df), 2 + df["period"].nunique()  # w, x1, intercept + T-1 dummies
    assert fit.std_error == pytest.approx(crv1.std_error / np.sqrt(G / (G - 1) * (n - 1) / (n - k)), rel=1e-8)


def test_conley_panel_without_controls_and_other_se_unchanged():
    df = _spatial_panel(seed=2)
    est, se = _direct(df, 80.0, "bartlett", controls=())
    fit = panel_fe(df, **KW, se="conley", coords=["lon", "lat"], conley_km=80)
    assert fit.std_error == pytest.approx(se, rel=1e-8)
    hc = panel_fe(df, **KW, se="hetero")
    assert hc.se == "hetero" and hc.clusters is None and hc.estimate == pytest.approx(est, rel=1e-8)


def test_conley_panel_refuses_bad_arguments():
    df = _spatial_panel(U=10, T=3)
    with pytest.raises(InputError, match="coords=None: se='conley' needs the names"):
        panel_fe(df, **KW, se="conley", conley_km=50)
    with pytest.raises(InputError, match="conley_km=None: se='conley' needs a distance cutoff"):
        panel_fe(df, **KW, se="conley", coords=("lon", "lat"))
    with pytest.raises(InputError, match="cutoff_km=-5"):
        panel_fe(df, **KW, se="conley", coords=("lon", "lat"), conley_km=-5)
    with pytest.raises(InputError, match=r"conley_kernel='gauss': use one of \['bartlett', 'uniform'\]"):
        panel_fe(df, **KW, se="conley", coords=("lon", "lat"), conley_km=50, conley_kernel="gauss")
    with pytest.raises(InputError, match="clusters='unit' with se='conley'"):
        panel_fe(df, **KW, clusters="unit", se="conley", coords=("lon", "lat"), conley_km=50)
    with pytest.raises(InputError, match="used only by se='conley'"):
        panel_fe(df, **KW, coords=("lon", "lat"))
    with pytest.raises(KeyError, match="coords\\[1\\] \\(latitude\\)"):
        panel_fe(df, **KW, se="conley", coords=("lon", "latitude"), conley_km=50)
    bad = df.assign(lon=df["lon"] * 1e4)
    with pytest.raises(InputError, match="reproject the units to EPSG:4326"):
        panel_fe(bad, **KW, se="conley", coords=("lon", "lat"), conley_km=50)


def test_conley_panel_negative_double_sum_is_not_estimable(monkeypatch):
    import eocausal.estimators.robust_se as rse

    df = _spatial_panel(U=10, T=3)
    monkeypatch.setattr(rse, "_kernel_sum", lambda s, *a: -1e6)  # stands in for a non-PSD layout
    with pytest.raises(NotEstimableError, match="use the Bartlett kernel or another cutoff"):
        panel_fe(df, **KW, se="conley", coords=("lon", "lat"), conley_km=50, conley_kernel="uniform")
