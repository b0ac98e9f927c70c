"""to_graph / to_model / check_graph over the zoo, user edits, bad input."""

import keras
import numpy as np
import pytest

import kerasurgery as ks
from kerasurgery.ir.schema import Ref, Slot
from zoo import (
    ZOO,
    assert_roundtrip,
    assert_same_outputs,
    assert_unchanged,
    attention,
    branches,
    mlp,
    multi_io,
    nested_functional,
    nested_sequential,
    sample_inputs,
    shared,
    siamese,
    snapshot,
)


@pytest.mark.backend
@pytest.mark.parametrize("name", sorted(ZOO))
def test_round_trip_over_zoo(name, tmp_path):
    model = ZOO[name]()
    data = sample_inputs(model)
    before = snapshot(model)
    graph = ks.to_graph(model)
    ks.check_graph(graph)
    rebuilt = ks.to_model(graph)
    assert_same_outputs(model, rebuilt, data)
    assert_unchanged(model, before)
    assert_roundtrip(rebuilt, data, tmp_path)
    # Weights are shared, not copied.
    ids = {id(v) for v in model.weights}
    assert ids == {id(v) for v in rebuilt.weights}


@pytest.mark.backend
class TestSchema:
    def test_node_attributes(self):
        graph = ks.to_graph(mlp())
        d = graph.nodes["dense_1"]
        assert d["kind"] == "layer" and d["class_name"] == "Dense" and d["name"] == "dense_1"
        assert d["path"] == () and d["call"] == 0 and d["activation"] == "relu"
        assert d["args"] == (Slot("0"),) and d["output_shapes"] == [(None, 16)]
        assert d["output_dtypes"] == ["float32"]
        assert graph.nodes["x"]["kind"] == "input"
        assert graph.graph["inputs"] == "x"
        assert graph.graph["outputs"] == Ref("predictions", 0)
        assert graph.graph["name"] == "mlp"

    def test_edges_name_their_slots(self):
        graph = ks.to_graph(branches())
        assert graph.edges["add", "concat"]["feeds"] == [(0, "0.0")]
        assert graph.edges["sub", "concat"]["feeds"] == [(0, "0.1")]
        assert graph.edges["x", "concat"]["feeds"] == [(0, "0.2")]
        assert graph.edges["a", "sub"]["feeds"] == [(0, "0.1")]

    def test_keyword_arguments(self):
        graph = ks.to_graph(attention())
        mha = graph.nodes["mha"]
        assert set(mha["kwargs"]) >= {"query", "value", "key", "attention_mask"}
        assert sorted(graph.edges["embed", "mha"]["feeds"]) == [(0, "key"), (0, "query"), (0, "value")]
        assert graph.edges["mask", "mha"]["feeds"] == [(0, "attention_mask")]

    def test_attention_arguments_keep_their_roles(self):
        """Query, value and key come from three different tensors: each slot is fed by its own."""
        from zoo import cross_attention

        graph = ks.to_graph(cross_attention())
        feeds = {(p, i, s) for p, _, e in graph.in_edges("cross", data=True) for i, s in e["feeds"]}
        assert feeds == {("q_proj", 0, "query"), ("memory", 0, "value"), ("k_proj", 0, "key"),
                         ("cross_mask", 0, "attention_mask")}
        feeds = {(p, s) for p, _, e in graph.in_edges("cross_pos", data=True) for _, s in e["feeds"]}
        assert feeds == {("cross", "0"), ("memory", "1")} and graph.nodes["cross_pos"]["args"] == (Slot("0"), Slot("1"))
        feeds = {(p, s) for p, _, e in graph.in_edges("cross_gqa", data=True) for _, s in e["feeds"]}
        assert feeds == {("cross_pos", "0"), ("v_proj", "1"), ("k_proj", "2")}

    def test_raw_ops_are_nodes(self):
        from zoo import raw_ops

        graph = ks.to_graph(raw_ops())
        by_class = {d["class_name"]: d for _, d in graph.nodes(data=True)}
        assert {by_class[c]["kind"] for c in ("Add", "Multiply", "Tanh", "Mean")} == {"op"}
        assert by_class["Multiply"]["args"] == (Slot("0"), 2.0)
        assert by_class["Concatenate"]["kind"] == "op"  # keras.ops.concatenate, not the layer

    def test_shared_layer_one_node_per_call(self):
        graph = ks.to_graph(shared())
        assert graph.nodes["shared@0"]["op"] is graph.nodes["shared@1"]["op"]
        assert graph.nodes["shared@1"]["call"] == 1
        assert graph.has_edge("shared@0", "shared@1")

    def test_nested_models_are_inlined_with_paths(self):
        graph = ks.to_graph(nested_functional())
        assert "encoder/inner_dense" in graph and "encoder" not in graph
        assert graph.nodes["encoder/inner_dense"]["path"] == ("encoder",)
        # training=False given to the nested call reaches the inner calls.
        assert graph.nodes["encoder/inner_drop"]["kwargs"]["training"] is False
        graph = ks.to_graph(nested_sequential())
        assert list(graph.successors("x")) == ["block/seq_dense"]

    def test_deep_nesting_and_siamese(self):
        from zoo import deep_nested

        assert "mid/leaf/leaf_dense" in ks.to_graph(deep_nested())
        graph = ks.to_graph(siamese())
        assert {"encoder/proj@0", "encoder/proj@1"} <= set(graph)
        assert graph.has_edge("left", "encoder/proj@0") and graph.has_edge("right", "encoder/proj@1")

    def test_dict_inputs_and_outputs(self):
        model = multi_io()
        graph = ks.to_graph(model)
        assert graph.graph["inputs"] == {"a": "a", "b": "b"}
        assert graph.graph["outputs"] == {"cls": Ref("cls"), "reg": Ref("reg")}
        rebuilt = ks.to_model(graph)
        assert set(rebuilt.output) == {"cls", "reg"}

    def test_multi_output_layer(self):
        from zoo import recurrent

        graph = ks.to_graph(recurrent())
        assert len(graph.nodes["lstm"]["output_shapes"]) == 3
        assert sorted(graph.edges["lstm", "cat"]["feeds"]) == [(1, "0.1"), (2, "0.2")]


@pytest.mark.backend
class TestTrainingSemantics:
    def test_nested_training_false_survives_like_keras(self):
        """Keras lets an outer training=True override a nested training=False: so do we."""
        inner_in = keras.Input((4,))
        inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="bn")(inner_in), name="inner")
        x = keras.Input((4,), name="x")
        model = keras.Model(x, inner(x, training=False))
        inner.get_layer("bn").moving_mean.assign(np.full((4,), 3.0, "float32"))
        rebuilt = ks.to_model(ks.to_graph(model))
        data = np.random.default_rng(0).standard_normal((8, 4)).astype("float32")
        for training in (None, False, True):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(model(data, training=training)),
                keras.ops.convert_to_numpy(rebuilt(data, training=training)),
                atol=1e-5,
            )


ABSENT = "absent"  # the call has no `training` argument at all (not even None)


def _call(layer, x, training):
    return layer(x) if training is ABSENT else layer(x, training=training)


def _three_levels(outer_training, mid_training, drop_training):
    """model(x) -> outer(x, training=outer_training) -> mid(h, training=mid_training)
    -> Dropout(training=drop_training): a dropout two nested models down."""
    z = keras.Input((64,), name="z")
    mid = keras.Model(z, _call(keras.layers.Dropout(0.5, name="drop"), z, drop_training), name="mid")
    h = keras.Input((64,), name="h")
    outer = keras.Model(h, _call(mid, h, mid_training), name="outer")
    x = keras.Input((64,), name="x")
    return keras.Model(x, _call(outer, x, outer_training), name="top")


def _dropout_mode(output) -> str:
    """'train' if the dropout dropped (values 0 or 2 on ones), 'infer' if it passed ones through."""
    values = keras.ops.convert_to_numpy(output)
    if np.array_equal(values, np.ones_like(values)):
        return "infer"
    assert set(np.unique(values)) <= {0.0, 2.0} and (values == 0).any(), values
    return "train"


@pytest.mark.backend
class TestNestedTraining:
    SETTINGS = (ABSENT, None, False, True)

    @pytest.mark.parametrize("outer_training", SETTINGS, ids=str)
    def test_every_combination_runs_like_keras(self, outer_training):
        """For each `training` given (or not) to outer, mid and the dropout, and each value at run
        time, the rebuilt model and a probe of the dropout run it in the mode Keras itself does."""
        ones = np.ones((4, 64), "float32")
        seen = set()
        for mid_training in self.SETTINGS:
            for drop_training in self.SETTINGS:
                model = _three_levels(outer_training, mid_training, drop_training)
                graph = ks.to_graph(model)
                rebuilt = ks.to_model(graph)
                probe = ks.expose(model, ["outer/mid/drop"])
                for run in (ABSENT, False, True):
                    case = (outer_training, mid_training, drop_training, run)
                    keras_mode = _dropout_mode(_call(model, ones, run))
                    assert _dropout_mode(_call(rebuilt, ones, run)) == keras_mode, case
                    assert _dropout_mode(_call(probe, ones, run)["outer/mid/drop"]) == keras_mode, case
                    seen.add(keras_mode)
                # In the graph: the first value given from the outside in (Keras records a dropout
                # called without `training` with its signature default, False).
                own = False if drop_training is ABSENT else drop_training
                given = [t for t in (outer_training, mid_training, own) if t not in (ABSENT, None)]
                assert graph.nodes["outer/mid/drop"]["kwargs"].get("training") == (given[0] if given else None)
        assert seen == {"train", "infer"}


@pytest.mark.backend
class TestEdits:
    def test_replace_an_operation(self):
        model = mlp()
        graph = ks.to_graph(model)
        graph.nodes["dense_2"]["op"] = keras.layers.Dense(8, activation="relu", name="now_relu")
        edited = ks.to_model(graph)
        assert "now_relu" in [layer.name for layer in edited.layers]
        data = sample_inputs(model)
        h = ks.expose(model, ["dense_1"]).predict(data, verbose=0)["dense_1"]
        w2, b2 = edited.get_layer("now_relu").get_weights()
        w, b = model.get_layer("predictions").get_weights()
        logits = np.maximum(h @ w2 + b2, 0) @ w + b
        expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        np.testing.assert_allclose(edited.predict(data, verbose=0), expected, atol=1e-5)

    def test_remove_a_node_and_rewire(self):
        model = mlp()
        graph = ks.to_graph(model)
        graph.remove_node("dense_2")
        with pytest.raises(ks.GraphError, match="slot '0' is not fed"):
            ks.check_graph(graph)
        model_b = mlp()  # a graph where dense_1 feeds predictions needs a 16-wide predictions layer
        graph.nodes["predictions"]["op"] = keras.layers.Dense(3, activation="softmax", name="new_head")
        graph.add_edge("dense_1", "predictions", feeds=[(0, "0")])
        edited = ks.to_model(graph)
        assert [layer.name for layer in edited.layers] == ["x", "dense_1", "new_head"]
        data = sample_inputs(model)
        h = ks.expose(model, ["dense_1"]).predict(data, verbose=0)["dense_1"]
        w, b = edited.get_layer("new_head").get_weights()
        logits = h @ w + b
        np.testing.assert_allclose(
            edited.predict(data, verbose=0), np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), atol=1e-5
        )
        del model_b

    def test_add_a_node(self):
        model = mlp()
        graph = ks.to_graph(model)
        graph.add_node("scale", op=keras.layers.Rescaling(0.5, name="scale"), kind="layer",
                       args=(Slot("0"),), kwargs={}, output_shapes=[(None, 3)])
        graph.add_edge("predictions", "scale", feeds=[(0, "0")])
        graph.graph["outputs"] = Ref("scale")
        data = sample_inputs(model)
        np.testing.assert_allclose(ks.to_model(graph).predict(data, verbose=0),
                                   0.5 * model.predict(data, verbose=0), atol=1e-6)

    @pytest.mark.parametrize("name", ["mlp", "cross_attention", "nested_functional", "shared"])
    def test_input_graph_untouched_by_to_model(self, name):
        def by_value(graph):  # repr, not references: an edit in place of a feeds list shows
            nodes = {k: (id(d["op"]), repr({a: v for a, v in d.items() if a != "op"})) for k, d in graph.nodes(data=True)}
            return nodes, repr(list(graph.edges(data=True))), repr(graph.graph)

        graph = ks.to_graph(ZOO[name]())
        before = by_value(graph)
        ks.to_model(graph)
        assert by_value(graph) == before


@pytest.mark.backend
class TestCheckGraph:
    def problems(self, graph):
        with pytest.raises(ks.GraphError) as info:
            ks.check_graph(graph)
        return "\n".join(info.value.problems)

    def test_cycle(self):
        graph = ks.to_graph(mlp())
        graph.add_edge("dense_2", "dense_1", feeds=[(0, "0")])
        assert "cycle" in self.problems(graph)

    def test_fed_twice_and_unknown_slot(self):
        graph = ks.to_graph(mlp())
        graph.add_edge("x", "dense_2", feeds=[(0, "0"), (0, "bogus")])
        text = self.problems(graph)
        assert "fed 2 times" in text and "'bogus'" in text

    def test_missing_output_and_input(self):
        graph = ks.to_graph(mlp())
        graph.graph["outputs"] = [Ref("nope")]
        graph.graph["inputs"] = ["ghost"]
        text = self.problems(graph)
        assert "model output 'nope' is not a node" in text and "model input 'ghost' is not a node" in text

    def test_bad_output_index(self):
        graph = ks.to_graph(mlp())
        graph.graph["outputs"] = Ref("predictions", 3)
        assert "does not exist" in self.problems(graph)

    def test_to_model_reports_failing_call(self):
        graph = ks.to_graph(mlp())
        graph.nodes["dense_2"]["op"] = keras.layers.Reshape((5, 5), name="bad")
        with pytest.raises(ks.GraphError, match="calling node 'dense_2' \\(Reshape\\) failed"):
            ks.to_model(graph)

    @pytest.mark.parametrize("name", sorted(ZOO))
    def test_well_formed_and_each_broken_edge_found(self, name):
        """Every zoo graph passes; without any one of its edges it fails, naming what is unfed."""
        graph = ks.to_graph(ZOO[name]())
        ks.check_graph(graph)  # no error
        for parent, child, edge in list(graph.edges(data=True)):
            broken = graph.copy()  # edges removed only: nothing shared is edited
            broken.remove_edge(parent, child)
            with pytest.raises(ks.GraphError) as info:
                ks.check_graph(broken)
            assert info.value.problems == [
                f"node {child!r}: argument slot {slot!r} is not fed by any edge" for _, slot in edge["feeds"]
            ], (parent, child)


@pytest.mark.backend
class TestBadInput:
    def test_unbuilt_sequential(self):
        model = keras.Sequential([keras.layers.Dense(2)])
        with pytest.raises(ks.ModelError, match="build"):
            ks.to_graph(model)

    def test_a_subclassed_model_is_traced(self):
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.d = keras.layers.Dense(2, bias_initializer="ones", name="d")

            def call(self, x):
                return keras.ops.tanh(self.d(x)) * 2.0

        net = Net()
        x = np.random.default_rng(0).normal(size=(3, 3)).astype("float32")
        net(x)
        graph = ks.to_graph(net)
        assert [k for k in graph.nodes if graph.nodes[k]["kind"] != "input"] == ["d", "tanh", "multiply"]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ks.to_model(graph)(x)),
                                   keras.ops.convert_to_numpy(net(x)), atol=1e-6)

    def test_a_layer_or_other_object(self):
        with pytest.raises(ks.ModelError, match="not been built"):
            ks.to_graph(keras.layers.Dense(2))
        with pytest.raises(ks.ModelError, match="Expected a keras.Model"):
            ks.to_graph("model.keras")

    def test_all_errors_are_value_errors(self):
        for cls in (ks.ModelError, ks.GraphError, ks.AddressError, ks.TransformError, ks.DataError):
            assert issubclass(cls, ValueError)


def test_rebuild_time_is_roughly_linear():
    import time

    def chain(n):
        x = keras.Input((4,), name="x")
        h = x
        for i in range(n):
            h = keras.layers.Dense(4, name=f"d{i}")(h)
        return ks.to_graph(keras.Model(x, h))

    small, large = chain(50), chain(200)
    t0 = time.perf_counter()
    ks.to_model(small)
    t1 = time.perf_counter()
    ks.to_model(large)
    t2 = time.perf_counter()
    # Generous: this is a smoke check; benchmarks/bench_graph.py measures it properly.
    assert (t2 - t1) / (t1 - t0) < 12
