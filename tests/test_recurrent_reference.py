"""keraseq's SimpleRNN and LSTM against independent references: torch.nn.RNN /
torch.nn.LSTM with mapped weights, hand-computed closed forms (two steps, the
output projection, the dropout masks), and a numpy re-implementation of the
LSTM gates (for `LSTM.gate_activations`).

The comparisons with Keras's built-in layers live in tests/test_recurrent.py.
"""

import math

import keras
import numpy as np
import pytest
import torch

from keraseq.layers.lstm import LSTM
from keraseq.layers.simple_rnn import SimpleRNN, SimpleRNNCell

from conftest import BACKEND

TOL = 1e-5  # float32

# Right-padded lengths 5, 3, 1 and a left-padded row.
MASK = np.array(
    [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [0, 0, 1, 1, 1],
    ],
    dtype=bool,
)

def to_np(x):
    return keras.ops.convert_to_numpy(x)


def assert_close(actual, expected, tol=TOL):
    np.testing.assert_allclose(
        to_np(actual).astype("float64"), np.asarray(expected, "float64"), atol=tol, rtol=tol
    )


def randomize(layer, rng, scale=0.5):
    weights = [rng.normal(0.0, scale, w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)
    return weights


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_simple_rnn(x, kernel, recurrent_kernel, bias, activation=np.tanh,
                  output_kernel=None, output_bias=None, mask=None):
    """float64 reference; masked steps keep h and repeat the previous output
    (zeros before the first unmasked step), as keras.layers.RNN does."""
    batch, length, _ = x.shape
    h = np.zeros((batch, recurrent_kernel.shape[0]))
    previous, outputs = None, []
    for t in range(length):
        h_new = activation(x[:, t] @ kernel + h @ recurrent_kernel + bias)
        y = h_new if output_kernel is None else h_new @ output_kernel + output_bias
        keep = np.ones((batch, 1), bool) if mask is None else mask[:, t : t + 1]
        previous = np.zeros_like(y) if previous is None else previous
        h = np.where(keep, h_new, h)
        previous = np.where(keep, y, previous)
        outputs.append(previous)
    return np.stack(outputs, axis=1), h


def np_lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None, mask=None,
            go_backwards=False):
    """float64 reference of every gate at every processed step, and (h_T, c_T)."""
    batch, length, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units)) if h0 is None else np.asarray(h0, "float64")
    c = np.zeros((batch, units)) if c0 is None else np.asarray(c0, "float64")
    names = ("input", "forget", "candidate", "output", "cell", "hidden")
    previous = {name: np.zeros((batch, units)) for name in names}
    steps = {name: [] for name in names}
    for t in reversed(range(length)) if go_backwards else range(length):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)  # Keras order i, f, c, o
        i, f, g, o = sigmoid(z_i), sigmoid(z_f), np.tanh(z_c), sigmoid(z_o)
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        values = dict(zip(names, (i, f, g, o, c_new, h_new)))
        keep = np.ones((batch, 1), bool) if mask is None else mask[:, t : t + 1]
        h, c = np.where(keep, h_new, h), np.where(keep, c_new, c)
        for name in names:
            previous[name] = np.where(keep, values[name], previous[name])
            steps[name].append(previous[name])
    return {name: np.stack(v, axis=1) for name, v in steps.items()}, h, c


# --------------------------------------------------------------------------
# 2. torch.nn.RNN / torch.nn.LSTM with mapped weights
# --------------------------------------------------------------------------


def torch_twin(kind, weights, features, units, nonlinearity="tanh"):
    """A torch.nn module with keraseq's weights: weight_ih = kernel.T,
    weight_hh = recurrent_kernel.T, bias_ih = bias, bias_hh = 0. torch's LSTM
    rows are i, f, g, o: Keras's column order i, f, c, o."""
    kernel, recurrent_kernel, bias = weights
    if kind == "simple":
        module = torch.nn.RNN(features, units, nonlinearity=nonlinearity, batch_first=True)
    else:
        module = torch.nn.LSTM(features, units, batch_first=True)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(kernel.T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(recurrent_kernel.T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy(bias))
        module.bias_hh_l0.zero_()
    return module


def torch_run(module, x):
    with torch.no_grad():
        out, state = module(torch.from_numpy(x))
    if isinstance(state, tuple):  # LSTM: (h_n, c_n), each (1, batch, units)
        return out.numpy(), [s[0].numpy() for s in state]
    return out.numpy(), [state[0].numpy()]


@pytest.mark.parametrize(
    "kind, activation", [("simple", "tanh"), ("simple", "relu"), ("lstm", "tanh")]
)
def test_matches_torch(kind, activation, rng):
    """Every step and the final state(s), several batch sizes and lengths."""
    features, units = 3, 5
    cls = SimpleRNN if kind == "simple" else LSTM
    layer = cls(units, activation=activation, return_sequences=True, return_state=True)
    layer.build((None, None, features))
    weights = randomize(layer, rng)
    module = torch_twin(kind, weights, features, units, nonlinearity=activation)
    for batch, length in ((1, 1), (1, 7), (3, 1), (3, 7), (4, 12)):
        x = rng.normal(size=(batch, length, features)).astype("float32")
        ours = layer(x)
        expected, expected_states = torch_run(module, x)
        assert_close(ours[0], expected)
        for state, expected_state in zip(ours[1:], expected_states):
            assert_close(state, expected_state)


@pytest.mark.parametrize("kind", ["simple", "lstm"])
def test_long_sequence_matches_torch(kind, rng):
    """2000 steps. Tolerance 1e-4: float32 rounding accumulates over 2000 steps
    (both sides sum x·W, h·U and the bias in a different order at every step);
    measured at most 1.9e-6 (IRNN, TensorFlow) and 2.4e-7 (LSTM)."""
    features, units, length = 3, 8, 2000
    if kind == "simple":
        layer = SimpleRNN(units, activation="relu", recurrent_initializer="identity",
                          return_sequences=True, return_state=True)
        layer.build((None, None, features))
        # Small input weights so the IRNN's reflected random walk stays O(1).
        weights = randomize(layer, rng, scale=0.01)
        weights[1] = np.eye(units, dtype="float32")  # keep the identity recurrence
        layer.set_weights(weights)
    else:
        layer = LSTM(units, return_sequences=True, return_state=True)
        layer.build((None, None, features))
        weights = randomize(layer, rng)
    module = torch_twin(kind, weights, features, units, nonlinearity="relu")
    x = rng.normal(size=(2, length, features)).astype("float32")
    ours = layer(x)
    expected, expected_states = torch_run(module, x)
    assert np.all(np.isfinite(to_np(ours[0])))
    assert np.abs(expected).max() > 0.1  # not a trivially vanished signal
    assert_close(ours[0], expected, tol=1e-4)
    for state, expected_state in zip(ours[1:], expected_states):
        assert_close(state, expected_state, tol=1e-4)


# --------------------------------------------------------------------------
# 3. Closed forms
# --------------------------------------------------------------------------

CONSTANT_WEIGHTS = dict(
    kernel_initializer=keras.initializers.Constant(0.1),
    recurrent_initializer=keras.initializers.Constant(0.2),
    bias_initializer="zeros",
    return_sequences=True,
)


def test_simple_rnn_two_steps_by_hand():
    """units 2, features 3, kernel 0.1, recurrent 0.2, bias 0, x = 1:
    z_1 = 3·0.1 = 0.3 and z_2 = 0.3 + 2·0.2·h_1."""
    x = np.ones((1, 2, 3), "float32")
    tanh_out = SimpleRNN(2, **CONSTANT_WEIGHTS)(x)
    h1 = math.tanh(0.3)
    h2 = math.tanh(0.3 + 0.4 * h1)
    assert_close(tanh_out, [[[h1, h1], [h2, h2]]])
    relu_out = SimpleRNN(2, activation="relu", **CONSTANT_WEIGHTS)(x)
    assert_close(relu_out, [[[0.3, 0.3], [0.42, 0.42]]])  # 0.3 + 0.4 * 0.3


def test_lstm_two_steps_by_hand():
    """Same constants: every gate sees the same pre-activation z_t."""
    x = np.ones((1, 2, 3), "float32")
    layer = LSTM(2, unit_forget_bias=False, return_state=True, **CONSTANT_WEIGHTS)
    out, h, c = layer(x)

    def sig(z):
        return 1.0 / (1.0 + math.exp(-z))

    z1 = 0.3
    c1 = sig(z1) * math.tanh(z1)  # f·0 + i·g
    h1 = sig(z1) * math.tanh(c1)
    z2 = 0.3 + 2 * 0.2 * h1
    c2 = sig(z2) * c1 + sig(z2) * math.tanh(z2)
    h2 = sig(z2) * math.tanh(c2)
    assert_close(out, [[[h1, h1], [h2, h2]]])
    assert_close(h, [[h2, h2]])
    assert_close(c, [[c2, c2]])
    gates = layer.gate_activations(x)
    assert_close(gates["forget"], [[[sig(z1)] * 2, [sig(z2)] * 2]])
    assert_close(gates["candidate"], [[[math.tanh(z1)] * 2, [math.tanh(z2)] * 2]])
    assert_close(gates["cell"], [[[c1, c1], [c2, c2]]])


def test_output_projection(rng):
    """ŷ_t = h_t · W_hy + b_y at every step; the state stays h_T."""
    layer = SimpleRNN(4, output_units=3, return_sequences=True, return_state=True)
    layer.build((None, None, 2))
    kernel, recurrent_kernel, bias, output_kernel, output_bias = randomize(layer, rng)
    assert output_kernel.shape == (4, 3) and output_bias.shape == (3,)
    x = rng.normal(size=(3, 6, 2)).astype("float32")
    expected, h = np_simple_rnn(x, kernel, recurrent_kernel, bias,
                                output_kernel=output_kernel, output_bias=output_bias)
    out, state = layer(x)
    assert tuple(out.shape) == (3, 6, 3)
    assert_close(out, expected)
    assert_close(state, h)


def test_output_projection_with_mask(rng):
    """Masked steps repeat the previous ŷ (zeros before the first valid step),
    with output_units different from and equal to units."""
    x = rng.normal(size=(4, 5, 2)).astype("float32")
    for output_units in (4, 3):
        layer = SimpleRNN(4, output_units=output_units, return_sequences=True)
        layer.build((None, None, 2))
        weights = randomize(layer, rng)
        expected, _ = np_simple_rnn(x, *weights[:3], output_kernel=weights[3],
                                    output_bias=weights[4], mask=MASK)
        assert_close(layer(x, mask=MASK), expected)


# --------------------------------------------------------------------------
# 4. LSTM.gate_activations against a numpy re-implementation of the gates
# --------------------------------------------------------------------------


def _gates_layer(rng, **kwargs):
    layer = LSTM(4, return_sequences=True, **kwargs)
    layer.build((None, None, 3))
    return layer, randomize(layer, rng)


def assert_gates(gates, expected):
    assert sorted(gates) == sorted(expected)
    for name in expected:
        assert tuple(gates[name].shape) == expected[name].shape
        assert_close(gates[name], expected[name])


def test_gate_activations(rng):
    x = rng.normal(size=(3, 6, 3)).astype("float32")
    h0, c0 = rng.normal(size=(2, 3, 4)).astype("float32")
    for go_backwards in (False, True):
        layer, weights = _gates_layer(rng, go_backwards=go_backwards)
        expected, _, _ = np_lstm(x, *weights, go_backwards=go_backwards)
        gates = layer.gate_activations(x)
        assert_gates(gates, expected)
        # hidden is the layer's own output (reversed order with go_backwards).
        assert_close(gates["hidden"], to_np(layer(x)))
        expected, _, _ = np_lstm(x, *weights, h0=h0, c0=c0, go_backwards=go_backwards)
        assert_gates(layer.gate_activations(x, initial_state=[h0, c0]), expected)
    # A stateful layer starts from its stored state and leaves it unchanged.
    layer = LSTM(4, return_sequences=True, stateful=True)
    layer.build((3, None, 3))
    weights = randomize(layer, rng)
    layer(x)
    h, c = (to_np(s) for s in layer.states)
    expected, _, _ = np_lstm(x, *weights, h0=h, c0=c)
    assert_gates(layer.gate_activations(x), expected)
    assert_close(layer.states[0], h)


def test_gate_activations_with_mask(rng):
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    for go_backwards in (False, True):
        layer, weights = _gates_layer(rng, go_backwards=go_backwards)
        expected, _, _ = np_lstm(x, *weights, mask=MASK, go_backwards=go_backwards)
        gates = layer.gate_activations(x, mask=MASK)
        assert_gates(gates, expected)
        assert_close(gates["hidden"], to_np(layer(x, mask=MASK)))


# --------------------------------------------------------------------------
# 5. Dropout masks, in closed form: one mask per sequence, reused at every step
# --------------------------------------------------------------------------


def _masks_test_layer(**kwargs):
    layer = SimpleRNN(
        6,
        activation="relu",
        kernel_initializer="identity",
        use_bias=False,
        return_sequences=True,
        seed=3,
        **kwargs,
    )
    layer.build((None, None, 6))
    return layer


def test_dropout_masks_are_shared_across_steps():
    # Input dropout. relu, identity kernel, zero recurrent kernel, x = 1:
    # h_t is the keep-mask itself (0 or 1 / (1 - 0.5) = 2) at every step.
    layer = _masks_test_layer(recurrent_initializer="zeros", dropout=0.5)
    out = to_np(layer(np.ones((8, 7, 6), "float32"), training=True))
    assert set(np.unique(out)) == {0.0, 2.0}
    for t in range(7):
        np.testing.assert_array_equal(out[:, t], out[:, 0])
    assert len({tuple(row) for row in out[:, 0]}) > 1  # one mask per sequence

    # Recurrent dropout. relu, identity kernel and recurrent kernel, x = 1:
    # h_t = 1 + m * h_{t-1}; a kept unit (m = 2) follows 1, 3, 7, 15, ... =
    # 2^(t+1) - 1 and a dropped unit (m = 0) stays at 1, only if the same mask
    # is used at every step.
    layer = _masks_test_layer(recurrent_initializer="identity", recurrent_dropout=0.5)
    out = to_np(layer(np.ones((8, 6, 6), "float32"), training=True))
    kept = 2.0 ** np.arange(1, 7) - 1.0
    trajectories = out.transpose(0, 2, 1).reshape(-1, 6)  # (batch * units, steps)
    is_kept = np.all(trajectories == kept, axis=1)
    is_dropped = np.all(trajectories == 1.0, axis=1)
    assert np.all(is_kept | is_dropped)
    assert is_kept.any() and is_dropped.any()


def test_cell_in_keras_rnn_dropout_follows_training_flag():
    """A keraseq cell driven by `keras.layers.RNN` applies dropout only when
    training. (Its masks are drawn per step there -- documented in
    `RecurrentCell`; keraseq's own sequence layers draw one per sequence, which
    `test_dropout_masks_are_shared_across_steps` pins.)"""
    cell = SimpleRNNCell(
        6,
        activation="relu",
        kernel_initializer="identity",
        recurrent_initializer="zeros",
        use_bias=False,
        dropout=0.5,
        seed=3,
    )
    layer = keras.layers.RNN(cell, return_sequences=True)
    x = np.ones((8, 7, 6), "float32")
    np.testing.assert_array_equal(to_np(layer(x, training=False)), x)
    out = to_np(layer(x, training=True))
    assert set(np.unique(out)) <= {0.0, 2.0}  # inverted dropout at rate 0.5
    assert (out == 0).any() and (out == 2).any()
