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

import functools
import logging
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasurgery.errors import DataError


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


class _OwnRetracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about this module's own steps.

    Every new model (or point selection) gets a new compiled step, traced
    once: TensorFlow counts those first traces as retracing and tells the
    user to restructure code that is not theirs. Warnings about other
    functions pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "Step._compile_tf" in message)


def _quiet_own_retracing() -> None:
    """Install `_OwnRetracing` on TensorFlow's logger, once."""
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _OwnRetracing) for f in logger.filters):
        logger.addFilter(_OwnRetracing())


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

    Shapes: TensorFlow traces with the model's own static dimensions, the
    batch dimension free, and the batch's own size for every other dimension
    the model leaves free, one trace per distinct shape (as ``jax.jit``
    does). Traced with a free time axis, ``TimeDistributed`` over a nested
    LSTM fails, or silently returns too few time steps.
    A model built with a fixed batch size (``keras.Input(..., batch_size=4)``)
    gets a short batch padded to that size (with copies of its last sample)
    in inference mode, and its outputs trimmed back before `post` sees them,
    so results equal ``predict`` on the real samples.
    """

    def __init__(
        self, model: keras.Model, training: bool = False, post: Callable | None = None, extra: tuple = ()
    ):
        self.model = model
        self.training = bool(training)
        self.post = post
        self.extra = tuple(extra)
        self._compiled: dict = {}
        self._signature: tuple | None = None
        self._trainable: list | None = None
        self._state: list | None = None
        self._structure = model.input  # the structure of the inputs a call receives
        self._inputs = keras.tree.flatten(model.input)
        batches = {t.shape[0] for t in self._inputs}
        self.batch_size: int | None = batches.pop() if len(batches) == 1 else None

    def _call(self, trainable: list, state: list, inputs: Any, *extra: Any, trim: int | None = None) -> tuple:
        outputs, state = self.model.stateless_call(trainable, state, inputs, training=self.training)
        if trim is not None:
            outputs = keras.tree.map_structure(lambda t: self._trim(t, trim), outputs)
        if self.post is not None:
            outputs = self.post(outputs, *extra)
        return outputs, state

    def _trim(self, tensor: Any, rows: int) -> Any:
        """The first `rows` samples of an output padded to the fixed batch size."""
        if len(tensor.shape) and tensor.shape[0] == self.batch_size:
            return tensor[:rows]
        return tensor

    def _values(self, variables: list) -> list:
        return [v.value for v in variables]

    def _compile_tf(self, trim: int | None, dims: tuple) -> Callable:
        import tensorflow as tf

        _quiet_own_retracing()

        flat = [tf.TensorSpec((t.shape[0], *shape), t.dtype) for t, shape in zip(self._inputs, dims)]
        inputs_spec = keras.tree.pack_sequence_as(self._structure, flat)
        extra_spec = [tf.TensorSpec(shape, dtype) for shape, dtype in self.extra]
        trainable, state = self.model.trainable_variables, self.model.non_trainable_variables
        if not self.training:

            def infer(inputs: Any, *extra: Any) -> Any:
                return self._call(self._values(trainable), self._values(state), inputs, *extra, trim=trim)[0]

            return tf.function(infer, input_signature=[inputs_spec, *extra_spec], autograph=False)

        def train(state_values: list, inputs: Any, *extra: Any) -> tuple[Any, list]:
            return self._call(self._values(trainable), state_values, inputs, *extra, trim=trim)

        state_spec = [tf.TensorSpec(v.shape, v.dtype) for v in state]
        return tf.function(train, input_signature=[state_spec, inputs_spec, *extra_spec], autograph=False)

    def _compile(self, trim: int | None, dims: tuple | None) -> Callable:
        backend = name()
        if backend == "tensorflow":
            return self._compile_tf(trim, dims or ())  # dims: set for TensorFlow by `_function`
        call = functools.partial(self._call, trim=trim)
        if backend == "jax":
            import jax

            return jax.jit(call)
        if backend == "torch":
            import torch

            def no_grad(*args: Any) -> tuple[Any, list]:
                with torch.no_grad():
                    return call(*args)

            return no_grad
        return call

    def _function(self, flat: list, trim: int | None) -> Callable:
        """The compiled function for inputs `flat` (one per trim and, on TensorFlow, per shape)."""
        dims = None
        if name() == "tensorflow":
            dims = tuple(
                tuple(a.shape[i] if d is None else d for i, d in enumerate(t.shape) if i > 0)
                for t, a in zip(self._inputs, flat)
            )
        key = (trim, dims)
        if key not in self._compiled:
            self._compiled[key] = self._compile(trim, dims)
        return self._compiled[key]

    def _pad(self, inputs: Any) -> tuple[Any, int | None]:
        """`inputs` padded to the model's fixed batch size, and the real number of rows (or None)."""
        if self.batch_size is None:
            return inputs, None
        flat = keras.tree.flatten(inputs)
        rows = int(flat[0].shape[0])
        if rows == self.batch_size:
            return inputs, None
        if rows > self.batch_size or self.training:
            raise DataError(
                f"Expected batches of {'exactly' if self.training else 'at most'} {self.batch_size} samples "
                f"for model '{self.model.name.removesuffix('_probe')}', which was built with a fixed batch "
                f"size of {self.batch_size}"
                + (
                    " (in training mode a short batch cannot be padded: layers such as "
                    "BatchNormalization would see the padding)"
                    if self.training and rows < self.batch_size
                    else ""
                )
                + f". Received: a batch of {rows} samples. Give data in batches of {self.batch_size}"
                + (" and a number of samples that is a multiple of it." if self.training else ".")
            )
        missing = self.batch_size - rows
        padded = [np.concatenate([a, np.repeat(np.asarray(a)[-1:], missing, axis=0)]) for a in flat]
        return keras.tree.pack_sequence_as(inputs, padded), rows

    def start(self) -> None:
        """(Re)compile if the model's variables changed, and reset the private state."""
        signature = self.signature()
        if signature != self._signature:
            self._compiled, self._signature = {}, signature
        tf = name() == "tensorflow"
        self._trainable = None if tf else [ops.convert_to_tensor(v) for v in self.model.trainable_variables]
        self._state = None if tf and not self.training else [
            ops.convert_to_tensor(v) for v in self.model.non_trainable_variables
        ]

    def __call__(self, inputs: Any, *extra: Any) -> Any:
        if self._signature is None:
            self.start()
        inputs, trim = self._pad(inputs)
        compiled = self._function(keras.tree.flatten(inputs), trim)
        if name() == "tensorflow":
            if not self.training:
                return compiled(inputs, *extra)
            outputs, self._state = compiled(self._state, inputs, *extra)
            return outputs
        outputs, self._state = compiled(self._trainable, self._state, inputs, *extra)
        return outputs

    def signature(self) -> tuple:
        """Identity of the variables the compiled step was traced against."""
        return (
            tuple(id(v) for v in self.model.trainable_variables),
            tuple(id(v) for v in self.model.non_trainable_variables),
        )
