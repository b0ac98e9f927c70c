"""Every keras.applications model (weights=None, smallest input): round trip and transforms.

The models are listed from `keras.applications` itself, so none is forgotten.
Two representative models run in the default suite; the rest are marked slow
(`pytest -m slow`). `benchmarks/compat_table.py` runs the same checks and
writes docs/compatibility.md.
"""

import gc
import inspect

import keras
import numpy as np
import pytest

import kerasurgery as ks
from kerasurgery.layers import kinds
from reference import reference_points
from zoo import assert_roundtrip, assert_unchanged, snapshot

A = keras.applications
NAMES = sorted(n for n in dir(A) if n[:1].isupper() and inspect.isfunction(getattr(A, n)))
#: The smallest input side Keras accepts for each model; 32 for all others.
MIN_SIZE = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}
FAST = {
    "MobileNetV3Small": (A.MobileNetV3Small, 32),
    "ConvNeXtTiny": (A.ConvNeXtTiny, 32),
}
SLOW = {n: (getattr(A, n), MIN_SIZE.get(n, 32)) for n in NAMES if n not in FAST}
CASES = [pytest.param(n, *spec, id=n) for n, spec in FAST.items()] + [
    pytest.param(n, *spec, id=n, marks=pytest.mark.slow) for n, spec in SLOW.items()
]


@pytest.fixture
def free_memory():
    """Big models (ConvNeXtXLarge: 350M parameters) must not pile up in one process."""
    yield
    keras.backend.clear_session()
    gc.collect()


def build(factory, size):
    model = factory(weights=None, input_shape=(size, size, 3), classes=10)
    data = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype("float32")
    return model, data


def run(model, data):
    return np.asarray(model(data, training=False))


def test_every_application_is_covered():
    assert len(NAMES) >= 40
    assert set(FAST) | set(SLOW) == set(NAMES)
    for family in ("ConvNeXtXLarge", "DenseNet201", "EfficientNetB7", "EfficientNetV2L", "InceptionResNetV2",
                   "MobileNetV3Large", "NASNetLarge", "ResNet152V2", "VGG19", "Xception"):
        assert family in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_smallest_input(name):
    """One pixel less than the size used here is refused by Keras (before any layer is built)."""
    size = MIN_SIZE.get(name, 32)
    with pytest.raises(ValueError, match=f"at least {size}"):
        getattr(A, name)(weights=None, input_shape=(size - 1, size - 1, 3), classes=10)


@pytest.mark.parametrize("name, factory, size", CASES)
def test_application(name, factory, size, tmp_path, free_memory):
    model, data = build(factory, size)
    before = snapshot(model)
    expected = run(model, data)
    graph = ks.to_graph(model)
    references = reference_points(model, data)  # tests/reference.py: no resolver, no pass

    rebuilt = ks.to_model(graph)
    np.testing.assert_allclose(run(rebuilt, data), expected, atol=1e-5)
    assert {id(v) for v in rebuilt.weights} == {id(v) for v in model.weights}

    split = ks.split_activations(model)
    np.testing.assert_allclose(run(split, data), expected, atol=1e-5)
    assert not [x.name for x in split._flatten_layers(include_self=False) if kinds.fused_activation(x) is not None]
    assert not {id(v) for v in split.weights} & {id(v) for v in model.weights}

    last = f"{model.layers[-1].name}:pre"
    logits = np.asarray(ks.expose(model, [last])(data, training=False)[last])
    np.testing.assert_allclose(logits, references[last], atol=1e-5, rtol=1e-5)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(-1, keepdims=True), expected, atol=1e-5)

    pre = ks.points(model, "*:pre")
    out = ks.expose(model, pre, keep_outputs=True)(data, training=False)
    np.testing.assert_allclose(np.asarray(out[model.output_names[0]]), expected, atol=1e-5)
    for p in pre:
        np.testing.assert_allclose(np.asarray(out[p]), references[p], atol=1e-5, rtol=1e-5, err_msg=p)

    everything = ks.points(model)
    assert sorted(everything) == sorted(references)
    probe = ks.expose(model, everything)
    assert list(probe.output) == everything
    out = probe(data, training=False)
    for p in everything:
        np.testing.assert_allclose(np.asarray(out[p]), references[p], atol=1e-5, rtol=1e-5, err_msg=p)

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
