"""An independent value for every point of a model: what `expose` and `collect` are checked against.

`reference_points(model, data)` computes ``{address: array}`` for every address
a model has, without kerasurgery's resolver (`points`, `Resolver`) or any pass
(`expose`, `PreActivation`, `AttentionScores`):

- plain outputs: every operation called eagerly on its parents' values
  (`zoo.interpret` over ``to_graph(model)``); the interpreter's model outputs
  are first checked against Keras's own ``model(data)``, so a graph that
  recorded an argument in the wrong place cannot serve as its own reference;
- ``:pre`` of a layer with a fused activation: from the layer's own weights
  (``x @ kernel + bias``, ``einsum``, ``keras.ops.conv`` /
  ``depthwise_conv`` / ``separable_conv`` / ``conv_transpose`` plus the bias),
  on the input the layer was called with; other layer classes with an
  activation use a copy of the layer with a linear activation (built from its
  config, given its weights);
- ``:pre`` of an activation layer: its input;
- ``:scores``: the attention layer called with ``return_attention_scores=True``
  on the arguments of its call.

Addresses are spelled here from the graph's node keys (``key``, ``key[i]`` for
an operation with several outputs, ``key:pre``, ``key:scores``).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from zoo import interpret, to_numpy

#: Layers whose only job is a non-linearity: their ``:pre`` is their input.
ACTIVATION_LAYERS = (layers.Activation, layers.ReLU, layers.Softmax, layers.LeakyReLU, layers.ELU, layers.PReLU)
ATTENTION_LAYERS = (layers.MultiHeadAttention, layers.GroupQueryAttention)
CONVOLUTIONS = (layers.Conv1D, layers.Conv2D, layers.Conv3D)
DEPTHWISE = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
SEPARABLE = (layers.SeparableConv1D, layers.SeparableConv2D)
TRANSPOSED = (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
FUSED = (layers.Dense, layers.EinsumDense) + CONVOLUTIONS + DEPTHWISE + SEPARABLE + TRANSPOSED


def has_fused_activation(op) -> bool:
    """A layer of `FUSED` whose activation is not the identity."""
    fn = getattr(op, "activation", None)
    return isinstance(op, FUSED) and fn is not None and fn is not keras.activations.linear


def _plus_bias(op, value):
    if not getattr(op, "use_bias", True) or getattr(op, "bias", None) is None:
        return value
    bias = op.bias
    if getattr(op, "data_format", "channels_last") == "channels_first":
        bias = ops.reshape(bias, (-1,) + (1,) * (len(value.shape) - 2))
    return value + bias


def pre_activation(op, x):
    """The value of layer `op` on input `x` before its activation, from the layer's weights."""
    if isinstance(op, layers.Dense):
        return _plus_bias(op, ops.matmul(x, op.kernel))
    if isinstance(op, layers.EinsumDense):
        return _plus_bias(op, ops.einsum(op.equation, x, op.kernel))
    conv = {"strides": op.strides, "padding": op.padding, "data_format": op.data_format,
            "dilation_rate": op.dilation_rate} if isinstance(op, FUSED[2:]) else {}
    if isinstance(op, CONVOLUTIONS) and op.groups == 1 and op.padding != "causal":
        return _plus_bias(op, ops.conv(x, op.kernel, **conv))
    if isinstance(op, DEPTHWISE) and op.padding != "causal":
        return _plus_bias(op, ops.depthwise_conv(x, op.kernel, **conv))
    if isinstance(op, SEPARABLE) and op.padding != "causal":
        return _plus_bias(op, ops.separable_conv(x, op.depthwise_kernel, op.pointwise_kernel, **conv))
    if isinstance(op, TRANSPOSED):
        return _plus_bias(op, ops.conv_transpose(x, op.kernel, output_padding=op.output_padding, **conv))
    linear = type(op).from_config({**op.get_config(), "activation": "linear"})
    linear.build(tuple(x.shape))
    linear.set_weights(op.get_weights())
    return linear(x)


def _first_input(args, kwargs):
    return args[0] if args else kwargs["inputs"]


def _check_against_keras(model, graph, values, data) -> None:
    from kerasurgery.ir.schema import is_ref_leaf, map_structure

    produced = map_structure(lambda r: values[r.node][r.index], graph.graph["outputs"], leaf=is_ref_leaf)
    produced, expected = keras.tree.flatten(produced), keras.tree.flatten(model(data, training=False))
    assert len(produced) == len(expected)  # (Keras returns a one-output list as a tensor)
    for got, want in zip(produced, expected):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), atol=1e-5, rtol=1e-5,
                                   err_msg="the interpreter disagrees with the model itself")


def reference_points(model, data) -> dict[str, np.ndarray]:
    """``{address: array}`` for every point of `model` on `data` (see the module docstring)."""
    import kerasurgery as ks

    graph = ks.to_graph(model)
    values, calls = interpret(graph, data)
    _check_against_keras(model, graph, values, data)
    result = {}
    for key in graph.nodes:
        outs = values[key]
        if len(outs) == 1:
            result[key] = outs[0]
        else:
            result.update({f"{key}[{i}]": v for i, v in enumerate(outs)})
        if key not in calls:
            continue  # a model input
        op = graph.nodes[key]["op"]
        args, kwargs = calls[key]
        if has_fused_activation(op):
            result[f"{key}:pre"] = pre_activation(op, _first_input(args, kwargs))
        elif isinstance(op, ACTIVATION_LAYERS):
            result[f"{key}:pre"] = _first_input(args, kwargs)
        if isinstance(op, ATTENTION_LAYERS):
            result[f"{key}:scores"] = op(*args, **{**kwargs, "return_attention_scores": True})[1]
    result.update(_nested_outputs(model, graph, values, data))
    return {address: to_numpy(value) for address, value in result.items()}


def _nested_outputs(model, graph, values, data) -> dict:
    """The address of each nested model call (``encoder``, ``encoder@1``): its outputs.

    For nested models of `model` itself, Keras computes them (a model from
    `model`'s inputs to that call's outputs); deeper ones take the values of
    the nodes the graph names for them.
    """
    from kerasurgery import keras_internals as internals

    out = {}
    for alias, refs in graph.graph.get("aliases", {}).items():
        out.update({alias: values[refs[0].node][refs[0].index]} if len(refs) == 1 else
                   {f"{alias}[{i}]": values[r.node][r.index] for i, r in enumerate(refs)})
    fn = internals.graph_of(model)
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    for layer in nested:
        calls = [n for n in internals.inbound_nodes(layer) if n in internals.nodes_in_order(fn)]
        for k, node in enumerate(calls):
            alias = layer.name if len(calls) == 1 else f"{layer.name}@{k}"
            outputs = list(node.outputs)
            computed = keras.Model(fn.inputs, outputs)(data)
            computed = computed if isinstance(computed, (list, tuple)) else [computed]
            out.update({alias: computed[0]} if len(outputs) == 1 else
                       {f"{alias}[{i}]": v for i, v in enumerate(computed)})
    return out


def own_autodiff(fn, x):
    """d sum(fn(x)) / d x with the backend's own autodiff (the reference, written by hand)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(fn(x))
        return tape.gradient(total, x).numpy()
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: fn(v).sum())(x))
    import torch

    x = torch.tensor(x, requires_grad=True)
    fn(x).sum().backward()
    return x.grad.numpy()
