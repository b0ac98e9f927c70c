"""`insert_taps`: identity `Tap` layers at points, named after them, sharing weights."""

from __future__ import annotations

import keras
import networkx as nx

from kerasurgery.address.grammar import tap_name
from kerasurgery.address.selector import Selector
from kerasurgery.errors import TransformError
from kerasurgery.ir.edits import add_call, input_feed, new_key, redirect
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.names import Names
from kerasurgery.ir.resolve import Point, Resolver
from kerasurgery.ir.schema import Ref, copy_graph, output_refs
from kerasurgery.ir.to_keras import needed_nodes, to_model
from kerasurgery.layers import Tap, kinds
from kerasurgery.passes.point_values import PointValues, tensor_of


def insert_taps_pass(graph: nx.DiGraph, points: Selector) -> nx.DiGraph:
    """Graph pass of `insert_taps`: a `Tap` node after each point.

    Every consumer of the point's tensor (and any model output that is it) then
    reads the tap. ``:pre`` of an activation layer taps only the edge into
    that layer. Points that feed no output (``:scores``, an unused input, an
    unused branch of a nested model) are refused: their taps would be dropped.
    """
    selected = Resolver(graph).select(points, what="points")
    dead = _unused_points(graph, selected)
    if dead:
        raise TransformError(
            f"Expected points whose values feed the model's outputs. Received: {dead}, which feed no "
            "output (an unused model input, or a branch of a nested model that the outer model does not "
            "use), so taps there would be dropped. Leave them out, or read them with "
            "`kerasurgery.expose(model, [...])`."
        )
    g = copy_graph(graph)
    names = Names(g)
    splitter = PointValues(g, names)
    for address, point in selected.items():
        if point.port == "scores":
            raise TransformError(
                f"Expected points whose values feed the model's outputs. Received: {address!r}: "
                "attention scores feed nothing, so a tap there would be dropped. Use "
                "`kerasurgery.expose(model, [...':scores'])` instead."
            )
        ref = tensor_of(g, point, splitter)
        tap = Tap(name=names.make(tap_name(address)))
        tap_key = new_key(g, (), tap.name)
        order = g.nodes[ref.node].get("order", 0) + 0.25
        add_call(g, tap_key, tap, [], order=order)
        if point.port == "pre" and kinds.is_activation_layer(g.nodes[point.node]["op"]):
            _, _, slot = input_feed(g, point.node)
            _move_feed(g, ref, point.node, slot, tap_key)
        else:
            redirect(g, ref, Ref(tap_key, 0))
        g.add_edge(ref.node, tap_key, feeds=[(ref.index, "0")])
    return g


def _unused_points(graph: nx.DiGraph, selected: dict[str, Point]) -> list[str]:
    """Addresses among `selected` whose value reaches no model output (``:scores`` aside)."""
    live = needed_nodes(graph)
    used = {(ref.node, ref.index) for ref in output_refs(graph)}
    for parent, child, edge in graph.edges(data=True):
        if child in live:
            used.update((parent, index) for index, _ in edge["feeds"])
    return [
        address
        for address, p in selected.items()
        if (p.port == "pre" and p.node not in live) or (p.port is None and (p.node, p.index) not in used)
    ]


def _move_feed(g: nx.DiGraph, ref: Ref, child: str, slot: str, tap_key: str) -> None:
    feeds = g.edges[ref.node, child]["feeds"]
    kept = [f for f in feeds if f != (ref.index, slot)]
    if kept:
        g.edges[ref.node, child]["feeds"] = kept
    else:
        g.remove_edge(ref.node, child)
    g.add_edge(tap_key, child, feeds=[(0, slot)])


def insert_taps(model: keras.Model, points: Selector) -> keras.Model:
    """A model with identity `Tap` layers at the given points, sharing weights.

    Each tap is named after its point (``dense_1:pre`` -> ``dense_1_pre_tap``,
    see `kerasurgery.address.grammar.tap_name`) and becomes an addressable
    point of the new model. Outputs, output names and weights are unchanged.
    A tap at ``:pre`` of a layer with a fused activation splits that call:
    the new model calls ``<name>_pre`` (a `PreActivation` sharing the layer),
    the tap, then ``<name>_activation``. The other calls of a shared layer go
    through ``<name>_pre`` and ``<name>_activation`` too (without a tap), so
    the layer sits in one place and the model saves and loads.

    Args:
        model: a Functional or Sequential model.
        points: addresses or globs (see `points`); ``:scores`` and points
            that feed no output (an unused input) are refused.

    Returns:
        A new functional `keras.Model` sharing every variable with `model`.

    Raises:
        AddressError: an unknown address or a glob that matches nothing.
        TransformError: a point whose tap would feed no output.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> tapped = ks.insert_taps(model, ["d:pre"])
        >>> ks.points(tapped), tapped.output_names
        (['x', 'd_pre', 'd_pre_tap', 'd_activation:pre', 'd_activation'], ['d'])
    """
    graph = insert_taps_pass(graph_for(model, points), points)
    return to_model(graph, name=model.name)
