"""`saliency`: vanilla gradient and SmoothGrad saliency maps of a model's input.

Vanilla (Simonyan et al. 2013): the gradient of the target with respect to
the input, its absolute value, and for images the maximum over the colour
channels. SmoothGrad (Smilkov et al. 2017): the same gradient averaged over
`samples` noisy copies of each input, ``x + N(0, sigma^2)`` with ``sigma =
noise * (max(x) - min(x))`` per input, then the absolute value and the
maximum over channels (as tf-keras-vis does). The target of a noisy copy is
the class of the clean input: with ``target=None``, each input's predicted
class, found once on the clean input.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasurgery.attribution.plan import MapSink, gradient_plan, predicted_classes, single_input
from kerasurgery.attribution.targets import score_address
from kerasurgery.checks import positive_int
from kerasurgery.errors import DataError
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.runtime.inputs import adapt, check_batch_size
from kerasurgery.runtime.loop import Progress, run

METHODS = ("vanilla", "smoothgrad")


def reduce_channels(grads: np.ndarray) -> np.ndarray:
    """``|grads|``, and its maximum over the channel axis for inputs with one (rank >= 3 with the batch)."""
    magnitude = np.abs(grads)
    if magnitude.ndim < 3:
        return magnitude
    axis = 1 if keras.config.image_data_format() == "channels_first" and magnitude.ndim == 4 else -1
    return magnitude.max(axis=axis)


def saliency(
    model: keras.Model,
    data: Any,
    *,
    target: Any = None,
    method: str = "vanilla",
    samples: int = 25,
    noise: float = 0.15,
    seed: int | None = 0,
    batch_size: int = 32,
    progress: bool | None = None,
) -> np.ndarray:
    """Saliency maps: how much each input value moves the target (vanilla or SmoothGrad).

    Args:
        model: a model with one input.
        data: inputs, as for `kerasurgery.collect`.
        target: as for `kerasurgery.gradients`: None (each input's
            predicted class), a class index, one per sample, a point's
            address or a function of the outputs.
        method: ``"vanilla"`` or ``"smoothgrad"``.
        samples: noisy copies per input (SmoothGrad).
        noise: the noise's standard deviation as a fraction of each input's
            value range (SmoothGrad; the paper suggests 0.1 to 0.2).
        seed: seed of the noise (SmoothGrad); None draws a fresh one.
        batch_size: rows per batch for data held in memory.
        progress: show a progress bar; None shows it when stdout is a terminal.

    Returns:
        float32 maps: (samples, height, width) for images (the maximum of
        ``|gradient|`` over the channels, channels last or first as Keras is
        configured); for inputs of rank 2 (samples, features) and
        sequences (samples, steps, features) the same rule: ``|gradient|``,
        and its maximum over the last axis when there is one besides the
        features. Not normalized: `kerasurgery.plot.heatmaps` scales them.

    Raises:
        DataError: a model with several inputs, an unknown `method`, a bad
            `samples` or `noise`, or a bad target (see `kerasurgery.gradients`).

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((4, 4, 3), name="image")
        >>> h = keras.layers.Flatten(name="flat")(x)
        >>> model = keras.Model(x, keras.layers.Dense(2, name="out")(h))
        >>> maps = ks.saliency(model, np.random.rand(3, 4, 4, 3), target=1)
        >>> w = model.get_layer("out").kernel.numpy()[:, 1].reshape(4, 4, 3)
        >>> maps.shape, bool(np.allclose(maps[0], np.abs(w).max(-1)))
        ((3, 4, 4), True)
        >>> ks.saliency(model, np.random.rand(3, 4, 4, 3), target=1, method="smoothgrad", samples=4).shape
        (3, 4, 4)
    """
    if method not in METHODS:
        raise DataError(f"Expected `method` to be one of {METHODS}. Received: method={method!r}.")
    batch_size = check_batch_size(batch_size)
    point = single_input(model, "saliency maps")
    if method == "vanilla":
        plan = gradient_plan(model, [point], target=target)
        source = adapt(data, plan.probe, batch_size=batch_size)
        plan.target.check_samples(source.num_samples)
        sink = MapSink(lambda out: reduce_channels(out["gradients"][0]), plan.target.provide)
        n = run(plan, source, sink, progress=progress)  # type: ignore[arg-type]
        plan.target.check_samples(n)
        return sink.finish(n).astype("float32")
    samples = positive_int(samples, "samples")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.number)) or not noise >= 0:
        raise DataError(f"Expected `noise` to be a number >= 0 (a fraction of each input's range). Received: "
                        f"noise={noise!r}.")
    return _smoothgrad(model, data, point, target, samples, float(noise), seed, batch_size, progress)


def _smoothgrad(model: keras.Model, data: Any, point: str, target: Any, samples: int, noise: float,
                seed: int | None, batch_size: int, progress: bool | None) -> np.ndarray:
    predicted = target is None
    # with target=None each batch gets its clean inputs' classes, passed like given class indices
    plan = gradient_plan(model, [point], target=0 if predicted else target)
    source = adapt(data, plan.probe, batch_size=batch_size)
    plan.target.check_samples(source.num_samples)
    address = score_address(graph_for(model))[0] if predicted else None
    rng = np.random.default_rng(seed)
    bar = Progress(progress, source.num_batches)
    parts, start = [], 0
    plan.step.start()
    for i, arrays in enumerate(source):
        x = arrays[0]
        rows = len(x)
        extra = (predicted_classes(model, arrays, address),) if predicted else plan.target.provide(start, rows)
        axes = tuple(range(1, x.ndim))
        sigma = noise * (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True))
        total = np.zeros(x.shape, "float64")
        for _ in range(samples):
            noisy = (x + sigma * rng.standard_normal(x.shape)).astype(x.dtype)
            total += plan.compute([noisy], *extra)["gradients"][0]
        parts.append(reduce_channels(total / samples).astype("float32"))
        start += rows
        bar.update(i + 1)
    plan.target.check_samples(start)
    bar.finish(len(parts))
    return np.concatenate(parts)
