"""GPU speed of keraseq's layers against the Keras built-ins (JAX, then torch).

One prepared script for the GPU machine (the `device` tool: one H200, jax,
torch and onnxruntime installed, no Keras, no TensorFlow, no network). Keras
and the pure-Python packages it needs travel as wheels in `.whl/` (GUIDE §5);
keraseq travels with the working tree. The exact device command, run from the
repository root with `.whl` carried:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && python3 benchmarks/gpu_suite.py --out $OUT

`.whl/` is filled once, on a machine with PyPI, from the repository root (and
`/.whl/` is listed in `.git/info/exclude`):

    pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex==0.1.0 \
        optree==0.20.0 absl-py==2.5.1 rich==15.0.0 markdown-it-py==4.3.0 \
        mdurl==0.1.2 pygments==2.21.0 h5py==3.14.0 packaging==26.4 \
        typing_extensions==4.16.0

Check on a CPU with tiny shapes (writes to a temporary directory, never to
`docs/`):

    python benchmarks/gpu_suite.py --smoke

What it measures, for each backend in its own subprocess (`KERAS_BACKEND` set
before Keras is imported), keraseq and Keras interleaved in one process:
train-step tokens/s = batch × length / seconds per `train_on_batch`, the
median of 5 timed repeats after warm-up (compilation), and the ratio to Keras.

1. LSTM language model at the anchor shape (batch 64, length 128, 512 units,
   vocabulary 8192): Embedding(8192, 512) -> LSTM(512, return_sequences=True)
   -> Dense(8192), sparse cross-entropy from logits, Adam;
   `keraseq.layers.LSTM` vs `keras.layers.LSTM`, and under torch also raw
   `torch.nn.LSTM` (cuDNN) in the same model trained by torch directly;
   float32 and `mixed_bfloat16` (raw torch: `torch.autocast` bfloat16).
2. Causal attention block (batch 16, length 2048, width 512, 8 heads):
   x + MHA(LayerNorm(x)) with `keraseq.layers.MultiHeadAttention` vs
   `keras.layers.MultiHeadAttention` (`use_causal_mask=True`), MSE, Adam; and
   `keraseq.layers.TransformerBlock` vs the same pre-norm block built from
   Keras parts (intermediate 2048); float32 and `mixed_bfloat16`.
3. Long context: keraseq's causal `TransformerBlock` at length 8192 (batch 2,
   width 512, 8 heads) in `mixed_bfloat16`, with its peak memory against the
   bytes that the (batch, heads, 8192, 8192) float32 scores would need; the
   Keras-parts block is run after it as a contrast.

Every case records the peak device memory (torch: `max_memory_allocated`,
reset before each model's warm-up; JAX: `peak_bytes_in_use`, a high-water mark
since the worker started that JAX cannot reset, which is why the long-context
case runs first), the precision mode (JAX's default matmul precision, which
is TF32 for float32 on NVIDIA GPUs; torch's TF32 flags), device and versions.
Any model or case that raises is recorded with a one-line error and the suite
goes on; a worker that dies is restarted on the cases left. A time budget
(`--budget`, default 250 s, half per backend with the rest passed on) keeps
the run under 5 minutes: each case gets a share of what is left and times
fewer calls, or fewer repeats, when it is slow; a case that does not fit is
recorded as skipped. Progress lines start with `[gpu_suite]` and are flushed,
so a cut log is still useful; each worker's full output goes to a log file.

Outputs: `benchmarks_gpu.json` and `benchmarks_gpu.md` in `--out` (default
`docs/`; with `--smoke`, a new temporary directory).
"""

import argparse
import collections
import datetime
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # the working tree's keraseq (`import keraseq` imports no Keras)
from keraseq import _atomic  # noqa: E402  (reports written atomically, as keraseq's own)
DOCS = os.path.join(ROOT, "docs")
BACKENDS = ("jax", "torch")
# The long-context case runs first: JAX's peak memory cannot be reset, so its
# high-water mark is clean only for the first case of a worker.
CASES = (
    "long_context",
    "lstm_float32",
    "lstm_mixed_bfloat16",
    "attention_float32",
    "attention_mixed_bfloat16",
    "block_float32",
    "block_mixed_bfloat16",
)
REPEATS = 5
WARMUP = 2
DEVICE_COMMAND = (
    "python3 -m pip install -q --no-index --no-deps --target /tmp/site "
    ".whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && "
    "python3 benchmarks/gpu_suite.py --out $OUT"
)
# GUIDE §2: H200, Keras 3.15.1, train-step tokens/s, measured by others.
ANCHORS = [
    "LSTM LM (batch 64, length 128, 512 units, vocabulary 8192): Keras LSTM "
    "832k (JAX, float32) / 260k (torch); hand-written LSTM with the input "
    "projection hoisted out of `ops.scan` 857k (JAX) / 70k (torch); naive cell "
    "in `keras.layers.RNN` 705k / 44k; raw `torch.nn.LSTM` (cuDNN, no Keras) "
    "765k. Keras's LSTM fails under `mixed_bfloat16` on JAX with a GPU.",
    "Causal MHA block (batch 16, length 2048, width 512, 8 heads): Keras MHA "
    "1.17M (JAX) / 437k (torch); `ops.dot_product_attention` 1.23M / 447k; "
    "under `mixed_bfloat16` on JAX 1.68M (Keras MHA) vs 1.83M "
    "(`ops.dot_product_attention`).",
]
PREFIX = "[gpu_suite]"


def log(message):
    print(f"{PREFIX} {message}", flush=True)


def one_line(error):
    """`Type: first non-empty line of the message`, at most 300 characters."""
    text = ""
    for line in str(error).splitlines():
        if line.strip():
            text = line.strip()
            break
    return f"{type(error).__name__}: {text}"[:300]


def shapes_for(smoke):
    """The stated shapes; `--smoke` shrinks them for a CPU check."""
    if smoke:
        return {
            "lstm": {"batch": 2, "length": 8, "units": 16, "vocab": 32},
            "attention": {"batch": 2, "length": 16, "width": 32, "heads": 4,
                          "intermediate": 128},
            "long_context": {"batch": 1, "length": 64, "width": 32, "heads": 4,
                             "intermediate": 128},
        }
    return {
        "lstm": {"batch": 64, "length": 128, "units": 512, "vocab": 8192},
        "attention": {"batch": 16, "length": 2048, "width": 512, "heads": 8,
                      "intermediate": 2048},
        "long_context": {"batch": 2, "length": 8192, "width": 512, "heads": 8,
                         "intermediate": 2048},
    }


def train_flops_per_token(kind, s):
    """GUIDE §5 estimates (forward FLOPs per token, times 3 for training)."""
    if kind == "lstm":
        h, v = s["units"], s["vocab"]
        forward = 8 * h * (h + h) + 2 * h * v  # LSTM (E = H) + logits
    elif kind == "attention":
        d, length = s["width"], s["length"]
        forward = 8 * d * d + 4 * length * d  # Q, K, V, O + scores and mix
    else:  # transformer block
        d, length, i = s["width"], s["length"], s["intermediate"]
        forward = 8 * d * d + 4 * d * i + 4 * length * d
    return 3 * forward


# ---------------------------------------------------------------------------
# Worker side: runs in a subprocess with KERAS_BACKEND set.


class Probe:
    """Device, versions, precision mode and peak memory for one backend."""

    def __init__(self, backend):
        self.backend = backend
        if backend == "jax":
            import jax

            self.jax = jax
            self.device = jax.devices()[0]
            self.gpu = self.device.platform == "gpu"
        else:
            import torch

            self.torch = torch
            self.gpu = torch.cuda.is_available()

    def device_name(self):
        if self.backend == "jax":
            return f"{self.device.platform}: {self.device.device_kind}"
        if self.gpu:
            return f"cuda: {self.torch.cuda.get_device_name(0)}"
        return f"cpu: {cpu_model()}"

    def versions(self):
        import numpy

        import keras

        versions = {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "numpy": numpy.__version__,
        }
        try:
            import keraseq

            versions["keraseq"] = getattr(keraseq, "__version__", None)
        except Exception as error:  # noqa: BLE001
            versions["keraseq"] = one_line(error)
        if self.backend == "jax":
            versions["jax"] = self.jax.__version__
            try:
                import jaxlib

                versions["jaxlib"] = jaxlib.__version__
            except Exception:  # noqa: BLE001
                versions["jaxlib"] = None
        else:
            torch = self.torch
            versions["torch"] = torch.__version__
            versions["cuda"] = torch.version.cuda
            try:
                versions["cudnn"] = torch.backends.cudnn.version()
            except Exception:  # noqa: BLE001
                versions["cudnn"] = None
        return versions

    def precision(self):
        """The precision settings as found (left at their defaults)."""
        if self.backend == "jax":
            config = self.jax.config
            try:
                value = config.jax_default_matmul_precision
            except AttributeError:
                value = getattr(config, "values", {}).get(
                    "jax_default_matmul_precision"
                )
            return {
                "jax_default_matmul_precision": value,
                "note": "None is XLA's DEFAULT precision: on NVIDIA GPUs "
                "(Ampere and later) float32 matmuls and convolutions run in "
                "TF32. Left at the default.",
            }
        torch = self.torch
        settings = {}
        for name, read in (
            ("torch.backends.cuda.matmul.allow_tf32",
             lambda: torch.backends.cuda.matmul.allow_tf32),
            ("torch.backends.cudnn.allow_tf32",
             lambda: torch.backends.cudnn.allow_tf32),
            ("torch.get_float32_matmul_precision",
             torch.get_float32_matmul_precision),
            ("torch.backends.cuda.matmul.fp32_precision",
             lambda: torch.backends.cuda.matmul.fp32_precision),
            ("torch.backends.cudnn.rnn.fp32_precision",
             lambda: torch.backends.cudnn.rnn.fp32_precision),
        ):
            try:
                settings[name] = read()
            except Exception:  # noqa: BLE001  (older or newer torch)
                pass
        settings["note"] = (
            "Defaults left as found: allow_tf32 on matmul False means IEEE "
            "float32 matmuls; cudnn.allow_tf32 True means cuDNN (convolutions "
            "and the cuDNN LSTM) may use TF32."
        )
        return settings

    def precision_label(self, policy):
        """A short statement of the precision, written beside every figure."""
        if policy == "mixed_bfloat16":
            return "bf16 compute, fp32 variables"
        if not self.gpu:
            return "fp32 (CPU)"
        if self.backend == "jax":
            value = self.precision()["jax_default_matmul_precision"]
            if value in (None, "default", "DEFAULT", "fastest", "tensorfloat32"):
                return "fp32, matmuls TF32 (JAX default)"
            return f"fp32, jax_default_matmul_precision={value}"
        settings = self.precision()
        matmul = settings.get("torch.backends.cuda.matmul.allow_tf32")
        cudnn = settings.get("torch.backends.cudnn.allow_tf32")
        return (
            f"fp32, matmuls {'TF32' if matmul else 'IEEE fp32'}, "
            f"cuDNN TF32 {'on' if cudnn else 'off'}"
        )

    def memory_stats(self):
        if self.backend == "jax":
            try:
                return self.device.memory_stats() or None
            except Exception:  # noqa: BLE001
                return None
        return None

    def reset_peak(self):
        if self.backend == "torch" and self.gpu:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def in_use(self):
        if self.backend == "torch":
            if not self.gpu:
                return None
            return int(self.torch.cuda.memory_allocated())
        stats = self.memory_stats()
        return None if stats is None else stats.get("bytes_in_use")

    def peak(self):
        if self.backend == "torch":
            if not self.gpu:
                return None
            self.torch.cuda.synchronize()
            return int(self.torch.cuda.max_memory_allocated())
        stats = self.memory_stats()
        return None if stats is None else stats.get("peak_bytes_in_use")

    def total(self):
        if self.backend == "torch":
            if not self.gpu:
                return None
            return int(self.torch.cuda.get_device_properties(0).total_memory)
        stats = self.memory_stats()
        return None if stats is None else stats.get("bytes_limit")

    def cleanup(self):
        gc.collect()
        if self.backend == "torch" and self.gpu:
            self.torch.cuda.empty_cache()


def loss_value(result):
    """The loss from `train_on_batch` (a float, or a list starting with it)."""
    if isinstance(result, (list, tuple)):
        result = result[0]
    if isinstance(result, dict):
        result = result.get("loss", next(iter(result.values())))
    return float(result)


class Context:
    def __init__(self, args, backend, probe):
        import numpy as np

        import keraseq.layers  # noqa: F401  (imports Keras quietly)

        import keras

        self.np = np
        self.keras = keras
        self.keraseq = sys.modules["keraseq"]
        self.backend = backend
        self.probe = probe
        self.smoke = args.smoke
        self.shapes = shapes_for(args.smoke)
        self.target_repeat_s = 0.0 if args.smoke else args.target_repeat
        self.rng = np.random.default_rng(0)

    def tensor(self, array):
        """A backend tensor on the default device (no host copy per step)."""
        return self.keras.ops.convert_to_tensor(array)

    def compile(self, model, loss):
        model.compile(optimizer=self.keras.optimizers.Adam(1e-3), loss=loss)
        return model


def keras_step(model, x, y):
    return lambda: loss_value(model.train_on_batch(x, y))


def copy_weights(target, source):
    """Copy `source`'s weights into `target`; a note when they do not fit."""
    try:
        target.set_weights(source.get_weights())
        return None
    except Exception as error:  # noqa: BLE001
        return "weights not copied (" + one_line(error) + ")"


def lstm_models(ctx, policy):
    """keraseq LSTM, Keras LSTM (and raw torch.nn.LSTM under torch) LMs."""
    keras, s = ctx.keras, ctx.shapes["lstm"]
    x = ctx.rng.integers(0, s["vocab"], (s["batch"], s["length"])).astype("int32")
    y = ctx.rng.integers(0, s["vocab"], (s["batch"], s["length"])).astype("int32")
    x_t, y_t = ctx.tensor(x), ctx.tensor(y)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def build(layer_class):
        inputs = keras.Input((s["length"],), dtype="int32")
        h = keras.layers.Embedding(s["vocab"], s["units"])(inputs)
        h = layer_class(s["units"], return_sequences=True)(h)
        logits = keras.layers.Dense(s["vocab"])(h)
        return ctx.compile(keras.Model(inputs, logits), loss)

    built = {}

    def ours():
        model = build(ctx.keraseq.layers.LSTM)
        note = copy_weights(model, built["keras"]) if "keras" in built else None
        return keras_step(model, x_t, y_t), note

    def theirs():
        built["keras"] = build(keras.layers.LSTM)
        return keras_step(built["keras"], x_t, y_t), None

    # Keras's model is built first so that its weights can be copied into
    # keraseq's; the warm-up (and memory) order is keraseq first.
    contestants = [
        ("keras.layers.LSTM", "keras", theirs),
        ("keraseq.layers.LSTM", "keraseq", ours),
    ]
    if ctx.backend == "torch":
        kernel = "cuDNN, no Keras" if ctx.probe.gpu else "CPU, no Keras"
        contestants.append(
            (f"torch.nn.LSTM ({kernel})", "torch",
             lambda: (torch_lstm_step(ctx, x, y, policy), None))
        )
    return contestants


def torch_lstm_step(ctx, x, y, policy):
    """The same LM in plain torch: the cuDNN yardstick."""
    import torch

    s = ctx.shapes["lstm"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    class LanguageModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(s["vocab"], s["units"])
            self.lstm = torch.nn.LSTM(s["units"], s["units"], batch_first=True)
            self.logits = torch.nn.Linear(s["units"], s["vocab"])

        def forward(self, tokens):
            h, _ = self.lstm(self.embedding(tokens))  # (B, T, H)
            return self.logits(h)  # (B, T, V)

    model = LanguageModel().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tokens = torch.as_tensor(x, dtype=torch.long, device=device)
    targets = torch.as_tensor(y, dtype=torch.long, device=device)
    autocast = policy == "mixed_bfloat16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, s["vocab"]), targets.reshape(-1)
        )
        loss.backward()
        optimizer.step()
        return loss.item()  # synchronises

    return step


def attention_models(ctx, shape_key):
    """x + MHA(LayerNorm(x)), keraseq's MHA vs Keras's."""
    keras, s = ctx.keras, ctx.shapes[shape_key]
    x_t, y_t = float_batch(ctx, s)
    built = {}

    def build(attention_class):
        inputs = keras.Input((s["length"], s["width"]))
        h = keras.layers.LayerNormalization(epsilon=1e-5)(inputs)
        h = attention_class(num_heads=s["heads"], key_dim=s["width"] // s["heads"])(
            h, h, use_causal_mask=True
        )
        outputs = keras.layers.Add()([inputs, h])
        return ctx.compile(keras.Model(inputs, outputs), "mse")

    def ours():
        model = build(ctx.keraseq.layers.MultiHeadAttention)
        note = copy_weights(model, built["keras"]) if "keras" in built else None
        return keras_step(model, x_t, y_t), note

    def theirs():
        built["keras"] = build(keras.layers.MultiHeadAttention)
        return keras_step(built["keras"], x_t, y_t), None

    return [
        ("keras.layers.MultiHeadAttention", "keras", theirs),
        ("keraseq.layers.MultiHeadAttention", "keraseq", ours),
    ]


def float_batch(ctx, s):
    shape = (s["batch"], s["length"], s["width"])
    x = ctx.rng.normal(size=shape).astype("float32")
    y = ctx.rng.normal(size=shape).astype("float32")
    return ctx.tensor(x), ctx.tensor(y)


def block_models(ctx, shape_key, contrast_label="keras"):
    """keraseq's TransformerBlock vs the same pre-norm block from Keras parts."""
    keras, s = ctx.keras, ctx.shapes[shape_key]
    x_t, y_t = float_batch(ctx, s)
    built = {}

    def theirs():
        inputs = keras.Input((s["length"], s["width"]))
        norm_1 = keras.layers.LayerNormalization(epsilon=1e-5)
        attention = keras.layers.MultiHeadAttention(
            num_heads=s["heads"], key_dim=s["width"] // s["heads"]
        )
        norm_2 = keras.layers.LayerNormalization(epsilon=1e-5)
        dense_1 = keras.layers.Dense(s["intermediate"], activation="gelu")
        dense_2 = keras.layers.Dense(s["width"])
        h = norm_1(inputs)
        h = keras.layers.Add()([inputs, attention(h, h, use_causal_mask=True)])
        outputs = keras.layers.Add()([h, dense_2(dense_1(norm_2(h)))])
        model = ctx.compile(keras.Model(inputs, outputs), "mse")
        weights = []
        for layer in (norm_1, attention, norm_2, dense_1, dense_2):
            weights += layer.get_weights()
        built["weights"] = weights
        return keras_step(model, x_t, y_t), None

    def ours():
        inputs = keras.Input((s["length"], s["width"]))
        block = ctx.keraseq.layers.TransformerBlock(
            num_heads=s["heads"], intermediate_dim=s["intermediate"]
        )
        model = ctx.compile(keras.Model(inputs, block(inputs)), "mse")
        note = None
        if "weights" in built:  # TransformerBlock's weight order (its build)
            try:
                block.set_weights(built["weights"])
            except Exception as error:  # noqa: BLE001
                note = "weights not copied (" + one_line(error) + ")"
        return keras_step(model, x_t, y_t), note

    return [
        ("Keras parts (LayerNormalization, MultiHeadAttention, Dense)",
         contrast_label, theirs),
        ("keraseq.layers.TransformerBlock", "keraseq", ours),
    ]


def case_specs(ctx):
    """name -> (title, policy, shape key, FLOPs kind, contestants factory)."""
    return {
        "long_context": ("Long-context causal TransformerBlock", "mixed_bfloat16",
                         "long_context", "block",
                         lambda: block_models(ctx, "long_context", "contrast")),
        "lstm_float32": ("LSTM language model", "float32", "lstm", "lstm",
                         lambda: lstm_models(ctx, "float32")),
        "lstm_mixed_bfloat16": ("LSTM language model", "mixed_bfloat16", "lstm",
                                "lstm",
                                lambda: lstm_models(ctx, "mixed_bfloat16")),
        "attention_float32": ("Causal attention block", "float32", "attention",
                              "attention",
                              lambda: attention_models(ctx, "attention")),
        "attention_mixed_bfloat16": ("Causal attention block", "mixed_bfloat16",
                                     "attention", "attention",
                                     lambda: attention_models(ctx, "attention")),
        "block_float32": ("TransformerBlock", "float32", "attention", "block",
                          lambda: block_models(ctx, "attention")),
        "block_mixed_bfloat16": ("TransformerBlock", "mixed_bfloat16",
                                 "attention", "block",
                                 lambda: block_models(ctx, "attention")),
    }


def run_case(ctx, name, allowance):
    """Build, warm up, then time the contestants of one case, interleaved."""
    keras, probe = ctx.keras, ctx.probe
    title, policy, shape_key, flops_kind, factory = case_specs(ctx)[name]
    s = ctx.shapes[shape_key]
    tokens = s["batch"] * s["length"]
    flops = train_flops_per_token(flops_kind, s)
    started = time.perf_counter()
    result = {
        "title": title,
        "policy": policy,
        "precision": probe.precision_label(policy),
        "shape": dict(s),
        "tokens_per_step": tokens,
        "train_flops_per_token": flops,
        "models": [],
    }
    if name == "long_context":
        scores = s["batch"] * s["heads"] * s["length"] ** 2
        result["scores_bytes_float32"] = 4 * scores
        result["scores_bytes_bfloat16"] = 2 * scores
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(policy)
    live = []
    try:
        built = []
        for label, role, make in factory():
            entry = {"model": label, "role": role, "status": "ok"}
            result["models"].append(entry)
            try:
                step, note = make()
                if note:
                    entry["note"] = note
                built.append((entry, step))
            except Exception as error:  # noqa: BLE001
                entry.update(status="fails", error=one_line(error))
                log(f"  {label}: fails at build: {entry['error']}")
        # Warm-up (compilation), one model at a time, keraseq first, each
        # after a reset of the peak-memory counter (torch only).
        built.sort(key=lambda item: item[0]["role"] != "keraseq")
        for entry, step in built:
            entry["bytes_in_use_before"] = probe.in_use()
            probe.reset_peak()
            try:
                begin = time.perf_counter()
                losses = [step() for _ in range(WARMUP)]
                entry["warmup_s"] = round(time.perf_counter() - begin, 3)
                begin = time.perf_counter()
                losses.append(step())
                seconds = time.perf_counter() - begin
                entry["first_loss"] = losses[0]
                entry["peak_bytes"] = probe.peak()
                if not all(math.isfinite(v) for v in losses):
                    entry["note"] = (entry.get("note", "") + " non-finite loss").strip()
                live.append((entry, step, max(seconds, 1e-6)))
            except Exception as error:  # noqa: BLE001
                entry.update(status="fails", error=one_line(error),
                             peak_bytes=probe.peak())
                log(f"  {entry['model']}: fails: {entry['error']}")
        time_interleaved(ctx, live, tokens, allowance - (time.perf_counter() - started),
                         result)
    finally:
        keras.config.set_dtype_policy("float32")
        live = None
        keras.backend.clear_session()
        probe.cleanup()
    add_ratios(result, flops)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def time_interleaved(ctx, live, tokens, allowance, result):
    """Median tokens/s over interleaved repeats, within the time allowance."""
    if not live:
        return
    per_round = sum(seconds for _, _, seconds in live)
    steps = [max(1, min(50, round(ctx.target_repeat_s / seconds)))
             for _, _, seconds in live]
    cost = REPEATS * sum(n * t for n, (_, _, t) in zip(steps, live))
    if cost > allowance:
        steps = [1] * len(live)
        cost = REPEATS * per_round
    repeats = REPEATS
    if cost > allowance:
        repeats = max(1, int(allowance // per_round))
        result["time_guard"] = (
            f"{repeats} repeat(s) of 1 call instead of {REPEATS}: the case "
            "would not fit its share of the time budget"
        )
    samples = [[] for _ in live]
    for _ in range(repeats):
        for sample, n, (entry, step, _) in zip(samples, steps, live):
            begin = time.perf_counter()
            for _ in range(n):
                step()
            sample.append(n * tokens / (time.perf_counter() - begin))
    for sample, n, (entry, _, _) in zip(samples, steps, live):
        entry["tokens_per_s"] = statistics.median(sample)
        entry["tokens_per_s_all"] = [round(v, 1) for v in sample]
        entry["calls_per_repeat"] = n
        entry["repeats"] = repeats


def add_ratios(result, flops):
    by_role = {m["role"]: m for m in result["models"] if "tokens_per_s" in m}
    for model in result["models"]:
        speed = model.get("tokens_per_s")
        if speed is None:
            continue
        model["tflops_estimate"] = speed * flops / 1e12
        for role, key in (("keras", "vs_keras"), ("torch", "vs_torch_lstm"),
                          ("contrast", "vs_keras")):
            other = by_role.get(role)
            if other is not None:
                model[key] = speed / other["tokens_per_s"]
    ours, keras_model = by_role.get("keraseq"), None
    for role in ("keras", "contrast"):
        keras_model = keras_model or by_role.get(role)
    if ours and keras_model:
        result["ratio_keraseq_vs_keras"] = (
            ours["tokens_per_s"] / keras_model["tokens_per_s"]
        )
    if ours and "torch" in by_role:
        result["ratio_keraseq_vs_torch_lstm"] = (
            ours["tokens_per_s"] / by_role["torch"]["tokens_per_s"]
        )
    if (ours and keras_model and "first_loss" in ours
            and "first_loss" in keras_model):
        # Equal weights give equal first losses (up to TF32/bf16 rounding).
        result["first_loss_difference"] = abs(
            ours["first_loss"] - keras_model["first_loss"]
        )
    if "scores_bytes_float32" in result and ours and ours.get("peak_bytes"):
        result["keraseq_peak_over_scores_float32"] = (
            ours["peak_bytes"] / result["scores_bytes_float32"]
        )


def save(state, path):
    _atomic.write_json(path, state, indent=2, default=str)


def run_worker(args):
    sys.path.insert(0, ROOT)  # the working tree's keraseq
    backend = args.worker
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    state = {"backend": backend, "running": None, "cases": {}}
    try:
        probe = Probe(backend)
        ctx = Context(args, backend, probe)
        if ctx.keras.backend.backend() != backend:
            raise RuntimeError(
                f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r} gave "
                f"{ctx.keras.backend.backend()!r}, expected {backend!r}"
            )
        state.update(
            device=probe.device_name(),
            gpu=probe.gpu,
            device_memory_bytes=probe.total(),
            versions=probe.versions(),
            precision=probe.precision(),
            peak_memory_method=(
                "torch.cuda.max_memory_allocated, reset before each model's "
                "warm-up" if backend == "torch" else
                "jax.devices()[0].memory_stats()['peak_bytes_in_use']: a "
                "high-water mark since the worker started (JAX cannot reset it)"
            ),
            environment={k: os.environ.get(k) for k in (
                "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                "XLA_FLAGS", "CUDA_VISIBLE_DEVICES") if os.environ.get(k)},
        )
    except Exception as error:  # noqa: BLE001
        state["error"] = "start-up failed: " + one_line(error)
        save(state, args.json)
        log(f"{backend}: {state['error']}")
        raise
    log(f"{backend}: {state['device']}; precision {probe.precision_label('float32')}")
    if not probe.gpu and not (args.smoke or args.allow_cpu):
        state["error"] = "no GPU found (use --smoke for a CPU check)"
        save(state, args.json)
        log(f"{backend}: {state['error']}")
        sys.exit(3)
    save(state, args.json)
    cases = [c for c in args.cases.split(",") if c]
    for index, name in enumerate(cases):
        remaining = args.deadline - time.time()
        share = remaining / (len(cases) - index)
        if remaining < args.min_case:
            state["cases"][name] = {"status": "skipped",
                                    "error": "skipped: time budget spent"}
            log(f"{backend} {name}: skipped (time budget)")
            save(state, args.json)
            continue
        state["running"] = name
        save(state, args.json)
        log(f"{backend} {name}: start ({remaining:.0f} s left, share {share:.0f} s)")
        try:
            result = run_case(ctx, name, share)
            result["status"] = "ok"
        except Exception as error:  # noqa: BLE001
            result = {"status": "error", "error": one_line(error)}
        state["cases"][name] = result
        state["running"] = None
        save(state, args.json)
        log(f"{backend} {name}: {case_summary(result)}")
    log(f"{backend}: done")


def case_summary(result):
    if result.get("status") != "ok":
        return result.get("error", result.get("status"))
    parts = []
    for model in result["models"]:
        if "tokens_per_s" in model:
            text = f"{short_label(model['model'])} {model['tokens_per_s']:,.0f} tok/s"
            if model.get("peak_bytes"):
                text += f" peak {fmt_bytes(model['peak_bytes'])}"
        else:
            text = f"{short_label(model['model'])} fails: {model.get('error')}"
        parts.append(text)
    ratio = result.get("ratio_keraseq_vs_keras")
    if ratio is not None:
        parts.append(f"keraseq/Keras {ratio:.2f}")
    return f"{result['policy']} ({result['seconds']} s): " + "; ".join(parts)


# ---------------------------------------------------------------------------
# Parent side: no Keras, no backend imported here.


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info():
    info = {"cpu": cpu_model(), "cpu_cores": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}
    try:
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
        if query.returncode == 0:
            info["nvidia_smi"] = query.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=10)
        if revision.returncode == 0:
            info["git_revision"] = revision.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                                   capture_output=True, text=True, timeout=10)
            info["git_uncommitted_files"] = len(dirty.stdout.splitlines())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def run_worker_process(backend, cases, deadline, args, log_path, scratch):
    """One worker subprocess; returns (state dict or None, rc, last lines)."""
    json_path = os.path.join(scratch, f"{backend}.json")
    if os.path.exists(json_path):
        os.remove(json_path)
    command = [sys.executable, os.path.abspath(__file__), "--worker", backend,
               "--cases", ",".join(cases), "--deadline", repr(deadline),
               "--json", json_path, "--min-case", str(args.min_case),
               "--target-repeat", str(args.target_repeat)]
    if args.smoke:
        command.append("--smoke")
    if args.allow_cpu:
        command.append("--allow-cpu")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    tail = collections.deque(maxlen=25)
    with open(log_path, "a") as log_file:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)

        def pump():
            for line in process.stdout:
                log_file.write(line)
                log_file.flush()
                tail.append(line.rstrip())
                if line.startswith(PREFIX):
                    print(line, end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        killed = False
        try:
            process.wait(timeout=max(5.0, deadline - time.time() + args.grace))
        except subprocess.TimeoutExpired:
            killed = True
            log(f"{backend}: worker past its deadline, stopping it")
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        reader.join(timeout=5)
    state = None
    if os.path.exists(json_path):
        with open(json_path) as handle:
            state = json.load(handle)
    return state, (None if killed else process.returncode), list(tail)


def run_backend(backend, deadline, args, log_path, scratch):
    """All cases of one backend; a worker that dies is restarted on the rest."""
    run = {"backend": backend, "cases": {}, "log": log_path}
    left = list(CASES if not args.cases else args.cases.split(","))
    order = list(left)
    attempts = 0
    while left and attempts < len(order):
        attempts += 1
        if deadline - time.time() < args.min_case:
            for name in left:
                run["cases"][name] = {"status": "skipped",
                                      "error": "skipped: time budget spent"}
            break
        state, rc, tail = run_worker_process(backend, left, deadline, args,
                                             log_path, scratch)
        if state is None:
            run["error"] = (f"worker gave no result (rc={rc}); last line: "
                            f"{tail[-1] if tail else ''}")[:400]
            break
        for key, value in state.items():
            if key not in ("cases", "running"):
                run.setdefault(key, value)
        run["cases"].update(state.get("cases", {}))
        if state.get("error"):
            run["error"] = state["error"]
            run["log_tail"] = tail[-10:]
            break
        running = state.get("running")
        if running:
            why = ("killed: past the time budget" if rc is None
                   else f"worker exited (rc={rc}) during this case")
            last = next((line for line in reversed(tail) if line.strip()), "")
            run["cases"][running] = {"status": "error",
                                     "error": f"{why}; last line: {last}"[:400]}
            log(f"{backend} {running}: {why}")
        left = [name for name in left if name not in run["cases"]]
        if rc is None:
            run["stopped"] = "skipped: time budget spent (worker stopped)"
            break
        if rc == 0:
            break
    why = ("not run: " + run["error"]) if run.get("error") else \
        run.pop("stopped", "not run: worker stopped")
    for name in left:
        run["cases"].setdefault(name, {"status": "skipped", "error": why[:300]})
    run["cases"] = {name: run["cases"][name] for name in order
                    if name in run["cases"]}
    return run


# ---------------------------------------------------------------------------
# Reporting.


def fmt_bytes(value):
    if value is None:
        return "n/a"
    if value >= 2 ** 30:
        return f"{value / 2 ** 30:.2f} GiB"
    if value >= 2 ** 20:
        return f"{value / 2 ** 20:.0f} MiB"
    return f"{value / 2 ** 10:.0f} KiB"


def fmt_flops(value):
    return f"{value:.1f}" if value >= 0.1 else f"{value:.2g}"


def fmt_speed(value):
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def short_label(label):
    return label.split(" (")[0]


def shape_text(case):
    s = case["shape"]
    if "vocab" in s:
        return (f"B{s['batch']} T{s['length']} units {s['units']} "
                f"vocab {s['vocab']}")
    return (f"B{s['batch']} T{s['length']} d{s['width']} {s['heads']} heads"
            + (f" ffn {s['intermediate']}" if case["title"] != "Causal attention block"
               else ""))


def table(report):
    lines = [
        "| backend | case | shape | dtype policy, precision | model | tokens/s "
        "| vs Keras | TFLOP/s (est.) | peak memory | notes |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for run in report["runs"]:
        backend = run["backend"]
        if run.get("error") and not run["cases"]:
            lines.append(f"| {backend} | — | | | | | | | | {run['error']} |")
        for name, case in run["cases"].items():
            if case.get("status") != "ok":
                lines.append(f"| {backend} | {name} | | | | | | | | "
                             f"{case.get('error', case.get('status'))} |")
                continue
            first = True
            for model in case["models"]:
                head = (f"| {backend} | {case['title']} | {shape_text(case)} "
                        f"| {case['policy']}, {case['precision']} ") if first else \
                    "| | | | "
                first = False
                notes = []
                if model.get("status") != "ok":
                    notes.append(f"fails: {model.get('error')}")
                if model.get("note"):
                    notes.append(model["note"])
                if "vs_torch_lstm" in model and model["role"] != "torch":
                    notes.append(f"{model['vs_torch_lstm']:.2f}× torch.nn.LSTM")
                if (model["role"] == "keraseq"
                        and "first_loss_difference" in case):
                    notes.append(f"first loss Δ {case['first_loss_difference']:.1e}"
                                 " vs Keras")
                if model.get("repeats") and model["repeats"] < REPEATS:
                    notes.append(f"{model['repeats']} repeats (time guard)")
                if "tokens_per_s" in model:
                    speed = fmt_speed(model["tokens_per_s"])
                    ratio = (f"{model['vs_keras']:.2f}" if "vs_keras" in model
                             else "—")
                    flops = fmt_flops(model["tflops_estimate"])
                else:
                    speed, ratio, flops = "—", "—", "—"
                lines.append(
                    f"{head}| {model['model']} | {speed} | {ratio} | {flops} "
                    f"| {fmt_bytes(model.get('peak_bytes'))} | {'; '.join(notes)} |"
                )
    return lines


def long_context_lines(report):
    lines = []
    for run in report["runs"]:
        case = run["cases"].get("long_context")
        if not case or case.get("status") != "ok":
            continue
        ours = next((m for m in case["models"] if m["role"] == "keraseq"), None)
        contrast = next((m for m in case["models"] if m["role"] == "contrast"), None)
        if ours is None:
            continue
        s = case["shape"]
        text = (
            f"- {run['backend']}: keraseq TransformerBlock, B{s['batch']} "
            f"T{s['length']} d{s['width']} {s['heads']} heads, mixed_bfloat16: "
        )
        if ours.get("status") != "ok":
            text += f"fails: {ours.get('error')}."
        else:
            text += (f"{fmt_speed(ours['tokens_per_s'])} tokens/s, peak "
                     f"{fmt_bytes(ours.get('peak_bytes'))}")
            f32, bf16 = case["scores_bytes_float32"], case["scores_bytes_bfloat16"]
            text += (f", against {fmt_bytes(f32)} for one float32 "
                     f"(batch, heads, length, length) score tensor "
                     f"({fmt_bytes(bf16)} in bfloat16)")
            peak = ours.get("peak_bytes")
            if peak:
                text += f": peak / float32 scores = {peak / f32:.2f}; "
                if peak < bf16:
                    text += ("below even one bfloat16 score tensor, so the "
                             "scores are not materialised")
                elif peak < f32:
                    text += ("below the float32 scores but not the bfloat16 "
                             "ones: inconclusive")
                else:
                    text += "CHECK: not below the size of the scores"
            text += "."
        if contrast is not None:
            text += (" The Keras-parts block after it: "
                     + (f"{fmt_speed(contrast['tokens_per_s'])} tokens/s, peak "
                        f"{fmt_bytes(contrast.get('peak_bytes'))}."
                        if "tokens_per_s" in contrast
                        else f"fails: {contrast.get('error')}."))
        lines.append(text)
    return lines


def markdown(report):
    smoke = report["smoke"]
    title = "# GPU benchmark: keraseq layers vs the Keras built-ins"
    lines = [title, ""]
    if smoke:
        lines += ["**SMOKE RUN: tiny shapes, not benchmark figures.**", ""]
    lines += [
        f"Generated {report['generated']} by `python3 benchmarks/gpu_suite.py"
        f"{' --smoke' if smoke else ''}` ({report['seconds']:.0f} s in all). "
        "Device command (repository root, `.whl` carried):",
        "",
        "```",
        DEVICE_COMMAND,
        "```",
        "",
    ]
    for run in report["runs"]:
        versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())
        precision = ", ".join(
            f"`{k}`={v}" for k, v in run.get("precision", {}).items() if k != "note"
        )
        lines.append(
            f"- {run['backend']}: {run.get('device', 'n/a')}"
            + (f" (memory limit {fmt_bytes(run['device_memory_bytes'])})"
               if run.get("device_memory_bytes") else "")
            + f"; {versions}; precision settings {precision} "
            f"({run.get('precision', {}).get('note', '')}); peak memory: "
            f"{run.get('peak_memory_method', 'n/a')}."
            + (f" Error: {run['error']}" if run.get("error") else "")
        )
    machine = report["machine"]
    lines += [
        f"- Machine: {machine.get('nvidia_smi', 'no nvidia-smi')}; CPU "
        f"{machine['cpu']} ({machine['cpu_cores']} cores); git "
        f"{machine.get('git_revision', 'n/a')}.",
        "- Method: train step = `train_on_batch` on device-resident batches "
        "(raw torch: forward, loss, backward, Adam step, `loss.item()`); "
        f"{WARMUP} warm-up calls (compilation) and one calibration call, then "
        f"{REPEATS} interleaved repeats of "
        + (f"enough calls for about {report['target_repeat_s']} s per model"
           if report["target_repeat_s"] else "one call per model")
        + "; tokens/s = batch × length / "
        "seconds per call, median of the repeats; vs Keras = tokens/s over "
        "Keras's in the same case (same-process, interleaved); first loss Δ = "
        "|keraseq − Keras| loss of the first step (equal weights); TFLOP/s "
        "from GUIDE §5's FLOPs per token (×3 for training). Keras's weights are copied into keraseq's models "
        "where the layouts match. `mixed_bfloat16`: the whole model under the "
        "policy, losses in float32; raw torch uses `torch.autocast` bfloat16.",
        "",
        *table(report),
        "",
    ]
    long_lines = long_context_lines(report)
    if long_lines:
        lines += ["Long context (issue 5, item 4):", "", *long_lines, ""]
    lines += ["Anchor figures measured by others (GUIDE §2; H200, Keras 3.15.1, "
              "train-step tokens/s):", ""]
    lines += [f"- {anchor}" for anchor in ANCHORS]
    return "\n".join(lines) + "\n"


def console_table(report):
    rows = []
    for run in report["runs"]:
        for name, case in run["cases"].items():
            if case.get("status") != "ok":
                rows.append(f"{run['backend']:5s} {name:26s} "
                            f"{case.get('error', case.get('status'))}")
                continue
            for model in case["models"]:
                speed = (f"{model['tokens_per_s']:>12,.0f} tok/s"
                         if "tokens_per_s" in model else
                         f"fails: {model.get('error')}")
                ratio = (f"  x{model['vs_keras']:.2f} vs Keras"
                         if "vs_keras" in model else "")
                rows.append(f"{run['backend']:5s} {name:26s} "
                            f"{short_label(model['model']):34s} {speed}{ratio}"
                            f"  peak {fmt_bytes(model.get('peak_bytes'))}")
    return rows


def write_outputs(report, out):
    os.makedirs(out, exist_ok=True)
    json_path = os.path.join(out, "benchmarks_gpu.json")
    markdown_path = os.path.join(out, "benchmarks_gpu.md")
    _atomic.write_json(json_path, report, indent=2, default=str)
    _atomic.write_text(markdown_path, markdown(report))
    return json_path, markdown_path


def failures(report):
    """One line per backend, case or model that did not run to the end."""
    lines = []
    for run in report["runs"]:
        if run.get("error"):
            lines.append(f"{run.get('backend')}: {run['error']}")
        for name, case in run["cases"].items():
            if case.get("status") != "ok":
                lines.append(f"{run.get('backend')} {name}: {case.get('error')}")
            for model in case.get("models", []):
                if model.get("status") != "ok":
                    lines.append(f"{run.get('backend')} {name} {model.get('model')}: "
                                 f"{model.get('error')}")
    return lines


def measured_anything(report):
    return any(
        "tokens_per_s" in model
        for run in report["runs"] for case in run["cases"].values()
        for model in case.get("models", [])
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes on the CPU; output to a temporary "
                             "directory unless --out is given (never docs/)")
    parser.add_argument("--out", default=None,
                        help="directory for benchmarks_gpu.json and .md "
                             "(default docs/, or a temporary one with --smoke)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated, run in this order (default "
                             "jax,torch)")
    parser.add_argument("--cases", default="",
                        help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--budget", type=float, default=250.0,
                        help="seconds for the whole suite (default 250)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run the full shapes even without a GPU")
    parser.add_argument("--target-repeat", type=float, default=0.25,
                        help="seconds of calls per model per repeat (GPU)")
    parser.add_argument("--min-case", type=float, default=None,
                        help="do not start a case with fewer seconds left "
                             "(default 12, 2 with --smoke)")
    parser.add_argument("--grace", type=float, default=20.0,
                        help="seconds past its deadline before a worker is "
                             "stopped")
    # Worker-only arguments (the parent passes them).
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.min_case is None:
        args.min_case = 2.0 if args.smoke else 12.0
    if args.worker:
        run_worker(args)
        return

    backends = [b for b in args.backends.split(",") if b]
    unknown = [b for b in backends if b not in BACKENDS]
    unknown += [c for c in args.cases.split(",") if c and c not in CASES]
    if unknown:
        parser.error(f"unknown backend or case: {', '.join(unknown)}")
    if args.out is None:
        out = (tempfile.mkdtemp(prefix="gpu_suite_smoke_") if args.smoke
               else DOCS)
    else:
        out = args.out
    if args.smoke and os.path.realpath(out) == os.path.realpath(DOCS):
        parser.error("--smoke numbers must not be written to docs/")
    to_docs = os.path.realpath(out) == os.path.realpath(DOCS)
    log_dir = tempfile.mkdtemp(prefix="gpu_suite_logs_") if to_docs else out
    os.makedirs(log_dir, exist_ok=True)

    started = time.time()
    end = started + args.budget
    report = {
        "suite": "gpu",
        "smoke": args.smoke,
        "generated": datetime.datetime.now(datetime.timezone.utc)
        .strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "device_command": DEVICE_COMMAND,
        "budget_s": args.budget,
        "repeats": REPEATS,
        "warmup_calls": WARMUP,
        "target_repeat_s": 0.0 if args.smoke else args.target_repeat,
        "machine": machine_info(),
        "anchors_measured_by_others": ANCHORS,
        "runs": [],
    }
    log(f"out {out}; logs {log_dir}; budget {args.budget:.0f} s; "
        f"{'smoke' if args.smoke else 'full'} shapes")
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as scratch:
        for index, backend in enumerate(backends):
            now = time.time()
            deadline = now + (end - now) / (len(backends) - index)
            log(f"{backend}: worker starts, {deadline - now:.0f} s for it")
            log_path = os.path.join(log_dir, f"gpu_suite_{backend}.log")
            run = run_backend(backend, deadline, args, log_path, scratch)
            report["runs"].append(run)
            report["seconds"] = time.time() - started
            if not to_docs or measured_anything(report):
                write_outputs(report, out)
    report["seconds"] = time.time() - started
    print("\n".join(console_table(report)), flush=True)
    if to_docs and not measured_anything(report):
        log("nothing was measured; docs/ left unchanged")
        sys.exit(1)
    json_path, markdown_path = write_outputs(report, out)
    log(f"wrote {json_path} and {markdown_path} ({report['seconds']:.0f} s)")
    if args.smoke and failures(report):
        # CI runs the smoke check: on the CPU every case must run.
        for line in failures(report):
            log(f"failed: {line}")
        sys.exit(1)


if __name__ == "__main__":
    main()
