"""Chips per second: RasterSource against a naive open-per-point loop, on real Landsat.

Extracts 1 km chips (chip_px=33, average resampling, all 7 bands) for N random points inside
../shared/data/landsat/landsat.tif (EPSG:4326), once with ``RasterSource.chips`` and once with
a naive loop that, per point, builds the same UTM square, transforms its bounds with
``rasterio.warp.transform_bounds``, opens the file and reads the window. Both give the same
chips (checked). Prints machine information and the figures, and appends them to
benchmarks/results/raster_chips.md.

Usage: python -m benchmarks.raster_chips [--n 10000] [--seed 0] [--naive-n N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from benchmarks._machine import RESULTS_DIR, ROOT, append_text, machine_line, utc_stamp

LANDSAT = ROOT.parent / "shared" / "data" / "landsat" / "landsat.tif"
RESULTS = RESULTS_DIR / "raster_chips.md"
SIZE_M, PX = 1000.0, 33


def random_points(n: int, seed: int):
    """Points inside landsat.tif, at least 0.01 degree (> 1 km chip half-width) from its edges."""
    import geopandas as gpd
    import rasterio

    with rasterio.open(LANDSAT) as ds:
        left, bottom, right, top = ds.bounds
    rng = np.random.default_rng(seed)
    lon = rng.uniform(left + 0.01, right - 0.01, n)
    lat = rng.uniform(bottom + 0.01, top - 0.01, n)
    return gpd.GeoSeries(gpd.points_from_xy(lon, lat), crs="EPSG:4326"), lon, lat


def naive(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Open the file per point and read the chip's window (what a first script does)."""
    import rasterio
    from pyproj import Transformer
    from rasterio.enums import Resampling
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    out = np.empty((len(lon), 7, PX, PX), np.float32)
    for k, (x, y) in enumerate(zip(lon, lat)):
        zone = 32600 + int((x + 180) // 6) % 60 + 1
        ux, uy = Transformer.from_crs(4326, zone, always_xy=True).transform(x, y)
        h = SIZE_M / 2
        bounds = transform_bounds(zone, 4326, ux - h, uy - h, ux + h, uy + h, densify_pts=21)
        with rasterio.open(LANDSAT) as ds:
            out[k] = ds.read(window=from_bounds(*bounds, ds.transform), out_shape=(7, PX, PX),
                             resampling=Resampling.average, out_dtype="float32")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="number of points (default 10000)")
    ap.add_argument("--naive-n", type=int, default=None,
                    help="points for the naive loop (default: all n; fewer to save time)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not LANDSAT.exists():
        sys.exit(f"{LANDSAT} not found")
    import rasterio

    from eocausal.data.raster import RasterSource

    when, machine = utc_stamp(), machine_line()
    versions = f"python {platform.python_version()}, rasterio {rasterio.__version__}, GDAL {rasterio.__gdal_version__}"
    load = os.getloadavg()[0]  # other work on the machine slows both loops
    print(f"date: {when}\nmachine: {machine}\n{versions}\nload average (1 min): {load:.2f}")

    g, lon, lat = random_points(args.n, args.seed)
    t0 = time.perf_counter()
    with RasterSource(LANDSAT, chip_size_m=SIZE_M, chip_px=PX) as src:  # opening counts
        ours = src.chips(g)
    t_ours = time.perf_counter() - t0

    m = args.n if args.naive_n is None else min(args.naive_n, args.n)
    t0 = time.perf_counter()
    ref = naive(lon[:m], lat[:m])
    t_naive = time.perf_counter() - t0

    diff = np.abs(ours[:m] - ref)
    rate_ours, rate_naive = args.n / t_ours, m / t_naive
    print(f"RasterSource: {args.n} chips in {t_ours:.2f} s = {rate_ours:,.0f} chips/s")
    print(f"naive loop:   {m} chips in {t_naive:.2f} s = {rate_naive:,.0f} chips/s")
    print(f"speed-up: {rate_ours / rate_naive:.1f}x; same output: max |diff| = {diff.max():.3g}, "
          f"identical chips {np.mean((diff == 0).all(axis=(1, 2, 3))):.1%}")

    header = ("# RasterSource.chips vs naive open-per-point loop\n\n"
              "1 km chips, chip_px=33, average, 7 bands of landsat.tif (EPSG:4326), random points "
              "inside the scene; `python -m benchmarks.raster_chips`.\n\n"
              "| date | machine | load (1 min) | n | RasterSource chips/s | naive chips/s (n) | speed-up "
              "| max abs diff | versions |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    row = (f"| {when} | {machine} | {load:.2f} | {args.n} | {rate_ours:,.0f} | {rate_naive:,.0f} ({m}) | "
           f"{rate_ours / rate_naive:.1f}x | {diff.max():.3g} | {versions} |\n")
    append_text(RESULTS, header, row)
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
