"""collect and calibrate over a ray.data.Dataset (kerasurgery.engines.ray), on a local Ray cluster.

The cluster (2 CPUs) is started once for the module, with this package and a
helper package of a custom layer shipped to the workers (job-level
py_modules, as docs/cluster.md says). References are the in-process calls
on the same numpy data. The first two tests need no Ray and run by default.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasurgery as ks

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------
# without Ray


def test_importing_kerasurgery_and_running_in_process_never_imports_ray():
    code = textwrap.dedent("""
        import sys, numpy as np, keras, kerasurgery as ks
        x = keras.Input((3,), name="x")
        model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        ks.collect(model, np.ones((4, 3)), "d", progress=False)
        ks.calibrate(model, np.ones((4, 3)), "d", progress=False)
        ks.gradients(model, np.ones((4, 3)), "x", progress=False)
        import kerasurgery.engines.dispatch
        print("ray" in sys.modules, "ray.data" in sys.modules)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.split()[-2:] == ["False", "False"], out.stdout + out.stderr


def test_ray_options_are_refused_for_data_in_this_process():
    x = keras.Input((3,), name="x")
    model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
    with pytest.raises(ks.DataError, match=r"Expected a `ray.data.Dataset` as `data` for actors, resume"):
        ks.calibrate(model, np.ones((4, 3)), "d", actors=2, resume=True)
    with pytest.raises(ks.DataError, match="worker_backend"):
        ks.collect(model, np.ones((4, 3)), "d", worker_backend="jax")
    assert "actors" in str(__import__("inspect").signature(ks.calibrate))
    assert "On a Ray cluster" in ks.collect.__doc__


# ---------------------------------------------------------------------------
# on a local Ray cluster

FAULTS = '''
import os
import keras


@keras.saving.register_keras_serializable(package="ks_faults")
class DieOnce(keras.layers.Layer):
    """Identity; on a worker whose KS_DIE_MARKER names a missing file, creates it and kills the process."""

    def call(self, x):
        marker = os.environ.get("KS_DIE_MARKER")
        if marker and not isinstance(x, keras.KerasTensor) and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return x
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray")
    import ray

    from kerasurgery.engines.ray import init

    helpers = tmp_path_factory.mktemp("helpers")
    (helpers / "ks_faults").mkdir()
    (helpers / "ks_faults" / "__init__.py").write_text(FAULTS)
    sys.path.insert(0, str(helpers))
    if ray.is_initialized():
        ray.shutdown()
    init(num_cpus=2, include_dashboard=False, log_to_driver=False,
         runtime_env={"py_modules": [str(helpers / "ks_faults")]})
    yield ray
    ray.shutdown()
    sys.path.remove(str(helpers))


def mobilenet() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)


DATA = np.random.default_rng(0).uniform(-1, 1, size=(64, 32, 32, 3)).astype("float32")
POINTS = ["Conv1", "block_1_expand_relu:pre", "block_3_project_BN", "block_16_project", "predictions:pre"]


def blocks_of(data: np.ndarray, size: int):
    import ray.data

    return ray.data.from_numpy([data[i:i + size] for i in range(0, len(data), size)])


@pytest.mark.ray
def test_exact_calibrate_on_two_actors_equals_in_process(cluster):
    model = mobilenet()
    reference = ks.calibrate(model, DATA, POINTS, batch_size=8, sample=None, progress=False)
    stats = ks.calibrate(model, blocks_of(DATA, 16), POINTS, batch_size=8, sample=None, actors=2, shard_size=16,
                         progress=False)
    assert list(stats) == list(reference) and stats.model == model.name
    for a, r in reference.items():
        s = stats[a]
        assert (s.count, s.samples, s.min, s.max) == (r.count, r.samples, r.min, r.max), a
        np.testing.assert_array_equal(s.histogram[0], r.histogram[0], err_msg=a)
        np.testing.assert_array_equal(s.histogram[1], r.histogram[1], err_msg=a)
        np.testing.assert_allclose(s.mean, r.mean, rtol=1e-9, atol=1e-12, err_msg=a)
        np.testing.assert_allclose(s.std, r.std, rtol=1e-6, err_msg=a)
        assert s.zeros == r.zeros and s.exact, a


@pytest.mark.ray
def test_sampled_calibrate_on_ray_is_the_merge_of_its_blocks_in_process(cluster):
    model = mobilenet()
    per_block = [ks.calibrate(model, DATA[i:i + 16], POINTS, batch_size=8, progress=False) for i in range(0, 64, 16)]
    merged = ks.merge(*per_block)
    whole = ks.calibrate(model, DATA, POINTS, batch_size=8, progress=False)
    stats = ks.calibrate(model, blocks_of(DATA, 16), POINTS, batch_size=8, actors=2, shard_size=16, progress=False)
    for a in POINTS:
        s, m = stats[a], merged[a]
        assert s.to_dict() == m.to_dict(), a  # the documented merge, exactly
        assert (s.count, s.min, s.max, s.sampled) == (whole[a].count, whole[a].min, whole[a].max, whole[a].sampled)
    assert not stats["Conv1"].exact  # sampled: 16x16x16 values per sample > 256


@pytest.mark.ray
def test_collect_on_ray_equals_in_process_sample_for_sample(cluster, tmp_path):
    model = mobilenet()
    reference = ks.collect(model, DATA, POINTS, batch_size=8, progress=False)
    in_memory = ks.collect(model, blocks_of(DATA, 8), POINTS, batch_size=8, actors=2, shard_size=8, progress=False)
    folder = tmp_path / "acts"
    with ks.collect(model, blocks_of(DATA, 8), POINTS, batch_size=8, actors=2, shard_size=8, path=folder,
                    progress=False) as acts:
        assert acts.format == "shards" and acts.attrs["num_samples"] == 64
        assert len([n for n in os.listdir(folder) if n.startswith("shard-")]) == 8
        for a, r in reference.items():
            np.testing.assert_array_equal(in_memory[a], r, err_msg=a)
            np.testing.assert_array_equal(acts[a][:], r, err_msg=a)
            np.testing.assert_array_equal(acts[a][[63, 0, 17]], r[[63, 0, 17]], err_msg=a)
    with ks.load_activations(folder) as again:
        np.testing.assert_array_equal(again["predictions:pre"][5:40:3], reference["predictions:pre"][5:40:3])


@pytest.mark.ray
def test_columns_feed_inputs_by_name_and_bad_columns_are_refused(cluster):
    import ray.data

    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(2, name="d")(keras.layers.Concatenate(name="cat")([a, b])))
    rng = np.random.default_rng(1)
    xa, xb = rng.normal(size=(20, 3)).astype("float32"), rng.normal(size=(20, 2)).astype("float32")
    ds = ray.data.from_items([{"b": xb[i], "a": xa[i], "label": i} for i in range(20)], override_num_blocks=2)
    acts = ks.collect(model, ds, ["cat", "d"], actors=1, shard_size=10, progress=False)
    reference = ks.collect(model, {"a": xa, "b": xb}, ["cat", "d"], progress=False)
    np.testing.assert_allclose(acts["d"], reference["d"], rtol=1e-6)
    np.testing.assert_array_equal(acts["cat"], reference["cat"])
    wrong = ray.data.from_items([{"x": xa[i], "y": xb[i]} for i in range(20)])
    with pytest.raises(ks.DataError, match=r"column named after each input.*\['a', 'b'\].*\['x', 'y'\]"):
        ks.calibrate(model, wrong, "d")
    with pytest.raises(ks.DataError, match="Expected no `steps`"):
        ks.collect(model, ds, "d", steps=2)
    with pytest.raises(ks.DataError, match="folder"):
        ks.collect(model, ds, "d", path="acts.h5")


@pytest.mark.ray
def test_a_worker_killed_midway_loses_and_duplicates_no_sample(cluster, tmp_path):
    from ks_faults import DieOnce

    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="h")(DieOnce(name="die")(x))
    model = keras.Model(x, keras.layers.Dense(3, name="o")(h))
    data = np.random.default_rng(2).normal(size=(80, 4)).astype("float32")
    marker = tmp_path / "died"
    folder = tmp_path / "acts"
    acts = ks.collect(model, blocks_of(data, 10), ["h:pre", "o"], actors=2, shard_size=10, path=folder,
                      progress=False, runtime_env={"env_vars": {"KS_DIE_MARKER": str(marker)}})
    assert marker.exists()  # a worker did die, in its first block
    reference = ks.collect(model, data, ["h:pre", "o"], progress=False)
    for a, r in reference.items():
        np.testing.assert_array_equal(acts[a][:], r, err_msg=a)
    files = sorted(os.listdir(folder))
    assert files == sorted(["manifest.json", "run.json", *(s for s in _manifest_files(folder))])  # no temp left
    assert len(_manifest_files(folder)) == 8
    acts.close()
    marker.unlink()
    stats = ks.calibrate(model, blocks_of(data, 10), "o", actors=2, shard_size=10, sample=None, progress=False,
                         runtime_env={"env_vars": {"KS_DIE_MARKER": str(marker)}})
    assert marker.exists()
    whole = ks.calibrate(model, data, "o", sample=None, progress=False)
    assert (stats["o"].count, stats["o"].samples, stats["o"].min, stats["o"].max) == (
        whole["o"].count, whole["o"].samples, whole["o"].min, whole["o"].max)


def _manifest_files(folder: Path) -> list[str]:
    import json

    return [s["file"] for s in json.loads((folder / "manifest.json").read_text())["shards"]]


@pytest.mark.ray
def test_an_interrupted_run_resumes_from_its_complete_shards(cluster, tmp_path):
    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.layers.Dense(3, activation="tanh", name="o")(x))
    data = np.random.default_rng(3).normal(size=(60, 4)).astype("float32")
    folder = tmp_path / "acts"
    ks.collect(model, blocks_of(data, 10), ["o:pre", "o"], actors=2, shard_size=10, path=folder, progress=False).close()
    # what an interrupted run leaves: some complete shards, no manifest
    shards = _manifest_files(folder)
    (folder / "manifest.json").unlink()
    for name in shards[::2]:
        (folder / name).unlink()
    kept = {n: (folder / n).stat().st_mtime_ns for n in shards[1::2]}
    with pytest.raises(ks.DataError, match="resume=True"):
        ks.load_activations(folder)
    with pytest.raises(ks.DataError, match="an unfinished run"):
        ks.collect(model, blocks_of(data, 10), ["o:pre", "o"], shard_size=10, path=folder, progress=False)
    other = keras.Model(x, keras.layers.Dense(3, activation="tanh", name="o2")(x))
    with pytest.raises(ks.DataError, match="resume the same run.*weights"):
        ks.collect(other, blocks_of(data, 10), ["o2"], shard_size=10, path=folder, resume=True, progress=False)
    acts = ks.collect(model, blocks_of(data, 10), ["o:pre", "o"], actors=2, shard_size=10, path=folder,
                      resume=True, progress=False)
    assert {n: (folder / n).stat().st_mtime_ns for n in kept} == kept  # complete shards were not written again
    assert _manifest_files(folder) == shards
    reference = ks.collect(model, data, ["o:pre", "o"], progress=False)
    for a, r in reference.items():
        np.testing.assert_array_equal(acts[a][:], r, err_msg=a)
    acts.close()


@pytest.mark.ray
def test_gradients_on_ray_equal_in_process_sample_for_sample(cluster):
    import ray.data

    model = mobilenet()
    points = ["Conv1", "block_3_project_BN", "predictions:pre"]

    def class_3_minus_class_7(outputs):  # defined here: shipped to the workers by value (cloudpickle)
        return outputs[:, 3] - 2.0 * outputs[:, 7]

    reference = ks.gradients(model, DATA, points, target=class_3_minus_class_7, batch_size=8, progress=False)
    grads = ks.gradients(model, blocks_of(DATA, 16), points, target=class_3_minus_class_7, batch_size=8, actors=2,
                         shard_size=16, progress=False)
    assert list(grads) == points
    for a, r in reference.items():
        assert np.abs(r).max() > 0, a
        np.testing.assert_array_equal(grads[a], r, err_msg=a)

    # a loss reduced by its mean: labels as a column, divided by the whole dataset's count on the driver
    x = keras.Input((4,), name="x")
    small = keras.Model(x, keras.layers.Dense(3, name="o")(keras.layers.Dense(6, activation="tanh", name="h")(x)))
    rng = np.random.default_rng(4)
    xs, ys = rng.normal(size=(30, 4)).astype("float32"), rng.normal(size=(30, 3)).astype("float32")
    ds = ray.data.from_items([{"x": xs[i], "label": ys[i]} for i in range(30)], override_num_blocks=3)
    reference = ks.gradients(small, xs, ["x", "h:pre"], y=ys, loss="mse", batch_size=5, progress=False)
    grads = ks.gradients(small, ds, ["x", "h:pre"], y="label", loss="mse", batch_size=5, actors=2, shard_size=10,
                         progress=False)
    for a, r in reference.items():
        np.testing.assert_array_equal(grads[a], r, err_msg=a)
    with pytest.raises(ks.DataError, match="name of the Ray dataset's column of labels"):
        ks.gradients(small, ds, "x", y=ys, loss="mse")
    with pytest.raises(ks.DataError, match="per-sample class indices are not taken"):
        ks.gradients(small, ds, "x", target=np.zeros(30, "int32"))
    with pytest.raises(ks.DataError, match="a column 'labels'.*\\['label', 'x'\\]"):
        ks.gradients(small, ds, "x", y="labels", loss="mse")


@pytest.mark.ray
def test_one_progress_bar_on_the_driver_counts_every_sample(cluster, monkeypatch):
    bars, ray_bars = [], []

    class Bar:  # stands in for keras.utils.Progbar: what the driver shows
        def __init__(self, target, unit_name="step"):
            self.target, self.unit, self.seen = target, unit_name, []
            bars.append(self)

        def update(self, current, finalize=None):
            import ray.data

            self.seen.append((current, finalize))
            ray_bars.append(ray.data.DataContext.get_current().enable_progress_bars)

    monkeypatch.setattr(keras.utils, "Progbar", Bar)
    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.layers.Dense(3, name="o")(x))
    data = np.random.default_rng(5).normal(size=(40, 4)).astype("float32")
    ks.calibrate(model, blocks_of(data, 10), "o", actors=2, shard_size=10, progress=True)
    assert len(bars) == 1 and (bars[0].target, bars[0].unit) == (40, "sample")  # one bar, the whole dataset
    assert bars[0].seen == [(10, None), (20, None), (30, None), (40, None), (40, True)]
    assert ray_bars[:-1] == [False] * 4  # Ray Data's own bars (one per operator) are off while it runs
