"""`keraseq inspect gates`: an LSTM's gate activations over a text, as heatmaps.

For every token of the text (a character for a char-level model) the LSTM's
four gates, read with `keraseq.layers.LSTM.gate_activations`:

    i_t = sigmoid(z_i)   input gate      how much of the candidate is written
    f_t = sigmoid(z_f)   forget gate     how much of c_{t-1} is kept
    g_t = tanh(z_c)      candidate       what would be written
    o_t = sigmoid(z_o)   output gate     how much of tanh(c_t) is shown as h_t

with `z = x_t · kernel + h_{t-1} · recurrent_kernel + bias` (see
`keraseq.layers.LSTM`). The picture has one heatmap per gate: units on the
y-axis, the tokens of the text on the x-axis, one colour scale for the three
sigmoid gates (0 to 1) and one for the candidate (-1 to 1).

This module also holds the helpers the other views of a trained run share
(`load_run`, `describe_run`, `token_label`, `check_text`).
"""

import textwrap
from pathlib import Path

import numpy as np

from keraseq._keras import import_keras
from keraseq.inspect._plot import pyplot, save_figure, save_json

GATES = ("forget", "input", "output", "candidate")
"""The gates drawn, top to bottom (keys of `LSTM.gate_activations`): the three
sigmoid gates, which share a colour scale, then the tanh candidate."""

GATE_SYMBOLS = {"forget": "f", "input": "i", "candidate": "g", "output": "o"}
GATE_RANGES = {"forget": (0.0, 1.0), "input": (0.0, 1.0), "candidate": (-1.0, 1.0),
               "output": (0.0, 1.0)}
MAX_TOKENS_SHOWN = 80
MAX_UNITS_SHOWN = 32

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


# -- shared by the views of a trained run (gates, attention, embeddings) -------
def load_run(directory, unsafe=False):
    """The model, vocabulary and configuration of a `keraseq train` directory.

    Args:
        directory: str or path-like, a directory holding `model.keras`,
            `vocabulary.json` and `config.json`.

    Returns:
        `(model, vocabulary, config)`: a `keras.Model`, a
        `keraseq.text.Vocabulary` and the dict of `config.json`.

    Raises:
        ValueError: one line naming DIR when it is missing, lacks one of the
            three files, or holds a model that cannot be loaded (or one with
            Python code in it, a `Lambda`, unless `unsafe=True`).
    """
    from keraseq._run import load_run, run_directory

    return load_run(run_directory(directory), unsafe=unsafe)


def describe_run(config, model=None):
    """A short description of a run for titles and JSON, e.g.
    `"lstm, 256 units × 1 layer, char-level, shakespeare (jax)"`."""
    config = config or {}
    architecture = config.get("model") or (model.name if model is not None else "model")
    parts = [str(architecture)]
    units, layers = config.get("units"), config.get("layers")
    if units and layers:
        parts.append(f"{units} units × {layers} layer{'s' if layers != 1 else ''}")
    if config.get("level"):
        parts.append(f"{config['level']}-level")
    corpus = config.get("corpus")
    if corpus:
        corpus = Path(str(corpus)).stem if ("/" in str(corpus) or "." in str(corpus)) else corpus
        parts.append(str(corpus))
    text = ", ".join(parts)
    if config.get("backend"):
        text += f" ({config['backend']})"
    return text


def token_label(token):
    """A token as printed on an axis: whitespace made visible (␣, ↵, ⇥)."""
    if len(token) == 1:
        return _VISIBLE.get(token, token)
    return token


def check_text(text, vocabulary, flag="--text"):
    """Token ids of `text`, or a `ValueError` naming `flag`: empty text, no
    tokens, or tokens outside the vocabulary (listed)."""
    from keraseq._tokens import tokenize

    if not text:
        raise ValueError(f"{flag} is empty: give the text to run through the model")
    tokens = tokenize(text, vocabulary.level)
    if not tokens:
        raise ValueError(f"{flag} {text!r} has no {vocabulary.level} tokens")
    unknown = vocabulary.unknown(text)
    if unknown:
        kind = "words" if vocabulary.level == "word" else "characters"
        everything = " (all of them)" if len(set(unknown)) == len(set(tokens)) else ""
        raise ValueError(
            f"{flag} has {kind} outside the vocabulary{everything}: "
            f"{', '.join(repr(t) for t in unknown[:20])}"
        )
    return np.asarray(vocabulary.encode(text), dtype=np.int32), tokens


def output_directory(args):
    """`--out`, or DIR/inspect."""
    return Path(args.out) if args.out else Path(args.dir) / "inspect"


def _layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


# -- the numbers ---------------------------------------------------------------
def gate_activations(model, vocabulary, text, layer=0):
    """The gates of one LSTM layer of `model` at every token of `text`.

    The text is encoded with `vocabulary`, run through the model up to the
    input of the chosen LSTM (the embedding, and the LSTM layers below it),
    and the LSTM's `gate_activations` read at every step (inference: no
    dropout), starting from zero states.

    Args:
        model: a language model containing `keraseq.layers.LSTM` layers (from
            `keraseq.models.language_model("lstm", ...)` or `keraseq train
            --model lstm`).
        vocabulary: the run's `keraseq.text.Vocabulary`.
        text: str, every token of which is in the vocabulary.
        layer: int, default 0: which LSTM layer, counted from the input
            (0 = the first).

    Returns:
        dict with `"tokens"` (list of str, the `num_tokens` tokens of `text`),
        `"ids"` (int32 array `(num_tokens,)`), `"layer"` (the layer's name),
        `"units"` (int) and, for each of `"forget"`, `"input"`, `"candidate"`,
        `"output"`, a float32 numpy array of shape `(units, num_tokens)`:
        column `t` holds the gate after reading token `t`.

    Raises:
        ValueError: the model has no LSTM layer, `layer` is out of range, or
            `text` is empty or has tokens outside the vocabulary.
    """
    keras = import_keras()
    from keraseq.layers import LSTM

    lstms = _layers_of(model, LSTM)
    if not lstms:
        kinds = sorted({type(l).__name__ for l in model.layers if l.weights})
        raise ValueError(
            "`model` has no keraseq LSTM layer (layers with weights: "
            f"{', '.join(kinds)}); gates are an LSTM's"
        )
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not (
        0 <= layer < len(lstms)
    ):
        raise ValueError(
            f"`layer` must be an LSTM layer index in [0, {len(lstms) - 1}] (the model "
            f"has {len(lstms)} LSTM layer{'s' if len(lstms) != 1 else ''}). "
            f"Received: layer={layer!r}"
        )
    target = lstms[int(layer)]
    ids, tokens = check_text(text, vocabulary, flag="`text`")
    # Everything below the LSTM (embedding, lower LSTMs), as a functional model.
    below = keras.Model(model.inputs, target.input)
    features = below([ids[None, :]], training=False)  # (1, T, features)
    gates = target.gate_activations(features)
    result = {
        "tokens": tokens,
        "ids": ids,
        "layer": target.name,
        "units": int(target.units),
    }
    for name in GATES:
        values = keras.ops.convert_to_numpy(keras.ops.cast(gates[name], "float32"))
        result[name] = values[0].T  # (units, T)
    return result


def select_units(result, max_units=MAX_UNITS_SHOWN):
    """Indices of the units drawn, top row first.

    All units when there are at most `max_units`, else the `max_units` whose
    four gates vary most over the text (largest sum of the per-gate standard
    deviations over the tokens shown); either way ordered by their mean forget
    gate, highest first (the units that keep their memory longest on top),
    ties by index."""
    units = result["units"]
    if units <= max_units:
        chosen = np.arange(units)
    else:
        spread = sum(np.std(result[name], axis=1) for name in GATES)  # (units,)
        chosen = np.argsort(-spread, kind="stable")[:max_units]
    keep = np.mean(result["forget"][chosen], axis=1)
    return chosen[np.lexsort((chosen, -keep))]


# -- the picture ---------------------------------------------------------------
def plot_gates(result, path, description="", max_tokens=MAX_TOKENS_SHOWN,
               max_units=MAX_UNITS_SHOWN):
    """Draw `result` (from `gate_activations`) as four heatmaps into `path`.

    Returns:
        dict `{"tokens_shown": int, "units_shown": [unit indices]}`.
    """
    plt = pyplot()
    tokens = result["tokens"]
    shown = min(len(tokens), max_tokens)
    clipped = {name: result[name][:, :shown] for name in GATES}
    units = select_units({**clipped, "units": result["units"]}, max_units)
    word_level = any(len(t) > 1 for t in tokens[:shown])

    width = min(max(6.0, 0.16 * shown + 2.0), 18.0)
    if word_level:
        width = min(max(6.0, 0.28 * shown + 2.0), 24.0)
    row_height = max(1.4, 0.065 * len(units) + 0.5)
    figure, axes = plt.subplots(len(GATES), 1, figsize=(width, row_height * len(GATES) + 1.6),
                                sharex=True, constrained_layout=True)
    images = {}
    for axis, name in zip(axes, GATES):
        low, high = GATE_RANGES[name]
        cmap = "RdBu_r" if name == "candidate" else "viridis"
        images[name] = axis.imshow(clipped[name][units], aspect="auto", interpolation="nearest",
                                   cmap=cmap, vmin=low, vmax=high)
        symbol = GATE_SYMBOLS[name]
        axis.set_ylabel(f"{name} ${symbol}_t$\nunit", fontsize=9)
        step = max(1, int(np.ceil(len(units) / 16)))
        axis.set_yticks(np.arange(0, len(units), step))
        axis.set_yticklabels([str(u) for u in units[::step]], fontsize=6)
    bottom = axes[-1]
    bottom.set_xticks(np.arange(shown))
    labels = [token_label(t) for t in tokens[:shown]]
    bottom.set_xticklabels(labels, fontsize=8 if not word_level else 7,
                           rotation=90 if word_level else 0,
                           family="DejaVu Sans Mono" if not word_level else None)
    bottom.tick_params(axis="x", length=0)
    level = "word" if word_level else "character"
    bottom.set_xlabel(f"input {level} (t →; ␣ space, ↵ newline)" if not word_level
                      else f"input {level} (t →; ↵ newline)")
    sigmoid_axes = [axis for axis, name in zip(axes, GATES) if name != "candidate"]
    bar = figure.colorbar(images["forget"], ax=sigmoid_axes, shrink=0.8, pad=0.01,
                          aspect=30)
    bar.set_label("gate value (sigmoid): 0 = closed, 1 = open", fontsize=8)
    bar = figure.colorbar(images["candidate"], ax=axes[GATES.index("candidate")], pad=0.01,
                          aspect=10)
    bar.set_label("candidate (tanh): -1 to 1", fontsize=8)

    total = len(tokens)
    token_note = (f"first {shown} of {total} {level}s" if shown < total
                  else f"{total} {level}s")
    if len(units) < result["units"]:
        unit_note = (f"{len(units)} of {result['units']} units, those whose gates vary most "
                     "over the text shown")
    else:
        unit_note = f"all {result['units']} units"
    unit_note += ", ordered by mean forget gate (highest on top)"
    title = textwrap.fill(f"LSTM gates of layer {result['layer']} — {description}",
                          int(width * 11), break_on_hyphens=False)
    note = textwrap.fill(f"{token_note}; {unit_note}", int(width * 11), break_on_hyphens=False)
    figure.suptitle(f"{title}\n{note}", fontsize=10)
    save_figure(figure, path)
    return {"tokens_shown": shown, "units_shown": [int(u) for u in units]}


# -- the command ---------------------------------------------------------------
def run(args):
    """`keraseq inspect gates DIR --text TEXT [--layer N] [--out DIR]`."""
    if not args.text:
        raise ValueError("--text is empty: give the text to run through the model")
    model, vocabulary, config = load_run(args.dir, unsafe=args.unsafe)
    from keraseq.layers import LSTM

    lstms = _layers_of(model, LSTM)
    if not lstms:
        raise ValueError(
            f"DIR {str(args.dir)!r} holds a {config.get('model', 'non-LSTM')} model: "
            "`inspect gates` needs an LSTM run (keraseq train --model lstm)"
        )
    layer = getattr(args, "layer", 0) or 0
    if not 0 <= layer < len(lstms):
        raise ValueError(
            f"--layer {layer}: the model has {len(lstms)} LSTM layer"
            f"{'s' if len(lstms) != 1 else ''} (0 to {len(lstms) - 1})"
        )
    check_text(args.text, vocabulary, flag="--text")
    result = gate_activations(model, vocabulary, args.text, layer=layer)
    out = output_directory(args)
    description = describe_run(config, model)
    shown = plot_gates(result, out / "gates.png", description)
    save_json(
        {
            "model": description,
            "dir": str(args.dir),
            "layer": result["layer"],
            "units": result["units"],
            "tokens": result["tokens"],
            "ids": [int(i) for i in result["ids"]],
            "layout": "per gate: units × tokens (row u, column t = the gate of unit u "
                      "after reading token t)",
            # 6 decimals (float32 carries about 7 significant digits).
            "gates": {name: np.round(result[name].astype(np.float64), 6).tolist()
                      for name in GATES},
            "ranges": {name: list(GATE_RANGES[name]) for name in GATES},
            **shown,
        },
        out / "gates.json",
    )
    print(f"wrote {out / 'gates.png'} and {out / 'gates.json'} "
          f"({len(result['tokens'])} tokens, layer {result['layer']}, "
          f"{result['units']} units)")
    return 0
