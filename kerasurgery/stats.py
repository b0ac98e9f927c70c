"""`calibrate`: streaming statistics of many points over a dataset.

Each batch goes through one compiled step: the probe's tensors (see
`kerasurgery.collect`) are reduced *inside the graph* with `keras.ops` to
count, min, max, mean, variance, number of zeros and a histogram (per tensor,
or per channel), so only a few numbers per point leave the graph and no
activation is ever kept. On the host, batch results merge into running
statistics in float64 (Chan's formula for mean and variance; histograms on a
shared power-of-two grid, see `kerasurgery.histogram`). The same merge
combines the statistics of two shards into those of the whole.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasurgery import _backend
from kerasurgery import histogram as grid
from kerasurgery.address import Selector
from kerasurgery.data import adapt, check_batch_size
from kerasurgery.errors import DataError
from kerasurgery.pointstats import (
    DEFAULT_PERCENTILES,
    Calibration,
    PointStats,
    _Moments,
    merge,
)
from kerasurgery.runner import plan_for, run

__all__ = ["Calibration", "PointStats", "calibrate", "merge"]

# ---------------------------------------------------------------------------
# in the graph


def _channel_axis(tensor: Any, per_channel: bool, axis: int) -> int | None:
    """The (non-negative) channel axis of a point, or None for per-tensor statistics."""
    rank = len(tensor.shape)
    if not per_channel or rank < 2:
        return None
    axis = axis + rank if axis < 0 else axis
    if not 1 <= axis < rank or tensor.shape[axis] is None:
        return None
    return axis


def _stride(tensor: Any, axis: int | None, stride: int) -> int:
    """The histogram stride actually used: >= `stride`, coprime to the rows per sample.

    Rows are values (per tensor) or positions (per channel). Being coprime to
    the rows of one sample, every position (and channel) is sampled equally.
    """
    dims = tensor.shape[1:]
    if stride == 1 or any(d is None for d in dims):
        return stride
    rows = math.prod(dims) // (1 if axis is None else tensor.shape[axis])
    while math.gcd(stride, rows) != 1:
        stride += 1
    return stride


def _reduce(t: Any, axis: int | None, bins: int, running: tuple, stride: int = 1) -> tuple:
    """In-graph reductions of one tensor: (rows, min, max, mean, var, zeros, e, start, counts, shape).

    `running` is ``(lo, hi, e)`` of the point's histogram so far (see
    `kerasurgery.histogram.batch_histogram`); the histogram counts every
    `stride`-th row (every other statistic sees every value).
    """
    x = ops.cast(t, "float32")
    if axis is None:
        x = ops.reshape(x, (-1, 1))
    else:
        if axis != len(t.shape) - 1:
            x = ops.moveaxis(x, axis, -1)
        x = ops.reshape(x, (-1, t.shape[axis]))
    lo = ops.min(x, axis=0)
    hi = ops.max(x, axis=0)
    mean, var = ops.moments(x, axes=[0])
    zeros = ops.sum(ops.cast(ops.equal(x, 0.0), "int32"), axis=0)
    sample = x if stride == 1 else x[::stride]
    e, start, counts = grid.batch_histogram(sample, lo, hi, bins, running)
    rows = ops.cast(ops.shape(x)[0], "int32")
    shape = ops.stack([ops.cast(d, "int32") for d in ops.shape(t)])
    return rows, lo, hi, mean, var, zeros, e, start, counts, shape


class _Accumulator:
    """The sink of `calibrate`: merges each batch's reductions (nothing else is kept).

    Its `extra()` packs every point's running ``(lo, hi, e)`` into one
    ``(3, channels)`` array for the step, so that batches usually land on the
    running histogram windows (one argument, not three per point).
    """

    def __init__(self, bins: int, channels: dict[str, int]):
        self.bins = bins
        self.channels = channels
        self.state: dict[str, _Moments] = {}
        self.shapes: dict[str, tuple] = {}  # per-sample shapes seen (None where they varied)

    def prepare(self, outputs: dict, rows: int) -> None:
        pass

    def check(self, outputs: dict, rows: int, where: str) -> None:
        pass

    def extra(self) -> tuple[np.ndarray]:
        parts = []
        for key, c in self.channels.items():
            m = self.state.get(key)
            if m is None:
                parts.append(np.array([[np.inf] * c, [-np.inf] * c, [-np.inf] * c], np.float32))
            else:
                parts.append(np.stack([m.low, m.high, m.exponent]).astype(np.float32))
        return (np.concatenate(parts, axis=1),)

    def write(self, start: int, rows: int, outputs: dict) -> None:
        for key, parts in outputs.items():
            shape = tuple(int(d) for d in _backend.as_numpy(parts[9])[1:])
            seen = self.shapes.setdefault(key, shape)
            self.shapes[key] = tuple(a if a == b else None for a, b in zip(seen, shape))
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
    histogram_stride: int = 1,
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
        histogram_stride: build histograms (and percentiles) from every
            k-th value only (k >= this, coprime to each point's values per
            sample, so every position and channel is sampled evenly). The
            histogram is the costliest statistic (several passes over every
            activation); min, max, mean, std and zeros stay exact. 1: every
            value, exact counts.

    Returns:
        A `Calibration`: ``{address: PointStats}``.

    Raises:
        AddressError: a point is not an address of `model`.
        DataError: the data does not fit the model or is empty; bad `bins`.

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
    stride_ok = isinstance(histogram_stride, (int, np.integer)) and not isinstance(histogram_stride, bool)
    if not stride_ok or histogram_stride < 1:
        raise DataError(
            f"Expected `histogram_stride` to be an integer >= 1. Received: histogram_stride={histogram_stride!r}."
        )
    if not isinstance(channel_axis, (int, np.integer)) or isinstance(channel_axis, bool):
        raise DataError(f"Expected `channel_axis` to be an integer. Received: channel_axis={channel_axis!r}.")
    bins, per_channel, channel_axis = int(bins), bool(per_channel), int(channel_axis)

    stride = int(histogram_stride)

    def layout(probe: keras.Model, unique: list[str]) -> tuple[dict, dict, dict]:
        axes = {k: _channel_axis(probe.output[k], per_channel, channel_axis) for k in unique}
        channels = {k: 1 if a is None else int(probe.output[k].shape[a]) for k, a in axes.items()}
        strides = {k: _stride(probe.output[k], a, stride) for k, a in axes.items()}
        return axes, channels, strides

    def make_post(probe: keras.Model, unique: list[str]) -> tuple:
        axes, channels, strides = layout(probe, unique)
        offsets = np.cumsum([0, *channels.values()])

        def post(outputs: dict, running: Any) -> dict:
            result = {}
            for j, k in enumerate(unique):
                window = tuple(running[i, offsets[j] : offsets[j + 1]] for i in range(3))
                result[k] = _reduce(outputs[k], axes[k], bins, window, strides[k])
            return result

        return post, (((3, int(offsets[-1])), "float32"),)

    tag = ("stats", bins, per_channel, channel_axis, stride)
    plan = plan_for(model, points, training=training, default="all", tag=tag, make_post=make_post)
    axes, channels, strides = layout(plan.probe, plan.unique)
    source = adapt(data, plan.probe, batch_size=batch_size, steps=steps)
    sink = _Accumulator(bins, channels)
    samples = run(plan, source, sink, progress=progress)
    result = Calibration(model=model.name)
    for address, key in plan.keys.items():
        t = plan.probe.output[key]
        result[address] = PointStats(
            address, shape=sink.shapes[key], dtype=keras.backend.standardize_dtype(t.dtype),
            channel_axis=axes[key], bins=bins, samples=samples, moments=sink.state[key], percentiles=qs,
            histogram_stride=strides[key],
        )
    return result
