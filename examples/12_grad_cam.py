"""Grad-CAM inside a transfer-learning model, where tf-keras-vis stops with "Graph disconnected".

A transfer-learning model calls a pretrained base (here MobileNetV2, random
weights so nothing is downloaded) as one layer. Grad-CAM needs the base's last
convolution and the class score together, and Keras cannot build a model from
the outer input to a tensor inside the base. ``ks.grad_cam`` addresses the
point as ``mobilenetv2/out_relu`` and differentiates through the nested model
on any backend.

The script checks its claims with numbers (an AssertionError stops it if one
does not hold): behind the base comes global average pooling and a Dense head,
so the gradient of class ``c``'s score (before the softmax) with respect to the
base's output is ``W[:, c] / (h * w)`` at every position, which ``ks.gradients``
must return; and the Grad-CAM heatmaps must equal ``relu(A @ W[:, c])`` divided
by its maximum, computed with numpy from the base's own sub-model.

Run: python examples/12_grad_cam.py [--out DIR]
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
    base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=None, name="mobilenetv2")
    inputs = keras.Input((96, 96, 3), name="image")
    h = keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs, training=False))
    h = keras.layers.Dropout(0.2, name="dropout")(h)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="predictions")(h), name="transfer")
    images = np.random.default_rng(0).uniform(-1, 1, (4, 96, 96, 3)).astype("float32")

    try:  # what tf-keras-vis (and keras-io's recipe) build first
        keras.Model(model.inputs, [base.get_layer("out_relu").output, model.output])
    except ValueError as e:
        print("keras.Model(model.inputs, [<conv inside the base>, model.output]) fails:",
              str(e).splitlines()[0][:70], "...")

    point, classes = "mobilenetv2/out_relu", np.array([0, 1, 2, 3])
    maps = ks.grad_cam(model, images, point, class_index=classes)
    plus = ks.grad_cam(model, images, point, class_index=classes, method="grad_cam++")
    big = ks.grad_cam(model, images, point, class_index=classes, size="input")
    grads = ks.gradients(model, images, point, target=classes)[point]
    print(f"ks.grad_cam(model, images, {point!r}): maps {maps.shape}; size='input': {big.shape}; "
          f"Grad-CAM++ too: {plus.shape}")

    # The references: the base's own sub-model (Keras allows it from the base's input) and numpy.
    values = keras.ops.convert_to_numpy(base(images, training=False))  # (4, 3, 3, 1280)
    w = model.get_layer("predictions").get_weights()[0]  # (1280, 4)
    spatial = values.shape[1] * values.shape[2]
    expected_grads = np.broadcast_to(w[:, classes].T[:, None, None, :] / spatial, values.shape)
    print(f"max |ks.gradients - W[:, c] / (h * w)| = {np.abs(grads - expected_grads).max():.1e}")
    np.testing.assert_allclose(grads, expected_grads, rtol=1e-5, atol=1e-9)
    cam = np.maximum(np.einsum("nhwk,kn->nhw", values, w[:, classes]), 0)
    expected = cam / cam.max(axis=(1, 2), keepdims=True)
    print(f"max |ks.grad_cam - numpy Grad-CAM| = {np.abs(maps - expected).max():.1e}")
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    np.testing.assert_allclose(big, ks.resize_maps(maps, (96, 96)), atol=1e-6)

    fig = ks.plot.heatmaps(images, big, titles=[f"class {c}" for c in classes], label="Grad-CAM at out_relu",
                           title="Grad-CAM inside a nested MobileNetV2 (random weights)")
    path = os.path.join(out, "grad_cam.png")
    fig.savefig(path, dpi=80)
    print("wrote", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
