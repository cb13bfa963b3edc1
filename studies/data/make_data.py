"""Write the small data files of the example studies in studies/ (committed; this script is their
provenance, and tests/study/test_docs_studies.py checks that it reproduces them).

* ``scene.tif``: a 3-band uint8 GeoTIFF, 128 x 128 pixels of 30 m in UTM zone 36N (EPSG:32636),
  DEFLATE-compressed. A "built-up" field b in [0, 1], constant on blocks of 8 x 8 pixels, brightens
  every band.
* ``villages.csv``: 300 villages (points, lon/lat in EPSG:4326) on the scene, with a population
  covariate, 64 districts (8 x 8 zones of the scene), a treatment and an outcome. The built-up
  share s of a village's 240 m chip confounds both: P(treated) = expit(-0.3 + 3 (s - 0.5) + 0.5 pop),
  outcome = 1.0 treated + 2 s + 0.5 pop + N(0, 0.5^2). The true effect is 1.0.

Run: ``python studies/data/make_data.py`` (writes beside this file) or ``--out DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20260101
CRS = "EPSG:32636"
X0, Y0, RES, SIZE, BLOCK = 500_000.0, 100_000.0, 30.0, 128, 8
CHIP_PX = 8  # the studies' chip: 8 pixels of 30 m = 240 m
N_VILLAGES = 300
TRUE_EFFECT = 1.0


def built_up(rng: np.random.Generator) -> np.ndarray:
    """(SIZE, SIZE) field in [0, 1], constant on BLOCK x BLOCK blocks."""
    coarse = rng.uniform(0, 1, (SIZE // BLOCK, SIZE // BLOCK))
    return np.kron(coarse, np.ones((BLOCK, BLOCK)))


def scene(b: np.ndarray) -> np.ndarray:
    """(3, SIZE, SIZE) uint8 bands: red, green, blue brighten with the built-up field."""
    return np.round(np.stack([60 + 150 * b, 80 + 100 * b, 50 + 120 * b])).astype(np.uint8)


def villages(b: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    from pyproj import Transformer

    half = CHIP_PX // 2
    col = rng.uniform(half, SIZE - half, N_VILLAGES)
    row = rng.uniform(half, SIZE - half, N_VILLAGES)
    c0, r0 = np.round(col).astype(int) - half, np.round(row).astype(int) - half
    share = np.array([b[r:r + CHIP_PX, c:c + CHIP_PX].mean() for r, c in zip(r0, c0)])
    pop = rng.normal(0, 1, N_VILLAGES)
    p = 1 / (1 + np.exp(-(-0.3 + 3 * (share - 0.5) + 0.5 * pop)))
    treated = rng.binomial(1, p)
    outcome = TRUE_EFFECT * treated + 2 * share + 0.5 * pop + rng.normal(0, 0.5, N_VILLAGES)
    x, y = X0 + col * RES, Y0 - row * RES
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(x, y)
    district = (row // (SIZE / 8)).astype(int) * 8 + (col // (SIZE / 8)).astype(int) + 1
    return pd.DataFrame({"village": np.arange(1, N_VILLAGES + 1), "lon": np.round(lon, 7),
                         "lat": np.round(lat, 7), "district": [f"D{d:02d}" for d in district],
                         "pop": np.round(pop, 4), "treated": treated, "consumption": np.round(outcome, 4)})


def write(out: Path) -> tuple[Path, Path]:
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(SEED)
    b = built_up(rng)
    out.mkdir(parents=True, exist_ok=True)
    tif, csv = out / "scene.tif", out / "villages.csv"
    with rasterio.open(tif, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8", crs=CRS,
                       transform=Affine(RES, 0, X0, 0, -RES, Y0), compress="deflate", predictor=2) as ds:
        ds.write(scene(b))
        ds.descriptions = ("red", "green", "blue")
    villages(b, rng).to_csv(csv, index=False)
    return tif, csv


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    for path in write(ap.parse_args().out):
        print(f"wrote {path}")
