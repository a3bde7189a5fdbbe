"""End to end through the command line: train -> generate -> export -> parity, and
bad input (exit code 2, one line on stderr, nothing written).

Under the JAX and torch runs of the suite the export goes through the TensorFlow
subprocess path, so these tests also cover "trained under JAX/torch, exported
through TF".
"""

import hashlib
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
    assert report["onnx_path"] == str(out / "model.onnx")  # the published graph, not the candidate
    # ... and its hash is that graph's: a report is tied to the bytes it describes.
    assert report["onnx_sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
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
    assert streaming["graphs"] and streaming["graphs"] == {
        name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in streaming["graphs"]}
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
    assert quantized["int8_sha256"] == hashlib.sha256(
        (out / "model.int8.onnx").read_bytes()).hexdigest()
    assert quantized["onnx_sha256"] == report["onnx_sha256"]  # the float graph it came from
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


def test_model_with_python_code_needs_unsafe(trained_run, tmp_path, capsys):
    """A model.keras holding a Lambda (Python code) loads with Keras's safe_mode:
    refused in one line (exit 2, nothing written) unless --unsafe is given."""
    import keraseq

    run = tmp_path / "lambda"
    run.mkdir()
    for name in ("vocabulary.json", "config.json"):
        (run / name).write_bytes((trained_run / name).read_bytes())
    trained = keraseq.load_model(trained_run / "model.keras")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    doubled = keras.layers.Lambda(lambda logits: logits * 2.0, name="code")(trained(tokens))
    keras.Model(tokens, doubled).save(run / "model.keras")
    before = sorted(p.name for p in run.iterdir())
    generate = ["generate", str(run), "--prompt", "ROMEO:", "--length", "5"]
    _fails(generate, capsys, ["Lambda", "--unsafe", "model.keras"])
    _fails(["inspect", "gates", str(run), "--text", "ROMEO", "--out", str(tmp_path / "g")],
           capsys, ["Lambda", "--unsafe"])
    _fails(["export", str(run)], capsys, ["Lambda"])
    assert sorted(p.name for p in run.iterdir()) == before
    assert not (tmp_path / "g").exists()
    assert main([*generate, "--unsafe", "--temperature", "0"]) == 0
    assert len(capsys.readouterr().out) > 0


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


# -- keeping the best epoch (issue 5) -------------------------------------------
# A corpus with nothing to generalise: 1,600 characters drawn uniformly from 16
# symbols. The best a model can do on held-out text is the uniform
# distribution (ln 16 ≈ 2.77 nats); once the LSTM starts memorising the
# training part, the validation loss climbs every epoch. Measured on all three
# backends: lowest at epoch 2 (≈ 2.80), 2.92-2.93 by epoch 6.
# Noise text, 128 units: the validation loss is lowest after epoch 2 and then rises. Measured
# (seed 0, 6 epochs): torch [2.794 2.789 2.792 2.815 2.829 2.846], jax [2.794 2.789 2.789 2.813
# 2.826 2.842], tensorflow [2.800 2.793 2.802 2.814 2.820 2.845].
OVERFIT = ["--batch-size", "8", "--sequence-length", "16", "--units", "128",
           "--learning-rate", "0.005"]


def _noise_corpus(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.txt"
    path.write_text("".join(rng.choice(list("abcdefghijklmno\n"), 1600)))
    return str(path)


def _validation_loss_of(out):
    """The validation loss of DIR/model.keras, from the files alone: the corpus
    slice and split rebuilt from config.json, the model loaded from disk."""
    import keraseq
    from keraseq.text import LanguageModelDataset, Vocabulary, load_corpus, split

    config = json.loads((out / "config.json").read_text())
    vocabulary = Vocabulary.load(out / "vocabulary.json")
    ids = vocabulary.encode(load_corpus(config["corpus"]))[: config["max_tokens"] or None]
    _, validation_ids = split(ids, validation_fraction=0.1)
    data = LanguageModelDataset(validation_ids, config["sequence_length"],
                                config["batch_size"], shuffle=False)
    model = keraseq.load_model(out / "model.keras")
    return float(model.evaluate(data, verbose=0, return_dict=True)["loss"])


@pytest.mark.slow
def test_train_keeps_best_epoch_not_last(tmp_path, capsys, monkeypatch):
    import keraseq.cli as cli

    monkeypatch.setattr(cli, "SAMPLE_LENGTH", 40)  # the sample is not what is tested
    out = tmp_path / "overfit"
    epochs = 6
    assert main(["train", "--corpus", _noise_corpus(tmp_path), *OVERFIT, "--epochs",
                 str(epochs), "--patience", str(epochs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    config = json.loads((out / "config.json").read_text())
    val_loss = np.array(history["val_loss"])
    assert len(val_loss) == epochs  # patience = epochs: no early stop
    best = int(np.argmin(val_loss))
    # The run over-fits: the last epoch is clearly worse than the best one.
    assert 0 < best < epochs - 1 and val_loss[-1] > val_loss[best] + 0.03, val_loss
    assert history["best_epoch"] == best + 1 == config["best_epoch"]
    assert history["best_val_loss"] == val_loss[best]
    # model.keras is the best epoch's model: evaluated from disk it gives the
    # minimum of the history, not the last value; so does the printed loss.
    assert abs(_validation_loss_of(out) - val_loss.min()) <= 1e-4
    assert abs(config["validation_loss_nats"] - val_loss.min()) <= 1e-4
    assert f"kept epoch {best + 1} of {epochs} (val_loss {val_loss[best]:.4f})" in printed
    assert "stopped early" not in printed and config["stopped_early"] is False
    assert f"{config['validation_loss_nats']:.4f} nats/char" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "curves.png", "history.json", "model.keras", "position_loss.json",
        "position_loss.png", "sample.txt", "vocabulary.json"]
    assert not list(tmp_path.glob(".*")), "staging directory left behind"


@pytest.mark.slow
def test_train_stops_early(tmp_path, capsys, monkeypatch):
    # Patience 2: training stops after the second epoch in a row without a
    # lower validation loss, long before --epochs; the kept epoch is the one
    # before those two. Dropout and AdamW weight decay ride along (recorded in
    # config.json).
    import keraseq.cli as cli

    monkeypatch.setattr(cli, "SAMPLE_LENGTH", 40)
    out = tmp_path / "early"
    epochs, patience = 30, 2
    assert main(["train", "--corpus", _noise_corpus(tmp_path), *OVERFIT, "--epochs",
                 str(epochs), "--patience", str(patience), "--dropout", "0.1",
                 "--weight-decay", "0.01", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    config = json.loads((out / "config.json").read_text())
    val_loss = np.array(history["val_loss"])
    run = len(val_loss)
    assert run < epochs
    assert history["best_epoch"] == int(np.argmin(val_loss)) + 1 == run - patience
    assert np.all(val_loss[-patience:] >= val_loss.min())
    assert abs(_validation_loss_of(out) - val_loss.min()) <= 1e-4
    line = (f"kept epoch {run - patience} of {run} (val_loss {val_loss.min():.4f}); "
            f"stopped early after {patience} epochs without improvement")
    assert line in printed and config["kept"] == line
    assert config["stopped_early"] is True and config["epochs_run"] == run
    assert (config["dropout"], config["weight_decay"], config["optimizer"],
            config["patience"]) == (0.1, 0.01, "adamw", patience)


def test_bad_early_stopping_and_regularization_arguments(tmp_path, capsys):
    out = tmp_path / "never"
    for flag, value in (("--patience", "0"), ("--patience", "-3"), ("--patience", "2.5"),
                        ("--dropout", "1"), ("--dropout", "-0.1"), ("--dropout", "nan"),
                        ("--dropout", "half"), ("--weight-decay", "0"),
                        ("--weight-decay", "inf"), ("--weight-decay", "-0.01")):
        _fails(["train", flag, value, "--out", str(out)], capsys, [flag, repr(value)])
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("architecture", ["lstm", "rnn", "transformer"])
def test_dropout_reaches_every_dropout(architecture, rng):
    # Every dropout site of the model gets the rate; training draws masks; at
    # inference the model equals the dropout-free one with the same weights.
    from keraseq.models import language_model

    kwargs = dict(units=16, embedding_dim=8, num_layers=2, num_heads=2, sequence_length=12)
    dropped = language_model(architecture, 30, dropout=0.3, **kwargs)
    plain = language_model(architecture, 30, **kwargs)
    rates = {}
    for layer in dropped.layers:
        if isinstance(layer, keras.layers.Dropout):
            rates[layer.name] = layer.rate
        elif hasattr(layer, "dropout"):
            rates[layer.name] = layer.dropout
            assert getattr(layer, "recurrent_dropout", 0.0) == 0.0, layer.name
    expected = {
        "lstm": {"lstm_0", "lstm_1", "output_dropout"},
        "rnn": {"rnn_0", "rnn_1"},
        # each TransformerBlock hands its rate to its attention weights and to
        # both residual branches (keraseq/layers/transformer.py)
        "transformer": {"embedding_dropout", "block_0", "block_1"},
    }[architecture]
    assert expected <= set(rates), rates
    assert set(rates.values()) == {0.3}, rates
    plain.set_weights(dropped.get_weights())
    tokens = rng.integers(1, 30, size=(3, 12)).astype("int32")
    inference = keras.ops.convert_to_numpy(dropped(tokens, training=False))
    np.testing.assert_allclose(inference, keras.ops.convert_to_numpy(plain(tokens)),
                               rtol=1e-6, atol=1e-6)
    training = keras.ops.convert_to_numpy(dropped(tokens, training=True))
    assert np.abs(training - inference).max() > 1e-3


@pytest.mark.parametrize("architecture", ["lstm", "rnn", "transformer"])
def test_seeded_dropout_is_a_function_of_the_seed_states(architecture, rng):
    # `seed=`: every dropout mask comes from a SeedGenerator whose state is in
    # model.variables (not model.weights), so restoring those states, as the resume
    # backup of `keraseq train` does, draws the same masks again. Unseeded dropout on
    # torch draws from torch's global random state and would not repeat.
    from keraseq.models import language_model

    kwargs = dict(units=16, embedding_dim=8, num_layers=2, num_heads=2, sequence_length=12)
    model = language_model(architecture, 30, dropout=0.3, seed=5, **kwargs)
    weights = {id(w) for w in model.weights}
    states = [v for v in model.variables if id(v) not in weights]
    assert len(states) >= 2
    assert len({tuple(keras.ops.convert_to_numpy(v.value)) for v in states}) == len(states)
    saved = [keras.ops.convert_to_numpy(v.value) for v in states]
    tokens = rng.integers(1, 30, size=(3, 12)).astype("int32")
    first = keras.ops.convert_to_numpy(model(tokens, training=True))
    second = keras.ops.convert_to_numpy(model(tokens, training=True))
    assert np.abs(first - second).max() > 1e-3  # the states advanced: other masks
    for variable, value in zip(states, saved):
        variable.assign(value)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(tokens, training=True)),
                                  first)
    twin = language_model(architecture, 30, dropout=0.3, seed=5, **kwargs)
    twin.set_weights(model.get_weights())
    for variable, value in zip([v for v in twin.variables if id(v) not in
                                {id(w) for w in twin.weights}], saved):
        variable.assign(value)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(twin(tokens, training=True)),
                                  first)
    with pytest.raises(ValueError) as info:
        language_model(architecture, 30, dropout=0.3, seed=2.5, **kwargs)
    assert str(info.value) == "`seed` must be an int or None. Received: seed=2.5"


def test_weight_decay_is_adamw_on_matrices_only():
    # One AdamW step with zero gradients moves nothing but the decay:
    # w ← w − lr · wd · w on the kernels and the embedding, biases untouched
    # (closed form); without weight_decay the optimizer stays plain Adam.
    from keraseq.models import compile_language_model, language_model

    model = language_model("lstm", 20, units=8, embedding_dim=4)
    compile_language_model(model)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert not isinstance(model.optimizer, keras.optimizers.AdamW)
    compile_language_model(model, learning_rate=0.1, weight_decay=0.5)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == 0.5
    before = [v.numpy() for v in model.trainable_variables]
    optimizer.apply_gradients([(keras.ops.zeros(v.shape), v) for v in model.trainable_variables])
    for variable, old in zip(model.trainable_variables, before):
        factor = 1.0 if len(old.shape) < 2 else 1.0 - 0.1 * 0.5
        np.testing.assert_allclose(variable.numpy(), old * factor,
                                   rtol=1e-6, atol=1e-7, err_msg=variable.path)
    with pytest.raises(ValueError, match="weight_decay"):
        compile_language_model(model, weight_decay=0)
