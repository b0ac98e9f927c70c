"""`collect`: the activations of many points over a dataset, in one pass.

`collect` = a plan (probe + compiled step, `kerasurgery.runtime.plan`) + a
source of batches (`kerasurgery.runtime.inputs`) + a sink
(`kerasurgery.runtime.sinks`): preallocated
numpy arrays, or an HDF5 file written through a temporary file. Each batch's
tensors are copied once, into their final place, while the next batch's
forward pass runs.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasurgery.address.selector import Selector
from kerasurgery.runtime.activations import Activations
from kerasurgery.runtime.inputs import adapt, check_batch_size
from kerasurgery.runtime.loop import run
from kerasurgery.runtime.plan import Plan, plan_for
from kerasurgery.runtime.sinks import H5Sink, MemorySink, check_fits, check_path


def _static_bytes(plan: Plan) -> int | None:
    """Bytes per sample of the plan's distinct outputs, if their shapes are static."""
    total = 0
    for key in plan.unique:
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


def collect(
    model: keras.Model,
    data: Any,
    points: Selector | None = None,
    *,
    batch_size: int = 32,
    training: bool = False,
    path: Any = None,
    progress: bool | None = None,
    overwrite: bool = False,
    steps: int | None = None,
) -> dict:
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
        path: stream to this HDF5 file (one dataset per point) instead of RAM.
        progress: show a progress bar; None shows it when stdout is a terminal.
        overwrite: allow `path` to replace an existing file.
        steps: read at most this many batches.

    Returns:
        ``{address: array}`` of shape ``(samples, *point shape)``, in the
        order of `points`; addresses naming the same tensor share one array.
        With `path`, an `kerasurgery.Activations`: a dict of lazily
        read ``h5py.Dataset`` with a ``close()`` method.

    Raises:
        AddressError: a point is not an address of `model`.
        DataError: the data does not fit the model, is empty, or would not fit
            in memory; `path` is in a missing folder or exists already.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> h = keras.layers.Dense(8, activation="relu", name="hidden")(x)
        >>> model = keras.Model(x, keras.layers.Dense(2, name="out")(h))
        >>> acts = ks.collect(model, np.ones((10, 4)), ["hidden:pre", "out"], batch_size=4)
        >>> {a: v.shape for a, v in acts.items()}
        {'hidden:pre': (10, 8), 'out': (10, 2)}
    """
    batch_size = check_batch_size(batch_size)
    target = check_path(path, overwrite) if path is not None else None
    plan = plan_for(model, points, training=training)
    source = adapt(data, plan.probe, batch_size=batch_size, steps=steps)
    per_sample = _static_bytes(plan)
    if target is None and per_sample and source.num_samples:
        check_fits(per_sample, source.num_samples, len(plan.addresses))
    if target is None:
        sink: Any = MemorySink(plan.keys, source.num_samples, source.num_batches)
    else:
        attrs = {"model": model.name, "training": training, "points": list(plan.addresses)}
        sink = H5Sink(target, plan.keys, source.num_samples, source.num_batches, attrs)
    try:
        n = run(plan, source, sink, progress=progress)
        return sink.finish(n)
    except BaseException:
        sink.abort()
        raise
