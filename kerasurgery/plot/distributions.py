"""`histograms`: value distributions of points, one panel per point, in pages.

A figure holds at most `max_points` panels; the points past them are never
dropped silently: ``page=`` draws the next ones, `histogram_pages` draws every
page, and a figure that does not hold every point says in its title which
points it holds, how many there are, and how to draw the rest.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerasurgery.address.selector import Selector, select
from kerasurgery.errors import DataError
from kerasurgery.plot.panels import panel as panel_of
from kerasurgery.plot._figure import grid, subplots

_BAR = "#4c72b0"
_RANGE = "#222222"
_PERCENTILE = "#dd8452"
#: line styles of the percentile pairs, from the median outwards (q and 100 - q share one).
_STYLES = ("-", "--", "-.", ":", (0, (1, 3)), (0, (5, 2, 1, 2, 1, 2)))


def _as_points(data: Any, title: str | None) -> tuple[Mapping, str | None]:
    if isinstance(data, Mapping) and isinstance(data.get("points"), Mapping) and "model" in data:
        data = data["points"]  # the JSON form of a whole calibration (`Calibration.to_dict()`)
    if not isinstance(data, Mapping):
        name = getattr(data, "address", None) or title or "values"
        return {name: data}, (None if title == name else title)
    return data, title


def _selected(data: Mapping, points: Selector | None) -> list[str]:
    """The keys of `data` to draw: all, or those the selector picks (addresses, globs, a predicate)."""
    if not data:
        raise DataError("Expected at least one point to draw. Received: empty `data`.")
    if points is None:
        return list(data)
    return select([str(k) for k in data], points, what="points", owner="the data given")


def _page_size(max_points: int | None, total: int) -> int:
    if max_points is None:
        return total
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
        raise DataError(
            f"Expected `max_points` to be a positive int or None (every point on one figure). "
            f"Received: max_points={max_points!r}."
        )
    return max_points


def _percentile_label(pair: tuple[float, ...]) -> str:
    names = " and ".join(f"{q:g}" for q in pair)
    return "median (50th percentile)" if pair == (50.0,) else f"{names}th percentile{'s' * (len(pair) > 1)}"


def _pairs(percentiles: Mapping[float, float]) -> list[tuple[float, ...]]:
    """Percentiles grouped as (q, 100 - q), from the median outwards."""
    pairs: list[tuple[float, ...]] = []
    left = sorted(percentiles)
    while left:
        q = left.pop(0)
        mirror = [p for p in left if abs(p - (100.0 - q)) < 1e-9]
        left = [p for p in left if p not in mirror]
        pairs.append((q, *mirror))
    return sorted(pairs, key=lambda pair: abs(50.0 - pair[0]))


def _short_ticks(ax: Any) -> None:
    """At most 4 x ticks written in full (``2e-07``): no offset text to collide with the label."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))


def _draw_panel(ax: Any, name: str, panel: dict, log: bool, legend: dict) -> None:
    legend.setdefault("histogram", ax.stairs(panel["counts"], panel["edges"], fill=True, color=_BAR, alpha=0.85))
    for i, pair in enumerate(_pairs(panel["percentiles"])):
        label = _percentile_label(pair)
        for q in pair:
            line = ax.axvline(panel["percentiles"][q], color=_PERCENTILE, lw=1.0, ls=_STYLES[i % len(_STYLES)])
            line.set_gid(f"percentile:{q:g}")
        legend[label] = line
    for which in ("min", "max"):
        if panel[which] is not None:
            line = ax.axvline(panel[which], color=_RANGE, lw=1.2, ls="-")
            line.set_gid(which)
            legend["min and max (every value)"] = line
    if log:
        ax.set_yscale("log")
    ax.set_title(name, fontsize=9)
    lo, hi = panel["min"], panel["max"]
    span = f" in [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
    ax.set_xlabel(f"value{span}", fontsize=8)
    counted = "count of sampled values" if panel["sampled"] else "count"
    ax.set_ylabel(counted + (" (log scale)" if log else ""), fontsize=8)
    _short_ticks(ax)
    ax.tick_params(labelsize=7)


def _heading(title: str | None, shown: range, total: int, page: int, pages: int) -> str | None:
    if pages == 1:
        return title
    which = f"point {shown.start + 1}" if len(shown) == 1 else f"points {shown.start + 1}-{shown.stop}"
    note = f"showing {which} of {total}: page={page} of pages 0-{pages - 1} (histogram_pages draws them all)"
    return f"{title}\n{note}" if title else note


def histograms(
    data: Any,
    *,
    points: Selector | None = None,
    bins: int = 60,
    log: bool = False,
    max_points: int | None = 16,
    page: int = 0,
    title: str | None = None,
    cell: float = 2.6,
) -> Any:
    """Histograms of activation values, one panel per point, at most `max_points` a figure.

    Takes what `kerasurgery.collect` returns (``{address: array}``), what
    `kerasurgery.calibrate` returns (``{address: PointStats}``, or the
    ``to_dict()`` form of each; their stored histograms are drawn, with the
    observed min and max and the percentiles as lines), a mix of both, or one
    array. Per-channel statistics are drawn as one histogram over all channels.

    Each panel is titled with its address; its x axis is the value (with the
    observed range), its y axis the count (of the sampled values when the
    statistics were sampled; "log scale" when `log`). A legend names every
    kind of line: min and max, and each percentile pair (``0.1 and 99.9th
    percentiles`` share a line style, the median has its own).

    Pages: points beyond `max_points` are not dropped. Panel ``i`` of the
    selected points is on page ``i // max_points``; ``page=`` chooses the page
    (0-based). When the figure does not hold every point, its title says
    which points it holds (``points 17-32 of 36 (page 1 of pages 0-2)``) and
    how to draw the others. `histogram_pages` returns one figure per page.

    Args:
        data: a dict of arrays and/or statistics, or a single array.
        points: which keys to draw: addresses, globs, a list of them or a
            predicate (the selector every `points=` takes); default: every key.
        bins: bins for raw arrays; the finer histograms of statistics are
            merged (exactly, by adding neighbouring cells) to about this many.
        log: logarithmic counts (useful after ReLU, where most values are 0).
        max_points: panels per figure (page); None puts every point on one figure.
        page: which page of `max_points` panels to draw, from 0.
        title: the figure's title.
        cell: inches per panel.

    Returns:
        A matplotlib Figure with one axes per point of the page, titled with
        its address.

    Raises:
        DataError: a requested point is not in `data`, a value is neither an
            array nor a statistics object, `max_points` is not a positive int
            or None, or `page` is out of range.

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> acts = {"dense_1": np.random.randn(100, 8), "dense_1:pre": np.random.randn(100, 8)}
        >>> [ax.get_title() for ax in ks.plot.histograms(acts).axes]
        ['dense_1', 'dense_1:pre']
        >>> many = {f"p{i}": np.random.randn(50) for i in range(5)}
        >>> fig = ks.plot.histograms(many, max_points=2, page=2)
        >>> [ax.get_title() for ax in fig.axes], " ".join(fig.get_suptitle().split()).split(" (")[0]
        (['p4'], 'showing point 5 of 5: page=2 of pages 0-2')
    """
    data, title = _as_points(data, title)
    names = _selected(data, points)
    size = _page_size(max_points, len(names))
    pages = math.ceil(len(names) / size)
    if isinstance(page, bool) or not isinstance(page, int) or not 0 <= page < pages:
        raise DataError(
            f"Expected `page` in [0, {pages}) ({len(names)} points, {size} a page). Received: page={page!r}."
        )
    shown = range(page * size, min(len(names), (page + 1) * size))
    parts = [(name, panel_of(name, data[name], bins)) for name in (names[i] for i in shown)]
    width = grid(len(shown))[1] * cell
    entries = 1 + (1 if any(p["min"] is not None for _, p in parts) else 0) + len(
        {pair for _, p in parts for pair in _pairs(p["percentiles"])})
    legend_columns = max(1, min(4, int(width // 2.3)))
    heading = _heading(title, shown, len(names), page, pages)
    if heading:
        chars = max(20, int(width * 72 / (10 * 0.6)))
        heading = "\n".join(textwrap.fill(line, chars) for line in heading.splitlines())
    extra = 0.19 * math.ceil(entries / legend_columns) + (0.2 * heading.count("\n") if heading else 0.0)
    fig, axes = subplots(len(shown), cell, extra_height=extra)
    legend: dict[str, Any] = {}
    for ax, (name, panel) in zip(axes, parts):
        _draw_panel(ax, name, panel, log, legend)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", fontsize=8,
               ncols=min(legend_columns, len(legend)), frameon=False)
    if heading:
        fig.suptitle(heading, fontsize=11 if pages == 1 else 10)
    return fig


def histogram_pages(data: Any, *, max_points: int | None = 16, **kwargs: Any) -> list:
    """Every page of `histograms`: one figure per `max_points` points, in order.

    Args:
        data: as for `histograms`.
        max_points: panels per figure.
        **kwargs: any other argument of `histograms` (``points``, ``log``,
            ``bins``, ``title``, ``cell``).

    Returns:
        A list of matplotlib Figures; together they hold every point once.

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> many = {f"p{i}": np.random.randn(50) for i in range(5)}
        >>> [len(fig.axes) for fig in ks.plot.histogram_pages(many, max_points=2)]
        [2, 2, 1]
    """
    if "page" in kwargs:
        raise DataError("Expected no `page` for histogram_pages (it draws every page). Received: page=.")
    data, title = _as_points(data, kwargs.pop("title", None))
    names = _selected(data, kwargs.get("points"))
    size = _page_size(max_points, len(names))
    return [histograms(data, max_points=size, page=p, title=title, **kwargs)
            for p in range(math.ceil(len(names) / size))]
