"""`patch`: the value at points replaced by an array, zeros, a mean, a steered or ablated value, or an input.

Every kind is checked with numbers against a reference computed by hand
(numpy, or the model's own layers called on the replaced value): ``"input"``
fed the original's own value gives the original outputs exactly, over the
zoo (nested models, shared call sites, ``:pre``) and an opened custom layer;
``"zero"``, ``"mean"`` (at run time and from a calibration), arrays,
steering vectors and ablation masks equal the model rebuilt by hand with
that value replaced; ``:scores`` opens the attention layer, so ablating a
head changes the attention output as numpy says. Results keep the
original's variables, save to `.keras` and load back; the model is
unchanged; bad input raises a clear error and changes nothing.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_layer_edits import own_weights_only
from test_opening import CausalBlock, PositionalAdd, functional_with_custom_layers
from test_purity import freeze
from zoo import ZOO, assert_roundtrip, assert_unchanged, predict, sample_inputs, snapshot, to_numpy

import kerasurgery as ks
from kerasurgery.passes.patch import patch_pass
from kerasurgery.passes.patch_specs import patch_name

pytestmark = pytest.mark.backend

CUSTOM = {"PositionalAdd": PositionalAdd, "CausalBlock": CausalBlock}


def fed(data, values):
    """`data` with the new inputs `values` ({name: array}) added as `patch` adds them."""
    if isinstance(data, dict):
        return {**data, **values}
    return [*keras.tree.flatten(data), *values.values()]


def value_at(model, point, data):
    return predict(ks.expose(model, [point]), data)[point]


def assert_exactly(a, b):
    for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_array_equal(x, y)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def mlp_forward(model, x, at=None, change=lambda v: v):
    """numpy forward pass of the zoo's mlp, with `change` applied to the value at point `at`."""
    (w1, b1), (w2, b2), (w3, b3) = (model.get_layer(n).get_weights() for n in ("dense_1", "dense_2", "predictions"))
    h = x @ w1 + b1
    h = change(h) if at == "dense_1:pre" else h
    h = np.maximum(h, 0)
    h = change(h) if at == "dense_1" else h
    h = h @ w2 + b2
    h = change(h) if at == "dense_2:pre" else h
    h = np.tanh(h)
    h = change(h) if at == "dense_2" else h
    return softmax(h @ w3 + b3)


# ---------------------------------------------------------------------------
# "input": activation patching


INPUT_POINTS = {
    "mlp": ["dense_1:pre", "dense_2"], "cnn_bn": ["relu:pre", "sep"], "branches": ["a", "concat"],
    "shared": ["shared@1", "shared@0:pre"], "nested_functional": ["encoder/inner_dense", "encoder"],
    "nested_sequential": ["block/seq_bn"], "deep_nested": ["mid/leaf/leaf_dense:pre"],
    "siamese": ["encoder/proj@1"], "multi_io": ["da", "cat"], "raw_ops": ["add*"],
    "attention": ["mha:scores", "ln"], "dropout": ["drop"], "sequential_built": ["d1"],
    "recurrent": ["lstm[1]", "conv1d:pre"], "sequential_input": ["d1:pre"], "masked": ["bn"],
    "backbone": ["ffn:pre"], "cross_attention": ["q_proj:pre", "k_proj"],
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_input_fed_the_original_value_gives_the_original_outputs_exactly(name, tmp_path):
    assert set(INPUT_POINTS) == set(ZOO)
    model = ZOO[name]()
    data = sample_inputs(model)
    before = snapshot(model)
    points = [q for p in INPUT_POINTS[name] for q in (ks.points(model, p) if "*" in p else [p])]  # raw ops: add_N
    patched = ks.patch(model, {p: "input" for p in points})
    names = [patch_name(p, "input") for p in points]
    assert set(names) <= {t.name for t in patched.inputs} and len(patched.inputs) == len(model.inputs) + len(names)
    values = {n: value_at(model, p, data) for n, p in zip(names, points)}
    assert_exactly(predict(patched, fed(data, values)), predict(model, data))
    moved = predict(patched, fed(data, {n: v + 1 for n, v in values.items()}))  # the inputs are read
    assert not all(np.allclose(a, b) for a, b in zip(keras.tree.flatten(moved), keras.tree.flatten(predict(model, data))))
    own_weights_only(model, patched)
    loaded = assert_roundtrip(patched, fed(data, values), tmp_path)
    assert [t.name for t in loaded.inputs] == [t.name for t in patched.inputs]
    assert_unchanged(model, before)


def test_input_carries_a_value_from_one_run_into_another():
    """Clean run's dense_1 fed into a corrupted run: the output is the clean one's (mlp, one point cuts all)."""
    model = ZOO["mlp"]()
    clean, corrupted = sample_inputs(model, seed=1), sample_inputs(model, seed=2)
    patched = ks.patch(model, {"dense_1": "input"})
    out = predict(patched, [corrupted, value_at(model, "dense_1", clean)])
    np.testing.assert_allclose(out, predict(model, clean), atol=1e-6)
    assert not np.allclose(predict(model, corrupted), predict(model, clean), atol=1e-3)


def test_input_inside_an_opened_custom_layer(tmp_path):
    model = functional_with_custom_layers()
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    points = ["block/ffn:pre", "block/attention:scores"]
    patched = ks.patch(model, {p: "input" for p in points})
    values = {patch_name(p, "input"): value_at(model, p, x) for p in points}
    np.testing.assert_allclose(predict(patched, fed(x, values)), predict(model, x), atol=1e-6)
    with keras.saving.custom_object_scope(CUSTOM):
        assert_roundtrip(patched, fed(x, values), tmp_path)


# ---------------------------------------------------------------------------
# zero, arrays, means, steering, ablation: against references by hand


@pytest.mark.parametrize("point", ["dense_1", "dense_1:pre", "dense_2:pre", "dense_2"])
def test_zero_equals_numpy(point, tmp_path):
    model = ZOO["mlp"]()
    x = sample_inputs(model)
    patched = ks.patch(model, {point: "zero"})
    np.testing.assert_allclose(predict(patched, x), mlp_forward(model, x, point, np.zeros_like), atol=1e-6)
    assert_roundtrip(patched, x, tmp_path)
    at_output = ks.patch(model, {"predictions": "zero"})  # the output itself: its name is kept
    assert at_output.output_names == ["predictions"] and not predict(at_output, x).any()


def test_zero_in_nested_and_shared_models_equals_the_layers_called_by_hand():
    nested = ZOO["nested_functional"]()
    x = sample_inputs(nested)
    inner = nested.get_layer("encoder")
    h = inner.get_layer("inner_out")(inner.get_layer("inner_drop")(np.zeros((4, 8), "float32")))
    np.testing.assert_allclose(predict(ks.patch(nested, {"encoder/inner_dense": "zero"}), x),
                               to_numpy(nested.get_layer("head")(h)), atol=1e-6)
    shared = ZOO["shared"]()
    x = sample_inputs(shared)
    kernel, bias = shared.get_layer("shared").get_weights()
    h1 = np.maximum(x @ kernel + bias, 0)  # shared@1:pre zeroed: y = h1 + relu(0)
    np.testing.assert_allclose(predict(ks.patch(shared, {"shared@1:pre": "zero"}), x), h1, atol=1e-6)
    # shared@0 zeroed: both of its readers see 0, so y = 0 + relu(0 @ kernel + bias)
    np.testing.assert_allclose(predict(ks.patch(shared, {"shared@0": "zero"}), x), np.maximum(bias, 0)[None]
                               .repeat(4, 0), atol=1e-6)


def test_an_array_is_the_value_of_every_sample(tmp_path):
    model = ZOO["mlp"]()
    x = sample_inputs(model)
    value = np.linspace(-1, 1, 16).astype("float32")
    for given in (value, value[None], ("set", value)):
        patched = ks.patch(model, {"dense_1": given})
        np.testing.assert_allclose(predict(patched, x), mlp_forward(model, x, "dense_1", lambda h: value + 0 * h),
                                   atol=1e-6)
    assert_roundtrip(patched, x, tmp_path)


def test_mean_at_run_time_and_from_a_calibration(tmp_path):
    model = ZOO["mlp"]()
    x = sample_inputs(model, batch=6)
    patched = ks.patch(model, {"dense_1": "mean"})
    expected = mlp_forward(model, x, "dense_1", lambda h: h.mean(0, keepdims=True).repeat(len(h), 0))
    np.testing.assert_allclose(predict(patched, x), expected, atol=1e-6)
    assert_roundtrip(patched, x, tmp_path)
    calibration_data = sample_inputs(model, batch=20, seed=5)
    seen = value_at(model, "dense_2:pre", calibration_data)
    for per_channel, mean in [(False, seen.mean()), (True, seen.mean(0))]:
        stats = ks.calibrate(model, calibration_data, ["dense_2:pre"], per_channel=per_channel)
        patched = ks.patch(model, {"dense_2:pre": ("mean", stats)})
        expected = mlp_forward(model, x, "dense_2:pre", lambda h: mean + 0 * h)
        np.testing.assert_allclose(predict(patched, x), expected, atol=1e-5)
    assert_roundtrip(patched, x, tmp_path, name="calibrated")


def test_a_steering_vector_is_added(tmp_path):
    model = ZOO["mlp"]()
    x = sample_inputs(model)
    vector = np.random.default_rng(3).normal(size=8).astype("float32")
    patched = ks.patch(model, {"dense_2:pre": ("add", vector)})
    np.testing.assert_allclose(predict(patched, x), mlp_forward(model, x, "dense_2:pre", lambda h: h + vector),
                               atol=1e-6)
    assert_roundtrip(patched, x, tmp_path)
    cnn = ZOO["cnn_bn"]()  # one value per channel of a feature map
    x = sample_inputs(cnn)
    steer = np.arange(8, dtype="float32")
    by_hand = keras.Input((16, 16, 3))
    h = cnn.get_layer("bn")(cnn.get_layer("conv")(by_hand)) + steer
    for layer in cnn.layers[3:]:
        h = layer(h)
    np.testing.assert_allclose(predict(ks.patch(cnn, {"bn": ("add", steer)}), x),
                               predict(keras.Model(by_hand, h), x), atol=1e-5)


def test_an_ablation_mask_zeroes_units(tmp_path):
    model = ZOO["mlp"]()
    x = sample_inputs(model)
    mask = np.zeros(16, bool)
    mask[[0, 3, 7]] = True
    patched = ks.patch(model, {"dense_1": ("ablate", mask)})
    np.testing.assert_allclose(predict(patched, x), mlp_forward(model, x, "dense_1", lambda h: np.where(mask, 0, h)),
                               atol=1e-6)
    loaded = assert_roundtrip(patched, x, tmp_path)
    assert not any(w.trainable for w in loaded.get_layer(patch_name("dense_1", "ablate")).weights)


def test_ablating_a_head_of_the_scores_opens_the_attention_layer(tmp_path):
    """mha:scores of head 1 zeroed: the attention output is numpy's, from the layer's own projections."""
    model = ZOO["attention"]()
    data = sample_inputs(model)
    before = snapshot(model)
    mask = np.array([False, True])[:, None, None]  # (heads, 1, 1)
    patched = ks.patch(model, {"mha:scores": ("ablate", mask)})
    mha = model.get_layer("mha")
    h = value_at(model, "embed", data)
    q, k, v = (np.einsum("btd,dhk->bthk", h, to_numpy(d.kernel)) + to_numpy(d.bias)
               for d in (mha._query_dense, mha._key_dense, mha._value_dense))
    logits = np.einsum("bshk,bthk->bhts", k, q / np.sqrt(4))
    scores = softmax(np.where(data[1][:, None], logits, -1e9))
    scores[:, 1] = 0
    out = np.einsum("bthk,hkd->btd", np.einsum("bhts,bshk->bthk", scores, v), to_numpy(mha._output_dense.kernel))
    out += to_numpy(mha._output_dense.bias)
    rest = ks.patch(model, {"mha": "input"})  # the rest of the model, fed the attention output
    np.testing.assert_allclose(predict(patched, data), predict(rest, [*data, out]), atol=1e-5)
    assert not np.allclose(predict(patched, data), predict(model, data), atol=1e-4)
    own_weights_only(model, patched, patched.get_layer("mha_scores_ablate"))
    assert_roundtrip(patched, data, tmp_path)
    assert_unchanged(model, before)


def test_globs_patch_every_matching_point():
    """Every :pre zeroed: relu(0) = 0, tanh(0) = 0, softmax(0) = 1/3."""
    model = ZOO["mlp"]()
    np.testing.assert_allclose(predict(ks.patch(model, {"*:pre": "zero"}), sample_inputs(model)), 1 / 3, atol=1e-7)


# ---------------------------------------------------------------------------
# graphs, purity, bad input


def test_the_pass_leaves_its_input_graph_unchanged():
    graph = ks.to_graph(ZOO["branches"]())
    before = freeze(graph)
    result = patch_pass(graph, {"a": "zero", "b:pre": "input", "concat": ("add", np.ones(16))})
    assert freeze(graph) == before
    ks.check_graph(result)
    assert result.graph["inputs"] == ["x", "b_pre_input"]


def _refused(model, patches, error, match):
    before = snapshot(model)
    with pytest.raises(error, match=match):
        ks.patch(model, patches)
    assert_unchanged(model, before)


def test_bad_patches_are_refused_clearly():
    model = ZOO["mlp"]()
    _refused(model, {"dense_3": "zero"}, ks.AddressError, "dense_1")
    _refused(model, {"dense_1": np.zeros(15)}, ks.TransformError, r"per-sample shape of 'dense_1', \(16,\).*\(15,\)")
    _refused(model, {"dense_1": np.zeros((4, 16))}, ks.TransformError, "'input' and feed the array")
    _refused(model, {"dense_1": ("add", np.zeros(3))}, ks.TransformError, r"broadcasts.*\(16,\).*\(3,\)")
    _refused(model, {"dense_1": ("ablate", np.full(16, 0.5))}, ks.TransformError, "booleans")
    _refused(model, {"dense_1": "zeros"}, ks.TransformError, "'zero', 'mean'")
    _refused(model, {"dense_1": ("scale", 2.0)}, ks.TransformError, "starting with 'scale'")
    _refused(model, {"dense_1": "zero", "dense_*": "mean"}, ks.TransformError, "patched once")
    _refused(model, ["dense_1"], ks.TransformError, "dict")
    stats = ks.calibrate(model, sample_inputs(model), ["dense_2"])
    _refused(model, {"dense_1": ("mean", stats)}, ks.TransformError, "statistics of 'dense_1'")


def test_scores_of_a_closed_attention_layer_are_refused_on_a_graph():
    with pytest.raises(ks.TransformError, match="open="):
        patch_pass(ks.to_graph(ZOO["attention"]()), {"gqa:scores": "zero"})


def test_zeroed_scores_of_a_grouped_query_attention_leave_its_output_bias(tmp_path):
    """gqa:scores opens the built-in GroupQueryAttention: zero weights give its output projection's bias."""
    model = ZOO["attention"]()
    data = sample_inputs(model)
    patched = ks.patch(model, {"gqa:scores": "zero"})
    bias = to_numpy(model.get_layer("gqa")._output_dense.bias)
    rest = ks.patch(model, {"gqa": "input"})
    np.testing.assert_allclose(predict(patched, data), predict(rest, [*data, np.broadcast_to(bias, (4, 5, 8))]),
                               atol=1e-6)
    assert_roundtrip(patched, data, tmp_path)


def test_the_mean_of_one_point_stats_is_accepted():
    model = ZOO["mlp"]()
    x = sample_inputs(model)
    stats = ks.calibrate(model, x, ["dense_2:pre"])
    np.testing.assert_allclose(predict(ks.patch(model, {"dense_2:pre": ("mean", stats["dense_2:pre"])}), x),
                               predict(ks.patch(model, {"dense_2:pre": ("mean", stats)}), x), atol=0)
    np.testing.assert_allclose(predict(ks.patch(model, {"dense_2:pre": ("mean", stats)}), x),
                               mlp_forward(model, x, "dense_2:pre", lambda h: stats["dense_2:pre"].mean + 0 * h),
                               atol=1e-5)
