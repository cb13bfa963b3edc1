"""EffectTable: the one result object every estimator's rows end up in.

``tidy()`` is the single source; ``summary()``, ``to_markdown()``, ``to_latex()``,
``to_html()`` and ``_repr_html_`` are views of it. Nothing rendered carries a timestamp, so the
same seed gives byte-identical tables.
"""

from __future__ import annotations

import html
import math
import re
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from eocausal._types import TIDY_COLUMNS, EffectRow, PropensityFit
from eocausal.errors import ColumnError, InputError

# EffectRow is defined in eocausal._types (layer 1) because the estimators build rows too; users
# import it from here.
__all__ = ["Comparison", "EffectRow", "EffectTable", "Summary", "compare", "concat"]

_METHOD_LABEL = {
    "dim": "Difference in means",
    "ipw-ht": "IPW (Horvitz-Thompson)",
    "ipw-hajek": "IPW (Hajek)",
    "aipw": "AIPW (DML)",
    "fe": "Two-way fixed effects",
}
#: the fields that tell rows apart, in the order labels name them (compare(), forest_plot())
_KEY_FIELDS = ("trial", "estimand", "method", "adjustment", "outcome_type")


def _label_part(name: str, value) -> str:
    if name == "method":
        return _METHOD_LABEL.get(value, str(value))
    if name == "adjustment" and value == "none":
        return "no adjustment"
    if name == "outcome_type":
        return f"{value} outcome"
    return str(value)


def _row_labels(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> list[str]:
    """Readable, unique labels of a tidy frame's rows (compare()'s columns, forest_plot()'s lines).

    ``columns`` None: the fields of :data:`_KEY_FIELDS` present in ``frame`` whose values differ
    between rows (method and adjustment when none differs), in that order; a method is named as
    in the estimates table ("IPW (Hajek)"). Labels that would repeat get " (1)", " (2)", ... in
    order of appearance.
    """
    if columns is None:
        present = [c for c in _KEY_FIELDS if c in frame.columns]
        columns = [c for c in present if frame[c].dropna().astype(str).nunique() > 1] or \
            [c for c in ("method", "adjustment") if c in frame.columns]
    labels = [", ".join(_label_part(c, v) for c, v in zip(columns, vals) if not _is_empty(v) and str(v) != "")
              for vals in zip(*(frame[c].tolist() for c in columns))] if columns else [""] * len(frame)
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        if counts[lab] > 1 or not lab:
            seen[lab] = seen.get(lab, 0) + 1
            lab = f"{lab} ({seen[lab]})" if lab else f"({seen[lab]})"
        out.append(lab)
    return out


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}"}
_LATEX_SPECIAL = re.compile("|".join(re.escape(k) for k in _LATEX_ESCAPES))


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _field_kinds() -> dict[str, tuple[type, bool]]:
    """EffectRow field -> (its base type, whether None is allowed), from the annotations."""
    hints = typing.get_type_hints(EffectRow)
    out = {}
    for f in fields(EffectRow):
        args = typing.get_args(hints[f.name])
        base = next((a for a in args if a is not type(None)), hints[f.name]) if args else hints[f.name]
        out[f.name] = (base, type(None) in args)
    return out


def _is_empty(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _cell(v, base: type, optional: bool, *, column: str, row: int):
    """One tidy cell as the Python value of its EffectRow field (see EffectTable.from_tidy)."""
    if _is_empty(v):
        if optional:
            return None
        if base is float:
            return math.nan
        if base is str:
            return ""
        raise InputError(f"tidy: column {column!r}, row {row}: empty, but {column} is a {base.__name__} "
                         "that cannot be missing; pass the frame EffectTable.tidy() wrote")
    try:
        if base is bool:
            if isinstance(v, str):
                return {"True": True, "False": False}[v]
            return bool(v)
        if base is int:
            if isinstance(v, str):
                return int(v)
            if float(v) != int(v):
                raise ValueError(v)
            return int(v)
        if base is float:
            return float(v)
        return base(v)
    except (ValueError, TypeError, KeyError, OverflowError):
        raise InputError(f"tidy: column {column!r}, row {row}: {v!r} is not a {base.__name__}; pass the "
                         "frame EffectTable.tidy() wrote") from None


@dataclass(frozen=True)
class EffectTable:
    """Estimated effects, one row per (trial, estimand, method, adjustment).

    Attributes
    ----------
    rows : tuple of EffectRow
        The estimates.
    notes : tuple of str
        Numbered notes for ``summary()`` (SE type, clustering, clipping, ...).
    design : mapping
        Header facts (study name, N, clusters, estimand).
    propensities : mapping of adjustment -> PropensityFit
        Out-of-fold propensity scores behind the weighting rows (for overlap diagnostics).
    balance : mapping of adjustment -> DataFrame
        Balance tables (standardised mean differences before and after weighting) for the
        covariates, the embeddings' leading principal components and the coordinates.
    """

    rows: tuple[EffectRow, ...]
    notes: tuple[str, ...] = ()
    design: Mapping[str, object] = field(default_factory=dict)
    propensities: Mapping[str, PropensityFit] = field(default_factory=dict)
    balance: Mapping[str, pd.DataFrame] = field(default_factory=dict)

    # ------------------------------------------------------------------ the single source
    def tidy(self) -> pd.DataFrame:
        """One row per estimate with the columns of :data:`eocausal._types.TIDY_COLUMNS`."""
        return pd.DataFrame([r.as_dict() for r in self.rows], columns=list(TIDY_COLUMNS))

    @classmethod
    def from_tidy(cls, tidy: pd.DataFrame, *, notes: Sequence[str] = (),
                  design: Mapping[str, object] | None = None,
                  propensities: Mapping[str, PropensityFit] | None = None,
                  balance: Mapping[str, pd.DataFrame] | None = None) -> "EffectTable":
        """Rebuild a table from :meth:`tidy` output (e.g. a saved effects.csv).

        Each cell is converted to the type of its :class:`~eocausal._types.EffectRow` field:
        an empty cell (None or NaN) is None in an optional field, NaN in a float field and ""
        in a text field; an integer field must hold a whole number. Columns of fields with a
        default may be absent. The rows' notes, design, propensity fits and balance tables are
        not in the tidy frame: pass them (``eocausal.report.outputs.read_outputs`` reads all of
        them back from an output folder).

        Raises
        ------
        ColumnError
            A column without a default is missing, or a column is not an EffectRow field.
        InputError
            A cell cannot be converted to its field's type.
        """
        names = [f.name for f in fields(EffectRow)]
        required = [f.name for f in fields(EffectRow) if f.default is MISSING and f.default_factory is MISSING]
        missing = [c for c in required if c not in tidy.columns]
        unknown = [str(c) for c in tidy.columns if c not in names]
        if missing or unknown:
            raise ColumnError(
                f"tidy: {'lacks columns ' + str(missing) if missing else ''}"
                f"{'; ' if missing and unknown else ''}"
                f"{'has columns that are not EffectRow fields ' + str(unknown) if unknown else ''}. "
                f"Pass a frame with the columns of EffectTable.tidy(): {list(TIDY_COLUMNS)}")
        kinds = _field_kinds()
        rows = []
        for i, rec in enumerate(tidy.to_dict("records")):
            rows.append(EffectRow(**{c: _cell(v, *kinds[c], column=c, row=i) for c, v in rec.items()}))
        return cls(rows=tuple(rows), notes=tuple(notes), design=dict(design or {}),
                   propensities=dict(propensities or {}), balance=dict(balance or {}))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def row(self, *, method: str, adjustment: str | None = None, trial: str | None = None,
            estimand: str | None = None) -> EffectRow:
        """The unique row matching the given fields.

        Raises :class:`~eocausal.errors.ColumnError` (a KeyError) if none or several match.
        """
        hits = [r for r in self.rows if r.method == method
                and (adjustment is None or r.adjustment == adjustment)
                and (trial is None or r.trial == trial)
                and (estimand is None or r.estimand == estimand)]
        if len(hits) != 1:
            raise ColumnError(f"{len(hits)} rows match method={method!r}, adjustment={adjustment!r}, "
                              f"trial={trial!r}, estimand={estimand!r}; name the fields that pick one row "
                              "(the rows are listed by tidy())")
        return hits[0]

    # ------------------------------------------------------------------ accessors (pyfixest's names)
    def _keyed(self, columns: list[str]) -> pd.DataFrame:
        t = self.tidy()
        return t.set_index(list(_KEY_FIELDS))[columns]

    def coef(self) -> pd.Series:
        """The estimates, from :meth:`tidy`, as a Series named ``estimate``.

        The index is a MultiIndex over (trial, estimand, method, adjustment, outcome_type), the
        fields that identify a row; method and adjustment are the codes of ``tidy()``
        ('ipw-hajek', 'tabular+image'). Pick rows with pandas, e.g.
        ``t.coef().xs("aipw", level="method")`` or
        ``t.coef().loc[("all", "ATE", "aipw", "tabular+image", "observed")]``.
        :meth:`se` and :meth:`confint` share this index.
        """
        return self._keyed(["estimate"])["estimate"]

    def se(self) -> pd.Series:
        """The standard errors, from :meth:`tidy`, as a Series named ``std_error`` (index as :meth:`coef`)."""
        return self._keyed(["std_error"])["std_error"]

    def confint(self) -> pd.DataFrame:
        """The confidence intervals, from :meth:`tidy`: columns ``ci_low`` and ``ci_high`` (index as :meth:`coef`).

        These are the intervals the rows were estimated with (their level is the ``alpha`` of
        the call that produced them, and their kind follows the row's ``se_type``, e.g.
        bootstrap percentiles); they are not recomputed. For another level, estimate again with
        that ``alpha``.
        """
        return self._keyed(["ci_low", "ci_high"])

    # ------------------------------------------------------------------ views
    def _display(self) -> pd.DataFrame:
        t = self.tidy()
        multi_trial = t["trial"].nunique() > 1
        out = pd.DataFrame({
            **({"Trial": t["trial"]} if multi_trial else {}),
            "Estimand": t["estimand"],
            "Method": [_METHOD_LABEL.get(m, m) for m in t["method"]],
            "Adjustment": t["adjustment"],
            **({"Outcome": t["outcome_type"]} if t["outcome_type"].nunique() > 1 else {}),
            "Estimate": [_fmt(v) for v in t["estimate"]],
            "Std. error": [_fmt(v) for v in t["std_error"]],
            "95% CI": [f"[{_fmt(a)}, {_fmt(b)}]" if not math.isnan(a) else "" for a, b in zip(t["ci_low"], t["ci_high"])],
            "p": [_fmt_p(p) for p in t["p_value"]],
            "N": t["n"].astype(int).astype(str),
            "Treated": t["n_treated"].astype(int).astype(str),
        })
        if t["note"].astype(bool).any():
            out["Note"] = t["note"]
        return out

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table followed by the numbered notes."""
        d = self._display()
        head = "| " + " | ".join(d.columns) + " |"
        align = "|" + "|".join("---:" if c in {"Estimate", "Std. error", "p", "N", "Treated"} else "---"
                               for c in d.columns) + "|"
        body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in d.itertuples(index=False)]
        notes = [f"[{i}] {n}" for i, n in enumerate(self.notes, 1)]
        return "\n".join([head, align, *body] + ([""] + notes if notes else [])) + "\n"

    def to_latex(self, caption: str | None = None, label: str | None = None) -> str:
        """A booktabs LaTeX table (needs ``\\usepackage{booktabs}``)."""
        d = self._display()

        def esc(s: str) -> str:
            return _LATEX_SPECIAL.sub(lambda m: _LATEX_ESCAPES[m.group()], s)

        spec = "".join("r" if c in {"Estimate", "Std. error", "p", "N", "Treated"} else "l" for c in d.columns)
        lines = [r"\begin{table}[htbp]", r"\centering"]
        if caption:
            lines.append(rf"\caption{{{esc(caption)}}}")
        if label:
            lines.append(rf"\label{{{esc(label)}}}")
        lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                  " & ".join(esc(c) for c in d.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(esc(str(v)) for v in row) + r" \\" for row in d.itertuples(index=False)]
        lines.append(r"\bottomrule")
        lines.append(r"\end{tabular}")
        if self.notes:
            lines.append(r"\par\smallskip\footnotesize")
            lines += [rf"[{i}] {esc(n)}\\" for i, n in enumerate(self.notes, 1)]
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """An HTML table (strings escaped) with the notes below it."""
        d = self._display()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in d.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                       for row in d.itertuples(index=False))
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f'<table class="effects"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
                + (f'<ol class="notes">{notes}</ol>' if notes else ""))

    def _repr_html_(self) -> str:
        return self.to_html()

    def sensitivity(self) -> pd.DataFrame:
        """E-values of each estimate and of its CI limit nearest the null (VanderWeele and Ding 2017).

        Differences in means are converted to risk ratios with RR = exp(0.91 d), d = estimate /
        SD(outcome) (VanderWeele and Ding's approximation for continuous outcomes).
        """
        from eocausal.diagnostics.sensitivity import e_value

        sd = self.design.get("outcome_sd")
        out = []
        for r in self.rows:
            if math.isnan(r.estimate) or not sd:
                ev_point = ev_ci = math.nan
            else:
                ev = e_value(r.estimate, r.ci_low, r.ci_high, sd=sd)
                ev_point, ev_ci = ev.point, ev.ci
            out.append({"trial": r.trial, "estimand": r.estimand, "method": r.method,
                        "adjustment": r.adjustment, "estimate": r.estimate,
                        "e_value": ev_point, "e_value_ci": ev_ci})
        return pd.DataFrame(out)

    def summary(self) -> "Summary":
        """An R-style summary: header block, the table, numbered notes."""
        return Summary(self)

    def __repr__(self) -> str:
        return f"EffectTable({len(self.rows)} rows)\n" + str(self.summary())


@dataclass(frozen=True)
class Summary:
    """Text rendering of an EffectTable (``print(table.summary())``)."""

    table: EffectTable

    def __str__(self) -> str:
        t = self.table
        d = t._display()
        header = [("Study", t.design.get("study", "")),
                  ("Units", t.design.get("n", "")),
                  ("Treated", t.design.get("n_treated", "")),
                  ("Clusters", t.design.get("n_clusters", "") or "none"),
                  ("Outcome", t.design.get("outcome", "")),
                  ("Propensity", t.design.get("propensity", ""))]
        header = [(k, v) for k, v in header if v not in ("", None)]
        width = max((len(k) for k, _ in header), default=0)
        lines = ["Causal effect estimates", "=" * 23]
        lines += [f"{k + ':':<{width + 1}} {v}" for k, v in header]
        lines.append("")
        widths = [max([len(str(c)), *(len(str(v)) for v in d[c])]) for c in d.columns]
        right = {"Estimate", "Std. error", "p", "N", "Treated"}

        def fmt_row(vals):
            return "  ".join(str(v).rjust(w) if c in right else str(v).ljust(w)
                             for v, w, c in zip(vals, widths, d.columns)).rstrip()

        lines.append(fmt_row(d.columns))
        lines.append("-" * len(fmt_row(d.columns)))
        lines += [fmt_row(r) for r in d.itertuples(index=False)]
        if t.notes:
            lines.append("")
            lines += [f"[{i}] {n}" for i, n in enumerate(t.notes, 1)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def concat(tables: Sequence[EffectTable]) -> EffectTable:
    """Stack several tables (rows in order; notes merged without repeats)."""
    rows = tuple(r for t in tables for r in t.rows)
    notes = tuple(dict.fromkeys(n for t in tables for n in t.notes))
    design = dict(tables[0].design) if tables else {}
    props = {k: v for t in tables for k, v in t.propensities.items()}
    bal = {k: v for t in tables for k, v in t.balance.items()}
    return EffectTable(rows=rows, notes=notes, design=design, propensities=props, balance=bal)


@dataclass(frozen=True)
class Comparison:
    """Models side by side, as R's modelsummary/etable lay them out: one column per estimate.

    Build it with :func:`compare`. Rows: estimate, standard error (in parentheses), 95% CI,
    then the facts a reader needs to judge each column (method, adjustment, estimand, N,
    treated, clusters, effective sample sizes, clipping and trimming, outcome type, SE type).
    ``print(c)``, ``repr(c)`` (the REPL) and ``str(c)`` show the text table; a notebook shows
    the HTML table.
    """

    rows: tuple[EffectRow, ...]
    labels: tuple[str, ...]

    def to_frame(self) -> pd.DataFrame:
        def cell(r: EffectRow, key: str) -> str:
            if key == "Estimate":
                return _fmt(r.estimate)
            if key == "Std. error":
                return f"({_fmt(r.std_error)})" if not math.isnan(r.std_error) else ""
            if key == "95% CI":
                return f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if not math.isnan(r.ci_low) else ""
            if key == "Method":
                return _METHOD_LABEL.get(r.method, r.method)
            if key == "ESS (treated / control)":
                return "" if math.isnan(r.ess_treated) else f"{r.ess_treated:.0f} / {r.ess_control:.0f}"
            if key == "Clipping / trimming":
                if r.clip is None:
                    return ""
                return f"clip {r.clip:g} ({r.n_clipped} units); trimmed {r.n_trimmed}"
            return str({"Adjustment": r.adjustment, "Estimand": r.estimand, "N": r.n, "Treated": r.n_treated,
                        "Clusters": r.n_clusters or "", "Outcome": r.outcome_type, "SE": r.se_type,
                        "Trial": r.trial}[key])

        keys = ["Estimate", "Std. error", "95% CI", "Trial", "Method", "Adjustment", "Estimand", "N",
                "Treated", "Clusters", "ESS (treated / control)", "Clipping / trimming", "Outcome", "SE"]
        if len({r.trial for r in self.rows}) == 1:
            keys.remove("Trial")
        data = {lab: [cell(r, k) for k in keys] for lab, r in zip(self.labels, self.rows)}
        return pd.DataFrame(data, index=pd.Index(keys, name=""))

    def to_markdown(self) -> str:
        f = self.to_frame()
        head = "| | " + " | ".join(f.columns) + " |"
        align = "|---|" + "|".join("---:" for _ in f.columns) + "|"
        body = ["| " + k + " | " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
                for k, row in zip(f.index, f.itertuples(index=False))]
        return "\n".join([head, align, *body]) + "\n"

    def to_latex(self) -> str:
        f = self.to_frame()

        def esc(s: str) -> str:
            return _LATEX_SPECIAL.sub(lambda m: _LATEX_ESCAPES[m.group()], str(s))

        lines = [r"\begin{tabular}{l" + "r" * len(f.columns) + "}", r"\toprule",
                 " & " + " & ".join(esc(c) for c in f.columns) + r" \\", r"\midrule"]
        for i, (k, row) in enumerate(zip(f.index, f.itertuples(index=False))):
            if i == 3:
                lines.append(r"\midrule")
            lines.append(esc(k) + " & " + " & ".join(esc(v) for v in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        f = self.to_frame()
        head = "<th></th>" + "".join(f"<th>{html.escape(c)}</th>" for c in f.columns)
        body = "".join("<tr><th>" + html.escape(k) + "</th>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
                       + "</tr>" for k, row in zip(f.index, f.itertuples(index=False)))
        return f'<table class="compare"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        return self.to_frame().to_string()

    def __repr__(self) -> str:
        return str(self)


def compare(models, labels: Sequence[str] | None = None) -> Comparison:
    """Lay estimates side by side (tabular vs image vs both; IPW vs AIPW vs FE).

    Parameters
    ----------
    models : EffectTable, or a sequence of EffectTable / EffectRow
        Every row of every table becomes one column.
    labels : sequence of str, optional
        Column labels, one per estimate. Default: what tells the columns apart, from the fields
        trial, estimand, method, adjustment and outcome type, those whose values differ between
        the columns, in that order (e.g. "tabular", "tabular+image" when only the adjustment
        differs; "Difference in means, no adjustment", "AIPW (DML), tabular" when the method
        differs too); labels that would repeat are numbered ("... (1)", "... (2)").

    Raises
    ------
    InputError
        No estimates, a number of labels other than the number of estimates, or a label
        given twice.
    """
    rows: list[EffectRow] = []
    for m in ([models] if isinstance(models, (EffectTable, EffectRow)) else models):
        rows += list(m.rows) if isinstance(m, EffectTable) else [m]
    if not rows:
        raise InputError("models: no estimates given; pass at least one EffectTable or EffectRow")
    if labels is None:
        labs = tuple(_row_labels(pd.DataFrame([r.as_dict() for r in rows], columns=list(TIDY_COLUMNS))))
    else:
        labs = tuple(str(lab) for lab in labels)
    if len(labs) != len(rows):
        raise InputError(f"labels: {len(labs)} labels for {len(rows)} estimates; pass one label per estimate")
    repeated = sorted({lab for lab in labs if labs.count(lab) > 1})
    if repeated:
        raise InputError(f"labels: {repeated} given more than once; each column needs its own label (or pass "
                         "labels=None for labels from what tells the estimates apart)")
    return Comparison(rows=tuple(rows), labels=labs)
