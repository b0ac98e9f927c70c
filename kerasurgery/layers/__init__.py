"""kerasurgery's own layers, registered for `.keras` serialization.

=====================  ======================================================
`Tap`                  an identity layer with a stable name, marking a point
`PreActivation`        a layer with a fused activation, called without it,
                       sharing the layer's variables (``:pre``)
`AttentionScores`      an attention call that also returns its weights
                       (``:scores``)
`OutputNamedModel`     a functional model keeping given output names
`SizedCall`            a traced call whose constants follow the input sizes
`VariableRead`         a variable's value, for traced calls that read it
`NamedCall`            a layer called under a unique name (flat rebuilds)
`SetValue`,            what `kerasurgery.patch` puts at a point: a stored
`ZeroValue`,           value, zeros, the batch mean, the value plus a
`BatchMean`,           vector, the value with masked units zeroed
`AddVector`,
`AblateUnits`
`FakeQuant`            quantize-dequantize at a point (`fake_quantize`)
`QuantizedWeights`     a layer called with its kernels quantized per channel
=====================  ======================================================

`kerasurgery.layers.kinds` classifies Keras layers (which offer ``:pre`` or
``:scores``). Every layer here is registered under the package name
``kerasurgery``; importing `kerasurgery` is enough for
`keras.saving.load_model` to find them.
"""

from kerasurgery.layers.attention_scores import AttentionScores
from kerasurgery.layers.fake_quant import FakeQuant, QuantizedWeights
from kerasurgery.layers.interventions import AblateUnits, AddVector, BatchMean, SetValue, ZeroValue
from kerasurgery.layers.named_outputs import OutputNamedModel
from kerasurgery.layers.pre_activation import PreActivation
from kerasurgery.layers.tap import Tap
from kerasurgery.layers.traced import NamedCall, SizedCall, VariableRead

__all__ = ["AblateUnits", "AddVector", "AttentionScores", "BatchMean", "FakeQuant", "NamedCall", "OutputNamedModel",
           "PreActivation", "QuantizedWeights", "SetValue", "SizedCall", "Tap", "VariableRead", "ZeroValue"]
