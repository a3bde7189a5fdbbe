"""Tests for keraseq.text: corpora, tokens, the StringLookup vocabulary, batches."""

import hashlib
import json
import re

import keras
import numpy as np
import pytest

from conftest import BACKEND
from keraseq import text

SHA256_PREFIXES = {
    "shakespeare": "86c4e6aa",
    "sherlock": "f040f032",
    "irish": "df3782d5",
}


@pytest.fixture(scope="module")
def corpora():
    return {name: text.load_corpus(name) for name in text.CORPORA}


# ---------------------------------------------------------------- corpora


def test_bundled_corpora_present_with_licence_and_checksums():
    data_dir = text.corpus_path("shakespeare").parent
    assert (data_dir / "LICENSE.irish_folk_songs.md").is_file()
    assert "MIT" in (data_dir / "LICENSE.irish_folk_songs.md").read_text(encoding="utf-8")
    assert set(text.CORPORA) == set(SHA256_PREFIXES)
    for name, prefix in SHA256_PREFIXES.items():
        path = text.corpus_path(name)
        assert path.name == text.CORPORA[name]
        assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(prefix), name


def test_load_corpus_by_name_and_path(corpora, tmp_path):
    shakespeare = corpora["shakespeare"]
    assert len(shakespeare) == 1_115_394 and len(set(shakespeare)) == 65  # GUIDE §4
    assert shakespeare.startswith("First Citizen:\n")
    assert text.load_corpus(text.corpus_path("irish")) == corpora["irish"]
    path = tmp_path / "mine.txt"
    path.write_bytes("caf\u00e9\r\nna\u00efve\n".encode("utf-8"))
    assert text.load_corpus(str(path)) == "caf\u00e9\r\nna\u00efve\n"  # no newline translation


def test_load_corpus_bad_paths(tmp_path):
    missing = tmp_path / "missing.txt"
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t\n")
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"abc\x00\x01\x02def")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9".encode("latin-1"))
    cases = [
        (missing, "neither a bundled corpus"),
        (tmp_path, "directory"),
        (empty, "empty"),
        (blank, "empty"),
        (binary, "NUL"),
        (latin1, "UTF-8"),
    ]
    for path, reason in cases:
        with pytest.raises(ValueError, match=rf"`corpus`.*{reason}.*{re.escape(str(path))}"):
            text.load_corpus(path)
        with pytest.raises(ValueError, match=re.escape(f"corpus={str(path)!r}")):
            text.load_corpus(str(path))
    with pytest.raises(ValueError, match="`corpus`"):
        text.load_corpus(42)
    with pytest.raises(ValueError, match="`name`.*Received: name='hamlet'"):
        text.corpus_path("hamlet")


# ---------------------------------------------------------------- tokens


def test_tokenize_and_detokenize_examples():
    sample = 'He said: "Don\'t go (yet)!"\tThen, well-known\r\n  words.\nEnd'
    words = text.tokenize(sample, "word")
    assert words == [
        "He", "said", ":", '"', "Don't", "go", "(", "yet", ")", "!", '"',
        "Then", ",", "well", "-", "known", "\n", "words", ".", "\n", "End",
    ]  # fmt: skip
    assert text.detokenize(words, "word") == (
        'He said: "Don\'t go (yet)!" Then, well-known\nwords.\nEnd'
    )
    assert text.tokenize(sample, "char") == list(sample)
    assert text.detokenize(list(sample), "char") == sample
    assert text.tokenize("", "word") == [] and text.detokenize([], "word") == ""


def test_bad_level():
    for function, argument in ((text.tokenize, "abc"), (text.detokenize, ["a"])):
        for bad in ("chars", "bpe", None):
            with pytest.raises(ValueError, match="`level`.*Received: level="):
                function(argument, bad)
    with pytest.raises(ValueError, match="`level`"):
        text.Vocabulary(["a"], level="byte")
    with pytest.raises(ValueError, match="`text`"):
        text.tokenize(b"bytes", "char")


def test_word_detokenize_retokenizes_to_same_tokens(corpora):
    for name, corpus in corpora.items():
        tokens = text.tokenize(corpus, "word")
        assert text.tokenize(text.detokenize(tokens, "word"), "word") == tokens, name


# ---------------------------------------------------------------- vocabulary


@pytest.mark.parametrize("name", ["shakespeare", "sherlock", "irish"])
def test_char_round_trip_through_string_lookup(corpora, name):
    corpus = corpora[name]
    vocabulary = text.Vocabulary.from_text(corpus, level="char")
    assert vocabulary.size == len(set(corpus)) + 1
    ids = vocabulary.encode(corpus)
    assert ids.dtype == np.int32 and ids.shape == (len(corpus),)
    # Independent reference: a dict from token to its position + 1.
    index = {token: i + 1 for i, token in enumerate(vocabulary.tokens)}
    np.testing.assert_array_equal(ids[:5000], [index[c] for c in corpus[:5000]])
    assert ids.min() >= 1  # no unknown characters
    assert vocabulary.decode(ids) == corpus


@pytest.mark.parametrize("name", ["shakespeare", "sherlock", "irish"])
def test_word_round_trip_through_string_lookup(corpora, name):
    corpus = corpora[name]
    tokens = text.tokenize(corpus, "word")
    vocabulary = text.Vocabulary.from_text(corpus, level="word", max_tokens=100_000)
    assert vocabulary.size == len(set(tokens)) + 1
    ids = vocabulary.encode(corpus)
    assert ids.shape == (len(tokens),)
    index = {token: i + 1 for i, token in enumerate(vocabulary.tokens)}
    np.testing.assert_array_equal(ids, [index[t] for t in tokens])
    assert text.tokenize(vocabulary.decode(ids), "word") == tokens


def test_word_default_cap_and_unknown_words(corpora):
    corpus = corpora["shakespeare"]
    tokens = text.tokenize(corpus, "word")
    assert len(set(tokens)) > 10_000
    vocabulary = text.Vocabulary.from_text(corpus, level="word")  # default cap
    assert vocabulary.size == 10_001 and len(vocabulary.tokens) == 10_000
    counts = {}
    for token in tokens:
        counts[token] = counts.get(token, 0) + 1
    expected = sorted(counts, key=lambda t: (-counts[t], t))[:10_000]
    assert vocabulary.tokens == expected
    ids = vocabulary.encode(corpus)
    known = set(expected)
    np.testing.assert_array_equal(ids == 0, [t not in known for t in tokens])
    char_vocabulary = text.Vocabulary.from_text(corpus, level="char")
    assert char_vocabulary.size == 66  # no cap at char level


def test_vocabulary_order_is_deterministic():
    sample = "banana bandana\nab"
    vocabulary = text.Vocabulary.from_text(sample)
    # counts: a=7, n=4, b=3, d=1... ties broken by code point (" " < "\n"? no: "\n" < " ").
    assert vocabulary.tokens == ["a", "n", "b", "\n", " ", "d"]
    assert text.Vocabulary.from_text(sample).tokens == vocabulary.tokens
    assert text.Vocabulary.from_text("".join(reversed(sample))).tokens == vocabulary.tokens
    np.testing.assert_array_equal(vocabulary.encode("bad\n"), [3, 1, 6, 4])
    words = text.Vocabulary.from_text("b a c a b a", level="word", max_tokens=2)
    assert words.tokens == ["a", "b"] and words.level == "word" and words.size == 3
    assert text.Vocabulary(["z", "y"]).tokens == ["z", "y"]  # given order is kept


def test_unknown_and_out_of_vocabulary_ids():
    vocabulary = text.Vocabulary.from_text("hello world")
    assert vocabulary.unknown("hello, WORLD! hi?") == [",", "W", "O", "R", "L", "D", "!", "i", "?"]
    assert vocabulary.unknown("hello") == []
    ids = vocabulary.encode("hex!")
    np.testing.assert_array_equal(ids, [6, 5, 0, 0])
    assert vocabulary.decode(ids) == "he[UNK][UNK]"
    words = text.Vocabulary.from_text("the cat sat", level="word")
    assert words.unknown("the dog sat, the dog ran") == ["dog", ",", "ran"]


def test_one_hot(rng):
    vocabulary = text.Vocabulary.from_text("abcabd")
    ids = rng.integers(0, vocabulary.size, size=(3, 7))
    encoded = vocabulary.one_hot(ids)
    assert encoded.dtype == np.float32 and encoded.shape == (3, 7, vocabulary.size)
    np.testing.assert_array_equal(encoded, np.eye(vocabulary.size, dtype=np.float32)[ids])


def test_decode_bad_ids():
    vocabulary = text.Vocabulary.from_text("abc")
    for bad in ([0, 4], [-1], [0.5], [[1, 2]]):
        with pytest.raises(ValueError, match="`ids`"):
            vocabulary.decode(bad)
    with pytest.raises(ValueError, match="`ids`"):
        vocabulary.one_hot([7])
    assert vocabulary.decode(2) == vocabulary.tokens[1]  # a scalar is one id


def test_vocabulary_bad_arguments():
    cases = [
        ([], "must not be empty"),
        ("abc", "single string"),
        (["a", "a"], "distinct"),
        (["a", "[UNK]"], r"\[UNK\]"),
        (["ab"], "single characters"),
        (["a", ""], "non-empty"),
        (["a", 3], "non-empty strings"),
    ]
    for tokens, reason in cases:
        with pytest.raises(ValueError, match=f"`tokens`.*{reason}"):
            text.Vocabulary(tokens, level="char")
    for bad in (0, -5, 2.5, "10"):
        with pytest.raises(ValueError, match="`max_tokens`.*Received: max_tokens="):
            text.Vocabulary.from_text("abc", max_tokens=bad)
    with pytest.raises(ValueError, match="`text`"):
        text.Vocabulary.from_text(" \t ", level="word")


def test_save_load_round_trip(tmp_path, corpora):
    vocabulary = text.Vocabulary.from_text(corpora["irish"])
    assert "\n" in vocabulary.tokens and " " in vocabulary.tokens
    path = tmp_path / "vocabulary.json"
    vocabulary.save(path)
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert payload == {"level": "char", "tokens": vocabulary.tokens}
    loaded = text.Vocabulary.load(str(path))
    assert loaded == vocabulary and loaded.level == "char" and loaded.size == vocabulary.size
    sample = corpora["irish"][:2000]
    np.testing.assert_array_equal(loaded.encode(sample), vocabulary.encode(sample))
    words = text.Vocabulary.from_text("a b\nc, d", level="word")
    words.save(tmp_path / "words.json")
    assert text.Vocabulary.load(tmp_path / "words.json").tokens == words.tokens


def test_load_bad_files(tmp_path):
    missing = tmp_path / "missing.json"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(["a", "b"]))
    duplicate = tmp_path / "duplicate.json"
    duplicate.write_text(json.dumps({"level": "char", "tokens": ["a", "a"]}))
    for path in (missing, broken, wrong, duplicate, tmp_path):
        with pytest.raises(ValueError, match=rf"`path`.*{re.escape(repr(str(path)))}"):
            text.Vocabulary.load(path)


# ---------------------------------------------------------------- split and windows


def test_split_sizes_and_values():
    ids = np.arange(1000, dtype=np.int32)
    train, validation = text.split(ids)
    assert len(train) == 900 and len(validation) == 100
    np.testing.assert_array_equal(train, ids[:900])
    np.testing.assert_array_equal(validation, ids[900:])
    train, validation = text.split(list(range(10)), validation_fraction=0.3)
    np.testing.assert_array_equal(validation, [7, 8, 9])
    train, validation = text.split(ids[:7], validation_fraction=0.29)  # round(2.03) = 2
    assert (len(train), len(validation)) == (5, 2)


def test_split_bad_arguments():
    for bad in (0, 1, 0.0, 1.0, -0.1, 1.5, "0.1", True, None):
        with pytest.raises(ValueError, match="`validation_fraction`.*Received: validation_f"):
            text.split(np.arange(100), validation_fraction=bad)
    with pytest.raises(ValueError, match="at least 2"):
        text.split(np.arange(10), validation_fraction=0.1)  # 1 validation id
    with pytest.raises(ValueError, match="at least 2"):
        text.split(np.arange(10), validation_fraction=0.9)  # 1 training id
    with pytest.raises(ValueError, match="`ids`"):
        text.split(np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="`ids`"):
        text.split(np.linspace(0, 1, 50))


def test_windows_values(rng):
    ids = rng.integers(0, 50, size=103).astype(np.int32)
    x, y = text.windows(ids, sequence_length=10)
    assert x.shape == y.shape == (10, 10) and x.dtype == y.dtype == np.int32
    for i in range(10):
        np.testing.assert_array_equal(x[i], ids[10 * i : 10 * i + 10])
        np.testing.assert_array_equal(y[i], ids[10 * i + 1 : 10 * i + 11])
    x, y = text.windows(ids, sequence_length=10, batch_size=4)
    assert x.shape == (8, 10)
    np.testing.assert_array_equal(y[7], ids[71:81])
    x, _ = text.windows(ids[:11], sequence_length=10)  # exactly one window
    assert x.shape == (1, 10)
    with pytest.raises(ValueError, match="sequence_length=10"):
        text.windows(ids[:10], sequence_length=10)
    with pytest.raises(ValueError, match="batch_size=20"):
        text.windows(ids, sequence_length=10, batch_size=20)
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="`sequence_length`"):
            text.windows(ids, sequence_length=bad)
        with pytest.raises(ValueError, match="`batch_size`"):
            text.windows(ids, sequence_length=5, batch_size=bad)


# ---------------------------------------------------------------- LanguageModelDataset


def _epoch(dataset):
    batches = [dataset[i] for i in range(len(dataset))]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def test_dataset_windows_are_slices_of_ids(rng):
    length, batch_size = 8, 3
    ids = rng.integers(0, 1000, size=205).astype(np.int32)
    dataset = text.LanguageModelDataset(ids, length, batch_size, seed=5)
    assert len(dataset) == ((205 - 8) // 8) // 3 == 8
    for _ in range(4):  # several epochs
        x, y = dataset[0]
        assert x.shape == y.shape == (batch_size, length) and x.dtype == y.dtype == np.int32
        xs, ys = _epoch(dataset)
        starts = dataset.starts
        assert len(starts) == len(dataset) * batch_size == len(np.unique(starts))
        assert 0 <= dataset.offset < length
        assert np.all((starts - dataset.offset) % length == 0)  # non-overlapping grid
        assert starts.max() + length + 1 <= len(ids)
        for row, start in enumerate(starts):
            np.testing.assert_array_equal(xs[row], ids[start : start + length])
            np.testing.assert_array_equal(ys[row], ids[start + 1 : start + length + 1])
        dataset.on_epoch_end()
    assert dataset.epoch == 4


def test_dataset_positions_with_arange_ids():
    # ids = positions, so each row reveals where it was cut from.
    length, batch_size = 5, 4
    ids = np.arange(123)
    dataset = text.LanguageModelDataset(ids, length, batch_size, seed=1)
    offsets = []
    for _ in range(6):
        xs, ys = _epoch(dataset)
        np.testing.assert_array_equal(xs, xs[:, :1] + np.arange(length))
        np.testing.assert_array_equal(ys, xs + 1)
        first = xs[:, 0]
        assert len(set(first)) == len(first)
        assert len(set(first % length)) == 1  # one offset per epoch
        offsets.append(int(first[0] % length))
        dataset.on_epoch_end()
    assert len(set(offsets)) > 1  # the offset moves between epochs


def test_dataset_shuffle_is_deterministic_per_seed(rng):
    ids = rng.integers(0, 30, size=500)
    first = text.LanguageModelDataset(ids, 7, 4, seed=3)
    second = text.LanguageModelDataset(ids, 7, 4, seed=3)
    other = text.LanguageModelDataset(ids, 7, 4, seed=4)
    epochs_first, epochs_second, epochs_other = [], [], []
    for _ in range(3):
        epochs_first.append(_epoch(first)[0])
        epochs_second.append(_epoch(second)[0])
        epochs_other.append(_epoch(other)[0])
        for dataset in (first, second, other):
            dataset.on_epoch_end()
    for a, b in zip(epochs_first, epochs_second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(epochs_first, epochs_other))
    assert not np.array_equal(epochs_first[0], epochs_first[1])  # reshuffled each epoch
    jumped = text.LanguageModelDataset(ids, 7, 4, seed=3)
    jumped.set_epoch(2)  # same plan as two on_epoch_end calls
    np.testing.assert_array_equal(_epoch(jumped)[0], epochs_first[2])
    with pytest.raises(ValueError, match="`epoch`"):
        jumped.set_epoch(-1)


def test_dataset_without_shuffle_is_in_order():
    ids = np.arange(50)
    dataset = text.LanguageModelDataset(ids, 6, 2, shuffle=False)
    assert len(dataset) == ((50 - 1) // 6) // 2 == 4
    x, y = text.windows(ids, 6, batch_size=2)
    for _ in range(2):
        xs, ys = _epoch(dataset)
        np.testing.assert_array_equal(xs, x)
        np.testing.assert_array_equal(ys, y)
        dataset.on_epoch_end()
    np.testing.assert_array_equal(dataset[-1][0], x[-2:])
    with pytest.raises(IndexError):
        dataset[4]


def test_dataset_bad_arguments():
    ids = np.arange(100)
    with pytest.raises(ValueError, match=r"batch_size=10.*sequence_length=20"):
        text.LanguageModelDataset(ids, 20, 10)
    with pytest.raises(ValueError, match=r"batch_size=1.*sequence_length=100"):
        text.LanguageModelDataset(ids, 100, 1)
    for bad in (0, -2, 1.5, None):
        with pytest.raises(ValueError, match="`sequence_length`.*Received: sequence_length="):
            text.LanguageModelDataset(ids, bad, 2)
        with pytest.raises(ValueError, match="`batch_size`.*Received: batch_size="):
            text.LanguageModelDataset(ids, 4, bad)
    with pytest.raises(ValueError, match="`shuffle`"):
        text.LanguageModelDataset(ids, 4, 2, shuffle="yes")
    with pytest.raises(ValueError, match="`seed`"):
        text.LanguageModelDataset(ids, 4, 2, seed=-1)
    with pytest.raises(ValueError, match="`ids`"):
        text.LanguageModelDataset(ids.reshape(10, 10), 4, 2)


def test_dataset_trains_with_model_fit(corpora):
    corpus = corpora["irish"][:20_000]
    vocabulary = text.Vocabulary.from_text(corpus)
    train_ids, validation_ids = text.split(vocabulary.encode(corpus))
    length, batch_size = 32, 16
    train = text.LanguageModelDataset(train_ids, length, batch_size, seed=0)
    x_val, y_val = text.windows(validation_ids, length)

    token_ids = keras.Input(shape=(length,), dtype="int32")
    hidden = keras.layers.Embedding(vocabulary.size, 16, name="embedding")(token_ids)
    logits = keras.layers.Dense(vocabulary.size, name="logits")(hidden)
    model = keras.Model(token_ids, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    def numpy_loss(x, y):
        """Mean cross-entropy of the model's current weights, computed in numpy."""
        table = model.get_layer("embedding").get_weights()[0].astype(np.float64)
        kernel, bias = (w.astype(np.float64) for w in model.get_layer("logits").get_weights())
        z = table[x] @ kernel + bias  # (N, L, V)
        z -= z.max(-1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return -np.take_along_axis(log_probs, y[..., None], -1).mean()

    before = model.evaluate(x_val, y_val, batch_size=64, verbose=0)
    np.testing.assert_allclose(before, numpy_loss(x_val, y_val), rtol=1e-5)
    history = model.fit(
        train, epochs=1, validation_data=(x_val, y_val), shuffle=False, verbose=0
    )
    # model.fit called on_epoch_end (Keras 3.15 also calls it once when fit starts).
    assert train.epoch >= 1
    assert np.isfinite(history.history["loss"][0])
    after = history.history["val_loss"][0]
    np.testing.assert_allclose(after, numpy_loss(x_val, y_val), rtol=1e-5)
    assert after < before, (BACKEND, before, after)
