"""Tests for eocausal.data.arrays: the in-memory ArraySource."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eocausal.data.arrays import ArraySource
from eocausal.data.units import Units
from eocausal.errors import EocausalError, InputError


def images(n=3, h=4, w=5, c=2, dtype=np.float64):
    """Pixel value encodes its position: 1000*i + 100*row + 10*col + band."""
    i, r, q, b = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    return (1000 * i + 100 * r + 10 * q + b).astype(dtype)


def sequences(n=2, t=3, h=4, w=5, c=2):
    """Pixel value: 10000*i + 1000*t + 100*row + 10*col + band."""
    i, s, r, q, b = np.meshgrid(np.arange(n), np.arange(t), np.arange(h), np.arange(w),
                                np.arange(c), indexing="ij")
    return (10000 * i + 1000 * s + 100 * r + 10 * q + b).astype(np.float64)


# ----------------------------------------------------------------------------- single images
def test_chips_are_channels_first_float32_with_right_pixels():
    src = ArraySource(images(), keys=["a", "b", "c"])
    out = src.chips(["c", "a"])
    assert out.shape == (2, 2, 4, 5)
    assert out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    # out[k, band, row, col] == image[key][row, col, band]
    assert out[0, 1, 3, 2] == 2000 + 300 + 20 + 1
    assert out[0, 0, 0, 4] == 2000 + 0 + 40 + 0
    assert out[1, 1, 2, 0] == 0 + 200 + 0 + 1
    np.testing.assert_array_equal(out[1], images()[0].transpose(2, 0, 1))


def test_non_square_images_keep_h_w_order():
    arr = images(n=1, h=3, w=7, c=4)
    src = ArraySource(arr)
    assert src.chip_shape == (4, 3, 7)
    out = src.chips([0])
    assert out.shape == (1, 4, 3, 7)
    assert out[0, 3, 2, 6] == 200 + 60 + 3


def test_default_keys_and_integer_dtype():
    arr = images(dtype=np.uint16)
    src = ArraySource(arr)
    assert src.keys.tolist() == [0, 1, 2]
    assert src.n_images == 3
    out = src.chips(np.array([2, 0]))
    assert out.dtype == np.float32
    assert out[0, 1, 1, 1] == 2000 + 100 + 10 + 1
    assert out[1, 0, 0, 0] == 0


def test_many_keys_map_to_one_image():
    src = ArraySource(images(), keys=["a", "b", "c"])
    out = src.chips(["b", "b", "a", "b"])
    assert out.shape == (4, 2, 4, 5)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[3])
    assert out[0, 0, 0, 0] == 1000 and out[2, 0, 0, 0] == 0
    np.testing.assert_array_equal(src.positions(["b", "b", "a", "c"]), [1, 1, 0, 2])


def test_chips_are_a_copy():
    arr = images()
    src = ArraySource(arr)
    out = src.chips([0])
    out[:] = -1
    assert src.images[0, 0, 0, 0] == 0
    np.testing.assert_array_equal(src.chips([0])[0, 1, 1, 1], 111)


def test_bands_default_and_named():
    assert ArraySource(images()).bands == ("b1", "b2")
    assert ArraySource(images(), bands=["red", "nir"]).bands == ("red", "nir")
    with pytest.raises(InputError, match="bands: 3 names for 2 bands"):
        ArraySource(images(), bands=["r", "g", "b"])


def test_repr_mentions_kind_and_chip_shape():
    assert repr(ArraySource(images())) == "ArraySource(3 images, chip (2, 4, 5))"
    assert repr(ArraySource(sequences())) == "ArraySource(2 sequences, chip (3, 2, 4, 5))"


# ----------------------------------------------------------------------------- sequences
def test_sequences_become_n_t_c_h_w():
    src = ArraySource(sequences(), keys=["p", "q"])
    assert src.is_sequence
    assert src.chip_shape == (3, 2, 4, 5)
    out = src.chips(["q", "p"])
    assert out.shape == (2, 3, 2, 4, 5)
    assert out.dtype == np.float32
    # out[k, t, band, row, col] == seq[key][t, row, col, band]
    assert out[0, 2, 1, 3, 4] == 10000 + 2000 + 300 + 40 + 1
    assert out[1, 1, 0, 2, 3] == 1000 + 200 + 30
    np.testing.assert_array_equal(out[1], sequences()[0].transpose(0, 3, 1, 2))


def test_sequence_dates():
    src = ArraySource(sequences(), dates=["2020-01-01", "2020-02-15", "2021-03-01"])
    assert src.dates.dtype == np.dtype("datetime64[D]")
    assert src.dates.tolist()[1].isoformat() == "2020-02-15"


def test_dates_refused_for_single_images():
    with pytest.raises(InputError, match="only image sequences"):
        ArraySource(images(), dates=["2020-01-01"])


def test_dates_count_must_equal_t():
    with pytest.raises(InputError, match="dates: 2 dates for T=3 frames"):
        ArraySource(sequences(), dates=["2020-01-01", "2020-02-01"])


def test_images_without_dates_have_none():
    assert ArraySource(images()).dates is None


# ----------------------------------------------------------------------------- errors
def test_unknown_keys_are_named():
    src = ArraySource(images(), keys=["a", "b", "c"])
    with pytest.raises(InputError) as ei:
        src.chips(["a", "zz", "yy", "zz"])
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, EocausalError)
    assert "['yy', 'zz'] (2 in all)" in msg
    assert "'a'" in msg.split("holds keys like")[1]
    assert "image_key" in msg


def test_unknown_integer_key():
    src = ArraySource(images())
    with pytest.raises(InputError, match=r"image keys \[7\] \(1 in all\)"):
        src.chips([0, 7])


def test_duplicate_keys():
    with pytest.raises(InputError, match=r"duplicate image keys \['a'\]"):
        ArraySource(images(), keys=["a", "b", "a"])


def test_wrong_number_of_keys():
    with pytest.raises(InputError, match="expected 3 keys .* got 2"):
        ArraySource(images(), keys=["a", "b"])


@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 5), (1, 2, 3, 4, 5, 6)])
def test_wrong_ndim(shape):
    with pytest.raises(InputError, match=r"expected shape \(n_images, H, W, C\)") as ei:
        ArraySource(np.zeros(shape))
    assert str(shape) in str(ei.value)


def test_empty_dimension():
    with pytest.raises(InputError, match="empty dimension"):
        ArraySource(np.zeros((0, 4, 4, 3)))
    with pytest.raises(InputError, match="empty dimension"):
        ArraySource(np.zeros((2, 4, 0, 3)))


@pytest.mark.parametrize("arr", [np.array([[[["a"]]]]), np.zeros((1, 2, 2, 1), dtype=complex),
                                 np.zeros((1, 2, 2, 1), dtype=object)])
def test_non_real_dtype(arr):
    with pytest.raises(InputError, match="real numeric array"):
        ArraySource(arr)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_name_keys(bad):
    arr = images()
    arr[1, 2, 3, 0] = bad
    with pytest.raises(InputError) as ei:
        ArraySource(arr, keys=["a", "b", "c"])
    msg = str(ei.value)
    assert "non-finite pixels in images with keys ['b']" in msg
    assert "'a'" not in msg and "'c'" not in msg


def test_nan_in_sequence_named():
    arr = sequences()
    arr[0, 2, 0, 0, 1] = np.nan
    with pytest.raises(InputError, match=r"keys \[0\]"):
        ArraySource(arr)


# ----------------------------------------------------------------------------- identity
def test_identity_stable_for_equal_content():
    a = ArraySource(images(), keys=["a", "b", "c"])
    b = ArraySource(images().copy(), keys=("a", "b", "c"))
    assert a.identity() == b.identity()
    assert a.identity() == a.identity()
    assert len(a.identity()) == 64 and int(a.identity(), 16) >= 0


def test_identity_independent_of_memory_layout():
    arr = images()
    fortran = np.asfortranarray(arr)
    assert ArraySource(arr).identity() == ArraySource(fortran).identity()


def test_identity_changes_with_one_pixel():
    arr = images()
    arr2 = arr.copy()
    arr2[2, 3, 4, 1] += 1
    assert ArraySource(arr).identity() != ArraySource(arr2).identity()


def test_identity_changes_with_keys():
    assert (ArraySource(images(), keys=["a", "b", "c"]).identity()
            != ArraySource(images(), keys=["a", "b", "d"]).identity())
    assert (ArraySource(images(), keys=["a", "b", "c"]).identity()
            != ArraySource(images(), keys=["b", "a", "c"]).identity())


def test_identity_changes_with_dtype_shape_and_dates():
    arr = images()
    assert ArraySource(arr).identity() != ArraySource(arr.astype(np.float32)).identity()
    # same bytes, different shape
    assert ArraySource(arr).identity() != ArraySource(arr.reshape(3, 5, 4, 2)).identity()
    s = sequences()
    d1 = ArraySource(s, dates=["2020-01-01", "2020-02-01", "2020-03-01"]).identity()
    d2 = ArraySource(s, dates=["2020-01-01", "2020-02-01", "2020-03-02"]).identity()
    assert d1 != d2
    assert d1 != ArraySource(s).identity()


# ----------------------------------------------------------------------------- engine protocol
def _units():
    df = pd.DataFrame({"uid": ["u1", "u2", "u3", "u4"], "w": [0, 1, 1, 0],
                       "y": [1.0, 2.0, 3.0, 4.0], "img": ["c", "a", "c", "b"]})
    return Units.from_frame(df, id="uid", treatment="w", outcome="y", image_key="img")


def test_keys_for_returns_units_image_keys():
    src = ArraySource(images(), keys=["a", "b", "c"])
    assert src.keys_for(_units()).tolist() == ["c", "a", "c", "b"]


def test_keys_for_refuses_non_units():
    src = ArraySource(images())
    with pytest.raises(InputError, match="got DataFrame"):
        src.keys_for(pd.DataFrame({"img": [0, 1]}))


def test_load_equals_chips_for_units_keys():
    src = ArraySource(images(), keys=["a", "b", "c"])
    u = _units()
    out = src.load(src.keys_for(u), u)
    np.testing.assert_array_equal(out, src.chips(["c", "a", "c", "b"]))
    assert out.shape == (4, 2, 4, 5) and out.dtype == np.float32
    assert out[1, 0, 0, 0] == 0 and out[0, 0, 0, 0] == 2000
    # units are optional for load
    np.testing.assert_array_equal(src.load(["b"]), src.chips(["b"]))


def test_fingerprint_is_json_able_and_carries_identity():
    import json

    src = ArraySource(images(dtype=np.float32), keys=["a", "b", "c"])
    fp = src.fingerprint()
    assert fp == {"kind": "arrays", "sha256": src.identity(), "shape": [3, 4, 5, 2],
                  "dtype": "float32"}
    assert json.loads(json.dumps(fp)) == fp
    other = ArraySource(images(dtype=np.float32) + 1, keys=["a", "b", "c"]).fingerprint()
    assert other["sha256"] != fp["sha256"]
