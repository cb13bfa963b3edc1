"""Run a study end to end: units -> chips -> embeddings -> estimates -> tables and report.

Outputs are built in a temporary folder beside ``--out`` and swapped in only when every file
is written, so a failing run leaves no partial output and an earlier output stays intact.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Callable

from eocausal._atomic import atomic_directory, check_output_dir
from eocausal.results import EffectTable
from eocausal.study.schema import Study, estimate_options, load_study

_PACKAGES = ("eocausal", "numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "torch",
             "geopandas", "rasterio", "matplotlib", "jinja2")


@dataclass(frozen=True)
class RunResult:
    """What a run produced."""

    table: EffectTable
    out: Path
    manifest: dict

    @property
    def report_path(self) -> Path:
        return self.out / "report.html"

    @property
    def pdf_path(self) -> Path | None:
        """``report.pdf`` when the run wrote one."""
        p = self.out / "report.pdf"
        return p if p.is_file() else None


def demo_study_path() -> Path:
    """The embedded default study file shipped inside the package."""
    return Path(str(resources.files("eocausal.study").joinpath("demo.toml")))


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_encoder(enc: dict):
    """The encoder an [encoder] section describes."""
    from eocausal.encoders import RandomFeatures

    return RandomFeatures(n_features=enc["n_features"], kernel=enc["kernel"], bias=float(enc["bias"]),
                          seed=enc["seed"], device=enc["device"])


def run_study(study: Study | str | Path, out: str | Path, *, progress: bool = False,
              log: Callable[[str], None] | None = None) -> RunResult:
    """Run ``study`` and write its outputs to ``out`` atomically.

    Writes ``effects.csv``, ``report.html``, ``tables/effects.md``, ``tables/effects.tex`` (as
    the study's [report] formats ask), ``report.pdf`` (when [report] pdf = true), ``results.json``
    and ``results.npz`` (what ``eocausal report`` renders them again from; see
    :mod:`eocausal.report.outputs`) and ``manifest.json``. The report's gallery shows four
    example chips of each arm, drawn with the study seed among the units that were estimated.

    Parameters
    ----------
    study : Study or path
        A validated study or the path of a study file.
    out : path
        Output folder: new, empty, or an earlier eocausal output (replaced whole).
    progress : bool
        Progress bar for the embedding stage.
    log : callable, optional
        Receives one line per stage (the CLI prints them); the library itself never prints.
    """
    from eocausal.analysis import estimate
    from eocausal.encoders import embed, encoder_fingerprint
    from eocausal.report.imagery import ChipGallery
    from eocausal.report.outputs import write_outputs
    from eocausal.study.inputs import check_study, load_inputs

    study = study if isinstance(study, Study) else load_study(study)
    check_study(study)  # files, formats, columns and bands: what validate checks, before any work
    check_output_dir(out)  # fail before any work
    say = log or (lambda _msg: None)
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str, i: int):
        say(f"[{i}/4] {name}")
        return time.perf_counter()

    t = stage("reading units and imagery", 1)
    inputs = load_inputs(study)
    times["inputs"] = time.perf_counter() - t

    precomputed = inputs.embeddings is not None
    t = stage("reading embeddings" if precomputed else "embedding images", 2)
    encoder = None
    if precomputed:  # a product or chip table: the embeddings were read with the inputs
        Z = inputs.embeddings
    else:
        enc = study["encoder"]
        encoder = make_encoder(enc)
        Z = embed(inputs.units, inputs.source, encoder, batch_size=enc["batch_size"], seed=study.seed,
                  progress=progress)
    times["embed"] = time.perf_counter() - t

    t = stage("estimating effects", 3)
    options = estimate_options(study.sections)
    table = estimate(inputs.units, embeddings=Z, study=study.name, options=options)
    times["estimate"] = time.perf_counter() - t

    t = stage("writing tables and report", 4)
    source_fp = inputs.source.fingerprint() if not precomputed else {"kind": study["imagery"]["format"]}
    encoder_fp = encoder_fingerprint(encoder) if not precomputed else None
    prov = Z.attrs.get("provenance")
    imagery = prov.get("imagery") if isinstance(prov, dict) and not precomputed else None  # a STAC source
    embedding_source = prov if precomputed or imagery is not None else None
    file_hashes = {p: _sha256(p) for p in inputs.data_files if p.is_file()}
    embedding_key = hashlib.sha256(json.dumps(
        {"encoder": encoder_fp, "source": source_fp}, sort_keys=True, default=str).encode()
    ).hexdigest()
    reproducible = {
        "eocausal": _versions()["eocausal"],
        "seed": study.seed,
        "study file sha256": study.sha256 or "(in-memory study)",
        **({"encoder": json.dumps(encoder_fp, sort_keys=True)} if encoder_fp is not None else
           {"embedding source": json.dumps(_source_summary(embedding_source), sort_keys=True, default=str)}),
        **({"imagery (STAC)": json.dumps({k: imagery.get(k) for k in ("catalog", "items", "dates", "bands")},
                                         default=str)} if imagery is not None else {}),
        "embedding key": embedding_key,
        **{f"data {_shown(p, study)} sha256": h for p, h in file_hashes.items()},
    }
    manifest = {
        "study": study.name,
        "study_file": str(study.path) if study.path else None,
        "study_sha256": study.sha256,
        "seed": study.seed,
        "true_effect": inputs.true_effect,
        "versions": _versions(),
        "platform": {"system": platform.system(), "machine": platform.machine(),
                     "python": sys.version.split()[0]},
        "data_files": {str(p): h for p, h in file_hashes.items()},
        "embedding_cache_keys": [embedding_key],
        "encoder": encoder_fp,
        "source": source_fp,
        "embedding_source": embedding_source,
        "units": inputs.units.describe(),
        "input_notes": list(inputs.notes),
        "dropped_units": {"n": len(Z.attrs.get("dropped_ids", [])),
                          "ids": list(Z.attrs.get("dropped_ids", []))[:50],
                          "reason": Z.attrs.get("embed_stats", {}).get("dropped_reason")},
        "config": study.sections,
        "estimate_options": options.to_dict(),
    }
    rep = study["report"]
    gallery = None if precomputed else ChipGallery.from_source(inputs.units, inputs.source, seed=study.seed,
                                                               ids=Z.index)
    with atomic_directory(out) as tmp:
        write_outputs(tmp, table, formats=rep["formats"],
                      title=rep["title"] or f"eocausal: {study.name}",
                      description=study["study"]["description"], true_effect=inputs.true_effect,
                      reproducibility=reproducible, units=inputs.units, caption=study.name,
                      gallery=gallery, preferred=None if rep["preferred"] == "auto" else rep["preferred"],
                      pdf=rep["pdf"])
        times["write"] = time.perf_counter() - t
        times["total"] = time.perf_counter() - t_all
        manifest["stage_seconds"] = {k: round(v, 3) for k, v in times.items()}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    out_path = Path(out).absolute()
    return RunResult(table=table, out=out_path, manifest=manifest)


def _shown(path: Path, study: Study) -> str:
    """A data file as the report names it: relative to the study file's folder (so the tiles of a
    catalog, scene-west/B4.tif and scene-east/B4.tif, stay apart), else its name."""
    if study.path is not None:
        try:
            return Path(path).resolve().relative_to(Path(study.path).resolve().parent).as_posix()
        except ValueError:
            pass
    return Path(path).name


def _source_summary(prov: dict | None) -> dict:
    """The product's identity for the report's reproducibility section (files are in the manifest)."""
    if not isinstance(prov, dict):
        return {}
    p = prov.get("product", {})
    keys = ("name", "model", "version", "year", "licence")
    return {**{k: p[k] for k in keys if p.get(k) is not None}, "years": prov.get("years"),
            **({"join": prov["join"]} if "join" in prov else {})}
