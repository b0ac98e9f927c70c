"""Benchmark: opening keras_hub backbones, and collecting every block's attention scores.

Prints, measured side by side in one process (small random configurations,
nothing downloaded):
- ``to_graph(backbone, open=True)`` + ``to_model`` against
  ``keras.models.clone_model`` of the same backbone (target: at most 2x),
  for BERT (2 and 4 blocks), GPT-2 and Gemma, and how the time splits between
  tracing and rebuilding;
- ``collect`` of every block's ``:scores`` over a dataset against
  ``model.predict`` of the backbone on the same data (report).

Run: python benchmarks/bench_opening.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import kerasurgery as ks  # noqa: E402
from _timing import median_times  # noqa: E402

VOCAB = 100


def backbones() -> dict:
    return {
        "bert-2": keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=32,
                                                intermediate_dim=64, max_sequence_length=64),
        "bert-4": keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=4, num_heads=4, hidden_dim=64,
                                                intermediate_dim=128, max_sequence_length=64),
        "gpt2-4": keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=4, num_heads=4, hidden_dim=64,
                                                intermediate_dim=128, max_sequence_length=64),
        "gemma-2": keras_hub.models.GemmaBackbone(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4,
                                                  num_key_value_heads=1, hidden_dim=64, intermediate_dim=128,
                                                  head_dim=16),
    }


def text(n: int, length: int, segments: bool) -> dict:
    rng = np.random.default_rng(0)
    data = {"token_ids": rng.integers(1, VOCAB, (n, length)).astype("int32"),
            "padding_mask": np.ones((n, length), "int32")}
    if segments:
        data["segment_ids"] = np.zeros((n, length), "int32")
    return data


def main(repeats: int) -> None:
    print("open + rebuild against clone_model (target <= 2x); blocks: open=the transformer blocks only;")
    print("everything: open=True (blocks and every custom layer inside them, recursively)")
    blocks = ["transformer_layer_*", "decoder_block_*"]
    for name, model in backbones().items():
        t = median_times({
            "clone_model": lambda: keras.models.clone_model(model),
            "blocks": lambda: ks.to_model(ks.to_graph(model, open=blocks)),
            "everything": lambda: ks.to_model(ks.to_graph(model, open=True)),
            "open only": lambda: ks.to_graph(model, open=True),
        }, repeats=repeats)
        base = t["clone_model"]
        print(f"  {name:8s} clone_model {base:.3f}s; blocks {t['blocks']:.3f}s (ratio {t['blocks'] / base:.2f}); "
              f"everything {t['everything']:.3f}s (ratio {t['everything'] / base:.2f}, of which tracing "
              f"{t['open only']:.3f}s)")
    print("collect of every block's :scores against predict (512 sequences of 64 tokens, batch 32):")
    for name, model in backbones().items():
        if name.startswith("gemma"):
            continue
        data = text(512, 64, segments=name.startswith("bert"))
        points = ks.points(model, "transformer_layer_*/*:scores")
        ks.collect(model, {k: v[:32] for k, v in data.items()}, points, progress=False)  # warm up
        model.predict(data, batch_size=32, verbose=0)
        t = median_times({
            "predict": lambda: model.predict(data, batch_size=32, verbose=0),
            "collect": lambda: ks.collect(model, data, points, batch_size=32, progress=False),
        }, repeats=repeats)
        print(f"  {name:8s} {len(points)} points: predict {t['predict']:.3f}s, collect {t['collect']:.3f}s: "
              f"ratio {t['collect'] / t['predict']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    main(parser.parse_args().repeats)
