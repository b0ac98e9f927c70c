"""Shared timing helper for the benchmarks: median of interleaved repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timings(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each callable, run interleaved so machine noise hits all alike; every repeat kept."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median_times(fns: dict[str, Callable[[], object]], repeats: int = 3) -> dict[str, float]:
    """Median wall time of each callable (see `timings`)."""
    return {name: statistics.median(ts) for name, ts in timings(fns, repeats).items()}
