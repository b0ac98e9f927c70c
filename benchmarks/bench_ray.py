"""Benchmark: calibrate on Ray (1 and 2 actors) against calibrate in this process.

MobileNetV2 (weights=None, 96x96, batch 32), every ':pre' point, default
``sample``, the same images held as a Ray dataset of 128-sample blocks
(``shard_size=128``). A Ray run has a fixed cost (actors start, import Keras,
load the model, trace the step: seconds) and then a rate, so each is measured:

- end to end: the whole `ks.calibrate` call;
- steady rate: samples per second once every actor has returned its first
  block (timestamps of the blocks as the driver receives them, through
  `kerasurgery.engines.ray.run_blocks`, the loop `ks.calibrate` runs).

In process: the same call, warm (probe and step cached, as in a long run).
Printed: the rates, Ray's overhead at 1 actor (in-process rate / Ray's,
target <= 1.3) and the scaling (2 actors / 1 actor). On a 2-core machine
TensorFlow in one actor already uses both cores, so 2 actors can only share
them; ``--threads 1`` limits every actor (and the in-process run, in a
subprocess) to one intra-op thread, which is how one actor per core scales.

Run: python benchmarks/bench_ray.py [--samples N] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasurgery as ks  # noqa: E402

SHAPE = (96, 96, 3)
BATCH = 32
BLOCK = 128


def mobilenet() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(input_shape=SHAPE, weights=None)


def images(n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, *SHAPE), dtype=np.float32)


def in_process(model: keras.Model, n: int) -> float:
    x = images(n)
    ks.calibrate(model, x[:BATCH], "*:pre", batch_size=BATCH, progress=False)  # warm: probe and step cached
    t0 = time.perf_counter()
    ks.calibrate(model, x, "*:pre", batch_size=BATCH, progress=False)
    return time.perf_counter() - t0


def on_ray(model: keras.Model, n: int, actors: int, threads: int | None) -> tuple[float, float]:
    """(end-to-end seconds, steady samples per second) of calibrate on `actors` Ray actors."""
    import ray.data

    from kerasurgery.engines.ray import first_inputs, run_blocks

    x = images(n)
    ds = ray.data.from_numpy([x[i:i + BLOCK] for i in range(0, n, BLOCK)])
    env = {"env_vars": {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"}} if threads else None
    t0 = time.perf_counter()
    _, columns, _rows = first_inputs(ds, model)
    times, rows = [], []
    for _key, count, _result, _shapes, _reused in run_blocks(
            "calibrate", model, ds, "*:pre", columns=columns, batch_size=BATCH, options={}, folder=None,
            ray_options={"actors": actors, "shard_size": BLOCK, "runtime_env": env}, progress=False):
        times.append(time.perf_counter())
        rows.append(count)
    return times[-1] - t0, sum(rows[actors:]) / (times[-1] - times[actors - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048, help="samples per run")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads per actor (default: all)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.samples
    model = mobilenet()
    if args.child:  # in process, in a subprocess started with the thread limits
        print(json.dumps(in_process(model, n)))
        return
    if args.threads:
        env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(args.threads), "TF_NUM_INTEROP_THREADS": "1"}
        out = subprocess.run([sys.executable, __file__, "--samples", str(n), "--child"], env=env, check=True,
                             capture_output=True, text=True).stdout
        local = json.loads(out.strip().splitlines()[-1])
    else:
        local = in_process(model, n)
    from kerasurgery.engines.ray import init

    init(include_dashboard=False, log_to_driver=False)
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    figures = {"in process (warm)": (local, n / local)}
    for actors in (1, 2):
        figures[f"Ray, {actors} actor(s)"] = on_ray(model, n, actors, args.threads)
    threads = f"{args.threads} intra-op thread(s) each" if args.threads else "all cores each"
    print(f"calibrate('*:pre'), MobileNetV2 96x96, batch {BATCH}, blocks of {BLOCK}, {n} samples; {threads}")
    print(f"{'':20} {'end to end s':>12} {'steady samples/s':>17}")
    rates = {}
    for name, (seconds, per_second) in figures.items():
        rates[name] = per_second
        print(f"{name:20} {seconds:12.2f} {per_second:17.1f}")
    local_rate, one, two = rates["in process (warm)"], rates["Ray, 1 actor(s)"], rates["Ray, 2 actor(s)"]
    print(f"Ray overhead at 1 actor (in-process rate / Ray's): {local_rate / one:.2f}x (target <= 1.3)")
    print(f"scaling, 2 actors / 1 actor: {two / one:.2f}x")
    ray.shutdown()


if __name__ == "__main__":
    main()
