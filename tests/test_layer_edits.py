"""Editing layers: `insert_layer`, `replace_layer`, `delete_layer`.

Over the zoo (nested models, shared call sites, an opened custom layer): an
identity layer inserted anywhere, a layer replaced by a copy with the same
config and weights, and a Dropout deleted leave the outputs equal; edits
that change numbers equal a reference computed by hand (numpy, or the model
rebuilt by hand). Every result shares the model's variables (besides the new
layer's own), saves to `.keras` and loads back; the model is unchanged; the
passes leave their input graph unchanged. Bad input (an unknown address, a
deletion or insertion that changes a shape or dtype, a call with several
tensors) raises a clear error and changes nothing.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from test_opening import CausalBlock, PositionalAdd, functional_with_custom_layers
from test_purity import freeze
from zoo import ZOO, assert_roundtrip, assert_same_outputs, assert_unchanged, predict, sample_inputs, snapshot

import kerasurgery as ks
from kerasurgery.passes.layer_edits import delete_layer_pass, insert_layer_pass, replace_layer_pass

pytestmark = pytest.mark.backend


def own_weights_only(model, result, new_layer=None):
    """Every variable of `result` is one of `model`'s, besides `new_layer`'s own."""
    ours = {id(v) for v in model.weights}
    new = {id(v) for v in (new_layer.weights if new_layer is not None else [])}
    extra = [v.path for v in result.weights if id(v) not in ours and id(v) not in new]
    assert not extra, extra
    assert all(id(v) in {id(w) for w in result.weights} for v in (new_layer.weights if new_layer else []))


def copy_of(layer):
    """A new layer with `layer`'s config and weights."""
    clone = type(layer).from_config(layer.get_config())
    clone.build_from_config(layer.get_build_config())
    clone.set_weights(layer.get_weights())
    return clone


def inner_points(model):
    """A few points of each kind: the first ``:pre``, a middle output, the last point."""
    listed = [p for p in ks.points(model) if not p.endswith(":scores")]
    pre = [p for p in listed if p.endswith(":pre")][:1]
    return list(dict.fromkeys(pre + [listed[len(listed) // 2], listed[-1]]))


# ---------------------------------------------------------------------------
# insert_layer


@pytest.mark.parametrize("name", sorted(ZOO))
def test_an_identity_layer_inserted_anywhere_keeps_outputs(name, tmp_path):
    model = ZOO[name]()
    data = sample_inputs(model)
    before = snapshot(model)
    for point in inner_points(model):
        identity = layers.Identity(name="inserted")
        edited = ks.insert_layer(model, point, identity)
        assert "inserted" in [layer.name for layer in edited.layers], point
        assert_same_outputs(model, edited, data)
        own_weights_only(model, edited)
        assert edited.output_names == getattr(model, "output_names", edited.output_names)
    assert_roundtrip(edited, data, tmp_path)
    assert_unchanged(model, before)


@pytest.mark.parametrize("point", ["dense_1", "dense_1:pre", "dense_2:pre"])
def test_an_inserted_layer_changes_what_follows_as_numpy_says(point):
    """Rescaling(2) at a point: the output is numpy's forward pass with that value doubled."""
    model = ZOO["mlp"]()
    x = sample_inputs(model)
    edited = ks.insert_layer(model, point, layers.Rescaling(2.0, name="twice"))
    w = [model.get_layer(n).get_weights() for n in ("dense_1", "dense_2", "predictions")]
    h = x @ w[0][0] + w[0][1]
    h = 2 * h if point == "dense_1:pre" else h
    h = np.maximum(h, 0)
    h = 2 * h if point == "dense_1" else h
    h = h @ w[1][0] + w[1][1]
    h = np.tanh(2 * h if point == "dense_2:pre" else h)
    z = h @ w[2][0] + w[2][1]
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(predict(edited, x), expected / expected.sum(1, keepdims=True), atol=1e-5)


@pytest.mark.parametrize("name, point", [("nested_functional", "encoder/inner_dense:pre"),
                                         ("nested_sequential", "block/seq_bn"), ("deep_nested", "mid/leaf"),
                                         ("shared", "shared@1"), ("shared", "shared@0:pre"),
                                         ("siamese", "encoder/proj@1"), ("cnn_bn", "relu:pre"),
                                         ("attention", "mha:scores"), ("multi_io", "b")])
def test_insert_at_nested_shared_and_port_points(name, point, tmp_path):
    model = ZOO[name]()
    data = sample_inputs(model)
    before = snapshot(model)
    edited = ks.insert_layer(model, point, layers.Identity(name="inserted"))
    assert_same_outputs(model, edited, data)
    own_weights_only(model, edited)
    assert_roundtrip(edited, data, tmp_path)
    assert_unchanged(model, before)


def test_an_unbuilt_layer_is_built_on_the_value_it_receives():
    model = ZOO["mlp"]()
    dense = layers.Dense(16, name="extra")
    edited = ks.insert_layer(model, "dense_1", dense)
    assert dense.built and tuple(dense.kernel.shape) == (16, 16)
    own_weights_only(model, edited, dense)
    x = sample_inputs(model)
    w = [model.get_layer(n).get_weights() for n in ("dense_1", "dense_2", "predictions")]
    h = np.maximum(x @ w[0][0] + w[0][1], 0) @ dense.get_weights()[0] + dense.get_weights()[1]
    z = np.tanh(h @ w[1][0] + w[1][1]) @ w[2][0] + w[2][1]
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(predict(edited, x), e / e.sum(1, keepdims=True), atol=1e-5)


def test_insert_inside_an_opened_custom_layer(tmp_path):
    """Addresses inside a closed custom layer open it on demand, as expose does."""
    model = functional_with_custom_layers()
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    before = snapshot(model)
    for point in ["block/ffn:pre", "block/norm", "block/attention:scores"]:
        edited = ks.insert_layer(model, point, layers.Identity(name="inserted"))
        assert_same_outputs(model, edited, x)
        own_weights_only(model, edited)
    doubled = ks.insert_layer(model, "block/ffn", layers.Rescaling(2.0, name="twice"))
    block = model.get_layer("block")
    h = predict(ks.expose(model, ["block/norm"]), x)["block/norm"]
    ffn = predict(ks.expose(model, ["block/ffn"]), x)["block/ffn"]
    expected = h + 2 * ffn @ block.out.get_weights()[0] + block.out.get_weights()[1]
    np.testing.assert_allclose(predict(doubled, x), expected, atol=1e-5)
    with keras.saving.custom_object_scope({"PositionalAdd": PositionalAdd, "CausalBlock": CausalBlock}):
        assert_roundtrip(doubled, x, tmp_path)
    assert_unchanged(model, before)


# ---------------------------------------------------------------------------
# replace_layer


REPLACED = {"mlp": "dense_2", "cnn_bn": "sep", "branches": "b", "shared": "shared@1",
            "nested_functional": "encoder/inner_dense", "nested_sequential": "block/seq_bn",
            "deep_nested": "mid/leaf/leaf_dense", "siamese": "encoder/proj@0", "multi_io": "da",
            "raw_ops": "dense", "attention": "mha", "dropout": "bn", "sequential_built": "d1",
            "recurrent": "lstm", "sequential_input": "d2", "masked": "gru", "backbone": "ffn",
            "cross_attention": "cross"}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_a_layer_replaced_by_a_copy_keeps_outputs(name, tmp_path):
    model = ZOO[name]()
    data = sample_inputs(model)
    before = snapshot(model)
    graph = ks.to_graph(model)
    point = REPLACED[name]
    old = graph.nodes[point]["op"]  # every address here is a node key
    new = copy_of(old)
    edited = ks.replace_layer(model, point, new)
    assert new in edited.layers or any(getattr(layer, "layer", None) is new for layer in edited.layers)
    assert_same_outputs(model, edited, data)
    own_weights_only(model, edited, new)
    assert_roundtrip(edited, data, tmp_path)
    assert_unchanged(model, before)
    assert set(REPLACED) == set(ZOO)


def test_replacing_one_call_of_a_shared_layer_leaves_the_other():
    """shared@1 replaced by a Dense with doubled weights: h1 = relu(xW+b), y = h1 + relu(2(h1 W + b))."""
    model = ZOO["shared"]()
    x = sample_inputs(model)
    kernel, bias = model.get_layer("shared").get_weights()
    other = layers.Dense(5, activation="relu", name="other")
    other.build((None, 5))
    other.set_weights([2 * kernel, 2 * bias])
    edited = ks.replace_layer(model, "shared@1", other)
    h1 = np.maximum(x @ kernel + bias, 0)
    np.testing.assert_allclose(predict(edited, x), h1 + np.maximum(2 * (h1 @ kernel + bias), 0), atol=1e-5)
    assert {layer.name for layer in edited.layers} >= {"shared", "other"}
    assert "other" in ks.points(replace_layer_pass(ks.to_graph(model), "shared@1", other))


def test_replace_inside_an_opened_custom_layer(tmp_path):
    model = functional_with_custom_layers()
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    new = copy_of(model.get_layer("block").ffn)
    edited = ks.replace_layer(model, "block/ffn", new)
    assert_same_outputs(model, edited, x)
    own_weights_only(model, edited, new)
    with keras.saving.custom_object_scope({"PositionalAdd": PositionalAdd, "CausalBlock": CausalBlock}):
        assert_roundtrip(edited, x, tmp_path)


# ---------------------------------------------------------------------------
# delete_layer


@pytest.mark.parametrize("name, point", [("dropout", "drop"), ("nested_functional", "encoder/inner_drop"),
                                         ("sequential_input", "drop")])
def test_deleting_a_dropout_keeps_outputs(name, point, tmp_path):
    model = ZOO[name]()
    data = sample_inputs(model)
    before = snapshot(model)
    edited = ks.delete_layer(model, point)
    assert not [layer for layer in edited.layers if isinstance(layer, layers.Dropout)]
    assert_same_outputs(model, edited, data)
    own_weights_only(model, edited)
    assert_roundtrip(edited, data, tmp_path)
    assert_unchanged(model, before)


def test_deleting_batchnorm_equals_the_model_built_by_hand():
    model = ZOO["cnn_bn"]()
    x = sample_inputs(model)
    edited = ks.delete_layer(model, "bn")
    inputs = keras.Input((16, 16, 3))
    h = inputs
    for layer in model.layers[1:]:
        if layer.name != "bn":
            h = layer(h)
    np.testing.assert_allclose(predict(edited, x), predict(keras.Model(inputs, h), x), atol=1e-6)


def test_deleting_one_call_of_a_shared_layer():
    """shared@1 deleted: y = h1 + h1."""
    model = ZOO["shared"]()
    x = sample_inputs(model)
    kernel, bias = model.get_layer("shared").get_weights()
    h1 = np.maximum(x @ kernel + bias, 0)
    np.testing.assert_allclose(predict(ks.delete_layer(model, "shared@1"), x), 2 * h1, atol=1e-5)


# ---------------------------------------------------------------------------
# graphs and purity


def test_passes_leave_their_input_graph_unchanged():
    graph = ks.to_graph(ZOO["dropout"]())
    before = freeze(graph)
    results = [insert_layer_pass(graph, "dense:pre", layers.Identity(name="i")),
               replace_layer_pass(graph, "bn", copy_of(graph.nodes["bn"]["op"])),
               delete_layer_pass(graph, "drop")]
    assert freeze(graph) == before
    for result in results:
        ks.check_graph(result)
    assert "i" in ks.points(results[0]) and "drop" not in results[2]


def test_scores_of_a_closed_attention_layer_are_refused_on_a_graph():
    graph = ks.to_graph(ZOO["attention"]())
    with pytest.raises(ks.TransformError, match=r"open=\['mha'\]"):
        insert_layer_pass(graph, "mha:scores", layers.Identity())
    graph = ks.to_graph(ZOO["attention"](), open=["mha"])
    softmax = graph.graph["scores"]["mha"].node  # the opened layer's softmax: its scores
    opened = insert_layer_pass(graph, "mha:scores", layers.Identity(name="i"))
    assert list(opened.predecessors("mha/i")) == [softmax]
    assert list(opened.successors("mha/i")) == list(graph.successors(softmax))


# ---------------------------------------------------------------------------
# bad input: a clear error, nothing changed


def _refused(model, call, error, match):
    before = snapshot(model)
    with pytest.raises(error, match=match):
        call()
    assert_unchanged(model, before)


def test_an_unknown_point_is_refused_with_suggestions():
    model = ZOO["mlp"]()
    _refused(model, lambda: ks.insert_layer(model, "dense_3", layers.Identity()), ks.AddressError, "dense_1")
    _refused(model, lambda: ks.replace_layer(model, "dens_1", layers.Identity()), ks.AddressError, "dense_1")
    _refused(model, lambda: ks.delete_layer(model, "dropout"), ks.AddressError, "points")


def test_deleting_a_layer_that_changes_the_shape_is_refused():
    model = ZOO["mlp"]()
    _refused(model, lambda: ks.delete_layer(model, "dense_2"), ks.TransformError,
             r"\(None, 16\).*What reads 'dense_2' was built on \(None, 8\), float32: 'predictions' \(Dense\) cannot")
    cnn = ZOO["cnn_bn"]()
    _refused(cnn, lambda: ks.delete_layer(cnn, "pool"), ks.TransformError, r"'up' \(Conv2DTranspose\)")


def test_inserting_or_replacing_with_another_shape_or_dtype_is_refused():
    model = ZOO["mlp"]()
    _refused(model, lambda: ks.insert_layer(model, "dense_1", layers.Dense(4)), ks.TransformError,
             r"\(None, 4\).*'dense_2' \(Dense\)")
    _refused(model, lambda: ks.replace_layer(model, "dense_1", layers.Dense(7)), ks.TransformError,
             r"\(None, 7\).*'dense_2' \(Dense\)")
    _refused(model, lambda: ks.insert_layer(model, "predictions", layers.Identity(dtype="float16")),
             ks.TransformError, "float16.*the model output 'predictions'")
    _refused(model, lambda: ks.replace_layer(model, "dense_2", layers.Dense(8, dtype="float16")),
             ks.TransformError, r"float16.*'predictions' \(Dense\)")


def test_a_layer_that_cannot_take_the_value_is_refused():
    model = ZOO["mlp"]()
    _refused(model, lambda: ks.insert_layer(model, "dense_1", lambda x: 2 * x), ks.TransformError,
             "Expected a Keras layer")
    built = layers.Dense(3)
    built.build((None, 5))
    _refused(model, lambda: ks.insert_layer(model, "dense_1", built), ks.TransformError,
             r"accepts the value at 'dense_1' \(\(None, 16\), float32\)")


def test_calls_with_several_tensors_and_inlined_models_are_refused():
    branches, nested = ZOO["branches"](), ZOO["nested_functional"]()
    _refused(branches, lambda: ks.delete_layer(branches, "add"), ks.TransformError, "Add call taking 2 tensor")
    _refused(nested, lambda: ks.replace_layer(nested, "encoder", layers.Identity()), ks.TransformError,
             "inlined nested model")
    _refused(nested, lambda: ks.delete_layer(nested, "head:pre"), ks.AddressError, "'head'")


class FailsWhenBuilt(layers.Layer):
    """Accepts the value when the shapes are checked, fails when the model is built (its second call)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("cannot run twice")
        return super().__call__(*args, **kwargs)

    def call(self, x):
        return x


def test_a_model_that_cannot_be_built_is_refused():
    model = ZOO["mlp"]()
    _refused(model, lambda: ks.insert_layer(model, "dense_1", FailsWhenBuilt(name="fragile")), ks.TransformError,
             "(?s)inserting 'fragile'.*can build.*cannot run twice")


def test_at_pre_of_an_activation_layer_only_its_input_changes():
    """d feeds relu and add: Rescaling(2) at relu:pre gives relu(2d) + d, at d gives relu(2d) + 2d."""
    x = keras.Input((3,), name="x")
    d = layers.Dense(3, name="d")(x)
    model = keras.Model(x, layers.Add(name="add")([layers.ReLU(name="relu")(d), d]))
    data = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    h = data @ model.get_layer("d").get_weights()[0] + model.get_layer("d").get_weights()[1]
    for point, expected in [("relu:pre", np.maximum(2 * h, 0) + h), ("d", np.maximum(2 * h, 0) + 2 * h)]:
        edited = ks.insert_layer(model, point, layers.Rescaling(2.0, name="twice"))
        np.testing.assert_allclose(predict(edited, data), expected, atol=1e-5)
