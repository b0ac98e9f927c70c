"""`attention`: one heatmap per head of an attention point's ``:scores``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.plot._figure import as_array, pick, subplots


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
    data = as_array(scores, "attention scores")
    data = pick(data, 3, sample, "attention scores", "(batch, heads, target, source)")
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
    fig, axes = subplots(len(shown), cell, extra_width=0.8)
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
