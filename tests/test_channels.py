"""delete_channels on small models: every rule against a reference computed without kerasurgery.

The reference is the original model with the deleted channels zeroed by hand
(`zeroing.zeroed_copy`: filters, biases, BatchNormalization gamma and beta),
or numpy where zeroing is not equivalent (a sigmoid output, LayerNormalization
statistics). Sliced weights are compared with ``np.delete`` of the
original's. Every case also checks that the original is unchanged, and some
round-trip through ``.keras``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from test_purity import freeze
from zeroing import batchnorm, filters, layer_named, randomize_batchnorms, run, zeroed_copy
from zoo import ZOO, assert_roundtrip, assert_unchanged, sample_inputs, snapshot

import kerasurgery as ks
from kerasurgery.passes.channels import delete_channels_pass, plan_channels

pytestmark = pytest.mark.backend


def weights(model, name):
    return {v.name: np.array(keras.ops.convert_to_numpy(v)) for v in layer_named(model, name).weights}


def check(model, point, channels, edits, *, atol=1e-5, tmp_path=None):
    """delete_channels equals the zeroed original; the original is unchanged; returns the pruned model."""
    before = snapshot(model)
    data = sample_inputs(model, batch=3)
    pruned = ks.delete_channels(model, point, channels)
    expected = run(zeroed_copy(model, edits), data)
    for got, want in zip(keras.tree.flatten(run(pruned, data)), keras.tree.flatten(expected)):
        np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5)
    assert_unchanged(model, before)
    assert not {id(v) for v in pruned.weights} & {id(v) for v in model.weights}, "the copy shares variables"
    if tmp_path is not None:
        assert_roundtrip(pruned, data, tmp_path)
    return pruned


def test_dense_units(tmp_path):
    model = ZOO["mlp"]()
    pruned = check(model, "dense_1", [0, 3, 15], {"dense_1": filters([0, 3, 15])}, tmp_path=tmp_path)
    old, new = weights(model, "dense_1"), weights(pruned, "dense_1")
    np.testing.assert_array_equal(new["kernel"], np.delete(old["kernel"], [0, 3, 15], axis=1))
    np.testing.assert_array_equal(new["bias"], np.delete(old["bias"], [0, 3, 15]))
    np.testing.assert_array_equal(weights(pruned, "dense_2")["kernel"],
                                  np.delete(weights(model, "dense_2")["kernel"], [0, 3, 15], axis=0))
    assert pruned.get_layer("dense_1").units == 13
    assert model.count_params() - pruned.count_params() == 3 * (8 + 1) + 3 * 8


def test_conv_bn_relu_depthwise_separable():
    """conv -> bn -> relu -> depthwise (its channels go too) -> separable (its input rows go)."""
    model = ZOO["cnn_bn"]()
    pruned = check(model, "conv", [1, 5], {"conv": filters([1, 5]), "bn": batchnorm([1, 5]),
                                           "dw": [("bias", 0, [1, 5])]})
    old, new = weights(model, "sep"), weights(pruned, "sep")
    np.testing.assert_array_equal(new["depthwise_kernel"], np.delete(old["depthwise_kernel"], [1, 5], axis=2))
    np.testing.assert_array_equal(new["pointwise_kernel"], np.delete(old["pointwise_kernel"], [1, 5], axis=2))
    np.testing.assert_array_equal(weights(pruned, "dw")["kernel"],
                                  np.delete(weights(model, "dw")["kernel"], [1, 5], axis=2))
    np.testing.assert_array_equal(weights(pruned, "bn")["moving_variance"],
                                  np.delete(weights(model, "bn")["moving_variance"], [1, 5]))


def test_a_depthwise_point_deletes_its_input_channels():
    """With multiplier 1, output channel c of a depthwise convolution is its input channel c."""
    model = ZOO["cnn_bn"]()
    data = sample_inputs(model)
    by_dw, by_conv = ks.delete_channels(model, "dw", [2]), ks.delete_channels(model, "conv", [2])
    np.testing.assert_array_equal(run(by_dw, data), run(by_conv, data))
    assert by_dw.get_layer("conv").filters == 7


def _depthwise_model(multiplier=2):
    x = keras.Input((8, 8, 3), name="x")
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    h = layers.DepthwiseConv2D(3, depth_multiplier=multiplier, name="dw")(h)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Conv2D(3, 1, name="head")(h)
    return keras.Model(x, layers.GlobalAveragePooling2D(name="gap")(h))


def test_depthwise_multiplier_channels():
    """Input channel c of a depthwise convolution with multiplier 2 owns its outputs 2c and 2c+1."""
    model = _depthwise_model()
    randomize_batchnorms(model)
    pruned = check(model, "conv", [1], {"conv": filters([1]), "dw": [("bias", 0, [2, 3])], "bn": batchnorm([2, 3])})
    np.testing.assert_array_equal(weights(pruned, "head")["kernel"],
                                  np.delete(weights(model, "head")["kernel"], [2, 3], axis=2))
    data = sample_inputs(model)
    np.testing.assert_array_equal(run(ks.delete_channels(model, "dw", [2, 3]), data), run(pruned, data))
    with pytest.raises(ks.TransformError, match=r"exactly channels \[2\] of 'dw'.*also deletes its channels \[3\]"):
        ks.delete_channels(model, "dw", [2])


def test_separable_input_with_multiplier():
    """Input channel c of a separable convolution with multiplier 3 owns its pointwise rows 3c .. 3c+2."""
    x = keras.Input((7, 7, 2), name="x")
    h = layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    model = keras.Model(x, layers.SeparableConv2D(3, 3, depth_multiplier=3, name="sep")(h))
    pruned = check(model, "conv", [1, 2], {"conv": filters([1, 2])})
    np.testing.assert_array_equal(weights(pruned, "sep")["pointwise_kernel"],
                                  np.delete(weights(model, "sep")["pointwise_kernel"], [3, 4, 5, 6, 7, 8], axis=2))


def test_separable_and_transposed_points():
    model = ZOO["cnn_bn"]()
    check(model, "sep", [0, 3], {"sep": [("pointwise_kernel", -1, [0, 3]), ("bias", 0, [0, 3])]})
    # 'up' has a sigmoid: a zeroed channel would be 0.5, so the reference is numpy on the original's values
    data = sample_inputs(model)
    pruned = ks.delete_channels(model, "up", [1])
    values = run(ks.expose(model, ["gap", "predictions:pre"]), data)
    kernel = weights(model, "predictions")["kernel"]
    logits = values["predictions:pre"] - values["gap"][:, 1:2] @ kernel[1:2]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(run(pruned, data), expected, atol=1e-6)
    np.testing.assert_array_equal(weights(pruned, "up")["kernel"], np.delete(weights(model, "up")["kernel"], [1], axis=2))


@pytest.mark.parametrize("conv", [layers.Conv1D, layers.Conv3D, layers.Conv1DTranspose, layers.Conv3DTranspose])
def test_other_dimensions(conv):
    shape = {1: (9, 2), 3: (4, 4, 4, 2)}[3 if "3D" in conv.__name__ else 1]
    x = keras.Input(shape, name="x")
    h = conv(5, 3, padding="same", activation="relu", name="conv")(x)
    h = layers.BatchNormalization(name="bn")(h)
    y = conv(2, 3, padding="same", name="next")(h)
    model = keras.Model(x, y)
    transposed = "Transpose" in conv.__name__  # a transposed kernel is (..., out, in)
    pruned = check(model, "conv", [0, 4], {"conv": filters([0, 4], axis=-2 if transposed else -1),
                                           "bn": batchnorm([0, 4])})
    axis = -1 if transposed else -2
    np.testing.assert_array_equal(weights(pruned, "next")["kernel"],
                                  np.delete(weights(model, "next")["kernel"], [0, 4], axis=axis))


def test_add_takes_the_same_channels_from_the_other_branch(tmp_path):
    model = ZOO["branches"]()  # add(a, b), sub(b, a), concat([add, sub, x]) -> out
    pruned = check(model, "a", [1], {"a": filters([1]), "b": filters([1])}, tmp_path=tmp_path)
    assert pruned.get_layer("b").units == 4
    rows = [1, 5 + 1]  # channel 1 of add (offset 0) and of sub (offset 5); x's columns stay
    np.testing.assert_array_equal(weights(pruned, "out")["kernel"],
                                  np.delete(weights(model, "out")["kernel"], rows, axis=0))


def _concat_model():
    x = keras.Input((6, 6, 2), name="x")
    a = layers.Conv2D(3, 3, padding="same", activation="relu", name="a")(x)
    b = layers.Conv2D(4, 3, padding="same", activation="relu", name="b")(x)
    h = layers.Concatenate(name="cat")([a, b, a])
    return keras.Model(x, layers.Conv2D(2, 1, name="head")(h))


def test_concatenate_offsets():
    model = _concat_model()
    pruned = check(model, "b", [0, 2], {"b": filters([0, 2])})
    np.testing.assert_array_equal(weights(pruned, "head")["kernel"],
                                  np.delete(weights(model, "head")["kernel"], [3, 5], axis=2))
    pruned = check(model, "a", [1], {"a": filters([1])})  # 'a' fills two slots: offsets 0 and 7
    np.testing.assert_array_equal(weights(pruned, "head")["kernel"],
                                  np.delete(weights(model, "head")["kernel"], [1, 8], axis=2))


def test_flatten_rows_of_the_next_dense():
    x = keras.Input((6, 6, 2), name="x")
    h = layers.Conv2D(4, 3, activation="relu", name="conv")(x)  # (4, 4, 4)
    h = layers.MaxPooling2D(name="pool")(h)  # (2, 2, 4)
    y = layers.Dense(3, name="dense")(layers.Dropout(0.5, name="drop")(layers.Flatten(name="flat")(h)))
    model = keras.Model(x, y)
    pruned = check(model, "conv", [1], {"conv": filters([1])})
    rows = [p * 4 + 1 for p in range(4)]  # position p holds channels p*4 .. p*4+3
    np.testing.assert_array_equal(weights(pruned, "dense")["kernel"],
                                  np.delete(weights(model, "dense")["kernel"], rows, axis=0))


def _squeeze_excite():
    x = keras.Input((6, 6, 3), name="x")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    s = layers.GlobalAveragePooling2D(name="squeeze")(h)
    s = layers.Reshape((1, 1, 8), name="reshape")(s)
    s = layers.Conv2D(2, 1, activation="relu", name="reduce")(s)
    s = layers.Conv2D(8, 1, activation="sigmoid", name="expand")(s)
    h = layers.Multiply(name="excite")([h, s])
    h = layers.ZeroPadding2D(name="pad")(layers.UpSampling2D(name="up")(h))
    return keras.Model(x, layers.Conv2D(2, 1, name="head")(h))


def test_squeeze_and_excite_reshape_multiply_padding(tmp_path):
    model = _squeeze_excite()
    pruned = check(model, "conv", [3, 6], {"conv": filters([3, 6])}, tmp_path=tmp_path)
    assert pruned.get_layer("reshape").target_shape == (1, 1, 6)
    assert pruned.get_layer("expand").filters == 6  # Multiply took the same channels from the excitation
    np.testing.assert_array_equal(weights(pruned, "reduce")["kernel"],
                                  np.delete(weights(model, "reduce")["kernel"], [3, 6], axis=2))


def test_layer_normalization_against_numpy():
    x = keras.Input((5,), name="x")
    h = layers.Dense(6, name="dense")(x)
    h = layers.LayerNormalization(name="ln")(h)
    model = keras.Model(x, layers.Dense(2, name="out")(h))
    rng = np.random.default_rng(1)
    layer_named(model, "ln").set_weights([rng.normal(size=6), rng.normal(size=6)])
    pruned = ks.delete_channels(model, "dense", [2])
    data = rng.normal(size=(4, 5)).astype("float32")
    w, b = weights(model, "dense").values()
    gamma, beta = weights(model, "ln").values()
    h = np.delete(data @ w + b, 2, axis=1)
    norm = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True) + 1e-3)
    h = norm * np.delete(gamma, 2) + np.delete(beta, 2)
    wo, bo = weights(model, "out").values()
    np.testing.assert_allclose(run(pruned, data), h @ np.delete(wo, 2, axis=0) + bo, atol=1e-5)


@pytest.mark.parametrize("model_name,point,channels,edits", [
    ("nested_functional", "encoder/inner_dense", [2, 5], {"inner_dense": filters([2, 5])}),
    ("nested_sequential", "block/seq_dense", [2, 5], {"seq_dense": filters([2, 5]), "seq_bn": batchnorm([2, 5])}),
    ("deep_nested", "mid/leaf/leaf_dense", [2], {"leaf_dense": filters([2])}),
    ("siamese", "encoder/proj", [2], {"proj": filters([2])}),  # a nested model called twice: both calls
])
def test_nested_and_shared_models(model_name, point, channels, edits, tmp_path):
    model = ZOO[model_name]()
    randomize_batchnorms(model)
    check(model, point, channels, edits, tmp_path=tmp_path)


def test_channels_reaching_an_output_shrink_it():
    """Deleting a class: the softmax is over the logits left."""
    model = ZOO["mlp"]()
    data = sample_inputs(model)
    pruned = ks.delete_channels(model, "predictions", [1])
    assert tuple(pruned.output.shape) == (None, 2) and pruned.output_names == ["predictions"]
    logits = np.delete(run(ks.expose(model, ["predictions:pre"]), data)["predictions:pre"], 1, axis=1)
    np.testing.assert_allclose(run(pruned, data), np.exp(logits) / np.exp(logits).sum(1, keepdims=True), atol=1e-6)


def test_the_pass_is_pure_and_well_formed():
    graph = ks.to_graph(ZOO["cnn_bn"]())
    before = freeze(graph)
    result = delete_channels_pass(graph, "conv", [1])
    assert freeze(graph) == before
    ks.check_graph(result)
    assert result.nodes["dw"]["output_shapes"][0][-1] == 7
    assert result.graph["deleted_channels"] == {"conv": [1], "bn": [1], "relu": [1], "dw": [1]}
    assert plan_channels(graph, "conv", [1]).layers(graph)["sep"] == {"in": [1]}


def _shut(model, layer, column, gate_value):
    """A copy of `model` whose recurrent `layer` has gate `column` constant (bias `gate_value`, no inputs)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for variable in layer_named(copy, layer).weights:
        value = np.array(keras.ops.convert_to_numpy(variable))
        value[..., column] = gate_value if variable.name == "bias" else 0
        variable.assign(value)
    return copy


def test_lstm_units_with_states(tmp_path):
    """An LSTM unit whose output gate is shut (bias -1e9) outputs exactly 0: the deleted unit's reference."""
    model = ZOO["recurrent"]()  # lstm -> (sequence, h, c); cat([gmp(conv(sequence)), h, c])
    data = sample_inputs(model)
    pruned = ks.delete_channels(model, "lstm", [1])
    reference = run(_shut(model, "lstm", 3 * 4 + 1, -1e9), data)  # gates i, f, c, o; o of unit 1
    np.testing.assert_allclose(run(pruned, data), np.delete(reference, [4 + 1, 8 + 1], axis=1), atol=1e-5)
    assert pruned.get_layer("lstm").units == 3
    assert_roundtrip(pruned, data, tmp_path)


def test_gru_units_after_a_masked_lstm():
    """A GRU unit whose candidate is tanh(0) = 0 stays 0 from a zero state; the mask still applies."""
    model = ZOO["masked"]()
    data = sample_inputs(model)
    pruned = ks.delete_channels(model, "gru", [2])
    reference = _shut(model, "gru", 2 * 4 + 2, 0.0)  # gates z, r, h; the candidate of unit 2
    np.testing.assert_allclose(run(pruned, data), run(reference, data), atol=1e-5)
    pruned = ks.delete_channels(model, "lstm", [0, 4])  # through the BatchNormalization, to the GRU's rows
    reference = _shut(model, "lstm", [3 * 5 + 0, 3 * 5 + 4], -1e9)
    for variable in (layer_named(reference, "bn").gamma, layer_named(reference, "bn").beta):
        value = np.array(keras.ops.convert_to_numpy(variable))
        value[[0, 4]] = 0  # exactly 0 after the BatchNormalization too
        variable.assign(value)
    np.testing.assert_allclose(run(pruned, data), run(reference, data), atol=1e-5)
    assert pruned.get_layer("bn").moving_mean.shape == (3,) and pruned.get_layer("gru").cell.kernel.shape[0] == 3


def test_embedding_dimensions_through_a_masked_lstm():
    model = ZOO["masked"]()  # Embedding(mask_zero=True) -> LSTM -> BN -> GRU -> Dense
    pruned = check(model, "embed", [1, 4], {"embed": [("embeddings", 1, [1, 4])]})
    assert pruned.get_layer("embed").output_dim == 4 and pruned.get_layer("embed").mask_zero
    np.testing.assert_array_equal(weights(pruned, "lstm")["kernel"],
                                  np.delete(weights(model, "lstm")["kernel"], [1, 4], axis=0))



def test_channels_first():
    """Channels on axis 1: convolution, BatchNormalization(axis=1), pooling, Flatten(channels_first) -> Dense."""
    x = keras.Input((3, 8, 8), name="x")
    h = layers.Conv2D(5, 3, data_format="channels_first", activation="relu", name="conv")(x)
    h = layers.BatchNormalization(axis=1, name="bn")(h)
    h = layers.MaxPooling2D(data_format="channels_first", name="pool")(h)
    model = keras.Model(x, layers.Dense(2, name="out")(layers.Flatten(data_format="channels_first", name="flat")(h)))
    randomize_batchnorms(model)
    pruned = check(model, "conv", [1, 3], {"conv": filters([1, 3]), "bn": batchnorm([1, 3])})
    rows = [p * 5 + c for p in range(9) for c in (1, 3)]  # Flatten(channels_first) puts the channels last
    np.testing.assert_array_equal(weights(pruned, "out")["kernel"],
                                  np.delete(weights(model, "out")["kernel"], rows, axis=0))
