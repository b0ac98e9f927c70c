"""keras.applications models (weights=None, small inputs): round trip and transforms.

A few representative models run in the default suite; the rest are marked
slow (`pytest -m slow`).
"""

import keras
import numpy as np
import pytest

import kerasurgery as ks
from kerasurgery import kinds
from zoo import assert_roundtrip, assert_unchanged, snapshot

A = keras.applications
FAST = {
    "MobileNetV3Small": (A.MobileNetV3Small, 32),
    "ConvNeXtTiny": (A.ConvNeXtTiny, 32),
}
SLOW = {
    "MobileNetV2": (A.MobileNetV2, 32),
    "MobileNet": (A.MobileNet, 32),
    "ResNet50": (A.ResNet50, 32),
    "ResNet50V2": (A.ResNet50V2, 32),
    "EfficientNetB0": (A.EfficientNetB0, 32),
    "EfficientNetV2B0": (A.EfficientNetV2B0, 32),
    "DenseNet121": (A.DenseNet121, 32),
    "VGG16": (A.VGG16, 32),
    "Xception": (A.Xception, 71),
    "InceptionV3": (A.InceptionV3, 75),
    "NASNetMobile": (A.NASNetMobile, 32),
    "MobileNetV3Large": (A.MobileNetV3Large, 32),
}
CASES = [pytest.param(n, *spec, id=n) for n, spec in FAST.items()] + [
    pytest.param(n, *spec, id=n, marks=pytest.mark.slow) for n, spec in SLOW.items()
]


def build(factory, size):
    model = factory(weights=None, input_shape=(size, size, 3), classes=10)
    data = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype("float32")
    return model, data


def run(model, data):
    return np.asarray(model(data, training=False))


@pytest.mark.parametrize("name, factory, size", CASES)
def test_application(name, factory, size, tmp_path):
    model, data = build(factory, size)
    before = snapshot(model)
    expected = run(model, data)

    rebuilt = ks.to_model(ks.to_graph(model))
    np.testing.assert_allclose(run(rebuilt, data), expected, atol=1e-5)

    split = ks.split_activations(model)
    np.testing.assert_allclose(run(split, data), expected, atol=1e-5)
    assert not [x.name for x in split._flatten_layers(include_self=False) if kinds.fused_activation(x) is not None]

    last = model.layers[-1]
    logits = ks.expose(model, [f"{last.name}:pre"]).predict(data, verbose=0)[f"{last.name}:pre"]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(-1, keepdims=True), expected, atol=1e-5)

    pre = ks.points(model, "*:pre")
    probe = ks.expose(model, pre, keep_outputs=True)
    out = probe.predict(data, verbose=0)
    np.testing.assert_allclose(out[model.output_names[0]], expected, atol=1e-5)
    assert all(np.isfinite(out[p]).all() for p in pre)

    assert_unchanged(model, before)
    assert_roundtrip(split, data, tmp_path, "split")


def test_transfer_learning_inner_layers(tmp_path):
    """The Keras-native way fails with 'not connected to inputs'; expose works."""
    base = A.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False)
    base.trainable = False
    x = keras.Input((32, 32, 3), name="image")
    h = base(x, training=False)
    y = keras.layers.Dense(4, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(h))
    model = keras.Model(x, y)
    data = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    with pytest.raises(ValueError):
        keras.Model(model.input, base.get_layer("block_13_expand_relu").output)(data)
    address = f"{base.name}/block_13_expand_relu"
    assert address in ks.points(model)
    probe = ks.expose(model, [address, f"{base.name}/block_13_expand_relu:pre", "head:pre"])
    out = probe.predict(data, verbose=0)
    direct = keras.Model(base.input, base.get_layer("block_13_expand_relu").output).predict(data, verbose=0)
    np.testing.assert_allclose(out[address], direct, atol=1e-5)
    np.testing.assert_allclose(np.clip(out[f"{address}:pre"], 0, 6), direct, atol=1e-5)
    assert_roundtrip(probe, data, tmp_path)
