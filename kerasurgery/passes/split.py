"""`split_activations`: an independent copy with fused activations as separate layers.

Each selected call site ``K`` of a layer with a fused activation gets a linear
clone of the layer (same name and state) followed by a new node calling
``Activation(<activation>, name="<name>_activation")``; consumers of ``K``
read the activation. The layer's ``activity_regularizer`` moves to the
``Activation`` layer, so it still sees the activation's output and the copy
trains like the original. Output names are kept (see `kerasurgery.to_model`).
"""

from __future__ import annotations

from typing import Any

import keras
import networkx as nx

from kerasurgery.address.grammar import is_glob, parse
from kerasurgery.address.selector import Selector, items, select
from kerasurgery.errors import AddressError, TransformError
from kerasurgery.ir.clone import clone_op
from kerasurgery.ir.edits import add_call, new_key, redirect
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.names import Names
from kerasurgery.ir.resolve import Resolver
from kerasurgery.ir.schema import Ref, copy_graph
from kerasurgery.ir.to_keras import to_model
from kerasurgery.layers import kinds


def _split_targets(graph: nx.DiGraph, layers: Selector | None) -> list[str]:
    """Call-site keys whose layer's fused activation should be split.

    `layers` is a selector like every ``points`` argument: a layer's address
    (its output or its ``:pre``), a glob, a list of them or a predicate. A
    shared layer may be named without ``@call`` (its state is split at every
    call anyway).
    """
    fused = [k for k, d in graph.nodes(data=True) if kinds.fused_activation(d.get("op")) is not None]
    if layers is None:
        return fused
    resolver = Resolver(graph)

    def exact(text: str) -> str:
        try:
            resolver.resolve_one(text)
        except AddressError:
            address = parse(text)
            sites = resolver.call_sites(address.path, address.name)
            if len(sites) > 1 and address.call is None:  # a shared layer named as a whole
                return text
            raise
        return text

    chosen = select(resolver.points(), layers, what="layers", exact=exact, owner=f"model '{resolver.model_name}'")
    wanted = items(layers, "layers")
    named = set() if callable(wanted) else {w for w in wanted if not is_glob(w)}
    keys: list[str] = []
    for text in chosen:
        address = parse(text)
        sites = resolver.call_sites(address.path, address.name)
        nodes = sites if (len(sites) > 1 and address.call is None) else [resolver.resolve_one(text).node]
        for node in nodes:
            if node in fused:
                keys.append(node)
            elif text in named:
                d = graph.nodes[node]
                raise TransformError(
                    f"Expected a layer with a fused non-linear activation to split. Received: {text!r} "
                    f"({d.get('class_name')}, activation={d.get('activation') or 'linear'}), which has "
                    f"nothing to split. Layers that do: {fused[:8]}."
                )
    if not keys:
        raise TransformError(
            f"Expected `layers` to select layers with a fused non-linear activation. Received: "
            f"{layers!r}, which selects none. Layers that have one: {fused[:8]}."
        )
    # Splitting changes the layer object, so every call site of it goes along.
    ops = {id(graph.nodes[k]["op"]) for k in keys}
    targets = [k for k in fused if id(graph.nodes[k]["op"]) in ops]
    _check_quantization(graph, targets)
    return targets


def _check_quantization(graph: nx.DiGraph, keys: list[str]) -> None:
    """Refuse layers quantized with a mode whose quantized call may not end with the activation."""
    for key in keys:
        mode = getattr(graph.nodes[key]["op"], "quantization_mode", None)
        if mode is not None and mode not in kinds.SEPARABLE_QUANTIZATION_MODES:
            raise TransformError(
                f"Expected layers unquantized or quantized with a mode whose quantized call ends with "
                f"the activation ({', '.join(kinds.SEPARABLE_QUANTIZATION_MODES)}). Received: {key!r}, "
                f"quantized with mode {mode!r}. Leave it out of `layers`."
            )


def _activation_for(op: Any, names: Names) -> keras.layers.Layer:
    """The ``Activation`` layer that takes over `op`'s activation (and activity regularizer)."""
    return keras.layers.Activation(
        op.activation,
        name=names.make(f"{op.name}_activation"),
        dtype=kinds.float_policy(op),
        activity_regularizer=getattr(op, "activity_regularizer", None),
    )


def split_activations_pass(
    graph: nx.DiGraph, layers: Selector | None = None, *, copy: bool = True
) -> nx.DiGraph:
    """Graph pass of `split_activations`.

    Each selected call site ``K`` of a layer with a fused activation gets a
    linear clone of the layer (same name and state, no activity regularizer)
    followed by a new node calling ``Activation(<activation>,
    name="<name>_activation")`` that carries the regularizer; consumers of
    ``K`` read the activation. With ``copy=True`` every other operation is
    replaced by an independent clone too.
    """
    targets = _split_targets(graph, layers)
    g = copy_graph(graph)
    names = Names(g)
    clones: dict[int, tuple[Any, bool]] = {}
    acts: dict[int, Any] = {}
    target_ops = {id(g.nodes[k]["op"]) for k in targets}
    for key in list(g.nodes):
        data = g.nodes[key]
        op = data["op"]
        if data.get("kind") == "input":
            continue
        if id(op) not in clones and (copy or id(op) in target_ops):
            changes = {"activation": "linear", "activity_regularizer": None} if id(op) in target_ops else None
            clones[id(op)] = clone_op(op, changes)
        if id(op) in clones:
            data["op"], pending = clones[id(op)]
            if pending:
                data["state_from"] = op
            if id(op) in target_ops:
                data["activation"] = None
    for key in targets:
        data = g.nodes[key]
        source_op = graph.nodes[key]["op"]
        if id(source_op) not in acts:
            acts[id(source_op)] = _activation_for(source_op, names)
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
    is followed by an ``Activation`` layer named ``<name>_activation`` (which
    also takes over the layer's ``activity_regularizer``). Works inside nested
    Sequential and Functional models (which are inlined). The copy's outputs,
    output names and training losses equal the original's; every layer's
    state is copied (adapted preprocessing layers included); the original is
    not changed.

    Args:
        model: a Functional or Sequential model.
        layers: which layers to split: a selector like ``points`` (a layer's
            address, its ``:pre``, a glob, a list of them or a predicate).
            Naming a layer with nothing to split raises.

    Returns:
        A new functional `keras.Model` that shares no variable with `model`.

    Raises:
        AddressError: `layers` names no layer.
        TransformError: a named layer has no fused non-linear activation.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> split = ks.split_activations(model)
        >>> [layer.name for layer in split.layers], split.output_names
        (['x', 'd', 'd_activation'], ['d'])
    """
    graph = split_activations_pass(graph_for(model, layers), layers, copy=True)
    return to_model(graph, name=model.name)
