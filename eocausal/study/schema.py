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
        # default: the [units] format's own imagery (see IMAGERY_FOR_UNITS)
        "format": ((str,), None, ("demo", "npz", "causalimages-rdata", "causalimages-tfrecord", "raster",
                                  "stac", "embedding-product", "chip-table")),
        "path": ((str, list), None, None),
        "chip_px": ((int,), None, None),
        "chip_size_m": ((int, float), None, None),
        "bands": ((list,), None, None),
        # chip validity (format = "raster" / "stac"): see eocausal.data.raster
        "min_valid": ((int, float), 0.5, None),
        "on_invalid": ((str,), "drop", ("drop", "keep", "fail")),
        "nodata": ((int, float), None, None),
        "valid": ((str,), "all-bands", ("all-bands", "any-band")),
        # precomputed embeddings (format = "embedding-product" / "chip-table"): see
        # eocausal.data.embedding_products and eocausal.data.chip_tables
        "product": ((str,), "alphaearth", None),
        "year": ((int,), None, None),
        "treatment_date": ((str,), None, None),
        "allow_post_treatment": ((bool,), False, None),
        "per_unit_year": ((bool,), False, None),
        "join": ((str,), "contains", ("contains", "nearest")),
        "max_distance_m": ((int, float), None, None),
        "embedding": ((str,), None, None),
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
        "preferred": ((str,), "auto", None),
        "pdf": ((bool,), False, None),
    },
}
REQUIRED_SECTIONS = ("study", "units")

UNITS_FORMATS = SCHEMA["units"]["format"][2]
IMAGERY_FORMATS = SCHEMA["imagery"]["format"][2]

#: [units] format -> the [imagery] formats it combines with; the first is the default when the
#: study has no [imagery] format (csv and vector units have no imagery of their own: required)
IMAGERY_FOR_UNITS: dict[str, tuple[str, ...]] = {
    "demo": ("demo",),
    "causalimages-rdata": ("causalimages-rdata", "npz", "raster", "causalimages-tfrecord"),
    "csv": ("raster", "npz", "causalimages-tfrecord", "stac", "embedding-product", "chip-table"),
    "vector": ("raster", "npz", "causalimages-tfrecord", "stac", "embedding-product", "chip-table"),
}
#: [imagery] formats that are embeddings already: no encoder runs
PRECOMPUTED = ("embedding-product", "chip-table")
_OWN_IMAGERY = ("demo", "causalimages-rdata")  # units formats that carry their own images

#: (section, key) -> the formats (of that section's ``format``) the key applies to; given with
#: another format, the key is refused rather than ignored
APPLIES: dict[tuple[str, str], tuple[str, ...]] = {
    **{("units", k): ("csv", "vector", "causalimages-rdata") for k in ("path", "covariates")},
    **{("units", k): ("csv", "vector") for k in ("id", "treatment", "outcome", "clusters", "image_key")},
    **{("units", k): ("csv",) for k in ("lon", "lat", "crs")},
    ("units", "covariate_set"): ("causalimages-rdata",),
    ("imagery", "path"): ("npz", "raster", "causalimages-tfrecord", "stac", "embedding-product", "chip-table"),
    **{("imagery", k): ("raster", "stac") for k in ("chip_px", "chip_size_m", "bands", "min_valid",
                                              "on_invalid", "nodata", "valid")},
    **{("imagery", k): ("embedding-product",) for k in ("product", "year", "per_unit_year")},
    **{("imagery", k): ("embedding-product", "stac") for k in ("treatment_date", "allow_post_treatment")},
    **{("imagery", k): ("chip-table",) for k in ("join", "max_distance_m", "embedding")},
}

#: (section, key) -> the formats that require it (beyond the keys marked required in SCHEMA)
REQUIRED_FOR: dict[tuple[str, str], tuple[str, ...]] = {
    ("units", "path"): ("csv", "vector", "causalimages-rdata"),
    ("units", "treatment"): ("csv", "vector"),
    ("units", "outcome"): ("csv", "vector"),
    ("imagery", "path"): ("npz", "raster", "causalimages-tfrecord", "stac", "embedding-product", "chip-table"),
    ("imagery", "chip_px"): ("raster", "stac"),
    ("imagery", "bands"): ("stac",),
}

#: one line of meaning per key; the [estimate] lines come from eocausal.options.field_docs()
DOCS: dict[str, dict[str, str]] = {
    "study": {
        "name": "name of the study, shown in the report and the manifest",
        "seed": "seed of everything random: simulation, folds, models (the encoder has its own)",
        "description": "a paragraph for the report's design section",
    },
    "units": {
        "format": "where the units come from: demo (simulated), csv, vector (GeoPackage, GeoJSON, "
                  "Shapefile, GeoParquet) or causalimages-rdata (the causalimages tutorial workspace)",
        "path": "the units file, relative to the study file's folder",
        "id": "column of unique unit ids (default: the row number)",
        "treatment": "column of the binary treatment (0/1 or true/false)",
        "outcome": "column of the numeric outcome",
        "covariates": "columns of the pre-treatment tabular confounders; for causalimages-rdata, names "
                      "of its X columns (xA, xC, xB, ...), replacing covariate_set",
        "clusters": "column of cluster labels: folds and standard errors keep a cluster together",
        "image_key": "column naming each unit's image in the imagery (units may share one); default: "
                     "the unit id",
        "lon": "column of longitudes (or x in crs) of point units",
        "lat": "column of latitudes (or y in crs) of point units",
        "crs": "CRS of lon and lat, e.g. EPSG:32636 (default EPSG:4326)",
        "covariate_set": "which X columns of the causalimages workspace are covariates: pretreatment "
                         "(xA, xC, xB), tutorial (the R tutorial's X[, -1]) or all",
    },
    "simulate": {
        "n_images": "simulated images",
        "units_per_image": "units sharing each image",
        "px": "side of a simulated image in pixels",
        "tau": "true treatment effect",
    },
    "imagery": {
        "format": "where the images come from: demo (simulated), npz (arrays images and keys), "
                  "causalimages-rdata (the workspace's images), causalimages-tfrecord, raster "
                  "(GeoTIFF/COG chips around each unit), stac (chips from the items of a static STAC "
                  "catalog or item collection), or embeddings already computed: "
                  "embedding-product (a per-pixel product such as AlphaEarth, read at each unit) or "
                  "chip-table (a GeoParquet table of chip embeddings); default: the units' own images "
                  "(demo, causalimages-rdata), required for csv and vector units",
        "path": "the image file, relative to the study file's folder; for raster, a file or a list "
                "of files read as one mosaic; for stac, the catalog.json, collection.json or item "
                "collection (the items are one mosaic; their dates are checked against the treatment); "
                "for embedding-product, the product's files or folders (their "
                "years from the paths, as <year>/<zone>/); for chip-table, the GeoParquet file",
        "chip_px": "chip side in pixels",
        "chip_size_m": "chip side in metres, a square in the unit's UTM zone; required for point units "
                       "(polygon units: their bounding square when not given)",
        "bands": "bands to read, in order: 1-based numbers or band descriptions (default: all); for stac "
                 "(required), asset keys or band names / common names (such as red, nir)",
        "min_valid": "least share of valid pixels a chip needs (0.5: at least half of it is imagery)",
        "on_invalid": "units whose chip has too few valid pixels: drop (counted in the report), "
                      "keep (zero-filled) or fail",
        "nodata": "pixel value that marks missing data, replacing the files' own nodata and masks",
        "valid": "when a pixel is valid: all-bands (every band holds data) or any-band",
        "product": "embedding-product: the product's facts: alphaearth (AlphaEarth Foundations annual 64-d "
                   "10 m embeddings, int8 COGs per UTM zone and year)",
        "year": "embedding-product: the layer (year) to read for every unit; without it, the latest year "
                "before the earliest treatment_date (one layer for treated and control units alike)",
        "per_unit_year": "embedding-product: staggered adoption: each treated unit reads the latest layer "
                         "before its own treatment_date (units never treated: the common layer)",
        "treatment_date": "embedding-product, stac: [units] column of each unit's treatment date (empty for "
                          "units never treated); a product layer of the treatment's year or later, or a STAC item "
                          "dated on or after it, is refused",
        "allow_post_treatment": "embedding-product, stac: keep post-treatment imagery (layers of a unit's "
                                "treatment year or later; items dated on or after its treatment); the effect "
                                "table's notes say so",
        "join": "chip-table: a unit takes the chip that contains it, or the nearest within max_distance_m",
        "max_distance_m": "chip-table: largest distance in metres from a unit to its chip (join = nearest)",
        "embedding": "chip-table: the GeoParquet column holding each chip's embedding array (default: the "
                     "only array column)",
    },
    "encoder": {
        "kind": "the image encoder: random-features (MOSAIKS random convolutional features)",
        "n_features": "embedding columns (even)",
        "kernel": "side of the random patches in pixels",
        "bias": "ReLU threshold b of the features ReLU(f * x - b) and ReLU(-f * x - b)",
        "seed": "seed of the random patches",
        "device": "auto (a GPU when there is one), cpu, cuda or mps",
        "batch_size": "chips embedded at a time",
    },
    "report": {
        "formats": "outputs besides effects.csv and results.json: html (report.html), md and tex "
                   "(tables/effects.md, tables/effects.tex)",
        "title": "title of the report (default: 'eocausal: ' and the study name)",
        "preferred": "the estimate the report's headline shows: METHOD/ADJUSTMENT (e.g. aipw/tabular+image), "
                     "METHOD (its most adjusted row), or auto: the most adjusted AIPW row, else the most adjusted "
                     "Hajek IPW row (most adjusted: tabular+image, image, tabular, none)",
        "pdf": "also write report.pdf, the same content as report.html (needs the typst package: "
               "pip install 'eocausal[pdf]')",
    },
}


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
    _check_formats(doc, out, where)
    fmts = out["report"]["formats"]
    bad = [f for f in fmts if f not in ("html", "md", "tex")]
    if bad:
        raise StudyFileError(f"{where}: [report] formats {bad} not among ['html', 'md', 'tex']")
    _check_preferred(out, where)
    return Study(sections=out, path=path, sha256=sha256, base_dir=base_dir or (path.parent if path else Path.cwd()))


def _check_preferred(out: dict, where: str) -> None:
    """[report] preferred names a method the study estimates, and an adjustment it estimates."""
    from eocausal.report.headline import parse_preferred

    text = out["report"]["preferred"]
    try:
        method, adjustment = parse_preferred(text)
    except InputError as exc:
        raise StudyFileError(f"{where}: [report] {exc}") from None
    methods, adjustments = out["estimate"].get("methods"), out["estimate"].get("adjustments")
    if method is not None and methods is not None and method not in methods:
        raise StudyFileError(f"{where}: [report] preferred = {text!r}: method {method!r} is not among [estimate] "
                             f"methods {list(methods)}; name one of those, or add it to methods")
    if adjustment not in (None, "none") and adjustments is not None and adjustment not in adjustments:
        raise StudyFileError(f"{where}: [report] preferred = {text!r}: adjustment {adjustment!r} is not among "
                             f"[estimate] adjustments {list(adjustments)}; name one of those, or add it")
    if method not in (None, "dim") and adjustment == "none":
        raise StudyFileError(f"{where}: [report] preferred = {text!r}: only the difference in means (dim) has the "
                             "adjustment 'none'")


def _formats(fmts) -> str:
    return " or ".join(repr(f) for f in fmts)


def _check_keys_of_format(doc: dict, out: dict, section: str, fmt: str, where: str) -> None:
    """Keys of ``section`` given with a format they do not apply to, and keys ``fmt`` requires."""
    for (sec, key), fmts in APPLIES.items():
        if sec == section and key in doc.get(section, {}) and fmt not in fmts:
            raise StudyFileError(
                f"{where}: [{section}] {key} applies only to [{section}] format = {_formats(fmts)}, not "
                f"{fmt!r}; remove the key"
            )
    for (sec, key), fmts in REQUIRED_FOR.items():
        if sec == section and fmt in fmts and out[section][key] is None:
            raise StudyFileError(
                f"{where}: [{section}] format = {fmt!r} needs the key {key!r} ({DOCS[section][key]})"
            )


def _check_formats(doc: dict, out: dict, where: str) -> None:
    """The formats and the keys that go with them: which [imagery] the [units] take, which keys a
    format requires, and keys given with a format they do not apply to (refused, not ignored).
    Fills in the [imagery] format a study leaves out (the units' own images)."""
    ufmt = out["units"]["format"]
    _check_keys_of_format(doc, out, "units", ufmt, where)
    if "format" not in doc.get("imagery", {}):
        if ufmt not in _OWN_IMAGERY:
            raise StudyFileError(
                f"{where}: [units] format = {ufmt!r} has no images of its own; add an [imagery] section "
                "with format = 'raster' (GeoTIFF/COG files: path, chip_size_m, chip_px), 'npz' (path of "
                "a file of arrays 'images' and 'keys') or 'causalimages-tfrecord' (path)"
            )
        out["imagery"]["format"] = ufmt
    ifmt = out["imagery"]["format"]
    if ifmt not in IMAGERY_FOR_UNITS[ufmt]:
        raise StudyFileError(
            f"{where}: [imagery] format = {ifmt!r} does not go with [units] format = {ufmt!r}; use "
            f"{_formats(IMAGERY_FOR_UNITS[ufmt])}"
            + (" (or leave [imagery] format out)" if ufmt in _OWN_IMAGERY else "")
        )
    _check_keys_of_format(doc, out, "imagery", ifmt, where)
    u, im = out["units"], out["imagery"]
    if (u["lon"] is None) != (u["lat"] is None):
        have, need = ("lon", "lat") if u["lat"] is None else ("lat", "lon")
        raise StudyFileError(f"{where}: [units] {have} is given without {need}; name both columns")
    if u["crs"] is not None and u["lon"] is None:
        raise StudyFileError(f"{where}: [units] crs is the CRS of lon and lat; name those columns or remove crs")
    if isinstance(im["path"], list) and ifmt not in ("raster", "embedding-product"):
        raise StudyFileError(f"{where}: [imagery] path: a list of files is read as one raster mosaic (raster) or "
                             f"as a product's files (embedding-product); format = {ifmt!r} takes one file")
    if ifmt in ("raster", "stac"):
        if ufmt == "csv" and u["lon"] is None:
            raise StudyFileError(
                f"{where}: [imagery] format = {ifmt!r} cuts chips around each unit's location; name the "
                "coordinate columns in [units] with lon and lat (and crs unless they are EPSG:4326)"
            )
        if ufmt in ("csv", "causalimages-rdata") and im["chip_size_m"] is None:
            raise StudyFileError(
                f"{where}: [imagery] format = {ifmt!r} needs chip_size_m for point units "
                f"({DOCS['imagery']['chip_size_m']})"
            )
    if ifmt == "stac" and not all(isinstance(b, str) for b in im["bands"]):
        raise StudyFileError(f"{where}: [imagery] bands = {im['bands']!r}: a STAC catalog's bands are named "
                             "(asset keys or band names such as 'red', 'nir'), not numbered")
    if "simulate" in doc and ufmt != "demo":
        raise StudyFileError(f"{where}: [simulate] applies only to [units] format = 'demo'; remove the section")
    ifmt = out["imagery"]["format"]
    if ifmt in PRECOMPUTED:
        if "encoder" in doc:
            raise StudyFileError(f"{where}: [imagery] format = {ifmt!r} holds embeddings already, so no encoder "
                                 "runs; remove the [encoder] section")
        u = out["units"]
        if ufmt == "csv" and (u["lon"] is None or u["lat"] is None):
            raise StudyFileError(f"{where}: [imagery] format = {ifmt!r} reads each unit's embedding at its place; "
                                 "name the coordinate columns in [units] with lon and lat")
        if ifmt == "chip-table" and out["imagery"]["join"] == "nearest" and out["imagery"]["max_distance_m"] is None:
            raise StudyFileError(f"{where}: [imagery] join = 'nearest' needs max_distance_m "
                                 f"({DOCS['imagery']['max_distance_m']})")


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


# ----------------------------------------------------------------------------- the reference page
_SECTION_DOCS = {
    "study": "What the study is called and its seed. Required.",
    "units": "The study units: their file, format and the roles of its columns. Required.",
    "simulate": "The simulated data of `[units] format = \"demo\"` (only with that format).",
    "imagery": "The images of the units.",
    "encoder": "How images become embeddings.",
    "estimate": ("What is estimated and how; each key is also a keyword of `eocausal.estimate()` "
                 "(`seed` comes from `[study]`)."),
    "report": "What is written besides `effects.csv`, `results.json`, `results.npz` and `manifest.json`.",
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _type_cell(section: str, key: str, types: tuple[type, ...]) -> str:
    names = {str: "string", int: "integer", float: "number", list: "list"}
    if (section, key) == ("imagery", "bands"):
        return "list of integers or strings"
    if (section, key) == ("imagery", "path"):
        return "string, or list of strings (raster)"
    if int in types and float in types:  # an integer is a number
        types = tuple(t for t in types if t is not int)
    out = " or ".join(names.get(t, t.__name__) for t in types)
    return out.replace("list", "list of strings") if list in types else out


def _default_cell(section: str, key: str, default: Any) -> str:
    if default is _REQ:
        return "required"
    if (section, key) == ("imagery", "format"):
        return "the units' own (see Formats)"
    fmts = REQUIRED_FOR.get((section, key))
    if default is None:
        return f"required for {', '.join(fmts)}" if fmts else "none"
    return f"`{_toml_value(default)}`"


def _allowed_cell(section: str, key: str, choices: tuple | None) -> str:
    parts = []
    if choices is not None:
        parts.append(", ".join(f"`{_toml_value(c)}`" for c in choices))
    if (section, key) in _RANGES:
        parts.append(_RANGES[(section, key)][1])
    if (section, key) in APPLIES:
        parts.append(f"only with format {', '.join(APPLIES[(section, key)])}")
    return "; ".join(parts).replace("|", "\\|")


def reference_markdown() -> str:
    """The study-file reference (``docs/study.md``), generated from :data:`SCHEMA`, :data:`DOCS`,
    :data:`APPLIES`, :data:`REQUIRED_FOR` and :func:`eocausal.options.field_docs`.

    Regenerate the page with ``python -m eocausal.study.schema > docs/study.md``.
    """
    from eocausal.options import field_docs

    docs = {**DOCS, "estimate": field_docs()}
    lines = [
        "<!-- Generated by eocausal.study.schema.reference_markdown(); do not edit by hand.",
        "     Regenerate: python -m eocausal.study.schema > docs/study.md -->",
        "",
        "# Study files",
        "",
        "A study file is a TOML document that names the units, the imagery, the encoder, what is",
        "estimated and what is reported. `eocausal validate STUDY.toml` checks it without running it:",
        "the sections and keys below, the formats and their combinations, that the files it names",
        "exist and read as their format, that the columns it names are in the units file and that the",
        "bands it names are in the rasters. `eocausal run STUDY.toml --out OUT` makes the same checks",
        "first, then runs it. Paths are relative to the study file's folder. Nothing in a study file is",
        "executed.",
        "",
        "Every key is listed with its TOML type, its default (filled in when the key is left out) and",
        "its allowed values. A key that applies only to some formats is refused with the others.",
        "Examples are the study files in the repository's `studies/` folder; the",
        "[Quickstart](quickstart.md) shows one.",
        "",
        "## Formats",
        "",
        "| `[units] format` | `[imagery] format` (the first is the default) |",
        "| --- | --- |",
    ]
    for ufmt, ifmts in IMAGERY_FOR_UNITS.items():
        own = "" if ufmt in _OWN_IMAGERY else " (required: the units have no images of their own)"
        lines.append(f"| `{ufmt}` | {', '.join(f'`{f}`' for f in ifmts)}{own} |")
    for section, spec in SCHEMA.items():
        lines += ["", f"## [{section}]", "", _SECTION_DOCS[section], "",
                  "| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
        for key, (types, default, choices) in spec.items():
            meaning = docs[section][key].replace("|", "\\|")
            lines.append(f"| `{key}` | {_type_cell(section, key, types)} | {_default_cell(section, key, default)} | "
                         f"{_allowed_cell(section, key, choices)} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m eocausal.study.schema > docs/study.md
    import sys

    sys.stdout.write(reference_markdown())
