"""`histograms`: value distributions of points, one panel per point."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.plot import panels
from kerasurgery.plot._figure import subplots


def histograms(
    data: Any,
    *,
    points: Sequence[str] | None = None,
    bins: int = 60,
    log: bool = False,
    max_points: int = 16,
    title: str | None = None,
    cell: float = 2.6,
) -> Any:
    """Histograms of activation values, one panel per point.

    Takes what `kerasurgery.collect` returns (``{address: array}``), what
    `kerasurgery.calibrate` returns (``{address: PointStats}``, or the
    ``to_dict()`` form of each; their stored histograms are drawn, with the
    observed min and max and the percentiles as lines), a mix of both, or one
    array. Per-channel statistics are drawn as one histogram over all channels.

    Args:
        data: a dict of arrays and/or statistics, or a single array.
        points: the addresses to draw, in order; default: every key.
        bins: bins for raw arrays; the finer histograms of statistics are
            merged (exactly, by adding neighbouring cells) to about this many.
        log: logarithmic counts (useful after ReLU, where most values are 0).
        max_points: draw at most this many panels.
        title: the figure's title.
        cell: inches per panel.

    Returns:
        A matplotlib Figure with one axes per point, titled with its address.

    Raises:
        DataError: a requested point is not in `data`, or a value is neither an
            array nor a statistics object.

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> acts = {"dense_1": np.random.randn(100, 8), "dense_1:pre": np.random.randn(100, 8)}
        >>> [ax.get_title() for ax in ks.plot.histograms(acts).axes]
        ['dense_1', 'dense_1:pre']
    """
    if isinstance(data, Mapping) and isinstance(data.get("points"), Mapping) and "model" in data:
        data = data["points"]  # the JSON form of a whole calibration (`Calibration.to_dict()`)
    if not isinstance(data, Mapping):
        name = getattr(data, "address", None) or title or "values"
        data = {name: data}
        title = None if title == name else title
    names = list(data) if points is None else list(points)
    missing = [n for n in names if n not in data]
    if missing:
        raise DataError(
            f"Expected `points` among the keys of `data`. Received: {missing}. "
            f"Available: {list(data)[:10]}."
        )
    if not names:
        raise DataError("Expected at least one point to draw. Received: empty `data`.")
    names = names[:max_points]
    fig, axes = subplots(len(names), cell)
    legend: dict[str, Any] = {}
    for ax, name in zip(axes, names):
        panel = panels.panel(name, data[name], bins)
        edges = panel["edges"]
        ax.stairs(panel["counts"], edges, fill=True, color="#4c72b0", alpha=0.85)
        for q, v in sorted(panel["percentiles"].items(), key=lambda kv: float(kv[0])):
            legend["percentiles"] = ax.axvline(float(v), color="#dd8452", lw=0.9, ls=":")
        for v in (panel["min"], panel["max"]):
            if v is not None:
                legend["min / max"] = ax.axvline(float(v), color="#c44e52", lw=0.9, ls="--")
        if log:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        lo, hi = panel["min"], panel["max"]
        if lo is not None and hi is not None:
            ax.set_xlabel(f"range [{float(lo):.3g}, {float(hi):.3g}]", fontsize=8)
        ax.tick_params(labelsize=7)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower right", fontsize=8, ncols=2,
                   frameon=False)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------
# attention
