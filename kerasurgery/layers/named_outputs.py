"""`OutputNamedModel`: a functional model whose output names are given, not derived.

Keras names the outputs of a functional model (``model.output_names``, the
keys of ``compile(loss={...})``) after the layers that produce them. A rewrite
that puts a new layer at an output (a split activation, a tap) would
therefore rename the output. `kerasurgery.to_model` builds this subclass
instead of a plain functional model when the graph's ``output_names`` differ
from the producing layers' names, and it keeps the names in its config, so
they survive a `.keras` round trip. It computes exactly what a plain
functional model computes.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasurgery import keras_internals as internals


@keras.saving.register_keras_serializable(package="kerasurgery")
class OutputNamedModel(internals.functional_class()):  # type: ignore[misc]
    """A functional model with explicit output names.

    Args:
        *args, **kwargs: as for ``keras.Model(inputs, outputs, ...)``.
        output_names: one name per (flattened) output.

    Example:
        >>> import keras
        >>> from kerasurgery.layers.named_outputs import OutputNamedModel
        >>> x = keras.Input((2,), name="x")
        >>> model = OutputNamedModel(x, keras.layers.Dense(1, name="d")(x), output_names=["score"])
        >>> model.output_names
        ['score']
    """

    def __init__(self, *args: Any, output_names: list[str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if output_names is not None:
            if len(output_names) != len(self.outputs):
                raise ValueError(
                    f"Expected one output name per output ({len(self.outputs)}). "
                    f"Received: output_names={output_names!r}."
                )
            self.output_names = [str(n) for n in output_names]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["output_names"] = list(self.output_names)
        return config
