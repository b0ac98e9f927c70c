"""kerasurgery's own layers, registered for `.keras` serialization.

=====================  ======================================================
`Tap`                  an identity layer with a stable name, marking a point
`PreActivation`        a layer with a fused activation, called without it,
                       sharing the layer's variables (``:pre``)
`AttentionScores`      an attention call that also returns its weights
                       (``:scores``)
=====================  ======================================================

`kerasurgery.layers.kinds` classifies Keras layers (which offer ``:pre`` or
``:scores``). Every layer here is registered under the package name
``kerasurgery``; importing `kerasurgery` is enough for
`keras.saving.load_model` to find them.
"""

from kerasurgery.layers.attention_scores import AttentionScores
from kerasurgery.layers.pre_activation import PreActivation
from kerasurgery.layers.tap import Tap

__all__ = ["AttentionScores", "PreActivation", "Tap"]
