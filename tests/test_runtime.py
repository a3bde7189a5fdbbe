"""Generation with onnxruntime alone (`keraseq.export.runtime`, `keraseq generate --onnx`),
the numpy sampling rule it shares with Keras generation, and the lazy `import keraseq`.

References: Keras generation (`keraseq.generation.generate`) on the same weights
under the current backend, closed-form softmax sampling in numpy, and
`keraseq.text.Vocabulary` (Keras `StringLookup`) for the Keras-free vocabulary.
The streaming graphs come from `keraseq.export.native.export_streaming`.
"""

import hashlib
import inspect
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keraseq
from keraseq import sampling, text
from keraseq.export import runtime
from keraseq.cli import main
from keraseq.generation import generate
from keraseq.models import language_model
from keraseq.export.runtime import OnnxGenerator, TokenVocabulary

CORPUS = "hello world, the quick brown fox jumps over the lazy dog.\n"
CONTEXT = 16  # the runs' sequence_length: Keras generation's window
BLOCKED = ("keras", "tensorflow", "jax", "jaxlib", "torch")

# Runs `keraseq.cli.main(argv)` with keras, tensorflow, jax and torch unimportable,
# then checks that none of them was loaded.
NO_BACKEND_SCRIPT = f"""
import sys

BLOCKED = {BLOCKED!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"import of {{name}} blocked by the test")
        return None


sys.meta_path.insert(0, Blocker())
from keraseq.cli import main

code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
if loaded:
    sys.exit(f"imported: {{loaded}}")
sys.exit(code)
"""


MODEL_HASH = "keraseq_model_sha256"


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _set_metadata(path, **properties):
    """Set (or, for None, remove) ONNX metadata properties of the graph file `path`."""
    import onnx

    proto = onnx.load(path)
    kept = {p.key: p.value for p in proto.metadata_props}
    for key, value in properties.items():
        if value is None:
            kept.pop(key, None)
        else:
            kept[key] = value
    onnx.helper.set_metadata_props(proto, kept)
    onnx.save(proto, path)


def _metadata(path):
    import onnx

    return {p.key: p.value for p in onnx.load(path).metadata_props}


def _export_streaming(model, directory, architecture):
    """The streaming graphs, with the hash of model.keras as `keraseq export` records it."""
    try:
        from keraseq.export.native import NativeUnsupported, export_streaming
    except ImportError as error:  # the streaming exporter is not in this checkout
        pytest.skip(f"keraseq.export.native.export_streaming is missing ({error})")
    metadata = {MODEL_HASH: _sha256(directory / "model.keras")}
    takes_metadata = "metadata" in inspect.signature(export_streaming).parameters
    try:
        if takes_metadata:
            files = export_streaming(model, directory, metadata=metadata)
        else:
            files = export_streaming(model, directory)
    except NativeUnsupported as error:
        if architecture == "transformer":
            pytest.skip(f"export_streaming cannot write transformer graphs yet: {error}")
        raise
    for path in files.values():
        if not takes_metadata:  # an exporter without `metadata=`: stamp the hash here
            _set_metadata(path, **metadata)
        assert _metadata(path)[MODEL_HASH] == metadata[MODEL_HASH]


def _make_run(directory, architecture, seed):
    """A run directory as `keraseq train` + `keraseq export --streaming` leave it,
    with random weights (std 0.7: the logits are well apart, greedy text varies)."""
    directory.mkdir()
    vocabulary = text.Vocabulary.from_text(CORPUS)
    keras.utils.set_random_seed(seed)
    model = language_model(
        architecture, vocabulary.size, units=16, embedding_dim=8, num_layers=2,
        num_heads=2, sequence_length=CONTEXT,
    )
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(0.0, 0.7, w.shape).astype("float32") for w in model.get_weights()]
    )
    model.save(directory / "model.keras")
    vocabulary.save(directory / "vocabulary.json")
    config = {"model": architecture, "sequence_length": CONTEXT, "level": "char",
              "backend": keras.backend.backend(), "corpus": "test", "max_tokens": None}
    (directory / "config.json").write_text(json.dumps(config))
    _export_streaming(model, directory, architecture)
    return model, vocabulary


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    made, skipped = {}, {}

    def get(architecture):
        if architecture in skipped:
            pytest.skip(skipped[architecture])
        if architecture not in made:
            try:
                made[architecture] = (root / architecture,
                                      *_make_run(root / architecture, architecture, seed=16))
            except pytest.skip.Exception as skip:
                skipped[architecture] = str(skip)
                raise
        return made[architecture]

    return get


# ---------------------------------------------------------------- sampling rule


def test_sample_token_is_the_float64_softmax_draw(rng):
    logits = rng.normal(size=7).astype("float32")
    for temperature, top_k in ((1.0, None), (0.5, None), (2.0, 3)):
        scaled = logits.astype(np.float64) / temperature
        if top_k:
            scaled[np.argsort(scaled)[:-top_k]] = -np.inf
        p = np.exp(scaled - scaled.max())
        p /= p.sum()
        expected = [int(np.random.default_rng(s).choice(7, p=p)) for s in range(20)]
        drawn = [sampling.sample_token(logits, temperature, top_k, np.random.default_rng(s))
                 for s in range(20)]
        assert drawn == expected
        if top_k:
            assert set(drawn) <= set(np.argsort(logits)[-top_k:].tolist())


def test_temperature_zero_is_greedy_and_leaves_the_rng_alone(rng):
    logits = rng.normal(size=9)
    generator = np.random.default_rng(5)
    before = generator.bit_generator.state
    assert sampling.sample_token(logits, 0.0, None, generator) == int(np.argmax(logits))
    assert sampling.sample_token(logits, 0, 2, generator) == int(np.argmax(logits))
    assert generator.bit_generator.state == before
    # next_token never emits id 0 (out of vocabulary), even when it is the argmax.
    row = np.array([9.0, 1.0, 3.0, 2.0], np.float32)
    assert sampling.next_token(row, 0.0, None, generator) == 2
    assert row[0] == 9.0  # the caller's logits are not modified
    draws = {sampling.next_token(row, 5.0, None, np.random.default_rng(s)) for s in range(200)}
    assert 0 not in draws and draws == {1, 2, 3}


@pytest.mark.parametrize(
    "kwargs, match",
    [({"length": -1}, "`length`"), ({"length": True}, "`length`"),
     ({"temperature": -0.5}, "`temperature`"), ({"temperature": float("inf")}, "`temperature`"),
     ({"temperature": float("nan")}, "`temperature`"), ({"temperature": "1"}, "`temperature`"),
     ({"top_k": 0}, "`top_k`")],
)
def test_bad_sampling_arguments(kwargs, match):
    arguments = {"length": 3, "temperature": 1.0, "top_k": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        sampling.check_sampling(**arguments)


def test_generation_reexports_the_one_sample_token():
    from keraseq import generation

    assert generation.sample_token is sampling.sample_token


# ---------------------------------------------------------------- vocabulary without Keras


@pytest.mark.parametrize("level", ["char", "word"])
def test_token_vocabulary_encodes_like_string_lookup(level, tmp_path):
    corpus = text.load_corpus("sherlock")[:20000]
    keras_vocabulary = text.Vocabulary.from_text(corpus, level=level, max_tokens=300)
    keras_vocabulary.save(tmp_path / "vocabulary.json")
    plain = TokenVocabulary.load(tmp_path / "vocabulary.json")
    assert plain == keras_vocabulary and plain.size == keras_vocabulary.size
    probe = corpus[5000:9000] + " Zanzibar~"  # unknown tokens map to id 0 in both
    ids = plain.encode(probe)
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, keras_vocabulary.encode(probe))
    assert (ids == 0).any()
    assert plain.decode(ids) == keras_vocabulary.decode(ids)
    assert plain.unknown(probe) == keras_vocabulary.unknown(probe)
    assert isinstance(keras_vocabulary, TokenVocabulary)  # one implementation of the rest


def test_token_vocabulary_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"level": "char", "tokens": ["ab"]}))
    for vocabulary_class in (TokenVocabulary, text.Vocabulary):
        with pytest.raises(ValueError, match=r"`path` holds an invalid vocabulary.*single"):
            vocabulary_class.load(bad)
        with pytest.raises(ValueError, match="not an existing vocabulary file"):
            vocabulary_class.load(tmp_path / "absent.json")


# ---------------------------------------------------------------- ONNX = Keras generation


def _keras_ids(model, vocabulary, prompt, length, **kwargs):
    return vocabulary.encode(generate(model, vocabulary, prompt, length=length, **kwargs)).tolist()


@pytest.mark.parametrize("architecture", ["lstm", "rnn", "transformer"])
def test_greedy_ids_equal_keras_greedy_ids(runs, architecture):
    directory, model, vocabulary = runs(architecture)
    generator = OnnxGenerator(directory, threads=1)
    prompt = "hello "
    prompt_ids = vocabulary.encode(prompt).tolist()
    # The recurrent graph streams; Keras re-reads a window of CONTEXT tokens, so
    # the two agree while the window starts at the first token (6 + 11 <= 16 + 1).
    # The transformer re-prefills when its cache is full: it agrees at any length.
    length = CONTEXT + 1 - len(prompt_ids) if architecture != "transformer" else 3 * CONTEXT
    onnx_ids = generator.generate_ids(prompt_ids, length, temperature=0)
    keras_ids = _keras_ids(model, vocabulary, prompt, length, temperature=0,
                           context_length=CONTEXT)
    assert onnx_ids == keras_ids
    assert len(onnx_ids) == len(prompt_ids) + length
    assert len(set(onnx_ids[len(prompt_ids):])) > 1  # not a degenerate constant run
    # The same rule with sampling: the same seed draws the same tokens.
    sampled = generator.generate(prompt, length, temperature=0.8, top_k=5, seed=3)
    assert sampled == generate(model, vocabulary, prompt, length=length, temperature=0.8,
                               top_k=5, seed=3, context_length=CONTEXT)


@pytest.mark.parametrize("architecture", ["lstm", "rnn"])
def test_recurrent_streaming_carries_the_state_past_the_window(runs, architecture):
    """Streaming equals Keras generation whose window holds the whole text."""
    directory, model, vocabulary = runs(architecture)
    generator = OnnxGenerator(directory)
    prompt_ids = vocabulary.encode("the ").tolist()
    length = 2 * CONTEXT
    assert generator.generate_ids(prompt_ids, length, temperature=0) == _keras_ids(
        model, vocabulary, "the ", length, temperature=0, context_length=len(prompt_ids) + length)


def test_step_logits_match_keras_token_by_token(runs, rng):
    directory, model, _ = runs("lstm")
    generator = OnnxGenerator(directory)
    tokens = rng.integers(1, generator.vocabulary.size, size=(2, 9)).astype("int32")
    expected = keras.ops.convert_to_numpy(model(tokens, training=False))  # (2, 9, V)
    logits, states = generator.step(tokens[:, :4], generator.initial_states(2))
    pieces = [logits]
    for t in range(4, 9):
        logits, states = generator.step(tokens[:, t : t + 1], states)
        pieces.append(logits)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- bad input


def test_wrong_state_shape_is_one_line_naming_the_input(runs):
    directory, _, _ = runs("lstm")
    generator = OnnxGenerator(directory)
    states = generator.initial_states(1)
    tokens = np.array([[1, 2]], np.int32)
    wrong = [np.zeros((1, 5), np.float32), *states[1:]]
    with pytest.raises(ValueError) as caught:
        generator.step(tokens, wrong)
    message = str(caught.value)
    assert "\n" not in message
    assert "`state_in_0`" in message and "(1, 5)" in message and "(batch, 16)" in message
    # A batch that disagrees with the tokens' batch.
    with pytest.raises(ValueError, match=r"`state_in_1` has shape \(3, 16\).*batch=1"):
        generator.step(tokens, [states[0], np.zeros((3, 16), np.float32), *states[2:]])
    with pytest.raises(ValueError, match=r"`states` must be a list of 4 arrays "
                       r"\(state_in_0, .*state_in_3\).*Received: 2 arrays"):
        generator.step(tokens, states[:2])
    named = dict(zip(generator.state_names, states))
    with pytest.raises(ValueError, match=r"`states` must be a list.*Received: states of type dict"):
        generator.step(tokens, named)
    with pytest.raises(ValueError, match=r"`states` must be a list.*of type ndarray"):
        generator.step(tokens, states[0])
    # An error raised inside onnxruntime (a token id past the embedding table, fed
    # to the graph directly: `step` refuses it before onnxruntime runs).
    with pytest.raises(ValueError, match=r"onnxruntime failed to run model.step.onnx") as caught:
        generator.step_graph.run({"tokens": np.array([[10_000]], np.int32), **named})
    assert "\n" not in str(caught.value)


def test_token_ids_are_checked_before_onnxruntime_runs(runs, capfd):
    directory, _, vocabulary = runs("lstm")
    generator = OnnxGenerator(directory)
    size = vocabulary.size
    states = generator.initial_states(1)
    capfd.readouterr()
    with pytest.raises(ValueError, match=rf"`tokens` must be token ids in \[0, {size}\).*"
                       r"Received: tokens\[0, 1\]=-1$"):
        generator.step(np.array([[1, -1]], np.int32), states)
    with pytest.raises(ValueError, match=rf"Received: tokens\[1, 0\]={size}$"):
        generator.step([[1], [size]], generator.initial_states(2))
    with pytest.raises(ValueError, match=r"`tokens` must be integer token ids.*float64"):
        generator.step([[1.0]], states)
    with pytest.raises(ValueError, match=r"`tokens` must hold at least one token id"):
        generator.step(np.zeros((1, 0), np.int32), states)
    with pytest.raises(ValueError, match=rf"`ids` must be token ids in \[0, {size}\).*"
                       rf"Received: ids\[2\]={size + 3}$"):
        generator.generate_ids([1, 2, size + 3], 3)
    with pytest.raises(ValueError, match=r"Received: ids\[0\]=-5$"):
        generator.generate_ids([-5, 1], 3, temperature=0)
    with pytest.raises(ValueError, match=r"`ids` must be a non-empty 1-D"):
        generator.generate_ids([], 3)
    with pytest.raises(ValueError, match=r"`ids` must be integer token ids"):
        generator.generate_ids([1, 2.5], 3)
    # The largest id runs (id 0, out of vocabulary, has an embedding row too).
    assert generator.generate_ids([0, size - 1], 2, temperature=0)[:2] == [0, size - 1]
    transformer = OnnxGenerator(runs("transformer")[0])
    with pytest.raises(ValueError, match=rf"Received: tokens\[0, 2\]={size}$"):
        transformer.prefill([[1, 2, size]])
    _, cache = transformer.prefill([[1, 2]])
    with pytest.raises(ValueError, match=r"Received: tokens\[0, 0\]=-2$"):
        transformer.decode([[-2]], cache)
    with pytest.raises(ValueError, match=r"`cache` must be a list of 4 arrays.*of type dict"):
        transformer.decode([[3]], {"past_key_0": cache[0]})
    with pytest.raises(ValueError, match=rf"Received: ids\[0\]={size}$"):
        transformer.generate_ids([size], 2)
    assert capfd.readouterr().err == ""  # nothing reached onnxruntime's own logging


def test_methods_of_the_other_kind_of_model_are_refused(runs):
    recurrent = OnnxGenerator(runs("lstm")[0])
    with pytest.raises(ValueError, match=r"`prefill` needs a transformer model; this one is "
                       r"'lstm' \(use `initial_states` and `step`\)"):
        recurrent.prefill([[1, 2]])
    with pytest.raises(ValueError, match=r"`decode` needs a transformer model; this one is 'lstm'"):
        recurrent.decode([[1]], [])
    transformer = OnnxGenerator(runs("transformer")[0])
    with pytest.raises(ValueError, match=r"`step` needs a recurrent model; this one is "
                       r"'transformer' \(use `prefill` and `decode`\)"):
        transformer.step([[1]], [])
    with pytest.raises(ValueError, match=r"`initial_states` needs a recurrent model"):
        transformer.initial_states(1)


def test_wrong_cache_shape_is_one_line_naming_the_input(runs):
    directory, _, _ = runs("transformer")
    generator = OnnxGenerator(directory)
    logits, cache = generator.prefill(np.array([[1, 2, 3]], np.int32))
    assert [c.shape for c in cache] == [(1, 2, 3, 8)] * 4  # (batch, heads, sequence, head_dim)
    short = [cache[0], cache[1][:, :, :2], *cache[2:]]
    with pytest.raises(ValueError, match=r"`past_value_0` has shape \(1, 2, 2, 8\).*"
                       r"\(batch, 2, past_sequence, 8\) with past_sequence=3"):
        generator.decode(np.array([[4]], np.int32), short)
    with pytest.raises(ValueError, match=r"`past_key_1` has shape \(1, 2, 3, 4\)"):
        generator.decode(np.array([[4]], np.int32), [*cache[:2], cache[2][..., :4], cache[3]])
    with pytest.raises(ValueError, match=r"`cache` must be a list of 4 arrays.*Received: 2 arrays"):
        generator.decode(np.array([[4]], np.int32), cache[:2])
    logits, longer = generator.decode(np.array([[4]], np.int32), cache)
    assert logits.shape == (1, 1, generator.vocabulary.size) and longer[0].shape[2] == 4


def test_bad_generator_arguments(runs, tmp_path):
    directory, _, _ = runs("lstm")
    with pytest.raises(ValueError, match="`threads`"):
        OnnxGenerator(directory, threads=0)
    generator = OnnxGenerator(directory)
    with pytest.raises(ValueError, match=r"`prompt` contains tokens outside.*'Z'"):
        generator.generate("Zebra", 3)
    with pytest.raises(ValueError, match="`prompt`"):
        generator.generate("", 3)
    with pytest.raises(ValueError, match="`temperature`"):
        generator.generate("hello", 3, temperature=-1)
    with pytest.raises(ValueError, match="is not a directory"):
        OnnxGenerator(tmp_path / "absent")


def _copy_run(source, target, names):
    target.mkdir()
    for name in names:
        (target / name).write_bytes((source / name).read_bytes())
    return target


def _cli_fails(argv, capsys, must_mention):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keraseq: error:"), err
    for piece in must_mention:
        assert piece in lines[0], lines[0]


def test_cli_missing_graphs_and_bad_arguments(runs, tmp_path, capsys):
    directory, _, _ = runs("lstm")
    bare = _copy_run(directory, tmp_path / "bare", ["vocabulary.json", "config.json"])
    args = ["--onnx", "--prompt", "hello"]
    _cli_fails(["generate", str(bare), *args], capsys,
               ["model.step.onnx", "keraseq export", "--streaming"])
    config = json.loads((bare / "config.json").read_text())
    (bare / "config.json").write_text(json.dumps({**config, "model": "transformer"}))
    _cli_fails(["generate", str(bare), *args], capsys, ["model.prefill.onnx", "--streaming"])
    no_vocabulary = _copy_run(directory, tmp_path / "novocab", ["config.json", "model.step.onnx"])
    _cli_fails(["generate", str(no_vocabulary), *args], capsys, ["vocabulary.json"])
    damaged = _copy_run(directory, tmp_path / "damaged", ["vocabulary.json", "config.json"])
    (damaged / "model.step.onnx").write_text("not a graph")
    _cli_fails(["generate", str(damaged), *args], capsys, ["model.step.onnx", "onnxruntime"])
    _cli_fails(["generate", str(directory), *args, "--threads", "0"], capsys, ["--threads"])
    _cli_fails(["generate", str(directory), "--onnx", "--prompt", "hello~"], capsys,
               ["characters outside the vocabulary", "'~'"])
    _cli_fails(["generate", str(tmp_path / "absent"), *args], capsys, ["absent"])


# ---------------------------------------------------------------- graphs of another model

RUN_FILES = ["vocabulary.json", "config.json"]


def _edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **changes}))


def test_file_sha256_reads_in_chunks(tmp_path, rng):
    data = rng.integers(0, 256, size=1000, dtype=np.uint8).tobytes()
    (tmp_path / "blob").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    for chunk_size in (7, 1000, 1 << 20):
        assert runtime.file_sha256(tmp_path / "blob", chunk_size) == expected


def test_graphs_of_another_model_keras_are_refused(runs, tmp_path, capsys):
    directory, _, vocabulary = runs("lstm")
    run = _copy_run(directory, tmp_path / "run", [*RUN_FILES, "model.keras", "model.step.onnx"])
    expected = OnnxGenerator(run).generate("the ", 12, temperature=0)  # the hashes match
    # Retrained after the export: model.keras has other bytes than the graph records.
    (run / "model.keras").write_bytes((run / "model.keras").read_bytes() + b"retrained")
    with pytest.raises(ValueError, match=r"^model.step.onnx was exported from another "
                       r"model.keras \(e.g. before retraining\): run `keraseq export "
                       rf"{tmp_path / 'run'} --streaming` again$"):
        OnnxGenerator(run)
    _cli_fails(["generate", str(run), "--onnx", "--prompt", "the "], capsys,
               ["model.step.onnx", "another model.keras", "--streaming"])
    # Graphs without the hash (older exports) are accepted; so is a run without model.keras.
    recorded = _metadata(run / "model.step.onnx")[MODEL_HASH]
    _set_metadata(run / "model.step.onnx", **{MODEL_HASH: None})
    assert OnnxGenerator(run).generate("the ", 12, temperature=0) == expected
    _set_metadata(run / "model.step.onnx", **{MODEL_HASH: recorded})
    (run / "model.keras").unlink()
    assert OnnxGenerator(run).generate("the ", 12, temperature=0) == expected


def test_prefill_and_decode_of_different_exports_are_refused(runs, tmp_path):
    directory, _, _ = runs("transformer")
    graphs = ["model.prefill.onnx", "model.decode.onnx"]
    run = _copy_run(directory, tmp_path / "run", [*RUN_FILES, "model.keras", *graphs])
    OnnxGenerator(run)
    _set_metadata(run / "model.decode.onnx", **{MODEL_HASH: "0" * 64})
    with pytest.raises(ValueError, match=r"^model.decode.onnx was exported from another "
                       r"model.keras.*--streaming` again$"):
        OnnxGenerator(run)
    (run / "model.keras").unlink()
    different = (r"^model.prefill.onnx and model.decode.onnx come from different exports "
                 rf"\(their `{MODEL_HASH}` metadata differ\): run `keraseq export")
    with pytest.raises(ValueError, match=different):
        OnnxGenerator(run)
    _set_metadata(run / "model.decode.onnx", **{MODEL_HASH: None})  # one hashed, one not
    with pytest.raises(ValueError, match=different):
        OnnxGenerator(run)
    _set_metadata(run / "model.prefill.onnx", **{MODEL_HASH: None})  # an older export
    OnnxGenerator(run)
    _edit_config(run, layers=3)
    with pytest.raises(ValueError, match=r"model.decode.onnx has 2 attention layers but "
                       r"config.json says layers=3"):
        OnnxGenerator(run)


def test_graphs_must_be_the_kind_the_config_names(runs, tmp_path):
    recurrent, _, vocabulary = runs("lstm")
    transformer, _, _ = runs("transformer")
    run = _copy_run(recurrent, tmp_path / "run", [*RUN_FILES, "model.step.onnx"])
    _edit_config(run, model="transformer")
    with pytest.raises(ValueError, match=r"config.json names model='transformer', which needs "
                       r"model.prefill.onnx and model.decode.onnx, but DIR .* holds "
                       r"model.step.onnx .*--streaming` again"):
        OnnxGenerator(run)
    run = _copy_run(transformer, tmp_path / "run2",
                    [*RUN_FILES, "model.prefill.onnx", "model.decode.onnx"])
    _edit_config(run, model="lstm")
    with pytest.raises(ValueError, match=r"config.json names model='lstm', which needs "
                       r"model.step.onnx, but DIR .* holds model.prefill.onnx and "
                       r"model.decode.onnx"):
        OnnxGenerator(run)
    # A prefill graph under the step graph's name.
    (run / "model.step.onnx").write_bytes((run / "model.prefill.onnx").read_bytes())
    with pytest.raises(ValueError, match=r"model.step.onnx is a 'prefill' graph \(its "
                       r"keraseq_streaming metadata\), but config.json names model='lstm', "
                       r"which needs a 'step' graph"):
        OnnxGenerator(run)
    # The vocabulary of another run: the graph's logits do not cover it.
    run = _copy_run(recurrent, tmp_path / "run3", [*RUN_FILES, "model.step.onnx"])
    TokenVocabulary([*vocabulary.tokens, "~"]).save(run / "vocabulary.json")
    with pytest.raises(ValueError, match=rf"model.step.onnx gives {vocabulary.size} logits per "
                       rf"position but vocabulary.json has {vocabulary.size + 1} ids"):
        OnnxGenerator(run)


def test_step_states_must_agree_with_the_model_metadata_and_config(runs, tmp_path):
    directory, _, _ = runs("lstm")
    run = _copy_run(directory, tmp_path / "run", [*RUN_FILES, "model.step.onnx"])
    _edit_config(run, model="rnn")  # an LSTM's graph: two states per layer
    with pytest.raises(ValueError, match=r"model.step.onnx has \[2, 2\] states per recurrent "
                       r"layer, but config.json names model='rnn', which has 1 per layer"):
        OnnxGenerator(run)
    rnn = _copy_run(runs("rnn")[0], tmp_path / "rnn", [*RUN_FILES, "model.step.onnx"])
    _edit_config(rnn, model="lstm")
    with pytest.raises(ValueError, match=r"has \[1, 1\] states per recurrent layer, but "
                       r"config.json names model='lstm', which has 2 per layer"):
        OnnxGenerator(rnn)
    _edit_config(rnn, model="rnn", layers=2, units=16)
    assert OnnxGenerator(rnn)._state_sizes == [16, 16]
    _edit_config(run, model="lstm", layers=2, units=16)
    assert OnnxGenerator(run)._state_sizes == [16] * 4
    for wrong in ({"layers": 1}, {"units": 32}):
        _edit_config(run, **{"layers": 2, "units": 16, **wrong})
        with pytest.raises(ValueError, match=r"model.step.onnx has 2 recurrent layers with "
                           rf"states of widths \[16, 16, 16, 16\], but config.json says "
                           rf"layers={wrong.get('layers', 2)}, units={wrong.get('units', 16)}"):
            OnnxGenerator(run)
    _edit_config(run, layers=2, units=16)
    streaming = json.loads(_metadata(run / "model.step.onnx")["keraseq_streaming"])
    states = streaming["states"]
    _set_metadata(run / "model.step.onnx", keraseq_streaming=json.dumps(
        {**streaming, "states": [{**states[0], "size": 8}, *states[1:]]}))
    with pytest.raises(ValueError, match=r"input `state_in_0` has shape \(batch, 16\) but its "
                       r"keraseq_streaming metadata gives size=8"):
        OnnxGenerator(run)
    _set_metadata(run / "model.step.onnx", keraseq_streaming=json.dumps(
        {**streaming, "states": states[:3]}))
    with pytest.raises(ValueError, match=r"takes the states \['state_in_0', .*'state_in_3'\] "
                       r"but its keraseq_streaming metadata lists \['state_in_0', "):
        OnnxGenerator(run)
    _set_metadata(run / "model.step.onnx", keraseq_streaming="{not json")
    with pytest.raises(ValueError, match=r"damaged `keraseq_streaming` metadata"):
        OnnxGenerator(run)


def test_cli_names_unknown_words_of_a_word_level_run(runs, tmp_path, capsys):
    directory, _, vocabulary = runs("lstm")
    run = _copy_run(directory, tmp_path / "run", ["config.json", "model.step.onnx"])
    words = TokenVocabulary([f"w{i}" for i in range(vocabulary.size - 1)], level="word")
    words.save(run / "vocabulary.json")
    _edit_config(run, level="word")
    _cli_fails(["generate", str(run), "--onnx", "--prompt", "w1 zebra w2 yak"], capsys,
               ["--prompt has words outside the vocabulary: 'zebra', 'yak'"])
    assert main(["generate", str(run), "--onnx", "--prompt", "w1 w2", "--length", "3"]) == 0
    assert capsys.readouterr().out.startswith("w1 w2 w")


# ---------------------------------------------------------------- the command line


def test_cli_onnx_runs_without_keras_or_any_backend(runs, capsys):
    directory, model, vocabulary = runs("lstm")
    argv = ["generate", str(directory), "--onnx", "--prompt", "the ", "--length", "30",
            "--seed", "4", "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, "-c", NO_BACKEND_SCRIPT, *argv],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""
    assert done.stdout.startswith("the ") and len(done.stdout) == len("the ") + 30 + 1
    # Same seed, same text: in-process, and a second --onnx run.
    assert main(argv) == 0
    assert capsys.readouterr().out == done.stdout
    assert main(argv) == 0
    assert capsys.readouterr().out == done.stdout
    assert main([*argv[:-4], "--seed", "5"]) == 0
    assert capsys.readouterr().out != done.stdout
    # Greedy from the command line: the Keras path and the ONNX path print the same.
    greedy = ["generate", str(directory), "--prompt", "the ", "--length", "12",
              "--temperature", "0"]
    assert main(greedy) == 0
    keras_text = capsys.readouterr().out
    assert main([*greedy, "--onnx"]) == 0
    assert capsys.readouterr().out == keras_text


@pytest.mark.parametrize("architecture", ["transformer"])
def test_cli_onnx_transformer(runs, architecture, capsys):
    directory, _, _ = runs(architecture)
    argv = ["generate", str(directory), "--onnx", "--prompt", "the ", "--length", "40",
            "--seed", "2"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("the ") and len(first) == len("the ") + 40 + 1


# ---------------------------------------------------------------- the lazy package


def _python(code):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_import_keraseq_imports_no_keras():
    out = _python(
        "import sys, keraseq, keraseq.cli, keraseq.export.runtime, keraseq.sampling\n"
        "import keraseq.generation\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{BLOCKED!r}))\n"
        "print('LSTM' in dir(keraseq), 'load_model' in keraseq.__all__)\n"
    )
    assert out.split("\n")[:2] == ["[]", "True True"]


def test_layers_load_lazily_and_register(tmp_path):
    x = keras.Input((None, 3))
    model = keras.Model(x, keraseq.LSTM(4, return_sequences=True)(x))
    path = tmp_path / "m.keras"
    model.save(path)
    inputs = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    np.save(tmp_path / "x.npy", inputs)
    np.save(tmp_path / "y.npy", keras.ops.convert_to_numpy(model(inputs)))
    code = f"""
import numpy as np
import keraseq
from keraseq.layers import LSTM
assert keraseq.LSTM is LSTM and keraseq.layers.LSTM is LSTM
import keras
x, y = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})
for load in (keraseq.load_model, keras.saving.load_model):  # registered by keraseq.layers
    model = load({str(path)!r})
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), y, atol=1e-6)
print("ok")
"""
    assert _python(code).strip().endswith("ok")


def test_package_names():
    import keraseq.layers

    assert list(keraseq.layers.__all__) == list(keraseq._LAYER_NAMES)
    assert {*keraseq._LAYER_NAMES, "load_model"} == set(keraseq.__all__)
    assert {"text", "sampling", "LSTM", "load_model"} <= set(dir(keraseq))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        keraseq.Nope  # noqa: B018
