"""`quantization_error`: how far a fake-quantized model is from the float one, point by point.

Both models run in one compiled step per batch: a model that calls the float
model's probe (`kerasurgery.expose` of the points, plus its outputs) and the
quantized model's probe (its quantizers' outputs, plus its outputs) on the
same inputs. For every pair ``(x, q)`` (float value, quantized value) the
step reduces the batch in the graph to four numbers: ``sum x*x``,
``sum x*q``, ``sum (x-q)**2`` and ``max |x-q|``; the host adds them up in
float64. Nothing else leaves the graph and no activation is kept.

==============  ==============================================================
``sqnr_db``     ``10 log10(sum x**2 / sum (x-q)**2)``: signal to quantization
                noise, over every value of the point on the data (inf if
                equal; each 6 dB is about one bit)
``mse``         ``sum (x-q)**2 / count``
``cosine``      ``sum x*q / sqrt(sum x**2 * sum q**2)``: the values of the
                point over the whole data as one vector (1 if both are 0)
``max_abs``     ``max |x-q|``
==============  ==============================================================

The value of a quantized point is its quantizer's output: the error there
is what every quantizer up to it (and its own) did to the value. The
model's outputs are compared too (`PointError.output` is True), under
their output names.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasurgery.address.selector import Selector, select
from kerasurgery.errors import AddressError, TransformError
from kerasurgery.ir.from_keras import graph_for, to_graph
from kerasurgery.ir.resolve import Resolver
from kerasurgery.layers import FakeQuant
from kerasurgery.ir.to_keras import to_model
from kerasurgery.ir.schema import copy_graph
from kerasurgery.passes.expose import expose_pass
from kerasurgery.passes.point_values import output_names
from kerasurgery.runtime import backend
from kerasurgery.runtime.inputs import adapt
from kerasurgery.runtime.loop import run
from kerasurgery.runtime.plan import Plan

FIELDS = ("sqnr_db", "mse", "cosine", "max_abs")


@dataclasses.dataclass(frozen=True)
class PointError:
    """The error of one point (see the module's table); `output`: a model output, not a quantized point.

    Example:
        >>> import numpy as np
        >>> x, q = np.array([1.0, -2.0, 3.0]), np.array([1.0, -2.0, 2.5])
        >>> e = PointError.from_sums("d:pre", [x @ x, x @ q, (x - q) @ (x - q), 0.5], count=3)
        >>> round(e.sqnr_db, 2), e.mse == 0.25 / 3, e.max_abs
        (17.48, True, 0.5)
    """

    address: str
    sqnr_db: float
    mse: float
    cosine: float
    max_abs: float
    count: int
    output: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"sqnr_db": self.sqnr_db, "mse": self.mse, "cosine": self.cosine, "max_abs": self.max_abs,
                "count": self.count, "output": self.output}

    @classmethod
    def from_sums(cls, address: str, sums: np.ndarray, count: int, output: bool = False) -> PointError:
        """From ``(sum x*x, sum x*q, sum (x-q)**2, max |x-q|)`` over `count` values."""
        xx, xq, dd, top = (float(v) for v in sums)
        qq = max(dd - xx + 2.0 * xq, 0.0)  # (x-q)**2 = x**2 - 2xq + q**2
        if dd == 0.0:
            sqnr = math.inf
        elif xx == 0.0:
            sqnr = -math.inf
        else:
            sqnr = 10.0 * math.log10(xx / dd)
        if xx == 0.0 and qq == 0.0:
            cosine = 1.0
        elif xx == 0.0 or qq == 0.0:
            cosine = 0.0
        else:
            cosine = min(max(xq / math.sqrt(xx * qq), -1.0), 1.0)
        return cls(address, sqnr, dd / max(count, 1), cosine, top, int(count), bool(output))


class QuantizationErrors(dict):
    """``{address: PointError}`` in depth order (the quantizers' order in the quantized model), then the
    model's outputs; `table()` prints it, `to_dict()` is JSON-ready.

    Attributes:
        model: the float model's name; samples: how many input samples were compared.

    Example:
        >>> errors = QuantizationErrors({"d:pre": PointError("d:pre", 40.0, 1e-4, 0.9999, 0.01, 12)}, model="m")
        >>> errors.worst.address, errors.to_dict()["points"]["d:pre"]["sqnr_db"]
        ('d:pre', 40.0)
    """

    def __init__(self, items: Any = (), *, model: str | None = None, samples: int = 0):
        super().__init__(items)
        self.model = model
        self.samples = int(samples)

    @property
    def worst(self) -> PointError | None:
        """The quantized point (not an output) with the lowest SQNR."""
        inner = [e for e in self.values() if not e.output]
        return min(inner, key=lambda e: e.sqnr_db) if inner else None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "samples": self.samples, "points": {a: e.to_dict() for a, e in self.items()}}

    def table(self) -> str:
        """One line per point: address, SQNR (dB), MSE, cosine, max abs error."""
        width = max([len("point"), *(len(a) + (9 if e.output else 0) for a, e in self.items())])
        lines = [f"{'point':<{width}}  {'SQNR dB':>8}  {'MSE':>10}  {'cosine':>8}  {'max abs':>10}"]
        for a, e in self.items():
            name = f"{a} (output)" if e.output else a
            lines.append(f"{name:<{width}}  {e.sqnr_db:8.2f}  {e.mse:10.4g}  {e.cosine:8.5f}  {e.max_abs:10.4g}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        worst = self.worst
        where = f"; lowest SQNR {worst.sqnr_db:.1f} dB at {worst.address!r}" if worst else ""
        outs = [f"{a} {e.sqnr_db:.1f} dB" for a, e in self.items() if e.output]
        return (f"QuantizationErrors({len(self)} point(s) of {self.model!r} over {self.samples} samples{where}; "
                f"outputs: {', '.join(outs)})")


def quantizer_points(quantized: keras.Model) -> dict[str, str]:
    """``{point: address of its quantizer in quantized}``, in the quantized model's order."""
    graph = to_graph(quantized)
    nodes = sorted(graph.nodes(data=True), key=lambda kd: kd[1].get("order", 0))
    return {d["op"].point: key for key, d in nodes if isinstance(d.get("op"), FakeQuant) and d["op"].point}


def _reduce(x: Any, q: Any) -> Any:
    """``[sum x*x, sum x*q, sum (x-q)**2, max |x-q|]`` of one batch (float32)."""
    x = ops.reshape(ops.cast(x, "float32"), (-1,))
    q = ops.reshape(ops.cast(q, "float32"), (-1,))
    d = x - q
    return ops.stack([ops.sum(x * x), ops.sum(x * q), ops.sum(d * d), ops.max(ops.abs(d))])


def _probe(model: keras.Model, points: list[str], name: str) -> keras.Model:
    """`expose(model, points, keep_outputs=True)` named `name`; the outputs alone if there are no points."""
    graph = graph_for(model, points)
    if points:
        return to_model(expose_pass(graph, points, keep_outputs=True), name=name)
    g = copy_graph(graph)
    g.graph["outputs"] = output_names(g)
    g.graph["output_names"] = list(g.graph["outputs"])
    return to_model(g, name=name)


def _pair_model(model: keras.Model, quantized: keras.Model, chosen: list[str], keys: dict[str, str]) -> tuple:
    """One model computing both probes on the same inputs; and the names of its outputs' pairs."""
    float_probe = _probe(model, chosen, "float")
    quant_probe = _probe(quantized, [keys[a] for a in chosen], "quantized")
    outputs = [n for n in float_probe.output if n not in chosen]
    missing = [n for n in outputs if n not in quant_probe.output]
    if missing:
        raise TransformError(
            f"Expected `quantized` to have the outputs of `model` ({outputs}). Received: a model without "
            f"{missing}. Pass the model returned by `kerasurgery.fake_quantize(model, ...)`."
        )
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=getattr(t, "name", None)), model.input)
    a, b = float_probe(inputs), quant_probe(inputs)
    pairs = [(p, a[p], b[keys[p]], False) for p in chosen] + [(n, a[n], b[n], True) for n in outputs]
    both = keras.Model(inputs, [t for _, x, q, _ in pairs for t in (x, q)], name=f"{model.name}_error")
    return both, [(p, out) for p, _, _, out in pairs]


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # quantized -> {key: (model ref, plan, pairs)}


def _plan(model: keras.Model, quantized: keras.Model, chosen: list[str], keys: dict[str, str]) -> tuple:
    """The pair model and its compiled step, cached per (model, quantized, points): traced once."""
    cache = _PLANS.setdefault(quantized, {})
    key = (id(model), tuple(chosen))
    hit = cache.get(key)
    if hit is not None and hit[0]() is model:
        return hit[1], hit[2]
    both, pairs = _pair_model(model, quantized, chosen, keys)
    count = len(pairs)

    def post(outputs: Any) -> tuple:
        flat = keras.tree.flatten(outputs)
        sums = ops.stack([_reduce(flat[2 * i], flat[2 * i + 1]) for i in range(count)])
        counts = ops.stack([ops.cast(ops.size(flat[2 * i]), "int32") for i in range(count)])
        return sums, counts

    plan = Plan(both, [], {}, backend.Step(both, False, post))
    cache[key] = (weakref.ref(model), plan, pairs)
    return plan, pairs


class _Sums:
    """The sink: adds up each batch's four numbers per pair (float64) and counts values."""

    def __init__(self, n: int):
        self.sums = np.zeros((n, 4))
        self.sums[:, 3] = 0.0
        self.counts = np.zeros(n, np.int64)

    def prepare(self, outputs: Any, rows: int) -> None:
        pass

    def check(self, outputs: Any, rows: int, where: str) -> None:
        pass

    def write(self, start: int, rows: int, outputs: Any) -> None:
        sums, counts = outputs
        s = np.asarray(backend.as_numpy(sums), np.float64)
        self.sums[:, :3] += s[:, :3]
        self.sums[:, 3] = np.maximum(self.sums[:, 3], s[:, 3])
        self.counts += np.asarray(backend.as_numpy(counts), np.int64)


def quantization_error(model: keras.Model, quantized: keras.Model, data: Any, points: Selector | None = None, *,
                       batch_size: int = 32, progress: bool | None = None,
                       steps: int | None = None) -> QuantizationErrors:
    """SQNR, MSE, cosine similarity and max abs error per point between `model` and `quantized`.

    One compiled step per batch runs both models on the same inputs and
    reduces every pair of values in the graph (see the module's table), so
    the cost is about that of two ``predict`` calls (docs/performance.md).

    Args:
        model: the float model.
        quantized: `kerasurgery.fake_quantize(model, ...)` (or any model
            holding `kerasurgery.layers.FakeQuant` layers at points of
            `model`, with the same inputs and outputs).
        data: as for `kerasurgery.collect`.
        points: the quantized points to compare (addresses, globs, a list
            or a predicate among them); None: every one. The model's
            outputs are always compared.
        batch_size: rows per batch for arrays.
        progress: show a progress bar (None: when stdout is a terminal).
        steps: read at most this many batches.

    Returns:
        `QuantizationErrors`: ``{address: PointError}`` in depth order,
        then the outputs (``PointError.output``).

    Raises:
        TransformError: `quantized` holds quantizers at points `model`
            does not have, or lacks its outputs.
        AddressError: a point that is not quantized in `quantized`.
        DataError: the data does not fit the models.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((8,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(4, activation="relu", name="d")(x))
        >>> data = np.random.default_rng(0).normal(size=(128, 8)).astype("float32")
        >>> ranges = ks.calibrate(model, data, ["x", "d:pre"]).ranges("minmax")
        >>> errors = ks.quantization_error(model, ks.fake_quantize(model, ranges, bits=8), data)
        >>> list(errors), 30 < errors["d:pre"].sqnr_db < 60, errors["d"].output
        (['x', 'd:pre', 'd'], True, True)
    """
    keys = quantizer_points(quantized)
    foreign = _not_points(model, list(keys))
    if foreign:
        raise TransformError(
            f"Expected `quantized` made from `model` ('{model.name}') by `kerasurgery.fake_quantize`. Received: "
            f"quantizers at {foreign[:4]}, which are not points of '{model.name}'."
        )
    chosen = list(keys) if points is None else select(list(keys), points, what="points",
                                                       owner=f"the quantized points of '{quantized.name}'")
    plan, pairs = _plan(model, quantized, chosen, keys)
    sink = _Sums(len(pairs))
    samples = run(plan, adapt(data, plan.probe, batch_size=batch_size, steps=steps), sink, progress=progress)
    return QuantizationErrors(((p, PointError.from_sums(p, sink.sums[i], int(sink.counts[i]), out))
                               for i, (p, out) in enumerate(pairs)), model=model.name, samples=samples)


def _not_points(model: keras.Model, addresses: list[str]) -> list[str]:
    """Those of `addresses` that are not points of `model` (its layers opened as the addresses need)."""
    resolver = Resolver(graph_for(model, addresses))
    missing = []
    for address in addresses:
        try:
            resolver.resolve_one(address)
        except AddressError:
            missing.append(address)
    return missing
