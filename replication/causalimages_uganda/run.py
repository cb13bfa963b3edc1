#!/usr/bin/env python3
"""The causalimages tutorial data (northern Uganda, YOP) analysed with eocausal.

Data: ``CausalImagesTutorialData.RData`` from the R package causalimages (Jerzak and Daoud;
GPL-3; ``../shared/data/causalimages``): 2082 units, 825 treated, 327 RGB images of 35 x 35
pixels shared by the units (1 to ~30 units per image), an outcome, and a 7-column matrix X
of which columns 1, 3, 5 and 7 are functions of the treatment (X1 = W, X3 = W xA, X5 = W xC,
X7 = W xB; see the data README and :func:`eocausal.read_causalimages`).

What the script does, in order:

1. data facts (units, treated, images, X structure) checked against the data README;
2. the difference in means, computed directly with numpy and by ``eocausal.estimate``;
3. tabular-only Hajek IPW and AIPW on the pre-treatment covariates (xA, xC, xB and the
   missingness indicator of xC);
4. image-adjusted Hajek IPW and AIPW with MOSAIKS random features (``RandomFeatures`` through
   ``eocausal.embed``, reduced to their leading principal components), image only and
   tabular + image;
5. the same with the treatment-trained CNN (``PropensityCNN.fit_oof``, cross-fitted by image):
   its out-of-fold embedding as confounders, and its own out-of-fold propensity;
6. causal salience maps of the CNN (most likely treated, least likely controls, one unit per
   image);
7. the bad-control analysis of the R tutorials: X[, -1] (three treatment-derived columns) as
   confounders, tabular and tabular + image, and all of X (X1 = W): the diagnostics must
   catch it (OverlapWarning, propensities at the clip, SeparationError);
8. figures: overlap (good and bad adjustment sets), love plot, salience gallery, forest plot.

All standard errors are clustered by image (the units' ``cluster`` column), and every
cross-fitting fold keeps an image's units together.

Usage (from the repository root)::

    python replication/causalimages_uganda/run.py                 # full run, writes here
    python replication/causalimages_uganda/run.py --quick --out DIR  # small encoders (< 60 s)

Writes ``results.json``, ``results.md``, the PNG figures and the block between
``<!-- results:start -->`` and ``<!-- results:end -->`` in ``README.md`` of ``--out`` (for
another folder the README is started from this folder's). ``--out``: by default this folder
for the full run, and for ``--quick`` a folder outside the repository (``QUICK_OUT``), so that
a smoke run never overwrites the committed full results. BLAS runs single-threaded unless
the environment says otherwise, and torch uses ``--threads`` (default 1): on a busy 2-core
machine multithreaded OpenBLAS made the ridge fits about 7x slower and two torch threads made
the CNN 4x slower.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # replication/: _common, make_readme
from _common import (ROOT, SHARED_DATA, atomic_write_text, fnum, jsonable, machine, output_folder,  # noqa: E402
                     parser, quick_out, save_figure, update_readme)

import numpy as np  # noqa: E402

import eocausal  # noqa: E402
from eocausal.errors import (DataQualityWarning, OverlapError, SeparationError)

FOLDER = "causalimages_uganda"
DATA = SHARED_DATA / "causalimages" / "CausalImagesTutorialData.RData"
DATA_README = "shared/data/causalimages/README.md"
NO_TARGET = "no published target; eocausal's estimate reported"
CLIP = 1e-3
#: Default ``--out`` of ``--quick``: outside the repository, never the committed full results.
QUICK_OUT = quick_out(FOLDER)

FULL = dict(rf_features=256, pcs=32, cnn_folds=5, cnn_epochs=8, cnn_patience=3, cnn_width=8,
            cnn_val_fraction=0.2, salience_k=4, folds=5, bad_control_image=True)
QUICK = dict(rf_features=32, pcs=8, cnn_folds=2, cnn_epochs=1, cnn_patience=1, cnn_width=4,
             cnn_val_fraction=0.0, salience_k=2, folds=2, bad_control_image=False)


# ----------------------------------------------------------------------------- helpers
def row_dict(r) -> dict:
    return dict(method=r.method, adjustment=r.adjustment, estimand=r.estimand, estimate=r.estimate,
                std_error=r.std_error, ci=[r.ci_low, r.ci_high], n=r.n, n_treated=r.n_treated,
                n_clusters=r.n_clusters, n_clipped=r.n_clipped, ess_treated=r.ess_treated,
                ess_control=r.ess_control)


def overlap_facts(fit) -> dict:
    e, w = np.asarray(fit.e_raw), np.asarray(fit.w)
    return dict(n_clipped=int(fit.n_clipped), treated_range=[float(e[w == 1].min()), float(e[w == 1].max())],
                control_range=[float(e[w == 0].min()), float(e[w == 0].max())],
                share_beyond_0_01=float(np.mean((e < 0.01) | (e > 0.99))))


def balance_facts(bal) -> dict:
    b = bal.copy()
    out = {}
    for kind, grp in b.groupby("kind"):
        out[kind] = dict(max_abs_smd_before=float(np.nanmax(np.abs(grp["smd_before"]))),
                         max_abs_smd_after=float(np.nanmax(np.abs(grp["smd_after"]))),
                         n_imbalanced=int(grp["imbalanced"].sum()))
    return out


# ----------------------------------------------------------------------------- analyses
def raw_x_checks() -> dict:
    """The structure of X checked on the raw workspace with the rdata package, not eocausal."""
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata: no data.table constructor (falls back to data.frame)
        objs = rdata.conversion.convert(rdata.parser.parse_file(DATA))
    x = np.asarray(objs["X"], dtype=float)
    na = np.isnan(x)
    x[na] = np.nan  # R's NA_real_ is a signalling NaN: quieten it before arithmetic
    w = np.asarray(objs["obsW"], dtype=float)

    def same(a, b):
        ok = ~(np.isnan(a) | np.isnan(b))
        return bool(np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(a[ok], b[ok]))

    ident = {"X1 == W": same(x[:, 0], w), "X3 == W * X2": same(x[:, 2], w * x[:, 1]),
             "X5 == W * X4": same(x[:, 4], w * x[:, 3]), "X7 == W * X6": same(x[:, 6], w * x[:, 5])}
    return dict(identities=ident, na_cells=int(na.sum()), na_by_column=na.sum(axis=0).tolist(),
                shape=list(x.shape))


def load(covariates: str):
    """read_causalimages with its expected imputation warning recorded, not shown."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataQualityWarning)
        data = eocausal.read_causalimages(DATA, covariates=covariates)
    return data, [str(w.message) for w in caught if issubclass(w.category, DataQualityWarning)]


def estimate_recording(units, **kw):
    """eocausal.estimate, with its warnings and a diagnostic error recorded instead of raised."""
    out = dict(warnings=[], error=None, table=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out["table"] = eocausal.estimate(units, **kw)
        except (SeparationError, OverlapError) as exc:
            out["error"] = dict(type=type(exc).__name__, message=str(exc))
    out["warnings"] = [dict(type=w.category.__name__, message=str(w.message)) for w in caught]
    return out


def embed_rf(data, cfg, seed):
    from sklearn.decomposition import PCA

    from eocausal.encoders import RandomFeatures

    enc = RandomFeatures(n_features=cfg["rf_features"], kernel=3, seed=seed, device="cpu")
    Z = eocausal.embed(data.units, data.images, enc, device="cpu", seed=seed)
    pcs = PCA(cfg["pcs"], random_state=seed).fit(Z.to_numpy())
    return pcs.transform(Z.to_numpy()), float(pcs.explained_variance_ratio_.sum())


def fit_cnn(data, chips, X, cfg, seed):
    from eocausal.encoders import PropensityCNN

    cnn = PropensityCNN(folds=cfg["cnn_folds"], epochs=cfg["cnn_epochs"], patience=cfg["cnn_patience"],
                        width=cfg["cnn_width"], val_fraction=cfg["cnn_val_fraction"], seed=seed, device="auto",
                        batch_size=128)
    return cnn.fit_oof(chips, data.units.w(), X=X, clusters=data.units.frame["image_key"].to_numpy())


def cnn_own_propensity(data, cnn, X, seed):
    """Hajek IPW and AIPW with the CNN's own out-of-fold propensity (clipped at CLIP).

    ``estimate(propensity_scores=..., fold_ids=...)``: the CNN's propensities and its folds, so the
    AIPW outcome models (ridge on X and the CNN's out-of-fold embedding) use the same folds.
    """
    u = data.units
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = eocausal.estimate(u,
                                  embeddings=cnn.oof_embedding_.astype(float), methods=["ipw-hajek", "aipw"],
                                  adjustments=[], propensity_scores={"CNN propensity": cnn.oof_propensity_},
                                  fold_ids=cnn.fold_ids_, clip=CLIP, seed=seed)
    rows = {}
    for r in table.rows:
        rows[r.method] = dict(method=r.method, adjustment=r.adjustment, estimand=r.estimand,
                              estimate=float(r.estimate), std_error=float(r.std_error), ci=[r.ci_low, r.ci_high],
                              n=r.n, n_treated=r.n_treated, n_clusters=r.n_clusters, n_clipped=r.n_clipped)
    fit = table.propensities["CNN propensity"]
    warns = [dict(type=c.category.__name__, message=str(c.message)) for c in caught]
    return rows, fit, warns


def salience(cnn, chips, X, e, w, keys, k):
    """Salience maps of the k most likely treated and k least likely control units, one per image."""
    from eocausal.encoders import salience_maps

    def pick(arm, order):
        idx, seen = [], set()
        for i in order:
            if w[i] == arm and keys[i] not in seen:
                idx.append(int(i))
                seen.add(keys[i])
            if len(idx) == k:
                break
        return np.array(idx)

    ti = pick(1, np.argsort(-e, kind="stable"))
    ci = pick(0, np.argsort(e, kind="stable"))
    idx = np.concatenate([ti, ci])
    maps = salience_maps(cnn, chips[idx], X=X[idx], device="cpu")
    titles = ([f"treated e={e[i]:.2f}\nimage {keys[i]}" for i in ti]
              + [f"control e={e[i]:.2f}\nimage {keys[i]}" for i in ci])
    return idx, maps, titles


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = parser(__doc__, FOLDER, quick="small encoders and CNN (< 60 s)",
                threads="torch threads (BLAS: set OPENBLAS_NUM_THREADS)")
    a = ap.parse_args(argv)
    a.out = output_folder(a, FOLDER)
    if not DATA.is_file():
        print(f"data file not found: {DATA}", file=sys.stderr)
        return 2
    cfg = dict(QUICK if a.quick else FULL)
    import torch

    # one thread: with two, on a busy 2-core machine the CNN took 4x the CPU time (thread contention)
    torch.set_num_threads(a.threads)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    times: dict[str, float] = {}
    rows: list[dict] = []
    est_kw = dict(methods=["dim", "ipw-hajek", "aipw"], clip=CLIP, seed=a.seed, folds=cfg["folds"])

    def add(id_, quantity, target, source, value, status, **extra):
        rows.append(dict(id=id_, quantity=quantity, target=target, source=source, eocausal=value,
                         status=status, **extra))

    # 1. data facts -------------------------------------------------------------------
    t = time.perf_counter()
    data, impute_msgs = load("pretreatment")
    u = data.units
    y, w = u.y(), u.w()
    keys = u.frame["image_key"].to_numpy()
    facts = {"n_units": (2082, u.n), "n_treated": (825, int(w.sum())), "n_images": (327, data.images.n_images),
             "n_images_used": (327, int(len(np.unique(keys))))}
    labels = {"n_units": "units", "n_treated": "treated units", "n_images": "images (FullImageArray)",
              "n_images_used": "distinct images of the units (KeysOfObservations)"}
    for k, (target, got) in facts.items():
        add(k, labels[k], target, DATA_README, got, "reproduced" if target == got else f"differs: read {got}")
    raw = raw_x_checks()
    held = [k for k, v in raw["identities"].items() if v]
    add("x_structure", "X columns 1, 3, 5, 7 are W, W*xA, W*xC, W*xB (functions of the treatment)",
        "X1 == W, X3 == W X2, X5 == W X4, X7 == W X6 exactly", DATA_README,
        f"{len(held)} of 4 identities hold exactly on the raw X (read with rdata, outside eocausal); "
        "read_causalimages checks the same and names the columns X1_W, xA, X3_WxA, xC, X5_WxC, xB, X7_WxB",
        "reproduced" if len(held) == 4 else f"differs: only {held} hold")
    add("x_na", "missing cells of X (columns 4 and 5)", 14, DATA_README, raw["na_cells"],
        "reproduced" if raw["na_cells"] == 14 and raw["na_by_column"][3] == raw["na_by_column"][4] == 7
        else f"differs: by column {raw['na_by_column']}")
    n_missing = int(u.frame["xC_missing"].sum())
    add("x_missing", "units with a missing xC (and X5 = W*xC)", 7, DATA_README, n_missing,
        "reproduced" if n_missing == 7 else f"differs: {n_missing}")
    sd = float(np.std(y, ddof=1))
    add("y_sd", "outcome standard deviation", 1.351, DATA_README, round(sd, 3),
        "reproduced" if abs(sd - 1.351) < 5e-4 else f"differs: {sd:.4f}")
    times["read"] = time.perf_counter() - t

    # 2-3. difference in means and tabular-only ----------------------------------------
    t = time.perf_counter()
    dim_direct = float(y[w == 1].mean() - y[w == 0].mean())
    tab_run = estimate_recording(u, **est_kw)
    tab = tab_run["table"]
    dim = tab.row(method="dim")
    add("dim", "difference in means, E[Y|W=1] - E[Y|W=0]", round(dim_direct, 6),
        "computed directly with numpy from obsY and obsW", dim.estimate,
        "reproduced" if abs(dim.estimate - dim_direct) < 1e-12 else f"differs by {dim.estimate - dim_direct:.2e}",
        std_error=dim.std_error, ci=[dim.ci_low, dim.ci_high])
    analyses = {"tabular (pre-treatment X)": tab}
    for m, lab in (("ipw-hajek", "Hajek IPW"), ("aipw", "AIPW")):
        r = tab.row(method=m, adjustment="tabular")
        add(f"tabular_{m}", f"{lab}, pre-treatment covariates only", None, "causalimages reports none for "
            "the tutorial data", r.estimate, NO_TARGET, std_error=r.std_error, ci=[r.ci_low, r.ci_high],
            n_clipped=r.n_clipped)
    times["tabular"] = time.perf_counter() - t

    # 4. random features --------------------------------------------------------------
    t = time.perf_counter()
    Zrf, rf_var = embed_rf(data, cfg, seed=0)
    rf_run = estimate_recording(u, embeddings=Zrf, adjustments=["image", "tabular+image"], **est_kw)
    rf = rf_run["table"]
    analyses["random features"] = rf
    for adj in ("image", "tabular+image"):
        for m, lab in (("ipw-hajek", "Hajek IPW"), ("aipw", "AIPW")):
            r = rf.row(method=m, adjustment=adj)
            add(f"rf_{adj}_{m}", f"{lab}, {adj}, random features ({cfg['rf_features']} -> {cfg['pcs']} PCs)",
                None, "causalimages reports none for the tutorial data", r.estimate, NO_TARGET,
                std_error=r.std_error, ci=[r.ci_low, r.ci_high], n_clipped=r.n_clipped)
    times["random_features"] = time.perf_counter() - t

    # 5. treatment-trained CNN --------------------------------------------------------
    t = time.perf_counter()
    chips = data.images.chips(keys)
    X = u.frame[list(u.covariates)].to_numpy(float)
    cnn = fit_cnn(data, chips, X, cfg, seed=0)
    times["cnn_fit"] = time.perf_counter() - t
    t = time.perf_counter()
    cnn_run = estimate_recording(u, embeddings=cnn.oof_embedding_.astype(float),
                                 adjustments=["image", "tabular+image"], **est_kw)
    cnn_tab = cnn_run["table"]
    analyses["CNN embedding"] = cnn_tab
    for adj in ("image", "tabular+image"):
        for m, lab in (("ipw-hajek", "Hajek IPW"), ("aipw", "AIPW")):
            r = cnn_tab.row(method=m, adjustment=adj)
            add(f"cnn_emb_{adj}_{m}", f"{lab}, {adj}, CNN out-of-fold embedding ({2 * cfg['cnn_width']} dims)",
                None, "causalimages reports none for the tutorial data", r.estimate, NO_TARGET,
                std_error=r.std_error, ci=[r.ci_low, r.ci_high], n_clipped=r.n_clipped)
    own, cnn_fit, cnn_warn = cnn_own_propensity(data, cnn, X, seed=a.seed)
    for m, lab in (("ipw-hajek", "Hajek IPW"), ("aipw", "AIPW (outcome ridge on X + CNN embedding)")):
        r = own[m]
        add(f"cnn_prop_{m}", f"{lab}, the CNN's own out-of-fold propensity (image + X)", None,
            "causalimages reports none for the tutorial data", r["estimate"], NO_TARGET,
            std_error=r["std_error"], ci=r["ci"], n_clipped=r["n_clipped"])
    e_cnn = cnn.oof_propensity_
    auc = _auc(e_cnn, w)
    times["cnn_estimate"] = time.perf_counter() - t

    # 6. salience -----------------------------------------------------------------------
    t = time.perf_counter()
    sal_idx, sal_maps, sal_titles = salience(cnn, chips, X, e_cnn, w, keys, cfg["salience_k"])
    add("salience", "causal salience maps of the CNN (gradient of the propensity log-odds, L2 over bands)",
        None, "causalimages shows such maps, no numbers", f"{len(sal_idx)} maps ({cfg['salience_k']} treated, "
        f"{cfg['salience_k']} control, distinct images), mean salience {float(sal_maps.mean()):.3g}",
        NO_TARGET)
    times["salience"] = time.perf_counter() - t

    # 7. bad controls -------------------------------------------------------------------
    t = time.perf_counter()
    bad = {}
    tut, _ = load("tutorial")
    bad["tutorial X, tabular"] = estimate_recording(tut.units, adjustments=["tabular"], **est_kw)
    if cfg["bad_control_image"]:
        bad["tutorial X, tabular+image"] = estimate_recording(tut.units, embeddings=Zrf,
                                                              adjustments=["tabular+image"], **est_kw)
    allx, _ = load("all")
    bad["all X (X1 = W), tabular"] = estimate_recording(allx.units, adjustments=["tabular"], **est_kw)
    bad_summary = {}
    for name, run in bad.items():
        s = dict(error=run["error"], warnings=[wm for wm in run["warnings"] if wm["type"] != "DataQualityWarning"])
        if run["table"] is not None:
            s["estimates"] = [row_dict(r) for r in run["table"]]
            s["overlap"] = {adj: overlap_facts(f) for adj, f in run["table"].propensities.items()}
        bad_summary[name] = s
        caught = sorted({wm["type"] for wm in s["warnings"]} | ({run["error"]["type"]} if run["error"] else set()))
        if "all X" in name:
            ok = run["error"] is not None and run["error"]["type"] == "SeparationError"
            target = "SeparationError (W is one of the confounders)"
            got = (f"{run['error']['type']}: {run['error']['message'][:160]}..." if run["error"]
                   else "no error raised")
        else:
            adj = "tabular" if name.endswith("tabular") else "tabular+image"
            ov = s["overlap"][adj] if run["table"] is not None else None
            ok = ("OverlapWarning" in caught or "SeparationError" in caught) and (ov is None or ov["n_clipped"] > 0)
            target = "diagnostics flag it: OverlapWarning, propensities at the clip"
            if run["table"] is not None:
                r = run["table"].row(method="aipw", adjustment=adj)
                h = run["table"].row(method="ipw-hajek", adjustment=adj)
                got = (f"{', '.join(caught) or 'nothing raised'}; {ov['n_clipped']:,} of {u.n:,} propensities "
                       f"clipped at [{CLIP:g}, {1 - CLIP:g}]; {100 * ov['share_beyond_0_01']:.0f}% outside "
                       f"[0.01, 0.99]; Hajek {h.estimate:.3f}, AIPW {r.estimate:.3f} (SE {r.std_error:.3f})")
            else:
                got = f"{run['error']['type']}: {run['error']['message'][:160]}..."
        add(f"bad_control_{name}", f"bad control: {name} as confounders (as the R tutorials do)", target,
            "eocausal's overlap diagnostics; data README (X structure)", got,
            "reproduced" if ok else "differs: the diagnostics did not flag it", caught=caught)
    times["bad_controls"] = time.perf_counter() - t

    # 8. figures -----------------------------------------------------------------------
    t = time.perf_counter()
    from eocausal.report import plots

    figs = {}
    good_fits = {"tabular": tab.propensities["tabular"], "image (RF)": rf.propensities["image"],
                 "tabular+image (RF)": rf.propensities["tabular+image"],
                 "tabular+image (CNN emb.)": cnn_tab.propensities["tabular+image"], "CNN propensity": cnn_fit}
    figs["overlap"] = save_figure(plots.overlap_plot(good_fits), out / "overlap.png")
    bad_fits = {f"BAD {n}": next(iter(r["table"].propensities.values())) for n, r in bad.items()
                if r["table"] is not None}
    if bad_fits:
        figs["overlap_bad_control"] = save_figure(plots.overlap_plot(bad_fits), out / "overlap_bad_control.png")
    figs["love"] = save_figure(plots.love_plot(rf.balance["tabular+image"]), out / "love.png")
    figs["salience"] = save_figure(plots.salience_gallery(chips[sal_idx], sal_maps, sal_titles), out / "salience.png")
    import pandas as pd

    forest = []
    for name, tb in analyses.items():
        td = tb.tidy()
        td["trial"] = name
        forest.append(td[td["method"] != "dim"] if name != "tabular (pre-treatment X)" else td)
    cnn_td = pd.DataFrame([dict(trial="CNN propensity", method=r["method"], adjustment=r["adjustment"],
                                estimate=r["estimate"], ci_low=r["ci"][0], ci_high=r["ci"][1]) for r in own.values()])
    forest.append(cnn_td)
    for name, run in bad.items():
        if run["table"] is not None:
            td = run["table"].tidy()
            td["trial"] = f"BAD {name}"
            forest.append(td[td["method"] != "dim"])
    forest = pd.concat(forest, ignore_index=True)
    figs["forest"] = save_figure(plots.forest_plot(forest), out / "forest.png")
    times["figures"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    times["cpu_total"] = time.process_time() - c0

    # diagnostics of the good analyses --------------------------------------------------
    diagnostics = {
        "overlap": {name: overlap_facts(f) for name, f in good_fits.items()},
        "balance_tabular+image_rf": balance_facts(rf.balance["tabular+image"]),
        "balance_tabular+image_cnn": balance_facts(cnn_tab.balance["tabular+image"]),
        "balance_tabular": balance_facts(tab.balance["tabular"]),
        "cnn": dict(oof_auc=auc, propensity_range=[float(e_cnn.min()), float(e_cnn.max())],
                    history=[dict(best_epoch=h["best_epoch"], epochs_run=len(h["train_loss"]),
                                  val_loss=h["val_loss"]) for h in cnn.history_], warnings=cnn_warn),
        "random_features_pc_variance_share": rf_var,
        "warnings": {"tabular": tab_run["warnings"], "random features": rf_run["warnings"],
                     "CNN embedding": cnn_run["warnings"]},
        "sensitivity_e_values": {name: tb.sensitivity().to_dict(orient="records") for name, tb in analyses.items()},
    }
    result = dict(
        paper="causalimages R package tutorial data (Jerzak and Daoud), Uganda YOP",
        data=str(DATA.relative_to(ROOT.parent)), quick=a.quick, seed=a.seed, config=cfg,
        command="python replication/causalimages_uganda/run.py" + (" --quick" if a.quick else ""),
        rows=rows, estimates={name: [row_dict(r) for r in tb] for name, tb in analyses.items()},
        cnn_propensity_estimates=list(own.values()), bad_control=bad_summary, diagnostics=diagnostics,
        read_notes=list(data.notes), imputation_warning=impute_msgs, raw_x_checks=raw, figures=figs,
        timing={k: round(v, 1) for k, v in times.items()},
        machine=machine(torch=torch.__version__),
    )
    atomic_write_text(out / "results.json", json.dumps(jsonable(result), indent=1) + "\n")
    table = render_table(rows)
    md = (f"# causalimages tutorial data (Uganda): target vs eocausal\n\n{table}\n\n{render_notes(result)}\n")
    atomic_write_text(out / "results.md", md)
    update_readme(out, f"{table}\n\n{render_notes(result)}", folder=FOLDER, title="causalimages tutorial data (Uganda)")
    return 0


def _auc(score, w) -> float:
    from scipy.stats import rankdata

    r = rankdata(score)
    n1 = int(w.sum())
    n0 = len(w) - n1
    return float((r[w == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def render_value(r) -> str:
    v = r["eocausal"]
    if isinstance(v, float):
        s = fnum(v)
        if r.get("std_error") is not None:
            s += f" (SE {fnum(r['std_error'])}; 95% CI {fnum(r['ci'][0])} to {fnum(r['ci'][1])})"
        return s
    return fnum(v) if isinstance(v, (int, np.integer)) else str(v)


def render_table(rows) -> str:
    lines = ["| quantity | target | source | eocausal | status |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        tgt = "none" if r["target"] is None else (fnum(r["target"], 3) if isinstance(r["target"], float)
                                                  else fnum(r["target"]) if isinstance(r["target"], int)
                                                  else str(r["target"]))
        cells = (r["quantity"], tgt, r["source"], render_value(r), r["status"])
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def render_notes(result) -> str:
    cfg, tm, d = result["config"], result["timing"], result["diagnostics"]
    ov = d["overlap"]
    rng = "; ".join(f"{k}: treated {v['treated_range'][0]:.2f}-{v['treated_range'][1]:.2f}, control "
                    f"{v['control_range'][0]:.2f}-{v['control_range'][1]:.2f}" for k, v in ov.items())
    bal = d["balance_tabular+image_rf"]
    bal_txt = "; ".join(f"{k}: max |SMD| {v['max_abs_smd_before']:.3f} before, {v['max_abs_smd_after']:.3f} after"
                        for k, v in bal.items())
    mode = "QUICK MODE (small encoders; not the reference numbers). " if result["quick"] else ""
    return (f"{mode}Generated by `{result['command']}` in {tm['total']:.0f} s wall, {tm['cpu_total']:.0f} s CPU "
            f"(CNN training {tm['cnn_fit']:.0f} s wall) on {result['machine']['cores']} cores, load average "
            f"{result['machine']['load_avg_1min']} at the end (other processes were running when it exceeds the cores). "
            f"Configuration: random features {cfg['rf_features']} (kernel 3) reduced to {cfg['pcs']} principal "
            f"components ({100 * d['random_features_pc_variance_share']:.1f}% of their variance); CNN width "
            f"{cfg['cnn_width']}, {cfg['cnn_folds']} folds grouped by image, at most {cfg['cnn_epochs']} epochs "
            f"(out-of-fold AUC of its propensity for W: {d['cnn']['oof_auc']:.3f}); propensity ridge-logit, "
            f"{cfg['folds']} folds grouped by image; clip {CLIP:g}; SEs clustered by image.\n\n"
            f"Out-of-fold propensity ranges with the pre-treatment adjustment sets: {rng}. "
            f"Balance after weighting (tabular + random features): {bal_txt}.\n\n"
            f"Figures: {', '.join(f'`{v}`' for v in result['figures'].values())}.")


if __name__ == "__main__":
    sys.exit(main())
