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

import dataclasses
import json
import os
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasurgery import _backend
from kerasurgery import histogram as grid
from kerasurgery.address import Selector
from kerasurgery.data import adapt, check_batch_size
from kerasurgery.errors import DataError
from kerasurgery.runner import plan_for, run

DEFAULT_PERCENTILES = (0.1, 1.0, 5.0, 50.0, 95.0, 99.0, 99.9)

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


def _reduce(t: Any, axis: int | None, bins: int, running: tuple) -> tuple:
    """In-graph reductions of one tensor: (rows, min, max, mean, var, zeros, e, start, counts, shape).

    `running` is ``(lo, hi, e)`` of the point's histogram so far (see
    `kerasurgery.histogram.batch_histogram`).
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
    e, start, counts = grid.batch_histogram(x, lo, hi, bins, running)
    rows = ops.cast(ops.shape(x)[0], "int32")
    shape = ops.stack([ops.cast(d, "int32") for d in ops.shape(t)])
    return rows, lo, hi, mean, var, zeros, e, start, counts, shape


# ---------------------------------------------------------------------------
# on the host


@dataclasses.dataclass
class _Moments:
    """Raw running statistics of one point (per channel, float64/int64)."""

    n: int
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    zeros: np.ndarray
    exponent: np.ndarray
    start: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_batch(cls, parts: tuple) -> _Moments:
        rows, lo, hi, mean, var, zeros, e, start, counts = (_backend.as_numpy(p) for p in parts[:9])
        n = int(rows)
        return cls(
            n, lo.astype(np.float64), hi.astype(np.float64), mean.astype(np.float64),
            var.astype(np.float64) * n, zeros.astype(np.int64), _int(e), _int(start), counts.astype(np.int64),
        )

    def merge(self, other: _Moments, bins: int) -> _Moments:
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        e, start, counts = grid.merge(
            (self.exponent, self.start, self.counts), (other.exponent, other.start, other.counts), bins
        )
        return _Moments(
            n, np.minimum(self.low, other.low), np.maximum(self.high, other.high), mean, m2,
            self.zeros + other.zeros, e, start, counts,
        )


def _int(values: np.ndarray) -> np.ndarray:
    """Integer-valued floats from the graph as int64 (non-finite ranges give 0)."""
    values = np.asarray(values, np.float64)
    return np.where(np.isfinite(values), values, 0).astype(np.int64)


class PointStats:
    """Statistics of one point over a dataset.

    Per-tensor statistics are Python floats; with ``per_channel=True`` they are
    arrays with one value per channel.

    Attributes:
        address: the point.
        shape: its per-sample shape (None where batches differed); dtype: its dtype name.
        channel_axis: the axis statistics are per (None: the whole tensor).
        samples: samples seen; count: values seen per channel.
        bins: histogram cells.
    """

    def __init__(self, address: str, *, shape: tuple, dtype: str, channel_axis: int | None, bins: int,
                 samples: int, moments: _Moments, percentiles: tuple = DEFAULT_PERCENTILES):
        self.address = address
        self.shape = tuple(shape)
        self.dtype = dtype
        self.channel_axis = channel_axis
        self.bins = bins
        self.samples = samples
        self._m = moments
        self.quantiles = tuple(float(q) for q in percentiles)

    def _out(self, values: np.ndarray) -> Any:
        return float(values[0]) if self.channel_axis is None else np.array(values)

    count = property(lambda self: self._m.n)
    min = property(lambda self: self._out(self._m.low), doc="Smallest value.")
    max = property(lambda self: self._out(self._m.high), doc="Largest value.")
    mean = property(lambda self: self._out(self._m.mean), doc="Mean value.")
    var = property(lambda self: self._out(self._m.m2 / max(self._m.n, 1)), doc="Population variance.")
    std = property(lambda self: self._out(np.sqrt(self._m.m2 / max(self._m.n, 1))), doc="Standard deviation.")
    zeros = property(lambda self: self._out(self._m.zeros), doc="Number of exact zeros.")
    zero_fraction = property(lambda self: self._out(self._m.zeros / max(self._m.n, 1)), doc="Fraction of zeros.")

    @property
    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts, edges)`` like `numpy.histogram` (with a leading channel axis if per channel)."""
        counts, edges = self._m.counts, grid.edges(self._m.exponent, self._m.start, self.bins)
        return (counts[0], edges[0]) if self.channel_axis is None else (counts, edges)

    def percentile(self, q: Any) -> Any:
        """Percentile(s) ``q`` in [0, 100] from the histogram (within one bin width)."""
        qs = np.atleast_1d(np.asarray(q, np.float64))
        if np.any((qs < 0) | (qs > 100)):
            raise DataError(f"Expected percentiles between 0 and 100. Received: {q!r}.")
        edges = grid.edges(self._m.exponent, self._m.start, self.bins)
        values = grid.percentiles(self._m.counts, edges, self._m.low, self._m.high, qs)
        if self.channel_axis is None:
            values = values[0]
            return float(values[0]) if np.ndim(q) == 0 else values
        return values[:, 0] if np.ndim(q) == 0 else values

    def merge(self, other: PointStats) -> PointStats:
        """Statistics of the union of the data behind `self` and `other`."""
        if not isinstance(other, PointStats):
            raise DataError(f"Expected PointStats to merge with. Received: {type(other).__name__}.")
        mine = (self.address, self.shape, self.channel_axis, self.bins, self._m.low.shape)
        theirs = (other.address, other.shape, other.channel_axis, other.bins, other._m.low.shape)
        if mine != theirs:
            raise DataError(
                "Expected statistics of the same point, computed with the same `bins` and "
                f"`per_channel`, to merge. Received: (address, shape, channel axis, bins, channels) "
                f"{mine} and {theirs}."
            )
        return PointStats(self.address, shape=self.shape, dtype=self.dtype, channel_axis=self.channel_axis,
                          bins=self.bins, samples=self.samples + other.samples,
                          moments=self._m.merge(other._m, self.bins), percentiles=self.quantiles)

    def to_dict(self) -> dict:
        """JSON-ready dict; `from_dict` restores it exactly (merge included)."""
        m = self._m
        lst = (lambda a: float(a[0])) if self.channel_axis is None else (lambda a: np.asarray(a).tolist())
        qs = self.percentile(self.quantiles) if self.quantiles else np.zeros((0,))
        qs = qs if self.channel_axis is None else qs.T
        return {
            "address": self.address, "shape": list(self.shape), "dtype": self.dtype,
            "channel_axis": self.channel_axis, "samples": self.samples, "count": m.n,
            "min": lst(m.low), "max": lst(m.high), "mean": lst(m.mean), "std": lst(np.sqrt(m.m2 / m.n)),
            "zero_fraction": lst(m.zeros / m.n), "zeros": lst(m.zeros), "m2": lst(m.m2),
            "percentiles": {f"{q:g}": lst(np.atleast_1d(v)) for q, v in zip(self.quantiles, qs)},
            "histogram": {
                "bins": self.bins, "exponent": m.exponent.tolist(), "start": m.start.tolist(),
                "low": grid.edges(m.exponent, m.start, 0)[:, 0].tolist(),
                "width": np.ldexp(1.0, m.exponent).tolist(), "counts": m.counts.tolist(),
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> PointStats:
        arr = lambda key: np.atleast_1d(np.asarray(d[key], np.float64))
        h = d["histogram"]
        moments = _Moments(
            int(d["count"]), arr("min"), arr("max"), arr("mean"), arr("m2"), arr("zeros").astype(np.int64),
            np.asarray(h["exponent"], np.int64), np.asarray(h["start"], np.int64), np.asarray(h["counts"], np.int64),
        )
        return cls(d["address"], shape=tuple(d["shape"]), dtype=d["dtype"], channel_axis=d["channel_axis"],
                   bins=int(h["bins"]), samples=int(d["samples"]), moments=moments,
                   percentiles=tuple(float(q) for q in d.get("percentiles", {})))

    def __repr__(self) -> str:
        if self.channel_axis is None:
            return (f"PointStats({self.address!r}, min={self.min:.4g}, max={self.max:.4g}, "
                    f"mean={self.mean:.4g}, std={self.std:.4g}, zeros={self.zero_fraction:.1%})")
        return f"PointStats({self.address!r}, {self._m.low.size} channels on axis {self.channel_axis})"


class Calibration(dict):
    """``{address: PointStats}`` from `calibrate`, with JSON export and `merge`."""

    def __init__(self, items: Any = (), model: str | None = None):
        super().__init__(items)
        self.model = model

    def to_dict(self) -> dict:
        return {"model": self.model, "points": {a: s.to_dict() for a, s in self.items()}}

    def to_json(self, path: Any = None, *, indent: int | None = None) -> str:
        """The statistics as JSON text, also written to `path` if given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with open(os.fspath(path), "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(((a, PointStats.from_dict(s)) for a, s in d["points"].items()), model=d.get("model"))

    @classmethod
    def from_json(cls, text_or_path: Any) -> Calibration:
        """Read `to_json` output, given as the text itself or a file path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(os.fspath(text_or_path)) as f:
                text = f.read()
        return cls.from_dict(json.loads(text))

    def merge(self, other: Calibration) -> Calibration:
        """Statistics over both shards of data; both must hold the same points."""
        if set(self) != set(other):
            raise DataError(
                "Expected two calibrations of the same points to merge. Received: points only in "
                f"one of them: {sorted(set(self) ^ set(other))[:8]}."
            )
        return Calibration(((a, s.merge(other[a])) for a, s in self.items()), model=self.model)


def merge(first: Any, *others: Any) -> Any:
    """Merge `Calibration` (or `PointStats`) objects of shards of one dataset.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> from kerasurgery.stats import merge
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> data = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
        >>> whole = merge(ks.calibrate(model, data[:4], "d"), ks.calibrate(model, data[4:], "d"))
        >>> bool(np.isclose(whole["d"].max, model.predict(data, verbose=0).max()))
        True
    """
    result = first
    for other in others:
        result = result.merge(other)
    return result


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
    if not isinstance(channel_axis, (int, np.integer)) or isinstance(channel_axis, bool):
        raise DataError(f"Expected `channel_axis` to be an integer. Received: channel_axis={channel_axis!r}.")
    bins, per_channel, channel_axis = int(bins), bool(per_channel), int(channel_axis)

    def layout(probe: keras.Model, unique: list[str]) -> tuple[dict, dict]:
        axes = {k: _channel_axis(probe.output[k], per_channel, channel_axis) for k in unique}
        channels = {k: 1 if a is None else int(probe.output[k].shape[a]) for k, a in axes.items()}
        return axes, channels

    def make_post(probe: keras.Model, unique: list[str]) -> tuple:
        axes, channels = layout(probe, unique)
        offsets = np.cumsum([0, *channels.values()])

        def post(outputs: dict, running: Any) -> dict:
            return {
                k: _reduce(outputs[k], axes[k], bins, tuple(running[i, offsets[j] : offsets[j + 1]] for i in range(3)))
                for j, k in enumerate(unique)
            }

        return post, (((3, int(offsets[-1])), "float32"),)

    tag = ("stats", bins, per_channel, channel_axis)
    plan = plan_for(model, points, training=training, default="all", tag=tag, make_post=make_post)
    axes, channels = layout(plan.probe, plan.unique)
    source = adapt(data, plan.probe, batch_size=batch_size, steps=steps)
    sink = _Accumulator(bins, channels)
    samples = run(plan, source, sink, progress=progress)
    result = Calibration(model=model.name)
    for address, key in plan.keys.items():
        t = plan.probe.output[key]
        result[address] = PointStats(
            address, shape=sink.shapes[key], dtype=keras.backend.standardize_dtype(t.dtype),
            channel_axis=axes[key], bins=bins, samples=samples, moments=sink.state[key], percentiles=qs,
        )
    return result
