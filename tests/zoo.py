"""A zoo of small named model factories and the helpers every test uses.

Each factory builds a fresh model with named layers; `sample_inputs` makes
matching random data. The helpers assert what every transform promises:
equal outputs, an unchanged original, and a `.keras` round trip.
"""

from __future__ import annotations

import functools
import json
import zlib

import keras
import numpy as np
from keras import layers, ops

# ---------------------------------------------------------------------------
# factories

#: How `nontrivial` fills each kind of variable (by variable name): biases and
#: BatchNormalization/LayerNormalization parameters and statistics that no
#: initializer default would give, so a lost bias or statistic changes numbers.
_FILL = {
    "bias": lambda rng, shape: rng.normal(0.0, 0.5, shape),
    "beta": lambda rng, shape: rng.normal(0.0, 0.5, shape),
    "gamma": lambda rng, shape: rng.uniform(0.5, 1.5, shape),
    "moving_mean": lambda rng, shape: rng.normal(0.0, 0.5, shape),
    "moving_variance": lambda rng, shape: rng.uniform(0.5, 1.5, shape),
}


def nontrivial(model):
    """Give `model` non-zero biases and non-trivial normalization parameters, deterministically.

    Every variable named ``bias``, ``beta``, ``gamma``, ``moving_mean`` or
    ``moving_variance`` (in nested models and sublayers too: MultiHeadAttention's
    projections, LSTM/GRU biases) is set from a generator seeded by the model's
    name, whatever Keras's global seed. Returns `model`.
    """
    rng = np.random.default_rng(zlib.crc32(model.name.encode()))
    for variable in model.weights:
        fill = _FILL.get(variable.name)
        if fill is not None:
            variable.assign(fill(rng, tuple(variable.shape)).astype(variable.dtype))
    return model


def _factory(build):
    """Decorator: the zoo factory `build`, with `nontrivial` applied to what it returns."""

    @functools.wraps(build)
    def make():
        return nontrivial(build())

    return make



@_factory
def mlp():
    x = keras.Input((8,), name="x")
    h = layers.Dense(16, activation="relu", name="dense_1")(x)
    h = layers.Dense(8, activation="tanh", name="dense_2")(h)
    y = layers.Dense(3, activation="softmax", name="predictions")(h)
    return keras.Model(x, y, name="mlp")


@_factory
def cnn_bn():
    x = keras.Input((16, 16, 3), name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.ReLU(name="relu")(h)
    h = layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")(h)
    h = layers.SeparableConv2D(8, 3, padding="same", activation="elu", name="sep")(h)
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="sigmoid", name="up")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    y = layers.Dense(4, activation="softmax", name="predictions")(h)
    return keras.Model(x, y, name="cnn_bn")


@_factory
def branches():
    x = keras.Input((6,), name="x")
    a = layers.Dense(5, activation="relu", name="a")(x)
    b = layers.Dense(5, activation="selu", name="b")(x)
    s = layers.Add(name="add")([a, b])
    d = layers.Subtract(name="sub")([b, a])
    c = layers.Concatenate(name="concat")([s, d, x])
    y = layers.Dense(2, name="out")(c)
    return keras.Model(x, y, name="branches")


@_factory
def shared():
    x = keras.Input((5,), name="x")
    dense = layers.Dense(5, activation="relu", name="shared")
    h1 = dense(x)
    h2 = dense(h1)
    y = layers.Add(name="add")([h1, h2])
    return keras.Model(x, y, name="shared_model")


@_factory
def nested_functional():
    inner_in = keras.Input((6,), name="inner_in")
    h = layers.Dense(8, activation="relu", name="inner_dense")(inner_in)
    h = layers.Dropout(0.3, name="inner_drop")(h)
    h = layers.Dense(4, activation="gelu", name="inner_out")(h)
    inner = keras.Model(inner_in, h, name="encoder")
    x = keras.Input((6,), name="x")
    z = inner(x, training=False)
    y = layers.Dense(2, activation="sigmoid", name="head")(z)
    return keras.Model(x, y, name="nested_functional")


@_factory
def nested_sequential():
    block = keras.Sequential(
        [
            keras.Input((6,)),
            layers.Dense(8, activation="relu", name="seq_dense"),
            layers.BatchNormalization(name="seq_bn"),
            layers.Dense(4, activation="swish", name="seq_out"),
        ],
        name="block",
    )
    x = keras.Input((6,), name="x")
    y = layers.Dense(3, activation="softmax", name="head")(block(x))
    return keras.Model(x, y, name="nested_sequential")


@_factory
def deep_nested():
    leaf = keras.Sequential([keras.Input((4,)), layers.Dense(4, activation="relu", name="leaf_dense")], name="leaf")
    mid_in = keras.Input((4,), name="mid_in")
    mid = keras.Model(mid_in, layers.Dense(4, activation="tanh", name="mid_dense")(leaf(mid_in)), name="mid")
    x = keras.Input((4,), name="x")
    y = layers.Dense(2, name="head")(mid(x))
    return keras.Model(x, y, name="deep_nested")


@_factory
def siamese():
    enc_in = keras.Input((5,), name="enc_in")
    enc = keras.Model(enc_in, layers.Dense(3, activation="relu", name="proj")(enc_in), name="encoder")
    a = keras.Input((5,), name="left")
    b = keras.Input((5,), name="right")
    d = layers.Subtract(name="diff")([enc(a), enc(b)])
    return keras.Model([a, b], layers.Dense(1, activation="sigmoid", name="score")(d), name="siamese")


@_factory
def multi_io():
    a = keras.Input((4,), name="a")
    b = keras.Input((3,), name="b")
    h = layers.Concatenate(name="cat")([layers.Dense(4, activation="relu", name="da")(a), b])
    out_1 = layers.Dense(2, activation="softmax", name="cls")(h)
    out_2 = layers.Dense(1, name="reg")(h)
    return keras.Model({"a": a, "b": b}, {"cls": out_1, "reg": out_2}, name="multi_io")


@_factory
def raw_ops():
    x = keras.Input((4,), name="x")
    h = layers.Dense(4, activation="relu", name="dense")(x)
    z = ops.add(h, x) * 2.0
    y = ops.tanh(z)
    y = ops.concatenate([y, ops.mean(h, axis=-1, keepdims=True)], axis=-1)
    return keras.Model(x, y, name="raw_ops")


@_factory
def attention():
    q = keras.Input((5, 8), name="tokens")
    mask = keras.Input((5, 5), name="mask", dtype="bool")
    h = layers.Dense(8, activation="gelu", name="embed")(q)
    att = layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    a = att(query=h, value=h, key=h, attention_mask=mask)
    h = layers.LayerNormalization(name="ln")(layers.Add(name="res")([h, a]))
    gqa = layers.GroupQueryAttention(head_dim=4, num_query_heads=2, num_key_value_heads=1, name="gqa")
    g = gqa(h, h)
    y = layers.Dense(3, activation="softmax", name="predictions")(layers.GlobalAveragePooling1D(name="pool")(g))
    return keras.Model([q, mask], y, name="attention")


@_factory
def cross_attention():
    """Query, key and value from three different tensors; target and source lengths differ.

    Swapping any two of them changes shapes or values, so a reader that mixed up
    MHA's arguments cannot pass a round trip.
    """
    q = keras.Input((3, 6), name="queries")
    memory = keras.Input((5, 4), name="memory")
    mask = keras.Input((3, 5), name="cross_mask", dtype="bool")
    qh = layers.Dense(6, activation="relu", name="q_proj")(q)
    kh = layers.Dense(4, activation="tanh", name="k_proj")(memory)
    # value_dim stays key_dim: Keras 3.15 on JAX fails on MHA with value_dim != key_dim.
    att = layers.MultiHeadAttention(num_heads=2, key_dim=3, name="cross")
    a = att(query=qh, value=memory, key=kh, attention_mask=mask)
    b = layers.MultiHeadAttention(num_heads=1, key_dim=2, name="cross_pos")(a, memory)  # positional
    gqa = layers.GroupQueryAttention(head_dim=3, num_query_heads=2, num_key_value_heads=1, name="cross_gqa")
    v = layers.Dense(6, name="v_proj")(memory)  # GroupQueryAttention wants value dim == query dim
    g = gqa(b, v, kh)  # positional query, value, key
    h = layers.Concatenate(name="cat")([a, b, g])
    y = layers.Dense(2, activation="softmax", name="predictions")(layers.GlobalAveragePooling1D(name="pool")(h))
    return keras.Model([q, memory, mask], y, name="cross_attention")


@_factory
def dropout():
    x = keras.Input((6,), name="x")
    h = layers.Dense(6, activation="relu", name="dense")(x)
    h = layers.Dropout(0.5, name="drop")(h)
    h = layers.BatchNormalization(name="bn")(h)
    return keras.Model(x, layers.Dense(2, name="out")(h), name="dropout")


@_factory
def sequential_built():
    model = keras.Sequential(
        [layers.Dense(5, activation="relu", name="d1"), layers.Dense(2, activation="softmax", name="d2")],
        name="seq",
    )
    model.build((None, 4))
    return model


@_factory
def recurrent():
    x = keras.Input((6, 3), name="seq_in")
    out, h, c = layers.LSTM(4, return_sequences=True, return_state=True, name="lstm")(x)
    e = layers.Conv1D(4, 3, padding="same", activation="relu", name="conv1d")(out)
    e = layers.EinsumDense("abc,cd->abd", output_shape=(None, 4), bias_axes="d", activation="relu", name="einsum")(e)
    y = layers.Concatenate(name="cat")([layers.GlobalMaxPooling1D(name="gmp")(e), h, c])
    return keras.Model(x, y, name="recurrent")


@_factory
def sequential_input():
    return keras.Sequential(
        [keras.Input((4,), name="features"), layers.Dense(5, activation="relu", name="d1"),
         layers.Dropout(0.2, name="drop"), layers.Dense(2, name="d2")],
        name="seq_input",
    )


@_factory
def masked():
    tokens = keras.Input((7,), dtype="int32", name="tokens")
    e = layers.Embedding(20, 6, mask_zero=True, name="embed")(tokens)
    h = layers.LSTM(5, return_sequences=True, name="lstm")(e)
    h = layers.BatchNormalization(name="bn")(h, training=False)
    h = layers.GRU(4, name="gru")(h)
    return keras.Model(tokens, layers.Dense(2, activation="softmax", name="out")(h), name="masked")


class Backbone(keras.Model):
    """A subclass of Functional with dict inputs, like keras_hub backbones."""

    def __init__(self, hidden=6, **kwargs):
        ids = keras.Input((5,), dtype="int32", name="token_ids")
        padding = keras.Input((5,), dtype="int32", name="padding_mask")
        h = layers.Embedding(11, hidden, name="token_embedding")(ids)
        h = layers.Dense(hidden, activation="gelu", name="ffn")(h)
        h = h * ops.expand_dims(ops.cast(padding, h.dtype), -1)
        super().__init__(inputs={"token_ids": ids, "padding_mask": padding}, outputs=h, **kwargs)
        self.hidden = hidden

    def get_config(self):
        return {"hidden": self.hidden, "name": self.name, "trainable": self.trainable}


@_factory
def backbone():
    return Backbone(name="backbone")


ZOO = {
    "mlp": mlp,
    "cnn_bn": cnn_bn,
    "branches": branches,
    "shared": shared,
    "nested_functional": nested_functional,
    "nested_sequential": nested_sequential,
    "deep_nested": deep_nested,
    "siamese": siamese,
    "multi_io": multi_io,
    "raw_ops": raw_ops,
    "attention": attention,
    "cross_attention": cross_attention,
    "dropout": dropout,
    "sequential_built": sequential_built,
    "recurrent": recurrent,
    "sequential_input": sequential_input,
    "masked": masked,
    "backbone": backbone,
}

# ---------------------------------------------------------------------------
# data and assertions


def _sample(tensor, batch, rng):
    shape = [batch if i == 0 else (d or 4) for i, d in enumerate(tensor.shape)]
    if "bool" in str(tensor.dtype):
        return rng.random(shape) > 0.2
    if "int" in str(tensor.dtype):
        values = rng.integers(0, 10, shape).astype(str(tensor.dtype))
        values[..., -2:] = 0  # padding, so masks matter
        return values
    return rng.standard_normal(shape).astype("float32")


def sample_inputs(model, batch=4, seed=0):
    """Random data matching `model`'s inputs (structure included)."""
    rng = np.random.default_rng(seed)
    struct = model._functional._inputs_struct if isinstance(model, keras.Sequential) else model._inputs_struct
    return keras.tree.map_structure(lambda t: _sample(t, batch, rng), struct)


def to_numpy(tensor):
    """A backend tensor as numpy (a torch output that requires grad included)."""
    return keras.ops.convert_to_numpy(tensor)


def predict(model, data):
    return keras.tree.map_structure(to_numpy, model(data, training=False))


def assert_same_outputs(a, b, data, atol=1e-5):
    """Outputs of models `a` and `b` on `data` are equal in structure and value."""
    oa, ob = predict(a, data), predict(b, data)
    keras.tree.assert_same_structure(oa, ob)
    for x, y in zip(keras.tree.flatten(oa), keras.tree.flatten(ob)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5)


def snapshot(model):
    """Everything about `model` that no kerasurgery call may change."""
    return {
        "weights": [np.array(w) for w in model.get_weights()],
        "config": json.dumps(keras.saving.serialize_keras_object(model), sort_keys=True, default=str),
        "names": [layer.name for layer in model.layers],
        "activations": [str(getattr(layer, "activation", None)) for layer in model._flatten_layers()],
        "trainable": [layer.trainable for layer in model._flatten_layers()],
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["names"] == before["names"]
    assert after["config"] == before["config"]
    assert after["activations"] == before["activations"]
    assert after["trainable"] == before["trainable"]
    assert len(after["weights"]) == len(before["weights"])
    for w0, w1 in zip(before["weights"], after["weights"]):
        np.testing.assert_array_equal(w0, w1)


def assert_roundtrip(model, data, tmp_path, name="model"):
    """`model` saves to .keras and loads back with equal outputs."""
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_same_outputs(model, loaded, data, atol=1e-6)
    return loaded


def interpret(graph, data):
    """Call every operation of `graph` eagerly on its parents' values.

    An interpreter over a `to_graph` graph that never builds a Keras model: an
    independent path to compare `expose`/`collect` results with. `data` is
    the model's input structure (a dict is read by the model's input keys,
    or by input node keys when the model takes a list). Returns
    ``(values, calls)``: ``{node key: [tensor per output]}`` and
    ``{node key: (args, kwargs)}`` of each call.
    """
    from kerasurgery.ir.schema import fill, flatten_structure, topological_order

    structure = graph.graph["inputs"]
    if isinstance(structure, dict):
        pairs = [(node, data[key]) for key, node in structure.items()]
    elif isinstance(data, dict):
        pairs = [(node, data[node]) for node in flatten_structure(structure)]
    else:
        pairs = list(zip(flatten_structure(structure), keras.tree.flatten(data)))
    values = {node: [keras.ops.convert_to_tensor(value)] for node, value in pairs}
    calls = {}
    for key in topological_order(graph):
        node = graph.nodes[key]
        if node["kind"] == "input":
            continue
        slots = {}
        for parent, _, edge in graph.in_edges(key, data=True):
            for index, slot in edge["feeds"]:
                slots[slot] = values[parent][index]
        args, kwargs = fill(node["args"], slots), fill(node["kwargs"], slots)
        calls[key] = (args, kwargs)
        values[key] = keras.tree.flatten(node["op"](*args, **kwargs))
    return values, calls


def eager_values(model, data):
    """Reference values of every node of `model` (see `interpret`).

    Returns ``{node key: [np.ndarray per output]}``.
    """
    import kerasurgery as ks

    values, _ = interpret(ks.to_graph(model), data)
    return {k: [to_numpy(v) for v in vs] for k, vs in values.items()}
