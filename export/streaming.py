"""Parity of streaming ONNX graphs against the full-sequence Keras model.

A streaming export (`keraseq.export.native.export_streaming`) writes either a
recurrent step graph (`model.step.onnx`, states as explicit inputs and
outputs) or an attention prefill / decode pair with a key / value cache. This
module feeds those graphs the way a generator does — one token at a time, and
in two chunks with the state (or cache) carried between them — and compares
the logits at every position with the Keras model run once on the whole
sequence, under the current backend.

Element rule (the same as `check_parity`): `|onnx − keras| ≤ atol + rtol ·
rowmax|keras|`, where rowmax is the largest |logit| of that position's row.
"""

import dataclasses
import json
import os

import numpy as np

from keraseq.export import _io


@dataclasses.dataclass
class StreamingReport:
    """Outcome of `check_streaming_parity`.

    Attributes:
        cases: one dict per way of feeding the graphs: `case`
            (`"token by token"` or `"two chunks (k + n-k)"`), `batch`,
            `length`, `max_abs`, `tolerance_ratio` (max of |diff| / bound; ≤ 1
            passes), `argmax_agreement` (share of positions with the same most
            likely next token), `ok`.
        passed: every case ok.
        max_abs: largest |onnx − keras| over all cases.
        atol, rtol: the tolerance used.
        graphs: file name → hex sha256 of each graph checked (`model.step.onnx`,
            or `model.prefill.onnx` and `model.decode.onnx`): a report whose
            hashes are not those of the graphs beside it describes another
            export.
    """

    cases: list
    passed: bool
    max_abs: float
    atol: float
    rtol: float
    graphs: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        return dataclasses.asdict(self)

    def table(self):
        """The cases as a fixed-width text table (the style of `ParityReport`)."""
        header = ("streaming case", "batch", "length", "max_abs", "tol_ratio", "argmax", "ok")
        rows = [
            (c["case"], str(c["batch"]), str(c["length"]), f"{c['max_abs']:.3e}",
             f"{c['tolerance_ratio']:.3f}", f"{c['argmax_agreement']:.4f}",
             "ok" if c["ok"] else "FAIL")
            for c in self.cases
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        line = lambda r: "  ".join(  # noqa: E731
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))
        ).rstrip()
        return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _metadata(session):
    raw = session.get_modelmeta().custom_metadata_map.get("keraseq_streaming")
    if raw is None:
        raise ValueError("the graph has no `keraseq_streaming` metadata: not a streaming export")
    return json.loads(raw)


def run_step_graph(session, tokens, chunks):
    """Logits `(batch, length, vocab)` of a recurrent step graph fed `tokens`
    in consecutive chunks of the given lengths, states carried between them."""
    meta = _metadata(session)
    batch = tokens.shape[0]
    states = {s["input"]: np.zeros((batch, s["size"]), np.float32) for s in meta["states"]}
    outputs, start = [], 0
    for size in chunks:
        result = session.run(None, {"tokens": tokens[:, start : start + size], **states})
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, result))
        outputs.append(values["logits"])
        states = {s["input"]: values[s["output"]] for s in meta["states"]}
        start += size
    return np.concatenate(outputs, axis=1)


def run_cache_graphs(prefill, decode, tokens, chunks):
    """Logits of an attention prefill / decode pair: the first chunk through
    prefill, each further chunk through decode with the cache carried."""
    names = [o.name for o in prefill.get_outputs()]
    values = dict(zip(names, prefill.run(None, {"tokens": tokens[:, : chunks[0]]})))
    outputs, start = [values["logits"]], chunks[0]
    decode_inputs = [i.name for i in decode.get_inputs() if i.name != "tokens"]
    decode_outputs = [o.name for o in decode.get_outputs()]
    for size in chunks[1:]:
        feed = {"tokens": tokens[:, start : start + size]}
        for name in decode_inputs:
            feed[name] = values[name.replace("past_", "present_")]
        values = dict(zip(decode_outputs, decode.run(None, feed)))
        outputs.append(values["logits"])
        start += size
    return np.concatenate(outputs, axis=1)


def check_streaming_parity(model, files, tokens, atol=1e-5, rtol=1e-5, threads=None,
                           split=None):
    """Check streaming graphs against `model(tokens)` at every position.

    Args:
        model: the Keras language model (token ids → logits), current backend.
        files: dict mode → path as returned by `export_streaming`: `{"step":
            ...}` or `{"prefill": ..., "decode": ...}`.
        tokens: int array `(batch_size, sequence_length)`, sequence_length ≥ 2.
        atol: float, default 1e-5. rtol: float, default 1e-5 (relative to the
            row's largest |logit|).
        threads: onnxruntime intra-op threads, default `None` (its default).
        split: where the two-chunk case splits, default `sequence_length // 2`.

    Returns:
        A `StreamingReport` with the cases "token by token" and "two chunks".

    Raises:
        ValueError: `tokens` not a 2-D integer array with ≥ 2 steps, or
            `files` without the graphs of either kind.
    """
    import keras

    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.dtype.kind not in "iu" or tokens.shape[1] < 2:
        raise ValueError(
            "`tokens` must be an integer array of shape (batch_size, sequence_length) "
            f"with sequence_length >= 2. Received: shape={tokens.shape}, dtype={tokens.dtype}"
        )
    tokens = tokens.astype(np.int32)
    length = tokens.shape[1]
    split = length // 2 if split is None else split
    reference = np.asarray(keras.ops.convert_to_numpy(model(tokens)), np.float64)
    if "step" in files:
        session = _io.cpu_session(files["step"], threads)
        run = lambda chunks: run_step_graph(session, tokens, chunks)  # noqa: E731
    elif "prefill" in files and "decode" in files:
        prefill = _io.cpu_session(files["prefill"], threads)
        decode = _io.cpu_session(files["decode"], threads)
        run = lambda chunks: run_cache_graphs(prefill, decode, tokens, chunks)  # noqa: E731
    else:
        raise ValueError(
            "`files` must hold 'step' or 'prefill' and 'decode'. "
            f"Received: files={sorted(files)!r}"
        )
    cases = []
    for label, chunks in (
        ("token by token", [1] * length),
        (f"two chunks ({split} + {length - split})", [split, length - split]),
    ):
        got = run(chunks).astype(np.float64)
        diff = np.abs(got - reference)
        bound = atol + rtol * np.abs(reference).max(axis=-1, keepdims=True)
        agreement = float(np.mean(got.argmax(-1) == reference.argmax(-1)))
        ratio = float((diff / bound).max())
        cases.append({
            "case": label, "batch": int(tokens.shape[0]), "length": int(length),
            "max_abs": float(diff.max()), "tolerance_ratio": ratio,
            "argmax_agreement": agreement, "ok": bool(ratio <= 1.0),
        })
    return StreamingReport(
        cases=cases,
        passed=all(c["ok"] for c in cases),
        max_abs=max(c["max_abs"] for c in cases),
        atol=atol,
        rtol=rtol,
        graphs={os.path.basename(os.fspath(files[mode])): _io.file_sha256(files[mode])
                for mode in ("step", "prefill", "decode") if mode in files},
    )


def save_report(report, path):
    """Write `report` as JSON, atomically."""
    _io.atomic_write_json(report.to_dict(), path)
    return str(path)
