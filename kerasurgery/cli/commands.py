"""What each ``kerasurgery`` command does, once its arguments are parsed."""

from __future__ import annotations

import argparse
import importlib
import json
import os
from collections.abc import Sequence
from typing import Any

import kerasurgery as ks
import kerasurgery.layers  # noqa: F401 - registers the project's layers before any model is loaded
from kerasurgery.errors import AddressError, DataError
from kerasurgery.keras_internals import all_layers


def _import_modules(names: Sequence[str]) -> None:
    for name in names or ():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise DataError(f"Expected --import to name an importable module. Received: {name!r} ({e}).") from None


def _load(args: argparse.Namespace) -> Any:
    from kerasurgery.cli.files import load_model

    _import_modules(args.imports)
    return load_model(args.model, unsafe=args.unsafe)


def _output(path: str, suffixes: tuple[str, ...], what: str) -> str:
    """Check an output path: its suffix, and that its folder exists."""
    if not path.lower().endswith(suffixes):
        raise DataError(f"Expected {what} ending in {' or '.join(suffixes)}. Received: -o {path!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DataError(f"Expected an existing folder for -o {path!r}. Received: {folder!r} does not exist.")
    return path


def _check_inputs(model: Any, data_path: str | None, limit: int | None = None) -> Any:
    """Data from --data, or random inputs shaped like the model's (for checks)."""
    from kerasurgery.cli.files import input_specs, load_data

    if data_path:
        return load_data(data_path, model, limit=limit)
    import numpy as np

    from kerasurgery.ir.schema import map_structure

    structure, specs = input_specs(model)
    rng = np.random.default_rng(0)

    def make(key: str) -> Any:
        shape, dtype = specs[key]
        full = [4 if i == 0 else (d or 8) for i, d in enumerate(shape)]
        if "bool" in dtype:
            return rng.random(full) > 0.2
        if "int" in dtype:
            return np.zeros(full, dtype)
        return rng.standard_normal(full).astype("float32")

    return map_structure(make, structure)


def _progress(args: argparse.Namespace) -> Any:
    return False if args.quiet else None


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return "?" if shape is None else "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _print_columns(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    for row in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def cmd_demo(args: argparse.Namespace) -> int:
    from kerasurgery.cli import demo

    demo.run(args.out, epochs=args.epochs)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from kerasurgery.cli.point_table import format_table, point_table

    model = _load(args)
    rows = point_table(model, args.pattern)
    if not rows:
        raise AddressError(
            f"Expected --pattern to match at least one point of model '{model.name}'. "
            f"Received: {args.pattern!r}, which matches none (a pattern without ':' skips ':pre' "
            "and ':scores' points; try '*:pre').",
            address=args.pattern,
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    print(f"model '{model.name}' ({type(model).__name__}) from {args.model}")
    print(format_table(rows))
    print(f"{len(rows)} point(s); {model.count_params():,} parameters ({trainable:,} trainable)")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from kerasurgery.ir.export import GRAPH_FORMATS, IMAGE_FORMATS, write_graph

    model = _load(args)
    _output(args.output, GRAPH_FORMATS, "a graph file")
    if args.output.lower().endswith(IMAGE_FORMATS):
        ks.plot.save_graph(model, args.output, highlight=args.highlight or None, engine=args.engine)
        fmt = os.path.splitext(args.output)[1].lower().lstrip(".")
    else:
        fmt = write_graph(model, args.output, highlight=args.highlight or None)
    print(f"wrote the graph of '{model.name}' ({len(ks.to_graph(model))} nodes) as {fmt} to {args.output}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from kerasurgery.equivalence import compare

    model = _load(args)
    _output(args.output, (".keras",), "a model file")
    split = ks.split_activations(model, args.layers or None)
    before = {layer.name for layer in all_layers(model)}
    added = [layer.name for layer in split.layers if layer.name not in before]
    report = compare(model, split, _check_inputs(model, args.data, limit=64))
    worst = max(r["max_abs"] for r in report.values())
    split.save(args.output)
    print(f"split {len(added)} activation(s) into their own layers: {', '.join(added)}")
    print(f"outputs equal the original's: max abs difference {worst:.3g} "
          f"({'on --data' if args.data else 'on random inputs'})")
    print(f"wrote {args.output}")
    return 0


def cmd_expose(args: argparse.Namespace) -> int:
    model = _load(args)
    _output(args.output, (".keras",), "a model file")
    probe = ks.expose(model, args.points, keep_outputs=args.keep_outputs)
    probe.save(args.output)
    print(f"probe model '{probe.name}' with {len(probe.output)} output(s), sharing the original's weights:")
    _print_columns([(name, _shape(tensor)) for name, tensor in probe.output.items()])
    print(f"wrote {args.output}  (load it with `import kerasurgery` then keras.saving.load_model)")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    model = _load(args)
    _output(args.output, (".h5", ".hdf5"), "an HDF5 file")
    data = _check_inputs(model, args.data, limit=args.limit)
    from kerasurgery.runtime.collect import collect

    result = collect(
        model, data, args.points or None, batch_size=args.batch_size, training=args.training,
        path=args.output, progress=_progress(args), overwrite=args.overwrite,
    )
    try:
        print(f"collected {len(result)} point(s) over {_count(data)} sample(s):")
        _print_columns([(a, _shape(v), str(getattr(v, "dtype", ""))) for a, v in result.items()])
    finally:
        getattr(result, "close", lambda: None)()
    print(f"wrote {args.output}  (read it with kerasurgery.load_activations(path)[address])")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from kerasurgery.cli.point_table import format_table

    model = _load(args)
    _output(args.output, (".json",), "a JSON file")
    if args.histograms:
        _output(args.histograms, (".png", ".svg", ".pdf"), "an image file")
    data = _check_inputs(model, args.data, limit=args.limit)
    from kerasurgery.stats.calibrate import calibrate

    stats = calibrate(model, data, args.points or None, batch_size=args.batch_size, progress=_progress(args),
                      sample=args.sample)
    stats.to_json(args.output, indent=1)
    rows = [
        {"address": a, "min": f"{s.min:.4g}", "max": f"{s.max:.4g}", "mean": f"{s.mean:.4g}",
         "std": f"{s.std:.4g}", "zeros": f"{s.zero_fraction:.1%}"}
        for a, s in stats.items()
    ]
    print(f"ranges of {len(rows)} point(s) over {_count(data)} sample(s):")
    print(format_table(rows, ("address", "min", "max", "mean", "std", "zeros")))
    print(f"wrote {args.output}")
    if args.histograms:
        import matplotlib.pyplot as plt

        fig = ks.plot.histograms(stats, log=True, max_points=args.max_plots, title=f"{model.name}: calibration")
        fig.savefig(args.histograms, dpi=100)
        plt.close(fig)
        print(f"wrote {args.histograms}")
    return 0


def _count(data: Any) -> int:
    from kerasurgery.cli.files import sample_count

    return sample_count(data)
