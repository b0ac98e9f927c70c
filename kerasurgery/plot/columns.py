"""`wrap_rows`: a long layered drawing cut into side-by-side columns.

A real model (MobileNetV2: 156 rows, 2 places wide at most) drawn as one
top-to-bottom chain is a strip hundreds of inches tall; shrinking it to a
page makes its text a few pixels high. Instead the rows of
`kerasurgery.plot.layout.layered_layout` are cut into columns read left to
right, like a newspaper, and the text keeps its size. Cuts go after a row
holding a single place (a node every path runs through, such as a residual
block's output) whenever one is near, so few arrows cross from one column to
the next; those that do are drawn with a "continues in column k" / "from
<node>" pair of markers.

Example:
    >>> wrap_rows([1] * 10, rows_per_column=4)
    [(0, 4), (4, 8), (8, 10)]
    >>> wrap_rows([1, 2, 2, 1, 2, 2, 2, 1, 2, 2, 1, 2], rows_per_column=5)  # cut after 1-wide rows
    [(0, 4), (4, 8), (8, 12)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Graphs of at most this many rows stay one column.
ONE_COLUMN_ROWS = 24
#: Bounds of the rows per column chosen for longer graphs.
MIN_ROWS, MAX_ROWS = 16, 40


def rows_per_column(depth: int, column_inches: float, row_inches: float, aspect: float = 1.6) -> int:
    """Rows per column so that the page is about `aspect` times wider than tall.

    With ``n = depth / R`` columns of width ``w`` and ``R`` rows of height
    ``h``, width / height = ``depth * w / (R**2 * h)``; solved for `aspect`
    and kept within [`MIN_ROWS`, `MAX_ROWS`]. Graphs of at most
    `ONE_COLUMN_ROWS` rows stay one column.

    Example:
        >>> rows_per_column(10, 2.4, 0.85), rows_per_column(156, 4.8, 0.85)
        (10, 23)
    """
    if depth <= ONE_COLUMN_ROWS:
        return max(depth, 1)
    ideal = math.sqrt(depth * column_inches / (aspect * row_inches))
    return int(min(MAX_ROWS, max(MIN_ROWS, round(ideal))))


def wrap_rows(widths: Sequence[int], rows_per_column: int) -> list[tuple[int, int]]:
    """Cut rows ``0 .. len(widths)`` into columns of at most `rows_per_column` rows.

    `widths` holds the number of places (boxes and bend points) of each row.
    Each column ends, preferably, after a row of width 1 (one arrow source
    crosses to the next column) at 70% to 100% of `rows_per_column`, the
    latest such row; otherwise after the narrowest row in that window. A last
    column of up to 15% more rows is not cut.

    Returns:
        ``[(start, stop), ...]`` row ranges, in order, covering every row once.
    """
    depth, size = len(widths), max(1, int(rows_per_column))
    spans, start = [], 0
    while start < depth:
        if depth - start <= math.ceil(size * 1.15):
            spans.append((start, depth))
            break
        window = range(start + max(1, math.ceil(size * 0.7)), start + size + 1)  # candidate stops
        stop = min(window, key=lambda b: (widths[b - 1], -b))
        spans.append((start, stop))
        start = stop
    return spans
