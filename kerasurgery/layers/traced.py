"""Layers that opened (traced) calls are rebuilt with.

- `Dim`: an integer that follows the input sizes, ``const + sum(k * dim)``.
- `SizedCall`: one recorded call whose constants follow the input sizes
  (``broadcast_to(x, (batch, t, t))``): at run time it reads the sizes from
  reference tensors and calls the operation with the constants evaluated.
- `VariableRead`: the value of a variable that a traced ``call`` read
  directly (``self.position_embeddings``); it holds that very variable, so
  weights stay shared, and saves it as its own.
- `NamedCall`: calls a layer under another name, for rebuilt models in which
  two distinct layers have the same name (every block of a keras_hub backbone
  has a ``self_attention_layer``); it keeps the address it stands for, so the
  graph of a saved and loaded model has the same addresses.

All are registered for `.keras` serialization under ``kerasurgery``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
from keras import ops

from kerasurgery.layers.wrapper import LayerWrapper

#: keras.ops functions that make a tensor from Python values only. Inside a
#: traced call they are recorded (as `Creation`) instead of being evaluated
#: once: ``ops.arange(sequence_length)`` must follow the sequence length.
CREATION_FUNCTIONS = ("arange", "ones", "zeros", "full", "eye", "tri", "linspace", "identity")
_ORIGINAL = {name: getattr(keras.src.ops.numpy, name) for name in CREATION_FUNCTIONS}


@dataclasses.dataclass(frozen=True)
class Dim:
    """``const + sum(k * dims[g] for g, k in terms)``: an integer that follows input sizes.

    Example:
        >>> Dim(1, ((0, 2),)).evaluate([5])
        11
        >>> Dim(1, ((0, 2),)).evaluate([None]) is None
        True
    """

    const: int
    terms: tuple[tuple[int, int], ...] = ()

    def evaluate(self, dims: list) -> Any:
        value: Any = self.const
        for g, k in self.terms:
            if dims[g] is None:
                return None
            value = value + k * dims[g]
        return value


def to_json(value: Any) -> Any:
    """A template (tuples, slices, `Dim`, tensor markers) as JSON-ready data."""
    if isinstance(value, Dim):
        return {"__dim__": [value.const, [list(t) for t in value.terms]]}
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__tensor__":
        return {"__tensor__": value[1]}
    if isinstance(value, tuple):
        return {"__tuple__": [to_json(v) for v in value]}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[k, to_json(v)] for k, v in value.items()]}
    if isinstance(value, slice):
        return {"__slice__": [to_json(v) for v in (value.start, value.stop, value.step)]}
    if hasattr(value, "item") and not hasattr(value, "__len__"):
        return value.item()
    return value


def from_json(value: Any) -> Any:
    """The inverse of `to_json`."""
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        if "__dim__" in value:
            const, terms = value["__dim__"]
            return Dim(int(const), tuple((int(g), int(k)) for g, k in terms))
        if "__tensor__" in value:
            return ("__tensor__", int(value["__tensor__"]))
        if "__tuple__" in value:
            return tuple(from_json(v) for v in value["__tuple__"])
        if "__slice__" in value:
            return slice(*(from_json(v) for v in value["__slice__"]))
        if "__dict__" in value:
            return {k: from_json(v) for k, v in value["__dict__"]}
    return value


def fill_template(value: Any, tensors: list, dims: list) -> Any:
    """A template with tensor markers replaced by `tensors` and `Dim` by their values."""
    if isinstance(value, Dim):
        return value.evaluate(dims)
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__tensor__":
        return tensors[value[1]]
    if isinstance(value, (list, tuple)):
        return type(value)(fill_template(v, tensors, dims) for v in value)
    if isinstance(value, dict):
        return {k: fill_template(v, tensors, dims) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(*(fill_template(v, tensors, dims) for v in (value.start, value.stop, value.step)))
    return value


def _dims(refs: list, axes: list[int]) -> list:
    """The sizes the `Dim` expressions read: axis `a` of reference tensor `r`."""
    return [ops.shape(r)[a] for r, a in zip(refs, axes)]


@keras.saving.register_keras_serializable(package="kerasurgery")
class Creation(keras.Operation):
    """A recorded ``keras.ops`` creation call (``arange``, ``ones``, ...), anchored to a tensor.

    ``Creation("arange")(anchor, 5)`` computes ``keras.ops.arange(5)``;
    `anchor` (any tensor of the graph) only gives the call a place in a
    functional graph, which needs every call to read a tensor.

    Example:
        >>> import numpy as np, keras
        >>> from kerasurgery.layers.traced import Creation
        >>> keras.ops.convert_to_numpy(Creation("arange")(np.zeros(1), 3)).tolist()
        [0, 1, 2]
    """

    def __init__(self, function: str, kwargs: dict | None = None, *, name: str | None = None):
        super().__init__(name=name)
        if function not in CREATION_FUNCTIONS:
            raise ValueError(f"Expected one of {CREATION_FUNCTIONS}. Received: function={function!r}.")
        self.function = function
        self.kwargs = dict(kwargs or {})

    def call(self, anchor: Any, *args: Any) -> Any:
        return _ORIGINAL[self.function](*args, **self.kwargs)

    def compute_output_spec(self, anchor: Any, *args: Any) -> Any:
        value = _ORIGINAL[self.function](*args, **self.kwargs)
        return keras.KerasTensor(tuple(ops.shape(value)), dtype=keras.backend.standardize_dtype(value.dtype))

    def get_config(self) -> dict[str, Any]:
        return {"function": self.function, "kwargs": dict(self.kwargs), "name": self.name}


@keras.saving.register_keras_serializable(package="kerasurgery")
class SizedCall(keras.layers.Layer):
    """A recorded call whose constants follow the input sizes.

    Called as ``sized(tensors, refs)``: `tensors` are the call's tensor
    arguments in order, `refs` one tensor per size it reads (size ``g`` is
    ``shape(refs[g])[axes[g]]``). The operation is rebuilt at each call with
    its config's `Dim` entries evaluated (raw ``keras.ops`` operations), or
    called with its evaluated arguments (layers).

    Args:
        operation: the recorded operation (a raw op or a layer).
        template: ``{"config": ..., "args": ..., "kwargs": ...}`` with `Dim`
            leaves and ``("__tensor__", i)`` markers.
        axes: the axis each size is read from, one per ref.
        outputs: per output, its shape (ints, None or `Dim`) and dtype.

    Example:
        >>> import keras, numpy as np
        >>> from keras import ops
        >>> from kerasurgery.layers.traced import Dim, SizedCall
        >>> x = keras.Input(batch_shape=(1, 3))
        >>> op = ops.broadcast_to(x, (2, 3))._keras_history.operation
        >>> sized = SizedCall(op, {"config": {"shape": (Dim(0, ((0, 1),)), 3)}, "args": (("__tensor__", 0),),
        ...                   "kwargs": {}}, axes=[0], outputs=[((Dim(0, ((0, 1),)), 3), "float32")])
        >>> ops.shape(sized([np.ones((1, 3), "float32")], [np.zeros((5, 3))]))
        (5, 3)
    """

    def __init__(self, operation: Any, template: dict, axes: list[int], outputs: list, **kwargs: Any):
        super().__init__(**kwargs)
        self.operation = operation
        self.template = template
        self.axes = [int(a) for a in axes]
        self.output_specs = [(tuple(s), str(d)) for s, d in outputs]
        self._layer = isinstance(operation, keras.layers.Layer)
        self._base_config = {} if self._layer else {
            k: v for k, v in operation.get_config().items() if k != "name"}

    def _operation(self, dims: list) -> Any:
        if self._layer:
            return self.operation
        config = {**self._base_config, **fill_template(self.template["config"], [], dims)}
        return type(self.operation)(**config)

    def call(self, tensors: list, refs: list) -> Any:
        dims = _dims(refs, self.axes)
        op = self._operation(dims)
        args = fill_template(self.template["args"], list(tensors), dims)
        kwargs = fill_template(self.template["kwargs"], list(tensors), dims)
        return op(*args, **kwargs)

    def compute_output_spec(self, tensors: list, refs: list) -> Any:
        dims = [r.shape[a] for r, a in zip(refs, self.axes)]
        specs = [keras.KerasTensor(tuple(fill_template(s, [], dims)), dtype=d) for s, d in self.output_specs]
        return specs[0] if len(specs) == 1 else specs

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            operation=keras.saving.serialize_keras_object(self.operation),
            template=to_json(self.template),
            axes=list(self.axes),
            outputs=[[to_json(tuple(s)), d] for s, d in self.output_specs],
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SizedCall:
        config = dict(config)
        operation = keras.saving.deserialize_keras_object(config.pop("operation"))
        template = from_json(config.pop("template"))
        outputs = [(from_json(s), d) for s, d in config.pop("outputs")]
        return cls(operation, template, config.pop("axes"), outputs, **config)


@keras.saving.register_keras_serializable(package="kerasurgery")
class VariableRead(keras.layers.Layer):
    """The value of a variable, as a layer output (shares the variable).

    ``VariableRead(variable)(anchor)`` returns the variable's current value;
    `anchor` (any tensor of the model) only places the call in the graph.
    The variable is this layer's weight: training moves it, saving saves it.

    Example:
        >>> import keras, numpy as np
        >>> from kerasurgery.layers.traced import VariableRead
        >>> v = keras.Variable(np.arange(3.0, dtype="float32"))
        >>> read = VariableRead(v)
        >>> keras.ops.convert_to_numpy(read(np.zeros((1,)))).tolist(), read.weights[0] is v
        ([0.0, 1.0, 2.0], True)
    """

    def __init__(self, variable: Any = None, *, shape: tuple | None = None, variable_dtype: str | None = None,
                 variable_trainable: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        if variable is None:
            variable = self.add_weight(shape=tuple(shape or ()), dtype=variable_dtype, trainable=variable_trainable,
                                       initializer="zeros", name="value")
        self.variable = variable
        self.built = True

    def call(self, anchor: Any) -> Any:
        return ops.convert_to_tensor(self.variable)

    def compute_output_spec(self, anchor: Any) -> Any:
        return keras.KerasTensor(tuple(self.variable.shape), dtype=self.variable.dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(shape=list(self.variable.shape), variable_dtype=str(self.variable.dtype),
                      variable_trainable=bool(self.variable.trainable))
        return config


@keras.saving.register_keras_serializable(package="kerasurgery")
class NamedCall(LayerWrapper):
    """Calls `layer` (shared, not copied) under a unique name, standing for `address`.

    Example:
        >>> import keras, numpy as np
        >>> from kerasurgery.layers.traced import NamedCall
        >>> dense = keras.layers.Dense(2, name="proj")
        >>> call = NamedCall(dense, address="block_0/proj", name="block_0.proj")
        >>> tuple(call(np.ones((1, 3))).shape), call.layer is dense
        ((1, 2), True)
    """

    expected = "a Keras layer or operation"

    @staticmethod
    def accepts(layer: Any) -> bool:
        return isinstance(layer, keras.Operation)

    def __init__(self, layer: keras.layers.Layer, *, address: str = "", **kwargs: Any):
        if not isinstance(layer, keras.layers.Layer):
            kwargs.setdefault("dtype", None)
        super().__init__(layer, **kwargs)
        self.address = address
        self.supports_masking = bool(getattr(layer, "supports_masking", False))

    def call(self, *args: Any, **kwargs: Any) -> Any:
        return self.layer(*args, **kwargs)

    def compute_output_spec(self, *args: Any, **kwargs: Any) -> Any:
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return self.layer.compute_mask(inputs, mask)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["address"] = self.address
        return config


@keras.saving.register_keras_serializable(package="kerasurgery")
class Unsaveable(NamedCall):
    """Calls a layer that Keras cannot serialize on its own; saving says so, naming the point.

    A layer opened from a block (keras_hub's ``RMSNormalization`` inside a
    ``GemmaDecoderBlock``) may have been built with arguments only its block
    can recreate; it works in memory but has no config of its own.

    Example:
        >>> import keras
        >>> from kerasurgery.layers.traced import Unsaveable
        >>> call = Unsaveable(keras.layers.Dense(2), address="block/norm", reason="no config")
        >>> try:
        ...     call.get_config()
        ... except ValueError as e:
        ...     print(str(e)[:57])
        Expected every layer of the model to have a config Keras
    """

    def __init__(self, layer: keras.layers.Layer, *, address: str = "", reason: str = "", **kwargs: Any):
        super().__init__(layer, address=address, **kwargs)
        self.reason = reason

    def get_config(self) -> dict[str, Any]:
        from kerasurgery.errors import TransformError

        raise TransformError(
            "Expected every layer of the model to have a config Keras can save. Received: "
            f"'{self.address}' ({type(self.layer).__name__}), a layer of an opened block that Keras cannot "
            f"serialize on its own ({self.reason}). The model works in memory; to save it, keep that block "
            "closed (do not open it, or address only its output), or save the original model."
        )
