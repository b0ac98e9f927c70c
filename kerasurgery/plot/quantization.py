"""`sqnr`: the signal-to-quantization-noise ratio of every point, in depth order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.plot._figure import pyplot

_LABELS = 60  # at most this many point names on the axis (every k-th one beyond)


def sqnr(errors: Any, *, title: str | None = None, threshold: float | None = None, width: float | None = None,
         height: float = 4.0) -> Any:
    """SQNR (dB) of every point of a `kerasurgery.quantization_error` result, in depth order.

    The quantized points are a line from the input side to the output side
    (each point's value after every quantizer up to it); the model's outputs
    are drawn as separate markers at the right. A point where the two
    models agree exactly (infinite SQNR) is drawn at the top edge.

    Args:
        errors: `kerasurgery.QuantizationErrors` (or ``{address: PointError}``).
        title: the figure's title (default: the model and sample count).
        threshold: draw a horizontal line at this SQNR (dB), e.g. 25.
        width: inches (default: grows with the number of points).
        height: inches.

    Returns:
        A matplotlib Figure with one axis.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((8,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(4, activation="relu", name="d")(x))
        >>> data = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
        >>> quantized = ks.fake_quantize(model, ks.calibrate(model, data, ["x", "d:pre"]).ranges())
        >>> fig = ks.plot.sqnr(ks.quantization_error(model, quantized, data), threshold=25)
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['x', 'd:pre', 'd (output)']
    """
    if not hasattr(errors, "items") or not all(hasattr(e, "sqnr_db") for e in errors.values()) or not len(errors):
        raise DataError(f"Expected the result of `kerasurgery.quantization_error` (at least one point). "
                        f"Received: {type(errors).__name__} {str(errors)[:80]}.")
    plt = pyplot()
    names = list(errors)
    values = np.array([errors[a].sqnr_db for a in names], np.float64)
    outputs = np.array([bool(getattr(errors[a], "output", False)) for a in names])
    finite = values[np.isfinite(values)]
    top = (finite.max() if finite.size else 0.0) + 5.0
    bottom = min(finite.min() if finite.size else 0.0, threshold if threshold is not None else math.inf) - 5.0
    shown = np.clip(np.where(np.isfinite(values), values, np.where(values > 0, top, bottom)), bottom, top)
    fig = plt.figure(figsize=(width or min(max(6.0, 0.18 * len(names) + 2.0), 24.0), height), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    where = np.arange(len(names))
    inner = np.flatnonzero(~outputs)
    if inner.size:
        ax.plot(where[inner], shown[inner], marker="o", markersize=3, linewidth=1, label="quantized points")
    if outputs.any():
        ax.plot(where[outputs], shown[outputs], linestyle="none", marker="D", color="tab:red", label="outputs")
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"{threshold:g} dB")
    labels = [f"{a} (output)" if o else a for a, o in zip(names, outputs)]
    every = max(1, -(-len(names) // _LABELS))
    ax.set_xticks(where[::every], labels[::every], rotation=90, fontsize=7 if len(names) > 20 else 9)
    ax.set_ylabel("SQNR (dB)")
    ax.set_xlabel("point (depth order)")
    ax.set_ylim(bottom, top + 2.0)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    model, samples = getattr(errors, "model", None), getattr(errors, "samples", 0)
    ax.set_title(title if title is not None else
                 "quantization error per point" + (f" of {model}" if model else "")
                 + (f" ({samples} samples)" if samples else ""))
    return fig
