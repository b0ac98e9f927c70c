"""Matching data to a model's inputs: structure, shapes and dtypes of one element.

An *element* is a whole dataset held in memory or one batch. `match` finds
the model's input arrays in it (one array, a flat list in input order, a dict
keyed by input names, or the model's own nested structure); `check_input`
checks an array's shape and dtype against the input's `InputSpec`. Errors are
`DataError` and name the input. `kerasurgery.runtime.inputs` builds sources
of batches on top of this.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from kerasurgery.errors import DataError


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input: its name, batch-first shape (None = any) and dtype."""

    name: str
    shape: tuple
    dtype: str

    def describe(self) -> str:
        return f"input '{self.name}' (shape {self.shape}, dtype {self.dtype})"


def nested(struct: Any) -> bool:
    """True for an input structure with containers inside containers (``[[a, b], c]``)."""
    children = struct.values() if isinstance(struct, dict) else struct if isinstance(struct, (list, tuple)) else ()
    return any(isinstance(c, (list, tuple, dict)) for c in children)


# ---------------------------------------------------------------------------
# matching one element (a whole dataset in memory, or one batch) to the inputs


def _is_array(obj: Any) -> bool:
    return isinstance(obj, np.ndarray) or (
        hasattr(obj, "shape") and hasattr(obj, "dtype") and not isinstance(obj, (list, tuple, dict))
    )


def _flatten_like(element: Any, struct: Any) -> list | None:
    """`element`'s arrays in the order of ``keras.tree.flatten(struct)`` if it has `struct`'s nesting.

    Lists and tuples are interchangeable, as for Keras; dicts need the
    structure's keys.
    """
    if isinstance(struct, dict):
        if not isinstance(element, dict) or not all(k in element for k in struct):
            return None
        parts = [_flatten_like(element[k], struct[k]) for k in sorted(struct)]
    elif isinstance(struct, (list, tuple)):
        if not isinstance(element, (list, tuple)) or len(element) != len(struct):
            return None
        parts = [_flatten_like(e, s) for e, s in zip(element, struct)]
    else:
        return [element] if _is_array(element) else None
    if any(p is None for p in parts):
        return None
    return [a for p in parts if p is not None for a in p]


def match(element: Any, specs: list[InputSpec], structure: Any) -> list | None:
    """The flat list of arrays if `element` has the inputs' structure, else None.

    Accepted: the model's own nested structure (``[[a, b], c]``), a flat
    list in input order, a dict keyed by input names, or one array for one input.
    """
    dict_inputs = isinstance(structure, dict)
    if nested(structure):
        found = _flatten_like(element, structure)
        if found is not None:
            return found
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


def unpack(element: Any, specs: list[InputSpec], structure: Any) -> list | None:
    """Like `_match`, also accepting ``(x, y)`` and ``(x, y, w)``."""
    found = match(element, specs, structure)
    if found is None and isinstance(element, tuple) and len(element) in (2, 3):
        found = match(element[0], specs, structure)
    return found


def describe(obj: Any, depth: int = 0) -> str:
    if _is_array(obj):
        return f"array{tuple(obj.shape)} {keras.backend.standardize_dtype(obj.dtype)}"
    if depth > 1:
        return type(obj).__name__
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v, depth + 1)}" for k, v in list(obj.items())[:6]) + "}"
    if isinstance(obj, (list, tuple)):
        inner = ", ".join(describe(v, depth + 1) for v in list(obj)[:6])
        return f"{type(obj).__name__}[{inner}{', ...' if len(obj) > 6 else ''}]"
    return type(obj).__name__


def structure_error(
    element: Any, specs: list[InputSpec], model_name: str, where: str, structure: Any = None
) -> DataError:
    wanted = ", ".join(s.describe() for s in specs)
    if len(specs) == 1:
        form = "an array"
    else:
        form = f"a list of {len(specs)} arrays or a dict with keys {[s.name for s in specs]}"
    if nested(structure):
        named = keras.tree.map_structure(lambda t: t.name, structure)
        form += f", or arrays nested as the model's inputs {named!r}"
    return DataError(
        f"Expected {where} to hold {form} for model '{model_name}', which takes {wanted}; "
        f"(x, y) and (x, y, sample_weight) are accepted too. Received: {describe(element)}."
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


def check_input(array: Any, spec: InputSpec, model_name: str, where: str) -> None:
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


def as_input(array: Any, spec: InputSpec) -> np.ndarray:
    """One batch of one input as numpy with the input's dtype (no copy if it has it)."""
    return _numpy(array).astype(_numpy_dtype(spec), copy=False)


def count_rows(arrays: list[np.ndarray], specs: list[InputSpec], model_name: str, where: str) -> int:
    rows = {int(a.shape[0]) for a in arrays}
    if len(rows) > 1:
        sizes = ", ".join(f"'{s.name}': {a.shape[0]}" for s, a in zip(specs, arrays))
        raise DataError(
            f"Expected every input of model '{model_name}' to have the same number of samples. "
            f"Received: {sizes} in {where}."
        )
    return rows.pop()
