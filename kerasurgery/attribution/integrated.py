"""`integrated_gradients`: Integrated Gradients attributions (Sundararajan et al. 2017).

For an input ``x``, a baseline ``x'`` and a target ``F``, the attribution of
input value ``i`` is ``(x_i - x'_i) * integral_0^1 dF(x' + a (x - x')) / dx_i da``.
The integral is the trapezoidal rule over ``steps + 1`` points ``a = k /
steps`` (error O(1/steps^2)), so the attributions of one input sum to
``F(x) - F(x')`` up to that error (*completeness*). The ``samples x (steps + 1)``
interpolated inputs go through the compiled gradient step `batch_size` rows at
a time; only one batch of them exists at once.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasurgery.attribution.plan import gradient_plan, predicted_classes, single_input
from kerasurgery.attribution.targets import score_address
from kerasurgery.checks import positive_int
from kerasurgery.errors import DataError
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.runtime.inputs import adapt, check_batch_size
from kerasurgery.runtime.loop import Progress


def _baseline(baseline: Any, x: np.ndarray, start: int) -> np.ndarray:
    """The baselines of the batch `x` (samples ``start ..``): zeros, a constant, one per sample or per input."""
    if baseline is None:
        return np.zeros_like(x)
    b = np.asarray(baseline, dtype=x.dtype)
    if b.ndim == 0 or b.shape == x.shape[1:]:
        return np.broadcast_to(b, x.shape)
    if b.ndim == x.ndim and b.shape[1:] == x.shape[1:]:
        part = b[start : start + len(x)]
        if len(part) == len(x):
            return part
        raise DataError(f"Expected one baseline per sample. Received: {len(b)} baselines for more samples.")
    raise DataError(
        f"Expected `baseline` to be None (zeros), a number, one input of shape {x.shape[1:]} or one per "
        f"sample. Received: an array of shape {b.shape}."
    )


def integrated_gradients(
    model: keras.Model,
    data: Any,
    *,
    target: Any,
    baseline: Any = None,
    steps: int = 50,
    batch_size: int = 32,
    progress: bool | None = None,
) -> np.ndarray:
    """Integrated Gradients: how much each input value contributes to the target, relative to a baseline.

    Args:
        model: a model with one input.
        data: inputs, as for `kerasurgery.collect`.
        target: as for `kerasurgery.gradients`: a class index (its score,
            before a final softmax/sigmoid), one per sample, None (each
            input's predicted class), a point's address or a function of
            the outputs.
        baseline: None (zeros), a number, one input, or one per sample.
        steps: intervals of the path from the baseline to the input
            (``steps + 1`` gradient evaluations per input).
        batch_size: interpolated inputs per compiled call.
        progress: show a progress bar; None shows it when stdout is a terminal.

    Returns:
        float32 attributions with the shape of the inputs; for each input
        they sum to ``F(input) - F(baseline)`` up to the integration error.

    Raises:
        DataError: a model with several inputs, a bad `steps` or
            `baseline`, or a bad target (see `kerasurgery.gradients`).

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, activation="softmax", name="out")(x))
        >>> data = np.array([[1.0, 2.0, 3.0]])
        >>> a = ks.integrated_gradients(model, data, target=0, steps=10)
        >>> w, b = model.get_layer("out").kernel.numpy(), model.get_layer("out").bias.numpy()
        >>> bool(np.allclose(a, data * w[:, 0]))         # a linear score: exact, x * w
        True
    """
    steps = positive_int(steps, "steps", hint=" Pass e.g. steps=50.")
    batch_size = check_batch_size(batch_size)
    point = single_input(model, "integrated gradients")
    predicted = target is None
    plan = gradient_plan(model, [point], target=0 if predicted else target)  # see saliency: classes per batch
    source = adapt(data, plan.probe, batch_size=batch_size)
    plan.target.check_samples(source.num_samples)
    address = score_address(graph_for(model))[0] if predicted else None
    alphas = np.linspace(0.0, 1.0, steps + 1)
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] = 0.5 / steps
    bar = Progress(progress, source.num_batches)
    parts, start = [], 0
    plan.step.start()
    for i, arrays in enumerate(source):
        x = arrays[0]
        rows = len(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"Expected float inputs for integrated gradients. Received: dtype {x.dtype}.")
        extra = (predicted_classes(model, arrays, address),) if predicted else plan.target.provide(start, rows)
        base = _baseline(baseline, x, start)
        total = np.zeros(x.shape, "float64")
        pairs = [(s, k) for s in range(rows) for k in range(steps + 1)]  # (sample, step)
        for lo in range(0, len(pairs), batch_size):
            chunk = np.array(pairs[lo : lo + batch_size])
            shape = (-1,) + (1,) * (x.ndim - 1)
            a = alphas[chunk[:, 1]].reshape(shape)
            path = (base[chunk[:, 0]] + a * (x[chunk[:, 0]] - base[chunk[:, 0]])).astype(x.dtype)
            grads = plan.compute([path], *(e[chunk[:, 0]] for e in extra))["gradients"][0]
            np.add.at(total, chunk[:, 0], weights[chunk[:, 1]].reshape(shape) * grads)
        parts.append(((x.astype("float64") - base) * total).astype("float32"))
        start += rows
        bar.update(i + 1)
    plan.target.check_samples(start)
    bar.finish(len(parts))
    return np.concatenate(parts)
