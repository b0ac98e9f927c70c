"""Quantization ranges from calibration statistics: `Calibration.ranges` against numpy and the published algorithms.

References are independent of kerasurgery's own search code:

- minmax and percentile: numpy on the exact activations (the model input and
  a ReLU of it, which numpy computes exactly; a Dense pre-activation from
  `collect`); percentiles as ``method="inverted_cdf"`` (a value of the data:
  numpy's default interpolates between two order statistics, which in a
  sparse tail can lie many empty cells away from both);
- entropy: a straightforward loop over the candidates of TensorRT's KL
  threshold search (Migacz, "8-bit inference with TensorRT", GTC 2017),
  written here from the slides, on the same histogram (folded to |x| here
  from the cell centres, the exact zeros left out as kerasurgery does);
- mse: the quantization MSE of every candidate threshold computed directly
  on the exact values.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerasurgery as ks
from kerasurgery.quant.ranges import Range, codes

pytestmark = pytest.mark.backend

N, F = 512, 64


def model_and_data(seed=0, dist="t", n=N):
    keras.utils.set_random_seed(seed)
    x = keras.Input((F,), name="x")
    relu = keras.layers.ReLU(name="relu")(x)
    d = keras.layers.Dense(32, activation="relu", name="d")(x)
    model = keras.Model(x, [relu, d], name="ranges_model")
    rng = np.random.default_rng(seed)
    data = (rng.standard_t(3, (n, F)) if dist == "t" else rng.standard_normal((n, F))).astype("float32")
    return model, data


@pytest.fixture(scope="module")
def calibrated():
    model, data = model_and_data()
    stats = ks.calibrate(model, data, ["x", "relu", "d:pre", "d"], sample=None, batch_size=64)
    acts = ks.collect(model, data, ["x", "relu", "d:pre", "d"])
    exact = {"x": data.astype(np.float64), "relu": np.maximum(data, 0).astype(np.float64),
             "d:pre": acts["d:pre"].astype(np.float64), "d": acts["d"].astype(np.float64)}
    return model, data, stats, exact


def width_of(s):
    counts, edges = s.histogram
    return float(edges[1] - edges[0])


def test_minmax_is_the_exact_min_and_max(calibrated):
    _, _, stats, exact = calibrated
    r = stats.ranges("minmax", symmetric=False)
    assert r["x"].low == pytest.approx(exact["x"].min(), abs=r["x"].scale / 2)  # the zero point is rounded
    s = stats.ranges("minmax")
    assert s["x"].kind == "signed" and s["x"].high == np.abs(exact["x"]).max() and s["x"].low == -s["x"].high
    assert s["relu"].kind == "unsigned" and s["relu"].low == 0 and s["relu"].high == exact["relu"].max()
    assert s["relu"].scale == exact["relu"].max() / 255 and s["x"].scale == np.abs(exact["x"]).max() / 127


@pytest.mark.parametrize("q", [99.0, 99.9, 99.99, 100.0])
def test_percentile_equals_numpy_within_one_bin(calibrated, q):
    _, _, stats, exact = calibrated
    for address in ("x", "relu", "d:pre"):
        w = width_of(stats[address])
        r = stats.ranges("percentile", percentile=q)[address]
        expected = np.percentile(np.abs(exact[address]), q, method="inverted_cdf")
        assert abs(r.high - expected) <= w, (address, r.high, expected, w)
        a = stats.ranges("percentile", percentile=q, symmetric=False)[address]
        lo, hi = np.percentile(exact[address], [100 - q, q], method="inverted_cdf")
        # the asymmetric range is widened to hold 0 and moved by less than half a step so that 0 is a code
        assert abs(a.high - max(hi, 0)) <= w + a.scale / 2 and abs(a.low - min(lo, 0)) <= w + a.scale / 2


def reference_fold(s):
    """|x| histogram from the cell centres (cells 0, 1, ... of the same width), without the exact zeros
    (the one step kerasurgery adds to the published search: zeros are a code at any threshold)."""
    counts, edges = s.histogram
    w = edges[1] - edges[0]
    centres = (edges[:-1] + edges[1:]) / 2
    cells = np.floor(np.abs(centres) / w).astype(int)
    hist = np.zeros(cells.max() + 1, np.int64)
    np.add.at(hist, cells, counts)
    hist[0] -= s.zeros
    last = np.flatnonzero(hist)[-1]
    return hist[: last + 1], w


def reference_entropy(hist, levels=128):
    """TensorRT's entropy calibration, one candidate at a time (threshold at the last kept cell's upper edge)."""
    divergences = []
    for i in range(levels, len(hist) + 1):
        p = hist[:i].astype(np.float64).copy()
        p[i - 1] += hist[i:].sum()  # outliers into the last bin
        per = i // levels
        q = np.zeros(i)
        for j in range(levels):  # quantize into `levels` bins, then expand over the non-empty bins of P
            start = j * per
            stop = i if j == levels - 1 else start + per
            nonzero = p[start:stop] != 0
            if nonzero.sum():
                q[start:stop] = np.where(nonzero, hist[start:stop].sum() / nonzero.sum(), 0.0)
        p, q = p / p.sum(), q / q.sum()
        keep = p > 0
        divergences.append(np.inf if np.any(q[keep] == 0) else np.sum(p[keep] * np.log(p[keep] / q[keep])))
    return levels + int(np.argmin(divergences)), np.array(divergences)


@pytest.mark.parametrize("address, levels", [("x", 128), ("d:pre", 128), ("relu", 256)])
def test_entropy_equals_the_published_kl_search(calibrated, address, levels):
    from kerasurgery.quant.thresholds import entropy_divergences

    _, _, stats, _ = calibrated
    hist, w = reference_fold(stats[address])
    assert len(hist) > levels + 100  # a real search
    best, divergences = reference_entropy(hist, levels)
    r = stats.ranges("entropy")[address]
    assert r.high == min(best * w, max(abs(stats[address].min), abs(stats[address].max)))
    finite = np.isfinite(divergences)
    np.testing.assert_allclose(entropy_divergences(hist, levels)[finite], divergences[finite], rtol=1e-9, atol=1e-12)


def test_exact_zeros_do_not_move_the_entropy_threshold():
    """Zeros are a code at any threshold: a spike of them (padding, dead units) changes nothing; the published
    search, which counts them in the first cell, would pull the threshold far down."""
    model, data = model_and_data()
    padded = np.concatenate([data, np.zeros_like(data)])  # half of every point's values become exact zeros
    a = ks.calibrate(model, data, ["x", "d:pre"], sample=None).ranges("entropy")
    stats = ks.calibrate(model, padded, ["x", "d:pre"], sample=None)
    b = stats.ranges("entropy")
    assert a["x"].high == b["x"].high and a["d:pre"].high == b["d:pre"].high
    hist, w = reference_fold(stats["d:pre"])
    hist[0] += stats["d:pre"].zeros  # the published search on the histogram as it is
    assert reference_entropy(hist)[0] * w < 0.8 * b["d:pre"].high


def exact_mse(values, t, qmax, unsigned):
    step = t / qmax
    lo = 0 if unsigned else -qmax
    return np.mean((values - np.clip(np.round(values / step), lo, qmax) * step) ** 2)


@pytest.mark.parametrize("address", ["x", "relu", "d:pre"])
def test_mse_is_the_exact_minimum_within_one_bin(address):
    """The exact MSE of every cell edge above a quarter of max |x| (262,144 values; about 800 candidates).

    With fewer values the exact curve is flat and noisy near its minimum
    (its argmin then moves a few cells with the few values in the tail); the
    next test covers that case by the error itself.
    """
    model, data = model_and_data(seed=1, dist="normal", n=4096)
    stats = ks.calibrate(model, data, [address], sample=None, batch_size=256)
    values = {"x": data, "relu": np.maximum(data, 0)}.get(address)
    if values is None:
        values = ks.collect(model, data, [address], batch_size=256)[address]
    values = values.astype(np.float64).ravel()
    r = stats.ranges("mse")[address]
    unsigned = r.kind == "unsigned"
    assert unsigned == (address == "relu")
    w = width_of(stats[address])
    amax = np.abs(values).max()
    candidates = np.append(np.arange(1, int(np.ceil(amax / w))) * w, amax)
    candidates = candidates[candidates > amax / 4]
    errors = [exact_mse(values, t, r.qmax, unsigned) for t in candidates]
    best = candidates[int(np.argmin(errors))]
    assert abs(r.high - best) <= w, (r.high, best, w)
    assert exact_mse(values, r.high, r.qmax, unsigned) <= min(errors) * 1.001


def test_mse_on_heavy_tails_is_within_a_tenth_of_a_percent_of_the_exact_minimum(calibrated):
    """32,768 values of a t(3): the exact MSE is flat near its minimum, so the threshold may move a few cells;
    its error stays within 0.1% of the exact minimum over every cell edge."""
    _, _, stats, exact = calibrated
    values = exact["x"].ravel()
    r = stats.ranges("mse")["x"]
    w = width_of(stats["x"])
    amax = np.abs(values).max()
    candidates = np.append(np.arange(1, int(np.ceil(amax / w))) * w, amax)
    errors = np.array([exact_mse(values, t, 127, False) for t in candidates])
    assert exact_mse(values, r.high, 127, False) <= errors.min() * 1.001
    assert exact_mse(values, r.high, 127, False) < 0.9 * exact_mse(values, amax, 127, False)  # clipping pays


def test_mse_has_the_least_error_of_the_four_methods(calibrated):
    _, _, stats, exact = calibrated
    for address in ("x", "relu", "d:pre"):
        errors = {m: np.mean((exact[address] - stats.ranges(m)[address].fake_quantize(exact[address])) ** 2)
                  for m in ("minmax", "percentile", "entropy", "mse")}
        assert errors["mse"] == min(errors.values()), (address, errors)


@pytest.mark.parametrize("kind", ["signed", "unsigned", "asymmetric"])
@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_a_range_quantizes_onto_its_codes(kind, bits):
    from kerasurgery.quant.ranges import make_range

    r = make_range("p", -0.7, 2.3, bits=bits, kind=kind, method="minmax")
    qmin, qmax = codes(bits, kind)
    assert (r.qmin, r.qmax) == (qmin, qmax)
    x = np.linspace(-3, 3, 1001)
    q = r.quantize(x)
    assert q.min() >= qmin and q.max() <= qmax
    y = r.fake_quantize(x)
    assert np.all(y >= r.low - 1e-12) and np.all(y <= r.high + 1e-12)
    inside = (x >= r.low) & (x <= r.high)
    assert np.all(np.abs(y - x)[inside] <= r.scale / 2 + 1e-12)  # nearest code inside the range
    assert r.fake_quantize(np.zeros(1))[0] == 0  # zero is exact
    if kind == "asymmetric":
        assert r.low <= -0.7 + r.scale and r.high >= 2.3 - r.scale


def test_per_channel_ranges_equal_per_channel_minmax():
    model, data = model_and_data()
    stats = ks.calibrate(model, data, ["d:pre"], per_channel=True, sample=None)
    pre = ks.collect(model, data, ["d:pre"])["d:pre"]
    r = stats.ranges("minmax", per_channel=True)["d:pre"]
    np.testing.assert_allclose(r.high, np.abs(pre).max(axis=0), rtol=0, atol=0)
    assert r.channel_axis == 1 and r.scale.shape == (32,)
    np.testing.assert_allclose(r.fake_quantize(pre),
                               np.clip(np.round(pre / r.scale), -127, 127) * r.scale, rtol=0, atol=0)
    merged = stats.ranges("minmax")["d:pre"]  # channels merged into one range
    assert merged.channel_axis is None and merged.high == np.abs(pre).max()
    mse = stats.ranges("mse", per_channel=True)["d:pre"]
    assert np.all(mse.high <= r.high) and mse.high.shape == (32,)


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_ranges_of_merged_shards_equal_one_run(method):
    model, data = model_and_data(seed=2)
    sample = None if method != "minmax" else 256  # minmax is exact at the default too
    points = ["x", "relu", "d:pre"]
    whole = ks.calibrate(model, data, points, batch_size=64, sample=sample)
    shards = ks.merge(ks.calibrate(model, data[:192], points, batch_size=64, sample=sample),
                      ks.calibrate(model, data[192:], points, batch_size=64, sample=sample))
    for symmetric in (None, False):
        a = whole.ranges(method, symmetric=symmetric)
        b = shards.ranges(method, symmetric=symmetric)
        for p in points:
            assert a[p].to_dict() == b[p].to_dict(), (p, a[p], b[p])


def test_json_round_trip_is_exact(calibrated, tmp_path):
    _, _, stats, _ = calibrated
    for r in (stats.ranges("entropy"), stats.ranges("percentile", percentile=99.9, symmetric=False, bits=6)):
        back = ks.Ranges.from_json(r.to_json())
        assert back.to_dict() == r.to_dict() and back.model == "ranges_model"
        assert all(isinstance(v, Range) for v in back.values())
        r.to_json(tmp_path / "r.json", overwrite=True)
        assert ks.Ranges.from_json(tmp_path / "r.json").to_dict() == r.to_dict()
    before = (tmp_path / "r.json").read_text()
    with pytest.raises(ks.DataError, match=r"Expected a new file for the ranges\. Received: .*r\.json', which exists"):
        stats.ranges("mse").to_json(tmp_path / "r.json")  # nothing overwritten unless asked
    assert (tmp_path / "r.json").read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    channel = ks.calibrate(calibrated[0], calibrated[1], "d:pre", per_channel=True).ranges(per_channel=True)
    back = ks.Ranges.from_json(channel.to_json())
    np.testing.assert_array_equal(back["d:pre"].scale, channel["d:pre"].scale)
    assert back["d:pre"].zero_point.dtype == np.int64


def test_bad_arguments_are_refused_clearly(calibrated):
    _, _, stats, _ = calibrated
    with pytest.raises(ks.DataError, match="Expected `method` to be one of 'minmax', 'percentile', 'entropy', 'mse'. "
                                            "Received: method='kl'"):
        stats.ranges("kl")
    for bad in (0, 0.0, -1, 100.5, True, "99"):
        with pytest.raises(ks.DataError, match=r"percentile` to be a number in \(0, 100\]"):
            stats.ranges("percentile", percentile=bad)
    for bad in (1, 17, 8.0, None):
        with pytest.raises(ks.DataError, match="Expected `bits` to be an integer from 2 to 16"):
            stats.ranges("minmax", bits=bad)
    with pytest.raises(ks.DataError, match="Expected `symmetric` to be None"):
        stats.ranges("minmax", symmetric="yes")
    with pytest.raises(ks.DataError, match="Expected per-channel statistics .*`calibrate\\(..., per_channel=True\\)"):
        stats.ranges("minmax", per_channel=True)
    with pytest.raises(ks.DataError, match="Expected a Calibration with at least one point|Expected a calibration"):
        ks.Calibration().ranges()
    with pytest.raises(ks.DataError, match="Expected ranges written by `Ranges.to_json`.*Calibration.from_json"):
        ks.Ranges.from_json(stats.to_json())


def test_entropy_on_too_coarse_a_histogram_says_how_many_bins():
    model, data = model_and_data()
    stats = ks.calibrate(model, data, "d:pre", per_channel=True)  # 128 cells per channel
    with pytest.raises(ks.DataError, match="at least 128 cells for the entropy method at 8 bits.*bins="):
        stats.ranges("entropy", per_channel=True)
    assert stats.ranges("entropy", per_channel=True, bits=4)["d:pre"].bits == 4  # 8 levels: enough


def test_a_point_without_finite_values_is_named():
    x = keras.Input((3,), name="x")
    model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
    data = np.full((4, 3), np.nan, "float32")
    with pytest.warns(UserWarning):
        stats = ks.calibrate(model, data, "x")
    with pytest.raises(ks.DataError, match="Expected finite values at every point.*'x' had no finite value"):
        stats.ranges()


def test_a_point_that_is_always_zero_gets_a_tiny_scale():
    x = keras.Input((3,), name="x")
    model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
    stats = ks.calibrate(model, np.zeros((4, 3), "float32"), "x")
    for method in ("minmax", "percentile", "entropy", "mse"):
        r = stats.ranges(method)["x"]
        assert r.low == r.high == 0 and 0 < r.scale < 1e-30
        assert np.all(r.fake_quantize(np.array([0.0, 1.0])) < 1e-30)
