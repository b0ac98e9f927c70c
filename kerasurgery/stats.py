"""`calibrate`: streaming statistics of many points over a dataset.

Each batch goes through one compiled step: the probe's tensors (see
`kerasurgery.collect`) are reduced *inside the graph* with `keras.ops`, so
only a few numbers per point leave the graph and no activation is ever kept.
On the host, batch results merge into running statistics in float64 (Chan's
formula for mean and variance; histograms on a shared power-of-two grid, see
`kerasurgery.histogram`). The same merge combines the statistics of two shards
into those of the whole.

Cost. Every statistic is a pass over every value of every point, and on a CPU
a pass costs about a third of the forward pass that produced the value, so
exact statistics of every point (min, max, mean, variance, zeros and the
histogram: about 14 passes) cost 4-6 forward passes. Hence `sample`: min,
max and the counts always see every value (2 passes), while the histogram,
percentiles, mean, std and zero fraction are computed from at most `sample`
values of each point per input sample, taken as contiguous blocks (a gather
that reads only those blocks), spread evenly over the sample and rotating from
sample to sample so that every position is covered over the dataset. Points
with fewer values per sample are exact. And where a point is the output of a
ReLU-family activation layer whose input is also a point, its min and max are
that function of the input's min and max (exact, and one pass less each).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasurgery import _backend, kinds
from kerasurgery import histogram as grid
from kerasurgery.address import Selector
from kerasurgery.data import adapt, check_batch_size
from kerasurgery.errors import DataError
from kerasurgery.graph import Ref, to_graph
from kerasurgery.pointstats import (
    DEFAULT_PERCENTILES,
    Calibration,
    PointStats,
    _Moments,
    merge,
)
from kerasurgery.runner import plan_for, run

__all__ = ["DEFAULT_SAMPLE", "Calibration", "PointStats", "calibrate", "merge"]

DEFAULT_SAMPLE = 256
_BLOCK_VALUES = 64  # values per gathered block at most (256 bytes of float32): contiguous reads, several spots per sample
_FOLD = 64  # rows per middle-axis step of per-channel reductions (3x faster than reducing axis 0 alone)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0

# ---------------------------------------------------------------------------
# layout: decided once per point, from its static shape


@dataclasses.dataclass(frozen=True)
class _Layout:
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


def _layout(tensor: Any, per_channel: bool, channel_axis: int, sample: int | None) -> _Layout:
    axis = _channel_axis(tensor, per_channel, channel_axis)
    channels = 1 if axis is None else int(tensor.shape[axis])
    dims = tuple(tensor.shape[1:])
    if any(d is None for d in dims) or channels == 0:
        return _Layout(axis, channels, None, shape=dims)
    rows = math.prod(dims) // channels
    fold = _largest_divisor(rows, _FOLD) if axis is not None and rows else 1
    wanted = None if sample is None else max(1, sample // channels)  # rows per input sample
    if wanted is None or rows <= wanted:
        return _Layout(axis, channels, rows, fold=fold, shape=dims)
    block = _largest_divisor(rows, max(1, min(wanted, _BLOCK_VALUES // channels)))
    blocks = rows // block
    take = -(-wanted // block)
    if take >= blocks:
        return _Layout(axis, channels, rows, fold=fold, shape=dims)
    step = _coprime_near(blocks, _GOLDEN * blocks)
    return _Layout(axis, channels, rows, block, blocks, take, blocks // take, step, fold, dims)


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


def _derived_extremes(probe: keras.Model, lays: dict[str, _Layout]) -> dict[str, tuple[str, Any]]:
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


def _extremes(x: Any, lay: _Layout) -> tuple[Any, Any]:
    """Exact min and max of every value of `x` (channels last), per channel or whole."""
    if lay.axis is None:
        return ops.reshape(ops.min(x), (1,)), ops.reshape(ops.max(x), (1,))
    rows = ops.reshape(x, (-1, lay.channels))
    return _columns(ops.min, rows, lay.fold), _columns(ops.max, rows, lay.fold)


def _gather(x: Any, lay: _Layout, offsets: Any) -> Any:
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


def _reduce(t: Any, lay: _Layout, offsets: Any, extremes: tuple | None = None) -> tuple:
    """In-graph reductions of one point, but for the histogram.

    Returns ``(values, (count, n, min, max, mean, var, zeros), shape)``:
    `values` the rows ``(n, channels)`` the distribution statistics describe
    (all, or the sample), `count` the rows seen by min and max (all of them),
    `shape` ``(batch shape,)`` if the per-sample shape is not static, else ``()``.
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
    # the shape of this batch, only where the per-sample shape is not static
    shape = () if lay.rows is not None else (ops.stack([ops.cast(d, "int32") for d in ops.shape(t)]),)
    return values, (count, ops.cast(n, "int32"), lo, hi, mean, var, zeros), shape


def _reduce_all(outputs: dict, lays: dict[str, _Layout], derived: dict, bins: int, running: Any,
                first: Any) -> dict:
    """In-graph statistics of every point: ``{key: (count, n, min, max, mean, var, zeros, e, start, counts,
    [shape])}`` (the batch's shape only where the per-sample shape is not static).

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
                lo, hi = reduce(source)[1][2:4]
                extremes = (fn(lo), fn(hi))
            reduced[k] = _reduce(outputs[k], lays[k], first[:, position[k]], extremes)
        return reduced[k]

    for k in lays:
        reduce(k)
    lo = ops.concatenate([reduced[k][1][2] for k in lays], axis=0)
    hi = ops.concatenate([reduced[k][1][3] for k in lays], axis=0)
    e, start, inv = grid.window(lo, hi, bins, (running[0], running[1], running[2]))
    result = {}
    at = 0
    for k, lay in lays.items():
        values, stats, shape = reduced[k]
        part = slice(at, at + lay.channels)
        at += lay.channels
        counts = grid.count(values, inv[part], start[part], bins)
        result[k] = (*stats, e[part], start[part], counts, *shape)
    return result


class _Accumulator:
    """The sink of `calibrate`: merges each batch's reductions (nothing else is kept).

    Its `extra(start, rows)` gives the step, for the batch of input samples
    ``start .. start + rows``: every point's running ``(lo, hi, e)`` packed
    into one ``(3, channels)`` array, so that batches usually land on the
    running histogram windows; and the first gathered block of every sampled
    point for each input sample, ``(rows, points)``.
    """

    def __init__(self, bins: int, layouts: dict[str, _Layout]):
        self.bins = bins
        self.layouts = layouts
        self.state: dict[str, _Moments] = {}
        self.shapes = {k: lay.shape for k, lay in layouts.items()}  # per-sample shapes (None where they vary)
        self.seen: set[str] = set()  # points whose batch shapes were read (non-static ones)
        self.steps = np.array([lay.step for lay in layouts.values()], np.int64)
        self.blocks = np.array([lay.blocks for lay in layouts.values()], np.int64)

    def prepare(self, outputs: dict, rows: int) -> None:
        pass

    def check(self, outputs: dict, rows: int, where: str) -> None:
        pass

    def extra(self, start: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for key, lay in self.layouts.items():
            m = self.state.get(key)
            if m is None:
                c = lay.channels
                parts.append(np.array([[np.inf] * c, [-np.inf] * c, [-np.inf] * c], np.float32))
            else:
                parts.append(np.stack([m.low, m.high, m.exponent]).astype(np.float32))
        index = np.arange(start, start + rows, dtype=np.int64)[:, None]
        offsets = (index % self.blocks) * self.steps % self.blocks
        return np.concatenate(parts, axis=1), offsets.astype(np.int32)

    def write(self, start: int, rows: int, outputs: dict) -> None:
        for key, parts in outputs.items():
            if len(parts) > 10:  # a shape that is not static: keep the dims every batch agrees on
                shape = tuple(int(d) for d in _backend.as_numpy(parts[10])[1:])
                seen = self.shapes[key] if key in self.seen else shape
                self.shapes[key] = tuple(a if a == b else None for a, b in zip(seen, shape))
                self.seen.add(key)
            batch = _Moments.from_batch(parts)
            self.state[key] = batch if key not in self.state else self.state[key].merge(batch, self.bins)


def calibrate(
    model: keras.Model,
    data: Any,
    points: Selector | None = None,
    *,
    batch_size: int = 32,
    progress: bool | None = None,
    bins: int | None = None,
    per_channel: bool = False,
    channel_axis: int = -1,
    percentiles: Any = DEFAULT_PERCENTILES,
    training: bool = False,
    steps: int | None = None,
    sample: int | None = DEFAULT_SAMPLE,
) -> Calibration:
    """Streaming statistics of `points` of `model` over `data`.

    One compiled forward pass per batch computes every point and reduces it
    in the graph (min, max, mean, variance, zeros, histogram); activations are
    never kept, so memory does not grow with the data. Typical use: ranges of
    every pre-activation (``"*:pre"``) for post-training quantization.

    Args:
        model: a Functional or Sequential model.
        data: as for `kerasurgery.collect`.
        points: addresses, globs, list or predicate; None means every address
            of `kerasurgery.points(model)` (inputs, ``:pre`` and ``:scores``
            included).
        batch_size: rows per batch for arrays.
        progress: show a progress bar (None: when stdout is a terminal).
        bins: histogram cells per point (and per channel); None: 2048, or
            128 per channel (per-channel histograms of every point of a large
            model at 2048 cells would take hundreds of MB).
        per_channel: statistics per channel instead of per tensor.
        channel_axis: the channel axis, counted with the batch (-1: last).
        percentiles: percentiles (0-100) reported by `to_dict`.
        training: run layers in training mode (the model is not changed).
        steps: read at most this many batches.
        sample: values of a point per input sample (all channels together)
            from which its histogram, percentiles, mean, std and zero
            fraction are computed (per channel: ``sample // channels``
            positions, at least one). Points with more are sampled in
            contiguous blocks spread over the sample, shifted from one input
            sample to the next so that every position is covered over the
            dataset. ``min``, ``max`` and ``count`` always see every value.
            None: every value (exact; on a large model about 3x slower, see
            docs/performance.md).

    Returns:
        A `Calibration`: ``{address: PointStats}``.

    Raises:
        AddressError: a point is not an address of `model`.
        DataError: the data does not fit the model or is empty; bad `bins`
            or `sample`.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> stats = ks.calibrate(model, np.random.default_rng(0).normal(size=(64, 4)), "d:pre")
        >>> s = stats["d:pre"]
        >>> s.samples, s.count, s.min <= s.percentile(50) <= s.max
        (64, 192, True)
    """
    batch_size = check_batch_size(batch_size)
    if bins is None:
        bins = 128 if per_channel else 2048
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 2 <= bins <= 1 << 20:
        raise DataError(f"Expected `bins` to be an integer from 2 to 2**20. Received: bins={bins!r}.")
    qs = tuple(float(q) for q in np.atleast_1d(np.asarray(percentiles, np.float64)))
    if any(not 0 <= q <= 100 for q in qs):
        raise DataError(f"Expected percentiles between 0 and 100. Received: percentiles={percentiles!r}.")
    if sample is not None and (
        isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1
    ):
        raise DataError(
            "Expected `sample` to be a positive integer (values per input sample) or None (every "
            f"value). Received: sample={sample!r}."
        )
    if not isinstance(channel_axis, (int, np.integer)) or isinstance(channel_axis, bool):
        raise DataError(f"Expected `channel_axis` to be an integer. Received: channel_axis={channel_axis!r}.")
    bins, per_channel, channel_axis = int(bins), bool(per_channel), int(channel_axis)
    sample = None if sample is None else int(sample)

    def layouts(probe: keras.Model, unique: list[str]) -> dict[str, _Layout]:
        return {k: _layout(probe.output[k], per_channel, channel_axis, sample) for k in unique}

    def make_post(probe: keras.Model, unique: list[str]) -> tuple:
        lays = layouts(probe, unique)
        offsets = np.cumsum([0, *(lay.channels for lay in lays.values())])

        derived = _derived_extremes(probe, lays)

        def post(outputs: dict, running: Any, first: Any) -> dict:
            return _reduce_all(outputs, lays, derived, bins, running, first)

        return post, (((3, int(offsets[-1])), "float32"), ((None, len(unique)), "int32"))

    tag = ("stats", bins, per_channel, channel_axis, sample)
    plan = plan_for(model, points, training=training, default="all", tag=tag, make_post=make_post)
    lays = layouts(plan.probe, plan.unique)
    source = adapt(data, plan.probe, batch_size=batch_size, steps=steps)
    sink = _Accumulator(bins, lays)
    samples = run(plan, source, sink, progress=progress)
    result = Calibration(model=model.name)
    for address, key in plan.keys.items():
        t = plan.probe.output[key]
        result[address] = PointStats(
            address, shape=sink.shapes[key], dtype=keras.backend.standardize_dtype(t.dtype),
            channel_axis=lays[key].axis, bins=bins, samples=samples, moments=sink.state[key], percentiles=qs,
            sample=sample,
        )
    return result
