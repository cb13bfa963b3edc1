"""Write the tiny GeoTIFFs the raster tests read.

Usage: ``python tests/data/rasters.py OUTDIR`` (the tests call :func:`write_fixtures` on a
temporary folder). Every raster lies on one grid in UTM zone 12N (EPSG:32612), 10 m pixels,
with its upper-left corner at (ORIGIN_X, ORIGIN_Y) near the zone's central meridian, so that a
chip's UTM square is the same square in the raster CRS.

Files written (name -> content):

- ``full.tif``: 64 x 64, 3 float32 bands of seeded random values in [0, 1000).
- ``tile_left.tif``, ``tile_right.tif``: columns 0-31 and 32-63 of ``full.tif``.
- ``tile_a.tif``: columns 0-39 of ``full.tif``, nodata -9999 on rows 0-9, columns 30-39.
- ``tile_b.tif``: columns 24-63 of ``full.tif`` plus 1000 (overlaps ``tile_a`` on 24-39).
- ``no_crs.tif``: like ``full.tif`` without a CRS.
- ``two_bands.tif``: 2 bands on the same grid.
- ``corrupt.tif``: bytes that are not a raster.
- ``truncated.tif``: the first 1000 bytes of ``full.tif`` (opens, but reading fails).
- ``described.tif``: 4 uint16 bands described B2, B3, B4, B8 (band k holds k * 1000 + col).
- ``date_2020-03-01.tif``, ``date_2020-01-01.tif``, ``date_2020-02-01.tif``: ``full.tif`` plus
  10000 * (month - 1).
- ``embedding.tif``: 8 float32 bands (no descriptions), nodata NaN on rows 0-7.
- ``embedding_named.tif``: 2 bands described ``dim_a`` and ``dim_b``.
- ``overview_trap.tif``: 64 x 64 ones with 2x/4x overviews, then the full-resolution pixels
  overwritten with 2, so a read that uses the overviews returns 1 and one that does not, 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CRS = "EPSG:32612"
ORIGIN_X, ORIGIN_Y = 500_000.0, 4_500_000.0
RES = 10.0
SIZE = 64


def _write(path: Path, data: np.ndarray, *, col0: int = 0, crs=CRS, nodata=None,
           descriptions=None, res: float = RES) -> Path:
    import rasterio
    from affine import Affine

    transform = Affine(res, 0.0, ORIGIN_X + col0 * RES, 0.0, -res, ORIGIN_Y)
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype, transform=transform, nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for k, d in enumerate(descriptions or (), 1):
            ds.set_band_description(k, d)
    return path


def full_array() -> np.ndarray:
    """The (3, 64, 64) float32 values of ``full.tif``."""
    return np.random.default_rng(20260101).uniform(0, 1000, (3, SIZE, SIZE)).astype(np.float32)


def write_fixtures(folder) -> dict[str, Path]:
    """Write every fixture into ``folder``; return {name without .tif: path}."""
    import warnings

    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    full = full_array()
    out["full"] = _write(folder / "full.tif", full)
    out["tile_left"] = _write(folder / "tile_left.tif", full[:, :, :32].copy())
    out["tile_right"] = _write(folder / "tile_right.tif", full[:, :, 32:].copy(), col0=32)
    a = full[:, :, :40].copy()
    a[:, :10, 30:40] = -9999
    out["tile_a"] = _write(folder / "tile_a.tif", a, nodata=-9999)
    out["tile_b"] = _write(folder / "tile_b.tif", full[:, :, 24:] + 1000, col0=24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        out["no_crs"] = _write(folder / "no_crs.tif", full, crs=None)
    out["two_bands"] = _write(folder / "two_bands.tif", full[:2].copy())
    corrupt = folder / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + np.random.default_rng(1).bytes(4000))
    out["corrupt"] = corrupt
    truncated = folder / "truncated.tif"  # opens (header intact) but its pixels cannot be read
    truncated.write_bytes(Path(out["full"]).read_bytes()[:1000])
    out["truncated"] = truncated
    cols = np.arange(SIZE, dtype=np.uint16)[None, None, :]
    described = (np.arange(1, 5, dtype=np.uint16)[:, None, None] * 1000 + cols).repeat(SIZE, axis=1)
    out["described"] = _write(folder / "described.tif", described, descriptions=["B2", "B3", "B4", "B8"])
    for month in (3, 1, 2):
        out[f"date_2020-0{month}-01"] = _write(folder / f"date_2020-0{month}-01.tif",
                                               full + 10000 * (month - 1))
    emb = np.random.default_rng(7).normal(size=(8, SIZE, SIZE)).astype(np.float32)
    emb[:, :8, :] = np.nan
    out["embedding"] = _write(folder / "embedding.tif", emb, nodata=float("nan"))
    out["embedding_named"] = _write(folder / "embedding_named.tif", emb[:2].copy(),
                                    descriptions=["dim_a", "dim_b"])
    trap = folder / "overview_trap.tif"
    _write(trap, np.ones((1, SIZE, SIZE), np.float32))
    with rasterio.open(trap, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.nearest)
    with rasterio.open(trap, "r+") as ds:
        ds.write(np.full((1, SIZE, SIZE), 2, np.float32))
    out["overview_trap"] = trap
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/rasters.py OUTDIR")
    for name, path in write_fixtures(sys.argv[1]).items():
        sys.stdout.write(f"{name}: {path}\n")
