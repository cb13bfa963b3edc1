"""Clipping and trimming (Crump et al. 2009): two different operations on propensities.

- Clipping moves propensities into [c, 1 - c] and keeps every unit: the estimand is unchanged,
  the estimator is biased where e was clipped (docs/methods.md, Weighting estimators;
  causalimages uses c = 1e-3).
- Trimming drops the units with e outside [a, 1 - a]: the estimand becomes the effect on the
  remaining (overlap) population, and the report must say so and count the dropped units.
- (Stabilised weights, a third operation that rescales each arm's weights and changes neither
  the units nor Hajek estimates, are :func:`eocausal.estimators.weighting.stabilized_weights`.)

Crump, Hotz, Imbens and Mitnik (2009), "Dealing with limited overlap in estimation of average
treatment effects", Biometrika 96(1), 187-199, Theorem 1 and section 4: with
g(x) = 1 / (e(x)(1 - e(x))), the trimmed set {a <= e <= 1 - a} that minimises the asymptotic
variance of the efficient ATE estimator (homoskedastic case) is no trimming when
sup g <= 2 E[g]; otherwise a = 1/2 - sqrt(1/4 - 1/gamma), where gamma solves

    gamma = 2 E[g | g <= gamma].

The sample version minimises sum_{i: g_i <= gamma} g_i / #{g_i <= gamma}^2 (the asymptotic
variance up to constants), whose first-order condition is the equation above. For many
Beta-distributed propensities the solution is close to a = 0.1, Crump et al.'s rule of thumb.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eocausal._validation import check_propensity, check_treatment
from eocausal.errors import InputError, NotEstimableError

__all__ = ["RULE_OF_THUMB", "Trimmed", "clip", "crump_condition", "crump_threshold", "trim"]

#: Crump et al.'s (2009) rule-of-thumb threshold.
RULE_OF_THUMB = 0.1


def _check_e(e) -> np.ndarray:
    e = check_propensity(e, open_interval=False)
    if len(e) == 0:
        raise InputError("propensity: got an empty array; pass one propensity per unit")
    return e


def crump_threshold(e: np.ndarray, rule: str = "optimal") -> float:
    """Trimming threshold a of Crump et al. (2009): keep units with a <= e <= 1 - a.

    Parameters
    ----------
    e : array (n,)
        Estimated propensities (unclipped).
    rule : {'optimal', 'rule-of-thumb'}
        'optimal' solves Crump et al.'s condition on the sample (see the module docstring);
        'rule-of-thumb' returns 0.1.

    Returns
    -------
    float
        a in [0, 0.5); 0 means no trimming is optimal (sup g <= 2 mean g).

    Notes
    -----
    With g_(1) <= ... <= g_(n) the sorted values of g = 1/(e(1-e)), the sample objective
    V(k) = (sum_{j<=k} g_(j)) / k^2 is minimised over k; the boundary unit gives
    a = 1/2 - sqrt(1/4 - 1/g_(k)), so that ``trim(e, a)`` keeps exactly the k units with the
    smallest g (ties aside). Units with e = 0 or 1 (g infinite) are always trimmed. EconML's
    ``DRLearner(trimming_threshold='auto')`` instead takes the first k with g_(k) >= 2 mean_{j<=k} g_(j),
    a local solution of the same condition; the two coincide when the condition has one root.
    """
    e = _check_e(e)
    if rule == "rule-of-thumb":
        return RULE_OF_THUMB
    if rule != "optimal":
        raise InputError(f"rule={rule!r}: use 'optimal' or 'rule-of-thumb'")
    v = e * (1 - e)
    finite = v > 0
    if not finite.any():
        raise NotEstimableError("propensity: every value is 0 or 1; no unit has overlap")
    g = np.sort(1.0 / v[finite])
    if finite.all() and g[-1] <= 2 * g.mean():
        return 0.0
    k = np.arange(1, len(g) + 1)
    obj = np.cumsum(g) / k**2
    kstar = int(np.argmin(obj))
    gamma = g[kstar]
    return float(0.5 - np.sqrt(max(0.25 - 1.0 / gamma, 0.0)))


def crump_condition(e: np.ndarray, threshold: float) -> tuple[float, float]:
    """Both sides of Crump et al.'s condition at the trimming threshold a = ``threshold``.

    Returns (gamma, 2 * mean(g | g <= gamma)) with gamma = 1/(a (1 - a)) and g = 1/(e(1-e)); at
    the optimal a (:func:`crump_threshold`) the two are equal up to sampling granularity.
    """
    e = _check_e(e)
    if not 0 < threshold < 0.5:
        raise InputError(f"threshold={threshold}: must lie in (0, 0.5)")
    gamma = 1.0 / (threshold * (1 - threshold))
    v = e * (1 - e)
    g = 1.0 / v[v > 0]
    inside = g <= gamma * (1 + 1e-12)
    if not inside.any():
        raise NotEstimableError(f"threshold={threshold}: no unit has a <= e <= 1 - a; use a smaller threshold")
    return gamma, float(2 * g[inside].mean())


@dataclass(frozen=True)
class Trimmed:
    """Result of :func:`trim`: which units are kept and how many were dropped."""

    keep: np.ndarray
    n_trimmed: int
    threshold: float

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())


def trim(e: np.ndarray, threshold: float | str = "optimal", w: np.ndarray | None = None) -> Trimmed:
    """Drop units whose propensity lies outside [threshold, 1 - threshold].

    Trimming changes the estimand: estimates on the kept units refer to the overlap population
    {a <= e(V) <= 1 - a} (Crump et al. 2009). Report ``n_trimmed`` and the threshold with the
    estimate. Compare :func:`clip`, which keeps every unit.

    Parameters
    ----------
    e : array (n,)
        Propensities (unclipped).
    threshold : float in [0, 0.5) or {'optimal', 'rule-of-thumb'}
        A given threshold, or one from :func:`crump_threshold`.
    w : array (n,), optional
        Treatment; when given, a trim that empties an arm raises :class:`NotEstimableError`.
    """
    e = _check_e(e)
    a = crump_threshold(e, threshold) if isinstance(threshold, str) else float(threshold)
    if not 0 <= a < 0.5:
        raise InputError(f"threshold={threshold}: must lie in [0, 0.5)")
    # compare on e(1-e) so the kept set is symmetric and matches crump_threshold's boundary unit
    keep = e * (1 - e) >= a * (1 - a) * (1 - 1e-12) if a > 0 else np.ones(len(e), dtype=bool)
    if w is not None:
        w = check_treatment(w, n=len(e))
        for arm, name in ((1, "treated"), (0, "control")):
            if not np.any(keep & (w == arm)):
                raise NotEstimableError(
                    f"trim: threshold {a:.3g} drops every {name} unit; use a smaller threshold or "
                    "estimate the ATO (overlap weights) instead")
    return Trimmed(keep=keep, n_trimmed=int(np.sum(~keep)), threshold=a)


def clip(e: np.ndarray, c: float = 1e-3) -> tuple[np.ndarray, int]:
    """Clip propensities to [c, 1 - c]; every unit is kept.

    Returns (clipped propensities, number of units whose propensity changed).
    """
    e = _check_e(e)
    if not 0 <= c < 0.5:
        raise InputError(f"clip={c}: must lie in [0, 0.5)")
    ec = np.clip(e, c, 1 - c)
    return ec, int(np.sum(ec != e))
