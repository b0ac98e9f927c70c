"""Surgery with plain networkx: read the model as a graph, edit it, build it back.

`ks.to_graph(model)` gives a `networkx.DiGraph` with one node per layer call
(the node's ``op`` is the layer object itself) and edges that say which output
feeds which argument. Edit it with networkx (remove a node and rewire, swap a
node's ``op``, add a node), check it with `ks.check_graph`, and build a new
Keras model with `ks.to_model`. The new model calls the same layer objects, so
weights stay shared; the original model is not changed.

Three edits on a small trained CNN; the script checks each with numbers (an
AssertionError stops the script if one does not hold):

1. Drop the Dropout layer: in inference the outputs must not change at all.
2. Replace the softmax head by a linear copy with the same weights: the new
   output must equal ``expose(model, ["predictions:pre"])`` (the logits).
3. Insert ``Rescaling(2.0)`` after the ``dense`` layer: the output must equal
   ``softmax(2 * dense @ W + b)`` computed in numpy.

The last model saves to ``.keras`` and loads back with equal outputs.

Run: python examples/08_surgery.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras
import numpy as np

import kerasurgery as ks
from kerasurgery.cli.demo import build_model, make_shapes


def run(model, x):
    """The model's outputs as numpy (a direct call: quicker than predict() for one small batch)."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def without_dropout(model):
    g = ks.to_graph(model)
    (parent,), (child,) = g.predecessors("dropout"), g.successors("dropout")
    feeds = g.edges["dropout", child]["feeds"]
    g.remove_node("dropout")
    g.add_edge(parent, child, feeds=feeds)  # dense now feeds the head directly
    ks.check_graph(g)  # raises GraphError listing every problem; None when the graph is well formed
    return ks.to_model(g, name="no_dropout")


def linear_head(model):
    head = model.get_layer("predictions")
    logits = keras.layers.Dense(head.units, name="logits")  # no activation
    logits.build((None, head.kernel.shape[0]))
    logits.set_weights(head.get_weights())
    g = ks.to_graph(model)
    g.nodes["predictions"]["op"] = logits
    return ks.to_model(g, name="linear_head")


def rescaled_features(model, factor):
    g = ks.to_graph(model)
    g.add_node("rescale", op=keras.layers.Rescaling(factor, name="rescale"), kind="layer",
               args=(ks.Slot("0"),), kwargs={}, output_shapes=[(None, 16)])
    feeds = g.edges["dense", "dropout"]["feeds"]
    g.remove_edge("dense", "dropout")
    g.add_edge("dense", "rescale", feeds=[(0, "0")])
    g.add_edge("rescale", "dropout", feeds=feeds)
    ks.check_graph(g)
    return ks.to_model(g, name="rescaled")


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    x, y = make_shapes(600)
    model = build_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    before = [w.copy() for w in model.get_weights()]
    layers_before = [layer.name for layer in model.layers]
    probs = run(model, x[:64])

    g = ks.to_graph(model)
    print("nodes:", list(g.nodes))
    print("edge dense -> dropout:", g.edges["dense", "dropout"])

    # 1. Dropout removed: identical outputs in inference.
    edited = without_dropout(model)
    difference = ks.compare(model, edited, x[:64])["predictions"]["max_abs"]
    print(f"1. without dropout: layers {[layer.name for layer in edited.layers]}; "
          f"max output difference {difference:.1e}")
    np.testing.assert_equal([type(layer).__name__ for layer in edited.layers].count("Dropout"), 0)
    np.testing.assert_array_less(difference, 1e-6)

    # 2. A linear head with the same weights outputs the logits.
    edited = linear_head(model)
    logits = run(edited, x[:64])
    reference = run(ks.expose(model, ["predictions:pre"]), x[:64])["predictions:pre"]
    print(f"2. linear head: max |output - predictions:pre| = {np.abs(logits - reference).max():.1e}, "
          f"max |softmax(output) - original| = {np.abs(softmax(logits) - probs).max():.1e}")
    np.testing.assert_allclose(logits, reference, atol=1e-5)
    np.testing.assert_allclose(softmax(logits), probs, atol=1e-6)

    # 3. A new layer in the middle: the output follows numpy's computation from the dense features.
    edited = rescaled_features(model, 2.0)
    features = run(ks.expose(model, ["dense"]), x[:64])["dense"]
    w, b = model.get_layer("predictions").get_weights()
    expected = softmax(2.0 * features @ w + b)
    found = run(edited, x[:64])
    print(f"3. Rescaling(2.0) after dense: max |output - numpy softmax(2 h W + b)| = "
          f"{np.abs(found - expected).max():.1e}")
    np.testing.assert_allclose(found, expected, atol=1e-5)

    # The original is untouched; the edited model saves and loads.
    np.testing.assert_equal([layer.name for layer in model.layers], layers_before)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    path = os.path.join(out, "rescaled.keras")
    edited.save(path)
    again = run(keras.saving.load_model(path), x[:64])
    np.testing.assert_allclose(again, found, atol=1e-6)
    print("the original model is unchanged; wrote", path, "and it loads back with equal outputs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
