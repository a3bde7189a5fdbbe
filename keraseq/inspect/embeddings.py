"""`keraseq inspect embeddings`: nearest neighbours of learned token embeddings,
and a 2-D PCA map of the most frequent words.

Neighbours: for a token with embedding `e`, the tokens `w` ranked by cosine
similarity `cos(e, e_w) = e · e_w / (‖e‖ ‖e_w‖)`, the token itself and the
out-of-vocabulary token excluded. PCA: the embeddings of the most frequent
tokens, centred on their mean, projected on the first two right singular
vectors of that centred matrix (numpy SVD); the axes say how much of the
variance each component holds.

Frequencies are counted in the training part of the run's corpus (the corpus
named in `config.json`, cut to `max_tokens`, first 90 %), so tokens the model
never saw during training (whose embeddings are still their random
initialisation) are left out, as are tokens seen fewer than `min_count` times.
If the corpus cannot be read, the vocabulary order (`Vocabulary.from_text`
sorts tokens by descending frequency in the whole corpus) is used instead and
every token counts.

Word-level models: the candidates are word tokens (with a letter or digit);
punctuation marks and newlines are left out of the neighbours and the map.
Character-level models work too: every character is a token (whitespace drawn
as ␣, ↵); their neighbourhoods are those of letters, digits and punctuation.
"""

import re
import sys

import numpy as np

from keraseq._keras import import_keras
from keraseq.inspect._plot import pyplot, save_figure, save_json
from keraseq.inspect.gates import describe_run, load_run, output_directory, token_label

NUM_NEIGHBOURS = 8
NUM_PLOTTED = 150
NUM_DEFAULT_WORDS = 10
MIN_COUNT = 5

_WORDLIKE = re.compile(r"\w")


def token_embeddings(model):
    """The learned token-embedding matrix of a language model.

    Args:
        model: a model from `keraseq.models.language_model` (its first layer
            with token embeddings: a `keras.layers.Embedding`, or the token
            table of a `keraseq.layers.TokenAndPositionEmbedding`).

    Returns:
        A float32 numpy array `(vocabulary_size, embedding_dim)`; row `i` is
        the embedding of token id `i`.

    Raises:
        ValueError: the model has no token embedding.
    """
    keras = import_keras()
    from keraseq.layers import TokenAndPositionEmbedding

    for layer in model.layers:
        if isinstance(layer, TokenAndPositionEmbedding):
            table = layer.token_embedding.embeddings
        elif isinstance(layer, keras.layers.Embedding):
            table = layer.embeddings
        else:
            continue
        return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(table, "float32")))
    raise ValueError("`model` has no token embedding layer (keras.layers.Embedding or "
                     "keraseq.layers.TokenAndPositionEmbedding)")


def cosine_neighbours(matrix, query_ids, candidate_ids, k=NUM_NEIGHBOURS):
    """The `k` candidates most similar to each query by cosine similarity.

    Args:
        matrix: float array `(vocabulary_size, embedding_dim)`.
        query_ids: sequence of token ids.
        candidate_ids: sequence of token ids to rank (a query is never its
            own neighbour).
        k: int, default 8.

    Returns:
        A list, per query, of `(ids, similarities)`: int array `(k,)` and
        float array `(k,)`, most similar first (ties: the lower id first).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    candidates = np.asarray(candidate_ids, dtype=np.int64)
    norms = np.linalg.norm(matrix, axis=1)
    norms[norms == 0] = 1.0
    unit = matrix / norms[:, None]  # (V, E)
    results = []
    for query in query_ids:
        pool = candidates[candidates != query]
        similarity = unit[pool] @ unit[query]  # (len(pool),)
        order = np.lexsort((pool, -similarity))[:k]
        results.append((pool[order], similarity[order]))
    return results


def pca_2d(vectors):
    """Project `vectors` on their first two principal components.

    Args:
        vectors: float array `(n, embedding_dim)`, n ≥ 2.

    Returns:
        `(coordinates, explained)`: float array `(n, 2)` (the centred vectors
        times the first two right singular vectors; the sign of each
        component is fixed so that its largest-magnitude coordinate is
        positive) and the fraction of the total variance each holds, `(2,)`.
    """
    x = np.asarray(vectors, dtype=np.float64)
    centred = x - x.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]  # (2, E)
    coordinates = centred @ components.T  # (n, 2)
    for c in range(coordinates.shape[1]):
        if coordinates[np.argmax(np.abs(coordinates[:, c])), c] < 0:
            coordinates[:, c] *= -1.0
    variance = singular ** 2
    explained = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
    return coordinates, explained


def token_frequencies(vocabulary, config):
    """Counts of every token id in the run's training text.

    Returns:
        `(counts, source)`: int array `(vocabulary_size,)` and a string saying
        where they come from. Without a readable corpus: `None` and a note
        (use the vocabulary order).
    """
    from keraseq.text import load_corpus, split

    corpus = (config or {}).get("corpus")
    if not corpus:
        return None, "vocabulary order (config.json names no corpus)"
    try:
        text = load_corpus(corpus)
    except ValueError:
        return None, f"vocabulary order (corpus {corpus!r} not readable)"
    ids = vocabulary.encode(text)
    max_tokens = config.get("max_tokens")
    if max_tokens:
        ids = ids[: int(max_tokens)]
    try:
        train_ids, _ = split(ids, validation_fraction=0.1)
    except ValueError:
        train_ids = ids
    counts = np.bincount(train_ids, minlength=vocabulary.size)[: vocabulary.size]
    label = corpus if "/" not in str(corpus) else str(corpus).rsplit("/", 1)[-1]
    return counts, f"training part of corpus {label!r} ({len(train_ids):,} tokens)"


def _ranked_candidates(vocabulary, counts, min_count):
    """Token ids eligible as neighbours and for the map, most frequent first."""
    tokens = vocabulary.tokens
    ids = np.arange(1, vocabulary.size)  # id 0 is [UNK]
    if vocabulary.level == "word":
        ids = np.array([i for i in ids if _WORDLIKE.search(tokens[i - 1])], dtype=np.int64)
    if counts is None:
        return ids  # the vocabulary order is the frequency order
    ids = ids[counts[ids] >= min_count]
    return ids[np.lexsort((ids, -counts[ids]))]


def resolve_words(vocabulary, words):
    """Split `words` into known token ids and unknown words (with a hint
    when another capitalisation is in the vocabulary)."""
    table = {token: index + 1 for index, token in enumerate(vocabulary.tokens)}
    folded = {}
    for token in vocabulary.tokens:
        folded.setdefault(token.lower(), token)
    known, unknown = [], []
    for word in words:
        if word in table:
            known.append(table[word])
        else:
            hint = folded.get(word.lower())
            unknown.append(f"{word!r} (did you mean {hint!r}?)" if hint else repr(word))
    return known, unknown


def embedding_view(model, vocabulary, config=None, words=None, k=NUM_NEIGHBOURS,
                   num_plotted=NUM_PLOTTED, min_count=MIN_COUNT):
    """Nearest neighbours of `words` and a 2-D PCA of the most frequent tokens.

    Args:
        model: a language model (see `token_embeddings`).
        vocabulary: its `keraseq.text.Vocabulary`.
        config: dict of the run's `config.json` (for the corpus counts), or
            None (vocabulary order).
        words: list of str or None (default: the `NUM_DEFAULT_WORDS` most
            frequent candidates). Unknown ones are reported in `"unknown"`.
        k: int, default 8, neighbours per word.
        num_plotted: int, default 150, tokens in the PCA map.
        min_count: int, default 5, least training count of a candidate.

    Returns:
        dict with `"matrix"` (the embedding matrix), `"candidates"` (ids,
        most frequent first), `"frequency_source"`, `"neighbours"` (list of
        `{"word", "id", "neighbours": [(token, id, similarity)]}`),
        `"unknown"` (list of str), `"pca_ids"`, `"pca_tokens"`,
        `"pca_coordinates"` `(n, 2)` and `"explained_variance_ratio"` `(2,)`.

    Raises:
        ValueError: every word of `words` is unknown, or too few candidates.
    """
    matrix = token_embeddings(model)
    if matrix.shape[0] != vocabulary.size:
        raise ValueError(
            f"the model's embedding has {matrix.shape[0]} rows but the vocabulary "
            f"{vocabulary.size} ids: not the vocabulary of this model"
        )
    counts, source = token_frequencies(vocabulary, config)
    candidates = _ranked_candidates(vocabulary, counts, min_count)
    if len(candidates) < 3:
        raise ValueError(
            f"only {len(candidates)} tokens were seen at least {min_count} times in training: "
            "too few for neighbours and a map (lower --min-count)"
        )
    tokens = ["[UNK]", *vocabulary.tokens]
    unknown = []
    if words:
        query_ids, unknown = resolve_words(vocabulary, words)
        if not query_ids:
            kind = "words" if vocabulary.level == "word" else "tokens"
            note = ""
            if vocabulary.level == "char" and any(len(w) != 1 for w in words):
                note = " (a character-level model: give single characters)"
            raise ValueError(f"--words: none of the {kind} is in the vocabulary{note}: "
                             f"{', '.join(unknown)}")
    else:
        query_ids = [int(i) for i in candidates[:NUM_DEFAULT_WORDS]]
    neighbours = []
    for query, (ids, similarities) in zip(
        query_ids, cosine_neighbours(matrix, query_ids, candidates, k)
    ):
        neighbours.append({
            "word": tokens[query],
            "id": int(query),
            "training_count": None if counts is None else int(counts[query]),
            "neighbours": [(tokens[i], int(i), float(s)) for i, s in zip(ids, similarities)],
        })
    plotted = candidates[:num_plotted]
    coordinates, explained = pca_2d(matrix[plotted])
    return {
        "matrix": matrix,
        "candidates": candidates,
        "counts": counts,
        "frequency_source": source,
        "neighbours": neighbours,
        "unknown": unknown,
        "pca_ids": plotted,
        "pca_tokens": [tokens[i] for i in plotted],
        "pca_coordinates": coordinates,
        "explained_variance_ratio": explained,
    }


def plot_embeddings(result, path, description="", level="word"):
    """Draw the PCA map of `result` (from `embedding_view`) into `path`."""
    plt = pyplot()
    from matplotlib import patheffects

    coordinates = result["pca_coordinates"]
    labels = [token_label(t) for t in result["pca_tokens"]]
    n = len(labels)
    figure, axis = plt.subplots(figsize=(11, 9), constrained_layout=True)
    rank = np.arange(n)
    points = axis.scatter(coordinates[:, 0], coordinates[:, 1], c=rank, cmap="viridis_r",
                          s=14, alpha=0.8)
    outline = [patheffects.withStroke(linewidth=2.0, foreground="white")]
    font = 10.5 if n <= 80 else 7.5
    for (x, y), label in zip(coordinates, labels):
        axis.annotate(label, (x, y), xytext=(3, 2), textcoords="offset points", fontsize=font,
                      path_effects=outline)
    queries = {entry["id"] for entry in result["neighbours"]}
    for (x, y), token_id in zip(coordinates, result["pca_ids"]):
        if int(token_id) in queries:
            axis.scatter([x], [y], s=60, facecolors="none", edgecolors="crimson", linewidths=1.2)
    bar = figure.colorbar(points, ax=axis, shrink=0.6, pad=0.01)
    bar.set_label("frequency rank (0 = most frequent)", fontsize=8)
    explained = result["explained_variance_ratio"]
    axis.set_xlabel(f"principal component 1 ({100 * explained[0]:.1f} % of the variance)")
    axis.set_ylabel(f"principal component 2 ({100 * explained[1]:.1f} % of the variance)")
    axis.axhline(0, color="0.85", linewidth=0.6, zorder=0)
    axis.axvline(0, color="0.85", linewidth=0.6, zorder=0)
    unit = "words" if level == "word" else "characters"
    circled = f" (circled: the {unit} whose neighbours are printed)" if queries & set(
        int(i) for i in result["pca_ids"]) else ""
    axis.set_title(f"Token embeddings — {description}\n2-D PCA of the {n} most frequent "
                   f"{unit}; nearby points have similar embeddings{circled}", fontsize=10)
    save_figure(figure, path)


def format_neighbours(result):
    """The neighbours as printed lines, `word → neighbour 0.71 | other 0.65 | ...`."""
    lines = []
    for entry in result["neighbours"]:
        pairs = " | ".join(f"{token_label(token)} {similarity:.2f}"
                           for token, _, similarity in entry["neighbours"])
        lines.append(f"{token_label(entry['word'])} → {pairs}")
    return lines


def run(args):
    """`keraseq inspect embeddings DIR [--words ...] [--min-count N] [--out DIR]`."""
    model, vocabulary, config = load_run(args.dir, unsafe=args.unsafe)
    min_count = getattr(args, "min_count", None) or MIN_COUNT
    result = embedding_view(model, vocabulary, config, words=args.words, min_count=min_count)
    if result["unknown"]:
        print(f"keraseq: warning: --words not in the vocabulary, skipped: "
              f"{', '.join(result['unknown'])}", file=sys.stderr)
    out = output_directory(args)
    description = describe_run(config, model)
    plot_embeddings(result, out / "embeddings.png", description, level=vocabulary.level)
    explained = result["explained_variance_ratio"]
    save_json(
        {
            "model": description,
            "dir": str(args.dir),
            "level": vocabulary.level,
            "embedding_dim": int(result["matrix"].shape[1]),
            "frequency_source": result["frequency_source"],
            "min_count": min_count,
            "num_candidates": int(len(result["candidates"])),
            "similarity": "cosine",
            "neighbours": [
                {
                    "word": entry["word"],
                    "id": entry["id"],
                    "training_count": entry["training_count"],
                    "neighbours": [{"token": token, "id": token_id, "similarity": similarity}
                                   for token, token_id, similarity in entry["neighbours"]],
                }
                for entry in result["neighbours"]
            ],
            "unknown_words": result["unknown"],
            "pca": {
                "tokens": result["pca_tokens"],
                "ids": [int(i) for i in result["pca_ids"]],
                "coordinates": result["pca_coordinates"].tolist(),
                "explained_variance_ratio": [float(v) for v in explained],
            },
        },
        out / "embeddings.json",
    )
    seen = f" seen ≥ {min_count} times" if result["counts"] is not None else ""
    print(f"nearest neighbours by cosine similarity ({result['frequency_source']}; "
          f"{len(result['candidates'])} candidate tokens{seen}):")
    for line in format_neighbours(result):
        print("  " + line)
    print(f"wrote {out / 'embeddings.png'} and {out / 'embeddings.json'}")
    return 0
