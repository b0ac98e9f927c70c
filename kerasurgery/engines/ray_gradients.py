"""`gradients` over a `ray.data.Dataset`, on Ray actors (the machinery of `kerasurgery.engines.ray`).

Each actor runs `kerasurgery.attribution.gradients.gradient_sums` on its
blocks (``shard_size`` samples), as `gradients` does in one process; the
driver concatenates the blocks in the dataset's order and divides a loss
reduced by its mean by the whole dataset's count of loss values, so the
result equals in-process `gradients` over the same samples, row for row.

What differs from in process: per-sample arguments live in the dataset.
Labels for `loss` are a column, named by ``y="label"`` (the column is not an
input); per-sample class indices as `target` are not taken (pass a class
index, an address, a function of the outputs, or None). A `target` function
travels to the workers with cloudpickle: a function defined in ``__main__``
or inside another function goes by value, one defined at the top of a module
by reference (that module must then be importable on the workers).

Example:
    >>> import keras, kerasurgery as ks
    >>> from kerasurgery.engines.ray_gradients import label_column
    >>> label_column("label"), label_column(None)
    ('label', None)
"""

from __future__ import annotations

import pickle
from typing import Any

import keras
import numpy as np

from kerasurgery.address.selector import Selector
from kerasurgery.attribution.gradients import divide
from kerasurgery.engines.ray import RAY_OPTIONS, _refuse_steps, first_inputs, run_blocks
from kerasurgery.errors import DataError
from kerasurgery.runtime.inputs import check_batch_size

__all__ = ["gradients", "label_column"]


def label_column(y: Any) -> str | None:
    """The dataset column of the labels (`y` on Ray), or a DataError for labels given as an array."""
    if y is None or isinstance(y, str):
        return y
    raise DataError(
        f"Expected `y` to be the name of the Ray dataset's column of labels (such as y='label'). Received: y of "
        f"type {type(y).__name__}. Add the labels to the dataset as a column (one row per sample) and name it."
    )


def _check_target(target: Any) -> None:
    if target is None or callable(target) or isinstance(target, str) or (
            isinstance(target, (int, np.integer)) and not isinstance(target, bool)):
        return
    raise DataError(
        f"Expected `target` on a Ray dataset to be None, one class index, an address or a function of the "
        f"outputs. Received: target of type {type(target).__name__} (per-sample class indices are not taken "
        "on Ray). Pass one class index per call (`ds.filter(...)` by class), or run in process."
    )


def gradients(model: keras.Model, data: Any, points: Selector, *, target: Any = None, y: Any = None,
              loss: Any = None, batch_size: int = 32, training: bool = False, progress: bool | None = None,
              steps: int | None = None, **options: Any) -> dict[str, np.ndarray]:
    """`kerasurgery.gradients` over a `ray.data.Dataset`, on Ray actors (see the module docstring).

    Args:
        model, points, loss, batch_size, training, progress: as for `kerasurgery.gradients`.
        data: a `ray.data.Dataset` (columns as for `kerasurgery.engines.ray.calibrate`).
        target: None, a class index, an address or a function of the outputs.
        y: the name of the dataset's column of labels, for `loss`.
        steps: not supported (use ``data.limit(n)``).
        **options: the Ray options (`kerasurgery.engines.ray.RAY_OPTIONS`;
            ``resume`` and ``model_path`` as for calibrate).

    Returns:
        ``{address: array (samples, *point shape)}`` in the dataset's order,
        equal to in-process `kerasurgery.gradients` over the same samples.

    Example:
        >>> from kerasurgery.engines.ray_gradients import label_column
        >>> label_column("y")
        'y'
    """
    from kerasurgery.attribution.gradients import gradient_sums

    _refuse_steps(steps)
    batch_size = check_batch_size(batch_size)
    unknown = sorted(set(options) - set(RAY_OPTIONS))
    if unknown:
        raise DataError(f"Expected options of gradients or of its Ray engine. Received: {', '.join(unknown)}.")
    _check_target(target)
    column = label_column(y)
    inputs, columns, rows = first_inputs(data, model, exclude=() if column is None else (column,))
    if column is not None and column not in rows:
        raise DataError(f"Expected a column '{column}' of labels in the Ray dataset (y='{column}'). "
                        f"Received: columns {sorted(rows)}.")
    labels = None if column is None else rows[column]
    probe, _ = gradient_sums(model, inputs, points, target=target, y=labels, loss=loss, batch_size=batch_size,
                             training=training, progress=False)  # errors before any actor starts
    options_ = {"target": target, "loss": loss, "training": bool(training), "y_column": column}
    parts, per_value = [], None
    for _key, _rows, result, _shapes, _reused in run_blocks(
            "gradients", model, data, points, columns=columns, batch_size=batch_size, options=options_,
            ray_options=options, folder=None, progress=progress):
        values, per_value = pickle.loads(result)
        parts.append(values)
    first = parts[0]
    shared: dict[int, np.ndarray] = {}  # addresses that name one tensor share one array, as in process
    out = {}
    for address in probe:
        ident = id(first[address])
        if ident not in shared:
            shared[ident] = np.concatenate([p[address] for p in parts])
        out[address] = shared[ident]
    n = len(next(iter(out.values())))
    return divide(out, float(n * per_value) if per_value else 1.0)
