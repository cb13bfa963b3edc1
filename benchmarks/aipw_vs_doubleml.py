"""Cross-fitted AIPW with 1,000 bootstrap replications: eocausal against DoubleML's IRM.

Same data, same 5 folds (passed to DoubleML with ``set_sample_splitting``), same learners
(``LinearRegression`` for the outcome, ``LogisticRegression(C=1.0)`` with lbfgs for the
propensity, propensities clipped to [0.01, 0.99]), ATE score. DoubleML then runs its multiplier
bootstrap ``bootstrap(method='normal', n_rep_boot=B)``; eocausal runs
``multiplier_bootstrap(weights='normal')`` (the same bootstrap, drawn in chunks). Each side runs in
a fresh subprocess so ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is its own peak memory; the
data (n x d float64, generated in the worker, not timed) is included in both peaks.

A third subprocess times eocausal's other bootstraps on the same fit: normal multipliers drawn
exactly as N(0, sum psi^2)/n ('exact'), Rademacher and Mammen multipliers, and the nonparametric
(multinomial counts) bootstrap of the AIPW scores with the nuisances fixed.

Usage: python -m benchmarks.aipw_vs_doubleml [--n 100000 1000000] [--dims 64] [--folds 5]
       [--boot 1000] [--seed 0] [--repeat R] [--no-doubleml-above N] [--threads T] [--no-write]
Appends the figures to benchmarks/results/aipw_vs_doubleml.md (written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._machine import (RESULTS_DIR, append_block, command, machine_line, run_json_worker, utc_stamp,
                                 versions)

RESULTS = RESULTS_DIR / "aipw_vs_doubleml.md"
CLIP = 0.01


def mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def make_data(n: int, d: int, folds: int, seed: int):
    """Confounded data with a 64-dimensional 'embedding'; stratified random folds."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((n, d))
    b = rng.normal(scale=0.8 / np.sqrt(d), size=d)
    g = rng.normal(scale=1.0 / np.sqrt(d), size=d)
    e = 1 / (1 + np.exp(-(V @ b)))
    w = (rng.uniform(size=n) < e).astype(float)
    y = V @ g + w * (1.0 + 0.5 * V[:, 0]) + rng.standard_normal(n)
    fold = np.empty(n, dtype=int)
    for arm in (0, 1):
        idx = np.flatnonzero(w == arm)
        fold[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) % folds
    return V, y, w, fold


def learners():
    from sklearn.linear_model import LinearRegression, LogisticRegression

    return LinearRegression(), LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(kind: str, n: int, d: int, folds: int, B: int, seed: int) -> dict:
    V, y, w, fold = make_data(n, d, folds, seed)
    out = {"kind": kind, "n": n, "rss_data_mb": maxrss_mb()}
    ml_g, ml_m = learners()
    if kind == "doubleml":
        import doubleml as dml
        from doubleml.utils import PSProcessorConfig

        t0 = time.perf_counter()
        data = dml.DoubleMLData.from_arrays(V, y, w)
        m = dml.DoubleMLIRM(data, ml_g, ml_m, n_folds=folds, score="ATE", normalize_ipw=False,
                            ps_processor_config=PSProcessorConfig(clipping_threshold=CLIP),
                            draw_sample_splitting=False)
        m.set_sample_splitting([(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds)])
        m.fit()
        t1 = time.perf_counter()
        np.random.seed(seed)
        m.bootstrap(method="normal", n_rep_boot=B)
        t2 = time.perf_counter()
        q = float(np.quantile(np.abs(m.boot_t_stat[:, 0, 0]), 0.95))
        out.update(estimate=float(m.coef[0]), se=float(m.se[0]), fit_s=t1 - t0, boot_s=t2 - t1,
                   boot_se=float(np.std(m.boot_t_stat[:, 0, 0], ddof=1) * m.se[0]), crit95=q)
    else:
        from eocausal.estimators import inference as I
        from eocausal.estimators.aipw import crossfit_aipw

        t0 = time.perf_counter()
        fit = crossfit_aipw(V, y, w, fold, propensity=ml_m, outcome_model=ml_g, clip=CLIP)
        t1 = time.perf_counter()
        psi = fit.psi[0]
        boot = I.multiplier_bootstrap(psi, fit.estimate, n_boot=B, weights="normal", seed=seed)
        t2 = time.perf_counter()
        t = (boot.draws - fit.estimate) / fit.std_error
        out.update(estimate=fit.estimate, se=fit.std_error, fit_s=t1 - t0, boot_s=t2 - t1,
                   boot_se=boot.std_error, crit95=float(np.quantile(np.abs(t), 0.95)))
        if kind == "eocausal-variants":
            variants = {}
            runs = {
                "multiplier normal, exact N(0, sum psi^2)/n": lambda: I.multiplier_bootstrap(
                    psi, fit.estimate, n_boot=B, weights="normal", draw="exact", seed=seed),
                "multiplier rademacher": lambda: I.multiplier_bootstrap(
                    psi, fit.estimate, n_boot=B, weights="rademacher", seed=seed),
                "multiplier mammen": lambda: I.multiplier_bootstrap(
                    psi, fit.estimate, n_boot=B, weights="mammen", seed=seed),
                "nonparametric (multinomial counts), nuisances fixed": lambda: I.bootstrap_aipw(
                    y, w, fit.e[0], fit.mu0[0], fit.mu1[0], n_boot=B, seed=seed),
            }
            for name, run in runs.items():
                s0 = time.perf_counter()
                b = run()
                variants[name] = {"s": time.perf_counter() - s0, "se": b.std_error}
            out["variants"] = variants
    out["peak_rss_mb"] = maxrss_mb()
    return out


def run_worker(kind, args, n):
    return run_json_worker("benchmarks.aipw_vs_doubleml", ["--worker", kind, "--n", str(n), "--dims", str(args.dims), "--folds",
                                      str(args.folds), "--boot", str(args.boot), "--seed", str(args.seed)],
                           threads=args.threads)


def fmt(x, nd=2):
    return f"{x:,.{nd}f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-doubleml-above", type=int, default=None,
                    help="skip DoubleML for n above this (its B x n multiplier matrix is 8 B n bytes)")
    ap.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads in the workers")
    ap.add_argument("--repeat", type=int, default=1, help="eocausal/DoubleML pairs per n (alternating order)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.n[0], args.dims, args.folds, args.boot, args.seed)))
        return 0

    stamp, machine = utc_stamp(), machine_line()
    cmd, vers = command("aipw_vs_doubleml", argv), versions("numpy", "sklearn", "doubleml")
    rows, var_rows, notes = [], [], []
    for n, r in ((n, r) for n in args.n for r in range(args.repeat)):
        load = os.getloadavg()[0]
        need_gb = 8 * args.boot * n / 2**30 + 4 * 8 * n * args.dims / 2**30
        skip = args.no_doubleml_above is not None and n > args.no_doubleml_above
        if not skip and need_gb > 0.8 * mem_available_gb():
            skip = True
            notes.append(f"n={n:,}: DoubleML skipped: it needs about {need_gb:.1f} GB "
                         f"(its {args.boot} x n multiplier matrix alone is {8 * args.boot * n / 2**30:.1f} GB), "
                         f"{mem_available_gb():.1f} GB available")
        # alternate which side runs first, so a change in machine load does not favour one side
        dm = None if skip or r % 2 == 0 else run_worker("doubleml", args, n)
        eo = run_worker("eocausal", args, n)
        if not skip and r % 2 == 0:
            dm = run_worker("doubleml", args, n)
        eo_t = eo["fit_s"] + eo["boot_s"]
        if dm is not None:
            dm_t = dm["fit_s"] + dm["boot_s"]
            rows.append(
                f"| {stamp} | {n:,} | {args.dims} | {args.folds} | {args.boot} | {load:.2f} "
                f"| {fmt(eo['fit_s'])} + {fmt(eo['boot_s'])} = {fmt(eo_t)} "
                f"| {fmt(dm['fit_s'])} + {fmt(dm['boot_s'])} = {fmt(dm_t)} | {eo_t / dm_t:.2f} "
                f"| {eo['estimate']:.10f} / {dm['estimate']:.10f} ({abs(eo['estimate'] - dm['estimate']):.1e}) "
                f"| {eo['se']:.6f} / {dm['se']:.6f} | {eo['boot_se']:.6f} / {dm['boot_se']:.6f} "
                f"| {fmt(eo['peak_rss_mb'], 0)} / {fmt(dm['peak_rss_mb'], 0)} (data {fmt(eo['rss_data_mb'], 0)}) |")
        else:
            rows.append(
                f"| {stamp} | {n:,} | {args.dims} | {args.folds} | {args.boot} | {load:.2f} "
                f"| {fmt(eo['fit_s'])} + {fmt(eo['boot_s'])} = {fmt(eo_t)} | not run | - "
                f"| {eo['estimate']:.10f} / - | {eo['se']:.6f} / - | {eo['boot_se']:.6f} / - "
                f"| {fmt(eo['peak_rss_mb'], 0)} / - (data {fmt(eo['rss_data_mb'], 0)}) |")
        if r > 0:
            print(rows[-1], flush=True)
            continue
        var = run_worker("eocausal-variants", args, n)
        for name, v in var["variants"].items():
            var_rows.append(f"| {stamp} | {n:,} | {name} | {fmt(var['fit_s'])} | {fmt(v['s'])} "
                            f"| {v['se']:.6f} | {var['se']:.6f} |")
        print(rows[-1], flush=True)

    header = ["# Cross-fitted AIPW + 1,000 bootstrap replications: eocausal vs DoubleML IRM", "",
              __doc__.split("\n\n")[1].replace("\n", " "), "",
              "## Runs", ""]
    block = [f"### {stamp}", "", f"- machine: {machine}", f"- versions: {vers}", f"- command: `{cmd}`",
             f"- BLAS/OpenMP threads: {args.threads or 'library default'}", "",
             "Times in seconds as fit (nuisances + estimate + SE) + bootstrap = total; ratio = eocausal / DoubleML; "
             "estimates and SEs as eocausal / DoubleML (abs. difference); boot SE = SD of the bootstrap draws; "
             "peak memory = ru_maxrss of each worker in MB (the data alone in parentheses).", "",
             "| date | n | d | folds | B | load (1 min) | eocausal s | DoubleML s | ratio | ATE | SE (IF) | SE (boot) "
             "| peak MB eocausal / DoubleML |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
             "Other eocausal bootstraps on the same fit (time of the bootstrap alone):", "",
             "| date | n | bootstrap | fit s | bootstrap s | SE (boot) | SE (IF) |",
             "| --- | --- | --- | --- | --- | --- | --- |", *var_rows, ""]
    if notes:
        block += ["Notes:", *[f"- {x}" for x in notes], ""]
    append_block(RESULTS, "\n".join(header) + "\n", block, write=not args.no_write)
    print("\n".join(block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
