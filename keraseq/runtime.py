"""Text generation with onnxruntime and numpy only: no Keras, no backend.

`OnnxGenerator` loads the streaming graphs that `keraseq export DIR
--streaming` writes into a run directory and samples text from them, with the
same sampling rule as `keraseq.generation.generate` (float64 softmax, id 0
never emitted, one `rng.choice` per token, `temperature=0` = greedy):

* recurrent models (`"lstm"`, `"rnn"`): `model.step.onnx`, inputs `tokens`
  int32 `(batch, sequence)` and `state_in_0, state_in_1, ...` float32
  `(batch, units)` (h, then c for an LSTM, per layer), outputs `logits`
  `(batch, sequence, vocabulary_size)` and `state_out_0, ...`. The prompt is fed
  as one chunk from zero states, then one token per step, the states carried.
* transformer models: `model.prefill.onnx` (`tokens` → `logits`,
  `present_key_i`, `present_value_i`, each `(batch, num_heads, sequence,
  head_dim)`) and `model.decode.onnx` (`tokens`, `past_key_i`, `past_value_i`
  → `logits`, `present_*` one longer along axis 2). The prompt is prefilled,
  then one token per step is decoded against the KV cache.

Context. Keras generation re-runs the model on a window of the last
`context_length` tokens (`sequence_length` of the run's config.json). The
transformer path reproduces that exactly: when the KV cache holds
`context_length` positions, the next step prefills the last
`context_length` tokens afresh (positions restart at 0, as in the Keras
window). The recurrent path streams: the state is carried over the whole
text, so there is no window. It equals Keras generation as long as Keras's
window still starts at the first token, i.e. while
`len(prompt_ids) + length ≤ context_length + 1`; after that the recurrent
model sees more history than Keras gives it (true streaming).

Importing this module (and everything it imports) never imports Keras,
TensorFlow, JAX or torch; onnxruntime is imported when a graph is loaded.

Example:

```python
from keraseq.runtime import OnnxGenerator

generator = OnnxGenerator("runs/shakespeare-char-lstm", threads=2)
print(generator.generate("ROMEO:", length=200, temperature=0.8, seed=0))
```
"""

import json
import re
from pathlib import Path

import numpy as np

from keraseq._tokens import TokenVocabulary
from keraseq._validation import check_positive_int
from keraseq.sampling import check_sampling, generated_text, next_token, prompt_ids

__all__ = [
    "DECODE_GRAPH",
    "OnnxGenerator",
    "OnnxGraph",
    "PREFILL_GRAPH",
    "STEP_GRAPH",
    "TokenVocabulary",
    "streaming_graphs",
]

STEP_GRAPH = "model.step.onnx"
PREFILL_GRAPH = "model.prefill.onnx"
DECODE_GRAPH = "model.decode.onnx"
RECURRENT_MODELS = ("lstm", "rnn")
TRANSFORMER_MODELS = ("transformer",)

_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _one_line(error):
    return " ".join(str(error).split())


def _shape_text(shape):
    """`(1, 64)` / `(batch, 64)`: a shape as the error messages write it."""
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _numbered(names, prefix):
    """The names `prefix0, prefix1, ...` among `names`, in numeric order."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    found = [(int(m.group(1)), n) for n in names if (m := pattern.match(n))]
    return [name for _, name in sorted(found)]


class OnnxGraph:
    """One ONNX graph in an onnxruntime session, with checked feeds.

    `run` checks every feed against the session's declared inputs before
    running: the names, the rank and every fixed dimension, and that a named
    (symbolic) dimension has one size across all inputs (e.g. `batch`). A
    mismatch raises one `ValueError` naming the input, the shape received and
    the shape the graph expects; an error inside onnxruntime is re-raised as
    one `ValueError` line naming the graph and the shapes fed.

    Args:
        path: str or path-like, an `.onnx` file.
        threads: positive int or None (default: onnxruntime's choice), the
            session's `intra_op_num_threads`.

    Raises:
        ValueError: a bad `threads`, or a file onnxruntime cannot load.
        ImportError: when onnxruntime is not installed.
    """

    def __init__(self, path, threads=None):
        import onnxruntime

        threads = check_positive_int("threads", threads, allow_none=True)
        self.path = Path(path)
        self.threads = threads
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: warnings would bury the CLI's output
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # noqa: BLE001 - a damaged or foreign file
            raise ValueError(
                f"{self.name} could not be loaded by onnxruntime "
                f"({type(error).__name__}: {_one_line(error)})"
            ) from None
        self.inputs = {
            i.name: (tuple(d if isinstance(d, int) else (d or None) for d in i.shape),
                     _ONNX_DTYPES.get(i.type))
            for i in self.session.get_inputs()
        }
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def name(self):
        """The file name, e.g. `"model.step.onnx"`, used in error messages."""
        return self.path.name

    def input_shape(self, name):
        """The declared shape of input `name`: ints, and str/None for dynamic axes."""
        return self.inputs[name][0]

    def _checked(self, feeds):
        missing = [n for n in self.inputs if n not in feeds]
        unexpected = [n for n in feeds if n not in self.inputs]
        if missing or unexpected:
            raise ValueError(
                f"{self.name} takes the inputs {list(self.inputs)}; missing "
                f"{missing}, unexpected {unexpected}"
            )
        arrays, bound = {}, {}  # bound: dimension name -> (size, input that set it)
        for name, (expected, dtype) in self.inputs.items():
            array = np.asarray(feeds[name])
            if dtype is not None and array.dtype != dtype:
                if not np.can_cast(array.dtype, dtype, casting="same_kind"):
                    raise ValueError(
                        f"{self.name} input `{name}` has dtype {array.dtype}; the graph "
                        f"expects {np.dtype(dtype)}"
                    )
                array = array.astype(dtype)
            problem = None
            if array.ndim != len(expected):
                problem = "it"
            else:
                for size, want in zip(array.shape, expected):
                    if isinstance(want, int) and size != want:
                        problem = "it"
                        break
                    if isinstance(want, str):
                        first = bound.setdefault(want, (size, name))
                        if first[0] != size:
                            problem = f"{want}={first[0]} (as in `{first[1]}`)"
                            break
            if problem:
                raise ValueError(
                    f"{self.name} input `{name}` has shape {_shape_text(array.shape)}, "
                    f"but the graph expects {_shape_text(expected)}"
                    + ("" if problem == "it" else f" with {problem}")
                )
            arrays[name] = array
        return arrays

    def run(self, feeds):
        """Run the graph on `feeds`.

        Args:
            feeds: dict input name -> array-like. Token ids are cast to the
                declared integer type, states to float32 (a float64 array is
                accepted); the shapes are checked first (see the class doc).

        Returns:
            A dict output name -> numpy array.

        Raises:
            ValueError: one line, for a feed that does not fit the graph or an
                error inside onnxruntime.
        """
        arrays = self._checked(feeds)
        try:
            outputs = self.session.run(self.output_names, arrays)
        except Exception as error:  # noqa: BLE001 - onnxruntime's own exception types
            shapes = ", ".join(f"`{n}` {_shape_text(a.shape)}" for n, a in arrays.items())
            raise ValueError(
                f"onnxruntime failed to run {self.name} on {shapes}: "
                f"{type(error).__name__}: {_one_line(error)}"
            ) from None
        return dict(zip(self.output_names, outputs))


def _read_config(directory):
    path = directory / "config.json"
    where = f"{str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{where} is missing: DIR must be a directory written by `keraseq train`")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where} is not JSON ({_one_line(error)})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{where} must hold a JSON object")
    return config


def streaming_graphs(architecture):
    """The streaming graph files of a run of `architecture` (`"lstm"`, ...)."""
    if architecture in RECURRENT_MODELS:
        return (STEP_GRAPH,)
    if architecture in TRANSFORMER_MODELS:
        return (PREFILL_GRAPH, DECODE_GRAPH)
    raise ValueError(
        f"config.json names model={architecture!r}; streaming generation knows "
        f"{[*RECURRENT_MODELS, *TRANSFORMER_MODELS]}"
    )


class OnnxGenerator:
    """Sample text from the streaming ONNX graphs of a run directory.

    See the module docstring for the graphs, the sampling rule and how the
    context window of Keras generation is reproduced.

    Args:
        directory: str or path-like, a directory written by `keraseq train`
            and then `keraseq export DIR --streaming`: `vocabulary.json`,
            `config.json` (its `"model"` and `"sequence_length"` are read) and
            `model.step.onnx` (recurrent) or `model.prefill.onnx` +
            `model.decode.onnx` (transformer). `model.keras` is not needed.
        threads: positive int or None (default: onnxruntime's choice), the
            sessions' `intra_op_num_threads`.
        context_length: positive int or None (default: the config's
            `sequence_length`, else 128): the window of Keras generation.

    Raises:
        ValueError: a missing file (a missing graph says to run
            `keraseq export DIR --streaming`), a bad config or vocabulary, or a
            graph whose inputs are not the streaming contract's.
        ImportError: when onnxruntime is not installed.

    Example:

    ```python
    generator = OnnxGenerator("runs/shakespeare-char-lstm")
    generator.generate("ROMEO:", length=40, temperature=0)  # greedy
    ```
    """

    def __init__(self, directory, threads=None, context_length=None):
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"DIR {str(directory)!r} is not a directory")
        threads = check_positive_int("threads", threads, allow_none=True)
        self.directory = directory
        self.config = _read_config(directory)
        self.vocabulary = TokenVocabulary.load(directory / "vocabulary.json")
        if context_length is None:
            context_length = self.config.get("sequence_length") or 128
        self.context_length = check_positive_int("context_length", context_length)
        self.architecture = self.config.get("model")
        for name in streaming_graphs(self.architecture):
            if not (directory / name).is_file():
                raise ValueError(
                    f"DIR {str(directory)!r} has no {name}: run "
                    f"`keraseq export {directory} --streaming` first"
                )
        if self.architecture in RECURRENT_MODELS:
            self.step_graph = OnnxGraph(directory / STEP_GRAPH, threads)
            self.state_names = _numbered(self.step_graph.inputs, "state_in_")
            expected = ["tokens", *self.state_names]
            if not self.state_names or sorted(self.step_graph.inputs) != sorted(expected):
                raise ValueError(
                    f"{STEP_GRAPH} must take `tokens`, `state_in_0`, ...; it takes "
                    f"{list(self.step_graph.inputs)}"
                )
            self._state_sizes = self._sizes_of_states()
        else:
            self.prefill_graph = OnnxGraph(directory / PREFILL_GRAPH, threads)
            self.decode_graph = OnnxGraph(directory / DECODE_GRAPH, threads)
            self.num_layers = len(_numbered(self.decode_graph.inputs, "past_key_"))
            expected = ["tokens"] + [
                f"past_{kind}_{i}" for i in range(self.num_layers) for kind in ("key", "value")
            ]
            if not self.num_layers or sorted(self.decode_graph.inputs) != sorted(expected):
                raise ValueError(
                    f"{DECODE_GRAPH} must take `tokens`, `past_key_0`, `past_value_0`, "
                    f"...; it takes {list(self.decode_graph.inputs)}"
                )
            if list(self.prefill_graph.inputs) != ["tokens"]:
                raise ValueError(
                    f"{PREFILL_GRAPH} must take `tokens` only; it takes "
                    f"{list(self.prefill_graph.inputs)}"
                )

    def __repr__(self):
        return (
            f"OnnxGenerator({str(self.directory)!r}, model={self.architecture!r}, "
            f"vocabulary_size={self.vocabulary.size}, context_length={self.context_length})"
        )

    # -- recurrent: the step graph --------------------------------------------
    def _sizes_of_states(self):
        """The width of each state, from its declared shape or the metadata."""
        declared = {}
        try:
            meta = json.loads(self.step_graph.metadata.get("keraseq_streaming", "{}"))
            declared = {s["input"]: int(s["size"]) for s in meta.get("states", [])}
        except (TypeError, ValueError, KeyError):
            declared = {}
        sizes = []
        for name in self.state_names:
            last = self.step_graph.input_shape(name)[-1]
            size = last if isinstance(last, int) else declared.get(name)
            if size is None:
                raise ValueError(
                    f"{STEP_GRAPH} input `{name}` has no fixed width "
                    f"{_shape_text(self.step_graph.input_shape(name))} and no "
                    "keraseq_streaming metadata giving it"
                )
            sizes.append(size)
        return sizes

    def initial_states(self, batch_size=1):
        """Zero states (the Keras initial state), one float32 `(batch_size, units)` each."""
        batch_size = check_positive_int("batch_size", batch_size)
        return [np.zeros((batch_size, size), np.float32) for size in self._state_sizes]

    def step(self, tokens, states):
        """Run the step graph on a chunk of tokens from `states`.

        Args:
            tokens: int array-like `(batch_size, sequence_length)`.
            states: list of float32 arrays `(batch_size, units_k)`, in the
                order of `state_in_0, state_in_1, ...`.

        Returns:
            `(logits, states)`: float32 `(batch_size, sequence_length,
            vocabulary_size)` and the states after the chunk's last token.

        Raises:
            ValueError: one line naming the input, for a state or token array
                of the wrong shape (or number), or an onnxruntime error.
        """
        if self.architecture not in RECURRENT_MODELS:
            raise ValueError(f"`step` needs a recurrent model; this one is {self.architecture!r}")
        states = list(states)
        if len(states) != len(self.state_names):
            raise ValueError(
                f"`states` must hold {len(self.state_names)} arrays "
                f"({', '.join(self.state_names)}). Received: {len(states)}"
            )
        feeds = {"tokens": np.asarray(tokens), **dict(zip(self.state_names, states))}
        outputs = self.step_graph.run(feeds)
        names = [name.replace("state_in_", "state_out_") for name in self.state_names]
        return outputs["logits"], [outputs[name] for name in names]

    # -- transformer: prefill and decode --------------------------------------
    def prefill(self, tokens):
        """Run the prefill graph: logits and the KV cache of `tokens`.

        Args:
            tokens: int array-like `(batch_size, sequence_length)`.

        Returns:
            `(logits, cache)`: float32 `(batch_size, sequence_length,
            vocabulary_size)` and a list `[key_0, value_0, key_1, ...]`, each
            `(batch_size, num_heads, sequence_length, head_dim)`.
        """
        outputs = self.prefill_graph.run({"tokens": np.asarray(tokens)})
        return outputs["logits"], self._cache(outputs, "present")

    def decode(self, tokens, cache):
        """Run the decode graph on new `tokens` after the cached positions.

        Args:
            tokens: int array-like `(batch_size, new_length)`, usually
                `new_length = 1`; their positions start at the cache length.
            cache: the list returned by `prefill` or `decode`.

        Returns:
            `(logits, cache)` with the cache `new_length` positions longer.

        Raises:
            ValueError: one line naming the input, for a cache entry or token
                array of the wrong shape, or an onnxruntime error.
        """
        cache = list(cache)
        if len(cache) != 2 * self.num_layers:
            raise ValueError(
                f"`cache` must hold {2 * self.num_layers} arrays (key and value per "
                f"layer). Received: {len(cache)}"
            )
        names = [f"past_{kind}_{i}" for i in range(self.num_layers) for kind in ("key", "value")]
        outputs = self.decode_graph.run({"tokens": np.asarray(tokens), **dict(zip(names, cache))})
        return outputs["logits"], self._cache(outputs, "present")

    def _cache(self, outputs, prefix):
        return [
            outputs[f"{prefix}_{kind}_{i}"]
            for i in range(self.num_layers)
            for kind in ("key", "value")
        ]

    # -- generation ------------------------------------------------------------
    def _check_logits(self, logits):
        if logits.shape[-1] != self.vocabulary.size:
            raise ValueError(
                f"the graphs give {logits.shape[-1]} logits per position but "
                f"vocabulary.json has {self.vocabulary.size} ids: they come from "
                "different runs"
            )

    def generate_ids(self, ids, length=500, temperature=1.0, top_k=None, seed=None):
        """Continue the token ids `ids` by `length` sampled ids.

        Args:
            ids: non-empty sequence of int ids (the prompt).
            length: int ≥ 0, default 500.
            temperature: float ≥ 0, default 1.0; 0 = greedy (argmax).
            top_k: positive int or None (default).
            seed: int or None: the same seed gives the same ids.

        Returns:
            A list of `int`: `ids` followed by the `length` new ids.
        """
        length, temperature, top_k = check_sampling(length, temperature, top_k)
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("`ids` must not be empty. Received: ids=[]")
        rng = np.random.default_rng(seed)
        if length == 0:
            return ids
        if self.architecture in RECURRENT_MODELS:
            logits, states = self.step(np.array([ids], np.int32), self.initial_states(1))
            self._check_logits(logits)
            for index in range(length):
                ids.append(next_token(logits[0, -1], temperature, top_k, rng))
                if index + 1 < length:
                    logits, states = self.step(np.array([[ids[-1]]], np.int32), states)
            return ids
        window = self.context_length
        logits, cache = self.prefill(np.array([ids[-window:]], np.int32))
        self._check_logits(logits)
        for index in range(length):
            ids.append(next_token(logits[0, -1], temperature, top_k, rng))
            if index + 1 == length:
                break
            if cache[0].shape[2] >= window:
                # Keras's window now drops its first token and its positions
                # restart at 0: rebuild the cache from the last `window` tokens.
                logits, cache = self.prefill(np.array([ids[-window:]], np.int32))
            else:
                logits, cache = self.decode(np.array([[ids[-1]]], np.int32), cache)
        return ids

    def generate(self, prompt, length=500, temperature=1.0, top_k=None, seed=None):
        """Continue `prompt` by `length` sampled tokens.

        Args:
            prompt: non-empty str; every character (or word) must be in the
                vocabulary.
            length: int ≥ 0, default 500, number of tokens to sample.
            temperature: float ≥ 0, default 1.0; 0 means greedy decoding.
            top_k: positive int or None (default): sample among the k most likely.
            seed: int or None: the same seed gives the same text.

        Returns:
            The prompt followed by the continuation, as a str (as
            `keraseq.generation.generate` returns it).

        Raises:
            ValueError: an empty prompt, a prompt with tokens outside the
                vocabulary (they are named), or a bad `length`, `temperature`,
                `top_k`.
        """
        length, temperature, top_k = check_sampling(length, temperature, top_k)
        ids = prompt_ids(self.vocabulary, prompt)
        ids = self.generate_ids(ids, length, temperature, top_k, seed)
        return generated_text(self.vocabulary, prompt, ids, length)
