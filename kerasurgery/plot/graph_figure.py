"""Drawing a model's graph: Graphviz through pydot when present, else matplotlib.

`kerasurgery.plot.graph` and `kerasurgery.plot.save_graph` are the public
entry points; this module holds the two engines.

- Graphviz: DOT text from `kerasurgery.ir.export.to_dot`, laid out by ``dot``.
- matplotlib: `kerasurgery.plot.graph_drawing`: a layered layout whose
  rows wrap into side-by-side columns for long graphs, drawn in inches so the
  text keeps its size (8 points) whatever the model's size, with a legend of
  the box colours. No Graphviz needed.
"""

from __future__ import annotations

import io
import os
import shutil
from typing import Any

import networkx as nx

from kerasurgery.errors import DataError
from kerasurgery.ir.export import highlight_keys, to_dot
from kerasurgery.ir.from_keras import as_graph
from kerasurgery.plot.graph_drawing import figure as drawing_figure
from kerasurgery.plot.columns import ONE_COLUMN_ROWS

ENGINES = ("auto", "graphviz", "matplotlib")


def graphviz_available() -> bool:
    """True when pydot imports and Graphviz's ``dot`` program is on the PATH."""
    try:
        import pydot  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def _engine(engine: str, graph: Any) -> str:
    if engine not in ENGINES:
        raise DataError(f"Expected `engine` to be one of {ENGINES}. Received: engine={engine!r}.")
    if engine == "auto":  # Graphviz draws one long strip: long graphs wrap into columns instead
        short = nx.dag_longest_path_length(graph) < ONE_COLUMN_ROWS
        return "graphviz" if short and graphviz_available() else "matplotlib"
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
    if _engine(engine, graph) == "graphviz":
        return _graphviz_figure(graph, keys, title, show_shapes)
    return drawing_figure(graph, keys, title, show_shapes)


def save(model_or_graph: Any, path: str | os.PathLike, *, engine: str = "auto", **kwargs: Any) -> None:
    """See `kerasurgery.plot.save_graph`."""
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in ("svg", "png", "pdf"):
        raise DataError(f"Expected a drawing file ending in .svg, .png or .pdf. Received: {path!r}.")
    graph = as_graph(model_or_graph)
    if _engine(engine, graph) == "graphviz":
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
    ``get_gid()`` is its node key, and a legend names the classes of each
    colour); nested models are labelled clusters (Graphviz) or share a
    background band (matplotlib).

    The matplotlib engine needs no Graphviz: networkx computes a layered
    layout, and a graph more than 24 rows deep (a real model: MobileNetV2 has
    156) wraps into side-by-side columns read left to right, so the text keeps
    its size (8 points: 13 pixels a line at 100 dpi) instead of shrinking with
    the model. An arrow that leaves a column ends at a "continues in column
    k" marker and resumes under a "from <node>" marker at the top of its
    column. ``engine="auto"`` uses Graphviz (through pydot) for graphs of at
    most 24 rows when both are installed, the matplotlib engine otherwise.
    For a zoomable file, save to ``.svg`` or ``.pdf`` with `save_graph`.

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

    With Graphviz (``engine="graphviz"``, or ``"auto"`` for a graph of at
    most 24 rows when it is installed) the file comes straight from ``dot``;
    otherwise from the matplotlib drawing of `graph` (columns for long
    graphs), saved at 110 dpi. ``.svg`` and ``.pdf`` are vector drawings that
    zoom without blur.

    Args:
        model_or_graph: a Functional or Sequential model, or a graph from
            `kerasurgery.to_graph`.
        path: the file to write; its suffix chooses the format.
        **kwargs: ``engine``, ``highlight``, ``title``, ``show_shapes`` as for `graph`.

    Raises:
        DataError: an unknown suffix or engine.

    Example:
        >>> import keras, kerasurgery as ks, os, tempfile
        >>> x = keras.Input((3,), name="x")
        >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
        >>> path = os.path.join(tempfile.mkdtemp(), "model.svg")
        >>> ks.plot.save_graph(model, path, engine="matplotlib")
        >>> "<svg" in open(path).read()
        True
    """
    save(model_or_graph, path, **kwargs)
