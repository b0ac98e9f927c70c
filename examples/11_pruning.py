"""Prune a CNN by L1 norm, fine-tune it, and fold its BatchNormalizations before export.

A small CNN (conv -> BatchNormalization -> ReLU blocks) is trained for two
epochs on shapes it draws. Then:

1. `ks.rank_channels(model, "conv_2")` ranks conv_2's filters by the L1 norm
   of their kernels; the script checks the scores against numpy.
2. `ks.delete_channels` removes the weakest half. The script checks the
   pruned model against the original with those filters zeroed by hand
   (kernel, bias, and gamma = beta = 0 in the BatchNormalization after them,
   so the channels are exactly zero downstream): deletion is exact, not an
   approximation. It also checks the parameters saved, counted from shapes.
3. One epoch of fine-tuning recovers what pruning lost (accuracy printed).
4. `ks.fold_batchnorm` folds every BatchNormalization into the conv before
   it; the script checks that no BatchNormalization is left and that the
   outputs equal the fine-tuned model's, then saves the result to
   ``pruned_folded.keras`` and checks it loads back with equal outputs.

An AssertionError (from np.testing.assert_allclose and friends) stops the
script if a claim does not hold. The original model is not changed.

Run: python examples/11_pruning.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import numpy as np
from keras import layers

import kerasurgery as ks
from kerasurgery.cli.demo import make_shapes


def build() -> keras.Model:
    x = keras.Input((32, 32, 1), name="image")
    h = x
    for i, filters in enumerate((8, 16, 16), start=1):
        h = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv_{i}")(h)
        h = layers.BatchNormalization(momentum=0.9, name=f"bn_{i}")(h)  # short training
        h = layers.ReLU(name=f"relu_{i}")(h)
        h = layers.MaxPooling2D(name=f"pool_{i}")(h) if i < 3 else layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, layers.Dense(3, activation="softmax", name="predictions")(h), name="shapes_bn")


def run(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def accuracy(model, x, y):
    return float((run(model, x).argmax(axis=1) == y).mean())


def zeroed(model, channels):
    """The original with conv_2's filters `channels` zeroed, and bn_2's gamma and beta for them."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    kernel = copy.get_layer("conv_2").kernel
    kernel.assign(np.where(np.isin(np.arange(16), channels), 0.0, np.asarray(kernel)))
    for variable in (copy.get_layer("bn_2").gamma, copy.get_layer("bn_2").beta):
        variable.assign(np.where(np.isin(np.arange(16), channels), 0.0, np.asarray(variable)))
    return copy


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    x, y = make_shapes(900)
    x_test, y_test = make_shapes(300, seed=1)
    model = build()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    before = [w.copy() for w in model.get_weights()]
    print(f"trained: test accuracy {accuracy(model, x_test, y_test):.3f}, {model.count_params():,} parameters")

    # 1. Rank conv_2's filters by the L1 norm of their kernels.
    order = ks.rank_channels(model, "conv_2", by="l1")
    l1 = np.abs(np.asarray(model.get_layer("conv_2").kernel)).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(ks.channel_scores(model, "conv_2"), l1, rtol=1e-6)
    np.testing.assert_array_equal(order, np.argsort(l1, kind="stable"))
    weakest = sorted(order[:8].tolist())
    print(f"1. conv_2's filters by L1 norm, weakest first: {order.tolist()}")

    # 2. Delete the weakest half: exactly the original with those filters zeroed.
    pruned = ks.delete_channels(model, "conv_2", weakest)
    reference = run(zeroed(model, weakest), x_test)
    difference = np.abs(run(pruned, x_test) - reference).max()
    np.testing.assert_allclose(run(pruned, x_test), reference, atol=1e-6)
    saved = 8 * (3 * 3 * 8) + 8 * 4 + 8 * (3 * 3 * 16)  # conv_2 filters, bn_2 entries, conv_3 kernel rows
    np.testing.assert_allclose(model.count_params() - pruned.count_params(), saved)
    print(f"2. deleted conv_2 filters {weakest}: {model.count_params():,} -> {pruned.count_params():,} parameters; "
          f"max |pruned - zeroed original| = {difference:.1e}; test accuracy {accuracy(pruned, x_test, y_test):.3f}")

    # 3. Fine-tune the pruned model.
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=1, batch_size=32, verbose=0)
    print(f"3. fine-tuned one epoch: test accuracy {accuracy(pruned, x_test, y_test):.3f}")

    # 4. Fold the BatchNormalizations for export.
    plan = ks.fold_plan(pruned)
    folded = ks.fold_batchnorm(pruned)
    np.testing.assert_allclose(run(folded, x_test), run(pruned, x_test), atol=1e-5)
    left = [layer.name for layer in folded.layers if isinstance(layer, layers.BatchNormalization)]
    np.testing.assert_equal(left, [])
    print(f"4. folded {plan.folded} -> layers {[layer.name for layer in folded.layers]}; "
          f"max |folded - pruned| = {np.abs(run(folded, x_test) - run(pruned, x_test)).max():.1e}")

    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    path = os.path.join(out, "pruned_folded.keras")
    folded.save(path)
    np.testing.assert_allclose(run(keras.saving.load_model(path), x_test), run(folded, x_test), atol=1e-6)
    print("the original model is unchanged; wrote", path, "and it loads back with equal outputs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
