"""Registering kerasurgery's layers with Keras without importing Keras early.

Models that kerasurgery returns contain its own layers (`Tap`,
`PreActivation`, ...). Keras can load them from a `.keras` file only if their
classes were registered (`keras.saving.register_keras_serializable`), which
happens when `kerasurgery.layers` is imported, and that imports Keras and its
backend (seconds, for TensorFlow). ``import kerasurgery`` must stay instant
(``kerasurgery --help``), yet ``import kerasurgery`` followed by
``keras.saving.load_model`` must work. So:

- if Keras is already imported, `kerasurgery.layers` is imported now;
- otherwise a finder on `sys.meta_path` waits for the first ``import keras``
  and imports `kerasurgery.layers` right after Keras has finished loading,
  then removes itself. It changes nothing else about how Keras is found or
  loaded. If that first ``import keras`` came from a kerasurgery module that
  is still being imported, importing `kerasurgery.layers` then could meet
  that half-made module (a circular import); the finder then waits for the
  next import of anything, when no kerasurgery module is half-made.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

_LAYERS = "kerasurgery.layers"


class _ThenRegister(importlib.abc.Loader):
    """Runs Keras's own loader, then imports `kerasurgery.layers`."""

    def __init__(self, inner: Any):
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)
        if _importing_kerasurgery():
            sys.meta_path.insert(0, _Pending())
        else:
            importlib.import_module(_LAYERS)

    def __getattr__(self, name: str) -> Any:  # resource readers, get_code, is_package, ...
        return getattr(self.inner, name)


class _KerasWatcher(importlib.abc.MetaPathFinder):
    """Finds ``keras`` exactly as the other finders do, wrapping its loader once."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "keras":
            return None
        _remove_watcher()
        spec = importlib.util.find_spec("keras")
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


class _Pending(importlib.abc.MetaPathFinder):
    """Registers the layers at the first import after the kerasurgery modules in progress are done."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if not _importing_kerasurgery():
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
            importlib.import_module(_LAYERS)
        return None


def _importing_kerasurgery() -> bool:
    """Whether a kerasurgery module is being imported right now (half-made)."""
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name.startswith("kerasurgery.")
    )


def _remove_watcher() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _KerasWatcher)]


def register_layers_with_keras() -> None:
    """Make sure kerasurgery's layers are registered whenever Keras is (or will be) imported."""
    if "keras" in sys.modules:
        importlib.import_module(_LAYERS)
    elif not any(isinstance(f, _KerasWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _KerasWatcher())
