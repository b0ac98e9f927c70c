"""`save_activations`: one picture per point of a `collect` result, written to a folder."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kerasurgery.errors import DataError
from kerasurgery.plot._figure import pyplot
from kerasurgery.plot.attention_maps import attention
from kerasurgery.plot.maps import feature_maps

MAX_ROWS = 256  # samples drawn for points with one value or one vector per sample


def file_name(index: int, address: str) -> str:
    """``003_block_1__conv-pre.png``: the position, then the address (``/`` -> ``__``, ``:`` -> ``-``, ``[i]`` -> ``_i``).

    Example:
        >>> file_name(3, "encoder/conv@1:pre"), file_name(4, "lstm[1]")
        ('003_encoder__conv@1-pre.png', '004_lstm_1.png')
    """
    slug = address.replace("/", "__").replace(":", "-").replace("[", "_").replace("]", "")
    return f"{index:03d}_{re.sub(r'[^A-Za-z0-9_.@()+=-]', '_', slug)}.png"


def _figure(address: str, values: Any, sample: int, max_channels: int) -> Any:
    """The picture of one point, chosen by the rank of its values per sample."""
    if not hasattr(values, "shape"):
        values = np.asarray(values)
    shape = tuple(values.shape)
    rank = len(shape) - 1
    if rank < 0:
        raise DataError(f"Expected activations with a batch axis. Received: {address!r} of shape {shape}.")
    if rank >= 2 and not -shape[0] <= sample < shape[0]:
        raise DataError(f"Expected `sample` to index the {shape[0]} samples. Received: sample={sample}.")
    plt = pyplot()
    if rank >= 3:
        one = np.asarray(values[sample], dtype="float32")
        if address.endswith(":scores") and rank == 3:
            return attention(one, title=f"{address} (sample {sample})")
        note = ""
        while one.ndim > 3:  # volumes: the middle slice of each leading axis
            note += f"[{one.shape[0] // 2}]"
            one = one[one.shape[0] // 2]
        return feature_maps(one, max_channels=max_channels, title=f"{address}{note} (sample {sample})")
    if rank == 2:
        data = np.asarray(values[sample], dtype="float32")
        title = f"{address}: sample {sample}, {shape[1]} x {shape[2]}"
        ylabel, xlabel = "axis 1", "axis 2 (features)"
    elif rank == 1:
        data = np.asarray(values[:MAX_ROWS], dtype="float32")
        shown = f"first {MAX_ROWS} of {shape[0]}" if shape[0] > MAX_ROWS else f"{shape[0]}"
        title = f"{address}: {shown} samples x {shape[1]} values"
        ylabel, xlabel = "sample", "unit"
    else:
        data = np.asarray(values[:MAX_ROWS], dtype="float32")
        fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
        ax.plot(np.arange(len(data)), data, marker=".")
        ax.set_xlabel("sample")
        ax.set_ylabel("value")
        ax.set_title(f"{address}: one value per sample", fontsize=10)
        return fig
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    image = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(image, ax=ax, label="activation")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return fig


def save_activations(
    activations: Mapping[str, Any],
    directory: str | os.PathLike,
    *,
    overwrite: bool = False,
    sample: int = 0,
    max_channels: int = 64,
    dpi: int = 100,
) -> list[str]:
    """One PNG picture per point of a `kerasurgery.collect` result, in `directory`.

    What each picture shows depends on the point's rank per sample:
    one value per sample: a line over the samples; a vector: an image of
    samples x units (at most 256 samples); a matrix (a sequence): that of
    sample `sample`; an image (H, W, C): one panel per channel of sample
    `sample` (`kerasurgery.plot.feature_maps`); attention ``:scores``: one
    panel per head (`kerasurgery.plot.attention`); higher ranks: the middle
    slice of each leading axis. Files are named
    ``<position>_<address>.png`` (``/`` as ``__``, ``:`` as ``-``, ``[i]`` as ``_i``), in the
    order of `activations`.

    Args:
        activations: ``{address: array (samples, ...)}``, e.g. what
            `kerasurgery.collect` or `kerasurgery.load_activations` returns
            (HDF5 values are read one sample at a time where that suffices).
        directory: the folder, created if missing.
        overwrite: replace existing files; otherwise an existing file is
            refused before anything is written.
        sample: the sample drawn for points with spatial or sequence axes.
        max_channels: at most this many channels per picture.
        dpi: resolution of the PNG files.

    Returns:
        The paths written, in order.

    Raises:
        DataError: a file exists (without `overwrite`), `directory` is a
            file, `activations` is empty or not a mapping, or a value has no
            batch axis.

    Example:
        >>> import numpy as np, os, tempfile, kerasurgery as ks
        >>> acts = {"conv": np.random.rand(2, 8, 8, 4), "dense:pre": np.random.rand(2, 10)}
        >>> paths = ks.plot.save_activations(acts, tempfile.mkdtemp())
        >>> [os.path.basename(p) for p in paths]
        ['000_conv.png', '001_dense-pre.png']
    """
    if not isinstance(activations, Mapping) or not activations:
        raise DataError(
            "Expected `activations` to be a non-empty mapping {address: array}, e.g. what "
            f"kerasurgery.collect returns. Received: {type(activations).__name__}"
            f"{' (empty)' if isinstance(activations, Mapping) else ''}."
        )
    folder = Path(os.fspath(directory))
    if folder.exists() and not folder.is_dir():
        raise DataError(f"Expected `directory` to be a folder. Received: '{folder}', which is a file.")
    paths = [folder / file_name(i, address) for i, address in enumerate(activations)]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise DataError(
            f"Expected new files in '{folder}'. Received: {len(existing)} that already exist "
            f"({', '.join(repr(e) for e in existing[:3])}{', ...' if len(existing) > 3 else ''}). "
            "Pass `overwrite=True` to replace them, or choose another folder."
        )
    folder.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    written = []
    for (address, values), path in zip(activations.items(), paths):
        fig = _figure(address, values, sample, max_channels)
        partial = path.with_name(f".{path.name}.partial")
        try:
            fig.savefig(partial, dpi=dpi, format="png")
            os.replace(partial, path)
        finally:
            plt.close(fig)
            if partial.exists():
                partial.unlink()
        written.append(str(path))
    return written
