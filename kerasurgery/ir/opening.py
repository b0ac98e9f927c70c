"""Which calls to open while reading a model: `Opener`.

A layer whose ``call`` is Python code (a keras_hub ``TransformerEncoder``, a
custom block, a subclassed model) is one opaque node until it is *opened*:
traced into the graph of its inner calls (`kerasurgery.ir.trace`). What to
open is said by ``to_graph(model, open=...)``:

- ``None`` / ``False``: nothing (the default);
- ``True``: every layer whose ``call`` is not Keras's own code, recursively,
  as deep as tracing succeeds; layers that cannot be traced stay closed and
  are listed (``graph.graph["closed"]``, and one warning);
- a selector (address, glob, list of them, predicate over addresses): the
  layers it names, and the layers on their paths. Naming a layer that cannot
  be traced raises `kerasurgery.ir.trace.TraceError`.

Addresses also open on demand (``paths_of``):
``transformer_layer_0/self_attention_layer:scores`` opens
``transformer_layer_0`` (the layers on its path), not the attention layer
itself, whose ``:scores`` port exists closed; a custom attention layer (not a
Keras ``MultiHeadAttention``) addressed for ``:scores`` is opened too, since
its scores are the softmax inside it.

Example:
    >>> from kerasurgery.ir.opening import Opener
    >>> opener = Opener(["encoder/block_*"])
    >>> opener.wants(("encoder",), "block_1", None), opener.wants((), "head", None)
    (True, False)
"""

from __future__ import annotations

import fnmatch
from typing import Any

import keras

from kerasurgery import keras_internals as internals
from kerasurgery.address.grammar import format_address, Address, is_glob, path_names
from kerasurgery.address.selector import items
from kerasurgery.layers import kinds


def _matches(names: list[str], pattern: list[str]) -> bool:
    return len(names) == len(pattern) and all(fnmatch.fnmatchcase(n, p) for n, p in zip(names, pattern))


class Opener:
    """Decides, call by call, whether to open a layer while a model is read.

    Args:
        open: None/False, True, or a selector of layers to open (see the
            module docstring).
        paths_of: addresses whose *path* layers must be opened (on-demand
            opening for `expose`, `collect`, ...); the addressed layer itself
            stays closed.
    """

    def __init__(self, open: Any = None, paths_of: Any = ()):  # noqa: A002 - the public argument's name
        self.everything = open is True
        self.predicate = open if callable(open) and not isinstance(open, str) else None
        self.patterns: list[tuple[list[str], bool]] = []  # (names, the item names this very layer)
        chosen = items(open, "open") if open not in (None, False, True) and self.predicate is None else []
        if not callable(chosen):  # a list (predicates were taken above)
            for item in chosen:
                names = path_names(item)
                for depth in range(1, len(names) + 1):
                    self.patterns.append((names[:depth], not is_glob(item)))
        self.attention: list[list[str]] = []  # addressed for ':scores': open if a custom attention layer
        for item in paths_of:
            if isinstance(item, str):
                names = path_names(item)
                for depth in range(1, len(names)):
                    self.patterns.append((names[:depth], not is_glob(item)))
                if item.endswith(":scores"):
                    self.attention.append(names)

    @property
    def active(self) -> bool:
        """Whether this opener may open anything at all."""
        return self.everything or self.predicate is not None or bool(self.patterns)

    def strict(self, path: tuple, name: str) -> bool:
        """Whether failing to open this layer is an error (it was named exactly)."""
        names = [*path, name]
        return any(exact and names == pattern for pattern, exact in self.patterns)

    def wants(self, path: tuple, name: str, op: Any) -> bool:
        """Whether the call of `op`, named `name` under `path`, should be opened."""
        if op is not None and (not isinstance(op, keras.layers.Layer) or isinstance(op, keras.layers.InputLayer)):
            return False
        names = [*path, name]
        if any(_matches(names, pattern) for pattern, _ in self.patterns):
            return True
        if any(_matches(names, pattern) for pattern in self.attention):  # its scores exist once opened
            return kinds.is_attention_like(op) and not kinds.is_attention_layer(op)
        if self.predicate is not None:
            return bool(self.predicate(format_address(Address(name=name, path=tuple(path)))))
        return self.everything and op is not None and not internals.is_builtin(op)
