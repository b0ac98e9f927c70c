"""kerasurgery.plot and kerasurgery.drawing: the pictures hold what they claim.

Content checks: one image axes per channel (or head) shown, titles that name
the point, colour scales, histogram counts, graph boxes per node, and that no
function calls ``show()``.
"""

from __future__ import annotations

import json
import math
import sys
import types

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import zoo  # noqa: E402

import kerasurgery as ks  # noqa: E402
from kerasurgery.ir import export as drawing
from kerasurgery.plot import graph_drawing, graph_figure as graphplot
from kerasurgery.plot.columns import wrap_rows
from kerasurgery.plot.layout import layered_layout  # noqa: E402
from kerasurgery.errors import AddressError, DataError  # noqa: E402


@pytest.fixture(autouse=True)
def _no_show(monkeypatch):
    def show(*args, **kwargs):
        raise AssertionError("kerasurgery.plot must never call show()")

    monkeypatch.setattr(plt, "show", show)
    yield
    plt.close("all")


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------
# feature_maps


class TestFeatureMaps:
    @pytest.mark.parametrize("channels", [1, 2, 5, 9, 10, 16])
    def test_one_image_per_channel_on_a_square_grid(self, channels):
        fig = ks.plot.feature_maps(rng().random((6, 7, channels)), title="conv_1")
        axes = image_axes(fig)
        assert len(axes) == channels
        cols = math.ceil(math.sqrt(channels))
        assert axes[0].get_subplotspec().get_gridspec().get_geometry() == (math.ceil(channels / cols), cols)
        assert [ax.get_title() for ax in axes] == [str(c) for c in range(channels)]
        assert fig._suptitle.get_text().startswith("conv_1:")

    def test_each_image_is_its_channel(self):
        data = rng().random((3, 5, 5, 4))
        fig = ks.plot.feature_maps(data, sample=2, scale="per_map")
        for c, ax in enumerate(image_axes(fig)):
            np.testing.assert_allclose(ax.images[0].get_array(), data[2, ..., c], rtol=1e-6)
        assert "(sample 2)" in fig._suptitle.get_text()

    def test_channel_selection_and_max_count(self):
        data = rng().random((4, 4, 12))
        fig = ks.plot.feature_maps(data, channels=[7, 2, 11], title="conv")
        assert [ax.get_title() for ax in image_axes(fig)] == ["7", "2", "11"]
        assert fig._suptitle.get_text() == "conv: channels 7, 2, 11 of 12"
        fig = ks.plot.feature_maps(data, max_channels=5)
        assert len(image_axes(fig)) == 5
        assert fig._suptitle.get_text() == "channels 0-4 of 12"

    def test_shared_scale_has_one_range_and_a_colour_bar(self):
        data = rng().random((5, 5, 3)) * np.array([1.0, 10.0, 100.0])
        fig = ks.plot.feature_maps(data, scale="shared")
        limits = {ax.images[0].get_clim() for ax in image_axes(fig)}
        assert len(limits) == 1
        lo, hi = limits.pop()
        assert lo == pytest.approx(data.min()) and hi == pytest.approx(data.max())
        assert len(fig.axes) == 3 + 1  # the colour bar

    def test_per_map_scale_stretches_each_map(self):
        data = rng().random((5, 5, 3)) * np.array([1.0, 10.0, 100.0])
        fig = ks.plot.feature_maps(data, scale="per_map")
        highs = [ax.images[0].get_clim()[1] for ax in image_axes(fig)]
        np.testing.assert_allclose(highs, data.reshape(-1, 3).max(axis=0), rtol=1e-5)
        assert len(fig.axes) == 3

    def test_two_dimensional_array_is_one_channel(self):
        assert len(image_axes(ks.plot.feature_maps(np.ones((4, 4))))) == 1

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            (dict(array=np.ones((4,))), r"\(H, W, C\).*Received: an array of shape \(4,\)"),
            (dict(array=np.ones((1, 2, 3, 4, 5))), "Received: an array of shape"),
            (dict(array=np.ones((4, 4, 3)), channels=[3]), r"channel indices in \[0, 3\)"),
            (dict(array=np.ones((4, 4, 3)), channels=[]), "empty"),
            (dict(array=np.ones((4, 4, 3)), scale="log"), "scale"),
            (dict(array=np.ones((4, 4, 3)), max_channels=0), "max_channels"),
            (dict(array=np.ones((2, 4, 4, 3)), sample=5), "sample"),
        ],
    )
    def test_bad_input(self, kwargs, match):
        array = kwargs.pop("array")
        with pytest.raises(DataError, match=match):
            ks.plot.feature_maps(array, **kwargs)

    def test_feature_maps_of_a_real_convolution(self):
        model = zoo.cnn_bn()
        acts = ks.expose(model, ["conv", "dw:pre"]).predict(zoo.sample_inputs(model, batch=2), verbose=0)
        for address in ("conv", "dw:pre"):
            fig = ks.plot.feature_maps(acts[address], title=address)
            assert len(image_axes(fig)) == 8
            assert address in fig._suptitle.get_text()


# ---------------------------------------------------------------------------
# histograms


class FakeStats:
    """Duck-typed stand-in for a calibrate statistics object."""

    def __init__(self, values):
        counts, edges = np.histogram(values, bins=7)
        self.data = {
            "min": float(values.min()), "max": float(values.max()),
            "mean": float(values.mean()), "std": float(values.std()),
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
            "percentiles": {"1": float(np.percentile(values, 1)), "99": float(np.percentile(values, 99))},
        }

    def to_dict(self):
        return self.data


class TestHistograms:
    def test_one_panel_per_point_titled_with_its_address(self):
        acts = {"dense_1": rng().normal(size=(50, 8)), "dense_1:pre": rng().normal(size=(50, 8))}
        fig = ks.plot.histograms(acts, bins=20, title="activations")
        assert [ax.get_title() for ax in fig.axes] == ["dense_1", "dense_1:pre"]
        assert fig._suptitle.get_text() == "activations"
        heights = fig.axes[0].patches[0].get_data().values
        assert heights.sum() == 400 and len(heights) == 20

    def test_points_choose_and_order_panels(self):
        acts = {f"p{i}": rng().normal(size=10) for i in range(5)}
        fig = ks.plot.histograms(acts, points=["p3", "p1"])
        assert [ax.get_title() for ax in fig.axes] == ["p3", "p1"]
        fig = ks.plot.histograms(acts, max_points=2)
        assert len(fig.axes) == 2 and "showing points 1-2 of 5" in fig.get_suptitle()

    def test_statistics_draw_their_stored_histogram_and_range(self):
        values = rng().normal(size=1000)
        fig = ks.plot.histograms({"conv:pre": FakeStats(values)}, log=True)
        (ax,) = fig.axes
        stored = FakeStats(values).data["histogram"]
        np.testing.assert_array_equal(ax.patches[0].get_data().values, stored["counts"])
        np.testing.assert_allclose(ax.patches[0].get_data().edges, stored["edges"])
        xs = sorted(line.get_xdata()[0] for line in ax.lines)
        assert xs[0] == pytest.approx(values.min()) and xs[-1] == pytest.approx(values.max())
        assert len(ax.lines) == 4  # min, max, two percentiles
        assert ax.get_yscale() == "log"
        assert ax.get_title() == "conv:pre"

    def test_real_calibrate_statistics(self):
        model = zoo.cnn_bn()
        data = zoo.sample_inputs(model, batch=16)
        stats = ks.calibrate(model, data, "*:pre")
        probe = ks.expose(model, "*:pre").predict(data, verbose=0)
        for form in (stats, stats.to_dict(), json.loads(stats.to_json())):
            fig = ks.plot.histograms(form, bins=40)
            assert [ax.get_title() for ax in fig.axes] == list(stats)
            for ax, address in zip(fig.axes, stats):
                step = ax.patches[0].get_data()
                assert step.values.sum() == stats[address].sampled  # every value, or the sampled ones
                assert stats[address].count == probe[address].size
                assert len(step.values) <= 40
                low, high = probe[address].min(), probe[address].max()
                if stats[address].exact:
                    assert step.edges[0] <= low and step.edges[-1] >= high
                else:  # the drawn bins span the sampled values, inside the exact range
                    width = step.edges[1] - step.edges[0]
                    assert low - width <= step.edges[0] < step.edges[-1] <= high + width
                xs = [line.get_xdata()[0] for line in ax.lines]
                assert min(xs) == pytest.approx(probe[address].min(), abs=1e-5)
                assert max(xs) == pytest.approx(probe[address].max(), abs=1e-5)
                assert len(ax.lines) == 2 + len(stats[address].quantiles)

    def test_per_channel_statistics_are_one_histogram(self):
        model = zoo.cnn_bn()
        data = zoo.sample_inputs(model, batch=8)
        stats = ks.calibrate(model, data, ["conv:pre", "predictions"], per_channel=True)
        fig = ks.plot.histograms(stats)
        assert [ax.get_title() for ax in fig.axes] == ["conv:pre", "predictions"]
        assert stats["conv:pre"].count == 8 * 16 * 16  # per channel
        assert fig.axes[0].patches[0].get_data().values.sum() == 8 * stats["conv:pre"].sampled
        fig = ks.plot.histograms(stats["conv:pre"])
        assert [ax.get_title() for ax in fig.axes] == ["conv:pre"]

    def test_no_point_is_dropped_past_a_page(self):
        """36 points (MobileNetV2 has 36 `:pre`) at 16 a page: three figures hold all, in order."""
        acts = {f"block_{i}:pre": rng().normal(size=30) for i in range(36)}
        figs = ks.plot.histogram_pages(acts, title="pre")
        assert [len(fig.axes) for fig in figs] == [16, 16, 4]
        assert [ax.get_title() for fig in figs for ax in fig.axes] == list(acts)
        for page, fig in enumerate(figs):
            assert [ax.get_title() for ax in ks.plot.histograms(acts, page=page).axes] == [
                ax.get_title() for ax in fig.axes]
        heading = figs[1].get_suptitle()
        assert heading.startswith("pre\n") and "showing points 17-32 of 36: page=1 of pages 0-2" in heading
        assert "points 1-16 of 36" in ks.plot.histograms(acts).get_suptitle()  # the default says so too
        assert len(ks.plot.histograms(acts, max_points=None).axes) == 36
        assert ks.plot.histograms(acts, max_points=None).get_suptitle() == ""  # nothing left out, no note
        for bad in (dict(page=3), dict(page=-1), dict(max_points=0), dict(max_points=2.5)):
            with pytest.raises(DataError, match="page|max_points"):
                ks.plot.histograms(acts, **bad)

    def test_axes_are_labelled_and_the_legend_names_each_percentile(self):
        values = rng().normal(size=1000)
        fig = ks.plot.histograms({"a": FakeStats(values), "b": FakeStats(values * 2)}, log=True)
        a, b = fig.axes
        assert a.get_xlabel().startswith("value in [") and b.get_xlabel().startswith("value in [")
        assert a.get_ylabel() == b.get_ylabel() == "count (log scale)"
        assert ks.plot.histograms(np.arange(9.0)).axes[0].get_ylabel() == "count"
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == [
            "histogram", "1 and 99th percentiles", "min and max (every value)"]
        marked = {line.get_gid(): line.get_xdata()[0] for line in a.lines}
        assert marked["percentile:1"] == pytest.approx(np.percentile(values, 1))
        assert marked["percentile:99"] == pytest.approx(np.percentile(values, 99))
        assert marked["min"] == pytest.approx(values.min()) and marked["max"] == pytest.approx(values.max())

    def test_real_statistics_legend_and_sampled_counts(self):
        model = zoo.cnn_bn()
        stats = ks.calibrate(model, zoo.sample_inputs(model, batch=4), "conv:pre", sample=16)
        assert not stats["conv:pre"].exact
        fig = ks.plot.histograms(stats)
        assert fig.axes[0].get_ylabel() == "count of sampled values"
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert labels == ["histogram", "median (50th percentile)", "5 and 95th percentiles", "1 and 99th percentiles",
                          "0.1 and 99.9th percentiles", "min and max (every value)"]
        gids = sorted(line.get_gid() for line in fig.axes[0].lines)
        assert gids == sorted(["min", "max"] + [f"percentile:{q:g}" for q in stats["conv:pre"].quantiles])

    def test_single_array(self):
        fig = ks.plot.histograms(np.arange(10.0), title="x")
        assert [ax.get_title() for ax in fig.axes] == ["x"]

    def test_bad_input(self):
        with pytest.raises(ks.AddressError, match=r"Received: 'nope', which names none"):
            ks.plot.histograms({"a": np.ones(3)}, points=["nope"])
        # points= is the same selector as everywhere: globs and predicates pick keys, in data order
        fig = ks.plot.histograms({"a:pre": np.ones(3), "a": np.arange(3.0), "b": np.ones(3)}, points="a*")
        assert [ax.get_title() for ax in fig.axes if ax.get_title()][:1] == ["a"]
        plt.close(fig)
        with pytest.raises(DataError, match="finite"):
            ks.plot.histograms({"a": np.array([np.nan])})


# ---------------------------------------------------------------------------
# attention


class TestAttention:
    def test_one_heatmap_per_head_with_token_labels(self):
        scores = rng().dirichlet(np.ones(4), size=(2, 3, 4))
        tokens = ["the", "cat", "sat", "."]
        fig = ks.plot.attention(scores, tokens=tokens, title="mha:scores", sample=1)
        axes = image_axes(fig)
        assert [ax.get_title() for ax in axes] == ["head 0", "head 1", "head 2"]
        assert fig._suptitle.get_text() == "mha:scores"
        for h, ax in enumerate(axes):
            assert [t.get_text() for t in ax.get_xticklabels()] == tokens
            assert [t.get_text() for t in ax.get_yticklabels()] == tokens
            np.testing.assert_allclose(ax.images[0].get_array(), scores[1, h])
            assert ax.images[0].get_clim()[0] == 0.0

    def test_head_selection_and_cross_attention_labels(self):
        scores = rng().dirichlet(np.ones(5), size=(4, 2))  # 4 heads, 2 targets, 5 sources
        fig = ks.plot.attention(scores, heads=[3, 1], tokens=["a", "b"], source_tokens=list("vwxyz"))
        axes = image_axes(fig)
        assert [ax.get_title() for ax in axes] == ["head 3", "head 1"]
        assert [t.get_text() for t in axes[0].get_xticklabels()] == list("vwxyz")

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            (dict(tokens=["a"]), "Expected 4 tokens"),
            (dict(heads=[2]), r"head indices in \[0, 2\)"),
        ],
    )
    def test_bad_input(self, kwargs, match):
        with pytest.raises(DataError, match=match):
            ks.plot.attention(np.ones((2, 4, 4)) / 4, **kwargs)
        with pytest.raises(DataError, match="batch, heads, target, source"):
            ks.plot.attention(np.ones((4, 4)))

    def test_scores_of_a_real_attention_model(self):
        model = zoo.attention()
        scores = ks.expose(model, ["mha:scores"]).predict(zoo.sample_inputs(model, batch=2), verbose=0)
        fig = ks.plot.attention(scores["mha:scores"], tokens=list("abcde"), title="mha:scores")
        assert len(image_axes(fig)) == 2
        assert "mha:scores" in fig._suptitle.get_text()


# ---------------------------------------------------------------------------
# graph drawing


def boxes(fig):
    """The node boxes (their gid is the node key; markers and cluster labels have "kind:" gids)."""
    return {t.get_gid(): t for t in fig.axes[0].texts if t.get_gid() and ":" not in t.get_gid()}


class TestGraph:
    @pytest.mark.parametrize("name", ["mlp", "cnn_bn", "branches", "shared", "siamese", "attention", "raw_ops"])
    def test_one_box_per_node(self, name):
        model = zoo.ZOO[name]()
        fig = ks.plot.graph(model, engine="matplotlib")
        assert set(boxes(fig)) == set(ks.to_graph(model).nodes)
        assert fig.get_suptitle() == model.name

    def test_labels_show_class_activation_and_shape(self):
        fig = ks.plot.graph(zoo.mlp(), engine="matplotlib", title="my mlp")
        assert boxes(fig)["dense_1"].get_text() == "dense_1\nDense (relu)\n(None, 16)"
        assert fig.get_suptitle() == "my mlp"
        fig = ks.plot.graph(zoo.mlp(), engine="matplotlib", show_shapes=False)
        assert boxes(fig)["dense_1"].get_text() == "dense_1\nDense (relu)"

    def test_highlight_marks_the_nodes_of_the_points(self):
        fig = ks.plot.graph(zoo.cnn_bn(), engine="matplotlib", highlight=["conv:pre", "gap"])
        red = {k for k, t in boxes(fig).items() if t.get_bbox_patch().get_edgecolor()[:3] == matplotlib.colors.to_rgb("#d62728")}
        assert red == {"conv", "gap"}
        with pytest.raises(AddressError, match="conv_9"):
            ks.plot.graph(zoo.cnn_bn(), engine="matplotlib", highlight=["conv_9"])

    def test_nested_models_are_labelled_clusters(self):
        fig = ks.plot.graph(zoo.siamese(), engine="matplotlib")
        clusters = [t.get_text() for t in fig.axes[0].texts if (t.get_gid() or "").startswith("cluster:")]
        assert clusters == ["encoder"]
        assert boxes(fig)["encoder/proj@1"].get_text().startswith("proj@1\n")

    def test_a_graph_is_accepted_as_well_as_a_model(self):
        graph = ks.to_graph(zoo.branches())
        assert set(boxes(ks.plot.graph(graph, engine="matplotlib"))) == set(graph.nodes)

    def test_engines(self, monkeypatch):
        with pytest.raises(DataError, match="engine"):
            ks.plot.graph(zoo.mlp(), engine="dot")
        monkeypatch.setattr(graphplot, "graphviz_available", lambda: False)
        with pytest.raises(DataError, match="pydot"):
            ks.plot.graph(zoo.mlp(), engine="graphviz")
        assert boxes(ks.plot.graph(zoo.mlp()))  # auto falls back to matplotlib

    def test_graphviz_is_used_when_present(self, monkeypatch, tmp_path):
        """With pydot and dot present, the DOT text goes to Graphviz (faked here)."""
        seen = []
        png = tmp_path / "tiny.png"
        plt.imsave(png, np.zeros((30, 40, 3)))

        class FakeDot:
            def __init__(self, text):
                self.text = text

            def create(self, prog, format):
                seen.append((prog, format, self.text))
                return png.read_bytes() if format == "png" else b"<svg/>"

        fake = types.SimpleNamespace(graph_from_dot_data=lambda text: [FakeDot(text)])
        monkeypatch.setitem(sys.modules, "pydot", fake)
        monkeypatch.setattr(graphplot.shutil, "which", lambda name: "/usr/bin/dot")
        fig = ks.plot.graph(zoo.mlp(), highlight=["dense_2"])
        assert image_axes(fig)[0].images[0].get_array().shape[:2] == (30, 40)
        prog, fmt, text = seen[0]
        assert (prog, fmt) == ("dot", "png") and '"dense_2" [' in text and "penwidth=3" in text
        ks.plot.save_graph(zoo.mlp(), tmp_path / "g.svg")
        assert (tmp_path / "g.svg").read_bytes() == b"<svg/>" and seen[-1][1] == "svg"

    def test_auto_draws_long_graphs_in_columns_even_with_graphviz(self, monkeypatch):
        import keras

        used = []
        monkeypatch.setattr(graphplot, "graphviz_available", lambda: True)
        monkeypatch.setattr(graphplot, "_graphviz_figure", lambda *args: used.append("graphviz"))
        ks.plot.graph(zoo.mlp())
        assert used == ["graphviz"]
        model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, include_top=False)
        fig = ks.plot.graph(model)
        assert used == ["graphviz"] and set(boxes(fig)) == set(ks.to_graph(model).nodes)

    @pytest.mark.skipif(not graphplot.graphviz_available(), reason="pydot or Graphviz's dot not installed")
    def test_real_graphviz(self, tmp_path):
        fig = ks.plot.graph(zoo.siamese(), highlight=["encoder/proj@1"])
        assert image_axes(fig)[0].images[0].get_array().shape[0] > 100
        ks.plot.save_graph(zoo.siamese(), tmp_path / "g.svg")
        text = (tmp_path / "g.svg").read_text()
        assert "<svg" in text and "proj@1" in text and "encoder" in text



#: Readable: text at least this many pixels per line at the figure's default dpi (8-point
#: text at 100 dpi is 13 px a line; the unwrapped MobileNetV2 drawing had 3.6-point text, 6 px).
MIN_LINE_PX = 11.0
#: ... and the name line of a box, as drawn in the PNG: dark pixels at least this tall (12 now, 7 before).
MIN_GLYPH_PX = 10


def line_heights(fig):
    """Pixels per text line of every box, measured by the renderer at the figure's dpi."""
    renderer = fig.canvas.get_renderer()
    return {k: t.get_window_extent(renderer).height / (t.get_text().count("\n") + 1) for k, t in boxes(fig).items()}


def glyph_height(fig, key):
    """Height in pixels of the dark pixels of the first line of box `key` in the PNG at the default dpi."""
    import io

    text = boxes(fig)[key]
    fig.canvas.draw()
    box = text.get_window_extent(fig.canvas.get_renderer())
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # the default dpi: the figure's
    image = plt.imread(io.BytesIO(buffer.getvalue()))[..., :3].mean(axis=-1)
    top = image.shape[0] - int(box.y1)
    lines = text.get_text().count("\n") + 1
    first = image[top: top + int(box.height / lines) + 1, int(box.x0): int(box.x1) + 1]
    dark = np.flatnonzero((first < 0.45).any(axis=1))
    return int(dark[-1] - dark[0] + 1) if dark.size else 0


def overlapping(fig):
    fig.canvas.draw()  # places the boxes' patches
    renderer = fig.canvas.get_renderer()
    extents = {k: t.get_bbox_patch().get_window_extent(renderer) for k, t in boxes(fig).items()}
    keys = sorted(extents)
    return [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:] if extents[a].overlaps(extents[b])]


class TestReadableGraph:
    """Large graphs wrap into columns: the text keeps its size, every node is drawn, a legend names colours."""

    @pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50"])
    def test_real_models(self, name):
        import keras

        model = getattr(keras.applications, name)(weights=None, input_shape=(96, 96, 3))
        graph = ks.to_graph(model)
        fig = ks.plot.graph(model, engine="matplotlib", highlight=["predictions:pre"])
        assert set(boxes(fig)) == set(graph.nodes)  # every node present
        assert min(line_heights(fig).values()) >= MIN_LINE_PX
        assert glyph_height(fig, "block_2_add" if name == "MobileNetV2" else "conv2_block1_add") >= MIN_GLYPH_PX
        width, height = fig.get_size_inches()
        assert max(width, height) <= graph_drawing.MAX_INCHES and width > height  # columns, not a strip
        assert not overlapping(fig)
        texts = fig.axes[0].texts
        to = {t.get_gid()[3:] for t in texts if (t.get_gid() or "").startswith("to:")}
        came = {t.get_gid()[5:] for t in texts if (t.get_gid() or "").startswith("from:")}
        assert to and to == came  # every arrow leaving a column arrives at the top of another
        (legend,) = fig.legends
        labels = [t.get_text() for t in legend.get_texts()]
        classes = {graph.nodes[k]["class_name"] for k in graph}
        assert classes <= {c for label in labels for c in label.split(", ")}
        assert "highlighted point" in labels

    @pytest.mark.parametrize("name", sorted(zoo.ZOO))
    def test_zoo_models(self, name):
        model = zoo.ZOO[name]()
        graph = ks.to_graph(model)
        fig = ks.plot.graph(model, engine="matplotlib")
        assert set(boxes(fig)) == set(graph.nodes)
        assert min(line_heights(fig).values()) >= MIN_LINE_PX
        assert not overlapping(fig)
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert {graph.nodes[k]["class_name"] for k in graph} <= {c for label in labels for c in label.split(", ")}
        if any(graph.nodes[k]["kind"] == "op" for k in graph):
            assert "raw keras.ops operation" in labels

    def test_legend_colours_are_the_box_colours(self):
        fig = ks.plot.graph(zoo.cnn_bn(), engine="matplotlib")
        legend = fig.legends[0]
        colour_of = {t.get_text(): h.get_facecolor() for t, h in zip(legend.get_texts(), legend.legend_handles)}
        for key, text in boxes(fig).items():
            cls = text.get_text().split("\n")[1].split(" (")[0]
            (label,) = [label for label in colour_of if cls in label.split(", ")]
            assert text.get_bbox_patch().get_facecolor() == pytest.approx(colour_of[label]), key

    def test_saved_png_keeps_the_text_size(self, tmp_path, monkeypatch):
        import keras

        monkeypatch.setattr(graphplot, "graphviz_available", lambda: False)
        model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, include_top=False)
        ks.plot.save_graph(model, tmp_path / "g.png")
        fig = ks.plot.graph(model, engine="matplotlib")
        height, width = plt.imread(tmp_path / "g.png").shape[:2]
        assert np.allclose((width, height), fig.get_size_inches() * 110, atol=1)  # save_graph: 110 dpi
        assert min(line_heights(fig).values()) * 1.1 >= MIN_LINE_PX

    def test_columns_cut_after_single_rows(self):
        widths = [1, 2, 2, 1, 2, 2, 2, 1, 2, 2, 1, 2] * 10
        spans = wrap_rows(widths, 20)
        assert spans[0][0] == 0 and spans[-1][1] == len(widths)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # every row once, in order
        assert all(widths[stop - 1] == 1 for _, stop in spans[:-1])
        assert all(14 <= stop - start <= 20 for start, stop in spans[:-1])
        assert wrap_rows([2] * 10, 24) == [(0, 10)]


# ---------------------------------------------------------------------------
# drawing: layout and files


class TestDrawing:
    def test_layout_rows_follow_depth_and_places_are_distinct(self):
        view = drawing.describe(zoo.branches())
        pos, bends = layered_layout(view)
        for parent, child in view.edges:
            assert pos[parent][1] > pos[child][1]
        assert len(set(pos.values())) == len(pos)
        # x -> concat spans three rows: two bend points, one per row crossed
        assert len(bends[("x", "concat")]) == 2

    def test_an_input_sits_just_above_its_first_use(self):
        pos, _ = layered_layout(drawing.describe(zoo.attention()))
        assert pos["mask"][1] == pos["mha"][1] + 1

    def test_dot_has_clusters_and_every_edge(self):
        model = zoo.nested_sequential()
        text = drawing.to_dot(model, highlight={"head"})
        assert 'subgraph cluster_0 {' in text and 'label="block"' in text
        for parent, child in ks.to_graph(model).edges:
            assert f'"{parent}" -> "{child}";' in text

    @pytest.mark.parametrize("suffix", ["dot", "gv", "graphml", "json", "svg", "png", "pdf"])
    def test_write_graph_every_format(self, suffix, tmp_path, monkeypatch):
        monkeypatch.setattr(graphplot, "graphviz_available", lambda: False)
        model = zoo.nested_functional()
        path = tmp_path / f"g.{suffix}"
        if suffix in ("svg", "png", "pdf"):
            ks.plot.save_graph(model, path, highlight="head")
        else:
            assert drawing.write_graph(model, path, highlight="head") == suffix
        assert path.stat().st_size > 100
        nodes = set(ks.to_graph(model).nodes)
        if suffix == "graphml":
            back = nx.read_graphml(path)
            assert set(back.nodes) == nodes
            assert back.nodes["encoder/inner_dense"]["activation"] == "relu"
        elif suffix == "json":
            data = json.loads(path.read_text())
            assert {n["id"] for n in data["nodes"]} == nodes
        elif suffix == "png":
            assert plt.imread(path).shape[0] > 100

    def test_write_graph_refuses_unknown_suffix(self, tmp_path):
        with pytest.raises(DataError, match=r"\.dot"):
            drawing.write_graph(zoo.mlp(), tmp_path / "g.bmp")
        with pytest.raises(DataError, match="plot.save_graph"):
            drawing.write_graph(zoo.mlp(), tmp_path / "g.svg")
        with pytest.raises(DataError, match=r"\.svg"):
            ks.plot.save_graph(zoo.mlp(), tmp_path / "g.bmp")
