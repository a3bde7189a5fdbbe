"""Native ONNX converters for keraseq's attention, transformer block and
positional embeddings.

`MultiHeadAttention` → `MatMul` + `Add` projections (one fused `MatMul` and a
`Split` for self-attention), ONE opset-23 `Attention` node in its 3-D layout
(`q_num_heads = kv_num_heads = num_heads`, so no `Reshape` / `Transpose`
around it), and the output `MatMul` + `Add`. The graph's default-domain opset
is raised to 23 for it (`Graph.require_opset`). `TransformerBlock` →
`LayerNormalization`, that attention, `Add` residuals, the feedforward
`MatMul`s and the activation (exact GELU with `Erf`). `TokenAndPositionEmbedding`
→ `Gather` + positions; `PositionEmbedding` → its table as a constant `Slice`d
by the dynamic length (and by the position offset); `SinePositionEncoding` →
computed in the graph for any length and start, in float64 (the phase in turns
reduced to [-0.5, 0.5] before the sine), so it matches Keras's float64 table
to float32 round-off (3e-7) for every position below 2**31. Measured here at
(1, 256, 128), 2 threads, a loaded machine: 0.09-0.23 ms (min-median), against
0.4-0.5 ms with a float64 `Sin` and 0.8-0.95 ms for the layer's exact-float32
split algorithm written in ONNX (a constant table slice is ~0.01 ms, but would
bound the length).

Masks, with Keras's semantics (`True` = may attend): `attention_mask`
(broadcast to `(batch, T, S)`), query / value / key masks — passed as call
arguments or carried as Keras masks on the inputs (e.g. from
`Embedding(mask_zero=True)`; Keras passes those at call time without recording
them in the functional graph, so the converter reads them from the node's
input tensors) — are ANDed into one boolean `attn_mask (batch, 1, T, S)`;
`use_causal_mask` becomes `is_causal=1` (top-left aligned without a cache,
offset by the cache length with one, as ONNX specifies). A query row whose keys
are all masked gets a zero context from the operator (ONNX's errata for opset
23; measured in onnxruntime 1.32), so its output is the output bias — what
keraseq's layer gives (weights 0, never NaN).

Streaming (`ctx.mode`): `"prefill"` exposes each attention layer's projected
keys and values as `present_key_<i>` / `present_value_<i>`
`(batch, num_heads, sequence, head_dim)`; `"decode"` takes `past_key_<i>` /
`past_value_<i>` `(batch, num_heads, past_length, head_dim)`, feeds them to the
`Attention` node (which concatenates them with the new keys and values and
returns `present_*`), and starts positions at `past_length`, read in the graph
from the shape of `past_key_0` (`ctx.position_offset`). Only causal
self-attention without padding masks streams; anything else raises
`NativeUnsupported`.

Operator choice, measured here (onnxruntime 1.32, CPU, 2 intra-op threads; one
attention layer with its four projections, width 128, 4 heads, T = 256; median
of 7 rounds of 15 runs, the minimum in brackets; other engineers' jobs loaded
the 2 cores, so batch 8 is noisy: only its minimum for the 3-D `Attention`,
3.2 ms, reaches 8 × the batch-1 time):

| graph                                         | batch 1       | batch 8       |
|-----------------------------------------------|---------------|---------------|
| causal: opset-23 `Attention`, 3-D inputs      | 0.40 (0.39)   | 16.0 (3.2)    |
| causal: opset-23 `Attention`, 4-D + Transpose | 0.44 (0.41)   | 16.4 (12.2)   |
| causal: `com.microsoft.MultiHeadAttention`    | 0.46 (0.46)   | 19.9 (12.3)   |
| causal: `MatMul` / `Softmax` decomposition    | 0.44 (0.43)   | 16.6 (16.2)   |
| padded: `Attention`, bool mask (B, 1, T, S)   | 0.43 (0.41)   | 15.6 (11.5)   |
| padded: `MultiHeadAttention`, float bias      | 0.46 (0.43)   | 16.7 (16.1)   |
| padded: `MultiHeadAttention`, key padding     | 0.46 (0.44)   | 20.0 (16.6)   |
| padded: decomposition, float bias             | 0.46 (0.42)   | 17.1 (15.0)   |

(milliseconds; an earlier run gave the same order: 0.38 / 0.45 / 0.44 / 0.40
causal at batch 1.) All agree with a float64 reference to 1.5e-6. The opset-23
`Attention` with 3-D inputs is the fastest causal graph in both runs and the
fastest padded one in this run (within noise of the others in the first); it
is also the standard operator (no contrib domain), its `is_causal` is offset-aware with a
cache, and its fully masked rows are zero, as keraseq's (onnxruntime's
`MultiHeadAttention` returns a non-zero mix of the values there), so it is the
one used.

Note for int8: `onnxruntime.quantization.quantize_dynamic` takes any node
typed `Attention` for its contrib `Attention` and writes an invalid
`QAttention`; quantize with `op_types_to_quantize=["MatMul"]` (measured: a
valid graph, same next-token argmax on random weights).
"""

import math

import numpy as np
from onnx import TensorProto

from keraseq.export import native
from keraseq.export.native import NativeUnsupported, activation_name, converter, numpy_weight
from keraseq.export.native_layers import apply_activation, dense, emit_layer_norm
from keraseq.layers.attention import MultiHeadAttention
from keraseq.layers.embeddings import TokenAndPositionEmbedding
from keraseq.layers.positional import PositionEmbedding, SinePositionEncoding
from keraseq.layers.transformer import TransformerBlock

ATTENTION_OPSET = 23
_STREAMING = ("prefill", "decode")
_MASK_KINDS = ("query_mask", "value_mask", "key_mask", "attention_mask")


# -- helpers ------------------------------------------------------------------


def _scalar(graph, value, dtype=np.int64):
    return graph.const("scalar", np.array(value, dtype))


def _axis_length(graph, x, axis, hint):
    """`x.shape[axis]` as an int64 tensor of shape `(1,)`."""
    return graph.node("Shape", [x], hint, start=axis, end=axis + 1)


def _keras_value(ctx, tensor, layer, depth=0):
    """The ONNX value of KerasTensor `tensor`, converting the ops that make it
    when the graph walk has not (a Keras mask no node records as an input)."""
    name = ctx.values.get(id(tensor))
    if name is not None:
        return name
    history = getattr(tensor, "_keras_history", None)
    if history is None or depth > 16:
        raise NativeUnsupported(layer, "has a Keras mask the exporter cannot trace")
    operation, node_index, _ = history
    node = operation._inbound_nodes[node_index]
    for parent in node.input_tensors:
        _keras_value(ctx, parent, layer, depth + 1)
    convert = native._converter_for(operation)
    if convert is None:
        raise NativeUnsupported(
            layer, f"has a Keras mask computed by {type(operation).__name__}, "
            "which the native exporter does not know")
    args, kwargs = node.arguments.fill_in(ctx.values)
    saved, ctx.node = ctx.node, node
    try:
        outputs = convert(ctx, operation, list(args), dict(kwargs))
    finally:
        ctx.node = saved
    outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    for keras_tensor, value in zip(node.outputs, outputs):
        ctx.values[id(keras_tensor)] = value
    return ctx.values[id(tensor)]


def _node_tensors(ctx, names):
    """The node's KerasTensors bound to call-argument `names` (by position or
    keyword), or `{}` when the converter runs outside a graph walk."""
    node = ctx.node
    if node is None:
        return {}
    bound = dict(zip(names, node.arguments.args))
    bound.update({k: v for k, v in node.arguments.kwargs.items() if k in names})
    return bound


def _implicit_mask(ctx, layer, tensor):
    """The ONNX name of the Keras mask riding on KerasTensor `tensor`, or None."""
    mask = getattr(tensor, "_keras_mask", None) if tensor is not None else None
    return None if mask is None else _keras_value(ctx, mask, layer)


# -- positions ----------------------------------------------------------------


def _position_offset(ctx, layer, start_index):
    """int64 scalar name (or None for 0): position of the first step of this call.

    Decode mode adds the cache length `past_key_0.shape[2]`; a `start_index`
    call argument (int or int tensor) adds to it.
    """
    graph = ctx.graph
    offset = None
    if ctx.mode == "decode":
        if ctx.position_offset is None:
            length = graph.node("Shape", ["past_key_0"], "position_offset", start=2, end=3)
            ctx.position_offset = graph.node(
                "Squeeze", [length, graph.ints([0])], "position_offset")
        offset = ctx.position_offset
    if isinstance(start_index, str):
        start = graph.node("Cast", [start_index], layer.name, to=TensorProto.INT64)
        start = graph.node("Reshape", [start, graph.ints([])], layer.name)
        offset = start if offset is None else graph.node("Add", [offset, start], layer.name)
    elif start_index is not None and not isinstance(start_index, bool) and isinstance(
        start_index, (int, np.integer)
    ):
        if start_index < 0:
            raise NativeUnsupported(layer, f"is called with start_index={start_index}")
        if start_index:
            start = _scalar(graph, int(start_index))
            offset = start if offset is None else graph.node("Add", [offset, start], layer.name)
    elif start_index is not None:
        raise NativeUnsupported(layer, f"is called with start_index={start_index!r}")
    return offset


def _learned_rows(ctx, layer, x, offset):
    """Rows `offset … offset + T - 1` of a learned table: `(1, T, d)`."""
    graph = ctx.graph
    table = graph.const(f"{layer.name}_table", numpy_weight(layer.embeddings))  # (L, d)
    length = _axis_length(graph, x, 1, layer.name)  # (1,)
    if offset is None:
        start, end = graph.ints([0]), length
    else:
        start = graph.node("Unsqueeze", [offset, graph.ints([0])], layer.name)
        end = graph.node("Add", [start, length], layer.name)
    rows = graph.node("Slice", [table, start, end, graph.ints([0])], layer.name)  # (T, d)
    return graph.node("Unsqueeze", [rows, graph.ints([0])], layer.name)  # (1, T, d)


def _sine_rows(ctx, layer, x, offset, width):
    """The sine encoding of positions `offset … offset + T - 1`: `(1, T, d)`.

    Computed in float64 in the graph: the phase of feature `j` in turns,
    `p · f_j / 2π` (+ a quarter turn for the cosine features), reduced to
    [-0.5, 0.5] with `x - Round(x)` before the sine, so the float32 result
    matches Keras's float64 table to float32 round-off for any position
    below 2**31 (the phase keeps 53 - 31 = 22 fractional bits at worst);
    the reduced phase is cast to float32 for the sine.
    """
    graph = ctx.graph
    name = layer.name
    j = np.arange(width)
    turns_per_step = np.power(
        float(layer.max_wavelength), -(2 * (j // 2)).astype(np.float64) / width) / (2 * np.pi)
    phase = np.where(j % 2 == 1, 0.25, 0.0)  # cos(x) = sin(x + π/2)
    length = graph.node(
        "Squeeze", [_axis_length(graph, x, 1, name), graph.ints([0])], name)  # int64 scalar
    start = _scalar(graph, 0) if offset is None else offset
    end = graph.node("Add", [start, length], name)
    positions = graph.node("Range", [start, end, _scalar(graph, 1)], name)  # (T,) int64
    positions = graph.node("Cast", [positions], name, to=TensorProto.DOUBLE)
    positions = graph.node("Unsqueeze", [positions, graph.ints([1])], name)  # (T, 1)
    turns = graph.node(
        "Mul", [positions, graph.const(f"{name}_turns", turns_per_step[None])], name)  # (T, d)
    turns = graph.node("Add", [turns, graph.const(f"{name}_phase", phase[None])], name)
    turns = graph.node("Sub", [turns, graph.node("Round", [turns], name)], name)  # [-½, ½]
    # The reduced phase fits float32 (error ≤ 3e-8 turn); float32 Sin is vectorized.
    turns = graph.node("Cast", [turns], name, to=TensorProto.FLOAT)
    angle = graph.node(
        "Mul", [turns, graph.const("two_pi", np.array(2.0 * np.pi, np.float32))], name)
    rows = graph.node("Sin", [angle], name)  # (T, d)
    return graph.node("Unsqueeze", [rows, graph.ints([0])], name)  # (1, T, d)


def _position_rows(ctx, layer, x, start_index):
    offset = _position_offset(ctx, layer, start_index)
    if isinstance(layer, PositionEmbedding):
        return _learned_rows(ctx, layer, x, offset)
    tensor = _node_tensors(ctx, ("inputs",)).get("inputs")
    width = None if tensor is None else tensor.shape[-1]
    if width is None:
        raise NativeUnsupported(layer, "has inputs of unknown width")
    return _sine_rows(ctx, layer, x, offset, int(width))


def _only_tensor(layer, args, kwargs):
    if len(args) != 1 or not isinstance(args[0], str):
        raise NativeUnsupported(layer, "is called with more than one input")
    unknown = set(kwargs) - {"start_index", "mask", "training"}
    if unknown:
        raise NativeUnsupported(layer, f"is called with {sorted(unknown)}")
    return args[0]


@converter(PositionEmbedding, SinePositionEncoding)
def position_encoding(ctx, layer, args, kwargs):
    x = _only_tensor(layer, args, kwargs)
    rows = _position_rows(ctx, layer, x, kwargs.get("start_index", 0))  # (1, T, d)
    shape = ctx.graph.node("Shape", [x], layer.name)
    return ctx.graph.node("Expand", [rows, shape], layer.name)  # (B, T, d)


@converter(TokenAndPositionEmbedding)
def token_and_position_embedding(ctx, layer, args, kwargs):
    tokens = _only_tensor(layer, args, kwargs)
    graph = ctx.graph
    table = graph.const(
        f"{layer.name}_token_table", numpy_weight(layer.token_embedding.embeddings))
    embedded = graph.node("Gather", [table, tokens], layer.name, axis=0)  # (B, T, d)
    offset = _position_offset(ctx, layer, kwargs.get("start_index", 0))
    position = layer.position_embedding
    if isinstance(position, PositionEmbedding):
        rows = _learned_rows(ctx, position, tokens, offset)
    else:
        rows = _sine_rows(ctx, position, tokens, offset, int(layer.embedding_dim))
    return graph.node("Add", [embedded, rows], layer.name)  # (B, T, d)


# -- attention ----------------------------------------------------------------


def _kernel_2d(projection):
    """A `_HeadProjection` kernel `(*in, *out)` as `(prod(in), prod(out))` and
    its flattened bias (`None` without one)."""
    kernel = numpy_weight(projection.kernel)
    n_in = len(projection.input_dims)
    rows = int(np.prod(kernel.shape[:n_in]))
    kernel = kernel.reshape(rows, -1)
    if projection.bias is not None:
        bias = numpy_weight(projection.bias).reshape(-1)
    else:
        bias = None
    return kernel, bias


def _project(graph, x, kernel, bias, hint):
    y = graph.node("MatMul", [x, graph.const(f"{hint}_W", kernel)], hint)
    if bias is not None:
        y = graph.node("Add", [y, graph.const(f"{hint}_b", bias)], hint)
    return y


def _cast_bool(graph, mask, hint):
    return graph.node("Cast", [mask], hint, to=TensorProto.BOOL)


def _combined_mask(ctx, layer, query, value, masks, ranks):
    """The boolean `attn_mask (batch or 1, 1, T, S)` of the masks given, or None."""
    graph = ctx.graph
    name = layer.name
    parts = []
    if masks.get("query_mask") is not None:  # (B, T) → (B, T, 1)
        parts.append(graph.node(
            "Unsqueeze", [_cast_bool(graph, masks["query_mask"], name), graph.ints([2])], name))
    for kind in ("value_mask", "key_mask"):  # (B, S) → (B, 1, S)
        if masks.get(kind) is not None:
            parts.append(graph.node(
                "Unsqueeze", [_cast_bool(graph, masks[kind], name), graph.ints([1])], name))
    if masks.get("attention_mask") is not None:
        attention = _cast_bool(graph, masks["attention_mask"], name)
        rank = ranks.get("attention_mask")
        if rank is None:
            raise NativeUnsupported(layer, "has an attention_mask of unknown rank")
        if rank < 3:
            attention = graph.node(
                "Unsqueeze", [attention, graph.ints(list(range(3 - rank)))], name)
        parts.append(attention)
    if not parts:
        return None
    mask = parts[0]
    for part in parts[1:]:
        mask = graph.node("And", [mask, part], name)
    # onnxruntime wants the query and key axes spelled out (no broadcasting there).
    target = graph.node(
        "Concat",
        [graph.ints([1]), _axis_length(graph, query, 1, name), _axis_length(graph, value, 1, name)],
        name, axis=0,
    )
    mask = graph.node("Expand", [mask, target], name)  # (B or 1, T, S)
    return graph.node("Unsqueeze", [mask, graph.ints([1])], name)  # (B or 1, 1, T, S)


def _cache_slot(ctx, layer, heads, head_dim, value_dim):
    """Register one attention layer's key/value cache; returns its index."""
    streaming = ctx.streaming
    if value_dim != head_dim:
        raise NativeUnsupported(
            layer, f"has value_dim={value_dim} != key_dim={head_dim} (one head_dim per cache)")
    for key, size in (("num_heads", heads), ("head_dim", head_dim)):
        if streaming.setdefault(key, size) != size:
            raise NativeUnsupported(
                layer, f"has {key}={size}, the model's other attention layers "
                f"{streaming[key]} (one value per streaming graph)")
    index = streaming.get("num_layers", 0)
    streaming["num_layers"] = index + 1
    return index


def _heads(graph, x, heads, head_dim, hint):
    """`(B, T, heads·head_dim)` → `(B, heads, T, head_dim)`."""
    x = graph.node("Reshape", [x, graph.ints([0, 0, heads, head_dim])], hint)  # (B, T, N, H)
    return graph.node("Transpose", [x], hint, perm=[0, 2, 1, 3])  # (B, N, T, H)


def emit_attention(ctx, layer, query, value, key=None, masks=None, ranks=None, causal=False):
    """keraseq `MultiHeadAttention` (built) on ONNX values: the output name.

    Args:
        ctx: the `native.Context`.
        layer: the `MultiHeadAttention`.
        query, value, key: ONNX value names (`key` None = `value`).
        masks: dict of ONNX boolean(-like) mask names by call-argument name
            (`query_mask`, `value_mask`, `key_mask`, `attention_mask`).
        ranks: dict call-argument name → rank, for `attention_mask`.
        causal: `use_causal_mask`.
    """
    graph = ctx.graph
    name = layer.name
    masks = {k: v for k, v in (masks or {}).items() if v is not None}
    key = value if key is None else key
    if not getattr(layer, "built", False) or not hasattr(layer, "_query_dense"):
        raise NativeUnsupported(layer, "is not built")
    if ctx.mode == "step":
        raise NativeUnsupported(
            layer, "is attention; mode='step' is for recurrent models (use prefill/decode)")
    graph.require_opset(ATTENTION_OPSET, layer)
    heads, key_dim, value_dim = int(layer.num_heads), int(layer.key_dim), int(layer._value_dim)
    streaming = ctx.mode in _STREAMING
    if streaming:
        if not (query == value == key) or not causal or masks:
            raise NativeUnsupported(
                layer, f"is not causal self-attention without masks, which mode={ctx.mode!r} "
                "(a key/value cache) needs")
        index = _cache_slot(ctx, layer, heads, key_dim, value_dim)

    wq, bq = _kernel_2d(layer._query_dense)
    wk, bk = _kernel_2d(layer._key_dense)
    wv, bv = _kernel_2d(layer._value_dense)
    if query == value == key:  # self-attention: one MatMul, then Split
        biases = [bq, bk, bv]
        fused_bias = None
        if any(b is not None for b in biases):
            fused_bias = np.concatenate([
                b if b is not None else np.zeros(w.shape[1], np.float32)
                for b, w in zip(biases, (wq, wk, wv))])
        qkv = _project(graph, query, np.concatenate([wq, wk, wv], axis=1), fused_bias,
                       f"{name}_qkv")
        sizes = graph.ints([wq.shape[1], wk.shape[1], wv.shape[1]])
        q, k, v = graph.node("Split", [qkv, sizes], name, outputs=3, axis=-1)
    else:
        q = _project(graph, query, wq, bq, f"{name}_query")  # (B, T, N·key_dim)
        k = _project(graph, key, wk, bk, f"{name}_key")  # (B, S, N·key_dim)
        v = _project(graph, value, wv, bv, f"{name}_value")  # (B, S, N·value_dim)

    attn_mask = _combined_mask(ctx, layer, query, value, masks, ranks or {})
    inputs = [q, k, v, attn_mask or ""]
    attrs = {"q_num_heads": heads, "kv_num_heads": heads, "is_causal": int(bool(causal)),
             "scale": 1.0 / math.sqrt(float(key_dim))}
    if ctx.mode == "decode":
        past_key, past_value = f"past_key_{index}", f"past_value_{index}"
        for past, size in ((past_key, key_dim), (past_value, value_dim)):
            graph.add_input(past, TensorProto.FLOAT, ["batch", heads, "past_sequence", size])
        context, present_key, present_value = graph.node(
            "Attention", inputs + [past_key, past_value], name, outputs=3, **attrs)
        total = "total_sequence"
    else:
        while inputs[-1] == "":
            inputs.pop()
        context = graph.node("Attention", inputs, name, **attrs)  # (B, T, N·value_dim)
        if streaming:
            present_key = _heads(graph, k, heads, key_dim, name)  # (B, N, T, key_dim)
            present_value = _heads(graph, v, heads, value_dim, name)
            total = "sequence"
    if streaming:
        ctx.extra_output(present_key, f"present_key_{index}", ["batch", heads, total, key_dim])
        ctx.extra_output(
            present_value, f"present_value_{index}", ["batch", heads, total, value_dim])

    wo, bo = _kernel_2d(layer._output_dense)
    out = _project(graph, context, wo, bo, f"{name}_output")  # (B, T, prod(output_dims))
    output_dims = layer._output_dense.output_dims
    if len(output_dims) > 1:
        out = graph.node("Reshape", [out, graph.ints([0, 0, *output_dims])], name)
    return out


@converter(MultiHeadAttention)
def multi_head_attention(ctx, layer, args, kwargs):
    names = ("query", "value", "key")
    bound = dict(zip(names, args))
    if len(args) > len(names):
        raise NativeUnsupported(layer, "is called with more than three positional inputs")
    for argument in names:
        if argument in kwargs:
            bound[argument] = kwargs.pop(argument)
    query, value, key = bound.get("query"), bound.get("value"), bound.get("key")
    if not isinstance(query, str) or not isinstance(value, str) or not (
        key is None or isinstance(key, str)
    ):
        raise NativeUnsupported(layer, "has inputs the converter cannot read")
    if kwargs.pop("return_attention_scores", False):
        raise NativeUnsupported(layer, "is called with return_attention_scores=True")
    causal = kwargs.pop("use_causal_mask", False)
    if not isinstance(causal, (bool, np.bool_)):
        raise NativeUnsupported(layer, f"is called with use_causal_mask={causal!r}")
    kwargs.pop("training", None)
    masks = {kind: kwargs.pop(kind, None) for kind in _MASK_KINDS}
    if kwargs:
        raise NativeUnsupported(layer, f"is called with {sorted(kwargs)}")
    for kind, mask in masks.items():
        if mask is not None and not isinstance(mask, str):
            raise NativeUnsupported(layer, f"is called with a constant {kind}")
    tensors = _node_tensors(ctx, names + _MASK_KINDS)
    # Keras passes the Keras masks of query / value / key at call time without
    # recording them in the node: read them from the input tensors.
    for argument in names:
        kind = f"{argument}_mask"
        if masks[kind] is None and bound.get(argument) is not None:
            masks[kind] = _implicit_mask(ctx, layer, tensors.get(argument))
    ranks = {}
    if masks["attention_mask"] is not None:
        tensor = tensors.get("attention_mask")
        ranks["attention_mask"] = len(tensor.shape) if tensor is not None else None
    return emit_attention(ctx, layer, query, value, key, masks, ranks, bool(causal))


@converter(TransformerBlock)
def transformer_block(ctx, layer, args, kwargs):
    if len(args) != 1 or not isinstance(args[0], str):
        raise NativeUnsupported(layer, "is called with more than one input")
    x = args[0]
    graph = ctx.graph
    padding_mask = kwargs.pop("padding_mask", None)
    mask = kwargs.pop("mask", None)
    kwargs.pop("training", None)
    if kwargs:
        raise NativeUnsupported(layer, f"is called with {sorted(kwargs)}")
    if padding_mask is None:
        padding_mask = mask
    if padding_mask is None:
        tensors = _node_tensors(ctx, ("inputs",))
        padding_mask = _implicit_mask(ctx, layer, tensors.get("inputs"))
    if padding_mask is not None and not isinstance(padding_mask, str):
        raise NativeUnsupported(layer, "is called with a constant padding_mask")
    activation = activation_name(layer.activation)
    if activation is None:
        raise NativeUnsupported(layer, "uses a custom activation")
    if not getattr(layer, "built", False):
        raise NativeUnsupported(layer, "is not built")

    h = emit_layer_norm(graph, layer._self_attention_layer_norm, x)
    try:
        attended = emit_attention(
            ctx, layer._self_attention, h, h, h,
            masks={"query_mask": padding_mask, "value_mask": padding_mask},
            causal=bool(layer.use_causal_mask),
        )
    except NativeUnsupported as error:  # name the block, not its sublayer
        raise NativeUnsupported(layer, f"has an attention that {error.why}") from error
    x = graph.node("Add", [x, attended], layer.name)  # residual (dropout: inference)
    h = emit_layer_norm(graph, layer._feedforward_layer_norm, x)
    h = dense(ctx, layer._feedforward_intermediate_dense, [h], {})  # (B, T, intermediate)
    h = apply_activation(graph, h, activation, layer, layer.name)
    h = dense(ctx, layer._feedforward_output_dense, [h], {})  # (B, T, hidden_dim)
    return graph.node("Add", [x, h], layer.name)
