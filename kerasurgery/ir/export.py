"""The IR as files other tools read: DOT, GraphML, JSON.

- `describe`: a plain-data copy of a graph (strings and numbers only, no
  operation objects), the form GraphML and JSON can hold.
- `to_dot`: Graphviz DOT text, nested models drawn as clusters.
- `write_graph`: write a model's graph to ``.dot``, ``.graphml`` or ``.json``.

Drawings (``.svg``/``.png``/``.pdf``) are `kerasurgery.plot.save_graph`.

Example:
    >>> import keras, kerasurgery as ks
    >>> from kerasurgery.ir.export import describe
    >>> x = keras.Input((3,), name="x")
    >>> view = describe(keras.Model(x, keras.layers.Dense(2, activation="relu", name="d")(x)))
    >>> view.nodes["d"]["class_name"], view.nodes["d"]["activation"], view.nodes["d"]["params"]
    ('Dense', 'relu', 8)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from typing import Any

import networkx as nx

from kerasurgery.address.grammar import format_address, parse
from kerasurgery.errors import DataError
from kerasurgery.ir.from_keras import as_graph
from kerasurgery.ir.resolve import Resolver
from kerasurgery.ir.schema import input_keys, output_refs, topological_order

#: Text formats `write_graph` writes, by file suffix.
TEXT_FORMATS = (".dot", ".gv", ".graphml", ".json")
#: Drawing formats (written by `kerasurgery.plot.save_graph`).
IMAGE_FORMATS = (".svg", ".png", ".pdf")
#: Every graph file format, by suffix.
GRAPH_FORMATS = TEXT_FORMATS + IMAGE_FORMATS

#: Fill colours by family of layer (first matching substring of the class name wins).
_FAMILIES = (
    ("input", "#d9f2d9"),
    ("attention", "#f8c9c4"),
    ("conv", "#cfe2f3"),
    ("dense", "#fde3c3"),
    ("norm", "#e6e6e6"),
    ("pool", "#e4d7f5"),
    ("dropout", "#f2f2f2"),
    ("add", "#fff2b3"),
    ("concatenate", "#fff2b3"),
    ("multiply", "#fff2b3"),
    ("subtract", "#fff2b3"),
    ("relu", "#f9d3e6"),
    ("activation", "#f9d3e6"),
    ("softmax", "#f9d3e6"),
    ("lstm", "#d5eef0"),
    ("gru", "#d5eef0"),
)
_DEFAULT_FILL = "#ffffff"


def fill_colour(class_name: str, kind: str = "layer") -> str:
    """The fill colour of a node in drawings, chosen by its layer family."""
    if kind == "input":
        return _FAMILIES[0][1]
    lower = class_name.lower().replace("padding", "")  # ZeroPadding2D is not an Add
    for family, colour in _FAMILIES[1:]:
        if family in lower:
            return colour
    return _DEFAULT_FILL


def shape_text(shape: Any) -> str:
    """``(None, 28, 28, 8)`` for a shape tuple, ``?`` when unknown."""
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def params_of(op: Any) -> int:
    """Number of weights of an operation (0 for raw ops and unbuilt layers)."""
    try:
        return int(op.count_params()) if getattr(op, "built", False) else 0
    except (AttributeError, ValueError):
        return 0


def _site(key: str) -> str:
    """The node key without its path: ``"encoder/proj@1"`` -> ``"proj@1"``."""
    return format_address(dataclasses.replace(parse(key), path=()))


def describe(model_or_graph: Any) -> nx.DiGraph:
    """A plain-data copy of the IR: every attribute a string or a number.

    Node attributes: ``name``, ``site`` (the key without its path, e.g.
    ``"proj@1"``), ``path`` (``"encoder/block"`` or ``""``),
    ``kind``, ``class_name``, ``activation`` (``""`` when none),
    ``output_shape`` (text, outputs joined by ``"; "``), ``params``, ``order``.
    Edge attribute ``feeds`` is text such as ``"0->0, 0->1"`` (output index ->
    argument slot). Graph attributes: ``name``, ``inputs`` and ``outputs`` (JSON
    text).

    Args:
        model_or_graph: a Functional or Sequential model, or a graph from
            `kerasurgery.to_graph`.

    Returns:
        A new `networkx.DiGraph` that `networkx.write_graphml` can write.
    """
    graph = as_graph(model_or_graph)
    view = nx.DiGraph()
    for key in topological_order(graph):
        data = graph.nodes[key]
        view.add_node(
            key,
            name=str(data.get("name", key)),
            site=_site(key),
            path="/".join(data.get("path", ())),
            kind=str(data.get("kind", "layer")),
            class_name=str(data.get("class_name", type(data.get("op")).__name__)),
            activation=str(data.get("activation") or ""),
            output_shape="; ".join(shape_text(s) for s in data.get("output_shapes", [None])),
            params=params_of(data.get("op")),
            order=float(data.get("order", 0)),
        )
    for parent, child, edge in graph.edges(data=True):
        feeds = ", ".join(f"{i}->{s}" for i, s in edge.get("feeds", []))
        view.add_edge(parent, child, feeds=feeds)
    view.graph["name"] = str(graph.graph.get("name", "model"))
    view.graph["inputs"] = json.dumps(input_keys(graph))
    view.graph["outputs"] = json.dumps([f"{r.node}[{r.index}]" for r in output_refs(graph)])
    return view


def node_label(data: dict, *, show_shapes: bool = True) -> str:
    """Three-line label of a `describe` node: name, class (+activation), shape."""
    cls = data["class_name"] + (f" ({data['activation']})" if data["activation"] else "")
    lines = [data["site"], cls]
    if show_shapes:
        lines.append(data["output_shape"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# DOT


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(
    model_or_graph: Any,
    *,
    highlight: set[str] | frozenset[str] = frozenset(),
    rankdir: str = "TB",
    show_shapes: bool = True,
    title: str | None = None,
) -> str:
    """Graphviz DOT text of a model's graph; nested models become clusters.

    Args:
        model_or_graph: a model or a graph from `kerasurgery.to_graph`.
        highlight: node keys to draw with a thick red border.
        rankdir: ``"TB"`` (top to bottom) or ``"LR"`` (left to right).
        show_shapes: put each node's output shape in its label.
        title: a label for the whole drawing; defaults to the model name.

    Returns:
        DOT source text.

    Example:
        >>> import keras
        >>> x = keras.Input((3,), name="x")
        >>> text = to_dot(keras.Model(x, keras.layers.Dense(2, name="d")(x), name="m"))
        >>> text.splitlines()[0], '"x" -> "d"' in text
        ('digraph "m" {', True)
    """
    view = describe(model_or_graph)
    name = view.graph["name"]
    lines = [
        f"digraph {_quote(name)} {{",
        f"  rankdir={rankdir};",
        f"  label={_quote(title or name)}; labelloc=t; fontname=Helvetica;",
        '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=10];',
        "  edge [arrowsize=0.7];",
    ]
    by_path: dict[str, list[str]] = defaultdict(list)
    for key, data in view.nodes(data=True):
        by_path[data["path"]].append(key)

    def node_line(key: str, indent: str) -> str:
        data = view.nodes[key]
        attrs = [f"label={_quote(node_label(data, show_shapes=show_shapes))}",
                 f'fillcolor="{fill_colour(data["class_name"], data["kind"])}"']
        if key in highlight:
            attrs.append('color="#d62728", penwidth=3')
        if data["kind"] == "op":
            attrs.append('style="rounded,filled,dashed"')
        return f"{indent}{_quote(key)} [{', '.join(attrs)}];"

    lines.extend(node_line(k, "  ") for k in by_path.pop("", []))
    for index, (path, keys) in enumerate(sorted(by_path.items())):
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(f'    label={_quote(path)}; style="rounded,dashed"; color="#888888";')
        lines.extend(node_line(k, "    ") for k in keys)
        lines.append("  }")
    for parent, child in view.edges:
        lines.append(f"  {_quote(parent)} -> {_quote(child)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# files


def _node_link(view: nx.DiGraph) -> dict:
    try:
        return nx.node_link_data(view, edges="edges")
    except TypeError:  # networkx < 3.4
        return nx.node_link_data(view)


def highlight_keys(graph: nx.DiGraph, selector: Any) -> set[str]:
    """Node keys of the points a selector names (addresses, globs, a predicate)."""
    if selector is None:
        return set()
    return {point.node for point in Resolver(graph).select(selector, what="highlight").values()}


def write_graph(
    model_or_graph: Any,
    path: str | os.PathLike,
    *,
    highlight: Any = None,
    title: str | None = None,
    show_shapes: bool = True,
) -> str:
    """Write a model's graph to a text file whose suffix picks the format.

    ``.dot``/``.gv``: DOT text (`to_dot`); ``.graphml``: GraphML of `describe`;
    ``.json``: node-link JSON of `describe`. Drawings are
    `kerasurgery.plot.save_graph`.

    Args:
        model_or_graph: a model or a graph from `kerasurgery.to_graph`.
        path: the file to write.
        highlight: a selector of points to mark (DOT only).
        title: a title for DOT; default the model's name.
        show_shapes: output shapes in the DOT boxes.

    Returns:
        The format written (the suffix without its dot).

    Raises:
        DataError: the suffix is not one of `TEXT_FORMATS`.
        AddressError: `highlight` names no point of the model.

    Example:
        >>> import keras, os, tempfile
        >>> x = keras.Input((3,), name="x")
        >>> path = os.path.join(tempfile.mkdtemp(), "m.json")
        >>> write_graph(keras.Model(x, keras.layers.Dense(2, name="d")(x)), path)
        'json'
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in TEXT_FORMATS:
        hint = " Drawings are written by `kerasurgery.plot.save_graph`." if suffix in IMAGE_FORMATS else ""
        raise DataError(
            f"Expected a graph file name ending in one of {', '.join(TEXT_FORMATS)}. "
            f"Received: {path!r}. The suffix picks the format, e.g. 'model.dot'.{hint}"
        )
    graph = as_graph(model_or_graph)
    keys = highlight_keys(graph, highlight)
    if suffix in (".dot", ".gv"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(to_dot(graph, highlight=keys, title=title, show_shapes=show_shapes))
    elif suffix == ".graphml":
        nx.write_graphml(describe(graph), path)
    else:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_node_link(describe(graph)), f, indent=1)
    return suffix[1:]
