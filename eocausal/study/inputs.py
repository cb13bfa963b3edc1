"""Turn a validated study's [units], [simulate] and [imagery] sections into units and a source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from eocausal.data.units import Units
from eocausal.errors import DataFileError, MissingFileError, StudyFileError
from eocausal.study.schema import Study


@dataclass(frozen=True)
class Inputs:
    """What a study runs on."""

    units: Units
    source: object
    true_effect: float | None = None
    data_files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def _existing(study: Study, p: str) -> Path:
    path = study.resolve(p)
    if not path.exists():
        raise MissingFileError(f"{path}: file named in the study file does not exist")
    if path.is_dir():
        raise DataFileError(f"{path}: the study file names a folder where a file is expected; "
                            "name the file itself (for several rasters, a list of files)")
    return path


def load_inputs(study: Study) -> Inputs:
    """Read the units and imagery a study names (nothing in them is executed)."""
    u, im = study["units"], study["imagery"]
    fmt = u["format"]
    if fmt == "demo":
        from eocausal.data.simulate import simulate_demo

        sim = study["simulate"]
        d = simulate_demo(n_images=sim["n_images"], units_per_image=sim["units_per_image"],
                          px=sim["px"], tau=float(sim["tau"]), seed=study.seed)
        return Inputs(units=d.units, source=d.source, true_effect=d.true_effect)

    files: list[Path] = []
    if fmt == "causalimages-rdata":
        from eocausal.data.causalimages import read_causalimages

        path = _existing(study, u["path"])
        files.append(path)
        cov = u["covariates"] if u["covariates"] is not None else u["covariate_set"]
        data = read_causalimages(path, covariates=cov)
        units, source, notes = data.units, data.images, data.notes
    else:
        path = _existing(study, u["path"])
        files.append(path)
        frame = _read_table(path, fmt)
        units = Units.from_frame(frame, id=u["id"], treatment=u["treatment"], outcome=u["outcome"],
                                 covariates=u["covariates"] or (), clusters=u["clusters"],
                                 image_key=u["image_key"], lon=u["lon"], lat=u["lat"], crs=u["crs"])
        source, notes = None, ()

    ifmt = im["format"]
    if ifmt == "npz":
        source = _read_npz(_existing(study, im["path"]))
        files.append(study.resolve(im["path"]))
    elif ifmt == "causalimages-tfrecord":
        from eocausal.data.causalimages import read_tfrecord

        p = _existing(study, im["path"])
        files.append(p)
        source = read_tfrecord(p).to_source(key_type=int)
    elif ifmt == "raster":
        from eocausal.data.raster import RasterSource

        paths = im["path"] if isinstance(im["path"], list) else [im["path"]]
        resolved = [_existing(study, p) for p in paths]
        files += resolved
        if im["chip_size_m"] is None or im["chip_px"] is None:
            raise StudyFileError("[imagery] format = 'raster' needs chip_size_m and chip_px")
        source = RasterSource(resolved, bands=im["bands"], size_m=im["chip_size_m"], px=im["chip_px"],
                              nodata=im["nodata"], min_valid=im["min_valid"], on_invalid=im["on_invalid"],
                              valid=im["valid"])
    elif ifmt == "demo":
        raise StudyFileError("[imagery] format = 'demo' needs [units] format = 'demo'")
    if source is None:
        raise StudyFileError(f"[imagery]: no imagery for units of format {fmt!r}; set [imagery] format and path")
    return Inputs(units=units, source=source, data_files=tuple(files), notes=tuple(notes))


def _read_table(path: Path, fmt: str) -> pd.DataFrame:
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        import geopandas as gpd

        if path.suffix.lower() in (".parquet", ".geoparquet"):
            return gpd.read_parquet(path)
        return gpd.read_file(path)
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{path}: cannot read units as {fmt} ({exc})") from exc


def _read_npz(path: Path):
    from eocausal.data.arrays import ArraySource

    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise DataFileError(f"{path}: an .npz image file needs an array named 'images' (has {z.files})")
            images = z["images"]
            keys = z["keys"] if "keys" in z.files else None
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{path}: cannot read images ({exc})") from exc
    return ArraySource(images, keys=keys)
