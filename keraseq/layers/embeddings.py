"""Positional information for sequence models: sine encodings and learned tables.

Four layers:

- `SinePositionEncoding`: the fixed sinusoidal encoding of Vaswani et al.
  (2017), computed for any length and any start position.
- `PositionEmbedding`: a learned `(sequence_length, hidden_dim)` table.
- `TokenEmbedding`: Keras's `Embedding` with its token ids checked (dtype and
  range), the input stage of the recurrent language models.
- `TokenAndPositionEmbedding`: a token `keras.layers.Embedding` plus one of the
  two positional layers above, the usual input stage of a transformer language
  model.
"""

import functools
import math

import keras
import numpy as np
from keras import ops

from keraseq.layers._validation import (
    check_bool,
    check_choice,
    check_lookup,
    check_last_axis_known,
    check_numeric,
    check_positive_int,
    check_rank,
    check_token_ids,
    is_int,
    is_number,
    tensor_dtype,
    tensor_shape,
)

# Integer positions are split as `p = high * _SPLIT + low` with both parts
# below `_SPLIT = 2**12`, and each frequency is split into chunks of
# `_CHUNK_BITS = 12` significant bits, so every product `part * chunk` has at
# most 24 significant bits and is exact in float32. `_NUM_CHUNKS = 4` keeps 48
# bits of every frequency, far more than float32's 24.
_SPLIT = 4096
_CHUNK_BITS = 12
_NUM_CHUNKS = 4


def _check_sequence_shape(input_shape):
    """`input_shape` as a tuple `(batch_size, sequence_length, hidden_dim)` with a
    known `hidden_dim`, or a `ValueError` naming `inputs`."""
    input_shape = check_rank(
        "inputs", input_shape, 3, "(batch_size, sequence_length, hidden_dim)"
    )
    check_last_axis_known("inputs", input_shape, "hidden_dim")
    return input_shape


def _start_index_argument(args, kwargs):
    """The `start_index` of a `layer(inputs, start_index)` call (default 0)."""
    return args[0] if args else kwargs.get("start_index", 0)


def _check_start_index(start_index):
    """Raises naming `start_index` unless it is a non-negative integer or an
    integer tensor (whose value and shape are left to the computation)."""
    if is_int(start_index):
        if start_index < 0:
            raise ValueError(
                f"`start_index` must be non-negative. Received: start_index={start_index}"
            )
        return
    allowed = "`start_index` must be a non-negative integer or an integer scalar tensor."
    tensor_types = (keras.KerasTensor, np.ndarray)
    if not (ops.is_tensor(start_index) or isinstance(start_index, tensor_types)):
        raise ValueError(f"{allowed} Received: start_index={start_index!r}")
    dtype = tensor_dtype(start_index)
    if not (dtype.startswith("int") or dtype.startswith("uint")):
        raise ValueError(f"{allowed} Received: start_index with dtype={dtype}")


def _check_length(layer_name, input_shape, length, start_index, sequence_length):
    """Raises when a known `length` from an integer `start_index` runs past a
    learned table of `sequence_length` rows."""
    offset = int(start_index) if is_int(start_index) else 0
    if length is not None and offset + length > sequence_length:
        where = f" starting at start_index={offset}" if offset else ""
        raise ValueError(
            f"The input sequence length ({length}){where} exceeds the "
            f"`sequence_length` of `{layer_name}` ({sequence_length}): "
            f"input length + start_index must be <= sequence_length="
            f"{sequence_length}. Received: inputs.shape={tuple(input_shape)}"
        )


@functools.lru_cache(maxsize=64)
def _sine_constants(hidden_dim, max_wavelength):
    """Exact float32 multipliers (in turns per position) and phases per feature.

    Feature `j` has frequency `f_j = max_wavelength ** (-2 * (j // 2) / d)`
    radians per position, i.e. `g_j = f_j / (2 * pi)` turns. `g_j` is split in
    float64 into `_NUM_CHUNKS` chunks of at most `_CHUNK_BITS` significant bits
    each (their sum keeps 48 bits of `g_j`).

    Returns `(multipliers, phase)`: `multipliers` is float32
    `(2, _NUM_CHUNKS, hidden_dim)`, row 0 holding `_SPLIT * chunk` (for the
    high part of a position) and row 1 `chunk` (for the low part); `phase` is
    float32 `(hidden_dim,)`, 0 for even features (sine) and 0.25 turn for odd
    features (`cos(x) = sin(x + pi / 2)`).
    """
    j = np.arange(hidden_dim)
    exponent = (2 * (j // 2)).astype(np.float64) / hidden_dim
    turns = np.power(float(max_wavelength), -exponent) / (2.0 * np.pi)
    chunks = np.zeros((_NUM_CHUNKS, hidden_dim), dtype=np.float64)
    remainder = turns.copy()
    for k in range(_NUM_CHUNKS):
        mantissa, exp = np.frexp(remainder)  # remainder = mantissa * 2**exp
        chunk = np.ldexp(np.trunc(np.ldexp(mantissa, _CHUNK_BITS)), exp - _CHUNK_BITS)
        chunks[k] = chunk
        remainder = remainder - chunk  # exact in float64
    multipliers = np.stack([chunks * _SPLIT, chunks]).astype(np.float32)
    phase = np.where(j % 2 == 1, 0.25, 0.0).astype(np.float32)
    multipliers.setflags(write=False)
    phase.setflags(write=False)
    return multipliers, phase


def _centered_fraction(x):
    """`x - round(x)`, in `[-0.5, 0.5]`; exact in floating point."""
    return x - ops.round(x)


def _sine_table(start_index, length, hidden_dim, max_wavelength):
    """The `(length, hidden_dim)` encoding computed in float64 numpy, as float32."""
    positions = np.arange(start_index, start_index + length, dtype=np.float64)  # (T,)
    j = np.arange(hidden_dim)
    frequencies = np.power(float(max_wavelength), -(2 * (j // 2)) / hidden_dim)  # (d,)
    angles = positions[:, None] * frequencies[None, :]  # (T, d)
    table = np.where(j % 2 == 0, np.sin(angles), np.cos(angles))
    return table.astype(np.float32)


@keras.saving.register_keras_serializable(package="keraseq")
class SinePositionEncoding(keras.layers.Layer):
    """Sinusoidal positional encoding (Vaswani et al., 2017).

    For position `p` and feature pair `i` of a `hidden_dim = d` encoding:

    ```
    PE[p, 2i]     = sin(p / max_wavelength ** (2i / d))
    PE[p, 2i + 1] = cos(p / max_wavelength ** (2i / d))
    ```

    The sine and cosine features are interleaved (even features are sines, odd
    features cosines), as in keras-hub's `SinePositionEncoding`, not
    concatenated as in some other implementations. An odd `hidden_dim` ends with
    a sine feature. Positions run from `start_index` to
    `start_index + sequence_length - 1`, so an encoding can continue where a
    previous chunk ended (incremental decoding).

    The layer returns the encoding only; it does not add it to `inputs`, whose
    values are ignored (only their shape is used). The usual pattern is
    `x + SinePositionEncoding()(x)`. The encoding has no weights, works for any
    sequence length (including a dynamic `None` axis) and is broadcast over the
    batch axis.

    Computation: when the sequence length is static and `start_index` is a
    Python (or numpy) integer (eager calls, JAX, torch, and graphs traced with
    a fixed length) the encoding is computed once per call in float64 numpy
    and enters the graph as a constant. With a dynamic length (e.g. a
    TensorFlow graph or ONNX export with a `None` axis) or a tensor
    `start_index`, it is computed with `keras.ops` in float32, with the phase
    `p * frequency` reduced modulo one turn in exact float32 arithmetic
    (positions and frequencies are split into parts whose products are
    exact). Both agree with a float64 computation to about 1e-6 for every
    position below `2**24`; a plain float32 product `p * frequency` would lose
    about `p * 6e-8` radians (~2e-4 at `p = 3000`).

    Masking: the layer supports masking and passes an incoming mask through
    unchanged.

    Args:
        max_wavelength: float or int, default `10000`. The longest wavelength
            of the sinusoids, `2 * pi * max_wavelength`. Must be positive.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            e.g. `name` and `dtype`.

    Call arguments:
        inputs: tensor of shape `(batch_size, sequence_length, hidden_dim)`.
            The last axis must be known (static); `sequence_length` may be
            dynamic.
        start_index: int or int scalar tensor, default `0`. Position of the
            first step of `inputs`.

    Returns:
        A tensor of shape `(batch_size, sequence_length, hidden_dim)` and the
        layer's compute dtype (`float32` by default; the encoding is computed
        in float32 and cast under mixed precision), identical for every batch
        element.

    Raises:
        ValueError: if `max_wavelength` is not a positive number; if the
            inputs are not of rank 3, have an unknown last axis or a
            non-numeric dtype; if `start_index` is neither an integer nor an
            integer scalar tensor.

    Example:

    ```python
    inputs = keras.Input(shape=(None, 64))
    x = inputs + keraseq.layers.SinePositionEncoding()(inputs)
    model = keras.Model(inputs, x)
    ```

    Reference:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        if not is_number(max_wavelength) or not max_wavelength > 0 or not math.isfinite(
            max_wavelength
        ):
            raise ValueError(
                "`max_wavelength` must be a positive number. "
                f"Received: max_wavelength={max_wavelength!r}"
            )
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.supports_masking = True

    def _check_input_shape(self, input_shape):
        return _check_sequence_shape(input_shape)

    def __call__(self, inputs, *args, **kwargs):
        # Checked here, before Keras converts the inputs and wraps errors of
        # `call`, so that a bad input raises one ValueError with one line.
        self._check_input_shape(tensor_shape(inputs))
        check_numeric("inputs", inputs)
        start_index = _start_index_argument(args, kwargs)
        if not is_int(start_index):
            _check_start_index(start_index)  # a negative integer is a valid position here
        return super().__call__(inputs, *args, **kwargs)

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        self.built = True

    def call(self, inputs, start_index=0):
        input_shape = self._check_input_shape(inputs.shape)
        hidden_dim = int(input_shape[-1])
        length = input_shape[-2]
        if length is not None and is_int(start_index):
            # Static length and start: an exact float64 table, a constant.
            table = _sine_table(int(start_index), int(length), hidden_dim, self.max_wavelength)
            encoding = ops.convert_to_tensor(table, dtype=self.compute_dtype)  # (T, d)
        else:
            encoding = self._traced_encoding(ops.shape(inputs)[-2], start_index, hidden_dim)
            encoding = ops.cast(encoding, self.compute_dtype)  # (T, d)
        return ops.broadcast_to(ops.expand_dims(encoding, 0), ops.shape(inputs))  # (B, T, d)

    def _traced_encoding(self, sequence_length, start_index, hidden_dim):
        """The float32 `(T, d)` encoding from tensor ops, for a dynamic length or start."""
        multipliers, phase = _sine_constants(hidden_dim, float(self.max_wavelength))
        multipliers = ops.convert_to_tensor(multipliers, dtype="float32")  # (2, C, d)
        phase = ops.convert_to_tensor(phase, dtype="float32")  # (d,)

        positions = ops.arange(sequence_length, dtype="int32") + ops.cast(
            start_index, "int32"
        )  # (T,)
        high = ops.floor_divide(positions, _SPLIT)
        low = positions - high * _SPLIT
        parts = ops.cast(ops.stack([high, low], axis=-1), "float32")  # (T, 2)
        parts = ops.reshape(parts, (-1, 2, 1, 1))  # (T, 2, 1, 1)

        # Every product below is exact; its fractional part (in turns) too.
        terms = _centered_fraction(parts * multipliers)  # (T, 2, C, d)
        terms = ops.reshape(terms, (-1, 2 * _NUM_CHUNKS, hidden_dim))  # (T, 2C, d)
        # Pairwise sums, reduced to [-0.5, 0.5] turn after each addition.
        count = 2 * _NUM_CHUNKS
        while count > 1:
            half = count // 2
            terms = _centered_fraction(terms[:, :half] + terms[:, half:count])
            count = half
        turns = _centered_fraction(terms[:, 0] + phase)  # (T, d)
        return ops.sin(turns * (2.0 * math.pi))  # (T, d)

    def compute_output_shape(self, input_shape):
        return self._check_input_shape(input_shape)

    def get_config(self):
        base_config = super().get_config()
        config = {"max_wavelength": self.max_wavelength}
        return {**base_config, **config}


@keras.saving.register_keras_serializable(package="keraseq")
class PositionEmbedding(keras.layers.Layer):
    """Learned position embedding: one trainable vector per position.

    For inputs of shape `(batch_size, T, hidden_dim)` the layer returns rows
    `start_index` to `start_index + T - 1` of a learned table
    `embeddings` of shape `(sequence_length, hidden_dim)`:

    ```
    output[b, t, :] = embeddings[start_index + t, :]
    ```

    broadcast over the batch axis. As in keras-hub, the embedding is returned,
    not added to `inputs` (whose values are ignored); use
    `x + PositionEmbedding(sequence_length)(x)`.

    Lengths: `start_index + T` may not exceed `sequence_length`. This is
    checked, with a `ValueError`, whenever `T` is known: always in eager mode
    and under JAX (whose shapes are static) and torch, and in a symbolic or
    traced graph when the length axis is static. Inside a TensorFlow graph
    traced with a dynamic (`None`) length the check can only happen when the
    graph runs, where the slice fails with TensorFlow's own error. A tensor
    `start_index` is not checked (JAX clamps an out-of-range slice).

    Masking: the layer supports masking and passes an incoming mask through
    unchanged.

    Args:
        sequence_length: int. The maximum sequence length (number of table
            rows). Must be positive.
        initializer: string or `keras.initializers.Initializer`, default
            `"glorot_uniform"`. Initializer of the `embeddings` table.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            e.g. `name` and `dtype`.

    Call arguments:
        inputs: tensor of shape `(batch_size, sequence_length, hidden_dim)`,
            where the length may be shorter than the layer's
            `sequence_length`.
        start_index: int or int scalar tensor, default `0`. Table row of the
            first step of `inputs`.

    Returns:
        A tensor of shape `(batch_size, sequence_length, hidden_dim)` (the
        shape of `inputs`) in the layer's compute dtype (`float32` by
        default).

    Raises:
        ValueError: if `sequence_length` is not a positive integer; if the
            inputs are not of rank 3, have an unknown last axis, a width other
            than the table's or a non-numeric dtype; if a known input length
            (plus an integer `start_index`) exceeds `sequence_length`; if
            `start_index` is negative or not an integer.

    Example:

    ```python
    inputs = keras.Input(shape=(None, 64))
    x = inputs + keraseq.layers.PositionEmbedding(sequence_length=256)(inputs)
    model = keras.Model(inputs, x)
    ```

    Reference:
        - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805)
    """

    def __init__(self, sequence_length, initializer="glorot_uniform", **kwargs):
        sequence_length = check_positive_int("sequence_length", sequence_length)
        initializer_obj = check_lookup("initializer", initializer, keras.initializers.get)
        super().__init__(**kwargs)
        self.sequence_length = sequence_length
        self.initializer = initializer_obj
        self.supports_masking = True

    def _check_input_shape(self, input_shape, start_index=0):
        input_shape = _check_sequence_shape(input_shape)
        _check_start_index(start_index)
        _check_length(
            self.name, input_shape, input_shape[-2], start_index, self.sequence_length
        )
        return input_shape

    def _check_width(self, input_shape):
        if self.built and input_shape[-1] != self.embeddings.shape[-1]:
            raise ValueError(
                f"The last axis of the `inputs` of `{self.name}` must be "
                f"{self.embeddings.shape[-1]} (the width of its table). "
                f"Received: inputs.shape={tuple(input_shape)}"
            )

    def __call__(self, inputs, *args, **kwargs):
        # Checked here, before Keras converts the inputs and wraps errors of
        # `call`, so that a bad input raises one ValueError with one line.
        input_shape = self._check_input_shape(
            tensor_shape(inputs), _start_index_argument(args, kwargs)
        )
        check_numeric("inputs", inputs)
        self._check_width(input_shape)
        return super().__call__(inputs, *args, **kwargs)

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        hidden_dim = int(input_shape[-1])
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, hidden_dim),
            initializer=self.initializer,
            trainable=True,
        )
        self.built = True

    def call(self, inputs, start_index=0):
        input_shape = self._check_input_shape(inputs.shape, start_index)
        self._check_width(input_shape)
        hidden_dim = int(input_shape[-1])
        shape = ops.shape(inputs)
        table = ops.cast(self.embeddings, self.compute_dtype)  # (S, d)
        length = input_shape[-2]
        if is_int(start_index) and length is not None:
            rows = table[int(start_index) : int(start_index) + length]  # (T, d)
        else:
            rows = ops.slice(table, (start_index, 0), (shape[-2], hidden_dim))  # (T, d)
        return ops.broadcast_to(ops.expand_dims(rows, 0), shape)  # (B, T, d)

    def compute_output_shape(self, input_shape):
        return self._check_input_shape(input_shape)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }
        return {**base_config, **config}


def _check_positive_number_or_none(name, value):
    """Returns `value` (None or a positive finite number), or raises naming `name`."""
    if value is None:
        return None
    if not is_number(value) or not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"`{name}` must be a positive number or None. Received: {name}={value!r}"
        )
    return value


@keras.saving.register_keras_serializable(package="keraseq")
class TokenEmbedding(keras.layers.Embedding):
    """Token embedding: Keras's `Embedding` with its token ids checked.

    For integer token ids `x` of shape `(batch_size, sequence_length)`:

    ```
    output[b, t, :] = embeddings[x[b, t], :]
    ```

    where `embeddings` is the learned table of shape `(input_dim,
    output_dim)`. This *is* `keras.layers.Embedding` (a subclass): the same
    constructor arguments with Keras's names, the same `embeddings` weight,
    `get_config`, masking, LoRA and quantization, and the same numbers. Any
    input shape works as in Keras: ids of shape `(d_0, ..., d_n)` give
    `(d_0, ..., d_n, output_dim)`. What it adds are checks: the constructor
    arguments raise keraseq's one-line `ValueError`s naming the argument, and
    the token ids are checked before the lookup (`keraseq.layers.
    _validation.check_token_ids`, the check `TokenAndPositionEmbedding` uses,
    so the message is the same):

    * their dtype, always (eager, symbolic and traced tensors alike): it must
      be an integer one. Keras's `Embedding` casts float ids to `int32`
      (1.7 becomes 1, silently), reads booleans as ids 0 and 1, and fails
      on strings with each backend's own error.
    * their values, whenever they can be read: every id must lie in
      `[0, input_dim)`. That is eager calls on every backend, and every call
      on PyTorch, where Keras runs `fit`, `evaluate` and `predict` eagerly
      (its default `jit_compile=False` there). The cost is one min/max
      reduction of the ids per call (one fused `torch.aminmax` on PyTorch).

    Inside a compiled step the ids have no values yet and are not checked
    (only their dtype is); the lookup then does what the backend does:

    * TensorFlow (`tf.function`, so `fit` and `predict`): an id
      `>= input_dim` raises TensorFlow's own `InvalidArgumentError` on a CPU
      (on a GPU, TensorFlow's gather documents a row of zeros instead); a
      negative id selects a row from the end of the table.
    * JAX (`jax.jit`, so `fit` and `predict`): an id `>= input_dim` gives a
      row of NaN; a negative id selects a row from the end.
    * PyTorch with `jit_compile=True` (`torch.compile`): an id
      `>= input_dim` raises torch's own `RuntimeError` ("index out of
      bounds"); a negative id selects a row from the end.

    Masking: with `mask_zero=True` token id 0 is padding; the layer returns
    the mask `inputs != 0` (of the shape of `inputs`) for downstream layers,
    and the embedding of id 0 is still computed and returned.

    Args:
        input_dim: int. Number of token ids (largest id + 1), the rows of
            the table. Must be positive.
        output_dim: int. Width of the embedding. Must be positive.
        embeddings_initializer: string or `keras.initializers.Initializer`,
            default `"uniform"`. Initializer of the `embeddings` table.
        embeddings_regularizer: string, `keras.regularizers.Regularizer` or
            `None` (default). Regularizer of the table.
        embeddings_constraint: string, `keras.constraints.Constraint` or
            `None` (default). Constraint on the table.
        mask_zero: bool, default `False`. Whether id 0 is a padding value to
            be masked.
        weights: optional float array of shape `(input_dim, output_dim)`,
            default `None`. Initial values of the table.
        lora_rank: positive int or `None` (default). With a rank, the table
            is frozen and a trainable low-rank delta is learned (LoRA), as in
            Keras.
        lora_alpha: positive number or `None` (default, meaning
            `lora_rank`). Scale of the LoRA delta, `lora_alpha / lora_rank`.
        quantization_config: `keras.quantizers.QuantizationConfig` or `None`
            (default), as in Keras.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            e.g. `name` and `dtype`.

    Call arguments:
        inputs: integer tensor of shape `(batch_size, sequence_length)` (any
            shape works), token ids in `[0, input_dim)`. On TensorFlow, a
            `tf.SparseTensor` or `tf.RaggedTensor` of ids works as in Keras
            (the stored ids of a sparse tensor are checked).

    Returns:
        A tensor of shape `(batch_size, sequence_length, output_dim)` in the
        layer's compute dtype (`float32` by default; `float16` / `bfloat16`
        under `mixed_float16` / `mixed_bfloat16`, with a float32 table).

    Raises:
        ValueError: if `input_dim` or `output_dim` is not a positive integer;
            if `mask_zero` is not a bool; if `embeddings_initializer`,
            `embeddings_regularizer` or `embeddings_constraint` cannot be
            interpreted; if `lora_rank` is not a positive integer or `None`,
            or `lora_alpha` not a positive number or `None`; if the ids do not
            have an integer dtype; if an id outside `[0, input_dim)` is seen
            (see above for when).

    Example:

    ```python
    token_ids = keras.Input(shape=(None,), dtype="int32")
    x = keraseq.layers.TokenEmbedding(input_dim=65, output_dim=64)(token_ids)
    # (batch_size, sequence_length, 64)
    ```

    Reference:
        - [Bengio et al., 2003](https://www.jmlr.org/papers/v3/bengio03a.html)
        - [`keras.layers.Embedding`](https://keras.io/api/layers/core_layers/embedding/)
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        embeddings_constraint=None,
        mask_zero=False,
        weights=None,
        lora_rank=None,
        lora_alpha=None,
        quantization_config=None,
        **kwargs,
    ):
        input_dim = check_positive_int("input_dim", input_dim)
        output_dim = check_positive_int("output_dim", output_dim)
        # The objects looked up here are the ones passed on: a second look-up
        # of a string would draw a second default seed (Keras's random
        # initializers take one from Python's `random` when built), and the
        # table would no longer be the one `keras.layers.Embedding` draws
        # after the same `keras.utils.set_random_seed`.
        embeddings_initializer = check_lookup(
            "embeddings_initializer", embeddings_initializer, keras.initializers.get
        )
        embeddings_regularizer = check_lookup(
            "embeddings_regularizer", embeddings_regularizer, keras.regularizers.get
        )
        embeddings_constraint = check_lookup(
            "embeddings_constraint", embeddings_constraint, keras.constraints.get
        )
        mask_zero = check_bool("mask_zero", mask_zero)
        lora_rank = check_positive_int("lora_rank", lora_rank, allow_none=True)
        lora_alpha = _check_positive_number_or_none("lora_alpha", lora_alpha)
        # Keras's constructor stores one attribute per argument, with the
        # same names, and its `get_config` writes them all back: this class
        # adds no argument, so both are inherited unchanged.
        super().__init__(
            input_dim,
            output_dim,
            embeddings_initializer=embeddings_initializer,
            embeddings_regularizer=embeddings_regularizer,
            embeddings_constraint=embeddings_constraint,
            mask_zero=mask_zero,
            weights=weights,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            quantization_config=quantization_config,
            **kwargs,
        )

    def __call__(self, inputs, *args, **kwargs):
        # Checked here, before Keras converts the inputs (a float array would
        # be cast to int32, a string one would fail inside the backend) and
        # before it wraps errors of `call`, so a direct call raises one
        # ValueError with one line.
        if all(hasattr(inputs, a) for a in ("indices", "values", "dense_shape")):
            # A `tf.SparseTensor`, which Keras's Embedding looks up on
            # TensorFlow: its stored ids are the ones looked up.
            check_token_ids(inputs.values, self.input_dim, name="inputs.values")
        else:
            check_token_ids(inputs, self.input_dim)
        return super().__call__(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape), self.output_dim)


@keras.saving.register_keras_serializable(package="keraseq")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus position embedding, the input stage of a transformer.

    For integer token ids `x` of shape `(batch_size, T)`:

    ```
    output[b, t, :] = token_table[x[b, t], :] + position[start_index + t, :]
    ```

    where `token_table` is a `keras.layers.Embedding` of shape
    `(vocabulary_size, embedding_dim)` and `position` is either a learned
    `PositionEmbedding` table `(sequence_length, embedding_dim)`
    (`positional="learned"`, inputs may not be longer than `sequence_length`)
    or the fixed `SinePositionEncoding` (`positional="sine"`, any length works,
    and `sequence_length` is documentation only and may be `None`). As in
    keras-hub, both tables use `embeddings_initializer`.

    Masking: with `mask_zero=True` token id 0 is padding; the layer returns
    the mask `inputs != 0` of shape `(batch_size, sequence_length)` for
    downstream layers (the embedding of id 0 is still computed and returned).

    Token ids are checked before the lookup. Their dtype must be an integer
    one, always (float ids are not truncated, strings are refused with the
    same message on every backend). Their values must lie in
    `[0, vocabulary_size)`; this is checked whenever the values can be read:
    eager calls on every backend, and every call on PyTorch (eager even
    inside `fit` and `predict`), at the cost of one min/max reduction of the
    ids. Inside a traced function (`tf.function`, `jax.jit`, and so
    `predict`/`fit` on TensorFlow and JAX) the ids have no values yet and are
    not checked; the lookup then does what the backend does: TensorFlow
    raises its own `InvalidArgumentError` for an id `>= vocabulary_size`,
    JAX returns a row of NaN for it, and a negative id selects a row from the
    end of the table (as Python indexing does) on both.

    Args:
        vocabulary_size: int. Number of token ids (largest id + 1). Must be
            positive.
        sequence_length: int, or `None` when `positional="sine"`. Maximum
            sequence length (number of rows of the learned position table).
        embedding_dim: int. Width of both embeddings. Must be positive.
        mask_zero: bool, default `False`. Whether id 0 is a padding value to be
            masked.
        positional: `"learned"` or `"sine"`, default `"learned"`. The kind of
            position embedding.
        embeddings_initializer: string or `keras.initializers.Initializer`,
            default `"uniform"`. Initializer of the token table and of the
            learned position table.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            e.g. `name` and `dtype`.

    Call arguments:
        inputs: integer tensor of shape `(batch_size, sequence_length)`,
            token ids in `[0, vocabulary_size)`.
        start_index: non-negative int or int scalar tensor, default `0`.
            Position of the first step of `inputs`.

    Returns:
        A tensor of shape `(batch_size, sequence_length, embedding_dim)` in the
        layer's compute dtype (`float32` by default).

    Raises:
        ValueError: if `vocabulary_size` or `embedding_dim` is not a positive
            integer; if `sequence_length` is not a positive integer (or `None`
            with `positional="sine"`); if `positional` is not `"learned"` or
            `"sine"`; if `mask_zero` is not a bool; if the inputs are not of
            rank 2 or not of an integer dtype; if a token id outside
            `[0, vocabulary_size)` is seen (see above for when); if
            `start_index` is negative or not an integer; if a known input
            length (plus an integer `start_index`) exceeds a learned
            `sequence_length`.

    Example:

    ```python
    token_ids = keras.Input(shape=(None,), dtype="int32")
    x = keraseq.layers.TokenAndPositionEmbedding(
        vocabulary_size=65, sequence_length=256, embedding_dim=128
    )(token_ids)  # (batch_size, sequence_length, 128)
    ```

    Reference:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Radford et al., 2018 (GPT)](https://cdn.openai.com/research-covers/language-unsupervised/language_understanding_paper.pdf)
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        embedding_dim,
        mask_zero=False,
        positional="learned",
        embeddings_initializer="uniform",
        **kwargs,
    ):
        vocabulary_size = check_positive_int("vocabulary_size", vocabulary_size)
        check_choice("positional", positional, ("learned", "sine"))
        if not (
            (is_int(sequence_length) and sequence_length > 0)
            or (sequence_length is None and positional == "sine")
        ):
            allowed = (
                "a positive integer or None"
                if positional == "sine"
                else 'a positive integer (None is only allowed with positional="sine")'
            )
            raise ValueError(
                f"`sequence_length` must be {allowed}. "
                f"Received: sequence_length={sequence_length!r}"
            )
        embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        mask_zero = check_bool("mask_zero", mask_zero)
        initializer_obj = check_lookup(
            "embeddings_initializer", embeddings_initializer, keras.initializers.get
        )
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.sequence_length = None if sequence_length is None else int(sequence_length)
        self.embedding_dim = embedding_dim
        self.mask_zero = mask_zero
        self.positional = positional
        self.embeddings_initializer = initializer_obj
        self.supports_masking = self.mask_zero

    def _check_input_shape(self, input_shape, start_index=0):
        input_shape = check_rank("inputs", input_shape, 2, "(batch_size, sequence_length)")
        _check_start_index(start_index)
        if self.positional == "learned":
            _check_length(
                self.name, input_shape, input_shape[-1], start_index, self.sequence_length
            )
        return input_shape

    def __call__(self, inputs, *args, **kwargs):
        # Checked here, before Keras converts the inputs (a string array would
        # fail inside the backend) and wraps errors of `call`, so that a bad
        # input raises one ValueError with one line.
        self._check_input_shape(tensor_shape(inputs), _start_index_argument(args, kwargs))
        check_token_ids(inputs, self.vocabulary_size)
        return super().__call__(inputs, *args, **kwargs)

    def _fresh_initializer(self):
        # A separate initializer object per table, so seeded initializers are
        # not shared between the two weights.
        return keras.initializers.get(keras.initializers.serialize(self.embeddings_initializer))

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        self.token_embedding = keras.layers.Embedding(
            input_dim=self.vocabulary_size,
            output_dim=self.embedding_dim,
            embeddings_initializer=self._fresh_initializer(),
            mask_zero=self.mask_zero,
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.token_embedding.build(input_shape)
        if self.positional == "learned":
            self.position_embedding = PositionEmbedding(
                sequence_length=self.sequence_length,
                initializer=self._fresh_initializer(),
                dtype=self.dtype_policy,
                name="position_embedding",
            )
        else:
            self.position_embedding = SinePositionEncoding(
                dtype=self.dtype_policy, name="position_embedding"
            )
        self.position_embedding.build(input_shape + (self.embedding_dim,))
        self.built = True

    def call(self, inputs, start_index=0):
        self._check_input_shape(inputs.shape)
        token_embeddings = self.token_embedding(inputs)  # (B, T, E)
        position_embeddings = self.position_embedding(
            token_embeddings, start_index=start_index
        )  # (B, T, E)
        return token_embeddings + position_embeddings

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        return input_shape + (self.embedding_dim,)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "embedding_dim": self.embedding_dim,
            "mask_zero": self.mask_zero,
            "positional": self.positional,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer
            ),
        }
        return {**base_config, **config}
