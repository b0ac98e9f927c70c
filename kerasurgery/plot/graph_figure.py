"""Drawing a model's graph: Graphviz through pydot when present, else matplotlib.

`kerasurgery.plot.graph` and `kerasurgery.plot.save_graph` are the public
entry points; this module holds the two engines.

- Graphviz: DOT text from `kerasurgery.ir.export.to_dot`, laid out by ``dot``.
- matplotlib: `kerasurgery.plot.layout.layered_layout`, boxes and
  arrows drawn in inch coordinates so text never scales with the graph.
"""

from __future__ import annotations

import io
import os
import shutil
from typing import Any

from kerasurgery.errors import DataError
from kerasurgery.ir.export import describe, fill_colour, highlight_keys, node_label, to_dot
from kerasurgery.ir.from_keras import as_graph
from kerasurgery.plot.layout import layered_layout

ENGINES = ("auto", "graphviz", "matplotlib")

_FONT = 8.0  # points
_ROW = 0.85  # inches between rows
_GAP = 0.35  # inches between boxes in a row
_MAX_INCHES = 60.0


def graphviz_available() -> bool:
    """True when pydot imports and Graphviz's ``dot`` program is on the PATH."""
    try:
        import pydot  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def _engine(engine: str) -> str:
    if engine not in ENGINES:
        raise DataError(f"Expected `engine` to be one of {ENGINES}. Received: engine={engine!r}.")
    if engine == "auto":
        return "graphviz" if graphviz_available() else "matplotlib"
    if engine == "graphviz" and not graphviz_available():
        raise DataError(
            "Expected Graphviz for engine='graphviz'. Received: pydot or the `dot` program is "
            "missing. Install both (`pip install pydot` and your system's graphviz package) or use "
            "engine='matplotlib'."
        )
    return engine


def _render(dot_text: str, fmt: str) -> bytes:
    import pydot

    (dot_graph,) = pydot.graph_from_dot_data(dot_text)
    return dot_graph.create(prog="dot", format=fmt)


def draw(
    model_or_graph: Any,
    *,
    highlight: Any = None,
    engine: str = "auto",
    title: str | None = None,
    show_shapes: bool = True,
) -> Any:
    """See `kerasurgery.plot.graph`."""
    graph = as_graph(model_or_graph)
    keys = highlight_keys(graph, highlight)
    if _engine(engine) == "graphviz":
        return _graphviz_figure(graph, keys, title, show_shapes)
    return _matplotlib_figure(graph, keys, title, show_shapes)


def save(model_or_graph: Any, path: str | os.PathLike, *, engine: str = "auto", **kwargs: Any) -> None:
    """See `kerasurgery.plot.save_graph`."""
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in ("svg", "png", "pdf"):
        raise DataError(f"Expected a drawing file ending in .svg, .png or .pdf. Received: {path!r}.")
    graph = as_graph(model_or_graph)
    if _engine(engine) == "graphviz":
        keys = highlight_keys(graph, kwargs.get("highlight"))
        text = to_dot(graph, highlight=keys, title=kwargs.get("title"),
                      show_shapes=kwargs.get("show_shapes", True))
        with open(path, "wb") as f:
            f.write(_render(text, fmt))
        return
    import matplotlib.pyplot as plt

    fig = draw(graph, engine="matplotlib", **kwargs)
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _graphviz_figure(graph: Any, keys: set[str], title: str | None, show_shapes: bool) -> Any:
    import matplotlib.image
    import matplotlib.pyplot as plt

    png = _render(to_dot(graph, highlight=keys, title=title, show_shapes=show_shapes), "png")
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    dpi = 96.0
    height, width = image.shape[:2]
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image)
    ax.set_axis_off()
    return fig


def _box_size(label: str, font: float) -> tuple[float, float]:
    """Approximate (width, height) in inches of a text box at `font` points."""
    lines = label.split("\n")
    width = max(len(line) for line in lines) * font * 0.6 / 72 + 0.2
    height = len(lines) * font * 1.3 / 72 + 0.14
    return width, height


def _matplotlib_figure(graph: Any, keys: set[str], title: str | None, show_shapes: bool) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    view = describe(graph)
    pos, bends = layered_layout(view)
    labels = {k: node_label(view.nodes[k], show_shapes=show_shapes) for k in view}
    sizes = {k: _box_size(labels[k], _FONT) for k in view}
    column = max(w for w, _ in sizes.values()) + _GAP
    xs = [x for x, _ in pos.values()] + [x for route in bends.values() for x, _ in route]
    ys = [y for _, y in pos.values()]
    width = (max(xs) - min(xs) + 1) * column + 0.6
    height = (max(ys) - min(ys) + 1) * _ROW + 0.9
    shrink = min(1.0, _MAX_INCHES / max(width, height))
    font = _FONT * shrink
    scale_x, scale_y = column * shrink, _ROW * shrink
    sizes = {k: _box_size(labels[k], font) for k in view}
    centre = {k: (x * scale_x, y * scale_y) for k, (x, y) in pos.items()}

    title = title or view.graph["name"]
    title_size = 11 * max(shrink, 0.7)
    fig_width = max(width * shrink, len(title) * title_size * 0.6 / 72 + 0.4)  # the title must fit
    fig = plt.figure(figsize=(fig_width, height * shrink))
    ax = fig.add_axes((0, 0, 1, 1 - 0.5 / (height * shrink)))
    left, right = min(xs) * scale_x - scale_x / 2, max(xs) * scale_x + scale_x / 2
    bottom, top = min(ys) * scale_y - scale_y / 2, max(ys) * scale_y + scale_y / 2
    extra = max(0.0, fig_width - (right - left)) / 2  # x in inches: boxes keep their size
    ax.set_xlim(left - extra, right + extra)
    ax.set_ylim(bottom, top)
    ax.set_axis_off()

    _draw_clusters(ax, view, centre, sizes, font, FancyBboxPatch)
    for parent, child in view.edges:
        route = [(x * scale_x, y * scale_y) for x, y in bends.get((parent, child), [])]
        (px, py), (cx, cy) = centre[parent], centre[child]
        route = [(px, py - sizes[parent][1] / 2), *route, (cx, cy + sizes[child][1] / 2)]
        if len(route) > 2:
            ax.plot([x for x, _ in route[:-1]], [y for _, y in route[:-1]], color="#555555",
                    lw=0.8, zorder=1, solid_joinstyle="round")
        ax.annotate(
            "", xy=route[-1], xytext=route[-2],
            arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.8, shrinkA=0, shrinkB=1,
                            mutation_scale=8 * shrink + 2),
            zorder=1,
        )
    for key in view:
        data = view.nodes[key]
        x, y = centre[key]
        marked = key in keys
        text = ax.text(
            x, y, labels[key], ha="center", va="center", fontsize=font, zorder=3,
            bbox=dict(boxstyle="round,pad=0.35", fc=fill_colour(data["class_name"], data["kind"]),
                      ec="#d62728" if marked else "#555555", lw=2.4 if marked else 0.8,
                      ls="--" if data["kind"] == "op" else "-"),
        )
        text.set_gid(key)
    ax.set_title(title, fontsize=title_size, pad=4)
    return fig


def _draw_clusters(ax: Any, view: Any, centre: dict, sizes: dict, font: float, patch: Any) -> None:
    """A labelled band behind the nodes of each top-level nested model."""
    groups: dict[str, list[str]] = {}
    for key, data in view.nodes(data=True):
        if data["path"]:
            groups.setdefault(data["path"].split("/")[0], []).append(key)
    for name, members in groups.items():
        x0 = min(centre[k][0] - sizes[k][0] / 2 for k in members) - 0.12
        x1 = max(centre[k][0] + sizes[k][0] / 2 for k in members) + 0.12
        y0 = min(centre[k][1] - sizes[k][1] / 2 for k in members) - 0.1
        y1 = max(centre[k][1] + sizes[k][1] / 2 for k in members) + 0.1 + font * 1.6 / 72
        ax.add_patch(patch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0.02",
                           fc="#f4f6fb", ec="#8a93a8", lw=0.8, ls="--", zorder=0))
        label = ax.text(x0 + 0.06, y1 - 0.04, name, ha="left", va="top", fontsize=font,
                        style="italic", color="#4a5266", zorder=2)
        label.set_gid(f"cluster:{name}")


def graph(
    model_or_graph: Any,
    *,
    highlight: Any = None,
    engine: str = "auto",
    title: str | None = None,
    show_shapes: bool = True,
) -> Any:
    """A drawing of the model's graph: one box per call site, arrows for data.

    Boxes show the name, class (with fused activation) and output shape, and
    are coloured by layer family (with matplotlib, each box is a Text whose
    ``get_gid()`` is its node key); nested models are labelled clusters
    (Graphviz) or share a background band (matplotlib). With
    ``engine="auto"`` Graphviz is used through pydot when both are installed,
    otherwise networkx computes a layered layout that matplotlib draws.

    Args:
        model_or_graph: a Functional or Sequential model, or a graph from
            `kerasurgery.to_graph`.
        highlight: addresses or globs of points to mark with a red border.
        engine: ``"auto"``, ``"graphviz"`` or ``"matplotlib"``.
        title: the title; default the model's name.
        show_shapes: put output shapes in the boxes.

    Returns:
        A matplotlib Figure.

    Raises:
        DataError: unknown `engine`, or ``"graphviz"`` when it is not installed.
        AddressError: `highlight` names no point of the model.

    Example:
        >>> import keras, kerasurgery as ks
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, activation="relu", name="d")(x), name="m")
        >>> fig = ks.plot.graph(model, engine="matplotlib", highlight=["d:pre"])
        >>> [t.get_gid() for t in fig.axes[0].texts if t.get_gid()]  # one box per node
        ['x', 'd']
    """
    return draw(model_or_graph, highlight=highlight, engine=engine, title=title,
                          show_shapes=show_shapes)


def save_graph(model_or_graph: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """Write a drawing of the graph to ``.svg``, ``.png`` or ``.pdf``.

    With Graphviz (``engine="auto"`` or ``"graphviz"``) the file comes straight
    from ``dot``; otherwise from the matplotlib drawing of `graph`.
    """
    save(model_or_graph, path, **kwargs)
