"""Bad input at the command line and in the export functions (issue 7 item 4, CLI half).

Every case is one row of `CLI_CASES` or `EXPORT_CASES` with the exact message
expected; `docs/bad_input.md` ("## Command line and export") lists the same rows
(`test_docs_list_every_case` keeps the two in step).

A command-line case runs `keraseq.cli.main(argv)` in this process and checks:
exit code 2, stderr exactly one line `keraseq: error: <message>`, no
"Traceback" anywhere, and that nothing was written or replaced: every file of
the test's world (the trained run, the corpora, the fake run directories, a
good `model.onnx` already in place) is byte for byte as before and no file
was added. An export-library case expects one `ValueError` whose `str()` is
the message and checks the same of the files.

Paths in the messages are the test's own (`{run}`, `{world}`, ...); the docs
write them `<run>`, `<world>`.

Two cases simulate a full disk (`OSError(ENOSPC)`): the rename that publishes a
trained run, and the `fsync` of an exported graph (where Linux reports a full
disk under delayed allocation; that error names no file, so the line names
`--out`). `--out` in a directory that is not writable uses `chmod 0o500`; as
root, which chmod does not stop, the kernel's answer to `os.access` is
simulated for that one directory (the same code path and message).
"""

import dataclasses
import errno
import hashlib
import io
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from keraseq import cli
from keraseq.cli import main

TINY = ["--epochs", "1", "--max-tokens", "1000", "--batch-size", "4",
        "--sequence-length", "16", "--units", "8"]
ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"
NOT_ZIP = ("is not a .keras model: not a zip archive holding config.json "
           "(a truncated file, or one written by another program)")
NOT_ONNX = ("it does not parse as an ONNX protobuf: truncated, or not written by an "
            "ONNX exporter")
NO_GRAPH = "it holds no graph: an empty file, or a protobuf of another kind"
TOO_FEW = ("(one batch of windows to train on, one more in the last 10 % to validate on): "
           "lower --sequence-length or --batch-size, or use a longer corpus")
CJK = "".join(chr(0x4E00 + i) for i in range(30))  # 30 characters no run has


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    what: str  # what the user did, as the docs say it
    argv: tuple  # templates, formatted with the world's paths
    message: str  # the exact text after "keraseq: error: ", a template
    fault: str = None  # a simulated failure: "not-writable", "enospc-rename", "enospc-fsync"


CLI_CASES = [
    # -- keraseq train: the corpus -------------------------------------------
    Case("corpus-empty", "`train --corpus` an empty file",
         ("train", "--corpus", "{world}/empty.txt"),
         "`corpus` is empty (or whitespace only). Received: corpus='{world}/empty.txt'"),
    Case("corpus-whitespace", "`train --corpus` a file of spaces, tabs and newlines",
         ("train", "--corpus", "{world}/blank.txt"),
         "`corpus` is empty (or whitespace only). Received: corpus='{world}/blank.txt'"),
    Case("corpus-binary", "`train --corpus` a PNG image (NUL bytes)",
         ("train", "--corpus", "{world}/image.png"),
         "`corpus` is not a text file (it contains NUL bytes). "
         "Received: corpus='{world}/image.png'"),
    Case("corpus-not-utf8", "`train --corpus` a Latin-1 file (`café` as bytes `63 61 66 e9 0a`)",
         ("train", "--corpus", "{world}/latin1.txt"),
         "`corpus` is not a UTF-8 text file (invalid continuation byte at byte 3). "
         "Received: corpus='{world}/latin1.txt'"),
    Case("corpus-one-character", "`train --corpus` a file holding the one character `a`",
         ("train", "--corpus", "{world}/one.txt", *TINY),
         "--corpus '{world}/one.txt' has 1 char token; --sequence-length 16 and "
         "--batch-size 4 need at least 646 " + TOO_FEW),
    Case("corpus-directory", "`train --corpus` a directory",
         ("train", "--corpus", "{world}/notrun"),
         "`corpus` must be a text file, not a directory. Received: corpus='{world}/notrun'"),
    Case("corpus-device", "`train --corpus /dev/null` (a device, not a file)",
         ("train", "--corpus", "/dev/null"),
         "`corpus` must be a regular text file, not a device or a pipe. "
         "Received: corpus='/dev/null'"),
    Case("corpus-missing", "`train --corpus` a name that is neither bundled nor a file",
         ("train", "--corpus", "{world}/absent.txt"),
         "`corpus` is neither a bundled corpus (['irish', 'shakespeare', 'sherlock']) nor an "
         "existing file. Received: corpus='{world}/absent.txt'"),
    Case("corpus-empty-name", "`train --corpus ''` (an empty name, not the current directory)",
         ("train", "--corpus", ""),
         "`corpus` is neither a bundled corpus (['irish', 'shakespeare', 'sherlock']) nor an "
         "existing file. Received: corpus=''"),
    Case("corpus-file-with-slash", "`train --corpus` a file's path with a trailing `/`",
         ("train", "--corpus", "{world}/short.txt/"),
         "`corpus` is neither a bundled corpus (['irish', 'shakespeare', 'sherlock']) nor an "
         "existing file. Received: corpus='{world}/short.txt/'"),
    Case("corpus-name-not-utf8", "`train --corpus` a file whose name is not UTF-8 (bytes `caf e9 .txt`)",
         ("train", "--corpus", "{world}/caf\udce9.txt"),
         "`corpus` must be a path that is valid UTF-8 (it is recorded in config.json). "
         "Received: corpus='{world}/caf\\udce9.txt'"),
    Case("sequence-longer-than-corpus", "`train --sequence-length 500` on a 200-character corpus",
         ("train", "--corpus", "{world}/short.txt", "--sequence-length", "500",
          "--batch-size", "4"),
         "--corpus '{world}/short.txt' has 200 char tokens; --sequence-length 500 and "
         "--batch-size 4 need at least 20,006 " + TOO_FEW),
    Case("max-tokens-too-few", "`train --max-tokens 100` (the default batch needs far more)",
         ("train", "--max-tokens", "100"),
         "--max-tokens 100 keeps 100 of the 1,115,394 char tokens of --corpus 'shakespeare'; "
         "--sequence-length 100 and --batch-size 64 need at least 64,006 " + TOO_FEW),
    # -- keraseq train: arguments --------------------------------------------
    Case("unknown-model", "`train --model gru`", ("train", "--model", "gru"),
         "argument --model: invalid choice: 'gru' (choose from 'lstm', 'rnn', 'transformer')"),
    Case("epochs-zero", "`train --epochs 0`", ("train", "--epochs", "0"),
         "argument --epochs: expected a positive integer <= 2,147,483,647, got '0'"),
    Case("epochs-negative", "`train --epochs -3`", ("train", "--epochs", "-3"),
         "argument --epochs: expected a positive integer <= 2,147,483,647, got '-3'"),
    Case("sequence-length-zero", "`train --sequence-length 0`",
         ("train", "--sequence-length", "0"),
         "argument --sequence-length: expected a positive integer <= 2,147,483,647, got '0'"),
    Case("sequence-length-negative", "`train --sequence-length -1`",
         ("train", "--sequence-length", "-1"),
         "argument --sequence-length: expected a positive integer <= 2,147,483,647, got '-1'"),
    Case('units-huge', '`train --units 99999999999999999999`',
         ("train", "--units", "99999999999999999999"),
         "argument --units: expected a positive integer <= 65,536, got '99999999999999999999'"),
    Case('units-not-ascii', '`train --units ١٦` (Arabic-Indic digits)',
         ("train", "--units", "\u0661\u0666"),
         "argument --units: expected a positive integer <= 65,536, got '١٦'"),
    Case('seed-too-large', '`train --seed 4294967296`',
         ("train", "--seed", "4294967296"),
         "argument --seed: expected an integer in [0, 2**32), got '4294967296'"),
    Case('out-empty', "`train --out ''`",
         ("train", "--out", ""),
         "--out must name a directory. Received: --out ''"),
    Case('out-not-a-run', '`train --out` a non-empty directory that holds no run (e.g. `/`)',
         ("train", "--out", "{world}/notrun"),
         "--out '{world}/notrun' is a non-empty directory that holds no keraseq run: train writes model.keras, config.json, ... there; give a new or empty directory"),
    Case("out-is-a-file", "`train --out` an existing file",
         ("train", "--out", "{world}/short.txt"),
         "--out '{world}/short.txt' is an existing file; give a directory"),
    Case("train-out-not-writable", "`train --out` inside a directory that is not writable",
         ("train", "--out", "{world}/readonly/run"),
         "--out '{world}/readonly/run' cannot be created: '{world}/readonly' is not writable",
         fault="not-writable"),
    Case("train-disk-full", "`train`; the disk is full when the finished run is published "
         "(the rename raises `ENOSPC`, simulated)",
         ("train", *TINY, "--out", "{world}/full/run"),
         f"{ENOSPC}: '{{world}}/full/run'", fault="enospc-rename"),
    # -- keraseq generate ----------------------------------------------------
    Case("length-zero", "`generate --length 0`", ("generate", "{run}", "--prompt", "a",
                                                  "--length", "0"),
         "argument --length: expected a positive integer <= 10,000,000, got '0'"),
    Case("length-negative", "`generate --length -5`",
         ("generate", "{run}", "--prompt", "a", "--length", "-5"),
         "argument --length: expected a positive integer <= 10,000,000, got '-5'"),
    Case("top-k-zero", "`generate --top-k 0`", ("generate", "{run}", "--prompt", "a",
                                                "--top-k", "0"),
         "argument --top-k: expected a positive integer <= 2,147,483,647, got '0'"),
    Case("temperature-nan", "`generate --temperature nan`",
         ("generate", "{run}", "--prompt", "a", "--temperature", "nan"),
         "argument --temperature: expected a finite number >= 0, got 'nan'"),
    Case("prompt-empty", "`generate --prompt ''`", ("generate", "{run}", "--prompt", ""),
         "argument --prompt: expected a non-empty text, got ''"),
    Case("prompt-unknown-only", "`generate --prompt` of characters the corpus never had",
         ("generate", "{run}", "--prompt", "\u4e2d\u6587\u00e9"),
         "--prompt has characters outside the vocabulary: '\u4e2d', '\u6587', '\u00e9'"),
    Case("prompt-many-unknown", "`generate --prompt` of 30 unknown characters (the first 20 "
         "are named)", ("generate", "{run}", "--prompt", CJK),
         "--prompt has characters outside the vocabulary: "
         + ", ".join(repr(c) for c in CJK[:20]) + " and 10 more"),
    Case("prompt-whitespace-words",
         "`generate --prompt ' \\t '` (spaces and a tab) with a word-level vocabulary",
         ("generate", "{world}/words", "--prompt", " \t "),
         "--prompt ' \\t ' has no words (only whitespace)"),
    Case("not-a-run", "`generate DIR` for a directory `keraseq train` did not write",
         ("generate", "{world}/notrun", "--prompt", "a"),
         "DIR '{world}/notrun' has no model.keras: not a directory written by `keraseq train`"),
    Case("dir-missing", "`generate DIR` for a path that does not exist",
         ("generate", "{world}/absent", "--prompt", "a"),
         "DIR '{world}/absent' is not a directory"),
    Case("keras-truncated", "`generate` from a run whose `model.keras` lost its second half",
         ("generate", "{world}/truncated", "--prompt", "a"),
         "'{world}/truncated/model.keras' " + NOT_ZIP),
    Case("keras-foreign-zip", "`generate` from a run whose `model.keras` is a zip of a text file",
         ("generate", "{world}/foreign", "--prompt", "a"),
         "'{world}/foreign/model.keras' " + NOT_ZIP),
    Case("keras-plain-text", "`generate` from a run whose `model.keras` is a text file",
         ("generate", "{world}/text", "--prompt", "a"),
         "'{world}/text/model.keras' " + NOT_ZIP),
    Case("keras-damaged", "`generate` from a run whose `model.keras` has one byte flipped in "
         "its weights", ("generate", "{world}/damaged", "--prompt", "a"),
         "'{world}/damaged/model.keras' is damaged: its member 'model.weights.h5' does not "
         "read back (CRC or compression error)"),
    Case("config-not-json", "`generate` from a run whose `config.json` is not JSON",
         ("generate", "{world}/badconfig", "--prompt", "a"),
         "'{world}/badconfig/config.json' is not a JSON object written by `keraseq train` "
         "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    Case("config-incomplete", "`export` a run whose `config.json` lacks `corpus` and "
         "`sequence_length`", ("export", "{world}/oldconfig"),
         "'{world}/oldconfig/config.json' is not a config.json written by `keraseq train` "
         "(no corpus, sequence_length)"),
    Case("onnx-not-a-model", "`generate --onnx` with a text file as `model.step.onnx`",
         ("generate", "{world}/onnxtext", "--prompt", "a", "--onnx"),
         f"model.step.onnx is not an ONNX model onnxruntime can load ({NOT_ONNX})"),
    Case("onnx-empty", "`generate --onnx` with an empty `model.step.onnx`",
         ("generate", "{world}/onnxempty", "--prompt", "a", "--onnx"),
         f"model.step.onnx is not an ONNX model onnxruntime can load ({NO_GRAPH})"),
    Case("onnx-missing", "`generate --onnx` before `keraseq export DIR --streaming`",
         ("generate", "{run}", "--prompt", "a", "--onnx"),
         "DIR '{run}' has no model.step.onnx: run `keraseq export {run} --streaming` first"),
    # -- keraseq export ------------------------------------------------------
    Case("export-keras-truncated", "`export` a run whose `model.keras` is truncated",
         ("export", "{world}/truncated"), "'{world}/truncated/model.keras' " + NOT_ZIP),
    Case("export-out-not-onnx", "`export --out model.txt`",
         ("export", "{run}", "--out", "{world}/model.txt"),
         "--out must end in .onnx, got '{world}/model.txt'"),
    Case("export-out-no-directory", "`export --out` into a directory that does not exist",
         ("export", "{run}", "--out", "{world}/absent/model.onnx"),
         "--out '{world}/absent/model.onnx': directory '{world}/absent' does not exist"),
    Case("export-out-not-writable", "`export --out` into a directory that is not writable",
         ("export", "{run}", "--out", "{world}/readonly/model.onnx"),
         "--out '{world}/readonly/model.onnx': directory '{world}/readonly' is not writable",
         fault="not-writable"),
    Case("export-disk-full", "`export --out` over a good `model.onnx`; the disk is full when "
         "the graph is flushed (`fsync` raises `ENOSPC`, simulated)",
         ("export", "{run}", "--out", "{world}/exports/model.onnx"),
         f"{ENOSPC}: '{{world}}/exports/model.onnx'", fault="enospc-fsync"),
]


def _parity(paths):
    from keraseq.export import check_parity

    check_parity(f"{paths['run']}/model.keras", paths["onnx_text"])


def _parity_empty(paths):
    from keraseq.export import check_parity

    check_parity(f"{paths['run']}/model.keras", paths["onnx_empty"])


def _parity_model(paths):
    from keraseq.export import check_parity

    check_parity(f"{paths['world']}/text/model.keras", paths["onnx_text"])


def _export_model(paths):
    from keraseq.export import export_onnx

    export_onnx(f"{paths['world']}/foreign/model.keras", f"{paths['world']}/exports/new.onnx")


def _export_suffix(paths):
    from keraseq.export import export_onnx

    export_onnx(f"{paths['run']}/model.keras", f"{paths['world']}/exports/model.txt")


def _quantize(paths):
    from keraseq.export.quantize import quantize_int8

    windows = np.zeros((2, 4), dtype=np.int32)
    quantize_int8(paths["onnx_text"], f"{paths['world']}/exports/int8.onnx",
                  validation_inputs=windows, validation_targets=windows)


def _graph(paths):
    from keraseq.export.runtime import OnnxGraph

    OnnxGraph(paths["onnx_text"])


def _generator(paths):
    from keraseq.export.runtime import OnnxGenerator

    OnnxGenerator(f"{paths['world']}/onnxempty")


EXPORT_CASES = [
    Case("check_parity-onnx-text", "`check_parity(model, onnx_path)` with a text file as "
         "`onnx_path`", (_parity,),
         f"`onnx_path` is not an ONNX model onnxruntime can load ({NOT_ONNX}). "
         "Received: onnx_path='{onnx_text}'"),
    Case("check_parity-onnx-empty", "`check_parity(model, onnx_path)` with an empty file",
         (_parity_empty,),
         f"`onnx_path` is not an ONNX model onnxruntime can load ({NO_GRAPH}). "
         "Received: onnx_path='{onnx_empty}'"),
    Case("check_parity-keras-text", "`check_parity(model_or_path, ...)` with a text file named "
         "`.keras`", (_parity_model,),
         "`model_or_path` is not a .keras file (not a zip archive holding config.json). "
         "Received: model_or_path='{world}/text/model.keras'"),
    Case("export_onnx-keras-zip", "`export_onnx(model_or_path, path)` with a zip of a text "
         "file named `.keras`", (_export_model,),
         "`model_or_path` is not a .keras file (not a zip archive holding config.json). "
         "Received: model_or_path='{world}/foreign/model.keras'"),
    Case("export_onnx-path-suffix", "`export_onnx(model, path)` with `path` not ending in "
         "`.onnx`", (_export_suffix,),
         "`path` must end in '.onnx'. Received: path='{world}/exports/model.txt'"),
    Case("quantize_int8-onnx-text", "`quantize_int8(onnx_path, ...)` with a text file as "
         "`onnx_path`", (_quantize,),
         f"`onnx_path` is not an ONNX model ({NOT_ONNX}). Received: onnx_path='{{onnx_text}}'"),
    Case("OnnxGraph-text", "`OnnxGraph(path)` of a text file", (_graph,),
         f"not_a_model.onnx is not an ONNX model onnxruntime can load ({NOT_ONNX})"),
    Case("OnnxGenerator-empty-graph", "`OnnxGenerator(directory)` whose `model.step.onnx` is "
         "empty", (_generator,),
         f"model.step.onnx is not an ONNX model onnxruntime can load ({NO_GRAPH})"),
]


# -- the world every case runs in ------------------------------------------------
def _copy_run(run, directory, **replace):
    """A run directory: `vocabulary.json` and `config.json` of `run`, and
    `model.keras` (of `run` unless replaced); `replace` maps file names to bytes."""
    directory.mkdir()
    for name in ("model.keras", "vocabulary.json", "config.json"):
        shutil.copyfile(run / name, directory / name)
    for name, data in replace.items():
        (directory / name.replace("_", ".")).write_bytes(data)
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    run = root / "run"
    sample_length, cli.SAMPLE_LENGTH = cli.SAMPLE_LENGTH, 20  # the sample is not what is tested
    try:
        assert main(["train", *TINY, "--out", str(run)]) == 0
    finally:
        cli.SAMPLE_LENGTH = sample_length
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.txt").write_bytes(b" \n\t \n\n")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (root / "one.txt").write_text("a")
    (root / "short.txt").write_text(("To be, or not to be: that is the question. " * 5)[:200])
    (root / os.fsdecode(b"caf\xe9.txt")).write_text("To be, or not to be\n" * 400)
    (root / "notrun").mkdir()
    (root / "notrun" / "notes.txt").write_text("not a run")
    (root / "readonly").mkdir()
    (root / "full").mkdir()
    (root / "exports").mkdir()
    (root / "exports" / "model.onnx").write_bytes(b"a good graph from an earlier export")

    model = (run / "model.keras").read_bytes()
    foreign = io.BytesIO()
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("readme.txt", "written by another program")
    _copy_run(run, root / "truncated", model_keras=model[: len(model) // 2])
    _copy_run(run, root / "foreign", model_keras=foreign.getvalue())
    _copy_run(run, root / "text", model_keras=b"this is a text file named model.keras\n")
    with zipfile.ZipFile(run / "model.keras") as archive:  # a stored member: flip one byte
        weights = archive.getinfo("model.weights.h5")
        assert weights.compress_type == zipfile.ZIP_STORED
    # the member's data follows its local header (30 bytes, then name and extra field)
    name_length, extra_length = struct.unpack(
        "<HH", model[weights.header_offset + 26 : weights.header_offset + 30])
    offset = weights.header_offset + 30 + name_length + extra_length
    damaged = bytearray(model)
    damaged[offset + weights.file_size // 2] ^= 0xFF
    _copy_run(run, root / "damaged", model_keras=bytes(damaged))
    _copy_run(run, root / "badconfig", config_json=b"{not json}")
    _copy_run(run, root / "oldconfig", config_json=b'{"model": "lstm"}')
    _copy_run(run, root / "onnxtext", model_step_onnx=b"not a model\n")
    _copy_run(run, root / "onnxempty", model_step_onnx=b"")
    from keraseq._tokens import TokenVocabulary

    words = _copy_run(run, root / "words")
    TokenVocabulary(["to", "be", "or", "not"], level="word").save(words / "vocabulary.json")
    (root / "not_a_model.onnx").write_bytes(b"not a model\n")
    (root / "empty.onnx").write_bytes(b"")
    paths = {"world": str(root), "run": str(run),
             "onnx_text": str(root / "not_a_model.onnx"), "onnx_empty": str(root / "empty.onnx")}
    os.chmod(root / "readonly", 0o500)
    yield paths
    os.chmod(root / "readonly", 0o700)


def _snapshot(root, skip=()):
    """{relative path: sha256} of every file under `root` (and every directory, as None)."""
    found = {}
    for directory, names, files in os.walk(root):
        relative = os.path.relpath(directory, root)
        if relative.split(os.sep)[0] in skip:
            continue
        found[relative] = None
        for name in files:
            data = Path(directory, name).read_bytes()
            found[os.path.join(relative, name)] = hashlib.sha256(data).hexdigest()
    return found


def _temporaries(root):
    return [os.path.join(d, n) for d, names, files in os.walk(root) for n in names + files
            if ".tmp" in n or n == "staging" or ".partial" in n]


def _install_fault(fault, paths, monkeypatch):
    if fault == "not-writable":
        readonly = os.path.join(paths["world"], "readonly")
        if os.geteuid() == 0:  # root writes anywhere: answer as the kernel does for a user
            real_access = os.access

            def access(path, mode, *args, **kwargs):
                if os.path.abspath(path) == readonly and mode & os.W_OK:
                    return False
                return real_access(path, mode, *args, **kwargs)

            monkeypatch.setattr(os, "access", access)
    elif fault == "enospc-rename":  # publishing the run: staging -> --out
        target = os.path.join(paths["world"], "full", "run")
        for name in ("rename", "replace"):
            real = getattr(os, name)

            def failing(src, dst, *args, real=real, **kwargs):
                if os.path.abspath(dst) == target:
                    raise OSError(errno.ENOSPC, ENOSPC, os.fspath(src), None, os.fspath(dst))
                return real(src, dst, *args, **kwargs)

            monkeypatch.setattr(os, name, failing)
    elif fault == "enospc-fsync":
        def fsync(fd):
            raise OSError(errno.ENOSPC, ENOSPC)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        assert fault is None, fault


def _format(template, paths):
    return template.format(**paths)


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda case: case.id)
def test_command_line(case, world, capsys, monkeypatch):
    before = _snapshot(world["world"], skip=("full",))
    monkeypatch.setattr(cli, "SAMPLE_LENGTH", 20)
    _install_fault(case.fault, world, monkeypatch)
    code = main([_format(part, world) for part in case.argv])
    monkeypatch.undo()
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert err.splitlines() == [f"keraseq: error: {_format(case.message, world)}"], err
    assert code == 2
    assert _snapshot(world["world"], skip=("full",)) == before  # nothing written or replaced
    assert not _temporaries(world["world"])
    if case.fault == "enospc-rename":
        # Nothing was published; what is left is the complete resume backup of the
        # trained run (no temporary file, no staging directory), so that the same
        # command, once there is room, publishes the run without training again.
        full = Path(world["world"], "full")
        assert sorted(p.name for p in full.iterdir()) == [".run.resume"]
        backup = full / ".run.resume"
        assert {"arguments.json", "history.json", "model.keras"} <= {
            p.name for p in backup.iterdir()}
        with zipfile.ZipFile(backup / "model.keras") as archive:
            assert archive.testzip() is None
        shutil.rmtree(backup)


@pytest.mark.parametrize("case", EXPORT_CASES, ids=lambda case: case.id)
def test_export_functions(case, world):
    before = _snapshot(world["world"])
    (call,) = case.argv
    with pytest.raises(ValueError) as info:
        call(world)
    assert str(info.value) == _format(case.message, world)
    assert _snapshot(world["world"]) == before
    assert not _temporaries(world["world"])


def test_os_errors_are_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    """main() turns any OSError into one line: the reason, then the file the
    system names (a rename's destination) or else what the command writes."""
    import keraseq.cli as cli

    def command(args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "a"),
                              None, str(tmp_path / "b"))

    monkeypatch.setitem(cli.COMMANDS, "export", command)
    assert main(["export", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"keraseq: error: Permission denied: '{tmp_path / 'b'}'"]

    def command(args):
        raise OSError(errno.EIO, "Input/output\nerror")  # names no file: DIR is named

    monkeypatch.setitem(cli.COMMANDS, "export", command)
    assert main(["export", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"keraseq: error: Input/output error: '{tmp_path}'"]


@pytest.mark.parametrize("sequence_length, batch_size", [
    (1, 1), (2, 3), (16, 4), (100, 64), (7, 13), (500, 4), (3, 50)])
def test_tokens_needed_is_the_least_that_trains(sequence_length, batch_size):
    """`_tokens_needed` (the count the corpus-size message gives) against the
    real split and datasets: that many ids make one training and one
    validation batch, one fewer does not."""
    from keraseq.cli import _tokens_needed
    from keraseq.text import LanguageModelDataset, split

    def fits(count):
        try:
            train, validation = split(np.zeros(count, dtype=np.int32), validation_fraction=0.1)
            LanguageModelDataset(train, sequence_length, batch_size, shuffle=True)
            LanguageModelDataset(validation, sequence_length, batch_size, shuffle=False)
        except ValueError:
            return False
        return True

    needed = _tokens_needed(sequence_length, batch_size)
    assert fits(needed) and not fits(needed - 1)
    assert all(fits(needed + extra) for extra in range(1, 12))


def _doc_message(message):
    """A message as the docs write it: paths as `<world>` etc., in backticks
    (doubled where the message holds one)."""
    text = message.format(world="<world>", run="<run>", onnx_text="<onnx_text>",
                          onnx_empty="<onnx_empty>")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def doc_rows():
    """The docs table rows (`| case | what you did | message |`) of every case."""
    return [f"| `{case.id}` | {case.what} | {_doc_message(case.message)} |"
            for case in CLI_CASES + EXPORT_CASES]


def test_docs_list_every_case():
    text = (Path(__file__).resolve().parents[1] / "docs" / "bad_input.md").read_text(
        encoding="utf-8")
    section = text.split("## Command line and export", 1)[1].split("\n## ", 1)[0]
    for case, row in zip(CLI_CASES + EXPORT_CASES, doc_rows()):
        assert f"`{case.id}`" in section, case.id
        assert _doc_message(case.message) in section, case.id
        assert row in section, case.id
    assert len({case.id for case in CLI_CASES + EXPORT_CASES}) == len(CLI_CASES + EXPORT_CASES)
