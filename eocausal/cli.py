"""The ``eocausal`` command: run | demo | embed | report | validate.

Errors from eocausal print one line, ``eocausal: error: ...``, and exit with status 2.
Warnings print one line each, ``eocausal: warning: ...`` (no file names or source lines).
Stage lines go to stderr; a progress bar is drawn only when stderr is a terminal (and not
with ``--quiet``), so logs hold whole lines. SIGTERM stops a command like Ctrl-C: the
temporary output is removed and the earlier output, if any, stays in place.
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from contextlib import contextmanager

from eocausal.errors import EocausalError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(quiet: bool) -> bool:
    try:
        return not quiet and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """One line per warning: ``eocausal: warning: <message>`` (eocausal's own categories) or
    ``eocausal: warning: <Category>: <message>`` (others), without file paths or source."""
    from eocausal.errors import EocausalWarning

    text = " ".join(str(message).split())
    if not issubclass(category, EocausalWarning):
        text = f"{category.__name__}: {text}"
    print(f"eocausal: warning: {text}", file=sys.stderr if file is None else file, flush=True)


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so cleanup (temporary outputs) runs as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


@contextmanager
def _cli_environment():
    """Warnings as one line each and SIGTERM as an exception, for the duration of a command."""
    try:
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. main() called from a worker thread)
        old_term = None
    try:
        with warnings.catch_warnings():  # restores the filters and showwarning afterwards
            warnings.simplefilter("default")  # a command shows warnings; it never turns them into errors
            warnings.showwarning = _show_warning
            yield
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def _run(study, out: str, quiet: bool) -> int:
    from eocausal.study.runner import run_study

    result = run_study(study, out, progress=_progress(quiet), log=None if quiet else _log)
    print(result.table.summary())
    print(f"\nreport: {result.report_path}")
    if result.pdf_path is not None:
        print(f"pdf:    {result.pdf_path}")
    return 0


def _embed(study_path: str, out: str, cache: str | None, quiet: bool) -> int:
    from pathlib import Path

    from eocausal._atomic import atomic_write_bytes, check_output_file
    from eocausal.data.embedding_files import SUFFIXES, embeddings_bytes
    from eocausal.encoders import embed
    from eocausal.errors import InputError
    from eocausal.study.inputs import check_study, load_inputs
    from eocausal.study.runner import make_encoder
    from eocausal.study.schema import load_study

    dest = Path(out)
    if dest.suffix.lower() not in SUFFIXES:
        raise InputError(f"--out {out!r}: use a .npz, .csv or .parquet (GeoParquet) file name")
    check_output_file(dest)  # fail before any work
    study = load_study(study_path)
    check_study(study)
    if not quiet:
        _log("[1/2] reading units and imagery")
    inputs = load_inputs(study)
    if not quiet:
        _log("[2/2] embedding images")
    enc = study["encoder"]
    Z = embed(inputs.units, inputs.source, make_encoder(enc), batch_size=enc["batch_size"],
              seed=study.seed, cache_dir=cache, progress=_progress(quiet))
    geometry = inputs.units.geometry if inputs.units.has_place else None
    atomic_write_bytes(dest, embeddings_bytes(Z, dest.suffix.lower(), geometry=geometry,
                                              metadata=Z.attrs.get("provenance")))
    n_drop = len(Z.attrs.get("dropped_ids", []))
    dropped = f"; {n_drop} units left out (invalid chips)" if n_drop else ""
    print(f"embeddings: {dest} ({Z.shape[0]} units x {Z.shape[1]} dimensions{dropped}); "
          "read it with eocausal.data.embedding_files.read_embeddings")
    return 0


def _report(folder: str, pdf: bool) -> int:
    from eocausal.report.outputs import rerender_outputs

    for path in rerender_outputs(folder, pdf=True if pdf else None):
        print(f"wrote {path}")
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
    p_val = sub.add_parser("validate", help="check a study file without running it: sections, keys, "
                           "formats, files, columns and bands (what run checks first)")
    p_val.add_argument("study")
    p_emb = sub.add_parser("embed", help="embed a study's imagery and save the embeddings")
    p_emb.add_argument("study")
    p_emb.add_argument("--out", required=True, help="output file: .npz (arrays ids, embeddings, columns), .csv, or .parquet (GeoParquet with the units' places and the encoder as metadata); ids keep their type")
    p_emb.add_argument("--cache", default=None, help="embedding cache folder (resumes an interrupted run)")
    p_emb.add_argument("--quiet", action="store_true")
    p_rep = sub.add_parser("report", help="re-render report.html and tables from an output folder")
    p_rep.add_argument("folder", help="a folder written by 'eocausal run' or 'eocausal demo'")
    p_rep.add_argument("--pdf", action="store_true", help="also write report.pdf (the same content as "
                       "report.html; needs the typst package: pip install 'eocausal[pdf]')")
    args = parser.parse_args(argv)
    with _cli_environment():
        return _dispatch(args)


def _dispatch(args) -> int:
    try:
        if args.command == "run":
            return _run(args.study, args.out, args.quiet)
        if args.command == "demo":
            from eocausal.study.runner import demo_study_path

            return _run(demo_study_path(), args.out, args.quiet)
        if args.command == "embed":
            return _embed(args.study, args.out, args.cache, args.quiet)
        if args.command == "report":
            return _report(args.folder, args.pdf)
        if args.command == "validate":
            from eocausal.study.inputs import check_study
            from eocausal.study.schema import load_study

            study = load_study(args.study)
            checked = check_study(study)
            print(f"{args.study}: valid study {study.name!r}")
            for line in checked:
                print(f"  {line}")
            return 0
    except EocausalError as exc:
        print(f"eocausal: error: {exc}", file=sys.stderr)
        return 2
    except _Terminated:
        print("eocausal: error: terminated (SIGTERM); the output was not written (an earlier one is kept)", file=sys.stderr)
        return 143
    return 1  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
