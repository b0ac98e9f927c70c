"""Quantized models (``model.quantize(mode)``): split, expose ``:pre``, taps, probe pairs, collect.

``:pre`` of a quantized Dense or EinsumDense is the layer's own quantized
arithmetic without the activation. The reference is independent of
kerasurgery: the same model with that layer's activation set to linear,
quantized the same way by Keras itself.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kerasurgery as ks
from kerasurgery.layers import PreActivation
from zoo import assert_roundtrip, assert_same_outputs, assert_unchanged, predict, snapshot

RNG = np.random.default_rng(5)
X = RNG.normal(size=(6, 8)).astype("float32")
TOKENS = RNG.integers(0, 12, (6, 5)).astype("int32")
MODES = ["int8", "int4", "float8"]


def dense_model(out_activation="softmax"):
    keras.utils.set_random_seed(3)
    x = keras.Input((8,), name="x")
    h = layers.Dense(16, activation="relu", bias_initializer="ones", name="d1")(x)
    h = layers.EinsumDense("ab,bc->ac", output_shape=12, bias_axes="c", activation="gelu", name="ein")(h)
    y = layers.Dense(4, activation=out_activation, bias_initializer="ones", name="out")(h)
    return keras.Model(x, y, name="quantized_mlp")


def embedding_model(out_activation="sigmoid"):
    keras.utils.set_random_seed(4)
    x = keras.Input((5,), dtype="int32", name="tokens")
    h = layers.Embedding(12, 8, name="embed")(x)
    h = layers.GlobalAveragePooling1D(name="pool")(h)
    y = layers.Dense(3, activation=out_activation, name="out")(h)
    return keras.Model(x, y, name="quantized_embedding")


MODELS = {"dense": (dense_model, X), "embedding": (embedding_model, TOKENS)}


def quantized(factory, mode, **kwargs):
    model = factory(**kwargs)
    model.quantize(mode)
    return model


def _cases():
    for name in sorted(MODELS):
        for mode in MODES:
            if name == "embedding" and mode == "float8":
                continue  # Keras quantizes Embedding to int8 and int4 only
            yield pytest.param(name, mode, id=f"{name}-{mode}")


@pytest.mark.backend
@pytest.mark.parametrize("name,mode", list(_cases()))
def test_pre_of_a_quantized_layer_is_its_quantized_arithmetic_without_the_activation(name, mode, tmp_path):
    factory, data = MODELS[name]
    model = quantized(factory, mode)
    assert model.get_layer("out").quantization_mode == mode
    before = snapshot(model)
    probe = ks.expose(model, ["out:pre", "out"])
    assert_unchanged(model, before)
    got = predict(probe, data)
    linear = quantized(factory, mode, out_activation="linear")  # Keras's own quantized call, no activation
    np.testing.assert_allclose(got["out:pre"], predict(linear, data), atol=1e-5)
    np.testing.assert_allclose(got["out"], predict(model, data), atol=1e-6)
    assert not np.allclose(got["out:pre"], got["out"], atol=1e-3)
    loaded = assert_roundtrip(probe, data, tmp_path)
    assert loaded.get_layer("out_pre").layer.quantization_mode == mode


@pytest.mark.backend
@pytest.mark.parametrize("name,mode", list(_cases()))
def test_rewrites_of_a_quantized_model_equal_it(name, mode, tmp_path):
    factory, data = MODELS[name]
    model = quantized(factory, mode)
    before = snapshot(model)
    rewrites = {
        "split": ks.split_activations(model),
        "taps": ks.insert_taps(model, ["out:pre", "out"]),
        "pair": ks.probe_pair(model, ["out:pre"])[0],
        "pair_copy": ks.probe_pair(model, ["out:pre"], copy=True)[0],
    }
    assert_unchanged(model, before)
    split = rewrites["split"]
    assert split.get_layer("out").quantization_mode == mode
    assert split.get_layer("out_activation").dtype_policy.quantization_mode is None
    for label, rewritten in rewrites.items():
        assert_same_outputs(model, rewritten, data, atol=1e-6)
        loaded = assert_roundtrip(rewritten, data, tmp_path, name=label)
        assert_same_outputs(model, loaded, data, atol=1e-6)
    assert_unchanged(model, before)


@pytest.mark.backend
@pytest.mark.parametrize("mode", MODES)
def test_every_point_of_a_quantized_model(mode):
    """expose every address, and collect the same points through the compiled step."""
    model = quantized(dense_model, mode)
    everything = ks.points(model)
    assert {"d1:pre", "ein:pre", "out:pre"} <= set(everything)
    eager = predict(ks.expose(model, everything), X)
    collected = ks.collect(model, X, everything, batch_size=4)
    for address in everything:
        np.testing.assert_allclose(collected[address], eager[address], atol=1e-5, err_msg=address)
    for name, fn in (("d1", "relu"), ("ein", "gelu"), ("out", "softmax")):
        act = keras.activations.get(fn)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(act(eager[f"{name}:pre"])), eager[name], atol=1e-5, err_msg=name
        )


def test_pre_refuses_an_unknown_quantization_mode():
    model = dense_model()
    layer = model.get_layer("out")
    view = object.__new__(type(layer))
    view.__dict__.update(layer.__dict__)
    view.__dict__["_dtype_policy"] = type("Policy", (), {"quantization_mode": "int2", "name": "int2"})()
    with pytest.raises(ks.TransformError, match="Expected a layer whose activation.*int8.*Received"):
        PreActivation(view)
