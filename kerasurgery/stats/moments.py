"""The running statistics of one point, merged on the host in float64/int64.

`Moments` holds, per channel (one channel for per-tensor statistics):

- over **every** value: `count` values, of which `nan`, `posinf` and
  `neginf` were not finite, and over the finite ones their extremes
  (`low`, `high`), `mean` and `m2` (the sum of squared deviations from the
  mean);
- over the **sampled** values (every value unless the point was sampled):
  `sampled` values, their exact `zeros`, and a histogram of the finite ones
  on the power-of-two grid of `kerasurgery.stats.grid` (`exponent`,
  `start`, `counts`).

`from_batch` reads one batch's in-graph reductions (a dict with named keys,
see `kerasurgery.stats.reduce`): the sum of the finite values and the sum
of their squared deviations from the batch's mean (centred in the graph, so
no cancellation). `merge` combines two (Chan's parallel formula for mean and
m2, the exact merge of `grid.merge` for the histogram), so batches, and
shards, merge into the statistics of the whole whatever the order.

Example:
    >>> import numpy as np
    >>> from kerasurgery.stats.moments import Moments
    >>> def batch(values):
    ...     v = np.asarray(values, np.float64)[:, None]
    ...     finite = v[np.isfinite(v)]
    ...     return {"count": len(v), "sampled": len(v), "min": [finite.min()], "max": [finite.max()],
    ...             "sum": [finite.sum()], "m2": [((finite - finite.mean()) ** 2).sum()],
    ...             "nan": [np.isnan(v).sum()], "posinf": [(v == np.inf).sum()], "neginf": [0],
    ...             "zeros": [(v == 0).sum()], "exponent": [0], "start": [0], "counts": [[0] * 4]}
    >>> m = Moments.from_batch(batch([1.0, 2.0, np.nan])).merge(Moments.from_batch(batch([3.0, np.inf])), bins=4)
    >>> m.count, m.finite.tolist(), m.nan.tolist(), m.posinf.tolist(), m.mean.tolist(), (m.m2 / m.finite).tolist()
    (5, [3], [1], [1], [2.0], [0.6666666666666666])
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kerasurgery.runtime import backend
from kerasurgery.stats import grid


@dataclasses.dataclass
class Moments:
    """Raw running statistics of one point (arrays have one entry per channel).

    Attributes:
        count: values seen per channel (finite or not).
        nan, posinf, neginf: how many of them were NaN, +inf, -inf.
        low, high: the extremes of the finite values (+inf, -inf if none).
        mean, m2: mean and sum of squared deviations of the finite values
            (0 if none).
        sampled: values per channel behind `zeros` and the histogram
            (`count` unless the point was sampled).
        zeros: exact zeros among the sampled values.
        exponent, start, counts: the histogram of the finite sampled values
            (see `kerasurgery.stats.grid`), counts of shape ``(channels, bins)``.
    """

    count: int
    nan: np.ndarray
    posinf: np.ndarray
    neginf: np.ndarray
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    sampled: int
    zeros: np.ndarray
    exponent: np.ndarray
    start: np.ndarray
    counts: np.ndarray

    @property
    def finite(self) -> np.ndarray:
        """Finite values seen, per channel."""
        return self.count - self.nan - self.posinf - self.neginf

    @property
    def sampled_finite(self) -> np.ndarray:
        """Finite sampled values, per channel (what the histogram counts)."""
        return self.counts.sum(axis=1)

    @classmethod
    def from_batch(cls, parts: dict) -> Moments:
        """The statistics of one batch, from the in-graph reductions of `kerasurgery.stats.reduce`."""

        def get(key: str, dtype: type) -> np.ndarray:
            return np.atleast_1d(np.asarray(backend.as_numpy(parts[key]))).astype(dtype)

        count = int(get("count", np.int64)[0])
        nan, posinf, neginf = get("nan", np.int64), get("posinf", np.int64), get("neginf", np.int64)
        finite = count - nan - posinf - neginf
        n = np.maximum(finite, 1)
        some = finite > 0  # a channel without finite values has no mean
        return cls(
            count=count, nan=nan, posinf=posinf, neginf=neginf,
            low=get("min", np.float64), high=get("max", np.float64),
            mean=np.where(some, get("sum", np.float64) / n, 0.0), m2=np.where(some, get("m2", np.float64), 0.0),
            sampled=int(get("sampled", np.int64)[0]), zeros=get("zeros", np.int64),
            exponent=_int(get("exponent", np.float64)), start=_int(get("start", np.float64)),
            counts=np.atleast_2d(get("counts", np.int64)),
        )

    def merge(self, other: Moments, bins: int) -> Moments:
        """The statistics of both (Chan's formula per channel; exact histogram merge)."""
        a, b = self.finite, other.finite
        n = a + b
        weight = np.divide(b, n, out=np.zeros(n.shape, np.float64), where=n > 0)  # b's share of the finite values
        delta = other.mean - self.mean
        e, start, counts = grid.merge(
            (self.exponent, self.start, self.counts), (other.exponent, other.start, other.counts), bins
        )
        return Moments(
            count=self.count + other.count, nan=self.nan + other.nan, posinf=self.posinf + other.posinf,
            neginf=self.neginf + other.neginf,
            low=np.minimum(self.low, other.low), high=np.maximum(self.high, other.high),
            mean=self.mean + delta * weight, m2=self.m2 + other.m2 + delta**2 * a * weight,
            sampled=self.sampled + other.sampled, zeros=self.zeros + other.zeros,
            exponent=e, start=start, counts=counts,
        )


def _int(values: np.ndarray) -> np.ndarray:
    """Integer-valued floats from the graph as int64 (non-finite ranges give 0)."""
    values = np.asarray(values, np.float64)
    return np.where(np.isfinite(values), values, 0).astype(np.int64)
