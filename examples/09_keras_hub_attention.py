"""Per-block attention of a keras_hub BERT, opened by tracing, drawn head by head.

Each ``transformer_layer_N`` of a keras_hub backbone is one opaque layer of the
functional graph; an address through it opens it on demand, so
``transformer_layer_*/self_attention_layer:scores`` gives the attention weights
of every block, shape (batch, heads, target, source). A small random BERT is
built here (nothing is downloaded).

The script checks its claims with numbers (an AssertionError stops it if one
does not hold): each block's scores equal what that very block returns when
called by hand with ``return_attention_scores=True``; padded keys get no
attention; the opened model (``open=True``) reproduces the backbone's outputs;
the drawing holds the scores of every head.

Run: python examples/09_keras_hub_attention.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import keras_hub
import matplotlib.pyplot as plt
import numpy as np

import kerasurgery as ks


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    bert = keras_hub.models.BertBackbone(vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=8,
                                         intermediate_dim=16, max_sequence_length=8)
    rng = np.random.default_rng(0)
    padding = np.ones((2, 7), "int32")
    padding[1, -3:] = 0  # the second sentence is padded
    data = {"token_ids": rng.integers(1, 30, (2, 7)).astype("int32") * padding, "padding_mask": padding,
            "segment_ids": np.zeros((2, 7), "int32")}

    print("closed:", len(ks.points(bert)), "points; opened:", len(ks.points(bert, open=True)), "points")
    points = ks.points(bert, "transformer_layer_*/*:scores")
    print("scores of every block:", points)

    # The block inputs (closed addresses) and every block's scores, in one pass.
    inputs = ["embeddings_layer_norm", "transformer_layer_0"]
    values = ks.expose(bert, points + inputs)(data)
    values = {k: keras.ops.convert_to_numpy(v) for k, v in values.items()}
    for block, x in zip((0, 1), inputs):  # the reference: each block called by hand
        _, by_hand = bert.get_layer(f"transformer_layer_{block}")(
            values[x], padding_mask=padding, return_attention_scores=True)
        got = values[f"transformer_layer_{block}/self_attention_layer:scores"]
        print(f"block {block}: scores {got.shape}, max |kerasurgery - the block itself| = "
              f"{np.abs(got - keras.ops.convert_to_numpy(by_hand)).max():.1e}")
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(by_hand), atol=1e-6)
        np.testing.assert_allclose(got[1, :, :, -3:], 0.0, atol=1e-7)  # no attention to padding

    opened = ks.to_model(ks.to_graph(bert, open=True))
    expected, again = bert(data), opened(data)
    difference = max(float(np.abs(keras.ops.convert_to_numpy(expected[k]) - keras.ops.convert_to_numpy(again[k])).max())
                     for k in expected)
    print(f"opened model vs backbone: max |difference| = {difference:.1e}")
    np.testing.assert_allclose(difference, 0.0, atol=1e-5)

    scores = values["transformer_layer_1/self_attention_layer:scores"][1]
    tokens = [f"t{i}" if padding[1, i] else "pad" for i in range(7)]
    fig = ks.plot.attention(scores, tokens=tokens, title="transformer_layer_1: attention of each head")
    drawn = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    np.testing.assert_allclose(np.stack(drawn), scores)
    path = os.path.join(out, "attention_heads.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print("wrote", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
