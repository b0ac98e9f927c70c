"""`copy_pass`: every operation replaced by an independent copy with the same state."""

from __future__ import annotations

from typing import Any

import networkx as nx

from kerasurgery.ir.clone import clone_op
from kerasurgery.ir.schema import copy_graph


def copy_pass(graph: nx.DiGraph) -> nx.DiGraph:
    """Every operation replaced by an independent clone with equal weights."""
    g = copy_graph(graph)
    clones: dict[int, tuple[Any, bool]] = {}
    for key in list(g.nodes):
        data = g.nodes[key]
        if data.get("kind") == "input":
            continue
        op = data["op"]
        if id(op) not in clones:
            clones[id(op)] = clone_op(op)
        data["op"], pending = clones[id(op)]
        if pending:
            data["state_from"] = op
    return g
