"""`Tap`: an identity layer with a stable name, marking a point ("hook point")."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="kerasurgery")
class Tap(keras.layers.Layer):
    """Identity layer that marks a point (a "hook point").

    It returns its input as it is, dtype included: it does not cast floats to
    its own compute dtype (``autocast=False``), so a tap on a ``float16``
    tensor of a mixed-precision model passes ``float16`` on.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((3,))
        >>> y = ks.layers.Tap(name="probe_here")(x)
        >>> np.asarray(keras.Model(x, y)(np.ones((1, 3)))).tolist()
        [[1.0, 1.0, 1.0]]
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
