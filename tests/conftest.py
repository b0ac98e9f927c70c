import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402

# Known failures on one backend, {backend: {test node id: reason}}: marked
# xfail (not strict, so the fix shows as XPASS) and listed in docs/backends.md.
KNOWN_BACKEND_FAILURES = {
    "torch": {
        "tests/test_stats.py::TestAgainstNumpy::test_per_channel": (
            "calibrate's std loses precision on torch: kerasurgery/stats.py uses keras.ops.moments, "
            "which torch computes as E[x^2] - E[x]^2 in float32 (cancellation when std << |mean|)"
        ),
    },
}


def pytest_collection_modifyitems(config, items):
    known = KNOWN_BACKEND_FAILURES.get(keras.backend.backend(), {})
    for item in items:
        if item.nodeid in known:
            item.add_marker(pytest.mark.xfail(reason=known[item.nodeid], strict=False))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
