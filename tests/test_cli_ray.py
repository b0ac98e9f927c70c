"""The command line on Ray: `kerasurgery calibrate|collect MODEL --data ... --ray ADDRESS`.

One local Ray cluster (2 CPUs) for the module; the command joins it (its
`init` does nothing when Ray is running). Results equal the in-process API.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

import kerasurgery as ks
from kerasurgery.cli.main import main

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    import ray

    from kerasurgery.engines.ray import init

    if ray.is_initialized():
        ray.shutdown()
    init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def files(tmp_path):
    x = keras.Input((5,), name="x")
    model = keras.Model(x, keras.layers.Dense(4, activation="relu", name="d")(x))
    model.save(tmp_path / "m.keras")
    data = np.random.default_rng(0).normal(size=(40, 5)).astype("float32")
    np.save(tmp_path / "x.npy", data)
    return model, data, tmp_path


def test_calibrate_on_ray_writes_the_in_process_statistics(cluster, files, capsys):
    model, data, tmp = files
    code = main(["calibrate", str(tmp / "m.keras"), "--data", str(tmp / "x.npy"), "--ray", "local", "--actors", "2",
                 "--shard-size", "10", "--sample", "all", "--points", "d:pre", "d", "-o", str(tmp / "r.json"),
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "over 40 sample(s)" in out
    stats = ks.Calibration.from_json(tmp / "r.json")
    reference = ks.calibrate(model, data, ["d:pre", "d"], sample=None, progress=False)
    for a, r in reference.items():
        assert (stats[a].count, stats[a].min, stats[a].max) == (r.count, r.min, r.max)
        np.testing.assert_array_equal(stats[a].histogram[0], r.histogram[0])


def test_collect_on_ray_writes_a_folder_of_shards(cluster, files, capsys):
    model, data, tmp = files
    argv = ["collect", str(tmp / "m.keras"), "--data", str(tmp / "x.npy"), "--ray", "local", "--actors", "2",
            "--shard-size", "10", "--points", "d", "-o", str(tmp / "acts"), "--quiet"]
    assert main(argv) == 0
    assert "collected 1 point(s) over 40 sample(s)" in capsys.readouterr().out
    with ks.load_activations(tmp / "acts") as acts:
        np.testing.assert_array_equal(acts["d"][:], ks.collect(model, data, "d", progress=False)["d"])
    assert len([n for n in os.listdir(tmp / "acts") if n.startswith("shard-")]) == 4
    assert main(argv) == 2  # the folder holds a result: refused without --overwrite or --resume
    assert "overwrite" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    capsys.readouterr()
    assert main([*argv[:-3], "-o", str(tmp / "acts.h5"), "--quiet"]) == 2
    assert "folder" in capsys.readouterr().err
