"""Every docstring example in the package runs and shows what it prints.

One test per module. Examples that cannot run here say so with
``# doctest: +SKIP`` (the demo's full run, for one); a module whose optional
dependency is missing is skipped with the reason.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "kerasurgery"
OPTIONAL = {"kerasurgery.engines.ray": "ray", "kerasurgery.engines.ray_gradients": "ray"}


def _modules() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts)
        names.append(name[: -len(".__init__")] if name.endswith(".__init__") else name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    for test in tests:
        test.globs.setdefault("__name__", name)
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples in {name} failed (output above)"


def test_every_public_function_has_an_example():
    import kerasurgery as ks

    missing = []
    for name in ks.__all__:
        value = getattr(ks, name)
        if callable(value) and not isinstance(value, type(ks)) and not (
            isinstance(value, type) and issubclass(value, BaseException)
        ):
            doc = value.__doc__ or ""
            if ">>>" not in doc:
                missing.append(name)
    assert not missing, f"public names without a runnable example: {missing}"
