"""keraseq layers: explicit recurrences, positional embeddings and attention."""

# TEMPORARY during parallel development: tolerate modules not written yet.
import importlib as _importlib

_EXPORTS = {
    "simple_rnn": ["SimpleRNNCell", "SimpleRNN"],
    "lstm": ["LSTMCell", "LSTM"],
    "embeddings": ["SinePositionEncoding", "PositionEmbedding", "TokenAndPositionEmbedding"],
    "attention": ["MultiHeadAttention"],
    "transformer": ["TransformerBlock"],
}
__all__ = []
for _module, _names in _EXPORTS.items():
    try:
        _mod = _importlib.import_module(f"keraseq.layers.{_module}")
    except ModuleNotFoundError as _error:
        if _error.name != f"keraseq.layers.{_module}":
            raise
        continue
    for _name in _names:
        globals()[_name] = getattr(_mod, _name)
        __all__.append(_name)
