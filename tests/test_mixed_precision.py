"""Mixed precision across every keraseq layer and model builder, in one table.

For every case of `CASES` and both policies (`mixed_float16`, `mixed_bfloat16`):

(a) the model's output has the policy's compute dtype (every case, the language
    models included: their logits come out of a `Dense` in the compute dtype and
    the loss casts them to float32) and every variable stays float32;
(b) the output is close to the same model under `float32` with the same weights
    (`TOLERANCE` below says how close and why);
(c) five `model.fit` steps (one batch per epoch) give finite losses that
    decrease, every trainable variable moves (so a non-zero gradient reached
    it), and under `mixed_float16` Keras wrapped the optimizer in a
    `LossScaleOptimizer` (under `mixed_bfloat16` it did not: bfloat16 has the
    exponent range of float32).

Then two numerical checks the table's small random inputs cannot make:

* softmax: attention logits near 30 overflow float16 in a softmax computed
  without subtracting the row maximum (`exp(12) > 65504`); both attention paths
  must stay finite and close to float32, and fully padded query rows give the
  documented zero weights, never NaN;
* LSTM cell state: with the forget gate at 1, `c_t = c_{t-1} + i_t g_t` adds a
  small increment at every step; accumulated in a 16-bit dtype the increments
  are rounded at every addition, and in bfloat16 (8 significant bits) they are
  rounded away once `c` is large (300 steps of 0.003 give 1.0 instead of 0.9,
  1000 steps stall at 1.0 instead of 3.0), so the cell state must be carried
  in float32.

Under `mixed_float16` on JAX without a GPU, attention takes the explicit path:
JAX's fused kernel asks for float32 logits from float16 inputs, which XLA's CPU
`dot_general` refuses once compiled (`_fast_path.fused_attention_supported`).
"""

import dataclasses
from typing import Callable

import keras
import numpy as np
import pytest
from keras import ops

from keraseq.layers import (
    LSTM,
    MultiHeadAttention,
    PositionEmbedding,
    SimpleRNN,
    SinePositionEncoding,
    TokenAndPositionEmbedding,
    TransformerBlock,
)
from keraseq.models import compile_language_model, language_model

BACKEND = keras.backend.backend()

POLICIES = ("mixed_float16", "mixed_bfloat16")

# Relative error allowed between a mixed-precision output and the float32 one
# with the same weights, measured as max|mixed - float32| / max|float32| (a
# scale-aware error: elementwise `rtol` is meaningless at outputs near 0).
# Unit round-off u is 2**-11 = 4.9e-4 for float16 and 2**-8 = 3.9e-3 for
# bfloat16, and every case chains several roundings (projections, gates, six
# recurrent steps, layer norms, softmax, logits). Measured over the table on
# TensorFlow, JAX and PyTorch: at most 1.6e-3 (3.3 u, the LSTM language model on
# torch) in float16 and 1.2e-2 (2.9 u, SimpleRNN on TensorFlow) in bfloat16.
# The bounds, 1e-2 (20 u) and 5e-2 (13 u), leave room for other kernels (oneDNN,
# XLA, ATen and GPU kernels accumulate differently); a wrong weight, mask or
# step gives errors of order 1.
TOLERANCE = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}

BATCH, LENGTH, FEATURES, UNITS, VOCABULARY = 4, 6, 5, 8, 11
FIT_STEPS = 5


def to_float32(tensor):
    return keras.ops.convert_to_numpy(ops.cast(tensor, "float32"))


def dtype_of(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


# --------------------------------------------------------------------------
# The table. A case builds its model under the current global dtype policy
# (the same weight order every time, so `set_weights` copies them across
# policies) and makes the data.


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], keras.Model]
    data: Callable[[np.random.Generator], tuple]  # (inputs, targets)
    compile: Callable[[keras.Model], None]
    fused_attention: bool = False  # runs keras.ops.dot_product_attention


def _float_data(rng, padded=False):
    """Float sequences `(BATCH, LENGTH, FEATURES)`; with `padded`, zero steps
    (masked by `keras.layers.Masking`): two right-padded rows and a gap."""
    x = rng.normal(size=(BATCH, LENGTH, FEATURES)).astype("float32")
    if padded:
        x[1, 4:] = 0.0
        x[2, 2:] = 0.0
        x[3, 1] = 0.0
    return x


def _regression(padded=False):
    def data(rng):
        x = _float_data(rng, padded)
        return x, rng.normal(size=(BATCH, LENGTH, UNITS)).astype("float32")

    return data


def _token_data(rng, padded=False):
    ids = rng.integers(1, VOCABULARY, size=(BATCH, LENGTH)).astype("int32")
    if padded:
        ids[1, 4:] = 0
        ids[3, 3:] = 0
    return ids


def _tokens_to_vectors(padded=False):
    def data(rng):
        ids = _token_data(rng, padded)
        return ids, rng.normal(size=(BATCH, LENGTH, UNITS)).astype("float32")

    return data


def _next_token(rng):
    ids = _token_data(rng)
    return ids, (ids + 1) % VOCABULARY  # a learnable next-token rule


def _mse(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")


def _language_model_compile(model):
    # The builders' own training setup (Adam, global_clipnorm=1, sparse
    # cross-entropy from logits), with a larger step so five steps show.
    compile_language_model(model, learning_rate=1e-2)


def _sequence_model(layer_fn, padded=False):
    """Input (B, T, F) [→ Masking] → layer_fn; its output is the model's. With
    `padded`, the Keras mask of the zero steps reaches the layer and the loss."""

    def build():
        inputs = keras.Input((LENGTH, FEATURES))
        x = keras.layers.Masking(0.0)(inputs) if padded else inputs
        return keras.Model(inputs, layer_fn(x))

    return build


def _recurrent(cls, **kwargs):
    return lambda x: cls(UNITS, return_sequences=True, **kwargs)(x)


def _attention(use_fused, use_causal_mask):
    def apply(x):
        h = keras.layers.Dense(UNITS, name="project")(x)
        layer = MultiHeadAttention(2, 4, use_fused=use_fused, name="attention")
        return layer(h, h, use_causal_mask=use_causal_mask)

    return apply


def _positional(layer_fn):
    """Input → Dense → h + positional(h): the model around the positional
    layer trains (and the learned table with it)."""

    def apply(x):
        h = keras.layers.Dense(UNITS, name="project")(x)
        return keras.layers.Add()([h, layer_fn()(h)])

    return apply


def _transformer_block(x):
    return TransformerBlock(2, 16)(keras.layers.Dense(UNITS, name="project")(x))


def _token_and_position(**kwargs):
    def build():
        ids = keras.Input((LENGTH,), dtype="int32")
        layer = TokenAndPositionEmbedding(VOCABULARY, LENGTH, UNITS, **kwargs)
        return keras.Model(ids, layer(ids))

    return build


def _language_model(architecture):
    def build():
        return language_model(
            architecture, VOCABULARY, units=UNITS, embedding_dim=6, num_heads=2
        )

    return build


_CASES = [
    Case("simple_rnn_tanh", _sequence_model(_recurrent(SimpleRNN)), _regression(), _mse),
    Case(
        "simple_rnn_relu_identity",  # the IRNN of Le et al. (2015)
        _sequence_model(
            _recurrent(SimpleRNN, activation="relu", recurrent_initializer="identity")
        ),
        _regression(),
        _mse,
    ),
    Case("lstm", _sequence_model(_recurrent(LSTM)), _regression(), _mse),
    Case(
        "lstm_masked",
        _sequence_model(_recurrent(LSTM), padded=True),
        _regression(padded=True),
        _mse,
    ),
    Case(
        "lstm_go_backwards",
        _sequence_model(_recurrent(LSTM, go_backwards=True)),
        _regression(),
        _mse,
    ),
    Case(
        "sine_position_encoding",
        _sequence_model(_positional(SinePositionEncoding)),
        _regression(),
        _mse,
    ),
    Case(
        "position_embedding",
        _sequence_model(_positional(lambda: PositionEmbedding(LENGTH + 2))),
        _regression(),
        _mse,
    ),
    Case("token_and_position_learned", _token_and_position(), _tokens_to_vectors(), _mse),
    Case(
        "token_and_position_sine_mask_zero",
        _token_and_position(positional="sine", mask_zero=True),
        _tokens_to_vectors(padded=True),
        _mse,
    ),
    # Explicit path: causal alone, causal with padding (query and value masks
    # from the Keras mask). Fused path: causal alone (`is_causal`), padding
    # alone (an explicit mask to the kernel, empty rows zeroed).
    Case(
        "mha_explicit_causal",
        _sequence_model(_attention(False, True)),
        _regression(),
        _mse,
    ),
    Case(
        "mha_explicit_causal_padding",
        _sequence_model(_attention(False, True), padded=True),
        _regression(padded=True),
        _mse,
    ),
    Case(
        "mha_fused_causal",
        _sequence_model(_attention(True, True)),
        _regression(),
        _mse,
        fused_attention=True,
    ),
    Case(
        "mha_fused_padding",
        _sequence_model(_attention(True, False), padded=True),
        _regression(padded=True),
        _mse,
        fused_attention=True,
    ),
    Case(
        "transformer_block_padding",  # causal and padding masks
        _sequence_model(_transformer_block, padded=True),
        _regression(padded=True),
        _mse,
        fused_attention=True,
    ),
    Case("lstm_language_model", _language_model("lstm"), _next_token, _language_model_compile),
    Case("rnn_language_model", _language_model("rnn"), _next_token, _language_model_compile),
    Case(
        "transformer_language_model",  # causal only: the fused `is_causal` path
        _language_model("transformer"),
        _next_token,
        _language_model_compile,
        fused_attention=True,
    ),
]
CASES = {case.name: case for case in _CASES}


def _table():
    for name, case in CASES.items():
        for policy in POLICIES:
            yield pytest.param(name, policy, id=f"{name}-{policy}")


@pytest.mark.parametrize("name, policy", list(_table()))
def test_mixed_precision_table(name, policy, rng):
    case = CASES[name]
    x, y = case.data(rng)

    # Float32 reference.
    keras.config.set_dtype_policy("float32")
    reference = case.build()
    want = to_float32(reference(x))

    keras.config.set_dtype_policy(policy)
    model = case.build()
    compute_dtype = policy.split("_")[1]
    model.set_weights(reference.get_weights())

    # (a) dtypes: compute-dtype output, float32 variables.
    assert model.dtype_policy.name == policy
    float_variables = [
        v for v in model.weights if "float" in keras.backend.standardize_dtype(v.dtype)
    ]
    assert float_variables and all(v.dtype == "float32" for v in float_variables)
    out = model(x)
    assert dtype_of(out) == compute_dtype, f"{name}: output dtype {dtype_of(out)}"

    # (b) close to float32 with the same weights.
    got = to_float32(out)
    assert np.isfinite(got).all()
    error = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert error < TOLERANCE[policy], f"{name} under {policy}: relative error {error:.2e}"

    # (c) five training steps. Adam moves a variable at a step by ~learning
    # rate when its gradient is non-zero and by exactly 0 when it is zero (and
    # a step the loss scaler skips moves nothing), so "every variable moved"
    # means a non-zero gradient reached every variable.
    case.compile(model)
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    before = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_weights}
    assert before
    history = model.fit(x, y, batch_size=BATCH, epochs=FIT_STEPS, shuffle=False, verbose=0)
    losses = history.history["loss"]  # one batch per epoch: one value per step
    assert len(losses) == FIT_STEPS
    assert np.isfinite(losses).all(), f"{name} under {policy}: losses {losses}"
    assert losses[-1] < losses[0], f"{name} under {policy}: losses {losses}"
    for v in model.trainable_weights:
        assert v.dtype == "float32"
        after = keras.ops.convert_to_numpy(v)
        assert np.isfinite(after).all(), f"{name}: {v.path} not finite"
        assert np.any(after != before[v.path]), f"{name} under {policy}: {v.path} got no gradient"


# --------------------------------------------------------------------------
# Softmax: large logits and fully padded rows.

SOFTMAX_TOLERANCE = {
    # The logits (~31) are rounded to the compute dtype by the Q·K matmul
    # (half an ulp at 31: 8e-3 for float16, 6e-2 for bfloat16), which moves
    # the softmax weights by about as much; the values and projections add a
    # few unit round-offs. Measured on the three backends: at most 3.7e-3
    # (float16) and 1.2e-2 (bfloat16); a softmax without the max subtraction
    # overflows in float16 (inf / NaN).
    "mixed_float16": 2e-2,
    "mixed_bfloat16": 1e-1,
}


def _large_logit_attention(use_fused):
    """One head, identity query/key projections: logits = (q · k) / 2 with a
    shared offset of 30 (q[0] = 6, k[0] = 10) plus O(1) terms."""
    layer = MultiHeadAttention(1, 4, use_fused=use_fused)
    layer.build((None, LENGTH, 4), (None, LENGTH, 4))
    weights = {v.path.split("/", 1)[1]: v for v in layer.weights}
    eye = np.eye(4, dtype="float32")[:, None, :]  # (4, 1, 4)
    value_kernel = np.random.default_rng(1).normal(size=(4, 1, 4)).astype("float32")
    for name, value in (
        ("query/kernel", eye),
        ("key/kernel", eye),
        ("value/kernel", value_kernel),
        ("attention_output/kernel", np.eye(4, dtype="float32")[None]),
    ):
        weights[name].assign(value)
    return layer


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("use_fused", [False, True], ids=["explicit", "fused"])
def test_softmax_with_large_logits_and_padded_rows(rng, policy, use_fused):
    query = rng.normal(size=(BATCH, LENGTH, 4)).astype("float32")
    key = rng.normal(size=(BATCH, LENGTH, 4)).astype("float32")
    query[..., 0], key[..., 0] = 6.0, 10.0  # every logit is 30 + O(1)
    value = rng.normal(size=(BATCH, LENGTH, 4)).astype("float32")
    padding = np.ones((BATCH, LENGTH), bool)
    padding[1, 3:] = False
    padding[2, :] = False  # a row of queries with no visible key at all

    def run():
        layer = _large_logit_attention(use_fused)
        return to_float32(
            layer(query, value, key, query_mask=padding, value_mask=padding,
                  use_causal_mask=True)
        )

    want = run()
    keras.config.set_dtype_policy(policy)
    got = run()
    assert np.isfinite(got).all()
    # Padded query rows see no key: the output is the (zero) output bias.
    np.testing.assert_array_equal(got[2], 0.0)
    np.testing.assert_array_equal(got[1, 3:], 0.0)
    error = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert error < SOFTMAX_TOLERANCE[policy], f"relative error {error:.2e}"


# --------------------------------------------------------------------------
# LSTM cell state: a long-memory accumulation.

CELL_STEPS = 300
# Per-unit increments i_t * g_t of the cell state (the forget gate is 1).
CELL_INCREMENTS = np.array([0.001, 0.003, 0.01, 0.03])
CELL_TOLERANCE = {
    # The increment i * g is computed in the compute dtype, so every step adds
    # the same value rounded once or twice: a systematic relative error of a
    # few unit round-offs (4.9e-4 float16, 3.9e-3 bfloat16) on c_T, and no
    # more if c is accumulated in float32. Accumulated in the compute dtype the
    # error is 2e-2 (float16) and up to 1.3e-1 (bfloat16) here.
    "mixed_float16": 5e-3,
    "mixed_bfloat16": 2e-2,
}


def _long_memory_lstm():
    """LSTM(4) on a constant input of 1: recurrent kernel 0, so every gate is
    constant: f = sigmoid(30) = 1, o = sigmoid(0) = 1/2, i = sigmoid(0) = 1/2
    and g = tanh(z_c) = 2 * increment, hence c_t = t * increment exactly."""
    layer = LSTM(4, return_state=True)
    layer.build((None, CELL_STEPS, 1))
    z_c = np.arctanh(2.0 * CELL_INCREMENTS)
    bias = np.concatenate([np.zeros(4), np.full(4, 30.0), z_c, np.zeros(4)])
    layer.set_weights(
        [np.zeros((1, 16), "float32"), np.zeros((4, 16), "float32"), bias.astype("float32")]
    )
    return layer


# keraseq's LSTM keeps `c` in float32 under mixed precision (keras.layers.LSTM
# keeps it in the compute dtype: c_T 2.94 instead of 3.00 in float16, 1.00
# instead of 0.90 in bfloat16 here).
@pytest.mark.parametrize("policy", POLICIES)
def test_lstm_cell_state_accumulates_in_float32(policy):
    x = np.ones((2, CELL_STEPS, 1), "float32")
    want = CELL_STEPS * CELL_INCREMENTS  # closed form of c_T
    _, _, c_float32 = _long_memory_lstm()(x)
    np.testing.assert_allclose(to_float32(c_float32)[0], want, rtol=1e-4)

    keras.config.set_dtype_policy(policy)
    outputs = _long_memory_lstm()(x)
    h, c = (to_float32(t) for t in outputs[1:])
    assert dtype_of(outputs[0]) == policy.split("_")[1]
    relative = np.max(np.abs(c[0] - want) / want)
    assert relative < CELL_TOLERANCE[policy], (
        f"c_T under {policy}: {c[0]} vs {want} (relative error {relative:.2e})"
    )
    np.testing.assert_allclose(h[0], 0.5 * np.tanh(want), rtol=CELL_TOLERANCE[policy])
