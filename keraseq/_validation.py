"""Argument and shape checks shared by keraseq (layers, models, text, generation,
runtime). Plain Python and numpy only: the ONNX runtime path imports it without Keras.

Every check raises one `ValueError` that names the argument and the value
received, e.g. "`num_heads` must be a positive integer. Received: num_heads=0".
Checks of plain values return the value normalised to a Python type (`int`,
`bool`), so that what is stored on a layer and written by `get_config` is plain.
"""

import numbers

import numpy as np


def is_int(value):
    """True for an integer (Python or numpy), False for a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """True for a real number (Python or numpy), False for a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_int(name, value, allow_none=False):
    """Returns `int(value)` (or None when allowed), or raises naming `name`."""
    if value is None and allow_none:
        return None
    if not is_int(value) or value <= 0:
        allowed = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"`{name}` must be {allowed}. Received: {name}={value!r}")
    return int(value)


def check_seed(seed):
    """Returns `None` or `int(seed)` for an integer seed, or raises naming `seed`."""
    if seed is not None and not is_int(seed):
        raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
    return None if seed is None else int(seed)


def check_non_negative_int(name, value):
    """Returns `int(value)`, or raises naming `name`."""
    if not is_int(value) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    return int(value)


def check_rate(name, value):
    """Returns `float(value)` for a rate in [0, 1), or raises naming `name`."""
    if not is_number(value) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")
    return float(value)


def check_bool(name, value):
    """Returns `bool(value)` for a Python or numpy bool, or raises naming `name`."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return bool(value)


def check_choice(name, value, choices):
    """Raises naming `name` unless `value` is one of `choices` (strings)."""
    if value not in choices:
        quoted = [f'"{choice}"' for choice in choices]
        allowed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        raise ValueError(f"`{name}` must be {allowed}. Received: {name}={value!r}")
    return value


def check_rank(name, shape, rank, description):
    """Returns `tuple(shape)` when it has `rank` axes, or raises naming `name`.

    `description` spells the expected shape, e.g.
    "(batch_size, sequence_length, features)".
    """
    if shape is None or len(shape) != rank:
        received = None if shape is None else tuple(shape)
        raise ValueError(
            f"`{name}` must have rank {rank} {description}. Received: {name}.shape={received}"
        )
    return tuple(shape)


def check_last_axis_known(name, shape, description):
    """Raises naming `name` when the last axis of `shape` is None.

    `description` names that axis, e.g. "hidden_dim".
    """
    if shape[-1] is None:
        raise ValueError(
            f"The last axis ({description}) of `{name}` must be known. "
            f"Received: {name}.shape={tuple(shape)}"
        )


def check_lookup(name, value, getter):
    """Returns `getter(value)` (e.g. `keras.activations.get`), or raises naming `name`."""
    try:
        return getter(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`{name}` could not be interpreted. Received: {name}={value!r} ({error})"
        ) from error
