"""The checks the layers use: the argument and shape checks of
`keraseq._validation` (one implementation, plain Python and numpy, so that the
ONNX runtime path can use it without Keras), plus the checks of call-time
tensors (dtypes, mask shapes, token ids), which need Keras.

The layers run their call-time checks in `__call__`, before Keras converts the
inputs and before it wraps errors raised inside `call` with its "Exception
encountered when calling ..." context, so a direct call of a layer raises one
`ValueError` with a one-line message. (Called through a `keras.Model`, Keras
adds that context around the same message.)
"""

import keras
import numpy as np
from keras import ops

from keraseq import _tokens
from keraseq._validation import (  # noqa: F401
    check_bool,
    check_choice,
    check_last_axis_known,
    check_lookup,
    check_non_negative_int,
    check_positive_int,
    check_rank,
    check_rate,
    check_seed,
    is_int,
    is_number,
)
from keraseq.layers import _fast_path


def tensor_shape(x):
    """The static shape of a tensor, `KerasTensor` or array-like, as a tuple
    (`None` for an unknown axis), or `None` when even the rank is unknown."""
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = np.shape(x)
    try:
        return tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):
        return None  # unknown rank (a TensorFlow graph tensor without a shape)


def tensor_dtype(x):
    """The dtype of a tensor or array-like as Keras names it (`"float32"`,
    `"int32"`, `"bool"`, ...); `"string"` for text, `"object"` for Python
    objects."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "USO":
        return "object" if dtype.kind == "O" else "string"
    try:
        return keras.backend.standardize_dtype(dtype)
    except ValueError:
        return str(dtype)


def _is_integer(dtype):
    return dtype.startswith("int") or dtype.startswith("uint")


def check_numeric(name, x):
    """Raises naming `name` unless `x` holds numbers (float, integer or bool)."""
    dtype = tensor_dtype(x)
    if not (_is_integer(dtype) or dtype == "bool" or "float" in dtype):
        raise ValueError(
            f"`{name}` must be a numeric tensor (float or integer). "
            f"Received: {name} with dtype={dtype}"
        )


def check_mask_dtype(name, mask, meaning):
    """Raises naming `name` unless `mask` is boolean or integer.

    A float mask is refused rather than cast: Keras reads a mask as True (1) =
    keep, while an additive float mask (0 = keep, -inf = block, as in PyTorch)
    would be read the other way round without any error. `meaning` says what
    True stands for, e.g. "a query may attend to a key".
    """
    dtype = tensor_dtype(mask)
    if not (dtype == "bool" or _is_integer(dtype)):
        raise ValueError(
            f"`{name}` must be a boolean or integer tensor, True (or 1) where "
            f"{meaning}. Received: {name} with dtype={dtype}"
        )


def check_mask_shape(name, mask_shape, expected, description):
    """Raises naming `name` unless `mask_shape` equals `expected` (axes that
    are unknown on either side match anything). `description` spells the
    expected axes, e.g. "(batch_size, sequence_length)"."""
    if mask_shape is None or expected is None:
        return  # unknown rank: left to the computation
    mask_shape = tuple(mask_shape)
    expected = tuple(expected)
    if len(mask_shape) != len(expected) or any(
        m is not None and e is not None and m != e for m, e in zip(mask_shape, expected)
    ):
        raise ValueError(
            f"`{name}` must have shape {description} = {expected}. "
            f"Received: {name}.shape={mask_shape}"
        )


def check_token_ids(inputs, vocabulary_size, name="inputs"):
    """Raises naming `name` unless `inputs` are token ids in `[0, vocabulary_size)`.

    The one check of every keraseq layer that takes token ids:

    * the dtype, always (it is known for eager and symbolic tensors alike):
      an integer dtype is required; float ids would otherwise be truncated
      silently and strings fail deep inside the backend;
    * the values, when they can be read (`_fast_path.has_values`: numpy
      arrays and eager tensors, which includes every call on PyTorch, even
      inside `fit`): one min/max reduction of the ids (`_fast_path.id_range`),
      and, only when an id is out of range, a copy to numpy to name the
      first offending one (`keraseq._tokens.check_token_ids`, the check of
      the vocabulary and of the ONNX runtime, so the message is the same
      everywhere).

    Inside a traced function (`tf.function`, `jax.jit`, hence `predict` and
    `fit` on TensorFlow and JAX) the values are symbolic and are not checked.
    """
    dtype = tensor_dtype(inputs)
    if not _is_integer(dtype):
        raise ValueError(
            f"`{name}` must be integer token ids. Received: {name} with dtype={dtype}"
        )
    if not _fast_path.has_values(inputs) or 0 in (tensor_shape(inputs) or ()):
        return
    if isinstance(inputs, (np.ndarray, np.generic, list, tuple)):
        array = np.asarray(inputs)
        low, high = array.min(), array.max()
    else:
        low, high = _fast_path.id_range(inputs)
    if low < 0 or high >= vocabulary_size:
        _tokens.check_token_ids(name, ops.convert_to_numpy(inputs), vocabulary_size)
