"""Copies carry all layer state: adapted preprocessing layers, vocabularies, LoRA factors, seeds.

`split_activations` and `probe_pair(copy=True)` build independent copies of
every layer. Each model here holds state that is not a plain weight (adapted
statistics, lookup tables, idf weights, unmerged LoRA factors): the copy must
compute what the original computes on real data, the original must be left
unchanged, and the copy must survive a `.keras` round trip.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kerasurgery as ks
from zoo import assert_roundtrip, assert_same_outputs, assert_unchanged, predict, snapshot

RNG = np.random.default_rng(7)
FLOATS = RNG.normal(5.0, 3.0, (64, 4)).astype("float32")
INTS = RNG.integers(0, 30, (64, 3)).astype("int64")
WORDS = np.array([["red", "green", "blue"], ["blue", "blue", "cyan"], ["red", "zzz", "green"], ["plum", "red", "a"]] * 8)
TEXTS = np.array(["the cat sat on the mat", "a dog ran far", "the dog sat", "cats and dogs", "far far away"] * 6)


def _head(features, name="head"):
    return layers.Dense(3, activation="relu", bias_initializer="ones", name=name)(features)


def normalization_adapted():
    norm = layers.Normalization(name="norm")
    norm.adapt(FLOATS)
    x = keras.Input((4,), name="x")
    h = norm(x)
    return keras.Model(x, [h, _head(h)], name="norm_adapted")


def normalization_given():
    x = keras.Input((4,), name="x")
    h = layers.Normalization(mean=[1.0, 2.0, 3.0, 4.0], variance=[1.0, 4.0, 9.0, 16.0], name="norm")(x)
    return keras.Model(x, [h, _head(h)], name="norm_given")


def normalization_inverted():
    norm = layers.Normalization(invert=True, name="denorm")
    norm.adapt(FLOATS)
    x = keras.Input((4,), name="x")
    h = norm(x)
    return keras.Model(x, [h, _head(h)], name="norm_inverted")


def discretization():
    disc = layers.Discretization(num_bins=5, name="disc")
    disc.adapt(FLOATS)
    x = keras.Input((4,), name="x")
    bins = disc(x)
    h = layers.CategoryEncoding(5, output_mode="count", name="count")(bins)
    return keras.Model(x, [bins, _head(h)], name="discretization")


def integer_lookup():
    lookup = layers.IntegerLookup(output_mode="multi_hot", name="ilookup")
    lookup.adapt(INTS)
    x = keras.Input((3,), dtype="int64", name="x")
    h = lookup(x)
    return keras.Model(x, [h, _head(h)], name="integer_lookup")


def string_lookup():
    lookup = layers.StringLookup(output_mode="multi_hot", name="slookup")
    lookup.adapt(WORDS)
    x = keras.Input((3,), dtype="string", name="x")
    h = lookup(x)
    return keras.Model(x, [h, _head(h)], name="string_lookup")


def string_lookup_tf_idf():
    lookup = layers.StringLookup(output_mode="tf_idf", name="slookup")
    lookup.adapt(WORDS)
    x = keras.Input((3,), dtype="string", name="x")
    h = lookup(x)
    return keras.Model(x, [h, _head(h)], name="string_lookup_tf_idf")


def text_vectorization_tf_idf():
    vectorize = layers.TextVectorization(max_tokens=16, output_mode="tf_idf", name="vectorize")
    vectorize.adapt(TEXTS)
    x = keras.Input((), dtype="string", name="x")
    h = vectorize(x)
    return keras.Model(x, [h, _head(h)], name="text_tf_idf")


def text_vectorization_int():
    vectorize = layers.TextVectorization(max_tokens=16, output_sequence_length=6, name="vectorize")
    vectorize.adapt(TEXTS)
    x = keras.Input((), dtype="string", name="x")
    tokens = vectorize(x)
    h = layers.Embedding(16, 4, name="embed")(tokens)
    h = layers.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(x, [tokens, _head(h)], name="text_int")


def hashing():
    x = keras.Input((3,), dtype="string", name="x")
    h = layers.Hashing(num_bins=8, salt=1337, output_mode="multi_hot", name="hash")(x)
    return keras.Model(x, [h, _head(h)], name="hashing")


def category_encoding():
    x = keras.Input((3,), dtype="int64", name="x")
    h = layers.CategoryEncoding(num_tokens=30, output_mode="count", name="encode")(x)
    return keras.Model(x, [h, _head(h)], name="category_encoding")


PREPROCESSING = {
    "normalization_adapted": (normalization_adapted, FLOATS, True),
    "normalization_given": (normalization_given, FLOATS, True),
    "normalization_inverted": (normalization_inverted, FLOATS, True),
    "discretization": (discretization, FLOATS, True),
    "integer_lookup": (integer_lookup, INTS, False),
    "string_lookup": (string_lookup, WORDS, False),
    "string_lookup_tf_idf": (string_lookup_tf_idf, WORDS, False),
    "text_vectorization_tf_idf": (text_vectorization_tf_idf, TEXTS, False),
    "text_vectorization_int": (text_vectorization_int, TEXTS, False),
    "hashing": (hashing, WORDS, False),
    "category_encoding": (category_encoding, INTS, True),
}


def _params():
    for name, (_, _, any_backend) in sorted(PREPROCESSING.items()):
        marks = [pytest.mark.backend] if any_backend else []
        yield pytest.param(name, marks=marks, id=name)


def _copies(model):
    """Every independent copy kerasurgery makes: split, and both models of probe_pair(copy=True)."""
    split = ks.split_activations(model)
    training, checking = ks.probe_pair(model, ["head:pre", "head"], copy=True)
    return split, training, checking


@pytest.mark.parametrize("name", list(_params()))
def test_copy_of_preprocessing_layer_computes_what_the_original_does(name, tmp_path):
    factory, data, _ = PREPROCESSING[name]
    model = factory()
    before = snapshot(model)
    split, training, checking = _copies(model)
    assert_unchanged(model, before)
    assert_same_outputs(model, split, data)
    assert_same_outputs(model, training, data)
    reference = predict(ks.expose(model, ["head:pre", "head"]), data)
    got = predict(checking, data)
    for address in reference:
        np.testing.assert_allclose(got[address], reference[address], atol=1e-5, err_msg=address)
    # the copies are independent: no variable is shared with the original
    originals = {id(v) for v in model.variables}
    assert not originals & {id(v) for v in split.variables + training.variables}
    for i, copy in enumerate((split, training)):
        loaded = assert_roundtrip(copy, data, tmp_path, name=f"copy{i}")
        assert_same_outputs(model, loaded, data)
    assert_unchanged(model, before)


@pytest.mark.backend
@pytest.mark.parametrize("name", ["normalization_adapted", "normalization_given", "normalization_inverted"])
def test_copied_normalization_matches_numpy(name):
    model = PREPROCESSING[name][0]()
    mean, var = {
        "normalization_given": (np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 4.0, 9.0, 16.0])),
    }.get(name, (FLOATS.mean(0), FLOATS.var(0)))
    want = FLOATS * np.sqrt(var) + mean if name.endswith("inverted") else (FLOATS - mean) / np.sqrt(var)
    got = predict(ks.split_activations(model), FLOATS)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_copied_lookups_match_their_vocabulary():
    """The copy's multi-hot output follows the adapted vocabulary (an independent count)."""
    model = string_lookup()
    vocabulary = model.get_layer("slookup").get_vocabulary()
    got = predict(ks.split_activations(model), WORDS)[0]
    want = np.zeros((len(WORDS), len(vocabulary)), "float32")
    for row, words in enumerate(WORDS):
        for word in words:
            want[row, vocabulary.index(word) if word in vocabulary else 0] = 1.0
    np.testing.assert_array_equal(got, want)
    assert vocabulary[1] in ("red", "blue")  # adapted by frequency: not a default vocabulary


# ---------------------------------------------------------------------------
# state that `.keras` saving does not carry as is: LoRA factors, seed states


def lora_model():
    x = keras.Input((8,), name="x")
    dense = layers.Dense(4, activation="relu", name="d")
    conv_in = layers.Reshape((8, 1), name="reshape")(x)
    conv = layers.Conv1D(2, 3, activation="tanh", name="conv")
    h = dense(x)
    c = layers.Flatten(name="flat")(conv(conv_in))
    y = layers.Dense(2, name="out")(layers.Concatenate(name="cat")([h, c]))
    model = keras.Model(x, y, name="lora")
    for layer in (dense, conv):
        layer.enable_lora(2)
        layer.lora_kernel_b.assign(np.random.default_rng(1).normal(size=layer.lora_kernel_b.shape))
    return model


@pytest.mark.backend
def test_copy_keeps_lora_factors_and_trains_like_the_original(tmp_path):
    """Saving merges LoRA into the kernel and zeroes both factors (they could no longer train)."""
    model = lora_model()
    x = FLOATS[:16, :2].repeat(4, axis=1)
    y = np.random.default_rng(2).normal(size=(16, 2)).astype("float32")
    before = snapshot(model)
    split = ks.split_activations(model)
    training, _ = ks.probe_pair(model, ["d:pre"], copy=True)
    assert_unchanged(model, before)
    for copy in (split, training):
        assert_same_outputs(model, copy, x)
        for name in ("d", "conv"):
            for attr in ("kernel", "lora_kernel_a", "lora_kernel_b"):
                np.testing.assert_array_equal(
                    keras.ops.convert_to_numpy(getattr(copy.get_layer(name), attr)),
                    keras.ops.convert_to_numpy(getattr(model.get_layer(name), attr)),
                    err_msg=f"{name}.{attr}",
                )
    assert_roundtrip(split, x, tmp_path)
    # One SGD step on each copy and on the original: the same updated outputs.
    untrained = predict(model, x)
    for m in (split, training, model):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    losses = [float(m.train_on_batch(x, y)) for m in (split, training, model)]
    np.testing.assert_allclose(losses[:2], losses[2], rtol=1e-5)
    assert_same_outputs(model, split, x)
    assert_same_outputs(model, training, x)
    assert not np.allclose(predict(model, x), untrained, atol=1e-4)  # the step moved the model


@pytest.mark.backend
def test_copy_draws_the_same_dropout_masks():
    """Seed states are copied: in training mode the copy drops what the original drops.

    The original has run once, so its seed state is no longer the one its
    config would give a fresh layer (torch draws unseeded dropout from its
    global generator: the seed makes the mask follow the layer's state).
    """
    x = keras.Input((32,), name="x")
    h = layers.Dense(32, activation="relu", name="d")(x)
    model = keras.Model(x, layers.Dropout(0.5, seed=3, name="drop")(h))
    data = FLOATS[:8].repeat(8, axis=1)
    model(data, training=True)
    copy = ks.split_activations(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(copy(data, training=True)),
        keras.ops.convert_to_numpy(model(data, training=True)),
        atol=1e-6,
    )
