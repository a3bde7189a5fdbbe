"""Native ONNX converters for keraseq's `LSTM` and `SimpleRNN`.

Each layer becomes `Transpose` (batch-major → time-major), one ONNX `LSTM` /
`RNN` node with `layout=0` (onnxruntime refuses `layout=1`), `Squeeze` of the
direction axis and `Transpose` back (`output_units` → `MatMul` + `Add`).
Weights go through `onnx_weights` (Keras gate order i, f, c, o → ONNX i, o,
f, c). Only the node outputs a layer uses are requested (`Y` for
`return_sequences=True`, `Y_h` for the last output, the final states in step
mode).

Between stacked layers this leaves a `Transpose` back to batch-major followed
by one to time-major. onnxruntime's transpose optimizer removes such pairs
(graph optimization level `ORT_ENABLE_BASIC` and above; the default is
`ORT_ENABLE_ALL`), also across the mask's `Gather` / `Mul` of a masked layer:
the optimized graph of a 2-layer LSTM(64) language model is the same with and
without them. Measured at T=256 with 2 threads on the 2-core CPU, with /
without the pairs: 0.486 / 0.486 ms at batch 1 and 7.21 / 7.28 ms at batch
32; with every optimization disabled the ratio stayed within 1.005 (batch 1)
and 1.04 (batch 32, noise of a loaded machine). So the layers stay
batch-major at their boundaries.

Masks (full mode). Keras's rule for a step whose mask is False: the state is
unchanged and the output repeats the previous output (zeros before the first
unmasked step). The recurrence thus only ever sees a row's unmasked steps, in
order, and the output at position `t` is the output after the last unmasked
step at or before `t`. The graph computes exactly that, for any mask (right
padding, left padding, gaps), in three pieces around the node:

1. compaction: each row's unmasked steps are moved to the front, in order
   (`TopK` of the key `t + T·[masked]` gives their positions; one row `Gather`
   moves them);
2. the node runs with `sequence_lens = max(n, 1)`, `n_b` the row's number of
   unmasked steps (onnxruntime rejects a length of 0), so each row's
   recurrence stops after its real steps;
3. read-back: the output at position `t` is compacted step `cumsum(mask)[t] -
   1`, times `cumsum(mask)[t] > 0` (zeros before the first unmasked step). The
   last output (`return_sequences=False`) is the node's `Y_h`, the state after
   step `n_b - 1`, zeroed when `n_b = 0`. A row with no unmasked step is all
   zeros, which is what Keras returns for it on all three backends (checked
   with a bias of ones, so that "zeros" is not the state of a zero input).

For a right-padded mask (the usual case) the compaction is the identity. A
left-padded row `[0, 0, a, b, c]` is run as `[a, b, c, ·, ·]` with length 3
and gives `[0, 0, y(a), y(a, b), y(a, b, c)]`, as Keras does, and the same
last output as the unpadded `[a, b, c]`; a row with gaps likewise. The
price of the compaction, measured against a right-padding-only graph
(onnxruntime, 2 threads): +6 µs (+8 %) at batch 1, T=86 and +12 µs (+6 %) at
T=256 for a 1-layer masked LSTM(64) classifier; no measurable difference for
2 layers at batch 1 or at batch 32. The mask tensors are built once per mask and
shared by the layers that receive it. With `go_backwards=True` the sequence
and its mask are reversed (as Keras does) and run forward.

Streaming (`ctx.mode == "step"`): the initial state of each layer is a graph
input `state_in_<k>` (h, then c for an LSTM) and the state after the chunk's
last step a graph output `state_out_<k>`, both `(batch, units)`. A mask or
`go_backwards=True` is refused there (`NativeUnsupported` naming the layer):
a step graph reads the sequence forward, chunk by chunk, and takes no mask.
"""

import functools

import numpy as np
from onnx import TensorProto

from keraseq.export.native import NativeUnsupported, activation_name, converter, numpy_weight
from keraseq.export.onnx_weights import lstm_to_onnx, simple_rnn_to_onnx
from keraseq.layers.lstm import LSTM
from keraseq.layers.simple_rnn import SimpleRNN

_RNN_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}


def _weights_and_attrs(layer):
    cell = layer.cell
    bias = numpy_weight(cell.bias) if getattr(cell, "bias", None) is not None else None
    kernel, recurrent = numpy_weight(cell.kernel), numpy_weight(cell.recurrent_kernel)
    activation = activation_name(cell.activation)
    attrs = {"hidden_size": int(cell.units), "layout": 0}
    if isinstance(layer, LSTM):
        recurrent_activation = activation_name(cell.recurrent_activation)
        if activation != "tanh" or recurrent_activation != "sigmoid":
            raise NativeUnsupported(
                layer,
                f"uses activation={activation!r}, recurrent_activation="
                f"{recurrent_activation!r} (the native LSTM node takes tanh/sigmoid)",
            )
        return "LSTM", lstm_to_onnx(kernel, recurrent, bias), attrs
    if activation not in _RNN_ACTIVATIONS:
        raise NativeUnsupported(
            layer, f"uses activation={activation!r} (the native RNN node takes tanh, relu, sigmoid)"
        )
    if activation != "tanh":
        attrs["activations"] = [_RNN_ACTIVATIONS[activation]]
    return "RNN", simple_rnn_to_onnx(kernel, recurrent, bias), attrs


def _reverse_time(graph, x, axis, hint):
    """`x` reversed along `axis`."""
    return graph.node(
        "Slice",
        [x, graph.ints([-1]), graph.ints([np.iinfo(np.int64).min]), graph.ints([axis]),
         graph.ints([-1])],
        hint,
    )


def _time_gather(graph, y, rows, width, hint):
    """`out[t, b] = y[i, b]` for a time-major `y (T, B, width)`, where `rows
    (T, B)` holds the flat row `i·B + b` of `y` seen as `(T·B, width)`: one
    row `Gather` (cheaper than `GatherElements` with an index expanded to
    `y`'s shape)."""
    flat = graph.node("Reshape", [y, graph.ints([-1, int(width)])], hint)  # (T·B, width)
    return graph.node("Gather", [flat, rows], hint, axis=0)  # (T, B, width)


class _Mask:
    """The tensors one Keras mask `(B, T)` gives the recurrent nodes that
    receive it, each written into the graph once, when first used."""

    def __init__(self, graph, mask, hint):
        self.graph, self.hint = graph, hint
        self.zero = graph.const("zero_i64", np.array(0, np.int64))
        self.one = graph.const("one_i64", np.array(1, np.int64))
        self.as_int = graph.node("Cast", [mask], hint, to=TensorProto.INT64)  # (B, T)
        self.shape = graph.node("Shape", [self.as_int], hint)

    def _node(self, op, inputs, **attrs):
        return self.graph.node(op, inputs, self.hint, **attrs)

    @functools.cached_property
    def lens(self):  # (B,) int64: the number of unmasked steps per row
        return self._node("ReduceSum", [self.as_int, self.graph.ints([1])], keepdims=0)

    @functools.cached_property
    def sequence_lens(self):  # (B,) int32; onnxruntime rejects 0: such rows run one step
        return self._node("Cast", [self._node("Max", [self.lens, self.one])],
                          to=TensorProto.INT32)

    @functools.cached_property
    def cumsum(self):  # (B, T): the number of unmasked steps at or before t
        return self._node("CumSum", [self.as_int, self.one])

    def _rows(self, index):
        """A `(B, T)` step index as `(T, B)` flat rows `step·B + b` of a
        time-major `(T·B, features)` view."""
        batch = self._node("Gather", [self.shape, self.zero], axis=0)
        columns = self._node("Range", [self.zero, batch, self.one])  # (B,)
        index = self._node("Transpose", [index], perm=[1, 0])  # (T, B)
        return self._node("Add", [self._node("Mul", [index, batch]), columns])

    @functools.cached_property
    def order_rows(self):
        """Where compacted step j of row b comes from: the unmasked steps in
        order, then the masked ones (`TopK` of `t + T·[masked]`, ascending)."""
        steps = self._node("Gather", [self.shape, self.one], axis=0)  # T (scalar)
        t = self._node("Range", [self.zero, steps, self.one])  # (T,)
        masked = self._node("Sub", [self.one, self.as_int])
        key = self._node("Add", [self._node("Mul", [masked, steps]), t])  # (B, T)
        _, order = self.graph.node(
            "TopK", [key, self._node("Unsqueeze", [steps, self.graph.ints([0])])], self.hint,
            outputs=2, axis=1, largest=0, sorted=1,
        )  # (B, T) int64
        return self._rows(order)

    @functools.cached_property
    def read_back_rows(self):
        """The compacted step whose output position t repeats: cumsum - 1
        (clamped at 0; `started` zeroes the steps before the first one)."""
        index = self._node("Max", [self._node("Sub", [self.cumsum, self.one]), self.zero])
        return self._rows(index)

    @functools.cached_property
    def started(self):  # (B, T, 1) float: 1 from the first unmasked step on
        started = self._node("Cast", [self._node("Greater", [self.cumsum, self.zero])],
                             to=TensorProto.FLOAT)
        return self._node("Unsqueeze", [started, self.graph.ints([2])])

    @functools.cached_property
    def nonempty(self):  # (B, 1) float: 1 for a row with an unmasked step
        nonempty = self._node("Cast", [self._node("Greater", [self.lens, self.zero])],
                              to=TensorProto.FLOAT)
        return self._node("Unsqueeze", [nonempty, self.graph.ints([1])])


def _mask_tensors(ctx, mask, reverse, hint):
    cache = ctx.__dict__.setdefault("_recurrent_masks", {})
    key = (mask, reverse)
    if key not in cache:
        source = _reverse_time(ctx.graph, mask, 1, hint) if reverse else mask
        cache[key] = _Mask(ctx.graph, source, hint)
    return cache[key]


@converter(LSTM, SimpleRNN)
def recurrent(ctx, layer, args, kwargs):
    graph = ctx.graph
    mask = kwargs.pop("mask", None)
    if len(args) != 1 or not isinstance(args[0], str) or any(
        isinstance(v, str) for v in kwargs.values()
    ):
        raise NativeUnsupported(layer, "is called with an explicit initial_state")
    if mask is not None and not isinstance(mask, str):
        raise NativeUnsupported(layer, "receives a mask the converter cannot read")
    x = args[0]
    for flag in ("return_state", "stateful"):
        if getattr(layer, flag, False):
            raise NativeUnsupported(layer, f"has {flag}=True")
    if ctx.mode in ("prefill", "decode"):
        raise NativeUnsupported(layer, f"is recurrent; mode={ctx.mode!r} is for attention models")
    streaming = ctx.mode == "step"
    go_backwards = bool(layer.go_backwards)
    if streaming and go_backwards:
        raise NativeUnsupported(
            layer, "has go_backwards=True, which a streaming step graph (the sequence "
            "read forward, chunk by chunk) cannot express")
    if streaming and mask is not None:
        raise NativeUnsupported(
            layer, "receives a Keras mask (e.g. from Embedding(mask_zero=True)); a streaming "
            "step graph takes no mask")
    op, (w, r, b), attrs = _weights_and_attrs(layer)
    units = int(layer.cell.units)
    name = layer.name

    x = graph.node("Transpose", [x], name, perm=[1, 0, 2])  # (T, B, features)
    masks = None
    if mask is not None:
        masks = _mask_tensors(ctx, mask, go_backwards, name)
        if go_backwards:  # Keras reverses the sequence and its mask, then runs forward
            x = _reverse_time(graph, x, 0, name)
        x = _time_gather(graph, x, masks.order_rows, w.shape[-1], name)  # the unmasked steps first
        attrs["direction"] = "forward"
    else:
        attrs["direction"] = "reverse" if go_backwards else "forward"
    inputs = [x, graph.const(f"{name}_W", w), graph.const(f"{name}_R", r),
              graph.const(f"{name}_B", b), masks.sequence_lens if masks else ""]
    state_names = []
    if streaming:
        for _ in range(2 if op == "LSTM" else 1):
            name_in, name_out = ctx.state(layer, units)
            state_names.append(name_out)
            inputs.append(graph.node("Unsqueeze", [name_in, graph.ints([0])], name))
    while inputs[-1] == "":
        inputs.pop()
    # Outputs: Y (T, 1, B, U), Y_h (1, B, U)[, Y_c]; request only those used.
    wanted = [layer.return_sequences, not layer.return_sequences or streaming]
    if op == "LSTM":
        wanted.append(streaming)
    outputs = [graph.name(f"{name}_{op.lower()}") if use else "" for use in wanted]
    while outputs[-1] == "":
        outputs.pop()
    graph.nodes.append(graph.helper.make_node(op, inputs, outputs, name=graph.name(name),
                                              **attrs))
    y, final = outputs[0], outputs[1:]
    final = [graph.node("Squeeze", [f, graph.ints([0])], name) if f else "" for f in final]
    for value, name_out in zip(final, state_names):
        ctx.extra_output(value, name_out, ["batch", units])

    if not layer.return_sequences:
        out = final[0]  # (B, U): the state after the last real step (sequence_lens)
        if getattr(layer, "output_units", None) is not None:
            out = _project(graph, layer, out)
        if masks is not None:
            out = graph.node("Mul", [out, masks.nonempty], name)
        return out

    y = graph.node("Squeeze", [y, graph.ints([1])], name)  # (T, B, U)
    if masks is not None:
        y = _time_gather(graph, y, masks.read_back_rows, units, name)
    elif go_backwards:
        # ONNX aligns a reverse pass's outputs with the input positions; Keras
        # returns them in processing order (last input step first).
        y = _reverse_time(graph, y, 0, name)
    out = graph.node("Transpose", [y], name, perm=[1, 0, 2])  # (B, T, U)
    if getattr(layer, "output_units", None) is not None:
        out = _project(graph, layer, out)
    if masks is not None:
        out = graph.node("Mul", [out, masks.started], name)
    return out


def _project(graph, layer, h):
    """SimpleRNN's `output_units` projection `ŷ = h · W_hy + b_y`."""
    cell = layer.cell
    y = graph.node("MatMul", [h, graph.const(f"{layer.name}_Wy", numpy_weight(cell.output_kernel))],
                   layer.name)
    if getattr(cell, "output_bias", None) is not None:
        y = graph.node("Add", [y, graph.const(f"{layer.name}_by", numpy_weight(cell.output_bias))],
                       layer.name)
    return y
