"""Fuzzing the text inputs of `keraseq train` and `keraseq generate` (issue 7 item 4).

Arbitrary Unicode (every category, lone surrogates included), control
characters, NUL, line and paragraph separators, byte strings that are not UTF-8,
and long texts made by repetition go into:

(a) what `keraseq train` does with a corpus: `load_corpus` (from a file),
    `Vocabulary.from_text` / `encode` / `decode` / `save` / `load`, `split`
    and `LanguageModelDataset`, and the command line's corpus-size check;
(b) what `keraseq generate` does with a prompt: argument parsing, the command
    line's prompt check and `keraseq.sampling.prompt_ids`;

and, a handful of times, through the whole commands in this process
(`keraseq.cli.main`) with tiny settings.

The property everywhere: either a valid result (the text read back as the
bytes decode, `decode(encode(x)) == x` for characters and the same word tokens
for words, ids of the vocabulary, batches of the right shape) or one
`ValueError` whose message is one line, and exactly when the input is bad
(checked against an independent condition) — never another exception, never
a traceback. Hypothesis runs derandomized (`derandomize=True`, no example
database), so CI sees the same examples every run.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from keraseq import cli
from keraseq._tokens import TokenVocabulary, tokenize
from keraseq.sampling import prompt_ids
from keraseq.text import LanguageModelDataset, Vocabulary, load_corpus, split

SPECIAL = ["\x00", "\n", "\r", "\t", "\x0b", "\x0c", "\x1b", "\x1c", "\x7f", "\x85",
           "\u00a0", "\u200b", "\u2028", "\u2029", "\ufeff", "\ufffd", "\U0010ffff",
           "\ud800", "\udcff", "\u0301", "'", "\u2019", "-", '"', " "]
PIECES = ["\r\n", "e\u0301", "[UNK]", "don't", "\U0001F600\u200d\U0001F600"]
FRAGMENTS = st.one_of(
    st.characters(exclude_categories=[]),  # every category, lone surrogates (Cs) included
    st.sampled_from(SPECIAL + PIECES),
    st.sampled_from(list("ab c\n")),  # repeated tokens, word boundaries
)


def texts(min_size=0, max_size=60):
    """Text of `FRAGMENTS` (single characters and a few multi-character pieces)."""
    return st.lists(FRAGMENTS, min_size=min_size, max_size=max_size).map("".join)


TEXT = st.one_of(
    texts(),
    # long texts: a short piece repeated up to 20,000 times (up to ~1 MB)
    st.builds(lambda piece, times: piece * times, texts(1, 50), st.integers(1, 20_000)),
)
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
FEW = settings(FUZZ, max_examples=3)
TINY = ["--epochs", "1", "--batch-size", "4", "--sequence-length", "4", "--units", "4",
        "--max-tokens", "200"]  # 11 training steps


def _one_line(error):
    message = str(error)
    assert len(message.splitlines()) == 1, repr(message)  # no line break of any kind
    return message


def _has_surrogate(text):
    return any(0xD800 <= ord(character) <= 0xDFFF for character in text)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A function giving a new empty directory (under pytest's tmp_path) per example."""
    root = tmp_path_factory.mktemp("fuzz")
    return lambda: Path(tempfile.mkdtemp(dir=root))


# -- (a) the corpus ----------------------------------------------------------------
@FUZZ
@given(st.one_of(st.binary(max_size=300),
                 TEXT.map(lambda text: text.encode("utf-8", "surrogatepass"))))
@example(b"\xef\xbb\xbfBOM first\n")
@example("caf\u00e9".encode("latin-1"))
@example(b"\x89PNG\r\n\x1a\n\x00\x00")
@example(b" \t\r\n\x0b\x0c")
def test_load_corpus(scratch, data):
    path = scratch() / "corpus.txt"
    path.write_bytes(data)
    try:
        expected = data.decode("utf-8")
    except UnicodeDecodeError:
        expected = None
    valid = expected is not None and "\x00" not in expected and expected.strip() != ""
    try:
        text = load_corpus(str(path))
    except ValueError as error:
        assert not valid, (data[:60], error)
        message = _one_line(error)
        assert message.startswith("`corpus` ") and message.endswith(f"corpus={str(path)!r}")
    else:
        assert valid and text == expected  # exactly the file's text, no newline translation
    finally:
        path.unlink()


@FUZZ
@given(TEXT, st.sampled_from(["char", "word"]))
@example("a\x00b\x00", "char")  # a NUL token decodes as itself
@example("x\ud800y", "char")
@example("don't \u2019tis - \"quoted\" (x) \u00bfqu\u00e9?\n\nnext", "word")
@example(" \t\x0b\u2028", "word")  # whitespace only: no word tokens
def test_vocabulary(scratch, text, level):
    tokens = tokenize(text, level)
    try:
        vocabulary = Vocabulary.from_text(text, level=level)
    except ValueError as error:
        assert not tokens or _has_surrogate(text), (text[:60], error)
        assert _one_line(error).startswith("`text` ")
        return
    assert tokens and not _has_surrogate(text)
    ids = vocabulary.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(tokens),)
    # The Keras StringLookup ids equal the plain dictionary's, every token known.
    np.testing.assert_array_equal(ids, TokenVocabulary(vocabulary.tokens, level).encode(text))
    assert ids.min() >= 1 and ids.max() < vocabulary.size
    decoded = vocabulary.decode(ids)
    if level == "char":
        assert decoded == text
    else:
        assert tokenize(decoded, "word") == tokens
    # The vocabulary file keeps every token (NUL, separators, BOM...).
    directory = scratch()
    vocabulary.save(directory / "vocabulary.json")
    assert Vocabulary.load(directory / "vocabulary.json") == vocabulary
    (directory / "vocabulary.json").unlink()


@FUZZ
@given(TEXT, st.integers(1, 40), st.integers(1, 6))
@example("abcdefgh" * 12, 4, 2)
def test_dataset_and_size_check(text, sequence_length, batch_size):
    """`split` + `LanguageModelDataset` as `keraseq train` calls them build
    exactly when the command line's size check lets the corpus through."""
    try:
        ids = Vocabulary.from_text(text, level="char").encode(text)
    except ValueError:
        return  # covered by test_vocabulary
    needed = cli._tokens_needed(sequence_length, batch_size)
    try:
        train_ids, validation_ids = split(ids, validation_fraction=0.1)
        train = LanguageModelDataset(train_ids, sequence_length, batch_size, shuffle=True)
        validation = LanguageModelDataset(validation_ids, sequence_length, batch_size,
                                          shuffle=False)
    except ValueError as error:
        assert len(ids) < needed, (len(ids), needed, error)
        _one_line(error)
        return
    assert len(ids) >= needed
    for data in (train, validation):
        x, y = data[len(data) - 1]
        assert x.shape == y.shape == (batch_size, sequence_length)
        assert x.dtype == y.dtype == np.int32
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token


# -- (b) the prompt ----------------------------------------------------------------
PROMPT_CORPUS = "To be, or not to be:\tthat is the question.\n\u00c9t\u00e9 \u2028 na\u00efve ok\n"
PROMPT_VOCABULARIES = {level: Vocabulary.from_text(PROMPT_CORPUS, level=level)
                       for level in ("char", "word")}
KNOWN = st.text(st.sampled_from(sorted(set(PROMPT_CORPUS))), min_size=1, max_size=40)
PROMPTS = st.one_of(KNOWN, TEXT, st.builds(str.__add__, KNOWN, TEXT))


@FUZZ
@given(PROMPTS, st.sampled_from(["char", "word"]))
@example("", "char")
@example("-x", "char")  # looks like an option to argparse
@example(" \t ", "word")
@example("\u4e2d" * 50_000, "char")
def test_prompt(prompt, level):
    vocabulary = PROMPT_VOCABULARIES[level]
    tokens = tokenize(prompt, level)
    unknown = [token for token in tokens if token not in set(vocabulary.tokens)]
    try:
        args = cli.build_parser().parse_args(["generate", "DIR", "--prompt", prompt])
        assert args.prompt == prompt
        cli._check_prompt(args.prompt, vocabulary)
        ids = prompt_ids(vocabulary, args.prompt)
    except ValueError as error:  # cli.UsageError is one
        message = _one_line(error)
        assert not tokens or unknown or prompt.startswith("-"), (prompt[:60], message)
        if message.startswith("--prompt has"):
            # the first 20 unknown tokens are named, the rest counted
            assert len(message) < 2000
        return
    assert tokens and not unknown
    assert len(ids) == len(tokens) and min(ids) >= 1 and max(ids) < vocabulary.size
    decoded = vocabulary.decode(ids)
    assert decoded == prompt if level == "char" else tokenize(decoded, "word") == tokens


# -- the whole commands ------------------------------------------------------------
def _run_main(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if code != 0:
        assert code == 2, err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("keraseq: error: "), err
    return code, out


@FEW
@given(piece=texts(1, 40), times=st.integers(1, 300), level=st.sampled_from(["char", "word"]))
@example(piece="Z\u00fcrich\x0b\u2028 \u2603 \x85tab\t[UNK] don't\n", times=8, level="char")
@example(piece="tiny", times=1, level="word")
def test_train_on_fuzzed_corpus(scratch, piece, times, level, capsys, monkeypatch):
    monkeypatch.setattr(cli, "SAMPLE_LENGTH", 20)
    directory = scratch()
    corpus = directory / "corpus.txt"
    corpus.write_bytes((piece * times).encode("utf-8", "surrogatepass"))
    out = directory / "run"
    code, _ = _run_main(["train", "--corpus", str(corpus), "--level", level, *TINY,
                         "--out", str(out)], capsys)
    if code == 0:
        text = load_corpus(str(corpus))
        assert Vocabulary.load(out / "vocabulary.json") == Vocabulary.from_text(text, level)
        assert (out / "config.json").is_file() and (out / "model.keras").is_file()
    else:
        assert sorted(os.listdir(directory)) == ["corpus.txt"]  # nothing written


GENERATE_CORPUS = ("First Citizen:\tBefore we proceed any further, hear me speak.\n"
                   "All:\u2028Speak, speak. \u00c9t\u00e9 na\u00efve caf\u00e9 \u2603\n") * 40


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz-run")
    corpus = directory / "corpus.txt"
    corpus.write_text(GENERATE_CORPUS, encoding="utf-8")
    out = directory / "run"
    sample_length, cli.SAMPLE_LENGTH = cli.SAMPLE_LENGTH, 20
    try:
        assert cli.main(["train", "--corpus", str(corpus), "--epochs", "1", "--batch-size", "4",
                         "--sequence-length", "16", "--units", "8", "--max-tokens", "1000",
                         "--out", str(out)]) == 0
    finally:
        cli.SAMPLE_LENGTH = sample_length
    return out


@settings(FUZZ, max_examples=3)
@given(prompt=st.one_of(st.text(st.sampled_from(sorted(set(GENERATE_CORPUS))), min_size=1,
                                max_size=30), texts(0, 30)))
@example(prompt="All:\u2028Speak \u2603\t")
@example(prompt="\x00\ud800")
def test_generate_fuzzed_prompt(fuzz_run, prompt, capsys):
    code, out = _run_main(["generate", str(fuzz_run), "--prompt", prompt, "--length", "3",
                           "--temperature", "0"], capsys)
    known = set(GENERATE_CORPUS)
    assert (code == 0) == (prompt != "" and set(prompt) <= known), (prompt, code)
    if code == 0:  # the prompt verbatim, then 3 sampled characters and print's newline
        assert out.startswith(prompt) and len(out) == len(prompt) + 3 + 1
        assert set(out[len(prompt):-1]) <= known
