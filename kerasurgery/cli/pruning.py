"""What ``kerasurgery prune`` deletes: the channels of each point, chosen or ranked.

Points are pruned one after the other on the model's graph
(`kerasurgery.passes.channels.delete_channels_pass` keeps node addresses,
nested paths included), each on what the previous ones left, so indices
(given or ranked) always refer to the channels a point has at its turn.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx

import kerasurgery as ks
from kerasurgery.errors import DataError
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.passes import channel_rules as rules
from kerasurgery.passes.channels import delete_channels_pass, resolve_point


def channel_count(graph: nx.DiGraph, point: str) -> int:
    """The number of channels of `point` (on its channel axis)."""
    node, index = resolve_point(graph, point)
    shape = rules.shape_of(graph, (node, index))
    return int(shape[rules.channel_axis(graph.nodes[node].get("op"), len(shape))])


def choose(graph: nx.DiGraph, point: str, *, channels: list[int] | None, fraction: float | None, by: str,
           data: Any) -> list[int]:
    """The channels of `point` to delete: `channels`, or the lowest-ranked `fraction` (rounded down)."""
    if channels is not None or fraction is None:
        return sorted(set(channels or []))
    size = channel_count(graph, point)
    count = math.floor(fraction * size)
    if count < 1:
        raise DataError(
            f"Expected --fraction to delete at least one of the {size} channels of {point!r}. Received: "
            f"--fraction {fraction} (rounds down to 0). Use a larger fraction, or --channels."
        )
    stats = None
    if by in ("mean", "apoz"):
        if data is None:
            raise DataError(f"Expected --data with --by {by} (statistics of the activations). Received: none.")
        stats = ks.calibrate(ks.to_model(graph), data, [point], per_channel=True, sample=None, progress=False)
    return sorted(int(c) for c in ks.rank_channels(graph, point, by=by, stats=stats)[:count])


def prune(model: Any, points: list[str], *, channels: list[int] | None, fraction: float | None, by: str,
          data: Any) -> tuple[Any, list[tuple[str, int, list[int]]]]:
    """Delete channels at each point in turn; returns ``(new model, [(point, channels before, deleted)])``."""
    graph = graph_for(model, points)
    report = []
    for point in points:
        size = channel_count(graph, point)
        chosen = choose(graph, point, channels=channels, fraction=fraction, by=by, data=data)
        graph = delete_channels_pass(graph, point, chosen, copy=False)
        report.append((point, size, chosen))
    return ks.to_model(graph, name=model.name), report
