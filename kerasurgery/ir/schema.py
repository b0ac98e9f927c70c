"""The IR schema: what a kerasurgery graph holds, and the helpers that read it.

``to_graph(model)`` (`kerasurgery.ir.from_keras`) reads the call graph that
Keras recorded when the model was built; ``to_model(graph)``
(`kerasurgery.ir.to_keras`) calls the recorded operations again on fresh
``keras.Input`` tensors and returns a new functional model. Passes in between
are plain functions from graph to graph; `check_graph`
(`kerasurgery.ir.check`) says whether a graph is well formed.

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
``order``          a number giving a stable topological tie-break
``state_from``     optional: a layer whose whole state (weights and
                   non-weight state such as lookup tables) `to_model` copies
                   into ``op`` once ``op`` is built (copies of layers that
                   cannot be built before their first call)
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
says what is malformed; `to_model` runs it first. Passes start from
`copy_graph`, which copies every attribute container (argument templates,
``feeds`` lists) but shares the operations, so editing the copy never edits
the input graph.

Example:
    >>> import keras, kerasurgery as ks
    >>> x = keras.Input((3,), name="x")
    >>> y = keras.layers.Dense(2, name="d")(x)
    >>> g = ks.to_graph(keras.Model(x, y))
    >>> list(g.nodes), g.edges["x", "d"]["feeds"]
    (['x', 'd'], [(0, '0')])
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import networkx as nx

from kerasurgery.errors import GraphError


@dataclasses.dataclass(frozen=True)
class Slot:
    """Placeholder for a tensor argument inside a node's ``args``/``kwargs``.

    Example:
        >>> import keras, kerasurgery as ks
        >>> a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
        >>> g = ks.to_graph(keras.Model([a, b], keras.layers.Add(name="add")([a, b])))
        >>> g.nodes["add"]["args"], g.edges["b", "add"]["feeds"]
        (([Slot(name='0.0'), Slot(name='0.1')],), [(0, '0.1')])
    """

    name: str


@dataclasses.dataclass(frozen=True)
class Ref:
    """Output ``index`` of graph node ``node`` (used for model outputs).

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((2,), name="x")
        >>> ks.to_graph(keras.Model(x, keras.layers.Dense(1, name="d")(x))).graph["outputs"]
        Ref(node='d', index=0)
    """

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
# ordering, inputs and outputs


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


def is_ref_leaf(o: Any) -> bool:
    """Whether `o` is a leaf of an output structure (a `Ref`, or anything but a container)."""
    return isinstance(o, Ref) or not isinstance(o, (list, tuple, dict))


def output_refs(graph: nx.DiGraph) -> list[Ref]:
    """The graph's output `Ref`s, flattened."""
    out: list[Ref] = []
    map_structure(out.append, graph.graph.get("outputs"), leaf=is_ref_leaf)
    return out


def input_keys(graph: nx.DiGraph) -> list[str]:
    """The graph's input node keys, flattened in the model's input order."""
    return flatten_structure(graph.graph.get("inputs"))


def copy_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """A copy of `graph` that shares operations but no mutable attribute.

    ``networkx``'s own ``copy()`` copies the attribute dicts but shares the
    values inside them (``feeds`` lists, argument templates, output shape
    lists), so an in-place edit of the copy would edit the original. Here
    every value is deep-copied except operations (``op``, ``state_from``),
    which are shared by identity: that is how weights stay shared.

    Example:
        >>> import keras, kerasurgery as ks
        >>> from kerasurgery.ir.schema import copy_graph
        >>> x = keras.Input((3,), name="x")
        >>> g = ks.to_graph(keras.Model(x, keras.layers.Dense(2, name="d")(x)))
        >>> c = copy_graph(g)
        >>> c.edges["x", "d"]["feeds"].append((0, "1"))
        >>> g.edges["x", "d"]["feeds"], c.nodes["d"]["op"] is g.nodes["d"]["op"]
        ([(0, '0')], True)
    """
    shared = ("op", "state_from")
    memo: dict[int, Any] = {}
    for _, data in graph.nodes(data=True):
        for name in shared:
            if name in data:
                memo[id(data[name])] = data[name]
    g = graph.__class__()
    g.graph.update(copy.deepcopy(graph.graph, memo))
    for key, data in graph.nodes(data=True):
        g.add_node(key, **{k: copy.deepcopy(v, memo) for k, v in data.items()})
    for u, v, data in graph.edges(data=True):
        g.add_edge(u, v, **copy.deepcopy(data, memo))
    return g
