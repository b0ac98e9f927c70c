"""Addresses: the one place where point names are parsed, formatted and resolved.

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

Anything that takes points also takes fnmatch globs (``"block_*:pre"``). A glob
without ``:`` matches only plain outputs; ``"*:pre"`` matches every ``:pre``.

Example:
    >>> from kerasurgery.address import parse, format_address
    >>> a = parse("encoder/shared@1[0]:pre")
    >>> a.path, a.name, a.call, a.index, a.port
    (('encoder',), 'shared', 1, 0, 'pre')
    >>> format_address(a)
    'encoder/shared@1[0]:pre'
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Union

from kerasurgery import kinds
from kerasurgery.errors import AddressError

PORTS = ("pre", "scores")

_LAST = re.compile(
    r"^(?P<name>.+?)"
    r"(?:@(?P<call>\d+))?"
    r"(?:\[(?P<index>\d+)\])?"
    r"(?::(?P<port>[A-Za-z_][A-Za-z0-9_]*))?$"
)
_GLOB_CHARS = "*?["

Selector = Union[str, Iterable[str], Callable[[str], bool]]


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


@dataclasses.dataclass(frozen=True)
class Point:
    """A resolved address: output `index` of graph node `node`, through `port`."""

    node: str
    index: int = 0
    port: str | None = None


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


def _identity(key: str, data: dict) -> tuple[tuple[str, ...], str, int]:
    """(path, name, call) of a node, from its attributes or else its key."""
    if "name" in data:
        return tuple(data.get("path", ())), data["name"], int(data.get("call", 0))
    a = parse(key)
    return a.path, a.name, a.call or 0


def _node_points(key: str, data: dict) -> list[str]:
    """Every address that one node offers, in computation order."""
    if data.get("kind") == "input":
        return [key]
    op = data.get("op")
    ports = kinds.ports_of(op)
    n = len(data.get("output_shapes", [None]))
    out = []
    if "pre" in ports:
        out.append(point_address(key, None, "pre"))
    if n == 1:
        out.append(key)
    else:
        out.extend(point_address(key, i) for i in range(n))
    if "scores" in ports:
        out.append(point_address(key, None, "scores"))
    return out


def list_points(graph: Any) -> list[str]:
    """Every address of `graph` that `expose` accepts, in topological order."""
    from kerasurgery.graph import topological_order

    result = []
    for key in topological_order(graph):
        result.extend(_node_points(key, graph.nodes[key]))
    return result


def close_matches(text: str, candidates: list[str], n: int = 5) -> list[str]:
    found = difflib.get_close_matches(text, candidates, n=n, cutoff=0.6)
    if found:
        return found
    base = text.split(":")[0].split("[")[0].split("@")[0].rsplit("/", 1)[-1]
    return [c for c in candidates if base and base in c][:n]


class Resolver:
    """Resolves addresses and globs against one graph.

    Build it once per call that resolves many addresses: it indexes the graph's
    nodes by (path, name) and lists the points lazily.
    """

    def __init__(self, graph: Any):
        self.graph = graph
        self._by_name: dict[tuple[tuple[str, ...], str], list[str]] = defaultdict(list)
        for key, data in graph.nodes(data=True):
            path, name, _ = _identity(key, data)
            self._by_name[(path, name)].append(key)
        self._points: list[str] | None = None
        self.model_name = graph.graph.get("name", "model")

    def points(self) -> list[str]:
        if self._points is None:
            self._points = list_points(self.graph)
        return self._points

    # -- exact addresses -------------------------------------------------
    def resolve_one(self, text: str) -> Point:
        """Resolve one exact (non-glob) address to a `Point`."""
        address = parse(text)
        sites = self._by_name.get((address.path, address.name))
        if not sites:
            raise AddressError(
                f"Expected the address of a point of model '{self.model_name}'. "
                f"Received: {text!r}, which names no layer or operation of it.",
                address=text,
                suggestions=close_matches(text, self.points()),
            )
        key = self._pick_site(text, address, sites)
        data = self.graph.nodes[key]
        if address.port is not None:
            return self._resolve_port(text, address, key, data)
        n = len(data.get("output_shapes", [None]))
        if address.index is None:
            if n > 1:
                options = [point_address(key, i) for i in range(n)]
                raise AddressError(
                    f"'{key}' returns {n} tensors; expected an output index such as "
                    f"{options[0]!r}. Received: {text!r}.",
                    address=text,
                    suggestions=options,
                )
            return Point(key, 0, None)
        if address.index >= n:
            options = [point_address(key, i) for i in range(n)] if n > 1 else [key]
            raise AddressError(
                f"'{key}' returns {n} tensor(s); expected an index below {n}. Received: {text!r}.",
                address=text,
                suggestions=options,
            )
        return Point(key, address.index, None)

    def _pick_site(self, text: str, address: Address, sites: list[str]) -> str:
        by_call = {_identity(k, self.graph.nodes[k])[2]: k for k in sites}
        if address.call is None:
            if len(sites) == 1:
                return sites[0]
            options = [by_call[c] for c in sorted(by_call)]
            raise AddressError(
                f"'{address.name}' is called {len(sites)} times in model '{self.model_name}'; "
                f"expected the call site with '@', one of {options}. Received: {text!r}.",
                address=text,
                suggestions=options,
            )
        if address.call not in by_call:
            options = [by_call[c] for c in sorted(by_call)]
            raise AddressError(
                f"'{address.name}' has {len(sites)} call site(s), expected one of {options}. "
                f"Received: {text!r}.",
                address=text,
                suggestions=options,
            )
        return by_call[address.call]

    def _resolve_port(self, text: str, address: Address, key: str, data: dict) -> Point:
        if address.port not in PORTS:
            raise AddressError(
                f"Expected a port among {[':' + p for p in PORTS]}. Received: {text!r} "
                f"with port ':{address.port}'.",
                address=text,
                suggestions=[p for p in _node_points(key, data) if ":" in p],
            )
        ports = kinds.ports_of(data.get("op")) if data.get("kind") != "input" else ()
        if address.port not in ports:
            cls = type(data.get("op")).__name__
            have = ", ".join(":" + p for p in ports) or "none"
            why = {
                "pre": "it has no fused non-linear activation and is not an activation layer",
                "scores": "it is not an attention layer (MultiHeadAttention, GroupedQueryAttention)",
            }[address.port]
            nearby = [p for p in self.points() if p.endswith(":" + address.port)]
            raise AddressError(
                f"'{key}' ({cls}) has no ':{address.port}' port: {why}. Its ports: {have}. "
                f"Received: {text!r}.",
                address=text,
                suggestions=close_matches(text, nearby) or nearby[:5],
            )
        return Point(key, address.index or 0, address.port)

    # -- globs and selections -------------------------------------------
    def match(self, pattern: str) -> list[str]:
        """Points matching an fnmatch `pattern`, in topological order.

        A pattern without ``:`` matches only plain outputs (no port).
        """
        with_ports = ":" in pattern
        return [
            p
            for p in self.points()
            if (with_ports or ":" not in p) and fnmatch.fnmatchcase(p, pattern)
        ]

    def select(self, selector: Selector, what: str = "points") -> dict[str, Point]:
        """Resolve a selector (address, glob, list of them, or predicate).

        Returns:
            An ordered dict {address: Point}; globs expand to matching addresses,
            exact addresses keep the spelling the user gave.

        Raises:
            AddressError: empty selection, unknown address, glob matching nothing.
        """
        if callable(selector) and not isinstance(selector, str):
            chosen = [p for p in self.points() if selector(p)]
            if not chosen:
                raise AddressError(
                    f"Expected the predicate given as {what} to accept at least one point "
                    f"of model '{self.model_name}'. Received: {selector!r}, which accepted none.",
                    address=selector,
                )
            return {p: self.resolve_one(p) for p in chosen}
        items = [selector] if isinstance(selector, str) else selector
        try:
            items = list(items)
        except TypeError:
            raise AddressError(
                f"Expected {what} as an address string, a list of them, or a predicate. "
                f"Received: {selector!r} of type {type(selector).__name__}.",
                address=selector,
            ) from None
        if not items:
            raise AddressError(
                f"Expected at least one address in {what}. Received: an empty list.",
                address=selector,
            )
        result: dict[str, Point] = {}
        for item in items:
            for address, point in self._select_one(item):
                result.setdefault(address, point)
        return result

    def _select_one(self, item: Any) -> list[tuple[str, Point]]:
        if not isinstance(item, str):
            parse(item)  # raises a typed error
        try:
            return [(item, self.resolve_one(item))]
        except AddressError:
            if not is_glob(item):
                raise
        matched = self.match(item)
        if not matched:
            raise AddressError(
                f"Expected the pattern {item!r} to match at least one point of model "
                f"'{self.model_name}'. Received: a pattern that matches none.",
                address=item,
                suggestions=close_matches(item.replace("*", "").replace("?", ""), self.points()),
            )
        return [(p, self.resolve_one(p)) for p in matched]


def points(model_or_graph: Any, pattern: str | None = None) -> list[str]:
    """List every address that `expose` accepts, in topological order.

    This is the discovery call: every error about an address suggests close
    matches from this list.

    Args:
        model_or_graph: a Functional or Sequential `keras.Model`, or a graph
            from `to_graph`.
        pattern: optional fnmatch glob; a glob without ``:`` keeps only plain
            outputs, ``"*:pre"`` keeps every pre-activation.

    Returns:
        A list of address strings.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> y = keras.layers.Dense(2, activation="softmax", name="head")(x)
        >>> ks.points(keras.Model(x, y))
        ['x', 'head:pre', 'head']
    """
    from kerasurgery.graph import as_graph

    resolver = Resolver(as_graph(model_or_graph))
    if pattern is None:
        return list(resolver.points())
    return resolver.match(pattern)
