"""Every Keras internal kerasurgery relies on, in one place.

Keras 3 has no public API for the recorded graph of a functional model, so
reading it needs a few private attributes. Each one is read here and nowhere
else, and `tests/test_keras_internals.py` pins each of them, so a Keras
release that changes one fails that test by name instead of failing deep
inside a pass.

==============================  ============================================
``keras.src.models.functional``  the `Functional` class (a functional model)
``Sequential._functional``       the graph of a built Sequential model
``Functional._nodes_by_depth``   the recorded calls, grouped by depth
``Functional._inputs/_outputs``  the flat input/output KerasTensors
``Functional._inputs_struct``    inputs/outputs as given to the constructor
``Functional._outputs_struct``
``Operation._inbound_nodes``     one `Node` per call of an operation
``KerasTensor._keras_history``   (operation, node index, tensor index);
                                 a call's input tensors (`parent_tensors`)
``Layer._call_context_args``     arguments passed down to inner calls
                                 (``training``)
``Layer._flatten_layers``        every layer inside a model, recursively
``Node.arguments/outputs``       a call's arguments and output tensors
``keras.src.ops.function``       `Function`: a graph of recorded calls
``Operation._outbound_nodes``    the calls that read an operation's outputs
``KerasTensor._shape``           a symbolic tensor's shape (made concrete
                                 while tracing)
``KerasTensor._sparse``          a symbolic tensor's sparsity (cleared where
                                 Keras infers it wrongly, below)
global ``object_name_uids``      the counters behind automatic names
                                 (``get_item_3``), restored after symbolic
                                 checks of user code (`names_unchanged`)
==============================  ============================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras


def functional_class() -> type:
    """Keras's `Functional` model class."""
    from keras.src.models.functional import Functional

    return Functional


def is_functional(model: Any) -> bool:
    """Whether `model` is a Functional model (including subclasses of Functional)."""
    return isinstance(model, functional_class())


def calls_like_functional(model: Any) -> bool:
    """Whether `model`'s ``call`` is Functional's own (not overridden by a subclass)."""
    functional: Any = functional_class()
    return is_functional(model) and type(model).call is functional.call


def sequential_graph(model: Any) -> Any | None:
    """The Functional graph of a built Sequential model, or None if it has none yet."""
    return getattr(model, "_functional", None)


def graph_of(model: Any) -> Any | None:
    """The Functional graph behind a Functional or built Sequential model."""
    if isinstance(model, keras.Sequential):
        return sequential_graph(model)
    return model if is_functional(model) else None


def nodes_in_order(fn: Any) -> list:
    """Keras nodes (calls) of a Functional, inputs first, in Keras's own depth order."""
    ordered = []
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        ordered.extend(fn._nodes_by_depth[depth])
    return ordered


def call_index(op: Any, node: Any) -> int:
    """The 0-based call number of `node` among the calls of `op`."""
    return op._inbound_nodes.index(node)


def inbound_nodes(op: Any) -> list:
    """Every recorded call (`Node`) of `op`."""
    return list(op._inbound_nodes)


def flat_inputs(fn: Any) -> list:
    """The input KerasTensors of a Functional, flattened."""
    return list(fn._inputs)


def flat_outputs(fn: Any) -> list:
    """The output KerasTensors of a Functional, flattened."""
    return list(fn._outputs)


def input_structure(fn: Any) -> Any:
    """The inputs of a Functional as given to its constructor (tensor, list or dict)."""
    return fn._inputs_struct


def output_structure(fn: Any) -> Any:
    """The outputs of a Functional as given to its constructor."""
    return fn._outputs_struct


def producer(tensor: Any) -> Any:
    """The operation that produced a KerasTensor."""
    return tensor._keras_history.operation


def parent_tensors(tensor: Any) -> list:
    """The symbolic tensors the call that produced `tensor` read ([] for a tensor made by hand)."""
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return []
    return list(history.operation._inbound_nodes[history.node_index].input_tensors)


def context_arguments(op: Any) -> set:
    """Names of the call-context arguments `op` passes down to inner calls (``training``)."""
    return set(getattr(op, "_call_context_args", ()) or ())


def all_layers(model: Any) -> list:
    """Every layer of `model`, nested ones included, without repeats."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def call_arguments(node: Any) -> tuple[tuple, dict, list]:
    """``(args, kwargs, keras_tensors)`` of a recorded call."""
    arguments = node.arguments
    return tuple(arguments.args), dict(arguments.kwargs), list(arguments.keras_tensors)


def function(inputs: Any, outputs: Any) -> Any:
    """A Keras ``Function``: the graph of recorded calls from `inputs` to `outputs`."""
    from keras.src.ops.function import Function

    return Function(inputs, outputs)


def outbound_nodes(op: Any) -> list:
    """Every recorded call that reads an output of `op`."""
    return list(getattr(op, "_outbound_nodes", []))


def truncate_calls(op: Any, inbound: int, outbound: int) -> None:
    """Forget the calls recorded on `op` after the first `inbound`/`outbound` ones."""
    del op._inbound_nodes[inbound:]
    if hasattr(op, "_outbound_nodes"):
        del op._outbound_nodes[outbound:]


def is_builtin(op: Any) -> bool:
    """Whether `op`'s ``call`` is Keras's own code (Dense, Conv2D, MultiHeadAttention, ...)."""
    call = getattr(type(op), "call", None)
    module = getattr(call, "__module__", "") or ""
    return module == "keras" or module.startswith("keras.")


def make_shape_concrete(tensor: Any, shape: tuple) -> None:
    """Give a symbolic tensor the concrete `shape` Keras could not infer (tracing only)."""
    tensor._shape = tuple(shape)


def generic_output_spec(layer: Any, *args: Any, **kwargs: Any) -> Any:
    """The output spec of ``layer.call`` found by running it on backend placeholders."""
    from keras.src import backend

    return backend.compute_output_spec(layer.call, *args, **kwargs)


def clear_false_sparsity(outputs: list, inputs: list) -> None:
    """Mark symbolic outputs dense when no symbolic input is sparse.

    Keras infers ``sparse=True`` for ``x * c`` when ``c`` is a constant
    without a ``sparse`` attribute (``getattr(c, "sparse", True)`` in
    ``Multiply.compute_output_spec``). Harmless while the tensor feeds a
    closed layer; a layer opened by tracing would then be given a sparse
    placeholder and fail.
    """
    if any(getattr(t, "sparse", False) for t in inputs if isinstance(t, keras.KerasTensor)):
        return
    for t in outputs:
        if isinstance(t, keras.KerasTensor) and t.sparse:
            t._sparse = False


@contextlib.contextmanager
def names_unchanged() -> Iterator[None]:
    """Keras's automatic-name counters as they were, after the block.

    Calling user code on symbolic tensors (to check a target function or a
    loss) creates operations, and each takes a number from a global counter
    (``get_item``, ``get_item_1``, ...). Without this, the names Keras gives
    the user's next operations, and so the addresses of an opened model,
    would depend on whether such a check ran before.
    """
    from keras.src.backend.common import global_state

    before = global_state.get_global_attribute("object_name_uids")
    saved = dict(before) if before is not None else {}
    try:
        yield
    finally:
        after = global_state.get_global_attribute("object_name_uids")
        if after is not None:
            after.clear()
            after.update(saved)
