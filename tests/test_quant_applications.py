"""The quantization workbench on MobileNetV2 (random weights): calibrate, every ``:pre`` at 8 bits, SQNR per point.

Done-when check of issue 15: the SQNR at the output (the logits:
``classifier_activation=None``, since the softmax of a random MobileNetV2
is 0.1 everywhere) is at least 25 dB with the best of the four methods, on
test data drawn like the calibration data. The figures are printed (run
with ``-s``) and written down in docs/quantization.md.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from zoo import assert_roundtrip, assert_unchanged, snapshot

import kerasurgery as ks
from kerasurgery.layers import FakeQuant


@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10,
                                           classifier_activation=None)
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (32, 96, 96, 3)).astype("float32")
    test = rng.uniform(-1, 1, (16, 96, 96, 3)).astype("float32")
    return model, calibration, test


def run(mobilenet, methods):
    model, calibration, test = mobilenet
    stats = ks.calibrate(model, calibration, "*:pre")
    assert len(stats) == 35  # every :pre (the logits layer has no activation)
    results = {}
    for method in methods:
        quantized = ks.fake_quantize(model, stats.ranges(method), bits=8)
        errors = ks.quantization_error(model, quantized, test)
        assert list(errors)[:-1] == list(stats) and errors["predictions"].output  # depth order, then the output
        results[method] = (errors, quantized)
    figures = {m: round(e["predictions"].sqnr_db, 2) for m, (e, _) in results.items()}
    print("MobileNetV2 96x96, 8 bits at every :pre, SQNR at the output (dB):", figures)
    return results, figures


def test_every_pre_at_8_bits_keeps_25_db_at_the_output_with_the_best_method(mobilenet, tmp_path):
    """mse and minmax: the two best here (the four: `test_every_method`, slow)."""
    model, calibration, test = mobilenet
    before = snapshot(model)
    results, figures = run(mobilenet, ("minmax", "mse"))
    best = max(figures, key=figures.get)
    assert figures[best] >= 25.0, figures
    errors, quantized = results[best]
    assert sum(isinstance(layer, FakeQuant) for layer in quantized.layers) == 35
    assert all(e.sqnr_db > 15 and e.cosine > 0.98 for e in errors.values())
    assert_unchanged(model, before)
    assert_roundtrip(quantized, test[:4], tmp_path)


@pytest.mark.slow
def test_every_method(mobilenet):
    """The four methods (figures in docs/quantization.md); entropy clips hardest, and loses here."""
    results, figures = run(mobilenet, ("minmax", "percentile", "entropy", "mse"))
    assert max(figures.values()) >= 25.0 and min(figures.values()) > 15.0, figures
