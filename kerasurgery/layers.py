"""kerasurgery's own layers, registered for `.keras` serialization.

- `Tap`: an identity layer with a stable name, marking a point of interest.
- `PreActivation`: calls a layer that has a fused activation with that
  activation replaced by the identity, sharing the layer's variables.

Both are registered under the package name ``kerasurgery``; importing
`kerasurgery` is enough for `keras.saving.load_model` to find them.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasurgery import kinds


@keras.saving.register_keras_serializable(package="kerasurgery")
class Tap(keras.layers.Layer):
    """Identity layer that marks a point (a "hook point").

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((3,))
        >>> y = ks.layers.Tap(name="probe_here")(x)
        >>> np.asarray(keras.Model(x, y)(np.ones((1, 3)))).tolist()
        [[1.0, 1.0, 1.0]]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


class _Wrapper(keras.layers.Layer):
    """A layer that calls another layer object (shared, not copied).

    Subclasses say which layers they accept with `accepts` and `expected`.
    """

    expected = ""

    @staticmethod
    def accepts(layer: Any) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def __init__(self, layer: keras.layers.Layer, **kwargs):
        if not self.accepts(layer):
            from kerasurgery.errors import TransformError

            raise TransformError(f"Expected {self.expected}. Received: {layer!r}.")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self.layer = layer

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layer"] = keras.saving.serialize_keras_object(self.layer)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        return cls(layer, **config)


@keras.saving.register_keras_serializable(package="kerasurgery")
class PreActivation(_Wrapper):
    """The value of `layer` before its fused activation, with `layer`'s variables.

    ``PreActivation(dense)(x)`` equals ``x @ dense.kernel + dense.bias`` for a
    Dense layer, whatever ``dense.activation`` is. The wrapped layer is not
    copied: its variables are this layer's variables, so training either moves
    both. The wrapped layer itself is never modified: each call runs its
    ``call`` on a shallow view of it (same attributes and variables, identity
    activation), so eager forward passes (every pass on PyTorch) are safe
    while other threads run the original model. Only layers that apply
    ``self.activation`` as the last step of ``call`` are accepted (see
    `kerasurgery.kinds.SEPARABLE_LAYERS`).

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

    expected = "a layer whose activation is applied last in call() " + (
        f"({', '.join(c.__name__ for c in kinds.SEPARABLE_LAYERS)})"
    )

    @staticmethod
    def accepts(layer: Any) -> bool:
        return isinstance(layer, kinds.SEPARABLE_LAYERS)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs):
        return _linear_view(self.layer).call(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def _linear_view(layer: keras.layers.Layer) -> keras.layers.Layer:
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


@keras.saving.register_keras_serializable(package="kerasurgery")
class AttentionScores(_Wrapper):
    """Calls an attention layer with ``return_attention_scores=True``.

    Returns ``(output, scores)`` from the wrapped MultiHeadAttention or
    GroupQueryAttention layer, whose variables it shares. A wrapper is needed
    because a Keras functional model expects every call of one layer to return
    the same number of tensors as its first call.

    Args:
        layer: a MultiHeadAttention or GroupQueryAttention layer.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2)
        >>> x = np.ones((1, 3, 4), "float32")
        >>> out, scores = ks.layers.AttentionScores(mha)(x, x)
        >>> tuple(scores.shape)
        (1, 2, 3, 3)
    """

    expected = "a MultiHeadAttention or GroupQueryAttention layer"

    @staticmethod
    def accepts(layer: Any) -> bool:
        return kinds.is_attention_layer(layer)

    def call(self, query, value, key=None, training=None, **kwargs):
        kwargs.pop("return_attention_scores", None)
        return self.layer(query, value, key=key, training=training, return_attention_scores=True, **kwargs)

    def compute_output_spec(self, query, value, key=None, training=None, **kwargs):
        kwargs.pop("return_attention_scores", None)
        return self.layer.compute_output_spec(query, value, key=key, return_attention_scores=True, **kwargs)
