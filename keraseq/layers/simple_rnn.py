"""The simple (Elman) recurrent network with its recurrence written out."""

import keras
from keras import ops

from keraseq.layers._validation import check_positive_int
from keraseq.layers.recurrent import RecurrentCell, RecurrentLayer

_ARGS_DOC = """
    Args:
        units: positive int, the width of the hidden state `h_t`.
        activation: activation of the recurrence, default `"tanh"`; `"relu"` or
            any Keras activation (name or callable).
        use_bias: bool, default `True`, whether the recurrence has `bias`.
        kernel_initializer: initializer of `kernel` (`W_hx`), default
            `"glorot_uniform"`; also used for `output_kernel`.
        recurrent_initializer: initializer of `recurrent_kernel` (`W_hh`), default
            `"orthogonal"`; `"identity"` gives the IRNN of Le et al. (2015) when
            combined with `activation="relu"`.
        bias_initializer: initializer of `bias` and `output_bias`, default
            `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: optional
            regularizers of the matching weights, default `None`.
        kernel_constraint, recurrent_constraint, bias_constraint: optional
            constraints of the matching weights, default `None`.
        dropout: float in [0, 1), default 0. Fraction of the input features
            dropped (one mask per sequence, reused at every time step).
        recurrent_dropout: float in [0, 1), default 0. Fraction of `h_{t-1}`
            dropped before the recurrent matmul (one mask per sequence).
        seed: int or None, default `None`, seed of the dropout masks.
        output_units: positive int or None (default). When set, every step also
            computes the output projection `ŷ_t = h_t · output_kernel +
            output_bias` (`W_hy` of the classic formulation) and returns `ŷ_t`,
            while the state stays `h_t`.
"""


@keras.saving.register_keras_serializable(package="keraseq")
class SimpleRNNCell(RecurrentCell):
    """One step of the simple recurrent network (Elman 1990).

    Math, for an input step `x_t` of shape `(batch_size, features)` and the
    previous state `h_{t-1}` of shape `(batch_size, units)`:

        h_t = activation(x_t · kernel + h_{t-1} · recurrent_kernel + bias)
        ŷ_t = h_t · output_kernel + output_bias      (only with `output_units`)

    Weights: `kernel (features, units)`, `recurrent_kernel (units, units)`,
    `bias (units,)`, then, with `output_units`, `output_kernel (units,
    output_units)` and `output_bias (output_units,)`. Without `output_units` the
    weights are those of `keras.layers.SimpleRNNCell`, in the same order.
    """ + _ARGS_DOC + """
    Call arguments:
        inputs: float tensor `(batch_size, features)`.
        states: list with one tensor `h_{t-1}` of shape `(batch_size, units)`.
        training: bool, whether dropout applies.

    Returns:
        `(output, [h_t])`: `output` is `h_t` `(batch_size, units)`, or `ŷ_t`
        `(batch_size, output_units)` when `output_units` is set. Dtype: the
        layer's compute dtype.

    Raises:
        ValueError: for a non-positive `units` or `output_units`, a dropout rate
            outside [0, 1), or an activation/initializer Keras cannot interpret.

    Reference:
        Elman, "Finding structure in time" (1990); Le, Jaitly & Hinton, "A simple
        way to initialize recurrent networks of rectified linear units" (2015),
        https://arxiv.org/abs/1504.00941.
    """

    num_blocks = 1

    def __init__(self, units, output_units=None, **kwargs):
        check_positive_int("output_units", output_units, allow_none=True)
        super().__init__(units, **kwargs)
        self.output_units = output_units
        if output_units is not None:
            self.output_size = output_units

    def build(self, input_shape):
        super().build(input_shape)
        if self.output_units is not None:
            self.output_kernel = self.add_weight(
                shape=(self.units, self.output_units),
                name="output_kernel",
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
            self.output_bias = self.add_weight(
                shape=(self.output_units,),
                name="output_bias",
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def output_projection(self, h):
        """`ŷ = h · output_kernel + output_bias` for `h` of any rank ≥ 2."""
        return ops.matmul(h, self.output_kernel) + self.output_bias

    def recurrence(self, z_t, states, recurrent_mask):
        h_tm1 = states[0]
        if recurrent_mask is not None:
            h_tm1 = h_tm1 * recurrent_mask
        h = self.activation(z_t + ops.matmul(h_tm1, self.recurrent_kernel))
        if self.output_units is None or self._in_loop is not None:
            # Inside a SimpleRNN the projection is applied once, after the loop.
            return h, [h]
        return self.output_projection(h), [h]

    def get_config(self):
        return {**super().get_config(), "output_units": self.output_units}


@keras.saving.register_keras_serializable(package="keraseq")
class SimpleRNN(RecurrentLayer):
    """Simple recurrent network over a sequence: `SimpleRNNCell` at every step.

    `h_t = activation(x_t · kernel + h_{t-1} · recurrent_kernel + bias)`, from
    `h_0 = 0` (or `initial_state`), optionally `ŷ_t = h_t · output_kernel +
    output_bias` as the per-step output (`output_units`). The input projection
    `x_t · kernel + bias` is computed for all steps in one matmul before the time
    loop; the loop is the backend's symbolic loop, so any `sequence_length`
    (including a `None` time axis) runs with a graph of constant size.

    Without `output_units` the layer has the weights of
    `keras.layers.SimpleRNN` in the same order, so
    `layer.set_weights(keras_simple_rnn.get_weights())` reproduces its outputs.

    Masking: a step whose mask is False leaves the state unchanged and repeats
    the previous step's output (zeros before the first unmasked step), as
    `keras.layers.SimpleRNN` does. The output mask is the input mask when
    `return_sequences=True`.
    """ + _ARGS_DOC + """        return_sequences: bool, default `False`: return the output of every
            step `(batch_size, sequence_length, output_size)` instead of the last
            `(batch_size, output_size)`.
        return_state: bool, default `False`: also return the final state `h_T`
            `(batch_size, units)`.
        go_backwards: bool, default `False`: read the sequence in reverse; the
            returned sequence is then in reverse order too (Keras semantics).
        stateful: bool, default `False`: the last state of batch `k` is the
            initial state of batch `k + 1` (static batch size required);
            `reset_state()` zeroes it.
        unroll: bool, default `False`: unroll the loop (static length only).

    Call arguments:
        sequences: float tensor `(batch_size, sequence_length, features)`.
        initial_state: optional list `[h_0]`, `(batch_size, units)`.
        mask: optional bool (or integer 0/1) tensor `(batch_size,
            sequence_length)`, True at steps to use. A float mask is refused
            (an additive mask, 0 = keep, would be read the other way round).
        training: bool, whether dropout applies.

    Returns:
        The output sequence or last output (`output_size` is `output_units` when
        set, else `units`), followed by `h_T` when `return_state=True`. Dtype: the
        layer's compute dtype.

    Raises:
        ValueError: for the bad arguments listed above, an input whose rank is
            not 3 or whose dtype is not numeric, a mask whose shape is not
            `(batch_size, sequence_length)` or whose dtype is not bool or
            integer, or an `initial_state` of the wrong count, width, batch
            size or rank.

    Example:
        >>> layer = keraseq.SimpleRNN(32, activation="relu",
        ...                           recurrent_initializer="identity",
        ...                           return_sequences=True)
        >>> layer(np.zeros((4, 10, 8), "float32")).shape
        (4, 10, 32)

    Reference:
        Elman (1990); Le, Jaitly & Hinton (2015), https://arxiv.org/abs/1504.00941.
    """

    cell_class = SimpleRNNCell
    extra_cell_arguments = ("output_units",)

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        output_units=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        **kwargs,
    ):
        cell_kwargs = dict(locals())
        for name in ("self", "kwargs", "__class__", "return_sequences",
                     "return_state", "go_backwards", "stateful", "unroll"):
            cell_kwargs.pop(name, None)
        super().__init__(
            cell_kwargs,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            **kwargs,
        )

    @property
    def output_units(self):
        return self.cell.output_units

    def inner_loop(self, sequences, initial_state, mask, training=False):
        # The loop carries and emits `h_t`; the output projection runs once on all
        # steps afterwards. (Keras's masked scan on JAX repeats `states[0]`, i.e.
        # `h`, at a masked step, so the projection cannot live inside the loop.)
        last_output, outputs, states = super().inner_loop(
            sequences, initial_state, mask, training=training
        )
        if self.output_units is None:
            return last_output, outputs, states
        last_output = self.cell.output_projection(last_output)
        if self.return_sequences:  # otherwise RNN.call only reads last_output
            outputs = self.cell.output_projection(outputs)
        if mask is not None:
            # Before the first unmasked step Keras emits zeros, not ŷ(h = 0).
            mask = ops.cast(mask, "int32")
            if self.go_backwards:
                mask = ops.flip(mask, axis=1)
            started = ops.cumsum(mask, axis=1) > 0  # (batch_size, sequence_length)
            last_output = ops.where(
                started[:, -1:], last_output, ops.zeros_like(last_output)
            )
            if self.return_sequences:
                outputs = ops.where(
                    ops.expand_dims(started, -1), outputs, ops.zeros_like(outputs)
                )
        return last_output, outputs, states
