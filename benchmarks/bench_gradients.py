"""Benchmark: ks.gradients of every ':pre' point against a hand-written GradientTape.

Prints, measured side by side in one process on MobileNetV2 (weights=None,
96x96, batch 32, 128 samples; medians of interleaved repeats, every compiled
function warm):

- ``ks.gradients(model, x, "*:pre")`` (the predicted class's score before the
  softmax, differentiated with respect to every pre-activation) / one
  hand-written ``tf.GradientTape`` pass per batch with the same outputs (a
  ``tf.function`` over a ``keras.Model`` returning every pre-activation and the
  pooled features, the logits computed by hand, ``tape.gradient`` of the
  predicted score with respect to all of them, every gradient copied to the
  host as numpy), target <= 1.2;
- the same tape with the batches then concatenated into one array per point
  (what ``ks.gradients`` returns), reported;
- both / ``model.predict`` (reported);
- the first (cold) ``ks.gradients`` call, which builds the gradient model
  and traces it.

The GradientTape reference needs TensorFlow; on JAX or PyTorch
(``KERAS_BACKEND=jax``) only ``ks.gradients`` / ``model.predict`` is reported.
Run: python benchmarks/bench_gradients.py [--repeats 5] [--samples 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(__file__))

import keras
import numpy as np

import kerasurgery as ks
from kerasurgery.attribution import plan as gradient_plans

SHAPE = (96, 96, 3)
BATCH = 32


def hand_written_tape(model: keras.Model, addresses: list[str]):
    """One tf.GradientTape pass per batch with the outputs of ``ks.gradients(model, x, addresses)``."""
    import tensorflow as tf

    tensors = []
    for address in addresses:
        name = address.removesuffix(":pre")
        if name == "predictions":
            continue  # fused softmax: its logits are computed by hand below
        tensors.append(model.get_layer(name).input)  # an activation layer's :pre is its input
    dense = model.get_layer("predictions")
    reference = keras.Model(model.input, [*tensors, dense.input])

    @tf.function(input_signature=[tf.TensorSpec((None, *SHAPE), tf.float32)], autograph=False)
    def step(x):
        with tf.GradientTape() as tape:
            *values, pooled = reference(x, training=False)
            tape.watch(values)
            logits = tf.matmul(pooled, dense.kernel) + dense.bias
            tape.watch(logits)
            score = tf.reduce_max(logits, axis=-1)  # the predicted class's score
        return tape.gradient(score, [*values, logits])

    def per_batch(x: np.ndarray) -> list[list[np.ndarray]]:
        """The gradients of each batch, as numpy arrays (one list per batch)."""
        return [[g.numpy() for g in step(x[start : start + BATCH])] for start in range(0, len(x), BATCH)]

    def run(x: np.ndarray) -> list[np.ndarray]:
        """One array per tensor over all of `x` (what ks.gradients returns): batches, then concatenate."""
        return [np.concatenate(parts) for parts in zip(*per_batch(x))]

    return run, per_batch, len(tensors) + 1


def timings(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each callable, run interleaved (as `_timing.median_times`), every repeat kept."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=128)
    args = parser.parse_args()
    tf = keras.backend.backend() == "tensorflow"
    model = keras.applications.MobileNetV2(input_shape=SHAPE, weights=None)
    x = np.random.default_rng(0).random((args.samples, *SHAPE), dtype=np.float32)
    addresses = ks.points(model, "*:pre")
    t0 = time.perf_counter()
    got = ks.gradients(model, x[:BATCH], addresses, progress=False)
    cold = time.perf_counter() - t0
    distinct = list({id(a): a for a in got.values()}.values())
    fns = {
        "predict": lambda: model.predict(x, batch_size=BATCH, verbose=0),
        "gradients": lambda: ks.gradients(model, x, addresses, batch_size=BATCH, progress=False),
    }
    note = f"backend {keras.backend.backend()}"
    if tf:
        tape, per_batch, count = hand_written_tape(model, addresses)
        expected = tape(x[:BATCH])
        assert len(distinct) == count, (len(distinct), count)
        worst = max(float(np.max(np.abs(a - e)) / (np.max(np.abs(e)) + 1e-30)) for a, e in zip(distinct, expected))
        note += f"; max relative difference from the tape {worst:.1e}"
        fns["tape"] = lambda: per_batch(x)
        fns["concatenated"] = lambda: tape(x)
    model.predict(x[:BATCH], verbose=0)
    every = timings(fns, args.repeats)
    t = {name: statistics.median(ts) for name, ts in every.items()}
    fastest = {name: min(ts) for name, ts in every.items()}
    size = sum(a.nbytes for a in distinct) / BATCH * len(x)
    print(f"MobileNetV2 96x96, {len(x)} samples, batch {BATCH}: gradients of the predicted score at "
          f"{len(addresses)} ':pre' points ({len(distinct)} distinct tensors, {size / 1e9:.2f} GB); "
          f"{note}; medians of {args.repeats} (fastest run in brackets)")
    print(f"  model.predict                      {t['predict']:6.2f}s [{fastest['predict']:.2f}s]")
    if tf:
        print(f"  hand-written GradientTape          {t['tape']:6.2f}s [{fastest['tape']:.2f}s]  / predict "
              f"{t['tape'] / t['predict']:5.2f}  (numpy arrays per batch)")
        print(f"    then concatenated per point      {t['concatenated']:6.2f}s [{fastest['concatenated']:.2f}s]  / "
              f"predict {t['concatenated'] / t['predict']:5.2f}  (ks.gradients / this: "
              f"{t['gradients'] / t['concatenated']:.2f} [{fastest['gradients'] / fastest['concatenated']:.2f}])")
    line = (f"  ks.gradients (warm)                {t['gradients']:6.2f}s [{fastest['gradients']:.2f}s]  / predict "
            f"{t['gradients'] / t['predict']:5.2f}")
    if tf:
        ratio = t["gradients"] / t["tape"]
        line += (f"  / tape {ratio:5.2f} [{fastest['gradients'] / fastest['tape']:.2f}]  (target <= 1.2: "
                 f"{'met' if ratio <= 1.2 else 'MISSED'})")
    print(line)
    print(f"  ks.gradients (first call: model + trace, {BATCH} samples) {cold:6.2f}s")
    gradient_plans.clear_cache()


if __name__ == "__main__":
    main()
