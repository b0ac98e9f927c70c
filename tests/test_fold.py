"""fold_batchnorm on every kind of layer it folds into, the cases it leaves, and the zoo.

The reference is the original model itself, run in inference, after its
BatchNormalizations were given random statistics (fresh ones are nearly the
identity, so folding them would prove nothing).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from keras import layers
from test_purity import freeze
from zeroing import randomize_batchnorms, run
from zoo import ZOO, assert_roundtrip, assert_same_outputs, assert_unchanged, sample_inputs, snapshot

import kerasurgery as ks
from kerasurgery.passes.fold import fold_batchnorm_pass

pytestmark = pytest.mark.backend

SHAPES = {1: (9, 3), 2: (7, 7, 3), 3: (5, 5, 5, 3)}


def _layer(kind, dims, bias):
    cls = getattr(layers, kind.format(d=dims))
    if kind.startswith("Depthwise"):
        return cls(3, depth_multiplier=2, use_bias=bias, name="layer")
    return cls(4, use_bias=bias, name="layer") if kind == "Dense" else cls(4, 3, use_bias=bias, name="layer")


CASES = [(k, d) for k in ("Conv{d}D", "Conv{d}DTranspose", "SeparableConv{d}D", "DepthwiseConv{d}D") for d in (1, 2, 3)
         if not (k.startswith(("Separable", "Depthwise")) and d == 3)] + [("Dense", 1)]


def folded(model, **kwargs):
    before = snapshot(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ks.fold_batchnorm(model, **kwargs)
    assert_unchanged(model, before)
    return result, [str(w.message) for w in caught if "fold_batchnorm" in str(w.message)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind,dims", CASES)
def test_every_layer_kind(kind, dims, bias):
    x = keras.Input(SHAPES[dims], name="x")
    h = layers.BatchNormalization(name="bn", center=bias, scale=not bias)(_layer(kind, dims, bias)(x))
    model = keras.Model(x, layers.Activation("tanh", name="act")(h))
    randomize_batchnorms(model)
    result, warned = folded(model)
    assert [type(layer).__name__ for layer in result.layers] == ["InputLayer", type(model.layers[1]).__name__,
                                                                 "Activation"]
    assert result.get_layer("layer").use_bias and not warned
    data = np.random.default_rng(0).normal(size=(3, *SHAPES[dims])).astype("float32")
    np.testing.assert_allclose(run(result, data), run(model, data), atol=1e-5)
    unfolded = run(keras.Model(x, model.get_layer("layer").output), data)
    assert np.abs(unfolded - run(keras.Model(x, h), data)).max() > 0.1  # the statistics mattered


def _kept_cases():
    x = keras.Input((6, 6, 3), name="x")
    a = layers.Conv2D(4, 3, activation="relu", name="fused")(x)
    a = layers.BatchNormalization(name="bn_after_relu")(a)
    b = layers.Conv2D(4, 3, name="twice_read")(x)
    b2 = layers.BatchNormalization(name="bn_shared_value")(b)
    shared = layers.Conv2D(4, 1, name="shared")
    c = layers.BatchNormalization(name="bn_after_shared")(shared(a))
    d = layers.BatchNormalization(name="bn_training")(layers.Conv2D(4, 3, name="conv_t")(x), training=True)
    e = layers.BatchNormalization(name="bn_after_add")(layers.Add(name="add")([b, b2]))
    f = layers.BatchNormalization(name="bn_folds")(layers.Conv2D(4, 3, name="plain")(x))
    h = layers.Concatenate(name="cat")([a, c, d, e, f, shared(b)])
    return keras.Model(x, h, name="kept")


def test_what_stays_and_why():
    model = _kept_cases()
    randomize_batchnorms(model)
    plan = ks.fold_plan(model)
    assert plan.folded == {"bn_folds": "plain"}
    assert plan.kept == {
        "bn_after_relu": "'fused' (Conv2D) applies activation 'relu' before it",
        "bn_shared_value": "the output of 'twice_read' (Conv2D) is also used elsewhere",
        "bn_after_shared": "'shared@0' (Conv2D) is a shared layer (called 2 times)",
        "bn_training": "it is called with training=True (batch statistics)",
        "bn_after_add": "it follows 'add' (Add), not a convolution or Dense",
    }
    result, warned = folded(model)
    assert len(warned) == 1 and "folded 1 BatchNormalization layer(s) and left 5" in warned[0]
    assert "'bn_after_relu': 'fused' (Conv2D) applies activation 'relu'" in warned[0]
    data = sample_inputs(model)
    np.testing.assert_allclose(run(result, data), run(model, data), atol=1e-5)
    assert "bn_folds" not in [layer.name for layer in result.layers]


def test_a_conv_at_the_output_is_not_folded():
    x = keras.Input((5, 5, 2), name="x")
    conv = layers.Conv2D(3, 3, name="conv")(x)
    model = keras.Model(x, [conv, layers.BatchNormalization(name="bn")(conv)])
    assert ks.fold_plan(model).kept == {"bn": "the output of 'conv' (Conv2D) is also used elsewhere"}


def test_nested_models_fold_inside(tmp_path):
    inner_x = keras.Input((6, 6, 2), name="inner_x")
    h = layers.BatchNormalization(name="inner_bn")(layers.Conv2D(3, 3, name="inner_conv")(inner_x))
    inner = keras.Model(inner_x, layers.ReLU(name="inner_relu")(h), name="encoder")
    x = keras.Input((6, 6, 2), name="x")
    y = layers.BatchNormalization(name="bn")(layers.Dense(2, name="head")(layers.Flatten(name="flat")(inner(x))))
    model = keras.Model(x, y)
    randomize_batchnorms(model)
    assert ks.fold_plan(model).folded == {"encoder/inner_bn": "encoder/inner_conv", "bn": "head"}
    result, warned = folded(model)
    assert not warned and not any(isinstance(la, layers.BatchNormalization) for la in result.layers)
    assert_same_outputs(model, result, sample_inputs(model))
    assert_roundtrip(result, sample_inputs(model), tmp_path)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo(name, tmp_path):
    model = ZOO[name]()
    randomize_batchnorms(model)
    data = sample_inputs(model)
    result, _ = folded(model)
    assert_same_outputs(model, result, data, atol=1e-5)
    assert not {id(v) for v in result.weights} & {id(v) for v in model.weights}
    assert result.output_names == getattr(model, "output_names", result.output_names)
    assert_roundtrip(result, data, tmp_path)


def test_the_pass_is_pure_and_well_formed():
    graph = ks.to_graph(_kept_cases())
    before = freeze(graph)
    result = fold_batchnorm_pass(graph)
    assert freeze(graph) == before
    ks.check_graph(result)
    assert "bn_folds" not in result and result.graph["fold"].folded == {"bn_folds": "plain"}
