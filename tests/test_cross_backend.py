"""The same weights give the same outputs under TensorFlow, JAX and PyTorch.

Each model of the zoo is built and saved as `.keras` under the backend running
the suite, then loaded and run under each of the three backends (two of them in
subprocesses); every output must agree with the saving backend's to 1e-5.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests_support import BACKENDS

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import _cross_backend_worker as worker  # noqa: E402


@pytest.fixture(scope="module")
def saved_zoo(tmp_path_factory):
    directory = tmp_path_factory.mktemp("zoo")
    keras.utils.set_random_seed(3)
    for name, (model, x) in worker.zoo().items():
        model.save(directory / f"{name}.keras")
        np.save(directory / f"{name}.input.npy", x)
        y = keras.ops.convert_to_numpy(model(x, training=False))
        np.save(directory / f"{name}.source.npy", y)
    for backend in BACKENDS:
        if backend == keras.backend.backend():
            worker.run(directory)
            continue
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        done = subprocess.run(
            [sys.executable, str(HERE / "_cross_backend_worker.py"), "run", str(directory)],
            env=env, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    return directory


NAMES = [
    "simple_rnn", "simple_rnn_relu_projection_backwards", "lstm_masked",
    "bidirectional_lstm", "attention_causal", "transformer_block", "embeddings",
    "lm_rnn", "lm_lstm", "lm_transformer",
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_same_weights_same_outputs(saved_zoo, name, backend):
    source = np.load(saved_zoo / f"{name}.source.npy")
    other = np.load(saved_zoo / f"{name}.{backend}.npy")
    assert other.shape == source.shape
    np.testing.assert_allclose(other, source, atol=1e-5, rtol=0)
