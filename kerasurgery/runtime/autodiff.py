"""Backend-specific differentiation: the compiled, stateless gradient step.

Next to `kerasurgery.runtime.backend` (which compiles forward steps), this
is the only other module that names a backend: ``tf.GradientTape``,
``jax.value_and_grad`` and ``torch.autograd.grad`` live here and nowhere
else. `GradientStep` runs a model built by
`kerasurgery.passes.perturb.perturb_pass` (inputs ``[inputs, deltas]``,
outputs ``{"target": ..., "points": [...]}``) through
`keras.Model.stateless_call`, with every ``delta`` zero, and differentiates
the sum over the batch of a per-sample objective with respect to the deltas
(the points' values) and, if asked, the trainable variables. It inherits
compilation, shapes, fixed batch sizes and the private non-trainable state
from `kerasurgery.runtime.backend.Step`: the model's variables are never
written, with ``training=True`` or not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from kerasurgery.errors import TransformError
from kerasurgery.runtime.backend import Step, name


class GradientStep(Step):
    """A compiled call returning gradients of ``sum(objective(outputs))``.

    Args:
        model: a model from `perturb_pass` (with or without deltas).
        training: run layers in training mode.
        objective: ``objective(target_outputs, *extra) -> (batch,)``, written
            with `keras.ops`: one scalar per sample.
        extra: ``(shape, dtype)`` of each extra per-batch argument of the
            objective (class indices, labels).
        shapes: per-sample shape of each delta (static, or a function of the
            flat input shapes giving them); the model takes
            ``[inputs, deltas]`` if there is at least one, else ``inputs``.
        weights: also differentiate with respect to the trainable variables.
        values: also return the points' values.
        names: a readable name per delta, for errors.

    Calling it on a batch returns ``{"gradients": [per delta], "objective":
    (batch,), "weights": [per trainable variable] (if asked), "values": [per
    delta] (if asked)}``.
    """

    def __init__(
        self,
        model: keras.Model,
        training: bool,
        objective: Callable,
        extra: tuple = (),
        *,
        shapes: list | Callable,
        deltas: int = 0,
        weights: bool = False,
        values: bool = False,
        names: list[str] | None = None,
    ):
        super().__init__(model, training, None, extra)
        self.objective = objective
        self.shapes = shapes
        self.weights = weights
        self.values = values
        self.names = names or []
        self.has_deltas = deltas > 0
        self._structure = model.input[0] if self.has_deltas else model.input
        self._inputs = keras.tree.flatten(self._structure)
        self.dtypes = [t.dtype for t in model.input[1]] if self.has_deltas else []
        batches = {t.shape[0] for t in self._inputs}
        self.batch_size = batches.pop() if len(batches) == 1 else None

    # -- the function being differentiated ---------------------------------
    def _deltas(self, inputs: Any) -> list:
        flat = keras.tree.flatten(inputs)
        batch = ops.shape(flat[0])[0]
        shapes = self.shapes(tuple(tuple(t.shape[1:]) for t in flat)) if callable(self.shapes) else self.shapes
        return [ops.zeros((batch, *shape), dtype) for shape, dtype in zip(shapes, self.dtypes)]

    def _call(self, trainable: list, state: list, inputs: Any, *extra: Any, trim: int | None = None) -> tuple:
        deltas = self._deltas(inputs) if self.has_deltas else []

        def total(deltas: list, trainable: list) -> tuple:
            args = [inputs, deltas] if self.has_deltas else inputs
            outputs, new_state = self.model.stateless_call(trainable, state, args, training=self.training)
            target = outputs["target"]
            if trim is not None:  # padded to a fixed batch size: the padding is no sample
                target = keras.tree.map_structure(lambda t: self._trim(t, trim), target)
            values = self.objective(target, *extra)
            points = [p[:trim] if trim is not None else p for p in outputs["points"]] if self.values else []
            return ops.sum(ops.cast(values, "float32")), (values, points, new_state)

        (d_deltas, d_weights), (values, points, new_state) = differentiate(
            total, deltas, trainable, self.weights
        )
        missing = [n for n, g in zip(self.names, d_deltas) if g is None]
        if missing:
            raise TransformError(
                f"Expected a target that depends on every point. Received: points {missing} on which "
                "the target does not depend (its gradient is undefined, not zero). Choose points "
                "upstream of the target, or a target downstream of the points."
            )
        if trim is not None:
            d_deltas = [g[:trim] for g in d_deltas]
        out = {"gradients": list(d_deltas), "objective": values}
        if self.weights:  # a variable the target does not read (TensorFlow, PyTorch: None) has gradient 0
            out["weights"] = [ops.zeros_like(w) if g is None else g for g, w in zip(d_weights, trainable)]
        if self.values:
            out["values"] = points
        return out, new_state

    def _compile(self, trim: int | None, dims: tuple | None) -> Callable:
        if name() != "torch":
            return super()._compile(trim, dims)
        return functools.partial(self._call, trim=trim)


def differentiate(fn: Callable, deltas: list, trainable: list, weights: bool) -> tuple:
    """``((d fn / d deltas, d fn / d trainable or []), aux)`` for ``fn(deltas, trainable) -> (scalar, aux)``.

    A delta (or variable) the scalar does not depend on gets None on
    TensorFlow and PyTorch; JAX gives zeros (the callers check reachability
    on the graph first).
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(deltas)
            if weights:
                tape.watch(trainable)
            value, aux = fn(deltas, trainable)
        d_deltas, d_weights = tape.gradient(value, [deltas, trainable if weights else []])
        return (d_deltas, d_weights), aux
    if backend == "jax":
        import jax

        if weights:
            (_, aux), grads = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(deltas, trainable)
            return (list(grads[0]), list(grads[1])), aux
        (_, aux), grads = jax.value_and_grad(fn, argnums=0, has_aux=True)(deltas, trainable)
        return (list(grads), []), aux
    if backend == "torch":
        import torch

        with torch.enable_grad():
            deltas = [d.requires_grad_(True) for d in deltas]
            trainable = [t.detach().requires_grad_(weights) for t in trainable]
            value, aux = fn(deltas, trainable)
            wrt = list(deltas) + (trainable if weights else [])
            grads = list(torch.autograd.grad(value, wrt, allow_unused=True)) if wrt and value.requires_grad else (
                [None] * len(wrt))
        aux = keras.tree.map_structure(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, aux)
        return (grads[: len(deltas)], grads[len(deltas):]), aux
    raise TransformError(
        f"Expected the TensorFlow, JAX or PyTorch backend to differentiate. Received: backend {backend!r}, "
        "which has no automatic differentiation. Set KERAS_BACKEND to one of them."
    )
