"""Which channels to delete: scores per output channel, and the ranking they give.

Scores by weights (``"l1"``, ``"l2"``: the norm of each output channel's
kernel slice, as keras-surgeon users computed by hand) need only the model;
scores by activations (``"mean"``, ``"apoz"``: the average percentage of
zeros after a ReLU) read a `kerasurgery.calibrate` result computed with
``per_channel=True``. Delete the first channels of `rank_channels` with
`kerasurgery.delete_channels`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasurgery.errors import TransformError
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.resolve import Resolver
from kerasurgery.passes import channel_rules as rules
from kerasurgery.passes.channel_weights import gates, weight_axes
from kerasurgery.stats.results import Calibration, PointStats

#: What `by` accepts, and whether a low score means "less important".
METHODS = {"l1": "weights", "l2": "weights", "mean": "stats", "apoz": "stats"}


def _kernel_scores(op: Any, norm: str) -> np.ndarray:
    """Norm of each output channel's slice of `op`'s main kernel."""
    axes = weight_axes(op)
    name = next((n for n in ("pointwise_kernel", "kernel", "embeddings") if n in axes), "")
    variable = next((v for v in op.weights if v.name == name), None)
    if variable is None:
        raise TransformError(
            f"Expected a Dense, convolution, recurrent or Embedding layer to score by weights. Received: "
            f"'{op.name}' ({type(op).__name__}). Score the layer whose channels you delete, or use "
            "by='mean'/'apoz'."
        )
    value = np.abs(np.asarray(keras.ops.convert_to_numpy(variable), np.float64))
    if norm == "l2":
        value = value**2
    if isinstance(op, rules.DEPTHWISE):  # output channel c*m+j is kernel[..., c, j]
        value = value.reshape(*value.shape[:-2], -1)
    axis = -1 if isinstance(op, rules.DEPTHWISE) else next(a for a, what in axes[name] if what in ("out", "gates"))
    moved = np.moveaxis(value, axis, -1)
    scores = moved.reshape(-1, moved.shape[-1]).sum(axis=0)
    if isinstance(op, rules.RECURRENT):  # every gate block of a unit counts
        scores = scores.reshape(gates(op), -1).sum(axis=0)
    return np.sqrt(scores) if norm == "l2" else scores


def _stats_for(stats: Any, point: str) -> PointStats:
    if isinstance(stats, PointStats):
        found = stats
    elif isinstance(stats, (Calibration, dict)):
        if point not in stats:
            raise TransformError(
                f"Expected `stats` to hold statistics of {point!r}. Received: statistics of "
                f"{sorted(stats)[:8]}. Calibrate that point (per_channel=True), or pass stats[address] of a "
                "point with the same channels (such as the ReLU after it)."
            )
        found = stats[point]
    else:
        raise TransformError(
            "Expected `stats` as the result of kerasurgery.calibrate(..., per_channel=True) or one of its "
            f"PointStats. Received: {type(stats).__name__}."
        )
    if found.channel_axis is None:
        raise TransformError(
            f"Expected per-channel statistics. Received: statistics of {found.address!r} per tensor. "
            "Call kerasurgery.calibrate(model, data, points, per_channel=True)."
        )
    return found


def channel_scores(model: Any, point: str, by: str = "l1", *, stats: Any = None) -> np.ndarray:
    """One score per output channel of `point`; `rank_channels` deletes low scores first.

    Args:
        model: a model (or a graph from `kerasurgery.to_graph`).
        point: the address of a Dense, convolution (any kind), recurrent or Embedding layer.
        by: ``"l1"`` or ``"l2"``: the norm of each output channel's kernel
            slice (for a separable convolution, its pointwise kernel);
            ``"mean"``: the channel's mean activation; ``"apoz"``: the
            fraction of the channel's activations that are exactly zero.
        stats: for ``"mean"`` and ``"apoz"``: the result of
            ``kerasurgery.calibrate(..., per_channel=True)`` holding `point`,
            or the `PointStats` of another point with the same channels (the
            ReLU after a convolution and its BatchNormalization, where zeros
            appear).

    Returns:
        A float64 array of one score per channel. For ``"apoz"`` the score is
        ``1 - zero fraction``, so that low always means "delete first".

    Raises:
        TransformError: unknown `by`, a layer without kernel, missing or
            per-tensor statistics, or statistics with another channel count.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> model.get_layer("d").set_weights([np.array([[1., -4], [2, 0], [0, 1]]), np.zeros(2)])
        >>> ks.channel_scores(model, "d", by="l1")
        array([3., 5.])
    """
    if by not in METHODS:
        raise TransformError(f"Expected `by` among {sorted(METHODS)}. Received: {by!r}.")
    graph = graph_for(model, [point] if isinstance(point, str) else [])
    resolved = Resolver(graph).resolve_one(point)
    data = graph.nodes[resolved.node]
    shape = rules.shape_of(graph, (resolved.node, resolved.index))
    size = shape[rules.channel_axis(data.get("op"), len(shape))] if len(shape) > 1 else None
    if METHODS[by] == "weights":
        if data.get("kind") == "input":
            raise TransformError(f"Expected a layer to score by weights. Received: {point!r}, a model input.")
        return _kernel_scores(data["op"], by)
    if stats is None:
        raise TransformError(
            f"Expected `stats` for by={by!r}: the result of kerasurgery.calibrate(model, data, points, "
            "per_channel=True). Received: None."
        )
    found = _stats_for(stats, point)
    values = np.asarray(found.mean if by == "mean" else 1.0 - np.asarray(found.zero_fraction), np.float64)
    if size is not None and values.shape != (size,):
        raise TransformError(
            f"Expected statistics of {size} channels for {point!r}. Received: {values.shape[0]} channels "
            f"of {found.address!r}."
        )
    return values


def rank_channels(model: Any, point: str, by: str = "l1", *, stats: Any = None) -> np.ndarray:
    """The channels of `point`, least important first (lowest `channel_scores`; ties by index).

    Delete the first ``k`` with ``kerasurgery.delete_channels(model, point,
    rank_channels(model, point)[:k])``. Arguments as for `channel_scores`.

    Returns:
        An int array: every channel index once.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, name="d")(x))
        >>> model.get_layer("d").set_weights([np.array([[1., 0, 4], [2, 1, 0], [0, 0, 1]]), np.zeros(3)])
        >>> ks.rank_channels(model, "d", by="l1")
        array([1, 0, 2])
    """
    scores = channel_scores(model, point, by, stats=stats)
    return np.argsort(scores, kind="stable")
