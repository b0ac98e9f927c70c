"""Transforms: pure graph passes and their model-level wrappers.

Every transform is ``pass(graph, ...) -> new graph`` (the input graph is never
edited) plus a model-level function that is ``to_model(pass(to_graph(model)))``.

=====================  =====================================================
`expose`               a probe model whose outputs are the requested points
`split_activations`    an independent copy with fused activations separated
`insert_taps`          identity `Tap` layers at points, weights shared
`probe_pair`           (training, checking) models sharing every variable
=====================  =====================================================
"""

from __future__ import annotations

import fnmatch
from typing import Any

import keras
import networkx as nx

from kerasurgery import kinds
from kerasurgery.address import Point, Resolver, Selector, close_matches, parse, tap_name
from kerasurgery.edit import Names, add_call, clone_op, input_feed, new_key, redirect
from kerasurgery.errors import AddressError, TransformError
from kerasurgery.graph import Ref, Slot, output_refs, to_graph, to_model
from kerasurgery.graph import _needed as needed_nodes
from kerasurgery.layers import AttentionScores, PreActivation, Tap

# ---------------------------------------------------------------------------
# shared building blocks


class _PreSplitter:
    """Splits fused-activation call sites into PreActivation -> Activation.

    The PreActivation wrapper holds the original layer (shared variables); the
    call site's key then names the Activation node, so downstream edges and
    addresses stay valid. One wrapper and one Activation layer per layer
    object, reused across that layer's call sites.
    """

    def __init__(self, graph: nx.DiGraph, names: Names):
        self.graph = graph
        self.names = names
        self.done: dict[str, str] = {}  # call-site key -> pre node key
        self.ops: dict[int, tuple[Any, Any]] = {}

    def pre_ref(self, key: str) -> Ref:
        if key not in self.done:
            self.done[key] = self._split(key)
        return Ref(self.done[key], 0)

    def enable_scores(self, key: str) -> None:
        """Make call site `key` return (output, scores) through `AttentionScores`."""
        data = self.graph.nodes[key]
        op = data["op"]
        if isinstance(op, AttentionScores):
            return
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
                op.activation, name=self.names.make(f"{op.name}_activation"), dtype=op.dtype_policy
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


def _tensor_of(graph: nx.DiGraph, point: Point, splitter: _PreSplitter) -> Ref:
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


def _output_names(graph: nx.DiGraph) -> dict[str, Ref]:
    """The model's own outputs under their output names."""
    outputs = graph.graph["outputs"]
    if isinstance(outputs, dict):
        return dict(outputs)
    refs = output_refs(graph)
    names = list(graph.graph.get("output_names") or [])
    if len(names) != len(refs):
        names = [r.node for r in refs]
    return dict(zip(names, refs))


# ---------------------------------------------------------------------------
# expose


def expose_pass(graph: nx.DiGraph, points: Selector, *, keep_outputs: bool = False) -> nx.DiGraph:
    """Graph pass of `expose`: outputs become ``{address: Ref}`` for `points`.

    Changes: ``:pre`` of fused layers splits that call site into a
    `PreActivation` (sharing the layer) and an `Activation`; ``:scores`` sets
    ``return_attention_scores=True`` on that call; outputs are replaced.
    """
    selected = Resolver(graph).select(points, what="points")
    g = graph.copy()
    splitter = _PreSplitter(g, Names(g))
    outputs: dict[str, Ref] = _output_names(g) if keep_outputs else {}
    own = dict(outputs)
    for address, point in selected.items():
        ref = _tensor_of(g, point, splitter)
        if address in own and own[address] != ref:
            raise TransformError(
                f"Expected exposed addresses to differ from the model's output names. Received: "
                f"{address!r}, which is both; call expose without keep_outputs or rename the output."
            )
        outputs[address] = ref
    g.graph["outputs"] = outputs
    g.graph["output_names"] = list(outputs)
    return g


def expose(model: keras.Model, points: Selector, *, keep_outputs: bool = False) -> keras.Model:
    """A probe model whose outputs are the given points, sharing `model`'s weights.

    The probe takes the same inputs as `model` and returns a dict
    ``{address: tensor}`` keyed by the addresses as given (globs expand to the
    matching addresses). It calls the original layer objects, so it shares
    every variable: training `model` moves the probe. ``:pre`` of a fused layer
    is computed from that layer's own variables, and the layer's output is
    then the activation of that value (nothing is computed twice). Only the
    part of the graph the points need is computed.

    Args:
        model: a Functional or Sequential model.
        points: an address, glob, list of them, or a predicate over addresses
            (see `points`).
        keep_outputs: also return the model's own outputs, under their output
            names.

    Returns:
        A functional `keras.Model` with dict outputs.

    Raises:
        AddressError: an unknown address, an empty selection, a glob that
            matches nothing, or a port the node does not have.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> y = keras.layers.Dense(3, activation="softmax", name="head")(x)
        >>> model = keras.Model(x, y)
        >>> probe = ks.expose(model, ["head:pre"])
        >>> logits = probe.predict(np.ones((2, 4)), verbose=0)["head:pre"]
        >>> logits.shape
        (2, 3)
    """
    graph = expose_pass(to_graph(model), points, keep_outputs=keep_outputs)
    return to_model(graph, name=f"{model.name}_probe")


# ---------------------------------------------------------------------------
# split_activations


def _split_targets(graph: nx.DiGraph, layers: Selector | None) -> list[str]:
    """Call-site keys whose layer's fused activation should be split."""
    fused = [k for k, d in graph.nodes(data=True) if kinds.fused_activation(d.get("op")) is not None]
    if layers is None:
        return fused
    if callable(layers) and not isinstance(layers, str):
        items: list = [k for k in fused if layers(k)]
        if not items:
            raise TransformError(
                f"Expected the predicate given as `layers` to accept a layer with a fused activation. "
                f"Received: {layers!r}, which accepted none of {fused[:8]}."
            )
    elif isinstance(layers, str):
        items = [layers]
    else:
        try:
            items = list(layers)
        except TypeError:
            raise AddressError(
                f"Expected `layers` as a name, an address, a glob, a list of them or a predicate. "
                f"Received: {layers!r} of type {type(layers).__name__}."
            ) from None
    if not items:
        raise AddressError("Expected at least one layer in `layers`. Received: an empty list.")
    chosen: list[str] = []
    all_keys = list(graph.nodes)
    for item in items:
        matched = _match_layer(graph, item)
        if not matched:
            raise AddressError(
                f"Expected `layers` to name layers of model '{graph.graph.get('name')}' "
                f"(a name, an address or a glob). Received: {item!r}, which matches none.",
                address=item,
                suggestions=close_matches(str(item), fused or all_keys),
            )
        bad = [k for k in matched if k not in fused]
        if bad and not is_pattern(item):
            d = graph.nodes[bad[0]]
            raise TransformError(
                f"Expected a layer with a fused non-linear activation to split. Received: {item!r} "
                f"({d.get('class_name')}, activation={d.get('activation') or 'linear'}), which has "
                f"nothing to split. Layers that do: {close_matches(str(item), fused) or fused[:5]}."
            )
        chosen.extend(k for k in matched if k in fused and k not in chosen)
    if not chosen:
        raise TransformError(
            f"Expected `layers` to select layers with a fused non-linear activation. Received: "
            f"{layers!r}, which selects none. Layers that have one: {fused[:8]}."
        )
    # Splitting changes the layer object, so every call site of it goes along.
    ops = {id(graph.nodes[k]["op"]) for k in chosen}
    return [k for k in fused if id(graph.nodes[k]["op"]) in ops]


def is_pattern(text: Any) -> bool:
    return isinstance(text, str) and any(c in text for c in "*?[")


def _match_layer(graph: nx.DiGraph, item: Any) -> list[str]:
    if not isinstance(item, str):
        raise AddressError(
            f"Expected layer names, addresses or globs in `layers`. Received: {item!r} "
            f"of type {type(item).__name__}.",
            address=item,
        )
    out = []
    for key, data in graph.nodes(data=True):
        if data.get("kind") == "input":
            continue
        plain = "/".join((*data.get("path", ()), data.get("name", key)))
        candidates = {key, plain}
        if any(c == item or fnmatch.fnmatchcase(c, item) for c in candidates):
            out.append(key)
    return out


def split_activations_pass(
    graph: nx.DiGraph, layers: Selector | None = None, *, copy: bool = True
) -> nx.DiGraph:
    """Graph pass of `split_activations`.

    Each selected call site ``K`` of a layer with a fused activation gets a
    linear clone of the layer (same name and weights) followed by a new node
    calling ``Activation(<activation>, name="<name>_activation")``; consumers of
    ``K`` read the activation. With ``copy=True`` every other operation is
    replaced by an independent clone too.
    """
    targets = _split_targets(graph, layers)
    g = graph.copy()
    names = Names(g)
    clones: dict[int, Any] = {}
    acts: dict[int, Any] = {}
    target_ops = {id(g.nodes[k]["op"]) for k in targets}
    for key in list(g.nodes):
        op = g.nodes[key]["op"]
        if g.nodes[key].get("kind") == "input":
            continue
        if id(op) not in clones and (copy or id(op) in target_ops):
            changes = {"activation": "linear"} if id(op) in target_ops else None
            clones[id(op)] = clone_op(op, g, changes)
        if id(op) in clones:
            g.nodes[key]["op"] = clones[id(op)]
            if id(op) in target_ops:
                g.nodes[key]["activation"] = None
    for key in targets:
        data = g.nodes[key]
        source_op = graph.nodes[key]["op"]
        if id(source_op) not in acts:
            acts[id(source_op)] = keras.layers.Activation(
                source_op.activation,
                name=names.make(f"{source_op.name}_activation"),
                dtype=source_op.dtype_policy,
            )
        act = acts[id(source_op)]
        path = tuple(data.get("path", ()))
        act_key = new_key(g, path, act.name, parse(key).call)
        add_call(
            g, act_key, act, [], path=path, call=data.get("call", 0),
            output_shapes=data.get("output_shapes"), output_dtypes=data.get("output_dtypes"),
            order=data.get("order", 0) + 0.5,
        )
        redirect(g, Ref(key, 0), Ref(act_key, 0))
        g.add_edge(key, act_key, feeds=[(0, "0")])
    return g


def split_activations(model: keras.Model, layers: Selector | None = None) -> keras.Model:
    """An independent copy of `model` with fused activations as separate layers.

    Each selected layer (every layer with a fused non-linear activation when
    `layers` is None) keeps its name and weights with a linear activation, and
    is followed by an ``Activation`` layer named ``<name>_activation``. Works
    inside nested Sequential and Functional models (which are inlined). The
    copy's outputs equal the original's; the original is not changed.

    Args:
        model: a Functional or Sequential model.
        layers: names, addresses or globs of layers to split. Naming a layer
            with nothing to split raises.

    Returns:
        A new functional `keras.Model` that shares no variable with `model`.

    Raises:
        AddressError: `layers` names no layer.
        TransformError: a named layer has no fused non-linear activation.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> [layer.name for layer in ks.split_activations(model).layers]
        ['x', 'd', 'd_activation']
    """
    graph = split_activations_pass(to_graph(model), layers, copy=True)
    return to_model(graph, name=model.name)


# ---------------------------------------------------------------------------
# insert_taps


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
    g = graph.copy()
    names = Names(g)
    splitter = _PreSplitter(g, names)
    for address, point in selected.items():
        if point.port == "scores":
            raise TransformError(
                f"Expected points whose values feed the model's outputs. Received: {address!r}: "
                "attention scores feed nothing, so a tap there would be dropped. Use "
                "`kerasurgery.expose(model, [...':scores'])` instead."
            )
        ref = _tensor_of(g, point, splitter)
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
    see `tap_name`) and becomes an addressable point of the new model. Outputs
    are unchanged.

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
        >>> ks.points(ks.insert_taps(model, ["d:pre"]))
        ['x', 'd_pre', 'd_pre_tap', 'd']
    """
    graph = insert_taps_pass(to_graph(model), points)
    return to_model(graph, name=model.name)


# ---------------------------------------------------------------------------
# probe_pair


def copy_pass(graph: nx.DiGraph) -> nx.DiGraph:
    """Every operation replaced by an independent clone with equal weights."""
    g = graph.copy()
    clones: dict[int, Any] = {}
    for key in list(g.nodes):
        data = g.nodes[key]
        if data.get("kind") == "input":
            continue
        op = data["op"]
        if id(op) not in clones:
            clones[id(op)] = clone_op(op, g)
        data["op"] = clones[id(op)]
    return g


def probe_pair(model: keras.Model, points: Selector, *, copy: bool = False) -> tuple[keras.Model, keras.Model]:
    """A training model and a checking model that share every variable.

    ``training`` has the original outputs; ``checking`` returns the points as a
    dict (like `expose`). One ``fit`` step on ``training`` moves ``checking``.
    With ``copy=False`` both also share variables with `model`; with
    ``copy=True`` both are detached from it.

    Args:
        model: a Functional or Sequential model.
        points: addresses or globs for the checking model.
        copy: detach both models from `model`.

    Returns:
        ``(training, checking)``.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> training, checking = ks.probe_pair(model, ["d:pre"], copy=True)
        >>> training.get_layer("d").kernel is checking.get_layer("d_pre").layer.kernel
        True
    """
    graph = to_graph(model)
    Resolver(graph).select(points, what="points")  # fail early, before copying
    if copy:
        graph = copy_pass(graph)
    training = to_model(graph, name=model.name)
    checking = to_model(expose_pass(graph, points), name=f"{model.name}_probe")
    return training, checking


__all__ = [
    "copy_pass",
    "expose",
    "expose_pass",
    "insert_taps",
    "insert_taps_pass",
    "probe_pair",
    "split_activations",
    "split_activations_pass",
    "tap_name",
]
