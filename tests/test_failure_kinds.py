"""Failure kinds users of Keras and ONNX keep hitting, pinned through export.

Each model is trained for a few steps under the backend running the suite (so
the torch run covers "trained under torch", the JAX run "trained under JAX"),
exported through the TensorFlow path and compared with onnxruntime.
"""

import keras
import numpy as np
import onnxruntime
import pytest

import keraseq
from keraseq.export import export_onnx

TOL = 1e-5


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def train_briefly(model, x, rng):
    outputs = model(x)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    targets = [rng.normal(size=to_np(o).shape).astype("float32") for o in outputs]
    model.compile("adam", ["mse"] * len(outputs))
    model.fit(x, targets if len(targets) > 1 else targets[0], epochs=2, verbose=0)


def onnx_outputs(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def keras_outputs(model, x):
    outputs = model(x, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [to_np(o) for o in outputs]


def test_dynamic_length_survives_export(tmp_path, rng):
    """Keras's own torch exporter bakes length 1 into this graph (GUIDE §1)."""
    x_in = keras.Input((None, 4))
    model = keras.Model(x_in, keraseq.LSTM(8, return_sequences=True)(x_in))
    train_briefly(model, rng.normal(size=(6, 7, 4)).astype("float32"), rng)
    path = tmp_path / "dynamic.onnx"
    export_onnx(model, path)
    for shape in [(1, 5, 4), (3, 9, 4)]:
        x = rng.normal(size=shape).astype("float32")
        (ours,) = onnx_outputs(path, x)
        (expected,) = keras_outputs(model, x)
        assert ours.shape == expected.shape == (shape[0], shape[1], 8)
        np.testing.assert_allclose(ours, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["go_backwards", "bidirectional"])
def test_reversed_time_survives_export(kind, tmp_path, rng):
    x_in = keras.Input((None, 4))
    if kind == "go_backwards":
        y, h, c = keraseq.LSTM(8, go_backwards=True, return_sequences=True,
                               return_state=True)(x_in)
        model = keras.Model(x_in, [y, h, c])
    else:
        outputs = keras.layers.Bidirectional(
            keraseq.LSTM(8, return_sequences=True, return_state=True)
        )(x_in)
        model = keras.Model(x_in, list(outputs))  # sequence, then h, c of each direction
    train_briefly(model, rng.normal(size=(6, 7, 4)).astype("float32"), rng)
    path = tmp_path / f"{kind}.onnx"
    export_onnx(model, path)
    for shape in [(1, 1, 4), (2, 6, 4), (3, 11, 4)]:
        x = rng.normal(size=shape).astype("float32")
        ours = onnx_outputs(path, x)
        expected = keras_outputs(model, x)
        assert len(ours) == len(expected)
        for a, b in zip(ours, expected):
            np.testing.assert_allclose(a, b, atol=TOL, rtol=0)


def test_masks_both_paddings_match_keras_and_export(tmp_path, rng):
    tokens = np.array(
        [
            [3, 1, 4, 1, 5],  # length 5
            [9, 2, 6, 0, 0],  # length 3, right-padded
            [5, 0, 0, 0, 0],  # length 1, right-padded
            [0, 0, 3, 5, 8],  # left-padded
        ],
        dtype="int32",
    )

    def build(recurrent):
        t = keras.Input((None,), dtype="int32")
        h = keras.layers.Embedding(10, 4, mask_zero=True)(t)
        return keras.Model(t, recurrent(8, return_sequences=True)(h))

    model = build(keraseq.LSTM)
    train_briefly(model, tokens, rng)
    reference = build(keras.layers.LSTM)
    reference.set_weights(model.get_weights())
    (ours,) = keras_outputs(model, tokens)
    (theirs,) = keras_outputs(reference, tokens)
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)  # masked steps included
    # A masked step repeats the previous output; before the first real step it is 0.
    np.testing.assert_array_equal(ours[1, 3], ours[1, 2])
    np.testing.assert_array_equal(ours[3, :2], np.zeros((2, 8), "float32"))

    path = tmp_path / "masked.onnx"
    export_onnx(model, path)
    (exported,) = onnx_outputs(path, tokens)
    np.testing.assert_allclose(exported, ours, atol=TOL, rtol=0)
