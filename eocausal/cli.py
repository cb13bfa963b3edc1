"""The ``eocausal`` command: run | demo | embed | report | validate.

Errors from eocausal print one line, ``eocausal: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from eocausal.errors import EocausalError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run(study, out: str, quiet: bool) -> int:
    from eocausal.study.runner import run_study

    result = run_study(study, out, progress=not quiet, log=None if quiet else _log)
    print(result.table.summary())
    print(f"\nreport: {result.report_path}")
    return 0


def _embed(study_path: str, out: str, cache: str | None, quiet: bool) -> int:
    import io
    from pathlib import Path

    import numpy as np

    from eocausal._atomic import atomic_write_bytes, atomic_write_text
    from eocausal.errors import InputError
    from eocausal.study.runner import make_encoder
    from eocausal.study.inputs import load_inputs
    from eocausal.study.schema import load_study
    from eocausal.encoders import embed

    dest = Path(out)
    if dest.suffix not in (".npz", ".csv"):
        raise InputError(f"--out {out!r}: use a .npz or .csv file name")
    study = load_study(study_path)
    if not quiet:
        _log("[1/2] reading units and imagery")
    inputs = load_inputs(study)
    if not quiet:
        _log("[2/2] embedding images")
    enc = study["encoder"]
    Z = embed(inputs.units, inputs.source, make_encoder(enc), batch_size=enc["batch_size"],
              seed=study.seed, cache_dir=cache, progress=not quiet)
    if dest.suffix == ".csv":
        atomic_write_text(dest, Z.to_csv())
    else:
        buf = io.BytesIO()
        np.savez_compressed(buf, ids=np.asarray(Z.index.astype(str), dtype=str), embeddings=Z.to_numpy())
        atomic_write_bytes(dest, buf.getvalue())
    print(f"embeddings: {dest} ({Z.shape[0]} units x {Z.shape[1]} dimensions)")
    return 0


def _report(folder: str) -> int:
    import json
    from pathlib import Path

    import pandas as pd

    from eocausal._atomic import atomic_write_text
    from eocausal.errors import MissingFileError
    from eocausal.report import render_report
    from eocausal.results import EffectTable

    d = Path(folder)
    for f in ("effects.csv", "manifest.json"):
        if not (d / f).is_file():
            raise MissingFileError(f"{d / f}: not found; pass a folder written by 'eocausal run' or 'eocausal demo'")
    man = json.loads((d / "manifest.json").read_text())
    table = EffectTable.from_tidy(pd.read_csv(d / "effects.csv", keep_default_na=True),
                                  design={"study": man.get("study", "")})
    html = render_report(table, title=f"eocausal: {man.get('study', '')}", true_effect=man.get("true_effect"),
                         reproducibility={"seed": man.get("seed"), "study file sha256": man.get("study_sha256")})
    atomic_write_text(d / "report.html", html)
    (d / "tables").mkdir(exist_ok=True)
    atomic_write_text(d / "tables" / "effects.md", table.to_markdown())
    atomic_write_text(d / "tables" / "effects.tex", table.to_latex(caption=man.get("study")))
    print(f"report: {d / 'report.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eocausal", description="Causal inference with satellite imagery.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a study file")
    p_run.add_argument("study", help="path of a study file (TOML)")
    p_run.add_argument("--out", required=True, help="output folder (new, empty or an earlier output)")
    p_run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p_demo = sub.add_parser("demo", help="run the embedded default study (simulated imagery)")
    p_demo.add_argument("--out", default="eocausal-demo", help="output folder (default: eocausal-demo)")
    p_demo.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p_val = sub.add_parser("validate", help="check a study file without running it")
    p_val.add_argument("study")
    p_emb = sub.add_parser("embed", help="embed a study's imagery and save the embeddings")
    p_emb.add_argument("study")
    p_emb.add_argument("--out", required=True, help="output file (.npz with arrays 'ids' and 'embeddings', or .csv)")
    p_emb.add_argument("--cache", default=None, help="embedding cache folder (resumes an interrupted run)")
    p_emb.add_argument("--quiet", action="store_true")
    p_rep = sub.add_parser("report", help="re-render report.html and tables from an output folder")
    p_rep.add_argument("folder", help="a folder written by 'eocausal run' or 'eocausal demo'")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.study, args.out, args.quiet)
        if args.command == "demo":
            from eocausal.study.runner import demo_study_path

            return _run(demo_study_path(), args.out, args.quiet)
        if args.command == "embed":
            return _embed(args.study, args.out, args.cache, args.quiet)
        if args.command == "report":
            return _report(args.folder)
        if args.command == "validate":
            from eocausal.study.schema import load_study

            study = load_study(args.study)
            print(f"{args.study}: valid study {study.name!r}")
            return 0
    except EocausalError as exc:
        print(f"eocausal: error: {exc}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
