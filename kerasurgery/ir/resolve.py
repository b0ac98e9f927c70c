"""Resolving addresses against a graph: `points`, `Resolver`.

`points(model)` lists every address `expose` accepts, in topological order;
it is the discovery call, and every error about an address suggests the
closest matches from it. `Resolver` turns an address (or a selector, through
`kerasurgery.address.selector.select`) into `Point`s: graph node, output
index and port.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

from kerasurgery.address.grammar import PORTS, Address, is_glob, parse, point_address
from kerasurgery.address.selector import Selector, close_matches, glob_matches, items, select
from kerasurgery.errors import AddressError
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.schema import topological_order
from kerasurgery.layers import kinds


@dataclasses.dataclass(frozen=True)
class Point:
    """A resolved address: output `index` of graph node `node`, through `port`."""

    node: str
    index: int = 0
    port: str | None = None


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


def _alias_points(key: str, refs: list) -> list[str]:
    return [key] if len(refs) == 1 else [point_address(key, i) for i in range(len(refs))]


def list_points(graph: Any) -> list[str]:
    """Every address of `graph` that `expose` accepts, in topological order.

    The address of an inlined nested model or an opened layer (an alias of
    its outputs, ``encoder``) comes right after the node computing its last
    output.
    """
    after: dict[str, list[str]] = defaultdict(list)
    for alias, refs in (graph.graph.get("aliases") or {}).items():
        if refs and all(ref.node in graph for ref in refs):
            after[refs[-1].node].extend(_alias_points(alias, refs))
    for alias, ref in (graph.graph.get("scores") or {}).items():
        if ref.node in graph:
            after[ref.node].append(point_address(alias, None, "scores"))
    result = []
    for key in topological_order(graph):
        result.extend(_node_points(key, graph.nodes[key]))
        result.extend(after.get(key, ()))
    return result


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
        self.aliases = dict(graph.graph.get("aliases") or {})
        self._alias_sites: dict[tuple[tuple[str, ...], str], dict[int, str]] = defaultdict(dict)
        for key in self.aliases:
            a = parse(key)
            self._alias_sites[(a.path, a.name)][a.call or 0] = key
        self._points: list[str] | None = None
        self.model_name = graph.graph.get("name", "model")

    def call_sites(self, path: tuple[str, ...], name: str) -> list[str]:
        """Node keys of every call of the operation `name` under `path`, by call index."""
        sites = self._by_name.get((tuple(path), name), [])
        return sorted(sites, key=lambda k: _identity(k, self.graph.nodes[k])[2])

    def points(self) -> list[str]:
        if self._points is None:
            self._points = list_points(self.graph)
        return self._points

    # -- exact addresses -------------------------------------------------
    def resolve_one(self, text: str) -> Point:
        """Resolve one exact (non-glob) address to a `Point`."""
        address = parse(text)
        sites = self._by_name.get((address.path, address.name))
        if not sites and (address.path, address.name) in self._alias_sites:
            return self._resolve_alias(text, address)
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
                    f"Expected an output index for '{key}', which returns {n} tensors, such as "
                    f"{options[0]!r}. Received: {text!r}.",
                    address=text,
                    suggestions=options,
                )
            return Point(key, 0, None)
        if address.index >= n:
            options = [point_address(key, i) for i in range(n)] if n > 1 else [key]
            raise AddressError(
                f"Expected an output index below {n} for '{key}', which returns {n} tensor(s). Received: {text!r}.",
                address=text,
                suggestions=options,
            )
        return Point(key, address.index, None)

    def _resolve_alias(self, text: str, address: Address) -> Point:
        """The address of an inlined nested model or an opened layer: one of its outputs."""
        by_call = self._alias_sites[(address.path, address.name)]
        options = [by_call[c] for c in sorted(by_call)]
        call = address.call if address.call is not None else (0 if len(by_call) == 1 else None)
        if call not in by_call:
            raise AddressError(
                f"Expected a call site of '{address.name}' with '@', one of {options}: it is called "
                f"{len(by_call)} times in model '{self.model_name}'. Received: {text!r}.",
                address=text, suggestions=options,
            )
        key = by_call[call]
        refs = self.aliases[key]
        if address.index is None and len(refs) > 1:
            raise AddressError(
                f"Expected an output index for '{key}', which returns {len(refs)} tensors, such as "
                f"{point_address(key, 0)!r}. Received: {text!r}.",
                address=text, suggestions=_alias_points(key, refs),
            )
        index = address.index or 0
        if index >= len(refs):
            raise AddressError(
                f"Expected an output index below {len(refs)} for '{key}', which returns {len(refs)} tensor(s). "
                f"Received: {text!r}.",
                address=text, suggestions=_alias_points(key, refs),
            )
        ref = refs[index]
        if address.port is None:
            return Point(ref.node, ref.index, None)
        scores = (self.graph.graph.get("scores") or {}).get(key)
        if address.port == "scores" and scores is not None:
            return Point(scores.node, scores.index, None)
        target = self.graph.nodes[ref.node]
        return self._resolve_port(text, Address(target.get("name", ref.node), port=address.port), ref.node, target)

    def _pick_site(self, text: str, address: Address, sites: list[str]) -> str:
        by_call = {_identity(k, self.graph.nodes[k])[2]: k for k in sites}
        if address.call is None:
            if len(sites) == 1:
                return sites[0]
            options = [by_call[c] for c in sorted(by_call)]
            raise AddressError(
                f"Expected a call site of '{address.name}' with '@', one of {options}: it is called "
                f"{len(sites)} times in model '{self.model_name}'. Received: {text!r}.",
                address=text,
                suggestions=options,
            )
        if address.call not in by_call:
            options = [by_call[c] for c in sorted(by_call)]
            raise AddressError(
                f"Expected one of the {len(sites)} call site(s) of '{address.name}': {options}. "
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
                f"Expected an address with a port of '{key}'. Received: {text!r}: '{key}' ({cls}) "
                f"has no ':{address.port}' port: {why}. Its ports: {have}.",
                address=text,
                suggestions=close_matches(text, nearby) or nearby[:5],
            )
        return Point(key, address.index or 0, address.port)

    # -- selections -------------------------------------------------------
    def match(self, pattern: str) -> list[str]:
        """Points matching an fnmatch `pattern`, in topological order (see `glob_matches`)."""
        return [p for p in self.points() if glob_matches(pattern, p)]

    def select(self, selector: Selector, what: str = "points") -> dict[str, Point]:
        """Resolve a selector (address, glob, list of them, or predicate).

        Returns:
            An ordered dict {address: Point}; globs expand to matching addresses,
            exact addresses keep the spelling the user gave.

        Raises:
            AddressError: empty selection, unknown address, glob matching nothing.
        """
        chosen = select(
            self.points(), selector, what=what, exact=self._exact, owner=f"model '{self.model_name}'"
        )
        return {address: self.resolve_one(address) for address in chosen}

    def _exact(self, text: str) -> str:
        self.resolve_one(text)
        return text


def points(model_or_graph: Any, pattern: Selector | None = None, *, open: Any = None) -> list[str]:  # noqa: A002
    """List every address that `expose` accepts, in topological order.

    This is the discovery call: every error about an address suggests close
    matches from this list.

    Args:
        model_or_graph: a Functional or Sequential `keras.Model`, or a graph
            from `to_graph`.
        pattern: optional selector (an address, a glob, a list of them, or a
            predicate; see `kerasurgery.address.selector`). A glob without
            ``:`` keeps only plain outputs, ``"*:pre"`` keeps every
            pre-activation; globs that match nothing list nothing. A
            pattern through a closed layer opens it
            (``"transformer_layer_0/*"``).
        open: as for `kerasurgery.to_graph`: True lists what opening every
            layer offers (attention scores and pre-activations inside
            keras_hub blocks, ...).

    Returns:
        A list of address strings.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> y = keras.layers.Dense(2, activation="softmax", name="head")(x)
        >>> ks.points(keras.Model(x, y))
        ['x', 'head:pre', 'head']
    """
    resolver = Resolver(graph_for(model_or_graph, pattern, open=open))
    every = resolver.points()
    if pattern is None:
        return list(every)
    wanted = items(pattern, "pattern")
    if callable(wanted):
        return [p for p in every if wanted(p)]
    if all(is_glob(w) for w in wanted) and not any(glob_matches(w, p) for w in wanted for p in every):
        return []  # a discovery call: a glob that matches nothing lists nothing
    chosen = select(every, wanted, what="pattern", exact=resolver._exact, owner=f"model '{resolver.model_name}'")
    picked, listed = set(chosen), set(every)
    return [p for p in every if p in picked] + [c for c in chosen if c not in listed]
