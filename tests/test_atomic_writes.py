"""Nothing half-written (issue 7 item 2): every writer goes through `keraseq._atomic`.

For each writer a good file is in place; the writer is then interrupted midway: the
serializer writes some bytes, then raises `KeyboardInterrupt` (Ctrl-C; SIGTERM is raised
the same way by the command line) or `OSError(ENOSPC)` (a full disk). Each test checks
that the exception propagates, that the good file is byte for byte what it was and that no
temporary or partial file is left in the directory (`os.listdir`, hidden files included).

End to end, `keraseq train` interrupted while training, while checkpointing and while
publishing, and `keraseq export` interrupted while checking parity, leave the previous
good run directory loadable and unchanged (or, interrupted while publishing, refused as
incomplete until the same command publishes it again).
"""

import builtins
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keraseq
from keraseq import _atomic
from keraseq import _run, cli
from keraseq.export import native, parity, quantize
from keraseq.export.onnx_export import export_onnx
from keraseq.inspect import _plot, curves
from keraseq.text import Vocabulary

from conftest import BACKEND

# A previous good run (1 epoch) and the run that is interrupted (2 epochs): their files
# differ, so a mix of the two would show.
GOOD_RUN = ["train", "--epochs", "1", "--max-tokens", "6000", "--batch-size", "8",
            "--sequence-length", "16", "--units", "8", "--seed", "1"]
NEW_RUN = [*GOOD_RUN[:2], "2", *GOOD_RUN[3:]]
RUN_FILES = ["config.json", "curves.png", "history.json", "model.keras", "position_loss.json",
             "position_loss.png", "sample.txt", "vocabulary.json"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _failure(kind):
    if kind == "KeyboardInterrupt":
        return KeyboardInterrupt()
    return OSError(errno.ENOSPC, "No space left on device")


FAILURES = ["KeyboardInterrupt", "ENOSPC"]
RAISED = {"KeyboardInterrupt": KeyboardInterrupt, "ENOSPC": OSError}


def _snapshot(directory):
    """Every entry of `directory` (hidden ones too) → its bytes (None for a directory)."""
    directory = Path(directory)
    return {
        name: None if (directory / name).is_dir() else (directory / name).read_bytes()
        for name in sorted(os.listdir(directory))
    }


class _Interrupted:
    """Files opened for writing by `keraseq._atomic` write half of the first chunk, then
    raise `error`; the names they wrote are kept in `names`."""

    def __init__(self, monkeypatch, error):
        self.names = []
        real_open = builtins.open

        def broken_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if not any(flag in mode for flag in "wax+"):
                return handle
            self.names.append(os.fspath(file))
            return _HalfWriter(handle, error)

        monkeypatch.setattr(_atomic, "open", broken_open, raising=False)

    def check_cleaned(self, directory):
        """Bytes were written (the write really was cut midway) and nothing is left."""
        assert self.names, "the writer never reached the file"
        for name in self.names:
            assert os.path.dirname(name) == os.fspath(directory)
            assert _atomic._TEMPORARY.match(os.path.basename(name)), name
            assert not os.path.exists(name), f"{name} left behind"


class _HalfWriter:
    def __init__(self, handle, error):
        self._handle, self._error = handle, error

    def write(self, data):
        self._handle.write(data[: max(1, len(data) // 2)])
        self._handle.flush()
        assert os.fstat(self._handle.fileno()).st_size > 0
        raise self._error

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()
        return False


def _assert_unchanged(directory, before):
    after = _snapshot(directory)
    assert sorted(after) == sorted(before), "files added or removed"
    for name, data in before.items():
        assert after[name] == data, f"{name} changed"


# -- the implementation ------------------------------------------------------------


def test_write_publish_and_modes(tmp_path):
    old_umask = os.umask(0o027)
    try:
        path = tmp_path / "a.json"
        assert _atomic.write_json(path, {"x": [1, "é"]}, ensure_ascii=False) == str(path)
        assert path.read_text(encoding="utf-8") == '{"x": [1, "é"]}\n'
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 & ~umask, not mkstemp's 0o600
        _atomic.write_text(tmp_path / "b.txt", "line\n")
        assert (tmp_path / "b.txt").read_bytes() == b"line\n"
        _atomic.write_bytes(path, b"replaced")
        assert path.read_bytes() == b"replaced"

        with _atomic.atomic_path(tmp_path / "model.keras") as temporary:
            name = os.path.basename(temporary)
            assert os.path.dirname(temporary) == str(tmp_path)  # same file system: rename is atomic
            assert name.startswith(".model.keras.") and name.endswith(".tmp.keras")
            Path(temporary).write_bytes(b"zip")
        assert (tmp_path / "model.keras").read_bytes() == b"zip"

        staging = tmp_path / "staging"
        staging.mkdir(mode=0o700)
        (staging / "config.json").write_text("{}")
        assert _atomic.publish_directory(staging, tmp_path / "run") == str(tmp_path / "run")
        assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o750
        assert (tmp_path / "run" / "config.json").read_text() == "{}"
        staging.mkdir()
        with pytest.raises(OSError):  # never merged into a non-empty directory
            _atomic.publish_directory(staging, tmp_path / "run")
        staging.rmdir()
    finally:
        os.umask(old_umask)
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.txt", "model.keras", "run"]


@pytest.mark.parametrize("kind", FAILURES)
def test_atomic_path_interrupted(tmp_path, kind):
    path = tmp_path / "model.keras"
    path.write_bytes(b"good")
    with pytest.raises(RAISED[kind]):
        with _atomic.atomic_path(path) as temporary:
            Path(temporary).write_bytes(b"half")
            raise _failure(kind)
    assert _snapshot(tmp_path) == {"model.keras": b"good"}


def test_killed_writer_leftovers_are_recognised(tmp_path):
    # SIGKILL cannot be caught: what it leaves has a hidden .tmp name, removed on resume.
    left = [_atomic.temporary_path(tmp_path / name) for name in ("history.json", "x")]
    (tmp_path / "history.json").write_text("{}")
    (tmp_path / ".hidden.json").write_text("{}")  # not one of ours
    assert _atomic.remove_temporaries(tmp_path) == sorted(os.path.basename(n) for n in left)
    assert sorted(os.listdir(tmp_path)) == [".hidden.json", "history.json"]


def _ended_process_id():
    """The id of a process that has just ended (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_are_those_of_ended_processes(tmp_path):
    """`remove_stale_temporaries` removes what a keraseq writer killed outright left
    (its process id and PID space are in the name) and nothing else: not what a running
    writer (this one or another) is writing, not a writer of another container or
    machine, not a user's own hidden files that merely look alike, not links."""
    space = _atomic._space()
    mine = _atomic.temporary_path(tmp_path / "model.onnx")
    assert os.path.basename(mine).startswith(f".model.onnx.{os.getpid()}-{space}.")
    assert mine.endswith(".tmp.onnx")
    scratch = _atomic.temporary_directory(tmp_path, "streaming")
    assert os.path.basename(scratch).startswith(f".streaming.{os.getpid()}-{space}.")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "kept.txt").write_text("a link's target")
    try:
        dead = f"{_ended_process_id()}-{space}"
        stale = [  # what keraseq wrote, its writer gone: removed
            f".model.onnx.{dead}.a1b2c3d4.tmp.onnx",
            f".model.parity.json.{dead}.zz_09xyz.tmp.json",
            f".streaming.{dead}.q1w2e3r4.tmp",
        ]
        kept = [
            f".model.onnx.{other.pid}-{space}.k9j8h7g6.tmp.onnx",  # an export still running
            f".model.onnx.{dead.split('-')[0]}-0badf00d.k9j8h7g6.tmp.onnx",  # another container
            ".model.onnx.abcdefgh.tmp.onnx",  # no writer recorded: cannot tell
            f".model.onnx.{dead}.A1B2C3D4.tmp.onnx",  # mkstemp never writes upper case
            f".model.onnx.{dead}.a1b2c3d4.tmp.json",  # not model.onnx's suffix
            f".notes.{dead}.abcdefgh.tmp",  # not a file keraseq writes here
            f".photos.{dead}.snapshot.tmp",  # a user's directory of that shape
            f".model.onnx.{dead}.linkfile.tmp.onnx",  # a link, to a file
            f".streaming.{dead}.linkdir_.tmp",  # a link, to a directory
            f".model.onnx.{dead}.directry.tmp.onnx",  # a directory where a file would be
            "model.onnx",
        ]
        for name in stale + kept:
            path = tmp_path / name
            if "linkfile" in name:
                path.symlink_to(outside / "kept.txt")
            elif "linkdir" in name:
                path.symlink_to(outside)
            elif name.startswith((".streaming.", ".photos.")) or "directry" in name:
                path.mkdir()
                (path / "model.step.onnx").write_bytes(b"half")
            else:
                path.write_bytes(b"")
        removed = _atomic.remove_stale_temporaries(
            tmp_path, files=("model.onnx", "model.parity.json"), scratch=("streaming",))
        assert removed == sorted(stale)
        assert sorted(os.listdir(tmp_path)) == sorted(
            [os.path.basename(mine), os.path.basename(scratch), *kept])
        assert (outside / "kept.txt").read_text() == "a link's target"
        # Without the names, nothing at all is removed.
        assert _atomic.remove_stale_temporaries(tmp_path) == []
    finally:
        other.kill()
        other.wait()
    assert _atomic.remove_stale_temporaries(tmp_path / "absent", files=("x",)) == []


@pytest.mark.parametrize("path", ["{tmp}/absent/r.json", "{tmp}/dir", "{tmp}/dir/", "{tmp}/f/r.json"])
def test_a_destination_that_cannot_be_written_is_refused_first(tmp_path, path):
    """`temporary_path` (every writer) raises before creating anything when the
    destination is a directory or its directory is missing or a file."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "f").write_text("a file")
    path = path.format(tmp=tmp_path)
    with pytest.raises(OSError) as raised:
        _atomic.write_json(path, {"a": 1})
    assert isinstance(raised.value, (IsADirectoryError, FileNotFoundError, NotADirectoryError))
    assert sorted(os.listdir(tmp_path)) == ["dir", "f"] and not os.listdir(tmp_path / "dir")
    assert str(raised.value.filename).rstrip("/") in (path.rstrip("/"), os.path.dirname(path))


# -- each writer, interrupted midway ------------------------------------------------


def _vocabulary(path):
    Vocabulary.from_text("To be, or not to be\n", level="char").save(path)


def _history(path):
    _run.write_json(path, {"loss": [2.0, float("nan")], "best_epoch": 1})


def _config(path):
    _run.write_json(path, {"units": 8, "kept": "kept epoch 1 of 1"})


def _plot_json(path):
    _plot.save_json({"loss": [1.5, 1.25]}, path)


JSON_WRITERS = {
    "vocabulary.json": _vocabulary,
    "history.json": _history,
    "config.json": _config,
    "position_loss.json": _plot_json,
}


@pytest.mark.parametrize("kind", FAILURES)
@pytest.mark.parametrize("name", list(JSON_WRITERS))
def test_json_writer_interrupted(tmp_path, monkeypatch, name, kind):
    path = tmp_path / name
    JSON_WRITERS[name](path)  # the good file, written by the writer itself
    before = _snapshot(tmp_path)
    interrupted = _Interrupted(monkeypatch, _failure(kind))
    with pytest.raises(RAISED[kind]):
        JSON_WRITERS[name](path)
    interrupted.check_cleaned(tmp_path)
    _assert_unchanged(tmp_path, before)


@pytest.mark.parametrize("kind", FAILURES)
def test_plot_png_interrupted(tmp_path, monkeypatch, kind):
    import matplotlib.figure

    history = {"loss": [2.0, 1.5], "val_loss": [2.1, 1.7], "best_epoch": 2,
               "best_val_loss": 1.7}
    path = tmp_path / "curves.png"
    curves.plot_curves(history, path)
    before = _snapshot(tmp_path)
    assert before["curves.png"].startswith(PNG_SIGNATURE)
    written = []

    def broken_savefig(self, name, *args, **kwargs):
        with open(name, "wb") as handle:  # what a crash mid-write leaves
            handle.write(PNG_SIGNATURE)
        written.append(name)
        raise _failure(kind)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    with pytest.raises(RAISED[kind]):
        curves.plot_curves({**history, "loss": [3.0, 0.5]}, path)
    assert written and os.path.basename(written[0]).startswith(".curves.png.")
    _assert_unchanged(tmp_path, before)


@pytest.mark.parametrize("kind", FAILURES)
def test_resume_files_interrupted(tmp_path, monkeypatch, kind):
    out = tmp_path / "run"
    backup = _run.TrainingBackup(out, {"epochs": 2})
    backup.open()  # writes arguments.json
    backup._write("history.json", {"epochs": [{"logs": {"loss": 2.0}}]})
    before = _snapshot(backup.directory)
    assert sorted(before) == ["arguments.json", "history.json"]
    interrupted = _Interrupted(monkeypatch, _failure(kind))
    for name in ("history.json", "arguments.json"):
        with pytest.raises(RAISED[kind]):
            backup._write(name, {"epochs": [{"logs": {"loss": 1.0}}] * 2})
    interrupted.check_cleaned(backup.directory)
    _assert_unchanged(backup.directory, before)

    # Interrupted before its first file: the next run starts over (nothing trained).
    fresh = _run.TrainingBackup(tmp_path / "other", {"epochs": 2})
    with pytest.raises(RAISED[kind]):
        fresh.open()
    assert os.listdir(fresh.directory) == []
    monkeypatch.undo()
    _run.TrainingBackup(tmp_path / "other", {"epochs": 2}).open()
    assert json.loads((fresh.directory / "arguments.json").read_text()) == {"epochs": 2}


# -- graphs and reports ---------------------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A finished `keraseq train` run directory (1 epoch) with its `keraseq export`
    (model.onnx, model.parity.json, model.step.onnx, model.streaming.json)."""
    directory = tmp_path_factory.mktemp("good") / "run"
    previous = cli.SAMPLE_LENGTH
    cli.SAMPLE_LENGTH = 20
    try:
        assert cli.main([*GOOD_RUN, "--out", str(directory)]) == 0
        assert cli.main(["export", str(directory), "--streaming"]) == 0
    finally:
        cli.SAMPLE_LENGTH = previous
    assert sorted(os.listdir(directory)) == sorted(
        [*RUN_FILES, "model.onnx", "model.parity.json", "model.step.onnx",
         "model.streaming.json"])
    assert sorted(os.listdir(directory.parent)) == ["run"]  # no staging, no backup left
    return directory


@pytest.fixture
def run_copy(good_run, tmp_path):
    directory = tmp_path / "run"
    shutil.copytree(good_run, directory)
    return directory


@pytest.mark.parametrize("kind", FAILURES)
def test_onnx_writers_interrupted(run_copy, monkeypatch, kind):
    """`export_onnx` (the plain graph) and `export_streaming` (the step graph)."""
    model = keraseq.load_model(run_copy / "model.keras")
    before = _snapshot(run_copy)
    interrupted = _Interrupted(monkeypatch, _failure(kind))
    with pytest.raises(RAISED[kind]):
        export_onnx(model, run_copy / "model.onnx", method="native")
    with pytest.raises(RAISED[kind]):
        native.export_streaming(model, run_copy)
    interrupted.check_cleaned(run_copy)
    _assert_unchanged(run_copy, before)


def _windows(run, count=4, length=16):
    config = json.loads((run / "config.json").read_text())
    vocabulary = Vocabulary.load(run / "vocabulary.json")
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocabulary.size, (count, length)).astype("int32")
    y = rng.integers(0, vocabulary.size, (count, length)).astype("int32")
    assert config["sequence_length"] == length
    return x, y


@pytest.mark.parametrize("kind", FAILURES)
def test_parity_report_interrupted(run_copy, monkeypatch, kind):
    before = _snapshot(run_copy)
    interrupted = _Interrupted(monkeypatch, _failure(kind))
    with pytest.raises(RAISED[kind]):
        parity.check_parity(run_copy / "model.keras", run_copy / "model.onnx",
                            inputs=[_windows(run_copy)[0]], batch_sizes=(),
                            report_path=run_copy / "model.parity.json")
    interrupted.check_cleaned(run_copy)
    _assert_unchanged(run_copy, before)


def test_int8_graph_and_quantization_report_interrupted(run_copy, monkeypatch):
    import onnxruntime.quantization

    x, y = _windows(run_copy)
    quantize_args = dict(validation_inputs=x, validation_targets=y, min_agreement=0.01,
                         threads=1, latency_batch_sizes=(1,), latency_repeats=1)
    report = quantize.quantize_int8(run_copy / "model.onnx", run_copy / "model.int8.onnx",
                                    **quantize_args)
    assert report.shipped and report.report_path.endswith("model.int8.quantization.json")
    before = _snapshot(run_copy)

    # The int8 graph: quantize_dynamic writes part of it, then Ctrl-C / a full disk
    # (which quantize_int8 reports as a RuntimeError naming the OSError).
    real = onnxruntime.quantization.quantize_dynamic
    for kind, raised in (("KeyboardInterrupt", KeyboardInterrupt), ("ENOSPC", RuntimeError)):
        def broken_quantize(model, path, **kwargs):
            Path(path).write_bytes(b"\x08\x07partial graph")
            raise _failure(kind)

        monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", broken_quantize)
        with pytest.raises(raised, match="No space" if raised is RuntimeError else None):
            quantize.quantize_int8(run_copy / "model.onnx", run_copy / "model.int8.onnx",
                                   **quantize_args)
        _assert_unchanged(run_copy, before)
    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", real)

    # The quantization report.
    for kind in FAILURES:
        interrupted = _Interrupted(monkeypatch, _failure(kind))
        with pytest.raises(RAISED[kind]):
            report.save()
        interrupted.check_cleaned(run_copy)
        _assert_unchanged(run_copy, before)


# -- end to end: the command line ---------------------------------------------------


def _generate_works(directory, capsys):
    capsys.readouterr()
    assert cli.main(["generate", str(directory), "--prompt", "T", "--length", "5"]) == 0
    assert capsys.readouterr().out.startswith("T")


@pytest.mark.slow
def test_train_interrupted_keeps_the_previous_run(run_copy, monkeypatch, capsys):
    """Interrupted while writing its plots (after the checkpoint, vocabulary and history
    were written to its staging directory): the previous run is untouched and loads."""
    monkeypatch.setattr(cli, "SAMPLE_LENGTH", 20)
    before = _snapshot(run_copy)
    real = curves.write_training_plots

    def interrupted_plots(directory, *args, **kwargs):
        (Path(directory) / "curves.png").write_bytes(PNG_SIGNATURE)  # half a PNG
        raise KeyboardInterrupt

    monkeypatch.setattr(curves, "write_training_plots", interrupted_plots)
    assert cli.main([*NEW_RUN, "--out", str(run_copy)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "keraseq: interrupted"
    _assert_unchanged(run_copy, before)
    _generate_works(run_copy, capsys)
    backup = run_copy.parent / ".run.resume"  # kept to resume; nothing half-written in it
    assert sorted(os.listdir(run_copy.parent)) == [".run.resume", "run"]
    assert "staging" not in os.listdir(backup) and "model.partial.keras" not in os.listdir(backup)
    assert not _atomic.remove_temporaries(backup)

    monkeypatch.setattr(curves, "write_training_plots", real)
    assert cli.main([*NEW_RUN, "--out", str(run_copy)]) == 0
    assert "resuming after epoch 2 of 2" in capsys.readouterr().out
    assert sorted(os.listdir(run_copy.parent)) == ["run"]
    # The new run replaced the old one entirely, its export files included (they were
    # derived from the old model.keras).
    assert sorted(os.listdir(run_copy)) == RUN_FILES
    assert json.loads((run_copy / "config.json").read_text())["epochs_run"] == 2
    assert len(json.loads((run_copy / "history.json").read_text())["loss"]) == 2


@pytest.mark.slow
def test_checkpoint_interrupted_then_resumed(tmp_path, monkeypatch, capsys):
    """ModelCheckpoint's save of epoch 2 is cut midway: the backed-up checkpoint of
    epoch 1 is byte for byte intact, its partial file is removed, and the same command
    resumes from epoch 1."""
    monkeypatch.setattr(cli, "SAMPLE_LENGTH", 20)
    out = tmp_path / "run"
    backup = tmp_path / ".run.resume"
    real_save = keras.Model.save
    seen = {}

    def save(model, filepath, *args, **kwargs):
        if Path(filepath).parent != backup or "kept" not in seen:
            seen["kept"] = True  # epoch 1: saved for real
            return real_save(model, filepath, *args, **kwargs)
        seen["checkpoint"] = (backup / "model.keras").read_bytes()
        seen["partial"] = filepath
        Path(filepath).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", save)
    # Epoch 2 must improve for ModelCheckpoint to save it: a high learning rate does.
    argv = [*NEW_RUN, "--learning-rate", "0.02", "--out", str(out)]
    assert cli.main(argv) == 130
    assert "partial" in seen, "epoch 2 did not improve; the checkpoint was not written"
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == [".run.resume"]
    assert (backup / "model.keras").read_bytes() == seen["checkpoint"]
    assert not os.path.exists(seen["partial"])
    assert not _atomic.remove_temporaries(backup)
    assert len(keraseq.load_model(backup / "model.keras").get_weights()) > 0

    monkeypatch.setattr(keras.Model, "save", real_save)
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert "resuming after epoch 1 of 2" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == RUN_FILES
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_publish_new_directory_is_one_rename(tmp_path):
    staging = tmp_path / ".run.resume" / "staging"
    staging.mkdir(parents=True)
    for name in ("model.keras", "config.json"):
        (staging / name).write_text(name)
    assert _run.publish_run(staging, tmp_path / "run") == []
    assert not staging.exists()
    assert _snapshot(tmp_path / "run") == {"config.json": b"config.json",
                                           "model.keras": b"model.keras"}


def _staging(directory, tag, names=("config.json", "history.json", "model.keras",
                                    "vocabulary.json")):
    directory.mkdir()
    for name in names:
        (directory / name).write_text(f"{tag} {name}")
    return directory


def test_publish_into_existing_run_writes_config_last(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("model.keras", "config.json", "curves.png", "model.onnx", "notes.txt"):
        (out / name).write_text(f"old {name}")

    # config.json comes last; the earlier run's files that the new run does not
    # replace (a plot, the export of the replaced model) are removed, others kept.
    real_publish, order = _atomic.publish, []

    def recording_publish(temporary, path):
        order.append(Path(path).name)
        return real_publish(temporary, path)

    monkeypatch.setattr(_atomic, "publish", recording_publish)
    assert _run.publish_run(_staging(tmp_path / "a", "new"), out) == ["curves.png", "model.onnx"]
    assert order[-1] == "config.json" and len(order) == 4
    assert _snapshot(out) == {
        "config.json": b"new config.json", "history.json": b"new history.json",
        "model.keras": b"new model.keras", "notes.txt": b"old notes.txt",
        "vocabulary.json": b"new vocabulary.json",
    }

    # Interrupted after the first file: config.json is gone first, so the directory
    # is refused as incomplete instead of looking like a run made of two runs.
    def interrupted_publish(temporary, path):
        if len(order) == 5:
            raise KeyboardInterrupt
        return recording_publish(temporary, path)

    monkeypatch.setattr(_atomic, "publish", interrupted_publish)
    with pytest.raises(KeyboardInterrupt):
        _run.publish_run(_staging(tmp_path / "b", "newer"), out)
    assert order[4] != "config.json"
    assert "config.json" not in os.listdir(out)
    assert not [name for name in os.listdir(out) if name.startswith(".")]
    with pytest.raises(ValueError, match="config.json"):
        _run.run_directory(out)


@pytest.mark.slow
def test_train_interrupted_while_publishing_then_published_again(run_copy, monkeypatch,
                                                                  capsys):
    monkeypatch.setattr(cli, "SAMPLE_LENGTH", 20)
    real_publish = _atomic.publish
    count = []

    def interrupted_publish(temporary, path):
        if Path(path).parent == run_copy:
            count.append(path)
            if len(count) == 3:
                raise KeyboardInterrupt
        return real_publish(temporary, path)

    monkeypatch.setattr(_atomic, "publish", interrupted_publish)
    assert cli.main([*NEW_RUN, "--out", str(run_copy)]) == 130
    names = os.listdir(run_copy)
    assert "config.json" not in names and not [n for n in names if n.startswith(".")]
    capsys.readouterr()
    assert cli.main(["generate", str(run_copy), "--prompt", "T"]) == 2
    assert "config.json" in capsys.readouterr().err  # refused: not a complete run

    monkeypatch.setattr(_atomic, "publish", real_publish)
    assert cli.main([*NEW_RUN, "--out", str(run_copy)]) == 0
    assert "resuming after epoch 2 of 2" in capsys.readouterr().out
    assert sorted(os.listdir(run_copy)) == RUN_FILES
    assert json.loads((run_copy / "config.json").read_text())["epochs_run"] == 2
    _generate_works(run_copy, capsys)


def test_export_interrupted_keeps_the_previous_export(run_copy, monkeypatch, capsys):
    """`keraseq export` cut while checking parity (its candidate graph written): the
    previous model.onnx and report are untouched and the graph still runs."""
    import onnxruntime

    import keraseq.export

    before = _snapshot(run_copy)
    seen = []

    def interrupted_parity(model, candidate, **kwargs):
        assert os.path.getsize(candidate) > 0  # the new graph is complete, not yet published
        seen.append(candidate)
        raise KeyboardInterrupt

    monkeypatch.setattr(keraseq.export, "check_parity", interrupted_parity)
    assert cli.main(["export", str(run_copy)]) == 130
    assert seen and os.path.dirname(seen[0]) == str(run_copy)
    _assert_unchanged(run_copy, before)

    model = keraseq.load_model(run_copy / "model.keras")
    x = _windows(run_copy)[0]
    session = onnxruntime.InferenceSession(str(run_copy / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(model(x)),
                               rtol=0, atol=1e-4)  # native ONNX vs Keras, float32 over 16 steps


def test_export_killed_outright_then_run_again(run_copy):
    """A real `keraseq export --streaming` subprocess SIGKILLed while it writes: the
    run is byte for byte intact, the hidden leftovers are named after the dead process,
    and the next `keraseq export` removes them (and says so)."""
    before = _snapshot(run_copy)
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "keraseq", "export", str(run_copy), "--streaming"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    leftovers = []
    deadline = time.monotonic() + 300
    try:
        # Killed while its streaming scratch directory exists (the streaming graphs
        # half made there).
        while time.monotonic() < deadline and process.poll() is None:
            leftovers = [name for name in os.listdir(run_copy)
                         if name.startswith(f".streaming.{process.pid}-")]
            if leftovers:
                break
            time.sleep(0.02)
        assert leftovers, "the export never reached its streaming scratch directory"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    left = sorted(name for name in os.listdir(run_copy) if name not in before)
    assert left and all(f".{process.pid}-" in name for name in left), left
    for name in RUN_FILES:  # the run itself is untouched
        assert (run_copy / name).read_bytes() == before[name], name

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (f"removed what a killed keraseq process left in {os.path.realpath(run_copy)}: "
            + ", ".join(left)) in done.stdout
    assert sorted(os.listdir(run_copy)) == sorted(before), "a leftover was not removed"
