"""`fake_quantize`: quantize-dequantize at points, quantized kernels, straight-through gradients.

References: numpy's float32 quantize-dequantize of the values that reach
each quantizer (read from an eager run of the quantized graph), a numpy
forward pass of a small MLP, a copy of the model whose kernels numpy
quantized, and the backend's own autodiff for the gradients.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from reference import own_autodiff
from zoo import ZOO, assert_roundtrip, assert_unchanged, eager_values, predict, sample_inputs, snapshot, to_numpy

import kerasurgery as ks
from kerasurgery.layers import FakeQuant, QuantizedWeights

pytestmark = pytest.mark.backend


def qdq32(x, r):
    """numpy float32 quantize-dequantize with a Range's scale and zero point (what the layer computes)."""
    x = np.asarray(x, np.float32)
    scale, zero = np.float32(r.scale), np.float32(r.zero_point)
    if r.channel_axis is not None:
        shape = [1] * x.ndim
        shape[r.channel_axis] = -1
        scale = np.asarray(r.scale, np.float32).reshape(shape)
        zero = np.asarray(r.zero_point, np.float32).reshape(shape)
    q = np.clip(np.round(x / scale) + zero, r.qmin, r.qmax)
    return ((q - zero) * scale).astype(np.float32)


def mlp():
    keras.utils.set_random_seed(1)
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="d1")(x)
    return keras.Model(x, keras.layers.Dense(3, name="out")(h), name="fq_mlp")


DATA = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")


@pytest.mark.parametrize("symmetric", [None, False])
def test_mlp_equals_a_numpy_forward_pass(symmetric):
    model = mlp()
    ranges = ks.calibrate(model, DATA, ["x", "d1:pre", "out"]).ranges("minmax", symmetric=symmetric)
    if symmetric is False:  # asymmetric: a zero point that is not 0
        assert all(r.zero_point != 0 for r in ranges.values())
    quantized = ks.fake_quantize(model, ranges)
    (w1, b1), (w2, b2) = model.get_layer("d1").get_weights(), model.get_layer("out").get_weights()
    x = qdq32(DATA, ranges["x"])
    pre = qdq32(x @ w1 + b1, ranges["d1:pre"])
    expected = qdq32(np.maximum(pre, 0) @ w2 + b2, ranges["out"])
    got = to_numpy(quantized(DATA))
    step = ranges["out"].scale
    # numpy's and the backend's matmuls round differently, rarely enough to move a value to the next code
    assert np.mean(np.abs(got - expected) > 1e-6) < 0.01
    np.testing.assert_allclose(got, expected, atol=step * 1.01)
    assert not np.allclose(got, to_numpy(model(DATA)), atol=1e-4)  # it does quantize


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_quantizes_at_every_float_point(name, tmp_path):
    model = ZOO[name]()
    data = sample_inputs(model, batch=6)
    before = snapshot(model)
    stats = ks.calibrate(model, data)
    floats = ks.Calibration(((a, s) for a, s in stats.items() if "float" in s.dtype), model=stats.model)
    quantized = ks.fake_quantize(model, floats.ranges("minmax"))
    assert_unchanged(model, before)
    graph = ks.to_graph(quantized)
    values = eager_values(quantized, data)
    ranges = floats.ranges("minmax")
    found = 0
    for key, d in graph.nodes(data=True):
        if isinstance(d["op"], FakeQuant):
            ((parent, _, edge),) = list(graph.in_edges(key, data=True))
            (index, _), = edge["feeds"]
            r = ranges[d["op"].point]
            np.testing.assert_array_equal(values[key][0], qdq32(values[parent][index], r))
            found += 1
    assert found == len(floats) > 0
    assert_roundtrip(quantized, data, tmp_path)
    keras.tree.assert_same_structure(predict(quantized, data), predict(model, data))


def test_per_channel_ranges_quantize_each_channel():
    keras.utils.set_random_seed(2)
    x = keras.Input((8, 8, 3), name="img")
    y = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    model = keras.Model(x, keras.layers.GlobalAveragePooling2D(name="gap")(y))
    data = np.random.default_rng(1).normal(size=(16, 8, 8, 3)).astype("float32")
    ranges = ks.calibrate(model, data, "conv:pre", per_channel=True).ranges("minmax", per_channel=True)
    quantized = ks.fake_quantize(model, ranges)
    pre = ks.collect(model, data, "conv:pre")["conv:pre"]
    got = ks.collect(quantized, data, "conv_pre_quant")["conv_pre_quant"]  # the quantizer of 'conv:pre'
    assert [layer.name for layer in quantized.layers][1:4] == ["conv_pre", "conv_pre_quant", "conv_activation"]
    np.testing.assert_array_equal(got, qdq32(pre, ranges["conv:pre"]))
    assert len(np.unique(np.round(got[..., 0] / ranges["conv:pre"].scale[0], 3) % 1)) == 1  # on channel 0's codes


def test_the_quantized_model_shares_the_weights():
    model = mlp()
    quantized = ks.fake_quantize(model, ks.calibrate(model, DATA, "d1:pre").ranges())
    before = to_numpy(quantized(DATA))
    kernel = model.get_layer("out").kernel
    kernel.assign(kernel.numpy() * 2)
    np.testing.assert_allclose(to_numpy(quantized(DATA)), before * 2 - to_numpy(model.get_layer("out").bias),
                               rtol=1e-5, atol=1e-5)


def test_bits_re_derive_the_scale_from_the_clipping_range():
    model = mlp()
    ranges = ks.calibrate(model, DATA, "d1:pre").ranges("mse")
    q4 = ks.fake_quantize(model, ranges, bits=4)
    layer = next(layer for layer in q4.layers if isinstance(layer, FakeQuant))
    assert (layer.qmin, layer.qmax) == (-7, 7)
    np.testing.assert_allclose(to_numpy(layer.scale), ranges["d1:pre"].high / 7, rtol=1e-6)


def quantized_copy(model, bits=8):
    """A copy of `model` whose kernels numpy quantized per output channel."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    top = 2 ** (bits - 1) - 1
    for layer in clone.layers:
        for attr, keep in (("kernel", (-1,)), ("depthwise_kernel", (-2, -1))):
            v = getattr(layer, attr, None)
            if v is None:
                continue
            w = v.numpy().astype(np.float32)
            axes = tuple(a for a in range(w.ndim) if a not in {k % w.ndim for k in keep})
            scale = np.abs(w).max(axis=axes, keepdims=True) / np.float32(top)
            v.assign(np.clip(np.round(w / scale), -top, top) * scale)
    return clone


@pytest.mark.parametrize("bits", [8, 4])
def test_weights_equal_a_copy_with_numpy_quantized_kernels(bits, tmp_path):
    keras.utils.set_random_seed(3)
    x = keras.Input((8, 8, 3), name="img")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(x, keras.layers.Dense(5, activation="softmax", name="fc")(h))
    data = np.random.default_rng(2).normal(size=(8, 8, 8, 3)).astype("float32")
    before = snapshot(model)
    quantized = ks.fake_quantize(model, ks.Ranges(), weights=True, bits=bits)
    assert sum(isinstance(layer, QuantizedWeights) for layer in quantized.layers) == 3
    np.testing.assert_allclose(to_numpy(quantized(data)), to_numpy(quantized_copy(model, bits)(data)), atol=1e-6)
    assert_unchanged(model, before)
    assert_roundtrip(quantized, data, tmp_path)
    only_fc = ks.fake_quantize(model, ks.Ranges(), weights="fc")
    assert [type(layer).__name__ for layer in only_fc.layers].count("QuantizedWeights") == 1
    # with activations at a fused :pre too: the kernel of the split layer is still quantized
    ranges = ks.calibrate(model, data, "conv:pre").ranges()
    both = ks.fake_quantize(model, ranges, weights=["conv"])
    assert any(isinstance(layer, QuantizedWeights) and layer.layer.name == "conv_pre" for layer in both.layers)


def test_gradients_pass_straight_through_inside_the_range():
    layer = FakeQuant.holding(0.1, 0, qmin=-127, qmax=127)
    x = np.array([-20.0, -12.69, -3.04, 0.0, 0.05, 7.3, 12.69, 13.0, 50.0], np.float32)  # none on the edges
    grad = own_autodiff(layer, x)
    np.testing.assert_array_equal(grad, (np.abs(x) <= 12.7).astype(np.float32))
    np.testing.assert_array_equal(to_numpy(layer(x)), np.clip(np.round(x / np.float32(0.1)), -127, 127) * np.float32(0.1))


def test_kernel_gradients_pass_straight_through():
    dense = keras.layers.Dense(2, use_bias=False)
    dense.build((None, 3))
    wrapped = QuantizedWeights(dense, bits=4)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("variable gradients through a tape: TensorFlow")
    import tensorflow as tf

    with tf.GradientTape() as tape:
        y = tf.reduce_sum(wrapped(x))
    np.testing.assert_allclose(tape.gradient(y, dense.kernel).numpy(), np.repeat(x.sum(0)[:, None], 2, 1), rtol=1e-5)


def test_scores_points_open_the_attention_layer():
    model = ZOO["attention"]()
    data = sample_inputs(model, batch=4)
    scores = [p for p in ks.points(model) if p.endswith(":scores")]
    ranges = ks.calibrate(model, data, scores).ranges("minmax", bits=4)
    quantized = ks.fake_quantize(model, ranges, bits=4)
    from kerasurgery.passes.patch_specs import patch_name

    got = ks.collect(quantized, data, [patch_name(p, "quant") for p in scores])
    for p in scores:  # the weights the values are multiplied by are on the 4-bit grid
        codes = got[patch_name(p, "quant")] / ranges[p].scale
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
        assert len(np.unique(np.round(codes))) <= 16


def test_bad_arguments_are_refused_clearly():
    model = mlp()
    ranges = ks.calibrate(model, DATA, ["d1:pre", "out"]).ranges()
    with pytest.raises(ks.AddressError, match="d1"):
        ks.fake_quantize(model, ranges, points=["d1"])  # a point without statistics (closest: d1:pre)
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="out")], name="other")
    with pytest.raises(ks.TransformError, match="Expected ranges calibrated on model 'other'. Received: ranges of "
                                                "model 'fq_mlp'"):
        ks.fake_quantize(other, ranges)
    for bits in (1, 17, "8"):
        with pytest.raises(ks.DataError, match="Expected `bits` to be an integer from 2 to 16"):
            ks.fake_quantize(model, ranges, bits=bits)
    with pytest.raises(ks.TransformError, match="Expected `ranges` from `Calibration.ranges"):
        ks.fake_quantize(model, {"d1:pre": (0.0, 1.0)})
    renamed = ks.Ranges(ranges, model=None)
    renamed["d9:pre"] = ranges["d1:pre"]
    with pytest.raises(ks.AddressError, match="d9:pre.*d1:pre"):
        ks.fake_quantize(model, renamed)
    with pytest.raises(ks.AddressError, match="Expected `weights` to name points of the layers with float kernels"):
        ks.fake_quantize(model, ranges, weights="x")
    channel = ks.calibrate(model, DATA, "d1:pre", per_channel=True).ranges(per_channel=True)
    wide = keras.Model(*(lambda x: (x, keras.layers.Dense(7, activation="relu", name="d1")(x)))(keras.Input((6,))),
                       name="fq_mlp")
    with pytest.raises(ks.TransformError, match="Expected a value with 16 channels on axis 1"):
        ks.fake_quantize(wide, channel)


def test_integer_points_are_refused():
    x = keras.Input((4,), dtype="int32", name="ids")
    model = keras.Model(x, keras.layers.Embedding(10, 3, name="emb")(x), name="ints")
    ids = np.random.default_rng(0).integers(0, 10, (8, 4)).astype("int32")
    stats = ks.calibrate(model, ids, ["ids", "emb"])
    with pytest.raises(ks.TransformError, match="Expected floating-point values to fake-quantize. Received: 'ids'"):
        ks.fake_quantize(model, stats.ranges())
    assert ks.fake_quantize(model, stats.ranges(), points="emb").output.shape == (None, 4, 3)
