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

A name (or path segment) that contains a character of the grammar
(``/ : @ [ ] * ?`` or a backtick) is written between backticks, a backtick
inside it doubled: a layer named ``blk:conv`` has the address
```` `blk:conv` ```` and its pre-activation ```` `blk:conv`:pre ````.
`format_address` quotes where needed, so every address `points` lists parses
back to the same point.

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

_SPECIAL = set("/:@[]*?`")
_NAME = r"[^/:@\[\]`]+"
_SUFFIX = re.compile(r"^(?:@(?P<call>\d+))?(?:\[(?P<index>\d+)\])?(?::(?P<port>[A-Za-z_][A-Za-z0-9_]*))?$")
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


def quote(name: str) -> str:
    """`name` as written in an address: backtick-quoted if it holds a grammar character.

    Example:
        >>> quote("dense_1"), quote("blk:conv"), quote("a`b")
        ('dense_1', '`blk:conv`', '`a``b`')
    """
    if name and not (set(name) & _SPECIAL):
        return name
    return "`" + name.replace("`", "``") + "`"


def _segments(text: str) -> list[tuple[str, str]]:
    """Split an address on ``/`` outside backticks: ``[(name, rest), ...]``.

    `name` is unquoted; `rest` is what follows a quoted name in its segment
    (``@1[0]:pre``), or, for an unquoted segment, the whole segment.
    """
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == "`":
            name, i = [], i + 1
            while True:
                if i >= n:
                    raise AddressError(
                        f"Expected a closing backtick in address {text!r}. Received: an unclosed quote.",
                        address=text,
                    )
                if text[i] == "`":
                    if i + 1 < n and text[i + 1] == "`":
                        name.append("`")
                        i += 2
                        continue
                    i += 1
                    break
                name.append(text[i])
                i += 1
            end = text.find("/", i)
            end = n if end < 0 else end
            out.append(("`" + "".join(name), text[i:end]))
        else:
            end = text.find("/", i)
            end = n if end < 0 else end
            out.append(("", text[i:end]))
        if end >= n:
            return out
        i = end + 1


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
    form = "[path/]name[@call][[index]][:port] (names with grammar characters in backticks)"
    segments = _segments(text) if text else [("", "")]
    names: list[str] = []
    match: re.Match[str] | None = None
    for k, (quoted, rest) in enumerate(segments):
        last = k == len(segments) - 1
        if quoted:
            name, suffix = quoted[1:], rest
        else:
            match = re.match(_NAME, rest)
            name, suffix = (match.group(0), rest[match.end():]) if match else ("", rest)
        if not name or (suffix and not last):
            raise AddressError(
                f"Expected an address of the form {form}. Received: {text!r}, "
                + ("which has an empty part." if not name else f"whose path part {rest!r} is not a name."),
                address=text,
            )
        names.append(name)
        if last:
            match = _SUFFIX.match(suffix)
            if match is None:
                raise AddressError(
                    f"Expected an address of the form {form}. Received: {text!r}: {suffix!r} after the "
                    f"name {name!r} is not '@call', '[index]' or ':port'. A name that contains one of "
                    "/:@[]*? is written in backticks, e.g. `blk:conv`:pre.",
                    address=text,
                )
    if match is None:  # pragma: no cover - the loop above always reads the last segment
        raise AddressError(f"Expected an address. Received: {text!r}.", address=text)
    return Address(
        name=names[-1],
        path=tuple(names[:-1]),
        call=None if match["call"] is None else int(match["call"]),
        index=None if match["index"] is None else int(match["index"]),
        port=match["port"],
    )


def format_address(address: Address) -> str:
    """Format an `Address` as text; the inverse of `parse` (names quoted where needed)."""
    text = "/".join(quote(n) for n in (*address.path, address.name))
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
    parts = [".".join((*a.path, a.name))]  # Keras names may hold any character but "/"
    parts += [str(v) for v in (a.call, a.index, a.port) if v is not None]
    return "_".join(parts) + "_tap"


def path_names(text: str) -> list[str]:
    """The names along an address or glob: its path, then its name without ``@call``, ``[index]`` or ``:port``.

    Tolerant of glob characters (``transformer_layer_*/attention:scores``).

    Example:
        >>> path_names("encoder/block_*/dense@1:pre"), path_names("`a:b`/c")
        (['encoder', 'block_*', 'dense'], ['a:b', 'c'])
    """
    names = []
    segments = _segments(text)
    for k, (quoted, rest) in enumerate(segments):
        if quoted:
            names.append(quoted[1:])
            continue
        if k == len(segments) - 1:
            rest = re.sub(r"(?:@\d+)?(?:\[\d+\])?(?::[A-Za-z_][A-Za-z0-9_]*)?$", "", rest)
        names.append(rest)
    return names


def is_glob(text: str) -> bool:
    """Whether `text` contains fnmatch wildcard characters outside backtick-quoted names."""
    outside = text.split("`")[::2]  # parts between quotes (a doubled backtick yields an empty part)
    return any(c in part for part in outside for c in _GLOB_CHARS)


