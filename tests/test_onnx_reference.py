"""keraseq's layers against the ONNX reference implementation
(`onnx.reference.ReferenceEvaluator`) of the `RNN`, `LSTM` (forward and reverse)
and opset-23 `Attention` operators (ReLU RNN: onnxruntime's kernel, as the
reference evaluator implements only Tanh/Affine RNN activations), with the weights mapped to ONNX layout by
`keraseq.export.onnx_weights` (the single place that mapping lives).
Tolerance 1e-5 (float32)."""

import keras
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import keraseq
from keraseq.export.onnx_weights import (
    attention_output,
    attention_projections,
    lstm_to_onnx,
    simple_rnn_to_onnx,
)

TOL = 1e-5
OPSET = 23


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def randomize(layer, rng, scale=0.5):
    layer.set_weights(
        [rng.normal(0.0, scale, w.shape).astype("float32") for w in layer.get_weights()]
    )


def run_recurrent_node(op_type, weights, x, states, units, **attributes):
    """One ONNX RNN/LSTM node, layout 0 (time-major), evaluated by the reference."""
    w, r, b = weights
    state_names = ["initial_h", "initial_c"][: len(states)]
    outputs = ["Y", "Y_h", "Y_c"][: 1 + len(states)]
    node = helper.make_node(
        op_type, ["X", "W", "R", "B", "", *state_names], outputs,
        hidden_size=units, **attributes,
    )
    batch = x.shape[0]
    graph = helper.make_graph(
        [node],
        f"{op_type.lower()}_reference",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, batch, x.shape[2]])]
        + [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, batch, units])
           for n in state_names],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    feeds = {"X": np.transpose(x, (1, 0, 2))}  # (time, batch, features)
    feeds.update({n: s[None] for n, s in zip(state_names, states)})
    if attributes.get("activations") == ["Relu"]:
        # onnx.reference's RNN knows only Tanh and Affine: use onnxruntime's kernel.
        import onnxruntime

        session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        y, *final = session.run(None, feeds)
    else:
        y, *final = ReferenceEvaluator(model).run(None, feeds)
    return np.transpose(y[:, 0], (1, 0, 2)), [f[0] for f in final]  # (batch, time, units)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("batch,length", [(1, 1), (3, 7), (2, 13)])
def test_lstm_matches_onnx_lstm(direction, batch, length, rng):
    units, features = 5, 4
    layer = keraseq.LSTM(units, return_sequences=True, return_state=True,
                         go_backwards=direction == "reverse")
    layer.build((None, None, features))
    randomize(layer, rng)
    x = rng.normal(size=(batch, length, features)).astype("float32")
    h0 = rng.normal(size=(batch, units)).astype("float32")
    c0 = rng.normal(size=(batch, units)).astype("float32")
    y, h, c = (to_np(t) for t in layer(x, initial_state=[h0, c0]))
    onnx_y, (onnx_h, onnx_c) = run_recurrent_node(
        "LSTM", lstm_to_onnx(*layer.get_weights()), x, [h0, c0], units, direction=direction
    )
    if direction == "reverse":
        # ONNX keeps Y in input time order; Keras returns the processing order.
        onnx_y = onnx_y[:, ::-1]
    np.testing.assert_allclose(y, onnx_y, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, onnx_h, atol=TOL, rtol=0)
    np.testing.assert_allclose(c, onnx_c, atol=TOL, rtol=0)


@pytest.mark.parametrize("activation,onnx_activation", [("tanh", "Tanh"), ("relu", "Relu")])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_simple_rnn_matches_onnx_rnn(activation, onnx_activation, direction, rng):
    units, features, batch, length = 6, 3, 4, 9
    layer = keraseq.SimpleRNN(units, activation=activation, return_sequences=True,
                              return_state=True, go_backwards=direction == "reverse")
    layer.build((None, None, features))
    randomize(layer, rng, scale=0.3)
    x = rng.normal(size=(batch, length, features)).astype("float32")
    h0 = rng.normal(size=(batch, units)).astype("float32")
    y, h = (to_np(t) for t in layer(x, initial_state=[h0]))
    onnx_y, (onnx_h,) = run_recurrent_node(
        "RNN", simple_rnn_to_onnx(*layer.get_weights()), x, [h0], units,
        direction=direction, activations=[onnx_activation],
    )
    if direction == "reverse":
        onnx_y = onnx_y[:, ::-1]
    np.testing.assert_allclose(y, onnx_y, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, onnx_h, atol=TOL, rtol=0)


def run_attention_node(q, k, v, mask=None, is_causal=False):
    names = ["Q", "K", "V"] + (["attn_mask"] if mask is not None else [])
    node = helper.make_node("Attention", names, ["Y"], is_causal=int(is_causal))
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Q", "K", "V")]
    if mask is not None:
        inputs.append(helper.make_tensor_value_info("attn_mask", TensorProto.BOOL, None))
    graph = helper.make_graph(
        [node], "attention_reference", inputs,
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    feeds = {"Q": q.astype("float32"), "K": k.astype("float32"), "V": v.astype("float32")}
    if mask is not None:
        feeds["attn_mask"] = mask
    return ReferenceEvaluator(model).run(None, feeds)[0]


@pytest.mark.parametrize(
    "batch,target,source,causal",
    [(1, 1, 1, False), (2, 5, 5, False), (3, 4, 7, False), (1, 1, 1, True), (2, 5, 5, True)],
)
def test_attention_matches_onnx_attention(batch, target, source, causal, rng):
    heads, key_dim, value_dim, dim = 2, 3, 5, 8
    layer = keraseq.MultiHeadAttention(heads, key_dim, value_dim=value_dim)
    query = rng.normal(size=(batch, target, dim)).astype("float32")
    value = rng.normal(size=(batch, source, dim)).astype("float32")
    layer(query, value)
    randomize(layer, rng)
    weights = layer.get_weights()
    expected = to_np(layer(query, value, use_causal_mask=causal))
    q, k, v = attention_projections(weights, query, value)
    context = run_attention_node(q, k, v, is_causal=causal)
    np.testing.assert_allclose(attention_output(weights, context), expected, atol=TOL, rtol=0)


def test_attention_padding_mask_matches_onnx_attention(rng):
    heads, key_dim, dim, batch, length = 2, 4, 8, 3, 6
    layer = keraseq.MultiHeadAttention(heads, key_dim)
    x = rng.normal(size=(batch, length, dim)).astype("float32")
    layer(x, x)
    randomize(layer, rng)
    weights = layer.get_weights()
    keep = np.ones((batch, length), bool)
    keep[1, 4:] = False  # right padding
    keep[2, :2] = False  # left padding
    mask = keep[:, None, :] & np.ones((batch, length, length), bool)  # (batch, T, S)
    expected = to_np(layer(x, x, attention_mask=mask))
    q, k, v = attention_projections(weights, x, x)
    context = run_attention_node(q, k, v, mask=mask[:, None])  # (batch, 1, T, S)
    np.testing.assert_allclose(attention_output(weights, context), expected, atol=TOL, rtol=0)
