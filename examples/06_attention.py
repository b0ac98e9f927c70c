"""Attention scores of a small attention model, drawn per head with token labels.

`expose(model, ["mha:scores"])` returns the attention weights of a
MultiHeadAttention call, shape (batch, heads, target, source), even though the
model was built without `return_attention_scores=True`.

The script checks its claims with numbers (an AssertionError stops it if one
does not hold): every row of the scores sums to 1, and the scores equal what
the same MultiHeadAttention layer returns when called by hand on the embedded
tokens with ``return_attention_scores=True``; the drawn heatmaps hold them.

Run: python examples/06_attention.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import matplotlib.pyplot as plt
import numpy as np

import kerasurgery as ks

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "big", "small"]


def make_data(n=1200, length=8, seed=0):
    """Random sentences; the label says whether "cat" occurs in them."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, len(WORDS), (n, length))
    tokens[rng.random(n) < 0.5, rng.integers(0, length)] = WORDS.index("cat")
    return tokens.astype("int32"), (tokens == WORDS.index("cat")).any(axis=1).astype("int32")


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    x, y = make_data()
    tokens = keras.Input((8,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(len(WORDS), 16, name="embed")(tokens)
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(h, h)
    h = keras.layers.LayerNormalization(name="norm")(keras.layers.Add(name="residual")([h, a]))
    h = keras.layers.GlobalMaxPooling1D(name="pool")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(h)
    model = keras.Model(tokens, outputs, name="tiny_attention")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    print("accuracy:", round(model.evaluate(x, y, verbose=0)[1], 3))

    probe = ks.expose(model, ["mha:scores"])
    scores = probe.predict(x[:4], verbose=0)["mha:scores"]
    rows = scores.sum(axis=-1)
    print("mha:scores", scores.shape,
          f"(batch, heads, target, source); rows sum to 1 within {np.abs(rows - 1).max():.1e}")
    np.testing.assert_allclose(rows, 1.0, atol=1e-5)
    # The reference: the same layer called by hand on the embedded tokens, asking for its scores.
    embedded = model.get_layer("embed")(x[:4])
    _, by_hand = model.get_layer("mha")(embedded, embedded, return_attention_scores=True)
    by_hand = keras.ops.convert_to_numpy(by_hand)
    print(f"max |mha:scores - the layer called with return_attention_scores=True| = "
          f"{np.abs(scores - by_hand).max():.1e}")
    np.testing.assert_allclose(scores, by_hand, atol=1e-6)
    sentence = [WORDS[t] for t in x[0]]
    print("sentence 0:", " ".join(sentence))
    for head in range(scores.shape[1]):
        most = scores[0, head].mean(axis=0).argmax()
        print(f"  head {head} attends most to position {most} ({sentence[most]!r})")

    fig = ks.plot.attention(scores[0], tokens=sentence, title="mha:scores, sentence 0")
    drawn = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    np.testing.assert_allclose(np.stack(drawn), scores[0])  # one heatmap per head, holding its scores
    path = os.path.join(out, "attention.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print("wrote", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
