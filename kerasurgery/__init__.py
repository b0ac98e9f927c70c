"""kerasurgery: see inside and rewrite Keras 3 models.

The model is read into a networkx DAG (`to_graph`), rewritten by pure graph
passes, and rebuilt as a new Keras model (`to_model`). Addresses
(``dense_1:pre``, ``encoder/conv@1``, ``mha:scores``) name every point;
`points` lists them.

Everything public is importable from here; where each piece lives is listed
in docs/layout.md. Names are loaded on first use, so ``import kerasurgery``
(and ``kerasurgery --help``) does not import Keras or a backend; the
project's own layers are registered with Keras as soon as Keras is imported,
so `keras.saving.load_model` finds them in files that hold them.

Example:
    >>> import keras, kerasurgery as ks
    >>> x = keras.Input((4,), name="x")
    >>> model = keras.Model(x, keras.layers.Dense(3, activation="softmax", name="head")(x))
    >>> ks.points(model)
    ['x', 'head:pre', 'head']
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from kerasurgery import _registration
from kerasurgery._version import __version__

#: public name -> (module, attribute); attribute None means the module itself.
_PUBLIC: dict[str, tuple[str, str | None]] = {
    # the IR
    "to_graph": ("kerasurgery.ir.from_keras", "to_graph"),
    "to_model": ("kerasurgery.ir.to_keras", "to_model"),
    "check_graph": ("kerasurgery.ir.check", "check_graph"),
    "points": ("kerasurgery.ir.resolve", "points"),
    "Ref": ("kerasurgery.ir.schema", "Ref"),
    "Slot": ("kerasurgery.ir.schema", "Slot"),
    # transforms
    "expose": ("kerasurgery.passes.expose", "expose"),
    "split_activations": ("kerasurgery.passes.split", "split_activations"),
    "insert_taps": ("kerasurgery.passes.taps", "insert_taps"),
    "probe_pair": ("kerasurgery.passes.probe_pair", "probe_pair"),
    # surgery and interventions
    "insert_layer": ("kerasurgery.passes.layer_edits", "insert_layer"),
    "replace_layer": ("kerasurgery.passes.layer_edits", "replace_layer"),
    "delete_layer": ("kerasurgery.passes.layer_edits", "delete_layer"),
    "patch": ("kerasurgery.passes.patch", "patch"),
    # surgery: channels and BatchNorm folding
    "delete_channels": ("kerasurgery.passes.channels", "delete_channels"),
    "fold_batchnorm": ("kerasurgery.passes.fold", "fold_batchnorm"),
    "fold_plan": ("kerasurgery.passes.fold", "fold_plan"),
    "FoldPlan": ("kerasurgery.passes.fold", "FoldPlan"),
    "rank_channels": ("kerasurgery.surgery.ranking", "rank_channels"),
    "channel_scores": ("kerasurgery.surgery.ranking", "channel_scores"),
    # running over data
    "collect": ("kerasurgery.engines.dispatch", "collect"),  # in process, or on Ray for a ray.data.Dataset
    "load_activations": ("kerasurgery.runtime.activations", "load_activations"),
    "Activations": ("kerasurgery.runtime.activations", "Activations"),
    "calibrate": ("kerasurgery.engines.dispatch", "calibrate"),
    "Calibration": ("kerasurgery.stats.results", "Calibration"),
    "PointStats": ("kerasurgery.stats.results", "PointStats"),
    "merge": ("kerasurgery.stats.results", "merge"),
    "ActivationRecorder": ("kerasurgery.recorder", "ActivationRecorder"),
    # quantization
    "Range": ("kerasurgery.quant.ranges", "Range"),
    "Ranges": ("kerasurgery.quant.ranges", "Ranges"),
    "fake_quantize": ("kerasurgery.quant.fake", "fake_quantize"),
    "quantization_error": ("kerasurgery.quant.error", "quantization_error"),
    "QuantizationErrors": ("kerasurgery.quant.error", "QuantizationErrors"),
    "PointError": ("kerasurgery.quant.error", "PointError"),
    "compare": ("kerasurgery.equivalence", "compare"),
    # gradients and attribution
    "gradients": ("kerasurgery.engines.dispatch", "gradients"),  # in process, or on Ray for a ray.data.Dataset
    "weight_gradients": ("kerasurgery.attribution.gradients", "weight_gradients"),
    "grad_cam": ("kerasurgery.attribution.grad_cam", "grad_cam"),
    "saliency": ("kerasurgery.attribution.saliency", "saliency"),
    "integrated_gradients": ("kerasurgery.attribution.integrated", "integrated_gradients"),
    "resize_maps": ("kerasurgery.attribution.resize", "resize_maps"),
    # errors
    "KerasurgeryError": ("kerasurgery.errors", "KerasurgeryError"),
    "AddressError": ("kerasurgery.errors", "AddressError"),
    "DataError": ("kerasurgery.errors", "DataError"),
    "GraphError": ("kerasurgery.errors", "GraphError"),
    "ModelError": ("kerasurgery.errors", "ModelError"),
    "TransformError": ("kerasurgery.errors", "TransformError"),
    # subpackages users reach through the package
    "layers": ("kerasurgery.layers", None),
    "plot": ("kerasurgery.plot", None),
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        module_name, attr = _PUBLIC[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasurgery' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = sorted(_PUBLIC) + ["__version__"]

_registration.register_layers_with_keras()

if TYPE_CHECKING or "sphinx" in sys.modules:  # static names for type checkers and docs
    from kerasurgery.attribution.grad_cam import grad_cam
    from kerasurgery.attribution.gradients import weight_gradients
    from kerasurgery.attribution.integrated import integrated_gradients
    from kerasurgery.attribution.resize import resize_maps
    from kerasurgery.attribution.saliency import saliency
    from kerasurgery.equivalence import compare
    from kerasurgery.errors import (AddressError, DataError, GraphError, KerasurgeryError, ModelError,
                                    TransformError)
    from kerasurgery.ir.check import check_graph
    from kerasurgery.ir.from_keras import to_graph
    from kerasurgery.ir.resolve import points
    from kerasurgery.ir.schema import Ref, Slot
    from kerasurgery.ir.to_keras import to_model
    from kerasurgery.passes.channels import delete_channels
    from kerasurgery.passes.expose import expose
    from kerasurgery.passes.layer_edits import delete_layer, insert_layer, replace_layer
    from kerasurgery.passes.patch import patch
    from kerasurgery.passes.fold import FoldPlan, fold_batchnorm, fold_plan
    from kerasurgery.passes.probe_pair import probe_pair
    from kerasurgery.passes.split import split_activations
    from kerasurgery.passes.taps import insert_taps
    from kerasurgery.quant.error import PointError, QuantizationErrors, quantization_error
    from kerasurgery.quant.fake import fake_quantize
    from kerasurgery.quant.ranges import Range, Ranges
    from kerasurgery.recorder import ActivationRecorder
    from kerasurgery.runtime.activations import Activations, load_activations
    from kerasurgery.engines.dispatch import calibrate, collect, gradients
    from kerasurgery.stats.results import Calibration, PointStats, merge
    from kerasurgery.surgery.ranking import channel_scores, rank_channels
