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
