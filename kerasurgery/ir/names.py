"""`Names`: the one authority that makes new operation names unique."""

from __future__ import annotations

import networkx as nx


class Names:
    """Makes operation names unique among those already used in a graph.

    Example:
        >>> import networkx as nx
        >>> names = Names(nx.DiGraph())
        >>> names.make("dense_activation"), names.make("dense_activation")
        ('dense_activation', 'dense_activation_1')
    """

    def __init__(self, graph: nx.DiGraph):
        self.taken = {d["op"].name for _, d in graph.nodes(data=True) if "op" in d}
        self.taken |= {d.get("name") for _, d in graph.nodes(data=True) if d.get("name")}

    def make(self, base: str) -> str:
        base = base.replace("/", "_")
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name
