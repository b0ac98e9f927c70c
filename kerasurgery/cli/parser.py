"""The ``kerasurgery`` command line: its arguments, and nothing heavy.

`build_parser` imports neither Keras nor a backend, so ``--help``,
``--version`` and argument errors answer at once; each command names its
function in `kerasurgery.cli.commands`, imported only to run it.
"""

from __future__ import annotations

import argparse

from kerasurgery._version import __version__

EXIT_USAGE = 2
DEFAULT_SAMPLE = 256  # kerasurgery.stats.calibrate.DEFAULT_SAMPLE (tests/test_cli.py checks they agree)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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


def _overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (never the command's own inputs)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kerasurgery`` command."""
    parser = _Parser(prog="kerasurgery", description="See inside and rewrite Keras 3 models.",
                     epilog="Run `kerasurgery demo` for a tour; `kerasurgery COMMAND --help` for details.")
    parser.add_argument("--version", action="version", version=f"kerasurgery {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    model = _model_parent()

    p = sub.add_parser("demo", help="train a tiny model and show every job; writes pictures",
                       description="Build and briefly train a small CNN on shapes it draws itself, then "
                       "show logits, a split model, a probe pair, collected activations and calibration "
                       "ranges. Writes feature maps, histograms and a graph drawing.")
    p.add_argument("--out", default="kerasurgery-demo", metavar="DIR", help="output folder (./kerasurgery-demo)")
    p.add_argument("--epochs", type=int, default=4, metavar="N", help="training epochs (4)")
    _overwrite(p)
    p.set_defaults(func="cmd_demo")

    p = sub.add_parser("inspect", parents=[model], help="table of points: address, class, shape, activation, params",
                       description="List every point of the model that expose/collect/calibrate accept.")
    p.add_argument("--pattern", metavar="GLOB", help="only addresses matching GLOB, e.g. 'conv*' or '*:pre'")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func="cmd_inspect")

    p = sub.add_parser("graph", parents=[model], help="draw or export the model's graph",
                       description="Write the graph; the suffix of FILE picks the format: .svg .png .pdf "
                       "(drawing; Graphviz when installed, else matplotlib), .dot, .graphml, .json.")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--highlight", nargs="+", metavar="POINT", help="points to mark in red")
    p.add_argument("--engine", choices=("auto", "graphviz", "matplotlib"), default="auto",
                   help="drawing engine for .svg/.png/.pdf (auto)")
    _overwrite(p)
    p.set_defaults(func="cmd_graph")

    p = sub.add_parser("split", parents=[model], help="copy with fused activations as separate layers",
                       description="Write a copy of the model in which each fused activation (Dense(..., "
                       "activation='relu'), Conv2D, ...) is its own Activation layer; outputs are checked equal.")
    p.add_argument("-o", "--output", required=True, metavar="OUT.keras", help="the model file to write")
    p.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers (names or globs); default all")
    p.add_argument("--data", metavar="FILE", help="check equality on these inputs instead of random ones")
    _overwrite(p)
    p.set_defaults(func="cmd_split")

    p = sub.add_parser("expose", parents=[model], help="probe model whose outputs are the given points",
                       description="Write a model returning {address: tensor} for the points, sharing "
                       "weights with the original. Addresses: name, nested/name, name:pre, mha:scores, globs.")
    p.add_argument("points", nargs="+", metavar="POINT", help="addresses or globs")
    p.add_argument("-o", "--output", required=True, metavar="OUT.keras", help="the model file to write")
    p.add_argument("--keep-outputs", action="store_true", help="also return the model's own outputs")
    _overwrite(p)
    p.set_defaults(func="cmd_expose")

    p = sub.add_parser("collect", parents=[model], help="activations of points over a dataset, to HDF5",
                       description="Run the model once over --data and stream the values of the points "
                       "(default: every layer output) to an HDF5 file, one dataset per address.")
    _data_arguments(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="acts.h5", help="the HDF5 file to write")
    p.add_argument("--training", action="store_true", help="run Dropout/BatchNorm in training mode")
    _overwrite(p)
    p.set_defaults(func="cmd_collect")

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
    _overwrite(p)
    p.set_defaults(func="cmd_calibrate")
    return parser
