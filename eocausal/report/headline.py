"""The headline of a report: the preferred estimate, what it means, how the imagery moved it, the checks.

Everything here is read from an :class:`~eocausal.results.EffectTable` as it was estimated: its
rows, its design facts, its balance tables and its stored propensities; nothing is estimated again.
Which row is the headline is one rule, :func:`preferred_row`, that a study can override with
``[report] preferred``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eocausal._types import ADJUSTMENTS, METHODS, EffectRow
from eocausal.errors import InputError
from eocausal.results import EffectTable, _fmt, _label_part

__all__ = ["Check", "Headline", "headline", "parse_preferred", "preferred_row"]

#: how much an adjustment set adjusts for, most first: the default rule prefers the first it finds
ADJUSTMENT_RANK = ("tabular+image", "image", "tabular", "none")
#: the methods the default rule tries, in order: AIPW (doubly robust), then Hajek IPW; when a table has
#: neither, Horvitz-Thompson IPW, the difference in means, then any other method in table order
PREFERRED_METHODS = ("aipw", "ipw-hajek", "ipw-ht", "dim")
#: the overlap line warns when more than OVERLAP_MAX_SHARE of the units have a propensity within
#: OVERLAP_BOUND of 0 or 1: the defaults of :func:`eocausal.diagnostics.check_overlap`, whose warning
#: estimate() issued on the same propensities
OVERLAP_BOUND, OVERLAP_MAX_SHARE = 0.01, 0.05


def parse_preferred(text: str | None) -> tuple[str | None, str | None]:
    """``(method, adjustment)`` of a ``[report] preferred`` value.

    ``None`` or ``"auto"``: the default rule, ``(None, None)``; ``"aipw"``: that method's most
    adjusted row, ``("aipw", None)``; ``"aipw/tabular+image"``: that row.

    Raises
    ------
    InputError
        The method or the adjustment is not one eocausal estimates.
    """
    if text is None or text.strip() == "auto":
        return None, None
    method, _, adjustment = text.strip().partition("/")
    known = [*METHODS, "fe"]
    if method not in known:
        raise InputError(f"preferred={text!r}: method {method!r} is not one of {known}; write 'METHOD' or "
                         "'METHOD/ADJUSTMENT' (e.g. 'aipw/tabular+image'), or 'auto' for the default rule")
    if adjustment and adjustment not in ADJUSTMENTS:
        raise InputError(f"preferred={text!r}: adjustment {adjustment!r} is not one of {list(ADJUSTMENTS)}; "
                         "write e.g. 'aipw/tabular+image'")
    return method, adjustment or None


def _rank(adjustment: str) -> int:
    return ADJUSTMENT_RANK.index(adjustment) if adjustment in ADJUSTMENT_RANK else len(ADJUSTMENT_RANK)


def _candidates(table: EffectTable) -> list[EffectRow]:
    """The estimable rows of the headline's trial, estimand and outcome: trial 'all' (else the first
    trial), the first estimand, the 'observed' outcome (else the first), in table order."""
    rows = [r for r in table.rows if isinstance(r.estimate, float) and math.isfinite(r.estimate)]
    if not rows:
        return []
    trials = [r.trial for r in rows]
    trial = "all" if "all" in trials else trials[0]
    rows = [r for r in rows if r.trial == trial]
    estimand = rows[0].estimand
    rows = [r for r in rows if r.estimand == estimand]
    outcome = "observed" if any(r.outcome_type == "observed" for r in rows) else rows[0].outcome_type
    return [r for r in rows if r.outcome_type == outcome]


def preferred_row(table: EffectTable, preferred: str | None = None) -> EffectRow | None:
    """The row a report puts in its headline.

    The rule, on the estimable rows of one trial, estimand and outcome (trial "all" when the table
    has it, else the first trial; the first estimand; the observed outcome when there is one):

    - ``preferred`` None or "auto": the most adjusted AIPW row, else the most adjusted Hajek IPW row
      (then Horvitz-Thompson IPW, the difference in means, any other method, in that order);
    - ``preferred`` "METHOD": that method's most adjusted row;
    - ``preferred`` "METHOD/ADJUSTMENT": that row.

    "Most adjusted" orders the adjustment sets tabular+image > image > tabular > none
    (:data:`ADJUSTMENT_RANK`): the set that adjusts for the most confounders the study measured.

    Returns
    -------
    EffectRow, or None when the table has no estimable row.

    Raises
    ------
    InputError
        ``preferred`` names a row the table does not have (the message lists those it has).
    """
    method, adjustment = parse_preferred(preferred)
    rows = _candidates(table)
    if not rows:
        return None
    if method is None:
        order = [*PREFERRED_METHODS, *dict.fromkeys(r.method for r in rows)]
        method = next(m for m in order if any(r.method == m for r in rows))
    pool = [r for r in rows if r.method == method and (adjustment is None or r.adjustment == adjustment)]
    if not pool:
        have = ", ".join(f"{r.method}/{r.adjustment}" for r in rows)
        raise InputError(f"preferred={preferred!r}: the table has no estimable row of that method"
                         f"{' and adjustment' if adjustment else ''}; it has {have}. Name one of these in "
                         "[report] preferred (or use 'auto')")
    return min(pool, key=lambda r: _rank(r.adjustment))


def row_label(row: EffectRow) -> str:
    """"IPW (Hajek), tabular+image": the method as the estimates table names it, and the adjustment."""
    return f"{_label_part('method', row.method)}, {_label_part('adjustment', row.adjustment)}"


@dataclass(frozen=True)
class Check:
    """One line of the headline's checks: ``ok`` False marks a warning."""

    name: str
    ok: bool
    text: str


@dataclass(frozen=True)
class Headline:
    """What the top of a report says.

    Attributes
    ----------
    row : EffectRow
        The preferred row (:func:`preferred_row`).
    label : str
        Its method and adjustment, as the estimates table names them.
    estimate, ci_low, ci_high : str
        Its numbers, formatted as the estimates table formats them.
    meaning : str
        One sentence in the outcome's units.
    imagery : str
        One sentence on how adjusting for the imagery moved the estimate ("" when the table cannot tell).
    checks : tuple of Check
        Overlap, balance and clusters, one line each.
    rule : str
        How the row was chosen.
    """

    row: EffectRow
    label: str
    estimate: str
    ci_low: str
    ci_high: str
    meaning: str
    imagery: str
    checks: tuple[Check, ...]
    rule: str


_ESTIMAND_WORDS = {"ATE": "on average across all units (ATE)", "ATT": "on average among the treated units (ATT)",
                   "ATO": "on average in the overlap population (ATO)"}


def headline(table: EffectTable, preferred: str | None = None) -> Headline | None:
    """The headline of ``table``: its preferred row (:func:`preferred_row`), in words, with its checks.

    None when the table has no estimable row.
    """
    row = preferred_row(table, preferred)
    if row is None:
        return None
    d = table.design
    treatment, outcome = d.get("treatment") or "the treatment", d.get("outcome") or "the outcome"
    est, lo, hi = _fmt(row.estimate), _fmt(row.ci_low), _fmt(row.ci_high)
    meaning = (f"Treatment {treatment} changes {outcome} by {est} {_ESTIMAND_WORDS.get(row.estimand, row.estimand)}"
               + (f", 95% CI {lo} to {hi}" if lo else ""))
    sd = d.get("outcome_sd")
    if sd and math.isfinite(sd) and sd > 0:
        meaning += f": {abs(row.estimate) / sd:.2f} standard deviations of {outcome}"
    meaning += "."
    if lo and row.ci_low <= 0 <= row.ci_high:
        meaning += " The interval includes zero: the data are consistent with no effect."
    rule = ("chosen by [report] preferred = " + repr(preferred) if parse_preferred(preferred) != (None, None)
            else "the most adjusted AIPW estimate, else the most adjusted Hajek IPW estimate (the default rule)")
    return Headline(row=row, label=row_label(row), estimate=est, ci_low=lo, ci_high=hi, meaning=meaning,
                    imagery=_imagery_sentence(table, row), checks=_checks(table, row), rule=rule)


def _imagery_sentence(table: EffectTable, row: EffectRow) -> str:
    """From the same method without the imagery (tabular, else no adjustment; else the difference in
    means) to the preferred row, and the difference in means when that is a third number."""
    rows = _candidates(table)
    same = [r for r in rows if r.method == row.method]
    dim = next((r for r in rows if r.method == "dim"), None)
    if "image" not in row.adjustment:
        with_image = sorted((r for r in same if "image" in r.adjustment), key=lambda x: _rank(x.adjustment))
        if not with_image:  # another method's: the row the default rule would choose, if it adjusts for the imagery
            default = preferred_row(table)
            with_image = [default] if "image" in default.adjustment else []
        if not with_image:
            return "No estimate in this report adjusts for the imagery."
        return (f"This estimate does not adjust for the imagery; adjusting for it ({row_label(with_image[0])}) "
                f"gives {_fmt(with_image[0].estimate)}.")
    base = next((r for a in ("tabular", "none") for r in same if r.adjustment == a), dim)
    if base is None:
        return ""
    naive = f"; the unadjusted difference in means is {_fmt(dim.estimate)}" if dim not in (None, base) else ""
    return (f"Adjusting for the imagery moves the estimate from {_fmt(base.estimate)} ({row_label(base)}) to "
            f"{_fmt(row.estimate)} ({row_label(row)}){naive}.")


def _checks(table: EffectTable, row: EffectRow) -> tuple[Check, ...]:
    return tuple(c for c in (_overlap_check(table, row), _balance_check(table, row), _cluster_check(row))
                 if c is not None)


def _overlap_check(table: EffectTable, row: EffectRow) -> Check:
    fit = table.propensities.get(row.adjustment)
    if row.adjustment == "none" or fit is None:
        return Check("Overlap", True, "not applicable: this estimate does not weight by a propensity score.")
    e, w = np.asarray(fit.e_raw, float), np.asarray(fit.w, float)
    tail = (e < OVERLAP_BOUND) | (e > 1 - OVERLAP_BOUND)
    if row.estimand == "ATT":
        tail = e > 1 - OVERLAP_BOUND
    elif row.estimand == "ATO":
        tail = np.zeros(len(e), bool)
    share = float(tail.mean()) if len(e) else 0.0
    n1, n0 = int(row.n_treated), int(row.n - row.n_treated)
    ess = ""
    if not math.isnan(row.ess_treated):
        ess = (f"; weights leave effective sample sizes of {row.ess_treated:.0f} of {n1} treated and "
               f"{row.ess_control:.0f} of {n0} control units")
    where = f"above {1 - OVERLAP_BOUND:g}" if row.estimand == "ATT" else f"outside [{OVERLAP_BOUND:g}, {1 - OVERLAP_BOUND:g}]"
    text = f"{share:.1%} of units have a propensity {where} (range {e.min():.3g}-{e.max():.3g}){ess}"
    if row.n_trimmed:
        text += f"; {row.n_trimmed} units trimmed, so the estimate is the effect in the overlap population"
    if row.n_clipped:
        text += f"; {row.n_clipped} propensities clipped at {row.clip:g}"
    ok = share <= OVERLAP_MAX_SHARE and not row.n_trimmed
    return Check("Overlap", ok, text + ".")


def _balance_check(table: EffectTable, row: EffectRow) -> Check | None:
    b = table.balance.get(row.adjustment)
    weighted = b is not None and row.adjustment != "none"
    if b is None and table.balance:
        b = next(iter(table.balance.values()))
    if b is None or "smd_before" not in b:
        return None
    threshold = float(b.attrs.get("threshold", 0.1))
    col = "smd_after" if weighted else "smd_before"
    smd = b[col].abs()
    bad = smd[smd > threshold].sort_values(ascending=False)
    when = f"after weighting ({row.adjustment})" if weighted else "without adjustment"
    if bad.empty:
        return Check("Balance", True, f"all {int(smd.notna().sum())} rows have |SMD| <= {threshold:g} {when}.")
    worst = ", ".join(f"{name} {v:.2f}" for name, v in bad.head(3).items())
    return Check("Balance", False, f"{len(bad)} of {int(smd.notna().sum())} rows {'has' if len(bad) == 1 else 'have'} "
                                   f"|SMD| > {threshold:g} "
                                   f"{when}: {worst}.")


def _cluster_check(row: EffectRow) -> Check:
    from eocausal.analysis import FEW_CLUSTERS

    if row.n_clusters is None:
        return Check("Clusters", True, f"standard errors are not clustered ({row.se_type}).")
    g = int(row.n_clusters)
    if g < FEW_CLUSTERS:
        return Check("Clusters", False, f"only {g} clusters: cluster-robust intervals undercover with fewer "
                                        f"than {FEW_CLUSTERS} (use se='wild'); {row.se_type}.")
    return Check("Clusters", True, f"{g} clusters; {row.se_type}.")
