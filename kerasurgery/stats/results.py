"""The results of `kerasurgery.calibrate`: `PointStats` per point, `Calibration`, `merge`.

Statistics are kept per channel (one channel for per-tensor statistics) in
float64/int64 (`kerasurgery.stats.moments.Moments`): over every value, the
count, how many were NaN, +inf and -inf, and min, max, mean and the sum of
squared deviations ``m2`` of the finite ones; over the sampled values (every
value unless the point was sampled), exact zeros and a histogram of the
finite ones on the shared power-of-two grid of `kerasurgery.stats.grid`.
Two results over different data merge into the result over both (Chan's
formula for mean and ``m2``, exact histogram merge), and `to_dict`/`from_dict`
round-trip exactly through JSON.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.runtime.h5 import json_text, write_text
from kerasurgery.stats import grid
from kerasurgery.stats.moments import Moments

DEFAULT_PERCENTILES = (0.1, 1.0, 5.0, 50.0, 95.0, 99.0, 99.9)
SAMPLED_FIELDS = ("zeros", "zero_fraction", "histogram", "percentiles")  # from the sample, when there is one


class PointStats:
    """Statistics of one point over a dataset.

    Per-tensor statistics are Python numbers; with ``per_channel=True`` they
    are arrays with one value per channel.

    ``count``, the non-finite counts, ``min``, ``max``, ``mean``, ``var`` and
    ``std`` always cover **every** value; ``zeros``, ``zero_fraction``, the
    histogram and the percentiles cover the ``sampled`` values (every value
    if `exact`). Everything but the counts describes the *finite* values:
    NaN and infinite values are counted in ``nan``, ``posinf`` and
    ``neginf`` and left out of the rest (a channel without finite values has
    NaN statistics).

    Attributes:
        address: the point.
        shape: its per-sample shape (None where batches differed); dtype: its dtype name.
        channel_axis: the axis statistics are per (None: the whole tensor).
        samples: input samples seen; count: values seen per channel (finite or not).
        finite, nan, posinf, neginf: how many of them were finite, NaN, +inf, -inf.
        sampled: values per channel behind zeros, the histogram and the
            percentiles (``count`` unless the point was sampled).
        bins: histogram cells.
        sample: the `calibrate` setting: at most this many values of the
            point per input sample are sampled, or None (every value).

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((2,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(1, name="d")(x))
        >>> s = ks.calibrate(model, np.arange(8.0).reshape(4, 2), "x")["x"]
        >>> s.min, s.max, s.mean, s.count, s.nan
        (0.0, 7.0, 3.5, 8, 0)
    """

    def __init__(self, address: str, *, shape: tuple, dtype: str, channel_axis: int | None, bins: int,
                 samples: int, moments: Moments, percentiles: tuple = DEFAULT_PERCENTILES,
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
        values = np.asarray(values)
        if self.channel_axis is not None:
            return values
        return int(values[0]) if values.dtype.kind in "iu" else float(values[0])

    def _of_finite(self, values: np.ndarray, n: np.ndarray) -> np.ndarray:
        """`values` where a channel had finite values, NaN elsewhere."""
        return np.where(n > 0, values, np.nan)

    count = property(lambda self: self._m.count)
    finite = property(lambda self: self._out(self._m.finite), doc="Finite values seen.")
    nan = property(lambda self: self._out(self._m.nan), doc="NaN values seen.")
    posinf = property(lambda self: self._out(self._m.posinf), doc="+inf values seen.")
    neginf = property(lambda self: self._out(self._m.neginf), doc="-inf values seen.")
    sampled = property(lambda self: self._m.sampled)
    exact = property(lambda self: self._m.sampled == self._m.count,
                     doc="True if zeros, the histogram and the percentiles used every value.")
    min = property(lambda self: self._out(self._of_finite(self._m.low, self._m.finite)), doc="Smallest finite value.")
    max = property(lambda self: self._out(self._of_finite(self._m.high, self._m.finite)), doc="Largest finite value.")
    mean = property(lambda self: self._out(self._of_finite(self._m.mean, self._m.finite)), doc="Mean of the finite values.")
    var = property(lambda self: self._out(self._variance()), doc="Population variance of the finite values.")
    std = property(lambda self: self._out(np.sqrt(self._variance())), doc="Standard deviation of the finite values.")
    zeros = property(lambda self: self._out(self._m.zeros), doc="Number of exact zeros (of the sampled values).")
    zero_fraction = property(lambda self: self._out(self._zero_fraction()),
                             doc="Fraction of zeros among the finite sampled values.")

    def _variance(self) -> np.ndarray:
        n = self._m.finite
        return self._of_finite(self._m.m2 / np.maximum(n, 1), n)

    def _zero_fraction(self) -> np.ndarray:
        n = self._m.sampled_finite
        return self._of_finite(self._m.zeros / np.maximum(n, 1), n)

    @property
    def sampled_fields(self) -> tuple[str, ...]:
        """The statistics computed from a sample of the values (none if `exact`)."""
        return () if self.exact else SAMPLED_FIELDS

    @property
    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts, edges)`` like `numpy.histogram` (with a leading channel axis if per channel).

        Counts are of the finite `sampled` values (every finite value if `exact`).
        """
        counts, edges = self._m.counts, grid.edges(self._m.exponent, self._m.start, self.bins)
        return (counts[0], edges[0]) if self.channel_axis is None else (counts, edges)

    def percentile(self, q: Any) -> Any:
        """Percentile(s) ``q`` in [0, 100] of the finite values, from the histogram (within one
        bin width; exact at 0 and 100)."""
        qs = np.atleast_1d(np.asarray(q, np.float64))
        if np.any((qs < 0) | (qs > 100)):
            raise DataError(f"Expected percentiles between 0 and 100. Received: {q!r}.")
        edges = grid.edges(self._m.exponent, self._m.start, self.bins)
        values = grid.percentiles(self._m.counts, edges, self._m.low, self._m.high, qs)
        values = np.where(self._m.finite[:, None] > 0, values, np.nan)
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
        """JSON-ready dict; `from_dict` restores it exactly (merge included).

        ``sampled_fields`` names the statistics computed from a sample of the
        values (``sampled`` per channel); every other statistic covers every
        value.
        """
        m = self._m
        lst = (lambda a: self._out(a)) if self.channel_axis is None else (lambda a: np.asarray(a).tolist())
        qs = self.percentile(self.quantiles) if self.quantiles else np.zeros((0,))
        qs = qs if self.channel_axis is None else qs.T
        return {
            "address": self.address, "shape": list(self.shape), "dtype": self.dtype,
            "channel_axis": self.channel_axis, "samples": self.samples, "count": m.count,
            "finite": lst(m.finite), "nan": lst(m.nan), "posinf": lst(m.posinf), "neginf": lst(m.neginf),
            "min": lst(self._of_finite(m.low, m.finite)), "max": lst(self._of_finite(m.high, m.finite)),
            "mean": lst(self._of_finite(m.mean, m.finite)), "std": lst(np.sqrt(self._variance())),
            "m2": lst(m.m2),
            "sampled": m.sampled, "sampled_fields": list(self.sampled_fields),
            "zero_fraction": lst(self._zero_fraction()), "zeros": lst(m.zeros),
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
        """The `PointStats` that `to_dict` described."""
        arr = lambda key, dtype=np.float64: np.atleast_1d(np.asarray(d[key], dtype))
        h = d["histogram"]
        channels = arr("min").shape
        nonfinite = {k: arr(k, np.int64) if k in d else np.zeros(channels, np.int64) for k in ("nan", "posinf", "neginf")}
        some = int(d["count"]) - sum(nonfinite.values()) > 0  # min, max, mean are NaN without finite values
        moments = Moments(
            count=int(d["count"]), **nonfinite,
            low=np.where(some, arr("min"), np.inf), high=np.where(some, arr("max"), -np.inf),
            mean=np.where(some, arr("mean"), 0.0), m2=np.where(some, arr("m2"), 0.0),
            sampled=int(d.get("sampled", d["count"])), zeros=arr("zeros", np.int64),
            exponent=np.asarray(h["exponent"], np.int64), start=np.asarray(h["start"], np.int64),
            counts=np.asarray(h["counts"], np.int64),
        )
        return cls(d["address"], shape=tuple(d["shape"]), dtype=d["dtype"], channel_axis=d["channel_axis"],
                   bins=int(h["bins"]), samples=int(d["samples"]), moments=moments,
                   percentiles=tuple(float(q) for q in d.get("percentiles", {})),
                   sample=h.get("sample"))

    def __repr__(self) -> str:
        m = self._m
        if self.channel_axis is None:
            text = (f"PointStats({self.address!r}, min={self.min:.4g}, max={self.max:.4g}, "
                    f"mean={self.mean:.4g}, std={self.std:.4g}, zeros={self.zero_fraction:.1%}")
        else:
            text = f"PointStats({self.address!r}, {m.low.size} channels on axis {self.channel_axis}"
        if not self.exact:
            text += (f"; {', '.join(self.sampled_fields)} from {m.sampled:,} of {m.count:,} values"
                     + (" per channel" if self.channel_axis is not None else ""))
        if m.count > m.finite.min():
            text += (f"; not finite (left out): {int(m.nan.sum()):,} NaN, {int(m.posinf.sum()):,} +inf, "
                     f"{int(m.neginf.sum()):,} -inf")
        return text + ")"


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

    def to_json(self, path: Any = None, *, indent: int | None = None, overwrite: bool = False) -> str:
        """The statistics as JSON text, also written to `path` if given (a new file unless `overwrite`)."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            write_text(path, text, overwrite=overwrite, what="statistics")
        return text

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(((a, PointStats.from_dict(s)) for a, s in d["points"].items()), model=d.get("model"))

    @classmethod
    def from_json(cls, text_or_path: Any) -> Calibration:
        """Read `to_json` output, given as the text itself or a file path."""
        return cls.from_dict(json.loads(json_text(text_or_path)))

    def ranges(self, method: str = "minmax", *, percentile: float = 99.99, bits: int = 8,
               symmetric: bool | None = None, per_channel: bool = False) -> Any:
        """Quantization ranges of every point: `kerasurgery.quant.methods.ranges` (see there).

        ``method`` is ``"minmax"``, ``"percentile"``, ``"entropy"`` or ``"mse"``;
        returns a `kerasurgery.Ranges` (``{address: Range}``). The quantization
        package sits above this one, so it is imported here, on first use.

        Example:
            >>> import keras, numpy as np, kerasurgery as ks
            >>> x = keras.Input((2,), name="x")
            >>> model = keras.Model(x, keras.layers.Dense(1, name="d")(x))
            >>> r = ks.calibrate(model, np.arange(8.0).reshape(4, 2), "x").ranges("minmax", bits=8)
            >>> r["x"].low, r["x"].high, r["x"].kind
            (0.0, 7.0, 'unsigned')
        """
        from kerasurgery.quant.methods import ranges  # lazy: quant is above stats (tests/test_layout.py)

        return ranges(self, method, percentile=percentile, bits=bits, symmetric=symmetric, per_channel=per_channel)

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
