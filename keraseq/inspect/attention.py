"""`keraseq inspect attention`: attention weights per layer and head for a prompt.

For every `keraseq.layers.TransformerBlock` of a model and every head `h`, the
weights

    A_h = softmax(Q_h K_h^T / sqrt(key_dim)),   Q_h = LN(x) W_q,h + b_q,h,
                                                K_h = LN(x) W_k,h + b_k,h

(causal: row `i` is 0 beyond column `i`) that the block's self-attention puts
on each earlier token, read with `TransformerBlock(...,
return_attention_scores=True)`. Row `i` (a query, the token being processed)
sums to 1 over the columns (the keys it looks at). The picture is a grid,
one row of heatmaps per layer and one column per head.
"""

import sys

import numpy as np

from keraseq._keras import import_keras
from keraseq.inspect._plot import pyplot, save_figure, save_json
from keraseq.inspect.gates import (
    check_text,
    describe_run,
    load_run,
    output_directory,
    token_label,
)

MAX_TOKENS_SHOWN = 32


def _blocks(model):
    from keraseq.layers import TransformerBlock

    return [layer for layer in model.layers if isinstance(layer, TransformerBlock)]


def attention_weights(model, vocabulary, text):
    """The attention weights of every transformer block of `model` for `text`.

    The text is encoded with `vocabulary` and run through the model once
    (inference: no dropout); each block is then called on its own input with
    `return_attention_scores=True`.

    Args:
        model: a language model containing `keraseq.layers.TransformerBlock`
            layers (from `keraseq.models.language_model("transformer", ...)`
            or `keraseq train --model transformer`).
        vocabulary: the run's `keraseq.text.Vocabulary`.
        text: str, every token of which is in the vocabulary.

    Returns:
        dict with `"tokens"` (list of str, the `num_tokens` tokens of `text`),
        `"ids"` (int32 array `(num_tokens,)`), `"layers"` (the blocks' names)
        and `"weights"`, a float32 numpy array of shape
        `(num_layers, num_heads, num_tokens, num_tokens)`: `weights[l, h, i, j]`
        is how much query `i` attends to key `j` in head `h` of block `l`.

    Raises:
        ValueError: the model has no TransformerBlock, or `text` is empty or
            has tokens outside the vocabulary.
    """
    keras = import_keras()
    blocks = _blocks(model)
    if not blocks:
        kinds = sorted({type(l).__name__ for l in model.layers if l.weights})
        raise ValueError(
            "`model` has no keraseq TransformerBlock (layers with weights: "
            f"{', '.join(kinds)}); attention weights are a transformer's"
        )
    ids, tokens = check_text(text, vocabulary, flag="`text`")
    inputs = keras.Model(model.inputs, [block.input for block in blocks])
    block_inputs = inputs([ids[None, :]], training=False)
    if not isinstance(block_inputs, (list, tuple)):
        block_inputs = [block_inputs]
    weights = []
    for block, x in zip(blocks, block_inputs):
        _, scores = block(x, training=False, return_attention_scores=True)  # (1, N, T, T)
        scores = keras.ops.convert_to_numpy(keras.ops.cast(scores, "float32"))
        weights.append(scores[0])
    return {
        "tokens": tokens,
        "ids": ids,
        "layers": [block.name for block in blocks],
        "weights": np.stack(weights).astype(np.float32),  # (L, N, T, T)
    }


def plot_attention(result, path, description="", max_tokens=MAX_TOKENS_SHOWN):
    """Draw `result` (from `attention_weights`) as a grid of heatmaps, layers
    (rows) × heads (columns), into `path`.

    Returns:
        dict `{"tokens_shown": int}`.
    """
    plt = pyplot()
    from matplotlib.colors import PowerNorm

    weights = result["weights"]
    num_layers, num_heads, total, _ = weights.shape
    shown = min(total, max_tokens)
    tokens = result["tokens"][:shown]
    labels = [token_label(t) for t in tokens]
    word_level = any(len(t) > 1 for t in tokens)
    panel = min(max(2.4, 0.085 * shown + 0.9), 4.4)
    if word_level:
        panel = min(max(3.0, 0.13 * shown + 1.4), 6.0)
    figure, axes = plt.subplots(num_layers, num_heads,
                                figsize=(panel * num_heads + 1.2, panel * num_layers + 1.0),
                                squeeze=False, constrained_layout=True)
    cmap = plt.get_cmap("magma").with_extremes(bad="#d9d9d9")  # masked (future) keys
    # Square-root colour scale: a head spreading its weight over t keys gives
    # each about 1/t, which a linear scale would draw as black.
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    causal = np.triu(np.ones((shown, shown), dtype=bool), k=1)
    font = 6 if shown > 32 else 7
    image = None
    for layer in range(num_layers):
        for head in range(num_heads):
            axis = axes[layer, head]
            values = np.ma.masked_array(weights[layer, head, :shown, :shown], mask=causal)
            image = axis.imshow(values, cmap=cmap, norm=norm, interpolation="nearest")
            axis.set_title(f"{result['layers'][layer]}, head {head}", fontsize=8)
            axis.set_xticks(np.arange(shown))
            axis.set_yticks(np.arange(shown))
            axis.tick_params(length=0, pad=1)
            if layer == num_layers - 1:
                axis.set_xticklabels(labels, fontsize=font, rotation=90 if word_level else 0,
                                     family=None if word_level else "DejaVu Sans Mono")
                axis.set_xlabel("key (attended token)", fontsize=8)
            else:
                axis.set_xticklabels([])
            if head == 0:
                axis.set_yticklabels(labels, fontsize=font,
                                     family=None if word_level else "DejaVu Sans Mono")
                axis.set_ylabel("query (token being read)", fontsize=8)
            else:
                axis.set_yticklabels([])
    bar = figure.colorbar(image, ax=axes, shrink=0.6, pad=0.01)
    bar.set_ticks([0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0])
    bar.set_label("attention weight, square-root scale (each row sums to 1; "
                  "grey: future tokens, masked)", fontsize=8)
    unit = "words" if word_level else "characters"
    note = f"first {shown} of {total} {unit}" if shown < total else f"{total} {unit}"
    legend = "↵ newline" if word_level else "␣ space, ↵ newline"
    figure.suptitle(f"Attention weights per layer and head — {description}\n"
                    f"prompt: {note}; {legend}", fontsize=10)
    save_figure(figure, path)
    return {"tokens_shown": shown}


def run(args):
    """`keraseq inspect attention DIR --text TEXT [--out DIR]`."""
    if not args.text:
        raise ValueError("--text is empty: give the prompt to run through the model")
    model, vocabulary, config = load_run(args.dir, unsafe=args.unsafe)
    if not _blocks(model):
        raise ValueError(
            f"DIR {str(args.dir)!r} holds a {config.get('model', 'non-transformer')} model: "
            "`inspect attention` needs a transformer run (keraseq train --model transformer)"
        )
    ids, tokens = check_text(args.text, vocabulary, flag="--text")
    text = args.text
    window = config.get("sequence_length")
    if window and len(ids) > window:
        # Positions past the training window were never seen (and the weights
        # grow with the square of the length): use the first window, as the
        # model reads it.
        text = "".join(tokens[:window]) if vocabulary.level == "char" else " ".join(tokens[:window])
        print(f"note: --text has {len(ids)} tokens; using the first {window}, the model's "
              "--sequence-length", file=sys.stderr)
    result = attention_weights(model, vocabulary, text)
    out = output_directory(args)
    description = describe_run(config, model)
    shown = plot_attention(result, out / "attention.png", description)
    weights = result["weights"]
    save_json(
        {
            "model": description,
            "dir": str(args.dir),
            "tokens": result["tokens"],
            "ids": [int(i) for i in result["ids"]],
            "layers": result["layers"],
            "num_heads": int(weights.shape[1]),
            "layout": "weights[layer][head][query i][key j]: how much token i attends to "
                      "token j (rows sum to 1; 0 for j > i, causal)",
            "weights": np.round(weights.astype(np.float64), 6).tolist(),  # 6 decimals
            **shown,
        },
        out / "attention.json",
    )
    print(f"wrote {out / 'attention.png'} and {out / 'attention.json'} "
          f"({len(result['tokens'])} tokens, {len(result['layers'])} layers × "
          f"{weights.shape[1]} heads)")
    return 0
