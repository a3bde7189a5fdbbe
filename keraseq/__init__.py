"""keraseq: the classic path from recurrent networks to attention as Keras 3 layers.

The layers are importable from here (`keraseq.LSTM`) or from `keraseq.layers`.
They load on first access, so `import keraseq` (and the command line's argument
parsing) does not import Keras and its backend.
"""

__version__ = "0.1.0"

__all__ = [
    "SimpleRNNCell",
    "SimpleRNN",
    "LSTMCell",
    "LSTM",
    "SinePositionEncoding",
    "PositionEmbedding",
    "TokenAndPositionEmbedding",
    "MultiHeadAttention",
    "TransformerBlock",
]


def __getattr__(name):
    if name in __all__:
        from keraseq import layers

        return getattr(layers, name)
    raise AttributeError(f"module 'keraseq' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
