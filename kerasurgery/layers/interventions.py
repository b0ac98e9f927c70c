"""Layers that replace the value at a point: what `kerasurgery.patch` puts into a model.

=================  ==========================================================
`SetValue`         a stored value, broadcast over the batch (an array, a mean
                   from a calibration)
`ZeroValue`        zeros
`BatchMean`        the mean over the batch, computed at run time
`AddVector`        the value plus a stored vector (steering)
`AblateUnits`      the value with the units of a stored mask set to zero
=================  ==========================================================

Each takes the value it replaces as its input (for its batch size, shape and
dtype), returns a tensor of that shape and dtype, and passes Keras masks on.
Stored arrays are non-trainable weights of the layer: `.keras` files save
them with the model, and training the patched model leaves them alone. All
are registered for `.keras` serialization under ``kerasurgery``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


class _Intervention(keras.layers.Layer):
    """Base: an identity-shaped layer that passes its input's dtype and mask on."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


class _Stored(_Intervention):
    """An intervention holding one array (`value`) as a non-trainable weight.

    Args:
        shape: the stored array's shape (broadcastable to the per-sample
            shape of the value it acts on).
        value_dtype: the stored array's dtype.
    """

    def __init__(self, shape: Any = (), value_dtype: str = "float32", **kwargs: Any):
        super().__init__(**kwargs)
        self.value_shape = tuple(int(d) for d in shape)
        self.value_dtype = str(value_dtype)
        self.value = self.add_weight(shape=self.value_shape, dtype=self.value_dtype, initializer="zeros",
                                     trainable=False, name="value")
        self.built = True

    @classmethod
    def holding(cls, array: Any, **kwargs: Any) -> _Stored:
        """A layer storing `array` (float32 unless given as float64 or float16)."""
        array = np.asarray(array)
        dtype = str(array.dtype) if array.dtype in (np.float16, np.float64) else "float32"
        layer = cls(shape=array.shape, value_dtype=dtype, **kwargs)
        layer.value.assign(array.astype(dtype))
        return layer

    def stored(self, like: Any) -> Any:
        """The stored array in the dtype of `like`."""
        return ops.cast(self.value, like.dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(shape=list(self.value_shape), value_dtype=self.value_dtype)
        return config


@keras.saving.register_keras_serializable(package="kerasurgery")
class SetValue(_Stored):
    """Returns its stored value, broadcast to the shape of its input (over the batch).

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> layer = ks.layers.SetValue.holding(np.array([1.0, 2.0]))
        >>> np.asarray(layer(np.zeros((3, 2), "float32"))).tolist()
        [[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]
    """

    def call(self, inputs: Any) -> Any:
        return ops.broadcast_to(self.stored(inputs), ops.shape(inputs))


@keras.saving.register_keras_serializable(package="kerasurgery")
class AddVector(_Stored):
    """Returns its input plus its stored vector (steering).

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> layer = ks.layers.AddVector.holding(np.array([1.0, -1.0]))
        >>> np.asarray(layer(np.ones((2, 2), "float32"))).tolist()
        [[2.0, 0.0], [2.0, 0.0]]
    """

    def call(self, inputs: Any) -> Any:
        return inputs + self.stored(inputs)


@keras.saving.register_keras_serializable(package="kerasurgery")
class AblateUnits(_Stored):
    """Returns its input with the units where its stored mask is non-zero set to zero.

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> layer = ks.layers.AblateUnits.holding(np.array([True, False]))
        >>> np.asarray(layer(np.ones((2, 2), "float32"))).tolist()
        [[0.0, 1.0], [0.0, 1.0]]
    """

    def call(self, inputs: Any) -> Any:
        ablated = ops.not_equal(self.value, ops.zeros((), self.value.dtype))
        return ops.where(ablated, ops.zeros_like(inputs), inputs)


@keras.saving.register_keras_serializable(package="kerasurgery")
class ZeroValue(_Intervention):
    """Returns zeros shaped like its input.

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> np.asarray(ks.layers.ZeroValue()(np.ones((1, 2), "float32"))).tolist()
        [[0.0, 0.0]]
    """

    def call(self, inputs: Any) -> Any:
        return ops.zeros_like(inputs)


@keras.saving.register_keras_serializable(package="kerasurgery")
class BatchMean(_Intervention):
    """Returns the mean of its input over the batch, for every sample.

    Example:
        >>> import numpy as np, kerasurgery as ks
        >>> np.asarray(ks.layers.BatchMean()(np.array([[0.0], [2.0]], "float32"))).tolist()
        [[1.0], [1.0]]
    """

    def call(self, inputs: Any) -> Any:
        values = inputs if "float" in str(inputs.dtype) else ops.cast(inputs, "float32")
        mean = ops.cast(ops.mean(values, axis=0, keepdims=True), inputs.dtype)
        return ops.broadcast_to(mean, ops.shape(inputs))
