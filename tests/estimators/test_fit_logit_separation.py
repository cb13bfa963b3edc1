"""One separation rule for the unpenalised logistic fits (issue 15).

``inference.fit_logit`` used to refuse any fit with a fitted log-odds beyond 30 as "separation",
so one unit with an outlying covariate (fitted e near 1 at a finite, converged maximiser) was
refused; ``glm.newton_logistic`` had already dropped that rule. Both now use
``glm.check_separation``: log-odds beyond 30 *and* (no convergence or a slope beyond 30 per SD).
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.special import expit

from eocausal.errors import SeparationError
from eocausal.estimators.glm import FoldLayout, check_separation, newton_logistic
from eocausal.estimators.inference import fit_logit


def _outlier_data(seed=0, n=500):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[0] = 50.0  # one unit 50 SD out
    w = (rng.uniform(size=n) < expit(0.3 + x)).astype(float)
    X = np.column_stack([np.ones(n), x, rng.normal(size=n)])
    return X, w


def test_outlying_covariate_is_fitted_not_refused():
    X, w = _outlier_data()
    b = fit_logit(X, w)
    z = X @ b
    assert z.max() > 30  # the old rule (log-odds beyond 30) refused exactly this fit
    ref = sm.Logit(w, X).fit(disp=0, method="newton", tol=1e-12)
    np.testing.assert_allclose(b, ref.params, rtol=1e-6, atol=1e-8)
    # the same data through glm's solver (scaled coordinates) give the same model
    lay = FoldLayout(X[:, 1:], np.zeros(len(w), dtype=np.intp), 1)
    beta = newton_logistic([lay.X], [w[lay.order]], np.zeros(2))
    intercept, slopes = lay.to_raw(beta)
    np.testing.assert_allclose(np.r_[intercept, slopes], b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["complete", "quasi"])
def test_separation_still_raises(kind):
    rng = np.random.default_rng(1)
    n = 300
    x = rng.normal(size=n)
    if kind == "complete":
        w = (x > 0).astype(float)
    else:  # quasi: x = 0 holds both arms, elsewhere x's sign is the treatment
        x[:20] = 0.0
        w = (x > 0).astype(float)
        w[:10] = 1.0
    X = np.column_stack([np.ones(n), x, rng.normal(size=n)])
    with pytest.raises(SeparationError, match="no finite maximum"):
        fit_logit(X, w)
    lay = FoldLayout(X[:, 1:], np.zeros(n, dtype=np.intp), 1)
    with pytest.raises(SeparationError, match="no finite maximum"):
        newton_logistic([lay.X], [w[lay.order]], np.zeros(2))
    # a ridge penalty has a finite maximiser: no refusal
    assert np.isfinite(fit_logit(X, w, penalty=1.0)).all()


def test_the_rule_itself():
    check_separation(50.0, np.array([1.0, -2.0]), converged=True)  # outlier: large log-odds, ordinary slopes
    check_separation(12.0, np.array([80.0]), converged=False)  # log-odds within bounds
    with pytest.raises(SeparationError, match="slope of more than 30 per SD"):
        check_separation(40.0, np.array([1.0, 31.0]), converged=True)
    with pytest.raises(SeparationError, match="did not converge"):
        check_separation(40.0, np.array([1.0]), converged=False)
