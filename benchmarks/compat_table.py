"""Compatibility table: every keras.applications model through kerasurgery's checks.

For each model listed by `keras.applications` (weights=None, random weights,
the smallest input Keras accepts for it, batch of 2 standard-normal images):

- ``round trip``: ``to_model(to_graph(m))`` gives equal outputs (eager call and compiled
  ``predict``) and shares every variable;
- ``split``: ``split_activations(m)`` gives equal outputs, has no fused activation
  left and shares no variable with ``m``;
- ``logits``: ``expose(m, ["<last layer>:pre"])``; its softmax equals the output and
  the logits equal a reference computed with a linear copy of the last layer;
- ``every :pre``: ``expose(m, "*:pre", keep_outputs=True)``; each point equals a reference
  (an activation layer's input, or a linear copy of a fused layer called on its input,
  from an eager per-node run) and the model's own output is unchanged;
- ``every point``: ``expose(m, points(m))``; each point equals the eager per-node run;
- ``.keras``: the split model saved and loaded back, outputs equal;
- ``unchanged``: the model's weights and config are the same after all of it.

"Equal" is ``np.allclose(a, b, atol=1e-5, rtol=1e-5)`` element by element (the
test suite's criterion); the table shows the largest absolute difference.

Each model runs in its own subprocess, one at a time, so the memory of the big
ones (ConvNeXtXLarge, EfficientNetB7, NASNetLarge, ...) goes back to the
system between models. Nothing is downloaded.

Run:
    python benchmarks/compat_table.py                      # all models -> docs/compatibility.md
    python benchmarks/compat_table.py --only VGG16 Xception  # print rows, write nothing
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "docs", "compatibility.md")
ATOL = RTOL = 1e-5
BATCH = 2
CHECKS = {
    "roundtrip": "round trip",
    "split": "split",
    "logits": "logits",
    "pre": "every :pre",
    "points": "every point",
    "saved": ".keras",
    "unchanged": "unchanged",
}
TIMEOUT = 3600


# ---------------------------------------------------------------------------
# which models, at which size


def application_names() -> list[str]:
    """Every model constructor exported by `keras.applications`, sorted."""
    import inspect

    import keras

    apps = keras.applications
    return sorted(n for n in dir(apps) if n[:1].isupper() and inspect.isfunction(getattr(apps, n)))


def build(name: str, size: int | None = None) -> tuple[Any, int]:
    """Build `name` with weights=None at `size`, or at the smallest size Keras accepts.

    Keras checks the input size first thing (``obtain_input_shape``) and says
    "Input size must be at least N"; starting from 32 (the smallest any
    application accepts) and taking N from that message finds the minimum.
    """
    import keras

    factory = getattr(keras.applications, name)
    size = size or 32
    while True:
        try:
            return factory(weights=None, input_shape=(size, size, 3)), size
        except ValueError as e:
            found = re.search(r"at least (\d+)", str(e))
            if not found or int(found.group(1)) <= size:
                raise
            size = int(found.group(1))


# ---------------------------------------------------------------------------
# references and comparisons


def node_values(graph: Any, data: Any) -> dict[str, list]:
    """Every node's outputs, calling each operation eagerly in topological order."""
    import keras
    import numpy as np

    from kerasurgery.ir.schema import input_keys, topological_order
from kerasurgery.ir.to_keras import call_node

    values = {k: [keras.ops.convert_to_tensor(data)] for k in input_keys(graph)}
    for key in topological_order(graph):
        if key not in values:
            values[key] = call_node(graph, key, values)
    return {k: [np.asarray(v) for v in vs] for k, vs in values.items()}


def pre_reference(graph: Any, point: Any, values: dict[str, list]) -> Any:
    """The value before the activation at `point`, computed without kerasurgery's layers.

    An activation layer's input; for a fused layer, a copy of it with a linear
    activation (same weights) called on the same arguments.
    """
    import numpy as np

    from kerasurgery.layers import kinds
    from kerasurgery.ir.edits import input_feed
    from kerasurgery.ir.schema import fill

    data = graph.nodes[point.node]
    op = data["op"]
    if kinds.is_activation_layer(op):
        parent, index, _ = input_feed(graph, point.node)
        return values[parent][index]
    linear = type(op).from_config({**op.get_config(), "activation": "linear"})
    slots = {}
    for parent, _, edge in graph.in_edges(point.node, data=True):
        for index, slot in edge["feeds"]:
            slots[slot] = values[parent][index]
    args, kwargs = fill(data["args"], slots), fill(data["kwargs"], slots)
    linear.build(np.shape(args[0]))
    linear.set_weights(op.get_weights())
    return np.asarray(linear(*args, **kwargs))


class Diff:
    """Largest difference over many comparisons, and whether all were close."""

    def __init__(self):
        self.max_abs = 0.0
        self.ok = True
        self.worst = ""

    def add(self, what: str, got: Any, want: Any) -> None:
        import numpy as np

        got, want = np.asarray(got, "float64"), np.asarray(want, "float64")
        if got.shape != want.shape:
            self.ok = False
            self.worst = f"{what}: shape {got.shape} != {want.shape}"
            return
        d = float(np.abs(got - want).max()) if got.size else 0.0
        close = bool(np.allclose(got, want, atol=ATOL, rtol=RTOL))
        if not close and self.ok:
            self.worst = f"{what}: max abs difference {d:.3g}"
        self.ok = self.ok and close
        self.max_abs = max(self.max_abs, d)


def fingerprint(model: Any) -> tuple:
    """A hash of every weight value, the config and the layer activations."""
    import keras

    h = hashlib.sha1()
    for w in model.get_weights():
        h.update(w.tobytes())
    config = json.dumps(keras.saving.serialize_keras_object(model), sort_keys=True, default=str)
    acts = [str(getattr(x, "activation", None)) for x in model._flatten_layers()]
    return h.hexdigest(), config, acts


# ---------------------------------------------------------------------------
# the checks of one model (run in a worker process)


def run_checks(name: str, size: int | None = None) -> dict:
    import keras
    import numpy as np

    import kerasurgery as ks
    from kerasurgery.layers import kinds
    from kerasurgery.ir.resolve import Resolver

    t0 = time.perf_counter()
    model, size = build(name, size)
    data = np.random.default_rng(0).standard_normal((BATCH, size, size, 3)).astype("float32")
    before = fingerprint(model)
    expected = np.asarray(model(data, training=False))
    compiled = np.asarray(model.predict(data, verbose=0))
    graph = ks.to_graph(model)
    all_points = ks.points(graph)
    pre_points = ks.points(graph, "*:pre")
    row: dict[str, Any] = {
        "model": name,
        "size": size,
        "layers": len(model.layers),
        "nodes": graph.number_of_nodes(),
        "points": len(all_points),
        "pre": len(pre_points),
        "params": int(model.count_params()),
        "checks": {},
    }
    values = node_values(graph, data)
    resolver = Resolver(graph)
    last = model.layers[-1].name

    def same_outputs(diff, other):
        """Eager and compiled (`predict`) outputs of `other` equal `model`'s."""
        diff.add("output", other(data, training=False), expected)
        diff.add("predict", other.predict(data, verbose=0), compiled)

    def check(key, fn):
        diff = Diff()
        start = time.perf_counter()
        try:
            fn(diff)
            result = {"ok": diff.ok, "max_abs": diff.max_abs}
            if not diff.ok:
                result["error"] = diff.worst
        except Exception as e:  # noqa: BLE001 - any failure is recorded in the table, not raised
            result = {"ok": False, "max_abs": None, "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
            result["traceback"] = traceback.format_exc()
        result["seconds"] = round(time.perf_counter() - start, 2)
        row["checks"][key] = result

    def roundtrip(diff):
        rebuilt = ks.to_model(ks.to_graph(model))
        same_outputs(diff, rebuilt)
        if {id(v) for v in rebuilt.weights} != {id(v) for v in model.weights}:
            raise AssertionError("the rebuilt model does not share every variable with the original")

    split_model = {}

    def split(diff):
        s = ks.split_activations(model)
        split_model["model"] = s
        same_outputs(diff, s)
        fused = [x.name for x in s._flatten_layers(include_self=False) if kinds.fused_activation(x) is not None]
        if fused:
            raise AssertionError(f"fused activations left after split: {fused[:5]}")
        shared = {id(v) for v in s.weights} & {id(v) for v in model.weights}
        if shared:
            raise AssertionError(f"the split model shares {len(shared)} variables with the original")

    def logits(diff):
        address = f"{last}:pre"
        out = np.asarray(ks.expose(model, [address])(data, training=False)[address], "float64")
        probs = np.exp(out - out.max(-1, keepdims=True))
        diff.add("softmax(logits)", probs / probs.sum(-1, keepdims=True), expected)
        diff.add("logits", out, pre_reference(graph, resolver.resolve_one(address), values))

    def every_pre(diff):
        out = ks.expose(model, pre_points, keep_outputs=True)(data, training=False)
        diff.add("output", out[model.output_names[0]], expected)
        for p in pre_points:
            diff.add(p, out[p], pre_reference(graph, resolver.resolve_one(p), values))

    def every_point(diff):
        out = ks.expose(model, all_points)(data, training=False)
        for p in all_points:
            point = resolver.resolve_one(p)
            want = (
                pre_reference(graph, point, values)
                if point.port == "pre"
                else values[point.node][point.index]
            )
            diff.add(p, out[p], want)

    def saved(diff):
        s = split_model.get("model") or ks.split_activations(model)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}_split.keras")
            s.save(path)
            loaded = keras.saving.load_model(path)
        same_outputs(diff, loaded)
        if [x.name for x in loaded.layers] != [x.name for x in s.layers]:
            raise AssertionError("the loaded model's layers differ from the saved model's")

    def unchanged(diff):
        diff.max_abs = None
        after = fingerprint(model)
        for part, a, b in zip(("weights", "config", "activations"), before, after):
            if a != b:
                raise AssertionError(f"the model's {part} changed")

    check("roundtrip", roundtrip)
    check("split", split)
    check("logits", logits)
    check("pre", every_pre)
    check("points", every_point)
    check("saved", saved)
    check("unchanged", unchanged)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    row["versions"] = versions()
    return row


def versions() -> dict:
    import keras
    import numpy as np

    out = {"keras": keras.__version__, "backend": keras.backend.backend(), "numpy": np.__version__}
    try:
        backend = __import__({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[out["backend"]])
        out["backend_version"] = backend.__version__
    except (ImportError, KeyError, AttributeError):
        out["backend_version"] = "?"
    out["python"] = platform.python_version()
    return out


# ---------------------------------------------------------------------------
# driver: one subprocess per model


def run_one(name: str, size: int | None, timeout: int) -> dict:
    """Run `run_checks(name)` in a fresh Python process; a crash becomes a failed row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--json", out]
        if size:
            cmd += ["--size", str(size)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            if os.path.exists(out):
                with open(out) as f:
                    return json.load(f)
            why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            why = f"timed out after {timeout} s"
        return {
            "model": name, "size": size, "crashed": why[:300],
            "seconds": round(time.perf_counter() - t0, 1), "checks": {},
        }


def cell(result: dict | None) -> str:
    if not result:
        return "-"
    if result["ok"] and result["max_abs"] is None:
        return "pass"
    if result["ok"]:
        return f"pass ({result['max_abs']:.1e})" if result["max_abs"] else "pass (0)"
    if result["max_abs"] is not None:
        return f"**FAIL** ({result['max_abs']:.1e})"
    return "**FAIL**"


def render(rows: list[dict], command: str) -> str:
    v: dict = next((r["versions"] for r in rows if "versions" in r), {})
    passed = [r for r in rows if r["checks"] and all(c["ok"] for c in r["checks"].values())]
    today = datetime.date.today().isoformat()
    lines = [
        "# Compatibility: keras.applications",
        "",
        (
            f"Generated by `{command}` on {today} with keras {v.get('keras', '?')}, "
            f"backend {v.get('backend', '?')} {v.get('backend_version', '?')}, numpy {v.get('numpy', '?')}, "
            f"Python {v.get('python', '?')}, on CPU. Do not edit by hand: rerun the script."
        ),
        "",
        (
            f"**{len(passed)} of {len(rows)} models pass every check.** Per check: "
            + ", ".join(
                f"{label} {sum(1 for r in rows if r['checks'].get(k, {}).get('ok'))}/{len(rows)}"
                for k, label in CHECKS.items()
            )
            + "."
        ),
        "",
        "Every model is built with `weights=None` (random weights, nothing downloaded), the default",
        "1000-class softmax head, and the smallest input Keras accepts for it (`input`: side of the",
        f"square RGB image), and run on {BATCH} standard-normal images in inference mode.",
        "",
        "- **round trip**: `to_model(to_graph(m))` has equal outputs (called eagerly, and with `predict`) and",
        "  shares every variable with `m`.",
        "- **split**: `split_activations(m)` has equal outputs (eagerly and with `predict`), no fused activation",
        "  left, and no variable shared with `m`.",
        "- **logits**: `expose(m, [\"predictions:pre\"])`; its softmax equals the output, and the logits equal a",
        "  linear copy of the last layer called on its input.",
        "- **every :pre**: `expose(m, \"*:pre\", keep_outputs=True)`; each point equals its reference (an activation",
        "  layer's input, or a linear copy of a fused layer on its input, from an eager run of every node), and the",
        "  model's own output is unchanged.",
        "- **every point**: `expose(m, points(m))`; each of the `points` equals the eager run of every node.",
        "- **.keras**: the split model saved to `.keras` and loaded back has equal outputs (eagerly and with `predict`)",
        "  and the same layers.",
        "- **unchanged**: `m`'s weights, config and activations are the same after all of the above.",
        "",
        f"\"Equal\" means `np.allclose(a, b, atol={ATOL:g}, rtol={RTOL:g})` element by element; each cell shows",
        "the largest absolute difference seen. `layers`: `len(m.layers)`; `points`: `len(ks.points(m))`",
        "(of which `:pre`); `time`: wall time of all checks of that model (own process, shared 2-core machine);",
        "`memory`: the process's peak resident memory.",
        "",
        "| model | input | params | layers | points (:pre) | " + " | ".join(CHECKS.values()) + " | time | memory |",
        "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---" for _ in CHECKS) + " | ---: | ---: |",
    ]
    failures = []
    for r in rows:
        if "crashed" in r:
            failures.append(f"- {r['model']}: the worker process died: {r['crashed']}")
            lines.append(f"| {r['model']} | {r['size'] or '?'} | | | | " + " | ".join("**FAIL**" for _ in CHECKS) + f" | {r['seconds']:.0f} s | |")
            continue
        for k, c in r["checks"].items():
            if not c["ok"]:
                failures.append(f"- {r['model']}, {CHECKS[k]}: {c.get('error', '')}")
        lines.append(
            f"| {r['model']} | {r['size']} | {r['params'] / 1e6:.1f} M | {r['layers']} | "
            f"{r['points']} ({r['pre']}) | "
            + " | ".join(cell(r["checks"].get(k)) for k in CHECKS)
            + f" | {r['seconds']:.0f} s | {r['peak_rss_mb'] / 1024:.1f} GB |"
        )
    total = sum(r["seconds"] for r in rows)
    lines += ["", f"Total time: {total / 60:.0f} min.", ""]
    lines += ["## Failures", ""] + (failures or ["None."]) + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="MODEL", help="run these models and print their rows only")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the table (full runs only)")
    parser.add_argument("--timeout", type=int, default=TIMEOUT, help="seconds per model")
    parser.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        row = run_checks(args.worker, args.size)
        with open(args.json, "w") as f:
            json.dump(row, f)
        return 0

    names = application_names()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown models {unknown}; known: {', '.join(names)}")
        names = [n for n in names if n in args.only]
    rows = []
    for name in names:
        row = run_one(name, None, args.timeout)
        rows.append(row)
        bad = [k for k, c in row["checks"].items() if not c["ok"]]
        status = row.get("crashed") or (f"FAIL {bad}" if bad else "pass")
        print(f"{name:20s} {row['seconds']:7.1f} s  {status}", flush=True)
        for k in bad:
            if row["checks"][k].get("traceback"):
                print(row["checks"][k]["traceback"], file=sys.stderr)
    command = "python benchmarks/compat_table.py"
    text = render(rows, command)
    if args.only:
        print(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")
    return 0 if all(r["checks"] and all(c["ok"] for c in r["checks"].values()) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
