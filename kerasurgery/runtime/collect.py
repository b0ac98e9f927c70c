"""`collect`: the activations of many points over a dataset, in one pass.

`collect` = a plan (probe + compiled step, `kerasurgery.runtime.plan`) + a
source of batches (`kerasurgery.runtime.inputs`) + a sink
(`kerasurgery.runtime.sinks`): preallocated
numpy arrays, or an HDF5 file written through a temporary file. Each batch's
tensors are copied once, into their final place, while the next batch's
forward pass runs.
"""

from __future__ import annotations

import os
from typing import Any, overload

import keras
import numpy as np

from kerasurgery.address.selector import Selector
from kerasurgery.runtime.activations import FILE_FORMATS, Activations, check_json_size, file_format
from kerasurgery.checks import positive_int
from kerasurgery.runtime.inputs import adapt, check_batch_size
from kerasurgery.runtime.loop import run
from kerasurgery.runtime.plan import Plan, plan_for
from kerasurgery.runtime.shards import DEFAULT_SHARD_SIZE, is_folder_path, prepare_folder
from kerasurgery.runtime.sinks import ArrayFileSink, H5Sink, MemorySink, ShardSink, check_fits, check_path


def _static_bytes(plan: Plan, *, per_address: bool = False) -> int | None:
    """Bytes per sample of the plan's distinct outputs (or of every address), if their shapes are static."""
    total = 0
    for key in plan.keys.values() if per_address else plan.unique:
        t = plan.probe.output[key]
        if any(d is None for d in t.shape[1:]):
            return None
        try:
            itemsize = np.dtype(keras.backend.standardize_dtype(t.dtype)).itemsize
        except TypeError:
            itemsize = 4
        total += int(np.prod(t.shape[1:])) * itemsize
    return total


# ---------------------------------------------------------------------------
# collect


@overload
def collect(
    model: keras.Model,
    data: Any,
    points: Selector | None = None,
    *,
    batch_size: int = 32,
    training: bool = False,
    path: None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    steps: int | None = None,
    shard_size: int | None = None,
) -> dict[str, np.ndarray]: ...


@overload
def collect(
    model: keras.Model,
    data: Any,
    points: Selector | None = None,
    *,
    batch_size: int = 32,
    training: bool = False,
    path: str | os.PathLike,
    progress: bool | None = None,
    overwrite: bool = False,
    steps: int | None = None,
    shard_size: int | None = None,
) -> Activations: ...


def collect(
    model: keras.Model,
    data: Any,
    points: Selector | None = None,
    *,
    batch_size: int = 32,
    training: bool = False,
    path: str | os.PathLike | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    steps: int | None = None,
    shard_size: int | None = None,
) -> dict[str, np.ndarray] | Activations:
    """The activations of `points` of `model` over `data`, one forward pass per batch.

    Every point is computed in the same pass by a probe (`kerasurgery.expose`)
    that shares `model`'s weights and is compiled once; `model` is not changed
    (not even BatchNormalization statistics with ``training=True``).

    Args:
        model: a Functional or Sequential model.
        data: a numpy array; a list or dict of arrays for several inputs; a
            `tf.data.Dataset` or `keras.utils.PyDataset` of batches; any
            iterable of batches. ``(x, y)`` and ``(x, y, w)`` work, ``y`` is
            ignored. See `kerasurgery.data`.
        points: addresses, globs, a list of them or a predicate (see
            `kerasurgery.points`); None means every layer output (the plain
            output of every layer and operation: no inputs, no ``:pre`` or
            ``:scores``), as in `kerasurgery.calibrate` and
            `kerasurgery.ActivationRecorder`.
        batch_size: rows per batch for arrays (batched sources keep theirs).
        training: run Dropout, BatchNormalization, ... in training mode.
        path: write the activations to this file instead of returning
            arrays; its suffix picks the format: ``.h5``/``.hdf5`` (HDF5,
            streamed batch by batch, for any size), ``.json`` (one JSON
            document of nested lists with shapes and dtypes; at most
            100 MB of values) or ``.npz`` (one numpy array per address).
            A path without a suffix (or an existing folder) is a folder
            of shards: one HDF5 file per `shard_size` samples and a
            ``manifest.json`` written last (see `kerasurgery.runtime.shards`;
            the layout `collect` on a Ray dataset writes). See
            `kerasurgery.runtime.activations`. Any other suffix is
            refused before anything runs.
        progress: show a progress bar; None shows it when stdout is a terminal.
        overwrite: allow `path` to replace an existing file (or the files
            of an earlier `collect` in a folder).
        steps: read at most this many batches.
        shard_size: samples per shard of a folder `path` (at least: shards
            end on batch boundaries); None: 512.

    Returns:
        ``{address: array}`` of shape ``(samples, *point shape)``, in the
        order of `points`; addresses naming the same tensor share one array.
        With `path`, a `kerasurgery.Activations` of the written file (the
        same object `kerasurgery.load_activations` returns): a dict
        ``{address: values}`` (lazily read ``h5py.Dataset`` for HDF5, numpy
        arrays for ``.json``/``.npz``) with ``attrs`` (``model``,
        ``num_samples``, ``points``, ``training``) and ``close()``, and a
        context manager that closes the file: ``with ks.collect(..., path=p)
        as acts: ...``. Close it (or use ``with``) before writing the file
        again.

    Raises:
        AddressError: a point is not an address of `model`.
        DataError: the data does not fit the model, is empty, or would not fit
            in memory (or in a JSON file); `path` has an unknown suffix, is in
            a missing folder or in one where no file can be created, or
            exists already. All checked before any batch runs, except sizes
            that only the data reveals.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> h = keras.layers.Dense(8, activation="relu", name="hidden")(x)
        >>> model = keras.Model(x, keras.layers.Dense(2, name="out")(h))
        >>> acts = ks.collect(model, np.ones((10, 4)), ["hidden:pre", "out"], batch_size=4)
        >>> {a: v.shape for a, v in acts.items()}
        {'hidden:pre': (10, 8), 'out': (10, 2)}
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "acts.h5")
        >>> with ks.collect(model, np.ones((10, 4)), "hidden", path=path, progress=False) as acts:
        ...     type(acts).__name__, acts["hidden"].shape
        ('Activations', (10, 8))
    """
    batch_size = check_batch_size(batch_size)
    folder = path is not None and is_folder_path(path)
    shard_size = positive_int(DEFAULT_SHARD_SIZE if shard_size is None else shard_size, "shard_size")
    target = check_path(path, overwrite, tuple(FILE_FORMATS)) if path is not None and not folder else None
    plan = plan_for(model, points, training=training)
    source = adapt(data, plan.probe, batch_size=batch_size, steps=steps)
    per_sample = _static_bytes(plan)
    in_memory = not folder and (target is None or file_format(target) != "hdf5")
    if in_memory and per_sample and source.num_samples:
        check_fits(per_sample, source.num_samples, len(plan.addresses))
    attrs = {"model": model.name, "training": training, "points": list(plan.addresses)}
    if folder:
        where = prepare_folder(path, attrs, overwrite=overwrite)
        sink: Any = ShardSink(where, plan.keys, attrs, shard_size)
    elif target is None:
        sink = MemorySink(plan.keys, source.num_samples, source.num_batches)
    elif file_format(target) == "hdf5":
        sink = H5Sink(target, plan.keys, source.num_samples, source.num_batches, attrs)
    else:
        every = _static_bytes(plan, per_address=True)
        if file_format(target) == "json" and every and source.num_samples:
            check_json_size(every * source.num_samples)
        sink = ArrayFileSink(target, plan.keys, source.num_samples, source.num_batches, attrs)
    try:
        n = run(plan, source, sink, progress=progress)
        result = sink.finish(n)
        return Activations(result) if folder else result
    except BaseException:
        sink.abort()
        raise
