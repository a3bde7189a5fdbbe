"""Native ONNX converters for keraseq's `LSTM` and `SimpleRNN`.

Each layer becomes `Transpose` (batch-major → time-major), one ONNX `LSTM` /
`RNN` node with `layout=0` (onnxruntime refuses `layout=1`), `Squeeze` of the
direction axis and `Transpose` back; onnxruntime's transpose optimizer cancels
the pairs between stacked layers. Weights go through `onnx_weights` (Keras
gate order i, f, c, o → ONNX i, o, f, c).

Masks: a Keras mask that is right-padded (true for the first `n_b` steps of
row `b`, false after) becomes `sequence_lens = n`; onnxruntime then writes
zeros past `n_b`, and the converter restores Keras's semantics — the output
at a masked step repeats the last real one (`Y[t] = Y[n_b - 1]` for
`t ≥ n_b`; all zeros when `n_b = 0`). A mask with gaps or left padding is
not a prefix and gives other numbers than Keras: the native graph assumes
right padding (document it to users; tf2onnx handles any mask).

Streaming (`ctx.mode == "step"`): the initial state of each layer is a graph
input `state_in_<k>` (h, then c for an LSTM) and the final state a graph
output `state_out_<k>`.
"""

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


def _sequence_lens(graph, mask, hint):
    """`(batch,)` int32 count of true steps per row, and a float `(batch, 1)`
    that is 0 for rows with no real step (1 otherwise)."""
    as_int = graph.node("Cast", [mask], hint, to=TensorProto.INT32)
    lens = graph.node("ReduceSum", [as_int, graph.ints([1])], hint, keepdims=0)
    # onnxruntime rejects a length of 0: run such rows for one step, then zero them.
    clamped = graph.node("Max", [lens, graph.const("one_i32", np.array(1, np.int32))], hint)
    nonempty = graph.node(
        "Cast", [graph.node("Greater", [lens, graph.const("zero_i32", np.array(0, np.int32))],
                            hint)],
        hint, to=TensorProto.FLOAT,
    )
    nonempty = graph.node("Unsqueeze", [nonempty, graph.ints([1])], hint)
    return lens, clamped, nonempty


def _carry_forward(graph, y, lens, hint):
    """Time-major `y (T, B, U)` with every step ≥ lens[b] replaced by step
    lens[b] - 1 (Keras's masked-step output)."""
    shape = graph.node("Shape", [y], hint)
    steps = graph.node("Gather", [shape, graph.const("zero", np.array(0, np.int64))], hint, axis=0)
    t = graph.node("Range", [graph.const("zero", np.array(0, np.int64)), steps,
                             graph.const("one", np.array(1, np.int64))], hint)
    last = graph.node(
        "Sub", [graph.node("Cast", [lens], hint, to=TensorProto.INT64),
                graph.const("one", np.array(1, np.int64))], hint)
    last = graph.node("Max", [last, graph.const("zero", np.array(0, np.int64))], hint)
    index = graph.node(
        "Min", [graph.node("Unsqueeze", [t, graph.ints([1])], hint),
                graph.node("Unsqueeze", [last, graph.ints([0])], hint)], hint)  # (T, B)
    index = graph.node("Expand", [graph.node("Unsqueeze", [index, graph.ints([2])], hint), shape],
                       hint)
    return graph.node("GatherElements", [y, index], hint, axis=0)


@converter(LSTM, SimpleRNN)
def recurrent(ctx, layer, args, kwargs):
    graph = ctx.graph
    mask = kwargs.pop("mask", None)
    if len(args) != 1 or not isinstance(args[0], str) or any(
        isinstance(v, str) for v in kwargs.values()
    ):
        raise NativeUnsupported(layer, "is called with an explicit initial_state")
    x = args[0]
    for flag in ("return_state", "stateful"):
        if getattr(layer, flag, False):
            raise NativeUnsupported(layer, f"has {flag}=True")
    op, (w, r, b), attrs = _weights_and_attrs(layer)
    units = int(layer.cell.units)
    go_backwards = bool(layer.go_backwards)
    attrs["direction"] = "reverse" if go_backwards else "forward"
    streaming = ctx.mode == "step"
    if mask is not None and (go_backwards or streaming):
        raise NativeUnsupported(
            layer, "has a mask together with go_backwards=True or a streaming graph")
    if ctx.mode in ("prefill", "decode"):
        raise NativeUnsupported(layer, f"is recurrent; mode={ctx.mode!r} is for attention models")

    name = layer.name
    time_major = graph.node("Transpose", [x], name, perm=[1, 0, 2])
    inputs = [time_major, graph.const(f"{name}_W", w), graph.const(f"{name}_R", r),
              graph.const(f"{name}_B", b)]
    lens = clamped = nonempty = None
    if mask is not None:
        lens, clamped, nonempty = _sequence_lens(graph, mask, name)
        inputs.append(clamped)
    else:
        inputs.append("")
    state_names = []
    if streaming:
        for _ in range(2 if op == "LSTM" else 1):
            name_in, name_out = ctx.state(layer, units)
            state_names.append(name_out)
            inputs.append(graph.node("Unsqueeze", [name_in, graph.ints([0])], name))
    while inputs and inputs[-1] == "":
        inputs.pop()
    count = 3 if op == "LSTM" else 2
    y, *final = graph.node(op, inputs, name, outputs=count, **attrs)  # Y (T,1,B,U); Y_h (1,B,U)
    final = [graph.node("Squeeze", [f, graph.ints([0])], name) for f in final]
    for value, name_out in zip(final, state_names):
        ctx.extra_output(value, name_out, ["batch", units])

    if not layer.return_sequences:
        out = final[0]  # the last real step's h (onnxruntime honours sequence_lens)
        if getattr(layer, "output_units", None) is not None:
            out = _project(graph, layer, out)
        if nonempty is not None:
            out = graph.node("Mul", [out, nonempty], name)
        return out

    y = graph.node("Squeeze", [y, graph.ints([1])], name)  # (T, B, U)
    if go_backwards:
        # ONNX aligns a reverse pass's outputs with the input positions; Keras
        # returns them in processing order (last input step first).
        y = graph.node(
            "Slice",
            [y, graph.ints([-1]), graph.ints([np.iinfo(np.int64).min]), graph.ints([0]),
             graph.ints([-1])],
            name,
        )
    if lens is not None:
        y = _carry_forward(graph, y, clamped, name)
    out = graph.node("Transpose", [y], name, perm=[1, 0, 2])
    if getattr(layer, "output_units", None) is not None:
        out = _project(graph, layer, out)
    if nonempty is not None:
        out = graph.node("Mul", [out, graph.node("Unsqueeze", [nonempty, graph.ints([2])], name)],
                         name)
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
