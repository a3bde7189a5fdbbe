"""keraseq layers: explicit recurrences, positional embeddings and attention."""

from keraseq.layers.attention import MultiHeadAttention
from keraseq.layers.embeddings import (
    PositionEmbedding,
    SinePositionEncoding,
    TokenAndPositionEmbedding,
)
from keraseq.layers.lstm import LSTM, LSTMCell
from keraseq.layers.simple_rnn import SimpleRNN, SimpleRNNCell
from keraseq.layers.transformer import TransformerBlock

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
