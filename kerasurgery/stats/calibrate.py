"""`calibrate`: streaming statistics of many points over a dataset.

Each batch goes through one compiled step: the probe's tensors (see
`kerasurgery.runtime.plan`) are reduced *inside the graph* with `keras.ops`, so
only a few numbers per point leave the graph and no activation is ever kept.
On the host, batch results merge into running statistics in float64 (Chan's
formula for mean and variance; histograms on a shared power-of-two grid, see
`kerasurgery.stats.grid`). The same merge combines the statistics of two shards
into those of the whole.

What is exact. Count, min, max, mean and variance (and how many values were
NaN, +inf, -inf) always see every value: sum, min, max and a centred sum of
squares are four passes over each point. The rest is a pass each, and the
histogram several: on a CPU one pass costs about a third of the forward pass
that produced the values, so exact histograms of every point cost 4-6
forward passes. Hence `sample`: the histogram, percentiles and zero fraction
are computed from at most `sample` values of each point per input sample,
taken as contiguous blocks (a gather that reads only those blocks), spread
evenly over the sample and rotating from sample to sample so that every
position is covered over the dataset. Points with fewer values per sample
are exact. And where a point is the output of a ReLU-family activation layer
whose input is also a point, its min and max are that function of the
input's min and max (exact, and two passes less).

Non-finite values (NaN, +inf, -inf) are counted per point and left out of
every other statistic, and `calibrate` warns once, naming the points. They
cost nothing while there are none: the host checks each batch's sums, and
only a batch whose sums are not finite runs again, through a second step
whose reductions leave them out (kept with the plan, traced on first need).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any, cast

import keras
import numpy as np

from kerasurgery.address.selector import Selector
from kerasurgery.checks import is_int, optional_positive_int, positive_int
from kerasurgery.errors import DataError
from kerasurgery.runtime import backend
from kerasurgery.runtime.inputs import Source, adapt, check_batch_size, pack
from kerasurgery.runtime.loop import run
from kerasurgery.runtime.plan import plan_for
from kerasurgery.stats.reduce import Layout, derived_extremes, layout, reduce_all
from kerasurgery.stats.moments import Moments
from kerasurgery.stats.results import DEFAULT_PERCENTILES, Calibration, PointStats

__all__ = ["DEFAULT_SAMPLE", "calibrate"]

DEFAULT_SAMPLE = 256


class _Replayable:
    """A `Source` that keeps each batch until `take` hands it back, so that a
    batch can run again (`run` has at most two batches in flight)."""

    def __init__(self, source: Source):
        self.source = source
        self.kept: dict[int, list[np.ndarray]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        start = 0
        for arrays in self.source:
            self.kept[start] = arrays
            yield arrays
            start += int(arrays[0].shape[0])

    def take(self, start: int) -> list[np.ndarray]:
        return self.kept.pop(start)


class _Accumulator:
    """The sink of `calibrate`: merges each batch's reductions (nothing else is kept).

    Its `extra(start, rows)` gives the step, for the batch of input samples
    ``start .. start + rows``: every point's running ``(lo, hi, e)`` packed
    into one ``(3, channels)`` array, so that batches usually land on the
    running histogram windows; and the first gathered block of every sampled
    point for each input sample, ``(rows, points)``.

    A batch whose sums are not finite has a NaN or an infinity somewhere: its
    reductions are thrown away and `again(arrays, extra)` reduces it again,
    leaving those values out (``reduce_all(..., finite_only=True)``).
    """

    def __init__(self, bins: int, layouts: dict[str, Layout], source: _Replayable,
                 again: Callable[[list, tuple], dict]):
        self.bins = bins
        self.layouts = layouts
        self.source = source
        self.again = again
        self.state: dict[str, Moments] = {}
        self.shapes = {k: lay.shape for k, lay in layouts.items()}  # per-sample shapes (None where they vary)
        self.seen: set[str] = set()  # points whose batch shapes were read (non-static ones)
        self.steps = np.array([lay.step for lay in layouts.values()], np.int64)
        self.blocks = np.array([lay.blocks for lay in layouts.values()], np.int64)

    def prepare(self, outputs: dict, rows: int) -> None:
        pass

    def check(self, outputs: dict, rows: int, where: str) -> None:
        pass

    def extra(self, start: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for key, lay in self.layouts.items():
            m = self.state.get(key)
            if m is None:
                c = lay.channels
                parts.append(np.array([[np.inf] * c, [-np.inf] * c, [-np.inf] * c], np.float32))
            else:
                parts.append(np.stack([m.low, m.high, m.exponent]).astype(np.float32))
        index = np.arange(start, start + rows, dtype=np.int64)[:, None]
        offsets = (index % self.blocks) * self.steps % self.blocks
        return np.concatenate(parts, axis=1), offsets.astype(np.int32)

    def write(self, start: int, rows: int, outputs: dict) -> None:
        arrays = self.source.take(start)
        if not all(np.all(np.isfinite(backend.as_numpy(parts["sum"]))) for parts in outputs.values()):
            outputs = self.again(arrays, self.extra(start, rows))
        for key, parts in outputs.items():
            if "shape" in parts:  # a shape that is not static: keep the dims every batch agrees on
                shape = tuple(int(d) for d in backend.as_numpy(parts["shape"])[1:])
                seen = self.shapes[key] if key in self.seen else shape
                self.shapes[key] = tuple(a if a == b else None for a, b in zip(seen, shape))
                self.seen.add(key)
            batch = Moments.from_batch(parts)
            self.state[key] = batch if key not in self.state else self.state[key].merge(batch, self.bins)


def calibrate(
    model: keras.Model,
    data: Any,
    points: Selector | None = None,
    *,
    batch_size: int = 32,
    progress: bool | None = None,
    bins: int | None = None,
    per_channel: bool = False,
    channel_axis: int = -1,
    percentiles: Any = DEFAULT_PERCENTILES,
    training: bool = False,
    steps: int | None = None,
    sample: int | None = DEFAULT_SAMPLE,
) -> Calibration:
    """Streaming statistics of `points` of `model` over `data`.

    One compiled forward pass per batch computes every point and reduces it
    in the graph (min, max, mean, variance, zeros, histogram); activations are
    never kept, so memory does not grow with the data. Typical use: ranges of
    every pre-activation (``"*:pre"``) for post-training quantization.

    ``count``, ``min``, ``max``, ``mean`` and ``std`` are exact (every value);
    the histogram, percentiles and zero fraction come from a sample of each
    large point unless ``sample=None`` (see `sample`). NaN and infinite
    values are counted (``PointStats.nan``, ``posinf``, ``neginf``) and left
    out of every other statistic, with one ``UserWarning`` per call naming
    the points that had them.

    Args:
        model: a Functional or Sequential model.
        data: as for `kerasurgery.collect`.
        points: addresses, globs, list or predicate; None means every layer
            output (the plain output of every layer and operation: no inputs,
            no ``:pre`` or ``:scores``), as in `kerasurgery.collect`. Pass
            ``"*:pre"`` for the pre-activations, ``kerasurgery.points(model)``
            for every address.
        batch_size: rows per batch for arrays.
        progress: show a progress bar (None: when stdout is a terminal).
        bins: histogram cells per point (and per channel); None: 2048, or
            128 per channel (per-channel histograms of every point of a large
            model at 2048 cells would take hundreds of MB).
        per_channel: statistics per channel instead of per tensor.
        channel_axis: the channel axis, counted with the batch (-1: last).
        percentiles: percentiles (0-100) reported by `to_dict`.
        training: run layers in training mode (the model is not changed).
        steps: read at most this many batches.
        sample: values of a point per input sample (all channels together)
            from which its histogram, percentiles and zero fraction are
            computed (per channel: ``sample // channels`` positions, at least
            one). Points with more are sampled in contiguous blocks spread
            over the sample, shifted from one input sample to the next so
            that every position is covered over the dataset. ``count``,
            ``min``, ``max``, ``mean``, ``std`` and the non-finite counts
            always see every value. None: every value (exact histograms; on
            a large model about 3x slower, see docs/performance.md).

    Returns:
        A `Calibration`: ``{address: PointStats}``.

    Raises:
        AddressError: a point is not an address of `model`.
        DataError: the data does not fit the model or is empty; bad `bins`
            or `sample`.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> stats = ks.calibrate(model, np.random.default_rng(0).normal(size=(64, 4)), "d:pre")
        >>> s = stats["d:pre"]
        >>> s.samples, s.count, s.min <= s.percentile(50) <= s.max
        (64, 192, True)
    """
    batch_size = check_batch_size(batch_size)
    if bins is None:
        bins = 128 if per_channel else 2048
    bins = positive_int(bins, "bins", minimum=2, maximum=1 << 20)
    qs = tuple(float(q) for q in np.atleast_1d(np.asarray(percentiles, np.float64)))
    if any(not 0 <= q <= 100 for q in qs):
        raise DataError(f"Expected percentiles between 0 and 100. Received: percentiles={percentiles!r}.")
    sample = optional_positive_int(sample, "sample", meaning="every value (exact statistics)")
    if not is_int(channel_axis):
        raise DataError(f"Expected `channel_axis` to be an integer. Received: channel_axis={channel_axis!r}.")
    bins, per_channel, channel_axis = int(bins), bool(per_channel), int(channel_axis)
    sample = None if sample is None else int(sample)

    def layouts(probe: keras.Model, unique: list[str]) -> dict[str, Layout]:
        return {k: layout(probe.output[k], per_channel, channel_axis, sample) for k in unique}

    def make_post(probe: keras.Model, unique: list[str], finite_only: bool = False) -> tuple:
        lays = layouts(probe, unique)
        offsets = np.cumsum([0, *(lay.channels for lay in lays.values())])
        derived = {} if finite_only else derived_extremes(probe, lays)

        def post(outputs: dict, running: Any, first: Any) -> dict:
            return reduce_all(outputs, lays, derived, bins, running, first, finite_only=finite_only)

        return post, (((3, int(offsets[-1])), "float32"), ((None, len(unique)), "int32"))

    tag = ("stats", bins, per_channel, channel_axis, sample)
    plan = plan_for(model, points, training=training, tag=tag, make_post=make_post)
    careful = plan.variants.get("finite only")  # the same reductions leaving NaN and infinities out
    if careful is None:
        careful_post, extra = make_post(plan.probe, plan.unique, finite_only=True)
        careful = plan.variants["finite only"] = backend.Step(plan.probe, training, careful_post, extra)
    started = False

    def again(arrays: list, extra: tuple) -> dict:
        """A batch with NaN or infinities, reduced again (traced on first use only)."""
        nonlocal started
        if not started:  # (re)reads the model's current variables
            careful.start()
            started = True
        return careful(pack(plan.probe, arrays), *extra)

    lays = layouts(plan.probe, plan.unique)
    source = _Replayable(adapt(data, plan.probe, batch_size=batch_size, steps=steps))
    sink = _Accumulator(bins, lays, source, again)
    samples = run(plan, cast(Source, source), sink, progress=progress)  # duck-typed: batches, num_batches
    result = Calibration(model=model.name)
    for address, key in plan.keys.items():
        t = plan.probe.output[key]
        result[address] = PointStats(
            address, shape=sink.shapes[key], dtype=keras.backend.standardize_dtype(t.dtype),
            channel_axis=lays[key].axis, bins=bins, samples=samples, moments=sink.state[key], percentiles=qs,
            sample=sample,
        )
    _warn_non_finite(result)
    return result


def _warn_non_finite(result: Calibration, shown: int = 8) -> None:
    """One `UserWarning` naming the points that had NaN or infinite values, with their counts."""
    bad = {a: s for a, s in result.items() if np.sum(s.finite) < s.count * np.size(s.finite)}
    if not bad:
        return
    described = [f"{a!r} ({int(np.sum(s.nan))} NaN, {int(np.sum(s.posinf))} +inf, {int(np.sum(s.neginf))} -inf)"
                 for a, s in list(bad.items())[:shown]]
    more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
    warnings.warn(
        f"calibrate: {len(bad)} point(s) of model {result.model!r} had values that are not finite: "
        f"{', '.join(described)}{more}. Their min, max, mean, std, zeros, histogram and percentiles "
        "describe the finite values only; the counts are in PointStats.nan, .posinf and .neginf.",
        UserWarning, stacklevel=3,
    )
