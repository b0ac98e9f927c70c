"""keras_hub backbones opened: every block's attention scores and feed-forward pre-activations.

Small random configurations, nothing downloaded. For BERT, GPT-2 (causal),
ViT and Gemma: ``open=True`` opens every block; the opened model reproduces
the backbone at two batch sizes and sequence lengths; every block lists its
``:scores`` (and, where its feed-forward layer has a fused activation, its
``:pre``); the scores equal an independent reference (the block's own
``return_attention_scores=True``, the attention layer called directly, or
softmax(QK^T/sqrt(d) + mask) from the block's query and key projections); the
feed-forward ``:pre`` equals ``x @ W + b``; ``collect`` and ``calibrate`` of
opened points agree with the probe; opened models save and load back.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from zoo import assert_unchanged, snapshot, to_numpy

import kerasurgery as ks
from kerasurgery.ir.edits import input_feed

keras_hub = pytest.importorskip("keras_hub")

VOCAB = 30


def text(n, length, seed=0):
    rng = np.random.default_rng(seed)
    padding = np.ones((n, length), "int32")
    padding[::2, -2:] = 0  # every other row padded: the mask matters
    return {"token_ids": rng.integers(1, VOCAB, (n, length)).astype("int32") * padding, "padding_mask": padding}


def bert_text(n, length, seed=0):
    data = text(n, length, seed)
    data["segment_ids"] = (np.arange(length) >= length // 2).astype("int32")[None].repeat(n, 0)
    return data


def images(n, length=None, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 16, 16, 3)).astype("float32")


FAMILIES = {
    "bert": (lambda: keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=8,
                                                   intermediate_dim=16, max_sequence_length=8), bert_text,
             "transformer_layer_{}/self_attention_layer:scores", "transformer_layer_{}/feedforward_intermediate_dense:pre"),
    "gpt2": (lambda: keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=8,
                                                   intermediate_dim=16, max_sequence_length=8), text,
             "transformer_layer_{}/self_attention:scores", "transformer_layer_{}/feedforward_intermediate_dense:pre"),
    "vit": (lambda: keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2,
                                                 hidden_dim=8, mlp_dim=16), images,
            "vit_encoder/transformer_block_{}/mha:scores", "vit_encoder/transformer_block_{}/mlp/dense_1:pre"),
    "gemma": (lambda: keras_hub.models.GemmaBackbone(vocabulary_size=VOCAB, num_layers=2, num_query_heads=2,
                                                     num_key_value_heads=1, hidden_dim=8, intermediate_dim=16,
                                                     head_dim=4), text,
              "decoder_block_{}/attention:scores", None),
}
BLOCKS = {"bert": (0, 1), "gpt2": (0, 1), "vit": (1, 2), "gemma": (0, 1)}


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            model = FAMILIES[name][0]()
            rng = np.random.default_rng(3)
            for w in model.weights:  # non-zero biases and norm offsets: a dropped bias changes numbers
                if "bias" in w.path or "beta" in w.path:
                    w.assign(rng.normal(0, 0.3, tuple(w.shape)).astype(w.dtype))
            cache[name] = model
        return cache[name]

    return get


def numpy_tree(value):
    return keras.tree.map_structure(to_numpy, value)


def scores_points(name):
    return [FAMILIES[name][2].format(i) for i in BLOCKS[name]]


@pytest.mark.backend
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_block_opens_and_reproduces_the_backbone(name, built):
    model = built(name)
    before = snapshot(model)
    graph = ks.to_graph(model, open=True)
    assert graph.graph["closed"] == {}
    listed = ks.points(graph)
    for point in scores_points(name):
        assert point in listed
    if FAMILIES[name][3]:
        for i in BLOCKS[name]:
            assert FAMILIES[name][3].format(i) in listed
    rebuilt = ks.to_model(graph)
    data_of = FAMILIES[name][1]
    for n, length in [(2, 5), (3, 8)]:
        data = data_of(n, length)
        expected, got = numpy_tree(model(data)), numpy_tree(rebuilt(data))
        for a, b in zip(keras.tree.flatten(expected), keras.tree.flatten(got)):
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
    assert_unchanged(model, before)


def _feeding(graph, key, slot="0"):
    """The address of the value feeding argument `slot` of node `key`."""
    for parent, _, edge in graph.in_edges(key, data=True):
        for index, s in edge["feeds"]:
            if s == slot or s == "query" and slot == "0":
                return parent if len(graph.nodes[parent]["output_shapes"]) == 1 else f"{parent}[{index}]"
    raise AssertionError(f"no feed of {key}:{slot}")


def _softmax(logits, mask):
    logits = np.where(mask, logits, -1e9)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _causal(padding):
    length = padding.shape[1]
    causal = np.tril(np.ones((length, length), bool))
    return causal[None] & padding.astype(bool)[:, None, :]


@pytest.mark.backend
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_scores_of_every_block_equal_an_independent_reference(name, built):
    model = built(name)
    graph = ks.to_graph(model, open=True)
    data = FAMILIES[name][1](3, 6)
    for i, point in zip(BLOCKS[name], scores_points(name)):
        got = None
        if name == "bert":  # the block's own return_attention_scores=True
            block_input = _feeding(ks.to_graph(model), f"transformer_layer_{i}")
            out = numpy_tree(ks.expose(model, [point, block_input])(data))
            _, scores = model.get_layer(f"transformer_layer_{i}")(
                out[block_input], padding_mask=data["padding_mask"], return_attention_scores=True)
            reference, got = to_numpy(scores), out[point]
        elif name == "vit":  # the attention layer called directly on its input
            attention = f"vit_encoder/transformer_block_{i}/mha"
            x = _feeding(graph, attention)
            out = numpy_tree(ks.expose(model, [point, x])(data))
            layer = graph.nodes[attention]["op"]
            _, scores = layer(out[x], out[x], return_attention_scores=True)
            reference, got = to_numpy(scores), out[point]
        elif name == "gpt2":  # softmax(q k^T / sqrt(d)) under the causal and padding masks
            base = f"transformer_layer_{i}/self_attention"
            out = numpy_tree(ks.expose(model, [point, f"{base}/query", f"{base}/key"])(data))
            q, k = out[f"{base}/query"], out[f"{base}/key"]
            logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
            reference, got = _softmax(logits, _causal(data["padding_mask"])[:, None]), out[point]
        else:  # gemma: grouped queries (kv heads, groups), rotary q and k
            einsum = f"decoder_block_{i}/attention/einsum@0"
            q_at, k_at = _feeding(graph, einsum, "0"), _feeding(graph, einsum, "1")
            out = numpy_tree(ks.expose(model, [point, q_at, k_at])(data))
            logits = np.einsum("btkgh,bskh->bkgts", out[q_at], out[k_at])
            reference, got = _softmax(logits, _causal(data["padding_mask"])[:, None, None]), out[point]
        np.testing.assert_allclose(got, reference, atol=2e-5, rtol=1e-4, err_msg=point)


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit"])
def test_feed_forward_pre_is_x_at_w_plus_b(name, built):
    model = built(name)
    graph = ks.to_graph(model, open=True)
    data = FAMILIES[name][1](2, 7)
    for i in BLOCKS[name]:
        point = FAMILIES[name][3].format(i)
        dense = point.removesuffix(":pre")
        x = _feeding(graph, dense)
        out = numpy_tree(ks.expose(model, [point, x])(data))
        op = graph.nodes[dense]["op"]
        expected = out[x] @ to_numpy(op.kernel) + to_numpy(op.bias)
        np.testing.assert_allclose(out[point], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_collect_and_calibrate_agree_with_the_probe(name, built):
    model = built(name)
    points = scores_points(name) + [FAMILIES[name][3].format(0)]
    data = FAMILIES[name][1](6, 6)
    probe = numpy_tree(ks.expose(model, points)(data))
    acts = ks.collect(model, data, points, batch_size=4)
    stats = ks.calibrate(model, data, points, batch_size=4)
    for p in points:
        np.testing.assert_allclose(acts[p], probe[p], atol=1e-6)
        assert stats[p].max == pytest.approx(float(probe[p].max()), abs=1e-6)
        assert stats[p].mean == pytest.approx(float(probe[p].mean()), abs=1e-5)


@pytest.mark.parametrize("name, layer", [("gemma", "'decoder_block_0/pre_attention_norm' \\(RMSNormalization\\)"),
                                         ("vit", "'vit_encoder/transformer_block_1/mlp' \\(MLP\\)")])
def test_an_opened_layer_keras_cannot_save_is_named(name, layer, built, tmp_path):
    """Layers with no config of their own (only their block recreates them): saving names the opened point."""
    probe = ks.expose(built(name), scores_points(name))
    with pytest.raises(ks.TransformError, match=layer):
        probe.save(tmp_path / f"{name}.keras")


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_opened_model_and_probe_save_and_load(name, built, tmp_path):
    model = built(name)
    data = FAMILIES[name][1](2, 6)
    probe = ks.expose(model, scores_points(name), keep_outputs=True)
    path = tmp_path / f"{name}.keras"
    probe.save(path)
    loaded = keras.saving.load_model(path)
    for key, value in numpy_tree(probe(data)).items():
        np.testing.assert_allclose(numpy_tree(loaded(data))[key], value, atol=1e-6)


def test_gpt2_first_token_attends_only_to_itself(built):
    scores = to_numpy(ks.expose(built("gpt2"), ["transformer_layer_0/self_attention:scores"])(text(2, 5))[
        "transformer_layer_0/self_attention:scores"])
    np.testing.assert_allclose(scores[:, :, 0, 0], 1.0, atol=1e-6)
    assert np.all(scores[:, :, 0, 1:] == 0) and np.all(np.triu(scores[0, 0], 1) == 0)
