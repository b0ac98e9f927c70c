"""fold_batchnorm on every keras.applications model (weights=None, smallest input).

Each model's BatchNormalizations first get random statistics and parameters
(fresh ones are nearly the identity). Then: inference outputs equal the
original's (logits within 1e-4 of their scale, softmax within 1e-4), no
foldable BatchNormalization is left, counted from Keras's own record of the
layer calls (not from kerasurgery's plan), and the original is unchanged.
Three models run in the default suite (two of them round-trip through
``.keras``); the rest are marked slow, like tests/test_applications.py.
"""

from __future__ import annotations

import gc
import inspect
import warnings

import keras
import numpy as np
import pytest
from zeroing import randomize_batchnorms, run
from zoo import assert_roundtrip, assert_unchanged, snapshot

import kerasurgery as ks

A = keras.applications
NAMES = sorted(n for n in dir(A) if n[:1].isupper() and inspect.isfunction(getattr(A, n)))
MIN_SIZE = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}
FAST = ("MobileNetV2", "MobileNetV3Small", "DenseNet121")
CASES = [pytest.param(n, id=n, marks=() if n in FAST else pytest.mark.slow) for n in NAMES]
FOLDS_INTO = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
              keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
              keras.layers.SeparableConv1D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv1D,
              keras.layers.DepthwiseConv2D)


@pytest.fixture(autouse=True)
def free_memory():
    yield
    keras.backend.clear_session()
    gc.collect()


def foldable(model):
    """BatchNormalizations right after a linear conv/Dense whose output nothing else reads (Keras's graph)."""
    readers = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    outputs = {id(t) for t in model.outputs}
    count = 0
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        (tensor,) = layer._inbound_nodes[0].input_tensors
        producer = tensor._keras_history.operation
        linear = getattr(producer, "activation", None) in (None, keras.activations.linear)
        if isinstance(producer, FOLDS_INTO) and linear and readers[id(tensor)] == 1 and id(tensor) not in outputs:
            count += 1
    return count


def batchnorms(model):
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


@pytest.mark.parametrize("name", CASES)
def test_fold_application(name, tmp_path):
    size = MIN_SIZE.get(name, 32)
    model = getattr(A, name)(weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None)
    randomize_batchnorms(model)
    data = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype("float32")
    before = snapshot(model)
    expected_folds = foldable(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ks.fold_batchnorm(model)
    assert_unchanged(model, before)
    assert len(ks.fold_plan(model).folded) == expected_folds
    assert batchnorms(result) == batchnorms(model) - expected_folds
    assert foldable(result) == 0 and ks.fold_plan(result).folded == {}
    got, want = run(result, data), run(model, data)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=1e-4)
    softmax = lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(softmax(got), softmax(want), atol=1e-4)
    if name in FAST[:2]:
        assert_roundtrip(result, data, tmp_path)
