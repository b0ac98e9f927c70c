"""keras_hub models: small random-weight configurations, nothing downloaded.

BERT and GPT-2 backbones (dict inputs, BERT also dict outputs) and a ResNet
image classifier (a keras_hub Task with the backbone nested inside): round
trip, `expose` of an inner layer and a `:pre` against references computed
without kerasurgery's layers, `.keras` round trip of the probe, and `collect`
over a few batches. Transformer blocks are subclassed layers (their attention
and feed-forward layers are called in Python code), so a block is one point:
its output is addressable, its insides are not.
"""

import keras
import numpy as np
import pytest

import kerasurgery as ks
from zoo import assert_roundtrip, assert_unchanged, eager_values, snapshot

keras_hub = pytest.importorskip("keras_hub")

SEQ, VOCAB = 6, 30


def text_inputs(n, *, segments, seed=0):
    rng = np.random.default_rng(seed)
    padding = np.ones((n, SEQ), "int32")
    padding[::2, -2:] = 0  # every other row is padded, so the mask matters
    data = {"token_ids": rng.integers(1, VOCAB, (n, SEQ)).astype("int32") * padding, "padding_mask": padding}
    if segments:
        data["segment_ids"] = (np.arange(SEQ) >= SEQ // 2).astype("int32")[None].repeat(n, 0)
    return data


def image_inputs(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 16, 16, 3)).astype("float32")


def bert():
    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=SEQ,
    )


def gpt2():
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=SEQ,
    )


def resnet_classifier():
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(16, 16, 3), name="backbone",
    )
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=3, activation="softmax")


def dense_of(model, name, x):
    """``x @ kernel + bias`` with the weights of Dense layer `name`: its value before the activation."""
    kernel, bias = model.get_layer(name).get_weights()
    return x @ kernel + bias


# name: (factory, data of n samples, points to expose, their references from eager node values)
CASES = {
    "bert": (
        bert,
        lambda n: text_inputs(n, segments=True),
        ["transformer_layer_0", "pooled_dense:pre"],
        lambda m, v: {"pooled_dense:pre": dense_of(m, "pooled_dense", v["get_item"][0])},
    ),
    "gpt2": (
        gpt2,
        lambda n: text_inputs(n, segments=False),
        ["transformer_layer_1"],
        lambda m, v: {},
    ),
    "resnet_classifier": (
        resnet_classifier,
        image_inputs,
        ["backbone/stack1_block0_2_conv", "backbone/stack1_block0_out:pre", "predictions:pre"],
        lambda m, v: {
            "backbone/stack1_block0_out:pre": v["backbone/stack1_block0_add"][0],  # an Activation's input
            "predictions:pre": dense_of(m, "predictions", v["output_dropout"][0]),
        },
    ),
}


@pytest.fixture(scope="module")
def built():
    """Each model built once for the module (building dominates the time)."""
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            cache[name] = CASES[name][0]()
        return cache[name]

    return get


def outputs(model, data):
    return keras.tree.map_structure(np.asarray, model(data, training=False))


def assert_same(a, b, atol=1e-6):
    keras.tree.assert_same_structure(a, b)
    for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_keeps_dict_inputs_and_outputs(name, built):
    model = built(name)
    data = CASES[name][1](4)
    before = snapshot(model)
    rebuilt = ks.to_model(ks.to_graph(model))
    if isinstance(model.input, dict):
        assert set(rebuilt.input) == set(model.input)
    assert type(rebuilt.output) is type(model.output)
    assert_same(outputs(rebuilt, data), outputs(model, data))
    assert {id(v) for v in rebuilt.weights} == {id(v) for v in model.weights}
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", sorted(CASES))
def test_expose_inner_and_pre_against_references(name, built, tmp_path):
    model = built(name)
    _, make_data, wanted, references = CASES[name]
    data = make_data(4)
    before = snapshot(model)
    probe = ks.expose(model, wanted, keep_outputs=True)
    got = outputs(probe, data)
    values = eager_values(model, data)
    expected = {a: values[a][0] for a in wanted if not a.endswith(":pre")}
    expected.update(references(model, values))
    assert set(expected) == set(wanted)
    for address in wanted:
        np.testing.assert_allclose(got[address], expected[address], atol=1e-5, rtol=1e-5, err_msg=address)
    own = outputs(model, data)
    for key, value in (own.items() if isinstance(own, dict) else [(model.output_names[0], own)]):
        np.testing.assert_allclose(got[key], value, atol=1e-6, err_msg=key)
    assert {id(v) for v in probe.weights} <= {id(v) for v in model.weights}
    assert_unchanged(model, before)
    assert_roundtrip(probe, data, tmp_path, f"{name}_probe")


def test_bert_pooled_output_is_tanh_of_pre(built):
    model = built("bert")
    data = text_inputs(4, segments=True)
    got = outputs(ks.expose(model, ["pooled_dense:pre", "pooled_dense"]), data)
    np.testing.assert_allclose(np.tanh(got["pooled_dense:pre"]), got["pooled_dense"], atol=1e-6)
    np.testing.assert_allclose(got["pooled_dense"], outputs(model, data)["pooled_output"], atol=1e-6)


def test_resnet_classifier_logits_and_nested_relu_pre(built):
    model = built("resnet_classifier")
    data = image_inputs(4)
    got = outputs(ks.expose(model, ["predictions:pre", "backbone/stack1_block0_out:pre", "backbone/stack1_block0_out"]), data)
    logits = got["predictions:pre"]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(-1, keepdims=True), outputs(model, data), atol=1e-6)
    np.testing.assert_allclose(np.maximum(got["backbone/stack1_block0_out:pre"], 0), got["backbone/stack1_block0_out"])


def test_gpt2_blocks_are_opaque_and_say_so(built):
    model = built("gpt2")
    assert ks.points(model, "*:pre") == []
    with pytest.raises(ks.AddressError, match="no ':pre' port"):
        ks.expose(model, ["transformer_layer_0:pre"])
    with pytest.raises(ks.AddressError, match="no ':scores' port"):
        ks.expose(model, ["transformer_layer_0:scores"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_collect_over_a_few_batches(name, built):
    model = built(name)
    _, make_data, wanted, _ = CASES[name]
    data = make_data(10)
    acts = ks.collect(model, data, wanted, batch_size=4, progress=False)  # 3 batches, the last short
    assert list(acts) == wanted
    probe = outputs(ks.expose(model, wanted), data)
    for address in wanted:
        assert acts[address].shape[0] == 10
        np.testing.assert_allclose(acts[address], probe[address], atol=1e-5, err_msg=address)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_split_activations(name, built, tmp_path):
    model = built(name)
    data = CASES[name][1](4)
    split = ks.split_activations(model) if ks.points(model, "*:pre") else ks.to_model(ks.to_graph(model))
    assert_same(outputs(split, data), outputs(model, data), atol=1e-5)
    assert_roundtrip(split, data, tmp_path, f"{name}_split")
