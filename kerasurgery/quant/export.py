"""Export: ranges as a TensorRT calibration cache, and the tensor name of each address.

A TensorRT calibration cache (what ``IInt8Calibrator.readCalibrationCache``
returns, and what ``trtexec --calib=<file>`` reads) is a header line naming
the TensorRT version and calibrator, then one line per tensor::

    TRT-8601-EntropyCalibration2
    input_1: 3c010a14
    conv1: 3d3ac3a4

The number is the tensor's scale (``amax / 127``) as a big-endian IEEE-754
float32, in 8 hex digits. TensorRT quantizes activations per tensor,
symmetric, to signed 8-bit codes, so only such ranges can be written:
``bits=8``, not per channel, not asymmetric (``symmetric=False``).
Unsigned ranges (``[0, amax]``, after a ReLU) are written with the same
``amax``, as the signed quantizer over ``[-amax, amax]`` that TensorRT will
use (their own scale, ``amax / 255``, has no TensorRT equivalent).

Tensor names. TensorRT looks tensors up by the names in the network it
builds (from ONNX: the ONNX tensor names), which an exporter chooses.
`tensor_names` maps each address to the address of the same value in
``kerasurgery.split_activations(model)`` (a flat model: the layers of nested
models keep their names, without the path), where every value has a layer of
its own: ``conv:pre`` -> ``conv`` (the linear part keeps the layer's name),
``conv`` (after its fused activation) -> ``conv_activation``, ``relu:pre``
(the input of an activation layer) -> the value that feeds it (``bn``),
other addresses unchanged, ``[i]`` for the i-th output of a layer with
several. Those are the Keras layer names an ONNX export of the split model
starts its tensor names with; when your exporter adds more (``/BiasAdd:0``,
a model prefix), pass ``names=`` a dict or a function.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any

import keras

from kerasurgery.errors import DataError
from kerasurgery.ir.edits import input_feed
from kerasurgery.ir.from_keras import graph_for
from kerasurgery.ir.resolve import Resolver
from kerasurgery.layers import kinds
from kerasurgery.passes.split import split_activations_pass
from kerasurgery.runtime.h5 import write_text

#: The header TensorRT 8.6.1 writes for ``IInt8EntropyCalibrator2`` (the calibrator to read the cache with).
DEFAULT_HEADER = "TRT-8601-EntropyCalibration2"


def tensor_names(model: keras.Model, addresses: Any) -> dict[str, str]:
    """``{address: the address of the same value in split_activations(model)}`` (see the module's text).

    Example:
        >>> import keras, kerasurgery as ks
        >>> from kerasurgery.quant.export import tensor_names
        >>> x = keras.Input((4,), name="x")
        >>> h = keras.layers.Dense(3, activation="relu", name="d")(x)
        >>> model = keras.Model(x, keras.layers.Activation("sigmoid", name="act")(h))
        >>> tensor_names(model, ["x", "d:pre", "d", "act:pre", "act"])
        {'x': 'x', 'd:pre': 'd', 'd': 'd_activation', 'act:pre': 'd_activation', 'act': 'act'}
    """
    addresses = [addresses] if isinstance(addresses, str) else list(addresses)
    graph = graph_for(model, addresses)
    split = split_activations_pass(graph, copy=False)
    resolver = Resolver(graph)

    def layer(key: str) -> str:
        """The layer's name in the rebuilt (flat) split model, with its call site if not the first."""
        data = split.nodes[key]
        name = getattr(data.get("op"), "name", None) or data.get("name") or key
        call = int(data.get("call", 0) or 0)
        return f"{name}@{call}" if call else str(name)

    def plain(node: str, index: int) -> str:
        added = [v for v in split.successors(node) if v not in graph]  # the activation split from `node`
        key = added[0] if added and index == 0 else node
        return layer(key) if index == 0 else f"{layer(key)}[{index}]"

    out = {}
    for address in addresses:
        point = resolver.resolve_one(address)
        if point.port is None:
            out[address] = plain(point.node, point.index)
        elif point.port == "pre" and kinds.is_activation_layer(graph.nodes[point.node]["op"]):
            parent, index, _ = input_feed(graph, point.node)
            out[address] = plain(parent, index)
        elif point.port == "pre":
            out[address] = layer(point.node)
        else:  # attention scores: no layer of their own
            out[address] = address
    return out


def names_of(ranges: Mapping, names: Any) -> dict[str, str]:
    """``{address: tensor name}`` for every point of `ranges` from a `names=` argument."""
    if names is None:
        return {a: a for a in ranges}
    if isinstance(names, keras.Model):
        return tensor_names(names, list(ranges))
    if callable(names):
        return {a: str(names(a)) for a in ranges}
    if isinstance(names, Mapping):
        missing = [a for a in ranges if a not in names]
        if missing:
            raise DataError(f"Expected a tensor name for every point of the ranges. Received: none for {missing[:6]}.")
        return {a: str(names[a]) for a in ranges}
    raise DataError("Expected `names` to be None (the addresses), a keras.Model (`tensor_names`), a dict "
                    f"{{address: tensor name}} or a function. Received: {type(names).__name__}.")


def scale_hex(scale: float) -> str:
    """A float32 as TensorRT's caches write it: 8 hex digits of its big-endian bits.

    Example:
        >>> scale_hex(1.0), scale_hex(2.0 / 127)
        ('3f800000', '3c810204')
    """
    return struct.pack(">f", float(scale)).hex()


def hex_scale(text: str) -> float:
    """The float32 written by `scale_hex` (as a Python float)."""
    return float(struct.unpack(">f", bytes.fromhex(text.strip().rjust(8, "0")))[0])


def tensorrt_lines(ranges: Mapping, names: Any = None, header: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The lines of the cache and ``{address: tensor name}``; refuses ranges TensorRT cannot use."""
    bad = [(a, r) for a, r in ranges.items() if r.bits != 8 or r.per_channel or not r.symmetric]
    if bad:
        a, r = bad[0]
        raise DataError(
            "Expected per-tensor symmetric 8-bit ranges for a TensorRT calibration cache (TensorRT's int8 "
            f"activations). Received: {len(bad)} other(s), such as {a!r}: {r.kind} {r.bits}-bit"
            + (", per channel" if r.per_channel else "") + ". Make them with "
            "`calibration.ranges(method, bits=8, per_channel=False)` and symmetric=None or True."
        )
    mapping = names_of(ranges, names)
    seen: dict[str, str] = {}
    for address, name in mapping.items():
        if name in seen and ranges[seen[name]].high != ranges[address].high:
            raise DataError(f"Expected one range per tensor name. Received: {seen[name]!r} and {address!r} both "
                            f"named {name!r}, with different ranges.")
        if not name or "\n" in name:
            raise DataError(f"Expected a one-line tensor name for {address!r}. Received: {name!r}.")
        seen.setdefault(name, address)
    lines = [header or DEFAULT_HEADER]
    for name, address in seen.items():
        r = ranges[address]
        amax = max(abs(float(r.low)), abs(float(r.high)))
        lines.append(f"{name}: {scale_hex(amax / 127.0)}")
    return lines, mapping


def write_tensorrt_cache(ranges: Mapping, path: Any, *, names: Any = None, header: str | None = None,
                         overwrite: bool = False) -> dict[str, str]:
    """Write `ranges` as a TensorRT calibration cache (see the module's text for the format).

    Args:
        ranges: `kerasurgery.Ranges`, per tensor, symmetric (signed or
            unsigned), 8 bits.
        path: the file to write (written whole or not at all).
        names: the tensor name of each address: None, the addresses
            themselves; a `keras.Model` (the one calibrated), the names of
            `tensor_names`; a dict ``{address: name}``; or a function.
        header: the first line (default `DEFAULT_HEADER`; TensorRT ignores a
            cache whose header names another calibrator than the one reading it).
        overwrite: replace an existing file.

    Returns:
        ``{address: tensor name}``, the mapping used.

    Raises:
        DataError: ranges TensorRT cannot use, a missing name, two addresses
            with one name and different ranges, an existing file.

    Example:
        >>> import keras, numpy as np, os, tempfile, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> data = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> ranges = ks.calibrate(model, data, ["x", "d:pre", "d"]).ranges("entropy")
        >>> path = os.path.join(tempfile.mkdtemp(), "calib.cache")
        >>> write_tensorrt_cache(ranges, path, names=model)
        {'x': 'x', 'd:pre': 'd', 'd': 'd_activation'}
        >>> open(path).read().splitlines()[0], len(read_tensorrt_cache(path))
        ('TRT-8601-EntropyCalibration2', 3)
    """
    lines, mapping = tensorrt_lines(ranges, names, header)
    write_text(path, "\n".join(lines) + "\n", overwrite=overwrite, what="calibration cache")
    return mapping


def read_tensorrt_cache(path: Any) -> dict[str, float]:
    """``{tensor name: scale}`` of a TensorRT calibration cache (the header line skipped)."""
    out = {}
    with open(os.fspath(path)) as f:
        for number, line in enumerate(f):
            line = line.rstrip("\n")
            if number == 0 or not line.strip():
                continue
            name, sep, value = line.rpartition(": ")
            if not sep:
                raise DataError(f"Expected 'name: hex scale' lines in {path!r}. Received: line {number + 1} {line!r}.")
            out[name] = hex_scale(value)
    return out

