"""`LayerWrapper`: the base of project layers that call another layer object."""

from __future__ import annotations

from typing import Any

import keras

from kerasurgery.errors import TransformError
from kerasurgery.layers.kinds import float_policy


class LayerWrapper(keras.layers.Layer):
    """A layer that calls another layer object (shared, not copied).

    Subclasses say which layers they accept with `accepts` and `expected`.
    """

    expected = ""

    @staticmethod
    def accepts(layer: Any) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def __init__(self, layer: keras.layers.Layer, **kwargs):
        if not self.accepts(layer):
            raise TransformError(f"Expected {self.expected}. Received: {layer!r}.")
        if getattr(layer, "dtype_policy", None) is not None:  # raw operations have none
            kwargs.setdefault("dtype", float_policy(layer))
        super().__init__(**kwargs)
        self.layer = layer

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layer"] = keras.saving.serialize_keras_object(self.layer)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        return cls(layer, **config)
