"""Token embeddings over a vocabulary.

Two layers:

- `TokenEmbedding`: Keras's `Embedding` with its token ids checked (dtype and
  range), the input stage of the recurrent language models.
- `TokenAndPositionEmbedding`: a token `keras.layers.Embedding` plus one of the
  two positional layers of `keraseq.layers.positional`
  (`SinePositionEncoding`, `PositionEmbedding`), the usual input stage of a
  transformer language model.

`SinePositionEncoding` and `PositionEmbedding` are importable from here too
(they lived in this module before `keraseq.layers.positional`).
"""

import math

import keras
from keras import ops

from keraseq.layers._validation import (
    check_bool,
    check_choice,
    check_lookup,
    check_positive_int,
    check_rank,
    check_token_ids,
    is_int,
    is_number,
    tensor_shape,
)
from keraseq.layers.positional import (  # noqa: F401  (re-exported, see the docstring)
    PositionEmbedding,
    SinePositionEncoding,
    _check_length,
    _check_start_index,
    _start_index_argument,
)


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
