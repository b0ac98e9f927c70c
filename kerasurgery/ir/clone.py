"""Independent copies of operations, carrying all of their state.

A copy must compute what the original computes: not only its weights
(``get_weights()``) but every piece of state Keras would save, such as the
adapted statistics of a ``Normalization`` layer (finalised after loading) and
the vocabulary of a ``StringLookup`` (an asset, not a weight). `copy_state`
therefore copies state the way `.keras` saving does, layer by layer: each
layer's ``save_own_variables`` into ``load_own_variables`` and, where a layer
has them, ``save_assets`` into ``load_assets``.
"""

from __future__ import annotations

import contextlib
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
    vocabularies) through ``save_assets``/``load_assets``. Values are copied,
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
