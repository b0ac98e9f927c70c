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
unless ``--unsafe`` is given.

Exit status: 0 done; 1 a check failed (``split``) or an internal error (an
exception kerasurgery did not expect: a bug, reported in one line that says
so, with the traceback under ``--debug``); 2 bad input (a `KerasurgeryError`,
an argument error, an OS error about one of the user's paths, or a missing
optional dependency such as matplotlib), one line on stderr; 130 interrupted.

Example:
    >>> from kerasurgery.cli.main import main
    >>> main(["inspect", "no-such-model.keras"])  # doctest: +SKIP
    kerasurgery inspect: error: Expected a Keras model file at 'no-such-model.keras'. ...
    2
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from kerasurgery.cli.parser import EXIT_USAGE, build_parser, parse_args
from kerasurgery.errors import KerasurgeryError

EXIT_INTERNAL = 1
ISSUES = "https://github.com/kerasurgery/kerasurgery/issues"
#: Optional dependencies: a command that needs one that is missing is told so (exit 2), not a bug.
OPTIONAL_DEPENDENCIES = ("matplotlib", "pydot", "ray", "keras_hub", "tensorflow", "jax", "torch")
#: OS errors that are about the user's machine, not a bug, whatever the file.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS}


def _one_line(error: BaseException, model: str | None = None) -> str:
    """The error as one line, with Python spellings turned into command-line ones."""
    text = " ".join(str(error).split()) or type(error).__name__
    if model:
        text = text.replace("`kerasurgery.points(model)`", f"`kerasurgery inspect {model}`")
    text = text.replace("Pass `overwrite=True`", "Pass --overwrite")
    return text if len(text) <= 800 else text[:797] + "..."


@contextlib.contextmanager
def _quiet(prog: str, verbose: bool = False):
    """Warnings as one ``prog: warning: ...`` line each; TensorFlow's Python log muted unless `verbose`."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {_one_line(Warning(message))}", file=sys.stderr)

    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(level if verbose else logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            yield
    finally:
        tf_log.setLevel(level)


def _user_paths(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(files the command reads, files or folders it writes), as given."""
    inputs = [getattr(args, name, None) for name in ("model", "data")]
    outputs = [getattr(args, name, None) for name in ("output", "histograms")]
    return [p for p in inputs if p], [p for p in outputs if p]


def about_user_paths(error: OSError, args: argparse.Namespace) -> bool:
    """True if `error` is about a path the user gave (or a file the command writes next to an output).

    Such an error (a model file that cannot be read, an output folder that
    filled up) is bad input, exit 2; any other OS error is internal.
    """
    if error.errno in _ENVIRONMENT_ERRNOS:
        return True
    inputs, outputs = _user_paths(args)
    for name in (error.filename, error.filename2):
        if not isinstance(name, (str, bytes, os.PathLike)):
            continue
        real = os.path.realpath(os.fsdecode(name))
        for given in inputs + outputs:
            mine = os.path.realpath(given)
            if real == mine or real.startswith(mine + os.sep):
                return True
        for given in outputs:  # temporary files are written next to the output
            if os.path.dirname(real) == os.path.dirname(os.path.realpath(given)):
                return True
    return False


@contextlib.contextmanager
def _stderr_muted():
    """File descriptor 2 to /dev/null: what C++ libraries print there (not only Python) is dropped."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_backend(verbose: bool = False) -> None:
    """Import Keras and its backend once, keeping the backend's C++ log lines off stderr.

    TensorFlow prints lines such as "oneDNN custom operations are on" from C++
    while it is imported, before ``TF_CPP_MIN_LOG_LEVEL`` is read (TF 2.21), so
    stderr's file descriptor is sent to /dev/null around this first import
    only; ``TF_CPP_MIN_LOG_LEVEL=2`` (unless set) keeps later info and warning
    lines away and lets errors through. `verbose` imports with nothing muted.
    """
    if "keras" in sys.modules:
        return
    if verbose:
        import keras  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_muted():
        import keras  # noqa: F401


def missing_dependency(error: ImportError) -> bool:
    """True if `error` says an optional dependency is not installed (our own hint, or its module name)."""
    root = (error.name or "").split(".")[0]
    return root in OPTIONAL_DEPENDENCIES or "pip install" in str(error)


def _report(prog: str, kind: str, error: BaseException, args: argparse.Namespace) -> None:
    if getattr(args, "debug", False):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    if kind == "error":
        print(f"{prog}: error: {_one_line(error, getattr(args, 'model', None))}", file=sys.stderr)
        return
    text = _one_line(error)
    how = "see the traceback above" if getattr(args, "debug", False) else "rerun with --debug for the traceback"
    print(f"{prog}: internal error: {type(error).__name__}: {text} -- this is a bug in kerasurgery; {how} "
          f"and report it at {ISSUES}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kerasurgery`` command.

    Args:
        argv: the arguments (without the program name); default ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success; 1 when a check failed or on an internal
        error (a bug, reported as such); 2 on bad input (after printing one
        line on stderr); 130 when interrupted.
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
        with _quiet(prog, args.verbose):
            import_backend(verbose=args.verbose)
            import kerasurgery.cli.commands as commands

            return getattr(commands, args.func)(args)
    except KerasurgeryError as e:
        _report(prog, "error", e, args)
        return EXIT_USAGE
    except OSError as e:
        if about_user_paths(e, args):
            _report(prog, "error", e, args)
            return EXIT_USAGE
        _report(prog, "internal", e, args)
        return EXIT_INTERNAL
    except ImportError as e:
        internal = not missing_dependency(e)
        _report(prog, "internal" if internal else "error", e, args)
        return EXIT_INTERNAL if internal else EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - anything else is a bug: say so, in one line
        _report(prog, "internal", e, args)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
