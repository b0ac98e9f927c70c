"""kerasurgery: see inside and rewrite Keras 3 models.

The model is read into a networkx DAG (`to_graph`), rewritten by pure graph
passes, and rebuilt as a new Keras model (`to_model`). Addresses
(``dense_1:pre``, ``encoder/conv@1``, ``mha:scores``) name every point;
`points` lists them.
"""

from __future__ import annotations

from kerasurgery.address import points
from kerasurgery.errors import (
    AddressError,
    DataError,
    GraphError,
    KerasurgeryError,
    ModelError,
    TransformError,
)
from kerasurgery.graph import Ref, Slot, check_graph, to_graph, to_model
from kerasurgery import layers
from kerasurgery.transforms import expose, insert_taps, probe_pair, split_activations

__version__ = "0.1.0"

__all__ = [
    "AddressError",
    "DataError",
    "GraphError",
    "KerasurgeryError",
    "ModelError",
    "Ref",
    "Slot",
    "TransformError",
    "check_graph",
    "expose",
    "insert_taps",
    "layers",
    "probe_pair",
    "split_activations",
    "points",
    "to_graph",
    "to_model",
]
