"""calibrate's exact statistics: count, min, max, mean and std over every value
with the default `sample` (against numpy on the activations from `collect`);
`points=None` means the same in collect, calibrate and ActivationRecorder;
`steps` limits the batches read."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kerasurgery as ks
from kerasurgery.stats.calibrate import DEFAULT_SAMPLE
from zoo import ZOO, assert_unchanged, sample_inputs, snapshot


def assert_exact_moments(s: ks.PointStats, values: np.ndarray, per_channel: bool = False) -> None:
    """count, min, max, mean, std of `s` are numpy's over every value (float32 tolerance)."""
    a = np.asarray(values, np.float64)
    a = a.reshape(-1, a.shape[-1]) if per_channel else a.reshape(-1, 1)
    out = (lambda v: np.asarray(v)) if per_channel else (lambda v: np.asarray([v]))
    # two compiled graphs (calibrate's and collect's) may compute a value 1 ulp apart (XLA fusions)
    tol = {"rtol": 0, "atol": 0} if keras.backend.backend() == "tensorflow" else {"rtol": 1e-6}
    assert s.count == a.shape[0] and np.all(out(s.finite) == a.shape[0]) and np.all(out(s.nan) == 0)
    np.testing.assert_allclose(out(s.min), a.min(axis=0), **tol)
    np.testing.assert_allclose(out(s.max), a.max(axis=0), **tol)
    # float32 tolerance: 1e-5 relative, or the spacing of float32 values at the largest magnitude
    resolution = np.spacing(np.abs(a).max(axis=0).astype(np.float32)).astype(np.float64)
    error = np.abs(out(s.mean) - a.mean(axis=0))  # relative to the spread (a mean may be ~0) and to the mean
    assert np.all(error <= 1e-5 * (a.std(axis=0) + np.abs(a.mean(axis=0))) + 1e-9), (error, a.std(axis=0))
    assert np.all(np.abs(out(s.std) - a.std(axis=0)) <= 1e-5 * a.std(axis=0) + resolution), (out(s.std), a.std(0))


def wide_dense() -> keras.Model:
    """612 units (as in the report of a 3% error) and a point far from zero (1000 +- a few: a sum
    of squares about zero would lose every digit of its variance in float32)."""
    x = keras.Input((16,), name="x")
    wide = layers.Dense(612, activation="relu", name="wide")(x)
    offset = layers.Dense(64, bias_initializer=keras.initializers.Constant(1000.0), name="offset")(x)
    return keras.Model(x, [wide, offset], name="wide_dense")


class TestExactByDefault:
    @pytest.mark.parametrize("name", ["cnn_bn", "attention", "recurrent", "multi_io", "nested_functional", "raw_ops"])
    def test_zoo_every_address(self, name):
        model = ZOO[name]()
        data = sample_inputs(model, batch=20)
        before = snapshot(model)
        stats = ks.calibrate(model, data, ks.points(model), batch_size=6, progress=False)
        acts = ks.collect(model, data, list(stats), batch_size=6, progress=False)
        assert_unchanged(model, before)
        for address, s in stats.items():
            assert s.sample == DEFAULT_SAMPLE
            assert_exact_moments(s, acts[address])
        if name == "cnn_bn":  # points above 256 values per sample: sampled, moments still exact
            assert any(not s.exact for s in stats.values())

    @pytest.mark.backend
    @pytest.mark.parametrize("per_channel", [False, True])
    def test_wide_dense(self, per_channel):
        model = wide_dense()
        data = np.random.default_rng(3).normal(size=(70, 16)).astype("float32")
        points = ["wide:pre", "wide", "offset"]
        stats = ks.calibrate(model, data, points, per_channel=per_channel, progress=False)
        acts = ks.collect(model, data, points, progress=False)
        for address in points:
            assert_exact_moments(stats[address], acts[address], per_channel)
        # per tensor, 612 values per sample are more than the default samples (per channel: 1 row each)
        assert stats["wide:pre"].exact == stats["wide"].exact == per_channel
        assert abs(np.mean(stats["offset"].mean) - 1000) < 10  # the centred variance is not swamped

    @pytest.mark.backend
    def test_per_channel_sampled_points(self):
        model = ZOO["cnn_bn"]()
        data = sample_inputs(model, batch=20)
        points = ["conv:pre", "conv", "image", "up"]
        stats = ks.calibrate(model, data, points, per_channel=True, batch_size=8, progress=False)
        acts = ks.collect(model, data, points, batch_size=8, progress=False)
        for address in points:
            assert not stats[address].exact  # 256 positions of 8 channels: 32 sampled per input sample
            assert_exact_moments(stats[address], acts[address], per_channel=True)

    @pytest.mark.backend
    def test_shards_and_batches_do_not_change_the_moments(self):
        model = wide_dense()
        data = np.random.default_rng(4).normal(size=(41, 16)).astype("float32")
        whole = ks.calibrate(model, data, "wide:pre", batch_size=41, sample=None, progress=False)["wide:pre"]
        parts = [ks.calibrate(model, data[a:b], "wide:pre", batch_size=size, progress=False)
                 for (a, b), size in (((0, 7), 3), ((7, 41), 16))]
        split = ks.merge(*parts)["wide:pre"]
        # equal up to float32 rounding (batches take deviations from different shifts)
        np.testing.assert_allclose([split.mean, split.std], [whole.mean, whole.std], rtol=1e-6, atol=1e-6 * whole.std)
        assert (split.min, split.max, split.count) == (whole.min, whole.max, whole.count)


class TestPointsNone:
    @pytest.mark.parametrize("name", ["cnn_bn", "multi_io", "nested_functional", "attention"])
    def test_same_addresses_in_collect_calibrate_and_recorder(self, name):
        model = ZOO[name]()
        data = sample_inputs(model, batch=4)
        inputs = set(keras.tree.flatten(ks.to_graph(model).graph["inputs"]))
        ports = set(ks.points(model, "*:pre")) | set(ks.points(model, "*:scores"))
        expected = [a for a in ks.points(model) if a not in inputs and a not in ports]
        assert expected and len(expected) < len(ks.points(model))
        collected = ks.collect(model, data, progress=False)
        calibrated = ks.calibrate(model, data, progress=False)
        recorder = ks.ActivationRecorder(None, data)
        recorder.set_model(model)
        recorder.record(0)
        assert list(collected) == list(calibrated) == list(recorder.history) == expected


class TestSteps:
    @pytest.mark.parametrize("source", ["array", "batches"])
    def test_steps_limits_the_batches_read(self, source):
        x = keras.Input((3,), name="x")
        model = keras.Model(x, layers.Dense(2, name="d")(x))
        data = np.random.default_rng(0).normal(size=(20, 3)).astype("float32")
        data[12:] *= 100  # the batches after the first two are far larger
        given = data if source == "array" else [data[i : i + 4] for i in range(0, 20, 4)]
        stats = ks.calibrate(model, given, ["x", "d"], batch_size=4, steps=2, progress=False)
        first = ks.calibrate(model, data[:8], ["x", "d"], batch_size=4, progress=False)
        for address in ("x", "d"):
            s, f = stats[address], first[address]
            assert (s.samples, s.count, s.min, s.max) == (8, f.count, f.min, f.max)
            assert s.mean == pytest.approx(f.mean, rel=1e-6) and s.std == pytest.approx(f.std, rel=1e-6)
        assert stats["x"].max == data[:8].max() < data.max()
