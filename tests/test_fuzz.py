"""Property-based tests: random functional architectures (tests/fuzz_models.py).

For every drawn architecture:

- ``to_model(to_graph(model))`` has the model's outputs and shares its variables;
- ``split_activations(model)`` has the model's outputs, no fused non-linear
  activation left, and no variable shared with the model;
- ``expose(model, points(model))`` returns, at every point, the value an
  independent reference computes (`tests/reference.py`, which uses neither
  kerasurgery's resolver nor its passes): plain outputs from calling each
  operation eagerly (checked first against the model's own outputs), ``:pre``
  of a fused layer from the layer's weights (and ``activation(pre) ==
  output``), ``:pre`` of an activation layer from its input, ``:scores`` from
  calling the attention layer with ``return_attention_scores=True``; the
  probe's outputs come in the order asked, and ``points(model)`` lists exactly
  the reference's addresses;
- ``insert_taps`` at every point keeps the outputs, and ``probe_pair(copy=True)``
  gives a detached pair with the right values;
- the model is unchanged (weights, config, names, activations);
- the rebuilt, split and probe models save to ``.keras`` and load back with
  equal outputs.

Runs:

- default suite: `test_fuzz_quick`, 20 architectures
  (``KERASURGERY_FUZZ_QUICK_EXAMPLES``), also in the ``backend`` subset
  (``KERAS_BACKEND=jax|torch pytest -m backend``);
- ``pytest -m slow tests/test_fuzz.py``: `test_fuzz_many`, with

  ``KERASURGERY_FUZZ_EXAMPLES``  number of architectures (default 1000);
  ``KERASURGERY_FUZZ_SEED``      hypothesis seed for both tests (default 0);
  ``KERASURGERY_FUZZ_STEPS``     most top-level steps per architecture
                                 (default 6; nested models add more).

  Example: ``KERASURGERY_FUZZ_EXAMPLES=2000 KERASURGERY_FUZZ_SEED=7
  pytest -m slow tests/test_fuzz.py --hypothesis-show-statistics``.

A failure prints the architecture as a runnable Python program (the
`Program` repr). ``keras.backend.clear_session()`` runs before each example so
memory stays bounded over thousands of them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import keras
import networkx as nx
import numpy as np
import pytest
from fuzz_models import architectures
from hypothesis import HealthCheck, given, note, seed, settings
from reference import reference_points
from zoo import assert_unchanged, sample_inputs, snapshot

import kerasurgery as ks
from kerasurgery.layers import kinds
from kerasurgery.ir.resolve import Resolver
from kerasurgery.ir.schema import output_refs
from kerasurgery.layers import Tap
from kerasurgery.passes.expose import expose_pass
from kerasurgery.passes.split import split_activations_pass
from kerasurgery.passes.taps import insert_taps_pass

QUICK_EXAMPLES = int(os.environ.get("KERASURGERY_FUZZ_QUICK_EXAMPLES", "20"))
SEED = int(os.environ.get("KERASURGERY_FUZZ_SEED", "0"))
MANY_EXAMPLES = int(os.environ.get("KERASURGERY_FUZZ_EXAMPLES", "1000"))
STEPS = int(os.environ.get("KERASURGERY_FUZZ_STEPS", "6"))
ATOL = 1e-5

_SETTINGS = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def outputs(model, data):
    """The model's outputs on `data` (inference), as numpy, structure kept."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(data, training=False))


def assert_close(expected, got, what):
    keras.tree.assert_same_structure(expected, got)
    for a, b in zip(keras.tree.flatten(expected), keras.tree.flatten(got)):
        np.testing.assert_allclose(b, a, atol=ATOL, rtol=1e-5, err_msg=what)


def assert_saves(model, data, folder: Path, name: str):
    path = folder / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_close(outputs(model, data), outputs(loaded, data), f"{name} after .keras save/load")


def live_nodes(graph) -> set:
    """Nodes some model output depends on."""
    ends = {ref.node for ref in output_refs(graph)}
    return ends.union(*(nx.ancestors(graph, n) for n in ends))


def feeds_an_output(graph, live: set, point) -> bool:
    """Whether the value at `point` reaches a model output (so a tap there is kept)."""
    if point.port is not None:
        return point.node in live
    if any((ref.node, ref.index) == (point.node, point.index) for ref in output_refs(graph)):
        return True
    return any(
        child in live and any(index == point.index for index, _ in graph.edges[point.node, child]["feeds"])
        for child in graph.successors(point.node)
    )


@dataclasses.dataclass
class Case:
    """One drawn model with what every check compares against."""

    model: keras.Model
    data: object
    graph: object
    expected: object  # the model's outputs on `data`
    variables: set  # ids of the model's variables
    live: set  # graph nodes some output depends on

    @property
    def no_dead_branch(self) -> bool:
        return len(self.live) == len(self.graph)


def check_round_trip(case: Case) -> keras.Model:
    ks.check_graph(case.graph)
    rebuilt = ks.to_model(case.graph)
    assert_close(case.expected, outputs(rebuilt, case.data), "to_model(to_graph(model))")
    # to_model drops what no output needs (a nested model's unused branch).
    assert {id(v) for v in rebuilt.weights} <= case.variables
    if case.no_dead_branch:
        assert {id(v) for v in rebuilt.weights} == case.variables
    return rebuilt


def check_split(case: Case) -> keras.Model:
    ks.check_graph(split_activations_pass(case.graph))
    split = ks.split_activations(case.model)
    assert_close(case.expected, outputs(split, case.data), "split_activations")
    fused = [layer.name for layer in split._flatten_layers(include_self=False) if kinds.fused_activation(layer)]
    assert not fused, f"fused activations left after split_activations: {fused}"
    assert not any(d.get("activation") for _, d in ks.to_graph(split).nodes(data=True))
    assert not {id(v) for v in split.weights} & case.variables
    return split


def check_expose(case: Case, every: list[str], references: dict) -> keras.Model:
    ks.check_graph(expose_pass(case.graph, every))
    probe = ks.expose(case.model, every)
    got = outputs(probe, case.data)
    assert list(probe.output) == every  # in the order asked (a call on torch sorts dict keys)
    for address in every:
        np.testing.assert_allclose(got[address], references[address], atol=ATOL, rtol=1e-5, err_msg=address)
        key = address[: -len(":pre")]
        if address.endswith(":pre") and kinds.fused_activation(case.graph.nodes[key]["op"]) is not None:
            act = case.graph.nodes[key]["op"].activation  # the output is activation(:pre)
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(act(got[address])), got[key], atol=ATOL, rtol=1e-5, err_msg=address
            )
    assert {id(v) for v in probe.weights} <= case.variables
    return probe


def check_taps(case: Case, every: list[str]) -> None:
    resolver = Resolver(case.graph)
    tappable = [
        p for p in every
        if not p.endswith(":scores") and feeds_an_output(case.graph, case.live, resolver.resolve_one(p))
    ]
    ks.check_graph(insert_taps_pass(case.graph, tappable))
    tapped = ks.insert_taps(case.model, tappable)
    assert_close(case.expected, outputs(tapped, case.data), "insert_taps")
    assert sum(isinstance(layer, Tap) for layer in tapped.layers) == len(tappable)
    assert {id(v) for v in tapped.weights} <= case.variables


def check_probe_pair(case: Case, every: list[str], references: dict) -> None:
    some = every[len(every) // 2 :: 2] or every
    training, checking = ks.probe_pair(case.model, some, copy=True)
    assert_close(case.expected, outputs(training, case.data), "probe_pair training model")
    checked = outputs(checking, case.data)
    for address in some:
        np.testing.assert_allclose(checked[address], references[address], atol=ATOL, rtol=1e-5, err_msg=address)
    assert not {id(v) for v in training.weights} & case.variables
    if case.no_dead_branch:  # else the checking model may read layers `training` dropped
        assert {id(v) for v in checking.weights} <= {id(v) for v in training.weights}


def check_architecture(program) -> None:
    """Every property of the module docstring, for one drawn architecture."""
    keras.backend.clear_session()  # bounded memory over many examples
    keras.utils.set_random_seed(0)
    model = program.build()
    data = sample_inputs(model, batch=3)
    before = snapshot(model)
    graph = ks.to_graph(model)
    case = Case(model, data, graph, outputs(model, data), {id(v) for v in model.weights}, live_nodes(graph))
    every = ks.points(model)
    references = reference_points(model, data)
    assert sorted(every) == sorted(references), "points() and the reference disagree on the addresses"

    rebuilt = check_round_trip(case)
    split = check_split(case)
    probe = check_expose(case, every, references)
    check_taps(case, every)
    check_probe_pair(case, every, references)
    assert_unchanged(model, before)
    with tempfile.TemporaryDirectory() as folder:
        for name, built in (("rebuilt", rebuilt), ("split", split), ("probe", probe)):
            assert_saves(built, data, Path(folder), name)
    assert_unchanged(model, before)


@pytest.mark.backend
@seed(SEED)
@settings(max_examples=QUICK_EXAMPLES, **_SETTINGS)
@given(program=architectures(max_steps=STEPS))
def test_fuzz_quick(program):
    note(f"features: {sorted(program.features)}")
    check_architecture(program)


@pytest.mark.slow
@seed(SEED)
@settings(max_examples=MANY_EXAMPLES, **_SETTINGS)
@given(program=architectures(max_steps=STEPS))
def test_fuzz_many(program):
    note(f"features: {sorted(program.features)}")
    check_architecture(program)


@seed(SEED)
@settings(max_examples=5, **_SETTINGS)
@given(program=architectures(max_steps=STEPS))
def test_programs_print_as_runnable_source(program):
    """A failing example prints its program: that text must build the same model."""
    text = repr(program)
    assert text.startswith("Program(\n") and text.endswith(")")
    namespace: dict = {}
    keras.backend.clear_session()
    exec(text[len("Program(\n") : -1], namespace)  # noqa: S102 - the program we generated
    printed = namespace["model"]
    keras.backend.clear_session()
    built = program.build()
    assert printed.get_config() == built.get_config()
