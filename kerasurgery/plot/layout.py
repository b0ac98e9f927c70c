"""`layered_layout`: top-to-bottom positions for drawing a graph without Graphviz."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import networkx as nx


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
