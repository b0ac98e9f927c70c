"""Data adapters: turn whatever the user passes as `data` into checked batches.

`adapt(data, model, batch_size=...)` returns a `Source`: an iterable of
batches, each a flat list of numpy arrays in the order of the model's inputs,
checked against the inputs' shapes and cast to their dtypes. Accepted:

==========================  ==================================================
numpy array (or tensor)     one input; sliced into `batch_size` rows
list / tuple / dict         one array per input (dict keys: input names)
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

import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from kerasurgery import keras_internals as internals
from kerasurgery.checks import optional_positive_int, positive_int
from kerasurgery.errors import DataError


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input: its name, batch-first shape (None = any) and dtype."""

    name: str
    shape: tuple
    dtype: str

    def describe(self) -> str:
        return f"input '{self.name}' (shape {self.shape}, dtype {self.dtype})"


def input_structure(model: keras.Model) -> Any:
    """The model's inputs as given to its constructor: a tensor, list or dict."""
    if isinstance(model, keras.Sequential):
        model = internals.sequential_graph(model)  # built Sequential models keep their graph here
    return model.input


def input_specs(model: keras.Model) -> list[InputSpec]:
    """`InputSpec` of every input of `model`, flattened in call order."""
    struct = input_structure(model)
    if isinstance(struct, dict):
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
    if isinstance(struct, dict):
        return dict(zip(struct, arrays))
    if isinstance(struct, (list, tuple)):
        return keras.tree.pack_sequence_as(struct, arrays)
    return arrays[0]


def check_batch_size(batch_size: Any) -> int:
    """`batch_size` as an int, or a `DataError`."""
    return positive_int(batch_size, "batch_size", hint=" Pass e.g. batch_size=32.")


# ---------------------------------------------------------------------------
# matching one element (a whole dataset in memory, or one batch) to the inputs


def _is_array(obj: Any) -> bool:
    return isinstance(obj, np.ndarray) or (
        hasattr(obj, "shape") and hasattr(obj, "dtype") and not isinstance(obj, (list, tuple, dict))
    )


def _match(element: Any, specs: list[InputSpec], dict_inputs: bool) -> list | None:
    """The flat list of arrays if `element` has the inputs' structure, else None."""
    names = [s.name for s in specs]
    if isinstance(element, dict):
        if all(n in element for n in names) and all(_is_array(element[n]) for n in names):
            return [element[n] for n in names]
        return None
    if len(specs) == 1 and not dict_inputs:
        if _is_array(element):
            return [element]
        if isinstance(element, (list, tuple)) and len(element) == 1 and _is_array(element[0]):
            return [element[0]]
        return None
    if isinstance(element, (list, tuple)) and len(element) == len(specs) and all(map(_is_array, element)):
        return list(element)
    if len(specs) == 1 and _is_array(element):
        return [element]
    return None


def _unpack(element: Any, specs: list[InputSpec], dict_inputs: bool) -> list | None:
    """Like `_match`, also accepting ``(x, y)`` and ``(x, y, w)``."""
    found = _match(element, specs, dict_inputs)
    if found is None and isinstance(element, tuple) and len(element) in (2, 3):
        found = _match(element[0], specs, dict_inputs)
    return found


def _describe(obj: Any, depth: int = 0) -> str:
    if _is_array(obj):
        return f"array{tuple(obj.shape)} {keras.backend.standardize_dtype(obj.dtype)}"
    if depth > 1:
        return type(obj).__name__
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v, depth + 1)}" for k, v in list(obj.items())[:6]) + "}"
    if isinstance(obj, (list, tuple)):
        inner = ", ".join(_describe(v, depth + 1) for v in list(obj)[:6])
        return f"{type(obj).__name__}[{inner}{', ...' if len(obj) > 6 else ''}]"
    return type(obj).__name__


def _structure_error(element: Any, specs: list[InputSpec], model_name: str, where: str) -> DataError:
    wanted = ", ".join(s.describe() for s in specs)
    if len(specs) == 1:
        form = "an array"
    else:
        form = f"a list of {len(specs)} arrays or a dict with keys {[s.name for s in specs]}"
    return DataError(
        f"Expected {where} to hold {form} for model '{model_name}', which takes {wanted}; "
        f"(x, y) and (x, y, sample_weight) are accepted too. Received: {_describe(element)}."
    )


_DTYPE_OK = {
    "f": "fiub",  # float inputs take floats, ints and bools
    "c": "fiubc",
    "i": "iub",
    "u": "iub",
    "b": "b",
}


def _dtype(array: Any) -> np.dtype:
    """The numpy dtype of an array or of a TensorFlow, JAX or PyTorch tensor."""
    if isinstance(array, np.ndarray):
        return array.dtype
    try:
        return np.dtype(array.dtype)
    except TypeError:  # tf.DType, torch.dtype: numpy does not read them
        name = keras.backend.standardize_dtype(array.dtype)
        return np.dtype(object) if name == "string" else np.dtype(name)


def _check_input(array: Any, spec: InputSpec, model_name: str, where: str) -> None:
    """Raise a DataError naming the input if `array`'s shape or dtype does not fit."""
    shape = tuple(array.shape)
    dtype = _dtype(array)
    if len(shape) != len(spec.shape) or any(
        d is not None and d != a for d, a in zip(spec.shape[1:], shape[1:])
    ):
        hint = ""
        if len(shape) == len(spec.shape) - 1:
            hint = (
                " It lacks the batch axis: batch a tf.data.Dataset with `.batch(n)`, or add an axis "
                "with `x[None]` for a single sample."
            )
        raise DataError(
            f"Expected {spec.describe()} of model '{model_name}' to get data of shape {spec.shape} "
            f"(batch first; None is any size). Received: shape {shape} in {where}.{hint}"
        )
    wanted = _numpy_dtype(spec)
    if dtype != wanted and dtype.kind not in _DTYPE_OK.get(wanted.kind, wanted.kind):
        raise DataError(
            f"Expected {spec.describe()} of model '{model_name}' to get {spec.dtype} data (or data "
            f"that casts to it without loss of meaning). Received: {dtype} data in {where}. "
            f"Convert it first, e.g. `x.astype('{spec.dtype}')`."
        )


def _numpy_dtype(spec: InputSpec) -> np.dtype:
    return np.dtype(object) if spec.dtype == "string" else np.dtype(spec.dtype)


def _numpy(array: Any) -> np.ndarray:
    """`array` as numpy; a PyTorch tensor is detached (it may require grad) and moved to the CPU."""
    if not isinstance(array, np.ndarray) and callable(getattr(array, "detach", None)) and hasattr(array, "cpu"):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _as_input(array: Any, spec: InputSpec) -> np.ndarray:
    """One batch of one input as numpy with the input's dtype (no copy if it has it)."""
    return _numpy(array).astype(_numpy_dtype(spec), copy=False)


def _rows(arrays: list[np.ndarray], specs: list[InputSpec], model_name: str, where: str) -> int:
    rows = {int(a.shape[0]) for a in arrays}
    if len(rows) > 1:
        sizes = ", ".join(f"'{s.name}': {a.shape[0]}" for s, a in zip(specs, arrays))
        raise DataError(
            f"Expected every input of model '{model_name}' to have the same number of samples. "
            f"Received: {sizes} in {where}."
        )
    return rows.pop()


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

    def __init__(self, specs: list[InputSpec], model_name: str, dict_inputs: bool, steps: int | None):
        self.specs = specs
        self.model_name = model_name
        self.dict_inputs = dict_inputs
        self.steps = steps

    def _elements(self) -> Iterator[Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        for i, element in enumerate(self._elements()):
            if self.steps is not None and i >= self.steps:
                return
            where = f"batch {i}"
            arrays = _unpack(element, self.specs, self.dict_inputs)
            if arrays is None:
                raise _structure_error(element, self.specs, self.model_name, where)
            for a, s in zip(arrays, self.specs):
                _check_input(a, s, self.model_name, where)
            arrays = [_as_input(a, s) for a, s in zip(arrays, self.specs)]
            if _rows(arrays, self.specs, self.model_name, where) == 0:
                continue
            yield arrays


class ArraySource(Source):
    """Arrays (numpy, tensors, or lazy ones like `h5py.Dataset` and `np.memmap`),
    sliced into batches; a batch is cast to the input's dtype only if needed."""

    def __init__(self, arrays: list[np.ndarray], batch_size: int, **kwargs: Any):
        super().__init__(**kwargs)
        where = "data"
        for a, s in zip(arrays, self.specs):
            _check_input(a, s, self.model_name, where)
        self.arrays = arrays
        self.batch_size = batch_size
        n = _rows(self.arrays, self.specs, self.model_name, where)
        if self.steps is not None:
            n = min(n, self.steps * batch_size)
        self.num_samples = self.size = n
        self.num_batches = -(-n // batch_size)

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        for start in range(0, self.size, self.batch_size):
            stop = min(start + self.batch_size, self.size)
            yield [_as_input(a[start:stop], s) for a, s in zip(self.arrays, self.specs)]


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
    dict_inputs = isinstance(input_structure(model), dict)
    common = {"specs": specs, "model_name": model.name, "dict_inputs": dict_inputs, "steps": steps}
    if data is None:
        raise DataError(f"Expected data for model '{model.name}'. Received: data=None.")
    arrays = _unpack(data, specs, dict_inputs)
    if arrays is not None:
        source: Source = ArraySource(arrays, batch_size, **common)
    elif _is_tf_dataset(data):
        source = TFDatasetSource(data, **common)
    elif isinstance(data, keras.utils.PyDataset):
        source = PyDatasetSource(data, **common)
    elif isinstance(data, (dict, str, bytes)) or not hasattr(data, "__iter__"):
        raise _structure_error(data, specs, model.name, "data")
    else:
        source = IterableSource(data, **common)
    if source.num_samples == 0 or source.num_batches == 0:
        raise DataError(
            f"Expected at least one sample for model '{model.name}'. Received: an empty dataset "
            f"({_describe(data)})."
        )
    return source


def empty_error(model_name: str) -> DataError:
    """The error for a source that turned out to yield no samples."""
    return DataError(
        f"Expected at least one sample for model '{model_name}'. Received: data that yielded no "
        "batches (an empty dataset, or a generator that was already consumed)."
    )
