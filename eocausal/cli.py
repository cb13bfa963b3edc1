"""The ``eocausal`` command: run | demo | validate.

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
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.study, args.out, args.quiet)
        if args.command == "demo":
            from eocausal.study.runner import demo_study_path

            return _run(demo_study_path(), args.out, args.quiet)
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
