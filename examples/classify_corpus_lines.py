"""Which book is this line from? A masked LSTM classifier over variable-length lines.

Every line of at least 10 characters (after stripping surrounding spaces,
duplicates removed) of the three bundled corpora is labelled with its corpus:
`shakespeare` (Tiny Shakespeare), `sherlock` (The Adventures of Sherlock
Holmes) and `irish` (Irish folk tunes in ABC notation). Each class is cut to
the size of the smallest so the classes are balanced, and 20% of every class is
held out for validation.

The lines have different lengths. They are turned into character ids with a
`keras.layers.StringLookup` whose `mask_token=""` is id 0, right-padded with
0 to the longest line, and fed to

    keras.layers.Embedding(mask_zero=True)  -> mask: True at real characters
      -> keraseq.LSTM(64)                   -> the state after the last real character
      -> keras.layers.Dense(3)              -> class logits

`keraseq.LSTM` carries its state unchanged through masked steps, so the
returned last state is the state at the line's last real character whatever
the padding. The script checks this: the same validation lines padded to two
different lengths (and not padded at all) must give the same logits to 1e-5.
It prints the validation accuracy and a confusion matrix (rows: true corpus,
columns: predicted), per-class precision and recall, and a few mistakes.

Run (any backend):

    KERAS_BACKEND=tensorflow python examples/classify_corpus_lines.py
    KERAS_BACKEND=jax python examples/classify_corpus_lines.py --quick

`--quick` uses 1,000 lines per class and three epochs (under 30 s unless the
machine is busy). Other flags: `--epochs`, `--lines-per-class`,
`--batch-size`, `--units`, `--learning-rate`, `--seed`.

On the torch backend a busy machine slows the per-step loop a lot (its OpenMP
threads spin while other jobs hold the cores); `OMP_NUM_THREADS=1` made training
steps 5-12x faster here in that situation.

What it printed here (Keras 3.15.1, 2-core CPU shared with other jobs; wall
times include the imports, "load" is the machine's load average):

    $ KERAS_BACKEND=tensorflow python examples/classify_corpus_lines.py    # 58-84 s wall at load 3, 94 s at load 7
    backend=tensorflow  lines per class: shakespeare 25,392, sherlock 9,795, irish 5,047 -> 5,047 each; train 12,114, validation 3,027
    vocabulary: 88 ids (padding, [UNK], 86 characters); lines right-padded to 86; mean length 42.6
    ...
    Validation after 12 epochs (53 s): accuracy 0.977 (chance 0.333), loss 0.059 nats

    Confusion matrix (rows: true corpus, columns: predicted):
                   shakespeare    sherlock       irish   recall
      shakespeare         1001           7           1    0.992
      sherlock              61         948           0    0.940
      irish                  0           0        1009    1.000
      precision          0.943       0.993       0.999
    Some mistakes:
      shakespeare -> sherlock    'the provost.'
      shakespeare -> sherlock    "No; then he will say 'twas done cowardly, when he wakes."
      shakespeare -> sherlock    'I have so; because it is an open room and good for winter.'
      shakespeare -> irish       'KATHARINA:'

    Padding check: the same 8 validation lines padded to 86 and to 150 (and 3 of them unpadded): max |logit difference| = 0.0e+00

    KERAS_BACKEND=jax (78-87 s wall at load 4-5): accuracy 0.987, loss 0.035;
    recall 0.984 / 0.976 / 1.000; padding check 1.4e-06.
    --quick: TF 12 s wall at load 3, accuracy 0.863 (padding check 0.0); JAX
    22 s at load 4, 0.863 (7.2e-07); torch with OMP_NUM_THREADS=1 19 s at load
    4, 0.862 (2.4e-07) -- 99 s without it.

Reading it: every tune line is recognised (one Shakespeare speaker label,
"KATHARINA:", was taken for a tune on TF). Telling Shakespeare from Sherlock
Holmes takes longer: on TF the model sat at 86% validation accuracy for six
epochs before climbing to 94% at epoch 7 and 97.7% at epoch 12; on JAX (other
initial weights) the climb came at epochs 2-3. The padding check holds on every
backend: masked steps leave the LSTM state untouched, so the logits of a line
do not depend on how far it is padded.
"""

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TensorFlow's C++ logs

import keras
import numpy as np

import keraseq
from keraseq import text

CLASSES = ("shakespeare", "sherlock", "irish")


DEFAULTS = {"lines_per_class": None, "epochs": 12}
QUICK = {"lines_per_class": 1000, "epochs": 3}  # --quick


def corpus_lines(name, min_length=10):
    """Distinct stripped lines of a bundled corpus with at least `min_length` characters."""
    lines = (line.strip() for line in text.load_corpus(name).split("\n"))
    return sorted({line for line in lines if len(line) >= min_length})


def pad_characters(lines, length):
    """Lines as a (num_lines, length) array of single characters, right-padded with ""."""
    table = np.full((len(lines), length), "", dtype=object)
    for row, line in enumerate(lines):
        table[row, : len(line)] = list(line[:length])
    return table.astype(str)


def build_model(vocabulary_size, units, num_classes):
    """Padded character ids (batch, time) -> class logits (batch, num_classes)."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocabulary_size, 32, mask_zero=True, name="embedding")(ids)
    x = keraseq.LSTM(units, name="lstm")(x)  # (batch, units): state at the last real character
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(ids, logits, name="line_classifier")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and short (< 30 s)")
    parser.add_argument("--epochs", type=int, help="default 12 (--quick 3)")
    parser.add_argument("--lines-per-class", type=int, help="default: as many as the "
                        "smallest class has (--quick 1000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:  # --quick changes only what was not given
            setattr(args, name, value)

    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    # --- Balanced, labelled lines, split per class ---------------------------------
    by_class = [corpus_lines(name) for name in CLASSES]
    per_class = min([len(lines) for lines in by_class] + [args.lines_per_class or math.inf])
    train_lines, train_labels, val_lines, val_labels = [], [], [], []
    for label, lines in enumerate(by_class):
        chosen = rng.choice(len(lines), size=per_class, replace=False)
        num_val = per_class // 5
        val_lines += [lines[i] for i in chosen[:num_val]]
        train_lines += [lines[i] for i in chosen[num_val:]]
        val_labels += [label] * num_val
        train_labels += [label] * (per_class - num_val)
    order = rng.permutation(len(train_lines))
    train_lines = [train_lines[i] for i in order]
    train_labels = np.array(train_labels, dtype="int32")[order]
    val_labels = np.array(val_labels, dtype="int32")
    print(
        f"backend={keras.backend.backend()}  lines per class: "
        + ", ".join(f"{name} {len(lines):,}" for name, lines in zip(CLASSES, by_class))
        + f" -> {per_class:,} each; train {len(train_lines):,}, validation {len(val_lines):,}"
    )

    # --- Character ids, 0 = padding -------------------------------------------------
    characters = sorted(set("".join(train_lines)))
    # "" (the padding) -> 0, unknown characters -> 1, the characters -> 2, 3, ...
    lookup = keras.layers.StringLookup(vocabulary=characters, mask_token="")
    length = max(len(line) for line in train_lines + val_lines)

    def encode(lines, padded_length=length):
        ids = lookup(pad_characters(lines, padded_length))  # (num_lines, padded_length)
        return keras.ops.convert_to_numpy(ids).astype("int32")

    x_train, x_val = encode(train_lines), encode(val_lines)  # (num_lines, length)
    print(
        f"vocabulary: {lookup.vocabulary_size()} ids (padding, [UNK], {len(characters)} "
        "characters); "
        f"lines right-padded to {length}; mean length {np.mean([len(l) for l in train_lines]):.1f}"
    )

    # --- Model ------------------------------------------------------------------------
    model = build_model(lookup.vocabulary_size(), args.units, len(CLASSES))
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    began = time.perf_counter()
    model.fit(
        x_train, train_labels, validation_data=(x_val, val_labels),
        epochs=args.epochs, batch_size=args.batch_size, verbose=2,
    )
    train_seconds = time.perf_counter() - began
    val_loss, val_accuracy = model.evaluate(x_val, val_labels, batch_size=256, verbose=0)
    print(
        f"\nValidation after {args.epochs} epochs ({train_seconds:.0f} s): accuracy "
        f"{val_accuracy:.3f} (chance 0.333), loss {val_loss:.3f} nats"
    )

    # --- Confusion matrix -------------------------------------------------------------
    predicted = np.argmax(model.predict(x_val, batch_size=256, verbose=0), axis=-1)
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(confusion, (val_labels, predicted), 1)
    print("\nConfusion matrix (rows: true corpus, columns: predicted):")
    print(f"  {'':12s}" + "".join(f"{name:>12s}" for name in CLASSES) + f"{'recall':>9s}")
    for i, name in enumerate(CLASSES):
        recall = confusion[i, i] / confusion[i].sum()
        print(f"  {name:12s}" + "".join(f"{n:12d}" for n in confusion[i]) + f"{recall:9.3f}")
    precision = np.diag(confusion) / np.maximum(confusion.sum(axis=0), 1)
    print(f"  {'precision':12s}" + "".join(f"{p:12.3f}" for p in precision))
    mistakes = np.flatnonzero(predicted != val_labels)[:4]
    if len(mistakes):
        print("Some mistakes:")
        for i in mistakes:
            true, guess = CLASSES[val_labels[i]], CLASSES[predicted[i]]
            print(f"  {true:>11s} -> {guess:11s} {val_lines[i]!r}")

    # --- Padding does not change the prediction ----------------------------------------
    lines = val_lines[:8]
    padded = keras.ops.convert_to_numpy(model(encode(lines, length), training=False))  # (8, 3)
    longer = keras.ops.convert_to_numpy(model(encode(lines, length + 64), training=False))
    # And without any padding, one line at a time (each length is a new shape: 3 lines only).
    unpadded = np.concatenate(
        [keras.ops.convert_to_numpy(model(encode([line], len(line)))) for line in lines[:3]]
    )  # (3, 3)
    difference = max(np.max(np.abs(padded - longer)), np.max(np.abs(padded[:3] - unpadded)))
    print(
        f"\nPadding check: the same {len(lines)} validation lines padded to {length} and to "
        f"{length + 64} (and 3 of them unpadded): max |logit difference| = {difference:.1e}"
    )
    if not difference <= 1e-5:
        raise SystemExit(f"Padding changed the logits by {difference:.1e} > 1e-5")
    print(f"Total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
