"""The study file: a TOML document naming units, imagery, encoder, estimands and report.

Parsing never executes anything from the file. Validation is complete before any work: an
unknown key names itself and the valid keys of its section, a wrong type names the expected
type, and paths are resolved against the study file's folder.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eocausal.errors import InputError, MissingFileError, StudyFileError
from eocausal.options import EstimateOptions, toml_schema

_REQ = object()  # marker: the key is required

# section -> key -> (accepted types, default, allowed values or None)
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any, tuple | None]]] = {
    "study": {
        "name": ((str,), _REQ, None),
        "seed": ((int,), 0, None),
        "description": ((str,), "", None),
    },
    "units": {
        "format": ((str,), _REQ, ("demo", "csv", "vector", "causalimages-rdata")),
        "path": ((str,), None, None),
        "id": ((str,), None, None),
        "treatment": ((str,), None, None),
        "outcome": ((str,), None, None),
        "covariates": ((list,), None, None),
        "clusters": ((str,), None, None),
        "image_key": ((str,), None, None),
        "lon": ((str,), None, None),
        "lat": ((str,), None, None),
        "crs": ((str,), None, None),
        "covariate_set": ((str,), "pretreatment", ("pretreatment", "tutorial", "all")),
    },
    "simulate": {
        "n_images": ((int,), 500, None),
        "units_per_image": ((int,), 2, None),
        "px": ((int,), 32, None),
        "tau": ((int, float), 1.0, None),
    },
    "imagery": {
        "format": ((str,), "demo", ("demo", "npz", "causalimages-rdata", "causalimages-tfrecord", "raster")),
        "path": ((str, list), None, None),
        "chip_px": ((int,), None, None),
        "chip_size_m": ((int, float), None, None),
        "bands": ((list,), None, None),
        # chip validity (format = "raster"): see eocausal.data.raster
        "min_valid": ((int, float), 0.5, None),
        "on_invalid": ((str,), "drop", ("drop", "keep", "fail")),
        "nodata": ((int, float), None, None),
        "valid": ((str,), "all-bands", ("all-bands", "any-band")),
    },
    "encoder": {
        "kind": ((str,), "random-features", ("random-features",)),
        "n_features": ((int,), 1024, None),
        "kernel": ((int,), 3, None),
        "bias": ((int, float), 0.0, None),
        "seed": ((int,), 0, None),
        "device": ((str,), "auto", None),
        "batch_size": ((int,), 256, None),
    },
    # derived from the options object: keys, types, defaults and allowed values (seed is [study] seed)
    "estimate": toml_schema(),
    "report": {
        "formats": ((list,), ["html", "md", "tex"], None),
        "title": ((str,), None, None),
    },
}
REQUIRED_SECTIONS = ("study", "units")


@dataclass(frozen=True)
class Study:
    """A validated study file: one plain dict per section, defaults filled in."""

    sections: dict[str, dict[str, Any]]
    path: Path | None = None
    sha256: str = ""
    base_dir: Path = field(default_factory=Path.cwd)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.sections[section]

    @property
    def name(self) -> str:
        return self.sections["study"]["name"]

    @property
    def seed(self) -> int:
        return self.sections["study"]["seed"]

    def resolve(self, p: str) -> Path:
        """A path from the study file, relative to the file's folder."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", bool: "true/false"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def validate(doc: dict, *, path: Path | None = None, sha256: str = "", base_dir: Path | None = None) -> Study:
    """Check a parsed study document against :data:`SCHEMA` and fill in defaults."""
    where = f"study file {path}" if path else "study"
    unknown = [s for s in doc if s not in SCHEMA]
    if unknown:
        raise StudyFileError(f"{where}: unknown section [{unknown[0]}]; valid sections are {sorted(SCHEMA)}")
    for s in REQUIRED_SECTIONS:
        if s not in doc:
            raise StudyFileError(f"{where}: missing section [{s}]")
    out: dict[str, dict[str, Any]] = {}
    for section, spec in SCHEMA.items():
        given = doc.get(section, {})
        if not isinstance(given, dict):
            raise StudyFileError(f"{where}: [{section}] must be a table of keys")
        for key in given:
            if key not in spec:
                raise StudyFileError(
                    f"{where}: unknown key {key!r} in [{section}]; valid keys are {sorted(spec)}"
                )
        vals = {}
        for key, (types, default, choices) in spec.items():
            if key not in given:
                if default is _REQ:
                    raise StudyFileError(f"{where}: [{section}] needs the key {key!r}")
                vals[key] = list(default) if isinstance(default, list) else default
                continue
            v = given[key]
            ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
            if float in types and isinstance(v, int) and not isinstance(v, bool):
                ok, v = True, float(v) if int not in types else v
            if not ok:
                raise StudyFileError(
                    f"{where}: [{section}] {key} = {v!r} should be {_type_names(types)}"
                )
            if isinstance(v, list):
                elem = (str, int) if (section, key) == ("imagery", "bands") else (str,)
                bad = [x for x in v if not isinstance(x, elem) or isinstance(x, bool)]
                if bad:
                    raise StudyFileError(
                        f"{where}: [{section}] {key} = {v!r} should hold only "
                        f"{' or '.join(_type_names((t,)).split(' ', 1)[1] + 's' for t in elem)}; "
                        f"{bad[0]!r} is not"
                    )
            if choices is not None and isinstance(v, list):
                bad = [x for x in v if x not in choices]
                if bad:
                    raise StudyFileError(f"{where}: [{section}] {key} = {v!r}: {bad} not among {list(choices)}")
            elif choices is not None and v not in choices:
                raise StudyFileError(
                    f"{where}: [{section}] {key} = {v!r} is not one of {list(choices)}"
                )
            vals[key] = v
        out[section] = vals
    _check_ranges(out, where)
    try:  # the options object checks the [estimate] values and their combinations
        estimate_options(out)
    except InputError as exc:
        raise StudyFileError(f"{where}: [estimate] {exc}") from None
    u = out["units"]
    if u["format"] != "demo":
        for key in ("path",):
            if u[key] is None:
                raise StudyFileError(f"{where}: [units] format = {u['format']!r} needs the key {key!r}")
    if u["format"] in ("csv", "vector"):
        for key in ("treatment", "outcome"):
            if u[key] is None:
                raise StudyFileError(f"{where}: [units] needs the key {key!r} for format {u['format']!r}")
    if out["units"]["format"] == "demo" and out["imagery"]["format"] != "demo":
        raise StudyFileError(f"{where}: [imagery] format must be 'demo' when [units] format is 'demo'")
    if "simulate" in doc and u["format"] != "demo":
        raise StudyFileError(f"{where}: [simulate] applies only to [units] format = 'demo'")
    fmts = out["report"]["formats"]
    bad = [f for f in fmts if f not in ("html", "md", "tex")]
    if bad:
        raise StudyFileError(f"{where}: [report] formats {bad} not among ['html', 'md', 'tex']")
    return Study(sections=out, path=path, sha256=sha256, base_dir=base_dir or (path.parent if path else Path.cwd()))


MAX_FEATURES = 1 << 16  # 65,536 embedding columns: 0.5 GB of float64 per 1,000 units
MAX_CHIP_PX = 4096

_RANGES = {  # (section, key): (test, description)
    ("study", "seed"): (lambda v: v >= 0, "a non-negative integer"),
    ("simulate", "n_images"): (lambda v: v >= 10, "at least 10"),
    ("simulate", "units_per_image"): (lambda v: v >= 1, "at least 1"),
    ("simulate", "px"): (lambda v: v >= 8, "at least 8"),
    ("imagery", "chip_px"): (lambda v: v is None or 1 <= v <= MAX_CHIP_PX, f"between 1 and {MAX_CHIP_PX}"),
    ("imagery", "chip_size_m"): (lambda v: v is None or 0 < v < float("inf"), "positive and finite"),
    ("imagery", "min_valid"): (lambda v: 0 <= v <= 1, "a fraction in [0, 1] (0.5: at least half of a chip is imagery)"),
    ("imagery", "nodata"): (lambda v: v is None or math.isfinite(v), "a finite number (pixels equal to it are invalid)"),
    ("encoder", "n_features"): (lambda v: 2 <= v <= MAX_FEATURES and v % 2 == 0,
                                f"an even number from 2 to {MAX_FEATURES} (embedding columns; 1024 is typical)"),
    ("encoder", "kernel"): (lambda v: 1 <= v <= 64, "between 1 and 64 (pixels)"),
    ("encoder", "batch_size"): (lambda v: 1 <= v <= 1 << 16, f"between 1 and {1 << 16}"),
    ("encoder", "seed"): (lambda v: v >= 0, "a non-negative integer"),
}


def _check_ranges(out: dict, where: str) -> None:
    for (section, key), (ok, what) in _RANGES.items():
        v = out[section][key]
        if not ok(v):
            raise StudyFileError(f"{where}: [{section}] {key} = {v!r} must be {what}")


def estimate_options(sections: dict[str, dict[str, Any]]) -> EstimateOptions:
    """The :class:`~eocausal.options.EstimateOptions` of a study's [estimate] section and [study] seed."""
    return EstimateOptions(seed=sections["study"]["seed"], **sections["estimate"])


def load_study(path: str | Path) -> Study:
    """Read and validate a study file (TOML). Nothing in the file is executed."""
    p = Path(path)
    if p.is_dir():
        raise StudyFileError(f"study file {str(p)!r} is a folder; pass the path of a .toml file")
    if not p.is_file():
        raise MissingFileError(f"study file {str(p)!r} does not exist")
    raw = p.read_bytes()
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyFileError(f"study file {p}: not valid TOML ({exc})") from exc
    return validate(doc, path=p.resolve(), sha256=hashlib.sha256(raw).hexdigest(), base_dir=p.resolve().parent)
