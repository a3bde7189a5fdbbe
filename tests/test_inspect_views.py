"""`keraseq inspect gates | attention | embeddings`: the numbers behind each
picture against numpy re-computations, and bad input (exit code 2, one line).

The run directories are written the way `keraseq train` writes them
(model.keras, vocabulary.json, config.json), from models built directly with
random weights (so every weight, biases included, takes part in the check);
one small `keraseq train` run checks that the commands work on a trained run.
"""

import json
import math
import re
from collections import Counter

import keras
import numpy as np
import pytest

import keraseq
from keraseq.cli import main
from keraseq.inspect import attention as attention_view
from keraseq.inspect import embeddings as embedding_view
from keraseq.inspect import gates as gates_view
from keraseq.layers import TransformerBlock
from keraseq.models import language_model
from keraseq.text import Vocabulary, load_corpus, tokenize

from conftest import BACKEND

ATOL = 1e-5  # float32
PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak."
PNG = b"\x89PNG\r\n\x1a\n"


# -- run directories ------------------------------------------------------------
def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.4, w.shape).astype("float32")
                       for w in model.get_weights()])


def _write_run(directory, model, vocabulary, config):
    directory.mkdir(parents=True)
    model.save(directory / "model.keras")
    vocabulary.save(directory / "vocabulary.json")
    (directory / "config.json").write_text(json.dumps({**config, "backend": BACKEND}))
    return directory


@pytest.fixture(scope="module")
def char_vocabulary():
    return Vocabulary.from_text(load_corpus("shakespeare"), level="char")


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory, char_vocabulary):
    model = language_model("lstm", char_vocabulary.size, units=16, embedding_dim=8,
                           num_layers=2)
    _randomize(model, 1)
    config = {"corpus": "shakespeare", "level": "char", "model": "lstm", "units": 16,
              "layers": 2, "max_tokens": 3000, "sequence_length": 24}
    return _write_run(tmp_path_factory.mktemp("runs") / "lstm", model, char_vocabulary, config)


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory, char_vocabulary):
    model = language_model("transformer", char_vocabulary.size, units=16, num_layers=2,
                           num_heads=4, sequence_length=64)
    _randomize(model, 2)
    config = {"corpus": "shakespeare", "level": "char", "model": "transformer", "units": 16,
              "layers": 2, "max_tokens": 3000, "sequence_length": 64}
    return _write_run(tmp_path_factory.mktemp("runs") / "transformer", model,
                      char_vocabulary, config)


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    vocabulary = Vocabulary.from_text(load_corpus("sherlock"), level="word")
    model = language_model("lstm", vocabulary.size, units=16, embedding_dim=12)
    _randomize(model, 3)
    config = {"corpus": "sherlock", "level": "word", "model": "lstm", "units": 16,
              "layers": 1, "max_tokens": 6000, "sequence_length": 24}
    return _write_run(tmp_path_factory.mktemp("runs") / "word", model, vocabulary, config)


def _load(directory):
    model = keraseq.load_model(directory / "model.keras")
    return model, Vocabulary.load(directory / "vocabulary.json")


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def _fails(argv, capsys, must_mention):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("keraseq: error:")
    for text in must_mention:
        assert text in lines[0], lines[0]


# -- numpy references -------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_lstm(x, kernel, recurrent_kernel, bias):
    """i, f, g, o (each (T, units)) and h (T, units) of an LSTM from zero states."""
    units = recurrent_kernel.shape[0]
    h, c = np.zeros(units), np.zeros(units)
    gates = {"input": [], "forget": [], "candidate": [], "output": []}
    hs = []
    for x_t in x:
        z = x_t @ kernel + h @ recurrent_kernel + bias
        i = _sigmoid(z[:units])
        f = _sigmoid(z[units:2 * units])
        g = np.tanh(z[2 * units:3 * units])
        o = _sigmoid(z[3 * units:])
        c = f * c + i * g
        h = o * np.tanh(c)
        for name, value in zip(("input", "forget", "candidate", "output"), (i, f, g, o)):
            gates[name].append(value)
        hs.append(h)
    return {k: np.array(v) for k, v in gates.items()}, np.array(hs)


def _numpy_lstm_model_gates(model, ids):
    """The gates of every LSTM layer of a language model, in numpy."""
    x = _numpy(model.get_layer("embedding").embeddings)[ids]  # (T, E)
    per_layer = []
    for layer in [l for l in model.layers if isinstance(l, keraseq.LSTM)]:
        cell = layer.cell
        gates, x = _numpy_lstm(x, _numpy(cell.kernel), _numpy(cell.recurrent_kernel),
                               _numpy(cell.bias))
        per_layer.append(gates)
    return per_layer


def _layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def _sine_table(length, dim, max_wavelength=10000.0):
    position = np.arange(length)[:, None]
    j = np.arange(dim)[None, :]
    frequency = max_wavelength ** (-(2 * (j // 2)) / dim)
    angle = position * frequency
    return np.where(j % 2 == 0, np.sin(angle), np.cos(angle))


def _numpy_attention(block, x, causal=True):
    """softmax(Q Kᵀ / sqrt(d_k)) of a TransformerBlock for its input x (T, d), and
    the block's output, in numpy: (weights (N, T, T), output (T, d))."""
    attention = block._self_attention
    norm = block._self_attention_layer_norm
    h = _layer_norm(x, _numpy(norm.gamma), _numpy(norm.beta), norm.epsilon)
    q = np.einsum("td,dnk->tnk", h, _numpy(attention._query_dense.kernel)) + _numpy(
        attention._query_dense.bias)  # (T, N, K)
    k = np.einsum("td,dnk->tnk", h, _numpy(attention._key_dense.kernel)) + _numpy(
        attention._key_dense.bias)
    v = np.einsum("td,dnk->tnk", h, _numpy(attention._value_dense.kernel)) + _numpy(
        attention._value_dense.bias)
    logits = np.einsum("tnk,snk->nts", q, k) / math.sqrt(q.shape[-1])  # (N, T, S)
    length = x.shape[0]
    if causal:
        logits = np.where(np.tril(np.ones((length, length), bool)), logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = np.einsum("nts,snv->tnv", weights, v)
    attended = np.einsum("tnv,nvd->td", context, _numpy(attention._output_dense.kernel)) + \
        _numpy(attention._output_dense.bias)
    x = x + attended
    norm = block._feedforward_layer_norm
    h = _layer_norm(x, _numpy(norm.gamma), _numpy(norm.beta), norm.epsilon)
    inner = block._feedforward_intermediate_dense
    h = h @ _numpy(inner.kernel) + _numpy(inner.bias)
    h = 0.5 * h * (1.0 + np.vectorize(math.erf)(h / math.sqrt(2.0)))  # exact GELU
    outer = block._feedforward_output_dense
    return weights, x + h @ _numpy(outer.kernel) + _numpy(outer.bias)


def _numpy_transformer_attention(model, ids):
    """Attention weights (L, N, T, T) of every block of a language model, in numpy
    (token table + sine positions, then each block written out)."""
    embedding = model.get_layer("embedding")
    table = _numpy(embedding.token_embedding.embeddings)
    x = table[ids] + _sine_table(len(ids), table.shape[1])
    weights = []
    for block in [l for l in model.layers if isinstance(l, TransformerBlock)]:
        w, x = _numpy_attention(block, x)
        weights.append(w)
    return np.stack(weights)


# -- gates ---------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [0, 1])
def test_gates_equal_numpy_lstm(lstm_run, layer):
    model, vocabulary = _load(lstm_run)
    result = gates_view.gate_activations(model, vocabulary, PROMPT, layer=layer)
    ids = vocabulary.encode(PROMPT)
    reference = _numpy_lstm_model_gates(model, ids)[layer]
    assert result["tokens"] == list(PROMPT)
    assert result["layer"] == f"lstm_{layer}"
    for name in ("input", "forget", "candidate", "output"):
        assert result[name].shape == (16, len(PROMPT))  # (units, tokens)
        np.testing.assert_allclose(result[name], reference[name].T, atol=ATOL, err_msg=name)
    for name in ("input", "forget", "output"):
        assert 0.0 <= result[name].min() and result[name].max() <= 1.0
    assert -1.0 <= result["candidate"].min() and result["candidate"].max() <= 1.0


def test_gates_command_writes_png_and_json(lstm_run, tmp_path, capsys):
    out = tmp_path / "gates"
    assert main(["inspect", "gates", str(lstm_run), "--text", PROMPT, "--layer", "1",
                 "--out", str(out)]) == 0
    assert "gates.png" in capsys.readouterr().out
    assert (out / "gates.png").read_bytes()[:8] == PNG
    data = json.loads((out / "gates.json").read_text(encoding="utf-8"))
    model, vocabulary = _load(lstm_run)
    reference = _numpy_lstm_model_gates(model, vocabulary.encode(PROMPT))[1]
    assert data["tokens"] == list(PROMPT) and data["layer"] == "lstm_1"
    assert "lstm" in data["model"] and data["units"] == 16
    for name in ("input", "forget", "candidate", "output"):
        np.testing.assert_allclose(np.array(data["gates"][name]), reference[name].T, atol=ATOL)
    # All 16 units, ordered by their mean forget gate over the text, highest first.
    order = np.argsort(-reference["forget"].mean(axis=0), kind="stable")
    assert data["units_shown"] == order.tolist() and data["tokens_shown"] == len(PROMPT)
    assert not list(out.glob(".*")), "temporary file left behind"


def test_gates_caps_tokens_and_units_shown(tmp_path, char_vocabulary):
    model = language_model("lstm", char_vocabulary.size, units=40, embedding_dim=8)
    _randomize(model, 4)
    text = (PROMPT + " ") * 3  # 180 characters
    result = gates_view.gate_activations(model, char_vocabulary, text)
    shown = gates_view.plot_gates(result, tmp_path / "g.png", "test", max_tokens=80,
                                  max_units=32)
    assert shown["tokens_shown"] == 80
    # The 32 units whose four gates have the largest summed standard deviation
    # over the 80 characters shown, ordered by mean forget gate, highest first.
    spread = sum(np.std(result[name][:, :80], axis=1)
                 for name in ("input", "forget", "candidate", "output"))
    chosen = np.argsort(-spread)[:32]
    keep = result["forget"][chosen, :80].mean(axis=1)
    assert shown["units_shown"] == chosen[np.argsort(-keep)].tolist()


# -- attention -------------------------------------------------------------------------
def test_attention_weights_equal_numpy_softmax(transformer_run):
    model, vocabulary = _load(transformer_run)
    result = attention_view.attention_weights(model, vocabulary, PROMPT)
    weights = result["weights"]
    length = len(PROMPT)
    assert weights.shape == (2, 4, length, length)  # (layers, heads, query, key)
    assert result["layers"] == ["block_0", "block_1"]
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=ATOL)
    above = np.triu(np.ones((length, length), bool), k=1)
    assert np.all(weights[..., above] == 0.0)  # exactly 0 after the query: causal
    reference = _numpy_transformer_attention(model, vocabulary.encode(PROMPT))
    np.testing.assert_allclose(weights, reference, atol=ATOL)


def test_attention_command_writes_png_and_json(transformer_run, tmp_path, capsys):
    out = tmp_path / "attention"
    assert main(["inspect", "attention", str(transformer_run), "--text", PROMPT,
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert (out / "attention.png").read_bytes()[:8] == PNG
    data = json.loads((out / "attention.json").read_text(encoding="utf-8"))
    model, vocabulary = _load(transformer_run)
    reference = _numpy_transformer_attention(model, vocabulary.encode(PROMPT))
    assert data["tokens"] == list(PROMPT) and data["num_heads"] == 4
    np.testing.assert_allclose(np.array(data["weights"]), reference, atol=ATOL)
    assert data["tokens_shown"] == attention_view.MAX_TOKENS_SHOWN


def test_transformer_block_returns_attention_scores(rng):
    block = TransformerBlock(num_heads=2, intermediate_dim=12, name="block")
    x = rng.normal(size=(3, 7, 8)).astype("float32")
    plain = block(x)
    outputs, scores = block(x, return_attention_scores=True)
    assert tuple(scores.shape) == (3, 2, 7, 7)  # (batch_size, num_heads, T, S)
    # Same outputs as the default call (fused path vs explicit path: round-off).
    np.testing.assert_allclose(_numpy(outputs), _numpy(plain), atol=ATOL)
    for b in range(3):
        weights, output = _numpy_attention(block, x[b].astype(np.float64))
        np.testing.assert_allclose(_numpy(scores)[b], weights, atol=ATOL)
        np.testing.assert_allclose(_numpy(outputs)[b], output, atol=ATOL)
    # Padding: a padded query row is all 0; padded keys get 0.
    padding = np.ones((3, 7), bool)
    padding[0, 5:] = False
    _, scores = block(x, padding_mask=padding, return_attention_scores=True)
    scores = _numpy(scores)
    assert np.all(scores[0, :, 5:, :] == 0.0) and np.all(scores[0, :, :, 5:] == 0.0)
    np.testing.assert_allclose(scores[0, :, :5].sum(-1), 1.0, atol=ATOL)
    # Without the causal mask nothing is zeroed.
    free = TransformerBlock(num_heads=2, intermediate_dim=12, use_causal_mask=False)
    _, scores = free(x, return_attention_scores=True)
    free_weights, _ = _numpy_attention(free, x[0].astype(np.float64), causal=False)
    np.testing.assert_allclose(_numpy(scores)[0], free_weights, atol=ATOL)


def test_transformer_block_scores_in_a_functional_model(tmp_path, rng):
    inputs = keras.Input((None, 8))
    block = TransformerBlock(num_heads=2, intermediate_dim=12)
    outputs, scores = block(inputs, return_attention_scores=True)
    assert tuple(scores.shape) == (None, 2, None, None)
    model = keras.Model(inputs, [outputs, scores])
    # The config is unchanged: no new constructor argument.
    assert "return_attention_scores" not in block.get_config()
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    before = [_numpy(t) for t in model(x)]
    model.save(tmp_path / "scores.keras")
    loaded = keraseq.load_model(tmp_path / "scores.keras")
    after = [_numpy(t) for t in loaded(x)]
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, atol=ATOL)
    np.testing.assert_allclose(before[1].sum(-1), 1.0, atol=ATOL)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_transformer_block_scores_mixed_precision(policy, rng):
    keras.config.set_dtype_policy(policy)
    block = TransformerBlock(num_heads=2, intermediate_dim=12)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    outputs, scores = block(x, return_attention_scores=True)
    compute = policy.split("_")[1]
    assert keras.backend.standardize_dtype(scores.dtype) == compute
    assert keras.backend.standardize_dtype(outputs.dtype) == compute
    scores = _numpy(scores)
    assert np.all(np.isfinite(scores))
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=2e-2)  # half precision weights


# -- embeddings -------------------------------------------------------------------------
def _reference_candidates(vocabulary, config, min_count, words_only):
    """Training counts with collections.Counter over the corpus's tokens."""
    tokens = tokenize(load_corpus(config["corpus"]), vocabulary.level)[: config["max_tokens"]]
    train = tokens[: len(tokens) - int(round(len(tokens) * 0.1))]
    known = {token: index + 1 for index, token in enumerate(vocabulary.tokens)}
    counts = Counter(known[t] for t in train if t in known)
    ids = [i for i, n in counts.items() if n >= min_count]
    if words_only:
        ids = [i for i in ids if re.search(r"\w", vocabulary.tokens[i - 1])]
    return sorted(ids, key=lambda i: (-counts[i], i)), counts


def _reference_neighbours(matrix, query, candidates, k=8):
    pool = [c for c in candidates if c != query]
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    similarity = {c: float(unit[query] @ unit[c]) for c in pool}
    ranked = sorted(pool, key=lambda c: (-similarity[c], c))[:k]
    return ranked, [similarity[c] for c in ranked]


def _check_pca(coordinates, explained, vectors):
    """Coordinates equal the projection on the covariance's top-2 eigenvectors
    (numpy eigh), up to the sign of each component."""
    centred = vectors - vectors.mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    top = np.argsort(eigenvalues)[::-1][:2]
    reference = centred @ eigenvectors[:, top]
    for c in range(2):
        sign = np.sign(reference[:, c] @ coordinates[:, c])
        np.testing.assert_allclose(coordinates[:, c], sign * reference[:, c], atol=1e-5)
    np.testing.assert_allclose(explained, eigenvalues[top] / eigenvalues.sum(), atol=1e-6)


def test_embeddings_command_neighbours_and_pca(word_run, tmp_path, capsys):
    out = tmp_path / "embeddings"
    words = ["Holmes", "door", "holmes", "zzzqq"]
    assert main(["inspect", "embeddings", str(word_run), "--words", *words,
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "'zzzqq'" in warning[0] and "'Holmes'?" in warning[0]
    assert (out / "embeddings.png").read_bytes()[:8] == PNG
    data = json.loads((out / "embeddings.json").read_text(encoding="utf-8"))

    model, vocabulary = _load(word_run)
    config = json.loads((word_run / "config.json").read_text())
    matrix = _numpy(model.get_layer("embedding").embeddings)
    candidates, counts = _reference_candidates(vocabulary, config, 5, words_only=True)
    assert data["num_candidates"] == len(candidates)
    assert [entry["word"] for entry in data["neighbours"]] == ["Holmes", "door"]
    for entry in data["neighbours"]:
        query = vocabulary.tokens.index(entry["word"]) + 1
        ids, similarities = _reference_neighbours(matrix, query, candidates)
        assert [n["id"] for n in entry["neighbours"]] == ids
        assert [n["token"] for n in entry["neighbours"]] == [vocabulary.tokens[i - 1]
                                                            for i in ids]
        np.testing.assert_allclose([n["similarity"] for n in entry["neighbours"]],
                                   similarities, atol=1e-6)
        assert entry["training_count"] == counts[query]
        printed = [line for line in captured.out.splitlines()
                   if line.strip().startswith(entry["word"] + " → ")]
        assert printed and entry["neighbours"][0]["token"] in printed[0]

    plotted = candidates[:150]
    assert data["pca"]["ids"] == plotted
    _check_pca(np.array(data["pca"]["coordinates"]),
               np.array(data["pca"]["explained_variance_ratio"]), matrix[plotted])


def test_embeddings_default_words_and_char_level(lstm_run, tmp_path, capsys):
    model, vocabulary = _load(lstm_run)
    config = json.loads((lstm_run / "config.json").read_text())
    result = embedding_view.embedding_view(model, vocabulary, config)
    candidates, _ = _reference_candidates(vocabulary, config, 5, words_only=False)
    assert result["candidates"].tolist() == candidates
    # Default: the 10 most frequent tokens (characters here, space first).
    assert [entry["id"] for entry in result["neighbours"]] == candidates[:10]
    assert result["neighbours"][0]["word"] == " "
    matrix = _numpy(model.get_layer("embedding").embeddings)
    for entry in result["neighbours"]:
        ids, similarities = _reference_neighbours(matrix, entry["id"], candidates)
        assert [n[1] for n in entry["neighbours"]] == ids
        np.testing.assert_allclose([n[2] for n in entry["neighbours"]], similarities,
                                   atol=1e-6)
    _check_pca(result["pca_coordinates"], result["explained_variance_ratio"],
               matrix[candidates[:150]])
    out = tmp_path / "chars"
    assert main(["inspect", "embeddings", str(lstm_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "␣ → " in printed  # the space, made visible
    assert (out / "embeddings.png").read_bytes()[:8] == PNG


def test_embeddings_of_a_transformer(transformer_run):
    model, vocabulary = _load(transformer_run)
    matrix = embedding_view.token_embeddings(model)
    np.testing.assert_allclose(
        matrix, _numpy(model.get_layer("embedding").token_embedding.embeddings), atol=0)
    neighbours = embedding_view.cosine_neighbours(matrix, [5], np.arange(1, vocabulary.size))
    ids, similarities = _reference_neighbours(matrix, 5, list(range(1, vocabulary.size)))
    assert neighbours[0][0].tolist() == ids
    np.testing.assert_allclose(neighbours[0][1], similarities, atol=1e-6)


# -- a trained run ------------------------------------------------------------------------
@pytest.mark.slow
def test_views_on_a_trained_run(tmp_path, capsys):
    run = tmp_path / "trained"
    assert main(["train", "--epochs", "1", "--max-tokens", "3000", "--batch-size", "8",
                 "--sequence-length", "24", "--units", "16", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["inspect", "gates", str(run), "--text", "ROMEO:"]) == 0
    assert main(["inspect", "embeddings", str(run), "--words", "e", "a"]) == 0
    assert "e → " in capsys.readouterr().out
    data = json.loads((run / "inspect" / "gates.json").read_text(encoding="utf-8"))
    model, vocabulary = _load(run)
    reference = _numpy_lstm_model_gates(model, vocabulary.encode("ROMEO:"))[0]
    np.testing.assert_allclose(np.array(data["gates"]["forget"]), reference["forget"].T,
                               atol=ATOL)
    assert (run / "inspect" / "embeddings.png").is_file()


# -- bad input ----------------------------------------------------------------------------
def test_bad_input_is_one_line_exit_2(lstm_run, transformer_run, word_run, tmp_path, capsys):
    out = tmp_path / "never"
    lstm, transformer, word = str(lstm_run), str(transformer_run), str(word_run)
    _fails(["inspect", "gates", transformer, "--text", "ROMEO", "--out", str(out)], capsys,
           [transformer, "transformer", "LSTM"])
    _fails(["inspect", "attention", lstm, "--text", "ROMEO", "--out", str(out)], capsys,
           [lstm, "lstm", "transformer"])
    _fails(["inspect", "gates", lstm, "--text", "éé€", "--out", str(out)], capsys,
           ["--text", "'é'", "'€'", "all of them"])
    _fails(["inspect", "gates", lstm, "--text", "ROMEO€", "--out", str(out)], capsys,
           ["--text", "'€'"])
    _fails(["inspect", "attention", transformer, "--text", "€", "--out", str(out)], capsys,
           ["--text", "'€'"])
    _fails(["inspect", "gates", lstm, "--text", "", "--out", str(out)], capsys,
           ["--text", "empty"])
    _fails(["inspect", "attention", transformer, "--text", "", "--out", str(out)], capsys,
           ["--text", "empty"])
    _fails(["inspect", "gates", lstm, "--text", "ROMEO", "--layer", "2", "--out", str(out)],
           capsys, ["--layer 2", "2 LSTM layers"])
    _fails(["inspect", "gates", lstm, "--text", "ROMEO", "--layer", "-1", "--out", str(out)],
           capsys, ["--layer -1"])
    _fails(["inspect", "embeddings", word, "--words", "zzzqq", "qqzzz", "--out", str(out)],
           capsys, ["--words", "'zzzqq'", "'qqzzz'"])
    _fails(["inspect", "embeddings", word, "--min-count", "0", "--out", str(out)], capsys,
           ["--min-count", "'0'"])
    # Longer than the training window (sequence_length 64 in the fixture's config):
    # the first 64 tokens are used, and a note says so.
    long_out = tmp_path / "long"
    assert main(["inspect", "attention", transformer, "--text", "ROMEO" * 200,
                 "--out", str(long_out)]) == 0
    assert "using the first 64" in capsys.readouterr().err
    assert len(json.loads((long_out / "attention.json").read_text())["tokens"]) == 64
    # An --out that cannot be a directory is refused before any work.
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    for bad_out in (a_file, a_file / "sub"):
        _fails(["inspect", "gates", lstm, "--text", "ROMEO", "--out", str(bad_out)], capsys,
               ["--out", str(a_file)])
    assert a_file.read_text() == "keep me"
    missing = str(tmp_path / "missing")
    for tool, extra in (("gates", ["--text", "a"]), ("attention", ["--text", "a"]),
                        ("embeddings", [])):
        _fails(["inspect", tool, missing, *extra, "--out", str(out)], capsys, [missing])
    assert not out.exists()


def test_python_functions_reject_bad_arguments(lstm_run, transformer_run):
    model, vocabulary = _load(lstm_run)
    with pytest.raises(ValueError, match=r"`layer` must be .* Received: layer=2"):
        gates_view.gate_activations(model, vocabulary, "ROMEO", layer=2)
    with pytest.raises(ValueError, match="`text` is empty"):
        gates_view.gate_activations(model, vocabulary, "")
    with pytest.raises(ValueError, match="no keraseq TransformerBlock"):
        attention_view.attention_weights(model, vocabulary, "ROMEO")
    transformer, _ = _load(transformer_run)
    with pytest.raises(ValueError, match="no keraseq LSTM layer"):
        gates_view.gate_activations(transformer, vocabulary, "ROMEO")
    with pytest.raises(ValueError, match="none of the tokens"):
        embedding_view.embedding_view(model, vocabulary, None, words=["§§"])
