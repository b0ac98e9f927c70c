"""`quantization_error` and `plot.sqnr`: against numpy on values collected separately from both models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from zoo import ZOO, assert_unchanged, sample_inputs, snapshot

import kerasurgery as ks
from kerasurgery.quant.error import quantizer_points

pytestmark = pytest.mark.backend


def model_and_data():
    keras.utils.set_random_seed(4)
    x = keras.Input((8, 8, 3), name="img")
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(x)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = keras.layers.Dense(8, activation="tanh", name="fc")(h)
    model = keras.Model(x, keras.layers.Dense(3, name="out")(h), name="qe_cnn")
    data = np.random.default_rng(5).normal(size=(50, 8, 8, 3)).astype("float32")
    return model, data


def reference(x, q):
    """The four numbers of one point from the whole arrays, in float64."""
    x, q = np.asarray(x, np.float64).ravel(), np.asarray(q, np.float64).ravel()
    d = x - q
    return {"sqnr_db": 10 * np.log10(np.sum(x * x) / np.sum(d * d)), "mse": np.mean(d * d),
            "cosine": np.dot(x, q) / np.sqrt(np.dot(x, x) * np.dot(q, q)), "max_abs": np.max(np.abs(d))}


@pytest.mark.parametrize("bits", [8, 4])
def test_every_figure_equals_numpy_on_the_collected_values(bits):
    model, data = model_and_data()
    before = snapshot(model)
    ranges = ks.calibrate(model, data, ["img", "conv:pre", "fc:pre", "out"]).ranges("mse")
    quantized = ks.fake_quantize(model, ranges, bits=bits)
    errors = ks.quantization_error(model, quantized, data, batch_size=16)  # 4 batches, the last one short
    keys = quantizer_points(quantized)
    assert list(errors) == ["img", "conv:pre", "fc:pre", "out"]  # depth order; 'out' is both point and output
    assert errors.samples == 50 and errors["out"].output is False
    floats = ks.collect(model, data, list(keys))
    quants = ks.collect(quantized, data, list(keys.values()))
    for point, key in keys.items():
        want = reference(floats[point], quants[key])
        got = errors[point]
        assert got.count == floats[point].size
        for field, value in want.items():
            np.testing.assert_allclose(getattr(got, field), value, rtol=2e-4, err_msg=f"{point} {field}")
    assert_unchanged(model, before)


def test_outputs_are_compared_and_points_select():
    model, data = model_and_data()
    ranges = ks.calibrate(model, data, ["conv:pre", "fc:pre"]).ranges("minmax")
    quantized = ks.fake_quantize(model, ranges)
    errors = ks.quantization_error(model, quantized, data, points="fc:*")
    assert list(errors) == ["fc:pre", "out"] and errors["out"].output
    want = reference(model.predict(data, verbose=0), quantized.predict(data, verbose=0))
    for field, value in want.items():
        np.testing.assert_allclose(getattr(errors["out"], field), value, rtol=2e-4)
    assert "fc:pre" in errors.table() and "out (output)" in errors.table()
    assert errors.worst.address == "fc:pre"
    # more bits, less error, about 6 dB a bit
    e8 = ks.quantization_error(model, quantized, data)
    e4 = ks.quantization_error(model, ks.fake_quantize(model, ranges, bits=4), data)
    assert 18 < e8["conv:pre"].sqnr_db - e4["conv:pre"].sqnr_db < 30


def test_identical_models_have_infinite_sqnr_and_weights_only_models_compare_outputs():
    model, data = model_and_data()
    same = ks.quantization_error(model, ks.split_activations(model), data)
    assert list(same) == ["out"] and same["out"].sqnr_db == np.inf and same["out"].cosine == 1.0
    weights = ks.fake_quantize(model, ks.Ranges(), weights=True, bits=6)
    e = ks.quantization_error(model, weights, data)["out"]
    np.testing.assert_allclose(e.mse, reference(model.predict(data, verbose=0),
                                                weights.predict(data, verbose=0))["mse"], rtol=2e-4)


@pytest.mark.parametrize("name", ["branches", "shared", "nested_functional", "multi_io", "attention"])
def test_zoo_models(name):
    model = ZOO[name]()
    data = sample_inputs(model, batch=6)
    stats = ks.calibrate(model, data)
    floats = ks.Calibration(((a, s) for a, s in stats.items() if "float" in s.dtype), model=stats.model)
    quantized = ks.fake_quantize(model, floats.ranges("minmax"), bits=6)
    errors = ks.quantization_error(model, quantized, data, batch_size=4)
    keys = quantizer_points(quantized)
    floats_v = ks.collect(model, data, list(keys))
    quants_v = ks.collect(quantized, data, list(keys.values()))
    for point, key in keys.items():
        np.testing.assert_allclose(errors[point].mse, reference(floats_v[point], quants_v[key])["mse"],
                                   rtol=1e-3, atol=1e-12)
    assert sum(e.output for e in errors.values()) + sum(1 for p in keys) >= len(keys)


def test_bad_inputs():
    model, data = model_and_data()
    ranges = ks.calibrate(model, data, ["conv:pre"]).ranges()
    quantized = ks.fake_quantize(model, ranges)
    with pytest.raises(ks.AddressError, match="fc:pre"):
        ks.quantization_error(model, quantized, data, points="fc:pre")  # not quantized
    x = keras.Input((8, 8, 3), name="img")
    other = keras.Model(x, keras.layers.Dense(3, name="out")(keras.layers.Flatten(name="f")(x)), name="other")
    with pytest.raises(ks.TransformError, match=r"Expected `quantized` made from `model` \('other'\).*conv:pre"):
        ks.quantization_error(other, quantized, data)
    with pytest.raises(ks.DataError):
        ks.quantization_error(model, quantized, np.zeros((4, 5)))
    with pytest.raises(ks.DataError, match="Expected the result of `kerasurgery.quantization_error`"):
        ks.plot.sqnr({})


def test_plot_draws_every_point_in_depth_order():
    import matplotlib.pyplot as plt

    model, data = model_and_data()
    quantized = ks.fake_quantize(model, ks.calibrate(model, data, "*:pre").ranges("mse"), bits=5)
    errors = ks.quantization_error(model, quantized, data)
    fig = ks.plot.sqnr(errors, threshold=25)
    ax = fig.axes[0]
    line = ax.lines[0]
    inner = [e.sqnr_db for e in errors.values() if not e.output]
    np.testing.assert_allclose(line.get_ydata(), inner)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv:pre", "fc:pre", "out (output)"]
    plt.close(fig)
