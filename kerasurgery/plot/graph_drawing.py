"""The matplotlib engine of `kerasurgery.plot.graph`: readable at any model size.

Boxes are laid out by `kerasurgery.plot.layout.layered_layout` (one row per
depth) and, for long graphs, the rows are wrapped into side-by-side columns
(`kerasurgery.plot.columns`), so the text keeps its size (8 points, 11 pixels
at 100 dpi) instead of shrinking with the model. Everything is placed in
inches. Arrows that leave a column end at a "continues in column k" marker
and resume at a "from <node>" marker at the top of the child's column. A
legend under the title names the classes of each box colour, the red border
of highlighted points and the dashed border of raw ``keras.ops`` operations.

Example:
    >>> import keras
    >>> from kerasurgery.plot.graph_drawing import figure
    >>> from kerasurgery.ir.from_keras import to_graph
    >>> x = keras.Input((3,), name="x")
    >>> g = to_graph(keras.Model(x, keras.layers.Dense(2, activation="relu", name="d")(x)))
    >>> fig = figure(g, set(), None, True)
    >>> sorted(t.get_gid() for t in fig.axes[0].texts if t.get_gid())
    ['d', 'x']
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kerasurgery.ir.export import describe, fill_colour, node_label
from kerasurgery.plot.columns import rows_per_column, wrap_rows
from kerasurgery.plot.layout import layered_layout

FONT = 8.0  # points: 11 pixels at 100 dpi, whatever the model's size
ROW = 0.85  # inches between rows
GAP = 0.35  # inches between boxes in a row
COLUMN_GAP = 0.6  # inches between columns
MAX_INCHES = 60.0  # beyond this (a very wide graph), everything is scaled down
EDGE = "#555555"
MARK = "#d62728"


def _box_size(label: str, font: float) -> tuple[float, float]:
    """Approximate (width, height) in inches of a text box at `font` points."""
    lines = label.split("\n")
    width = max(len(line) for line in lines) * font * 0.6 / 72 + 0.2
    height = len(lines) * font * 1.3 / 72 + 0.14
    return width, height


class _Page:
    """Where everything goes: node centres, bend points and markers, in inches."""

    def __init__(self, view: Any, labels: dict[str, str]):
        pos, bends = layered_layout(view)
        self.rank = {k: int(round(-y)) for k, (_, y) in pos.items()}
        self.bends = {edge: [(x, int(round(-y))) for x, y in route] for edge, route in bends.items()}
        self.x = {k: x for k, (x, _) in pos.items()}
        depth = 1 + max(self.rank.values(), default=0)
        places: dict[int, list[float]] = defaultdict(list)
        for k, r in self.rank.items():
            places[r].append(self.x[k])
        for route in self.bends.values():
            for x, r in route:
                places[r].append(x)
        self.slot = max(_box_size(label, FONT)[0] for label in labels.values()) + GAP
        widest = max(max(p) - min(p) + 1 for p in places.values())
        self.spans = wrap_rows([len(places[r]) for r in range(depth)],
                               rows_per_column(depth, widest * self.slot, ROW))
        self.column_of_row = {r: c for c, (a, b) in enumerate(self.spans) for r in range(a, b)}
        self.left, left = [], 0.0
        self.low = []
        for a, b in self.spans:
            xs = [x for r in range(a, b) for x in places[r]]
            self.left.append(left)
            self.low.append(min(xs))
            left += (max(xs) - min(xs) + 1) * self.slot + COLUMN_GAP
        self.width = left - COLUMN_GAP
        self.rows = max(b - a for a, b in self.spans) + (2 if len(self.spans) > 1 else 0)
        self.height = self.rows * ROW
        self.top = 1 if len(self.spans) > 1 else 0  # a marker row above each column when wrapped

    def column(self, rank: int) -> int:
        return self.column_of_row[rank]

    def at(self, x: float, rank: int) -> tuple[float, float]:
        c = self.column(rank)
        a = self.spans[c][0]
        return self.left[c] + (x - self.low[c] + 0.5) * self.slot, -(rank - a + self.top + 0.5) * ROW

    def node(self, key: str) -> tuple[float, float]:
        return self.at(self.x[key], self.rank[key])

    def bottom_marker(self, column: int, x: float) -> tuple[float, float]:
        a, b = self.spans[column]
        return self.at(x, b - 1)[0], -(b - a + self.top + 0.5) * ROW

    def top_marker(self, column: int, x: float) -> tuple[float, float]:
        return self.at(x, self.spans[column][0])[0], -0.5 * ROW


def _legend_entries(view: Any, keys: set[str]) -> list[tuple[dict, str]]:
    """``[(patch properties, label), ...]``: each box colour with the classes drawn in it."""
    colours: dict[str, list[str]] = {}
    for _, data in view.nodes(data=True):
        names = colours.setdefault(fill_colour(data["class_name"], data["kind"]), [])
        if data["class_name"] not in names:
            names.append(data["class_name"])
    entries = []
    for colour, names in colours.items():
        label = ", ".join(names[:5]) + (f", +{len(names) - 5} more" if len(names) > 5 else "")
        entries.append(({"facecolor": colour, "edgecolor": EDGE, "linewidth": 0.8}, label))
    if keys:
        entries.append(({"facecolor": "white", "edgecolor": MARK, "linewidth": 2.4}, "highlighted point"))
    if any(data["kind"] == "op" for _, data in view.nodes(data=True)):
        entries.append(({"facecolor": "white", "edgecolor": EDGE, "linestyle": "--", "linewidth": 0.8},
                        "raw keras.ops operation"))
    return entries


def _arrow(ax: Any, route: list[tuple[float, float]], scale: float) -> None:
    if len(route) > 2:
        ax.plot([x for x, _ in route[:-1]], [y for _, y in route[:-1]], color=EDGE, lw=0.8, zorder=1,
                solid_joinstyle="round")
    ax.annotate("", xy=route[-1], xytext=route[-2], zorder=1,
                arrowprops=dict(arrowstyle="-|>", color=EDGE, lw=0.8, shrinkA=0, shrinkB=1,
                                mutation_scale=8 * scale + 2))


def _marker(ax: Any, xy: tuple[float, float], text: str, gid: str, font: float) -> None:
    label = ax.text(*xy, text, ha="center", va="center", fontsize=font * 0.95, style="italic", color="#333333",
                    zorder=3, bbox=dict(boxstyle="round,pad=0.3", fc="#f6f6f6", ec="#999999", lw=0.6, ls=":"))
    label.set_gid(gid)


def _edges(ax: Any, view: Any, page: _Page, sizes: dict, font: float, scale: float) -> None:
    sites = {k: view.nodes[k]["site"] for k in view}
    ends: dict[tuple[str, int], tuple[float, float]] = {}
    for parent, child in view.edges:
        cp, cc = page.column(page.rank[parent]), page.column(page.rank[child])
        bends = page.bends.get((parent, child), [])
        (px, py), (cx, cy) = page.node(parent), page.node(child)
        start, end = (px, py - sizes[parent][1] / 2), (cx, cy + sizes[child][1] / 2)
        if cp == cc:
            _arrow(ax, [start, *(page.at(x, r) for x, r in bends), end], scale)
            continue
        before = [page.at(x, r) for x, r in bends if page.column(r) == cp]
        after = [page.at(x, r) for x, r in bends if page.column(r) == cc]
        if (parent, cp) not in ends:
            ends[(parent, cp)] = page.bottom_marker(cp, page.x[parent])
            _marker(ax, ends[(parent, cp)], f"continues in column {cc + 1}", f"to:{parent}", font)
        _arrow(ax, [start, *before, (ends[(parent, cp)][0], ends[(parent, cp)][1] + ROW * 0.2 * scale)], scale)
        if (parent, cc) not in ends:
            first = (after or [end])[0]
            ends[(parent, cc)] = (first[0], page.top_marker(cc, 0.0)[1])
            _marker(ax, ends[(parent, cc)], f"from {sites[parent]}", f"from:{parent}", font)
        top = ends[(parent, cc)]
        _arrow(ax, [(top[0], top[1] - ROW * 0.2 * scale), *after, end], scale)


def _clusters(ax: Any, view: Any, page: _Page, centre: dict, sizes: dict, font: float) -> None:
    """A labelled band behind the nodes of each top-level nested model, one per column it spans."""
    from matplotlib.patches import FancyBboxPatch

    groups: dict[tuple[str, int], list[str]] = {}
    for key, data in view.nodes(data=True):
        if data["path"]:
            groups.setdefault((data["path"].split("/")[0], page.column(page.rank[key])), []).append(key)
    seen = set()
    for (name, _), members in groups.items():
        x0 = min(centre[k][0] - sizes[k][0] / 2 for k in members) - 0.12
        x1 = max(centre[k][0] + sizes[k][0] / 2 for k in members) + 0.12
        y0 = min(centre[k][1] - sizes[k][1] / 2 for k in members) - 0.1
        y1 = max(centre[k][1] + sizes[k][1] / 2 for k in members) + 0.1 + font * 1.6 / 72
        ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0.02",
                                    fc="#f4f6fb", ec="#8a93a8", lw=0.8, ls="--", zorder=0))
        label = ax.text(x0 + 0.06, y1 - 0.04, name + (" (continued)" if name in seen else ""), ha="left",
                        va="top", fontsize=font, style="italic", color="#4a5266", zorder=2)
        label.set_gid(f"cluster:{name}")
        seen.add(name)


def figure(graph: Any, keys: set[str], title: str | None, show_shapes: bool) -> Any:
    """The matplotlib drawing of `graph` (see `kerasurgery.plot.graph`)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    view = describe(graph)
    labels = {k: node_label(view.nodes[k], show_shapes=show_shapes) for k in view}
    page = _Page(view, labels)
    title = title or view.graph["name"]
    entries = _legend_entries(view, keys)

    width = max(page.width, len(title) * 11 * 0.6 / 72, 4.0) + 0.4
    legend_columns = max(1, min(len(entries), int(width // 2.6)))
    legend_rows = -(-len(entries) // legend_columns)
    head = 0.45 + 0.22 * legend_rows + 0.15  # title, legend, space (inches)
    height = page.height + head + 0.2
    scale = min(1.0, MAX_INCHES / max(width, height))
    font = FONT * scale
    sizes = {k: _box_size(labels[k], font) for k in view}

    fig = plt.figure(figsize=(width * scale, height * scale))
    ax = fig.add_axes((0, 0.2 / height, 1, page.height / height))
    margin = (width - page.width) / 2
    ax.set_xlim(-margin, page.width + margin)
    ax.set_ylim(-page.height, 0)
    ax.set_axis_off()

    centre = {k: page.node(k) for k in view}
    _clusters(ax, view, page, centre, sizes, font)
    _edges(ax, view, page, sizes, font, scale)
    for key in view:
        data = view.nodes[key]
        marked = key in keys
        text = ax.text(
            *centre[key], labels[key], ha="center", va="center", fontsize=font, zorder=3,
            bbox=dict(boxstyle="round,pad=0.35", fc=fill_colour(data["class_name"], data["kind"]),
                      ec=MARK if marked else EDGE, lw=2.4 if marked else 0.8,
                      ls="--" if data["kind"] == "op" else "-"),
        )
        text.set_gid(key)
    if len(page.spans) > 1:
        for c in range(len(page.spans)):
            x = page.left[c] - COLUMN_GAP / 2
            if c:
                ax.axvline(x, color="#dddddd", lw=0.8, zorder=0)
            ax.text(page.left[c], -0.1 * ROW, f"column {c + 1}", ha="left", va="top", fontsize=font,
                    color="#888888", zorder=2)

    fig.suptitle(title, y=1 - 0.12 / height, va="top", fontsize=11 * max(scale, 0.7))
    handles = [Patch(**props) for props, _ in entries]
    fig.legend(handles, [label for _, label in entries], loc="upper center", ncols=legend_columns,
               bbox_to_anchor=(0.5, 1 - 0.45 / height), fontsize=font, frameon=False, handlelength=1.6,
               columnspacing=1.2)
    return fig
