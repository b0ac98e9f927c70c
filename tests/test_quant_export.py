"""Export of ranges: JSON (with tensor names), TensorRT calibration caches, the address -> tensor-name mapping."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import kerasurgery as ks
from kerasurgery.quant.export import hex_scale, read_tensorrt_cache, scale_hex, tensor_names


def model_and_data():
    keras.utils.set_random_seed(7)
    x = keras.Input((6, 6, 2), name="img")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    inner_in = keras.Input((4,), name="inner_in")
    inner = keras.Model(inner_in, keras.layers.Dense(5, activation="tanh", name="fc")(inner_in), name="head")
    y = inner(keras.layers.GlobalAveragePooling2D(name="gap")(h))
    model = keras.Model(x, keras.layers.Activation("softmax", name="probs")(y), name="export_net")
    data = np.random.default_rng(8).normal(size=(40, 6, 6, 2)).astype("float32")
    return model, data


POINTS = ["img", "conv:pre", "conv", "relu:pre", "relu", "head/fc:pre", "head/fc", "probs:pre", "probs"]


def test_tensor_names_hold_the_same_values_in_the_split_model():
    model, data = model_and_data()
    names = tensor_names(model, POINTS)
    assert names["conv:pre"] == "conv" and names["conv"] == "conv_activation" and names["relu:pre"] == "bn"
    assert names["probs:pre"] == names["head/fc"]
    split = ks.split_activations(model)
    want = ks.collect(model, data, POINTS)
    got = ks.collect(split, data, sorted(set(names.values())))
    for address, name in names.items():
        np.testing.assert_allclose(got[name], want[address], rtol=1e-5, atol=1e-6, err_msg=f"{address} -> {name}")


def test_scale_hex_is_the_big_endian_float32():
    for value in (1.0, 2.0 / 127, 1e-30, 3.5e4):
        assert scale_hex(value) == format(int(np.array(value, ">f4").view(">u4")), "08x")
        assert hex_scale(scale_hex(value)) == float(np.float32(value))
    assert scale_hex(1.0) == "3f800000"


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_tensorrt_cache_holds_amax_over_127_per_tensor(method, tmp_path):
    model, data = model_and_data()
    ranges = ks.calibrate(model, data, POINTS).ranges(method)
    path = tmp_path / "calib.cache"
    mapping = ranges.to_tensorrt(path, names=model)
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert len(lines) == 1 + len(set(mapping.values())) == len(POINTS)  # 'probs:pre' and 'head/fc' share a tensor
    scales = read_tensorrt_cache(path)
    for address, r in ranges.items():
        amax = max(abs(r.low), abs(r.high))
        assert scales[mapping[address]] == float(np.float32(amax / 127)), address
    assert ranges["relu"].kind == "unsigned"  # written with its amax, as TensorRT's signed quantizer
    assert scales["relu"] == pytest.approx(ranges["relu"].scale * 255 / 127, rel=1e-6)
    with pytest.raises(ks.DataError, match="Expected a new file for the calibration cache"):
        ranges.to_tensorrt(path)
    ranges.to_tensorrt(path, overwrite=True, header="TRT-100300-MinMaxCalibration")
    assert path.read_text().splitlines()[0] == "TRT-100300-MinMaxCalibration"
    assert set(read_tensorrt_cache(path)) == set(POINTS)  # names=None: the addresses themselves


def test_json_round_trip_with_tensor_names(tmp_path):
    model, data = model_and_data()
    ranges = ks.calibrate(model, data, POINTS).ranges("percentile", percentile=99.9)
    path = tmp_path / "ranges.json"
    ranges.to_json(path, indent=1, names=model)
    d = json.loads(path.read_text())
    assert d["format"] == "kerasurgery-ranges" and d["method"] == "percentile" and d["percentile"] == 99.9
    assert d["points"]["conv"]["tensor"] == "conv_activation"
    back = ks.Ranges.from_json(path)
    assert list(back) == list(ranges) and back.model == "export_net"
    for a, r in ranges.items():
        assert (back[a].low, back[a].high, back[a].scale, back[a].zero_point, back[a].kind) == (
            r.low, r.high, r.scale, r.zero_point, r.kind)


def test_ranges_tensorrt_cannot_use_are_refused(tmp_path):
    model, data = model_and_data()
    stats = ks.calibrate(model, data, ["conv:pre", "relu"], per_channel=True)
    for ranges, what in ((stats.ranges(bits=4), "signed 4-bit"), (stats.ranges(symmetric=False), "asymmetric 8-bit"),
                         (stats.ranges(per_channel=True), "per channel")):
        with pytest.raises(ks.DataError, match=f"Expected per-tensor symmetric 8-bit ranges.*{what}"):
            ranges.to_tensorrt(tmp_path / "c.cache")
    assert not (tmp_path / "c.cache").exists()
    ranges = stats.ranges()
    with pytest.raises(ks.DataError, match="Expected a tensor name for every point.*relu"):
        ranges.to_tensorrt(tmp_path / "c.cache", names={"conv:pre": "a"})
    with pytest.raises(ks.DataError, match="Expected one range per tensor name"):
        ranges.to_tensorrt(tmp_path / "c.cache", names=lambda a: "same")
    with pytest.raises(ks.DataError, match="Expected `names` to be None"):
        ranges.to_tensorrt(tmp_path / "c.cache", names=3)
