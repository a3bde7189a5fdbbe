"""Native ONNX converters for the Keras built-in layers keraseq models use.

Embedding → `Gather` (and, with `mask_zero=True`, the mask `tokens != 0`);
the `NotEqual` op of its mask (`mask_zero=True`) →
`Not(Equal)`; Dense → `MatMul` + `Add` + activation; Dropout / SpatialDropout1D /
GaussianNoise → nothing (inference); Activation → its ONNX op; Add → `Sum`;
LayerNormalization → `LayerNormalization` (opset 17). Each converter has the
signature `(ctx, layer, args, kwargs) -> output name(s)`; see `native.py`.
"""

import math

import keras
import numpy as np

from keraseq.export.native import (
    NativeUnsupported,
    activation_name,
    converter,
    numpy_weight,
)


def _only_input(layer, args, kwargs):
    if len(args) != 1 or not isinstance(args[0], str):
        raise NativeUnsupported(layer, "is called with more than one input")
    return args[0]


def apply_activation(graph, x, name, layer, hint):
    """`x` through the Keras activation `name` (`"linear"`: unchanged).

    `name` is `None` for a function that is not a Keras built-in: refused
    (exporting it as linear would silently change the model)."""
    if name is None:
        raise NativeUnsupported(layer, "uses a custom activation function")
    if name == "linear":
        return x
    simple = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "elu": "Elu",
              "softplus": "Softplus", "softsign": "Softsign"}
    if name in simple:
        return graph.node(simple[name], [x], hint)
    if name == "softmax":
        return graph.node("Softmax", [x], hint, axis=-1)
    if name == "gelu":  # Keras's default: exact, 0.5·x·(1 + erf(x/√2))
        scaled = graph.node(
            "Mul", [x, graph.const("inv_sqrt2", np.array(1 / math.sqrt(2), np.float32))], hint)
        erf = graph.node("Erf", [scaled], hint)
        one_plus = graph.node("Add", [erf, graph.const("one", np.array(1.0, np.float32))], hint)
        half_x = graph.node("Mul", [x, graph.const("half", np.array(0.5, np.float32))], hint)
        return graph.node("Mul", [half_x, one_plus], hint)
    raise NativeUnsupported(layer, f"uses activation={name!r}")


@converter(keras.layers.Embedding)
def embedding(ctx, layer, args, kwargs):
    tokens = _only_input(layer, args, kwargs)
    graph = ctx.graph
    table = graph.const(f"{layer.name}_table", numpy_weight(layer.embeddings))
    return graph.node("Gather", [table, tokens], layer.name, axis=0)


@converter("NotEqual")
def not_equal(ctx, op, args, kwargs):
    """`x != c` for a scalar `c`: the mask of `Embedding(mask_zero=True)`."""
    if len(args) != 2 or not isinstance(args[0], str) or isinstance(args[1], str) or kwargs:
        raise NativeUnsupported(op, "compares two tensors (only tensor != constant)")
    graph = ctx.graph
    other = graph.node("CastLike", [graph.const("scalar", np.array(args[1])), args[0]], op.name)
    return graph.node("Not", [graph.node("Equal", [args[0], other], op.name)], op.name)


_BINARY_OPS = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Divide": "Div"}


@converter(*_BINARY_OPS)
def binary_op(ctx, op, args, kwargs):
    """`x + y`, `x - y`, `x * y`, `x / y` between tensors or a tensor and a
    Python number (e.g. the residual `x + layer(x)` in a functional model)."""
    if len(args) != 2 or kwargs or not any(isinstance(a, str) for a in args):
        raise NativeUnsupported(op, "has operands the converter cannot read")
    graph = ctx.graph
    tensor = args[0] if isinstance(args[0], str) else args[1]
    operands = [
        a if isinstance(a, str)
        else graph.node("CastLike", [graph.const("scalar", np.array(a)), tensor], op.name)
        for a in args
    ]
    return graph.node(_BINARY_OPS[type(op).__name__], operands, op.name)


@converter(keras.layers.Dense)
def dense(ctx, layer, args, kwargs):
    x = _only_input(layer, args, kwargs)
    graph = ctx.graph
    y = graph.node("MatMul", [x, graph.const(f"{layer.name}_W", numpy_weight(layer.kernel))],
                   layer.name)
    if layer.bias is not None:
        y = graph.node("Add", [y, graph.const(f"{layer.name}_b", numpy_weight(layer.bias))],
                       layer.name)
    return apply_activation(graph, y, activation_name(layer.activation), layer, layer.name)


@converter(keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.GaussianNoise,
           keras.layers.GaussianDropout)
def identity_at_inference(ctx, layer, args, kwargs):
    return _only_input(layer, args, kwargs)


@converter(keras.layers.Activation)
def activation(ctx, layer, args, kwargs):
    x = _only_input(layer, args, kwargs)
    return apply_activation(ctx.graph, x, activation_name(layer.activation), layer, layer.name)


@converter(keras.layers.Add)
def add(ctx, layer, args, kwargs):
    inputs = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
    if not all(isinstance(name, str) for name in inputs):
        raise NativeUnsupported(layer, "has inputs the converter cannot read")
    return ctx.graph.node("Sum", list(inputs), layer.name)


def emit_layer_norm(graph, layer, x, rank=3):
    """A Keras `LayerNormalization` over the last axis of a rank-`rank` input
    → one ONNX `LayerNormalization` (opset 17). The width comes from the
    layer's weights, so it also serves sublayers that were never called
    symbolically (the transformer block's)."""
    axis = list(layer.axis) if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if axis not in ([-1], [rank - 1]):
        raise NativeUnsupported(layer, f"normalizes axis={layer.axis!r}, not the last axis")
    if getattr(layer, "rms_scaling", False):
        raise NativeUnsupported(layer, "uses rms_scaling=True")
    width = int((layer.gamma if layer.scale else layer.beta).shape[-1])
    scale = numpy_weight(layer.gamma) if layer.scale else np.ones(width, np.float32)
    bias = numpy_weight(layer.beta) if layer.center else np.zeros(width, np.float32)
    return graph.node(
        "LayerNormalization",
        [x, graph.const(f"{layer.name}_scale", scale), graph.const(f"{layer.name}_bias", bias)],
        layer.name, axis=-1, epsilon=float(layer.epsilon),
    )


@converter(keras.layers.LayerNormalization)
def layer_normalization(ctx, layer, args, kwargs):
    x = _only_input(layer, args, kwargs)
    return emit_layer_norm(ctx.graph, layer, x, rank=len(layer.input.shape))
