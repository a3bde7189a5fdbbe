"""Gradient flow through time in recurrent language models.

Back-propagation through time multiplies one Jacobian `∂h_{t+1}/∂h_t` per step,
so the gradient of a loss at the last step `T` with respect to an early hidden
state `h_t` shrinks (or grows) geometrically with `T − t`. This module measures
that decay on real text:

    g_t = ∂ℓ_T / ∂h_t,    t = 1 … T

where `ℓ_T` is the cross-entropy of one sequence's prediction at its last step
`T` (of the token following the window), and `h_t` the hidden state after step
`t`, the recurrent state that feeds step `t + 1` (for an LSTM `h_t`, the cell
state `c_t` held fixed; for stacked layers every layer's `h_t`, concatenated).
The number reported per step is `‖g_t‖₂` over the hidden units, averaged over
the sequences.

It also measures the global gradient norm of the usual training loss (mean
cross-entropy over every position, all weights), before and after Keras's
clipping by global norm (`global_clipnorm`, 1.0 in `keraseq train`).

How, with Keras alone (any backend): the gradients come out of a Keras
optimizer. `_GradientCapture` is a `keras.optimizers.Optimizer` that copies
the gradients it receives into variables of its own, once as they arrive and
once after Keras's own clipping, and leaves the weights unchanged; one
`train_on_batch` then yields exact gradients (no weight update to difference,
so no rounding). For `∂ℓ_T/∂h_t` a probe model runs the model's own cells
(float32 copies, same weights) with a zero perturbation `δ_t` added to `h_t`
inside the recurrence, `δ` being the probe's only trainable weight and `ℓ_T`
its loss: `∂ℓ_T/∂δ_t = ∂ℓ_T/∂h_t`.

What it shows on Shakespeare (T = 100, 128 units): at initialisation the tanh
RNN's ‖g_1‖/‖g_T‖ is about 0.3 and the LSTM's about 1e-8 (its forget gates start
near sigmoid(1) = 0.73); after training (20 Adam steps at 32 units, or 2 epochs
at 128 units) the tanh RNN's falls to 1e-14 or below, under the LSTM's
(`examples/compare_recurrent.py`).

Command line: `keraseq inspect gradients [DIR] [--models ...] [--sequence-length N]
[--out DIR]` writes `gradients.png` and `gradients.json`.

Example:

```python
from keraseq.inspect import gradients

model = gradients.build_model("rnn-tanh", vocabulary_size=65)
tokens, targets = gradients.corpus_windows(held_out_ids, 100, 64)
norms = gradients.state_gradient_norms(model, tokens, targets[:, -1])  # (100,)
report = gradients.inspect_gradients({"rnn-tanh": model}, tokens, targets)
gradients.write(report, "inspect")  # inspect/gradients.png, inspect/gradients.json
```
"""

import math
import time
from pathlib import Path

import numpy as np

from keraseq._keras import import_keras, set_random_seed

import_keras()

import keras  # noqa: E402
from keras import ops  # noqa: E402

from keraseq._validation import check_positive_int, is_number  # noqa: E402
from keraseq.inspect._plot import pyplot, save_figure, save_json  # noqa: E402
from keraseq.layers import LSTM, SimpleRNN, TokenEmbedding  # noqa: E402

MODEL_NAMES = ("rnn-tanh", "rnn-relu-identity", "lstm")
"""The freshly initialised models `build_model` knows."""

DESCRIPTIONS = {
    "rnn-tanh": "simple RNN, tanh, orthogonal recurrent initialisation "
                "(keraseq.models.language_model('rnn'))",
    "rnn-relu-identity": "simple RNN, ReLU, identity recurrent initialisation "
                         "(IRNN, Le et al. 2015)",
    "lstm": "LSTM, forget-gate bias 1, orthogonal recurrent initialisation "
            "(keraseq.models.language_model('lstm'))",
}

NORM = ("L2 norm over the hidden units of dl_T/dh_t, one per sequence, "
        "averaged over the sequences")
LOSS = ("l_T: cross-entropy (nats) of one sequence's next-token prediction at its "
        "last step T only")
GLOBAL_LOSS = ("gradient of the mean cross-entropy (nats) over every position of the "
               "batch, as in `keraseq train`, L2 norm over all trainable weights; after "
               "clipping: the norm of the gradient Keras's optimizer applies with "
               "global_clipnorm c, g * c / max(c, n), n being the norm as Keras measures it "
               "(on TensorFlow an embedding's gradient rows count once per token occurrence)")


# ----------------------------------------------------------------- gradient capture


class _GradientCapture(keras.optimizers.Optimizer):
    """An optimizer that records gradients instead of applying them.

    `apply` adds the gradients it receives to `raw_gradients` (before any
    clipping), then lets Keras's `Optimizer.apply` clip them (when
    `global_clipnorm` is set) and pass each to `update_step`, which adds it to
    `gradients` (after clipping) and leaves the weight as it is. One
    `train_on_batch` after `reset()` leaves exactly that batch's gradients in
    both lists, in the order of the trainable weights. (`assign_add` rather
    than `assign`: on TensorFlow an embedding's gradient arrives as
    `IndexedSlices`, which `assign_add` scatters and adds, repeated rows
    included.)
    """

    def __init__(self, global_clipnorm=None, name="gradient_capture"):
        super().__init__(learning_rate=1.0, global_clipnorm=global_clipnorm, name=name)
        self.raw_gradients = []
        self.gradients = []

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        for records, name in ((self.raw_gradients, "raw_gradient"),
                              (self.gradients, "gradient")):
            records[:] = [self.add_variable_from_reference(variable, name=name)
                          for variable in variables]

    def apply(self, grads, trainable_variables=None):
        if not self.built and trainable_variables is not None:
            self.build(list(trainable_variables))
        # `grads` follows the variables the optimizer was built with, one to one
        # (`Optimizer.apply`'s contract), as do the records.
        for record, gradient in zip(self.raw_gradients, grads):
            if gradient is not None:
                self.assign_add(record, gradient)
        return super().apply(grads, trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        # `_get_variable_index` is how Keras's own optimizers (and the custom
        # optimizer example in Keras's `Optimizer` docstring) find a slot.
        self.assign_add(self.gradients[self._get_variable_index(variable)], gradient)

    def reset(self):
        for record in self.raw_gradients + self.gradients:
            record.assign(ops.zeros(record.shape, dtype=record.dtype))


def _numpy(records):
    return [np.asarray(ops.convert_to_numpy(r), dtype=np.float64) for r in records]


def _capture(model, x, y, optimizer):
    """`train_on_batch(x, y)` with `optimizer` (a compiled `_GradientCapture`);
    returns the gradients of every trainable weight, `(raw, after clipping)`."""
    if optimizer.built:
        optimizer.reset()
    model.train_on_batch(x, y)
    return _numpy(optimizer.raw_gradients), _numpy(optimizer.gradients)


def _compile(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
    )
    return optimizer


# ------------------------------------------------------------------- model anatomy


def _recurrent_stack(model):
    """(embedding matrix, [recurrent layers], (head kernel, head bias)) of a
    recurrent language model, or a one-line `ValueError`."""
    embedding, recurrent, head = None, [], None
    name = getattr(model, "name", type(model).__name__)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Dropout):
            continue
        projected = bool(recurrent) and bool(getattr(recurrent[-1], "output_units", None))
        if isinstance(layer, keras.layers.Embedding) and embedding is None and not recurrent:
            if layer.mask_zero:
                raise ValueError(f"model {name!r}: an Embedding with mask_zero=True is not "
                                 "supported (the probe runs every step unmasked)")
            embedding = layer.embeddings
        elif isinstance(layer, (SimpleRNN, LSTM)) and head is None and not projected:
            if layer.go_backwards or not layer.return_sequences:
                raise ValueError(
                    f"model {name!r}: gradients through time need a forward recurrent "
                    f"layer returning every step; layer {layer.name!r} has "
                    f"go_backwards={layer.go_backwards}, "
                    f"return_sequences={layer.return_sequences}")
            recurrent.append(layer)
        elif (isinstance(layer, keras.layers.Dense) and recurrent and head is None
              and not projected):
            head = (layer.kernel, layer.bias if layer.use_bias else None)
        else:
            kind = type(layer).__name__
            what = ("gradients through a recurrent state only: a transformer has none"
                    if kind in ("TransformerBlock", "TokenAndPositionEmbedding",
                                "MultiHeadAttention")
                    else "expected Embedding -> SimpleRNN/LSTM layers -> logits")
            raise ValueError(
                f"model {name!r} has a {kind} layer {layer.name!r}; keraseq inspect "
                f"gradients measures {what}")
    if embedding is None or not recurrent:
        raise ValueError(
            f"model {name!r} is not a recurrent language model (expected Embedding -> "
            "SimpleRNN/LSTM layers -> logits); keraseq inspect gradients measures "
            "gradients through a recurrent state only")
    last = recurrent[-1]
    if head is None:
        if isinstance(last, SimpleRNN) and last.output_units:
            head = (last.cell.output_kernel, last.cell.output_bias)
        else:
            raise ValueError(f"model {name!r} has no output layer after its recurrent layers")
    head = tuple(None if w is None else ops.convert_to_numpy(w).astype("float32")
                 for w in head)
    return ops.convert_to_numpy(embedding).astype("float32"), recurrent, head


def _cell_copy(layer, input_dim):
    """A float32, non-trainable copy of `layer.cell` without dropout or output
    projection, built, with the same recurrence weights."""
    cell = layer.cell
    config = cell.get_config()
    config.update(dtype="float32", trainable=False, dropout=0.0, recurrent_dropout=0.0,
                  name=f"{cell.name}_copy")
    if "output_units" in config:
        config["output_units"] = None
    copy = type(cell).from_config(config)
    copy.build((None, input_dim))
    copy.kernel.assign(ops.convert_to_numpy(cell.kernel).astype("float32"))
    copy.recurrent_kernel.assign(ops.convert_to_numpy(cell.recurrent_kernel).astype("float32"))
    if cell.use_bias:
        copy.bias.assign(ops.convert_to_numpy(cell.bias).astype("float32"))
    return copy


def describe(model):
    """One line: the layers of a recurrent language model and its size."""
    embedding, recurrent, head = _recurrent_stack(model)
    parts = [f"Embedding({embedding.shape[0]}, {embedding.shape[1]})"]
    for layer in recurrent:
        init = keras.initializers.serialize(layer.recurrent_initializer)
        init = init.get("class_name", init) if isinstance(init, dict) else init
        if isinstance(layer, LSTM):
            parts.append(f"LSTM({layer.cell.units}, recurrent init {init})")
        else:
            activation = keras.activations.serialize(layer.activation)
            parts.append(f"SimpleRNN({layer.cell.units}, {activation}, recurrent init {init})")
    parts.append(f"logits({head[0].shape[1]})")
    return f"{' -> '.join(parts)}; {model.count_params():,} parameters"


# --------------------------------------------------------------------- the probe


class _StatePerturbation(keras.layers.Layer):
    """Holds `delta (batch_size, sequence_length, units)`, zeros, the probe's
    only trainable weight, and appends it to the input features."""

    def __init__(self, batch_size, sequence_length, units, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = batch_size
        self.sequence_length = sequence_length
        self.units = units

    def build(self, input_shape):
        self.delta = self.add_weight(
            shape=(self.batch_size, self.sequence_length, self.units),
            initializer="zeros", name="delta")

    def call(self, inputs):
        return ops.concatenate([inputs, ops.cast(self.delta, inputs.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.units)


class _PerturbedCell(keras.layers.Layer):
    """`cell` with `δ_t` added to the new hidden state: the input of a step is
    `[x_t, δ_t]`; `h_t = cell(x_t, states)[h] + δ_t` is both the output and the
    state passed on (an LSTM's cell state `c_t` is passed on unchanged)."""

    def __init__(self, cell, features, **kwargs):
        super().__init__(dtype=cell.dtype_policy, **kwargs)
        self.cell = cell
        self.features = features
        self.state_size = cell.state_size
        self.output_size = cell.units

    def build(self, input_shape):
        self.built = True

    def call(self, inputs, states):
        x_t = inputs[:, : self.features]  # (batch_size, features)
        delta_t = inputs[:, self.features:]  # (batch_size, units)
        _, new_states = self.cell(x_t, states)
        h_t = new_states[0] + delta_t
        return h_t, [h_t, *new_states[1:]]

    def get_initial_state(self, batch_size=None):
        return self.cell.get_initial_state(batch_size)


def _probe(model, batch_size, sequence_length):
    """The probe model for `model`: embedded tokens in, last-step logits out."""
    embedding, recurrent, (kernel, bias) = _recurrent_stack(model)
    features = embedding.shape[1]
    inputs = keras.Input(batch_shape=(batch_size, sequence_length, features), name="embedded")
    x = inputs
    for index, layer in enumerate(recurrent):
        cell = _cell_copy(layer, features)
        x = _StatePerturbation(batch_size, sequence_length, cell.units,
                               dtype="float32", name=f"delta_{index}")(x)
        x = keras.layers.RNN(_PerturbedCell(cell, features),
                             return_sequences=index < len(recurrent) - 1,
                             dtype="float32", name=f"recurrent_{index}")(x)
        features = cell.units
    dense = keras.layers.Dense(kernel.shape[1], use_bias=bias is not None, trainable=False,
                               dtype="float32", name="logits")
    logits = dense(x)  # (batch_size, vocabulary_size), from h_T + δ_T
    dense.set_weights([kernel] if bias is None else [kernel, bias])
    probe = keras.Model(inputs, logits, name="state_gradient_probe")
    return probe, embedding


def _check_tokens(tokens, next_tokens):
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer) or 0 in tokens.shape:
        raise ValueError("`tokens` must be a non-empty 2-D integer array (batch_size, "
                         f"sequence_length). Received: tokens.shape={tokens.shape}, "
                         f"dtype={tokens.dtype}")
    next_tokens = np.asarray(next_tokens)
    if next_tokens.shape != tokens.shape[:1] or not np.issubdtype(next_tokens.dtype,
                                                                   np.integer):
        raise ValueError("`next_tokens` must be an integer array (batch_size,) = "
                         f"{tokens.shape[:1]}. Received: next_tokens.shape={next_tokens.shape}")
    return tokens.astype("int32"), next_tokens.astype("int32")


def state_gradients(model, tokens, next_tokens, batch_size=32):
    """`∂ℓ_T/∂h_t` for every sequence and step: the last-step loss back to every
    hidden state.

    `ℓ_T` is the cross-entropy (nats, from the logits) of each sequence's
    prediction at its last step `T` of the token `next_tokens` that follows it;
    `h_t` the hidden state after step `t` (for an LSTM, `h_t` with `c_t` held
    fixed; for stacked layers, each layer's `h_t`). Inference mode (no dropout),
    float32, whatever the model's dtype policy.

    Args:
        model: a recurrent language model from `keraseq.models.language_model`
            (`"rnn"` or `"lstm"`) or `build_model`: `Embedding` → keraseq
            `SimpleRNN`/`LSTM` layers → logits.
        tokens: int array `(num_sequences, sequence_length)`.
        next_tokens: int array `(num_sequences,)`, the token after each window.
        batch_size: positive int, default 32: sequences per probe step.

    Returns:
        float64 numpy array `(num_sequences, sequence_length, units)`, with the
        layers' units concatenated for stacked layers (bottom layer first).

    Raises:
        ValueError: for a model that is not a recurrent language model (a
            transformer, say), or malformed `tokens` / `next_tokens`.
    """
    tokens, next_tokens = _check_tokens(tokens, next_tokens)
    batch_size = min(check_positive_int("batch_size", batch_size), len(tokens))
    probe, embedding = _probe(model, batch_size, tokens.shape[1])
    optimizer = _compile(probe, _GradientCapture())
    result = []
    for start in range(0, len(tokens), batch_size):
        x, y = tokens[start:start + batch_size], next_tokens[start:start + batch_size]
        size = len(x)
        if size < batch_size:  # pad the last batch (same shapes: no new trace)
            x = np.concatenate([x, np.zeros((batch_size - size, x.shape[1]), x.dtype)])
            y = np.concatenate([y, np.zeros((batch_size - size,), y.dtype)])
        deltas, _ = _capture(probe, embedding[x], y, optimizer)  # each (batch, T, units)
        # The probe's loss is the mean over the batch, so each sequence's own
        # gradient is `batch_size` times the batch loss's; sequences do not mix.
        result.append(np.concatenate(deltas, axis=-1)[:size] * batch_size)
    return np.concatenate(result, axis=0)


def state_gradient_norms(model, tokens, next_tokens, batch_size=32):
    """`mean over sequences of ‖∂ℓ_T/∂h_t‖₂`, for t = 1 … T.

    Same arguments as `state_gradients`.

    Returns:
        float64 numpy array `(sequence_length,)`; entry `t − 1` is step `t`.
    """
    gradients = state_gradients(model, tokens, next_tokens, batch_size=batch_size)
    return np.linalg.norm(gradients, axis=-1).mean(axis=0)


def global_gradient_norms(model, tokens, targets, global_clipnorm=1.0, batch_size=32):
    """The global gradient norm of the training loss, before and after clipping.

    For each batch: the gradient of the mean cross-entropy over every position
    (as `keraseq train` computes it, in training mode: dropout applies if the
    model has any) with respect to all trainable weights, its L2 norm, and the
    L2 norm of the gradient Keras's optimizer applies after clipping with
    `global_clipnorm` `c`: `g · c / max(c, n)`, so `min(norm, c)` on JAX and
    torch. On TensorFlow (Keras 3.15.1) an embedding's gradient reaches the
    optimizer as `IndexedSlices` and Keras's global norm `n` counts its rows
    once per token occurrence, before repeated ids are summed, so `n` (and the
    clipped norm) differs slightly from the true norm whenever a batch repeats a
    token. The model is cloned in float32 (whatever its dtype policy); `model`
    itself is neither compiled nor changed.

    Args:
        model: a `keras.Model` mapping tokens to logits
            `(batch_size, sequence_length, vocabulary_size)`.
        tokens: int array `(num_sequences, sequence_length)`.
        targets: int array `(num_sequences, sequence_length)`, the next tokens.
        global_clipnorm: float > 0, default 1.0.
        batch_size: positive int, default 32.

    Returns:
        dict with `"before"` and `"after"`: lists of floats, one per batch.

    Raises:
        ValueError: for a non-positive `global_clipnorm` or `batch_size`, or
            `tokens` and `targets` of different shapes.
    """
    if not is_number(global_clipnorm) or not (math.isfinite(global_clipnorm)
                                              and global_clipnorm > 0):
        raise ValueError("`global_clipnorm` must be a finite number > 0. "
                         f"Received: global_clipnorm={global_clipnorm!r}")
    tokens, targets = np.asarray(tokens, "int32"), np.asarray(targets, "int32")
    if tokens.ndim != 2 or tokens.shape != targets.shape:
        raise ValueError("`tokens` and `targets` must be 2-D with the same shape "
                         f"(num_sequences, sequence_length). Received: tokens.shape="
                         f"{tokens.shape}, targets.shape={targets.shape}")
    batch_size = min(check_positive_int("batch_size", batch_size), len(tokens))
    # A float32 clone: the same numbers as `state_gradients`, and no loss scaling
    # (`compile` would wrap the optimizer in a LossScaleOptimizer for a
    # mixed_float16 model, which skips steps whose scaled gradients overflow).
    clone = keras.models.clone_model(
        model, clone_function=lambda layer: type(layer).from_config(
            {**layer.get_config(), "dtype": "float32"}))
    clone.set_weights(model.get_weights())
    optimizer = _compile(clone, _GradientCapture(global_clipnorm=float(global_clipnorm)))
    norms = {"before": [], "after": []}
    for start in range(0, len(tokens), batch_size):
        raw, clipped = _capture(clone, tokens[start:start + batch_size],
                                targets[start:start + batch_size], optimizer)
        norms["before"].append(_global_norm(raw))
        norms["after"].append(_global_norm(clipped))
    return norms


def _global_norm(arrays):
    return float(math.sqrt(sum(float(np.sum(a * a)) for a in arrays)))


# ------------------------------------------------------------------ models and data


def build_model(name, vocabulary_size, units=128, embedding_dim=64):
    """A freshly initialised recurrent language model, by name.

    * `"rnn-tanh"`: `keraseq.models.language_model("rnn", ...)`: a tanh
      `SimpleRNN` with Keras's default initialisation (orthogonal recurrent
      kernel, Glorot input kernel, zero bias).
    * `"rnn-relu-identity"`: the same with `activation="relu"` and
      `recurrent_initializer="identity"` (IRNN, Le et al. 2015), built here
      from `keraseq.layers` (`language_model` takes neither argument).
    * `"lstm"`: `keraseq.models.language_model("lstm", ...)` (forget-gate bias 1).

    Seed with `keras.utils.set_random_seed` first for a reproducible model.

    Args:
        name: one of `MODEL_NAMES`.
        vocabulary_size: positive int.
        units: positive int, default 128: hidden width.
        embedding_dim: positive int, default 64.

    Returns:
        A `keras.Model`: int32 tokens `(batch_size, sequence_length)` → logits
        `(batch_size, sequence_length, vocabulary_size)`.

    Raises:
        ValueError: for an unknown `name` or a non-positive size.
    """
    from keraseq.models import language_model

    if name not in MODEL_NAMES:
        raise ValueError(f"`name` must be one of {', '.join(MODEL_NAMES)}. "
                         f"Received: name={name!r}")
    if name == "rnn-tanh":
        return language_model("rnn", vocabulary_size, units=units,
                              embedding_dim=embedding_dim, name="rnn_tanh")
    if name == "lstm":
        return language_model("lstm", vocabulary_size, units=units,
                              embedding_dim=embedding_dim, name="lstm")
    vocabulary_size = check_positive_int("vocabulary_size", vocabulary_size)
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = TokenEmbedding(vocabulary_size, check_positive_int("embedding_dim", embedding_dim),
                       name="embedding")(tokens)
    logits = SimpleRNN(check_positive_int("units", units), activation="relu",
                       recurrent_initializer="identity", return_sequences=True,
                       output_units=vocabulary_size, name="rnn_0")(x)
    return keras.Model(tokens, logits, name="rnn_relu_identity")


def parse_models(text):
    """`"rnn-tanh,lstm"` → `["rnn-tanh", "lstm"]`, or a one-line `ValueError`."""
    names = [part.strip() for part in str(text).split(",")]
    if not any(names):
        raise ValueError(f"--models must name at least one of {', '.join(MODEL_NAMES)}; "
                         f"got {text!r}")
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"--models: unknown model {unknown[0]!r} (choose from "
                         f"{', '.join(MODEL_NAMES)})")
    if "" in names or len(set(names)) != len(names):
        raise ValueError(f"--models must list distinct names separated by commas; got {text!r}")
    return names


def corpus_windows(ids, sequence_length, count):
    """`count` windows of real text, spread evenly over `ids`.

    Args:
        ids: 1-D int array, e.g. the held-out tail of a corpus.
        sequence_length: positive int, the window length `T`.
        count: positive int, how many windows (fewer if `ids` holds fewer).

    Returns:
        `(tokens, targets)`, int32 `(num_windows, sequence_length)` each, the
        targets being the tokens shifted by one (`targets[:, -1]` follows the
        window).

    Raises:
        ValueError: naming `sequence_length` when `ids` is too short for one window.
    """
    from keraseq.text import windows

    ids = np.asarray(ids)
    sequence_length = check_positive_int("sequence_length", sequence_length)
    if len(ids) < sequence_length + 1:
        raise ValueError(
            f"`sequence_length` must be below the {len(ids)} tokens of the text. "
            f"Received: sequence_length={sequence_length}")
    x, y = windows(ids, sequence_length)  # non-overlapping, (N, T)
    count = min(check_positive_int("count", count), len(x))
    chosen = np.unique(np.linspace(0, len(x) - 1, count).round().astype(int))
    return x[chosen], y[chosen]


# ------------------------------------------------------------------ report and plot


def inspect_gradients(models, tokens, targets, batch_size=32, global_clipnorm=1.0,
                      descriptions=None):
    """The numbers behind the gradient plot, for several models on the same data.

    Args:
        models: dict name → recurrent language model (see `state_gradients`).
        tokens: int array `(num_sequences, sequence_length)` of real text.
        targets: int array, same shape: the next tokens (`targets[:, -1]` is the
            token the last-step loss `ℓ_T` predicts).
        batch_size: positive int, default 32.
        global_clipnorm: float > 0, default 1.0 (as `keraseq train`).
        descriptions: optional dict name → text (default: from the model).

    Returns:
        A JSON-ready dict: `sequence_length`, `sequences`, `batch_size`,
        `batches`, `backend`, what is measured (`loss`, `norm`), and under
        `models[name]`: `norms` (T floats, step 1 first), `ratio_first_last`
        (`‖∂ℓ_T/∂h_1‖ / ‖∂ℓ_T/∂h_T‖`), `global_norm_before_clipping`,
        `global_norm_after_clipping` (means over the batches) and their
        per-batch lists, `description`, `seconds`.
    """
    tokens, next_tokens = _check_tokens(tokens, np.asarray(targets)[:, -1])
    batch_size = min(check_positive_int("batch_size", batch_size), len(tokens))
    report = {
        "what": "gradient of the last-step loss with respect to each hidden state",
        "loss": LOSS,
        "norm": NORM,
        "global_norm": GLOBAL_LOSS,
        "global_clipnorm": float(global_clipnorm),
        "sequence_length": int(tokens.shape[1]),
        "sequences": int(len(tokens)),
        "batch_size": int(batch_size),
        "batches": int(math.ceil(len(tokens) / batch_size)),
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "models": {},
    }
    for name, model in models.items():
        started = time.time()
        norms = state_gradient_norms(model, tokens, next_tokens, batch_size=batch_size)
        clipped = global_gradient_norms(model, tokens, targets, global_clipnorm=global_clipnorm,
                                        batch_size=batch_size)
        report["models"][name] = {
            "description": (descriptions or {}).get(name) or describe(model),
            "architecture": describe(model),
            "norms": [float(v) for v in norms],
            "ratio_first_last": float(norms[0] / norms[-1]) if norms[-1] > 0 else None,
            "global_norm_before_clipping": float(np.mean(clipped["before"])),
            "global_norm_after_clipping": float(np.mean(clipped["after"])),
            "global_norms_before_clipping": clipped["before"],
            "global_norms_after_clipping": clipped["after"],
            "seconds": round(time.time() - started, 2),
        }
    return report


def plot_gradients(report, path, title=None):
    """Write the log-scale plot of `report` (from `inspect_gradients`) to `path`.

    x: steps back from the loss, `T − t` (0 = the last step); y: `‖∂ℓ_T/∂h_t‖`
    on a log axis, one line per model. A norm that reaches exactly 0 (below
    float32's range) is left off the line and marked in the legend.
    """
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(9.0, 5.0))
    length = report["sequence_length"]
    colors = {"rnn-tanh": "tab:red", "rnn-relu-identity": "tab:orange", "lstm": "tab:blue"}
    for name, entry in report["models"].items():
        norms = np.asarray(entry["norms"], dtype=np.float64)
        back = length - 1 - np.arange(length)  # steps back from T for t = 1 … T
        shown = np.where(norms > 0, norms, np.nan)
        ratio = entry["ratio_first_last"]
        label = (f"{name}: ‖g_1‖ / ‖g_T‖ = {ratio:.1e}" if ratio else f"{name}")
        if np.any(norms <= 0):
            label += f" (0 beyond {int(back[norms <= 0].min())} steps)"
        label += (f"\nglobal norm {entry['global_norm_before_clipping']:.3g} → "
                  f"{entry['global_norm_after_clipping']:.3g} after clipping")
        axis.plot(back, shown, label=label, color=colors.get(name), linewidth=1.8)
    axis.set_yscale("log")
    shown_all = np.concatenate([np.asarray(e["norms"], dtype=np.float64)
                                for e in report["models"].values()])
    shown_all = shown_all[shown_all > 0]
    if shown_all.size:  # at least 3 decades, so a small decay does not look steep
        top = shown_all.max() * 2
        axis.set_ylim(min(shown_all.min() / 2, top / 1e3), top)
    axis.set_xlim(0, length - 1)
    axis.set_xlabel("steps back from the last step, T − t (time steps)")
    axis.set_ylabel("‖g_t‖ = ‖∂ℓ_T / ∂h_t‖  (nats; L2 over units, mean over sequences)")
    axis.set_title(title or (
        f"Gradient of the last-step loss ℓ_T w.r.t. each hidden state h_t\n"
        f"T = {length}, {report['sequences']} sequences, backend {report['backend']}"),
        fontsize=11)
    axis.grid(True, which="major", alpha=0.35)
    axis.grid(True, which="minor", axis="y", alpha=0.12)
    # Below the axes: inside, it would hide some line whatever the corner.
    axis.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.13),
                ncol=min(3, len(report["models"])), frameon=False, title_fontsize=8.5,
                title=f"global gradient norm: all weights, training loss, mean of "
                      f"{report['batches']} batch{'' if report['batches'] == 1 else 'es'}, "
                      f"clipped by Keras to global norm "
                      f"{report['global_clipnorm']:g}")
    return save_figure(figure, path)


def summary_table(report):
    """The printed summary: one row per model."""
    rows = [f"{'model':<20} {'|g_1|':>10} {'|g_T|':>10} {'|g_1|/|g_T|':>12} "
            f"{'global norm':>12} {'clipped':>9}"]
    for name, entry in report["models"].items():
        ratio = entry["ratio_first_last"]
        rows.append(
            f"{name:<20} {entry['norms'][0]:>10.2e} {entry['norms'][-1]:>10.2e} "
            f"{(f'{ratio:.2e}' if ratio is not None else 'n/a'):>12} "
            f"{entry['global_norm_before_clipping']:>12.4g} "
            f"{entry['global_norm_after_clipping']:>9.4g}")
    return "\n".join(rows)


def write(report, out, title=None, stem="gradients"):
    """Write `out/<stem>.png` (the plot) and `out/<stem>.json` (`report`), each
    atomically; returns both paths."""
    out = Path(out)
    png = plot_gradients(report, out / f"{stem}.png", title=title)
    data = save_json(report, out / f"{stem}.json")
    return png, data


# ------------------------------------------------------------------ command line


def _held_out_ids(corpus, vocabulary, max_tokens=None):
    from keraseq.text import load_corpus, split

    ids = vocabulary.encode(load_corpus(corpus))
    if max_tokens:
        ids = ids[: int(max_tokens)]
    _, held_out = split(ids, validation_fraction=0.1)
    return held_out


def run(args):
    """`keraseq inspect gradients`: returns the exit code (0); bad input raises
    a one-line `ValueError`."""
    from keraseq.text import Vocabulary, load_corpus

    length = args.sequence_length
    if length < 2:
        raise ValueError(f"--sequence-length must be at least 2 (a gradient through time "
                         f"needs two steps), got {length}")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {args.seed}")
    fresh_only = {"--models": args.models, "--corpus": args.corpus, "--units": args.units,
                  "--seed": args.seed}
    if args.dir is not None:
        from keraseq._run import load_run, read_run, run_directory

        for flag, value in fresh_only.items():
            if value is not None:
                raise ValueError(f"{flag} applies to freshly initialised models only "
                                 "(without DIR)")
        directory = run_directory(args.dir)
        config, _ = read_run(directory)
        if config.get("model") == "transformer":
            raise ValueError(f"DIR {str(args.dir)!r} holds a transformer; keraseq inspect "
                             "gradients measures gradients through a recurrent state only "
                             "(train with --model rnn or lstm)")
        model, vocabulary, config = load_run(directory, unsafe=args.unsafe)
        corpus = config["corpus"]
        held_out = _held_out_ids(corpus, vocabulary, config.get("max_tokens"))
        name = config.get("model", "model")
        epochs = config.get("epochs_run", "?")
        trained = (f"trained {epochs} epoch{'' if epochs == 1 else 's'} under "
                   f"{config.get('backend', '?')}, validation loss "
                   f"{config.get('validation_loss_nats', float('nan')):.3f} nats/"
                   f"{'word' if vocabulary.level == 'word' else 'char'}")
        models = {name: model}
        descriptions = {name: f"{describe(model)}; {trained} ({directory})"}
        context = f"{name} from {directory.name}, {trained}"
        out = Path(args.out) if args.out else directory / "inspect"
    else:
        names = parse_models(args.models if args.models is not None else ",".join(MODEL_NAMES))
        corpus = args.corpus or "shakespeare"
        text = load_corpus(corpus)
        vocabulary = Vocabulary.from_text(text, level="char")
        from keraseq.text import split

        _, held_out = split(vocabulary.encode(text), validation_fraction=0.1)
        descriptions = {n: DESCRIPTIONS[n] for n in names}
        context = (f"freshly initialised, {args.units or 128} units, seed "
                   f"{0 if args.seed is None else args.seed}")
        out = Path(args.out) if args.out else Path("inspect")
    if length + 1 > len(held_out):
        raise ValueError(f"--sequence-length {length} needs {length + 1} tokens of held-out "
                         f"text (inputs and next-token targets), but corpus {corpus!r} has "
                         f"{len(held_out)} (the last 10 %)")
    available = (len(held_out) - 1) // length  # non-overlapping windows
    batch_size = min(args.batch_size, available)
    batches = min(args.batches, available // batch_size)  # full batches only
    tokens, targets = corpus_windows(held_out, length, batch_size * batches)
    if args.dir is None:
        seed = 0 if args.seed is None else args.seed
        models = {}
        for n in names:
            set_random_seed(seed)  # keras.utils.set_random_seed, quietly
            models[n] = build_model(n, vocabulary.size, units=args.units or 128)
    print(f"keraseq inspect gradients: {context}; {corpus} held-out text, "
          f"T = {length}, {len(tokens)} sequences, backend {keras.backend.backend()}",
          flush=True)
    report = inspect_gradients(models, tokens, targets, batch_size=batch_size,
                               descriptions=descriptions)
    report["corpus"] = str(corpus)
    report["data"] = "held-out text (the last 10 % of the corpus), evenly spaced windows"
    report["context"] = context
    if args.dir is None:
        report["seed"], report["units"] = seed, args.units or 128
    else:
        report["run_directory"] = str(directory)
    corpus_label = Path(str(corpus)).stem if str(corpus) not in ("shakespeare", "sherlock",
                                                                  "irish") else corpus
    title = (f"Gradient of the last-step loss ℓ_T w.r.t. each hidden state h_t\n"
             f"{context}\n{corpus_label} held-out text, T = {length}, {len(tokens)} "
             f"sequences, backend {keras.backend.backend()}")
    png, data = write(report, out, title=title)
    print(summary_table(report))
    print(f"|g_t| = {NORM}; {LOSS}.")
    print(f"wrote {png} and {data}")
    return 0
