"""Opening a call at every input size: tracing at several sizes and generalising.

Keras has no symbolic dimensions: on a `KerasTensor` with a free batch
dimension, ``ops.shape(x)[0]`` is ``None``, and a layer that computes with it
(``broadcast_to(mask, (batch, t, t))``, ``reshape(x, (batch, t, heads, d))``)
cannot be traced. So a call is traced at concrete sizes instead, several
times:

1. a *base* trace with every free dimension (``None`` in the inputs' shapes)
   set to a small size;
2. one trace per group of free dimensions, with only that group changed.
   The free dimensions of one axis (the batch of every input, the sequence of
   tokens and of their padding mask) form a group and change together, unless
   each of them can change alone (the two lengths of a cross-attention), in
   which case each is its own group;
3. a *check* trace with every group changed at once, to other sizes.

Every trace must record the same calls. Any constant that differs between
them (a shape given to ``broadcast_to``, ``reshape``, ``slice``; an ``axis``;
an argument) must be an integer ``c0 + k1 * d1 + ...`` of the free dimensions
with integer ``k`` (fitted on steps 1-2, confirmed on step 3); it becomes a
`Dim` expression, evaluated at run time from the actual input shapes by a
`kerasurgery.layers.SizedCall`. Output shapes are generalised the same way
(a dimension that differs becomes ``None``). What cannot be generalised (a
float that follows the size, a different sequence of calls at another size,
a constant tensor whose shape follows the size) raises `TraceError`: the
layer stays closed.

Example:
    >>> import keras, keras_hub  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from kerasurgery import keras_internals as internals
from kerasurgery.ir.trace import Trace, TraceError, forget_trace_calls, trace_call
from kerasurgery.layers.traced import Dim

# Sizes traced at (batch axis -> key 0, other axes -> key 1): small, so that layers with a
# maximum length (position tables) accept them; the check sizes differ from both others.
_BASE, _ALT, _CHECK = {0: 2, 1: 4}, {0: 3, 1: 5}, {0: 4, 1: 6}


def _size(table: dict[int, int], axis: int, offset: int = 0) -> int:
    return table[0 if axis == 0 else 1] + (offset if axis else 0)


@dataclasses.dataclass
class Opened:
    """A call traced and generalised over its free input dimensions.

    Attributes:
        trace: the base trace (its Function is what gets inlined).
        symbols: per symbol, the ``(slot, axis)`` it is read from at run time
            (the first of the dimensions tied to it).
        sized: ``{node position: {"config": ..., "args": ..., "kwargs": ...}}``:
            for calls with size-dependent constants, their templates with
            `Dim` leaves (`kerasurgery.layers.traced` reads them).
        shapes: ``{node position: [shape template per output]}`` with `Dim`
            or None for dimensions that follow the input sizes.
        restore: forgets the trace calls recorded on the sublayers.
    """

    trace: Trace
    symbols: list[tuple[str, int]]
    sized: dict[int, dict]
    shapes: dict[int, list]
    restore: Any


def _specs(specs: dict[str, tuple[tuple, str]], sizes: dict[tuple[str, int], int]) -> dict:
    return {s: (tuple(sizes.get((s, a), d) for a, d in enumerate(shape)), dtype) for s, (shape, dtype) in specs.items()}


def _try(layer: Any, args: tuple, kwargs: dict, specs: dict, fill: Any) -> Trace | None:
    try:
        return trace_call(layer, args, kwargs, specs, fill)
    except TraceError:
        return None


def open_call(layer: Any, args: tuple, kwargs: dict, specs: dict[str, tuple[tuple, str]], fill: Any,
              fallback: dict[tuple[str, int], int] | None = None) -> Opened:
    """Trace ``layer.call`` at several sizes and generalise (see the module docstring).

    Args:
        layer: the layer whose call is opened.
        args, kwargs: argument templates (tensors as Slots).
        specs: ``{slot: (shape, dtype)}`` with None for free dimensions.
        fill: `kerasurgery.ir.schema.fill`.
        fallback: ``{(slot, axis): size}`` for free dimensions that may be
            fixed to that size if the call cannot be generalised over them
            (a subclassed model built on data: its sequence length may vary,
            its image size may not).

    Raises:
        TraceError: the call cannot be traced, or its constants cannot be
            generalised to every input size.
    """
    restore = forget_trace_calls(layer)
    try:
        if not fallback:
            return _open(layer, args, kwargs, specs, fill, restore)
        return _open_where_possible(layer, args, kwargs, specs, fill, restore, fallback)
    except BaseException:
        restore()
        raise


def _open_where_possible(layer: Any, args: tuple, kwargs: dict, specs: dict, fill: Any, restore: Any,
                         fallback: dict[tuple[str, int], int]) -> Opened:
    """Open with the `fallback` dimensions fixed, then free them one axis at a time where the call follows."""
    def fixed(dims: set) -> dict:
        return {s: (tuple(fallback[(s, a)] if (s, a) in dims else d for a, d in enumerate(shape)), dtype)
                for s, (shape, dtype) in specs.items()}

    frozen = set(fallback)
    opened = _open(layer, args, kwargs, fixed(frozen), fill, restore)
    for axis in sorted({a for _, a in fallback}):
        trial = {d for d in frozen if d[1] != axis}
        try:
            opened = _open(layer, args, kwargs, fixed(trial), fill, restore)
        except TraceError:
            continue
        frozen = trial
    return opened


def _open(layer: Any, args: tuple, kwargs: dict, specs: dict, fill: Any, restore: Any) -> Opened:
    free = [(s, a) for s, (shape, _) in specs.items() for a, d in enumerate(shape) if d is None]
    base_sizes = {f: _size(_BASE, f[1]) for f in free}
    base = trace_call(layer, args, kwargs, _specs(specs, base_sizes), fill)  # raises: untraceable
    if not free:
        return Opened(base, [], {}, {}, restore)
    by_axis: dict[int, list[tuple[str, int]]] = {}
    for f in free:
        by_axis.setdefault(f[1], []).append(f)
    groups: list[list[tuple[str, int]]] = []
    varied: list[Trace] = []
    for axis, members in by_axis.items():
        # The batch is one batch for every input; other axes may be independent (cross attention).
        alone = [_try(layer, args, kwargs, _specs(specs, {**base_sizes, m: _size(_ALT, axis)}), fill)
                 for m in members] if len(members) > 1 and axis != 0 else [None]
        if len(members) > 1 and all(t is not None for t in alone):  # independent sizes (cross attention)
            groups.extend([m] for m in members)
            varied.extend(t for t in alone if t is not None)
            continue
        sizes = {**base_sizes, **{m: _size(_ALT, axis) for m in members}}
        trace = _try(layer, args, kwargs, _specs(specs, sizes), fill)
        if trace is None:
            raise TraceError(layer, f"its input sizes along axis {axis} ({sorted({m[0] for m in members})}) could "
                             "not be changed, so no trace covers every size", fix="Leave the layer closed.")
        groups.append(members)
        varied.append(trace)
    check_sizes = {m: _size(_CHECK, m[1], offset=g) for g, members in enumerate(groups) for m in members}
    check = _try(layer, args, kwargs, _specs(specs, check_sizes), fill)
    if check is None:
        raise TraceError(layer, "the call fails at other input sizes than the ones it was traced at",
                         fix="Leave the layer closed.")
    steps = [float(_size(_ALT, g[0][1]) - _size(_BASE, g[0][1])) for g in groups]
    base_values = [float(_size(_BASE, g[0][1])) for g in groups]
    check_values = [check_sizes[g[0]] for g in groups]
    fit = _Fitter(layer, base_values, steps, check_values)
    sized, shapes = _compare(layer, base, varied, check, fit)
    return Opened(base, [g[0] for g in groups], sized, shapes, restore)


class _Fitter:
    """Fits integers that follow the sizes: ``c0 + sum(k_g * d_g)``, checked on the check trace."""

    def __init__(self, layer: Any, base: list[float], steps: list[float], check: list[int]):
        self.layer, self.base, self.steps, self.check = layer, base, steps, check

    def fit(self, v0: Any, varied: list[Any], vcheck: Any, what: str) -> Any:
        if all(v == v0 for v in varied) and vcheck == v0:
            return v0
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (v0, vcheck, *varied)):
            raise TraceError(self.layer, f"{what} follows the input sizes but is not an integer ({v0!r}, "
                             f"{vcheck!r} at other sizes)", fix="Leave the layer closed.")
        ks = [(v - v0) / step for v, step in zip(varied, self.steps)]
        if any(k != int(k) for k in ks):
            raise TraceError(self.layer, f"{what} is not an integer multiple of the input sizes", fix="Leave it closed.")
        const = v0 - sum(int(k) * b for k, b in zip(ks, self.base))
        dim = Dim(int(const), tuple((g, int(k)) for g, k in enumerate(ks) if k))
        if dim.evaluate(self.check) != vcheck:
            raise TraceError(self.layer, f"{what} follows the input sizes in a way that is not linear "
                             f"(predicted {dim.evaluate(self.check)}, traced {vcheck})", fix="Leave it closed.")
        return dim


def _producers(trace: Trace) -> dict[int, tuple]:
    """``{id(tensor): (node position or 'in', output index)}`` for every tensor of a trace."""
    where: dict[int, tuple] = {id(t): ("in", i) for i, t in enumerate(internals.flat_inputs(trace.function))}
    for k, node in enumerate(trace.nodes):
        for i, t in enumerate(node.outputs):
            where[id(t)] = (k, i)
    return where


def _leaves(value: Any, where: dict[int, tuple], out: list) -> Any:
    """A comparable skeleton of a structure; scalar leaves collected in `out` (tensors by producer)."""
    if isinstance(value, keras.KerasTensor):
        return ("tensor", where.get(id(value)))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_leaves(v, where, out) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _leaves(v, where, out)) for k, v in value.items()))
    if isinstance(value, slice):
        return ("slice", tuple(_leaves(v, where, out) for v in (value.start, value.stop, value.step)))
    if isinstance(value, keras.Variable):
        return ("variable", id(value))
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (int, float, np.generic)):
        array = keras.ops.convert_to_numpy(value)
        return ("array", array.shape, str(array.dtype), array.tobytes())
    out.append(value)
    return ("leaf", len(out) - 1)


def _rebuild(value: Any, fitted: list, where: dict[int, tuple], slots: dict[tuple, int]) -> Any:
    """`value` with size-following leaves replaced by their `Dim` and tensors by their position."""
    counter = iter(range(len(fitted)))

    def go(v: Any) -> Any:
        if isinstance(v, keras.KerasTensor):
            return ("__tensor__", slots[where[id(v)]])
        if isinstance(v, (list, tuple)):
            return type(v)(go(x) for x in v)
        if isinstance(v, dict):
            return {k: go(x) for k, x in v.items()}
        if isinstance(v, slice):
            return slice(go(v.start), go(v.stop), go(v.step))
        if isinstance(v, keras.Variable) or (hasattr(v, "shape") and hasattr(v, "dtype")
                                             and not isinstance(v, (int, float, np.generic))):
            return v
        return fitted[next(counter)]

    return go(value)


def _compare(layer: Any, base: Trace, varied: list[Trace], check: Trace, fit: _Fitter) -> tuple[dict, dict]:
    traces = [base, *varied, check]
    if len({len(t.nodes) for t in traces}) != 1:
        raise TraceError(layer, "call() records different operations at different input sizes (a Python branch "
                         "on a size?)", fix="Leave the layer closed.")
    wheres = [_producers(t) for t in traces]
    sized: dict[int, dict] = {}
    shapes: dict[int, list] = {}
    for k in range(len(base.nodes)):
        nodes = [t.nodes[k] for t in traces]
        ops = [n.operation for n in nodes]
        name = ops[0].name
        ephemeral = not isinstance(ops[0], keras.layers.Layer)
        if ephemeral and len({type(op) for op in ops}) != 1 or not ephemeral and any(op is not ops[0] for op in ops):
            raise TraceError(layer, f"call() records different operations at different sizes (at '{name}')",
                             fix="Leave the layer closed.")
        parts = []
        for node, op, where in zip(nodes, ops, wheres):
            args, kwargs, _ = internals.call_arguments(node)
            config = {k: v for k, v in op.get_config().items() if k != "name"} if ephemeral else {}
            out: list = []
            skeleton = _leaves((config, args, kwargs), where, out)
            shape_out: list = []
            shape_skeleton = _leaves([tuple(t.shape) for t in node.outputs], where, shape_out)
            parts.append((skeleton, out, shape_skeleton, shape_out))
        if len({(p[0], p[2]) for p in parts}) != 1:
            raise TraceError(layer, f"the call '{name}' takes different arguments at different sizes",
                             fix="Leave the layer closed.")
        values = [fit.fit(parts[0][1][i], [p[1][i] for p in parts[1:-1]], parts[-1][1][i], f"an argument of '{name}'")
                  for i in range(len(parts[0][1]))]
        dims = [fit.fit(parts[0][3][i], [p[3][i] for p in parts[1:-1]], parts[-1][3][i], f"the output shape of '{name}'")
                for i in range(len(parts[0][3]))]
        args, kwargs, _ = internals.call_arguments(nodes[0])
        config = {k: v for k, v in ops[0].get_config().items() if k != "name"} if ephemeral else {}
        if any(isinstance(v, Dim) for v in values):
            tensors = [where for where in (wheres[0][id(t)] for t in internals.call_arguments(nodes[0])[2])]
            slots = {w: i for i, w in enumerate(dict.fromkeys(tensors))}
            template = _rebuild((config, args, kwargs), values, wheres[0], slots)
            sized[k] = {"config": template[0], "args": template[1], "kwargs": template[2]}
        if any(isinstance(d, Dim) for d in dims):
            counter = iter(dims)
            shapes[k] = [tuple(next(counter) for _ in t.shape) for t in nodes[0].outputs]
    return sized, shapes
