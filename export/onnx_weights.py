"""Keras-layout weights of keraseq's layers mapped to the layouts of ONNX's
recurrent and attention operators. The one place this mapping is written.

Keras keeps `kernel (input_dim, blocks·units)`, `recurrent_kernel (units,
blocks·units)` and one `bias (blocks·units,)`, with the LSTM blocks in the order
i, f, c, o. ONNX's `RNN` / `LSTM` operators (opset ≥ 14) take, per direction,
`W (blocks·units, input_dim)`, `R (blocks·units, units)` and `B = [Wb, Rb]`
`(2·blocks·units,)`, with the LSTM blocks in the order **i, o, f, c**; a leading
`num_directions` axis of size 1 is added here. Only numpy is needed.
"""

import numpy as np

# Keras LSTM block index of each ONNX LSTM block: ONNX (i, o, f, c) <- Keras (i, f, c, o).
_KERAS_TO_ONNX_LSTM_BLOCKS = (0, 3, 1, 2)


def _blocks(matrix_t, units, order):
    """Reorder the `units`-row blocks of a transposed weight matrix."""
    return np.concatenate([matrix_t[k * units : (k + 1) * units] for k in order], axis=0)


def _bias(bias, width, dtype):
    wb = np.zeros(width, dtype) if bias is None else np.asarray(bias, dtype)
    return np.concatenate([wb, np.zeros(width, dtype)])[None]  # (1, 2·width); Rb = 0


def simple_rnn_to_onnx(kernel, recurrent_kernel, bias=None):
    """Weights of a `SimpleRNN` as the inputs `W, R, B` of an ONNX `RNN` node.

    Args:
        kernel: `(input_dim, units)`.
        recurrent_kernel: `(units, units)`.
        bias: `(units,)` or None.

    Returns:
        `(W, R, B)`: `(1, units, input_dim)`, `(1, units, units)`, `(1, 2·units)`.
    """
    kernel = np.asarray(kernel)
    recurrent_kernel = np.asarray(recurrent_kernel)
    units = recurrent_kernel.shape[0]
    return (
        kernel.T[None].copy(),
        recurrent_kernel.T[None].copy(),
        _bias(bias, units, kernel.dtype),
    )


def lstm_to_onnx(kernel, recurrent_kernel, bias=None):
    """Weights of an `LSTM` (Keras layout, gates i, f, c, o) as the inputs
    `W, R, B` of an ONNX `LSTM` node (gates i, o, f, c).

    Args:
        kernel: `(input_dim, 4·units)`.
        recurrent_kernel: `(units, 4·units)`.
        bias: `(4·units,)` or None.

    Returns:
        `(W, R, B)`: `(1, 4·units, input_dim)`, `(1, 4·units, units)`,
        `(1, 8·units)`.
    """
    kernel = np.asarray(kernel)
    recurrent_kernel = np.asarray(recurrent_kernel)
    units = recurrent_kernel.shape[0]
    order = _KERAS_TO_ONNX_LSTM_BLOCKS
    w = _blocks(kernel.T, units, order)[None]
    r = _blocks(recurrent_kernel.T, units, order)[None]
    b = None if bias is None else _blocks(np.asarray(bias)[:, None], units, order)[:, 0]
    return w, r, _bias(b, 4 * units, kernel.dtype)


def attention_projections(weights, query, value, key=None):
    """Apply the input projections of a `MultiHeadAttention`'s weights.

    Args:
        weights: the layer's `get_weights()` with biases: `[Wq, bq, Wk, bk, Wv,
            bv, Wo, bo]`, kernels `(dim, num_heads, head_dim)`.
        query: `(batch_size, target_length, query_dim)`.
        value: `(batch_size, source_length, value_dim_in)`.
        key: like `value`; `None` means `value`.

    Returns:
        `(Q, K, V)` in the 4-D layout of the ONNX `Attention` operator (opset 23):
        `(batch_size, num_heads, length, head_dim)`.
    """
    wq, bq, wk, bk, wv, bv = (np.asarray(w) for w in weights[:6])
    key = value if key is None else key

    def project(x, w, b):
        return np.einsum("bsd,dnh->bnsh", np.asarray(x), w) + b[None, :, None, :]

    return project(query, wq, bq), project(key, wk, bk), project(value, wv, bv)


def attention_output(weights, context):
    """The output projection of a `MultiHeadAttention`: `context (batch_size,
    num_heads, target_length, value_dim)` → `(batch_size, target_length, output_dim)`."""
    wo, bo = (np.asarray(w) for w in weights[6:8])
    return np.einsum("bnth,nho->bto", context, wo) + bo
