"""`PreActivation`: the value of a layer before its fused activation, with its variables."""

from __future__ import annotations

from typing import Any

import keras

from kerasurgery.layers.kinds import SEPARABLE_LAYERS, SEPARABLE_QUANTIZATION_MODES
from kerasurgery.layers.wrapper import LayerWrapper


@keras.saving.register_keras_serializable(package="kerasurgery")
class PreActivation(LayerWrapper):
    """The value of `layer` before its fused activation, with `layer`'s variables.

    ``PreActivation(dense)(x)`` equals ``x @ dense.kernel + dense.bias`` for a
    Dense layer, whatever ``dense.activation`` is. The wrapped layer is not
    copied: its variables are this layer's variables, so training either moves
    both. The wrapped layer itself is never modified: each call runs its
    ``call`` on a shallow view of it (same attributes and variables, identity
    activation), so eager forward passes (every pass on PyTorch) are safe
    while other threads run the original model. Only layers that apply
    ``self.activation`` as the last step of ``call`` are accepted (see
    `kerasurgery.layers.kinds.SEPARABLE_LAYERS`). A quantized layer
    (``model.quantize("int8")``, ``"int4"``, ``"float8"``, ...) runs its own
    quantized call without the activation: the same quantized arithmetic as
    the layer, stopped before the activation.

    Args:
        layer: a built layer with a separable fused activation.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> dense = keras.layers.Dense(2, activation="relu")
        >>> x = np.array([[1.0, -1.0]], "float32")
        >>> _ = dense(x)
        >>> pre = ks.layers.PreActivation(dense)(x)
        >>> bool(np.allclose(pre, x @ dense.kernel.numpy() + dense.bias.numpy()))
        True
    """

    expected = (
        "a layer whose activation is applied last in call() "
        f"({', '.join(c.__name__ for c in SEPARABLE_LAYERS)}), unquantized or quantized "
        f"with a mode whose quantized call ends with the activation ({', '.join(SEPARABLE_QUANTIZATION_MODES)})"
    )

    @staticmethod
    def accepts(layer: Any) -> bool:
        mode = getattr(layer, "quantization_mode", None)
        return isinstance(layer, SEPARABLE_LAYERS) and (
            mode is None or mode in SEPARABLE_QUANTIZATION_MODES
        )

    def __init__(self, layer: keras.layers.Layer, **kwargs):
        super().__init__(layer, **kwargs)
        self.supports_masking = bool(getattr(layer, "supports_masking", False))

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        view = linear_view(self.layer)
        if view.quantization_mode is not None:
            return view.quantized_call(inputs, training=training)
        return view.call(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def linear_view(layer: keras.layers.Layer) -> keras.layers.Layer:
    """`layer` with an identity activation, sharing every attribute and variable.

    A new object of the same class whose ``__dict__`` is a copy of `layer`'s
    with ``activation`` replaced; `layer` is not touched, so no lock is needed
    and concurrent calls of `layer` keep their activation. Made per call, so it
    sees the layer's current state (LoRA, quantization, new variables).
    """
    view = object.__new__(type(layer))
    view.__dict__.update(layer.__dict__)
    view.__dict__["activation"] = keras.activations.linear
    return view
