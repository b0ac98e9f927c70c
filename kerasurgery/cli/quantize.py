"""``calibrate --method ... --export ...`` and ``quantize-check``: ranges, their export, the error per point.

`export_ranges` is the part of ``calibrate`` that turns statistics into
ranges and writes them (the suffix picks the format: ``.json``, the ranges
with each point's tensor name; ``.cache``, a TensorRT calibration cache).
`cmd_quantize_check` fake-quantizes the model with ranges (read from a file,
or calibrated on the data) and prints SQNR, MSE, cosine similarity and max
abs error per point.
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from kerasurgery.cli.files import check_output, load_data, load_model
from kerasurgery.cli.point_table import format_table
from kerasurgery.errors import DataError
from kerasurgery.quant.methods import check_settings
from kerasurgery.runtime.h5 import written_to

EXPORTS = (".json", ".cache")


def check_exports(args: argparse.Namespace) -> None:
    """Refuse, before anything runs, export files that exist (without --overwrite) or are inputs or -o."""
    if args.export and not args.method:
        args.method = "minmax"
    if args.method:
        check_settings(args.method, args.percentile, args.bits, None, False)
    for path in args.export or ():
        check_output(path, "--export", suffixes=EXPORTS, what="a ranges file (.json) or a TensorRT cache (.cache)",
                     inputs={"model file": args.model, "data file": args.data, "output": args.output},
                     overwrite=args.overwrite)
    if len(set(args.export or ())) != len(args.export or ()):
        raise DataError(f"Expected different files after --export. Received: {args.export}.")


def _ranges(stats: Any, args: argparse.Namespace) -> Any:
    symmetric = {"auto": None, "signed": True, "asymmetric": False}[args.symmetric]
    return stats.ranges(args.method, percentile=args.percentile, bits=args.bits, symmetric=symmetric)


def _range_rows(ranges: Any) -> list[dict]:
    return [{"address": a, "kind": r.kind, "low": f"{r.low:.4g}", "high": f"{r.high:.4g}", "scale": f"{r.scale:.4g}",
             "zero point": str(r.zero_point)} for a, r in ranges.items()]


def export_ranges(stats: Any, model: Any, args: argparse.Namespace) -> None:
    """``--method``: print the ranges; ``--export``: write them (.json with tensor names, .cache for TensorRT)."""
    if not args.method:
        return
    ranges = _ranges(stats, args)
    print(f"{args.method} ranges at {args.bits} bits:")
    print(format_table(_range_rows(ranges), ("address", "kind", "low", "high", "scale", "zero point")))
    for path in args.export or ():
        with written_to(path) as temp:
            if path.lower().endswith(".json"):
                ranges.to_json(temp, indent=1, names=model)
            else:
                ranges.to_tensorrt(temp, names=model, overwrite=True)
        print(f"wrote {path}")


def cmd_quantize_check(args: argparse.Namespace) -> int:
    """Fake-quantize the model at the points and print the error table (see `kerasurgery.quantization_error`)."""
    import kerasurgery as ks

    check_settings(args.method, args.percentile, args.bits, None, False)
    for path, flag, suffixes, what in ((args.output, "-o", (".json",), "a JSON file"),
                                       (args.plot, "--plot", (".png", ".svg", ".pdf"), "an image file")):
        if path:
            check_output(path, flag, suffixes=suffixes, what=what, overwrite=args.overwrite,
                         inputs={"model file": args.model, "data file": args.data, "ranges file": args.ranges})
    for name in args.imports or ():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise DataError(f"Expected --import to name an importable module. Received: {name!r} ({e}).") from None
    model = load_model(args.model, unsafe=args.unsafe)
    data = load_data(args.data, model, limit=args.limit)
    progress = False if args.quiet else None
    if args.ranges:
        ranges = ks.Ranges.from_json(args.ranges)
        where = f"ranges of {args.ranges}"
    else:
        stats = ks.calibrate(model, data, args.points or "*:pre", batch_size=args.batch_size, progress=progress)
        ranges = _ranges(stats, args)
        where = f"{args.method} ranges calibrated on the data"
    points = (args.points or None) if args.ranges else None
    quantized = ks.fake_quantize(model, ranges, points, bits=args.bits, weights=args.weights)
    errors = ks.quantization_error(model, quantized, data, batch_size=args.batch_size, progress=progress)
    print(f"'{model.name}' fake-quantized at {len(errors) - sum(e.output for e in errors.values())} point(s), "
          f"{args.bits} bits ({where}{', kernels too' if args.weights else ''}), over {errors.samples} sample(s):")
    print(errors.table())
    worst = errors.worst
    if worst is not None:
        print(f"lowest SQNR: {worst.sqnr_db:.2f} dB at {worst.address}")
    if args.output:
        with written_to(args.output) as temp:
            temp.write_text(json.dumps(errors.to_dict(), indent=1))
        print(f"wrote {args.output}")
    if args.plot:
        import matplotlib.pyplot as plt

        fig = ks.plot.sqnr(errors, threshold=args.threshold)
        try:
            with written_to(args.plot) as temp:
                fig.savefig(temp, dpi=100)
        finally:
            plt.close(fig)
        print(f"wrote {args.plot}")
    return 0

