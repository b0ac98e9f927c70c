"""The only backend-specific code of kerasurgery: compiling a stateless step.

`Step(model, training, post)` runs ``post(model(inputs, training=training))``
through `keras.Model.stateless_call`, compiled once with the backend's own
compiler (``tf.function``, ``jax.jit``; PyTorch and NumPy run eagerly). The
model's variables are read when `Step.start` is called and are never written:
BatchNormalization moving statistics and RNG seeds evolve in a private copy of
the non-trainable state, carried from batch to batch within one pass, so
Dropout draws a fresh mask for every batch. Every backend import is local to
the function that needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops


def name() -> str:
    return keras.backend.backend()


def as_numpy(tensor: Any) -> np.ndarray:
    """A numpy view of a backend tensor when the backend allows it (no copy)."""
    try:
        return np.asarray(tensor)
    except Exception:  # noqa: BLE001 - e.g. a torch tensor on an accelerator
        return ops.convert_to_numpy(tensor)


def count_bins(index: Any, length: int) -> Any:
    """``counts[i] = number of entries of int32 `index` equal to i``, for i < length.

    `index` must hold values in ``[0, length)``. ``bincount`` is the fast path;
    JAX's has a value-dependent shape under ``jit``, so JAX sums segments.
    """
    if name() == "jax":
        return ops.segment_sum(ops.ones_like(index), index, num_segments=length, sorted=False)
    return ops.bincount(index, minlength=length)


class Step:
    """A compiled, side-effect-free call of `model` (and an optional `post`).

    Args:
        model: a built functional model (the probe).
        training: run layers in training mode.
        post: optional function applied, inside the compiled call, to the
            model's outputs (used for in-graph reductions).

    Call `start()` before each pass over the data (it snapshots the model's
    variables), then call the step on each batch of inputs (the model's input
    structure of numpy arrays). Calling returns backend tensors.
    """

    def __init__(self, model: keras.Model, training: bool = False, post: Callable | None = None):
        self.model = model
        self.training = bool(training)
        self.post = post
        self._compiled: Callable | None = None
        self._trainable: list | None = None
        self._state: list | None = None
        self._signature: tuple | None = None

    def _call(self, trainable: list, state: list, inputs: Any) -> tuple[Any, list]:
        outputs, state = self.model.stateless_call(trainable, state, inputs, training=self.training)
        if self.post is not None:
            outputs = self.post(outputs)
        return outputs, state

    def _compile(self) -> Callable:
        backend = name()
        if backend == "tensorflow":
            import tensorflow as tf

            def spec(t: Any) -> Any:
                return tf.TensorSpec(t.shape, t.dtype)

            # Batch size left as None so the last, smaller batch is not a retrace.
            signature = [
                [spec(t) for t in self._trainable],
                [spec(t) for t in self._state],
                keras.tree.map_structure(spec, self.model.input),
            ]
            def call(trainable: list, state: list, inputs: Any) -> tuple[Any, list]:
                return self._call(trainable, state, inputs)  # a function of its own per step

            return tf.function(call, input_signature=signature, autograph=False)
        if backend == "jax":
            import jax

            return jax.jit(self._call)
        if backend == "torch":
            import torch

            def call(*args: Any) -> tuple[Any, list]:
                with torch.no_grad():
                    return self._call(*args)

            return call
        return self._call

    def start(self) -> None:
        """Snapshot the model's current variable values for the next pass."""
        self._trainable = [ops.convert_to_tensor(v) for v in self.model.trainable_variables]
        self._state = [ops.convert_to_tensor(v) for v in self.model.non_trainable_variables]
        signature = self.signature()
        if self._compiled is None or signature != self._signature:
            self._compiled, self._signature = self._compile(), signature

    def __call__(self, inputs: Any) -> Any:
        if self._compiled is None or self._trainable is None:
            self.start()
        outputs, self._state = self._compiled(self._trainable, self._state, inputs)
        return outputs

    def signature(self) -> tuple:
        """Identity of the variables the compiled step was traced against."""
        return (
            tuple(id(v) for v in self.model.trainable_variables),
            tuple(id(v) for v in self.model.non_trainable_variables),
        )
