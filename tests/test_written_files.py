"""The files the library writes: where (writable folders), in which format, with which permissions.

`collect(path=...)`, `ActivationRecorder(path=...)` and every command of the
`kerasurgery` command line write files. They check the folder before anything
runs, honour the suffix of the path, and create files like any other program
(the umask applies, no private 0600 files).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import kerasurgery as ks
from kerasurgery.cli.main import main
from zoo import mlp

X = np.random.default_rng(0).random((6, 8), dtype="float32")


def _can_create(folder) -> bool:
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder where no file can be created: mode 0555, or /sys when root ignores the mode."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if not _can_create(folder):
            yield folder
        elif os.path.isdir("/sys") and not _can_create("/sys"):  # root writes into 0555 folders
            yield Path("/sys")
        else:
            pytest.skip("no read-only folder available to this user")
    finally:
        folder.chmod(0o755)


class _CountedBatches:
    """Batches of X, counting how many were read."""

    def __init__(self):
        self.read = 0

    def __iter__(self):
        for start in range(0, len(X), 2):
            self.read += 1
            yield X[start : start + 2]


# ---------------------------------------------------------------------------
# a folder that cannot be written is refused before anything runs


class TestReadOnlyFolder:
    def test_collect_refuses_before_running(self, read_only_folder):
        batches = _CountedBatches()
        with pytest.raises(ks.DataError, match=f"folder '{read_only_folder}'.*no file can be created"):
            ks.collect(mlp(), batches, path=read_only_folder / "acts.h5", progress=False)
        assert batches.read == 0

    def test_recorder_refuses_at_construction(self, read_only_folder):
        with pytest.raises(ks.DataError, match=f"folder '{read_only_folder}'"):
            ks.ActivationRecorder("dense_1", X, path=read_only_folder / "records.h5")

    @pytest.mark.parametrize("command", ["collect", "expose"])
    def test_cli_refuses_with_one_line(self, read_only_folder, tmp_path, capsys, command):
        mlp().save(tmp_path / "mlp.keras")
        np.save(tmp_path / "x.npy", X)
        argv = {"collect": ["collect", tmp_path / "mlp.keras", "--data", tmp_path / "x.npy", "--quiet",
                            "-o", read_only_folder / "acts.h5"],
                "expose": ["expose", tmp_path / "mlp.keras", "dense_1", "-o", read_only_folder / "p.keras"]}
        code = main([str(a) for a in argv[command]])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert f"folder '{read_only_folder}'" in err[0] and "no file can be created" in err[0]


# ---------------------------------------------------------------------------
# the suffix picks the format; load_activations reads every one


def _nested():
    from zoo import nested_functional

    return nested_functional()


POINTS = ["encoder/inner_dense", "head:pre", "head"]
V = np.random.default_rng(1).standard_normal((7, 6)).astype("float32")


class TestFormats:
    @pytest.mark.parametrize("suffix", [".h5", ".hdf5", ".json", ".npz"])
    def test_collect_writes_and_reads_back_every_format(self, tmp_path, suffix):
        model = _nested()
        expected = ks.collect(model, V, POINTS, batch_size=3, progress=False)
        path = tmp_path / f"acts{suffix}"
        with ks.collect(model, V, POINTS, batch_size=3, path=path, progress=False) as returned:
            assert isinstance(returned, ks.Activations) and list(returned) == POINTS
            for address in POINTS:
                np.testing.assert_array_equal(np.asarray(returned[address]), expected[address])
        with ks.load_activations(path) as acts:
            assert list(acts) == POINTS and int(acts.attrs["num_samples"]) == 7
            assert acts.attrs["model"] == model.name
            for address in POINTS:
                np.testing.assert_array_equal(np.asarray(acts[address]), expected[address])
        assert os.listdir(tmp_path) == [path.name]

    def test_json_is_json_with_shapes_and_dtypes(self, tmp_path):
        import json

        path, model = tmp_path / "acts.json", _nested()
        ks.collect(model, V, POINTS, path=path, progress=False)
        document = json.loads(path.read_text())  # HDF5 bytes here were the bug
        expected = ks.collect(model, V, POINTS, progress=False)
        assert document["format"] == "kerasurgery.activations" and document["attrs"]["points"] == POINTS
        for address in POINTS:
            point = document["points"][address]
            assert point["shape"] == list(expected[address].shape) and point["dtype"] == "float32"
            np.testing.assert_array_equal(np.asarray(point["values"], "float32"), expected[address])

    def test_npz_is_plain_numpy(self, tmp_path):
        path, model = tmp_path / "acts.npz", _nested()
        ks.collect(model, V, POINTS, path=path, progress=False)
        expected = ks.collect(model, V, POINTS, progress=False)
        with np.load(path, allow_pickle=False) as npz:
            assert set(npz.files) == {*POINTS, "kerasurgery:attrs"}
            for address in POINTS:
                np.testing.assert_array_equal(npz[address], expected[address])

    def test_a_layer_named_file_in_npz(self, tmp_path):
        import keras

        x = keras.Input((3,), name="x")
        model = keras.Model(x, keras.layers.Dense(2, name="file")(x))
        acts = ks.collect(model, np.ones((2, 3), "float32"), path=tmp_path / "a.npz", progress=False)
        assert list(ks.load_activations(tmp_path / "a.npz")) == list(acts) == ["file"]

    @pytest.mark.parametrize("name", ["acts.txt", "acts", "acts.npy", "acts.h5.bak"])
    def test_other_suffixes_are_refused_before_running(self, tmp_path, name):
        batches = _CountedBatches()
        with pytest.raises(ks.DataError, match=r"ending in \.h5, \.hdf5, \.json, \.npz"):
            ks.collect(mlp(), batches, path=tmp_path / name, progress=False)
        assert batches.read == 0 and os.listdir(tmp_path) == []

    def test_recorder_writes_hdf5_only(self, tmp_path):
        with pytest.raises(ks.DataError, match="HDF5 only"):
            ks.ActivationRecorder("dense_1", X, path=tmp_path / "records.json")

    def test_json_too_large_is_refused_before_running(self, tmp_path, monkeypatch):
        from kerasurgery.runtime import activations

        monkeypatch.setattr(activations, "JSON_MAX_BYTES", 6 * 16 * 4 - 1)  # one byte short of dense_1
        batches = _CountedBatches()
        with pytest.raises(ks.DataError, match=r"at most .* MB of values for a \.json file.*\.h5"):
            ks.collect(mlp(), X, "dense_1", path=tmp_path / "a.json", progress=False)
        # batches of unknown count: refused as soon as the size is known, nothing written
        with pytest.raises(ks.DataError, match=r"\.json file"):
            ks.collect(mlp(), batches, "dense_1", path=tmp_path / "a.json", progress=False)
        assert os.listdir(tmp_path) == []
        monkeypatch.setattr(activations, "JSON_MAX_BYTES", 6 * 16 * 4)
        ks.collect(mlp(), X, "dense_1", path=tmp_path / "a.json", progress=False)
        assert os.listdir(tmp_path) == ["a.json"]

    def test_load_activations_refuses_foreign_files(self, tmp_path):
        (tmp_path / "other.json").write_text('{"a": [1, 2]}')
        with pytest.raises(ks.DataError, match="written by `kerasurgery.collect`"):
            ks.load_activations(tmp_path / "other.json")
        with pytest.raises(ks.DataError, match="ending in"):
            ks.load_activations(tmp_path / "acts.csv")


# ---------------------------------------------------------------------------
# every file is created like any other file: the umask applies (no private 0600 files)


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=lambda m: f"umask-{m:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def _as_open_would(folder) -> int:
    """The mode `open(path, "w")` gives a new file in `folder` under the current umask."""
    reference = Path(folder) / ".reference"
    with open(reference, "w"):
        pass
    mode = _mode(reference)
    reference.unlink()
    return mode


def _written_by_functions(folder: Path) -> list[Path]:
    import keras

    import kerasurgery.plot  # noqa: F401
    from kerasurgery.ir.export import write_graph

    model = mlp()
    paths = []
    for suffix in (".h5", ".hdf5", ".json", ".npz"):
        paths.append(folder / f"acts{suffix}")
        ks.collect(model, X, ["dense_1", "dense_2:pre"], path=paths[-1], progress=False).close()
    paths.append(folder / "records.h5")
    recorder = ks.ActivationRecorder("dense_1", X, path=paths[-1])
    recorder.set_model(model)
    recorder.record(0)
    recorder.record(1)  # appended to the existing file: its mode is kept
    paths.append(folder / "ranges.json")
    ks.calibrate(model, X, progress=False).to_json(paths[-1])
    for suffix in (".dot", ".graphml", ".json"):
        paths.append(folder / f"graph{suffix}")
        write_graph(model, paths[-1])
    paths.append(folder / "graph.png")
    ks.plot.save_graph(model, paths[-1], engine="matplotlib")
    paths.append(folder / "probe.keras")
    ks.expose(model, ["dense_1"]).save(paths[-1])
    keras.utils.clear_session()
    return paths


def _written_by_commands(folder: Path, capsys) -> list[Path]:
    mlp().save(folder / "in.keras")
    np.save(folder / "in.npy", X)
    model, data = str(folder / "in.keras"), str(folder / "in.npy")
    runs = {
        "graph.dot": ["graph", model], "graph.svg": ["graph", model, "--engine", "matplotlib"],
        "graph.pdf": ["graph", model, "--engine", "matplotlib"], "graph.graphml": ["graph", model],
        "split.keras": ["split", model], "probe.keras": ["expose", model, "dense_1"],
        "fold.keras": ["fold", model], "prune.keras": ["prune", model, "--points", "dense_1", "--channels", "0"],
        "c.h5": ["collect", model, "--data", data, "--quiet"], "c.json": ["collect", model, "--data", data, "--quiet"],
        "c.npz": ["collect", model, "--data", data, "--quiet"],
        "r.json": ["calibrate", model, "--data", data, "--quiet", "--histograms", str(folder / "h.png")],
    }
    for name, argv in runs.items():
        assert main([*argv, "-o", str(folder / name)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return [folder / name for name in (*runs, "h.png")]


def test_files_get_the_mode_of_any_new_file(tmp_path, umask, capsys):
    functions, commands = tmp_path / "functions", tmp_path / "commands"
    functions.mkdir()
    commands.mkdir()
    written = _written_by_functions(functions) + _written_by_commands(commands, capsys)
    expected = _as_open_would(tmp_path)
    assert expected == 0o666 & ~umask
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: oct(expected) for p in written}
    # and nothing else was left behind (temporary files, write checks)
    assert sorted(p.name for p in functions.iterdir()) == sorted(p.name for p in written if p.parent == functions)


# ---------------------------------------------------------------------------
# what collect(path=...) returns, as annotated


def test_collect_return_type_is_annotated():
    import typing

    from kerasurgery.runtime.collect import collect

    assert ks.collect is collect
    plain, to_file = typing.get_overloads(collect)
    assert typing.get_type_hints(plain)["return"] == dict[str, np.ndarray]
    assert typing.get_type_hints(to_file)["return"] is ks.Activations
    assert typing.get_type_hints(collect)["return"] == typing.Union[dict[str, np.ndarray], ks.Activations]
    assert "kerasurgery.Activations" in collect.__doc__ and "context manager" in collect.__doc__


def test_collect_with_path_returns_an_open_activations(tmp_path):
    path = tmp_path / "acts.h5"
    acts = ks.collect(mlp(), X, "dense_1", path=path, progress=False)
    assert isinstance(acts, ks.Activations) and acts.file.id.valid
    with acts as same:
        assert same is acts and same["dense_1"].shape == (6, 16)
    assert not acts.file.id.valid  # closed by the with block
