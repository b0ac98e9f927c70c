"""The public `collect`, `calibrate` and `gradients`: in process, or on Ray for a `ray.data.Dataset`.

Each public function is the in-process one (same arguments, same
docstring) plus the Ray options of `kerasurgery.engines.ray.RAY_OPTIONS`.
A Ray dataset is recognised without importing Ray: if ``ray.data`` is not
imported yet, `data` cannot be one. Adding an engine-backed function is
one `_public` line here (naming the module of its driver side) and an entry
in `kerasurgery.engines.ray_worker.KINDS`.

Example:
    >>> import numpy as np
    >>> from kerasurgery.engines.dispatch import is_ray_dataset
    >>> is_ray_dataset(np.zeros((2, 3)))
    False
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

from kerasurgery.attribution.gradients import gradients as _local_gradients
from kerasurgery.errors import DataError
from kerasurgery.runtime.collect import collect as _local_collect
from kerasurgery.stats.calibrate import calibrate as _local_calibrate

#: Keyword arguments that only the Ray engine takes, with their defaults
#: (`kerasurgery.engines.ray.RAY_OPTIONS`, repeated here so that checking them imports no Ray).
RAY_OPTIONS: dict[str, Any] = {
    "actors": None, "cpus_per_actor": 1, "gpus_per_actor": 0, "worker_backend": None, "model_path": None,
    "runtime_env": None, "resume": False,
}

_RAY_DOC = """
    On a Ray cluster:
        When `data` is a `ray.data.Dataset` (one column for a one-input model,
        or a column named after each input), the work runs on a pool of Ray
        actors, one model per actor, each computing blocks of `shard_size`
        samples; the results are merged on the driver in the dataset's order,
        behind one progress bar (see `kerasurgery.engines.ray` and
        docs/cluster.md). Extra keyword arguments then:

        actors: the number of actors (None: a pool Ray sizes between 1 and
            what the cluster holds).
        cpus_per_actor / gpus_per_actor: Ray resources of each actor (1 / 0).
        worker_backend: the workers' Keras backend, set as KERAS_BACKEND in
            their runtime_env (None: this process's backend).
        model_path: a ``.keras`` file every worker can read; written there
            if missing (else it must hold this model's weights). None: the
            model travels as ``.keras`` bytes through Ray's object store.
        runtime_env: merged into the actors' runtime_env (``py_modules`` of
            custom layers, ``env_vars``, ...).
        shard_size: samples per Ray task (and per shard file); None: 512.
        resume: reuse the complete shards of an interrupted run (collect
            with a folder `path`; calibrate with `shards=FOLDER`).
        shards (calibrate): a folder where every block's statistics are
            also written (``stats-<key>.json``).
"""


def is_ray_dataset(data: Any) -> bool:
    """Whether `data` is a `ray.data.Dataset` (False, without importing Ray, when Ray is not imported)."""
    module = sys.modules.get("ray.data")
    dataset = getattr(module, "Dataset", None)
    return dataset is not None and isinstance(data, dataset)


def _public(local: Callable, name: str, ray_only: dict[str, Any], engine: str = "kerasurgery.engines.ray",
            note: str = "") -> Callable:
    """`local` with the Ray engine behind it: same docstring and signature, plus `ray_only` options."""

    signature = inspect.signature(local)
    known = set(signature.parameters)

    @functools.wraps(local)
    def public(model: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        if is_ray_dataset(data):
            module = importlib.import_module(engine)
            return getattr(module, name)(model, data, *args, **kwargs)
        given = sorted(k for k in kwargs if k in ray_only and k not in known)
        if given:
            raise DataError(
                f"Expected a `ray.data.Dataset` as `data` for {', '.join(given)} (options of the Ray engine). "
                f"Received: data of type {type(data).__name__}, which runs in this process. Drop them, or "
                "pass `ray.data.from_numpy(...)` or another Ray dataset."
            )
        return local(model, data, *args, **kwargs)

    params = list(signature.parameters.values())
    extra = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in ray_only.items()
             if k not in known]
    public.__signature__ = signature.replace(parameters=params + extra)  # type: ignore[attr-defined]
    doc = local.__doc__ or ""
    cut = doc.find("\n    Example:")
    ray_doc = _RAY_DOC + note
    public.__doc__ = doc[:cut] + ray_doc + doc[cut:] if cut >= 0 else doc + ray_doc
    return public


collect = _public(_local_collect, "collect", {**RAY_OPTIONS, "shard_size": None})
calibrate = _public(_local_calibrate, "calibrate", {**RAY_OPTIONS, "shard_size": None, "shards": None})
gradients = _public(_local_gradients, "gradients", {**RAY_OPTIONS, "shard_size": None},
                    "kerasurgery.engines.ray_gradients", """        On Ray, `y` is the name of the dataset's column of labels, and `target`
        is None, a class index, an address or a function (no per-sample indices);
        see `kerasurgery.engines.ray_gradients`.
""")
