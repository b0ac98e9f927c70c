"""Inner layers of a nested transfer-learning model, without "Graph disconnected".

A transfer-learning model calls a pretrained base (here MobileNetV2, random
weights so nothing is downloaded) as one layer. Keras cannot build a model from
the outer input to a layer inside the base; kerasurgery addresses it as
``mobilenetv2/block_13_expand_relu`` and builds the probe for you.

The script checks its claims with numbers (an AssertionError stops it if one
does not hold): the inner point equals what a sub-model of the base built by
hand computes, the logits equal a numpy head over the base's features, and the
saved probe reloads with equal outputs.

Run: python examples/03_nested_transfer.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import numpy as np

import kerasurgery as ks


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), include_top=False, weights=None, name="mobilenetv2"
    )
    base.trainable = False
    inputs = keras.Input((64, 64, 3), name="image")
    h = base(inputs, training=False)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(5, activation="softmax", name="predictions")(h)
    model = keras.Model(inputs, outputs, name="transfer")

    # The Keras-native attempt fails: the inner tensor belongs to the base's own graph.
    try:
        keras.Model(model.input, base.get_layer("block_13_expand_relu").output)
    except ValueError as e:
        print("keras.Model(model.input, <inner tensor>) fails:", str(e).splitlines()[0][:90], "...")

    print("some inner points:", ks.points(model, "mobilenetv2/block_13_*"))
    probe = ks.expose(model, ["mobilenetv2/block_13_expand_relu", "mobilenetv2/block_13_expand_relu:pre",
                              "predictions:pre"])
    images = np.random.default_rng(0).random((2, 64, 64, 3), dtype="float32")
    found = probe(images, training=False)  # a direct call: quicker than predict() for one small batch
    found = {address: keras.ops.convert_to_numpy(value) for address, value in found.items()}
    for address, value in found.items():
        print(f"{address:36s} {value.shape}")

    # The reference: a sub-model of the base alone (from the base's own input, which Keras allows).
    inner = keras.Model(base.input, [base.get_layer("block_13_expand_relu").output,
                                     base.get_layer("block_13_expand_BN").output, base.output])
    relu, bn, features = (keras.ops.convert_to_numpy(v) for v in inner(images, training=False))
    w, b = model.get_layer("predictions").get_weights()
    head = features.mean(axis=(1, 2)) @ w + b
    checks = {
        "mobilenetv2/block_13_expand_relu vs the base's sub-model": (found["mobilenetv2/block_13_expand_relu"], relu),
        "mobilenetv2/block_13_expand_relu:pre vs block_13_expand_BN": (found["mobilenetv2/block_13_expand_relu:pre"],
                                                                       bn),
        "predictions:pre vs numpy head on the base's features": (found["predictions:pre"], head),
    }
    for what, (value, reference) in checks.items():
        scale = np.abs(reference).max()  # random weights: deep values are small, so compare relative to them
        print(f"{what}: largest value {scale:.1e}, max difference {np.abs(value - reference).max():.1e}")
        np.testing.assert_array_less(0, scale, err_msg=f"{what}: an all-zero reference proves nothing")
        np.testing.assert_allclose(value, reference, rtol=1e-4, atol=1e-5 * scale, err_msg=what)

    # The probe shares the base's weights; it saves and loads like any model.
    path = os.path.join(out, "probe.keras")
    probe.save(path)
    again = keras.saving.load_model(path)
    again_logits = keras.ops.convert_to_numpy(again(images, training=False)["predictions:pre"])
    np.testing.assert_allclose(again_logits, found["predictions:pre"], rtol=1e-5, atol=0)
    print("wrote", path, "| the reloaded probe's outputs are equal")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
