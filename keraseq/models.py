"""Model builders: next-token language models from keraseq's layers."""

import itertools
import math

from keraseq._keras import import_keras

import_keras()

import keras  # noqa: E402

from keraseq.layers import (  # noqa: E402
    LSTM,
    SimpleRNN,
    TokenAndPositionEmbedding,
    TokenEmbedding,
    TransformerBlock,
)
from keraseq._validation import check_positive_int, check_rate, check_seed, is_number  # noqa: E402

ARCHITECTURES = ("lstm", "rnn", "transformer")


def language_model(
    architecture,
    vocabulary_size,
    units=256,
    embedding_dim=64,
    num_layers=1,
    num_heads=4,
    sequence_length=None,
    dropout=0.0,
    name=None,
    seed=None,
):
    """A next-token language model: token ids in, logits over the vocabulary out.

    Architectures:

    * `"lstm"`: `keraseq.TokenEmbedding(vocabulary_size, embedding_dim)` (Keras's
      `Embedding` with the ids checked) → `num_layers` ×
      `keraseq.LSTM(units, return_sequences=True)` → `Dense(vocabulary_size)`.
    * `"rnn"`: `TokenEmbedding` → `num_layers` × `keraseq.SimpleRNN(units)`; the last
      one carries the output projection `ŷ_t = h_t · W_hy + b_y` with
      `output_units=vocabulary_size`, which gives the logits directly (Elman's
      formulation).
    * `"transformer"`: `keraseq.TokenAndPositionEmbedding(vocabulary_size,
      sequence_length, units, positional="sine")` → `num_layers` ×
      `keraseq.TransformerBlock(num_heads, 4 * units)` (causal, pre-norm) →
      `LayerNormalization` → `Dense(vocabulary_size)`; sinusoidal positions, so
      any length runs (GPT-style decoder; Radford et al. 2019).

    Dropout (`dropout > 0`) goes on every non-recurrent connection (Zaremba et
    al. 2014; GPT-2): lstm: the input features of every LSTM (the embedding and
    each layer below) and a `Dropout` named `output_dropout` before the logits;
    rnn: the input features of every SimpleRNN (the output projection is inside
    the last one, so nothing after it); transformer: a `Dropout` named
    `embedding_dropout` after the embedding and, in every block, the attention
    weights and both residual branches. The recurrent connections are never
    dropped (`recurrent_dropout=0`). All of it is active only when training:
    at inference the model gives the same logits as with `dropout=0` and the
    same weights. With `dropout=0` no `Dropout` layer is added.

    Args:
        architecture: `"lstm"`, `"rnn"` or `"transformer"`.
        vocabulary_size: positive int, number of token ids (ids are in
            `[0, vocabulary_size)`).
        units: positive int, default 256: hidden width (the model width for the
            transformer; it must be divisible by `num_heads`).
        embedding_dim: positive int, default 64: token embedding width for the
            recurrent models.
        num_layers: positive int, default 1.
        num_heads: positive int, default 4 (transformer only).
        sequence_length: training length, default None (documentation for the
            transformer's positions; the recurrent models take any length).
        dropout: float in [0, 1), default 0: the rate of every dropout above.
        name: optional model name.
        seed: int or None, default None: seed of the dropout masks (each
            dropout gets its own seed derived from it). With a seed the masks
            are a function of the seed and of the `SeedGenerator` states in
            `model.variables` on every backend, so a run resumed from a
            backup that restores those states draws the same masks; with
            `None`, Keras on torch draws unseeded dropout masks from torch's
            global random state.

    Returns:
        A `keras.Model` mapping int32 `tokens (batch_size, sequence_length)` to
        float logits `(batch_size, sequence_length, vocabulary_size)`. Position `t`
        predicts token `t + 1` and depends only on tokens `≤ t`.

    Raises:
        ValueError: an unknown architecture or a non-positive size. When
            the model is called: token ids outside `[0, vocabulary_size)`,
            raised by its first layer (`TokenEmbedding` or
            `TokenAndPositionEmbedding`) whenever the ids have values (eager
            calls on every backend, every call on PyTorch; see those layers
            for compiled steps), inside Keras's "Exception encountered when
            calling Functional.call()" context.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"`architecture` must be one of {ARCHITECTURES}. "
            f"Received: architecture={architecture!r}"
        )
    for argument, value in (
        ("vocabulary_size", vocabulary_size),
        ("units", units),
        ("embedding_dim", embedding_dim),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
    ):
        check_positive_int(argument, value)
    check_positive_int("sequence_length", sequence_length, allow_none=True)
    check_rate("dropout", dropout)
    seed = check_seed(seed)
    offsets = itertools.count(0, 3)  # a TransformerBlock uses seed, seed + 1, seed + 2

    def next_seed():  # a distinct seed per layer with dropout; None when unseeded
        return None if seed is None else seed + next(offsets)

    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    if architecture == "transformer":
        if units % num_heads:
            raise ValueError(
                "`units` must be divisible by `num_heads`. "
                f"Received: units={units}, num_heads={num_heads}"
            )
        x = TokenAndPositionEmbedding(
            vocabulary_size,
            sequence_length,
            units,
            positional="sine",
            name="embedding",
        )(tokens)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, seed=next_seed(), name="embedding_dropout")(x)
        for index in range(num_layers):
            x = TransformerBlock(
                num_heads, 4 * units, dropout=dropout, seed=next_seed(), name=f"block_{index}"
            )(x)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
        logits = keras.layers.Dense(vocabulary_size, name="logits")(x)
    else:
        x = TokenEmbedding(vocabulary_size, embedding_dim, name="embedding")(tokens)
        if architecture == "lstm":
            for index in range(num_layers):
                x = LSTM(units, return_sequences=True, dropout=dropout, seed=next_seed(),
                         name=f"lstm_{index}")(x)
            if dropout > 0:
                x = keras.layers.Dropout(dropout, seed=next_seed(), name="output_dropout")(x)
            logits = keras.layers.Dense(vocabulary_size, name="logits")(x)
        else:
            for index in range(num_layers):
                last = index == num_layers - 1
                x = SimpleRNN(
                    units,
                    return_sequences=True,
                    dropout=dropout,
                    seed=next_seed(),
                    output_units=vocabulary_size if last else None,
                    name=f"rnn_{index}",
                )(x)
            logits = x
    return keras.Model(tokens, logits, name=name or f"{architecture}_language_model")


def compile_language_model(model, learning_rate=2e-3, global_clipnorm=1.0, weight_decay=None):
    """Compile for next-token training: Adam (AdamW with `weight_decay`) with
    gradient clipping by global norm, sparse categorical cross-entropy over
    every time step (from logits).

    The loss is the mean over all `batch_size × sequence_length` predicted tokens
    (the per-step losses summed, divided by their count), in nats per token;
    `nats_to_bits` converts it.

    Args:
        model: a built `keras.Model` (e.g. from `language_model`).
        learning_rate: float > 0 or a
            `keras.optimizers.schedules.LearningRateSchedule`, default 2e-3.
        global_clipnorm: float > 0, default 1.0: gradients are rescaled so
            that their global norm is at most this.
        weight_decay: float > 0 or None (default). None: `keras.optimizers.Adam`,
            no weight decay. A number: `keras.optimizers.AdamW` with decoupled
            weight decay `w ← w − learning_rate · weight_decay · w` each step
            (Loshchilov & Hutter 2019) on the matrices (kernels, embeddings)
            only; 1-D variables (biases, normalization scales and offsets) are
            not decayed, as in nanoGPT.

    Returns:
        `model`, compiled.

    Raises:
        ValueError: a non-positive or non-finite `learning_rate`,
            `global_clipnorm` or `weight_decay`.
    """
    for argument, value in (
        ("learning_rate", learning_rate),
        ("global_clipnorm", global_clipnorm),
        ("weight_decay", weight_decay),
    ):
        if value is None and argument == "weight_decay":
            continue
        if argument == "learning_rate" and isinstance(
            value, keras.optimizers.schedules.LearningRateSchedule
        ):
            continue
        if not is_number(value) or not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"`{argument}` must be a finite number > 0"
                f"{' or None' if argument == 'weight_decay' else ''}. "
                f"Received: {argument}={value!r}"
            )
    if weight_decay is None:
        optimizer = keras.optimizers.Adam(
            learning_rate=learning_rate, global_clipnorm=global_clipnorm
        )
    else:
        optimizer = keras.optimizers.AdamW(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            global_clipnorm=global_clipnorm,
        )
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if len(v.shape) < 2]
        )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def nats_to_bits(nats):
    """Convert a loss in nats to bits (divide by ln 2)."""
    return nats / math.log(2.0)
