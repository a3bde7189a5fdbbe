"""`keraseq inspect ...`: the argument parsers of the inspection commands.

Imported by `keraseq/cli.py` when it builds its parser, so nothing heavy is
imported here: each command's module (`keraseq.inspect.<command>`) is imported
when the command runs, and exposes `run(args) -> exit code`.
"""

import importlib
import os
from pathlib import Path

GRADIENT_MODELS = ("rnn-tanh", "rnn-relu-identity", "lstm")


def add_parser(commands, typed):
    """Add `inspect` and its sub-commands to the `keraseq` sub-parsers.

    `typed` maps "positive_int" to keraseq/cli.py's argparse type (one-line
    errors naming the flag and the value)."""
    inspect = commands.add_parser(
        "inspect", help="plot what a model computes (gradients, gates, attention, embeddings)"
    )
    tools = inspect.add_subparsers(dest="tool", required=True,
                                   parser_class=type(inspect))

    gradients = tools.add_parser(
        "gradients", help="norm of dL_T/dh_t through time, and the global gradient norm")
    gradients.add_argument("dir", metavar="DIR", nargs="?", default=None,
                           help="a `keraseq train` directory (default: freshly "
                                "initialised models on the Shakespeare corpus)")
    gradients.add_argument("--models", default=None,
                           help="comma-separated, from: " + ", ".join(GRADIENT_MODELS)
                           + " (default: all three; not with DIR)")
    gradients.add_argument("--sequence-length", type=typed["positive_int"], default=100,
                           help="time steps T (default: 100)")
    gradients.add_argument("--batch-size", type=typed["positive_int"], default=32,
                           help="sequences per batch (default: 32)")
    gradients.add_argument("--batches", type=typed["positive_int"], default=4,
                           help="batches of held-out text averaged over (default: 4)")
    gradients.add_argument("--corpus", default=None,
                           help="without DIR: shakespeare, sherlock, irish or a text file, "
                                "char level (default: shakespeare)")
    gradients.add_argument("--units", type=typed["positive_int"], default=None,
                           help="without DIR: hidden width of the fresh models (default: 128)")
    gradients.add_argument("--seed", type=int, default=None,
                           help="without DIR: initialisation seed, >= 0 (default: 0)")
    _out(gradients)

    gates = tools.add_parser("gates", help="LSTM gate activations over a text, as heatmaps")
    gates.add_argument("dir", metavar="DIR", help="a `keraseq train` directory (LSTM model)")
    gates.add_argument("--text", required=True, help="the text to run through the model")
    gates.add_argument("--layer", type=int, default=0,
                       help="which LSTM layer, counted from the input: 0 = the first "
                            "(default: 0)")
    _out(gates)

    attention = tools.add_parser(
        "attention", help="attention weights per layer and head for a prompt, as heatmaps")
    attention.add_argument("dir", metavar="DIR",
                           help="a `keraseq train` directory (transformer model)")
    attention.add_argument("--text", required=True, help="the prompt")
    _out(attention)

    embeddings = tools.add_parser(
        "embeddings", help="nearest neighbours of word embeddings, and a 2-D PCA plot")
    embeddings.add_argument("dir", metavar="DIR",
                            help="a `keraseq train --level word` directory (a char-level "
                                 "run works too: its tokens are characters)")
    embeddings.add_argument("--words", nargs="+", default=None,
                            help="words whose nearest neighbours to print "
                                 "(default: the most frequent ones)")
    embeddings.add_argument("--min-count", type=typed["positive_int"], default=5,
                            help="only tokens seen at least N times in the training text "
                                 "are neighbours and points of the map (default: 5)")
    _out(embeddings)
    return inspect


def _out(parser):
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="where the PNG and JSON go (default: DIR/inspect, "
                             "or ./inspect without DIR)")
    parser.add_argument("--unsafe", action="store_true",
                        help="load a model.keras whose layers carry Python code (a Lambda); "
                             "only for files you trust (default: refused)")


def _check_out(out):
    """A `--out` that cannot become a writable directory is refused before any
    work is done (one line, exit 2)."""
    if out is None:
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out!r} is an existing file; give a directory")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out!r} cannot be created: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out!r} cannot be created: {str(existing)!r} is not writable")


def run(args):
    _check_out(args.out)
    module = importlib.import_module(f"keraseq.inspect.{args.tool}")
    try:
        return module.run(args)
    except OSError as error:  # e.g. the disk is full, or a read-only file system
        where = f": {error.filename}" if error.filename else ""
        raise ValueError(f"could not write the output ({error.strerror or error}{where}); "
                         "no partial file is left") from error
