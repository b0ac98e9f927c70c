"""Primitive graph edits that passes are built from.

- `Names`: the one authority that makes new operation names unique.
- `add_call`: add a call-site node fed by existing outputs.
- `redirect`: move every consumer of one output (edges and model outputs) to
  another output.
- `input_feed`: where the main input of a node comes from.
- `clone_op`: an independent copy of an operation, with equal weights.

Every function here edits the graph it is given; passes call them on a copy.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import networkx as nx

from kerasurgery.address import node_key
from kerasurgery.errors import TransformError
from kerasurgery.graph import Ref, Slot, map_structure

_ANY = object()


class Names:
    """Makes operation names unique among those already used in a graph.

    Example:
        >>> import networkx as nx
        >>> names = Names(nx.DiGraph())
        >>> names.make("dense_activation"), names.make("dense_activation")
        ('dense_activation', 'dense_activation_1')
    """

    def __init__(self, graph: nx.DiGraph):
        self.taken = {d["op"].name for _, d in graph.nodes(data=True) if "op" in d}
        self.taken |= {d.get("name") for _, d in graph.nodes(data=True) if d.get("name")}

    def make(self, base: str) -> str:
        base = base.replace("/", "_")
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def new_key(graph: nx.DiGraph, path: tuple, name: str, call: int | None = None) -> str:
    """A node key for a new call site, unique in `graph`."""
    key = node_key(tuple(path), name, call)
    if key in graph:
        raise TransformError(f"Expected a new node key. Received: {key!r}, which already exists.")
    return key


def add_call(
    graph: nx.DiGraph,
    key: str,
    op: Any,
    inputs: list[tuple[str, int, str]],
    *,
    args: tuple = (Slot("0"),),
    kwargs: dict | None = None,
    path: tuple = (),
    call: int = 0,
    output_shapes: list | None = None,
    output_dtypes: list | None = None,
    order: float | None = None,
) -> str:
    """Add a node calling `op`, fed by ``(parent, output_index, slot)`` triples."""
    from kerasurgery import kinds

    fused = kinds.fused_activation(op)
    graph.add_node(
        key,
        op=op,
        kind="layer" if isinstance(op, keras.layers.Layer) else "op",
        class_name=type(op).__name__,
        name=op.name,
        path=tuple(path),
        call=call,
        args=args,
        kwargs=dict(kwargs or {}),
        output_shapes=list(output_shapes or [None]),
        output_dtypes=list(output_dtypes or [None]),
        activation=kinds.activation_name(fused) if fused is not None else None,
        order=order if order is not None else graph.number_of_nodes(),
    )
    for parent, index, slot in inputs:
        if graph.has_edge(parent, key):
            graph.edges[parent, key]["feeds"] = graph.edges[parent, key]["feeds"] + [(index, slot)]
        else:
            graph.add_edge(parent, key, feeds=[(index, slot)])
    return key


def redirect(graph: nx.DiGraph, src: Ref, dst: Ref, *, exclude: tuple = ()) -> None:
    """Make every consumer of output `src` read output `dst` instead.

    Consumers are out-edges of ``src.node`` feeding ``src.index`` (except to
    nodes in `exclude` and to ``dst.node`` itself) and model outputs.
    """
    for child in list(graph.successors(src.node)):
        if child in exclude or child == dst.node:
            continue
        feeds = graph.edges[src.node, child]["feeds"]
        moved = [(i, s) for i, s in feeds if i == src.index]
        if not moved:
            continue
        kept = [(i, s) for i, s in feeds if i != src.index]
        if kept:
            graph.edges[src.node, child]["feeds"] = kept
        else:
            graph.remove_edge(src.node, child)
        add = [(dst.index, s) for _, s in moved]
        if graph.has_edge(dst.node, child):
            graph.edges[dst.node, child]["feeds"] = graph.edges[dst.node, child]["feeds"] + add
        else:
            graph.add_edge(dst.node, child, feeds=add)
    graph.graph["outputs"] = map_structure(
        lambda r: dst if r == src else r,
        graph.graph["outputs"],
        leaf=lambda o: isinstance(o, Ref) or not isinstance(o, (list, tuple, dict)),
    )


def input_feed(graph: nx.DiGraph, key: str) -> tuple[str, int, str]:
    """``(parent, output_index, slot)`` of the main input of node `key`.

    The main input is the first positional argument (slot ``"0"``), or the
    ``inputs`` keyword argument.
    """
    for wanted in ("0", "inputs"):
        for parent, _, edge in graph.in_edges(key, data=True):
            for index, slot in edge["feeds"]:
                if slot == wanted:
                    return parent, index, slot
    raise TransformError(
        f"Expected node {key!r} to take its input as a single tensor argument. "
        "Received: a call whose first argument is not a tensor."
    )


def clone_op(op: Any, graph: nx.DiGraph, config_changes: dict | None = None) -> Any:
    """An independent copy of `op` with equal weights.

    Layers are rebuilt from their config (with `config_changes` applied), built
    from their build config and given the original's weight values. A layer
    that cannot be built before its first call is listed in
    ``graph.graph["pending_weights"]``; `to_model` copies its weights once it
    is built. Raw ops hold no variables and are returned as they are.
    """
    if not isinstance(op, keras.layers.Layer):
        return op
    if isinstance(op, keras.Model) and not config_changes:
        clone = keras.models.clone_model(op)
        clone.set_weights(op.get_weights())
        return clone
    config = op.get_config()
    config.update(config_changes or {})
    clone = type(op).from_config(config)
    if op.built:
        build_config = op.get_build_config()
        if build_config:
            with _zero_initializers(clone):
                clone.build_from_config(build_config)
    if not clone.built and op.weights:
        graph.graph["pending_weights"] = [*graph.graph.get("pending_weights", []), (op, clone)]
    else:
        copy_weights(op, clone)
    return clone


@contextlib.contextmanager
def _zero_initializers(layer: Any):
    """Build with zeros initializers: the values are overwritten right after.

    Random initialisers are half the cost of copying a large model. Only the
    layer's own ``*_initializer`` attributes are swapped (its config reads
    them, so they are restored right after the build).
    """
    zeros = keras.initializers.Zeros()
    saved = {
        k: v for k, v in vars(layer).items()
        if k.endswith("_initializer") and isinstance(v, keras.initializers.Initializer)
    }
    for k in saved:
        object.__setattr__(layer, k, zeros)
    try:
        yield
    finally:
        for k, v in saved.items():
            object.__setattr__(layer, k, v)


def copy_weights(src: Any, dst: Any) -> None:
    """Assign the values of `src`'s weights to `dst`'s (same structure)."""
    if len(src.weights) != len(dst.weights):
        raise TransformError(
            f"Expected the copy of '{src.name}' to have {len(src.weights)} weights like the "
            f"original. Received: {len(dst.weights)}."
        )
    for s, d in zip(src.weights, dst.weights):
        # A copy, not the value itself: on JAX, `assign` would make both
        # variables hold one buffer, and the copy's jitted predict/fit (which
        # donate their state) would then delete the original's weights.
        d.assign(keras.ops.copy(s.value))
