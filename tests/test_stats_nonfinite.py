"""calibrate with NaN and infinite values: counted per point (NaN, +inf, -inf),
left out of every other statistic, which stays equal to numpy's over the finite
values; one warning per call; per tensor and per channel; through merges and JSON."""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import kerasurgery as ks
from kerasurgery import Calibration, PointStats, merge

ROWS, POSITIONS, CHANNELS = 23, 6, 5


def planted() -> np.ndarray:
    """Normal data (rows, 6, 5) with zeros, NaN, +inf and -inf at known places.

    Channel 4 holds nothing finite at all; NaN, +inf and -inf sit in different
    batches (of 5 rows) so that clean and poisoned batches merge.
    """
    x = np.random.default_rng(7).normal(size=(ROWS, POSITIONS, CHANNELS)).astype("float32")
    x[0, 0, :] = 0.0
    x[2, 1, 0] = x[2, 3, 0] = x[17, 5, 2] = np.nan
    x[6, 2, 1] = x[21, 0, 1] = np.inf
    x[11, 4, 3] = -np.inf
    x[:, :, 4] = np.where(np.arange(ROWS)[:, None] % 2 == 0, np.nan, np.inf)
    return x


def model_of_activations() -> keras.Model:
    """Points equal to elementwise functions of the input, min/max derivable ones included."""
    x = keras.Input((POSITIONS, CHANNELS), name="x")
    same = layers.Activation("linear", name="same")(x)
    outs = [
        layers.ReLU(max_value=0.3, name="relu6ish")(same),  # relu6ish(+inf) = 0.3: finite
        layers.Activation("relu", name="act")(same),  # relu(-inf) = 0: finite
        layers.Dense(3, name="d")(same[..., :4]),  # a NaN or inf spreads over its row (channel 4: never finite)
    ]
    return keras.Model(x, outs, name="activations")


POINTS = ["same", "relu6ish", "act", "d"]


def assert_finite_statistics(s: PointStats, values: np.ndarray, per_channel: bool) -> None:
    """Every statistic of `s` equals numpy's over the finite entries of `values`."""
    values = np.asarray(values, np.float64)
    columns = values.reshape(-1, values.shape[-1]) if per_channel else values.reshape(-1, 1)
    channels = columns.shape[1]
    out = (lambda a: np.asarray(a)) if per_channel else (lambda a: np.asarray([a]))
    assert s.count == columns.shape[0]
    np.testing.assert_array_equal(out(s.nan), np.isnan(columns).sum(axis=0))
    np.testing.assert_array_equal(out(s.posinf), (columns == np.inf).sum(axis=0))
    np.testing.assert_array_equal(out(s.neginf), (columns == -np.inf).sum(axis=0))
    np.testing.assert_array_equal(out(s.finite), np.isfinite(columns).sum(axis=0))
    counts, edges = s.histogram
    counts, edges = (counts, edges) if per_channel else (counts[None], edges[None])
    for c in range(channels):
        f = columns[:, c][np.isfinite(columns[:, c])]
        got = {k: out(getattr(s, k))[c] for k in ("min", "max", "mean", "std", "zeros", "zero_fraction")}
        if f.size == 0:
            assert all(np.isnan(got[k]) for k in ("min", "max", "mean", "std", "zero_fraction")), got
            assert got["zeros"] == 0 and counts[c].sum() == 0
            continue
        assert (got["min"], got["max"], got["zeros"]) == (f.min(), f.max(), np.count_nonzero(f == 0)), c
        np.testing.assert_allclose([got["mean"], got["std"]], [f.mean(), f.std()], rtol=1e-5, atol=1e-6)
        assert got["zero_fraction"] == np.count_nonzero(f == 0) / f.size
        np.testing.assert_array_equal(counts[c], np.histogram(f, bins=edges[c])[0])
        width = edges[c][1] - edges[c][0]
        assert abs(out(s.percentile(50))[c] - np.percentile(f, 50, method="inverted_cdf")) <= width * (1 + 1e-9)
        assert out(s.percentile(0))[c] == f.min() and out(s.percentile(100))[c] == f.max()


def calibrate_quietly(*args, **kwargs) -> Calibration:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return ks.calibrate(*args, progress=False, **kwargs)


class TestAgainstNumpy:
    @pytest.mark.backend
    @pytest.mark.parametrize("per_channel", [False, True])
    def test_planted_values(self, per_channel):
        model, data = model_of_activations(), planted()
        stats = calibrate_quietly(model, data, POINTS, batch_size=5, per_channel=per_channel, bins=64, sample=None)
        acts = ks.collect(model, data, POINTS, batch_size=5, progress=False)
        assert np.isnan(acts["same"]).sum() == 3 + 12 * POSITIONS  # the reference holds what was planted
        for address in POINTS:
            assert_finite_statistics(stats[address], acts[address], per_channel)
        same = stats["same"]
        expected = [2, 0, 1, 0, 12 * POSITIONS] if per_channel else 3 + 12 * POSITIONS
        np.testing.assert_array_equal(same.nan, expected)
        np.testing.assert_array_equal(same.neginf, [0, 0, 0, 1, 0] if per_channel else 1)

    def test_sampled_points(self):
        """With sampling, the exact statistics still see every value and skip the non-finite ones."""
        model, data = model_of_activations(), planted()
        stats = calibrate_quietly(model, data, POINTS, batch_size=5, sample=4)
        acts = ks.collect(model, data, POINTS, progress=False)
        for address in POINTS:
            s, a = stats[address], acts[address].astype(np.float64).ravel()
            f = a[np.isfinite(a)]
            assert not s.exact
            assert (s.count, s.nan, s.posinf, s.neginf) == (a.size, np.isnan(a).sum(), (a == np.inf).sum(),
                                                            (a == -np.inf).sum())
            assert (s.min, s.max) == (f.min(), f.max())
            np.testing.assert_allclose([s.mean, s.std], [f.mean(), f.std()], rtol=1e-5, atol=1e-6)
            counts, edges = s.histogram
            assert counts.sum() <= s.sampled and np.all(counts <= np.histogram(f, bins=edges)[0])

    @pytest.mark.backend
    def test_ranges_of_relu_outputs_are_not_derived_from_poisoned_inputs(self):
        """relu6ish(+inf) = 0.3 and relu(-inf) = 0 are finite: min and max must see them."""
        x = np.full((4, POSITIONS, CHANNELS), 0.1, "float32")
        x[1, 2, 3], x[2, 0, 0] = np.inf, -np.inf
        stats = calibrate_quietly(model_of_activations(), x, POINTS)
        assert (stats["same"].min, stats["same"].max) == (np.float32(0.1), np.float32(0.1))
        assert stats["relu6ish"].max == np.float32(0.3) and stats["relu6ish"].posinf == 0
        assert stats["act"].min == 0.0 and stats["act"].neginf == 0


    @pytest.mark.backend
    def test_batches_reduced_again_see_the_current_weights(self):
        """A poisoned batch runs through a second compiled step: it too must see new weights."""
        model, data = model_of_activations(), planted()
        calibrate_quietly(model, data, "d", batch_size=5)
        dense = model.get_layer("d")
        dense.set_weights([w * 3.0 + 1.0 for w in dense.get_weights()])
        stats = calibrate_quietly(model, data, "d", batch_size=5)
        acts = ks.collect(model, data, "d", batch_size=5, progress=False)
        assert_finite_statistics(stats["d"], acts["d"], per_channel=False)


class TestReporting:
    def test_one_warning_per_call_naming_points_and_counts(self):
        model, data = model_of_activations(), planted()
        with pytest.warns(UserWarning) as caught:
            ks.calibrate(model, data, ["same", "act"], batch_size=5, progress=False)
        assert len(caught) == 1
        message = str(caught[0].message)
        nan = 3 + 12 * POSITIONS
        assert f"'same' ({nan} NaN, {2 + 11 * POSITIONS} +inf, 1 -inf)" in message
        assert "'act' (" in message and "finite values only" in message
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # clean data: no warning
            clean = ks.calibrate(model, np.ones((3, POSITIONS, CHANNELS)), POINTS, progress=False)
        assert all(s.nan == s.posinf == s.neginf == 0 and s.finite == s.count for s in clean.values())

    def test_to_dict_repr_merge_and_json(self):
        model, data = model_of_activations(), planted()
        whole = calibrate_quietly(model, data, POINTS, batch_size=5, bins=32)
        shards = [calibrate_quietly(model, data[a:b], POINTS, batch_size=5, bins=32) for a, b in ((0, 10), (10, 23))]
        merged = merge(*shards)
        back = Calibration.from_json(json.dumps(merged.to_dict()))
        for address, s in whole.items():
            for m in (merged[address], back[address]):
                assert (m.count, m.nan, m.posinf, m.neginf, m.min, m.max) == (s.count, s.nan, s.posinf, s.neginf,
                                                                              s.min, s.max)
                np.testing.assert_allclose([m.mean, m.std], [s.mean, s.std], rtol=1e-6)
                np.testing.assert_array_equal(m.histogram[0], s.histogram[0])
        d = whole["same"].to_dict()
        assert (d["nan"], d["posinf"], d["neginf"]) == (whole["same"].nan, whole["same"].posinf, 1)
        assert d["finite"] == whole["same"].count - d["nan"] - d["posinf"] - 1
        assert PointStats.from_dict(d).to_dict() == d
        assert f"{d['nan']:,} NaN, {d['posinf']:,} +inf, 1 -inf" in repr(whole["same"])
        assert "not finite" not in repr(calibrate_quietly(model, np.ones((2, POSITIONS, CHANNELS)), "same")["same"])

    def test_per_channel_dict_of_a_channel_without_finite_values(self):
        model, data = model_of_activations(), planted()
        s = calibrate_quietly(model, data, "same", per_channel=True, bins=16)["same"]
        d = json.loads(json.dumps(s.to_dict()))
        assert d["nan"][4] + d["posinf"][4] == d["count"] and d["finite"][4] == 0
        assert np.isnan(d["min"][4]) and np.isnan(d["mean"][4]) and np.isnan(d["percentiles"]["50"][4])
        back = PointStats.from_dict(d)
        np.testing.assert_array_equal(back.finite, s.finite)
        np.testing.assert_array_equal(back.min[:4], s.min[:4])
        twice = back.merge(s)  # a channel without finite values merges without poisoning the others
        np.testing.assert_allclose(twice.mean[:4], s.mean[:4], rtol=1e-12)
        assert np.isnan(twice.mean[4]) and twice.nan[4] == 2 * s.nan[4]
        assert "not finite (left out)" in repr(s)
