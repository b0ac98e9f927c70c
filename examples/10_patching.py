"""Interventions with `ks.patch`: ablate an attention head, patch activations from a clean run into a corrupted one.

`ks.patch(model, {point: patch})` returns a model that computes what `model`
computes, except that the value at each point is replaced: ``"zero"``,
``"mean"``, an array, ``("add", vector)``, ``("ablate", mask)``, or
``"input"`` (the value becomes a new model input, so an activation cached
from one run can be fed into another). The original model is not changed and
the patched model shares its weights.

On a tiny attention model (random weights, nothing downloaded), the script
checks each claim with numbers (an AssertionError stops it if one does not
hold):

1. Ablating head 1 of ``mha:scores`` (its attention weights set to zero)
   gives the logits numpy computes from the layer's own query, key, value and
   output kernels with that head's weights zeroed.
2. Activation patching: the residual stream ``res`` of a clean run fed into
   a corrupted run restores the clean logits exactly; the attention output
   ``mha`` alone restores part of them, as numpy says.
3. The ablated model saves to ``.keras`` and loads back with equal outputs.

Run: python examples/10_patching.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import numpy as np
from keras import layers

import kerasurgery as ks

HEADS, KEY_DIM, LENGTH, VOCAB = 2, 4, 6, 20


def build_model():
    tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
    h = layers.Embedding(VOCAB, HEADS * KEY_DIM, name="embed")(tokens)
    a = layers.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM, name="mha")(h, h)
    h = layers.Add(name="res")([h, a])
    h = layers.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(tokens, layers.Dense(3, name="logits")(h), name="tiny_attention")


def run(model, x):
    """The model's outputs as numpy (a direct call: quicker than predict() for one small batch)."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))


def numpy_attention(mha, h, ablated_head=None):
    """MultiHeadAttention in numpy, from the layer's own kernels; one head's weights zeroed if asked."""
    weights = {name: [np.asarray(w) for w in getattr(mha, f"_{name}_dense").get_weights()]
               for name in ("query", "key", "value", "output")}
    q, k, v = (np.einsum("btd,dhk->bthk", h, weights[n][0]) + weights[n][1] for n in ("query", "key", "value"))
    logits = np.einsum("bshk,bthk->bhts", k, q / np.sqrt(KEY_DIM))
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
    if ablated_head is not None:
        scores[:, ablated_head] = 0.0
    context = np.einsum("bhts,bshk->bthk", scores, v)
    return np.einsum("bthk,hkd->btd", context, weights["output"][0]) + weights["output"][1]


def numpy_head(model, residual):
    """The logits from the residual stream: mean over tokens, then the Dense layer."""
    w, b = model.get_layer("logits").get_weights()
    return residual.mean(1) @ w + b


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    model = build_model()
    rng = np.random.default_rng(0)
    clean = rng.integers(0, VOCAB, (8, LENGTH)).astype("int32")
    corrupted = clean.copy()
    corrupted[:, :2] = rng.integers(0, VOCAB, (8, 2))  # the first two tokens changed
    logits = run(model, clean)
    embedded = run(ks.expose(model, ["embed"]), clean)["embed"]

    # 1. Ablate each head in turn; check head 1 against numpy.
    for head in range(HEADS):
        mask = np.arange(HEADS)[:, None, None] == head  # (heads, 1, 1): True for the ablated head
        ablated = ks.patch(model, {"mha:scores": ("ablate", mask)})
        change = np.abs(run(ablated, clean) - logits).mean()
        print(f"1. head {head} ablated: mean |change of the logits| = {change:.4f}")
    mha = model.get_layer("mha")
    expected = numpy_head(model, embedded + numpy_attention(mha, embedded, ablated_head=HEADS - 1))
    found = run(ablated, clean)
    print(f"   head {HEADS - 1} ablated: max |logits - numpy| = {np.abs(found - expected).max():.1e}")
    np.testing.assert_allclose(found, expected, atol=1e-5)
    np.testing.assert_allclose(logits, numpy_head(model, embedded + numpy_attention(mha, embedded)), atol=1e-5)

    # 2. Activation patching: values cached from the clean run, fed into the corrupted run.
    cache = run(ks.expose(model, ["res", "mha"]), clean)
    broken = run(model, corrupted)
    for point in ("res", "mha"):
        patched = ks.patch(model, {point: "input"})
        feed = {"tokens": corrupted, f"{point}_input": cache[point]}  # the new input is named <point>_input
        restored = run(patched, feed)
        fraction = 1 - np.abs(restored - logits).sum() / np.abs(broken - logits).sum()
        print(f"2. clean {point!r} patched into the corrupted run: {fraction:.0%} of the logit change undone")
        if point == "res":  # the residual stream carries everything the head reads
            np.testing.assert_allclose(restored, logits, atol=1e-6)
        else:  # the corrupted embeddings still flow through the residual connection
            embedded_corrupted = run(ks.expose(model, ["embed"]), corrupted)["embed"]
            np.testing.assert_allclose(restored, numpy_head(model, embedded_corrupted + cache["mha"]), atol=1e-5)

    # 3. The ablated model saves and loads; the original is untouched.
    path = os.path.join(out, "patched.keras")
    ablated.save(path)
    np.testing.assert_allclose(run(keras.saving.load_model(path), clean), found, atol=1e-6)
    np.testing.assert_allclose(run(model, clean), logits, atol=0)
    print("3. wrote", path, "and it loads back with equal outputs; the original model is unchanged")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
