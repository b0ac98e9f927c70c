"""Attention scores of a small attention model, drawn per head with token labels.

`expose(model, ["mha:scores"])` returns the attention weights of a
MultiHeadAttention call, shape (batch, heads, target, source), even though the
model was built without `return_attention_scores=True`.

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
    print("mha:scores", scores.shape, "(batch, heads, target, source); rows sum to",
          np.round(scores[0, 0].sum(axis=-1)[:3], 4))
    sentence = [WORDS[t] for t in x[0]]
    print("sentence 0:", " ".join(sentence))
    for head in range(scores.shape[1]):
        most = scores[0, head].mean(axis=0).argmax()
        print(f"  head {head} attends most to position {most} ({sentence[most]!r})")

    fig = ks.plot.attention(scores[0], tokens=sentence, title="mha:scores, sentence 0")
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
