"""The README and the quickstart run as written, and the outputs they show are real.

Convention in README.md (and checked here): comment lines directly under a
statement are what that statement prints, one ``# `` per printed line; ``...``
stands for any text (doctest's ELLIPSIS) and runs of whitespace compare equal,
so a long list may wrap over several comment lines. Explanations go at the end
of a line or above it. A statement that prints must show its output, and a
statement that shows an output must print it.

The blocks run in order in one namespace (later blocks may use names of
earlier ones) in a temporary folder, in this process; the first two fenced
blocks are the install-and-run commands, and they must stay first and true.

docs/quickstart.md shows the output of ``kerasurgery demo``: the demo runs
here once (seeded; about 20 s) and every line the page shows must be a line
it printed, in order, with its numbers equal up to rounding on another CPU
(integers exactly, other numbers within 5% or 0.05). The demo must show every
job of the README's table, claim nothing False and stay under a minute; the
quickstart's python block then runs in the demo's folder.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import io
import os
import re
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
QUICKSTART = ROOT / "docs" / "quickstart.md"
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
            problems.append(f"{where}, line {line}: `{code}` prints\n{printed}but the page shows nothing")
        elif shown and not printed:
            problems.append(f"{where}, line {line}: the page shows\n{want}under `{code}`, which prints nothing")
        elif not checker.check_output(want, printed, FLAGS):
            problems.append(f"{where}, line {line}: `{code}`\n  page shows: {want!r}\n  it prints:  {printed!r}")
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
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {"__name__": "__readme__"}
    problems = []
    try:
        for i, source in enumerate(blocks):
            problems += run_block(source, namespace, f"README.md python block {i + 1}")
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    assert not problems, "\n\n".join(problems)
    assert sum(bool(shown) for source in blocks for _, _, shown in steps(source)) >= 5
    assert (tmp_path / "feats.h5").stat().st_size > 0 and "<svg" in (tmp_path / "mobilenetv2.svg").read_text()


# ---------------------------------------------------------------------------
# the checker itself: it fails on the drifts it is meant to catch


def test_checker_catches_drift_and_missing_outputs():
    ns: dict = {}
    assert run_block("x = [1, 2, 3]\nprint(x)\n# [1, 2, 3]\n", ns, "ok") == []
    assert run_block("print(list(range(20)))\n# [0, 1, ..., 19]\n", ns, "ellipsis") == []
    assert run_block("print('a b')\n# a\n#   b\n", ns, "wrapped") == []
    assert "page shows" in run_block("print(x)\n# [1, 2, 4]\n", ns, "drift")[0]
    assert "shows nothing" in run_block("print(x)\n", ns, "unshown")[0]
    assert "prints nothing" in run_block("y = x  # fine\n# [1, 2, 3]\n", ns, "silent")[0]
    with pytest.raises(NameError, match="images"):
        run_block("print(images)\n# ...\n", ns, "undefined")


# ---------------------------------------------------------------------------
# the quickstart shows what the demo prints

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")

#: A line of the demo's output that shows each job of the README's table.
JOBS = {
    "debug a model": "5. Collect: acts = ks.collect(model",
    "logits": "2. Logits: probe = ks.expose(model, ['predictions:pre']",
    "transfer learning": "ks.expose(transfer, ['shapes_base/conv_2']) works",
    "quantization calibration": "6. Calibrate: stats = ks.calibrate(model",
    "feature extraction": "path='features.h5')",
    "training-time probes": "callbacks=[ks.ActivationRecorder(...)]",
    "attention": "ks.expose(model, ['mha:scores'])",
    "surgery": "10. Surgery: g = ks.to_graph(model)",
    "gradients and attribution": "12. Grad-CAM: maps = ks.grad_cam(model",
    "interventions": "9. Interventions: ks.patch(model, {'mha:scores': ('ablate', mask)})",
    "pruning": "pruned = ks.delete_channels(model, 'conv_2', order[:4])",
    "quantization": "13. Quantization: q = ks.fake_quantize(model, stats.ranges('mse'))",
}


def skeleton(line: str) -> str:
    return NUMBER.sub("#", " ".join(line.split()))


def numbers_agree(shown: str, printed: str) -> bool:
    for a, b in zip(NUMBER.findall(shown), NUMBER.findall(printed)):
        if re.fullmatch(r"-?\d+", a) and re.fullmatch(r"-?\d+", b):
            if a != b:
                return False
        elif abs(float(a) - float(b)) > max(0.05, 0.05 * abs(float(b))):
            return False
    return True


def unshown(shown: list[str], printed: list[str]) -> list[str]:
    """Lines of `shown` (in order, ``...`` skipped) that are not lines of `printed` in that order."""
    problems, at = [], 0
    for line in (line for line in shown if line.strip() and line.strip() != "..."):
        found = next((i for i in range(at, len(printed)) if skeleton(printed[i]) == skeleton(line)), None)
        if found is None:
            problems.append(f"not printed by the demo (or out of order): {line!r}")
        elif not numbers_agree(line, printed[found]):
            problems.append(f"figures differ:\n  quickstart: {line!r}\n  demo:       {printed[found]!r}")
        else:
            at = found + 1
    return problems


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kerasurgery.cli import demo

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the quickstart shows the demo's output on TensorFlow")
    folder = tmp_path_factory.mktemp("quickstart")
    lines: list[str] = []
    here = os.getcwd()
    os.chdir(folder)
    try:
        start = time.perf_counter()
        written = demo.run("kerasurgery-demo", echo=lambda text: lines.extend(text.split("\n")))
        seconds = time.perf_counter() - start
    finally:
        os.chdir(here)
        plt.close("all")
    printed = [line.replace(str(folder / "kerasurgery-demo"), "/home/you/kerasurgery-demo") for line in lines]
    return folder, printed, seconds, written


def test_demo_shows_every_job_and_claims_nothing_false(demo_run):
    _, printed, seconds, written = demo_run
    text = "\n".join(printed)
    readme = README.read_text()
    table = readme[readme.index("| job | call |"):]
    jobs = [line.split("|")[1].strip() for line in table.splitlines()[2:] if line.startswith("|")]
    assert jobs == list(JOBS)
    missing = [job for job, line in JOBS.items() if line not in text]
    assert not missing, f"the demo does not show: {missing}"
    assert ": True" in text and ": False" not in text
    assert seconds < 60, f"the demo took {seconds:.0f} s"
    assert all(os.path.getsize(path) > 0 for path in written.values())


def test_quickstart_shows_the_demo_output(demo_run):
    _, printed, _, _ = demo_run
    blocks = [source for language, source in fenced_blocks(QUICKSTART.read_text()) if language == "text"]
    shown = blocks[0].splitlines()
    problems = unshown(shown, printed)
    assert not problems, "\n".join(problems)
    assert len(shown) > 30


def test_quickstart_python_runs_after_the_demo(demo_run, monkeypatch):
    import matplotlib.pyplot as plt

    folder, _, _, _ = demo_run
    monkeypatch.chdir(folder)
    blocks = [source for language, source in fenced_blocks(QUICKSTART.read_text()) if language == "python"]
    namespace: dict = {"__name__": "__quickstart__"}
    try:
        problems = [p for i, source in enumerate(blocks)
                    for p in run_block(source, namespace, f"docs/quickstart.md python block {i + 1}")]
    finally:
        plt.close("all")
    assert not problems, "\n\n".join(problems)
    assert (folder / "conv_1.png").stat().st_size > 0 and (folder / "histograms_0.png").stat().st_size > 0


def test_the_quickstart_checker_catches_drift():
    printed = ["6. Calibrate:", "   conv_1:pre  min -0.999  max 2.667", "   conv_2:pre  min -2.795  max 6.449"]
    assert unshown(["6. Calibrate:", "...", "   conv_2:pre  min -2.80  max 6.45"], printed) == []
    assert "figures differ" in unshown(["   conv_2:pre  min -2.795  max 7.449"], printed)[0]
    assert "not printed" in unshown(["   conv_3:pre  min -2.795  max 6.449"], printed)[0]
    assert "not printed" in unshown([printed[2], printed[1]], printed)[0]  # order matters
    assert "figures differ" in unshown(["mean of 'dense' 0.812 -> 0.956"], ["mean of 'dense' 0.812 -> 0.744"])[0]
