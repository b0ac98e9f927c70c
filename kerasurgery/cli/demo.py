"""``kerasurgery demo``: every job of the README on small models, in well under a minute.

It draws its own data (squares, circles and crosses on a noisy 32x32 canvas),
trains a small CNN for a few epochs, then shows each job of the README's
table: the points, logits through `expose`, a split model, a probe pair
trained with an `ActivationRecorder`, collected activations and features
streamed to disk, calibration ranges, an inner layer of a nested
(transfer-learning) model, the attention weights of a tiny attention model,
surgery on the graph with networkx, and Grad-CAM heatmaps. It writes feature
maps, histograms, attention heatmaps, Grad-CAM heatmaps over their inputs,
the graph drawing and a few input samples as PNG files to
an output folder, with the trained model (``shapes_cnn.keras``), some inputs
(``shapes.npy``) and the streamed features (``features.h5``) to try the other
commands on. Nothing is downloaded.

Example:
    >>> from kerasurgery.cli import demo
    >>> written = demo.run("kerasurgery-demo")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

CLASSES = ("square", "circle", "cross")
SIZE = 32


def make_shapes(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` noisy 32x32x1 images of squares, circles and crosses, and labels.

    Each image has one outline shape of random size and position; labels are
    indices into `CLASSES`.

    Example:
        >>> x, y = make_shapes(6)
        >>> x.shape, x.dtype, sorted(set(y.tolist())) <= [0, 1, 2]
        ((6, 32, 32, 1), dtype('float32'), True)
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype("float32")
    images = np.empty((count, SIZE, SIZE, 1), "float32")
    labels = rng.integers(0, len(CLASSES), size=count)
    for i, label in enumerate(labels):
        r = rng.uniform(5, 10)
        cy, cx = rng.uniform(r + 2, SIZE - r - 2, size=2)
        dy, dx = yy - cy, xx - cx
        if label == 0:
            d = np.maximum(np.abs(dy), np.abs(dx))
            shape = np.abs(d - r) < 1.2
        elif label == 1:
            shape = np.abs(np.hypot(dy, dx) - r) < 1.2
        else:
            inside = np.maximum(np.abs(dy), np.abs(dx)) <= r
            shape = inside & ((np.abs(dy - dx) < 1.3) | (np.abs(dy + dx) < 1.3))
        images[i, ..., 0] = shape + rng.normal(0, 0.15, (SIZE, SIZE))
    return images, labels.astype("int32")


def build_model() -> Any:
    """The demo CNN: three named conv blocks, a dense layer and a softmax head."""
    import keras
    from keras import layers

    x = keras.Input((SIZE, SIZE, 1), name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_1")(x)
    h = layers.MaxPooling2D(name="pool_1")(h)
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_2")(h)
    h = layers.MaxPooling2D(name="pool_2")(h)
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_3")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    h = layers.Dense(16, activation="relu", name="dense")(h)
    h = layers.Dropout(0.2, name="dropout")(h)
    y = layers.Dense(len(CLASSES), activation="softmax", name="predictions")(h)
    return keras.Model(x, y, name="shapes_cnn")


WORDS = ("the", "a", "cat", "dog", "sat", "ran", "on", "mat", "big", "small")


def make_sentences(count: int, length: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` random sentences of `WORDS` (token ids) and whether "cat" occurs in each.

    Example:
        >>> x, y = make_sentences(4)
        >>> x.shape, bool(((x == WORDS.index("cat")).any(axis=1) == y).all())
        ((4, 8), True)
    """
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, len(WORDS), (count, length))
    tokens[rng.random(count) < 0.5, rng.integers(0, length)] = WORDS.index("cat")
    return tokens.astype("int32"), (tokens == WORDS.index("cat")).any(axis=1).astype("int32")


def build_attention_model() -> Any:
    """A tiny attention model: embedding, one MultiHeadAttention (2 heads), pooling, softmax."""
    import keras
    from keras import layers

    tokens = keras.Input((8,), dtype="int32", name="tokens")
    h = layers.Embedding(len(WORDS), 16, name="embed")(tokens)
    a = layers.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(h, h)
    h = layers.LayerNormalization(name="norm")(layers.Add(name="residual")([h, a]))
    h = layers.GlobalMaxPooling1D(name="pool")(h)
    return keras.Model(tokens, layers.Dense(2, activation="softmax", name="predictions")(h), name="tiny_attention")


def _numpy(value: Any) -> Any:
    import keras

    return keras.tree.map_structure(keras.ops.convert_to_numpy, value)


def _fmt(values: Any) -> str:
    return "[" + " ".join(f"{v:6.2f}" for v in np.asarray(values).ravel()) + "]"


#: Every file `run` writes into its folder (what ``kerasurgery demo --overwrite`` replaces).
FILES = ("inputs.png", "feature_maps_conv_1.png", "feature_maps_conv_2.png", "histograms.png", "graph.png",
         "attention.png", "grad_cam.png", "quantization.png", "shapes_cnn.keras", "shapes.npy", "features.h5")


class _Writer:
    """Saves figures into the output folder and remembers what it wrote."""

    def __init__(self, out: str):
        self.out = out
        self.written: dict[str, str] = {}

    def save(self, name: str, fig: Any) -> str:
        import matplotlib.pyplot as plt

        path = os.path.join(self.out, f"{name}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        self.written[name] = path
        return path


def _samples_figure(x: np.ndarray, y: np.ndarray, probs: np.ndarray) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 6, figsize=(9, 1.9), layout="constrained")
    for i, ax in enumerate(axes):
        ax.imshow(x[i, ..., 0], cmap="gray")
        guess = CLASSES[int(probs[i].argmax())]
        ax.set_title(f"#{i} {CLASSES[y[i]]}\npredicted {guess}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle("demo inputs (drawn by the demo itself)")
    return fig


def run(out: str = "kerasurgery-demo", *, epochs: int = 4, seed: int = 0,
        echo: Callable[[str], None] = print) -> dict[str, str]:
    """Run the demo, printing each step, and write its pictures to `out`.

    Args:
        out: the output folder (created if needed).
        epochs: training epochs of the demo CNN.
        seed: seed of the drawn data and of Keras.
        echo: where each line of the tour goes.

    Returns:
        ``{name: path}`` of every file written (pictures, ``model``, ``data``,
        ``features``).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from kerasurgery.errors import KerasurgeryError

        raise KerasurgeryError(
            "Expected matplotlib for the demo's pictures. Received: it is not installed. "
            'Install it with `pip install "kerasurgery[plot]"` (or `pip install matplotlib`).'
        ) from None
    import keras

    import kerasurgery as ks

    start = time.perf_counter()
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    files = _Writer(out)
    keras.utils.set_random_seed(seed)

    x, y = make_shapes(1200, seed)
    x_train, y_train, x_test, y_test = x[:1000], y[:1000], x[1000:], y[1000:]
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    echo(f"1. A small CNN '{model.name}' ({model.count_params():,} parameters), trained {epochs} epochs on "
         f"{len(x_train)} drawn shapes ({', '.join(CLASSES)}): test accuracy {accuracy:.2f}.")
    names = ks.points(model)
    echo(f"   ks.points(model) lists {len(names)} addresses: {', '.join(names)}")

    _logits_step(ks, model, x_test, y_test, echo)
    split = ks.split_activations(model)
    diff = ks.compare(model, split, x_test)
    echo("\n3. Split: split = ks.split_activations(model) keeps each layer's weights and adds "
         "an Activation layer after it:")
    echo(f"   {' -> '.join(layer.name for layer in split.layers)}")
    echo(f"   largest output difference from the original: {diff['predictions']['max_abs']:.2g}")
    _probe_pair_step(ks, model, x_train, y_train, x_test, echo)
    acts = _collect_step(ks, files, model, x_test, echo)
    stats = ks.calibrate(model, x_test, "*:pre", batch_size=64)
    echo("\n6. Calibrate: stats = ks.calibrate(model, x, '*:pre') -> ranges for quantization")
    for address, s in stats.items():
        echo(f"   {address:16s} min {float(s.min):8.3f}  max {float(s.max):8.3f}  "
             f"mean {float(s.mean):7.3f}  std {float(s.std):6.3f}")
    _nested_step(ks, model, x_test, echo)
    scores, sentence, attention, sentences, has_cat = _attention_step(ks, echo)
    _patching_step(ks, attention, sentences[:500], has_cat[:500], echo)
    _surgery_step(ks, model, x_test, echo)
    _pruning_step(ks, model, x_test, y_test, echo)
    maps = _grad_cam_step(ks, model, x_test, echo)
    errors = _quantization_step(ks, model, stats, x_test, y_test, echo)

    _pictures(ks, files, model, x_test, y_test, acts, stats)
    files.save("attention", ks.plot.attention(scores, tokens=sentence, title="mha:scores of: " + " ".join(sentence)))
    predicted = _numpy(model(x_test[:6], training=False)).argmax(axis=-1)
    titles = [f"#{i} predicted {CLASSES[c]}" for i, c in enumerate(predicted)]
    files.save("grad_cam", ks.plot.heatmaps(x_test[:6], maps, titles=titles, columns=6, label="Grad-CAM at conv_3",
                                            title="where conv_3 sees evidence for the predicted class"))
    files.save("quantization", ks.plot.sqnr(errors, threshold=25, title="8-bit fake quantization: SQNR per point"))
    files.written["model"] = os.path.join(out, "shapes_cnn.keras")
    model.save(files.written["model"])
    files.written["data"] = os.path.join(out, "shapes.npy")
    np.save(files.written["data"], x_test[:64])
    echo(f"\n14. Files written to {out}:")
    for name, path in files.written.items():
        echo(f"   {os.path.basename(path):24s} {_CAPTIONS[name]}")
    model_path, data_path = (os.path.relpath(files.written[k]) for k in ("model", "data"))
    echo(f"\nDone in {time.perf_counter() - start:.0f} s. Try the command line on the demo's model:")
    echo(f"   kerasurgery inspect {model_path}")
    echo(f"   kerasurgery calibrate {model_path} --data {data_path} --points '*:pre' -o ranges.json")
    echo(f"   kerasurgery quantize-check {model_path} --data {data_path} --method mse")
    return files.written


_CAPTIONS = {
    "features": "conv_3 and dense for 200 test images, streamed by collect(path=...)",
    "inputs": "six demo inputs with the model's predictions",
    "feature_maps_conv_1": "conv_1 (8 channels) for input #0: one image per channel",
    "feature_maps_conv_2": "conv_2 (16 channels) for input #0",
    "histograms": "histograms of every pre-activation (from calibrate)",
    "graph": "the model's graph; exposed points in red",
    "attention": "the attention weights of both heads, query tokens by key tokens",
    "grad_cam": "Grad-CAM heatmaps at conv_3 over six inputs, for the predicted classes",
    "quantization": "SQNR of every pre-activation after 8-bit fake quantization, in depth order",
    "model": "the trained model, for `kerasurgery inspect` and friends",
    "data": "64 test images (N, 32, 32, 1), for --data",
}


def _logits_step(ks: Any, model: Any, x_test: Any, y_test: Any, echo: Any) -> None:
    import keras

    probe = ks.expose(model, ["predictions:pre"], keep_outputs=True)
    found = _numpy(probe(x_test[:3], training=False))
    echo("\n2. Logits: probe = ks.expose(model, ['predictions:pre'], keep_outputs=True)")
    for i in range(3):
        logits, probs = found["predictions:pre"][i], found["predictions"][i]
        echo(f"   #{i} ({CLASSES[y_test[i]]:6s}) logits {_fmt(logits)}  softmax {_fmt(probs)}")
    same = np.allclose(_numpy(keras.ops.softmax(found["predictions:pre"])), found["predictions"], atol=1e-5)
    echo(f"   softmax(logits) equals the model's output: {same}")


def _probe_pair_step(ks: Any, model: Any, x_train: Any, y_train: Any, x_test: Any, echo: Any) -> None:
    import keras

    before = [w.copy() for w in model.get_weights()]
    training, checking = ks.probe_pair(model, ["conv_2:pre", "dense"], copy=True)
    training.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    recorder = ks.ActivationRecorder(["conv_2:pre", "dense"], x_test[:32])
    start = _numpy(checking(x_test[:32], training=False))["dense"].mean()
    training.fit(x_train[:320], y_train[:320], epochs=2, batch_size=32, verbose=0, callbacks=[recorder])
    end = _numpy(checking(x_test[:32], training=False))["dense"].mean()
    echo("\n4. Probe pair: training, checking = ks.probe_pair(model, ['conv_2:pre', 'dense'], copy=True)")
    echo(f"   2 epochs of training.fit(..., callbacks=[ks.ActivationRecorder(...)]) move the checking "
         f"model too (shared weights): mean of 'dense' {start:.3f} -> {end:.3f}")
    for address, records in recorder.history.items():
        shapes = ", ".join(str(tuple(np.shape(r))) for r in records)
        echo(f"   recorder.history[{address!r}]: {len(records)} records of shapes {shapes}")
    unchanged = all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    echo(f"   the original model is untouched (copy=True): {unchanged}")


def _collect_step(ks: Any, files: _Writer, model: Any, x_test: Any, echo: Any) -> dict:
    acts = ks.collect(model, x_test[:64], ["conv_1", "conv_2", "conv_3", "dense"], batch_size=32)
    echo("\n5. Collect: acts = ks.collect(model, x[:64], ['conv_1', 'conv_2', 'conv_3', 'dense'])")
    for address, value in acts.items():
        echo(f"   {address:8s} {str(tuple(value.shape)):17s} mean {float(np.mean(value)):.3f}")
    path = files.written["features"] = os.path.join(files.out, "features.h5")
    with ks.collect(model, x_test, ["conv_3", "dense"], path=path, overwrite=True, progress=False) as feats:
        echo("   feature extraction to disk, one batch in memory at a time: "
             "ks.collect(model, x, ['conv_3', 'dense'], path='features.h5')")
        echo(f"   features.h5 holds {', '.join(f'{a} {feats[a].shape}' for a in feats)}; "
             f"equal to the in-memory dense: {np.allclose(feats['dense'][:64], acts['dense'], atol=1e-6)}")
    return acts


def _nested_step(ks: Any, model: Any, x_test: Any, echo: Any) -> None:
    import keras

    base = keras.Model(model.input, model.get_layer("conv_3").output, name="shapes_base")
    inputs = keras.Input((SIZE, SIZE, 1), name="new_image")
    h = keras.layers.GlobalAveragePooling2D(name="new_gap")(base(inputs))
    transfer = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="new_head")(h), name="transfer")
    echo("\n7. Transfer learning: a new model calls the trained CNN's first layers as one nested model "
         "'shapes_base'")
    try:
        keras.Model(transfer.input, base.get_layer("conv_2").output)
        echo("   keras.Model(transfer.input, <inner tensor>) works here")
    except ValueError as e:
        echo(f"   keras.Model(transfer.input, <inner tensor of the base>) fails: {str(e).splitlines()[0][:60]} ...")
    inner = _numpy(ks.expose(transfer, ["shapes_base/conv_2"])(x_test[:8], training=False))["shapes_base/conv_2"]
    reference = _numpy(keras.Model(base.input, base.get_layer("conv_2").output)(x_test[:8], training=False))
    echo(f"   ks.expose(transfer, ['shapes_base/conv_2']) works: shape {inner.shape}, equal to the base's own "
         f"sub-model: {np.allclose(inner, reference, atol=1e-6)}")


def _attention_step(ks: Any, echo: Any) -> tuple[np.ndarray, list[str], Any, np.ndarray, np.ndarray]:
    import keras

    x, y = make_sentences(1000)
    model = build_attention_model()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    scores = _numpy(ks.expose(model, ["mha:scores"])(x[:1], training=False))["mha:scores"]
    sentence = [WORDS[t] for t in x[0]]
    echo(f"\n8. Attention: a tiny attention model (is 'cat' in the sentence? accuracy "
         f"{model.evaluate(x, y, verbose=0)[1]:.2f}), built without return_attention_scores")
    echo(f"   ks.expose(model, ['mha:scores']) -> shape {scores.shape} (batch, heads, query, key); "
         f"rows sum to 1: {np.allclose(scores.sum(axis=-1), 1, atol=1e-5)}")
    echo(f"   sentence 0: {' '.join(sentence)}")
    for head in range(scores.shape[1]):
        most = int(scores[0, head].mean(axis=0).argmax())
        echo(f"   head {head} attends most to position {most} ({sentence[most]!r})")
    return scores[0], sentence, model, x, y


def _patching_step(ks: Any, model: Any, x: np.ndarray, y: np.ndarray, echo: Any) -> None:
    heads = model.get_layer("mha").num_heads
    echo("\n9. Interventions: ks.patch(model, {'mha:scores': ('ablate', mask)}) zeroes one head's "
         "attention weights (the model is unchanged)")
    before = _numpy(model(x, training=False))
    for head in [*range(heads), None]:  # None: every head
        mask = np.arange(heads)[:, None, None] == head if head is not None else np.ones((heads, 1, 1), bool)
        ablated = _numpy(ks.patch(model, {"mha:scores": ("ablate", mask)})(x, training=False))
        accuracy = float((ablated.argmax(axis=-1) == y).mean())
        echo(f"   {'every head' if head is None else f'head {head}'} ablated: accuracy {accuracy:.2f}, "
             f"mean |change of the probabilities| {np.abs(ablated - before).mean():.3f}")
    after = _numpy(model(x, training=False))
    echo(f"   the original model gives the same outputs afterwards: {np.array_equal(before, after)}")


def _surgery_step(ks: Any, model: Any, x_test: Any, echo: Any) -> None:
    g = ks.to_graph(model)
    (parent,), (child,) = g.predecessors("dropout"), g.successors("dropout")
    feeds = g.edges["dropout", child]["feeds"]
    g.remove_node("dropout")
    g.add_edge(parent, child, feeds=feeds)
    edited = ks.to_model(g, name="no_dropout")
    diff = ks.compare(model, edited, x_test)["predictions"]["max_abs"]
    echo("\n10. Surgery: g = ks.to_graph(model); remove the 'dropout' node and wire 'dense' to 'predictions' "
         "with networkx; ks.to_model(g)")
    echo(f"   layers: {' -> '.join(layer.name for layer in edited.layers)}")
    echo(f"   largest output difference from the original (Dropout is inactive in inference): {diff:.2g}")


def _pruning_step(ks: Any, model: Any, x_test: Any, y_test: Any, echo: Any) -> None:
    order = ks.rank_channels(model, "conv_2", by="l1")
    pruned = ks.delete_channels(model, "conv_2", order[:4])
    zeroed = _zero_filters(model, "conv_2", order[:4])
    gap = np.abs(_numpy(pruned(x_test, training=False)) - _numpy(zeroed(x_test, training=False))).max()
    accuracy = float((_numpy(pruned(x_test, training=False)).argmax(axis=-1) == y_test).mean())
    echo("\n11. Pruning: order = ks.rank_channels(model, 'conv_2'); "
         "pruned = ks.delete_channels(model, 'conv_2', order[:4])")
    echo(f"   weakest filters by L1 norm: {order[:4].tolist()}; {model.count_params():,} -> "
         f"{pruned.count_params():,} parameters (conv_3 lost the matching input rows); test accuracy {accuracy:.2f}")
    echo(f"   largest difference from the original with those filters zeroed by hand: {gap:.2g}")


def _zero_filters(model: Any, name: str, channels: Any) -> Any:
    """A clone of `model` whose layer `name` outputs zeros at `channels` (kernel columns and bias)."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    kernel, bias = clone.get_layer(name).get_weights()
    kernel[..., channels], bias[channels] = 0.0, 0.0
    clone.get_layer(name).set_weights([kernel, bias])
    return clone


def _grad_cam_step(ks: Any, model: Any, x_test: Any, echo: Any) -> np.ndarray:
    maps = ks.grad_cam(model, x_test[:6], "conv_3", size="input")
    shape = x_test[:6, ..., 0] > 0.5  # the drawn outline (noise has std 0.15)
    echo("\n12. Grad-CAM: maps = ks.grad_cam(model, x[:6], 'conv_3', size='input') (the predicted class's "
         "score before the softmax)")
    echo(f"   maps {maps.shape} in [0, 1]; mean heat on the shapes' pixels {maps[shape].mean():.2f}, "
         f"elsewhere {maps[~shape].mean():.2f}")
    grads = ks.gradients(model, x_test[:6], ["conv_3", "dense:pre"], target=_log_confidence)
    echo("   ks.gradients(model, x, ['conv_3', 'dense:pre'], target=<a function of the outputs>) -> "
         + ", ".join(f"{a} {g.shape}" for a, g in grads.items()))
    return maps


def _quantization_step(ks: Any, model: Any, stats: Any, x_test: Any, y_test: Any, echo: Any) -> Any:
    ranges = stats.ranges("mse")  # the clipping range minimising the expected 8-bit error, from the histograms
    quantized = ks.fake_quantize(model, ranges)
    errors = ks.quantization_error(model, quantized, x_test)
    accuracy = float((_numpy(quantized(x_test, training=False)).argmax(axis=-1) == y_test).mean())
    echo("\n13. Quantization: q = ks.fake_quantize(model, stats.ranges('mse')) (8-bit quantize-dequantize at "
         "every :pre); ks.quantization_error(model, q, x)")
    for line in errors.table().splitlines():
        echo(f"   {line}")
    worst = errors.worst
    echo(f"   lowest SQNR: {worst.address} ({worst.sqnr_db:.1f} dB); fake-quantized test accuracy {accuracy:.2f}")
    return errors


def _log_confidence(probabilities: Any) -> Any:
    """The log-probability of the most likely class, per sample (a target written with keras.ops)."""
    import keras

    return keras.ops.log(keras.ops.max(probabilities, axis=-1))


def _pictures(ks: Any, files: _Writer, model: Any, x: Any, y: Any, acts: dict, stats: dict) -> None:
    probs = _numpy(model(x[:6], training=False))
    files.save("inputs", _samples_figure(x, y, probs))
    for name in ("conv_1", "conv_2"):
        fig = ks.plot.feature_maps(acts[name][0], title=f"{name} for input #0 ({CLASSES[y[0]]})", scale="per_map")
        files.save(f"feature_maps_{name}", fig)
    files.save("histograms", ks.plot.histograms(stats, log=True, title="pre-activation ranges (calibrate)"))
    files.save("graph", ks.plot.graph(model, highlight=["predictions:pre", "conv_2:pre", "dense"],
                                      title=f"{model.name}: red borders mark the points the demo exposed"))
