"""delete_channels refuses what it cannot do: one clear error each, and nothing changed.

Each case checks the error type and that the message names what matters (the
layer, the way the channels took, what to do), and that neither the model
nor its graph changed.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from test_purity import freeze
from zoo import ZOO, assert_unchanged, snapshot

import kerasurgery as ks
from kerasurgery.passes.channels import delete_channels_pass

pytestmark = pytest.mark.backend


def refused(model, point, channels, error, match):
    before = snapshot(model)
    graph = ks.to_graph(model)
    frozen = freeze(graph)
    with pytest.raises(error, match=match):
        ks.delete_channels(model, point, channels)
    with pytest.raises(error, match=match):
        delete_channels_pass(graph, point, channels)
    assert freeze(graph) == frozen
    assert_unchanged(model, before)


@pytest.mark.parametrize("point,channels,error,match", [
    ("dense_3", [0], ks.AddressError, r"Received: 'dense_3'.*Closest valid addresses: 'dense_2', 'dense_1'"),
    ("dense_1", [16], ks.TransformError, r"channels of 'dense_1' between 0 and 15\. Received: 16"),
    ("dense_1", [-1], ks.TransformError, r"between 0 and 15\. Received: -1"),
    ("dense_1", range(16), ks.TransformError, r"keep at least one of the 16 channels of 'dense_1'"),
    ("dense_1", [], ks.TransformError, r"at least one channel"),
    ("dense_1", [True], ks.TransformError, r"as integers\. Received: True"),
    ("dense_1", ["3"], ks.TransformError, r"as integers\. Received: '3'"),
    ("dense_1:pre", [0], ks.TransformError, r"a ':pre' port\. Use 'dense_1'"),
    (["dense_1"], [0], ks.TransformError, r"one address \(a string\)"),
    ("x", [0], ks.TransformError, r"Received: channels of 'x', where it is a model input"),
])
def test_bad_points_and_channels(point, channels, error, match):
    refused(ZOO["mlp"](), point, channels, error, match)


def test_an_add_whose_other_branch_is_a_model_input():
    x = keras.Input((4,), name="x")
    h = layers.Dense(4, activation="relu", name="dense")(x)
    model = keras.Model(x, layers.Dense(2, name="out")(layers.Add(name="add")([h, x])))
    refused(model, "dense", [1], ks.TransformError,
            r"reach 'x' \('dense' -> 'add' -> 'x'\), where it is a model input")


def test_an_add_whose_other_branch_cannot_lose_channels():
    """The other branch comes from a Softmax over the channels: its channels cannot go."""
    x = keras.Input((4,), name="x")
    a = layers.Dense(3, name="a")(x)
    b = layers.Softmax(name="softmax")(layers.Dense(3, name="b")(x))
    model = keras.Model(x, layers.Dense(2, name="out")(layers.Add(name="add")([a, b])))
    refused(model, "a", [1], ks.TransformError,
            r"reach 'softmax' \('a' -> 'add' -> 'softmax'\), where 'softmax' \(Softmax\) normalizes over the "
            r"channel axis")


def test_a_raw_mean_over_the_channels():
    refused(ZOO["raw_ops"](), "dense", [1], ks.TransformError,
            r"reach 'mean' \('dense' -> 'mean'\), where delete_channels has no rule for 'mean' \(Mean\)")


def test_a_shared_layer_whose_inputs_lose_channels_at_one_call_only():
    refused(ZOO["shared"](), "shared@0", [1], ks.TransformError,
            r"shared layer 'shared' to lose the same channels at every call\. Received: 'shared@0': inputs "
            r"none.*'shared@1': inputs \{'0': \(1,\)\}")


def test_layers_without_a_rule():
    refused(ZOO["attention"](), "embed", [0], ks.TransformError,
            r"reach 'mha' \('embed' -> 'mha'\), where delete_channels has no rule for 'mha' "
            r"\(MultiHeadAttention\)\. To fix:")


def test_a_reshape_that_mixes_the_channel_axis():
    x = keras.Input((4, 4, 2), name="x")
    h = layers.Conv2D(3, 1, name="conv")(x)
    model = keras.Model(x, layers.Dense(2, name="out")(layers.Reshape((4, 12), name="reshape")(h)))
    refused(model, "conv", [0], ks.TransformError, r"'reshape' \(Reshape\) reshapes \(4, 4, 3\) to \(4, 12\)")


def test_a_grouped_convolution():
    x = keras.Input((6, 6, 4), name="x")
    h = layers.Conv2D(4, 1, name="conv")(x)
    model = keras.Model(x, layers.Conv2D(4, 3, groups=2, name="grouped")(h))
    refused(model, "conv", [0], ks.TransformError, r"'grouped' \(Conv2D\) is a grouped convolution \(groups=2\)")


def test_a_quantized_layer():
    model = ZOO["mlp"]()
    model.get_layer("dense_2").quantize("int8")
    refused(model, "dense_1", [0], ks.TransformError, r"'dense_2' \(Dense\) is quantized \(int8\)")


def test_every_channel_of_a_tensor_through_an_add():
    x = keras.Input((4,), name="x")
    a = layers.Dense(2, name="a")(x)
    b = layers.Dense(2, name="b")(x)
    c = layers.Dense(3, name="c")(x)
    h = layers.Concatenate(name="cat")([layers.Add(name="add")([a, b]), c])
    model = keras.Model(x, layers.Dense(1, name="out")(h))
    with pytest.raises(ks.TransformError, match=r"keep at least one of the 2 channels of 'a'"):
        ks.delete_channels(model, "a", [0, 1])
    np.testing.assert_equal(ks.delete_channels(model, "a", [0]).get_layer("b").units, 1)
