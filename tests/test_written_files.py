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
