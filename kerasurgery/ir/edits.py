"""Primitive graph edits that passes are built from.

- `new_key`: the key of a new call site.
- `add_call`: add a call-site node fed by existing outputs.
- `redirect`: move every consumer of one output (edges and model outputs) to
  another output.
- `input_feed`: where the main input of a node comes from.

New names come from `kerasurgery.ir.names`, copies of operations from
`kerasurgery.ir.clone`. Every function here edits the graph it is given;
passes call them on a `kerasurgery.ir.schema.copy_graph` copy.
"""

from __future__ import annotations

from typing import Any

import keras
import networkx as nx

from kerasurgery.address.grammar import node_key
from kerasurgery.errors import TransformError
from kerasurgery.ir.schema import Ref, Slot, is_ref_leaf, map_structure
from kerasurgery.layers import kinds


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
    nodes in `exclude` and to ``dst.node`` itself), model outputs, and the
    aliases (addresses of inlined or opened calls) that name it.
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
        leaf=is_ref_leaf,
    )
    aliases = graph.graph.get("aliases")
    if aliases:
        graph.graph["aliases"] = {k: [dst if r == src else r for r in refs] for k, refs in aliases.items()}
    scores = graph.graph.get("scores")
    if scores:
        graph.graph["scores"] = {k: dst if r == src else r for k, r in scores.items()}


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
