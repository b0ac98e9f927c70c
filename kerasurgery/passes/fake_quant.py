"""Fake quantization as a graph pass: quantizers at points, quantized kernels.

`fake_quant_pass` puts a given quantizer layer (`kerasurgery.layers.FakeQuant`)
on the value of each point, as `kerasurgery.patch` puts its patches: every
consumer of the value reads the quantizer's output instead (at ``:pre`` of an
activation layer only that layer's input; ``:pre`` of a fused layer splits
it, as `expose` does). Then every call of the layers chosen for weight
quantization goes through `kerasurgery.layers.QuantizedWeights` (one wrapper
per layer object, named as the layer, so the addresses of their outputs stay
the same). The model-level function, which turns ranges into quantizers, is
`kerasurgery.quant.fake.fake_quantize`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import networkx as nx

from kerasurgery.address.selector import select
from kerasurgery.errors import TransformError
from kerasurgery.ir.edits import add_call, new_key
from kerasurgery.ir.names import Names
from kerasurgery.ir.resolve import Resolver
from kerasurgery.ir.schema import Ref, copy_graph
from kerasurgery.layers import QuantizedWeights
from kerasurgery.layers.fake_quant import kernels
from kerasurgery.passes.point_values import PointValues
from kerasurgery.passes.rewiring import call_specs, move_consumers, spec_of, symbolic, value_ref


def quantizable(graph: nx.DiGraph) -> list[str]:
    """The nodes whose layer has float kernels `QuantizedWeights` can quantize, in graph order."""
    return [k for k, d in graph.nodes(data=True) if d.get("kind") != "input" and kernels(d.get("op"))]


def _wrap_weights(g: nx.DiGraph, layers: set[int], bits: int) -> None:
    """Every call of the layer objects in `layers` (ids; also inside a PreActivation) through one wrapper each."""
    wrappers: dict[int, QuantizedWeights] = {}
    for key, data in g.nodes(data=True):
        op = data.get("op")
        inner = getattr(op, "layer", op)
        if id(op) not in layers and id(inner) not in layers or isinstance(op, QuantizedWeights):
            continue
        if id(op) not in wrappers:
            wrappers[id(op)] = QuantizedWeights(op, bits=bits, name=op.name)
        data.update(op=wrappers[id(op)], class_name="QuantizedWeights")


def fake_quant_pass(graph: nx.DiGraph, quantizers: Mapping[str, keras.layers.Layer],
                    weights: Mapping[str, int] | None = None) -> nx.DiGraph:
    """Graph pass of `fake_quantize`: each point's consumers read its quantizer; chosen kernels are quantized.

    Args:
        graph: the model's graph (with the layers on the points' paths opened).
        quantizers: ``{address: layer}``; each layer takes the point's value
            and returns its shape and dtype.
        weights: ``{node key: bits}``: the layers called at these nodes get
            their kernels quantized (every call of them).

    Changes: per point, a node calling its quantizer on the value (named
    after the layer, made unique), read by every consumer of the value;
    the op of every call of a chosen layer replaced by a `QuantizedWeights`
    of the same name.

    Raises:
        AddressError: an unknown address.
        TransformError: a point whose value is not floating point, a
            quantizer that does not fit the value, a node without kernels.
    """
    resolver = Resolver(graph)
    targets = [(address, resolver.resolve_one(address), layer) for address, layer in quantizers.items()]
    chosen = dict(weights or {})
    for key in chosen:
        if key not in graph or not kernels(graph.nodes[key].get("op")):
            raise TransformError(
                f"Expected layers with float kernels to quantize the weights of. Received: {key!r}. Layers that "
                f"have them: {quantizable(graph)[:8]}."
            )
    layers = {id(graph.nodes[key]["op"]) for key in chosen}
    bits = set(chosen.values())
    if len(bits) > 1:
        raise TransformError(f"Expected one code width for every kernel. Received: {sorted(bits)}.")
    g = copy_graph(graph)
    names = Names(g)
    splitter = PointValues(g, names)
    for address, point, layer in targets:
        ref = value_ref(g, address, point, splitter)
        shape, dtype = spec_of(g, ref)
        if dtype is not None and "float" not in str(dtype):
            raise TransformError(
                f"Expected floating-point values to fake-quantize. Received: {address!r} of dtype {dtype}. "
                "Leave it out of the points (integer tensors such as token ids are not quantized)."
            )
        call_specs(layer, (symbolic(shape, dtype),), {}, f"the value at {address!r} ({shape}, {dtype})")
        name = names.make(layer.name)
        path = tuple(g.nodes[ref.node].get("path", ()))
        key = new_key(g, path, name)
        add_call(g, key, layer, [], path=path, output_shapes=[shape], output_dtypes=[dtype],
                 order=g.nodes[ref.node].get("order", 0) + 0.25)
        g.nodes[key]["name"] = name
        move_consumers(g, point, ref, Ref(key, 0))
        g.add_edge(ref.node, key, feeds=[(ref.index, "0")])
    if layers:
        _wrap_weights(g, layers, bits.pop())
    return g


def weight_nodes(graph: nx.DiGraph, selector: Any) -> list[str]:
    """The node keys `weights=` selects: True, every layer with float kernels; else addresses or globs of them."""
    every = quantizable(graph)
    if selector is True:
        return every
    return select(every, selector, what="weights", owner="the layers with float kernels")
