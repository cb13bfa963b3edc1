"""Tests for eocausal.study.schema: parsing and validating study files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from eocausal.errors import EocausalError, MissingFileError, StudyFileError
from eocausal.study.inputs import check_study
from eocausal.study.runner import demo_study_path
from eocausal.study.schema import SCHEMA, Study, load_study, validate

REPO = Path(__file__).resolve().parents[2]

MINIMAL = '[study]\nname = "t"\n\n[units]\nformat = "demo"\n'
CSV_UNITS = ('[study]\nname = "t"\n\n[imagery]\nformat = "npz"\npath = "data/images.npz"\n\n'
             '[units]\nformat = "csv"\npath = "data/units.csv"\ntreatment = "w"\noutcome = "y"\n')


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ----------------------------------------------------------------------------- the demo study
def test_packaged_demo_equals_repository_copy_byte_for_byte():
    packaged = demo_study_path()
    assert packaged.is_file()
    assert packaged.read_bytes() == (REPO / "studies" / "demo.toml").read_bytes()


def test_demo_study_loads_with_its_values():
    s = load_study(demo_study_path())
    assert isinstance(s, Study)
    assert s.name == "demo: image-confounded simulation"
    assert s.seed == 20260101
    assert s["units"]["format"] == "demo"
    assert s["simulate"] == {"n_images": 500, "units_per_image": 2, "px": 32, "tau": 1.0}
    assert s["encoder"]["n_features"] == 256
    assert s["encoder"]["batch_size"] == 256  # default filled in
    assert s["estimate"]["methods"] == ["dim", "ipw-ht", "ipw-hajek"]
    assert s["estimate"]["clip"] == pytest.approx(1e-3, rel=1e-12)
    assert s["estimate"]["alpha"] == 0.05  # default
    assert s["report"]["formats"] == ["html", "md", "tex"]
    assert s.sha256 == hashlib.sha256(demo_study_path().read_bytes()).hexdigest()
    assert s.base_dir == demo_study_path().resolve().parent


def test_every_section_is_filled_with_defaults(tmp_path):
    s = load_study(write(tmp_path, MINIMAL))
    assert set(s.sections) == set(SCHEMA)
    assert s.seed == 0
    assert s["study"]["description"] == ""
    assert s["units"]["covariate_set"] == "pretreatment"
    assert s["units"]["path"] is None
    assert s["imagery"]["format"] == "demo"
    assert s["encoder"] == {"kind": "random-features", "n_features": 1024, "kernel": 3, "bias": 0.0,
                            "seed": 0, "device": "auto", "batch_size": 256}
    assert s["estimate"]["estimand"] == "ATE"
    assert s["estimate"]["folds"] == 5


def test_default_lists_are_not_shared_between_studies(tmp_path):
    a = load_study(write(tmp_path, MINIMAL, "a.toml"))
    a["estimate"]["methods"].append("x")
    a["report"]["formats"].clear()
    b = load_study(write(tmp_path, MINIMAL, "b.toml"))
    assert b["estimate"]["methods"] == ["dim", "ipw-ht", "ipw-hajek", "aipw"]
    assert b["report"]["formats"] == ["html", "md", "tex"]


# ----------------------------------------------------------------------------- structure errors
def test_unknown_section(tmp_path):
    p = write(tmp_path, MINIMAL + '\n[estimates]\nfolds = 3\n')
    with pytest.raises(StudyFileError) as ei:
        load_study(p)
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, EocausalError)
    assert "unknown section [estimates]" in msg
    assert "'estimate'" in msg and "'report'" in msg
    assert str(p.resolve()) in msg


@pytest.mark.parametrize("section,key", [("study", "nmae"), ("units", "treat"),
                                         ("encoder", "features"), ("estimate", "fold")])
def test_unknown_key_names_itself_and_lists_valid_keys(tmp_path, section, key):
    doc = {"study": {"name": "t"}, "units": {"format": "demo"}}
    doc.setdefault(section, {})[key] = 1
    with pytest.raises(StudyFileError) as ei:
        validate(doc)
    msg = str(ei.value)
    assert f"unknown key {key!r} in [{section}]" in msg
    assert f"valid keys are {sorted(SCHEMA[section])}" in msg


def test_unknown_key_from_file(tmp_path):
    p = write(tmp_path, MINIMAL + '\n[encoder]\nn_feature = 64\n')
    with pytest.raises(StudyFileError, match=r"unknown key 'n_feature' in \[encoder\]; valid keys are "
                                              r"\['batch_size', 'bias', 'device', 'kernel', 'kind', 'n_features', "
                                              r"'seed'\]"):
        load_study(p)


@pytest.mark.parametrize("text,needle", [
    ('[units]\nformat = "demo"\n', "missing section [study]"),
    ('[study]\nname = "t"\n', "missing section [units]"),
    ('[study]\nseed = 1\n[units]\nformat = "demo"\n', "[study] needs the key 'name'"),
    ('[study]\nname = "t"\n[units]\npath = "u.csv"\n', "[units] needs the key 'format'"),
])
def test_missing_required(tmp_path, text, needle):
    with pytest.raises(StudyFileError) as ei:
        load_study(write(tmp_path, text))
    assert needle in str(ei.value)


def test_section_must_be_a_table():
    with pytest.raises(StudyFileError, match=r"\[encoder\] must be a table"):
        validate({"study": {"name": "t"}, "units": {"format": "demo"}, "encoder": 3})


# ----------------------------------------------------------------------------- type errors
@pytest.mark.parametrize("section,line,expected", [
    ("study", 'name = 3', "should be a string"),
    ("study", 'seed = "7"', "should be an integer"),
    ("study", 'seed = 1.5', "should be an integer"),
    ("study", 'seed = true', "should be an integer"),
    ("encoder", 'n_features = "many"', "should be an integer"),
    ("encoder", 'bias = "x"', "should be an integer or a number"),
    ("estimate", 'alpha = "0.1"', "should be a number"),
    ("estimate", 'alpha = false', "should be a number"),
    ("estimate", 'methods = "dim"', "should be a list"),
    ("imagery", 'path = 3', "should be a string or a list"),
])
def test_wrong_type_names_expected_type(tmp_path, section, line, expected):
    text = MINIMAL if section != "study" else '[units]\nformat = "demo"\n'
    if section == "study":
        text += f'\n[study]\n{line}\n' + ('name = "t"\n' if not line.startswith("name") else "")
    else:
        text += f'\n[{section}]\n{line}\n'
    with pytest.raises(StudyFileError) as ei:
        load_study(write(tmp_path, text))
    msg = str(ei.value)
    key, value = (s.strip() for s in line.split("=", 1))
    assert f"[{section}] {key} = " in msg
    assert msg.endswith(expected)


@pytest.mark.parametrize("section,key,value", [
    ("units", "format", "excel"),
    ("units", "covariate_set", "everything"),
    ("estimate", "estimand", "CATE"),
    ("estimate", "propensity", "forest"),
    ("encoder", "kind", "resnet"),
])
def test_value_outside_choices(section, key, value):
    doc = {"study": {"name": "t"}, "units": {"format": "csv", "path": "u.csv", "treatment": "w",
                                              "outcome": "y"}}
    doc.setdefault(section, {})[key] = value
    with pytest.raises(StudyFileError) as ei:
        validate(doc)
    msg = str(ei.value)
    assert f"[{section}] {key} = {value!r} is not one of" in msg
    assert repr(list(SCHEMA[section][key][2])) in msg


@pytest.mark.parametrize("key", ["methods", "adjustments"])
def test_lists_of_strings_checked(key):
    doc = {"study": {"name": "t"}, "units": {"format": "demo"}, "estimate": {key: ["dim", 3]}}
    with pytest.raises(StudyFileError,
                       match=rf"\[estimate\] {key} = \['dim', 3\] should hold only strings; 3 is not"):
        validate(doc)


def test_report_formats_checked():
    doc = {"study": {"name": "t"}, "units": {"format": "demo"}, "report": {"formats": ["html", "pdf"]}}
    with pytest.raises(StudyFileError, match=r"formats \['pdf'\] not among"):
        validate(doc)


def test_int_accepted_where_float_expected(tmp_path):
    s = load_study(write(tmp_path, MINIMAL + '\n[estimate]\nclip = 0\n'
                                             '\n[simulate]\ntau = 2\n'))
    # (int, float) keys keep the integer as given
    assert s["estimate"]["clip"] == 0 and not isinstance(s["estimate"]["clip"], bool)
    assert s["simulate"]["tau"] == 2


def test_float_refused_where_int_expected(tmp_path):
    with pytest.raises(StudyFileError, match=r"\[estimate\] folds = 5.0 should be an integer"):
        load_study(write(tmp_path, MINIMAL + '\n[estimate]\nfolds = 5.0\n'))


# ----------------------------------------------------------------------------- cross-key rules
@pytest.mark.parametrize("fmt", ["csv", "vector", "causalimages-rdata"])
def test_units_path_required_for_non_demo_formats(tmp_path, fmt):
    roles = 'treatment = "w"\noutcome = "y"\n' if fmt != "causalimages-rdata" else ""
    text = f'[study]\nname = "t"\n[units]\nformat = "{fmt}"\n{roles}'
    with pytest.raises(StudyFileError, match=rf"\[units\] format = '{fmt}' needs the key 'path'"):
        load_study(write(tmp_path, text))


@pytest.mark.parametrize("missing", ["treatment", "outcome"])
def test_csv_needs_treatment_and_outcome(tmp_path, missing):
    text = CSV_UNITS.replace(f'{missing} = ', "# ")
    with pytest.raises(StudyFileError, match=rf"\[units\] format = 'csv' needs the key '{missing}'"):
        load_study(write(tmp_path, text))


def test_simulate_with_non_demo_units(tmp_path):
    with pytest.raises(StudyFileError, match=r"\[simulate\] applies only to \[units\] format = 'demo'"):
        load_study(write(tmp_path, CSV_UNITS + '\n[simulate]\nn_images = 10\n'))


def test_demo_units_need_demo_imagery(tmp_path):
    with pytest.raises(StudyFileError, match=r"\[imagery\] format = 'npz' does not go with \[units\] format = "
                                             r"'demo'; use 'demo' \(or leave \[imagery\] format out\)"):
        load_study(write(tmp_path, MINIMAL + '\n[imagery]\nformat = "npz"\npath = "x.npz"\n'))


def test_valid_csv_study(tmp_path):
    s = load_study(write(tmp_path, CSV_UNITS))
    assert s["units"]["format"] == "csv"
    assert s["imagery"]["path"] == "data/images.npz"


# ----------------------------------------------------------------------------- file errors
def test_invalid_toml(tmp_path):
    p = write(tmp_path, '[study]\nname = "unterminated\n[units]\nformat = "demo"\n')
    with pytest.raises(StudyFileError, match="not valid TOML") as ei:
        load_study(p)
    assert isinstance(ei.value, ValueError)
    assert str(p) in str(ei.value)


def test_non_utf8_file(tmp_path):
    p = tmp_path / "latin.toml"
    p.write_bytes('[study]\nname = "caf\u00e9"\n[units]\nformat = "demo"\n'.encode("latin-1"))
    with pytest.raises(StudyFileError, match="not valid TOML"):
        load_study(p)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.toml"
    with pytest.raises(MissingFileError) as ei:
        load_study(p)
    assert isinstance(ei.value, FileNotFoundError) and isinstance(ei.value, OSError)
    assert isinstance(ei.value, EocausalError)
    assert "nope.toml" in str(ei.value) and "does not exist" in str(ei.value)


def test_missing_file_caught_as_filenotfounderror(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_study(str(tmp_path / "absent.toml"))


# ----------------------------------------------------------------------------- paths
def test_paths_resolve_relative_to_study_folder(tmp_path, monkeypatch):
    sub = tmp_path / "project" / "studies"
    sub.mkdir(parents=True)
    p = write(sub, CSV_UNITS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_study(p)
    assert s.base_dir == sub.resolve()
    assert s.path == p.resolve()
    assert s.resolve(s["units"]["path"]) == sub.resolve() / "data" / "units.csv"
    assert (s.resolve("../shared/x.tif").resolve()
            == (tmp_path / "project" / "shared" / "x.tif").resolve())
    absolute = str(tmp_path / "abs.csv")
    assert s.resolve(absolute) == Path(absolute)


def test_relative_study_path_resolves_against_its_folder(tmp_path, monkeypatch):
    sub = tmp_path / "s"
    sub.mkdir()
    write(sub, CSV_UNITS)
    monkeypatch.chdir(tmp_path)
    s = load_study("s/study.toml")
    assert s.base_dir == sub.resolve()
    assert s.resolve("a.csv") == sub.resolve() / "a.csv"


def test_validate_without_path_uses_given_base_dir(tmp_path):
    s = validate({"study": {"name": "t"}, "units": {"format": "demo"}}, base_dir=tmp_path)
    assert s.path is None
    assert s.resolve("x.csv") == tmp_path / "x.csv"


def test_sha256_is_of_the_file_bytes(tmp_path):
    p = write(tmp_path, MINIMAL)
    assert load_study(p).sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    p2 = write(tmp_path, MINIMAL + "# a comment\n", "other.toml")
    assert load_study(p2).sha256 != load_study(p).sha256


# ----------------------------------------------------------------------------- no code execution
def test_study_file_strings_are_only_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    payload = f"__import__('os').system('touch {marker}')"
    text = (f'[study]\nname = "{payload}"\ndescription = "{payload}"\n'
            f'[units]\nformat = "csv"\npath = "{payload}"\ntreatment = "{payload}"\n'
            f'outcome = "y"\n[imagery]\nformat = "npz"\npath = "{payload}"\n')
    s = load_study(write(tmp_path, text))
    assert s.name == payload and type(s.name) is str
    assert s["units"]["path"] == payload
    assert s["units"]["treatment"] == payload
    with pytest.raises(MissingFileError, match="does not exist"):  # a path, looked up, never run
        check_study(s)
    assert not marker.exists()


def test_code_in_a_typed_value_is_a_validation_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED2"
    payload = f"__import__('os').system('touch {marker}')"
    text = MINIMAL + f'\n[estimate]\nfolds = "{payload}"\n'
    with pytest.raises(StudyFileError) as ei:
        load_study(write(tmp_path, text))
    assert "should be an integer" in str(ei.value)
    assert payload in str(ei.value)  # quoted back as data
    assert not marker.exists()


def test_code_as_a_choice_value_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED3"
    payload = f"__import__('os').system('touch {marker}')"
    with pytest.raises(StudyFileError, match="is not one of"):
        load_study(write(tmp_path, MINIMAL + f'\n[estimate]\nestimand = "{payload}"\n'))
    assert not marker.exists()


# ----------------------------------------------------------------------------- list elements
def _doc_with(section, key, value):
    doc = {"study": {"name": "t"},
           "units": {"format": "csv", "path": "u.csv", "treatment": "w", "outcome": "y", "lon": "x", "lat": "y"},
           "imagery": {"format": "raster", "path": "i.tif", "chip_px": 8, "chip_size_m": 100}}
    doc.setdefault(section, {})[key] = value
    return doc


@pytest.mark.parametrize("section,key", [("units", "covariates"), ("imagery", "path"),
                                         ("report", "formats")])
@pytest.mark.parametrize("bad", [3, 1.5, True])
def test_string_lists_refuse_non_strings(section, key, bad):
    with pytest.raises(StudyFileError) as ei:
        validate(_doc_with(section, key, ["html", bad]))
    msg = str(ei.value)
    assert f"[{section}] {key} = " in msg
    assert f"should hold only strings; {bad!r} is not" in msg


def test_bands_accept_names_or_indexes_only():
    s = validate(_doc_with("imagery", "bands", ["B4", 8]))
    assert s["imagery"]["bands"] == ["B4", 8]
    for bad in (1.5, True):
        with pytest.raises(StudyFileError, match=rf"should hold only strings or integers; {bad!r} is not"):
            validate(_doc_with("imagery", "bands", ["B4", bad]))


def test_string_lists_of_strings_accepted():
    s = validate(_doc_with("units", "covariates", ["x1", "x2"]))
    assert s["units"]["covariates"] == ["x1", "x2"]
    assert validate(_doc_with("imagery", "path", ["a.tif", "b.tif"]))["imagery"]["path"] == ["a.tif", "b.tif"]


@pytest.mark.parametrize("section, key, value, what", [
    ("estimate", "alpha", "1.0", r"in \(0, 1\)"), ("estimate", "folds", "1", "at least 2"),
    ("estimate", "clip", "0.5", r"in \[0, 0.5\)"), ("encoder", "n_features", "7", "even"),
    ("encoder", "n_features", "-4", "even"), ("simulate", "n_images", "3", "at least 10"),
])
def test_values_out_of_range_are_refused(tmp_path, section, key, value, what):
    with pytest.raises(StudyFileError, match=rf"\[{section}\] {key} ?= ?.*must be .*{what}"):
        load_study(write(tmp_path, MINIMAL + f"\n[{section}]\n{key} = {value}\n"))


def test_a_folder_is_not_a_study_file(tmp_path):
    with pytest.raises(StudyFileError, match="is a folder"):
        load_study(tmp_path)


def test_estimation_options_of_the_notebook_face(tmp_path):
    """repeats, ipw_se and solver reach estimate() from a study file, with typed errors."""
    text = ('[study]\nname = "t"\n[units]\nformat = "demo"\n[imagery]\nformat = "demo"\n'
            '[estimate]\nrepeats = 3\nipw_se = "known-e"\nsolver = "sklearn"\n')
    study = load_study(write(tmp_path, text))
    est = study["estimate"]
    assert (est["repeats"], est["ipw_se"], est["solver"]) == (3, "known-e", "sklearn")
    defaults = load_study(write(tmp_path, text.split("[estimate]")[0], name="d.toml"))["estimate"]
    assert (defaults["repeats"], defaults["ipw_se"], defaults["solver"]) == (1, "auto", "native")
    for bad, match in (("repeats = 0", "at least 1"), ('ipw_se = "sandwich"', "ipw_se"),
                       ('solver = "fast"', "solver"), ("native = false", "unknown key 'native'")):
        with pytest.raises(StudyFileError, match=match):
            load_study(write(tmp_path, text.split("[estimate]")[0] + "[estimate]\n" + bad + "\n", name="b.toml"))
