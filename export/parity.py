"""Numerical parity between a Keras model (in the current backend) and its ONNX
export (onnxruntime, CPU)."""

import dataclasses
import json
import math
import os
import time

import numpy as np

from keraseq.export import _io

_TINY = 1e-12  # floor of |reference| in the relative difference
_DEFAULT_TRAINING_LENGTH = 32


@dataclasses.dataclass
class ParityReport:
    """Outcome of `check_parity`.

    Attributes:
        cases: one dict per (input case, output): `case` (label), `batch`,
            `length`, `output`, `shape`, `max_abs`, `max_rel`, `max_abs_index`
            (position of the largest |keras - onnx|), `tolerance_ratio`
            (`max |keras - onnx| / (atol + rtol·rowmax|keras|)`, at most 1 when every
            element is within its bound), `worst_index` (position of that
            largest ratio), `worst_keras`, `worst_onnx` and `worst_bound` (the
            two values there and their bound `atol + rtol·rowmax|keras|`),
            `argmax_agreement` (share of positions whose argmax over the last
            axis agree; `None` for outputs whose last axis has size 1),
            `first_argmax_mismatch` (position, or `None`), `ok`, and `error` (a
            message when a runtime failed or the shapes differ, then `output`
            is `"*"` if no output could be compared; else `None`).
        passed: every element of every case within `atol + rtol·rowmax|keras|`
            and full argmax agreement.
        max_abs: the largest absolute difference over all cases.
        max_rel: the largest difference relative to its row's largest |keras|.
        tolerance_ratio: the largest tolerance ratio over all cases (at most 1
            when every element is within its bound).
        atol, rtol: the tolerances used.
        failure: `None` when passed, else a sentence naming the worst case, the
            element (batch, time, feature) furthest past its bound with its
            Keras value and the bound, and the argmax agreement.
        backend: the Keras backend the reference ran under.
        onnx_path, report_path: the graph checked and the JSON report written.
        onnx_sha256: the hex sha256 of the graph file checked: a report whose
            hash is not the graph's beside it describes another export (a
            crash between the two renames of `keraseq export`).
        batch_sizes, sequence_lengths, seed: what the random cases used
            (`sequence_lengths` is `[None]` for a model without a time axis).
        seconds: wall-clock time of the check.
    """

    cases: list
    passed: bool
    max_abs: float
    max_rel: float
    tolerance_ratio: float
    atol: float
    rtol: float
    failure: object
    backend: str
    onnx_path: str
    onnx_sha256: str
    report_path: object
    batch_sizes: list
    sequence_lengths: list
    seed: int
    seconds: float

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self, indent=2):
        return json.dumps(_io.json_safe(self.to_dict()), indent=indent, allow_nan=False)

    def table(self):
        """A fixed-width text table, one row per (case, output)."""
        header = ("case", "batch", "length", "output", "max_abs", "max_rel",
                  "tol_ratio", "argmax", "ok")
        rows = [header]
        for c in self.cases:
            agreement = c.get("argmax_agreement")
            rows.append((
                c["case"],
                "-" if c.get("batch") is None else str(c["batch"]),
                "-" if c.get("length") is None else str(c["length"]),
                c["output"],
                _fmt(c["max_abs"]),
                _fmt(c["max_rel"]),
                _fmt_ratio(c.get("tolerance_ratio")),
                "-" if agreement is None else f"{agreement:.4f}",
                "ok" if c["ok"] else ("ERROR" if c.get("error") else "FAIL"),
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        right = {1, 2, 4, 5, 6, 7}
        lines = []
        for index, row in enumerate(rows):
            cells = [
                cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            ]
            lines.append("  ".join(cells).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def summary(self):
        """One line: PASSED/FAILED, the largest differences and the tolerance."""
        verdict = "PASSED" if self.passed else "FAILED"
        return (
            f"ONNX parity {verdict}: max |keras - onnx| = {_fmt(self.max_abs)} "
            f"(max relative {_fmt(self.max_rel)}), tolerance "
            f"{self.tolerance_text()} (largest tolerance ratio "
            f"{_fmt_ratio(self.tolerance_ratio)}) over {len(self.cases)} case(s), "
            f"Keras backend {self.backend}"
        )

    def tolerance_text(self):
        """The pass bound as text, e.g. `"1e-05 + 1e-05·rowmax|keras|"`."""
        return _tolerance_text(self.atol, self.rtol)

    def format_failure(self):
        """The text a command line prints on failure: summary, failure and
        table (an empty string when the check passed)."""
        return format_failure(self)


def format_failure(report):
    """Summary line, failure sentence and table of a failed `ParityReport`;
    `""` when it passed."""
    if report.passed:
        return ""
    return f"{report.summary()}\n{report.failure}\n\n{report.table()}"


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3e}"


def _fmt_ratio(value):
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3f}" if value < 1e3 else f"{value:.3e}"


def _tolerance_text(atol, rtol):
    return f"{atol:g} + {rtol:g}·rowmax|keras|" if rtol else f"{atol:g}"


def check_parity(
    model_or_path,
    onnx_path,
    inputs=None,
    *,
    batch_sizes=(1, 7),
    sequence_lengths=None,
    training_length=None,
    atol=1e-5,
    rtol=1e-5,
    seed=0,
    report_path=None,
):
    """Compare a Keras model with its ONNX export on real and random inputs.

    The Keras model runs in the current process and backend through
    `model.predict` (a JAX-trained model is compared as JAX computes it), the
    graph in onnxruntime's
    CPUExecutionProvider. Cases: every batch in `inputs` ("held-out batch k"),
    then random inputs ("random") for every batch size in `batch_sizes` and
    every length in `sequence_lengths` (default `(1, T, 3·T)` with
    `T = training_length`). Integer inputs get tokens drawn uniformly from
    `[0, vocab)` (vocab: the `input_dim`/`vocabulary_size` of the first
    embedding layer, else 2); float inputs standard normal float32. For each
    case and output it records

        max_abs = max |k - o|,  max_rel = max |k - o| / max(rowmax|k|, 1e-12),
        tolerance_ratio = max |k - o| / (atol + rtol·rowmax|k|),

    where `k` is Keras's output and `o` onnxruntime's (maxima over elements),
    the positions of `max_abs` and of the largest ratio and, for outputs whose
    last axis is wider than 1, the argmax agreement
    `mean(argmax(k, -1) == argmax(o, -1))` (next-token agreement of a language
    model). A case passes when every element satisfies
    `|k - o| <= atol + rtol·rowmax|k|`, where `rowmax|k|` is the largest `|k|`
    over the last axis (the logit row; `|k|` itself for a last axis of size 1),
    i.e. `tolerance_ratio <= 1`, and the agreement is 1. The relative term is
    there because float32 round-off accumulated over a few hundred recurrent
    steps and a long dot product grows with the magnitude of the output, and
    spreads over the whole row (a logit of 0.3 next to one of 19 carries the
    same ~3e-5 error; measured): a trained
    character LSTM with logits up to |19| differs by 1.3e-5 to 3.5e-5 between
    any Keras backend and onnxruntime (about 1e-6 of the largest logit, argmax
    identical), which
    an absolute 1e-5 alone would fail although it is below float32 resolution
    at that magnitude; `atol` still governs outputs of magnitude up to about 1.
    A model whose Keras input has a fixed length is only checked at that length
    (Keras refuses others). The report is written as JSON to `report_path`
    (atomically).

    Args:
        model_or_path: a `keras.Model`, a `.keras` file, or a directory holding
            `model.keras`.
        onnx_path: str or os.PathLike, an existing `.onnx` file.
        inputs: default `None`: a list of batches; each batch an array (single
            input model), a list of arrays (model input order) or a dict keyed by
            Keras or ONNX input names.
        batch_sizes: default `(1, 7)`: batch sizes of the random cases (an
            empty tuple skips the random cases).
        sequence_lengths: default `None`: lengths of the random cases; `None`
            means `(1, training_length, 3 * training_length)`. Lengths past the
            `sequence_length` of a learned position embedding are replaced by
            that length (the model cannot run them).
        training_length: default `None`: the model's static input length if it
            has one, else 32.
        atol: float, default `1e-5`: absolute part of the bound
            `atol + rtol·rowmax|keras|` (float32 round-off of a few hundred steps for
            outputs of magnitude up to about 1).
        rtol: float, default `1e-5`: relative part of that bound (about 80
            float32 ulps); `0` makes the check purely absolute.
        seed: int, default 0: seed of the random inputs.
        report_path: default `None`: where the JSON goes; `None` means
            `<onnx_path without .onnx>.parity.json`.

    Returns:
        A `ParityReport`; `.passed` is False when any element of any case
        exceeds `atol + rtol·rowmax|keras|` or an argmax disagrees, and `.failure`
        then names the case, the position (batch, time, feature) of the element
        furthest past its bound with its Keras value and the bound, and the
        argmax agreement.

    Raises:
        ValueError: a bad argument, named with the value received.
    """
    start = time.perf_counter()
    import keras

    onnx_path = _io.check_onnx_path(onnx_path, "onnx_path", must_exist=True)
    batch_sizes = _check_int_tuple(batch_sizes, "batch_sizes", allow_empty=True)
    if sequence_lengths is not None:
        sequence_lengths = _check_int_tuple(sequence_lengths, "sequence_lengths")
    if training_length is not None and not _is_positive_int(training_length):
        raise ValueError(
            "`training_length` must be None or a positive int. "
            f"Received: training_length={training_length!r}"
        )
    _check_tolerance(atol, "atol")
    _check_tolerance(rtol, "rtol")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    if report_path is None:
        report_path = onnx_path[: -len(".onnx")] + ".parity.json"
    elif not isinstance(report_path, (str, os.PathLike)) or os.path.isdir(report_path):
        raise ValueError(
            "`report_path` must be None or a file path. "
            f"Received: report_path={report_path!r}"
        )
    report_path = os.fspath(report_path)
    if inputs is not None and not isinstance(inputs, (list, tuple)):
        raise ValueError(
            "`inputs` must be None or a list of batches (arrays, lists of arrays "
            f"or dicts). Received: inputs={type(inputs).__name__}"
        )
    if not inputs and not batch_sizes:
        raise ValueError(
            "Nothing to compare: `inputs` is empty and `batch_sizes` is empty. "
            f"Received: inputs={inputs!r}, batch_sizes={batch_sizes!r}"
        )

    model = _io.load_model(model_or_path)
    model_inputs = _io.model_inputs(model)
    session, onnx_inputs, onnx_outputs = _open_session(onnx_path)
    if len(onnx_inputs) != len(model_inputs):
        raise ValueError(
            f"`onnx_path` has {len(onnx_inputs)} input(s) but the model has "
            f"{len(model_inputs)}. Received: onnx_path={onnx_path!r}"
        )

    static_length = _static_length(model_inputs)
    if training_length is None:
        training_length = static_length or _DEFAULT_TRAINING_LENGTH
    if static_length is not None:
        lengths = [static_length]
    elif sequence_lengths is not None:
        lengths = list(sequence_lengths)
    else:
        lengths = list(dict.fromkeys(
            (1, training_length, 3 * training_length)))
    max_length = _max_sequence_length(model)
    if max_length is not None and any(n > max_length for n in lengths):
        # A learned position table cannot go past its size: check up to it.
        lengths = list(dict.fromkeys(
            [n for n in lengths if n < max_length] + [max_length]))
    if not any(_has_sequence_axis(t) for t in model_inputs):
        lengths = [None]  # no sequence axis

    cases = []
    for index, batch in enumerate(inputs or []):
        arrays = _normalize_batch(batch, index, model_inputs, onnx_inputs)
        cases.append((f"held-out batch {index}", arrays))
    rng = np.random.default_rng(seed)
    vocab = _vocabulary_size(model)
    for batch_size in batch_sizes:
        for length in lengths:
            arrays = [
                _random_input(rng, t, batch_size, length, vocab) for t in model_inputs
            ]
            cases.append(("random", arrays))

    rows = []
    for label, arrays in cases:
        rows.extend(_compare_case(
            model, session, label, arrays, onnx_inputs, onnx_outputs, atol, rtol
        ))

    passed = all(row["ok"] for row in rows)
    report = ParityReport(
        cases=rows,
        passed=passed,
        max_abs=float(max((row["max_abs"] for row in rows), default=0.0)),
        max_rel=float(max((row["max_rel"] for row in rows), default=0.0)),
        tolerance_ratio=float(
            max((row["tolerance_ratio"] for row in rows), default=0.0)),
        atol=float(atol),
        rtol=float(rtol),
        failure=None if passed else _describe_failure(rows, atol, rtol),
        backend=keras.backend.backend(),
        onnx_path=onnx_path,
        onnx_sha256=_io.file_sha256(onnx_path),
        report_path=report_path,
        batch_sizes=list(batch_sizes),
        sequence_lengths=lengths,
        seed=seed,
        seconds=0.0,
    )
    report.seconds = time.perf_counter() - start
    _io.atomic_write_json(report.to_dict(), report_path)
    return report


# -- arguments ---------------------------------------------------------------


def _is_positive_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _check_tolerance(value, argument):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"`{argument}` must be a finite number >= 0. "
            f"Received: {argument}={value!r}"
        )


def _check_int_tuple(values, argument, allow_empty=False):
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = (values,)
    if (
        not isinstance(values, (list, tuple))
        or not all(_is_positive_int(v) for v in values)
        or (not values and not allow_empty)
    ):
        raise ValueError(
            f"`{argument}` must be a {'' if allow_empty else 'non-empty '}tuple of "
            f"positive ints. Received: {argument}={values!r}"
        )
    return tuple(int(v) for v in values)


# -- inputs --------------------------------------------------------------------


def _open_session(onnx_path):
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(
            onnx_path, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # noqa: BLE001
        from keraseq.export.runtime import onnx_load_problem

        foreign, reason = onnx_load_problem(error)
        verb = ("is not an ONNX model onnxruntime can load" if foreign
                else "could not be loaded by onnxruntime")
        raise ValueError(
            f"`onnx_path` {verb} ({reason}). Received: onnx_path={onnx_path!r}"
        ) from None
    return session, session.get_inputs(), [o.name for o in session.get_outputs()]


def _has_sequence_axis(tensor):
    """Axis 1 is a time axis for `(batch, time, features...)` inputs and for
    integer `(batch, time)` token inputs; a float `(batch, features)` has none."""
    rank = len(tensor.shape)
    return rank >= 3 or (rank == 2 and _is_integer(tensor.dtype))


def _is_integer(dtype):
    return np.issubdtype(np.dtype(str(dtype)), np.integer)


def _static_length(model_inputs):
    lengths = {t.shape[1] for t in model_inputs if _has_sequence_axis(t)}
    known = {n for n in lengths if n is not None}
    if known and None not in lengths and len(known) == 1:
        return int(known.pop())
    return None


def _vocabulary_size(model):
    """input_dim / vocabulary_size of the first embedding-like layer, else 2."""
    for layer in _walk_layers(model):
        size = getattr(layer, "vocabulary_size", None)
        if not _is_positive_int(size) and "Embedding" in type(layer).__name__:
            size = getattr(layer, "input_dim", None)
        if _is_positive_int(size):
            return int(size)
    return 2


def _max_sequence_length(model):
    """The smallest `sequence_length` of the model's embedding-like layers (a
    learned position table), or None."""
    found = [
        int(layer.sequence_length)
        for layer in _walk_layers(model)
        if "Embedding" in type(layer).__name__
        and _is_positive_int(getattr(layer, "sequence_length", None))
        # TokenAndPositionEmbedding(positional="sine") has no table: any length.
        and getattr(layer, "positional", "learned") == "learned"
    ]
    return min(found) if found else None


def _walk_layers(model):
    """Every layer reachable from the model, depth first, each once."""
    import keras

    seen, stack, ordered = set(), list(reversed(model.layers)), []
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        ordered.append(layer)
        children = list(getattr(layer, "layers", None) or [])
        children += [v for v in vars(layer).values() if isinstance(v, keras.layers.Layer)]
        stack.extend(reversed(children))
    return ordered


def _random_input(rng, tensor, batch_size, length, vocab):
    shape = [batch_size]
    sequence = _has_sequence_axis(tensor)
    for axis, size in enumerate(tensor.shape[1:], start=1):
        if axis == 1 and sequence and length is not None:
            shape.append(length)
        else:
            shape.append(4 if size is None else int(size))
    dtype = np.dtype(str(tensor.dtype))
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, vocab, size=shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.standard_normal(shape).astype(dtype)


def _normalize_batch(batch, index, model_inputs, onnx_inputs):
    """A held-out batch as a list of numpy arrays in model input order."""
    count = len(model_inputs)
    if isinstance(batch, dict):
        arrays = []
        for position, tensor in enumerate(model_inputs):
            keys = (getattr(tensor, "name", None), onnx_inputs[position].name)
            key = next((k for k in keys if k in batch), None)
            if key is None:
                raise ValueError(
                    f"`inputs[{index}]` has no entry for model input {position} "
                    f"(tried {keys}). Received keys: {sorted(batch)}"
                )
            arrays.append(batch[key])
    elif isinstance(batch, (list, tuple)) and count > 1:
        arrays = list(batch)
    else:
        arrays = [batch]
    if len(arrays) != count:
        raise ValueError(
            f"`inputs[{index}]` must hold {count} array(s), one per model input. "
            f"Received: {len(arrays)}"
        )
    out = []
    for array, tensor in zip(arrays, model_inputs):
        array = np.asarray(array)
        if array.ndim != len(tensor.shape):
            raise ValueError(
                f"`inputs[{index}]` must have rank {len(tensor.shape)} (model input "
                f"shape {tuple(tensor.shape)}). Received shape: {array.shape}"
            )
        out.append(array.astype(np.dtype(str(tensor.dtype)), copy=False))
    return out


# -- comparison ------------------------------------------------------------------


def _keras_outputs(model, arrays):
    """The model's inference outputs through `predict`, the whole batch as one
    step: jit-compiled and cached per shape on JAX (an eager call recompiles
    every `scan`), a tf.function on TensorFlow, `no_grad` on PyTorch."""
    import keras

    outputs = model.predict(
        arrays[0] if len(arrays) == 1 else list(arrays),
        batch_size=int(arrays[0].shape[0]),
        verbose=0,
    )
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(outputs)]


def _onnx_outputs(session, arrays, onnx_inputs, onnx_outputs):
    feed = {}
    for array, spec in zip(arrays, onnx_inputs):
        feed[spec.name] = array.astype(_ORT_TYPES.get(spec.type, array.dtype), copy=False)
    return session.run(onnx_outputs, feed)


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _compare_case(
    model, session, label, arrays, onnx_inputs, onnx_outputs, atol, rtol
):
    batch = int(arrays[0].shape[0]) if arrays[0].ndim else None
    length = next(
        (int(a.shape[1]) for a in arrays
         if a.ndim >= 3 or (a.ndim == 2 and np.issubdtype(a.dtype, np.integer))),
        None,
    )
    base = {"case": label, "batch": batch, "length": length}
    try:
        reference = _keras_outputs(model, arrays)
    except Exception as error:  # noqa: BLE001 - reported as a failed case
        return [_error_row(base, "*", f"Keras failed: {_io._one_line(error)}")]
    try:
        candidate = _onnx_outputs(session, arrays, onnx_inputs, onnx_outputs)
    except Exception as error:  # noqa: BLE001
        return [_error_row(base, "*", f"onnxruntime failed: {_io._one_line(error)}")]
    if len(reference) != len(candidate):
        return [_error_row(
            base, "*",
            f"Keras gave {len(reference)} output(s), ONNX {len(candidate)}",
        )]
    rows = []
    for name, k, o in zip(onnx_outputs, reference, candidate):
        rows.append(_compare_output(base, name, k, np.asarray(o), atol, rtol))
    return rows


def _error_row(base, output, message):
    return {
        **base, "output": output, "shape": None, "max_abs": math.inf,
        "max_rel": math.inf, "max_abs_index": None, "tolerance_ratio": math.inf,
        "worst_index": None, "worst_keras": None, "worst_onnx": None,
        "worst_bound": None, "argmax_agreement": None,
        "first_argmax_mismatch": None, "ok": False, "error": message,
    }


def _row_scale(k):
    """`max |k|` over the last axis (kept), the magnitude the relative tolerance
    refers to. Round-off in a recurrent state spreads over a whole logit row, so
    a small logit next to large ones carries the large ones' error; for a last
    axis of size 1 (or a scalar) this is just `|k|`."""
    magnitude = np.abs(k)
    if k.ndim == 0 or k.shape[-1] <= 1:
        return magnitude
    with np.errstate(invalid="ignore"):
        return np.broadcast_to(np.max(magnitude, axis=-1, keepdims=True), k.shape)


def _compare_output(base, name, reference, candidate, atol, rtol):
    """One report row: Keras's `reference` against onnxruntime's `candidate`.

    An element passes when `|k - o| <= atol + rtol·rowmax|k|` (NaN against NaN and
    equal infinities count as equal); the row passes when every element does
    and, for a last axis wider than 1, every argmax over it agrees.
    """
    if reference.shape != candidate.shape:
        return _error_row(
            base, name,
            f"shape mismatch: Keras {reference.shape}, ONNX {candidate.shape}",
        )
    k = reference.astype(np.float64)
    o = candidate.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(k == o, 0.0, np.abs(k - o))
    diff = np.where(np.isnan(k) & np.isnan(o), 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = _row_scale(k)
    with np.errstate(invalid="ignore", over="ignore"):
        bound = atol + rtol * scale  # NaN where k is NaN
    # An infinite difference never passes, even against an infinite bound.
    within = (diff == 0.0) | (np.isfinite(diff) & (diff <= bound))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ratio = np.where(diff == 0.0, 0.0, diff / bound)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    worst = {
        "tolerance_ratio": 0.0, "worst_index": None, "worst_keras": None,
        "worst_onnx": None, "worst_bound": None,
    }
    if diff.size:
        flat = int(np.argmax(diff))
        max_abs = float(diff.reshape(-1)[flat])
        position = [int(i) for i in np.unravel_index(flat, diff.shape)]
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            rel = diff / np.maximum(scale, _TINY)
        rel = np.where(np.isnan(rel), np.inf, rel)
        max_rel = float(rel.max())
        flat = int(np.argmax(ratio))
        worst = {
            "tolerance_ratio": float(ratio.reshape(-1)[flat]),
            "worst_index": [int(i) for i in np.unravel_index(flat, ratio.shape)],
            "worst_keras": float(k.reshape(-1)[flat]),
            "worst_onnx": float(o.reshape(-1)[flat]),
            "worst_bound": float(bound.reshape(-1)[flat]),
        }
    else:
        max_abs, position, max_rel = 0.0, None, 0.0
    agreement, mismatch = None, None
    if reference.ndim >= 1 and reference.shape[-1] > 1 and diff.size:
        same = np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)
        agreement = float(np.mean(same))
        if not same.all():
            mismatch = [int(i) for i in np.argwhere(~same)[0]]
    ok = bool(within.all()) and (agreement is None or agreement == 1.0)
    return {
        **base, "output": name, "shape": list(reference.shape),
        "max_abs": max_abs, "max_rel": max_rel, "max_abs_index": position,
        **worst,
        "argmax_agreement": agreement, "first_argmax_mismatch": mismatch,
        "ok": bool(ok), "error": None,
    }


_AXES = {1: ("batch",), 2: ("batch", "feature"), 3: ("batch", "time", "feature")}


_ARGMAX_AXES = {1: ("batch",), 2: ("batch", "time")}


def _position_text(index, axes=_AXES):
    if index is None:
        return "(no position)"
    names = axes.get(len(index))
    if names is None:
        return "(" + ", ".join(str(i) for i in index) + ")"
    return "(" + ", ".join(f"{n}={i}" for n, i in zip(names, index)) + ")"


def _describe_failure(rows, atol, rtol):
    failing = [row for row in rows if not row["ok"]]
    errors = [row for row in failing if row.get("error")]
    row = errors[0] if errors else max(failing, key=lambda r: r["tolerance_ratio"])
    where = (
        f"{row['case']!r} (batch={row['batch']}, length={row['length']}), "
        f"output {row['output']!r}"
    )
    if row.get("error"):
        return f"Parity failed on {where}: {row['error']}"
    text = f"Parity failed on {where}"
    if row["worst_index"] is not None:
        ratio = row["tolerance_ratio"]
        side = "above" if ratio > 1.0 else "within"
        gap = abs(row["worst_keras"] - row["worst_onnx"])
        text += (
            f": |keras - onnx| = {_fmt(math.inf if math.isnan(gap) else gap)}"
            f" at {_position_text(row['worst_index'])}, where keras = "
            f"{row['worst_keras']:.7g} and onnx = {row['worst_onnx']:.7g}, {side} "
            f"the bound {_tolerance_text(atol, rtol)} = {_fmt(row['worst_bound'])} "
            f"(tolerance ratio {_fmt_ratio(ratio)})"
        )
        if row["max_abs_index"] != row["worst_index"]:
            text += (
                f"; max |keras - onnx| = {_fmt(row['max_abs'])} at "
                f"{_position_text(row['max_abs_index'])}"
            )
    if row["argmax_agreement"] is not None:
        text += f"; argmax agreement {row['argmax_agreement']:.4f}"
        if row["first_argmax_mismatch"] is not None:
            text += (
                " (first disagreement at "
                f"{_position_text(row['first_argmax_mismatch'], _ARGMAX_AXES)})"
            )
    return text
