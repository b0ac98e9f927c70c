"""Benchmark: fold_batchnorm and delete_channels against keras clone_model, and how they scale.

Prints, measured side by side in one process (medians of interleaved repeats):
- ResNet50 (weights=None, 64x64): fold_batchnorm time / keras.models.clone_model time, target <= 1.5
- ResNet50: delete_channels of 16 filters of an inner conv / clone_model, target <= 1.5
- ResNet50: delete_channels of a residual stage (the channel goes through 3 Adds) / clone_model
- chains, 1000 layers against 250, target about 4 (linear): fold_batchnorm of Dense ->
  BatchNormalization -> ReLU blocks; delete_channels of the first Dense of a Dense followed by
  BatchNormalization -> ReLU pairs (the channels reach every layer: every BatchNormalization is
  rebuilt); clone_model of the first chain, for comparison

Both transforms return independent copies, so like clone_model they create
every layer anew and also copy the weight values.

Run: python benchmarks/bench_surgery.py
"""

from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's kerasurgery

import keras  # noqa: E402

sys.setrecursionlimit(20000)  # keras.Model walks a 1000-layer chain recursively

import kerasurgery as ks  # noqa: E402

print(f"kerasurgery from {os.path.dirname(ks.__file__)}; load average {os.getloadavg()[0]:.1f}")
from _timing import median_times  # noqa: E402

warnings.simplefilter("ignore")  # fold_batchnorm's list of what it left


def chain(layers: int) -> keras.Model:
    """A first Dense, then Dense (linear) -> BatchNormalization -> ReLU blocks: `layers` layers."""
    x = keras.Input((16,), name="x")
    h = keras.layers.Dense(16, name="d0")(x)
    for i in range((layers - 1) // 3):
        h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
        h = keras.layers.ReLU(name=f"relu{i}")(h)
        h = keras.layers.Dense(16, name=f"d{i + 1}")(h)
    return keras.Model(x, h)


def reach(layers: int) -> keras.Model:
    """A Dense, then BatchNormalization -> ReLU pairs: its channels reach every layer (`layers` in all)."""
    x = keras.Input((16,), name="x")
    h = keras.layers.Dense(16, name="d0")(x)
    for i in range((layers - 1) // 2):
        h = keras.layers.ReLU(name=f"relu{i}")(keras.layers.BatchNormalization(name=f"bn{i}")(h))
    return keras.Model(x, h)


def main() -> None:
    resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    t = median_times(
        {
            "clone_model": lambda: keras.models.clone_model(resnet),
            "fold_batchnorm": lambda: ks.fold_batchnorm(resnet),
            "delete_channels": lambda: ks.delete_channels(resnet, "conv2_block1_1_conv", range(16)),
            "delete_channels stage": lambda: ks.delete_channels(resnet, "conv2_block1_3_conv", range(16)),
        },
        repeats=5,
    )
    base = t["clone_model"]
    print(f"ResNet50 ({len(resnet.layers)} layers): clone_model {base:.3f}s")
    for name in ("fold_batchnorm", "delete_channels", "delete_channels stage"):
        print(f"{name} {t[name]:.3f}s, ratio {t[name] / base:.2f} (target <= 1.5)")

    small, large = chain(250), chain(1000)
    small_reach, large_reach = reach(250), reach(1000)
    t = median_times(
        {
            "fold 250": lambda: ks.fold_batchnorm(small),
            "fold 1000": lambda: ks.fold_batchnorm(large),
            "delete 250": lambda: ks.delete_channels(small_reach, "d0", [1, 2]),
            "delete 1000": lambda: ks.delete_channels(large_reach, "d0", [1, 2]),
            "clone 250": lambda: keras.models.clone_model(small),
            "clone 1000": lambda: keras.models.clone_model(large),
        },
        repeats=5,
    )
    sizes = {"fold": (small, large), "delete": (small_reach, large_reach), "clone": (small, large)}
    for what, (a_model, b_model) in sizes.items():
        a, b = t[f"{what} 250"], t[f"{what} 1000"]
        print(f"chain {what}: {len(a_model.layers)} layers {a:.3f}s, {len(b_model.layers)} layers {b:.3f}s, "
              f"ratio {b / a:.2f} (target about 4: linear)")


if __name__ == "__main__":
    main()
