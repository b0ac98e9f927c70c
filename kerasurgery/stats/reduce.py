"""In-graph reductions of `calibrate`: how each point is reduced inside the compiled step.

Each point gets a `Layout` once, from its static shape: its channel axis,
and, when it is sampled, which contiguous blocks of each input sample are
gathered (spread evenly over the sample and rotating from sample to sample so
that every position is covered over the dataset). `reduce_all` then turns a
batch of every point into a few numbers per point with `keras.ops`: min and
max of every value, mean, variance, zeros and a histogram (on the grid of
`kerasurgery.stats.grid`) of the sampled values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
from keras import ops

from kerasurgery.ir.from_keras import to_graph
from kerasurgery.ir.schema import Ref
from kerasurgery.layers import kinds
from kerasurgery.stats import grid

_BLOCK_VALUES = 64  # values per gathered block at most (256 bytes of float32): contiguous reads, several spots per sample
_FOLD = 64  # rows per middle-axis step of per-channel reductions (3x faster than reducing axis 0 alone)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


# ---------------------------------------------------------------------------
# layout: decided once per point, from its static shape


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one point is reduced.

    Attributes:
        axis: its channel axis (None: statistics of the whole tensor).
        channels: values per row (1 for the whole tensor).
        rows: rows per input sample (None if the shape is not static).
        block: rows per gathered block; blocks: blocks per input sample.
        take: blocks gathered per input sample (0: no sampling, every value).
        spacing: blocks between two gathered blocks of one input sample.
        step: shift of the first gathered block from one input sample to the
            next (coprime to `blocks`, near the golden section of it: over
            consecutive samples the gathered positions cover every block).
        fold: rows per middle-axis step of the per-channel reductions.
        shape: the per-sample shape (None where not static).
    """

    axis: int | None
    channels: int
    rows: int | None
    block: int = 1
    blocks: int = 1
    take: int = 0
    spacing: int = 1
    step: int = 0
    fold: int = 1
    shape: tuple = ()

    @property
    def sampled(self) -> bool:
        return self.take > 0

    @property
    def sample_fold(self) -> int:
        return _largest_divisor(self.take * self.block, _FOLD) if self.axis is not None else 1


def _largest_divisor(n: int, limit: int) -> int:
    """The largest divisor of `n` that is at most `limit` (at least 1)."""
    best = 1
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            best = max([best] + [c for c in (d, n // d) if c <= limit])
    return best


def _coprime_near(n: int, target: float) -> int:
    """The integer in ``[1, n)`` closest to `target` that is coprime to `n` (1 if n <= 2)."""
    if n <= 2:
        return 1
    base = min(max(round(target), 1), n - 1)
    for delta in range(n):
        for c in (base - delta, base + delta):
            if 1 <= c < n and math.gcd(c, n) == 1:
                return c
    return 1


def _channel_axis(tensor: Any, per_channel: bool, axis: int) -> int | None:
    """The (non-negative) channel axis of a point, or None for per-tensor statistics."""
    rank = len(tensor.shape)
    if not per_channel or rank < 2:
        return None
    axis = axis + rank if axis < 0 else axis
    if not 1 <= axis < rank or tensor.shape[axis] is None:
        return None
    return axis


def layout(tensor: Any, per_channel: bool, channel_axis: int, sample: int | None) -> Layout:
    axis = _channel_axis(tensor, per_channel, channel_axis)
    channels = 1 if axis is None else int(tensor.shape[axis])
    dims = tuple(tensor.shape[1:])
    if any(d is None for d in dims) or channels == 0:
        return Layout(axis, channels, None, shape=dims)
    rows = math.prod(dims) // channels
    fold = _largest_divisor(rows, _FOLD) if axis is not None and rows else 1
    wanted = None if sample is None else max(1, sample // channels)  # rows per input sample
    if wanted is None or rows <= wanted:
        return Layout(axis, channels, rows, fold=fold, shape=dims)
    block = _largest_divisor(rows, max(1, min(wanted, _BLOCK_VALUES // channels)))
    blocks = rows // block
    take = -(-wanted // block)
    if take >= blocks:
        return Layout(axis, channels, rows, fold=fold, shape=dims)
    step = _coprime_near(blocks, _GOLDEN * blocks)
    return Layout(axis, channels, rows, block, blocks, take, blocks // take, step, fold, dims)


def _monotone(op: Any, dtype: str) -> Any | None:
    """`op`'s function if `op` is an activation layer computing a non-decreasing
    elementwise function that is exact in float32 (the ReLU family), else None.

    For such an ``f``, ``min(f(x)) == f(min(x))`` and ``max(f(x)) == f(max(x))``
    bit for bit: the output's range follows from the input's.
    """
    exact = dtype == "float32"
    if isinstance(op, keras.layers.ReLU):
        slope, threshold, top = float(op.negative_slope), float(op.threshold), op.max_value
        ok = slope >= 0 and threshold >= 0 and (top is None or float(top) >= threshold) and (slope == 0 or exact)
    elif isinstance(op, keras.layers.LeakyReLU):
        ok = float(op.negative_slope) >= 0 and exact
    elif type(op) is keras.layers.Activation:
        ok = kinds.activation_name(op.activation) in ("relu", "relu6", "linear")
    else:
        ok = False
    return op.call if ok else None


def derived_extremes(probe: keras.Model, lays: dict[str, Layout]) -> dict[str, tuple[str, Any]]:
    """``{key: (source key, f)}`` for points whose min and max are ``f`` of another point's.

    A point qualifies when it is the output of a `_monotone` activation layer
    whose one input is another point with the same layout.
    """
    graph = to_graph(probe)
    outputs = graph.graph["outputs"]
    if not isinstance(outputs, dict):
        return {}
    by_ref = {(ref.node, ref.index): key for key, ref in outputs.items() if isinstance(ref, Ref) and key in lays}
    derived = {}
    for key, lay in lays.items():
        ref = outputs.get(key)
        if not isinstance(ref, Ref):
            continue
        fn = _monotone(graph.nodes[ref.node].get("op"), keras.backend.standardize_dtype(probe.output[key].dtype))
        feeds = [(u, f) for u, _, d in graph.in_edges(ref.node, data=True) for f in d["feeds"]]
        if fn is None or len(feeds) != 1:
            continue
        (source_node, (index, _slot)), = feeds
        source = by_ref.get((source_node, index))
        if source is not None and source != key and (lays[source].axis, lays[source].channels) == (lay.axis, lay.channels):
            derived[key] = (source, fn)
    return derived


# ---------------------------------------------------------------------------
# in the graph


def _columns(reduce: Any, v: Any, fold: int) -> Any:
    """`reduce` (``ops.sum``, ``ops.min``, ...) over the rows of a ``(rows, channels)``
    tensor, `fold` rows at a time first (a middle-axis reduction: faster than
    reducing axis 0 alone when there are many channels)."""
    if fold > 1:
        v = reduce(ops.reshape(v, (-1, fold, v.shape[-1])), axis=1)
    return reduce(v, axis=0)


def _extremes(x: Any, lay: Layout) -> tuple[Any, Any]:
    """Exact min and max of every value of `x` (channels last), per channel or whole."""
    if lay.axis is None:
        return ops.reshape(ops.min(x), (1,)), ops.reshape(ops.max(x), (1,))
    rows = ops.reshape(x, (-1, lay.channels))
    return _columns(ops.min, rows, lay.fold), _columns(ops.max, rows, lay.fold)


def _gather(x: Any, lay: Layout, offsets: Any) -> Any:
    """The sampled rows of `x` (channels last): `take` blocks of each input sample.

    `offsets` (int32, one per input sample of the batch) is the first block
    gathered from each sample; the others follow every `spacing` blocks,
    wrapping around.
    """
    blocks = ops.reshape(x, (-1, lay.block * lay.channels))
    sample = ops.cumsum(ops.ones_like(offsets)) - 1
    within = ops.mod(ops.expand_dims(offsets, 1) + ops.arange(lay.take, dtype="int32") * lay.spacing, lay.blocks)
    index = ops.reshape(ops.expand_dims(sample * lay.blocks, 1) + within, (-1,))
    return ops.reshape(ops.take(blocks, index, axis=0), (-1, lay.channels))


def _reduce(t: Any, lay: Layout, offsets: Any, extremes: tuple | None = None) -> tuple:
    """In-graph reductions of one point, but for the histogram.

    Returns ``(values, stats)``: `values` the rows ``(n, channels)`` the
    distribution statistics describe (all, or the sample), and `stats` a dict
    with ``count`` (rows seen by min and max: all of them), ``n``, ``min``,
    ``max``, ``mean``, ``var``, ``zeros`` and, only where the per-sample shape
    is not static, ``shape`` (this batch's shape).
    `extremes`, if given, is the point's exact ``(min, max)`` (see
    `_derived_extremes`).
    """
    x = ops.cast(t, "float32")
    if lay.axis is not None and lay.axis != len(t.shape) - 1:
        x = ops.moveaxis(x, lay.axis, -1)
    lo, hi = _extremes(x, lay) if extremes is None else extremes
    everything = ops.reshape(x, (-1, lay.channels))
    if lay.sampled:
        values, fold = _gather(x, lay, offsets), lay.sample_fold
    else:
        values, fold = everything, lay.fold
    n = ops.shape(values)[0]
    mean = _columns(ops.sum, values, fold) / ops.cast(n, "float32")
    var = _columns(ops.sum, ops.square(values - mean), fold) / ops.cast(n, "float32")
    zeros = _columns(ops.sum, ops.cast(ops.equal(values, 0.0), "int32"), fold)
    count = ops.cast(ops.shape(everything)[0], "int32")
    stats = {"count": count, "n": ops.cast(n, "int32"), "min": lo, "max": hi, "mean": mean, "var": var, "zeros": zeros}
    if lay.rows is None:  # the shape of this batch, only where the per-sample shape is not static
        stats["shape"] = ops.stack([ops.cast(d, "int32") for d in ops.shape(t)])
    return values, stats


def reduce_all(outputs: dict, lays: dict[str, Layout], derived: dict, bins: int, running: Any,
                first: Any) -> dict:
    """In-graph statistics of every point: ``{key: stats}`` with the keys of
    `_reduce` plus the histogram's ``exponent``, ``start`` and ``counts``.

    The histogram windows of all points are computed together, on their
    concatenated ranges (one set of small ops instead of one per point).
    `running` is ``(3, channels)``: every point's running ``(lo, hi, e)``,
    concatenated; `first` ``(rows, points)``: the first gathered block of
    each input sample (see `_gather`).
    """
    reduced: dict = {}
    position = {k: j for j, k in enumerate(lays)}

    def reduce(k: str) -> tuple:
        if k not in reduced:
            extremes = None
            if k in derived:
                source, fn = derived[k]
                lo, hi = reduce(source)[1]["min"], reduce(source)[1]["max"]
                extremes = (fn(lo), fn(hi))
            reduced[k] = _reduce(outputs[k], lays[k], first[:, position[k]], extremes)
        return reduced[k]

    for k in lays:
        reduce(k)
    lo = ops.concatenate([reduced[k][1]["min"] for k in lays], axis=0)
    hi = ops.concatenate([reduced[k][1]["max"] for k in lays], axis=0)
    e, start, inv = grid.window(lo, hi, bins, (running[0], running[1], running[2]))
    result = {}
    at = 0
    for k, lay in lays.items():
        values, stats = reduced[k]
        part = slice(at, at + lay.channels)
        at += lay.channels
        counts = grid.count(values, inv[part], start[part], bins)
        result[k] = {**stats, "exponent": e[part], "start": start[part], "counts": counts}
    return result
