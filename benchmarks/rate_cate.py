"""RATE half-sample bootstrap cost, and eocausal.cate's overhead over calling EconML directly.

1. RATE at n = 100,000: ``rate(priority, scores, n_boot=200)`` (200 half-sample draws, vectorised)
   against 20 single RATE computations ``rate(..., n_boot=0)`` (each sorts, handles ties and computes
   the TOC), and against 20 minimal numpy singles (sort, tie average, cumulative sum). Goal:
   ratio <= 1. Also with 20,000 clusters of 5, with tied priorities (100 levels),
   and a naive bootstrap that calls ``rate(n_boot=0)`` on each half-sample (the loop the
   vectorisation replaces), on 20 draws, scaled to 200.
2. CATE: CausalForestDML with fixed settings, cross-fitted in K = 5 grouped folds plus a
   final fit on all units, through ``eocausal.cate`` and through the same EconML calls written
   by hand (same folds, same settings, same seeds; the out-of-fold predictions are checked to
   be identical). eocausal's extra work: input checks, folds, per-arm ridge outcome models for
   the doubly robust scores and (observational case) propensity predictions from each fold's
   fitted model_t.
   Goal: overhead < 10%. Two cases: an RCT with known e = 0.5 (EconML gets e as a control
   column and a classifier that returns it, as eocausal passes it), and an observational design
   (model_t = LogisticRegression in both arms).

BLAS runs single-threaded in both arms (``--threads``), the forest uses ``n_jobs=-1`` (threads).
Timings are medians of ``--repeats`` interleaved runs, as wall time and as process CPU time (all
threads): on a shared machine the wall time of a 20 s run varies by +-30% with other users'
load, the CPU time much less, so the CPU overhead is the figure to read. Appends a row per part to
benchmarks/results/rate_cate.md.

Usage: python -m benchmarks.rate_cate [--n-rate 100000] [--n-cate 3000] [--trees 100]
       [--repeats 3] [--threads 1] [--skip-cate] [--skip-rate] [--no-save]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks._machine import RESULTS_DIR, append_text, command, machine_line, utc_stamp, versions

RESULTS = RESULTS_DIR / "rate_cate.md"


def timed(f, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


# ----------------------------------------------------------------------------- RATE


def _bare_autoc(priority, scores):
    """A minimal single AUTOC (sort, average ties, cumulative sum): the cheapest 'single computation'."""
    o = np.argsort(-priority)
    ps, g = priority[o], scores[o]
    new = np.r_[True, ps[1:] != ps[:-1]]
    if not new.all():
        starts = np.flatnonzero(new)
        cnt = np.diff(np.r_[starts, len(g)])
        g = np.repeat(np.add.reduceat(g, starts) / cnt, cnt)
    c = np.cumsum(g)
    return float(np.mean(c / np.arange(1, len(g) + 1)) - c[-1] / len(g))


def bench_rate(n: int, repeats: int) -> list[dict]:
    from eocausal.diagnostics.rank_average import half_sample_masks, rate

    rng = np.random.default_rng(0)
    x = rng.uniform(size=n)
    priority = x + 0.5 * rng.normal(size=n)
    scores = x + 3 * rng.normal(size=n)
    clusters = np.repeat(np.arange(n // 5), 5)
    tied = np.floor(priority * 20) / 20  # about 100 distinct levels
    rows = []
    for label, p, cl in (("continuous priority", priority, None),
                         (f"{n // 5:,} clusters of 5", priority, clusters),
                         ("tied priority (~100 levels)", tied, None)):
        rate(p, scores, n_boot=5, clusters=cl)  # warm up
        t_single20 = timed(lambda: [rate(p, scores, n_boot=0, clusters=cl) for _ in range(20)], repeats)
        t_bare20 = timed(lambda: [_bare_autoc(p, scores) for _ in range(20)], repeats)
        t_boot = timed(lambda: rate(p, scores, n_boot=200, clusters=cl), repeats)
        rows.append({"case": label, "n": n, "t_boot": t_boot, "t_single20": t_single20,
                     "ratio": t_boot / t_single20, "t_bare20": t_bare20, "ratio_bare": t_boot / t_bare20})
    # the loop the vectorisation replaces: recompute RATE on each half-sample (20 draws, x10)
    masks = half_sample_masks(n, 20, seed=0)
    t_loop = timed(lambda: [rate(priority[m], scores[m], n_boot=0) for m in masks], 1) * 10
    rows[0]["t_naive_loop"] = t_loop
    return rows


# ----------------------------------------------------------------------------- CATE


def bench_cate(n: int, trees: int, repeats: int, seed: int = 0) -> list[dict]:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LogisticRegression

    from econml.dml import CausalForestDML
    from eocausal.estimators.cate import KnownPropensity, cate
    from eocausal.data.folds import grouped_folds

    rng = np.random.default_rng(seed)
    p = 10
    X = rng.normal(size=(n, p))
    groups = np.repeat(np.arange(n // 5), 5)
    folds = 5

    def settings(model_t):
        return dict(model_y=RandomForestRegressor(n_estimators=50, min_samples_leaf=10, random_state=seed),
                    model_t=model_t, discrete_treatment=True, n_estimators=trees, min_samples_leaf=5,
                    random_state=seed)

    rows = []
    for case in ("rct", "observational"):
        if case == "rct":
            e = np.full(n, 0.5)
            w = (rng.random(n) < e).astype(int)
        else:
            e = 1 / (1 + np.exp(-X[:, 0]))
            w = (rng.random(n) < e).astype(int)
        y = X[:, 0] + w * (1 + X[:, 1]) + rng.normal(size=n)

        def via_eocausal():
            if case == "rct":
                kw = {k: v for k, v in settings(None).items() if k not in ("model_t", "discrete_treatment",
                                                                              "random_state")}
                return cate(y, w, X, learner="causal_forest", propensity_scores=0.5, clusters=groups, folds=folds,
                            seed=seed, **kw).tau_hat
            kw = {k: v for k, v in settings(LogisticRegression()).items()
                  if k not in ("discrete_treatment", "random_state")}
            return cate(y, w, X, learner="causal_forest", clusters=groups, folds=folds, seed=seed, **kw).tau_hat

        def via_econml():
            fold_ids = grouped_folds(n, groups, folds, seed, stratify=w)
            tau = np.empty(n)
            Wc = e[:, None] if case == "rct" else None
            mt = KnownPropensity() if case == "rct" else LogisticRegression()
            for k in range(folds):
                te, tr = fold_ids == k, fold_ids != k
                est = CausalForestDML(**settings(mt))
                est.fit(y[tr], w[tr], X=X[tr], W=None if Wc is None else Wc[tr], groups=groups[tr])
                tau[te] = est.effect(X[te])
            CausalForestDML(**settings(mt)).fit(y, w, X=X, W=Wc, groups=groups)
            return tau

        same = np.allclose(via_eocausal(), via_econml(), rtol=0, atol=1e-12)
        t_eo, t_ec, c_eo, c_ec = [], [], [], []
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both arms
            for fn, wall, cpu in ((via_eocausal, t_eo, c_eo), (via_econml, t_ec, c_ec)):
                t0, p0 = time.perf_counter(), time.process_time()
                fn()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - p0)
        t0 = time.perf_counter()
        CausalForestDML(**settings(KnownPropensity() if case == "rct" else LogisticRegression())).fit(
            y, w, X=X, W=e[:, None] if case == "rct" else None, groups=groups)
        t_one = time.perf_counter() - t0
        rows.append({"case": case, "n": n, "t_eocausal": float(np.median(t_eo)), "t_econml": float(np.median(t_ec)),
                     "overhead": float(np.median(t_eo) / np.median(t_ec) - 1), "t_single_fit": t_one,
                     "cpu_eocausal": float(np.median(c_eo)), "cpu_econml": float(np.median(c_ec)),
                     "overhead_cpu": float(np.median(c_eo) / np.median(c_ec) - 1),
                     "identical": same, "runs_eo": t_eo, "runs_ec": t_ec})
    return rows


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-rate", type=int, default=100_000)
    ap.add_argument("--n-cate", type=int, default=3000)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads in both arms (default 1)")
    ap.add_argument("--skip-cate", action="store_true")
    ap.add_argument("--skip-rate", action="store_true")
    ap.add_argument("--no-save", action="store_true", help="print only; do not append to the results file")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    when, machine = utc_stamp(), machine_line()
    vers, cmd = versions("numpy", "sklearn", "econml"), command("rate_cate")
    print(f"date: {when}\nmachine: {machine}\n{vers}\ncommand: {cmd}")
    with threadpool_limits(limits=args.threads, user_api="blas"):
        load0 = os.getloadavg()[0]
        rate_rows = [] if args.skip_rate else bench_rate(args.n_rate, args.repeats)
        cate_rows = [] if args.skip_cate else bench_cate(args.n_cate, args.trees, args.repeats)
        load1 = os.getloadavg()[0]
    load = f"{load0:.2f} / {load1:.2f}"
    for r in rate_rows:
        print(f"RATE {r['case']}: B=200 {r['t_boot']:.3f} s, 20 singles {r['t_single20']:.3f} s, "
              f"ratio {r['ratio']:.2f}; 20 bare numpy singles {r['t_bare20']:.3f} s, ratio {r['ratio_bare']:.2f}" + (f", naive loop of 200 recomputations {r['t_naive_loop']:.2f} s"
                                           if "t_naive_loop" in r else ""))
    for r in cate_rows:
        print(f"CATE {r['case']}: eocausal {r['t_eocausal']:.2f} s, EconML by hand {r['t_econml']:.2f} s, "
              f"overhead {r['overhead']:+.1%}; CPU time {r['cpu_eocausal']:.2f} vs {r['cpu_econml']:.2f} s, "
              f"overhead {r['overhead_cpu']:+.1%}; "
              f"runs {np.round(r['runs_eo'], 2).tolist()} vs {np.round(r['runs_ec'], 2).tolist()}, "
              f"identical predictions {r['identical']}, "
              f"one EconML fit on all units {r['t_single_fit']:.2f} s")

    header = ("# RATE bootstrap cost and eocausal.cate overhead over EconML\n\n"
              "`python -m benchmarks.rate_cate` (see its docstring). RATE: AUTOC with B = 200 half-sample "
              "draws against 20 single computations (B = 0) at the same n (goal: ratio <= 1). CATE: "
              "CausalForestDML (100 trees, model_y = random forest of 50 trees), 5 grouped folds + a final "
              "fit, through eocausal.cate and through the same EconML calls by hand (goal: overhead < 10%). "
              "Medians of interleaved repeats, wall and process CPU time (the CPU figure is the robust one "
              "on a shared machine); BLAS single-threaded in both arms; load = 1-min load average before / "
              "after.\n\n"
              "| date | machine | load | command | part | case | n | eocausal / ours (s) | reference (s) "
              "| ratio or overhead | notes | versions |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    new = ""
    for r in rate_rows:
        note = f"vs 20 bare numpy singles ({r['t_bare20']:.3f} s): {r['ratio_bare']:.2f}"
        if "t_naive_loop" in r:
            note += f"; naive loop of 200 recomputations: {r['t_naive_loop']:.2f} s"
        new += (f"| {when} | {machine} | {load} | `{cmd}` | RATE B=200 vs 20 singles | {r['case']} | {r['n']} | "
                f"{r['t_boot']:.3f} | {r['t_single20']:.3f} | {r['ratio']:.2f} | {note} | {vers} |\n")
    for r in cate_rows:
        new += (f"| {when} | {machine} | {load} | `{cmd}` | CATE eocausal vs EconML | {r['case']} | {r['n']} | "
                f"{r['t_eocausal']:.2f} | {r['t_econml']:.2f} | wall {r['overhead']:+.1%}, CPU {r['overhead_cpu']:+.1%} "
                f"| CPU time {r['cpu_eocausal']:.2f} vs {r['cpu_econml']:.2f} s; identical "
                f"predictions: {r['identical']}; one EconML fit on all units {r['t_single_fit']:.2f} s | {vers} |\n")
    if args.no_save:
        return
    append_text(RESULTS, header, new)
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
