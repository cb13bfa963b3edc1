"""AidData-style geocoded project records and the neighbourhood x period panel built from them.

The study (Daoud, Conlin and Jerzak, "Chinese vs. World Bank Development Projects: Insights from
Earth Observation and Computer Vision on Wealth Gains in Africa, 2002-2013", arXiv:2509.25648;
METHODS.md section 7) combines two tables per funder, in the layout of AidData's geocoded
research releases:

``projects`` (one row per project)
    ``project_id``; ``funder`` ("China" or "World Bank"; AidData ships one release per funder,
    so pass ``funder=`` when the column is absent); ``sector``, the 3-digit OECD CRS sector
    code (a 5-digit CRS purpose code is truncated to its first three digits, 33110 -> 331;
    several codes joined by ``|``, as in AidData's ``ad_sector_codes``, give one row per code);
    ``start_year``.
``locations`` (one row per project location)
    ``project_id``; ``precision`` (AidData's precision code: 1 exact, 2 near, within 25 km,
    3 the ADM2 as a whole, 4 the ADM1, ... 8; only codes <= ``precision_max``, 2 by default,
    are kept: a project known only at ADM2 level may not touch the neighbourhoods of its ADM2,
    and coarser ones cannot be placed in one ADM2); ``latitude``, ``longitude``; ``adm2``, the
    id of the second-level administrative unit holding the location (AidData's releases give
    coordinates and gazetteer codes; derive the ADM2 id by a spatial join with GADM/geoBoundaries
    before reading, for example with ``geopandas.sjoin``).

Column names may also be AidData's own (``ad_sector_codes``, ``transactions_start_year``,
``precision_code``, ``donors``, ...): :data:`ALIASES` lists those recognised.

Treatment and outcome (:func:`build_panel`): with 3-year periods t (2002-04, 2005-07, 2008-10,
2011-13), ``treated(i, t, funder, sector) = 1`` when a project of that funder and sector with a
kept location in neighbourhood i's ADM2 starts during t, else 0; the outcome of row (i, t) is
the wealth index of period t + 1 (missing for the last period).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from eocausal.errors import ColumnError, DataFileError, DataQualityWarning, InputError, MissingFileError

#: The study's periods: (first year, last year), inclusive.
PERIODS = ((2002, 2004), (2005, 2007), (2008, 2010), (2011, 2013))
#: Canonical funder names and the spellings mapped onto them (case-insensitive).
FUNDERS = {"China": ("china", "chinese", "prc", "people's republic of china"),
           "World Bank": ("world bank", "worldbank", "wb", "ibrd", "ida", "ibrd/ida")}
#: Accepted column names per role, the canonical name first.
ALIASES = {
    "project_id": ("project_id", "projectid", "project id", "id"),
    "funder": ("funder", "donor", "donors", "financier"),
    "sector": ("sector", "sector_code", "ad_sector_codes", "crs_sector_code", "crs_code", "purpose_code"),
    "start_year": ("start_year", "transactions_start_year", "year", "commitment_year", "start"),
    "precision": ("precision", "precision_code", "geocode_precision"),
    "latitude": ("latitude", "lat"),
    "longitude": ("longitude", "lon", "lng", "long"),
    "adm2": ("adm2", "adm2_id", "adm2_code", "gadm_adm2", "adm2_pcode"),
}
#: OECD CRS 3-digit sector names (DAC 5-digit purpose codes truncate to these).
SECTORS = {
    110: "Education", 111: "Education, level unspecified", 112: "Basic education",
    113: "Secondary education", 114: "Post-secondary education", 120: "Health",
    121: "Health, general", 122: "Basic health", 130: "Population policies and reproductive health",
    140: "Water supply and sanitation", 150: "Government and civil society",
    151: "Government and civil society, general",
    152: "Conflict, peace and security", 160: "Other social infrastructure and services",
    210: "Transport and storage", 220: "Communications", 230: "Energy", 231: "Energy policy",
    232: "Energy generation, renewable", 233: "Energy generation, non-renewable", 236: "Energy distribution",
    240: "Banking and financial services", 250: "Business and other services",
    310: "Agriculture, forestry, fishing", 311: "Agriculture", 312: "Forestry", 313: "Fishing",
    320: "Industry, mining, construction", 321: "Industry", 322: "Mineral resources and mining",
    323: "Construction", 330: "Trade policies and regulations, tourism", 331: "Trade policies and regulations",
    332: "Tourism", 410: "General environmental protection", 420: "Women in development",
    430: "Other multisector", 510: "General budget support", 520: "Development food aid",
    530: "Other commodity assistance", 600: "Action relating to debt", 700: "Emergency response",
    720: "Emergency response", 730: "Reconstruction relief and rehabilitation",
    740: "Disaster prevention and preparedness", 910: "Administrative costs of donors",
    920: "Support to non-governmental organisations", 930: "Refugees in donor countries",
    998: "Unallocated / unspecified",
}
_MAX_LISTED = 8


# ----------------------------------------------------------------------------- helpers
def sector_name(code: int) -> str:
    """Name of a 3-digit CRS sector code ('sector 999' when unknown)."""
    return SECTORS.get(int(code), f"sector {int(code)}")


def trial_column(funder: str, sector: int) -> str:
    """Treatment column name of a funder x sector trial, e.g. ``China_330`` or ``WorldBank_140``."""
    return f"{funder.replace(' ', '')}_{int(sector)}"


def _rows(idx) -> str:
    items = [i.item() if isinstance(i, np.generic) else i for i in idx]
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return "[" + ", ".join(repr(i) for i in items[:_MAX_LISTED]) + more + "]"


def _read_table(source, what: str) -> pd.DataFrame:
    """A DataFrame as is, or a CSV file read with every column as text (validated afterwards)."""
    if isinstance(source, pd.DataFrame):
        return source.copy()
    if not isinstance(source, (str, Path)):
        raise InputError(f"{what}: expected a CSV path or a pandas DataFrame, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise MissingFileError(f"{what}: no file at {str(path)!r}; pass the path of the AidData {what}.csv")
    if path.is_dir():
        raise DataFileError(f"{what}: {str(path)!r} is a folder; pass the CSV file inside it (e.g. {what}.csv)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=True, skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise DataFileError(f"{what}: {str(path)!r} is empty; expected a CSV with a header row") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{what}: {str(path)!r} is not a readable CSV ({exc}); export it as "
                            "comma-separated UTF-8 text with one header row") from exc
    if frame.empty:
        raise DataFileError(f"{what}: {str(path)!r} has a header but no rows")
    return frame


def _resolve(frame: pd.DataFrame, what: str, columns: Mapping[str, str] | None, roles: Sequence[str],
             optional: Sequence[str] = ()) -> pd.DataFrame:
    """Rename the columns playing each role to the canonical names (raises ColumnError)."""
    given = dict(columns or {})
    lower = {str(c).strip().lower(): c for c in frame.columns}
    rename = {}
    for role in list(roles) + list(optional):
        if role in given:
            if given[role] not in frame.columns:
                raise ColumnError(f"{what}: columns={{{role!r}: {given[role]!r}}} names no column; the table has "
                                  f"{sorted(map(str, frame.columns))}")
            rename[given[role]] = role
            continue
        hit = next((lower[a] for a in ALIASES[role] if a in lower), None)
        if hit is None:
            if role in optional:
                continue
            raise ColumnError(
                f"{what}: no {role!r} column (looked for {list(ALIASES[role])}); the table has "
                f"{sorted(map(str, frame.columns))}. Rename the column, or pass columns={{{role!r}: 'your_name'}}")
        rename[hit] = role
    return frame.rename(columns=rename)


def _integers(col: pd.Series, what: str, role: str, fix: str) -> pd.Series:
    """Whole numbers from text or numbers; anything else raises InputError naming the rows."""
    num = pd.to_numeric(col, errors="coerce")
    bad = col.notna() & (num.isna() | (num % 1 != 0))
    if bad.any():
        raise InputError(f"{what}: column {role!r} must hold whole numbers; rows {_rows(col.index[bad])} hold "
                         f"{_rows(col[bad].unique())}. {fix}")
    return num


def _missing(frame: pd.DataFrame, role: str, what: str, on_missing: str, fix: str) -> pd.DataFrame:
    na = frame[role].isna() | (frame[role].astype(str).str.strip() == "")
    if not na.any():
        return frame
    if on_missing == "drop":
        warnings.warn(f"{what}: dropped {int(na.sum())} row(s) without a {role!r} value (rows "
                      f"{_rows(frame.index[na])}) under on_missing='drop'", DataQualityWarning, stacklevel=3)
        return frame[~na]
    raise InputError(f"{what}: column {role!r} is missing in rows {_rows(frame.index[na])} "
                     f"({int(na.sum())} in all). {fix}, or pass on_missing='drop' to drop them with a warning")


def _funder(value: str, allowed: Sequence[str]) -> str | None:
    v = str(value).strip().lower()
    for name, spellings in FUNDERS.items():
        if v == name.lower() or v in spellings:
            return name
    return next((a for a in allowed if a.lower() == v), None)


def _sectors(raw: pd.Series, what: str) -> pd.Series:
    """Explode '|'-joined codes and reduce each to its 3-digit sector; raises on other values."""
    parts = raw.astype(str).str.split("|").explode().str.strip()
    parts = parts[parts != ""]
    ok = parts.str.fullmatch(r"\d{3}(\d{2})?(\.0+)?")
    if not ok.all():
        bad = parts[~ok]
        raise InputError(
            f"{what}: column 'sector' must hold 3-digit OECD CRS sector codes (e.g. 330) or 5-digit purpose "
            f"codes (e.g. 33110, truncated to 331), several joined by '|'; rows {_rows(bad.index.unique())} hold "
            f"{_rows(bad.unique())}. Map free-text sectors to CRS codes first")
    digits = parts.str.replace(r"\.0+$", "", regex=True)
    return digits.str[:3].astype(int)


# ----------------------------------------------------------------------------- reader
def read_aiddata(projects_csv, locations_csv, *, precision_max: int = 2, funder: str | None = None,
                 funders: Sequence[str] = ("China", "World Bank"), columns: Mapping[str, str] | None = None,
                 on_missing: str = "raise") -> pd.DataFrame:
    """Read AidData-style project and location tables into one row per (project, sector, location).

    Parameters
    ----------
    projects_csv, locations_csv : path or DataFrame
        The two tables (see the module docstring for their columns).
    precision_max : int
        Keep locations with precision code <= this (1: exact, 2: within 25 km, 3: the ADM2 as a
        whole); the others are dropped (their number is in ``.attrs['dropped_precision']``).
    funder : str, optional
        Funder of every project, when the projects table has no funder column (AidData ships
        one release per funder).
    funders : sequence of str
        Funders allowed; others raise InputError.
    columns : mapping role -> column name, optional
        Column names that differ from the canonical ones and from :data:`ALIASES`.
    on_missing : {'raise', 'drop'}
        Rows without a start year, precision or ADM2: raise InputError, or drop them with a
        :class:`~eocausal.errors.DataQualityWarning`.

    Returns
    -------
    DataFrame
        Columns ``project_id, funder, sector, start_year, precision, latitude, longitude, adm2``,
        one row per kept location and sector code of each project. ``.attrs`` holds the counts
        ``n_projects``, ``dropped_precision`` and ``unlocated_projects`` (projects without a kept
        location).

    Raises
    ------
    MissingFileError, DataFileError
        A file is missing, empty or not a CSV.
    ColumnError
        A required column is missing (the message lists the names looked for).
    InputError
        A value is unusable (unknown funder, sector code that is not CRS, non-integer year or
        precision, coordinates out of range, duplicate project ids, locations of unknown
        projects); the message names the column, the rows and the fix.
    """
    if on_missing not in ("raise", "drop"):
        raise InputError(f"on_missing={on_missing!r}: use 'raise' or 'drop'")
    if not isinstance(precision_max, (int, np.integer)) or not 1 <= precision_max <= 8:
        raise InputError(f"precision_max={precision_max!r}: must be an integer AidData precision code in 1..8 "
                         "(1 exact, 2 within 25 km, 3 the ADM2 as a whole)")
    proj = _read_table(projects_csv, "projects")
    loc = _read_table(locations_csv, "locations")
    proj = _resolve(proj, "projects", columns, ["project_id", "sector", "start_year"], optional=["funder"])
    loc = _resolve(loc, "locations", columns, ["project_id", "precision", "latitude", "longitude", "adm2"])

    # projects
    all_ids = set(proj["project_id"].astype(str).str.strip())
    if "funder" not in proj.columns:
        if funder is None:
            raise ColumnError(f"projects: no 'funder' column (looked for {list(ALIASES['funder'])}); AidData ships "
                              "one release per funder: pass funder='China' or funder='World Bank'")
        proj["funder"] = funder
    elif funder is not None:
        raise InputError("funder: the projects table has a funder column already; do not pass funder= as well")
    proj["project_id"] = proj["project_id"].astype(str).str.strip()
    dup = proj["project_id"].duplicated(keep=False)
    if dup.any():
        raise InputError(f"projects: column 'project_id' repeats ids {_rows(proj.loc[dup, 'project_id'].unique())}; "
                         "give one row per project (put several sectors in one cell joined by '|')")
    fixed = proj["funder"].map(lambda v: _funder(v, funders) if pd.notna(v) else None)
    bad = fixed.isna() | ~fixed.isin(list(funders))
    if bad.any():
        raise InputError(f"projects: column 'funder' holds {_rows(proj.loc[bad, 'funder'].unique())} in rows "
                         f"{_rows(proj.index[bad])}; allowed: {list(funders)}. Keep only these funders' projects, "
                         "or widen funders=")
    proj["funder"] = fixed
    proj = _missing(proj, "start_year", "projects", on_missing, "Look the start year up, or drop these projects")
    proj = _missing(proj, "sector", "projects", on_missing, "Code the sector")
    year = _integers(proj["start_year"], "projects", "start_year", "Use four-digit calendar years, e.g. 2006")
    out_of_range = (year < 1900) | (year > 2100)
    if out_of_range.any():
        raise InputError(f"projects: column 'start_year' holds {_rows(year[out_of_range].unique())} in rows "
                         f"{_rows(year.index[out_of_range])}; use four-digit calendar years, e.g. 2006")
    proj["start_year"] = year.astype(int)
    sectors = _sectors(proj["sector"], "projects")
    proj = proj.drop(columns="sector").join(sectors.rename("sector"))
    proj = proj.drop_duplicates(["project_id", "sector"])

    # locations
    loc["project_id"] = loc["project_id"].astype(str).str.strip()
    loc = _missing(loc, "precision", "locations", on_missing, "Fill the AidData precision code")
    prec = _integers(loc["precision"], "locations", "precision", "Use AidData precision codes 1..8")
    bad = (prec < 1) | (prec > 8)
    if bad.any():
        raise InputError(f"locations: column 'precision' holds {_rows(prec[bad].unique())} in rows "
                         f"{_rows(prec.index[bad])}; AidData precision codes run from 1 (exact) to 8")
    loc["precision"] = prec.astype(int)
    n_loc = len(loc)
    loc = loc[loc["precision"] <= precision_max]
    dropped_precision = n_loc - len(loc)
    for role, lim in (("latitude", 90), ("longitude", 180)):
        v = pd.to_numeric(loc[role], errors="coerce")
        bad = v.isna() | (v.abs() > lim)
        if bad.any():
            raise InputError(f"locations: column {role!r} must hold decimal degrees in [-{lim}, {lim}] (WGS84); "
                             f"rows {_rows(loc.index[bad])} hold {_rows(loc.loc[bad, role].unique())}. Fix or "
                             "geocode these locations, or raise their precision code above precision_max")
        loc[role] = v.astype(float)
    loc = _missing(loc, "adm2", "locations", on_missing,
                   "Assign each location its ADM2 by a spatial join with the ADM2 boundaries (geopandas.sjoin)")
    loc["adm2"] = loc["adm2"].astype(str).str.strip()
    loc = loc[~loc["project_id"].isin(all_ids - set(proj["project_id"]))]  # projects dropped above
    orphan = ~loc["project_id"].isin(proj["project_id"])
    if orphan.any():
        raise InputError(f"locations: project ids {_rows(loc.loc[orphan, 'project_id'].unique())} (rows "
                         f"{_rows(loc.index[orphan])}) are not in the projects table; read the projects.csv of the "
                         "same release, or drop those locations")

    out = proj[["project_id", "funder", "sector", "start_year"]].merge(
        loc[["project_id", "precision", "latitude", "longitude", "adm2"]], on="project_id", how="inner")
    out = out.sort_values(["funder", "sector", "start_year", "project_id", "adm2"], kind="stable")
    out = out.reset_index(drop=True)
    out.attrs.update(n_projects=int(proj["project_id"].nunique()), dropped_precision=int(dropped_precision),
                     unlocated_projects=int(proj["project_id"].nunique() - out["project_id"].nunique()),
                     precision_max=int(precision_max))
    return out


# ----------------------------------------------------------------------------- panel
def period_labels(periods=PERIODS) -> list[str]:
    """'2002-2004', ... for each (first, last) period."""
    return [f"{a}-{b}" for a, b in periods]


def _check_periods(periods) -> tuple[tuple[int, int], ...]:
    try:
        ps = tuple((int(a), int(b)) for a, b in periods)
    except (TypeError, ValueError) as exc:
        raise InputError(f"periods={periods!r}: expected a sequence of (first year, last year) pairs") from exc
    if len(ps) < 2:
        raise InputError(f"periods={periods!r}: need at least two periods (the outcome is the next period's wealth)")
    for (a, b), (c, _) in zip(ps, ps[1:] + ((10 ** 6, 0),)):
        if not a <= b < c:
            raise InputError(f"periods={periods!r}: periods must be increasing and not overlap, each first <= last")
    return ps


def period_of(years, periods=PERIODS) -> np.ndarray:
    """Index of the period holding each year (-1 when none does)."""
    ps = _check_periods(periods)
    y = np.asarray(years, dtype=float)
    out = np.full(y.shape, -1, dtype=int)
    for t, (a, b) in enumerate(ps):
        out[(y >= a) & (y <= b)] = t
    return out


def build_panel(neighbourhoods: pd.DataFrame, projects: pd.DataFrame, periods=PERIODS, *,
                trials: Sequence[tuple[str, int]] | None = None, carry_next: Sequence[str] = ()) -> pd.DataFrame:
    """The neighbourhood x period panel with one treatment column per funder x sector.

    Parameters
    ----------
    neighbourhoods : DataFrame
        Long panel, one row per neighbourhood and period, with columns ``neighbourhood`` (id),
        ``adm2`` (id, matching the projects' ADM2 ids), ``period`` (any year inside the period,
        e.g. its first year) and ``wealth`` (the wealth index, 0-100). Every other column (country,
        covariates, predicted wealth) is carried along unchanged.
    projects : DataFrame
        As returned by :func:`read_aiddata` (columns ``funder, sector, start_year, adm2``).
    periods : sequence of (first year, last year)
        Default: 2002-04, 2005-07, 2008-10, 2011-13.
    trials : sequence of (funder, sector), optional
        The funder x sector combinations to build columns for; default every one in ``projects``.
    carry_next : sequence of str
        Other columns whose next-period value is attached as ``<column>_next`` (e.g. the
        predicted wealth ``wealth_pred`` -> ``wealth_pred_next``, the predicted outcome).

    Returns
    -------
    DataFrame
        One row per (neighbourhood, period), sorted by neighbourhood then period, with

        - ``t`` (0, 1, ...), ``period`` ('2002-2004', ...), ``period_start``;
        - ``wealth`` (period t) and ``outcome`` = wealth of period t + 1 (NaN in the last period
          or when the neighbourhood is not observed at t + 1);
        - per trial (funder, sector), a column :func:`trial_column` (e.g. ``China_330``) holding
          1 when a project of that funder and sector with a kept location in the row's ADM2 starts
          during period t, else 0.

        ``.attrs`` holds ``trials`` (list of (column, funder, sector)), ``periods`` and
        ``projects_outside_periods`` (project-sector rows whose start year lies in no period).

    Raises
    ------
    ColumnError
        A required column is missing.
    InputError
        A period year outside every period, a neighbourhood in two ADM2s, a (neighbourhood,
        period) given twice, wealth outside 0-100.
    """
    ps = _check_periods(periods)
    if not isinstance(neighbourhoods, pd.DataFrame) or not isinstance(projects, pd.DataFrame):
        raise InputError("build_panel: neighbourhoods and projects must be pandas DataFrames")
    for col in ("neighbourhood", "adm2", "period", "wealth"):
        if col not in neighbourhoods.columns:
            raise ColumnError(f"neighbourhoods: no {col!r} column; the table has "
                              f"{sorted(map(str, neighbourhoods.columns))}."
                              " Expected a long panel: neighbourhood, adm2, period (a year in the period), wealth")
    for col in ("funder", "sector", "start_year", "adm2"):
        if col not in projects.columns:
            raise ColumnError(f"projects: no {col!r} column; pass the table returned by read_aiddata")
    nb = neighbourhoods.copy()
    nb["adm2"] = nb["adm2"].astype(str).str.strip()
    year = pd.to_numeric(nb["period"], errors="coerce")
    t = period_of(year.fillna(-1).to_numpy(), ps)
    bad = t < 0
    if bad.any():
        raise InputError(f"neighbourhoods: column 'period' holds {_rows(nb.loc[bad, 'period'].unique())} in rows "
                         f"{_rows(nb.index[bad])}, outside every period {period_labels(ps)}; give a year inside "
                         "the period (e.g. its first year)")
    nb["t"] = t
    dup = nb.duplicated(["neighbourhood", "t"], keep=False)
    if dup.any():
        raise InputError(f"neighbourhoods: (neighbourhood, period) repeated in rows {_rows(nb.index[dup])}; give one "
                         "wealth value per neighbourhood and period")
    n_adm = nb.groupby("neighbourhood")["adm2"].nunique()
    if (n_adm > 1).any():
        raise InputError(f"neighbourhoods: neighbourhoods {_rows(n_adm.index[n_adm > 1])} lie in several ADM2s; "
                         "each neighbourhood keeps one ADM2 over the panel")
    wealth = pd.to_numeric(nb["wealth"], errors="coerce")
    bad = wealth.notna() & ((wealth < 0) | (wealth > 100))
    if bad.any() or (nb["wealth"].notna() & wealth.isna()).any():
        raise InputError(f"neighbourhoods: column 'wealth' must be a wealth index in [0, 100]; rows "
                         f"{_rows(nb.index[bad | (nb['wealth'].notna() & wealth.isna())])} are not")
    nb["wealth"] = wealth.astype(float)
    labels = period_labels(ps)
    nb["period"] = [labels[k] for k in nb["t"]]
    nb["period_start"] = [ps[k][0] for k in nb["t"]]
    nb = nb.sort_values(["neighbourhood", "t"], kind="stable").reset_index(drop=True)
    carry_next = list(carry_next)
    missing = [c for c in carry_next if c not in nb.columns]
    if missing:
        raise ColumnError(f"carry_next: {missing} are not columns of neighbourhoods")
    nxt = (nb[["neighbourhood", "t", "wealth", *carry_next]].assign(t=lambda d: d["t"] - 1)
           .rename(columns={"wealth": "outcome", **{c: f"{c}_next" for c in carry_next}}))
    nb = nb.merge(nxt, on=["neighbourhood", "t"], how="left")

    pr = projects.copy()
    pr["adm2"] = pr["adm2"].astype(str).str.strip()
    pr["t"] = period_of(pr["start_year"].to_numpy(), ps)
    outside = int((pr["t"] < 0).sum())
    pr = pr[pr["t"] >= 0]
    if trials is None:
        trials = sorted({(f, int(s)) for f, s in zip(projects["funder"], projects["sector"])})
    cols = []
    for f, s in trials:
        name = trial_column(f, s)
        hits = pr.loc[(pr["funder"] == f) & (pr["sector"] == int(s)), ["adm2", "t"]].drop_duplicates()
        key = pd.MultiIndex.from_frame(hits)
        nb[name] = pd.MultiIndex.from_frame(nb[["adm2", "t"]]).isin(key).astype(int)
        cols.append((name, f, int(s)))
    nb.attrs.update(trials=cols, periods=[list(p) for p in ps], projects_outside_periods=outside)
    return nb


def trial_design(panel: pd.DataFrame, column: str, *, exclude_prior: bool = True) -> pd.Series:
    """Trial membership of each panel row for one funder x sector: 1 treated, 0 control, NaN out.

    A row is in the trial when its outcome (next period's wealth) is observed. With
    ``exclude_prior`` (default) a row whose ADM2 had a project of the same funder and sector in an
    earlier period, and none starting in this one, is left out: its outcome may still carry the
    earlier project's effect, so it is neither a clean control nor newly treated.
    """
    if column not in panel.columns:
        raise ColumnError(f"panel: no trial column {column!r}; build it with build_panel")
    w = panel[column].astype(float)
    order = panel.sort_values(["neighbourhood", "t"], kind="stable").index
    ws = w.loc[order]
    prior = (ws.groupby(panel.loc[order, "neighbourhood"].to_numpy()).cumsum() - ws).reindex(panel.index)
    out = w.where(panel["outcome"].notna())
    if exclude_prior:
        out = out.where(~((prior > 0) & (w == 0)))
    return out
