"""Gradient plans: a model perturbed at the points, and its compiled gradient step.

A plan resolves the points (opening layers on demand, like `kerasurgery.expose`),
builds the gradient model with `kerasurgery.passes.perturb.perturb_pass`
(every point's value ``v`` becomes ``v + delta``, ``delta`` a new input),
checks on the graph that the target depends on every point, and compiles a
`kerasurgery.runtime.autodiff.GradientStep`. The model and step are cached
per model (weakly, a few per model, as `kerasurgery.runtime.plan` does for
`collect`), so a second call with the same points and target kind does not
trace again.
"""

from __future__ import annotations

import collections
import dataclasses
import weakref
from typing import Any

import keras
import numpy as np

from kerasurgery.address.selector import Selector
from kerasurgery.attribution.targets import Target, make_target
from kerasurgery.checks import boolean
from kerasurgery.errors import TransformError
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.resolve import Resolver
from kerasurgery.ir.to_keras import to_model
from kerasurgery.passes.expose import expose_pass
from kerasurgery.passes.perturb import perturb_pass
from kerasurgery.runtime import backend
from kerasurgery.runtime.autodiff import GradientStep
from kerasurgery.runtime.inputs import pack


class Inputs:
    """The input side of a gradient model, read by `adapt` and `pack` as they read a model."""

    def __init__(self, structure: Any, name: str):
        self.input = structure
        self.name = name


@dataclasses.dataclass
class GradientPlan:
    """The gradient model of one model, points and target kind, and its step.

    Attributes:
        probe: the model's inputs (`Inputs`), for `adapt` and `pack`.
        model: the gradient model (see `perturb_pass`).
        addresses: the points, in the order asked.
        keys: ``{address: delta index}``; addresses naming one tensor share it.
        step: the compiled gradient step.
        target: the target (objective, extra per-sample arguments).
    """

    probe: Inputs
    model: keras.Model
    addresses: list[str]
    keys: dict[str, int]
    step: GradientStep
    target: Target

    def compute(self, arrays: list[np.ndarray], *extra: Any) -> dict:
        """The step's results for one batch of flat input arrays, as numpy."""
        out = self.step(pack(self.probe, arrays), *extra)
        return keras.tree.map_structure(backend.as_numpy, out)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PER_MODEL = 8


def clear_cache() -> None:
    """Forget every cached gradient model and compiled step."""
    _CACHE.clear()


def _check_reach(graph: Any, target: Target) -> None:
    """Refuse points the target does not depend on (their gradient is undefined, not zero)."""
    used = target.used
    far = [a for a, hit in graph.graph["reach"].items() if not (set(hit) & set(used) if used is not None else hit)]
    if far:
        raise TransformError(
            f"Expected a target that depends on every point. Received: {far}, on which {target.what} does "
            "not depend (it is upstream of them, on another branch, or an output the target does not read, "
            "or attention scores, which feed nothing): their gradient is undefined, not zero. Choose points "
            "that lie upstream of the target, or a target downstream of the points."
        )


def _shapes(graph: Any, model: keras.Model, addresses: list[str], keys: dict[str, int]) -> Any:
    """Per-sample shape of each delta: static, or a function of the input shapes."""
    static = [tuple(t.shape[1:]) for t in model.input[1]] if keys else []
    if all(d is not None for s in static for d in s):
        return static
    first = {}
    for address, index in keys.items():
        first.setdefault(index, address)
    unique = [first[i] for i in range(len(static))]
    probe = to_model(expose_pass(graph, unique))
    cache: dict = {}

    def shapes(dims: tuple) -> list:
        if dims not in cache:
            inputs = [keras.KerasTensor((1, *d), dtype=t.dtype) for d, t in zip(dims, keras.tree.flatten(probe.input))]
            spec = probe.compute_output_spec(keras.tree.pack_sequence_as(probe.input, inputs))
            cache[dims] = [tuple(spec[a].shape[1:]) for a in unique]
        return cache[dims]

    return shapes


def gradient_plan(
    model: keras.Model,
    points: Selector | None,
    *,
    target: Any = None,
    y: Any = None,
    loss: Any = None,
    training: bool = False,
    weights: bool = False,
    values: bool = False,
    what: str = "target",
) -> GradientPlan:
    """The (cached) plan for gradients of `target` with respect to `points`.

    Args:
        model: a Functional, Sequential or subclassed (traceable) model.
        points: the points (a selector as for `expose`), or None for none
            (weight gradients only).
        target, y, loss: the target (see `kerasurgery.attribution.targets`).
        training: run layers in training mode.
        weights: also differentiate with respect to the trainable variables.
        values: also return the points' values.
        what: the argument's name in errors about a class index
            (``"class_index"`` for `grad_cam`).
    """
    training = boolean(training, "training")
    graph = graph_for(model, points, [target] if isinstance(target, str) else None)
    tgt = make_target(model, graph, target, y, loss, what=what)
    addresses = list(Resolver(graph).select(points, what="points")) if points is not None else []
    key = (tuple(addresses), tgt.key, training, weights, values)
    cache = _CACHE.setdefault(model, collections.OrderedDict())
    if key in cache:
        cache.move_to_end(key)
        probe, gm, keys, step = cache[key]
        return GradientPlan(probe, gm, addresses, keys, step, tgt)
    g = perturb_pass(graph, addresses, targets=tgt.addresses)
    _check_reach(g, tgt)
    gm = to_model(g, name=f"{model.name}_gradients")
    keys = dict(g.graph["gradient_points"])
    names = [next(a for a, i in keys.items() if i == j) for j in range(len(set(keys.values())))]
    step = GradientStep(gm, training, tgt.objective, tgt.extra, shapes=_shapes(graph, gm, addresses, keys),
                        deltas=len(names),
                        weights=weights, values=values, names=names)
    probe = Inputs(gm.input[0] if keys else gm.input, model.name)
    cache[key] = (probe, gm, keys, step)
    while len(cache) > _PER_MODEL:
        cache.popitem(last=False)
    return GradientPlan(probe, gm, addresses, keys, step, tgt)


# ---------------------------------------------------------------------------
# running a plan


class MapSink:
    """Per-batch maps computed on the host from the step's results (Grad-CAM, saliency), in order.

    Args:
        make: ``make(outputs) -> array (rows, ...)`` from one batch's step results.
        provide: the target's per-sample arguments (``Target.provide``).
    """

    def __init__(self, make: Any, provide: Any):
        self.make = make
        self.provide = provide
        self.parts: list[np.ndarray] = []

    def extra(self, start: int, rows: int) -> tuple:
        return self.provide(start, rows)

    def prepare(self, outputs: dict, rows: int) -> None:
        pass

    def check(self, outputs: dict, rows: int, where: str) -> None:
        pass

    def write(self, start: int, rows: int, outputs: dict) -> None:
        numpy = keras.tree.map_structure(backend.as_numpy, outputs)
        self.parts.append(self.make(numpy))

    def finish(self, n: int) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros((0,))


def predicted_classes(model: keras.Model, arrays: list[np.ndarray], address: str) -> np.ndarray:
    """The class with the largest score at `address` for one batch (a forward pass, as `collect`)."""
    from kerasurgery.runtime.plan import plan_for

    plan = plan_for(model, [address])
    out = plan.step(pack(plan.probe, arrays))
    return np.argmax(backend.as_numpy(out[plan.keys[address]]), axis=-1).astype("int32")


def single_input(model: keras.Model, what: str) -> str:
    """The address of `model`'s only input (the point saliency maps and attributions are of)."""
    from kerasurgery.errors import DataError
    from kerasurgery.ir.schema import input_keys

    keys = input_keys(graph_for(model))
    if len(keys) != 1:
        raise DataError(
            f"Expected a model with one input for {what}. Received: model '{model.name}' with inputs "
            f"{keys}. Use `kerasurgery.gradients(model, data, [{keys[0]!r}, ...])` for gradients at several "
            "inputs."
        )
    return keys[0]
