"""`feature_maps`: one image per channel of an activation."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.plot._figure import SCALES, as_array, channels_to_draw, pick, subplots


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
    if scale not in SCALES:
        raise DataError(f"Expected `scale` to be one of {SCALES}. Received: scale={scale!r}.")
    data = as_array(array, "feature maps")
    batched = data.ndim == 4
    if data.ndim == 2:
        data = data[..., None]
    data = pick(data, 3, sample, "feature maps", "(H, W, C) or (N, H, W, C)")
    shown = channels_to_draw(data.shape[-1], channels, max_channels)
    maps = data[..., shown].astype("float32")
    fig, axes = subplots(len(shown), cell, extra_width=0.8 if scale == "shared" else 0.0)
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
    elif image is not None:
        note = "colours: each map from its own minimum (dark) to its maximum (bright, in its title)"
        fig.supxlabel(textwrap.fill(note, max(30, int(fig.get_figwidth() * 72 / (8 * 0.55)))), fontsize=8)
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
