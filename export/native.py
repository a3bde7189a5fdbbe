"""Keras model -> ONNX graph written directly from the layers, no TensorFlow.

The native exporter walks a functional Keras model node by node and asks one
*converter* per layer class to emit ONNX nodes with `onnx.helper` from the
layer's attributes and weights. keraseq's recurrent layers become one ONNX
`LSTM` / `RNN` node each (instead of the `Loop` tf2onnx makes of the explicit
cells), attention becomes one fused attention node, and nothing here imports
TensorFlow: it runs in-process under any Keras backend.

Converters live in `native_layers` (Keras built-ins: InputLayer, Embedding,
Dense, Dropout, Activation, Add, LayerNormalization), `native_recurrent`
(keraseq LSTM / SimpleRNN) and `native_attention` (keraseq attention,
transformer block and positional embeddings). A layer without a converter, or
a configuration its converter cannot express, raises `NativeUnsupported` (a
`ValueError` naming the layer and the reason); `export_onnx(method="auto")`
then falls back to the tf2onnx path for the whole model and says why.

Modes (`mode=`):

* `"full"`: the whole sequence in, the model's outputs out.
* `"step"`: a streaming graph for recurrent models: every recurrent layer's
  state is an explicit graph input (`state_in_<k>`) and output
  (`state_out_<k>`), so a chunk of any length (1 for a step) continues where
  the previous one stopped.
* `"prefill"` / `"decode"`: streaming graphs for attention models with a key /
  value cache (`present_key_<i>` ... out; `past_key_<i>` ... in for decode).
"""

import json

import numpy as np

from keraseq.export import _io

MODES = ("full", "step", "prefill", "decode")
# The default-domain opset the native exporter writes (LayerNormalization
# needs 17) and the newest onnx.helper + onnxruntime accept here.
DEFAULT_OPSET = 17
MAX_NATIVE_OPSET = 23
FALLBACK_HINT = "use method='tf2onnx'"

_CONVERTERS = {}


class NativeUnsupported(ValueError):
    """A layer or configuration the native exporter cannot express."""

    def __init__(self, layer, why):
        self.layer_name = getattr(layer, "name", None)
        self.layer_class = type(layer).__name__ if layer is not None else None
        self.why = why
        where = (
            f"layer {self.layer_name!r} ({self.layer_class}) "
            if layer is not None else "the model "
        )
        super().__init__(
            f"{where}{why}: the native ONNX exporter cannot express it; {FALLBACK_HINT}")


def converter(*classes):
    """Register `function(ctx, layer, args, kwargs) -> output name(s)` for
    layers of `classes` (looked up along the layer class's MRO). A str names
    a Keras op class (e.g. `"NotEqual"`, the mask `Embedding(mask_zero=True)`
    adds to a functional graph), matched by class name among Keras operations
    that are not layers."""

    def register(function):
        for cls in classes:
            _CONVERTERS[cls] = function
        return function

    return register


def _converter_for(layer):
    _load_converters()
    for cls in type(layer).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls]
    import keras

    if isinstance(layer, keras.Operation) and not isinstance(layer, keras.layers.Layer):
        return _CONVERTERS.get(type(layer).__name__)
    return None


def _load_converters():
    # Imported here, not at module level: each converter module imports keras
    # and keraseq's layers, and registers itself with `converter`.
    from keraseq.export import native_layers, native_recurrent  # noqa: F401

    try:
        from keraseq.export import native_attention  # noqa: F401
    except ImportError as error:  # pragma: no cover - written in parallel
        if "native_attention" not in str(error):
            raise


def activation_name(function):
    """The Keras name of a built-in activation function, else `None`.

    Read from the layer attribute, not `get_config()`: Keras's config
    serialization imports TensorFlow when it is installed.
    """
    import keras

    name = getattr(function, "__name__", None)
    if name and getattr(keras.activations, name, None) is function:
        return name
    return None


def numpy_weight(variable):
    """A Keras variable as a float32 numpy array."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


class Graph:
    """An ONNX graph under construction: nodes, constants, inputs, outputs."""

    def __init__(self, opset, fixed=False):
        from onnx import helper

        self.helper = helper
        self.opset = opset
        self.fixed = fixed  # the caller asked for this opset explicitly
        self.nodes = []
        self.initializers = []
        self.inputs = []
        self.outputs = []
        self.domains = {"": opset}
        self._count = 0
        self._constants = {}

    def name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint, array):
        """A constant tensor (an initializer); small integer constants are shared."""
        from onnx import numpy_helper

        array = np.asarray(array)
        key = None
        if array.dtype.kind in "iub" and array.size <= 16:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._constants:
                return self._constants[key]
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._constants[key] = name
        return name

    def ints(self, values):
        """An int64 1-D constant (axes, shapes, slice bounds)."""
        return self.const("ints", np.asarray(values, dtype=np.int64))

    def node(self, op, inputs, hint, outputs=1, domain="", **attrs):
        """Append one node; returns its output name (a list if `outputs` > 1)."""
        names = [self.name(f"{hint}_{op.lower()}") for _ in range(outputs)]
        self.nodes.append(
            self.helper.make_node(
                op, list(inputs), names, name=self.name(hint),
                domain=domain or None, **attrs,
            )
        )
        if domain and domain not in self.domains:
            self.domains[domain] = 1
        return names[0] if outputs == 1 else names

    def require_opset(self, version, layer=None):
        """Raise the default-domain opset to at least `version`, for an
        operator newer than the requested opset (the opset-23 `Attention`);
        the other converters emit operators whose semantics did not change
        up to `MAX_NATIVE_OPSET`. When the caller fixed the opset explicitly,
        a higher need raises `NativeUnsupported` instead (so that
        `method="auto"` falls back to tf2onnx at that opset)."""
        if version > self.opset:
            if self.fixed:
                raise NativeUnsupported(
                    layer, f"needs ONNX opset {version}, above the requested opset {self.opset}")
            self.opset = version
            self.domains[""] = version

    def add_input(self, name, elem_type, shape):
        self.inputs.append(self.helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def add_output(self, value, name, elem_type, shape):
        """Expose `value` as graph output `name` (through an `Identity`)."""
        self.nodes.append(self.helper.make_node("Identity", [value], [name], name=f"{name}_out"))
        self.outputs.append(self.helper.make_tensor_value_info(name, elem_type, shape))
        return name


class Context:
    """What converters share while one graph is written.

    Attributes:
        graph: the `Graph`.
        mode: `"full"`, `"step"`, `"prefill"` or `"decode"`.
        tokens: the name of the int32 token-id input when the model has one.
        position_offset: `None` (positions start at 0) or the name of an
            int64 scalar: the position of the first token of this call (set in
            `"decode"` mode from the cache length).
        streaming: metadata written to the `keraseq_streaming` property.
    """

    def __init__(self, graph, mode):
        self.graph = graph
        self.mode = mode
        self.tokens = None
        self.position_offset = None
        self.streaming = {"kind": mode}
        self.pending_outputs = []  # (value, name, shape) added after the model's outputs
        self._states = 0
        # The Keras node being converted and the map id(KerasTensor) -> ONNX
        # value name, for converters that read what a node does not record
        # (Keras masks passed at call time, input ranks).
        self.node = None
        self.values = {}

    def state(self, layer, size):
        """Add one recurrent state as graph input `state_in_<k>` and return
        `(input name, output name)`; the converter feeds the output."""
        from onnx import TensorProto

        index = self._states
        self._states += 1
        name_in, name_out = f"state_in_{index}", f"state_out_{index}"
        self.graph.add_input(name_in, TensorProto.FLOAT, ["batch", int(size)])
        self.streaming.setdefault("states", []).append(
            {"input": name_in, "output": name_out, "size": int(size), "layer": layer.name}
        )
        return name_in, name_out

    def extra_output(self, value, name, shape):
        """Expose `value` as graph output `name` after the model's outputs."""
        self.pending_outputs.append((value, name, shape))


def _functional(model):
    """The functional graph behind `model` (a Sequential's inner one)."""
    import keras

    if isinstance(model, keras.Sequential):
        inner = getattr(model, "_functional", None)
        if inner is None:
            raise NativeUnsupported(None, "is a Sequential model that was never built with an Input")
        return inner
    if not hasattr(model, "_nodes_by_depth"):
        raise NativeUnsupported(None, f"is a subclassed {type(model).__name__}, not a functional model")
    return model


def _graph_nodes(functional):
    """The model's call nodes in execution order (deepest first)."""
    by_depth = functional._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            yield node


def _dims(shape, names=("batch", "sequence")):
    out = []
    for axis, dim in enumerate(shape):
        if dim is None:
            out.append(names[axis] if axis < len(names) else f"dim_{axis}")
        else:
            out.append(int(dim))
    return out


def _elem_type(dtype):
    from onnx import TensorProto

    dtype = str(dtype)
    if "int" in dtype:
        return TensorProto.INT32 if dtype.endswith("32") else TensorProto.INT64
    if dtype == "bool":
        return TensorProto.BOOL
    return TensorProto.FLOAT


def _default_names(model, inputs):
    from keraseq.export.onnx_export import default_input_names

    input_names = default_input_names(inputs)
    if len(model.outputs) == 1 and input_names == ["tokens"]:
        output_names = ["logits"]
    else:
        output_names = [f"output_{i}" for i in range(len(model.outputs))]
    return input_names, output_names


def build_native_model(
    model,
    opset=None,
    input_names=None,
    output_names=None,
    source_backend=None,
    mode="full",
    extra_metadata=None,
):
    """The checked `onnx.ModelProto` of `model` (see `export_native`);
    `extra_metadata` (dict str → str) is added to its metadata properties."""
    import keras
    import onnx
    from onnx import helper

    from keraseq.export import onnx_export

    if opset is not None:
        check_native_opset(opset)
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    if not _io.is_model(model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={model!r}")
    _refuse_stateful(model)
    functional = _functional(model)
    inputs = _io.model_inputs(model, "model")
    default_in, default_out = _default_names(model, inputs)
    input_names = _io.check_names(input_names, "input_names", len(inputs)) or default_in
    output_names = (
        _io.check_names(output_names, "output_names", len(model.outputs)) or default_out
    )

    graph = Graph(DEFAULT_OPSET if opset is None else opset, fixed=opset is not None)
    ctx = Context(graph, mode)
    values = ctx.values  # id(KerasTensor) -> ONNX value name
    for index, (tensor, name) in enumerate(zip(inputs, input_names)):
        # One length name per input: onnxruntime plans buffers assuming equal
        # dim_params are equal sizes (a query of 9 against keys of 4 fails).
        sequence = "sequence" if index == 0 else f"sequence_{index}"
        graph.add_input(name, _elem_type(tensor.dtype), _dims(tensor.shape, ("batch", sequence)))
        values[id(tensor)] = name
        if "int" in str(tensor.dtype) and ctx.tokens is None:
            ctx.tokens = name
    if mode != "full" and ctx.tokens is None:
        raise NativeUnsupported(None, f"has no integer token input for mode={mode!r}")

    seen = set()
    for node in _graph_nodes(functional):
        layer = node.operation
        if id(layer) in seen:
            raise NativeUnsupported(layer, "is called more than once (shared weights)")
        seen.add(id(layer))
        if any(id(t) not in values for t in node.input_tensors):
            raise NativeUnsupported(layer, "has an input computed outside the graph")
        convert = _converter_for(layer)
        if convert is None:
            raise NativeUnsupported(layer, "is of a type the native exporter does not know")
        args, kwargs = node.arguments.fill_in(values)
        ctx.node = node
        outputs = convert(ctx, layer, list(args), dict(kwargs))
        if isinstance(outputs, str):
            outputs = [outputs]
        if len(outputs) != len(node.outputs):
            raise NativeUnsupported(layer, "returns a structure the converter does not")
        for tensor, name in zip(node.outputs, outputs):
            values[id(tensor)] = name

    for tensor, name in zip(model.outputs, output_names):
        if id(tensor) not in values:
            raise NativeUnsupported(None, f"output {name!r} is not computed by the graph")
        graph.add_output(values[id(tensor)], name, _elem_type(tensor.dtype), _dims(tensor.shape))
    for value, name, shape in ctx.pending_outputs:
        graph.add_output(value, name, _elem_type("float32"), shape)
    if mode == "step" and "states" not in ctx.streaming:
        raise NativeUnsupported(None, "has no recurrent layer for a streaming step graph")
    if mode in ("prefill", "decode") and not ctx.streaming.get("num_layers"):
        raise NativeUnsupported(None, f"has no attention layer for a mode={mode!r} graph")

    proto = helper.make_model(
        helper.make_graph(
            graph.nodes, model.name or "keraseq", graph.inputs, graph.outputs,
            initializer=graph.initializers,
        ),
        opset_imports=[helper.make_opsetid(d, v) for d, v in graph.domains.items()],
        producer_name="keraseq.export.native",
    )
    onnx.checker.check_model(proto)
    metadata = {
        "keraseq_version": onnx_export._keraseq_version(),
        "keras_version": keras.__version__,
        "source_backend": source_backend or keras.backend.backend(),
        "converter": "keraseq.native",
    }
    if mode != "full":
        metadata["keraseq_streaming"] = json.dumps(ctx.streaming)
    metadata.update(extra_metadata or {})
    onnx_export._set_metadata(proto, metadata)
    onnx_export._check_loads_in_onnxruntime(proto)
    return proto


def check_native_opset(opset):
    if isinstance(opset, bool) or not isinstance(opset, int) or not (
        DEFAULT_OPSET <= opset <= MAX_NATIVE_OPSET
    ):
        raise ValueError(
            f"`opset` must be an int between {DEFAULT_OPSET} and {MAX_NATIVE_OPSET} "
            f"for the native exporter. Received: opset={opset!r}"
        )


def _refuse_stateful(model):
    for layer in getattr(model, "layers", []):
        if getattr(layer, "stateful", False):
            raise ValueError(
                f"`model` layer {layer.name!r} is stateful: ONNX graphs carry no "
                "state between calls. Rebuild the model with stateful=False, copy "
                "the weights, and use `export_streaming` for a graph whose states "
                "are explicit inputs and outputs. Received: stateful=True"
            )


def export_native(model, path, opset=None, *, input_names=None,
                  output_names=None, source_backend=None, mode="full"):
    """Export a Keras model to ONNX with native operators, without TensorFlow.

    Each layer is converted from its attributes and weights: `Embedding` →
    `Gather`; keraseq `LSTM` / `SimpleRNN` → `Transpose` to time-major, one
    ONNX `LSTM` / `RNN` node (`layout=0`; `direction="reverse"` plus a time
    flip for `go_backwards=True`; a Keras mask becomes `sequence_lens` over
    the unmasked steps, with Keras's carry-forward of the last output restored)
    and `Transpose` back (`output_units` → `MatMul` + `Add`); `Dense` →
    `MatMul` + `Add` (+ activation); attention layers → one fused attention
    node. Dynamic axes are named `"batch"` and `"sequence"`. The graph is
    checked with `onnx.checker.check_model`, loaded once in onnxruntime and
    written atomically (a temporary file renamed onto `path`).

    Args:
        model: a functional or Sequential `keras.Model` whose layers all have a
            converter (see the module docstring).
        path: str or os.PathLike ending in `.onnx`; its directory must exist.
        opset: int or `None` (default): the default-domain opset, 17 to 23.
            `None` writes 17, or 23 for a model with attention (the
            `Attention` operator's); an explicit opset below what a layer
            needs raises `NativeUnsupported`.
        input_names: default `None`: one name per model input (`"tokens"` for
            a single integer input, else the Keras input names, `input_<i>`
            for auto-generated ones).
        output_names: default `None` (`"logits"` for a token model, else
            `output_<i>`).
        source_backend: default `None` (the current backend), for the metadata.
        mode: default `"full"`; `"step"`, `"prefill"` or `"decode"` write a
            streaming graph (module docstring).

    Returns:
        `path` as a str.

    Raises:
        NativeUnsupported: (a `ValueError`) a layer or setting with no native
            converter; the message names the layer and the reason.
        ValueError: a bad argument, named with the value received.
    """
    path = _io.check_onnx_path(path, "path")
    for argument, value in (("input_names", input_names), ("output_names", output_names)):
        _io.check_names(value, argument)
    proto = build_native_model(model, opset, input_names, output_names, source_backend, mode)
    _io.atomic_write_bytes(proto.SerializeToString(), path)
    return path


STREAMING_FILES = {
    "recurrent": {"step": "model.step.onnx"},
    "attention": {"prefill": "model.prefill.onnx", "decode": "model.decode.onnx"},
}


def streaming_kind(model):
    """`"recurrent"` or `"attention"`: which streaming graphs `model` gets."""
    from keraseq.layers.lstm import LSTM
    from keraseq.layers.simple_rnn import SimpleRNN

    layers = getattr(model, "layers", [])
    if any(isinstance(layer, (LSTM, SimpleRNN)) for layer in layers):
        return "recurrent"
    return "attention"


def export_streaming(model, directory, opset=None, *, source_backend=None, metadata=None):
    """Write the streaming graphs of a language model into `directory`.

    Recurrent models get `model.step.onnx` (`tokens (batch, sequence)` plus
    one `state_in_<k>` per recurrent state → `logits` plus `state_out_<k>`);
    attention models get `model.prefill.onnx` and `model.decode.onnx` (a key /
    value cache per layer). Each file is written atomically.

    Args:
        model: a keraseq language model (token ids → logits).
        directory: an existing directory.
        opset: default `None` (as in `export_native`).
        source_backend: default `None`, for the metadata.
        metadata: default `None`: a dict str → str of extra ONNX metadata
            properties written into every graph (`keraseq export` records
            `keraseq_model_sha256`, the hash of the `.keras` file, so that
            `keraseq generate --onnx` can refuse graphs of another model).

    Returns:
        A dict mode → written path.

    Raises:
        NativeUnsupported: a layer the streaming graph cannot express.
        ValueError: `directory` is not an existing directory.
    """
    import os

    if not isinstance(directory, (str, os.PathLike)) or not os.path.isdir(directory):
        raise ValueError(
            f"`directory` must be an existing directory. Received: directory={directory!r}"
        )
    files = STREAMING_FILES[streaming_kind(model)]
    protos = {
        mode: build_native_model(model, opset, source_backend=source_backend, mode=mode,
                                 extra_metadata=metadata)
        for mode in files
    }
    written = {}
    for mode, proto in protos.items():
        path = os.path.join(os.fspath(directory), files[mode])
        _io.atomic_write_bytes(proto.SerializeToString(), path)
        written[mode] = path
    return written
