"""End to end through the command line: train -> generate -> export -> parity, and
bad input (exit code 2, one line on stderr, nothing written).

Under the JAX and torch runs of the suite the export goes through the TensorFlow
subprocess path, so these tests also cover "trained under JAX/torch, exported
through TF".
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keraseq.cli import main

QUICK = ["--epochs", "1", "--max-tokens", "12000", "--batch-size", "8",
         "--sequence-length", "24", "--units", "16"]


def _train(tmp_path, architecture, capsys):
    out = tmp_path / architecture
    assert main(["train", "--model", architecture, *QUICK, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    return out, printed


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["lstm", "rnn", "transformer"])
def test_train_generate_export(tmp_path, architecture, capsys):
    out, printed = _train(tmp_path, architecture, capsys)
    for name in ("model.keras", "vocabulary.json", "history.json", "sample.txt", "config.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert config["backend"] == keras.backend.backend()
    # The printed loss is the evaluated validation loss, in nats and bits.
    nats = config["validation_loss_nats"]
    assert np.isclose(config["validation_loss_bits"], nats / np.log(2))
    assert f"{nats:.4f} nats/char" in printed
    assert np.isclose(history["val_loss"][-1], nats, rtol=1e-3)
    # One epoch on 11k characters must beat the uniform model (ln 66 ≈ 4.19 nats).
    assert nats < np.log(66)
    assert not list(tmp_path.glob(".*")), "staging directory left behind"

    # The same seed gives the same text; another seed another text.
    args = ["generate", str(out), "--prompt", "ROMEO:", "--length", "40"]
    assert main([*args, "--seed", "5"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--seed", "5"]) == 0
    assert capsys.readouterr().out == first
    assert main([*args, "--seed", "6", "--top-k", "3"]) == 0
    assert first.startswith("ROMEO:")
    assert len(first) == len("ROMEO:") + 40 + 1  # 40 sampled characters, then print's newline

    assert main(["export", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity passed" in printed
    report = json.loads((out / "model.parity.json").read_text())
    assert report["passed"] is True
    assert report["max_abs"] <= 1e-5
    lengths = {case["length"] for case in report["cases"]}
    assert {1, 24, 72} <= lengths
    labels = " ".join(case["case"] for case in report["cases"])
    assert "held-out" in labels
    assert "(native, opset" in printed  # every layer of the three LMs has a converter

    # Streaming graphs: checked token by token and in two chunks against Keras,
    # then generation with onnxruntime alone gives Keras's greedy text.
    assert main(["export", str(out), "--streaming", "--out", str(out / "again.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "streaming parity passed" in printed
    streaming = json.loads((out / "model.streaming.json").read_text())
    assert streaming["passed"] and streaming["max_abs"] <= 1e-5
    assert {c["case"].split(" (")[0] for c in streaming["cases"]} == {"token by token", "two chunks"}
    greedy = ["generate", str(out), "--prompt", "ROMEO:", "--length", "12", "--temperature", "0"]
    assert main(greedy) == 0
    keras_text = capsys.readouterr().out
    assert main([*greedy, "--onnx"]) == 0
    assert capsys.readouterr().out == keras_text

    # int8: kept at a low bar (a 16-unit model trained for one epoch); refused,
    # with nothing written, at an agreement no int8 graph of it reaches.
    assert main(["export", str(out), "--quantize", "int8", "--min-agreement", "0.5"]) == 0
    quantized = json.loads((out / "model.int8.quantization.json").read_text())
    assert quantized["shipped"] and (out / "model.int8.onnx").is_file()
    assert quantized["int8_bytes"] < quantized["float_bytes"]
    (out / "model.int8.onnx").unlink()
    if quantized["agreement"] < 1.0:
        assert main(["export", str(out), "--quantize", "int8", "--min-agreement", "1"]) == 1
        assert not (out / "model.int8.onnx").exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "lstm"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    return out


def _fails(argv, capsys, must_mention):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("keraseq: error:")
    for text in must_mention:
        assert text in lines[0], lines[0]


def test_bad_training_arguments(tmp_path, capsys):
    out = tmp_path / "never"
    _fails(["train", "--units", "0", "--out", str(out)], capsys, ["--units", "'0'"])
    _fails(["train", "--epochs", "-2", "--out", str(out)], capsys, ["--epochs", "'-2'"])
    _fails(["train", "--model", "gru", "--out", str(out)], capsys, ["--model", "gru"])
    missing = tmp_path / "nope.txt"
    _fails(["train", "--corpus", str(missing), "--out", str(out)], capsys, [str(missing)])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _fails(["train", "--corpus", str(empty), "--out", str(out)], capsys, [str(empty)])
    binary = tmp_path / "blob.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    _fails(["train", "--corpus", str(binary), "--out", str(out)], capsys, [str(binary)])
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.txt", "empty.txt"]


def test_bad_generate_and_export_arguments(trained_run, tmp_path, capsys):
    before = sorted(p.name for p in trained_run.iterdir())
    _fails(["generate", str(trained_run), "--prompt", "héllo~"], capsys, ["'é'", "'~'"])
    _fails(["generate", str(trained_run), "--prompt", "a", "--temperature", "-1"], capsys,
           ["--temperature"])  # 0 is greedy decoding: allowed
    _fails(["generate", str(trained_run), "--prompt", "a", "--threads", "2"], capsys,
           ["--threads", "--onnx"])
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    _fails(["export", str(empty_dir)], capsys, [str(empty_dir), "model.keras"])
    _fails(["generate", str(tmp_path / "absent"), "--prompt", "a"], capsys, ["absent"])
    # A model.keras that is not one.
    fake = tmp_path / "fake"
    fake.mkdir()
    for name in ("vocabulary.json", "config.json"):
        (fake / name).write_bytes((trained_run / name).read_bytes())
    (fake / "model.keras").write_text("this is not a zip archive")
    _fails(["export", str(fake)], capsys, ["model.keras"])
    assert not (fake / "model.onnx").exists()
    _fails(["generate", str(fake), "--prompt", "a"], capsys, ["model.keras"])
    for bad, mention in ((["--method", "onnx"], "--method"), (["--quantize", "int4"], "--quantize"),
                         (["--min-agreement", "0"], "--min-agreement"),
                         (["--min-agreement", "1.5"], "--min-agreement")):
        _fails(["export", str(trained_run), *bad], capsys, [mention])
    assert sorted(p.name for p in trained_run.iterdir()) == before


def test_export_layer_without_converter(trained_run, tmp_path, capsys):
    # A run whose model has a layer the native exporter does not know (Conv1D):
    # --method native refuses it naming the layer; the default falls back to
    # tf2onnx and says why.
    run = tmp_path / "conv"
    run.mkdir()
    for name in ("vocabulary.json", "config.json"):
        (run / name).write_bytes((trained_run / name).read_bytes())
    vocabulary = len(json.loads((run / "vocabulary.json").read_text())["tokens"]) + 1
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocabulary, 8)(tokens)
    x = keras.layers.Conv1D(8, 3, padding="causal", name="conv")(x)
    keras.Model(tokens, keras.layers.Dense(vocabulary)(x)).save(run / "model.keras")
    _fails(["export", str(run), "--method", "native"], capsys, ["'conv'", "Conv1D"])
    assert not (run / "model.onnx").exists()
    assert main(["export", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "note: layer 'conv' (Conv1D)" in printed and "tf2onnx instead" in printed
    assert "(tf2onnx, opset 17" in printed and "parity passed" in printed


def test_failed_checks_replace_nothing(trained_run, tmp_path, capsys, monkeypatch):
    # A graph that fails its parity check never lands: the good model.onnx and
    # step graph from before stay byte for byte, and no scratch file is left.
    import shutil

    import keraseq.export
    import keraseq.export.streaming

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["export", str(run), "--streaming"]) == 0
    capsys.readouterr()
    before = {name: (run / name).read_bytes() for name in ("model.onnx", "model.step.onnx")}

    def failing(check):
        def wrapped(*args, **kwargs):
            report = check(*args, **kwargs)
            report.passed = False
            if hasattr(report, "failure"):
                report.failure = "forced failure"
            return report
        return wrapped

    monkeypatch.setattr(keraseq.export, "check_parity", failing(keraseq.export.check_parity))
    assert main(["export", str(run)]) == 1
    assert "parity failed" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(keraseq.export.streaming, "check_streaming_parity",
                        failing(keraseq.export.streaming.check_streaming_parity))
    assert main(["export", str(run), "--streaming"]) == 1
    assert "model.step.onnx not written" in capsys.readouterr().err
    for name, data in before.items():
        assert (run / name).read_bytes() == data, name
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    _fails(["export", str(run), "--min-agreement", "0.9"], capsys, ["--min-agreement", "--quantize"])


def test_sigterm_runs_cleanup(tmp_path, capsys, monkeypatch):
    # SIGTERM is raised like Ctrl-C inside the command, so its `finally`
    # blocks remove their temporary files; exit code 143; handler restored.
    import signal
    import time

    import keraseq.cli as cli

    before = signal.getsignal(signal.SIGTERM)
    partial = tmp_path / "partial.onnx"

    def command(args):
        try:
            partial.write_text("half a graph")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # interrupted by the signal
        finally:
            partial.unlink()

    monkeypatch.setitem(cli.COMMANDS, "export", command)
    assert cli.main(["export", str(tmp_path)]) == 143
    assert not partial.exists()
    assert capsys.readouterr().err.strip() == "keraseq: terminated"
    assert signal.getsignal(signal.SIGTERM) is before


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "keraseq", "train", "--units", "-1"],
        capture_output=True, text=True, env={**os.environ}, timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("keraseq: error: argument --units")
