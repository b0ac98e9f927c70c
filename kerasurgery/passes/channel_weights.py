"""Layers with fewer channels: sliced weights and configs, for `delete_channels`.

`narrowed` makes the new layer of one call site from the channels removed
from its input and outputs (`kerasurgery.passes.channel_rules.Change`): a
Dense keeps the kernel rows of the input channels left and the columns of
the units left, a BatchNormalization keeps four slices, a Reshape gets the
new target shape. Each weight is described by the axes that input or output
channels index (`weight_axes`), so `kerasurgery.surgery.ranking` reads the
same tables to score output channels.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasurgery.errors import TransformError
from kerasurgery.ir.clone import clone_op, rebuild
from kerasurgery.passes import channel_rules as rules

L = keras.layers

#: Gate blocks of the recurrent layers' kernels and biases.
GATES = {L.LSTM: 4, L.GRU: 3, L.SimpleRNN: 1}


def gates(op: Any) -> int:
    return next((n for cls, n in GATES.items() if isinstance(op, cls)), 1)


def weight_axes(op: Any) -> dict[str, list[tuple[int, str]]]:
    """``{weight name: [(axis, what)]}``: which axes of each weight input or output channels index.

    ``what`` is ``"in"`` (input channels), ``"out"`` (output channels),
    ``"in*m"`` (input channel ``c`` as the rows ``c*m .. c*m+m-1`` of a
    separable convolution's pointwise kernel) or ``"gates"`` (output units
    inside each gate block of a recurrent layer).
    """
    if isinstance(op, rules.DENSE):
        return {"kernel": [(0, "in"), (1, "out")], "bias": [(0, "out")]}
    if isinstance(op, rules.CONV):
        return {"kernel": [(-2, "in"), (-1, "out")], "bias": [(0, "out")]}
    if isinstance(op, rules.CONV_TRANSPOSE):
        return {"kernel": [(-1, "in"), (-2, "out")], "bias": [(0, "out")]}
    if isinstance(op, rules.SEPARABLE):
        return {"depthwise_kernel": [(-2, "in")], "pointwise_kernel": [(-2, "in*m"), (-1, "out")],
                "bias": [(0, "out")]}
    if isinstance(op, rules.DEPTHWISE):
        return {"kernel": [(-2, "in")], "bias": [(0, "out")]}
    if isinstance(op, rules.RECURRENT):
        bias_axis = 1 if isinstance(op, L.GRU) and op.reset_after else 0
        return {"kernel": [(0, "in"), (1, "gates")], "recurrent_kernel": [(0, "out"), (1, "gates")],
                "bias": [(bias_axis, "gates")]}
    if isinstance(op, L.Embedding):
        return {"embeddings": [(1, "out")]}
    if isinstance(op, (L.BatchNormalization, L.LayerNormalization)):
        return {name: [(0, "in")] for name in ("gamma", "beta", "moving_mean", "moving_variance")}
    return {}


def _keep(size: int, change: rules.Change | None) -> list[int]:
    removed = change.channels if change is not None else frozenset()
    return [c for c in range(size) if c not in removed]


def _index(what: str, keep_in: list[int], keep_out: list[int], op: Any, size: int) -> list[int]:
    if what == "in":
        return keep_in
    if what == "out":
        return keep_out
    if what == "in*m":
        m = int(op.depth_multiplier)
        return [c * m + j for c in keep_in for j in range(m)]
    units = size // gates(op)
    return [g * units + k for g in range(gates(op)) for k in keep_out]


def narrowed(op: Any, in_shape: tuple, ins: rules.Change | None, outs: rules.Change | None,
             out_size: int | None) -> Any:
    """The layer of a call site whose main input lost `ins` and whose outputs lost `outs`.

    Args:
        op: the original layer.
        in_shape: its main input's shape (with the batch axis) before removal.
        ins: channels removed from its main input, or None.
        outs: channels removed from its outputs, or None.
        out_size: the number of output channels before removal.

    Returns:
        A new layer (weights sliced), or an independent copy of `op` when it
        has nothing to slice.
    """
    if isinstance(op, L.Reshape):
        return _reshape(op, outs)
    axes = weight_axes(op)
    if isinstance(op, L.PReLU):
        axes = {"alpha": [(ins.axis - 1, "in")]} if ins is not None else {}
    if isinstance(op, L.LayerNormalization) and ins is not None:
        normalized = op.axis if isinstance(op.axis, (list, tuple)) else [op.axis]
        if ins.axis not in [a % len(in_shape) for a in normalized]:  # gamma is not indexed by channels
            axes = {}
    if not axes and not op.weights:
        return clone_op(op)[0]
    shape = list(in_shape)
    in_axis = ins.axis if ins is not None else rules.read_axis(op, len(shape))
    in_size = shape[in_axis]
    keep_in = _keep(in_size, ins)
    keep_out = _keep(out_size, outs) if out_size is not None else []
    arrays = []
    for variable in op.weights:
        value = np.array(keras.ops.convert_to_numpy(variable))
        for axis, what in axes.get(variable.name, []):
            if (outs if what in ("out", "gates") else ins) is None:
                continue
            if what == "in" and value.shape[axis] == 1 and in_size != 1:  # shared PReLU axis
                continue
            value = np.take(value, _index(what, keep_in, keep_out, op, value.shape[axis]), axis=axis)
        arrays.append(value)
    changes = {}
    if outs is not None and isinstance(op, rules.FREE):
        key = next((k for k in ("units", "filters", "output_dim") if k in op.get_config()), None)
        if key is None:
            raise TransformError(f"Expected a layer with units or filters. Received: '{op.name}'.")
        changes[key] = len(keep_out)
    shape[in_axis] = len(keep_in)
    return rebuild(op, changes, tuple(shape), arrays)


def _reshape(op: Any, outs: rules.Change | None) -> Any:
    config = op.get_config()
    if outs is not None:
        target = list(config["target_shape"])
        position = outs.axis - 1
        if target[position] != -1:
            target[position] -= len(outs.channels)
        config["target_shape"] = tuple(target)
    return type(op).from_config(config)
