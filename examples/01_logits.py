"""Logits of a classifier: the values before the final softmax.

Keras fuses the softmax into the last Dense layer (`activation="softmax"`), so
`model.layers[-1].output` is already probabilities. `expose` returns the value
before that activation, from the same weights, without retraining or copying.

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


def main(out: str) -> None:
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
    print("softmax(logits) == model output:",
          np.allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), probs, atol=1e-5))

    # A typical use: temperature scaling works on logits, not probabilities.
    calibrated = keras.ops.convert_to_numpy(keras.ops.softmax(logits / 2.0))
    print("probabilities at temperature 2:\n", np.round(calibrated, 3))
    path = os.path.join(out, "logits.npy")
    np.save(path, logits)
    print("wrote", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
