"""The address grammar: the one place where point names are parsed and formatted.

Grammar::

    address := [path "/"] name ["@" call] ["[" index "]"] [":" port]

- ``name``: the layer's (or raw op's, or InputLayer's) name.
- ``path``: the names of the enclosing nested models, outermost first
  (``encoder/dense_1``).
- ``@call``: the 0-based call site of a layer called more than once
  (``shared@1``); required then, accepted as ``@0`` for a single call.
- ``[index]``: which output of a call that returns several tensors (``lstm[1]``).
- ``:port``: ``pre`` (the value before a fused activation, or the input of an
  activation layer) or ``scores`` (attention weights of an attention call).

Selection (globs, lists, predicates) is in `kerasurgery.address.selector`;
resolving an address against a model's graph is in `kerasurgery.ir.resolve`.

Example:
    >>> from kerasurgery.address.grammar import parse, format_address
    >>> a = parse("encoder/shared@1[0]:pre")
    >>> a.path, a.name, a.call, a.index, a.port
    (('encoder',), 'shared', 1, 0, 'pre')
    >>> format_address(a)
    'encoder/shared@1[0]:pre'
"""

from __future__ import annotations

import dataclasses
import re

from kerasurgery.errors import AddressError

PORTS = ("pre", "scores")

_LAST = re.compile(
    r"^(?P<name>.+?)"
    r"(?:@(?P<call>\d+))?"
    r"(?:\[(?P<index>\d+)\])?"
    r"(?::(?P<port>[A-Za-z_][A-Za-z0-9_]*))?$"
)
_GLOB_CHARS = "*?["


@dataclasses.dataclass(frozen=True)
class Address:
    """A parsed address. `format_address` turns it back into text."""

    name: str
    path: tuple[str, ...] = ()
    call: int | None = None
    index: int | None = None
    port: str | None = None

    def __str__(self) -> str:
        return format_address(self)


def parse(text: str) -> Address:
    """Parse an address string into an `Address`.

    Raises:
        AddressError: `text` is not a string or does not follow the grammar.
    """
    if not isinstance(text, str):
        raise AddressError(
            f"Expected an address string such as 'dense_1' or 'dense_1:pre'. Received: {text!r} "
            f"of type {type(text).__name__}.",
            address=text,
        )
    parts = text.split("/")
    if not text or any(not p for p in parts):
        raise AddressError(
            "Expected an address of the form [path/]name[@call][[index]][:port]. "
            f"Received: {text!r}, which has an empty part.",
            address=text,
        )
    match = _LAST.match(parts[-1])
    if match is None:  # pragma: no cover - the regex accepts any non-empty string
        raise AddressError(f"Could not parse address. Received: {text!r}.", address=text)
    return Address(
        name=match["name"],
        path=tuple(parts[:-1]),
        call=None if match["call"] is None else int(match["call"]),
        index=None if match["index"] is None else int(match["index"]),
        port=match["port"],
    )


def format_address(address: Address) -> str:
    """Format an `Address` as text; the inverse of `parse`."""
    text = "/".join((*address.path, address.name))
    if address.call is not None:
        text += f"@{address.call}"
    if address.index is not None:
        text += f"[{address.index}]"
    if address.port is not None:
        text += f":{address.port}"
    return text


def node_key(path: tuple[str, ...], name: str, call: int | None) -> str:
    """The graph key of a call site: its address without index or port."""
    return format_address(Address(name=name, path=tuple(path), call=call))


def point_address(key: str, index: int | None = None, port: str | None = None) -> str:
    """The address of output `index` (and `port`) of the node keyed `key`."""
    base = parse(key)
    return format_address(dataclasses.replace(base, index=index, port=port))


def tap_name(address: str) -> str:
    """The layer name of the tap for `address` (``base/conv:pre`` -> ``base.conv_pre_tap``)."""
    a = parse(address)
    parts = [".".join((*a.path, a.name))]
    parts += [str(v) for v in (a.call, a.index, a.port) if v is not None]
    return "_".join(parts) + "_tap"


def is_glob(text: str) -> bool:
    """Whether `text` contains fnmatch wildcard characters."""
    return any(c in text for c in _GLOB_CHARS)


