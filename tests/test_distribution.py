"""Scaling out: keraseq models under `keras.distribution.DataParallel` (JAX) and
`tf.distribute.MirroredStrategy` (TensorFlow), and `keraseq train --distribute`.

The devices must be set up before jax / TensorFlow start, so the multi-device
parts run in subprocesses (tests/_distribution_worker.py) whatever backend runs
this session: JAX on two virtual CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=2`), TensorFlow on two
logical CPU devices. The four subprocesses start together, once per module
(they overlap on a 2-core machine), and each test reads what its subprocess
wrote. A part is skipped when its framework is not installed.

Tolerance of "the same training on one device and on two": under
DataParallel each device computes the gradient of its half of the batch and
the two are summed (an all-reduce), where one device sums over the whole batch
in one go. Same math, another order of float32 additions, so the results
differ by rounding only: a few ulps of each gradient (float32 eps 1.2e-7
relative). Measured after three steps (Keras 3.15.1, jax 0.10.2, CPU):

* per-step losses: at most 1.9e-7 relative (SGD and Adam, three models);
  asserted to `rtol=1e-5`;
* weights after SGD (lr 0.5, clipnorm 1): at most 1.2e-7 absolute (the
  transformer), and every element within `1e-5·|w|` + 7.8e-9; asserted with
  `rtol=1e-5, atol=1e-7`: the `atol` covers weights near 0, where a relative
  bound says nothing;
* weights after Adam (`compile_language_model`, lr 2e-3): at most 6e-8 apart
  for the LSTM and the RNN, 9.7e-7 for the transformer; asserted with
  `rtol=1e-5, atol=1e-5`, i.e. 0.5 % of one Adam step. Adam divides each
  gradient by its running RMS, so an element whose gradient is tiny carries
  its rounding error into a sizeable fraction of a step: the attention's key
  bias has a gradient of zero in exact arithmetic (adding one vector to every
  key shifts each query's scores by the same amount, which softmax ignores)
  and receives rounding noise of ~1e-9, which Adam's first steps
  `lr·g/(|g| + 1e-7)` turn into values up to 1.6e-6 that differ between the
  runs by up to 9.7e-7 (noise in both); one feed-forward bias element has a
  step-1 gradient of -8.7e-6 (it nearly cancels over the batch; the median is
  1.1e-2) and ends 4.7e-7 apart.
"""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import BACKEND
from keraseq.cli import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "_distribution_worker.py"
HAS_JAX = importlib.util.find_spec("jax") is not None
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
needs_tensorflow = pytest.mark.skipif(not HAS_TENSORFLOW, reason="tensorflow is not installed")

TWO_CPU_DEVICES = {
    "KERAS_BACKEND": "jax",
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip(),
}


def _backend_message(backend):
    return (
        f"keraseq: error: --distribute needs the jax backend (KERAS_BACKEND=jax); the backend "
        f"is {backend}: Keras {keras.__version__}'s distribution API splits batches across "
        "devices under JAX only (under tensorflow it keeps everything on one device, under "
        "torch it does not exist); TensorFlow users: tf.distribute.MirroredStrategy, see the "
        "README's \"Scaling out\""
    )


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Start every subprocess at once; `result(name)` waits for one and reads its JSON."""
    jobs = {}
    modes = {"jax": (HAS_JAX, TWO_CPU_DEVICES), "jax_example": (HAS_JAX, TWO_CPU_DEVICES),
             "cli": (HAS_JAX, TWO_CPU_DEVICES),
             "tensorflow": (HAS_TENSORFLOW, {"KERAS_BACKEND": "tensorflow"})}
    for mode, (available, env) in modes.items():
        if not available:
            continue
        out = tmp_path_factory.mktemp(mode)
        log = open(out / "log.txt", "w")
        process = subprocess.Popen(
            [sys.executable, str(WORKER), mode, str(out)],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
            stdout=log, stderr=subprocess.STDOUT, cwd=out,
        )
        jobs[mode] = (process, out, log)
    results = {}

    def result(mode):
        if mode not in results:
            process, out, log = jobs[mode]
            code = process.wait(timeout=600)
            log.close()
            assert code == 0, (out / "log.txt").read_text()[-4000:]
            results[mode] = out
        return results[mode]

    yield result
    for process, _, log in jobs.values():
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


# -- JAX: DataParallel on two virtual CPU devices -----------------------------------------
@needs_jax
def test_two_devices_are_used(workers):
    report = json.loads((workers("jax") / "jax.json").read_text())
    assert report["jax_platforms"] == ["cpu", "cpu"]
    assert report["keras_devices"] == ["cpu:0", "cpu:1"]
    assert report["mesh_shape"] == [2] and report["mesh_devices"] == ["cpu:0", "cpu:1"]
    # Every variable of the LSTM model is replicated: a full copy on each device.
    assert report["variables"] == {"count": 6, "devices": [2], "replicated": True}
    # Inside the compiled train step, a batch of 4 is split 2 + 2 over both
    # devices, and so are the logits computed from it.
    assert report["batch_sharding"] == {
        "y_true": [[4, 8], [2, 8], 2],
        "y_pred": [[4, 8, 13], [2, 8, 13], 2],
    }


def _load(directory, architecture, optimizer):
    data = np.load(directory / f"{architecture}_{optimizer}.npz")
    names = [str(name) for name in data["names"]]
    weights = {
        kind: [data[f"{kind}_{i}"] for i in range(len(names))]
        for kind in ("initial", "single", "parallel")
    }
    return names, weights, data["single_losses"], data["parallel_losses"]


@needs_jax
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("architecture", ["lstm", "rnn", "transformer"])
def test_data_parallel_matches_one_device(workers, architecture, optimizer):
    names, weights, single_losses, parallel_losses = _load(
        workers("jax"), architecture, optimizer
    )
    assert len(single_losses) == 3 and np.all(np.isfinite(single_losses))
    np.testing.assert_allclose(parallel_losses, single_losses, rtol=1e-5)
    moved = max(float(np.max(np.abs(s - i)))
                for s, i in zip(weights["single"], weights["initial"]))
    assert moved > 1e-3  # the three steps did train
    # Rounding of the reordered gradient sum; Adam scales it up where a gradient
    # is ~0 (see the module docstring for the measured figures).
    atol = {"sgd": 1e-7, "adam": 1e-5}[optimizer]
    for name, single, parallel in zip(names, weights["single"], weights["parallel"]):
        np.testing.assert_allclose(parallel, single, rtol=1e-5, atol=atol, err_msg=name)


@needs_jax
def test_readme_jax_snippet_trains_on_two_devices(workers):
    example = json.loads((workers("jax_example") / "jax_example.json").read_text())
    assert example["mesh_shape"] == [2] and example["variable_devices"] == 2
    assert len(example["losses"]) == 1 and np.isfinite(example["losses"][0])
    assert example["max_weight_change"] > 1e-3


# -- the command line -----------------------------------------------------------------------
@needs_jax
def test_cli_distribute_on_two_devices(workers):
    report = json.loads((workers("cli") / "cli.json").read_text())
    odd = report["odd_batch"]
    assert odd["code"] == 2 and not report["odd_batch_wrote"]
    assert odd["stderr"] == (
        "keraseq: error: --batch-size 7 is not divisible by the 2 devices --distribute uses "
        "(cpu:0, cpu:1): every device takes an equal share of each batch; use a multiple of 2\n"
    )
    run = report["run"]
    assert run["code"] == 0, run["stderr"]
    assert run["stdout"].startswith(
        "keraseq train: --distribute: keras.distribution.DataParallel over 2 devices "
        "(cpu:0, cpu:1), 4 of the 8 sequences of each batch per device\n"
    )
    assert {"model.keras", "vocabulary.json", "history.json", "config.json"} <= set(
        report["files"]
    )
    assert report["distribution_after"] == "None"  # turned off again after training


@pytest.mark.slow
def test_cli_distribute_in_this_session(tmp_path, capsys):
    """Under the session's backend: JAX trains on its local devices (one here)
    and says so; TensorFlow and torch are refused with one line, exit code 2."""
    argv = ["train", "--max-tokens", "3000", "--epochs", "1", "--units", "16",
            "--sequence-length", "32", "--batch-size", "8", "--distribute",
            "--out", str(tmp_path / "run")]
    code = main(argv)
    captured = capsys.readouterr()
    if BACKEND != "jax":
        assert code == 2
        assert captured.err == _backend_message(BACKEND) + "\n"
        assert not (tmp_path / "run").exists()
        return
    assert code == 0, captured.err
    devices = keras.distribution.list_devices()
    count = len(devices)
    assert captured.out.startswith(
        f"keraseq train: --distribute: keras.distribution.DataParallel over {count} "
        f"device{'s' if count != 1 else ''} ({', '.join(devices)}), "
        f"{8 // count} of the 8 sequences of each batch per device\n"
    )
    assert keras.distribution.distribution() is None
    assert (tmp_path / "run" / "model.keras").is_file()


# -- TensorFlow: the README's MirroredStrategy snippet ------------------------------------
@needs_tensorflow
def test_readme_mirrored_strategy_snippet_trains_on_two_replicas(workers):
    report = json.loads((workers("tensorflow") / "tensorflow.json").read_text())
    assert report["backend"] == "tensorflow"
    assert report["logical_devices"] == ["/device:CPU:0", "/device:CPU:1"]
    assert report["replicas"] == 2 and report["model_strategy"] == "MirroredStrategy"
    assert report["variable_type"] == "MirroredVariable"
    assert [device.rsplit("/", 1)[-1] for device in report["variable_devices"]] == [
        "device:CPU:0", "device:CPU:1"
    ]
    assert len(report["losses"]) == 1 and np.isfinite(report["losses"][0])
    assert report["max_weight_change"] > 1e-3


# -- the README quotes the tested examples -----------------------------------------------
def _code_after_docstring(path):
    """The lines of an example after its module docstring: what the README shows."""
    source = path.read_text(encoding="utf-8")
    docstring_end = ast.parse(source).body[0].end_lineno
    return "\n".join(source.splitlines()[docstring_end:]).strip() + "\n"


@pytest.mark.parametrize("example", ["data_parallel_jax.py", "mirrored_strategy.py"])
def test_readme_quotes_the_tested_snippets(example):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Scaling out\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    if section is None:
        pytest.skip("README.md has no '## Scaling out' section yet")
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    assert _code_after_docstring(ROOT / "examples" / example) in blocks
