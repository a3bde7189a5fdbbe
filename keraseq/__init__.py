"""keraseq: the classic path from recurrent networks to attention as Keras 3 layers.

`import keraseq` is cheap and imports neither Keras nor any backend: the layer
classes (`keraseq.LSTM`, ...) and the submodules (`keraseq.layers`,
`keraseq.models`, `keraseq.text`, `keraseq.generation`, `keraseq.export`,
`keraseq.sampling`) are loaded on first access (PEP 562).
That keeps `keraseq generate DIR --onnx` (`keraseq.export.runtime`:
onnxruntime and numpy only) free of
Keras.

Importing `keraseq.layers` (or touching any layer class) registers keraseq's
layers with Keras (package "keraseq"), so that `keras.saving.load_model` can
rebuild models that use them; `keraseq.load_model(path)` does both.
"""

import importlib

__version__ = "0.1.0"

# The names of `keraseq.layers.__all__` (a test keeps the two lists equal); they
# are listed here so that `dir(keraseq)` and `__all__` need no Keras import.
_LAYER_NAMES = (
    "SimpleRNNCell",
    "SimpleRNN",
    "LSTMCell",
    "LSTM",
    "SinePositionEncoding",
    "PositionEmbedding",
    "TokenEmbedding",
    "TokenAndPositionEmbedding",
    "MultiHeadAttention",
    "TransformerBlock",
)
_SUBMODULES = (
    "layers",
    "models",
    "text",
    "generation",
    "export",
    "sampling",
)

__all__ = [*_LAYER_NAMES, "load_model"]


def __getattr__(name):
    if name in _LAYER_NAMES:
        value = getattr(importlib.import_module("keraseq.layers"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"keraseq.{name}")
    else:
        raise AttributeError(f"module 'keraseq' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted({*globals(), *_LAYER_NAMES, *_SUBMODULES})


def load_model(path, **kwargs):
    """Load a `.keras` model that may use keraseq layers.

    Imports `keraseq.layers` (which registers keraseq's layers with Keras),
    then calls `keras.saving.load_model(path, **kwargs)`.

    Args:
        path: str or path-like, a `.keras` file.
        **kwargs: passed to `keras.saving.load_model` (`custom_objects`,
            `compile`, `safe_mode`).

    Returns:
        The `keras.Model`.

    Raises:
        Whatever `keras.saving.load_model` raises for a missing or damaged file.

    Example:

    ```python
    model = keraseq.load_model("runs/shakespeare-char-lstm/model.keras")
    ```
    """
    importlib.import_module("keraseq.layers")
    keras = importlib.import_module("keras")
    return keras.saving.load_model(path, **kwargs)
