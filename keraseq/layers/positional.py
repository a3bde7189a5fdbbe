"""Positional information for sequence models: sine encodings and learned tables.

Two layers:

- `SinePositionEncoding`: the fixed sinusoidal encoding of Vaswani et al.
  (2017), computed for any length and any start position.
- `PositionEmbedding`: a learned `(sequence_length, hidden_dim)` table.

`keraseq.layers.embeddings` combines either with a token embedding
(`TokenAndPositionEmbedding`).
"""

import functools
import math

import keras
import numpy as np
from keras import ops

from keraseq.layers._validation import (
    check_lookup,
    check_last_axis_known,
    check_numeric,
    check_positive_int,
    check_rank,
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
