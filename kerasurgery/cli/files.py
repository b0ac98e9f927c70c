"""A user's files: a saved model and data that must fit it; the files a command writes.

`load_model` and `load_data` check what can be checked before Keras or the
model sees the input, so a wrong file gets one clear `KerasurgeryError`
naming the file, what was expected and what to do, instead of a traceback
from deep inside. `check_output` refuses, before anything runs, an output
that is one of the command's inputs (whatever its spelling: ``./m.keras``, a
symlink, a hard link) or an existing file without ``--overwrite``.

Example:
    >>> import keras, numpy as np, os, tempfile
    >>> from kerasurgery.cli.files import load_data
    >>> x = keras.Input((3,), name="x")
    >>> model = keras.Model(x, keras.layers.Dense(2)(x))
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.zeros((5, 3), "float32"))
    >>> load_data(path, model).shape
    (5, 3)
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from kerasurgery.errors import DataError, ModelError
from kerasurgery.ir.from_keras import to_graph
from kerasurgery.ir.schema import map_structure
from kerasurgery.runtime.sinks import check_writable

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
DATA_SUFFIXES = (".npy", ".npz")


def _existing_file(path: str, what: str, suffixes: tuple[str, ...]) -> None:
    if not os.path.exists(path):
        raise DataError(f"Expected {what} at {path!r}. Received: a path that does not exist.")
    if os.path.isdir(path):
        hint = " (a TensorFlow SavedModel folder? Keras 3 loads .keras files)" if what.startswith("a Keras") else ""
        raise DataError(f"Expected {what} at {path!r}. Received: a directory{hint}.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in suffixes:
        raise DataError(
            f"Expected {what} ending in {' or '.join(suffixes)}. Received: {path!r}."
        )


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if `a` and `b` name the same file (resolved real paths, or the same inode)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    path: str,
    flag: str,
    *,
    suffixes: tuple[str, ...],
    what: str,
    inputs: dict[str, str | None],
    overwrite: bool,
) -> str:
    """Check a file a command will write, before anything runs.

    Args:
        path: the output file.
        flag: how the user gave it (``"-o"``), for messages.
        suffixes: the suffixes accepted (they pick the format).
        what: what the file is (``"a model file"``), for messages.
        inputs: ``{what: path}`` of every file the command reads (None:
            not given); the output may be none of them, even with
            ``--overwrite``.
        overwrite: whether an existing file may be replaced.

    Returns:
        `path`.

    Raises:
        DataError: wrong suffix, missing folder, a folder, one of the
            inputs, an existing file without `overwrite`, or a folder where
            no file can be created.
    """
    for name, source in inputs.items():
        if source and same_file(path, source):
            raise DataError(
                f"Expected {flag} to name a file other than the command's inputs. Received: {flag} {path!r}, "
                f"which is the {name} {source!r}. Choose another output name (--overwrite never "
                "replaces an input)."
            )
    if not path.lower().endswith(suffixes):
        raise DataError(f"Expected {what} ending in {' or '.join(suffixes)}. Received: {flag} {path!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DataError(f"Expected an existing folder for {flag} {path!r}. Received: {folder!r} does not exist.")
    if os.path.isdir(path):
        raise DataError(f"Expected {flag} to name a file. Received: {path!r}, which is a folder.")
    if os.path.lexists(path) and not overwrite:
        raise DataError(
            f"Expected {flag} to name a new file. Received: {path!r}, which already exists. "
            "Pass --overwrite to replace it, or choose another name."
        )
    check_writable(folder, f"{flag} {path!r}")
    return path


def load_model(path: str | os.PathLike, *, unsafe: bool = False) -> Any:
    """Load a saved Keras model, in Keras's safe mode unless `unsafe`.

    Safe mode refuses to deserialize Python code (a ``Lambda`` layer's
    function), which could run anything; pass ``unsafe=True`` only for files
    you trust. Custom layers must be registered (import their module) first.

    Args:
        path: a ``.keras`` file (or a legacy ``.h5``).
        unsafe: allow ``Lambda`` layers and other Python code in the file.

    Returns:
        The loaded `keras.Model`.

    Raises:
        DataError: the file is missing, a directory, or not a Keras file.
        ModelError: Keras refused or failed to load it (names the reason).
    """
    import keras

    path = os.fspath(path)
    _existing_file(path, "a Keras model file", MODEL_SUFFIXES)
    if path.lower().endswith(".keras") and not zipfile.is_zipfile(path):
        raise DataError(
            f"Expected a Keras model file at {path!r} (a .keras zip archive written by "
            "`model.save`). Received: a file that is not a zip archive."
        )
    if not path.lower().endswith(".keras"):
        import h5py

        if not h5py.is_hdf5(path):
            raise DataError(f"Expected a legacy Keras HDF5 file at {path!r}. Received: a file that is not HDF5.")
    try:
        model = keras.saving.load_model(path, safe_mode=not unsafe, compile=False)
    except Exception as e:  # Keras raises many types here; each becomes one clear line
        text = " ".join(str(e).split())
        if "safe_mode" in text or "Lambda" in text:
            raise ModelError(
                f"Expected a model without Python code to load {path!r} in Keras's safe mode. "
                "Received: a model with a Lambda layer (or other Python code), which could run "
                "arbitrary code. If you trust the file, pass --unsafe (unsafe=True)."
            ) from None
        raise ModelError(
            f"Expected a loadable Keras model in {path!r}. Received: {type(e).__name__}: {text[:300]}. "
            "If it uses custom layers, import the module that registers them (--import MODULE)."
        ) from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"Expected a keras.Model in {path!r}. Received: {type(model).__name__}.")
    return model


def input_specs(model: Any) -> tuple[Any, dict[str, tuple[tuple, str]]]:
    """The model's input structure (of input names) and ``{name: (shape, dtype)}``."""
    graph = to_graph(model)
    keys: list[str] = []
    map_structure(keys.append, graph.graph["inputs"])
    specs = {}
    for key in keys:
        data = graph.nodes[key]
        specs[key] = (tuple(data["output_shapes"][0]), str(data["output_dtypes"][0]))
    return graph.graph["inputs"], specs


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(
            f"Expected numeric arrays in {path!r}. Received: a file numpy cannot read without "
            f"pickle ({' '.join(str(e).split())[:120]}). Save plain arrays with np.save/np.savez."
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"Expected a .npy or .npz file at {path!r}. Received: {e}.") from None
    if isinstance(loaded, np.ndarray):
        return {"": loaded}
    with loaded:
        return {k: loaded[k] for k in loaded.files}


def _pick_arrays(path: str, arrays: dict[str, np.ndarray], keys: list[str]) -> dict[str, np.ndarray]:
    if len(keys) == 1:
        (key,) = keys
        if "" in arrays or len(arrays) == 1:
            return {key: next(iter(arrays.values()))}
        for name in (key, "x", "inputs"):
            if name in arrays:
                return {key: arrays[name]}
        raise DataError(
            f"Expected {path!r} to hold one array, or one named {key!r} or 'x'. "
            f"Received: arrays {sorted(arrays)}."
        )
    if "" in arrays:
        raise DataError(
            f"Expected an .npz file with one array per model input ({', '.join(keys)}). "
            f"Received: a single array in {path!r}. Save with np.savez(path, {keys[0]}=..., ...)."
        )
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(
            f"Expected {path!r} to hold an array for each model input {keys}. "
            f"Received: arrays {sorted(arrays)}; missing {missing}."
        )
    return {k: arrays[k] for k in keys}


def _check_shape(path: str, key: str, array: np.ndarray, shape: tuple, dtype: str) -> np.ndarray:
    expected = "(N, " + ", ".join("any" if d is None else str(d) for d in shape[1:]) + ")"
    fits = array.ndim == len(shape) and all(d is None or d == a for d, a in zip(shape[1:], array.shape[1:]))
    if not fits:
        raise DataError(
            f"Expected data for input {key!r} of shape {expected}. Received: an array of shape "
            f"{array.shape} from {path!r}."
        )
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"Expected numbers or booleans for input {key!r}. Received: dtype {array.dtype} from {path!r}."
        )
    if dtype.startswith("float") and array.dtype.kind != "f":
        array = array.astype(dtype)
    return array


def load_data(path: str | os.PathLike, model: Any, *, limit: int | None = None) -> Any:
    """Read a ``.npy``/``.npz`` file as inputs for `model`, checking shapes.

    A single-input model takes a ``.npy`` array, or an ``.npz`` holding one
    array (or one named after the input, or ``x``). A model with several
    inputs takes an ``.npz`` with one array per input, named after the inputs.
    The first axis is the sample axis.

    Args:
        path: the data file.
        model: the model the data is for.
        limit: use only the first `limit` samples.

    Returns:
        An array, or a list/dict of arrays in the model's input structure.

    Raises:
        DataError: missing file, wrong suffix, unreadable file, missing
            arrays, or shapes that do not fit the model's inputs.
    """
    path = os.fspath(path)
    _existing_file(path, "a data file", DATA_SUFFIXES)
    structure, specs = input_specs(model)
    arrays = _pick_arrays(path, _read_arrays(path), list(specs))
    checked = {k: _check_shape(path, k, a, *specs[k]) for k, a in arrays.items()}
    sizes = {k: len(a) for k, a in checked.items()}
    if len(set(sizes.values())) > 1:
        raise DataError(f"Expected the same number of samples for every input. Received: {sizes} in {path!r}.")
    if limit is not None:
        if limit < 1:
            raise DataError(f"Expected a positive sample limit. Received: {limit}.")
        checked = {k: a[:limit] for k, a in checked.items()}
    if 0 in {len(a) for a in checked.values()}:
        raise DataError(f"Expected at least one sample in {path!r}. Received: zero.")
    return map_structure(lambda k: checked[k], structure)


def sample_count(data: Any) -> int:
    """Number of samples in data returned by `load_data`."""
    leaves: list = []
    map_structure(leaves.append, data)
    return len(leaves[0])
