"""Tests of keraseq.export.quantize: int8 dynamic quantization gated on agreement.

The model is a small keraseq LSTM language model trained for a few steps on the
start of tinyshakespeare (so its weights are not random), exported with native
ONNX nodes. The report's numbers are checked against an independent
recomputation: onnxruntime sessions opened here, the loss computed with numpy
from their logits, and the float loss also against the Keras model's own
cross-entropy. int8 outputs depend on the batch (dynamic quantization scales
each call's activations by that call's range), so the recomputation feeds the
same batches as the report (`batch_size`).
"""

import json
import os

import keras
import numpy as np
import onnx
import onnxruntime
import pytest

from keraseq import text
from keraseq.export import export_onnx
from keraseq.export.quantize import (
    QuantizationReport,
    default_report_path,
    int8_path,
    quantize_for_export,
    quantize_int8,
)
from keraseq.models import compile_language_model, language_model

LENGTH = 32
BATCH = 16  # windows per onnxruntime call, in the report and here
THREADS = 2  # int8 outputs depend on the intra-op thread count (measured); keep it equal


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(Keras model, float .onnx path, held-out x, held-out y)."""
    keras.utils.set_random_seed(7)
    corpus = text.load_corpus("shakespeare")[:40000]
    vocabulary = text.Vocabulary.from_text(corpus, level="char")
    train_ids, validation_ids = text.split(vocabulary.encode(corpus), 0.4)
    # Short windows and large batches: few, cheap steps (the torch backend's
    # cost is per time step), enough for the model to predict more than one
    # character, so that int8 flips some of its near-tied predictions.
    x_train, y_train = text.windows(train_ids, 8)
    model = language_model("lstm", vocabulary.size, units=32, embedding_dim=16)
    compile_language_model(model, learning_rate=2e-2)
    model.fit(x_train, y_train, batch_size=256, epochs=5, verbose=0)
    path = str(tmp_path_factory.mktemp("float") / "model.onnx")
    export_onnx(model, path, method="native")
    x, y = text.windows(validation_ids, LENGTH)
    return model, path, x, y


def _session(path):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _logits(path, x):
    session = _session(path)
    return np.concatenate([
        session.run(["logits"], {"tokens": x[i : i + BATCH]})[0]
        for i in range(0, len(x), BATCH)
    ])  # (num_windows, LENGTH, vocabulary), the report's batches


def _numpy_loss(logits, y):
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_softmax = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-np.take_along_axis(log_softmax, y[..., None], axis=-1).mean())


def _quantize(trained, out, **kwargs):
    _, path, x, y = trained
    kwargs.setdefault("latency_repeats", 2)
    kwargs.setdefault("threads", THREADS)
    return quantize_int8(path, out, validation_inputs=x, validation_targets=y,
                         batch_size=BATCH, **kwargs)


def _leftovers(directory):
    return [name for name in os.listdir(directory) if name.endswith(".tmp.onnx")]


def test_report_matches_independent_recomputation(trained, tmp_path):
    model, path, x, y = trained
    out = tmp_path / "model.int8.onnx"
    report = _quantize(trained, out, min_agreement=0.5)
    assert isinstance(report, QuantizationReport)
    assert report.shipped and report.reason is None and out.is_file()

    float_logits, int8_logits = _logits(path, x), _logits(str(out), x)
    agreement = np.mean(float_logits.argmax(-1) == int8_logits.argmax(-1))
    assert report.agreement == pytest.approx(agreement, abs=1e-12)
    assert report.float_loss == pytest.approx(_numpy_loss(float_logits, y), abs=1e-9)
    assert report.int8_loss == pytest.approx(_numpy_loss(int8_logits, y), abs=1e-9)
    assert report.loss_change == pytest.approx(report.int8_loss - report.float_loss)
    # The float graph's loss is the Keras model's (onnxruntime vs the backend:
    # logits differ by ~1e-6, the mean loss by less than 1e-5).
    keras_logits = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
    keras_loss = float(keras.ops.convert_to_numpy(keras.ops.mean(
        keras.losses.sparse_categorical_crossentropy(y, keras_logits, from_logits=True)
    )))
    assert report.float_loss == pytest.approx(keras_loss, abs=1e-5)
    # The model learned something: better than uniform over the vocabulary.
    assert report.float_loss < np.log(float_logits.shape[-1]) - 0.3

    assert report.float_bytes == os.path.getsize(path)
    assert report.int8_bytes == os.path.getsize(out)
    assert report.int8_bytes < 0.75 * report.float_bytes
    assert report.size_ratio == pytest.approx(report.int8_bytes / report.float_bytes)
    assert report.num_windows == len(x) and report.num_tokens == x.size
    assert [entry["batch_size"] for entry in report.latency] == [1, min(32, len(x))]
    for entry in report.latency:
        assert np.isfinite(entry["float_ms"]) and entry["int8_ms"] > 0

    graph = onnx.load(str(out))
    ops = {node.op_type for node in graph.graph.node}
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
    assert report.quantized_nodes["LSTM"] == 1
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(metadata["keraseq_quantization"])["name"] == report.settings["name"]
    float_metadata = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert float_metadata and float_metadata.items() <= metadata.items()  # all kept

    assert report.report_path == default_report_path(str(out))
    assert report.report_path.endswith("model.int8.quantization.json")
    with open(report.report_path) as handle:
        saved = json.load(handle)
    assert saved["shipped"] is True and saved["agreement"] == report.agreement
    assert "next-token agreement" in report.table() and "float32" in report.table()
    assert _leftovers(tmp_path) == []


def test_threshold_one_with_imperfect_agreement_ships_nothing(trained, tmp_path):
    out = tmp_path / "model.int8.onnx"
    report = _quantize(trained, out, min_agreement=1.0)
    assert report.agreement < 1.0  # the premise: int8 changes some predictions
    assert not report.shipped and not out.exists()
    assert _leftovers(tmp_path) == []
    assert "below min_agreement=1" in report.reason
    # Both attempts ran: everything int8, then the embedding and logits in float.
    names = [attempt["name"] for attempt in report.attempts]
    assert names == ["full int8", "float ends"]
    assert report.attempts[0]["quantized_nodes"] == {"Gather": 1, "LSTM": 1, "MatMul": 1}
    assert report.attempts[1]["quantized_nodes"] == {"LSTM": 1}
    assert not any(attempt["passed"] for attempt in report.attempts)
    assert report.agreement == max(a["agreement"] for a in report.attempts)
    with open(default_report_path(str(out))) as handle:
        saved = json.load(handle)
    assert saved["shipped"] is False and saved["reason"] == report.reason
    assert "NOT shipped" in report.table()


def test_existing_out_file_survives_a_refusal(trained, tmp_path):
    out = tmp_path / "model.int8.onnx"
    out.write_bytes(b"an earlier int8 model")
    report = _quantize(trained, out, min_agreement=1.0)
    assert not report.shipped and report.existing_out_kept
    assert out.read_bytes() == b"an earlier int8 model"
    assert _leftovers(tmp_path) == []


def test_explicit_op_types_make_one_attempt(trained, tmp_path):
    out = tmp_path / "lstm_only.onnx"
    report = _quantize(trained, out, min_agreement=0.5, op_types=["LSTM"])
    assert [a["name"] for a in report.attempts] == ["custom"]
    assert report.quantized_nodes == {"LSTM": 1}
    ops = [node.op_type for node in onnx.load(str(out)).graph.node]
    assert "DynamicQuantizeLSTM" in ops and "MatMul" in ops and "MatMulInteger" not in ops
    assert report.settings["op_types"] == ["LSTM"]


def test_command_line_entry_writes_next_to_the_float_graph(trained, tmp_path):
    _, path, x, y = trained
    float_copy = tmp_path / "model.onnx"
    float_copy.write_bytes(open(path, "rb").read())
    report = quantize_for_export(str(float_copy), None, x, y, min_agreement=0.5)
    assert report.shipped and report.out_path == str(tmp_path / "model.int8.onnx")
    assert (tmp_path / "model.int8.onnx").is_file()
    assert (tmp_path / "model.int8.quantization.json").is_file()
    assert report.threads == 2 and report.min_agreement == 0.5


def test_graph_without_quantizable_nodes_ships_nothing(tmp_path):
    # logits[b, t, v] = float(tokens[b, t]) * w[v]: no LSTM, MatMul or Gather.
    from onnx import TensorProto, helper, numpy_helper

    vocabulary = 5
    weights = np.linspace(-1.0, 1.0, vocabulary, dtype=np.float32).reshape(1, 1, vocabulary)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["tokens"], ["t"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["t", "axis"], ["t3"]),
            helper.make_node("Mul", ["t3", "w"], ["logits"]),
        ],
        "scale",
        [helper.make_tensor_value_info("tokens", TensorProto.INT32, ["batch", "sequence"])],
        [helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, ["batch", "sequence", vocabulary])],
        [numpy_helper.from_array(weights, "w"),
         numpy_helper.from_array(np.array([2], np.int64), "axis")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "scale.onnx"
    onnx.save(model, str(path))
    x = np.arange(12, dtype=np.int32).reshape(3, 4) % vocabulary
    report = quantize_int8(str(path), tmp_path / "scale.int8.onnx", validation_inputs=x,
                           validation_targets=x, latency_repeats=1)
    assert not report.shipped and report.agreement is None
    assert "no node" in report.reason
    assert not (tmp_path / "scale.int8.onnx").exists() and _leftovers(tmp_path) == []
    # The float loss is still measured: numpy closed form of the same logits.
    logits = x[..., None].astype(np.float32) * weights
    assert report.float_loss == pytest.approx(_numpy_loss(logits, x), abs=1e-9)
    assert "NOT shipped" in report.table()


def test_int8_path_names():
    assert int8_path("run/model.onnx") == "run/model.int8.onnx"
    assert default_report_path("run/model.int8.onnx") == "run/model.int8.quantization.json"


def _bad_cases(tmp_path, path, x, y):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not a protobuf \xff" * 10)
    out = str(tmp_path / "out.onnx")
    return {
        "min_agreement_zero": (dict(min_agreement=0.0), "min_agreement"),
        "min_agreement_above_one": (dict(min_agreement=1.01), "min_agreement"),
        "min_agreement_nan": (dict(min_agreement=float("nan")), "min_agreement"),
        "min_agreement_bool": (dict(min_agreement=True), "min_agreement"),
        "min_agreement_str": (dict(min_agreement="0.99"), "min_agreement"),
        "missing_file": (dict(onnx_path=str(tmp_path / "missing.onnx")), "onnx_path"),
        "not_onnx_suffix": (dict(onnx_path=str(text_file)), "onnx_path"),
        "not_an_onnx_model": (dict(onnx_path=str(garbage)), "not an ONNX model"),
        "out_is_input": (dict(out_path=path), "out_path"),
        "out_suffix": (dict(out_path=str(tmp_path / "out.bin")), "out_path"),
        "out_missing_dir": (dict(out_path=str(tmp_path / "no" / "o.onnx")), "out_path"),
        "shape_mismatch": (dict(validation_targets=y[:, :-1]), "same shape"),
        "inputs_1d": (dict(validation_inputs=x[0], validation_targets=y[0]),
                      "validation_inputs"),
        "inputs_float": (dict(validation_inputs=x.astype("float32")), "validation_inputs"),
        "targets_out_of_range": (dict(validation_targets=y + 1000), "validation_targets"),
        "inputs_negative": (dict(validation_inputs=x - 1000), "validation_inputs"),
        "threads_zero": (dict(threads=0), "threads"),
        "op_types_empty": (dict(op_types=[]), "op_types"),
    }, out


@pytest.mark.parametrize("case", [
    "min_agreement_zero", "min_agreement_above_one", "min_agreement_nan",
    "min_agreement_bool", "min_agreement_str", "missing_file", "not_onnx_suffix",
    "not_an_onnx_model", "out_is_input", "out_suffix", "out_missing_dir",
    "shape_mismatch", "inputs_1d", "inputs_float", "targets_out_of_range",
    "inputs_negative", "threads_zero", "op_types_empty",
])
def test_bad_input_raises_value_error(trained, tmp_path, case):
    _, path, x, y = trained
    cases, out = _bad_cases(tmp_path, path, x, y)
    overrides, match = cases[case]
    arguments = dict(onnx_path=path, out_path=out, validation_inputs=x,
                     validation_targets=y)
    arguments.update(overrides)
    with pytest.raises(ValueError, match=match):
        quantize_int8(arguments.pop("onnx_path"), arguments.pop("out_path"), **arguments)
    assert not os.path.exists(out) and _leftovers(tmp_path) == []
