"""Training curves and loss by position: what `keraseq train` draws next to
`history.json`.

* `plot_curves(history, path)`: training and validation loss per epoch, in
  nats per token (character or word), with the kept (best validation) epoch
  marked. The numbers are those of `history.json`.
* `position_loss(model, dataset)`: the mean cross-entropy of `model` at each
  position `t = 1 … sequence_length` of the validation windows. Position `t`
  predicts token `t + 1` from the `t` tokens read so far, so the curve shows
  how much a longer context helps. Its mean over positions is the validation
  loss (equal to `model.evaluate`'s when every window is used).
* `plot_position_loss(losses, path)`: that curve as a PNG.
* `write_training_plots(directory, ...)`: the three files the train command
  writes (`curves.png`, `position_loss.png`, `position_loss.json`).

Every file is written atomically (`keraseq.inspect._plot`): an error while
plotting leaves no partial PNG and never replaces a good one.
"""

import math

import numpy as np

from keraseq.inspect._plot import pyplot, save_figure, save_json

__all__ = [
    "DEFAULT_MAX_WINDOWS",
    "plot_curves",
    "plot_position_loss",
    "position_loss",
    "validation_windows",
    "write_training_plots",
]

DEFAULT_MAX_WINDOWS = 1024
"""Most validation windows `write_training_plots` evaluates (the first ones)."""

_LOG2 = math.log(2.0)


def _unit_label(unit):
    return f"nats/{unit}"


def _bits_axis(axes, unit):
    """A right-hand axis with the same loss in bits per token."""
    secondary = axes.secondary_yaxis(
        "right", functions=(lambda nats: nats / _LOG2, lambda bits: bits * _LOG2)
    )
    secondary.set_ylabel(f"bits/{unit}")
    return secondary


def _check_unit(unit):
    if not isinstance(unit, str) or not unit:
        raise ValueError(f"`unit` must be a non-empty string. Received: unit={unit!r}")


def plot_curves(history, path, title=None, unit="char"):
    """Plot the training and validation loss per epoch, best epoch marked.

    Epochs are numbered from 1. The kept epoch is `history["best_epoch"]` when
    present (as `keraseq train` writes it), else the epoch of the lowest finite
    validation loss. Non-finite losses (a diverged epoch) are left out of the
    lines.

    Args:
        history: dict with lists `"loss"` and, optionally, `"val_loss"` (one
            float per epoch, nats per token), and optionally `"best_epoch"`
            (1-based) and `"best_val_loss"`: the content of `history.json`, or
            `model.fit(...).history`.
        path: where the PNG goes (written atomically).
        title: str or None (default): the figure title; None gives
            "Training curves".
        unit: str, default `"char"`: the token unit of the loss axis
            (`"char"` or `"word"`).

    Returns:
        A dict of the numbers drawn, read back from the figure's lines:
        `"epoch"` (list of ints), `"loss"`, `"val_loss"` (lists of floats,
        nats per token; `val_loss` empty when absent), `"best_epoch"` (int or
        None), `"best_val_loss"` (float or None) and `"unit"`.

    Raises:
        ValueError: naming `history` when it has no `"loss"` list, or the
            validation list has another length; naming `unit` when it is not a
            non-empty string.

    Example:

    ```python
    history = json.load(open("runs/shakespeare-char-lstm/history.json"))
    plot_curves(history, "curves.png", title="LSTM(256), char level")
    ```
    """
    _check_unit(unit)
    if not isinstance(history, dict) or not isinstance(history.get("loss"), (list, tuple)):
        received = (f"keys {sorted(history)}" if isinstance(history, dict)
                    else f"type {type(history).__name__}")
        raise ValueError(
            "`history` must be a dict with a list of per-epoch losses under 'loss'. "
            f"Received: history with {received}"
        )
    loss = np.asarray(history["loss"], dtype=np.float64)  # (epochs,)
    val_loss = np.asarray(history.get("val_loss", []), dtype=np.float64)  # (epochs,) or (0,)
    if val_loss.size and val_loss.shape != loss.shape:
        raise ValueError(
            "`history` must hold as many validation losses as training losses. "
            f"Received: history with {loss.size} 'loss' and {val_loss.size} 'val_loss' values"
        )
    epochs = np.arange(1, loss.size + 1)
    best_epoch = history.get("best_epoch")
    if best_epoch is None and np.isfinite(val_loss).any():
        best_epoch = int(np.nanargmin(np.where(np.isfinite(val_loss), val_loss, np.nan))) + 1
    best_val_loss = None
    if best_epoch is not None:
        best_epoch = int(best_epoch)
        best_val_loss = history.get("best_val_loss")
        best_val_loss = float(val_loss[best_epoch - 1] if best_val_loss is None
                              else best_val_loss)

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7.0, 4.2))
    drawn = {}
    finite = np.isfinite(loss)
    (line,) = axes.plot(epochs[finite], loss[finite], "o-", color="tab:blue",
                        label="training (mean over the epoch's batches)")
    drawn["loss"] = line
    if val_loss.size:
        finite = np.isfinite(val_loss)
        (line,) = axes.plot(epochs[finite], val_loss[finite], "s-", color="tab:orange",
                            label="validation (after the epoch)")
        drawn["val_loss"] = line
    if best_epoch is not None:
        axes.axvline(best_epoch, color="0.55", linestyle=":", linewidth=1.2, zorder=0)
        axes.plot([best_epoch], [best_val_loss], marker="*", markersize=17, linestyle="none",
                  color="tab:red", markeredgecolor="black", zorder=5,
                  label=f"kept: epoch {best_epoch}, {best_val_loss:.3f} {_unit_label(unit)}")
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"cross-entropy loss ({_unit_label(unit)})")
    axes.set_xticks(epochs if loss.size <= 20 else
                    np.unique(np.linspace(1, loss.size, 11).round().astype(int)))
    axes.set_xlim(0.5, loss.size + 0.5)
    _bits_axis(axes, unit)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=9)
    axes.set_title(title or "Training curves", fontsize=11)

    # The numbers behind the picture, read back from what was drawn.
    numbers = {
        "epoch": [int(e) for e in epochs],
        "loss": [float(v) for v in loss],
        "val_loss": [float(v) for v in val_loss],
        "drawn_loss": [float(v) for v in drawn["loss"].get_ydata()],
        "drawn_val_loss": ([float(v) for v in drawn["val_loss"].get_ydata()]
                           if "val_loss" in drawn else []),
        "best_epoch": best_epoch,
        "best_val_loss": best_val_loss,
        "unit": _unit_label(unit),
    }
    save_figure(figure, path)
    return numbers


def validation_windows(dataset, max_windows=None):
    """The `(x, y)` windows of a dataset, the first `max_windows` of them.

    Args:
        dataset: a tuple `(x, y)` of integer arrays `(num_windows,
            sequence_length)`, or a `keras.utils.PyDataset` of such batches
            (e.g. `keraseq.text.LanguageModelDataset(..., shuffle=False)`,
            whose windows come in corpus order).
        max_windows: positive int or None (default, all windows).

    Returns:
        `(x, y, available)`: int32 arrays `(n, sequence_length)` with
        `n = min(available, max_windows)`, and the number of windows the
        dataset holds.

    Raises:
        ValueError: naming `max_windows` when it is not a positive integer, or
            `dataset` when it holds no windows or `x` and `y` differ in shape.
    """
    if max_windows is not None and (isinstance(max_windows, bool)
                                    or not isinstance(max_windows, (int, np.integer))
                                    or max_windows < 1):
        raise ValueError(
            "`max_windows` must be a positive integer or None. "
            f"Received: max_windows={max_windows!r}"
        )
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        x, y = (np.asarray(a) for a in dataset)
        available = len(x)
        x, y = x[:max_windows], y[:max_windows]
    else:
        xs, ys, count = [], [], 0
        for index in range(len(dataset)):
            if max_windows is not None and count >= max_windows:
                break
            bx, by = dataset[index][:2]
            xs.append(np.asarray(bx))
            ys.append(np.asarray(by))
            count += len(xs[-1])
        if not xs:
            raise ValueError(f"`dataset` holds no windows. Received: dataset={dataset!r}")
        batch_rows = getattr(dataset, "batch_size", None) or len(xs[0])
        available = max(count, len(dataset) * batch_rows)
        x = np.concatenate(xs)[:max_windows]
        y = np.concatenate(ys)[:max_windows]
    if x.ndim != 2 or x.shape != y.shape or len(x) == 0:
        raise ValueError(
            "`dataset` must give windows x and y of the same shape "
            f"(num_windows, sequence_length). Received: x {x.shape}, y {y.shape}"
        )
    return x.astype(np.int32), y.astype(np.int32), int(available)


def position_loss(model, dataset, max_windows=None, batch_size=64):
    """Mean next-token cross-entropy at each position of the windows.

    For windows `x, y` of shape `(num_windows, sequence_length)` and the
    model's logits `z = model(x)`, position `t` (1-based) gets

        loss[t] = mean_n ( logsumexp(z[n, t]) - z[n, t, y[n, t]] )

    in nats per token: the loss of predicting token `t + 1` after reading `t`
    tokens of the window. Recurrent models start each window from a zero
    state, so `loss[1]` is the loss with one token of context. The mean of
    `loss` over positions is the mean over all tokens, i.e. `model.evaluate`'s
    loss on the same windows (full batches).

    The logits are computed in batches with `model.predict_on_batch` (dropout
    off) and the cross-entropy with
    `keras.losses.sparse_categorical_crossentropy(from_logits=True)` in
    float32 (the training loss); the sums over windows are float64.

    Args:
        model: a Keras model mapping int32 tokens `(batch_size,
            sequence_length)` to logits `(batch_size, sequence_length,
            vocabulary_size)` (e.g. from `keraseq.models.language_model`).
        dataset: `(x, y)` arrays or a `PyDataset` of `(x, y)` batches, see
            `validation_windows`.
        max_windows: positive int or None (default: every window): use only
            the first `max_windows` windows.
        batch_size: positive int, default 64: windows per forward pass.

    Returns:
        A float64 numpy array `(sequence_length,)`: nats per token at
        positions 1 … sequence_length (index 0 is position 1).

    Raises:
        ValueError: naming `max_windows`, `batch_size` or `dataset` for a bad
            value (see `validation_windows`).

    Example:

    ```python
    x, y = keraseq.text.windows(validation_ids, sequence_length=100)
    losses = position_loss(model, (x, y))
    print(losses[0], losses[-1])  # one character of context vs 100
    ```
    """
    from keraseq._keras import import_keras

    keras = import_keras()
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}"
        )
    x, y, _ = validation_windows(dataset, max_windows)
    totals = np.zeros(x.shape[1], dtype=np.float64)  # (sequence_length,)
    for start in range(0, len(x), batch_size):
        logits = model.predict_on_batch(x[start : start + batch_size])  # (B, L, V)
        logits = keras.ops.cast(logits, "float32")
        per_token = keras.losses.sparse_categorical_crossentropy(
            y[start : start + batch_size], logits, from_logits=True
        )  # (B, L)
        totals += keras.ops.convert_to_numpy(per_token).astype(np.float64).sum(axis=0)
    return totals / len(x)


_SMOOTH = 1.2


def _log_smooth(values):
    """Mean of `values` over positions s with t/1.2 <= s <= 1.2·t (1-based): a
    window as wide on the log axis everywhere, so the first positions, where
    the loss falls fastest, stay unsmoothed."""
    positions = np.arange(1, values.size + 1, dtype=np.float64)
    smoothed = np.empty_like(values)
    for index, t in enumerate(positions):
        inside = (positions >= t / _SMOOTH - 1e-9) & (positions <= t * _SMOOTH + 1e-9)
        smoothed[index] = values[inside].mean()
    return smoothed


def plot_position_loss(losses, path, title=None, unit="char", num_windows=None,
                       evaluated_loss=None):
    """Plot the validation loss against the position in the sequence.

    Args:
        losses: 1-D array-like, nats per token at positions 1 … L (from
            `position_loss`).
        path: where the PNG goes (written atomically).
        title: str or None (default): the figure title.
        unit: str, default `"char"`: token unit of the loss axis.
        num_windows: int or None: the number of windows averaged, shown in the
            legend.
        evaluated_loss: float or None: a reference line, e.g. the validation
            loss of `model.evaluate` (by default the mean of `losses`).

    Returns:
        A dict of the numbers drawn: `"position"` (1 … L), `"loss"` (nats per
        token at each position, read back from the figure), `"smoothed"` (the
        bold line drawn when L > 30: the mean over positions within a factor
        1.2 of t; None otherwise), `"mean"`, `"unit"`.

    Raises:
        ValueError: naming `losses` when it is not a non-empty 1-D array of
            finite numbers, or `unit`.

    Example:

    ```python
    losses = position_loss(model, (x_val, y_val))
    plot_position_loss(losses, "position_loss.png", title="LSTM(256), char level")
    ```
    """
    _check_unit(unit)
    values = np.asarray(losses, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(
            "`losses` must be a non-empty 1-D array of finite numbers. "
            f"Received: losses with shape {values.shape}"
        )
    positions = np.arange(1, values.size + 1)
    mean = float(values.mean())
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7.0, 4.2))
    windows = f" over {num_windows:,} windows" if num_windows else ""
    smooth = values.size > 30
    (line,) = axes.plot(positions, values, "-", color="tab:blue",
                        linewidth=0.9 if smooth else 1.6, alpha=0.45 if smooth else 1.0,
                        marker=None if smooth else "o", markersize=3,
                        label=f"validation loss at position t{windows}")
    smoothed = _log_smooth(values) if smooth else None
    if smooth:
        axes.plot(positions, smoothed, "-", color="tab:blue", linewidth=2.2,
                  label=f"smoothed (mean over positions t/{_SMOOTH:g} … t·{_SMOOTH:g})")
    reference = mean if evaluated_loss is None else float(evaluated_loss)
    axes.axhline(reference, color="tab:orange", linestyle="--", linewidth=1.2,
                 label=f"mean over all positions: {reference:.3f} {_unit_label(unit)}")
    # Mark the two ends: one token of context, and the whole window.
    ends = sorted({1, int(values.size)})
    axes.plot(ends, values[np.array(ends) - 1], "o", color="tab:red", markersize=7, zorder=5,
              label=", ".join(f"t = {t}: {values[t - 1]:.2f}" for t in ends)
              + f" {_unit_label(unit)}")
    axes.set_xscale("log")
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
             if t < values.size * 0.8] + [int(values.size)]
    axes.set_xticks(ticks)
    axes.set_xticklabels([str(t) for t in ticks])
    axes.xaxis.set_minor_formatter(plt.NullFormatter())
    axes.set_xlim(0.9, values.size * 1.1)
    axes.set_xlabel(f"position t in the window ({unit}s of context read, log scale)")
    axes.set_ylabel(f"cross-entropy loss ({_unit_label(unit)})")
    _bits_axis(axes, unit)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="best", fontsize=9)
    axes.set_title(title or "Validation loss by position", fontsize=11)
    numbers = {
        "position": [int(t) for t in positions],
        "loss": [float(v) for v in line.get_ydata()],
        "smoothed": None if smoothed is None else [float(v) for v in smoothed],
        "mean": mean,
        "unit": _unit_label(unit),
    }
    save_figure(figure, path)
    return numbers


def write_training_plots(directory, history, model, validation_data, model_label="model",
                         unit="char", max_windows=DEFAULT_MAX_WINDOWS, warn=None):
    """Write `curves.png`, `position_loss.json` and `position_loss.png` into
    `directory` (what `keraseq train` does with its kept model).

    Each file is attempted on its own: a failure is reported through `warn`
    (one line) and the other files are still written; nothing half-written is
    left behind. `position_loss.json` is written before its PNG, so the numbers
    survive a plotting failure.

    Args:
        directory: the output (or staging) directory.
        history: dict as in `history.json` (see `plot_curves`).
        model: the kept model.
        validation_data: the validation windows (see `validation_windows`).
        model_label: str, default `"model"`: names the model in the titles.
        unit: `"char"` or `"word"`, default `"char"`.
        max_windows: positive int or None, default `DEFAULT_MAX_WINDOWS`: at
            most this many validation windows (the first ones) are evaluated
            for the position loss; the JSON says how many were used.
        warn: callable taking one line, or None (default: raise the error).

    Returns:
        A list of the file names written.

    Raises:
        Whatever writing a file raised, when `warn` is None; with `warn`,
        nothing (`KeyboardInterrupt` and other `BaseException`s always
        propagate).

    Example:

    ```python
    write_training_plots("runs/lstm", history, model, validation_dataset,
                         model_label="LSTM(256), char level", warn=print)
    ```
    """
    from pathlib import Path

    directory = Path(directory)
    written = []

    def attempt(name, write):
        try:
            write()
            written.append(name)
            return True
        except Exception as error:  # never KeyboardInterrupt: those propagate
            if warn is None:
                raise
            message = " ".join(f"{type(error).__name__}: {error}".split())
            warn(f"could not write {name} ({message})")
            return False

    attempt("curves.png", lambda: plot_curves(
        history, directory / "curves.png", unit=unit,
        title=f"Training curves: {model_label}"))

    result = {}

    def numbers():
        x, y, available = validation_windows(validation_data, max_windows)
        losses = position_loss(model, (x, y))
        result.update(losses=losses, windows=len(x))
        save_json({
            "description": "mean next-token cross-entropy of the kept model at each "
                           "position t of the validation windows (t tokens of context read)",
            "model": model_label,
            "unit": _unit_label(unit),
            "sequence_length": int(x.shape[1]),
            "position": list(range(1, x.shape[1] + 1)),
            "loss": [float(v) for v in losses],
            "mean_loss": float(losses.mean()),
            "windows_used": int(len(x)),
            "windows_available": int(available),
            "capped": bool(len(x) < available),
            "max_windows": max_windows,
            "note": ("the first windows_used of the validation windows (corpus order)"
                     if len(x) < available else "every validation window"),
        }, directory / "position_loss.json")

    if attempt("position_loss.json", numbers):
        attempt("position_loss.png", lambda: plot_position_loss(
            result["losses"], directory / "position_loss.png", unit=unit,
            num_windows=result["windows"],
            title=f"Validation loss by position: {model_label}"))
    return written
