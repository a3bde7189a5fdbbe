"""The backend fast paths (keraseq/layers/_fast_path.py) equal the explicit path.

Each case runs the same layer, with the same weights, once with the fast paths on
and once inside `_fast_path.enabled(False)` (the explicit `keras.ops` loop), and
compares outputs, final states and the weights after one SGD step (so the
gradients too). On PyTorch the tests also check that the fused kernel really ran.
"""

import numpy as np
import pytest

import keras

import keraseq
from keraseq.layers import _fast_path
from tests.conftest import BACKEND

TOL = 1e-5

CASES = {
    "lstm": (keraseq.layers.LSTM, {}),
    "lstm-nobias": (keraseq.layers.LSTM, {"use_bias": False}),
    "lstm-backwards": (keraseq.layers.LSTM, {"go_backwards": True}),
    "rnn-tanh": (keraseq.layers.SimpleRNN, {}),
    "rnn-relu-identity": (keraseq.layers.SimpleRNN,
                          {"activation": "relu", "recurrent_initializer": "identity"}),
    "rnn-output-units-backwards": (keraseq.layers.SimpleRNN,
                                   {"output_units": 3, "go_backwards": True}),
}


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def randomize(layer, rng, scale=0.4):
    layer.set_weights([rng.normal(scale=scale, size=w.shape).astype("float32")
                       for w in layer.get_weights()])


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts calls of torch's fused recurrent kernels (torch backend only)."""
    calls = []
    if BACKEND == "torch":
        import torch

        for name in ("lstm", "rnn_tanh", "rnn_relu"):
            original = getattr(torch, name)

            def counted(*args, _original=original, _name=name, **kwargs):
                calls.append(_name)
                return _original(*args, **kwargs)

            monkeypatch.setattr(torch, name, counted)
    return calls


def expected_kernel(case):
    """The fused kernel the fast path should call on this backend, or None."""
    if BACKEND != "torch":
        return None  # JAX's fused LSTM needs a GPU; TensorFlow has none here
    if case.startswith("lstm"):
        return "lstm"
    return "rnn_relu" if "relu" in case else "rnn_tanh"


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_and_states_equal(case, rng, kernel_calls):
    cls, kwargs = CASES[case]
    layer = cls(6, return_sequences=True, return_state=True, **kwargs)
    layer.build((3, 5, 4))
    randomize(layer, rng)
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    initial = [rng.normal(size=(3, 6)).astype("float32")
               for _ in range(2 if "lstm" in case else 1)]
    fast = layer(x, initial_state=initial)
    kernel = expected_kernel(case)
    assert kernel_calls == ([kernel] if kernel else [])
    with _fast_path.enabled(False):
        explicit = layer(x, initial_state=initial)
    assert len(kernel_calls) == (1 if kernel else 0)
    for a, b in zip(fast, explicit):
        np.testing.assert_allclose(to_np(a), to_np(b), atol=TOL, rtol=TOL)


def _sgd_step(cls, kwargs, weights, x, y, fast):
    with _fast_path.enabled(fast):
        inputs = keras.Input((None, x.shape[-1]))
        layer = cls(6, return_sequences=True, dropout=0.25, seed=3, **kwargs)
        model = keras.Model(inputs, layer(inputs))
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        loss = model.train_on_batch(x, y)
        return float(loss), [to_np(w) for w in model.get_weights()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_step_equal(case, rng, kernel_calls):
    """Same loss and same weights after one SGD step, with input dropout active
    (one mask per sequence, drawn by keraseq before either path)."""
    cls, kwargs = CASES[case]
    probe = cls(6, return_sequences=True, **kwargs)
    probe.build((None, 5, 4))
    randomize(probe, rng)
    weights = probe.get_weights()
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    y = rng.normal(size=(3, 5, kwargs.get("output_units", 6))).astype("float32")
    keras.utils.set_random_seed(0)
    fast_loss, fast_weights = _sgd_step(cls, kwargs, weights, x, y, True)
    calls = len(kernel_calls)
    keras.utils.set_random_seed(0)
    loss, explicit_weights = _sgd_step(cls, kwargs, weights, x, y, False)
    assert len(kernel_calls) == calls
    assert calls >= (1 if expected_kernel(case) else 0)
    np.testing.assert_allclose(fast_loss, loss, rtol=TOL)
    for a, b, w0 in zip(fast_weights, explicit_weights, weights):
        assert np.abs(b - w0).max() > 1e-4  # the step moved every weight
        np.testing.assert_allclose(a, b, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("reason", ["mask", "recurrent_dropout", "activation", "unroll"])
def test_explicit_path_when_the_math_differs(reason, rng, kernel_calls):
    """Masks, recurrent dropout in training, a non-standard activation and
    `unroll=True` take the explicit loop (and still give Keras's results)."""
    kwargs = {"recurrent_dropout": 0.3} if reason == "recurrent_dropout" else {}
    if reason == "activation":
        kwargs["activation"] = "relu"
    if reason == "unroll":
        kwargs["unroll"] = True
    layer = keraseq.layers.LSTM(4, return_sequences=True, **kwargs)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool) if reason == "mask" else None
    fast = layer(x, mask=mask, training=reason == "recurrent_dropout")
    assert kernel_calls == []
    if reason != "recurrent_dropout":
        with _fast_path.enabled(False):
            np.testing.assert_allclose(to_np(fast), to_np(layer(x, mask=mask)), atol=TOL)


@pytest.mark.skipif(BACKEND != "torch", reason="the float16 CPU rule is torch's")
def test_torch_half_precision_on_cpu_is_explicit(rng, kernel_calls):
    keras.config.set_dtype_policy("mixed_float16")
    layer = keraseq.layers.LSTM(4, return_sequences=True)
    out = layer(rng.normal(size=(2, 5, 3)).astype("float32"))
    assert kernel_calls == []
    assert keras.backend.standardize_dtype(out.dtype) == "float16"


@pytest.mark.skipif(BACKEND != "torch", reason="stateful torch autograd")
def test_torch_stateful_two_train_steps(rng, kernel_calls):
    """A stateful model trains twice in a row through the fused kernel (the
    state variables are updated in place after each call)."""
    inputs = keras.Input(batch_shape=(2, 3, 4))
    model = keras.Model(inputs, keraseq.layers.LSTM(5, stateful=True)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    y = rng.normal(size=(2, 5)).astype("float32")
    losses = [model.train_on_batch(x, y) for _ in range(2)]
    assert kernel_calls and np.all(np.isfinite(losses)) and losses[0] != losses[1]


@pytest.mark.skipif(BACKEND != "jax", reason="jax.experimental.rnn")
@pytest.mark.parametrize("go_backwards", [False, True])
def test_jax_cudnn_weight_layout(go_backwards, rng):
    """The GPU path packs Keras's weights into cuDNN's flat buffer. On a CPU,
    run that buffer through jax.experimental.rnn's reference LSTM and compare
    with the explicit layer."""
    from jax.experimental import rnn

    layer = keraseq.layers.LSTM(6, return_sequences=True, go_backwards=go_backwards)
    layer.build((3, 5, 4))
    randomize(layer, rng)
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    initial = [rng.normal(size=(3, 6)).astype("float32") for _ in range(2)]
    last, outputs, (h, c) = _fast_path.jax_lstm(layer, x, initial, implementation=rnn.lstm_ref)
    expected, h_ref, c_ref = _explicit(layer, x, initial)
    np.testing.assert_allclose(np.asarray(outputs), expected, atol=TOL)
    np.testing.assert_allclose(np.asarray(h), h_ref, atol=TOL)
    np.testing.assert_allclose(np.asarray(c), c_ref, atol=TOL)


def _explicit(layer, x, initial):
    clone = layer.__class__.from_config({**layer.get_config(), "return_state": True})
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    with _fast_path.enabled(False):
        outputs, h, c = clone(x, initial_state=initial)
    return to_np(outputs), to_np(h), to_np(c)


def test_gelu_matches_torch(rng):
    """The exact GELU (fused kernel, or erf on TensorFlow / with fast paths off)
    equals torch.nn.functional.gelu."""
    import torch

    x = rng.normal(scale=3.0, size=(4, 7)).astype("float32")
    reference = torch.nn.functional.gelu(torch.tensor(x)).numpy()
    np.testing.assert_allclose(to_np(_fast_path.gelu(keras.ops.convert_to_tensor(x))),
                               reference, atol=TOL)
    with _fast_path.enabled(False):
        np.testing.assert_allclose(to_np(_fast_path.gelu(keras.ops.convert_to_tensor(x))),
                                   reference, atol=TOL)


def test_hoisting_choice_does_not_change_results(rng):
    """Projection hoisted or inside the step (the JAX-CPU choice): same output."""
    layer = keraseq.layers.LSTM(5, return_sequences=True, recurrent_activation="hard_sigmoid")
    x = rng.normal(size=(2, 6, 3)).astype("float32")
    first = to_np(layer(x))
    with _fast_path.enabled(False):  # always hoists
        np.testing.assert_allclose(first, to_np(layer(x)), atol=TOL)
    hoisted = {"torch": True, "tensorflow": False, "jax": False}[BACKEND]  # CPU
    assert _fast_path.hoist_input_projection(layer.cell) == hoisted


@pytest.mark.parametrize("use_bias", [True, False])
def test_fused_qkv_projection_equals_three(use_bias, rng, monkeypatch):
    """Self-attention with Q, K, V from one einsum (switched on here; it is off
    by default, not faster on CPUs) equals three projections: output and
    gradients (one SGD step)."""
    monkeypatch.setattr(_fast_path, "_FUSED_QKV_BACKENDS", (BACKEND,))
    taken = []
    original = keraseq.layers.MultiHeadAttention._fused_qkv
    monkeypatch.setattr(keraseq.layers.MultiHeadAttention, "_fused_qkv",
                        lambda self, x: taken.append(1) or original(self, x))
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    y = rng.normal(size=(2, 6, 8)).astype("float32")
    results = []
    for fast in (True, False):
        keras.utils.set_random_seed(0)
        with _fast_path.enabled(fast):
            inputs = keras.Input((6, 8))
            layer = keraseq.layers.MultiHeadAttention(
                num_heads=2, key_dim=4, use_bias=use_bias,
                bias_initializer="random_normal")
            model = keras.Model(inputs, layer(inputs, inputs, use_causal_mask=True))
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            if results:
                model.set_weights(results[0][2])
            weights = [to_np(w) for w in model.get_weights()]
            output = to_np(model.predict_on_batch(x))
            model.train_on_batch(x, y)
            results.append((output, [to_np(w) for w in model.get_weights()], weights))
    assert len(taken) >= 1
    np.testing.assert_allclose(results[0][0], results[1][0], atol=TOL)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=TOL)


def test_causal_block_uses_is_causal_not_a_mask(rng, monkeypatch):
    """A causal TransformerBlock hands the fused kernel `is_causal=True` and no
    (length × length) boolean mask, so flash kernels can apply, and matches the
    explicit path."""
    seen = []
    original = keras.ops.dot_product_attention

    def spy(*args, **kwargs):
        seen.append((kwargs.get("is_causal"), kwargs.get("mask") is None))
        return original(*args, **kwargs)

    monkeypatch.setattr(keras.ops, "dot_product_attention", spy)
    block = keraseq.layers.TransformerBlock(num_heads=2, intermediate_dim=16)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    fused = to_np(block(x))
    assert seen == [(True, True)]
    block._self_attention.use_fused = False
    np.testing.assert_allclose(fused, to_np(block(x)), atol=TOL)
    assert len(seen) == 1
