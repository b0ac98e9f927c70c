"""HDF5 files of activations: names, dtypes, chunks, and writing safely.

Shared by `collect(path=...)` and `ActivationRecorder(path=...)`:

- `h5_name` / `address_of`: an address as a dataset name (``/`` would make
  groups) and back;
- `storable_dtype`: HDF5 has no bfloat16, so such values are stored as float32;
- `create_dataset`: one resizable dataset per point, in chunks of about 4 MB;
- `PendingFile`: the file is written under a hidden temporary name next to
  the target and renamed into place only when complete, so an interrupted run
  never leaves a file that looks complete. The file is created with the
  permissions of any new file (the umask applies);
- `temporary_path` / `written_to`: the same temporary-name-then-rename for
  files written by other code (JSON, ``.npz``, ``model.save``, drawings).

Example:
    >>> from kerasurgery.runtime.h5 import h5_name, address_of
    >>> h5_name("encoder/dense:pre"), address_of("encoder%2Fdense:pre")
    ('encoder%2Fdense:pre', 'encoder/dense:pre')
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CHUNK_BYTES = 1 << 22  # about 4 MB per chunk


def h5_name(address: str) -> str:
    """The HDF5 dataset name of an address (``/`` would make groups)."""
    return address.replace("%", "%25").replace("/", "%2F")


def address_of(name: str) -> str:
    """The address of an HDF5 dataset name (the inverse of `h5_name`)."""
    return name.replace("%2F", "/").replace("%25", "%")


def storable_dtype(dtype: np.dtype) -> np.dtype:
    """HDF5 has no bfloat16 (or other ml_dtypes); store those as float32."""
    return dtype if dtype.kind in "biufc" and dtype.isbuiltin else np.dtype("float32")


def create_dataset(file: Any, address: str, shape: tuple, dtype: np.dtype, *, rows: int, leading: tuple,
                   attrs: dict) -> Any:
    """A resizable dataset for one point: ``leading`` axes, then the per-sample `shape`.

    The last leading axis is the sample axis; chunks hold about `CHUNK_BYTES`
    (at most `rows` samples, the first batch's size), one entry of every
    other leading axis.
    """
    row_bytes = max(1, int(np.prod(shape)) * dtype.itemsize)
    chunk_rows = max(1, min(rows, CHUNK_BYTES // row_bytes))
    chunks = (*(1 for _ in leading[:-1]), chunk_rows, *shape)
    ds = file.create_dataset(
        h5_name(address), shape=(*leading, *shape), maxshape=(*(None for _ in leading), *shape),
        dtype=storable_dtype(dtype), chunks=chunks,
    )
    ds.attrs.update(address=address, shape=list(shape), dtype=str(dtype), **attrs)
    return ds


def temporary_path(path: Any) -> Path:
    """A hidden, unused name next to `path` with the same suffix (``.acts.1f2e3d4c.tmp.h5``).

    The suffix is kept because some writers pick the format from it
    (``model.save`` wants ``.keras``; drawings their image type).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    return folder / f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}"


@contextlib.contextmanager
def written_to(path: Any) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to `path` if the block succeeds.

    If the block raises (or is interrupted), the temporary file is removed and
    `path` is left as it was. The file is created by whoever writes it, so it
    gets the permissions of any new file (the umask applies).

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "notes.txt")
        >>> with written_to(target) as temp:
        ...     _ = temp.write_text("done")
        >>> open(target).read(), sorted(os.listdir(os.path.dirname(target)))
        ('done', ['notes.txt'])
    """
    temp = temporary_path(path)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def write_text(path: Any, text: str, *, overwrite: bool = False, what: str = "file") -> None:
    """Write `text` to `path` through `written_to`; an existing `path` is refused unless `overwrite`.

    Raises:
        DataError: `path` exists and `overwrite` is False.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "ranges.json")
        >>> write_text(target, "{}")
        >>> write_text(target, "[]")
        Traceback (most recent call last):
        ...
        kerasurgery.errors.DataError: Expected a new file for the file. Received: ...
        >>> write_text(target, "[]", overwrite=True); open(target).read()
        '[]'
    """
    from kerasurgery.errors import DataError

    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise DataError(f"Expected a new file for the {what}. Received: {path!r}, which exists. Pass "
                        "overwrite=True to replace it, or choose another path.")
    with written_to(path) as temp:
        temp.write_text(text)


def json_text(text_or_path: Any) -> str:
    """JSON text given as itself (it starts with ``{``) or as the path of a file holding it.

    Example:
        >>> json_text(' {"a": 1}')
        ' {"a": 1}'
    """
    text = str(text_or_path)
    if not text.lstrip().startswith("{"):
        with open(os.fspath(text_or_path)) as f:
            text = f.read()
    return text


class PendingFile:
    """An HDF5 file written under a hidden temporary name, renamed into place when complete.

    `open` creates (or, with ``copy_of``, copies) the temporary file next to
    `path`; `commit` closes it and renames it to `path`; `discard` closes and
    deletes it. Deleting is also what happens if the object is garbage
    collected or the interpreter exits before `commit`.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.temp: Path | None = None
        self.file: Any = None

    def open(self, *, copy_of: Path | None = None) -> Any:
        import h5py

        self.temp = temporary_path(self.path)
        if copy_of is not None:
            import shutil

            shutil.copyfile(copy_of, self.temp)
            self.file = h5py.File(self.temp, "a")
        else:
            self.file = h5py.File(self.temp, "w", track_order=True)
        return self.file

    def commit(self) -> Path:
        """Close the file and move it to `path` (replacing what is there)."""
        self.file.close()
        self.file = None
        os.replace(str(self.temp), self.path)
        self.temp = None
        return self.path

    def discard(self) -> None:
        """Close and delete the temporary file (nothing is left behind)."""
        try:
            if self.file is not None:
                self.file.close()
        finally:
            self.file = None
            if self.temp is not None and self.temp.exists():
                self.temp.unlink()
            self.temp = None

    def __del__(self) -> None:
        try:
            self.discard()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass
