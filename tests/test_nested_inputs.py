"""Data in the model's own nested input structure (``keras.Model([[a, b], c], ...)``), as Keras takes it.

References are Keras's own `predict` on the same nested data, and numpy over
its values.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kerasurgery as ks
from zoo import assert_unchanged, snapshot

RNG = np.random.default_rng(4)
N = 10


def nested_inputs():
    a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    c = keras.Input((1,), name="c")
    ab = layers.Dense(4, activation="relu", bias_initializer="ones", name="ab")(layers.Concatenate(name="cat")([a, b]))
    y = layers.Dense(2, activation="sigmoid", name="out")(layers.Concatenate(name="join")([ab, c]))
    return keras.Model([[a, b], c], y, name="nested_inputs")


def dict_inside_list():
    a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    c = keras.Input((1,), name="c")
    h = layers.Concatenate(name="cat")([a, b, c])
    return keras.Model([{"left": a, "right": b}, c], layers.Dense(2, activation="tanh", name="out")(h), name="mixed")


A = RNG.normal(size=(N, 2)).astype("float32")
B = RNG.normal(size=(N, 3)).astype("float32")
C = RNG.normal(size=(N, 1)).astype("float32")
Y = RNG.normal(size=(N, 2)).astype("float32")

CASES = {
    "nested_list": (nested_inputs, [[A, B], C]),
    "nested_tuple": (nested_inputs, ((A, B), C)),
    "nested_with_targets": (nested_inputs, ([[A, B], C], Y)),
    "flat_list": (nested_inputs, [A, B, C]),
    "by_name": (nested_inputs, {"a": A, "b": B, "c": C}),
    "dict_inside_list": (dict_inside_list, [{"right": B, "left": A}, C]),
}


@pytest.mark.backend
@pytest.mark.parametrize("case", sorted(CASES))
def test_collect_and_calibrate_nested_inputs_equal_predict(case):
    factory, data = CASES[case]
    model = factory()
    before = snapshot(model)
    x = data[0] if case == "nested_with_targets" else data
    keras_x = [[A, B], C] if factory is nested_inputs else [{"left": A, "right": B}, C]
    points = [p for p in ks.points(model) if p not in ("a", "b", "c")]
    want = ks.expose(model, points).predict(keras_x, batch_size=4, verbose=0)
    np.testing.assert_allclose(want["out"], model.predict(keras_x, batch_size=4, verbose=0), atol=1e-6)
    got = ks.collect(model, data, points, batch_size=4)
    stats = ks.calibrate(model, data, points, batch_size=4)
    batches = ks.collect(model, (_slice(x, i, i + 3) for i in range(0, N, 3)), ["out"])
    assert_unchanged(model, before)
    np.testing.assert_allclose(batches["out"], want["out"], atol=1e-5)
    for address in points:
        np.testing.assert_allclose(got[address], want[address], atol=1e-5, err_msg=address)
        np.testing.assert_allclose(stats[address].min, want[address].min(), atol=1e-5, err_msg=address)
        np.testing.assert_allclose(stats[address].max, want[address].max(), atol=1e-5, err_msg=address)
        np.testing.assert_allclose(stats[address].mean, want[address].mean(), atol=1e-5, err_msg=address)
    # the inputs themselves: each array went to its own input
    inputs = ks.collect(model, data, ["a", "b", "c"], batch_size=4)
    for name, array in (("a", A), ("b", B), ("c", C)):
        np.testing.assert_array_equal(inputs[name], array)


def _slice(x, start, stop):
    return keras.tree.map_structure(lambda a: a[start:stop], x)


@pytest.mark.backend
def test_wrong_nesting_is_refused_with_the_model_structure():
    model = nested_inputs()
    with pytest.raises(ks.DataError, match=r"nested as the model's inputs \[\['a', 'b'\], 'c'\].*Received"):
        ks.collect(model, [[A], [B, C]], ["out"])
