"""Smoke test of an installed wheel (run outside the source tree, on the torch backend).

Checks that every subpackage and data file shipped, that the public API
works end to end, and that a returned model saves and loads back.
"""

import importlib
import os
import pathlib
import tempfile

import numpy as np

import kerasurgery as ks

root = pathlib.Path(ks.__file__).parent
assert "site-packages" in str(root), f"not the installed wheel: {root}"
assert (root / "py.typed").exists(), "py.typed is missing from the wheel"
for name in ks.__all__:
    getattr(ks, name)
for path in root.rglob("*.py"):
    module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
    if module.endswith("__main__") or module.startswith("kerasurgery.engines"):
        continue
    importlib.import_module(module)

import keras  # noqa: E402

x = keras.Input((4,), name="x")
h = keras.layers.Dense(3, activation="relu", name="hidden")(x)
model = keras.Model(x, keras.layers.Dense(2, activation="softmax", name="head")(h))
probe = ks.expose(model, ["hidden:pre", "head:pre"])
data = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
path = os.path.join(tempfile.mkdtemp(), "probe.keras")
probe.save(path)
loaded = keras.saving.load_model(path)
for key, value in probe.predict(data, verbose=0).items():
    np.testing.assert_allclose(loaded.predict(data, verbose=0)[key], value, rtol=1e-6)
print(f"wheel smoke test passed: kerasurgery {ks.__version__} from {root}")
