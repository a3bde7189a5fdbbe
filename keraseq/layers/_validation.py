"""The argument and shape checks of `keraseq._validation`, under the path the
layer modules import them from. One implementation: `keraseq._validation` (plain
Python and numpy, so the ONNX runtime path can use it without Keras)."""

from keraseq._validation import (  # noqa: F401
    check_bool,
    check_choice,
    check_last_axis_known,
    check_lookup,
    check_non_negative_int,
    check_positive_int,
    check_rank,
    check_rate,
    is_int,
    is_number,
)
