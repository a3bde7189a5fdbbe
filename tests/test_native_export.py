"""Tests of keraseq.export.native: recurrent models as native ONNX LSTM/RNN nodes.

Full-sequence graphs (with and without Keras masks: right padding with empty
and full rows, left padding, gaps), streaming step graphs of recurrent
language models (token by token and in chunks), the fallback to tf2onnx for a
layer without a converter, and a model trained and saved under the current
backend.

Reference: the Keras model itself under the current backend; onnxruntime must
reproduce it to atol 1e-5 + rtol 1e-5 · max|keras| per row (float32 round-off
of up to 40 recurrent steps and a vocabulary-wide matmul on logits of order 1).
"""

import json

import keras
import numpy as np
import onnx
import onnxruntime
import pytest

from keraseq.export import export_onnx
from keraseq.export.native import NativeUnsupported, export_native, export_streaming
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


def test_native_path_imports_no_tensorflow(tmp_path, trained):
    # A child under the PyTorch backend: export_native must not import TensorFlow
    # (Keras's get_config would, through its serializer; the exporter reads the
    # layer attributes instead). It also exports, with export_onnx's default
    # method="auto", the .keras file trained and saved under this test's backend.
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from keraseq.models import language_model\n"
        "from keraseq.export.native import export_native\n"
        "m = language_model('lstm', 5, units=4, embedding_dim=4)\n"
        f"export_native(m, {str(tmp_path / 'c.onnx')!r})\n"
        "from keraseq.export import export_onnx\n"
        f"r = export_onnx({str(trained['path'])!r}, {str(tmp_path / 't.onnx')!r})\n"
        "print('METHOD', r.method, r.converted_in)\n"
        "print('TF_IMPORTED', 'tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TF_IMPORTED False" in done.stdout
    assert "METHOD native in-process" in done.stdout
    session = onnxruntime.InferenceSession(str(tmp_path / "t.onnx"),
                                           providers=["CPUExecutionProvider"])
    _assert_close(session.run(None, {"tokens": trained["tokens"]})[0], trained["expected"],
                  "exported by the PyTorch child")


# -- masks ---------------------------------------------------------------------
#
# Keras's rule for a step whose mask is False: the state is unchanged and the
# output repeats the previous output (zeros before the first unmasked step; a
# row with no unmasked step gives zeros on all three backends). The tolerance
# is the one of `test_matches_keras` (module docstring).

MASK_T = 9
RIGHT_PADDED = {"full": 0, "empty": 1, "length 4": 2, "length 1": 3}
LEFT_PADDED, GAPS = 4, 5


def _assert_close(got, expected, what):
    expected = np.asarray(expected, dtype="float64")
    assert got.shape == expected.shape, what
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    error = np.abs(got - expected) - (1e-5 + 1e-5 * scale)
    where = np.unravel_index(error.argmax(), error.shape)
    assert error.max() <= 0, f"{what}: max excess {error.max():.3g} at {where}"


def _masked_tokens(rng):
    """(6, 9) token ids, 0 = padding: right-padded rows of length 9, 0, 4 and 1,
    a left-padded row (3 pads, 6 tokens) and a row with gaps."""
    tokens = rng.integers(1, VOCAB, (6, MASK_T)).astype("int32")
    for row, length in zip(RIGHT_PADDED.values(), (MASK_T, 0, 4, 1)):
        tokens[row, length:] = 0
    tokens[LEFT_PADDED, :3] = 0
    tokens[GAPS, [1, 4, 5, 8]] = 0
    return tokens


def _masked_branches():
    """One masked embedding feeding every recurrent configuration at once (one
    Keras call and one export cover them all)."""
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="emb")(tokens)
    outputs = {
        "lstm_seq": LSTM(8, return_sequences=True)(x),
        "rnn_seq": SimpleRNN(6, return_sequences=True)(x),
        "rnn_proj_last": SimpleRNN(6, output_units=5)(x),
        "lstm_backwards_seq": LSTM(8, return_sequences=True, go_backwards=True)(x),
    }
    # Stacked: the mask passes through every layer.
    h = LSTM(8, return_sequences=True)(x)
    h = outputs["stacked_rnn_proj_seq"] = SimpleRNN(
        6, output_units=7, return_sequences=True)(h)
    outputs["stacked_seq_softmax"] = keras.layers.Dense(VOCAB, activation="softmax")(h)
    outputs["stacked_last_softmax"] = keras.layers.Dense(3, activation="softmax")(LSTM(5)(h))
    names = list(outputs)
    return keras.Model(tokens, [outputs[n] for n in names]), names


@pytest.fixture(scope="module")
def masked_case(tmp_path_factory):
    """The masked model, its token batch, Keras's outputs and the session."""
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    model, names = _masked_branches()
    _randomize(model, rng)
    tokens = _masked_tokens(rng)
    expected = [keras.ops.convert_to_numpy(y) for y in model(tokens)]
    path = export_native(model, tmp_path_factory.mktemp("masked") / "m.onnx")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"tokens": tokens})
    return {"model": model, "names": names, "tokens": tokens, "path": path,
            "expected": dict(zip(names, expected)), "got": dict(zip(names, got)),
            "session": session}


def test_right_padded_mask_matches_keras(masked_case):
    rows = list(RIGHT_PADDED.values())
    for name in masked_case["names"]:
        got, expected = masked_case["got"][name], masked_case["expected"][name]
        _assert_close(got[rows], expected[rows], name)
        if name.endswith("softmax"):  # a Dense head: its values at the zeros
            continue
        # A row with no unmasked step: zeros, in Keras and in the graph.
        empty = RIGHT_PADDED["empty"]
        np.testing.assert_array_equal(expected[empty], 0.0, err_msg=name)
        np.testing.assert_array_equal(got[empty], 0.0, err_msg=name)
        if got.ndim == 3 and "backwards" not in name:
            # Masked steps repeat the output of the last real step.
            length4 = got[RIGHT_PADDED["length 4"]]
            np.testing.assert_array_equal(length4[4:], np.repeat(length4[3:4], MASK_T - 4, 0))


def test_left_padded_and_gapped_masks_match_keras(masked_case):
    # The graph does not assume right padding: it moves each row's unmasked
    # steps to the front, runs the node for that many steps, and reads the
    # output at position t back from the last unmasked step at or before t.
    rows = [LEFT_PADDED, GAPS]
    for name in masked_case["names"]:
        _assert_close(masked_case["got"][name][rows], masked_case["expected"][name][rows], name)
    # So a left-padded row [0, 0, 0, a, ..., f] gives zeros for the padding,
    # then what the unpadded row [a, ..., f] gives; its last output is the
    # unpadded row's.
    unpadded = masked_case["tokens"][LEFT_PADDED:LEFT_PADDED + 1, 3:]
    alone = masked_case["session"].run(None, {"tokens": unpadded})
    alone = dict(zip(masked_case["names"], alone))
    for name in ("lstm_seq", "stacked_rnn_proj_seq", "rnn_proj_last", "stacked_last_softmax"):
        left = masked_case["got"][name][LEFT_PADDED]
        if left.ndim == 2:  # (T, units)
            np.testing.assert_array_equal(left[:3], 0.0)
            left = left[3:]
        np.testing.assert_allclose(left, alone[name][0], atol=1e-6, err_msg=name)


def test_masked_graph_has_one_node_per_layer(masked_case):
    ops = [node.op_type for node in onnx.load(masked_case["path"]).graph.node]
    layers = masked_case["model"].layers
    assert ops.count("LSTM") == sum(isinstance(layer, LSTM) for layer in layers) == 4
    assert ops.count("RNN") == sum(isinstance(layer, SimpleRNN) for layer in layers) == 3
    assert "Loop" not in ops and "Scan" not in ops
    assert ops.count("TopK") == 2  # the compaction order, once per mask direction


def _classifier_example():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "examples" / "classify_corpus_lines.py"
    spec = importlib.util.spec_from_file_location("classify_corpus_lines", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classify_corpus_lines_model_exports_natively(tmp_path, rng):
    # examples/classify_corpus_lines.py: Embedding(mask_zero=True) -> LSTM ->
    # Dense(3) on right-padded character ids, exported with method="auto".
    model = _randomize(_classifier_example().build_model(VOCAB, 16, 3), rng)
    tokens = _masked_tokens(rng)[list(RIGHT_PADDED.values())]
    result = export_onnx(model, tmp_path / "classifier.onnx")
    assert result.method == "native" and result.fallback_reason is None
    assert result.input_names == ["tokens"] and result.output_shapes == [["batch", 3]]
    session = onnxruntime.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    expected = keras.ops.convert_to_numpy(model(tokens))
    _assert_close(session.run(None, {"tokens": tokens})[0], expected, "classifier")
    # The empty row is Dense(0): the output bias, as in Keras.
    np.testing.assert_allclose(expected[1], keras.ops.convert_to_numpy(model.layers[-1].bias),
                               atol=1e-6)


# -- streaming step graphs -----------------------------------------------------


def _run_chunks(session, tokens, states, bounds):
    """Feed `tokens[:, a:b]` for each chunk, carrying the states; returns the
    logits of every position and the final states."""
    logits = []
    for start, stop in bounds:
        feed = {"tokens": tokens[:, start:stop], **states}
        out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        logits.append(out["logits"])
        states = {name: out[name.replace("state_in", "state_out")] for name in states}
    return np.concatenate(logits, axis=1), states


@pytest.mark.parametrize("architecture, num_layers",
                         [("lstm", 1), ("lstm", 2), ("rnn", 1), ("rnn", 2)])
def test_step_graph_streams_like_keras(architecture, num_layers, tmp_path, rng):
    units = 12
    model = _randomize(language_model(
        architecture, VOCAB, units=units, embedding_dim=8, num_layers=num_layers), rng)
    written = export_streaming(model, tmp_path)
    assert written == {"step": str(tmp_path / "model.step.onnx")}
    proto = onnx.load(written["step"])

    # Graph content: one native node per recurrent layer, no loop.
    op = "LSTM" if architecture == "lstm" else "RNN"
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count(op) == num_layers and ops.count("LSTM") + ops.count("RNN") == num_layers
    assert "Loop" not in ops and "Scan" not in ops
    # States: per layer h (and c for an LSTM), each (batch, units), listed in
    # the metadata in graph order.
    per_layer = 2 if architecture == "lstm" else 1
    count = per_layer * num_layers
    names_in = [f"state_in_{k}" for k in range(count)]
    names_out = [f"state_out_{k}" for k in range(count)]
    meta = {p.key: p.value for p in proto.metadata_props}
    streaming = json.loads(meta["keraseq_streaming"])
    assert streaming["kind"] == "step"
    assert [(s["input"], s["output"], s["size"]) for s in streaming["states"]] == [
        (i, o, units) for i, o in zip(names_in, names_out)]
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    assert [(v.name, dims(v)) for v in proto.graph.input] == (
        [("tokens", ["batch", "sequence"])] + [(n, ["batch", units]) for n in names_in])
    assert [(v.name, dims(v)) for v in proto.graph.output] == (
        [("logits", ["batch", "sequence", VOCAB])] + [(n, ["batch", units]) for n in names_out])

    # Parity: token by token, and in two chunks, equals the full Keras sequence.
    tokens = rng.integers(0, VOCAB, (2, 7)).astype("int32")
    expected = keras.ops.convert_to_numpy(model(tokens))
    session = onnxruntime.InferenceSession(written["step"], providers=["CPUExecutionProvider"])
    zeros = {name: np.zeros((2, units), "float32") for name in names_in}
    by_token, states_a = _run_chunks(session, tokens, zeros, [(t, t + 1) for t in range(7)])
    by_chunk, states_b = _run_chunks(session, tokens, zeros, [(0, 3), (3, 7)])
    whole, states_c = _run_chunks(session, tokens, zeros, [(0, 7)])
    _assert_close(by_token, expected, "token by token")
    _assert_close(by_chunk, expected, "two chunks")
    _assert_close(whole, expected, "one chunk")
    for name in names_in:
        assert states_c[name].shape == (2, units)
        np.testing.assert_allclose(states_a[name], states_c[name], atol=1e-6)
        np.testing.assert_allclose(states_b[name], states_c[name], atol=1e-6)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: keras.Sequential([
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 8, mask_zero=True),
            LSTM(8, return_sequences=True, name="masked_lstm"),
            keras.layers.Dense(VOCAB)]), "'masked_lstm' \\(LSTM\\).*mask"),
        (lambda: _chain(SimpleRNN(8, return_sequences=True, go_backwards=True,
                                  output_units=VOCAB, name="backwards_rnn")),
         "'backwards_rnn' \\(SimpleRNN\\).*go_backwards"),
    ],
)
def test_step_graph_refuses_masks_and_go_backwards(build, match, tmp_path):
    with pytest.raises(NativeUnsupported, match=match):
        export_streaming(build(), tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- fallback to tf2onnx ---------------------------------------------------------


def test_unknown_layer_falls_back_to_tf2onnx(tmp_path, rng):
    model = _randomize(_chain(keras.layers.Conv1D(VOCAB, 3, padding="causal", name="conv")), rng)
    # method="native": a ValueError naming the layer; nothing written, an
    # existing file untouched.
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"previous export")
    for path in (existing, tmp_path / "new.onnx"):
        with pytest.raises(ValueError, match="'conv' \\(Conv1D\\)"):
            export_onnx(model, path, method="native")
    assert existing.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.onnx"]

    # method="auto" (the default): the tf2onnx graph, and why.
    result = export_onnx(model, tmp_path / "auto.onnx")
    assert result.method == "tf2onnx"
    assert "'conv' (Conv1D)" in result.fallback_reason
    assert "tf2onnx" not in result.fallback_reason  # the hint is for method="native"
    proto = onnx.load(result.path)
    assert {p.key: p.value for p in proto.metadata_props}["converter"].startswith("tf2onnx")
    tokens = rng.integers(0, VOCAB, (2, 6)).astype("int32")
    session = onnxruntime.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    _assert_close(session.run(None, {"tokens": tokens})[0],
                  keras.ops.convert_to_numpy(model(tokens)), "tf2onnx fallback")


# -- a model trained under this backend ------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-layer LSTM LM after one `fit` step under this backend, saved as .keras."""
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, VOCAB, (4, 6)).astype("int32")
    model = language_model("lstm", VOCAB, units=8, embedding_dim=4, num_layers=2)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    model.fit(tokens, rng.integers(0, VOCAB, (4, 6)), epochs=1, batch_size=4, verbose=0)
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(before, model.get_weights()))
    path = tmp_path_factory.mktemp("trained") / "trained.keras"
    model.save(path)
    return {"path": path, "tokens": tokens,
            "expected": keras.ops.convert_to_numpy(model(tokens))}


def test_model_trained_here_exports_natively_in_process(trained, tmp_path):
    # No subprocess: the native exporter runs under this backend. (The child in
    # test_native_path_imports_no_tensorflow exports the same file under PyTorch
    # and checks that TensorFlow is never imported.)
    result = export_onnx(trained["path"], tmp_path / "m.onnx",
                         source_backend=keras.backend.backend())
    assert (result.method, result.fallback_reason, result.converted_in) == (
        "native", None, "in-process")
    proto = onnx.load(result.path)
    assert {p.key: p.value for p in proto.metadata_props}["source_backend"] == (
        keras.backend.backend())
    session = onnxruntime.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    _assert_close(session.run(None, {"tokens": trained["tokens"]})[0], trained["expected"],
                  "trained")
