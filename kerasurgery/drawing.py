"""The IR as something to look at or hand to other tools.

- `describe`: a plain-data copy of a graph (strings and numbers only, no
  operation objects), the form GraphML and JSON can hold.
- `to_dot`: Graphviz DOT text, nested models drawn as clusters.
- `layered_layout`: top-to-bottom positions for drawing without Graphviz.
- `write_graph`: write a model's graph to ``.dot``, ``.graphml``, ``.json``,
  or (through `kerasurgery.plot.graph`) ``.svg``/``.png``/``.pdf``.

Example:
    >>> import keras, kerasurgery as ks
    >>> from kerasurgery.drawing import describe
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

from kerasurgery.address import format_address, parse
from kerasurgery.errors import DataError
from kerasurgery.graph import as_graph, input_keys, output_refs, topological_order

#: Output formats `write_graph` understands, by file suffix.
GRAPH_FORMATS = (".dot", ".gv", ".graphml", ".json", ".svg", ".png", ".pdf")

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
    lower = class_name.lower()
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
# layout without Graphviz


def _ranks(view: nx.DiGraph, order: list[str]) -> dict[Any, int]:
    """Longest-path depth from the inputs; a source sits just above its first use."""
    rank: dict[str, int] = {}
    for key in order:
        parents = list(view.predecessors(key))
        rank[key] = 1 + max(rank[p] for p in parents) if parents else 0
    for key in order:
        children = list(view.successors(key))
        if not list(view.predecessors(key)) and children:
            rank[key] = max(0, min(rank[c] for c in children) - 1)
    return rank


def layered_layout(
    view: nx.DiGraph, *, sweeps: int = 4
) -> tuple[dict[str, tuple[float, float]], dict[tuple[str, str], list[tuple[float, float]]]]:
    """Top-to-bottom positions: one row per depth, rows ordered to cut crossings.

    Each node sits on the row of its longest path from an input (an input
    just above its first consumer). An edge that spans several rows gets a
    bend point on each row it crosses, which takes a place in that row like a
    node, so long edges go around boxes instead of through them. Within a row,
    places are ordered by the mean position of their neighbours (barycenter
    sweeps down and up), then centred. Rows and places are 1 apart; y
    decreases downwards.

    Args:
        view: a DAG (any attributes), e.g. from `describe`.
        sweeps: number of down-and-up ordering passes.

    Returns:
        ``(positions, bends)``: ``{node: (x, y)}`` and ``{(parent, child):
        [(x, y), ...]}`` bend points of the long edges, top to bottom.
    """
    order = list(nx.topological_sort(view))
    rank: dict[Any, int] = _ranks(view, order)
    layered = nx.DiGraph()
    layered.add_nodes_from(order)
    chains: dict[tuple[str, str], list[tuple]] = {}
    for parent, child in view.edges:
        chain = [("bend", parent, child, r) for r in range(rank[parent] + 1, rank[child])]
        for r, dummy in zip(range(rank[parent] + 1, rank[child]), chain):
            rank[dummy] = r
        nx.add_path(layered, [parent, *chain, child])
        chains[(parent, child)] = chain
    rows: dict[int, list] = defaultdict(list)
    for key in nx.topological_sort(layered):
        rows[rank[key]].append(key)
    pos = {k: float(i) for r in rows.values() for i, k in enumerate(r)}

    def reorder(row: list, neighbours) -> None:
        def centre(k) -> float:
            near = [pos[n] for n in neighbours(k)]
            return sum(near) / len(near) if near else pos[k]

        row.sort(key=lambda k: (centre(k), pos[k]))
        for i, k in enumerate(row):
            pos[k] = i - (len(row) - 1) / 2

    depth = max(rows) if rows else 0
    for _ in range(sweeps):
        for r in range(1, depth + 1):
            reorder(rows[r], layered.predecessors)
        for r in range(depth - 1, -1, -1):
            reorder(rows[r], layered.successors)
    for r in range(depth + 1):
        reorder(rows[r], lambda k: [])
    positions = {k: (pos[k], -float(rank[k])) for k in order}
    bends = {edge: [(pos[d], -float(rank[d])) for d in chain] for edge, chain in chains.items() if chain}
    return positions, bends


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
    from kerasurgery.address import Resolver

    return {point.node for point in Resolver(graph).select(selector, what="highlight").values()}


def write_graph(
    model_or_graph: Any,
    path: str | os.PathLike,
    *,
    highlight: Any = None,
    title: str | None = None,
    show_shapes: bool = True,
    engine: str = "auto",
) -> str:
    """Write a model's graph to a file whose suffix picks the format.

    ``.dot``/``.gv``: DOT text (`to_dot`); ``.graphml``: GraphML of `describe`;
    ``.json``: node-link JSON of `describe`; ``.svg``/``.png``/``.pdf``: a
    drawing (`kerasurgery.plot.save_graph`; Graphviz when installed).

    Args:
        model_or_graph: a model or a graph from `kerasurgery.to_graph`.
        path: the file to write.
        highlight: addresses or globs of points to mark (DOT and drawings).
        title: a title for DOT and drawings; default the model's name.
        show_shapes: output shapes in the boxes (DOT and drawings).
        engine: ``"auto"``, ``"graphviz"`` or ``"matplotlib"`` for drawings.

    Returns:
        The format written (the suffix without its dot).

    Raises:
        DataError: the suffix is not one of `GRAPH_FORMATS`.
        AddressError: `highlight` names no point of the model.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in GRAPH_FORMATS:
        raise DataError(
            f"Expected a graph file name ending in one of {', '.join(GRAPH_FORMATS)}. "
            f"Received: {path!r}. The suffix picks the format, e.g. 'model.svg'."
        )
    graph = as_graph(model_or_graph)
    keys = highlight_keys(graph, highlight)
    if suffix in (".dot", ".gv"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(to_dot(graph, highlight=keys, title=title, show_shapes=show_shapes))
    elif suffix == ".graphml":
        nx.write_graphml(describe(graph), path)
    elif suffix == ".json":
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_node_link(describe(graph)), f, indent=1)
    else:
        from kerasurgery import plot

        plot.save_graph(graph, path, highlight=highlight, title=title, show_shapes=show_shapes, engine=engine)
    return suffix[1:]
