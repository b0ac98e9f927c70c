"""Pictures of what a model computes: feature maps, histograms, attention, the graph.

Every function returns a `matplotlib.figure.Figure` made through pyplot (so
``plt.show()`` displays it and notebooks render it) and never calls ``show()``
itself; save it with ``fig.savefig("maps.png")`` and close it with
``plt.close(fig)`` in loops. matplotlib is imported on first use (install it
with ``pip install kerasurgery[plot]``).

=================  ==========================================================
`feature_maps`     one image per channel of an (H, W, C) activation
`histograms`       value distributions of collected activations or of
                   `kerasurgery.calibrate` statistics, one panel per point,
                   at most `max_points` a figure (``page=`` for the others)
`histogram_pages`  every page of `histograms`, one figure each
`attention`        one heatmap per head of ``:scores``, with token labels
`heatmaps`         attribution maps (Grad-CAM, saliency) over their images,
                   with a colour bar
`save_activations` one PNG per point of a `kerasurgery.collect` result,
                   any rank, into a folder (never overwriting unless asked)
`sqnr`             SQNR per point of `kerasurgery.quantization_error`, in
                   depth order
`graph`            the model's DAG (Graphviz when installed, else matplotlib)
`save_graph`       a drawing of the DAG to .svg, .png or .pdf
=================  ==========================================================

Example:
    >>> import numpy as np, kerasurgery as ks
    >>> fig = ks.plot.feature_maps(np.random.rand(8, 8, 5), title="conv_1")
    >>> sum(1 for ax in fig.axes if ax.images)
    5
"""

from kerasurgery.plot.activation_files import save_activations
from kerasurgery.plot.attention_maps import attention
from kerasurgery.plot.distributions import histogram_pages, histograms
from kerasurgery.plot.graph_figure import graph, save_graph
from kerasurgery.plot.heatmaps import heatmaps
from kerasurgery.plot.maps import feature_maps
from kerasurgery.plot.quantization import sqnr

__all__ = ["attention", "feature_maps", "graph", "heatmaps", "histogram_pages", "histograms", "save_activations",
           "save_graph", "sqnr"]
