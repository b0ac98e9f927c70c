"""Data adapters: turn whatever the user passes as `data` into checked batches.

`adapt(data, model, batch_size=...)` returns a `Source`: an iterable of
batches, each a flat list of numpy arrays in the order of the model's inputs,
checked against the inputs' shapes and cast to their dtypes. Accepted:

==========================  ==================================================
numpy array (or tensor)     one input; sliced into `batch_size` rows
list / tuple / dict         one array per input (dict keys: input names), or
                            the model's own nesting (``[[a, b], c]``)
``(x, y)``, ``(x, y, w)``   ``y`` and ``w`` ignored, in memory or per batch
`tf.data.Dataset`           yields batches (call ``.batch(n)`` first)
`keras.utils.PyDataset`     ``dataset[i]`` is batch ``i``
any other iterable          each item is a batch (generators, DataLoaders)
==========================  ==================================================

The last batch may be smaller. Batched sources ignore `batch_size`, as
``model.predict`` does. A model built with a fixed batch size
(``keras.Input(..., batch_size=n)``) reads data held in memory in batches of
``n`` whatever `batch_size` says (the compiled step pads a short last batch,
see `kerasurgery.runtime.backend.Step`). Errors are `DataError` and name the
input.

Example:
    >>> import keras, numpy as np
    >>> from kerasurgery.runtime.inputs import adapt
    >>> x = keras.Input((3,), name="x")
    >>> model = keras.Model(x, keras.layers.Dense(2)(x))
    >>> source = adapt(np.zeros((5, 3)), model, batch_size=2)
    >>> source.num_batches, [b[0].shape for b in source]
    (3, [(2, 3), (2, 3), (1, 3)])
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from kerasurgery import keras_internals as internals
from kerasurgery.checks import optional_positive_int, positive_int
from kerasurgery.errors import DataError
from kerasurgery.runtime.matching import (
    InputSpec,
    as_input,
    check_input,
    count_rows,
    describe,
    nested,
    structure_error,
    unpack,
)

__all__ = ["InputSpec", "Source", "adapt", "check_batch_size", "empty_error", "input_specs", "pack"]


def input_structure(model: keras.Model) -> Any:
    """The model's inputs as given to its constructor: a tensor, list or dict."""
    if isinstance(model, keras.Sequential):
        model = internals.sequential_graph(model)  # built Sequential models keep their graph here
    return model.input


def input_specs(model: keras.Model) -> list[InputSpec]:
    """`InputSpec` of every input of `model`, flattened in call order."""
    struct = input_structure(model)
    if isinstance(struct, dict) and not nested(struct):
        items = list(struct.items())
    else:
        items = [(t.name, t) for t in keras.tree.flatten(struct)]
    return [InputSpec(name, tuple(t.shape), keras.backend.standardize_dtype(t.dtype)) for name, t in items]


def fixed_batch_size(specs: list[InputSpec]) -> int | None:
    """The batch size the model was built with (``keras.Input(..., batch_size=n)``), or None."""
    sizes = {s.shape[0] if s.shape else None for s in specs}
    size = sizes.pop() if len(sizes) == 1 else None
    return int(size) if size is not None else None


def pack(model: keras.Model, arrays: list[np.ndarray]) -> Any:
    """Flat input arrays (in `input_specs` order) in the model's input structure."""
    struct = input_structure(model)
    if isinstance(struct, dict) and not nested(struct):
        return dict(zip(struct, arrays))
    if isinstance(struct, (list, tuple)):
        return keras.tree.pack_sequence_as(struct, arrays)
    return arrays[0]


def check_batch_size(batch_size: Any) -> int:
    """`batch_size` as an int, or a `DataError`."""
    return positive_int(batch_size, "batch_size", hint=" Pass e.g. batch_size=32.")


# ---------------------------------------------------------------------------
# sources


class Source:
    """Checked batches for one model. Iterate it once per pass over the data.

    Attributes:
        num_batches: number of batches per pass, or None if unknown.
        num_samples: exact number of samples per pass, or None if unknown.
        reiterable: whether a second pass sees the data again.
    """

    num_batches: int | None = None
    num_samples: int | None = None
    reiterable: bool = True

    def __init__(self, specs: list[InputSpec], model_name: str, structure: Any, steps: int | None):
        self.specs = specs
        self.model_name = model_name
        self.structure = structure
        self.steps = steps

    def _elements(self) -> Iterator[Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        for i, element in enumerate(self._elements()):
            if self.steps is not None and i >= self.steps:
                return
            where = f"batch {i}"
            arrays = unpack(element, self.specs, self.structure)
            if arrays is None:
                raise structure_error(element, self.specs, self.model_name, where, self.structure)
            for a, s in zip(arrays, self.specs):
                check_input(a, s, self.model_name, where)
            arrays = [as_input(a, s) for a, s in zip(arrays, self.specs)]
            if count_rows(arrays, self.specs, self.model_name, where) == 0:
                continue
            yield arrays


class ArraySource(Source):
    """Arrays (numpy, tensors, or lazy ones like `h5py.Dataset` and `np.memmap`),
    sliced into batches; a batch is cast to the input's dtype only if needed."""

    def __init__(self, arrays: list[np.ndarray], batch_size: int, **kwargs: Any):
        super().__init__(**kwargs)
        where = "data"
        for a, s in zip(arrays, self.specs):
            check_input(a, s, self.model_name, where)
        self.arrays = arrays
        self.batch_size = batch_size
        n = count_rows(self.arrays, self.specs, self.model_name, where)
        if self.steps is not None:
            n = min(n, self.steps * batch_size)
        self.num_samples = self.size = n
        self.num_batches = -(-n // batch_size)

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        for start in range(0, self.size, self.batch_size):
            stop = min(start + self.batch_size, self.size)
            yield [as_input(a[start:stop], s) for a, s in zip(self.arrays, self.specs)]


class IterableSource(Source):
    """Any iterable of batches; `len()` gives the number of batches if it has one."""

    def __init__(self, data: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.data = data
        self.reiterable = iter(data) is not data
        try:
            self.num_batches = len(data)
        except TypeError:
            self.num_batches = None
        if self.steps is not None:
            self.num_batches = self.steps if self.num_batches is None else min(self.steps, self.num_batches)

    def _elements(self) -> Iterator[Any]:
        return iter(self.data)


class PyDatasetSource(Source):
    """A `keras.utils.PyDataset`: batch ``i`` is ``dataset[i]``."""

    def __init__(self, data: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.data = data
        self.num_batches = total = data.num_batches
        if total is None and self.steps is None:
            raise DataError(
                "Expected a finite PyDataset (its `num_batches` is None, so it never ends). "
                "Received: an infinite PyDataset. Give it a `__len__`, or pass `steps=`."
            )
        if self.steps is not None:
            total = self.steps if total is None else min(self.steps, total)
        self.num_batches = self.length = int(total)

    def _elements(self) -> Iterator[Any]:
        for i in range(self.length):
            yield self.data[i]
        self.data.on_epoch_end()


class TFDatasetSource(Source):
    """A `tf.data.Dataset` of batches, read as numpy."""

    def __init__(self, data: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.data = data
        cardinality = int(data.cardinality())
        if cardinality == -1 and self.steps is None:  # tf.data.INFINITE_CARDINALITY
            raise DataError(
                "Expected a finite tf.data.Dataset. Received: an infinite one (from `.repeat()`?). "
                "Drop the `.repeat()`, use `.take(n)`, or pass `steps=`."
            )
        self.num_batches = cardinality if cardinality >= 0 else None
        if self.steps is not None:
            self.num_batches = self.steps if self.num_batches is None else min(self.steps, self.num_batches)

    def _elements(self) -> Iterator[Any]:
        return self.data.as_numpy_iterator()


def _is_tf_dataset(data: Any) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def adapt(
    data: Any, model: keras.Model, *, batch_size: int = 32, steps: int | None = None
) -> Source:
    """Wrap `data` as a `Source` of checked batches for `model`'s inputs.

    Args:
        data: see the module docstring for what is accepted.
        model: the model (or probe) whose inputs the data feeds.
        batch_size: rows per batch for data held in memory (the model's own
            batch size if it was built with a fixed one).
        steps: read at most this many batches.

    Returns:
        A `Source`.

    Raises:
        DataError: the data does not fit the model's inputs, is empty, or
            `batch_size`/`steps` is not a positive integer.
    """
    batch_size = check_batch_size(batch_size)
    steps = optional_positive_int(steps, "steps", meaning="every batch")
    specs = input_specs(model)
    batch_size = fixed_batch_size(specs) or batch_size
    structure = input_structure(model)
    common = {"specs": specs, "model_name": model.name, "structure": structure, "steps": steps}
    if data is None:
        raise DataError(f"Expected data for model '{model.name}'. Received: data=None.")
    arrays = unpack(data, specs, structure)
    if arrays is not None:
        source: Source = ArraySource(arrays, batch_size, **common)
    elif _is_tf_dataset(data):
        source = TFDatasetSource(data, **common)
    elif isinstance(data, keras.utils.PyDataset):
        source = PyDatasetSource(data, **common)
    elif isinstance(data, (dict, str, bytes)) or not hasattr(data, "__iter__"):
        raise structure_error(data, specs, model.name, "data", structure)
    else:
        source = IterableSource(data, **common)
    if source.num_samples == 0 or source.num_batches == 0:
        raise DataError(
            f"Expected at least one sample for model '{model.name}'. Received: an empty dataset "
            f"({describe(data)})."
        )
    return source


def empty_error(model_name: str) -> DataError:
    """The error for a source that turned out to yield no samples."""
    return DataError(
        f"Expected at least one sample for model '{model_name}'. Received: data that yielded no "
        "batches (an empty dataset, or a generator that was already consumed)."
    )
