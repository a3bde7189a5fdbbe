"""Sampling text from a keraseq language model."""

import numpy as np

from keraseq.layers._validation import check_positive_int


def sample_token(logits, temperature=1.0, top_k=None, rng=None):
    """Draw one token id from `logits` `(vocabulary_size,)`.

    `p = softmax(logits / temperature)` restricted to the `top_k` largest logits
    (all when `top_k` is None), computed in float64 so that the draw depends only
    on the logits and `rng`.
    """
    rng = rng if rng is not None else np.random.default_rng()
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = np.partition(scaled, -top_k)[-top_k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    probabilities = np.exp(scaled - scaled.max())
    probabilities /= probabilities.sum()
    return int(rng.choice(probabilities.shape[-1], p=probabilities))


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
    position ignore the padding.

    Args:
        model: a language model `tokens (batch, time) -> logits (batch, time, V)`.
        vocabulary: a `keraseq.text.Vocabulary`.
        prompt: non-empty str; every character (or word) must be in the
            vocabulary.
        length: int ≥ 0, default 500, number of tokens to sample.
        temperature: float > 0, default 1.0.
        top_k: positive int or None (default): sample among the k most likely.
        seed: int or None: the same seed gives the same text on the same backend.
        context_length: positive int, default 128: the window the model sees.

    Returns:
        The prompt followed by the sampled continuation, as a str.

    Raises:
        ValueError: an empty prompt, a prompt with tokens outside the vocabulary
            (they are named), or a bad `length`, `temperature`, `top_k`.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"`length` must be an integer ≥ 0. Received: length={length!r}")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(
            f"`temperature` must be a number > 0. Received: temperature={temperature!r}"
        )
    check_positive_int("top_k", top_k, allow_none=True)
    check_positive_int("context_length", context_length)
    if not prompt:
        raise ValueError(f"`prompt` must not be empty. Received: prompt={prompt!r}")
    unknown = vocabulary.unknown(prompt)
    if unknown:
        raise ValueError(
            f"`prompt` contains tokens outside the vocabulary: {unknown!r}. "
            f"Received: prompt={prompt!r}"
        )
    ids = [int(i) for i in vocabulary.encode(prompt)]
    rng = np.random.default_rng(seed)
    window = np.zeros((1, context_length), dtype="int32")
    for _ in range(length):
        context = ids[-context_length:]
        window[0, :] = 0
        window[0, : len(context)] = context
        logits = np.asarray(model.predict_on_batch(window))
        next_logits = logits[0, len(context) - 1].astype(np.float64)
        next_logits[0] = -np.inf  # id 0 is the out-of-vocabulary token: never emit it
        ids.append(sample_token(next_logits, temperature, top_k, rng))
    generated = vocabulary.decode(ids[len(ids) - length :]) if length else ""
    if vocabulary.level == "char":
        return prompt + generated
    return vocabulary.decode(ids)
