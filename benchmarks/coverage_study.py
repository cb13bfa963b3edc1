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

The designs above (``--designs``; 'logit' propensity, linear outcome, crossfit=True) are the
study of the first version. Issue 15's cells (``--cells``) use estimate()'s defaults
(propensity 'ridge-logit', outcome_model 'ridge', 5 folds, se='if', crossfit='auto') on the same
data-generating process with G clusters of 4-8 units, G in {30, 40, 80, 150, 300}, and k propensity
coefficients (intercept included), k in {3, 7, 20, 64}: k = 3 is x_img and the oracle share s (x1,
not a confounder, is left out); k = 7, 20, 64 are x_img, x1 and the first 4, 17, 61 principal
components of the 64 random features (a PCA fitted once on the pool: a fixed linear encoder). A
spatial cell puts 300 villages in a 1.5 x 1.5 degree box around 32E 2N (units within about 1 km of
their village's centre), with an unobserved treatment field and an outcome-noise field of 25 km
range (see :func:`simulate_cell`). Rows: DIM on a cluster-randomised treatment drawn in the same
replication with the same outcome model, HT, Hajek and AIPW, for the ATE and the ATT (true ATT by
quadrature over the pool, :func:`true_effects`), each with CR1 + t(G-1) (estimate()'s 'if'),
CR0 + normal, unclustered and wild cluster bootstrap SEs (and Conley and 25 km-block SEs in the
spatial cell); IPW rows also with the corrected influence function of the same cross-fitted fit
(ipw_se='corrected'), and with propensity='logit' fitted on all units (crossfit='auto' does that for a
fixed-penalty logistic model; stacked-sandwich and known-e influence functions).

Usage: python -m benchmarks.coverage_study [--reps 500] [--designs main oracle ...] [--jobs 2] [--quick]
       [--pool 4000] [--seed 0] [--no-write]
       python -m benchmarks.coverage_study --cells all [--reps 500] [--extra-reps N] [--jobs 2]
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

from benchmarks._machine import (
    RESULTS_DIR,
    append_block,
    command,
    machine_line,
    utc_stamp,
    versions,
)

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
                                      folds=5, seed=seed, crossfit=True)
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
        se_cl, G = se_from_psi(psi, cl)
        se_cl *= np.sqrt(G / (G - 1))  # estimate()'s clustered SE is CR1
        if abs(pe.estimate - row.estimate) > 1e-9 * (1 + abs(row.estimate)) or abs(se_cl - row.std_error) > 1e-9:
            raise AssertionError(f"seed {seed}: recomputed {row.method} ({pe.estimate}, {se_cl}) differs from "
                                 f"estimate()'s ({row.estimate}, {row.std_error})")
        res[row.method] = (row.estimate, se_cl, se_from_psi(psi, None)[0])
        if row.method == "ipw-hajek":  # the known-e SE estimate() gave before the correction, for comparison
            res["hajek-known-e"] = (row.estimate, se_from_psi(pe.psi, cl)[0] * np.sqrt(G / (G - 1)),
                                    se_from_psi(pe.psi, None)[0])
    if design.propensity == "logit":  # the unpenalised in-sample logit that M-estimation theory covers
        V = np.column_stack([frame["x_img"].to_numpy(), frame["x1"].to_numpy(), F])
        ld = ipw_logit_if(frame["Y"].to_numpy(), frame["W"].to_numpy(dtype=float), V, estimator="hajek")
        G = len(np.unique(cl))
        res["hajek-ld"] = (ld.estimate, se_from_psi(ld.psi, cl)[0] * np.sqrt(G / (G - 1)), se_from_psi(ld.psi, None)[0])
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
    from sklearn.model_selection import GridSearchCV, GroupKFold
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


# ============================================================================= issue 15: cells
#: clusters and propensity coefficients (intercept included) of the clustered cells
G_GRID = (30, 40, 80, 150, 300)
K_GRID = (3, 7, 20, 64)
#: wild bootstrap draws; computed for the rows estimate() gives by default (DIM, HT, Hajek with
#: crossfit='auto', AIPW), in the replications that run the non-default options
N_WILD = 1000  # EstimateOptions.n_boot's default: the rows equal estimate(..., se="wild")
#: spatial design: a 2 x 2 degree box centred on 32E 2N; noise and treatment fields with a 25 km range
SPATIAL = dict(lon0=32.0, lat0=2.0, side_deg=1.5, range_km=25.0, village_sd_km=0.4, spacing_km=5.0,
               field_sd=1.5, n_clusters=300, n_coef=7)
KM_PER_DEG = 111.195  # great-circle km per degree of latitude (R = 6371 km)
ROW_LABELS = {
    "dim": "DIM, cluster-randomised treatment (same outcome model)",
    "ipw-ht|auto": "HT, defaults (cross-fitted ridge-logit, known-e IF)",
    "ipw-hajek|auto": "Hajek, defaults (cross-fitted ridge-logit, known-e IF)",
    "ipw-ht|crossfit": "HT, cross-fitted ridge-logit, corrected IF (ipw_se='corrected')",
    "ipw-hajek|crossfit": "Hajek, cross-fitted ridge-logit, corrected IF (ipw_se='corrected')",
    "ipw-ht|logit": "HT, propensity='logit' on all units (crossfit='auto'), stacked-sandwich IF",
    "ipw-hajek|logit": "Hajek, propensity='logit' on all units (crossfit='auto'), stacked-sandwich IF",
    "ipw-ht|logit|known-e": "HT, 'logit' on all units, known-e IF",
    "ipw-hajek|logit|known-e": "Hajek, 'logit' on all units, known-e IF",
    "aipw": "AIPW (cross-fitted, 5 folds)",
    "ipw-ht|auto|blocks": "HT, crossfit='auto', block_km folds",
    "ipw-hajek|auto|blocks": "Hajek, crossfit='auto', block_km folds",
    "aipw|blocks": "AIPW, block_km folds",
}
SE_LABELS = {"CR1-t": "CR1 + t(G-1) (se='if')", "CR0-z": "CR0 + normal", "iid": "unclustered + normal",
             "wild": f"wild cluster bootstrap ({N_WILD}, auto weights)",
             "conley-bartlett": "Conley, Bartlett, 25 km", "conley-uniform": "Conley, uniform, 25 km",
             "CR1-blocks": "CR1 + t by 25 km blocks"}
DEFAULT_ROWS = ("dim", "ipw-ht|auto", "ipw-hajek|auto", "aipw")
GOAL = dict(cov=(0.93, 0.97), se_sd=(0.90, 1.15), bias_sd=0.10)


@dataclass(frozen=True)
class Cell:
    """One cell of issue 15's study: estimate()'s defaults ('ridge-logit', 'ridge', 5 folds).

    ``n_coef`` propensity coefficients, intercept included: 3 = x_img + the oracle built-up share s
    (x1 is not a confounder and is left out); 7, 20, 64 = x_img, x1 and the first 4, 17, 61
    principal components of the 64 random features (a PCA fitted once on the image pool).
    """

    name: str
    n_clusters: int
    n_coef: int
    spatial: bool = False
    att: bool = True  # also the ATT calls
    crossfit_true: bool = True  # also the crossfit=True call
    wild: bool = True
    blocks: bool = True  # spatial cell: also the block_km folds
    #: the non-default options (the crossfit=True call, the wild bootstrap, the block_km folds) only
    #: in the first extra_reps replications (None: all); to fit a time budget
    extra_reps: int | None = None


CELLS = {f"g{G}-k{k}": Cell(f"g{G}-k{k}", G, k) for G in G_GRID for k in K_GRID}
CELLS["spatial"] = Cell("spatial", SPATIAL["n_clusters"], SPATIAL["n_coef"], spatial=True)


def pool_pcs(pool: Pool, k: int = 61) -> np.ndarray:
    """The first ``k`` principal components of the pool's embeddings (one PCA on the whole pool)."""
    from sklearn.decomposition import PCA

    return PCA(k, svd_solver="full", random_state=0).fit_transform(pool.Z)


def _field(xy_km: np.ndarray, rng, box_km: float) -> np.ndarray:
    """A Gaussian field with exactly N(0, 1) margins and correlation about exp(-d^2 / (4 l^2)).

    Sum of Gaussian bumps exp(-|x - c_k|^2 / (2 l^2)) on a lattice of centres c_k (spacing
    SPATIAL['spacing_km'], 3 l beyond the box) with i.i.d. N(0, 1) amplitudes, divided by its
    exact pointwise SD sqrt(sum_k bump_k(x)^2) (a low-rank, process-convolution GP: Higdon 2002).
    l = range / sqrt(12), so the correlation is exp(-3) = 0.05 at the range.
    """
    ell = SPATIAL["range_km"] / np.sqrt(12.0)
    h = SPATIAL["spacing_km"]
    grid = np.arange(-3 * ell, box_km + 3 * ell + h, h)
    cx, cy = np.meshgrid(grid, grid)
    c = np.column_stack([cx.ravel(), cy.ravel()])
    a = rng.normal(size=len(c))
    d2 = ((xy_km[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    K = np.exp(-d2 / (2 * ell**2))
    return (K @ a) / np.sqrt((K**2).sum(1))


def simulate_cell(pool: Pool, pcs: np.ndarray, cell: Cell, seed: int) -> dict:
    """One data set of a cell: observational and cluster-randomised treatments, outcomes, features.

    Clustered cells (G clusters of 4-8 units, images drawn from the pool)::

        P(W_g = 1) = expit(-0.3 + s_g + 0.5 x_img_g [+ eta(c_g)])
        Y_i = (1 + 0.5 s_g) W_g + 2 s_g + 0.5 x_img_g + 0.5 x1_i + u_g [+ f(loc_i)] + eps_i

    with u_g, eps_i ~ N(0, 1); the bracketed terms only in the spatial cell, where villages are
    uniform in a 2 x 2 degree box around 32E 2N, a village's units lie within about 1 km of its
    centre (offsets N(0, 0.4 km) per axis), and f (noise) and eta (treatment, unobserved,
    independent of the outcomes) are independent fields of :func:`_field` with a 25 km range:
    treatment and noise are both correlated across nearby villages, which is what makes
    spatial correlation matter for the SE. DIM's treatment R_g ~ Bernoulli(0.5) per cluster,
    drawn in the same replication, with the same outcome model (same s, x, u, f, eps).
    """
    rng = np.random.default_rng([20261, seed])
    G = cell.n_clusters
    img = rng.integers(0, len(pool.s), G)
    m = rng.integers(4, 9, G)
    s_g = pool.s[img]
    x_g = rng.normal(size=G)
    u_g = rng.normal(size=G)
    r_g = (rng.uniform(size=G) < 0.5).astype(int)
    cl = np.repeat(np.arange(G), m)
    n = len(cl)
    x1 = rng.normal(size=n)
    eps = rng.normal(size=n)
    lin = -0.3 + s_g + 0.5 * x_g
    out = {}
    noise = u_g[cl] + eps
    if cell.spatial:
        box = SPATIAL["side_deg"] * KM_PER_DEG
        centre = rng.uniform(0, box, (G, 2))
        xy = centre[cl] + rng.normal(scale=SPATIAL["village_sd_km"], size=(n, 2))
        lin = lin + SPATIAL["field_sd"] * _field(centre, rng, box)
        noise = noise + SPATIAL["field_sd"] * _field(xy, rng, box)
        coslat = np.cos(np.deg2rad(SPATIAL["lat0"]))
        lon = SPATIAL["lon0"] - SPATIAL["side_deg"] / 2 + xy[:, 0] / (KM_PER_DEG * coslat)
        lat = SPATIAL["lat0"] - SPATIAL["side_deg"] / 2 + xy[:, 1] / KM_PER_DEG
        out["coords"] = np.column_stack([lon, lat])
        rb = SPATIAL["range_km"]
        bx, by = np.floor(xy[:, 0] / rb).astype(int), np.floor(xy[:, 1] / rb).astype(int)
        out["blocks"] = np.unique(bx * 1000 + by, return_inverse=True)[1]
    w_g = (rng.uniform(size=G) < 1 / (1 + np.exp(-lin))).astype(int)
    s = s_g[cl]
    base = 2 * s + 0.5 * x_g[cl] + 0.5 * x1 + noise
    frame = pd.DataFrame({"W": w_g[cl], "Y": (1 + 0.5 * s) * w_g[cl] + base, "R": r_g[cl],
                          "YR": (1 + 0.5 * s) * r_g[cl] + base, "x_img": x_g[cl], "x1": x1, "s": s,
                          "village": cl})
    if cell.spatial:
        frame["lon"], frame["lat"] = out["coords"][:, 0], out["coords"][:, 1]
    if cell.n_coef == 3:
        out.update(confounders=["x_img", "s"], embeddings=None, adjustment="tabular")
    else:
        out.update(confounders=["x_img", "x1"], embeddings=pcs[img][:, : cell.n_coef - 3][cl],
                   adjustment="tabular+image")
    out.update(frame=frame, clusters=cl, n=n)
    return out


def true_effects(pool: Pool, spatial: bool = False) -> dict:
    """The cells' true ATE and ATT, exactly (Gauss-Hermite quadrature over the pool).

    tau(s) = 1 + 0.5 s, s standardised over the pool: ATE = 1. The ATT is
    1 + 0.5 E[s e] / E[e], the expectations over images drawn uniformly from the pool and
    v = 0.5 x_img (+ eta) ~ N(0, 0.25 (+ 1)), e = expit(-0.3 + s + v); cluster sizes are independent
    of (s, v), so unit- and cluster-weighted means agree. DIM's randomised treatment is independent
    of s: its ATE and ATT are both 1.
    """
    z, wq = np.polynomial.hermite_e.hermegauss(80)
    wq = wq / wq.sum()
    sd_v = np.sqrt(0.25 + (SPATIAL["field_sd"] ** 2 if spatial else 0.0))
    e = 1 / (1 + np.exp(-(-0.3 + pool.s[:, None] + sd_v * z[None, :])))
    Ee = (e * wq).sum(1)
    att = 1 + 0.5 * float(np.sum(pool.s * Ee) / np.sum(Ee))
    return {"ATE": 1.0, "ATT": att}


def _cr1(G: int) -> float:
    return float(np.sqrt(G / (G - 1)))


def _se_options(est: float, psi: np.ndarray, jac, cl: np.ndarray, d: dict, seed: int, wild: bool) -> dict:
    """(se, ci_low, ci_high) of one row under each SE option, from its influence function."""
    from scipy import stats

    from eocausal.estimators.weighting import se_from_psi

    se0, G = se_from_psi(psi, cl)
    t = float(stats.t.ppf(0.975, G - 1))
    se1 = se0 * _cr1(G)
    iid = se_from_psi(psi, None)[0]
    out = {"CR1-t": (se1, est - t * se1, est + t * se1), "CR0-z": (se0, est - Z95 * se0, est + Z95 * se0),
           "iid": (iid, est - Z95 * iid, est + Z95 * iid)}
    if wild:
        from eocausal.estimators import robust_se

        wb = robust_se.wild_cluster_bootstrap(psi, jac, est, cl, n_boot=N_WILD, weights="auto", alpha=0.05,
                                              seed=seed)
        out["wild"] = (wb.std_error, wb.ci_low, wb.ci_high)
    if "coords" in d:
        for kern in ("bartlett", "uniform"):
            sc = _conley(psi, d, kern)
            out[f"conley-{kern}"] = (sc, est - Z95 * sc, est + Z95 * sc)
        sb, Gb = se_from_psi(psi, d["blocks"])
        sb *= _cr1(Gb)
        tb = float(stats.t.ppf(0.975, Gb - 1))
        out["CR1-blocks"] = (sb, est - tb * sb, est + tb * sb)
    return out


def _haversine_km(coords: np.ndarray) -> np.ndarray:
    """Great-circle distances (km, R = 6371 km) between all pairs of (lon, lat) points in degrees."""
    lon, lat = np.deg2rad(coords[:, 0]), np.deg2rad(coords[:, 1])
    a = (np.sin((lat[:, None] - lat[None, :]) / 2) ** 2
         + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin((lon[:, None] - lon[None, :]) / 2) ** 2)
    return 2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _conley(psi: np.ndarray, d: dict, kernel: str) -> float:
    """Conley's SE sqrt(psi' K psi) / n with the replication's kernel matrix (built once per replication).

    The first call per (replication, kernel) is checked against ``robust_se.conley_se`` (rtol 1e-3;
    in the replications that run the non-default options), so the study measures eocausal's SE
    while the other rows reuse the matrix.
    """
    key = f"K-{kernel}"
    if key not in d:
        from eocausal.estimators import robust_se

        dist = d.setdefault("dist", _haversine_km(d["coords"]))
        c = SPATIAL["range_km"]
        d[key] = np.clip(1 - dist / c, 0, None) if kernel == "bartlett" else (dist <= c).astype(float)
        mine = _conley(psi, d, kernel)
        if not d.get("check_conley", True):
            return mine
        ref = robust_se.conley_se(psi, d["coords"], c, kernel=kernel)
        if abs(ref - mine) > 1e-3 * ref:
            raise AssertionError(f"Conley SE ({kernel}): robust_se.conley_se {ref} vs direct {mine}")
        return ref
    p = psi - psi.mean()
    return float(np.sqrt(max(p @ d[key] @ p, 0.0)) / len(p))


def _check_row(seed, key, pe, psi, row, cl):
    """The recomputed estimate and CR1 SE agree with estimate()'s row."""
    from eocausal.estimators.weighting import se_from_psi

    se0, G = se_from_psi(psi, cl)
    if abs(pe.estimate - row.estimate) > 1e-9 * (1 + abs(row.estimate)) or \
            abs(se0 * _cr1(G) - row.std_error) > 1e-9 * (1 + row.std_error):
        raise AssertionError(f"seed {seed}, {key}: recomputed ({pe.estimate}, {se0 * _cr1(G)}) differs from "
                             f"estimate()'s ({row.estimate}, {row.std_error})")


def replicate_cell(pool: Pool, pcs: np.ndarray, cell: Cell, seed: int, extra: bool = True) -> dict:
    """Every row and SE option of one replication of ``cell``.

    estimate() is called once per (estimand, crossfit in {'auto', True}) with se='if' (plus once
    with block_km in the spatial cell, and once with methods=['dim'] on the randomised treatment);
    every other SE option is computed from the rows' influence functions (``fit.psi``), with the
    jacobian from re-evaluating the estimator on ``fit.y, fit.w, fit.e`` (``fit.e_aipw`` for AIPW),
    after checking that the recomputed estimate and CR1 SE equal the row's. ``extra=False`` skips
    the non-default options (the crossfit=True and block_km calls and the wild bootstrap).
    """
    import eocausal
    from eocausal.errors import NotEstimableError, OverlapError, SeparationError
    from eocausal.estimators.aipw import aipw
    from eocausal.estimators.weighting import (
        difference_in_means,
        hajek,
        horvitz_thompson,
    )

    d = simulate_cell(pool, pcs, cell, seed)
    d["check_conley"] = extra
    frame, cl = d["frame"], d["clusters"]
    res = {"seed": seed, "n": d["n"], "error": "", "warnings": {}, "rows": {}}
    adj = d["adjustment"]
    if cell.spatial:
        from eocausal.data.units import Units

        def data(w, y):
            return Units.from_frame(frame.assign(W=frame[w], Y=frame[y]), treatment="W", outcome="Y",
                                    covariates=d["confounders"], clusters="village", lon="lon", lat="lat")

        kw = dict(clusters="village")
    else:
        def data(w, y):
            return frame.assign(W=frame[w], Y=frame[y])

        kw = dict(treatment="W", outcome="Y", confounders=d["confounders"], clusters="village")

    def add(key, pe, psi, wild):
        res["rows"][key] = {opt: (float(pe.estimate), *map(float, v))
                            for opt, v in _se_options(pe.estimate, psi, pe.jacobian, cl, d, seed,
                                                      wild and cell.wild and extra).items()}

    # (estimand, tag, settings): the defaults; the textbook logit on all units; the defaults' fit with
    # the corrected IF; the defaults with spatial-block folds
    calls = [("ATE", "auto", {}), ("ATE", "logit", {"propensity": "logit"})]
    if cell.crossfit_true and extra:
        calls.append(("ATE", "crossfit", {"ipw_se": "corrected"}))
    if cell.spatial and cell.blocks and extra:
        calls.append(("ATE", "blocks", {"block_km": SPATIAL["range_km"]}))
    if cell.att:
        calls += [(est.replace("ATE", "ATT"), cf, more) for est, cf, more in calls]
    fns = {"ipw-ht": horvitz_thompson, "ipw-hajek": hajek}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tab = eocausal.estimate(data("R", "YR"), **kw, methods=["dim"], seed=seed)
            (row,) = tab.rows
            pe = difference_in_means(frame["YR"].to_numpy(), frame["R"].to_numpy(dtype=float))
            _check_row(seed, "dim", pe, pe.psi, row, cl)
            add("ATE|dim", pe, pe.psi, True)
            for estimand, cf, more in calls:
                methods = ["ipw-ht", "ipw-hajek"] + (["aipw"] if cf in ("auto", "blocks") else [])
                try:
                    tab = eocausal.estimate(data("W", "Y"), **kw, embeddings=d["embeddings"], methods=methods,
                                            adjustments=[adj], estimand=estimand, seed=seed, **more)
                except SeparationError as exc:  # the unpenalised logit with many coefficients per cluster
                    res.setdefault("row_errors", {})[f"{estimand}|{cf}"] = str(exc)[:80]
                    continue
                fit = tab.propensities[adj]
                if fit.in_sample != (cf == "logit"):
                    raise AssertionError(f"seed {seed}: {cf!r} gave in_sample={fit.in_sample}")
                tag = {"auto": "|auto", "logit": "|logit", "crossfit": "|crossfit", "blocks": "|auto|blocks"}[cf]
                more = cf == "blocks"
                for row in tab.rows:
                    if row.method == "aipw":
                        e = fit.e_aipw if fit.e_aipw is not None else fit.e
                        pe = aipw(fit.y, fit.w, e, fit.mu0, fit.mu1, estimand)
                        key = "aipw" + ("|blocks" if more else "")
                        _check_row(seed, key, pe, fit.psi["aipw"], row, cl)
                        add(f"{estimand}|{key}", pe, fit.psi["aipw"], not more)
                        continue
                    pe = fns[row.method](fit.y, fit.w, fit.e, estimand)
                    key = row.method + tag
                    _check_row(seed, key, pe, fit.psi[row.method], row, cl)
                    add(f"{estimand}|{key}", pe, fit.psi[row.method], cf == "auto")
                    if cf == "logit":  # the same estimate with the known-e IF
                        add(f"{estimand}|{key}|known-e", pe, pe.psi, False)
        except (OverlapError, NotEstimableError) as exc:
            res["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    for c in caught:
        name = c.category.__name__
        res["warnings"][name] = res["warnings"].get(name, 0) + 1
    return res


def _work_cell(args):
    cell, seeds, first = args
    out = []
    for s in seeds:
        t0 = time.perf_counter()
        r = replicate_cell(_POOL, _PCS, cell, s, extra=cell.extra_reps is None or s - first < cell.extra_reps)
        r["seconds"] = time.perf_counter() - t0
        out.append(r)
    return out


_PCS: np.ndarray | None = None


def run_cell(pool: Pool, pcs: np.ndarray, cell: Cell, reps: int, seed: int = 0, jobs: int = 1) -> list[dict]:
    """``reps`` replications of ``cell`` (seeds seed*100000 + 0..reps-1) in ``jobs`` forked processes."""
    global _POOL, _PCS
    _POOL, _PCS = pool, pcs
    return _run_parallel(_work_cell, cell, reps, seed, jobs)


def _run_parallel(work, what, reps: int, seed: int, jobs: int) -> list[dict]:
    """``work((what, seeds, first seed))`` over seeds seed*100000 + 0..reps-1, in ``jobs`` forked
    processes (4 interleaved chunks per process), the replications returned in seed order."""
    seeds = [seed * 100_000 + r for r in range(reps)]
    if jobs <= 1:
        return work((what, seeds, seeds[0]))
    chunks = [(what, seeds[i::jobs * 4], seeds[0]) for i in range(jobs * 4)]
    with ProcessPoolExecutor(jobs, mp_context=get_context("fork")) as ex:
        parts = list(ex.map(work, chunks))
    return sorted((r for p in parts for r in p), key=lambda r: r["seed"])


def summarise_cell(results: list[dict], truths: dict) -> pd.DataFrame:
    """One row per (estimand, row, SE option): coverage (MC SE), bias, SD, mean SE, SE/SD, bias/SD."""
    ok = [r for r in results if not r["error"]]
    keys = list(dict.fromkeys(k for r in ok for k in r["rows"]))
    out = []
    for key in keys:
        estimand, row = key.split("|", 1)
        truth = truths[estimand]
        opts = list(dict.fromkeys(o for r in ok if key in r["rows"] for o in r["rows"][key]))
        for opt in opts:
            a = np.array([r["rows"][key][opt] for r in ok if key in r["rows"] and opt in r["rows"][key]], float)
            est, se, lo, hi = a.T
            R = len(est)
            cov = float(np.mean((lo <= truth) & (truth <= hi)))
            sd = float(est.std(ddof=1))
            bias = float(est.mean() - truth)
            q75, q25 = np.percentile(est, [75, 25])
            out.append(dict(estimand=estimand, row=row, se=opt, R=R, coverage=cov, mcse=float(np.sqrt(cov * (1 - cov) / R)),
                            bias=bias, mcse_bias=sd / np.sqrt(R), sd=sd, mean_se=float(se.mean()),
                            se_sd=float(se.mean() / sd), bias_sd=bias / sd,
                            # diagnostics: coverage of the intervals shifted by the Monte Carlo mean bias (the SE's
                            # part of a miss), and median SE over the IQR-based SD (insensitive to a few outliers)
                            cov_recentred=float(np.mean((lo - bias <= truth) & (truth <= hi - bias))),
                            se_sd_robust=float(np.median(se) / ((q75 - q25) / 1.349)),
                            width=float(np.mean(hi - lo))))
    return pd.DataFrame(out)


def meets_goal(r) -> str:
    """'ok' or the goals a summary row misses (coverage, SE/SD, bias)."""
    miss = []
    if not GOAL["cov"][0] <= r.coverage <= GOAL["cov"][1]:
        miss.append("cov")
    if not GOAL["se_sd"][0] <= r.se_sd <= GOAL["se_sd"][1]:
        miss.append("SE/SD")
    if abs(r.bias_sd) >= GOAL["bias_sd"]:
        miss.append("bias")
    return "ok" if not miss else "MISS " + "+".join(miss)


def why_miss(r) -> str:
    """Why a summary row misses the goal, read from its numbers (empty when it meets it)."""
    if meets_goal(r) == "ok":
        return ""
    out = []
    if abs(r.bias_sd) >= GOAL["bias_sd"]:
        out.append(f"bias {r.bias:+.3f} = {r.bias_sd:+.2f} SD (MC SE {r.mcse_bias:.3f}"
                   + (", within 2 MC SE of 0" if abs(r.bias) < 2 * r.mcse_bias else "") + "); intervals shifted by it "
                   f"cover {r.cov_recentred:.3f}" + (", so the SE is not the problem" if GOAL["cov"][0] <= r.cov_recentred
                                                      else ""))
    if r.se_sd < GOAL["se_sd"][0]:
        out.append(f"mean SE / SD {r.se_sd:.2f}" + (f" but median SE / IQR-SD {r.se_sd_robust:.2f}: a few outlying "
                                                     "estimates inflate the SD" if r.se_sd_robust >= GOAL["se_sd"][0]
                                                     else ": the SE is too small"))
    elif r.se_sd > GOAL["se_sd"][1]:
        out.append(f"mean SE / SD {r.se_sd:.2f}: conservative")
    if not out:
        out.append(f"coverage {r.coverage:.3f} (MC SE {r.mcse:.3f}) with SE/SD {r.se_sd:.2f} and bias "
                   f"{r.bias_sd:+.2f} SD: the interval's tails (critical value) or MC noise")
    return "; ".join(out)


def _fmt(r) -> str:
    """'coverage / SE/SD / bias/SD' of a summary row."""
    return f"{r.coverage:.3f} / {r.se_sd:.2f} / {r.bias_sd:+.2f}"


def _get(df: pd.DataFrame, estimand: str, row: str, se: str = "CR1-t"):
    m = df[(df.estimand == estimand) & (df.row == row) & (df.se == se)]
    return None if m.empty else m.iloc[0]


def _cell_label(cell: Cell) -> str:
    if cell.spatial:
        return f"spatial ({cell.n_clusters} villages, k={cell.n_coef})"
    return f"G={cell.n_clusters}, k={cell.n_coef} ({cell.n_clusters / cell.n_coef:.1f}/coef)"


def cell_report(summaries: dict[str, pd.DataFrame], cells: dict[str, Cell]) -> list[str]:
    """The results-file section of the cells: goal matrix, comparisons, spatial cell, full tables."""
    lo, hi = GOAL["cov"]
    lines = ["#### Default cells against the goal", "",
             f"Each entry: coverage / mean SE / SD of estimates / bias / SD (CR1 SE, t(G-1) interval: `se='if'`). "
             f"Goal: coverage {lo}-{hi}, SE/SD {GOAL['se_sd'][0]}-{GOAL['se_sd'][1]}, |bias| < {GOAL['bias_sd']} SD; "
             "**bold** = meets all three; the misses are named.", ""]
    heads = {"dim": "DIM (randomised)", "ipw-ht|auto": "HT", "ipw-hajek|auto": "Hajek", "aipw": "AIPW"}
    whys: list[str] = []
    for estimand in ("ATE", "ATT"):
        rows_ = [r for r in DEFAULT_ROWS if not (estimand == "ATT" and r == "dim")]
        lines += [f"{estimand}:", "", "| cell | " + " | ".join(heads[r] for r in rows_) + " |",
                  "| --- |" + " --- |" * len(rows_)]
        for c in list(cells.values()):
            df = summaries.get(c.name)
            if df is None:
                continue
            ents = []
            for r in rows_:
                x = _get(df, estimand, r)
                if x is None:
                    ents.append("-")
                    continue
                flag = meets_goal(x)
                ents.append(f"**{_fmt(x)}**" if flag == "ok" else f"{_fmt(x)} {flag.replace('MISS ', 'miss: ')}")
                if flag != "ok":
                    whys.append(f"- {estimand}, {_cell_label(c)}, {heads[r]}: {why_miss(x)}.")
            lines.append(f"| {_cell_label(c)} | " + " | ".join(ents) + " |")
        lines.append("")
    lines += ["Why the misses miss (from the numbers: mean bias with its MC SE, coverage of the interval shifted "
              "by the mean bias, mean SE / SD and median SE / IQR-based SD):", "", *whys, ""]
    # IPW propensity and IF: in-sample vs cross-fitted, corrected vs known-e
    lines += ["#### IPW: the defaults (cross-fitted ridge-logit) vs 'logit' fitted on all units; corrected vs "
              "known-e IF", "",
              "coverage / SE/SD / bias/SD, CR1 + t. 'logit, all units' is `propensity='logit'` (crossfit='auto' fits "
              "it on all units, stacked-sandwich IF); cells where the unpenalised logit separates the arms count "
              "those replications as failed for that row only.", ""]
    for method, name in (("ipw-hajek", "Hajek"), ("ipw-ht", "HT")):
        for estimand in ("ATE", "ATT"):
            lines += [f"{name}, {estimand}:", "",
                      "| cell | ridge-logit cross-fitted, known-e (default) | ridge-logit cross-fitted, corrected "
                      "| logit all units, sandwich | logit all units, known-e |", "| --- | --- | --- | --- | --- |"]
            for c in cells.values():
                df = summaries.get(c.name)
                if df is None:
                    continue
                ents = []
                for row in (f"{method}|auto", f"{method}|crossfit", f"{method}|logit", f"{method}|logit|known-e"):
                    x = _get(df, estimand, row)
                    ents.append("-" if x is None else _fmt(x))
                lines.append(f"| {_cell_label(c)} | " + " | ".join(ents) + " |")
            lines.append("")
    # SE options of the default rows
    lines += ["#### SE options of the default rows: CR1 + t(G-1) vs CR0 + normal vs wild cluster bootstrap", "",
              "coverage (mean SE / SD); the wild row's SE is the bootstrap's, its interval by test inversion.", ""]
    for estimand in ("ATE", "ATT"):
        rows_ = [r for r in DEFAULT_ROWS if not (estimand == "ATT" and r == "dim")]
        lines += [f"{estimand}:", "", "| cell | row | CR1 + t | CR0 + z | wild | unclustered |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for c in cells.values():
            df = summaries.get(c.name)
            if df is None:
                continue
            for r in rows_:
                ents = []
                for opt in ("CR1-t", "CR0-z", "wild", "iid"):
                    x = _get(df, estimand, r, opt)
                    ents.append("-" if x is None else f"{x.coverage:.3f} ({x.se_sd:.2f})")
                lines.append(f"| {_cell_label(c)} | {heads[r]} | " + " | ".join(ents) + " |")
        lines.append("")
    # spatial cell and the full tables
    for c in cells.values():
        df = summaries.get(c.name)
        if df is None:
            continue
        title = "Spatial cell: every row and SE option" if c.spatial else f"Cell {c.name}: every row and SE option"
        if not c.spatial:
            lines += ["<details><summary>" + title + "</summary>", ""]
        else:
            lines += ["#### " + title, ""]
        lines += ["| estimand | row | SE | R | coverage (MC SE) | bias (MC SE) | SD | mean SE | SE/SD | bias/SD "
                  "| coverage re-centred | median SE / IQR-SD | goal |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in df.itertuples():
            lines.append(f"| {r.estimand} | {ROW_LABELS[r.row]} | {SE_LABELS[r.se]} | {r.R} | {r.coverage:.3f} ({r.mcse:.3f}) "
                         f"| {r.bias:+.3f} ({r.mcse_bias:.3f}) | {r.sd:.3f} | {r.mean_se:.3f} | {r.se_sd:.2f} "
                         f"| {r.bias_sd:+.2f} | {r.cov_recentred:.3f} | {r.se_sd_robust:.2f} | {meets_goal(r)} |")
        lines += (["", "</details>", ""] if not c.spatial else [""])
    return lines


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
    return _run_parallel(_work, design, reps, seed, jobs)


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
    ap.add_argument("--cells", nargs="+", default=None, choices=[*CELLS, "grid", "all"],
                    help="issue 15's cells ('grid': the 20 clustered cells, 'all': and the spatial one); without "
                         "--designs, only these run")
    ap.add_argument("--extra-reps", type=int, default=None,
                    help="the non-default options of the cells (crossfit=True, wild bootstrap) only in the first N "
                         "replications (default: all)")
    ap.add_argument("--no-blocks", action="store_true", help="spatial cell without the block_km folds")
    ap.add_argument("--dump", default=None, help="also write every replication's results to this JSON file")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    reps = args.reps or (100 if args.quick else 500)
    cell_names = []
    for c in args.cells or ():
        cell_names += ([k for k in CELLS if k != "spatial"] if c == "grid" else list(CELLS) if c == "all" else [c])
    cell_names = list(dict.fromkeys(cell_names))
    designs = args.designs or ([] if cell_names else ["main"] if args.quick else list(DESIGNS))
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
    if cell_names:
        pcs = pool_pcs(pool)
        truths = {False: true_effects(pool, False), True: true_effects(pool, True)}
        block += ["#### Issue 15 cells", "",
                  f"Defaults of estimate() (propensity 'ridge-logit', cross-fitted for IPW with the known-e IF under "
                  f"ipw_se='auto'; outcome_model 'ridge', folds 5, se='if'); "
                  f"true ATT {truths[False]['ATT']:.4f} (clustered cells), {truths[True]['ATT']:.4f} (spatial cell), "
                  "by quadrature over the pool (true_effects); ATE 1. Wild bootstrap: "
                  f"{N_WILD} draws, weights 'auto'."
                  + ("" if args.extra_reps is None else
                     f" Non-default options (the corrected IF of the cross-fitted ridge fit, wild, block folds) in the "
                     f"first {args.extra_reps} replications only."),
                  "", "| cell | R | failed | mean n | s per replication per process | wall s | warnings |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        summaries = {}
        t_cells = time.perf_counter()
        for name in cell_names:
            cell = Cell(**{**asdict(CELLS[name]), "extra_reps": args.extra_reps,
                           "blocks": CELLS[name].blocks and not args.no_blocks})
            t0 = time.perf_counter()
            results = run_cell(pool, pcs, cell, reps, args.seed, args.jobs)
            wall = time.perf_counter() - t0
            dumped[name] = results
            errors = [r for r in results if r["error"]]
            warn: dict = {}
            for r in results:
                for k, v in r["warnings"].items():
                    warn[k] = warn.get(k, 0) + v
            summaries[name] = summarise_cell(results, truths[cell.spatial])
            block.append(f"| {name} | {reps} | {len(errors)}"
                         + (f" ({'; '.join(sorted({e['error'] for e in errors})[:2])})" if errors else "")
                         + f" | {np.mean([r['n'] for r in results]):.0f} | {np.mean([r['seconds'] for r in results]):.2f}"
                         f" | {wall:.0f} | {', '.join(f'{k}: {v}' for k, v in sorted(warn.items())) or '-'} |")
            print(block[-1], f"(total {time.perf_counter() - t_cells:.0f} s)", flush=True)
        load = os.getloadavg()
        block += ["", f"All cells: {time.perf_counter() - t_cells:.0f} s wall; load average at the end "
                      f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.", "",
                  *cell_report(summaries, {n: CELLS[n] for n in cell_names})]
        print("\n".join(cell_report(summaries, {n: CELLS[n] for n in cell_names})[:80]), flush=True)
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
