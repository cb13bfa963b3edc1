"""Executors of eocausal.embed: the Ray Data executor gives the local executor's embeddings."""

from __future__ import annotations

import numpy as np
import pytest

import eocausal
from eocausal.encoders import RandomFeatures
from eocausal.encoders.executors import ChipEncoder, LocalExecutor, RayExecutor, ShardTask
from eocausal.errors import DataQualityWarning, InputError


def rf():
    return RandomFeatures(n_features=16, seed=0, device="cpu")


# ----------------------------------------------------------------------------- local
def test_local_executor_streams_whole_shards_to_the_sink(array_units):
    units, src = array_units(n_images=7)
    enc = rf().fit(src.load(src.keys, units))
    tasks = [ShardTask(0, src.keys[:3]), ShardTask(4, src.keys[3:7])]
    got = {}
    LocalExecutor(num_workers=2).run(tasks, source=src, units=units, encoder=enc, batch_size=2,
                                     sink=lambda i, v: got.setdefault(i, v))
    assert sorted(got) == [0, 4]
    # batches of 2 against one transform: the last bits of float32 sums may differ (BLAS order)
    np.testing.assert_allclose(got[0], enc.transform(src.load(src.keys[:3])), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[4], enc.transform(src.load(src.keys[3:7])), rtol=1e-5, atol=1e-6)


def test_local_executor_refuses_a_source_that_drops_rows():
    class Shrinking:
        def load(self, keys, units):
            return np.zeros((len(keys) - 1, 3, 8, 8), np.float32)

    with pytest.raises(InputError, match="one chip per key"):
        LocalExecutor(num_workers=0).run([ShardTask(0, np.array(["a", "b"]))], source=Shrinking(),
                                         units=None, encoder=rf(), batch_size=2, sink=lambda i, v: None)


def test_chip_encoder_gives_nan_rows_for_invalid_chips(array_units):
    units, src = array_units(n_images=4)
    enc = rf().fit(src.load(src.keys))
    x = src.load(src.keys)
    x[1] = np.nan
    z = ChipEncoder(enc)(x)
    assert np.isnan(z[1]).all() and np.isfinite(z[[0, 2, 3]]).all()
    np.testing.assert_allclose(z[[0, 2, 3]], enc.transform(x[[0, 2, 3]]), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Ray
# Ray Data's DataContext warns about its own deprecated default when it is first created.
def RAY_OWN_WARNING(test):
    for message in ("`use_push_based_shuffle` is deprecated! Configure `shuffle_strategy`",
                    "`use_polars` is deprecated, please configure `use_polars_sort`",
                    "`use_arrow_tensor_v2` is deprecated. Configure `arrow_fixed_shape_tensor_format`"):
        test = pytest.mark.filterwarnings(f"ignore:{message}:DeprecationWarning")(test)
    return test


@pytest.fixture(scope="module")
def ray_local():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only without the [ray] extra
        pytest.skip(f"ray[data] is not installed (pip install 'eocausal[ray]'): {exc}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@RAY_OWN_WARNING
def test_ray_executor_equals_local_and_fills_the_same_cache(ray_local, tmp_path, array_units):
    class NanSource(eocausal.ArraySource):  # local, so Ray's workers get it by value
        """Images img002 and img003 come back all NaN (units the source drops)."""

        def load(self, keys, units=None):
            x = super().load(keys, units)
            x[np.isin(keys, ["img002", "img003"])] = np.nan
            return x

    units, src = array_units(n_images=20)
    src = NanSource(src.images, keys=src.keys)
    with pytest.warns(DataQualityWarning, match="4 of 40"):
        local = eocausal.embed(units, src, rf(), shard_size=6, batch_size=4)
    with pytest.warns(DataQualityWarning, match="4 of 40"):
        remote = eocausal.embed(units, src, rf(), shard_size=6, batch_size=4, cache_dir=tmp_path,
                                executor="ray")
    assert remote.attrs["embed_stats"]["computed"] == 4
    assert remote.attrs["dropped_ids"] == local.attrs["dropped_ids"] == ["u004", "u005", "u006", "u007"]
    assert list(remote.index) == list(local.index)
    np.testing.assert_array_equal(remote.to_numpy(), local.to_numpy())
    with pytest.warns(DataQualityWarning, match="4 of 40"):
        again = eocausal.embed(units, src, rf(), shard_size=6, batch_size=4, cache_dir=tmp_path)
    assert (again.attrs["embed_stats"]["reused"], again.attrs["embed_stats"]["computed"]) == (4, 0)
    np.testing.assert_array_equal(again.to_numpy(), local.to_numpy())


def test_ray_executor_arguments():
    with pytest.raises(InputError, match="concurrency"):
        RayExecutor(concurrency=0)
    with pytest.raises(InputError, match="read_concurrency"):
        RayExecutor(read_concurrency=1.5)
