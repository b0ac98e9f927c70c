"""Feature extraction: features of several points over a dataset, streamed to disk.

`collect(..., path="features.h5")` runs one forward pass per batch for every
point at once and appends each batch to an HDF5 file, so a dataset larger than
memory works: here the batches come from a generator that draws them on the
fly, and nothing but the current batch is ever in memory. The file is read
back lazily (`kerasurgery.load_activations`), a chunk at a time, to fit a
nearest-centroid classifier on the features.

The script checks its claims with numbers (an AssertionError stops it if one
does not hold): the file holds one row per sample of every batch, the rows
equal what the model computes for the same images in memory, and the file says
which model and points it holds.

Run: python examples/07_feature_extraction.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import numpy as np

import kerasurgery as ks
from kerasurgery.cli.demo import build_model, make_shapes

BATCHES, BATCH = 24, 50
POINTS = ["conv_3", "dense"]


def batches():
    """A dataset that is never whole in memory: each batch is drawn when asked for."""
    for i in range(BATCHES):
        yield make_shapes(BATCH, seed=100 + i)  # (images, labels); collect ignores the labels


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    x, y = make_shapes(600)
    model = build_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)

    path = os.path.join(out, "features.h5")
    ks.collect(model, batches(), POINTS, path=path, progress=False).close()
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MB)")

    with ks.load_activations(path) as features:
        for address, dataset in features.items():
            print(f"  {address:7s} {dataset.shape} {dataset.dtype}")
        np.testing.assert_equal(features.attrs["model"], model.name)
        np.testing.assert_equal(list(features.attrs["points"]), POINTS)
        np.testing.assert_equal(features["dense"].shape, (BATCHES * BATCH, 16))

        # The check: batch 7 in the file equals the model's own computation on the same images.
        images, _ = make_shapes(BATCH, seed=100 + 7)
        expected = ks.expose(model, POINTS).predict(images, verbose=0)
        rows = slice(7 * BATCH, 8 * BATCH)
        for address in POINTS:
            difference = np.abs(features[address][rows] - expected[address]).max()
            print(f"max |file rows of batch 7 - in-memory {address}| = {difference:.1e}")
            np.testing.assert_allclose(features[address][rows], expected[address], atol=1e-5)

        # A use: class centroids of the dense features, read one chunk (batch) at a time.
        labels = np.concatenate([labels for _, labels in batches()])
        sums, counts = np.zeros((3, 16)), np.zeros(3)
        for start in range(0, len(labels), BATCH):
            chunk, chunk_labels = features["dense"][start:start + BATCH], labels[start:start + BATCH]
            np.add.at(sums, chunk_labels, chunk)
            counts += np.bincount(chunk_labels, minlength=3)
        centroids = sums / counts[:, None]
        test_images, test_labels = make_shapes(300, seed=999)
        test_features = ks.collect(model, test_images, "dense", progress=False)["dense"]
        guess = np.argmin(((test_features[:, None] - centroids) ** 2).sum(axis=-1), axis=1)
        print("nearest-centroid accuracy on 300 new images, from the streamed features:",
              f"{(guess == test_labels).mean():.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
