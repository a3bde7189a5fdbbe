"""CPU speed of keraseq's layers as a ratio to the Keras built-ins.

For the current backend (KERAS_BACKEND), in one process, each keraseq layer and
its Keras counterpart are built on the same shapes with the same weights
(copied, and checked equal on one forward pass), then timed side by side:

- forward: `predict_on_batch` of a model holding only the layer;
- train step: `train_on_batch` of that model (MSE to a random target, Adam).

A third contestant is the same keraseq model with the backend fast paths off
(`keraseq.layers._fast_path.enabled(False)`: the explicit `keras.ops` path), to
show what each lever is worth.

The three are interleaved (keraseq, Keras, explicit, ...) after a warm-up,
so drifts in load hit both; the median tokens/s over the repeats and the ratio
keraseq / Keras are printed as a Markdown table.

Pairs: SimpleRNN and LSTM (`keraseq.layers.*` vs `keras.layers.*`), causal
MultiHeadAttention, and a causal pre-norm transformer block
(`keraseq.layers.TransformerBlock` vs the same block built from Keras's
LayerNormalization, MultiHeadAttention and Dense).

    KERAS_BACKEND=jax python benchmarks/cpu_suite.py --quick
    python benchmarks/cpu_suite.py --all-backends   # writes docs/benchmarks_cpu.*

`--all-backends` runs this script once per backend (tensorflow, jax, torch) in
a subprocess and merges the results into one JSON and one Markdown file.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")
HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), "docs")
NOTES_MARKER = "<!-- notes: kept when the table is regenerated -->"


def shapes_for(quick):
    """The stated shapes; `--quick` shrinks them for a smoke run."""
    if quick:
        return {
            "recurrent": {"batch": 8, "length": 16, "features": 32, "units": 32},
            "attention": {"batch": 4, "length": 32, "width": 32, "heads": 4},
            "block": {"batch": 4, "length": 32, "width": 32, "heads": 4,
                      "intermediate": 128},
        }
    return {
        "recurrent": {"batch": 32, "length": 64, "features": 256, "units": 256},
        "attention": {"batch": 16, "length": 128, "width": 128, "heads": 4},
        "block": {"batch": 16, "length": 128, "width": 128, "heads": 4,
                  "intermediate": 512},
    }


# ---------------------------------------------------------------------------
# The pairs: each builder returns (keraseq model, Keras model, input shape).
# Weights are copied from the Keras model into keraseq's.


def _model(keras, inputs, outputs):
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.MeanSquaredError())
    return model


def recurrent_pair(keras, ours_class, keras_class, s):
    shape = (s["length"], s["features"])
    models = []
    for layer_class in (ours_class, keras_class):
        x = keras.Input(shape)
        y = layer_class(s["units"], return_sequences=True)(x)
        models.append(_model(keras, x, y))
    models[0].set_weights(models[1].get_weights())
    return models[0], models[1], (s["batch"],) + shape


def attention_pair(keras, keraseq, s):
    shape = (s["length"], s["width"])
    key_dim = s["width"] // s["heads"]
    models = []
    for layer_class in (keraseq.layers.MultiHeadAttention,
                        keras.layers.MultiHeadAttention):
        x = keras.Input(shape)
        y = layer_class(num_heads=s["heads"], key_dim=key_dim)(
            x, x, use_causal_mask=True
        )
        models.append(_model(keras, x, y))
    models[0].set_weights(models[1].get_weights())
    return models[0], models[1], (s["batch"],) + shape


def block_pair(keras, keraseq, s):
    """keraseq's TransformerBlock and the same pre-norm block from Keras parts."""
    shape = (s["length"], s["width"])
    x = keras.Input(shape)
    block = keraseq.layers.TransformerBlock(
        num_heads=s["heads"], intermediate_dim=s["intermediate"]
    )
    ours = _model(keras, x, block(x))

    x = keras.Input(shape)
    norm_1 = keras.layers.LayerNormalization(epsilon=1e-5)
    attention = keras.layers.MultiHeadAttention(
        num_heads=s["heads"], key_dim=s["width"] // s["heads"]
    )
    norm_2 = keras.layers.LayerNormalization(epsilon=1e-5)
    dense_1 = keras.layers.Dense(s["intermediate"], activation="gelu")  # exact
    dense_2 = keras.layers.Dense(s["width"])
    h = norm_1(x)
    h = keras.layers.Add()([x, attention(h, h, use_causal_mask=True)])
    y = keras.layers.Add()([h, dense_2(dense_1(norm_2(h)))])
    theirs = _model(keras, x, y)
    # TransformerBlock's weights come in this order (see its `build`).
    weights = []
    for layer in (norm_1, attention, norm_2, dense_1, dense_2):
        weights += layer.get_weights()
    block.set_weights(weights)
    return ours, theirs, (s["batch"],) + shape


def pairs(keras, keraseq, shapes):
    return {
        "SimpleRNN": lambda: recurrent_pair(
            keras, keraseq.layers.SimpleRNN, keras.layers.SimpleRNN,
            shapes["recurrent"]),
        "LSTM": lambda: recurrent_pair(
            keras, keraseq.layers.LSTM, keras.layers.LSTM, shapes["recurrent"]),
        "MultiHeadAttention": lambda: attention_pair(
            keras, keraseq, shapes["attention"]),
        "TransformerBlock": lambda: block_pair(keras, keraseq, shapes["block"]),
    }


# ---------------------------------------------------------------------------
# Timing.


def tokens_per_second(step, tokens, steps):
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * tokens / (time.perf_counter() - start)


def measure(ours, theirs, x, y, repeats, steps, warmup, explicit=None):
    """Median tokens/s of each model, forward and train, interleaved.

    `explicit` (optional) is a copy of `ours` run with keraseq's backend fast
    paths switched off, to show what each lever is worth."""
    from keraseq.layers import _fast_path

    tokens = x.shape[0] * x.shape[1]
    contestants = {"keraseq": (ours, True), "keras": (theirs, True)}
    if explicit is not None:
        contestants["explicit"] = (explicit, False)
    result = {}
    for mode in ("forward", "train"):
        calls = {}
        for name, (model, fast) in contestants.items():
            def call(model=model, fast=fast):
                with _fast_path.enabled(fast):  # also at trace time (JAX, TF)
                    if mode == "forward":
                        return model.predict_on_batch(x)
                    return model.train_on_batch(x, y)
            calls[name] = call
        for call in calls.values():  # compile / warm up
            for _ in range(warmup):
                call()
        timings = {name: [] for name in calls}
        for _ in range(repeats):  # interleaved: A, B, (C,) A, B, ...
            for name, call in calls.items():
                timings[name].append(tokens_per_second(call, tokens, steps))
        entry = {}
        for name, values in timings.items():
            entry[name] = statistics.median(values)
            entry[f"{name}_all"] = values
        entry["ratio"] = entry["keraseq"] / entry["keras"]
        if explicit is not None:
            entry["explicit_ratio"] = entry["explicit"] / entry["keras"]
        result[mode] = entry
    return result


def threads(backend):
    """Intra-op threads of the backend (torch reports its own)."""
    if backend == "torch":
        import torch

        return f"{torch.get_num_threads()} intra-op threads"
    return f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"


def load():
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def run_backend(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    import keraseq.layers  # imports Keras quietly

    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Each model traces its own tf.function once; TF counts those across
        # models and warns about "retracing", which is expected here.
        tf.get_logger().setLevel("ERROR")
    shapes = shapes_for(args.quick)
    rng = np.random.default_rng(0)
    results = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "precision": "float32",
        "machine": machine(),
        "load_before": load(),
        "threads": threads(keras.backend.backend()),
        "repeats": args.repeats,
        "steps": args.steps,
        "shapes": shapes,
        "layers": {},
    }
    started = time.perf_counter()
    for name, make in pairs(keras, keraseq, shapes).items():
        if args.layers and name not in args.layers.split(","):
            continue
        keras.utils.set_random_seed(0)
        ours, theirs, shape = make()
        x = rng.normal(size=shape).astype("float32")
        y = rng.normal(size=shape[:2] + (ours.output_shape[-1],)).astype("float32")
        difference = float(
            np.max(np.abs(ours.predict_on_batch(x) - theirs.predict_on_batch(x)))
        )
        # The same keraseq model with the backend fast paths off (see
        # keraseq/layers/_fast_path.py): what the levers are worth.
        explicit = keras.models.clone_model(ours)
        explicit.compile(keras.optimizers.Adam(1e-3), keras.losses.MeanSquaredError())
        explicit.set_weights(ours.get_weights())
        entry = measure(ours, theirs, x, y, args.repeats, args.steps, args.warmup,
                        explicit)
        entry["max_abs_difference"] = difference
        entry["input_shape"] = list(shape)
        results["layers"][name] = entry
        for mode in ("forward", "train"):
            r = entry[mode]
            print(
                f"{results['backend']:10s} {name:18s} {mode:7s} keraseq "
                f"{r['keraseq']:10.0f} tok/s  keras {r['keras']:10.0f} tok/s  "
                f"ratio {r['ratio']:.2f}"
                + (f"  explicit/keras {r['explicit_ratio']:.2f}" if "explicit" in r else "")
                + f"  (max |diff| {difference:.1e})",
                flush=True,
            )
    results["seconds"] = time.perf_counter() - started
    results["load_after"] = load()
    return results


def machine():
    cores = os.cpu_count()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {cores} CPU cores, {platform.system()} {platform.release()}"


# ---------------------------------------------------------------------------
# Reporting.


def threads_text(runs):
    return "; ".join(f"{r['backend']} {r.get('threads', 'default')}" for r in runs)


def shapes_text(shapes):
    r, a, b = shapes["recurrent"], shapes["attention"], shapes["block"]
    return [
        f"- SimpleRNN, LSTM: batch {r['batch']}, length {r['length']}, "
        f"{r['features']} input features, {r['units']} units, "
        "`return_sequences=True`.",
        f"- MultiHeadAttention (self-attention, causal): batch {a['batch']}, "
        f"length {a['length']}, width {a['width']}, {a['heads']} heads "
        f"(key_dim {a['width'] // a['heads']}).",
        f"- TransformerBlock (pre-norm, causal, exact GELU): batch {b['batch']}, "
        f"length {b['length']}, width {b['width']}, {b['heads']} heads, "
        f"intermediate {b['intermediate']}.",
    ]


def spread(values):
    """Fastest repeat over slowest: 1.0x is a quiet machine."""
    return f"{max(values) / min(values):.1f}x"


def table(runs):
    lines = [
        "| backend | layer | mode | keraseq tok/s | Keras tok/s | keraseq / Keras "
        "| explicit path / Keras | spread keraseq / Keras |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for name, entry in run["layers"].items():
            for mode in ("forward", "train"):
                r = entry[mode]
                explicit = f"{r['explicit_ratio']:.2f}" if "explicit_ratio" in r else "–"
                lines.append(
                    f"| {run['backend']} | {name} | {mode} | {r['keraseq']:,.0f} "
                    f"| {r['keras']:,.0f} | {r['ratio']:.2f} | {explicit} "
                    f"| {spread(r['keraseq_all'])} / {spread(r['keras_all'])} |"
                )
    return lines


def markdown(runs, old_text=None):
    first = runs[0]
    lines = [
        "# CPU benchmark: keraseq layers vs the Keras built-ins",
        "",
        "Generated by `python benchmarks/cpu_suite.py --all-backends` "
        "(re-running it rewrites everything above the notes).",
        "",
        f"- Machine: {first['machine']}; Keras {first['keras']}; "
        f"{first['precision']}.",
        f"- Method: same shapes, Keras weights copied into keraseq's layer; "
        f"forward = `predict_on_batch`, train = `train_on_batch` (MSE, Adam) of a "
        f"model holding only the layer; {first['steps']} calls per repeat, "
        f"median of {first['repeats']} interleaved repeats after warm-up; "
        "tokens/s = batch × length / seconds per call; spread = fastest repeat "
        "/ slowest repeat (large spreads mean the medians are noisy); "
        "explicit path = the same keraseq model with the backend fast paths of "
        "`keraseq/layers/_fast_path.py` switched off.",
        f"- Threads: {threads_text(runs)}.",
        "- Load average (1, 5, 15 min) before / after each backend: "
        + "; ".join(
            f"{r['backend']} {r['load_before']} / {r['load_after']} "
            f"({r['seconds']:.0f} s)" for r in runs
        )
        + ".",
        "",
        "Shapes:",
        "",
        *shapes_text(first["shapes"]),
        "",
        *table(runs),
        "",
        "Largest |keraseq − Keras| on the forward check: "
        + "; ".join(
            f"{r['backend']} "
            + ", ".join(
                f"{n} {e['max_abs_difference']:.1e}" for n, e in r["layers"].items()
            )
            for r in runs
        )
        + ".",
        "",
        NOTES_MARKER,
    ]
    notes = ""
    if old_text and NOTES_MARKER in old_text:
        notes = old_text.split(NOTES_MARKER, 1)[1]
    return "\n".join(lines) + (notes if notes else "\n")


def write_outputs(runs, json_path, markdown_path):
    from keraseq import _atomic

    if json_path:
        _atomic.write_json(json_path, runs if len(runs) > 1 else runs[0], indent=2)
    if markdown_path:
        old = None
        if os.path.exists(markdown_path):
            with open(markdown_path) as handle:
                old = handle.read()
        _atomic.write_text(markdown_path, markdown(runs, old))


def all_backends(args):
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for backend in BACKENDS:
            path = os.path.join(scratch, f"{backend}.json")
            command = [sys.executable, os.path.abspath(__file__),
                       "--repeats", str(args.repeats), "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--json", path]
            if args.quick:
                command.append("--quick")
            if args.layers:
                command += ["--layers", args.layers]
            env = {**os.environ, "KERAS_BACKEND": backend}
            subprocess.run(command, env=env, check=True)
            with open(path) as handle:
                runs.append(json.load(handle))
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes, for a smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3,
                        help="timed calls per repeat")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed calls before timing (compilation)")
    parser.add_argument("--layers", default="",
                        help="comma-separated subset of SimpleRNN, LSTM, "
                             "MultiHeadAttention, TransformerBlock (default: all)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--markdown", default=None, help="write the table here")
    parser.add_argument("--all-backends", action="store_true",
                        help="run each backend in a subprocess; write "
                             "docs/benchmarks_cpu.json and .md unless given")
    args = parser.parse_args()
    if args.repeats < 1 or args.steps < 1 or args.warmup < 1:
        parser.error("--repeats, --steps and --warmup must be at least 1")

    if args.all_backends:
        runs = all_backends(args)
        json_path = args.json or os.path.join(DOCS, "benchmarks_cpu.json")
        markdown_path = args.markdown or os.path.join(DOCS, "benchmarks_cpu.md")
    else:
        runs = [run_backend(args)]
        json_path, markdown_path = args.json, args.markdown
    print()
    print("\n".join(table(runs)))
    write_outputs(runs, json_path, markdown_path)


if __name__ == "__main__":
    main()
