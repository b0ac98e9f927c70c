"""`gradients` and `weight_gradients`: gradients at any point, batched over a dataset.

Both run a gradient plan (`kerasurgery.attribution.plan`) through the loop
that `collect` uses (`kerasurgery.runtime.loop`): one compiled, stateless
forward and backward pass per batch, results copied into arrays allocated
once while the next batch runs.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasurgery.address.selector import Selector
from kerasurgery.attribution.plan import GradientPlan, gradient_plan
from kerasurgery.runtime import backend
from kerasurgery.runtime.inputs import adapt, check_batch_size
from kerasurgery.runtime.loop import run
from kerasurgery.runtime.sinks import MemorySink


class _PointSink(MemorySink):
    """`MemorySink` of the step's per-point gradients; gives the target's per-sample arguments."""

    def __init__(self, plan: GradientPlan, samples: int | None, batches: int | None):
        super().__init__({a: str(i) for a, i in plan.keys.items()}, samples, batches)
        self.provide = plan.target.provide

    def extra(self, start: int, rows: int) -> tuple:
        return self.provide(start, rows)

    @staticmethod
    def _flat(outputs: dict) -> dict:
        return {str(i): g for i, g in enumerate(outputs["gradients"])}

    def prepare(self, outputs: dict, rows: int) -> None:
        super().prepare(self._flat(outputs), rows)

    def check(self, outputs: dict, rows: int, where: str) -> None:
        super().check(self._flat(outputs), rows, where)

    def write(self, start: int, rows: int, outputs: dict) -> None:
        super().write(start, rows, self._flat(outputs))


class _WeightSink:
    """Sums the step's weight gradients over batches (in float64)."""

    def __init__(self, plan: GradientPlan):
        self.provide = plan.target.provide
        self.sums: list[np.ndarray] | None = None

    def extra(self, start: int, rows: int) -> tuple:
        return self.provide(start, rows)

    def prepare(self, outputs: dict, rows: int) -> None:
        self.sums = [np.zeros(tuple(g.shape), "float64") for g in outputs["weights"]]

    def check(self, outputs: dict, rows: int, where: str) -> None:
        pass

    def write(self, start: int, rows: int, outputs: dict) -> None:
        for total, g in zip(self.sums, outputs["weights"]):
            total += backend.as_numpy(g)


def _scale(plan: GradientPlan, n: int) -> float:
    """The divisor of a loss reduced by its mean: every loss value of the whole dataset."""
    return float(n * plan.target.per_sample) if plan.target.mean else 1.0


def gradients(
    model: keras.Model,
    data: Any,
    points: Selector,
    *,
    target: Any = None,
    y: Any = None,
    loss: Any = None,
    batch_size: int = 32,
    training: bool = False,
    progress: bool | None = None,
    steps: int | None = None,
) -> dict[str, np.ndarray]:
    """Gradients of a per-sample target with respect to the values at `points`, over `data`.

    Any point works: model inputs, layer outputs, ``:pre``, points inside
    nested models and opened layers (opened on demand, as for
    `kerasurgery.expose`). Each point's value ``v`` becomes ``v + delta`` in a
    copy of the graph (sharing every weight; see
    `kerasurgery.passes.perturb`), and the gradient is taken with respect to
    ``delta`` at zero: exactly ``tf.GradientTape.gradient(target, v)``, the
    derivative through every path leaving ``v`` (through later points too).
    Row ``i`` is the gradient of the sum over the batch of the targets; in
    inference mode a sample's target depends on that sample only, so row
    ``i`` is the gradient of sample ``i``'s own target. With
    ``training=True`` BatchNormalization mixes the samples of a batch and
    row ``i`` also holds the other samples' dependence on sample ``i``.
    The model is never changed (no BatchNormalization statistic moves).

    Args:
        model: a Functional, Sequential or subclassed (traceable) model.
        data: as for `kerasurgery.collect` (arrays, datasets, iterables of
            batches; ``y`` in ``(x, y)`` is ignored: pass labels as `y=`).
        points: addresses, globs, a list of them or a predicate (see
            `kerasurgery.points`).
        target: what is differentiated, one scalar per sample: None (the
            predicted class's score), a class index, one class index per
            sample, a point's address (its sum per sample) or a function
            of the model's outputs written with `keras.ops` returning shape
            ``(batch,)``. A class score is taken before a final
            softmax/sigmoid (``<output>:pre``) where the model has one.
        y: labels (one row per sample, in data order) for `loss`.
        loss: a Keras loss (a name such as ``"mse"``, a `keras.losses.Loss`
            or a function ``loss(y_true, y_pred)``); None with `y` uses the
            compiled model's loss. The gradient is that of the loss as
            Keras reduces it *over the whole dataset as one batch*: for
            ``"sum_over_batch_size"`` (the default reduction) and
            ``"mean"``, the sum of every loss value over every sample
            divided by their number (``samples x values per sample``), so
            results do not depend on `batch_size`; for ``"sum"`` and
            ``None``, the sum. Sample weights, masks and regularization
            losses are not included.
        batch_size: rows per batch for data held in memory.
        training: run Dropout, BatchNormalization, ... in training mode.
        progress: show a progress bar; None shows it when stdout is a terminal.
        steps: read at most this many batches.

    Returns:
        ``{address: array (samples, *point shape)}`` in the order of
        `points`; addresses naming the same tensor share one array.

    Raises:
        AddressError: a point or a target address is not an address of `model`.
        DataError: the target is malformed (a class index out of range, a
            function not returning one value per sample, labels the loss
            refuses, a count of labels or indices other than the samples'),
            or the data does not fit the model.
        TransformError: a point the target does not depend on (its
            gradient is undefined, not zero), or a point of integer values.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> h = keras.layers.Dense(4, activation="relu", name="hidden")(x)
        >>> model = keras.Model(x, keras.layers.Dense(2, activation="softmax", name="out")(h))
        >>> grads = ks.gradients(model, np.ones((5, 3)), ["x", "hidden:pre"], target=1)
        >>> {a: g.shape for a, g in grads.items()}
        {'x': (5, 3), 'hidden:pre': (5, 4)}
        >>> w = model.get_layer("out").kernel.numpy()   # d out:pre[1] / d hidden = column 1 of W
        >>> g = ks.gradients(model, np.ones((5, 3)), "hidden", target=1)["hidden"]
        >>> bool(np.allclose(g, w[:, 1]))
        True
    """
    batch_size = check_batch_size(batch_size)
    plan = gradient_plan(model, points, target=target, y=y, loss=loss, training=training)
    source = adapt(data, plan.probe, batch_size=batch_size, steps=steps)
    plan.target.check_samples(source.num_samples)
    sink = _PointSink(plan, source.num_samples, source.num_batches)
    try:
        n = run(plan, source, sink, progress=progress)  # type: ignore[arg-type]
    except BaseException:
        sink.abort()
        raise
    plan.target.check_samples(n)
    result = sink.finish(n)
    divisor = _scale(plan, n)
    if divisor != 1.0:
        for array in {id(a): a for a in result.values()}.values():
            array /= np.asarray(divisor, array.dtype)
    return result


def weight_gradients(
    model: keras.Model,
    data: Any,
    *,
    target: Any = None,
    y: Any = None,
    loss: Any = None,
    batch_size: int = 32,
    training: bool = False,
    progress: bool | None = None,
    steps: int | None = None,
) -> dict[str, np.ndarray]:
    """The gradient of a target summed over `data` with respect to every trainable weight.

    For each batch, the gradient of the sum of the batch's per-sample
    targets with respect to every trainable variable; the result is the sum
    over batches (accumulated in float64, returned in each variable's
    dtype): the gradient of the sum of the targets over the whole dataset.
    With `y` and `loss`, the gradient of the loss as Keras reduces it over
    the whole dataset taken as one batch (see `gradients`): what one
    training step on all the samples at once would apply, in inference mode
    unless ``training=True`` (``model.fit`` runs layers in training mode),
    without regularization losses. The model is never changed.

    Args:
        model: a Functional, Sequential or subclassed (traceable) model.
        data: as for `kerasurgery.collect`.
        target, y, loss: what is differentiated, as for `gradients`.
        batch_size: rows per batch for data held in memory; it does not
            change the result (except through BatchNormalization with
            ``training=True``).
        training: run Dropout, BatchNormalization, ... in training mode.
        progress: show a progress bar; None shows it when stdout is a terminal.
        steps: read at most this many batches.

    Returns:
        ``{variable.path: gradient}`` for every trainable variable of
        `model`, in ``model.trainable_variables`` order; a variable the
        target does not read (a layer of another output) gets zeros.

    Raises:
        DataError: as for `gradients`.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(1, name="out")(x))
        >>> g = ks.weight_gradients(model, np.ones((4, 3)), y=np.zeros((4, 1)), loss="mse")
        >>> sorted(g)
        ['out/bias', 'out/kernel']
        >>> pred = model.predict(np.ones((4, 3)), verbose=0)        # d mean((p - 0)^2) / d b = mean(2 p)
        >>> bool(np.allclose(g["out/bias"], 2 * pred.mean(), atol=1e-6))
        True
    """
    batch_size = check_batch_size(batch_size)
    plan = gradient_plan(model, None, target=target, y=y, loss=loss, training=training, weights=True)
    source = adapt(data, plan.probe, batch_size=batch_size, steps=steps)
    plan.target.check_samples(source.num_samples)
    sink = _WeightSink(plan)
    n = run(plan, source, sink, progress=progress)  # type: ignore[arg-type]
    plan.target.check_samples(n)
    divisor = _scale(plan, n)
    sums = {id(v): s / divisor for v, s in zip(plan.model.trainable_variables, sink.sums or [])}
    result = {}
    for v in model.trainable_variables:
        dtype = keras.backend.standardize_dtype(v.dtype)
        result[v.path] = sums[id(v)].astype(dtype) if id(v) in sums else np.zeros(tuple(v.shape), dtype)
    return result
