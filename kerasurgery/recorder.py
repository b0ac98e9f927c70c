"""`ActivationRecorder`: record points of a model while it trains.

At the end of every `every`-th epoch the recorder runs its probe (built once,
sharing the model's weights; see `kerasurgery.runtime.plan`) over a fixed dataset
and keeps the activations, in memory (``history[address]``, one array per
record) or in an HDF5 file (one dataset per point, shaped
``(records, samples, ...)``). The model is not changed: recording runs
statelessly, so even BatchNormalization statistics stay as training left them.

The file is complete after every record: the first record is written to a
hidden temporary file and renamed into place, later records are appended and
the ``epochs`` attribute is updated last. A record that is interrupted
(Ctrl-C, an error) is removed again, so the file keeps exactly the records
that finished.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasurgery.address.selector import Selector
from kerasurgery.checks import positive_int
from kerasurgery.errors import DataError
from kerasurgery.runtime import backend
from kerasurgery.runtime.h5 import PendingFile, create_dataset, h5_name
from kerasurgery.runtime.inputs import adapt, check_batch_size
from kerasurgery.runtime.loop import run
from kerasurgery.runtime.plan import Plan, plan_for
from kerasurgery.runtime.sinks import MemorySink, check_batch, check_path


class _RecordSink:
    """Writes one record into datasets shaped (records, samples, ...) of an open HDF5 file."""

    def __init__(self, file: Any, keys: dict[str, str], record: int, model_name: str):
        self.file = file
        self.keys = keys
        self.record = record
        self.model_name = model_name

    def prepare(self, outputs: dict, rows: int) -> None:
        self.shapes = {}
        for key, t in outputs.items():
            check_batch(key, t, rows, None, "batch 0")
            self.shapes[key] = tuple(t.shape[1:])
        for address, key in self.keys.items():
            shape, dtype = self.shapes[key], backend.as_numpy(outputs[key]).dtype
            name = h5_name(address)
            if name not in self.file:
                create_dataset(self.file, address, shape, dtype, rows=rows, leading=(0, 0),
                               attrs={"model": self.model_name})
            ds = self.file[name]
            if tuple(ds.shape[2:]) != shape:
                raise DataError(
                    f"Expected point '{address}' to keep its per-sample shape {tuple(ds.shape[2:])} from "
                    f"record to record. Received: {shape}."
                )
            ds.resize(self.record + 1, axis=0)

    def check(self, outputs: dict, rows: int, where: str) -> None:
        for key, t in outputs.items():
            check_batch(key, t, rows, self.shapes[key], where)

    def write(self, start: int, rows: int, outputs: dict) -> None:
        arrays = {k: backend.as_numpy(t) for k, t in outputs.items()}
        for address, key in self.keys.items():
            ds = self.file[h5_name(address)]
            if start + rows > ds.shape[1]:
                if self.record > 0:
                    raise DataError(
                        f"Expected the recorder's data to give {ds.shape[1]} samples at every record, "
                        f"as at the first. Received: more at record {self.record}."
                    )
                ds.resize(start + rows, axis=1)
            ds[self.record, start : start + rows] = arrays[key].astype(ds.dtype, copy=False)

    def finish(self, n: int) -> None:
        for address in self.keys:
            if self.file[h5_name(address)].shape[1] != n:
                raise DataError(
                    "Expected the recorder's data to give the same number of samples at every record. "
                    f"Received: {n} samples at record {self.record}, "
                    f"{self.file[h5_name(address)].shape[1]} before."
                )

    def abort(self) -> None:
        """Remove this (unfinished) record again."""
        for address in self.keys:
            name = h5_name(address)
            if name in self.file and self.file[name].shape[0] > self.record:
                self.file[name].resize(self.record, axis=0)


class ActivationRecorder(keras.callbacks.Callback):
    """Records points of the model on fixed data at the end of every `every`-th epoch.

    The probe is built once (on the first `fit`) and shares the model's
    weights, so each record sees the weights of that epoch. Recording does
    not change the model or its training.

    Args:
        points: addresses, globs, a list of them or a predicate (see
            `kerasurgery.points`); None means every layer output (the plain
            output of every layer and operation: no inputs, no ``:pre`` or
            ``:scores``), as in `kerasurgery.collect` and
            `kerasurgery.calibrate`.
        data: data to record on, read again at every record: arrays, a
            `tf.data.Dataset`, a `keras.utils.PyDataset` or a re-iterable of
            batches (not a one-shot generator). See `kerasurgery.collect`.
        every: record after epochs ``every - 1``, ``2 * every - 1``, ...
        path: write the records to this HDF5 file (``.h5`` or ``.hdf5``; one
            dataset per point, shaped ``(records, samples, ...)``, attribute
            ``epochs``) instead of keeping them in `history`. The file appears
            after the first record and is complete after each one.
        batch_size: rows per batch for arrays.
        training: record with layers in training mode.
        overwrite: allow `path` to replace an existing file.
        progress: show a progress bar per record.
        steps: read at most this many batches per record.

    Attributes:
        history: ``{address: [array per record]}`` (empty with `path`).
        epochs: the epoch index of each record.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, activation="relu", name="d")(x))
        >>> model.compile("sgd", "mse")
        >>> data = np.ones((4, 3), "float32")
        >>> recorder = ks.ActivationRecorder(["d:pre"], data, every=2)
        >>> _ = model.fit(data, np.zeros((4, 2)), epochs=4, verbose=0, callbacks=[recorder])
        >>> recorder.epochs, [a.shape for a in recorder.history["d:pre"]]
        ([1, 3], [(4, 2), (4, 2)])
    """

    def __init__(
        self,
        points: Selector | None,
        data: Any,
        *,
        every: int = 1,
        path: Any = None,
        batch_size: int = 32,
        training: bool = False,
        overwrite: bool = False,
        progress: bool = False,
        steps: int | None = None,
    ):
        super().__init__()
        every = positive_int(every, "every")
        if data is None or (hasattr(data, "__next__") and iter(data) is data):
            raise DataError(
                "Expected data that can be read at every record: arrays, a tf.data.Dataset, a "
                f"keras.utils.PyDataset or a list of batches. Received: {type(data).__name__}, which "
                "is used up after one pass. Materialize it first, e.g. `list(generator)`."
            )
        self.points = points
        self.data = data
        self.every = int(every)
        self.batch_size = check_batch_size(batch_size)
        self.path: Path | None = check_path(path, overwrite) if path is not None else None
        self.training = training
        self.progress = progress
        self.steps = steps
        self.history: dict[str, list[np.ndarray]] = {}
        self.epochs: list[int] = []
        self._plan: Plan | None = None
        self._plan_model: Any = None
        self._records_in_file = 0

    @property
    def probe(self) -> keras.Model | None:
        """The probe model (built at the first `fit`), sharing the model's weights."""
        return self._plan.probe if self._plan is not None else None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._plan is None or self._plan_model() is not self.model:
            self._plan = plan_for(self.model, self.points, training=self.training)
            self._plan_model = weakref.ref(self.model)
        self._source = adapt(self.data, self._plan.probe, batch_size=self.batch_size, steps=self.steps)
        if not self._source.reiterable:
            raise DataError(
                "Expected data that can be read at every record. Received: "
                f"{type(self.data).__name__}, whose iterator is itself. Pass a list of batches instead."
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every == 0:
            self.record(epoch)

    def record(self, epoch: int) -> None:
        """Record every point now, as for `epoch`."""
        if self._plan is None:
            self.on_train_begin()
        plan, source = self._plan, self._source
        if plan is None:  # pragma: no cover - on_train_begin sets it or raises
            raise RuntimeError("ActivationRecorder.record: no probe was built.")
        if self.path is None:
            memory = MemorySink(plan.keys, source.num_samples, source.num_batches)
            arrays = memory.finish(run(plan, source, memory, progress=self.progress))
            for address, array in arrays.items():
                self.history.setdefault(address, []).append(array)
        else:
            self._write_record(self.path, plan, source, epoch)
        self.epochs.append(int(epoch))

    # -- the HDF5 file ---------------------------------------------------
    def _write_record(self, path: Path, plan: Plan, source: Any, epoch: int) -> None:
        """Append one record to the file; on any interruption, leave the file as it was."""
        import h5py

        pending = PendingFile(path) if self._records_in_file == 0 else None
        if pending is not None:
            file = pending.open()
            file.attrs.update(model=self.model.name, training=bool(self.training), epochs=[])
        else:
            file = h5py.File(path, "a")
        sink = _RecordSink(file, plan.keys, self._records_in_file, self.model.name)
        try:
            sink.finish(run(plan, source, sink, progress=self.progress))
            file.attrs["epochs"] = [*file.attrs.get("epochs", []), int(epoch)]
        except BaseException:
            if pending is not None:
                pending.discard()
            else:
                sink.abort()
                file.close()
            raise
        if pending is not None:
            pending.commit()
        else:
            file.close()
        self._records_in_file += 1
