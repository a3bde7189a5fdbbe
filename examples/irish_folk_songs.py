"""Irish folk tunes in ABC notation from a character-level LSTM.

The generator of MIT 6.S191 (Introduction to Deep Learning), lab 1, part 2
("Music generation with RNNs"), written with keraseq: a character-level LSTM
language model trained on the bundled corpus of about 820 Irish folk tunes in
ABC notation (`keraseq/data/irish_folk_songs.abc`, 198k characters, MIT
licence: see `keraseq/data/LICENSE.irish_folk_songs.md`), then sampled from
the prompt "X:" (the first line of every ABC tune) to write new tunes.

An ABC tune is plain text: a header (`X:` index, `T:` title, `M:` metre,
`L:` unit note length, `K:` key) and then the melody, one character per note
name (`A`-`G`, `a`-`g` an octave higher), with bar lines `|`, repeats `:|`,
note lengths as digits and triplets as `(3`. Tunes are separated by a blank
line. The model must learn all of it from characters.

Steps:

1. `keraseq.text`: the corpus, a character vocabulary, a 90/10 split, and
   `LanguageModelDataset` batches of 100-character windows;
2. `keraseq.models.language_model("lstm", ...)` (`Embedding -> keraseq.LSTM
   -> Dense`), Adam with gradients clipped to global norm 1, plain `model.fit`
   with early stopping that keeps the best validation epoch;
3. `keraseq.generation.generate` from "X:", each sample cut at the first
   blank line (the end of one tune) and renumbered `X:1`, `X:2`, ...;
4. a check of each tune's header (T:, M:, L:, K: present) and bar count,
   then every tune printed and written to one `.abc` file.

To listen: open the `.abc` file in any ABC tool (e.g. `abc2midi tunes.abc`
writes MIDI files, `abcm2ps` sheet music, or paste a tune into an online ABC
player). When `music21` happens to be installed the script also parses each
tune with it and says whether it parsed; nothing here needs it.

Run (any backend):

    KERAS_BACKEND=tensorflow python examples/irish_folk_songs.py
    KERAS_BACKEND=jax python examples/irish_folk_songs.py --quick --out /tmp/tunes.abc

Defaults: LSTM(256), 12 epochs of 100-character windows, batch 32 (a few
minutes on a 2-core CPU). `--quick`: LSTM(128) for 3 epochs (under a minute;
the tunes are rougher). For better tunes train longer and wider, e.g.
`--units 512 --epochs 30` (MIT's lab uses 1024 units and 3000 steps of batch
8). Other flags: `--sequence-length`, `--batch-size`, `--learning-rate`,
`--tunes`, `--length`, `--temperature`, `--seed`, `--out` (default
`irish_tunes.abc` in the current directory).

On the torch backend a busy machine slows the per-step loop a lot;
`OMP_NUM_THREADS=1` helps there.

What it printed here (Keras 3.15.1, 2-core CPU shared with other jobs, load
average about 6):

    $ KERAS_BACKEND=tensorflow python examples/irish_folk_songs.py    # about 2 min wall
    Irish folk tunes: 804 tunes, 197,618 characters, 84 tokens in the vocabulary (backend tensorflow)
    LSTM(256) language model, 355,668 parameters; 12 epochs of 55 batches of 32 x 100 characters
    ...
    Validation loss 1.501 nats/char = 2.165 bits/char (uniform guess 4.431 nats); trained 82 s

    --- tune 3 (225 characters, complete header, 17 bar lines)
    X:3
    T:F orid these
    Z: id:dc-reel-168
    M:C
    L:1/8
    K:A Dorian
    e|dBBd cAB2|e3B B2gd|BdAF ABd2|A3B d2ed|edBd ega2|gfde f2fg|!
    e2fd c2AG|EGEA BGAG|AdcA B2cd|!
    e2fd e2Bc|d2Bc d3e|fdeg fedc|!
    defa bgaf|edcd edcd|edBd edge|fddf edB2:|!

    Sampled 3 tunes in 11 s; wrote /tmp/irish_tunes.abc (...)

Early stopping ended the run after epoch 10 (validation loss 1.5006 at epoch 8,
1.5008 and 1.5126 after it) and kept epoch 8's weights. All three tunes had the full header
(T:, M:, L:, K:) and an invented title; the `Z:` line imitates the corpus's
`id:dc-<dance>-<n>` lines. The reel above has 4/4 bars of eight eighth notes
in A Dorian and ends with a repeat `:|`. Tune 1 (6/8) shows the slips of a
small model: a bar of 11 eighth notes (`d3 f2d2 cAFA`) and a second ending
`[2` with no first ending; a bigger model trained longer makes them less often.
"""

import argparse
import math
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keraseq.generation import generate  # noqa: E402
from keraseq.models import compile_language_model, language_model, nats_to_bits  # noqa: E402
from keraseq.text import LanguageModelDataset, Vocabulary, load_corpus, split  # noqa: E402

HEADER_FIELDS = ("T", "M", "L", "K")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="LSTM(128), 3 epochs: a smoke run under a minute")
    parser.add_argument("--units", type=int, default=None, help="LSTM units (default 256)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default 12)")
    parser.add_argument("--sequence-length", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=4e-3)
    parser.add_argument("--tunes", type=int, default=3, help="tunes to generate (default 3)")
    parser.add_argument("--length", type=int, default=700,
                        help="most characters sampled per tune (default 700); a tune "
                        "ends earlier at its first blank line")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="irish_tunes.abc", help="the .abc file to write")
    args = parser.parse_args(argv)
    args.units = args.units or (128 if args.quick else 256)
    args.epochs = args.epochs or (3 if args.quick else 12)
    for name in ("units", "epochs", "sequence_length", "batch_size", "tunes", "length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, "
                         f"got {getattr(args, name)}")
    if not (args.learning_rate > 0 and args.temperature >= 0):
        parser.error("--learning-rate must be > 0 and --temperature >= 0")
    return args


def extract_tune(sample, number):
    """The first tune of `sample`: up to its first blank line, renumbered
    `X:number`. Returns `(tune, complete)`; `complete` is False when the
    sample ran out before the tune ended."""
    body = sample.split("\n\n", 1)
    complete = len(body) == 2
    tune = body[0].rstrip("\n")
    # A new "X:" line inside the text also starts another tune.
    parts = re.split(r"\n(?=X:)", tune, maxsplit=1)
    complete = complete or len(parts) == 2
    tune = parts[0]
    lines = tune.split("\n")
    lines[0] = f"X:{number}"  # the sampled index may repeat one of the corpus
    return "\n".join(lines), complete


def check_tune(tune):
    """What a reader of the ABC text would check first: the header fields and
    the number of bars of melody."""
    lines = tune.split("\n")
    fields = {line[0] for line in lines if re.match(r"^[A-Za-z]:", line)}
    melody = [line for line in lines if not re.match(r"^[A-Za-z]:", line)]
    bars = sum(line.count("|") for line in melody)
    missing = [f for f in HEADER_FIELDS if f not in fields]
    return {"missing_header": missing, "bars": bars, "melody_lines": len(melody)}


def try_music21(tune):
    """'parsed', 'failed: ...' or None when music21 is not installed."""
    try:
        import music21
    except ImportError:
        return None
    try:
        score = music21.converter.parse(tune, format="abc")
        return f"parsed, {len(score.flatten().notes)} notes"
    except Exception as error:  # any parse error is a finding, not a crash
        return f"failed: {type(error).__name__}"


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    text = load_corpus("irish")
    vocabulary = Vocabulary.from_text(text, level="char")
    train_ids, validation_ids = split(vocabulary.encode(text), validation_fraction=0.1)
    train = LanguageModelDataset(train_ids, args.sequence_length, args.batch_size,
                                 shuffle=True, seed=args.seed)
    validation = LanguageModelDataset(validation_ids, args.sequence_length, args.batch_size,
                                      shuffle=False)
    model = compile_language_model(
        language_model("lstm", vocabulary.size, units=args.units, embedding_dim=64,
                       sequence_length=args.sequence_length),
        learning_rate=args.learning_rate,
    )
    tunes_in_corpus = text.count("\nX:") + text.startswith("X:")
    print(f"Irish folk tunes: {tunes_in_corpus} tunes, {len(text):,} characters, "
          f"{vocabulary.size} tokens in the vocabulary (backend {keras.backend.backend()})")
    print(f"LSTM({args.units}) language model, {model.count_params():,} parameters; "
          f"{args.epochs} epochs of {len(train)} batches of {args.batch_size} x "
          f"{args.sequence_length} characters")

    started = time.time()
    model.fit(train, validation_data=validation, epochs=args.epochs, shuffle=False, verbose=2,
              callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=2,
                                                       restore_best_weights=True)])
    seconds = time.time() - started
    nats = float(model.evaluate(validation, verbose=0, return_dict=True)["loss"])
    uniform = math.log(vocabulary.size)
    print(f"\nValidation loss {nats:.3f} nats/char = {nats_to_bits(nats):.3f} bits/char "
          f"(uniform guess {uniform:.3f} nats); trained {seconds:.0f} s")

    tunes, sampled_seconds = [], time.time()
    for index in range(args.tunes):
        sample = generate(model, vocabulary, "X:", length=args.length,
                          temperature=args.temperature, seed=args.seed + index,
                          context_length=args.sequence_length)
        tune, complete = extract_tune(sample, index + 1)
        tunes.append(tune)
        report = check_tune(tune)
        header = ("complete header" if not report["missing_header"]
                  else f"header lacks {', '.join(report['missing_header'])}:")
        music21_note = try_music21(tune)
        print(f"\n--- tune {index + 1} ({len(tune)} characters, {header}, {report['bars']} bar "
              f"lines{'' if complete else ', cut at --length before the tune ended'}"
              f"{'; music21: ' + music21_note if music21_note else ''})")
        print(tune)
    sampled_seconds = time.time() - sampled_seconds

    from keraseq import _atomic

    _atomic.write_text(args.out, f"% {len(tunes)} tunes sampled by keraseq "
                       f"examples/irish_folk_songs.py: LSTM({args.units}), validation loss "
                       f"{nats:.3f} nats/char, temperature {args.temperature}, seed "
                       f"{args.seed}\n\n" + "\n\n".join(tunes) + "\n")
    print(f"\nSampled {len(tunes)} tune{'' if len(tunes) == 1 else 's'} in {sampled_seconds:.0f} s; wrote {args.out} "
          "(open it with an ABC tool: abc2midi, abcm2ps, an online ABC player)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
