"""Files of activations: the formats `collect(path=...)` writes, and reading them back.

The suffix of the path picks the format (`FILE_FORMATS`):

- ``.h5`` / ``.hdf5``: HDF5, one dataset per address (``/`` stored as
  ``%2F``), streamed to disk batch by batch (`kerasurgery.runtime.sinks`),
  read back lazily;
- ``.json``: one JSON document, ``{"format": "kerasurgery.activations",
  "version": 1, "attrs": {...}, "points": {address: {"shape": [...],
  "dtype": "float32", "values": [nested lists]}}}``, for tools that read
  JSON (keract users expect it). Gathered in memory and refused above
  `JSON_MAX_BYTES` of values. Non-finite values are written as ``NaN`` /
  ``Infinity`` (Python's and most parsers' extension of JSON);
- ``.npz``: a numpy archive, one array per address named by the address
  itself (``np.load(path)["encoder/dense:pre"]``), plus the attributes as
  JSON text under `NPZ_ATTRS`. Gathered in memory.

A path without a suffix is a folder of shards (one HDF5 file per shard of
samples and a manifest, `kerasurgery.runtime.shards`), for results larger
than one file should hold and for `collect` on a Ray cluster.

Values of dtypes HDF5 and numpy files lack (bfloat16) are stored as float32.
`load_activations` reads every format; an `Activations` is a dict keyed by
address and a context manager.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.runtime.h5 import address_of, storable_dtype, written_to
from kerasurgery.runtime.shards import open_folder

#: File suffix -> format written by `collect(path=...)`.
FILE_FORMATS = {".h5": "hdf5", ".hdf5": "hdf5", ".json": "json", ".npz": "npz"}
#: Largest JSON result, in bytes of values (as stored: 4 per float32): 100 MB.
JSON_MAX_BYTES = 100 * 1024**2
#: The name of the attributes entry in an ``.npz`` file (never an address: ``attrs`` is no port).
NPZ_ATTRS = "kerasurgery:attrs"
_JSON_FORMAT = "kerasurgery.activations"


def file_format(path: Any, what: str = "`path`") -> str:
    """The format of an activations file from its suffix, or a DataError.

    Example:
        >>> file_format("feats.h5"), file_format("acts.JSON"), file_format("a.npz")
        ('hdf5', 'json', 'npz')
    """
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise DataError(
            f"Expected {what} ending in {', '.join(FILE_FORMATS)} (the suffix picks the format). "
            f"Received: '{os.fspath(path)}'. Use .h5 for large results (streamed to disk), .json or "
            ".npz for small ones."
        )
    return FILE_FORMATS[suffix]


def check_json_size(nbytes: int, exact: bool = True) -> None:
    """Raise a DataError if `nbytes` of values are too many for a JSON file."""
    if nbytes <= JSON_MAX_BYTES:
        return
    many = f"{nbytes / 1024**2:,.1f} MB" if exact else f"at least {nbytes / 1024**2:,.1f} MB"
    raise DataError(
        f"Expected at most {JSON_MAX_BYTES / 1024**2:g} MB of values for a .json file. Received: {many} of "
        "activations, which would make a JSON file several times larger and slow to read. Write "
        "them to an .h5 file instead (path='activations.h5', read lazily), or select fewer points or "
        "samples."
    )


def _stored(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(storable_dtype(array.dtype), copy=False)


def write_arrays(path: Path, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """Write ``{address: array}`` as a ``.json`` or ``.npz`` file (safely: temporary file, renamed)."""
    fmt = file_format(path)
    with written_to(path) as temp:
        if fmt == "json":
            points = {a: {"shape": list(v.shape), "dtype": str(v.dtype), "values": v.tolist()}
                      for a, v in ((a, _stored(v)) for a, v in arrays.items())}
            document = {"format": _JSON_FORMAT, "version": 1, "attrs": attrs, "points": points}
            with open(temp, "w", encoding="utf-8") as f:
                json.dump(document, f)
        elif fmt == "npz":
            with zipfile.ZipFile(temp, "w", allowZip64=True) as z:
                entries = {**{a: _stored(v) for a, v in arrays.items()}, NPZ_ATTRS: np.array(json.dumps(attrs))}
                for name, array in entries.items():
                    with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, array, allow_pickle=False)
        else:  # pragma: no cover - HDF5 files are written by sinks.H5Sink
            raise DataError(f"Expected a .json or .npz path. Received: '{path}'.")


def _read_json(path: Path) -> tuple[dict, dict]:
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"Expected a JSON file of activations at '{path}'. Received: unreadable JSON ({e}).") from None
    if not isinstance(document, dict) or document.get("format") != _JSON_FORMAT:
        raise DataError(
            f"Expected a JSON file written by `kerasurgery.collect` at '{path}'. Received: JSON without "
            f"\"format\": \"{_JSON_FORMAT}\"."
        )
    try:
        arrays = {a: np.asarray(p["values"], dtype=p["dtype"]).reshape(p["shape"])
                  for a, p in document["points"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"Expected points with values, shape and dtype in '{path}'. Received: {e!r}.") from None
    return arrays, dict(document.get("attrs", {}))


def _read_npz(path: Path) -> tuple[dict, dict]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DataError(f"Expected an .npz file of activations at '{path}'. Received: {e}.") from None
    attrs = json.loads(str(arrays.pop(NPZ_ATTRS))) if NPZ_ATTRS in arrays else {}
    return arrays, attrs


class Activations(dict):
    """``{address: values}`` read from a file written by `collect` (or `ActivationRecorder`).

    From an HDF5 file the values are ``h5py.Dataset`` read lazily when indexed
    (``acts["conv"][:100]``), and the file stays open until `close()` (or the
    end of a ``with`` block). From a folder of shards they are
    `kerasurgery.runtime.shards.ShardedArray`: read lazily, in sample order,
    from the shards an index needs (opened on first use, closed by
    `close()`). From ``.json`` and ``.npz`` files they are numpy
    arrays, read whole (`close` has nothing to do). `collect` returns one when
    given ``path=``; `load_activations` opens one.

    Attributes:
        path: the file.
        format: ``"hdf5"``, ``"json"``, ``"npz"`` or ``"shards"`` (a folder).
        attrs: the file's attributes (``model``, ``num_samples``, ``points``, ...).

    Example:
        >>> import keras, numpy as np, kerasurgery as ks, os, tempfile
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> path = os.path.join(tempfile.mkdtemp(), "acts.h5")
        >>> with ks.collect(model, np.ones((5, 3)), "d", path=path) as acts:
        ...     type(acts).__name__, acts["d"][:2].shape, int(acts.attrs["num_samples"])
        ('Activations', (2, 2), 5)
    """

    def __init__(self, path: Any, *, arrays: dict | None = None, attrs: dict | None = None):
        self.path = Path(os.fspath(path))
        self.file: Any = None
        self._close: Any = None
        if self.path.is_dir():
            self.format = "shards"
            arrays, attrs, self._close = open_folder(self.path)
        else:
            self.format = file_format(self.path)
        if arrays is None and self.format == "hdf5":
            import h5py

            self.file = h5py.File(self.path, "r")
            arrays = {ds.attrs.get("address", address_of(n)): ds for n, ds in self.file.items()}
            attrs = dict(self.file.attrs)
        elif arrays is None:
            arrays, attrs = (_read_json if self.format == "json" else _read_npz)(self.path)
        super().__init__(arrays)
        self.attrs = dict(attrs or {})

    def close(self) -> None:
        """Close the HDF5 file or the open shards (nothing to do for ``.json`` and ``.npz``)."""
        if self.file is not None:
            self.file.close()
        if self._close is not None:
            self._close()

    def __enter__(self) -> Activations:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_activations(path: Any) -> Activations:
    """Open what `collect(path=...)` wrote (``.h5``, ``.hdf5``, ``.json``, ``.npz``, a folder of shards) or `ActivationRecorder`.

    Args:
        path: the file (its suffix says its format), or a folder of shards
            written by `collect(path=folder)` in process or on Ray.

    Returns:
        An `Activations`: ``{address: values}`` (lazy ``h5py.Dataset`` for
        HDF5, lazy `ShardedArray` over the shards of a folder, in sample
        order; numpy arrays otherwise), with ``attrs``; a context manager.

    Raises:
        DataError: an unknown suffix, a file that is not one `collect` wrote,
            or a folder without a manifest (an unfinished run).

    Example:
        >>> import keras, numpy as np, kerasurgery as ks, tempfile, os
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> folder = tempfile.mkdtemp()
        >>> ks.collect(model, np.ones((5, 3)), "d", path=os.path.join(folder, "acts.h5")).close()
        >>> with ks.load_activations(os.path.join(folder, "acts.h5")) as acts:
        ...     acts["d"].shape, acts["d"].attrs["model"] == model.name
        ((5, 2), True)
        >>> _ = ks.collect(model, np.ones((5, 3)), "d", path=os.path.join(folder, "acts.json"))
        >>> ks.load_activations(os.path.join(folder, "acts.json"))["d"].shape
        (5, 2)
    """
    return Activations(path)
