"""`resize_maps`: heatmaps at a point's spatial size, resized to an image's size.

A Grad-CAM heatmap has the size of the convolution it was taken at (7x7 for a
224x224 image in many networks). To lay it over the image, resize it:
``ks.grad_cam(..., size="input")`` does it for you, ``resize_maps(maps,
(224, 224))`` afterwards. Resizing is `keras.ops.image.resize` (bilinear by
default, half-pixel centres, as ``tf.image.resize``), clipped to the maps'
own range so that bicubic overshoot never leaves [0, 1].
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasurgery.checks import is_int
from kerasurgery.errors import DataError

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "lanczos3", "lanczos5", "area")


def _check_size(size: Any) -> tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(is_int(s) and s >= 1 for s in size)):
        raise DataError(
            f"Expected `size` to be (height, width) in pixels, e.g. (224, 224). Received: size={size!r}."
        )
    return int(size[0]), int(size[1])


def resize_maps(maps: Any, size: Any, *, interpolation: str = "bilinear") -> np.ndarray:
    """Heatmaps (samples, height, width) resized to `size` = (height, width).

    Args:
        maps: an array (samples, h, w), or one map (h, w).
        size: the new (height, width), e.g. ``images.shape[1:3]``.
        interpolation: one of ``"bilinear"`` (default), ``"nearest"``,
            ``"bicubic"``, ``"lanczos3"``, ``"lanczos5"``, ``"area"``.

    Returns:
        float32 maps of the new size, within the range of the given maps.

    Raises:
        DataError: `maps` is not 2-D or 3-D, `size` or `interpolation` unknown.

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> maps = np.array([[[0.0, 1.0], [0.0, 1.0]]])
        >>> ks.resize_maps(maps, (2, 4)).round(2).tolist()
        [[[0.0, 0.25, 0.75, 1.0], [0.0, 0.25, 0.75, 1.0]]]
    """
    if interpolation not in INTERPOLATIONS:
        raise DataError(
            f"Expected `interpolation` to be one of {INTERPOLATIONS}. Received: interpolation={interpolation!r}."
        )
    height, width = _check_size(size)
    array = np.asarray(maps, dtype="float32")
    single = array.ndim == 2
    if single:
        array = array[None]
    if array.ndim != 3:
        raise DataError(
            f"Expected heatmaps of shape (samples, height, width) or (height, width). Received: shape {array.shape}."
        )
    resized = keras.ops.image.resize(array[..., None], (height, width), interpolation=interpolation,
                                     data_format="channels_last")
    out = np.asarray(keras.ops.convert_to_numpy(resized))[..., 0]
    if array.size:
        out = np.clip(out, array.min(), array.max())
    return out[0] if single else out


def input_size(inputs: Any, size: Any) -> tuple[int, int] | None:
    """What `size` means for a model with these inputs: None, (h, w), or the input's spatial size."""
    if size is None:
        return None
    if isinstance(size, str) and size == "input":
        flat = keras.tree.flatten(inputs)
        shape = tuple(flat[0].shape)
        spatial = shape[1:3] if keras.config.image_data_format() == "channels_last" else shape[2:4]
        if len(flat) != 1 or len(shape) != 4 or any(d is None for d in spatial):
            raise DataError(
                f"Expected a model with one image input of fixed size for size='input'. Received: input "
                f"shape(s) {[tuple(t.shape) for t in flat]}. Pass size=(height, width)."
            )
        return int(spatial[0]), int(spatial[1])
    return _check_size(size)
