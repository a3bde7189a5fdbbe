"""Simple RNN (tanh), IRNN (ReLU + identity) and LSTM on the same text: loss and gradient flow.

Three character-level language models, trained on the same slice of a bundled
corpus with the same data order, optimizer (Adam, learning rate 2e-3, gradients
clipped to global norm 1, as `keraseq train`) and seed:

* `rnn-tanh`: `keraseq.models.language_model("rnn")`: a tanh `SimpleRNN` with
  Keras's default initialisation (orthogonal recurrent kernel);
* `rnn-relu-identity`: the same with `activation="relu"` and
  `recurrent_initializer="identity"` (IRNN, Le, Jaitly & Hinton 2015,
  https://arxiv.org/abs/1504.00941);
* `lstm`: `keraseq.models.language_model("lstm")` (forget-gate bias 1).

It prints each model's validation loss (nats and bits per character), and
measures with `keraseq.inspect.gradients` how the gradient of the loss at the
last step `T` reaches back to earlier hidden states, `‖∂ℓ_T/∂h_t‖` for
t = 1 … T, averaged over held-out windows, together with the global gradient
norm before and after clipping -- once at initialisation and once after
training. Both plots and their numbers are written to `--out`
(`gradients_init.png/.json`, `gradients_trained.png/.json`).

Run (any backend; a few CPU minutes with the defaults):

    KERAS_BACKEND=jax python examples/compare_recurrent.py
    KERAS_BACKEND=torch python examples/compare_recurrent.py --max-tokens 50000 --epochs 1

Flags: `--corpus`, `--max-tokens` (the slice), `--epochs`, `--units`,
`--sequence-length`, `--batch-size`, `--gradient-sequences`, `--seed`, `--out`.

What it printed here (JAX, Keras 3.15.1, 2-core CPU shared with other jobs,
50 s wall; |g_t| is the mean over sequences of the L2 norm of ∂ℓ_T/∂h_t):

    Validation loss after 2 epochs of 56 steps (uniform guess: 4.190 nats/char):
      model              nats/char bits/char accuracy train loss   time
      rnn-tanh               2.389     3.447    0.337      2.465     3s
      rnn-relu-identity      3.074     4.435    0.172      3.190     3s
      lstm                   2.607     3.761    0.288      2.857     9s

    Gradient flow at initialisation:
      model                     |g_1|      |g_T|  |g_1|/|g_T|  global norm   clipped
      rnn-tanh               3.26e-01   1.14e+00     2.87e-01       0.6565    0.6565
      rnn-relu-identity      4.56e-01   1.14e+00     4.01e-01        14.18         1
      lstm                   2.42e-08   1.14e+00     2.12e-08        0.309     0.309

    Gradient flow after 2 epochs:
      model                     |g_1|      |g_T|  |g_1|/|g_T|  global norm   clipped
      rnn-tanh               1.01e-14   1.19e+00     8.49e-15       0.3317    0.3317
      rnn-relu-identity      2.73e-02   1.15e+00     2.37e-02         1.65         1
      lstm                   4.96e-09   1.20e+00     4.13e-09       0.2236    0.2236

Reading it: at initialisation the tanh RNN passes the gradient back 100 steps
almost undiminished (its orthogonal recurrent matrix, with tanh still in its
linear range, preserves norms), while the LSTM's falls by 8 decades: its
forget gates start near sigmoid(1) = 0.73, so a cell state keeps about 0.73^k
of what it held k steps earlier. Training changes the picture: after 112 Adam
steps the tanh RNN's gradient from 100 steps back is down to 1e-14 (6 decades
below the LSTM's), while the IRNN, whose identity recurrence has no squashing,
still passes 2 % of it. The IRNN's initial gradient norm (14) is far above the
clipping threshold; clipping rescales it to 1. Two epochs are far from
convergence: the losses compare early learning speed, not final quality.
"""

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TensorFlow's C++ logs

import keras  # noqa: E402

from keraseq import text  # noqa: E402
from keraseq.inspect import gradients  # noqa: E402
from keraseq.models import compile_language_model, nats_to_bits  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="shakespeare",
                        help="shakespeare, sherlock, irish or a text file (default: shakespeare)")
    parser.add_argument("--max-tokens", type=int, default=200_000,
                        help="characters of the corpus used, from the start (default: 200000)")
    parser.add_argument("--epochs", type=int, default=2, help="default: 2")
    parser.add_argument("--units", type=int, default=128, help="hidden width (default: 128)")
    parser.add_argument("--sequence-length", type=int, default=100, help="T (default: 100)")
    parser.add_argument("--batch-size", type=int, default=32, help="default: 32")
    parser.add_argument("--gradient-sequences", type=int, default=64,
                        help="held-out windows the gradients are averaged over (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument("--out", default="compare_recurrent",
                        help="where the plots and JSON go (default: ./compare_recurrent)")
    args = parser.parse_args()

    started = time.perf_counter()
    epochs = f"{args.epochs} epoch{'' if args.epochs == 1 else 's'}"
    corpus = text.load_corpus(args.corpus)
    vocabulary = text.Vocabulary.from_text(corpus, level="char")
    ids = vocabulary.encode(corpus)[: args.max_tokens]
    train_ids, validation_ids = text.split(ids, validation_fraction=0.1)
    x_val, y_val = text.windows(validation_ids, args.sequence_length)
    probe_x, probe_y = gradients.corpus_windows(validation_ids, args.sequence_length,
                                                args.gradient_sequences)
    print(f"backend {keras.backend.backend()}; {args.corpus}: first {len(ids):,} characters "
          f"(train {len(train_ids):,}, validation {len(validation_ids):,}), vocabulary "
          f"{vocabulary.size}; units {args.units}, T = {args.sequence_length}, "
          f"batch {args.batch_size}, {epochs}")

    models, results = {}, {}
    for name in gradients.MODEL_NAMES:
        keras.utils.set_random_seed(args.seed)  # the same seed for every model
        model = gradients.build_model(name, vocabulary.size, units=args.units)
        models[name] = model
    # Gradient flow at initialisation, all three on the same windows.
    initial = gradients.inspect_gradients(models, probe_x, probe_y,
                                          batch_size=args.batch_size)
    for name, model in models.items():
        compile_language_model(model)  # Adam 2e-3, global_clipnorm=1.0
        train = text.LanguageModelDataset(train_ids, args.sequence_length, args.batch_size,
                                          seed=args.seed)
        began = time.perf_counter()
        history = model.fit(train, epochs=args.epochs, shuffle=False, verbose=0)
        seconds = time.perf_counter() - began
        loss, accuracy = model.evaluate(x_val, y_val, batch_size=64, verbose=0)
        results[name] = dict(loss=loss, accuracy=accuracy, seconds=seconds,
                             train_loss=history.history["loss"][-1])
        print(f"  trained {name:<18} {model.count_params():>8,} parameters  "
              f"validation {loss:.3f} nats/char  ({seconds:.0f} s)", flush=True)
    trained = gradients.inspect_gradients(models, probe_x, probe_y,
                                          batch_size=args.batch_size)

    uniform = math.log(vocabulary.size)
    print(f"\nValidation loss after {epochs} of {len(train)} steps "
          f"(uniform guess: {uniform:.3f} nats/char):")
    print(f"  {'model':<18} {'nats/char':>9} {'bits/char':>9} {'accuracy':>8} "
          f"{'train loss':>10} {'time':>6}")
    for name, r in results.items():
        print(f"  {name:<18} {r['loss']:9.3f} {nats_to_bits(r['loss']):9.3f} "
              f"{r['accuracy']:8.3f} {r['train_loss']:10.3f} {r['seconds']:5.0f}s")

    out = Path(args.out)
    label = (f"{args.corpus} (first {len(ids):,} chars), T = {args.sequence_length}, "
             f"{len(probe_x)} held-out sequences, {args.units} units, backend "
             f"{keras.backend.backend()}")
    for stage, report, when in (("init", initial, "at initialisation"),
                                ("trained", trained, f"after {epochs}")):
        report["corpus"] = args.corpus
        report["max_tokens"] = args.max_tokens
        report["context"] = when
        if stage == "trained":
            for name, r in results.items():
                report["models"][name]["validation_loss_nats"] = float(r["loss"])
        title = (f"Gradient of the last-step loss ℓ_T w.r.t. each hidden state h_t, "
                 f"{when}\n{label}")
        png, data = gradients.write(report, out, title=title, stem=f"gradients_{stage}")
        print(f"\nGradient flow {when} (|g_t| = {gradients.NORM}):")
        print("  " + gradients.summary_table(report).replace("\n", "\n  "))
        print(f"  wrote {png} and {data}")
    print(f"\nTotal time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
