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
