"""Reading a Keras model into the IR (`to_graph`).

The schema of the result is in `kerasurgery.ir.schema`. Nested Functional and
Sequential models (whose ``call`` is Keras's own) are inlined: their nodes
carry the path prefix, and a ``training`` value given to the nested call is
passed down to the inner calls, exactly as Keras does at run time. Every
Keras internal read here goes through `kerasurgery.keras_internals`.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any

import keras
import networkx as nx

from kerasurgery import keras_internals as internals
from kerasurgery.address.grammar import node_key
from kerasurgery.errors import ModelError
from kerasurgery.ir.schema import Ref, Slot, map_structure
from kerasurgery.layers import kinds


def _template(obj: Any, prefix: str, slots: list) -> Any:
    """Replace every KerasTensor in `obj` by a `Slot`, recording (slot, tensor)."""
    if isinstance(obj, keras.KerasTensor):
        slots.append((prefix, obj))
        return Slot(prefix)
    if isinstance(obj, dict):
        return {k: _template(v, f"{prefix}.{k}", slots) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_template(v, f"{prefix}.{i}", slots) for i, v in enumerate(obj))
    return obj



def _functional_of(model: Any) -> Any:
    """The Functional graph behind `model`, or a ModelError saying why not."""
    if isinstance(model, keras.Sequential):
        fn = internals.sequential_graph(model)
        if fn is None:
            raise ModelError(
                f"Expected a built model. Received: Sequential model '{model.name}', which has no "
                "input shape yet, so it has no graph of layer calls. Give it an input, e.g. "
                "`keras.Sequential([keras.Input(shape=...), ...])`, or call "
                "`model.build(input_shape)` (or call it once on data) first."
            )
        return fn
    if internals.is_functional(model):
        if not internals.calls_like_functional(model):
            warnings.warn(
                f"Model '{model.name}' ({type(model).__name__}) overrides `call()`; kerasurgery reads "
                "the functional graph it was built with, which may differ from what `call()` computes.",
                stacklevel=3,
            )
        return model
    if isinstance(model, keras.Model):
        raise ModelError(
            "Expected a Functional or Sequential model. Received: a subclassed model "
            f"'{model.name}' ({type(model).__name__}). Its computation lives in Python code in "
            "`call()`, so Keras records no graph of layer calls to read or rewrite. Rewrite it with "
            "the functional API (`outputs = layer(inputs)` ... `keras.Model(inputs, outputs)`); "
            "wrapping it as `keras.Model(x, model(x))` only exposes its final output."
        )
    if isinstance(model, keras.layers.Layer):
        raise ModelError(
            "Expected a Functional or Sequential keras.Model. Received: the layer "
            f"'{model.name}' ({type(model).__name__}). Call it on a `keras.Input` and wrap it: "
            "`x = keras.Input(shape); keras.Model(x, layer(x))`."
        )
    raise ModelError(
        f"Expected a keras.Model (Functional or Sequential). Received: {model!r} "
        f"of type {type(model).__name__}."
    )


def _inlinable(op: Any) -> Any | None:
    """The Functional to inline for a nested model call, or None (opaque op)."""
    if isinstance(op, keras.Sequential):
        if type(op).call is keras.Sequential.call:
            return internals.sequential_graph(op)
        return None
    if internals.calls_like_functional(op):
        return op
    return None


class _Builder:
    """Collects call-site records while walking (and inlining) a Functional."""

    def __init__(self):
        self.records: list[dict] = []
        self.tensor_map: dict[int, tuple[int, int]] = {}

    def add_input(self, tensor: Any) -> None:
        op = internals.producer(tensor)
        rid = self._record(op, "input", (), (), {}, [], [tensor], (0,))
        self.tensor_map[id(tensor)] = (rid, 0)

    def _record(self, op, kind, path, args, kwargs, feeds, outputs, sort_key) -> int:
        self.records.append(
            dict(
                op=op,
                kind=kind,
                class_name=type(op).__name__,
                name=op.name,
                path=tuple(path),
                args=args,
                kwargs=kwargs,
                feeds=feeds,
                output_shapes=[tuple(t.shape) for t in outputs],
                output_dtypes=[str(t.dtype) for t in outputs],
                activation=(
                    kinds.activation_name(kinds.fused_activation(op))
                    if kinds.fused_activation(op) is not None
                    else None
                ),
                sort_key=sort_key,
            )
        )
        return len(self.records) - 1

    def walk(self, fn: Any, path: tuple, context: dict, prefix: tuple) -> None:
        for node in internals.nodes_in_order(fn):
            if node.is_input:
                continue
            op = node.operation
            index = internals.call_index(op, node)
            inner = _inlinable(op)
            if inner is not None:
                self._inline(node, op, inner, path, context, prefix + (index,))
            else:
                self._add_call(node, op, path, context, prefix + (index,))

    def _lookup(self, tensor: Any, where: str) -> tuple[int, int]:
        try:
            return self.tensor_map[id(tensor)]
        except KeyError:
            raise ModelError(
                f"Expected every tensor argument of '{where}' to come from the model's inputs. "
                f"Received: tensor {tensor.name!r} from outside the graph."
            ) from None

    def _add_call(self, node, op, path, context, sort_key) -> None:
        call_args, kwargs, keras_tensors = internals.call_arguments(node)
        names = internals.context_arguments(op)
        for name, value in context.items():
            if name in names:
                kwargs[name] = value
        slots: list = []
        args_t = tuple(_template(a, str(i), slots) for i, a in enumerate(call_args))
        kwargs_t = {k: _template(v, k, slots) for k, v in kwargs.items()}
        if len(slots) != len(keras_tensors):
            raise ModelError(
                f"Expected the tensor arguments of '{op.name}' in lists, tuples or dicts. "
                f"Received: a call whose tensors sit inside {type(call_args).__name__} "
                "objects kerasurgery cannot see into."
            )
        feeds = [(slot, self._lookup(t, op.name)) for slot, t in slots]
        kind = "layer" if isinstance(op, keras.layers.Layer) else "op"
        rid = self._record(op, kind, path, args_t, kwargs_t, feeds, node.outputs, sort_key)
        for i, t in enumerate(node.outputs):
            self.tensor_map[id(t)] = (rid, i)

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

    def keys(self) -> list[str]:
        """Assign call indices and node keys; returns one key per record."""
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
        return keys


def to_graph(model: Any) -> nx.DiGraph:
    """Read a Functional or Sequential model into the kerasurgery IR.

    Nested Functional and Sequential models are inlined (their nodes carry the
    path prefix); every call site of a shared layer is its own node. The model
    is not changed.

    Args:
        model: a Functional model (including subclasses of Functional such as
            keras_hub backbones) or a built Sequential model.

    Returns:
        A new `networkx.DiGraph` following the schema in this module's docstring.

    Raises:
        ModelError: the model is subclassed, unbuilt, or not a model.

    Example:
        >>> import keras, kerasurgery as ks
        >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="enc")
        >>> x = keras.Input((4,), name="x")
        >>> g = ks.to_graph(keras.Model(x, inner(x)))
        >>> list(g.nodes)
        ['x', 'enc/d']
    """
    fn = _functional_of(model)
    builder = _Builder()
    for t in internals.flat_inputs(fn):
        builder.add_input(t)
    builder.walk(fn, (), {}, ())
    keys = builder.keys()

    graph = nx.DiGraph(name=model.name)
    for order, (key, rec) in enumerate(zip(keys, builder.records)):
        feeds = rec.pop("feeds")
        rec.pop("sort_key")
        graph.add_node(key, order=order, **rec)
        for slot, (parent, index) in feeds:
            pkey = keys[parent]
            if graph.has_edge(pkey, key):
                graph.edges[pkey, key]["feeds"].append((index, slot))
            else:
                graph.add_edge(pkey, key, feeds=[(index, slot)])

    def ref(t):
        rid, index = builder.tensor_map[id(t)]
        return Ref(keys[rid], index)

    def input_key(t):
        return keys[builder.tensor_map[id(t)][0]]

    is_leaf = lambda o: isinstance(o, keras.KerasTensor)  # noqa: E731
    graph.graph["inputs"] = map_structure(input_key, internals.input_structure(fn), leaf=is_leaf)
    graph.graph["outputs"] = map_structure(ref, internals.output_structure(fn), leaf=is_leaf)
    graph.graph["output_names"] = list(getattr(model, "output_names", None) or [])
    return graph


def as_graph(model_or_graph: Any) -> nx.DiGraph:
    """`model_or_graph` itself if it is a graph, else `to_graph(model_or_graph)`."""
    if isinstance(model_or_graph, nx.DiGraph):
        return model_or_graph
    return to_graph(model_or_graph)
