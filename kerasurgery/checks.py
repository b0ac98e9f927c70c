"""Argument checks shared by every public function.

Each raises `kerasurgery.errors.DataError` (a `ValueError`) in the house form:
what was expected, ``Received: name=value``, and the fix.

Example:
    >>> from kerasurgery.checks import positive_int
    >>> positive_int(8, "batch_size")
    8
    >>> positive_int(0, "batch_size")
    Traceback (most recent call last):
    ...
    kerasurgery.errors.DataError: Expected `batch_size` to be an integer >= 1. Received: batch_size=0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasurgery.errors import DataError


def is_int(value: Any) -> bool:
    """Whether `value` is an integer (numpy integers included, bools excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None,
                 hint: str = "") -> int:
    """`value` as an int if it is an integer in ``[minimum, maximum]``, else a `DataError`."""
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise DataError(f"Expected `{name}` to be an integer {bound}. Received: {name}={value!r}.{hint}")
    return int(value)


def optional_positive_int(value: Any, name: str, *, minimum: int = 1, meaning: str = "") -> int | None:
    """None, or `value` checked by `positive_int`; `meaning` says what None means."""
    if value is None:
        return None
    hint = f" Pass None for {meaning}." if meaning else ""
    return positive_int(value, name, minimum=minimum, hint=hint)


def boolean(value: Any, name: str) -> bool:
    """`value` if it is True or False, else a `DataError`."""
    if not isinstance(value, (bool, np.bool_)):
        raise DataError(f"Expected `{name}` to be True or False. Received: {name}={value!r}.")
    return bool(value)
