"""Tests of keraseq.export.native: recurrent LMs as native ONNX LSTM/RNN nodes.

Reference: the Keras model itself under the current backend; onnxruntime must
reproduce it to atol 1e-5 + rtol 1e-5 · max|keras| per row (float32 round-off
of up to 40 recurrent steps and a vocabulary-wide matmul on logits of order 1).
"""

import keras
import numpy as np
import onnx
import onnxruntime
import pytest

from keraseq.export import export_onnx
from keraseq.export.native import export_native
from keraseq.layers.lstm import LSTM
from keraseq.layers.simple_rnn import SimpleRNN
from keraseq.layers.transformer import TransformerBlock
from keraseq.models import language_model

VOCAB = 11


def _randomize(model, rng, std=0.4):
    model.set_weights(
        [rng.normal(0.0, std, w.shape).astype("float32") for w in model.get_weights()]
    )
    return model


def _chain(*layers):
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, 8)(tokens)
    for layer in layers:
        x = layer(x)
    return keras.Model(tokens, x)


def _models():
    return {
        "lstm2": lambda: language_model(
            "lstm", VOCAB, units=16, embedding_dim=8, num_layers=2),
        "rnn": lambda: language_model("rnn", VOCAB, units=16, embedding_dim=8),
        "rnn_relu": lambda: _chain(
            SimpleRNN(16, activation="relu", return_sequences=True),
            SimpleRNN(12, activation="relu", output_units=VOCAB,
                      return_sequences=True)),
        "lstm_backwards": lambda: _chain(
            LSTM(16, return_sequences=True, go_backwards=True),
            LSTM(12, return_sequences=True),
            keras.layers.Dense(VOCAB)),
        "rnn_backwards": lambda: _chain(
            SimpleRNN(16, return_sequences=True, go_backwards=True,
                      output_units=VOCAB)),
    }


@pytest.mark.parametrize("kind", list(_models()))
def test_matches_keras(kind, tmp_path, rng):
    # An unbounded ReLU recurrence with std 0.4 weights grows over 40 steps and
    # amplifies each backend's matmul round-off past 1e-5; std 0.15 keeps it
    # contractive so the comparison tests the conversion, not the growth.
    model = _randomize(_models()[kind](), rng, std=0.15 if "relu" in kind else 0.4)
    path = export_native(model, tmp_path / "m.onnx")
    assert path == str(tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["tokens"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 3):
        for length in (1, 7, 40):
            tokens = rng.integers(0, VOCAB, (batch, length)).astype("int32")
            expected = keras.ops.convert_to_numpy(model(tokens)).astype("float64")
            (got,) = session.run(None, {"tokens": tokens})
            assert got.shape == expected.shape
            scale = np.abs(expected).max(axis=-1, keepdims=True)
            tolerance = np.broadcast_to(1e-5 + 1e-5 * scale, expected.shape)
            np.testing.assert_array_less(np.abs(got - expected), tolerance)


def test_graph_has_native_nodes_and_dynamic_axes(tmp_path):
    model = language_model("lstm", VOCAB, units=16, embedding_dim=8, num_layers=2)
    proto = onnx.load(export_native(model, tmp_path / "m.onnx"))
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("LSTM") == 2
    assert "Loop" not in ops and "Scan" not in ops
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    assert dims(proto.graph.input[0]) == ["batch", "sequence"]
    assert dims(proto.graph.output[0]) == ["batch", "sequence", VOCAB]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["converter"] == "keraseq.native"
    onnx.checker.check_model(proto)


def test_export_onnx_method_native(tmp_path, rng):
    model = _randomize(language_model("rnn", VOCAB, units=16, embedding_dim=8), rng)
    keras_path = tmp_path / "m.keras"
    model.save(keras_path)
    result = export_onnx(keras_path, tmp_path / "m.onnx", method="native")
    assert result.converted_in == "in-process"
    assert result.input_names == ["tokens"] and result.output_names == ["logits"]
    assert result.input_shapes == [["batch", "sequence"]]
    tokens = rng.integers(0, VOCAB, (2, 9)).astype("int32")
    session = onnxruntime.InferenceSession(
        result.path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        session.run(None, {"tokens": tokens})[0],
        keras.ops.convert_to_numpy(model(tokens)), atol=1e-5, rtol=1e-5)


def test_bogus_method_raises(tmp_path):
    model = language_model("rnn", VOCAB, units=4, embedding_dim=4)
    with pytest.raises(ValueError, match="`method`.*bogus"):
        export_onnx(model, tmp_path / "m.onnx", method="bogus")
    assert not (tmp_path / "m.onnx").exists()


def _masked():
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="masked_emb")(tokens)
    return keras.Model(tokens, LSTM(8, return_sequences=True, name="lstm_0")(x))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: _chain(keras.layers.GRU(8, name="gru")), "'gru' \\(GRU\\)"),
        (lambda: _chain(LSTM(8, activation="relu", return_sequences=True,
                             name="relu_lstm")), "'relu_lstm'.*activation"),
        (lambda: _chain(SimpleRNN(8, return_sequences=True, name="srnn"),
                        keras.layers.Dense(VOCAB, activation="selu",
                                           name="selu")), "'selu'.*selu"),
    ],
)
def test_unsupported_raises(build, match, tmp_path):
    with pytest.raises(ValueError, match=match) as info:
        export_native(build(), tmp_path / "m.onnx")
    assert "tf2onnx" in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


def test_native_path_imports_no_tensorflow(tmp_path):
    # A child under the PyTorch backend: export_native must not import TensorFlow
    # (Keras's get_config would, through its serializer; the exporter reads the
    # layer attributes instead).
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from keraseq.models import language_model\n"
        "from keraseq.export.native import export_native\n"
        "m = language_model('lstm', 5, units=4, embedding_dim=4)\n"
        f"export_native(m, {str(tmp_path / 'c.onnx')!r})\n"
        "print('TF_IMPORTED', 'tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TF_IMPORTED False" in done.stdout
