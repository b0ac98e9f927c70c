"""Reading a Keras model into the IR (`to_graph`).

The schema of the result is in `kerasurgery.ir.schema`; the walk over the
model's recorded calls is `kerasurgery.ir.builder`. Nested Functional and
Sequential models (whose ``call`` is Keras's own) are inlined: their nodes
carry the path prefix, and a ``training`` value given to the nested call is
passed down to the inner calls, exactly as Keras does at run time. Layers
whose ``call`` is Python code (custom layers, keras_hub blocks, subclassed
models) can be *opened* by symbolic tracing (``open=``, see
`kerasurgery.ir.opening`). A subclassed model, or a single layer, is read by
tracing its ``call``. Every Keras internal read here goes through
`kerasurgery.keras_internals`.
"""

from __future__ import annotations

import gc
import inspect
import warnings
from typing import Any

import keras
import networkx as nx

from kerasurgery import keras_internals as internals
from kerasurgery.errors import ModelError
from kerasurgery.ir.builder import Builder
from kerasurgery.ir.opening import Opener
from kerasurgery.ir.schema import Ref, map_structure
from kerasurgery.ir.trace import forget_trace_calls


def _functional_of(model: Any) -> Any | None:
    """The Functional graph behind `model`; None for a model or layer to trace; else a ModelError."""
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
    if isinstance(model, keras.layers.Layer):
        return None
    raise ModelError(
        f"Expected a keras.Model (Functional, Sequential or subclassed) or a layer. Received: {model!r} "
        f"of type {type(model).__name__}."
    )


def _input_names(layer: Any, count: int) -> list[str]:
    try:
        params = [p.name for p in inspect.signature(layer.call).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = params[:count] if len(params) >= count and count > 1 else (params[:1] if count == 1 else [])
    return names if len(names) == count else [f"input_{i}" for i in range(count)]


def _symbolic_inputs(layer: Any, inputs: Any) -> tuple[Any, dict[int, dict[int, int]]]:
    """The inputs to trace a subclassed model or a layer with, and sizes it may fall back to.

    Given `inputs` are used as they are. Otherwise the shapes come from the
    build config (the shapes it was first called or built with): the batch
    dimension is left free, and so is every other axis (sequence length,
    image size) that the call can follow; an axis it cannot follow (features
    read by a Dense kernel) is fixed to the built size.
    """
    if inputs is not None:
        flat = keras.tree.flatten(inputs)
        if not flat or not all(isinstance(t, keras.KerasTensor) for t in flat):
            raise ModelError(
                "Expected `inputs` as keras.Input tensors (or a list/dict of them) shaped like the data "
                f"'{layer.name}' takes. Received: {inputs!r}."
            )
        return inputs, {}
    config = layer.get_build_config() if layer.built else None
    shape = (config or {}).get("input_shape")
    if shape is None:
        what = "model" if isinstance(layer, keras.Model) else "layer"
        raise ModelError(
            f"Expected a built {what} or `inputs`. Received: {type(layer).__name__} '{layer.name}', which "
            "has not been built, so its input shapes are unknown. Call it once on data, call "
            f"`{what}.build(input_shape)`, or pass `inputs=keras.Input(shape=...)`."
        )

    def is_shape(s: Any) -> bool:
        return isinstance(s, (list, tuple)) and all(d is None or isinstance(d, int) for d in s)

    if is_shape(shape):
        shapes: Any = tuple(shape)
    elif isinstance(shape, dict):
        shapes = {k: tuple(v) for k, v in shape.items()}
    else:
        shapes = [tuple(s) for s in shape]
    listed = [shapes] if is_shape(shapes) else (list(shapes.values()) if isinstance(shapes, dict) else shapes)
    fallback = {i: {a: d for a, d in enumerate(s) if a > 0 and d is not None} for i, s in enumerate(listed)}
    free = [tuple(None for _ in s) for s in listed]
    if isinstance(shapes, dict):
        return {k: keras.Input(batch_shape=s, name=k) for k, s in zip(shapes, free)}, fallback
    names = _input_names(layer, len(listed))
    if is_shape(shapes):
        return keras.Input(batch_shape=free[0], name=names[0]), fallback
    return [keras.Input(batch_shape=s, name=n) for s, n in zip(free, names)], fallback


def to_graph(model: Any, *, open: Any = None, inputs: Any = None) -> nx.DiGraph:  # noqa: A002
    """Read a Keras model (or layer) into the kerasurgery IR.

    Nested Functional and Sequential models are inlined (their nodes carry the
    path prefix); every call site of a shared layer is its own node. Layers
    whose ``call`` is Python code can be opened by symbolic tracing: their
    inner calls become nodes under the layer's name, weights shared, at every
    input size the model accepts. A subclassed model (or a layer) is read by
    tracing its ``call``. The model is not changed.

    Args:
        model: a Functional model (keras_hub backbones included), a built
            Sequential model, a built subclassed `keras.Model`, or a layer.
        open: which layers to open: None (none; addresses open on demand in
            `expose`, `collect`, ...), True (every layer whose ``call`` is not
            Keras's own, recursively; untraceable ones stay closed and are
            listed in ``graph.graph["closed"]``), or a selector of layers
            (addresses, globs, a list, a predicate).
        inputs: for a subclassed model or a layer: `keras.Input` tensors to
            trace it with (default: from its build config, float32).

    Returns:
        A new `networkx.DiGraph` following `kerasurgery.ir.schema`.

    Raises:
        ModelError: the model is unbuilt or not a model; a layer named in
            `open` cannot be traced (`TraceError`, naming the line and reason).

    Example:
        >>> import keras, kerasurgery as ks
        >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="enc")
        >>> x = keras.Input((4,), name="x")
        >>> g = ks.to_graph(keras.Model(x, inner(x)))
        >>> list(g.nodes), g.graph["aliases"]
        (['x', 'enc/d'], {'enc': [Ref(node='enc/d', index=0)]})
    """
    opener = open if isinstance(open, Opener) else Opener(open)
    fn = _functional_of(model)
    builder = Builder(opener)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # many small objects; the cyclic GC would make large graphs superlinear
    try:
        if fn is None:
            graph_inputs, graph_outputs = _read_traced(model, inputs, builder)
        else:
            for t in internals.flat_inputs(fn):
                builder.add_input(t)
            builder.walk(fn, (), {}, ())
            graph_inputs, graph_outputs = internals.input_structure(fn), internals.output_structure(fn)
        graph = _assemble(model, builder, graph_inputs, graph_outputs)
    finally:
        builder.restore()
        if gc_was_enabled:
            gc.enable()
    if builder.closed and opener.everything:
        listed = "; ".join(f"{k}: {r}" for k, r in list(graph.graph["closed"].items())[:5])
        warnings.warn(f"{len(builder.closed)} layer(s) could not be opened and stay closed: {listed}", stacklevel=2)
    return graph


def _read_traced(layer: Any, inputs: Any, builder: Builder) -> tuple[Any, Any]:
    """Record a subclassed model's (or layer's) call on symbolic inputs, opened at the top."""
    restore = forget_trace_calls(layer)
    try:
        symbolic, fallback = _symbolic_inputs(layer, inputs)
        for t in keras.tree.flatten(symbolic):
            builder.add_input(t)
        outputs = builder.open_top(layer, symbolic, fallback)
    finally:
        restore()
    return symbolic, outputs


def _assemble(model: Any, builder: Builder, graph_inputs: Any, graph_outputs: Any) -> nx.DiGraph:
    keys, aliases, closed = builder.keys()
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

    def ref(t: Any) -> Ref:
        rid, index = builder.tensor_map[id(t)]
        return Ref(keys[rid], index)

    def input_key(t: Any) -> str:
        return keys[builder.tensor_map[id(t)][0]]

    is_leaf = lambda o: isinstance(o, keras.KerasTensor)  # noqa: E731
    graph.graph["inputs"] = map_structure(input_key, graph_inputs, leaf=is_leaf)
    graph.graph["outputs"] = map_structure(ref, graph_outputs, leaf=is_leaf)
    names = list(getattr(model, "output_names", None) or [])
    graph.graph["output_names"] = names if internals.is_functional(model) or isinstance(model, keras.Sequential) else []
    graph.graph["aliases"] = {k: [Ref(keys[rid], i) for rid, i in refs] for k, refs in aliases.items()}
    graph.graph["closed"] = closed
    graph.graph["scores"] = {k: Ref(keys[rid], i) for k, (rid, i) in builder.score_keys.items()}
    return graph


def graph_for(model: Any, *selectors: Any, open: Any = None) -> nx.DiGraph:  # noqa: A002
    """The graph of `model` in which every address of `selectors` exists: opening on demand.

    ``to_graph(model, open=open)``, and the layers on the paths of the
    string addresses (and globs) in `selectors` opened as well:
    ``transformer_layer_0/self_attention_layer:scores`` opens
    ``transformer_layer_0``. A graph is returned as it is.

    Example:
        >>> import keras, kerasurgery as ks
        >>> from kerasurgery.ir.from_keras import graph_for
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> list(graph_for(model, ["d:pre"]).nodes)
        ['x', 'd']
    """
    if isinstance(model, nx.DiGraph):
        return model
    paths: list[str] = []
    for selector in selectors:
        if selector is None or (callable(selector) and not isinstance(selector, str)):
            continue
        try:
            given = [selector] if isinstance(selector, str) else list(selector)
        except TypeError:  # not a selector at all: resolving it later says so
            continue
        paths.extend(i for i in given if isinstance(i, str) and ("/" in i or i.endswith(":scores")))
    if not paths and open in (None, False):
        return to_graph(model)
    return to_graph(model, open=Opener(open, paths_of=paths))


def as_graph(model_or_graph: Any) -> nx.DiGraph:
    """`model_or_graph` itself if it is a graph, else `to_graph(model_or_graph)`."""
    if isinstance(model_or_graph, nx.DiGraph):
        return model_or_graph
    return to_graph(model_or_graph)
