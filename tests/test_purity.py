"""Every graph pass is pure: its input graph is the same, by value, before and after.

`freeze` snapshots a graph deeply: every node attribute (operations by
identity and class, everything else by value: argument templates, shapes,
``feeds`` lists), every edge and the graph attributes. A pass that edited its
input in place (a shared ``feeds`` list appended to, a node's ``op`` swapped,
an output replaced) changes the snapshot. Each pass's result must also be a
well-formed graph (`check_graph`).
"""

from __future__ import annotations

import copy

import keras
import pytest
from zoo import ZOO

import kerasurgery as ks
from kerasurgery.ir.schema import copy_graph, input_keys
from kerasurgery.passes.copy import copy_pass
from kerasurgery.passes.expose import expose_pass
from kerasurgery.passes.layer_edits import delete_layer_pass, insert_layer_pass, replace_layer_pass
from kerasurgery.passes.patch import patch_pass
from kerasurgery.passes.fold import fold_batchnorm_pass
from kerasurgery.passes.perturb import perturb_pass
from kerasurgery.passes.split import split_activations_pass
from kerasurgery.passes.taps import insert_taps_pass

pytestmark = pytest.mark.backend


def _value(x):
    if isinstance(x, (keras.layers.Layer, keras.Operation)):
        return ("op", id(x), type(x).__name__)
    if isinstance(x, dict):
        return {k: _value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [_value(v) for v in x])
    return repr(x)


def freeze(graph) -> tuple:
    nodes = [(k, _value(dict(d))) for k, d in graph.nodes(data=True)]
    edges = [((u, v), _value(dict(d))) for u, v, d in graph.edges(data=True)]
    return nodes, edges, _value(dict(graph.graph))


def _taps(graph):
    """Taps at a few inner points (ones that feed an output)."""
    inputs = set(input_keys(graph))
    inner = [p for p in ks.points(graph) if ":" not in p and p not in inputs]
    return insert_taps_pass(graph, inner[:3])


def _first_call(graph):
    """The first layer call that is not a model input."""
    inputs = set(input_keys(graph))
    return next(k for k in ks.points(graph) if ":" not in k and "[" not in k and k not in inputs and k in graph)


PASSES = {
    "expose": lambda g: expose_pass(g, ks.points(g), keep_outputs=True),
    "insert_layer": lambda g: insert_layer_pass(g, _first_call(g), keras.layers.Identity(name="inserted")),
    "replace_layer": lambda g: replace_layer_pass(g, _first_call(g), g.nodes[_first_call(g)]["op"]),
    "delete_layer": lambda g: delete_layer_pass(g, _first_call(g)),
    "patch": lambda g: patch_pass(g, {_first_call(g): "zero", ks.points(g)[-1]: "input"}),
    "split_activations": lambda g: split_activations_pass(g),
    "insert_taps": _taps,
    "copy": copy_pass,
    "fold_batchnorm": fold_batchnorm_pass,
    "perturb": lambda g: perturb_pass(g, [p for p in ks.points(g) if not p.endswith(":scores")][1:5]),
}


def _applicable(name, graph):
    if name == "split_activations":
        return any(d.get("activation") for _, d in graph.nodes(data=True))
    return True


@pytest.mark.parametrize("pass_name", sorted(PASSES))
@pytest.mark.parametrize("model_name", sorted(ZOO))
def test_pass_leaves_its_input_graph_unchanged(pass_name, model_name):
    graph = ks.to_graph(ZOO[model_name]())
    if not _applicable(pass_name, graph):
        pytest.skip(f"{model_name} has nothing for {pass_name}")
    before = freeze(graph)
    try:
        result = PASSES[pass_name](graph)
    except ks.TransformError:  # a pass refusing this model is fine; it must still not edit it
        result = None
    assert freeze(graph) == before
    if result is not None:
        ks.check_graph(result)
        assert result is not graph


def test_freeze_sees_an_in_place_edit():
    """The snapshot is deep: appending to a `feeds` list or swapping an op changes it."""
    graph = ks.to_graph(ZOO["mlp"]())
    before = freeze(graph)
    graph.edges["x", "dense_1"]["feeds"].append((0, "extra"))
    assert freeze(graph) != before
    graph = ks.to_graph(ZOO["mlp"]())
    before = freeze(graph)
    graph.nodes["dense_1"]["op"] = copy.copy(graph.nodes["dense_1"]["op"])
    assert freeze(graph) != before


def test_copy_graph_shares_operations_and_nothing_mutable():
    graph = ks.to_graph(ZOO["branches"]())
    copied = copy_graph(graph)
    for key, data in graph.nodes(data=True):
        assert copied.nodes[key]["op"] is data["op"]
        assert copied.nodes[key] is not data
        assert copied.nodes[key].get("output_shapes") is not data.get("output_shapes") or not data.get("output_shapes")
    for u, v, data in graph.edges(data=True):
        assert copied.edges[u, v]["feeds"] == data["feeds"] and copied.edges[u, v]["feeds"] is not data["feeds"]
