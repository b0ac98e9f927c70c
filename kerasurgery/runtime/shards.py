"""Folders of activations: one HDF5 file per shard of samples, and a manifest.

`collect(path=FOLDER)` (a path without a suffix), in process or on a Ray
cluster (`kerasurgery.engines.ray`), writes::

    FOLDER/
      run.json          what is computed (model, weights, points, training), written first
      shard-<key>.h5    one file per shard: the HDF5 format of collect(path="x.h5") for its samples
      manifest.json     written last: every shard in sample order, with its sample range

Every file is written under a hidden temporary name and renamed into place
when complete, so a ``shard-*.h5`` file is always complete, and a folder
without ``manifest.json`` is an unfinished run (`load_activations` refuses
it; a Ray run resumes it with ``resume=True``). `ShardedArray` reads one
address across the shards lazily, in sample order.

Example:
    >>> from kerasurgery.runtime.shards import is_folder_path
    >>> is_folder_path("features"), is_folder_path("features.h5")
    (True, False)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.runtime.h5 import written_to

FORMAT = "kerasurgery.activations.shards"
MANIFEST = "manifest.json"
RUN = "run.json"
SHARD_PREFIX = "shard-"
#: Samples per shard unless `shard_size` says otherwise (on Ray: also the samples of one task).
DEFAULT_SHARD_SIZE = 512


def is_folder_path(path: Any) -> bool:
    """Whether `collect(path=...)` writes a folder of shards there: no suffix, or an existing folder."""
    p = Path(os.fspath(path))
    return p.is_dir() or p.suffix == ""


def shard_file(key: str) -> str:
    """The file name of the shard with this key (a sample index or a hash of the block's inputs)."""
    return f"{SHARD_PREFIX}{key}.h5"


def _ours(name: str) -> bool:
    """A file kerasurgery writes in a shard folder (or the hidden temporary name of one)."""
    plain = name.lstrip(".")
    return name in (MANIFEST, RUN) or plain.startswith(SHARD_PREFIX) or (
        name.startswith(".") and plain.split(".", 1)[0] in ("manifest", "run"))


def _write_json(path: Path, document: dict) -> None:
    with written_to(path) as temp:
        temp.write_text(json.dumps(document, indent=1))


def read_json(path: Path, what: str) -> dict:
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"Expected a readable {what} at '{path}'. Received: {e}.") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise DataError(f"Expected a {what} written by kerasurgery at '{path}'. Received: another JSON file.")
    return document


def prepare_folder(path: Any, run: dict, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Make `path` ready for a run described by `run` (JSON-ready); returns it as a Path.

    A missing folder is created (its parent must exist); an empty one is
    used. A folder kerasurgery wrote before is refused unless ``resume=True``
    (its complete shards are kept; `run` must equal the one recorded) or
    ``overwrite=True`` (its files are deleted). A folder holding other files
    is always refused: nothing else is ever deleted.
    """
    p = Path(os.fspath(path))
    if p.exists() and not p.is_dir():
        raise DataError(f"Expected `path` to be a folder for shards. Received: path='{p}', which is a file.")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(
            f"Expected `path` in an existing folder. Received: path='{p}', but folder '{parent}' does not "
            f"exist. Create it first (`os.makedirs('{parent}')`)."
        )
    run = {"format": FORMAT, **run}
    names = sorted(os.listdir(p)) if p.exists() else []
    foreign = [n for n in names if not _ours(n)]
    if foreign:
        raise DataError(
            f"Expected `path` to be a new or empty folder, or one written by `collect`. Received: '{p}', "
            f"which holds other files ({', '.join(foreign[:4])}{', ...' if len(foreign) > 4 else ''}). "
            "Choose another folder."
        )
    if names and resume:
        if (p / RUN).exists():
            old = read_json(p / RUN, "run description")
            differ = sorted(k for k in set(old) | set(run) if old.get(k) != run.get(k))
            if differ:
                raise DataError(
                    f"Expected to resume the same run in '{p}'. Received: different {', '.join(differ)} "
                    f"(recorded: {', '.join(f'{k}={old.get(k)!r}' for k in differ)}). Use another folder, "
                    "or pass overwrite=True (and not resume) to start again."
                )
    elif names and not overwrite:
        state = "a complete result" if (p / MANIFEST).exists() else "an unfinished run"
        raise DataError(
            f"Expected `path` to be a new folder. Received: '{p}', which holds {state} of `collect`. "
            "Pass overwrite=True to replace it, resume=True to finish an interrupted Ray run, or choose "
            "another folder."
        )
    elif names:
        for n in names:
            (p / n).unlink()
    p.mkdir(exist_ok=True)
    if not (p / RUN).exists():
        _write_json(p / RUN, run)
    return p


def write_manifest(folder: Path, attrs: dict, points: dict, shards: list[dict]) -> None:
    """Write the manifest (last), then delete shards and temporary files it does not list.

    Args:
        folder: the shard folder.
        attrs: ``model``, ``training``, ``points``; ``num_samples`` is added.
        points: ``{address: {"shape": [...], "dtype": "float32"}}`` (per sample).
        shards: ``[{"file": name, "rows": n}, ...]`` in sample order;
            ``start`` and ``stop`` are added.
    """
    start = 0
    listed = []
    for s in shards:
        listed.append({**s, "start": start, "stop": start + int(s["rows"])})
        start += int(s["rows"])
    document = {"format": FORMAT, "version": 1, "attrs": {**attrs, "num_samples": start},
                "points": points, "shards": listed}
    _write_json(folder / MANIFEST, document)
    keep = {s["file"] for s in listed} | {MANIFEST, RUN}
    for name in os.listdir(folder):
        if name not in keep and _ours(name):
            (folder / name).unlink(missing_ok=True)


def complete_shards(folder: Path) -> int:
    """How many complete shard files `folder` holds."""
    return sum(1 for n in os.listdir(folder) if n.startswith(SHARD_PREFIX) and n.endswith(".h5"))


class ShardedArray:
    """One address over every shard of a folder: an array-like read lazily, in sample order.

    Indexing the first axis with an integer, a slice or a list/array of
    integers reads only the shards (and rows) needed; further axes are
    applied after. ``np.asarray(a)`` reads everything.

    Attributes:
        shape, dtype, ndim: as a numpy array's.
        address: the point.
    """

    def __init__(self, address: str, shape: tuple, dtype: str, shards: list[dict], open_shard: Any):
        self.address = address
        self.shape = (int(shards[-1]["stop"]) if shards else 0, *shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self._files = [s["file"] for s in shards]
        self._starts = np.array([int(s["start"]) for s in shards], np.int64)
        self._open = open_shard

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedArray({self.address!r}, shape={self.shape}, dtype={self.dtype}, shards={len(self._files)})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[:]
        return values if dtype is None else values.astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        first, rest = (index[0], index[1:]) if isinstance(index, tuple) and index else (index, ())
        n = self.shape[0]
        if isinstance(first, slice):
            rows = np.arange(n)[first]
        elif first is Ellipsis:
            rows, rest = np.arange(n), (Ellipsis, *rest)
        else:
            rows = np.asarray(first)
            if rows.dtype == bool:
                rows = np.flatnonzero(rows)
            if rows.dtype.kind not in "iu":
                raise DataError(f"Expected integers, slices or a boolean mask to index samples. Received: {first!r}.")
            if np.any((rows < -n) | (rows >= n)):
                raise IndexError(f"index out of range for {n} samples: {first!r}")
            rows = np.where(rows < 0, rows + n, rows)
        flat = rows.reshape(-1)
        out = np.empty((flat.size, *self.shape[1:]), self.dtype)
        which = np.searchsorted(self._starts, flat, side="right") - 1
        for shard in np.unique(which):
            mask = which == shard
            local = flat[mask] - self._starts[shard]
            lo, hi = int(local.min()), int(local.max()) + 1
            block = self._open(self._files[shard])[self.address][lo:hi]
            out[mask] = block[local - lo]
        out = out.reshape(*rows.shape, *self.shape[1:])
        return out[(slice(None),) * rows.ndim + tuple(rest)] if rest else out


def open_folder(folder: Path) -> tuple[dict, dict, Any]:
    """``({address: ShardedArray}, attrs, close)`` of a complete shard folder; a DataError otherwise."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        raise DataError(
            f"Expected a folder written by `collect`, with '{MANIFEST}'. Received: '{folder}' without one: "
            f"the run that writes it has not finished ({complete_shards(folder) if folder.is_dir() else 0} "
            "complete shard(s)). Finish it: run the same `collect` on Ray again with resume=True."
        )
    document = read_json(manifest, "manifest")
    files: dict[str, Any] = {}

    def open_shard(name: str) -> Any:
        if name not in files:
            import h5py

            from kerasurgery.runtime.h5 import address_of

            f = h5py.File(folder / name, "r")
            files[name] = {ds.attrs.get("address", address_of(k)): ds for k, ds in f.items()}
            files[name]["__file__"] = f
        return files[name]

    def close() -> None:
        for entry in files.values():
            entry["__file__"].close()
        files.clear()

    shards = document["shards"]
    arrays = {a: ShardedArray(a, tuple(p["shape"]), p["dtype"], shards, open_shard)
              for a, p in document["points"].items()}
    return arrays, dict(document["attrs"]), close
