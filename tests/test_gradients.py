"""gradients / weight_gradients: equal to central finite differences (float64) at
Dense, Conv, ``:pre``, branching, nested and opened points; equal to a hand-written
GradientTape on a keras.applications model (TensorFlow); losses reduced as
documented; the model untouched in training mode; a clear error for every bad
target."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers, ops

import kerasurgery as ks
from kerasurgery.ir.schema import fill, flatten_structure, topological_order
from reference import own_autodiff
from zoo import assert_unchanged, cnn_bn, dropout, multi_io, snapshot, to_numpy

BACKEND = keras.backend.backend()


@pytest.fixture
def float64():
    """float64 models. Keras 3.15 computes some float64 ops in float32 on JAX (``tanh``, even
    with x64) and PyTorch (``matmul``), so there the central differences are float32 ones:
    a larger step and tolerance (each backend's own autodiff is the tight reference)."""
    old, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # a policy set by an earlier test would win over floatx
    if BACKEND == "jax":  # JAX computes in float32 unless told otherwise
        import jax

        jax.config.update("jax_enable_x64", True)
    probe = ops.convert_to_tensor(np.full((2, 2), 0.3))
    exact = all(str(t.dtype).endswith("float64") for t in (ops.tanh(probe), ops.matmul(probe, probe)))
    yield (1e-6, 1e-6, 1e-8) if exact else (1e-3, 2e-3, 2e-4)  # eps, rtol, atol
    keras.config.set_floatx(old)
    keras.config.set_dtype_policy(policy)
    if BACKEND == "jax":
        jax.config.update("jax_enable_x64", False)


# ---------------------------------------------------------------------------
# reference: central differences through an interpreter of the (split) graph


def run_graph(graph, x, override=None):
    """Every node's outputs, called eagerly; ``override = (key, fn)`` replaces output 0 of `key` by fn(value)."""
    values = {flatten_structure(graph.graph["inputs"])[0]: [ops.convert_to_tensor(x)]}
    for key in topological_order(graph):
        node = graph.nodes[key]
        if node["kind"] == "input":
            if override and override[0] == key:
                values[key] = [override[1](values[key][0])]
            continue
        slots = {}
        for parent, _, edge in graph.in_edges(key, data=True):
            for index, slot in edge["feeds"]:
                slots[slot] = values[parent][index]
        out = keras.tree.flatten(node["op"](*fill(node["args"], slots), **fill(node["kwargs"], slots)))
        if override and override[0] == key:
            out = [override[1](out[0])] + out[1:]
        values[key] = out
    return values


def finite_differences(graph, x, key, objective, eps=1e-6):
    """d objective / d (output 0 of node `key`), per sample, by central differences."""
    shape = tuple(to_numpy(run_graph(graph, x)[key][0]).shape)
    grad = np.zeros(shape)
    for j in np.ndindex(*shape[1:]):
        f = []
        for sign in (1, -1):
            bump = np.zeros(shape)
            bump[(slice(None), *j)] = sign * eps
            values = run_graph(graph, x, (key, lambda v, b=bump: v + ops.convert_to_tensor(b, v.dtype)))
            f.append(to_numpy(objective(values)))
        grad[(slice(None), *j)] = (f[0] - f[1]) / (2 * eps)
    return grad


def dense_model():
    x = keras.Input((4,), name="x")
    h = layers.Dense(6, activation="tanh", name="d1")(x)
    h2 = layers.Dense(6, activation="softplus", name="d2")(h)
    s = layers.Add(name="res")([h, h2])  # two paths from d1
    return keras.Model(x, layers.Dense(3, activation="softmax", name="out")(s), name="dense_model")


def conv_model():
    x = keras.Input((6, 6, 2), name="image")
    h = layers.Conv2D(3, 3, activation="tanh", name="c1")(x)
    h = layers.Conv2D(2, 3, activation="elu", name="c2")(h)
    h = layers.Flatten(name="flat")(h)
    return keras.Model(x, layers.Dense(3, activation="softmax", name="out")(h), name="conv_model")


def nested_model():
    base = keras.Sequential([keras.Input((5, 5, 2)), layers.Conv2D(3, 3, activation="swish", name="conv"),
                             layers.BatchNormalization(name="bn"), layers.ReLU(name="relu")], name="base")
    x = keras.Input((5, 5, 2), name="image")
    h = layers.GlobalAveragePooling2D(name="gap")(base(x))
    return keras.Model(x, layers.Dense(2, activation="sigmoid", name="out")(h), name="nested_model")


def _randomize_bn(model, rng):
    for layer in model._flatten_layers():
        if isinstance(layer, layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2, size=layer.moving_variance.shape))


CASES = [
    # (factory, point, node of the split graph holding its value, class)
    (dense_model, "x", "x", 2),
    (dense_model, "d1:pre", "d1", 0),
    (dense_model, "d1", "d1_activation", 1),  # both paths: d2 and the residual
    (dense_model, "d2", "d2_activation", 2),
    (conv_model, "c1:pre", "c1", 1),
    (conv_model, "c2", "c2_activation", 0),
    (nested_model, "base/conv:pre", "conv", 1),  # split_activations' copy is flat
    (nested_model, "base/bn", "bn", 0),
    (nested_model, "base", "relu", 1),
]


@pytest.mark.backend
@pytest.mark.parametrize("factory, point, node, cls", CASES, ids=[f"{c[0].__name__}-{c[1]}" for c in CASES])
def test_gradients_equal_central_differences(float64, factory, point, node, cls):
    model = factory()
    rng = np.random.default_rng(1)
    _randomize_bn(model, rng)
    x = rng.normal(size=(3, *model.input.shape[1:]))
    got = ks.gradients(model, x, [point], target=cls, batch_size=2)[point]
    split = ks.to_graph(ks.split_activations(model))
    head = "out"  # the class score: the output layer before its softmax / sigmoid
    eps, rtol, atol = float64
    expected = finite_differences(split, x, node, lambda v: v[head][0][:, cls], eps)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


@pytest.mark.backend
def test_input_and_layer_gradients_equal_the_backends_own_autodiff():
    model = dense_model()
    x = np.random.default_rng(9).normal(size=(5, 4)).astype("float32")
    res = keras.Model(model.input, model.get_layer("res").output)
    out = model.get_layer("out")
    expected = own_autodiff(lambda v: (ops.matmul(res(v), out.kernel) + out.bias)[:, 2], x)
    np.testing.assert_allclose(ks.gradients(model, x, "x", target=2)["x"], expected, rtol=1e-5, atol=1e-7)
    d1, d2 = model.get_layer("d1"), model.get_layer("d2")  # from d1 on, by hand: both paths
    expected = own_autodiff(lambda v: ops.log(out(v + d2(v))[:, 0]), to_numpy(d1(x)))
    got = ks.gradients(model, x, "d1", target=lambda p: ops.log(p[:, 0]))["d1"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.backend
def test_function_and_point_targets_equal_central_differences(float64):
    model = dense_model()
    x = np.random.default_rng(2).normal(size=(4, 4))
    split = ks.to_graph(ks.split_activations(model))
    eps, rtol, atol = float64
    got = ks.gradients(model, x, "d1", target=lambda out: ops.sum(out ** 2, axis=-1))["d1"]
    expected = finite_differences(split, x, "d1_activation", lambda v: ops.sum(v["out_activation"][0] ** 2, axis=-1),
                                  eps)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    got = ks.gradients(model, x, "x", target="d2")["x"]  # a point: its sum per sample
    expected = finite_differences(split, x, "x", lambda v: ops.sum(v["d2_activation"][0], axis=-1), eps)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


@pytest.mark.backend
def test_several_points_in_one_pass_and_shared_tensors():
    model = cnn_bn()
    x = np.random.default_rng(0).normal(size=(5, 16, 16, 3)).astype("float32")
    both = ks.gradients(model, x, ["conv", "relu:pre", "bn", "sep:pre"], target=3, batch_size=2)
    assert list(both) == ["conv", "relu:pre", "bn", "sep:pre"]
    assert both["relu:pre"] is both["bn"]  # one tensor, one array
    for point in ("conv", "sep:pre"):
        alone = ks.gradients(model, x, [point], target=3, batch_size=5)[point]
        np.testing.assert_allclose(both[point], alone, rtol=1e-5, atol=1e-7)


@pytest.mark.backend
def test_checking_a_target_function_takes_no_automatic_names():
    """Keras numbers automatic names (get_item, get_item_1, ...) with global counters; checking a
    target on symbolic tensors must not move them, or the user's next names (and the addresses of
    ops inside opened layers) would depend on whether gradients ran before."""
    from keras.src.backend.common import global_state

    model = dense_model()
    keras.ops.exp(keras.KerasTensor((None, 1)))  # the counters exist
    counters = lambda: {k: v for k, v in global_state.get_global_attribute("object_name_uids").items()  # noqa: E731
                        if k != "keras_tensor"}  # symbolic tensors' own names (any model build takes some)
    before = counters()
    ks.gradients(model, np.ones((2, 4)), "d1", target=lambda out: out[:, 1] + out[:, 2])
    ks.gradients(model, np.ones((2, 4)), "d1", y=np.zeros((2, 3)), loss="mse")
    assert counters() == before


@pytest.mark.backend
def test_per_sample_classes_and_predicted_class():
    model = dense_model()
    x = np.random.default_rng(3).normal(size=(6, 4)).astype("float32")
    classes = np.array([0, 2, 1, 1, 0, 2])
    each = ks.gradients(model, x, "x", target=classes, batch_size=4)["x"]
    for c in range(3):
        alone = ks.gradients(model, x, "x", target=c)["x"]
        np.testing.assert_allclose(each[classes == c], alone[classes == c], rtol=1e-6)
    predicted = np.argmax(model.predict(x, verbose=0), axis=-1)
    np.testing.assert_allclose(ks.gradients(model, x, "x")["x"],
                               ks.gradients(model, x, "x", target=predicted)["x"], rtol=1e-6)


@pytest.mark.backend
def test_opened_layer_point_equals_central_differences(float64):
    class Block(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = layers.Dense(3, name="inner")
            self.outer = layers.Dense(3, name="outer")

        def call(self, x):
            return self.outer(ops.tanh(self.inner(x)) * 2.0)

    x_in = keras.Input((3,), name="x")
    model = keras.Model(x_in, layers.Dense(2, name="out")(Block(name="block")(x_in)))
    x = np.random.default_rng(4).normal(size=(3, 3))
    got = ks.gradients(model, x, "block/inner", target=1)["block/inner"]
    graph = ks.to_graph(model, open=True)
    eps, rtol, atol = float64
    expected = finite_differences(graph, x, "block/inner", lambda v: v["out"][0][:, 1], eps)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


@pytest.mark.backend
def test_free_spatial_size():
    x_in = keras.Input((None, None, 2), name="image")
    h = layers.Conv2D(3, 3, activation="relu", name="conv")(x_in)
    model = keras.Model(x_in, layers.Dense(2, name="out")(layers.GlobalAveragePooling2D(name="gap")(h)))
    for size in (5, 7):
        x = np.random.default_rng(size).normal(size=(2, size, size, 2)).astype("float32")
        g = ks.gradients(model, x, "conv:pre", target=1)["conv:pre"]
        relu = (to_numpy(ks.expose(model, ["conv:pre"])(x)["conv:pre"]) > 0).astype("float32")
        w = to_numpy(model.get_layer("out").kernel)[:, 1]
        expected = relu * w / (size - 2) ** 2  # d mean-pool(relu(pre)) . w / d pre
        np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.backend
def test_fixed_batch_size_pads_without_counting_the_padding():
    x_in = keras.Input((3,), batch_size=4, name="x")
    dense = layers.Dense(2, activation="tanh", name="d")
    fixed = keras.Model(x_in, layers.Dense(2, name="out")(dense(x_in)))
    free_in = keras.Input((3,), name="x")
    free = keras.Model(free_in, fixed.get_layer("out")(dense(free_in)))  # the same layers, any batch size
    x = np.random.default_rng(10).normal(size=(6, 3)).astype("float32")  # batches of 4 and 2 (padded to 4)
    np.testing.assert_allclose(ks.gradients(fixed, x, "d", target=1)["d"], ks.gradients(free, x, "d", target=1)["d"],
                               rtol=1e-6)
    a = ks.weight_gradients(fixed, x, y=np.zeros((6, 2)), loss="mse")
    b = ks.weight_gradients(free, x, y=np.zeros((6, 2)), loss="mse")
    for path in a:
        np.testing.assert_allclose(a[path], b[path], rtol=1e-5, atol=1e-7, err_msg=path)


# ---------------------------------------------------------------------------
# losses and weights


@pytest.mark.backend
def test_loss_gradient_is_the_dataset_mean_whatever_the_batch_size():
    model = dense_model()
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(10, 4)).astype("float32"), rng.integers(0, 3, 10)
    sparse = keras.losses.SparseCategoricalCrossentropy()
    a = ks.gradients(model, x, "d2", y=y, loss=sparse, batch_size=3)["d2"]
    b = ks.gradients(model, x, "d2", y=y, loss="sparse_categorical_crossentropy", batch_size=10)["d2"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    # the mean over 10 samples: each row is 1/10 of that sample's own loss gradient
    total = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    summed = ks.gradients(model, x, "d2", y=y, loss=total)["d2"]
    np.testing.assert_allclose(a * 10, summed, rtol=1e-5, atol=1e-8)
    model.compile(loss="sparse_categorical_crossentropy")  # y without loss: the compiled loss
    np.testing.assert_allclose(ks.gradients(model, x, "d2", y=y)["d2"], a, rtol=1e-6, atol=1e-9)


@pytest.mark.backend
def test_weight_gradients_of_a_loss_equal_the_analytic_gradient():
    x_in = keras.Input((3,), name="x")
    model = keras.Model(x_in, layers.Dense(2, name="out")(x_in))
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(7, 3)).astype("float32"), rng.normal(size=(7, 2)).astype("float32")
    g = ks.weight_gradients(model, x, y=y, loss="mse", batch_size=3)
    assert list(g) == [v.path for v in model.trainable_variables]
    residual = model.predict(x, verbose=0) - y  # mse = mean over 7 x 2 values of r^2
    np.testing.assert_allclose(g["out/kernel"], 2 * x.T @ residual / 14, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g["out/bias"], 2 * residual.sum(0) / 14, rtol=1e-5, atol=1e-6)
    seq_in = keras.Input((4, 3), name="seq")  # mse gives 4 values per sample: the mean is over 7 x 4 x 2
    seq = keras.Model(seq_in, layers.Dense(2, name="out")(seq_in))
    xs, ys = rng.normal(size=(7, 4, 3)).astype("float32"), rng.normal(size=(7, 4, 2)).astype("float32")
    r = seq.predict(xs, verbose=0) - ys
    g_seq = ks.weight_gradients(seq, xs, y=ys, loss="mse", batch_size=3)
    np.testing.assert_allclose(g_seq["out/bias"], 2 * r.sum((0, 1)) / 56, rtol=1e-5, atol=1e-6)
    g = ks.weight_gradients(model, x, target=1)  # sum over samples of out[:, 1]
    np.testing.assert_allclose(g["out/kernel"][:, 1], x.sum(0), rtol=1e-5)
    np.testing.assert_allclose(g["out/kernel"][:, 0], 0)


@pytest.mark.backend
def test_weights_of_another_output_get_zeros():
    model = multi_io()
    data = {"a": np.ones((3, 4), "float32"), "b": np.ones((3, 3), "float32")}
    g = ks.weight_gradients(model, data, target=lambda out: out["reg"][:, 0])
    assert set(g) == {v.path for v in model.trainable_variables}
    assert not np.any(g["cls/kernel"]) and np.any(g["reg/kernel"]) and np.any(g["da/kernel"])


@pytest.mark.backend
def test_training_mode_changes_nothing_in_the_model():
    model = dropout()
    model.get_layer("bn").moving_mean.assign(np.full(6, 0.3))
    before = snapshot(model)
    x = np.random.default_rng(7).normal(size=(8, 6)).astype("float32")
    trained = ks.gradients(model, x, ["dense", "bn"], target=1, training=True, batch_size=4)
    ks.weight_gradients(model, x, target=1, training=True)
    assert_unchanged(model, before)
    inference = ks.gradients(model, x, ["dense", "bn"], target=1)
    assert not np.allclose(trained["dense"], inference["dense"])  # dropped units, batch statistics
    np.testing.assert_allclose(inference["bn"], np.broadcast_to(to_numpy(model.get_layer("out").kernel)[:, 1],
                                                                (8, 6)), rtol=1e-6)


# ---------------------------------------------------------------------------
# a keras.applications model against a hand-written GradientTape


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the reference is tf.GradientTape")
def test_mobilenet_equals_a_hand_written_gradient_tape():
    import tensorflow as tf

    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=5)
    x = np.random.default_rng(8).normal(size=(6, 32, 32, 3)).astype("float32")
    points = ["block_3_expand_relu:pre", "block_6_project", "Conv_1_bn"]
    got = ks.gradients(model, x, points, target=4, batch_size=4)
    tensors = [model.get_layer(n).output for n in ("block_3_expand_BN", "block_6_project", "Conv_1_bn")]
    reference = keras.Model(model.input, [*tensors, model.get_layer("global_average_pooling2d").output])
    dense = model.get_layer("predictions")
    with tf.GradientTape() as tape:
        *values, pooled = reference(x, training=False)
        logits = tf.matmul(pooled, dense.kernel) + dense.bias
        score = logits[:, 4]
    expected = tape.gradient(score, values)
    for point, e in zip(points, expected):
        np.testing.assert_allclose(got[point], e.numpy(), rtol=1e-4, atol=1e-6, err_msg=point)


# ---------------------------------------------------------------------------
# bad input


@pytest.mark.backend
class TestBadTargets:
    def test_class_index_out_of_range(self):
        with pytest.raises(ks.DataError, match=r"class index from 0 to 2 .*'out:pre'.* Received: target=3"):
            ks.gradients(dense_model(), np.ones((2, 4)), "d1", target=3)
        with pytest.raises(ks.DataError, match=r"Received: -1 for sample 1"):
            ks.gradients(dense_model(), np.ones((2, 4)), "d1", target=[0, -1])

    def test_one_class_per_sample(self):
        with pytest.raises(ks.DataError, match=r"per sample of the data \(2 samples\)\. Received: 3"):
            ks.gradients(dense_model(), np.ones((2, 4)), "d1", target=[0, 1, 2])

    def test_target_the_points_do_not_reach(self):
        with pytest.raises(ks.TransformError, match=r"\['d2'\], on which target 'd1' does not depend"):
            ks.gradients(dense_model(), np.ones((2, 4)), ["x", "d2"], target="d1")
        with pytest.raises(ks.TransformError, match=r"\['cls:pre'\].*undefined, not zero"):
            ks.gradients(multi_io(), {"a": np.ones((2, 4)), "b": np.ones((2, 3))}, ["da", "cls:pre"],
                         target=lambda out: out["reg"][:, 0])

    def test_integer_input(self):
        tokens = keras.Input((4,), dtype="int32", name="tokens")
        h = layers.GlobalAveragePooling1D(name="pool")(layers.Embedding(10, 3, name="embed")(tokens))
        model = keras.Model(tokens, layers.Dense(2, name="out")(h))
        with pytest.raises(ks.TransformError, match=r"'tokens' of dtype int32.*not defined.*Embedding"):
            ks.gradients(model, np.ones((2, 4), "int32"), "tokens", target=0)
        g = ks.gradients(model, np.ones((2, 4), "int32"), "embed", target=0)["embed"]
        assert g.shape == (2, 4, 3)

    def test_target_function_that_is_not_one_value_per_sample(self):
        with pytest.raises(ks.DataError, match=r"one value per sample, shape \(batch,\)\. Received: shape \(None, 3\)"):
            ks.gradients(dense_model(), np.ones((2, 4)), "d1", target=lambda out: out * 2)
        with pytest.raises(ks.DataError, match=r"Received: shape \(\)"):
            ks.gradients(dense_model(), np.ones((2, 4)), "d1", target=lambda out: ops.sum(out))
        with pytest.raises(ks.DataError, match=r"written with keras.ops.*failed on symbolic outputs"):
            ks.gradients(dense_model(), np.ones((2, 4)), "d1", target=lambda out: np.asarray(out).sum(-1))

    def test_target_and_loss_labels(self):
        with pytest.raises(ks.DataError, match="either `target` or `y`/`loss`"):
            ks.gradients(dense_model(), np.ones((2, 4)), "d1", target=1, y=np.zeros(2), loss="mse")
        with pytest.raises(ks.DataError, match=r"Expected `loss` .*not compiled"):
            ks.gradients(dense_model(), np.ones((2, 4)), "d1", y=np.zeros((2, 3)))
        with pytest.raises(ks.DataError, match=r"loss accepts .*Received: y of shape \(2, 5\)"):
            ks.gradients(dense_model(), np.ones((2, 4)), "d1", y=np.zeros((2, 5)), loss="mse")
        with pytest.raises(ks.AddressError, match="Received: 'res_1', which names no layer.*'res'"):
            ks.gradients(dense_model(), np.ones((2, 4)), "d1", target="res_1")
