"""Backend fast paths: the one place in `keraseq/` with backend-specific code.

Everything else in keraseq is written with `keras.ops` and runs the same math on
TensorFlow, JAX and PyTorch. This module holds the few places where a backend
has a fused kernel for *exactly* that math, and calls it instead of the explicit
loop when the layer's configuration allows. Each function returns `None` when
its conditions do not hold, and the caller then runs the explicit path. The
tests (`tests/test_fast_path.py`) check every fast path against the explicit
path with the fast path switched off (`enabled(False)`), values and gradients.

What is here, and why (figures in `docs/benchmarks_cpu.md`):

* **Recurrent layers on PyTorch** (`recurrent_sequence`): `torch.lstm`,
  `torch.rnn_tanh` and `torch.rnn_relu`, the kernels behind `torch.nn.LSTM` /
  `torch.nn.RNN` (cuDNN on a CUDA device, ATen's fused loop on the CPU). Keras's
  own torch LSTM uses cuDNN only on a GPU and a Python loop on the CPU; the
  explicit keraseq loop is also a Python loop. Used when the activations are the
  standard ones (LSTM: tanh and sigmoid; simple RNN: tanh or relu), there is no
  mask, no recurrent dropout in training, `unroll=False`, and the compute dtype
  is float32 (any float dtype on a CUDA device).
* **LSTM on JAX with a GPU**: `jax.experimental.rnn.lstm` (cuDNN), under the
  same conditions, float32 or float16 (cuDNN's RNN has no bfloat16 path there;
  `mixed_bfloat16` runs the explicit `lax.scan`, which works where Keras's LSTM
  fails).
* **Where the input projection goes** (`hoist_input_projection`): the explicit
  path computes `x_t · kernel + bias` for every step in one matmul before the
  loop on PyTorch, on GPUs and for the simple RNN on JAX; on TensorFlow without
  a GPU, and for the LSTM on JAX without one, the compiled loop ran faster with
  the projection inside the step. Ratios to Keras (forward / train, shapes of
  `docs/benchmarks_cpu.md`), inside vs hoisted: JAX LSTM 1.11 / 0.97 vs
  0.70 / 0.84, JAX simple RNN 0.96 / 1.01 vs 1.10 / 1.06; TensorFlow LSTM
  1.02 / 0.97 vs 0.85 / 0.89, simple RNN 1.42 / 1.08 vs 1.15 / 1.06.
* **Fused attention where it runs** (`fused_attention_supported`): JAX's
  `dot_product_attention` fails to compile for float16 on a CPU, so
  `mixed_float16` attention on JAX without a GPU uses the explicit path.
* **Self-attention Q, K, V in one einsum** (`fuse_qkv_projection`): measured
  and not faster on any CPU backend, so off (see `_FUSED_QKV_BACKENDS`).
* **Exact GELU** (`gelu`): torch's fused kernel on PyTorch (TransformerBlock
  forward / train 1.02 / 1.01 of Keras's block vs 0.88 / 0.91 written out);
  elsewhere written with `erf`, which XLA fuses (JAX: 1.07 / 1.08 written out
  vs 0.99 / 1.04 with `jax.nn.gelu`), and which tf2onnx can convert
  (`tf.nn.gelu` lowers to `Erfc`).

No fast path changes results beyond float rounding (tested to 1e-5).

Two helpers of the token id check live here too: `has_values`, whether a
tensor's values can be read (eager) or not (traced by `tf.function`,
`jax.jit`, `torch.compile`, or symbolic), which cannot be written with
`keras.ops`; and `id_range`, the ids' minimum and maximum (one fused
`torch.aminmax` on PyTorch, where the check runs at every eager step; tested
equal to the `keras.ops` reductions).
"""

import contextlib
import functools
import math

import keras
import numpy as np
from keras import ops

_ENABLED = [True]


@contextlib.contextmanager
def enabled(flag):
    """Switch the fast paths on or off inside a `with` block (for tests and
    benchmarks: `with enabled(False): ...` runs the explicit path)."""
    previous = _ENABLED[0]
    _ENABLED[0] = bool(flag)
    try:
        yield
    finally:
        _ENABLED[0] = previous


def is_enabled():
    return _ENABLED[0]


def _backend():
    return keras.backend.backend()


@functools.lru_cache(maxsize=None)
def _has_gpu(backend):
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return any(d.lower().startswith("gpu") for d in keras.distribution.list_devices())


@functools.lru_cache(maxsize=None)
def _traced_test(backend):
    """The predicate that tells a tensor of `backend` without values (being
    traced or compiled) from one with values, built once per backend."""
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.is_symbolic_tensor  # graph tensors of tf.function / Keras's traced steps
    if backend == "jax":
        import jax

        tracer = jax.core.Tracer  # jit, grad, vmap, eval_shape

        return lambda x: isinstance(x, tracer)
    if backend == "torch":
        import torch

        def traced(x):
            return (
                torch.compiler.is_compiling()
                or torch.jit.is_tracing()
                # Keras's shape inference runs torch layers on the meta device.
                or (isinstance(x, torch.Tensor) and x.device.type == "meta")
            )

        return traced
    return lambda x: False  # the numpy backend: always values


def has_values(x):
    """Whether the values of `x` can be read now (a numpy array, a Python
    number or an eager tensor), as opposed to a symbolic or traced tensor (a
    `keras.KerasTensor`, a TensorFlow graph tensor, a JAX tracer under `jit`,
    a torch tensor under `torch.compile`/tracing or on the `meta` device).

    Used by the token id check (`keraseq.layers._validation.check_token_ids`),
    which reads the minimum and maximum id only when this is true."""
    if isinstance(x, (np.ndarray, np.generic, int, float, list, tuple)):
        return True
    if isinstance(x, keras.KerasTensor):
        return False
    return not _traced_test(_backend())(x)


def id_range(x):
    """`(min, max)` of an integer tensor with values, as Python ints: one
    fused `torch.aminmax` and one transfer on PyTorch (where every call is
    eager, so this runs at every training step), two `keras.ops` reductions
    elsewhere (only eager calls get here there)."""
    if _backend() == "torch" and _ENABLED[0]:
        import torch

        return tuple(int(v) for v in torch.stack(torch.aminmax(x)).tolist())
    return int(ops.min(x)), int(ops.max(x))


def hoist_input_projection(cell):
    """Whether the recurrent loop gets `x · kernel + bias` precomputed for all
    steps (True) or computes it inside each step (False), as measured fastest:
    inside the step on TensorFlow without a GPU, and for the LSTM on JAX without
    a GPU; hoisted everywhere else."""
    backend = _backend()
    if not _ENABLED[0] or backend == "torch" or _has_gpu(backend):
        return True
    if backend == "tensorflow":
        return False
    return cell.num_blocks == 1  # JAX: the simple RNN gains, the LSTM loses


# Backends where one (features, 3·heads, key_dim) projection beats three. None
# on the CPU: benchmarks/cpu_suite.py (width 128, 15 repeats) measured the
# layer with it / without it, as ratios to Keras's MultiHeadAttention:
# TensorFlow forward 0.97 / 1.01, train 0.94 / 1.01; torch 1.07 / 1.05 and
# 1.01 / 1.02; JAX (a first micro-benchmark) slower. Kept as a switch, tested
# equal, for measuring on a GPU.
_FUSED_QKV_BACKENDS = ()


def fuse_qkv_projection():
    """Whether self-attention computes Q, K and V with one einsum over the
    three kernels side by side instead of three (same weights, same math)."""
    return _ENABLED[0] and _backend() in _FUSED_QKV_BACKENDS


def fused_attention_supported(compute_dtype):
    """Whether `keras.ops.dot_product_attention` runs for this dtype here.

    JAX's kernel asks XLA for float32 logits from float16 inputs, which the CPU
    `dot_general` refuses once compiled (`F16_F16_F32 is not supported`); the
    explicit path (float32 softmax) is used there instead."""
    if _backend() == "jax" and compute_dtype == "float16":
        return _has_gpu("jax")
    return True


def gelu(x):
    """Exact GELU, `0.5 · x · (1 + erf(x / √2))` (Hendrycks & Gimpel 2016)."""
    if _backend() != "torch" or not _ENABLED[0]:
        scale = ops.cast(1.0 / math.sqrt(2.0), x.dtype)
        erf = ops.erf(ops.multiply(x, scale))
        return ops.multiply(ops.multiply(x, 0.5), ops.add(erf, 1.0))
    return ops.gelu(x, approximate=False)


# -- recurrent layers -----------------------------------------------------------
def _kind(cell):
    """'lstm', 'rnn_tanh', 'rnn_relu' when the cell's math is a fused kernel's."""
    name = type(cell).__name__
    activation = cell.activation
    if name == "LSTMCell":
        if (activation is keras.activations.tanh
                and cell.recurrent_activation is keras.activations.sigmoid):
            return "lstm"
        return None
    if name == "SimpleRNNCell":
        if activation is keras.activations.tanh:
            return "rnn_tanh"
        if activation is keras.activations.relu:
            return "rnn_relu"
    return None


def recurrent_sequence(layer, sequences, initial_state, mask, training):
    """The fused kernel's `(last_output, outputs, states)` for a keraseq
    recurrent layer, in `keras.layers.RNN.inner_loop`'s format, or `None`.

    `sequences` are the raw inputs `(batch_size, sequence_length, features)`
    (input dropout already applied); `outputs` is `(batch_size,
    sequence_length, units)`, in processing order (reversed for
    `go_backwards`, as Keras returns it).
    """
    if not _ENABLED[0] or mask is not None or layer.unroll:
        return None
    cell = layer.cell
    if training and cell.recurrent_dropout > 0:
        return None
    kind = _kind(cell)
    if kind is None:
        return None
    backend = _backend()
    if backend == "torch":
        return _torch_recurrent(kind, layer, sequences, initial_state)
    if backend == "jax" and kind == "lstm" and _has_gpu("jax"):
        if layer.compute_dtype not in ("float32", "float16"):
            return None
        return jax_lstm(layer, sequences, initial_state)
    return None


def _torch_recurrent(kind, layer, sequences, initial_state):
    import torch

    cell = layer.cell
    dtype = layer.compute_dtype
    x = ops.convert_to_tensor(sequences, dtype=dtype)
    if dtype != "float32" and x.device.type != "cuda":
        return None
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None
    if layer.go_backwards:
        x = torch.flip(x, dims=[1])
    kernel = ops.convert_to_tensor(cell.kernel, dtype=dtype)
    recurrent_kernel = ops.convert_to_tensor(cell.recurrent_kernel, dtype=dtype)
    params = [kernel.T, recurrent_kernel.T]
    if cell.use_bias:
        bias = ops.convert_to_tensor(cell.bias, dtype=dtype)
        params += [bias, torch.zeros_like(bias)]
    # `unsqueeze` is a view: a stateful layer assigns its state variables in
    # place after the call, so give the kernel copies (as keras.layers.RNN does).
    states = [ops.convert_to_tensor(s, dtype=dtype).unsqueeze(0) for s in initial_state]
    if layer.stateful:
        states = [s.clone() for s in states]
    # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
    #  batch_first), as torch.nn.LSTM / torch.nn.RNN call them.
    arguments = (params, cell.use_bias, 1, 0.0, torch.is_grad_enabled(), False, True)
    if kind == "lstm":
        outputs, h, c = torch.lstm(x, tuple(states), *arguments)
        new_states = [h.squeeze(0), c.squeeze(0)]
    else:
        function = torch.rnn_tanh if kind == "rnn_tanh" else torch.rnn_relu
        outputs, h = function(x, states[0], *arguments)
        new_states = [h.squeeze(0)]
    return new_states[0], outputs, new_states


def jax_lstm(layer, sequences, initial_state, implementation=None):
    """keraseq's LSTM through `jax.experimental.rnn` (cuDNN's weight layout).

    `implementation` defaults to `jax.experimental.rnn.lstm` (GPU only); tests
    pass the library's reference `lstm_ref` to check the weight packing on a CPU.
    """
    import jax.numpy as jnp
    from jax.experimental import rnn

    cell = layer.cell
    dtype = layer.compute_dtype
    x = jnp.asarray(ops.convert_to_tensor(sequences, dtype=dtype))
    if layer.go_backwards:
        x = jnp.flip(x, axis=1)
    kernel = jnp.asarray(ops.convert_to_tensor(cell.kernel, dtype=dtype))
    recurrent_kernel = jnp.asarray(ops.convert_to_tensor(cell.recurrent_kernel, dtype=dtype))
    units = cell.units
    if cell.use_bias:
        bias = jnp.asarray(ops.convert_to_tensor(cell.bias, dtype=dtype))
    else:
        bias = jnp.zeros((4 * units,), dtype)
    # cuDNN's gate order i, f, g, o is Keras's i, f, c, o; one flat buffer
    # [W_ih (4H, I), W_hh (4H, H), b_ih, b_hh].
    weights = jnp.concatenate(
        [kernel.T.ravel(), recurrent_kernel.T.ravel(), bias, jnp.zeros_like(bias)]
    )
    h0, c0 = (jnp.asarray(ops.convert_to_tensor(s, dtype=dtype))[None] for s in initial_state)
    lengths = jnp.full((x.shape[0],), x.shape[1], dtype=jnp.int32)
    arguments = dict(input_size=kernel.shape[0], hidden_size=units, num_layers=1,
                     dropout=0.0, bidirectional=False)
    if implementation is None:
        outputs, h, c = rnn.lstm(x, h0, c0, weights, lengths, **arguments)
    else:
        w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(
            weights, kernel.shape[0], units, 1, False
        )
        outputs, h, c = implementation(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, **arguments)
    return h[0], outputs, [h[0], c[0]]
