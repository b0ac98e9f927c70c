"""Where deleted channels go: one rule per kind of layer, for `delete_channels`.

A deleted channel is a *slot* of a tensor: index ``c`` on one axis. Layers
tie slots together: a ReLU's output channel ``c`` is its input channel ``c``;
an ``Add`` ties channel ``c`` of every input and of its output; a
``Concatenate`` ties input ``k``'s channel ``c`` to output channel
``offset_k + c``; a ``Flatten`` ties one input channel to every flattened
position holding it; a ``DepthwiseConv`` with multiplier ``m`` ties input
channel ``c`` to outputs ``c*m .. c*m+m-1``. `implied` answers, for one node
and one tensor touching it that lost channels, which other tensors touching
it must lose which channels. `kerasurgery.passes.channels` takes the closure.

*Free* layers end a tie: a Dense or convolution can drop output channels
(units, filters) and input channels (kernel rows) on its own. Layers no rule
covers (custom layers, attention, raw operations other than elementwise
arithmetic) raise `Blocked`, naming the layer and what to do.

Axes count the batch axis (0); every axis here is non-negative.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import keras
import networkx as nx
import numpy as np

from kerasurgery.ir.schema import Slot, template_slots
from kerasurgery.layers import kinds
from kerasurgery.layers.tap import Tap

Tensor = tuple  # (node key, output index)

L = keras.layers
DENSE = (L.Dense,)
CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
CONV_TRANSPOSE = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
RECURRENT = (L.LSTM, L.GRU, L.SimpleRNN)
#: Layers that drop output channels (units, filters, embedding dimensions) and input channels
#: (kernel rows) on their own.
FREE = DENSE + CONV + CONV_TRANSPOSE + SEPARABLE + RECURRENT + (L.Embedding,)
ELEMENTWISE = (
    L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Dropout, L.GaussianNoise, L.GaussianDropout,
    L.AlphaDropout, L.ActivityRegularization, L.Identity, L.UnitNormalization, Tap,
)
SPATIAL = (
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
    L.AveragePooling3D, L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D,
    L.Cropping3D, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
)
GLOBAL_POOLING = (
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
)
MERGE = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
#: Raw keras.ops operations (by class name) applied element by element.
RAW_ELEMENTWISE = {
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power", "Relu", "Relu6",
    "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Swish", "Tanh", "Gelu", "Elu", "Selu", "Softplus",
    "Softsign", "LeakyRelu", "Abs", "Negative", "Square", "Sqrt", "Exp", "Log", "Cast", "Clip",
}


class Blocked(Exception):
    """Deleted channels reach a node where they cannot be removed."""

    def __init__(self, node: str, reason: str, fix: str = ""):
        self.node, self.reason, self.fix = node, reason, fix
        super().__init__(reason)


@dataclasses.dataclass(frozen=True)
class Change:
    """Channels removed from one tensor: indices on `axis` (with the batch axis) of a tensor of `size` there."""

    tensor: Tensor
    axis: int
    channels: frozenset


# ---------------------------------------------------------------------------
# reading the graph


def _slot_key(slot: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.]", slot))


def tensor_inputs(graph: nx.DiGraph, key: str) -> list[tuple[str, Tensor]]:
    """``(slot, tensor)`` of every tensor argument of node `key`, in argument order."""
    found = []
    for parent, _, edge in graph.in_edges(key, data=True):
        for index, slot in edge["feeds"]:
            found.append((slot, (parent, index)))
    return sorted(found, key=lambda item: _slot_key(item[0]))


def shape_of(graph: nx.DiGraph, tensor: Tensor) -> tuple:
    shapes = graph.nodes[tensor[0]].get("output_shapes") or [None]
    shape = shapes[tensor[1]]
    return tuple(shape) if shape is not None else ()


def channel_axis(op: Any, rank: int) -> int:
    """The channel axis of `op`'s tensors of `rank` (1 for ``channels_first``, else the last)."""
    return 1 if getattr(op, "data_format", None) == "channels_first" else rank - 1


def _axis(value: int, rank: int) -> int:
    return value % rank


def _main_input(graph: nx.DiGraph, key: str) -> tuple[str, Tensor]:
    inputs = tensor_inputs(graph, key)
    main = [item for item in inputs if item[0] in ("0", "inputs")]
    return (main or inputs)[0]


def outputs_of(graph: nx.DiGraph, key: str) -> list[Tensor]:
    return [(key, i) for i in range(len(graph.nodes[key].get("output_shapes") or [None]))]


def read_axis(op: Any, rank: int) -> int:
    """The axis a free layer reads its input channels from (kernel rows)."""
    if isinstance(op, DENSE + RECURRENT):
        return rank - 1
    return channel_axis(op, rank)


# ---------------------------------------------------------------------------
# the rules


def implied(graph: nx.DiGraph, key: str, change: Change, forward: bool) -> list[Change]:
    """Changes that `change` forces on the other tensors of node `key`.

    Args:
        graph: the graph.
        key: the node.
        change: channels removed from one tensor of the node: an input
            (`forward`) or one of its outputs (not `forward`).
        forward: whether ``change.tensor`` is an input of the node.

    Returns:
        The changes of the node's other tensors (possibly overlapping ones
        already known; the caller takes the closure).

    Raises:
        Blocked: the channels cannot be removed at this node.
    """
    data = graph.nodes[key]
    if data.get("kind") == "input":
        raise Blocked(key, "it is a model input, whose channels cannot be deleted",
                      "delete channels whose values do not have to match the model's inputs")
    op = data["op"]
    name = f"'{key}' ({type(op).__name__})"
    if getattr(op, "quantization_mode", None) is not None:
        raise Blocked(key, f"{name} is quantized ({op.quantization_mode})",
                      "delete channels before quantizing the model")
    shape = shape_of(graph, change.tensor)
    rank = len(shape)
    axis = change.axis
    if isinstance(op, FREE):
        return _free(graph, key, op, name, change, forward, rank)
    if isinstance(op, DEPTHWISE):
        return _depthwise(graph, key, op, name, change, forward, rank)
    if isinstance(op, L.BatchNormalization):
        if _axis(op.axis, rank) != axis:
            raise Blocked(key, f"{name} normalizes axis {_axis(op.axis, rank)}, but the channels are on axis {axis}")
        return _through(graph, key, change, forward)
    if isinstance(op, L.LayerNormalization):
        axes = [_axis(a, rank) for a in (op.axis if isinstance(op.axis, (list, tuple)) else [op.axis])]
        if axis in axes and axes != [axis]:
            raise Blocked(key, f"{name} normalizes over axes {axes}, which include the channel axis {axis}")
        return _through(graph, key, change, forward)
    if isinstance(op, (L.Softmax,)) or (type(op) is L.Activation and kinds.activation_name(op.activation)
                                         in ("softmax", "log_softmax")):
        given = getattr(op, "axis", -1)
        over = [_axis(a, rank) for a in (given if isinstance(given, (list, tuple)) else [given])]
        if axis in over:
            raise Blocked(key, f"{name} normalizes over the channel axis: removing a channel changes every "
                          "other channel's value", "delete channels of a layer before another layer")
        return _through(graph, key, change, forward)
    if isinstance(op, L.PReLU) or isinstance(op, ELEMENTWISE):
        return _through(graph, key, change, forward)
    if isinstance(op, SPATIAL + GLOBAL_POOLING):
        in_rank = len(shape_of(graph, _main_input(graph, key)[1]))
        in_axis = channel_axis(op, in_rank)
        out_rank = len(shape_of(graph, (key, 0)))
        out_axis = in_axis if out_rank == in_rank else 1
        expected = in_axis if forward else out_axis
        if axis != expected:
            raise Blocked(key, f"{name} works on spatial axes, and the channels reach it on axis {axis}, "
                          f"not its channel axis {expected}")
        return _through(graph, key, change, forward, in_axis=in_axis, out_axis=out_axis)
    if isinstance(op, L.Flatten):
        return _flatten(graph, key, op, change, forward)
    if isinstance(op, L.Reshape):
        return _reshape(graph, key, name, change, forward)
    if isinstance(op, L.Permute):
        dims = [0, *op.dims]
        if forward:
            return [Change(t, dims.index(axis), change.channels) for t in outputs_of(graph, key)]
        return [Change(_main_input(graph, key)[1], dims[axis], change.channels)]
    if isinstance(op, L.Concatenate):
        return _concatenate(graph, key, op, change, forward)
    if isinstance(op, MERGE):
        return _merge(graph, key, change)
    if data.get("kind") == "op" and type(op).__name__ in RAW_ELEMENTWISE:
        _check_scalar_arguments(data, name, key)
        return _merge(graph, key, change)
    raise Blocked(key, f"delete_channels has no rule for {name}",
                  "delete channels whose values do not reach it, or remove it from the model first")


def _through(graph: nx.DiGraph, key: str, change: Change, forward: bool, *, in_axis: int | None = None,
             out_axis: int | None = None) -> list[Change]:
    """A layer that maps channel ``c`` of its one input to channel ``c`` of its output(s)."""
    in_axis = change.axis if in_axis is None else in_axis
    out_axis = change.axis if out_axis is None else out_axis
    if forward:
        return [Change(t, out_axis, change.channels) for t in outputs_of(graph, key)]
    others = [Change(t, out_axis, change.channels) for t in outputs_of(graph, key) if t != change.tensor]
    return [Change(_main_input(graph, key)[1], in_axis, change.channels), *others]


def _free(graph, key, op, name, change, forward, rank) -> list[Change]:
    if isinstance(op, CONV) and getattr(op, "groups", 1) != 1:
        raise Blocked(key, f"{name} is a grouped convolution (groups={op.groups}), whose channels come in "
                      "groups", "delete channels of another layer")
    if forward:
        expected = read_axis(op, rank)
        if change.axis != expected:
            raise Blocked(key, f"{name} reads its input channels on axis {expected}, and the channels reach "
                          f"it on axis {change.axis}")
        return []
    if isinstance(op, RECURRENT):  # every output (sequence and states) holds the units
        return [Change(t, len(shape_of(graph, t)) - 1, change.channels) for t in outputs_of(graph, key)
                if t != change.tensor]
    return []


def _depthwise(graph, key, op, name, change, forward, rank) -> list[Change]:
    axis = channel_axis(op, rank)
    if change.axis != axis:
        raise Blocked(key, f"{name} filters each channel on axis {axis}, and the channels reach it on axis "
                      f"{change.axis}")
    m = int(op.depth_multiplier)
    if forward:
        outputs = frozenset(c * m + j for c in change.channels for j in range(m))
        return [Change((key, 0), axis, outputs)]
    return [Change(_main_input(graph, key)[1], axis, frozenset(c // m for c in change.channels))]


def _flat_positions(in_shape: tuple, axis: int, channels_first: bool) -> np.ndarray:
    """For each index along `axis` of the input (rank with batch), the flattened positions holding it."""
    dims = list(in_shape[1:])
    order = list(range(len(dims)))
    if channels_first and len(dims) > 1:
        order = order[1:] + order[:1]  # Keras moves the channels last before flattening
    permuted = [dims[i] for i in order]
    positions = np.arange(int(np.prod(permuted))).reshape(permuted)
    return np.moveaxis(positions, order.index(axis - 1), 0).reshape(dims[axis - 1], -1)


def _flatten(graph, key, op, change, forward) -> list[Change]:
    in_tensor = _main_input(graph, key)[1]
    in_shape = shape_of(graph, in_tensor)
    if any(d is None for d in in_shape[1:]):
        raise Blocked(key, f"'{key}' (Flatten) has an input of unknown size {in_shape}",
                      "give the model a fixed input size")
    first = getattr(op, "data_format", None) == "channels_first"
    if forward:
        table = _flat_positions(in_shape, change.axis, first)
        return [Change((key, 0), 1, frozenset(int(p) for c in change.channels for p in table[c]))]
    # which input channel each removed position belongs to, on the channel axis the producer uses
    source = graph.nodes[in_tensor[0]].get("op")
    axis = channel_axis(source, len(in_shape))
    table = _flat_positions(in_shape, axis, first)
    owner = np.empty(table.size, dtype=int)
    for c, row in enumerate(table):
        owner[row] = c
    return [Change(in_tensor, axis, frozenset(int(owner[p]) for p in change.channels))]


def _reshape(graph, key, name, change, forward) -> list[Change]:
    in_tensor = _main_input(graph, key)[1]
    src, dst = shape_of(graph, in_tensor)[1:], shape_of(graph, (key, 0))[1:]
    if forward:
        mapped = _surviving_axis(src, dst, change.axis - 1)
    else:
        mapped = _surviving_axis(dst, src, change.axis - 1)
    if mapped is None:
        raise Blocked(key, f"{name} reshapes {tuple(src)} to {tuple(dst)}, which mixes the channel axis with "
                      "others", "delete channels of a layer whose values are not reshaped that way")
    target = (key, 0) if forward else in_tensor
    return [Change(target, mapped + 1, change.channels)]


def _surviving_axis(src: tuple, dst: tuple, axis: int) -> int | None:
    """The axis of `dst` that is axis `axis` of `src` unchanged (same size, same sizes before and after)."""
    if any(d is None for d in (*src, *dst)):
        return None
    after = int(np.prod(src[axis + 1:]))
    for j, size in enumerate(dst):
        if size == src[axis] and int(np.prod(dst[j + 1:])) == after:
            return j
    return None


def _concatenate(graph, key, op, change, forward) -> list[Change]:
    inputs = tensor_inputs(graph, key)
    rank = len(shape_of(graph, (key, 0)))
    cat = _axis(op.axis, rank)
    if change.axis != cat:
        return _merge(graph, key, change)
    offsets, start = [], 0
    for _, tensor in inputs:
        offsets.append(start)
        start += shape_of(graph, tensor)[cat]
    if forward:
        found = []
        for (_, tensor), offset in zip(inputs, offsets):
            if tensor == change.tensor:  # the same tensor may fill several slots
                found.append(Change((key, 0), cat, frozenset(offset + c for c in change.channels)))
        return found
    found = []
    for (_, tensor), offset in zip(inputs, offsets):
        size = shape_of(graph, tensor)[cat]
        mine = frozenset(c - offset for c in change.channels if offset <= c < offset + size)
        if mine:
            found.append(Change(tensor, cat, mine))
    return found


def _merge(graph, key, change) -> list[Change]:
    """Elementwise layers of several inputs: channel ``c`` of every input and of the output go together.

    An input that broadcasts along the channel axis (size 1 there) keeps its channel.
    """
    out_shape = shape_of(graph, (key, 0))
    axis_from_end = len(shape_of(graph, change.tensor)) - change.axis
    found = []
    for tensor in [t for _, t in tensor_inputs(graph, key)] + [(key, 0)]:
        if tensor == change.tensor:
            continue
        shape = shape_of(graph, tensor)
        axis = len(shape) - axis_from_end
        if axis < 0 or shape[axis] == 1 and out_shape[len(out_shape) - axis_from_end] != 1:
            continue
        found.append(Change(tensor, axis, change.channels))
    return found


def _check_scalar_arguments(data: dict, name: str, key: str) -> None:
    """A raw elementwise op may take Python numbers besides its tensors, nothing with a shape."""
    def visit(o):
        if isinstance(o, Slot) or o is None or isinstance(o, (bool, int, float, str)):
            return
        if isinstance(o, (list, tuple)):
            for v in o:
                visit(v)
            return
        if np.ndim(o) != 0:
            raise Blocked(key, f"{name} takes a constant of shape {np.shape(o)}",
                          "delete channels whose values do not reach it")

    visit(data.get("args", ()))
    visit(list(data.get("kwargs", {}).values()))
    if not template_slots(data.get("args", ())):
        raise Blocked(key, f"{name} takes no tensor argument")
