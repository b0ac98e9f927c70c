"""What `kerasurgery.plot.histograms` draws: one histogram per point.

A point's value may be raw activations (an array from `kerasurgery.collect`)
or statistics from `kerasurgery.calibrate` (a ``PointStats``, or its
``to_dict()``/JSON form). `panel` turns either into bin counts and edges, the
observed min and max, and the percentiles to mark. The fine power-of-two
histograms of statistics are cut to their used range and merged to about the
requested number of bins by adding neighbouring cells (exact, no resampling).

Example:
    >>> import numpy as np
    >>> p = panel("d", np.arange(10.0), bins=5)
    >>> p["counts"].tolist(), p["min"], p["max"]
    ([2, 2, 2, 2, 2], 0.0, 9.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from kerasurgery.errors import DataError


def _stats_parts(value: Any) -> tuple | None:
    """``(counts, edges, min, max, percentiles, sampled)`` of a statistics object
    from `kerasurgery.calibrate`, of its ``to_dict()``, or None for anything else.

    Counts and edges have a leading channel axis; per-channel statistics keep one
    row per channel."""
    if isinstance(value, np.ndarray):
        return None
    hist = getattr(value, "histogram", None)
    if not isinstance(value, Mapping) and isinstance(hist, tuple) and len(hist) == 2:  # a PointStats
        counts, edges = hist
        quantiles = tuple(getattr(value, "quantiles", ()) or ())
        per_tensor = np.ndim(value.min) == 0
        found = value.percentile(quantiles) if quantiles and per_tensor else ()
        sampled = not getattr(value, "exact", True)
        return counts, edges, value.min, value.max, dict(zip(quantiles, np.atleast_1d(found))), sampled
    if not isinstance(value, Mapping) and callable(getattr(value, "to_dict", None)):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        return None
    hist = value.get("histogram")
    if not isinstance(hist, Mapping) or "counts" not in hist:
        return None
    counts = np.asarray(hist["counts"], dtype="float64")
    if "edges" in hist:
        edges = np.asarray(hist["edges"], dtype="float64")
    else:  # the grid form: per channel, a first edge and a cell width
        low = np.atleast_1d(np.asarray(hist["low"], dtype="float64"))
        width = np.atleast_1d(np.asarray(hist["width"], dtype="float64"))
        edges = low[:, None] + width[:, None] * np.arange(counts.shape[-1] + 1)
    percentiles = value.get("percentiles") or {}
    if any(np.ndim(v) for v in percentiles.values()):
        percentiles = {}
    sampled = "sampled" in value and "count" in value and value["sampled"] != value["count"]
    return counts, edges, value.get("min"), value.get("max"), dict(percentiles), sampled


def _coarsen(counts: np.ndarray, edges: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """A statistics histogram for drawing: empty ends cut, cells merged to about `bins`.

    Several channels are first put on one shared grid (each cell's count at
    its centre), so the result is always one histogram."""
    counts, edges = np.atleast_2d(counts), np.atleast_2d(edges)
    if counts.shape[0] > 1:
        centres = (edges[:, :-1] + edges[:, 1:]) / 2
        lo = edges[:, :-1][counts > 0].min(initial=edges.max())
        hi = edges[:, 1:][counts > 0].max(initial=edges.min())
        merged, shared = np.histogram(centres.ravel(), bins=bins, range=(lo, hi), weights=counts.ravel())
        return merged, shared
    counts, edges = counts[0], edges[0]
    used = np.flatnonzero(counts)
    if used.size:
        counts, edges = counts[used[0]:used[-1] + 1], edges[used[0]:used[-1] + 2]
    group = max(1, math.ceil(len(counts) / bins))
    pad = (-len(counts)) % group
    counts = np.concatenate([counts, np.zeros(pad)]).reshape(-1, group).sum(axis=1)
    width = edges[1] - edges[0] if len(edges) > 1 else 1.0
    edges = edges[0] + width * group * np.arange(len(counts) + 1)
    return counts, edges


def panel(name: str, value: Any, bins: int) -> dict:
    parts = _stats_parts(value)
    if parts is not None:
        counts, edges, lo, hi, percentiles, sampled = parts
        counts, edges = _coarsen(np.asarray(counts, "float64"), np.asarray(edges, "float64"), bins)
        lo = None if lo is None else float(np.min(lo))
        hi = None if hi is None else float(np.max(hi))
        percentiles = {float(q): float(v) for q, v in percentiles.items()}
        return {"counts": counts, "edges": edges, "min": lo, "max": hi, "percentiles": percentiles,
                "sampled": bool(sampled)}
    try:
        data = np.asarray(value)
    except (TypeError, ValueError):
        data = np.asarray(None)
    if data.dtype.kind not in "biuf":
        raise DataError(
            f"Expected an array or calibrate statistics for {name!r}. Received: {type(value).__name__}."
        )
    data = data.astype("float64").ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        raise DataError(f"Expected finite values to histogram for {name!r}. Received: none.")
    counts, edges = np.histogram(data, bins=bins)
    return {"counts": counts, "edges": edges, "min": float(data.min()), "max": float(data.max()), "percentiles": {},
            "sampled": False}
