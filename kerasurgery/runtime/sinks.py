"""Where `collect` puts activations: preallocated numpy arrays, an HDF5 file, a JSON or .npz file.

A sink is told the per-sample shape and dtype of every point once (from the
first batch), then receives batches with their start row. `MemorySink`
preallocates one array per distinct tensor (growing geometrically only when
the number of samples is unknown) and refuses up front a result larger than
the available memory. `H5Sink` writes one chunked dataset per address into a
temporary file next to the target, renamed into place only when every batch
is written, so an error never leaves a half-written file behind. `ShardSink`
writes a folder of such files, one per shard of samples, and a manifest last
(`kerasurgery.runtime.shards`). `ArrayFileSink`
gathers the values in memory like `MemorySink` and writes one ``.json`` or
``.npz`` file at the end (the formats are `kerasurgery.runtime.activations`).

The HDF5 details (dataset names, chunks, the temporary file) are in
`kerasurgery.runtime.h5`; reading a written file back is
`kerasurgery.runtime.activations`.

Example:
    >>> from kerasurgery.runtime.sinks import human
    >>> human(3 * 1024 ** 3)
    '3.0 GB'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.runtime import backend
from kerasurgery.runtime.activations import Activations, check_json_size, file_format, write_arrays
from kerasurgery.runtime import h5
from kerasurgery.runtime.h5 import PendingFile, create_dataset


def available_memory() -> int | None:
    """Bytes of memory available to this process, or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def check_fits(per_sample: int, samples: int, n_points: int, *, exact: bool = True) -> None:
    """Raise a DataError if `samples` rows of `per_sample` bytes exceed memory."""
    need = per_sample * samples
    have = available_memory()
    if have is None or need <= 0.9 * have:
        return
    many = f"{samples:,}" if exact else f"about {samples:,}"
    raise DataError(
        f"Expected the activations to fit in memory. Received: {n_points} point(s) over {many} "
        f"samples, {human(need)} of activations ({human(per_sample)} per sample), but only "
        f"{human(have)} of memory is available. Pass `path='activations.h5'` to stream them to "
        "disk, select fewer points (see `kerasurgery.points(model)`), or use less data."
    )


def check_writable(folder: Any, what: str = "`path`") -> None:
    """Raise a DataError naming `folder` unless a file can be created in it.

    Tried for real (a hidden probe file is created and removed at once):
    ``os.access`` says yes to root on a read-only mount, and a folder can be
    full or have an ACL that only an attempt reveals.

    Example:
        >>> import tempfile
        >>> check_writable(tempfile.mkdtemp()) is None
        True
    """
    try:
        fd, probe = tempfile.mkstemp(prefix=".kerasurgery-write-check-", dir=os.fspath(folder))
    except OSError as e:
        raise DataError(
            f"Expected {what} in a folder this process can write to. Received: folder '{folder}', where "
            f"no file can be created ({e.strerror or e}). Choose another folder, or make this one writable."
        ) from None
    os.close(fd)
    os.unlink(probe)


HDF5_SUFFIXES = (".h5", ".hdf5")


def check_path(path: Any, overwrite: bool, suffixes: tuple[str, ...] = HDF5_SUFFIXES) -> Path:
    """`path` as a Path if it may be written, else a DataError saying why not.

    Checked before anything runs: a suffix among `suffixes` (it picks the
    format; `ActivationRecorder` writes HDF5 only, `collect` any of
    `kerasurgery.runtime.activations.FILE_FORMATS`), a file (not a folder) in an existing folder where files
    can be created, not an existing file unless `overwrite`.
    """
    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise DataError(
            f"Expected `path` to be a file path such as 'activations.h5'. Received: path={path!r}."
        ) from None
    if p.is_dir():
        raise DataError(f"Expected `path` to name a file. Received: path='{p}', which is a folder.")
    if p.suffix.lower() not in suffixes:
        formats = ("this writes HDF5 only" if tuple(suffixes) == HDF5_SUFFIXES else
                   ".h5/.hdf5 for HDF5 (streamed to disk, any size), .json or .npz for small results; "
                   "no suffix for a folder of shards")
        raise DataError(
            f"Expected `path` ending in {', '.join(suffixes)}. Received: path='{p}'. The suffix picks the "
            f"format: {formats}."
        )
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(
            f"Expected `path` in an existing folder. Received: path='{p}', but folder '{parent}' "
            f"does not exist. Create it first (`os.makedirs('{parent}')`)."
        )
    if p.exists() and not overwrite:
        raise DataError(
            f"Expected `path` to be a new file. Received: path='{p}', which already exists. "
            "Pass `overwrite=True` to replace it, or choose another path."
        )
    check_writable(parent)
    return p


def check_batch(key: str, tensor: Any, rows: int, shape: tuple | None, where: str) -> None:
    got = tuple(tensor.shape)
    if not got or got[0] != rows:
        raise DataError(
            f"Expected point '{key}' to have the batch as its first axis ({rows} rows in {where}). "
            f"Received: shape {got}. It mixes samples (e.g. a reduction over the batch), so it "
            "cannot be stored per sample; leave it out of `points`."
        )
    if shape is not None and got[1:] != shape:
        raise DataError(
            f"Expected point '{key}' to keep the per-sample shape {shape} of the first batch. "
            f"Received: shape {got[1:]} in {where}. Give batches of one shape (pad them)."
        )


def _capacity(samples: int | None, batches: int | None, rows: int) -> int:
    """Rows to reserve: the sample count if known, else batches x first batch's rows."""
    return samples or (batches * rows if batches else rows)


class MemorySink:
    """Preallocated numpy arrays, one per distinct tensor.

    Args:
        keys: ``{address: key}``; addresses with the same key share an array.
        samples: the exact number of samples, or None if unknown.
        batches: the number of batches, or None if unknown.
    """

    def __init__(self, keys: dict[str, str], samples: int | None, batches: int | None):
        self.keys = keys
        self.samples = samples
        self.batches = batches
        self.capacity = 0
        self.arrays: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple] = {}

    def prepare(self, outputs: dict[str, Any], rows: int) -> None:
        for key, t in outputs.items():
            check_batch(key, t, rows, None, "batch 0")
            self.shapes[key] = tuple(t.shape[1:])
        self.dtypes = {k: backend.as_numpy(t).dtype for k, t in outputs.items()}
        self.per_sample = sum(int(np.prod(s)) * self.dtypes[k].itemsize for k, s in self.shapes.items())
        capacity = _capacity(self.samples, self.batches, rows)
        check_fits(self.per_sample, capacity, len(self.keys), exact=self.samples is not None)
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        old = self.arrays
        self.arrays = {k: np.empty((capacity, *s), self.dtypes[k]) for k, s in self.shapes.items()}
        for k, a in old.items():
            self.arrays[k][: len(a)] = a
        self.capacity = capacity

    def check(self, outputs: dict[str, Any], rows: int, where: str) -> None:
        for key, t in outputs.items():
            check_batch(key, t, rows, self.shapes[key], where)

    def write(self, start: int, rows: int, outputs: dict[str, Any]) -> None:
        if start + rows > self.capacity:
            grown = max(2 * self.capacity, start + rows)
            check_fits(self.per_sample, grown, len(self.keys), exact=False)
            self._allocate(grown)
        for key, t in outputs.items():
            np.copyto(self.arrays[key][start : start + rows], backend.as_numpy(t), casting="unsafe")

    def finish(self, n: int) -> dict[str, np.ndarray]:
        for a in self.arrays.values():
            if len(a) != n:
                a.resize((n, *a.shape[1:]), refcheck=False)  # shrinks in place
        return {address: self.arrays[key] for address, key in self.keys.items()}

    def abort(self) -> None:
        self.arrays = {}


class ArrayFileSink(MemorySink):
    """Values gathered in memory (`MemorySink`), then written as one ``.json`` or ``.npz`` file.

    A JSON result larger than `kerasurgery.runtime.activations.JSON_MAX_BYTES`
    is refused as soon as its size is known (nothing is written).

    Args:
        path: the final file (already checked with `check_path`).
        keys, samples, batches: as for `MemorySink`.
        attrs: file attributes (model name, ...).
    """

    def __init__(self, path: Path, keys: dict[str, str], samples: int | None, batches: int | None, attrs: dict):
        super().__init__(keys, samples, batches)
        self.path = path
        self.format = file_format(path)
        self.attrs = attrs

    def _check_size(self, rows: int, exact: bool) -> None:
        if self.format == "json":
            per_sample = sum(int(np.prod(self.shapes[k])) * h5.storable_dtype(self.dtypes[k]).itemsize
                             for k in self.keys.values())
            check_json_size(per_sample * rows, exact=exact)

    def prepare(self, outputs: dict[str, Any], rows: int) -> None:
        super().prepare(outputs, rows)
        self._check_size(self.capacity, exact=self.samples is not None)

    def write(self, start: int, rows: int, outputs: dict[str, Any]) -> None:
        self._check_size(start + rows, exact=False)
        super().write(start, rows, outputs)

    def finish(self, n: int) -> Activations:
        arrays = super().finish(n)
        attrs = {**self.attrs, "num_samples": n}
        write_arrays(self.path, arrays, attrs)
        return Activations(self.path, arrays={a: v.astype(h5.storable_dtype(v.dtype), copy=False)
                                              for a, v in arrays.items()}, attrs=attrs)


class H5Sink:
    """One chunked, resizable dataset per address in a file written safely (`PendingFile`).

    Args:
        path: the final file (already checked with `check_path`).
        keys: ``{address: key}`` (addresses sharing a tensor get a dataset each).
        samples: the exact number of samples, or None if unknown.
        batches: the number of batches, or None if unknown.
        attrs: file attributes (model name, ...).
    """

    def __init__(
        self, path: Path, keys: dict[str, str], samples: int | None, batches: int | None, attrs: dict
    ):
        self.keys = keys
        self.samples = samples
        self.batches = batches
        self.attrs = attrs
        self.pending = PendingFile(path)

    def prepare(self, outputs: dict[str, Any], rows: int) -> None:
        file = self.pending.open()
        file.attrs.update(self.attrs)
        self.shapes = {}
        self.datasets = {}
        for key, t in outputs.items():
            check_batch(key, t, rows, None, "batch 0")
            self.shapes[key] = tuple(t.shape[1:])
        dtypes = {k: backend.as_numpy(t).dtype for k, t in outputs.items()}
        capacity = _capacity(self.samples, self.batches, rows)
        for address, key in self.keys.items():
            self.datasets[address] = create_dataset(
                file, address, self.shapes[key], dtypes[key], rows=rows, leading=(capacity,),
                attrs={"model": self.attrs.get("model", "")},
            )

    def check(self, outputs: dict[str, Any], rows: int, where: str) -> None:
        for key, t in outputs.items():
            check_batch(key, t, rows, self.shapes[key], where)

    def write(self, start: int, rows: int, outputs: dict[str, Any]) -> None:
        arrays = {k: backend.as_numpy(t) for k, t in outputs.items()}
        for address, key in self.keys.items():
            ds = self.datasets[address]
            if start + rows > ds.shape[0]:
                ds.resize(max(start + rows, 2 * ds.shape[0]), axis=0)
            array = arrays[key]
            if array.dtype != ds.dtype:
                array = array.astype(ds.dtype)
            ds[start : start + rows] = array

    def finish(self, n: int) -> Activations:
        for ds in self.datasets.values():
            if ds.shape[0] != n:
                ds.resize(n, axis=0)
        self.pending.file.attrs["num_samples"] = n
        return Activations(self.pending.commit())

    def abort(self) -> None:
        self.pending.discard()


class ShardSink:
    """A folder of shards (`kerasurgery.runtime.shards`): an `H5Sink` per shard of whole batches.

    A shard is closed (renamed into place) once it holds at least
    `shard_size` samples; the manifest is written by `finish`, last. On an
    error the open shard is discarded and no manifest is written, so the
    folder is never taken for a complete result.

    Args:
        folder: the folder, prepared by `kerasurgery.runtime.shards.prepare_folder`.
        keys: ``{address: key}`` as for `MemorySink`.
        attrs: file attributes (model name, training, points).
        shard_size: samples per shard (at least; shards end on batch boundaries).
    """

    def __init__(self, folder: Path, keys: dict[str, str], attrs: dict, shard_size: int):
        self.folder = folder
        self.keys = keys
        self.attrs = attrs
        self.shard_size = shard_size
        self.shards: list[dict] = []
        self.current: H5Sink | None = None
        self.start = 0  # first sample of the current shard

    def prepare(self, outputs: dict[str, Any], rows: int) -> None:
        self.shapes = {}
        for key, t in outputs.items():
            check_batch(key, t, rows, None, "batch 0")
            self.shapes[key] = tuple(t.shape[1:])
        self.dtypes = {k: h5.storable_dtype(backend.as_numpy(t).dtype) for k, t in outputs.items()}

    def check(self, outputs: dict[str, Any], rows: int, where: str) -> None:
        for key, t in outputs.items():
            check_batch(key, t, rows, self.shapes[key], where)

    def write(self, start: int, rows: int, outputs: dict[str, Any]) -> None:
        from kerasurgery.runtime.shards import shard_file

        if self.current is None:
            self.start = start
            self.current = H5Sink(self.folder / shard_file(f"{start:012d}"), self.keys, None, None, self.attrs)
            self.current.prepare(outputs, rows)
        self.current.write(start - self.start, rows, outputs)
        if start + rows - self.start >= self.shard_size:
            self._close(start + rows)

    def _close(self, stop: int) -> None:
        if self.current is not None:
            self.current.finish(stop - self.start).close()
            self.shards.append({"file": self.current.pending.path.name, "rows": stop - self.start})
            self.current = None

    def finish(self, n: int) -> Path:
        from kerasurgery.runtime.shards import write_manifest

        self._close(n)
        points = {a: {"shape": list(self.shapes[k]), "dtype": str(self.dtypes[k])} for a, k in self.keys.items()}
        write_manifest(self.folder, self.attrs, points, self.shards)
        return self.folder

    def abort(self) -> None:
        if self.current is not None:
            self.current.abort()
            self.current = None
