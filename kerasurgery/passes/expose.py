"""`expose`: a probe model whose outputs are the requested points, sharing weights."""

from __future__ import annotations

import keras
import networkx as nx

from kerasurgery.address.selector import Selector
from kerasurgery.errors import TransformError
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.names import Names
from kerasurgery.ir.resolve import Resolver
from kerasurgery.ir.schema import Ref, copy_graph
from kerasurgery.ir.to_keras import to_model
from kerasurgery.passes.point_values import PointValues, output_names, tensor_of


def expose_pass(graph: nx.DiGraph, points: Selector, *, keep_outputs: bool = False) -> nx.DiGraph:
    """Graph pass of `expose`: outputs become ``{address: Ref}`` for `points`.

    Changes: ``:pre`` of fused layers splits that call site (and every other
    call of the same layer) into a `PreActivation` (sharing the layer) and an
    `Activation`; ``:scores`` routes every call of that attention layer
    through `AttentionScores`; outputs are replaced.
    """
    selected = Resolver(graph).select(points, what="points")
    g = copy_graph(graph)
    splitter = PointValues(g, Names(g))
    outputs: dict[str, Ref] = output_names(g) if keep_outputs else {}
    own = dict(outputs)
    for address, point in selected.items():
        ref = tensor_of(g, point, splitter)
        if address in own and own[address] != ref:
            raise TransformError(
                f"Expected exposed addresses to differ from the model's output names. Received: "
                f"{address!r}, which is both; call expose without keep_outputs or rename the output."
            )
        outputs[address] = ref
    g.graph["outputs"] = outputs
    g.graph["output_names"] = list(outputs)
    return g


def expose(model: keras.Model, points: Selector, *, keep_outputs: bool = False) -> keras.Model:
    """A probe model whose outputs are the given points, sharing `model`'s weights.

    The probe takes the same inputs as `model` and returns a dict
    ``{address: tensor}`` keyed by the addresses as given (globs expand to the
    matching addresses). It calls the original layer objects, so it shares
    every variable: training `model` moves the probe. ``:pre`` of a fused layer
    is computed from that layer's own variables, and the layer's output is
    then the activation of that value (nothing is computed twice). Only the
    part of the graph the points need is computed.

    Args:
        model: a Functional or Sequential model.
        points: an address, glob, list of them, or a predicate over addresses
            (see `points`).
        keep_outputs: also return the model's own outputs, under their output
            names.

    Returns:
        A functional `keras.Model` with dict outputs.

    Raises:
        AddressError: an unknown address, an empty selection, a glob that
            matches nothing, or a port the node does not have.

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> y = keras.layers.Dense(3, activation="softmax", name="head")(x)
        >>> model = keras.Model(x, y)
        >>> probe = ks.expose(model, ["head:pre"])
        >>> logits = probe.predict(np.ones((2, 4)), verbose=0)["head:pre"]
        >>> logits.shape
        (2, 3)
    """
    graph = expose_pass(graph_for(model, points), points, keep_outputs=keep_outputs)
    return to_model(graph, name=f"{model.name}_probe")
