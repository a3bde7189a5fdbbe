"""Tests for keraseq.layers.attention.MultiHeadAttention.

References: Keras's own `MultiHeadAttention` with copied weights, `torch.nn.
MultiheadAttention` (CPU, float32) with mapped weights, and a float64 numpy
implementation of the same math. Tolerance is 1e-5 in float32 throughout.
"""

import keras
import numpy as np
import pytest
import torch
from keras import ops

from keraseq.layers.attention import MultiHeadAttention

ATOL = 1e-5
# One small set of shapes throughout: JAX compiles every eager op per shape,
# so sharing shapes keeps the file fast. Queries (B, T, D), values (B, S, D).
B, T, S, D = 2, 5, 7, 6
HEADS, KEY_DIM = 2, 3


def to_np(x):
    return ops.convert_to_numpy(x)


def named_weights(layer):
    """{'query/kernel': array, ...} from a built attention layer."""
    return {
        "/".join(w.path.split("/")[-2:]): to_np(w) for w in layer.weights
    }


def numpy_attention(query, value, key, weights, mask=None, causal=False):
    """float64 reference: masked softmax(QK^T/sqrt(d)) V, empty rows -> 0."""
    f64 = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    query, value, key = (np.asarray(t, np.float64)
                         for t in (query, value, key))

    def project(x, name):
        y = np.einsum("btd,dnk->btnk", x, f64[f"{name}/kernel"])
        return y + f64.get(f"{name}/bias", 0.0)

    q = project(query, "query")
    k = project(key, "key")
    v = project(value, "value")
    key_dim = q.shape[-1]
    logits = np.einsum("btnk,bsnk->bnts", q, k) / np.sqrt(key_dim)
    b, t, s = query.shape[0], query.shape[1], value.shape[1]
    allowed = np.ones((b, t, s), bool)
    if mask is not None:
        allowed &= np.broadcast_to(np.asarray(mask, bool), (b, t, s))
    if causal:
        allowed &= np.tril(np.ones((t, s), bool))[None]
    allowed = allowed[:, None]  # (B, 1, T, S)
    logits = np.where(allowed, logits, -np.inf)
    row_max = np.max(np.where(allowed, logits, -1e300), -1, keepdims=True)
    e = np.where(allowed, np.exp(logits - row_max), 0.0)
    denom = e.sum(-1, keepdims=True)
    w = np.where(denom > 0, e / np.where(denom > 0, denom, 1.0), 0.0)
    ctx = np.einsum("bnts,bsnv->btnv", w, v)
    out = np.einsum("btnv,nv...->bt...", ctx, f64["attention_output/kernel"])
    out = out + f64.get("attention_output/bias", 0.0)
    return out, w


def make_pair(rng, q_shape, v_shape, k_shape=None, **kwargs):
    """Our layer and Keras's, built on the same shapes, same weights."""
    ours = MultiHeadAttention(**kwargs)
    ref = keras.layers.MultiHeadAttention(**kwargs)
    q = rng.normal(size=q_shape).astype("float32")
    v = rng.normal(size=v_shape).astype("float32")
    k = None if k_shape is None else rng.normal(size=k_shape).astype("float32")
    ref(q, v, key=k)
    ours(q, v, key=k)
    ours.set_weights(ref.get_weights())
    return ours, ref, q, v, k


# --------------------------------------------------------------------------
# Weights: names, shapes and order as in Keras.


def test_weights_match_keras_layout():
    def layout(layer):
        return [("/".join(w.path.split("/")[-2:]), tuple(w.shape))
                for w in layer.weights]

    for use_bias in (True, False):
        kwargs = dict(num_heads=3, key_dim=4, value_dim=2, use_bias=use_bias,
                      output_shape=7)
        ours = MultiHeadAttention(**kwargs)
        ref = keras.layers.MultiHeadAttention(**kwargs)
        shapes = ((1, 5, 6), (1, 4, 3), (1, 4, 8))  # query, value, key
        ours.build(*shapes)
        ref.build(*shapes)
        assert layout(ours) == layout(ref)
        assert len(ours.weights) == (8 if use_bias else 4)
        if use_bias:
            assert layout(ours)[1] == ("query/bias", (3, 4))
            assert layout(ours)[-1] == ("attention_output/bias", (7,))
    expected = [("query/kernel", (6, 3, 4)), ("key/kernel", (8, 3, 4)),
                ("value/kernel", (3, 3, 2)),
                ("attention_output/kernel", (3, 2, 7))]
    assert [x for x in layout(ours) if x[0].endswith("kernel")] == expected


# --------------------------------------------------------------------------
# Parity with keras.layers.MultiHeadAttention.


@pytest.mark.parametrize(
    "use_fused,use_bias,output_shape",
    [(True, True, None), (False, False, 5), (True, False, 5),
     (False, True, None)],
)
def test_matches_keras(rng, use_fused, use_bias, output_shape):
    for k_shape in (None, (B, S, 4)):
        ours, ref, q, v, k = make_pair(
            rng, (B, T, D), (B, S, D), k_shape, num_heads=HEADS,
            key_dim=KEY_DIM,
            use_bias=use_bias, output_shape=output_shape)
        ours.use_fused = use_fused
        got = to_np(ours(q, v, key=k))
        want = to_np(ref(q, v, key=k))
        assert got.shape == (B, T, output_shape or D)
        np.testing.assert_allclose(got, want, atol=ATOL)
        ref_np, _ = numpy_attention(q, v, v if k is None else k,
                                    named_weights(ours))
        np.testing.assert_allclose(got, ref_np, atol=ATOL)


def test_output_shape_tuple_matches_keras(rng):
    ours, ref, q, v, _ = make_pair(rng, (B, T, D), (B, S, D), num_heads=HEADS,
                                   key_dim=KEY_DIM, output_shape=(2, 5))
    got = to_np(ours(q, v))
    assert got.shape == (B, T, 2, 5)
    np.testing.assert_allclose(got, to_np(ref(q, v)), atol=ATOL)
    assert ours.compute_output_shape((B, T, D), (B, S, D)) == (B, T, 2, 5)


def _mask_without_empty_rows(rng, shape):
    mask = rng.random(shape) > 0.4
    mask[..., 0] = True  # every query keeps at least one key
    return mask


@pytest.mark.parametrize("use_fused", [True, False])
def test_masks_match_keras(rng, use_fused):
    ours, ref, q, v, _ = make_pair(rng, (B, T, D), (B, T, D), num_heads=HEADS,
                                   key_dim=KEY_DIM)
    ours.use_fused = use_fused
    attention_mask = _mask_without_empty_rows(rng, (B, T, T))
    value_mask = _mask_without_empty_rows(rng, (B, T))
    cases = [
        dict(attention_mask=attention_mask),
        dict(use_causal_mask=True),
        dict(attention_mask=attention_mask, use_causal_mask=True),
        dict(value_mask=value_mask),
        dict(value_mask=value_mask, use_causal_mask=True),
        dict(attention_mask=attention_mask.astype("int32")),
        dict(attention_mask=attention_mask[:1]),  # broadcast over batch
    ]
    for case in cases:
        got = to_np(ours(q, v, **case))
        want = to_np(ref(q, v, **case))
        np.testing.assert_allclose(got, want, atol=ATOL, err_msg=str(case))
    # key_mask acts on the columns like value_mask.
    got = to_np(ours(q, v, key=v, key_mask=value_mask))
    want = to_np(ref(q, v, attention_mask=value_mask[:, None, :]))
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_attention_scores_match_keras(rng):
    ours, ref, q, v, _ = make_pair(rng, (B, T, D), (B, S, D), num_heads=HEADS,
                                   key_dim=KEY_DIM)
    mask = _mask_without_empty_rows(rng, (B, T, S))
    out, scores = ours(q, v, attention_mask=mask, return_attention_scores=True)
    out_ref, scores_ref = ref(q, v, attention_mask=mask,
                              return_attention_scores=True)
    assert tuple(scores.shape) == (B, HEADS, T, S)
    np.testing.assert_allclose(to_np(scores), to_np(scores_ref), atol=ATOL)
    np.testing.assert_allclose(to_np(out), to_np(out_ref), atol=ATOL)
    np.testing.assert_array_equal(
        to_np(scores) * (~mask[:, None]), np.zeros((B, HEADS, T, S)))
    _, w = numpy_attention(q, v, v, named_weights(ours), mask=mask)
    np.testing.assert_allclose(to_np(scores), w, atol=ATOL)


@pytest.mark.parametrize("use_fused", [True, False])
def test_value_dim_differs_from_key_dim(rng, use_fused):
    # Keras's own layer fails on JAX here, so the reference is numpy.
    layer = MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM, value_dim=5,
                               use_fused=use_fused)
    q = rng.normal(size=(B, T, D)).astype("float32")
    v = rng.normal(size=(B, S, 4)).astype("float32")
    mask = _mask_without_empty_rows(rng, (B, T, S))
    out, scores = layer(q, v, attention_mask=mask, use_causal_mask=True,
                        return_attention_scores=True)
    ref_out, ref_w = numpy_attention(q, v, v, named_weights(layer), mask=mask,
                                     causal=True)
    np.testing.assert_allclose(to_np(out), ref_out, atol=ATOL)
    np.testing.assert_allclose(to_np(scores), ref_w, atol=ATOL)
    np.testing.assert_allclose(
        to_np(layer(q, v, attention_mask=mask, use_causal_mask=True)),
        ref_out, atol=ATOL)
    assert layer.weights[-2].shape == (HEADS, 5, D)


# --------------------------------------------------------------------------
# Masks from Keras masking and explicit query/value masks.


@pytest.mark.parametrize("use_fused", [True, False])
def test_keras_mask_from_embedding(rng, use_fused):
    vocab, length, dim = 11, T, D
    ids = rng.integers(1, vocab, size=(B, length)).astype("int32")
    ids[0, 4:] = 0
    ids[1, 2:] = 0
    valid = ids != 0

    def model_with(mha):
        inputs = keras.Input((length,), dtype="int32")
        x = keras.layers.Embedding(vocab, dim, mask_zero=True)(inputs)
        return keras.Model(inputs, mha(x, x))

    ours = MultiHeadAttention(HEADS, KEY_DIM, use_fused=use_fused)
    ref = keras.layers.MultiHeadAttention(HEADS, KEY_DIM)
    ours_model, ref_model = model_with(ours), model_with(ref)
    ours_model.set_weights(ref_model.get_weights())
    got, want = to_np(ours_model(ids)), to_np(ref_model(ids))
    # Real tokens agree with Keras; padded query rows see no key at all:
    # Keras gives them uniform weights, we give zero weights (output bias).
    np.testing.assert_allclose(got[valid], want[valid], atol=ATOL)
    bias = named_weights(ours)["attention_output/bias"]
    np.testing.assert_allclose(got[~valid], np.broadcast_to(
        bias, got[~valid].shape), atol=ATOL)
    x = to_np(ours_model.layers[1](ids))
    ref_np, _ = numpy_attention(
        x, x, x, named_weights(ours), mask=valid[:, :, None] & valid[:, None])
    np.testing.assert_allclose(got, ref_np, atol=ATOL)


def test_output_carries_query_mask(rng):
    ids = np.array([[3, 4, 5, 0, 0], [1, 2, 0, 0, 0]], "int32")
    valid = ids != 0
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(7, D, mask_zero=True)(inputs)
    mha = MultiHeadAttention(HEADS, KEY_DIM)
    y = mha(x, x)
    pooled = keras.layers.GlobalAveragePooling1D()(y)
    model = keras.Model(inputs, [y, pooled])
    y_val, pooled_val = (to_np(t) for t in model(ids))
    want = (y_val * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled_val, want, atol=ATOL)


@pytest.mark.parametrize("use_fused", [True, False])
def test_explicit_query_and_value_masks(rng, use_fused):
    ours, ref, q, v, _ = make_pair(rng, (B, T, D), (B, S, D), num_heads=HEADS,
                                   key_dim=KEY_DIM)
    ours.use_fused = use_fused
    query_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    value_mask = np.array([[1, 1, 0, 0, 1, 0, 0], [1, 0, 1, 1, 0, 0, 0]], bool)
    got = to_np(ours(q, v, query_mask=query_mask, value_mask=value_mask))
    combined = query_mask[:, :, None] & value_mask[:, None, :]
    ref_np, _ = numpy_attention(q, v, v, named_weights(ours), mask=combined)
    np.testing.assert_allclose(got, ref_np, atol=ATOL)
    # Keras ignores an explicit `query_mask` (it reads only the Keras mask of
    # `query`), so compare with it through the equivalent attention_mask,
    # on the rows that keep at least one key.
    want = to_np(ref(q, v, attention_mask=combined))
    np.testing.assert_allclose(got[query_mask], want[query_mask], atol=ATOL)


# --------------------------------------------------------------------------
# Rows whose keys are all masked: zero weights, never NaN.


@pytest.mark.parametrize("use_fused", [True, False])
def test_fully_masked_rows_are_zero(rng, use_fused):
    layer = MultiHeadAttention(HEADS, KEY_DIM, use_fused=use_fused)
    q = rng.normal(size=(B, T, D)).astype("float32")
    v = rng.normal(size=(B, S, D)).astype("float32")
    mask = _mask_without_empty_rows(rng, (B, T, S))
    mask[0, 1] = False
    mask[1, 3] = False
    out = to_np(layer(q, v, attention_mask=mask))
    _, scores = layer(q, v, attention_mask=mask, return_attention_scores=True)
    scores = to_np(scores)
    assert np.isfinite(out).all() and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores[0, :, 1], 0.0)
    np.testing.assert_array_equal(scores[1, :, 3], 0.0)
    bias = named_weights(layer)["attention_output/bias"]
    np.testing.assert_allclose(out[0, 1], bias, atol=ATOL)
    np.testing.assert_allclose(out[1, 3], bias, atol=ATOL)
    ref_np, _ = numpy_attention(q, v, v, named_weights(layer), mask=mask)
    np.testing.assert_allclose(out, ref_np, atol=ATOL)
    # A batch element whose values are all masked: every row is empty.
    value_mask = np.array([[0] * S, [1, 1, 0, 1, 0, 0, 0]], bool)
    out = to_np(layer(q, v, value_mask=value_mask))
    np.testing.assert_allclose(out[0], np.broadcast_to(bias, (T, D)),
                               atol=ATOL)


@pytest.mark.parametrize("use_fused", [True, False])
def test_fully_masked_rows_train_without_nan(rng, use_fused):
    q_in = keras.Input((T, D))
    m_in = keras.Input((T, T), dtype="bool")
    mha = MultiHeadAttention(HEADS, KEY_DIM, use_fused=use_fused)
    model = keras.Model([q_in, m_in], mha(q_in, q_in, attention_mask=m_in))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = rng.normal(size=(B, T, D)).astype("float32")
    mask = np.tril(np.ones((T, T), bool))[None].repeat(B, 0)
    mask[0, 2] = False  # an empty row
    mask[1] = False  # an element with every row empty
    y = rng.normal(size=(B, T, D)).astype("float32")
    before = [to_np(w).copy() for w in model.weights]
    loss = float(to_np(model.train_on_batch([x, mask], y)))
    after = [to_np(w) for w in model.weights]
    assert np.isfinite(loss)
    assert all(np.isfinite(w).all() for w in after)
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


# --------------------------------------------------------------------------
# Fused path against explicit path.


def test_fused_and_explicit_paths_agree(rng):
    fused = MultiHeadAttention(HEADS, KEY_DIM, use_fused=True)
    explicit = MultiHeadAttention(HEADS, KEY_DIM, use_fused=False)
    q = rng.normal(size=(B, T, D)).astype("float32")
    v = rng.normal(size=(B, S, D)).astype("float32")
    fused(q, v)
    explicit(q, v)
    explicit.set_weights(fused.get_weights())
    mask = rng.random((B, T, S)) > 0.5
    mask[0, 2] = False
    q_mask = np.array([[1, 1, 1, 0, 0]] * B, bool)
    v_mask = np.array([[1] * S, [0] * S], bool)
    cases = [
        dict(),
        dict(use_causal_mask=True),
        dict(attention_mask=mask),
        dict(attention_mask=mask, use_causal_mask=True),
        dict(query_mask=q_mask, value_mask=v_mask),
        dict(query_mask=q_mask, use_causal_mask=True),
        dict(value_mask=v_mask, attention_mask=mask, use_causal_mask=True),
        dict(attention_mask=mask[0]),  # (T, S), broadcast over batch
    ]
    for case in cases:
        a = to_np(fused(q, v, **case))
        b = to_np(explicit(q, v, **case))
        assert np.isfinite(a).all(), case
        np.testing.assert_allclose(a, b, atol=ATOL, err_msg=str(case))
        ref_np, _ = numpy_attention(
            q, v, v, named_weights(fused),
            mask=_combine(case, B, T, S), causal=case.get("use_causal_mask"))
        np.testing.assert_allclose(a, ref_np, atol=ATOL, err_msg=str(case))


def _combine(case, b, t, s):
    m = np.ones((b, t, s), bool)
    if "attention_mask" in case:
        m &= np.broadcast_to(case["attention_mask"], (b, t, s))
    if "query_mask" in case:
        m &= case["query_mask"][:, :, None]
    if "value_mask" in case:
        m &= case["value_mask"][:, None, :]
    return m


# --------------------------------------------------------------------------
# Causality and dropout.


@pytest.mark.parametrize("use_fused", [True, False])
def test_causal_mask_prevents_looking_ahead(rng, use_fused):
    layer = MultiHeadAttention(HEADS, KEY_DIM, use_fused=use_fused)
    x = rng.normal(size=(B, T, D)).astype("float32")
    base = to_np(layer(x, x, use_causal_mask=True, training=False))
    for t in range(T - 1):
        x2 = x.copy()
        x2[:, t + 1:] = rng.normal(size=x2[:, t + 1:].shape)
        out = to_np(layer(x2, x2, use_causal_mask=True, training=False))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1],
                                   atol=1e-6, rtol=0)
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:])


def test_dropout_with_causal_mask_keeps_upper_triangle_zero(rng):
    layer = MultiHeadAttention(HEADS, KEY_DIM, dropout=0.1, seed=7)
    x = rng.normal(size=(B, T, D)).astype("float32")
    out_train, scores = layer(x, x, use_causal_mask=True,
                              return_attention_scores=True, training=True)
    scores = to_np(scores)
    upper = np.triu(np.ones((T, T), bool), 1)
    np.testing.assert_array_equal(scores[:, :, upper], 0.0)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=ATOL)
    out_infer = to_np(layer(x, x, use_causal_mask=True, training=False))
    assert not np.allclose(to_np(out_train), out_infer, atol=1e-3)
    ref_np, _ = numpy_attention(x, x, x, named_weights(layer), causal=True)
    np.testing.assert_allclose(out_infer, ref_np, atol=ATOL)


def test_dropout_matches_keras_with_same_seed(rng):
    # Same Dropout layer, same seed, same draws: training outputs agree.
    ours, ref, q, v, _ = make_pair(rng, (B, T, D), (B, T, D), num_heads=HEADS,
                                   key_dim=KEY_DIM, dropout=0.3, seed=11)
    got = to_np(ours(q, v, training=True, use_causal_mask=True))
    want = to_np(ref(q, v, training=True, use_causal_mask=True))
    np.testing.assert_allclose(got, want, atol=ATOL)
    no_drop = to_np(ours(q, v, training=False, use_causal_mask=True))
    assert not np.allclose(got, no_drop, atol=1e-3)


# --------------------------------------------------------------------------
# torch.nn.MultiheadAttention with mapped weights.


def _torch_mha_from(layer, embed_dim, num_heads):
    w = named_weights(layer)
    mha = torch.nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)

    def mat(name):  # our (E, N, K) kernel -> torch (N*K, E) weight
        return w[f"{name}/kernel"].reshape(embed_dim, embed_dim).T

    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.from_numpy(np.concatenate(
            [mat("query"), mat("key"), mat("value")], 0)))
        mha.in_proj_bias.copy_(torch.from_numpy(np.concatenate(
            [w[f"{n}/bias"].reshape(-1) for n in ("query", "key", "value")])))
        mha.out_proj.weight.copy_(torch.from_numpy(
            w["attention_output/kernel"].reshape(embed_dim, embed_dim).T))
        mha.out_proj.bias.copy_(torch.from_numpy(w["attention_output/bias"]))
    return mha


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("batch,t_len,s_len", [(1, 1, 1), (B, T, T),
                                                (B, T, S)])
def test_matches_torch(rng, causal, batch, t_len, s_len):
    embed_dim, num_heads = D, HEADS
    layer = MultiHeadAttention(num_heads, embed_dim // num_heads)
    q = rng.normal(size=(batch, t_len, embed_dim)).astype("float32")
    k = rng.normal(size=(batch, s_len, embed_dim)).astype("float32")
    v = rng.normal(size=(batch, s_len, embed_dim)).astype("float32")
    out = to_np(layer(q, v, key=k, use_causal_mask=causal))  # fused path
    _, scores = layer(q, v, key=k, use_causal_mask=causal,
                      return_attention_scores=True)
    mha = _torch_mha_from(layer, embed_dim, num_heads)
    # torch: True in a boolean attn_mask means BLOCKED (the opposite of ours).
    blocked = (torch.from_numpy(~np.tril(np.ones((t_len, s_len), bool)))
               if causal else None)
    with torch.no_grad():
        t_out, t_w = mha(torch.from_numpy(q), torch.from_numpy(k),
                         torch.from_numpy(v), attn_mask=blocked,
                         need_weights=True, average_attn_weights=False)
        _, t_w_avg = mha(torch.from_numpy(q), torch.from_numpy(k),
                         torch.from_numpy(v), attn_mask=blocked,
                         need_weights=True)
    np.testing.assert_allclose(out, t_out.numpy(), atol=ATOL)
    layer.use_fused = False
    out_explicit = to_np(layer(q, v, key=k, use_causal_mask=causal))
    np.testing.assert_allclose(out_explicit, t_out.numpy(), atol=ATOL)
    np.testing.assert_allclose(to_np(scores), t_w.numpy(), atol=ATOL)
    np.testing.assert_allclose(to_np(scores).mean(1), t_w_avg.numpy(),
                               atol=ATOL)


# --------------------------------------------------------------------------
# Bad arguments and inputs.


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_heads=0, key_dim=4), "num_heads=0"),
        (dict(num_heads=-2, key_dim=4), "num_heads=-2"),
        (dict(num_heads=2.0, key_dim=4), "num_heads=2.0"),
        (dict(num_heads=True, key_dim=4), "num_heads=True"),
        (dict(num_heads=2, key_dim=None), "key_dim=None"),
        (dict(num_heads=2, key_dim=0), "key_dim=0"),
        (dict(num_heads=2, key_dim=4, value_dim=0), "value_dim=0"),
        (dict(num_heads=2, key_dim=4, value_dim=-1), "value_dim=-1"),
        (dict(num_heads=2, key_dim=4, dropout=1.0), "dropout=1.0"),
        (dict(num_heads=2, key_dim=4, dropout=-0.1), "dropout=-0.1"),
        (dict(num_heads=2, key_dim=4, dropout="0.1"), "dropout='0.1'"),
        (dict(num_heads=2, key_dim=4, output_shape=0), "output_shape=0"),
        (dict(num_heads=2, key_dim=4, output_shape=(3, -1)),
         r"output_shape=\(3, -1\)"),
        (dict(num_heads=2, key_dim=4, use_bias="yes"), "use_bias='yes'"),
        (dict(num_heads=2, key_dim=4, seed=1.5), "seed=1.5"),
        (dict(num_heads=2, key_dim=4, use_fused=1), "use_fused=1"),
        (dict(num_heads=2, key_dim=4, kernel_initializer="nope"),
         "kernel_initializer='nope'"),
        (dict(num_heads=2, key_dim=4, kernel_regularizer="nope"),
         "kernel_regularizer='nope'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(**kwargs)


def test_key_dim_is_required():
    with pytest.raises(TypeError):
        MultiHeadAttention(num_heads=2)


def test_bad_inputs(rng):
    layer = MultiHeadAttention(HEADS, KEY_DIM)
    x3 = rng.normal(size=(B, T, D)).astype("float32")
    x2 = rng.normal(size=(B, D)).astype("float32")
    x4 = rng.normal(size=(B, T, D, 1)).astype("float32")
    with pytest.raises(ValueError, match=r"query.shape=\(2, 6\)"):
        layer(x2, x3)
    with pytest.raises(ValueError, match=r"value.shape=\(2, 5, 6, 1\)"):
        layer(x3, x4)
    layer(x3, x3)
    with pytest.raises(ValueError, match=r"attention_mask.shape=\(2, 5, 4\)"):
        layer(x3, x3, attention_mask=np.ones((B, T, 4), bool))
    with pytest.raises(ValueError, match=r"attention_mask.shape=\(3, 5, 5\)"):
        layer(x3, x3, attention_mask=np.ones((3, T, T), bool))
    with pytest.raises(ValueError, match=r"attention_mask.shape"):
        layer(x3, x3, attention_mask=np.ones((1, B, T, T), bool))
    with pytest.raises(ValueError, match=r"key.shape=\(2, 3, 6\)"):
        layer(x3, x3, key=x3[:, :3])
    # Symbolic inputs are checked too.
    q_in = keras.Input((T, D))
    m_in = keras.Input((4, T), dtype="bool")
    with pytest.raises(ValueError,
                       match=r"attention_mask.shape=\(None, 4, 5\)"):
        MultiHeadAttention(HEADS, KEY_DIM)(q_in, q_in, attention_mask=m_in)
    with pytest.raises(ValueError, match="query.shape"):
        MultiHeadAttention(HEADS, KEY_DIM)(keras.Input((D,)), q_in)


# --------------------------------------------------------------------------
# Shapes, dynamic length, serialization.


def test_compute_output_shape_and_symbolic_scores():
    layer = MultiHeadAttention(4, 2, output_shape=3)
    assert layer.compute_output_shape((None, 5, 6), (None, 7, 2)) == (
        None, 5, 3)
    assert MultiHeadAttention(4, 2).compute_output_shape(
        (2, None, 6), (2, None, 2)) == (2, None, 6)
    q_in, v_in = keras.Input((5, 6)), keras.Input((7, 2))
    out, scores = layer(q_in, v_in, return_attention_scores=True)
    assert tuple(out.shape) == (None, 5, 3)
    assert tuple(scores.shape) == (None, 4, 5, 7)


@pytest.mark.parametrize("use_fused", [True, False])
def test_dynamic_sequence_length(rng, use_fused):
    inputs = keras.Input((None, D))
    layer = MultiHeadAttention(HEADS, KEY_DIM, use_fused=use_fused)
    model = keras.Model(inputs, layer(inputs, inputs, use_causal_mask=True))
    for length in (1, T, S):
        x = rng.normal(size=(B, length, D)).astype("float32")
        ref_np, _ = numpy_attention(x, x, x, named_weights(layer), causal=True)
        np.testing.assert_allclose(to_np(model.predict(x, verbose=0)), ref_np,
                                   atol=ATOL)


def test_config_round_trip(rng):
    layer = MultiHeadAttention(
        num_heads=2, key_dim=3, value_dim=4, dropout=0.2, use_bias=False,
        output_shape=(2, 3), kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(1e-3),
        bias_constraint="non_neg", seed=5, use_fused=False, name="attn")
    config = layer.get_config()
    clone = MultiHeadAttention.from_config(config)
    assert clone.get_config() == config
    assert config["output_shape"] == [2, 3] and config["value_dim"] == 4
    q = rng.normal(size=(B, T, D)).astype("float32")
    v = rng.normal(size=(B, S, D)).astype("float32")
    layer(q, v)
    clone(q, v)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_np(clone(q, v)), to_np(layer(q, v)),
                               atol=ATOL)


def test_keras_file_round_trip(rng, tmp_path):
    q_in, v_in = keras.Input((None, 6)), keras.Input((None, 5))
    out = MultiHeadAttention(2, 3, value_dim=4, output_shape=7)(
        q_in, v_in, use_causal_mask=True)
    model = keras.Model([q_in, v_in], out)
    q = rng.normal(size=(B, T, D)).astype("float32")
    v = rng.normal(size=(B, T, 5)).astype("float32")
    path = tmp_path / "mha.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is MultiHeadAttention
    np.testing.assert_allclose(to_np(loaded([q, v])), to_np(model([q, v])),
                               atol=ATOL)


def test_regularizer_losses(rng):
    layer = MultiHeadAttention(2, 3, kernel_regularizer=keras.regularizers.L2(
        0.01), bias_regularizer=keras.regularizers.L1(0.1),
        bias_initializer="ones")
    x = rng.normal(size=(B, T, D)).astype("float32")
    layer(x, x)
    w = named_weights(layer)
    want = sum(0.01 * np.sum(w[k] ** 2) for k in w if k.endswith("kernel"))
    want += sum(0.1 * np.sum(np.abs(w[k])) for k in w if k.endswith("bias"))
    assert len(layer.losses) == 8
    np.testing.assert_allclose(sum(to_np(l) for l in layer.losses), want,
                               rtol=1e-5)


# --------------------------------------------------------------------------
# Mixed precision and training.


@pytest.mark.parametrize("policy,tol", [("mixed_float16", 1e-2),
                                        ("mixed_bfloat16", 6e-2)])
@pytest.mark.parametrize("use_fused", [True, False])
def test_mixed_precision(rng, policy, tol, use_fused):
    x = rng.normal(size=(B, T, D)).astype("float32")
    mask = _mask_without_empty_rows(rng, (B, T, T))
    mask[1, 3] = False
    full = MultiHeadAttention(HEADS, KEY_DIM, use_fused=use_fused)
    want = to_np(full(x, x, attention_mask=mask, use_causal_mask=True))
    keras.config.set_dtype_policy(policy)
    layer = MultiHeadAttention(HEADS, KEY_DIM, use_fused=use_fused)
    layer(x, x)
    layer.set_weights(full.get_weights())
    out = layer(x, x, attention_mask=mask, use_causal_mask=True)
    _, scores = layer(x, x, attention_mask=mask, use_causal_mask=True,
                      return_attention_scores=True)
    compute = policy.split("_")[1]
    assert keras.backend.standardize_dtype(out.dtype) == compute
    assert keras.backend.standardize_dtype(scores.dtype) == compute
    assert layer.weights[0].dtype == "float32"
    out = to_np(ops.cast(out, "float32"))
    scores = to_np(ops.cast(scores, "float32"))
    assert np.isfinite(out).all()
    # fp16/bf16 round-off (8 and 11 significant bits) sets the tolerance.
    np.testing.assert_allclose(out, want, atol=tol * 4, rtol=tol)
    rows = scores.sum(-1)
    np.testing.assert_allclose(rows[0], 1.0, atol=tol)
    np.testing.assert_array_equal(rows[1, :, 3], 0.0)


def test_fit_step_reduces_loss(rng):
    inputs = keras.Input((T, D))
    x = MultiHeadAttention(HEADS, KEY_DIM, dropout=0.1, seed=3)(
        inputs, inputs, use_causal_mask=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x_data = rng.normal(size=(16, T, D)).astype("float32")
    y_data = np.cumsum(x_data[..., :1], axis=1)
    history = model.fit(x_data, y_data, batch_size=8, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
