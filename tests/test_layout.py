"""The package's layout: imports point one way, no cycles, small modules.

Each module belongs to a layer (below); a module may import modules of its
own layer or of lower layers, never higher ones, and the import graph has no
cycle. The walk is static (``ast``), so it also sees imports inside functions.
docs/layout.md describes the same layers for contributors.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1] / "kerasurgery"

#: Layers from the bottom up. A module's layer is that of its longest matching prefix.
LAYERS = [
    ("kerasurgery._version", 0),
    ("kerasurgery.errors", 0),
    ("kerasurgery.checks", 1),
    ("kerasurgery.keras_internals", 1),
    ("kerasurgery.address", 2),
    ("kerasurgery.layers", 3),
    ("kerasurgery._registration", 3),
    ("kerasurgery.ir", 4),
    ("kerasurgery.passes", 5),
    ("kerasurgery.runtime", 6),
    ("kerasurgery.stats", 7),
    ("kerasurgery.recorder", 7),
    ("kerasurgery.equivalence", 7),
    ("kerasurgery.attribution", 7),
    ("kerasurgery.quant", 8),
    ("kerasurgery.surgery", 8),
    ("kerasurgery.engines", 9),
    ("kerasurgery.plot", 10),
    ("kerasurgery", 11),  # the package itself: the public API (its __init__ maps names to modules)
    ("kerasurgery.cli", 12),  # the command line is a user of the public API
    ("kerasurgery.__main__", 13),
]

MAX_LINES = 450

#: The only imports allowed to point up, each inside a function (run on first use, never at import
#: time), with the reason. They are left out of the cycle check too: a function-level import cannot
#: make a half-initialised module.
LAZY_UPWARD = {
    ("kerasurgery.stats.results", "kerasurgery.quant.methods"):
        "Calibration.ranges delegates to the quantization package, which builds on stats",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    name = ".".join(parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def layer_of(name: str) -> int:
    if name == "kerasurgery":
        return dict(LAYERS)[name]
    best = max((p for p, _ in LAYERS if p != "kerasurgery" and (name == p or name.startswith(p + "."))), key=len)
    return dict(LAYERS)[best]


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def _function_level(tree: ast.AST) -> set[int]:
    """ids of the import nodes that sit inside a function."""
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return inside


def imports(name: str, path: Path, known: set[str], *, lazy: dict | None = None) -> set[str]:
    """kerasurgery modules that `name` imports (package-relative and absolute).

    If `lazy` is a dict, it receives ``{target: True}`` for targets imported only inside functions.
    """
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    inside = _function_level(tree)
    top: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names]
            if not any(t in known for t in targets):  # names imported from a module, not submodules
                targets = [base]
            elif base in known and base != "kerasurgery" and name.startswith(base + ".") and path.name != "__init__.py":
                # `from pkg import sub` inside pkg runs pkg/__init__ too: a cycle with it (the top
                # package is exempt: its __init__ imports nothing, names load lazily)
                targets.append(base)
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                found.add(target)
                if id(node) not in inside:
                    top.add(target)
    if lazy is not None:
        lazy.update({t: True for t in found - top})
    return found


def import_graph() -> nx.DiGraph:
    """Every import edge; edges of `LAZY_UPWARD` made inside functions have ``allowed=True``."""
    mods = modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for name, path in mods.items():
        lazy: dict = {}
        for target in imports(name, path, set(mods), lazy=lazy):
            graph.add_edge(name, target, allowed=(name, target) in LAZY_UPWARD and target in lazy)
    return graph


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)  # raises ValueError (max of nothing) if no prefix matches


def test_no_import_points_up():
    graph = import_graph()
    upward = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, b, allowed in graph.edges(data="allowed")
        if layer_of(b) > layer_of(a) and not allowed
    ]
    assert not upward, "\n".join(upward)


def test_the_allowed_upward_imports_exist_and_stay_inside_functions():
    graph = import_graph()
    for edge, reason in LAZY_UPWARD.items():
        assert graph.has_edge(*edge), f"{edge} is allowed ({reason}) but no longer imported: drop it from LAZY_UPWARD"
        assert graph.edges[edge]["allowed"], f"{edge[0]} imports {edge[1]} at module level; only a lazy import is allowed"


def test_no_import_cycle():
    graph = import_graph()
    graph.remove_edges_from([(a, b) for a, b, allowed in graph.edges(data="allowed") if allowed])
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, cycles[:5]


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_small(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (DESIGN.md: one job per module)"


def test_the_public_api_is_lazy_and_registers_layers(tmp_path):
    """``import kerasurgery`` is instant; after ``import keras`` the project's layers load from files."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys, kerasurgery
        assert "keras" not in sys.modules, "import kerasurgery imported keras"
        import keras
        assert "kerasurgery.layers" in sys.modules, "layers not registered after import keras"
        x = keras.Input((3,), name="x")
        model = keras.Model(x, kerasurgery.layers.Tap(name="t")(x))
        model.save(sys.argv[1])
        """
    )
    path = tmp_path / "tap.keras"
    # The numpy backend starts fastest but needs scipy, which the install does not promise.
    import importlib.util

    backend = "numpy" if importlib.util.find_spec("scipy") else os.environ.get("KERAS_BACKEND", "tensorflow")
    env = {**os.environ, "KERAS_BACKEND": backend}
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env, timeout=120)
    load = "import kerasurgery, keras, sys; m = keras.saving.load_model(sys.argv[1]); print(type(m.layers[1]).__name__)"
    out = subprocess.run([sys.executable, "-c", load, str(path)], check=True, env=env, timeout=120,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "Tap"
