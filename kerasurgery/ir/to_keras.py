"""Building a Keras model from the IR (`to_model`).

Every operation held in the graph is called again on fresh `keras.Input`
tensors, in topological order, so weights are shared with the model the graph
came from. A node with ``state_from`` (a copy that could not be built before
its first call) gets that layer's state once it is built.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from typing import Any

import keras
import networkx as nx

from kerasurgery import keras_internals as internals
from kerasurgery.errors import GraphError
from kerasurgery.ir.check import check_graph
from kerasurgery.ir.clone import copy_state
from kerasurgery.ir.schema import fill, input_keys, is_ref_leaf, map_structure, output_refs, topological_order
from kerasurgery.address.grammar import node_key
from kerasurgery.layers.named_outputs import OutputNamedModel
from kerasurgery.layers.traced import NamedCall, Unsaveable


def needed_nodes(graph: nx.DiGraph) -> set:
    """Nodes the outputs depend on (one reverse traversal)."""
    seen: set = set()
    stack = [ref.node for ref in output_refs(graph)]
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        stack.extend(graph.predecessors(key))
    return seen


def unique_callables(graph: nx.DiGraph, keys: list[str]) -> dict[str, Any]:
    """The operation each node calls, renamed where names clash: ``{key: callable}``.

    A flat Keras model needs distinct operations to have distinct names. A
    nested model and its parent may hold layers of one name, and every block
    of an opened keras_hub backbone has a ``self_attention_layer``. Each
    operation whose name another distinct operation also has is called
    through a `NamedCall` (one per operation, named after its node's address
    and remembering it), so the original layer object is shared, not renamed.
    """
    by_name: dict[str, dict[int, Any]] = defaultdict(dict)
    first_key: dict[int, str] = {}
    for key in keys:
        op = graph.nodes[key]["op"]
        by_name[op.name][id(op)] = op
        first_key.setdefault(id(op), key)
    taken = {name for name, ops in by_name.items() if len(ops) == 1}
    wrapped: dict[int, Any] = {}
    for name, ops in by_name.items():
        if len(ops) < 2:
            continue
        for op_id, op in ops.items():
            data = graph.nodes[first_key[op_id]]
            address = node_key(tuple(data.get("path", ())), data.get("name", op.name), None)
            base = address.replace("/", "_")  # no "/" in Keras names, no "." in torch parameter names
            unique, n = base, 0
            while unique in taken:
                n += 1
                unique = f"{base}_{n}"
            taken.add(unique)
            reason = _unserializable(op)
            wrapped[op_id] = (Unsaveable(op, address=address, reason=reason, name=unique) if reason
                              else NamedCall(op, address=address, name=unique))
    for key in keys:
        op = graph.nodes[key]["op"]
        reason = _unserializable(op) if id(op) not in wrapped else None
        if reason:
            data = graph.nodes[key]
            address = node_key(tuple(data.get("path", ())), data.get("name", op.name), None)
            name = op.name if op.name not in taken or by_name[op.name].keys() == {id(op)} else address.replace("/", "_")
            wrapped[id(op)] = Unsaveable(op, address=address, reason=reason, name=name)
    return {key: wrapped.get(id(graph.nodes[key]["op"]), graph.nodes[key]["op"]) for key in keys}


def _unserializable(op: Any) -> str | None:
    """Why Keras could not write `op`'s config, or None if it can (layers only)."""
    if not isinstance(op, keras.layers.Layer):
        return None
    try:
        op.get_config()
    except NotImplementedError as error:
        return " ".join(str(error).split())[:160]
    except Exception as error:  # noqa: BLE001 - a broken get_config (keras_hub 0.32's Llama decoder) cannot be saved either
        return f"its get_config() raises {type(error).__name__}: " + " ".join(str(error).split())[:140]
    return None


def _make_input(key: str, data: dict) -> Any:
    op = data["op"]
    return keras.Input(
        batch_shape=data["output_shapes"][0],
        dtype=data["output_dtypes"][0],
        sparse=bool(getattr(op, "sparse", False)),
        name=data.get("name", key),
        optional=bool(getattr(op, "optional", False)),
    )


def call_node(graph: nx.DiGraph, key: str, tensors: dict[str, list], op: Any = None) -> list:
    """Call the operation of node `key` on the tensors of its parents.

    Args:
        graph: the graph.
        key: the node to call.
        tensors: ``{node key: flat list of output tensors}`` for its parents.
        op: what to call instead of the node's ``op`` (its renamed call).

    Returns:
        The flat list of the call's output tensors.
    """
    data = graph.nodes[key]
    values = {}
    for parent, _, edge in graph.in_edges(key, data=True):
        outs = tensors[parent]
        for index, slot in edge["feeds"]:
            values[slot] = outs[index]
    args = fill(data.get("args", ()), values)
    kwargs = fill(data.get("kwargs", {}), values)
    try:
        out = (op if op is not None else data["op"])(*args, **kwargs)
        internals.clear_false_sparsity(keras.tree.flatten(out), list(values.values()))
    except Exception as e:
        raise GraphError(
            [f"calling node {key!r} ({type(data['op']).__name__}) failed: {type(e).__name__}: {e}"]
        ) from e
    return keras.tree.flatten(out)


def to_model(graph: nx.DiGraph, *, name: str | None = None) -> keras.Model:
    """Build a functional `keras.Model` from a graph.

    Calls every operation held in the graph (so weights are shared with the
    model the graph came from) on fresh `keras.Input` tensors, in topological
    order, skipping nodes the outputs do not need. The output structure (single
    tensor, list, tuple or dict) is that of ``graph.graph["outputs"]``. Time is
    linear in the number of nodes.

    Args:
        graph: a graph from `to_graph`, possibly edited.
        name: the new model's name; defaults to ``graph.graph["name"]``.

    Returns:
        A new functional `keras.Model`.

    Raises:
        GraphError: the graph is malformed (see `check_graph`) or an operation
            could not be called on its arguments.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> copy = ks.to_model(ks.to_graph(model))
        >>> data = np.ones((1, 3), "float32")
        >>> bool(np.allclose(copy.predict(data, verbose=0), model.predict(data, verbose=0)))
        True
    """
    check_graph(graph)
    # Building allocates many small objects; the cyclic GC's full passes then
    # dominate and make large rebuilds superlinear. Pause it while building.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build(graph, name)
    finally:
        if gc_was_enabled:
            gc.enable()


def _build(graph: nx.DiGraph, name: str | None) -> keras.Model:
    needed = needed_nodes(graph)
    order = [k for k in topological_order(graph) if k in needed]
    callables = unique_callables(graph, [k for k in order if graph.nodes[k].get("kind") != "input"])
    tensors: dict[str, list] = {}
    for key in input_keys(graph):
        tensors[key] = [_make_input(key, graph.nodes[key])]
    for key in order:
        if graph.nodes[key].get("kind") == "input":
            continue
        tensors[key] = call_node(graph, key, tensors, callables[key])
    inputs = map_structure(lambda k: tensors[k][0], graph.graph["inputs"])
    outputs = map_structure(lambda r: tensors[r.node][r.index], graph.graph["outputs"], leaf=is_ref_leaf)
    model = _functional(inputs, outputs, name or graph.graph.get("name"), graph.graph.get("output_names"))
    for key in order:
        source = graph.nodes[key].get("state_from")
        if source is not None:
            copy_state(source, graph.nodes[key]["op"])
    return model


def _functional(inputs: Any, outputs: Any, name: str | None, output_names: Any) -> keras.Model:
    """``keras.Model(inputs, outputs)``, keeping `output_names` where Keras would derive others.

    Keras names outputs after the layers producing them (dict outputs too);
    when a pass put a new layer at an output, `OutputNamedModel` keeps the
    original names.
    """
    flat = keras.tree.flatten(outputs)
    wanted = [str(n) for n in output_names or ()]
    derived = [internals.producer(t).name for t in flat]
    if len(wanted) != len(flat) or len(set(wanted)) != len(wanted) or wanted == derived:
        return keras.Model(inputs, outputs, name=name)
    return OutputNamedModel(inputs, outputs, name=name, output_names=wanted)
