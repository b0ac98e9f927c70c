"""Selectors: the one way every argument that picks points is read.

A *selector* is an address, a glob, a list of them, or a predicate over
addresses. ``points=``, ``pattern=``, ``layers=``, ``highlight=`` and
``plot.histograms(points=)`` all go through `select`, so they accept the same
things and fail with the same errors:

- an exact address keeps the spelling the caller gave;
- a glob (``*``, ``?``, ``[``) expands to the matching candidates, in the
  candidates' order; a glob without ``:`` matches only plain outputs (no
  port), ``"*:pre"`` matches every ``:pre`` (`glob_matches`);
- a predicate keeps the candidates it accepts.

Nothing here knows about graphs: the candidates are strings, and an optional
`exact` callback resolves spellings that are valid without being listed (such
as ``dense@0`` for a layer called once).

Example:
    >>> from kerasurgery.address.selector import select
    >>> select(["x", "d:pre", "d", "out"], "d*")
    ['d']
    >>> select(["x", "d:pre", "d", "out"], ["*:pre", "out"])
    ['d:pre', 'out']
    >>> select(["x", "d:pre", "d", "out"], lambda a: a.startswith("o"))
    ['out']
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

from kerasurgery.address.grammar import is_glob, parse
from kerasurgery.errors import AddressError

#: What every argument that picks points accepts.
Selector = Union[str, Iterable[str], Callable[[str], bool]]


def glob_matches(pattern: str, address: str) -> bool:
    """Whether `address` matches the glob `pattern`.

    A pattern without ``:`` matches only addresses without a port, so
    ``"dense*"`` selects layer outputs and ``"dense*:pre"`` their
    pre-activations.

    Example:
        >>> glob_matches("d*", "d:pre"), glob_matches("d*:pre", "d:pre"), glob_matches("d*", "dense")
        (False, True, True)
    """
    if ":" not in pattern and ":" in address:
        return False
    return fnmatch.fnmatchcase(address, pattern)


def close_matches(text: str, candidates: Sequence[str], n: int = 5) -> list[str]:
    """The candidates closest to `text`, best first (for error messages).

    Example:
        >>> close_matches("dense_l", ["dense_1", "conv"])
        ['dense_1']
    """
    found = difflib.get_close_matches(str(text), list(candidates), n=n, cutoff=0.6)
    if found:
        return found
    try:
        base = parse(str(text)).name
    except AddressError:
        base = str(text)
    base = base.replace("*", "").replace("?", "")
    return [c for c in candidates if base and base in c][:n]


def items(selector: Any, what: str = "points") -> list[str] | Callable[[str], bool]:
    """A selector as a list of strings, or as the predicate it is.

    Raises:
        AddressError: not a string, an iterable of strings or a callable; or
            an empty list.
    """
    if callable(selector) and not isinstance(selector, str):
        return selector
    if isinstance(selector, str):
        return [selector]
    try:
        found = list(selector)
    except TypeError:
        raise AddressError(
            f"Expected `{what}` as an address string, a glob, a list of them, or a predicate. "
            f"Received: {selector!r} of type {type(selector).__name__}.",
            address=selector,
        ) from None
    if not found:
        raise AddressError(f"Expected at least one address in `{what}`. Received: an empty list.", address=selector)
    for item in found:
        if not isinstance(item, str):
            raise AddressError(
                f"Expected every item of `{what}` to be an address string or a glob. Received: {item!r} "
                f"of type {type(item).__name__}.",
                address=item,
            )
    return found


def select(
    candidates: Sequence[str],
    selector: Any,
    *,
    what: str = "points",
    exact: Callable[[str], str] | None = None,
    owner: str = "the model",
) -> list[str]:
    """The addresses `selector` picks among `candidates`, without repeats.

    Args:
        candidates: every valid address, in the order results should follow
            (for a model: `kerasurgery.points`).
        selector: an address, a glob, a list of them, or a predicate.
        what: the argument's name, for error messages (``"points"``).
        exact: resolves one address that need not be listed (returns it, or
            raises `AddressError`); default: membership in `candidates`.
        owner: what the candidates belong to, for error messages.

    Returns:
        The chosen addresses: exact ones as spelled, globs expanded.

    Raises:
        AddressError: an unknown address, a glob or predicate that selects
            nothing, an empty list, or a selector of the wrong type. The
            message lists the closest valid addresses.
    """
    chosen = items(selector, what)
    if callable(chosen):
        found = [c for c in candidates if chosen(c)]
        if not found:
            raise AddressError(
                f"Expected the predicate given as `{what}` to accept at least one point of {owner}. "
                f"Received: {selector!r}, which accepted none.",
                address=selector,
            )
        return found
    listed = set(candidates)
    result: dict[str, None] = {}
    for item in chosen:
        if item in listed:
            result.setdefault(item)
            continue
        if is_glob(item):
            matched = [c for c in candidates if glob_matches(item, c)]
            if not matched:
                raise AddressError(
                    f"Expected the pattern {item!r} in `{what}` to match at least one point of {owner}. "
                    "Received: a pattern that matches none (a pattern without ':' skips ':pre' and "
                    "':scores' points; add ':pre' to match those).",
                    address=item,
                    suggestions=close_matches(item, candidates),
                )
            for m in matched:
                result.setdefault(m)
            continue
        if exact is None:
            raise AddressError(
                f"Expected `{what}` to name points of {owner}. Received: {item!r}, which names none.",
                address=item,
                suggestions=close_matches(item, candidates),
            )
        result.setdefault(exact(item))
    return list(result)
