"""Independent references for channel surgery: the original model with channels zeroed by hand.

Deleting channel ``c`` of a convolution must give what the original gives
when filter ``c`` (kernel slice and bias) is zero and every BatchNormalization
on its way has ``gamma[c] = beta[c] = 0``: then the channel is exactly zero
everywhere downstream, and the next Dense or convolution adds nothing for it.
`zeroed_copy` builds that model from Keras's own `clone_model` and numpy,
with no kerasurgery code, from a list of edits written out in each test.
"""

from __future__ import annotations

import keras
import numpy as np


def layer_named(model, name):
    """The layer called `name` anywhere in `model` (nested models included)."""
    for layer in model._flatten_layers(include_self=False):
        if layer.name == name:
            return layer
    raise KeyError(name)


def zeroed_copy(model, edits):
    """A copy of `model` (Keras's clone_model, same weights) with some weight slices set to zero.

    Args:
        edits: ``{layer name: [(weight name, axis, channels), ...]}``.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name, changes in edits.items():
        layer = layer_named(copy, name)
        by_name = {v.name: v for v in layer.weights}
        for weight, axis, channels in changes:
            value = np.array(keras.ops.convert_to_numpy(by_name[weight]))
            index = [slice(None)] * value.ndim
            index[axis] = list(channels)
            value[tuple(index)] = 0
            by_name[weight].assign(value)
    return copy


def filters(channels, bias=True, axis=-1):
    """Edits zeroing output channels of a Dense or convolution (kernel's last axis, and bias).

    A transposed convolution's kernel is (..., out, in): pass ``axis=-2``.
    """
    return [("kernel", axis, channels)] + ([("bias", 0, channels)] if bias else [])


def batchnorm(channels):
    """Edits making a BatchNormalization output exactly zero on `channels`."""
    return [("gamma", 0, channels), ("beta", 0, channels)]


def randomize_batchnorms(model, seed=0):
    """Give every BatchNormalization random statistics and parameters (fresh ones are nearly identity).

    Moving means and betas are normal, moving variances uniform in [0.5, 1.5],
    and gamma is uniform in [0.4, 1.2] times the standard deviation, so each
    channel's scale ``gamma / std`` is random in [0.4, 1.2]. Random gammas
    not tied to the variance make deep models (EfficientNetV2, ~100 layers)
    grow their activations by ~1.04 per layer to logits in the thousands,
    where float32 rounding alone differs by 1e-3 relative between any two
    orders of the same arithmetic.
    """
    rng = np.random.default_rng(seed)
    count = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            variance = rng.uniform(0.5, 1.5, n)
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(variance.astype("float32"))
            if layer.scale:
                layer.gamma.assign((rng.uniform(0.4, 1.2, n) * np.sqrt(variance)).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
            count += 1
    return count


def run(model, data):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(data, training=False))
