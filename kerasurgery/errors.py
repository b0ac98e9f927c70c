"""Exception types of kerasurgery.

Every error a user can cause is a subclass of `ValueError`, so code that
already catches `ValueError` around Keras calls keeps working. Messages follow
Keras's own form: what was expected, ``Received: ...``, and a way forward
(usually the closest valid addresses and a pointer to `kerasurgery.points`).
"""

from __future__ import annotations

from collections.abc import Sequence


class KerasurgeryError(ValueError):
    """Base class of every kerasurgery error."""


class ModelError(KerasurgeryError):
    """The model cannot be read as a graph (subclassed, unbuilt, ...)."""


class GraphError(KerasurgeryError):
    """A graph is malformed: a cycle, an unfed argument slot, a missing input
    or output. Raised by `kerasurgery.check_graph` and `kerasurgery.to_model`."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            "Expected a well-formed graph (see `kerasurgery.check_graph`). "
            f"Received: {len(self.problems)} problem(s):\n{lines}"
        )


class AddressError(KerasurgeryError):
    """An address (or glob) does not name a point of the model.

    Attributes:
        address: the address as the user wrote it.
        suggestions: the closest valid addresses, best first.
    """

    def __init__(self, message: str, address: object = None, suggestions: Sequence[str] = ()):
        self.address = address
        self.suggestions = list(suggestions)
        if self.suggestions:
            message += " Closest valid addresses: " + ", ".join(repr(s) for s in self.suggestions) + "."
        message += " List every valid address with `kerasurgery.points(model)`."
        super().__init__(message)


class TransformError(KerasurgeryError):
    """A transform was asked for something it cannot do on this model
    (e.g. splitting a layer that has no fused activation)."""


class DataError(KerasurgeryError):
    """Data given to `collect`, `calibrate` or `compare` does not fit the model."""
