"""Tokens and vocabularies in plain Python and numpy (no Keras).

The one implementation of tokenization (`tokenize`, `detokenize`) and of a
vocabulary's data, decoding and JSON file (`TokenVocabulary`).
`keraseq.text` re-exports all of it and adds `keraseq.text.Vocabulary`, which
encodes with `keras.layers.StringLookup`; `keraseq.export.runtime` (ONNX generation
without Keras) uses `TokenVocabulary` directly. Both encode the same text to
the same ids.
"""

import collections
import json
import re
from pathlib import Path

import numpy as np

from keraseq import _atomic
from keraseq._validation import check_choice, check_positive_int

__all__ = [
    "LEVELS",
    "OOV_TOKEN",
    "TokenVocabulary",
    "check_token_ids",
    "check_tokens",
    "detokenize",
    "read_vocabulary_file",
    "tokenize",
]

LEVELS = ("char", "word")

OOV_TOKEN = "[UNK]"
DEFAULT_MAX_WORD_TOKENS = 10000

# A word (letters, digits, underscores, with inner apostrophes as in "don't"),
# a single punctuation mark or symbol, or a newline. Other whitespace is dropped.
_WORD_PATTERN = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]|\n")
_PUNCTUATION = re.compile(r"[^\w\s]")
_OPENING = frozenset("([{\u201c\u2018\u00bf\u00a1")
_JOINERS = frozenset("-")


# ---------------------------------------------------------------- tokens


def tokenize(text, level):
    """Split text into character or word tokens.

    - `"char"`: every character is a token (whitespace and newlines included),
      so `"".join(tokens) == text`.
    - `"word"`: tokens are words (runs of letters, digits and underscores,
      with inner apostrophes kept, e.g. `"don't"`), single punctuation marks or
      symbols, and newlines (`"\\n"`). Other whitespace is dropped.

    Args:
        text: string.
        level: `"char"` or `"word"`.

    Returns:
        A list of strings.

    Raises:
        ValueError: if `level` is not `"char"` or `"word"`, or `text` is not a
            string.

    Example:

    ```python
    tokenize("Don't stop!\\nGo.", "word")
    # ["Don't", 'stop', '!', '\\n', 'Go', '.']
    ```
    """
    check_choice("level", level, LEVELS)
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a string. Received: text of type {type(text).__name__}")
    if level == "char":
        return list(text)
    return _WORD_PATTERN.findall(text)


def detokenize(tokens, level):
    """Join tokens back into readable text; the inverse of `tokenize`.

    `"char"` tokens are concatenated. `"word"` tokens are joined with single
    spaces, except: no space before or after a newline, no space before a
    punctuation mark (`.`, `,`, `!`, a closing bracket...), no space after an
    opening bracket, none around `-`, and straight double quotes alternate
    between opening (no space after) and closing (no space before). The
    result tokenizes back to the same word tokens.

    Args:
        tokens: iterable of strings.
        level: `"char"` or `"word"`.

    Returns:
        A string.

    Raises:
        ValueError: if `level` is not `"char"` or `"word"`.

    Example:

    ```python
    detokenize(["Don't", "stop", "!", "\\n", "Go", "."], "word")
    # "Don't stop!\\nGo."
    ```
    """
    check_choice("level", level, LEVELS)
    tokens = list(tokens)
    if level == "char":
        return "".join(tokens)
    pieces = []
    previous = None
    previous_opens = False  # the previous token wants no space after it
    quote_open = False
    for token in tokens:
        opens = token in _OPENING
        closes = bool(_PUNCTUATION.fullmatch(token)) and not opens
        if token == '"':
            opens, closes = not quote_open, quote_open
            quote_open = not quote_open
        space = not (
            previous is None
            or previous == "\n"
            or token == "\n"
            or previous_opens
            or closes
            or previous in _JOINERS
        )
        if space:
            pieces.append(" ")
        pieces.append(token)
        previous, previous_opens = token, opens
    return "".join(pieces)


# ---------------------------------------------------------------- vocabulary


def _lone_surrogate(text):
    """Index of the first lone surrogate in `text` (which UTF-8 cannot encode:
    Python's `surrogateescape` makes them from undecodable bytes), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def check_tokens(tokens, level):
    """The tokens of a vocabulary as a list, or a `ValueError` naming `tokens`.

    Args:
        tokens: sequence of distinct, non-empty strings (valid Unicode: no
            lone surrogates), without `"[UNK]"`; for `level="char"` each must
            be a single character.
        level: `"char"` or `"word"`.

    Returns:
        `list(tokens)`.

    Raises:
        ValueError: naming `tokens` or `level` for invalid values.
    """
    check_choice("level", level, LEVELS)
    if isinstance(tokens, str):
        raise ValueError(
            "`tokens` must be a sequence of strings, not a single string. "
            f"Received: tokens={tokens[:50]!r}"
        )
    tokens = list(tokens)
    if not tokens:
        raise ValueError("`tokens` must not be empty. Received: tokens=[]")
    for token in tokens:
        if not isinstance(token, str) or not token:
            raise ValueError(
                f"`tokens` must all be non-empty strings. Received a token {token!r}"
            )
        if _lone_surrogate(token) is not None:
            raise ValueError(
                "`tokens` must be valid Unicode text (encodable as UTF-8). Received a "
                f"token {token!r} holding a lone surrogate"
            )
        if level == "char" and len(token) != 1:
            raise ValueError(
                '`tokens` of a level="char" vocabulary must be single characters. '
                f"Received a token {token!r}"
            )
    if OOV_TOKEN in tokens:
        raise ValueError(
            f"`tokens` must not contain the out-of-vocabulary token {OOV_TOKEN!r} "
            "(it is index 0 already)."
        )
    duplicates = [t for t, n in collections.Counter(tokens).items() if n > 1]
    if duplicates:
        raise ValueError(
            f"`tokens` must be distinct. Received duplicates: {duplicates[:10]!r}"
        )
    return tokens


def check_token_ids(name, ids, size):
    """Token ids as an integer numpy array, or a `ValueError` naming `name`.

    Args:
        name: str, the argument's name for the message (e.g. `"tokens"`).
        ids: array-like of integer ids, any shape (an empty one is returned
            as it is).
        size: positive int, the vocabulary size: ids must lie in `[0, size)`.

    Returns:
        `numpy.asarray(ids)`, of an integer dtype.

    Raises:
        ValueError: naming `name` and the first offending value (with its
            index) for a non-integer array or an id outside `[0, size)`.
    """
    array = np.asarray(ids)
    if array.size == 0:
        return array.astype(np.int64)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`{name}` must be integer token ids. Received: {name} with dtype={array.dtype}"
        )
    outside = (array < 0) | (array >= size)
    if outside.any():
        index = tuple(int(i) for i in np.argwhere(outside)[0])
        where = f"[{', '.join(map(str, index))}]" if index else ""
        raise ValueError(
            f"`{name}` must be token ids in [0, {size}) (the vocabulary has {size} ids). "
            f"Received: {name}{where}={int(array[index])}"
        )
    return array


def read_vocabulary_file(path):
    """Read and check a vocabulary file written by `TokenVocabulary.save`.

    Args:
        path: string or path-like, a UTF-8 JSON file
            `{"level": "char" | "word", "tokens": [...]}`.

    Returns:
        A tuple `(tokens, level)`: the checked list of tokens and the level.

    Raises:
        ValueError: naming `path` if the file is missing, is not JSON, or
            does not hold a valid `{"level": ..., "tokens": [...]}`.
    """
    where = f"path={str(path)!r}"
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"`path` is not an existing vocabulary file. Received: {where}")
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"`path` is not a JSON vocabulary file ({error}). Received: {where}"
        ) from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("tokens"), list)
        or "level" not in payload
    ):
        raise ValueError(
            '`path` must hold a JSON object {"level": ..., "tokens": [...]}. '
            f"Received: {where}"
        )
    try:
        return check_tokens(payload["tokens"], payload["level"]), payload["level"]
    except ValueError as error:
        raise ValueError(
            f"`path` holds an invalid vocabulary: {error} Received: {where}"
        ) from None


class TokenVocabulary:
    """A token vocabulary in plain Python and numpy (no Keras).

    Index 0 is the out-of-vocabulary token `"[UNK]"`; the tokens follow from
    index 1, in the order given (`from_text` orders them by descending
    frequency, then lexicographically, so a vocabulary built from the same
    text is always the same). There is no mask token. `size` is the
    vocabulary size a model needs: `len(tokens) + 1`.

    This is the base of `keraseq.text.Vocabulary` (which encodes with a Keras
    `StringLookup` layer) and holds everything but that layer: the tokens,
    `decode`, `unknown`, the JSON file (`save` / `load`) and `from_text`.
    Its own `encode` is a dictionary look-up giving the same ids; it is what
    `keraseq.export.runtime` uses to generate text without Keras.

    Args:
        tokens: sequence of distinct, non-empty strings, without `"[UNK]"`;
            for `level="char"` each must be a single character.
        level: `"char"` or `"word"`, default `"char"`. How text is tokenized
            by `encode`, `decode` and `unknown`.

    Raises:
        ValueError: naming `tokens` or `level` for invalid values.

    Example:

    ```python
    vocabulary = TokenVocabulary.from_text("hello world", level="char")
    vocabulary.tokens          # ['l', 'o', ' ', 'd', 'e', 'h', 'r', 'w']
    ids = vocabulary.encode("hold")  # array([6, 2, 1, 4], dtype=int32)
    vocabulary.decode(ids)     # 'hold'
    ```
    """

    def __init__(self, tokens, level="char"):
        tokens = check_tokens(tokens, level)
        self._tokens = tokens
        self._level = level
        self._table = np.array([OOV_TOKEN, *tokens], dtype=object)  # id -> token
        self._ids = {token: index + 1 for index, token in enumerate(tokens)}
        self._known = frozenset(tokens)

    @classmethod
    def from_text(cls, text, level="char", max_tokens=None):
        """Build a vocabulary from the tokens of `text`.

        Tokens are ordered by descending count, ties broken by lexicographic
        (code point) order, and only the `max_tokens` most frequent are kept.

        Args:
            text: string.
            level: `"char"` or `"word"`, default `"char"`.
            max_tokens: int or `None`, default `None`. How many tokens to keep
                (not counting `"[UNK]"`); `None` keeps every character at
                `"char"` level and the 10000 most frequent words at `"word"`
                level.

        Returns:
            A vocabulary of the class it is called on.

        Raises:
            ValueError: if `text` is not a string, has no tokens or holds a
                lone surrogate (not valid Unicode text: UTF-8 cannot encode
                it), `level` is invalid, or `max_tokens` is not a positive
                integer or `None`.
        """
        check_choice("level", level, LEVELS)
        if max_tokens is not None:
            max_tokens = check_positive_int("max_tokens", max_tokens)
        elif level == "word":
            max_tokens = DEFAULT_MAX_WORD_TOKENS
        tokens = tokenize(text, level)
        if not tokens:
            raise ValueError(f"`text` has no {level} tokens. Received: text={text[:50]!r}")
        index = _lone_surrogate(text)
        if index is not None:
            raise ValueError(
                f"`text` must be valid Unicode text (encodable as UTF-8); it holds the "
                f"lone surrogate {text[index]!r} at index {index}. "
                f"Received: text={text[:50]!r}"
            )
        counts = collections.Counter(tokens)
        ordered = sorted(counts, key=lambda token: (-counts[token], token))
        if max_tokens is not None:
            ordered = ordered[:max_tokens]
        return cls(ordered, level=level)

    @property
    def tokens(self):
        """The tokens, without `"[UNK]"`; token `tokens[i]` has id `i + 1`."""
        return list(self._tokens)

    @property
    def level(self):
        """`"char"` or `"word"`."""
        return self._level

    @property
    def size(self):
        """Number of ids, `len(tokens) + 1` (the model's vocabulary size)."""
        return len(self._tokens) + 1

    def __repr__(self):
        return f"{type(self).__name__}(level={self._level!r}, size={self.size})"

    def __eq__(self, other):
        if not isinstance(other, TokenVocabulary):
            return NotImplemented
        return self._level == other._level and self._tokens == other._tokens

    __hash__ = None

    def encode(self, text):
        """Token ids of `text`.

        Args:
            text: string.

        Returns:
            An int32 numpy array of shape `(num_tokens,)`; unknown tokens get
            id 0.
        """
        ids = [self._ids.get(token, 0) for token in tokenize(text, self._level)]
        return np.array(ids, dtype=np.int32)

    def _check_ids(self, ids):
        return check_token_ids("ids", ids, self.size).astype(np.int64)

    def decode(self, ids):
        """Text of token ids (the inverse of `encode` for known tokens).

        Id 0 decodes to the literal `"[UNK]"`. Word tokens are joined by
        `detokenize`.

        Args:
            ids: 1-D sequence or array of integer ids.

        Returns:
            A string.

        Raises:
            ValueError: if `ids` is not 1-D (a scalar counts as one id), not
                integer, or out of `[0, size)`.
        """
        array = self._check_ids(ids)
        if array.ndim == 0:
            array = array.reshape(1)
        if array.ndim != 1:
            raise ValueError(f"`ids` must be 1-D. Received: ids with shape={array.shape}")
        return detokenize(self._table[array].tolist(), self._level)

    def unknown(self, text):
        """Distinct tokens of `text` that are not in the vocabulary.

        Args:
            text: string.

        Returns:
            A list of strings, in order of first appearance in `text`.
        """
        tokens = tokenize(text, self._level)
        return list(dict.fromkeys(t for t in tokens if t not in self._known))

    def save(self, path):
        """Write the vocabulary as JSON, `{"level": ..., "tokens": [...]}`.

        JSON (UTF-8) is used because tokens include `"\\n"` and spaces. The
        file is written atomically (a temporary name, then renamed): it is
        complete or, on any failure, an existing file is left as it was.

        Args:
            path: string or path-like.
        """
        payload = {"level": self._level, "tokens": self._tokens}
        _atomic.write_json(path, payload, ensure_ascii=False)

    @classmethod
    def load(cls, path):
        """Read a vocabulary written by `save` (see `read_vocabulary_file`).

        Args:
            path: string or path-like.

        Returns:
            A vocabulary of the class it is called on.

        Raises:
            ValueError: naming `path` if the file is missing, is not JSON, or
                does not hold a valid `{"level": ..., "tokens": [...]}`.
        """
        tokens, level = read_vocabulary_file(path)
        return cls(tokens, level=level)
