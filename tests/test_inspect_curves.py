"""Training curves and loss by position (`keraseq.inspect.curves`, and the files
`keraseq train` writes next to history.json).

The numbers behind each picture are checked against independent references:
the position loss against a numpy cross-entropy of `model.predict`'s logits
(float64 log-sum-exp) and, averaged over positions, against `model.evaluate`;
the curves against history.json. The PNGs are checked as files (signature,
read back by matplotlib), and a failing `savefig` must leave no PNG behind and
cost nothing else: `keraseq train` warns on stderr and exits 0 with the model
saved.
"""

import json
import math

import keras
import numpy as np
import pytest

from keraseq.inspect import curves
from keraseq.models import compile_language_model, language_model
from keraseq.text import LanguageModelDataset, windows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOCABULARY = 11


def numpy_position_loss(logits, y):
    """Mean cross-entropy per position, float64: logsumexp(z) - z[y]."""
    z = np.asarray(logits, dtype=np.float64)  # (N, L, V)
    top = z.max(axis=-1, keepdims=True)
    log_normalizer = top[..., 0] + np.log(np.exp(z - top).sum(axis=-1))  # (N, L)
    picked = np.take_along_axis(z, y[..., None].astype(np.int64), axis=-1)[..., 0]  # (N, L)
    return (log_normalizer - picked).mean(axis=0)  # (L,)


def tiny_model(architecture="lstm"):
    model = language_model(architecture, VOCABULARY, units=8, embedding_dim=6,
                           num_heads=2, sequence_length=7)
    return compile_language_model(model)


def check_png(path):
    """A complete PNG file that matplotlib reads back at the size its header states."""
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND", path  # not truncated
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width)
    # 7 x 4.2 inch figures at 120 dpi, trimmed or grown a little by bbox_inches="tight".
    assert 600 <= width <= 1100 and 350 <= height <= 700, (width, height)
    assert image[..., :3].std() > 0.05  # not a blank canvas


@pytest.mark.parametrize("architecture", ["lstm", "rnn", "transformer"])
def test_position_loss_matches_numpy_and_evaluate(architecture, rng):
    model = tiny_model(architecture)
    ids = rng.integers(0, VOCABULARY, 7 * 12 + 1)
    x, y = windows(ids, 7)  # (12, 7)
    # Batches of 4 (one compiled shape on every backend); for the LSTM also
    # batches of 5, the last one short.
    batch_size = 5 if architecture == "lstm" else 4
    losses = curves.position_loss(model, (x, y), batch_size=batch_size)
    assert losses.shape == (7,) and losses.dtype == np.float64
    reference = numpy_position_loss(model.predict(x, batch_size=4, verbose=0), y)
    np.testing.assert_allclose(losses, reference, rtol=0, atol=1e-5)

    # Capped: the first windows only.
    capped = curves.position_loss(model, (x, y), max_windows=4)
    first_4 = numpy_position_loss(model.predict(x[:4], verbose=0), y[:4])
    np.testing.assert_allclose(capped, first_4, rtol=0, atol=1e-5)
    assert not np.allclose(first_4, reference, atol=1e-3)  # the cap matters

    # From the PyDataset the train command validates on: the same windows, and
    # the mean over positions is model.evaluate's loss.
    dataset = LanguageModelDataset(ids, 7, 4, shuffle=False)  # 3 batches of 4 windows
    np.testing.assert_allclose(curves.position_loss(model, dataset), reference,
                               rtol=0, atol=1e-5)
    evaluated = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert abs(losses.mean() - evaluated) <= 1e-4


def test_position_loss_mixed_precision(rng):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = tiny_model()
    keras.config.set_dtype_policy("float32")
    x, y = windows(rng.integers(0, VOCABULARY, 7 * 3 + 1), 7)
    losses = curves.position_loss(model, (x, y))
    assert losses.dtype == np.float64 and np.isfinite(losses).all()
    # bfloat16 logits (8 bits of mantissa): within a few hundredths of the numpy value.
    np.testing.assert_allclose(losses, numpy_position_loss(model.predict(x, verbose=0), y),
                               atol=3e-2)


def test_bad_arguments(rng, tmp_path):
    model = tiny_model()
    x, y = windows(rng.integers(0, VOCABULARY, 15), 7)
    with pytest.raises(ValueError, match="`max_windows` must be a positive.*max_windows=0"):
        curves.position_loss(model, (x, y), max_windows=0)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer.*batch_size=0"):
        curves.position_loss(model, (x, y), batch_size=0)
    with pytest.raises(ValueError, match="`dataset` must give windows"):
        curves.position_loss(model, (x, y[:, :3]))
    with pytest.raises(ValueError, match="`losses` must be a non-empty 1-D array"):
        curves.plot_position_loss([1.0, np.nan], tmp_path / "p.png")
    with pytest.raises(ValueError, match="`history` must be a dict"):
        curves.plot_curves({"val_loss": [1.0]}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="as many validation losses.*2 'loss' and 1"):
        curves.plot_curves({"loss": [2.0, 1.0], "val_loss": [1.0]}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="`unit` must be a non-empty string.*unit=''"):
        curves.plot_curves({"loss": [2.0]}, tmp_path / "c.png", unit="")
    assert not list(tmp_path.iterdir())


def test_plot_curves_draws_the_history(tmp_path):
    history = {"loss": [2.5, 2.0, 1.7, 1.5], "val_loss": [2.2, 1.9, 1.8, 1.85],
               "accuracy": [0.2, 0.3, 0.4, 0.5], "best_epoch": 3, "best_val_loss": 1.8}
    numbers = curves.plot_curves(history, tmp_path / "curves.png", title="t", unit="word")
    assert numbers["epoch"] == [1, 2, 3, 4]
    assert numbers["loss"] == numbers["drawn_loss"] == history["loss"]
    assert numbers["val_loss"] == numbers["drawn_val_loss"] == history["val_loss"]
    assert (numbers["best_epoch"], numbers["best_val_loss"]) == (3, 1.8)
    assert numbers["unit"] == "nats/word"
    check_png(tmp_path / "curves.png")
    # Without best_epoch (model.fit's own history): the lowest finite validation loss;
    # a diverged epoch (NaN) is left out of the lines.
    numbers = curves.plot_curves({"loss": [2.0, 1.0, np.nan], "val_loss": [1.5, 1.2, np.nan]},
                                 tmp_path / "fit.png")
    assert (numbers["best_epoch"], numbers["best_val_loss"]) == (2, 1.2)
    assert numbers["drawn_val_loss"] == [1.5, 1.2]


def test_plot_position_loss_numbers(tmp_path, rng):
    losses = 1.5 + 1.0 / np.arange(1, 61) + 0.05 * rng.standard_normal(60)  # (60,)
    numbers = curves.plot_position_loss(losses, tmp_path / "p.png", unit="char",
                                        num_windows=12, title="t")
    assert numbers["position"] == list(range(1, 61))
    assert numbers["loss"] == losses.tolist()
    assert numbers["mean"] == pytest.approx(losses.mean(), abs=1e-12)
    # The bold line: the mean over positions s with ceil(t / 1.2) <= s <= floor(1.2 t).
    reference = [losses[math.ceil(t / 1.2 - 1e-9) - 1 : math.floor(t * 1.2 + 1e-9)].mean()
                 for t in range(1, 61)]
    np.testing.assert_allclose(numbers["smoothed"], reference, rtol=0, atol=1e-12)
    assert numbers["smoothed"][:4] == losses[:4].tolist()  # the first positions unsmoothed
    check_png(tmp_path / "p.png")
    # Short windows: no smoothing, markers on the one line.
    assert curves.plot_position_loss(losses[:7], tmp_path / "q.png")["smoothed"] is None


def test_write_training_plots_caps_windows(tmp_path, rng):
    model = tiny_model()
    ids = rng.integers(0, VOCABULARY, 7 * 10 + 1)
    dataset = LanguageModelDataset(ids, 7, 2, shuffle=False)  # 5 batches, 10 windows
    history = {"loss": [2.4, 2.3], "val_loss": [2.41, 2.39], "best_epoch": 2,
               "best_val_loss": 2.39}
    written = curves.write_training_plots(tmp_path, history, model, dataset,
                                          model_label="LSTM(8)", max_windows=3)
    assert written == ["curves.png", "position_loss.json", "position_loss.png"]
    report = json.loads((tmp_path / "position_loss.json").read_text())
    assert (report["windows_used"], report["windows_available"], report["capped"]) == (3, 10, True)
    assert report["position"] == list(range(1, 8)) and report["unit"] == "nats/char"
    x, y = windows(ids, 7)
    reference = numpy_position_loss(model.predict(x[:3], verbose=0), y[:3])
    np.testing.assert_allclose(report["loss"], reference, rtol=0, atol=1e-5)
    assert report["mean_loss"] == pytest.approx(float(np.mean(report["loss"])), abs=1e-12)
    for name in ("curves.png", "position_loss.png"):
        check_png(tmp_path / name)


QUICK = ["--epochs", "2", "--max-tokens", "8000", "--batch-size", "8",
         "--sequence-length", "24", "--units", "16"]


@pytest.mark.slow
def test_train_writes_curves_and_position_loss(tmp_path, capsys, monkeypatch):
    import keraseq
    import keraseq.cli as cli
    from keraseq.cli import main
    from keraseq.text import Vocabulary, load_corpus, split

    monkeypatch.setattr(cli, "SAMPLE_LENGTH", 20)  # the sample is not what is tested
    drawn = {}

    def recording(function, key):
        def wrapper(*args, **kwargs):
            drawn[key] = function(*args, **kwargs)
            return drawn[key]
        return wrapper

    monkeypatch.setattr(curves, "plot_curves", recording(curves.plot_curves, "curves"))
    monkeypatch.setattr(curves, "plot_position_loss",
                        recording(curves.plot_position_loss, "position"))
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    assert "curves.png, position_loss.json, position_loss.png" in captured.out
    check_png(out / "curves.png")
    check_png(out / "position_loss.png")
    assert not list(out.glob("*.partial")) and not list(tmp_path.glob(".*"))

    # The curves drawn are history.json's numbers, the kept epoch marked.
    history = json.loads((out / "history.json").read_text())
    assert drawn["curves"]["drawn_loss"] == history["loss"]
    assert drawn["curves"]["drawn_val_loss"] == history["val_loss"]
    assert drawn["curves"]["best_epoch"] == history["best_epoch"]
    assert drawn["curves"]["best_val_loss"] == history["best_val_loss"]

    # The position loss is the kept model's, on every validation window: equal to a
    # numpy cross-entropy of model.keras's logits, its mean to the evaluated loss.
    report = json.loads((out / "position_loss.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert report["capped"] is False
    assert report["windows_used"] == report["windows_available"]
    assert drawn["position"]["loss"] == report["loss"]
    vocabulary = Vocabulary.load(out / "vocabulary.json")
    ids = vocabulary.encode(load_corpus("shakespeare"))[:8000]
    _, validation_ids = split(ids, validation_fraction=0.1)
    dataset = LanguageModelDataset(validation_ids, 24, 8, shuffle=False)
    x = np.concatenate([dataset[i][0] for i in range(len(dataset))])
    y = np.concatenate([dataset[i][1] for i in range(len(dataset))])
    assert len(x) == report["windows_used"]
    model = keraseq.load_model(out / "model.keras")
    reference = numpy_position_loss(model.predict(x, verbose=0), y)
    np.testing.assert_allclose(report["loss"], reference, rtol=0, atol=1e-5)
    assert abs(report["mean_loss"] - config["validation_loss_nats"]) <= 1e-4
    assert abs(report["mean_loss"] - history["best_val_loss"]) <= 1e-4


@pytest.mark.slow
def test_train_survives_a_failing_plot(tmp_path, capsys, monkeypatch):
    """A plot never costs the trained model: savefig raising leaves no PNG (no
    partial file either), one warning line per PNG on stderr, exit code 0, and
    every other file written, position_loss.json included."""
    import matplotlib.figure

    import keraseq.cli as cli
    from keraseq.cli import main

    monkeypatch.setattr(cli, "SAMPLE_LENGTH", 20)

    def failing_savefig(self, name, *args, **kwargs):
        with open(name, "wb") as handle:  # a partial file, as a crash mid-write leaves
            handle.write(PNG_SIGNATURE)
        raise OSError("No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing_savefig)
    out = tmp_path / "run"
    assert main(["train", *QUICK[:1], "1", *QUICK[2:], "--out", str(out)]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 2, captured.err
    for line, name in zip(warnings, ("curves.png", "position_loss.png")):
        assert line.startswith(f"keraseq: warning: could not write {name} (OSError: No space")
        assert line.endswith("the model and the other files are saved")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "history.json", "model.keras", "position_loss.json", "sample.txt",
        "vocabulary.json"]
    assert not list(tmp_path.glob(".*")), "staging directory left behind"
    assert "position_loss.json" in captured.out and "curves.png" not in captured.out
