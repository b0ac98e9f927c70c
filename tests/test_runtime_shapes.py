"""The compiled step on models whose shapes are unusual: free inner dimensions, a fixed batch size.

References are Keras's own `predict` (and numpy over its values), never the
compiled step itself.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kerasurgery as ks
from kerasurgery.runtime.backend import Step
from zoo import assert_unchanged, predict, snapshot

RNG = np.random.default_rng(9)


def _expected(model, data, points):
    """Every point by Keras's own `predict` of the probe (no kerasurgery step)."""
    return ks.expose(model, points).predict(data, verbose=0, batch_size=len(keras.tree.flatten(data)[0]))


# ---------------------------------------------------------------------------
# free inner dimensions: traced with the batch's own size


def time_distributed_lstm(time=None):
    inner_in = keras.Input((5, 3), name="frames")
    inner = keras.Model(inner_in, layers.LSTM(4, name="lstm")(inner_in), name="clip_encoder")
    x = keras.Input((time, 5, 3), name="video")
    h = layers.TimeDistributed(inner, name="td")(x)
    y = layers.Dense(2, activation="tanh", name="out")(h)
    return keras.Model(x, y, name="video_model")


VIDEO = RNG.normal(size=(10, 3, 5, 3)).astype("float32")


@pytest.mark.backend
@pytest.mark.parametrize("time", [None, 3])
def test_collect_and_calibrate_time_distributed_nested_lstm(time):
    model = time_distributed_lstm(time)
    before = snapshot(model)
    points = ks.points(model)[1:]
    want = _expected(model, VIDEO, points)
    got = ks.collect(model, VIDEO, points, batch_size=4)
    trained = ks.collect(model, VIDEO, points, batch_size=4, training=True)  # no dropout: the same values
    stats = ks.calibrate(model, VIDEO, points, batch_size=4)
    assert_unchanged(model, before)
    for address in points:
        np.testing.assert_allclose(got[address], want[address], atol=1e-5, err_msg=address)
        np.testing.assert_allclose(trained[address], want[address], atol=1e-5, err_msg=address)
        np.testing.assert_allclose(stats[address].min, want[address].min(), atol=1e-5, err_msg=address)
        np.testing.assert_allclose(stats[address].max, want[address].max(), atol=1e-5, err_msg=address)
        np.testing.assert_allclose(stats[address].mean, want[address].mean(), atol=1e-5, err_msg=address)


@pytest.mark.backend
def test_clips_of_many_lengths():
    """Clips of 2..9 frames, one collect each (the plan and its step are reused): traced with a
    free time axis, this model returned 3 time steps for a clip of 6 frames."""
    model = time_distributed_lstm()
    for t in range(2, 10):
        clip = RNG.normal(size=(3, t, 5, 3)).astype("float32")
        got = ks.collect(model, clip, ["td", "out"])
        want = _expected(model, clip, ["td", "out"])
        for address in ("td", "out"):
            np.testing.assert_allclose(got[address], want[address], atol=1e-5, err_msg=f"{address}, {t} frames")


@pytest.mark.backend
def test_step_traces_once_per_shape_and_batch_sizes_share_a_trace():
    x = keras.Input((None, 3), name="seq")
    model = keras.Model(x, layers.GRU(2, name="gru")(x), name="gru_model")
    step = Step(model)
    for t, rows in ((2, 4), (3, 4), (2, 1), (3, 2), (4, 3)):
        data = RNG.normal(size=(rows, t, 3)).astype("float32")
        np.testing.assert_allclose(keras.ops.convert_to_numpy(step(data)), predict(model, data), atol=1e-5)
    if keras.backend.backend() == "tensorflow":
        assert len(step._compiled) == 3  # one per length; the batch dimension stays free


# ---------------------------------------------------------------------------
# a model built with a fixed batch size


def fixed_batch(batch=4):
    x = keras.Input((3,), batch_size=batch, name="x")
    h = layers.Dense(5, activation="relu", bias_initializer="ones", name="hidden")(x)
    h = layers.BatchNormalization(name="bn")(h)
    y = layers.Dense(2, activation="softmax", name="out")(h)
    return keras.Model(x, y, name="fixed_batch")


@pytest.mark.backend
@pytest.mark.parametrize("batch_size", [4, 32, 3])
def test_fixed_batch_size_pads_the_short_batch_and_trims_its_outputs(batch_size):
    """10 samples for a model of batch 4: batches of 4, 4 and 2 (padded to 4, trimmed back)."""
    model = fixed_batch()
    data = RNG.normal(size=(10, 3)).astype("float32")
    before = snapshot(model)
    points = ["hidden:pre", "hidden", "bn", "out:pre", "out"]
    padded = np.concatenate([data, np.repeat(data[-1:], 2, axis=0)])
    want = ks.expose(model, points).predict(padded, batch_size=4, verbose=0)  # Keras's own run
    want = {k: v[:10] for k, v in want.items()}
    got = ks.collect(model, data, points, batch_size=batch_size)
    stats = ks.calibrate(model, data, points, batch_size=batch_size)
    assert_unchanged(model, before)
    for address in points:
        assert got[address].shape[0] == 10
        np.testing.assert_allclose(got[address], want[address], atol=1e-5, err_msg=address)
        np.testing.assert_allclose(stats[address].min, want[address].min(), atol=1e-5, err_msg=address)
        np.testing.assert_allclose(stats[address].max, want[address].max(), atol=1e-5, err_msg=address)
        np.testing.assert_allclose(stats[address].mean, want[address].mean(), atol=1e-5, err_msg=address)
        assert stats[address].samples == 10
    # the padding copies the last sample: an independent check that no padded row was kept
    np.testing.assert_allclose(got["out"][-1], want["out"][-1], atol=1e-5)


@pytest.mark.backend
def test_fixed_batch_size_from_a_batched_source():
    """Batches from a generator: a short one is padded, a longer one is refused before it runs."""
    model = fixed_batch()
    data = RNG.normal(size=(7, 3)).astype("float32")
    got = ks.collect(model, (b for b in (data[:4], data[4:])), ["out"])
    np.testing.assert_allclose(got["out"], predict(model, np.concatenate([data, data[-1:]]))[:7], atol=1e-5)
    with pytest.raises(ks.DataError, match="Expected batches of at most 4 samples.*fixed batch size of 4.*"
                                           "Received: a batch of 7 samples"):
        ks.collect(model, iter([data]), ["out"])


@pytest.mark.backend
def test_fixed_batch_size_in_training_mode_refuses_a_short_batch():
    """BatchNormalization in training mode would see the padding: say so instead."""
    model = fixed_batch()
    before = snapshot(model)
    data = RNG.normal(size=(8, 3)).astype("float32")
    got = ks.collect(model, data, ["bn"], training=True)  # full batches only: fine
    h = predict(ks.expose(model, ["hidden"]), data)["hidden"]
    for part, rows in ((got["bn"][:4], h[:4]), (got["bn"][4:], h[4:])):
        bn = model.get_layer("bn")
        want = (rows - rows.mean(0)) / np.sqrt(rows.var(0) + bn.epsilon)
        np.testing.assert_allclose(part, want, atol=1e-4)
    with pytest.raises(ks.DataError, match="exactly 4 samples.*training mode.*Received: a batch of 2"):
        ks.collect(model, data[:6], ["bn"], training=True)
    assert_unchanged(model, before)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow log message")
def test_new_models_in_a_loop_do_not_warn_about_retracing():
    """Each new model is traced once; TensorFlow's 'triggered tf.function retracing' advice is not for the user."""
    import logging

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        data = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
        for i in range(8):
            x = keras.Input((3,), name="x")
            model = keras.Model(x, keras.layers.Dense(2 + i, activation="relu", name="d")(x))
            ks.calibrate(model, data, "d:pre", progress=False)
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "retracing" in r], records
