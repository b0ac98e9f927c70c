"""`grad_cam`: Grad-CAM and Grad-CAM++ heatmaps at a convolution, on every backend.

Grad-CAM (Selvaraju et al. 2017), as the keras-io recipe computes it: the
gradient ``g`` of the class score (before a final softmax) with respect to the
point's activations ``A`` (batch, height, width, channels), averaged over the
spatial positions into one weight per channel; the heatmap is
``relu(sum_c A[..., c] * weight_c)`` divided by its maximum. Grad-CAM++
(Chattopadhay et al. 2018) weighs each position by
``alpha = g^2 / (2 g^2 + sum_ij(A) g^3)`` (0 where ``g`` is 0) and each
channel by ``sum_ij(alpha * relu(g))``: the closed form of the paper with
the exponential of the score, whose factor cancels in the normalization.

Both read ``A`` and ``g`` from one compiled forward and backward pass per batch
(`kerasurgery.gradients` with the point's values), so a point inside a nested
base model (transfer learning) works like any other. The heatmap has the
point's spatial size; ``size=`` (or `resize_maps`) resizes it bilinearly.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasurgery.attribution.plan import MapSink, gradient_plan
from kerasurgery.attribution.resize import input_size, resize_maps
from kerasurgery.errors import DataError
from kerasurgery.runtime.inputs import adapt, check_batch_size
from kerasurgery.runtime.loop import run

METHODS = ("grad_cam", "grad_cam++")


def normalize(cam: np.ndarray) -> np.ndarray:
    """``relu(cam) / max(cam)`` per sample; a map whose maximum is not positive is all zeros."""
    axes = tuple(range(1, cam.ndim))
    peak = cam.max(axis=axes, keepdims=True)
    safe = np.where(peak > 0, peak, 1)
    return np.where(peak > 0, np.maximum(cam, 0) / safe, 0)


def cam_maps(values: np.ndarray, grads: np.ndarray, method: str = "grad_cam") -> np.ndarray:
    """Heatmaps (batch, *spatial) from activations and gradients (batch, *spatial, channels).

    Example:
        >>> import numpy as np
        >>> a = np.stack([np.eye(2), 1 - np.eye(2)], axis=-1)[None]   # (1, 2, 2, 2)
        >>> g = np.ones_like(a) * np.array([1.0, -0.5])                 # channel 1 counts against
        >>> cam_maps(a, g).round(2).tolist()
        [[[1.0, 0.0], [0.0, 1.0]]]
    """
    a = values.astype("float64")
    g = grads.astype("float64")
    axes = tuple(range(1, a.ndim - 1))
    if method == "grad_cam":
        weights = g.mean(axis=axes)
    else:
        g2 = g * g
        denominator = 2 * g2 + a.sum(axis=axes, keepdims=True) * g2 * g
        alpha = np.where(g != 0, g2 / np.where(denominator != 0, denominator, 1), 0)
        weights = (alpha * np.maximum(g, 0)).sum(axis=axes)
    cam = np.einsum("b...c,bc->b...", a, weights)
    return normalize(cam).astype("float32")


def _channels_last(array: np.ndarray) -> np.ndarray:
    if keras.config.image_data_format() == "channels_first":
        return np.moveaxis(array, 1, -1)
    return array


def grad_cam(
    model: keras.Model,
    data: Any,
    point: str,
    *,
    class_index: Any = None,
    method: str = "grad_cam",
    size: Any = None,
    batch_size: int = 32,
    training: bool = False,
    progress: bool | None = None,
) -> np.ndarray:
    """Grad-CAM (or Grad-CAM++) heatmaps of `data` at `point`, in [0, 1].

    Args:
        model: a classifier (one output of class scores, with or without a
            final softmax/sigmoid; the score before it is used).
        data: images, as for `kerasurgery.collect`.
        point: the address of a spatial activation, usually the last
            convolution's output (``"block14_sepconv2_act"`` in Xception;
            ``"mobilenetv2_1.00_224/out_relu"`` inside a nested base model).
        class_index: None (each image's predicted class), a class index, or
            one class index per image.
        method: ``"grad_cam"`` or ``"grad_cam++"``.
        size: None (the point's spatial size), ``(height, width)``, or
            ``"input"`` (the model's input size): bilinear resizing, see
            `resize_maps`.
        batch_size: rows per batch for data held in memory.
        training: run layers in training mode (Dropout, BatchNormalization).
        progress: show a progress bar; None shows it when stdout is a terminal.

    Returns:
        An array (samples, height, width) of float32 in [0, 1]; each map is
        divided by its maximum, and a map with no positive evidence is all 0.

    Raises:
        AddressError: `point` is not an address of `model`.
        DataError: `point` has no spatial axes, `method` or `size` is unknown,
            a class index is out of range, the model has several outputs.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((8, 8, 3), name="image")
        >>> h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
        >>> h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="softmax", name="out")(h))
        >>> maps = ks.grad_cam(model, np.random.rand(2, 8, 8, 3), "conv", class_index=1)
        >>> maps.shape, bool(maps.min() >= 0 and maps.max() <= 1)
        ((2, 6, 6), True)
        >>> ks.grad_cam(model, np.random.rand(2, 8, 8, 3), "conv", size="input").shape
        (2, 8, 8)
    """
    if method not in METHODS:
        raise DataError(f"Expected `method` to be one of {METHODS}. Received: method={method!r}.")
    if not isinstance(point, str):
        raise DataError(f"Expected `point` to be one address, e.g. 'conv_5'. Received: point={point!r}.")
    if isinstance(class_index, str) or callable(class_index):
        raise DataError(
            f"Expected `class_index` to be None, a class index or one per sample. Received: {class_index!r}. "
            "For another target use `kerasurgery.gradients`."
        )
    batch_size = check_batch_size(batch_size)
    plan = gradient_plan(model, [point], target=class_index, training=training, values=True, what="class_index")
    shape = plan.model.input[1][0].shape
    if len(shape) < 3:
        raise DataError(
            f"Expected a point with spatial axes and channels, (batch, height, width, channels), such as the "
            f"last convolution's output. Received: {point!r} of shape {tuple(shape)}."
        )
    target_size = input_size(plan.probe.input, size)
    source = adapt(data, plan.probe, batch_size=batch_size)
    plan.target.check_samples(source.num_samples)

    def make(outputs: dict) -> np.ndarray:
        return cam_maps(_channels_last(outputs["values"][0]), _channels_last(outputs["gradients"][0]), method)

    sink = MapSink(make, plan.target.provide)
    n = run(plan, source, sink, progress=progress)  # type: ignore[arg-type]
    plan.target.check_samples(n)
    maps = sink.finish(n)
    return maps if target_size is None else resize_maps(maps, target_size)
