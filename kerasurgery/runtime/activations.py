"""Reading what `collect(path=...)` and `ActivationRecorder(path=...)` wrote.

`load_activations(path)` opens the file lazily: an `Activations` is a dict of
``h5py.Dataset`` keyed by address, read only when indexed, and a context
manager that closes the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasurgery.runtime.h5 import address_of


class Activations(dict):
    """``{address: h5py.Dataset}`` read lazily from an HDF5 file of `collect`.

    Index a dataset to read it (``acts["conv"][:100]``); the file stays open
    until `close()` (or the end of a ``with`` block). `collect` returns one
    when given ``path=``; `load_activations` opens one.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks, os, tempfile
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> path = os.path.join(tempfile.mkdtemp(), "acts.h5")
        >>> with ks.collect(model, np.ones((5, 3)), "d", path=path) as acts:
        ...     type(acts).__name__, acts["d"][:2].shape, int(acts.attrs["num_samples"])
        ('Activations', (2, 2), 5)
    """

    def __init__(self, path: Any):
        import h5py

        self.path = Path(path)
        self.file = h5py.File(self.path, "r")
        super().__init__((ds.attrs.get("address", address_of(n)), ds) for n, ds in self.file.items())
        self.attrs = dict(self.file.attrs)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Activations:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_activations(path: Any) -> Activations:
    """Open an HDF5 file written by `collect` (or `ActivationRecorder`) lazily.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks, tempfile, os
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> path = os.path.join(tempfile.mkdtemp(), "acts.h5")
        >>> ks.collect(model, np.ones((5, 3)), "d", path=path).close()
        >>> with ks.load_activations(path) as acts:
        ...     acts["d"].shape, acts["d"].attrs["model"] == model.name
        ((5, 2), True)
    """
    return Activations(path)
