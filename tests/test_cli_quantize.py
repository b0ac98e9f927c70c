"""``kerasurgery calibrate --method ... --export ...`` and ``kerasurgery quantize-check``."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kerasurgery as ks  # noqa: E402
from kerasurgery.cli.main import main  # noqa: E402
from kerasurgery.quant.export import read_tensorrt_cache  # noqa: E402


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    plt.close("all")
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cliq")
    keras.utils.set_random_seed(11)
    x = keras.Input((8, 8, 3), name="img")
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(x)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(x, keras.layers.Dense(4, activation="softmax", name="probs")(h), name="cliq")
    model.save(d / "m.keras")
    data = np.random.default_rng(12).normal(size=(24, 8, 8, 3)).astype("float32")
    np.save(d / "x.npy", data)
    return {"dir": d, "model": str(d / "m.keras"), "data": str(d / "x.npy"), "x": data, "net": model}


def test_calibrate_exports_json_and_tensorrt(capsys, files):
    d = files["dir"]
    code, out, err = run(capsys, "calibrate", files["model"], "--data", files["data"], "--points", "*:pre", "img",
                         "-o", d / "stats.json", "--method", "entropy", "--export", d / "r.json", d / "c.cache",
                         "--quiet")
    assert code == 0, err
    assert "entropy ranges at 8 bits" in out and "wrote " + str(d / "c.cache") in out
    ranges = ks.Ranges.from_json(d / "r.json")
    want = ks.Calibration.from_json(d / "stats.json").ranges("entropy")
    assert list(ranges) == ["conv:pre", "probs:pre", "img"]  # the order of --points
    for a, r in want.items():
        assert (ranges[a].low, ranges[a].high) == (r.low, r.high)
    assert json.loads((d / "r.json").read_text())["points"]["conv:pre"]["tensor"] == "conv"
    scales = read_tensorrt_cache(d / "c.cache")
    assert scales == {"img": pytest.approx(float(np.float32(max(-want["img"].low, want["img"].high) / 127))),
                      "conv": pytest.approx(float(np.float32(want["conv:pre"].high / 127))),
                      "probs": pytest.approx(float(np.float32(want["probs:pre"].high / 127)))}
    code, _, err = run(capsys, "calibrate", files["model"], "--data", files["data"], "-o", d / "s2.json",
                       "--export", d / "r.json", "--quiet")
    assert code == 2 and "--overwrite" in err and not (d / "s2.json").exists()  # refused before anything ran


def test_quantize_check_prints_the_error_table(capsys, files):
    d = files["dir"]
    code, out, err = run(capsys, "quantize-check", files["model"], "--data", files["data"], "--method", "mse",
                         "-o", d / "errors.json", "--plot", d / "sqnr.png", "--threshold", "25", "--quiet")
    assert code == 0, err
    model, data = files["net"], files["x"]
    ranges = ks.calibrate(model, data, "*:pre").ranges("mse")
    want = ks.quantization_error(model, ks.fake_quantize(model, ranges), data)
    got = json.loads((d / "errors.json").read_text())["points"]
    assert list(got) == list(want) == ["conv:pre", "probs:pre", "probs"]
    for a, e in want.items():
        assert got[a]["sqnr_db"] == pytest.approx(e.sqnr_db, rel=1e-6)
        assert f"{e.sqnr_db:8.2f}" in out
    assert "SQNR dB" in out and "probs (output)" in out and (d / "sqnr.png").stat().st_size > 1000
    # from an exported ranges file, 4 bits: less SQNR
    run(capsys, "calibrate", files["model"], "--data", files["data"], "--points", "*:pre", "-o", d / "s4.json",
        "--export", d / "r4.json", "--quiet")
    code, out4, err = run(capsys, "quantize-check", files["model"], "--data", files["data"], "--ranges", d / "r4.json",
                          "--bits", "4", "--quiet")
    assert code == 0, err
    assert "ranges of" in out4 and "4 bits" in out4


@pytest.mark.parametrize("argv, match", [
    (["--method", "median"], "invalid choice: 'median'"),
    (["--method", "percentile", "--percentile", "0"], "Expected `percentile` to be a number in (0, 100]"),
    (["--method", "percentile", "--percentile", "101"], "Expected `percentile` to be a number in (0, 100]"),
    (["--bits", "1"], "Expected `bits` to be an integer from 2 to 16"),
    (["--bits", "17"], "Expected `bits` to be an integer from 2 to 16"),
])
def test_bad_settings_are_one_line_errors(capsys, files, argv, match):
    for command in (["calibrate", "-o", files["dir"] / "bad.json", "--export", files["dir"] / "bad_r.json"],
                    ["quantize-check"]):
        code, _, err = run(capsys, command[0], files["model"], "--data", files["data"], *command[1:], *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err
        assert not (files["dir"] / "bad.json").exists()


def test_ranges_of_another_model_are_refused(capsys, files):
    d = files["dir"]
    x = keras.Input((8, 8, 3), name="img")
    other = keras.Model(x, keras.layers.Conv2D(2, 3, activation="relu", name="conv")(x), name="other")
    stats = ks.calibrate(other, files["x"], "conv:pre")
    stats.ranges().to_json(d / "other.json")
    code, _, err = run(capsys, "quantize-check", files["model"], "--data", files["data"], "--ranges", d / "other.json")
    assert code == 2 and "Expected ranges calibrated on model 'cliq'. Received: ranges of model 'other'" in err
