"""Models outside the test zoo: activity regularizers, shared layers split at one call, output names.

Each test builds its own small model (the zoo stays as it is) and checks what
the rewrite promises: the numbers of the original (outputs and training
losses), the original unchanged, and a `.keras` round trip.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kerasurgery as ks
from zoo import assert_roundtrip, assert_same_outputs, assert_unchanged, predict, snapshot

RNG = np.random.default_rng(11)
X = RNG.normal(size=(8, 6)).astype("float32")


def _loss_sum(model, data):
    """The regularization losses of one forward pass in training mode."""
    model(data, training=True)
    return sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)


# ---------------------------------------------------------------------------
# activity_regularizer: applied to the activation's output, in every rewrite


def regularized():
    """A regularizer on a fused activation, at a shared layer and inside a nested model."""
    inner_in = keras.Input((6,), name="inner_in")
    inner_out = layers.Dense(6, activation="tanh", activity_regularizer=keras.regularizers.L1(0.3), name="inner_d")(
        inner_in
    )
    inner = keras.Model(inner_in, inner_out, name="inner")
    x = keras.Input((6,), name="x")
    shared = layers.Dense(6, activation="relu", activity_regularizer="l2", bias_initializer="ones", name="shared")
    h = shared(inner(x))
    h = shared(h)
    y = layers.Dense(3, activation="sigmoid", activity_regularizer=keras.regularizers.L2(0.5), name="out")(h)
    return keras.Model(x, y, name="regularized")


REWRITES = {
    "split_activations": lambda m: ks.split_activations(m),
    "split_one_layer": lambda m: ks.split_activations(m, ["out"]),
    "insert_taps_pre": lambda m: ks.insert_taps(m, ["shared@1:pre", "out:pre", "inner/inner_d:pre"]),
    "expose_keep_outputs": lambda m: ks.expose(m, ["shared@0:pre", "out:pre"], keep_outputs=True),
    "probe_pair_training": lambda m: ks.probe_pair(m, ["out:pre"])[0],
    "probe_pair_checking": lambda m: ks.probe_pair(m, ["out:pre", "out", "shared@1", "inner/inner_d"])[1],
    "probe_pair_copy": lambda m: ks.probe_pair(m, ["out:pre"], copy=True)[0],
}


@pytest.mark.backend
@pytest.mark.parametrize("rewrite", sorted(REWRITES))
def test_activity_regularizer_losses_equal_the_original(rewrite, tmp_path):
    model = regularized()
    before = snapshot(model)
    want = _loss_sum(model, X)
    # an independent reference: the regularizers on the activations, by hand
    values = {k: predict(ks.expose(model, [k]), X)[k] for k in ("inner/inner_d", "shared@0", "shared@1", "out")}
    by_hand = (
        0.3 * np.abs(values["inner/inner_d"]).sum()
        + 0.01 * (values["shared@0"] ** 2).sum()
        + 0.01 * (values["shared@1"] ** 2).sum()
        + 0.5 * (values["out"] ** 2).sum()
    ) / len(X)
    np.testing.assert_allclose(want, by_hand, rtol=1e-5)
    rewritten = REWRITES[rewrite](model)
    assert_unchanged(model, before)
    np.testing.assert_allclose(_loss_sum(rewritten, X), want, rtol=1e-5)
    loaded = assert_roundtrip(rewritten, X, tmp_path)
    np.testing.assert_allclose(_loss_sum(loaded, X), want, rtol=1e-5)


@pytest.mark.backend
def test_split_copy_trains_like_the_original():
    """One SGD step: the same training loss and the same updated outputs."""
    model = regularized()
    y = RNG.uniform(size=(8, 3)).astype("float32")
    copy = ks.split_activations(model)
    for m in (copy, model):
        m.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    losses = [float(m.train_on_batch(X, y)) for m in (copy, model)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert_same_outputs(model, copy, X)


# ---------------------------------------------------------------------------
# :pre / :scores at one call of a shared layer: the layer sits in one place only


def shared_dense():
    x = keras.Input((6,), name="x")
    dense = layers.Dense(6, activation="relu", bias_initializer="ones", name="shared")
    h1 = dense(x)
    h2 = dense(h1)
    return keras.Model(x, layers.Add(name="add")([h1, h2]), name="shared_dense")


def shared_mha():
    x = keras.Input((4, 6), name="x")
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")
    h1 = mha(x, x)
    h2 = mha(h1, x)
    return keras.Model(x, layers.Add(name="add")([h1, h2]), name="shared_mha")


SEQ = RNG.normal(size=(3, 4, 6)).astype("float32")


def _dense_pre(model, inputs):
    """``inputs @ kernel + bias`` of the shared Dense, by hand."""
    dense = model.get_layer("shared")
    return inputs @ keras.ops.convert_to_numpy(dense.kernel) + keras.ops.convert_to_numpy(dense.bias)


def _mha_scores(model, query, value):
    """Attention weights of the shared MHA by hand: softmax(q k^T / sqrt(d)) per head."""
    mha = model.get_layer("mha")
    w = {v.path.split("/")[-2]: keras.ops.convert_to_numpy(v) for v in mha.weights if v.path.endswith("kernel")}
    b = {v.path.split("/")[-2]: keras.ops.convert_to_numpy(v) for v in mha.weights if v.path.endswith("bias")}
    q = np.einsum("bsf,fhd->bshd", query, w["query"]) + b["query"]
    k = np.einsum("bsf,fhd->bshd", value, w["key"]) + b["key"]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _check_saved(model, rewritten, data, tmp_path, layer_name, wrapper_name):
    """Round trip, and the layer object is reached through the wrapper only."""
    loaded = assert_roundtrip(rewritten, data, tmp_path)
    for m in (rewritten, loaded):
        names = [layer.name for layer in m.layers]
        assert layer_name not in names, names
        assert m.get_layer(wrapper_name).layer.name == layer_name
    return loaded


@pytest.mark.backend
@pytest.mark.parametrize("call", [0, 1])
@pytest.mark.parametrize("how", ["expose", "expose_keep", "probe_pair", "probe_pair_copy"])
def test_pre_at_one_call_of_a_shared_dense_saves_and_loads(how, call, tmp_path):
    model = shared_dense()
    before = snapshot(model)
    point = f"shared@{call}:pre"
    h1 = predict(ks.expose(model, ["shared@0"]), X)["shared@0"]
    want = _dense_pre(model, X if call == 0 else h1)
    if how.startswith("expose"):
        probe = ks.expose(model, [point, "add"], keep_outputs=how == "expose_keep")
    else:
        training, probe = ks.probe_pair(model, [point, "add"], copy=how == "probe_pair_copy")
        assert_same_outputs(model, training, X)
        assert_roundtrip(training, X, tmp_path, name="training")
    assert_unchanged(model, before)
    loaded = _check_saved(model, probe, X, tmp_path, "shared", "shared_pre")
    for m in (probe, loaded):
        got = predict(m, X)
        np.testing.assert_allclose(got[point], want, atol=1e-5)
        np.testing.assert_allclose(got["add"], predict(model, X), atol=1e-5)


@pytest.mark.backend
@pytest.mark.parametrize("call", [0, 1])
def test_tap_at_one_call_of_a_shared_dense_saves_and_loads(call, tmp_path):
    model = shared_dense()
    before = snapshot(model)
    h1 = predict(ks.expose(model, ["shared@0"]), X)["shared@0"]
    want = _dense_pre(model, X if call == 0 else h1)
    tapped = ks.insert_taps(model, [f"shared@{call}:pre"])
    assert_unchanged(model, before)
    assert_same_outputs(model, tapped, X)
    loaded = _check_saved(model, tapped, X, tmp_path, "shared", "shared_pre")
    (tap,) = [a for a in ks.points(loaded) if a.endswith("_tap")]
    np.testing.assert_allclose(predict(ks.expose(loaded, [tap]), X)[tap], want, atol=1e-5)


@pytest.mark.backend
@pytest.mark.parametrize("call", [0, 1])
@pytest.mark.parametrize("how", ["expose", "expose_keep", "probe_pair", "probe_pair_copy"])
def test_scores_at_one_call_of_a_shared_mha_saves_and_loads(how, call, tmp_path):
    model = shared_mha()
    before = snapshot(model)
    point = f"mha@{call}:scores"
    h1 = predict(ks.expose(model, ["mha@0"]), SEQ)["mha@0"]
    want = _mha_scores(model, SEQ if call == 0 else h1, SEQ)
    if how.startswith("expose"):
        probe = ks.expose(model, [point, "add"], keep_outputs=how == "expose_keep")
    else:
        training, probe = ks.probe_pair(model, [point, "add"], copy=how == "probe_pair_copy")
        assert_same_outputs(model, training, SEQ)
        assert_roundtrip(training, SEQ, tmp_path, name="training")
    assert_unchanged(model, before)
    loaded = _check_saved(model, probe, SEQ, tmp_path, "mha", "mha_scores")
    for m in (probe, loaded):
        got = predict(m, SEQ)
        np.testing.assert_allclose(got[point], want, atol=1e-5)
        np.testing.assert_allclose(got["add"], predict(model, SEQ), atol=1e-5)


@pytest.mark.backend
def test_insert_taps_at_one_call_of_a_shared_layer_inside_a_nested_model(tmp_path):
    """The siamese pattern: a nested encoder called twice, a tap at one call of its Dense."""
    inner_in = keras.Input((6,), name="inner_in")
    encoder = keras.Model(inner_in, layers.Dense(4, activation="tanh", name="proj")(inner_in), name="encoder")
    a, b = keras.Input((6,), name="left"), keras.Input((6,), name="right")
    model = keras.Model([a, b], layers.Subtract(name="diff")([encoder(a), encoder(b)]), name="siamese2")
    data = [X, X[::-1].copy()]
    before = snapshot(model)
    tapped = ks.insert_taps(model, ["encoder/proj@1:pre"])
    assert_unchanged(model, before)
    assert_same_outputs(model, tapped, data)
    loaded = assert_roundtrip(tapped, data, tmp_path)
    (tap,) = [a for a in ks.points(loaded) if a.endswith("_tap")]
    proj = model.get_layer("encoder").get_layer("proj")
    want = data[1] @ keras.ops.convert_to_numpy(proj.kernel) + keras.ops.convert_to_numpy(proj.bias)
    np.testing.assert_allclose(predict(ks.expose(loaded, [tap]), data)[tap], want, atol=1e-5)


# ---------------------------------------------------------------------------
# masks pass through a split call site


@pytest.mark.backend
@pytest.mark.parametrize("how", ["split", "taps", "expose"])
def test_masked_sequence_through_a_split_dense(how, tmp_path):
    """Embedding(mask_zero) -> Dense(relu) -> LSTM: the mask reaches the LSTM, no mask warning."""
    import warnings

    x = keras.Input((6,), dtype="int32", name="tokens")
    h = layers.Embedding(10, 4, mask_zero=True, name="emb")(x)
    h = layers.Dense(5, activation="relu", bias_initializer="ones", name="d")(h)
    model = keras.Model(x, layers.LSTM(3, name="lstm")(h), name="masked_dense")
    data = np.array([[1, 2, 3, 0, 0, 0], [4, 5, 0, 0, 0, 0], [6, 7, 8, 9, 1, 2]], "int32")
    # an independent reference: each sequence cut at its padding, run without a mask
    emb, dense, lstm = (model.get_layer(n) for n in ("emb", "d", "lstm"))
    cut = [keras.ops.convert_to_numpy(lstm(dense(emb(row[None, : int((row > 0).sum())])))) for row in data]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rewritten = {
            "split": lambda: ks.split_activations(model),
            "taps": lambda: ks.insert_taps(model, ["d:pre"]),
            "expose": lambda: ks.expose(model, ["d:pre", "lstm"]),
        }[how]()
        out = predict(rewritten, data)
    assert not [w for w in caught if "mask" in str(w.message)], [str(w.message) for w in caught]
    out = out["lstm"] if isinstance(out, dict) else out
    np.testing.assert_allclose(out, np.concatenate(cut), atol=1e-5)
    assert_roundtrip(rewritten, data, tmp_path)


# ---------------------------------------------------------------------------
# mixed precision: rewrites keep every dtype


def mixed_precision():
    x = keras.Input((6,), name="x")
    a = layers.Dense(8, activation="relu", dtype="mixed_float16", name="a")(x)
    b = layers.Dense(8, activation="tanh", dtype="mixed_float16", name="b")(x)
    s = keras.ops.multiply(a, b)  # a raw op: it does not cast its inputs
    y = layers.Dense(3, activation="sigmoid", dtype="mixed_bfloat16", name="out")(s)
    return keras.Model(x, [s, y], name="mixed_precision")


@pytest.mark.backend
@pytest.mark.parametrize("how", ["split", "taps", "taps_pre", "probe_pair_copy"])
def test_mixed_precision_dtypes_and_values_are_kept(how, tmp_path):
    model = mixed_precision()
    before = snapshot(model)
    rewritten = {
        "split": lambda: ks.split_activations(model),
        "taps": lambda: ks.insert_taps(model, ["a", "b", "out"]),
        "taps_pre": lambda: ks.insert_taps(model, ["a:pre", "out:pre"]),
        "probe_pair_copy": lambda: ks.probe_pair(model, ["a:pre"], copy=True)[0],
    }[how]()
    assert_unchanged(model, before)
    want = model(X)
    got = rewritten(X)
    for w, g in zip(want, got):
        assert keras.backend.standardize_dtype(g.dtype) == keras.backend.standardize_dtype(w.dtype)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(keras.ops.cast(g, "float32")),
            keras.ops.convert_to_numpy(keras.ops.cast(w, "float32")),
        )
    assert_roundtrip(rewritten, X, tmp_path)
