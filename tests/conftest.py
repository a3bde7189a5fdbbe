"""Shared pytest setup. The backend is chosen by KERAS_BACKEND before keras is imported."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Each test starts with the float32 policy and a fixed seed.

    (No `keras.backend.clear_session()` here: it costs ~0.8 s per test on torch.)
    """
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
