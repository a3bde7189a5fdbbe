"""Text data for language models: bundled corpora, tokens, vocabularies, batches.

Everything here returns numpy arrays, so the same pipeline feeds `model.fit`
on the TensorFlow, JAX and torch backends:

```python
from keraseq import text

corpus = text.load_corpus("shakespeare")
vocabulary = text.Vocabulary.from_text(corpus, level="char")
train_ids, validation_ids = text.split(vocabulary.encode(corpus))
train = text.LanguageModelDataset(train_ids, sequence_length=128, batch_size=32)
x_val, y_val = text.windows(validation_ids, sequence_length=128)
model.fit(train, validation_data=(x_val, y_val), epochs=1)
```

`Vocabulary` wraps `keras.layers.StringLookup`, which uses TensorFlow
internally (TensorFlow must be installed, whatever the Keras backend).
Tokenization, decoding and the vocabulary file are implemented once, without
Keras, in `keraseq._tokens` (re-exported here), and shared with
`keraseq.export.runtime`.
"""

import os
from pathlib import Path

from keraseq._keras import import_keras, quiet_native_stderr

import_keras()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keraseq._tokens import (  # noqa: E402,F401
    LEVELS,
    OOV_TOKEN,
    TokenVocabulary,
    _lone_surrogate,
    detokenize,
    tokenize,
)
from keraseq._validation import (  # noqa: E402
    check_bool,
    check_non_negative_int,
    check_positive_int,
    is_int,
    is_number,
)

__all__ = [
    "CORPORA",
    "LEVELS",
    "LanguageModelDataset",
    "Vocabulary",
    "corpus_path",
    "detokenize",
    "load_corpus",
    "split",
    "tokenize",
    "windows",
]

CORPORA = {
    "shakespeare": "tinyshakespeare.txt",
    "sherlock": "sherlock_holmes.txt",
    "irish": "irish_folk_songs.abc",
}
"""Bundled corpora: name -> file in `keraseq/data/` (see GUIDE §4 for sources)."""

_DATA_DIR = Path(__file__).resolve().parent / "data"


def _as_ids(ids, name="ids"):
    """`ids` as a 1-D integer numpy array, or a `ValueError` naming `name`."""
    array = np.asarray(ids)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"`{name}` must be a 1-D array of integer token ids. "
            f"Received: {name} with shape={array.shape} and dtype={array.dtype}"
        )
    return array


# ---------------------------------------------------------------- corpora


def corpus_path(name):
    """Path of a bundled corpus file.

    Args:
        name: string, one of `"shakespeare"`, `"sherlock"`, `"irish"` (the keys
            of `CORPORA`).

    Returns:
        A `pathlib.Path` inside the installed `keraseq/data/` folder.

    Raises:
        ValueError: if `name` is not a bundled corpus.

    Example:

    ```python
    keraseq.text.corpus_path("irish").name  # 'irish_folk_songs.abc'
    ```
    """
    if not isinstance(name, str) or name not in CORPORA:
        raise ValueError(
            f"`name` must be one of {sorted(CORPORA)}. Received: name={name!r}"
        )
    return _DATA_DIR / CORPORA[name]


def load_corpus(corpus):
    """Read a bundled corpus by name, or any UTF-8 text file by path.

    The file is decoded as UTF-8 without newline translation, so the returned
    string is exactly the file's text.

    Args:
        corpus: string or path-like. A key of `CORPORA` (`"shakespeare"`,
            `"sherlock"`, `"irish"`) or the path of a text file.

    Returns:
        The text, a `str`.

    Raises:
        ValueError: naming `corpus` and its value when the path is not
            valid UTF-8 (a file name of other bytes), does not exist, is a
            directory or not a regular file (a device, a pipe),
            cannot be read (e.g. no permission), is empty or whitespace only,
            or is not text (contains NUL bytes or is not valid UTF-8).

    Example:

    ```python
    text = keraseq.text.load_corpus("shakespeare")  # 1,115,394 characters
    ```
    """
    if isinstance(corpus, str) and corpus in CORPORA:
        path = str(corpus_path(corpus))
    elif isinstance(corpus, (str, os.PathLike)):
        # The string as given, not `Path(corpus)`: Path turns "" into "." and
        # drops a trailing "/", so "file.txt/" would read the file.
        path = os.fsdecode(corpus)
    else:
        raise ValueError(
            "`corpus` must be a corpus name or a path. "
            f"Known names: {sorted(CORPORA)}. Received: corpus={corpus!r}"
        )
    where = f"corpus={path!r}"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of the file name, as os.fsdecode keeps them
        raise ValueError(
            "`corpus` must be a path that is valid UTF-8 (it is recorded in "
            f"config.json). Received: {where}"
        ) from None
    if not os.path.exists(path):
        raise ValueError(
            f"`corpus` is neither a bundled corpus ({sorted(CORPORA)}) nor an "
            f"existing file. Received: {where}"
        )
    if os.path.isdir(path):
        raise ValueError(f"`corpus` must be a text file, not a directory. Received: {where}")
    if not os.path.isfile(path):  # a device or a pipe: /dev/zero would never end
        raise ValueError(
            f"`corpus` must be a regular text file, not a device or a pipe. Received: {where}"
        )
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:  # e.g. no permission
        raise ValueError(
            f"`corpus` could not be read ({error.strerror or error}). Received: {where}"
        ) from None
    if b"\x00" in data:
        raise ValueError(f"`corpus` is not a text file (it contains NUL bytes). Received: {where}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"`corpus` is not a UTF-8 text file ({error.reason} at byte "
            f"{error.start}). Received: {where}"
        ) from None
    if not text.strip():
        raise ValueError(f"`corpus` is empty (or whitespace only). Received: {where}")
    return text


# ---------------------------------------------------------------- vocabulary


class Vocabulary(TokenVocabulary):
    """A token vocabulary backed by `keras.layers.StringLookup`.

    Index 0 is the out-of-vocabulary token `"[UNK]"`; the tokens follow from
    index 1, in the order given (`from_text` orders them by descending
    frequency, then lexicographically, so a vocabulary built from the same
    text is always the same). There is no mask token. `size` is the
    vocabulary size a model needs: `len(tokens) + 1`.

    Encoding runs the Keras `StringLookup` layer (about 0.1 s for the 1.1 MB
    Shakespeare corpus on a CPU). Decoding indexes the token table
    `["[UNK]", *tokens]` (the order of the layer's vocabulary) with numpy:
    Keras's inverse `StringLookup` cannot return strings on the JAX backend (it
    raises "string arrays can only be made from NumPy arrays"), and
    `lookup.get_vocabulary()` returns a NUL character token as `""` (numpy
    drops trailing NULs), so this keeps all backends on one exact path.
    Everything but the layer (`decode`, `unknown`, `save`, `load`,
    `from_text`) is inherited from `keraseq._tokens.TokenVocabulary`, the
    Keras-free vocabulary of `keraseq.export.runtime`, which encodes to the same ids
    by dictionary look-up.

    Args:
        tokens: sequence of distinct, non-empty strings, without `"[UNK]"`;
            for `level="char"` each must be a single character.
        level: `"char"` or `"word"`, default `"char"`. How text is tokenized
            by `encode`, `decode` and `unknown`.

    Raises:
        ValueError: naming `tokens` or `level` for invalid values.

    Example:

    ```python
    vocabulary = Vocabulary.from_text("hello world", level="char")
    vocabulary.tokens          # ['l', 'o', ' ', 'd', 'e', 'h', 'r', 'w']
    ids = vocabulary.encode("hold")  # array([6, 2, 1, 4], dtype=int32)
    vocabulary.decode(ids)     # 'hold'
    ```
    """

    def __init__(self, tokens, level="char"):
        super().__init__(tokens, level=level)
        with quiet_native_stderr():  # StringLookup imports TensorFlow under any backend
            self._lookup = keras.layers.StringLookup(
                vocabulary=self._tokens, num_oov_indices=1, oov_token=OOV_TOKEN, mask_token=None
            )

    @property
    def lookup(self):
        """The `keras.layers.StringLookup` layer that maps tokens to ids."""
        return self._lookup

    def encode(self, text):
        """Token ids of `text`, from the `StringLookup` layer.

        Args:
            text: string.

        Returns:
            An int32 numpy array of shape `(num_tokens,)`; unknown tokens get
            id 0 (so do tokens holding a lone surrogate, which no vocabulary
            has and TensorFlow strings cannot hold).
        """
        tokens = tokenize(text, self._level)
        if not tokens:
            return np.zeros((0,), dtype=np.int32)
        if _lone_surrogate(text) is not None:  # "[UNK]" is looked up as id 0
            tokens = [OOV_TOKEN if _lone_surrogate(t) is not None else t for t in tokens]
        ids = self._lookup(np.array(tokens))
        return keras.ops.convert_to_numpy(ids).astype(np.int32)

    def one_hot(self, ids):
        """One-hot encoding of token ids.

        Args:
            ids: integer array-like of any shape `(...)`.

        Returns:
            A float32 numpy array of shape `(..., size)`.

        Raises:
            ValueError: if `ids` is not integer or out of `[0, size)`.
        """
        array = self._check_ids(ids)
        encoded = keras.ops.one_hot(array.astype(np.int32), self.size, dtype="float32")
        return keras.ops.convert_to_numpy(encoded)


# ---------------------------------------------------------------- splits and batches


def split(ids, validation_fraction=0.1):
    """Split token ids into a training head and a validation tail.

    The last `round(len(ids) * validation_fraction)` ids are the validation
    part; the split is not shuffled, so no window crosses it.

    Args:
        ids: 1-D integer array-like.
        validation_fraction: float in `(0, 1)`, default `0.1`.

    Returns:
        A tuple `(train, validation)` of 1-D numpy arrays (copies), with
        `len(train) + len(validation) == len(ids)`.

    Raises:
        ValueError: if `validation_fraction` is not in `(0, 1)`, if `ids` is
            not 1-D integer, or if either part would hold fewer than 2 ids.
    """
    array = _as_ids(ids)
    if not is_number(validation_fraction) or not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            "`validation_fraction` must be a number in (0, 1). "
            f"Received: validation_fraction={validation_fraction!r}"
        )
    num_validation = int(round(len(array) * float(validation_fraction)))
    num_train = len(array) - num_validation
    if num_train < 2 or num_validation < 2:
        raise ValueError(
            f"Splitting {len(array)} ids with validation_fraction={validation_fraction} "
            f"leaves {num_train} training and {num_validation} validation ids; both "
            "must be at least 2. Use more `ids` or another `validation_fraction`."
        )
    return array[:num_train].copy(), array[num_train:].copy()


def windows(ids, sequence_length, batch_size=None):
    """All non-overlapping next-token windows of `ids`, from the start.

    Window `i` is `x[i] = ids[i * L : (i + 1) * L]` and
    `y[i] = ids[i * L + 1 : (i + 1) * L + 1]` with `L = sequence_length`, so
    consecutive windows share no input token. Meant for validation and
    evaluation, e.g. `model.evaluate(x, y, batch_size=...)`.

    Args:
        ids: 1-D integer array-like.
        sequence_length: int, the window length `L`.
        batch_size: int or `None`, default `None`. If given, the number of
            windows is cut down to a multiple of `batch_size` (for models with
            a fixed batch size).

    Returns:
        A tuple `(x, y)` of int32 numpy arrays of shape
        `(num_windows, sequence_length)`.

    Raises:
        ValueError: if `sequence_length` or `batch_size` is not a positive
            integer, or `ids` is too short for one window (or one batch).
    """
    array = _as_ids(ids)
    sequence_length = check_positive_int("sequence_length", sequence_length)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    num_windows = max(len(array) - 1, 0) // sequence_length
    if batch_size is not None:
        num_windows -= num_windows % batch_size
    if num_windows == 0:
        raise ValueError(
            f"{len(array)} ids are too few for one window of sequence_length="
            f"{sequence_length}" + (f" per row of batch_size={batch_size}" if batch_size else "")
            + f": at least {sequence_length * (batch_size or 1) + 1} are needed."
        )
    end = num_windows * sequence_length
    x = array[:end].reshape(num_windows, sequence_length)  # (N, L)
    y = array[1 : end + 1].reshape(num_windows, sequence_length)  # (N, L)
    return x.astype(np.int32), y.astype(np.int32)


class LanguageModelDataset(keras.utils.PyDataset):
    """Batches of next-token windows for `model.fit`, reshuffled each epoch.

    Each item is `(x, y)`, two int32 arrays of shape
    `(batch_size, sequence_length)`, with `y` the ids following `x` by one
    token: for a window starting at `s`, `x = ids[s : s + L]` and
    `y = ids[s + 1 : s + L + 1]` (`L = sequence_length`). Windows of an epoch
    do not overlap (their starts are `L` apart).

    With `shuffle=True`, each epoch `e` draws, from
    `numpy.random.default_rng((seed, e))`, a start offset in
    `[0, sequence_length)` and a random order of that epoch's windows, so
    over epochs the model sees every token boundary and the order is
    reproducible from `seed`. With `shuffle=False` every epoch is the same:
    offset 0 and windows in order (use it for validation data).

    `len(dataset)` is the number of full batches, the same for every epoch:
    `((len(ids) - L) // L) // batch_size` with shuffling (enough for any
    offset; surplus windows of an epoch are left out, different ones each
    epoch) and `((len(ids) - 1) // L) // batch_size` without.

    The epoch counter advances at every `on_epoch_end` call (or jumps with
    `set_epoch`). `model.fit` calls it after each epoch and, in Keras 3.15
    on all three backends, once more at the start of every `fit` call (after
    peeking at a batch), so a fresh dataset's first trained epoch is epoch 1;
    the sequence is still fixed by `seed`. `fit(shuffle=True)` (its default) additionally
    permutes the order of the batches with Keras's own random state; pass
    `shuffle=False` to `fit` to keep the order set by `seed` alone.

    Args:
        ids: 1-D integer array-like of token ids.
        sequence_length: int, the window length `L`.
        batch_size: int, windows per batch.
        shuffle: bool, default `True`. Random offset and order per epoch.
        seed: int, default `0`. Seed of the per-epoch random draws.
        **kwargs: passed to `keras.utils.PyDataset` (`workers`,
            `use_multiprocessing`, `max_queue_size`).

    Raises:
        ValueError: naming `sequence_length` and `batch_size` if the ids
            cannot fill one batch; naming the argument for a non-positive
            `sequence_length` or `batch_size`, a non-bool `shuffle`, a negative
            or non-integer `seed`, or `ids` that are not 1-D integers.

    Example:

    ```python
    train = LanguageModelDataset(train_ids, sequence_length=128, batch_size=32)
    x, y = train[0]  # (32, 128) int32 each
    model.fit(train, epochs=3)
    ```
    """

    def __init__(self, ids, sequence_length, batch_size, shuffle=True, seed=0, **kwargs):
        array = _as_ids(ids)
        sequence_length = check_positive_int("sequence_length", sequence_length)
        batch_size = check_positive_int("batch_size", batch_size)
        shuffle = check_bool("shuffle", shuffle)
        seed = check_non_negative_int("seed", seed)
        if shuffle:
            num_windows = max(len(array) - sequence_length, 0) // sequence_length
        else:
            num_windows = max(len(array) - 1, 0) // sequence_length
        num_batches = num_windows // batch_size
        if num_batches == 0:
            needed = (batch_size + (1 if shuffle else 0)) * sequence_length + (0 if shuffle else 1)
            raise ValueError(
                f"{len(array)} ids cannot fill one batch of batch_size={batch_size} "
                f"windows of sequence_length={sequence_length} (shuffle={shuffle} "
                f"needs at least {needed} ids). Lower `sequence_length` or `batch_size`."
            )
        super().__init__(**kwargs)
        self.ids = array.astype(np.int32)
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self._num_batches = num_batches
        self._epoch = 0
        self._columns = np.arange(sequence_length)  # (L,)
        self._plan_epoch()

    def _plan_epoch(self):
        length = self.sequence_length
        used = self._num_batches * self.batch_size
        if self.shuffle:
            rng = np.random.default_rng((self.seed, self._epoch))
            offset = int(rng.integers(0, length))
            available = (len(self.ids) - 1 - offset) // length
            order = rng.permutation(available)[:used]
        else:
            offset = 0
            order = np.arange(used)
        self._offset = offset
        self._starts = offset + order * length  # (used,)

    @property
    def epoch(self):
        """Index of the current epoch (0 before the first `on_epoch_end`)."""
        return self._epoch

    @property
    def offset(self):
        """Start offset of the current epoch's window grid, in `[0, L)`."""
        return self._offset

    @property
    def starts(self):
        """Start positions in `ids` of this epoch's windows, in batch order."""
        return self._starts.copy()

    def __len__(self):
        return self._num_batches

    def __getitem__(self, index):
        if not is_int(index):
            raise TypeError(f"Batch index must be an integer. Received: {index!r}")
        if index < 0:
            index += self._num_batches
        if not 0 <= index < self._num_batches:
            raise IndexError(f"Batch index out of range [0, {self._num_batches}): {index}")
        starts = self._starts[index * self.batch_size : (index + 1) * self.batch_size]
        positions = starts[:, None] + self._columns  # (B, L)
        return self.ids[positions], self.ids[positions + 1]

    def set_epoch(self, epoch):
        """Jump to epoch `epoch` (e.g. to resume training); replans the windows."""
        self._epoch = check_non_negative_int("epoch", epoch)
        self._plan_epoch()

    def on_epoch_end(self):
        """Advance to the next epoch: new offset and order when shuffling."""
        self.set_epoch(self._epoch + 1)
