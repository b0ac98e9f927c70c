"""Clipping thresholds from a histogram: percentile, entropy (KL divergence), mean squared error.

Pure numpy on the histograms of `kerasurgery.calibrate`, which live on a
power-of-two grid: cell ``g`` of width ``w = 2**e`` covers ``[g*w, (g+1)*w)``
(`kerasurgery.stats.grid`). Cells are aligned on zero, so the histogram of
``|x|`` is exact: cell ``g < 0`` holds the values whose magnitude lies in
cell ``-g - 1`` (`fold`). Every search here works on cells of that grid:

- `percentile_value`: a percentile, interpolated linearly inside its cell
  (within one cell width of numpy's).
- `entropy_cells`: the KL-divergence search of TensorRT's entropy calibrator
  (Migacz, "8-bit inference with TensorRT", GTC 2017) on the histogram of
  ``|x|``: for every candidate number of cells ``i`` from ``levels`` on,
  the reference distribution P is the first ``i`` cells with every value
  beyond them added to the last, Q is those ``i`` cells merged into
  ``levels`` groups (``i // levels`` cells each, the rest in the last group)
  and spread back evenly over the cells where P is not empty; the result is
  the ``i`` with the smallest KL(P || Q) (the first, on ties). The threshold
  is the upper edge of the last kept cell, as MXNet, TVM and ONNX Runtime
  place it (the slides write ``(i + 0.5)`` cell widths). Computed for every
  ``i`` at once from prefix sums: KL(P || Q) needs only each group's sum,
  its number of non-empty cells and ``sum p log p``.
- `expected_mse`: the expected squared error of a uniform quantizer on the
  histogram, values taken as uniform inside each cell, in closed form (the
  integral of the squared rounding error over each cell, clipping
  included). `mse_threshold` minimises it over the cell edges.

Example:
    >>> import numpy as np
    >>> from kerasurgery.quant.thresholds import fold
    >>> fold(np.array([1, 2, 3, 4]), first=-2)   # cells -2, -1, 0, 1 -> |x| cells 0, 1
    array([5, 5])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_CHUNK = 64  # candidates per block of `expected_mse` (keeps temporaries small)
_COARSE = 256  # candidates of the first, coarse pass of a search


def fold(counts: np.ndarray, first: int) -> np.ndarray:
    """Counts of ``|x|`` per cell (cells 0, 1, ...) from the counts of cells ``first, first + 1, ...``.

    Trailing empty cells are dropped (at least one cell is kept).
    """
    counts = np.asarray(counts, np.int64)
    cells = np.arange(first, first + counts.size)
    magnitude = np.where(cells >= 0, cells, -cells - 1)
    folded = np.bincount(magnitude, weights=counts, minlength=1)
    folded = np.rint(folded).astype(np.int64)
    used = np.flatnonzero(folded)
    return folded[: (used[-1] + 1 if used.size else 1)]


def percentile_value(counts: np.ndarray, edges: np.ndarray, low: float, high: float, q: float) -> float:
    """The `q`-th percentile (0..100) of a histogram, linear inside its cell, within ``[low, high]``."""
    counts = np.asarray(counts, np.float64)
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    total = cum[-1]
    if total <= 0:
        return float(high)
    if q >= 100:
        return float(high)
    target = q / 100.0 * total
    k = int(np.clip(np.searchsorted(cum, target, side="left") - 1, 0, counts.size - 1))
    inside = (target - cum[k]) / counts[k] if counts[k] > 0 else 0.0
    value = edges[k] + inside * (edges[k + 1] - edges[k])
    return float(np.clip(value, low, high))


def entropy_divergences(counts: np.ndarray, levels: int) -> np.ndarray:
    """KL(P || Q) of TensorRT's entropy calibration for every candidate ``i = levels .. len(counts)``.

    Args:
        counts: counts of ``|x|`` per cell (cells 0, 1, ...).
        levels: quantization levels of ``|x|`` (128 for signed 8-bit, 256 for unsigned).

    Returns:
        Array of ``len(counts) - levels + 1`` divergences (``inf`` where Q is
        empty where P is not); empty if there are fewer cells than levels.
    """
    c = np.asarray(counts, np.float64)
    n = c.size
    if n < levels:
        return np.zeros(0)
    total = c.sum()
    cum = np.concatenate([[0.0], np.cumsum(c)])
    nonzero = np.concatenate([[0], np.cumsum(c > 0)])
    plogp = np.concatenate([[0.0], np.cumsum(np.where(c > 0, c * np.log(np.where(c > 0, c, 1.0)), 0.0))])
    i = np.arange(levels, n + 1)[:, None]  # candidates: cells kept
    m = i // levels
    g = np.arange(levels)[None, :]
    starts = g * m
    ends = np.where(g == levels - 1, i, starts + m)
    merged = cum[ends] - cum[starts]                      # Q's mass per group (outliers excluded)
    nz = nonzero[ends] - nonzero[starts]                  # non-empty cells of P per group ...
    last = c[i[:, 0] - 1]
    outliers = total - cum[i[:, 0]]
    p_last = last + outliers
    nz[:, -1] += ((p_last > 0) & (last == 0)).astype(nz.dtype)  # ... P's last cell holds the outliers
    p_group = merged.copy()
    p_group[:, -1] += outliers
    # P = p / total and Q = q / (total - outliers), so KL(P || Q) =
    # (sum p log p - sum_groups p_group log(merged / nz)) / total + log((total - outliers) / total)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.where(p_group > 0, np.log(merged / np.maximum(nz, 1)), 0.0)
        cross = (p_group * log_q).sum(axis=1)
        p_last_log = np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
        kl = (plogp[i[:, 0] - 1] + p_last_log - cross) / total + np.log(np.maximum(total - outliers, 1e-300) / total)
    empty = ((p_group > 0) & (merged <= 0)).any(axis=1)  # Q has no mass where P has some
    return np.where(empty, np.inf, kl)


def entropy_cells(counts: np.ndarray, levels: int) -> int:
    """The number of ``|x|`` cells TensorRT's entropy calibration keeps (threshold = that many widths).

    Returns ``len(counts)`` (no clipping) when there are fewer cells than
    levels, or when no candidate has a finite divergence.
    """
    kl = entropy_divergences(counts, levels)
    if kl.size == 0 or not np.isfinite(kl).any():
        return int(np.asarray(counts).size)
    return int(levels + np.argmin(kl))


def _side(x: np.ndarray, step: np.ndarray, codes: np.ndarray | float) -> np.ndarray:
    """``integral_0^x (u - Q(u))**2 du`` for ``x >= 0``; Q rounds to multiples of `step`, at most ``codes * step``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        edge = (codes - 0.5) * step                       # saturation starts here
        y = np.minimum(x, edge) / step
        k = np.floor(y + 0.5)
        r = y - k
        saw = step ** 3 * (k / 12.0 + r ** 3 / 3.0)
        beyond = ((x - codes * step) ** 3 + step ** 3 / 8.0) / 3.0
        out = saw + np.where(x > edge, beyond, 0.0)
    return np.where(codes > 0, out, x ** 3 / 3.0)          # no code on this side: everything goes to 0


def expected_mse(counts: np.ndarray, edges: np.ndarray, steps: np.ndarray, below: int, above: int,
                 zeros: int = 0) -> np.ndarray:
    """Expected squared quantization error per value, for each quantizer step in `steps`.

    The quantizer rounds to multiples of the step, from ``-below`` to
    ``above`` steps (zero is a code); values are taken as uniform inside each
    cell of the histogram ``(counts, edges)``, except `zeros` of them, which
    are exactly 0 (counted in the cell holding 0; their error is 0).

    Example:
        >>> import numpy as np
        >>> from kerasurgery.quant.thresholds import expected_mse
        >>> edges = np.linspace(0.0, 1.0, 101)   # uniform values on [0, 1), step 0.25, no clipping
        >>> float(np.round(expected_mse(np.ones(100), edges, np.array([0.25]), 0, 4)[0] * 12 / 0.25 ** 2, 6))
        1.0
    """
    counts = np.asarray(counts, np.float64).copy()
    edges = np.asarray(edges, np.float64)
    width = np.diff(edges)
    total = max(counts.sum(), 1.0)
    if zeros:
        cell = int(np.clip(np.searchsorted(edges, 0.0, side="right") - 1, 0, counts.size - 1))
        counts[cell] = max(counts[cell] - zeros, 0.0)
    signed = edges[0] < 0
    out = np.empty(len(steps))
    for begin in range(0, len(steps), _CHUNK):
        s = np.asarray(steps[begin: begin + _CHUNK], np.float64)[:, None]
        integral = _side(np.maximum(edges, 0.0)[None, :], s, np.float64(above))  # from 0 to each edge
        if signed:
            integral = integral - _side(np.maximum(-edges, 0.0)[None, :], s, np.float64(below))
        out[begin: begin + _CHUNK] = (np.diff(integral, axis=1) / width) @ counts / total
    return out


def _search(candidates: np.ndarray, error: Callable[[np.ndarray], np.ndarray]) -> float:
    """The candidate with the smallest error: every `stride`-th one, then every one around the best three."""
    n = candidates.size
    stride = max(1, -(-n // _COARSE))
    coarse = np.arange(0, n, stride)
    if coarse[-1] != n - 1:
        coarse = np.append(coarse, n - 1)
    errors = error(candidates[coarse])
    fine = {int(i) for best in coarse[np.argsort(errors, kind="stable")[:3]]
            for i in range(max(0, best - stride + 1), min(n, best + stride))}
    fine_index = np.array(sorted(fine))
    fine_errors = error(candidates[fine_index])
    return float(candidates[fine_index[int(np.argmin(fine_errors))]])


def mse_threshold(counts: np.ndarray, width: float, amax: float, codes: int, zeros: int = 0) -> float:
    """The threshold ``t`` (a cell edge ``k * width``, or `amax`) minimising the expected MSE of
    quantizing ``|x|`` to `codes` steps of ``t / codes`` (the histogram of ``|x|``, cells 0, 1, ...).

    The search evaluates about 256 evenly spread candidates, then every
    candidate next to the best three.
    """
    counts = np.asarray(counts, np.float64)
    edges = np.arange(counts.size + 1) * width
    candidates = np.append(edges[1:][edges[1:] < amax], amax)
    return _search(candidates, lambda t: expected_mse(counts, edges, t / codes, 0, codes, zeros))


def mse_step(counts: np.ndarray, edges: np.ndarray, low: float, high: float, codes: int, zero: int,
             zeros: int = 0) -> float:
    """The step minimising the expected MSE of an asymmetric quantizer whose zero point stays `zero`
    (codes ``0 .. codes``) while its range ``[-zero, codes - zero]`` steps shrinks from ``[low, high]``
    (candidates: 1/2048 to 2048/2048 of the full step)."""
    full = (high - low) / codes
    steps = full * np.arange(1, 2049) / 2048.0
    return _search(steps, lambda s: expected_mse(counts, edges, s, zero, codes - zero, zeros))
