"""`fold_batchnorm`: BatchNormalization folded into the convolution or Dense before it.

In inference a BatchNormalization computes ``gamma * (y - mean) / sqrt(var +
eps) + beta = s * y + t`` per channel. When ``y = conv(x, W) + b`` feeds
nothing but that BatchNormalization, ``s * y + t = conv(x, s * W) + (s * b +
t)``: the layer takes the scaled kernel and a new bias and the
BatchNormalization goes. `fold_plan` says which BatchNormalizations fold and
why the others stay; `fold_batchnorm_pass` folds them.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import keras
import networkx as nx
import numpy as np

from kerasurgery.ir.clone import clone_op, gc_paused, rebuild
from kerasurgery.ir.edits import input_feed, redirect
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.schema import Ref, copy_graph, output_refs
from kerasurgery.ir.to_keras import to_model
from kerasurgery.layers import kinds
from kerasurgery.passes import channel_rules as rules

#: Layers a BatchNormalization folds into.
FOLDABLE = rules.DENSE + rules.CONV + rules.CONV_TRANSPOSE + rules.SEPARABLE + rules.DEPTHWISE


@dataclasses.dataclass
class FoldPlan:
    """Which BatchNormalizations `fold_batchnorm` folds, and why the others stay.

    Attributes:
        folded: ``{batchnorm node: layer node it folds into}``.
        kept: ``{batchnorm node: reason it stays}``.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((8, 8, 3), name="x")
        >>> h = keras.layers.Conv2D(4, 3, name="conv")(x)
        >>> h = keras.layers.BatchNormalization(name="bn")(h)
        >>> h = keras.layers.BatchNormalization(name="bn_2")(keras.layers.ReLU(name="relu")(h))
        >>> plan = ks.fold_plan(keras.Model(x, h))
        >>> plan.folded, plan.kept
        ({'bn': 'conv'}, {'bn_2': "it follows 'relu' (ReLU), not a convolution or Dense"})
    """

    folded: dict
    kept: dict


def _why_not(graph: nx.DiGraph, key: str, outputs: set, calls: dict) -> tuple[str | None, str]:
    """``(producer, "")`` when BatchNormalization `key` folds, else ``(None, reason)``."""
    data = graph.nodes[key]
    bn = data["op"]
    if data.get("kwargs", {}).get("training") is True:
        return None, "it is called with training=True (batch statistics)"
    try:
        parent, index, _ = input_feed(graph, key)
    except Exception:  # noqa: BLE001 - no single tensor input
        return None, "its input is not a single tensor"
    pdata = graph.nodes[parent]
    op = pdata.get("op")
    name = f"'{parent}' ({pdata.get('class_name')})"
    if pdata.get("kind") == "input" or not isinstance(op, FOLDABLE):
        return None, f"it follows {name}, not a convolution or Dense"
    if getattr(op, "quantization_mode", None) is not None:
        return None, f"{name} is quantized"
    if getattr(op, "lora_enabled", False):
        return None, f"{name} has LoRA weights (merge them first)"
    fused = kinds.fused_activation(op)
    if fused is not None:
        return None, f"{name} applies activation '{kinds.activation_name(fused)}' before it"
    consumers = [(c, s) for c in graph.successors(parent) for i, s in graph.edges[parent, c]["feeds"] if i == index]
    if len(consumers) > 1 or Ref(parent, index) in outputs:
        return None, f"the output of {name} is also used elsewhere"
    if calls[id(op)] > 1:
        return None, f"{name} is a shared layer (called {calls[id(op)]} times)"
    rank = len(rules.shape_of(graph, (parent, index)))
    if isinstance(bn.axis, (list, tuple)) or bn.axis % rank != rules.channel_axis(op, rank):
        return None, f"it normalizes axis {bn.axis}, not the channel axis of {name}"
    return parent, ""


def fold_plan(model_or_graph: Any) -> FoldPlan:
    """Which BatchNormalizations `fold_batchnorm` folds, and why the others stay (nothing changes).

    A BatchNormalization folds when its input is the output of a Dense or a
    convolution (Conv1D/2D/3D, transposed, separable, depthwise) that nothing
    else reads, that is called once, has no activation (``linear``), is not
    quantized, and whose channel axis the BatchNormalization normalizes; and
    when it is not called with ``training=True``.

    Args:
        model_or_graph: a model or a graph from `kerasurgery.to_graph`.

    Returns:
        A `FoldPlan` (node addresses).

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> h = keras.layers.Dense(3, activation="relu", name="dense")(x)
        >>> ks.fold_plan(keras.Model(x, keras.layers.BatchNormalization(name="bn")(h))).kept
        {'bn': "'dense' (Dense) applies activation 'relu' before it"}
    """
    graph = graph_for(model_or_graph)
    outputs = set(output_refs(graph))
    calls: dict[int, int] = {}
    for _, data in graph.nodes(data=True):
        if data.get("kind") != "input":
            calls[id(data["op"])] = calls.get(id(data["op"]), 0) + 1
    folded, kept = {}, {}
    for key, data in graph.nodes(data=True):
        if data.get("kind") == "input" or not isinstance(data["op"], keras.layers.BatchNormalization):
            continue
        producer, reason = _why_not(graph, key, outputs, calls)
        if producer is None:
            kept[key] = reason
        else:
            folded[key] = producer
    return FoldPlan(folded, kept)


def _scale_shift(bn: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(s, t)`` with ``bn(y) = s * y + t`` in inference, in float64."""
    as64 = lambda v: np.asarray(keras.ops.convert_to_numpy(v), np.float64)  # noqa: E731
    mean, var = as64(bn.moving_mean), as64(bn.moving_variance)
    gamma = as64(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = as64(bn.beta) if bn.center else np.zeros_like(mean)
    s = gamma / np.sqrt(var + bn.epsilon)
    return s, beta - s * mean


def folded_layer(op: Any, bn: Any, in_shape: tuple) -> Any:
    """A copy of `op` (Dense or convolution, no activation) that computes ``bn(op(x))`` in inference."""
    s, t = _scale_shift(bn)
    weights = {v.name: np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in op.weights}
    bias = weights.get("bias", np.zeros_like(s)) if op.use_bias else np.zeros_like(s)
    if isinstance(op, rules.SEPARABLE):
        weights["pointwise_kernel"] = weights["pointwise_kernel"] * s
    elif isinstance(op, rules.DEPTHWISE):
        kernel = weights["kernel"]
        weights["kernel"] = kernel * s.reshape(kernel.shape[-2], kernel.shape[-1])
    elif isinstance(op, rules.CONV_TRANSPOSE):
        weights["kernel"] = weights["kernel"] * s[:, None]
    else:
        weights["kernel"] = weights["kernel"] * s
    weights["bias"] = s * bias + t
    dtype = op.variable_dtype
    ordered = [weights[v.name] for v in op.weights if v.name != "bias"] + [weights["bias"]]
    return rebuild(op, {"use_bias": True}, in_shape, [w.astype(dtype) for w in ordered])


def fold_batchnorm_pass(graph: nx.DiGraph, *, copy: bool = True) -> nx.DiGraph:
    """Graph pass of `fold_batchnorm`: returns the folded graph.

    The graph attribute ``"fold"`` of the result holds the `FoldPlan`. With
    ``copy=True`` every other operation is replaced by an independent copy.
    """
    with gc_paused():
        return _fold(graph, copy)


def _fold(graph: nx.DiGraph, copy: bool) -> nx.DiGraph:
    plan = fold_plan(graph)
    g = copy_graph(graph)
    made: dict[int, tuple] = {}
    for bn_key, key in plan.folded.items():
        op = graph.nodes[key]["op"]
        parent, index, _ = input_feed(graph, key)
        in_shape = rules.shape_of(graph, (parent, index))
        made[id(op)] = (folded_layer(op, graph.nodes[bn_key]["op"], in_shape), False)
    for bn_key, key in plan.folded.items():
        redirect(g, Ref(bn_key, 0), Ref(key, 0))
        g.remove_node(bn_key)
    for key in list(g.nodes):
        data = g.nodes[key]
        if data.get("kind") == "input":
            continue
        op = data["op"]
        if id(op) not in made and copy:
            made[id(op)] = clone_op(op)
        if id(op) in made:
            data["op"], pending = made[id(op)]
            if pending:
                data["state_from"] = op
    g.graph["fold"] = plan
    return g


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """An independent copy of `model` with BatchNormalizations folded into the layers before them.

    Every BatchNormalization that directly follows a Dense or a convolution
    (Conv1D/2D/3D, transposed, separable, depthwise) whose output nothing else
    reads is folded into that layer's kernel and bias (a bias is added where
    the layer had none), and removed. Inference outputs equal the original's
    (float rounding aside). The others stay; a warning lists them with the
    reason (an activation on the layer before, another consumer, a shared
    layer, ...); `fold_plan` gives the same answer as data. The folded model
    is for inference and export: in training it no longer normalizes with
    batch statistics. The original model is not changed.

    Args:
        model: a Functional or Sequential model.

    Returns:
        A new functional `keras.Model` that shares no variable with `model`.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((8, 8, 3), name="x")
        >>> h = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(x))
        >>> model = keras.Model(x, h)
        >>> folded = ks.fold_batchnorm(model)
        >>> [layer.name for layer in folded.layers]
        ['x', 'conv']
        >>> data = np.random.default_rng(0).normal(size=(2, 8, 8, 3))
        >>> bool(np.allclose(folded(data), model(data), atol=1e-5))
        True
    """
    graph = fold_batchnorm_pass(graph_for(model))
    plan = graph.graph["fold"]
    if plan.kept:
        listed = "; ".join(f"'{k}': {r}" for k, r in list(plan.kept.items())[:8])
        more = f" (and {len(plan.kept) - 8} more)" if len(plan.kept) > 8 else ""
        warnings.warn(f"fold_batchnorm folded {len(plan.folded)} BatchNormalization layer(s) and left "
                      f"{len(plan.kept)}: {listed}{more}. See kerasurgery.fold_plan(model).", stacklevel=2)
    return to_model(graph, name=model.name)
