"""Long short-term memory with its four gates written out and inspectable."""

import keras
from keras import ops

from keraseq.layers._validation import check_bool, check_lookup
from keraseq.layers.recurrent import RecurrentCell, RecurrentLayer, _check_rank3

_MATH = """
    Math, with `z = x_t · kernel + h_{t-1} · recurrent_kernel + bias` split into
    four `units`-wide blocks in Keras's gate order i, f, c, o:

        i_t = recurrent_activation(z_i)          input gate
        f_t = recurrent_activation(z_f)          forget gate
        g_t = activation(z_c)                    candidate cell
        o_t = recurrent_activation(z_o)          output gate
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h_t = o_t ⊙ activation(c_t)

    with `recurrent_activation = sigmoid` and `activation = tanh` by default.
    Weights, in Keras's layout and order: `kernel (features, 4 * units)`,
    `recurrent_kernel (units, 4 * units)`, `bias (4 * units,)`, columns grouped
    i, f, c, o -- so `set_weights(keras.layers.LSTM(...).get_weights())` gives
    the built-in's outputs.
"""

_ARGS_DOC = """
    Args:
        units: positive int, width of `h_t` and `c_t`.
        activation: default `"tanh"`, applied to the candidate and to `c_t`.
        recurrent_activation: default `"sigmoid"`, applied to the gates i, f, o.
        use_bias: bool, default `True`.
        kernel_initializer: default `"glorot_uniform"`.
        recurrent_initializer: default `"orthogonal"`.
        bias_initializer: default `"zeros"`.
        unit_forget_bias: bool, default `True`: the forget-gate block of the bias
            starts at 1 (Jozefowicz et al. 2015) and the rest from
            `bias_initializer`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: default
            `None`.
        kernel_constraint, recurrent_constraint, bias_constraint: default `None`.
        dropout: float in [0, 1), default 0: dropout on the input features (one
            mask per sequence, reused at every time step).
        recurrent_dropout: float in [0, 1), default 0: dropout on `h_{t-1}` before
            the recurrent matmul (one mask per sequence).
        seed: int or None, default `None`: seed of the dropout masks.
"""


@keras.saving.register_keras_serializable(package="keraseq")
class LSTMCell(RecurrentCell):
    """One step of a long short-term memory network (Hochreiter & Schmidhuber 1997).
    """ + _MATH + _ARGS_DOC + """
    Call arguments:
        inputs: float tensor `(batch_size, features)`.
        states: `[h_{t-1}, c_{t-1}]`, each `(batch_size, units)`.
        training: bool, whether dropout applies.

    Returns:
        `(h_t, [h_t, c_t])`, each `(batch_size, units)`, in the compute dtype.

    Raises:
        ValueError: non-positive `units`, a dropout rate outside [0, 1), an
            activation or initializer Keras cannot interpret.

    Reference:
        Hochreiter & Schmidhuber, "Long short-term memory" (1997); Gers,
        Schmidhuber & Cummins, "Learning to forget" (2000).
    """

    num_blocks = 4

    def __init__(
        self,
        units,
        recurrent_activation="sigmoid",
        unit_forget_bias=True,
        **kwargs,
    ):
        resolved = check_lookup(
            "recurrent_activation", recurrent_activation, keras.activations.get
        )
        unit_forget_bias = check_bool("unit_forget_bias", unit_forget_bias)
        super().__init__(units, **kwargs)
        self.recurrent_activation = resolved
        self.unit_forget_bias = unit_forget_bias
        self.state_size = [self.units, self.units]
        # Keras would cast every argument, the cell state too, to the compute
        # dtype at each step; the cell casts its inputs and `h` itself.
        self._convert_input_args = False

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base = self.bias_initializer
        units = self.units

        def initializer(shape, dtype=None):
            return ops.concatenate(
                [
                    base((units,), dtype=dtype),
                    ops.ones((units,), dtype=dtype),
                    base((2 * units,), dtype=dtype),
                ]
            )

        return initializer

    def gates(self, z_t, states, recurrent_mask=None):
        """The four gates, the new cell state and the new hidden state of one step.

        Args:
            z_t: `x_t · kernel + bias`, `(batch_size, 4 * units)`.
            states: `[h_{t-1}, c_{t-1}]`, each `(batch_size, units)`.
            recurrent_mask: optional dropout keep-mask for `h_{t-1}`.

        Returns:
            `(i, f, g, o, c_t, h_t)`, each `(batch_size, units)`.
        """
        h_tm1, c_tm1 = states
        h_tm1 = ops.cast(h_tm1, self.compute_dtype)
        if recurrent_mask is not None:
            h_tm1 = h_tm1 * recurrent_mask
        z = z_t + ops.matmul(h_tm1, self.recurrent_kernel)
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        g = self.activation(z_c)
        o = self.recurrent_activation(z_o)
        # The cell state keeps the dtype it comes in (float32 inside keraseq's
        # LSTM under mixed precision), so small updates are not rounded away.
        c = ops.cast(f, c_tm1.dtype) * c_tm1 + ops.cast(i * g, c_tm1.dtype)
        h = o * self.activation(ops.cast(c, o.dtype))
        return i, f, g, o, c, h

    def recurrence(self, z_t, states, recurrent_mask):
        *_, c, h = self.gates(z_t, states, recurrent_mask)
        return h, [h, c]

    def get_config(self):
        return {
            **super().get_config(),
            "recurrent_activation": keras.activations.serialize(self.recurrent_activation),
            "unit_forget_bias": self.unit_forget_bias,
        }


GATE_NAMES = ("input", "forget", "candidate", "output", "cell", "hidden")


class _GateProbe(keras.layers.Layer):
    """A view of an `LSTMCell` whose per-step output is every gate, concatenated.

    The output is also carried as the first state: Keras's masked loop on JAX
    repeats `states[0]` at a masked step, so the output must be `states[0]`.
    """

    def __init__(self, cell, **kwargs):
        super().__init__(dtype=cell.dtype_policy, **kwargs)
        self.cell = cell
        self.output_size = len(GATE_NAMES) * cell.units
        self.state_size = [self.output_size, cell.units, cell.units]

    def build(self, input_shape):
        self.built = True

    def call(self, inputs, states):
        _, h_tm1, c_tm1 = states
        values = self.cell.gates(self.cell.project(inputs), [h_tm1, c_tm1])
        *_, c, h = values
        everything = ops.concatenate(values, axis=-1)
        return everything, [everything, h, c]


@keras.saving.register_keras_serializable(package="keraseq")
class LSTM(RecurrentLayer):
    """Long short-term memory layer over a sequence, gates written out.
    """ + _MATH + """
    The input projection `x_t · kernel + bias` is computed for all steps in one
    matmul before the time loop; the loop is the backend's symbolic loop (any
    `sequence_length`, including a `None` time axis). Use `gate_activations()` to
    read `i, f, g, o, c, h` at every time step.

    Masking: a step whose mask is False carries `h` and `c` forward unchanged and
    repeats the previous output (zeros before the first unmasked step), as
    `keras.layers.LSTM` does; the output mask is the input mask when
    `return_sequences=True`.
    """ + _ARGS_DOC + """        return_sequences: bool, default `False`: return every `h_t`,
            `(batch_size, sequence_length, units)`, instead of the last,
            `(batch_size, units)`.
        return_state: bool, default `False`: also return `h_T` and `c_T`, each
            `(batch_size, units)`.
        go_backwards: bool, default `False`: read the sequence in reverse; the
            returned sequence is then in reverse order too (Keras semantics).
        stateful: bool, default `False`: the last states of batch `k` are the
            initial states of batch `k + 1` (static batch size required);
            `reset_state()` zeroes them.
        unroll: bool, default `False`: unroll the loop (static length only).

    Call arguments:
        sequences: float tensor `(batch_size, sequence_length, features)`.
        initial_state: optional `[h_0, c_0]`, each `(batch_size, units)`.
        mask: optional bool (or integer 0/1) tensor `(batch_size,
            sequence_length)`, True at steps to use. A float mask is refused
            (an additive mask, 0 = keep, would be read the other way round).
        training: bool, whether dropout applies.

    Returns:
        The output sequence or last output, then `h_T, c_T` when
        `return_state=True`. Dtype: the layer's compute dtype.

    Raises:
        ValueError: for the bad arguments above, an input whose rank is not 3 or
            whose dtype is not numeric, a mask whose shape is not `(batch_size,
            sequence_length)` or whose dtype is not bool or integer, or an
            `initial_state` of the wrong count, width, batch size or rank.

    Example:
        >>> lstm = keraseq.LSTM(16, return_sequences=True)
        >>> y = lstm(np.zeros((2, 7, 4), "float32"))          # (2, 7, 16)
        >>> gates = lstm.gate_activations(np.zeros((2, 7, 4), "float32"))
        >>> gates["forget"].shape
        (2, 7, 16)

    Reference:
        Hochreiter & Schmidhuber (1997),
        https://www.bioinf.jku.at/publications/older/2604.pdf; Gers et al. (2000).
    """

    cell_class = LSTMCell
    extra_cell_arguments = ("recurrent_activation", "unit_forget_bias")

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
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

    def inner_loop(self, sequences, initial_state, mask, training=False):
        h_0, c_0 = initial_state
        # Mixed precision: the cell state runs in float32 (Keras's LSTM keeps it
        # in the compute dtype, where bfloat16 stops adding small updates);
        # `return_state` hands it back in the compute dtype.
        return super().inner_loop(
            sequences, [h_0, ops.cast(c_0, "float32")], mask, training=training
        )

    @property
    def recurrent_activation(self):
        return self.cell.recurrent_activation

    @property
    def unit_forget_bias(self):
        return self.cell.unit_forget_bias

    def gate_activations(self, sequences, initial_state=None, mask=None):
        """Every gate at every time step, for inspection (inference: no dropout).

        Runs the same loop as `call` (same `go_backwards`, masking and initial
        state; a stateful layer starts from its stored state and does not update
        it).

        Args:
            sequences: float `(batch_size, sequence_length, features)`.
            initial_state: optional `[h_0, c_0]`, each `(batch_size, units)`.
            mask: optional bool `(batch_size, sequence_length)`.

        Returns:
            dict with keys `"input"`, `"forget"`, `"candidate"`, `"output"` (the
            gates i, f, g, o), `"cell"` (`c_t`) and `"hidden"` (`h_t`), each a
            tensor `(batch_size, sequence_length, units)` in the order the steps
            were processed (reversed when `go_backwards=True`). Masked steps
            repeat the previous step's values (zeros before the first unmasked
            step).

        Raises:
            ValueError: if `sequences` does not have rank 3.
        """
        sequences = ops.convert_to_tensor(sequences, dtype=self.compute_dtype)
        if not self.built:
            self.build(sequences.shape)
        _check_rank3(sequences.shape, "sequences")
        if initial_state is None and self.stateful and self.states is not None:
            initial_state = [ops.convert_to_tensor(s) for s in self.states]
        if initial_state is None:
            initial_state = self.get_initial_state(ops.shape(sequences)[0])
        initial_state = [ops.convert_to_tensor(s, dtype=self.compute_dtype) for s in initial_state]
        no_output_yet = ops.zeros(
            (ops.shape(sequences)[0], len(GATE_NAMES) * self.units), dtype=self.compute_dtype
        )
        initial_state = [no_output_yet, *initial_state]
        probe = keras.layers.RNN(
            _GateProbe(self.cell),
            return_sequences=True,
            go_backwards=self.go_backwards,
            dtype=self.dtype_policy,
        )
        everything = probe(sequences, initial_state=initial_state, mask=mask)
        blocks = ops.split(everything, len(GATE_NAMES), axis=-1)
        return dict(zip(GATE_NAMES, blocks))
