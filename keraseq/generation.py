"""Sampling text from a keraseq language model.

`sample_token` lives in `keraseq.sampling` (numpy only, shared with the ONNX
runtime `keraseq.export.runtime`) and is re-exported here.
"""

import numpy as np

from keraseq._validation import check_positive_int
from keraseq.sampling import (
    check_sampling,
    generated_text,
    next_token,
    prompt_ids,
    sample_token,
)

__all__ = ["generate", "sample_token"]


def generate(
    model,
    vocabulary,
    prompt,
    length=500,
    temperature=1.0,
    top_k=None,
    seed=None,
    context_length=128,
):
    """Continue `prompt` by `length` tokens sampled from `model`.

    Each step runs the model on a window of the last `context_length` tokens,
    right-padded to exactly `context_length` (so every call has one shape and the
    backend compiles once); the model is causal, so the logits at the last real
    position ignore the padding. Every token is drawn by
    `keraseq.sampling.next_token` (float64 softmax, id 0 never emitted, one
    `rng.choice` per token), the rule `keraseq.export.runtime.OnnxGenerator` shares,
    so greedy decoding (`temperature=0`) gives the same ids from the ONNX
    streaming graphs.

    Args:
        model: a language model `tokens (batch, time) -> logits (batch, time, V)`.
        vocabulary: a `keraseq.text.Vocabulary`.
        prompt: non-empty str; every character (or word) must be in the
            vocabulary.
        length: int ≥ 0, default 500, number of tokens to sample.
        temperature: float ≥ 0, default 1.0; 0 means greedy decoding (the
            most likely token at every step, no randomness).
        top_k: positive int or None (default): sample among the k most likely.
        seed: int or None: the same seed gives the same text on the same backend.
        context_length: positive int, default 128: the window the model sees.

    Returns:
        The prompt followed by the sampled continuation, as a str.

    Raises:
        ValueError: an empty prompt, a prompt with tokens outside the vocabulary
            (they are named), or a bad `length`, `temperature`, `top_k`.
    """
    length, temperature, top_k = check_sampling(length, temperature, top_k)
    check_positive_int("context_length", context_length)
    ids = prompt_ids(vocabulary, prompt)
    rng = np.random.default_rng(seed)
    window = np.zeros((1, context_length), dtype="int32")
    for _ in range(length):
        context = ids[-context_length:]
        window[0, :] = 0
        window[0, : len(context)] = context
        logits = np.asarray(model.predict_on_batch(window))  # (1, context_length, V)
        # float64, id 0 (out of vocabulary) never emitted, then sample_token
        ids.append(next_token(logits[0, len(context) - 1], temperature, top_k, rng))
    return generated_text(vocabulary, prompt, ids, length)
