"""A character-level LSTM language model on Sherlock Holmes, with its gates shown.

Trains `Embedding -> keraseq.LSTM -> Dense` on *The Adventures of Sherlock
Holmes* (562k characters) with plain `model.fit`:

* batches from `keraseq.text.LanguageModelDataset` (random windows, a new
  offset and order every epoch), validation on the last 10% of the book;
* `keras.callbacks.ReduceLROnPlateau` halves the learning rate when the
  validation loss stops improving, and `keras.callbacks.EarlyStopping` stops
  (keeping the best weights) when it stops improving for good;

then samples text with `keraseq.generation.generate` and opens up the trained
layer with `lstm.gate_activations(...)`: the input gate `i_t`, forget gate
`f_t`, candidate `g_t`, output gate `o_t`, cell `c_t` and hidden state `h_t`
at every character of a sentence. It prints the mean forget and input gate
per character and saves a heatmap of the forget gate (units x characters) as a
PNG. It also checks that the `hidden` returned by `gate_activations` is the
layer's own output.

Run (any backend):

    KERAS_BACKEND=tensorflow python examples/lstm_language_model.py
    KERAS_BACKEND=jax python examples/lstm_language_model.py --quick --plot /tmp/gates.png

`--quick` trains on the first 150k characters for three epochs (under 30 s
unless the machine is busy). Other flags: `--plot PATH` (default
`lstm_gates.png` in the current directory), `--units`, `--epochs`,
`--max-chars`, `--sequence-length`, `--batch-size`, `--learning-rate`,
`--sample-length`, `--sentence`, `--seed`.

On the torch backend a busy machine slows the per-step loop a lot (its OpenMP
threads spin while other jobs hold the cores); `OMP_NUM_THREADS=1` made training
steps 5-12x faster here in that situation.

What it printed here (Keras 3.15.1, 2-core CPU shared with other jobs; wall
times include the imports, "load" is the machine's load average):

    $ KERAS_BACKEND=tensorflow python examples/lstm_language_model.py    # 73 s wall at load 3, 90 s at load 7
    LSTM(128) language model, 95,634 parameters
    ...
    Validation after 10 epochs (68 s): loss 1.630 nats/char = 2.352 bits/char, accuracy 0.514  (train loss 1.618)

    Sample (temperature 0.7, 0.5 s):
    Holmes, to be ins well, and which
    was and him street here was of the mastle sudperiving not withouth."

    "Yes, and the certunce of the harding which I had hand had
    alone from my questicullance addandan. ...

    gate_activations()['hidden'] vs the layer's output: max |difference| = 0.0e+00

    Mean gate activation per character over 128 units (forget f_t: 1 keeps the cell, input i_t: 1 writes the candidate):
      char  forget  input   |  forget    input
      '"'    0.689   0.420   |  #######    ####
      'Y'    0.659   0.640   |  #######    ######
      'o'    0.750   0.801   |  #######    ########
      ...
      ' '    0.824   0.893   |  ########   #########
      'i'    0.770   0.906   |  ########   #########
      ...
      'h'    0.864   0.939   |  #########  #########
      ...
      '.'    0.795   0.763   |  ########   ########
      '"'    0.809   0.839   |  ########   ########
      sentence mean: forget 0.815, input 0.881; units with mean forget > 0.9: 56 of 128
    Saved the forget-gate heatmap to .../lstm_gates.png

    KERAS_BACKEND=jax (79 s wall at load 2, 99 s at load 7): 1.646 nats/char =
    2.374 bits/char, accuracy 0.510.
    --quick: TF 17 s wall at load 7, 2.391 nats/char (3.449 bits); JAX 35 s at
    load 7.5, 2.386; torch 17 s at load 1, 2.422.

Reading it: validation loss was still falling by about 0.02 nats per epoch at
epoch 10, so neither callback fired in the default budget; they matter with a
larger `--epochs`. The gates start from a zero state, so the first characters
look different (input gate 0.42 at the opening quote); after that the mean
forget gate dips at the first letter of a word (b 0.78, i 0.77, I 0.75)
and is highest inside the long word "Afghanistan" (up to 0.86), and the input
gate drops again at the full stop (0.76). The heatmap shows the spread the means hide: about 20 of the 128
units close their forget gate (f near 0, erasing their cell) at many
characters, while 56 keep a mean above 0.9 over the sentence.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TensorFlow's C++ logs

import keras
import numpy as np

import keraseq
from keraseq import text
from keraseq.generation import generate
from keraseq.models import nats_to_bits

SENTENCE = "\"You have been in Afghanistan, I perceive.\""


DEFAULTS = {"max_chars": None, "epochs": 10, "sample_length": 300}
QUICK = {"max_chars": 150_000, "epochs": 3, "sample_length": 120}  # --quick


def build_model(vocabulary_size, units, embedding_dim=32):
    """Token ids (batch, time) -> next-character logits (batch, time, vocabulary)."""
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocabulary_size, embedding_dim, name="embedding")(tokens)
    x = keraseq.LSTM(units, return_sequences=True, name="lstm")(x)
    logits = keras.layers.Dense(vocabulary_size, name="logits")(x)
    return keras.Model(tokens, logits, name="lstm_language_model")


def plot_forget_gate(path, sentence, forget, input_gate):
    """Save a heatmap of the forget gate (units sorted by mean) over the sentence's characters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(forget.mean(axis=0))  # units from most forgetful to most retentive
    labels = [{" ": "␣", "\n": "⏎"}.get(c, c) for c in sentence]
    width = max(8.0, 0.16 * len(sentence) + 1.5)
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(width, 7), sharex=True,
        gridspec_kw={"height_ratios": [1, 3]}, constrained_layout=True,
    )
    steps = np.arange(len(sentence))
    top.plot(steps, forget.mean(axis=1), label="mean forget gate $f_t$", color="tab:blue")
    top.plot(steps, input_gate.mean(axis=1), label="mean input gate $i_t$", color="tab:orange")
    top.set_ylim(0, 1)
    top.set_ylabel("mean over units")
    top.legend(loc="lower right", fontsize=8)
    top.grid(alpha=0.3)
    image = bottom.imshow(
        forget[:, order].T, aspect="auto", cmap="viridis", vmin=0, vmax=1,
        interpolation="nearest",
    )
    bottom.set_xticks(steps)
    bottom.set_xticklabels(labels, fontsize=8, family="monospace")
    bottom.set_ylabel(f"unit (sorted by mean $f_t$, {forget.shape[1]} units)")
    bottom.set_xlabel("character")
    figure.colorbar(image, ax=bottom, label="forget gate $f_t$ (1 = keep the cell)")
    figure.suptitle("keraseq.LSTM forget gate over a sentence (character LM, Sherlock Holmes)")
    from keraseq import _atomic

    with _atomic.atomic_path(path) as temporary:  # a PNG appears whole or not at all
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and short (< 30 s)")
    parser.add_argument("--plot", default="lstm_gates.png", help="where to save the heatmap PNG")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--epochs", type=int, help="default 10 (--quick 3)")
    parser.add_argument("--max-chars", type=int, help="train on the first N characters "
                        "(default: the whole book, --quick 150000)")
    parser.add_argument("--sample-length", type=int, help="default 300 (--quick 120)")
    parser.add_argument("--sequence-length", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=4e-3)
    parser.add_argument("--sentence", default=SENTENCE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:  # --quick changes only what was not given
            setattr(args, name, value)

    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    corpus = text.load_corpus("sherlock")
    vocabulary = text.Vocabulary.from_text(corpus, level="char")  # built on the whole book
    if args.max_chars:
        corpus = corpus[: args.max_chars]
    train_ids, validation_ids = text.split(vocabulary.encode(corpus), validation_fraction=0.1)
    train = text.LanguageModelDataset(
        train_ids, args.sequence_length, args.batch_size, seed=args.seed
    )
    x_val, y_val = text.windows(validation_ids, args.sequence_length)
    print(
        f"backend={keras.backend.backend()}  corpus: {len(corpus):,} chars, vocabulary size "
        f"{vocabulary.size}, {len(train)} batches of {args.batch_size}x{args.sequence_length} "
        f"per epoch, {len(x_val)} validation windows"
    )

    model = build_model(vocabulary.size, args.units)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    print(f"LSTM({args.units}) language model, {model.count_params():,} parameters")
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0, verbose=1),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True),
    ]
    began = time.perf_counter()
    history = model.fit(
        train, validation_data=(x_val, y_val), epochs=args.epochs, callbacks=callbacks, verbose=2
    )
    train_seconds = time.perf_counter() - began
    val_loss, val_accuracy = model.evaluate(x_val, y_val, batch_size=64, verbose=0)
    print(
        f"\nValidation after {len(history.history['loss'])} epochs ({train_seconds:.0f} s): "
        f"loss {val_loss:.3f} nats/char = {nats_to_bits(val_loss):.3f} bits/char, "
        f"accuracy {val_accuracy:.3f}  (train loss {history.history['loss'][-1]:.3f})"
    )

    # --- Sampling ---------------------------------------------------------------
    began = time.perf_counter()
    sample = generate(
        model, vocabulary, prompt="Holmes", length=args.sample_length,
        temperature=0.7, seed=args.seed, context_length=args.sequence_length,
    )
    print(f"\nSample (temperature 0.7, {time.perf_counter() - began:.1f} s):\n{sample}\n")

    # --- Gates ------------------------------------------------------------------
    sentence = args.sentence
    unknown = vocabulary.unknown(sentence)
    if unknown:
        raise SystemExit(f"--sentence has characters outside the vocabulary: {unknown}")
    ids = vocabulary.encode(sentence)[None, :]  # (1, T)
    embedded = model.get_layer("embedding")(ids)  # (1, T, embedding_dim)
    lstm = model.get_layer("lstm")
    gates = lstm.gate_activations(embedded)  # dict of (1, T, units)
    gates = {name: keras.ops.convert_to_numpy(value)[0] for name, value in gates.items()}
    hidden = keras.ops.convert_to_numpy(lstm(embedded))[0]  # (T, units)
    print(
        "gate_activations()['hidden'] vs the layer's output: max |difference| = "
        f"{np.max(np.abs(gates['hidden'] - hidden)):.1e}"
    )
    forget, input_gate = gates["forget"], gates["input"]  # (T, units) each
    print(f"\nMean gate activation per character over {lstm.units} units "
          "(forget f_t: 1 keeps the cell, input i_t: 1 writes the candidate):")
    print("  char  forget  input   |  forget    input")
    for char, f, i in zip(sentence, forget.mean(axis=1), input_gate.mean(axis=1)):
        bar_f = "#" * int(round(10 * f))
        bar_i = "#" * int(round(10 * i))
        print(f"  {char!r:5s} {f:6.3f}  {i:6.3f}   |  {bar_f:10s} {bar_i:10s}")
    print(f"  sentence mean: forget {forget.mean():.3f}, input {input_gate.mean():.3f}; "
          f"units with mean forget > 0.9: {(forget.mean(axis=0) > 0.9).sum()} of {lstm.units}")

    plot_forget_gate(args.plot, sentence, forget, input_gate)
    print(f"Saved the forget-gate heatmap to {os.path.abspath(args.plot)}")
    print(f"Total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
