"""`delete_channels`: remove output channels of a layer and everything they reach.

Deleting channel ``c`` of a layer's output deletes it everywhere it goes
(`kerasurgery.passes.channel_rules` says where, layer by layer): through
BatchNormalization, activations, pooling, padding, Dropout, Reshape and
Flatten to the input weights of the next Dense or convolution; through a
depthwise convolution (whose own channels go too) onward; to the right
offsets of a Concatenate; and, at an Add (Subtract, Multiply, Average,
Maximum, Minimum), back to the other branches, whose producers lose the same
channels. The set of slots removed is that closure; `plan_channels` computes
it and checks it, `delete_channels_pass` rebuilds the layers it reaches with
sliced weights (`kerasurgery.passes.channel_weights`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict, deque
from typing import Any

import keras
import networkx as nx

from kerasurgery.address.grammar import parse
from kerasurgery.errors import AddressError, TransformError
from kerasurgery.ir.clone import clone_op, gc_paused
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.resolve import Resolver
from kerasurgery.ir.schema import copy_graph
from kerasurgery.ir.to_keras import to_model
from kerasurgery.passes import channel_rules as rules
from kerasurgery.passes.channel_weights import narrowed

Change = rules.Change


@dataclasses.dataclass
class ChannelPlan:
    """The channels `delete_channels` removes: ``{(node, output index): Change}``.

    Attributes:
        node: the node of the point.
        index: the output of the point.
        axis: the channel axis of the point (with the batch axis).
        removed: every tensor that loses channels, with the channels it loses.
    """

    node: str
    index: int
    axis: int
    removed: dict

    def layers(self, graph: nx.DiGraph) -> dict[str, dict[str, list[int]]]:
        """``{node: {"in": [...], "out": [...]}}`` for every node whose tensors lose channels."""
        found: dict[str, dict[str, list[int]]] = defaultdict(dict)
        for tensor, change in self.removed.items():
            found[tensor[0]]["out"] = sorted(change.channels)
            for child in graph.successors(tensor[0]):
                if any(i == tensor[1] for i, _ in graph.edges[tensor[0], child]["feeds"]):
                    found[child]["in"] = sorted(change.channels)
        return dict(found)


def resolve_point(graph: nx.DiGraph, point: Any) -> tuple[str, int]:
    """``(node, output index)`` of a point whose channels `delete_channels` may delete."""
    if not isinstance(point, str):
        raise TransformError(f"Expected `point` as one address (a string). Received: {point!r}.")
    resolver = Resolver(graph)
    try:
        resolved = resolver.resolve_one(point)
    except AddressError:
        address = parse(point)
        sites = resolver.call_sites(address.path, address.name)
        if address.port is not None or not sites or (address.call is not None and len(sites) > 1):
            raise
        if len(sites) == 1 and not isinstance(graph.nodes[sites[0]].get("op"), rules.RECURRENT):
            raise
        # a shared layer named as a whole (its weights serve every call), or a recurrent layer that
        # also returns its states (they all hold its units)
        return sites[0], address.index or 0
    if resolved.port is not None:
        raise TransformError(
            f"Expected the address of a layer's output. Received: {point!r}, a ':{resolved.port}' port. "
            f"Use {resolved.node!r}: its channels are those of ':{resolved.port}'."
        )
    return resolved.node, resolved.index


def _requested(channels: Any, size: int | None, point: str) -> frozenset:
    try:
        values = list(channels)
    except TypeError:
        values = [channels]
    chosen = set()
    for value in values:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TransformError(f"Expected `channels` as integers. Received: {value!r} in {channels!r}.")
        c = int(value.__index__())
        if size is not None and not 0 <= c < size:
            raise TransformError(
                f"Expected channels of {point!r} between 0 and {size - 1}. Received: {c}."
            )
        chosen.add(c)
    if not chosen:
        raise TransformError(f"Expected at least one channel to delete. Received: channels={channels!r}.")
    if size is not None and len(chosen) >= size:
        raise TransformError(
            f"Expected to keep at least one of the {size} channels of {point!r}. Received: all of them. "
            "Remove the layer instead."
        )
    return frozenset(chosen)


class _Closure:
    """Every slot tied to the deleted channels, with the way each was reached (for errors)."""

    def __init__(self, graph: nx.DiGraph):
        self.graph = graph
        self.removed: dict[tuple, Change] = {}
        self.came_from: dict[tuple, tuple] = {}
        self.queue: deque = deque()
        self.sites: dict[int, list[str]] = defaultdict(list)
        for key, data in graph.nodes(data=True):
            if data.get("kind") != "input":
                self.sites[id(data["op"])].append(key)

    def add(self, change: Change, source: tuple | None, via: str | None) -> None:
        tensor = change.tensor
        current = self.removed.get(tensor)
        if current is not None and current.axis != change.axis:
            self.fail(via or tensor[0], tensor, f"the channels reach '{tensor[0]}' on axes {current.axis} and "
                      f"{change.axis}", "")
        new = change.channels - (current.channels if current else frozenset())
        if not new:
            return
        size = rules.shape_of(self.graph, tensor)[change.axis]
        if size is not None and any(not 0 <= c < size for c in new):
            self.fail(via or tensor[0], tensor, f"channels {sorted(new)} do not exist on '{tensor[0]}'", "")
        self.removed[tensor] = Change(tensor, change.axis, (current.channels if current else frozenset()) | new)
        self.came_from.setdefault(tensor, (source, via))
        self.queue.append(Change(tensor, change.axis, frozenset(new)))

    def run(self) -> None:
        while self.queue:
            change = self.queue.popleft()
            node, index = change.tensor
            try:
                for implied in rules.implied(self.graph, node, change, forward=False):
                    self.add(implied, change.tensor, node)
            except rules.Blocked as blocked:
                self.fail(blocked.node, change.tensor, blocked.reason, blocked.fix)
            data = self.graph.nodes[node]
            if data.get("kind") != "input" and isinstance(data["op"], rules.FREE):
                for site in self.sites[id(data["op"])]:  # the same weights at every call
                    if site != node:
                        self.add(Change((site, index), change.axis, change.channels), change.tensor, node)
            for child in self.graph.successors(node):
                if not any(i == index for i, _ in self.graph.edges[node, child]["feeds"]):
                    continue
                try:
                    for implied in rules.implied(self.graph, child, change, forward=True):
                        self.add(implied, change.tensor, child)
                except rules.Blocked as blocked:
                    self.fail(blocked.node, change.tensor, blocked.reason, blocked.fix)

    def route(self, tensor: tuple, end: str) -> list[str]:
        """The nodes the channels went through from the point to `end`, via `tensor`."""
        steps, seen = [], set()
        while tensor is not None and tensor not in seen:
            seen.add(tensor)
            source, via = self.came_from.get(tensor, (None, None))
            steps.append((tensor[0], via))
            tensor = source
        names: list[str] = []
        for node, via in reversed(steps):
            for name in (via, node):
                if name is not None and (not names or names[-1] != name):
                    names.append(name)
        if not names or names[-1] != end:
            names.append(end)
        return names

    def fail(self, node: str, tensor: tuple, reason: str, fix: str) -> None:
        route = self.route(tensor, node)
        where = (f"they reach '{node}' ({' -> '.join(repr(n) for n in route)}), where" if len(route) > 1
                 else f"channels of '{node}', where")
        raise TransformError(
            f"Expected the deleted channels to be removable everywhere they reach. Received: {where} "
            f"{reason}." + (f" To fix: {fix}." if fix else "")
        )


def plan_channels(graph: nx.DiGraph, point: str, channels: Any) -> ChannelPlan:
    """The closure of deleting `channels` of `point`: every tensor that loses channels.

    Raises:
        AddressError: `point` names nothing.
        TransformError: bad channels; the channels reach a layer where they
            cannot be removed; they would also have to be removed from
            `point` beyond `channels`; a shared layer would lose channels
            at one call but not another; a tensor would lose all channels.
    """
    node, index = resolve_point(graph, point)
    shape = rules.shape_of(graph, (node, index))
    data = graph.nodes[node]
    axis = rules.channel_axis(data.get("op"), len(shape)) if data.get("kind") != "input" else len(shape) - 1
    if len(shape) < 2:
        raise TransformError(f"Expected a point with channels. Received: {point!r} of shape {shape}.")
    wanted = _requested(channels, shape[axis], point)
    closure = _Closure(graph)
    closure.add(Change((node, index), axis, wanted), None, None)
    closure.run()
    got = closure.removed[(node, index)].channels
    if got != wanted:
        extra = sorted(got - wanted)
        raise TransformError(
            f"Expected to delete exactly channels {sorted(wanted)} of {point!r}. Received: a choice that "
            f"also deletes its channels {extra} (tied to them through the layers they reach, e.g. the "
            f"groups of a depthwise convolution or the branches of an Add). Pass channels="
            f"{sorted(got)}, or other channels."
        )
    plan = ChannelPlan(node, index, axis, dict(closure.removed))
    _check_sizes(graph, plan)
    _check_shared(graph, plan)
    return plan


def _check_sizes(graph: nx.DiGraph, plan: ChannelPlan) -> None:
    for tensor, change in plan.removed.items():
        size = rules.shape_of(graph, tensor)[change.axis]
        if size is not None and len(change.channels) >= size:
            raise TransformError(
                f"Expected every tensor to keep at least one channel. Received: a choice that deletes all "
                f"{size} channels of '{tensor[0]}'. Delete fewer channels."
            )


def _signature(graph: nx.DiGraph, key: str, removed: dict) -> tuple:
    ins = tuple((slot, tuple(sorted(removed[t].channels))) for slot, t in rules.tensor_inputs(graph, key)
                if t in removed)
    outs = tuple((t[1], tuple(sorted(removed[t].channels))) for t in rules.outputs_of(graph, key) if t in removed)
    return ins, outs


def _check_shared(graph: nx.DiGraph, plan: ChannelPlan) -> None:
    """A layer with weights (or a Reshape) called several times must lose the same channels at every call."""
    touched = {t[0] for t in plan.removed} | {child for t in plan.removed for child in graph.successors(t[0])}
    by_op: dict[int, list[str]] = defaultdict(list)
    for key, data in graph.nodes(data=True):
        if data.get("kind") != "input":
            by_op[id(data["op"])].append(key)
    for key in sorted(touched):
        data = graph.nodes[key]
        if data.get("kind") == "input":
            continue
        op = data["op"]
        sites = by_op[id(op)]
        if len(sites) < 2 or not (op.weights or isinstance(op, keras.layers.Reshape)):
            continue
        signatures = {site: _signature(graph, site, plan.removed) for site in sites}
        if len(set(signatures.values())) > 1:
            listed = "; ".join(f"'{s}': inputs {dict(sig[0]) or 'none'}, outputs {dict(sig[1]) or 'none'}"
                               for s, sig in signatures.items())
            raise TransformError(
                f"Expected the shared layer '{op.name}' to lose the same channels at every call. Received: "
                f"{listed}. Its weights serve every call: delete channels that reach every call alike, or "
                "give each call its own layer."
            )


def delete_channels_pass(graph: nx.DiGraph, point: str, channels: Any, *, copy: bool = True) -> nx.DiGraph:
    """Graph pass of `delete_channels`.

    Every call site whose tensors lose channels calls a new layer with sliced
    weights (one per shared layer); output shapes are updated. With
    ``copy=True`` every other operation is replaced by an independent copy
    too (otherwise shared with `graph`).
    """
    plan = plan_channels(graph, point, channels)
    with gc_paused():
        return _rewrite(graph, plan, copy)


def _rewrite(graph: nx.DiGraph, plan: ChannelPlan, copy: bool) -> nx.DiGraph:
    g = copy_graph(graph)
    made: dict[int, Any] = {}
    touched = {t[0] for t in plan.removed}
    for tensor in plan.removed:
        touched.update(child for child in graph.successors(tensor[0])
                       if any(i == tensor[1] for i, _ in graph.edges[tensor[0], child]["feeds"]))
    for key in list(g.nodes):
        data = g.nodes[key]
        if data.get("kind") == "input":
            continue
        op = data["op"]
        if key in touched:
            if id(op) not in made:
                made[id(op)] = (_narrow(graph, key, plan), False)
        elif copy and id(op) not in made:
            made[id(op)] = clone_op(op)
        if id(op) in made:
            data["op"], pending = made[id(op)]
            if pending:
                data["state_from"] = op
    for tensor, change in plan.removed.items():
        shapes = list(g.nodes[tensor[0]]["output_shapes"])
        shape = list(shapes[tensor[1]])
        shape[change.axis] -= len(change.channels)
        shapes[tensor[1]] = tuple(shape)
        g.nodes[tensor[0]]["output_shapes"] = shapes
    g.graph["deleted_channels"] = {f"{t[0]}" if t[1] == 0 else f"{t[0]}[{t[1]}]": sorted(c.channels)
                                   for t, c in plan.removed.items()}
    return g


def _narrow(graph: nx.DiGraph, key: str, plan: ChannelPlan) -> Any:
    data = graph.nodes[key]
    op = data["op"]
    if data.get("kind") == "op":
        return op  # raw elementwise operations hold no state
    slot, tensor = rules._main_input(graph, key)
    in_shape = rules.shape_of(graph, tensor)
    ins = plan.removed.get(tensor)
    outs = plan.removed.get((key, 0))
    out_shape = rules.shape_of(graph, (key, 0))
    out_size = out_shape[outs.axis] if outs is not None else (out_shape[-1] if out_shape else None)
    return narrowed(op, in_shape, ins, outs, out_size)


def delete_channels(model: keras.Model, point: str, channels: Any) -> keras.Model:
    """An independent copy of `model` without output channels `channels` of `point`.

    The channels are removed everywhere they reach: BatchNormalization and
    LayerNormalization parameters, activations, pooling, padding, Dropout,
    Reshape (when the channel axis survives it), Flatten (the matching rows of
    the next Dense), depthwise convolutions (their own channels go too, and
    onward), Concatenate (at their offsets), and the input weights of the
    next Dense or convolution. At an Add (Subtract, Multiply, Average,
    Maximum, Minimum) the same channels of the other branches must go too:
    their producers lose them as well. Where channels reach a model output,
    that output has fewer channels. The original model is not changed; the
    copy shares no variable with it.

    Args:
        model: a Functional or Sequential model.
        point: the address of the layer output whose channels go (a Dense,
            convolution, transposed, separable or depthwise convolution, or
            any point whose channels can be traced back to such layers).
        channels: the channel indices to delete (on the channel axis:
            the last one, or axis 1 for ``channels_first`` layers).

    Returns:
        A new functional `keras.Model`.

    Raises:
        AddressError: `point` names nothing.
        TransformError: channels out of range, all channels, or channels that
            reach a layer where they cannot be removed (the message names it,
            the way there, and what to do).

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> h = keras.layers.Dense(5, activation="relu", name="hidden")(x)
        >>> model = keras.Model(x, keras.layers.Dense(2, name="out")(h))
        >>> pruned = ks.delete_channels(model, "hidden", [0, 3])
        >>> pruned.get_layer("hidden").units, tuple(pruned.get_layer("out").kernel.shape)
        (3, (3, 2))
    """
    graph = delete_channels_pass(graph_for(model, [point] if isinstance(point, str) else []), point, channels)
    return to_model(graph, name=model.name)
