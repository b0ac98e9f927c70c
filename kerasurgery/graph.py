"""The IR: a Keras functional model as a `networkx.DiGraph`, and back.

``to_graph(model)`` reads the call graph that Keras recorded when the model was
built; ``to_model(graph)`` calls the recorded operations again on fresh
``keras.Input`` tensors and returns a new functional model. Passes in between
are plain functions from graph to graph.

Schema
------

**Nodes**: one per call site of an operation (a Layer, or a raw ``keras.ops``
operation recorded in a functional model) and one per model input. The node key
is the call site's address without index or port (``"dense_1"``,
``"encoder/conv"``, ``"shared@1"``; see `kerasurgery.address`). Attributes:

=================  ==========================================================
``op``             the operation object itself; weights stay shared because
                   `to_model` calls this very object again
``kind``           ``"input"``, ``"layer"`` or ``"op"`` (a raw keras.ops op)
``class_name``     ``type(op).__name__``
``name``           the operation's name (``op.name``)
``path``           tuple of enclosing nested model names, outermost first
``call``           0-based call site index of ``op`` under ``path``
``args``           positional arguments, in order, as given to the call; every
                   tensor is replaced by a `Slot` naming the argument slot
``kwargs``         keyword arguments (``training``, ``mask``, MHA's ``value``,
                   ``attention_mask``, ...), tensors replaced by `Slot`
``output_shapes``  list of output shapes (one per output tensor, flattened)
``output_dtypes``  list of output dtype names
``activation``     name of the fused separable activation, or None
``order``          an int giving a stable topological tie-break
=================  ==========================================================

Slot names are ``"0"``, ``"1"`` for positional arguments, ``"0.1"`` for the
second item of a list given as first argument, ``"query"`` for a keyword
argument and ``"inputs.a"`` for key ``a`` of a dict argument.

**Edges** ``parent -> child`` carry ``feeds``: a list of
``(output_index, slot)`` pairs, saying which output tensor of the parent fills
which argument slot of the child. ``Add`` and ``Concatenate`` therefore never
depend on edge order, and one parent may feed several slots of one child.

**Graph attributes**: ``name`` (the model's name), ``inputs`` (a key, or a
list/dict of input node keys in the model's input structure), ``outputs`` (a
`Ref` or a nested list/tuple/dict of `Ref`), ``output_names``.

Nested Functional and Sequential models (whose ``call`` is Keras's own) are
inlined: their nodes carry the path prefix, and a ``training`` value given to
the nested call is passed down to the inner calls, exactly as Keras does at
run time.

A user may edit the graph with plain networkx: replace ``op`` on a node, remove
a node and add an edge from its parent to its child with the child's ``feeds``,
or add a node with ``op``, ``args``, ``kwargs`` and in-edges. `check_graph`
says what is malformed; `to_model` runs it first.

Example:
    >>> import keras, kerasurgery as ks
    >>> x = keras.Input((3,), name="x")
    >>> y = keras.layers.Dense(2, name="d")(x)
    >>> g = ks.to_graph(keras.Model(x, y))
    >>> list(g.nodes), g.edges["x", "d"]["feeds"]
    (['x', 'd'], [(0, '0')])
"""

from __future__ import annotations

import dataclasses
import gc
import warnings
from collections import defaultdict
from typing import Any

import keras
import networkx as nx

from kerasurgery import kinds
from kerasurgery.address import node_key
from kerasurgery.errors import GraphError, ModelError


@dataclasses.dataclass(frozen=True)
class Slot:
    """Placeholder for a tensor argument inside a node's ``args``/``kwargs``."""

    name: str


@dataclasses.dataclass(frozen=True)
class Ref:
    """Output ``index`` of graph node ``node`` (used for model outputs)."""

    node: str
    index: int = 0


# ---------------------------------------------------------------------------
# structures (list / tuple / dict) without depending on keras.tree internals


def map_structure(fn, obj: Any, leaf=lambda o: not isinstance(o, (list, tuple, dict))):
    """Apply `fn` to every leaf of a nested list/tuple/dict, keeping its shape."""
    if leaf(obj):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_structure(fn, v, leaf) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_structure(fn, v, leaf) for v in obj))
    return type(obj)(map_structure(fn, v, leaf) for v in obj)


def flatten_structure(obj: Any) -> list:
    """Leaves of a nested list/tuple/dict in order (dicts in insertion order)."""
    out: list = []
    map_structure(out.append, obj)
    return out


def _template(obj: Any, prefix: str, slots: list) -> Any:
    """Replace every KerasTensor in `obj` by a `Slot`, recording (slot, tensor)."""
    if isinstance(obj, keras.KerasTensor):
        slots.append((prefix, obj))
        return Slot(prefix)
    if isinstance(obj, dict):
        return {k: _template(v, f"{prefix}.{k}", slots) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_template(v, f"{prefix}.{i}", slots) for i, v in enumerate(obj))
    return obj


def template_slots(obj: Any) -> list[str]:
    """Names of every `Slot` inside a template, in order."""
    found: list[str] = []

    def visit(o):
        if isinstance(o, Slot):
            found.append(o.name)

    map_structure(visit, obj, leaf=lambda o: isinstance(o, Slot) or not isinstance(o, (list, tuple, dict)))
    return found


def fill(obj: Any, values: dict[str, Any]) -> Any:
    """Replace every `Slot` in a template by ``values[slot.name]``."""
    if isinstance(obj, Slot):
        return values[obj.name]
    if isinstance(obj, dict):
        return {k: fill(v, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(fill(v, values) for v in obj)
    return obj


# ---------------------------------------------------------------------------
# model -> graph


def _functional_of(model: Any) -> Any:
    """The Functional graph behind `model`, or a ModelError saying why not."""
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise ModelError(
                f"Expected a built model. Received: Sequential model '{model.name}', which has no "
                "input shape yet, so it has no graph of layer calls. Give it an input, e.g. "
                "`keras.Sequential([keras.Input(shape=...), ...])`, or call "
                "`model.build(input_shape)` (or call it once on data) first."
            )
        return fn
    if isinstance(model, Functional):
        if type(model).call is not Functional.call:
            warnings.warn(
                f"Model '{model.name}' ({type(model).__name__}) overrides `call()`; kerasurgery reads "
                "the functional graph it was built with, which may differ from what `call()` computes.",
                stacklevel=3,
            )
        return model
    if isinstance(model, keras.Model):
        raise ModelError(
            "Expected a Functional or Sequential model. Received: a subclassed model "
            f"'{model.name}' ({type(model).__name__}). Its computation lives in Python code in "
            "`call()`, so Keras records no graph of layer calls to read or rewrite. Rewrite it with "
            "the functional API (`outputs = layer(inputs)` ... `keras.Model(inputs, outputs)`); "
            "wrapping it as `keras.Model(x, model(x))` only exposes its final output."
        )
    if isinstance(model, keras.layers.Layer):
        raise ModelError(
            "Expected a Functional or Sequential keras.Model. Received: the layer "
            f"'{model.name}' ({type(model).__name__}). Call it on a `keras.Input` and wrap it: "
            "`x = keras.Input(shape); keras.Model(x, layer(x))`."
        )
    raise ModelError(
        f"Expected a keras.Model (Functional or Sequential). Received: {model!r} "
        f"of type {type(model).__name__}."
    )


def _inlinable(op: Any) -> Any | None:
    """The Functional to inline for a nested model call, or None (opaque op)."""
    from keras.src.models.functional import Functional

    if isinstance(op, keras.Sequential):
        if type(op).call is keras.Sequential.call:
            return getattr(op, "_functional", None)
        return None
    if isinstance(op, Functional) and type(op).call is Functional.call:
        return op
    return None


def _nodes_in_order(fn: Any) -> list:
    """Keras nodes of a Functional, inputs first (Keras's own depth order)."""
    ordered = []
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        ordered.extend(fn._nodes_by_depth[depth])
    return ordered


def _context_names(op: Any) -> set:
    return set(getattr(op, "_call_context_args", ()) or ())


class _Builder:
    """Collects call-site records while walking (and inlining) a Functional."""

    def __init__(self):
        self.records: list[dict] = []
        self.tensor_map: dict[int, tuple[int, int]] = {}

    def add_input(self, tensor: Any) -> None:
        op = tensor._keras_history.operation
        rid = self._record(op, "input", (), (), {}, [], [tensor], (0,))
        self.tensor_map[id(tensor)] = (rid, 0)

    def _record(self, op, kind, path, args, kwargs, feeds, outputs, sort_key) -> int:
        self.records.append(
            dict(
                op=op,
                kind=kind,
                class_name=type(op).__name__,
                name=op.name,
                path=tuple(path),
                args=args,
                kwargs=kwargs,
                feeds=feeds,
                output_shapes=[tuple(t.shape) for t in outputs],
                output_dtypes=[str(t.dtype) for t in outputs],
                activation=(
                    kinds.activation_name(kinds.fused_activation(op))
                    if kinds.fused_activation(op) is not None
                    else None
                ),
                sort_key=sort_key,
            )
        )
        return len(self.records) - 1

    def walk(self, fn: Any, path: tuple, context: dict, prefix: tuple) -> None:
        for node in _nodes_in_order(fn):
            if node.is_input:
                continue
            op = node.operation
            index = op._inbound_nodes.index(node)
            inner = _inlinable(op)
            if inner is not None:
                self._inline(node, op, inner, path, context, prefix + (index,))
            else:
                self._add_call(node, op, path, context, prefix + (index,))

    def _lookup(self, tensor: Any, where: str) -> tuple[int, int]:
        try:
            return self.tensor_map[id(tensor)]
        except KeyError:
            raise ModelError(
                f"Expected every tensor argument of '{where}' to come from the model's inputs. "
                f"Received: tensor {tensor.name!r} from outside the graph."
            ) from None

    def _add_call(self, node, op, path, context, sort_key) -> None:
        kwargs = dict(node.arguments.kwargs)
        names = _context_names(op)
        for name, value in context.items():
            if name in names:
                kwargs[name] = value
        slots: list = []
        args_t = tuple(_template(a, str(i), slots) for i, a in enumerate(node.arguments.args))
        kwargs_t = {k: _template(v, k, slots) for k, v in kwargs.items()}
        if len(slots) != len(node.arguments.keras_tensors):
            raise ModelError(
                f"Expected the tensor arguments of '{op.name}' in lists, tuples or dicts. "
                f"Received: a call whose tensors sit inside {type(node.arguments.args).__name__} "
                "objects kerasurgery cannot see into."
            )
        feeds = [(slot, self._lookup(t, op.name)) for slot, t in slots]
        kind = "layer" if isinstance(op, keras.layers.Layer) else "op"
        rid = self._record(op, kind, path, args_t, kwargs_t, feeds, node.outputs, sort_key)
        for i, t in enumerate(node.outputs):
            self.tensor_map[id(t)] = (rid, i)

    def _inline(self, node, op, inner, path, context, sort_key) -> None:
        args, kwargs = node.arguments.args, node.arguments.kwargs
        given = args[0] if args else kwargs.get("inputs")
        flat = keras.tree.flatten(given)
        if len(flat) != len(inner._inputs) or not all(isinstance(t, keras.KerasTensor) for t in flat):
            raise ModelError(
                f"Expected nested model '{op.name}' to be called on {len(inner._inputs)} tensor(s) "
                f"matching its inputs. Received: {len(flat)} argument(s)."
            )
        for outer_t, inner_t in zip(flat, inner._inputs):
            self.tensor_map[id(inner_t)] = self._lookup(outer_t, op.name)
        inner_context = {
            k: v for k, v in kwargs.items() if k in _context_names(op) and v is not None
        }
        inner_context.update(context)  # an enclosing call's value wins, as at run time
        self.walk(inner, path + (op.name,), inner_context, sort_key)
        for outer_t, inner_t in zip(node.outputs, inner._outputs):
            self.tensor_map[id(outer_t)] = self.tensor_map[id(inner_t)]

    def keys(self) -> list[str]:
        """Assign call indices and node keys; returns one key per record."""
        sites: dict[tuple, list[int]] = defaultdict(list)
        for rid, rec in enumerate(self.records):
            sites[(rec["path"], rec["name"])].append(rid)
        keys = [""] * len(self.records)
        for (path, name), rids in sites.items():
            rids.sort(key=lambda r: self.records[r]["sort_key"])
            for call, rid in enumerate(rids):
                self.records[rid]["call"] = call
                keys[rid] = node_key(path, name, call if len(rids) > 1 else None)
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise ModelError(
                f"Expected distinct addresses for distinct call sites. Received: names that "
                f"collide with call-site addresses: {dup}."
            )
        return keys


def to_graph(model: Any) -> nx.DiGraph:
    """Read a Functional or Sequential model into the kerasurgery IR.

    Nested Functional and Sequential models are inlined (their nodes carry the
    path prefix); every call site of a shared layer is its own node. The model
    is not changed.

    Args:
        model: a Functional model (including subclasses of Functional such as
            keras_hub backbones) or a built Sequential model.

    Returns:
        A new `networkx.DiGraph` following the schema in this module's docstring.

    Raises:
        ModelError: the model is subclassed, unbuilt, or not a model.

    Example:
        >>> import keras, kerasurgery as ks
        >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="enc")
        >>> x = keras.Input((4,), name="x")
        >>> g = ks.to_graph(keras.Model(x, inner(x)))
        >>> list(g.nodes)
        ['x', 'enc/d']
    """
    fn = _functional_of(model)
    builder = _Builder()
    for t in fn._inputs:
        builder.add_input(t)
    builder.walk(fn, (), {}, ())
    keys = builder.keys()

    graph = nx.DiGraph(name=model.name)
    for order, (key, rec) in enumerate(zip(keys, builder.records)):
        feeds = rec.pop("feeds")
        rec.pop("sort_key")
        graph.add_node(key, order=order, **rec)
        for slot, (parent, index) in feeds:
            pkey = keys[parent]
            if graph.has_edge(pkey, key):
                graph.edges[pkey, key]["feeds"].append((index, slot))
            else:
                graph.add_edge(pkey, key, feeds=[(index, slot)])

    def ref(t):
        rid, index = builder.tensor_map[id(t)]
        return Ref(keys[rid], index)

    def input_key(t):
        return keys[builder.tensor_map[id(t)][0]]

    is_leaf = lambda o: isinstance(o, keras.KerasTensor)  # noqa: E731
    graph.graph["inputs"] = map_structure(input_key, fn._inputs_struct, leaf=is_leaf)
    graph.graph["outputs"] = map_structure(ref, fn._outputs_struct, leaf=is_leaf)
    graph.graph["output_names"] = list(getattr(model, "output_names", None) or [])
    return graph


def as_graph(model_or_graph: Any) -> nx.DiGraph:
    """`model_or_graph` itself if it is a graph, else `to_graph(model_or_graph)`."""
    if isinstance(model_or_graph, nx.DiGraph):
        return model_or_graph
    return to_graph(model_or_graph)


# ---------------------------------------------------------------------------
# checks and ordering


def topological_order(graph: nx.DiGraph) -> list[str]:
    """Node keys in a deterministic topological order (ties broken by ``order``).

    Raises:
        GraphError: the graph has a cycle.
    """
    big = float("inf")
    try:
        return list(
            nx.lexicographical_topological_sort(
                graph, key=lambda n: (graph.nodes[n].get("order", big), str(n))
            )
        )
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(graph)
        raise GraphError([f"cycle: {' -> '.join(str(u) for u, _ in cycle)} -> {cycle[0][0]}"]) from None


def _is_ref_leaf(o: Any) -> bool:
    return isinstance(o, Ref) or not isinstance(o, (list, tuple, dict))


def output_refs(graph: nx.DiGraph) -> list[Ref]:
    """The graph's output `Ref`s, flattened."""
    out: list[Ref] = []
    map_structure(out.append, graph.graph.get("outputs"), leaf=_is_ref_leaf)
    return out


def input_keys(graph: nx.DiGraph) -> list[str]:
    """The graph's input node keys, flattened in the model's input order."""
    return flatten_structure(graph.graph.get("inputs"))


def _check_node(graph: nx.DiGraph, key: str, data: dict, problems: list[str]) -> None:
    if "op" not in data:
        problems.append(f"node {key!r} has no 'op' attribute")
        return
    if data.get("kind") == "input":
        if graph.in_degree(key):
            problems.append(f"input node {key!r} has incoming edges")
        return
    if not callable(data["op"]):
        problems.append(f"node {key!r}: 'op' is not callable ({data['op']!r})")
    wanted = template_slots(data.get("args", ())) + template_slots(data.get("kwargs", {}))
    fed: dict[str, list[str]] = defaultdict(list)
    for parent, _, edge in graph.in_edges(key, data=True):
        n_out = len(graph.nodes[parent].get("output_shapes", [None]))
        for index, slot in edge.get("feeds", []):
            fed[slot].append(parent)
            if not 0 <= index < n_out:
                problems.append(
                    f"edge {parent!r} -> {key!r} feeds output {index}, but {parent!r} has {n_out} output(s)"
                )
        if not edge.get("feeds"):
            problems.append(f"edge {parent!r} -> {key!r} has no 'feeds' (which slot does it fill?)")
    for slot in wanted:
        if slot not in fed:
            problems.append(f"node {key!r}: argument slot {slot!r} is not fed by any edge")
        elif len(fed[slot]) > 1:
            problems.append(f"node {key!r}: argument slot {slot!r} is fed {len(fed[slot])} times ({fed[slot]})")
    for slot in fed:
        if slot not in wanted:
            problems.append(f"node {key!r}: an edge feeds slot {slot!r}, which its arguments do not have")


def check_graph(graph: nx.DiGraph) -> None:
    """Check that a graph is well formed, raising `GraphError` listing every problem.

    Checks: no cycle; every node has an ``op``; every argument slot is fed by
    exactly one edge and every edge feeds an existing slot from an existing
    output; inputs exist and are input nodes; outputs name existing outputs.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> g = ks.to_graph(keras.Model(x, keras.layers.Dense(2, name="d")(x)))
        >>> g.remove_edge("x", "d")
        >>> ks.check_graph(g)
        Traceback (most recent call last):
        ...
        kerasurgery.errors.GraphError: The graph is malformed (1 problem(s)):
          - node 'd': argument slot '0' is not fed by any edge
    """
    if not isinstance(graph, nx.DiGraph):
        raise GraphError([f"expected a networkx.DiGraph, received {type(graph).__name__}"])
    problems: list[str] = []
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        problems.append(f"cycle: {' -> '.join(str(u) for u, _ in cycle)} -> {cycle[0][0]}")
    for key, data in graph.nodes(data=True):
        _check_node(graph, key, data, problems)
    if graph.graph.get("inputs") is None:
        problems.append("graph has no 'inputs' attribute")
    else:
        for key in input_keys(graph):
            if key not in graph:
                problems.append(f"model input {key!r} is not a node")
            elif graph.nodes[key].get("kind") != "input":
                problems.append(f"model input {key!r} is not an input node")
    inputs = set(input_keys(graph)) if graph.graph.get("inputs") is not None else set()
    for key, data in graph.nodes(data=True):
        if data.get("kind") == "input" and key not in inputs:
            problems.append(f"input node {key!r} is not listed in the graph's 'inputs'")
    if graph.graph.get("outputs") is None:
        problems.append("graph has no 'outputs' attribute")
    else:
        for ref in output_refs(graph):
            if not isinstance(ref, Ref):
                problems.append(f"model output {ref!r} is not a Ref")
            elif ref.node not in graph:
                problems.append(f"model output {ref.node!r} is not a node")
            elif not 0 <= ref.index < len(graph.nodes[ref.node].get("output_shapes", [None])):
                problems.append(f"model output {ref.node!r}[{ref.index}] does not exist")
    if problems:
        raise GraphError(problems)


# ---------------------------------------------------------------------------
# graph -> model


def _needed(graph: nx.DiGraph) -> set:
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


def _check_names(graph: nx.DiGraph, keys: list[str]) -> None:
    by_name: dict[str, set] = defaultdict(set)
    for key in keys:
        op = graph.nodes[key]["op"]
        by_name[op.name].add(id(op))
    clashes = sorted(name for name, ids in by_name.items() if len(ids) > 1)
    if clashes:
        raise GraphError(
            [
                f"distinct operations share the name {name!r}; a flat Keras model needs unique "
                "names (this happens when a nested model and its parent both have a layer of that "
                "name: rename one before building the model)"
                for name in clashes
            ]
        )


def _make_input(key: str, data: dict) -> Any:
    op = data["op"]
    return keras.Input(
        batch_shape=data["output_shapes"][0],
        dtype=data["output_dtypes"][0],
        sparse=bool(getattr(op, "sparse", False)),
        name=data.get("name", key),
        optional=bool(getattr(op, "optional", False)),
    )


def call_node(graph: nx.DiGraph, key: str, tensors: dict[str, list]) -> list:
    """Call the operation of node `key` on the tensors of its parents.

    Args:
        graph: the graph.
        key: the node to call.
        tensors: ``{node key: flat list of output tensors}`` for its parents.

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
        out = data["op"](*args, **kwargs)
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
    needed = _needed(graph)
    order = [k for k in topological_order(graph) if k in needed]
    _check_names(graph, [k for k in order] + input_keys(graph))
    tensors: dict[str, list] = {}
    for key in input_keys(graph):
        tensors[key] = [_make_input(key, graph.nodes[key])]
    for key in order:
        if graph.nodes[key].get("kind") == "input":
            continue
        tensors[key] = call_node(graph, key, tensors)
    inputs = map_structure(lambda k: tensors[k][0], graph.graph["inputs"])
    outputs = map_structure(lambda r: tensors[r.node][r.index], graph.graph["outputs"], leaf=_is_ref_leaf)
    model = keras.Model(inputs, outputs, name=name or graph.graph.get("name"))
    pending = graph.graph.get("pending_weights", ())
    if pending:
        from kerasurgery.edit import copy_weights  # edit imports this module

        for src, dst in pending:
            copy_weights(src, dst)
    return model
