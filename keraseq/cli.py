"""The `keraseq` command line: train, generate, export, inspect.

Exit codes: 0 success; 1 a check failed (ONNX parity) or training diverged; 2 bad input or a
file system failure such as a full disk (one line on stderr, never a traceback; nothing
half-written).
"""

import argparse
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from keraseq import _atomic
from keraseq._run import (
    EXPORT_FILES,
    TRAIN_FILES,
    TrainingBackup,
    UsageError,
    load_run,
    publish_run,
    read_run,
    run_directory,
    write_json,
)
from keraseq.inspect import cli as inspect_cli

PROG = "keraseq"
DEFAULT_UNITS = {"lstm": 256, "rnn": 256, "transformer": 128}
_MODEL_NAMES = {"lstm": "LSTM", "rnn": "SimpleRNN", "transformer": "Transformer"}
SAMPLE_LENGTH = 500


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit code 2
        raise UsageError(message)


def _typed(parse, accept, description):
    """An argparse `type=`: `parse(text)`, kept when `accept(value)`."""

    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return convert


def _ascii_int(text):
    """`int(text)` for ASCII digits only (Python's `int` also reads '١٦')."""
    if not text.isascii():
        raise ValueError(text)
    return int(text)


_INT32_MAX = 2**31 - 1  # the largest size a tensor dimension can have
_positive_int = _typed(_ascii_int, lambda v: 0 < v <= _INT32_MAX,
                       f"a positive integer <= {_INT32_MAX:,}")
_seed = _typed(_ascii_int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)")
_units = _typed(_ascii_int, lambda v: 0 < v <= 65536, "a positive integer <= 65,536")
_length = _typed(_ascii_int, lambda v: 0 < v <= 10**7, "a positive integer <= 10,000,000")
_positive_float = _typed(
    float, lambda v: v > 0 and math.isfinite(v), "a finite number > 0"
)
_non_negative_float = _typed(
    float, lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0"
)
_unit_interval = _typed(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
_rate = _typed(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
_non_empty_text = _typed(str, lambda v: v != "", "a non-empty text")


def build_parser():
    parser = _Parser(
        prog=PROG,
        description="Train, sample and export keraseq language models. "
        "The backend is chosen by KERAS_BACKEND (tensorflow, jax or torch).",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a next-token language model")
    train.add_argument("--corpus", default="shakespeare",
                       help="shakespeare, sherlock, irish or a path to a UTF-8 text file "
                       "(default: shakespeare)")
    train.add_argument("--level", choices=("char", "word"), default="char",
                       help="token level (default: char)")
    train.add_argument("--model", choices=("lstm", "rnn", "transformer"), default="lstm",
                       help="architecture (default: lstm)")
    train.add_argument("--epochs", type=_positive_int, default=12,
                       help="passes over the training split (default: 12)")
    train.add_argument("--batch-size", type=_positive_int, default=64,
                       help="sequences per batch (default: 64)")
    train.add_argument("--sequence-length", type=_positive_int, default=100,
                       help="tokens per training sequence (default: 100)")
    train.add_argument("--units", type=_units, default=None,
                       help="hidden width (default: 256 for lstm/rnn, 128 for transformer)")
    train.add_argument("--layers", type=_positive_int, default=None,
                       help="number of recurrent layers / transformer blocks "
                       "(default: 1; 2 for transformer)")
    train.add_argument("--learning-rate", type=_positive_float, default=2e-3,
                       help="Adam (AdamW with --weight-decay) learning rate (default: 0.002)")
    train.add_argument("--dropout", type=_rate, default=0.0,
                       help="dropout rate on every non-recurrent connection, in [0, 1) "
                       "(default: 0)")
    train.add_argument("--weight-decay", type=_positive_float, default=None,
                       help="train with AdamW and this decoupled weight decay on the "
                       "weight matrices (default: none, plain Adam)")
    train.add_argument("--patience", type=_positive_int, default=3,
                       help="stop after N epochs without a lower validation loss; the "
                       "epoch with the lowest validation loss is the one kept (default: 3)")
    train.add_argument("--max-tokens", type=_positive_int, default=None,
                       help="use only the first N tokens of the corpus (quick runs)")
    train.add_argument("--seed", type=_seed, default=0,
                       help="random seed (default: 0)")
    train.add_argument("--out", default=None,
                       help="output directory (default: runs/<corpus>-<level>-<model>). "
                       "Every finished epoch is backed up in .<name>.resume/ next to it "
                       "(weights, optimizer, best checkpoint, history); the same command run "
                       "again after a crash resumes from the last finished epoch, one with "
                       "other arguments is refused (exit 2) until that directory is removed; "
                       "it is removed when training ends")
    train.add_argument("--distribute", action="store_true",
                       help="data parallel over every local device "
                       "(keras.distribution.DataParallel; KERAS_BACKEND=jax only); "
                       "--batch-size must be divisible by the device count")

    generate = commands.add_parser("generate", help="sample text from a trained model")
    generate.add_argument("dir", metavar="DIR", help="directory written by `keraseq train`")
    generate.add_argument("--prompt", required=True, type=_non_empty_text,
                          help="text to continue")
    generate.add_argument("--length", type=_length, default=500,
                          help="tokens to sample, at least 1 (default: 500)")
    generate.add_argument("--temperature", type=_non_negative_float, default=0.8,
                          help="softmax temperature; 0 = greedy, the most likely token "
                          "every step (default: 0.8)")
    generate.add_argument("--top-k", type=_positive_int, default=None,
                          help="sample among the K most likely tokens (default: all)")
    generate.add_argument("--seed", type=_seed, default=0,
                          help="random seed; the same seed gives the same text (default: 0)")
    generate.add_argument("--onnx", action="store_true",
                          help="sample with the streaming ONNX graphs of DIR (written by "
                          "`keraseq export DIR --streaming`) using onnxruntime and numpy "
                          "only: no Keras, no backend, model.keras not needed")
    generate.add_argument("--threads", type=_positive_int, default=None,
                          help="with --onnx: onnxruntime intra-op threads "
                          "(default: onnxruntime's choice)")
    generate.add_argument("--unsafe", action="store_true",
                          help="load a model.keras whose layers carry Python code (a Lambda); "
                          "only for files you trust (default: refused)")

    inspect_cli.add_parser(commands, {"positive_int": _positive_int})

    export = commands.add_parser("export", help="export to ONNX and check parity")
    export.add_argument("dir", metavar="DIR", help="directory written by `keraseq train`")
    export.add_argument("--out", metavar="FILE.onnx", default=None,
                        help="ONNX file to write (default: DIR/model.onnx)")
    export.add_argument("--opset", type=_positive_int, default=None,
                        help="ONNX opset (native 17-23, tf2onnx 13-18; default: 17, or 23 "
                        "for attention, whose native operator needs it)")
    export.add_argument("--method", choices=("native", "tf2onnx"), default=None,
                        help="converter: native ONNX LSTM/RNN/attention nodes written from "
                        "the layers, or tf2onnx (a Loop for the recurrent cells); default: "
                        "native where every layer has a converter, else tf2onnx with a note")
    export.add_argument("--streaming", action="store_true",
                        help="also write the streaming graphs for `keraseq generate --onnx`: "
                        "DIR/model.step.onnx (recurrent) or DIR/model.prefill.onnx + "
                        "DIR/model.decode.onnx (transformer), checked token by token")
    export.add_argument("--quantize", choices=("int8",), default=None,
                        help="also write an int8 copy (onnxruntime dynamic quantization) "
                        "next to FILE.onnx, kept only if it agrees with float on the "
                        "held-out text")
    export.add_argument("--min-agreement", type=_unit_interval, default=None,
                        help="with --quantize: least next-token agreement with the float "
                        "graph on held-out text for the int8 file to be kept (default: 0.99)")
    return parser


# -- helpers -------------------------------------------------------------------
def _check_prompt(prompt, vocabulary):
    """`--prompt` has tokens, all of them in the vocabulary (the first 20 unknown
    ones are named), before any model is loaded."""
    from keraseq._tokens import tokenize

    tokens = "words" if vocabulary.level == "word" else "characters"
    if not tokenize(prompt, vocabulary.level):
        raise UsageError(f"--prompt {prompt[:50]!r} has no {tokens} (only whitespace)")
    unknown = vocabulary.unknown(prompt)
    if unknown:
        more = f" and {len(unknown) - 20:,} more" if len(unknown) > 20 else ""
        raise UsageError(
            f"--prompt has {tokens} outside the vocabulary: "
            f"{', '.join(repr(t) for t in unknown[:20])}{more}"
        )


def _corpus_label(corpus):
    from keraseq.text import CORPORA

    return corpus if corpus in CORPORA else Path(corpus).stem or "corpus"


def _prompt_for(text, vocabulary):
    """The corpus's first line (80 characters at most) as a prompt every token of
    which is in the vocabulary: tokens outside it (words past the 10,000 most
    frequent) are left out, the most frequent token stands in for a line with
    none, and a newline follows at character level where the corpus has one."""
    first_line = text.lstrip().split("\n", 1)[0][:80]
    ids = [int(i) for i in vocabulary.encode(first_line) if i] or [1]
    prompt = vocabulary.decode(ids)
    if vocabulary.level == "char" and not vocabulary.unknown("\n"):
        prompt += "\n"
    return prompt


def _tokens_needed(sequence_length, batch_size, validation_fraction=0.1):
    """The fewest token ids `keraseq train` can split (the last 10 % for
    validation, as `keraseq.text.split` does) into one shuffled training batch
    and one validation batch (`keraseq.text.LanguageModelDataset`)."""
    length, batch = sequence_length, batch_size
    count = max(0, int((batch * length + 1) / validation_fraction) - 20)  # just below
    while True:
        validation = int(round(count * validation_fraction))
        if validation >= batch * length + 1 and count - validation >= (batch + 1) * length:
            return count
        count += 1


def _check_corpus_size(args, num_tokens, corpus_tokens):
    """One line naming the corpus (or --max-tokens) and the sizes when the
    tokens cannot fill one training and one validation batch."""
    needed = _tokens_needed(args.sequence_length, args.batch_size)
    if num_tokens >= needed:
        return
    unit = f"{args.level} token" + ("" if num_tokens == 1 else "s")
    if num_tokens < corpus_tokens:
        source = (f"--max-tokens {args.max_tokens} keeps {num_tokens:,} of the "
                  f"{corpus_tokens:,} {args.level} tokens of --corpus {args.corpus!r}")
    else:
        source = f"--corpus {args.corpus!r} has {num_tokens:,} {unit}"
    raise UsageError(
        f"{source}; --sequence-length {args.sequence_length} and --batch-size "
        f"{args.batch_size} need at least {needed:,} (one batch of windows to train on, one "
        "more in the last 10 % to validate on): lower --sequence-length or --batch-size, "
        "or use a longer corpus"
    )


# -- commands ------------------------------------------------------------------
def cmd_train(args):
    from keraseq._keras import import_keras, set_random_seed

    keras = import_keras()  # quietly: TensorFlow's C++ start-up lines muted
    from keraseq import load_model as keraseq_load_model
    from keraseq.generation import generate
    from keraseq.models import compile_language_model, language_model, nats_to_bits
    from keraseq.text import LanguageModelDataset, Vocabulary, load_corpus, split

    if args.out is not None and not args.out.strip():
        raise UsageError(f"--out must name a directory. Received: --out {args.out!r}")
    out = Path(args.out or f"runs/{_corpus_label(args.corpus)}-{args.level}-{args.model}")
    inspect_cli._check_out(str(out))  # a file, or not writable: refused before any work
    if out.is_dir() and not any((out / name).exists() for name in TRAIN_FILES) and any(
            out.iterdir()):
        raise UsageError(
            f"--out {str(out)!r} is a non-empty directory that holds no keraseq run: train "
            "writes model.keras, config.json, ... there; give a new or empty directory"
        )
    args.out = str(out)  # what main() names when a write fails without naming a file
    text = load_corpus(args.corpus)
    set_random_seed(args.seed)  # keras.utils.set_random_seed, TF's start-up lines muted
    vocabulary = Vocabulary.from_text(text, level=args.level)
    all_ids = vocabulary.encode(text)
    ids = all_ids[: args.max_tokens]
    _check_corpus_size(args, len(ids), len(all_ids))  # before the model is built
    train_ids, validation_ids = split(ids, validation_fraction=0.1)
    train_data = LanguageModelDataset(
        train_ids, args.sequence_length, args.batch_size, shuffle=True, seed=args.seed
    )
    validation_data = LanguageModelDataset(
        validation_ids, args.sequence_length, args.batch_size, shuffle=False
    )
    units = args.units or DEFAULT_UNITS[args.model]
    layers = args.layers or (2 if args.model == "transformer" else 1)
    if args.distribute:  # the model is built and trained under DataParallel, nothing after
        from keraseq.distribution import data_parallel, describe

        distribution = data_parallel(args.batch_size)  # ValueError: one line, exit 2
        keras.distribution.set_distribution(distribution)
        print(f"keraseq train: {describe(distribution, args.batch_size)}", flush=True)
    model = language_model(
        args.model,
        vocabulary.size,
        units=units,
        num_layers=layers,
        sequence_length=args.sequence_length,
        dropout=args.dropout,
        seed=args.seed,  # seeded dropout: its random state is in the backup (resume is exact)
    )
    compile_language_model(
        model, learning_rate=args.learning_rate, weight_decay=args.weight_decay
    )
    unit = "char" if args.level == "char" else "word"
    out.parent.mkdir(parents=True, exist_ok=True)
    backup = TrainingBackup(out, {
        **{key: value for key, value in vars(args).items() if key not in ("command", "out")},
        "units": units, "layers": layers, "backend": keras.backend.backend(),
    })
    backup.open()  # UsageError (exit 2) for an interrupted run with other arguments
    print(
        f"keraseq train: {args.model} ({model.count_params():,} parameters) on "
        f"{args.corpus} ({len(ids):,} {unit}s, vocabulary {vocabulary.size}), "
        f"backend {keras.backend.backend()}",
        flush=True,
    )

    # Everything is written into a staging directory (in the backup directory,
    # next to `out`) and published as `out` at the end (`publish_run`: one rename
    # for a new `out`, config.json last for an existing one). The best epoch so
    # far (lowest validation loss) is saved by ModelCheckpoint to a partial
    # name, then published (fsync, rename; keraseq._atomic) as model.keras:
    # model.keras is always a complete checkpoint.
    #
    # Resume: the best checkpoint lives in the backup directory (see
    # TrainingBackup), which BackupAndRestore also fills after every epoch;
    # it is copied into the staging directory once training ends and the
    # backup is removed only after the outputs are published.
    staging = backup.staging
    staging.mkdir()
    try:
        checkpoint = staging / "model.keras"
        partial = backup.partial

        def publish_checkpoint(epoch, logs):
            if partial.exists():  # written by ModelCheckpoint this epoch
                _atomic.publish(partial, backup.checkpoint)

        model_checkpoint = keras.callbacks.ModelCheckpoint(
            partial, monitor="val_loss", save_best_only=True
        )
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=args.patience, restore_best_weights=True
        )
        callbacks = [
            keras.callbacks.LambdaCallback(
                on_epoch_begin=backup.epoch_begin, on_train_batch_end=backup.batch_end
            ),
            keras.callbacks.TerminateOnNaN(),
            model_checkpoint,
            keras.callbacks.LambdaCallback(on_epoch_end=publish_checkpoint),
            early_stopping,
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: backup.record(
                    epoch, logs, model, model_checkpoint, early_stopping
                )
            ),
            keras.callbacks.BackupAndRestore(
                str(backup.directory), double_checkpoint=True, delete_checkpoint=False
            ),
            keras.callbacks.LambdaCallback(
                on_train_begin=lambda logs: backup.restore(
                    model, train_data, model_checkpoint, early_stopping, keraseq_load_model
                )
            ),
        ]
        started = time.time()
        model.fit(
            train_data,
            validation_data=validation_data,
            epochs=backup.fit_epochs(args.epochs),
            shuffle=False,  # the dataset shuffles its windows itself, from --seed
            callbacks=callbacks,
            verbose=1,
        )
        train_seconds = time.time() - started
        keras.distribution.set_distribution(None)  # --distribute: single device from here
        history = backup.history()
        fault = None
        if backup.fault is not None:
            epoch, step, loss = backup.fault
            fault = f"the training loss became {loss} at epoch {epoch}, step {step}"
        if not backup.checkpoint.exists():
            backup.remove()
            if fault:
                print(f"{PROG}: error: {fault}; no finished epoch had a finite validation "
                      "loss, nothing written (try a lower --learning-rate)", file=sys.stderr)
            else:
                print(f"{PROG}: error: training diverged: the validation loss was not finite "
                      "at any epoch, nothing written (try a lower --learning-rate)",
                      file=sys.stderr)
            return 1
        shutil.copyfile(backup.checkpoint, checkpoint)
        epochs_run = len(history["val_loss"])
        best = min(range(epochs_run), key=lambda e: (not math.isfinite(history["val_loss"][e]),
                                                     history["val_loss"][e]))
        best_epoch, best_val_loss = best + 1, history["val_loss"][best]
        stopped_early = epochs_run < args.epochs
        kept = f"kept epoch {best_epoch} of {epochs_run} (val_loss {best_val_loss:.4f})"
        if stopped_early and epochs_run - best_epoch >= args.patience:
            kept += (f"; stopped early after {epochs_run - best_epoch} epochs without "
                     "improvement")
        elif stopped_early:
            kept += "; stopped early: the loss was not finite"
        print(kept, flush=True)

        # Everything reported below comes from the kept checkpoint itself.
        model = keraseq_load_model(checkpoint)
        evaluation = model.evaluate(validation_data, verbose=0, return_dict=True)
        nats = float(evaluation["loss"])
        sample = generate(
            model,
            vocabulary,
            _prompt_for(text, vocabulary),
            length=SAMPLE_LENGTH,
            temperature=0.8,
            seed=args.seed,
            context_length=args.sequence_length,
        )

        vocabulary.save(staging / "vocabulary.json")
        write_json(
            staging / "history.json",
            {**history, "best_epoch": best_epoch, "best_val_loss": best_val_loss},
        )
        _atomic.write_text(staging / "sample.txt", sample)
        # curves.png, position_loss.json/.png from the kept model. A plot never
        # costs the trained model: a failure is one warning line on stderr, the
        # command still exits 0 and every other file is written (no partial PNG).
        def warn(line):
            print(f"{PROG}: warning: {line}; the model and the other files are saved",
                  file=sys.stderr, flush=True)

        try:
            from keraseq.inspect.curves import write_training_plots

            plots = write_training_plots(
                staging, {**history, "best_epoch": best_epoch, "best_val_loss": best_val_loss},
                model, validation_data, unit=unit,
                model_label=f"{_MODEL_NAMES[args.model]}({units})"
                + (f" × {layers} layers" if layers > 1 else "")
                + f", {args.level} level, {_corpus_label(args.corpus)}",
                warn=warn,
            )
        except ImportError as error:  # matplotlib missing
            warn(f"no plots written ({error})")
            plots = []
        write_json(
            staging / "config.json",
            {
                "corpus": args.corpus,
                "level": args.level,
                "model": args.model,
                "units": units,
                "layers": layers,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "sequence_length": args.sequence_length,
                "learning_rate": args.learning_rate,
                "dropout": args.dropout,
                "weight_decay": args.weight_decay,
                "optimizer": "adam" if args.weight_decay is None else "adamw",
                "patience": args.patience,
                "max_tokens": args.max_tokens,
                "seed": args.seed,
                "backend": keras.backend.backend(),
                "keras_version": keras.__version__,
                "epochs_run": epochs_run,
                "best_epoch": best_epoch,
                "stopped_early": stopped_early,
                "kept": kept,
                "validation_loss_nats": nats,
                "validation_loss_bits": nats_to_bits(nats),
                "train_seconds": round(train_seconds, 1),
            },
        )
        stale = publish_run(staging, out)
        backup.remove()
    finally:
        keras.distribution.set_distribution(None)
        shutil.rmtree(staging, ignore_errors=True)
        _atomic.discard(backup.partial)  # half-written if ModelCheckpoint was interrupted
    if stale:
        print(f"removed the earlier run's {', '.join(stale)} from {out}", flush=True)

    if fault:
        print(f"{PROG}: error: {fault}; kept the checkpoint of epoch {best_epoch} "
              f"(val_loss {best_val_loss:.4f}) in {out}", file=sys.stderr)
        return 1

    print(f"\nsample ({SAMPLE_LENGTH} {unit}s, temperature 0.8):\n{sample}\n")
    print(
        f"validation loss: {nats:.4f} nats/{unit}, {nats_to_bits(nats):.4f} bits/{unit} "
        f"(epoch {best_epoch} of {epochs_run}, trained {train_seconds:.0f} s)"
    )
    print(f"wrote {out}/model.keras, vocabulary.json, history.json, sample.txt, config.json"
          + "".join(f", {name}" for name in plots))
    return 0


def _generate_onnx(args):
    """`generate --onnx`: onnxruntime and numpy only (no Keras import on this path)."""
    directory = Path(args.dir)
    if not directory.is_dir():
        raise UsageError(f"DIR {str(args.dir)!r} is not a directory")
    for name in ("vocabulary.json", "config.json"):
        if not (directory / name).is_file():
            raise UsageError(
                f"DIR {str(args.dir)!r} has no {name}: not a directory written by `keraseq train`"
            )
    from keraseq._tokens import TokenVocabulary

    _check_prompt(args.prompt, TokenVocabulary.load(directory / "vocabulary.json"))
    try:
        from keraseq.export.runtime import OnnxGenerator

        generator = OnnxGenerator(directory, threads=args.threads)
    except ImportError as error:
        raise UsageError(
            f"--onnx needs onnxruntime (pip install onnxruntime): {error}"
        ) from None
    print(
        generator.generate(
            args.prompt,
            length=args.length,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
        )
    )
    return 0


def cmd_generate(args):
    if args.onnx:
        return _generate_onnx(args)
    if args.threads is not None:
        raise UsageError("--threads applies to --onnx only")
    from keraseq.generation import generate

    directory = run_directory(args.dir)
    from keraseq._tokens import TokenVocabulary

    _check_prompt(args.prompt, TokenVocabulary.load(directory / "vocabulary.json"))
    model, vocabulary, config = load_run(directory, unsafe=args.unsafe)
    text = generate(
        model,
        vocabulary,
        args.prompt,
        length=args.length,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        context_length=int(config.get("sequence_length", 128)),
    )
    print(text)
    return 0


def _held_out(config, vocabulary):
    """Held-out windows (the last 10 % of the corpus) and their next tokens."""
    from keraseq.text import load_corpus, split, windows

    text = load_corpus(config["corpus"])
    ids = vocabulary.encode(text)
    if config.get("max_tokens"):
        ids = ids[: int(config["max_tokens"])]
    _, validation_ids = split(ids, validation_fraction=0.1)
    return windows(validation_ids, int(config["sequence_length"]))


def cmd_export(args):
    directory = run_directory(args.dir)
    out = Path(args.out) if args.out else directory / "model.onnx"
    if out.suffix != ".onnx":
        raise UsageError(f"--out must end in .onnx, got {str(out)!r}")
    if args.min_agreement is not None and not args.quantize:
        raise UsageError("--min-agreement applies to --quantize only")
    if not out.parent.is_dir():
        raise UsageError(f"--out {str(out)!r}: directory {str(out.parent)!r} does not exist")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(out)!r}: directory {str(out.parent)!r} is not writable")

    from keraseq.export import check_parity, export_onnx

    config, vocabulary = read_run(directory)
    _remove_stale_temporaries(directory, out)
    length = int(config["sequence_length"])
    backend = config.get("backend", "?")
    x, y = _held_out(config, vocabulary)
    held_out = [x[start : start + 8] for start in range(0, min(len(x), 16), 8) if len(x[start:start + 8])]

    # The graph is written to a candidate name next to `out` and published
    # (keraseq._atomic: fsync, rename) onto `out` only once parity passed: a
    # graph that fails, or an interrupted export, never replaces a good one.
    candidate = _atomic.temporary_path(out)
    try:
        result = export_onnx(
            directory / "model.keras", candidate, opset=args.opset,
            source_backend=config.get("backend"), method=args.method or "auto",
        )
        if result.fallback_reason:
            print(f"note: {result.fallback_reason}; exported with tf2onnx instead")
        print(f"exported {out.name} ({result.method}, opset {result.opset}, model trained under "
              f"{backend}, {result.seconds:.1f} s)")
        report = check_parity(
            directory / "model.keras", candidate, inputs=held_out, training_length=length,
            report_path=out.with_suffix(".parity.json"),
        )
        print(report.table())
        print(f"parity report: {report.report_path}")
        if not report.passed:
            print(f"{PROG}: parity failed, {out} not written: {report.failure}", file=sys.stderr)
            return 1
        _atomic.publish(candidate, out)
        # The report was written naming the candidate it checked; it now names `out`.
        report.onnx_path = str(out)
        _atomic.write_json(report.report_path, json.loads(report.to_json()), indent=2)
    finally:
        _atomic.discard(candidate)
    print(f"wrote {out}")
    print(f"parity passed: max |onnx - keras| = {report.max_abs:.2e} "
          f"(max relative {report.max_rel:.1e}), within {report.tolerance_text()}; "
          "next-token agreement 100%")
    status = 0
    if args.streaming:
        status = max(status, _export_streaming(directory, config, held_out[0][:4]))
    if args.quantize:
        min_agreement = 0.99 if args.min_agreement is None else args.min_agreement
        status = max(status, _export_int8(out, x, y, min_agreement))
    return status


def _remove_stale_temporaries(directory, out):
    """Remove, and say so, what an earlier `keraseq export` killed outright
    (SIGKILL) left: the hidden temporaries of the files this export writes (in
    DIR and beside `--out`) and its `.streaming` scratch directory, whose
    process has ended (`keraseq._atomic.remove_stale_temporaries`: a user's own
    files, and those of an export still running, are kept)."""
    from keraseq.export.quantize import default_report_path, int8_path

    int8 = Path(int8_path(out))
    places = {os.path.realpath(directory): set(EXPORT_FILES)}
    places.setdefault(os.path.realpath(out.parent), set()).update(
        path.name for path in (out, out.with_suffix(".parity.json"), int8,
                               Path(default_report_path(int8))))
    for place, files in places.items():
        scratch = ("streaming",) if place == os.path.realpath(directory) else ()
        removed = _atomic.remove_stale_temporaries(place, files, scratch)
        if removed:
            print(f"removed what a killed keraseq process left in {place}: "
                  f"{', '.join(removed)}")


def _export_streaming(directory, config, tokens):
    """Streaming graphs, written to a scratch directory inside `directory`,
    checked against the Keras model, then moved into `directory`."""
    from keraseq.export.native import export_streaming
    from keraseq.export.streaming import check_streaming_parity, save_report
    from keraseq.export.runtime import file_sha256  # the hash `generate --onnx` checks

    model, _, _ = load_run(directory)
    scratch = Path(_atomic.temporary_directory(directory, "streaming"))
    try:
        files = export_streaming(
            model, scratch, source_backend=config.get("backend"),
            metadata={"keraseq_model_sha256": file_sha256(directory / "model.keras")},
        )
        report = check_streaming_parity(model, files, tokens)
        report_path = save_report(report, directory / "model.streaming.json")
        print(report.table())
        print(f"streaming report: {report_path}")
        names = [Path(path).name for path in files.values()]
        if not report.passed:
            worst = max(report.cases, key=lambda c: c["tolerance_ratio"])
            print(f"{PROG}: streaming parity failed, {', '.join(names)} not written: "
                  f"{worst['case']}: max |onnx - keras| = {worst['max_abs']:.2e}, "
                  f"{worst['tolerance_ratio']:.2f}x the tolerance "
                  f"{report.atol:g} + {report.rtol:g}·rowmax|keras|", file=sys.stderr)
            return 1
        for path in files.values():
            _atomic.publish(path, directory / Path(path).name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"wrote {', '.join(str(directory / name) for name in names)}")
    print(f"streaming parity passed: max |onnx - keras| = {report.max_abs:.2e} over "
          "every position, token by token and in two chunks")
    return 0


def _export_int8(out, x, y, min_agreement):
    from keraseq.export.quantize import int8_path, quantize_for_export

    report = quantize_for_export(out, int8_path(out), x, y, min_agreement)
    print(report.table())
    print(f"quantization report: {report.report_path}")
    if not report.shipped:
        kept = " (the existing one from an earlier export is left as it was)" if getattr(
            report, "existing_out_kept", False) else ""
        print(f"{PROG}: int8 model not written{kept}: {report.reason}", file=sys.stderr)
        return 1
    print(f"wrote {report.out_path}")
    return 0


def cmd_inspect(args):
    from keraseq.inspect.cli import run

    return run(args)


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "export": cmd_export,
            "inspect": cmd_inspect}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every `finally` removes its
    temporary files (staging directories, candidate graphs)."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def _os_error_line(error, args):
    """One line for a file system failure (disk full, permission denied...): the
    reason and the path, the file the system names (a rename's destination) or
    else what the command writes (--out, DIR)."""
    path = error.filename2 if error.filename2 is not None else error.filename
    if path is None and args is not None:
        path = getattr(args, "out", None) or getattr(args, "dir", None)
    reason = " ".join(str(error.strerror or error).split()) or type(error).__name__
    return f"{reason}: {os.fsdecode(path)!r}" if path is not None else reason


def main(argv=None):
    parser = build_parser()
    args = None
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args)
    except ValueError as error:  # bad input: one line, exit code 2
        message = " ".join(str(error).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:  # the disk is full, no permission...: one line, exit code 2
        print(f"{PROG}: error: {_os_error_line(error, args)}", file=sys.stderr)
        return 2
    except ImportError as error:  # a package the command needs is not installed
        message = " ".join(str(error).split())
        print(f"{PROG}: error: a package this command needs is missing: {message} "
              "(see the extras in the README: pip install 'keraseq[...]')", file=sys.stderr)
        return 2
    except _Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
