"""A small GPT-style character language model on Tiny Shakespeare, and what one head attends to.

The model is written out layer by layer (no `keraseq.models` helper):

    tokens (batch, time)
      -> keraseq.TokenAndPositionEmbedding(positional="sine")   token + sinusoidal position
      -> keraseq.TransformerBlock x num_layers                  pre-norm, causal self-attention
      -> keras.layers.LayerNormalization
      -> keras.layers.Dense(vocabulary_size)                    logits (batch, time, vocabulary)

It is trained with plain `model.fit` on `keraseq.text.LanguageModelDataset`
batches of Tiny Shakespeare (1.1M characters, last 10% held out), then the
script prints the validation loss (nats and bits per character), a sample from
`keraseq.generation.generate`, and the attention weights of one head of the
first block on a short prompt. For that it copies the trained block's
layer-norm and attention weights (found by their `Variable.path`) into a
standalone `keras.layers.LayerNormalization` and `keraseq.MultiHeadAttention`
and calls the latter with `use_causal_mask=True, return_attention_scores=True`:
the weights form a lower triangle (query `i` sees keys `j <= i`), each row sums
to 1. The copy is checked against the block itself: with the same weights,
`x + attention(LayerNorm(x))` followed by the block's feedforward half must
give the block's output, so the script recomputes the block from the copied
weights and prints the largest difference.

Run (any backend):

    KERAS_BACKEND=tensorflow python examples/attention_language_model.py
    KERAS_BACKEND=jax python examples/attention_language_model.py --quick

`--quick` trains a smaller model (width 64, 2 epochs) on the first 300k
characters (under 30 s unless the machine is busy). Other flags: `--units`,
`--num-layers`, `--num-heads`, `--epochs`, `--max-chars`, `--sequence-length`,
`--batch-size`, `--learning-rate`, `--sample-length`, `--prompt`, `--head`
(default: the head whose weights are most focused, i.e. of lowest mean
entropy), `--seed`.

On the torch backend a busy machine slows the per-step loop a lot (its OpenMP
threads spin while other jobs hold the cores); `OMP_NUM_THREADS=1` made training
steps 5-12x faster here in that situation.

What it printed here (Keras 3.15.1, 2-core CPU shared with other jobs; wall
times include the imports, "load" is the machine's load average):

    $ KERAS_BACKEND=tensorflow python examples/attention_language_model.py    # 61 s wall at load 3, 105 s at load 7
    2 blocks, width 128, 4 heads: 413,762 parameters
    ...
    Validation after 3 epochs (56 s): loss 1.861 nats/char = 2.684 bits/char, accuracy 0.448  (train loss 1.759)

    Sample (temperature 0.8, 0.5 s):
    ROMEO:
    We this, by come, and my luke unto arm,
    Now his the be thou look me.

    MONNIAS:
    No, good, wif wime, good, ind your capenter's all slaveral
    ...

    Standalone LayerNormalization + keraseq.MultiHeadAttention with the block's weights, then its feedforward: max |difference| from block_0(x) = 1.7e-06
    Attention weights (num_heads, T, T) = (4, 16, 16): largest weight above the diagonal 0.0e+00, rows sum to 1 within 1.2e-07

    Block 0, head 2: row = query character, column = key character (weights x 100, '.' = masked by causality)
             R   O   M   E   O   :   ⏎   I   ␣   w   i   l   l   ␣   g   o
        R  100   .   .   .   .   .   .   .   .   .   .   .   .   .   .   .
        O   32  68   .   .   .   .   .   .   .   .   .   .   .   .   .   .
        M    0  87  13   .   .   .   .   .   .   .   .   .   .   .   .   .
        E    0   3   7  90   .   .   .   .   .   .   .   .   .   .   .   .
        O    0   0   1  20  79   .   .   .   .   .   .   .   .   .   .   .
        :    0   0   0   0   5  95   .   .   .   .   .   .   .   .   .   .
        ⏎    0   0   0   0   2  54  44   .   .   .   .   .   .   .   .   .
        I    0   0   0   0   0   8  62  30   .   .   .   .   .   .   .   .
        ␣    0   0   0   0   0   1   2  23  73   .   .   .   .   .   .   .
        w    0   0   0   0   0   1   1  11  79   8   .   .   .   .   .   .
        i    0   0   0   0   0   0   1   1  50  13  34   .   .   .   .   .
        l    0   0   0   0   1   2   1   1   7   2  60  27   .   .   .   .
        l    0   0   0   0   1   4   1   1   3   1  20  15  54   .   .   .
        ␣    0   0   0   0   0   0   0   0   0   0   0   0   1  98   .   .
        g    0   0   0   0   0   0   0   0   0   0   0   0   0  96   3   .
        o    0   0   0   0   0   0   0   0   0   0   0   0   0  50   3  47

    Per head, over queries 1..T-1: mean weight on the same position / the previous one / further back, and the mean entropy of a row (uniform rows: 2.04 nats):
      head 0: 0.17 / 0.12 / 0.71   entropy 1.96
      head 1: 0.28 / 0.23 / 0.49   entropy 1.57
      head 2: 0.51 / 0.37 / 0.12   entropy 0.67
      head 3: 0.20 / 0.23 / 0.57   entropy 1.80

    KERAS_BACKEND=jax (129 s wall at load 4, 151 s at load 7; its dense layers
    ran about 1.5x slower than TF's on this CPU, Keras's own layers too):
    1.843 nats/char = 2.659 bits/char, accuracy 0.455; head 2 again the most
    focused (entropy 0.29).
    --quick: TF 12 s wall (25 s at load 6), 2.542 nats/char (3.668 bits); JAX
    27 s at load 4, 2.565; torch 12 s at load 1, 2.515.

Reading it: nothing above the diagonal gets weight (the causal mask), every
row sums to 1. Head 2 of the first block looks at the last one or two
characters, and in particular at the space that starts the current word (the
"w", "g" rows put 79% and 96% on the preceding space): a word-boundary
detector. For reference, nanoGPT's character model on this corpus reaches
~1.88 nats after about three minutes on a laptop CPU and ~1.47 on a GPU.
"""

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TensorFlow's C++ logs

import keras
import numpy as np

import keraseq
from keraseq import text
from keraseq.generation import generate
from keraseq.models import nats_to_bits


DEFAULTS = {"units": 128, "epochs": 3, "max_chars": None, "sample_length": 300}
QUICK = {"units": 64, "epochs": 2, "max_chars": 300_000, "sample_length": 120}  # --quick


def build_model(vocabulary_size, units, num_layers, num_heads, sequence_length):
    """Token ids (batch, time) -> next-character logits (batch, time, vocabulary)."""
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keraseq.TokenAndPositionEmbedding(
        vocabulary_size, sequence_length, units, positional="sine", name="embedding"
    )(tokens)  # (batch, time, units)
    for index in range(num_layers):
        x = keraseq.TransformerBlock(
            num_heads, intermediate_dim=4 * units, name=f"block_{index}"
        )(x)  # causal by default
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = keras.layers.Dense(vocabulary_size, name="logits")(x)
    return keras.Model(tokens, logits, name="transformer_language_model")


def block_attention(block, x):
    """Attention output and weights of `block` on its input `x`, from copied weights.

    Returns `(attended, scores)`: `attended = x + MHA(LayerNorm(x))`, the residual
    stream after the attention half, `(batch, time, units)`, and the attention
    weights `(batch, num_heads, time, time)`.
    """
    weights = {w.path.split("/", 1)[1]: w.numpy() for w in block.weights}  # drop "block_i/"
    units = x.shape[-1]
    norm = keras.layers.LayerNormalization(epsilon=block.layer_norm_epsilon)
    norm.build(x.shape)
    norm.set_weights([weights[f"self_attention_layer_norm/{n}"] for n in ("gamma", "beta")])
    attention = keraseq.MultiHeadAttention(block.num_heads, key_dim=units // block.num_heads)
    attention.build(x.shape, x.shape)
    attention.set_weights(
        [
            weights[f"self_attention/{part}/{n}"]
            for part in ("query", "key", "value", "attention_output")
            for n in ("kernel", "bias")
        ]
    )
    h = norm(x)
    output, scores = attention(h, h, use_causal_mask=True, return_attention_scores=True)
    return x + output, scores


def feedforward(block, x):
    """The block's second half, `x + W_out . gelu(W_in . LayerNorm(x) + b_in) + b_out`, in numpy."""
    w = {v.path.split("/", 1)[1]: v.numpy().astype(np.float64) for v in block.weights}
    variance = x.var(-1, keepdims=True)
    h = (x - x.mean(-1, keepdims=True)) / np.sqrt(variance + block.layer_norm_epsilon)
    h = h * w["feedforward_layer_norm/gamma"] + w["feedforward_layer_norm/beta"]
    h = h @ w["feedforward_intermediate_dense/kernel"] + w["feedforward_intermediate_dense/bias"]
    h = 0.5 * h * (1.0 + np.vectorize(math.erf)(h / math.sqrt(2.0)))  # exact GELU
    return x + h @ w["feedforward_output_dense/kernel"] + w["feedforward_output_dense/bias"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and short (< 30 s)")
    parser.add_argument("--units", type=int, help="model width (default 128, --quick 64)")
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--epochs", type=int, help="default 3 (--quick 2)")
    parser.add_argument("--max-chars", type=int, help="train on the first N characters "
                        "(default: all, --quick 300000)")
    parser.add_argument("--sample-length", type=int, help="default 300 (--quick 120)")
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--prompt", default="ROMEO:\nI will go")
    parser.add_argument(
        "--head", type=int, default=None,
        help="which head's weights to print (default: the most focused one, lowest entropy)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:  # --quick changes only what was not given
            setattr(args, name, value)

    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    corpus = text.load_corpus("shakespeare")
    vocabulary = text.Vocabulary.from_text(corpus, level="char")  # built on the whole text
    if args.max_chars:
        corpus = corpus[: args.max_chars]
    train_ids, validation_ids = text.split(vocabulary.encode(corpus), validation_fraction=0.1)
    train = text.LanguageModelDataset(
        train_ids, args.sequence_length, args.batch_size, seed=args.seed
    )
    x_val, y_val = text.windows(validation_ids, args.sequence_length)
    print(
        f"backend={keras.backend.backend()}  corpus: {len(corpus):,} chars, vocabulary size "
        f"{vocabulary.size}, {len(train)} batches of {args.batch_size}x{args.sequence_length} "
        f"per epoch, {len(x_val)} validation windows"
    )

    model = build_model(
        vocabulary.size, args.units, args.num_layers, args.num_heads, args.sequence_length
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    print(
        f"{args.num_layers} blocks, width {args.units}, {args.num_heads} heads: "
        f"{model.count_params():,} parameters"
    )
    began = time.perf_counter()
    history = model.fit(train, validation_data=(x_val, y_val), epochs=args.epochs, verbose=2)
    train_seconds = time.perf_counter() - began
    val_loss, val_accuracy = model.evaluate(x_val, y_val, batch_size=128, verbose=0)
    print(
        f"\nValidation after {args.epochs} epochs ({train_seconds:.0f} s): "
        f"loss {val_loss:.3f} nats/char = {nats_to_bits(val_loss):.3f} bits/char, "
        f"accuracy {val_accuracy:.3f}  (train loss {history.history['loss'][-1]:.3f})"
    )

    # --- Sampling ---------------------------------------------------------------
    began = time.perf_counter()
    sample = generate(
        model, vocabulary, prompt="ROMEO:\n", length=args.sample_length,
        temperature=0.8, seed=args.seed, context_length=args.sequence_length,
    )
    print(f"\nSample (temperature 0.8, {time.perf_counter() - began:.1f} s):\n{sample}\n")

    # --- Attention weights of one head of the first block -------------------------
    prompt = args.prompt
    unknown = vocabulary.unknown(prompt)
    if unknown:
        raise SystemExit(f"--prompt has characters outside the vocabulary: {unknown}")
    ids = vocabulary.encode(prompt)[None, :]  # (1, T)
    x = model.get_layer("embedding")(ids)  # (1, T, units): the first block's input
    block = model.get_layer("block_0")
    attended, scores = block_attention(block, x)
    scores = keras.ops.convert_to_numpy(scores)[0]  # (num_heads, T, T)
    rebuilt = feedforward(block, keras.ops.convert_to_numpy(attended).astype(np.float64))
    actual = keras.ops.convert_to_numpy(block(x))
    difference = np.max(np.abs(rebuilt - actual))
    print(
        "Standalone LayerNormalization + keraseq.MultiHeadAttention with the block's weights, "
        f"then its feedforward: max |difference| from block_0(x) = {difference:.1e}"
    )
    above = scores[:, np.triu(np.ones((len(prompt), len(prompt)), bool), k=1)]  # key j > query i
    print(
        f"Attention weights (num_heads, T, T) = {scores.shape}: largest weight above the "
        f"diagonal {np.max(np.abs(above)):.1e}, rows sum to 1 within "
        f"{np.max(np.abs(scores.sum(-1) - 1)):.1e}"
    )
    # Mean entropy (nats) of each head's rows, queries 1..T-1 (row 0 has one key).
    entropy = -np.sum(scores * np.log(np.maximum(scores, 1e-12)), axis=-1)[:, 1:].mean(axis=-1)
    head_index = int(np.argmin(entropy)) if args.head is None else args.head
    labels = [{" ": "␣", "\n": "⏎"}.get(c, c) for c in prompt]
    head = scores[head_index]  # (T, T): row = query, column = key
    print(f"\nBlock 0, head {head_index}: row = query character, column = key character "
          "(weights x 100, '.' = masked by causality)")
    print("      " + "".join(f"{c:>4s}" for c in labels))
    for i, row in enumerate(head):
        cells = "".join(f"{100 * w:4.0f}" if j <= i else "   ." for j, w in enumerate(row))
        print(f"  {labels[i]:>3s} {cells}")
    # What each head does on average: weight on the query itself and on the character before it.
    uniform = np.mean(np.log(np.arange(2, len(prompt) + 1)))  # a row spread evenly over its keys
    print("\nPer head, over queries 1..T-1: mean weight on the same position / the previous "
          f"one / further back, and the mean entropy of a row (uniform rows: {uniform:.2f} nats):")
    for h, head_scores in enumerate(scores):
        same = np.mean(np.diagonal(head_scores)[1:])
        previous = np.mean(np.diagonal(head_scores, offset=-1))
        print(f"  head {h}: {same:.2f} / {previous:.2f} / {1 - same - previous:.2f}   "
              f"entropy {entropy[h]:.2f}")
    print(f"Total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
