"""Argument checks, model loading and atomic file writes shared by the exporter
and the parity checker.

Nothing here imports TensorFlow, tf2onnx, onnx or onnxruntime; Keras is imported
only inside the functions that need a model.
"""

import contextlib
import hashlib
import math
import os
import re
import zipfile

from keraseq import _atomic

# ONNX opsets tf2onnx 1.17 can write (it refuses 19 and above: "Opset 19 is not
# supported yet") and that onnxruntime 1.32 runs. Below 13 the converter falls
# back to older operator versions (Squeeze/Unsqueeze with attributes, Split
# without a `split` input) that we do not test.
MIN_OPSET = 13
MAX_OPSET = 18
DEFAULT_OPSET = 17  # what tf2onnx writes when the caller does not choose

# What a graph input / output name may look like (a TensorFlow op name that is
# also a readable ONNX value name).
_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def check_opset(opset):
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ValueError(
            f"`opset` must be an int between {MIN_OPSET} and {MAX_OPSET}. "
            f"Received: opset={opset!r}"
        )
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"`opset` must be between {MIN_OPSET} and {MAX_OPSET} (the opsets "
            f"tf2onnx 1.17 writes and this pipeline tests). Received: opset={opset!r}"
        )


def check_onnx_path(path, argument="path", must_exist=False):
    """Return `path` as a str after checking it names a `.onnx` file."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"`{argument}` must be a str or os.PathLike ending in '.onnx'. "
            f"Received: {argument}={path!r}"
        )
    path = os.fspath(path)
    if not path.endswith(".onnx"):
        raise ValueError(
            f"`{argument}` must end in '.onnx'. Received: {argument}={path!r}"
        )
    if must_exist:
        if not os.path.isfile(path):
            raise ValueError(
                f"`{argument}` does not exist or is not a file. "
                f"Received: {argument}={path!r}"
            )
    else:
        if os.path.isdir(path):
            raise ValueError(
                f"`{argument}` is a directory, not a file name. "
                f"Received: {argument}={path!r}"
            )
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ValueError(
                f"The directory of `{argument}` does not exist ({parent}). "
                f"Received: {argument}={path!r}"
            )
    return path


def check_names(names, argument, count=None):
    """`None` or a list of distinct valid names (of length `count` if given)."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(
        isinstance(name, str) for name in names
    ):
        raise ValueError(
            f"`{argument}` must be None or a list of str. Received: {argument}={names!r}"
        )
    names = list(names)
    bad = [name for name in names if not _NAME_PATTERN.match(name)]
    if bad:
        raise ValueError(
            f"`{argument}` entries must start with a letter or '_' and contain only "
            f"letters, digits, '_', '.', '-'. Received: {argument}={names!r}"
        )
    if len(set(names)) != len(names):
        raise ValueError(
            f"`{argument}` must not repeat a name. Received: {argument}={names!r}"
        )
    if count is not None and len(names) != count:
        raise ValueError(
            f"`{argument}` must have one name per model "
            f"{'input' if 'input' in argument else 'output'} ({count}). "
            f"Received: {argument}={names!r}"
        )
    return names


def resolve_keras_path(model_or_path, argument="model_or_path"):
    """Check that a path names a loadable `.keras` archive and return it as str.

    A directory is accepted when it contains `model.keras` (a keraseq run
    directory).
    """
    path = os.fspath(model_or_path)
    if not os.path.exists(path):
        raise ValueError(
            f"`{argument}` does not exist. Received: {argument}={path!r}"
        )
    if os.path.isdir(path):
        candidate = os.path.join(path, "model.keras")
        if not os.path.isfile(candidate):
            raise ValueError(
                f"`{argument}` is a directory without a 'model.keras' file. "
                f"Received: {argument}={path!r}"
            )
        path = candidate
    if not path.endswith(".keras"):
        raise ValueError(
            f"`{argument}` is not a .keras file (the name must end in '.keras'). "
            f"Received: {argument}={path!r}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        names = None
    if names is None or "config.json" not in names:
        raise ValueError(
            f"`{argument}` is not a .keras file (not a zip archive holding "
            f"config.json). Received: {argument}={path!r}"
        )
    return path


def is_model(obj):
    import keras

    return isinstance(obj, keras.Model)


def load_model(model_or_path, argument="model_or_path"):
    """A `keras.Model` as is, or the model stored in a `.keras` file/run dir."""
    import keras

    if isinstance(model_or_path, keras.Model):
        model = model_or_path
    elif isinstance(model_or_path, (str, os.PathLike)):
        path = resolve_keras_path(model_or_path, argument)
        _register_keraseq_layers()
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as error:  # noqa: BLE001 - reported with its type
            raise ValueError(
                f"`{argument}` could not be loaded as a Keras model "
                f"({type(error).__name__}: {_one_line(error)}). "
                f"Received: {argument}={os.fspath(model_or_path)!r}"
            ) from error
    else:
        raise ValueError(
            f"`{argument}` must be a keras.Model or the path of a .keras file "
            f"(or of a directory holding model.keras). "
            f"Received: {argument}={model_or_path!r}"
        )
    model_inputs(model, argument)  # raises if the model has no symbolic inputs
    return model


def model_inputs(model, argument="model_or_path"):
    """The model's symbolic inputs (functional / built Sequential models)."""
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"`{argument}` must be a functional or Sequential model with defined "
            f"inputs (built from keras.Input). Received: {argument}={model!r}"
        )
    return inputs


def _register_keraseq_layers():
    """Importing keraseq.layers registers keraseq's layers for deserialization
    (`import keraseq` alone loads them lazily)."""
    with contextlib.suppress(ImportError):
        import keraseq.layers  # noqa: F401


def cpu_session(path, threads=None):
    """An onnxruntime CPU `InferenceSession` of the graph at `path`, logging
    errors only; `threads` (default `None`: onnxruntime's choice) sets the
    intra-op threads and then one inter-op thread."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings would bury the command line's output
    return onnxruntime.InferenceSession(
        os.fspath(path), options, providers=["CPUExecutionProvider"]
    )


def _one_line(error):
    return " ".join(str(error).split())


def file_sha256(path, chunk_size=1 << 20):
    """The hex sha256 of the bytes of the file `path`, read in 1 MiB chunks:
    what the reports record of the graph they describe, and the
    `keraseq_model_sha256` metadata of the streaming graphs."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(data, path):
    """Write `data` to `path` atomically (`keraseq._atomic.write_bytes`): the
    target appears complete or not at all, an existing one untouched on failure."""
    _atomic.write_bytes(path, data)


def json_safe(value):
    """Replace non-finite floats (not valid JSON) by the strings 'inf'/'nan'."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def atomic_write_json(obj, path):
    """Write `obj` as strict JSON (non-finite floats as strings, see
    `json_safe`) to `path` atomically."""
    _atomic.write_json(path, json_safe(obj), indent=2, allow_nan=False)
