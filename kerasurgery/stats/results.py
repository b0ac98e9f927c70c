"""The results of `kerasurgery.calibrate`: `PointStats` per point, `Calibration`, `merge`.

Statistics are kept per channel (one channel for per-tensor statistics) in
float64/int64: count, min, max, mean, the sum of squared deviations ``m2``,
exact zeros, and a histogram on the shared power-of-two grid of
`kerasurgery.stats.grid`. Two results over different data merge into the
result over both (Chan's formula for mean and ``m2``, exact histogram merge),
and `to_dict`/`from_dict` round-trip exactly through JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from kerasurgery.runtime import backend
from kerasurgery.stats import grid
from kerasurgery.errors import DataError

DEFAULT_PERCENTILES = (0.1, 1.0, 5.0, 50.0, 95.0, 99.0, 99.9)


@dataclasses.dataclass
class _Moments:
    """Raw running statistics of one point (per channel, float64/int64).

    `count` values (per channel) were seen by `low` and `high`; the other
    statistics describe the `n` of them that were sampled (all, if not sampled).
    """

    n: int
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    zeros: np.ndarray
    exponent: np.ndarray
    start: np.ndarray
    counts: np.ndarray
    count: int

    @classmethod
    def from_batch(cls, parts: dict) -> _Moments:
        """The statistics of one batch, from the in-graph reductions of `kerasurgery.stats.calibrate`."""
        count, rows, lo, hi, mean, var, zeros, e, start, counts = (
            backend.as_numpy(parts[k])
            for k in ("count", "n", "min", "max", "mean", "var", "zeros", "exponent", "start", "counts")
        )
        n = int(rows)
        return cls(
            n, lo.astype(np.float64), hi.astype(np.float64), mean.astype(np.float64),
            var.astype(np.float64) * n, zeros.astype(np.int64), _int(e), _int(start), counts.astype(np.int64),
            int(count),
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
            self.zeros + other.zeros, e, start, counts, self.count + other.count,
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
        samples: input samples seen; count: values seen per channel (by min and max).
        sampled: values per channel behind mean, std, zeros and the histogram
            (``count`` unless the point was sampled).
        bins: histogram cells.
        sample: the `calibrate` setting: at most this many values of the
            point per input sample are sampled, or None (every value).

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((2,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(1, name="d")(x))
        >>> s = ks.calibrate(model, np.arange(8.0).reshape(4, 2), "x")["x"]
        >>> s.min, s.max, s.mean, s.count
        (0.0, 7.0, 3.5, 8)
    """

    def __init__(self, address: str, *, shape: tuple, dtype: str, channel_axis: int | None, bins: int,
                 samples: int, moments: _Moments, percentiles: tuple = DEFAULT_PERCENTILES,
                 sample: int | None = None):
        self.address = address
        self.shape = tuple(shape)
        self.dtype = dtype
        self.channel_axis = channel_axis
        self.bins = bins
        self.samples = samples
        self._m = moments
        self.quantiles = tuple(float(q) for q in percentiles)
        self.sample = None if sample is None else int(sample)

    def _out(self, values: np.ndarray) -> Any:
        return float(values[0]) if self.channel_axis is None else np.array(values)

    count = property(lambda self: self._m.count)
    sampled = property(lambda self: self._m.n)
    exact = property(lambda self: self._m.n == self._m.count, doc="True if every value was used.")
    min = property(lambda self: self._out(self._m.low), doc="Smallest value.")
    max = property(lambda self: self._out(self._m.high), doc="Largest value.")
    mean = property(lambda self: self._out(self._m.mean), doc="Mean value.")
    var = property(lambda self: self._out(self._m.m2 / max(self._m.n, 1)), doc="Population variance.")
    std = property(lambda self: self._out(np.sqrt(self._m.m2 / max(self._m.n, 1))), doc="Standard deviation.")
    zeros = property(lambda self: self._out(self._m.zeros), doc="Number of exact zeros (of the sampled values).")
    zero_fraction = property(lambda self: self._out(self._m.zeros / max(self._m.n, 1)), doc="Fraction of zeros.")

    @property
    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts, edges)`` like `numpy.histogram` (with a leading channel axis if per channel).

        Counts are of the `sampled` values (all of them if `exact`).
        """
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
        mine = (self.address, self.channel_axis, self.bins, self._m.low.shape, self.sample)
        theirs = (other.address, other.channel_axis, other.bins, other._m.low.shape, other.sample)
        if mine != theirs:
            raise DataError(
                "Expected statistics of the same point, computed with the same `bins`, "
                "`per_channel` and `sample`, to merge. Received: (address, channel axis, "
                f"bins, channels, sample) {mine} and {theirs}."
            )
        shape = tuple(a if a == b else None for a, b in zip(self.shape, other.shape))
        return PointStats(self.address, shape=shape, dtype=self.dtype, channel_axis=self.channel_axis,
                          bins=self.bins, samples=self.samples + other.samples,
                          moments=self._m.merge(other._m, self.bins), percentiles=self.quantiles,
                          sample=self.sample)

    def to_dict(self) -> dict:
        """JSON-ready dict; `from_dict` restores it exactly (merge included)."""
        m = self._m
        lst = (lambda a: float(a[0])) if self.channel_axis is None else (lambda a: np.asarray(a).tolist())
        qs = self.percentile(self.quantiles) if self.quantiles else np.zeros((0,))
        qs = qs if self.channel_axis is None else qs.T
        return {
            "address": self.address, "shape": list(self.shape), "dtype": self.dtype,
            "channel_axis": self.channel_axis, "samples": self.samples, "count": m.count,
            "sampled": m.n,
            "min": lst(m.low), "max": lst(m.high), "mean": lst(m.mean), "std": lst(np.sqrt(m.m2 / m.n)),
            "zero_fraction": lst(m.zeros / m.n), "zeros": lst(m.zeros), "m2": lst(m.m2),
            "percentiles": {f"{q:g}": lst(np.atleast_1d(v)) for q, v in zip(self.quantiles, qs)},
            "histogram": {
                "bins": self.bins, "sample": self.sample,
                "exponent": m.exponent.tolist(), "start": m.start.tolist(),
                "low": grid.edges(m.exponent, m.start, 0)[:, 0].tolist(),
                "width": np.ldexp(1.0, m.exponent).tolist(), "counts": m.counts.tolist(),
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> PointStats:
        arr = lambda key: np.atleast_1d(np.asarray(d[key], np.float64))
        h = d["histogram"]
        moments = _Moments(
            int(d.get("sampled", d["count"])), arr("min"), arr("max"), arr("mean"), arr("m2"),
            arr("zeros").astype(np.int64), np.asarray(h["exponent"], np.int64), np.asarray(h["start"], np.int64),
            np.asarray(h["counts"], np.int64), int(d["count"]),
        )
        return cls(d["address"], shape=tuple(d["shape"]), dtype=d["dtype"], channel_axis=d["channel_axis"],
                   bins=int(h["bins"]), samples=int(d["samples"]), moments=moments,
                   percentiles=tuple(float(q) for q in d.get("percentiles", {})),
                   sample=h.get("sample"))

    def __repr__(self) -> str:
        if self.channel_axis is None:
            return (f"PointStats({self.address!r}, min={self.min:.4g}, max={self.max:.4g}, "
                    f"mean={self.mean:.4g}, std={self.std:.4g}, zeros={self.zero_fraction:.1%})")
        return f"PointStats({self.address!r}, {self._m.low.size} channels on axis {self.channel_axis})"


class Calibration(dict):
    """``{address: PointStats}`` from `calibrate`, with JSON export and `merge`.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((2,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(1, name="d")(x))
        >>> stats = ks.calibrate(model, np.arange(8.0).reshape(4, 2), ["x", "d"])
        >>> back = ks.Calibration.from_json(stats.to_json())
        >>> list(back), back["x"].max == stats["x"].max
        (['x', 'd'], True)
    """

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
        >>> from kerasurgery.stats.results import merge
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
