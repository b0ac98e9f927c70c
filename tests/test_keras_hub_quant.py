"""The quantization workbench on keras_hub transformers (small random configs, nothing downloaded).

BERT and GPT-2: calibrate every ``:pre`` inside the blocks (opened on
demand) and every block's attention scores, fake-quantize them at 8 bits,
measure the error per point; the figures equal numpy's on the values
collected from both models; the quantized model saves and loads back with
equal outputs, and the backbone is unchanged.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from zoo import assert_roundtrip, assert_unchanged, snapshot

import kerasurgery as ks
from kerasurgery.quant.error import quantizer_points

keras_hub = pytest.importorskip("keras_hub")

VOCAB = 30


def text(n, length, seed, segments=False):
    rng = np.random.default_rng(seed)
    padding = np.ones((n, length), "int32")
    padding[::2, -2:] = 0  # every other row padded
    data = {"token_ids": rng.integers(1, VOCAB, (n, length)).astype("int32") * padding, "padding_mask": padding}
    if segments:
        data["segment_ids"] = (np.arange(length) >= length // 2).astype("int32")[None].repeat(n, 0)
    return data


BACKBONES = {
    "bert": (lambda: keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=8,
                                                   intermediate_dim=16, max_sequence_length=8), True),
    "gpt2": (lambda: keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=8,
                                                   intermediate_dim=16, max_sequence_length=8), False),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_pre_and_scores_at_8_bits(name, tmp_path):
    keras.utils.set_random_seed(3)
    make, segments = BACKBONES[name]
    model = make()
    before = snapshot(model)
    calibration, test = text(48, 8, 0, segments), text(24, 8, 1, segments)
    points = [p for p in ks.points(model, open=True) if p.endswith((":pre", ":scores"))]
    assert sum(p.endswith(":scores") for p in points) == 2 and any("feedforward" in p for p in points)
    stats = ks.calibrate(model, calibration, points)
    quantized = ks.fake_quantize(model, stats.ranges("mse"), bits=8)
    errors = ks.quantization_error(model, quantized, test, batch_size=10)
    keys = quantizer_points(quantized)
    assert set(keys) == set(points)
    assert [a for a, e in errors.items() if not e.output] == list(keys)  # depth order
    floats = ks.collect(model, test, list(keys))
    quants = ks.collect(quantized, test, list(keys.values()))
    for point, key in keys.items():
        x, q = floats[point].astype(np.float64), quants[key].astype(np.float64)
        sqnr = 10 * np.log10(np.sum(x * x) / np.sum((x - q) ** 2))
        np.testing.assert_allclose(errors[point].sqnr_db, sqnr, rtol=1e-3, err_msg=point)
        assert errors[point].sqnr_db > 30, (point, errors[point])
    outputs = [e for e in errors.values() if e.output]
    assert outputs and all(e.sqnr_db > 25 and e.cosine > 0.99 for e in outputs)
    print(f"\n{name}:\n{errors.table()}")
    assert_unchanged(model, before)
    assert_roundtrip(quantized, test, tmp_path)
