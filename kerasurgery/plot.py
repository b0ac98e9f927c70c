"""Pictures of what a model computes: feature maps, histograms, attention, the graph.

Every function returns a `matplotlib.figure.Figure` made through pyplot (so
``plt.show()`` displays it and notebooks render it) and never calls ``show()``
itself; save it with ``fig.savefig("maps.png")`` and close it with
``plt.close(fig)`` in loops. matplotlib is imported on first use (install it
with ``pip install kerasurgery[plot]``).

=================  ==========================================================
`feature_maps`     one image per channel of an (H, W, C) activation
`histograms`       value distributions of collected activations or of
                   `kerasurgery.calibrate` statistics, one panel per point
`attention`        one heatmap per head of ``:scores``, with token labels
`graph`            the model's DAG (Graphviz when installed, else matplotlib)
=================  ==========================================================

Example:
    >>> import numpy as np, kerasurgery as ks
    >>> fig = ks.plot.feature_maps(np.random.rand(8, 8, 5), title="conv_1")
    >>> sum(1 for ax in fig.axes if ax.images)
    5
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerasurgery import histdata
from kerasurgery.errors import DataError

_SCALES = ("shared", "per_map")


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a test dependency
        raise ImportError(
            "kerasurgery.plot needs matplotlib. Install it with `pip install kerasurgery[plot]` "
            "(or `pip install matplotlib`)."
        ) from None
    return plt


def _grid(count: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid: columns = ceil(sqrt(count))."""
    cols = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / cols), cols


def _subplots(count: int, cell: float, extra_width: float = 0.0) -> tuple[Any, list]:
    """A figure with exactly `count` axes laid out on a near-square grid."""
    plt = _pyplot()
    rows, cols = _grid(count)
    fig = plt.figure(figsize=(cols * cell + extra_width, rows * cell + 0.6), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(count)]
    return fig, axes


def _array(value: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as e:
        raise DataError(f"Expected {what} as an array. Received: {type(value).__name__} ({e}).") from None


def _pick(array: np.ndarray, ndim: int, sample: int, what: str, example: str) -> np.ndarray:
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


def _channels(total: int, channels: Sequence[int] | None, max_channels: int) -> list[int]:
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


def feature_maps(
    array: Any,
    *,
    channels: Sequence[int] | None = None,
    max_channels: int = 64,
    scale: str = "shared",
    sample: int = 0,
    title: str | None = None,
    cmap: str = "viridis",
    cell: float = 1.5,
) -> Any:
    """A grid of one image per channel of an (H, W, C) activation.

    The grid has ``ceil(sqrt(n))`` columns for the ``n`` channels shown. Each
    image is titled with its channel index.

    Args:
        array: an (H, W, C) array (channels last, as Keras's default), or a
            batch (N, H, W, C) from which `sample` is taken; (H, W) is one channel.
        channels: channel indices to show, in order; default: all, in order.
        max_channels: show at most this many channels.
        scale: ``"shared"``: one colour scale (and one colour bar) for every
            map, so maps compare; ``"per_map"``: each map stretched to its own
            range, so weak channels still show their pattern.
        sample: the batch entry to show when `array` has a batch axis.
        title: the figure's title, e.g. the point's address.
        cmap: a matplotlib colour map name.
        cell: inches per map.

    Returns:
        A matplotlib Figure whose image axes are the shown channels.

    Raises:
        DataError: the array is not (H, W, C) or (N, H, W, C), a channel index
            is out of range, or `scale` is unknown.

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> fig = ks.plot.feature_maps(np.random.rand(2, 6, 6, 10), channels=[0, 3, 7], title="conv")
        >>> [ax.get_title() for ax in fig.axes if ax.images], fig._suptitle.get_text()
        (['0', '3', '7'], 'conv: channels 0, 3, 7 of 10 (sample 0)')
    """
    if scale not in _SCALES:
        raise DataError(f"Expected `scale` to be one of {_SCALES}. Received: scale={scale!r}.")
    data = _array(array, "feature maps")
    batched = data.ndim == 4
    if data.ndim == 2:
        data = data[..., None]
    data = _pick(data, 3, sample, "feature maps", "(H, W, C) or (N, H, W, C)")
    shown = _channels(data.shape[-1], channels, max_channels)
    maps = data[..., shown].astype("float32")
    fig, axes = _subplots(len(shown), cell, extra_width=0.8 if scale == "shared" else 0.0)
    lo, hi = float(np.nanmin(maps)), float(np.nanmax(maps))
    image = None
    for ax, c, i in zip(axes, shown, range(len(shown))):
        kwargs = {"vmin": lo, "vmax": hi} if scale == "shared" else {}
        image = ax.imshow(maps[..., i], cmap=cmap, interpolation="nearest", **kwargs)
        label = str(c) if scale == "shared" else f"{c}: max {float(np.nanmax(maps[..., i])):.2g}"
        ax.set_title(label, fontsize=8, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    if scale == "shared" and image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="activation")
    total = data.shape[-1]
    if shown == list(range(total)):
        what = f"{total} channel{'s' * (total != 1)}"
    elif shown == list(range(len(shown))):
        what = f"channels 0-{len(shown) - 1} of {total}"
    else:
        what = f"channels {', '.join(map(str, shown))} of {total}"
    if batched:
        what += f" (sample {sample})"
    fig.suptitle(f"{title}: {what}" if title else what)
    return fig


# ---------------------------------------------------------------------------
# histograms


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
    fig, axes = _subplots(len(names), cell)
    legend: dict[str, Any] = {}
    for ax, name in zip(axes, names):
        panel = histdata.panel(name, data[name], bins)
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


def _tick_labels(ax: Any, axis: str, tokens: Sequence[str] | None, n: int) -> None:
    if tokens is None:
        return
    step = max(1, math.ceil(n / 40))
    ticks = list(range(0, n, step))
    labels = [str(tokens[i]) for i in ticks]
    if axis == "x":
        ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
    else:
        ax.set_yticks(ticks, labels, fontsize=7)


def attention(
    scores: Any,
    *,
    tokens: Sequence[str] | None = None,
    source_tokens: Sequence[str] | None = None,
    heads: Sequence[int] | None = None,
    sample: int = 0,
    title: str | None = None,
    cmap: str = "magma",
    cell: float = 2.8,
) -> Any:
    """One heatmap per attention head: rows are query tokens, columns keys.

    Args:
        scores: attention weights from ``expose(model, ["mha:scores"])``:
            (batch, heads, target, source), or (heads, target, source).
        tokens: labels of the target (query) positions.
        source_tokens: labels of the source (key) positions; default `tokens`
            when the lengths agree.
        heads: head indices to show; default all.
        sample: the batch entry to show.
        title: the figure's title, e.g. ``"mha:scores"``.
        cmap: a matplotlib colour map name.
        cell: inches per head.

    Returns:
        A matplotlib Figure with one image axes per head shown, titled
        ``head <i>``, sharing one colour scale from 0.

    Raises:
        DataError: wrong number of dimensions, token labels of the wrong
            length, or a head index out of range.

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> s = np.random.dirichlet(np.ones(4), size=(1, 2, 4))
        >>> fig = ks.plot.attention(s, tokens=["the", "cat", "sat", "."], title="mha:scores")
        >>> [ax.get_title() for ax in fig.axes if ax.images]
        ['head 0', 'head 1']
    """
    data = _array(scores, "attention scores")
    data = _pick(data, 3, sample, "attention scores", "(batch, heads, target, source)")
    n_heads, n_t, n_s = data.shape
    if source_tokens is None and tokens is not None and len(tokens) == n_s:
        source_tokens = tokens
    for labels, n, what in ((tokens, n_t, "tokens"), (source_tokens, n_s, "source_tokens")):
        if labels is not None and len(labels) != n:
            raise DataError(
                f"Expected {n} {what} (one per position). Received: {len(labels)} labels for scores "
                f"of shape {data.shape}."
            )
    shown = list(range(n_heads)) if heads is None else [int(h) for h in heads]
    if not shown or any(not 0 <= h < n_heads for h in shown):
        raise DataError(f"Expected head indices in [0, {n_heads}). Received: heads={heads!r}.")
    fig, axes = _subplots(len(shown), cell, extra_width=0.8)
    hi = float(np.nanmax(data[shown])) or 1.0
    image = None
    for ax, h in zip(axes, shown):
        image = ax.imshow(data[h], cmap=cmap, vmin=0.0, vmax=hi, interpolation="nearest")
        ax.set_title(f"head {h}", fontsize=9)
        _tick_labels(ax, "x", source_tokens, n_s)
        _tick_labels(ax, "y", tokens, n_t)
        ax.set_xlabel("key (source)" if source_tokens is not None else "key (source) position", fontsize=8)
        ax.set_ylabel("query (target)" if tokens is not None else "query (target) position", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------
# graph


def graph(
    model_or_graph: Any,
    *,
    highlight: Any = None,
    engine: str = "auto",
    title: str | None = None,
    show_shapes: bool = True,
) -> Any:
    """A drawing of the model's graph: one box per call site, arrows for data.

    Boxes show the name, class (with fused activation) and output shape, and
    are coloured by layer family (with matplotlib, each box is a Text whose
    ``get_gid()`` is its node key); nested models are labelled clusters
    (Graphviz) or share a background band (matplotlib). With
    ``engine="auto"`` Graphviz is used through pydot when both are installed,
    otherwise networkx computes a layered layout that matplotlib draws.

    Args:
        model_or_graph: a Functional or Sequential model, or a graph from
            `kerasurgery.to_graph`.
        highlight: addresses or globs of points to mark with a red border.
        engine: ``"auto"``, ``"graphviz"`` or ``"matplotlib"``.
        title: the title; default the model's name.
        show_shapes: put output shapes in the boxes.

    Returns:
        A matplotlib Figure.

    Raises:
        DataError: unknown `engine`, or ``"graphviz"`` when it is not installed.
        AddressError: `highlight` names no point of the model.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, activation="relu", name="d")(x), name="m")
        >>> fig = ks.plot.graph(model, engine="matplotlib", highlight=["d:pre"])
        >>> [t.get_gid() for t in fig.axes[0].texts if t.get_gid()]  # one box per node
        ['x', 'd']
    """
    from kerasurgery import graphplot

    return graphplot.draw(model_or_graph, highlight=highlight, engine=engine, title=title,
                          show_shapes=show_shapes)


def save_graph(model_or_graph: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """Write a drawing of the graph to ``.svg``, ``.png`` or ``.pdf``.

    With Graphviz (``engine="auto"`` or ``"graphviz"``) the file comes straight
    from ``dot``; otherwise from the matplotlib drawing of `graph`.
    """
    from kerasurgery import graphplot

    graphplot.save(model_or_graph, path, **kwargs)


__all__ = ["attention", "feature_maps", "graph", "histograms", "save_graph"]
