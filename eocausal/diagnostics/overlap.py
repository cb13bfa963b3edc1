"""Overlap of the propensity distributions: a summary, and a warning that says what to do.

:func:`overlap_summary` describes the estimated propensities e_i = P(W = 1 | V_i) per arm:
quantiles, the shares of units near 0 and 1, how many a clip would move, the effective sample
size per arm under ATE, ATT and ATO weights, and the trimming threshold of Crump, Hotz, Imbens
and Mitnik (2009). :func:`check_overlap` issues an :class:`~eocausal.errors.OverlapWarning` with
those numbers and the remedies when propensities pile up near 0 or 1, and stays silent otherwise.

Weights (docs/methods.md, Weighting estimators; Li, Morgan and Zaslavsky 2018 for the ATO)::

    ATE: treated 1/e,      control 1/(1-e)
    ATT: treated 1,        control e/(1-e)
    ATO: treated 1-e,      control e

Effective sample size of an arm (Kish 1965): ESS = (sum_i v_i)^2 / sum_i v_i^2.

Crump et al. (2009, Biometrika 96(1), 187-199, Theorem 1): with g(e) = 1 / (e(1 - e)), the
subpopulation {a <= e <= 1 - a} that minimises the asymptotic variance of the efficient ATE
estimator is the whole sample when sup g <= 2 E[g]; otherwise a = 1/2 - sqrt(1/4 - 1/gamma) where
gamma solves

    gamma = 1 / (a (1 - a)) = 2 E[ g(e) | g(e) <= gamma ].

The sample solution is :func:`eocausal.estimators.trimming.crump_threshold` (the minimiser of
the sample objective, whose first-order condition is this equation); when it cannot be computed
the rule of thumb a = 0.1 is used and the summary says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from eocausal.errors import InputError, NotEstimableError, OverlapWarning
from eocausal.estimators.trimming import RULE_OF_THUMB, crump_threshold
from eocausal.estimators.weighting import arm_weights, effective_sample_size

#: Quantile levels reported per arm.
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: Tail cut-offs whose shares are reported (e below c, e above 1 - c).
TAILS = (0.01, 0.05)

_CITATION = ("Crump, Hotz, Imbens and Mitnik (2009), Biometrika 96(1), 187-199; "
             "Li, Morgan and Zaslavsky (2018), JASA 113(521), 390-400")


@dataclass(frozen=True)
class OverlapSummary:
    """What :func:`overlap_summary` found; ``as_dict()`` gives plain values for reports.

    Attributes
    ----------
    n, n_treated, n_control : int
    quantiles : DataFrame
        Index ``treated``, ``control``, ``all``; columns ``min``, ``q01`` ... ``q99``, ``max`` of
        the raw (unclipped) propensities.
    shares : DataFrame
        Same index; columns ``below_0.01``, ``above_0.99``, ``below_0.05``, ``above_0.95``: the
        share of the arm's units with e < c or e > 1 - c.
    clip : float or None
        The clip the estimator uses; propensities are moved into [clip, 1 - clip].
    n_clipped : int
        Units whose propensity the clip moves (0 without a clip).
    ess : DataFrame
        Index ``ATE``, ``ATT``, ``ATO``; columns ``treated``, ``control``: Kish's effective sample
        size of each arm under that estimand's weights (computed from the clipped propensities
        when a clip is given, as the estimator would weight).
    crump_threshold : float
        Trimming threshold a (keep a <= e <= 1 - a); 0 when Crump et al.'s rule keeps everyone.
    crump_rule : str
        ``'optimal'`` (solves the condition), ``'no trimming'`` (sup g <= 2 E[g]) or
        ``'rule of thumb'`` (fallback a = 0.1 when the optimal one cannot be computed).
    n_trimmed, n_trimmed_treated, n_trimmed_control : int
        Units trimming at ``crump_threshold`` would drop.
    """

    n: int
    n_treated: int
    n_control: int
    quantiles: pd.DataFrame = field(repr=False)
    shares: pd.DataFrame = field(repr=False)
    clip: float | None
    n_clipped: int
    ess: pd.DataFrame = field(repr=False)
    crump_threshold: float
    crump_rule: str
    n_trimmed: int
    n_trimmed_treated: int
    n_trimmed_control: int

    def as_dict(self) -> dict:
        """Plain nested dict (frames as ``{row: {column: value}}``)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("quantiles", "shares", "ess"):
            out[k] = out[k].to_dict(orient="index")
        return out


def _check(e, w) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(e, dtype=float).reshape(-1)
    w = np.asarray(w, dtype=float).reshape(-1)
    if e.shape != w.shape or len(e) == 0:
        raise InputError(f"e, w: expected two non-empty arrays of the same length, got {e.shape} and {w.shape}")
    if not np.isfinite(e).all() or (e < 0).any() or (e > 1).any():
        raise InputError("e: propensities must be finite and lie in [0, 1]; check the propensity model output")
    if not np.isin(w, (0.0, 1.0)).all():
        raise InputError(f"w: the treatment must be 0/1, got values {np.unique(w)[:6].tolist()}")
    if w.sum() == 0 or w.sum() == len(w):
        raise InputError(f"w: both arms need units, got {int(w.sum())} treated of {len(w)}")
    return e, w


def _crump(e: np.ndarray) -> tuple[float, str]:
    try:
        a = crump_threshold(e, "optimal")
    except NotEstimableError:
        return RULE_OF_THUMB, "rule of thumb"
    if not np.isfinite(a) or not 0 <= a < 0.5:
        return RULE_OF_THUMB, "rule of thumb"
    return float(a), "no trimming" if a == 0 else "optimal"


def overlap_summary(e, w, *, clip: float | None = None) -> OverlapSummary:
    """Describe the overlap of the propensity distributions of the treated and control units.

    Parameters
    ----------
    e : array (n,)
        Estimated propensities, before clipping (out of fold when cross-fitted).
    w : array (n,)
        Binary treatment.
    clip : float, optional
        The clip c the estimator applies (e into [c, 1 - c]); counts the units it moves and
        computes the effective sample sizes from the clipped propensities.

    Returns
    -------
    OverlapSummary
        See its attributes; formulas in the module docstring.
    """
    e, w = _check(e, w)
    if clip is not None and not 0 <= clip < 0.5:
        raise InputError(f"clip={clip}: must lie in [0, 0.5)")
    arms = {"treated": w == 1, "control": w == 0, "all": np.ones(len(e), bool)}
    qcols = ["min"] + [f"q{int(round(100 * q)):02d}" for q in QUANTILES] + ["max"]
    quantiles = pd.DataFrame(
        [[e[m].min(), *np.quantile(e[m], QUANTILES), e[m].max()] for m in arms.values()],
        index=list(arms), columns=qcols)
    shares = pd.DataFrame(
        {col: [np.mean(f(e[m])) for m in arms.values()]
         for c in TAILS for col, f in ((f"below_{c:g}", lambda x, c=c: x < c), (f"above_{1 - c:g}", lambda x, c=c: x > 1 - c))},
        index=list(arms))
    if clip:
        ec = np.clip(e, clip, 1 - clip)
        n_clipped = int(np.sum(ec != e))
    else:
        ec, n_clipped = e, 0
    ess = {}
    inside = (ec > 0) & (ec < 1)
    for est in ("ATE", "ATT", "ATO"):
        if inside.all() or est == "ATO":
            with np.errstate(divide="ignore", invalid="ignore"):
                w1, w0 = arm_weights(w, ec, est)
            ess[est] = [effective_sample_size(w1[w == 1]), effective_sample_size(w0[w == 0])]
        else:  # a propensity of exactly 0 or 1 makes the weights infinite
            ess[est] = [np.nan, np.nan]
    ess_frame = pd.DataFrame.from_dict(ess, orient="index", columns=["treated", "control"])
    alpha, rule = _crump(e)
    dropped = (e * (1 - e) < alpha * (1 - alpha) * (1 - 1e-12)) if alpha > 0 else np.zeros(len(e), bool)
    return OverlapSummary(
        n=len(e), n_treated=int(w.sum()), n_control=int(len(w) - w.sum()), quantiles=quantiles,
        shares=shares, clip=clip, n_clipped=n_clipped, ess=ess_frame, crump_threshold=alpha,
        crump_rule=rule, n_trimmed=int(dropped.sum()), n_trimmed_treated=int(dropped[w == 1].sum()),
        n_trimmed_control=int(dropped[w == 0].sum()),
    )


def check_overlap(
    e,
    w,
    *,
    clip: float | None = None,
    estimand: str = "ATE",
    bound: float = 0.01,
    max_share: float = 0.05,
    stacklevel: int = 2,
) -> OverlapSummary:
    """Warn when propensities pile up near 0 or 1; return the :func:`overlap_summary`.

    The warning fires when more than ``max_share`` of the units have a propensity in a tail that
    the estimand's weights blow up: e < ``bound`` or e > 1 - ``bound`` for the ATE (weights 1/e
    and 1/(1-e)), only e > 1 - ``bound`` for the ATT (control weights e/(1-e)); never for the
    ATO, whose weights are bounded by 1. The message gives the observed range per arm, the share
    and count of units involved, the effective sample sizes, and the remedies: trimming at Crump
    et al.'s threshold (with the number of units it would drop; trimming changes the estimand to
    the overlap population) or estimating the ATO.

    Parameters
    ----------
    e, w, clip
        As in :func:`overlap_summary`.
    estimand : {'ATE', 'ATT', 'ATO'}
        The estimand the weights target.
    bound : float
        Tail cut-off c in (0, 0.5): e < c or e > 1 - c is "near 0 or 1" (weights above 1/c).
    max_share : float
        Largest tolerated share of units in those tails.
    stacklevel : int
        Passed to :func:`warnings.warn`; raise it by one per wrapper between the user and this call.

    Warns
    -----
    OverlapWarning
    """
    if estimand not in ("ATE", "ATT", "ATO"):
        raise InputError(f"estimand={estimand!r}: use 'ATE', 'ATT' or 'ATO'")
    if not 0 < bound < 0.5:
        raise InputError(f"bound={bound}: must lie in (0, 0.5)")
    if not 0 <= max_share < 1:
        raise InputError(f"max_share={max_share}: must lie in [0, 1)")
    summary = overlap_summary(e, w, clip=clip)
    e, w = _check(e, w)
    low, high = e < bound, e > 1 - bound
    tail = {"ATE": low | high, "ATT": high, "ATO": np.zeros(len(e), bool)}[estimand]
    if tail.mean() <= max_share:
        return summary
    warnings.warn(_overlap_message(summary, e, w, tail, bound, estimand), OverlapWarning,
                  stacklevel=stacklevel)
    return summary


def _overlap_message(s: OverlapSummary, e, w, tail, bound: float, estimand: str) -> str:
    q = s.quantiles
    where = {"ATE": f"outside [{bound:g}, {1 - bound:g}]", "ATT": f"above {1 - bound:g}"}[estimand]
    head = (
        f"Propensities pile up near {'0 or 1' if estimand == 'ATE' else '1'}: {tail.mean():.1%} of units "
        f"({int(tail.sum())} of {s.n}: {int(tail[w == 1].sum())} treated, {int(tail[w == 0].sum())} control) "
        f"have e {where}; observed range {q.at['all', 'min']:.3g}-{q.at['all', 'max']:.3g} (treated "
        f"{q.at['treated', 'min']:.3g}-{q.at['treated', 'max']:.3g}, control "
        f"{q.at['control', 'min']:.3g}-{q.at['control', 'max']:.3g}). {estimand} weights "
        f"leave effective sample sizes of {s.ess.at[estimand, 'treated']:.1f} of {s.n_treated} treated and "
        f"{s.ess.at[estimand, 'control']:.1f} of {s.n_control} control units, so the estimate rests on few "
        "units and is unstable"
    )
    if s.clip:
        head += f" (with the clip at {s.clip:g}, which moves {s.n_clipped} propensities)"
    a = s.crump_threshold
    if a > 0:
        how = "Crump et al.'s optimal" if s.crump_rule == "optimal" else "the rule-of-thumb"
        trim = (f"trim with {how} threshold alpha = {a:.3f} (keep {a:.3f} <= e <= {1 - a:.3f}), which would "
                f"drop {s.n_trimmed} units ({s.n_trimmed_treated} treated, {s.n_trimmed_control} control) "
                "and changes the estimand to the effect in the overlap population")
    else:
        trim = "trimming at Crump et al.'s threshold would keep every unit here"
    return (f"{head}. Remedies: {trim}; or estimate the ATO (overlap weights, estimand='ATO'); and check "
            f"for confounders that are functions of the treatment. {_CITATION}.")
