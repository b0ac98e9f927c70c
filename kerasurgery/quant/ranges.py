"""`Range` and `Ranges`: the quantizer of each point, and their JSON form.

A `Range` is a uniform quantizer: integer codes ``qmin .. qmax`` of ``bits``
bits, a `scale` (the step) and an integer `zero_point`; the value of code
``q`` is ``(q - zero_point) * scale``, so the quantizer covers exactly
``[low, high] = [(qmin - zero_point) * scale, (qmax - zero_point) * scale]``
and maps every value to the nearest code (ties to even, as ONNX's
QuantizeLinear), clipping at the ends. Three kinds:

===============  =======================  ==========  ====================
kind             codes (``bits=8``)       zero point  range
===============  =======================  ==========  ====================
signed           ``-127 .. 127``          0           ``[-amax, amax]``
unsigned         ``0 .. 255``             0           ``[0, amax]``
asymmetric       ``0 .. 255``             0 .. 255    ``[low, high]`` (holds 0)
===============  =======================  ==========  ====================

Signed codes are symmetric (``-(2**(bits-1) - 1)``, not ``-2**(bits-1)``),
as TensorRT's int8. ``symmetric`` is True for the first two (the zero point
is 0). Per-channel ranges hold one `low`, `high`, `scale` and `zero_point`
per channel (numpy arrays) and name the `channel_axis`.

`Ranges` is ``{address: Range}`` with the settings that made it
(`method`, `bits`, ...), `to_json`/`from_json` (the schema is in
docs/quantization.md) and `to_tensorrt` (`kerasurgery.quant.export`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.runtime.h5 import json_text, write_text

FORMAT = "kerasurgery-ranges"
VERSION = 1
KINDS = ("signed", "unsigned", "asymmetric")
#: The smallest scale: a point that was always zero gets it, so every value maps to (about) zero.
TINY = float(np.finfo(np.float32).tiny)


def codes(bits: int, kind: str) -> tuple[int, int]:
    """``(qmin, qmax)`` of a quantizer of `bits` bits and `kind`.

    Example:
        >>> codes(8, "signed"), codes(8, "unsigned"), codes(4, "asymmetric")
        ((-127, 127), (0, 255), (0, 15))
    """
    if kind == "signed":
        top = 2 ** (bits - 1) - 1
        return -top, top
    return 0, 2**bits - 1


@dataclasses.dataclass(frozen=True, eq=False)
class Range:
    """The quantizer of one point (see the module's table).

    Attributes:
        address: the point.
        low, high: the clipping range the quantizer covers exactly
            (floats, or arrays with one value per channel).
        scale: the step between two codes; zero_point: the code of 0.
        bits: code width; qmin, qmax: the smallest and largest code.
        symmetric: the zero point is 0; signed: codes below 0 exist.
        method: how the range was chosen (``minmax``, ``percentile``,
            ``entropy``, ``mse``).
        channel_axis: the axis (counted with the batch) of per-channel
            ranges, None per tensor.

    Example:
        >>> import numpy as np
        >>> from kerasurgery.quant.ranges import make_range
        >>> r = make_range("relu:pre", -2.0, 1.0, bits=8, kind="signed", method="minmax")
        >>> r.low, r.high, r.scale == 2.0 / 127, r.zero_point
        (-2.0, 2.0, True, 0)
        >>> r.fake_quantize(np.array([0.01, 5.0])).tolist() == [2.0 / 127, 2.0]
        True
    """

    address: str
    low: Any
    high: Any
    scale: Any
    zero_point: Any
    bits: int
    qmin: int
    qmax: int
    symmetric: bool
    signed: bool
    method: str
    channel_axis: int | None = None

    @property
    def kind(self) -> str:
        """``"signed"``, ``"unsigned"`` or ``"asymmetric"``."""
        return "asymmetric" if not self.symmetric else ("signed" if self.signed else "unsigned")

    @property
    def per_channel(self) -> bool:
        return self.channel_axis is not None

    def _shaped(self, value: Any, x: np.ndarray) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self.channel_axis is None or x.ndim < 2:
            return value
        shape = [1] * x.ndim
        shape[self.channel_axis] = value.size
        return value.reshape(shape)

    def quantize(self, x: Any) -> np.ndarray:
        """Integer codes of `x` (numpy, float64 arithmetic; `x` includes the batch axis if per channel)."""
        x = np.asarray(x, np.float64)
        scale, zero = self._shaped(self.scale, x), self._shaped(self.zero_point, x)
        return np.clip(np.round(x / scale) + zero, self.qmin, self.qmax).astype(np.int64)

    def dequantize(self, q: Any) -> np.ndarray:
        """The values of codes `q`."""
        q = np.asarray(q, np.float64)
        return (q - self._shaped(self.zero_point, q)) * self._shaped(self.scale, q)

    def fake_quantize(self, x: Any) -> np.ndarray:
        """``dequantize(quantize(x))``: what `kerasurgery.fake_quantize` computes at this point (numpy)."""
        return self.dequantize(self.quantize(x))

    def with_bits(self, bits: int) -> Range:
        """The quantizer of the same kind over the same clipping range with another code width."""
        if bits == self.bits:
            return self
        return make_range(self.address, self.low, self.high, bits=bits, kind=self.kind, method=self.method,
                          channel_axis=self.channel_axis)

    def to_dict(self) -> dict:
        out = lambda v: np.asarray(v).tolist()  # noqa: E731 - floats stay exact (repr round trip)
        return {"low": out(self.low), "high": out(self.high), "scale": out(self.scale),
                "zero_point": out(self.zero_point), "bits": self.bits, "qmin": self.qmin, "qmax": self.qmax,
                "symmetric": self.symmetric, "signed": self.signed, "method": self.method,
                "channel_axis": self.channel_axis}

    @classmethod
    def from_dict(cls, address: str, d: dict) -> Range:
        axis = d.get("channel_axis")

        def value(key: str, dtype: Any) -> Any:
            v = np.asarray(d[key], dtype)
            return v if axis is not None else v.item()

        return cls(address, low=value("low", np.float64), high=value("high", np.float64),
                   scale=value("scale", np.float64), zero_point=value("zero_point", np.int64),
                   bits=int(d["bits"]), qmin=int(d["qmin"]), qmax=int(d["qmax"]), symmetric=bool(d["symmetric"]),
                   signed=bool(d["signed"]), method=str(d["method"]), channel_axis=axis)

    def __repr__(self) -> str:
        if self.per_channel:
            lo, hi = np.asarray(self.low), np.asarray(self.high)
            where = f"{lo.size} channels on axis {self.channel_axis}, low {lo.min():.4g}.., high ..{hi.max():.4g}"
        else:
            where = f"[{self.low:.6g}, {self.high:.6g}], scale={self.scale:.6g}, zero_point={self.zero_point}"
        return f"Range({self.address!r}, {where}, {self.kind} {self.bits}-bit, {self.method})"


def make_range(address: str, low: Any, high: Any, *, bits: int, kind: str, method: str,
               channel_axis: int | None = None) -> Range:
    """The `Range` of `kind` whose codes cover the clipping range ``[low, high]``.

    signed: ``amax = max(|low|, |high|)``, ``scale = amax / qmax``; unsigned:
    ``scale = high / qmax``; asymmetric: the range is widened to hold 0, then
    ``scale = (high - low) / (qmax - qmin)`` and the zero point is rounded,
    which moves the range by less than half a step so that 0 is a code. A
    range of width 0 gets the scale `TINY` (every value maps to about 0).
    """
    lo = np.atleast_1d(np.asarray(low, np.float64))
    hi = np.atleast_1d(np.asarray(high, np.float64))
    qmin, qmax = codes(bits, kind)
    if kind == "signed":
        amax = np.maximum(np.abs(lo), np.abs(hi))
        scale = np.where(amax > 0, amax / qmax, TINY)
        zero: np.ndarray = np.zeros(lo.shape, np.int64)
    elif kind == "unsigned":
        amax = np.maximum(hi, 0.0)
        scale = np.where(amax > 0, amax / qmax, TINY)
        zero = np.zeros(lo.shape, np.int64)
    else:
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        scale = np.where(hi > lo, (hi - lo) / (qmax - qmin), TINY)
        zero = np.clip(np.round(qmin - lo / scale), qmin, qmax).astype(np.int64)
    low_q: np.ndarray = (qmin - zero) * scale
    high_q: np.ndarray = (qmax - zero) * scale
    if kind != "asymmetric":  # exactly the clipping range (qmax * (amax / qmax) may be off by an ulp)
        low_q, high_q = (-amax if kind == "signed" else np.zeros(amax.shape)), amax
    low_q = np.where(scale > TINY, low_q, 0.0)
    high_q = np.where(scale > TINY, high_q, 0.0)
    one = (lambda v: v) if channel_axis is not None else (lambda v: v.item())
    return Range(address, low=one(low_q), high=one(high_q), scale=one(scale), zero_point=one(zero), bits=int(bits),
                 qmin=qmin, qmax=qmax, symmetric=kind != "asymmetric", signed=kind == "signed", method=method,
                 channel_axis=channel_axis)


class Ranges(dict):
    """``{address: Range}`` from `kerasurgery.Calibration.ranges`, with the settings that made it.

    Attributes:
        model: the name of the model the statistics came from (None if unknown).
        method, bits, symmetric, percentile, per_channel: the arguments of
            `Calibration.ranges` (`percentile` only for that method).

    Example:
        >>> import keras, numpy as np, kerasurgery as ks
        >>> x = keras.Input((4,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x))
        >>> data = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> ranges = ks.calibrate(model, data, ["d:pre", "d"]).ranges("minmax")
        >>> ranges["d"].kind, ranges["d:pre"].kind      # after the ReLU: unsigned codes
        ('unsigned', 'signed')
        >>> back = ks.Ranges.from_json(ranges.to_json())
        >>> back["d"].scale == ranges["d"].scale
        True
    """

    def __init__(self, items: Any = (), *, model: str | None = None, method: str = "minmax", bits: int = 8,
                 symmetric: bool | None = None, percentile: float | None = None, per_channel: bool = False):
        super().__init__(items)
        self.model = model
        self.method = method
        self.bits = int(bits)
        self.symmetric = symmetric
        self.percentile = percentile
        self.per_channel = bool(per_channel)

    def to_dict(self, *, names: Any = None) -> dict:
        """The JSON-ready form (schema in docs/quantization.md).

        `names`: as for `to_tensorrt` (a `keras.Model`, a dict or a function);
        if given, each point also gets its ``"tensor"`` name.
        """
        points = {a: r.to_dict() for a, r in self.items()}
        if names is not None:
            from kerasurgery.quant.export import names_of

            for address, name in names_of(self, names).items():
                points[address]["tensor"] = name
        return {"format": FORMAT, "version": VERSION, "model": self.model, "method": self.method, "bits": self.bits,
                "symmetric": self.symmetric, "percentile": self.percentile, "per_channel": self.per_channel,
                "points": points}

    def to_json(self, path: Any = None, *, indent: int | None = None, names: Any = None,
                overwrite: bool = False) -> str:
        """The ranges as JSON text, also written to `path` if given; `from_json` reads it back exactly.

        `names` adds each point's tensor name (see `to_dict`). An existing
        `path` is refused unless `overwrite`.
        """
        text = json.dumps(self.to_dict(names=names), indent=indent)
        if path is not None:
            write_text(path, text, overwrite=overwrite, what="ranges")
        return text

    @classmethod
    def from_dict(cls, d: Any) -> Ranges:
        if not isinstance(d, dict) or d.get("format") != FORMAT or not isinstance(d.get("points"), dict):
            raise DataError(
                f"Expected ranges written by `Ranges.to_json` (a JSON object with \"format\": \"{FORMAT}\" and "
                f"\"points\"). Received: {str(d)[:120]!r}. Statistics from `calibrate` are read with "
                "`kerasurgery.Calibration.from_json`; call `.ranges(...)` on them."
            )
        if int(d.get("version", 0)) > VERSION:
            raise DataError(f"Expected ranges of format version {VERSION} or older. Received: version {d['version']}; "
                            "upgrade kerasurgery to read them.")
        try:
            points = ((a, Range.from_dict(a, r)) for a, r in d["points"].items())
            return cls(points, model=d.get("model"), method=d.get("method", "minmax"), bits=d.get("bits", 8),
                       symmetric=d.get("symmetric"), percentile=d.get("percentile"),
                       per_channel=d.get("per_channel", False))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"Expected every point of the ranges to have the fields of `Range.to_dict`. "
                            f"Received: {type(e).__name__}: {e}.") from None

    @classmethod
    def from_json(cls, text_or_path: Any) -> Ranges:
        """Read `to_json` output, given as the text itself or a file path."""
        try:
            d = json.loads(json_text(text_or_path))
        except json.JSONDecodeError as e:
            raise DataError(f"Expected ranges as JSON. Received: text that is not JSON ({e}).") from None
        return cls.from_dict(d)

    def to_tensorrt(self, path: Any, *, names: Any = None, header: str | None = None,
                    overwrite: bool = False) -> dict[str, str]:
        """Write a TensorRT calibration cache; see `kerasurgery.quant.export.write_tensorrt_cache`."""
        from kerasurgery.quant.export import write_tensorrt_cache

        return write_tensorrt_cache(self, path, names=names, header=header, overwrite=overwrite)

    def __repr__(self) -> str:
        of = f" of model {self.model!r}" if self.model else ""
        setting = f"{self.method}" + (f" {self.percentile:g}" if self.method == "percentile" else "")
        return f"Ranges({len(self)} point(s){of}: {setting}, {self.bits} bits{', per channel' if self.per_channel else ''})"
