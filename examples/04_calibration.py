"""Calibration ranges for quantization: min/max, percentiles and histograms of
every pre-activation over a dataset, in one streaming pass.

Post-training quantization needs the range of each tensor it quantizes.
`calibrate` runs the model once over the data and keeps only running
statistics (bounded memory), here of every value before an activation
(``"*:pre"``). From them we derive int8 scales two ways: from the full range,
and clipped at a high percentile, which ignores rare outliers.

The script checks its claims with numbers (an AssertionError stops it if one
does not hold): for every point, the calibrated count, min and max equal
numpy's over the activations `collect` keeps in memory; the clipped range lies
inside the full one; the split model's outputs equal the original's.

Run: python examples/04_calibration.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import keras
import matplotlib.pyplot as plt
import numpy as np

import kerasurgery as ks
from kerasurgery.cli.demo import build_model, make_shapes


def main(out: str) -> None:
    keras.utils.set_random_seed(0)
    x, y = make_shapes(800)
    model = build_model()  # a small CNN: conv_1..conv_3, dense, predictions
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)

    stats = ks.calibrate(model, x, "*:pre", batch_size=64)
    ranges = {}
    print(f"{'point':16s} {'min':>8s} {'max':>8s} {'clipped':>8s}  int8 scale (range / clipped)")
    for address, s in stats.items():
        d = s.to_dict()
        percentiles = {float(q): float(v) for q, v in d["percentiles"].items()}
        top = max(percentiles)  # the highest percentile recorded, e.g. 99.9
        bottom = min(percentiles)
        absmax = max(abs(d["min"]), abs(d["max"]))
        clipped = max(abs(percentiles[bottom]), abs(percentiles[top]))
        ranges[address] = {"min": d["min"], "max": d["max"], "scale": absmax / 127,
                           "clipped_scale": clipped / 127, "clip_percentiles": [bottom, top]}
        print(f"{address:16s} {d['min']:8.3f} {d['max']:8.3f} {clipped:8.3f}  "
              f"{absmax / 127:.5f} / {clipped / 127:.5f}")
        np.testing.assert_array_less(clipped, absmax + 1e-6, err_msg=f"{address}: clipped range outside the range")

    # The check: the same points kept in memory by `collect`, reduced by numpy.
    values = ks.collect(model, x, "*:pre", batch_size=64)
    print(f"{'point':16s} {'count':>9s} {'|min - numpy min|':>18s} {'|max - numpy max|':>18s}")
    for address, s in stats.items():
        d, v = s.to_dict(), values[address]
        print(f"{address:16s} {d['count']:9d} {abs(d['min'] - v.min()):18.1e} {abs(d['max'] - v.max()):18.1e}")
        np.testing.assert_equal(d["count"], v.size, err_msg=f"{address}: count")
        np.testing.assert_allclose([d["min"], d["max"]], [v.min(), v.max()], rtol=1e-6, atol=1e-6,
                                   err_msg=f"{address}: min/max differ from numpy's")

    path = os.path.join(out, "ranges.json")
    with open(path, "w") as f:
        json.dump(ranges, f, indent=1)
    print("wrote", path)
    fig = ks.plot.histograms(stats, log=True, title="pre-activations: histograms, min/max, percentiles")
    fig.savefig(os.path.join(out, "histograms.png"), dpi=90)
    plt.close(fig)
    print("wrote", os.path.join(out, "histograms.png"))

    # Quantizers usually want each activation as its own layer: split first,
    # then the ranges above are the ranges of the linear layers' outputs.
    split = ks.split_activations(model)
    print("split model:", [layer.name for layer in split.layers if layer.name.endswith("_activation")])
    difference = ks.compare(model, split, x[:64])["predictions"]["max_abs"]
    print(f"largest output difference of the split model: {difference:.1e}")
    np.testing.assert_array_less(difference, 1e-5)
    keras.backend.clear_session()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    out = parser.parse_args().out or tempfile.mkdtemp(prefix="kerasurgery-")
    os.makedirs(out, exist_ok=True)
    main(out)
