"""In-graph reductions of `calibrate`: how each point is reduced inside the compiled step.

Each point gets a `Layout` once, from its static shape: its channel axis,
and, when it is sampled, which contiguous blocks of each input sample are
gathered (spread evenly over the sample and rotating from sample to sample so
that every position is covered over the dataset). `reduce_all` then turns a
batch of every point into a few numbers per point with `keras.ops`: over
every value, the count, min, max, sum, and sum of squares centred on the
batch's mean (of the finite values), and how many values were NaN, +inf and
-inf; over the sampled values, the exact zeros and a histogram of the finite
ones (on the grid of `kerasurgery.stats.grid`).

Non-finite values cost nothing while there are none: every point's values
are summed anyway, and only a batch where a sum is not finite is reduced
again, by a second compiled step, with the reductions that leave them out
(``reduce_all(..., finite_only=True)``; see `kerasurgery.stats.calibrate`).
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


def _over_rows(reduce: Any, rows: Any, per_channel: bool, fold: int) -> Any:
    """`reduce` over the rows of a ``(rows, channels)`` tensor: shape ``(channels,)``
    per channel, or ``(1,)`` for the whole tensor (one full reduction)."""
    if not per_channel:
        return ops.reshape(reduce(rows), (1,))
    return _columns(reduce, rows, fold)


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


def _all_finite(rows: Any, lay: Layout, total: Any, extremes: tuple | None) -> dict:
    """The exact statistics of every value, valid when all of them are finite.

    `total` is their sum (already computed); ``m2``, the sum of squared
    deviations from this batch's mean (``Sub`` then ``Square`` with no other
    consumer: TensorFlow fuses them into one ``SquaredDifference`` pass).
    `extremes`, if given, is the point's ``(min, max)`` (see
    `derived_extremes`).
    """
    per_channel = lay.axis is not None
    mean = total / ops.cast(ops.maximum(ops.shape(rows)[0], 1), "float32")
    if extremes is None:
        extremes = (_over_rows(ops.min, rows, per_channel, lay.fold), _over_rows(ops.max, rows, per_channel, lay.fold))
    none = ops.zeros((lay.channels,), "int32")
    return {
        "min": extremes[0], "max": extremes[1], "sum": total,
        "m2": _over_rows(ops.sum, ops.square(rows - mean), per_channel, lay.fold),
        "nan": none, "posinf": none, "neginf": none,
    }


def _finite_only(rows: Any, lay: Layout) -> dict:
    """The exact statistics of the finite values, and how many values were NaN, +inf, -inf.

    Only run again for a batch with a non-finite value (see `reduce_all`):
    it costs several more passes than `_all_finite`.
    """
    per_channel = lay.axis is not None

    def over(reduce: Any, v: Any) -> Any:
        return _over_rows(reduce, v, per_channel, lay.fold)

    def how_many(mask: Any) -> Any:
        return over(ops.sum, ops.cast(mask, "int32"))

    finite = ops.isfinite(rows)
    total = over(ops.sum, ops.where(finite, rows, 0.0))
    mean = total / ops.cast(ops.maximum(how_many(finite), 1), "float32")
    return {
        "min": over(ops.min, ops.where(finite, rows, float("inf"))),
        "max": over(ops.max, ops.where(finite, rows, float("-inf"))),
        "sum": total,
        "m2": over(ops.sum, ops.where(finite, ops.square(rows - mean), 0.0)),
        "nan": how_many(ops.isnan(rows)),
        "posinf": how_many(ops.equal(rows, float("inf"))),
        "neginf": how_many(ops.equal(rows, float("-inf"))),
    }


@dataclasses.dataclass
class _Point:
    """One point reduced in the graph, but for its histogram.

    Attributes:
        values: the rows ``(n, channels)`` the sampled statistics describe
            (all of them, or the sample).
        stats: ``count`` (values per channel), ``sampled`` (rows of
            `values`), ``min``, ``max``, ``sum``, ``m2`` (of the finite
            values), ``nan``, ``posinf``, ``neginf`` (see `_all_finite` and
            `_finite_only`), ``zeros`` (of `values`) and, only where the
            per-sample shape is not static, ``shape`` (this batch's shape).
    """

    values: Any
    stats: dict


def _point(t: Any, lay: Layout, offsets: Any, finite_only: bool, source: _Point | None = None,
           fn: Any = None) -> _Point:
    """In-graph reductions of one point, but for its histogram.

    `finite_only` chooses `_finite_only` over `_all_finite`. If `source` is
    given, this point's min and max are ``fn`` of the source point's (see
    `derived_extremes`), which holds when every value is finite.
    """
    x = ops.cast(t, "float32")
    if lay.axis is not None and lay.axis != len(t.shape) - 1:
        x = ops.moveaxis(x, lay.axis, -1)
    rows = ops.reshape(x, (-1, lay.channels))
    if finite_only:
        exact = _finite_only(rows, lay)
    else:
        extremes = None if source is None else (fn(source.stats["min"]), fn(source.stats["max"]))
        exact = _all_finite(rows, lay, _over_rows(ops.sum, rows, lay.axis is not None, lay.fold), extremes)
    if lay.sampled:
        values, fold = _gather(x, lay, offsets), lay.sample_fold
    else:
        values, fold = rows, lay.fold
    zeros = _over_rows(ops.sum, ops.cast(ops.equal(values, 0.0), "int32"), lay.axis is not None, fold)
    stats = {"count": ops.cast(ops.shape(rows)[0], "int32"), "sampled": ops.cast(ops.shape(values)[0], "int32"),
             **exact, "zeros": zeros}
    if lay.rows is None:  # the shape of this batch, only where the per-sample shape is not static
        stats["shape"] = ops.stack([ops.cast(d, "int32") for d in ops.shape(t)])
    return _Point(values, stats)


def reduce_all(outputs: dict, lays: dict[str, Layout], derived: dict, bins: int, running: Any,
                first: Any, *, finite_only: bool = False) -> dict:
    """In-graph statistics of every point: ``{key: stats}`` with the keys of
    `_Point.stats` plus the histogram's ``exponent``, ``start`` and ``counts``.

    Without `finite_only` the statistics hold only if every value is finite,
    which the host checks on the sums (a sum is finite if and only if every
    value it adds up is, barring float32 overflow); with it, NaN and infinite
    values are counted and left out (several more passes). The histogram
    windows of all points are computed together, on their concatenated
    ranges (one set of small ops instead of one per point).
    `running` is ``(3, channels)``: every point's running ``(lo, hi, e)``,
    concatenated; `first` ``(rows, points)``: the first gathered block of
    each input sample (see `_gather`).
    """
    reduced: dict[str, _Point] = {}
    position = {k: j for j, k in enumerate(lays)}

    def reduce(k: str) -> _Point:
        if k not in reduced:
            source, fn = (None, None) if finite_only else derived.get(k, (None, None))
            reduced[k] = _point(outputs[k], lays[k], first[:, position[k]], finite_only,
                                None if source is None else reduce(source), fn)
        return reduced[k]

    for k in lays:
        reduce(k)
    lo = ops.concatenate([reduced[k].stats["min"] for k in lays], axis=0)
    hi = ops.concatenate([reduced[k].stats["max"] for k in lays], axis=0)
    e, start, inv = grid.window(lo, hi, bins, (running[0], running[1], running[2]))
    result = {}
    at = 0
    for k, lay in lays.items():
        point = reduced[k]
        part = slice(at, at + lay.channels)
        at += lay.channels
        counts = grid.count(point.values, inv[part], start[part], bins, finite_only=finite_only)
        result[k] = {**point.stats, "exponent": e[part], "start": start[part], "counts": counts}
    return result

