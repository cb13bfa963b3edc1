"""Heterogeneous effects at large n: cate(learner='dr_boost') against EconML's CausalForestDML.

One simulated design throughout (:func:`simulate`): 64 embedding columns and 10 tabular
covariates; units in clusters of 10 (villages) whose embeddings share a cluster component; an
observational treatment (propensity from a covariate and an embedding direction, in [0.2, 0.8]);
a known CATE tau = 1 + 0.8 tanh(z'u1) + 0.5 1{z'u2 > 0} + 0.3 x1 that depends on two embedding
directions (u1, u2: random unit vectors over all 64 columns) and one covariate; outcome noise SD 1.

Four measurements, each in fresh subprocesses (their own peak memory, ``ru_maxrss``):

1. ``compare`` (n = 100,000 by default): ``eocausal.cate`` with ``learner='dr_boost'`` and with
   ``learner='causal_forest'`` (EconML's CausalForestDML with eocausal's defaults: ridge and
   logistic nuisances, 100 trees, 5 cross-fitting folds grouped by cluster; dr_boost on its two
   honest halves, grouped by the same clusters, with the same seed) and the same evaluation: seconds, peak memory, the correlation of the out-of-fold CATEs with tau, and
   RATE (AUTOC, 200 half-sample draws by cluster) of each, with each learner's own scores and,
   for a like-for-like comparison, both priorities on the DR-boost scores (``rate(...,
   compare=...)``: the paired difference and its SE). The "true AUTOC" is the statistic with the
   known tau in place of the scores.
2. ``scale`` (n = 1,000,000 by default): the whole evaluation path with ``dr_boost``: ``cate()``,
   ``rate()`` with 200 half-sample draws, ``blp_gates()`` and ``test_calibration()``; seconds per
   step and peak memory.
3. ``coverage``: the RATE interval of the fast path over ``--reps`` replications at
   ``--coverage-n`` units (seeds 1..reps, parallel over ``--jobs`` processes): the share of 95%
   intervals that contain the target, the AUTOC of the same priorities with the true tau in place
   of the scores (the rule's value on these units). Monte Carlo SE of the share:
   sqrt(c (1 - c) / reps) at the measured coverage c. Rows: ``cate(learner='dr_boost')`` as
   shipped (the two-way honest split: a half's priorities from a model fitted on the other half,
   its scores cross-fitted within it); the scheme it replaced, K = 5 folds whose priorities come
   from a model fitted on the other folds (nuisances nested within them) evaluated with scores
   whose nuisances are cross-fitted on the same other folds ("shared D_-k", the usual cross-fit),
   and with those priorities, scores cross-fitted within each fold (honest but with nuisances on
   n / 5 units); and the same intervals with the true nuisances in the scores and priorities that
   do not depend on the data (tau plus independent noise, SD 0.5): what the half-sample SE covers
   when the priorities are fixed.
4. ``crossover``: both learners at ``--crossover-n`` sizes (seeds 0, 1, 2): seconds, correlation
   with tau and true AUTOC, averaged over seeds: from which n on ``dr_boost`` is the better choice.
5. ``--forest-reps N`` (off by default): the RATE interval coverage of ``causal_forest`` as in 3.

Usage: python -m benchmarks.cate_scale [--compare-n 100000] [--scale-n 1000000] [--coverage-n 2000]
       [--reps 200] [--jobs 2] [--threads 2] [--crossover-n 2000 5000 10000 20000] [--forest-reps 0]
       [--skip compare scale coverage crossover] [--no-write]
Appends to benchmarks/results/cate_scale.md (written atomically).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from benchmarks._machine import (RESULTS_DIR, append_block, command, machine, machine_line, run_json_worker,
                                 utc_stamp, versions)

RESULTS = RESULTS_DIR / "cate_scale.md"


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def simulate(n: int, seed: int = 0, d: int = 64, p: int = 10, cluster_size: int = 10):
    """(y, w, X, Z, tau, clusters) of the design in the module docstring."""
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(12345).standard_normal((3, d))  # fixed across replications
    u1, u2, u3 = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    clusters = np.arange(n) // cluster_size
    n_cl = int(clusters[-1]) + 1
    Z = (0.7 * rng.standard_normal((n_cl, d)).astype(np.float32)[clusters]
         + 0.7 * rng.standard_normal((n, d)).astype(np.float32))
    X = rng.standard_normal((n, p)).astype(np.float32)
    z1, z2, z3 = Z @ u1, Z @ u2, Z @ u3
    tau = 1.0 + 0.8 * np.tanh(z1) + 0.5 * (z2 > 0) + 0.3 * X[:, 0]
    e = 0.2 + 0.6 / (1.0 + np.exp(-(0.5 * X[:, 1] + 0.5 * z3)))
    w = (rng.uniform(size=n) < e).astype(np.int8)
    y = X[:, :4].sum(1) + 0.5 * Z[:, :8].sum(1) + w * tau + rng.standard_normal(n)
    return y.astype(float), w, X, Z, tau.astype(float), clusters


def _cate(n: int, learner: str, seed: int = 0):
    import eocausal

    y, w, X, Z, tau, g = simulate(n, seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EconML's and scikit-learn's FutureWarnings
        res = eocausal.cate(y, w, X=X, embeddings=Z, clusters=g, learner=learner, seed=seed, fit_final=False)
    return res, tau, time.perf_counter() - t0


def worker_compare(n: int, learner: str) -> dict:
    import eocausal

    res, tau, seconds = _cate(n, learner)
    r = eocausal.rate(res, n_boot=200)
    true = eocausal.rate(res.tau_hat, tau, n_boot=0)
    np.save(RESULTS_DIR / f".cate_scale_{learner}.npy", res.tau_hat)
    return {"seconds": seconds, "peak_gb": _peak_gb(), "corr": float(np.corrcoef(res.tau_hat, tau)[0, 1]),
            "rate": r.estimate, "rate_se": r.std_error, "true_autoc": true.estimate}


def worker_paired(n: int) -> dict:
    """Both priorities on the DR-boost scores, on the same half-sample draws."""
    import eocausal

    boost, tau, _ = _cate(n, "dr_boost")
    forest = np.load(RESULTS_DIR / ".cate_scale_causal_forest.npy")
    r = eocausal.rate(boost, compare=forest, n_boot=200)
    f = eocausal.rate(forest, boost.scores, clusters=boost.clusters, n_boot=200)
    return {"boost": r.estimate, "boost_se": r.std_error, "forest": f.estimate, "forest_se": f.std_error,
            "diff": r.diff, "diff_se": r.diff_se}


def worker_scale(n: int) -> dict:
    import eocausal
    from eocausal.diagnostics import blp_gates, test_calibration

    y, w, X, Z, tau, g = simulate(n, 0)
    steps = {}
    t0 = time.perf_counter()
    res = eocausal.cate(y, w, X=X, embeddings=Z, clusters=g, learner="dr_boost", fit_final=False)
    steps["cate"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    r = eocausal.rate(res, n_boot=200)
    steps["rate"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    gates = blp_gates(res)
    steps["blp_gates"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    cal = test_calibration(res)
    steps["calibration"] = time.perf_counter() - t3
    return {"steps": steps, "total": time.perf_counter() - t0, "peak_gb": _peak_gb(),
            "corr": float(np.corrcoef(res.tau_hat, tau)[0, 1]), "rate": r.estimate, "rate_se": r.std_error,
            "gates_groups": int(len(gates.gates)) if hasattr(gates, "gates") else None,
            "calibration": repr(cal)[:200]}


def _interval(r, target: float, **extra) -> dict:
    return {"estimate": r.estimate, "se": r.std_error, "target": target,
            "covered": bool(abs(r.estimate - target) <= 1.959964 * r.std_error), **extra}


def _one_rep(job) -> dict:
    n, seed = job
    import eocausal

    res, tau, _ = _cate(n, "dr_boost", seed)
    r = eocausal.rate(res, n_boot=200, seed=seed)
    target = eocausal.rate(res.tau_hat, tau, n_boot=0).estimate
    return _interval(r, target, seed=seed, corr=float(np.corrcoef(res.tau_hat, tau)[0, 1]))


def _kfold_rep(job) -> dict:
    """The scheme dr_boost replaced, on the same data: K = 5 folds (those cate() would draw), fold
    k's priorities from a final model fitted on the other folds' pseudo-outcomes (nuisances nested
    within them), evaluated (a) with AIPW scores whose nuisances are cross-fitted on all folds, so
    fitted on the same other folds as fold k's priorities ('shared'), (b) with scores whose
    nuisances are cross-fitted within fold k ('within')."""
    n, seed = job
    import eocausal
    from eocausal.data.folds import grouped_folds, training_splits
    from eocausal.estimators import dr_boost
    from eocausal.estimators.aipw import aipw_scores
    from eocausal.estimators.cate import _default_logit

    y, w, X, Z, tau, g = simulate(n, seed)
    F = np.hstack([X, Z]).astype(float)
    wf = w.astype(float)
    p = X.shape[1]
    folds = grouped_folds(n, g, 5, seed, stratify=w)

    def nuisances(rows, fold_ids):
        e, _, m0, m1 = dr_boost._nuisances(F[rows], y[rows], wf[rows], fold_ids, g[rows], None, _default_logit(p),
                                           "ridge", p, seed, 1e-3)
        return aipw_scores(y[rows], wf[rows], e, m0, m1)

    everyone = np.arange(n)
    tau_hat = np.empty(n)
    for _, test, train in training_splits(folds, w, "folds"):
        sub = np.flatnonzero(train)
        model = dr_boost._final_model(len(sub), seed, {}).fit(F[sub], nuisances(sub, folds[sub]))
        tau_hat[test] = model.predict(F[test])
    shared = nuisances(everyone, folds)
    within = np.empty(n)
    for k in range(5):
        rows = np.flatnonzero(folds == k)
        within[rows] = nuisances(rows, grouped_folds(len(rows), g[rows], 5, seed, stratify=w[rows]))
    target = eocausal.rate(tau_hat, tau, n_boot=0).estimate
    corr = float(np.corrcoef(tau_hat, tau)[0, 1])
    return {"shared": _interval(eocausal.rate(tau_hat, shared, clusters=g, n_boot=200, seed=seed), target, corr=corr),
            "within": _interval(eocausal.rate(tau_hat, within, clusters=g, n_boot=200, seed=seed), target, corr=corr)}


def _oracle_rep(job) -> dict:
    """The same RATE interval with the true nuisances in the scores and priorities that do not
    depend on the data (tau plus independent noise): what the half-sample SE covers by itself."""
    n, seed = job
    import eocausal

    y, w, X, Z, tau, g = simulate(n, seed)
    u = np.random.default_rng(12345).standard_normal((3, Z.shape[1]))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    e = 0.2 + 0.6 / (1.0 + np.exp(-(0.5 * X[:, 1] + 0.5 * (Z @ u[2]))))
    m0 = X[:, :4].sum(1) + 0.5 * Z[:, :8].sum(1)
    m1 = m0 + tau
    gamma = m1 - m0 + w * (y - m1) / e - (1 - w) * (y - m0) / (1 - e)
    priority = tau + np.random.default_rng(seed).normal(scale=0.5, size=n)
    r = eocausal.rate(priority, gamma, clusters=g, n_boot=200, seed=seed)
    target = eocausal.rate(priority, tau, n_boot=0).estimate
    return _interval(r, target, corr=float(np.corrcoef(priority, tau)[0, 1]))


def _summary(rows, reps) -> dict:
    est = np.array([r["estimate"] - r["target"] for r in rows])
    cov = float(np.mean([r["covered"] for r in rows]))
    return {"coverage": cov, "mc_se": float(np.sqrt(cov * (1 - cov) / reps)),
            "reps": reps, "mean_se": float(np.mean([r["se"] for r in rows])), "sd_error": float(est.std(ddof=1)),
            "bias": float(est.mean()), "corr": float(np.mean([r["corr"] for r in rows]))}


def _forest_rep(job) -> dict:
    n, seed = job
    import eocausal

    res, tau, _ = _cate(n, "causal_forest", seed)
    r = eocausal.rate(res, n_boot=200, seed=seed)
    target = eocausal.rate(res.tau_hat, tau, n_boot=0).estimate
    return _interval(r, target, corr=float(np.corrcoef(res.tau_hat, tau)[0, 1]))


def worker_forest_coverage(n: int, reps: int, jobs: int) -> dict:
    with ProcessPoolExecutor(jobs) as pool:
        rows = list(pool.map(_forest_rep, [(n, s) for s in range(1, reps + 1)]))
    return _summary(rows, reps)


def worker_crossover(sizes: list, seeds: int = 3) -> dict:
    import eocausal

    out = {}
    for n in sizes:
        for learner in ("dr_boost", "causal_forest"):
            rows = []
            for seed in range(seeds):
                res, tau, seconds = _cate(n, learner, seed)
                rows.append((seconds, float(np.corrcoef(res.tau_hat, tau)[0, 1]),
                             eocausal.rate(res.tau_hat, tau, n_boot=0).estimate))
            out[f"{n}:{learner}"] = [float(v) for v in np.mean(rows, axis=0)]
    return out


def worker_coverage(n: int, reps: int, jobs: int) -> dict:
    jobs_ = [(n, s) for s in range(1, reps + 1)]
    with ProcessPoolExecutor(jobs) as pool:
        rows = list(pool.map(_one_rep, jobs_))
        kfold = list(pool.map(_kfold_rep, jobs_))
        oracle = list(pool.map(_oracle_rep, jobs_))
    return {**_summary(rows, reps), "shared": _summary([r["shared"] for r in kfold], reps),
            "within": _summary([r["within"] for r in kfold], reps), "oracle": _summary(oracle, reps)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare-n", type=int, default=100_000)
    ap.add_argument("--scale-n", type=int, default=1_000_000)
    ap.add_argument("--coverage-n", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--crossover-n", type=int, nargs="*", default=[2000, 5000, 10000, 20000])
    ap.add_argument("--forest-reps", type=int, default=0,
                    help="also the RATE coverage of cate(learner='causal_forest') over this many replications")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[])
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        kind = job.pop("kind")
        out = {"compare": worker_compare, "paired": worker_paired, "scale": worker_scale,
               "coverage": worker_coverage, "crossover": worker_crossover,
               "forest_coverage": worker_forest_coverage}[kind](**job)
        print(json.dumps(out))
        return

    def run(threads=args.threads, **job):
        return run_json_worker("benchmarks.cate_scale", ["--worker", json.dumps(job)], threads=threads)

    mach = machine()
    lines = [f"## {utc_stamp()}", "", f"- machine: {machine_line()}; BLAS threads {args.threads}; "
             f"1-min load average at start {mach.get('load_avg_1min')}",
             f"- versions: {versions('numpy', 'scipy', 'sklearn', 'econml')}",
             f"- command: `{command('cate_scale', argv)}`", ""]
    if "compare" not in args.skip:
        n = args.compare_n
        a = run(kind="compare", n=n, learner="dr_boost")
        print(f"dr_boost n={n}: {a['seconds']:.1f} s", file=sys.stderr)
        b = run(kind="compare", n=n, learner="causal_forest")
        print(f"causal_forest n={n}: {b['seconds']:.1f} s", file=sys.stderr)
        pr = run(kind="paired", n=n)
        lines += [f"### n = {n:,}: dr_boost against CausalForestDML (same seed and clusters; CausalForestDML on 5 cross-fitting folds, dr_boost on its two honest halves with 5 sub-folds each; same evaluation)", "",
                  "| learner | seconds | peak GB | corr. with tau | RATE (AUTOC) ± SE, own scores | "
                  "RATE on the DR-boost scores | true AUTOC |", "| --- | --- | --- | --- | --- | --- | --- |",
                  f"| dr_boost | {a['seconds']:.1f} | {a['peak_gb']:.2f} | {a['corr']:.3f} | {a['rate']:.4f} ± "
                  f"{a['rate_se']:.4f} | {pr['boost']:.4f} ± {pr['boost_se']:.4f} | {a['true_autoc']:.4f} |",
                  f"| causal_forest | {b['seconds']:.1f} | {b['peak_gb']:.2f} | {b['corr']:.3f} | {b['rate']:.4f} ± "
                  f"{b['rate_se']:.4f} | {pr['forest']:.4f} ± {pr['forest_se']:.4f} | {b['true_autoc']:.4f} |", "",
                  f"- time ratio dr_boost / causal_forest: {a['seconds'] / b['seconds']:.3f}",
                  f"- paired RATE difference (dr_boost - causal_forest, same scores and draws): {pr['diff']:.4f} "
                  f"± {pr['diff_se']:.4f}", ""]
        (RESULTS_DIR / ".cate_scale_dr_boost.npy").unlink(missing_ok=True)
        (RESULTS_DIR / ".cate_scale_causal_forest.npy").unlink(missing_ok=True)
    if "scale" not in args.skip:
        n = args.scale_n
        s = run(kind="scale", n=n)
        print(f"scale n={n}: {s['total']:.1f} s, {s['peak_gb']:.2f} GB", file=sys.stderr)
        st = s["steps"]
        lines += [f"### n = {n:,}: dr_boost end to end ({args.threads} BLAS threads)", "",
                  "| cate() s | rate(), 200 draws s | blp_gates() s | test_calibration() s | total s | peak GB | "
                  "corr. with tau | RATE ± SE |", "| --- | --- | --- | --- | --- | --- | --- | --- |",
                  f"| {st['cate']:.1f} | {st['rate']:.1f} | {st['blp_gates']:.1f} | {st['calibration']:.1f} | "
                  f"{s['total']:.1f} | {s['peak_gb']:.2f} | {s['corr']:.3f} | {s['rate']:.4f} ± {s['rate_se']:.4f} |",
                  ""]
    if "crossover" not in args.skip:
        x = run(kind="crossover", sizes=list(args.crossover_n))
        lines += [f"### Which learner from which n ({args.threads} BLAS threads; means over seeds 0, 1, 2)", "",
                  "| n | dr_boost s | causal_forest s | dr_boost corr. with tau | causal_forest corr. | "
                  "dr_boost true AUTOC | causal_forest true AUTOC |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for n in args.crossover_n:
            b, f = x[f"{n}:dr_boost"], x[f"{n}:causal_forest"]
            lines.append(f"| {n:,} | {b[0]:.1f} | {f[0]:.1f} | {b[1]:.3f} | {f[1]:.3f} | {b[2]:.4f} | {f[2]:.4f} |")
        lines.append("")
        print(f"crossover: {x}", file=sys.stderr)
    if "coverage" not in args.skip:
        c = run(threads=1, kind="coverage", n=args.coverage_n, reps=args.reps, jobs=args.jobs)
        print(f"coverage: {c['coverage']:.3f}", file=sys.stderr)
        rows = [("dr_boost as shipped: two-way honest split", c),
                 ("5 folds, scores cross-fitted on the other folds (shared D_-k; the previous dr_boost)", c["shared"]),
                 ("5 folds, scores cross-fitted within each fold", c["within"]),
                 ("fixed priorities (tau + noise), true nuisances", c["oracle"])]
        lines += [f"### RATE interval coverage, n = {args.coverage_n:,}, {c['reps']} replications", "",
                  "| priorities and scores | coverage of 95% intervals | Monte Carlo SE | mean SE | "
                  "SD of estimate - target | mean bias | corr. of priorities with tau |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {name} | {r['coverage']:.3f} | {r['mc_se']:.3f} | {r['mean_se']:.4f} | {r['sd_error']:.4f} | "
                  f"{r['bias']:.4f} | {r['corr']:.3f} |" for name, r in rows]
        lines += ["", "Target: the AUTOC of each row's priorities with the true tau in place of the scores. "
                  "Monte Carlo SE: sqrt(c (1 - c) / reps).", ""]
    if args.forest_reps:
        f = run(threads=1, kind="forest_coverage", n=args.coverage_n, reps=args.forest_reps, jobs=args.jobs)
        print(f"forest coverage: {f['coverage']:.3f}", file=sys.stderr)
        lines += [f"### RATE interval coverage of cate(learner='causal_forest'), n = {args.coverage_n:,}, "
                  f"{f['reps']} replications", "",
                  "| coverage of 95% intervals | Monte Carlo SE | mean SE | SD of estimate - target | mean bias | "
                  "corr. of priorities with tau |", "| --- | --- | --- | --- | --- | --- |",
                  f"| {f['coverage']:.3f} | {f['mc_se']:.3f} | {f['mean_se']:.4f} | {f['sd_error']:.4f} | "
                  f"{f['bias']:.4f} | {f['corr']:.3f} |", "",
                  "EconML's CausalForestDML on 5 folds; its scores' nuisances cross-fitted on the same folds (the "
                  "scheme dr_boost's split replaced).", ""]
    header = ("# CATE at scale\n\nWritten by `python -m benchmarks.cate_scale` (see its docstring for the "
              "design and what each table measures).\n")
    text = append_block(RESULTS, header, lines, write=not args.no_write)
    if args.no_write:
        print(text)


if __name__ == "__main__":
    main()
