"""Benchmark: rebuild cost of to_model(to_graph(m)) against keras clone_model.

Prints, measured side by side in one process:
- ResNet50: (to_model(to_graph(m)) time) / (keras.models.clone_model(m) time), target <= 1.5
- a 1000-layer chain's rebuild time / a 250-layer chain's, target about 4 (linear)

Run: python benchmarks/bench_graph.py
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402

# Keras builds functional models recursively; a 1000-layer chain needs more
# than the default recursion limit (for keras.Model itself, not kerasurgery).
sys.setrecursionlimit(20000)

import kerasurgery as ks  # noqa: E402
from _timing import median_times  # noqa: E402


def chain(n: int) -> keras.Model:
    x = keras.Input((8,), name="x")
    h = x
    for i in range(n):
        h = keras.layers.Dense(8, activation="relu", name=f"d{i}")(h)
    return keras.Model(x, h)


def main() -> None:
    resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    t = median_times(
        {
            "to_model(to_graph)": lambda: ks.to_model(ks.to_graph(resnet)),
            "clone_model": lambda: keras.models.clone_model(resnet),
        }
    )
    print(f"ResNet50 ({len(resnet.layers)} layers): to_model(to_graph) {t['to_model(to_graph)']:.3f}s, "
          f"clone_model {t['clone_model']:.3f}s, ratio {t['to_model(to_graph)'] / t['clone_model']:.2f} (target <= 1.5)")
    g = ks.to_graph(resnet)
    t = median_times({"to_graph": lambda: ks.to_graph(resnet), "to_model": lambda: ks.to_model(g)})
    print(f"ResNet50 split: to_graph {t['to_graph']:.3f}s, to_model {t['to_model']:.3f}s")

    m_small, m_large = chain(250), chain(1000)
    small, large = ks.to_graph(m_small), ks.to_graph(m_large)
    t = median_times(
        {
            "250": lambda: ks.to_model(small),
            "1000": lambda: ks.to_model(large),
            "keras 250": lambda: keras.Model(m_small.inputs, m_small.outputs),
            "keras 1000": lambda: keras.Model(m_large.inputs, m_large.outputs),
        },
        repeats=5,
    )
    print(f"chain rebuild: 250 layers {t['250']:.3f}s, 1000 layers {t['1000']:.3f}s, "
          f"ratio {t['1000'] / t['250']:.2f} (target about 4: linear)")
    print(f"  of which keras.Model(inputs, outputs) alone: 250 {t['keras 250']:.3f}s, "
          f"1000 {t['keras 1000']:.3f}s, ratio {t['keras 1000'] / t['keras 250']:.2f}")


if __name__ == "__main__":
    main()
