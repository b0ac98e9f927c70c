"""Logits of a classifier: the values before the final softmax.

Keras fuses the softmax into the last Dense layer (`activation="softmax"`), so
`model.layers[-1].output` is already probabilities. `expose` returns the value
before that activation, from the same weights, without retraining or copying.

The script checks its claims with numbers and stops with an AssertionError if
one does not hold: the logits equal a numpy forward pass with the layers'
weights, their softmax equals the model's output, and after more training the
same probe follows the new weights.

Run: python examples/01_logits.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import numpy as np

import kerasurgery as ks


def make_data(n=600, seed=0):
    """Three Gaussian blobs in 4 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = rng.normal(0, 2.5, (3, 4))
    return (centres[y] + rng.normal(0, 1, (n, 4))).astype("float32"), y


def numpy_logits(model, x):
    """The reference: hidden = relu(x W1 + b1), logits = hidden W2 + b2, in numpy."""
    w1, b1 = model.get_layer("hidden").get_weights()
    w2, b2 = model.get_layer("predictions").get_weights()
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    x, y = make_data()
    inputs = keras.Input((4,), name="features")
    h = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(h)
    model = keras.Model(inputs, outputs, name="classifier")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=5, verbose=0)

    # The probe shares every weight with `model`; keep_outputs adds the probabilities.
    probe = ks.expose(model, ["predictions:pre"], keep_outputs=True)
    result = probe.predict(x[:5], verbose=0)
    logits, probs = result["predictions:pre"], result["predictions"]
    print("logits:\n", np.round(logits, 2))

    reference = numpy_logits(model, x[:5])
    print(f"max |logits - numpy forward pass|    = {np.abs(logits - reference).max():.1e}")
    np.testing.assert_allclose(logits, reference, atol=1e-5, err_msg="logits differ from numpy's")
    softmax = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    print(f"max |softmax(logits) - model output| = {np.abs(softmax - probs).max():.1e}")
    np.testing.assert_allclose(softmax, probs, atol=1e-6, err_msg="softmax(logits) is not the model's output")

    # Train `model` further: the same probe follows, since it holds the same variables.
    model.fit(x, y, epochs=1, verbose=0)
    after = probe.predict(x[:5], verbose=0)["predictions:pre"]
    moved = np.abs(after - logits).max()
    print(f"after one more epoch of model.fit, the probe's logits moved by {moved:.2f} "
          f"and equal numpy's with the new weights: max diff "
          f"{np.abs(after - numpy_logits(model, x[:5])).max():.1e}")
    np.testing.assert_array_less(1e-3, moved, err_msg="training the model should move the probe")
    np.testing.assert_allclose(after, numpy_logits(model, x[:5]), atol=1e-5)

    # A typical use: temperature scaling works on logits, not probabilities.
    calibrated = keras.ops.convert_to_numpy(keras.ops.softmax(after / 2.0))
    print("probabilities at temperature 2:\n", np.round(calibrated, 3))
    path = os.path.join(out, "logits.npy")
    np.save(path, after)
    print("wrote", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
