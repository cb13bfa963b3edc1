"""How well eocausal.cate's default models find the true CATE on the documented simulation.

The simulation is replication/rct_heterogeneity's (docs/heterogeneity.md section 6): villages of
4, image sequences whose growth drives the effect, tau = 1 + 3 (g / 0.3 - 1/2) + 0.3 x2, inputs
= the tabular covariates plus the pooled sequence embedding (RandomFeatures, 32 features per
frame, pooled [mean, last - first]; 67 columns). Each learner runs with eocausal's defaults
(no EconML option passed) in two designs: an RCT with known e = 0.5 (``propensity_scores=0.5``)
and the same data analysed as observational (e estimated). Reported per run: correlation of
the out-of-fold predictions with the true CATE, wall time, and the warnings raised (counted by
category; none is the goal). ``--econml-defaults`` adds the DR-learner and the causal forest
with EconML's own defaults (``'auto'`` nuisances; DRLearner's linear final stage), i.e. what
``eocausal.cate`` used before it filled in its own.

Appends a block to benchmarks/results/cate_defaults.md.

Usage: python -m benchmarks.cate_defaults [--n 2000] [--seed 0] [--econml-defaults] [--no-save]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import warnings
from collections import Counter

import numpy as np

from benchmarks._machine import (
    RESULTS_DIR,
    ROOT,
    append_block,
    command,
    machine_line,
    utc_stamp,
    versions,
)

RESULTS = RESULTS_DIR / "cate_defaults.md"
LEARNERS = ("causal_forest", "dr", "r", "t", "x")


def _simulation():
    spec = importlib.util.spec_from_file_location("rct_heterogeneity_run",
                                                  ROOT / "replication" / "rct_heterogeneity" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _econml_defaults(learner: str) -> dict:
    """EconML's own defaults, spelled out (what eocausal.cate passed on before it filled its own)."""
    if learner == "causal_forest":
        return {"model_y": "auto", "model_t": "auto"}
    from econml.sklearn_extensions.linear_model import StatsModelsLinearRegression

    return {"model_regression": "auto", "model_propensity": "auto", "model_final": StatsModelsLinearRegression()}


def run(n: int, seed: int, with_econml: bool) -> list[dict]:
    from eocausal.estimators.cate import cate

    sim = _simulation()
    d = sim.simulate(n, np.random.default_rng(seed))
    _, seq = sim.encode(d["frames"], 32, seed)
    rows = []
    settings = [(lr, "eocausal", {}) for lr in LEARNERS]
    if with_econml:
        settings += [(lr, "EconML", _econml_defaults(lr)) for lr in ("dr", "causal_forest")]
    for design in ("rct", "observational"):
        for learner, defaults, kw in settings:
            if design == "rct" and learner in ("causal_forest",) and defaults == "EconML":
                kw = {k: v for k, v in kw.items() if k != "model_t"}  # known e replaces model_t
            if design == "rct" and learner == "dr" and defaults == "EconML":
                kw = {k: v for k, v in kw.items() if k != "model_propensity"}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                res = cate(d["y"], d["w"], X=d["x"], embeddings={"sequence": seq}, learner=learner,
                           clusters=d["village"], folds=5, seed=seed, fit_final=False,
                           **({"propensity_scores": 0.5} if design == "rct" else {}), **kw)
                seconds = time.perf_counter() - t0
            counts = Counter(w.category.__name__ for w in caught)
            invalid = sum("Inference will be invalid" in str(w.message) for w in caught)
            rows.append({"design": design, "learner": learner, "defaults": defaults, "n": len(d["y"]),
                         "corr": float(np.corrcoef(res.tau_hat, d["tau"])[0, 1]), "seconds": seconds,
                         "warnings": dict(counts), "invalid": invalid})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--econml-defaults", action="store_true")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    when, machine = utc_stamp(), machine_line()
    vers, cmd = versions("numpy", "sklearn", "econml"), command("cate_defaults")
    rows = run(args.n, args.seed, args.econml_defaults)
    header = ("# Correlation of eocausal.cate's defaults with the true CATE\n\n"
              "`python -m benchmarks.cate_defaults` (see its docstring): the simulation of "
              "replication/rct_heterogeneity (tabular + pooled sequence embedding, 5 folds by village, "
              "out-of-fold predictions), every learner with eocausal's defaults; 'EconML' rows: EconML's own "
              "defaults, as eocausal.cate passed them on before.\n")
    block = [f"## {when}", "", f"machine: {machine}; {vers}; command: `{cmd}`", "",
             "| design | learner | defaults | n | corr(tau_hat, tau) | seconds | warnings |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        warn = ", ".join(f"{k} x{v}" for k, v in sorted(r["warnings"].items())) or "none"
        if r["invalid"]:
            warn += f" (of which 'Inference will be invalid!' x{r['invalid']})"
        block.append(f"| {r['design']} | {r['learner']} | {r['defaults']} | {r['n']} | {r['corr']:.3f} | "
                     f"{r['seconds']:.1f} | {warn} |")
    text = append_block(RESULTS, header, block, write=not args.no_save)
    if args.no_save:
        print(text)


if __name__ == "__main__":
    main()
