#!/usr/bin/env python3
"""Chinese vs World Bank aid and neighbourhood wealth in Africa: the study's design with eocausal.

Study: Daoud, Conlin and Jerzak, "Chinese vs. World Bank Development Projects: Insights from Earth
Observation and Computer Vision on Wealth Gains in Africa, 2002-2013" (arXiv:2509.25648). Its panel
of neighbourhood wealth is restricted, so its numbers cannot be reproduced here. By default this
script runs the whole design on a SIMULATED dataset with the study's structure and known true
effects (simulate.py) and reports how well each estimator recovers them; pointed at real files
(``--projects/--locations/--panel``) it runs the same design on them.

Design (METHODS.md section 7):

1. Records: AidData-style projects and locations (aiddata.read_aiddata; precision <= 2).
2. Panel: neighbourhood x period (2002-04, 2005-07, 2008-10, 2011-13); treated(i, t, f, s) = a
   project of funder f and sector s starts in i's ADM2 during t; outcome = wealth of t + 1
   (aiddata.build_panel). Rows of periods 1-3 (those with a next period) enter the analyses.
3. Trials: one per funder x sector (34 in the full run, 6 in --quick). In the cross-sectional
   trials, rows whose ADM2 had a project of the same funder and sector in an earlier period and
   none now are left out (aiddata.trial_design).
4. Cross-sectional IPW (Hajek, ATE) per trial with ``eocausal.estimate(..., trials=[columns],
   clusters="adm2")``: propensity from tabular covariates + country and period indicators
   ("tabular") and from those plus the image embedding ("tabular+image"). Image embedding:
   MOSAIKS random convolutional features of each neighbourhood's pre-period chip
   (``eocausal.embed`` + ``RandomFeatures``), reduced to their first 10 principal components.
   Propensity model: logistic regression with a ridge penalty C = 0.3 on standardised
   confounders, cross-fitted over 5 folds grouped by ADM2 (see "Decisions" in README.md for why
   not eocausal's default ``ridge-logit``). SEs from the influence function, clustered by ADM2.
5. Unit + period fixed effects per trial (``eocausal.estimators.panel.panel_fe``), CRV1 SEs
   clustered by ADM2, on every row with an outcome (0/1 treatment).
6. Debiased outcome: the same IPW weights (tabular+image propensities) applied to an ML-predicted
   wealth map instead of the measured wealth: naive, LCC and Tweedie
   (``eocausal.debias.debiased_effects``, joint bootstrap SEs over the calibration set and the
   ADM2 clusters), with a labelled calibration set disjoint from the trial neighbourhoods.

Usage (from the repository root)::

    python replication/aid_africa/run.py             # full simulated run; writes results here
    python replication/aid_africa/run.py --quick --out /tmp/aid   # < 60 s smoke version
    python replication/aid_africa/run.py --projects china_projects.csv wb_projects.csv \\
        --locations china_locations.csv wb_locations.csv --funder China "World Bank" \\
        --panel panel.csv [--embeddings emb.csv] [--calibration cal.csv] --out results_real

Writes ``results.json`` (rows for replication/README.md: target, source, eocausal, status; plus
every estimate), ``results.md`` (one table) and ``figures/forest.png``, ``figures/recovery.png``
to ``--out``. With the default ``--out`` (this folder) it also rewrites the results block of
this folder's README.md and the table of replication/README.md (``--no-readme`` skips both).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
# replication/ (_common, make_readme) and this folder (aiddata, simulate; also when loaded by path)
sys.path[:0] = [str(HERE.parent), str(HERE)]
from _common import atomic_write_bytes, atomic_write_text, output_folder, parser  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from aiddata import PERIODS, build_panel, period_of, read_aiddata, sector_name, trial_design  # noqa: E402
from simulate import SIMULATED, simulate_aid  # noqa: E402

from eocausal.errors import InputError, NotEstimableError  # noqa: E402

FOLDER = "aid_africa"
PAPER = ("Daoud, Conlin and Jerzak (2025), Chinese vs. World Bank Development Projects, arXiv:2509.25648")
#: Numbers stated in the paper's abstract (arXiv v1, 30 Sep 2025); a later version states other
#: values for the same sectors (World Bank 330: +12.29; China 700: +15.15).
PAPER_TARGETS = (
    ("China_700", "China, Emergency response (700): ATE on wealth (IWI points), IPW image + tabular", 14.32),
    ("WorldBank_330", "World Bank, Trade and tourism (330): ATE on wealth (IWI points), IPW image + tabular", 6.27),
)
PROPENSITY_C = 0.3
N_COMPONENTS = 10
RESERVED = {"neighbourhood", "adm2", "period", "wealth", "wealth_pred", "country", "lon", "lat", "t",
            "period_start", "outcome", "wealth_pred_next"}
COLUMNS = ("IPW image+tabular", "IPW tabular-only", "FE (unit + period)", "Predicted outcome, naive",
           "Debiased, LCC", "Debiased, Tweedie", "AIPW image+tabular")
#: Display order of the columns.
ORDER = tuple(COLUMNS[i] for i in (0, 1, 6, 2, 3, 4, 5))
#: Table columns of eocausal.estimate's rows, by (method, adjustment).
IPW_COLUMNS = {("ipw-hajek", "tabular+image"): COLUMNS[0], ("ipw-hajek", "tabular"): COLUMNS[1],
               ("aipw", "tabular+image"): COLUMNS[6]}


# ----------------------------------------------------------------------------- inputs
def parse_args(argv=None) -> argparse.Namespace:
    p = parser(__doc__, FOLDER, quick="small simulated study (6 trials), < 60 s",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--projects", nargs="+", type=Path, help="AidData-style projects CSV(s), one per release")
    p.add_argument("--locations", nargs="+", type=Path, help="locations CSV(s), paired with --projects")
    p.add_argument("--funder", nargs="+", help="funder of each projects CSV without a funder column")
    p.add_argument("--panel", type=Path, help="long neighbourhood panel CSV: neighbourhood, adm2, period, wealth, "
                   "[country], covariates, [wealth_pred]")
    p.add_argument("--covariates", nargs="+", help="covariate columns of --panel (default: every other numeric column)")
    p.add_argument("--embeddings", type=Path, help="CSV: neighbourhood + one column per embedding dimension")
    p.add_argument("--calibration", type=Path, help="CSV: wealth_pred, wealth of labelled units outside the panel")
    p.add_argument("--precision-max", type=int, default=2)
    p.add_argument("--max-trials", type=int, default=34, help="real data: the funder x sector trials with the most "
                   "treated ADM2-periods (default 34, as in the paper)")
    p.add_argument("--n-boot", type=int, default=None, help="debiasing bootstrap draws (default 200, quick 50)")
    p.add_argument("--propensity", choices=("ridge-fixed", "ridge-logit"), default="ridge-fixed",
                   help="ridge-fixed: logistic regression with C = --propensity-c (default); ridge-logit: "
                   "eocausal's default, penalty by inner CV (slow: about 6 minutes more on 2 loaded cores)")
    p.add_argument("--propensity-c", type=float, default=PROPENSITY_C)
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the README tables")
    a = p.parse_args(argv)
    real = [a.projects, a.locations, a.panel]
    if any(real) and not all(real):
        p.error("real data needs --projects, --locations and --panel together")
    a.real = all(real)
    if a.real and a.quick:
        p.error("--quick runs the simulated study; drop it with real files")
    if a.real and a.out is None:
        p.error("with real files pass --out: the folder's committed results are the simulated run's")
    if a.real and len(a.projects) != len(a.locations):
        p.error("--projects and --locations: give one locations file per projects file")
    if a.funder and len(a.funder) != len(a.projects or []):
        p.error("--funder: one funder per projects file")
    a.out = output_folder(a, FOLDER)  # --quick never overwrites the committed full results
    a.n_boot = a.n_boot or (50 if a.quick else 200)
    return a


def load_real(a) -> dict:
    """Read the user's files into the same pieces the simulation provides."""
    recs = []
    for k, (pp, ll) in enumerate(zip(a.projects, a.locations)):
        recs.append(read_aiddata(pp, ll, precision_max=a.precision_max, funder=a.funder[k] if a.funder else None))
    records = pd.concat(recs, ignore_index=True)
    records["project_id"] = records["funder"] + ":" + records["project_id"]
    panel_in = pd.read_csv(a.panel)
    covs = a.covariates or [c for c in panel_in.columns if c not in RESERVED
                            and pd.api.types.is_numeric_dtype(panel_in[c])]
    counts = (records.assign(t=period_of(records["start_year"].to_numpy(), PERIODS)).query("t >= 0")
              .drop_duplicates(["funder", "sector", "adm2", "t"]).groupby(["funder", "sector"]).size()
              .sort_values(ascending=False, kind="stable"))
    trials = [(f, int(s)) for f, s in counts.index[:a.max_trials]]
    emb = None
    if a.embeddings:
        e = pd.read_csv(a.embeddings)
        if "neighbourhood" not in e.columns:
            raise InputError(f"--embeddings {str(a.embeddings)!r}: needs a 'neighbourhood' column")
        emb = e.set_index("neighbourhood").astype(float)
    cal = None
    if a.calibration:
        c = pd.read_csv(a.calibration)
        missing = {"wealth", "wealth_pred"} - set(c.columns)
        if missing:
            raise InputError(f"--calibration {str(a.calibration)!r}: missing columns {sorted(missing)}")
        c = c.reset_index(drop=True)
        c["unit"] = c["unit"].astype(str) if "unit" in c.columns else [f"cal{i}" for i in range(len(c))]
        cal = c
    files = {k: str(v) for k, v in vars(a).items()
             if k in ("projects", "locations", "panel", "embeddings", "calibration") and v}
    return dict(records=records, panel_in=panel_in, covariates=covs, trials=trials, embeddings=emb,
                calibration=cal, truth=None, simulated=False, config={"files": files})


def load_simulated(a, timing) -> dict:
    """Simulate, write the tables as CSV files and read them back through the study's readers."""
    t0 = time.perf_counter()
    sim = simulate_aid(quick=a.quick, seed=a.seed)
    timing["simulate_s"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        paths = sim.write(tmp)
        records = read_aiddata(paths["projects"], paths["locations"], precision_max=a.precision_max)
        panel_in = pd.read_csv(paths["panel"])
        cal = pd.read_csv(paths["calibration"])
    t0 = time.perf_counter()
    emb = embed_chips(sim.chips, sim.neighbourhoods, n_features=64 if a.quick else 256)
    timing["embed_s"] = time.perf_counter() - t0
    cfg = dict(sim.config, reader=dict(records=len(records), **records.attrs), embedding_features=emb.shape[1])
    return dict(records=records, panel_in=panel_in, covariates=sim.covariates, trials=sim.trials, embeddings=emb,
                calibration=cal, truth=sim.true_effects, simulated=True, config=cfg)


def embed_chips(chips: np.ndarray, ids, n_features: int) -> pd.DataFrame:
    """MOSAIKS random features of each neighbourhood's chip through eocausal.embed."""
    from eocausal import embed
    from eocausal.data.arrays import ArraySource
    from eocausal.data.units import Units
    from eocausal.encoders import RandomFeatures

    units = Units.from_frame(pd.DataFrame({"neighbourhood": ids}), id="neighbourhood", treatment=None,
                             outcome=None, image_key="neighbourhood")
    source = ArraySource(chips, keys=ids, bands=["red", "green", "blue"])
    return embed(units, source, RandomFeatures(n_features=n_features, kernel=3, seed=0), device="cpu")


def components(emb: pd.DataFrame, k: int = N_COMPONENTS) -> pd.DataFrame:
    """First k principal components of the embeddings (unsupervised: no treatment or outcome used)."""
    from sklearn.decomposition import PCA

    k = int(min(k, emb.shape[1], emb.shape[0] - 1))
    pca = PCA(n_components=k, svd_solver="full").fit(emb.to_numpy(float))
    out = pd.DataFrame(pca.transform(emb.to_numpy(float)), index=emb.index,
                       columns=[f"img_pc{j + 1}" for j in range(k)])
    out.attrs["variance_share"] = float(pca.explained_variance_ratio_.sum())
    return out


# ----------------------------------------------------------------------------- analyses
def propensity_model(kind: str = "ridge-fixed", C: float = PROPENSITY_C):
    if kind == "ridge-logit":
        return "ridge-logit"
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def analysis_frame(panel: pd.DataFrame, cols, covariates) -> tuple[pd.DataFrame, list[str]]:
    """Rows with an outcome, trial memberships, country and period indicators."""
    keep = panel["outcome"].notna().to_numpy()
    data = panel[keep].reset_index(drop=True)
    design = pd.DataFrame({c: trial_design(panel, c).to_numpy()[keep] for c in cols})
    data = pd.concat([data.drop(columns=cols), design], axis=1)
    dummies = pd.get_dummies(data["period"], prefix="period", drop_first=True, dtype=float)
    if "country" in data.columns and data["country"].nunique() > 1:
        dummies = pd.get_dummies(data["country"], prefix="country", drop_first=True, dtype=float).join(dummies)
    dummies.columns = [c.replace("-", "_").replace(" ", "_") for c in dummies.columns]
    data = data.join(dummies)
    data.index = (data["neighbourhood"].astype(str) + "@" + data["period_start"].astype(str)).to_numpy()
    return data, list(covariates) + list(dummies.columns)


def run_ipw(data, cols, confounders, Z, seed, log, propensity):
    import eocausal

    from eocausal.options import METHODS

    adjustments = ["tabular", "tabular+image"] if Z is not None else ["tabular"]
    # AIPW (cross-fitted ridge outcome models) as an extra column where this eocausal has it
    methods = ["ipw-hajek"] + (["aipw"] if "aipw" in METHODS else [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = eocausal.estimate(data, outcome="outcome", confounders=confounders, embeddings=Z, trials=list(cols),
                                  methods=methods, adjustments=adjustments, clusters="adm2",
                                  propensity=propensity, seed=seed, min_arm=10,
                                  study="aid_africa (" + ("SIMULATED" if log["simulated"] else "user files") + ")")
    log["warnings"] += [f"IPW: {type(w.message).__name__}: {str(w.message)[:300]}" for w in caught]
    return table


def run_fe(data, cols, log) -> dict:
    from eocausal.estimators.panel import panel_fe, to_effect_row

    out = {}
    for c in cols:
        fe_data = data.assign(_w=data[f"{c}__full"])
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fit = panel_fe(fe_data, outcome="outcome", treatment="_w", unit="neighbourhood", period="period",
                               clusters="adm2")
            log["warnings"] += [f"FE {c}: {type(w.message).__name__}: {str(w.message)[:300]}" for w in caught]
            out[c] = to_effect_row(fit, trial=c)
        except (NotEstimableError, InputError) as exc:
            log["warnings"].append(f"FE {c}: not estimable: {exc}")
    return out


def run_debiased(data, cols, table, calibration, bootstrap, seed, log):
    from eocausal import debiased_effects

    rows = []
    for c in cols:
        fit = table.propensities.get(f"{c}: tabular+image") or table.propensities.get(f"{c}: tabular")
        if fit is None:
            continue
        members = data.index[data[c].notna().to_numpy()]
        has_pred = data.loc[members, "wealth_pred_next"].notna().to_numpy()
        rows.append(pd.DataFrame({"trial": c, "unit": members[has_pred], "treated": np.asarray(fit.w, float)[has_pred],
                                  "propensity": np.asarray(fit.e, float)[has_pred]}))
    if not rows:
        return None
    trials = pd.concat(rows, ignore_index=True)
    cal_ids = (calibration["unit"].astype(str) + "@" + calibration["period"].astype(str)
               if "period" in calibration.columns else calibration["unit"].astype(str))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pmap = data.loc[data["wealth_pred_next"].notna(), ["wealth_pred_next", "adm2"]]
        res = debiased_effects(pmap, trials=trials, prediction_col="wealth_pred_next",
                               calibration=(calibration["wealth_pred"].to_numpy(float),
                                            calibration["wealth"].to_numpy(float)),
                               calibration_ids=cal_ids.to_numpy(), clusters="adm2", methods=["ipw-hajek"],
                               debiasers=("naive", "lcc", "tweedie"), se="bootstrap", n_boot=bootstrap, seed=seed)
    log["warnings"] += [f"debias: {type(w.message).__name__}: {str(w.message)[:300]}" for w in caught]
    return res


# ----------------------------------------------------------------------------- summaries
def collect(cols, ipw, fe, deb) -> pd.DataFrame:
    """One row per (trial, column of the table) with estimate, SE, CI, p-values."""
    recs = []

    def add(trial, column, r):
        recs.append(dict(trial=trial, column=column, estimate=r.estimate, std_error=r.std_error, ci_low=r.ci_low,
                         ci_high=r.ci_high, p_value=r.p_value, p_holm=r.p_holm, p_bh=r.p_bh, n=r.n,
                         n_treated=r.n_treated, n_clusters=r.n_clusters, se_type=r.se_type, note=r.note))

    for r in ipw.rows:
        if (r.method, r.adjustment) in IPW_COLUMNS:
            add(r.trial, IPW_COLUMNS[(r.method, r.adjustment)], r)
    for c, r in fe.items():
        add(c, COLUMNS[2], r)
    if deb is not None:
        for r in deb.rows:
            column = {"predicted": COLUMNS[3], "predicted+lcc": COLUMNS[4], "predicted+tweedie": COLUMNS[5]}
            add(r.trial, column[r.outcome_type], r)
    est = pd.DataFrame(recs)
    if len(est):  # Holm across trials for the FE rows too (estimate and debiased_effects adjust their own)
        from statsmodels.stats.multitest import multipletests

        m = (est["column"] == COLUMNS[2]) & est["p_value"].notna()
        if m.sum():
            est.loc[m, "p_holm"] = multipletests(est.loc[m, "p_value"], method="holm")[1]
            est.loc[m, "p_bh"] = multipletests(est.loc[m, "p_value"], method="fdr_bh")[1]
    order = {c: i for i, c in enumerate(cols)}
    return est.sort_values(["trial", "column"], key=lambda s: s.map(order) if s.name == "trial"
                           else s.map({c: i for i, c in enumerate(ORDER)}), kind="stable").reset_index(drop=True)


def recovery(est: pd.DataFrame, truth: dict) -> pd.DataFrame:
    """Per column: bias, RMSE, coverage and slope of estimated on true effects over the trials."""
    out = []
    for col in ORDER:
        d = est[(est["column"] == col) & est["estimate"].notna()]
        if d.empty:
            continue
        tau = d["trial"].map(truth).to_numpy(float)
        err = d["estimate"].to_numpy(float) - tau
        cover = (d["ci_low"].to_numpy() <= tau) & (tau <= d["ci_high"].to_numpy())
        slope = float(np.polyfit(tau, d["estimate"], 1)[0]) if np.ptp(tau) > 0 else math.nan
        zero = tau == 0
        sig = d["p_holm"].to_numpy(float) < 0.05
        out.append(dict(column=col, trials=len(d), bias=float(err.mean()),
                        bias_se=float(err.std(ddof=1) / math.sqrt(len(err))) if len(err) > 1 else math.nan,
                        rmse=float(np.sqrt(np.mean(err ** 2))), coverage=float(cover.mean()),
                        mean_se=float(d["std_error"].mean()), slope=slope,
                        false_positives=f"{int((sig & zero).sum())} of {int(zero.sum())}",
                        detected=f"{int((sig & ~zero).sum())} of {int((~zero).sum())}"))
    return pd.DataFrame(out)


def fmt(x, d=2):
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def trial_label(col: str) -> str:
    funder, sector = col.rsplit("_", 1)
    return f"{'World Bank' if funder == 'WorldBank' else funder} {sector} {sector_name(int(sector))}"


def results_markdown(est, rec, truth, cols, meta) -> str:
    sim = truth is not None
    lines = []
    if sim:
        lines += ["**SIMULATED data** (replication/aid_africa/simulate.py), not the study's data: true effects are "
                  "known by construction. The paper's own numbers are not reproducible without its restricted "
                  "neighbourhood panel.", ""]
    shown = [c for c in ORDER if (est["column"] == c).any()]
    head = ["trial"] + shown + (["true effect (simulated)"] if sim else [])
    lines += ["| " + " | ".join(head) + " |", "|---|" + "|".join("---:" for _ in head[1:]) + "|"]
    for c in cols:
        cells = [trial_label(c)]
        for col in shown:
            r = est[(est["trial"] == c) & (est["column"] == col)]
            if r.empty or not math.isfinite(r["estimate"].iloc[0]):
                cells.append("n/e" if not r.empty else "")
                continue
            r = r.iloc[0]
            star = "*" if math.isfinite(r["p_holm"]) and r["p_holm"] < 0.05 else ""
            cells.append(f"{fmt(r['estimate'])}{star} ({fmt(r['std_error'])})")
        if sim:
            cells.append(fmt(truth[c], 1))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Estimate (standard error), wealth index points; * Holm-adjusted p < 0.05 across the trials; "
              "n/e: not estimable (fewer than 10 treated or control rows)."]
    if sim and rec is not None and len(rec):
        lines += ["", "**Recovery of the true effects over the trials (SIMULATED data)**", "",
                  "| estimator | trials | mean bias (SE) | RMSE | 95% CI coverage | mean SE | slope on true | "
                  "false positives (Holm) | true effects detected (Holm) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rec.itertuples(index=False):
            lines.append(f"| {r.column} | {r.trials} | {fmt(r.bias)} ({fmt(r.bias_se)}) | {fmt(r.rmse)} | "
                         f"{fmt(r.coverage)} | {fmt(r.mean_se)} | {fmt(r.slope)} | {r.false_positives} | "
                         f"{r.detected} |")
        lines += ["", "Mean bias: mean of (estimate - true effect) over the trials, its SE the spread over trials / "
                  "sqrt(trials) (trials share units, so this understates it). Slope: OLS of estimates on true "
                  "effects (1: no attenuation). The naive effect on the predicted map is attenuated toward "
                  f"{meta.get('attenuation', 'k')} x the true effect by construction."]
    lines += ["", "Notes: " + " ".join(meta["notes"])]
    return "\n".join(lines) + "\n"


def readme_rows(est, rec, truth, simulated, source_sim) -> list[dict]:
    """Rows for replication/README.md (schema: target, source, eocausal, status)."""
    rows = []
    for col, target, value in PAPER_TARGETS:
        src = f"{PAPER}, abstract (v1)"
        if simulated:
            rows.append(dict(target=f"{target}: +{value:.2f}", source=src, eocausal="not run on the real data",
                             status="not reproducible without restricted data"))
            continue
        found = [(c, est[(est["trial"] == col) & (est["column"] == c) & est["estimate"].notna()]) for c in COLUMNS[:2]]
        found = [(c, r.iloc[0]) for c, r in found if not r.empty]
        if not found:
            rows.append(dict(target=f"{target}: +{value:.2f}", source=src, eocausal="no estimate (trial absent or "
                             "not estimable in the user-supplied files)",
                             status="differs: the trial could not be estimated from the user-supplied files"))
            continue
        c, r = found[0]
        inside = r["ci_low"] <= value <= r["ci_high"]
        rows.append(dict(target=f"{target}: +{value:.2f}", source=src,
                         eocausal=f"{r['estimate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({c}; user files)",
                         status="reproduced" if inside else
                         "differs: the paper's value lies outside eocausal's 95% CI (user-supplied files; sample, "
                         "covariates and images may differ from the paper's)"))
    if not simulated or rec is None or rec.empty:
        return rows
    rec = rec.set_index("column")

    def have(c):
        return c in rec.index

    if have(COLUMNS[0]):
        r = rec.loc[COLUMNS[0]]
        ok = _recovered(r)
        rows.append(dict(target="Simulated: IPW with image + tabular propensity recovers the true funder x sector "
                                "effects (|mean bias| < half the mean SE, 95% CI coverage >= 0.85)", source=source_sim,
                         eocausal=f"bias {r['bias']:+.2f} (SE {r['bias_se']:.2f}), coverage {r['coverage']:.2f}, "
                                  f"{int(r['trials'])} trials",
                         status="reproduced" if ok else "differs: see replication/aid_africa/results.md"))
    if have(COLUMNS[0]) and have(COLUMNS[1]):
        a, b = rec.loc[COLUMNS[1]], rec.loc[COLUMNS[0]]
        ok = a["bias"] > b["bias"] + 2 * a["bias_se"]
        rows.append(dict(target="Simulated: adding imagery shrinks the effects relative to tabular-only IPW when "
                                "placement follows visible features (the paper's finding)", source=source_sim,
                         eocausal=f"mean bias tabular-only {a['bias']:+.2f} vs image + tabular {b['bias']:+.2f}",
                         status="reproduced" if ok else "differs: tabular-only IPW is not more biased here"))
    if have(COLUMNS[2]):
        r = rec.loc[COLUMNS[2]]
        ok = _recovered(r)
        rows.append(dict(target="Simulated: unit + period fixed effects (CRV1 by ADM2) recover the true effects "
                                "(|mean bias| < half the mean SE, 95% CI coverage >= 0.85)",
                         source=source_sim, eocausal=f"bias {r['bias']:+.2f} (SE {r['bias_se']:.2f}), coverage "
                                                     f"{r['coverage']:.2f}",
                         status="reproduced" if ok else "differs: see replication/aid_africa/results.md"))
    if have(COLUMNS[3]) and have(COLUMNS[4]) and have(COLUMNS[5]):
        n, lcc, tw = rec.loc[COLUMNS[3]], rec.loc[COLUMNS[4]], rec.loc[COLUMNS[5]]
        ok = abs(lcc["slope"] - 1) < abs(n["slope"] - 1) and abs(tw["slope"] - 1) < abs(n["slope"] - 1)
        rows.append(dict(target="Simulated: effects on an ML-predicted wealth map are attenuated; LCC and Tweedie "
                                "remove the attenuation (slope of estimated on true effects ~ 1)", source=source_sim,
                         eocausal=f"slope naive {n['slope']:.2f}, LCC {lcc['slope']:.2f}, Tweedie {tw['slope']:.2f}",
                         status="reproduced" if ok else "differs: the corrections do not reduce the attenuation here"))
    return rows


def _recovered(r) -> bool:
    """The criterion of "recovers the true effects": small bias relative to one trial's SE, intervals cover."""
    return abs(r["bias"]) < 0.5 * r["mean_se"] and r["coverage"] >= 0.85


# ----------------------------------------------------------------------------- figures
def figures(est, truth, cols, out: Path) -> list[str]:
    from matplotlib.figure import Figure

    from eocausal.report.plots import forest_plot

    written = []
    d = est[est["column"] == COLUMNS[0]].rename(columns={"column": "method"}).assign(adjustment="tabular+image")
    d = d[d["estimate"].notna()].reset_index(drop=True)
    if len(d):
        d["trial"] = d["trial"].map(trial_label)
        d["method"] = "IPW"
        fig = forest_plot(d, label="trial")
        ax = fig.axes[0]
        ypos = np.arange(len(d))[::-1]
        ax.set_yticks(ypos, d["trial"])  # forest_plot's labels repeat " / IPW / tabular+image" on every row
        if truth is not None:
            tau = [truth[c] for c in est.loc[(est["column"] == COLUMNS[0]) & est["estimate"].notna(), "trial"]]
            ax.scatter(tau, ypos, marker="x", color="#c0392b", zorder=3, label="true effect (simulated)")
            ax.legend(fontsize=7, frameon=False)
            ax.set_title("SIMULATED data: IPW, image + tabular", fontsize=9)
        written.append(_save(fig, out / "figures" / "forest.png"))
    if truth is not None:
        fig = Figure(figsize=(6.5, 4.2), layout="constrained")
        ax = fig.subplots()
        lim = [min(truth.values()) - 1, max(truth.values()) + 1]
        ax.plot(lim, lim, color="grey", lw=0.8)
        for col, mk in zip(ORDER, "osPDv^<"):
            dd = est[(est["column"] == col) & est["estimate"].notna()]
            if len(dd):
                ax.scatter(dd["trial"].map(truth), dd["estimate"], marker=mk, s=16, label=col, alpha=0.8)
        ax.set_xlabel("true effect (simulated)")
        ax.set_ylabel("estimate")
        ax.set_title("SIMULATED data: estimated vs true effects, 1 point per trial", fontsize=9)
        ax.legend(fontsize=6, frameon=False)
        written.append(_save(fig, out / "figures" / "recovery.png"))
    return written


def _save(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> Path:
    a = parse_args(argv)
    t_start = time.perf_counter()
    timing: dict = {}
    log = {"warnings": []}
    data_in = load_real(a) if a.real else load_simulated(a, timing)
    log["simulated"] = data_in["simulated"]
    truth = data_in["truth"]

    t0 = time.perf_counter()
    carry = ["wealth_pred"] if "wealth_pred" in data_in["panel_in"].columns else []
    panel = build_panel(data_in["panel_in"], data_in["records"], trials=data_in["trials"], carry_next=carry)
    cols = [c for c, _, _ in panel.attrs["trials"]]
    data, confounders = analysis_frame(panel, cols, data_in["covariates"])
    full = panel.loc[panel["outcome"].notna(), cols].to_numpy()  # FE: the 0/1 treatment on every row
    data = pd.concat([data, pd.DataFrame(full, index=data.index, columns=[f"{c}__full" for c in cols])], axis=1)
    Z = None
    if data_in["embeddings"] is not None:
        pcs = components(data_in["embeddings"])
        missing = pd.Index(data["neighbourhood"].unique()).difference(pcs.index)
        if len(missing):
            raise InputError(f"embeddings: no row for neighbourhoods {missing[:8].tolist()} ({len(missing)} in all)")
        Z = pcs.loc[data["neighbourhood"]].to_numpy()
    timing["panel_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ipw = run_ipw(data, cols, confounders, Z, a.seed, log, propensity_model(a.propensity, a.propensity_c))
    timing["ipw_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fe = run_fe(data, cols, log)
    timing["fe_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    deb = None
    if carry and data_in["calibration"] is not None:
        deb = run_debiased(data, cols, ipw, data_in["calibration"], a.n_boot, a.seed, log)
    timing["debias_s"] = time.perf_counter() - t0

    est = collect(cols, ipw, fe, deb)
    rec = recovery(est, truth) if truth is not None else None
    attenuation = data_in["config"].get("attenuation")
    prop_txt = (f"ridge logistic regression (C = {a.propensity_c:g}) on standardised" if a.propensity == "ridge-fixed"
                else "eocausal's ridge-logit (penalty by inner grouped CV) on")
    notes = [f"IPW: Hajek ATE, propensity = {prop_txt} "
             f"confounders ({len(data_in['covariates'])} covariates + country and period indicators"
             + (f"; + the first {Z.shape[1]} principal components of the neighbourhoods' image embeddings"
                + (f", {data_in['config']['embedding_features']} MOSAIKS random features"
                   if "embedding_features" in data_in["config"] else "") if Z is not None else "")
             + "), cross-fitted over 5 folds grouped by ADM2, "
             "clipped to [0.001, 0.999]; SEs from the influence function, clustered by ADM2.",
             "FE: outcome ~ treated | neighbourhood + period, CRV1 SEs clustered by ADM2 (label ATT (TWFE)).",
             *(["AIPW: eocausal's cross-fitted AIPW with its default ridge outcome models per arm, on the same "
                "folds and image + tabular propensities."] if any(r.method == "aipw" for r in ipw.rows)
               else []),
             "Debiased: the same IPW weights on the predicted wealth of the next period; LCC and Tweedie fitted on a "
             "calibration set disjoint from the trial neighbourhoods; SEs from a joint bootstrap "
             f"({a.n_boot} draws) over calibration pairs and ADM2 clusters."]
    meta = dict(notes=notes, attenuation=attenuation)
    md = results_markdown(est, rec, truth, cols, meta)
    src = "SIMULATED (replication/aid_africa/simulate.py)"
    rows = readme_rows(est, rec, truth, data_in["simulated"], src)

    a.out.mkdir(parents=True, exist_ok=True)
    figs = figures(est, truth, cols, a.out)
    timing["total_s"] = time.perf_counter() - t_start
    result = {
        "rows": rows,
        "simulated": data_in["simulated"],
        "data": SIMULATED if data_in["simulated"] else "user-supplied files",
        "paper": PAPER,
        "command": "python replication/aid_africa/run.py" + (" --quick" if a.quick else "")
                   + ("" if a.propensity == "ridge-fixed" else " --propensity ridge-logit")
                   + ("" if a.propensity_c == PROPENSITY_C else f" --propensity-c {a.propensity_c:g}"),
        "config": dict(data_in["config"], quick=a.quick, seed=a.seed, trials=len(cols), bootstrap=a.n_boot,
                       propensity=(f"LogisticRegression(C={a.propensity_c:g}) on standardised confounders"
                                   if a.propensity == "ridge-fixed" else "ridge-logit"),
                       embedding_components=None if Z is None else int(Z.shape[1]),
                       rows_per_trial_max=int(len(data)), precision_max=a.precision_max,
                       projects_outside_periods=panel.attrs["projects_outside_periods"]),
        "true_effects": truth,
        "recovery": None if rec is None else rec.to_dict(orient="records"),
        "estimates": est.to_dict(orient="records"),
        "warnings": sorted(set(log["warnings"])),
        "timing": {k: round(v, 1) for k, v in timing.items()},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "figures": [str(Path(f).relative_to(a.out)) for f in figs],
    }
    atomic_write_text(a.out / "results.json", json.dumps(_clean(result), indent=1, allow_nan=False) + "\n")
    md_path = atomic_write_text(a.out / "results.md", md)
    if a.out.resolve() == HERE.resolve() and not a.no_readme:
        import make_readme

        make_readme.rewrite_block(HERE / "README.md", md + f"\nRegenerate with `{result['command']}` (wall time "
                                  f"{timing['total_s']:.0f} s on {os.cpu_count()} shared cores, load average "
                                  f"{os.getloadavg()[0]:.1f}); every number above comes from results.json.\n")
        make_readme.main([])
    return md_path


def _clean(x):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None (strict JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)


if __name__ == "__main__":
    path = main()
    print(f"wrote {path}")
