"""Making the value of any point available as a tensor of the graph.

A plain output is already a tensor. ``:pre`` of a layer with a fused
activation is not: `PointValues` splits that call site into a `PreActivation`
(sharing the layer's variables) followed by an ``Activation``, so the value
before the activation becomes an output of its own while the call site's key
still names the layer's output. ``:scores`` of an attention call becomes
output 1 of an `AttentionScores` call. Every pass that reads points
(`expose`, `insert_taps`, ...) goes through `tensor_of`.
"""

from __future__ import annotations

from typing import Any

import keras
import networkx as nx

from kerasurgery.address.grammar import parse
from kerasurgery.ir.edits import add_call, input_feed, new_key
from kerasurgery.ir.names import Names
from kerasurgery.ir.resolve import Point
from kerasurgery.ir.schema import Ref, Slot, output_refs
from kerasurgery.layers import AttentionScores, PreActivation, kinds


class PointValues:
    """Splits fused-activation call sites into PreActivation -> Activation.

    Splitting one call site of a layer splits every call site of that layer
    object (and ``:scores`` wraps every call of an attention layer), so the
    layer sits inside the wrapper only: a model that called it both directly
    and through a wrapper would not load back from `.keras`.

    The PreActivation wrapper holds the original layer (shared variables); the
    call site's key then names the Activation node, so downstream edges and
    addresses stay valid. The Activation also applies the layer's
    ``activity_regularizer`` (the wrapper calls the layer without it), so the
    regularization loss is still computed on the activation's output. One
    wrapper and one Activation layer per layer object, reused across that
    layer's call sites.
    """

    def __init__(self, graph: nx.DiGraph, names: Names):
        self.graph = graph
        self.names = names
        self.done: dict[str, str] = {}  # call-site key -> pre node key
        self.ops: dict[int, tuple[Any, Any]] = {}

    def pre_ref(self, key: str) -> Ref:
        """The value before the activation of call site `key` (splitting every call of its layer)."""
        if key not in self.done:
            for site in self._sites(self.graph.nodes[key]["op"]):
                self.done[site] = self._split(site)
        return Ref(self.done[key], 0)

    def enable_scores(self, key: str) -> None:
        """Make call site `key`, and every other call of its layer, go through `AttentionScores`.

        Each call then returns ``(output, scores)``; output 0 is unchanged.
        """
        op = self.graph.nodes[key]["op"]
        if isinstance(op, AttentionScores):
            return
        for site in self._sites(op):
            self._wrap_scores(site)

    def _sites(self, op: Any) -> list[str]:
        """Every call site of the layer object `op`.

        A layer object must sit in one place of a model: if one call went
        through a wrapper and another called the layer directly, `.keras`
        saving would visit the layer once (under either name) and loading
        could not find its variables under the other.
        """
        return [k for k, d in self.graph.nodes(data=True) if d.get("op") is op]

    def _wrap_scores(self, key: str) -> None:
        data = self.graph.nodes[key]
        op = data["op"]
        if id(op) not in self.ops:
            self.ops[id(op)] = (AttentionScores(op, name=self.names.make(f"{op.name}_scores")), None)
        kwargs = {k: v for k, v in data.get("kwargs", {}).items() if k != "return_attention_scores"}
        data.update(
            op=self.ops[id(op)][0], class_name="AttentionScores", kwargs=kwargs,
            output_shapes=list(data.get("output_shapes", [None]))[:1] + [None],
            output_dtypes=list(data.get("output_dtypes", [None]))[:1] + [None],
        )

    def _split(self, key: str) -> str:
        g = self.graph
        data = g.nodes[key]
        op = data["op"]
        if id(op) not in self.ops:
            wrapper = PreActivation(op, name=self.names.make(f"{op.name}_pre"))
            act = keras.layers.Activation(
                op.activation,
                name=self.names.make(f"{op.name}_activation"),
                dtype=kinds.float_policy(op),
                activity_regularizer=getattr(op, "activity_regularizer", None),
            )
            self.ops[id(op)] = (wrapper, act)
        wrapper, act = self.ops[id(op)]
        parent, index, _ = input_feed(g, key)
        path = tuple(data.get("path", ()))
        pre_key = new_key(g, path, wrapper.name, parse(key).call)
        add_call(
            g, pre_key, wrapper, [(parent, index, "0")], path=path, call=data.get("call", 0),
            output_shapes=data.get("output_shapes"), output_dtypes=data.get("output_dtypes"),
            order=data.get("order", 0) - 0.5,
        )
        g.remove_edges_from(list(g.in_edges(key)))
        g.add_edge(pre_key, key, feeds=[(0, "0")])
        g.nodes[key].update(
            op=act, kind="layer", class_name="Activation", args=(Slot("0"),), kwargs={}, activation=None
        )
        return pre_key


def tensor_of(graph: nx.DiGraph, point: Point, splitter: PointValues) -> Ref:
    """The output holding the value of `point`, editing the graph if needed."""
    data = graph.nodes[point.node]
    if point.port is None:
        return Ref(point.node, point.index)
    if point.port == "pre":
        if kinds.is_activation_layer(data["op"]):
            parent, index, _ = input_feed(graph, point.node)
            return Ref(parent, index)
        return splitter.pre_ref(point.node)
    # scores
    if not data.get("kwargs", {}).get("return_attention_scores", False):
        splitter.enable_scores(point.node)
    return Ref(point.node, 1)


def output_names(graph: nx.DiGraph) -> dict[str, Ref]:
    """The model's own outputs under their output names."""
    outputs = graph.graph["outputs"]
    if isinstance(outputs, dict):
        return dict(outputs)
    refs = output_refs(graph)
    names = list(graph.graph.get("output_names") or [])
    if len(names) != len(refs):
        names = [r.node for r in refs]
    return dict(zip(names, refs))
