"""`Builder`: walks the recorded calls of a model and makes one record per call site.

Used by `kerasurgery.ir.from_keras.to_graph`. Three kinds of call are met:

- a plain call (a layer, a raw ``keras.ops`` operation): one record;
- a nested Functional or Sequential model: *inlined*, its calls recorded
  under its name as a path prefix;
- a call an `Opener` wants opened: *traced* (`kerasurgery.ir.generalize`),
  its inner calls recorded under the layer's name as a path prefix, like a
  nested model. Variables its code reads directly become `VariableRead`
  records, calls with size-dependent constants `SizedCall` records.

An inlined or opened call keeps its own address as an *alias* of its outputs
(``encoder``, ``transformer_layer_0``), so the value it returns stays
addressable. Keys (addresses) are assigned at the end (`keys`), once every
call site of a name is known.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import keras

from kerasurgery import keras_internals as internals
from kerasurgery.address.grammar import node_key, parse
from kerasurgery.errors import ModelError
from kerasurgery.ir.generalize import Opened, open_call
from kerasurgery.ir.opening import Opener
from kerasurgery.ir.schema import Slot, fill
from kerasurgery.ir.trace import TraceError
from kerasurgery.layers import kinds
from kerasurgery.layers.traced import NamedCall, SizedCall, VariableRead


def template(obj: Any, prefix: str, slots: list) -> Any:
    """Replace every KerasTensor (and variable) in `obj` by a `Slot`, recording ``(slot, value)``."""
    if isinstance(obj, (keras.KerasTensor, keras.Variable)):
        slots.append((prefix, obj))
        return Slot(prefix)
    if isinstance(obj, dict):
        return {k: template(v, f"{prefix}.{k}", slots) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(template(v, f"{prefix}.{i}", slots) for i, v in enumerate(obj))
    return obj


def inlinable(op: Any) -> Any | None:
    """The Functional to inline for a nested model call, or None (opaque op)."""
    if isinstance(op, keras.Sequential):
        if type(op).call is keras.Sequential.call:
            return internals.sequential_graph(op)
        return None
    if internals.calls_like_functional(op):
        return op
    return None


def _snake(op: Any) -> str:
    from keras.src.utils.naming import to_snake_case

    return to_snake_case(type(op).__name__)


class Builder:
    """Collects call-site records while walking (inlining and opening) a model's calls."""

    def __init__(self, opener: Opener | None = None):
        self.records: list[dict] = []
        self.tensor_map: dict[int, tuple[int, int]] = {}
        self.opener = opener or Opener()
        self.aliases: list[tuple[tuple, str, tuple, list]] = []  # (path, name, sort_key, [(rid, index)])
        self.closed: list[tuple[int, str]] = []  # (record of a call left closed, reason)
        self.scores: list[tuple[tuple, str, tuple, tuple[int, int]]] = []  # opened attention: its softmax
        self.restores: list = []
        self._reads: dict[int, int] = {}  # id(variable) -> VariableRead record
        self._shapes: dict[int, tuple] = {}  # id(tensor) -> shape with None where it follows input sizes

    def shape(self, tensor: Any) -> tuple:
        """The shape of a recorded tensor, None where it follows the input sizes (inside traces)."""
        return self._shapes.get(id(tensor), tuple(tensor.shape))

    # -- records ----------------------------------------------------------
    def add_input(self, tensor: Any, name: str | None = None) -> None:
        op = internals.producer(tensor)
        rid = self._record(op, "input", (), (), {}, [], [tensor], (0,), name=name)
        self.tensor_map[id(tensor)] = (rid, 0)

    def _record(self, op, kind, path, args, kwargs, feeds, outputs, sort_key, *, name=None, shapes=None) -> int:
        fused = kinds.fused_activation(op)
        self.records.append(
            dict(
                op=op,
                kind=kind,
                class_name=type(op).__name__,
                name=name or op.name,
                path=tuple(path),
                args=args,
                kwargs=kwargs,
                feeds=feeds,
                output_shapes=shapes or [tuple(t.shape) for t in outputs],
                output_dtypes=[str(t.dtype) for t in outputs],
                activation=kinds.activation_name(fused) if fused is not None else None,
                sort_key=sort_key,
            )
        )
        return len(self.records) - 1

    def _lookup(self, tensor: Any, where: str) -> tuple[int, int]:
        if isinstance(tensor, keras.Variable):
            return self._variable(tensor)
        try:
            return self.tensor_map[id(tensor)]
        except KeyError:
            raise ModelError(
                f"Expected every tensor argument of '{where}' to come from the model's inputs. "
                f"Received: tensor {tensor.name!r} from outside the graph."
            ) from None

    def _variable(self, variable: Any, anchor: tuple[int, int] | None = None, path: tuple = ()) -> tuple[int, int]:
        """The record reading `variable` (one per variable, anchored to the first input)."""
        if id(variable) not in self._reads:
            anchor = anchor or next(v for v in self.tensor_map.values())
            read = VariableRead(variable, name=f"{variable.path.replace('/', '_')}_read")
            spec = keras.KerasTensor(tuple(variable.shape), dtype=variable.dtype)
            rid = self._record(read, "layer", path, (Slot("0"),), {}, [("0", anchor)], [spec],
                               (len(self.records),), name=f"{variable.name}_read")
            self._reads[id(variable)] = rid
        return self._reads[id(variable)], 0

    # -- walking ----------------------------------------------------------
    def walk(self, fn: Any, path: tuple, context: dict, prefix: tuple) -> None:
        """Record every call of a Functional (or traced Function)."""
        for node in internals.nodes_in_order(fn):
            if not node.is_input:
                self.visit(node, path, context, prefix + (internals.call_index(node.operation, node),))

    def visit(self, node: Any, path: tuple, context: dict, sort_key: tuple, *, shapes=None, name=None) -> None:
        op = node.operation
        inner = inlinable(op)
        if inner is not None:
            self._inline(node, op, inner, path, context, sort_key)
        elif self.opener.active and self.opener.wants(path, op.name, op):
            try:
                self._open(node, op, path, context, sort_key, shapes=shapes)
            except TraceError as error:
                if self.opener.strict(path, op.name):
                    raise
                self._add_call(node, op, path, context, sort_key)
                self.closed.append((len(self.records) - 1, str(error)))
        else:
            self._add_call(node, op, path, context, sort_key, shapes=shapes, name=name)

    def _slots(self, node: Any, op: Any, context: dict) -> tuple[tuple, dict, list]:
        call_args, kwargs, keras_tensors = internals.call_arguments(node)
        names = internals.context_arguments(op)
        for key, value in context.items():
            if key in names:
                kwargs[key] = value
        slots: list = []
        args_t = tuple(template(a, str(i), slots) for i, a in enumerate(call_args))
        kwargs_t = {k: template(v, k, slots) for k, v in kwargs.items()}
        if len([s for s in slots if isinstance(s[1], keras.KerasTensor)]) != len(keras_tensors):
            raise ModelError(
                f"Expected the tensor arguments of '{op.name}' in lists, tuples or dicts. "
                f"Received: a call whose tensors sit inside {type(call_args).__name__} "
                "objects kerasurgery cannot see into."
            )
        return args_t, kwargs_t, slots

    def _add_call(self, node, op, path, context, sort_key, *, shapes=None, name=None) -> None:
        args_t, kwargs_t, slots = self._slots(node, op, context)
        if isinstance(op, NamedCall) and op.address:  # a rebuilt model's renamed call: its own address back
            address = parse(op.address)
            op, path, name = op.layer, path + address.path, address.name
        feeds = [(slot, self._lookup(t, op.name)) for slot, t in slots]
        kind = "layer" if isinstance(op, keras.layers.Layer) else "op"
        rid = self._record(op, kind, path, args_t, kwargs_t, feeds, node.outputs, sort_key, name=name, shapes=shapes)
        for i, t in enumerate(node.outputs):
            self.tensor_map[id(t)] = (rid, i)
            if shapes is not None:
                self._shapes[id(t)] = tuple(shapes[i])

    def _operation(self, rid: int) -> Any:
        op = self.records[rid]["op"]
        return op.operation if isinstance(op, SizedCall) else op

    def _alias(self, path: tuple, name: str, sort_key: tuple, outputs: list) -> None:
        self.aliases.append((path, name, sort_key, [self.tensor_map[id(t)] for t in outputs]))

    def _inline(self, node, op, inner, path, context, sort_key) -> None:
        args, kwargs, _ = internals.call_arguments(node)
        given = args[0] if args else kwargs.get("inputs")
        flat = keras.tree.flatten(given)
        inner_inputs = internals.flat_inputs(inner)
        if len(flat) != len(inner_inputs) or not all(isinstance(t, keras.KerasTensor) for t in flat):
            raise ModelError(
                f"Expected nested model '{op.name}' to be called on {len(inner_inputs)} tensor(s) "
                f"matching its inputs. Received: {len(flat)} argument(s)."
            )
        for outer_t, inner_t in zip(flat, inner_inputs):
            self.tensor_map[id(inner_t)] = self._lookup(outer_t, op.name)
        inner_context = {
            k: v for k, v in kwargs.items() if k in internals.context_arguments(op) and v is not None
        }
        inner_context.update(context)  # an enclosing call's value wins, as at run time
        self.walk(inner, path + (op.name,), inner_context, sort_key)
        for outer_t, inner_t in zip(node.outputs, internals.flat_outputs(inner)):
            self.tensor_map[id(outer_t)] = self.tensor_map[id(inner_t)]
        self._alias(path, op.name, sort_key, node.outputs)

    # -- opening ------------------------------------------------------------
    def _open(self, node, op, path, context, sort_key, *, shapes=None) -> None:
        """Trace the call of `op` and record its inner calls under ``path/op.name``."""
        args_t, kwargs_t, slots = self._slots(node, op, context)
        first = len(self.records)
        outputs = self._open_call(op, args_t, kwargs_t, slots, path, context, sort_key, top=False)
        if kinds.is_attention_like(op):
            inner = path + (op.name,)
            softmax = [r for r in range(first, len(self.records))
                       if self.records[r]["path"] == inner and kinds.is_softmax(self._operation(r))]
            if len(softmax) == 1:
                self.scores.append((path, op.name, sort_key, (softmax[0], 0)))
        for i, (t_out, t_trace) in enumerate(zip(node.outputs, keras.tree.flatten(outputs))):
            self.tensor_map[id(t_out)] = self.tensor_map[id(t_trace)]
            self._shapes[id(t_out)] = tuple(shapes[i]) if shapes is not None else self.shape(t_trace)
        self._alias(path, op.name, sort_key, node.outputs)

    def _open_call(self, op, args_t, kwargs_t, slots, path, context, sort_key, *, top: bool,
                   fallback: dict | None = None) -> Any:
        """Record the inner calls of a traced call; returns the trace's outputs (structure)."""
        tensors = {s: t for s, t in slots if isinstance(t, keras.KerasTensor)}
        specs = {s: (self.shape(t), str(t.dtype)) for s, t in tensors.items()}
        opened = open_call(op, args_t, kwargs_t, specs, fill, fallback)
        self.restores.append(opened.restore)
        trace = opened.trace
        outer = {s: self._lookup(t, op.name) for s, t in tensors.items()}
        for s, t in zip(trace.slots, internals.flat_inputs(trace.function)):
            self.tensor_map[id(t)] = outer[s]
            self._shapes[id(t)] = specs[s][0]
        inner_path = path if top else path + (op.name,)
        anchor = outer[trace.slots[0]] if trace.slots else None
        for (variable, placeholder) in trace.variables:
            self.tensor_map[id(placeholder)] = self._variable(variable, anchor, inner_path)
        inner_context = {k: v for k, v in kwargs_t.items()
                         if k in internals.context_arguments(op) and isinstance(v, bool)}
        inner_context.update(context)
        refs = [outer[slot] for slot, _ in opened.symbols]
        for k, inner_node in enumerate(trace.nodes):
            key = sort_key + (k,)
            shapes = opened.shapes.get(k)
            shapes = None if shapes is None else [tuple(None if not isinstance(d, int) else d for d in s)
                                                  for s in shapes]
            name = None if isinstance(inner_node.operation, keras.layers.Layer) else _snake(inner_node.operation)
            if k in opened.sized:
                self._add_sized(inner_node, opened, k, inner_path, key, refs, name, inner_context)
            else:
                self.visit(inner_node, inner_path, inner_context, key, shapes=shapes, name=name)
        return internals.output_structure(trace.function)

    def _add_sized(self, node, opened: Opened, k: int, path, sort_key, refs, name, context) -> None:
        """A call whose constants follow the input sizes, as a `SizedCall` record."""
        op = node.operation
        _, _, tensors = internals.call_arguments(node)
        distinct = list({id(t): t for t in tensors}.values())
        shapes = opened.shapes.get(k) or [tuple(t.shape) for t in node.outputs]
        outputs = [(s, str(t.dtype)) for s, t in zip(shapes, node.outputs)]
        label = name or op.name
        sized = SizedCall(op, opened.sized[k], [axis for _, axis in opened.symbols], outputs,
                          name=f"{'_'.join((*path, label))}_sized_{len(self.records)}")
        slots = [(f"0.{i}", t) for i, t in enumerate(distinct)]
        feeds = [(s, self._lookup(t, label)) for s, t in slots]
        feeds += [(f"1.{g}", ref) for g, ref in enumerate(refs)]
        args = ([Slot(f"0.{i}") for i in range(len(distinct))], [Slot(f"1.{g}") for g in range(len(refs))])
        metadata = [tuple(None if not isinstance(d, int) else d for d in s) for s in shapes]
        rid = self._record(sized, "layer", path, args, {}, feeds, node.outputs, sort_key, name=label,
                           shapes=metadata)
        self.records[rid]["class_name"] = type(op).__name__
        for i, t in enumerate(node.outputs):
            self.tensor_map[id(t)] = (rid, i)
            self._shapes[id(t)] = metadata[i]

    def open_top(self, layer: Any, inputs: Any, fallback: dict[int, dict[int, int]] | None = None) -> Any:
        """Trace a subclassed model or a layer given to `to_graph` itself (no path prefix).

        `fallback` gives, per flat input, sizes of free dimensions that may be
        fixed if the call cannot follow them. Returns the outputs (structure of
        trace tensors) for the graph's outputs.
        """
        slots: list = []
        args_t = (template(inputs, "0", slots),)
        sizes = {(slot, axis): size for (slot, _), dims in zip(slots, (fallback or {}).values())
                 for axis, size in dims.items()} if fallback else None
        return self._open_call(layer, args_t, {}, slots, (), {}, (0,), top=True, fallback=sizes)

    def restore(self) -> None:
        """Forget every trace call recorded on the model's layers."""
        for restore in reversed(self.restores):
            restore()
        self.restores.clear()

    # -- keys ---------------------------------------------------------------
    def keys(self) -> tuple[list[str], dict[str, list], dict[str, str]]:
        """Assign call indices and node keys.

        Returns:
            ``(keys, aliases, closed)``: one key per record; ``{alias key:
            [(rid, index), ...]}``; ``{key of a call left closed: reason}``.
        """
        sites: dict[tuple, list[int]] = defaultdict(list)
        for rid, rec in enumerate(self.records):
            sites[(rec["path"], rec["name"])].append(rid)
        keys = [""] * len(self.records)
        for (path, name), rids in sites.items():
            rids.sort(key=lambda r: self.records[r]["sort_key"])
            for call, rid in enumerate(rids):
                self.records[rid]["call"] = call
                keys[rid] = node_key(path, name, call if len(rids) > 1 else None)
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise ModelError(
                f"Expected distinct addresses for distinct call sites. Received: names that "
                f"collide with call-site addresses: {dup}."
            )
        sites_of_alias: dict[tuple, list] = defaultdict(list)
        for path, name, sort_key, refs in self.aliases:
            sites_of_alias[(path, name)].append((sort_key, refs))
        aliases = {}
        for (path, name), values in sites_of_alias.items():
            values.sort(key=lambda v: v[0])
            for call, (_, refs) in enumerate(values):
                aliases[node_key(path, name, call if len(values) > 1 else None)] = refs
        taken = set(keys)
        closed = {keys[rid]: reason for rid, reason in self.closed}
        alias_of = {(p, n, tuple(sk)): k for k, (p, n, sk) in self._alias_sites(aliases_sites=sites_of_alias).items()}
        self.score_keys = {alias_of[(p, n, tuple(sk))]: ref for p, n, sk, ref in self.scores if (p, n, tuple(sk)) in alias_of}
        return keys, {k: v for k, v in aliases.items() if k not in taken}, closed

    @staticmethod
    def _alias_sites(aliases_sites: dict) -> dict:
        """``{alias key: (path, name, sort_key)}``, the call numbering `keys` uses."""
        out = {}
        for (path, name), values in aliases_sites.items():
            ordered = sorted(values, key=lambda v: v[0])
            for call, (sort_key, _) in enumerate(ordered):
                out[node_key(path, name, call if len(ordered) > 1 else None)] = (path, name, sort_key)
        return out
