"""What a gradient is taken of: one scalar per sample, from `target=` or `y=`/`loss=`.

==========================  ==================================================
``target=None``             the predicted class's score (the largest one)
``target=3``                the score of class 3 for every sample
``target=[3, 0, ...]``      one class index per sample
``target="block_2/conv"``   the sum over each sample of that point's value
``target=fn``               ``fn(outputs)``: a function of the model's outputs
                            (as ``model(x)`` returns them), written with
                            `keras.ops`, returning one value per sample
``y=..., loss="mse"``       the loss of the model's output against ``y``
==========================  ==================================================

A class *score* is the model's output where it is a plain vector of class
values, and the value before a final softmax or sigmoid where the model ends
with one (``predictions:pre``): Grad-CAM and saliency differentiate the
score, not the probability, which saturates. Every target is checked before
any batch runs: an index out of range, a point that is not an address, a
function that does not return one value per sample, labels that the loss
refuses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import networkx as nx
import numpy as np
from keras import ops

from kerasurgery import keras_internals as internals
from kerasurgery.address.grammar import point_address
from kerasurgery.checks import is_int
from kerasurgery.errors import DataError
from kerasurgery.ir.resolve import Resolver
from kerasurgery.ir.schema import Ref, is_ref_leaf, map_structure, output_refs
from kerasurgery.layers import kinds

MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


@dataclasses.dataclass
class Target:
    """A per-sample scalar target, ready to be differentiated.

    Attributes:
        addresses: the points the objective reads (``{address: value}``), or
            None for the model's own outputs (in their structure).
        objective: ``objective(values, *extra) -> (batch,)`` in `keras.ops`.
        extra: ``(shape, dtype)`` of each per-batch extra argument.
        provide: ``provide(start, rows)``: the extra arrays of those samples.
        key: what the compiled objective depends on (hashable).
        used: flat indices of the outputs the objective reads (None: all).
        mean: divide the results by ``count`` (a loss reduced by its mean).
        per_sample: loss values per sample (``count = samples * per_sample``).
        samples: samples the extra arrays cover (None: any number).
        what: how errors name the target.
    """

    addresses: list[str] | None
    objective: Callable
    extra: tuple = ()
    provide: Callable[[int, int], tuple] = lambda start, rows: ()
    key: Any = None
    used: list[int] | None = None
    mean: bool = False
    per_sample: int = 1
    samples: int | None = None
    what: str = "target"

    def check_samples(self, n: int | None) -> None:
        """Refuse per-sample arrays (class indices, labels) of another length than the data."""
        if self.samples is not None and n is not None and n != self.samples:
            raise DataError(
                f"Expected one entry of {self.what} per sample of the data ({n} samples). Received: "
                f"{self.samples}. Give as many as there are samples."
            )


def _per_sample(array: np.ndarray, what: str) -> Callable[[int, int], tuple]:
    def provide(start: int, rows: int) -> tuple:
        part = array[start : start + rows]
        if len(part) != rows:
            raise DataError(
                f"Expected one entry of {what} per sample of the data. Received: {len(array)} for more "
                f"than {start + len(part)} samples. Give as many as there are samples."
            )
        return (part,)

    return provide


# ---------------------------------------------------------------------------
# class scores


def score_address(graph: nx.DiGraph) -> tuple[str, int]:
    """The address of the model's class scores and the number of classes.

    The model's single output, or its ``:pre`` when that output is a softmax
    or sigmoid (fused in the last layer, or an activation layer).
    """
    refs = output_refs(graph)
    if len(refs) != 1:
        raise DataError(
            f"Expected a model with one output for a class index target. Received: model "
            f"'{graph.graph.get('name')}' with {len(refs)} outputs. Pass `target=` a point's address "
            "(e.g. 'head:pre') or a function of the outputs, e.g. `lambda out: out['head'][:, 3]`."
        )
    ref = refs[0]
    data = graph.nodes[ref.node]
    op = data.get("op")
    several = len(data.get("output_shapes", [None])) > 1
    address = point_address(ref.node, ref.index if several else None)
    fused = kinds.fused_activation(op)
    if fused is not None:
        final = kinds.activation_name(fused)
    elif kinds.is_softmax(op):
        final = "softmax"
    elif type(op) is keras.layers.Activation:
        final = kinds.activation_name(op.activation)
    else:
        final = None
    shape = tuple(data["output_shapes"][ref.index])
    if final in ("softmax", "sigmoid"):
        address = point_address(ref.node, ref.index if several else None, "pre")
    if len(shape) != 2 or shape[-1] is None:
        raise DataError(
            f"Expected class scores of shape (batch, classes) for a class index target. Received: "
            f"output {address!r} of shape {shape}. Pass `target=` a function of the outputs that "
            "returns one value per sample, e.g. `lambda out: keras.ops.mean(out[:, :, :, 3], axis=(1, 2))`."
        )
    return address, int(shape[-1])


def _class_objective(address: str, given: bool) -> Callable:
    def objective(values: dict, *extra: Any) -> Any:
        scores = values[address]
        index = extra[0] if given else ops.argmax(scores, axis=-1)
        index = ops.expand_dims(ops.cast(index, "int32"), -1)
        return ops.take_along_axis(scores, index, axis=-1)[:, 0]

    return objective


def class_target(graph: nx.DiGraph, index: Any, what: str = "target") -> Target:
    """The class score of `index`: None (predicted class), an int, or one int per sample."""
    address, classes = score_address(graph)
    if index is None:
        return Target([address], _class_objective(address, False), key=("class", address, None), what=what)
    if is_int(index):
        if not 0 <= int(index) < classes:
            raise DataError(
                f"Expected `{what}` to be a class index from 0 to {classes - 1} ({address!r} has "
                f"{classes} classes). Received: {what}={index!r}."
            )
        value = int(index)
        return Target([address], _class_objective(address, True), (((None,), "int32"),),
                      lambda start, rows: (np.full(rows, value, "int32"),), ("class", address, "given"), what=what)
    array = np.asarray(index)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"Expected `{what}` to be None, a class index or one class index per sample (a 1-D array "
            f"of integers). Received: {type(index).__name__} of shape {array.shape} and dtype {array.dtype}."
        )
    bad = np.flatnonzero((array < 0) | (array >= classes))
    if bad.size:
        raise DataError(
            f"Expected class indices from 0 to {classes - 1} ({address!r} has {classes} classes). "
            f"Received: {int(array[bad[0]])} for sample {int(bad[0])} ({bad.size} out of range)."
        )
    return Target([address], _class_objective(address, True), (((None,), "int32"),),
                  _per_sample(array.astype("int32"), f"`{what}`"), ("class", address, "given"),
                  samples=len(array), what=f"`{what}`")


# ---------------------------------------------------------------------------
# points and functions


def _sum_per_sample(tensor: Any) -> Any:
    axes = tuple(range(1, len(tensor.shape)))
    return ops.sum(tensor, axis=axes) if axes else tensor


def address_target(graph: nx.DiGraph, address: str) -> Target:
    """The sum over each sample of the value at `address`."""
    Resolver(graph).resolve_one(address)

    def objective(values: dict) -> Any:
        return _sum_per_sample(values[address])

    return Target([address], objective, key=("point", address), what=f"target {address!r}")


def _symbolic_outputs(graph: nx.DiGraph) -> tuple[Any, list]:
    """KerasTensors in the model's output structure, and the flat list of them."""
    flat: list = []

    def make(ref: Ref) -> Any:
        data = graph.nodes[ref.node]
        shape = (None, *tuple(data["output_shapes"][ref.index])[1:])
        flat.append(keras.KerasTensor(shape, dtype=data["output_dtypes"][ref.index]))
        return flat[-1]

    return map_structure(make, graph.graph["outputs"], leaf=is_ref_leaf), flat


def _used(result: Any, flat: list) -> list[int]:
    """Indices of the tensors of `flat` that `result` was computed from."""
    seen: set[int] = set()
    stack = [result]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.extend(internals.parent_tensors(t))
    return [i for i, t in enumerate(flat) if id(t) in seen]


def function_target(graph: nx.DiGraph, fn: Callable) -> Target:
    """``fn(outputs)``: one value per sample, checked on symbolic outputs first."""
    symbolic, flat = _symbolic_outputs(graph)
    example = "`lambda out: out[:, 3]` or `lambda out: keras.ops.sum(out ** 2, axis=-1)`"
    try:
        with internals.names_unchanged():
            result = fn(symbolic)
    except Exception as e:  # noqa: BLE001 - any failure of user code on symbolic tensors
        raise DataError(
            f"Expected `target` to be a function of the model's outputs written with keras.ops, such as "
            f"{example}. Received: {fn!r}, which failed on symbolic outputs: {type(e).__name__}: {e}"
        ) from e
    shape = getattr(result, "shape", None)
    if not isinstance(result, keras.KerasTensor) or tuple(shape) != (None,):
        got = f"shape {tuple(shape)}" if shape is not None else f"a {type(result).__name__}"
        raise DataError(
            f"Expected `target` to return one value per sample, shape (batch,). Received: {got}, which "
            "is not one scalar per sample. Reduce it, e.g. pick a class (`out[:, 3]`) or sum "
            "(`keras.ops.sum(out, axis=-1)`)."
        )
    return Target(None, fn, key=("function", fn), used=_used(result, flat), what="the target function")


# ---------------------------------------------------------------------------
# losses


def _loss_call(loss: Any) -> tuple[Callable, bool, Any]:
    """``(call(y_true, y_pred) -> unreduced values, mean?, key)`` of a loss given as Keras accepts it."""
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError as e:
            raise DataError(
                f"Expected `loss` to name a Keras loss ('mse', 'categorical_crossentropy', ...) or be a "
                f"keras.losses.Loss or a function. Received: loss={loss!r} ({e})."
            ) from None
    if isinstance(loss, keras.losses.Loss):
        return loss.call, loss.reduction in MEAN_REDUCTIONS, loss
    if callable(loss):
        return loss, True, loss
    raise DataError(
        f"Expected `loss` to be a Keras loss: a name, a keras.losses.Loss or a function. Received: {loss!r}."
    )


def loss_target(model: Any, graph: nx.DiGraph, y: Any, loss: Any) -> Target:
    """The loss of the model's single output against the labels `y`."""
    if y is None:
        raise DataError(
            "Expected labels `y` with `loss`. Received: y=None. Pass `y=` the labels (an array with one "
            "row per sample), or use `target=` for a gradient without labels."
        )
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None or isinstance(loss, (list, dict, tuple)):
            raise DataError(
                f"Expected `loss` (the model is not compiled with a single loss). Received: loss=None and "
                f"model.loss={loss!r}. Pass e.g. loss='mse' or a keras.losses.Loss."
            )
    call, mean, key = _loss_call(loss)
    refs = output_refs(graph)
    if len(refs) != 1:
        raise DataError(
            f"Expected a model with one output for `loss`. Received: {len(refs)} outputs. Pass `target=` a "
            "function of the outputs that computes the loss you want per sample."
        )
    labels = np.asarray(y)
    if labels.ndim == 0:
        raise DataError(f"Expected `y` with one row per sample. Received: a scalar y={y!r}.")
    data = graph.nodes[refs[0].node]
    pred = keras.KerasTensor((None, *tuple(data["output_shapes"][refs[0].index])[1:]),
                             dtype=data["output_dtypes"][refs[0].index])
    try:
        with internals.names_unchanged():
            spec = call(keras.KerasTensor((None, *labels.shape[1:]), dtype=str(labels.dtype)), pred)
    except Exception as e:  # noqa: BLE001 - the loss refusing these shapes
        raise DataError(
            f"Expected labels `y` that the loss accepts with the model's output of shape {pred.shape}. "
            f"Received: y of shape {labels.shape}: the loss raised {type(e).__name__}: {e}"
        ) from e
    per_sample = int(np.prod(spec.shape[1:])) if all(d is not None for d in spec.shape[1:]) else None
    if per_sample is None:
        raise DataError(f"Expected a loss with a known number of values per sample. Received: shape {spec.shape}.")

    def objective(pred: Any, labels: Any) -> Any:
        return _sum_per_sample(call(labels, pred))

    return Target(None, objective, (((None, *labels.shape[1:]), str(labels.dtype)),), _per_sample(labels, "`y`"),
                  ("loss", key, labels.shape[1:], str(labels.dtype)), mean=mean, per_sample=per_sample,
                  samples=len(labels), what="`y`")


def make_target(model: Any, graph: nx.DiGraph, target: Any, y: Any = None, loss: Any = None,
                what: str = "target") -> Target:
    """The `Target` that `target`, or `y` and `loss`, describe (see the module docstring)."""
    if y is not None or loss is not None:
        if target is not None:
            raise DataError(
                "Expected either `target` or `y`/`loss`. Received: both. A loss is the target: pass "
                "`y=` and `loss=` alone, or `target=` alone."
            )
        return loss_target(model, graph, y, loss)
    if isinstance(target, str):
        return address_target(graph, target)
    if callable(target):
        return function_target(graph, target)
    if target is None or is_int(target) or isinstance(target, (list, tuple, np.ndarray)) or hasattr(target, "shape"):
        return class_target(graph, target, what)
    raise DataError(
        "Expected `target` to be None (the predicted class), a class index, one class index per sample, a "
        f"point's address or a function of the outputs. Received: {target!r}."
    )
