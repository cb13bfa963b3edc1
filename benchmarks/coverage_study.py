"""Coverage of 95% intervals for Hajek IPW and AIPW on a simulated image-confounded, clustered design.

Each replication draws ``n_images`` images (clusters) with 4-8 units each. The confounder is the
images' built-up share s (visible in the chip), standardised over the image pool; a tabular image-level
covariate x_img and a unit-level covariate x1 complete the confounders. The treatment is assigned per
image (as aid projects are assigned to places), and units of one image share an outcome shock u_g::

    P(W_g = 1) = expit(-0.3 + 1.0 s_g + 0.5 x_img_g)
    Y_i = (1 + 0.5 s_g) W_g + 2 s_g + 0.5 x_img_g + 0.5 x1_i + u_g + eps_i,  u_g, eps_i ~ N(0, 1)

The true ATE is 1 exactly (images are drawn uniformly from the pool, over which s has mean 0; the
number of units per image is independent of s). ``eocausal.estimate(..., clusters="image")`` gives the
estimates and clustered influence-function SEs; the unclustered SE of the same estimate is
sqrt(sum psi_i^2)/n from the same influence function psi (so the two intervals differ only in the SE).

Images are not re-encoded in every replication: a pool of simulated 16x16 chips
(``eocausal.data.simulate.simulate_demo``) is embedded once by ``RandomFeatures(n_features=64)``
(fitted on the pool's chips, unsupervised: a fixed encoder, like a pretrained one), and each
replication samples its images from the pool with replacement, so images are i.i.d. draws from the
pool's distribution, on which the truth is defined. Everything else (x_img, x1, units per image,
treatment, shocks, noise, folds) is drawn fresh in every replication.

Usage: python -m benchmarks.coverage_study [--reps 500] [--designs main oracle ...] [--jobs 2] [--quick]
       [--pool 4000] [--seed 0] [--no-write]
Appends a run block to benchmarks/results/coverage.md (written atomically).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one BLAS thread per process (the cores are shared); set before numpy loads
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._machine import RESULTS_DIR, append_block, command, machine_line, utc_stamp, versions

RESULTS = RESULTS_DIR / "coverage.md"

TRUE_ATE = 1.0
Z95 = 1.959963984540054
METHOD_LABELS = {
    "ipw-hajek": "Hajek IPW (estimate(): cross-fitted e, ipw_se='auto')",
    "hajek-known-e": "Hajek IPW, same estimate, known-e IF (estimate()'s SE before the correction)",
    "aipw": "AIPW (estimate(): cross-fitted, 5 folds)",
    "hajek-ld": "Hajek IPW, in-sample logit, Lunceford-Davidian IF (ipw_logit_if)",
    "hajek-refit": "Hajek IPW (as estimate()), cluster bootstrap refitting the cross-fitted e (refit_bootstrap_ipw)",
}


@dataclass(frozen=True)
class Design:
    """One simulation design; the data-generating process above is the same for all."""

    name: str
    n_images: int = 150
    units_min: int = 4
    units_max: int = 8
    features: str = "pcs"  # 'pcs': top-k PCs of the embedding; 'embedding': all 64; 'oracle': true s
    pcs: int = 5
    propensity: str = "logit"  # 'logit' (eocausal's unpenalised logit) or 'ridge-fixed'
    outcome: str = "linear"  # 'linear', 'ridge' (eocausal's RidgeCV) or 'ridge-fixed'
    C: float | None = None  # inverse penalty of 'ridge-fixed' (chosen once on pilot data if None)
    refit_boot: int = 0  # > 0: also the cluster bootstrap that refits the cross-fitted propensity (B draws)
    refit_reps: int = 200  # ... in the first refit_reps replications only (it costs B x 5 logistic fits)
    alpha: float | None = None  # penalty of the 'ridge-fixed' outcome model (chosen once if None)
    note: str = ""


DESIGNS = {
    "main": Design("main", refit_boot=100, note="150 images, 4-8 units each; image features = top 5 PCs of the 64 random "
                                "features (PCA on the replication's images); propensity 'logit', outcome "
                                "LinearRegression"),
    "oracle": Design("oracle", features="oracle",
                     note="as main, but the true built-up share replaces the embedding (oracle image feature)"),
    "more-images": Design("more-images", n_images=600,
                          note="as main with 600 images (about 3,600 units)"),
    "oracle-more-images": Design("oracle-more-images", n_images=600, features="oracle",
                                 note="600 images and the true built-up share as the image feature"),
    "embedding64": Design("embedding64", features="embedding", propensity="ridge-fixed", outcome="ridge-fixed",
                          note="all 64 random features; ridge-logit propensity and ridge outcome with penalties "
                               "fixed once by grouped CV on 5 pilot replications (seeds disjoint from the study)"),
}


# ----------------------------------------------------------------------------- image pool
@dataclass(frozen=True)
class Pool:
    Z: np.ndarray  # (n_pool, 64) embeddings
    s: np.ndarray  # (n_pool,) built-up share, standardised over the pool
    share_mean: float
    share_sd: float
    seconds: float


def make_pool(n_pool: int = 4000, px: int = 16, n_features: int = 64, seed: int = 20260101) -> Pool:
    """Simulate ``n_pool`` chips and embed them once with MOSAIKS random features."""
    import torch

    from eocausal.data.simulate import simulate_demo
    from eocausal.encoders.random_features import RandomFeatures

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    demo = simulate_demo(n_images=n_pool, units_per_image=1, px=px, seed=seed)
    chips = np.asarray(demo.source.images).transpose(0, 3, 1, 2)  # (n, C, H, W)
    Z = RandomFeatures(n_features=n_features, kernel=3, seed=0, device="cpu").fit_transform(chips)
    share = np.asarray(demo.built_share, dtype=float)
    m, sd = float(share.mean()), float(share.std())
    return Pool(Z=Z.astype(np.float64), s=(share - m) / sd, share_mean=m, share_sd=sd,
                seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- one replication
def simulate(pool: Pool, design: Design, seed: int):
    """One data set: (frame, image features per unit, cluster codes, s per unit)."""
    rng = np.random.default_rng([20260, seed])
    G = design.n_images
    img = rng.integers(0, len(pool.s), G)
    m = rng.integers(design.units_min, design.units_max + 1, G)
    s_g = pool.s[img]
    x_g = rng.normal(size=G)
    u_g = rng.normal(size=G)
    w_g = (rng.uniform(size=G) < 1 / (1 + np.exp(-(-0.3 + 1.0 * s_g + 0.5 * x_g)))).astype(int)
    cl = np.repeat(np.arange(G), m)
    n = len(cl)
    x1 = rng.normal(size=n)
    w = w_g[cl]
    s = s_g[cl]
    y = (1 + 0.5 * s) * w + 2 * s + 0.5 * x_g[cl] + 0.5 * x1 + u_g[cl] + rng.normal(size=n)
    if design.features == "oracle":
        F_img = s_g[:, None]
    elif design.features == "pcs":
        from sklearn.decomposition import PCA

        F_img = PCA(design.pcs, svd_solver="full").fit_transform(pool.Z[img])
    elif design.features == "embedding":
        F_img = pool.Z[img]
    else:
        raise ValueError(f"features={design.features!r}")
    frame = pd.DataFrame({"W": w, "Y": y, "x_img": x_g[cl], "x1": x1, "image": cl})
    return frame, F_img[cl], cl, s


def _models(design: Design):
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline

    from eocausal.estimators.learners import BlockStandardizer

    if design.propensity == "logit":
        prop = "logit"
    elif design.propensity == "ridge-fixed":
        prop = make_pipeline(BlockStandardizer(2), LogisticRegression(C=design.C, max_iter=5000))
    else:
        raise ValueError(design.propensity)
    if design.outcome == "linear":
        out = LinearRegression()
    elif design.outcome == "ridge":
        out = "ridge"
    elif design.outcome == "ridge-fixed":
        out = make_pipeline(BlockStandardizer(2), Ridge(alpha=design.alpha))
    else:
        raise ValueError(design.outcome)
    return prop, out


def replicate(pool: Pool, design: Design, seed: int, refit: bool = True) -> dict:
    """Estimates and SEs (clustered and not) of every method in one replication.

    Overlap warnings are recorded (counted in the results), not raised; a replication whose
    estimation fails (separation, an empty arm) is returned with its error and counted.
    """
    import eocausal
    from eocausal.errors import NotEstimableError, OverlapError, OverlapWarning
    from eocausal.estimators.aipw import aipw
    from eocausal.estimators.inference import ipw_logit_if
    from eocausal.estimators.weighting import hajek, se_from_psi

    frame, F, cl, _ = simulate(pool, design, seed)
    prop, out = _models(design)
    res = {"seed": seed, "n": len(frame), "error": "", "overlap_warnings": 0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OverlapWarning)  # record these; any other warning keeps its filter
        try:
            table = eocausal.estimate(frame, treatment="W", outcome="Y", confounders=["x_img", "x1"],
                                      embeddings=F, clusters="image", methods=["ipw-hajek", "aipw"],
                                      adjustments=["tabular+image"], propensity=prop, outcome_model=out,
                                      folds=5, seed=seed)
        except (OverlapError, NotEstimableError) as exc:
            res["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
            return res
    res["overlap_warnings"] = sum(issubclass(c.category, OverlapWarning) for c in caught)
    fit = table.propensities["tabular+image"]
    res["e_min"], res["e_max"] = float(fit.e_raw.min()), float(fit.e_raw.max())
    for row in table.rows:
        pe = (hajek(fit.y, fit.w, fit.e) if row.method == "ipw-hajek"
              else aipw(fit.y, fit.w, fit.e, fit.mu0, fit.mu1))
        psi = fit.psi[row.method]  # the influence function behind the row's SE (Hajek: logit-corrected)
        se_cl, _ = se_from_psi(psi, cl)
        if abs(pe.estimate - row.estimate) > 1e-9 * (1 + abs(row.estimate)) or abs(se_cl - row.std_error) > 1e-9:
            raise AssertionError(f"seed {seed}: recomputed {row.method} ({pe.estimate}, {se_cl}) differs from "
                                 f"estimate()'s ({row.estimate}, {row.std_error})")
        res[row.method] = (row.estimate, row.std_error, se_from_psi(psi, None)[0])
        if row.method == "ipw-hajek":  # the known-e SE estimate() gave before the correction, for comparison
            res["hajek-known-e"] = (row.estimate, se_from_psi(pe.psi, cl)[0], se_from_psi(pe.psi, None)[0])
    if design.propensity == "logit":  # the unpenalised in-sample logit that M-estimation theory covers
        V = np.column_stack([frame["x_img"].to_numpy(), frame["x1"].to_numpy(), F])
        ld = ipw_logit_if(frame["Y"].to_numpy(), frame["W"].to_numpy(dtype=float), V, estimator="hajek")
        res["hajek-ld"] = (ld.estimate, se_from_psi(ld.psi, cl)[0], se_from_psi(ld.psi, None)[0])
    if design.refit_boot and refit:
        # the same cross-fitted Hajek estimator (same folds, same standardisation; Newton with penalty 1/C
        # instead of lbfgs), its SE from B cluster-bootstrap draws that refit the propensity in every fold
        from eocausal.data.folds import grouped_folds
        from eocausal.estimators.inference import refit_bootstrap_ipw

        w = frame["W"].to_numpy(dtype=float)
        V = np.column_stack([frame["x_img"].to_numpy(), frame["x1"].to_numpy(), F])
        folds = grouped_folds(len(w), cl, 5, seed, stratify=w)
        logit = design.propensity == "logit"
        b = refit_bootstrap_ipw(V, frame["Y"].to_numpy(), w, n_boot=design.refit_boot, estimator="hajek",
                                C=1e6 if logit else design.C, clusters=cl, fold_ids=folds,
                                n_tabular=None if logit else 2, seed=seed)
        res["hajek-refit"] = (res["ipw-hajek"][0], b.std_error, np.nan)
        res["refit_vs_estimate"] = abs(b.estimate - res["ipw-hajek"][0])
    return res


# ----------------------------------------------------------------------------- fixed penalties
def choose_penalties(pool: Pool, design: Design, n_pilot: int = 5) -> Design:
    """Fix the ridge penalties once, by grouped CV on pilot replications (seeds 10**6 + k).

    Propensity: eocausal's ``choose_ridge_penalty`` (ridge-logit, grouped 3-fold CV, log loss);
    outcome: ``Ridge`` on the block-standardised design, alpha from grouped 3-fold CV (MSE) on each
    arm; the medians over pilots are used for every replication of the study.
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold, GridSearchCV
    from sklearn.pipeline import make_pipeline

    from eocausal.estimators.inference import choose_ridge_penalty
    from eocausal.estimators.learners import BlockStandardizer

    Cs, alphas = [], []
    for k in range(n_pilot):
        frame, F, cl, _ = simulate(pool, design, 10**6 + k)
        V = np.column_stack([frame[["x_img", "x1"]].to_numpy(), F])
        w = frame["W"].to_numpy(dtype=float)
        if design.propensity == "ridge-fixed" and design.C is None:
            Cs.append(choose_ridge_penalty(V, w, clusters=cl, n_tabular=2, seed=k))
        if design.outcome == "ridge-fixed" and design.alpha is None:
            for arm in (0, 1):
                rows = w == arm
                gs = GridSearchCV(make_pipeline(BlockStandardizer(2), Ridge()),
                                  {"ridge__alpha": np.logspace(-3, 4, 15)}, cv=GroupKFold(3),
                                  scoring="neg_mean_squared_error")
                gs.fit(V[rows], frame["Y"].to_numpy()[rows], groups=cl[rows])
                alphas.append(gs.best_params_["ridge__alpha"])
    C = design.C if design.C is not None or not Cs else float(np.median(Cs))
    alpha = design.alpha if design.alpha is not None or not alphas else float(np.median(alphas))
    return Design(**{**asdict(design), "C": C, "alpha": alpha})


# ----------------------------------------------------------------------------- driver
_POOL: Pool | None = None


def _work(args):
    design, seeds, first = args
    out = []
    for s in seeds:
        t0 = time.perf_counter()
        r = replicate(_POOL, design, s, refit=s - first < design.refit_reps)
        r["seconds"] = time.perf_counter() - t0
        out.append(r)
    return out


def run_design(pool: Pool, design: Design, reps: int, seed: int = 0, jobs: int = 1) -> list[dict]:
    """``reps`` replications (seeds seed*100000 + 0..reps-1), in ``jobs`` forked processes."""
    global _POOL
    _POOL = pool
    seeds = [seed * 100_000 + r for r in range(reps)]
    if jobs <= 1:
        return _work((design, seeds, seeds[0]))
    chunks = [(design, seeds[i::jobs * 4], seeds[0]) for i in range(jobs * 4)]
    with ProcessPoolExecutor(jobs, mp_context=get_context("fork")) as ex:
        parts = list(ex.map(_work, chunks))
    return sorted((r for p in parts for r in p), key=lambda r: r["seed"])


def summarise(results: list[dict], truth: float = TRUE_ATE) -> pd.DataFrame:
    """Per method: coverage (clustered and unclustered SE), bias, RMSE, mean SE vs SD of estimates."""
    ok = [r for r in results if not r["error"]]
    rows = []
    for method in METHOD_LABELS:
        a = np.array([r[method] for r in ok if method in r], dtype=float)
        if len(a) == 0:
            continue
        est, se_cl, se_iid = a[:, 0], a[:, 1], a[:, 2]
        R = len(est)
        cov_cl = float(np.mean(np.abs(est - truth) <= Z95 * se_cl))
        cov_iid = float(np.mean(np.abs(est - truth) <= Z95 * se_iid)) if np.isfinite(se_iid).all() else np.nan
        bias = float(est.mean() - truth)
        sd = float(est.std(ddof=1))
        rows.append(dict(
            method=method, R=R, cov_cl=cov_cl, mcse_cl=float(np.sqrt(cov_cl * (1 - cov_cl) / R)),
            cov_iid=cov_iid, mcse_iid=float(np.sqrt(cov_iid * (1 - cov_iid) / R)),
            bias=bias, mcse_bias=sd / np.sqrt(R), rmse=float(np.sqrt(np.mean((est - truth) ** 2))),
            se_cl=float(se_cl.mean()), se_iid=float(se_iid.mean()), sd=sd,
            # diagnostic: coverage of the clustered interval re-centred by the Monte Carlo mean bias
            cov_cl_debiased=float(np.mean(np.abs(est - bias - truth) <= Z95 * se_cl)),
        ))
    return pd.DataFrame(rows)


def summary_table(df: pd.DataFrame) -> list[str]:
    lines = ["| method | R | coverage, clustered SE (MC SE) | coverage, unclustered SE (MC SE) | mean bias (MC SE) "
             "| RMSE | mean SE clustered | mean SE unclustered | SD of estimates | SE/SD | coverage if unbiased |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in df.itertuples():
        iid = f"{r.cov_iid:.3f} ({r.mcse_iid:.3f})" if np.isfinite(r.cov_iid) else "-"
        se_iid = f"{r.se_iid:.3f}" if np.isfinite(r.se_iid) else "-"
        lines.append(
            f"| {METHOD_LABELS[r.method]} | {r.R} | **{r.cov_cl:.3f}** ({r.mcse_cl:.3f}) | {iid} "
            f"| {r.bias:+.3f} ({r.mcse_bias:.3f}) | {r.rmse:.3f} | {r.se_cl:.3f} | {se_iid} | {r.sd:.3f} "
            f"| {r.se_cl / r.sd:.2f} | {r.cov_cl_debiased:.3f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=None, help="replications per design (default 500; 100 with --quick)")
    ap.add_argument("--designs", nargs="+", default=None, choices=list(DESIGNS),
                    help="designs to run (default: all; 'main' with --quick)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (one BLAS thread each)")
    ap.add_argument("--pool", type=int, default=None, help="images in the embedded pool (default 4000; 1000 with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="100 replications of the main design, pool of 1000 images")
    ap.add_argument("--refit-boot", type=int, default=None,
                    help="draws of the refit cluster bootstrap in the designs that run it (0: skip it)")
    ap.add_argument("--dump", default=None, help="also write every replication's results to this JSON file")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    reps = args.reps or (100 if args.quick else 500)
    designs = args.designs or (["main"] if args.quick else list(DESIGNS))
    n_pool = args.pool or (1000 if args.quick else 4000)

    cmd, stamp, machine = command("coverage_study", argv), utc_stamp(), machine_line()
    vers = versions("numpy", "sklearn")
    load0 = os.getloadavg()
    pool = make_pool(n_pool)
    print(f"pool: {n_pool} chips embedded in {pool.seconds:.1f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    block = [f"### {stamp}", "", f"- machine: {machine}", f"- versions: {vers}", f"- command: `{cmd}`",
             f"- processes: {args.jobs}, one BLAS thread each; load average at start (1/5/15 min): "
             f"{load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f}",
             f"- image pool: {n_pool} simulated 16x16 RGB chips, RandomFeatures(n_features=64, kernel=3, seed=0) "
             f"fitted on the pool and applied once ({pool.seconds:.1f} s); built-up share mean "
             f"{pool.share_mean:.3f}, SD {pool.share_sd:.3f}", ""]
    dumped = {}
    for name in designs:
        design = DESIGNS[name]
        if args.quick and args.refit_boot is None:
            design = Design(**{**asdict(design), "refit_boot": 0})
        if args.refit_boot is not None and design.refit_boot:
            design = Design(**{**asdict(design), "refit_boot": args.refit_boot})
        if "ridge-fixed" in (design.propensity, design.outcome):
            design = choose_penalties(pool, design)
        t0 = time.perf_counter()
        results = run_design(pool, design, reps, args.seed, args.jobs)
        wall = time.perf_counter() - t0
        dumped[name] = results
        load = os.getloadavg()
        df = summarise(results)
        errors = [r for r in results if r["error"]]
        n_warn = sum(r.get("overlap_warnings", 0) > 0 for r in results)
        mean_n = np.mean([r["n"] for r in results])
        per_rep = np.mean([r["seconds"] for r in results])
        extra = ""
        gaps = [r["refit_vs_estimate"] for r in results if "refit_vs_estimate" in r]
        if gaps:
            extra += (f" Refit cluster bootstrap: B = {design.refit_boot} draws in the first {len(gaps)} replications;"
                      f" its own point estimate differs from estimate()'s by at most {max(gaps):.1e} "
                      "(Newton vs lbfgs fits of the same model); its interval is centred on estimate()'s estimate.")
        if design.C is not None or design.alpha is not None:
            extra += f" Fixed penalties: propensity C = {design.C:.4g}, outcome ridge alpha = {design.alpha:.4g}."
        block += [f"#### Design `{name}`", "", f"{design.note}.{extra} Mean n = {mean_n:.0f} units in "
                  f"{design.n_images} clusters. {reps} replications in {wall:.0f} s wall ({per_rep:.2f} s per "
                  f"replication per process); load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}. "
                  f"Replications with an overlap warning: {n_warn}; failed replications: {len(errors)}"
                  + (f" ({'; '.join(sorted({e['error'] for e in errors})[:3])})" if errors else "") + ".", "",
                  *summary_table(df), ""]
        print("\n".join(block[-(len(df) + 6):]), flush=True)
    if args.dump:
        import json

        Path(args.dump).write_text(json.dumps(dumped, default=float))
    header = ["# Coverage of 95% intervals: Hajek IPW and AIPW with clustered and unclustered SEs", "",
              "Design (benchmarks/coverage_study.py):", "", "```text", *__doc__.split("\n\n", 1)[1].split("\n\n")[0:3],
              "```", "", "## Runs", ""]
    append_block(RESULTS, "\n".join(header) + "\n", block, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
