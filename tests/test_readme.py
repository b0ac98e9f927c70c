"""The README runs as written: every ```python block, and the outputs it shows are real.

Convention in README.md (and checked here): comment lines directly under a
statement are what that statement prints, one ``# `` per printed line; ``...``
stands for any text (doctest's ELLIPSIS) and runs of whitespace compare equal,
so a long list may wrap over several comment lines. Explanations go at the end
of a line or above it. A statement that prints must show its output, and a
statement that shows an output must print it.

The blocks run in order in one namespace (later blocks may use names of
earlier ones) in a temporary folder, in this process; the first two fenced
blocks are the install-and-run commands, and they must stay first and true.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import io
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``[(language, source), ...]`` of the fenced code blocks of a Markdown text."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def steps(source: str) -> list[tuple[str, int, list[str]]]:
    """``[(code, line, shown), ...]``: each top-level statement and the output shown under it."""
    lines = source.splitlines()
    found = []
    for stmt in ast.parse(source).body:
        shown, i = [], stmt.end_lineno
        while i < len(lines) and lines[i].lstrip().startswith("#"):
            shown.append(re.sub(r"^\s*# ?", "", lines[i]))
            i += 1
        found.append((ast.get_source_segment(source, stmt), stmt.lineno, shown))
    return found


def run_block(source: str, namespace: dict, where: str) -> list[str]:
    """Run `source` statement by statement; return one message per mismatch."""
    problems = []
    checker = doctest.OutputChecker()
    for code, line, shown in steps(source):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(code, f"{where}, line {line}", "exec"), namespace)  # noqa: S102
        printed, want = buffer.getvalue(), "".join(f"{s}\n" for s in shown)
        if not printed and not shown:
            continue
        if printed and not shown:
            problems.append(f"{where}, line {line}: `{code}` prints\n{printed}but the README shows nothing")
        elif shown and not printed:
            problems.append(f"{where}, line {line}: the README shows\n{want}under `{code}`, which prints nothing")
        elif not checker.check_output(want, printed, FLAGS):
            problems.append(f"{where}, line {line}: `{code}`\n  README shows: {want!r}\n  it prints:    {printed!r}")
    return problems


def python_blocks() -> list[str]:
    return [source for language, source in fenced_blocks(README.read_text()) if language == "python"]


def test_the_first_two_commands_install_and_run():
    """The README opens with install + demo, then install + tests; both name real things."""
    blocks = fenced_blocks(README.read_text())
    assert [language for language, _ in blocks[:2]] == ["bash", "bash"]
    demo, tests = (source.strip() for _, source in blocks[:2])
    assert demo.endswith('pip install -e ".[tensorflow,plot]" && kerasurgery demo'), demo
    assert tests.endswith('pip install -e ".[test]" && python -m pytest -q'), tests
    from kerasurgery.cli.parser import build_parser

    assert build_parser().parse_args(["demo"]).func == "cmd_demo"
    if sys.version_info < (3, 11):
        pytest.skip("tomllib (reading pyproject.toml) is Python 3.11+")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {"tensorflow", "plot", "test"} <= set(project["optional-dependencies"])
    assert project["scripts"]["kerasurgery"] == "kerasurgery.cli.main:main"


def test_every_python_block_runs_and_prints_what_it_shows(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert blocks, "the README's tour is a ```python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    problems = []
    for i, source in enumerate(blocks):
        problems += run_block(source, namespace, f"README.md python block {i + 1}")
    assert not problems, "\n\n".join(problems)
    assert sum(bool(shown) for source in blocks for _, _, shown in steps(source)) >= 5


# ---------------------------------------------------------------------------
# the checker itself: it fails on the drifts it is meant to catch


def test_checker_catches_drift_and_missing_outputs():
    ns: dict = {}
    assert run_block("x = [1, 2, 3]\nprint(x)\n# [1, 2, 3]\n", ns, "ok") == []
    assert run_block("print(list(range(20)))\n# [0, 1, ..., 19]\n", ns, "ellipsis") == []
    assert run_block("print('a b')\n# a\n#   b\n", ns, "wrapped") == []
    assert "README shows" in run_block("print(x)\n# [1, 2, 4]\n", ns, "drift")[0]
    assert "shows nothing" in run_block("print(x)\n", ns, "unshown")[0]
    assert "prints nothing" in run_block("y = x  # fine\n# [1, 2, 3]\n", ns, "silent")[0]
    with pytest.raises(NameError, match="images"):
        run_block("print(images)\n# ...\n", ns, "undefined")
