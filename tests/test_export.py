"""Tests of the ONNX export pipeline (keraseq.export).

The graph is always converted under TensorFlow (in process on the TensorFlow
backend, in a `KERAS_BACKEND=tensorflow` child process on JAX and PyTorch), and
always compared with the Keras model as the *current* backend computes it.
References: the Keras model itself (onnxruntime must reproduce it to 1e-5, the
float32 round-off of a few dozen recurrent steps), and `onnx.reference`'s
pure-numpy evaluator as a second, independent ONNX runtime.

Conversions are kept few (3, plus one that fails on purpose); the exported files
are shared between tests through module-scoped fixtures.
"""

import json
import os

import keras
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx.reference import ReferenceEvaluator
from onnx.reference.ops.op_loop import Loop as _ReferenceLoop

import keraseq
from keraseq.export import (
    MAX_OPSET,
    MIN_OPSET,
    ExportResult,
    ParityReport,
    check_parity,
    export_onnx,
    format_failure,
)
from keraseq.export import onnx_export

BACKEND = keras.backend.backend()

VOCAB = 13
TRAINING_LENGTH = 8
ATOL = 1e-5  # float32 round-off over a few dozen recurrent steps


def _build_lm():
    """Embedding -> keraseq.LSTM -> Dense language model with a dynamic length.

    Wide embeddings (stddev 1) drive the gates out of their linear range so the
    comparison exercises the nonlinearities.
    """
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(
        VOCAB, 8, embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0)
    )(tokens)
    x = keraseq.LSTM(16, return_sequences=True)(x)
    logits = keras.layers.Dense(
        VOCAB, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0)
    )(x)
    return keras.Model(tokens, logits)


def _ort(path):
    return onnxruntime.InferenceSession(
        os.fspath(path), providers=["CPUExecutionProvider"]
    )


def _keras(model, inputs):
    """Keras inference, one batch per step (jit-compiled and cached on JAX)."""
    batch = len(inputs[0]) if isinstance(inputs, list) else len(inputs)
    return model.predict(inputs, batch_size=batch, verbose=0)


@pytest.fixture(scope="module")
def lm_export(tmp_path_factory):
    """(model, ExportResult) of the keraseq LM exported from the model object."""
    keras.utils.set_random_seed(7)
    model = _build_lm()
    path = tmp_path_factory.mktemp("lm") / "lm.onnx"
    result = export_onnx(model, path, method="tf2onnx")  # this file tests tf2onnx
    return model, result


@pytest.fixture(scope="module")
def held_out():
    rng = np.random.default_rng(3)
    return [rng.integers(0, VOCAB, size=(3, 20)).astype("int32")]


# -- the language model ------------------------------------------------------------


def test_lm_parity_held_out_and_random(lm_export, held_out, tmp_path):
    model, result = lm_export
    report_path = tmp_path / "report.json"
    report = check_parity(
        model, result.path, held_out, training_length=TRAINING_LENGTH,
        report_path=report_path,
    )
    assert isinstance(report, ParityReport)
    assert report.passed, report.format_failure()
    assert report.failure is None and format_failure(report) == ""
    assert 0.0 <= report.max_abs <= ATOL
    assert report.atol == 1e-5 and report.rtol == 1e-5
    assert report.max_rel == max(c["max_rel"] for c in report.cases)
    assert 0.0 <= report.tolerance_ratio <= 1.0
    # 1 held-out batch + batch sizes (1, 7) x lengths (1, 8, 24), one output each.
    assert len(report.cases) == 7
    assert [c["case"] for c in report.cases][:2] == ["held-out batch 0", "random"]
    assert {(c["batch"], c["length"]) for c in report.cases[1:]} == {
        (b, t) for b in (1, 7) for t in (1, 8, 24)
    }
    for case in report.cases:
        assert case["ok"] and case["max_abs"] <= ATOL
        assert case["argmax_agreement"] == 1.0
        assert case["output"] == "logits"
        assert case["tolerance_ratio"] <= 1.0
        # The ratio is the difference over the bound at the worst element.
        gap = abs(case["worst_keras"] - case["worst_onnx"])
        assert case["worst_bound"] >= 1e-5 + 1e-5 * abs(case["worst_keras"]) - 1e-15
        assert case["tolerance_ratio"] == pytest.approx(
            gap / case["worst_bound"], rel=1e-6, abs=1e-12)
    # The JSON report on disk is the same report.
    on_disk = json.loads(report_path.read_text())
    assert on_disk["passed"] is True
    assert on_disk["max_abs"] == pytest.approx(report.max_abs)
    assert on_disk["rtol"] == 1e-5
    assert all("tolerance_ratio" in c for c in on_disk["cases"])
    assert json.loads(report.to_json())["cases"] == on_disk["cases"]
    table = report.table().splitlines()
    assert table[0].split() == [
        "case", "batch", "length", "output", "max_abs", "max_rel", "tol_ratio",
        "argmax", "ok",
    ]
    assert len(table) == 2 + len(report.cases)
    assert all(line.rstrip().endswith("ok") for line in table[2:])


def test_lm_default_report_path_next_to_onnx(lm_export):
    model, result = lm_export
    report = check_parity(model, result.path, batch_sizes=(2,), sequence_lengths=(3,))
    expected = result.path[: -len(".onnx")] + ".parity.json"
    assert report.report_path == expected and os.path.isfile(expected)
    assert report.passed and len(report.cases) == 1


def test_lm_graph_names_axes_opset_metadata(lm_export):
    _, result = lm_export
    assert isinstance(result, ExportResult)
    assert result.converted_in == (
        "in-process" if BACKEND == "tensorflow" else "subprocess"
    )
    assert result.opset == 17 and result.source_backend == BACKEND
    assert result.input_names == ["tokens"] and result.output_names == ["logits"]
    assert result.input_shapes == [["batch", "sequence"]]
    assert result.input_dtypes == ["int32"]
    assert result.output_shapes == [["batch", "sequence", VOCAB]]
    assert result.seconds > 0

    proto = onnx.load(result.path)
    onnx.checker.check_model(proto, full_check=True)
    opsets = {o.domain: o.version for o in proto.opset_import}
    assert opsets[""] == 17
    (graph_input,) = proto.graph.input
    (graph_output,) = proto.graph.output
    dims = lambda value: [  # noqa: E731
        d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim
    ]
    assert graph_input.name == "tokens" and dims(graph_input) == ["batch", "sequence"]
    assert graph_output.name == "logits"
    assert dims(graph_output) == ["batch", "sequence", VOCAB]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT32
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["source_backend"] == BACKEND
    assert meta["keras_version"] == keras.__version__
    assert meta["keraseq_version"] == keraseq.__version__
    # keraseq's recurrence stays a loop: the time axis is not unrolled.
    assert "Loop" in {node.op_type for node in proto.graph.node}


def test_lm_same_graph_runs_at_every_length(lm_export):
    """One graph serves lengths 1, 5 and 3x the training length."""
    model, result = lm_export
    session = _ort(result.path)
    for length in (1, 5, 3 * TRAINING_LENGTH):
        tokens = np.random.default_rng(length).integers(0, VOCAB, (2, length))
        tokens = tokens.astype("int32")
        (logits,) = session.run(None, {"tokens": tokens})
        expected = _keras(model, tokens)
        assert logits.shape == (2, length, VOCAB)
        np.testing.assert_allclose(logits, expected, atol=ATOL, rtol=0)
        np.testing.assert_array_equal(logits.argmax(-1), expected.argmax(-1))


class _StackingLoop(_ReferenceLoop):
    """ONNX `Loop` whose scan outputs are stacked on a new leading axis.

    The ONNX spec's pseudocode accumulates one scan value per iteration and
    onnxruntime returns `(iterations, *value_shape)`; onnx 1.23's reference `Loop`
    concatenates the values with `np.vstack` instead, which flattens a
    `(batch, units)` value into `(iterations * batch, units)` and breaks the
    following `Transpose`. This is the spec's semantics, written from it.
    """

    op_domain = ""

    def _run(self, M, cond, *initial, context=None, body=None, attributes=None,
             bindings=None):
        names_in, names_out = self.body.input_names, self.body.output_names
        num_states = len(names_in) - 2
        feed = dict(context or {})
        states = list(initial)
        scans = [[] for _ in range(len(names_out) - 1 - num_states)]
        keep_going = True if cond is None else bool(cond)
        iteration = 0
        while keep_going and (M is None or iteration < int(M)):
            feed[names_in[0]] = np.array(iteration, dtype=np.int64)
            feed[names_in[1]] = np.array(keep_going)
            feed.update(zip(names_in[2:], states))
            outputs = self._run_body(feed, attributes=attributes, bindings=bindings)
            keep_going = bool(outputs[0])
            states = list(outputs[1 : 1 + num_states])
            for values, value in zip(scans, outputs[1 + num_states :]):
                values.append(value)
            iteration += 1
        stacked = [np.stack(values) if values else np.empty((0,)) for values in scans]
        return self._check_and_fix_outputs(tuple(states + stacked))


_StackingLoop.__name__ = "Loop"


def test_lm_graph_in_onnx_reference_evaluator(lm_export):
    """The Loop graph gives the same logits in onnx's numpy reference runtime."""
    model, result = lm_export
    proto = onnx.load(result.path)
    tokens = np.random.default_rng(11).integers(0, VOCAB, (2, 4)).astype("int32")
    try:
        stock = ReferenceEvaluator(proto).run(None, {"tokens": tokens})[0]
        stock_ok = stock.shape == (2, 4, VOCAB)
    except Exception:  # noqa: BLE001 - the stock Loop flattens scan outputs
        stock_ok = False
    try:
        (reference,) = ReferenceEvaluator(proto, new_ops=[_StackingLoop]).run(
            None, {"tokens": tokens}
        )
    except NotImplementedError as error:  # an op the reference lacks
        pytest.skip(f"onnx.reference cannot run the exported graph: {error}")
    expected = _keras(model, tokens)
    np.testing.assert_allclose(reference, expected, atol=ATOL, rtol=0)
    (runtime,) = _ort(result.path).run(None, {"tokens": tokens})
    np.testing.assert_allclose(reference, runtime, atol=ATOL, rtol=0)
    if stock_ok:  # if onnx fixes its Loop, the stock evaluator must agree too
        np.testing.assert_allclose(stock, expected, atol=ATOL, rtol=0)


def test_parity_failure_names_case_and_position(lm_export, held_out, tmp_path):
    """A model that no longer matches the graph fails, naming where."""
    model, result = lm_export
    perturbed = keras.Model.from_config(model.get_config())
    perturbed.set_weights(model.get_weights())
    dense = perturbed.layers[-1]
    bias = keras.ops.convert_to_numpy(dense.bias).copy()
    feature = 5
    bias[feature] += 50.0  # shifts logit 5 everywhere and makes it the argmax
    dense.bias.assign(bias)
    report_path = tmp_path / "failed.json"
    report = check_parity(
        perturbed, result.path, held_out, batch_sizes=(), report_path=report_path
    )
    assert not report.passed
    assert report.max_abs == pytest.approx(50.0, abs=1e-3)
    for case in report.cases:
        assert not case["ok"]
        assert case["max_abs_index"][2] == feature
        assert case["argmax_agreement"] < 1.0
    assert "'held-out batch 0'" in report.failure
    assert "(batch=" in report.failure and "time=" in report.failure
    assert f"feature={feature})" in report.failure
    assert "argmax agreement" in report.failure
    assert "above the bound 1e-05 + 1e-05·rowmax|keras|" in report.failure
    for case in report.cases:  # worst element: logit 5, ratio ~ 50 / (1e-5·|k|)
        assert case["worst_index"][2] == feature
        assert case["tolerance_ratio"] > 1e4
    text = format_failure(report)
    assert report.failure in text and "FAILED" in text and "FAIL" in report.table()
    assert json.loads(report_path.read_text())["passed"] is False


def test_parity_fails_when_difference_exceeds_atol(lm_export):
    """atol=0, rtol=0 against a perturbation of one recurrent weight by 1e-4."""
    model, result = lm_export
    perturbed = keras.Model.from_config(model.get_config())
    perturbed.set_weights(model.get_weights())
    lstm = perturbed.layers[2]
    kernel = keras.ops.convert_to_numpy(lstm.recurrent_kernel).copy()
    kernel[0, 0] += 1e-4
    lstm.recurrent_kernel.assign(kernel)
    report = check_parity(
        perturbed, result.path, batch_sizes=(1,), sequence_lengths=(6,), atol=0.0,
        rtol=0.0, report_path=None,
    )
    assert not report.passed and report.rtol == 0.0
    assert 0 < report.max_abs < 1e-2
    assert report.tolerance_ratio == float("inf")  # any difference against 0
    assert "'random' (batch=1, length=6)" in report.failure
    assert "above the bound 0 = 0.000e+00" in report.failure


# -- the pass criterion, on synthetic arrays -----------------------------------------


def _row(keras_values, onnx_values, **tolerances):
    from keraseq.export import parity

    base = {"case": "synthetic", "batch": 1, "length": 2}
    return parity._compare_output(
        base, "logits", np.asarray(keras_values, dtype="float64"),
        np.asarray(onnx_values, dtype="float64"),
        tolerances.get("atol", 1e-5), tolerances.get("rtol", 1e-5),
    )


def test_criterion_is_absolute_plus_row_relative():
    """|o - k| <= atol + rtol·rowmax|k| per element (rowmax over the last axis)."""
    from keraseq.export import parity

    # (batch, time, feature) = (1, 2, 3): a row with a large logit, a small row.
    keras_values = np.array([[[10.0, 0.1, -3.0], [0.3, 0.1, -0.2]]])

    # 5e-5 on the 0.1 next to 10: bound 1e-5 + 1e-5·10 = 1.1e-4, ratio 0.4545.
    onnx_values = keras_values.copy()
    onnx_values[0, 0, 1] += 5e-5
    row = _row(keras_values, onnx_values)
    assert row["ok"] and row["argmax_agreement"] == 1.0
    assert row["max_abs"] == pytest.approx(5e-5, rel=1e-6)
    assert row["max_rel"] == pytest.approx(5e-6, rel=1e-6)  # relative to the row's 10
    assert row["tolerance_ratio"] == pytest.approx(5e-5 / 1.1e-4, rel=1e-6)
    assert row["worst_index"] == [0, 0, 1] and row["worst_keras"] == 0.1
    assert row["worst_bound"] == pytest.approx(1.1e-4, rel=1e-12)

    # rtol=0 restores the pure absolute criterion: 5e-5 > 1e-5 fails.
    row = _row(keras_values, onnx_values, rtol=0.0)
    assert not row["ok"]
    assert row["tolerance_ratio"] == pytest.approx(5.0, rel=1e-6)
    assert row["worst_bound"] == 1e-5

    # 4e-5 in the small row (rowmax 0.3): bound 1e-5 + 3e-6 = 1.3e-5, ratio 3.08
    # -> fails, and it is the element furthest past its bound although a larger
    # difference (in the first row) sits elsewhere.
    onnx_values[0, 1, 1] += 4e-5
    onnx_values[0, 0, 0] = 10.0 + 9e-5
    row = _row(keras_values, onnx_values)
    assert not row["ok"] and row["argmax_agreement"] == 1.0
    assert row["tolerance_ratio"] == pytest.approx(4e-5 / 1.3e-5, rel=1e-6)
    assert row["worst_index"] == [0, 1, 1]
    assert row["worst_keras"] == 0.1
    assert row["worst_bound"] == pytest.approx(1.3e-5, rel=1e-12)
    assert row["max_abs"] == pytest.approx(9e-5, rel=1e-6)
    assert row["max_abs_index"] == [0, 0, 0]

    # The failure sentence names the element, its Keras value and the bound.
    text = parity._describe_failure([row], 1e-5, 1e-5)
    assert "'synthetic' (batch=1, length=2), output 'logits'" in text
    assert "at (batch=0, time=1, feature=1), where keras = 0.1 " in text
    assert "above the bound 1e-05 + 1e-05·rowmax|keras| = 1.300e-05" in text
    assert "max |keras - onnx| = 9.000e-05 at (batch=0, time=0, feature=0)" in text

    # Within tolerance but the argmax flips (two logits 5e-6 apart): fails.
    keras_values = np.array([[[1.0, 1.0 - 5e-6], [0.0, 1.0]]])
    onnx_values = np.array([[[1.0, 1.0 + 5e-6], [0.0, 1.0]]])
    row = _row(keras_values, onnx_values)
    assert row["tolerance_ratio"] < 1.0
    assert not row["ok"] and row["argmax_agreement"] == 0.5
    assert row["first_argmax_mismatch"] == [0, 0]
    text = parity._describe_failure([row], 1e-5, 1e-5)
    assert "within the bound" in text
    assert "argmax agreement 0.5000 (first disagreement at (batch=0, time=0))" in text


def test_criterion_edge_values():
    """Identical, NaN/NaN and equal infinities pass; an infinite or NaN
    difference fails even against an infinite bound; atol=rtol=0 demands
    equality."""
    row = _row([[1.0, np.nan, np.inf]], [[1.0, np.nan, np.inf]])
    assert row["ok"] and row["tolerance_ratio"] == 0.0 and row["max_abs"] == 0.0
    for other in ([[1.0, 2.0, np.inf]], [[1.0, np.nan, 3.0]], [[1.0, np.nan, -np.inf]]):
        row = _row([[1.0, np.nan, np.inf]], other)
        assert not row["ok"] and row["tolerance_ratio"] == float("inf")
    row = _row([[1.0, 2.0]], [[1.0, 2.0]], atol=0.0, rtol=0.0)
    assert row["ok"] and row["tolerance_ratio"] == 0.0
    row = _row([[1.0, 2.0]], [[1.0, np.nextafter(2.0, 3.0)]], atol=0.0, rtol=0.0)
    assert not row["ok"] and row["tolerance_ratio"] == float("inf")


# -- a float model, exported from a saved file / run directory ----------------------


@pytest.fixture(scope="module")
def saved_float_export(tmp_path_factory):
    """Float-input SimpleRNN -> LSTM model saved under the current backend in a
    run directory (`model.keras`), exported from the directory path."""
    keras.utils.set_random_seed(11)
    features = keras.Input((None, 4))
    x = keraseq.SimpleRNN(8, return_sequences=True)(features)
    hidden = keraseq.LSTM(6, return_sequences=True)(x)
    model = keras.Model(features, hidden)
    run_dir = tmp_path_factory.mktemp("run")
    model.save(run_dir / "model.keras")
    result = export_onnx(
        run_dir, run_dir / "float.onnx", opset=13,
        input_names=["features"], output_names=["hidden"],
    )
    return model, run_dir, result


def test_saved_model_exports_with_names_and_opset(saved_float_export):
    _, _, result = saved_float_export
    assert result.opset == 13 and result.source_backend == "unknown"
    assert result.input_names == ["features"] and result.output_names == ["hidden"]
    assert result.input_shapes == [["batch", "sequence", 4]]
    assert result.input_dtypes == ["float32"]
    assert result.output_shapes == [["batch", "sequence", 6]]
    proto = onnx.load(result.path)
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 13


def test_saved_model_parity_in_current_backend(saved_float_export):
    """The file is reloaded under the current backend and compared with the graph
    on standard-normal float inputs."""
    model, run_dir, result = saved_float_export
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((2, 9, 4)).astype("float32")]
    report = check_parity(run_dir / "model.keras", result.path, batches,
                          batch_sizes=(2,), training_length=4)
    assert report.passed, report.format_failure()
    assert report.max_abs <= ATOL and report.backend == BACKEND
    assert [c["length"] for c in report.cases] == [9, 1, 4, 12]
    # Same numbers from the in-memory model and from a dict keyed by ONNX name.
    again = check_parity(model, result.path, [{"features": batches[0]}],
                         batch_sizes=())
    assert again.passed and len(again.cases) == 1
    np.testing.assert_allclose(
        _ort(result.path).run(None, {"features": batches[0]})[0],
        _keras(model, batches[0]), atol=ATOL, rtol=0,
    )


# -- several inputs / outputs, masking, a static length, Keras's own LSTM ----------


def test_two_inputs_dict_outputs_masking_static_length_builtin_lstm(tmp_path):
    """One conversion covering the other graph shapes the exporter must handle:
    two named inputs with a fixed length (kept fixed: Keras itself refuses other
    lengths, so parity runs only at that length), dict outputs (one rank 2),
    a padding mask through keraseq's loop, and Keras's own unmasked LSTM, which
    tf2onnx turns into a native ONNX `LSTM` node. The graph is also run by
    onnx's numpy reference evaluator."""
    keras.utils.set_random_seed(3)
    length = 6
    ids = keras.Input((length,), dtype="int32", name="ids")
    extra = keras.Input((length, 3), name="extra")
    embedded = keras.layers.Embedding(VOCAB, 5, mask_zero=True)(ids)
    h = keraseq.SimpleRNN(8, return_sequences=True)(
        keras.layers.Concatenate()([embedded, extra])
    )
    g = keras.layers.LSTM(4, return_sequences=True)(extra)  # unmasked: native LSTM
    model = keras.Model(
        [ids, extra],
        {
            "logits": keras.layers.Dense(VOCAB)(keras.layers.Concatenate()([h, g])),
            "summary": keraseq.LSTM(5)(h),
        },
    )
    result = export_onnx(model, tmp_path / "multi.onnx", opset=MAX_OPSET)
    assert result.opset == MAX_OPSET
    assert result.input_names == ["ids", "extra"]
    assert result.output_names == ["logits", "summary"]  # dict keys, flatten order
    assert result.input_dtypes == ["int32", "float32"]
    assert result.input_shapes == [["batch", length], ["batch", length, 3]]
    assert result.output_shapes == [["batch", length, VOCAB], ["batch", 5]]
    proto = onnx.load(result.path)
    assert {"LSTM", "Loop"} <= {node.op_type for node in proto.graph.node}

    rng = np.random.default_rng(9)
    tokens = rng.integers(1, VOCAB, (2, length)).astype("int32")
    tokens[0, 3:] = 0  # padded (masked) tail
    feats = rng.standard_normal((2, length, 3)).astype("float32")
    report = check_parity(
        model, result.path, [{"ids": tokens, "extra": feats}, [tokens, feats]],
        batch_sizes=(3,),
    )
    assert report.passed, report.format_failure()
    assert report.max_abs <= ATOL
    assert {c["length"] for c in report.cases} == {length}
    assert [c["case"] for c in report.cases] == (
        ["held-out batch 0"] * 2 + ["held-out batch 1"] * 2 + ["random"] * 2
    )
    # The rank-2 output: position (batch, feature), argmax still reported.
    summary = [c for c in report.cases if c["output"] == "summary"]
    assert all(len(c["max_abs_index"]) == 2 for c in summary)
    assert all(c["argmax_agreement"] == 1.0 for c in summary)

    expected = _keras(model, [tokens, feats])  # same shape: compiled already
    feed = {"ids": tokens, "extra": feats}
    runtime = _ort(result.path).run(None, feed)
    reference = ReferenceEvaluator(proto, new_ops=[_StackingLoop]).run(None, feed)
    for name, value, ref in zip(result.output_names, runtime, reference):
        keras_value = expected[name]
        np.testing.assert_allclose(value, keras_value, atol=ATOL, rtol=0)
        np.testing.assert_allclose(ref, keras_value, atol=ATOL, rtol=0)


def test_random_inputs_follow_vocabulary_and_position_table():
    """Random tokens are drawn below the embedding's vocabulary size, and lengths
    past a learned position table are replaced by its size (no conversion)."""
    from keraseq.export import parity

    tokens = keras.Input((None,), dtype="int32")
    inner = keras.Sequential([keras.layers.Dense(4)])
    x = keraseq.TokenAndPositionEmbedding(17, 16, 8)(tokens)
    model = keras.Model(tokens, inner(x))
    assert parity._vocabulary_size(model) == 17
    assert parity._max_sequence_length(model) == 16
    nested = keras.Model(tokens, keras.Sequential([
        keras.Input((None,), dtype="int32"), keras.layers.Embedding(11, 3),
    ])(tokens))
    assert parity._vocabulary_size(nested) == 11
    assert parity._max_sequence_length(nested) is None
    floats = keras.Input((None, 4))
    assert parity._vocabulary_size(keras.Model(floats, floats * 2.0)) == 2
    rng = np.random.default_rng(0)
    drawn = parity._random_input(rng, tokens, 64, 50, 17)
    assert drawn.dtype == np.int32 and drawn.shape == (64, 50)
    assert drawn.min() == 0 and drawn.max() == 16
    normal = parity._random_input(rng, floats, 200, 50, 17)
    assert normal.dtype == np.float32 and normal.shape == (200, 50, 4)
    assert abs(normal.mean()) < 0.02 and abs(normal.std() - 1.0) < 0.02


# -- atomic writes and errors from the conversion ----------------------------------


def test_failed_conversion_leaves_no_file(lm_export, tmp_path, monkeypatch):
    model, _ = lm_export

    def failing_build(*args, **kwargs):
        raise RuntimeError("forced conversion failure")

    def failing_child(source, destination, *args, **kwargs):
        with open(destination, "wb") as handle:  # a half-written graph
            handle.write(b"partial")
        raise RuntimeError("forced conversion failure")

    monkeypatch.setattr(onnx_export, "build_onnx_model", failing_build)
    monkeypatch.setattr(onnx_export, "_run_child", failing_child)
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError, match="forced conversion failure"):
        export_onnx(model, target, method="tf2onnx")
    assert os.listdir(tmp_path) == []
    target.write_bytes(b"previous export")
    with pytest.raises(RuntimeError, match="forced conversion failure"):
        export_onnx(model, target, method="tf2onnx")
    assert target.read_bytes() == b"previous export"
    assert os.listdir(tmp_path) == ["model.onnx"]


@keras.saving.register_keras_serializable(package="keraseq_tests")
class _ParentOnlyLayer(keras.layers.Layer):
    """Registered in the test process only, so a conversion child cannot load it."""

    def call(self, inputs):
        return inputs * 2.0


def test_conversion_child_error_is_propagated(tmp_path):
    """The TensorFlow child cannot deserialize a layer registered only here; its
    error comes back as a ValueError naming the layer, and no file is left."""
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, _ParentOnlyLayer()(inputs))
    target = tmp_path / "custom.onnx"
    target.write_bytes(b"previous export")
    source = tmp_path / "custom.keras"
    model.save(source)
    with pytest.raises(ValueError, match="_ParentOnlyLayer") as info:
        # The child path is what JAX/PyTorch use; on TensorFlow call it directly.
        onnx_export._export_in_subprocess(
            os.fspath(source), os.fspath(target), 17, None, None, BACKEND
        )
    assert "could not be loaded" in str(info.value)
    assert "subprocess" in str(info.value)
    assert target.read_bytes() == b"previous export"
    assert sorted(os.listdir(tmp_path)) == ["custom.keras", "custom.onnx"]


# -- bad arguments -----------------------------------------------------------------


# One test per function, looping over the cases: the shared conftest clears the
# Keras session (a full garbage collection) after every test, which costs ~0.5 s
# each under TensorFlow.
_EXPORT_BAD_ARGUMENTS = [
    ("missing", {}, r"`model_or_path` does not exist.*model_or_path='.*nope.keras'"),
    ("dir", {}, r"`model_or_path` is a directory without a 'model.keras'.*empty_dir"),
    ("text", {}, r"`model_or_path` is not a .keras file.*notes.keras"),
    ("number", {}, r"`model_or_path` must be a keras.Model.*model_or_path=42"),
    ("model", {"opset": 12, "method": "tf2onnx"}, r"`opset` must be between 13 and 18.*opset=12"),
    ("model", {"opset": 19, "method": "tf2onnx"}, r"`opset` must be between 13 and 18.*opset=19"),
    ("model", {"opset": 12}, r"`opset` must be None or an int between 13 and 23.*opset=12"),
    ("model", {"opset": 24}, r"`opset` must be None or an int between 13 and 23.*opset=24"),
    ("model", {"opset": 16, "method": "native"}, r"`opset` must be an int between 17 and 23"),
    ("model", {"method": "onnx"}, r"`method` must be one of \('auto', 'native', 'tf2onnx'\).*'onnx'"),
    ("model", {"opset": "17"}, r"`opset` must be None or an int.*opset='17'"),
    ("model", {"opset": True}, r"`opset` must be None or an int.*opset=True"),
    ("model", {"path": "model.txt"}, r"`path` must end in '.onnx'.*path='model.txt'"),
    ("model", {"path": 3}, r"`path` must be a str.*path=3"),
    ("model", {"path": "/no/such/dir/m.onnx"}, r"directory of `path` does not exist"),
    ("model", {"input_names": ["a", "b"]},
     r"`input_names` must have one name per model input \(1\).*\['a', 'b'\]"),
    ("model", {"input_names": ["bad name"]}, r"`input_names` entries.*bad name"),
    ("model", {"output_names": ["x", "x"]}, r"`output_names` must not repeat"),
    ("model", {"source_backend": 1}, r"`source_backend` must be None or a str"),
]


def test_export_bad_arguments(tmp_path):
    assert (MIN_OPSET, MAX_OPSET) == (13, 18)  # the range the messages state
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes.keras").write_text("not a zip archive")
    inputs = keras.Input((None,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Embedding(5, 2)(inputs))
    subjects = {
        "missing": tmp_path / "nope.keras",
        "dir": tmp_path / "empty_dir",
        "text": tmp_path / "notes.keras",
        "number": 42,
        "model": model,
    }
    for kind, kwargs, match in _EXPORT_BAD_ARGUMENTS:
        kwargs = {"path": tmp_path / "out.onnx", **kwargs}
        with pytest.raises(ValueError, match=match):
            export_onnx(subjects[kind], **kwargs)
    assert sorted(os.listdir(tmp_path)) == ["empty_dir", "notes.keras"]


_PARITY_BAD_ARGUMENTS = [
    ({"onnx_path": "missing.onnx"}, r"`onnx_path` does not exist.*missing.onnx"),
    ({"onnx_path": "model.txt"}, r"`onnx_path` must end in '.onnx'.*model.txt"),
    ({"batch_sizes": (0,)}, r"`batch_sizes` must be a tuple of positive ints.*\(0,\)"),
    ({"sequence_lengths": ()}, r"`sequence_lengths` must be a non-empty.*\(\)"),
    ({"training_length": 0}, r"`training_length` must be None or a positive.*=0"),
    ({"atol": -1.0}, r"`atol` must be a finite number >= 0.*atol=-1.0"),
    ({"atol": float("nan")}, r"`atol` must be a finite.*atol=nan"),
    ({"rtol": -1e-5}, r"`rtol` must be a finite number >= 0.*rtol=-1e-05"),
    ({"rtol": float("inf")}, r"`rtol` must be a finite.*rtol=inf"),
    ({"rtol": True}, r"`rtol` must be a finite.*rtol=True"),
    ({"rtol": "1e-5"}, r"`rtol` must be a finite.*rtol='1e-5'"),
    ({"seed": "a"}, r"`seed` must be an int.*seed='a'"),
    ({"inputs": np.zeros((1, 2))}, r"`inputs` must be None or a list of batches"),
    ({"inputs": [np.zeros((1, 2, 3))]}, r"`inputs\[0\]` must have rank 2"),
    ({"inputs": [{"other": np.zeros((1, 2))}]}, r"`inputs\[0\]` has no entry"),
    ({"report_path": 5}, r"`report_path` must be None or a file path.*=5"),
    ({"model_or_path": "nope.keras"}, r"`model_or_path` does not exist.*nope.keras"),
    ({"batch_sizes": ()}, r"Nothing to compare.*batch_sizes=\(\)"),
]


def test_parity_bad_arguments(lm_export):
    model, result = lm_export
    for kwargs, match in _PARITY_BAD_ARGUMENTS:
        kwargs = {"model_or_path": model, "onnx_path": result.path, **kwargs}
        with pytest.raises(ValueError, match=match):
            check_parity(**kwargs)


def test_parity_rejects_graph_with_other_inputs(lm_export, saved_float_export):
    """A graph whose input count differs from the model's is refused."""
    _, _, float_result = saved_float_export
    two_inputs = [keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")]
    model = keras.Model(two_inputs, keras.layers.Add()(two_inputs))
    with pytest.raises(ValueError, match=r"`onnx_path` has 1 input\(s\) but the model has 2"):
        check_parity(model, float_result.path)


def test_stateful_model_is_refused(tmp_path):
    import keraseq

    x = keras.Input(batch_shape=(2, None, 4))
    model = keras.Model(x, keraseq.LSTM(3, stateful=True)(x))
    target = tmp_path / "stateful.onnx"
    with pytest.raises(ValueError, match="stateful"):
        export_onnx(model, target)
    assert not target.exists()
