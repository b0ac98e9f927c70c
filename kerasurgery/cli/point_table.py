"""A table of a model's points: what `kerasurgery inspect` prints.

`point_table` pairs every address from `kerasurgery.points` with its layer
class, output shape, activation (precise: ``relu6``, ``leaky_relu(negative_slope=0.3)``,
``softmax(axis=1)``; see `activation_text`) and parameter count;
`format_table` lays rows out as aligned text.

Example:
    >>> import keras
    >>> x = keras.Input((4,), name="x")
    >>> model = keras.Model(x, keras.layers.Dense(3, activation="softmax", name="head")(x))
    >>> for row in point_table(model):
    ...     print(row["address"], row["layer"], row["shape"], row["activation"], row["params"])
    x InputLayer (None, 4)  0
    head:pre Dense (None, 3) before softmax 0
    head Dense (None, 3) softmax 15
"""

from __future__ import annotations

from typing import Any

import keras

from kerasurgery.address.selector import Selector
from kerasurgery.ir.export import params_of, shape_text
from kerasurgery.ir.from_keras import as_graph
from kerasurgery.ir.resolve import Resolver
from kerasurgery.layers import kinds

COLUMNS = ("address", "layer", "shape", "activation", "params")
_HEADERS = {"address": "address", "layer": "layer", "shape": "output shape",
            "activation": "activation", "params": "params"}


def _number(value: Any) -> str:
    return f"{float(value):g}"


def activation_text(op: Any) -> str | None:
    """What an activation layer computes, with the arguments that change it; None for other layers.

    ``ReLU(max_value=6)`` is ``relu6``, ``ReLU(negative_slope=0.1)`` is
    ``relu(negative_slope=0.1)``; ``LeakyReLU`` shows its slope, ``ELU`` its
    alpha when not 1, ``Softmax`` its axis when not -1, ``PReLU`` that its
    slope is learned; an ``Activation`` layer the name of its function.

    Example:
        >>> import keras
        >>> activation_text(keras.layers.ReLU(max_value=6)), activation_text(keras.layers.LeakyReLU(0.1))
        ('relu6', 'leaky_relu(negative_slope=0.1)')
    """
    layers = keras.layers
    if isinstance(op, layers.ReLU):
        slope, threshold = float(op.negative_slope or 0), float(op.threshold or 0)
        if op.max_value is not None and float(op.max_value) == 6 and not slope and not threshold:
            return "relu6"
        parts = [f"max_value={_number(op.max_value)}"] if op.max_value is not None else []
        parts += [f"negative_slope={_number(slope)}"] if slope else []
        parts += [f"threshold={_number(threshold)}"] if threshold else []
        return "relu" + (f"({', '.join(parts)})" if parts else "")
    if isinstance(op, layers.LeakyReLU):
        return f"leaky_relu(negative_slope={_number(op.negative_slope)})"
    if isinstance(op, layers.ELU):
        return "elu" if float(op.alpha) == 1 else f"elu(alpha={_number(op.alpha)})"
    if isinstance(op, layers.PReLU):
        axes = f", shared_axes={list(op.shared_axes)}" if op.shared_axes else ""
        return f"prelu (learned slope{axes})"
    if isinstance(op, layers.Softmax):
        axis = op.axis if isinstance(op.axis, int) else list(op.axis)
        return "softmax" if axis == -1 else f"softmax(axis={axis})"
    if kinds.is_activation_layer(op):
        fn = getattr(op, "activation", None)
        return kinds.activation_name(fn) if fn is not None else type(op).__name__.lower()
    return None


def _activation_of(data: dict) -> str:
    op = data.get("op")
    if data.get("activation"):
        fused = getattr(op, "activation", None)  # a layer given as activation=: describe it
        return (activation_text(fused) if isinstance(fused, keras.layers.Layer) else None) or data["activation"]
    return activation_text(op) or ""


def _input_shape(graph: Any, key: str, slots: tuple[str, ...]) -> tuple | None:
    for parent, _, edge in graph.in_edges(key, data=True):
        for index, slot in edge["feeds"]:
            if slot in slots:
                return graph.nodes[parent]["output_shapes"][index]
    return None


def scores_shape(graph: Any, key: str) -> tuple | None:
    """Shape of the ``:scores`` of attention node `key`: (batch, heads, target, source)."""
    op = graph.nodes[key]["op"]
    query = _input_shape(graph, key, ("0", "query"))
    value = _input_shape(graph, key, ("1", "value")) or query
    heads = getattr(op, "num_heads", None) or getattr(op, "num_query_heads", None)
    if query is None or value is None or len(query) != 3 or len(value) != 3:
        return None
    return (query[0], heads, query[1], value[1])


def point_table(model_or_graph: Any, points: Selector | None = None) -> list[dict]:
    """One row per point: address, layer class, output shape, activation, params.

    ``:pre`` rows say which activation they come before; ``:scores`` rows give
    the attention weights' shape. A layer's parameters are counted on its
    first call site only (later calls of a shared layer show 0), so the column
    sums to the number of distinct weights.

    Args:
        model_or_graph: a model or a graph from `kerasurgery.to_graph`.
        points: only these points: addresses, globs, a list of them or a
            predicate (see `kerasurgery.points`); None for every point.

    Returns:
        A list of dicts with keys `COLUMNS`; ``shape`` is text, ``params`` an int.

    Raises:
        AddressError: an unknown address, or a glob that matches nothing.
    """
    graph = as_graph(model_or_graph)
    resolver = Resolver(graph)
    addresses = resolver.points() if points is None else list(resolver.select(points, what="--points"))
    counted: set[int] = set()
    rows = []
    for address in addresses:
        point = resolver.resolve_one(address)
        data = graph.nodes[point.node]
        activation = _activation_of(data)
        params = 0
        if point.port is None and id(data["op"]) not in counted and data.get("kind") != "input":
            counted.add(id(data["op"]))
            params = params_of(data["op"])
        if point.port == "scores":
            shape, activation = scores_shape(graph, point.node), "softmax weights"
        elif point.port == "pre":
            shape = data["output_shapes"][0]
            activation = f"before {activation}" if activation else ""
        else:
            shape = data["output_shapes"][point.index]
            if len(data["output_shapes"]) > 1:
                activation = ""
        rows.append({"address": address, "layer": str(data.get("class_name", "")), "shape": shape_text(shape),
                     "activation": activation, "params": params})
    return rows


def _is_number(value: Any) -> bool:
    if isinstance(value, (int, float)):
        return True
    try:
        float(str(value).rstrip("%").replace(",", ""))
    except ValueError:
        return False
    return True


def format_table(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    """Rows as aligned text with a header line; numeric columns right-aligned."""
    cells = [[_HEADERS.get(c, c) for c in columns]]
    for row in rows:
        cells.append([f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    numeric = [bool(rows) and all(_is_number(row[c]) for row in rows) for c in columns]

    def line(r: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(r, widths, numeric)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])
