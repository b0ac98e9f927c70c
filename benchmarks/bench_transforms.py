"""Benchmark: split_activations and expose(every :pre) against keras clone_model.

Prints, measured side by side in one process on ResNet50 (weights=None):
- split_activations time / clone_model time, target <= 1.5
- expose(every ':pre') time / clone_model time, target <= 1.5

Run: python benchmarks/bench_transforms.py
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402

import kerasurgery as ks  # noqa: E402
from _timing import median_times  # noqa: E402


def main() -> None:
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    pre = ks.points(model, "*:pre")
    t = median_times(
        {
            "clone_model": lambda: keras.models.clone_model(model),
            "split_activations": lambda: ks.split_activations(model),
            "expose": lambda: ks.expose(model, pre),
        }
    )
    base = t["clone_model"]
    print(f"ResNet50 ({len(model.layers)} layers, {len(pre)} ':pre' points): clone_model {base:.3f}s")
    print(f"split_activations {t['split_activations']:.3f}s, ratio {t['split_activations'] / base:.2f} (target <= 1.5)")
    print(f"expose(every :pre) {t['expose']:.3f}s, ratio {t['expose'] / base:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
