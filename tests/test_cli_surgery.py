"""`kerasurgery fold` and `kerasurgery prune`: the files they write, what they print, and bad input.

The written models are loaded back and compared with the original (fold) or
with the library call and numpy rankings (prune); bad input gives exit status
2 and one line on stderr, and nothing is written.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from test_cli import assert_one_line_error, run
from zeroing import randomize_batchnorms
from zoo import ZOO, assert_same_outputs

import kerasurgery as ks


def _foldable():
    x = keras.Input((10, 10, 3), name="image")
    h = layers.Conv2D(8, 3, use_bias=False, name="conv")(x)
    h = layers.ReLU(name="relu")(layers.BatchNormalization(name="bn")(h))
    h = layers.DepthwiseConv2D(3, name="dw")(h)
    h = layers.BatchNormalization(name="dw_bn")(h)
    h = layers.BatchNormalization(name="after_relu")(layers.ReLU(name="relu_2")(h))
    h = layers.Flatten(name="flat")(layers.MaxPooling2D(name="pool")(h))
    return keras.Model(x, layers.Dense(3, name="out")(h), name="foldable")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_surgery")
    keras.utils.set_random_seed(0)
    paths = {"dir": d}
    for name, factory in (("foldable", _foldable), ("cnn_bn", ZOO["cnn_bn"]), ("nested", ZOO["nested_sequential"])):
        model = factory()
        randomize_batchnorms(model)
        paths[name] = str(d / f"{name}.keras")
        model.save(paths[name])
    np.save(d / "images.npy", np.random.default_rng(0).normal(size=(12, 10, 10, 3)).astype("float32"))
    paths["images"] = str(d / "images.npy")
    return paths


def load(path):
    return keras.saving.load_model(path)


def test_help(capsys):
    for command in ("fold", "prune"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and out.startswith(f"usage: kerasurgery {command}")
    assert "    fold" in run(capsys, "--help")[1] and "    prune" in run(capsys, "--help")[1]


def test_fold_writes_an_equal_model(capsys, files, tmp_path):
    path = tmp_path / "folded.keras"
    code, out, err = run(capsys, "fold", files["foldable"], "-o", path, "--data", files["images"])
    assert code == 0, err
    assert "folded 2 BatchNormalization layer(s): bn -> conv, dw_bn -> dw" in out
    assert "left 1:" in out and "after_relu  it follows 'relu_2' (ReLU), not a convolution or Dense" in out
    assert "outputs equal the original's" in out and "on --data" in out
    folded = load(path)
    assert [la.name for la in folded.layers if isinstance(la, layers.BatchNormalization)] == ["after_relu"]
    assert_same_outputs(load(files["foldable"]), folded, np.load(files["images"]), atol=1e-5)


def test_fold_refuses_to_write_over_its_input_or_an_existing_file(capsys, files, tmp_path):
    code, _, err = run(capsys, "fold", files["foldable"], "-o", files["foldable"], "--overwrite")
    assert_one_line_error(code, err, "which is the model file")
    existing = tmp_path / "exists.keras"
    existing.write_text("keep me")
    code, _, err = run(capsys, "fold", files["foldable"], "-o", existing)
    assert_one_line_error(code, err, "already exists. Pass --overwrite")
    assert existing.read_text() == "keep me"
    assert run(capsys, "fold", files["foldable"], "-o", existing, "--overwrite")[0] == 0
    assert isinstance(load(existing), keras.Model)


def test_fold_check_failing_writes_nothing(capsys, files, tmp_path, monkeypatch):
    real = ks.fold_batchnorm

    def fold_with_a_bug(model):
        folded = real(model)
        folded.get_layer("out").bias.assign(folded.get_layer("out").bias + 0.5)
        return folded

    monkeypatch.setattr(ks, "fold_batchnorm", fold_with_a_bug)
    path = tmp_path / "bad.keras"
    code, out, err = run(capsys, "fold", files["foldable"], "-o", path)
    assert code == 1 and "outputs DIFFER" in out and not path.exists()
    assert "nothing written (pass --force" in err
    code, out, _ = run(capsys, "fold", files["foldable"], "-o", path, "--force")
    assert code == 1 and path.exists() and "although its outputs differ (--force)" in out


def test_prune_given_channels(capsys, files, tmp_path):
    path = tmp_path / "pruned.keras"
    code, out, err = run(capsys, "prune", files["cnn_bn"], "--points", "conv", "--channels", "5", "1", "-o", path)
    assert code == 0, err
    original = load(files["cnn_bn"])
    expected = ks.delete_channels(original, "conv", [1, 5])
    pruned = load(path)
    assert pruned.get_layer("conv").filters == 6
    assert_same_outputs(expected, pruned, _images16(), atol=1e-6)
    assert "conv: deleted 2 of 8 channels (1, 5)" in out
    assert f"parameters: {original.count_params():,} -> {pruned.count_params():,}" in out
    assert "outputs moved" in out and "'predictions' max abs" in out


def _images16():
    return np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype("float32")


def test_prune_a_fraction_by_l1(capsys, files, tmp_path):
    path = tmp_path / "pruned.keras"
    code, out, err = run(capsys, "prune", files["cnn_bn"], "--points", "conv", "sep", "--fraction", "0.3",
                         "-o", path)
    assert code == 0, err
    original = load(files["cnn_bn"])
    conv = np.abs(original.get_layer("conv").kernel.numpy()).sum(axis=(0, 1, 2))
    weakest = sorted(np.argsort(conv, kind="stable")[:2])  # floor(0.3 * 8) = 2
    assert f"conv: deleted 2 of 8 channels ({', '.join(map(str, weakest))})" in out
    pruned = load(path)
    np.testing.assert_array_equal(pruned.get_layer("conv").kernel.numpy(),
                                  np.delete(original.get_layer("conv").kernel.numpy(), weakest, axis=3))
    assert pruned.get_layer("sep").filters == 6


def test_prune_by_apoz_on_data(capsys, files, tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, _images16())
    code, out, err = run(capsys, "prune", files["cnn_bn"], "--points", "relu", "--fraction", "0.5", "--by", "apoz",
                         "--data", data, "-o", tmp_path / "p.keras")
    assert code == 0, err
    relu = ks.expose(load(files["cnn_bn"]), ["relu"]).predict(_images16(), verbose=0)["relu"].reshape(-1, 8)
    zeros = (relu == 0).mean(axis=0)
    weakest = sorted(np.argsort(1 - zeros, kind="stable")[:4])  # most zeros first
    assert f"relu: deleted 4 of 8 channels ({', '.join(map(str, weakest))})" in out


def test_prune_nested_points_in_turn(capsys, files, tmp_path):
    path = tmp_path / "n.keras"
    code, out, err = run(capsys, "prune", files["nested"], "--points", "block/seq_dense", "block/seq_out",
                         "--channels", "0", "2", "-o", path)
    assert code == 0, err
    pruned = load(path)
    assert pruned.get_layer("seq_dense").units == 6 and pruned.get_layer("seq_out").units == 2
    assert "block/seq_out: deleted 2 of 4 channels (0, 2)" in out


@pytest.mark.parametrize("argv,match", [
    (["--points", "conv", "--channels", "8"], "Expected channels of 'conv' between 0 and 7. Received: 8"),
    (["--points", "conv", "--channels", *map(str, range(8))], "keep at least one of the 8 channels"),
    (["--points", "convv", "--channels", "1"], "Closest valid addresses: 'conv'"),
    (["--points", "conv", "--fraction", "0.1"], "--fraction 0.1 (rounds down to 0)"),
    (["--points", "relu", "--fraction", "0.5", "--by", "apoz"], "Expected --data with --by apoz"),
    (["--points", "conv", "--fraction", "1.5"], "expected a number between 0 and 1"),
    (["--points", "conv", "--fraction", "0.5", "--channels", "1"], "not allowed with argument"),
    (["--channels", "1"], "the following arguments are required: --points"),
    (["--points", "image", "--channels", "1"], "channels of 'image', where it is a model input"),
])
def test_prune_bad_input(capsys, files, tmp_path, argv, match):
    path = tmp_path / "never.keras"
    code, _, err = run(capsys, "prune", files["cnn_bn"], *argv, "-o", path)
    assert_one_line_error(code, err, match)
    assert not path.exists()
