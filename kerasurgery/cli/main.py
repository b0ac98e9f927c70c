"""The ``kerasurgery`` command: look inside a saved model without writing code.

::

    kerasurgery demo [-o DIR]
    kerasurgery inspect MODEL.keras [--points P ...] [--json]
    kerasurgery graph MODEL.keras -o FILE(.svg/.png/.pdf/.dot/.graphml/.json) [--points P ...]
    kerasurgery split MODEL.keras -o OUT.keras [--points NAME ...]
    kerasurgery expose MODEL.keras [POINT ...] [--points P ...] -o OUT.keras [--keep-outputs]
    kerasurgery collect MODEL.keras --data FILE(.npy/.npz) [--points P ...] -o acts.h5
    kerasurgery calibrate MODEL.keras --data FILE [--points P ...] -o ranges.json

Models load in Keras's safe mode: a file with a ``Lambda`` layer is refused
unless ``--unsafe`` is given. Bad input (a missing or non-Keras file, an
unknown point, data of the wrong shape) prints one line on stderr and exits
with status 2.

Example:
    >>> from kerasurgery.cli.main import main
    >>> main(["inspect", "no-such-model.keras"])  # doctest: +SKIP
    kerasurgery inspect: error: Expected a Keras model file at 'no-such-model.keras'. ...
    2
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Sequence

from kerasurgery.cli.parser import EXIT_USAGE, build_parser, parse_args
from kerasurgery.errors import KerasurgeryError


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
        args = parse_args(parser, None if argv is None else list(argv))
    except SystemExit as e:
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    prog = f"kerasurgery {args.command}"
    for old, new in args.deprecated:
        print(f"{prog}: warning: {old} is deprecated; use {new} (same values)", file=sys.stderr)
    try:
        with _quiet(prog):
            from kerasurgery.cli import commands

            return getattr(commands, args.func)(args)
    except (KerasurgeryError, ValueError, OSError) as e:
        print(f"{prog}: error: {_one_line(e, getattr(args, 'model', None))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
