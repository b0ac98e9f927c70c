"""Mergeable histograms on a power-of-two grid, built in-graph and merged on the host.

The range of an activation is not known before the data is seen, and shards
run on different machines see different ranges, so a histogram here is not
tied to fixed edges. All histograms share one global grid: with bin width
``w = 2**e`` (``e`` an integer), cell ``g`` covers ``[g * w, (g + 1) * w)``. A
histogram keeps `bins` consecutive cells starting at cell ``start``:

- per batch, in the compiled graph, ``e`` is the smallest exponent whose
  window of `bins` cells covers the batch's ``[min, max]`` and the range seen
  so far, which is passed in (`batch_histogram`), so a batch usually lands
  on the running window and merging it is a plain sum;
- two histograms merge exactly (`merge`): the finer one is re-binned to the
  coarser width by summing groups of ``2**k`` aligned cells (no interpolation),
  and the width doubles while the union does not fit in `bins` cells.

So the result never depends on the order of merging, and the statistics of
shards merge into those of the whole. The price: the final width is at most
twice what the global range needs (between half and all of the `bins` cells
are in use). Widths are also at least ``2**-20`` times the largest magnitude,
which keeps ``x / w`` exact in float32.

Example:
    >>> import numpy as np
    >>> from kerasurgery.stats.grid import merge
    >>> a = (np.array([0]), np.array([0]), np.array([[1, 1, 0, 0]]))  # cells 0, 1 at width 1
    >>> b = (np.array([1]), np.array([2]), np.array([[1, 0, 0, 1]]))  # cells 2, 5 at width 2
    >>> e, start, counts = merge(a, b, bins=4)
    >>> int(e[0]), int(start[0]), counts.tolist()  # width 4: [0,4) [4,8) [8,12) [12,16)
    (2, 0, [[2, 1, 1, 0]])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from kerasurgery.runtime import backend

_MIN_EXPONENT = -100  # keeps 2**-e finite in float32
_RELATIVE_RESOLUTION = 20  # width >= max|x| * 2**-20


def _cells(lo: Any, hi: Any, e: Any) -> Any:
    inv = ops.power(2.0, -e)
    return ops.floor(hi * inv) - ops.floor(lo * inv) + 1.0


def _exponent(lo: Any, hi: Any, bins: int) -> Any:
    """Smallest power-of-two exponent whose aligned window of `bins` cells covers [lo, hi]."""
    span = ops.maximum(hi - lo, 1e-30)
    e0 = ops.ceil(ops.log2(span / bins))  # log2 may be off by one ulp: check neighbours
    e = e0 + 2.0
    for candidate in (e0 + 1.0, e0, e0 - 1.0):
        e = ops.where(_cells(lo, hi, candidate) <= bins, candidate, e)
    magnitude = ops.maximum(ops.maximum(ops.abs(lo), ops.abs(hi)), 1e-30)
    floor = ops.ceil(ops.log2(magnitude)) - _RELATIVE_RESOLUTION
    return ops.maximum(ops.maximum(e, floor), float(_MIN_EXPONENT))


def window(lo: Any, hi: Any, bins: int, running: tuple | None = None) -> tuple[Any, Any, Any]:
    """In-graph histogram windows for columns whose batch range is ``[lo, hi]``.

    Args:
        lo, hi: per-column minimum and maximum, shape ``(channels,)``.
        bins: cells per histogram.
        running: optional ``(lo, hi, e)`` of the histograms the batch will be
            merged into (``+inf, -inf, -inf`` before the first batch). The
            window then covers that range too, so in the common case the
            batch lands on the running window exactly and merging is a sum.

    Returns:
        ``(e, start, inv)``: float exponents and start cells (integer valued),
        and the scales ``2**-e``. Many points can share one call (their
        columns concatenated): the work does not grow with their number.
    """
    if running is not None:
        lo, hi = ops.minimum(lo, running[0]), ops.maximum(hi, running[1])
    finite_lo, finite_hi = ops.isfinite(lo), ops.isfinite(hi)
    lo = ops.where(finite_lo, lo, ops.where(finite_hi, hi, 0.0))
    hi = ops.where(finite_hi, hi, lo)
    e = _exponent(lo, hi, bins)
    if running is not None:
        e = ops.maximum(e, running[2])
    inv = ops.power(2.0, -e)
    return e, ops.floor(lo * inv), inv


def count(x: Any, inv: Any, start: Any, bins: int, *, finite_only: bool = False) -> Any:
    """In-graph int32 counts ``(channels, bins)`` of the columns of `x` ``(rows, channels)``
    in the windows ``(inv, start)`` of `window`.

    Values outside a window fall in its edge bins. With `finite_only`, NaN and
    infinite values are not counted (two more passes over `x`); without it,
    `x` must be finite.
    """
    channels = x.shape[-1]
    cell = ops.floor(x * inv) - start  # exact: x * 2**-e is exact, both sides integers
    index = ops.clip(ops.cast(cell, "int32"), 0, bins - 1)
    if channels != 1:
        index = index + ops.arange(channels, dtype="int32") * bins
    length = channels * bins
    if not finite_only:
        counts = backend.count_bins(ops.reshape(index, (-1,)), length)
    else:  # non-finite values go to one more cell, dropped
        index = ops.where(ops.isfinite(x), index, length)
        counts = backend.count_bins(ops.reshape(index, (-1,)), length + 1)[:length]
    return ops.reshape(counts, (channels, bins))


def batch_histogram(
    x: Any, lo: Any, hi: Any, bins: int, running: tuple | None = None
) -> tuple[Any, Any, Any]:
    """In-graph histogram of each column of `x` (rows, channels) on the grid.

    `window` then `count`, for one tensor.

    Args:
        x: float32 tensor of shape ``(rows, channels)``.
        lo, hi: per-column minimum and maximum, shape ``(channels,)``.
        bins: cells per histogram.
        running: optional ``(lo, hi, e)`` of the histogram this batch will be
            merged into (see `window`).

    Returns:
        ``(e, start, counts)``: float exponents and start cells (integer
        valued), and int32 counts of shape ``(channels, bins)``.
    """
    e, start, inv = window(lo, hi, bins, running)
    return e, start, count(x, inv, start, bins)


def merge(a: tuple, b: tuple, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge two grid histograms ``(e, start, counts)`` (numpy, per channel).

    Returns:
        ``(e, start, counts)`` with int64 arrays; counts have shape
        ``(channels, bins)``. Exact: every count lands in the coarser cell that
        contains its cell.
    """
    parts = [(np.asarray(e, np.int64), np.asarray(s, np.int64), np.asarray(c, np.int64)) for e, s, c in (a, b)]
    if np.array_equal(parts[0][0], parts[1][0]) and np.array_equal(parts[0][1], parts[1][1]):
        return parts[0][0], parts[0][1], parts[0][2] + parts[1][2]  # same window: the usual case
    channels = parts[0][2].shape[0]
    e = np.maximum(parts[0][0], parts[1][0])
    offsets = np.arange(bins, dtype=np.int64)
    cells, weights = [], []
    for pe, ps, pc in parts:
        shift = (e - pe)[:, None]
        cells.append(np.right_shift(ps[:, None] + offsets[None, :], shift))  # floor division by 2**shift
        weights.append(pc)
    cells_all = np.concatenate(cells, axis=1)
    weights_all = np.concatenate(weights, axis=1)
    used = weights_all > 0
    big = np.iinfo(np.int64).max
    lo = np.where(used, cells_all, big).min(axis=1)
    hi = np.where(used, cells_all, -big).max(axis=1)
    lo = np.where(used.any(axis=1), lo, cells_all[:, 0])
    hi = np.where(used.any(axis=1), hi, lo)
    extra = np.zeros(channels, np.int64)
    while True:
        wide = (np.right_shift(hi, extra) - np.right_shift(lo, extra) + 1) > bins
        if not wide.any():
            break
        extra += wide
    e = e + extra
    lo = np.right_shift(lo, extra)
    flat = (np.right_shift(cells_all, extra[:, None]) - lo[:, None]) + np.arange(channels)[:, None] * bins
    flat = np.where(used, flat, 0)  # empty cells may lie outside the new window
    counts = np.bincount(flat.ravel(), weights=weights_all.ravel(), minlength=channels * bins)
    return e, lo, np.rint(counts).astype(np.int64).reshape(channels, bins)


def edges(e: np.ndarray, start: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges, shape ``(channels, bins + 1)``."""
    width = np.ldexp(1.0, np.asarray(e, np.int64))
    return (np.asarray(start, np.float64)[:, None] + np.arange(bins + 1)[None, :]) * width[:, None]


def percentiles(
    counts: np.ndarray, bin_edges: np.ndarray, lo: np.ndarray, hi: np.ndarray, qs: Any
) -> np.ndarray:
    """Percentiles (0..100) per channel, interpolated linearly inside a bin.

    Exact at 0 and 100 (the true min and max); elsewhere within one bin width.

    Returns:
        Array of shape ``(channels, len(qs))``.
    """
    qs = np.asarray(qs, np.float64)
    out = np.empty((counts.shape[0], qs.size))
    for c in range(counts.shape[0]):
        cum = np.concatenate([[0.0], np.cumsum(counts[c], dtype=np.float64)])
        total = cum[-1]
        if total <= 0:
            out[c] = np.nan
            continue
        target = qs / 100.0 * total
        k = np.clip(np.searchsorted(cum, target, side="left") - 1, 0, counts.shape[1] - 1)
        inside = np.divide(target - cum[k], counts[c][k], out=np.zeros_like(target), where=counts[c][k] > 0)
        value = bin_edges[c][k] + inside * (bin_edges[c][k + 1] - bin_edges[c][k])
        out[c] = np.clip(value, lo[c], hi[c])
    out[:, qs <= 0] = lo[:, None]
    out[:, qs >= 100] = hi[:, None]
    return out
