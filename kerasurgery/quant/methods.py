"""`ranges`: the quantizer of every point of a `Calibration`, by one of four methods.

============  ===============================================================
method        clipping range of each point (channel)
============  ===============================================================
minmax        the exact min and max (every value; never sampled)
percentile    ``|x|``'s `percentile` (``[-t, t]`` or ``[0, t]``); asymmetric:
              the ``100 - p`` and ``p`` percentiles
entropy       TensorRT's KL-divergence search on the histogram of ``|x|``
              (`kerasurgery.quant.thresholds.entropy_cells`) into as many
              levels as the quantizer has codes on ``[0, amax]`` (128 signed,
              256 unsigned at 8 bits), exact zeros left out (they are a code
              at any threshold; a spike of them, as after a ReLU or at
              zero-padded borders, would pull the threshold down);
              asymmetric: that window ``[-t, t]``, cut to ``[min, max]``
mse           the threshold with the least expected squared error on the
              histogram (`kerasurgery.quant.thresholds.expected_mse`);
              asymmetric: the step, the zero point kept from min/max
============  ===============================================================

``symmetric=None`` gives unsigned codes to points whose minimum is >= 0
(after a ReLU) and signed symmetric codes to the others; True always signed;
False asymmetric (with a zero point). Per-channel statistics
(``calibrate(..., per_channel=True)``) give per-channel ranges with
``per_channel=True``, or one range per point (their histograms merged
exactly on the shared grid) without.

Resolution: every method but minmax reads the histogram (docs/quantization.md
says how many cells each needs). The histogram of ``|x|`` folds the signed
one onto the zero-aligned grid, exactly; it has between a quarter and all of
the calibration's `bins` cells (coarsened to at most `bins` cells when the
values sit far from zero).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasurgery.checks import is_int
from kerasurgery.errors import DataError
from kerasurgery.quant import thresholds
from kerasurgery.quant.ranges import Range, Ranges, codes, make_range
from kerasurgery.stats import grid

METHODS = ("minmax", "percentile", "entropy", "mse")


def check_bits(bits: Any) -> int:
    """`bits` as an int if it is an integer from 2 to 16, else a `DataError`."""
    if not is_int(bits) or not 2 <= bits <= 16:
        raise DataError(f"Expected `bits` to be an integer from 2 to 16. Received: bits={bits!r}.")
    return int(bits)


def check_settings(method: Any, percentile: Any, bits: Any, symmetric: Any, per_channel: Any) -> tuple:
    """The arguments of `ranges`, checked (a `DataError` names the bad one)."""
    if method not in METHODS:
        raise DataError(f"Expected `method` to be one of {', '.join(map(repr, METHODS))}. Received: method={method!r}.")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)) or not (
            0 < float(percentile) <= 100):
        raise DataError(f"Expected `percentile` to be a number in (0, 100], such as 99.99. "
                        f"Received: percentile={percentile!r}.")
    if symmetric not in (None, True, False):
        raise DataError(f"Expected `symmetric` to be None (choose: unsigned codes for non-negative points, signed "
                        f"for the others), True or False. Received: symmetric={symmetric!r}.")
    if not isinstance(per_channel, (bool, np.bool_)):
        raise DataError(f"Expected `per_channel` to be True or False. Received: per_channel={per_channel!r}.")
    return method, float(percentile), check_bits(bits), symmetric, bool(per_channel)


def _histograms(s: Any, per_channel: bool) -> tuple[np.ndarray, ...]:
    """``(counts (C, bins), first cells (C,), widths (C,), lows (C,), highs (C,), zeros (C,))`` of a
    `PointStats`, its channels merged into one histogram unless `per_channel`."""
    counts, edges = s.histogram
    counts, edges = np.atleast_2d(counts), np.atleast_2d(edges)
    width = edges[:, 1] - edges[:, 0]  # powers of two: exact
    first = np.rint(edges[:, 0] / width).astype(np.int64)
    lows, highs = np.atleast_1d(np.asarray(s.min, np.float64)), np.atleast_1d(np.asarray(s.max, np.float64))
    zeros = np.atleast_1d(np.asarray(s.zeros, np.int64))
    if per_channel or counts.shape[0] == 1:
        return counts, first, width, lows, highs, zeros
    exponent = np.rint(np.log2(width)).astype(np.int64)
    bins = counts.shape[1]
    merged = (exponent[:1], first[:1], counts[:1])
    for c in range(1, counts.shape[0]):
        merged = grid.merge(merged, (exponent[c:c + 1], first[c:c + 1], counts[c:c + 1]), bins)
    finite = np.isfinite(lows)
    low = lows[finite].min() if finite.any() else np.nan
    high = highs[finite].max() if finite.any() else np.nan
    return merged[2], merged[1], np.ldexp(1.0, merged[0]), np.array([low]), np.array([high]), zeros.sum(keepdims=True)


def _folded(counts: np.ndarray, first: int, width: float, limit: int) -> tuple[np.ndarray, float]:
    """The histogram of ``|x|`` (cells 0, 1, ...) and its width, at most `limit` cells (merging pairs)."""
    folded = thresholds.fold(counts, int(first))
    while folded.size > limit:
        folded = np.add.reduceat(folded, np.arange(0, folded.size, 2))
        width *= 2.0
    return folded, width


def _levels(bits: int, kind: str, low: float, high: float, amax: float) -> int:
    """Codes of the quantizer on ``[0, amax]``: what the entropy search quantizes ``|x|`` into.

    Signed: ``2**(bits-1)`` (0 .. 127 at 8 bits); unsigned: ``2**bits``;
    asymmetric: the codes its range ``[min(low, 0), max(high, 0)]`` gives the
    larger side (256 for non-negative values, 128 for values symmetric about 0).
    """
    if kind == "signed":
        return 2 ** (bits - 1)
    if kind == "unsigned":
        return 2**bits
    return max(2, int(round(2**bits * amax / (max(high, 0.0) - min(low, 0.0)))))


def _channel(address: str, c: int | None, counts: np.ndarray, first: int, width: float, low: float, high: float,
             zeros: int, method: str, kind: str, bits: int, percentile: float) -> tuple[float, float]:
    """The clipping range ``(low, high)`` of one channel."""
    if method == "minmax" or counts.sum() == 0 or max(abs(low), abs(high)) == 0:
        return low, high
    amax = max(abs(low), abs(high))
    qmin, qmax = codes(bits, kind)
    edges = (first + np.arange(counts.size + 1)) * width
    if kind == "asymmetric" and method == "percentile":
        return (thresholds.percentile_value(counts, edges, low, high, 100.0 - percentile),
                thresholds.percentile_value(counts, edges, low, high, percentile))
    if kind == "asymmetric" and method == "mse":
        lo, hi = min(low, 0.0), max(high, 0.0)
        zero = int(np.clip(np.round(-lo / ((hi - lo) / qmax)), 0, qmax))
        step = thresholds.mse_step(counts, edges, lo, hi, qmax, zero, zeros)
        return -zero * step, (qmax - zero) * step
    folded, w = _folded(counts, first, width, max(counts.size, 2048))
    if method == "percentile":
        t = thresholds.percentile_value(folded, np.arange(folded.size + 1) * w, 0.0, amax, percentile)
    elif method == "mse":
        t = thresholds.mse_threshold(folded, w, amax, qmax, zeros)
    else:
        levels = _levels(bits, kind, low, high, amax)
        if folded.size < levels:
            where = f"{address!r}" + (f" (channel {c})" if c is not None else "")
            raise DataError(
                f"Expected a histogram of |x| with at least {levels} cells for the entropy method at {bits} bits "
                f"({levels} levels). Received: {folded.size} cells at {where}. Calibrate with more bins "
                f"(`calibrate(..., bins={max(2048, 8 * levels)})`; per-channel statistics default to 128), "
                "or choose the 'mse' or 'percentile' method."
            )
        folded[0] -= min(zeros, folded[0])  # exact zeros are codes at any threshold: they say nothing about it
        t = min(thresholds.entropy_cells(folded, levels) * w, amax)
    if kind == "unsigned":
        return 0.0, t
    if kind == "signed":
        return -t, t
    return max(low, -t), min(high, t)


def ranges(calibration: Any, method: str = "minmax", *, percentile: float = 99.99, bits: int = 8,
           symmetric: bool | None = None, per_channel: bool = False) -> Ranges:
    """The quantizer (`Range`) of every point of `calibration` (see the module's table).

    Args:
        calibration: a `kerasurgery.Calibration` (from `kerasurgery.calibrate`).
        method: ``"minmax"``, ``"percentile"``, ``"entropy"`` or ``"mse"``.
        percentile: for ``"percentile"``: the percentile of ``|x|`` kept, in (0, 100].
        bits: code width, 2 to 16.
        symmetric: None: unsigned codes for points whose minimum is >= 0,
            signed for the others; True: signed; False: asymmetric.
        per_channel: one range per channel (needs ``calibrate(...,
            per_channel=True)``); else one per point.

    Returns:
        `Ranges`: ``{address: Range}`` in the calibration's order.

    Raises:
        DataError: an unknown method, a percentile outside (0, 100], bits
            outside 2..16, ``per_channel=True`` on per-tensor statistics, a
            point without finite values, too coarse a histogram for
            ``"entropy"``.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((8,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(4, name="d")(x))
        >>> data = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
        >>> stats = ks.calibrate(model, data, "d")
        >>> exact, clipped = stats.ranges("minmax")["d"], stats.ranges("percentile", percentile=99.0)["d"]
        >>> exact.high == max(-stats["d"].min, stats["d"].max), clipped.high < exact.high
        (True, True)
    """
    method, percentile, bits, symmetric, per_channel = check_settings(method, percentile, bits, symmetric, per_channel)
    if not len(calibration):
        raise DataError("Expected a calibration with at least one point. Received: an empty Calibration.")
    if per_channel:
        tensor = [a for a, s in calibration.items() if s.channel_axis is None]
        if tensor:
            raise DataError(
                f"Expected per-channel statistics for per-channel ranges. Received: {len(tensor)} point(s) with "
                f"statistics per tensor ({', '.join(map(repr, tensor[:4]))}{' ...' if len(tensor) > 4 else ''}). "
                "Calibrate with `calibrate(..., per_channel=True)`, or pass per_channel=False."
            )
    out = Ranges(model=getattr(calibration, "model", None), method=method, bits=bits, symmetric=symmetric,
                 percentile=percentile if method == "percentile" else None, per_channel=per_channel)
    for address, s in calibration.items():
        out[address] = _point(address, s, method, percentile, bits, symmetric, per_channel)
    return out


def _point(address: str, s: Any, method: str, percentile: float, bits: int, symmetric: bool | None,
           per_channel: bool) -> Range:
    counts, first, width, lows, highs, zeros = _histograms(s, per_channel)
    if not np.all(np.isfinite(lows)):
        bad = np.flatnonzero(~np.isfinite(lows))
        raise DataError(
            f"Expected finite values at every point to quantize. Received: {address!r} had no finite value"
            + (f" in channel(s) {bad[:8].tolist()}" if per_channel else "")
            + f" ({int(np.sum(s.nan))} NaN, {int(np.sum(s.posinf))} +inf, {int(np.sum(s.neginf))} -inf). "
            "Leave it out of the points, or fix the data or model that produces it."
        )
    if symmetric is None:
        kind = "unsigned" if lows.min() >= 0 else "signed"
    else:
        kind = "signed" if symmetric else "asymmetric"
    pairs = [_channel(address, c if per_channel else None, counts[c], int(first[c]), float(width[c]),
                      float(lows[c]), float(highs[c]), int(zeros[c]), method, kind, bits, percentile)
             for c in range(counts.shape[0])]
    low, high = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    axis = s.channel_axis if per_channel else None
    if axis is None:
        low, high = low[0], high[0]
    return make_range(address, low, high, bits=bits, kind=kind, method=method, channel_axis=axis)
