"""ONNX inference latency of an LSTM language model: Loop vs native vs int8.

One character LM — `keraseq.models.language_model("lstm")`: Embedding(66, 64)
→ keraseq LSTM(64) → Dense(66), i.e. the tinyshakespeare vocabulary (65
characters + OOV) — is exported and timed at batch 1 and 32, sequence 256,
with onnxruntime (CPU, `--threads` intra-op threads, 1 inter-op thread):

  (a) `loop`       export_onnx(method="tf2onnx"): the cell as an ONNX `Loop`
  (b) `native`     export_onnx(method="native"): one ONNX `LSTM` node
  (c) `int8`       (b) through keraseq.export.quantize (onnxruntime dynamic
                   int8): "full" (LSTM + MatMul + Gather) and "float ends"
                   (LSTM only, what ships for character models)
  (d) `keras-lstm` the same math as `keras.layers.LSTM(64)` with the weights
                   copied, exported by tf2onnx, which emits one native `LSTM`
                   node for it (checked)
  (e) `keras`      Keras `predict_on_batch` of the keraseq model on the
                   TensorFlow backend (TensorFlow's default threads)

Each case runs in blocks (`--warmup` untimed calls, then `--repeats /
--rounds` timed ones), the cases in turn, `--rounds` times, so that load
drifts hit every case alike; the median of the timed calls is reported. Weights
are random unless `--model` names a trained `.keras` LM: latency does not
depend on them. Prints a Markdown table with the ratios the issue asks for
(native vs Loop, native vs the keras-LSTM native node) and the machine load;
`--json PATH` writes everything.

Streaming generation tokens/s (batch 1, step graph float vs int8) is measured
by `streaming_generation()` below when `keraseq.export.runtime` and the streaming
export are available; `benchmarks/generation_speed.py` compares it with Keras
generation on each backend.

    python benchmarks/onnx_speed.py --json onnx_speed.json
    python benchmarks/onnx_speed.py --quick
"""

import os

# The Loop / keras-LSTM graphs come from tf2onnx and case (e) is Keras on
# TensorFlow: run the whole script under the TensorFlow backend.
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime  # noqa: E402

from keraseq.export import export_onnx  # noqa: E402
from keraseq.export.quantize import quantize_int8  # noqa: E402
from keraseq.models import language_model  # noqa: E402

VOCABULARY = 66  # tinyshakespeare: 65 characters + the OOV id 0
EMBEDDING = 64
UNITS = 64


def keras_lstm_twin(model):
    """The same LM with `keras.layers.LSTM` in place of keraseq's, weights copied
    (keraseq's LSTM stores kernel, recurrent_kernel, bias in Keras's layout)."""
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCABULARY, EMBEDDING)(tokens)
    x = keras.layers.LSTM(UNITS, return_sequences=True)(x)
    twin = keras.Model(tokens, keras.layers.Dense(VOCABULARY)(x))
    twin.set_weights(model.get_weights())
    return twin


def node_counts(path):
    return dict(collections.Counter(n.op_type for n in onnx.load(path).graph.node))


def session(path, threads):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def time_once(run):
    start = time.perf_counter()
    run()
    return 1e3 * (time.perf_counter() - start)


def load():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


# == streaming generation tokens/s ==========================================
# Batch 1, the prompt as one chunk then one token per step, with
# keraseq.export.runtime.OnnxGenerator on the float step graph and on its int8 copy.
# The comparison with Keras generation per backend lives in
# benchmarks/generation_speed.py.
def streaming_generation(model, threads, length, repeats):
    """{"float": tokens/s, "int8": tokens/s, ...} or {"skipped": why}."""
    try:
        from keraseq.export.native import export_streaming
        from keraseq.export.runtime import OnnxGenerator
        from keraseq.text import Vocabulary
    except ImportError as error:
        return {"skipped": f"streaming runtime not available ({error})"}
    results = {"length": length, "prompt": "ROMEO:"}
    with tempfile.TemporaryDirectory(prefix="onnx-speed-stream-") as scratch:
        try:
            text = "".join(chr(32 + i) for i in range(VOCABULARY - 1))  # 65 characters
            generators = {}
            for variant in ("float", "int8"):
                directory = os.path.join(scratch, variant)
                os.makedirs(directory)
                Vocabulary.from_text(text, level="char").save(
                    os.path.join(directory, "vocabulary.json"))
                with open(os.path.join(directory, "config.json"), "w") as handle:
                    json.dump({"model": "lstm", "sequence_length": 256}, handle)
                step = export_streaming(model, directory)["step"]
                if variant == "int8":
                    rng = np.random.default_rng(0)
                    x = rng.integers(0, VOCABULARY, (8, 64)).astype("int32")
                    report = quantize_int8(
                        step, os.path.join(scratch, "step.int8.onnx"),
                        validation_inputs=x, validation_targets=x, min_agreement=1e-6,
                        op_types=["LSTM"], threads=threads, latency_repeats=1)
                    os.replace(report.out_path, step)
                generators[variant] = OnnxGenerator(directory, threads=threads)
            speeds = {variant: [] for variant in generators}
            for _ in range(3):  # warm-up (also lets TensorFlow's spinning threads settle)
                for generator in generators.values():
                    generator.generate("ROMEO:", length=length, temperature=0.8, seed=0)
            for repeat in range(repeats):  # interleaved
                for variant, generator in generators.items():
                    start = time.perf_counter()
                    generator.generate("ROMEO:", length=length, temperature=0.8, seed=repeat)
                    speeds[variant].append(length / (time.perf_counter() - start))
            results.update({k: statistics.median(v) for k, v in speeds.items()})
        except Exception as error:  # noqa: BLE001 - a benchmark reports, never hides
            results["skipped"] = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    return results
# ===========================================================================


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence-length", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed calls before each block of a case")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times the cases run in turn, --repeats / --rounds calls each")
    parser.add_argument("--model", default=None,
                        help="a trained keraseq LSTM LM (.keras, Embedding(66, 64) → "
                        "LSTM(64) → Dense(66)); default: random weights")
    parser.add_argument("--generate-length", type=int, default=200,
                        help="tokens per streaming generation run")
    parser.add_argument("--quick", action="store_true",
                        help="few repeats (a smoke run; numbers are noisy)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if args.json:  # refused before measuring, not after
        from keraseq import _atomic

        try:
            _atomic.check_destination(args.json)
        except OSError as error:
            parser.error(f"--json {args.json!r}: {error.strerror}: {error.filename}")
    if args.quick:
        args.repeats, args.warmup, args.rounds, args.generate_length = 6, 2, 2, 100

    keras.utils.set_random_seed(0)
    if args.model:
        import keraseq  # noqa: F401  (registers the layers)

        model = keras.saving.load_model(args.model, compile=False)
    else:
        model = language_model("lstm", VOCABULARY, units=UNITS, embedding_dim=EMBEDDING)
    twin = keras_lstm_twin(model)
    rng = np.random.default_rng(0)
    probe = rng.integers(0, VOCABULARY, (2, 50)).astype("int32")
    twin_diff = float(np.abs(
        keras.ops.convert_to_numpy(model(probe)) - keras.ops.convert_to_numpy(twin(probe))
    ).max())

    scratch = tempfile.mkdtemp(prefix="onnx-speed-")
    paths = {
        "loop": export_onnx(model, os.path.join(scratch, "loop.onnx"), method="tf2onnx").path,
        "native": export_onnx(model, os.path.join(scratch, "native.onnx"), method="native").path,
        "keras-lstm": export_onnx(twin, os.path.join(scratch, "keras_lstm.onnx"),
                                  method="tf2onnx").path,
    }
    x_val = rng.integers(0, VOCABULARY, (16, 100)).astype("int32")
    for name, op_types in (("int8 full", None), ("int8 float-ends", ["LSTM"])):
        report = quantize_int8(
            paths["native"], os.path.join(scratch, f"{name.replace(' ', '_')}.onnx"),
            validation_inputs=x_val, validation_targets=x_val, min_agreement=1e-6,
            op_types=op_types or ["LSTM", "MatMul", "Gather"], threads=args.threads,
            latency_repeats=1,
        )
        paths[name] = report.out_path
    nodes = {name: node_counts(path) for name, path in paths.items()}
    if nodes["keras-lstm"].get("LSTM") != 1 or "Loop" in nodes["keras-lstm"]:
        raise SystemExit(f"tf2onnx did not emit one native LSTM node: {nodes['keras-lstm']}")
    if nodes["native"].get("LSTM") != 1 or "Loop" not in nodes["loop"]:
        raise SystemExit(f"unexpected graphs: native {nodes['native']}, loop {nodes['loop']}")

    sessions = {name: session(path, args.threads) for name, path in paths.items()}
    cases = list(paths) + ["keras"]
    results = {
        "shapes": {"vocabulary": VOCABULARY, "embedding": EMBEDDING, "units": UNITS,
                   "sequence_length": args.sequence_length,
                   "batch_sizes": args.batch_sizes},
        "precision": "float32 (int8 rows: int8 weights, dynamic int8 activations)",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
                   + f", {os.cpu_count()} CPU cores",
        "onnxruntime": onnxruntime.__version__, "keras": keras.__version__,
        "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup,
        "rounds": args.rounds,
        "load_before": load(),
        "keras_lstm_twin_max_abs_diff": twin_diff,
        "nodes": nodes,
        "file_bytes": {name: os.path.getsize(path) for name, path in paths.items()},
        "latency_ms": {},
    }
    for batch in args.batch_sizes:
        x = rng.integers(0, VOCABULARY, (batch, args.sequence_length)).astype("int32")
        runs = {name: (lambda s=s: s.run(None, {"tokens": x})) for name, s in sessions.items()}
        runs["keras"] = lambda: model.predict_on_batch(x)
        # Blocks, not call-by-call interleaving: each onnxruntime session's
        # pool threads (and TensorFlow's) spin for a while after a call and
        # would slow whichever case runs next on these 2 cores (measured: the
        # native graph at batch 32 took 32 ms interleaved, 5 ms alone). The
        # blocks go round `--rounds` times so that load drifts hit every case.
        timings = {name: [] for name in cases}
        per_block = max(1, args.repeats // args.rounds)
        for _ in range(args.rounds):
            for name in cases:
                for _ in range(args.warmup):
                    runs[name]()
                timings[name].extend(time_once(runs[name]) for _ in range(per_block))
        results["latency_ms"][str(batch)] = {
            name: statistics.median(values) for name, values in timings.items()
        }
    results["load_after"] = load()
    del sessions
    shutil.rmtree(scratch, ignore_errors=True)
    results["streaming_generation_tokens_per_s"] = streaming_generation(
        model, args.threads, args.generate_length, 3 if args.quick else 5)

    print(f"LSTM language model: Embedding({VOCABULARY}, {EMBEDDING}) → LSTM({UNITS}) → "
          f"Dense({VOCABULARY}); sequence length {args.sequence_length}; float32")
    print(f"onnxruntime {onnxruntime.__version__} CPU, {args.threads} intra-op threads; "
          f"{results['machine']}; median of {args.repeats} calls in {args.rounds} rounds "
          f"of blocks, {args.warmup} warm-up calls per block")
    print(f"load before: {results['load_before']}")
    print(f"load after:  {results['load_after']}")
    print(f"keras.layers.LSTM twin vs keraseq model: max |diff| = {twin_diff:.1e}\n")
    header = "| case | graph | file (bytes) | " + " | ".join(
        f"batch {b} (ms)" for b in args.batch_sizes) + " |"
    print(header)
    print("|" + "---|" * (3 + len(args.batch_sizes)))
    labels = {
        "loop": "(a) keraseq LSTM, tf2onnx", "native": "(b) keraseq LSTM, native",
        "int8 full": "(c) native int8, full", "int8 float-ends": "(c) native int8, float ends",
        "keras-lstm": "(d) keras.layers.LSTM, tf2onnx", "keras": "(e) Keras predict_on_batch (TF)",
    }
    order = ["loop", "native", "int8 full", "int8 float-ends", "keras-lstm", "keras"]
    for name in order:
        graph = ("-" if name == "keras" else
                 ", ".join(f"{k}×{v}" for k, v in sorted(nodes[name].items())
                           if k in ("Loop", "LSTM", "DynamicQuantizeLSTM", "MatMul",
                                    "MatMulInteger")))
        size = "-" if name == "keras" else f"{results['file_bytes'][name]:,}"
        cells = " | ".join(f"{results['latency_ms'][str(b)][name]:.3f}" for b in args.batch_sizes)
        print(f"| {labels[name]} | {graph} | {size} | {cells} |")
    print()
    ratios = {}
    for b in args.batch_sizes:
        lat = results["latency_ms"][str(b)]
        ratios[str(b)] = {
            "loop / native (goal >= 5 at batch 1)": lat["loop"] / lat["native"],
            "native / keras-lstm node (goal <= 1.1)": lat["native"] / lat["keras-lstm"],
            "int8 full / native": lat["int8 full"] / lat["native"],
            "int8 float-ends / native": lat["int8 float-ends"] / lat["native"],
            "keras predict / native": lat["keras"] / lat["native"],
        }
    results["ratios"] = ratios
    print("| ratio | " + " | ".join(f"batch {b}" for b in args.batch_sizes) + " |")
    print("|" + "---|" * (1 + len(args.batch_sizes)))
    for key in ratios[str(args.batch_sizes[0])]:
        print(f"| {key} | " + " | ".join(
            f"{ratios[str(b)][key]:.2f}" for b in args.batch_sizes) + " |")
    stream = results["streaming_generation_tokens_per_s"]
    print()
    if "skipped" in stream:
        print(f"streaming generation: skipped ({stream['skipped']})")
    else:
        print(f"streaming generation, batch 1, {stream['length']} tokens after "
              f"{stream['prompt']!r}: float step graph {stream['float']:.0f} tokens/s, "
              f"int8 (LSTM) step graph {stream['int8']:.0f} tokens/s")
    if args.json:
        from keraseq import _atomic

        _atomic.write_json(args.json, results, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
