"""Pins every Keras internal kerasurgery reads (`kerasurgery.keras_internals`).

If a Keras release changes one of them, the test named after it fails here,
before any pass misbehaves. Each test checks the *behaviour* the library
relies on, not just that an attribute exists.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from zoo import mlp, multi_io, nested_sequential, shared

from kerasurgery import keras_internals as internals
from kerasurgery.layers.pre_activation import linear_view

pytestmark = pytest.mark.backend


def test_functional_class_is_what_keras_model_builds():
    model = mlp()
    assert type(model) is internals.functional_class()
    assert internals.is_functional(model) and internals.calls_like_functional(model)


def test_calls_like_functional_is_false_when_call_is_overridden():
    base = internals.functional_class()

    class Overrides(base):
        def call(self, *args, **kwargs):
            return super().call(*args, **kwargs)

    x = keras.Input((2,))
    model = Overrides(x, keras.layers.Dense(1)(x))
    assert internals.is_functional(model) and not internals.calls_like_functional(model)


def test_sequential_graph_exists_once_built():
    assert internals.sequential_graph(keras.Sequential([keras.layers.Dense(2)])) is None
    block = nested_sequential().get_layer("block")
    fn = internals.sequential_graph(block)
    assert internals.is_functional(fn) and internals.graph_of(block) is fn


def test_nodes_in_order_inputs_first_and_call_indices():
    model = shared()
    nodes = internals.nodes_in_order(model)
    assert nodes[0].is_input
    layer = model.get_layer("shared")
    calls = [n for n in nodes if n.operation is layer]
    assert [internals.call_index(layer, n) for n in calls] == [0, 1]
    assert internals.inbound_nodes(layer) == calls


def test_call_arguments_and_outputs_of_a_node():
    model = shared()
    node = internals.inbound_nodes(model.get_layer("shared"))[1]
    args, kwargs, tensors = internals.call_arguments(node)
    assert isinstance(kwargs, dict) and len(tensors) == 1 and args[0] is tensors[0]
    assert internals.producer(node.outputs[0]) is model.get_layer("shared")
    assert internals.producer(args[0]) is model.get_layer("shared")  # the first call's output


def test_flat_inputs_outputs_and_structures():
    model = multi_io()
    assert isinstance(internals.input_structure(model), dict)
    assert list(internals.input_structure(model)) == ["a", "b"]
    assert isinstance(internals.output_structure(model), dict)
    assert len(internals.flat_inputs(model)) == 2 and len(internals.flat_outputs(model)) == 2
    model = mlp()
    assert internals.input_structure(model) is model.input and internals.output_structure(model) is model.output


def test_parent_tensors_walk_a_keras_ops_function_back_to_its_placeholders():
    a, b = keras.KerasTensor((None, 3)), keras.KerasTensor((None, 3))
    out = keras.ops.sum(keras.ops.exp(a[:, 1:]), axis=1)
    assert internals.parent_tensors(a) == []  # made by hand: no history
    seen, stack = set(), [out]
    while stack:
        t = stack.pop()
        seen.add(id(t))
        stack.extend(internals.parent_tensors(t))
    assert id(a) in seen and id(b) not in seen


def test_names_unchanged_restores_the_automatic_name_counters():
    x = keras.KerasTensor((None, 3))
    first = internals.producer(keras.ops.exp(x)).name
    with internals.names_unchanged():
        inside = [internals.producer(keras.ops.exp(x)).name for _ in range(3)]
    after = internals.producer(keras.ops.exp(x)).name
    number = lambda name: int(name.rsplit("_", 1)[1]) if name[-1].isdigit() else 0  # noqa: E731
    assert number(inside[0]) == number(first) + 1 and number(after) == number(first) + 1


def test_context_arguments_name_training():
    assert "training" in internals.context_arguments(keras.layers.Dropout(0.1))
    assert "training" in internals.context_arguments(mlp())


def test_all_layers_recurses_into_nested_models():
    names = {layer.name for layer in internals.all_layers(nested_sequential())}
    assert {"block", "seq_dense", "seq_bn", "seq_out", "head"} <= names


def test_a_layer_call_can_run_on_a_shallow_copy_of_its_dict():
    """`PreActivation` runs ``call`` on a copy of the layer's ``__dict__`` with another activation."""
    dense = keras.layers.Dense(3, activation="relu")
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    dense(x)
    view = linear_view(dense)
    pre = keras.ops.convert_to_numpy(view.call(x))
    expected = x @ keras.ops.convert_to_numpy(dense.kernel) + keras.ops.convert_to_numpy(dense.bias)
    np.testing.assert_allclose(pre, expected, rtol=1e-5, atol=1e-6)
    assert dense.activation is keras.activations.relu and view.kernel is dense.kernel
