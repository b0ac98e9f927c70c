"""grad_cam (Grad-CAM, Grad-CAM++), saliency (vanilla, SmoothGrad), integrated_gradients
and resize_maps: equal to the keras-io Grad-CAM recipe (a hand-written GradientTape over
a two-output model) on TensorFlow and to the same recipe with each backend's own autodiff
on JAX and PyTorch, on Xception and inside a nested base model (transfer learning);
integrated gradients complete; bad input refused."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers, ops

import kerasurgery as ks
from reference import own_autodiff
from test_gradients import BACKEND
from zoo import assert_unchanged, multi_io, snapshot, to_numpy


def recipe(conv_values, head, pred_index):
    """keras-io's make_gradcam_heatmap for one image, the gradient from the backend's own autodiff.

    `conv_values` (1, h, w, c) are the last conv layer's output, `head` computes the class scores
    (before the softmax) from them, by hand.
    """
    grads = own_autodiff(lambda a: head(a)[:, pred_index], conv_values)
    pooled_grads = grads.mean(axis=(0, 1, 2))
    heatmap = conv_values[0] @ pooled_grads[..., None]
    heatmap = np.squeeze(heatmap)
    return np.maximum(heatmap, 0) / np.max(heatmap), grads


def grad_cam_plus_plus(values, grads):
    """Grad-CAM++ as the paper writes it (tf-keras-vis's form): exp(score) derivatives, alphas, weights."""
    score = np.exp(1.0)  # any positive exp(S): it cancels in the normalization
    first, second, third = score * grads, score * grads ** 2, score * grads ** 3
    total = values.sum(axis=(1, 2), keepdims=True)
    denominator = second * 2.0 + third * total
    alphas = second / np.where(denominator != 0.0, denominator, 1.0)
    weights = (np.maximum(first, 0.0) * alphas).sum(axis=(1, 2))
    cam = np.maximum((values * weights[:, None, None, :]).sum(-1), 0)
    return cam / cam.max(axis=(1, 2), keepdims=True)


@pytest.fixture(scope="module")
def xception():
    keras.utils.set_random_seed(0)  # module scope: built before the per-test seeding
    model = keras.applications.Xception(weights=None, input_shape=(71, 71, 3), classes=10)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 71, 71, 3)).astype("float32")
    return model, images


# Random Xception weights leave tiny activations at the last convolution (|A| ~ 1e-4), whose
# heatmaps are sums of 2048 terms that nearly cancel: the float32 rounding of the convolutions
# then depends on the batch shape (oneDNN picks kernels by shape). Computed image by image
# (batch_size=1), as the recipe does, the maps agree within 1e-5; batched, within 1e-4.
ATOL = 1e-5 if BACKEND == "tensorflow" else 1e-4


@pytest.mark.backend
@pytest.mark.parametrize("conv", ["block14_sepconv2_act", "block14_sepconv2_bn"])
def test_grad_cam_on_xception_equals_the_keras_io_recipe(xception, conv):
    model, images = xception
    dense = model.get_layer("predictions")
    relu = conv.endswith("_bn")  # before the last ReLU: the gradients differ from position to position

    def head(a):
        return ops.matmul(ops.mean(ops.relu(a) if relu else a, axis=(1, 2)), dense.kernel) + dense.bias

    values = to_numpy(keras.Model(model.input, model.get_layer(conv).output)(images))
    references = {}  # per image, a class whose heatmap has some positive evidence (weights are random)
    for i in range(len(images)):
        for c in (3, 7, 0, 1, 2, 4, 5, 6, 8, 9):
            expected, grads = recipe(values[i : i + 1], head, c)
            if expected.max() == 1.0:
                references[i] = (c, expected, grads)
                break
    classes = np.array([references[i][0] for i in range(len(images))])
    maps = ks.grad_cam(model, images, conv, class_index=classes, batch_size=1)
    plus = ks.grad_cam(model, images, conv, class_index=classes, method="grad_cam++", batch_size=1)
    batched = ks.grad_cam(model, images, conv, class_index=classes, batch_size=2)
    assert maps.shape == (3, 3, 3) and maps.dtype == np.float32
    for i in range(len(images)):
        c, expected, grads = references[i]
        assert relu == (np.ptp(grads[0], axis=(0, 1)).max() > 0)  # spatially constant behind the pooling only
        np.testing.assert_allclose(maps[i], expected, atol=ATOL)
        np.testing.assert_allclose(batched[i], expected, atol=1e-4)
        np.testing.assert_allclose(plus[i], grad_cam_plus_plus(values[i : i + 1], grads)[0], atol=ATOL)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="keras-io's recipe is written with tf.GradientTape")
def test_grad_cam_equals_keras_io_verbatim(xception):
    import tensorflow as tf

    model, images = xception
    conv = "block14_sepconv2_act"
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.layers[-1].activation = None  # "Remove last layer's softmax", as the recipe does

    def make_gradcam_heatmap(img_array, model, last_conv_layer_name, pred_index=None):
        grad_model = keras.models.Model(model.inputs, [model.get_layer(last_conv_layer_name).output, model.output])
        with tf.GradientTape() as tape:
            last_conv_layer_output, preds = grad_model(img_array)
            if pred_index is None:
                pred_index = tf.argmax(preds[0])
            class_channel = preds[:, pred_index]
        grads = tape.gradient(class_channel, last_conv_layer_output)
        pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
        last_conv_layer_output = last_conv_layer_output[0]
        heatmap = last_conv_layer_output @ pooled_grads[..., tf.newaxis]
        heatmap = tf.squeeze(heatmap)
        heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
        return heatmap.numpy()

    before = snapshot(model)
    for pred_index in (None, 4):
        maps = ks.grad_cam(model, images, conv, class_index=pred_index, batch_size=1)  # as the recipe: one by one
        for i in range(len(images)):
            expected = make_gradcam_heatmap(images[i : i + 1], copy, conv, pred_index)
            np.testing.assert_allclose(maps[i], expected, atol=1e-5)
    assert_unchanged(model, before)


@pytest.mark.backend
def test_grad_cam_inside_a_nested_base_model():
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3))
    x = keras.Input((96, 96, 3), name="image")
    h = layers.GlobalAveragePooling2D(name="gap")(base(x))
    h = layers.Dropout(0.3, name="drop")(h)
    model = keras.Model(x, layers.Dense(4, activation="softmax", name="head")(h), name="transfer")
    images = np.random.default_rng(1).uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    point = f"{base.name}/block_16_project"
    maps = ks.grad_cam(model, images, point, class_index=2)
    inner = keras.Model(base.input, base.get_layer("block_16_project").output)  # inside the base, by hand
    rest = [base.get_layer(n) for n in ("Conv_1", "Conv_1_bn", "out_relu")]
    dense = model.get_layer("head")

    def head(a):
        for layer in rest:
            a = layer(a, training=False) if isinstance(layer, layers.BatchNormalization) else layer(a)
        return ops.matmul(ops.mean(a, axis=(1, 2)), dense.kernel) + dense.bias

    values = to_numpy(inner(images))
    assert maps.shape == (2, 3, 3)
    for i in range(2):
        expected, grads = recipe(values[i : i + 1], head, 2)
        assert np.ptp(grads[0], axis=(0, 1)).max() > 0  # ReLU6 behind the point: weights vary by position
        np.testing.assert_allclose(maps[i], expected, atol=1e-4)
    upsampled = ks.grad_cam(model, images, point, class_index=2, size="input")
    assert upsampled.shape == (2, 96, 96)
    np.testing.assert_allclose(upsampled, ks.resize_maps(maps, (96, 96)), atol=1e-6)


@pytest.mark.backend
def test_resize_maps_is_bilinear_with_half_pixel_centres():
    maps = np.random.default_rng(2).random((2, 3, 4)).astype("float32")
    big = ks.resize_maps(maps, (6, 8))
    # half-pixel centres: output pixel (0.5 + i) / 2 - 0.5 in input coordinates; x2 exactly
    rows, cols = np.clip((np.arange(6) + 0.5) / 2 - 0.5, 0, 2), np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, 2), np.minimum(c0 + 1, 3)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    m = maps[0]
    top = (1 - fc) * m[r0][:, c0] + fc * m[r0][:, c1]
    bottom = (1 - fc) * m[r1][:, c0] + fc * m[r1][:, c1]
    expected = (1 - fr) * top + fr * bottom
    np.testing.assert_allclose(big[0], expected, atol=1e-6)
    assert ks.resize_maps(maps[0], (6, 8)).shape == (6, 8)


# ---------------------------------------------------------------------------
# saliency and integrated gradients


def small_cnn():
    x = keras.Input((6, 6, 3), name="image")
    h = layers.Conv2D(4, 3, activation="tanh", name="conv")(x)
    h = layers.Flatten(name="flat")(h)
    return keras.Model(x, layers.Dense(3, activation="softmax", name="out")(h), name="small_cnn")


def logits(model):
    flat, dense = keras.Model(model.input, model.get_layer("flat").output), model.get_layer("out")
    return lambda v: ops.matmul(flat(v), dense.kernel) + dense.bias


@pytest.mark.backend
def test_vanilla_saliency_and_smoothgrad():
    model = small_cnn()
    x = np.random.default_rng(3).uniform(-1, 1, (4, 6, 6, 3)).astype("float32")
    score = logits(model)
    expected = np.abs(own_autodiff(lambda v: score(v)[:, 2], x)).max(-1)
    np.testing.assert_allclose(ks.saliency(model, x, target=2), expected, rtol=1e-5, atol=1e-7)
    predicted = np.argmax(to_numpy(model(x)), axis=-1)
    per_class = [own_autodiff(lambda v, c=c: score(v)[:, c], x) for c in range(3)]
    expected = np.abs(np.stack([per_class[c][i] for i, c in enumerate(predicted)])).max(-1)
    np.testing.assert_allclose(ks.saliency(model, x), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ks.grad_cam(model, x, "conv"), ks.grad_cam(model, x, "conv", class_index=predicted))
    # SmoothGrad: the same noise, drawn in the same order (one batch), averaged by hand
    rng = np.random.default_rng(11)
    sigma = 0.2 * (x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True))
    total = np.zeros(x.shape)
    for _ in range(5):
        noisy = (x + sigma * rng.standard_normal(x.shape)).astype("float32")
        total += np.stack([own_autodiff(lambda v, c=c: score(v)[:, c], noisy)[i] for i, c in enumerate(predicted)])
    smooth = ks.saliency(model, x, method="smoothgrad", samples=5, noise=0.2, seed=11)
    np.testing.assert_allclose(smooth, np.abs(total / 5).max(-1), rtol=1e-5, atol=1e-7)
    assert not np.allclose(smooth, ks.saliency(model, x))


@pytest.mark.backend
def test_integrated_gradients_are_complete():
    model = small_cnn()
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (3, 6, 6, 3)).astype("float32")
    baseline = rng.uniform(-0.2, 0.2, (6, 6, 3)).astype("float32")
    score = logits(model)
    attributions = ks.integrated_gradients(model, x, target=1, baseline=baseline, steps=200, batch_size=64)
    assert attributions.shape == x.shape
    f_x = to_numpy(score(x))[:, 1]
    f_b = to_numpy(score(np.broadcast_to(baseline, x.shape).copy()))[:, 1]
    np.testing.assert_allclose(attributions.sum(axis=(1, 2, 3)), f_x - f_b, atol=1e-2)
    assert np.abs(f_x - f_b).min() > 0.05  # the check is not vacuous
    few = ks.integrated_gradients(model, x, target=1, baseline=baseline, steps=4)
    error = lambda a: np.abs(a.sum(axis=(1, 2, 3)) - (f_x - f_b)).max()  # noqa: E731
    assert error(few) > error(attributions)
    # the trapezoidal rule itself, with the backend's own gradients, at 4 steps
    grads = [own_autodiff(lambda v: score(v)[:, 1], (baseline + a * (x - baseline)).astype("float32"))
             for a in np.linspace(0, 1, 5)]
    rule = (x - baseline) * (0.5 * grads[0] + grads[1] + grads[2] + grads[3] + 0.5 * grads[4]) / 4
    np.testing.assert_allclose(few, rule, rtol=1e-4, atol=1e-6)
    predicted = np.argmax(to_numpy(model(x)), axis=-1)
    np.testing.assert_allclose(ks.integrated_gradients(model, x, target=None, steps=8),
                               ks.integrated_gradients(model, x, target=predicted, steps=8), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# bad input


@pytest.mark.backend
class TestBadAttributionInput:
    def test_grad_cam_needs_a_spatial_point(self):
        with pytest.raises(ks.DataError, match=r"spatial axes and channels.*'flat' of shape \(None, 64\)"):
            ks.grad_cam(small_cnn(), np.ones((1, 6, 6, 3)), "flat")

    def test_grad_cam_arguments(self):
        with pytest.raises(ks.DataError, match=r"`method` to be one of \('grad_cam', 'grad_cam\+\+'\)"):
            ks.grad_cam(small_cnn(), np.ones((1, 6, 6, 3)), "conv", method="gradcam")
        with pytest.raises(ks.DataError, match="`class_index` to be None, a class index"):
            ks.grad_cam(small_cnn(), np.ones((1, 6, 6, 3)), "conv", class_index="out")
        with pytest.raises(ks.DataError, match=r"`class_index` to be a class index from 0 to 2"):
            ks.grad_cam(small_cnn(), np.ones((1, 6, 6, 3)), "conv", class_index=5)
        with pytest.raises(ks.DataError, match=r"\(height, width\).*Received: size=\(4,\)"):
            ks.grad_cam(small_cnn(), np.ones((1, 6, 6, 3)), "conv", size=(4,))

    def test_one_input(self):
        data = {"a": np.ones((2, 4)), "b": np.ones((2, 3))}
        with pytest.raises(ks.DataError, match=r"one input for saliency maps.*\['a', 'b'\]"):
            ks.saliency(multi_io(), data)
        with pytest.raises(ks.DataError, match=r"one input for integrated gradients"):
            ks.integrated_gradients(multi_io(), data, target=lambda out: out["reg"][:, 0])

    def test_integrated_gradients_arguments(self):
        with pytest.raises(ks.DataError, match=r"`steps` to be an integer >= 1. Received: steps=0"):
            ks.integrated_gradients(small_cnn(), np.ones((1, 6, 6, 3)), target=0, steps=0)
        with pytest.raises(ks.DataError, match=r"`baseline` to be None .*shape \(5,\)"):
            ks.integrated_gradients(small_cnn(), np.ones((1, 6, 6, 3)), target=0, baseline=np.zeros(5))
        with pytest.raises(ks.DataError, match=r"`noise` to be a number >= 0"):
            ks.saliency(small_cnn(), np.ones((1, 6, 6, 3)), method="smoothgrad", noise=-1)
