"""`check_graph`: is a graph well formed? (the ``lint`` of the IR)

Run by `to_model` before building, and by the tests after every pass.
"""

from __future__ import annotations

from collections import defaultdict

import networkx as nx

from kerasurgery.errors import GraphError
from kerasurgery.ir.schema import Ref, input_keys, output_refs, template_slots


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
        kerasurgery.errors.GraphError: Expected a well-formed graph (see `kerasurgery.check_graph`). Received: 1 problem(s):
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
    for alias, ref in (graph.graph.get("scores") or {}).items():
        if not isinstance(ref, Ref) or ref.node not in graph:
            problems.append(f"the scores of {alias!r} name {ref!r}, which is not an output of a node")
    for alias, refs in (graph.graph.get("aliases") or {}).items():
        for ref in refs:
            if not isinstance(ref, Ref) or ref.node not in graph:
                problems.append(f"alias {alias!r} names {ref!r}, which is not an output of a node")
    if problems:
        raise GraphError(problems)
