"""`fake_quantize`: the model with quantize-dequantize at points (and, optionally, quantized kernels)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from kerasurgery.address.selector import Selector, select
from kerasurgery.errors import TransformError
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.names import Names
from kerasurgery.layers import FakeQuant
from kerasurgery.passes.fake_quant import fake_quant_pass, weight_nodes
from kerasurgery.passes.patch_specs import patch_name
from kerasurgery.passes.rewiring import build, scores_to_open
from kerasurgery.quant.methods import check_bits
from kerasurgery.quant.ranges import Range


def _checked(ranges: Any, model: keras.Model) -> Mapping[str, Range]:
    if not isinstance(ranges, Mapping) or not all(isinstance(r, Range) for r in ranges.values()):
        raise TransformError(
            "Expected `ranges` from `Calibration.ranges(...)` (a kerasurgery.Ranges of Range objects). "
            f"Received: {type(ranges).__name__} {str(ranges)[:80]}. Calibrate first: "
            "`ranges = kerasurgery.calibrate(model, data, '*:pre').ranges('entropy')`."
        )
    source = getattr(ranges, "model", None)
    if source is not None and source != model.name:
        raise TransformError(
            f"Expected ranges calibrated on model '{model.name}'. Received: ranges of model '{source}'. Calibrate "
            f"'{model.name}' itself (`kerasurgery.calibrate(model, data, points).ranges(...)`); if it is the same "
            "model under another name, set `ranges.model = model.name`."
        )
    return ranges


def quantizer(r: Range, name: str) -> FakeQuant:
    """The `FakeQuant` layer of a `Range`."""
    return FakeQuant.holding(r.scale, r.zero_point, qmin=r.qmin, qmax=r.qmax, channel_axis=r.channel_axis,
                             point=r.address, name=name)


def fake_quantize(model: keras.Model, ranges: Mapping[str, Range], points: Selector | None = None, *,
                  bits: int = 8, weights: bool | Selector = False, weight_bits: int | None = None) -> keras.Model:
    """A model that quantizes and dequantizes the value at each point, as an integer engine would.

    At each point a `kerasurgery.layers.FakeQuant` computes ``(clip(round(x /
    scale) + zero_point, qmin, qmax) - zero_point) * scale`` with the point's
    `Range`, and every consumer of the value reads that instead (``:pre`` of
    an activation layer: that layer's input; ``:pre`` of a fused layer splits
    it, as `expose` does). With `weights`, the kernels of the chosen layers
    are quantized too, symmetric and per output channel
    (`kerasurgery.layers.QuantizedWeights`). Gradients pass straight through
    (zero outside a quantizer's range), so the model can be fine-tuned.

    The result shares every variable with `model` (the quantizers hold their
    scales and zero points as non-trainable weights), keeps its output names,
    and saves to `.keras`. Its outputs differ from `model`'s by the
    quantization error: `kerasurgery.quantization_error` measures it per point.

    Args:
        model: a Functional, Sequential or subclassed model (layers on the
            points' paths are opened on demand, as by `expose`).
        ranges: `Calibration.ranges(...)` of `model`.
        points: the points to quantize, among those of `ranges` (addresses,
            globs, a list or a predicate); None: every point of `ranges`.
        bits: code width of the activations, 2 to 16. Ranges made for
            another width keep their clipping range and get the scale and
            zero point of `bits`.
        weights: False; True: every layer with float kernels (Dense,
            EinsumDense, convolutions); or addresses/globs of layers.
        weight_bits: code width of the kernels (default: `bits`).

    Returns:
        A new functional `keras.Model`.

    Raises:
        AddressError: a point that is not in `ranges` (a point without
            statistics) or not in `model`.
        DataError: `bits` outside 2..16.
        TransformError: ranges of another model, ranges that do not fit
            their points (per-channel sizes), integer-valued points.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> data = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> ranges = ks.calibrate(model, data, "d:pre").ranges("minmax")
        >>> quantized = ks.fake_quantize(model, ranges)
        >>> [layer.name for layer in quantized.layers]
        ['x', 'd_pre', 'd_pre_quant', 'd_activation']
        >>> pre = ks.expose(model, ["d:pre"]).predict(data, verbose=0)["d:pre"]
        >>> bool(np.allclose(quantized.predict(data, verbose=0), np.maximum(ranges["d:pre"].fake_quantize(pre), 0),
        ...                  atol=1e-6))
        True
    """
    bits = check_bits(bits)
    wbits = bits if weight_bits is None else check_bits(weight_bits)
    ranges = _checked(ranges, model)
    if points is None:
        chosen = list(ranges)
    else:
        chosen = select(list(ranges), points, what="points", owner="the ranges (the points with statistics)")
    named: list[str] = []
    if isinstance(weights, str):
        named = [weights]
    elif weights not in (True, False, None) and not callable(weights):
        named = list(weights)  # type: ignore[arg-type]
    keys = [*chosen, *named]
    graph = graph_for(model, keys, open=scores_to_open(chosen))
    names = Names(graph)
    quantizers = {a: quantizer(ranges[a].with_bits(bits), names.make(patch_name(a, "quant"))) for a in chosen}
    nodes = [] if weights in (False, None) else weight_nodes(graph, weights)
    graph = fake_quant_pass(graph, quantizers, {k: wbits for k in nodes})
    return build(graph, model.name, f"fake-quantizing {len(chosen)} point(s)")
