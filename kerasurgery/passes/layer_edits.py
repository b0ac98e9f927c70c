"""Editing layers: `insert_layer`, `replace_layer`, `delete_layer`.

Each is a pure graph pass plus a model-level function that opens layers on
demand exactly as `expose` does (an address inside a closed block opens it;
``:scores`` opens that attention layer, so its weights feed the value
product). A new value must have the shape and dtype its consumers were built
on (the graph's recorded shapes), and the result must build: otherwise a
`TransformError` names the consumers. Every other layer of the result is the
model's own layer object, so weights stay shared with `model`.
"""

from __future__ import annotations

from typing import Any

import keras
import networkx as nx

from kerasurgery.address.grammar import is_glob, node_key, point_address
from kerasurgery.errors import AddressError, TransformError
from kerasurgery.ir.edits import add_call, new_key
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.names import Names
from kerasurgery.ir.resolve import Point, Resolver
from kerasurgery.ir.schema import Ref, copy_graph, fill
from kerasurgery.layers import kinds
from kerasurgery.passes.point_values import PointValues
from kerasurgery.passes.rewiring import (build, call_site, call_specs, check_fits, move_consumers, rename_node,
                                         scores_to_open, spec_of, symbolic, tensor_slots, value_ref)


def _one_point(graph: nx.DiGraph, point: Any) -> tuple[str, Point]:
    if not isinstance(point, str) or is_glob(point):
        raise AddressError(
            f"Expected one address (a string, no glob). Received: point={point!r}.", address=point,
        )
    return point, Resolver(graph).resolve_one(point)


def insert_layer_pass(graph: nx.DiGraph, point: str, layer: keras.layers.Layer) -> nx.DiGraph:
    """Graph pass of `insert_layer`: `layer` is called on the value at `point`, and its consumers read the result.

    Changes: a new node calling `layer` (named after it, made unique), fed
    by the point's value; every consumer of that value (edges, model
    outputs, aliases) reads the new node instead. At ``:pre`` of an
    activation layer only that layer's input moves; ``:pre`` of a fused
    layer splits it as `expose` does.

    Raises:
        AddressError: `point` is not one address of the graph.
        TransformError: `layer` cannot be called on the value, returns
            several tensors, or returns another shape or dtype; ``:scores``
            of a closed attention layer.
    """
    address, target = _one_point(graph, point)
    g = copy_graph(graph)
    names = Names(g)
    ref = value_ref(g, address, target, PointValues(g, names))
    shape, dtype = spec_of(g, ref)
    outputs = call_specs(layer, (symbolic(shape, dtype),), {}, f"the value at {address!r} ({shape}, {dtype})")
    if len(outputs) != 1:
        raise TransformError(
            f"Expected a layer returning one tensor to insert at {address!r}. Received: '{layer.name}', which "
            f"returns {len(outputs)}."
        )
    out = outputs[0]
    check_fits(g, address, target, ref, tuple(out.shape), out.dtype, f"the output of '{layer.name}'",
               "Insert a layer that returns the shape and dtype it receives.")
    path = tuple(g.nodes[ref.node].get("path", ()))
    name = names.make(layer.name)  # its own name, made unique where another node has it
    key = new_key(g, path, name)
    add_call(g, key, layer, [], path=path, output_shapes=[tuple(out.shape)], output_dtypes=[str(out.dtype)],
             order=g.nodes[ref.node].get("order", 0) + 0.25)
    g.nodes[key]["name"] = name
    move_consumers(g, target, ref, Ref(key, 0))
    g.add_edge(ref.node, key, feeds=[(ref.index, "0")])
    return g


def replace_layer_pass(graph: nx.DiGraph, point: str, layer: keras.layers.Layer) -> nx.DiGraph:
    """Graph pass of `replace_layer`: the call at `point` is made with `layer`, on the same arguments.

    Only that call site changes (``shared@1``: the other calls of the shared
    layer keep it). The node takes `layer`'s name (made unique where another
    node has it), so its address follows the new layer.

    Raises:
        AddressError: `point` is not the address of a call.
        TransformError: `layer` cannot be called on the arguments, or returns
            another number, shape or dtype of tensors.
    """
    key = call_site(graph, point, "replace")
    g = copy_graph(graph)
    data = g.nodes[key]
    if data.get("kind") == "input":
        raise TransformError(f"Expected a layer call to replace. Received: {point!r}, a model input.")
    values = {slot: symbolic(*spec_of(g, Ref(parent, index)))
              for parent, _, edge in g.in_edges(key, data=True) for index, slot in edge["feeds"]}
    args, kwargs = fill(data.get("args", ()), values), fill(data.get("kwargs", {}), values)
    outputs = call_specs(layer, args, kwargs, f"the arguments of {point!r}")
    n = len(data.get("output_shapes") or [None])
    if len(outputs) != n:
        raise TransformError(
            f"Expected a layer returning {n} tensor(s), as {point!r} does. Received: '{layer.name}', which "
            f"returns {len(outputs)}."
        )
    for i, out in enumerate(outputs):
        at = key if n == 1 else point_address(key, i)
        check_fits(g, at, Point(key, i), Ref(key, i), tuple(out.shape), out.dtype, f"output {i} of '{layer.name}'",
                   "Replace it by a layer returning what it returned.")
    others = {n for k, d in g.nodes(data=True) if k != key for n in (d["op"].name, d.get("name"))}
    name = layer.name if layer.name not in others else Names(g).make(layer.name)
    fused = kinds.fused_activation(layer)
    data.update(op=layer, kind="layer" if isinstance(layer, keras.layers.Layer) else "op",
                class_name=type(layer).__name__, output_shapes=[tuple(o.shape) for o in outputs],
                output_dtypes=[str(o.dtype) for o in outputs],
                activation=kinds.activation_name(fused) if fused is not None else None)
    if name != data.get("name"):
        data.update(name=name, call=0)
        rename_node(g, key, node_key(tuple(data.get("path", ())), name, None))
    return g


def delete_layer_pass(graph: nx.DiGraph, point: str) -> nx.DiGraph:
    """Graph pass of `delete_layer`: the call at `point` is removed, its consumers read its input.

    Raises:
        AddressError: `point` is not the address of a call.
        TransformError: the call takes more than one tensor or returns more
            than one, or its output's shape or dtype differs from its input's.
    """
    key = call_site(graph, point, "delete")
    data = graph.nodes[key]
    slots = tensor_slots(data)
    n = len(data.get("output_shapes") or [None])
    if data.get("kind") == "input" or len(slots) != 1 or n != 1:
        what = "a model input" if data.get("kind") == "input" else (
            f"a {data.get('class_name')} call taking {len(slots)} tensor(s) and returning {n}")
        raise TransformError(
            f"Expected a layer call with one tensor input and one output to delete (its consumers then read "
            f"its input). Received: {point!r}, {what}. Use `replace_layer` to put another layer in its place."
        )
    g = copy_graph(graph)
    ((parent, index),) = [(p, i) for p, _, e in g.in_edges(key, data=True) for i, s in e["feeds"]]
    source = Ref(parent, index)
    shape, dtype = spec_of(g, source)
    check_fits(g, key, Point(key), Ref(key, 0), shape, dtype,
               f"the input of {key!r} (what its consumers read once it is deleted)",
               "Delete only layers that keep the shape and dtype (Dropout, ...), or use `replace_layer`.")
    move_consumers(g, Point(key), Ref(key, 0), source)
    g.remove_node(key)
    return g


def insert_layer(model: keras.Model, point: str, layer: keras.layers.Layer) -> keras.Model:
    """A model in which `layer` is called on the value at `point`, whose consumers read its output.

    `point` is any address: a layer output, ``:pre``, an address inside a
    nested model or inside a closed layer (opened on demand, as by
    `expose`), ``:scores`` (the attention layer is opened: its weights then
    feed the value product). An unbuilt `layer` is built on the value it
    receives. `layer` must return the shape and dtype of that value.

    Args:
        model: a Functional, Sequential or subclassed model.
        point: one address (see `points`).
        layer: a Keras layer taking one tensor.

    Returns:
        A new functional `keras.Model` sharing every variable with `model`
        (besides `layer`'s own).

    Raises:
        AddressError: an unknown address.
        TransformError: `layer` cannot take the value, or returns another
            shape or dtype (the message names the consumers).

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(keras.layers.Dense(3, name="h")(x)))
        >>> doubled = ks.insert_layer(model, "h", keras.layers.Rescaling(2.0, name="twice"))
        >>> [layer.name for layer in doubled.layers]
        ['x', 'h', 'twice', 'd']
    """
    graph = insert_layer_pass(graph_for(model, [point], open=scores_to_open([point])), point, layer)
    return build(graph, model.name, f"inserting '{getattr(layer, 'name', layer)}' at {point!r}")


def replace_layer(model: keras.Model, point: str, layer: keras.layers.Layer) -> keras.Model:
    """A model in which the call at `point` is made with `layer` instead, on the same arguments.

    At a shared layer's call site (``shared@1``) only that call changes. An
    unbuilt `layer` is built on the arguments it receives; it must return
    the shapes and dtypes the call returned.

    Args:
        model: a Functional, Sequential or subclassed model.
        point: the address of one call (``dense_1``, ``shared@1``,
            ``encoder/inner_dense``, ``block/ffn`` inside a closed layer).
        layer: the layer to call instead.

    Returns:
        A new functional `keras.Model` sharing every variable with `model`
        (besides `layer`'s own).

    Raises:
        AddressError: not the address of a call.
        TransformError: `layer` cannot take the arguments or returns other
            shapes or dtypes.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, activation="relu", name="d")(x))
        >>> linear = ks.replace_layer(model, "d", keras.layers.Dense(2, name="linear"))
        >>> [layer.name for layer in linear.layers]
        ['x', 'linear']
    """
    graph = replace_layer_pass(graph_for(model, [point]), point, layer)
    return build(graph, model.name, f"replacing {point!r} by '{getattr(layer, 'name', layer)}'")


def delete_layer(model: keras.Model, point: str) -> keras.Model:
    """A model without the call at `point`: its consumers read its (single tensor) input.

    Its input must have the shape and dtype of its output (a Dropout, an
    identity-shaped normalization, ...).

    Args:
        model: a Functional, Sequential or subclassed model.
        point: the address of one call (``dropout``, ``shared@1``, ...).

    Returns:
        A new functional `keras.Model` sharing every variable with `model`.

    Raises:
        AddressError: not the address of a call.
        TransformError: the call takes several tensors, returns several, or
            changes the shape or dtype (the message names the consumers).

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(keras.layers.Dropout(0.5, name="drop")(x)))
        >>> [layer.name for layer in ks.delete_layer(model, "drop").layers]
        ['x', 'd']
    """
    graph = delete_layer_pass(graph_for(model, [point]), point)
    return build(graph, model.name, f"deleting {point!r}")
