"""Reading a CATE result in the CATE evaluation functions (RATE, calibration, BLP/GATES, CLAN).

grf's convention: each evaluation function takes the fit (``rate(result)``) and has a twin that
takes arrays computed elsewhere (``rate(priority, scores)``). This module decides which form a
call used and reads the arrays out of the result, so the two forms cannot be mixed silently.
"""

from __future__ import annotations

import sys

from eocausal.errors import InputError


def as_cate_result(obj):
    """``obj`` if it is an :class:`eocausal.estimators.cate.CateResult`, else None.

    A CateResult can exist only once its module is imported, so the check never imports the
    estimator layer (nor scikit-learn) for a call that passes plain arrays.
    """
    mod = sys.modules.get("eocausal.estimators.cate")
    if mod is not None and isinstance(obj, mod.CateResult):
        return obj
    return None


def arrays_from(result, func: str, given: dict, attributes: dict) -> dict:
    """The arrays of a call: read from a CateResult, or the ones given by keyword; never both.

    ``given``: keyword -> value as passed (None when not passed); ``attributes``: keyword ->
    the CateResult attribute that holds it.
    """
    res = as_cate_result(result)
    names = ", ".join(f"{k}=" for k in given)
    if result is not None and res is None:
        raise InputError(f"result: expected a CateResult from eocausal.cate, got {type(result).__name__}; "
                         f"pass {func}(result) or the arrays by keyword ({names})")
    if res is not None:
        clash = [k for k, v in given.items() if v is not None]
        if clash:
            raise InputError(f"{', '.join(clash)}: given together with a CateResult, which carries "
                             f"{'it' if len(clash) == 1 else 'them'}; pass {func}(result) or the arrays alone")
        return {k: getattr(res, attributes[k]) for k in given}
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise InputError(f"{', '.join(missing)}: required without a CateResult; pass {func}(result) "
                         f"or all of {names}")
    return dict(given)
