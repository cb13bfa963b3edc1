"""Tests of the causalimages readers (RData workspace, TFRecord) and the protobuf helpers.

The real files live in ``../shared/data/causalimages`` (see its README for provenance, GPL-3);
tests that need them are skipped only when that folder is absent. Protobuf messages and
TFRecords for the unit tests are encoded by hand below, independently of the decoder.
"""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

import eocausal
from eocausal.data import _protobuf as pb
from eocausal.data import causalimages as ci
from eocausal.errors import (
    ColumnError,
    DataFileError,
    DataQualityWarning,
    InputError,
    MissingFileError,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "causalimages"
RDATA = DATA / "CausalImagesTutorialData.RData"
TFREC = DATA / "ExampleRecord.tfrecord"
needs_data = pytest.mark.skipif(not (RDATA.exists() and TFREC.exists()),
                                reason=f"causalimages data not found in {DATA}")

# 1-based ids of the 7 units whose xC (and X5_WxC) is NA in the workspace
NA_UNITS = [1230, 1231, 1754, 1755, 1756, 1757, 1758]


# ============================================================================= hand encoder


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _tag(num: int, wire: int) -> bytes:
    return _varint(num << 3 | wire)


def _ld(num: int, payload: bytes) -> bytes:
    return _tag(num, 2) + _varint(len(payload)) + payload


def _vi(num: int, value: int) -> bytes:
    return _tag(num, 0) + _varint(value)


def _f_int(*values: int) -> bytes:  # Feature{int64_list = 3 {value = 1 packed}}
    return _ld(3, _ld(1, b"".join(_varint(v) for v in values)))


def _f_bytes(payload: bytes) -> bytes:  # Feature{bytes_list = 1 {value = 1}}
    return _ld(1, _ld(1, payload))


def _example(features: dict[str, bytes]) -> bytes:
    entries = b"".join(_ld(1, _ld(1, k.encode()) + _ld(2, f)) for k, f in features.items())
    return _ld(1, entries)


def _tensor(dtype: int, shape: tuple[int, ...], *, content: bytes | None = None,
            values: bytes = b"") -> bytes:
    dims = b"".join(_ld(2, _vi(1, d)) for d in shape)
    return _vi(1, dtype) + _ld(2, dims) + (b"" if content is None else _ld(4, content)) + values


def _key(s: str) -> bytes:
    return _tensor(7, (), values=_ld(8, s.encode()))


def _frame(payload: bytes) -> bytes:
    n = struct.pack("<Q", len(payload))
    return (n + struct.pack("<I", pb.masked_crc32c(n)) + payload
            + struct.pack("<I", pb.masked_crc32c(payload)))


def _record(key: str, img: np.ndarray, *, index: int, how: str = "content",
            time: int | None = None) -> bytes:
    h, w, c = img.shape[-3:]
    if how == "content":
        raw = _tensor(19, img.shape, content=img.astype("<f2").tobytes())
    elif how == "half_val":
        bits = img.astype("<f2").view("<u2").ravel()
        raw = _tensor(19, img.shape, values=_ld(13, b"".join(_varint(int(b)) for b in bits)))
    elif how == "float_val":
        raw = _tensor(1, img.shape, values=_ld(5, img.astype("<f4").tobytes()))
    else:
        raise ValueError(how)
    feats = {"key": _f_bytes(_key(key)), "height": _f_int(h), "width": _f_int(w),
             "channels": _f_int(c), "index": _f_int(index), "raw_image": _f_bytes(raw)}
    if time is not None:
        feats["time"] = _f_int(time)
    return _example(feats)


def _record_offsets(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        out.append(pos)
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 16 + n
    return out


# ============================================================================= _protobuf


@pytest.mark.parametrize("raw, value", [
    (b"\x00", 0),
    (b"\x01", 1),
    (b"\x7f", 127),
    (b"\x80\x01", 128),
    (b"\x96\x01", 150),
    (b"\xac\x02", 300),
    (b"\xff\xff\xff\xff\x0f", 2**32 - 1),
    (b"\xff" * 9 + b"\x01", 2**64 - 1),
])
def test_read_varint(raw, value):
    assert pb.read_varint(raw + b"\x05") == (value, len(raw))
    assert _varint(value) == raw  # the test encoder agrees with the protobuf docs


def test_read_varint_offset_and_errors():
    assert pb.read_varint(b"\x08\x96\x01", 1) == (150, 3)
    with pytest.raises(pb.DecodeError, match="truncated varint"):
        pb.read_varint(b"\x96")
    with pytest.raises(pb.DecodeError, match="longer than 10 bytes"):
        pb.read_varint(b"\xff" * 11 + b"\x01")


def test_to_signed64():
    assert pb.to_signed64(2**64 - 1) == -1
    assert pb.to_signed64(2**63) == -(2**63)
    assert pb.to_signed64(2**63 - 1) == 2**63 - 1
    assert pb.to_signed64(5) == 5


def test_iter_fields_all_wire_types():
    # protobuf docs: field 1 varint 150 -> 08 96 01; field 2 "testing" -> 12 07 ...
    msg = (b"\x08\x96\x01" + b"\x12\x07testing" + b"\x1d" + struct.pack("<f", 1.5)
           + b"\x21" + struct.pack("<d", -2.25) + b"\xa0\x1f\x2a")  # field 500 varint 42
    out = [(n, w, v if isinstance(v, int) else bytes(v)) for n, w, v in pb.iter_fields(msg)]
    assert out == [(1, 0, 150), (2, 2, b"testing"), (3, 5, struct.pack("<f", 1.5)),
                   (4, 1, struct.pack("<d", -2.25)), (500, 0, 42)]


def test_nested_messages_and_grouping():
    inner = _vi(1, 7) + _ld(2, b"abc")
    msg = _ld(3, inner) + _vi(1, 1) + _ld(3, _vi(1, 300))
    f = pb.fields_by_number(msg)
    assert sorted(f) == [1, 3]
    assert f[1] == [(0, 1)]
    assert [w for w, _ in f[3]] == [2, 2]
    first = pb.fields_by_number(f[3][0][1])
    assert first[1] == [(0, 7)] and bytes(first[2][0][1]) == b"abc"
    assert pb.fields_by_number(f[3][1][1])[1] == [(0, 300)]


def test_packed_and_unpacked_varints():
    # protobuf docs: packed field 4 = [3, 270, 86942] -> 22 06 03 8E 02 9E A7 05
    packed = b"\x22\x06\x03\x8e\x02\x9e\xa7\x05"
    vals = pb.repeated_varints(pb.fields_by_number(packed)[4])
    np.testing.assert_array_equal(vals, [3, 270, 86942])
    assert vals.dtype == np.int64
    mixed = _vi(4, 3) + _ld(4, _varint(270) + _varint(-2)) + _vi(4, 2**63 + 1)
    np.testing.assert_array_equal(pb.repeated_varints(pb.fields_by_number(mixed)[4]),
                                  [3, 270, -2, -(2**63) + 1])
    unsigned = pb.repeated_varints(pb.fields_by_number(_vi(4, 2**64 - 1))[4], signed=False)
    assert unsigned.dtype == np.uint64 and int(unsigned[0]) == 2**64 - 1


def test_packed_and_unpacked_fixed():
    floats = np.array([1.5, -2.0, 0.25], dtype="<f4")
    msg = _ld(2, floats.tobytes()) + _tag(2, 5) + struct.pack("<f", 7.0)
    np.testing.assert_array_equal(pb.repeated_fixed(pb.fields_by_number(msg)[2], "<f4"),
                                  [1.5, -2.0, 0.25, 7.0])
    doubles = _ld(6, np.array([0.1, 1e300]).tobytes())
    np.testing.assert_array_equal(pb.repeated_fixed(pb.fields_by_number(doubles)[6], "<f8"),
                                  [0.1, 1e300])
    with pytest.raises(pb.DecodeError, match="not a multiple of 4"):
        pb.repeated_fixed(pb.fields_by_number(_ld(2, b"\x00" * 5))[2], "<f4")


@pytest.mark.parametrize("msg, match", [
    (b"\x12\x05abc", "runs past the end"),
    (b"\x1b", "wire type 3"),
    (b"\x00\x01", "field number 0"),
    (b"\x1d\x00\x00", "truncated fixed32"),
    (b"\x08", "truncated varint"),
])
def test_iter_fields_malformed(msg, match):
    with pytest.raises(pb.DecodeError, match=match):
        list(pb.iter_fields(msg))


def test_parse_example_all_feature_kinds():
    floats = np.array([0.5, -3.0], dtype="<f4")
    ex = _example({"b": _f_bytes(b"\x00raw"), "f": _ld(2, _ld(1, floats.tobytes())),
                   "i": _f_int(5, -1, 300)})
    feats = pb.parse_example(ex)
    assert sorted(feats) == ["b", "f", "i"]
    assert feats["b"] == ("bytes", [b"\x00raw"])
    assert feats["f"][0] == "float"
    np.testing.assert_array_equal(feats["f"][1], [0.5, -3.0])
    assert feats["i"][0] == "int64"
    np.testing.assert_array_equal(feats["i"][1], [5, -1, 300])
    with pytest.raises(pb.DecodeError, match="feature 'e' holds no bytes, float or int64 list"):
        pb.parse_example(_example({"e": b""}))


def test_last_checks_wire_type():
    f = pb.fields_by_number(_vi(1, 3) + _vi(1, 4) + _ld(2, b"x"))
    assert pb.last(f, 1, 0) == 4  # the last occurrence wins
    assert pb.last(f, 9, 0, "absent") == "absent"
    with pytest.raises(pb.DecodeError, match="field 2: wire type 2, expected 0"):
        pb.last(f, 2, 0)
    with pytest.raises(pb.DecodeError, match="field 1: wire type 2, expected 0"):  # dtype sent as bytes
        pb.decode_tensor(_ld(1, b"\x07"))


@pytest.mark.parametrize("data, crc", [
    (b"", 0),
    (b"123456789", 0xE3069283),          # CRC-32C check value
    (bytes(32), 0x8A9136AA),             # RFC 3720 B.4
    (b"\xff" * 32, 0x62A8AB43),          # RFC 3720 B.4
    (bytes(range(32)), 0x46DD794E),      # RFC 3720 B.4
    (bytes(range(31, -1, -1)), 0x113FDB5C),  # RFC 3720 B.4
])
def test_crc32c_known_vectors(data, crc):
    assert pb.crc32c(data) == crc


def test_crc32c_continues_and_masks():
    assert pb.crc32c(b"56789", pb.crc32c(b"1234")) == 0xE3069283
    c = 0xE3069283
    assert pb.masked_crc32c(b"123456789") == ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % 2**32


@needs_data
def test_masked_crc32c_matches_real_tfrecord():
    head = TFREC.read_bytes()[:12]
    assert pb.masked_crc32c(head[:8]) == struct.unpack("<I", head[8:12])[0]


def test_iter_tfrecords_hand_framed():
    payloads = [b"", b"a", b"hello world" * 30]
    got = [bytes(p) for p in pb.iter_tfrecords(b"".join(_frame(p) for p in payloads))]
    assert got == payloads
    bad = bytearray(_frame(b"abc") + _frame(b"defg"))
    bad[-6] ^= 0x01  # a data byte of record 1
    with pytest.raises(pb.DecodeError, match=r"record 1 \(byte 19\): checksum of the data"):
        list(pb.iter_tfrecords(bytes(bad)))
    assert [bytes(p) for p in pb.iter_tfrecords(bytes(bad), check_crc=False)] == [b"abc", b"degg"]


# ============================================================================= RData


@pytest.fixture(scope="module")
def tutorial():
    if not RDATA.exists():
        pytest.skip(f"{RDATA} not found")
    with pytest.warns(DataQualityWarning):
        return ci.read_causalimages(RDATA)


@pytest.fixture(scope="module")
def raw_objects():
    if not RDATA.exists():
        pytest.skip(f"{RDATA} not found")
    import rdata

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message='Missing constructor for R class "data.table"')
        objs = dict(rdata.read_rda(RDATA))
    objs["LongLat"] = objs["LongLat"].reset_index(drop=True)
    return objs


def _write_rdata(path: Path, objs: dict) -> Path:
    import rdata

    rdata.write_rda(path, objs)
    return path


def _small_workspace(objs: dict, units: np.ndarray) -> dict:
    """The workspace restricted to the units at 0-based positions ``units`` and their images
    (writing all 327 images with rdata takes ~40 s)."""
    keys = np.unique(objs["KeysOfObservations"][units])
    img = np.isin(objs["KeysOfImages"], keys)
    return {"FullImageArray": objs["FullImageArray"][img], "KeysOfImages": objs["KeysOfImages"][img],
            "KeysOfObservations": objs["KeysOfObservations"][units],
            "LongLat": objs["LongLat"].iloc[units].reset_index(drop=True),
            "obsW": objs["obsW"][units], "obsY": objs["obsY"][units], "X": objs["X"][units]}


def test_public_names_are_wired():
    assert eocausal.read_causalimages is ci.read_causalimages
    assert eocausal.read_tfrecord is ci.read_tfrecord


@needs_data
def test_units_and_images(tutorial):
    u = tutorial.units
    assert u.n == 2082
    np.testing.assert_array_equal(u.ids, np.arange(1, 2083))
    assert int(u.w().sum()) == 825
    assert (u.treatment, u.outcome, u.image_key, u.clusters) == ("W", "Y", "image_key", "cluster")
    np.testing.assert_array_equal(u.frame["cluster"], u.frame["image_key"])
    assert u.describe()["n_clusters"] == 327
    assert u.crs.to_epsg() == 4326
    np.testing.assert_array_equal(u.geometry.x, u.frame["geo_long"])
    np.testing.assert_array_equal(u.geometry.y, u.frame["geo_lat"])
    # inside Uganda's bounding box (lon 29.57..35.04, lat -1.48..4.23), not swapped
    assert u.frame["geo_long"].between(29.57, 35.04).all() and u.frame["geo_lat"].between(-1.48, 4.23).all()
    img = tutorial.images
    assert img.images.shape == (327, 35, 35, 3)
    assert img.bands == ("red", "green", "blue")
    assert len(np.unique(img.keys)) == 327 and img.keys.min() == 1 and img.keys.max() == 331
    px = img.images
    assert px.min() == 0 and px.max() == 255 and np.array_equal(px, np.round(px))
    np.testing.assert_allclose(px.mean(axis=(0, 1, 2), dtype=np.float64), [122.4, 155.2, 114.7], atol=0.05)
    assert img.chips(u.keys()).shape == (2082, 3, 35, 35)  # every unit's key has an image


@needs_data
def test_x_columns_identities(tutorial):
    f = tutorial.units.frame
    w = f["W"].to_numpy(float)
    np.testing.assert_array_equal(f["X1_W"], w)
    np.testing.assert_array_equal(f["X3_WxA"], w * f["xA"])
    np.testing.assert_array_equal(f["X7_WxB"], w * f["xB"])
    x5 = f["X5_WxC"].to_numpy()  # not selected by default: its NAs are kept
    assert f.loc[np.isnan(x5), "unit"].tolist() == NA_UNITS
    raw_xc = np.where(f["xC_missing"] == 1, np.nan, f["xC"])
    np.testing.assert_array_equal(x5, w * raw_xc)
    assert set(np.unique(f["xA"])) == {0.0, 1.0} and set(np.unique(f["xB"])) == {0.0, 1.0}
    assert not (f["X3_WxA"] == f["xA"]).all()  # the product is not the covariate itself
    doc = ci.read_causalimages.__doc__
    for phrase in ("X1_W == W", "X3_WxA == W * xA", "X5_WxC == W * xC", "X7_WxB == W * xB",
                   "bad-control"):
        assert phrase in doc
    assert any("bad-control" in n for n in tutorial.notes)


@needs_data
def test_default_pretreatment_with_mean_imputation():
    with pytest.warns(DataQualityWarning, match=r"imputed 7 missing covariate values \(xC: 7\)") as rec:
        data = eocausal.read_causalimages(RDATA)
    assert [r.filename for r in rec] == [__file__]  # stacklevel points at the caller
    u = data.units
    assert u.covariates == ("xA", "xC", "xB", "xC_missing")
    f = u.frame
    assert f.loc[f["xC_missing"] == 1, "unit"].tolist() == NA_UNITS
    assert f["xC_missing"].sum() == 7
    observed = f.loc[f["xC_missing"] == 0, "xC"]
    assert len(observed) == 2075
    np.testing.assert_allclose(f.loc[f["xC_missing"] == 1, "xC"], observed.mean(), rtol=1e-12)
    assert np.isfinite(u.x()).all()
    notes = " | ".join(data.notes)
    assert "7 values filled with the column mean" in notes and "xC_missing" in notes
    assert "treatment-derived columns" not in notes


@needs_data
def test_tutorial_and_all_covariates():
    with pytest.warns(DataQualityWarning, match=r"14 missing .*xC: 7, X5_WxC: 7"):
        tut = ci.read_causalimages(RDATA, covariates="tutorial")
    assert tut.units.covariates == ("xA", "X3_WxA", "xC", "X5_WxC", "xB", "X7_WxB", "xC_missing")
    f = tut.units.frame
    x5_obs = f.loc[f["xC_missing"] == 0, "X5_WxC"]
    np.testing.assert_allclose(f.loc[f["xC_missing"] == 1, "X5_WxC"], x5_obs.mean(), rtol=1e-12)
    assert any("treatment-derived columns ['X3_WxA', 'X5_WxC', 'X7_WxB']" in n for n in tut.notes)
    with pytest.warns(DataQualityWarning):
        everything = ci.read_causalimages(RDATA, covariates="all")
    assert everything.units.covariates == ci.X_COLUMNS + ("xC_missing",)
    assert any("X1_W" in n and "treatment-derived" in n for n in everything.notes)


@needs_data
def test_explicit_list_without_missing_values_is_silent():
    data = ci.read_causalimages(RDATA, covariates=["xB", "xA"], impute=None)  # -W error: no warning
    assert data.units.covariates == ("xB", "xA")
    assert "xC_missing" not in data.units.frame.columns
    assert data.units.frame["xC"].isna().sum() == 7  # unselected columns are left as read
    assert data.units.n == 2082


@needs_data
def test_impute_drop_and_none():
    with pytest.warns(DataQualityWarning, match="dropped 7 of 2082 units"):
        dropped = ci.read_causalimages(RDATA, impute="drop")
    u = dropped.units
    assert u.n == 2075 and u.covariates == ("xA", "xC", "xB")
    assert set(NA_UNITS).isdisjoint(u.ids.tolist())
    assert any("dropped 7 units" in n for n in dropped.notes)
    with pytest.raises(InputError, match=r"missing values \(xC: 7\) in units \[1230, 1231"):
        ci.read_causalimages(RDATA, impute=None)


@needs_data
def test_drop_keeps_treatment_of_remaining_units(tutorial):
    with pytest.warns(DataQualityWarning):
        dropped = ci.read_causalimages(RDATA, impute="drop")
    full = tutorial.units.frame
    keep = ~full["unit"].isin(NA_UNITS)
    np.testing.assert_array_equal(dropped.units.w(), full.loc[keep, "W"].to_numpy(float))
    np.testing.assert_array_equal(dropped.units.frame["xC"], full.loc[keep, "xC"])


def test_bad_arguments():
    with pytest.raises(InputError, match="unknown mode 'pre'"):
        ci.read_causalimages("nowhere.RData", covariates="pre")
    with pytest.raises(ColumnError, match=r"unknown columns \['x2'\]"):
        ci.read_causalimages("nowhere.RData", covariates=["xA", "x2"])
    with pytest.raises(InputError, match="more than once"):
        ci.read_causalimages("nowhere.RData", covariates=["xA", "xA"])
    with pytest.raises(InputError, match="impute: expected"):
        ci.read_causalimages("nowhere.RData", impute="median")


def test_missing_files(tmp_path):
    with pytest.raises(MissingFileError, match="no such file") as exc:
        ci.read_causalimages(tmp_path / "absent.RData")
    assert isinstance(exc.value, FileNotFoundError)
    with pytest.raises(MissingFileError):
        ci.read_tfrecord(tmp_path / "absent.tfrecord")
    with pytest.raises(DataFileError, match="is not a file"):
        ci.read_causalimages(tmp_path)


def test_not_an_rdata_file(tmp_path):
    text = tmp_path / "notes.RData"
    text.write_text("hello, this is not R\n")
    with pytest.raises(DataFileError, match="not an R workspace"):
        ci.read_causalimages(text)
    gz = tmp_path / "other.RData"
    gz.write_bytes(gzip.compress(b"PK\x03\x04 not R either"))
    with pytest.raises(DataFileError, match="not an R workspace"):
        ci.read_causalimages(gz)
    broken = tmp_path / "broken.RData"
    broken.write_bytes(gzip.compress(b"RDX3\nX\n" + b"\x00" * 7))
    with pytest.raises(DataFileError, match="cannot parse the R workspace"):
        ci.read_causalimages(broken)


@needs_data
def test_rdata_truncated_and_tfrecord_as_rdata(tmp_path):
    trunc = tmp_path / "trunc.RData"
    trunc.write_bytes(RDATA.read_bytes()[:5000])
    with pytest.raises(DataFileError, match="trunc.RData"):
        ci.read_causalimages(trunc)
    with pytest.raises(DataFileError, match="not an R workspace"):
        ci.read_causalimages(TFREC)


@needs_data
def test_rdata_missing_objects(tmp_path, raw_objects):
    small = {k: raw_objects[k] for k in ("obsW", "obsY", "X")}
    path = _write_rdata(tmp_path / "small.RData", small)
    with pytest.raises(DataFileError, match=r"missing the objects \['FullImageArray', "
                                            r"'KeysOfImages', 'KeysOfObservations', 'LongLat'\]"):
        ci.read_causalimages(path)


@needs_data
def test_rdata_roundtrip_and_broken_identity(tmp_path, raw_objects):
    na_pos = np.array(NA_UNITS) - 1
    pos = np.concatenate([np.arange(40), na_pos])
    objs = _small_workspace(raw_objects, pos)
    with pytest.warns(DataQualityWarning, match=r"imputed 7 missing"):
        same = ci.read_causalimages(_write_rdata(tmp_path / "same.RData", objs))
    with pytest.warns(DataQualityWarning):
        full = ci.read_causalimages(RDATA)
    assert same.units.n == 47
    np.testing.assert_array_equal(same.units.frame["image_key"], full.units.frame["image_key"].iloc[pos])
    np.testing.assert_array_equal(same.images.chips(same.units.keys()),
                                  full.images.chips(full.units.keys()[pos]))
    x = np.array(objs["X"], copy=True)
    first_treated = int(np.flatnonzero(objs["obsW"] == 1)[0])
    x[first_treated, 2] = 1 - x[first_treated, 1]  # break X3_WxA == W*xA in one unit
    objs["X"] = x
    with pytest.raises(DataFileError, match=r"\['X3_WxA == W\*xA'\] fail"):
        ci.read_causalimages(_write_rdata(tmp_path / "broken.RData", objs))


# ============================================================================= TFRecord


@pytest.fixture(scope="module")
def records():
    if not TFREC.exists():
        pytest.skip(f"{TFREC} not found")
    return ci.read_tfrecord(TFREC)


@needs_data
def test_tfrecord_contents(records, tutorial):
    assert len(records) == 82
    assert records.images.shape == (82, 35, 35, 3) and records.images.dtype == np.float32
    assert records.keys.dtype.kind == "U" and len(set(records.keys.tolist())) == 82
    np.testing.assert_array_equal(records.index, np.arange(1, 83))
    assert records.index.dtype == np.int64
    assert set(int(k) for k in records.keys) <= set(tutorial.images.keys.tolist())
    i = records.keys.tolist().index("199")
    rdata_img = tutorial.images.images[tutorial.images.positions([199])[0]]
    np.testing.assert_array_equal(records.images[i], rdata_img)
    # every record equals its RData image (the float16 of integers 0..255 is exact)
    pos = tutorial.images.positions([int(k) for k in records.keys])
    np.testing.assert_array_equal(records.images, tutorial.images.images[pos])


@needs_data
def test_tfrecord_to_source(records, tutorial):
    as_str = records.to_source()
    assert as_str.keys.tolist()[:1] == [records.keys[0]] and isinstance(as_str.keys[0], str)
    src = records.to_source(key_type=int, bands=ci.BANDS)
    assert src.bands == ("red", "green", "blue")
    keys = tutorial.units.frame["image_key"]
    shared = keys[keys.isin(src.keys.tolist())].to_numpy()[:50]
    assert len(shared) == 50
    np.testing.assert_array_equal(src.chips(shared), tutorial.images.chips(shared))


@needs_data
def test_hand_encoded_key_matches_real_file():
    assert _ld(1, _key("199")) in TFREC.read_bytes()[:64]


@needs_data
def test_tfrecord_flipped_byte(tmp_path):
    data = bytearray(TFREC.read_bytes())
    offsets = _record_offsets(bytes(data))
    assert len(offsets) == 82
    bad = data.copy()
    bad[offsets[5] + 12 + 2000] ^= 0x10  # a byte inside record 5's payload
    path = tmp_path / "flipped.tfrecord"
    path.write_bytes(bytes(bad))
    with pytest.raises(DataFileError, match=r"record 5 \(byte \d+\): checksum of the data"):
        ci.read_tfrecord(path)
    bad = data.copy()
    bad[offsets[3] + 1] ^= 0x01  # the length field of record 3
    path.write_bytes(bytes(bad))
    with pytest.raises(DataFileError, match=r"record 3 .*checksum of the length"):
        ci.read_tfrecord(path)


@needs_data
def test_tfrecord_truncated(tmp_path):
    data = TFREC.read_bytes()
    path = tmp_path / "trunc.tfrecord"
    path.write_bytes(data[:-100])
    with pytest.raises(DataFileError, match=r"record 81 .*truncated"):
        ci.read_tfrecord(path)
    path.write_bytes(data[:7])
    with pytest.raises(DataFileError, match=r"record 0 .*truncated header"):
        ci.read_tfrecord(path)


@needs_data
def test_tfrecord_gzip(tmp_path):
    path = tmp_path / "rec.tfrecord.gz"
    path.write_bytes(gzip.compress(TFREC.read_bytes()))
    rec = ci.read_tfrecord(path)
    assert len(rec) == 82 and rec.keys[0] == "199"


def test_tfrecord_hand_built_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(4, 3, 2, 2)).astype(np.float32)
    imgs[2, 0, 0, 0] = 0.5
    frames = [_record("a", imgs[0], index=7, how="content"),
              _record("b", imgs[1], index=8, how="half_val"),
              _record("c", imgs[2], index=9, how="float_val"),
              _example({"key": _f_int(42), "height": _f_int(3), "width": _f_int(2),
                        "channels": _f_int(2),
                        "raw_image": _f_bytes(_tensor(2, (3, 2, 2),
                                                      content=imgs[3].astype("<f8").tobytes()))})]
    path = tmp_path / "hand.tfrecord"
    path.write_bytes(b"".join(_frame(f) for f in frames))
    rec = ci.read_tfrecord(path)
    assert rec.keys.tolist() == ["a", "b", "c", "42"]
    np.testing.assert_array_equal(rec.index, [7, 8, 9, 4])  # no index feature: position + 1
    np.testing.assert_array_equal(rec.images, imgs)
    assert rec.images.dtype == np.float32


def test_tfrecord_video(tmp_path):
    vid = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2) / 4
    frames = [_record("v1", vid, index=1, time=2), _record("v2", vid + 1, index=2, time=2, how="half_val")]
    path = tmp_path / "video.tfrecord"
    path.write_bytes(b"".join(_frame(f) for f in frames))
    rec = ci.read_tfrecord(path)
    assert rec.images.shape == (2, 2, 3, 4, 2)
    np.testing.assert_array_equal(rec.images[0], vid)
    np.testing.assert_array_equal(rec.images[1], vid + 1)
    src = rec.to_source()
    assert src.is_sequence and src.chips(["v2"]).shape == (1, 2, 2, 3, 4)


def test_decode_tensor_broadcast_and_strings():
    t = pb.decode_tensor(_tensor(1, (2, 3), values=_ld(5, struct.pack("<f", 2.5))))
    np.testing.assert_array_equal(t, np.full((2, 3), 2.5, np.float32))
    s = pb.decode_tensor(_tensor(7, (2,), values=_ld(8, b"x") + _ld(8, b"yz")))
    assert s.tolist() == [b"x", b"yz"]
    neg = pb.decode_tensor(_tensor(3, (2,), values=_ld(7, _varint(-5) + _varint(6))))
    np.testing.assert_array_equal(neg, [-5, 6])
    assert neg.dtype == np.int32


@pytest.mark.parametrize("frames, match", [
    ([_record("a", np.zeros((2, 2, 1)), index=1),
      _example({"key": _f_bytes(_key("b")), "height": _f_int(2), "width": _f_int(2),
                "channels": _f_int(1)})],
     r"record 1: no 'raw_image' feature"),
    ([_example({"key": _f_bytes(_key("a")), "height": _f_int(2), "width": _f_int(2),
                "channels": _f_int(1),
                "raw_image": _f_bytes(_tensor(19, (3,), content=bytes(6)))})],
     r"record 0: raw_image has 3 values .* features say \(2, 2, 1\)"),
    ([_example({"key": _f_bytes(_key("a")), "height": _f_int(1), "width": _f_int(1),
                "channels": _f_int(1), "raw_image": _f_bytes(_tensor(14, (1,), content=bytes(2)))})],
     "unsupported tensor dtype 14"),
    ([_record("a", np.zeros((2, 2, 1)), index=1), _record("b", np.zeros((2, 1, 1)), index=2)],
     r"record 1: image shape \(2, 1, 1\) differs"),
    ([_example({"key": _f_bytes(_key("a")), "height": _f_int(1), "width": _f_int(1),
                "channels": _f_int(1),
                "raw_image": _f_bytes(_tensor(19, (1,), content=bytes(3)))})],
     "tensor_content has 3 bytes"),
])
def test_tfrecord_malformed_records(tmp_path, frames, match):
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(b"".join(_frame(f) for f in frames))
    with pytest.raises(DataFileError, match=match):
        ci.read_tfrecord(path)


def test_tfrecord_empty(tmp_path):
    path = tmp_path / "empty.tfrecord"
    path.write_bytes(b"")
    with pytest.raises(DataFileError, match="holds no records"):
        ci.read_tfrecord(path)
