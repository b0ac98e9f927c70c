"""`AttentionScores`: an attention call that also returns its attention weights."""

from __future__ import annotations

from typing import Any

import keras

from kerasurgery.layers.kinds import is_attention_layer
from kerasurgery.layers.wrapper import LayerWrapper


@keras.saving.register_keras_serializable(package="kerasurgery")
class AttentionScores(LayerWrapper):
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
        return is_attention_layer(layer)

    def call(self, query, value, key=None, training=None, **kwargs):
        kwargs.pop("return_attention_scores", None)
        return self.layer(query, value, key=key, training=training, return_attention_scores=True, **kwargs)

    def compute_output_spec(self, query, value, key=None, training=None, **kwargs):
        kwargs.pop("return_attention_scores", None)
        return self.layer.compute_output_spec(query, value, key=key, return_attention_scores=True, **kwargs)
