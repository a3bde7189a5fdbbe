"""Tests for keraseq.layers.transformer.TransformerBlock.

References: `torch.nn.TransformerEncoderLayer(norm_first=True)` (the same
pre-norm block) with copied weights, and a float64 numpy implementation that
also covers padded positions. Tolerance is 1e-5 in float32.
"""

import math

import keras
import numpy as np
import pytest
import torch
from keras import ops

from keraseq.layers.transformer import TransformerBlock

ATOL = 1e-5
# Shared small shapes (JAX compiles each eager op once per shape).
B, T, D, HEADS, FF = 2, 6, 8, 2, 16


def to_np(x):
    return ops.convert_to_numpy(x)


def block_weights(block):
    """{'self_attention/query/kernel': array, ...} for a built block."""
    prefix = block.path + "/"
    return {w.path[len(prefix):]: to_np(w) for w in block.weights}


def gelu(h):  # exact, erf-based
    return 0.5 * h * (1.0 + np.vectorize(math.erf)(h / np.sqrt(2.0)))


def relu(h):
    return np.maximum(h, 0.0)


def numpy_block(x, w, eps=1e-5, padding=None, causal=True, activation=gelu):
    """float64 pre-norm block; padded positions mask rows and columns."""
    x = np.asarray(x, np.float64)
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    b, t, _ = x.shape

    def layer_norm(h, name):
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        return (h - mean) / np.sqrt(var + eps) * w[f"{name}/gamma"] + w[
            f"{name}/beta"]

    def project(h, name):
        kernel = w[f"self_attention/{name}/kernel"]
        return (np.einsum("btd,dnk->btnk", h, kernel)
                + w[f"self_attention/{name}/bias"])

    h = layer_norm(x, "self_attention_layer_norm")
    q, k, v = project(h, "query"), project(h, "key"), project(h, "value")
    logits = np.einsum("btnk,bsnk->bnts", q, k) / np.sqrt(q.shape[-1])
    allowed = np.ones((b, t, t), bool)
    if causal:
        allowed &= np.tril(np.ones((t, t), bool))
    if padding is not None:
        allowed &= padding[:, :, None] & padding[:, None, :]
    allowed = allowed[:, None]
    logits = np.where(allowed, logits, -np.inf)
    row_max = np.where(allowed, logits, -1e300).max(-1, keepdims=True)
    e = np.exp(logits - row_max)  # exactly 0 where blocked
    denom = e.sum(-1, keepdims=True)
    weights = np.where(denom > 0, e / np.where(denom > 0, denom, 1), 0.0)
    ctx = np.einsum("bnts,bsnv->btnv", weights, v)
    attn = (np.einsum("btnv,nvo->bto", ctx,
                      w["self_attention/attention_output/kernel"])
            + w["self_attention/attention_output/bias"])
    x = x + attn
    h = layer_norm(x, "feedforward_layer_norm")
    h = h @ w["feedforward_intermediate_dense/kernel"] + w[
        "feedforward_intermediate_dense/bias"]
    h = activation(h)
    h = h @ w["feedforward_output_dense/kernel"] + w[
        "feedforward_output_dense/bias"]
    return x + h


def torch_block_from(block, eps=1e-5):
    w = block_weights(block)
    layer = torch.nn.TransformerEncoderLayer(
        D, HEADS, dim_feedforward=FF, dropout=0.0, activation="gelu",
        layer_norm_eps=eps, batch_first=True, norm_first=True)
    layer.eval()

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    def mat(name):  # (D, heads, head_dim) kernel -> torch (D, D) weight
        return w[f"self_attention/{name}/kernel"].reshape(D, D).T

    with torch.no_grad():
        sa = layer.self_attn
        sa.in_proj_weight.copy_(t(np.concatenate(
            [mat("query"), mat("key"), mat("value")])))
        sa.in_proj_bias.copy_(t(np.concatenate(
            [w[f"self_attention/{n}/bias"].reshape(-1)
             for n in ("query", "key", "value")])))
        sa.out_proj.weight.copy_(t(
            w["self_attention/attention_output/kernel"].reshape(D, D).T))
        sa.out_proj.bias.copy_(t(w["self_attention/attention_output/bias"]))
        layer.norm1.weight.copy_(t(w["self_attention_layer_norm/gamma"]))
        layer.norm1.bias.copy_(t(w["self_attention_layer_norm/beta"]))
        layer.norm2.weight.copy_(t(w["feedforward_layer_norm/gamma"]))
        layer.norm2.bias.copy_(t(w["feedforward_layer_norm/beta"]))
        layer.linear1.weight.copy_(t(
            w["feedforward_intermediate_dense/kernel"].T))
        layer.linear1.bias.copy_(t(w["feedforward_intermediate_dense/bias"]))
        layer.linear2.weight.copy_(t(w["feedforward_output_dense/kernel"].T))
        layer.linear2.bias.copy_(t(w["feedforward_output_dense/bias"]))
    return layer


def randomize(block, rng):
    """Random LayerNorm and bias values too, so every weight is exercised."""
    block.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32")
                       for w in block.weights])


def make_block(rng, **kwargs):
    block = TransformerBlock(HEADS, FF, **kwargs)
    block.build((None, None, D))
    randomize(block, rng)
    return block


# --------------------------------------------------------------------------
# Values.


def test_weights_layout(rng):
    block = make_block(rng)
    names = list(block_weights(block))
    assert names == [
        "self_attention_layer_norm/gamma", "self_attention_layer_norm/beta",
        "self_attention/query/kernel", "self_attention/query/bias",
        "self_attention/key/kernel", "self_attention/key/bias",
        "self_attention/value/kernel", "self_attention/value/bias",
        "self_attention/attention_output/kernel",
        "self_attention/attention_output/bias",
        "feedforward_layer_norm/gamma", "feedforward_layer_norm/beta",
        "feedforward_intermediate_dense/kernel",
        "feedforward_intermediate_dense/bias",
        "feedforward_output_dense/kernel", "feedforward_output_dense/bias",
    ]
    assert block.weights[2].shape == (D, HEADS, D // HEADS)


@pytest.mark.parametrize("causal", [True, False])
def test_matches_torch_and_numpy(rng, causal):
    block = make_block(rng, use_causal_mask=causal)
    x = rng.normal(size=(B, T, D)).astype("float32")
    got = to_np(block(x))
    torch_layer = torch_block_from(block)
    mask = (torch.from_numpy(~np.tril(np.ones((T, T), bool)))
            if causal else None)
    with torch.no_grad():
        want = torch_layer(torch.from_numpy(x), src_mask=mask).numpy()
    np.testing.assert_allclose(got, want, atol=ATOL)
    np.testing.assert_allclose(
        got, numpy_block(x, block_weights(block), causal=causal), atol=ATOL)


def test_padding_mask(rng):
    block = make_block(rng)
    x = rng.normal(size=(B, T, D)).astype("float32")
    padding = np.ones((B, T), bool)
    padding[0, 4:] = False  # right padding
    padding[1, :2] = False  # left padding: its first rows see no key
    got = to_np(block(x, padding_mask=padding))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(
        got, numpy_block(x, block_weights(block), padding=padding), atol=ATOL)
    # torch masks keys only; real tokens agree with it.
    torch_layer = torch_block_from(block)
    causal = torch.from_numpy(~np.tril(np.ones((T, T), bool)))
    with torch.no_grad():
        want = torch_layer(torch.from_numpy(x), src_mask=causal,
                           src_key_padding_mask=torch.from_numpy(~padding))
    np.testing.assert_allclose(got[padding], want.numpy()[padding], atol=ATOL)
    # int padding masks work the same.
    np.testing.assert_allclose(
        to_np(block(x, padding_mask=padding.astype("int32"))), got, atol=ATOL)


def test_explicit_key_dim_and_activation(rng):
    block = make_block(rng, key_dim=5, activation="relu")
    x = rng.normal(size=(B, T, D)).astype("float32")
    w = block_weights(block)
    assert w["self_attention/query/kernel"].shape == (D, HEADS, 5)
    assert w["self_attention/attention_output/kernel"].shape == (HEADS, 5, D)
    np.testing.assert_allclose(
        to_np(block(x)), numpy_block(x, w, activation=relu), atol=ATOL)


def test_keras_mask_from_embedding_is_padding_mask(rng):
    vocab = 13
    ids = rng.integers(1, vocab, size=(B, T)).astype("int32")
    ids[0, 3:] = 0
    ids[1, 5:] = 0
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(vocab, D, mask_zero=True)(inputs)
    block = TransformerBlock(HEADS, FF)
    y = block(x)
    pooled = keras.layers.GlobalAveragePooling1D()(y)
    model = keras.Model(inputs, [y, pooled])
    randomize(block, rng)
    y_val, pooled_val = (to_np(t) for t in model(ids))
    emb = to_np(model.layers[1](ids))
    valid = ids != 0
    np.testing.assert_allclose(
        y_val, numpy_block(emb, block_weights(block), padding=valid),
        atol=ATOL)
    np.testing.assert_allclose(
        y_val, to_np(block(emb, padding_mask=valid)), atol=ATOL)
    # The Keras mask passes through the block to the pooling layer.
    want = (y_val * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled_val, want, atol=ATOL)


def test_causality(rng):
    block = make_block(rng)
    x = rng.normal(size=(B, T, D)).astype("float32")
    base = to_np(block(x, training=False))
    for t in range(T - 1):
        x2 = x.copy()
        x2[:, t + 1:] = rng.normal(size=x2[:, t + 1:].shape)
        out = to_np(block(x2, training=False))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1],
                                   atol=1e-6, rtol=0)
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:])
    bidirectional = make_block(rng, use_causal_mask=False)
    x2 = x.copy()
    x2[:, -1] = rng.normal(size=x2[:, -1].shape)
    assert not np.allclose(to_np(bidirectional(x2))[:, 0],
                           to_np(bidirectional(x))[:, 0])


def test_dropout_reaches_every_sublayer(rng):
    block = make_block(rng, dropout=0.3)
    plain = make_block(rng)
    plain.set_weights(block.get_weights())
    x = rng.normal(size=(B, T, D)).astype("float32")
    np.testing.assert_allclose(to_np(block(x, training=False)),
                               to_np(plain(x)), atol=ATOL)
    assert not np.allclose(to_np(block(x, training=True)), to_np(plain(x)),
                           atol=1e-3)
    assert block._self_attention.dropout == 0.3
    assert block._self_attention_dropout.rate == 0.3
    assert block._feedforward_dropout.rate == 0.3


# --------------------------------------------------------------------------
# Bad arguments.


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_heads=0, intermediate_dim=4), "num_heads=0"),
        (dict(num_heads=1.5, intermediate_dim=4), "num_heads=1.5"),
        (dict(num_heads=2, intermediate_dim=0), "intermediate_dim=0"),
        (dict(num_heads=2, intermediate_dim=None), "intermediate_dim=None"),
        (dict(num_heads=2, intermediate_dim=4, key_dim=0), "key_dim=0"),
        (dict(num_heads=2, intermediate_dim=4, dropout=1.0), "dropout=1.0"),
        (dict(num_heads=2, intermediate_dim=4, dropout=-0.5),
         "dropout=-0.5"),
        (dict(num_heads=2, intermediate_dim=4, activation="nope"),
         "activation='nope'"),
        (dict(num_heads=2, intermediate_dim=4, layer_norm_epsilon=0.0),
         "layer_norm_epsilon=0.0"),
        (dict(num_heads=2, intermediate_dim=4, kernel_initializer="nope"),
         "kernel_initializer='nope'"),
        (dict(num_heads=2, intermediate_dim=4, use_causal_mask="yes"),
         "use_causal_mask='yes'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerBlock(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="key_dim=None, num_heads=3, "
                                         "hidden_dim=8"):
        TransformerBlock(3, FF)(keras.Input((None, D)))
    TransformerBlock(3, FF, key_dim=4)(keras.Input((None, D)))  # explicit: ok
    with pytest.raises(ValueError, match="key_dim=None, num_heads=16"):
        TransformerBlock(16, FF)(keras.Input((None, D)))
    with pytest.raises(ValueError, match=r"inputs.shape=\(None, 8\)"):
        TransformerBlock(HEADS, FF)(keras.Input((D,)))
    with pytest.raises(ValueError, match="hidden_dim"):
        TransformerBlock(HEADS, FF).build((None, None, None))


# --------------------------------------------------------------------------
# Shapes, serialization, precision, training.


def test_compute_output_shape_and_dynamic_length(rng):
    block = TransformerBlock(HEADS, FF)
    assert block.compute_output_shape((None, None, D)) == (None, None, D)
    inputs = keras.Input((None, D))
    outputs = block(inputs)
    assert tuple(outputs.shape) == (None, None, D)
    model = keras.Model(inputs, outputs)
    randomize(block, rng)
    for length in (1, 5, 20):
        x = rng.normal(size=(B, length, D)).astype("float32")
        np.testing.assert_allclose(
            model.predict(x, verbose=0), numpy_block(x, block_weights(block)),
            atol=ATOL)


def test_config_round_trip(rng):
    block = TransformerBlock(
        HEADS, FF, key_dim=3, dropout=0.1, activation="relu",
        layer_norm_epsilon=1e-6, kernel_initializer="he_uniform",
        use_causal_mask=False, name="blk")
    config = block.get_config()
    assert config["activation"] == "relu" and config["key_dim"] == 3
    clone = TransformerBlock.from_config(config)
    assert clone.get_config() == config
    x = rng.normal(size=(B, T, D)).astype("float32")
    block(x)
    clone(x)
    randomize(block, rng)
    clone.set_weights(block.get_weights())
    np.testing.assert_allclose(to_np(clone(x)), to_np(block(x)), atol=ATOL)


def test_keras_file_round_trip(rng, tmp_path):
    inputs = keras.Input((None, D))
    block = TransformerBlock(HEADS, FF, layer_norm_epsilon=1e-6)
    model = keras.Model(inputs, block(inputs))
    randomize(block, rng)
    path = tmp_path / "block.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is TransformerBlock
    for length in (3, T):
        x = rng.normal(size=(B, length, D)).astype("float32")
        np.testing.assert_allclose(to_np(loaded(x)), to_np(model(x)),
                                   atol=ATOL)


@pytest.mark.parametrize("policy,tol", [("mixed_float16", 2e-2),
                                        ("mixed_bfloat16", 1e-1)])
def test_mixed_precision(rng, policy, tol):
    x = rng.normal(size=(B, T, D)).astype("float32")
    padding = np.ones((B, T), bool)
    padding[1, :2] = False
    full = make_block(rng)
    want = to_np(full(x, padding_mask=padding))
    keras.config.set_dtype_policy(policy)
    block = TransformerBlock(HEADS, FF)
    block(x)
    block.set_weights(full.get_weights())
    out = block(x, padding_mask=padding)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    out = to_np(ops.cast(out, "float32"))
    assert np.isfinite(out).all()
    # Half-precision round-off (11 or 8 significant bits) sets the tolerance.
    np.testing.assert_allclose(out, want, atol=tol * 4, rtol=tol)


def test_fit_reduces_loss(rng):
    # Token ids with right padding: the Keras mask reaches the block (and the
    # loss) inside the compiled training step.
    inputs = keras.Input((T,), dtype="int32")
    x = keras.layers.Embedding(10, D, mask_zero=True)(inputs)
    x = TransformerBlock(HEADS, FF, dropout=0.1)(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    ids = rng.integers(1, 10, size=(16, T)).astype("int32")
    ids[::2, T - 2:] = 0
    y_data = np.cumsum(ids[..., None] / 10.0, axis=1).astype("float32")
    losses = model.fit(ids, y_data, batch_size=8, epochs=8,
                       verbose=0).history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
