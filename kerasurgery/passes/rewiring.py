"""Moving the consumers of a value to another: what the layer edits and `patch` share.

- `value_ref`: the output holding the value of a point (``:pre`` split as
  for `expose`); the scores of a *closed* attention layer are refused, since
  they are only an output of it: opening the layer makes them a value that
  feeds the rest of the attention.
- `move_consumers`: every consumer of that value (edges, model outputs,
  aliases) reads another output instead; at ``:pre`` of an activation layer
  only that layer's input moves.
- `check_fits`: a new value must have the shape and dtype its consumers were
  built for; the error names each consumer.
- `call_specs`: the output specs of a layer called on the recorded shapes
  (an unbuilt layer is built on them), without leaving the call in the
  layer's history.
- `call_site`, `rename_node`, `build`: the call a layer edit acts on, a new
  key for a node, and `to_model` with its failures reported as
  `TransformError`.
- `scores_to_open`: the ``:scores`` points whose attention layers the
  model-level functions open (``graph_for(model, points, open=...)``).

Every function here edits the graph it is given; passes call them on a
`kerasurgery.ir.schema.copy_graph` copy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import networkx as nx

from kerasurgery.address.grammar import format_address, node_key, parse, point_address
from kerasurgery.errors import AddressError, GraphError, TransformError
from kerasurgery.ir.edits import input_feed, redirect
from kerasurgery.ir.resolve import Point, Resolver
from kerasurgery.ir.schema import Ref, is_ref_leaf, map_structure, output_refs, template_slots
from kerasurgery.ir.to_keras import to_model
from kerasurgery.ir.trace import forget_trace_calls
from kerasurgery.layers import kinds
from kerasurgery.passes.point_values import PointValues, tensor_of


def value_ref(graph: nx.DiGraph, address: str, point: Point, splitter: PointValues) -> Ref:
    """The output holding the value of `point` (editing the graph for ``:pre``).

    Raises:
        TransformError: `point` is ``:scores`` of a closed attention layer.
    """
    if point.port == "scores":
        data = graph.nodes[point.node]
        raise TransformError(
            f"Expected a point whose value feeds the rest of the model. Received: {address!r}, the attention "
            f"weights of the closed {data.get('class_name')} '{point.node}', which are only an output of it: "
            "replacing them would change nothing it computes. Open that layer so that its softmax feeds the "
            f"value product: the model-level functions do it for you, and on a graph use "
            f"`kerasurgery.to_graph(model, open=[{point.node!r}])`."
        )
    return tensor_of(graph, point, splitter)


def _input_only(graph: nx.DiGraph, point: Point) -> bool:
    """Whether `point` is ``:pre`` of an activation layer: its value is that layer's input only."""
    return point.port == "pre" and kinds.is_activation_layer(graph.nodes[point.node]["op"])


def consumers(graph: nx.DiGraph, point: Point, ref: Ref) -> list[str]:
    """Who reads the value of `point` (held by `ref`), described for error messages."""
    if _input_only(graph, point):
        return [_describe(graph, point.node)]
    found = [_describe(graph, child) for child in graph.successors(ref.node)
             if any(index == ref.index for index, _ in graph.edges[ref.node, child]["feeds"])]
    outputs = graph.graph.get("outputs")
    names = list(graph.graph.get("output_names") or [])
    refs = output_refs(graph)
    labels = list(outputs) if isinstance(outputs, dict) else (names if len(names) == len(refs) else
                                                              [r.node for r in refs])
    found += [f"the model output {label!r}" for label, r in zip(labels, refs) if r == ref]
    return found


def _describe(graph: nx.DiGraph, key: str) -> str:
    return f"'{key}' ({graph.nodes[key].get('class_name')})"


def move_consumers(graph: nx.DiGraph, point: Point, ref: Ref, new: Ref) -> None:
    """Make every consumer of the value of `point` (held by `ref`) read `new` instead.

    At ``:pre`` of an activation layer only the edge into that layer moves
    (its input is the point; other readers of that tensor keep it).
    """
    if not _input_only(graph, point):
        redirect(graph, ref, new)
        return
    _, _, slot = input_feed(graph, point.node)
    feeds = graph.edges[ref.node, point.node]["feeds"]
    kept = [f for f in feeds if f != (ref.index, slot)]
    if kept:
        graph.edges[ref.node, point.node]["feeds"] = kept
    else:
        graph.remove_edge(ref.node, point.node)
    if graph.has_edge(new.node, point.node):
        graph.edges[new.node, point.node]["feeds"] = graph.edges[new.node, point.node]["feeds"] + [(new.index, slot)]
    else:
        graph.add_edge(new.node, point.node, feeds=[(new.index, slot)])


def spec_of(graph: nx.DiGraph, ref: Ref) -> tuple[Any, Any]:
    """The recorded ``(shape, dtype)`` of output `ref`."""
    data = graph.nodes[ref.node]
    shapes, dtypes = data.get("output_shapes") or [None], data.get("output_dtypes") or [None]
    shape = shapes[ref.index] if ref.index < len(shapes) else None
    dtype = dtypes[ref.index] if ref.index < len(dtypes) else None
    return (None if shape is None else tuple(shape)), dtype


def fits(shape: Any, recorded: Any) -> bool:
    """Whether `shape` matches `recorded` (same rank; None matches any size)."""
    if shape is None or recorded is None:
        return True
    return len(shape) == len(recorded) and all(a is None or b is None or a == b for a, b in zip(shape, recorded))


def same_dtype(a: Any, b: Any) -> bool:
    """Whether two dtypes are the same (None: unknown, matches)."""
    if a is None or b is None:
        return True
    return keras.backend.standardize_dtype(a) == keras.backend.standardize_dtype(b)


def check_fits(graph: nx.DiGraph, address: str, point: Point, ref: Ref, shape: Any, dtype: Any, what: str,
               fix: str = "") -> None:
    """Refuse a new value for `point` whose shape or dtype differs from the value its consumers were built on.

    Raises:
        TransformError: naming every consumer and both shapes and dtypes.
    """
    old_shape, old_dtype = spec_of(graph, ref)
    if fits(shape, old_shape) and same_dtype(dtype, old_dtype):
        return
    readers = consumers(graph, point, ref) or ["nothing"]
    raise TransformError(
        f"Expected {what} to have the shape and dtype of the value at {address!r}: {old_shape}, {old_dtype}. "
        f"Received: {shape}, {dtype}. What reads {address!r} was built on {old_shape}, {old_dtype}: "
        f"{', '.join(readers)} cannot accept {shape}, {dtype}.{' ' + fix if fix else ''}"
    )


def call_specs(layer: Any, args: tuple, kwargs: dict, where: str) -> list:
    """The output specs of ``layer(*args, **kwargs)`` on KerasTensors (building an unbuilt layer on them).

    The symbolic call is removed from the layer's call history afterwards.

    Raises:
        TransformError: the layer cannot be called on those shapes.
    """
    if not isinstance(layer, keras.Operation):
        raise TransformError(
            f"Expected a Keras layer (a `keras.layers.Layer`; wrap a function in a layer of your own). Received: "
            f"{layer!r:.80} of type {type(layer).__name__}."
        )
    restore = forget_trace_calls(layer)
    try:
        out = layer(*args, **kwargs)
    except Exception as error:  # whatever the layer raises on these shapes
        shapes = [tuple(t.shape) for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        raise TransformError(
            f"Expected a layer that accepts {where}. Received: {type(layer).__name__} '{getattr(layer, 'name', layer)}', "
            f"whose call on shape(s) {shapes} failed: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
        ) from None
    finally:
        restore()
    return keras.tree.flatten(out)


def symbolic(shape: Any, dtype: Any) -> Any:
    """A KerasTensor of a recorded shape and dtype."""
    return keras.KerasTensor(tuple(shape), dtype=dtype or "float32")


def call_site(graph: nx.DiGraph, text: str, what: str) -> str:
    """The node key of the call addressed by `text` (no port; any output index of it).

    Raises:
        AddressError: not an address of the graph, or an address with a port.
        TransformError: the address names an inlined nested model or an opened layer.
    """
    resolver = Resolver(graph)
    address = parse(text)
    if address.port is not None:
        raise AddressError(
            f"Expected the address of a layer call to {what} (no ':{address.port}'). Received: {text!r}.",
            address=text, suggestions=[format_address(dataclasses.replace(address, port=None))],
        )
    key = node_key(address.path, address.name, address.call)
    aliases = graph.graph.get("aliases") or {}
    if key not in graph and (key in aliases or (address.call is None and f"{key}@0" in aliases)):
        inner = sorted({r.node for r in aliases.get(key, aliases.get(f"{key}@0", []))})
        raise TransformError(
            f"Expected the address of one layer call to {what}. Received: {text!r}, an inlined nested model or "
            f"an opened layer: its calls are nodes of the graph ({inner[:3]} ...). Address one of them, or "
            "keep the layer closed."
        )
    one = point_address(node_key(address.path, address.name, address.call), 0)
    try:
        return resolver.resolve_one(one).node
    except AddressError:
        resolver.resolve_one(text)  # the error about the address as given
        raise


def rename_node(graph: nx.DiGraph, old: str, new: str) -> None:
    """Give node `old` the key `new`, updating outputs, aliases and scores."""
    if old == new:
        return
    nx.relabel_nodes(graph, {old: new}, copy=False)

    def moved(ref: Any) -> Any:
        return Ref(new, ref.index) if isinstance(ref, Ref) and ref.node == old else ref

    graph.graph["outputs"] = map_structure(moved, graph.graph["outputs"], leaf=is_ref_leaf)
    graph.graph["aliases"] = {k: [moved(r) for r in refs] for k, refs in (graph.graph.get("aliases") or {}).items()}
    graph.graph["scores"] = {k: moved(r) for k, r in (graph.graph.get("scores") or {}).items()}


def tensor_slots(data: dict) -> list[str]:
    """The argument slots of a node that take tensors."""
    return template_slots(data.get("args", ())) + template_slots(data.get("kwargs", {}))


def build(graph: nx.DiGraph, name: str, what: str) -> keras.Model:
    """`to_model`, a failure reported as `TransformError` (a rewritten model that cannot be built)."""
    try:
        return to_model(graph, name=name)
    except GraphError as error:
        problems = "; ".join(error.problems)
        raise TransformError(
            f"Expected {what} to give a model Keras can build. Received: {problems}"
        ) from error


def scores_to_open(points: Any) -> list[str] | None:
    """The ``:scores`` addresses among `points`: their attention layers must be opened to act on them."""
    found = [p for p in points if isinstance(p, str) and p.endswith(":scores")]
    return found or None
