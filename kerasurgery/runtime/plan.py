"""Plans: what `collect`, `calibrate` and `ActivationRecorder` compute per batch.

A *plan* is the points resolved to addresses, a probe model built once with
`kerasurgery.expose` (sharing every variable with the model), and a step
compiled once (`kerasurgery.runtime.backend.Step`) that computes every point
in a single stateless forward pass. Plans are cached per model (weakly, a
few per model), so a second call with the same points does not trace again.
The loop that pushes batches through a plan is `kerasurgery.runtime.loop`.
"""

from __future__ import annotations

import collections
import dataclasses
import weakref
from collections.abc import Callable
from typing import Any

import keras

from kerasurgery.address.selector import Selector
from kerasurgery.errors import DataError
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.resolve import Resolver
from kerasurgery.passes.expose import expose
from kerasurgery.runtime import backend

# ---------------------------------------------------------------------------
# plans


@dataclasses.dataclass
class Plan:
    """A probe and its compiled step, for one model, points and mode.

    Attributes:
        probe: the model returned by `expose` for `addresses`.
        addresses: the resolved addresses, in the order asked.
        keys: ``{address: key}``; addresses naming the same tensor share a key
            (the first such address), which is what the step returns.
        step: the compiled stateless forward pass.
        variants: other steps over the same probe, built on demand by their
            user and cached with the plan (such as `calibrate`'s reductions
            that leave NaN and infinities out), by name.
    """

    probe: keras.Model
    addresses: list[str]
    keys: dict[str, str]
    step: backend.Step
    variants: dict[str, backend.Step] = dataclasses.field(default_factory=dict)

    @property
    def unique(self) -> list[str]:
        return list(dict.fromkeys(self.keys.values()))


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PLANS_PER_MODEL = 8  # probes (and traced steps) kept per model, least recently used dropped


def clear_cache() -> None:
    """Forget every cached probe and compiled step."""
    _PLANS.clear()


def resolve(model: keras.Model, points: Selector | None) -> list[str]:
    """Addresses selected by `points`.

    None means every layer output: the plain output of every non-input node
    (no inputs, no ``:pre`` or ``:scores`` ports), in topological order. It
    means the same in `collect`, `calibrate` and `ActivationRecorder`, which
    all resolve points here.
    """
    graph = graph_for(model, points)
    resolver = Resolver(graph)
    if points is not None:
        return list(resolver.select(points, what="points"))
    chosen = resolver.select(resolver.points(), what="points")
    return [
        a for a, p in chosen.items() if p.port is None and graph.nodes[p.node].get("kind") != "input"
    ]


def plan_for(
    model: keras.Model,
    points: Selector | None,
    *,
    training: bool = False,
    tag: Any = "collect",
    make_post: Callable[[keras.Model, list[str]], tuple[Callable, tuple]] | None = None,
) -> Plan:
    """The (cached) plan computing `points` of `model`.

    Args:
        model: a Functional or Sequential model.
        points: selector as in `kerasurgery.expose`, or None: every layer
            output (see `resolve`).
        training: run layers in training mode.
        tag: hashable description of `make_post` (part of the cache key).
        make_post: given the probe and its distinct output keys, returns
            ``(post, extra)``: the function applied in-graph to the probe's
            outputs (and extra arguments), and the ``(shape, dtype)`` of each
            extra argument (see `kerasurgery.backend.Step`); default: keep
            those outputs.
    """
    if not isinstance(training, bool):
        raise DataError(f"Expected `training` to be True or False. Received: training={training!r}.")
    addresses = resolve(model, points)
    key = (tuple(addresses), training, tag)
    cache = _PLANS.setdefault(model, collections.OrderedDict())
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    probe = expose(model, addresses)
    first: dict[int, str] = {}
    keys = {a: first.setdefault(id(probe.output[a]), a) for a in addresses}
    unique = list(dict.fromkeys(keys.values()))
    if make_post is not None:
        post, extra = make_post(probe, unique)
    else:
        post, extra = (lambda outputs: {k: outputs[k] for k in unique}), ()
    plan = Plan(probe, addresses, keys, backend.Step(probe, training, post, extra))
    cache[key] = plan
    while len(cache) > _PLANS_PER_MODEL:
        cache.popitem(last=False)
    return plan
