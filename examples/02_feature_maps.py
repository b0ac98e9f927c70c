"""Feature maps of a CNN: one image per channel of a convolution's output.

`expose` turns any layers (here two convolutions and the first one's
pre-activation) into outputs of one probe model; `kerasurgery.plot.feature_maps`
draws an (H, W, C) array as a grid of C images.

The script checks its claims with numbers (an AssertionError stops it if one
does not hold): ``conv_1:pre`` equals a convolution computed in numpy with the
layer's kernel, ``conv_1`` equals relu of it, and each drawn image holds
exactly its channel.

Run: python examples/02_feature_maps.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import matplotlib.pyplot as plt
import numpy as np

import kerasurgery as ks
from kerasurgery.cli.demo import CLASSES, make_shapes


def numpy_conv_same(image, kernel, bias):
    """A 'same'-padded, stride-1 2D convolution of one (H, W, Cin) image, in numpy."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(image, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    h, w = image.shape[:2]
    result = np.zeros((h, w, kernel.shape[-1]), "float64") + bias
    for i in range(kh):
        for j in range(kw):
            result += padded[i:i + h, j:j + w] @ kernel[i, j]
    return result


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    x, y = make_shapes(600)  # noisy squares, circles and crosses, 32x32x1
    inputs = keras.Input((32, 32, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_1")(inputs)
    h = keras.layers.MaxPooling2D(name="pool_1")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(h)
    model = keras.Model(inputs, outputs, name="cnn")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)

    print("points:", ks.points(model))
    probe = ks.expose(model, ["conv_1:pre", "conv_1", "conv_2"])
    maps = probe.predict(x[:1], verbose=0)

    kernel, bias = model.get_layer("conv_1").get_weights()
    reference = numpy_conv_same(x[0], kernel, bias)
    print(f"max |conv_1:pre - numpy convolution| = {np.abs(maps['conv_1:pre'][0] - reference).max():.1e}")
    np.testing.assert_allclose(maps["conv_1:pre"][0], reference, atol=1e-5)
    relu = np.maximum(maps["conv_1:pre"], 0)
    print(f"max |conv_1 - relu(conv_1:pre)|      = {np.abs(maps['conv_1'] - relu).max():.1e}")
    np.testing.assert_allclose(maps["conv_1"], relu, atol=1e-6)

    for address, value in maps.items():
        print(f"{address:10s} {value.shape}")
        # shared colour scale: maps compare; per_map: each stretched to its own range
        scale = "shared" if address.endswith(":pre") else "per_map"
        fig = ks.plot.feature_maps(value[0], title=f"{address} ({CLASSES[y[0]]})", scale=scale)
        drawn = [ax.images[0].get_array() for ax in fig.axes if ax.images]
        np.testing.assert_equal(len(drawn), value.shape[-1])  # one image per channel
        for c, image in enumerate(drawn):
            np.testing.assert_allclose(image, value[0, ..., c], err_msg=f"{address} channel {c}")
        path = os.path.join(out, address.replace(":", "_") + ".png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        print("wrote", path, f"({len(drawn)} images, each equal to its channel)")

    # Pick channels and cap the count for wide layers:
    fig = ks.plot.feature_maps(maps["conv_2"][0], channels=[0, 2, 4, 6], title="conv_2, four channels")
    np.testing.assert_equal([ax.get_title() for ax in fig.axes if ax.images], ["0", "2", "4", "6"])
    fig.savefig(os.path.join(out, "conv_2_some.png"), dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
