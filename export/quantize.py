"""int8 dynamic quantization of an exported language-model graph, shipped only
when it still predicts the same next tokens as the float graph.

The quantization itself is onnxruntime's (`onnxruntime.quantization.
quantize_dynamic`): weights become int8 constants with their scales; the
activations are quantized at run time, per call. What this module adds is the
gate: the float and the int8 graph both run on held-out token windows, and the
int8 file replaces `out_path` only if their next-token argmax agree on at
least `min_agreement` of the positions.

What `quantize_dynamic` does with the graphs keraseq writes (onnxruntime 1.32,
measured):

* ONNX `LSTM` (native export) → `com.microsoft.DynamicQuantizeLSTM`: int8 `W`
  and `R` (per gate row with `per_channel=True`), float bias and states. This
  is the node that makes the graph faster (0.235 → 0.16 ms at batch 1 for an
  LSTM(64) LM at T = 256 on 2 cores) and it holds most of the weights.
* `MatMul` with a constant right-hand side (the `Dense` logits projection) →
  `DynamicQuantizeLinear` + `MatMulInteger` + rescale.
* `Gather` on a constant table (the `Embedding`) → a uint8 table and a
  `DequantizeLinear` after the lookup.
* ONNX `RNN` (SimpleRNN): no quantized operator exists; it stays float. The
  opset-23 `Attention` node of a native transformer export stays float too;
  its `MatMul` projections are quantized.
* A tf2onnx `Loop` graph: only the `MatMul`s outside the loop are quantized
  (the hoisted input projection and the logits); the recurrent `MatMul` in the
  loop body reads its weight from the outer scope and stays float, so the file
  shrinks by only ~18 % (LSTM(256)) and runs no faster. Export with
  `method="native"` first.

Settings, chosen by measurement on trained character LSTM language models
(tinyshakespeare, `keraseq train --units 64|256 --epochs 8`, held-out loss
1.98 / 1.67 nats) and a word-level one (sherlock, 10,001 words), next-token
agreement on 32,000 held-out positions:

* `weight_type=QInt8`: `DynamicQuantizeLSTM` accepts only int8 weights.
* `per_channel=True`: one scale per gate row instead of one per matrix lifts
  the LSTM-only agreement from 0.9888 / 0.9883 to 0.9933 / 0.9937 (the int8
  file is 2-3 % larger: the scales).
* `reduce_range=False`: 7-bit weights exist for CPUs without VNNI; here
  (AVX-512 VNNI) they only cost agreement (0.9937 → 0.9881 for the LSTM).
* Which operators: all of `LSTM`, `MatMul`, `Gather` first ("full int8": 0.9885
  / 0.9889 on the character models, 0.9995 on the word model, which is 3.9×
  smaller). When that misses `min_agreement`, a second attempt keeps the
  model's ends in float — the embedding `Gather` and the `MatMul` that produces
  the logits ("float ends": on the character models that is the LSTM alone,
  0.9933 / 0.9937, 2.3× / 3.2× smaller, held-out loss +0.0003 / +0.0000 nats).
  Both attempts are judged on the same held-out windows and both appear in the
  report. Pass `op_types` to make exactly one attempt with those operators.

The int8 outputs depend on how onnxruntime runs the graph, not only on the
graph: activations are quantized with the range of each call's input, so the
batch composition matters, and so does the intra-op thread count (measured: an
LSTM(64) character model's int8 logits differ by up to 0.03 between 1 and 2
threads, the float ones not at all). The agreement is measured with `threads`
threads on batches of `batch_size` windows; deploy with the same if you want
exactly the numbers of the report.
"""

import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import statistics
import time

import numpy as np

from keraseq import _atomic
from keraseq.export import _io

DEFAULT_OP_TYPES = ("LSTM", "MatMul", "Gather")
# Node types quantize_dynamic knows, and whose output a walk back from the
# logits stops at (the first one met is the model's output layer).
_WEIGHTED_OPS = frozenset(
    {"MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention",
     "Conv", "Loop", "Scan", "If", "Gather"}
)
_INTEGER_TYPES = ("tensor(int32)", "tensor(int64)")
_PREPROCESS_HINT = "Please consider to run pre-processing before quantization"


@dataclasses.dataclass
class QuantizationReport:
    """Outcome of `quantize_int8`.

    Attributes:
        onnx_path: the float graph.
        onnx_sha256: the hex sha256 of the float graph file.
        out_path: where the int8 graph goes (written only when `shipped`).
        int8_sha256: the hex sha256 of the reported attempt's int8 graph (the
            file at `out_path` when `shipped`), `None` when there is none: a
            report whose hash is not the graph's beside it describes another
            export.
        report_path: the JSON copy of this report (`None` until saved).
        shipped: whether the int8 graph was renamed onto `out_path`.
        reason: `None` when shipped, else why not (a sentence).
        existing_out_kept: a file already at `out_path` was left untouched
            because nothing shipped.
        min_agreement: the agreement the int8 graph had to reach.
        agreement: next-token agreement `mean(argmax(float) == argmax(int8))`
            over every held-out position, of the shipped attempt (else of the
            attempt that agreed best).
        float_loss, int8_loss: mean next-token cross-entropy in nats,
            `mean(logsumexp(z) - z[y])` over every held-out position.
        loss_change: `int8_loss - float_loss`.
        float_bytes, int8_bytes: file sizes in bytes.
        size_ratio: `int8_bytes / float_bytes`.
        latency: one dict per batch size: `batch_size`, `float_ms`, `int8_ms`
            (median of `latency_repeats` runs of the first `batch_size` held-out
            windows after one warm-up run), `speedup` (`float_ms / int8_ms`).
        settings: the attempt reported: `name`, `op_types`, `per_channel`,
            `reduce_range`, `weight_type`, `nodes_to_exclude`.
        quantized_nodes: per float operator type, how many nodes of the graph
            (loop bodies included) the attempt turned into int8 ones.
        attempts: every attempt made, in order: `name`, `op_types`,
            `nodes_to_exclude`, `quantized_nodes`, `agreement`, `int8_loss`,
            `int8_bytes`, `passed` (or `skipped` with why).
        num_windows, sequence_length, num_tokens: the held-out data.
        threads: onnxruntime intra-op threads of every session.
        onnxruntime_version: the onnxruntime that quantized and ran the graphs.
        seconds: wall-clock time of the whole call.
    """

    onnx_path: str
    onnx_sha256: str
    out_path: str
    int8_sha256: object
    report_path: object
    shipped: bool
    reason: object
    existing_out_kept: bool
    min_agreement: float
    agreement: object
    float_loss: float
    int8_loss: object
    loss_change: object
    float_bytes: int
    int8_bytes: object
    size_ratio: object
    latency: list
    settings: dict
    quantized_nodes: dict
    attempts: list
    num_windows: int
    sequence_length: int
    num_tokens: int
    threads: int
    onnxruntime_version: str
    seconds: float

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self, indent=2):
        return json.dumps(_io.json_safe(self.to_dict()), indent=indent, allow_nan=False)

    def save(self, path=None):
        """Write the report as JSON, atomically; `None` means
        `<out_path without .onnx>.quantization.json`. Returns the path."""
        if path is None:
            path = default_report_path(self.out_path)
        path = os.fspath(path)
        self.report_path = path
        _io.atomic_write_json(self.to_dict(), path)
        return path

    def summary(self):
        """One line: shipped or not, with the agreement, size and loss change."""
        if self.agreement is None:
            return f"int8 NOT shipped: {self.reason}"
        numbers = (
            f"next-token agreement {self.agreement:.4f} (min {self.min_agreement:g}), "
            f"size {_fmt_bytes(self.int8_bytes)} vs {_fmt_bytes(self.float_bytes)} "
            f"({self.size_ratio:.2f}x), held-out loss {self.loss_change:+.4f} nats"
        )
        if self.shipped:
            return f"int8 shipped to {self.out_path} ({self.settings['name']}): {numbers}"
        return f"int8 NOT shipped: {self.reason}; best attempt {numbers}"

    def table(self):
        """A fixed-width text table: float32 vs int8, then one line per attempt."""
        rows = [("", "float32", "int8", "int8 vs float")]
        rows.append((
            "file size (bytes)", str(self.float_bytes), _fmt_opt(self.int8_bytes, "d"),
            _fmt_opt(self.size_ratio, ".3f"),
        ))
        rows.append((
            "held-out loss (nats)", f"{self.float_loss:.4f}", _fmt_opt(self.int8_loss, ".4f"),
            "-" if self.loss_change is None else f"{self.loss_change:+.4f}",
        ))
        rows.append((
            "next-token agreement", "-", _fmt_opt(self.agreement, ".4f"),
            f"min {self.min_agreement:g}",
        ))
        for entry in self.latency:
            rows.append((
                f"latency batch {entry['batch_size']} (ms)", f"{entry['float_ms']:.3f}",
                f"{entry['int8_ms']:.3f}", f"{entry['int8_ms'] / entry['float_ms']:.3f}",
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = []
        for index, row in enumerate(rows):
            cells = [row[0].ljust(widths[0])] + [
                cell.rjust(widths[i]) for i, cell in enumerate(row[1:], start=1)
            ]
            lines.append("  ".join(cells).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
        for attempt in self.attempts:
            nodes = ", ".join(f"{k} {v}" for k, v in attempt["quantized_nodes"].items())
            if attempt.get("skipped"):
                verdict = f"skipped ({attempt['skipped']})"
            else:
                verdict = (
                    f"agreement {attempt['agreement']:.4f} "
                    f"{'>=' if attempt['passed'] else '<'} {self.min_agreement:g}, "
                    f"loss {attempt['int8_loss']:.4f}"
                )
            lines.append(
                f"attempt {attempt['name']!r} (int8: {nodes or 'nothing'}): {verdict}"
            )
        lines.append(self.summary())
        return "\n".join(lines)


def _fmt_opt(value, spec):
    return "-" if value is None else format(value, spec)


def _fmt_bytes(value):
    return "-" if value is None else f"{value:,} B"


def int8_path(onnx_path):
    """The default int8 file next to a float graph: `model.onnx` → `model.int8.onnx`."""
    path = os.fspath(onnx_path)
    stem = path[: -len(".onnx")] if path.endswith(".onnx") else path
    return stem + ".int8.onnx"


def default_report_path(out_path):
    """`model.int8.onnx` → `model.int8.quantization.json`."""
    path = os.fspath(out_path)
    stem = path[: -len(".onnx")] if path.endswith(".onnx") else path
    return stem + ".quantization.json"


# -- argument checks -------------------------------------------------------------


def _check_fraction(min_agreement):
    if (
        isinstance(min_agreement, bool)
        or not isinstance(min_agreement, (int, float, np.integer, np.floating))
        or not math.isfinite(float(min_agreement))
        or not 0.0 < float(min_agreement) <= 1.0
    ):
        raise ValueError(
            "`min_agreement` must be a number in (0, 1]. "
            f"Received: min_agreement={min_agreement!r}"
        )
    return float(min_agreement)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def _check_windows(validation_inputs, validation_targets):
    arrays = {}
    for name, value in (("validation_inputs", validation_inputs),
                        ("validation_targets", validation_targets)):
        try:
            array = np.asarray(value)
        except Exception:  # noqa: BLE001 - ragged lists and the like
            array = None
        if (
            array is None
            or array.ndim != 2
            or array.size == 0
            or not np.issubdtype(array.dtype, np.integer)
        ):
            description = (
                f"an object of type {type(value).__name__}" if array is None
                else f"shape={array.shape}, dtype={array.dtype}"
            )
            raise ValueError(
                f"`{name}` must be a non-empty 2-D integer array of token ids, "
                f"(num_windows, sequence_length). Received: {name} with {description}"
            )
        arrays[name] = array
    x, y = arrays["validation_inputs"], arrays["validation_targets"]
    if x.shape != y.shape:
        raise ValueError(
            "`validation_inputs` and `validation_targets` must have the same shape "
            "(targets are the inputs shifted by one token). Received: "
            f"validation_inputs.shape={x.shape}, validation_targets.shape={y.shape}"
        )
    return x, y


def _check_ids_in_range(name, array, vocabulary):
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= vocabulary:
        raise ValueError(
            f"`{name}` must hold token ids in [0, {vocabulary}) (the width of the "
            f"graph's logits). Received: {name} with ids from {low} to {high}"
        )


def _load_graph(onnx_path):
    """The ModelProto, the token input, zero-state inputs and the logits output."""
    import onnx

    try:
        proto = onnx.load(onnx_path)
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file
        from keraseq.export.runtime import NOT_ONNX

        reason = (NOT_ONNX if type(error).__name__ == "DecodeError"  # protobuf's
                  else f"{type(error).__name__}: {_io._one_line(error)[:200]}")
        raise ValueError(
            f"`onnx_path` is not an ONNX model ({reason}). Received: onnx_path={onnx_path!r}"
        ) from None
    if not proto.graph.node or not proto.graph.output:
        raise ValueError(
            "`onnx_path` is not an ONNX model (its graph has no nodes or no "
            f"outputs). Received: onnx_path={onnx_path!r}"
        )
    return proto


def _io_plan(session, onnx_path):
    """(token input name and numpy dtype, {state input: width}, logits name)."""
    tokens, states = None, {}
    for value in session.get_inputs():
        if value.type in _INTEGER_TYPES and len(value.shape) == 2 and tokens is None:
            tokens = (value.name, np.int32 if value.type == "tensor(int32)" else np.int64)
        elif (
            value.name.startswith("state_in_")
            and value.type == "tensor(float)"
            and len(value.shape) == 2
            and isinstance(value.shape[1], int)
        ):
            states[value.name] = value.shape[1]  # zeros = the Keras initial state
        else:
            raise ValueError(
                "`onnx_path` must be a language-model graph: one integer input of "
                "token ids (batch, sequence) and optional float 'state_in_<i>' "
                f"inputs; input {value.name!r} ({value.type}, shape {value.shape}) "
                f"is neither. Received: onnx_path={onnx_path!r}"
            )
    if tokens is None:
        raise ValueError(
            "`onnx_path` has no integer input of token ids (batch, sequence). "
            f"Received: onnx_path={onnx_path!r}"
        )
    outputs = {value.name: value for value in session.get_outputs()}
    logits = outputs.get("logits") or session.get_outputs()[0]
    if logits.type != "tensor(float)" or len(logits.shape) != 3:
        raise ValueError(
            "`onnx_path` must output float logits (batch, sequence, vocabulary); "
            f"output {logits.name!r} is {logits.type} with shape {logits.shape}. "
            f"Received: onnx_path={onnx_path!r}"
        )
    return tokens, states, logits.name


# -- onnxruntime helpers -----------------------------------------------------------


def _session(path, threads):
    return _io.cpu_session(path, threads)


class _Runner:
    """Runs a language-model graph on token windows and returns its logits."""

    def __init__(self, session, plan):
        self.session = session
        (self.token_name, self.token_dtype), self.states, self.logits = plan

    def feeds(self, x):
        feeds = {self.token_name: x.astype(self.token_dtype, copy=False)}
        for name, width in self.states.items():
            feeds[name] = np.zeros((x.shape[0], width), np.float32)
        return feeds

    def evaluate(self, x, y, batch_size):
        """(mean next-token loss in nats, argmax ids (num_windows, sequence_length)),
        a batch at a time so that a large vocabulary's logits never all sit in
        memory."""
        total, argmax = 0.0, []
        for start in range(0, len(x), batch_size):
            (logits,) = self.session.run(
                [self.logits], self.feeds(x[start : start + batch_size])
            )  # (batch_size, sequence_length, vocabulary)
            check_logits_shape(logits, x[start : start + batch_size])
            total += next_token_loss(logits, y[start : start + batch_size]) * logits[..., 0].size
            argmax.append(logits.argmax(axis=-1))
        return total / y.size, np.concatenate(argmax)

    def latency_ms(self, x, repeats):
        feeds = self.feeds(x)
        self.session.run([self.logits], feeds)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.session.run([self.logits], feeds)
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)


def check_logits_shape(logits, x):
    if logits.ndim != 3 or logits.shape[:2] != x.shape:
        raise RuntimeError(
            f"The graph returned logits of shape {logits.shape} for token windows "
            f"of shape {x.shape}; expected (batch, sequence, vocabulary)"
        )


def next_token_loss(logits, targets):
    """Mean of `logsumexp(z) - z[y]` over every position, in nats (float64)."""
    z = logits.astype(np.float64)  # (num_windows, sequence_length, vocabulary)
    top = z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z - top).sum(axis=-1)) + top[..., 0]
    picked = np.take_along_axis(z, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    return float(np.mean(log_norm - picked))


# -- graph inspection ----------------------------------------------------------------


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                yield from _all_nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _all_nodes(sub)


def _name_nodes(proto):
    """Give every unnamed node a unique name (`nodes_to_exclude` goes by name)."""
    taken = {node.name for node in _all_nodes(proto.graph) if node.name}
    count = 0
    for node in _all_nodes(proto.graph):
        if not node.name:
            while f"keraseq_node_{count}" in taken:
                count += 1
            node.name = f"keraseq_node_{count}"
            taken.add(node.name)


def _model_ends(proto, logits_name):
    """Names of the embedding lookups (`Gather` on a constant table) and of the
    `MatMul`/`Gemm` that produces the logits (the first weighted node met
    walking back from the logits output)."""
    graph = proto.graph
    constants = {tensor.name for tensor in graph.initializer}
    constants |= {
        node.output[0] for node in graph.node if node.op_type == "Constant"
    }
    ends = [
        node.name for node in graph.node
        if node.op_type == "Gather" and node.input[0] in constants
    ]
    producer = {out: node for node in graph.node for out in node.output}
    pending, seen = [logits_name], set()
    while pending:
        name = pending.pop()
        node = producer.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in _WEIGHTED_OPS:
            if node.op_type in ("MatMul", "Gemm"):
                ends.append(node.name)
            continue
        pending.extend(i for i in node.input if i and i not in constants)
    return ends


def _op_types(proto):
    return sorted({node.op_type for node in _all_nodes(proto.graph)})


def _quantized_nodes(proto):
    """Float operator type -> number of its nodes now running in int8."""
    graphs = [proto.graph] + [
        a.g for n in _all_nodes(proto.graph) for a in n.attribute if a.g.node
    ]
    int8_constants = {
        tensor.name for graph in graphs for tensor in graph.initializer
        if tensor.data_type in (2, 3)  # UINT8, INT8
    }
    counts = collections.Counter()
    for node in _all_nodes(proto.graph):
        if node.op_type == "DynamicQuantizeLSTM":
            counts["LSTM"] += 1
        elif node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul",
                              "MatMulIntegerToFloat"):
            counts["MatMul"] += 1
        elif node.op_type == "Gather" and node.input[0] in int8_constants:
            counts["Gather"] += 1
        elif node.op_type in ("QAttention", "ConvInteger", "QGemm"):
            counts[node.op_type] += 1
    return dict(sorted(counts.items()))


@contextlib.contextmanager
def _quiet_preprocess_hint():
    """quantize_dynamic logs a pre-processing hint on the root logger every call."""

    class _Drop(logging.Filter):
        def filter(self, record):
            return _PREPROCESS_HINT not in str(record.getMessage())

    drop = _Drop()
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _quantize_to(proto, path, op_types, per_channel, reduce_range, exclude, settings):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    try:
        with _quiet_preprocess_hint():
            quantize_dynamic(
                model,
                path,
                op_types_to_quantize=list(op_types),
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude),
            )
    except Exception as error:  # noqa: BLE001 - reported with its type
        raise RuntimeError(
            f"onnxruntime.quantization.quantize_dynamic failed "
            f"({type(error).__name__}: {_io._one_line(error)[:300]})"
        ) from error
    quantized = onnx.load(path)
    entry = quantized.metadata_props.add()
    entry.key = "keraseq_quantization"
    entry.value = json.dumps(settings, sort_keys=True)
    with open(path, "wb") as handle:
        handle.write(quantized.SerializeToString())
    return _quantized_nodes(quantized)


# -- the entry point -------------------------------------------------------------------


def quantize_int8(
    onnx_path,
    out_path,
    *,
    validation_inputs,
    validation_targets,
    min_agreement=0.99,
    threads=2,
    op_types=None,
    per_channel=True,
    reduce_range=False,
    batch_size=32,
    latency_batch_sizes=(1, 32),
    latency_repeats=20,
    report_path=None,
):
    """Quantize a float language-model graph to int8, keeping it only if it agrees.

    `onnxruntime.quantization.quantize_dynamic` writes the int8 graph to a
    temporary file in `out_path`'s directory. The float and the int8 graph then
    both run (onnxruntime, CPU, `threads` intra-op threads) on the held-out
    windows `x = validation_inputs`, and for every position `(n, t)` with logits
    `z` and target `y = validation_targets[n, t]`:

        loss      = mean(logsumexp(z) - z[y])                 (nats)
        agreement = mean(argmax(z_float) == argmax(z_int8))

    If `agreement >= min_agreement` the temporary file is renamed onto
    `out_path` (atomic); otherwise it is removed and an existing `out_path` is
    left untouched. Without `op_types` two attempts are made, in order, and the
    first that passes ships: "full int8" (`LSTM`, `MatMul`, `Gather`) and
    "float ends" (the same, but the embedding `Gather` and the logits `MatMul`
    stay float; skipped if it would quantize nothing). See the module docstring
    for what each operator becomes and for the measurements behind these
    settings. The report also gives the file sizes and the median latency of
    one batch of the first `b` windows for every `b` in `latency_batch_sizes`
    (only for the attempt reported), and is saved as JSON to `report_path`.

    Graphs with a state input (a streaming step graph, `state_in_<i>`, float
    `(batch, units)`) are run with zero states, the Keras initial state.

    Args:
        onnx_path: str or os.PathLike, the float `.onnx` graph: one integer
            token input `(batch, sequence)` (plus optional `state_in_<i>`), and
            a float `logits` output (else the first output)
            `(batch, sequence, vocabulary)`.
        out_path: str or os.PathLike ending in `.onnx`, not `onnx_path`; its
            directory must exist.
        validation_inputs: int array `(num_windows, sequence_length)`, held-out
            token ids (`keraseq.text.windows(...)[0]`).
        validation_targets: int array of the same shape, the next token ids.
        min_agreement: float in (0, 1], default 0.99.
        threads: positive int, default 2: onnxruntime intra-op threads.
        op_types: default `None` (the two attempts above); else a list of
            operator types for one attempt, e.g. `["LSTM"]`.
        per_channel: bool, default True.
        reduce_range: bool, default False (7-bit weights, for CPUs without VNNI).
        batch_size: positive int, default 32: windows per onnxruntime call when
            computing the loss and agreement.
        latency_batch_sizes: default `(1, 32)`: batch sizes timed (clipped to
            `num_windows`, repeats dropped).
        latency_repeats: positive int, default 20.
        report_path: default `None`: where the JSON report goes; `None` means
            `<out_path without .onnx>.quantization.json`.

    Returns:
        A `QuantizationReport` (`shipped`, `reason`, `agreement`, `float_loss`,
        `int8_loss`, `loss_change`, `float_bytes`, `int8_bytes`, `latency`,
        `attempts`, ...); `report.table()` is the text a command line prints.

    Raises:
        ValueError: naming the argument and the value received: `min_agreement`
            outside (0, 1]; `onnx_path` missing, not ending in `.onnx`, not an
            ONNX model, or not a language-model graph; `out_path` not ending in
            `.onnx`, a directory, in a missing directory, or equal to
            `onnx_path`; inputs and targets not 2-D integer arrays of the same
            shape or with ids outside `[0, vocabulary)`; a bad `threads`,
            `op_types`, `batch_size`, `latency_batch_sizes` or
            `latency_repeats`.
        RuntimeError: `quantize_dynamic` or onnxruntime failed (no file is left
            behind).

    Example:

    ```python
    from keraseq import text
    from keraseq.export.quantize import int8_path, quantize_int8

    x, y = text.windows(validation_ids, sequence_length=100)
    report = quantize_int8("run/model.onnx", int8_path("run/model.onnx"),
                           validation_inputs=x, validation_targets=y)
    print(report.table())
    ```

    Reference:
        [Jacob et al., 2018, Quantization and Training of Neural Networks for
        Efficient Integer-Arithmetic-Only Inference](https://arxiv.org/abs/1712.05877);
        [onnxruntime quantization](https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html).
    """
    started = time.perf_counter()
    import onnxruntime

    min_agreement = _check_fraction(min_agreement)
    threads = _check_positive_int("threads", threads)
    batch_size = _check_positive_int("batch_size", batch_size)
    latency_repeats = _check_positive_int("latency_repeats", latency_repeats)
    if isinstance(latency_batch_sizes, (int, np.integer)) and not isinstance(
        latency_batch_sizes, bool
    ):
        latency_batch_sizes = (latency_batch_sizes,)
    if not isinstance(latency_batch_sizes, (list, tuple)) or not all(
        isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b > 0
        for b in latency_batch_sizes
    ):
        raise ValueError(
            "`latency_batch_sizes` must be a list of positive ints. "
            f"Received: latency_batch_sizes={latency_batch_sizes!r}"
        )
    if op_types is not None:
        if isinstance(op_types, str):
            op_types = [op_types]
        if (
            not isinstance(op_types, (list, tuple))
            or not op_types
            or not all(isinstance(t, str) and t for t in op_types)
        ):
            raise ValueError(
                "`op_types` must be None or a non-empty list of ONNX operator "
                f"types (e.g. ['LSTM', 'MatMul']). Received: op_types={op_types!r}"
            )
    for name, value in (("per_channel", per_channel), ("reduce_range", reduce_range)):
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be a bool. Received: {name}={value!r}")
    onnx_path = _io.check_onnx_path(onnx_path, "onnx_path", must_exist=True)
    out_path = _io.check_onnx_path(out_path, "out_path")
    if os.path.abspath(out_path) == os.path.abspath(onnx_path):
        raise ValueError(
            "`out_path` must differ from `onnx_path` (the float graph is kept). "
            f"Received: out_path={out_path!r}"
        )
    if report_path is not None and (
        not isinstance(report_path, (str, os.PathLike)) or os.path.isdir(report_path)
    ):
        raise ValueError(
            "`report_path` must be None or a file path. "
            f"Received: report_path={report_path!r}"
        )
    x, y = _check_windows(validation_inputs, validation_targets)

    proto = _load_graph(onnx_path)
    try:
        session = _session(onnx_path, threads)
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"`onnx_path` does not load in onnxruntime ({_io._one_line(error)[:300]}). "
            f"Received: onnx_path={onnx_path!r}"
        ) from None
    plan = _io_plan(session, onnx_path)
    float_runner = _Runner(session, plan)
    vocabulary = next(
        o.shape[-1] for o in session.get_outputs() if o.name == plan[2]
    )
    if not isinstance(vocabulary, int):  # a dynamic width: ask the graph
        vocabulary = float_runner.session.run([plan[2]], float_runner.feeds(x[:1, :1]))[0].shape[-1]
    _check_ids_in_range("validation_inputs", x, vocabulary)
    _check_ids_in_range("validation_targets", y, vocabulary)
    float_loss, float_argmax = float_runner.evaluate(x, y, batch_size)

    _name_nodes(proto)
    if op_types is None:
        plans = [
            ("full int8", list(DEFAULT_OP_TYPES), []),
            ("float ends", list(DEFAULT_OP_TYPES), _model_ends(proto, plan[2])),
        ]
    else:
        plans = [("custom", list(op_types), [])]

    attempts, kept = [], None  # kept: (attempt, temporary path, runner)
    shipped_attempt = None
    try:
        for name, types, exclude in plans:
            settings = {
                "name": name,
                "op_types": types,
                "per_channel": per_channel,
                "reduce_range": reduce_range,
                "weight_type": "QInt8",
                "nodes_to_exclude": exclude,
                "quantizer": f"onnxruntime.quantization.quantize_dynamic "
                             f"{onnxruntime.__version__}",
            }
            if name == "float ends" and not exclude:
                attempts.append({**settings, "quantized_nodes": {},
                                 "skipped": "no embedding Gather or logits MatMul found"})
                continue
            temporary = _atomic.temporary_path(out_path)  # a candidate next to out_path
            try:
                quantized = _quantize_to(
                    proto, temporary, types, per_channel, reduce_range, exclude,
                    settings,
                )
                attempt = {**settings, "quantized_nodes": quantized}
                if not quantized:
                    attempt["skipped"] = "no node to quantize"
                    attempts.append(attempt)
                    _atomic.discard(temporary)
                    continue
                if any(
                    a.get("quantized_nodes") == quantized and not a.get("skipped")
                    for a in attempts
                ):
                    attempt["skipped"] = "quantizes the same nodes as the attempt before"
                    attempts.append(attempt)
                    _atomic.discard(temporary)
                    continue
                runner = _Runner(_session(temporary, threads), plan)
                int8_loss, int8_argmax = runner.evaluate(x, y, batch_size)
                attempt.update(
                    agreement=float(np.mean(int8_argmax == float_argmax)),
                    int8_loss=int8_loss,
                    int8_bytes=os.path.getsize(temporary),
                    int8_sha256=_io.file_sha256(temporary),
                )
                attempt["passed"] = attempt["agreement"] >= min_agreement
                attempts.append(attempt)
            except BaseException:
                _atomic.discard(temporary)
                raise
            # Keep the file of the best attempt so far (a passing attempt is
            # always the best: every earlier one agreed less than it).
            if kept is None or attempt["agreement"] > kept[0]["agreement"]:
                if kept is not None:
                    _atomic.discard(kept[1])
                kept = (attempt, temporary, runner)
            else:
                _atomic.discard(temporary)
            if attempt["passed"]:
                shipped_attempt = attempt
                break

        latency = []
        if kept is not None:
            for size in sorted({min(int(b), len(x)) for b in latency_batch_sizes}):
                batch = x[:size]
                float_ms = float_runner.latency_ms(batch, latency_repeats)
                int8_ms = kept[2].latency_ms(batch, latency_repeats)
                latency.append({
                    "batch_size": size,
                    "float_ms": float_ms,
                    "int8_ms": int8_ms,
                    "speedup": float_ms / int8_ms,
                })
        existed = os.path.exists(out_path)
        if shipped_attempt is not None:
            candidate, kept = kept[1], None
            _atomic.publish(candidate, out_path)  # fsync, mode, rename; removed on failure
    finally:
        if kept is not None:
            _atomic.discard(kept[1])

    best = shipped_attempt or (
        max((a for a in attempts if not a.get("skipped")),
            key=lambda a: a["agreement"], default=None)
    )
    if shipped_attempt is not None:
        reason = None
    elif best is None:
        reason = (
            "no node to quantize (int8 covers LSTM, MatMul and Gather nodes with "
            f"constant weights; this graph's op types: {_op_types(proto)})"
        )
    else:
        reason = "next-token agreement " + ", ".join(
            f"{a['agreement']:.4f} ({a['name']})" for a in attempts if not a.get("skipped")
        ) + f" below min_agreement={min_agreement:g}"
    float_bytes = os.path.getsize(onnx_path)
    report = QuantizationReport(
        onnx_path=onnx_path,
        onnx_sha256=_io.file_sha256(onnx_path),
        out_path=out_path,
        int8_sha256=None if best is None else best["int8_sha256"],
        report_path=None,
        shipped=shipped_attempt is not None,
        reason=reason,
        existing_out_kept=shipped_attempt is None and existed,
        min_agreement=min_agreement,
        agreement=None if best is None else best["agreement"],
        float_loss=float_loss,
        int8_loss=None if best is None else best["int8_loss"],
        loss_change=None if best is None else best["int8_loss"] - float_loss,
        float_bytes=float_bytes,
        int8_bytes=None if best is None else best["int8_bytes"],
        size_ratio=None if best is None else best["int8_bytes"] / float_bytes,
        latency=latency,
        settings={} if best is None else {
            k: best[k] for k in ("name", "op_types", "per_channel", "reduce_range",
                                 "weight_type", "nodes_to_exclude")
        },
        quantized_nodes={} if best is None else dict(best["quantized_nodes"]),
        attempts=attempts,
        num_windows=int(x.shape[0]),
        sequence_length=int(x.shape[1]),
        num_tokens=int(x.size),
        threads=threads,
        onnxruntime_version=onnxruntime.__version__,
        seconds=0.0,
    )
    report.seconds = time.perf_counter() - started
    report.save(report_path)
    return report


def quantize_for_export(onnx_path, out_path, validation_inputs, validation_targets,
                        min_agreement=0.99):
    """What `keraseq export DIR --quantize int8` runs.

    `quantize_int8` with the defaults (2 threads, the two attempts) of the float
    graph `onnx_path` to `out_path` (`None`: `int8_path(onnx_path)`, i.e.
    `model.onnx` → `model.int8.onnx`); the report goes next to it
    (`model.int8.quantization.json`). Returns the `QuantizationReport`; print
    `report.table()`, and `report.shipped` says whether the file was written.
    """
    if out_path is None:
        out_path = int8_path(_io.check_onnx_path(onnx_path, "onnx_path", must_exist=True))
    return quantize_int8(
        onnx_path,
        out_path,
        validation_inputs=validation_inputs,
        validation_targets=validation_targets,
        min_agreement=min_agreement,
    )
