"""A probe pair during training: watch hidden pre-activations every epoch.

`probe_pair` gives a training model and a checking model that share every
variable. An `ActivationRecorder` callback records points of the model it is
attached to on a fixed batch after each epoch; here we follow the fraction of
"dead" ReLU units (pre-activation below zero for every sample), a common
training pathology, and check the checking model sees exactly what training did.

The script checks its claims with numbers (an AssertionError stops it if one
does not hold): every variable of the checking model is a variable of the
training model (the same object), the records moved during training, the last
record of ``hidden_1:pre`` equals numpy's ``x W + b`` with the trained weights,
and the checking model reproduces the last record of every point.

Run: python examples/05_probe_training.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import matplotlib.pyplot as plt
import numpy as np

import kerasurgery as ks

POINTS = ["hidden_1:pre", "hidden_2:pre"]


def make_data(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype("float32")
    y = (np.sin(x[:, 0] * 2) + x[:, 1] * x[:, 2] > 0).astype("int32")
    return x, y


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    x, y = make_data()
    inputs = keras.Input((10,), name="x")
    h = keras.layers.Dense(32, activation="relu", name="hidden_1")(inputs)
    h = keras.layers.Dense(32, activation="relu", name="hidden_2")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(h)
    model = keras.Model(inputs, outputs, name="mlp")

    training, checking = ks.probe_pair(model, POINTS)
    training.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    recorder = ks.ActivationRecorder(POINTS, x[:256])
    history = training.fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[recorder])

    print("epoch  accuracy  " + "  ".join(f"dead in {p}" for p in POINTS))
    dead = {p: [] for p in POINTS}
    for epoch in range(5):
        for p in POINTS:
            values = np.asarray(recorder.history[p][epoch])  # (256, 32) pre-activations
            dead[p].append(float((values.max(axis=0) < 0).mean()))
        print(f"{epoch:5d}  {history.history['accuracy'][epoch]:8.3f}  "
              + "  ".join(f"{dead[p][epoch]:>{len(p) + 8}.2%}" for p in POINTS))

    # The pair shares variables (the same objects), so the checking model follows training.
    shared = {id(v) for v in training.weights}
    np.testing.assert_equal([id(v) in shared for v in checking.weights], [True] * len(checking.weights))
    print(f"the checking model's {len(checking.weights)} variables are all variables of the training model")
    first, last = (np.asarray(recorder.history["hidden_1:pre"][i]) for i in (0, -1))
    print(f"hidden_1:pre moved by up to {np.abs(last - first).max():.2f} between the first and last epoch")
    np.testing.assert_array_less(1e-3, np.abs(last - first).max(), err_msg="the records should move")
    w, b = model.get_layer("hidden_1").get_weights()
    print(f"max |last record of hidden_1:pre - numpy x W + b| = {np.abs(last - (x[:256] @ w + b)).max():.1e}")
    np.testing.assert_allclose(last, x[:256] @ w + b, atol=1e-5)
    now = checking.predict(x[:256], verbose=0)
    for p in POINTS:
        print(f"max |checking model's {p} - its last record| = {np.abs(now[p] - recorder.history[p][-1]).max():.1e}")
        np.testing.assert_allclose(now[p], recorder.history[p][-1], atol=1e-5)

    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    for p in POINTS:
        ax.plot(range(1, 6), dead[p], marker="o", label=p)
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of dead ReLU units")
    ax.legend()
    fig.savefig(os.path.join(out, "records.png"), dpi=90)
    plt.close(fig)
    print("wrote", os.path.join(out, "records.png"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
