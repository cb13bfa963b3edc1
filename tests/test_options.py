"""EstimateOptions: the one source of estimate()'s settings, the study file's [estimate] section
and the manifest; and notes written from what the rows say was done."""

from __future__ import annotations

import dataclasses
import inspect
import re

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import eocausal
from eocausal.errors import InputError, StudyFileError
from eocausal.options import EstimateOptions, toml_schema
from eocausal.study.schema import SCHEMA, estimate_options, validate


def _frame(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    w = (rng.uniform(size=n) < expit(0.8 * x[:, 0])).astype(int)
    y = 1.0 * w + x[:, 0] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "w": w, "x1": x[:, 0], "x2": x[:, 1], "village": np.arange(n) // 4})


def test_every_field_is_documented_and_is_a_study_key():
    doc = EstimateOptions.__doc__
    for f in dataclasses.fields(EstimateOptions):
        assert re.search(rf"^    {f.name} :", doc, re.M), f"{f.name} is not documented in EstimateOptions"
        assert f.metadata["doc"], f.name
        if f.name != "seed":  # [study] seed
            assert f.name in SCHEMA["estimate"]
    assert set(SCHEMA["estimate"]) == {f.name for f in dataclasses.fields(EstimateOptions)} - {"seed"}
    assert SCHEMA["estimate"] == toml_schema()


def test_study_defaults_are_the_options_defaults():
    study = validate({"study": {"name": "s", "seed": 7}, "units": {"format": "demo"}})
    opts = estimate_options(study.sections)
    assert opts == EstimateOptions(seed=7)
    assert "aipw" in opts.methods  # the study file's default methods no longer leave AIPW out


def test_estimate_signature_has_no_copy_of_the_settings():
    params = inspect.signature(eocausal.estimate).parameters
    settings = {f.name for f in dataclasses.fields(EstimateOptions)}
    assert not settings & set(params), "estimate() repeats settings of EstimateOptions as keywords"
    assert "settings" in params and params["settings"].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.parametrize("kw, match", [
    (dict(folds=2.5), r"folds=2\.5"), (dict(folds=1), "at least 2"), (dict(seed="abc"), "seed='abc'"),
    (dict(methods="aipw"), r"pass a list.*\['aipw'\]"), (dict(methods=[]), "at least one"),
    (dict(methods=["ols"]), "unknown"), (dict(clip=0.5), r"\[0, 0\.5\)"), (dict(alpha=1.2), r"\(0, 1\)"),
    (dict(n_boot=10), "at least 50"), (dict(solver="fast"), "solver"), (dict(trim="max"), "trim"),
    (dict(estimand="ATO", methods=["aipw"]), "ATE or the ATT"), (dict(repeats=2, seed=None), "needs a seed"),
    (dict(repeats=3, se="bootstrap", ci="percentile"), "percentile"), (dict(propensity=object()), "fit"),
    (dict(adjustments="image"), "pass a list"),
])
def test_bad_settings_are_refused_with_the_name(kw, match):
    with pytest.raises(InputError, match=match):
        EstimateOptions(**kw)
    df = _frame()
    with pytest.raises(InputError, match=match):  # before any work
        eocausal.estimate(df, treatment="w", outcome="y", confounders=["x1"], **kw)


def test_percentile_interval_with_repeats_is_refused_with_the_fix():
    """The median rule over splits combines SEs, not draws: a percentile interval is undefined (issue 15)."""
    msg = (r"ci='percentile' with repeats > 1: the median rule over splits gives a normal interval only; "
           r"use ci='normal' or repeats=1")
    with pytest.raises(InputError, match=msg):
        EstimateOptions(se="bootstrap", ci="percentile", repeats=3, seed=0)
    base = EstimateOptions(se="bootstrap", ci="percentile", seed=0)  # fine with one split
    with pytest.raises(InputError, match=msg):  # also when set later
        EstimateOptions.build(base, repeats=2)
    assert EstimateOptions(se="bootstrap", ci="normal", repeats=3, seed=0).ci == "normal"
    with pytest.raises(StudyFileError, match=r"\[estimate\].*ci='percentile' with repeats > 1"):
        validate({"study": {"name": "s", "seed": 1}, "units": {"format": "demo"},
                  "estimate": {"se": "bootstrap", "ci": "percentile", "repeats": 3}})


def test_unknown_setting_names_the_valid_ones():
    with pytest.raises(InputError, match=r"unknown setting\(s\) \['n_folds'\].*'folds'"):
        eocausal.estimate(_frame(), treatment="w", outcome="y", n_folds=3)


def test_study_errors_come_from_the_options():
    base = {"study": {"name": "s"}, "units": {"format": "demo"}}
    with pytest.raises(StudyFileError, match=r"\[estimate\] folds=1: must be an integer of at least 2"):
        validate({**base, "estimate": {"folds": 1}})
    with pytest.raises(StudyFileError, match=r"\[estimate\] methods .*\['ols'\] not among"):
        validate({**base, "estimate": {"methods": ["dim", "ols"]}})
    with pytest.raises(StudyFileError, match="ATE or the ATT"):
        validate({**base, "estimate": {"estimand": "ATO", "methods": ["aipw"]}})


def test_options_object_and_keywords_agree():
    df = _frame()
    kw = dict(treatment="w", outcome="y", confounders=["x1", "x2"], clusters="village")
    opts = EstimateOptions(methods=["ipw-hajek"], folds=4, seed=3, propensity="logit", crossfit=True)
    a = eocausal.estimate(df, options=opts, **kw).tidy()
    b = eocausal.estimate(df, methods=["ipw-hajek"], folds=4, seed=3, propensity="logit", crossfit=True, **kw).tidy()
    pd.testing.assert_frame_equal(a, b)
    c = eocausal.estimate(df, options=opts, folds=3, **kw)  # keywords replace fields of the object
    assert c.rows[0].folds == 3


def test_notes_are_written_from_the_rows_facts():
    df = _frame()
    g = pd.factorize(df["village"], sort=True)[0]
    fold_ids = g % 3  # 3 folds given, although folds=5 is the default
    t = eocausal.estimate(df, treatment="w", outcome="y", confounders=["x1"], clusters="village",
                          fold_ids=fold_ids)
    assert {r.folds for r in t.rows if r.method != "dim"} == {3}
    text = " ".join(t.notes)
    assert "3 cross-fitting folds" in text and "same 3 folds" in text and "5 folds" not in text
    # a DIM-only table says nothing of IPW or AIPW, and says why they are missing
    dim = eocausal.estimate("y ~ w", df)
    assert [r.method for r in dim.rows] == ["dim"]
    assert not any(n.startswith(("AIPW", "Propensity", "IPW")) for n in dim.notes)
    assert any("only the difference in means" in n for n in dim.notes)
    assert dim.design["propensity"] == ""
    # given propensities and no adjustment: no fitted propensity model in the header or notes
    e = expit(0.8 * df["x1"].to_numpy())
    given = eocausal.estimate(df, treatment="w", outcome="y", adjustments=[], propensity_scores=e,
                              methods=["ipw-hajek"])
    assert given.design["propensity"] == "given"
    assert "Propensity: given" in str(given.summary())
    assert not any("ridge-logit" in n or "ridge-logistic" in n for n in given.notes)
    # bootstrap SEs: the first note is about the bootstrap, and no note speaks of "other" IPW SEs
    boot = eocausal.estimate(df, treatment="w", outcome="y", confounders=["x1"], se="bootstrap", n_boot=100,
                             methods=["ipw-hajek"])
    assert boot.notes[0].startswith("Standard errors from 100 bootstrap draws")
    assert not any("known" in n for n in boot.notes)


def test_manifest_records_the_options(tmp_path):
    from eocausal.study.runner import run_study

    study = tmp_path / "s.toml"
    study.write_text('[study]\nname = "small"\nseed = 3\n[units]\nformat = "demo"\n[simulate]\nn_images = 60\n'
                     'px = 16\n[encoder]\nn_features = 16\n[estimate]\nmethods = ["dim", "ipw-hajek"]\nfolds = 3\n'
                     '[report]\nformats = ["md"]\n')
    res = run_study(study, tmp_path / "out")
    assert res.manifest["estimate_options"] == EstimateOptions(methods=["dim", "ipw-hajek"], folds=3, seed=3).to_dict()
