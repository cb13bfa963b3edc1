"""eocausal.embed with a content-addressed cache: reuse, keys, damage, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import eocausal
from eocausal.data.cache import EmbeddingCache, cache_key, keys_digest
from eocausal.encoders import RandomFeatures, encoder_fingerprint
from eocausal.encoders.executors import LocalExecutor
from eocausal.errors import CacheError, CacheWarning, DataQualityWarning, InputError

N_FEATURES = 16


# ----------------------------------------------------------------------------- helpers
def counting(enc, sleep: float = 0.0):
    """``enc`` with its transform calls and rows counted in ``enc.calls`` and ``enc.rows``.

    The encoder stays itself (its class and settings, so its cache key, are unchanged); only
    this instance's ``transform`` is wrapped. ``sleep``: seconds to wait per call.
    """
    plain = enc.transform
    enc.calls = enc.rows = 0

    def transform(chips):
        enc.calls += 1
        enc.rows += len(chips)
        if sleep:
            time.sleep(sleep)
        return plain(chips)

    enc.transform = transform
    return enc


def rf(seed=0):
    return RandomFeatures(n_features=N_FEATURES, seed=seed, device="cpu")


class PlaceSource:
    """A RasterSource-like fake: one chip per unit id, all NaN for the ids in ``bad``."""

    def __init__(self, n, bad=(), px=8):
        rng = np.random.default_rng(1)
        self.chips = {f"p{i:02d}": rng.uniform(0, 1, (3, px, px)).astype(np.float32) for i in range(n)}
        self.bad, self.px = set(bad), px
        self.loaded = 0

    def keys_for(self, units):
        return units.ids

    def load(self, keys, units):
        self.loaded += len(keys)
        return np.stack([np.full_like(self.chips[k], np.nan) if k in self.bad else self.chips[k]
                         for k in keys])

    def fingerprint(self):
        return {"kind": "fake-places", "px": self.px, "n": len(self.chips)}


def place_units(n, dx=0.0):

    df = pd.DataFrame({"id": [f"p{i:02d}" for i in range(n)], "w": np.arange(n) % 2, "y": np.arange(n) * 1.0,
                       "lon": 10 + np.arange(n) * 0.01, "lat": np.full(n, 45.0)})
    df.loc[0, "lon"] += dx
    return eocausal.Units.from_frame(df, id="id", treatment="w", outcome="y", lon="lon", lat="lat")


def shard_files(cache_dir: Path, key: str, i: int) -> tuple[Path, Path]:
    d = cache_dir / key
    return d / f"shard-{i:05d}.npy", d / f"shard-{i:05d}.json"


# ----------------------------------------------------------------------------- reuse
def test_cache_hit_reuses_every_shard_without_encoding(tmp_path, array_units):
    units, src = array_units()
    first = counting(rf())
    Z1 = eocausal.embed(units, src, first, cache_dir=tmp_path, shard_size=5, batch_size=3)
    st = Z1.attrs["embed_stats"]
    assert (st["n_shards"], st["computed"], st["reused"], st["recomputed"]) == (3, 3, 0, 0)
    assert first.rows == 12  # each distinct image encoded once, though 24 units
    meta = json.loads((tmp_path / st["cache_key"] / "meta.json").read_text())
    assert (meta["n_shards"], meta["shard_size"], meta["dim"], meta["dtype"]) == (3, 5, N_FEATURES, "<f4")
    assert meta["material"]["source"] == src.fingerprint()
    assert meta["material"]["encoder"] == encoder_fingerprint(first)

    again = counting(rf())
    Z2 = eocausal.embed(units, src, again, cache_dir=tmp_path, shard_size=5, batch_size=3)
    assert again.calls == 0
    assert (Z2.attrs["embed_stats"]["reused"], Z2.attrs["embed_stats"]["computed"]) == (3, 0)
    assert Z2.attrs["embed_stats"]["cache_key"] == st["cache_key"]
    pd.testing.assert_frame_equal(Z1, Z2, check_exact=True)
    plain = eocausal.embed(units, src, rf(), shard_size=5)  # another batch size: float sums may differ in the last bits
    np.testing.assert_allclose(plain.to_numpy(), Z1.to_numpy(), rtol=1e-5, atol=1e-6)
    assert list(Z1.index) == list(units.ids)


def test_without_cache_dir_nothing_is_written(tmp_path, monkeypatch, array_units):
    monkeypatch.chdir(tmp_path)
    units, src = array_units()
    Z = eocausal.embed(units, src, rf(), shard_size=4)
    assert Z.attrs["embed_stats"]["cache_key"] is None
    assert list(tmp_path.iterdir()) == []


def test_shard_size_and_threads_do_not_change_the_embeddings(tmp_path, array_units):
    units, src = array_units(n_images=13)
    ref = eocausal.embed(units, src, rf(), shard_size=100, batch_size=100, num_workers=0).to_numpy()
    for shard_size, batch_size, workers in [(1, 1, 3), (4, 3, 2), (5, 7, 1)]:
        Z = eocausal.embed(units, src, rf(), shard_size=shard_size, batch_size=batch_size,
                           num_workers=workers, cache_dir=tmp_path / f"c{shard_size}")
        # other batch shapes may change the last bits of float32 sums (BLAS order), nothing more
        np.testing.assert_allclose(Z.to_numpy(), ref, rtol=1e-5, atol=1e-6)


def test_return_frame_false_fills_the_cache_only(tmp_path, array_units):
    units, src = array_units()
    stats = eocausal.embed(units, src, rf(), cache_dir=tmp_path, shard_size=5, return_frame=False)
    assert isinstance(stats, dict) and stats["computed"] == 3 and stats["dropped_ids"] == []
    enc = counting(rf())
    Z = eocausal.embed(units, src, enc, cache_dir=tmp_path, shard_size=5)
    assert enc.calls == 0 and Z.shape == (24, N_FEATURES)
    with pytest.raises(InputError, match="cache_dir"):
        eocausal.embed(units, src, rf(), return_frame=False)


# ----------------------------------------------------------------------------- keys
def _key(units, src, enc, tmp_path, **kw):
    Z = eocausal.embed(units, src, enc, cache_dir=tmp_path, shard_size=4, **kw)
    return Z.attrs["embed_stats"]["cache_key"], Z.attrs["embed_stats"]["computed"]


def test_key_follows_encoder_source_and_units(tmp_path, array_units):
    units, src = array_units()
    base, computed = _key(units, src, rf(), tmp_path)
    assert computed == 3
    assert _key(*array_units(), rf(), tmp_path) == (base, 0)  # rebuilt equal inputs: same key
    assert _key(units, src, rf(seed=1), tmp_path)[0] != base  # encoder seed -> other filters
    other_config = RandomFeatures(n_features=N_FEATURES, seed=0, bias=0.5, device="cpu")
    assert _key(units, src, other_config, tmp_path)[0] != base
    # how the features are computed is not part of the key: a new batch and chunk size reuse the run
    runtime = RandomFeatures(n_features=N_FEATURES, seed=0, device="cpu", batch_size=2, chunk_size=3)
    assert _key(units, src, runtime, tmp_path) == (base, 0)
    key_px, computed = _key(*array_units(shift=1), rf(), tmp_path)  # pixels of one image
    assert key_px != base and computed == 3
    units_sub = units.subset(np.arange(units.n) < 22)  # drops the last image's two units
    assert _key(units_sub, src, rf(), tmp_path)[0] != base
    assert len({p.name for p in tmp_path.iterdir()}) == 5


def test_key_follows_chip_parameters_and_unit_geometry(tmp_path):
    units = place_units(6)
    base, _ = _key(units, PlaceSource(6), rf(), tmp_path)
    assert _key(place_units(6), PlaceSource(6), rf(), tmp_path) == (base, 0)
    # chip parameters are part of the source's fingerprint; keep the encoder state fixed
    enc = rf().fit(np.stack(list(PlaceSource(6).chips.values())))
    k1, _ = _key(units, PlaceSource(6), enc, tmp_path)
    src_px = PlaceSource(6)
    src_px.fingerprint = lambda: {"kind": "fake-places", "px": 9, "n": 6}
    assert _key(units, src_px, enc, tmp_path)[0] != k1
    moved, computed = _key(place_units(6, dx=1e-4), PlaceSource(6), enc, tmp_path)
    assert moved != k1 and computed == 2  # same pixels and keys, but a unit moved: a new run


def test_key_changes_with_raster_chip_size_and_moved_unit(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    import geopandas as gpd
    from affine import Affine

    path = tmp_path / "scene.tif"
    data = np.random.default_rng(3).uniform(0, 100, (3, 40, 40)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=3, dtype="float32",
                       crs="EPSG:32612", transform=Affine(10, 0, 500_000, 0, -10, 4_500_000)) as ds:
        ds.write(data)

    def units(dx=0.0):
        x = 500_100 + np.arange(4) * 50.0
        x[0] += dx
        gdf = gpd.GeoDataFrame({"w": [0, 1, 0, 1], "y": [1.0, 2, 3, 4]},
                               geometry=gpd.points_from_xy(x, np.full(4, 4_499_800.0)), crs="EPSG:32612")
        return eocausal.Units.from_frame(gdf, treatment="w", outcome="y")

    cache = tmp_path / "cache"
    enc = rf()
    base, _ = _key(units(), eocausal.RasterSource(path, chip_size_m=100, chip_px=8), enc, cache)
    assert _key(units(), eocausal.RasterSource(path, chip_size_m=100, chip_px=8), enc, cache) == (base, 0)
    assert _key(units(), eocausal.RasterSource(path, chip_size_m=100, chip_px=9), enc, cache)[0] != base
    assert _key(units(), eocausal.RasterSource(path, chip_size_m=120, chip_px=8), enc, cache)[0] != base
    assert _key(units(dx=10.0), eocausal.RasterSource(path, chip_size_m=100, chip_px=8), enc, cache)[0] != base


def test_cache_key_and_keys_digest_are_sensitive():
    d = keys_digest(["a", "b"])
    assert d == keys_digest(np.array(["a", "b"]))
    assert d != keys_digest(["b", "a"]) and keys_digest([1, 2]) != keys_digest(["1", "2"])
    wkb = [b"\x01", b"\x02"]
    assert keys_digest(["a", "b"], wkb, "EPSG:4326") != keys_digest(["a", "b"], [b"\x01", b"\x03"], "EPSG:4326")
    assert keys_digest(["a", "b"], wkb, "EPSG:4326") != keys_digest(["a", "b"], wkb, "EPSG:3857")
    k = cache_key({"c": 1}, {"s": 1}, d, 4096)
    assert k != cache_key({"c": 1}, {"s": 1}, d, 2048) and k != cache_key({"c": 2}, {"s": 1}, d, 4096)
    assert len(k) == 64 and k == cache_key({"c": 1}, {"s": 1}, d, 4096)
    with pytest.raises(InputError, match="geometry_wkb: 1 geometries for 2 keys"):
        keys_digest(["a", "b"], [b"\x01"], "EPSG:4326")


def test_write_shard_refuses_rows_that_do_not_match_the_keys(tmp_path):
    run = EmbeddingCache(tmp_path).open_run({"e": 1}, {"s": 1}, "d", shard_size=2, n_shards=1)
    with pytest.raises(InputError, match=r"values: shard 0 expects \(2, dim\) values"):
        run.write_shard(0, np.zeros((3, 4), np.float32), ["k1", "k2"], "dig")
    assert run.load_shard(0, "dig") is None  # nothing was written


# ----------------------------------------------------------------------------- damage
def _flip(path: Path, at: int = -5) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0xFF
    path.write_bytes(bytes(b))


def _edit_json(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_suffix(".swap")
    a.rename(tmp), b.rename(a), tmp.rename(b)


DAMAGE = {
    "flip a byte in the npy": (lambda d, k: _flip(shard_files(d, k, 1)[0]), 1),
    "flip a header byte": (lambda d, k: _flip(shard_files(d, k, 1)[0], at=12), 1),
    "truncate the npy": (lambda d, k: shard_files(d, k, 1)[0].write_bytes(
        shard_files(d, k, 1)[0].read_bytes()[:100]), 1),
    "delete the npy": (lambda d, k: shard_files(d, k, 1)[0].unlink(), 1),
    "edit the sidecar checksum": (lambda d, k: _edit_json(shard_files(d, k, 1)[1], sha256="0" * 64), 1),
    "edit the sidecar keys digest": (lambda d, k: _edit_json(shard_files(d, k, 1)[1], keys_digest="x"), 1),
    "garbage sidecar": (lambda d, k: shard_files(d, k, 1)[1].write_text("{not json"), 1),
    "swap two npy files": (lambda d, k: _swap(shard_files(d, k, 0)[0], shard_files(d, k, 1)[0]), 2),
    "swap two shards with sidecars": (lambda d, k: [_swap(shard_files(d, k, 0)[j], shard_files(d, k, 1)[j])
                                                    for j in (0, 1)], 2),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_shard_is_detected_and_recomputed(tmp_path, damage, array_units):
    units, src = array_units()
    clean = eocausal.embed(units, src, rf(), cache_dir=tmp_path, shard_size=4)
    key = clean.attrs["embed_stats"]["cache_key"]
    tamper, n_bad = DAMAGE[damage]
    tamper(tmp_path, key)
    enc = counting(rf())
    with pytest.warns(CacheWarning, match=rf"{n_bad} of 3 cached embedding shards .* rejected and computed again"):
        Z = eocausal.embed(units, src, enc, cache_dir=tmp_path, shard_size=4)
    st = Z.attrs["embed_stats"]
    assert st["computed"] == n_bad and st["reused"] == 3 - n_bad
    assert st["recomputed"] == n_bad
    assert len(st["rejected"]) == n_bad and all(isinstance(r, str) for _, r in st["rejected"])
    assert enc.rows == 4 * n_bad
    pd.testing.assert_frame_equal(Z, clean, check_exact=True)
    healed = counting(rf())
    eocausal.embed(units, src, healed, cache_dir=tmp_path, shard_size=4)
    assert healed.calls == 0


def test_missing_sidecar_counts_as_missing_not_damaged(tmp_path, array_units):
    units, src = array_units()
    clean = eocausal.embed(units, src, rf(), cache_dir=tmp_path, shard_size=4)
    shard_files(tmp_path, clean.attrs["embed_stats"]["cache_key"], 2)[1].unlink()
    Z = eocausal.embed(units, src, rf(), cache_dir=tmp_path, shard_size=4)
    st = Z.attrs["embed_stats"]
    assert (st["computed"], st["recomputed"]) == (1, 0)
    pd.testing.assert_frame_equal(Z, clean, check_exact=True)


def test_shard_of_another_run_is_refused(tmp_path):
    cache = EmbeddingCache(tmp_path)
    a = cache.open_run({"e": 1}, {"s": 1}, "d", shard_size=2, n_shards=1)
    b = cache.open_run({"e": 2}, {"s": 1}, "d", shard_size=2, n_shards=1)
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    a.write_shard(0, values, ["k1", "k2"], "dig")
    assert np.array_equal(a.load_shard(0, "dig"), values)
    assert a.load_shard(0, "other") is None and a.counts["rejected"] == 1
    for p in a.shard_paths(0):
        (b.dir / p.name).write_bytes(p.read_bytes())
    assert b.load_shard(0, "dig") is None
    assert "belongs to run" in b.rejected[0][1]


def test_unwritable_cache_dir_raises_cache_error(tmp_path, array_units):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    units, src = array_units()
    with pytest.raises(CacheError, match="a_file") as err:
        eocausal.embed(units, src, rf(), cache_dir=blocker / "cache")
    assert isinstance(err.value, OSError) and "writable" in str(err.value)


def test_encoder_without_state_hash_needs_no_cache(tmp_path, array_units):
    class Bare:
        def transform(self, chips):
            return np.asarray(chips).reshape(len(chips), -1)[:, :4]

    units, src = array_units()
    assert eocausal.embed(units, src, Bare()).shape == (24, 4)
    with pytest.raises(InputError, match="state_hash"):
        eocausal.embed(units, src, Bare(), cache_dir=tmp_path)


def test_bad_arguments(array_units):
    units, src = array_units()
    with pytest.raises(InputError, match="shard_size"):
        eocausal.embed(units, src, rf(), shard_size=0)
    with pytest.raises(InputError, match="executor"):
        eocausal.embed(units, src, rf(), executor="dask")
    with pytest.raises(InputError, match="num_workers"):
        eocausal.embed(units, src, rf(), num_workers=-1)
    with pytest.raises(InputError, match="num_workers"):
        LocalExecutor(num_workers=1.5)


# ----------------------------------------------------------------------------- dropped units
def test_invalid_chips_drop_their_units_with_one_warning(tmp_path):
    units = place_units(12)
    bad = ["p03", "p07"]
    src = PlaceSource(12, bad=bad)
    enc = counting(rf())
    with pytest.warns(DataQualityWarning, match=r"2 of 12 units .*attrs\['dropped_ids'\]") as rec:
        Z = eocausal.embed(units, src, enc, cache_dir=tmp_path, shard_size=5, batch_size=4)
    assert len(rec) == 1
    assert Z.attrs["dropped_ids"] == bad and Z.attrs["embed_stats"]["n_dropped"] == 2
    assert list(Z.index) == [u for u in units.ids if u not in bad]
    good = np.stack([src.chips[u] for u in Z.index])
    assert np.allclose(Z.to_numpy(), RandomFeatures.transform(enc, good), rtol=1e-6, atol=1e-6)
    assert enc.rows == 10  # NaN chips never reach the encoder
    assert np.isfinite(Z.to_numpy()).all()
    again = counting(rf())
    with pytest.warns(DataQualityWarning, match="2 of 12"):
        Z2 = eocausal.embed(units, src, again, cache_dir=tmp_path, shard_size=5, batch_size=4)
    assert again.calls == 0
    pd.testing.assert_frame_equal(Z, Z2, check_exact=True)


def test_a_batch_of_only_invalid_chips_gives_nan_rows_of_the_right_width():
    units = place_units(6)
    src = PlaceSource(6, bad=["p00", "p01"])
    with pytest.warns(DataQualityWarning, match="2 of 6"):
        Z = eocausal.embed(units, src, rf(), batch_size=2, num_workers=0)
    assert Z.shape == (4, N_FEATURES) and Z.attrs["dropped_ids"] == ["p00", "p01"]


def test_raster_units_off_the_scene_warn_once_from_embed(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    import geopandas as gpd
    from affine import Affine

    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=30, height=30, count=2, dtype="float32",
                       crs="EPSG:32612", transform=Affine(10, 0, 500_000, 0, -10, 4_500_000)) as ds:
        ds.write(np.random.default_rng(4).uniform(0, 9, (2, 30, 30)).astype(np.float32))
    x = np.array([500_100.0, 500_150, 600_000, 500_200])  # the third is far off the raster
    gdf = gpd.GeoDataFrame({"w": [0, 1, 0, 1], "y": [1.0, 2, 3, 4]}, index=pd.Index(list("abcd"), name="id"),
                           geometry=gpd.points_from_xy(x, np.full(4, 4_499_850.0)), crs="EPSG:32612")
    units = eocausal.Units.from_frame(gdf, treatment="w", outcome="y")
    with pytest.warns(DataQualityWarning) as rec:
        Z = eocausal.embed(units, eocausal.RasterSource(path, chip_size_m=60, chip_px=6), rf(), batch_size=2)
    assert [str(w.message)[:28] for w in rec] == ["1 of 4 units have no embeddi"]
    assert list(Z.index) == ["a", "b", "d"] and Z.attrs["dropped_ids"] == ["c"]


# ----------------------------------------------------------------------------- resume after a kill
N_KILL_IMAGES, KILL_SHARD = 48, 4  # 12 shards


def kill_setup(make):
    """``make``: tests/conftest.py's make_array_units (the ``array_units`` fixture)."""
    return make(n_images=N_KILL_IMAGES, per=1, seed=5)


def run_slow(cache_dir: str, make) -> None:
    """Entry point of the subprocess killed by the resume test."""
    units, src = kill_setup(make)
    eocausal.embed(units, src, counting(rf(), sleep=0.25), cache_dir=cache_dir,
                   shard_size=KILL_SHARD, batch_size=2, num_workers=1)


def test_killed_run_resumes_with_only_missing_shards_and_equal_embeddings(tmp_path, array_units):
    cache = tmp_path / "cache"
    script = (
        "import importlib.util\n"
        "def load(name, path):\n"
        "    spec = importlib.util.spec_from_file_location(name, path)\n"
        "    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m\n"
        f"c = load('tests_conftest', {str(Path(__file__).parents[1] / 'conftest.py')!r})\n"
        f"m = load('embed_cache_kill', {str(Path(__file__))!r})\n"
        f"m.run_slow({str(cache)!r}, c.make_array_units)\n"
    )
    log = open(tmp_path / "child.log", "wb")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and child.poll() is None:
            if len(list(cache.glob("*/shard-*.json"))) >= 2:
                break
            time.sleep(0.02)
        assert child.poll() is None, f"the child ended before the kill: {(tmp_path / 'child.log').read_text()}"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    done = len(list(cache.glob("*/shard-*.json")))
    assert 2 <= done < 12  # killed part way

    units, src = kill_setup(array_units)
    enc = counting(rf())
    Z = eocausal.embed(units, src, enc, cache_dir=cache, shard_size=KILL_SHARD, batch_size=2)
    st = Z.attrs["embed_stats"]
    assert (st["reused"], st["computed"], st["recomputed"]) == (done, 12 - done, 0)
    assert enc.rows == KILL_SHARD * (12 - done)
    whole = eocausal.embed(units, src, rf(), shard_size=KILL_SHARD)  # another batch size than the resumed run
    np.testing.assert_allclose(Z.to_numpy(), whole.to_numpy(), rtol=1e-5, atol=1e-6)
    assert list(Z.index) == list(whole.index)


def test_progress_bar_goes_to_stderr(capsys, array_units):
    units, src = array_units()
    eocausal.embed(units, src, rf(), progress=True, batch_size=2)
    captured = capsys.readouterr()
    assert "embedding" in captured.err and captured.out == ""
