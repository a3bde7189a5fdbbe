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

Checks at load time. The graphs must be the ones `config.json`'s `"model"`
needs (their `keraseq_streaming` metadata gives their kind, and the number and
widths of a step graph's states must agree with that metadata, with the model
and, when it records them, with the config's `"layers"` and `"units"`); their
logits must cover `vocabulary.json`. `keraseq export DIR --streaming` records
the sha256 of `model.keras` in every graph (metadata `keraseq_model_sha256`):
a graph whose hash is not the hash of the `model.keras` beside it (retrained
since the export), or a prefill and a decode graph with different hashes, is
refused. Graphs without the hash (older exports) are accepted, and so is a
directory without `model.keras`.

Importing this module (and everything it imports) never imports Keras,
TensorFlow, JAX or torch; onnxruntime is imported when a graph is loaded.

Example:

```python
from keraseq.export.runtime import OnnxGenerator

generator = OnnxGenerator("runs/shakespeare-char-lstm", threads=2)
print(generator.generate("ROMEO:", length=200, temperature=0.8, seed=0))
```
"""

import collections
import json
import re
from pathlib import Path

import numpy as np

from keraseq._tokens import TokenVocabulary, check_token_ids
from keraseq._validation import check_positive_int, is_int
from keraseq.export._io import _one_line, cpu_session, file_sha256
from keraseq.sampling import check_sampling, generated_text, next_token, prompt_ids

__all__ = [
    "DECODE_GRAPH",
    "OnnxGenerator",
    "OnnxGraph",
    "PREFILL_GRAPH",
    "STEP_GRAPH",
    "TokenVocabulary",
    "file_sha256",
    "streaming_graphs",
]

STEP_GRAPH = "model.step.onnx"
PREFILL_GRAPH = "model.prefill.onnx"
DECODE_GRAPH = "model.decode.onnx"
RECURRENT_MODELS = ("lstm", "rnn")
TRANSFORMER_MODELS = ("transformer",)
GRAPH_KINDS = {STEP_GRAPH: "step", PREFILL_GRAPH: "prefill", DECODE_GRAPH: "decode"}
STATES_PER_LAYER = {"lstm": 2, "rnn": 1}  # LSTM: h then c; SimpleRNN: h
MODEL_HASH = "keraseq_model_sha256"  # metadata: sha256 of the exported model.keras
STREAMING_METADATA = "keraseq_streaming"

_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


NOT_ONNX = (
    "it does not parse as an ONNX protobuf: truncated, or not written by an ONNX exporter"
)
NO_GRAPH = "it holds no graph: an empty file, or a protobuf of another kind"


def onnx_load_problem(error):
    """Why onnxruntime could not load a file, in one line.

    Returns `(True, reason)` for a file that is not an ONNX model at all (our
    words, `NOT_ONNX` / `NO_GRAPH`, the same whatever onnxruntime's version),
    else `(False, "<exception type>: <onnxruntime's message>")`.
    """
    text = _one_line(error)
    if type(error).__name__ == "InvalidProtobuf":
        return True, NOT_ONNX
    if "No graph was found" in text:
        return True, NO_GRAPH
    return False, f"{type(error).__name__}: {text}"


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
        ValueError: a bad `threads`, or a file onnxruntime cannot load
            ("model.step.onnx is not an ONNX model onnxruntime can load
            (...)" for a file that is not one at all).
        ImportError: when onnxruntime is not installed.
    """

    def __init__(self, path, threads=None):
        import onnxruntime  # noqa: F401 - a missing onnxruntime raises ImportError here

        threads = check_positive_int("threads", threads, allow_none=True)
        self.path = Path(path)
        self.threads = threads
        try:
            self.session = cpu_session(self.path, threads)
        except Exception as error:  # noqa: BLE001 - a damaged or foreign file
            foreign, reason = onnx_load_problem(error)
            verb = ("is not an ONNX model onnxruntime can load" if foreign
                else "could not be loaded by onnxruntime")
            raise ValueError(f"{self.name} {verb} ({reason})") from None
        self.inputs = {
            i.name: (tuple(d if isinstance(d, int) else (d or None) for d in i.shape),
                     _ONNX_DTYPES.get(i.type))
            for i in self.session.get_inputs()
        }
        self.outputs = {
            o.name: tuple(d if isinstance(d, int) else (d or None) for d in o.shape)
            for o in self.session.get_outputs()
        }
        self.output_names = list(self.outputs)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.streaming = self._streaming_metadata()

    def _streaming_metadata(self):
        """The `keraseq_streaming` metadata as a dict, or None when absent."""
        raw = self.metadata.get(STREAMING_METADATA)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ValueError(
                f"{self.name} has a damaged `{STREAMING_METADATA}` metadata property "
                f"(not a JSON object): {raw[:80]!r}"
            )
        return value

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
            `keraseq export DIR --streaming`), a bad config or vocabulary, a
            graph whose inputs are not the streaming contract's, graphs of
            another kind than the config's `"model"` needs, graphs exported
            from another `model.keras` or from different exports, or graphs
            whose states or logits disagree with the config, the model or
            the vocabulary (see the module docstring).
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
        graphs = self._load_graphs(threads)
        self._check_exports(graphs)
        if self.architecture in RECURRENT_MODELS:
            self.step_graph = graphs[STEP_GRAPH]
            self.state_names = _numbered(self.step_graph.inputs, "state_in_")
            expected = ["tokens", *self.state_names]
            if not self.state_names or sorted(self.step_graph.inputs) != sorted(expected):
                raise ValueError(
                    f"{STEP_GRAPH} must take `tokens`, `state_in_0`, ...; it takes "
                    f"{list(self.step_graph.inputs)}"
                )
            self._state_sizes = self._sizes_of_states()
        else:
            self.prefill_graph = graphs[PREFILL_GRAPH]
            self.decode_graph = graphs[DECODE_GRAPH]
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
            self._check_layers()

    def __repr__(self):
        return (
            f"OnnxGenerator({str(self.directory)!r}, model={self.architecture!r}, "
            f"vocabulary_size={self.vocabulary.size}, context_length={self.context_length})"
        )

    # -- checks at load time ---------------------------------------------------
    def _again(self):
        return f"run `keraseq export {self.directory} --streaming` again"

    def _load_graphs(self, threads):
        """The graphs the config's model needs, as `{file name: OnnxGraph}`."""
        names = streaming_graphs(self.architecture)
        missing = [name for name in names if not (self.directory / name).is_file()]
        if missing:
            others = [
                name for name in GRAPH_KINDS
                if name not in names and (self.directory / name).is_file()
            ]
            if others:
                raise ValueError(
                    f"config.json names model={self.architecture!r}, which needs "
                    f"{' and '.join(names)}, but DIR {str(self.directory)!r} holds "
                    f"{' and '.join(others)} (the graphs of another kind of model): "
                    + self._again()
                )
            raise ValueError(
                f"DIR {str(self.directory)!r} has no {missing[0]}: run "
                f"`keraseq export {self.directory} --streaming` first"
            )
        return {name: OnnxGraph(self.directory / name, threads) for name in names}

    def _check_exports(self, graphs):
        """The graphs' kinds, model hashes and logits agree with the run."""
        for name, graph in graphs.items():
            kind = (graph.streaming or {}).get("kind")
            if kind is not None and kind != GRAPH_KINDS[name]:
                raise ValueError(
                    f"{name} is a {kind!r} graph (its {STREAMING_METADATA} metadata), but "
                    f"config.json names model={self.architecture!r}, which needs a "
                    f"{GRAPH_KINDS[name]!r} graph in {name}: " + self._again()
                )
        hashes = {name: graph.metadata.get(MODEL_HASH) for name, graph in graphs.items()}
        model_file = self.directory / "model.keras"
        if model_file.is_file() and any(hashes.values()):
            actual = file_sha256(model_file)
            for name, recorded in hashes.items():
                if recorded is not None and recorded.strip().lower() != actual:
                    raise ValueError(
                        f"{name} was exported from another model.keras (e.g. before "
                        "retraining): " + self._again()
                    )
        if len(set(hashes.values())) > 1:
            raise ValueError(
                f"{' and '.join(graphs)} come from different exports (their `{MODEL_HASH}` "
                "metadata differ): " + self._again()
            )
        for name, graph in graphs.items():
            if "logits" not in graph.outputs:
                raise ValueError(
                    f"{name} must give `logits`; it gives {list(graph.outputs)}"
                )
            width = graph.outputs["logits"][-1]
            if isinstance(width, int) and width != self.vocabulary.size:
                raise ValueError(
                    f"{name} gives {width} logits per position but vocabulary.json has "
                    f"{self.vocabulary.size} ids: they come from different runs; "
                    + self._again()
                )

    def _config_int(self, key):
        value = self.config.get(key)
        return int(value) if is_int(value) else None

    def _check_layers(self):
        """Prefill and decode have the same layers as the metadata and config."""
        present = len(_numbered(self.prefill_graph.outputs, "present_key_"))
        if present != self.num_layers:
            raise ValueError(
                f"{PREFILL_GRAPH} gives the cache of {present} layers but {DECODE_GRAPH} "
                f"takes {self.num_layers}: they come from different exports; " + self._again()
            )
        for name, graph in ((PREFILL_GRAPH, self.prefill_graph), (DECODE_GRAPH, self.decode_graph)):
            recorded = (graph.streaming or {}).get("num_layers")
            if recorded is not None and recorded != self.num_layers:
                raise ValueError(
                    f"{name} has {self.num_layers} attention layers but its "
                    f"{STREAMING_METADATA} metadata says num_layers={recorded!r}: " + self._again()
                )
        layers = self._config_int("layers")
        if layers is not None and layers != self.num_layers:
            raise ValueError(
                f"{DECODE_GRAPH} has {self.num_layers} attention layers but config.json says "
                f"layers={layers}: the graphs come from another run; " + self._again()
            )

    # -- recurrent: the step graph --------------------------------------------
    def _sizes_of_states(self):
        """The width of each state, checked against the metadata and config."""
        listed = (self.step_graph.streaming or {}).get("states")
        declared = {}
        if listed is not None:
            try:
                declared = {str(s["input"]): int(s["size"]) for s in listed}
            except (TypeError, ValueError, KeyError):
                raise ValueError(
                    f"{STEP_GRAPH} has a damaged `states` list in its {STREAMING_METADATA} "
                    f"metadata: {listed!r:.120}"
                ) from None
            if list(declared) != self.state_names:
                raise ValueError(
                    f"{STEP_GRAPH} takes the states {self.state_names} but its "
                    f"{STREAMING_METADATA} metadata lists {list(declared)}: " + self._again()
                )
        sizes = []
        for name in self.state_names:
            shape = self.step_graph.input_shape(name)
            size = shape[-1] if isinstance(shape[-1], int) else declared.get(name)
            if size is None:
                raise ValueError(
                    f"{STEP_GRAPH} input `{name}` has no fixed width {_shape_text(shape)} "
                    f"and no {STREAMING_METADATA} metadata giving it"
                )
            if name in declared and declared[name] != size:
                raise ValueError(
                    f"{STEP_GRAPH} input `{name}` has shape {_shape_text(shape)} but its "
                    f"{STREAMING_METADATA} metadata gives size={declared[name]}: "
                    + self._again()
                )
            sizes.append(size)
        per_layer = STATES_PER_LAYER[self.architecture]
        layer_names = [s.get("layer") for s in listed or ()]
        if layer_names and None not in layer_names:
            counts = list(collections.Counter(layer_names).values())  # per layer, in order
        else:  # no layer names in the metadata: group the states `per_layer` at a time
            full, rest = divmod(len(sizes), per_layer)
            counts = [per_layer] * full + ([rest] if rest else [])
        if any(count != per_layer for count in counts):
            raise ValueError(
                f"{STEP_GRAPH} has {counts} states per recurrent layer, but config.json "
                f"names model={self.architecture!r}, which has {per_layer} per layer: the "
                "graph comes from another run; " + self._again()
            )
        layers, units = self._config_int("layers"), self._config_int("units")
        if (layers is not None and len(counts) != layers) or (
            units is not None and any(size != units for size in sizes)
        ):
            raise ValueError(
                f"{STEP_GRAPH} has {len(counts)} recurrent layers with states of widths "
                f"{sizes}, but config.json says layers={layers}, units={units}: the graph "
                "comes from another run; " + self._again()
            )
        return sizes

    def _needs(self, method, models):
        if self.architecture not in models:
            use = "`prefill` and `decode`" if models is RECURRENT_MODELS else (
                "`initial_states` and `step`")
            kind = "a recurrent model" if models is RECURRENT_MODELS else "a transformer model"
            raise ValueError(
                f"`{method}` needs {kind}; this one is {self.architecture!r} (use {use})"
            )

    def _tokens(self, tokens, name="tokens"):
        """`tokens` as checked ids in `[0, vocabulary_size)`, before any graph runs."""
        array = check_token_ids(name, tokens, self.vocabulary.size)
        if array.size == 0:
            raise ValueError(
                f"`{name}` must hold at least one token id. Received: {name} with "
                f"shape {_shape_text(array.shape)}"
            )
        return array

    @staticmethod
    def _arrays(name, value, names, returned_by):
        """`value` (a list or tuple of arrays, one per name in `names`) as a list."""
        if not isinstance(value, (list, tuple)) or len(value) != len(names):
            received = (
                f"{len(value)} arrays" if isinstance(value, (list, tuple))
                else f"{name} of type {type(value).__name__}"
            )
            raise ValueError(
                f"`{name}` must be a list of {len(names)} arrays ({', '.join(names)}), as "
                f"{returned_by} return them. Received: {received}"
            )
        return list(value)

    def initial_states(self, batch_size=1):
        """Zero states (the Keras initial state), one float32 `(batch_size, units)` each."""
        self._needs("initial_states", RECURRENT_MODELS)
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
            ValueError: one line naming the argument or input: a transformer
                model, token ids that are not integers in `[0,
                vocabulary_size)` (checked before the graph runs), `states`
                that is not a list of one array per state, a state or token
                array of the wrong shape, or an onnxruntime error.
        """
        self._needs("step", RECURRENT_MODELS)
        tokens = self._tokens(tokens)
        states = self._arrays("states", states, self.state_names,
                              "`initial_states` and `step`")
        feeds = {"tokens": tokens, **dict(zip(self.state_names, states))}
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

        Raises:
            ValueError: one line: a recurrent model, token ids that are not
                integers in `[0, vocabulary_size)`, tokens of the wrong shape,
                or an onnxruntime error.
        """
        self._needs("prefill", TRANSFORMER_MODELS)
        outputs = self.prefill_graph.run({"tokens": self._tokens(tokens)})
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
            ValueError: one line naming the argument or input: a recurrent
                model, token ids that are not integers in `[0,
                vocabulary_size)`, `cache` that is not a list of a key and a
                value per layer, a cache entry or token array of the wrong
                shape, or an onnxruntime error.
        """
        self._needs("decode", TRANSFORMER_MODELS)
        tokens = self._tokens(tokens)
        names = [f"past_{kind}_{i}" for i in range(self.num_layers) for kind in ("key", "value")]
        cache = self._arrays("cache", cache, names, "`prefill` and `decode`")
        outputs = self.decode_graph.run({"tokens": tokens, **dict(zip(names, cache))})
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
            ids: non-empty 1-D sequence of int ids in `[0, vocabulary_size)`
                (the prompt).
            length: int ≥ 0, default 500.
            temperature: float ≥ 0, default 1.0; 0 = greedy (argmax).
            top_k: positive int or None (default).
            seed: int or None: the same seed gives the same ids.

        Returns:
            A list of `int`: `ids` followed by the `length` new ids.

        Raises:
            ValueError: empty or non-integer `ids`, an id outside `[0,
                vocabulary_size)` (named, checked before any graph runs), or a
                bad `length`, `temperature`, `top_k`.
        """
        length, temperature, top_k = check_sampling(length, temperature, top_k)
        array = check_token_ids("ids", ids, self.vocabulary.size)
        if array.ndim != 1 or not array.size:
            raise ValueError(
                "`ids` must be a non-empty 1-D sequence of token ids. Received: ids with "
                f"shape {_shape_text(array.shape)}"
            )
        ids = [int(i) for i in array.tolist()]
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
