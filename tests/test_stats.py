"""calibrate: equal to numpy statistics of the full activations, per tensor and
per channel; shards merge into the whole; exact mergeable histograms; JSON."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keras import layers

import kerasurgery as ks
from kerasurgery.runtime import plan as runner
from kerasurgery.stats import grid as histogram
from kerasurgery.stats import reduce as stats_module
from kerasurgery import Calibration, PointStats, merge
from zoo import ZOO, assert_unchanged, sample_inputs, snapshot

N = 20


def assert_matches_numpy(stats: PointStats, values: np.ndarray) -> None:
    """Every statistic of `stats` equals numpy's on the full activations `values`."""
    a = np.asarray(values, np.float64).ravel()
    assert stats.count == a.size
    assert stats.min == a.min() and stats.max == a.max()
    np.testing.assert_allclose(stats.mean, a.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.std, a.std(), rtol=1e-4, atol=1e-6)
    assert stats.zeros == np.count_nonzero(a == 0)
    counts, edges = stats.histogram
    assert counts.sum() == a.size and edges[0] <= a.min() and a.max() < edges[-1]
    np.testing.assert_array_equal(counts, np.histogram(a, bins=edges)[0])
    width = edges[1] - edges[0]
    for q in (0.1, 1, 50, 99, 99.9):
        expected = np.percentile(a, q, method="inverted_cdf")
        assert abs(stats.percentile(q) - expected) <= width * (1 + 1e-9), q
    assert stats.percentile(0) == a.min() and stats.percentile(100) == a.max()


class TestAgainstNumpy:
    @pytest.mark.parametrize("name", ["cnn_bn", "attention", "recurrent", "multi_io", "masked", "shared"])
    def test_every_point(self, name):
        model = ZOO[name]()
        data = sample_inputs(model, batch=N)
        before = snapshot(model)
        stats = ks.calibrate(model, data, ks.points(model), batch_size=6, bins=64, sample=None, progress=False)
        assert list(stats) == ks.points(model)
        acts = ks.collect(model, data, list(stats), batch_size=6, progress=False)
        for address, s in stats.items():
            assert s.samples == N and s.shape == acts[address].shape[1:]
            assert_matches_numpy(s, acts[address])
        assert_unchanged(model, before)

    @pytest.mark.backend
    def test_core(self):
        model = ZOO["cnn_bn"]()
        data = sample_inputs(model, batch=N)
        stats = ks.calibrate(model, data, ["conv:pre", "conv", "gap"], batch_size=8, sample=None, progress=False)
        acts = ks.collect(model, data, list(stats), batch_size=8, progress=False)
        for address, s in stats.items():
            assert s.exact
            assert_matches_numpy(s, acts[address])
        assert 0.3 < stats["conv"].zero_fraction < 0.7  # a ReLU output

    @pytest.mark.backend
    def test_per_channel(self):
        model = ZOO["cnn_bn"]()
        data = sample_inputs(model, batch=N)
        stats = ks.calibrate(model, data, ["sep:pre", "gap", "image"], per_channel=True, bins=32, sample=None,
                             progress=False)
        acts = ks.collect(model, data, list(stats), progress=False)
        for address, s in stats.items():
            values = acts[address].reshape(-1, acts[address].shape[-1]).astype(np.float64)
            assert s.channel_axis == acts[address].ndim - 1
            np.testing.assert_array_equal(s.min, values.min(axis=0))
            np.testing.assert_array_equal(s.max, values.max(axis=0))
            np.testing.assert_allclose(s.mean, values.mean(axis=0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(s.std, values.std(axis=0), rtol=1e-4, atol=1e-6)
            counts, edges = s.histogram
            for c in range(values.shape[1]):
                np.testing.assert_array_equal(counts[c], np.histogram(values[:, c], bins=edges[c])[0])
            assert s.percentile([50, 99]).shape == (values.shape[1], 2)

    def test_channel_axis_and_rank_one_points(self):
        model = ZOO["attention"]()
        data = sample_inputs(model, batch=N)
        stats = ks.calibrate(model, data, ["mha:scores", "predictions"], per_channel=True, channel_axis=1,
                             progress=False)
        scores = ks.collect(model, data, "mha:scores", progress=False)["mha:scores"]
        heads = np.moveaxis(scores, 1, -1).reshape(-1, 2)
        assert stats["mha:scores"].channel_axis == 1
        np.testing.assert_array_equal(stats["mha:scores"].max, heads.max(axis=0))
        assert stats["predictions"].channel_axis == 1 and stats["predictions"].min.shape == (3,)
        x = keras.Input((4,), name="x")
        flat = keras.Model(x, keras.ops.sum(layers.Dense(3, name="d")(x), axis=-1), name="flat")
        s = ks.calibrate(flat, np.ones((4, 4)), per_channel=True, progress=False)
        assert s[ks.points(flat)[-1]].channel_axis is None  # (batch,) has no channel

    def test_sampling_keeps_counts_ranges_and_moments_exact(self):
        model = ZOO["cnn_bn"]()
        data = sample_inputs(model, batch=N)
        points = ["conv", "gap", "image"]
        before = snapshot(model)
        stats = ks.calibrate(model, data, points, batch_size=8, sample=16, progress=False)
        full = ks.calibrate(model, data, points, batch_size=8, sample=None, progress=False)
        acts = ks.collect(model, data, points, progress=False)
        assert_unchanged(model, before)
        for address in ("conv", "image"):  # 2048 and 768 values per sample: sampled
            s, a = stats[address], acts[address].astype(np.float64)
            assert not s.exact and s.sample == 16 and full[address].exact
            assert (s.min, s.max, s.count, s.finite) == (a.min(), a.max(), a.size, a.size)
            np.testing.assert_allclose([s.mean, s.std], [a.mean(), a.std()], rtol=1e-5, atol=1e-6)
            assert s.sampled % N == 0 and 16 <= s.sampled // N < 64
            counts, edges = s.histogram
            assert counts.sum() == s.sampled
            assert np.all(counts <= np.histogram(a, bins=edges)[0])  # only real values, none twice
            assert s.sampled_fields == ("zeros", "zero_fraction", "histogram", "percentiles")
            assert "histogram, percentiles from" in repr(s) and f"of {a.size:,} values" in repr(s)
        assert stats["gap"].exact and stats["gap"].sampled_fields == ()  # 8 values per sample: every one
        assert_matches_numpy(stats["gap"], acts["gap"])
        assert "from" not in repr(stats["gap"])
        d = stats["conv"].to_dict()
        assert d["sampled"] == stats["conv"].sampled and d["histogram"]["sample"] == 16
        assert d["sampled_fields"] == ["zeros", "zero_fraction", "histogram", "percentiles"]
        assert full["conv"].to_dict()["sampled_fields"] == []
        assert PointStats.from_dict(d).to_dict() == d
        with pytest.raises(ks.DataError, match="sample"):
            stats.merge(full)

    @pytest.mark.backend
    @pytest.mark.parametrize("per_channel", [False, True])
    def test_sampling_covers_every_position(self, per_channel):
        """Each value of the input is its own position; over the dataset each is sampled equally."""
        x = keras.Input((30, 4), name="x")
        model = keras.Model(x, layers.Dense(2, name="d")(x))
        one = np.arange(120, dtype="float32").reshape(30, 4)
        data = np.broadcast_to(one, (2 * 10, 30, 4)).copy()  # 10 input samples cover each block once
        sample = 13 if per_channel else 12  # 12 values per input sample: 3 positions of the 4 channels
        s = ks.calibrate(model, data, "x", batch_size=7, sample=sample, per_channel=per_channel, bins=128,
                         progress=False)["x"]
        assert not s.exact and s.count == 20 * (30 if per_channel else 120)
        assert s.sampled == 20 * (3 if per_channel else 12)
        counts, edges = s.histogram
        values = np.asarray(one if per_channel else one.reshape(-1, 1), np.float64)
        for c in range(values.shape[1]):
            expected = np.histogram(values[:, c], bins=edges if not per_channel else edges[c])[0] * 2
            np.testing.assert_array_equal(counts if not per_channel else counts[c], expected)
        np.testing.assert_allclose(s.mean, values.mean(axis=0) if per_channel else values.mean(), rtol=1e-6)
        np.testing.assert_allclose(s.std, values.std(axis=0) if per_channel else values.std(), rtol=1e-5)

    @pytest.mark.backend
    @pytest.mark.parametrize("per_channel", [False, True])
    def test_ranges_of_relu_outputs_follow_from_their_inputs(self, per_channel):
        """min/max of a ReLU-family output are f(min/max of its input): exact, as if computed."""
        x = keras.Input((6, 5), name="x")
        h = layers.Dense(5, name="d")(x)
        outs = [
            layers.ReLU(max_value=0.3, name="relu6ish")(h),
            layers.LeakyReLU(negative_slope=0.1, name="leaky")(h),
            layers.Activation("relu", name="act")(h),
            layers.Activation("silu", name="not_monotone")(h),  # dips below 0 near -1.28: computed
            layers.Activation("tanh", name="tanh")(h),  # not exact in float32 everywhere: computed
        ]
        model = keras.Model(x, outs)
        data = np.random.default_rng(3).normal(size=(23, 6, 5)).astype("float32")
        points = ["d", "relu6ish", "leaky", "act", "not_monotone", "tanh"]
        plan = runner.plan_for(model, points, tag="ranges test")
        lays = {k: stats_module.layout(plan.probe.output[k], per_channel, -1, 2048) for k in plan.unique}
        assert sorted(stats_module.derived_extremes(plan.probe, lays)) == ["act", "leaky", "relu6ish"]
        stats = ks.calibrate(model, data, points, batch_size=5, per_channel=per_channel, progress=False)
        alone = ks.calibrate(model, data, ["leaky"], batch_size=5, per_channel=per_channel, progress=False)
        acts = ks.collect(model, data, points, progress=False)
        # XLA (JAX) may fuse the Dense differently in the two compiled graphs: 1 ulp apart
        tol = {"rtol": 0, "atol": 0} if keras.backend.backend() == "tensorflow" else {"rtol": 1e-6}
        for address, values in acts.items():
            values = values.reshape(-1, 5) if per_channel else values.ravel()
            np.testing.assert_allclose(stats[address].min, values.min(axis=0), err_msg=address, **tol)
            np.testing.assert_allclose(stats[address].max, values.max(axis=0), err_msg=address, **tol)
        np.testing.assert_allclose(alone["leaky"].min, stats["leaky"].min, **tol)
        d = stats["d"]
        np.testing.assert_array_equal(stats["act"].min, np.maximum(d.min, 0))
        np.testing.assert_array_equal(stats["relu6ish"].max, np.clip(d.max, 0, np.float32(0.3)))

    def test_variable_length_points(self):
        x = keras.Input((None, 3), name="x")
        model = keras.Model(x, layers.Dense(4, name="d")(x))
        batches = [np.full((4, 5, 3), 1.0, "float32"), np.full((2, 7, 3), -1.0, "float32")]
        s = ks.calibrate(model, iter(batches), "d", progress=False)["d"]
        assert s.shape == (None, 4) and s.samples == 6 and s.count == (4 * 5 + 2 * 7) * 4
        one = ks.calibrate(model, batches[0], "d", progress=False)["d"]
        assert one.shape == (5, 4)

    def test_constant_and_dead_points(self):
        x = keras.Input((3,), name="x")
        h = layers.Dense(4, activation="relu", kernel_initializer="zeros", bias_initializer="zeros", name="dead")(x)
        model = keras.Model(x, layers.Dense(2, bias_initializer="ones", kernel_initializer="zeros", name="c")(h))
        stats = ks.calibrate(model, np.random.default_rng(0).normal(size=(9, 3)), batch_size=4, progress=False)
        assert stats["dead"].zero_fraction == 1.0 and stats["dead"].max == 0.0 and stats["dead"].std == 0.0
        assert stats["c"].min == stats["c"].max == 1.0 and stats["c"].percentile(50) == 1.0
        assert stats["c"].histogram[0].sum() == 18

    @pytest.mark.backend
    def test_training_mode_changes_nothing(self):
        model = ZOO["dropout"]()
        before = snapshot(model)
        stats = ks.calibrate(model, np.ones((32, 6)), ["dense", "drop"], training=True, progress=False)
        assert_unchanged(model, before)
        assert stats["drop"].zero_fraction > stats["dense"].zero_fraction


class TestMerge:
    def test_shards_merge_into_the_whole(self):
        model = ZOO["cnn_bn"]()
        data = sample_inputs(model, batch=24)
        whole = ks.calibrate(model, data, batch_size=8, sample=None, progress=False)
        shards = [ks.calibrate(model, data[i : i + 8], batch_size=8, sample=None, progress=False) for i in (0, 8, 16)]
        merged = merge(*shards)
        sampled = merge(*(ks.calibrate(model, data[i : i + 8], sample=4, progress=False) for i in (0, 8, 16)))
        for address, s in sampled.items():  # sampled shards: exact ranges, counts and moments
            assert (s.min, s.max, s.count, s.samples) == (whole[address].min, whole[address].max,
                                                          whole[address].count, 24)
            np.testing.assert_allclose([s.mean, s.std], [whole[address].mean, whole[address].std], rtol=1e-9,
                                       atol=1e-12)
            assert s.histogram[0].sum() == s.sampled <= s.count
        for address, s in whole.items():
            m = merged[address]
            assert m.samples == 24 and m.count == s.count
            assert (m.min, m.max, m.zeros) == (s.min, s.max, s.zeros)
            np.testing.assert_allclose([m.mean, m.std], [s.mean, s.std], rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(m.histogram[0], s.histogram[0])
            np.testing.assert_array_equal(m.histogram[1], s.histogram[1])

    def test_any_split_keeps_exact_statistics(self):
        model = ZOO["mlp"]()
        data = sample_inputs(model, batch=30)
        points = ["dense_1:pre", "predictions"]
        # collected with the same batches as the shards (torch: a batch of one row may differ in the last bit)
        parts = [ks.collect(model, x, points, batch_size=size, progress=False) for x, size in ((data[:7], 3),
                                                                                            (data[7:], 5))]
        whole = {p: np.concatenate([part[p] for part in parts]) for p in points}
        a = ks.calibrate(model, data[:7], list(whole), batch_size=3, per_channel=True, bins=16, progress=False)
        b = ks.calibrate(model, data[7:], list(whole), batch_size=5, per_channel=True, bins=16, progress=False)
        for merged in (a.merge(b), b.merge(a)):
            for address, values in whole.items():
                values = values.astype(np.float64)
                m = merged[address]
                np.testing.assert_array_equal(m.min, values.min(axis=0))
                np.testing.assert_allclose(m.std, values.std(axis=0), rtol=1e-5)
                counts, edges = m.histogram
                for c in range(values.shape[1]):
                    np.testing.assert_array_equal(counts[c], np.histogram(values[:, c], bins=edges[c])[0])

    def test_mismatched_merges_are_refused(self):
        model = ZOO["mlp"]()
        data = sample_inputs(model, batch=8)
        a = ks.calibrate(model, data, ["dense_1"], progress=False)
        with pytest.raises(ks.DataError, match="same points"):
            a.merge(ks.calibrate(model, data, ["dense_2"], progress=False))
        with pytest.raises(ks.DataError, match="same `bins`"):
            a.merge(ks.calibrate(model, data, ["dense_1"], bins=16, progress=False))


@st.composite
def shards(draw):
    """Random values split into batches, at scales from tiny to huge."""
    scale = draw(st.sampled_from([1e-6, 1.0, 1e4]))
    offset = draw(st.sampled_from([0.0, 1.0, -300.0]))
    sizes = draw(st.lists(st.integers(1, 40), min_size=1, max_size=6))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "relu", "constant"]))
    batches = []
    for n in sizes:
        v = rng.normal(size=(n, 2))
        v = np.maximum(v, 0) if kind == "relu" else (np.ones_like(v) if kind == "constant" else v)
        batches.append((offset + scale * v).astype("float32"))
    return batches, draw(st.sampled_from([2, 3, 16, 2048]))


class TestGridHistogram:
    @settings(max_examples=40, deadline=None)
    @given(shards(), st.booleans())
    def test_merging_batches_equals_one_histogram_on_the_final_grid(self, case, with_running):
        batches, bins = case
        e = start = counts = None
        low, high = np.full(2, np.inf), np.full(2, -np.inf)
        for b in batches:
            x = keras.ops.convert_to_tensor(b)
            lo, hi = keras.ops.min(x, axis=0), keras.ops.max(x, axis=0)
            running = None
            if with_running:  # as calibrate does: the window so far is passed in
                prev_e = np.full(2, -np.inf) if e is None else e
                running = tuple(keras.ops.convert_to_tensor(v.astype("float32")) for v in (low, high, prev_e))
            part = tuple(keras.ops.convert_to_numpy(t) for t in histogram.batch_histogram(x, lo, hi, bins, running))
            part = (part[0].astype(np.int64), part[1].astype(np.int64), part[2])
            e, start, counts = part if e is None else histogram.merge((e, start, counts), part, bins)
            low, high = np.minimum(low, b.min(axis=0)), np.maximum(high, b.max(axis=0))
        values = np.concatenate(batches).astype(np.float64)
        edges = histogram.edges(e, start, bins)
        for c in range(2):
            assert edges[c, 0] <= values[:, c].min() and values[:, c].max() < edges[c, -1]
            cells = np.floor(values[:, c] / np.ldexp(1.0, int(e[c]))).astype(np.int64) - start[c]
            np.testing.assert_array_equal(np.asarray(counts)[c], np.bincount(cells, minlength=bins))
            span = values[:, c].max() - values[:, c].min()
            width = edges[c, 1] - edges[c, 0]
            assert width <= max(4 * span / bins, np.abs(values[:, c]).max() * 2.0**-19, 2.0**-99)

    def test_merge_is_order_independent(self):
        rng = np.random.default_rng(1)
        parts = []
        for scale in (1.0, 10.0, 0.1):
            x = keras.ops.convert_to_tensor((rng.normal(size=(50, 1)) * scale).astype("float32"))
            lo, hi = keras.ops.min(x, axis=0), keras.ops.max(x, axis=0)
            parts.append(tuple(keras.ops.convert_to_numpy(t) for t in histogram.batch_histogram(x, lo, hi, 8)))
        ab_c = histogram.merge(histogram.merge(parts[0], parts[1], 8), parts[2], 8)
        c_ba = histogram.merge(parts[2], histogram.merge(parts[1], parts[0], 8), 8)
        for x, y in zip(ab_c, c_ba):
            np.testing.assert_array_equal(x, y)


class TestExport:
    def test_json_round_trip_keeps_everything(self, tmp_path):
        model = ZOO["cnn_bn"]()
        data = sample_inputs(model, batch=N)
        stats = ks.calibrate(model, data, ["conv:pre", "gap"], batch_size=8, progress=False)
        text = stats.to_json(tmp_path / "stats.json", indent=1)
        with pytest.raises(ks.DataError, match="Expected a new file for the statistics"):
            stats.to_json(tmp_path / "stats.json")  # nothing overwritten unless asked
        assert (tmp_path / "stats.json").read_text() == text
        assert json.loads(stats.to_json(tmp_path / "stats.json", overwrite=True)) == json.loads(text)
        d = json.loads(text)
        assert d["model"] == "cnn_bn"
        point = d["points"]["conv:pre"]
        assert {"min", "max", "mean", "std", "zero_fraction", "percentiles", "histogram"} <= set(point)
        assert set(point["percentiles"]) == {"0.1", "1", "5", "50", "95", "99", "99.9"}
        for source in (text, tmp_path / "stats.json", str(tmp_path / "stats.json")):
            back = Calibration.from_json(source)
            assert back.to_dict() == stats.to_dict()
        back = Calibration.from_dict(d)
        twice = merge(back, stats)
        assert twice["gap"].samples == 2 * N and twice["gap"].max == stats["gap"].max

    def test_per_channel_dict(self):
        model = ZOO["cnn_bn"]()
        stats = ks.calibrate(model, sample_inputs(model, batch=4), "conv", per_channel=True, bins=8, progress=False)
        d = stats["conv"].to_dict()
        assert len(d["min"]) == 8 and len(d["percentiles"]["50"]) == 8
        assert np.asarray(d["histogram"]["counts"]).shape == (8, 8)
        json.dumps(d)
        assert PointStats.from_dict(d).to_dict() == d
        assert "8 channels" in repr(stats["conv"])


class TestBadInput:
    @pytest.mark.parametrize("bins", [1, 0, 2.5, True, 1 << 21])
    def test_bins(self, bins):
        with pytest.raises(ks.DataError, match="bins"):
            ks.calibrate(ZOO["mlp"](), np.zeros((2, 8)), bins=bins)

    @pytest.mark.parametrize("sample", [0, -3, 2.5, True, "all"])
    def test_sample(self, sample):
        with pytest.raises(ks.DataError, match="sample"):
            ks.calibrate(ZOO["mlp"](), np.zeros((2, 8)), sample=sample)

    def test_percentiles(self):
        with pytest.raises(ks.DataError, match="between 0 and 100"):
            ks.calibrate(ZOO["mlp"](), np.zeros((2, 8)), percentiles=[50, 101])
        s = ks.calibrate(ZOO["mlp"](), np.ones((2, 8)), "dense_1", progress=False)["dense_1"]
        with pytest.raises(ks.DataError, match="between 0 and 100"):
            s.percentile(-1)

    def test_data_points_and_batch_size(self):
        model = ZOO["mlp"]()
        with pytest.raises(ks.DataError, match=r"input 'x'.*\(3, 7\)"):
            ks.calibrate(model, np.zeros((3, 7)))
        with pytest.raises(ks.DataError, match="at least one sample"):
            ks.calibrate(model, iter([]))
        with pytest.raises(ks.DataError, match="batch_size"):
            ks.calibrate(model, np.zeros((3, 8)), batch_size=0)
        with pytest.raises(ks.AddressError, match="dense_1"):
            ks.calibrate(model, np.zeros((3, 8)), "dense_3:pre")
