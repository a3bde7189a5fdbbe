"""Streaming generation speed: onnxruntime step graphs vs Keras, tokens/s at batch 1.

For each architecture a run directory is made the way `keraseq train` makes one
(model.keras, vocabulary.json, config.json; random weights — speed does not
depend on training) and its streaming graphs are written with
`keraseq.export.native.export_streaming`. Then, at batch 1:

* ONNX: `keraseq.export.runtime.OnnxGenerator` (onnxruntime + numpy, `--threads`
  intra-op threads) — the prompt as one chunk / prefill, then one token per step
  carrying the recurrent state or the key/value cache;
* Keras: `keraseq.generation.generate` (what `keraseq generate` runs: the
  model on a right-padded window of the last `sequence_length` tokens per new
  token), once per backend, each in its own process with `KERAS_BACKEND` set.

Each measurement generates `--length` tokens after a warm-up, `--repeats`
times; the median tokens/s is reported, with the ratio ONNX / Keras.

    python benchmarks/generation_speed.py --json generation.json
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

SHAPES = {
    # the `keraseq train` defaults: char vocabulary of tinyshakespeare (65 + OOV)
    "lstm": dict(units=256, embedding_dim=64, num_layers=1),
    "transformer": dict(units=128, num_layers=2, num_heads=4),
}
BACKENDS = ("tensorflow", "jax", "torch")

_KERAS_CHILD = r"""
import json, statistics, sys, time
import keraseq
from keraseq.generation import generate
from keraseq.text import Vocabulary
directory, length, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = json.load(open(directory + "/config.json"))
model = keraseq.load_model(directory + "/model.keras")
vocabulary = Vocabulary.load(directory + "/vocabulary.json")
run = lambda n: generate(model, vocabulary, "ROMEO:", length=n, seed=0,
                         context_length=config["sequence_length"])
run(4)  # compile / warm up
rates = []
for _ in range(repeats):
    start = time.perf_counter()
    run(length)
    rates.append(length / (time.perf_counter() - start))
print(json.dumps({"tokens_per_second": statistics.median(rates)}))
"""


def make_run(directory, architecture, sequence_length):
    import keras

    from keraseq.export.native import export_streaming
    from keraseq.models import language_model
    from keraseq.text import Vocabulary, load_corpus

    vocabulary = Vocabulary.from_text(load_corpus("shakespeare"), level="char")
    model = language_model(architecture, vocabulary.size,
                           sequence_length=sequence_length, **SHAPES[architecture])
    model.save(os.path.join(directory, "model.keras"))
    vocabulary.save(os.path.join(directory, "vocabulary.json"))
    with open(os.path.join(directory, "config.json"), "w") as file:
        json.dump({"model": architecture, "sequence_length": sequence_length,
                   "backend": keras.backend.backend()}, file)
    export_streaming(model, directory)
    return model.count_params()


def onnx_rate(directory, length, repeats, threads):
    from keraseq.export.runtime import OnnxGenerator

    generator = OnnxGenerator(directory, threads=threads)
    generator.generate("ROMEO:", length=4, seed=0)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        generator.generate("ROMEO:", length=length, seed=0)
        rates.append(length / (time.perf_counter() - start))
    return statistics.median(rates)


def keras_rate(directory, backend, length, repeats):
    done = subprocess.run(
        [sys.executable, "-c", _KERAS_CHILD, directory, str(length), str(repeats)],
        env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True,
    )
    if done.returncode:
        return None, done.stderr.strip().splitlines()[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_second"], None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lstm,transformer")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--length", type=int, default=200, help="tokens per measurement")
    parser.add_argument("--sequence-length", type=int, default=100,
                        help="the training length = Keras's generation window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.json:  # refused before measuring, not after
        from keraseq import _atomic

        try:
            _atomic.check_destination(args.json)
        except OSError as error:
            parser.error(f"--json {args.json!r}: {error.strerror}: {error.filename}")

    results = {"machine": platform.processor() or platform.machine(),
               "load_average": os.getloadavg(), "length": args.length,
               "threads": args.threads, "rows": []}
    print(f"batch 1, {args.length} tokens after the prompt 'ROMEO:', Keras window "
          f"{args.sequence_length}, onnxruntime {args.threads} threads, load "
          f"{os.getloadavg()[0]:.1f}")
    print("| model | params | ONNX tok/s | backend | Keras tok/s | ONNX / Keras |")
    print("|---|---|---|---|---|---|")
    for architecture in args.models.split(","):
        with tempfile.TemporaryDirectory() as directory:
            params = make_run(directory, architecture, args.sequence_length)
            onnx = onnx_rate(directory, args.length, args.repeats, args.threads)
            for backend in args.backends.split(","):
                rate, error = keras_rate(directory, backend, args.length, args.repeats)
                ratio = f"{onnx / rate:.1f}×" if rate else f"failed: {error}"
                print(f"| {architecture} | {params:,} | {onnx:,.0f} | {backend} | "
                      f"{rate or 0:,.0f} | {ratio} |", flush=True)
                results["rows"].append({"model": architecture, "params": params,
                                        "onnx_tokens_per_second": onnx, "backend": backend,
                                        "keras_tokens_per_second": rate, "error": error})
    if args.json:
        from keraseq import _atomic

        _atomic.write_json(args.json, results, indent=2)


if __name__ == "__main__":
    main()
