"""Checks for arrays and scalars at the boundary of eocausal's public functions.

In the spirit of scikit-learn's ``sklearn.utils.validation``: each check takes the value and the
name of the argument it came from, returns the value in the form the caller computes with (a
float array, integer codes, an int), and otherwise raises a typed error from
:mod:`eocausal.errors` whose message names the argument, the problem, what was given and what to
do. Layer 1: imports only numpy, pandas and :mod:`eocausal.errors`.
"""

from __future__ import annotations

import numbers
from typing import Iterable

import numpy as np
import pandas as pd

from eocausal.errors import InputError

__all__ = [
    "align_pandas",
    "check_choice",
    "check_clusters",
    "check_fold_ids",
    "check_matrix",
    "check_positive_int",
    "check_propensity",
    "check_treatment",
    "check_vector",
]


def _rows(mask: np.ndarray, limit: int = 8) -> str:
    """'rows [3, 17] (2 in all)' for the True entries of a boolean mask."""
    idx = np.flatnonzero(mask)
    return f"rows {idx[:limit].tolist()} ({len(idx)} in all)"


def check_vector(a, name: str, n: int | None = None, finite: bool = True) -> np.ndarray:
    """A 1-d float array of ``n`` values (any length when ``n`` is None); a column (n, 1) is a vector.

    Raises
    ------
    InputError
        Not numeric, not one-dimensional, the wrong length, or (with ``finite``) NaN or infinite
        values.
    """
    return _as_array(a, name, 1, n, finite)


def check_treatment(w, name: str = "treatment", n: int | None = None) -> np.ndarray:
    """A float array of 0s and 1s (a binary treatment)."""
    arr = check_vector(w, name, n)
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        raise InputError(f"{name}: must hold only 0 and 1, got values {np.unique(arr[bad])[:6].tolist()} in "
                         f"{_rows(bad)}; recode the treatment column as 0 (control) / 1 (treated)")
    return arr


def check_propensity(e, name: str = "propensity", n: int | None = None, open_interval: bool = True) -> np.ndarray:
    """A float array of probabilities: in (0, 1) with ``open_interval``, else in [0, 1]."""
    arr = check_vector(e, name, n)
    bad = ~((arr > 0) & (arr < 1)) if open_interval else ~((arr >= 0) & (arr <= 1))
    if bad.any():
        interval = "strictly inside (0, 1)" if open_interval else "in [0, 1]"
        fix = ("clip them (e.g. np.clip(e, 1e-3, 1 - 1e-3)) or trim those units first" if open_interval
               else "check the propensity model's output")
        raise InputError(f"{name}: values must lie {interval}, got range [{arr.min():.3g}, {arr.max():.3g}] "
                         f"({_rows(bad)} outside); {fix}")
    return arr


def check_matrix(X, name: str, n: int | None = None, finite: bool = True) -> np.ndarray:
    """A 2-d float array with ``n`` rows (any number when ``n`` is None)."""
    return _as_array(X, name, 2, n, finite)


def _as_array(a, name: str, ndim: int, n: int | None, finite: bool) -> np.ndarray:
    """A float array of ``ndim`` dimensions and ``n`` rows; a single column counts as a vector."""
    what = "a numeric vector" if ndim == 1 else "a numeric matrix"
    try:
        arr = np.asarray(a, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected {what}, got values that are not numeric ({exc}); "
                         "encode them as numbers first") from exc
    if ndim == 1 and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    want = ("(n" if n is None else f"({n}") + (",)" if ndim == 1 else ", p)")
    if arr.ndim != ndim:
        fix = "pass one value per unit" if ndim == 1 else "pass one row per unit (reshape a single column with x[:, None])"
        raise InputError(f"{name}: expected a {ndim}-d array of shape {want}, got shape {arr.shape}; {fix}")
    if n is not None and arr.shape[0] != n:
        raise InputError(f"{name}: expected shape {want}, one {'value' if ndim == 1 else 'row'} per unit, got "
                         f"shape {arr.shape}")
    if finite and not np.isfinite(arr).all():
        bad = ~np.isfinite(arr) if ndim == 1 else ~np.isfinite(arr).all(axis=1)
        raise InputError(f"{name}: NaN or infinite values in {_rows(bad)}; drop or impute those units first")
    return arr


def check_clusters(clusters, n: int, name: str = "clusters") -> np.ndarray | None:
    """Integer codes 0..G-1 of cluster labels (None stays None).

    Labels may be of any hashable kind (numbers, strings); missing labels (NaN, None, pd.NA) are
    refused, because a unit without a cluster cannot be kept with its cluster in folds or SEs.
    """
    if clusters is None:
        return None
    arr = np.asarray(clusters)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{name}: expected shape ({n},), one cluster label per unit, got shape {arr.shape}")
    missing = np.asarray(pd.isna(arr), dtype=bool)
    if missing.any():
        raise InputError(f"{name}: missing cluster labels in {_rows(missing)}; give every unit a cluster "
                         "(e.g. its own id) or drop those units")
    try:
        codes = np.unique(arr, return_inverse=True)[1]
    except TypeError:  # mixed label types that do not sort: code them in order of appearance
        codes = pd.factorize(pd.Series(arr, dtype=object))[0]
    return np.asarray(codes, dtype=np.intp).reshape(-1)


def check_fold_ids(fold_ids, n: int, name: str = "fold_ids") -> np.ndarray:
    """Fold labels of ``n`` units naming at least 2 folds (returned as given, as an array)."""
    arr = np.asarray(fold_ids)
    if arr.shape != (n,):
        raise InputError(f"{name}: expected shape ({n},), one fold label per unit, got {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{name}: NaN or infinite labels in {_rows(~np.isfinite(arr))}; assign every unit a fold")
    k = len(np.unique(arr))
    if k < 2:
        raise InputError(f"{name}: the labels name {k} fold; cross-fitting needs at least 2")
    return arr


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """An integer of at least ``minimum`` (bools, floats such as 2.5 or 2.0 and strings are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}={value!r}: expected an integer >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise InputError(f"{name}={value}: must be at least {minimum}")
    return int(value)


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    """One of ``choices`` (strings)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name}={value!r}: use one of {list(choices)}")
    return value


def align_pandas(values: dict, what: str = "the inputs") -> dict:
    """Per-unit inputs given together, aligned by one rule: pandas objects on their index, arrays by position.

    ``values`` maps argument names to values (None is passed through). When two or more are pandas
    Series/DataFrames, each is reordered to the index of the first; their indexes must hold the same
    labels (any order). A pandas object whose index is not a default RangeIndex, given together with
    a plain array, is refused: its order would be trusted silently. Returns the same mapping with the
    pandas objects replaced by aligned numpy arrays.
    """
    pandas = {k: v for k, v in values.items() if isinstance(v, (pd.Series, pd.DataFrame))}
    plain = [k for k, v in values.items() if v is not None and k not in pandas]
    out = dict(values)
    if not pandas:
        return out
    first_name, first = next(iter(pandas.items()))
    ref = first.index
    if not ref.is_unique:
        raise InputError(f"{first_name}: duplicate labels in its index, e.g. {ref[ref.duplicated()][:5].tolist()}")
    if plain and not all(isinstance(v.index, pd.RangeIndex) for v in pandas.values()):
        raise InputError(f"{', '.join(pandas)} and {', '.join(plain)}: pandas inputs with an index and plain arrays "
                         f"given together in {what}; pass all of them as pandas objects indexed by unit (they are "
                         "aligned on the index) or all as arrays in one order (matched by position)")
    for name, v in pandas.items():
        idx = v.index
        if len(pandas) > 1 and (len(idx) != len(ref) or not idx.isin(ref).all() or not ref.isin(idx).all()):
            raise InputError(f"{name}: its index holds other labels than {first_name}'s (e.g. "
                             f"{idx.difference(ref)[:5].tolist() or ref.difference(idx)[:5].tolist()}); "
                             "pandas inputs are aligned on their index and must hold the same units")
        out[name] = (v.loc[ref] if len(pandas) > 1 else v).to_numpy()
    return out
