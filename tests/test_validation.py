"""Boundary checks of eocausal._validation: what passes, what is refused and what the message says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eocausal import _validation as V
from eocausal.errors import InputError


def test_check_vector_and_matrix():
    out = V.check_vector([1, 2, 3], "outcome", n=3)
    assert out.dtype == float and out.shape == (3,)
    with pytest.raises(InputError, match=r"outcome: expected shape \(4,\), one value per unit, got shape \(3,\)"):
        V.check_vector([1, 2, 3], "outcome", n=4)
    np.testing.assert_array_equal(V.check_vector([[1], [2], [3]], "outcome"), [1.0, 2.0, 3.0])  # a column is a vector
    with pytest.raises(InputError, match=r"outcome: expected a 1-d array of shape \(n,\), got shape \(3, 2\)"):
        V.check_vector(np.ones((3, 2)), "outcome")
    with pytest.raises(InputError, match=r"outcome: NaN or infinite values in rows \[1\] \(1 in all\)"):
        V.check_vector([1, np.inf, 3], "outcome")
    assert np.isnan(V.check_vector([1, np.nan], "outcome", finite=False)[1])
    with pytest.raises(InputError, match="outcome: expected a numeric vector"):
        V.check_vector(["a", "b"], "outcome")
    X = V.check_matrix(np.ones((4, 2)), "confounders", n=4)
    assert X.shape == (4, 2)
    with pytest.raises(InputError, match=r"confounders: expected shape \(5, p\)"):
        V.check_matrix(np.ones((4, 2)), "confounders", n=5)
    with pytest.raises(InputError, match="reshape a single column"):
        V.check_matrix(np.ones(4), "confounders")


def test_check_treatment_and_propensity():
    np.testing.assert_array_equal(V.check_treatment([0, 1, 1]), [0.0, 1.0, 1.0])
    with pytest.raises(InputError, match=r"treatment: must hold only 0 and 1, got values \[2.0\] in rows \[2\]"):
        V.check_treatment([0, 1, 2])
    V.check_propensity([0.1, 0.9])
    with pytest.raises(InputError, match=r"strictly inside \(0, 1\).*clip them"):
        V.check_propensity([0.0, 0.5])
    np.testing.assert_array_equal(V.check_propensity([0.0, 1.0], open_interval=False), [0.0, 1.0])
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        V.check_propensity([1.5, 0.5], open_interval=False)


def test_check_clusters_codes_and_missing_labels():
    np.testing.assert_array_equal(V.check_clusters(["b", "a", "b"], 3), [1, 0, 1])
    assert V.check_clusters(None, 3) is None
    for missing in (np.array([1.0, np.nan, 2.0]), np.array(["x", None, "y"], dtype=object),
                    pd.Series(["x", pd.NA, "y"], dtype="string").to_numpy()):
        with pytest.raises(InputError, match=r"clusters: missing cluster labels in rows \[1\]"):
            V.check_clusters(missing, 3)
    codes = V.check_clusters(np.array([1, "a", 1], dtype=object), 3)  # labels that do not sort
    assert codes[0] == codes[2] != codes[1]


def test_check_positive_int_choice_and_fold_ids():
    assert V.check_positive_int(np.int64(5), "folds", 2) == 5
    for bad in (2.5, 2.0, "abc", True, None):
        with pytest.raises(InputError, match="folds=.*expected an integer >= 2"):
            V.check_positive_int(bad, "folds", 2)
    with pytest.raises(InputError, match="n_boot=1: must be at least 2"):
        V.check_positive_int(1, "n_boot", 2)
    assert V.check_choice("native", "solver", ("native", "sklearn")) == "native"
    with pytest.raises(InputError, match=r"solver=True: use one of \['native', 'sklearn'\]"):
        V.check_choice(True, "solver", ("native", "sklearn"))
    with pytest.raises(InputError, match="cross-fitting needs at least 2"):
        V.check_fold_ids(np.zeros(5), 5)
    with pytest.raises(InputError, match=r"fold_ids: expected shape \(5,\)"):
        V.check_fold_ids(np.zeros(4), 5)


def test_all_names_exist():
    assert all(callable(getattr(V, name)) for name in V.__all__)
