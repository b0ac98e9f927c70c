"""The bad-input catalogue: one table of wrong calls across the API and the CLI.

Every row asserts the error type (a ValueError subclass for the API, exit 2
with one line on stderr and no traceback for the CLI), a helpful message, and
that nothing was written or changed: the model's snapshot and the folder's
listing are the same after the call.
"""

from __future__ import annotations

import zipfile

import keras
import networkx as nx
import numpy as np
import pytest

import kerasurgery as ks
from kerasurgery.cli.main import main
from kerasurgery.ir.schema import Ref
from zoo import assert_unchanged, attention, branches, mlp, recurrent, shared, snapshot


def _subclassed():
    """A subclassed model whose call() branches on a tensor value: it cannot be traced."""

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            if keras.ops.sum(x) > 0:  # value-dependent control flow
                return self.d(x)
            return -self.d(x)

    net = Net()
    net.build((None, 3))
    return net


def _cyclic_graph(model):
    g = ks.to_graph(model)
    g.add_edge("predictions", "dense_1", feeds=[(0, "0")])
    return g


def _graph_without_output(model):
    g = ks.to_graph(model)
    g.graph["outputs"] = Ref("ghost")
    return g


X = np.ones((6, 8), "float32")

# (id, call(model, tmp_path), error type, message regex). `model` is a fresh mlp().
API = [
    ("unbuilt-sequential", lambda m, p: ks.to_graph(keras.Sequential([keras.layers.Dense(2)])),
     ks.ModelError, "build"),
    ("untraceable-subclassed", lambda m, p: ks.to_graph(_subclassed()), ks.ModelError,
     r"layer 'net.*test_bad_inputs.py:\d+ \(if keras.ops.sum\(x\) > 0"),
    ("unbuilt-layer", lambda m, p: ks.to_graph(keras.layers.Dense(2)), ks.ModelError, "not been built.*inputs="),
    ("not-a-model", lambda m, p: ks.points("model.keras"), ks.ModelError, "Expected a keras.Model"),
    ("unknown-address", lambda m, p: ks.expose(m, ["dense_11"]), ks.AddressError, "Closest.*'dense_1'"),
    ("empty-points", lambda m, p: ks.expose(m, []), ks.AddressError, "at least one"),
    ("glob-matches-nothing", lambda m, p: ks.expose(m, ["conv*"]), ks.AddressError, "matches none"),
    ("unknown-port", lambda m, p: ks.expose(m, ["dense_1:post"]), ks.AddressError, "port among"),
    ("scores-on-dense", lambda m, p: ks.expose(m, ["dense_1:scores"]), ks.AddressError, "not an attention"),
    ("pre-on-input", lambda m, p: ks.expose(m, ["x:pre"]), ks.AddressError, "no ':pre' port"),
    ("pre-without-activation", lambda m, p: ks.expose(branches(), ["concat:pre"]), ks.AddressError,
     "ports: none.*'a:pre'"),
    ("ambiguous-shared", lambda m, p: ks.expose(shared(), ["shared"]), ks.AddressError, "shared@0.*shared@1"),
    ("call-site-out-of-range", lambda m, p: ks.expose(shared(), ["shared@2"]), ks.AddressError, "call site"),
    ("multi-output-without-index", lambda m, p: ks.expose(recurrent(), ["lstm"]), ks.AddressError,
     r"lstm\[0\]"),
    ("points-not-strings", lambda m, p: ks.expose(m, 42), ks.AddressError, "Received: 42"),
    ("malformed-address", lambda m, p: ks.expose(m, ["dense_1//x"]), ks.AddressError, "empty part"),
    ("split-unknown-layer", lambda m, p: ks.split_activations(m, ["dense_9"]), ks.AddressError, "names no layer"),
    ("split-nothing-to-split", lambda m, p: ks.split_activations(branches(), ["concat"]), ks.TransformError,
     "nothing to split"),
    ("split-empty", lambda m, p: ks.split_activations(m, []), ks.AddressError, "at least one"),
    ("tap-on-scores", lambda m, p: ks.insert_taps(attention(), ["mha:scores"]), ks.TransformError,
     "attention scores feed nothing"),
    ("probe-pair-unknown", lambda m, p: ks.probe_pair(m, ["nope"], copy=True), ks.AddressError, "names no layer"),
    ("graph-with-cycle", lambda m, p: ks.to_model(_cyclic_graph(m)), ks.GraphError, "cycle"),
    ("graph-missing-output", lambda m, p: ks.to_model(_graph_without_output(m)), ks.GraphError,
     "'ghost' is not a node"),
    ("check-not-a-graph", lambda m, p: ks.check_graph({"a": 1}), ks.GraphError, "networkx.DiGraph"),
    ("collect-wrong-shape", lambda m, p: ks.collect(m, np.ones((4, 5), "float32"), progress=False),
     ks.DataError, "x.*8.*5|5.*8"),
    ("collect-empty", lambda m, p: ks.collect(m, np.ones((0, 8), "float32"), progress=False), ks.DataError,
     "empty|no sample|no batch"),
    ("collect-batch-size-0", lambda m, p: ks.collect(m, X, batch_size=0, progress=False), ks.DataError,
     "batch_size"),
    ("collect-missing-folder", lambda m, p: ks.collect(m, X, path=p / "no" / "acts.h5", progress=False),
     ValueError, "does not exist|folder|directory"),
    ("collect-unknown-point", lambda m, p: ks.collect(m, X, ["dense_7"], progress=False), ks.AddressError,
     "dense_1"),
    ("calibrate-empty", lambda m, p: ks.calibrate(m, np.ones((0, 8), "float32"), progress=False), ks.DataError,
     "empty|no sample|no batch"),
    ("calibrate-batch-size", lambda m, p: ks.calibrate(m, X, batch_size=-1, progress=False), ks.DataError,
     "batch_size"),
    ("calibrate-unknown-point", lambda m, p: ks.calibrate(m, X, ["nope*"], progress=False), ks.AddressError,
     "matches none"),
    ("compare-different-outputs", lambda m, p: ks.compare(m, ks.expose(m, ["dense_1", "dense_2"]), X),
     ks.DataError, "same outputs"),
    ("collect-fixed-batch-too-large", lambda m, p: ks.collect(
        keras.Model(i := keras.Input((3,), batch_size=4), keras.layers.Dense(2)(i)),
        iter([np.ones((7, 3), "float32")]), path=p / "acts.h5", progress=False),
     ks.DataError, "at most 4 samples.*fixed batch size of 4.*Received: a batch of 7"),
    ("collect-fixed-batch-training-short", lambda m, p: ks.collect(
        keras.Model(i := keras.Input((3,), batch_size=4), keras.layers.Dense(2)(i)),
        np.ones((6, 3), "float32"), training=True, path=p / "acts.h5", progress=False),
     ks.DataError, "exactly 4 samples.*training mode.*Received: a batch of 2"),
    ("collect-wrong-nesting", lambda m, p: ks.collect(
        keras.Model([[a := keras.Input((2,), name="a"), b := keras.Input((1,), name="b")],
                     c := keras.Input((1,), name="c")], keras.layers.Concatenate()([a, b, c])),
        [[np.ones((2, 2))], [np.ones((2, 1)), np.ones((2, 1))]], progress=False),
     ks.DataError, r"nested as the model's inputs \[\['a', 'b'\], 'c'\]"),
    ("insert-unknown-point", lambda m, p: ks.insert_layer(m, "dense_9", keras.layers.Identity()), ks.AddressError,
     "Closest.*'dense_1'"),
    ("insert-other-shape", lambda m, p: ks.insert_layer(m, "dense_1", keras.layers.Dense(4)), ks.TransformError,
     r"'dense_2' \(Dense\) cannot accept \(None, 4\)"),
    ("replace-other-dtype", lambda m, p: ks.replace_layer(m, "dense_2", keras.layers.Dense(8, dtype="float16")),
     ks.TransformError, r"float16.*'predictions' \(Dense\) cannot accept"),
    ("delete-shape-changing", lambda m, p: ks.delete_layer(m, "dense_2"), ks.TransformError,
     r"Received: \(None, 16\), float32.*'predictions' \(Dense\) cannot accept"),
    ("delete-two-inputs", lambda m, p: ks.delete_layer(branches(), "add"), ks.TransformError, "taking 2 tensor"),
    ("patch-wrong-shape", lambda m, p: ks.patch(m, {"dense_1": np.zeros(15)}), ks.TransformError,
     r"per-sample shape of 'dense_1', \(16,\)"),
    ("patch-unknown-kind", lambda m, p: ks.patch(m, {"dense_1": "ones"}), ks.TransformError, "'zero', 'mean'"),
    ("patch-unknown-point", lambda m, p: ks.patch(m, {"dense_7": "zero"}), ks.AddressError, "dense_1"),
]


@pytest.mark.parametrize("case, call, error, match", API, ids=[row[0] for row in API])
def test_api(case, call, error, match, tmp_path):
    # Cases whose address has close valid ones: a suggestion each must offer (an independent
    # expectation: what a user meant).
    close = {
        "unknown-address": "dense_1", "unknown-port": "dense_1:pre", "pre-on-input": "dense_1:pre",
        "pre-without-activation": "a:pre", "ambiguous-shared": "shared@0", "call-site-out-of-range": "shared@1",
        "multi-output-without-index": "lstm[0]", "split-unknown-layer": "dense_1",
        "collect-unknown-point": "dense_1",
    }
    model = mlp()
    before = snapshot(model)
    listing = sorted(tmp_path.rglob("*"))
    with pytest.raises(error, match=match) as info:
        call(model, tmp_path)
    message = str(info.value)
    assert isinstance(info.value, ks.KerasurgeryError), type(info.value)
    # "Expected ... Received: ..." in that order (Keras's form), on every error.
    expected, received = message.lower().find("expected"), message.find("Received")
    assert 0 <= expected < received, f"not of the form 'Expected ... Received: ...': {message!r}"
    if isinstance(info.value, ks.AddressError):
        assert "kerasurgery.points(model)" in message
        for suggestion in info.value.suggestions:
            assert repr(suggestion) in message
        if case in close:
            assert close[case] in info.value.suggestions, (case, info.value.suggestions)
            assert "Closest valid addresses" in message
    assert_unchanged(model, before)
    assert sorted(tmp_path.rglob("*")) == listing, "something was written"


def test_collect_refuses_existing_file_unless_overwrite(tmp_path):
    model = mlp()
    target = tmp_path / "acts.h5"
    target.write_bytes(b"keep me")
    with pytest.raises(ValueError, match="exists|overwrite"):
        ks.collect(model, X, path=target, progress=False)
    assert target.read_bytes() == b"keep me"
    ks.collect(model, X, path=target, overwrite=True, progress=False).close()
    assert target.read_bytes() != b"keep me"


def test_recorder_with_unknown_point_fails_before_training():
    model = mlp()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ks.AddressError, match="dense_1"):
        model.fit(X, np.zeros((6, 3)), epochs=1, verbose=0,
                  callbacks=[ks.ActivationRecorder(["dense_9"], X)])


# ---------------------------------------------------------------------------
# the command line


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    mlp().save(folder / "mlp.keras")
    x = keras.Input((3,), name="x")
    keras.Model(x, keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)).save(folder / "lambda.keras")
    (folder / "notes.keras").write_text("not a model")
    with zipfile.ZipFile(folder / "corrupt.keras", "w") as z:
        z.writestr("config.json", "{broken")
    np.save(folder / "good.npy", X)
    np.save(folder / "wrong.npy", np.ones((6, 5), "float32"))
    return folder


CLI = [
    ("missing-file", ["inspect", "{d}/absent.keras"], "absent.keras"),
    ("not-a-keras-file", ["inspect", "{d}/notes.keras"], "notes.keras"),
    ("corrupt-keras-file", ["split", "{d}/corrupt.keras", "-o", "{o}/out.keras"], "corrupt.keras"),
    ("lambda-needs-unsafe", ["inspect", "{d}/lambda.keras"], "--unsafe"),
    ("unknown-point", ["expose", "{d}/mlp.keras", "dense_11", "-o", "{o}/p.keras"], "dense_1"),
    ("unknown-split-layer", ["split", "{d}/mlp.keras", "--points", "nope", "-o", "{o}/s.keras"], "nope"),
    ("bad-data-shape", ["collect", "{d}/mlp.keras", "--data", "{d}/wrong.npy", "-o", "{o}/a.h5"], "8|5"),
    ("missing-data-file", ["calibrate", "{d}/mlp.keras", "--data", "{d}/none.npy", "-o", "{o}/r.json"],
     "none.npy"),
    ("output-in-missing-folder", ["collect", "{d}/mlp.keras", "--data", "{d}/good.npy", "-o", "{o}/x/y/a.h5"],
     "x/y|does not exist|folder|directory"),
    ("bad-batch-size", ["collect", "{d}/mlp.keras", "--data", "{d}/good.npy", "--batch-size", "0",
                        "-o", "{o}/a.h5"], "batch"),
]


@pytest.mark.parametrize("case, argv, match", CLI, ids=[row[0] for row in CLI])
def test_cli(case, argv, match, saved, tmp_path, capsys):
    argv = [a.format(d=saved, o=tmp_path) for a in argv]
    before = sorted(p.name for p in saved.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    import re

    assert re.search(match, err[0]), err[0]
    assert not list(tmp_path.iterdir()), "something was written"
    assert sorted(p.name for p in saved.iterdir()) == before


def test_check_graph_rejects_undirected_and_broken_graphs():
    graph = ks.to_graph(mlp())
    ks.check_graph(graph)  # well formed: no error
    with pytest.raises(ks.GraphError, match="expected a networkx.DiGraph, received Graph"):
        ks.check_graph(nx.Graph(graph))
    graph.remove_edge("dense_1", "dense_2")
    with pytest.raises(ks.GraphError) as info:
        ks.check_graph(graph)
    assert info.value.problems == ["node 'dense_2': argument slot '0' is not fed by any edge"]
