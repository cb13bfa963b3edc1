"""34 trials on 68,619 units in one ``eocausal.estimate`` call, against a Python loop of DoubleML's IRM.

The size of the seed papers' aid study: n = 68,619 units with 25 tabular covariates (20 continuous,
5 binary) and a 64-dimensional image embedding driven by 8 latent image factors that also confound
every trial. 34 trials are treatment columns holding 1 (treated), 0 (control) or missing (not in
the trial): each trial covers a random 15-60% of the units, and within it the treatment follows a
logistic model of the covariates and the image factors (treated shares of about 18-44%). One
outcome carries every trial's effect.

eocausal: ``estimate(df, outcome="y", confounders=X columns, embeddings=Z, trials=[34 columns],
methods=["aipw"], adjustments=["tabular+image"], propensity=P, outcome_model=LinearRegression(),
folds=5, clip=1e-3)`` with P = make_pipeline(StandardScaler(), LogisticRegression(C=1.0,
max_iter=1000)) (fixed penalty). DoubleML: for each trial, ``DoubleMLIRM(DoubleMLData.from_arrays(
[X, Z], y, w), LinearRegression(), P, n_folds=5, score="ATE", normalize_ipw=False,
ps_processor_config=PSProcessorConfig(clipping_threshold=1e-3))`` with the sample splitting set to
eocausal's fold assignment (``grouped_folds(n_trial, None, 5, seed=0, stratify=w)``, computed
before the timer starts), so that both fit the same models on the same rows. eocausal solves
them with its native fold-sharing solvers (``solver="native"``, the default: Newton for the
logistic model, cross-products for least squares), DoubleML with scikit-learn's L-BFGS at its
default tolerance (1e-4), so the estimates agree to that tolerance, not to the last digit
(``solver="sklearn"`` reproduces DoubleML exactly: runs before 2026-11-27 04:00 UTC). Each side runs in a fresh subprocess (one BLAS thread by default); only the
estimation is timed (data simulation is not). A third subprocess profiles the eocausal call with
cProfile.

Usage: python -m benchmarks.trials [--n 68619] [--trials 34] [--repeat 1] [--threads 1]
       [--default-adjustments] [--no-profile] [--no-write]
Appends a run block to benchmarks/results/trials.md (written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._machine import (RESULTS_DIR, append_block, command, machine_line, run_json_worker, utc_stamp,
                                 versions)

RESULTS = RESULTS_DIR / "trials.md"
CLIP = 1e-3
FOLDS = 5


def make_data(n: int = 68_619, n_trials: int = 34, p: int = 25, d: int = 64, seed: int = 0):
    """(frame with x00..x24, y, t00..t33; embedding Z (n, d); true effects (n_trials,))."""
    import pandas as pd
    from scipy.special import expit

    rng = np.random.default_rng(seed)
    k = 8
    L = rng.standard_normal((n, k))  # latent image factors
    Z = L @ rng.normal(size=(k, d)) / np.sqrt(k) + 0.5 * rng.standard_normal((n, d))
    X = np.empty((n, p))
    X[:, :20] = L[:, :4] @ rng.normal(scale=0.4, size=(4, 20)) + rng.standard_normal((n, 20))
    X[:, 20:] = (rng.uniform(size=(n, p - 20)) < 0.3).astype(float)
    y = X @ rng.normal(0, 0.3, p) + L @ rng.normal(0, 0.5, k) + rng.standard_normal(n)
    taus = rng.normal(0.3, 0.5, n_trials)
    T = np.full((n, n_trials), np.nan)
    for t in range(n_trials):
        member = rng.uniform(size=n) < rng.uniform(0.15, 0.6)
        lin = rng.normal(-0.9, 0.3) + X @ rng.normal(0, 0.12, p) + L @ rng.normal(0, 0.3, k)
        w = (rng.uniform(size=n) < expit(lin)).astype(float)
        T[member, t] = w[member]
        y += taus[t] * (member & (w == 1))
    cols = {f"x{j:02d}": X[:, j] for j in range(p)}
    cols["y"] = y
    cols.update({f"t{t:02d}": T[:, t] for t in range(n_trials)})
    return pd.DataFrame(cols), Z, taus


def learners():
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return LinearRegression(), make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def _names(df):
    return [c for c in df.columns if c.startswith("x")], [c for c in df.columns if c.startswith("t")]


def run_eocausal(df, Z, adjustments=("tabular+image",)):
    import eocausal

    ml_g, ml_m = learners()
    xcols, tcols = _names(df)
    return eocausal.estimate(df, outcome="y", confounders=xcols, embeddings=Z, trials=tcols, methods=["aipw"],
                             adjustments=list(adjustments) if adjustments else None, propensity=ml_m,
                             outcome_model=ml_g, folds=FOLDS, clip=CLIP, seed=0)


def _categories(stats) -> dict:
    """Seconds (cumulative, inclusive) of the functions that make up the call, from a pstats dict."""
    want = {
        "propensity fits (LogisticRegression pipeline .fit)": ("sklearn/pipeline.py", "fit"),
        "propensity predictions (.predict_proba)": ("sklearn/pipeline.py", "predict_proba"),
        "outcome fits (LinearRegression.fit)": ("sklearn/linear_model/_base.py", "fit"),
        "outcome predictions (LinearRegression.predict)": ("sklearn/linear_model/_base.py", "predict"),
        "sklearn.base.clone": ("sklearn/base.py", "clone"),
        "eocausal crossfit_propensity": ("eocausal/estimators/propensity.py", "crossfit_propensity"),
        "- native Newton fits (glm.newton_logistic)": ("eocausal/estimators/glm.py", "newton_logistic"),
        "- fold layouts (glm.FoldLayout: centre, scale, sort)": ("eocausal/estimators/glm.py", "__init__"),
        "- native least squares (glm.crossfit_linear)": ("eocausal/estimators/glm.py", "crossfit_linear"),
        "eocausal crossfit_outcome": ("eocausal/estimators/aipw.py", "crossfit_outcome"),
        "eocausal grouped_folds": ("eocausal/data/folds.py", "grouped_folds"),
        "eocausal balance_table": ("eocausal/diagnostics/balance.py", "balance_table"),
        "eocausal _check_overlap": ("eocausal/analysis.py", "_check_overlap"),
        "eocausal aipw (score)": ("eocausal/estimators/aipw.py", "aipw"),
        "eocausal _estimate_trial (all per-trial work)": ("eocausal/analysis.py", "_estimate_trial"),
        "eocausal _trials (treatment columns)": ("eocausal/analysis.py", "_trials"),
        "eocausal _as_units (Units.from_frame)": ("eocausal/analysis.py", "_as_units"),
        "eocausal _align_embeddings": ("eocausal/analysis.py", "_align_embeddings"),
        "eocausal _adjust_pvalues": ("eocausal/analysis.py", "_adjust_pvalues"),
        "numpy hstack (design per trial)": ("numpy/_core/shape_base.py", "hstack"),
    }
    out = {}
    for label, (path, func) in want.items():
        tot, calls = 0.0, 0
        for (fname, _line, fn), (cc, nc, tt, ct, callers) in stats.items():
            if fn == func and fname.replace("\\", "/").endswith(path):
                tot += ct
                calls += nc
        out[label] = (tot, calls)
    return out


def _doubleml_loop(df, Z):
    """DoubleMLIRM per trial on eocausal's folds; returns (estimates, seconds of the loop alone)."""
    import doubleml as dml
    from doubleml.utils import PSProcessorConfig
    from sklearn.base import clone

    from eocausal.data.folds import grouped_folds

    xcols, tcols = _names(df)
    X = df[xcols].to_numpy()
    y = df["y"].to_numpy()
    prepared = []
    for t in tcols:  # eocausal's fold assignment per trial, computed before the timer starts
        v = df[t].to_numpy()
        mask = ~np.isnan(v)
        w = v[mask]
        fold = grouped_folds(int(mask.sum()), None, FOLDS, 0, stratify=w)
        prepared.append((t, mask, w, [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(FOLDS)]))
    ml_g, ml_m = learners()
    est = {}
    t0 = time.perf_counter()
    for t, mask, w, smpl in prepared:
        data = dml.DoubleMLData.from_arrays(np.hstack([X[mask], Z[mask]]), y[mask], w)
        m = dml.DoubleMLIRM(data, clone(ml_g), clone(ml_m), n_folds=FOLDS, score="ATE", normalize_ipw=False,
                            ps_processor_config=PSProcessorConfig(clipping_threshold=CLIP),
                            draw_sample_splitting=False)
        m.set_sample_splitting(smpl)
        m.fit()
        est[t] = {"tabular+image": (float(m.coef[0]), float(m.se[0]), int(mask.sum()), int(w.sum()), "")}
    return est, time.perf_counter() - t0


def worker(kind: str, args) -> dict:
    import warnings

    df, Z, taus = make_data(args.n, args.trials, seed=args.seed)
    xcols, tcols = _names(df)
    # warm-up on a small problem, untimed: imports (sklearn, scipy.stats, statsmodels, doubleml) and lazy
    # first-call costs are paid before the timer starts, on both sides
    small, Zs, _ = make_data(2000, 2, seed=args.seed + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "doubleml":
            _doubleml_loop(small, Zs)
        else:
            run_eocausal(small, Zs, None if kind == "eocausal-default" else ("tabular+image",))
    out = {"kind": kind, "n": len(df), "load_before": os.getloadavg()[0]}
    if kind in ("eocausal", "eocausal-default", "profile"):
        adjustments = None if kind == "eocausal-default" else ("tabular+image",)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if kind == "profile":
                import cProfile
                import pstats

                prof = cProfile.Profile()
                t0 = time.perf_counter()
                prof.enable()
                table = run_eocausal(df, Z, adjustments)
                prof.disable()
                out["seconds"] = time.perf_counter() - t0
                st = pstats.Stats(prof)
                out["categories"] = _categories(st.stats)
                rows = []
                for (fname, line, fn), (cc, nc, tt, ct, _) in st.stats.items():
                    rows.append((ct, tt, nc, f"{Path(fname).name}:{line}({fn})"))
                out["top_cumulative"] = sorted(rows, reverse=True)[:40]
                out["top_tottime"] = sorted(rows, key=lambda r: -r[1])[:25]
            else:
                t0 = time.perf_counter()
                table = run_eocausal(df, Z, adjustments)
                out["seconds"] = time.perf_counter() - t0
        out["warnings"] = sorted({f"{c.category.__name__}: {str(c.message)[:100]}" for c in caught})
        est = {}
        for r in table.rows:
            est.setdefault(r.trial, {})[r.adjustment] = (r.estimate, r.std_error, r.n, r.n_treated, r.note)
        out["estimates"] = est
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est, out["seconds"] = _doubleml_loop(df, Z)
        out["warnings"] = sorted({f"{c.category.__name__}: {str(c.message)[:100]}" for c in caught})
        out["estimates"] = est
    out["taus"] = taus.tolist()
    out["load_after"] = os.getloadavg()[0]
    return out


def run_worker(kind: str, args) -> dict:
    out = run_json_worker("benchmarks.trials", ["--worker", kind, "--n", str(args.n), "--trials", str(args.trials),
                                                "--seed", str(args.seed)], threads=args.threads)
    print(f"{kind}: {out['seconds']:.1f} s (load {out['load_before']:.2f} -> {out['load_after']:.2f})", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=68_619)
    ap.add_argument("--trials", type=int, default=34)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads in the workers (0: library default)")
    ap.add_argument("--repeat", type=int, default=1, help="eocausal/DoubleML pairs (alternating which runs first)")
    ap.add_argument("--default-adjustments", action="store_true",
                    help="also time the call without adjustments= (every confounder set: tabular, image, both)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return 0

    stamp, machine = utc_stamp(), machine_line()
    cmd, vers = command("trials", argv), versions("numpy", "sklearn", "doubleml")
    rows, diffs, last = [], [], {}
    for r in range(args.repeat):
        order = ("eocausal", "doubleml") if r % 2 == 0 else ("doubleml", "eocausal")
        res = {k: run_worker(k, args) for k in order}
        eo, dm = res["eocausal"], res["doubleml"]
        d_est = max(abs(eo["estimates"][t]["tabular+image"][0] - dm["estimates"][t]["tabular+image"][0])
                    for t in dm["estimates"])
        d_se = max(abs(eo["estimates"][t]["tabular+image"][1] - dm["estimates"][t]["tabular+image"][1])
                   for t in dm["estimates"])
        diffs.append((d_est, d_se))
        rows.append(f"| {r + 1} | {' then '.join(order)} | {eo['load_before']:.2f} / {dm['load_before']:.2f} "
                    f"| {eo['seconds']:.1f} | {dm['seconds']:.1f} | {dm['seconds'] / eo['seconds']:.2f} "
                    f"| {d_est:.1e} | {d_se:.1e} |")
        last = res
    eo, dm = last["eocausal"], last["doubleml"]
    trial_rows = []
    for i, t in enumerate(sorted(dm["estimates"])):
        e, s, n, n1, _ = eo["estimates"][t]["tabular+image"]
        de, ds, *_ = dm["estimates"][t]["tabular+image"]
        trial_rows.append(f"| {t} | {n:,} | {n1:,} | {eo['taus'][i]:+.3f} | {e:+.6f} | {de:+.6f} | {abs(e - de):.1e} "
                          f"| {s:.6f} | {ds:.6f} |")
    n_trial_units = sum(v["tabular+image"][2] for v in dm["estimates"].values())
    block = [f"### {stamp}", "", f"- machine: {machine}", f"- versions: {vers}", f"- command: `{cmd}`",
             f"- BLAS/OpenMP threads per worker: {args.threads or 'library default'}",
             f"- data: n = {args.n:,} units, 25 tabular covariates + 64-dim embedding, {args.trials} trials, "
             f"{n_trial_units:,} unit-trial rows in all", "",
             "Seconds of the estimation alone (fresh subprocess each); ratio = DoubleML / eocausal (the goal is "
             ">= 5); differences are the maximum over trials of |eocausal - DoubleML|. Load = 1-min load average "
             "when each worker started.", "",
             "| pair | order | load eocausal / DoubleML | eocausal s | DoubleML loop s | speed-up | max abs diff ATE "
             "| max abs diff SE |", "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, ""]
    warn_lines = sorted(set(eo["warnings"]) | {f"DoubleML: {w}" for w in dm["warnings"]})
    if warn_lines:
        block += ["Warnings raised during the timed calls (recorded, not raised):", "",
                  *[f"- {w}" for w in warn_lines[:12]], ""]
    if args.default_adjustments:
        dflt = run_worker("eocausal-default", args)
        block += [f"The same call without `adjustments=` (eocausal's default: every confounder set the inputs allow, "
                  f"tabular, image and tabular+image: three sets of models on 25, 64 and 89 columns): {dflt['seconds']:.1f} s "
                  f"(load {dflt['load_before']:.2f}).", ""]
    if not args.no_profile:
        prof = run_worker("profile", args)
        block += [f"cProfile of the eocausal call ({prof['seconds']:.1f} s under the profiler, load "
                  f"{prof['load_before']:.2f}); inclusive seconds and call counts of the parts:", "",
                  "| part | seconds (inclusive) | calls |", "| --- | --- | --- |",
                  *[f"| {k} | {v[0]:.2f} | {v[1]} |" for k, v in prof["categories"].items()], "",
                  "Top functions by inclusive (cumulative) time:", "",
                  "| cumulative s | own s | calls | function |", "| --- | --- | --- | --- |",
                  *[f"| {c:.2f} | {t:.2f} | {nc} | `{f}` |" for c, t, nc, f in prof["top_cumulative"][:30]], "",
                  "Top functions by own time:", "",
                  "| own s | cumulative s | calls | function |", "| --- | --- | --- | --- |",
                  *[f"| {t:.2f} | {c:.2f} | {nc} | `{f}` |" for c, t, nc, f in prof["top_tottime"][:20]], ""]
    block += ["Per trial (last pair): true effect, estimates and SEs of both:", "",
              "| trial | n | treated | true ATE | eocausal | DoubleML | abs diff | SE eocausal | SE DoubleML |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *trial_rows, ""]
    header = ["# 34 trials on 68,619 units: one eocausal.estimate call vs a loop of DoubleML IRM", "",
              __doc__.split("\n\n")[1].replace("\n", " "), "", __doc__.split("\n\n")[2].replace("\n", " "), "",
              "## Runs", ""]
    append_block(RESULTS, "\n".join(header) + "\n", block, write=not args.no_write)
    print("\n".join(block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
