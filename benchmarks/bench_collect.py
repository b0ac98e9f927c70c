"""Benchmark: collect, calibrate and their memory against model.predict.

Prints, measured side by side in one process on MobileNetV2 (weights=None,
96x96, batch 32; medians of interleaved repeats, every compiled function warm):

- collect(every layer output, 128 samples, ~2 GB) / model.predict, target <= 2;
  also the first (cold) collect, which builds the probe and traces it;
- the same work with Keras alone: one multi-output model (``keras.Model``
  with a dict of every layer output) and one model per layer, each / predict;
- calibrate(every address of ks.points, 256 samples) / model.predict with the
  defaults (count, min, max, mean, std exact; histogram, percentiles and
  zeros from sample=256 values per input sample), goal <= 2; also every
  layer output (points=None), exact histograms too (sample=None), sample=1
  (one value per input sample: close to the cost of the exact statistics
  alone, the floor), every ':pre' point (target <= 1.5), and per channel;
- what passes over every point cost (--only passes): the probe of every
  point with min, then max, sum, centred sum of squares added (what
  calibrate computes over every value), each / predict;
- peak memory (RSS, in fresh subprocesses, data from a generator so the input
  is not held) of calibrate and collect(path=...) on 4x the data / on 1x,
  target about 1.0.

Run: python benchmarks/bench_collect.py [--quick] [--skip-per-layer]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's kerasurgery

import keras
import numpy as np
from _timing import median_times

import kerasurgery as ks
from kerasurgery.runtime import plan as runner

SHAPE = (96, 96, 3)
BATCH = 32


def mobilenet() -> keras.Model:
    return keras.applications.MobileNetV2(input_shape=SHAPE, weights=None)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


def batches(n: int):
    """`n` samples as a generator of batches: the input is never held whole."""
    for start in range(0, n, BATCH):
        yield images(min(BATCH, n - start), seed=start)


def predict(model, x):
    return model.predict(x, batch_size=BATCH, verbose=0)


# ---------------------------------------------------------------------------
# time


def bench_collect(model, repeats: int, per_layer: bool) -> None:
    x = images(128)
    outputs = ks.collect(model, x[:BATCH], progress=False)  # every layer output
    addresses = list(outputs)
    size = sum(a.nbytes for a in outputs.values()) / BATCH * len(x)
    del outputs
    runner.clear_cache()
    t0 = time.perf_counter()
    ks.collect(model, x, progress=False)
    cold = time.perf_counter() - t0

    layer_outputs = {layer.name: layer.output for layer in model.layers[1:]}
    multi = keras.Model(model.input, layer_outputs)
    predict(model, x[:BATCH]), predict(multi, x[:BATCH])
    t = median_times(
        {
            "predict": lambda: predict(model, x),
            "collect": lambda: ks.collect(model, x, progress=False),
            "keras multi-output": lambda: predict(multi, x),
        },
        repeats=repeats,
    )
    base = t["predict"]
    print(f"MobileNetV2 96x96, {len(x)} samples, batch {BATCH}: {len(addresses)} layer outputs, "
          f"{size / 1e9:.2f} GB; model.predict {base:.2f}s")
    print(f"  collect (warm)              {t['collect']:6.2f}s  ratio {t['collect'] / base:5.2f}  (target <= 2)")
    print(f"  collect (first call: probe + trace) {cold:6.2f}s  ratio {cold / base:5.2f}")
    print(f"  keras multi-output predict  {t['keras multi-output']:6.2f}s  ratio "
          f"{t['keras multi-output'] / base:5.2f}")
    if per_layer:
        singles = [keras.Model(model.input, tensor) for tensor in layer_outputs.values()]
        t0 = time.perf_counter()
        for single in singles:
            predict(single, x)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for single in singles:
            predict(single, x)
        warm = time.perf_counter() - t0
        print(f"  one model per layer (warm)  {warm:6.2f}s  ratio {warm / base:5.2f}; first call "
              f"{first:.2f}s, ratio {first / base:.2f}")


def bench_calibrate(model, repeats: int) -> None:
    x = images(256)
    pre = ks.points(model, "*:pre")
    every = ks.points(model)
    outputs = runner.resolve(model, None)
    runs = {
        f"every point ({len(every)})": {"points": every},
        f"every layer output, points=None ({len(outputs)})": {},
        "every point, sample=None (exact)": {"points": every, "sample": None},
        "every point, sample=1 (~ exact statistics alone)": {"points": every, "sample": 1},
        f"every ':pre' ({len(pre)})": {"points": pre},
        "every point, per channel (128 bins)": {"points": every, "per_channel": True},
    }
    for kwargs in runs.values():
        ks.calibrate(model, x[:BATCH], progress=False, **kwargs)
    predict(model, x[:BATCH])
    fns = {"predict": lambda: predict(model, x)}
    fns.update({name: (lambda kw=kwargs: ks.calibrate(model, x, progress=False, **kw)) for name, kwargs in runs.items()})
    t, cpu = median_wall_and_cpu(fns, repeats=repeats)
    base = t["predict"]
    print(f"MobileNetV2 96x96, {len(x)} samples, batch {BATCH}: model.predict {base:.2f}s "
          f"(ratios of wall time; of process CPU time in brackets)")
    for name in runs:
        target = "  (goal <= 2)" if name.startswith("every point (") else ""
        target = "  (target <= 1.5)" if name.startswith("every ':pre'") else target
        print(f"  calibrate, {name:48s} {t[name]:6.2f}s  ratio {t[name] / base:5.2f} "
              f"[{cpu[name] / cpu['predict']:5.2f}]{target}")


def median_wall_and_cpu(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median wall and process CPU times of interleaved repeats: on a shared machine the
    wall time of every call stretches with the load, its CPU time much less."""
    wall: dict = {name: [] for name in fns}
    cpu: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return ({n: float(np.median(v)) for n, v in wall.items()}, {n: float(np.median(v)) for n, v in cpu.items()})


def bench_passes(model, repeats: int) -> None:
    """What one pass over every point costs: the probe of every point with a few
    in-graph reductions (no sampling, nothing derived), each / model.predict."""
    from keras import ops

    from kerasurgery.runtime.inputs import pack

    x = images(256)
    flat = lambda t: ops.reshape(t, (-1,))
    variants = {
        "forward pass only": lambda t: ops.shape(t)[0],
        "+ min": lambda t: ops.min(flat(t)),
        "+ min, max": lambda t: (ops.min(flat(t)), ops.max(flat(t))),
        "+ min, max, sum": lambda t: (ops.min(flat(t)), ops.max(flat(t)), ops.sum(flat(t))),
        "+ min, max, sum, centred squares": lambda t: (
            ops.min(flat(t)), ops.max(flat(t)), ops.sum(flat(t)),
            ops.sum(ops.square(flat(t) - ops.sum(flat(t)) / ops.cast(ops.size(t), "float32")))),
    }

    def plan(fn):
        def make_post(probe, unique):
            return (lambda outputs: {k: fn(outputs[k]) for k in unique}), ()
        return runner.plan_for(model, ks.points(model), tag=("passes", id(fn)), make_post=make_post)

    plans = {name: plan(fn) for name, fn in variants.items()}

    def run(p):
        p.step.start()
        for i in range(0, len(x), BATCH):
            out = p.step(pack(p.probe, [x[i : i + BATCH]]))
            [np.asarray(v) for v in keras.tree.flatten(out)]

    for p in plans.values():
        run(p)
    predict(model, x[:BATCH])
    fns = {"predict": lambda: predict(model, x)}
    fns.update({name: (lambda p=p: run(p)) for name, p in plans.items()})
    t = median_times(fns, repeats=repeats)
    print(f"MobileNetV2 96x96, {len(x)} samples, every point: model.predict {t['predict']:.2f}s")
    for name in plans:
        print(f"  probe with {name:36s} {t[name]:6.2f}s  ratio {t[name] / t['predict']:5.2f}")


# ---------------------------------------------------------------------------
# memory


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM; `ru_maxrss` would include the parent's
    size at fork time when this process was started from a large one)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_worker(kind: str, samples: int) -> dict:
    """Run in a fresh process: warm up on one batch, then run `kind` over `samples`."""
    model = mobilenet()
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "acts.h5")

    def job(n):
        if kind == "calibrate":
            ks.calibrate(model, batches(n), ks.points(model), progress=False)
        else:
            ks.collect(model, batches(n), path=path, overwrite=True, progress=False).close()

    job(BATCH)
    warm_peak = peak_rss_mb()
    before = rss_mb()
    job(samples)
    peak = peak_rss_mb()
    if os.path.exists(path):
        os.unlink(path)
    os.rmdir(folder)
    return {"warm_peak_mb": warm_peak, "rss_before_mb": before, "peak_mb": peak}


def bench_memory(samples: int) -> None:
    print(f"peak RSS in fresh processes (data from a generator), {samples} vs {4 * samples} samples:")
    for kind in ("calibrate", "collect_path"):
        result = {}
        for n in (samples, 4 * samples):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-worker", kind, str(n)],
                check=True, capture_output=True, text=True,
            ).stdout
            result[n] = json.loads(out.strip().splitlines()[-1])
        one, four = result[samples], result[4 * samples]
        name = "calibrate" if kind == "calibrate" else "collect(path=...)"
        growth = [r["peak_mb"] - r["rss_before_mb"] for r in (one, four)]
        print(f"  {name:18s} peak {one['peak_mb']:6.0f} MB -> {four['peak_mb']:6.0f} MB, ratio "
              f"{four['peak_mb'] / one['peak_mb']:.2f} (target ~1.0); above the warmed-up process "
              f"{growth[0]:.0f} MB -> {growth[1]:.0f} MB (process after warm-up: {one['rss_before_mb']:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no per-layer models")
    parser.add_argument("--skip-per-layer", action="store_true", help="skip one-model-per-layer (minutes)")
    parser.add_argument("--only", choices=["collect", "calibrate", "passes", "memory"], default=None)
    parser.add_argument("--memory-worker", nargs=2, metavar=("KIND", "SAMPLES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker[0], int(args.memory_worker[1]))))
        return
    repeats = 3 if args.quick else 5
    print(f"kerasurgery from {os.path.dirname(ks.__file__)}, Keras backend {keras.backend.backend()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    model = mobilenet()
    if args.only in (None, "collect"):
        bench_collect(model, repeats, per_layer=not (args.quick or args.skip_per_layer))
    if args.only in (None, "calibrate"):
        bench_calibrate(model, repeats)
    if args.only in (None, "passes"):
        bench_passes(model, repeats)
    if args.only in (None, "memory"):
        bench_memory(128)


if __name__ == "__main__":
    main()
