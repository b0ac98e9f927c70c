"""`perturb_pass`: the graph that gradients with respect to points are taken through.

Differentiating a target with respect to an intermediate value needs that
value as an *argument* of the function being differentiated (JAX has no
other way; TensorFlow and PyTorch can watch a tensor, but not one inside a
compiled call the same way). The pass makes one: every point's tensor ``v``
becomes ``v + delta``, where ``delta`` is a new model input, and every
consumer of ``v`` (layers, model outputs, aliases) reads the sum instead. At
``delta = 0`` the model computes exactly what it computed before (adding
zeros changes no bit), and the gradient of any output with respect to
``delta`` is its gradient with respect to ``v``: the total derivative through
every path that leaves ``v``, as ``tf.GradientTape.gradient(target, v)``
gives it. A point downstream of another point is differentiated through too
(its gradient includes the paths through the later point), again as a tape
would. Addresses naming the same tensor (``relu:pre`` and the ``bn`` feeding
it) share one ``delta``.

The new graph takes ``[original inputs, [delta_0, delta_1, ...]]`` and
returns ``{"target": ..., "points": [v_0 + delta_0, ...]}``: the target
outputs (the model's own outputs, or the given addresses) and the perturbed
point values. ``graph.graph["gradient_points"]`` maps each address to its
delta's index, ``graph.graph["reach"]`` maps each address to the indices of
the flat target outputs its value reaches (an empty list: the target does
not depend on it).
"""

from __future__ import annotations

from typing import Any

import keras
import networkx as nx

from kerasurgery.address.grammar import tap_name
from kerasurgery.address.selector import Selector
from kerasurgery.errors import TransformError
from kerasurgery.ir.edits import add_call, new_key, redirect
from kerasurgery.ir.names import Names
from kerasurgery.ir.resolve import Resolver
from kerasurgery.ir.schema import Ref, Slot, copy_graph, output_refs
from kerasurgery.passes.point_values import PointValues, tensor_of


def _is_float(dtype: Any) -> bool:
    try:
        return "float" in keras.backend.standardize_dtype(dtype)
    except (TypeError, ValueError):
        return False


def _check_float(address: str, dtype: Any) -> None:
    if not _is_float(dtype):
        raise TransformError(
            f"Expected points with floating-point values to differentiate with respect to. Received: "
            f"{address!r} of dtype {dtype}: a gradient with respect to integers (token ids, indices, "
            "masks) is not defined. Choose a float point after it, e.g. the output of an Embedding "
            "layer, or an input cast to float."
        )


def perturb_pass(graph: nx.DiGraph, points: Selector, *, targets: Selector | None = None) -> nx.DiGraph:
    """Graph pass: each point's value ``v`` becomes ``v + delta`` (a new input).

    Args:
        graph: the model's graph.
        points: the points to differentiate with respect to (a selector as
            for `kerasurgery.expose`); ``None`` or ``[]`` adds no delta.
        targets: addresses whose values become the ``"target"`` outputs
            (``{address: value}``), or None to keep the model's own outputs
            (in their structure).

    Returns:
        A new graph; see the module docstring for its inputs, outputs and
        the ``gradient_points`` and ``reach`` attributes.

    Raises:
        AddressError: an unknown point or target.
        TransformError: a point whose values are not floating point.
    """
    resolver = Resolver(graph)
    selected = resolver.select(points, what="points") if points not in (None, [], ()) else {}
    wanted = resolver.select(targets, what="targets") if targets is not None else None
    g = copy_graph(graph)
    names = Names(g)
    splitter = PointValues(g, names)
    if wanted is None:
        target: Any = g.graph["outputs"]
    else:
        target = {address: tensor_of(g, p, splitter) for address, p in wanted.items()}
    refs = {address: tensor_of(g, p, splitter) for address, p in selected.items()}
    g.graph["outputs"] = {"target": target, "points": []}
    deltas: list[str] = []
    sums: list[Ref] = []
    index_of: dict[Ref, int] = {}
    for address, ref in refs.items():
        if ref in index_of:
            continue
        data = g.nodes[ref.node]
        dtype = list(data.get("output_dtypes") or [None])[ref.index]
        shape = list(data.get("output_shapes") or [None])[ref.index]
        _check_float(address, dtype)
        if shape is None:
            raise TransformError(
                f"Expected points of known rank. Received: {address!r}, whose shape is unknown."
            )
        base = tap_name(address).removesuffix("_tap")
        delta = keras.layers.InputLayer(batch_shape=tuple(shape), dtype=dtype, name=names.make(f"{base}_delta"))
        delta_key = new_key(g, (), delta.name)
        g.add_node(delta_key, op=delta, kind="input", class_name="InputLayer", name=delta.name, path=(), call=0,
                   args=(), kwargs={}, output_shapes=[tuple(shape)], output_dtypes=[dtype], activation=None,
                   order=data.get("order", 0) + 0.2)
        add = keras.layers.Add(dtype=dtype, name=names.make(f"{base}_perturbed"))
        add_key = new_key(g, (), add.name)
        add_call(g, add_key, add, [(ref.node, ref.index, "0.0"), (delta_key, 0, "0.1")],
                 args=([Slot("0.0"), Slot("0.1")],), output_shapes=[shape], output_dtypes=[dtype],
                 order=data.get("order", 0) + 0.25)
        redirect(g, ref, Ref(add_key, 0), exclude=(add_key,))
        index_of[ref] = len(deltas)
        deltas.append(delta_key)
        sums.append(Ref(add_key, 0))
    g.graph["outputs"]["points"] = sums
    g.graph["output_names"] = []
    if deltas:
        g.graph["inputs"] = [g.graph["inputs"], deltas]
    g.graph["gradient_points"] = {address: index_of[ref] for address, ref in refs.items()}
    g.graph["reach"] = _reach(g, {address: sums[index_of[ref]] for address, ref in refs.items()})
    return g


def _reach(g: nx.DiGraph, sums: dict[str, Ref]) -> dict[str, list[int]]:
    """For each address, the indices of the flat target outputs its perturbed value feeds."""
    flat = output_refs(g)[: len(output_refs(g)) - len(g.graph["outputs"]["points"])]
    reach = {}
    for address, ref in sums.items():
        below = nx.descendants(g, ref.node) | {ref.node}
        reach[address] = [i for i, t in enumerate(flat) if t.node in below]
    return reach
