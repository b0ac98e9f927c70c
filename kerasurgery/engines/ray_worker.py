"""What one Ray actor does: load the model once, then compute one block of samples per call.

`BlockWorker` is the class `kerasurgery.engines.ray` hands to
``Dataset.map_batches`` (an actor pool: one instance, so one model, per
actor). Each call receives one block of the dataset (``shard_size`` rows) as
numpy columns and returns one row describing it:

- ``key``: a hash of the block's input values (`block_key`). It names the
  block's shard (``shard-<key>.h5``), so a block that Ray retries after a
  worker died writes the same file again (replacing it atomically, never a
  second copy), and a resumed run recognises the blocks it already has;
- ``rows``; ``reused`` (the shard was already complete, with ``resume``);
- ``shapes``: per-sample shapes of the points (JSON), checked on the driver;
- ``result``: what the driver reduces: ``Calibration.to_dict()`` as JSON for
  calibrate, the shard's file name for collect to a folder, the activations
  (pickled ``{address: array}``) for collect in memory, and for gradients the
  pickled ``(sums, per_value)`` of `kerasurgery.attribution.gradients.gradient_sums`
  (a mean loss is divided on the driver, by the whole dataset's count).

The work itself is the public in-process call (`kerasurgery.collect`,
`kerasurgery.calibrate`) on the block's arrays, so a block's result is
exactly what that call gives in process. Adding a kind is an entry in `KINDS`.
This module imports neither Ray nor Keras at import time:
the actor's environment (``KERAS_BACKEND``) is set by its runtime_env first.

Example:
    >>> import numpy as np
    >>> from kerasurgery.engines.ray_worker import block_key
    >>> block_key([np.zeros((2, 3), "float32")]) == block_key([np.zeros((2, 3), "float32")])
    True
    >>> block_key([np.zeros((2, 3), "float32")]) == block_key([np.ones((2, 3), "float32")])
    False
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def block_key(arrays: list[np.ndarray]) -> str:
    """A 32-hex-digit hash of a block's inputs (dtype, shape and bytes of each array)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.view(np.uint8).reshape(-1).data if a.dtype != object else pickle.dumps(a))
    return h.hexdigest()


def fingerprint(model: Any) -> str:
    """A hash of a model's weights (values and order): the same model file loaded anywhere agrees."""
    h = hashlib.blake2b(digest_size=16)
    for w in model.weights:
        value = np.ascontiguousarray(np.asarray(w.numpy()))
        h.update(f"{value.dtype.str}{value.shape}".encode())
        h.update(value.view(np.uint8).reshape(-1).data)
    return h.hexdigest()


def _shapes(values: dict) -> str:
    return json.dumps({a: list(np.shape(v)[1:]) for a, v in values.items()})


def _calibrate(worker: BlockWorker, inputs: Any, key: str) -> tuple[str, str, bool]:
    from kerasurgery.stats.calibrate import calibrate
    from kerasurgery.stats.results import Calibration

    job = worker.job
    folder = job.get("folder")
    target = Path(folder) / f"stats-{key}.json" if folder else None
    if target is not None and job["resume"] and target.exists():
        text = target.read_text()
        stats = Calibration.from_json(text)
        return text, json.dumps({a: list(s.shape) for a, s in stats.items()}), True
    stats = calibrate(worker.model, inputs, job["points"], batch_size=job["batch_size"], progress=False,
                      **job["options"])
    text = stats.to_json()
    if target is not None:
        from kerasurgery.runtime.h5 import written_to

        with written_to(target) as temp:
            temp.write_text(text)
    return text, json.dumps({a: list(s.shape) for a, s in stats.items()}), False


def _collect(worker: BlockWorker, inputs: Any, key: str) -> tuple[Any, str, bool]:
    from kerasurgery.runtime.activations import Activations
    from kerasurgery.runtime.collect import collect
    from kerasurgery.runtime.shards import shard_file

    job = worker.job
    points, options = job["points"], {"batch_size": job["batch_size"], "progress": False, **job["options"]}
    if job.get("folder") is None:
        values = collect(worker.model, inputs, points, **options)
        return pickle.dumps(values, protocol=5), _shapes(values), False
    name = shard_file(key)
    target = Path(job["folder"]) / name
    if job["resume"] and target.exists():
        with Activations(target) as acts:
            return name, _shapes({a: np.empty((0, *v.shape[1:])) for a, v in acts.items()}), True
    with collect(worker.model, inputs, points, path=target, overwrite=True, **options) as acts:
        return name, _shapes({a: np.empty((0, *v.shape[1:])) for a, v in acts.items()}), False


def _gradients(worker: BlockWorker, inputs: Any, key: str) -> tuple[Any, str, bool]:
    from kerasurgery.attribution.gradients import gradient_sums

    job = worker.job
    options = dict(job["options"])
    column = options.pop("y_column", None)
    if column is not None:
        options["y"] = worker.batch[column]
    values, per_value = gradient_sums(worker.model, inputs, job["points"], batch_size=job["batch_size"],
                                      progress=False, **options)
    return pickle.dumps((values, per_value), protocol=5), _shapes(values), False


#: kind -> function(worker, inputs, key) -> (result, shapes JSON, reused)
KINDS = {"calibrate": _calibrate, "collect": _collect, "gradients": _gradients}


class BlockWorker:
    """One Ray actor: the model, loaded once; `__call__` computes one block.

    Args:
        job: what to compute (JSON-ready): ``kind`` (a key of `KINDS`),
            ``points``, ``batch_size``, ``options`` (keyword arguments of the
            in-process call), ``columns`` (dataset columns in the order of the
            model's inputs, or one column), ``input_names``, ``backend``,
            ``model_path`` and ``fingerprint`` (or None), ``folder``, ``resume``,
            ``imports`` (modules of custom layers, imported before loading).
        model_bytes: the ``.keras`` file's bytes when the model travels
            through Ray's object store (``model_path`` None).
    """

    def __init__(self, job: dict, model_bytes: bytes | None = None):
        import keras

        import kerasurgery.layers  # noqa: F401 - registers the project's layers with Keras
        from kerasurgery.errors import DataError

        self.job = job
        if keras.backend.backend() != job["backend"]:
            raise DataError(
                f"Expected the Ray worker to run Keras with the '{job['backend']}' backend. Received: "
                f"'{keras.backend.backend()}' (Keras was imported in this worker process before its "
                "KERAS_BACKEND was set). Start the workers afresh (`ray stop`), or pass worker_backend="
                f"'{keras.backend.backend()}'."
            )
        for name in job.get("imports", ()):
            try:
                importlib.import_module(name)
            except ImportError as e:
                raise DataError(
                    f"Expected module '{name}' (custom layers of the model) to be importable on the Ray workers. "
                    f"Received: {e}. Install it on the workers, or ship it: kerasurgery.engines.ray.init("
                    "runtime_env={'py_modules': [its package]})."
                ) from None
        if model_bytes is not None:
            with tempfile.TemporaryDirectory(prefix="kerasurgery-model-") as folder:
                path = os.path.join(folder, "model.keras")
                with open(path, "wb") as f:
                    f.write(model_bytes)
                self.model = keras.saving.load_model(path, compile=False)
        else:
            self.model = keras.saving.load_model(job["model_path"], compile=False)
            if job.get("fingerprint") and fingerprint(self.model) != job["fingerprint"]:
                raise DataError(
                    f"Expected the model file '{job['model_path']}' to hold the model given to the driver "
                    "(the same weights). Received: a file with other weights. Pass another `model_path` "
                    "(kerasurgery writes the model there), or save the model to this one again."
                )

    def inputs(self, batch: dict[str, np.ndarray]) -> Any:
        """The block's columns in the model's input structure (one array, or a dict by input name)."""
        columns = self.job["columns"]
        if len(columns) == 1 and len(self.job["input_names"]) == 1:
            return batch[columns[0]]
        return {name: batch[c] for name, c in zip(self.job["input_names"], columns)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        self.batch = batch  # other columns a kind reads (labels)
        inputs = self.inputs(batch)
        arrays = list(inputs.values()) if isinstance(inputs, dict) else [inputs]
        key = block_key(arrays)
        result, shapes, reused = KINDS[self.job["kind"]](self, inputs, key)
        return {"key": [key], "rows": [len(arrays[0])], "result": [result], "shapes": [shapes],
                "reused": [reused]}
