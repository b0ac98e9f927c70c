"""ActivationRecorder over short fits: records per epoch in memory or HDF5,
equal to the model's activations at that epoch, probe built once."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

import kerasurgery as ks
from kerasurgery.runtime import plan as runner
from kerasurgery import load_activations
from reference import reference_points
from zoo import ZOO, assert_unchanged, sample_inputs, snapshot, to_numpy

POINTS = ["conv:pre", "bn", "predictions:pre"]


def compiled_cnn():
    model = ZOO["cnn_bn"]()
    model.compile(keras.optimizers.SGD(0.1), "categorical_crossentropy")
    return model


def train_data(n=16):
    model = ZOO["cnn_bn"]()
    x = sample_inputs(model, batch=n)
    y = keras.utils.to_categorical(np.arange(n) % 4, 4)
    return x, y


class Reference(keras.callbacks.Callback):
    """What the recorder should see: each point computed at epoch end without kerasurgery's
    resolver or passes (tests/reference.py)."""

    def __init__(self, data, points=POINTS):
        super().__init__()
        self.data = data
        self.points = points
        self.records = []

    def on_epoch_end(self, epoch, logs=None):
        every = reference_points(self.model, self.data)
        self.records.append({k: every[k] for k in self.points})


class TestInMemory:
    @pytest.mark.backend
    def test_small_model_with_dropout_and_batchnorm(self):
        model = ZOO["dropout"]()
        model.compile(keras.optimizers.SGD(0.1), "mse")
        x = np.random.default_rng(0).normal(size=(12, 6)).astype("float32")
        points = ["dense:pre", "drop", "bn"]
        recorder = ks.ActivationRecorder(points, x[:5], batch_size=2)
        reference = Reference(x[:5], points)
        model.fit(x, np.zeros((12, 2)), epochs=2, verbose=0, callbacks=[recorder, reference])
        assert recorder.epochs == [0, 1]
        for address in points:
            for record, expected in zip(recorder.history[address], reference.records):
                np.testing.assert_allclose(record, expected[address], atol=1e-5)

    @pytest.mark.backend
    def test_training_mode_records(self):
        """training=True: dropout drops and scales, each batch is normalized with its own
        statistics, the head reads those values; where the backend's stateless dropout follows
        its seed state, the records equal a stateless training-mode pass of Keras's own model over
        the same batches. The model's BatchNormalization statistics do not move."""
        model = ZOO["dropout"]()
        model.compile(keras.optimizers.SGD(0.01), "mse")
        x = np.random.default_rng(1).normal(size=(12, 6)).astype("float32")
        points = ["dense", "drop", "bn", "out"]
        in_training = ks.ActivationRecorder(points, x[:8], batch_size=4, training=True)
        inference = ks.ActivationRecorder(points, x[:8], batch_size=4)

        class State(keras.callbacks.Callback):
            """The model's BatchNormalization and head variables at each epoch end."""

            def __init__(self):
                super().__init__()
                self.seen = []

            def on_epoch_end(self, epoch, logs=None):
                bn, out = self.model.get_layer("bn"), self.model.get_layer("out")
                variables = (bn.moving_mean, bn.moving_variance, bn.gamma, bn.beta, out.kernel, out.bias)
                self.seen.append([to_numpy(v) for v in variables])

        class Stateless(keras.callbacks.Callback):
            """Keras's own multi-output model of the same layers, stateless, batch by batch."""

            def __init__(self):
                super().__init__()
                self.records = []

            def on_epoch_end(self, epoch, logs=None):
                m = self.model
                ref = keras.Model(m.input, [m.get_layer(p).output for p in points])
                trainable = [v.value for v in ref.trainable_variables]
                state = [v.value for v in ref.non_trainable_variables]
                rows = []
                for start in (0, 4):
                    out, state = ref.stateless_call(trainable, state, x[start : start + 4], training=True)
                    rows.append([to_numpy(o) for o in out])
                self.records.append({p: np.concatenate([r[i] for r in rows]) for i, p in enumerate(points)})

        before, after, stateless = State(), State(), Stateless()
        model.fit(x, np.zeros((12, 2)), epochs=2, batch_size=12, verbose=0,
                  callbacks=[before, in_training, inference, stateless, after])
        bn = model.get_layer("bn")
        for epoch in range(2):
            for a, b in zip(before.seen[epoch], after.seen[epoch]):  # the recorders moved nothing
                np.testing.assert_array_equal(a, b)
            _, _, gamma, beta, kernel, bias = before.seen[epoch]
            got = {p: in_training.history[p][epoch] for p in points}
            off = {p: inference.history[p][epoch] for p in points}
            np.testing.assert_allclose(got["dense"], off["dense"], atol=1e-6)  # no randomness before dropout
            np.testing.assert_allclose(off["drop"], off["dense"], atol=1e-6)  # inference: identity
            kept = got["drop"] != 0
            assert (~kept[got["dense"] != 0]).any()  # training: dropped ...
            np.testing.assert_allclose(got["drop"][kept], 2 * got["dense"][kept], rtol=1e-5)  # ... and scaled
            for start in (0, 4):  # training: each batch normalized with its own statistics
                drop = got["drop"][start : start + 4].astype("float64")
                expected = (drop - drop.mean(0)) / np.sqrt(drop.var(0) + bn.epsilon) * gamma + beta
                np.testing.assert_allclose(got["bn"][start : start + 4], expected, atol=1e-4)
            np.testing.assert_allclose(got["out"], got["bn"] @ kernel + bias, atol=1e-5)
            assert not np.allclose(got["bn"], off["bn"], atol=1e-3)
            # Measured: on torch, two stateless calls with the same seed state draw different masks.
            if keras.backend.backend() != "torch":
                for p in points:
                    np.testing.assert_allclose(got[p], stateless.records[epoch][p], atol=1e-5, err_msg=p)
        moving = [to_numpy(v) for v in (bn.moving_mean, bn.moving_variance)]
        in_training.record(epoch=9)
        np.testing.assert_array_equal(to_numpy(bn.moving_mean), moving[0])
        np.testing.assert_array_equal(to_numpy(bn.moving_variance), moving[1])

    def test_records_equal_the_model_at_each_epoch(self):
        model = compiled_cnn()
        x, y = train_data()
        recorder = ks.ActivationRecorder(POINTS, x[:6], batch_size=4)
        reference = Reference(x[:6])
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[recorder, reference])
        assert recorder.epochs == [0, 1, 2]
        assert list(recorder.history) == POINTS
        for address in POINTS:
            assert len(recorder.history[address]) == 3
            for record, expected in zip(recorder.history[address], reference.records):
                np.testing.assert_allclose(record, expected[address], atol=1e-5)
        assert not np.allclose(recorder.history["predictions:pre"][0], recorder.history["predictions:pre"][2])

    def test_every(self):
        model = compiled_cnn()
        x, y = train_data()
        recorder = ks.ActivationRecorder("predictions", x[:5], every=2)
        model.fit(x, y, epochs=5, verbose=0, callbacks=[recorder])
        assert recorder.epochs == [1, 3]
        assert [a.shape for a in recorder.history["predictions"]] == [(5, 4), (5, 4)]

    def test_probe_is_built_once_and_shares_weights(self, monkeypatch):
        model = compiled_cnn()
        x, y = train_data()
        built = []
        real = runner.expose
        monkeypatch.setattr(runner, "expose", lambda *a, **k: built.append(1) or real(*a, **k))
        runner.clear_cache()
        recorder = ks.ActivationRecorder(POINTS, x[:4])
        model.fit(x, y, epochs=3, verbose=0, callbacks=[recorder])
        model.fit(x, y, epochs=1, verbose=0, callbacks=[recorder])
        assert len(built) == 1 and len(recorder.epochs) == 4
        model_vars = {id(v) for v in model.weights}
        assert all(id(v) in model_vars for v in recorder.probe.weights)

    def test_recording_does_not_change_the_model(self):
        model = compiled_cnn()
        x, y = train_data()
        recorder = ks.ActivationRecorder(POINTS, x[:4], training=True)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[recorder])
        before = snapshot(model)
        recorder.record(epoch=99)
        assert_unchanged(model, before)
        assert recorder.epochs == [0, 99]

    def test_data_sources(self):
        import tensorflow as tf

        model = compiled_cnn()
        x, y = train_data()
        batches = [x[:3], x[3:6]]
        sources = [tf.data.Dataset.from_tensor_slices(x[:6]).batch(4), batches, (x[:6], y[:6])]
        recorders = [ks.ActivationRecorder("bn", s) for s in sources]
        reference = Reference(x[:6], ["bn"])
        model.fit(x, y, epochs=1, verbose=0, callbacks=[*recorders, reference])
        for r in recorders:
            np.testing.assert_allclose(r.history["bn"][0], reference.records[0]["bn"], atol=1e-5)


class TestHDF5:
    def test_file_is_complete_after_each_record_and_equals_memory(self, tmp_path):
        model = compiled_cnn()
        x, y = train_data()
        path = tmp_path / "records.h5"
        on_disk = ks.ActivationRecorder(POINTS, x[:6], path=path, batch_size=4)
        in_memory = ks.ActivationRecorder(POINTS, x[:6], batch_size=4)

        class Watch(keras.callbacks.Callback):
            seen = []

            def on_epoch_end(self, epoch, logs=None):
                with load_activations(path) as records:
                    self.seen.append((list(records.attrs["epochs"]), records[POINTS[0]].shape[0]))
                assert os.listdir(tmp_path) == ["records.h5"]  # no temporary file left between records

        model.fit(x, y, epochs=2, verbose=0, callbacks=[on_disk, in_memory, Watch()])
        assert Watch.seen == [([0], 1), ([0, 1], 2)]
        assert on_disk.history == {}
        assert os.listdir(tmp_path) == ["records.h5"]
        with load_activations(path) as records:
            assert list(records) == POINTS
            assert list(records.attrs["epochs"]) == [0, 1]
            for address in POINTS:
                assert records[address].shape == (2, 6, *in_memory.history[address][0].shape[1:])
                assert records[address].attrs["address"] == address
                for i in range(2):
                    np.testing.assert_array_equal(records[address][i], in_memory.history[address][i])
        model.fit(x, y, epochs=1, verbose=0, callbacks=[on_disk])  # a second fit continues the file
        with load_activations(path) as records:
            assert records["bn"].shape[0] == 3 and list(records.attrs["epochs"]) == [0, 1, 0]

    def test_existing_file_is_refused_unless_overwrite(self, tmp_path):
        path = tmp_path / "records.h5"
        path.write_text("old")
        with pytest.raises(ks.DataError, match="already exists"):
            ks.ActivationRecorder("bn", np.zeros((2, 16, 16, 3)), path=path)
        recorder = ks.ActivationRecorder("bn", np.zeros((2, 16, 16, 3), "float32"), path=path, overwrite=True)
        model = compiled_cnn()
        x, y = train_data()
        model.fit(x, y, epochs=1, verbose=0, callbacks=[recorder])
        with load_activations(path) as records:
            assert records["bn"].shape == (1, 2, 16, 16, 8)


class TestBadInput:
    @pytest.mark.parametrize("every", [0, -1, 1.5, True])
    def test_every(self, every):
        with pytest.raises(ks.DataError, match="every"):
            ks.ActivationRecorder("bn", np.zeros((2, 16, 16, 3)), every=every)

    def test_one_shot_generator_is_refused(self):
        def batches():
            yield np.zeros((2, 16, 16, 3))

        with pytest.raises(ks.DataError, match="used up after one pass"):
            ks.ActivationRecorder("bn", batches())

    def test_missing_folder_and_batch_size(self, tmp_path):
        with pytest.raises(ks.DataError, match="existing folder"):
            ks.ActivationRecorder("bn", np.zeros((2, 16, 16, 3)), path=tmp_path / "no" / "r.h5")
        with pytest.raises(ks.DataError, match="batch_size"):
            ks.ActivationRecorder("bn", np.zeros((2, 16, 16, 3)), batch_size=0)

    def test_unknown_point_and_bad_data_fail_at_train_begin(self):
        model = compiled_cnn()
        x, y = train_data()
        with pytest.raises(ks.AddressError, match="bn"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[ks.ActivationRecorder("bm", x[:2])])
        with pytest.raises(ks.DataError, match=r"input 'image'.*\(2, 16, 16\)"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[ks.ActivationRecorder("bn", x[:2, :, :, 0])])
