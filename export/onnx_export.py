"""Keras model -> ONNX graph with a dynamic batch and sequence axis.

The conversion always runs under the TensorFlow backend, where a Keras recurrent
layer traces to a `tf.while_loop` that tf2onnx turns into an ONNX `Loop` (or a
native `LSTM` node for Keras's own LSTM) with a dynamic time axis. A model
trained under JAX or PyTorch is saved to a temporary `.keras` archive and
converted in a child process started with `KERAS_BACKEND=tensorflow`:
`model.export(format="onnx")` under those backends either bakes the sequence
length into the graph (PyTorch traces and unrolls the Python loop) or cannot
export reversed scans (JAX), and its numbers were wrong for recurrent layers.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from keraseq import _atomic
from keraseq.export import _io

# Environment variable set in the conversion child so that it never spawns a
# child of its own.
_CHILD_MARKER = "KERASEQ_EXPORT_CHILD"
# Prefix of the error line the conversion child prints last on stderr.
_ERROR_PREFIX = "keraseq.export error: "
METHODS = ("auto", "native", "tf2onnx")
_AUTO_INPUT_NAME = re.compile(r"^keras_tensor(_\d+)?$|^input_layer(_\d+)?$")


@dataclasses.dataclass
class ExportResult:
    """What `export_onnx` wrote.

    Attributes:
        path: the `.onnx` file.
        opset: the default-domain ONNX opset of the graph.
        input_names, input_shapes, input_dtypes: one entry per graph input; a
            shape lists ints for static axes and names (`"batch"`,
            `"sequence"`) for dynamic ones; dtypes are numpy names (`"int32"`).
        output_names, output_shapes, output_dtypes: the same for the outputs,
            in the order of the Keras model's (flattened) outputs.
        source_backend: the Keras backend the model came from (`"unknown"` for
            a file whose backend was not given).
        keras_version: the Keras version that converted the model.
        converted_in: `"in-process"` (TensorFlow backend) or `"subprocess"`.
        seconds: wall-clock time of the whole export.
        method: the converter used: `"native"` (ONNX operators written from
            the layers, `keraseq.export.native`) or `"tf2onnx"`.
        fallback_reason: with `method="auto"`, why the native exporter could
            not take the model (the layer and setting), else `None`.
    """

    path: str
    opset: int
    input_names: list
    input_shapes: list
    input_dtypes: list
    output_names: list
    output_shapes: list
    output_dtypes: list
    source_backend: str
    keras_version: str
    converted_in: str
    seconds: float
    method: str = "tf2onnx"
    fallback_reason: str = None

    def to_dict(self):
        return dataclasses.asdict(self)


def export_onnx(
    model_or_path,
    path,
    opset=None,
    input_names=None,
    output_names=None,
    *,
    source_backend=None,
    method="auto",
):
    """Export a Keras model to an ONNX file with dynamic batch and sequence axes.

    By default (`method="auto"`) the graph is written natively from the layers
    (`keraseq.export.native`: one ONNX `LSTM` / `RNN` node per recurrent
    layer, fused attention, no TensorFlow) when every layer has a converter.
    Otherwise — and always with `method="tf2onnx"` — the model is traced
    under the TensorFlow backend with an input signature
    whose batch axis (0) and, when the Keras input leaves it unspecified,
    sequence axis (1) are dynamic, and converted by tf2onnx. Dynamic axes of the
    graph inputs and outputs are named `"batch"` (axis 0) and `"sequence"`
    (axis 1). The graph is checked with `onnx.checker.check_model`, loaded once
    in onnxruntime, tagged with metadata (`keraseq_version`, `keras_version`,
    `source_backend`, `converter`) and written atomically: a temporary file in
    the destination directory is renamed onto `path`, so on any failure no file
    is left behind and an existing `path` is untouched.

    Under the TensorFlow backend the conversion runs in this process. Under JAX
    or PyTorch a model object is saved to a temporary `.keras` archive and
    `python -m keraseq.export._convert` converts it in a child process with
    `KERAS_BACKEND=tensorflow`; its error is re-raised here. Layers that are
    neither Keras built-ins nor keraseq layers must therefore be importable
    (registered) in that child.

    Args:
        model_or_path: a functional or Sequential `keras.Model`, the path of a
            `.keras` file, or a directory containing `model.keras`.
        path: str or os.PathLike ending in `.onnx`; its directory must exist.
        opset: int or `None` (default): the default-domain ONNX opset: 17 to
            23 for the native exporter, 13 to 18 for tf2onnx (1.17 writes at
            most 18). `None`: 17, or 23 for a native graph with attention (the
            `Attention` operator's). An explicit opset is kept: a native layer
            that needs a newer one makes `"auto"` fall back to tf2onnx.
        input_names: default `None`: list of graph input names, one per model
            input. `None` gives `"tokens"` for a single integer input, else the
            Keras input names (auto-generated ones become `input_<i>`).
        output_names: default `None`: list of graph output names, one per
            (flattened) model output. `None` gives `"logits"` for a
            single-output model with a single integer input, the keys for a
            dict-output model, else the Keras output names.
        source_backend: default `None`: the backend the model was trained
            under, recorded in the metadata. `None` means the current backend for
            a model object and `"unknown"` for a path.
        method: default `"auto"`: the converter. `"native"` writes the graph
            from the layers with `keraseq.export.native` in this process, under
            any backend and without TensorFlow (native ONNX `LSTM` / `RNN` /
            attention nodes); a layer it cannot express raises
            `NativeUnsupported` naming the layer. `"tf2onnx"` traces the model
            under TensorFlow (recurrent cells become an ONNX `Loop`). `"auto"`
            tries native and falls back to tf2onnx for the whole model when a
            layer has no native converter; `ExportResult.method` and
            `fallback_reason` say which ran and why.

    Returns:
        An `ExportResult` (path, opset, input/output names, shapes and dtypes,
        source backend, seconds).

    Raises:
        ValueError: a bad argument (named with the value received: a missing
            path, a directory without `model.keras`, a file that is not a
            `.keras` archive, an opset out of range, a `path` not ending in
            `.onnx`, wrong name counts), or a conversion child that failed with
            a ValueError.
        RuntimeError: the conversion, the ONNX check or onnxruntime failed.

    Example:

    ```python
    result = export_onnx("runs/lm/model.keras", "lm.onnx")
    report = check_parity("runs/lm/model.keras", result.path)
    ```
    """
    start = time.perf_counter()
    import keras

    from keraseq.export.native import MAX_NATIVE_OPSET

    if opset is None:
        pass  # native: what the graph needs; tf2onnx: its default
    elif method == "tf2onnx":
        _io.check_opset(opset)
    elif isinstance(opset, bool) or not isinstance(opset, int) or not (
        _io.MIN_OPSET <= opset <= MAX_NATIVE_OPSET
    ):
        raise ValueError(
            f"`opset` must be None or an int between {_io.MIN_OPSET} and {MAX_NATIVE_OPSET} "
            f"(17 and above for the native exporter, {_io.MAX_OPSET} at most for "
            f"tf2onnx). Received: opset={opset!r}"
        )
    tf2onnx_opset = _io.DEFAULT_OPSET if opset is None else opset
    path = _io.check_onnx_path(path, "path")
    input_names = _io.check_names(input_names, "input_names")
    output_names = _io.check_names(output_names, "output_names")
    if source_backend is not None and not isinstance(source_backend, str):
        raise ValueError(
            "`source_backend` must be None or a str. "
            f"Received: source_backend={source_backend!r}"
        )
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {METHODS}. "
            f"Received: method={method!r}"
        )
    if _io.is_model(model_or_path):
        model_or_path = _io.load_model(model_or_path)  # checks it has inputs
        if source_backend is None:
            source_backend = keras.backend.backend()
    elif isinstance(model_or_path, (str, os.PathLike)):
        _io.resolve_keras_path(model_or_path)
        if source_backend is None:
            source_backend = "unknown"
    else:
        _io.load_model(model_or_path)  # raises the ValueError for the type

    fallback = None
    if method in ("auto", "native"):
        from keraseq.export import native

        model = _io.load_model(model_or_path)
        try:
            if method == "auto" and opset is not None and opset < native.DEFAULT_OPSET:
                raise native.NativeUnsupported(
                    None, f"asks for opset {opset} (the native exporter writes "
                    f"{native.DEFAULT_OPSET} to {native.MAX_NATIVE_OPSET})")
            proto = native.build_native_model(
                model, opset, input_names, output_names, source_backend
            )
        except native.NativeUnsupported as error:
            if method == "native":
                raise
            fallback = str(error).replace(f"; {native.FALLBACK_HINT}", "")
            model_or_path = model
        else:
            _io.atomic_write_bytes(proto.SerializeToString(), path)
            info = describe_onnx_model(proto)
            converted_in, used = "in-process", "native"
    if method == "tf2onnx" or fallback is not None:
        used, opset = "tf2onnx", tf2onnx_opset
        try:
            info, converted_in = _export_tf2onnx(
                model_or_path, path, opset, input_names, output_names, source_backend
            )
        except (ValueError, RuntimeError, ImportError) as error:
            if fallback is None:
                raise
            message = " ".join(str(error).split())
            raise type(error)(
                f"The native exporter cannot take the model ({fallback}) and the tf2onnx "
                f"fallback failed: {message}"
            ) from error
    return ExportResult(
        path=path,
        opset=info["opset"],
        input_names=info["input_names"],
        input_shapes=info["input_shapes"],
        input_dtypes=info["input_dtypes"],
        output_names=info["output_names"],
        output_shapes=info["output_shapes"],
        output_dtypes=info["output_dtypes"],
        source_backend=source_backend,
        keras_version=keras.__version__,
        converted_in=converted_in,
        seconds=time.perf_counter() - start,
        method=used,
        fallback_reason=fallback,
    )


def _export_tf2onnx(model_or_path, path, opset, input_names, output_names, source_backend):
    """tf2onnx: in this process under TensorFlow, else in a TensorFlow child.
    Returns (graph description, "in-process" | "subprocess")."""
    import keras

    _io.check_opset(opset)
    if keras.backend.backend() == "tensorflow":
        model = _io.load_model(model_or_path)
        proto = build_onnx_model(model, opset, input_names, output_names, source_backend)
        _io.atomic_write_bytes(proto.SerializeToString(), path)
        return describe_onnx_model(proto), "in-process"
    info = _export_in_subprocess(
        model_or_path, path, opset, input_names, output_names, source_backend
    )
    return info, "subprocess"


def _refuse_stateful(model):
    """tf2onnx drops the state update of a stateful recurrent layer silently
    (GUIDE §1: the second chunk differs by ~0.19), so refuse such models."""
    pending = list(getattr(model, "layers", []))
    while pending:
        layer = pending.pop()
        if getattr(layer, "stateful", False):
            raise ValueError(
                f"`model_or_path` has a stateful layer ({layer.name!r}, "
                f"{type(layer).__name__}(stateful=True)); its state would not carry "
                "between ONNX calls. Rebuild it with stateful=False and copy the "
                "weights before exporting."
            )
        pending.extend(getattr(layer, "layers", []))
        pending.extend(
            sub for sub in (getattr(layer, "forward_layer", None),
                            getattr(layer, "backward_layer", None)) if sub is not None
        )


# -- naming ------------------------------------------------------------------


def _is_integer_dtype(dtype):
    return str(dtype).startswith(("int", "uint"))


def default_input_names(inputs):
    if len(inputs) == 1 and _is_integer_dtype(inputs[0].dtype):
        return ["tokens"]
    names = []
    for index, tensor in enumerate(inputs):
        name = str(getattr(tensor, "name", "") or "")
        if not name or _AUTO_INPUT_NAME.match(name):
            name = f"input_{index}"
        names.append(_sanitize(name, f"input_{index}"))
    return _dedupe(names)


def default_output_names(model, inputs, paths):
    if len(paths) == 1 and len(inputs) == 1 and _is_integer_dtype(inputs[0].dtype):
        return ["logits"]
    if paths and all(len(p) == 1 and isinstance(p[0], str) for p in paths):
        names = [p[0] for p in paths]  # dict outputs: their keys
    else:
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != len(paths):
            names = [f"output_{i}" for i in range(len(paths))]
    names = [_sanitize(name, f"output_{i}") for i, name in enumerate(names)]
    return _dedupe(names)


def _sanitize(name, fallback):
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
    if not name or not re.match(r"[A-Za-z_]", name[0]):
        name = fallback
    return name


def _dedupe(names):
    seen, out = {}, []
    for name in names:
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 0)
        out.append(name)
    return out


# -- in-process conversion (TensorFlow backend) --------------------------------


def build_onnx_model(model, opset, input_names=None, output_names=None,
                     source_backend="tensorflow"):
    """Convert `model` (under the TensorFlow backend) to a checked ModelProto."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "build_onnx_model needs KERAS_BACKEND=tensorflow; use export_onnx, "
            f"which converts in a child process. Current backend: "
            f"{keras.backend.backend()}"
        )
    import onnx
    import tensorflow as tf
    import tf2onnx

    _refuse_stateful(model)
    inputs = _io.model_inputs(model)
    if input_names is None:
        input_names = default_input_names(inputs)
    _io.check_names(input_names, "input_names", count=len(inputs))
    paths = [p for p, _ in keras.tree.flatten_with_path(model.output)]
    if output_names is None:
        output_names = default_output_names(model, inputs, paths)
    _io.check_names(output_names, "output_names", count=len(paths))

    specs = []
    for tensor, name in zip(inputs, input_names):
        shape = list(tensor.shape)
        if shape:
            shape[0] = None  # batch axis; axis 1 stays as the Keras input says
        specs.append(tf.TensorSpec(shape, tf.as_dtype(tensor.dtype), name=name))

    def forward(*args):
        outputs = model(args[0] if len(args) == 1 else list(args), training=False)
        flat = keras.tree.flatten(outputs)
        return {name: tf.identity(t) for name, t in zip(output_names, flat)}

    function = tf.function(forward, input_signature=specs, autograph=False)
    try:
        # Trace on the CPU so that no GPU-only kernel (cuDNN RNN) is captured.
        with tf.device("/cpu:0"):
            proto, _ = tf2onnx.convert.from_function(
                function, input_signature=specs, opset=opset
            )
    except Exception as error:  # noqa: BLE001 - the arguments were checked above
        raise RuntimeError(
            f"tf2onnx could not convert the model ({type(error).__name__}: "
            f"{_io._one_line(error)})"
        ) from error

    _order_outputs(proto.graph, output_names)
    _fill_static_output_dims(proto.graph, keras.tree.flatten(model.output))
    name_dynamic_axes(proto.graph)
    _set_metadata(proto, {
        "keraseq_version": _keraseq_version(),
        "keras_version": keras.__version__,
        "source_backend": source_backend or "unknown",
        "converter": f"tf2onnx {tf2onnx.__version__}",
    })
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as error:  # noqa: BLE001
        raise RuntimeError(
            f"The converted graph fails onnx.checker ({_io._one_line(error)})"
        ) from error
    _check_loads_in_onnxruntime(proto)
    return proto


def _order_outputs(graph, names):
    by_name = {value.name: value for value in graph.output}
    if set(by_name) != set(names):
        raise RuntimeError(
            f"The converted graph's outputs {sorted(by_name)} do not match the "
            f"requested output names {names}"
        )
    ordered = [type(by_name[n])() for n in names]
    for copy, name in zip(ordered, names):
        copy.CopyFrom(by_name[name])
    del graph.output[:]
    graph.output.extend(ordered)


def _fill_static_output_dims(graph, keras_outputs):
    """Write the sizes Keras knows (all but the batch axis) into the graph's
    output shapes; tf2onnx loses some through a `Loop` (a fixed-length model's
    sequence axis comes out as `unk__N`)."""
    for value, tensor in zip(graph.output, keras_outputs):
        dims = value.type.tensor_type.shape.dim
        shape = tuple(tensor.shape)
        if len(dims) != len(shape):
            continue
        for axis in range(1, len(shape)):
            if shape[axis] is not None and not dims[axis].HasField("dim_value"):
                dims[axis].dim_value = int(shape[axis])


def name_dynamic_axes(graph):
    """Name the dynamic axis 0 `batch` and axis 1 `sequence` on the graph's
    inputs and outputs (tf2onnx writes `unk__N`), and rename the same symbols in
    `value_info`."""
    renamed = {}
    for value in list(graph.input) + list(graph.output):
        if not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, label in ((0, "batch"), (1, "sequence")):
            if axis < len(dims) and not dims[axis].HasField("dim_value"):
                old = dims[axis].dim_param
                if old and old != label:
                    renamed.setdefault(old, label)
                dims[axis].dim_param = label
    for value in graph.value_info:
        if value.type.HasField("tensor_type"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_param") and dim.dim_param in renamed:
                    dim.dim_param = renamed[dim.dim_param]


def _set_metadata(proto, props):
    existing = {p.key: p.value for p in proto.metadata_props}
    existing.update({k: str(v) for k, v in props.items()})
    del proto.metadata_props[:]
    for key, value in existing.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _keraseq_version():
    try:
        import keraseq

        return str(keraseq.__version__)
    except Exception:  # noqa: BLE001 - the metadata must not break the export
        return "unknown"


def _check_loads_in_onnxruntime(proto):
    import onnxruntime

    try:
        onnxruntime.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # noqa: BLE001
        raise RuntimeError(
            f"onnxruntime cannot load the converted graph ({_io._one_line(error)})"
        ) from error


def describe_onnx_model(proto):
    """Opset and input/output names, shapes and dtypes of a ModelProto."""
    from onnx import helper

    def describe(values):
        names, shapes, dtypes = [], [], []
        for value in values:
            tensor_type = value.type.tensor_type
            names.append(value.name)
            shapes.append([
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor_type.shape.dim
            ])
            dtypes.append(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name)
        return names, shapes, dtypes

    opset = next(
        (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None
    )
    in_names, in_shapes, in_dtypes = describe(proto.graph.input)
    out_names, out_shapes, out_dtypes = describe(proto.graph.output)
    return {
        "opset": opset,
        "input_names": in_names,
        "input_shapes": in_shapes,
        "input_dtypes": in_dtypes,
        "output_names": out_names,
        "output_shapes": out_shapes,
        "output_dtypes": out_dtypes,
    }


# -- conversion in a TensorFlow child process ----------------------------------


def _export_in_subprocess(model_or_path, path, opset, input_names, output_names,
                          source_backend):
    if os.environ.get(_CHILD_MARKER):
        raise RuntimeError(
            "The ONNX conversion child did not start under the TensorFlow "
            "backend (KERAS_BACKEND=tensorflow was not honoured)."
        )
    with tempfile.TemporaryDirectory(prefix="keraseq-export-") as scratch:
        if _io.is_model(model_or_path):
            inputs = _io.model_inputs(model_or_path)
            _io.check_names(input_names, "input_names", count=len(inputs))
            source = os.path.join(scratch, "model.keras")
            model_or_path.save(source)
        else:
            source = _io.resolve_keras_path(model_or_path)
        # The child writes into a temporary name next to `path`; only a complete
        # file is renamed onto `path` (keraseq._atomic).
        with _atomic.atomic_path(path) as staging:
            info = _run_child(
                source, staging, opset, input_names, output_names, source_backend
            )
    info["path"] = path
    return info


def _run_child(source, destination, opset, input_names, output_names,
               source_backend):
    command = [
        sys.executable, "-m", "keraseq.export._convert", source, destination,
        "--opset", str(opset), "--source-backend", source_backend,
    ]
    if input_names:
        command += ["--input-names", ",".join(input_names)]
    if output_names:
        command += ["--output-names", ",".join(output_names)]
    env = dict(os.environ)
    env.update({
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # The conversion traces on the CPU; keep TensorFlow off the GPU that the
        # parent (JAX / PyTorch) may hold.
        "CUDA_VISIBLE_DEVICES": "",
        _CHILD_MARKER: "1",
    })
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        kind, message = _child_error(completed.stderr)
        text = (
            f"{message} (ONNX conversion subprocess under the TensorFlow backend, "
            f"exit code {completed.returncode})"
        )
        raise (ValueError if kind == "ValueError" else RuntimeError)(text)
    for line in reversed(completed.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise RuntimeError(
        "The ONNX conversion subprocess printed no result line. stdout tail: "
        f"{completed.stdout[-500:]!r}"
    )


def _child_error(stderr):
    """(exception type name, message) from the child's stderr."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(_ERROR_PREFIX):
            detail = line[len(_ERROR_PREFIX):]
            kind, _, message = detail.partition(": ")
            return kind, message or detail
    for line in reversed(lines):
        match = re.match(r"^([A-Za-z_][\w.]*(Error|Exception)): (.*)$", line)
        if match:
            return match.group(1).rsplit(".", 1)[-1], match.group(3)
    return "RuntimeError", (lines[-1] if lines else "no error output")
