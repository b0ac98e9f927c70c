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
            model's outputs and the extra arguments (in-graph reductions).
        extra: ``(shape, dtype)`` of each extra argument of a call (arrays
            given to `post`, such as running ranges).

    Call `start()` before each pass over the data (it resets the private
    state to the model's current values), then call the step on each batch of
    inputs (the model's input structure of numpy arrays). Calling returns
    backend tensors. With TensorFlow the compiled function reads the model's
    variables itself (passing hundreds of them as arguments costs about a
    third of a MobileNetV2 forward pass per call); only the private state is
    passed around, and only in training mode, where it changes.
    """

    def __init__(
        self, model: keras.Model, training: bool = False, post: Callable | None = None, extra: tuple = ()
    ):
        self.model = model
        self.training = bool(training)
        self.post = post
        self.extra = tuple(extra)
        self._compiled: Any = None
        self._signature: tuple | None = None
        self._trainable: list | None = None
        self._state: list | None = None

    def _call(self, trainable: list, state: list, inputs: Any, *extra: Any) -> tuple[Any, list]:
        outputs, state = self.model.stateless_call(trainable, state, inputs, training=self.training)
        if self.post is not None:
            outputs = self.post(outputs, *extra)
        return outputs, state

    def _values(self, variables: list) -> list:
        return [v.value for v in variables]

    def _compile_tf(self) -> Callable:
        import tensorflow as tf

        def spec(t: Any) -> Any:
            return tf.TensorSpec(t.shape, t.dtype)

        inputs_spec = keras.tree.map_structure(spec, self.model.input)  # batch size None: no retrace
        extra_spec = [tf.TensorSpec(shape, dtype) for shape, dtype in self.extra]
        trainable, state = self.model.trainable_variables, self.model.non_trainable_variables
        if not self.training:

            def infer(inputs: Any, *extra: Any) -> Any:
                return self._call(self._values(trainable), self._values(state), inputs, *extra)[0]

            return tf.function(infer, input_signature=[inputs_spec, *extra_spec], autograph=False)

        def train(state_values: list, inputs: Any, *extra: Any) -> tuple[Any, list]:
            return self._call(self._values(trainable), state_values, inputs, *extra)

        state_spec = [tf.TensorSpec(v.shape, v.dtype) for v in state]
        return tf.function(train, input_signature=[state_spec, inputs_spec, *extra_spec], autograph=False)

    def _compile(self) -> Callable:
        backend = name()
        if backend == "tensorflow":
            return self._compile_tf()
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
        """(Re)compile if the model's variables changed, and reset the private state."""
        signature = self.signature()
        if self._compiled is None or signature != self._signature:
            self._compiled, self._signature = self._compile(), signature
        tf = name() == "tensorflow"
        self._trainable = None if tf else [ops.convert_to_tensor(v) for v in self.model.trainable_variables]
        self._state = None if tf and not self.training else [
            ops.convert_to_tensor(v) for v in self.model.non_trainable_variables
        ]

    def __call__(self, inputs: Any, *extra: Any) -> Any:
        if self._compiled is None:
            self.start()
        if name() == "tensorflow":
            if not self.training:
                return self._compiled(inputs, *extra)
            outputs, self._state = self._compiled(self._state, inputs, *extra)
            return outputs
        outputs, self._state = self._compiled(self._trainable, self._state, inputs, *extra)
        return outputs

    def signature(self) -> tuple:
        """Identity of the variables the compiled step was traced against."""
        return (
            tuple(id(v) for v in self.model.trainable_variables),
            tuple(id(v) for v in self.model.non_trainable_variables),
        )
