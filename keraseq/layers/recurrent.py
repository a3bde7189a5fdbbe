"""Shared machinery of keraseq's recurrent layers (simple RNN and LSTM).

A recurrent layer here is a cell (the explicit math of one time step) driven over
the time axis by `keras.layers.RNN`, which supplies the Keras semantics of
`return_sequences`, `return_state`, `initial_state`, `go_backwards`, `stateful`,
masking and the backend's symbolic loop (`lax.scan` on JAX, `tf.while_loop` on
TensorFlow -- which tf2onnx turns into an ONNX `Loop` with a dynamic time axis --
and a Python loop on PyTorch).

Two things are added on top of `keras.layers.RNN`:

* the input projection `x_t · kernel + bias` is hoisted out of the loop and
  computed for every time step in one matmul (the loop then only does the
  recurrent matmul and the gates); the math is unchanged. (Not where the
  projection inside the step measured faster: TensorFlow without a GPU, and
  the LSTM on JAX without one; see `_fast_path.hoist_input_projection`.)
* a backend fast path (`keraseq/layers/_fast_path.py`): with the standard
  activations, no mask and no recurrent dropout, PyTorch runs `torch.lstm` /
  `torch.rnn_tanh` / `torch.rnn_relu` and JAX on a GPU runs cuDNN's LSTM, the
  same math in one fused kernel.
* dropout masks are drawn once per call, outside the loop, and reused at every
  time step (Gal & Ghahramani 2016, https://arxiv.org/abs/1512.05287), as Keras
  does; `training` decides whether they apply.
"""

import keras
from keras import ops

from keraseq.layers import _fast_path
from keraseq.layers._validation import (
    check_bool,
    check_last_axis_known,
    check_lookup,
    check_mask_dtype,
    check_mask_shape,
    check_numeric,
    check_positive_int,
    check_rank,
    check_rate,
    check_seed,
    tensor_shape,
)

# Constructor arguments shared by every cell and forwarded by its sequence layer.
_SERIALIZED = {
    "activation": keras.activations,
    "kernel_initializer": keras.initializers,
    "recurrent_initializer": keras.initializers,
    "bias_initializer": keras.initializers,
    "kernel_regularizer": keras.regularizers,
    "recurrent_regularizer": keras.regularizers,
    "bias_regularizer": keras.regularizers,
    "kernel_constraint": keras.constraints,
    "recurrent_constraint": keras.constraints,
    "bias_constraint": keras.constraints,
}
_PLAIN = ("units", "use_bias", "dropout", "recurrent_dropout", "seed")


class RecurrentCell(keras.layers.Layer):
    """Base class of keraseq's cells: one time step of an explicit recurrence.

    Subclasses set `num_blocks` (how many `units`-wide blocks the kernel has: 1 for
    a simple RNN, 4 for the LSTM gates) and implement `recurrence(z_t, states,
    recurrent_mask)`, where `z_t = x_t · kernel + bias` has already been computed.

    Dropout: keraseq's sequence layers draw one mask per sequence and reuse it at
    every step. A cell driven directly by `keras.layers.RNN(cell)` draws its masks
    at each call of the cell, i.e. per step on TensorFlow and PyTorch (Keras's
    per-sequence mask cache is private API); it still applies dropout only when
    `training` is true.
    """

    num_blocks = 1

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
        **kwargs,
    ):
        units = check_positive_int("units", units)
        dropout = check_rate("dropout", dropout)
        recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
        use_bias = check_bool("use_bias", use_bias)
        seed = check_seed(seed)
        resolved = {}
        arguments = locals()
        for name, module in _SERIALIZED.items():
            resolved[name] = check_lookup(name, arguments[name], module.get)
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = use_bias
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.seed = seed
        for name, value in resolved.items():
            setattr(self, name, value)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.state_size = self.units
        self.output_size = self.units
        # Set by the sequence layer while it drives the loop: (recurrent_mask,
        # projected): use this recurrent dropout mask; `projected` says whether
        # the inputs already are `x_t · kernel + bias`.
        object.__setattr__(self, "_in_loop", None)

    # -- weights --------------------------------------------------------------
    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        check_last_axis_known("inputs", input_shape, "features")
        input_dim = input_shape[-1]
        width = self.num_blocks * self.units
        self.kernel = self.add_weight(
            shape=(input_dim, width),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, width),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(width,),
                name="bias",
                initializer=self._bias_initializer(),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None

    # -- math -------------------------------------------------------------------
    def project(self, inputs):
        """`inputs · kernel + bias` for a step `(batch_size, features)` or a whole
        sequence `(batch_size, sequence_length, features)`."""
        z = ops.matmul(inputs, self.kernel)
        if self.use_bias:
            z = z + self.bias
        return z

    def dropout_mask(self, like, rate):
        """A scaled Bernoulli keep-mask shaped like `like` (inverted dropout)."""
        return keras.random.dropout(ops.ones_like(like), rate=rate, seed=self.seed_generator)

    def recurrence(self, z_t, states, recurrent_mask):
        raise NotImplementedError

    def call(self, inputs, states, training=False):
        inputs = ops.cast(inputs, self.compute_dtype)
        if self._in_loop is not None:
            # Driven by a keraseq sequence layer (input dropout already applied).
            recurrent_mask, projected = self._in_loop
            z_t = inputs if projected else self.project(inputs)
            return self.recurrence(z_t, states, recurrent_mask)
        recurrent_mask = None
        if training and self.dropout > 0:
            inputs = inputs * self.dropout_mask(inputs, self.dropout)
        if training and self.recurrent_dropout > 0:
            recurrent_mask = self.dropout_mask(states[0], self.recurrent_dropout)
        return self.recurrence(self.project(inputs), states, recurrent_mask)

    def get_initial_state(self, batch_size=None):
        sizes = self.state_size if isinstance(self.state_size, list) else [self.state_size]
        return [ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in sizes]

    def get_config(self):
        config = {name: getattr(self, name) for name in _PLAIN}
        for name, module in _SERIALIZED.items():
            config[name] = module.serialize(getattr(self, name))
        return {**super().get_config(), **config}


def _check_rank3(shape, argument="inputs"):
    check_rank(argument, shape, 3, "(batch_size, sequence_length, features)")


class RecurrentLayer(keras.layers.RNN):
    """Base class of keraseq's sequence layers: `keras.layers.RNN` over a
    `RecurrentCell`, with the input projection hoisted out of the time loop."""

    cell_class = RecurrentCell
    # Cell arguments specific to a subclass (added to the shared ones).
    extra_cell_arguments = ()

    def __init__(
        self,
        cell_kwargs,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        **kwargs,
    ):
        return_sequences = check_bool("return_sequences", return_sequences)
        return_state = check_bool("return_state", return_state)
        go_backwards = check_bool("go_backwards", go_backwards)
        stateful = check_bool("stateful", stateful)
        unroll = check_bool("unroll", unroll)
        cell = self.cell_class(
            **cell_kwargs,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name=f"{self.cell_class.__name__.lower()}",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            **kwargs,
        )

    def build(self, sequences_shape, initial_state_shape=None):
        _check_rank3(sequences_shape)
        super().build(sequences_shape, initial_state_shape)

    def __call__(self, sequences, *args, **kwargs):
        # `call(sequences, initial_state=None, mask=None, training=False)`.
        # Checked here, before Keras converts the inputs and wraps errors of
        # `call`, so that a bad input raises one ValueError with one line.
        initial_state = args[0] if args else kwargs.get("initial_state")
        mask = args[1] if len(args) > 1 else kwargs.get("mask")
        self._check_call(sequences, initial_state, mask)
        return super().__call__(sequences, *args, **kwargs)

    def _check_call(self, sequences, initial_state, mask):
        shape = tensor_shape(sequences)
        _check_rank3(shape)
        check_numeric("inputs", sequences)
        if mask is not None:
            check_mask_shape(
                "mask", tensor_shape(mask), shape[:2], "(batch_size, sequence_length)"
            )
            check_mask_dtype("mask", mask, "a time step is used")
        if initial_state is not None:
            self._check_initial_state(initial_state, shape[0])

    def call(self, sequences, initial_state=None, mask=None, training=False):
        _check_rank3(sequences.shape)
        return super().call(
            sequences, initial_state=initial_state, mask=mask, training=training
        )

    def _check_initial_state(self, initial_state, batch_size):
        sizes = self.cell.state_size
        sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        expected = ", ".join(f"({batch_size}, {size})" for size in sizes)
        shapes = [tuple(getattr(state, "shape", ())) for state in states]
        fits = len(states) == len(sizes) and all(
            len(shape) == 2
            and (shape[1] is None or shape[1] == size)
            and (shape[0] is None or batch_size is None or shape[0] == batch_size)
            for shape, size in zip(shapes, sizes)
        )
        if not fits:
            raise ValueError(
                f"`initial_state` must be {len(sizes)} tensor(s) of shape(s) {expected} "
                f"(batch_size, units). Received: {len(states)} with shape(s) "
                f"{', '.join(str(shape) for shape in shapes)}"
            )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        cell = self.cell
        if training and cell.dropout > 0:
            # One mask per sequence, shared by every time step.
            keep = cell.dropout_mask(sequences[:, 0, :], cell.dropout)
            sequences = sequences * ops.expand_dims(keep, 1)
        fused = _fast_path.recurrent_sequence(self, sequences, initial_state, mask, training)
        if fused is not None:
            return fused
        recurrent_mask = None
        if training and cell.recurrent_dropout > 0:
            recurrent_mask = cell.dropout_mask(initial_state[0], cell.recurrent_dropout)
        projected = _fast_path.hoist_input_projection(cell)
        if projected:
            sequences = cell.project(sequences)  # (batch_size, sequence_length, blocks * units)
        object.__setattr__(cell, "_in_loop", (recurrent_mask, projected))
        try:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        finally:
            object.__setattr__(cell, "_in_loop", None)

    def get_config(self):
        config = super().get_config()
        cell_config = config.pop("cell")["config"]
        for name in _PLAIN + tuple(_SERIALIZED) + tuple(self.extra_cell_arguments):
            config[name] = cell_config[name]
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _forward(name):
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's `{name}`.")


for _name in _PLAIN + tuple(_SERIALIZED) + ("kernel", "recurrent_kernel", "bias"):
    setattr(RecurrentLayer, _name, _forward(_name))
