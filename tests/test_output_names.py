"""Output names survive every rewrite that puts a new layer at an output.

`split_activations` ends an output with ``<name>_activation``, `insert_taps`
with a tap: Keras would name the output after that layer, and
``compile(loss={name: ...})`` with the original's names would fail. Here:
the names equal the original's, a dict of losses compiles, evaluates to the
original's loss and trains one step, and all of it survives `.keras`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kerasurgery as ks
from zoo import assert_roundtrip, assert_unchanged, snapshot

RNG = np.random.default_rng(3)
X = RNG.normal(size=(8, 5)).astype("float32")
TARGETS = {
    "cls": np.eye(3, dtype="float32")[RNG.integers(0, 3, 8)],
    "reg": RNG.normal(size=(8, 1)).astype("float32"),
}
LOSSES = {"cls": "categorical_crossentropy", "reg": "mse"}


def _heads():
    x = keras.Input((5,), name="x")
    h = layers.Dense(6, activation="relu", name="hidden")(x)
    cls = layers.Dense(3, activation="softmax", name="cls")(h)
    reg = layers.Dense(1, activation="tanh", name="reg")(h)
    return x, cls, reg


def single_output():
    x, cls, _ = _heads()
    return keras.Model(x, cls, name="single")


def list_output():
    x, cls, reg = _heads()
    return keras.Model(x, [cls, reg], name="listed")


def dict_output():
    x, cls, reg = _heads()
    return keras.Model(x, {"cls": cls, "reg": reg}, name="keyed")


MODELS = {"single": single_output, "list": list_output, "dict": dict_output}

def _params():
    for kind in sorted(MODELS):
        for rewrite in sorted(REWRITES):
            yield pytest.param(kind, rewrite, id=f"{kind}-{rewrite}")
REWRITES = {
    "split": lambda m: ks.split_activations(m),
    "split_cls": lambda m: ks.split_activations(m, ["cls"]),
    "taps_output": lambda m: ks.insert_taps(m, ["cls"]),
    "taps_pre": lambda m: ks.insert_taps(m, ["cls:pre"]),
    "probe_pair": lambda m: ks.probe_pair(m, ["cls:pre"])[0],
    "probe_pair_copy": lambda m: ks.probe_pair(m, ["cls:pre"], copy=True)[0],
}


def _compile(model):
    names = model.output_names
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss={n: LOSSES[n] for n in names})
    if not isinstance(model.output, dict) and len(names) == 1:
        return TARGETS[names[0]]  # Keras takes a single output's targets as an array
    return {n: TARGETS[n] for n in names}


def _loss(model, y):
    return float(model.evaluate(X, y, verbose=0, return_dict=True)["loss"])


@pytest.mark.backend
@pytest.mark.parametrize("kind,rewrite", list(_params()))
def test_output_names_compile_fit_and_round_trip(kind, rewrite, tmp_path):
    model = MODELS[kind]()
    names = list(model.output_names)
    assert "cls" in names
    before = snapshot(model)
    rewritten = REWRITES[rewrite](model)
    assert_unchanged(model, before)
    assert list(rewritten.output_names) == names
    y = _compile(rewritten)
    want = _loss(_compile_original(model), y)
    np.testing.assert_allclose(_loss(rewritten, y), want, rtol=1e-5)
    loaded = assert_roundtrip(rewritten, X, tmp_path)
    assert list(loaded.output_names) == names
    _compile(loaded)
    np.testing.assert_allclose(_loss(loaded, y), want, rtol=1e-5)
    history = loaded.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], want, rtol=1e-5)  # the step's loss, before it
    rewritten.fit(X, y, epochs=1, batch_size=8, verbose=0)


def _compile_original(model):
    """The original compiled with the same dict of losses (compiling changes no weight)."""
    _compile(model)
    return model
