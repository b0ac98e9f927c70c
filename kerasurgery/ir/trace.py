"""Symbolic tracing: one call of a layer, recorded as a graph of its inner calls.

Calling a layer's ``call`` method directly on `keras.KerasTensor`s (not
``layer(...)``, which only computes an output spec) makes Keras record every
sublayer call and every ``keras.ops`` call inside it, exactly as in a
functional model. `trace_call` does that once, at concrete input sizes, and
returns the recorded `keras` ``Function``. Two precautions keep the record
faithful to the layer:

- **Variables stay variables.** ``call`` runs on a *view* of the layer (a new
  object sharing its attributes) in which each of the layer's own variables
  is replaced by a symbolic placeholder, so a computation on a variable
  (``ops.slice(self.position_embeddings, ...)``) is recorded as an operation
  on that placeholder instead of being evaluated once into a constant. The
  placeholders become `VariableRead` nodes sharing the very variable.
- **The layer is not changed.** The view has its own attribute tracker, and
  the calls the trace adds to the sublayers' call lists (``_inbound_nodes``)
  are removed again (`forget_trace_calls`) once the record has been read.

What cannot be traced raises `TraceError`, naming the layer, the line of its
code where tracing failed and why, and what would make it traceable: Python
control flow on tensor values, numpy or backend calls on tensors, a mask
that Keras attaches implicitly, mixed precision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import linecache
import traceback
import weakref
from collections.abc import Callable
from typing import Any

import keras

from kerasurgery import keras_internals as internals
from kerasurgery.errors import ModelError
from kerasurgery.layers import kinds
from kerasurgery.layers.traced import CREATION_FUNCTIONS, Creation


class TraceError(ModelError):
    """A layer's ``call`` could not be traced; the layer stays closed.

    Attributes:
        layer: the layer's name; line: ``file:line`` of its code where tracing
        failed (or None); reason: why, in one sentence.
    """

    def __init__(self, layer: Any, reason: str, line: str | None = None, fix: str = ""):
        self.layer = getattr(layer, "name", str(layer))
        self.reason = reason
        self.line = line
        where = f" at {line}" if line else ""
        fix = fix or (
            "Make call() depend only on the inputs' shapes and on configuration (not on tensor values), "
            "use keras.ops (not numpy or backend functions) on tensors, or leave the layer closed."
        )
        super().__init__(
            f"Expected the call() of layer '{self.layer}' ({type(layer).__name__}) to be traceable into "
            f"a graph of keras.ops and sublayer calls. Received: {reason}{where}. {fix} The layer stays "
            "closed (one opaque node)."
        )


class _NoTracking:
    """The attribute tracker of a view: attributes set during the trace stay on the view."""

    locked = False

    def track(self, value: Any) -> Any:
        return value

    def untrack(self, value: Any) -> Any:
        return value

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _replace_variables(value: Any, found: dict[int, tuple[Any, Any]]) -> Any:
    """`value` with every variable (in lists, tuples and dicts, one level deep) replaced by a placeholder."""
    if isinstance(value, keras.Variable):
        if id(value) not in found:
            placeholder = keras.KerasTensor(tuple(value.shape), dtype=value.dtype, name=f"{value.name}_value")
            found[id(value)] = (value, placeholder)
        return found[id(value)][1]
    if isinstance(value, (list, tuple)) and any(isinstance(v, keras.Variable) for v in value):
        return type(value)(_replace_variables(v, found) for v in value) if isinstance(value, tuple) else [
            _replace_variables(v, found) for v in value
        ]
    if isinstance(value, dict) and any(isinstance(v, keras.Variable) for v in value.values()):
        return {k: _replace_variables(v, found) for k, v in value.items()}
    return value


class _Sublayer:
    """A sublayer as the traced code sees it: calls go to the real layer.

    A call that Keras cannot make symbolically only because of keyword
    arguments left at their defaults (keras_hub's ``CachedMultiHeadAttention``
    called with ``cache=None``: ``MultiHeadAttention.compute_output_spec``
    does not take ``cache``) is made again without them: the same call.
    """

    def __init__(self, layer: Any, concrete: bool = False):
        self.__dict__["_layer"] = layer
        self.__dict__["_concrete"] = concrete

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        layer = self._layer
        outputs = self._call(layer, args, kwargs)
        if self._concrete:
            _make_concrete(layer, outputs, args, kwargs)
        return outputs

    @staticmethod
    def _call(layer: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return layer(*args, **kwargs)
        except Exception:
            try:
                params = inspect.signature(layer.call).parameters
            except (TypeError, ValueError):
                raise
            defaults = {k for k, v in kwargs.items()
                        if k in params and params[k].default is not inspect.Parameter.empty
                        and params[k].default is v}
            if not defaults:
                raise
            return layer(*args, **{k: v for k, v in kwargs.items() if k not in defaults})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._layer, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._layer, name, value)


_SPECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> {call signature: output shapes}


def _signature(args: tuple, kwargs: dict) -> tuple:
    leaves = keras.tree.flatten((args, kwargs))
    return tuple((tuple(v.shape), str(v.dtype)) if isinstance(v, keras.KerasTensor) else repr(v) for v in leaves)


def _make_concrete(layer: Any, outputs: Any, args: tuple, kwargs: dict) -> None:
    """Fill in output dimensions a layer's spec left unknown although every input size is known.

    Some layers report ``None`` for a dimension they could compute
    (``EinsumDense(output_shape=(None, h, d))``); code after them that reads
    ``ops.shape(q)`` would then record ``None`` where the run time has a size.
    While tracing every size is concrete, so the spec found by running the
    layer's ``call`` on placeholders is exact (and cached per layer and input
    shapes: the traces of nested layers meet the same calls again).
    """
    flat = keras.tree.flatten(outputs)
    inputs = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
    if not any(isinstance(t, keras.KerasTensor) and None in t.shape for t in flat):
        return
    if any(None in t.shape for t in inputs):
        return
    known = _SPECS.setdefault(layer, {}) if _weakrefable(layer) else {}
    key = _signature(args, kwargs)
    if key not in known:
        try:
            known[key] = [tuple(s.shape) for s in keras.tree.flatten(internals.generic_output_spec(layer, *args, **kwargs))]
        except Exception:  # noqa: BLE001 - keep what Keras said
            known[key] = []
    for t, shape in zip(flat, known[key]):
        if isinstance(t, keras.KerasTensor) and len(t.shape) == len(shape) and None not in shape:
            internals.make_shape_concrete(t, shape)


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def _wrap_sublayers(value: Any, concrete: bool) -> Any:
    if isinstance(value, keras.layers.Layer):
        return _Sublayer(value, concrete)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, keras.layers.Layer) for v in value):
        wrapped = [_Sublayer(v, concrete) for v in value]
        return tuple(wrapped) if isinstance(value, tuple) else wrapped
    return value


def variable_view(layer: Any, concrete: bool = False) -> tuple[Any, list[tuple[Any, Any]]]:
    """A view of `layer` whose own variables are symbolic placeholders.

    Returns ``(view, [(variable, placeholder), ...])``. The view is a new
    object of the layer's class sharing every other attribute (sublayers
    are reached through `_Sublayer`, which calls the real layer; with
    `concrete`, it also fills in output sizes Keras left unknown); `layer`
    itself is not touched.
    """
    view = object.__new__(type(layer))
    found: dict[int, tuple[Any, Any]] = {}
    attributes = {k: _wrap_sublayers(_replace_variables(v, found), concrete) for k, v in vars(layer).items()}
    if isinstance(attributes.get("_modules"), dict):  # torch keeps sublayers (modules) out of __dict__
        attributes["_modules"] = {k: _wrap_sublayers(_replace_variables(v, found), concrete)
                                  for k, v in attributes["_modules"].items()}
    attributes["_tracker"] = _NoTracking()
    view.__dict__.update(attributes)
    return view, list(found.values())


def _call_line(layer: Any, error: BaseException) -> str | None:
    """``file:line`` of the innermost frame of `error` in the layer's own code (or its class's MRO)."""
    files = set()
    for cls in type(layer).__mro__:
        try:
            files.add(inspect.getsourcefile(cls))
        except (TypeError, OSError):
            continue
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if f.filename in files]
    frame = mine[-1] if mine else (frames[-1] if frames else None)
    if frame is None:
        return None
    code = (linecache.getline(frame.filename, frame.lineno or 0) or "").strip()
    return f"{frame.filename}:{frame.lineno} ({code})" if code else f"{frame.filename}:{frame.lineno}"


def _reason(error: BaseException) -> tuple[str, str]:
    """A one-sentence reason for a failed trace, and the fix for it."""
    text = " ".join(str(error).split())[:300]
    name = type(error).__name__
    if "symbolic" in text.lower() and ("bool" in text.lower() or "truth" in text.lower()):
        return (f"Python control flow on a tensor value ({name}: {text})",
                "Replace `if`/`for` on tensor values with keras.ops.cond/where, or leave the layer closed.")
    if "numpy" in text.lower() or "__array__" in text:
        return (f"a numpy call on a tensor ({name}: {text})",
                "Use keras.ops instead of numpy on tensors inside call(), or leave the layer closed.")
    return f"{name}: {text}", ""


def _flash_off() -> Callable[[], None]:
    """Disable flash attention while tracing (so attention weights exist); returns the undo."""
    config = keras.config
    if not hasattr(config, "is_flash_attention_enabled"):
        return lambda: None
    was = config.is_flash_attention_enabled()
    config.disable_flash_attention()

    def undo() -> None:
        if was is not False:
            config.enable_flash_attention()  # back to Keras's default: use it where it can

    return undo


@contextlib.contextmanager
def _symbolic_creation(anchor: Any):
    """Record ``keras.ops.arange``/``ones``/... as `Creation` calls while tracing.

    They take Python values only, so Keras would evaluate them once; a
    causal mask built from ``ops.arange(length)`` must follow the length.
    The functions are replaced on ``keras.ops`` (what ``from keras import ops``
    code calls) for the duration of the trace only.
    """
    if anchor is None:
        yield
        return
    modules = [keras.ops, keras.src.ops, keras.src.ops.numpy]
    saved = [(m, name, getattr(m, name)) for m in modules for name in CREATION_FUNCTIONS if hasattr(m, name)]

    def make(name: str, original: Any) -> Any:
        def create(*args: Any, **kwargs: Any) -> Any:
            if any(isinstance(a, keras.KerasTensor) for a in keras.tree.flatten((args, kwargs))):
                return original(*args, **kwargs)
            return Creation(name, kwargs)(anchor, *args)

        return create

    for module, name, original in saved:
        setattr(module, name, make(name, original))
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


@dataclasses.dataclass
class Trace:
    """One recorded call.

    Attributes:
        function: the Keras ``Function`` from the trace inputs (tensor slots,
            then variable placeholders) to the call's outputs.
        slots: the argument slots the trace inputs stand for, in order.
        variables: ``(variable, placeholder)`` for each of the layer's own
            variables the call read.
        nodes: the recorded calls, inputs first (Keras's depth order).
    """

    function: Any
    slots: list[str]
    variables: list[tuple[Any, Any]]
    nodes: list


def _accepted(layer: Any, kwargs: dict) -> dict:
    """`kwargs` restricted to what ``layer.call`` accepts (context arguments such as ``training``)."""
    try:
        params = inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def trace_call(layer: Any, args: tuple, kwargs: dict, specs: dict[str, tuple[tuple, str]],
               fill: Callable[[Any, dict], Any], *, concrete: bool = False) -> Trace:
    """Record one call of ``layer.call`` on symbolic inputs of the given (concrete) shapes.

    Args:
        layer: the layer (or model) whose ``call`` is traced.
        args, kwargs: the call's argument templates (tensors replaced by
            `kerasurgery.ir.schema.Slot`).
        specs: ``{slot: (shape, dtype)}`` of every tensor slot, shapes concrete.
        fill: `kerasurgery.ir.schema.fill`.
        concrete: fill in the output sizes sublayers' specs leave unknown
            (costly). Without it, a record that took such an unknown size as a
            constant (``reshape(q, (b, None, h, d))``) is traced again with it.

    Raises:
        TraceError: the call could not be traced.
    """
    if getattr(layer, "dtype_policy", None) is not None and layer.compute_dtype != layer.variable_dtype:
        raise TraceError(layer, f"a mixed-precision dtype policy ({layer.dtype_policy.name})",
                         fix="Open it in a float32 copy of the model, or leave it closed.")
    view, variables = variable_view(layer, concrete)
    slots = list(specs)
    inputs = {s: keras.Input(batch_shape=specs[s][0], dtype=specs[s][1], name=f"trace_{i}")
              for i, s in enumerate(slots)}
    call_args = fill(args, inputs)
    call_kwargs = _accepted(layer, fill(kwargs, inputs))
    # A built-in attention layer without dropout would record one fused dot_product_attention
    # call; asked for its weights, it records the explicit path (softmax, then the value product).
    explicit = kinds.is_attention_layer(layer) and not call_kwargs.get("return_attention_scores")
    if explicit:
        call_kwargs["return_attention_scores"] = True
    undo = _flash_off()
    anchor = next(iter(inputs.values()), None)
    try:
        with _symbolic_creation(anchor):
            outputs = view.call(*call_args, **call_kwargs)
            if explicit:
                outputs = outputs[0]
    except Exception as error:  # anything the layer's code raises: report it, stay closed
        line = _call_line(layer, error)
        reason, fix = _reason(error)
        raise TraceError(layer, reason, line, fix) from None
    finally:
        undo()
    flat = keras.tree.flatten(outputs)
    if not flat or not all(isinstance(t, keras.KerasTensor) for t in flat):
        found = sorted({type(t).__name__ for t in flat})
        raise TraceError(layer, f"call() returned values that are not computed from its inputs ({found})")
    placeholders = [p for _, p in variables]
    try:
        function = internals.function(list(inputs.values()) + placeholders, outputs)
    except Exception as error:  # noqa: BLE001 - Keras cannot map the record into a graph
        raise TraceError(layer, f"its outputs are not connected to its inputs ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]})") from None
    used = {id(t) for node in internals.nodes_in_order(function) for t in internals.call_arguments(node)[2]}
    variables = [(v, p) for v, p in variables if id(p) in used]
    if len(variables) != len(placeholders):
        function = internals.function(list(inputs.values()) + [p for _, p in variables], outputs)
    nodes = [n for n in internals.nodes_in_order(function) if not n.is_input]
    if not concrete and any(_holds_unknown_size(n) for n in nodes):
        return trace_call(layer, args, kwargs, specs, fill, concrete=True)
    return Trace(function, slots, variables, nodes)


def _holds_unknown_size(node: Any) -> bool:
    """Whether a recorded raw operation took ``None`` as a size (a shape Keras left unknown)."""
    op = node.operation
    if isinstance(op, keras.layers.Layer):
        return False
    args, kwargs, _ = internals.call_arguments(node)
    config = op.get_config()

    def sizes_with_none(value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            return None in value and any(isinstance(v, int) for v in value) or any(map(sizes_with_none, value))
        if isinstance(value, dict):
            return any(map(sizes_with_none, value.values()))
        return False

    return sizes_with_none([config, args, kwargs])


def forget_trace_calls(layer: Any) -> Callable[[], None]:
    """Snapshot the call lists of `layer`'s sublayers; the returned function restores them.

    Tracing calls the sublayers on symbolic inputs, which appends to their
    ``_inbound_nodes``/``_outbound_nodes``; restoring keeps the user's layers as
    they were (and lets the traces be garbage collected).
    """
    layers = [layer, *internals.all_layers(layer)] if hasattr(layer, "_flatten_layers") else [layer]
    saved = [(op, len(internals.inbound_nodes(op)), len(internals.outbound_nodes(op))) for op in layers]

    def restore() -> None:
        for op, n_in, n_out in saved:
            internals.truncate_calls(op, n_in, n_out)

    return restore


__all__ = ["Trace", "TraceError", "forget_trace_calls", "trace_call", "variable_view"]
