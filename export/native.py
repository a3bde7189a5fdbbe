"""Keras recurrent language model -> ONNX with native `LSTM` / `RNN` operators.

An opt-in alternative to the tf2onnx path of `export_onnx`: the graph is written
directly with `onnx.helper` from the layers' attributes and weights, so keraseq's
recurrent layers become one ONNX `LSTM` / `RNN` node each instead of a `Loop`.
No TensorFlow is imported: it runs in-process under any Keras backend.

Supported: a functional model that is a simple chain
`Input((None,), int32)` → `keras.layers.Embedding` (no `mask_zero`) → one or
more `keraseq.LSTM` / `keraseq.SimpleRNN` with `return_sequences=True` (not
stateful, no `return_state`; LSTM with `activation="tanh"`,
`recurrent_activation="sigmoid"`; SimpleRNN with `tanh`, `relu` or `sigmoid`,
optionally `output_units`) → optional linear `keras.layers.Dense`. Anything
else raises `ValueError` naming the layer. Dropout is ignored (inference).
"""

import numpy as np

from keraseq.export import _io
from keraseq.export.onnx_weights import lstm_to_onnx, simple_rnn_to_onnx

_RNN_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}
_FALLBACK = "use method='tf2onnx'"


def _unsupported(layer, why):
    return ValueError(
        f"`model` layer {layer.name!r} ({type(layer).__name__} {why}) has no "
        f"native converter yet; {_FALLBACK}"
    )


def _activation_name(function):
    """The Keras name of a built-in activation function, else `None`.

    Read from the layer attribute, not `get_config()`: Keras's config
    serialization imports TensorFlow when it is installed.
    """
    import keras

    name = getattr(function, "__name__", None)
    if name and getattr(keras.activations, name, None) is function:
        return name
    return None


def _numpy(variable):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


class _Graph:
    def __init__(self, opset):
        from onnx import helper

        self.helper = helper
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self._count = 0

    def name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint, array):
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, hint, outputs=1, **attrs):
        names = [self.name(f"{hint}_{op.lower()}") for _ in range(outputs)]
        self.nodes.append(
            self.helper.make_node(op, inputs, names, name=self.name(hint), **attrs)
        )
        return names[0] if outputs == 1 else names


def _check_chain(model):
    import keras

    inputs = _io.model_inputs(model, "model")
    if len(inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "`model` must have exactly one input and one output for the native "
            f"exporter; {_FALLBACK}. Received: {len(inputs)} inputs, "
            f"{len(model.outputs)} outputs"
        )
    layers = list(model.layers)
    if not layers or not isinstance(layers[0], keras.layers.InputLayer):
        raise ValueError(f"`model` must be a functional model; {_FALLBACK}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 2 or "int" not in str(inputs[0].dtype):
        raise ValueError(
            "`model` input must be integer token ids of shape (batch_size, "
            f"sequence_length); {_FALLBACK}. Received: shape={shape}, "
            f"dtype={inputs[0].dtype}"
        )
    previous = layers[0]
    for layer in layers[1:]:
        if isinstance(layer, keras.layers.Embedding) and layer.mask_zero:
            raise _unsupported(layer, "with mask_zero=True")
        try:
            connected = layer.input is previous.output
        except (AttributeError, ValueError):
            connected = False
        if not connected:
            raise _unsupported(layer, "not fed by the single previous layer")
        previous = layer
    if previous.output is not model.outputs[0]:
        raise ValueError(f"`model` output is not its last layer's; {_FALLBACK}")
    return layers[1:]


def _recurrent(graph, layer, x, time_major):
    from keraseq.layers.lstm import LSTM
    from keraseq.layers.simple_rnn import SimpleRNN

    if not layer.return_sequences:
        raise _unsupported(layer, "with return_sequences=False")
    for flag in ("return_state", "stateful"):
        if getattr(layer, flag, False):
            raise _unsupported(layer, f"with {flag}=True")
    cell = layer.cell
    bias = _numpy(cell.bias) if getattr(cell, "bias", None) is not None else None
    kernel, recurrent = _numpy(cell.kernel), _numpy(cell.recurrent_kernel)
    activation = _activation_name(cell.activation)
    attrs = {"hidden_size": int(cell.units)}
    if isinstance(layer, LSTM):
        recurrent_activation = _activation_name(cell.recurrent_activation)
        if activation != "tanh" or recurrent_activation != "sigmoid":
            raise _unsupported(
                layer,
                f"with activation={activation!r}, recurrent_activation="
                f"{recurrent_activation!r}; only tanh/sigmoid",
            )
        op = "LSTM"
        w, r, b = lstm_to_onnx(kernel, recurrent, bias)
    elif isinstance(layer, SimpleRNN):
        if activation not in _RNN_ACTIVATIONS:
            raise _unsupported(
                layer, f"with activation={activation!r}; only tanh, relu, sigmoid"
            )
        op = "RNN"
        w, r, b = simple_rnn_to_onnx(kernel, recurrent, bias)
        if activation != "tanh":
            attrs["activations"] = [_RNN_ACTIVATIONS[activation]]
    else:  # pragma: no cover - the caller dispatches on these two types
        raise _unsupported(layer, "of an unknown recurrent type")
    go_backwards = bool(layer.go_backwards)
    attrs["direction"] = "reverse" if go_backwards else "forward"
    if graph.opset >= 14:
        attrs["layout"] = 0
    if not time_major:
        x = graph.node("Transpose", [x], layer.name, perm=[1, 0, 2])
    inputs = [
        x,
        graph.const(f"{layer.name}_W", w),
        graph.const(f"{layer.name}_R", r),
        graph.const(f"{layer.name}_B", b),
    ]
    y = graph.node(op, inputs, layer.name, **attrs)  # (T, 1, batch, units)
    y = graph.node(
        "Squeeze", [y, graph.const("axes", np.array([1], np.int64))], layer.name
    )
    if go_backwards:
        # ONNX aligns a reverse pass's outputs with the input positions; Keras
        # returns them in processing order (last input step first).
        y = graph.node(
            "Slice",
            [
                y,
                graph.const("starts", np.array([-1], np.int64)),
                graph.const("ends", np.array([np.iinfo(np.int64).min], np.int64)),
                graph.const("axes", np.array([0], np.int64)),
                graph.const("steps", np.array([-1], np.int64)),
            ],
            layer.name,
        )
    if getattr(layer, "output_units", None) is not None:
        y = graph.node(
            "MatMul", [y, graph.const(f"{layer.name}_Wy", _numpy(cell.output_kernel))],
            layer.name,
        )
        y = graph.node(
            "Add", [y, graph.const(f"{layer.name}_by", _numpy(cell.output_bias))],
            layer.name,
        )
    return y


def build_native_model(
    model, opset=17, input_name="tokens", output_name="logits", source_backend=None
):
    """The `onnx.ModelProto` of `model` (see `export_native`), checked."""
    import keras
    import onnx
    from onnx import TensorProto, helper

    from keraseq.export import onnx_export
    from keraseq.layers.lstm import LSTM
    from keraseq.layers.simple_rnn import SimpleRNN

    _io.check_opset(opset)
    if not _io.is_model(model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={model!r}")
    layers = _check_chain(model)
    graph = _Graph(opset)
    x, time_major, seen_embedding, seen_recurrent = input_name, False, False, False
    for layer in layers:
        if isinstance(layer, keras.layers.Embedding) and not seen_embedding:
            table = graph.const(f"{layer.name}_table", _numpy(layer.embeddings))
            x = graph.node("Gather", [table, x], layer.name, axis=0)
            seen_embedding = True
        elif isinstance(layer, (LSTM, SimpleRNN)) and seen_embedding:
            x = _recurrent(graph, layer, x, time_major)
            time_major, seen_recurrent = True, True
        elif (
            isinstance(layer, keras.layers.Dense)
            and seen_recurrent
            and layer is layers[-1]
        ):
            activation = _activation_name(layer.activation)
            if activation != "linear":
                raise _unsupported(layer, f"with activation={activation!r}")
            x = graph.node(
                "MatMul", [x, graph.const(f"{layer.name}_W", _numpy(layer.kernel))],
                layer.name,
            )
            if layer.bias is not None:
                x = graph.node(
                    "Add", [x, graph.const(f"{layer.name}_b", _numpy(layer.bias))],
                    layer.name,
                )
        else:
            raise _unsupported(
                layer,
                "outside the chain Embedding -> LSTM/SimpleRNN... -> optional "
                "linear Dense",
            )
    if not seen_recurrent:
        raise ValueError(
            f"`model` has no keraseq LSTM/SimpleRNN layer; {_FALLBACK}"
        )
    if time_major:
        x = graph.node("Transpose", [x], "output", perm=[1, 0, 2])
    graph.nodes.append(helper.make_node("Identity", [x], [output_name], name="output"))
    features = int(model.outputs[0].shape[-1])
    proto = helper.make_model(
        helper.make_graph(
            graph.nodes,
            model.name or "keraseq",
            [helper.make_tensor_value_info(
                input_name, TensorProto.INT32, ["batch", "sequence"])],
            [helper.make_tensor_value_info(
                output_name, TensorProto.FLOAT, ["batch", "sequence", features])],
            initializer=graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="keraseq.export.native",
    )
    onnx.checker.check_model(proto)
    onnx_export._set_metadata(proto, {
        "keraseq_version": onnx_export._keraseq_version(),
        "keras_version": keras.__version__,
        "source_backend": source_backend or keras.backend.backend(),
        "converter": "keraseq.native",
    })
    onnx_export._check_loads_in_onnxruntime(proto)
    return proto


def export_native(model, path, opset=17, *, input_name="tokens",
                  output_name="logits", source_backend=None):
    """Export a recurrent language model to ONNX with native LSTM/RNN nodes.

    Embedding → `Gather`; each keraseq `LSTM` / `SimpleRNN` → `Transpose` to
    time-major (once, before the first), one ONNX `LSTM` / `RNN` node
    (`direction="reverse"` plus a time flip for `go_backwards=True`) and
    `Squeeze` of the direction axis (`output_units` → `MatMul` + `Add`);
    `Dense` → `MatMul` + `Add`; `Transpose` back to batch-first. The input
    (int32 `(batch, sequence)`) and output (float32 `(batch, sequence,
    features)`) have dynamic axes named `"batch"` and `"sequence"`. The graph
    is checked with `onnx.checker.check_model`, loaded once in onnxruntime and
    written atomically.

    Args:
        model: a functional `keras.Model` that is a simple chain (see module doc).
        path: str or os.PathLike ending in `.onnx`; its directory must exist.
        opset: int, default 17: between 13 and 18.
        input_name: default `"tokens"`. output_name: default `"logits"`.
        source_backend: default `None` (the current backend), for the metadata.

    Returns:
        `path` as a str.

    Raises:
        ValueError: a bad argument, or a layer / setting with no native
            converter (the message names the layer and the reason).
    """
    path = _io.check_onnx_path(path, "path")
    for argument, value in (("input_name", input_name), ("output_name", output_name)):
        _io.check_names(value, argument, count=1)
    proto = build_native_model(model, opset, input_name, output_name, source_backend)
    _io.atomic_write_bytes(proto.SerializeToString(), path)
    return path
