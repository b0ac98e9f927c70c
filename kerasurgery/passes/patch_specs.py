"""What `kerasurgery.patch` accepts at a point, read and checked against the point's shape.

=====================================  =======================================
``array`` (or ``("set", array)``)      that value for every sample: the
                                       point's per-sample shape, or with a
                                       leading batch axis of 1
``"zero"``                             zeros
``"mean"``                             the mean over the batch, at run time
``("mean", calibration)``              the mean from `kerasurgery.calibrate`
                                       (per tensor or per channel), a
                                       constant
``("add", vector)``                    the value plus `vector` (steering);
                                       any shape that broadcasts to the
                                       per-sample shape
``("ablate", mask)``                   the units where `mask` is True set to
                                       zero; a boolean mask that broadcasts
                                       to the per-sample shape (``(heads, 1,
                                       1)`` for heads of ``:scores``)
``"input"``                            a new model input named after the
                                       point (``dense_1:pre`` ->
                                       ``dense_1_pre_input``; activation
                                       patching)
=====================================  =======================================
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import keras
import numpy as np

from kerasurgery.address.grammar import parse
from kerasurgery.errors import TransformError

KINDS = ("set", "zero", "mean", "add", "ablate", "input")

USAGE = ("an array, 'zero', 'mean', ('mean', calibration), ('add', vector), ('ablate', mask) or 'input'")


@dataclasses.dataclass
class Patch:
    """One patch, read: `kind` (one of `KINDS`) and the array it stores, if any."""

    kind: str
    value: np.ndarray | None = None


def _array(value: Any, address: str, what: str) -> np.ndarray:
    try:
        array = np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # noqa: BLE001 - anything that is not array-like
        array = None
    if array is None or array.dtype == object or not (array.dtype == bool or np.issubdtype(array.dtype, np.number)):
        raise TransformError(
            f"Expected {what} for the patch at {address!r}: numbers. Received: {type(value).__name__} {value!r:.80}."
        )
    return array


def _shape_text(per_sample: tuple) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in per_sample) + ("," if len(per_sample) == 1 else "") + ")"


def _broadcasts(shape: tuple, per_sample: tuple) -> bool:
    if len(shape) > len(per_sample):
        return False
    return all(a == 1 or b is None or a == b for a, b in zip(reversed(shape), reversed(per_sample)))


def _set_value(array: np.ndarray, address: str, per_sample: tuple) -> np.ndarray:
    shape = array.shape[1:] if array.ndim == len(per_sample) + 1 and array.shape[:1] == (1,) else array.shape
    if len(shape) == len(per_sample) and all(b is None or a == b for a, b in zip(shape, per_sample)):
        return array.reshape(shape)
    raise TransformError(
        f"Expected an array of the per-sample shape of {address!r}, {_shape_text(per_sample)} (the same value for "
        f"every sample; a leading batch axis of 1 is accepted). Received: an array of shape {array.shape}. "
        "To give each sample its own value, patch the point with 'input' and feed the array as that input."
    )


def _broadcast_value(array: np.ndarray, address: str, per_sample: tuple, what: str) -> np.ndarray:
    if _broadcasts(array.shape, per_sample):
        return array
    raise TransformError(
        f"Expected {what} for {address!r} whose shape broadcasts to its per-sample shape {_shape_text(per_sample)} "
        f"(e.g. one value per channel, shape ({per_sample[-1] if per_sample else 1},)). Received: shape {array.shape}."
    )


def _calibrated_mean(calibration: Any, address: str, per_sample: tuple) -> np.ndarray:
    """The mean of `address` from a `Calibration` (or one `PointStats`), shaped to broadcast."""
    stats = calibration
    if not hasattr(stats, "mean") or isinstance(stats, (dict, list)):
        try:
            stats = calibration[address]
        except (KeyError, TypeError, IndexError):
            listed = sorted(calibration)[:8] if isinstance(calibration, dict) else type(calibration).__name__
            raise TransformError(
                f"Expected ('mean', calibration) with statistics of {address!r} (from `kerasurgery.calibrate(model, "
                f"data, [{address!r}])`). Received: a calibration of {listed}."
            ) from None
    mean = np.asarray(stats.mean, dtype="float64")
    axis = getattr(stats, "channel_axis", None)
    if mean.ndim == 0 or axis is None:
        return mean.astype("float32")
    shape = [1] * len(per_sample)
    position = axis - 1 if axis > 0 else len(per_sample) + axis
    if not 0 <= position < len(per_sample) or per_sample[position] not in (None, mean.size):
        raise TransformError(
            f"Expected per-channel statistics of {address!r} along an axis of its per-sample shape "
            f"{_shape_text(per_sample)}. Received: {mean.size} channel(s) along axis {axis} (counted with the batch)."
        )
    shape[position] = mean.size
    return mean.reshape(shape).astype("float32")


def read_patch(spec: Any, address: str, shape: tuple | None) -> Patch:
    """Read the patch `spec` for the point `address` of recorded `shape` (batch first).

    Raises:
        TransformError: `spec` is not a patch, or its array does not fit the point.
    """
    per_sample = tuple(shape[1:]) if shape else ()
    if isinstance(spec, str):
        if spec in ("zero", "mean", "input"):
            return Patch(spec)
        raise TransformError(f"Expected a patch at {address!r}: {USAGE}. Received: {spec!r}.")
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
        kind, argument = spec
        if kind == "mean":
            return Patch("set", _calibrated_mean(argument, address, per_sample))
        if kind == "set":
            return Patch("set", _set_value(_array(argument, address, "an array"), address, per_sample))
        if kind == "add":
            vector = _array(argument, address, "a vector")
            return Patch("add", _broadcast_value(vector, address, per_sample, "a vector to add"))
        if kind == "ablate":
            mask = _array(argument, address, "a mask")
            if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
                raise TransformError(
                    f"Expected a mask of units to ablate at {address!r}: booleans (True: set to zero). Received: "
                    f"values {np.unique(mask)[:5]}."
                )
            return Patch("ablate", _broadcast_value(mask.astype(bool), address, per_sample, "a mask"))
        raise TransformError(f"Expected a patch at {address!r}: {USAGE}. Received: a tuple starting with {kind!r}.")
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        raise TransformError(f"Expected a patch at {address!r}: {USAGE}. Received: {spec!r:.80}.")
    return Patch("set", _set_value(_array(spec, address, f"a patch ({USAGE})"), address, per_sample))


def patch_name(address: str, kind: str) -> str:
    """The name of the patch of `kind` at `address`: a valid Keras layer and input name.

    ``"input"`` at ``encoder/dense@1:pre`` is the input ``encoder_dense_1_pre_input``; ``"zero"`` there is
    the layer ``encoder_dense_1_pre_zero`` (made unique by the pass where a name is taken).

    Example:
        >>> patch_name("transformer_layer_0/self_attention_layer:scores", "input")
        'transformer_layer_0_self_attention_layer_scores_input'
    """
    a = parse(address)
    parts = [*a.path, a.name] + [str(v) for v in (a.call, a.index, a.port) if v is not None] + [kind]
    name = re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))
    return name if name[:1].isalpha() else f"p_{name}"
