"""Plain value types shared by every layer (no behaviour beyond construction)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

ADJUSTMENTS = ("none", "tabular", "image", "tabular+image")
ESTIMANDS = ("ATE", "ATT", "ATO")
#: the average-effect estimators of estimate(): difference in means, HT and Hajek IPW, AIPW
METHODS = ("dim", "ipw-ht", "ipw-hajek", "aipw")
#: named propensity and outcome models (eocausal.estimators.learners builds them)
PROPENSITY_MODELS = ("ridge-logit", "logit", "gbm")
OUTCOME_MODELS = ("ridge", "linear", "gbm", "forest")
#: how nuisances are fitted: eocausal's fold-sharing solvers, or each learner's own fit
SOLVERS = ("native", "sklearn")

@dataclass(frozen=True)
class EffectRow:
    """One estimate: a (trial, estimand, method, adjustment) cell of an effect table.

    ``estimate`` is NaN when the effect could not be estimated; ``note`` then says why.
    """

    trial: str
    estimand: str
    method: str
    adjustment: str
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_treated: int
    n_clusters: int | None = None
    se_type: str = ""
    outcome_type: str = "observed"
    clip: float | None = None
    n_clipped: int = 0
    n_trimmed: int = 0
    ess_treated: float = math.nan
    ess_control: float = math.nan
    p_holm: float = math.nan
    p_bh: float = math.nan
    #: facts of how the row was computed, from which the table's notes are written
    folds: int | None = None
    propensity: str = ""
    outcome_model: str = ""
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


#: Columns of :meth:`eocausal.EffectTable.tidy`, in order.
TIDY_COLUMNS = tuple(f.name for f in fields(EffectRow))


@dataclass(frozen=True)
class PropensityFit:
    """Out-of-fold propensities and how they were obtained (for diagnostics and reports).

    An output folder keeps every field (``eocausal.report.outputs``): so each field is a numpy
    array of numbers, booleans or text, a dict of such arrays, or a value made of None, bool,
    int, float, str, lists, tuples and dicts; a field of another kind is refused when saved.
    """

    adjustment: str
    e_raw: object  # np.ndarray, before clipping
    e: object  # np.ndarray, after clipping
    w: object  # np.ndarray treatment
    clip: float
    n_clipped: int
    folds: int
    model: str
    penalties: tuple = field(default_factory=tuple)
    y: object = None  # np.ndarray outcome, kept for sensitivity analysis of AIPW rows
    mu0: object = None  # out-of-fold outcome regressions, when AIPW was estimated
    mu1: object = None
    #: method -> influence-function values behind that row's SE (units kept after trimming), e.g.
    #: for another clustering: ``se_from_psi(fit.psi["ipw-hajek"], other_clusters)``
    psi: dict = field(default_factory=dict)
    #: the cross-fitting fold of each unit (np.ndarray), shared by the propensity and outcome fits
    fold_ids: object = None
    #: True when ``e`` comes from one logistic fit on all units (the IPW rows with crossfit=False)
    in_sample: bool = False
    #: AIPW's out-of-fold propensities (clipped) when they differ from ``e`` (in_sample), else None
    e_aipw: object = None
