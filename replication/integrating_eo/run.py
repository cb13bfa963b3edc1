#!/usr/bin/env python3
"""Simulations after Jerzak, Johansson and Daoud, "Integrating Earth Observation Data into
Causal Inference: Challenges and Opportunities" (arXiv:2301.12985): an image-borne confounder
in real chips, estimates as the images are coarsened, and a confounder the encoder cannot see.

Images. 64 x 64 chips of the real Landsat 7 scene ``../shared/data/landsat/landsat.tif`` (Salt
Lake City area; bands B4, B3, B2), cut with ``eocausal.RasterSource`` around points on a regular
grid (1,920 m chips, 30 m pixels). The images are fixed across replications; treatment and
outcome are redrawn in each replication.

World A, a fine-scale confounder. Into each chip i a 32 x 32 patch of "row texture" is planted:
stripes 2 px (60 m) wide alternating +a_i and -a_i on all bands, at a random position on the
8-px grid and in a random orientation. The amplitude a_i ~ U(0, A) is the confounder:
C_i = (a_i - A/2) / (A / sqrt 12). Because the stripes have zero mean over every 4 x 4 block,
average pooling by 4 or 8 removes them exactly; pooling by 2 keeps them (as 1-px stripes). So
the confounder's scale is 2 px: coarsening by 2 keeps it visible, by 4 or 8 destroys it.

World B, a misspecified confounder. The same patch, with a constant amplitude A/2, planted at a
random position; the confounder is *where* it lies: C_i = the standardised share of the patch
inside the chip's central 32 x 32 window. The encoder (random convolutional features, spatial
means of 3 x 3 filter responses) is translation invariant: at the scale it summarises the chip
it cannot see the layout. A remedy that looks at a smaller scale, the features of the chip plus
those of its central window, is reported next to it.

In both worlds: W_i ~ Bernoulli(expit(gamma C_i)), Y_i = tau W_i + beta C_i + N(0, 1) with
tau = 1, gamma = 1, beta = 0.5; the estimand is the ATE, tau.

Estimation, per replication and setting, with ``eocausal.estimate`` (methods: difference in
means, Hajek IPW, AIPW with ridge outcome regressions; 5 cross-fitting folds; clip 1e-3; IF
standard errors): the confounders are the chips' embeddings, MOSAIKS random features
(``eocausal.encoders.RandomFeatures``, kernel 3) fitted on the chips at the setting's scale and
reduced to their leading principal components (unsupervised). The propensity model is a
logistic regression on the components, centred and scaled as one block (eocausal's
BlockStandardizer, as in its 'ridge-logit'), whose ridge penalty is chosen once per setting by
5-fold CV on a pilot draw (independent of the replications) and then held fixed, because
eocausal's default 'ridge-logit' re-runs its CV in every fold of every replication, which the
CPU budget does not allow. "Oracle" rows adjust for the true C with an unpenalised logistic propensity.

Reported per setting and method: bias, its Monte Carlo SE, RMSE, the SD of the estimates, the
mean reported SE, and the coverage of the 95% intervals with its Monte Carlo SE.

Usage (from the repository root)::

    python replication/integrating_eo/run.py                   # full: 900 chips, 100 replications
    python replication/integrating_eo/run.py --quick --out DIR  # 400 chips, 10 replications

Writes ``results.json``, ``results.md``, ``bias_rmse_coverage.png``, ``chips.png`` and the block
between ``<!-- results:start -->`` and ``<!-- results:end -->`` in ``README.md`` of ``--out``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # replication/: _common, make_readme
from _common import (ROOT, SHARED_DATA, atomic_write_text, fnum, jsonable, machine, output_folder,  # noqa: E402
                     parser, save_figure, update_readme)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.special import expit  # noqa: E402

import eocausal  # noqa: E402
from eocausal.data.units import Units  # noqa: E402

FOLDER = "integrating_eo"
RASTER = SHARED_DATA / "landsat" / "landsat.tif"
BANDS = ("B4", "B3", "B2")
PX, CHIP_M, PATCH, STRIPE = 64, 1920.0, 32, 2
FACTORS = (1, 2, 4, 8)
TAU, GAMMA, BETA, AMPLITUDE = 1.0, 1.0, 0.5, 30.0
CLIP = 1e-3
METHODS = ("ipw-hajek", "aipw")
PILOT_CS = np.logspace(-2, 3, 11)  # inverse ridge penalties searched on the pilot draw
METHOD_LABEL = {"dim": "difference in means", "ipw-hajek": "Hajek IPW", "aipw": "AIPW"}

FULL = dict(grid=30, reps=100, rf_features=256, pcs=32, folds=5)
QUICK = dict(grid=20, reps=10, rf_features=128, pcs=16, folds=5)

#: Settings: (key, world, label, kind). kind: 'dim', 'oracle', or an embedding name.
SETTINGS = (
    ("A:unadjusted", "A", "unadjusted", "dim"),
    ("A:oracle", "A", "oracle (true C)", "oracle"),
    ("A:f1", "A", "image, pooling 1 (64 px)", "f1"),
    ("A:f2", "A", "image, pooling 2 (32 px)", "f2"),
    ("A:f4", "A", "image, pooling 4 (16 px)", "f4"),
    ("A:f8", "A", "image, pooling 8 (8 px)", "f8"),
    ("B:unadjusted", "B", "unadjusted", "dim"),
    ("B:oracle", "B", "oracle (true C)", "oracle"),
    ("B:misspecified", "B", "image, pooling 1, whole-chip features (misspecified)", "whole"),
    ("B:remedy", "B", "image, pooling 1, whole chip + central window features", "centre"),
)


# ----------------------------------------------------------------------------- images
def read_chips(grid: int) -> tuple[np.ndarray, pd.DataFrame]:
    """(n, 3, 64, 64) float64 chips around a grid x grid lattice of points inside the scene."""
    with eocausal.RasterSource(RASTER, bands=list(BANDS), chip_size_m=CHIP_M, chip_px=PX) as src:
        x0, y0, x1, y1 = src.bounds
        mx, my = 0.015, 0.012  # keep every chip inside the scene (about 0.7 chip widths)
        lon, lat = np.meshgrid(np.linspace(x0 + mx, x1 - mx, grid), np.linspace(y0 + my, y1 - my, grid))
        pts = pd.DataFrame({"unit": np.arange(grid * grid), "lon": lon.ravel(), "lat": lat.ravel()})
        units = Units.from_frame(pts, id="unit", treatment=None, outcome=None, lon="lon", lat="lat")
        chips = src.chips(units)
        if src.last_report_["n_dropped"]:
            raise RuntimeError(f"{src.last_report_['n_dropped']} chips fell off the raster")
    return chips.astype(np.float64), pts


def stripes(orientation: int) -> np.ndarray:
    """32 x 32 pattern of +1/-1 stripes, STRIPE px wide (zero mean over every 2*STRIPE block)."""
    s = np.where((np.arange(PATCH) // STRIPE) % 2 == 0, 1.0, -1.0)
    return np.tile(s[:, None], (1, PATCH)) if orientation else np.tile(s[None, :], (PATCH, 1))


def plant(chips: np.ndarray, amplitude: np.ndarray, pos: np.ndarray, orient: np.ndarray) -> np.ndarray:
    out = chips.copy()
    for i in range(len(chips)):
        r, c = pos[i]
        out[i, :, r:r + PATCH, c:c + PATCH] += amplitude[i] * stripes(orient[i])
    return out


def pool(x: np.ndarray, f: int) -> np.ndarray:
    """Average pooling by f (non-overlapping f x f blocks)."""
    if f == 1:
        return x
    n, b, h, w = x.shape
    return x.reshape(n, b, h // f, f, w // f, f).mean(axis=(3, 5))


def worlds(chips: np.ndarray, rng: np.random.Generator) -> dict:
    n = len(chips)
    pos = rng.integers(0, (PX - PATCH) // 8 + 1, size=(n, 2)) * 8  # 0, 8, ..., 32: aligned with every pooling grid
    orient = rng.integers(0, 2, n)
    a = rng.uniform(0, AMPLITUDE, n)
    c_a = (a - AMPLITUDE / 2) / (AMPLITUDE / np.sqrt(12))
    pos_b = rng.integers(0, (PX - PATCH) // 8 + 1, size=(n, 2)) * 8
    orient_b = rng.integers(0, 2, n)
    lo, hi = (PX - PATCH) // 2, (PX + PATCH) // 2  # the central 32 x 32 window
    overlap = (np.clip(np.minimum(pos_b + PATCH, hi) - np.maximum(pos_b, lo), 0, None).prod(axis=1)) / PATCH**2
    c_b = (overlap - overlap.mean()) / overlap.std()
    return dict(A=dict(images=plant(chips, a, pos, orient), C=c_a, amplitude=a, pos=pos),
                B=dict(images=plant(chips, np.full(n, AMPLITUDE / 2), pos_b, orient_b), C=c_b,
                       central_share=overlap, pos=pos_b))


def embeddings(w: dict, cfg: dict, seed: int) -> tuple[dict, dict]:
    """Random-feature embeddings (reduced to principal components) of each setting's chips."""
    from sklearn.decomposition import PCA

    from eocausal.encoders import RandomFeatures

    def rf(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        return RandomFeatures(n_features=cfg["rf_features"], kernel=3, seed=seed, device="cpu").fit(x).transform(x)

    def pcs(z):
        p = PCA(cfg["pcs"], random_state=seed).fit(z)
        return p.transform(z), float(p.explained_variance_ratio_.sum())

    Z, info = {}, {}
    for f in FACTORS:
        Z[f"f{f}"], info[f"f{f}"] = pcs(rf(pool(w["A"]["images"], f)))
    lo, hi = (PX - PATCH) // 2, (PX + PATCH) // 2
    whole = rf(w["B"]["images"])
    centre = rf(w["B"]["images"][:, :, lo:hi, lo:hi])
    Z["whole"], info["whole"] = pcs(whole)
    Z["centre"], info["centre"] = pcs(np.hstack([whole, centre]))
    return Z, info


def r2_of_confounder(Z: np.ndarray, C: np.ndarray, seed: int) -> float:
    """Cross-validated R^2 of a ridge regression of C on the embedding (how visible C is)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = cross_val_predict(make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15))), Z, C,
                          cv=KFold(5, shuffle=True, random_state=seed))
    return float(1 - np.mean((p - C) ** 2) / np.var(C))


# ----------------------------------------------------------------------------- estimation
def draw(C: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    w = (rng.uniform(size=len(C)) < expit(GAMMA * C)).astype(int)
    y = TAU * w + BETA * C + rng.normal(size=len(C))
    return w, y


def logit(C: float, *, block: bool = True):
    """Logistic regression with ridge penalty 1/C on scaled inputs.

    ``block``: centre the embedding's components and divide them by one pooled SD
    (:class:`eocausal.estimators.learners.BlockStandardizer`, as eocausal's 'ridge-logit' does
    for embeddings), which keeps the components' relative variance; otherwise standardise each
    column. On the principal components of random features, per-column standardisation gave
    low-variance noise components the weight of the informative ones: a weak penalty then
    overfitted (Hajek bias -0.15 at pooling 1) and a strong one underfitted (+0.18).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from eocausal.estimators.learners import BlockStandardizer

    return make_pipeline(BlockStandardizer(0) if block else StandardScaler(), LogisticRegression(C=C, max_iter=5000))


def pilot_penalty(Z: np.ndarray, C: np.ndarray, seed: int) -> float:
    """Inverse ridge penalty chosen by 5-fold CV (log loss) on one pilot draw of W."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    from eocausal.estimators.learners import BlockStandardizer

    w, _ = draw(C, np.random.default_rng([seed, 99]))
    cv = LogisticRegressionCV(Cs=PILOT_CS, cv=5, scoring="neg_log_loss", max_iter=5000,
                              l1_ratios=(0.0,), use_legacy_attributes=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn API transition notices
        m = make_pipeline(BlockStandardizer(0), cv).fit(Z, w)
    return float(np.atleast_1d(m[-1].C_)[0])


def one_estimate(w, y, conf, clf, seed, folds):
    """eocausal.estimate on one draw; returns per method (estimate, se, ci) and warnings."""
    n = len(w)
    frame = pd.DataFrame({"unit": np.arange(n), "W": w, "Y": y})
    kw = dict(methods=("dim",) + METHODS, clip=CLIP, seed=seed, folds=folds, propensity=clf)
    if conf[0] == "oracle":
        frame["C"] = conf[1]
        units = Units.from_frame(frame, id="unit", treatment="W", outcome="Y", covariates=["C"])
        kw["adjustments"] = ["tabular"]
    else:
        units = Units.from_frame(frame, id="unit", treatment="W", outcome="Y")
        kw.update(embeddings=conf[1], adjustments=["image"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tab = eocausal.estimate(units, **kw)
    out = {r.method: (r.estimate, r.std_error, r.ci_low, r.ci_high, r.n_clipped) for r in tab}
    return out, sorted({c.category.__name__ for c in caught})


def summarise(est: np.ndarray, se: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict:
    R = len(est)
    cov = float(np.mean((lo <= TAU) & (TAU <= hi)))
    sd = float(np.std(est, ddof=1)) if R > 1 else float("nan")
    return dict(reps=R, mean=float(est.mean()), bias=float(est.mean() - TAU), bias_mcse=sd / np.sqrt(R),
                rmse=float(np.sqrt(np.mean((est - TAU) ** 2))), sd=sd, mean_se=float(se.mean()),
                se_over_sd=float(se.mean() / sd) if sd > 0 else float("nan"), coverage=cov,
                coverage_mcse=float(np.sqrt(max(cov * (1 - cov), 0.95 * 0.05) / R)))


# ----------------------------------------------------------------------------- outputs
def plot_metrics(summary: dict) -> object:
    """Bias, RMSE and coverage against the pooling factor (world A), with world B as points."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.5, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    colors = {"ipw-hajek": "#2c7fb8", "aipw": "#c0392b"}
    x = np.arange(len(FACTORS))
    xb = len(FACTORS) + 0.6 + np.array([0.0, 1.0])
    for ax, (metric, lab) in zip(axes, (("bias", "bias"), ("rmse", "RMSE"), ("coverage", "95% CI coverage"))):
        for m in METHODS:
            rows = [summary[f"A:f{f}"][m] for f in FACTORS]
            v = np.array([r[metric] for r in rows])
            err = np.array([r["bias_mcse" if metric == "bias" else "coverage_mcse"] for r in rows]) \
                if metric in ("bias", "coverage") else None
            ax.errorbar(x, v, yerr=err, marker="o", color=colors[m], capsize=3, label=METHOD_LABEL[m])
            vb = np.array([summary[k][m][metric] for k in ("B:misspecified", "B:remedy")])
            eb = (np.array([summary[k][m]["bias_mcse" if metric == "bias" else "coverage_mcse"]
                            for k in ("B:misspecified", "B:remedy")]) if metric in ("bias", "coverage") else None)
            ax.errorbar(xb, vb, yerr=eb, marker="s", ls="none", color=colors[m], capsize=3)
            ax.axhline(summary["A:oracle"][m][metric], color=colors[m], ls=":", lw=0.9)
        ax.plot(xb, [summary["B:unadjusted"]["dim"][metric]] * 2, marker="x", ls="none", color="grey",
                label="unadjusted (B)")
        ax.axhline(summary["A:unadjusted"]["dim"][metric], color="grey", ls="--", lw=0.9,
                   label="unadjusted (A)")
        if metric == "bias":
            ax.axhline(0, color="black", lw=0.6)
        if metric == "coverage":
            ax.axhline(0.95, color="black", lw=0.6)
            ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(list(x) + list(xb), [f"x{f}" for f in FACTORS] + ["B:\nmisspec.", "B:\nremedy"], fontsize=8)
        ax.axvline(len(FACTORS) - 0.2, color="#999999", lw=0.6)
        ax.set_xlabel("world A: average pooling factor  |  world B", fontsize=8)
        ax.set_title(lab, fontsize=10)
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)
    axes[0].legend(fontsize=7, frameon=False, loc="center left")
    fig.suptitle("dotted: oracle (true C); dashed: unadjusted; error bars: Monte Carlo SE", fontsize=8)
    return fig


def plot_chips(w: dict, chips: np.ndarray, n_show: int = 4) -> object:
    """Original chip, world A chip at each pooling factor, world B chip (false colour)."""
    from matplotlib.figure import Figure

    A = w["A"]
    order = np.argsort(-A["amplitude"])[:n_show]
    cols = ["original", *[f"A, pooled x{f}" for f in FACTORS], "B (layout)"]
    fig = Figure(figsize=(1.6 * len(cols), 1.7 * n_show + 0.3), layout="constrained")
    axes = fig.subplots(n_show, len(cols), squeeze=False)
    lo, hi = np.percentile(chips, 1), np.percentile(chips, 99)
    for r, i in enumerate(order):
        imgs = [chips[i]] + [pool(A["images"][i:i + 1], f)[0] for f in FACTORS] + [w["B"]["images"][i]]
        for c, img in enumerate(imgs):
            axes[r, c].imshow(np.clip((img.transpose(1, 2, 0) - lo) / (hi - lo), 0, 1), interpolation="nearest")
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(cols[c], fontsize=7)
    return fig


def verdicts(s: dict, R: int) -> list[dict]:
    """The paper's qualitative findings as targets, checked on eocausal's numbers."""
    src = "Jerzak, Johansson and Daoud (arXiv:2301.12985), simulation section (qualitative)"
    rows = []
    dim_a, dim_b = s["A:unadjusted"]["dim"], s["B:unadjusted"]["dim"]
    for m in METHODS:
        f1, f8 = s["A:f1"][m], s["A:f8"][m]
        ok = abs(f1["bias"]) < 0.25 * abs(dim_a["bias"])
        rows.append(dict(
            id=f"sees_{m}", quantity=f"{METHOD_LABEL[m]}: bias when the encoder sees the confounder (pooling 1)",
            target="bias shrinks toward 0 (well below the unadjusted bias)", source=src,
            eocausal=f"bias {f1['bias']:+.3f} (MC SE {f1['bias_mcse']:.3f}) vs unadjusted {dim_a['bias']:+.3f}",
            status="reproduced" if ok else "differs: residual bias above a quarter of the unadjusted bias"))
        coarse = [s[f"A:f{f}"][m] for f in (4, 8)]
        tol = 3 * np.hypot(f1["bias_mcse"], f8["bias_mcse"])
        ok = (all(abs(c["bias"]) > 0.75 * abs(dim_a["bias"]) for c in coarse)
              and abs(f8["bias"]) > abs(f1["bias"]) + tol)
        rows.append(dict(
            id=f"coarse_{m}", quantity=f"{METHOD_LABEL[m]}: bias after coarsening beyond the confounder's scale (pooling 4, 8)",
            target="bias remains (near the unadjusted bias)", source=src,
            eocausal=f"bias {coarse[0]['bias']:+.3f} (x4), {coarse[1]['bias']:+.3f} (x8) vs unadjusted {dim_a['bias']:+.3f}",
            status="reproduced" if ok else "differs: coarsening removed less bias than expected"))
        f2 = s["A:f2"][m]
        ok = abs(f2["bias"]) < 0.25 * abs(dim_a["bias"])
        rows.append(dict(
            id=f"within_{m}", quantity=f"{METHOD_LABEL[m]}: bias after coarsening within the confounder's scale (pooling 2)",
            target="bias stays small (the 2-px stripes survive pooling by 2)", source="this design",
            eocausal=f"bias {f2['bias']:+.3f} (MC SE {f2['bias_mcse']:.3f})",
            status="reproduced" if ok else "differs: pooling by 2 lost the confounder"))
        mis, rem = s["B:misspecified"][m], s["B:remedy"][m]
        ok = abs(mis["bias"]) > 0.75 * abs(dim_b["bias"])
        rows.append(dict(
            id=f"misspecified_{m}", quantity=f"{METHOD_LABEL[m]}: bias with a misspecified image confounder (layout)",
            target="bias remains", source=src,
            eocausal=f"bias {mis['bias']:+.3f} (MC SE {mis['bias_mcse']:.3f}) vs unadjusted {dim_b['bias']:+.3f}; "
                     f"with central-window features {rem['bias']:+.3f}",
            status="reproduced" if ok else "differs: the misspecified encoder removed the bias"))
        band = 2.58 * np.sqrt(0.95 * 0.05 / R)
        ok = abs(f1["coverage"] - 0.95) <= band
        rows.append(dict(
            id=f"coverage_{m}", quantity=f"{METHOD_LABEL[m]}: 95% CI coverage, correctly specified (pooling 1)",
            target=f"near 0.95 (within {band:.3f}, 2.58 Monte Carlo SEs at {R} replications)", source=src,
            eocausal=f"{f1['coverage']:.3f} (MC SE {f1['coverage_mcse']:.3f}); oracle {s['A:oracle'][m]['coverage']:.3f}",
            status="reproduced" if ok else f"differs: coverage {f1['coverage']:.3f}"
            + (" (residual bias)" if abs(f1["bias"]) > 2 * f1["sd"] / max(np.sqrt(R), 1) else " (SE calibration)")))
    rows.append(dict(
        id="paper_numbers", quantity="the paper's own bias/RMSE numbers per resolution",
        target="reported in the paper for its images, CNN and data-generating process", source=src,
        eocausal="not compared: different images (public Landsat here), encoder and data-generating process",
        status="not reproducible without the paper's simulation inputs (images and code)"))
    return rows


def render_targets(rows) -> str:
    lines = ["| quantity | target | source | eocausal | status |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = (r["quantity"], r["target"], r["source"], r["eocausal"], r["status"])
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def render_settings(summary: dict, labels: dict, penalties: dict, r2: dict) -> str:
    lines = ["| world | setting | method | bias | MC SE | RMSE | SD | mean SE | coverage | MC SE | R^2(C \\| Z) | 1/penalty |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, world, label, kind in SETTINGS:
        for m, v in summary[key].items():
            lines.append(f"| {world} | {label} | {METHOD_LABEL[m]} | {v['bias']:+.3f} | {v['bias_mcse']:.3f} | "
                         f"{v['rmse']:.3f} | {v['sd']:.3f} | {v['mean_se']:.3f} | {v['coverage']:.3f} | "
                         f"{v['coverage_mcse']:.3f} | {fnum(r2.get(kind))} | {fnum(penalties.get(kind), 3)} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = parser(__doc__, FOLDER, quick="400 chips, 10 replications (< 60 s)", threads="torch threads")
    ap.add_argument("--reps", type=int, default=None, help="replications per setting")
    a = ap.parse_args(argv)
    if not RASTER.is_file():
        print(f"raster not found: {RASTER}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(a.threads)
    cfg = dict(QUICK if a.quick else FULL)
    if a.reps is not None:
        cfg["reps"] = a.reps
    R = cfg["reps"]
    out = output_folder(a, FOLDER)  # --quick never overwrites the committed full results
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    times = {}

    chips, pts = read_chips(cfg["grid"])
    w = worlds(chips, np.random.default_rng([a.seed, 0]))
    exact = {f: float(np.abs(pool(w["A"]["images"], f) - pool(chips, f)).max()) for f in FACTORS}
    times["chips"] = time.perf_counter() - t0
    t = time.perf_counter()
    Z, pc_share = embeddings(w, cfg, seed=0)
    conf_of = {"f1": "A", "f2": "A", "f4": "A", "f8": "A", "whole": "B", "centre": "B"}
    r2 = {k: r2_of_confounder(Z[k], w[conf_of[k]]["C"], a.seed) for k in Z}
    penalties = {k: pilot_penalty(Z[k], w[conf_of[k]]["C"], a.seed) for k in Z}
    times["embed_and_pilot"] = time.perf_counter() - t

    t = time.perf_counter()
    raw = {key: {m: [] for m in (("dim",) if kind == "dim" else METHODS)} for key, _, _, kind in SETTINGS}
    warn_counts = {key: {} for key, *_ in SETTINGS}
    for rep in range(R):
        for world in ("A", "B"):
            C = w[world]["C"]
            wv, y = draw(C, np.random.default_rng([a.seed, 1, rep, ord(world)]))
            dim_done = False
            for key, wd, _, kind in SETTINGS:
                if wd != world or kind == "dim":
                    continue
                conf = ("oracle", C) if kind == "oracle" else ("image", Z[kind])
                clf = logit(1e6, block=False) if kind == "oracle" else logit(penalties[kind])
                res, caught = one_estimate(wv, y, conf, clf, seed=rep, folds=cfg["folds"])
                for m in METHODS:
                    raw[key][m].append(res[m])
                if not dim_done:
                    raw[f"{world}:unadjusted"]["dim"].append(res["dim"])
                    dim_done = True
                for c in caught:
                    warn_counts[key][c] = warn_counts[key].get(c, 0) + 1
    times["replications"] = time.perf_counter() - t

    summary = {}
    for key, per in raw.items():
        summary[key] = {}
        for m, vals in per.items():
            v = np.array(vals, dtype=float)
            s = summarise(v[:, 0], v[:, 1], v[:, 2], v[:, 3])
            s["mean_n_clipped"] = float(v[:, 4].mean()) if m != "dim" else 0.0
            summary[key][m] = s
    rows = verdicts(summary, R)
    labels = {key: label for key, _, label, _ in SETTINGS}
    t = time.perf_counter()
    figs = {"metrics": save_figure(plot_metrics(summary), out / "bias_rmse_coverage.png"),
            "chips": save_figure(plot_chips(w, chips), out / "chips.png")}
    times["figures"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    times["cpu_total"] = time.process_time() - c0

    result = dict(
        paper="Jerzak, Johansson and Daoud, Integrating Earth Observation Data into Causal Inference (arXiv:2301.12985)",
        quick=a.quick, seed=a.seed, config=cfg,
        design=dict(raster=str(RASTER.relative_to(ROOT.parent)), bands=BANDS, chip_px=PX, chip_m=CHIP_M,
                    n_units=int(len(chips)), patch_px=PATCH, stripe_px=STRIPE, tau=TAU, gamma=GAMMA, beta=BETA,
                    amplitude_max=AMPLITUDE, factors=FACTORS, clip=CLIP,
                    max_abs_pooled_difference_planted_vs_original=exact,
                    share_treated_mean={wd: float(np.mean(expit(GAMMA * w[wd]["C"]))) for wd in ("A", "B")}),
        command="python replication/integrating_eo/run.py" + (" --quick" if a.quick else ""),
        rows=rows,
        settings=[dict(key=key, world=wd, label=label, embedding=kind, r2_confounder=r2.get(kind),
                       inverse_penalty=penalties.get(kind), pc_variance_share=pc_share.get(kind),
                       warnings=warn_counts[key], methods=summary[key]) for key, wd, label, kind in SETTINGS],
        estimates={key: {m: [list(map(float, v)) for v in vals] for m, vals in per.items()} for key, per in raw.items()},
        figures=figs, timing={k: round(v, 1) for k, v in times.items()},
        machine=machine(torch=torch.__version__),
    )
    atomic_write_text(out / "results.json", json.dumps(jsonable(result), indent=1) + "\n")
    targets = render_targets(rows)
    table = render_settings(summary, labels, penalties, r2)
    mode = "QUICK MODE (few replications; not the reference numbers). " if a.quick else ""
    notes = (f"{mode}Generated by `{result['command']}` in {times['total']:.0f} s wall, {times['cpu_total']:.0f} s "
             f"CPU (replications {times['replications']:.0f} s wall) on {os.cpu_count()} cores, load average "
             f"{result['machine']['load_avg_1min']} at the end (other processes were running when it exceeds the "
             f"cores). {len(chips)} chips, {R} replications per setting (the same draws of W and Y for all "
             f"settings of a world). Random features {cfg['rf_features']} reduced to {cfg['pcs']} principal components. "
             f"Largest |pooled planted - pooled original| pixel difference by pooling factor: "
             + ", ".join(f"x{f}: {v:.2g}" for f, v in exact.items())
             + f" (x4 and x8: the pattern is gone). Monte Carlo SE of a coverage: sqrt(max(p(1-p), 0.95 x 0.05) / {R}).")
    md = (f"# Integrating EO data into causal inference: simulation results\n\n## Targets\n\n{targets}\n\n"
          f"## Every setting\n\n{table}\n\n{notes}\n")
    atomic_write_text(out / "results.md", md)
    update_readme(out, f"### Targets (the paper's qualitative findings)\n\n{targets}\n\n### Every setting\n\n"
                       f"{table}\n\n{notes}\n\nFigures: `{figs['metrics']}`, `{figs['chips']}`.",
                  folder=FOLDER, title="Integrating EO data into causal inference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
