"""estimate() and cross-fitted AIPW with wide embeddings (1,024 and 2,048 columns).

Three measurements, each in a fresh subprocess (its own peak memory, ``ru_maxrss``):

1. ``uganda``: the causalimages Uganda data (2,082 units, 327 images;
   ``../shared/data/causalimages``) with ``RandomFeatures(n_features=d, seed=0)`` embeddings and
   ``eocausal.estimate(units, embeddings=Z)`` (DIM, HT, Hajek, AIPW; tabular, image and
   tabular + image adjustments). Embedding is not timed. With ``--slow-dims`` the same call also
   runs on the full-dimensional solvers (``glm.REDUCE_MIN_COLUMNS`` raised out of reach, as
   before the row-space path existed), and the largest relative difference of the estimates,
   SEs and propensities is recorded.
2. ``sim``: cost growth on simulated data (2 tabular confounders, a full-rank Gaussian embedding
   of d columns, n units): the same estimate() call at each (n, d) of ``--sim``.
3. ``cate``: ``eocausal.cate()`` (causal forest) on the simulated data of ``sim`` with a
   heterogeneous effect added (tau = 1 + x1), with the default (EconML's: all p features at
   each split) and with grf's ``mtry = min(ceil(sqrt(p) + 20), p)`` (``max_features=``): seconds
   and the correlation of the out-of-fold CATEs with tau.
4. ``irm``: cross-fitted AIPW (ATE; 'ridge-logit' propensity, 'ridge' outcome model, 5 folds,
   clip 0.01) by ``eocausal.estimators.aipw.crossfit_aipw`` and by DoubleML's ``DoubleMLIRM``
   with the same scikit-learn learners (``make_propensity_model``, ``make_outcome_model``) and the
   same folds (``set_sample_splitting``), at each (n, d) of ``--irm``.

Usage: python -m benchmarks.high_dim [--uganda-dims 1024 2048] [--slow-dims 1024]
       [--sim 2000:64 2000:2048 50000:64 50000:2048] [--cate 2000:1024] [--irm 50000:1024]
       [--threads T] [--no-write]
Appends the figures to benchmarks/results/high_dim.md (written atomically).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings

import numpy as np

from benchmarks._machine import (ROOT, RESULTS_DIR, append_block, command, machine, machine_line,
                                 run_json_worker, utc_stamp, versions)

RESULTS = RESULTS_DIR / "high_dim.md"
DATA = ROOT.parent / "shared" / "data" / "causalimages" / "CausalImagesTutorialData.RData"


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _full_dimensional():
    """Route every fit through the full-dimensional solvers (the path before the row-space one)."""
    from eocausal.estimators import glm

    glm.REDUCE_MIN_COLUMNS = 10**9


def _table_facts(tab) -> dict:
    rows = [[r.method, r.adjustment, r.estimate, r.std_error] for r in tab.rows]
    fits = {a: {"e_raw": f.e_raw.tolist()} for a, f in tab.propensities.items()}
    return {"rows": rows, "fits": fits}


def worker_uganda(d: int, slow: bool) -> dict:
    import eocausal
    from eocausal.encoders import RandomFeatures

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader's expected imputation warning
        data = eocausal.read_causalimages(DATA)
    Z = eocausal.embed(data.units, data.images, RandomFeatures(n_features=d, seed=0), progress=False)
    if slow:
        _full_dimensional()
    t0 = time.perf_counter()
    tab = eocausal.estimate(data.units, embeddings=Z)
    return {"seconds": time.perf_counter() - t0, "peak_gb": _peak_gb(), **_table_facts(tab)}


def _simulated(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, d))
    x = rng.standard_normal((n, 2))
    b = rng.normal(scale=0.8 / np.sqrt(d), size=d)
    w = (rng.uniform(size=n) < 1 / (1 + np.exp(-(Z @ b + 0.5 * x[:, 0])))).astype(float)
    y = Z @ rng.normal(scale=1 / np.sqrt(d), size=d) + x @ np.array([1.0, -0.5]) + w + rng.standard_normal(n)
    return x, Z, y, w


def worker_sim(n: int, d: int) -> dict:
    import pandas as pd

    import eocausal

    x, Z, y, w = _simulated(n, d)
    df = pd.DataFrame({"y": y, "w": w.astype(int), "x1": x[:, 0], "x2": x[:, 1]})
    t0 = time.perf_counter()
    eocausal.estimate(df, treatment="w", outcome="y", confounders=["x1", "x2"], embeddings=Z)
    return {"seconds": time.perf_counter() - t0, "peak_gb": _peak_gb()}


def worker_cate(n: int, d: int, all_features: bool) -> dict:
    import eocausal

    x, Z, y, w = _simulated(n, d)
    tau = 1.0 + x[:, 0]
    y = y + w * x[:, 0]
    kw = {} if all_features else {"max_features": int(min(np.ceil(np.sqrt(d + 2) + 20), d + 2))}
    t0 = time.perf_counter()
    res = eocausal.cate(y, w, X=x, embeddings=Z, **kw)
    return {"seconds": time.perf_counter() - t0, "peak_gb": _peak_gb(),
            "corr": float(np.corrcoef(res.tau_hat, tau)[0, 1])}


def worker_irm(n: int, d: int, side: str) -> dict:
    from eocausal.estimators.learners import make_outcome_model, make_propensity_model

    _, V, y, w = _simulated(n, d)
    rng = np.random.default_rng(1)
    fold = np.empty(n, dtype=int)
    for arm in (0, 1):
        idx = np.flatnonzero(w == arm)
        fold[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) % 5
    t0 = time.perf_counter()
    if side == "eocausal":
        from eocausal.estimators.aipw import crossfit_aipw

        fit = crossfit_aipw(V, y, w, fold, propensity="ridge-logit", outcome_model="ridge", clip=0.01)
        est, se = fit.estimate, fit.std_error
    else:
        import doubleml as dml

        data = dml.DoubleMLData.from_arrays(V, y, w)
        irm = dml.DoubleMLIRM(data, ml_g=make_outcome_model("ridge"), ml_m=make_propensity_model("ridge-logit"),
                              n_folds=5, score="ATE", trimming_threshold=0.01)
        irm.set_sample_splitting([[(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(5)]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            irm.fit()
        est, se = float(irm.coef[0]), float(irm.se[0])
    return {"seconds": time.perf_counter() - t0, "peak_gb": _peak_gb(), "estimate": est, "se": se}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def compare(fast: dict, slow: dict) -> dict:
    """Largest relative differences of estimates and SEs, and of the propensities (absolute)."""
    est = max(_rel(f[2], s[2]) for f, s in zip(fast["rows"], slow["rows"]))
    se = max(_rel(f[3], s[3]) for f, s in zip(fast["rows"], slow["rows"]))
    e = max(float(np.max(np.abs(np.subtract(fast["fits"][a]["e_raw"], slow["fits"][a]["e_raw"]))))
            for a in fast["fits"])
    return {"estimate_rel": est, "se_rel": se, "propensity_abs": e}


def _pair(text: str) -> tuple[int, int]:
    n, d = text.split(":")
    return int(n), int(d)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uganda-dims", type=int, nargs="*", default=[1024, 2048])
    ap.add_argument("--slow-dims", type=int, nargs="*", default=[1024])
    ap.add_argument("--sim", type=_pair, nargs="*", default=[(2000, 64), (2000, 2048), (50000, 64), (50000, 2048)])
    ap.add_argument("--cate", type=_pair, nargs="*", default=[(2000, 1024)])
    ap.add_argument("--irm", type=_pair, nargs="*", default=[(50000, 1024)])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        kind = job.pop("kind")
        out = {"uganda": worker_uganda, "sim": worker_sim, "cate": worker_cate, "irm": worker_irm}[kind](**job)
        print(json.dumps(out))
        return

    def run(**job):
        return run_json_worker("benchmarks.high_dim", ["--worker", json.dumps(job)], threads=args.threads)

    mach = machine()
    lines = [f"## {utc_stamp()}", "", f"- machine: {machine_line()}; BLAS threads {args.threads}; "
             f"1-min load average at start {mach.get('load_avg_1min')}",
             f"- versions: {versions('numpy', 'scipy', 'sklearn')}", f"- command: `{command('high_dim', argv)}`", ""]
    lines += ["### Uganda data: estimate(units, embeddings=Z), Z = RandomFeatures(n_features=d, seed=0)", "",
              "| d | seconds | peak GB | full-dimensional solvers: seconds | largest rel. diff. estimate / SE "
              "| largest abs. diff. propensity |", "| --- | --- | --- | --- | --- | --- |"]
    for d in args.uganda_dims:
        fast = run(kind="uganda", d=d, slow=False)
        print(f"uganda d={d}: {fast['seconds']:.1f} s", file=sys.stderr)
        if d in args.slow_dims:
            slow = run(kind="uganda", d=d, slow=True)
            c = compare(fast, slow)
            print(f"uganda d={d} full-dimensional: {slow['seconds']:.1f} s, {c}", file=sys.stderr)
            lines.append(f"| {d} | {fast['seconds']:.1f} | {fast['peak_gb']:.2f} | {slow['seconds']:.1f} | "
                         f"{c['estimate_rel']:.1e} / {c['se_rel']:.1e} | {c['propensity_abs']:.1e} |")
        else:
            lines.append(f"| {d} | {fast['seconds']:.1f} | {fast['peak_gb']:.2f} | not run | | |")
    if args.sim:
        lines += ["", "### Simulated data: estimate() with 2 tabular confounders and a d-column embedding", "",
                  "| n | d | seconds | peak GB |", "| --- | --- | --- | --- |"]
        for n, d in args.sim:
            r = run(kind="sim", n=n, d=d)
            print(f"sim n={n} d={d}: {r['seconds']:.1f} s", file=sys.stderr)
            lines.append(f"| {n} | {d} | {r['seconds']:.1f} | {r['peak_gb']:.2f} |")
    if args.cate:
        lines += ["", "### cate() (causal forest) on the simulated data with tau = 1 + x1: features per split", "",
                  "| n | d | grf's mtry: s | corr. with tau | all p (EconML's default): s | corr. with tau | time ratio |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for n, d in args.cate:
            a = run(kind="cate", n=n, d=d, all_features=False)
            b = run(kind="cate", n=n, d=d, all_features=True)
            print(f"cate n={n} d={d}: {a['seconds']:.1f} s vs {b['seconds']:.1f} s", file=sys.stderr)
            lines.append(f"| {n} | {d} | {a['seconds']:.1f} | {a['corr']:.3f} | {b['seconds']:.1f} | {b['corr']:.3f} "
                         f"| {a['seconds'] / b['seconds']:.2f} |")
    if args.irm:
        lines += ["", "### Cross-fitted AIPW (ridge-logit, ridge; 5 folds) against DoubleML's IRM, same learners "
                  "and folds", "", "| n | d | eocausal s | DoubleML s | time ratio | eocausal peak GB | "
                  "DoubleML peak GB | estimates | diff. / SE |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for n, d in args.irm:
            a = run(kind="irm", n=n, d=d, side="eocausal")
            b = run(kind="irm", n=n, d=d, side="doubleml")
            print(f"irm n={n} d={d}: {a['seconds']:.1f} s vs {b['seconds']:.1f} s", file=sys.stderr)
            lines.append(f"| {n} | {d} | {a['seconds']:.1f} | {b['seconds']:.1f} | {a['seconds'] / b['seconds']:.2f} "
                         f"| {a['peak_gb']:.2f} | {b['peak_gb']:.2f} | {a['estimate']:.5f} / {b['estimate']:.5f} "
                         f"| {abs(a['estimate'] - b['estimate']) / b['se']:.3f} |")
    header = ("# High-dimensional embeddings\n\nWritten by `python -m benchmarks.high_dim` "
              "(see its docstring for what each table measures).\n")
    text = append_block(RESULTS, header, lines, write=not args.no_write)
    if args.no_write:
        print(text)


if __name__ == "__main__":
    main()
