"""`probe_pair`: a training model and a checking model that share every variable."""

from __future__ import annotations

import keras

from kerasurgery.address.selector import Selector
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.resolve import Resolver
from kerasurgery.ir.to_keras import to_model
from kerasurgery.passes.copy import copy_pass
from kerasurgery.passes.expose import expose_pass


def probe_pair(model: keras.Model, points: Selector, *, copy: bool = False) -> tuple[keras.Model, keras.Model]:
    """A training model and a checking model that share every variable.

    ``training`` has the original outputs; ``checking`` returns the points as a
    dict (like `expose`). One ``fit`` step on ``training`` moves ``checking``.
    With ``copy=False`` both also share variables with `model`; with
    ``copy=True`` both are detached from it.

    Args:
        model: a Functional or Sequential model.
        points: addresses or globs for the checking model.
        copy: detach both models from `model`.

    Returns:
        ``(training, checking)``.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> training, checking = ks.probe_pair(model, ["d:pre"], copy=True)
        >>> training.get_layer("d").kernel is checking.get_layer("d_pre").layer.kernel
        True
    """
    graph = graph_for(model, points)
    Resolver(graph).select(points, what="points")  # fail early, before copying
    if copy:
        graph = copy_pass(graph)
    training = to_model(graph, name=model.name)
    checking = to_model(expose_pass(graph, points), name=f"{model.name}_probe")
    return training, checking
