"""SIMULATED data with the structure of the Chinese vs World Bank aid study (not real data).

Everything this module makes is synthetic: the countries, ADM2 units, neighbourhoods, images,
covariates, projects and wealth are drawn from the model below, so that an analysis of them can
be checked against known true effects. The real study (Daoud, Conlin and Jerzak, arXiv:2509.25648)
uses AidData's geocoded Chinese and World Bank projects and a restricted neighbourhood wealth
panel; none of that is used or imitated beyond its layout.

Model (a = ADM2, i = neighbourhood in a, c = country, t = 0..3 the periods 2002-04 ... 2011-13,
(f, s) = funder x sector):

- ADM2 factors: a visible built-up factor v_a ~ N(0, 1) (seen in the images, in no table) and
  three tabular confounders q_ak ~ N(0, 1) (ADM2-level facts such as distance to the capital,
  recorded as covariates x01..x03 of every neighbourhood of a); the other covariates x04..xK are
  N(0, 1) per neighbourhood plus 0.5 N(0, 1) per ADM2, x04 and x05 prognostic of wealth, the
  rest noise. Country effects u_c ~ N(0, 4^2); neighbourhood effects alpha_i ~ N(0, 3^2).
- Image: each neighbourhood has one pre-period 3-band chip (``px`` x ``px``, uint8) whose
  built-up share is 0.04 + 0.42 Phi(v_i), v_i = v_a + 0.15 e_i: bright roofs on vegetation.
- Placement: for every (a, t, f, s), a project starts with probability
  sigmoid(b_fs + g_f v_a + 0.6 q_a1 - 0.5 q_a2 + 0.4 q_a3 + d_fc + 0.15 t), with b_fs ~
  U(-2.6, -1.6), g = 0.8 for the World Bank and 0.4 for China (World Bank placement more visible
  from imagery, as the paper reports) and d_fc ~ N(0, 0.4^2) a country preference. Project records follow AidData's layout: 1-3 locations
  at precision 1-2 inside the ADM2; some sector codes written as 5-digit purpose codes (14010 for
  140) or two sectors joined by '|' (one project placed for both); decoy records that the study
  design must ignore: projects with only coarse locations (precision 3-4) in random ADM2s, and
  projects starting before 2002 or after 2013. Decoys have no effect on wealth.
- Wealth (an IWI-like index, 0-100): W_it = 38 + u_c + 3 v_i + 2.5 q_a1 - 2 q_a2 + 1.5 q_a3
  + 1.5 x04 - 1 x05 + alpha_i + 1.5 t + sum_(f,s) tau_fs D_(a, t-1, f, s) + N(0, 2.5^2), clipped to
  [0, 100] (rarely binding). A project starting in t changes wealth in t + 1 only (no carry-over),
  so the cross-sectional and the fixed-effects estimands coincide with tau_fs. About a third of
  the trials have tau_fs = 0; the others 3 (China) or 2 (World Bank) + N(0, 2^2), to 0.1.
- Predicted wealth map (the ML outcome of METHODS.md 5): P = m + k (W - m) + N(0, sd^2), k =
  ``attenuation`` (0.55), m the mean wealth, clipped to [0, 100]; and a calibration set of
  ``n_calibration`` labelled (P, W) pairs from other neighbourhoods of the same ADM2s (ids
  ``cal...``), disjoint from the trial neighbourhoods.

Confounding: v_a raises both placement and wealth, so an analysis adjusting for the tables only
overstates the effects; adjusting for the image (its embedding) removes most of that bias, and
the unit fixed effects remove it entirely (v is constant over time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, special, stats

from aiddata import PERIODS, trial_column  # noqa: E402  (run.py puts this folder on sys.path)

SIMULATED = "SIMULATED data (replication/aid_africa/simulate.py), not the study's data"
#: The study's sectors (3-digit codes as AidData groups them): 17 x 2 funders = 34 trials.
SECTORS_FULL = (110, 120, 130, 140, 150, 160, 210, 220, 230, 240, 250, 310, 320, 330, 410, 430, 700)
SECTORS_QUICK = (140, 210, 330)
FUNDER_NAMES = ("China", "World Bank")
#: Weight of the visible factor v_a in the placement log-odds, by funder.
IMAGE_COEF = {"China": 0.4, "World Bank": 0.8}
#: 5-digit CRS purpose codes whose first three digits are the sector (for the simulated records).
PURPOSE_CODES = {130: "13010", 140: "14010", 160: "16010", 210: "21010", 220: "22010", 230: "23010",
                 240: "24010", 250: "25010", 410: "41010", 430: "43010"}
_BACKGROUND = np.array([60.0, 105.0, 50.0])
_BUILT = np.array([205.0, 195.0, 190.0])


@dataclass(frozen=True)
class SimulatedAid:
    """One simulated study (every table is SIMULATED).

    Attributes
    ----------
    projects, locations : DataFrame
        AidData-style records (see :mod:`aiddata`), decoys included.
    panel : DataFrame
        Long neighbourhood panel: neighbourhood, country, adm2, lon, lat, period (first year),
        wealth, wealth_pred, x01..xK.
    chips : ndarray (n_neighbourhoods, px, px, 3) uint8
        One image per neighbourhood, in the order of ``neighbourhoods``.
    neighbourhoods : ndarray of str
        Neighbourhood ids (image keys).
    calibration : DataFrame
        unit, period, wealth (label), wealth_pred: the held-out calibration set.
    true_effects : dict
        Trial column (e.g. ``China_330``) -> tau_fs.
    trials : list of (funder, sector)
    covariates : list of str
    image_factor : ndarray
        v_i per neighbourhood (the confounder the images show; for diagnostics only, never
        given to the analysis).
    placement : dict
        ``adm2`` (ids), ``probability`` and ``placed`` arrays (trial, adm2, period): the true
        placement model (diagnostics only).
    config : dict
    """

    projects: pd.DataFrame
    locations: pd.DataFrame
    panel: pd.DataFrame
    chips: np.ndarray
    neighbourhoods: np.ndarray
    calibration: pd.DataFrame
    true_effects: dict
    trials: list
    covariates: list
    image_factor: np.ndarray
    placement: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def write(self, folder) -> dict:
        """Write projects.csv, locations.csv, panel.csv and calibration.csv (CSV, as real files)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in ("projects", "locations", "panel", "calibration"):
            paths[name] = folder / f"{name}.csv"
            getattr(self, name).to_csv(paths[name], index=False)
        return paths


def _chips(rng, share: np.ndarray, px: int) -> np.ndarray:
    """Vegetation background with bright built-up clumps covering ``share`` of each chip."""
    n = len(share)
    field_ = ndimage.uniform_filter(rng.normal(size=(n, px, px)), size=(1, 3, 3), mode="wrap")
    flat = np.sort(field_.reshape(n, -1), axis=1)
    pos = np.clip(np.round((1 - share) * px * px).astype(int), 0, px * px - 1)
    thresh = flat[np.arange(n), pos][:, None, None]
    mask = field_ > thresh
    coarse = rng.normal(0, 1, (n, px // 4 + 1, px // 4 + 1, 3))
    texture = np.kron(coarse, np.ones((1, 4, 4, 1)))[:, :px, :px] * 12.0
    img = _BACKGROUND + texture + rng.normal(0, 6, (n, px, px, 3))
    built = _BUILT + rng.normal(0, 10, (n, px, px, 3))
    img = np.where(mask[..., None], built, img)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def simulate_aid(*, quick: bool = False, seed: int = 20260101, n_countries: int | None = None,
                 adm2_per_country: int | None = None, neighbourhoods_per_adm2: int | None = None,
                 n_covariates: int | None = None, sectors=None, px: int | None = None,
                 n_calibration: int | None = None, attenuation: float = 0.55, prediction_sd: float = 3.0,
                 periods=PERIODS) -> SimulatedAid:
    """Simulate the study (deterministic for a seed). ``quick`` gives a small version.

    Defaults (full / quick): 6 / 3 countries, 100 / 40 ADM2s each, 2 neighbourhoods per ADM2,
    25 / 8 tabular covariates, 17 / 3 sectors x 2 funders = 34 / 6 trials, 16 / 12 px chips,
    1,000 / 300 calibration pairs.
    """
    C = n_countries or (3 if quick else 6)
    A = adm2_per_country or (40 if quick else 100)
    M = neighbourhoods_per_adm2 or 2
    K = n_covariates or (8 if quick else 25)
    px = px or (12 if quick else 16)
    n_cal = n_calibration or (300 if quick else 1000)
    sectors = tuple(sectors or (SECTORS_QUICK if quick else SECTORS_FULL))
    if K < 5:
        raise ValueError("n_covariates: at least 5 (3 confounders, 2 prognostic)")
    T = len(periods)
    rng = np.random.default_rng(seed)

    # geography: countries side by side, ADM2s on a grid of 0.5 degree cells inside each
    n_adm = C * A
    country_of_adm = np.repeat(np.arange(C), A)
    side = int(np.ceil(np.sqrt(A)))
    cell = 0.5
    adm_lon0 = 5.0 + country_of_adm * (side + 1) * cell + (np.arange(n_adm) % A % side) * cell
    adm_lat0 = -10.0 + (np.arange(n_adm) % A // side) * cell
    adm_ids = np.array([f"C{c:02d}.A{a:03d}" for c, a in zip(country_of_adm, np.arange(n_adm) % A)])
    country_names = np.array([f"Country{c + 1:02d}" for c in range(C)])

    v_a = rng.normal(size=n_adm)
    q_a = rng.normal(size=(n_adm, 3))
    u_c = rng.normal(0, 4, C)

    # neighbourhoods: M in the panel and Mc for calibration per ADM2
    Mc = int(np.ceil(n_cal / n_adm))
    per = M + Mc
    adm_of = np.repeat(np.arange(n_adm), per)
    is_cal = np.tile(np.r_[np.zeros(M, bool), np.ones(Mc, bool)], n_adm)
    n_all = len(adm_of)
    v_i = v_a[adm_of] + 0.15 * rng.normal(size=n_all)
    x = np.empty((n_all, K))
    x[:, :3] = q_a[adm_of]
    x[:, 3:] = rng.normal(size=(n_all, K - 3)) + 0.5 * rng.normal(size=(n_adm, K - 3))[adm_of]
    alpha = rng.normal(0, 3, n_all)
    lon = adm_lon0[adm_of] + rng.uniform(0.02, cell - 0.02, n_all)
    lat = adm_lat0[adm_of] + rng.uniform(0.02, cell - 0.02, n_all)

    # trials and their true effects (a third zero)
    trials = [(f, s) for f in FUNDER_NAMES for s in sectors]
    n_tr = len(trials)
    zero = rng.permutation(n_tr) < int(round(n_tr / 3))
    mean_eff = np.array([3.0 if f == "China" else 2.0 for f, _ in trials])
    tau = np.where(zero, 0.0, np.round(mean_eff + rng.normal(0, 2.0, n_tr), 1)) + 0.0  # no -0.0
    base = rng.uniform(-2.6, -1.6, n_tr)
    g_img = np.array([IMAGE_COEF[f] for f, _ in trials])
    pref = rng.normal(0, 0.4, (2, C))
    fidx = np.array([FUNDER_NAMES.index(f) for f, _ in trials])
    logit = (base[:, None, None] + g_img[:, None, None] * v_a[None, :, None]
             + (0.6 * q_a[:, 0] - 0.5 * q_a[:, 1] + 0.4 * q_a[:, 2])[None, :, None]
             + pref[fidx][:, country_of_adm][:, :, None] + 0.15 * np.arange(T)[None, None, :])
    D = rng.uniform(size=logit.shape) < special.expit(logit)  # (trial, adm2, period)

    # wealth panel
    level = (38 + u_c[country_of_adm[adm_of]] + 3 * v_i + 2.5 * x[:, 0] - 2 * x[:, 1] + 1.5 * x[:, 2]
             + 1.5 * x[:, 3] - 1.0 * x[:, 4] + alpha)
    effect = np.zeros((n_all, T))
    effect[:, 1:] = np.einsum("k,kat->at", tau, D[:, :, :-1].astype(float))[adm_of]
    wealth = level[:, None] + 1.5 * np.arange(T)[None, :] + effect + rng.normal(0, 2.5, (n_all, T))
    n_clipped = int(((wealth < 0) | (wealth > 100)).sum())
    wealth = np.clip(wealth, 0, 100)
    m = float(wealth.mean())
    pred = np.clip(m + attenuation * (wealth - m) + rng.normal(0, prediction_sd, wealth.shape), 0, 100)

    ids = np.array([f"N{j:05d}" for j in range(n_all)])
    starts = np.array([p[0] for p in periods])
    cov_names = [f"x{k + 1:02d}" for k in range(K)]
    pan_idx = np.flatnonzero(~is_cal)
    panel = pd.DataFrame({
        "neighbourhood": np.repeat(ids[pan_idx], T),
        "country": np.repeat(country_names[country_of_adm[adm_of[pan_idx]]], T),
        "adm2": np.repeat(adm_ids[adm_of[pan_idx]], T),
        "lon": np.repeat(lon[pan_idx], T).round(5), "lat": np.repeat(lat[pan_idx], T).round(5),
        "period": np.tile(starts, len(pan_idx)),
        "wealth": wealth[pan_idx].ravel().round(3), "wealth_pred": pred[pan_idx].ravel().round(3),
    })
    for k, name in enumerate(cov_names):
        panel[name] = np.repeat(x[pan_idx, k], T).round(4)

    cal_idx = np.flatnonzero(is_cal)[rng.permutation(int(is_cal.sum()))[:n_cal]]
    cal_t = rng.integers(0, T, len(cal_idx))
    calibration = pd.DataFrame({"unit": ["cal" + ids[j][1:] for j in cal_idx], "period": starts[cal_t],
                                "wealth": wealth[cal_idx, cal_t].round(3),
                                "wealth_pred": pred[cal_idx, cal_t].round(3)})

    share = 0.04 + 0.42 * stats.norm.cdf(v_i[pan_idx])
    chips = _chips(rng, share, px)

    projects, locations = _records(rng, trials, D, periods, adm_ids, adm_lon0, adm_lat0, cell, tau)
    config = dict(simulated=SIMULATED, seed=seed, quick=quick, countries=C, adm2_per_country=A,
                  neighbourhoods_per_adm2=M, n_neighbourhoods=len(pan_idx), n_covariates=K, px=px,
                  n_trials=n_tr, n_calibration=len(calibration), attenuation=attenuation,
                  prediction_sd=prediction_sd, wealth_values_clipped=n_clipped,
                  image_coefficient=dict(IMAGE_COEF))
    return SimulatedAid(projects=projects, locations=locations, panel=panel, chips=chips,
                        neighbourhoods=ids[pan_idx], calibration=calibration,
                        true_effects={trial_column(f, s): float(t) for (f, s), t in zip(trials, tau)},
                        trials=trials, covariates=cov_names, image_factor=v_i[pan_idx],
                        placement=dict(adm2=adm_ids, probability=special.expit(logit), placed=D), config=config)


def _records(rng, trials, D, periods, adm_ids, lon0, lat0, cell, tau):
    """AidData-style projects and locations tables for the placements D (trial, adm2, period)."""
    proj, locs = [], []

    def add(funder, sector_txt, year, places):
        pid = f"P{len(proj) + 1:06d}"
        proj.append((pid, funder, sector_txt, int(year)))
        for prec, a in places:
            locs.append((pid, prec, round(lat0[a] + rng.uniform(0.02, cell - 0.02), 5),
                         round(lon0[a] + rng.uniform(0.02, cell - 0.02), 5), adm_ids[a]))

    def code(sector):
        return PURPOSE_CODES[sector] if sector in PURPOSE_CODES and rng.uniform() < 0.25 else str(sector)

    for f in FUNDER_NAMES:
        ks = [k for k, (ff, _) in enumerate(trials) if ff == f]
        for a in range(D.shape[1]):
            for t, (y0, y1) in enumerate(periods):
                placed = [k for k in ks if D[k, a, t]]
                rng.shuffle(placed)
                while placed:
                    # now and then one project covers two sectors ("140|210")
                    take = placed[:2] if len(placed) > 1 and rng.uniform() < 0.2 else placed[:1]
                    placed = placed[len(take):]
                    txt = "|".join(code(trials[k][1]) for k in take)
                    n_loc = int(rng.integers(1, 4))
                    add(f, txt, rng.integers(y0, y1 + 1), [(int(rng.integers(1, 3)), a)] * n_loc)
    n_real = len(proj)
    n_adm = len(adm_ids)
    sectors = sorted({s for _, s in trials})
    for _ in range(max(4, n_real // 10)):  # decoys: coarse locations only (precision 3-4)
        add(FUNDER_NAMES[int(rng.integers(0, 2))], str(sectors[int(rng.integers(0, len(sectors)))]),
            rng.integers(periods[0][0], periods[-1][1] + 1), [(int(rng.integers(3, 5)), int(rng.integers(0, n_adm)))])
    for _ in range(max(2, n_real // 20)):  # decoys: starting outside the study window
        year = rng.choice([periods[0][0] - 3, periods[0][0] - 1, periods[-1][1] + 1, periods[-1][1] + 2])
        add(FUNDER_NAMES[int(rng.integers(0, 2))], str(sectors[int(rng.integers(0, len(sectors)))]), year,
            [(1, int(rng.integers(0, n_adm)))])
    projects = pd.DataFrame(proj, columns=["project_id", "funder", "sector", "start_year"])
    locations = pd.DataFrame(locs, columns=["project_id", "precision", "latitude", "longitude", "adm2"])
    return projects, locations
