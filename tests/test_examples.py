"""Examples are tests: every script in examples/ runs, writes its outputs to
--out (never into the repository), and says what it found.

Scripts run in-process (as ``__main__``, with ``sys.argv`` set) so the suite
imports TensorFlow once; one more runs in its own interpreter."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import kerasurgery as ks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: Example -> modules of kerasurgery it needs beyond the core (built separately).

#: Files each example must write into --out.
WRITES = {
    "01_logits.py": ["logits.npy"],
    "02_feature_maps.py": ["conv_1_pre.png", "conv_1.png", "conv_2.png", "conv_2_some.png"],
    "03_nested_transfer.py": ["probe.keras"],
    "04_calibration.py": ["ranges.json", "histograms.png"],
    "05_probe_training.py": ["records.png"],
    "06_attention.py": ["attention.png"],
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES) == sorted(WRITES)


def _check_outputs(script, out, before):
    for name in WRITES[script.name]:
        assert (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in (ROOT / "examples").iterdir()) == before


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    """In-process (one TensorFlow import for all), as ``python script --out DIR``."""
    before = sorted(p.name for p in (ROOT / "examples").iterdir())
    monkeypatch.setattr(sys, "argv", [str(script), "--out", str(tmp_path)])
    monkeypatch.chdir(tmp_path)
    keras.backend.clear_session()
    runpy.run_path(str(script), run_name="__main__")
    plt.close("all")
    assert capsys.readouterr().out.strip(), "an example should say what it found"
    _check_outputs(script, tmp_path, before)


def test_an_example_runs_as_a_script(tmp_path):
    """One example in its own interpreter, exactly as a user runs it."""
    script = ROOT / "examples" / "01_logits.py"
    before = sorted(p.name for p in (ROOT / "examples").iterdir())
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "softmax(logits) == model output: True" in result.stdout
    _check_outputs(script, tmp_path, before)
