"""keraseq layers: explicit recurrences, positional embeddings and attention.

Importing this package registers the layers with Keras (package "keraseq"), so
that `keras.saving.load_model` can rebuild models that use them.
"""

from keraseq._keras import import_keras

import_keras()  # first, so that Keras is imported quietly (see keraseq._keras)

from keraseq.layers.attention import MultiHeadAttention  # noqa: E402
from keraseq.layers.embeddings import TokenAndPositionEmbedding, TokenEmbedding  # noqa: E402
from keraseq.layers.positional import PositionEmbedding, SinePositionEncoding  # noqa: E402
from keraseq.layers.lstm import LSTM, LSTMCell  # noqa: E402
from keraseq.layers.simple_rnn import SimpleRNN, SimpleRNNCell  # noqa: E402
from keraseq.layers.transformer import TransformerBlock  # noqa: E402

__all__ = [
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
]
