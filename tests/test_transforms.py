"""expose, split_activations, insert_taps, probe_pair, compare: over the zoo and by hand."""

import keras
import numpy as np
import pytest

import kerasurgery as ks
from kerasurgery.layers import kinds
from kerasurgery.layers import Tap
from reference import reference_points
from zoo import (
    ZOO,
    assert_roundtrip,
    assert_same_outputs,
    assert_unchanged,
    attention,
    cnn_bn,
    mlp,
    nested_sequential,
    sample_inputs,
    shared,
    snapshot,
)


@pytest.mark.backend
@pytest.mark.parametrize("name", sorted(ZOO))
def test_expose_every_point(name, tmp_path):
    model = ZOO[name]()
    data = sample_inputs(model)
    before = snapshot(model)
    everything = ks.points(model)
    probe = ks.expose(model, everything)
    got = {k: keras.ops.convert_to_numpy(v) for k, v in probe(data, training=False).items()}
    assert list(probe.output) == everything  # the probe's outputs in the order asked ...
    if keras.backend.backend() != "torch":  # ... (Keras on torch returns dicts with sorted keys)
        assert list(got) == everything
    references = reference_points(model, data)  # no resolver, no pass: see tests/reference.py
    assert sorted(everything) == sorted(references)
    graph = ks.to_graph(model)
    for address in everything:
        np.testing.assert_allclose(got[address], references[address], atol=1e-5, rtol=1e-5, err_msg=address)
        if address.endswith(":pre") and kinds.fused_activation(graph.nodes[address[:-4]]["op"]) is not None:
            act = graph.nodes[address[:-4]]["op"].activation
            np.testing.assert_allclose(keras.ops.convert_to_numpy(act(got[address])), got[address[:-4]], atol=1e-5, err_msg=address)
    # The probe shares every variable with the model.
    assert {id(v) for v in probe.weights} <= {id(v) for v in model.weights}
    assert_unchanged(model, before)
    assert_roundtrip(probe, data, tmp_path)


@pytest.mark.backend
class TestExpose:
    def test_dense_pre_is_x_w_plus_b(self):
        model = mlp()
        data = sample_inputs(model)
        out = ks.expose(model, ["dense_1", "dense_2:pre", "predictions:pre", "predictions"]).predict(data, verbose=0)
        w, b = model.get_layer("dense_2").get_weights()
        np.testing.assert_allclose(out["dense_2:pre"], out["dense_1"] @ w + b, atol=1e-5)
        np.testing.assert_allclose(out["predictions"], model.predict(data, verbose=0), atol=1e-6)

    def test_conv_pre_is_conv_plus_bias(self):
        model = cnn_bn()
        data = sample_inputs(model)
        out = ks.expose(model, ["conv:pre", "conv"]).predict(data, verbose=0)
        conv = model.get_layer("conv")
        ref = keras.ops.conv(data, conv.kernel, strides=1, padding="same") + conv.bias
        np.testing.assert_allclose(out["conv:pre"], keras.ops.convert_to_numpy(ref), atol=1e-4)
        np.testing.assert_allclose(out["conv"], np.maximum(out["conv:pre"], 0), atol=1e-6)
        assert (out["conv:pre"] < 0).any()  # a real pre-activation, not the relu output

    def test_logits_fused_or_separate_softmax(self):
        model = mlp()
        data = sample_inputs(model)
        logits = ks.expose(model, [f"{model.layers[-1].name}:pre"]).predict(data, verbose=0)["predictions:pre"]
        split = ks.split_activations(model)
        logits_split = ks.expose(split, [f"{split.layers[-1].name}:pre"]).predict(data, verbose=0)
        np.testing.assert_allclose(logits, logits_split["predictions_activation:pre"], atol=1e-5)
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        np.testing.assert_allclose(probs, model.predict(data, verbose=0), atol=1e-5)

    def test_keep_outputs_and_glob_keys(self):
        model = mlp()
        probe = ks.expose(model, ["dense_*"], keep_outputs=True)
        assert sorted(probe.output) == ["dense_1", "dense_2", "predictions"]

    def test_nested_and_shared_addresses(self):
        """Keras fails here with 'not connected to inputs'; expose does not."""
        from zoo import nested_functional

        model = nested_functional()
        data = sample_inputs(model)
        inner = model.get_layer("encoder")
        with pytest.raises(ValueError):
            keras.Model(model.input, inner.get_layer("inner_dense").output)
        out = ks.expose(model, ["encoder/inner_dense:pre", "encoder/inner_dense"]).predict(data, verbose=0)
        w, b = inner.get_layer("inner_dense").get_weights()
        np.testing.assert_allclose(out["encoder/inner_dense:pre"], data @ w + b, atol=1e-5)
        np.testing.assert_allclose(out["encoder/inner_dense"], np.maximum(data @ w + b, 0), atol=1e-5)

        model = shared()
        data = sample_inputs(model)
        out = ks.expose(model, ["shared@0", "shared@1:pre"]).predict(data, verbose=0)
        w, b = model.get_layer("shared").get_weights()
        np.testing.assert_allclose(out["shared@1:pre"], out["shared@0"] @ w + b, atol=1e-5)

    def test_attention_scores(self):
        model = attention()
        data = sample_inputs(model)
        out = ks.expose(model, ["embed", "mha:scores", "gqa:scores"]).predict(data, verbose=0)
        assert out["mha:scores"].shape == (4, 2, 5, 5)
        assert out["gqa:scores"].shape == (4, 2, 5, 5)
        np.testing.assert_allclose(out["mha:scores"].sum(-1), 1.0, atol=1e-5)
        mha = model.get_layer("mha")
        _, ref = mha(out["embed"], out["embed"], attention_mask=data[1], return_attention_scores=True)
        np.testing.assert_allclose(out["mha:scores"], keras.ops.convert_to_numpy(ref), atol=1e-5)

    def test_cross_attention_scores_and_outputs(self):
        """Query, key and value from different tensors: each :scores equals a direct call of
        the layer on inputs computed here by hand (no graph, no interpreter)."""
        from zoo import cross_attention

        model = cross_attention()
        data = sample_inputs(model)
        queries, memory, mask = data
        points = ["cross", "cross:scores", "cross_pos", "cross_pos:scores", "cross_gqa:scores"]
        out = ks.expose(model, points).predict(data, verbose=0)

        def dense(name, x, act=lambda t: t):
            w, b = model.get_layer(name).get_weights()
            return act(x @ w + b)

        qh = dense("q_proj", queries, lambda t: np.maximum(t, 0))
        kh, v = dense("k_proj", memory, np.tanh), dense("v_proj", memory)
        a, scores = model.get_layer("cross")(qh, memory, key=kh, attention_mask=mask, return_attention_scores=True)
        b, scores_pos = model.get_layer("cross_pos")(a, memory, return_attention_scores=True)
        _, scores_gqa = model.get_layer("cross_gqa")(b, v, key=kh, return_attention_scores=True)
        want = {"cross": a, "cross:scores": scores, "cross_pos": b, "cross_pos:scores": scores_pos,
                "cross_gqa:scores": scores_gqa}
        assert out["cross:scores"].shape == (4, 2, 3, 5) and out["cross_pos:scores"].shape == (4, 1, 3, 5)
        for address in points:
            np.testing.assert_allclose(out[address], keras.ops.convert_to_numpy(want[address]), atol=1e-5,
                                       err_msg=address)

    def test_only_needed_part_is_computed(self):
        model = cnn_bn()
        probe = ks.expose(model, ["conv"])
        assert [layer.name for layer in probe.layers] == ["image", "conv"]

    def test_training_the_model_moves_the_probe(self):
        model = mlp()
        probe = ks.expose(model, ["dense_2:pre"])
        data = sample_inputs(model, batch=16)
        before = probe.predict(data, verbose=0)["dense_2:pre"]
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
        model.fit(data, np.eye(3)[np.arange(16) % 3], epochs=2, verbose=0)
        after = probe.predict(data, verbose=0)["dense_2:pre"]
        assert np.abs(after - before).max() > 1e-3
        h = ks.expose(model, ["dense_1"]).predict(data, verbose=0)["dense_1"]
        w, b = model.get_layer("dense_2").get_weights()
        np.testing.assert_allclose(after, h @ w + b, atol=1e-5)

    @pytest.mark.parametrize(
        "points, match",
        [
            (["dense_1:pre", "x:pre"], "'x' .* has no ':pre' port"),
            (["dense_1:scores"], "not an attention layer"),
            (["nothing_*"], "matches none"),
            ([], "at least one"),
            (["conv"], "names no layer"),
        ],
    )
    def test_bad_points(self, points, match):
        model = mlp()
        before = snapshot(model)
        with pytest.raises(ks.AddressError, match=match):
            ks.expose(model, points)
        assert_unchanged(model, before)

    def test_points_of_a_different_model(self):
        model = mlp()
        before = snapshot(model)
        with pytest.raises(ks.AddressError, match="names no layer") as info:
            ks.expose(model, ks.points(cnn_bn(), "conv*"))
        assert "kerasurgery.points(model)" in str(info.value)
        assert_unchanged(model, before)

    def test_pre_without_activation_names_points_that_have_one(self):
        from zoo import branches

        with pytest.raises(ks.AddressError, match="has no ':pre' port") as info:
            ks.expose(branches(), ["out:pre"])
        assert set(info.value.suggestions) <= {"a:pre", "b:pre"} and info.value.suggestions


@pytest.mark.backend
@pytest.mark.parametrize("name", sorted(ZOO))
def test_split_activations_over_zoo(name, tmp_path):
    model = ZOO[name]()
    data = sample_inputs(model)
    before = snapshot(model)
    split = ks.split_activations(model)
    assert_same_outputs(model, split, data)
    assert_unchanged(model, before)
    flat = list(split._flatten_layers(include_self=False))
    assert not [layer.name for layer in flat if kinds.fused_activation(layer) is not None]
    fused = {d["name"] for _, d in ks.to_graph(model).nodes(data=True) if d.get("activation")}
    names = {layer.name for layer in flat}
    assert {f"{n}_activation" for n in fused} <= names and fused <= names
    assert not {id(v) for v in split.weights} & {id(v) for v in model.weights}
    assert_roundtrip(split, data, tmp_path)


@pytest.mark.backend
class TestSplitActivations:
    def test_keeps_names_and_weights(self):
        model = mlp()
        split = ks.split_activations(model)
        assert [layer.name for layer in split.layers] == [
            "x", "dense_1", "dense_1_activation", "dense_2", "dense_2_activation",
            "predictions", "predictions_activation",
        ]
        for name in ("dense_1", "dense_2", "predictions"):
            for a, b in zip(model.get_layer(name).get_weights(), split.get_layer(name).get_weights()):
                np.testing.assert_array_equal(a, b)
            assert split.get_layer(name).get_config()["activation"] == "linear"
            # Copies are built with cheap initializers, but keep the original ones in their config.
            for key in ("kernel_initializer", "bias_initializer"):
                assert split.get_layer(name).get_config()[key] == model.get_layer(name).get_config()[key]

    def test_nested_sequential_keeps_every_activation(self):
        """keras clone_model(call_function=..., recursive=True) drops these; we must not."""
        model = nested_sequential()
        data = sample_inputs(model)
        split = ks.split_activations(model)
        assert {"seq_dense_activation", "seq_out_activation", "head_activation"} <= {layer.name for layer in split.layers}
        assert_same_outputs(model, split, data, atol=1e-6)

    def test_selected_layers_by_name_and_glob(self):
        model = mlp()
        data = sample_inputs(model)
        split = ks.split_activations(model, ["dense_*"])
        names = [layer.name for layer in split.layers]
        assert "dense_1_activation" in names and "predictions_activation" not in names
        assert split.get_layer("predictions").get_config()["activation"] == "softmax"
        assert_same_outputs(model, split, data)

    def test_shared_layer_splits_every_call(self):
        model = shared()
        split = ks.split_activations(model, "shared")
        assert_same_outputs(model, split, sample_inputs(model))
        assert sum(1 for layer in split.layers if layer.name == "shared_activation") == 1

    def test_unknown_layer(self):
        with pytest.raises(ks.AddressError, match="names no layer") as info:
            ks.split_activations(mlp(), ["dense_3"])
        assert "dense_1" in info.value.suggestions or "dense_2" in info.value.suggestions

    def test_layer_with_nothing_to_split(self):
        from zoo import branches

        model = branches()
        before = snapshot(model)
        with pytest.raises(ks.TransformError, match="'concat' \\(Concatenate.*nothing to split"):
            ks.split_activations(model, ["concat"])
        assert_unchanged(model, before)


@pytest.mark.backend
@pytest.mark.parametrize("name", sorted(ZOO))
def test_insert_taps_over_zoo(name, tmp_path):
    model = ZOO[name]()
    data = sample_inputs(model)
    before = snapshot(model)
    wanted = [p for p in ks.points(model) if not p.endswith(":scores")]
    tapped = ks.insert_taps(model, wanted)
    assert_same_outputs(model, tapped, data)
    taps = [layer for layer in tapped.layers if isinstance(layer, Tap)]
    assert len(taps) == len(wanted)
    assert {id(v) for v in tapped.weights} == {id(v) for v in model.weights}
    assert_unchanged(model, before)
    assert_roundtrip(tapped, data, tmp_path)


@pytest.mark.backend
class TestInsertTaps:
    def test_taps_are_named_points_with_the_right_values(self):
        model = mlp()
        data = sample_inputs(model)
        tapped = ks.insert_taps(model, ["dense_1", "dense_2:pre"])
        assert {"dense_1_tap", "dense_2_pre_tap"} <= set(ks.points(tapped))
        got = ks.expose(tapped, ["dense_1_tap", "dense_2_pre_tap"]).predict(data, verbose=0)
        want = ks.expose(model, ["dense_1", "dense_2:pre"]).predict(data, verbose=0)
        np.testing.assert_allclose(got["dense_1_tap"], want["dense_1"], atol=1e-6)
        np.testing.assert_allclose(got["dense_2_pre_tap"], want["dense_2:pre"], atol=1e-6)

    def test_activation_layer_pre_taps_only_that_edge(self):
        model = cnn_bn()
        tapped = ks.insert_taps(model, ["relu:pre"])
        graph = ks.to_graph(tapped)
        assert list(graph.successors("bn")) == ["relu_pre_tap"]
        assert_same_outputs(model, tapped, sample_inputs(model))

    def test_scores_refused(self):
        with pytest.raises(ks.TransformError, match="use|Use"):
            ks.insert_taps(attention(), ["mha:scores"])


@pytest.mark.backend
class TestProbePair:
    def test_shared_with_model(self):
        model = mlp()
        training, checking = ks.probe_pair(model, ["dense_1:pre"])
        ids = {id(v) for v in model.weights}
        assert {id(v) for v in training.weights} == ids and {id(v) for v in checking.weights} <= ids

    def test_copy_detaches_and_fit_moves_checking(self):
        model = mlp()
        before = snapshot(model)
        training, checking = ks.probe_pair(model, ["dense_2:pre", "dense_1"], copy=True)
        assert not {id(v) for v in training.weights} & {id(v) for v in model.weights}
        assert {id(v) for v in checking.weights} <= {id(v) for v in training.weights}
        data = sample_inputs(model, batch=16)
        first = checking.predict(data, verbose=0)["dense_2:pre"]
        training.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
        training.train_on_batch(data, np.eye(3)[np.arange(16) % 3])
        out = checking.predict(data, verbose=0)
        assert np.abs(out["dense_2:pre"] - first).max() > 1e-4
        w, b = training.get_layer("dense_2").get_weights()
        np.testing.assert_allclose(out["dense_2:pre"], out["dense_1"] @ w + b, atol=1e-5)
        assert_unchanged(model, before)

    def test_bad_points_fail_before_copying(self):
        with pytest.raises(ks.AddressError):
            ks.probe_pair(mlp(), ["nope"], copy=True)


@pytest.mark.backend
class TestCompare:
    def test_equal_and_different(self):
        model = mlp()
        data = sample_inputs(model, batch=8)
        report = ks.compare(model, ks.split_activations(model), data)
        assert report["predictions"]["max_abs"] < 1e-6 and report["predictions"]["shape"] == (8, 3)
        other = ks.split_activations(model)
        other.get_layer("dense_1").kernel.assign(other.get_layer("dense_1").kernel * 2.0)
        assert ks.compare(model, other, data)["predictions"]["max_abs"] > 1e-4

    def test_max_abs_and_max_rel_by_hand(self):
        """Two outputs on different scales, where max|a| != max|b| and the element with the largest
        difference is not the one with the largest relative difference."""
        x = keras.Input((2,), name="x")
        model_a = keras.Model(x, [keras.layers.Dense(2, use_bias=False, name="small")(x),
                                  keras.layers.Dense(3, use_bias=False, name="large")(x)])
        model_a.get_layer("small").set_weights([np.array([[1.0, 0.0], [0.0, 0.5]], "float32")])
        model_a.get_layer("large").set_weights([np.array([[10.0, -40.0, 0.0], [0.0, 0.0, 1.0]], "float32")])
        model_b = ks.split_activations(model_a)
        model_b.get_layer("small").set_weights([np.array([[1.5, 0.0], [0.0, 0.5]], "float32")])
        model_b.get_layer("large").set_weights([np.array([[10.0, -40.0, 0.0], [0.0, 0.0, 3.0]], "float32")])
        data = np.array([[1.0, 2.0], [-2.0, 1.0], [0.5, 0.0]], "float32")
        a_small, b_small = data * [1.0, 0.5], data * [1.5, 0.5]
        a_large = np.stack([10 * data[:, 0], -40 * data[:, 0], data[:, 1]], -1)
        b_large = np.stack([10 * data[:, 0], -40 * data[:, 0], 3 * data[:, 1]], -1)
        report = ks.compare(model_a, model_b, data)
        # small: |a - b| = 0.5 |x0|, largest 1.0 at x0 = -2; max|a| = 2.0 (max|b| = 3.0)
        assert report["small"] == {"max_abs": 1.0, "max_rel": 0.5, "shape": (3, 2)}
        # large: |a - b| = 2 |x1|, largest 4.0; max|a| = 80 (from -40 * -2): 4 / 80 = 0.05
        assert report["large"]["max_abs"] == pytest.approx(4.0) and report["large"]["max_rel"] == pytest.approx(0.05)
        for name, a, b in (("small", a_small, b_small), ("large", a_large, b_large)):
            assert report[name]["max_abs"] == pytest.approx(np.abs(a - b).max())
            assert report[name]["max_rel"] == pytest.approx(np.abs(a - b).max() / np.abs(a).max())
        # zero reference: 0 when both are zero, infinity otherwise
        zero = keras.Model(x, keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros", name="z")(x))
        other = keras.Model(x, keras.layers.Dense(1, use_bias=False, kernel_initializer="ones", name="z")(x))
        assert ks.compare(zero, zero, data)["z"]["max_rel"] == 0.0
        assert ks.compare(zero, other, data)["z"]["max_rel"] == float("inf")

    def test_dict_outputs(self):
        from zoo import multi_io

        model = multi_io()
        report = ks.compare(model, ks.to_model(ks.to_graph(model)), sample_inputs(model))
        assert set(report) == {"cls", "reg"} and all(r["max_abs"] == 0 for r in report.values())

    def test_mismatched_models(self):
        with pytest.raises(ks.DataError, match="same outputs"):
            from zoo import multi_io

            ks.compare(multi_io(), ks.expose(multi_io(), ["cls", "reg", "cat"]), sample_inputs(multi_io()))


@pytest.mark.backend
def test_split_layers_by_predicate():
    model = mlp()
    split = ks.split_activations(model, lambda key: key.startswith("dense"))
    names = [layer.name for layer in split.layers]
    assert "dense_2_activation" in names and "predictions_activation" not in names
    assert_same_outputs(model, split, sample_inputs(model))
    with pytest.raises(ks.AddressError, match="accepted none"):
        ks.split_activations(model, lambda key: False)
    with pytest.raises(ks.TransformError, match="selects none"):
        ks.split_activations(model, lambda key: key == "x")
    with pytest.raises(ks.AddressError, match="Expected `layers`"):
        ks.split_activations(model, 3)


@pytest.mark.backend
class TestBackendRegressions:
    def test_pre_activation_never_touches_the_wrapped_layer(self):
        """PreActivation used to swap the layer's activation during its call: a concurrent
        call of the original model (every eager pass, every pass on torch) then lost its relu."""
        seen = []

        class SpyDense(keras.layers.Dense):
            def call(self, inputs):
                seen.append(original.activation)
                return super().call(inputs)

        original = SpyDense(4, activation="relu", name="spy")
        x = keras.Input((3,), name="x")
        model = keras.Model(x, original(x))
        seen.clear()
        data = np.random.default_rng(0).standard_normal((5, 3)).astype("float32")
        pre = ks.expose(model, ["spy:pre"])(data)["spy:pre"]
        assert seen and all(fn is original.activation for fn in seen)
        w, b = original.get_weights()
        np.testing.assert_allclose(keras.ops.convert_to_numpy(pre), data @ w + b, atol=1e-5)

    def test_original_runs_correctly_while_a_probe_runs_in_another_thread(self):
        import threading

        x = keras.Input((16,), name="x")
        model = keras.Model(x, keras.layers.Dense(16, activation="relu", name="d")(x))
        probe = ks.expose(model, ["d:pre"])
        data = np.random.default_rng(0).standard_normal((4, 16)).astype("float32")
        done = threading.Event()

        def run_probe():
            while not done.is_set():
                probe(data)

        thread = threading.Thread(target=run_probe)
        thread.start()
        try:
            negative = sum(bool((keras.ops.convert_to_numpy(model(data)) < 0).any()) for _ in range(150))
        finally:
            done.set()
            thread.join()
        assert negative == 0

    def test_copies_do_not_share_buffers_with_the_original(self):
        """On JAX, predict/fit donate the model's state: a copy whose variables held the
        original's very arrays deleted the original's weights."""
        model = mlp()
        data = sample_inputs(model, batch=8)
        before = snapshot(model)
        split = ks.split_activations(model)
        split.predict(data, verbose=0)
        training, checking = ks.probe_pair(model, ["dense_2:pre"], copy=True)
        checking.predict(data, verbose=0)
        training.compile(optimizer="sgd", loss="mse")
        training.fit(data, np.zeros((8, 3), "float32"), epochs=1, verbose=0)
        assert_unchanged(model, before)
        model.predict(data, verbose=0)


@pytest.mark.backend
def test_insert_taps_refuses_points_that_feed_no_output():
    """Found by the fuzzer: the tap of an unused input was silently dropped."""
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="unused")
    model = keras.Model([a, b], keras.layers.Dense(2, name="d")(a))
    with pytest.raises(ks.TransformError, match=r"\['unused'\], which feed no output"):
        ks.insert_taps(model, ["a", "unused", "d"])
    tapped = ks.insert_taps(model, ["a", "d"])
    assert [layer.name for layer in tapped.layers if isinstance(layer, Tap)] == ["a_tap", "d_tap"]
    x = keras.Input((4,), name="x")
    _, second = keras.ops.split(x, [1], axis=-1)  # one output used, one not
    model = keras.Model(x, keras.layers.Dense(2, name="d")(second))
    split = ks.points(model)[1].removesuffix("[0]")  # the raw op's name depends on what ran before
    with pytest.raises(ks.TransformError, match=rf"\['{split}\[0\]'\], which feed no output"):
        ks.insert_taps(model, ks.points(model))
    assert len([layer for layer in ks.insert_taps(model, [f"{split}[1]"]).layers if isinstance(layer, Tap)]) == 1
