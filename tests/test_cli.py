"""The `kerasurgery` command: every subcommand on saved models, and every bad input.

Commands run in-process through `kerasurgery.cli.main(argv)`; one class runs
the installed console script in a subprocess. Bad input must give exit status
2 and exactly one line on stderr, with no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import keras
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import zoo  # noqa: E402

import kerasurgery as ks  # noqa: E402
from kerasurgery.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Saved models and data files shared by the tests of this module."""
    d = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    paths = {"dir": d}
    for name in ("cnn_bn", "attention", "multi_io", "siamese", "nested_functional"):
        paths[name] = str(d / f"{name}.keras")
        zoo.ZOO[name]().save(paths[name])
    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Lambda(lambda t: t * 2, name="double")(x), name="with_lambda").save(d / "lambda.keras")
    paths["lambda"] = str(d / "lambda.keras")
    rng = np.random.default_rng(0)
    np.save(d / "images.npy", rng.random((12, 16, 16, 3), dtype="float32"))
    np.save(d / "vectors.npy", rng.random((9, 6), dtype="float32"))
    np.save(d / "bad_shape.npy", rng.random((12, 16, 3), dtype="float32"))
    np.savez(d / "multi.npz", a=rng.random((6, 4), dtype="float32"), b=rng.random((6, 3), dtype="float32"))
    np.savez(d / "multi_missing.npz", a=rng.random((6, 4), dtype="float32"))
    np.savez(d / "tokens.npz", tokens=rng.random((5, 5, 8), dtype="float32"), mask=np.ones((5, 5, 5), bool))
    (d / "text.keras").write_text("this is not a model")
    (d / "notes.txt").write_text("hello")
    for name in ("images", "vectors", "bad_shape", "multi", "multi_missing", "tokens", "text", "notes"):
        suffix = {"images": ".npy", "vectors": ".npy", "bad_shape": ".npy", "text": ".keras", "notes": ".txt"}.get(name, ".npz")
        paths[name] = str(d / f"{name}{suffix}")
    return paths


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `kerasurgery argv...` run in-process."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    plt.close("all")
    return code, out, err


def assert_one_line_error(code, err, match):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("kerasurgery")
    assert match in lines[0], lines[0]


# ---------------------------------------------------------------------------
# subcommands


class TestHelp:
    @pytest.mark.parametrize("command", ["demo", "inspect", "graph", "split", "expose", "collect", "calibrate", "fold", "prune"])
    def test_every_subcommand_has_help(self, capsys, command):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0
        assert out.startswith(f"usage: kerasurgery {command}")

    def test_top_level_help_lists_every_subcommand(self, capsys):
        code, out, _ = run(capsys, "--help")
        assert code == 0
        for command in ("demo", "inspect", "graph", "split", "expose", "collect", "calibrate", "fold", "prune"):
            assert f"    {command}" in out

    def test_no_command_prints_help_and_fails(self, capsys):
        code, out, _ = run(capsys)
        assert code == 2 and "usage: kerasurgery" in out


class TestInspect:
    def test_table_lists_every_point(self, capsys, files):
        code, out, err = run(capsys, "inspect", files["cnn_bn"])
        assert code == 0 and err == ""
        lines = out.splitlines()
        assert lines[1].split() == ["address", "layer", "output", "shape", "activation", "params"]
        rows = {line.split()[0]: line for line in lines[3:-1]}
        assert list(rows) == ks.points(zoo.cnn_bn())
        assert rows["conv"].split()[1:] == ["Conv2D", "(None,", "16,", "16,", "8)", "relu", "224"]
        assert "before relu" in rows["conv:pre"]
        assert lines[-1] == "16 point(s); 792 parameters (776 trainable)"

    def test_activation_column_is_precise(self, capsys, tmp_path):
        L = keras.layers
        x = keras.Input((4, 4, 3), name="x")
        expected = {}
        h = x
        for layer, text in [
            (L.ReLU(name="plain_relu"), "relu"),
            (L.ReLU(max_value=6, name="relu_6"), "relu6"),
            (L.ReLU(max_value=6.0, negative_slope=0.1, name="leaky_capped"), "relu(max_value=6, negative_slope=0.1)"),
            (L.ReLU(threshold=0.5, name="thresholded"), "relu(threshold=0.5)"),
            (L.ReLU(max_value=4, name="relu_4"), "relu(max_value=4)"),
            (L.LeakyReLU(name="leaky"), "leaky_relu(negative_slope=0.3)"),
            (L.LeakyReLU(negative_slope=0.01, name="leaky_001"), "leaky_relu(negative_slope=0.01)"),
            (L.ELU(name="elu_1"), "elu"),
            (L.ELU(alpha=0.5, name="elu_half"), "elu(alpha=0.5)"),
            (L.PReLU(name="prelu"), "prelu (learned slope)"),
            (L.PReLU(shared_axes=[1, 2], name="prelu_shared"), "prelu (learned slope, shared_axes=[1, 2])"),
            (L.Softmax(name="softmax_last"), "softmax"),
            (L.Softmax(axis=1, name="softmax_1"), "softmax(axis=1)"),
            (L.Activation("relu6", name="act_relu6"), "relu6"),
            (L.Activation("gelu", name="act_gelu"), "gelu"),
            (L.Dense(3, activation="relu6", name="dense_relu6"), "relu6"),
        ]:
            h = layer(h)
            expected[layer.name] = text
        path = tmp_path / "activations.keras"
        keras.Model(x, h).save(path)
        code, out, err = run(capsys, "inspect", path, "--json")
        assert code == 0, err
        rows = {row["address"]: row["activation"] for row in json.loads(out)}
        assert {a: rows[a] for a in expected} == expected
        assert {a: rows[f"{a}:pre"] for a in expected} == {a: f"before {t}" for a, t in expected.items()}
        code, out, _ = run(capsys, "inspect", path, "--points", "relu_6", "leaky_capped")
        table = {line.split()[0]: line for line in out.splitlines()[3:-1]}
        assert table["relu_6"].split()[1:] == ["ReLU", "(None,", "4,", "4,", "3)", "relu6", "0"]
        assert "relu(max_value=6, negative_slope=0.1)" in table["leaky_capped"]

    def test_pattern_and_json(self, capsys, files):
        code, out, _ = run(capsys, "inspect", files["attention"], "--points", "*:scores", "--json")
        assert code == 0
        rows = json.loads(out)
        assert [r["address"] for r in rows] == ["mha:scores", "gqa:scores"]
        assert rows[0]["shape"] == "(None, 2, 5, 5)" and rows[0]["layer"] == "MultiHeadAttention"

    def test_nested_call_sites(self, capsys, files):
        code, out, _ = run(capsys, "inspect", files["siamese"], "--points", "encoder/*")
        assert code == 0
        assert [line.split()[0] for line in out.splitlines()[3:-1]] == ["encoder/proj@0", "encoder/proj@1"]


def _nodes_and_edges(model_path):
    graph = ks.to_graph(keras.saving.load_model(model_path))
    return set(graph.nodes), set(graph.edges)


class TestGraph:
    """The written file holds the graph: every node and edge, or a real picture."""

    @pytest.mark.parametrize("model", ["cnn_bn", "siamese"])
    def test_dot(self, capsys, files, tmp_path, model):
        import re

        path = tmp_path / "model.dot"
        point = {"cnn_bn": "conv:pre", "siamese": "encoder/proj@1"}[model]
        code, out, err = run(capsys, "graph", files[model], "-o", path, "--points", point)
        assert code == 0, err
        nodes, edges = _nodes_and_edges(files[model])
        text = path.read_text()
        assert text.startswith(f'digraph "{model}" {{') and text.rstrip().endswith("}")
        declared = dict(re.findall(r'^\s*"([^"]+)" \[(.*)\];$', text, flags=re.M))
        assert set(declared) == nodes
        assert set(re.findall(r'^\s*"([^"]+)" -> "([^"]+)";$', text, flags=re.M)) == edges
        highlighted = {key for key, attrs in declared.items() if "penwidth=3" in attrs}
        assert highlighted == {point.split(":")[0]}
        assert out.strip() == f"wrote the graph of '{model}' ({len(nodes)} nodes) as dot to {path}"

    @pytest.mark.parametrize("model", ["cnn_bn", "siamese"])
    @pytest.mark.parametrize("suffix", ["graphml", "json"])
    def test_graphml_and_json(self, capsys, files, tmp_path, model, suffix):
        import networkx as nx

        path = tmp_path / f"model.{suffix}"
        code, _, err = run(capsys, "graph", files[model], "-o", path)
        assert code == 0, err
        if suffix == "graphml":
            written = nx.read_graphml(path)
        else:
            data = json.loads(path.read_text())
            written = nx.node_link_graph(data, edges="edges" if "edges" in data else "links")
        nodes, edges = _nodes_and_edges(files[model])
        assert set(written.nodes) == nodes and set(written.edges) == edges
        reference = ks.to_graph(keras.saving.load_model(files[model]))
        for key in nodes:
            assert written.nodes[key]["class_name"] == reference.nodes[key]["class_name"]

    @pytest.mark.parametrize("suffix", ["svg", "png", "pdf"])
    def test_drawings(self, capsys, files, tmp_path, suffix):
        path = tmp_path / f"model.{suffix}"
        code, out, err = run(capsys, "graph", files["cnn_bn"], "-o", path, "--points", "conv:pre",
                             "--engine", "matplotlib")
        assert code == 0, err
        assert out.strip() == f"wrote the graph of 'cnn_bn' (10 nodes) as {suffix} to {path}"
        nodes, _ = _nodes_and_edges(files["cnn_bn"])
        if suffix == "png":
            image = plt.imread(path)
            assert image.shape[0] >= 300 and image.shape[1] >= 200 and image.std() > 0.05
        elif suffix == "svg":
            import xml.etree.ElementTree as ET

            root = ET.parse(path).getroot()
            assert root.tag.endswith("svg")
            assert float(root.get("width").rstrip("pt")) >= 200 and float(root.get("height").rstrip("pt")) >= 200
            text = path.read_text()
            assert all(f"<!-- {key}" in text or f">{key}<" in text for key in nodes), "a node is missing"
        else:
            data = path.read_bytes()
            assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF") and len(data) > 2000


class TestSplit:
    def test_split_writes_an_equal_model(self, capsys, files, tmp_path):
        path = tmp_path / "split.keras"
        code, out, err = run(capsys, "split", files["cnn_bn"], "-o", path)
        assert code == 0, err
        assert "conv_activation" in out and "max abs difference 0" in out
        original, split = keras.saving.load_model(files["cnn_bn"]), keras.saving.load_model(path)
        assert "conv_activation" in [layer.name for layer in split.layers]
        data = np.load(files["images"])
        zoo.assert_same_outputs(original, split, data)

    def test_some_layers_checked_on_data(self, capsys, files, tmp_path):
        path = tmp_path / "split.keras"
        code, out, _ = run(capsys, "split", files["cnn_bn"], "-o", path, "--points", "conv", "predictions",
                           "--data", files["images"])
        assert code == 0
        assert "2 activation(s)" in out and "on --data" in out
        names = [layer.name for layer in keras.saving.load_model(path).layers]
        assert "predictions_activation" in names and "dw_activation" not in names


def _perturbed_split(monkeypatch, delta):
    """Make `kerasurgery split` produce a model whose 'predictions' biases are off by 0, delta, 2 delta, ..."""
    real = ks.split_activations

    def split_with_a_bug(model, layers=None):
        split = real(model, layers)
        bias = split.get_layer("predictions").bias
        bias.assign(bias + delta * np.arange(bias.shape[0], dtype="float32"))
        return split

    monkeypatch.setattr(ks, "split_activations", split_with_a_bug)


class TestSplitCheck:
    """The equality check of `kerasurgery split` fails loudly; a difference is never called equal."""

    def test_a_difference_fails(self, capsys, files, tmp_path, monkeypatch):
        _perturbed_split(monkeypatch, 0.5)
        path = tmp_path / "split.keras"
        code, out, err = run(capsys, "split", files["cnn_bn"], "-o", path)
        assert code == 1
        assert "outputs DIFFER from the original's: max abs difference" in out and "equal" not in out
        assert "output 'predictions'" in out
        assert err.startswith("kerasurgery split: error: the split model's outputs differ") and "--force" in err
        assert len(err.strip().splitlines()) == 1
        assert not path.exists() and os.listdir(tmp_path) == []

    def test_force_writes_it_and_still_fails(self, capsys, files, tmp_path, monkeypatch):
        _perturbed_split(monkeypatch, 0.5)
        path = tmp_path / "split.keras"
        code, out, err = run(capsys, "split", files["cnn_bn"], "-o", path, "--force")
        assert code == 1 and "DIFFER" in out and "written anyway (--force)" in err
        split = keras.saving.load_model(path)
        with pytest.raises(AssertionError):
            zoo.assert_same_outputs(keras.saving.load_model(files["cnn_bn"]), split, np.load(files["images"]))

    def test_atol(self, capsys, files, tmp_path, monkeypatch):
        _perturbed_split(monkeypatch, 1e-3)
        code, out, _ = run(capsys, "split", files["cnn_bn"], "-o", tmp_path / "a.keras", "--data", files["images"])
        assert code == 1 and "DIFFER" in out
        code, out, err = run(capsys, "split", files["cnn_bn"], "-o", tmp_path / "b.keras", "--data", files["images"],
                             "--atol", "0.1")
        assert code == 0, err
        assert "outputs equal the original's" in out and "(tolerance 0.1 " in out

    def test_tolerance_is_relative_to_the_output_scale(self):
        from kerasurgery.cli.commands import check_equal

        small = {"y": {"max_abs": 2e-5, "max_rel": 2e-5}}  # output scale 1
        large = {"y": {"max_abs": 2e-5, "max_rel": 2e-8}}  # output scale 1000
        nan = {"y": {"max_abs": float("nan"), "max_rel": float("nan")}}
        assert check_equal(small, 1e-5)[0] is False and check_equal(large, 1e-5)[0] is True
        assert check_equal(nan, 1e-5)[0] is False and check_equal(nan, 1e9)[0] is False

    @pytest.mark.parametrize("value", ["-1", "nan", "inf", "x"])
    def test_bad_atol(self, capsys, files, tmp_path, value):
        code, _, err = run(capsys, "split", files["cnn_bn"], "-o", tmp_path / "s.keras", "--atol", value)
        assert_one_line_error(code, err, "expected a number >= 0")


class TestExpose:
    def test_expose_writes_a_probe(self, capsys, files, tmp_path):
        path = tmp_path / "probe.keras"
        code, out, err = run(capsys, "expose", files["attention"], "mha:scores", "embed:pre", "-o", path,
                             "--keep-outputs")
        assert code == 0, err
        assert "mha:scores   (None, 2, 5, 5)" in out
        probe = keras.saving.load_model(path)
        data = dict(np.load(files["tokens"]))
        result = probe.predict([data["tokens"], data["mask"]], verbose=0)
        assert set(result) == {"mha:scores", "embed:pre", "predictions"}
        assert result["mha:scores"].shape == (5, 2, 5, 5)

    def test_globs(self, capsys, files, tmp_path):
        code, out, _ = run(capsys, "expose", files["cnn_bn"], "*:pre", "-o", tmp_path / "p.keras")
        assert code == 0 and "with 6 output(s)" in out


def load_activations(path):
    from kerasurgery import load_activations

    return load_activations(path)


class TestCollect:
    def test_collect_to_hdf5(self, capsys, files, tmp_path):
        path = tmp_path / "acts.h5"
        code, out, err = run(capsys, "collect", files["cnn_bn"], "--data", files["images"], "--points", "conv",
                             "dw:pre", "-o", path, "--quiet")
        assert code == 0, err
        assert "collected 2 point(s) over 12 sample(s)" in out
        model = keras.saving.load_model(files["cnn_bn"])
        expected = ks.expose(model, ["conv", "dw:pre"]).predict(np.load(files["images"]), verbose=0)
        with load_activations(path) as acts:
            for address in ("conv", "dw:pre"):
                np.testing.assert_allclose(np.asarray(acts[address]), expected[address], atol=1e-5)

    def test_nested_points_and_default_points(self, capsys, files, tmp_path):
        path = tmp_path / "acts.h5"
        code, out, err = run(capsys, "collect", files["nested_functional"], "--data", files["vectors"],
                             "-o", path, "--quiet", "--batch-size", "4")
        assert code == 0, err
        model = keras.saving.load_model(files["nested_functional"])
        with load_activations(path) as acts:
            assert "encoder/inner_dense" in acts and len(acts) == len(ks.points(model)) - 1 - 3
            expected = ks.expose(model, ["encoder/inner_dense"]).predict(np.load(files["vectors"]), verbose=0)
            np.testing.assert_allclose(np.asarray(acts["encoder/inner_dense"]), expected["encoder/inner_dense"],
                                       atol=1e-5)
        code, _, err = run(capsys, "collect", files["nested_functional"], "--data", files["vectors"], "-o", path)
        assert_one_line_error(code, err, "Pass --overwrite")
        assert run(capsys, "collect", files["nested_functional"], "--data", files["vectors"], "-o", path,
                   "--overwrite", "--quiet")[0] == 0

    @pytest.mark.parametrize("suffix", [".json", ".npz", ".hdf5"])
    def test_collect_to_every_format(self, capsys, files, tmp_path, suffix):
        path = tmp_path / f"acts{suffix}"
        code, out, err = run(capsys, "collect", files["nested_functional"], "--data", files["vectors"], "--points",
                             "encoder/inner_dense", "head:pre", "-o", path, "--quiet")
        assert code == 0, err
        model = keras.saving.load_model(files["nested_functional"])
        expected = ks.expose(model, ["encoder/inner_dense", "head:pre"]).predict(np.load(files["vectors"]), verbose=0)
        with load_activations(path) as acts:
            assert list(acts) == ["encoder/inner_dense", "head:pre"]
            for address, value in expected.items():
                np.testing.assert_allclose(np.asarray(acts[address]), value, atol=1e-6)
        if suffix == ".json":
            document = json.loads(path.read_text())
            assert document["points"]["head:pre"]["shape"] == list(expected["head:pre"].shape)

    def test_multi_input_npz_and_limit(self, capsys, files, tmp_path):
        path = tmp_path / "acts.h5"
        code, out, err = run(capsys, "collect", files["multi_io"], "--data", files["multi"], "--points", "cat",
                             "-o", path, "--limit", "4", "--quiet")
        assert code == 0, err
        assert "over 4 sample(s)" in out


class TestCalibrate:
    def test_calibrate_to_json_and_histograms(self, capsys, files, tmp_path):
        path, png = tmp_path / "ranges.json", tmp_path / "hist.png"
        code, out, err = run(capsys, "calibrate", files["cnn_bn"], "--data", files["images"], "--points", "*:pre",
                             "-o", path, "--histograms", png, "--quiet")
        assert code == 0, err
        ranges = json.loads(path.read_text())["points"]
        assert list(ranges) == ks.points(zoo.cnn_bn(), "*:pre")
        from kerasurgery import Calibration

        assert list(Calibration.from_json(path)) == list(ranges)
        model = keras.saving.load_model(files["cnn_bn"])
        conv = ks.expose(model, ["conv:pre"]).predict(np.load(files["images"]), verbose=0)["conv:pre"]
        assert ranges["conv:pre"]["min"] == pytest.approx(conv.min(), abs=1e-5)
        assert ranges["conv:pre"]["max"] == pytest.approx(conv.max(), abs=1e-5)
        assert plt.imread(png).shape[0] > 100
        assert "conv:pre" in out

    def test_histograms_draw_every_point_on_pages(self, capsys, files, tmp_path):
        """Every point gets a panel: beyond --max-plots, hist-2.png, hist-3.png, ...; all checked first."""
        points = ks.points(zoo.cnn_bn(), lambda p: ":" not in p and p != "image")  # the default: layer outputs
        args = ["calibrate", files["cnn_bn"], "--data", files["images"], "-o", tmp_path / "r.json",
                "--histograms", tmp_path / "hist.png", "--max-plots", "2", "--quiet"]
        pages = -(-len(points) // 2)
        (tmp_path / f"hist-{pages}.png").write_text("mine")
        code, out, err = run(capsys, *args)
        assert code != 0 and f"hist-{pages}.png" in err and "--overwrite" in err
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"hist-{pages}.png"]  # nothing written
        (tmp_path / f"hist-{pages}.png").unlink()
        code, out, err = run(capsys, *args)
        assert code == 0, err
        names = ["hist.png"] + [f"hist-{k}.png" for k in range(2, pages + 1)]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names + ["r.json"])
        assert all(f"wrote {tmp_path / name}" in out for name in names)
        assert all(plt.imread(tmp_path / name).shape[0] > 100 for name in names)

    def test_sample(self, capsys, files, tmp_path):
        counts = {}
        for sample in ("all", "4"):
            path = tmp_path / f"ranges_{sample}.json"
            code, _, err = run(capsys, "calibrate", files["cnn_bn"], "--data", files["images"], "--points", "conv",
                               "-o", path, "--sample", sample, "--quiet")
            assert code == 0, err
            point = json.loads(path.read_text())["points"]["conv"]
            counts[sample] = (point["count"], point["sampled"], point["min"], point["max"])
        assert counts["all"][0] == counts["all"][1] == counts["4"][0] > counts["4"][1]
        assert counts["all"][2:] == counts["4"][2:]  # min and max always see every value


class TestDemo:
    def test_demo_writes_real_pictures(self, capsys, tmp_path):
        code, out, err = run(capsys, "demo", "-o", tmp_path / "demo")
        assert code == 0, err
        written = sorted(os.listdir(tmp_path / "demo"))
        pictures = ["inputs.png", "feature_maps_conv_1.png", "feature_maps_conv_2.png", "histograms.png", "graph.png",
                    "attention.png", "grad_cam.png", "quantization.png"]
        assert written == sorted(pictures + ["shapes_cnn.keras", "shapes.npy", "features.h5"])
        from kerasurgery.cli.demo import FILES

        assert sorted(FILES) == written  # what --overwrite protects is what it writes
        umask = os.umask(0)
        os.umask(umask)
        assert {name: oct(os.stat(tmp_path / "demo" / name).st_mode & 0o777) for name in written} == {
            name: oct(0o666 & ~umask) for name in written}
        for name in pictures:
            image = plt.imread(tmp_path / "demo" / name)
            assert min(image.shape[:2]) > 150 and image.std() > 0.01, name
        for step in ("1. ", "2. Logits", "3. Split", "4. Probe pair", "5. Collect", "6. Calibrate",
                     "7. Transfer", "8. Attention", "9. Interventions", "10. Surgery", "11. Pruning", "12. Grad-CAM",
                     "13. Quantization", "14. Files"):
            assert step in out
        assert str(tmp_path / "demo") in out
        # the files it leaves are what the next commands it suggests need
        model, data = tmp_path / "demo" / "shapes_cnn.keras", tmp_path / "demo" / "shapes.npy"
        code, out, err = run(capsys, "inspect", model, "--points", "conv_*")
        assert code == 0 and "conv_3" in out, err
        code, _, err = run(capsys, "calibrate", model, "--data", data, "--points", "*:pre", "-o",
                           tmp_path / "r.json", "--quiet")
        assert code == 0, err


# ---------------------------------------------------------------------------
# one spelling per flag: --points selects, -o/--output names the output

SELECTING = ("inspect", "graph", "split", "expose", "collect", "calibrate")
WRITING = ("demo", "graph", "split", "expose", "collect", "calibrate")
OLD_SPELLINGS = {"inspect": "--pattern", "split": "--layers", "graph": "--highlight", "demo": "--out"}


@pytest.mark.parametrize("command", sorted(set(SELECTING) | set(WRITING)))
def test_one_spelling_per_flag(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    if command in SELECTING:
        assert "--points POINT [POINT ...]" in out
    if command in WRITING:
        assert "-o " in out and ", --output " in out
    for old in ("--pattern", "--layers", "--highlight", "--out "):
        assert old not in out  # old spellings are hidden


class TestDeprecatedSpellings:
    def test_inspect_pattern(self, capsys, files):
        new = run(capsys, "inspect", files["cnn_bn"], "--points", "*:pre", "--json")
        old = run(capsys, "inspect", files["cnn_bn"], "--pattern", "*:pre", "--json")
        assert new[0] == old[0] == 0 and new[1] == old[1] and json.loads(old[1])
        assert old[2] == "kerasurgery inspect: warning: --pattern is deprecated; use --points (same values)\n"

    def test_split_layers(self, capsys, files, tmp_path):
        code, out, err = run(capsys, "split", files["cnn_bn"], "--layers", "conv", "-o", tmp_path / "s.keras")
        assert code == 0 and "1 activation(s)" in out and "--layers is deprecated; use --points" in err

    def test_graph_highlight(self, capsys, files, tmp_path):
        new, old = tmp_path / "new.dot", tmp_path / "old.dot"
        assert run(capsys, "graph", files["cnn_bn"], "--points", "conv:pre", "-o", new)[0] == 0
        code, _, err = run(capsys, "graph", files["cnn_bn"], "--highlight", "conv:pre", "-o", old)
        assert code == 0 and "--highlight is deprecated" in err
        assert old.read_text() == new.read_text() and "penwidth=3" in new.read_text()

    def test_demo_out(self):
        from kerasurgery.cli.parser import build_parser, parse_args

        args = parse_args(build_parser(), ["demo", "--out", "somewhere"])
        assert args.output == "somewhere" and args.deprecated == [("--out", "-o/--output")]


class TestPointsEverywhere:
    def test_expose_takes_points_flag_and_positionals(self, capsys, files, tmp_path):
        flag, both = tmp_path / "flag.keras", tmp_path / "both.keras"
        code, out, err = run(capsys, "expose", files["cnn_bn"], "--points", "conv", "dw:pre", "-o", flag)
        assert code == 0, err
        assert list(keras.saving.load_model(flag).output) == ["conv", "dw:pre"]
        code, out, err = run(capsys, "expose", files["cnn_bn"], "conv", "--points", "dw:pre", "-o", both)
        assert code == 0, err
        assert list(keras.saving.load_model(both).output) == ["conv", "dw:pre"]

    @pytest.mark.parametrize("argv", [
        ["conv", "-o", "{out}", "dw:pre"],
        ["-o", "{out}", "conv", "dw:pre"],
        ["--unsafe", "-o", "{out}", "conv", "--points", "dw:pre"],
    ], ids=["around -o", "after -o", "after options"])
    def test_expose_points_anywhere_after_the_model(self, argv):
        from kerasurgery.cli.parser import build_parser, parse_args

        args = parse_args(build_parser(), ["expose", "m.keras", *(a.format(out="p.keras") for a in argv)])
        assert args.model == "m.keras" and args.output == "p.keras" and args.points == ["conv", "dw:pre"]

    def test_unknown_options_still_fail(self, capsys, files, tmp_path):
        code, _, err = run(capsys, "expose", files["cnn_bn"], "conv", "-o", tmp_path / "p.keras", "--bogus")
        assert_one_line_error(code, err, "kerasurgery expose: error: unrecognized arguments: --bogus")
        code, _, err = run(capsys, "inspect", files["cnn_bn"], "stray")
        assert_one_line_error(code, err, "kerasurgery inspect: error: unrecognized arguments: stray")

    def test_inspect_takes_several_points(self, capsys, files):
        code, out, err = run(capsys, "inspect", files["cnn_bn"], "--points", "conv", "*:pre", "--points", "bn",
                             "--json")
        assert code == 0, err
        expected = ["conv", *ks.points(zoo.cnn_bn(), "*:pre"), "bn"]
        assert [row["address"] for row in json.loads(out)] == list(dict.fromkeys(expected))


# ---------------------------------------------------------------------------
# nothing is lost: no command writes over its inputs or, without --overwrite, an existing file


def _digest(path):
    import hashlib

    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def workdir(files, tmp_path, monkeypatch):
    """A folder with its own copy of a model and data, as the current directory."""
    shutil.copy(files["cnn_bn"], tmp_path / "clf.keras")
    shutil.copy(files["images"], tmp_path / "x.npy")
    np.savez(tmp_path / "x.npz", x=np.load(files["images"]))
    os.symlink(tmp_path / "clf.keras", tmp_path / "link.keras")
    os.symlink(tmp_path / "clf.keras", tmp_path / "link.json")
    os.link(tmp_path / "clf.keras", tmp_path / "hard.keras")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# (command line, the input it names as output); every one is refused, with or without --overwrite
WRITES_OVER_INPUT = {
    "expose -o its model": ["expose", "clf.keras", "conv", "-o", "clf.keras"],
    "expose -o ./model": ["expose", "clf.keras", "conv", "-o", "./clf.keras"],
    "expose -o absolute path": ["expose", "clf.keras", "conv", "-o", "{workdir}/clf.keras"],
    "expose -o a symlink to it": ["expose", "clf.keras", "conv", "-o", "link.keras"],
    "expose -o a hard link to it": ["expose", "clf.keras", "conv", "-o", "hard.keras"],
    "split -o its model": ["split", "clf.keras", "-o", "./clf.keras"],
    "split -o its model through a symlink": ["split", "link.keras", "-o", "clf.keras"],
    "collect -o its data": ["collect", "clf.keras", "--data", "x.npz", "-o", "./x.npz", "--quiet"],
    "calibrate -o a .json symlink to the model": ["calibrate", "clf.keras", "--data", "x.npy", "-o", "link.json",
                                                  "--quiet"],
}


@pytest.mark.parametrize("case", list(WRITES_OVER_INPUT))
@pytest.mark.parametrize("overwrite", [False, True], ids=["", "--overwrite"])
def test_no_command_writes_over_its_input(capsys, workdir, case, overwrite):
    argv = [a.format(workdir=workdir) for a in WRITES_OVER_INPUT[case]] + (["--overwrite"] if overwrite else [])
    before = {p.name: _digest(p) for p in workdir.iterdir() if not p.is_symlink()}
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, err, "other than the command's inputs")
    assert out == ""
    assert {p.name: _digest(p) for p in workdir.iterdir() if not p.is_symlink()} == before


# (command line writing "out.<suffix>", the suffix); an existing output needs --overwrite
WRITERS = {
    "graph": (["graph", "clf.keras", "-o", "out.dot"], ".dot"),
    "graph drawing": (["graph", "clf.keras", "-o", "out.svg", "--engine", "matplotlib"], ".svg"),
    "split": (["split", "clf.keras", "-o", "out.keras"], ".keras"),
    "expose": (["expose", "clf.keras", "conv", "-o", "out.keras"], ".keras"),
    "collect": (["collect", "clf.keras", "--data", "x.npy", "--points", "conv", "-o", "out.h5", "--quiet"], ".h5"),
    "calibrate": (["calibrate", "clf.keras", "--data", "x.npy", "--points", "conv", "-o", "out.json", "--quiet"],
                  ".json"),
    "calibrate --histograms": (["calibrate", "clf.keras", "--data", "x.npy", "--points", "conv", "-o", "r.json",
                                "--histograms", "out.png", "--quiet"], ".png"),
}


@pytest.mark.parametrize("command", list(WRITERS))
def test_existing_output_needs_overwrite(capsys, workdir, command):
    argv, suffix = WRITERS[command]
    target = workdir / f"out{suffix}"
    target.write_bytes(b"keep me")
    listing = sorted(os.listdir(workdir))
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, err, "already exists. Pass --overwrite")
    assert target.read_bytes() == b"keep me" and sorted(os.listdir(workdir)) == listing
    code, out, err = run(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert target.read_bytes() != b"keep me"
    # nothing else is left behind (no temporary file), and the inputs are untouched
    assert sorted(os.listdir(workdir)) == sorted(set(listing) | {"r.json"} & {*argv})
    assert _digest(workdir / "clf.keras") == _digest(workdir / "hard.keras")


def test_every_writing_command_has_overwrite(capsys):
    for command in ("demo", "graph", "split", "expose", "collect", "calibrate"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "--overwrite" in out, command


def test_demo_refuses_a_folder_with_its_files(capsys, tmp_path):
    (tmp_path / "graph.png").write_bytes(b"keep me")
    code, out, err = run(capsys, "demo", "-o", tmp_path)
    assert_one_line_error(code, err, "graph.png already")
    assert (tmp_path / "graph.png").read_bytes() == b"keep me" and os.listdir(tmp_path) == ["graph.png"]


# ---------------------------------------------------------------------------
# bad input: one line on stderr, exit status 2


BAD = {
    "missing model file": (["inspect", "{dir}/nope.keras"], "does not exist"),
    "not a Keras file": (["inspect", "{text}"], "not a zip archive"),
    "wrong model suffix": (["inspect", "{notes}"], "ending in .keras"),
    "model is a directory": (["inspect", "{dir}"], "a directory"),
    "Lambda refused in safe mode": (["inspect", "{lambda}"], "--unsafe"),
    "unknown point": (["expose", "{cnn_bn}", "conv_9", "-o", "{dir}/p.keras"], "Closest valid addresses: 'conv'"),
    "unknown point shows the CLI discovery call": (["expose", "{cnn_bn}", "conv_9", "-o", "{dir}/p.keras"],
                                                   "kerasurgery inspect"),
    "port the layer lacks": (["expose", "{cnn_bn}", "bn:pre", "-o", "{dir}/p.keras"], "has no ':pre' port"),
    "glob matching nothing": (["inspect", "{cnn_bn}", "--points", "zz*"], "matches none"),
    "unknown address in inspect": (["inspect", "{cnn_bn}", "--points", "conv", "convv"], "Closest valid addresses"),
    "expose without points": (["expose", "{cnn_bn}", "-o", "{dir}/p.keras"], "at least one POINT"),
    "split of a layer without activation": (["split", "{cnn_bn}", "-o", "{dir}/s.keras", "--points", "bn"],
                                            "nothing to split"),
    "output model suffix": (["split", "{cnn_bn}", "-o", "{dir}/s.h5"], "ending in .keras"),
    "output folder missing": (["expose", "{cnn_bn}", "conv", "-o", "{dir}/no/such/p.keras"], "does not exist"),
    "graph suffix": (["graph", "{cnn_bn}", "-o", "{dir}/g.bmp"], ".svg"),
    "missing required argument": (["graph", "{cnn_bn}"], "required: -o/--output"),
    "unknown --import module": (["inspect", "{cnn_bn}", "--import", "no_such_module_xyz"], "no_such_module_xyz"),
    "bad data shape for split check": (["split", "{cnn_bn}", "-o", "{dir}/s.keras", "--data", "{bad_shape}"],
                                       "of shape (N, 16, 16, 3). Received: an array of shape (12, 16, 3)"),
    "missing data file": (["split", "{cnn_bn}", "-o", "{dir}/s.keras", "--data", "{dir}/none.npy"],
                          "does not exist"),
    "npz lacking an input": (["split", "{multi_io}", "-o", "{dir}/s.keras", "--data", "{multi_missing}"],
                             "missing ['b']"),
    "single array for two inputs": (["split", "{multi_io}", "-o", "{dir}/s.keras", "--data", "{images}"],
                                    "one array per model input"),
    "data of wrong suffix": (["split", "{cnn_bn}", "-o", "{dir}/s.keras", "--data", "{notes}"], "ending in .npy"),
}
BAD_COLLECT = {
    "collect: bad data shape": (["collect", "{cnn_bn}", "--data", "{bad_shape}", "-o", "{dir}/a.h5"],
                                "Received: an array of shape (12, 16, 3)"),
    "collect: unknown point": (["collect", "{cnn_bn}", "--data", "{images}", "--points", "convv", "-o",
                                "{dir}/a.h5", "--quiet"], "'convv'"),
    "collect: output suffix": (["collect", "{cnn_bn}", "--data", "{images}", "-o", "{dir}/a.npy"],
                               ".h5 or .hdf5 or .json or .npz"),
    "collect: missing --data": (["collect", "{cnn_bn}", "-o", "{dir}/a.h5"], "--data"),
}
BAD_CALIBRATE = {
    "calibrate: bad data shape": (["calibrate", "{cnn_bn}", "--data", "{bad_shape}", "-o", "{dir}/r.json"],
                                  "Received: an array of shape (12, 16, 3)"),
    "calibrate: unknown point": (["calibrate", "{cnn_bn}", "--data", "{images}", "--points", "nope:pre", "-o",
                                  "{dir}/r.json", "--quiet"], "'nope:pre'"),
    "calibrate: output suffix": (["calibrate", "{cnn_bn}", "--data", "{images}", "-o", "{dir}/r.txt"], ".json"),
    "calibrate: bad --sample": (["calibrate", "{cnn_bn}", "--data", "{images}", "-o", "{dir}/r.json", "--sample",
                                 "0"], "positive integer or 'all'"),
}


def _argv(template, files):
    return [part.format(**files) for part in template]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(capsys, files, case):
    template, match = BAD[case]
    code, _, err = run(capsys, *_argv(template, files))
    assert_one_line_error(code, err, match)


@pytest.mark.parametrize("case", list(BAD_COLLECT))
def test_bad_input_collect(capsys, files, case):
    template, match = BAD_COLLECT[case]
    code, _, err = run(capsys, *_argv(template, files))
    assert_one_line_error(code, err, match)


@pytest.mark.parametrize("case", list(BAD_CALIBRATE))
def test_bad_input_calibrate(capsys, files, case):
    template, match = BAD_CALIBRATE[case]
    code, _, err = run(capsys, *_argv(template, files))
    assert_one_line_error(code, err, match)


# ---------------------------------------------------------------------------
# exit status: 2 for the project's own errors, 1 for what it did not expect (a bug, said so)


def _failing_inspect(monkeypatch, error):
    from kerasurgery.cli import commands

    def cmd_inspect(args):
        raise error

    monkeypatch.setattr(commands, "cmd_inspect", cmd_inspect)


class TestExitStatus:
    @pytest.mark.parametrize("error", [ZeroDivisionError("division by zero"), ValueError("bad thing inside"),
                                       KeyError("layer"), RuntimeError("XLA failed"),
                                       PermissionError(13, "Permission denied", "/etc/ks-internal-cache")],
                             ids=lambda e: type(e).__name__)
    def test_unexpected_exceptions_are_internal_errors(self, capsys, files, monkeypatch, error):
        _failing_inspect(monkeypatch, error)
        code, out, err = run(capsys, "inspect", files["cnn_bn"])
        assert code == 1 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err
        assert lines[0].startswith(f"kerasurgery inspect: internal error: {type(error).__name__}: ")
        assert "this is a bug in kerasurgery; rerun with --debug for the traceback" in lines[0]
        assert "github.com/kerasurgery/kerasurgery/issues" in lines[0]

    @pytest.mark.parametrize("where", ["before", "after"])
    def test_debug_prints_the_traceback(self, capsys, files, monkeypatch, where):
        _failing_inspect(monkeypatch, ZeroDivisionError("division by zero"))
        argv = ["--debug", "inspect", files["cnn_bn"]] if where == "before" else ["inspect", files["cnn_bn"], "--debug"]
        code, _, err = run(capsys, *argv)
        assert code == 1
        assert err.startswith("Traceback (most recent call last):") and "in cmd_inspect" in err
        assert err.strip().splitlines()[-1].startswith("kerasurgery inspect: internal error: ZeroDivisionError")
        assert "see the traceback above" in err

    def test_debug_with_bad_input_keeps_exit_2(self, capsys, files):
        code, _, err = run(capsys, "--debug", "expose", files["cnn_bn"], "conv_9", "-o", files["dir"] / "p.keras")
        assert code == 2 and "Traceback" in err and "AddressError" in err
        assert err.strip().splitlines()[-1].startswith("kerasurgery expose: error: Expected the address")

    def test_os_error_about_the_users_path_is_bad_input(self, capsys, files, monkeypatch):
        _failing_inspect(monkeypatch, PermissionError(13, "Permission denied", files["cnn_bn"]))
        code, _, err = run(capsys, "inspect", files["cnn_bn"])
        assert_one_line_error(code, err, "Permission denied")

    def test_disk_full_is_bad_input(self, capsys, files, monkeypatch):
        _failing_inspect(monkeypatch, OSError(28, "No space left on device"))
        code, _, err = run(capsys, "inspect", files["cnn_bn"])
        assert_one_line_error(code, err, "No space left")

    @pytest.mark.parametrize("error, status", [
        (ImportError("kerasurgery.plot needs matplotlib. Install it with `pip install kerasurgery[plot]`."), 2),
        (ModuleNotFoundError("No module named 'pydot'", name="pydot"), 2),
        (ImportError("cannot import name 'helper' from 'kerasurgery.ir'", name="kerasurgery.ir"), 1),
    ], ids=["our hint", "optional module", "our own module"])
    def test_missing_optional_dependency_is_not_a_bug(self, capsys, files, monkeypatch, error, status):
        _failing_inspect(monkeypatch, error)
        code, _, err = run(capsys, "inspect", files["cnn_bn"])
        assert code == status and len(err.strip().splitlines()) == 1
        assert ("internal error" in err) == (status == 1)

    def test_project_errors_are_bad_input(self, capsys, files, monkeypatch):
        _failing_inspect(monkeypatch, ks.DataError("Expected this. Received: that."))
        code, _, err = run(capsys, "inspect", files["cnn_bn"])
        assert_one_line_error(code, err, "Expected this. Received: that.")


def test_unsafe_loads_a_lambda_model(capsys, files):
    code, out, err = run(capsys, "inspect", files["lambda"], "--unsafe")
    assert code == 0, err
    assert "double" in out and "Lambda" in out


# ---------------------------------------------------------------------------
# the installed console script


def _console_script():
    found = shutil.which("kerasurgery", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.skip("the kerasurgery console script is not installed (pip install -e .)")
    return found


class TestConsoleScript:
    """Two interpreters (each imports TensorFlow): the installed script, and ``python -m``."""

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def test_console_script_runs(self, files):
        ok = subprocess.run([_console_script(), "inspect", files["cnn_bn"], "--pattern", "*:pre"],
                            capture_output=True, text=True, env=self.env, timeout=180, check=False)
        assert ok.returncode == 0, ok.stderr
        assert "predictions:pre" in ok.stdout

    def test_python_dash_m_fails_cleanly(self, files):
        bad = subprocess.run([sys.executable, "-m", "kerasurgery", "inspect", files["lambda"]],
                             capture_output=True, text=True, env=self.env, timeout=180, check=False)
        assert bad.returncode == 2
        assert "Traceback" not in bad.stderr
        # TensorFlow may print a banner on import; our own output is the last line.
        assert bad.stderr.strip().splitlines()[-1].startswith("kerasurgery inspect: error: Expected a model "
                                                              "without Python code")


# ---------------------------------------------------------------------------
# startup: the parser imports nothing heavy; the backend's log lines stay off stderr


def _run_module(*argv, env_update=None):
    """(seconds, completed process) of ``python -m kerasurgery argv`` on this worktree, no TF log settings."""
    import time

    root = os.path.dirname(os.path.dirname(os.path.abspath(ks.__file__)))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    env.update(PYTHONPATH=root, **(env_update or {}))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kerasurgery", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=root, timeout=300, check=False)
    return time.perf_counter() - start, done


class TestStartup:
    @pytest.mark.parametrize("argv, status, stderr", [
        (["--help"], 0, ""),
        (["--version"], 0, ""),
        (["expose", "--help"], 0, ""),
        (["inspect"], 2, "kerasurgery inspect: error: the following arguments are required: MODEL "
                         "(see `kerasurgery inspect --help`)\n"),
        (["collect", "m.keras", "--batch-size", "x"], 2, "kerasurgery collect: error: argument --batch-size: "
                                                        "invalid int value: 'x' (see `kerasurgery collect --help`)\n"),
    ], ids=["--help", "--version", "expose --help", "missing argument", "bad argument"])
    def test_answers_at_once_without_noise(self, argv, status, stderr):
        seconds, done = _run_module(*argv)
        print(f"kerasurgery {' '.join(argv)}: {seconds:.2f} s")
        assert done.returncode == status
        assert done.stderr == stderr
        assert seconds < 2.0, f"{seconds:.2f} s"

    def test_parser_imports_no_backend(self):
        code = ("import sys; from kerasurgery.cli.main import main; main(['--version'])\n"
                "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch', 'numpy') if m in sys.modules))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(ks.__file__))))
        assert done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr

    def test_backend_log_lines_stay_off_stderr(self, files):
        _, done = _run_module("inspect", files["cnn_bn"], "--points", "conv")
        assert done.returncode == 0 and "conv" in done.stdout
        assert done.stderr == ""

    def test_verbose_lets_them_through(self, files):
        plain = subprocess.run([sys.executable, "-c", "import keras"], capture_output=True, text=True, check=False,
                               timeout=300, env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
        if "oneDNN" not in plain.stderr:
            pytest.skip("importing this backend prints no oneDNN line")
        _, done = _run_module("--verbose", "inspect", files["cnn_bn"], "--points", "conv")
        assert done.returncode == 0
        assert "oneDNN custom operations are on" in done.stderr
