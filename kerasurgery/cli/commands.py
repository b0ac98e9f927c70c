"""What each ``kerasurgery`` command does, once its arguments are parsed."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import kerasurgery as ks
import kerasurgery.layers  # noqa: F401 - registers the project's layers before any model is loaded
from kerasurgery.errors import DataError

EXIT_CHECK_FAILED = 1  # a check the command runs (split's equality) failed
from kerasurgery.cli.quantize import check_exports, cmd_quantize_check, export_ranges  # noqa: F401 - a command
from kerasurgery.keras_internals import all_layers
from kerasurgery.runtime.h5 import written_to


def _import_modules(names: Sequence[str]) -> None:
    for name in names or ():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise DataError(f"Expected --import to name an importable module. Received: {name!r} ({e}).") from None


def _load(args: argparse.Namespace) -> Any:
    from kerasurgery.cli.files import load_model

    _import_modules(args.imports)
    return load_model(args.model, unsafe=args.unsafe)


def _output(args: argparse.Namespace, path: str, suffixes: tuple[str, ...], what: str, *,
            flag: str = "-o", also: dict[str, str | None] | None = None) -> str:
    """Check an output path against the command's inputs and `--overwrite` (see `check_output`)."""
    from kerasurgery.cli.files import check_output

    inputs = {"model file": getattr(args, "model", None), "data file": getattr(args, "data", None), **(also or {})}
    return check_output(path, flag, suffixes=suffixes, what=what, inputs=inputs, overwrite=args.overwrite)


def _check_inputs(model: Any, data_path: str | None, limit: int | None = None) -> Any:
    """Data from --data, or random inputs shaped like the model's (for checks)."""
    from kerasurgery.cli.files import input_specs, load_data

    if data_path:
        return load_data(data_path, model, limit=limit)
    import numpy as np

    from kerasurgery.ir.schema import map_structure

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


def _on_ray(args: argparse.Namespace, model: Any) -> tuple[Any, dict]:
    """``(ray dataset, engine options)`` for ``--ray``: Ray started or joined, --data read as a Ray dataset."""
    from kerasurgery.cli.files import load_data

    try:
        import ray.data
    except ImportError:
        raise DataError("Expected Ray for --ray. Received: no `ray` module. Install it: pip install "
                        "'kerasurgery[ray]'.") from None
    from kerasurgery.engines.ray import init

    init(None if args.ray == "local" else args.ray)
    data = args.data
    if data.endswith(".parquet") or os.path.isdir(data):
        ds = ray.data.read_parquet(data)  # read by the workers
        if args.limit:
            ds = ds.limit(args.limit)
    else:
        arrays = load_data(data, model, limit=args.limit)
        if isinstance(arrays, dict):
            ds = ray.data.from_items([{k: v[i] for k, v in arrays.items()} for i in range(len(next(iter(arrays.values()))))])
        elif isinstance(arrays, (list, tuple)):
            names = [t.name for t in model.inputs]
            ds = ray.data.from_items([{n: a[i] for n, a in zip(names, arrays)} for i in range(len(arrays[0]))])
        else:
            size = args.shard_size or 512
            ds = ray.data.from_numpy([arrays[i:i + size] for i in range(0, len(arrays), size)])
    options = {"actors": args.actors, "cpus_per_actor": args.cpus_per_actor, "gpus_per_actor": args.gpus_per_actor,
               "worker_backend": args.worker_backend, "model_path": args.model_path, "shard_size": args.shard_size,
               "resume": args.resume}
    return ds, options


def _progress(args: argparse.Namespace) -> Any:
    return False if args.quiet else None


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return "?" if shape is None else "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _print_columns(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    for row in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


#: The files `kerasurgery demo` writes into its folder (docs/cli.md lists them).
def cmd_demo(args: argparse.Namespace) -> int:
    import kerasurgery.cli.demo as demo

    existing = [name for name in demo.FILES if os.path.lexists(os.path.join(args.output, name))]
    if existing and not args.overwrite:
        raise DataError(
            f"Expected a folder without the demo's files. Received: {args.output!r}, which holds "
            f"{', '.join(existing)} already. Pass --overwrite to replace them, or choose another folder."
        )
    demo.run(args.output, epochs=args.epochs)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from kerasurgery.cli.point_table import format_table, point_table

    model = _load(args)
    rows = point_table(model, args.points)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    print(f"model '{model.name}' ({type(model).__name__}) from {args.model}")
    print(format_table(rows))
    print(f"{len(rows)} point(s); {model.count_params():,} parameters ({trainable:,} trainable)")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from kerasurgery.ir.export import GRAPH_FORMATS, IMAGE_FORMATS, write_graph

    _output(args, args.output, GRAPH_FORMATS, "a graph file")
    model = _load(args)
    with written_to(args.output) as temp:
        if args.output.lower().endswith(IMAGE_FORMATS):
            ks.plot.save_graph(model, temp, highlight=args.points, engine=args.engine)
            fmt = os.path.splitext(args.output)[1].lower().lstrip(".")
        else:
            fmt = write_graph(model, temp, highlight=args.points)
    print(f"wrote the graph of '{model.name}' ({len(ks.to_graph(model))} nodes) as {fmt} to {args.output}")
    return 0


def check_equal(report: dict, atol: float) -> tuple[bool, str]:
    """Judge a `compare` report: equal when every output's max abs difference is within tolerance.

    The tolerance of an output is ``atol * max(1, max |original output|)``:
    `atol` absolute for outputs up to 1, relative to the output's scale beyond.
    A NaN difference is never equal.

    Returns:
        (equal, a one-line description of the worst output).

    Example:
        >>> check_equal({"y": {"max_abs": 0.0, "max_rel": 0.0}}, 1e-5)
        (True, "max abs difference 0 (tolerance 1e-05 on output 'y')")
        >>> check_equal({"y": {"max_abs": 1.68, "max_rel": 0.5}}, 1e-5)[0]
        False
    """
    worst, worst_ratio, text = None, -1.0, ""
    for name, r in report.items():
        max_abs, max_rel = r["max_abs"], r["max_rel"]
        scale = max_abs / max_rel if 0 < max_rel < float("inf") else 0.0
        tolerance = atol * max(1.0, scale)
        ratio = max_abs / tolerance if tolerance > 0 else (0.0 if max_abs == 0 else float("inf"))
        if ratio != ratio:  # NaN
            ratio = float("inf")
        if worst is None or ratio > worst_ratio:
            worst, worst_ratio = name, ratio
            text = f"max abs difference {max_abs:.3g} (tolerance {tolerance:.3g} on output '{name}')"
    return worst_ratio <= 1.0, text


def cmd_split(args: argparse.Namespace) -> int:
    from kerasurgery.equivalence import compare

    _output(args, args.output, (".keras",), "a model file")
    model = _load(args)
    split = ks.split_activations(model, args.points)
    before = {layer.name for layer in all_layers(model)}
    added = [layer.name for layer in split.layers if layer.name not in before]
    report = compare(model, split, _check_inputs(model, args.data, limit=64))
    equal, worst = check_equal(report, args.atol)
    where = "on --data" if args.data else "on random inputs"
    print(f"split {len(added)} activation(s) into their own layers: {', '.join(added)}")
    if equal:
        print(f"outputs equal the original's: {worst} ({where})")
    else:
        print(f"outputs DIFFER from the original's: {worst} ({where})")
    return _save_checked(args, split, equal, worst, "split")


def cmd_fold(args: argparse.Namespace) -> int:
    import warnings

    from kerasurgery.equivalence import compare

    _output(args, args.output, (".keras",), "a model file")
    model = _load(args)
    plan = ks.fold_plan(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the layers left are listed below
        folded = ks.fold_batchnorm(model)
    report = compare(model, folded, _check_inputs(model, args.data, limit=64))
    equal, worst = check_equal(report, args.atol)
    where = "on --data" if args.data else "on random inputs"
    print(f"folded {len(plan.folded)} BatchNormalization layer(s)"
          + "".join(f"{', ' if i else ': '}{bn} -> {layer}" for i, (bn, layer) in enumerate(plan.folded.items())))
    if plan.kept:
        print(f"left {len(plan.kept)}:")
        _print_columns([(bn, reason) for bn, reason in plan.kept.items()])
    print(f"outputs {'equal' if equal else 'DIFFER from'} the original's: {worst} ({where})")
    return _save_checked(args, folded, equal, worst, "fold")


def _save_checked(args: argparse.Namespace, model: Any, equal: bool, worst: str, command: str) -> int:
    """Write a rewritten model whose outputs matched the original's (or any, with --force); the exit status."""
    if equal or args.force:
        _save_model(model, args.output)
        print(f"wrote {args.output}" + ("" if equal else " although its outputs differ (--force)"))
    if equal:
        return 0
    kept = "written anyway (--force)" if args.force else "nothing written (pass --force to write it anyway)"
    result = {"split": "split", "fold": "folded"}[command]
    print(f"kerasurgery {command}: error: the {result} model's outputs differ from the original's: {worst}; "
          f"{kept}. This is likely a bug in kerasurgery; please report it.", file=sys.stderr)
    return EXIT_CHECK_FAILED


def cmd_prune(args: argparse.Namespace) -> int:
    from kerasurgery.cli.pruning import prune
    from kerasurgery.equivalence import compare

    _output(args, args.output, (".keras",), "a model file")
    model = _load(args)
    data = _check_inputs(model, args.data, limit=args.limit) if args.data else None
    pruned, report = prune(model, args.points, channels=args.channels, fraction=args.fraction, by=args.by,
                           data=data)
    for point, size, deleted in report:
        shown = ", ".join(map(str, deleted[:12])) + (", ..." if len(deleted) > 12 else "")
        print(f"{point}: deleted {len(deleted)} of {size} channels ({shown})")
    before, after = model.count_params(), pruned.count_params()
    print(f"parameters: {before:,} -> {after:,} ({(before - after) / before:.1%} fewer)")
    checked = data if data is not None else _check_inputs(model, None)
    try:
        moved = ", ".join(f"'{name}' max abs {r['max_abs']:.3g} (max rel {r['max_rel']:.3g})"
                          for name, r in compare(model, pruned, checked).items())
    except DataError as error:  # the deleted channels reached an output
        moved = f"their shapes changed ({error})"
    print(f"outputs moved (pruning changes them; fine-tune to recover): {moved} "
          f"({'on --data' if args.data else 'on random inputs'})")
    _save_model(pruned, args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_expose(args: argparse.Namespace) -> int:
    _output(args, args.output, (".keras",), "a model file")
    model = _load(args)
    probe = ks.expose(model, args.points, keep_outputs=args.keep_outputs)
    _save_model(probe, args.output)
    print(f"probe model '{probe.name}' with {len(probe.output)} output(s), sharing the original's weights:")
    _print_columns([(name, _shape(tensor)) for name, tensor in probe.output.items()])
    print(f"wrote {args.output}  (load it with `import kerasurgery` then keras.saving.load_model)")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from kerasurgery.runtime.activations import FILE_FORMATS
    from kerasurgery.runtime.shards import is_folder_path

    if args.ray and not is_folder_path(args.output):
        raise DataError(f"Expected -o to name a folder (no suffix) with --ray. Received: -o {args.output!r}.")
    if not is_folder_path(args.output):
        _output(args, args.output, tuple(FILE_FORMATS), "an activations file")
    model = _load(args)
    if args.ray:
        data, options = _on_ray(args, model)
    else:
        data, options = _check_inputs(model, args.data, limit=args.limit), {}
    result = ks.collect(
        model, data, args.points or None, batch_size=args.batch_size, training=args.training,
        path=args.output, progress=_progress(args), overwrite=args.overwrite, **options,
    )
    try:
        count = result.attrs["num_samples"] if hasattr(result, "attrs") else _count(data)
        print(f"collected {len(result)} point(s) over {count} sample(s):")
        _print_columns([(a, _shape(v), str(getattr(v, "dtype", ""))) for a, v in result.items()])
    finally:
        getattr(result, "close", lambda: None)()
    print(f"wrote {args.output}  (read it with kerasurgery.load_activations(path)[address])")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from kerasurgery.cli.point_table import format_table

    _output(args, args.output, (".json",), "a JSON file")
    if args.histograms:
        _output(args, args.histograms, (".png", ".svg", ".pdf"), "an image file", flag="--histograms",
                also={"output": args.output})
    check_exports(args)
    model = _load(args)
    pictures = _histogram_pages(args, model) if args.histograms else []
    if args.ray:
        data, options = _on_ray(args, model)
        options["shards"] = args.shards
    else:
        data, options = _check_inputs(model, args.data, limit=args.limit), {}
    stats = ks.calibrate(model, data, args.points or None, batch_size=args.batch_size, progress=_progress(args),
                         sample=args.sample, **options)
    with written_to(args.output) as temp:
        stats.to_json(temp, indent=1)
    rows = [
        {"address": a, "min": f"{s.min:.4g}", "max": f"{s.max:.4g}", "mean": f"{s.mean:.4g}",
         "std": f"{s.std:.4g}", "zeros": f"{s.zero_fraction:.1%}"}
        for a, s in stats.items()
    ]
    count = next(iter(stats.values())).samples if stats else 0
    print(f"ranges of {len(rows)} point(s) over {count} sample(s):")
    print(format_table(rows, ("address", "min", "max", "mean", "std", "zeros")))
    print(f"wrote {args.output}")
    export_ranges(stats, model, args)
    for page, path in enumerate(pictures):
        import matplotlib.pyplot as plt

        fig = ks.plot.histograms(stats, log=True, max_points=args.max_plots, page=page,
                                 title=f"{model.name}: calibration")
        try:
            with written_to(path) as temp:
                fig.savefig(temp, dpi=100)
        finally:
            plt.close(fig)
        print(f"wrote {path}")
    return 0


def _histogram_pages(args: argparse.Namespace, model: Any) -> list[str]:
    """The files of every page of `--histograms` (``hist.png``, ``hist-2.png``, ...), each checked now.

    Every point gets a panel: with more points than `--max-plots`, page
    ``k`` (from 1) goes to ``<stem>-k<suffix>``; none may exist unless
    `--overwrite`, and all are checked before anything runs.
    """
    import math

    from kerasurgery.errors import DataError
    from kerasurgery.runtime.plan import resolve

    if args.max_plots < 1:
        raise DataError(f"Expected --max-plots to be a positive number of panels. Received: {args.max_plots}.")
    pages = max(1, math.ceil(len(resolve(model, args.points or None)) / args.max_plots))
    stem, suffix = os.path.splitext(args.histograms)
    paths = [args.histograms] + [f"{stem}-{k}{suffix}" for k in range(2, pages + 1)]
    for path in paths[1:]:
        _output(args, path, (suffix,), "an image file", flag="--histograms", also={"output": args.output})
    return paths


def _save_model(model: Any, path: str) -> None:
    """``model.save`` to a temporary file renamed into place: never half a model at `path`."""
    with written_to(path) as temp:
        model.save(temp)


def _count(data: Any) -> int:
    from kerasurgery.cli.files import sample_count

    return sample_count(data)
