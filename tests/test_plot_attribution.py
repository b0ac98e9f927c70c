"""ks.plot.heatmaps and ks.plot.save_activations: the pictures hold what they claim,
files are never overwritten unless asked, every rank gets a picture."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from zoo import attention, cnn_bn, recurrent, sample_inputs  # noqa: E402

import kerasurgery as ks  # noqa: E402
from kerasurgery.plot import activation_files  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


class TestHeatmaps:
    def test_each_map_over_its_image_with_one_shared_colour_bar(self):
        rng = np.random.default_rng(0)
        images, maps = rng.random((3, 32, 24, 3)), rng.random((3, 4, 3))
        fig = ks.plot.heatmaps(images, maps, titles=["a", "b", "c"], label="Grad-CAM")
        panels = [ax for ax in fig.axes if len(ax.images) == 2]
        assert [ax.get_title() for ax in panels] == ["a", "b", "c"]
        for i, ax in enumerate(panels):
            picture, overlay = ax.images
            np.testing.assert_allclose(picture.get_array(), images[i].astype("float32"))
            np.testing.assert_allclose(overlay.get_array(), maps[i].astype("float32"))
            assert tuple(overlay.get_extent()) == (0, 24, 32, 0) == tuple(picture.get_extent())  # stretched
            assert overlay.get_clim() == (0.0, pytest.approx(maps.max()))
        bars = [ax for ax in fig.axes if ax.get_ylabel() == "Grad-CAM"]
        assert len(bars) == 1

    def test_images_of_every_kind(self):
        grey = ks.plot.heatmaps(np.random.rand(2, 8, 8), np.random.rand(2, 2, 2))
        assert len([ax for ax in grey.axes if len(ax.images) == 2]) == 2
        pixels = (np.random.rand(8, 8, 3) * 255).astype("uint8")
        one = ks.plot.heatmaps(pixels, np.random.rand(2, 2))
        np.testing.assert_array_equal(one.axes[0].images[0].get_array(), pixels)
        wide = np.linspace(-3, 5, 8 * 8 * 3).reshape(8, 8, 3)  # preprocessed input: stretched to [0, 1]
        shown = np.asarray(ks.plot.heatmaps(wide, np.random.rand(2, 2)).axes[0].images[0].get_array())
        assert shown.min() == 0 and shown.max() == 1

    def test_bad_shapes(self):
        with pytest.raises(ks.DataError, match="one heatmap per image. Received: 2 images and 3 maps"):
            ks.plot.heatmaps(np.random.rand(2, 8, 8, 3), np.random.rand(3, 2, 2))
        with pytest.raises(ks.DataError, match=r"Expected images of shape"):
            ks.plot.heatmaps(np.random.rand(2, 8, 8, 5), np.random.rand(2, 2, 2))
        with pytest.raises(ks.DataError, match="one title per image"):
            ks.plot.heatmaps(np.random.rand(2, 8, 8, 3), np.random.rand(2, 2, 2), titles=["x"])


class TestSaveActivations:
    def test_one_picture_per_point_of_every_rank(self, tmp_path):
        model = cnn_bn()
        acts = ks.collect(model, sample_inputs(model, 3), ["conv", "gap", "predictions:pre"])
        att = attention()
        acts.update(ks.collect(att, sample_inputs(att, 2), ["mha:scores", "pool"]))
        rec = recurrent()
        acts.update(ks.collect(rec, sample_inputs(rec, 2), ["conv1d", "lstm[1]"]))
        acts["volume"] = np.random.rand(2, 5, 4, 4, 3)  # rank 4 per sample: the middle slice
        acts["score"] = np.random.rand(7)  # one value per sample
        paths = ks.plot.save_activations(acts, tmp_path / "pictures")
        assert [os.path.basename(p) for p in paths] == [
            "000_conv.png", "001_gap.png", "002_predictions-pre.png", "003_mha-scores.png", "004_pool.png",
            "005_conv1d.png", "006_lstm_1.png", "007_volume.png", "008_score.png"]
        for p in paths:
            assert mpimg.imread(p).ndim == 3  # a real PNG
        assert sorted(os.listdir(tmp_path / "pictures")) == sorted(os.path.basename(p) for p in paths)

    def test_what_each_picture_shows(self):
        conv = activation_files._figure("conv", np.random.rand(2, 6, 6, 5), 1, 64)
        assert len([ax for ax in conv.axes if ax.images]) == 5 and "(sample 1)" in conv._suptitle.get_text()
        scores = activation_files._figure("mha:scores", np.random.rand(2, 2, 4, 4), 0, 64)
        assert [ax.get_title() for ax in scores.axes if ax.images] == ["head 0", "head 1"]
        dense = activation_files._figure("dense", np.arange(12.0).reshape(3, 4), 0, 64)
        np.testing.assert_array_equal(dense.axes[0].images[0].get_array(), np.arange(12.0).reshape(3, 4))
        volume = activation_files._figure("v", np.random.rand(2, 5, 4, 4, 3), 0, 64)
        assert "v[2] (sample 0)" in volume._suptitle.get_text()

    def test_existing_files_are_refused_unless_overwrite(self, tmp_path):
        acts = {"a": np.random.rand(2, 3), "b": np.random.rand(2, 4, 4, 2)}
        first = ks.plot.save_activations(acts, tmp_path)
        os.remove(first[0])  # a: free again, b: taken
        with pytest.raises(ks.DataError, match=r"1 that already exist .*001_b.png.*overwrite=True"):
            ks.plot.save_activations(acts, tmp_path)
        assert not os.path.exists(first[0])  # nothing written when one file is refused
        before = os.path.getsize(first[1])
        again = ks.plot.save_activations({"a": np.random.rand(2, 3), "b": np.random.rand(2, 8, 8, 6)}, tmp_path,
                                         overwrite=True)
        assert again == first and os.path.getsize(first[1]) != before
        assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no partial files left

    def test_from_an_hdf5_file_and_bad_input(self, tmp_path):
        model = cnn_bn()
        with ks.collect(model, sample_inputs(model, 3), ["bn", "gap"], path=tmp_path / "acts.h5") as acts:
            paths = ks.plot.save_activations(acts, tmp_path / "pics", sample=2)
        assert len(paths) == 2
        with pytest.raises(ks.DataError, match="non-empty mapping"):
            ks.plot.save_activations({}, tmp_path)
        with pytest.raises(ks.DataError, match="which is a file"):
            ks.plot.save_activations({"a": np.ones((2, 3))}, tmp_path / "acts.h5")
        with pytest.raises(ks.DataError, match=r"index the 3 samples. Received: sample=5"):
            ks.plot.save_activations({"a": np.ones((3, 4, 5))}, tmp_path / "x", sample=5)
