"""Run directories of `keraseq train`: checking and reading one, loading its
model safely, publishing a finished run, and the resume backup of an
interrupted one. Used by the command line (`keraseq.cli`) and the inspection
tools (`keraseq.inspect`); no Keras import at module level."""

import json
import math
import shutil
from pathlib import Path

from keraseq import _atomic


class UsageError(ValueError):
    """Bad input found by the command line itself."""


def run_directory(path):
    """A directory written by `keraseq train`, checked before anything loads."""
    directory = Path(path)
    if not directory.is_dir():
        raise UsageError(f"DIR {str(path)!r} is not a directory")
    for name in ("model.keras", "vocabulary.json", "config.json"):
        if not (directory / name).is_file():
            raise UsageError(
                f"DIR {str(path)!r} has no {name}: not a directory written by `keraseq train`"
            )
    check_keras_archive(directory / "model.keras")
    return directory


def check_keras_archive(path):
    """A `.keras` file is a zip archive holding `config.json` whose members pass
    their CRC check: a truncated, damaged or foreign file is refused in one line
    before Keras (or TensorFlow) is imported."""
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise zipfile.BadZipFile
            damaged = None
            for member in archive.infolist():  # read through: CRC and inflate errors
                try:
                    with archive.open(member) as data:
                        while data.read(1 << 20):
                            pass
                except (zipfile.BadZipFile, zlib.error, EOFError):
                    damaged = member.filename
                    break
    except (zipfile.BadZipFile, EOFError):
        raise UsageError(
            f"{str(path)!r} is not a .keras model: not a zip archive holding config.json "
            "(a truncated file, or one written by another program)"
        ) from None
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError) as error:  # odd zips
        raise UsageError(
            f"{str(path)!r} is not a .keras model ({' '.join(str(error).split())})"
        ) from None
    if damaged is not None:
        raise UsageError(
            f"{str(path)!r} is damaged: its member {damaged!r} does not read back "
            "(CRC or compression error)"
        )


def read_run(directory):
    """The training configuration and vocabulary of a run directory."""
    from keraseq.text import Vocabulary

    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        config = error
    if not isinstance(config, dict):
        raise UsageError(
            f"{str(path)!r} is not a JSON object written by `keraseq train`"
            + (f" ({' '.join(str(config).split())})" if isinstance(config, ValueError) else "")
        )
    # What `export` and `inspect` read from it (written by every `keraseq train`).
    missing = [key for key in ("corpus", "sequence_length") if key not in config]
    length = config.get("sequence_length")
    if missing or isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise UsageError(
            f"{str(path)!r} is not a config.json written by `keraseq train` "
            + (f"(no {', '.join(missing)})" if missing else f"(sequence_length={length!r})")
        )
    return config, Vocabulary.load(directory / "vocabulary.json")


def load_run(directory, unsafe=False):
    """Model, vocabulary and config of a run. `model.keras` loads with Keras's
    `safe_mode` unless `unsafe`: a file whose layers carry Python code (a
    `Lambda`) is refused rather than run."""
    import keraseq

    config, vocabulary = read_run(directory)
    try:
        model = keraseq.load_model(directory / "model.keras", safe_mode=not unsafe)
    except Exception as error:  # a damaged or foreign file
        if not unsafe and "safe_mode" in str(error):
            raise UsageError(
                f"{str(directory / 'model.keras')!r} holds Python code (a Lambda layer) that "
                "loading would run; refused (`generate` and `inspect` take --unsafe for a file "
                "you trust)"
            ) from None
        reason = " ".join(str(error).split())[:300]
        raise UsageError(
            f"{str(directory / 'model.keras')!r} is not a loadable .keras model "
            f"({type(error).__name__}{': ' + reason if reason else ''})"
        ) from None
    return model, vocabulary, config


def write_json(path, data):
    _atomic.write_json(path, data, indent=2, ensure_ascii=False)


# What `keraseq train` writes into --out (`config.json`, written last, marks a
# complete run), and the files `keraseq export DIR` writes into it by default,
# which are derived from the `model.keras` beside them.
TRAIN_FILES = ("model.keras", "vocabulary.json", "history.json", "sample.txt",
                "curves.png", "position_loss.json", "position_loss.png", "config.json")
EXPORT_FILES = ("model.onnx", "model.parity.json", "model.step.onnx", "model.prefill.onnx",
                 "model.decode.onnx", "model.streaming.json", "model.int8.onnx",
                 "model.int8.quantization.json")


def publish_run(staging, out):
    """Publish the finished run in `staging` as `out`, never a mix of two runs.

    `out` does not exist (or is an empty directory): `staging` is renamed to
    `out` in one atomic step, so `out` is the whole new run or is absent.

    `out` holds an earlier run: `config.json` marks a complete run (every
    command that reads a run directory refuses one without it). It is removed
    first; then the earlier run's files that this run does not replace (a plot
    this run could not draw, and the `keraseq export` files of the replaced
    `model.keras`) are removed, every new file is renamed in (each atomic,
    flushed to disk) and `config.json` comes last. A crash in between leaves an
    `out` without `config.json`, refused as "not a directory written by
    `keraseq train`", never one that looks valid with files of two runs; the
    resume backup is removed only after this returns, so running the same
    command again publishes the run again without training. Temporary files
    that a killed `keraseq export` left in `out` are removed
    (`_atomic.remove_stale_temporaries`); other files in `out` are left alone.

    Returns:
        The names of the earlier run's files removed.
    """
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        _atomic.publish_directory(staging, out)
        return []
    (out / "config.json").unlink(missing_ok=True)
    _atomic.fsync_directory(out)
    new = {item.name for item in staging.iterdir()}
    stale = [name for name in (*TRAIN_FILES, *EXPORT_FILES)
             if name not in new and (out / name).is_file()]
    for name in stale:
        (out / name).unlink()
    stale += _atomic.remove_stale_temporaries(out, (*TRAIN_FILES, *EXPORT_FILES), ("streaming",))
    for item in sorted(staging.iterdir(), key=lambda item: item.name == "config.json"):
        _atomic.publish(item, out / item.name)
    return stale


def seed_states(model):
    """The model's random-seed variables (dropout's `SeedGenerator` states):
    in `model.variables` but not in `model.weights`, so not saved by
    `BackupAndRestore`."""
    weights = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


def _plain(variable):
    import keras

    return keras.ops.convert_to_numpy(variable.value).tolist()


class TrainingBackup:
    """Resume state of `keraseq train --out DIR`, kept in `.<DIR name>.resume/`
    next to DIR, with the run's outputs until they are published (`staging/`).

    Holds Keras's `BackupAndRestore` files (weights and optimizer state of the
    last finished epoch, `training_metadata.json`), the best checkpoint so far
    (`model.keras`, written by `ModelCheckpoint` to a partial name and renamed),
    `history.json` (per-epoch logs plus the `EarlyStopping` / `ModelCheckpoint`
    state after each epoch) and `arguments.json` (the run's arguments: a run
    with other arguments is refused). Every file is written atomically
    (`keraseq._atomic`); on resume, what a killed run left half-written (a
    temporary file, ModelCheckpoint's partial file, the staging directory) is
    removed. The epoch count of `BackupAndRestore` is the one trusted
    on resume: history entries after it are dropped (they are trained again).

    It also records where the training loss first became non-finite (epoch and
    step, 1-based) for the one-line error of a numerical fault.
    """

    def __init__(self, out, arguments):
        self.directory = out.parent / f".{out.name}.resume"
        self.arguments = json.loads(json.dumps(arguments))
        self.checkpoint = self.directory / "model.keras"
        self.partial = self.directory / "model.partial.keras"
        self.staging = self.directory / "staging"  # the outputs, until published
        self.records = []  # one per finished epoch
        self.resumed_from = 0
        self.fault = None  # (epoch, step, loss) of the first non-finite training loss
        self._epoch = 0

    def _write(self, name, data):
        _atomic.write_json(self.directory / name, data, indent=1)

    def open(self):
        """Start a backup, or check and read the one an interrupted run left."""
        arguments = self.directory / "arguments.json"
        if self.directory.is_dir() and not arguments.is_file():
            shutil.rmtree(self.directory)  # killed before its first write: nothing trained
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
            self._write("arguments.json", self.arguments)
            return
        # What a run killed outright (SIGKILL) may have left half-written.
        _atomic.remove_temporaries(self.directory)
        _atomic.discard(self.partial)
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            stored = json.loads(arguments.read_text(encoding="utf-8"))
            history = self.directory / "history.json"
            if history.is_file():
                self.records = json.loads(history.read_text(encoding="utf-8"))["epochs"]
        except (ValueError, KeyError, OSError):
            stored = None
        if stored != self.arguments:
            changed = (
                ", ".join(f"--{k.replace('_', '-')} {stored.get(k)!r} -> {v!r}"
                          for k, v in self.arguments.items() if stored.get(k) != v)
                if isinstance(stored, dict) else "unreadable arguments.json"
            )
            raise UsageError(
                f"{str(self.directory)!r} holds an interrupted run with other arguments "
                f"({changed}); run the same command to resume it, or remove that "
                "directory to start over"
            )

    def fit_epochs(self, epochs):
        """`epochs`, or fewer when the interrupted run had already stopped early."""
        if self.records and self.records[-1].get("stopped"):
            return len(self.records)
        return epochs

    # callbacks (LambdaCallback hooks)
    def epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.fault is None and loss is not None:
            loss = float(loss)
            if not math.isfinite(loss):
                self.fault = (self._epoch + 1, batch + 1, loss)

    def restore(self, model, train_data, checkpoint, early_stopping, load_model):
        """on_train_begin, after BackupAndRestore loaded the last finished epoch."""
        metadata = self.directory / "training_metadata.json"
        epoch = 0
        if metadata.is_file():
            epoch = int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])
        self.records = self.records[: min(epoch, len(self.records))]
        epoch = len(self.records)
        self.resumed_from = epoch
        if epoch == 0:
            for path in (self.checkpoint, self.partial):
                if path.exists():
                    path.unlink()
            return
        last = self.records[-1]
        print(f"keraseq train: resuming after epoch {epoch} of {self.arguments['epochs']}, "
              f"the last one finished (the interrupted run's backup in {self.directory})",
              flush=True)
        train_data.set_epoch(train_data.epoch + epoch)  # the same windows as uninterrupted
        checkpoint.best = last["checkpoint_best"]
        early_stopping.wait = last["wait"]
        early_stopping.best = last["best"]
        early_stopping.best_epoch = last["best_epoch"]
        if self.checkpoint.exists():
            early_stopping.best_weights = load_model(self.checkpoint).get_weights()
        # BackupAndRestore saves the weights, not the random state: without
        # this, dropout after a resume would draw other masks than the
        # uninterrupted run (measured: weights 0.06-0.07 apart on all three backends).
        for variable, state in zip(seed_states(model), last["seed_states"]):
            variable.assign(state)

    def record(self, epoch, logs, model, checkpoint, early_stopping):
        """on_epoch_end, before BackupAndRestore saves this epoch."""
        if self.fault is not None:
            return  # the epoch of a numerical fault is not kept
        self.records = self.records[:epoch]
        self.records.append({
            "logs": {key: float(value) for key, value in (logs or {}).items()},
            "checkpoint_best": float(checkpoint.best),
            "wait": int(early_stopping.wait),
            "best": None if early_stopping.best is None else float(early_stopping.best),
            "best_epoch": int(early_stopping.best_epoch),
            "stopped": bool(model.stop_training),
            "seed_states": [_plain(v) for v in seed_states(model)],
        })
        self._write("history.json", {"epochs": self.records})

    def history(self):
        keys = list(self.records[0]["logs"]) if self.records else []
        return {key: [r["logs"][key] for r in self.records] for key in keys}

    def remove(self):
        shutil.rmtree(self.directory, ignore_errors=True)
