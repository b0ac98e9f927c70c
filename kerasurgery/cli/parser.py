"""The ``kerasurgery`` command line: its arguments, and nothing heavy.

`build_parser` imports neither Keras nor a backend, so ``--help``,
``--version`` and argument errors answer at once; each command names its
function in `kerasurgery.cli.commands`, imported only to run it.

One spelling per flag: every command selects points with ``--points P ...``
(addresses or globs, several values, repeatable) and names its output with
``-o/--output``. The old spellings (``inspect --pattern``, ``split --layers``,
``graph --highlight``, ``demo --out``) still work, hidden from ``--help``; each
use is listed in ``args.deprecated`` for `kerasurgery.cli.main` to warn about.
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


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: fills the same destination, and is noted in ``deprecated``."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: object):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        if isinstance(values, list):
            values = [*(getattr(namespace, self.dest, None) or []), *values]
        setattr(namespace, self.dest, values)
        namespace.deprecated = [*getattr(namespace, "deprecated", []), (option_string, self.new)]


def _points(p: argparse.ArgumentParser, help: str, *, alias: str | None = None, required: bool = False) -> None:
    """``--points P ...``: addresses or globs (several values; repeatable), plus an old spelling."""
    p.add_argument("--points", nargs="+", action="extend", metavar="POINT", required=required, help=help)
    if alias:
        p.add_argument(alias, dest="points", nargs="+", metavar="POINT", action=_DeprecatedAlias, new="--points")


def _output(p: argparse.ArgumentParser, metavar: str, help: str, *, default: str | None = None,
            alias: str | None = None) -> None:
    """``-o/--output``: the file (or folder) a command writes, plus an old spelling."""
    p.add_argument("-o", "--output", required=default is None, default=default, metavar=metavar, help=help)
    if alias:
        p.add_argument(alias, dest="output", metavar=metavar, action=_DeprecatedAlias, new="-o/--output")


def _tolerance(text: str) -> float:
    """``--atol``: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    """``--fraction``: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text!r}")
    return value


def _global_flags(p: argparse.ArgumentParser, default: object) -> None:
    """``--debug`` and ``--verbose``, accepted before or after the command's name."""
    p.add_argument("--debug", action="store_true", default=default,
                   help="on an error, also print the full Python traceback")
    p.add_argument("--verbose", action="store_true", default=default,
                   help="let the backend (TensorFlow) print its log lines on stderr")


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
    _points(p, "addresses or globs, e.g. conv_1 'block_*:pre' (see `kerasurgery inspect`); default: "
            + ("every point" if p.prog.endswith("calibrate") else "every layer output"))
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="samples per forward pass (32)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N samples")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _ray_arguments(p: argparse.ArgumentParser, *, resume: str) -> None:
    """``--ray ADDRESS`` and the engine's options (docs/cluster.md)."""
    g = p.add_argument_group("on a Ray cluster (pip install kerasurgery[ray])")
    g.add_argument("--ray", metavar="ADDRESS",
                   help="run on Ray: 'local' starts a local cluster, 'auto' or host:port joins one; "
                   "--data is read on this machine, or with a .parquet file or folder by the workers")
    g.add_argument("--actors", type=int, metavar="N", help="Ray actors, one model each (default: Ray sizes the pool)")
    g.add_argument("--cpus-per-actor", type=float, default=1, metavar="N", help="CPUs per actor (1)")
    g.add_argument("--gpus-per-actor", type=float, default=0, metavar="N", help="GPUs per actor (0)")
    g.add_argument("--worker-backend", metavar="NAME", help="Keras backend of the workers (default: this one's)")
    g.add_argument("--model-path", metavar="FILE.keras",
                   help="a model file every worker reads (default: the model travels through Ray's object store)")
    g.add_argument("--shard-size", type=int, metavar="N", help="samples per Ray task and shard (512)")
    g.add_argument("--resume", action="store_true", help=resume)


def _overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (never the command's own inputs)")


def _range_options(p: argparse.ArgumentParser, *, default: str | None) -> None:
    """``--method``, ``--percentile``, ``--bits``, ``--symmetric``: how ranges are made from statistics."""
    p.add_argument("--method", choices=("minmax", "percentile", "entropy", "mse"), default=default,
                   help="how each point's clipping range is chosen"
                   + (f" ({default})" if default else " (with --export: minmax unless given)"))
    p.add_argument("--percentile", type=float, default=99.99, metavar="P",
                   help="for --method percentile: the percentile of |x| kept, in (0, 100] (99.99)")
    p.add_argument("--bits", type=int, default=8, metavar="B", help="code width, 2 to 16 (8)")
    p.add_argument("--symmetric", choices=("auto", "signed", "asymmetric"), default="auto",
                   help="auto: unsigned codes for non-negative points, signed for the others; signed: always; "
                   "asymmetric: with a zero point (auto)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kerasurgery`` command."""
    parser = _Parser(prog="kerasurgery", description="See inside and rewrite Keras 3 models.",
                     epilog="Run `kerasurgery demo` for a tour; `kerasurgery COMMAND --help` for details.")
    parser.add_argument("--version", action="version", version=f"kerasurgery {__version__}")
    _global_flags(parser, False)
    flags = _Parser(add_help=False)
    _global_flags(flags, argparse.SUPPRESS)  # after the command name: kept from before it unless given
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.commands = sub.choices  # type: ignore[attr-defined]
    model = _model_parent()

    p = sub.add_parser("demo", parents=[flags], help="train a tiny model and show every job; writes pictures",
                       description="Build and briefly train a small CNN on shapes it draws itself, then "
                       "show logits, a split model, a probe pair, collected activations, calibration "
                       "ranges, a nested point, attention weights, head ablation, graph surgery, pruning "
                       "Grad-CAM and 8-bit fake quantization. Writes feature maps, histograms, attention, Grad-CAM, SQNR and graph pictures.")
    _output(p, "DIR", "output folder (./kerasurgery-demo)", default="kerasurgery-demo", alias="--out")
    p.add_argument("--epochs", type=int, default=4, metavar="N", help="training epochs (4)")
    _overwrite(p)
    p.set_defaults(func="cmd_demo")

    p = sub.add_parser("inspect", parents=[model, flags], help="table of points: address, class, shape, activation, params",
                       description="List every point of the model that expose/collect/calibrate accept.")
    _points(p, "only these addresses or globs, e.g. 'conv*' '*:pre'", alias="--pattern")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func="cmd_inspect")

    p = sub.add_parser("graph", parents=[model, flags], help="draw or export the model's graph",
                       description="Write the graph; the suffix of FILE picks the format: .svg .png .pdf "
                       "(drawing; Graphviz when installed, else matplotlib), .dot, .graphml, .json.")
    _output(p, "FILE", "the file to write")
    _points(p, "points to mark in red (addresses or globs)", alias="--highlight")
    p.add_argument("--engine", choices=("auto", "graphviz", "matplotlib"), default="auto",
                   help="drawing engine for .svg/.png/.pdf (auto)")
    _overwrite(p)
    p.set_defaults(func="cmd_graph")

    p = sub.add_parser("split", parents=[model, flags], help="copy with fused activations as separate layers",
                       description="Write a copy of the model in which each fused activation (Dense(..., "
                       "activation='relu'), Conv2D, ...) is its own Activation layer. Its outputs are compared "
                       "with the original's first: if they differ beyond --atol it prints 'outputs DIFFER', "
                       "writes nothing (unless --force) and exits with status 1.")
    _output(p, "OUT.keras", "the model file to write")
    _points(p, "only these layers (names or globs); default every layer with a fused activation",
            alias="--layers")
    p.add_argument("--data", metavar="FILE", help="check equality on these inputs instead of random ones")
    p.add_argument("--atol", type=_tolerance, default=1e-5, metavar="T",
                   help="outputs are equal when max |split - original| <= T * max(1, max |original|) (1e-5)")
    p.add_argument("--force", action="store_true",
                   help="write the model even if its outputs differ (the exit status is still 1)")
    _overwrite(p)
    p.set_defaults(func="cmd_split")

    p = sub.add_parser("fold", parents=[model, flags], help="copy with BatchNormalization folded into the layer before",
                       description="Write a copy of the model in which every BatchNormalization that directly "
                       "follows a Dense or a convolution (nothing else reading that value) is folded into its "
                       "kernel and bias, and lists those that stay and why. Its outputs are compared with the "
                       "original's first: if they differ beyond --atol it prints 'outputs DIFFER', writes "
                       "nothing (unless --force) and exits with status 1.")
    _output(p, "OUT.keras", "the model file to write")
    p.add_argument("--data", metavar="FILE", help="check equality on these inputs instead of random ones")
    p.add_argument("--atol", type=_tolerance, default=1e-4, metavar="T",
                   help="outputs are equal when max |folded - original| <= T * max(1, max |original|) (1e-4)")
    p.add_argument("--force", action="store_true",
                   help="write the model even if its outputs differ (the exit status is still 1)")
    _overwrite(p)
    p.set_defaults(func="cmd_fold")

    p = sub.add_parser("prune", parents=[model, flags], help="copy without some output channels of layers",
                       description="Write a copy of the model without output channels of the layers at --points "
                       "(Dense units, convolution filters), removed everywhere they reach (BatchNormalization, "
                       "the next layer's input weights, the other branches of an Add, ...). Choose the channels "
                       "with --channels, or the lowest-ranked --fraction of each point (--by). Prints the "
                       "parameters saved and how far the outputs moved.")
    _points(p, "the layers (addresses) whose output channels go", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--channels", type=int, nargs="+", metavar="C", help="channel indices to delete at each point")
    which.add_argument("--fraction", type=_fraction, metavar="F",
                       help="delete the lowest-ranked F of each point's channels (0 < F < 1, rounded down)")
    p.add_argument("--by", choices=("l1", "l2", "mean", "apoz"), default="l1",
                   help="ranking for --fraction: l1/l2 norm of each channel's kernel slice, or its mean or "
                   "fraction of zeros (apoz) over --data (give the activation's address as the point) (l1)")
    p.add_argument("--data", metavar="FILE", help="inputs for --by mean/apoz and for the output report")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N samples of --data")
    _output(p, "OUT.keras", "the model file to write")
    _overwrite(p)
    p.set_defaults(func="cmd_prune")

    p = sub.add_parser("expose", parents=[model, flags], help="probe model whose outputs are the given points",
                       description="Write a model returning {address: tensor} for the points, sharing "
                       "weights with the original. Addresses: name, nested/name, name:pre, mha:scores, globs.")
    p.add_argument("positional_points", nargs="*", metavar="POINT", help="addresses or globs (or --points)")
    _points(p, "addresses or globs, the same as POINT ...")
    _output(p, "OUT.keras", "the model file to write")
    p.add_argument("--keep-outputs", action="store_true", help="also return the model's own outputs")
    _overwrite(p)
    p.set_defaults(func="cmd_expose")

    p = sub.add_parser("collect", parents=[model, flags], help="activations of points over a dataset, to a file",
                       description="Run the model once over --data and write the values of the points "
                       "(default: every layer output) to a file whose suffix picks the format: .h5/.hdf5 "
                       "(HDF5, streamed batch by batch), .json (nested lists with shapes and dtypes, at most "
                       "100 MB of values), .npz (one array per address).")
    _data_arguments(p, required=True)
    _output(p, "acts.h5", "the file to write: .h5, .hdf5, .json or .npz; or a folder of shards (no suffix; "
            "required with --ray)")
    p.add_argument("--training", action="store_true", help="run Dropout/BatchNorm in training mode")
    _overwrite(p)
    _ray_arguments(p, resume="finish an interrupted --ray run: keep the complete shards in the -o folder")
    p.set_defaults(func="cmd_collect")

    p = sub.add_parser("calibrate", parents=[model, flags], help="value ranges and histograms of points, to JSON",
                       description="Stream --data through the model and record min, max, mean, std, "
                       "percentiles and a histogram per point (default: every layer output, as in "
                       "collect; --points '*:pre' for the pre-activations a quantizer needs). NaN and "
                       "inf values are counted per point and left out of every other statistic.")
    _data_arguments(p, required=True)
    _output(p, "ranges.json", "the JSON file to write (read it back with kerasurgery.Calibration.from_json)")
    p.add_argument("--sample", type=_sample_size, default=DEFAULT_SAMPLE, metavar="N|all",
                   help=f"histograms, percentiles and zeros from at most N values per input sample of each "
                   f"point (count, min, max, mean and std always see every value); 'all' for exact "
                   f"histograms too ({DEFAULT_SAMPLE})")
    p.add_argument("--histograms", metavar="FILE.png", help="also draw the histograms")
    p.add_argument("--max-plots", type=int, default=16, metavar="N", help="histogram panels per picture; more points go to FILE-2.png, FILE-3.png, ... (16)")
    _range_options(p, default=None)
    p.add_argument("--export", nargs="+", action="extend", metavar="FILE",
                   help="also write the --method ranges: FILE.json (the ranges with each point's tensor name; "
                   "kerasurgery.Ranges.from_json reads it) and/or FILE.cache (a TensorRT calibration cache: "
                   "8-bit, per tensor, symmetric)")
    _overwrite(p)
    _ray_arguments(p, resume="with --shards: reuse the statistics of the blocks found there")
    p.add_argument("--shards", metavar="DIR", help="with --ray: also write each block's statistics to DIR")
    p.set_defaults(func="cmd_calibrate")

    p = sub.add_parser("quantize-check", parents=[model, flags],
                       help="fake-quantize the model and print the error per point (SQNR, MSE, cosine)",
                       description="Fake-quantize the model at the points (quantize-dequantize, as an integer "
                       "engine would) with ranges read from --ranges (calibrate --export FILE.json) or "
                       "calibrated on --data with --method (default points: '*:pre'), then run both models over "
                       "--data and print per point the SQNR (dB), MSE, cosine similarity and max abs error, in "
                       "depth order, then the model's outputs.")
    _data_arguments(p, required=True)
    p.add_argument("--ranges", metavar="FILE.json", help="ranges written by `calibrate --export FILE.json`")
    _range_options(p, default="entropy")
    p.add_argument("--weights", action="store_true", help="also quantize the kernels (per output channel)")
    _output(p, "errors.json", "also write the table as JSON", default="")
    p.add_argument("--plot", metavar="FILE.png", help="also draw SQNR per point")
    p.add_argument("--threshold", type=float, default=None, metavar="DB", help="a line at this SQNR on --plot")
    _overwrite(p)
    p.set_defaults(func="cmd_quantize_check")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`, then join what one flag may be given in two ways.

    ``expose``'s POINTs may come anywhere after the model (``expose m.keras
    -o p.keras conv dense`` too, which argparse alone refuses for an optional
    positional list) and join its ``--points`` in one list; at least one
    point is required. Raises SystemExit (status 2) on errors, like
    `argparse.ArgumentParser.parse_args`.
    """
    args, extra = parser.parse_known_args(argv)
    args.deprecated = getattr(args, "deprecated", [])
    command = getattr(args, "command", None)
    if command == "expose":
        points = [a for a in extra if not a.startswith("-")]
        extra = [a for a in extra if a.startswith("-")]
        args.points = [*args.positional_points, *points, *(args.points or [])]
        if not extra and not args.points:
            parser.commands["expose"].error(  # type: ignore[attr-defined]
                "expected at least one POINT (positional or --points)")
    if extra:
        where = parser.commands[command] if command else parser  # type: ignore[attr-defined]
        where.error(f"unrecognized arguments: {' '.join(extra)}")
    return args
