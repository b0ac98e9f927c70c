"""What `kerasurgery.fake_quantize` puts into a model: quantize-dequantize of activations and of weights.

=====================  ======================================================
`FakeQuant`            ``(clip(round(x / scale) + zero_point, qmin, qmax) -
                       zero_point) * scale`` with a stored scale and zero
                       point (per tensor or per channel), at a point
`QuantizedWeights`     a layer called with its kernels quantized per output
                       channel (symmetric), sharing its variables
=====================  ======================================================

Both pass gradients straight through (the straight-through estimator):
inside the quantizer's range the gradient is that of the identity, outside
it is zero, so a fake-quantized model can be fine-tuned
(quantization-aware training). The forward value is exactly the
quantize-dequantize value: ``x_c + stop_gradient(q(x) - x_c)`` with ``x_c``
the value clipped to the range, and ``q(x) - x_c`` is exact in floating
point (the two are within a factor of two of each other, or one is 0).
Rounding is to the nearest code, ties to even, as ONNX's QuantizeLinear.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from kerasurgery.errors import TransformError
from kerasurgery.layers.wrapper import LayerWrapper


def _straight_through(x: Any, value: Any, low: Any, high: Any) -> Any:
    """`value` forward; the gradient of `x` clipped to ``[low, high]`` backward."""
    clipped = ops.minimum(ops.maximum(x, low), high)
    return clipped + ops.stop_gradient(value - clipped)


@keras.saving.register_keras_serializable(package="kerasurgery")
class FakeQuant(keras.layers.Layer):
    """Quantize-dequantize with a stored `scale` and `zero_point` (non-trainable weights).

    Args:
        channels: None for one scale and zero point, else their number (one
            per channel on `channel_axis`).
        channel_axis: the channel axis of the input, counted with the batch.
        qmin, qmax: the smallest and largest integer code.
        point: the address this quantizer sits at in the model it was made
            for (`kerasurgery.quantization_error` pairs values by it).

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> layer = ks.layers.FakeQuant.holding(0.5, 0, qmin=-127, qmax=127)
        >>> np.asarray(layer(np.array([[0.2, 0.3, 100.0]], "float32"))).tolist()
        [[0.0, 0.5, 63.5]]
    """

    def __init__(self, channels: int | None = None, channel_axis: int | None = None, qmin: int = -127,
                 qmax: int = 127, point: str | None = None, **kwargs: Any):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.channels = None if channels is None else int(channels)
        self.channel_axis = None if channel_axis is None else int(channel_axis)
        self.qmin, self.qmax = int(qmin), int(qmax)
        self.point = point
        shape = () if self.channels is None else (self.channels,)
        self.scale = self.add_weight(shape=shape, initializer="ones", trainable=False, name="scale")
        self.zero_point = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="zero_point")
        self.supports_masking = True
        self.built = True

    @classmethod
    def holding(cls, scale: Any, zero_point: Any, *, qmin: int, qmax: int, channel_axis: int | None = None,
                point: str | None = None, **kwargs: Any) -> FakeQuant:
        """A layer storing `scale` and `zero_point` (scalars, or arrays with one value per channel)."""
        scale = np.asarray(scale, np.float32)
        per_channel = channel_axis is not None
        layer = cls(channels=scale.size if per_channel else None, channel_axis=channel_axis, qmin=qmin, qmax=qmax,
                    point=point, **kwargs)
        layer.scale.assign(scale.reshape(layer.scale.shape))
        layer.zero_point.assign(np.asarray(zero_point, np.float32).reshape(layer.zero_point.shape))
        return layer

    def _broadcast(self, value: Any, rank: int) -> Any:
        if self.channel_axis is None:
            return value
        shape = [1] * rank
        shape[self.channel_axis] = int(self.channels or 1)
        return ops.reshape(value, shape)

    def _check(self, input_shape: Any) -> None:
        if self.channel_axis is not None:
            rank = len(input_shape)
            if not 0 < self.channel_axis < rank or input_shape[self.channel_axis] not in (None, self.channels):
                raise TransformError(
                    f"Expected a value with {self.channels} channels on axis {self.channel_axis} for the "
                    f"per-channel quantizer '{self.name}'" + (f" of {self.point!r}" if self.point else "")
                    + f". Received: shape {tuple(input_shape)}. Per-channel ranges fit the points they were "
                    "calibrated on."
                )

    def call(self, inputs: Any, training: Any = None) -> Any:
        rank = len(inputs.shape)
        scale = self._broadcast(ops.cast(self.scale, inputs.dtype), rank)
        zero = self._broadcast(ops.cast(self.zero_point, inputs.dtype), rank)
        # clip(round(x / s) + z, qmin, qmax) - z == clip(round(x / s), qmin - z, qmax - z): z is an integer
        value = ops.clip(ops.round(inputs / scale), self.qmin - zero, self.qmax - zero) * scale
        if training is False:  # inference (predict, kerasurgery's runs): no gradient to pass
            return value
        return _straight_through(inputs, value, (self.qmin - zero) * scale, (self.qmax - zero) * scale)

    def compute_output_shape(self, input_shape: Any) -> Any:
        self._check(input_shape)
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(channels=self.channels, channel_axis=self.channel_axis, qmin=self.qmin, qmax=self.qmax,
                      point=self.point)
        return config


#: Kernel attributes and the axes (from the end) that index output channels: kept, one scale each.
_KERNELS = {"kernel": (-1,), "depthwise_kernel": (-2, -1), "pointwise_kernel": (-1,)}
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


def kernels(layer: Any) -> list[tuple[Any, tuple[int, ...]]]:
    """``[(variable, channel axes)]``: the float kernels of `layer` (or of the layer a wrapper holds)."""
    inner = getattr(layer, "layer", None)
    if inner is not None and not hasattr(layer, "kernel"):
        return kernels(inner)
    found = []
    for attribute, axes in _KERNELS.items():
        variable = getattr(layer, attribute, None)
        if isinstance(variable, keras.Variable) and "float" in str(variable.dtype):
            if attribute == "kernel" and isinstance(layer, _TRANSPOSED):
                axes = (-2,)  # (..., out, in)
            found.append((variable, axes))
    return found


def quantize_kernel(kernel: Any, axes: tuple[int, ...], bits: int) -> Any:
    """`kernel` quantized symmetrically (codes ``-(2**(bits-1) - 1) .. 2**(bits-1) - 1``), one scale per
    output channel (the `axes` kept), the gradient passed straight through."""
    rank = len(kernel.shape)
    keep = {a % rank for a in axes}
    reduce = tuple(a for a in range(rank) if a not in keep)
    top = float(2 ** (bits - 1) - 1)
    amax = ops.max(ops.abs(kernel), axis=reduce, keepdims=True) if reduce else ops.abs(kernel)
    scale = ops.where(amax > 0, amax / top, ops.ones_like(amax))
    value = ops.clip(ops.round(kernel / scale), -top, top) * scale
    return _straight_through(kernel, value, -amax, amax)


@keras.saving.register_keras_serializable(package="kerasurgery")
class QuantizedWeights(LayerWrapper):
    """Calls `layer` with its float kernels quantized per output channel, symmetric, at `bits` bits.

    The kernels are quantized at every call from their current values (one
    scale per output channel: ``max |w| / (2**(bits-1) - 1)``), so training
    moves them; `layer` is not copied (its variables are this layer's) and
    is never modified: each call runs ``layer.stateless_call`` with the
    quantized values. Biases and other variables stay float.

    Args:
        layer: a built layer with a float ``kernel`` (Dense, EinsumDense,
            convolutions), ``depthwise_kernel`` or ``pointwise_kernel``, or
            a `PreActivation` of one.
        bits: code width of the kernels, 2 to 16.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> dense = keras.layers.Dense(2, use_bias=False)
        >>> _ = dense(np.zeros((1, 2), "float32"))
        >>> _ = dense.kernel.assign([[1.0, 0.3], [-0.01, 0.6]])
        >>> layer = ks.layers.QuantizedWeights(dense, bits=2)     # codes -1, 0, 1 per column
        >>> np.asarray(layer(np.eye(2, dtype="float32"))).tolist()
        [[1.0, 0.0], [0.0, 0.6000000238418579]]
    """

    expected = "a layer with a float kernel (Dense, EinsumDense, a convolution), or a PreActivation of one"

    @staticmethod
    def accepts(layer: Any) -> bool:
        return bool(kernels(layer))

    def __init__(self, layer: keras.layers.Layer, bits: int = 8, **kwargs: Any):
        super().__init__(layer, **kwargs)
        self.bits = int(bits)
        self.supports_masking = bool(getattr(layer, "supports_masking", False))

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        chosen = {id(v): axes for v, axes in kernels(self.layer)}

        def value(v: Any) -> Any:
            return quantize_kernel(v.value, chosen[id(v)], self.bits) if id(v) in chosen else v.value

        trainable = [value(v) for v in self.layer.trainable_variables]
        state = [value(v) for v in self.layer.non_trainable_variables]
        outputs, _ = self.layer.stateless_call(trainable, state, inputs, *args, **kwargs)
        return outputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return self.layer.compute_mask(inputs, mask) if hasattr(self.layer, "compute_mask") else mask

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["bits"] = self.bits
        return config
