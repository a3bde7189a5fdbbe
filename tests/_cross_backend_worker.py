"""Helper for test_cross_backend.py, run as a script under a given KERAS_BACKEND.

    python _cross_backend_worker.py run DIR    # load every DIR/*.keras, run DIR/*.input.npy,
                                               # write DIR/*.<backend>.npy
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def zoo():
    """Small models covering every keraseq layer, with inputs. Built in the caller's backend."""
    import keraseq
    from keraseq.models import language_model

    rng = np.random.default_rng(7)
    floats = rng.normal(size=(3, 9, 4)).astype("float32")
    tokens = rng.integers(1, 20, size=(3, 9)).astype("int32")
    tokens[1, 6:] = 0  # right padding
    tokens[2, :3] = 0  # left padding

    def functional(inputs, outputs):
        return keras.Model(inputs, outputs)

    models = {}
    x = keras.Input((None, 4))
    models["simple_rnn"] = (functional(x, keraseq.SimpleRNN(6, return_sequences=True)(x)), floats)
    x = keras.Input((None, 4))
    y = keraseq.SimpleRNN(6, activation="relu", output_units=3, go_backwards=True,
                          return_sequences=True)(x)
    models["simple_rnn_relu_projection_backwards"] = (functional(x, y), floats)
    t = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(20, 4, mask_zero=True)(t)
    y = keraseq.LSTM(6, return_sequences=True)(h)
    models["lstm_masked"] = (functional(t, y), tokens)
    x = keras.Input((None, 4))
    y = keras.layers.Bidirectional(keraseq.LSTM(5, return_sequences=True))(x)
    models["bidirectional_lstm"] = (functional(x, y), floats)
    x = keras.Input((None, 4))
    y = keraseq.MultiHeadAttention(2, 3, value_dim=5)(x, x, use_causal_mask=True)
    models["attention_causal"] = (functional(x, y), floats)
    x = keras.Input((None, 4))
    y = keraseq.TransformerBlock(2, 8)(x)
    models["transformer_block"] = (functional(x, y), floats)
    t = keras.Input((None,), dtype="int32")
    y = keraseq.TokenAndPositionEmbedding(20, 16, 6, mask_zero=True)(t)
    y = keras.layers.Add()([y, keraseq.SinePositionEncoding()(y)])  # Add keeps the mask
    models["embeddings"] = (functional(t, y), tokens)
    for architecture in ("rnn", "lstm", "transformer"):
        model = language_model(architecture, 20, units=8, embedding_dim=4, num_heads=2)
        models[f"lm_{architecture}"] = (model, tokens)
    return models


def run(directory):
    import keraseq

    backend = keras.backend.backend()
    for path in sorted(Path(directory).glob("*.keras")):
        model = keraseq.load_model(path)  # registers keraseq's layers, then keras.saving
        x = np.load(path.with_suffix(".input.npy"))
        y = keras.ops.convert_to_numpy(model(x, training=False))
        np.save(path.with_suffix(f".{backend}.npy"), y)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2])
