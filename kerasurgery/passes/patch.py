"""`patch`: the model with the value at some points replaced (activation patching, ablation, steering).

What each point may be patched with is in `kerasurgery.passes.patch_specs`.
A patch is a layer of `kerasurgery.layers.interventions` called on the
point's value (so it knows the batch size, shape and dtype), whose output
every consumer of the value reads instead; ``"input"`` makes the value a new
model input. ``:scores`` of an attention layer is a value only once the
layer is opened (its softmax then feeds the value product): `patch` opens
it, as `expose` opens the layers on an address's path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import networkx as nx

from kerasurgery.errors import TransformError
from kerasurgery.ir.edits import add_call, new_key
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.names import Names
from kerasurgery.ir.resolve import Point, Resolver
from kerasurgery.ir.schema import Ref, copy_graph
from kerasurgery.layers import AblateUnits, AddVector, BatchMean, SetValue, ZeroValue
from kerasurgery.passes.patch_specs import Patch, patch_name, read_patch
from kerasurgery.passes.point_values import PointValues
from kerasurgery.passes.rewiring import build, move_consumers, scores_to_open, spec_of, value_ref

_LAYERS = {"set": SetValue, "add": AddVector, "ablate": AblateUnits}


def _checked(patches: Any) -> Mapping:
    if not isinstance(patches, Mapping) or not patches:
        raise TransformError(
            "Expected `patches` as a dict {point: patch}, e.g. {'dense_1': 'zero'}. Received: "
            f"{type(patches).__name__} {patches!r:.80}."
        )
    return patches


def _selected(graph: nx.DiGraph, patches: Mapping) -> list[tuple[str, Point, Any]]:
    """``(address, point, spec)`` for every point the keys select (globs expand), each once."""
    resolver = Resolver(graph)
    found: dict[Point, str] = {}
    out = []
    for key, spec in patches.items():
        for address, point in resolver.select(key, what="points").items():
            if point in found:
                raise TransformError(
                    f"Expected each point patched once. Received: {address!r} (from {key!r}), which is "
                    f"{found[point]!r} again."
                )
            found[point] = address
            out.append((address, point, spec))
    return out


def _add_input(g: nx.DiGraph, names: Names, address: str, shape: tuple, dtype: str) -> Ref:
    """A new model input for the value at `address`; returns its output."""
    if shape is None:
        raise TransformError(f"Expected a point of known shape to make an input of. Received: {address!r}.")
    name = names.make(patch_name(address, "input"))
    op = keras.layers.InputLayer(batch_shape=tuple(shape), dtype=dtype, name=name)
    g.add_node(name, op=op, kind="input", class_name="InputLayer", name=name, path=(), call=0, args=(), kwargs={},
               output_shapes=[tuple(shape)], output_dtypes=[dtype], activation=None, order=-1)
    inputs = g.graph["inputs"]
    if isinstance(inputs, dict):
        g.graph["inputs"] = {**inputs, name: name}
    elif isinstance(inputs, (list, tuple)):
        g.graph["inputs"] = [*inputs, name]
    else:
        g.graph["inputs"] = [inputs, name]
    return Ref(name, 0)


def _patch_layer(patch: Patch, name: str) -> keras.layers.Layer:
    if patch.kind in _LAYERS:
        return _LAYERS[patch.kind].holding(patch.value, name=name)
    return ZeroValue(name=name) if patch.kind == "zero" else BatchMean(name=name)


def patch_pass(graph: nx.DiGraph, patches: Mapping) -> nx.DiGraph:
    """Graph pass of `patch`: each point's consumers read the patch instead of the value.

    Changes: per point, a node calling the patch layer on the value (named
    ``<point>_<kind>``, see `kerasurgery.passes.patch_specs.patch_name`) or,
    for ``"input"``, a new input node of that name added to the graph's
    inputs (a dict gains a key; a list, or a single input, gains an item at
    the end); every consumer of the value (edges, model outputs, aliases)
    reads it. ``:pre`` of an activation layer patches only that layer's input.

    Raises:
        AddressError: an unknown address or a glob that matches nothing.
        TransformError: a patch that is not one, an array that does not fit
            the point, ``:scores`` of a closed attention layer, a point
            patched twice.
    """
    selected = _selected(graph, _checked(patches))
    g = copy_graph(graph)
    names = Names(g)
    splitter = PointValues(g, names)
    for address, point, spec in selected:
        ref = value_ref(g, address, point, splitter)
        shape, dtype = spec_of(g, ref)
        patch = read_patch(spec, address, shape)
        if patch.kind == "input":
            move_consumers(g, point, ref, _add_input(g, names, address, shape, dtype))
            continue
        layer = _patch_layer(patch, names.make(patch_name(address, patch.kind)))
        path = tuple(g.nodes[ref.node].get("path", ()))
        key = new_key(g, path, layer.name)
        add_call(g, key, layer, [], path=path, output_shapes=[shape], output_dtypes=[dtype],
                 order=g.nodes[ref.node].get("order", 0) + 0.25)
        move_consumers(g, point, ref, Ref(key, 0))
        g.add_edge(ref.node, key, feeds=[(ref.index, "0")])
    return g


def patch(model: keras.Model, patches: Mapping) -> keras.Model:
    """A model computing what `model` computes, except that the value at each point is replaced.

    `patches` maps points (addresses or globs, see `points`) to what their
    value becomes:

    - an array: that value for every sample (the point's per-sample shape);
    - ``"zero"``: zeros; ``"mean"``: the mean over the batch, at run time;
    - ``("mean", calibration)``: the mean from `kerasurgery.calibrate`
      (per tensor, or per channel with ``per_channel=True``);
    - ``("add", vector)``: the value plus `vector` (steering; any shape that
      broadcasts to the per-sample shape, e.g. one value per channel);
    - ``("ablate", mask)``: the units where the boolean `mask` is True set to
      zero (``(heads, 1, 1)`` ablates heads of ``:scores``);
    - ``"input"``: a new model input named after the point
      (``dense_1:pre`` -> ``dense_1_pre_input``), so that a value cached from one
      run can be fed into another (activation patching). A model with dict
      inputs gains that key; otherwise the inputs become a list, the new
      ones last.

    ``:pre`` of an activation layer patches only that layer's input.
    ``:scores`` opens the attention layer (a built-in MultiHeadAttention
    too), so the patched weights are the ones multiplied with the values.
    The result shares every variable with `model` and saves to `.keras`
    (its patch layers, `kerasurgery.layers.SetValue` and the others, store
    their arrays as non-trainable weights).

    Args:
        model: a Functional, Sequential or subclassed model.
        patches: ``{point: patch}``.

    Returns:
        A new functional `keras.Model` with the original outputs and output names.

    Raises:
        AddressError: an unknown address (with the closest valid ones).
        TransformError: a patch that is not one, an array of the wrong shape,
            a point patched twice.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((2,), name="x")
        >>> h = keras.layers.Dense(2, name="h")(x)
        >>> model = keras.Model(x, keras.layers.Dense(1, name="y")(h))
        >>> zeroed = ks.patch(model, {"h": "zero"})
        >>> y = model.get_layer("y")
        >>> bool(np.allclose(zeroed(np.ones((1, 2))), y.bias.numpy()))
        True
        >>> fed = ks.patch(model, {"h": "input"})
        >>> [t.name for t in fed.inputs]
        ['x', 'h_input']
    """
    keys = list(_checked(patches))
    graph = patch_pass(graph_for(model, keys, open=scores_to_open(keys)), patches)
    return build(graph, model.name, f"patching {keys}")
