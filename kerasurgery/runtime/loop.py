"""The loop shared by `collect`, `calibrate` and `ActivationRecorder`.

`run(plan, source, sink)` pushes every batch of a *source* of checked input
batches (`kerasurgery.runtime.inputs.adapt`) through a plan's compiled step
(`kerasurgery.runtime.plan`) into a *sink* (`kerasurgery.runtime.sinks`, or the
accumulator of `kerasurgery.stats.calibrate`). While the sink handles batch
``i`` in a worker thread, the forward pass of batch ``i + 1`` already runs.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import keras

from kerasurgery.runtime.inputs import Source, empty_error, pack
from kerasurgery.runtime.plan import Plan


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
