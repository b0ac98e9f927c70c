"""Post-training quantization, step by step: calibrate, choose ranges, fake-quantize, read the error, export.

Keras 3's ``model.quantize("int8")`` quantizes activations dynamically; a
deployment engine (TensorRT, ONNX Runtime) wants static ranges chosen on
calibration data. This script calibrates every pre-activation of a small
CNN, makes 8-bit ranges by the four standard methods, fake-quantizes the
model (quantize-dequantize at every ``:pre``), prints the error per point
and writes the ranges as JSON and as a TensorRT calibration cache.

The script checks its claims with numbers (an AssertionError stops it if one
does not hold): the fake-quantized value at a point equals numpy's
quantize-dequantize of the float model's value computed with the quantized
model's own input to that layer (so the quantizer does exactly
``clip(round(x / scale), -127, 127) * scale``); the SQNR that
``ks.quantization_error`` reports equals ``10 log10(sum x**2 / sum (x-q)**2)``
computed with numpy on values collected from both models; the saved model
loads back with equal outputs; and the TensorRT cache holds ``amax / 127``.

Run: python examples/13_quantization.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import numpy as np

import kerasurgery as ks
from kerasurgery.quant.export import read_tensorrt_cache


def small_cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((24, 24, 3), name="image")
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv_1")(x)
    h = keras.layers.BatchNormalization(name="bn_1")(h)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv_2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, keras.layers.Dense(5, activation="softmax", name="predictions")(h), name="small_cnn")


def main(out: str) -> None:
    model = small_cnn()
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (128, 24, 24, 3)).astype("float32")
    test = rng.uniform(-1, 1, (64, 24, 24, 3)).astype("float32")

    # 1. statistics of every pre-activation (exact histograms: sample=None)
    stats = ks.calibrate(model, calibration, "*:pre", sample=None)
    print(f"calibrated {len(stats)} points over {stats['conv_1:pre'].samples} samples:",
          ", ".join(f"{a} [{s.min:.3f}, {s.max:.3f}]" for a, s in stats.items()))
    # 2. ranges by each method; 3. fake-quantize; 4. the error per point
    best = None
    for method in ("minmax", "percentile", "entropy", "mse"):
        quantized = ks.fake_quantize(model, stats.ranges(method), bits=8)
        errors = ks.quantization_error(model, quantized, test)
        print(f"{method:>10}: SQNR at the logits {errors['predictions:pre'].sqnr_db:5.1f} dB, "
              f"lowest {errors.worst.sqnr_db:5.1f} dB at {errors.worst.address}")
        if best is None or errors["predictions:pre"].sqnr_db > best[2]["predictions:pre"].sqnr_db:
            best = (method, quantized, errors)
    method, quantized, errors = best
    print(f"best: {method}\n{errors.table()}")

    # check: the quantizer at conv_2:pre computes numpy's quantize-dequantize of its input ...
    ranges = stats.ranges(method)
    r = ranges["conv_2:pre"]
    seen = ks.collect(quantized, test, ["conv_2_pre", "conv_2_pre_quant"])  # the split layer, its quantizer
    expected = np.clip(np.round(seen["conv_2_pre"] / np.float32(r.scale)), -127, 127) * np.float32(r.scale)
    np.testing.assert_allclose(seen["conv_2_pre_quant"], expected, atol=1e-6)
    # ... and the SQNR reported equals numpy's on values collected from both models
    x = ks.collect(model, test, "conv_2:pre")["conv_2:pre"].astype(np.float64)
    q = seen["conv_2_pre_quant"].astype(np.float64)
    sqnr = 10 * np.log10(np.sum(x**2) / np.sum((x - q) ** 2))
    print(f"SQNR at conv_2:pre: {errors['conv_2:pre'].sqnr_db:.3f} dB (numpy: {sqnr:.3f})")
    np.testing.assert_allclose(errors["conv_2:pre"].sqnr_db, sqnr, rtol=1e-4)

    # 5. save the fake-quantized model, draw the error, export the ranges
    path = os.path.join(out, "quantized.keras")
    quantized.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path).predict(test, verbose=0),
                               quantized.predict(test, verbose=0), atol=1e-6)
    fig = ks.plot.sqnr(errors, threshold=25)
    fig.savefig(os.path.join(out, "sqnr.png"), dpi=80)
    ranges.to_json(os.path.join(out, "ranges.json"), indent=1, names=model, overwrite=True)
    names = ranges.to_tensorrt(os.path.join(out, "calib.cache"), names=model, overwrite=True)
    cache = read_tensorrt_cache(os.path.join(out, "calib.cache"))
    print("tensor names:", names)
    for address, name in names.items():
        amax = max(abs(ranges[address].low), abs(ranges[address].high))
        np.testing.assert_allclose(cache[name], amax / 127, rtol=1e-6)
    print("wrote", path, "sqnr.png ranges.json calib.cache")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
