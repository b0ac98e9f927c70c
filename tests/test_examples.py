"""Examples are tests: every script in examples/ runs, writes its outputs to
--out (never into the repository), and checks its own claim with numbers.

Each script compares what the library gives with an independent reference
(numpy, a sub-model built by hand, the layer called by hand) and stops with an
AssertionError when they differ, so a broken library fails its example; the
last tests here break the library on purpose and watch three examples fail.

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

#: Files each example must write into --out.
WRITES = {
    "01_logits.py": ["logits.npy"],
    "02_feature_maps.py": ["conv_1_pre.png", "conv_1.png", "conv_2.png", "conv_2_some.png"],
    "03_nested_transfer.py": ["probe.keras"],
    "04_calibration.py": ["ranges.json", "histograms.png"],
    "05_probe_training.py": ["records.png"],
    "06_attention.py": ["attention.png"],
    "07_feature_extraction.py": ["features.h5"],
    "08_surgery.py": ["rescaled.keras"],
    "09_keras_hub_attention.py": ["attention_heads.png"],
    "10_patching.py": ["patched.keras"],
    "11_pruning.py": ["pruned_folded.keras"],
    "12_grad_cam.py": ["grad_cam.png"],
    "13_quantization.py": ["quantized.keras", "sqnr.png", "ranges.json", "calib.cache"],
}

#: Examples that need an optional package (skipped without it; CI's keras_hub step runs them).
NEEDS = {"09_keras_hub_attention.py": "keras_hub"}

#: Every job of the README's table has an example (job -> script).
JOBS = {
    "debug a model": "02_feature_maps.py",
    "logits": "01_logits.py",
    "transfer learning": "03_nested_transfer.py",
    "quantization calibration": "04_calibration.py",
    "feature extraction": "07_feature_extraction.py",
    "training-time probes": "05_probe_training.py",
    "attention": "06_attention.py",
    "surgery": "08_surgery.py",
    "gradients and attribution": "12_grad_cam.py",
    "interventions": "10_patching.py",
    "pruning": "11_pruning.py",
    "quantization": "13_quantization.py",
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES) == sorted(WRITES)


def test_every_job_of_the_readme_has_an_example():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| job | call |"):]
    jobs = [line.split("|")[1].strip() for line in table.splitlines()[2:] if line.startswith("|")]
    assert jobs == list(JOBS)
    assert set(JOBS.values()) <= {p.name for p in EXAMPLES}
    for script in EXAMPLES:  # each compares with a reference (and says so in its docstring)
        text = script.read_text()
        assert "np.testing.assert_allclose" in text and "checks" in text.split('"""')[1], script.name


def run_example(script, out, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(script), "--out", str(out)])
    monkeypatch.chdir(out)
    keras.backend.clear_session()
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        plt.close("all")


def _check_outputs(script, out, before):
    for name in WRITES[script.name]:
        assert (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in (ROOT / "examples").iterdir()) == before


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    """In-process (one TensorFlow import for all), as ``python script --out DIR``."""
    if script.name in NEEDS:
        pytest.importorskip(NEEDS[script.name])
    before = sorted(p.name for p in (ROOT / "examples").iterdir())
    run_example(script, tmp_path, monkeypatch)
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
    assert "max |logits - numpy forward pass|" in result.stdout
    _check_outputs(script, tmp_path, before)


# ---------------------------------------------------------------------------
# a broken library fails the examples


def test_logits_example_fails_when_pre_activation_is_off(tmp_path, monkeypatch):
    """Logits shifted by a constant keep softmax(logits) equal to the output: only
    the numpy reference catches them."""
    from kerasurgery.layers.pre_activation import PreActivation, linear_view

    monkeypatch.setattr(PreActivation, "call", lambda self, inputs: linear_view(self.layer).call(inputs) + 1.0)
    with pytest.raises(AssertionError, match="logits differ from numpy"):
        run_example(ROOT / "examples" / "01_logits.py", tmp_path, monkeypatch)


def test_calibration_example_fails_when_a_batch_is_lost(tmp_path, monkeypatch):
    """A calibrate that misses the last batch: count, min and max no longer match numpy's."""
    real = ks.calibrate

    def losing_the_last_batch(model, data, *args, **kwargs):
        return real(model, data[:-64], *args, **kwargs)

    monkeypatch.setattr(ks, "calibrate", losing_the_last_batch)
    with pytest.raises(AssertionError, match="count"):
        run_example(ROOT / "examples" / "04_calibration.py", tmp_path, monkeypatch)


def test_patching_example_fails_when_ablation_keeps_the_head(tmp_path, monkeypatch):
    """An ablation that leaves the head's weights in place: only numpy's attention catches it."""
    from kerasurgery.layers.interventions import AblateUnits

    monkeypatch.setattr(AblateUnits, "call", lambda self, inputs: inputs)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        run_example(ROOT / "examples" / "10_patching.py", tmp_path, monkeypatch)
