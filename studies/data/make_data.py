"""Write the small data files of the example studies in studies/ (committed; this script is their
provenance, and tests/study/test_docs_studies.py checks that it reproduces them).

* ``scene.tif``: a 3-band uint8 GeoTIFF, 128 x 128 pixels of 30 m in UTM zone 36N (EPSG:32636),
  DEFLATE-compressed. A "built-up" field b in [0, 1], constant on blocks of 8 x 8 pixels, brightens
  every band.
* ``villages.csv``: 300 villages (points, lon/lat in EPSG:4326) on the scene, with a population
  covariate, 64 districts (8 x 8 zones of the scene), a treatment and an outcome. The built-up
  share s of a village's 240 m chip confounds both: P(treated) = expit(-0.3 + 3 (s - 0.5) + 0.5 pop),
  outcome = 1.0 treated + 2 s + 0.5 pop + N(0, 0.5^2). The true effect is 1.0.

  ``treated_on`` is the treatment date of treated villages (2021-06-01), empty for the others.
* ``stac/``: a static STAC catalog (pystac, self-contained, relative hrefs) of the same scene as two
  items, its west and east halves (columns 0-63 and 64-127), acquired 2020-06-15, each with one
  single-band Cloud-Optimized GeoTIFF per band (assets ``B4``, ``B3``, ``B2``, with ``eo:bands``
  common names red, green, blue) and a declared ``raster:bands`` scale of 0.004 (digital number to
  reflectance), as Landsat and Sentinel-2 catalogs publish their bands.
* ``aef/<year>/36N/aef_<year>.tif``: an AlphaEarth-like embedding product over the scene for 2020
  and 2022: 64 int8 bands at 10 m, de-quantised as sign(q) (|q| / 127.5)^2 into unit vectors that
  turn with the built-up field (2022 adds a shift where villages were treated in 2021: a
  post-treatment layer the pre-treatment guard keeps out).

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


STAC_DATE = "2020-06-15"
STAC_SCALE = 0.004
STAC_BANDS = (("B4", "red"), ("B3", "green"), ("B2", "blue"))
AEF_YEARS = (2020, 2022)
AEF_RES = 10.0


def write_stac(out: Path, b: np.ndarray) -> Path:
    """The static STAC catalog of the scene (two items, one COG per band); returns catalog.json."""
    import datetime as dt

    import pystac
    import rasterio
    import rasterio.shutil
    from affine import Affine

    img = scene(b)
    root = out / "stac"
    catalog = pystac.Catalog(id="villages-scene", description="The villages scene as two dated items "
                             "with one COG per band (written by studies/data/make_data.py).")
    when = dt.datetime.fromisoformat(STAC_DATE + "T10:30:00+00:00")
    for name, c0, c1 in (("west", 0, SIZE // 2), ("east", SIZE // 2, SIZE)):
        x0 = X0 + c0 * RES
        bbox_xy = (x0, Y0 - SIZE * RES, X0 + c1 * RES, Y0)
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(
            [bbox_xy[0], bbox_xy[2]], [bbox_xy[1], bbox_xy[3]])
        bbox = [round(min(lon), 7), round(min(lat), 7), round(max(lon), 7), round(max(lat), 7)]
        geom = {"type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]],
                                                      [bbox[0], bbox[3]], [bbox[0], bbox[1]]]]}
        item = pystac.Item(id=f"scene-{name}", geometry=geom, bbox=bbox, datetime=when,
                           properties={"proj:code": CRS, "platform": "simulated"},
                           stac_extensions=["https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                                            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                                            "https://stac-extensions.github.io/projection/v2.0.0/schema.json"])
        folder = root / item.id
        folder.mkdir(parents=True, exist_ok=True)
        for k, (key, common) in enumerate(STAC_BANDS):
            tif = folder / f"{key}.tif"
            profile = dict(driver="GTiff", width=c1 - c0, height=SIZE, count=1, dtype="uint8", crs=CRS,
                           transform=Affine(RES, 0, x0, 0, -RES, Y0))
            with rasterio.MemoryFile() as mem:
                with mem.open(**profile) as ds:
                    ds.write(img[k:k + 1, :, c0:c1])
                with mem.open() as ds:
                    rasterio.shutil.copy(ds, tif, driver="COG", compress="deflate")
            item.add_asset(key, pystac.Asset(
                href=str(tif), media_type=pystac.MediaType.COG, roles=["data"],
                extra_fields={"eo:bands": [{"name": key, "common_name": common}],
                              "raster:bands": [{"data_type": "uint8", "scale": STAC_SCALE, "offset": 0.0}]}))
        catalog.add_item(item)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def aef_layer(b10: np.ndarray, year: int, treated10: np.ndarray) -> np.ndarray:
    """(64, H, W) int8 quantised unit vectors turning with the built-up field (module notes)."""
    rng = np.random.default_rng(SEED + 1)
    base, turn, shift = rng.normal(size=(3, 64))
    v = base[:, None, None] + 2.0 * b10[None] * turn[:, None, None]
    if year > 2021:
        v = v + 1.5 * treated10[None] * shift[:, None, None]
    v /= np.linalg.norm(v, axis=0, keepdims=True)
    q = np.sign(v) * np.sqrt(np.abs(v)) * 127.5
    return np.clip(np.round(q), -127, 127).astype(np.int8)


def write_aef(out: Path, b: np.ndarray, frame: pd.DataFrame) -> list[Path]:
    """The AlphaEarth-like product over the scene, one int8 COG per year in <year>/36N/."""
    import rasterio
    import rasterio.shutil
    from affine import Affine

    k = int(RES / AEF_RES)
    b10 = np.kron(b, np.ones((k, k)))
    treated10 = np.zeros_like(b10)
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(frame["lon"], frame["lat"])
    rows = ((Y0 - np.asarray(y)) / AEF_RES).astype(int)
    cols = ((np.asarray(x) - X0) / AEF_RES).astype(int)
    for r, c, t in zip(rows, cols, frame["treated"]):
        if t:
            treated10[max(r - 12, 0):r + 12, max(c - 12, 0):c + 12] = 1.0
    paths = []
    for year in AEF_YEARS:
        tif = out / "aef" / str(year) / "36N" / f"aef_{year}.tif"
        tif.parent.mkdir(parents=True, exist_ok=True)
        profile = dict(driver="GTiff", width=b10.shape[1], height=b10.shape[0], count=64, dtype="int8", crs=CRS,
                       transform=Affine(AEF_RES, 0, X0, 0, -AEF_RES, Y0), nodata=-128)
        with rasterio.MemoryFile() as mem:
            with mem.open(**profile) as ds:
                ds.write(aef_layer(b10, year, treated10))
                ds.descriptions = tuple(f"A{i:02d}" for i in range(64))
            with mem.open() as ds:
                rasterio.shutil.copy(ds, tif, driver="COG", compress="deflate", level=9, interleave="band",
                                     overviews="NONE")
        paths.append(tif)
    return paths


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
    frame = villages(b, rng)
    frame["treated_on"] = np.where(frame["treated"] == 1, "2021-06-01", "")
    frame.to_csv(csv, index=False)
    write_stac(out, b)
    write_aef(out, b, frame)
    return tif, csv


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    for path in write(ap.parse_args().out):
        print(f"wrote {path}")
