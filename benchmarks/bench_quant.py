"""Benchmark: the fake-quantized model's predict, and quantization_error, against float predict.

Prints, measured side by side in one process (medians of interleaved repeats),
on MobileNetV2 (weights=None, 96x96, 10 classes, no softmax), 128 samples,
batch 32, 8-bit quantizers at every ``:pre`` (35 points, mse ranges):
- fake-quantized ``predict`` / float ``predict`` (reported; no target)
- ``ks.quantization_error`` of every point and the output / two float
  ``predict`` calls, target <= 1.5 (it runs both models and reduces 36 pairs
  of tensors in the graph; the two predict calls only run the float model twice)
- also ``quantization_error`` / (float predict + fake-quantized predict),
  the work it cannot avoid

Run: python benchmarks/bench_quant.py
"""

from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's kerasurgery

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasurgery as ks  # noqa: E402

print(f"kerasurgery from {os.path.dirname(ks.__file__)}; backend {keras.backend.backend()}; "
      f"load average {os.getloadavg()[0]:.1f}")
from _timing import median_times  # noqa: E402

warnings.simplefilter("ignore")


def main() -> None:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10,
                                           classifier_activation=None)
    data = np.random.default_rng(0).uniform(-1, 1, (128, 96, 96, 3)).astype("float32")
    stats = ks.calibrate(model, data[:64], "*:pre")
    quantized = ks.fake_quantize(model, stats.ranges("mse"))
    ks.quantization_error(model, quantized, data[:32])  # trace once
    model.predict(data[:32], batch_size=32, verbose=0)
    quantized.predict(data[:32], batch_size=32, verbose=0)
    t = median_times(
        {
            "predict": lambda: model.predict(data, batch_size=32, verbose=0),
            "fake-quant predict": lambda: quantized.predict(data, batch_size=32, verbose=0),
            "quantization_error": lambda: ks.quantization_error(model, quantized, data, batch_size=32, progress=False),
        },
        repeats=5,
    )
    base = t["predict"]
    print(f"MobileNetV2 96x96, {len(data)} samples, batch 32, {len(stats)} quantized points: predict {base:.3f}s")
    print(f"fake-quant predict {t['fake-quant predict']:.3f}s, ratio {t['fake-quant predict'] / base:.2f} (reported)")
    print(f"quantization_error {t['quantization_error']:.3f}s, ratio to two predict calls "
          f"{t['quantization_error'] / (2 * base):.2f} (target <= 1.5); to predict + fake-quant predict "
          f"{t['quantization_error'] / (base + t['fake-quant predict']):.2f}")


if __name__ == "__main__":
    main()
