"""The package's public surface."""

import importlib

import pytest

import kerasurgery as ks


PUBLIC = ["to_graph", "to_model", "check_graph", "points", "expose", "split_activations",
          "insert_taps", "probe_pair", "compare", "collect", "calibrate", "ActivationRecorder",
          "insert_layer", "replace_layer", "delete_layer", "patch"]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names_are_callables_even_after_submodule_imports(name):
    for module in ("equivalence", "runtime.collect", "stats.calibrate", "recorder", "ir.from_keras",
                   "ir.resolve", "passes.expose", "passes.split", "passes.taps", "passes.probe_pair",
                   "passes.layer_edits", "passes.patch"):
        importlib.import_module(f"kerasurgery.{module}")
    assert callable(getattr(ks, name)) and not isinstance(getattr(ks, name), type(ks))


def test_every_public_function_has_a_docstring_with_an_example():
    for name in PUBLIC:
        doc = getattr(ks, name).__doc__ or ""
        assert "Example" in doc or ">>>" in doc, name


def test_errors_are_value_errors():
    for cls in (ks.KerasurgeryError, ks.ModelError, ks.GraphError, ks.AddressError, ks.TransformError, ks.DataError):
        assert issubclass(cls, ValueError)
