"""Training speed of keraseq's recurrent layers as a ratio to the Keras built-ins.

A next-token LM step (Embedding → recurrent layer → Dense, sparse CE, Adam) is
timed for keraseq's layer and for the Keras built-in with the same shapes, in
the same process, interleaved, repeated; the median tokens/s of each and their
ratio are printed (and written as JSON with --json).

    KERAS_BACKEND=jax python benchmarks/recurrent_speed.py --units 256 --batch-size 64
"""

import argparse
import os
import platform
import statistics
import time

import keras
import numpy as np

import keraseq


def build(layer_class, units, vocabulary, embedding):
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(vocabulary, embedding)(tokens)
    x = layer_class(units, return_sequences=True)(x)
    model = keras.Model(tokens, keras.layers.Dense(vocabulary)(x))
    model.compile(
        keras.optimizers.Adam(1e-3, global_clipnorm=1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def tokens_per_second(model, x, y, steps):
    model.train_on_batch(x, y)  # compile / warm up
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * x.size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sequence-length", type=int, default=100)
    parser.add_argument("--vocabulary", type=int, default=66)
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if args.json:  # refused before measuring, not after
        from keraseq import _atomic

        try:
            _atomic.check_destination(args.json)
        except OSError as error:
            parser.error(f"--json {args.json!r}: {error.strerror}: {error.filename}")

    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.sequence_length)
    x = rng.integers(0, args.vocabulary, shape).astype("int32")
    y = rng.integers(0, args.vocabulary, shape).astype("int32")
    pairs = {
        "LSTM": (keraseq.LSTM, keras.layers.LSTM),
        "SimpleRNN": (keraseq.SimpleRNN, keras.layers.SimpleRNN),
    }
    results = {
        "backend": keras.backend.backend(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "precision": "float32",
        "shapes": vars(args),
        "layers": {},
    }
    for name, (ours_class, keras_class) in pairs.items():
        ours = build(ours_class, args.units, args.vocabulary, args.embedding)
        theirs = build(keras_class, args.units, args.vocabulary, args.embedding)
        timings = {"keraseq": [], "keras": []}
        for _ in range(args.repeats):  # interleaved, so drifts in load hit both
            timings["keraseq"].append(tokens_per_second(ours, x, y, args.steps))
            timings["keras"].append(tokens_per_second(theirs, x, y, args.steps))
        medians = {k: statistics.median(v) for k, v in timings.items()}
        ratio = medians["keraseq"] / medians["keras"]
        results["layers"][name] = {**medians, "ratio": ratio}
        print(
            f"{keras.backend.backend():10s} {name:9s} keraseq {medians['keraseq']:9.0f} tok/s"
            f"  keras {medians['keras']:9.0f} tok/s  ratio {ratio:.2f}"
        )
    if args.json:
        from keraseq import _atomic

        _atomic.write_json(args.json, results, indent=2)


if __name__ == "__main__":
    main()
