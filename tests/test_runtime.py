"""Generation with onnxruntime alone (`keraseq.runtime`, `keraseq generate --onnx`),
the numpy sampling rule it shares with Keras generation, and the lazy `import keraseq`.

References: Keras generation (`keraseq.generation.generate`) on the same weights
under the current backend, closed-form softmax sampling in numpy, and
`keraseq.text.Vocabulary` (Keras `StringLookup`) for the Keras-free vocabulary.
The streaming graphs come from `keraseq.export.native.export_streaming`.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keraseq
from keraseq import sampling, text
from keraseq.cli import main
from keraseq.generation import generate
from keraseq.models import language_model
from keraseq.runtime import OnnxGenerator, TokenVocabulary

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


def _export_streaming(model, directory, architecture):
    try:
        from keraseq.export.native import NativeUnsupported, export_streaming
    except ImportError as error:  # the streaming exporter is not in this checkout
        pytest.skip(f"keraseq.export.native.export_streaming is missing ({error})")
    try:
        export_streaming(model, directory)
    except NativeUnsupported as error:
        if architecture == "transformer":
            pytest.skip(f"export_streaming cannot write transformer graphs yet: {error}")
        raise


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
    with pytest.raises(ValueError, match=r"`states` must hold 4 arrays"):
        generator.step(tokens, states[:2])
    # An error raised inside onnxruntime (a token id past the embedding table).
    with pytest.raises(ValueError, match=r"onnxruntime failed to run model.step.onnx") as caught:
        generator.step(np.array([[10_000]], np.int32), states)
    assert "\n" not in str(caught.value)


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
    with pytest.raises(ValueError, match=r"`cache` must hold 4 arrays"):
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
    _cli_fails(["generate", str(directory), "--onnx", "--prompt", "hello~"], capsys, ["'~'"])
    _cli_fails(["generate", str(tmp_path / "absent"), *args], capsys, ["absent"])


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
        "import sys, keraseq, keraseq.cli, keraseq.runtime, keraseq.sampling\n"
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
    assert {"text", "runtime", "LSTM", "load_model"} <= set(dir(keraseq))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        keraseq.Nope  # noqa: B018
