"""Patching keras_hub backbones: ablating an attention head of a BERT block, activation patching between runs.

Small random configurations, nothing downloaded (as tests/test_keras_hub_open.py).
Ablating one head of ``transformer_layer_0/self_attention_layer:scores``
opens the block and its (built-in) attention layer; the attention output
then equals numpy's softmax(QK^T/sqrt(d) + mask) with that head zeroed,
computed from the layer's own query/key/value/output kernels, and the
backbone's outputs equal the rest of the model fed that output. A block's
output from a clean run fed into a corrupted run gives the clean outputs.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_keras_hub_open import FAMILIES, _feeding, bert_text, numpy_tree, text
from zoo import assert_unchanged, snapshot, to_numpy

import kerasurgery as ks
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.to_keras import to_model
from kerasurgery.passes.expose import expose_pass
from kerasurgery.passes.patch import patch_pass
from kerasurgery.passes.patch_specs import patch_name

keras_hub = pytest.importorskip("keras_hub")

SCORES = "transformer_layer_0/self_attention_layer:scores"
ATTENTION = "transformer_layer_0/self_attention_layer"


@pytest.fixture(scope="module")
def bert():
    keras.utils.set_random_seed(0)
    model = FAMILIES["bert"][0]()
    rng = np.random.default_rng(3)
    for w in model.weights:  # non-zero biases and norm offsets: a dropped bias changes numbers
        if "bias" in w.path or "beta" in w.path:
            w.assign(rng.normal(0, 0.3, tuple(w.shape)).astype(w.dtype))
    return model


def softmax(logits, mask):
    logits = np.where(mask, logits, -1e9)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention_by_hand(layer, x, padding, head):
    """The MultiHeadAttention `layer` on `x` in numpy, with the weights of `head` set to zero."""
    q, k, v = (np.einsum("btd,dhk->bthk", x, to_numpy(d.kernel)) + to_numpy(d.bias)
               for d in (layer._query_dense, layer._key_dense, layer._value_dense))
    logits = np.einsum("bshk,bthk->bhts", k, q / np.sqrt(q.shape[-1]))
    scores = softmax(logits, padding.astype(bool)[:, None, None, :])
    scores[:, head] = 0.0
    context = np.einsum("bhts,bshk->bthk", scores, v)
    out = layer._output_dense
    return np.einsum("bthk,hkd->btd", context, to_numpy(out.kernel)) + to_numpy(out.bias)


@pytest.mark.backend
@pytest.mark.parametrize("head", [0, 1])
def test_ablating_one_head_of_a_bert_block_equals_numpy(bert, head, tmp_path):
    before = snapshot(bert)
    data = bert_text(3, 6)
    mask = np.arange(2)[:, None, None] == head  # (heads, 1, 1): True for the ablated head
    patches = {SCORES: ("ablate", mask)}
    block_input = _feeding(ks.to_graph(bert), "transformer_layer_0")
    x = numpy_tree(ks.expose(bert, [block_input])(data))[block_input]
    layer = bert.get_layer("transformer_layer_0")._self_attention_layer
    expected = attention_by_hand(layer, x, data["padding_mask"], head)

    graph = patch_pass(graph_for(bert, [SCORES], open=[SCORES]), patches)
    probe = to_model(expose_pass(graph, [ATTENTION, SCORES]))
    got = numpy_tree(probe(data))
    np.testing.assert_allclose(got[ATTENTION], expected, atol=2e-5, rtol=1e-4)
    assert np.all(got[SCORES][:, head] == 0)  # the address now names the patched weights
    np.testing.assert_allclose(got[SCORES][:, 1 - head].sum(-1), 1.0, atol=1e-6)

    ablated = ks.patch(bert, patches)
    rest = ks.patch(bert, {ATTENTION: "input"})  # the backbone after the attention output, fed numpy's
    outputs = numpy_tree(ablated(data))
    reference = numpy_tree(rest({**data, patch_name(ATTENTION, "input"): expected}))
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(outputs[key], reference[key], atol=2e-5, rtol=1e-4)
    assert not np.allclose(outputs["sequence_output"], numpy_tree(bert(data))["sequence_output"], atol=1e-3)
    path = tmp_path / "ablated.keras"
    ablated.save(path)
    loaded = numpy_tree(keras.saving.load_model(path)(data))
    np.testing.assert_allclose(loaded["sequence_output"], outputs["sequence_output"], atol=1e-6)
    assert_unchanged(bert, before)


def test_a_clean_block_output_patched_into_a_corrupted_run(bert):
    """Block 0's clean output fed into a corrupted run: block 1 and the pooler then give the clean outputs."""
    clean, corrupted = bert_text(2, 6, seed=1), bert_text(2, 6, seed=2)
    cached = numpy_tree(ks.expose(bert, ["transformer_layer_0"])(clean))["transformer_layer_0"]
    patched = ks.patch(bert, {"transformer_layer_0": "input"})
    got = numpy_tree(patched({**corrupted, "transformer_layer_0_input": cached}))
    # the second block reads the cached value, but its padding mask is the corrupted run's (the same here)
    np.testing.assert_array_equal(clean["padding_mask"], corrupted["padding_mask"])
    expected = numpy_tree(bert(clean))
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
        assert not np.allclose(numpy_tree(bert(corrupted))[key], expected[key], atol=1e-3)


def test_zeroed_scores_of_a_custom_attention_layer_leave_the_output_bias():
    """GPT-2's attention is keras_hub's own layer (opened on demand): zero weights give its output bias."""
    keras.utils.set_random_seed(0)
    gpt2 = FAMILIES["gpt2"][0]()
    point = "transformer_layer_0/self_attention:scores"
    graph = patch_pass(graph_for(gpt2, [point], open=[point]), {point: "zero"})
    out = numpy_tree(to_model(expose_pass(graph, ["transformer_layer_0/self_attention"]))(text(2, 5)))
    bias = to_numpy(gpt2.get_layer("transformer_layer_0")._self_attention_layer._output_dense.bias)
    np.testing.assert_allclose(out["transformer_layer_0/self_attention"], np.broadcast_to(bias, (2, 5, 8)),
                               atol=1e-6)
