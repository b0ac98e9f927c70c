"""What an operation is, as far as ports are concerned.

Three questions decide which ports (``:pre``, ``:scores``) a node offers:

- does the layer carry a *fused* activation that can be separated
  (`fused_activation`)? Dense, EinsumDense and the convolution families apply
  ``self.activation`` as the very last step of ``call``, so the value before it
  is well defined and the layer's output is ``activation(pre)``;
- is it an activation layer (`is_activation_layer`), whose ``:pre`` is simply
  its input;
- is it an attention layer (`is_attention_layer`) that can return its
  attention weights with ``return_attention_scores=True``?
"""

from __future__ import annotations

from typing import Any

import keras

#: Layer classes (and their subclasses) whose ``activation`` is applied last in
#: ``call`` and can therefore be separated without changing the result.
SEPARABLE_LAYERS: tuple[type, ...] = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)

#: Layers that only apply a non-linearity; their ``:pre`` is their input.
ACTIVATION_LAYERS: tuple[type, ...] = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.Softmax,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
)

#: Layers that return attention weights when called with
#: ``return_attention_scores=True``.
ATTENTION_LAYERS: tuple[type, ...] = (
    keras.layers.MultiHeadAttention,
    keras.layers.GroupQueryAttention,
)

_LINEAR = keras.activations.linear

#: Quantization modes (``layer.quantization_mode``) whose quantized call ends,
#: like ``call``, with ``self.activation`` (Keras 3.15: Dense and EinsumDense).
SEPARABLE_QUANTIZATION_MODES: tuple[str, ...] = ("int8", "int4", "float8", "gptq", "awq")


def activation_name(fn: Any) -> str:
    """A readable name for an activation function (``"relu"``, ``"softmax"``)."""
    if fn is None:
        return "linear"
    try:
        name = keras.activations.serialize(fn)
    except Exception:  # custom callables Keras cannot serialize
        name = None
    if isinstance(name, str):
        return name
    return getattr(fn, "__name__", type(fn).__name__)


def fused_activation(op: Any) -> Any | None:
    """The separable non-linear activation of `op`, or None.

    Returns the activation function when `op` is an instance of one of
    `SEPARABLE_LAYERS` and its activation is not the identity.
    """
    if not isinstance(op, SEPARABLE_LAYERS):
        return None
    fn = getattr(op, "activation", None)
    if fn is None or fn is _LINEAR or activation_name(fn) == "linear":
        return None
    return fn


def float_policy(layer: Any) -> Any:
    """`layer`'s dtype policy without quantization (for layers that take over part of its work).

    A quantized layer's policy (``"int8_from_float32"``) would make any new
    layer given it dispatch to a quantized call it does not have; the float
    policy it was quantized from (``"float32"``, ``"mixed_bfloat16"``) keeps
    the same compute and variable dtypes.
    """
    policy = layer.dtype_policy
    if getattr(policy, "quantization_mode", None) is None:
        return policy
    compute, variable = layer.compute_dtype, layer.variable_dtype
    return keras.DTypePolicy(variable if compute == variable else f"mixed_{compute}")


def is_activation_layer(op: Any) -> bool:
    """True for Activation, ReLU, Softmax, LeakyReLU, ELU and PReLU layers."""
    return isinstance(op, ACTIVATION_LAYERS)


def is_attention_layer(op: Any) -> bool:
    """True for MultiHeadAttention and GroupedQueryAttention layers."""
    return isinstance(op, ATTENTION_LAYERS)


def ports_of(op: Any) -> tuple[str, ...]:
    """The ports (besides plain outputs) that a call of `op` offers."""
    ports = []
    if fused_activation(op) is not None or is_activation_layer(op):
        ports.append("pre")
    if is_attention_layer(op):
        ports.append("scores")
    return tuple(ports)


def is_attention_like(op: Any) -> bool:
    """An attention layer, built-in or not (keras_hub's ``CachedGemmaAttention``, ``LlamaAttention``, ...).

    Such a layer, once opened, offers ``:scores``: the output of the one
    softmax inside it.
    """
    return is_attention_layer(op) or (isinstance(op, keras.layers.Layer) and "attention" in type(op).__name__.lower())


def is_softmax(op: Any) -> bool:
    """A softmax call: the ``Softmax`` layer, an ``Activation("softmax")`` or the raw ``ops.softmax``."""
    if isinstance(op, keras.layers.Softmax):
        return True
    if type(op) is keras.layers.Activation:
        return activation_name(op.activation) == "softmax"
    return type(op).__name__ == "Softmax" and not isinstance(op, keras.layers.Layer)
