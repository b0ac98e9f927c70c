"""The runner shared by `collect`, `calibrate` and `ActivationRecorder`.

1. A *plan*: the points resolved to addresses, a probe model built once with
   `kerasurgery.expose` (sharing every variable with the model), and a step
   compiled once (`kerasurgery._backend.Step`) that computes every point in a
   single stateless forward pass. Plans are cached per model (weakly, a few
   per model), so a second call with the same points does not trace again.
2. A *source* of checked input batches (`kerasurgery.data.adapt`).
3. A *sink* that receives each batch's tensors (`kerasurgery.storage`, or the
   accumulator of `kerasurgery.stats`). While the sink handles batch ``i`` in
   a worker thread, the forward pass of batch ``i + 1`` already runs.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import keras

from kerasurgery import _backend
from kerasurgery.address import Resolver, Selector
from kerasurgery.data import Source, empty_error, pack
from kerasurgery.errors import DataError
from kerasurgery.graph import to_graph
from kerasurgery.transforms import expose

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
    """

    probe: keras.Model
    addresses: list[str]
    keys: dict[str, str]
    step: _backend.Step

    @property
    def unique(self) -> list[str]:
        return list(dict.fromkeys(self.keys.values()))


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PLANS_PER_MODEL = 8  # probes (and traced steps) kept per model, least recently used dropped


def clear_cache() -> None:
    """Forget every cached probe and compiled step."""
    _PLANS.clear()


def resolve(model: keras.Model, points: Selector | None, *, default: str = "outputs") -> list[str]:
    """Addresses selected by `points`; None means `default`.

    ``default="outputs"`` is every layer output (plain outputs of every
    non-input node); ``"all"`` is every address of `kerasurgery.points`.
    """
    graph = to_graph(model)
    resolver = Resolver(graph)
    if points is not None:
        return list(resolver.select(points, what="points"))
    if default == "all":
        return list(resolver.points())
    chosen = resolver.select(resolver.points(), what="points")
    return [
        a for a, p in chosen.items() if p.port is None and graph.nodes[p.node].get("kind") != "input"
    ]


def plan_for(
    model: keras.Model,
    points: Selector | None,
    *,
    training: bool = False,
    default: str = "outputs",
    tag: Any = "collect",
    make_post: Callable[[keras.Model, list[str]], tuple[Callable, tuple]] | None = None,
) -> Plan:
    """The (cached) plan computing `points` of `model`.

    Args:
        model: a Functional or Sequential model.
        points: selector as in `kerasurgery.expose`, or None (see `resolve`).
        training: run layers in training mode.
        default: what ``points=None`` means (see `resolve`).
        tag: hashable description of `make_post` (part of the cache key).
        make_post: given the probe and its distinct output keys, returns
            ``(post, extra)``: the function applied in-graph to the probe's
            outputs (and extra arguments), and the ``(shape, dtype)`` of each
            extra argument (see `kerasurgery._backend.Step`); default: keep
            those outputs.
    """
    if not isinstance(training, bool):
        raise DataError(f"Expected `training` to be True or False. Received: training={training!r}.")
    addresses = resolve(model, points, default=default)
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
    plan = Plan(probe, addresses, keys, _backend.Step(probe, training, post, extra))
    cache[key] = plan
    while len(cache) > _PLANS_PER_MODEL:
        cache.popitem(last=False)
    return plan


# ---------------------------------------------------------------------------
# the loop


class Progress:
    """A `keras.utils.Progbar` over batches, or nothing.

    Shown if `progress` is True, or if it is None and stdout is a terminal.
    """

    def __init__(self, progress: bool | None, total: int | None):
        show = _isatty() if progress is None else bool(progress)
        self.bar = keras.utils.Progbar(total, unit_name="batch") if show else None
        self.total = total

    def update(self, done: int) -> None:
        if self.bar is not None and (self.total is None or done < self.total):
            self.bar.update(done)

    def finish(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done, finalize=True)


def _isatty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def run(plan: Plan, source: Source, sink: Any, *, progress: bool | None = None) -> int:
    """Push every batch of `source` through `plan` into `sink`; returns the sample count.

    The sink's copy of batch ``i`` (in a worker thread) overlaps the forward
    pass of batch ``i + 1``; at most two batches of outputs are alive. A sink
    with an ``extra(start, rows)`` method gives the step's extra arguments for
    the batch of input samples ``start .. start + rows``.
    """
    plan.step.start()
    bar = Progress(progress, source.num_batches)
    written = 0
    batches = 0
    pending = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kerasurgery-sink") as pool:
        try:
            for arrays in source:
                rows = int(arrays[0].shape[0])
                extra = sink.extra(written, rows) if hasattr(sink, "extra") else ()
                outputs = plan.step(pack(plan.probe, arrays), *extra)
                if batches == 0:
                    sink.prepare(outputs, rows)
                else:
                    sink.check(outputs, rows, f"batch {batches}")
                if pending is not None:
                    pending.result()
                pending = pool.submit(sink.write, written, rows, outputs)
                written += rows
                batches += 1
                bar.update(batches)
            if pending is not None:
                pending.result()
        finally:
            if pending is not None:
                pending.cancel()
    if written == 0:
        raise empty_error(plan.probe.name.removesuffix("_probe"))
    bar.finish(batches)
    return written
