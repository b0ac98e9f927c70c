"""collect: equal to a per-point reference over the zoo, for every data source,
in training mode without side effects, to HDF5, and with a clear error for
every bad input."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from keras import layers, ops

import kerasurgery as ks
from kerasurgery.runtime import plan as runner
from kerasurgery.runtime import sinks as storage
from kerasurgery import load_activations
from kerasurgery.runtime.inputs import adapt
from reference import reference_points
from zoo import ZOO, assert_unchanged, sample_inputs, snapshot

N = 10  # samples: not a multiple of the batch size below
BATCH = 4


def reference(model, data, addresses):
    """The value of each of `addresses`, computed without kerasurgery's resolver or passes
    (`tests/reference.py`: eager calls, :pre from the layers' weights, :scores from direct calls)."""
    every = reference_points(model, data)
    return {address: every[address] for address in addresses}


def assert_close(actual, expected, atol=1e-5):
    assert list(actual) == list(expected)
    for address in expected:
        a, e = np.asarray(actual[address]), np.asarray(expected[address])
        assert a.shape == e.shape, address
        assert a.dtype == e.dtype, address
        np.testing.assert_allclose(a, e, atol=atol, rtol=1e-5, err_msg=address)


def plain_outputs(model):
    graph = ks.to_graph(model)
    inputs = set(keras.tree.flatten(graph.graph["inputs"]))
    return [p for p in ks.points(model) if ":" not in p and p not in inputs]


# ---------------------------------------------------------------------------
# equal to the reference


class TestReference:
    @pytest.mark.parametrize("name", sorted(ZOO))
    def test_every_point_over_the_zoo(self, name):
        model = ZOO[name]()
        data = sample_inputs(model, batch=N)
        before = snapshot(model)
        addresses = ks.points(model)
        acts = ks.collect(model, data, addresses, batch_size=BATCH, progress=False)
        assert_close(acts, reference(model, data, addresses))
        assert all(len(a) == N for a in acts.values())
        assert_unchanged(model, before)

    @pytest.mark.backend
    @pytest.mark.parametrize("name", ["mlp", "cnn_bn", "nested_sequential", "multi_io", "siamese"])
    def test_default_points_are_every_layer_output(self, name):
        model = ZOO[name]()
        data = sample_inputs(model, batch=N)
        acts = ks.collect(model, data, batch_size=BATCH, progress=False)
        assert list(acts) == plain_outputs(model)
        assert_close(acts, reference(model, data, list(acts)))

    def test_independent_reference_model_per_layer(self):
        model = ZOO["mlp"]()
        data = sample_inputs(model, batch=N)
        acts = ks.collect(model, data, batch_size=3, progress=False)
        for name in ("dense_1", "dense_2", "predictions"):
            single = keras.Model(model.inputs, model.get_layer(name).output)
            np.testing.assert_allclose(acts[name], single.predict(data, verbose=0), atol=1e-6)

    @pytest.mark.parametrize("batch_size", [1, 3, N, 64])
    def test_batch_sizes(self, batch_size):
        model = ZOO["cnn_bn"]()
        data = sample_inputs(model, batch=N)
        acts = ks.collect(model, data, ["conv", "dw:pre", "predictions"], batch_size=batch_size, progress=False)
        assert_close(acts, reference(model, data, list(acts)))

    def test_globs_and_ports(self):
        model = ZOO["attention"]()
        data = sample_inputs(model, batch=N)
        acts = ks.collect(model, data, ["*:pre", "mha:scores"], batch_size=BATCH, progress=False)
        assert "mha:scores" in acts and "embed:pre" in acts
        assert acts["mha:scores"].shape == (N, 2, 5, 5)
        assert_close(acts, reference(model, data, list(acts)))

    def test_same_tensor_twice_shares_one_array(self):
        model = ZOO["cnn_bn"]()
        data = sample_inputs(model, batch=N)
        acts = ks.collect(model, data, ["relu:pre", "bn"], progress=False)
        assert acts["relu:pre"] is acts["bn"]

    def test_non_float_outputs_keep_their_dtype(self):
        x = keras.Input((5,), name="x")
        h = layers.Dense(4, name="d")(x)
        model = keras.Model(x, [ops.argmax(h, axis=-1), ops.greater(h, 0.0)], name="dtypes")
        data = np.random.default_rng(0).normal(size=(N, 5)).astype("float32")
        addresses = ks.points(model)[2:]
        acts = ks.collect(model, data, addresses, batch_size=BATCH, progress=False)
        assert sorted(str(a.dtype) for a in acts.values()) == ["bool", "int32"]
        assert_close(acts, reference(model, data, addresses))

    def test_weights_changed_after_a_first_call_are_seen(self):
        model = ZOO["mlp"]()
        data = sample_inputs(model, batch=N)
        first = ks.collect(model, data, "predictions:pre", progress=False)["predictions:pre"]
        model.get_layer("predictions").set_weights([w * 2 for w in model.get_layer("predictions").get_weights()])
        second = ks.collect(model, data, "predictions:pre", progress=False)["predictions:pre"]
        np.testing.assert_allclose(second, 2 * first, rtol=1e-5, atol=1e-6)

    def test_plan_is_built_once_per_points(self):
        model = ZOO["mlp"]()
        data = sample_inputs(model, batch=N)
        ks.collect(model, data, ["dense_1", "dense_2"], progress=False)
        plans = dict(runner._PLANS[model])
        ks.collect(model, data, ["dense_1", "dense_2"], progress=False)
        assert dict(runner._PLANS[model]) == plans
        ks.collect(model, data, ["dense_1"], progress=False)
        assert len(runner._PLANS[model]) == len(plans) + 1

    def test_cached_plans_do_not_keep_the_model_alive(self):
        import gc
        import weakref

        model = ZOO["mlp"]()
        ks.collect(model, np.zeros((3, 8)), progress=False)
        ks.calibrate(model, np.zeros((3, 8)), progress=False)
        ref = weakref.ref(model)
        del model
        gc.collect()
        assert ref() is None

    def test_steps_limits_the_batches(self):
        model = ZOO["mlp"]()
        data = sample_inputs(model, batch=N)
        acts = ks.collect(model, data, "dense_1", batch_size=3, steps=2, progress=False)
        assert acts["dense_1"].shape == (6, 16)


# ---------------------------------------------------------------------------
# data sources


def _batches(data, size):
    n = len(keras.tree.flatten(data)[0])
    for start in range(0, n, size):
        yield keras.tree.map_structure(lambda a, s=start: a[s : s + size], data)


class TestSources:
    points = ["dense_1", "predictions:pre"]

    @pytest.fixture
    def model(self):
        return ZOO["mlp"]()

    @pytest.fixture
    def data(self, model):
        return sample_inputs(model, batch=N)

    @pytest.fixture
    def expected(self, model, data):
        return reference(model, data, self.points)

    def check(self, model, source, expected):
        assert_close(ks.collect(model, source, self.points, progress=False), expected)

    @pytest.mark.backend
    def test_generator(self, model, data, expected):
        self.check(model, _batches(data, 3), expected)

    @pytest.mark.backend
    def test_generator_of_x_y_and_x_y_w(self, model, data, expected):
        y, w = np.zeros((N, 3)), np.ones(N)
        self.check(model, ((x, y[: len(x)]) for x in _batches(data, 4)), expected)
        self.check(model, ((x, y[: len(x)], w[: len(x)]) for x in _batches(data, 4)), expected)

    def test_arrays_as_x_y(self, model, data, expected):
        self.check(model, (data, np.zeros(N)), expected)
        self.check(model, (data, np.zeros(N), np.ones(N)), expected)

    def test_list_of_batches(self, model, data, expected):
        self.check(model, list(_batches(data, 4)), expected)

    def test_tf_data(self, model, data, expected):
        import tensorflow as tf

        self.check(model, tf.data.Dataset.from_tensor_slices(data).batch(4), expected)
        self.check(model, tf.data.Dataset.from_tensor_slices((data, np.zeros(N))).batch(3), expected)
        unknown = tf.data.Dataset.from_tensor_slices(data).batch(4).filter(lambda x: True)
        self.check(model, unknown, expected)

    @pytest.mark.backend
    def test_py_dataset(self, model, data, expected):
        class Batches(keras.utils.PyDataset):
            def __len__(self):
                return 4

            def __getitem__(self, i):
                return data[i * 3 : (i + 1) * 3], np.zeros(3)

        self.check(model, Batches(), expected)

    @pytest.mark.backend
    def test_backend_tensors(self, model, data, expected):
        tensor = ops.convert_to_tensor(data)  # a tf.Tensor, jax.Array or torch.Tensor
        self.check(model, tensor, expected)
        self.check(model, _batches(tensor, 3), expected)
        stats = ks.calibrate(model, tensor, "dense_1", progress=False)["dense_1"]
        assert stats.max == expected["dense_1"].max()

    @pytest.mark.backend
    def test_torch_tensors_and_data_loader(self, model, data, expected):
        torch = pytest.importorskip("torch")  # on every backend: only the data is torch's
        x = torch.from_numpy(data)
        self.check(model, x.requires_grad_(), expected)  # np.asarray refuses a tensor that requires grad
        self.check(model, torch.utils.data.DataLoader(x.detach(), batch_size=3), expected)
        self.check(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.detach()), batch_size=4),
                   expected)  # batches are [x] lists

    def test_h5py_dataset_is_read_batch_by_batch(self, model, data, expected, tmp_path):
        import h5py

        with h5py.File(tmp_path / "x.h5", "w") as f:
            f["x"] = data
        with h5py.File(tmp_path / "x.h5", "r") as f:
            self.check(model, f["x"], expected)

    def test_float64_and_int_data_are_cast(self, model, data, expected):
        self.check(model, data.astype("float64"), expected)
        ints = np.arange(N * 8).reshape(N, 8) % 5
        np.testing.assert_allclose(
            ks.collect(model, ints, "dense_1", progress=False)["dense_1"],
            reference(model, ints.astype("float32"), ["dense_1"])["dense_1"], atol=1e-5,
        )

    @pytest.mark.backend
    def test_multi_input_list_dict_and_generator(self):
        model = ZOO["siamese"]()
        left, right = sample_inputs(model, batch=N)
        expected = reference(model, [left, right], ["encoder/proj@0", "encoder/proj@1", "diff"])
        for data in ([left, right], (left, right), {"left": left, "right": right},
                     ((x, None) for x in _batches([left, right], 3))):
            assert_close(ks.collect(model, data, list(expected), batch_size=BATCH, progress=False), expected)

    def test_dict_inputs_model(self):
        model = ZOO["multi_io"]()
        data = sample_inputs(model, batch=N)
        expected = reference(model, data, ["da", "cat"])
        assert_close(ks.collect(model, data, ["da", "cat"], batch_size=BATCH, progress=False), expected)
        as_list = [data["a"], data["b"]]
        assert_close(ks.collect(model, as_list, ["da", "cat"], progress=False), expected)
        targets = {"cls": np.zeros((N, 2)), "reg": np.zeros((N, 1))}
        assert_close(ks.collect(model, (data, targets), ["da", "cat"], progress=False), expected)


# ---------------------------------------------------------------------------
# training mode


class TestTraining:
    @pytest.mark.backend
    def test_batchnorm_uses_batch_statistics_and_keeps_its_moving_statistics(self):
        model = ZOO["cnn_bn"]()
        data = sample_inputs(model, batch=N)
        before = snapshot(model)
        acts = ks.collect(model, data, ["conv", "bn"], batch_size=5, training=True, progress=False)
        assert_unchanged(model, before)
        bn = model.get_layer("bn")
        gamma, beta = (ops.convert_to_numpy(w) for w in (bn.gamma, bn.beta))
        for start in (0, 5):
            conv = acts["conv"][start : start + 5].astype("float64")
            mean, var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
            expected = (conv - mean) / np.sqrt(var + bn.epsilon) * gamma + beta
            np.testing.assert_allclose(acts["bn"][start : start + 5], expected, atol=1e-4)
        inference = ks.collect(model, data, ["bn"], progress=False)["bn"]
        assert not np.allclose(inference, acts["bn"], atol=1e-3)

    @pytest.mark.backend
    def test_dropout_draws_a_new_mask_per_batch_and_changes_nothing(self):
        model = ZOO["dropout"]()
        data = np.ones((64, 6), "float32")
        before = snapshot(model)
        acts = ks.collect(model, data, ["dense", "drop"], batch_size=32, training=True, progress=False)
        assert_unchanged(model, before)
        dense, drop = acts["dense"], acts["drop"]
        kept = drop != 0
        np.testing.assert_allclose(drop[kept], dense[kept] * 2, rtol=1e-5)
        live = dense != 0
        assert 0.35 < (~kept[live]).mean() < 0.65
        assert not np.array_equal(kept[:32], kept[32:])
        inference = ks.collect(model, data, ["drop"], progress=False)["drop"]
        np.testing.assert_allclose(inference, dense, atol=1e-6)

    def test_training_must_be_a_bool(self):
        with pytest.raises(ks.DataError, match="training"):
            ks.collect(ZOO["mlp"](), np.zeros((2, 8)), training="yes")


# ---------------------------------------------------------------------------
# HDF5


class TestHDF5:
    @pytest.mark.backend
    def test_file_equals_memory(self, tmp_path):
        model = ZOO["nested_functional"]()
        data = sample_inputs(model, batch=N)
        addresses = ["encoder/inner_dense:pre", "encoder/inner_out", "head"]
        memory = ks.collect(model, data, addresses, batch_size=BATCH, progress=False)
        path = tmp_path / "acts.h5"
        with ks.collect(model, data, addresses, batch_size=BATCH, path=path, progress=False) as acts:
            assert list(acts) == addresses
            for address in addresses:
                np.testing.assert_array_equal(acts[address][:], memory[address])
                attrs = acts[address].attrs
                assert attrs["address"] == address and attrs["model"] == model.name
                assert tuple(attrs["shape"]) == memory[address].shape[1:] and attrs["dtype"] == "float32"
                assert acts[address].chunks is not None
            assert acts.attrs["num_samples"] == N
        assert os.listdir(tmp_path) == ["acts.h5"]

    def test_load_activations_and_unknown_length(self, tmp_path):
        model = ZOO["mlp"]()
        data = sample_inputs(model, batch=N)
        path = str(tmp_path / "acts.h5")
        ks.collect(model, _batches(data, 3), ["dense_1", "dense_2"], path=path, progress=False).close()
        with load_activations(path) as acts:
            assert_close({k: v[:] for k, v in acts.items()}, reference(model, data, ["dense_1", "dense_2"]))

    def test_existing_file_is_refused_unless_overwrite(self, tmp_path):
        model = ZOO["mlp"]()
        path = tmp_path / "acts.h5"
        path.write_text("keep me")
        with pytest.raises(ks.DataError, match="already exists.*overwrite=True"):
            ks.collect(model, np.zeros((3, 8)), path=path)
        assert path.read_text() == "keep me"
        ks.collect(model, np.zeros((3, 8)), "dense_1", path=path, overwrite=True, progress=False).close()
        with load_activations(path) as acts:
            assert acts["dense_1"].shape == (3, 16)

    def test_missing_folder_and_folder_path(self, tmp_path):
        model = ZOO["mlp"]()
        with pytest.raises(ks.DataError, match="existing folder.*does not exist"):
            ks.collect(model, np.zeros((3, 8)), path=tmp_path / "nope" / "acts.h5")
        (tmp_path / "notes.txt").write_text("mine")  # a folder is a folder of shards: never one with other files
        with pytest.raises(ks.DataError, match="holds other files.*notes.txt"):
            ks.collect(model, np.zeros((3, 8)), path=tmp_path)
        assert os.listdir(tmp_path) == ["notes.txt"]

    def test_folder_of_shards_equals_arrays_and_reads_lazily_in_order(self, tmp_path):
        model = ZOO["mlp"]()
        x = np.random.default_rng(0).normal(size=(50, 8)).astype("float32")
        reference = ks.collect(model, x, batch_size=4, progress=False)
        with ks.collect(model, x, path=tmp_path / "acts", batch_size=4, shard_size=10, progress=False) as acts:
            assert acts.format == "shards" and acts.attrs["num_samples"] == 50
            names = sorted(os.listdir(tmp_path / "acts"))
            assert names[:2] == ["manifest.json", "run.json"] and len(names) == 2 + 5  # shards of 12, 12, 12, 12, 2
            for a, r in reference.items():
                assert acts[a].shape == r.shape and acts[a].dtype == r.dtype
                np.testing.assert_array_equal(acts[a][:], r)
                np.testing.assert_array_equal(acts[a][[49, 0, 11, 12, 13]], r[[49, 0, 11, 12, 13]])
                np.testing.assert_array_equal(acts[a][5:45:7, 1:3], r[5:45:7, 1:3])
                np.testing.assert_array_equal(acts[a][-1], r[-1])
                np.testing.assert_array_equal(np.asarray(acts[a]), r)
        with pytest.raises(ks.DataError, match="a complete result.*overwrite=True"):
            ks.collect(model, x, path=tmp_path / "acts", progress=False)
        (tmp_path / "acts" / "manifest.json").unlink()  # as an interrupted run leaves it
        with pytest.raises(ks.DataError, match="not finished.*resume=True"):
            ks.load_activations(tmp_path / "acts")

    def test_nothing_half_written_on_error(self, tmp_path):
        model = ZOO["mlp"]()

        def failing():
            yield np.zeros((4, 8), "float32")
            raise RuntimeError("disk on fire")

        with pytest.raises(RuntimeError, match="disk on fire"):
            ks.collect(model, failing(), path=tmp_path / "acts.h5", progress=False)
        bad = (np.zeros((4, 8), "float32"), np.zeros((4, 7), "float32"))
        with pytest.raises(ks.DataError, match="shape"):
            ks.collect(model, iter([bad[0], bad[1]]), path=tmp_path / "acts.h5", progress=False)
        assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# memory and progress


class TestMemoryAndProgress:
    def test_too_large_result_is_refused_up_front(self, monkeypatch, tmp_path):
        model = ZOO["cnn_bn"]()
        monkeypatch.setattr(storage, "available_memory", lambda: 1 << 20)
        data = np.zeros((64, 16, 16, 3), "float32")
        with pytest.raises(ks.DataError, match=r"MB of activations.*path='activations.h5'.*fewer points"):
            ks.collect(model, data, progress=False)
        with pytest.raises(ks.DataError, match="fit in memory"):  # unknown length: refused as it grows
            ks.collect(model, (data[i : i + 8] for i in range(0, 64, 8)), progress=False)
        ks.collect(model, data, path=tmp_path / "a.h5", progress=False).close()

    def test_progress_bar(self, capsys):
        model = ZOO["mlp"]()
        ks.collect(model, np.zeros((10, 8)), "dense_1", batch_size=4, progress=True)
        assert "3/3" in capsys.readouterr().out
        ks.collect(model, np.zeros((10, 8)), "dense_1", batch_size=4, progress=False)
        ks.collect(model, np.zeros((10, 8)), "dense_1", batch_size=4)  # not a terminal: silent
        assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------
# bad input


class TestBadInput:
    def test_wrong_shape_names_the_input_and_both_shapes(self):
        model = ZOO["cnn_bn"]()
        with pytest.raises(ks.DataError, match=r"input 'image'.*\(None, 16, 16, 3\).*\(5, 16, 16, 4\)"):
            ks.collect(model, np.zeros((5, 16, 16, 4)))
        with pytest.raises(ks.DataError, match=r"input 'image'.*\(16, 16, 3\) in batch 0.*batch axis"):
            ks.collect(model, iter([np.zeros((16, 16, 3))]))

    def test_unbatched_tf_data_gets_a_hint(self):
        import tensorflow as tf

        model = ZOO["mlp"]()
        with pytest.raises(ks.DataError, match=r"input 'x'.*shape \(8,\).*\.batch\(n\)"):
            ks.collect(model, tf.data.Dataset.from_tensor_slices(np.zeros((4, 8))))

    def test_wrong_dtype(self):
        model = ZOO["attention"]()
        tokens, mask = sample_inputs(model, batch=3)
        with pytest.raises(ks.DataError, match=r"input 'mask'.*bool data.*float32"):
            ks.collect(model, [tokens, mask.astype("float32")])
        with pytest.raises(ks.DataError, match=r"input 'x'.*float32 data.*<U1"):
            ks.collect(ZOO["mlp"](), np.full((2, 8), "a"))

    def test_wrong_structure(self):
        model = ZOO["multi_io"]()
        data = sample_inputs(model, batch=3)
        with pytest.raises(ks.DataError, match=r"dict with keys \['a', 'b'\].*Received: \{'a'"):
            ks.collect(model, {"a": data["a"]})
        with pytest.raises(ks.DataError, match="same number of samples"):
            ks.collect(model, {"a": data["a"], "b": data["b"][:2]})
        with pytest.raises(ks.DataError, match="Received: int"):
            ks.collect(ZOO["mlp"](), 5)

    @pytest.mark.backend
    def test_empty_data(self):
        model = ZOO["mlp"]()
        with pytest.raises(ks.DataError, match="at least one sample"):
            ks.collect(model, np.zeros((0, 8)))
        with pytest.raises(ks.DataError, match="at least one sample"):
            ks.collect(model, iter([]))
        with pytest.raises(ks.DataError, match="at least one sample"):
            ks.collect(model, [])

    def test_empty_tf_data(self):
        import tensorflow as tf

        with pytest.raises(ks.DataError, match="at least one sample"):
            ks.collect(ZOO["mlp"](), tf.data.Dataset.from_tensor_slices(np.zeros((0, 8))).batch(2))

    @pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, "32"])
    def test_batch_size(self, batch_size):
        with pytest.raises(ks.DataError, match=r"batch_size.*>= 1.*Received: batch_size="):
            ks.collect(ZOO["mlp"](), np.zeros((2, 8)), batch_size=batch_size)

    def test_unknown_point_suggests(self):
        with pytest.raises(ks.AddressError, match="dense_1") as info:
            ks.collect(ZOO["mlp"](), np.zeros((2, 8)), "dense1")
        assert "dense_1" in info.value.suggestions

    def test_point_without_batch_axis(self):
        x = keras.Input((4,), name="x")
        model = keras.Model(x, ops.sum(layers.Dense(3, name="d")(x), axis=0), name="batch_sum")
        point = ks.points(model)[-1]
        with pytest.raises(ks.DataError, match=f"'{point}'.*batch as its first axis"):
            ks.collect(model, np.zeros((5, 4)), point)

    def test_infinite_sources_need_steps(self):
        import tensorflow as tf

        model = ZOO["mlp"]()
        forever = tf.data.Dataset.from_tensor_slices(np.zeros((4, 8), "float32")).batch(2).repeat()
        with pytest.raises(ks.DataError, match="infinite.*steps="):
            ks.collect(model, forever)
        assert ks.collect(model, forever, "dense_1", steps=3, progress=False)["dense_1"].shape == (6, 16)

    def test_every_error_is_a_value_error(self):
        assert issubclass(ks.DataError, ValueError) and issubclass(ks.AddressError, ValueError)


# ---------------------------------------------------------------------------
# what the implementation relies on


class TestPinned:
    def test_functional_input_is_the_constructor_structure(self):
        assert isinstance(ZOO["multi_io"]().input, dict)
        assert isinstance(ZOO["siamese"]().input, list)
        assert isinstance(ks.expose(ZOO["multi_io"](), "cat").input, dict)

    @pytest.mark.backend
    def test_stateless_call_in_training_mode_writes_no_variable(self):
        model = ZOO["dropout"]()
        before = snapshot(model)
        trainable = [ops.convert_to_tensor(v) for v in model.trainable_variables]
        state = [ops.convert_to_tensor(v) for v in model.non_trainable_variables]
        _, new_state = model.stateless_call(trainable, state, np.ones((8, 6), "float32"), training=True)
        assert_unchanged(model, before)
        assert any(not np.array_equal(a, b) for a, b in zip(state, new_state))  # BN and the seed moved

    @pytest.mark.backend
    def test_numpy_views_backend_tensors(self):
        t = ops.ones((4, 3))
        assert not np.asarray(t).flags.owndata

    def test_adapt_batches_lazily(self):
        model = ZOO["mlp"]()
        source = adapt(np.zeros((5, 8)), model, batch_size=2)
        assert (source.num_samples, source.num_batches) == (5, 3)
        assert [len(b[0]) for b in source] == [2, 2, 1]
