"""`collect` and `calibrate` over a `ray.data.Dataset`, on a Ray cluster.

``Dataset.map_batches`` runs `kerasurgery.engines.ray_worker.BlockWorker`
in a pool of Ray actors: each actor loads the model once (from a ``.keras``
file) and computes one block of ``shard_size`` samples per call with the
in-process `collect` / `calibrate`; the driver reduces what comes back, in
the dataset's order (``preserve_order``), behind one progress bar:

- calibrate: each block's `Calibration` (``to_dict`` as JSON) is merged
  (`Calibration.merge`); with ``shards=FOLDER`` each is also written there as
  ``stats-<key>.json``, which ``resume=True`` reuses;
- collect with ``path=FOLDER``: each actor writes its block's shard
  (``shard-<key>.h5``, renamed into place when complete) and the driver
  writes the manifest last (`kerasurgery.runtime.shards`), then returns
  `load_activations(FOLDER)`; ``resume=True`` keeps the complete shards of an
  interrupted run; without ``path`` the blocks' arrays come back to the driver.

What is shipped to the workers: the model as ``.keras`` bytes through Ray's
object store (or, with ``model_path``, a file every worker can read) and
``KERAS_BACKEND`` (the actors' ``runtime_env``). kerasurgery itself must be
importable on the workers: installed there, or shipped by starting Ray with
`init` (``ray.init`` with this package in the job's ``py_modules``), which
the engine does itself when no Ray is running. Keras, the backend, numpy and
h5py must be installed on the workers, and so must the modules of custom
layers (or ship them: ``init(runtime_env={"py_modules": [my_layers]})``).
A worker that dies is replaced and its block retried by Ray; a block's files
are named after a hash of its inputs, so a retry replaces them, never adds.

Example:
    >>> import keras, numpy as np, ray, kerasurgery as ks
    >>> from kerasurgery.engines.ray import parse_columns
    >>> x = keras.Input((3,), name="x")
    >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
    >>> parse_columns(["data"], model)
    ['data']
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import ray

from kerasurgery.address.selector import Selector
from kerasurgery.checks import boolean, optional_positive_int, positive_int
from kerasurgery.engines.ray_worker import BlockWorker, fingerprint
from kerasurgery.errors import DataError
from kerasurgery.runtime.activations import Activations
from kerasurgery.runtime.h5 import storable_dtype, written_to
from kerasurgery.runtime.inputs import check_batch_size, input_specs
from kerasurgery.runtime.shards import DEFAULT_SHARD_SIZE, prepare_folder, write_manifest
from kerasurgery.stats.results import Calibration

__all__ = ["calibrate", "collect", "init", "parse_columns"]

#: The Ray options of `collect` and `calibrate` and their defaults (the public functions refuse them for other data).
RAY_OPTIONS: dict[str, Any] = {
    "actors": None, "cpus_per_actor": 1, "gpus_per_actor": 0, "worker_backend": None, "model_path": None,
    "runtime_env": None, "shard_size": None, "resume": False,
}


def parse_columns(columns: list[str], model: keras.Model) -> list[str]:
    """The dataset columns that feed `model`'s inputs, in input order, or a DataError.

    One column feeds a one-input model; otherwise every input needs a column
    of its name (other columns, such as labels, are ignored).
    """
    names = [s.name for s in input_specs(model)]
    if len(names) == 1 and len(columns) == 1:
        return list(columns)
    if all(n in columns for n in names):
        return names
    raise DataError(
        f"Expected a Ray dataset with one column (for a one-input model) or a column named after each "
        f"input of model '{model.name}': {names}. Received: columns {list(columns)}. Rename them "
        "(`ds.rename_columns({'old': 'new'})`) or drop the others (`ds.select_columns([...])`)."
    )


def _runtime_env(backend: str, user: dict | None) -> dict:
    """The actors' runtime_env: ``KERAS_BACKEND`` merged with the user's (whose env_vars win)."""
    user = dict(user or {})
    env = {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    env.update(user.pop("env_vars", None) or {})
    return {**user, "env_vars": env}


def init(address: str | None = None, **kwargs: Any) -> None:
    """`ray.init` with this package shipped to every worker (job-level ``py_modules``).

    Ray uploads local packages only at the job level, so this is how workers
    get the driver's kerasurgery when it is not installed on the cluster (or
    is another version). Extra ``py_modules`` (custom layers) and other
    runtime_env keys may be given in ``runtime_env=``. Does nothing if Ray is
    already initialized.
    """
    if ray.is_initialized():
        return
    package = str(Path(__file__).resolve().parents[1])  # this kerasurgery's folder (no upward import)
    env = dict(kwargs.pop("runtime_env", None) or {})
    env["py_modules"] = [package, *(env.get("py_modules") or [])]
    ray.init(address=address, runtime_env=env, **kwargs)


def _ship_model(model: keras.Model, model_path: Any) -> tuple[bytes | None, str | None, str | None]:
    """``(bytes, path, fingerprint)``: the ``.keras`` bytes, or a path every worker reads."""
    if model_path is None:
        with tempfile.TemporaryDirectory(prefix="kerasurgery-model-") as folder:
            saved = os.path.join(folder, "model.keras")
            model.save(saved)
            return Path(saved).read_bytes(), None, None
    path = Path(os.fspath(model_path))
    if path.suffix != ".keras":
        raise DataError(f"Expected `model_path` ending in .keras. Received: model_path='{path}'.")
    if not path.exists():
        if not path.parent.is_dir():
            raise DataError(f"Expected `model_path` in an existing folder. Received: model_path='{path}'.")
        with written_to(path) as temp:
            model.save(temp)
    return None, str(path), fingerprint(model)


def custom_modules(model: keras.Model) -> list[str]:
    """Modules of the model's layers that are neither Keras's nor kerasurgery's (workers import them first)."""
    from kerasurgery.keras_internals import all_layers

    found = {type(layer).__module__ for layer in [model, *all_layers(model)]}
    return sorted(m for m in found if m.split(".")[0] not in ("keras", "kerasurgery", "keras_hub", "builtins")
                  and m != "__main__")


def _check_options(o: dict) -> dict:
    o["actors"] = optional_positive_int(o["actors"], "actors", meaning="a pool Ray sizes itself")
    for name in ("cpus_per_actor", "gpus_per_actor"):
        value = o[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise DataError(f"Expected `{name}` to be a number >= 0. Received: {name}={value!r}.")
    o["shard_size"] = positive_int(DEFAULT_SHARD_SIZE if o["shard_size"] is None else o["shard_size"], "shard_size")
    o["resume"] = boolean(o["resume"], "resume")
    backend = o["worker_backend"] or keras.backend.backend()
    if backend not in ("tensorflow", "jax", "torch", "numpy", "openvino"):
        raise DataError(f"Expected `worker_backend` to be a Keras backend such as 'jax'. Received: {backend!r}.")
    o["worker_backend"] = backend
    if o["runtime_env"] is not None and not isinstance(o["runtime_env"], dict):
        raise DataError(f"Expected `runtime_env` to be a dict. Received: runtime_env={o['runtime_env']!r}.")
    return o


def first_inputs(data: Any, model: keras.Model, exclude: tuple[str, ...] = ()) -> tuple[Any, list[str], dict]:
    """A couple of the dataset's rows as the model's inputs, their columns, and the rows.

    Run through the in-process call, they check everything before any actor
    starts. `exclude`: columns that are not inputs (labels).
    """
    context = data.context
    saved, context.enable_progress_bars = context.enable_progress_bars, False
    try:
        batch = data.take_batch(batch_size=2, batch_format="numpy")
    finally:
        context.enable_progress_bars = saved
    if not batch or not len(next(iter(batch.values()))):
        raise DataError(f"Expected at least one sample for model '{model.name}'. Received: an empty Ray dataset.")
    columns = parse_columns([c for c in batch if c not in exclude], model)
    names = [s.name for s in input_specs(model)]
    inputs = batch[columns[0]] if len(names) == 1 else {n: batch[c] for n, c in zip(names, columns)}
    return inputs, columns, batch


def _progress(progress: bool | None, data: Any) -> Any:
    from kerasurgery.runtime.loop import _isatty

    if not (_isatty() if progress is None else bool(progress)):
        return None
    try:
        total = data._meta_count()  # known without running the dataset, or None
    except Exception:  # noqa: BLE001 - only the progress bar's total depends on it
        total = None
    return keras.utils.Progbar(total, unit_name="sample")


def run_blocks(kind: str, model: keras.Model, data: Any, points: Any, *, columns: list[str], batch_size: int,
               options: dict, ray_options: dict, folder: str | None, progress: bool | None) -> Any:
    """Run `kind` over `data` on Ray actors; yields ``(key, rows, result, shapes, reused)`` in order."""
    o = _check_options({**RAY_OPTIONS, **ray_options})
    model_bytes, model_path, print_ = _ship_model(model, o["model_path"])
    job = {"kind": kind, "points": points, "batch_size": batch_size, "options": options, "columns": columns,
           "input_names": [s.name for s in input_specs(model)], "backend": o["worker_backend"],
           "model_path": model_path, "fingerprint": print_, "folder": folder, "resume": o["resume"],
           "imports": custom_modules(model)}
    init()  # a local cluster, if none was started
    pool = (ray.data.ActorPoolStrategy(size=o["actors"]) if o["actors"] else
            ray.data.ActorPoolStrategy(min_size=1, max_size=None))
    mapped = data.map_batches(
        BlockWorker, batch_size=o["shard_size"], batch_format="numpy", compute=pool,
        fn_constructor_kwargs={"job": job, "model_bytes": model_bytes}, num_cpus=o["cpus_per_actor"],
        num_gpus=o["gpus_per_actor"], runtime_env=_runtime_env(o["worker_backend"], o["runtime_env"]),
    )
    context = mapped.context
    current = ray.data.DataContext.get_current()  # the dataset's own copy and the one Ray's bars may read
    saved = (context.execution_options.preserve_order, context.enable_progress_bars, current.enable_progress_bars)
    context.execution_options.preserve_order = True  # blocks come back in the dataset's order
    context.enable_progress_bars = current.enable_progress_bars = False  # ours counts samples over the dataset
    bar, done = _progress(progress, data), 0
    try:
        for out in mapped.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(out["key"])):
                done += int(out["rows"][i])
                if bar is not None:
                    bar.update(done)
                yield (str(out["key"][i]), int(out["rows"][i]), out["result"][i], json.loads(out["shapes"][i]),
                       bool(out["reused"][i]))
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars, current.enable_progress_bars = saved
    if bar is not None:
        bar.update(done, finalize=True)


def _refuse_steps(steps: Any) -> None:
    if steps is not None:
        raise DataError(
            f"Expected no `steps` with a Ray dataset. Received: steps={steps!r}. Take fewer samples with "
            "`ds.limit(n)`."
        )


def calibrate(model: keras.Model, data: Any, points: Selector | None = None, *, batch_size: int = 32,
              progress: bool | None = None, steps: int | None = None, shards: Any = None,
              **options: Any) -> Calibration:
    """`kerasurgery.calibrate` over a `ray.data.Dataset`, on Ray actors (see the module docstring).

    Args:
        model, points, batch_size, progress: as for `kerasurgery.calibrate`.
        data: a `ray.data.Dataset`: one column for a one-input model, or a
            column named after each input.
        steps: not supported (use ``data.limit(n)``).
        shards: a folder (readable by every worker) where each block's
            statistics are also written, as ``stats-<key>.json``; with
            ``resume=True`` the blocks found there are not computed again.
        **options: the Ray options (`RAY_OPTIONS`: actors, cpus_per_actor,
            gpus_per_actor, worker_backend, model_path, runtime_env,
            shard_size, resume) and `kerasurgery.calibrate`'s own (sample,
            bins, per_channel, ...), passed to every block.

    Returns:
        The `Calibration` of the whole dataset: the blocks' statistics merged
        in the dataset's order; equal to the `merge` of in-process
        `calibrate` calls over the same blocks.

    Example:
        >>> import keras, numpy as np, ray, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> parse_columns(["x", "label"], model)
        ['x']
    """
    from kerasurgery.stats.calibrate import calibrate as local

    _refuse_steps(steps)
    batch_size = check_batch_size(batch_size)
    ray_options = {k: options.pop(k) for k in list(options) if k in RAY_OPTIONS}
    inputs, columns, _rows = first_inputs(data, model)
    local(model, inputs, points, batch_size=batch_size, progress=False, **options)  # errors before any actor
    folder = None
    if shards is not None:
        folder = str(Path(os.fspath(shards)).resolve())
        Path(folder).mkdir(exist_ok=True)
    total: Calibration | None = None
    for _key, _rows, result, _shapes, _reused in run_blocks(
            "calibrate", model, data, points, columns=columns, batch_size=batch_size, options=options, ray_options=ray_options,
            folder=folder, progress=progress):
        part = Calibration.from_json(str(result))
        total = part if total is None else total.merge(part)
    if total is None:
        raise DataError(f"Expected at least one sample for model '{model.name}'. Received: an empty Ray dataset.")
    total.model = model.name
    return total


def collect(model: keras.Model, data: Any, points: Selector | None = None, *, batch_size: int = 32,
            training: bool = False, path: Any = None, progress: bool | None = None, overwrite: bool = False,
            steps: int | None = None, **options: Any) -> dict[str, np.ndarray] | Activations:
    """`kerasurgery.collect` over a `ray.data.Dataset`, on Ray actors (see the module docstring).

    Args:
        model, points, batch_size, training, progress: as for `kerasurgery.collect`.
        data: a `ray.data.Dataset` (columns as for `calibrate`).
        path: a folder (no suffix) every worker and the driver can write (a
            shared filesystem on a cluster): one shard per block, then the
            manifest; None: the arrays come back to the driver's memory.
        overwrite: replace the files of an earlier `collect` in `path`.
        steps: not supported (use ``data.limit(n)``).
        **options: the Ray options (`RAY_OPTIONS`); ``resume=True`` keeps the
            complete shards in `path` of an interrupted run with the same
            model, points and ``training``, and computes only the others.

    Returns:
        As `kerasurgery.collect`: ``{address: array}`` in the dataset's
        order, or with `path` the `Activations` of the folder.

    Example:
        >>> import keras, numpy as np, ray, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> parse_columns(["image"], model)
        ['image']
    """
    from kerasurgery.runtime.collect import collect as local
    from kerasurgery.runtime.shards import is_folder_path

    _refuse_steps(steps)
    batch_size = check_batch_size(batch_size)
    unknown = sorted(set(options) - set(RAY_OPTIONS))
    if unknown:
        raise DataError(f"Expected options of collect or of its Ray engine. Received: {', '.join(unknown)}.")
    inputs, columns, _rows = first_inputs(data, model)
    probe = local(model, inputs, points, batch_size=batch_size, training=training, progress=False)
    folder = None
    attrs = {"model": model.name, "training": bool(training), "points": list(probe)}
    if path is not None:
        if not is_folder_path(path):
            raise DataError(
                f"Expected `path` to be a folder (a path without a suffix) for collect on Ray: every worker "
                f"writes its own shards. Received: path='{os.fspath(path)}'. Drop the suffix."
            )
        run = {**attrs, "weights": fingerprint(model)}
        folder = prepare_folder(path, run, overwrite=overwrite, resume=bool(options.get("resume", False)))
        folder = folder.resolve()
    blocks = list(run_blocks("collect", model, data, points, columns=columns, batch_size=batch_size,
                             options={"training": bool(training)}, ray_options=options,
                             folder=None if folder is None else str(folder), progress=progress))
    expected = {a: list(np.shape(v)[1:]) for a, v in probe.items()}
    for key, _rows, _result, shapes, _reused in blocks:
        if shapes != expected:
            raise DataError(
                f"Expected every block to give the points the per-sample shapes of the first samples {expected}. "
                f"Received: {shapes} in block {key}. Give samples of one shape (pad them)."
            )
    if folder is None:
        parts = [pickle.loads(result) for _k, _r, result, _s, _u in blocks]
        return {a: np.concatenate([p[a] for p in parts]) for a in probe}
    described = {a: {"shape": list(np.shape(v)[1:]), "dtype": str(storable_dtype(np.asarray(v).dtype))}
                 for a, v in probe.items()}
    write_manifest(folder, attrs, described, [{"file": str(r), "rows": n, "key": k} for k, n, r, _s, _u in blocks])
    return Activations(folder)
