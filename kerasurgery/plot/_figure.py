"""Shared pieces of the figures: matplotlib on first use, grids of axes, array checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasurgery.errors import DataError


SCALES = ("shared", "per_map")


def pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a test dependency
        raise ImportError(
            "kerasurgery.plot needs matplotlib. Install it with `pip install kerasurgery[plot]` "
            "(or `pip install matplotlib`)."
        ) from None
    return plt


def grid(count: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid: columns = ceil(sqrt(count))."""
    cols = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / cols), cols


def subplots(count: int, cell: float, extra_width: float = 0.0, extra_height: float = 0.0) -> tuple[Any, list]:
    """A figure with exactly `count` axes laid out on a near-square grid."""
    plt = pyplot()
    rows, cols = grid(count)
    fig = plt.figure(figsize=(cols * cell + extra_width, rows * cell + 0.6 + extra_height), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(count)]
    return fig, axes


def as_array(value: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as e:
        raise DataError(f"Expected {what} as an array. Received: {type(value).__name__} ({e}).") from None


def pick(array: np.ndarray, ndim: int, sample: int, what: str, example: str) -> np.ndarray:
    """Drop a leading batch axis (taking `sample`) so `array` has `ndim` axes."""
    if array.ndim == ndim + 1:
        if not -array.shape[0] <= sample < array.shape[0]:
            raise DataError(
                f"Expected `sample` to index the batch of {array.shape[0]} in {what}. "
                f"Received: sample={sample}."
            )
        return array[sample]
    if array.ndim != ndim:
        raise DataError(f"Expected {what} of shape {example}. Received: an array of shape {array.shape}.")
    return array


def channels_to_draw(total: int, channels: Sequence[int] | None, max_channels: int) -> list[int]:
    if not isinstance(max_channels, int) or max_channels < 1:
        raise DataError(f"Expected `max_channels` to be a positive int. Received: max_channels={max_channels!r}.")
    if channels is None:
        return list(range(min(total, max_channels)))
    chosen = [int(c) for c in channels]
    bad = [c for c in chosen if not 0 <= c < total]
    if bad or not chosen:
        raise DataError(
            f"Expected channel indices in [0, {total}). Received: channels={list(channels)!r}"
            + (f" ({bad} out of range)." if bad else " (empty).")
        )
    return chosen[:max_channels]


# ---------------------------------------------------------------------------
# feature maps
