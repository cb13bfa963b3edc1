"""An output folder, written and read back without loss.

``eocausal run`` writes a folder with :func:`write_outputs`; ``eocausal report DIR`` reads it
with :func:`read_outputs` and renders it again with :func:`rerender_outputs`. The folder holds:

- ``effects.csv``: the rows of :meth:`EffectTable.tidy`, one column per EffectRow field. Floats
  are written with ``repr`` (the shortest text that reads back to the same double: ``nan``,
  ``inf``), integers as integers, an absent optional value (None) as an empty cell.
- ``results.json``: everything else the tables and the report show: the table's notes and
  design, each propensity fit's scalar fields, each balance table's columns, index and
  ``attrs``, the report's inputs (formats, title, description, true effect,
  reproducibility facts, table caption, the data section's facts, the headline rule, whether a
  PDF is written, the example chips' captions), and the SHA-256 of
  ``effects.csv``, so rows and sidecar from different runs are never mixed. Plain JSON; values JSON
  cannot hold are tagged (``{"$tuple": [...]}``, ``{"$float": "nan"}``, ``{"$dict": [[k, v], ...]}``).
- ``results.npz``: the arrays ``results.json`` points to by key (propensity scores, treatment,
  outcome, influence functions, balance columns, the units' places as WKB and treatment labels, the
  example chips as 8-bit true-colour images, salience chips and maps),
  written with fixed zip timestamps so the same results give the same bytes, and read with
  ``allow_pickle=False``: reading an output folder executes nothing.
- ``tables/effects.md``, ``tables/effects.tex``, ``report.html`` as the formats ask, and
  ``report.pdf`` (the same content as ``report.html``, :mod:`eocausal.report.pdf`) when asked.

Every file is written atomically; :func:`rerender_outputs` renders everything in memory before
it replaces any file, so a failure leaves the folder as it was.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from eocausal._atomic import atomic_write_bytes
from eocausal._types import TIDY_COLUMNS, PropensityFit
from eocausal.errors import DataFileError, InputError, MissingFileError, OutputError
from eocausal.report.document import build_document
from eocausal.report.html import document_html
from eocausal.report.imagery import ChipGallery
from eocausal.report.sections import UnitsView
from eocausal.results import EffectTable

__all__ = ["ReportInputs", "read_outputs", "rerender_outputs", "write_outputs"]

FORMATS = ("html", "md", "tex")
_FORMAT = "eocausal results"
_VERSION = 2
_RERUN = "rerun `eocausal run STUDY.toml --out DIR` to write the folder again"


@dataclass(frozen=True)
class ReportInputs:
    """What the tables and the report of an output folder are rendered from, besides the table.

    Attributes
    ----------
    formats : tuple of str
        Which of "html", "md", "tex" are written.
    title, description : str
        The report's title (None: the default title) and description.
    true_effect : float, optional
        The known effect of a simulated study.
    reproducibility : tuple of (str, object)
        The report's reproducibility facts, in order.
    units : UnitsView, optional
        The data section's units.
    caption : str, optional
        Caption of the LaTeX table.
    gallery : ChipGallery, optional
        The example chips of each arm.
    salience : dict, optional
        ``chips``, ``maps`` and ``titles`` of the salience maps, when a propensity CNN was fitted.
    preferred : str, optional
        The headline rule (``[report] preferred``; None: the default rule).
    pdf : bool
        Also write ``report.pdf``.
    """

    formats: tuple[str, ...] = FORMATS
    title: str | None = None
    description: str = ""
    true_effect: object = None
    reproducibility: tuple[tuple[str, object], ...] = ()
    units: UnitsView | None = None
    caption: str | None = None
    gallery: ChipGallery | None = None
    salience: dict | None = None
    preferred: str | None = None
    pdf: bool = False

    def render(self, table: EffectTable, *, pdf: bool | None = None) -> dict[str, bytes]:
        """Relative path -> content of each rendered file (tables, report.html, report.pdf).

        ``pdf`` None: as :attr:`pdf` says; True or False: write report.pdf or not, whatever it says.
        """
        out = {}
        if "md" in self.formats:
            out["tables/effects.md"] = table.to_markdown().encode("utf-8")
        if "tex" in self.formats:
            out["tables/effects.tex"] = table.to_latex(caption=self.caption).encode("utf-8")
        want_pdf = self.pdf if pdf is None else pdf
        if "html" in self.formats or want_pdf:
            doc = build_document(table, title=self.title, description=self.description,
                                 true_effect=self.true_effect, reproducibility=dict(self.reproducibility),
                                 units=self.units, salience=self.salience, gallery=self.gallery,
                                 preferred=self.preferred)
            if "html" in self.formats:
                out["report.html"] = document_html(doc).encode("utf-8")
            if want_pdf:
                from eocausal.report.pdf import document_pdf

                out["report.pdf"] = document_pdf(doc)
        return out


def write_outputs(folder: str | Path, table: EffectTable, *, formats=FORMATS, title: str | None = None,
                  description: str = "", true_effect=None, reproducibility: Mapping[str, object] | None = None,
                  units=None, caption: str | None = None, gallery: ChipGallery | None = None,
                  salience: Mapping | None = None, preferred: str | None = None, pdf: bool = False) -> list[Path]:
    """Write ``table`` and everything its tables and report show into ``folder``.

    Parameters
    ----------
    folder : path
        The output folder (created if needed); ``eocausal run`` passes its temporary folder.
    table : EffectTable
        The estimates with their notes, design, propensity fits and balance tables.
    formats : sequence of str
        Which of "html", "md", "tex" to render (effects.csv and the results files always).
    title, description, true_effect, reproducibility, units
        As :func:`eocausal.report.render_report` takes them; ``units`` is a Units or a
        :class:`~eocausal.report.sections.UnitsView`.
    caption : str, optional
        Caption of the LaTeX table.
    gallery : ChipGallery, optional
        Example chips of each arm (:meth:`ChipGallery.from_source`).
    salience : mapping, optional
        ``chips`` (k, C, H, W), ``maps`` (k, H, W) and ``titles`` of a propensity CNN's salience maps.
    preferred : str, optional
        Which row is the headline (:func:`eocausal.report.headline.preferred_row`).
    pdf : bool
        Also write ``report.pdf`` (needs the ``typst`` package: ``pip install 'eocausal[pdf]'``).

    Returns
    -------
    list of Path
        The files written.
    """
    if isinstance(formats, str) or any(f not in FORMATS for f in formats):
        raise InputError(f"formats={formats!r}: use a list of {list(FORMATS)}")
    view = units if units is None or isinstance(units, UnitsView) else UnitsView.from_units(units)
    from eocausal.report.headline import preferred_row

    preferred_row(table, preferred)  # a preferred row the table lacks is refused before anything is written
    sal = None
    if salience:
        sal = {"chips": np.asarray(salience["chips"]), "maps": np.asarray(salience["maps"]),
               "titles": [str(t) for t in salience["titles"]]}
    inputs = ReportInputs(formats=tuple(f for f in FORMATS if f in formats), title=title,
                          description=description, true_effect=true_effect,
                          reproducibility=tuple((reproducibility or {}).items()), units=view, caption=caption,
                          gallery=gallery, salience=sal, preferred=preferred, pdf=bool(pdf))
    effects = _effects_csv(table).encode("utf-8")
    side, arrays = _sidecar(table, inputs)
    side["effects_sha256"] = hashlib.sha256(effects).hexdigest()
    files = {"effects.csv": effects,
             "results.json": (json.dumps(side, indent=1, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"),
             "results.npz": _npz_bytes(arrays),
             **inputs.render(table)}
    return _write_all(Path(folder), files)


def read_outputs(folder: str | Path) -> tuple[EffectTable, ReportInputs]:
    """Read an output folder back: the table as it was written, and the report's inputs.

    Raises
    ------
    MissingFileError
        The folder or one of manifest.json, effects.csv, results.json, results.npz is missing.
    DataFileError
        One of them cannot be read or does not hold what eocausal wrote.
    """
    d = Path(folder)
    for name in ("manifest.json", "effects.csv", "results.json", "results.npz"):
        if not (d / name).is_file():
            raise MissingFileError(
                f"{d / name}: not found; pass a folder written by 'eocausal run' or 'eocausal demo'"
                + ("" if name == "manifest.json" else f" (or {_RERUN})"))
    _read_json(d / "manifest.json")
    side = _read_json(d / "results.json")
    if not isinstance(side, dict) or side.get("format") != _FORMAT or side.get("version") != _VERSION:
        raise DataFileError(f"{d / 'results.json'}: not an eocausal results file of version {_VERSION}; {_RERUN}")
    rows = _read_effects(d / "effects.csv")
    try:
        with np.load(d / "results.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFileError(f"{d / 'results.npz'}: cannot be read ({exc}); {_RERUN}") from None
    try:
        table, inputs = _from_sidecar(side, arrays, rows)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise DataFileError(f"{d / 'results.json'} and {d / 'results.npz'}: incomplete or inconsistent "
                            f"({type(exc).__name__}: {exc}); {_RERUN}") from None
    if hashlib.sha256((d / "effects.csv").read_bytes()).hexdigest() != side.get("effects_sha256"):
        raise DataFileError(f"{d / 'effects.csv'}: not the file results.json was written with ({len(table.rows)} "
                            f"rows, results.json has {side.get('rows')}): edited, or the files come from "
                            f"different runs; {_RERUN}")
    return table, inputs


def rerender_outputs(folder: str | Path, *, pdf: bool | None = None) -> list[Path]:
    """Render an output folder's tables and report again from its saved results, in place.

    ``pdf``: None writes report.pdf when the run wrote one ([report] pdf); True writes it in any
    case (``eocausal report DIR --pdf``); False never. Everything is rendered before any file is
    replaced; each file is replaced atomically. Returns the files written.
    """
    table, inputs = read_outputs(folder)
    return _write_all(Path(folder), inputs.render(table, pdf=pdf))


# ---------------------------------------------------------------------------- files


def _write_all(folder: Path, files: dict[str, bytes]) -> list[Path]:
    return [atomic_write_bytes(folder / rel, data) for rel, data in files.items()]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(f"{path}: not readable JSON ({exc}); {_RERUN}") from None


def _csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def _effects_csv(table: EffectTable) -> str:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(TIDY_COLUMNS)
    for r in table.rows:
        d = r.as_dict()
        out.writerow([_csv_cell(d[c]) for c in TIDY_COLUMNS])
    return buf.getvalue()


def _read_effects(path: Path) -> EffectTable:
    """The rows of effects.csv (an empty cell is None; EffectTable.from_tidy converts the rest)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            lines = list(csv.reader(fh, strict=True))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFileError(f"{path}: not readable CSV ({exc}); {_RERUN}") from None
    if not lines:
        raise DataFileError(f"{path}: empty; {_RERUN}")
    header, body = lines[0], lines[1:]
    if len(set(header)) != len(header):
        raise DataFileError(f"{path}: repeated columns in {header}; {_RERUN}")
    for i, line in enumerate(body, start=2):
        if len(line) != len(header):
            raise DataFileError(f"{path}, line {i}: {len(line)} cells for {len(header)} columns; {_RERUN}")
    frame = pd.DataFrame([[None if text == "" else text for text in line] for line in body],
                         columns=header, dtype=object)
    try:
        return EffectTable.from_tidy(frame)
    except InputError as exc:  # rows count from 0: the header is line 1, row 0 is line 2
        raise DataFileError(f"{path}: {exc}; {_RERUN}") from None


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive with fixed timestamps (np.savez stamps the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------- values


def _to_json(v, where: str):
    """A JSON value for ``v``; tuples, non-finite floats and dicts JSON cannot key are tagged."""
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else {"$float": repr(v)}
    if isinstance(v, list):
        return [_to_json(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, tuple):
        return {"$tuple": [_to_json(x, f"{where}[{i}]") for i, x in enumerate(v)]}
    if isinstance(v, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in v):
            return {k: _to_json(x, f"{where}[{k!r}]") for k, x in v.items()}
        return {"$dict": [[_to_json(k, where), _to_json(x, f"{where}[{k!r}]")] for k, x in v.items()]}
    raise OutputError(f"{where}: a {type(v).__name__} cannot be saved with the results; keep design facts, "
                      "notes and report facts to None, bool, int, float, str, lists, tuples and dicts of them")


def _from_json(v):
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    if isinstance(v, dict):
        if set(v) == {"$tuple"}:
            return tuple(_from_json(x) for x in v["$tuple"])
        if set(v) == {"$float"}:
            return float(v["$float"])
        if set(v) == {"$dict"}:
            return {_from_json(k): _from_json(x) for k, x in v["$dict"]}
        return {k: _from_json(x) for k, x in v.items()}
    return v


def _array(values, where: str) -> np.ndarray:
    """A numpy array that .npz holds without pickling (numbers, booleans, text)."""
    a = np.asarray(values)
    if a.dtype.kind in "biufU":
        return a
    items = list(a.ravel())
    if all(isinstance(x, str) for x in items):
        return np.array(items, dtype=str).reshape(a.shape)
    raise OutputError(f"{where}: values of dtype {a.dtype} cannot be saved without pickling; "
                      "use numbers, booleans or text")


# ---------------------------------------------------------------------------- sidecar


def _sidecar(table: EffectTable, inputs: ReportInputs) -> tuple[dict, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}

    def put(key: str, values, where: str) -> str:
        arrays[key] = _array(values, where)
        return key

    props = []
    for i, (name, fit) in enumerate(table.propensities.items()):
        spec = {}
        for f in fields(PropensityFit):
            v, where = getattr(fit, f.name), f"propensities[{name!r}].{f.name}"
            if isinstance(v, np.ndarray):
                spec[f.name] = {"array": put(f"propensity{i}.{f.name}", v, where)}
            elif isinstance(v, dict) and v and all(isinstance(x, np.ndarray) for x in v.values()):
                spec[f.name] = {"arrays": [[k, put(f"propensity{i}.{f.name}.{j}", x, f"{where}[{k!r}]")]
                                           for j, (k, x) in enumerate(v.items())]}
            else:
                spec[f.name] = {"value": _to_json(v, where)}
        props.append([name, spec])
    balance = []
    for i, (name, b) in enumerate(table.balance.items()):
        where = f"balance[{name!r}]"
        balance.append([name, {
            "index": put(f"balance{i}.index", b.index.to_numpy(), f"{where}.index"),
            "index_name": _to_json(b.index.name, f"{where}.index.name"),
            "columns": [[str(c), put(f"balance{i}.column{j}", b[c].to_numpy(), f"{where}[{c!r}]")]
                        for j, c in enumerate(b.columns)],
            "attrs": _to_json(dict(b.attrs), f"{where}.attrs"),
        }])
    units = None
    if inputs.units is not None:
        import shapely

        u = inputs.units
        wkb = shapely.to_wkb(np.asarray(u.geometry, dtype=object))
        units = {"facts": [[k, _to_json(v, f"units.facts[{k!r}]")] for k, v in u.facts],
                 "treatment": u.treatment, "crs": u.crs,
                 "labels": put("units.labels", u.labels, "units.labels"),
                 "wkb": put("units.wkb", np.frombuffer(b"".join(wkb), dtype=np.uint8), "units.wkb"),
                 "wkb_ends": put("units.wkb_ends", np.cumsum([len(g) for g in wkb], dtype=np.int64), "units")}
    gallery = None
    if inputs.gallery is not None:
        g = inputs.gallery
        gallery = {"images": put("gallery.images", np.asarray(g.images, dtype=np.uint8), "gallery.images"),
                   "labels": put("gallery.labels", g.labels, "gallery.labels"),
                   "ids": put("gallery.ids", g.ids, "gallery.ids"), "how": g.how}
    salience = None
    if inputs.salience is not None:
        sal = inputs.salience
        salience = {"chips": put("salience.chips", sal["chips"], "salience.chips"),
                    "maps": put("salience.maps", sal["maps"], "salience.maps"),
                    "titles": put("salience.titles", np.array(sal["titles"], dtype=str), "salience.titles")}
    side = {
        "format": _FORMAT, "version": _VERSION, "rows": len(table.rows),
        "notes": list(table.notes),
        "design": _to_json(dict(table.design), "design"),
        "propensities": props,
        "balance": balance,
        "report": {
            "formats": list(inputs.formats), "title": inputs.title, "description": inputs.description,
            "true_effect": _to_json(inputs.true_effect, "true_effect"), "caption": inputs.caption,
            "reproducibility": [[k, _to_json(v, f"reproducibility[{k!r}]")] for k, v in inputs.reproducibility],
            "units": units, "gallery": gallery, "salience": salience,
            "preferred": inputs.preferred, "pdf": inputs.pdf,
        },
    }
    return side, arrays


def _from_sidecar(side: dict, arrays: dict[str, np.ndarray], rows: EffectTable) -> tuple[EffectTable, ReportInputs]:
    props = {}
    for name, spec in side["propensities"]:
        kw = {}
        for fname, s in spec.items():
            if "array" in s:
                kw[fname] = arrays[s["array"]]
            elif "arrays" in s:
                kw[fname] = {k: arrays[key] for k, key in s["arrays"]}
            else:
                kw[fname] = _from_json(s["value"])
        props[name] = PropensityFit(**kw)
    balance = {}
    for name, spec in side["balance"]:
        b = pd.DataFrame({c: arrays[key] for c, key in spec["columns"]},
                         index=pd.Index(arrays[spec["index"]], name=_from_json(spec["index_name"])))
        b.attrs.update(_from_json(spec["attrs"]))
        balance[name] = b
    rep = side["report"]
    units = None
    if rep["units"] is not None:
        import shapely
        from shapely.errors import ShapelyError

        u = rep["units"]
        buf, ends = arrays[u["wkb"]].tobytes(), arrays[u["wkb_ends"]]
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        try:
            geoms = shapely.from_wkb([buf[s:e] for s, e in zip(starts, ends)])
        except ShapelyError as exc:
            raise ValueError(f"units' places: {exc}") from None
        units = UnitsView(facts=tuple((k, _from_json(v)) for k, v in u["facts"]), treatment=u["treatment"],
                          labels=arrays[u["labels"]], geometry=np.asarray(geoms, dtype=object), crs=u["crs"])
    gallery = None
    if rep["gallery"] is not None:
        g = rep["gallery"]
        gallery = ChipGallery(images=arrays[g["images"]], labels=arrays[g["labels"]], ids=arrays[g["ids"]],
                              how=g["how"])
    salience = None
    if rep["salience"] is not None:
        sal = rep["salience"]
        salience = {"chips": arrays[sal["chips"]], "maps": arrays[sal["maps"]],
                    "titles": [str(t) for t in arrays[sal["titles"]]]}
    inputs = ReportInputs(formats=tuple(rep["formats"]), title=rep["title"], description=rep["description"],
                          true_effect=_from_json(rep["true_effect"]),
                          reproducibility=tuple((k, _from_json(v)) for k, v in rep["reproducibility"]),
                          units=units, caption=rep["caption"], gallery=gallery, salience=salience,
                          preferred=rep["preferred"], pdf=bool(rep["pdf"]))
    table = EffectTable(rows=rows.rows, notes=tuple(side["notes"]), design=_from_json(side["design"]),
                        propensities=props, balance=balance)
    return table, inputs
