"""Opening subclassed layers and models: symbolic tracing into the graph.

Small models written the way the Keras guides write them (a custom layer
with its own variables and shape arithmetic, a residual block, a subclassed
model, a tiny transformer with a causal mask): opened graphs reproduce the
original at every batch size and sequence length, share every variable by
identity, follow `training`, round-trip through `.keras`, expose their inner
points, and leave the original model exactly as it was. Untraceable code
stays closed with an error naming the layer, the line and the reason.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from keras import layers, ops
from zoo import assert_roundtrip, assert_unchanged, snapshot, to_numpy

import kerasurgery as ks
from kerasurgery import keras_internals as internals
from kerasurgery.layers.traced import SizedCall, VariableRead

pytestmark = pytest.mark.backend


# ---------------------------------------------------------------------------
# the models


class PositionalAdd(layers.Layer):
    """Adds a learned position table, sliced to the sequence length: shape arithmetic on a variable."""

    def __init__(self, max_length=8, **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length

    def build(self, input_shape):
        self.table = self.add_weight(shape=(self.max_length, input_shape[-1]), initializer="random_normal",
                                     name="table")

    def call(self, x):
        shape = ops.shape(x)
        table = ops.slice(ops.convert_to_tensor(self.table), (0, 0), (shape[1], shape[2]))
        return x + ops.broadcast_to(table, shape)

    def compute_output_shape(self, input_shape):  # JAX and torch cannot infer it from call() at free sizes
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length}


class ResidualBlock(layers.Layer):
    """The Keras guide's residual block: conv, BN, ReLU, conv, BN, dropout, add, ReLU."""

    def __init__(self, filters=4, **kwargs):
        super().__init__(**kwargs)
        self.conv_a = layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv_a")
        self.bn_a = layers.BatchNormalization(name="bn_a")
        self.conv_b = layers.Conv2D(filters, 3, padding="same", name="conv_b")
        self.bn_b = layers.BatchNormalization(name="bn_b")
        self.drop = layers.Dropout(0.5, name="drop")

    def call(self, x, training=None):
        h = self.bn_a(self.conv_a(x), training=training)
        h = self.bn_b(self.conv_b(h), training=training)
        h = self.drop(h, training=training)
        return ops.relu(h + x)


class ResNetLike(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stem = layers.Conv2D(4, 3, padding="same", name="stem")
        self.block_1 = ResidualBlock(name="block_1")
        self.block_2 = ResidualBlock(name="block_2")
        self.head = layers.Dense(3, activation="softmax", name="head")

    def call(self, x, training=None):
        h = self.block_2(self.block_1(self.stem(x), training=training), training=training)
        return self.head(ops.mean(h, axis=(1, 2)))


class CausalBlock(layers.Layer):
    """A tiny transformer block with a causal mask built from the sequence length."""

    def __init__(self, dim=8, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.attention = layers.MultiHeadAttention(heads, dim // heads, name="attention")
        self.norm = layers.LayerNormalization(name="norm")
        self.ffn = layers.Dense(2 * dim, activation="gelu", name="ffn")
        self.out = layers.Dense(dim, name="out")

    def causal_mask(self, x):
        length = ops.shape(x)[1]
        i = ops.arange(length)[:, None]
        j = ops.arange(length)[None, :]
        return ops.broadcast_to(ops.expand_dims(i >= j, 0), (ops.shape(x)[0], length, length))

    def call(self, x):
        h = self.norm(x + self.attention(x, x, attention_mask=self.causal_mask(x)))
        return h + self.out(self.ffn(h))

    def compute_output_shape(self, input_shape):
        return input_shape


class TinyTransformer(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embed = layers.Embedding(20, 8, name="embed")
        self.positions = PositionalAdd(name="positions")
        self.block = CausalBlock(name="block")
        self.logits = layers.Dense(20, name="logits")

    def call(self, tokens):
        return self.logits(self.block(self.positions(self.embed(tokens))))


def nonzero_biases(model):
    """Deterministic non-zero biases and BN statistics, so a mistake in either changes numbers."""
    rng = np.random.default_rng(1)
    for layer in internals.all_layers(model):
        for w in layer.weights:
            if w.name in ("bias", "beta", "moving_mean"):
                w.assign(rng.normal(0, 0.5, tuple(w.shape)).astype("float32"))
            elif w.name in ("gamma", "moving_variance"):
                w.assign(rng.uniform(0.5, 1.5, tuple(w.shape)).astype("float32"))
    return model


def functional_with_custom_layers():
    x = keras.Input((None, 4), name="x")
    h = PositionalAdd(name="positions")(x)
    h = layers.Dense(4, activation="tanh", name="proj")(h)
    y = CausalBlock(dim=4, heads=2, name="block")(h)
    return nonzero_biases(keras.Model(x, y, name="custom"))


def resnet_like():
    model = ResNetLike(name="resnet_like")
    model(np.zeros((1, 8, 8, 4), "float32"))  # built by a first call, as the Keras guides do
    return nonzero_biases(model)


def tiny_transformer():
    model = TinyTransformer(name="tiny_transformer")
    model(np.zeros((1, 5), "int32"))
    return nonzero_biases(model)


def values(model, data, training=False):
    return keras.tree.map_structure(to_numpy, model(data, training=training))


def assert_close(a, b, atol=1e-5):
    for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5)


rng = np.random.default_rng(0)


# ---------------------------------------------------------------------------
# tests


class TestOpenedGraphs:
    def test_custom_layers_open_and_reproduce_every_size(self, tmp_path):
        model = functional_with_custom_layers()
        before = snapshot(model)
        calls = {layer.name: len(internals.inbound_nodes(layer)) for layer in internals.all_layers(model)}
        graph = ks.to_graph(model, open=True)
        # tracing leaves no recorded call behind on the model's layers (to_model adds one, as any reuse)
        assert calls == {layer.name: len(internals.inbound_nodes(layer)) for layer in internals.all_layers(model)}
        assert graph.graph["closed"] == {}
        assert "positions/slice" in graph and "block/attention" in graph and "block/ffn" in graph
        rebuilt = ks.to_model(graph)
        for batch, length in [(2, 3), (5, 8), (1, 1)]:
            x = rng.normal(size=(batch, length, 4)).astype("float32")
            assert_close(values(rebuilt, x), values(model, x))
        assert_unchanged(model, before)
        assert_roundtrip(rebuilt, rng.normal(size=(3, 6, 4)).astype("float32"), tmp_path)

    def test_variables_are_shared_by_identity(self):
        model = functional_with_custom_layers()
        graph = ks.to_graph(model, open=True)
        reads = [d["op"] for _, d in graph.nodes(data=True) if isinstance(d["op"], VariableRead)]
        assert [r.variable for r in reads] == [model.get_layer("positions").table]
        rebuilt = ks.to_model(graph)
        originals = {id(w) for w in model.weights}
        assert {id(w) for w in rebuilt.weights} == originals
        x = rng.normal(size=(2, 4, 4)).astype("float32")
        model.get_layer("positions").table.assign(np.ones((8, 4), "float32"))  # training the original...
        assert_close(values(rebuilt, x), values(model, x))  # ...moves the opened model

    def test_size_arithmetic_becomes_sized_calls(self):
        graph = ks.to_graph(functional_with_custom_layers(), open=True)
        sized = {k: d["op"] for k, d in graph.nodes(data=True) if isinstance(d["op"], SizedCall)}
        assert {"positions/slice", "positions/broadcast_to", "block/broadcast_to"} <= set(sized)
        assert sized["positions/broadcast_to"].output_specs[0][0][-1] == 4  # static dimensions stay static

    def test_subclassed_resnet_traces_and_follows_training(self, tmp_path):
        model = resnet_like()
        before = snapshot(model)
        graph = ks.to_graph(model)  # a subclassed model is read by tracing its call; its blocks stay closed
        assert [k for k in graph.nodes if k != "x"] == ["stem", "block_1", "block_2", "mean", "head"]
        opened = ks.to_graph(model, open=True)
        assert {"stem", "block_1/conv_a", "block_1/bn_a", "block_2/drop", "head"} <= set(opened.nodes)
        assert "block_1/conv_a:pre" in ks.points(model, open=True)
        rebuilt = ks.to_model(opened)
        x = rng.normal(size=(4, 8, 8, 4)).astype("float32")
        assert_close(values(rebuilt, x), values(model, x))
        assert_roundtrip(rebuilt, x, tmp_path)
        assert_unchanged(model, before)

    def test_training_reaches_the_inside_of_opened_blocks(self):
        """BatchNorm in an opened block uses batch statistics with training=True, as in the original."""
        model = resnet_like()
        for block in ("block_1", "block_2"):
            getattr(model, block).drop.rate = 0.0  # deterministic training mode
        rebuilt = ks.to_model(ks.to_graph(model, open=True))
        x = rng.normal(size=(4, 8, 8, 4)).astype("float32")
        moving = [to_numpy(w) for w in model.non_trainable_weights]
        trained = values(model, x, training=True)
        assert_close(values(rebuilt, x, training=True), trained, atol=1e-4)
        assert np.abs(trained - values(model, x)).max() > 1e-3  # training mode matters here
        for w, m in zip(model.non_trainable_weights, moving):
            w.assign(m)

    def test_tiny_transformer_with_causal_mask_at_every_length(self, tmp_path):
        model = tiny_transformer()
        graph = ks.to_graph(model, open=True)  # built on (1, 5): batch and length are left free
        assert graph.graph["closed"] == {}
        assert graph.nodes["tokens"]["output_shapes"] == [(None, None)]
        rebuilt = ks.to_model(graph)
        for batch, length in [(1, 2), (3, 5), (2, 8)]:
            tokens = rng.integers(0, 20, (batch, length)).astype("int32")
            assert_close(values(rebuilt, tokens), values(model, tokens))
        assert_roundtrip(rebuilt, rng.integers(0, 20, (2, 7)).astype("int32"), tmp_path)

    def test_scores_inside_an_opened_block_follow_the_causal_mask(self):
        model = tiny_transformer()
        tokens = rng.integers(0, 20, (2, 6)).astype("int32")
        probe = ks.expose(model, ["block/attention:scores", "positions"])
        out = keras.tree.map_structure(to_numpy, probe(tokens))
        block = model.block
        x = out["positions"]
        mask = to_numpy(block.causal_mask(ops.convert_to_tensor(x)))
        _, scores = block.attention(x, x, attention_mask=mask, return_attention_scores=True)
        np.testing.assert_allclose(out["block/attention:scores"], to_numpy(scores), atol=1e-6)
        assert np.all(out["block/attention:scores"][:, :, 0, 1:] == 0)  # the first token sees itself only


class TestOnDemand:
    def test_addresses_through_a_closed_layer_open_it(self):
        model = functional_with_custom_layers()
        assert "block/ffn:pre" not in ks.points(model)  # closed by default
        probe = ks.expose(model, ["block/ffn:pre", "proj"])
        x = rng.normal(size=(2, 5, 4)).astype("float32")
        out = keras.tree.map_structure(to_numpy, probe(x))
        ffn = model.get_layer("block").ffn
        norm_out = to_numpy(ks.expose(model, ["block/norm"])(x)["block/norm"])
        np.testing.assert_allclose(out["block/ffn:pre"], norm_out @ to_numpy(ffn.kernel) + to_numpy(ffn.bias),
                                   atol=1e-5)

    def test_points_lists_what_opening_offers(self):
        model = functional_with_custom_layers()
        closed, opened = ks.points(model), ks.points(model, open=True)
        assert "block" in closed and "block/attention:scores" in opened and "block" in opened
        assert ks.points(model, "block/*") == [p for p in opened if p.startswith("block/") and ":" not in p]

    def test_unknown_inner_address_suggests_opened_ones(self):
        model = functional_with_custom_layers()
        with pytest.raises(ks.AddressError, match="block/ffn"):
            ks.expose(model, ["block/fnn:pre"])

    def test_collect_and_calibrate_agree_with_the_probe(self):
        model = functional_with_custom_layers()
        x = rng.normal(size=(10, 5, 4)).astype("float32")
        points = ["block/attention:scores", "block/ffn:pre", "positions"]
        probe = keras.tree.map_structure(to_numpy, ks.expose(model, points)(x))
        acts = ks.collect(model, x, points, batch_size=4)
        for p in points:
            np.testing.assert_allclose(acts[p], probe[p], atol=1e-5)
        stats = ks.calibrate(model, x, points, batch_size=3)
        for p in points:
            assert stats[p].min == pytest.approx(float(probe[p].min()), abs=1e-5)
            assert stats[p].max == pytest.approx(float(probe[p].max()), abs=1e-5)


class Untraceable(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(3, name="inner")

    def call(self, x):
        if ops.convert_to_numpy(ops.sum(x)) > 0:  # a branch on a tensor's value (runs eagerly only)
            return self.dense(x)
        return -self.dense(x)

    def compute_output_shape(self, input_shape):  # what lets Keras use it in a functional model
        return (*input_shape[:-1], 3)


class TestUntraceable:
    def model(self):
        x = keras.Input((3,), name="x")
        branchy = Untraceable(name="branchy")
        branchy.dense.build((None, 3))
        branchy.built = True
        return keras.Model(x, layers.Dense(2, name="head")(branchy(x)))

    def test_named_layer_raises_with_layer_line_and_reason(self):
        with pytest.raises(ks.ModelError, match=r"'branchy' \(Untraceable\).*test_opening.py:\d+ \(if ops"):
            ks.to_graph(self.model(), open=["branchy"])

    def test_open_true_leaves_it_closed_and_lists_it(self):
        model = self.model()
        with pytest.warns(UserWarning, match="could not be opened.*branchy"):
            graph = ks.to_graph(model, open=True)
        assert list(graph.graph["closed"]) == ["branchy"] and "branchy" in graph
        x = rng.normal(size=(2, 3)).astype("float32")
        assert_close(values(ks.to_model(graph), x), values(model, x))  # eagerly: the branch needs values

    def test_on_demand_address_inside_it_raises(self):
        with pytest.raises(ks.ModelError, match="branchy"):
            ks.expose(self.model(), ["branchy/inner"])


class TestAliasesAndNames:
    def test_a_nested_model_call_is_addressable(self):
        inner_in = keras.Input((4,), name="inner_in")
        subnet = keras.Model(inner_in, layers.Dense(3, activation="relu", name="d")(inner_in), name="subnet")
        x = keras.Input((4,), name="x")
        model = keras.Model(x, layers.Dense(2, name="out")(subnet(x)))
        data = rng.normal(size=(5, 4)).astype("float32")
        acts = ks.collect(model, data, ["subnet", "subnet:pre"])
        expected = to_numpy(subnet(data))
        np.testing.assert_allclose(acts["subnet"], expected, atol=1e-6)
        kernel, bias = subnet.get_layer("d").get_weights()
        np.testing.assert_allclose(acts["subnet:pre"], data @ kernel + bias, atol=1e-5)
        assert ks.points(model).index("subnet") == ks.points(model).index("subnet/d") + 1

    def test_a_nested_model_called_twice_has_one_address_per_call(self):
        enc_in = keras.Input((3,), name="enc_in")
        enc = keras.Model(enc_in, layers.Dense(2, name="proj")(enc_in), name="encoder")
        a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
        model = keras.Model([a, b], layers.Subtract(name="diff")([enc(a), enc(b)]))
        data = [rng.normal(size=(2, 3)).astype("float32") for _ in range(2)]
        out = ks.expose(model, ["encoder@0", "encoder@1"])(data)
        np.testing.assert_allclose(to_numpy(out["encoder@1"]), to_numpy(enc(data[1])), atol=1e-6)
        with pytest.raises(ks.AddressError, match="encoder@0"):
            ks.expose(model, ["encoder"])

    @pytest.mark.parametrize("name", ["blk:conv", "d@1", "d[0]", "d:pre", "a/b`c", "odd *name?"])
    def test_names_with_grammar_characters_are_quoted(self, name, tmp_path):
        x = keras.Input((3,), name="x")
        model = keras.Model(x, layers.Dense(2, activation="relu", name=name.replace("/", "_"))(x))
        listed = ks.points(model)
        assert len(listed) == 3
        probe = ks.expose(model, listed)
        data = rng.normal(size=(2, 3)).astype("float32")
        out = keras.tree.map_structure(to_numpy, probe(data))
        assert sorted(out) == sorted(listed)
        kernel, bias = model.layers[1].get_weights()
        np.testing.assert_allclose(out[listed[1]], data @ kernel + bias, atol=1e-5)  # the :pre point
        assert_roundtrip(probe, data, tmp_path)


def test_open_does_not_warn_for_builtin_layers():
    x = keras.Input((3,), name="x")
    model = keras.Model(x, layers.Dense(2, name="d")(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = ks.to_graph(model, open=True)
    assert list(graph.nodes) == ["x", "d"]
