"""rank_channels / channel_scores: norms of kernel slices and activation statistics, against numpy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from zeroing import run

import kerasurgery as ks

pytestmark = pytest.mark.backend


def kernel(model, name, weight="kernel"):
    return next(np.array(keras.ops.convert_to_numpy(v)) for v in model.get_layer(name).weights if v.name == weight)


def _model():
    x = keras.Input((8, 8, 3), name="x")
    h = layers.Conv2D(6, 3, name="conv")(x)
    h = layers.ReLU(name="relu")(layers.BatchNormalization(name="bn")(h))
    h = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(h)
    h = layers.SeparableConv2D(5, 1, name="sep")(h)
    h = layers.Conv2DTranspose(4, 3, name="up")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    h = layers.Dense(7, name="dense")(h)
    return keras.Model(x, layers.Dense(2, name="out")(h))


@pytest.mark.parametrize("by", ["l1", "l2"])
def test_weight_norms(by):
    model = _model()
    norm = (lambda a, axes: np.abs(a).sum(axes)) if by == "l1" else (lambda a, axes: np.sqrt((a**2).sum(axes)))
    expected = {
        "conv": norm(kernel(model, "conv"), (0, 1, 2)),
        "dw": norm(kernel(model, "dw").reshape(3, 3, 12), (0, 1)),  # output c*2+j is kernel[..., c, j]
        "sep": norm(kernel(model, "sep", "pointwise_kernel"), (0, 1, 2)),
        "up": norm(kernel(model, "up"), (0, 1, 3)),  # (h, w, out, in)
        "dense": norm(kernel(model, "dense"), 0),
    }
    for point, scores in expected.items():
        np.testing.assert_allclose(ks.channel_scores(model, point, by=by), scores, rtol=1e-6)
        np.testing.assert_array_equal(ks.rank_channels(model, point, by=by), np.argsort(scores, kind="stable"))


def test_recurrent_units_sum_their_gates():
    x = keras.Input((5, 3), name="x")
    model = keras.Model(x, layers.LSTM(4, name="lstm")(x))
    k = kernel(model, "lstm")  # (3, 4 gates * 4 units)
    expected = np.abs(k).reshape(3, 4, 4).sum(axis=(0, 1))
    np.testing.assert_allclose(ks.channel_scores(model, "lstm"), expected, rtol=1e-6)


def test_embedding_dimensions():
    tokens = keras.Input((4,), dtype="int32", name="tokens")
    model = keras.Model(tokens, layers.Embedding(10, 5, name="embed")(tokens))
    np.testing.assert_allclose(ks.channel_scores(model, "embed"), np.abs(kernel(model, "embed", "embeddings")).sum(0),
                               rtol=1e-6)


def test_activation_statistics_against_numpy():
    model = _model()
    data = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    stats = ks.calibrate(model, data, ["relu", "conv"], per_channel=True, sample=None, progress=False)
    relu = run(ks.expose(model, ["relu"]), data)["relu"].reshape(-1, 6)
    apoz = (relu == 0).mean(axis=0)
    np.testing.assert_allclose(ks.channel_scores(model, "conv", by="apoz", stats=stats["relu"]), 1 - apoz)
    np.testing.assert_array_equal(ks.rank_channels(model, "conv", by="apoz", stats=stats["relu"]),
                                  np.argsort(1 - apoz, kind="stable"))
    conv = run(ks.expose(model, ["conv"]), data)["conv"].reshape(-1, 6)
    np.testing.assert_allclose(ks.channel_scores(model, "conv", by="mean", stats=stats), conv.mean(0), rtol=1e-5,
                               atol=1e-6)


def test_delete_the_lowest_ranked():
    model = _model()
    weakest = ks.rank_channels(model, "dense")[:3]
    pruned = ks.delete_channels(model, "dense", weakest)
    np.testing.assert_array_equal(kernel(pruned, "dense"), np.delete(kernel(model, "dense"), weakest, axis=1))
    kept = np.abs(kernel(pruned, "dense")).sum(0)
    assert kept.min() >= np.abs(kernel(model, "dense")).sum(0)[weakest].max()


@pytest.mark.parametrize("kwargs,match", [
    ({"by": "l3"}, r"`by` among \['apoz', 'l1', 'l2', 'mean'\]\. Received: 'l3'"),
    ({"by": "apoz"}, r"Expected `stats` for by='apoz'"),
    ({"by": "mean", "stats": "x"}, r"result of kerasurgery.calibrate.*Received: str"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ks.TransformError, match=match):
        ks.channel_scores(_model(), "conv", **kwargs)


def test_bad_statistics():
    model = _model()
    data = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    per_tensor = ks.calibrate(model, data, ["relu"], progress=False)
    with pytest.raises(ks.TransformError, match=r"per-channel statistics\. Received: statistics of 'relu' per tensor"):
        ks.rank_channels(model, "conv", by="apoz", stats=per_tensor["relu"])
    per_channel = ks.calibrate(model, data, ["relu", "dw"], per_channel=True, progress=False)
    with pytest.raises(ks.TransformError, match=r"hold statistics of 'conv'\. Received: statistics of \['dw', 'relu'\]"):
        ks.rank_channels(model, "conv", by="apoz", stats=per_channel)
    with pytest.raises(ks.TransformError, match=r"statistics of 6 channels for 'conv'\. Received: 12 channels of 'dw'"):
        ks.rank_channels(model, "conv", by="mean", stats=per_channel["dw"])
    with pytest.raises(ks.TransformError, match=r"Dense, convolution, recurrent or Embedding layer.*'bn'"):
        ks.rank_channels(model, "bn")
