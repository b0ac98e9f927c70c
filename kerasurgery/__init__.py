"""kerasurgery: see inside and rewrite Keras 3 models.

The model is read into a networkx DAG (`to_graph`), rewritten by pure graph
passes, and rebuilt as a new Keras model (`to_model`). Addresses
(``dense_1:pre``, ``encoder/conv@1``, ``mha:scores``) name every point;
`points` lists them.

Example:
    >>> import keras, kerasurgery as ks
    >>> x = keras.Input((4,), name="x")
    >>> model = keras.Model(x, keras.layers.Dense(3, activation="softmax", name="head")(x))
    >>> ks.points(model)
    ['x', 'head:pre', 'head']
"""

from __future__ import annotations

import importlib
from typing import Any

from kerasurgery import layers  # registers the serializable layers
from kerasurgery.address import points
from kerasurgery.callbacks import ActivationRecorder
from kerasurgery.collect import collect
from kerasurgery.compare import compare
from kerasurgery.errors import (
    AddressError,
    DataError,
    GraphError,
    KerasurgeryError,
    ModelError,
    TransformError,
)
from kerasurgery.graph import Ref, Slot, check_graph, to_graph, to_model
from kerasurgery.stats import calibrate
from kerasurgery.transforms import expose, insert_taps, probe_pair, split_activations

__version__ = "0.1.0"

# `plot` is imported on first use: it pulls in matplotlib, an optional extra.
# (Functions whose module has the same name, like `collect` and `compare`, are
# imported eagerly above: importing the submodule later would otherwise rebind
# the package attribute to the module.)
_LAZY = {
    "plot": ("kerasurgery.plot", None),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasurgery' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ActivationRecorder",
    "AddressError",
    "DataError",
    "GraphError",
    "KerasurgeryError",
    "ModelError",
    "Ref",
    "Slot",
    "TransformError",
    "calibrate",
    "check_graph",
    "collect",
    "compare",
    "expose",
    "insert_taps",
    "layers",
    "plot",
    "points",
    "probe_pair",
    "split_activations",
    "to_graph",
    "to_model",
]
