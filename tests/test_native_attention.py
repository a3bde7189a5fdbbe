"""Tests of keraseq.export.native_attention: attention, transformer blocks and
positional embeddings as native ONNX graphs (one opset-23 `Attention` node per
attention layer), full and streaming (prefill / decode with a key/value cache).

Reference: the Keras model itself under the current backend; onnxruntime must
reproduce it to 1e-5 absolute + 1e-5 relative to each row's largest |value|
(float32 round-off through two layers and a vocabulary-wide matmul on logits
of order 1; the sine positions are computed in float32 in the graph and in
float64 by Keras, 1e-6 apart).
"""

import json

import keras
import numpy as np
import onnx
import onnxruntime
import pytest

from keraseq.export import export_onnx
from keraseq.export.native import NativeUnsupported, build_native_model, export_native
from keraseq.export.native import export_streaming
from keraseq.layers.attention import MultiHeadAttention
from keraseq.layers.embeddings import TokenAndPositionEmbedding
from keraseq.layers.positional import PositionEmbedding, SinePositionEncoding
from keraseq.layers.transformer import TransformerBlock
from keraseq.models import language_model

VOCAB = 11
WIDTH = 16
HEADS = 2
LAYERS = 2


def _randomize(model, rng, std=0.4):
    model.set_weights(
        [rng.normal(0.0, std, w.shape).astype("float32") for w in model.get_weights()]
    )
    return model


def _learned_lm():
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = TokenAndPositionEmbedding(VOCAB, 48, WIDTH, positional="learned", name="embedding")(tokens)
    for index in range(LAYERS):
        x = TransformerBlock(HEADS, 4 * WIDTH, name=f"block_{index}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    return keras.Model(tokens, keras.layers.Dense(VOCAB, name="logits")(x))


LMS = {
    "sine": lambda: language_model(
        "transformer", VOCAB, units=WIDTH, num_heads=HEADS, num_layers=LAYERS),
    "learned": _learned_lm,
}


def _keras(model, *inputs):
    inputs = list(inputs) if len(inputs) > 1 else inputs[0]
    if keras.backend.backend() == "jax":
        # One jitted call: eager JAX compiles every op anew for each shape (~2 s).
        out = model.predict_on_batch(inputs)
    else:
        out = model(inputs, training=False)
    return keras.ops.convert_to_numpy(out).astype("float64")


def _session(proto_or_path):
    if isinstance(proto_or_path, onnx.ModelProto):
        proto_or_path = proto_or_path.SerializeToString()
    return onnxruntime.InferenceSession(proto_or_path, providers=["CPUExecutionProvider"])


def _assert_close(got, expected):
    assert got.shape == expected.shape
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    tolerance = np.broadcast_to(1e-5 + 1e-5 * scale, expected.shape)
    np.testing.assert_array_less(np.abs(got - expected), tolerance)


def _op_types(proto):
    return [node.op_type for node in proto.graph.node]


def dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("positional", list(LMS))
def test_transformer_lm_matches_keras(positional, tmp_path, rng):
    model = _randomize(LMS[positional](), rng)
    path = export_native(model, tmp_path / "lm.onnx")
    proto = onnx.load(path)
    ops = _op_types(proto)
    assert ops.count("Attention") == LAYERS
    assert "Loop" not in ops and "Scan" not in ops
    assert {o.domain: o.version for o in proto.opset_import} == {"": 23}
    assert [i.name for i in proto.graph.input] == ["tokens"]
    assert dims(proto.graph.input[0]) == ["batch", "sequence"]
    assert dims(proto.graph.output[0]) == ["batch", "sequence", VOCAB]
    session = _session(path)
    for batch in (1, 3):
        for length in (1, 7, 40):
            tokens = rng.integers(0, VOCAB, (batch, length)).astype("int32")
            (got,) = session.run(None, {"tokens": tokens})
            _assert_close(got, _keras(model, tokens))


def test_one_attention_node_per_attention_layer(tmp_path):
    tokens = keras.Input((None,), dtype="int32")
    x = TokenAndPositionEmbedding(VOCAB, None, 8, positional="sine")(tokens)
    x = MultiHeadAttention(2, 4)(x, x, use_causal_mask=True)
    x = TransformerBlock(2, 16)(x)
    x = TransformerBlock(4, 16)(x)
    proto = onnx.load(export_native(keras.Model(tokens, x), tmp_path / "m.onnx"))
    ops = _op_types(proto)
    assert ops.count("Attention") == 3
    assert "Loop" not in ops and "Softmax" not in ops
    heads = sorted(
        next(a.i for a in n.attribute if a.name == "q_num_heads")
        for n in proto.graph.node if n.op_type == "Attention")
    assert heads == [2, 2, 4]
    onnx.checker.check_model(proto, full_check=True)


def test_padding_and_causal_masks(tmp_path, rng):
    # Embedding(mask_zero=True) masks: Keras hands them to the attention layer at
    # call time (not recorded in the graph) and to the block as `mask`.
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = TokenAndPositionEmbedding(VOCAB, 12, 8, mask_zero=True)(tokens)
    x = MultiHeadAttention(2, 4, name="mha")(x, x, use_causal_mask=True)
    x = TransformerBlock(2, 16, name="block")(x)
    model = _randomize(keras.Model(tokens, keras.layers.Dense(VOCAB)(x)), rng)
    ids = rng.integers(1, VOCAB, (4, 9)).astype("int32")
    ids[1, 6:] = 0  # right padding
    ids[2, :3] = 0  # left padding: causal rows 0-2 see no key at all
    ids[3, :] = 0  # every row of this sequence is fully masked
    proto = build_native_model(model)
    assert _op_types(proto).count("Attention") == 2
    (got,) = _session(proto).run(None, {"tokens": ids})
    expected = _keras(model, ids)
    assert np.isfinite(got).all()
    _assert_close(got, expected)
    # A padded query's attention output is the output bias alone (weights 0):
    # every fully masked row of the all-padding sequence gives the same logits.
    np.testing.assert_allclose(got[3], np.broadcast_to(got[3, :1], got[3].shape), atol=1e-6)


def test_explicit_masks_as_inputs(rng):
    x = keras.Input((None, 6), name="x")
    query_mask = keras.Input((None,), dtype="bool", name="query_mask")
    value_mask = keras.Input((None,), dtype="bool", name="value_mask")
    attention_mask = keras.Input((None, None), dtype="bool", name="attention_mask")
    layer = MultiHeadAttention(3, 2, value_dim=4, output_shape=(2, 5), name="mha")
    y = layer(x, x, query_mask=query_mask, value_mask=value_mask,
              attention_mask=attention_mask, use_causal_mask=True)
    model = _randomize(keras.Model([x, query_mask, value_mask, attention_mask], y), rng)
    batch, length = 3, 7
    feeds = {
        "x": rng.normal(size=(batch, length, 6)).astype("float32"),
        "query_mask": rng.random((batch, length)) > 0.2,
        "value_mask": rng.random((batch, length)) > 0.3,
        "attention_mask": rng.random((batch, length, length)) > 0.3,
    }
    feeds["value_mask"][2] = False  # every row of batch element 2 fully masked
    proto = build_native_model(model)
    assert [i.name for i in proto.graph.input] == list(feeds)
    (got,) = _session(proto).run(None, feeds)
    expected = _keras(model, *feeds.values())
    assert got.shape == (batch, length, 2, 5)
    _assert_close(got.reshape(batch, length, 10), expected.reshape(batch, length, 10))
    bias = keras.ops.convert_to_numpy(layer._output_dense.bias)
    np.testing.assert_allclose(got[2], np.broadcast_to(bias, got[2].shape), atol=1e-6)


def test_block_with_padding_mask_input(rng):
    x = keras.Input((None, 8), name="x")
    padding = keras.Input((None,), dtype="bool", name="padding")
    y = TransformerBlock(2, 16, activation="relu", name="block")(x, padding_mask=padding)
    model = _randomize(keras.Model([x, padding], y), rng)
    inputs = rng.normal(size=(3, 6, 8)).astype("float32")
    keep = np.ones((3, 6), bool)
    keep[0, 4:] = False
    keep[2] = False  # an all-padding sequence: every attention row fully masked
    proto = build_native_model(model)
    assert _op_types(proto).count("Attention") == 1
    (got,) = _session(proto).run(None, {"x": inputs, "padding": keep})
    _assert_close(got, _keras(model, inputs, keep))


@pytest.mark.parametrize("causal", [False, True])
def test_cross_attention_other_lengths(causal, tmp_path, rng):
    # Issue 4 part 5: query length 5, key/value length 7 at export; exported once,
    # run at (batch, query length, key length) = (1, 5, 7) and (3, 9, 4).
    query = keras.Input((None, 8))
    memory = keras.Input((None, 6))
    y = MultiHeadAttention(2, 3, value_dim=5, name="cross")(
        query, memory, use_causal_mask=causal)
    model = _randomize(keras.Model([query, memory], y), rng)
    model([np.zeros((2, 5, 8), "float32"), np.zeros((2, 7, 6), "float32")])
    path = export_native(model, tmp_path / "cross.onnx")
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["input_0", "input_1"]
    proto = onnx.load(path)
    assert _op_types(proto).count("Attention") == 1
    # Two length names: onnxruntime would otherwise assume equal lengths.
    assert [dims(v) for v in proto.graph.input] == [
        ["batch", "sequence", 8], ["batch", "sequence_1", 6]]
    for batch, target, source in ((1, 5, 7), (3, 9, 4)):
        q = rng.normal(size=(batch, target, 8)).astype("float32")
        m = rng.normal(size=(batch, source, 6)).astype("float32")
        (got,) = session.run(None, {"input_0": q, "input_1": m})
        _assert_close(got, _keras(model, q, m))


def _cache_feeds(cache):
    """present_* of the previous call → past_* of the next."""
    return {name.replace("present", "past"): value for name, value in cache.items()}


def _decode(session, tokens, cache):
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(None, {"tokens": tokens, **_cache_feeds(cache)})
    return outputs[0], dict(zip(names[1:], outputs[1:]))


@pytest.mark.parametrize("positional", list(LMS))
def test_prefill_then_decode_matches_full_sequence(positional, tmp_path, rng):
    model = _randomize(LMS[positional](), rng)
    written = export_streaming(model, tmp_path)
    assert sorted(written) == ["decode", "prefill"]
    prefill, decode = _session(written["prefill"]), _session(written["decode"])
    for path, kind in ((written["prefill"], "prefill"), (written["decode"], "decode")):
        proto = onnx.load(path)
        meta = json.loads({p.key: p.value for p in proto.metadata_props}["keraseq_streaming"])
        assert meta == {"kind": kind, "num_layers": LAYERS, "num_heads": HEADS,
                        "head_dim": WIDTH // HEADS}
        assert _op_types(proto).count("Attention") == LAYERS
    cache_names = [f"present_{kind}_{i}" for i in range(LAYERS) for kind in ("key", "value")]
    assert [o.name for o in prefill.get_outputs()] == ["logits", *cache_names]
    assert [i.name for i in decode.get_inputs()] == [
        "tokens", *[n.replace("present", "past") for n in cache_names]]

    tokens = rng.integers(0, VOCAB, (3, 13)).astype("int32")
    expected = _keras(model, tokens)
    # Prefill 1 token, then decode the rest one token at a time.
    names = [o.name for o in prefill.get_outputs()]
    logits, *cache = prefill.run(None, {"tokens": tokens[:, :1]})
    cache = dict(zip(names[1:], cache))
    steps = [logits]
    for t in range(1, tokens.shape[1]):
        logits, cache = _decode(decode, tokens[:, t : t + 1], cache)
        steps.append(logits)
    assert cache["present_key_1"].shape == (3, HEADS, 13, WIDTH // HEADS)
    _assert_close(np.concatenate(steps, axis=1), expected)
    # Two chunks: prefill 5 tokens, decode the other 8 at once (causal within
    # the chunk, offset by the 5 cached positions).
    first, *cache = prefill.run(None, {"tokens": tokens[:, :5]})
    second, _ = _decode(decode, tokens[:, 5:], dict(zip(names[1:], cache)))
    _assert_close(np.concatenate([first, second], axis=1), expected)


def test_decode_one_query_attends_to_all_six_cached_keys(rng):
    model = _randomize(LMS["sine"](), rng)
    prefill = _session(build_native_model(model, mode="prefill"))
    decode = _session(build_native_model(model, mode="decode"))
    tokens = rng.integers(0, VOCAB, (2, 7)).astype("int32")
    names = [o.name for o in prefill.get_outputs()]
    _, *cache = prefill.run(None, {"tokens": tokens[:, :6]})
    cache = dict(zip(names[1:], cache))
    assert cache["present_key_0"].shape[2] == 6
    got, present = _decode(decode, tokens[:, 6:], cache)
    assert present["present_value_0"].shape[2] == 7
    # Position 6 of the full-sequence model sees tokens 0-6.
    _assert_close(got[:, 0], _keras(model, tokens)[:, 6])
    # Every cached key matters: changing the first one changes the step.
    cache["present_key_0"] = cache["present_key_0"].copy()
    cache["present_key_0"][:, :, 0] += 1.0
    changed, _ = _decode(decode, tokens[:, 6:], cache)
    assert np.abs(changed - got).max() > 1e-3


def test_positions_with_start_index_and_long_sine(rng):
    x = keras.Input((None, 6))
    sine = SinePositionEncoding(name="sine")(x, start_index=5000)
    learned = PositionEmbedding(20, name="learned")(x, start_index=3)
    y = keras.layers.Add()([x, sine, learned])
    model = _randomize(keras.Model(x, y), rng)
    session = _session(build_native_model(model))
    for length in (1, 17):
        inputs = rng.normal(size=(2, length, 6)).astype("float32")
        (got,) = session.run(None, {"input_0": inputs})
        _assert_close(got, _keras(model, inputs))
    # Sine positions at any length: 6000 steps, against Keras's float64 table.
    x = keras.Input((None, 8))
    model = keras.Model(x, SinePositionEncoding(max_wavelength=500)(x))
    inputs = np.zeros((1, 6000, 8), "float32")
    (got,) = _session(build_native_model(model)).run(None, {"input_0": inputs})
    np.testing.assert_allclose(got, _keras(model, inputs), atol=1e-5, rtol=0)


def test_export_onnx_auto_picks_native_for_transformer(tmp_path, rng):
    model = _randomize(LMS["sine"](), rng)
    result = export_onnx(model, tmp_path / "lm.onnx")
    assert result.method == "native" and result.fallback_reason is None
    assert result.opset == 23  # the Attention operator's opset, raised from 17
    assert result.input_names == ["tokens"] and result.output_names == ["logits"]
    tokens = rng.integers(0, VOCAB, (2, 9)).astype("int32")
    (got,) = _session(result.path).run(None, {"tokens": tokens})
    _assert_close(got, _keras(model, tokens))


def _scores_model():
    x = keras.Input((None, 4))
    y, scores = MultiHeadAttention(2, 2, name="scored")(x, x, return_attention_scores=True)
    return keras.Model(x, [y, scores])


def test_unsupported_attention_raises_and_auto_falls_back(tmp_path, rng):
    model = _randomize(_scores_model(), rng)
    with pytest.raises(NativeUnsupported, match="'scored' \\(MultiHeadAttention\\).*"
                       "return_attention_scores") as info:
        export_native(model, tmp_path / "native.onnx")
    assert "tf2onnx" in str(info.value)
    assert not (tmp_path / "native.onnx").exists()
    result = export_onnx(model, tmp_path / "auto.onnx")
    assert result.method == "tf2onnx"
    assert "'scored'" in result.fallback_reason
    assert "return_attention_scores" in result.fallback_reason
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    got = _session(result.path).run(None, {result.input_names[0]: x})
    expected = [keras.ops.convert_to_numpy(t) for t in model(x, training=False)]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "build, mode, match",
    [
        (lambda: _block_model(use_causal_mask=False), "prefill",
         "'block' \\(TransformerBlock\\).*not causal"),
        (lambda: _block_model(mask_zero=True), "decode", "'block'.*without masks"),
        (lambda: keras.Model(*_embedding_only()), "decode", "no attention layer"),
        (lambda: _block_model(), "step", "'block'.*mode='step'"),
    ],
)
def test_streaming_refusals(build, mode, match):
    with pytest.raises(NativeUnsupported, match=match):
        build_native_model(build(), mode=mode)


def _block_model(use_causal_mask=True, mask_zero=False):
    tokens = keras.Input((None,), dtype="int32")
    x = TokenAndPositionEmbedding(VOCAB, 10, 8, mask_zero=mask_zero)(tokens)
    x = TransformerBlock(2, 16, use_causal_mask=use_causal_mask, name="block")(x)
    return keras.Model(tokens, keras.layers.Dense(VOCAB)(x))


def _embedding_only():
    tokens = keras.Input((None,), dtype="int32")
    return tokens, TokenAndPositionEmbedding(VOCAB, 10, 8)(tokens)
