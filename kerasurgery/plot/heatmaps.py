"""`heatmaps`: attribution maps laid over their images, with a colour bar."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.plot._figure import as_array, pyplot


def _images(images: Any) -> np.ndarray:
    data = as_array(images, "images")
    if data.ndim == 2 or (data.ndim == 3 and data.shape[-1] in (1, 3, 4)):
        data = data[None]
    if data.ndim == 3:  # (N, H, W) grey images
        data = data[..., None]
    if data.ndim != 4 or data.shape[-1] not in (1, 3, 4):
        raise DataError(
            "Expected images of shape (N, H, W, 3), (N, H, W, 1), (N, H, W) or one image (H, W, 3). "
            f"Received: an array of shape {np.shape(images)}."
        )
    return data


def displayable(image: np.ndarray) -> np.ndarray:
    """An image ready for ``imshow``: uint8 as it is, floats stretched to [0, 1] when outside it."""
    if image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype == np.uint8:
        return image
    image = image.astype("float32")
    lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
    if lo < 0 or hi > 1:
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return image


def heatmaps(
    images: Any,
    maps: Any,
    *,
    alpha: float = 0.45,
    cmap: str = "jet",
    titles: Sequence[str] | None = None,
    columns: int | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    label: str = "attribution",
    title: str | None = None,
    cell: float = 2.4,
) -> Any:
    """Each heatmap over its image, one panel per image, with one shared colour bar.

    A map smaller than its image (Grad-CAM at a 7x7 convolution) is stretched
    over the whole image and drawn with bilinear smoothing; the numbers are
    not resampled (use `kerasurgery.resize_maps` for that).

    Args:
        images: (N, H, W, 3) or (N, H, W, 1) or (N, H, W), or one image.
            Floats outside [0, 1] (preprocessed inputs) are stretched to it
            for display, uint8 is shown as it is.
        maps: (N, h, w) heatmaps (`kerasurgery.grad_cam`,
            `kerasurgery.saliency`), or one (h, w).
        alpha: opacity of the heatmaps.
        cmap: a matplotlib colour map name.
        titles: one title per panel (e.g. the class explained).
        columns: panels per row; default up to 4.
        vmin, vmax: the colour scale, shared by every panel; default
            0 (or the smallest value if negative) to the largest value.
        label: the colour bar's label.
        title: the figure's title.
        cell: inches per panel.

    Returns:
        A matplotlib Figure whose axes each show one image and its heatmap.

    Raises:
        DataError: shapes that are not images and maps, or counts that differ.

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> images, maps = np.random.rand(3, 32, 32, 3), np.random.rand(3, 4, 4)
        >>> fig = ks.plot.heatmaps(images, maps, titles=["cat", "dog", "cat"])
        >>> [ax.get_title() for ax in fig.axes if len(ax.images) == 2]
        ['cat', 'dog', 'cat']
    """
    pics = _images(images)
    values = as_array(maps, "heatmaps").astype("float32")
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise DataError(f"Expected heatmaps of shape (N, h, w) or (h, w). Received: shape {values.shape}.")
    if len(values) != len(pics):
        raise DataError(f"Expected one heatmap per image. Received: {len(pics)} images and {len(values)} maps.")
    if titles is not None and len(titles) != len(pics):
        raise DataError(f"Expected one title per image. Received: {len(titles)} titles for {len(pics)} images.")
    lo = float(np.nanmin(values)) if vmin is None else float(vmin)
    lo = min(lo, 0.0) if vmin is None else lo
    hi = float(np.nanmax(values)) if vmax is None else float(vmax)
    hi = hi if hi > lo else lo + 1.0
    cols = max(1, min(len(pics), columns or 4))
    rows = -(-len(pics) // cols)
    plt = pyplot()
    fig = plt.figure(figsize=(cols * cell + 0.9, rows * cell + (0.5 if title else 0.2)), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(pics))]
    overlay = None
    for i, ax in enumerate(axes):
        height, width = pics[i].shape[:2]
        ax.imshow(displayable(pics[i]), cmap="gray" if pics[i].shape[-1] == 1 else None, extent=(0, width, height, 0))
        overlay = ax.imshow(values[i], cmap=cmap, alpha=alpha, vmin=lo, vmax=hi, interpolation="bilinear",
                            extent=(0, width, height, 0))
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    if overlay is not None:
        fig.colorbar(overlay, ax=axes, shrink=0.8, label=label)
    if title:
        fig.suptitle(title)
    return fig
