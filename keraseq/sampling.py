"""Next-token sampling, shared by Keras generation and ONNX generation.

Plain Python and numpy only (no Keras): `keraseq.generation.generate` (Keras
models) and `keraseq.export.runtime` (onnxruntime) both draw every token through
`next_token`, so the same logits and the same seed give the same ids.
"""

import math

import numpy as np

from keraseq._validation import check_positive_int, is_number

__all__ = ["check_sampling", "next_token", "prompt_ids", "sample_token"]


def check_sampling(length, temperature, top_k):
    """Check the sampling arguments of a generation call.

    Args:
        length: int ≥ 0, number of tokens to sample.
        temperature: finite number ≥ 0; 0 means greedy decoding (argmax).
        top_k: positive int or None.

    Returns:
        A tuple `(length, temperature, top_k)` as `int`, `float` and
        `int | None`.

    Raises:
        ValueError: naming the argument and the value received.
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"`length` must be an integer ≥ 0. Received: length={length!r}")
    if not is_number(temperature) or not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(
            "`temperature` must be a finite number ≥ 0 (0 = greedy). "
            f"Received: temperature={temperature!r}"
        )
    top_k = check_positive_int("top_k", top_k, allow_none=True)
    return int(length), float(temperature), top_k


def sample_token(logits, temperature=1.0, top_k=None, rng=None):
    """Draw one token id from `logits` `(vocabulary_size,)`.

    With `temperature > 0`, draws from `p = softmax(logits / temperature)`
    restricted to the `top_k` largest logits (all when `top_k` is None),
    computed in float64 so that the draw depends only on the logits and `rng`
    (one `rng.choice` call per token). With `temperature == 0` (greedy), returns
    `argmax(logits)` (the lowest id among ties) and leaves `rng` untouched.

    Args:
        logits: 1-D array-like of floats, `(vocabulary_size,)`; `-inf` entries
            are never drawn.
        temperature: float ≥ 0, default 1.0.
        top_k: positive int or None (default).
        rng: a `numpy.random.Generator`, default a fresh unseeded one.

    Returns:
        The token id, an `int`.
    """
    scaled = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(scaled))
    rng = rng if rng is not None else np.random.default_rng()
    scaled = scaled / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = np.partition(scaled, -top_k)[-top_k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    probabilities = np.exp(scaled - scaled.max())
    probabilities /= probabilities.sum()
    return int(rng.choice(probabilities.shape[-1], p=probabilities))


def next_token(logits, temperature, top_k, rng):
    """The token generation emits after `logits` (the last position's row).

    The logits are cast to float64 and id 0 (the out-of-vocabulary token) is
    set to `-inf`, so it is never emitted; then `sample_token`.

    Args:
        logits: 1-D array-like `(vocabulary_size,)`, any float dtype.
        temperature: float ≥ 0 (0 = greedy).
        top_k: positive int or None.
        rng: a `numpy.random.Generator`.

    Returns:
        The token id, an `int` in `[1, vocabulary_size)`.
    """
    row = np.array(logits, dtype=np.float64)  # a copy: the caller's array is kept
    row[0] = -np.inf
    return sample_token(row, temperature, top_k, rng)


def prompt_ids(vocabulary, prompt):
    """The ids of a generation prompt, after checking it.

    Args:
        vocabulary: a `keraseq.text.Vocabulary` or
            `keraseq.export.runtime.TokenVocabulary`.
        prompt: non-empty str, every token of which is in the vocabulary.

    Returns:
        A list of `int` ids.

    Raises:
        ValueError: for an empty prompt, one with tokens outside the
            vocabulary (they are named), or one that encodes to no token (a
            word-level prompt of whitespace only).
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"`prompt` must be a non-empty string. Received: prompt={prompt!r}")
    unknown = vocabulary.unknown(prompt)
    if unknown:
        raise ValueError(
            f"`prompt` contains tokens outside the vocabulary: {unknown!r}. "
            f"Received: prompt={prompt!r}"
        )
    ids = [int(i) for i in vocabulary.encode(prompt)]
    if not ids:  # e.g. a word-level prompt of whitespace only: no token to start from
        raise ValueError(
            f"`prompt` holds no token (a {vocabulary.level}-level vocabulary). "
            f"Received: prompt={prompt!r}"
        )
    return ids


def generated_text(vocabulary, prompt, ids, length):
    """The text a generation call returns: the prompt and its continuation.

    Character level: `prompt + decode(ids[-length:])` (the prompt verbatim).
    Word level: `decode(ids)` (word tokens are re-joined by `detokenize`).
    """
    if vocabulary.level == "char":
        return prompt + (vocabulary.decode(ids[len(ids) - length :]) if length else "")
    return vocabulary.decode(ids)
