"""`compare`: the equivalence check to run after any rewrite."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasurgery.errors import DataError


def _named_outputs(model: keras.Model, value: Any) -> dict[str, np.ndarray]:
    """Flatten a prediction into {output name: array}, matching by structure."""
    if isinstance(value, dict):
        return {str(k): np.asarray(v) for k, v in value.items()}
    flat = keras.tree.flatten(value)
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(flat) or len(set(names)) != len(names):
        names = [f"output_{i}" for i in range(len(flat))]
    return {n: np.asarray(v) for n, v in zip(names, flat)}


def compare(model_a: keras.Model, model_b: keras.Model, data: Any, *, batch_size: int = 32) -> dict:
    """Largest absolute and relative difference between two models' outputs.

    Both models are run (inference mode) on `data`; outputs are matched by
    structure: by key for dict outputs, by position otherwise (named after
    `model_a`'s output names).

    Args:
        model_a: the reference model.
        model_b: the rewritten model.
        data: anything `model.predict` accepts (array, list/dict of arrays,
            tf.data.Dataset, ...).
        batch_size: batch size for arrays.

    Returns:
        ``{output name: {"max_abs": float, "max_rel": float, "shape": tuple}}``
        where ``max_rel = max|a - b| / max|a|`` (0 when both are all zeros).

    Raises:
        DataError: the outputs differ in structure or shape.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> report = ks.compare(model, ks.split_activations(model), np.ones((8, 4)))
        >>> report["d"]["max_abs"] < 1e-6
        True
    """
    out_a = _named_outputs(model_a, model_a.predict(data, batch_size=batch_size, verbose=0))
    out_b = _named_outputs(model_b, model_b.predict(data, batch_size=batch_size, verbose=0))
    if set(out_a) != set(out_b):
        if len(out_a) == len(out_b):
            out_b = dict(zip(out_a, out_b.values()))
        else:
            raise DataError(
                f"Expected both models to have the same outputs. Received: {sorted(out_a)} "
                f"and {sorted(out_b)}."
            )
    report = {}
    for name, a in out_a.items():
        b = out_b[name]
        if a.shape != b.shape:
            raise DataError(
                f"Expected output {name!r} to have the same shape in both models. "
                f"Received: {a.shape} and {b.shape}."
            )
        diff = np.abs(a.astype("float64") - b.astype("float64"))
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(a).max()) if a.size else 0.0
        report[name] = {
            "max_abs": max_abs,
            "max_rel": max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")),
            "shape": tuple(a.shape),
        }
    return report
