"""Independent copies of operations, carrying all of their state.

A copy must compute what the original computes: not only its weights
(``get_weights()``) but every piece of state Keras would save, such as the
adapted statistics of a ``Normalization`` layer (finalised after loading) and
the vocabulary of a ``StringLookup`` (an asset, not a weight). `copy_state`
therefore copies state the way `.keras` saving does, layer by layer: each
layer's ``save_own_variables`` into ``load_own_variables`` and, where a layer
has them, ``save_assets`` into ``load_assets``. Saving does not carry all
of it: a LoRA layer saves its kernel with the LoRA update merged in (and
loading zeroes both LoRA factors, so a copy could no longer train them), and
random seed states are not saved at all. Where a layer saves fewer values
than it has variables, every variable of the copy is therefore also given the
value of the original's variable of the same name, after loading.
"""

from __future__ import annotations

import contextlib
import gc
import tempfile
from typing import Any

import keras
import numpy as np

from kerasurgery import keras_internals as internals
from kerasurgery.errors import TransformError


def clone_op(op: Any, config_changes: dict | None = None) -> tuple[Any, bool]:
    """An independent copy of `op` with the same state.

    Layers are rebuilt from their config (with `config_changes` applied),
    built from their build config and given the original's state. Raw ops hold
    no variables and are returned as they are.

    Args:
        op: a layer, model or raw operation.
        config_changes: config entries to override in the copy.

    Returns:
        ``(clone, pending)``. ``pending`` is True when the copy cannot be built
        before its first call: the node that calls it then needs
        ``state_from=op`` so that `kerasurgery.to_model` copies the state once
        it is built.
    """
    if not isinstance(op, keras.layers.Layer):
        return op, False
    if isinstance(op, keras.Model) and not config_changes:
        clone = keras.models.clone_model(op)
        copy_state(op, clone)
        return clone, False
    config = op.get_config()
    config.update(config_changes or {})
    clone = type(op).from_config(config)
    if op.built:
        build_config = op.get_build_config()
        if build_config:
            with _zero_initializers(clone):
                clone.build_from_config(build_config)
    if not clone.built and op.weights:
        return clone, True
    copy_state(op, clone)
    return clone, False


@contextlib.contextmanager
def _zero_initializers(layer: Any):
    """Build with zeros initializers: the values are overwritten right after.

    Random initialisers are half the cost of copying a large model. Only the
    layer's own ``*_initializer`` attributes are swapped (its config reads
    them, so they are restored right after the build).
    """
    zeros = keras.initializers.Zeros()
    saved = {
        k: v for k, v in vars(layer).items()
        if k.endswith("_initializer") and isinstance(v, keras.initializers.Initializer)
    }
    for k in saved:
        object.__setattr__(layer, k, zeros)
    try:
        yield
    finally:
        for k, v in saved.items():
            object.__setattr__(layer, k, v)


def _tree(layer: Any) -> list:
    return [layer] + (internals.all_layers(layer) if hasattr(layer, "_flatten_layers") else [])


def copy_state(src: Any, dst: Any) -> None:
    """Give `dst` (a copy of `src` with the same config) all of `src`'s state.

    Layer by layer (`src` and the layers inside it), as `.keras` saving does:
    variables through ``save_own_variables``/``load_own_variables`` (which
    also finalises adapted preprocessing layers) and assets (lookup
    vocabularies) through ``save_assets``/``load_assets``. Where a layer saved
    fewer values than it has variables (LoRA factors merged into the kernel,
    seed states), each of its own variables then takes the value of the
    original's variable of the same name. Values are copied,
    never shared: on JAX, sharing one buffer would let the copy's jitted
    steps (which donate their state) delete the original's weights.

    Raises:
        TransformError: the copy's structure differs from the original's.
    """
    sources, targets = _tree(src), _tree(dst)
    if len(sources) != len(targets) or len(src.weights) != len(dst.weights):
        raise TransformError(
            f"Expected the copy of '{src.name}' to have the structure of the original "
            f"({len(sources)} layers, {len(src.weights)} weights). Received: {len(targets)} layers, "
            f"{len(dst.weights)} weights."
        )
    for s, d in zip(sources, targets):
        store: dict[str, Any] = {}
        s.save_own_variables(store)
        store = {k: np.array(keras.ops.convert_to_numpy(v)) for k, v in store.items()}
        if store:
            d.load_own_variables(store)
        if callable(getattr(s, "save_assets", None)) and callable(getattr(d, "load_assets", None)):
            with tempfile.TemporaryDirectory(prefix="kerasurgery-assets-") as folder:
                s.save_assets(folder)
                d.load_assets(folder)
        own = _own_variables(s)
        if len(store) < len(own):  # saving dropped or merged some of them
            _assign_by_name(own, _own_variables(d))


def _own_variables(layer: Any) -> list:
    """`layer`'s own variables (seed states included), not its sublayers'."""
    inner = {id(v) for sub in _tree(layer)[1:] for v in sub.variables}
    return [v for v in layer.variables if id(v) not in inner]


def _by_name(variables: list) -> dict[str, Any]:
    names = [v.name for v in variables]
    return {v.name: v for v in variables if names.count(v.name) == 1}


def _assign_by_name(src: list, dst: list) -> None:
    """Each variable of `dst` takes the value of the `src` variable of the same (unique) name and shape."""
    sources = _by_name(src)
    for name, variable in _by_name(dst).items():
        source = sources.get(name)
        if source is not None and tuple(source.shape) == tuple(variable.shape) and source.dtype == variable.dtype:
            variable.assign(np.array(keras.ops.convert_to_numpy(source)))


def rebuild(op: Any, config_changes: dict, input_shape: Any, weights: list) -> Any:
    """A new layer like `op` with a changed config, built for `input_shape` and given `weights`.

    For rewrites that change a layer's shapes (fewer units, a folded bias):
    the copy is made from ``op``'s config with `config_changes`, built with
    zeros initializers (its config keeps the original initializers) and
    given `weights` in the order of its ``weights``.

    Raises:
        TransformError: the weights do not fit the rebuilt layer.
    """
    config = op.get_config()
    config.update(config_changes)
    layer = type(op).from_config(config)
    with _zero_initializers(layer):
        layer.build(input_shape)
    shapes = [tuple(v.shape) for v in layer.weights]
    given = [tuple(np.shape(w)) for w in weights]
    if shapes != given:
        raise TransformError(
            f"Expected weights of shapes {shapes} for the rebuilt '{op.name}'. Received: {given}."
        )
    layer.set_weights([np.asarray(w) for w in weights])
    return layer


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector paused: passes that create many layers stay linear.

    Every new layer and variable is a handful of objects; with the collector
    running, its full passes over everything the process holds make copying
    a large model superlinear (as in `kerasurgery.to_model`).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
