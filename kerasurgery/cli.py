"""The ``kerasurgery`` command: look inside a saved model without writing code.

::

    kerasurgery demo [--out DIR]
    kerasurgery inspect MODEL.keras [--pattern GLOB] [--json]
    kerasurgery graph MODEL.keras -o FILE(.svg/.png/.pdf/.dot/.graphml/.json)
    kerasurgery split MODEL.keras -o OUT.keras [--layers NAME ...]
    kerasurgery expose MODEL.keras POINT ... -o OUT.keras [--keep-outputs]
    kerasurgery collect MODEL.keras --data FILE(.npy/.npz) [--points P ...] -o acts.h5
    kerasurgery calibrate MODEL.keras --data FILE [--points P ...] -o ranges.json

Models load in Keras's safe mode: a file with a ``Lambda`` layer is refused
unless ``--unsafe`` is given. Bad input (a missing or non-Keras file, an
unknown point, data of the wrong shape) prints one line on stderr and exits
with status 2.

Example:
    >>> from kerasurgery.cli import main
    >>> main(["inspect", "no-such-model.keras"])  # doctest: +SKIP
    kerasurgery inspect: error: Expected a Keras model file at 'no-such-model.keras'. ...
    2
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import kerasurgery as ks
from kerasurgery.errors import AddressError, DataError, KerasurgeryError
from kerasurgery.stats import DEFAULT_SAMPLE

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# ---------------------------------------------------------------------------
# shared steps


def _import_modules(names: Sequence[str]) -> None:
    for name in names or ():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise DataError(f"Expected --import to name an importable module. Received: {name!r} ({e}).") from None


def _load(args: argparse.Namespace) -> Any:
    from kerasurgery.files import load_model

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
    from kerasurgery.files import input_specs, load_data

    if data_path:
        return load_data(data_path, model, limit=limit)
    import numpy as np

    from kerasurgery.graph import map_structure

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


# ---------------------------------------------------------------------------
# commands


def cmd_demo(args: argparse.Namespace) -> int:
    from kerasurgery import demo

    demo.run(args.out, epochs=args.epochs)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from kerasurgery.summary import format_table, point_table

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
    from kerasurgery.drawing import GRAPH_FORMATS, write_graph

    model = _load(args)
    _output(args.output, GRAPH_FORMATS, "a graph file")
    fmt = write_graph(model, args.output, highlight=args.highlight or None, engine=args.engine)
    print(f"wrote the graph of '{model.name}' ({len(ks.to_graph(model))} nodes) as {fmt} to {args.output}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from kerasurgery.compare import compare

    model = _load(args)
    _output(args.output, (".keras",), "a model file")
    split = ks.split_activations(model, args.layers or None)
    before = {layer.name for layer in model._flatten_layers()}
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
    from kerasurgery.collect import collect

    result = collect(
        model, data, args.points or None, batch_size=args.batch_size, training=args.training,
        path=args.output, progress=_progress(args), overwrite=args.overwrite,
    )
    try:
        print(f"collected {len(result)} point(s) over {_count(data)} sample(s):")
        _print_columns([(a, _shape(v), str(getattr(v, "dtype", ""))) for a, v in result.items()])
    finally:
        getattr(result, "close", lambda: None)()
    print(f"wrote {args.output}  (read it with kerasurgery.collect.load_activations(path)[address])")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from kerasurgery.summary import format_table

    model = _load(args)
    _output(args.output, (".json",), "a JSON file")
    if args.histograms:
        _output(args.histograms, (".png", ".svg", ".pdf"), "an image file")
    data = _check_inputs(model, args.data, limit=args.limit)
    from kerasurgery.stats import calibrate

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


def _sample_size(text: str) -> int | None:
    """``--sample``: a positive integer, or 'all' for every value."""
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return value


def _count(data: Any) -> int:
    from kerasurgery.files import sample_count

    return sample_count(data)


# ---------------------------------------------------------------------------
# parser


def _model_parent() -> _Parser:
    parent = _Parser(add_help=False)
    parent.add_argument("model", metavar="MODEL", help="a saved model: MODEL.keras (or legacy .h5)")
    parent.add_argument("--unsafe", action="store_true",
                        help="allow Python code in the file (Lambda layers); only for files you trust")
    parent.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (registers custom layers); repeatable")
    return parent


def _data_arguments(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--data", required=required, metavar="FILE",
                   help="inputs as .npy (one input) or .npz (one array per input, named after it)")
    p.add_argument("--points", nargs="+", metavar="POINT",
                   help="addresses or globs, e.g. conv_1 'block_*:pre' (see `kerasurgery inspect`)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="samples per forward pass (32)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N samples")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kerasurgery`` command."""
    parser = _Parser(prog="kerasurgery", description="See inside and rewrite Keras 3 models.",
                     epilog="Run `kerasurgery demo` for a tour; `kerasurgery COMMAND --help` for details.")
    parser.add_argument("--version", action="version", version=f"kerasurgery {ks.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    model = _model_parent()

    p = sub.add_parser("demo", help="train a tiny model and show every job; writes pictures",
                       description="Build and briefly train a small CNN on shapes it draws itself, then "
                       "show logits, a split model, a probe pair, collected activations and calibration "
                       "ranges. Writes feature maps, histograms and a graph drawing.")
    p.add_argument("--out", default="kerasurgery-demo", metavar="DIR", help="output folder (./kerasurgery-demo)")
    p.add_argument("--epochs", type=int, default=4, metavar="N", help="training epochs (4)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("inspect", parents=[model], help="table of points: address, class, shape, activation, params",
                       description="List every point of the model that expose/collect/calibrate accept.")
    p.add_argument("--pattern", metavar="GLOB", help="only addresses matching GLOB, e.g. 'conv*' or '*:pre'")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("graph", parents=[model], help="draw or export the model's graph",
                       description="Write the graph; the suffix of FILE picks the format: .svg .png .pdf "
                       "(drawing; Graphviz when installed, else matplotlib), .dot, .graphml, .json.")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--highlight", nargs="+", metavar="POINT", help="points to mark in red")
    p.add_argument("--engine", choices=("auto", "graphviz", "matplotlib"), default="auto",
                   help="drawing engine for .svg/.png/.pdf (auto)")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("split", parents=[model], help="copy with fused activations as separate layers",
                       description="Write a copy of the model in which each fused activation (Dense(..., "
                       "activation='relu'), Conv2D, ...) is its own Activation layer; outputs are checked equal.")
    p.add_argument("-o", "--output", required=True, metavar="OUT.keras", help="the model file to write")
    p.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers (names or globs); default all")
    p.add_argument("--data", metavar="FILE", help="check equality on these inputs instead of random ones")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("expose", parents=[model], help="probe model whose outputs are the given points",
                       description="Write a model returning {address: tensor} for the points, sharing "
                       "weights with the original. Addresses: name, nested/name, name:pre, mha:scores, globs.")
    p.add_argument("points", nargs="+", metavar="POINT", help="addresses or globs")
    p.add_argument("-o", "--output", required=True, metavar="OUT.keras", help="the model file to write")
    p.add_argument("--keep-outputs", action="store_true", help="also return the model's own outputs")
    p.set_defaults(func=cmd_expose)

    p = sub.add_parser("collect", parents=[model], help="activations of points over a dataset, to HDF5",
                       description="Run the model once over --data and stream the values of the points "
                       "(default: every layer output) to an HDF5 file, one dataset per address.")
    _data_arguments(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="acts.h5", help="the HDF5 file to write")
    p.add_argument("--training", action="store_true", help="run Dropout/BatchNorm in training mode")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("calibrate", parents=[model], help="value ranges and histograms of points, to JSON",
                       description="Stream --data through the model and record min, max, mean, std, "
                       "percentiles and a histogram per point (default: every point, ':pre' and "
                       "':scores' included), e.g. ranges of '*:pre' for quantization.")
    _data_arguments(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="ranges.json",
                   help="the JSON file to write (read it back with kerasurgery.stats.Calibration.from_json)")
    p.add_argument("--sample", type=_sample_size, default=DEFAULT_SAMPLE, metavar="N|all",
                   help=f"histograms, mean, std and zeros from at most N values per input sample of each "
                   f"point (min and max always see all); 'all' for exact statistics ({DEFAULT_SAMPLE})")
    p.add_argument("--histograms", metavar="FILE.png", help="also draw the histograms")
    p.add_argument("--max-plots", type=int, default=16, metavar="N", help="at most N histogram panels (16)")
    p.set_defaults(func=cmd_calibrate)
    return parser


def _one_line(error: BaseException, model: str | None = None) -> str:
    """The error as one line, with Python spellings turned into command-line ones."""
    text = " ".join(str(error).split()) or type(error).__name__
    if model:
        text = text.replace("`kerasurgery.points(model)`", f"`kerasurgery inspect {model}`")
    text = text.replace("Pass `overwrite=True`", "Pass --overwrite")
    return text if len(text) <= 800 else text[:797] + "..."


@contextlib.contextmanager
def _quiet(prog: str):
    """Warnings as one ``prog: warning: ...`` line each; TensorFlow's log muted."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {_one_line(Warning(message))}", file=sys.stderr)

    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            yield
    finally:
        tf_log.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kerasurgery`` command.

    Args:
        argv: the arguments (without the program name); default ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 2 on bad input (after printing one line
        on stderr), 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    prog = f"kerasurgery {args.command}"
    try:
        with _quiet(prog):
            return args.func(args)
    except (KerasurgeryError, ValueError, OSError) as e:
        print(f"{prog}: error: {_one_line(e, getattr(args, 'model', None))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
