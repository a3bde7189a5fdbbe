"""Bad input to the library: one table of cases, each with the exact message.

Every row of `CASES` does one wrong thing to a keraseq layer or model builder
and names the one `ValueError` message expected, verbatim. The same rows are the
"## Library" table of docs/bad_input.md (`test_docs_list_every_case` keeps the
two equal). Layers check call-time arguments in `__call__`, before Keras wraps
errors of `call` in its "Exception encountered when calling ..." context, so a
direct layer call gets exactly the one-line message. Inside a `keras.Model`
Keras adds that context around the same message: the rows marked `in_model`
check the context's first line and then the message exactly.

Below the table: valid inputs that the new checks must keep accepting, with
their numbers against numpy references (integer masks equal boolean ones, any
integer dtype of token ids, the boundary ids 0 and vocabulary_size - 1), and
the tensor "has values" test the token id check relies on
(`keraseq.layers._fast_path.has_values`).
"""

import re
from pathlib import Path
from typing import Callable, NamedTuple

import keras
import numpy as np
import pytest
from keras import ops

from conftest import BACKEND
from keraseq.layers import (
    LSTM,
    MultiHeadAttention,
    PositionEmbedding,
    SimpleRNN,
    SinePositionEncoding,
    TokenAndPositionEmbedding,
    TokenEmbedding,
    TransformerBlock,
)
from keraseq.layers import _fast_path
from keraseq.models import language_model
from keraseq.sampling import prompt_ids
from keraseq.text import Vocabulary

ATOL = 1e-5  # float32
DOCS = Path(__file__).resolve().parent.parent / "docs" / "bad_input.md"
VOCAB = 65  # a character vocabulary's size, as in the examples


class Case(NamedTuple):
    id: str
    what: str  # what is done, for docs/bad_input.md
    run: Callable[[], object]
    message: str
    in_model: bool = False  # raised inside a keras.Model call (Keras adds context)


def floats(*shape):
    return np.linspace(-1.0, 1.0, int(np.prod(shape)), dtype="float32").reshape(shape)


def ids(*rows):
    return np.array(rows, dtype="int32")


X = floats(2, 5, 4)  # (batch_size, sequence_length, features)


def tpe(**kwargs):
    arguments = dict(vocabulary_size=VOCAB, sequence_length=8, embedding_dim=4, name="tpe")
    return TokenAndPositionEmbedding(**{**arguments, **kwargs})


def transformer_model():
    return language_model("transformer", VOCAB, units=8, num_heads=2, name="lm")


def lstm_model():
    return language_model("lstm", VOCAB, units=8, embedding_dim=4, name="lm")


RANK3 = "(batch_size, sequence_length, features)"
TOKEN_RANGE = f"`inputs` must be token ids in [0, {VOCAB}) (the vocabulary has {VOCAB} ids)."
LSTM_STATES = "`initial_state` must be 2 tensor(s) of shape(s) (2, 3), (2, 3) (batch_size, units)."

CASES = [
    # -- ranks -------------------------------------------------------------------
    Case("simple_rnn_rank_2", "`SimpleRNN(3)` on float inputs of shape (2, 4)",
         lambda: SimpleRNN(3)(floats(2, 4)),
         f"`inputs` must have rank 3 {RANK3}. Received: inputs.shape=(2, 4)"),
    Case("lstm_rank_4", "`LSTM(3)` on inputs of shape (2, 5, 4, 1)",
         lambda: LSTM(3)(floats(2, 5, 4, 1)),
         f"`inputs` must have rank 3 {RANK3}. Received: inputs.shape=(2, 5, 4, 1)"),
    Case("lstm_rank_2_symbolic", "`LSTM(3)` on `keras.Input((4,))` (building a model)",
         lambda: LSTM(3)(keras.Input((4,))),
         f"`inputs` must have rank 3 {RANK3}. Received: inputs.shape=(None, 4)"),
    Case("sine_rank_2", "`SinePositionEncoding()` on inputs of shape (2, 5)",
         lambda: SinePositionEncoding()(floats(2, 5)),
         "`inputs` must have rank 3 (batch_size, sequence_length, hidden_dim). "
         "Received: inputs.shape=(2, 5)"),
    Case("position_embedding_rank_2", "`PositionEmbedding(8)` on inputs of shape (2, 5)",
         lambda: PositionEmbedding(8)(floats(2, 5)),
         "`inputs` must have rank 3 (batch_size, sequence_length, hidden_dim). "
         "Received: inputs.shape=(2, 5)"),
    Case("token_embedding_rank_3", "`TokenAndPositionEmbedding` on int ids of shape (2, 5, 1)",
         lambda: tpe()(np.ones((2, 5, 1), "int32")),
         "`inputs` must have rank 2 (batch_size, sequence_length). "
         "Received: inputs.shape=(2, 5, 1)"),
    Case("attention_query_rank_2", "`MultiHeadAttention(2, 2)` with a query of shape (2, 4)",
         lambda: MultiHeadAttention(2, 2)(floats(2, 4), X),
         "`query` must have rank 3 (batch_size, target_length, query_dim). "
         "Received: query.shape=(2, 4)"),
    Case("attention_value_rank_4", "`MultiHeadAttention(2, 2)` with a value of shape (2, 5, 4, 1)",
         lambda: MultiHeadAttention(2, 2)(X, floats(2, 5, 4, 1)),
         "`value` must have rank 3 (batch_size, source_length, value_dim). "
         "Received: value.shape=(2, 5, 4, 1)"),
    Case("attention_key_length", "`MultiHeadAttention(2, 2)` with value length 5, key length 3",
         lambda: MultiHeadAttention(2, 2)(X, X, key=floats(2, 3, 4)),
         "`value` and `key` must have the same length. "
         "Received: value.shape=(2, 5, 4), key.shape=(2, 3, 4)"),
    Case("transformer_rank_2", "`TransformerBlock(2, 8)` on inputs of shape (2, 4)",
         lambda: TransformerBlock(2, 8)(floats(2, 4)),
         "`inputs` must have rank 3 (batch_size, sequence_length, hidden_dim). "
         "Received: inputs.shape=(2, 4)"),
    # -- dtypes ------------------------------------------------------------------
    Case("token_ids_float", "float32 token ids `[[1.7, 2.2]]` into `TokenAndPositionEmbedding`",
         lambda: tpe()(np.array([[1.7, 2.2]], "float32")),
         "`inputs` must be integer token ids. Received: inputs with dtype=float32"),
    Case("token_ids_float_symbolic",
         "`TokenAndPositionEmbedding` on `keras.Input((None,), dtype=\"float32\")`",
         lambda: tpe()(keras.Input((None,), dtype="float32")),
         "`inputs` must be integer token ids. Received: inputs with dtype=float32"),
    Case("token_ids_string", "a string array `[[\"a\", \"b\"]]` into `TokenAndPositionEmbedding`",
         lambda: tpe()(np.array([["a", "b"]])),
         "`inputs` must be integer token ids. Received: inputs with dtype=string"),
    Case("token_ids_bool", "boolean token ids into `TokenAndPositionEmbedding`",
         lambda: tpe()(np.array([[True, False]])),
         "`inputs` must be integer token ids. Received: inputs with dtype=bool"),
    Case("embedding_ids_float",
         "float32 token ids `[[1.7, 2.2]]` into `TokenEmbedding(65, 4)` (Keras's `Embedding` "
         "would truncate them)",
         lambda: TokenEmbedding(VOCAB, 4)(np.array([[1.7, 2.2]], "float32")),
         "`inputs` must be integer token ids. Received: inputs with dtype=float32"),
    Case("lstm_string_inputs", "a string array of shape (1, 1, 1) into `LSTM(3)`",
         lambda: LSTM(3)(np.array([[["a"]]])),
         "`inputs` must be a numeric tensor (float or integer). "
         "Received: inputs with dtype=string"),
    Case("attention_string_query", "a string query into `MultiHeadAttention(2, 2)`",
         lambda: MultiHeadAttention(2, 2)(np.full((2, 5, 4), "x"), X),
         "`query` must be a numeric tensor (float or integer). "
         "Received: query with dtype=string"),
    # -- token id values ---------------------------------------------------------
    Case("token_id_too_large", f"token id 70 (vocabulary_size={VOCAB}) into "
         "`TokenAndPositionEmbedding`", lambda: tpe()(ids([1, 70])),
         f"{TOKEN_RANGE} Received: inputs[0, 1]=70"),
    Case("token_id_equal_to_vocabulary_size", f"token id {VOCAB} (one past the last id)",
         lambda: tpe()(ids([0, 1, 2], [3, VOCAB, 4])),
         f"{TOKEN_RANGE} Received: inputs[1, 1]={VOCAB}"),
    Case("token_id_negative", "token id -1 into `TokenAndPositionEmbedding`",
         lambda: tpe()(ids([-1, 3])),
         f"{TOKEN_RANGE} Received: inputs[0, 0]=-1"),
    Case("model_token_id_too_large",
         "token id 70 into `language_model(\"transformer\", 65, ...)` (eager call)",
         lambda: transformer_model()(ids([5, 70])),
         f"{TOKEN_RANGE} Received: inputs[0, 1]=70", in_model=True),
    Case("embedding_id_too_large",
         f"token id {VOCAB} into `TokenEmbedding({VOCAB}, 4)` (input_dim={VOCAB})",
         lambda: TokenEmbedding(VOCAB, 4)(ids([3, VOCAB])),
         f"{TOKEN_RANGE} Received: inputs[0, 1]={VOCAB}"),
    Case("embedding_id_negative", f"token id -1 into `TokenEmbedding({VOCAB}, 4)`",
         lambda: TokenEmbedding(VOCAB, 4)(ids([2, 0], [7, -1])),
         f"{TOKEN_RANGE} Received: inputs[1, 1]=-1"),
    Case("lstm_model_token_id_too_large",
         "token id 70 into `language_model(\"lstm\", 65, ...)` (eager call)",
         lambda: lstm_model()(ids([5, 70])),
         f"{TOKEN_RANGE} Received: inputs[0, 1]=70", in_model=True),
    Case("prompt_whitespace_word_level",
         "`keraseq.sampling.prompt_ids(vocabulary, \"  \\t \")` (whitespace only) with a "
         "word-level `keraseq.text.Vocabulary`",
         lambda: prompt_ids(Vocabulary(["to", "be"], level="word"), "  \t "),
         "`prompt` holds no token (a word-level vocabulary). Received: prompt='  \\t '"),
    # -- sizes and counts in constructors ------------------------------------------
    Case("simple_rnn_units_zero", "`SimpleRNN(units=0)`", lambda: SimpleRNN(0),
         "`units` must be a positive integer. Received: units=0"),
    Case("lstm_units_negative", "`LSTM(units=-1)`", lambda: LSTM(-1),
         "`units` must be a positive integer. Received: units=-1"),
    Case("lstm_units_float", "`LSTM(units=3.5)`", lambda: LSTM(3.5),
         "`units` must be a positive integer. Received: units=3.5"),
    Case("position_embedding_length_zero", "`PositionEmbedding(sequence_length=0)`",
         lambda: PositionEmbedding(0),
         "`sequence_length` must be a positive integer. Received: sequence_length=0"),
    Case("token_embedding_length_negative", "`TokenAndPositionEmbedding(65, -5, 4)`",
         lambda: TokenAndPositionEmbedding(VOCAB, -5, 4),
         "`sequence_length` must be a positive integer (None is only allowed with "
         "positional=\"sine\"). Received: sequence_length=-5"),
    Case("token_embedding_length_none_learned",
         "`TokenAndPositionEmbedding(65, None, 4)` (learned positions)",
         lambda: TokenAndPositionEmbedding(VOCAB, None, 4),
         "`sequence_length` must be a positive integer (None is only allowed with "
         "positional=\"sine\"). Received: sequence_length=None"),
    Case("token_embedding_vocabulary_zero", "`TokenAndPositionEmbedding(0, 8, 4)`",
         lambda: TokenAndPositionEmbedding(0, 8, 4),
         "`vocabulary_size` must be a positive integer. Received: vocabulary_size=0"),
    Case("attention_key_dim_zero", "`MultiHeadAttention(num_heads=2, key_dim=0)`",
         lambda: MultiHeadAttention(2, 0),
         "`key_dim` must be a positive integer. Received: key_dim=0"),
    Case("attention_num_heads_zero", "`MultiHeadAttention(num_heads=0, key_dim=2)`",
         lambda: MultiHeadAttention(0, 2),
         "`num_heads` must be a positive integer. Received: num_heads=0"),
    Case("transformer_num_heads_negative", "`TransformerBlock(num_heads=-1, intermediate_dim=8)`",
         lambda: TransformerBlock(-1, 8),
         "`num_heads` must be a positive integer. Received: num_heads=-1"),
    Case("transformer_intermediate_dim_zero", "`TransformerBlock(2, intermediate_dim=0)`",
         lambda: TransformerBlock(2, 0),
         "`intermediate_dim` must be a positive integer. Received: intermediate_dim=0"),
    Case("transformer_heads_not_dividing", "`TransformerBlock(num_heads=3, ...)` on width 4",
         lambda: TransformerBlock(3, 8)(X),
         "With `key_dim=None` the hidden size must be a multiple of `num_heads` "
         "(key_dim = hidden_dim // num_heads). Received: key_dim=None, num_heads=3, "
         "hidden_dim=4"),
    Case("model_heads_not_dividing", "`language_model(\"transformer\", 65, units=10, num_heads=3)`",
         lambda: language_model("transformer", VOCAB, units=10, num_heads=3),
         "`units` must be divisible by `num_heads`. Received: units=10, num_heads=3"),
    Case("model_unknown_architecture", "`language_model(\"gru\", 65)`",
         lambda: language_model("gru", VOCAB),
         "`architecture` must be one of ('lstm', 'rnn', 'transformer'). "
         "Received: architecture='gru'"),
    Case("model_vocabulary_size_zero", "`language_model(\"lstm\", 0)`",
         lambda: language_model("lstm", 0),
         "`vocabulary_size` must be a positive integer. Received: vocabulary_size=0"),
    # -- activations and dropout rates -------------------------------------------------
    Case("simple_rnn_unknown_activation", "`SimpleRNN(3, activation=\"tanhh\")`",
         lambda: SimpleRNN(3, activation="tanhh"),
         "`activation` could not be interpreted. Received: activation='tanhh' "
         "(Could not interpret activation function identifier: tanhh)"),
    Case("lstm_unknown_recurrent_activation", "`LSTM(3, recurrent_activation=\"nope\")`",
         lambda: LSTM(3, recurrent_activation="nope"),
         "`recurrent_activation` could not be interpreted. Received: "
         "recurrent_activation='nope' (Could not interpret activation function "
         "identifier: nope)"),
    Case("transformer_unknown_activation", "`TransformerBlock(2, 8, activation=\"gelux\")`",
         lambda: TransformerBlock(2, 8, activation="gelux"),
         "`activation` could not be interpreted. Received: activation='gelux' "
         "(Could not interpret activation function identifier: gelux)"),
    Case("lstm_dropout_one", "`LSTM(3, dropout=1.0)`", lambda: LSTM(3, dropout=1.0),
         "`dropout` must be a float in [0, 1). Received: dropout=1.0"),
    Case("simple_rnn_recurrent_dropout_negative", "`SimpleRNN(3, recurrent_dropout=-0.1)`",
         lambda: SimpleRNN(3, recurrent_dropout=-0.1),
         "`recurrent_dropout` must be a float in [0, 1). Received: recurrent_dropout=-0.1"),
    Case("attention_dropout_above_one", "`MultiHeadAttention(2, 2, dropout=1.5)`",
         lambda: MultiHeadAttention(2, 2, dropout=1.5),
         "`dropout` must be a float in [0, 1). Received: dropout=1.5"),
    Case("model_dropout_one", "`language_model(\"lstm\", 65, dropout=1)`",
         lambda: language_model("lstm", VOCAB, dropout=1),
         "`dropout` must be a float in [0, 1). Received: dropout=1"),
    # -- masks -------------------------------------------------------------------------
    Case("rnn_mask_shape", "`SimpleRNN(3)` on (2, 5, 4) with a mask of shape (2, 4)",
         lambda: SimpleRNN(3)(X, mask=np.ones((2, 4), bool)),
         "`mask` must have shape (batch_size, sequence_length) = (2, 5). "
         "Received: mask.shape=(2, 4)"),
    Case("rnn_mask_rank_3", "`LSTM(3)` on (2, 5, 4) with a mask of shape (2, 5, 1)",
         lambda: LSTM(3)(X, mask=np.ones((2, 5, 1), bool)),
         "`mask` must have shape (batch_size, sequence_length) = (2, 5). "
         "Received: mask.shape=(2, 5, 1)"),
    Case("rnn_mask_float", "`SimpleRNN(3)` with a float32 mask",
         lambda: SimpleRNN(3)(X, mask=np.ones((2, 5), "float32")),
         "`mask` must be a boolean or integer tensor, True (or 1) where a time step is "
         "used. Received: mask with dtype=float32"),
    Case("rnn_mask_string", "`LSTM(3)` with a string mask",
         lambda: LSTM(3)(X, mask=np.full((2, 5), "y")),
         "`mask` must be a boolean or integer tensor, True (or 1) where a time step is "
         "used. Received: mask with dtype=string"),
    Case("attention_mask_shape", "`MultiHeadAttention` with an attention_mask of shape (2, 5, 4)",
         lambda: MultiHeadAttention(2, 2)(X, X, attention_mask=np.ones((2, 5, 4), bool)),
         "`attention_mask` must broadcast to (batch_size, target_length, source_length)="
         "(2, 5, 5). Received: attention_mask.shape=(2, 5, 4)"),
    Case("attention_mask_float", "`MultiHeadAttention` with an additive float attention_mask",
         lambda: MultiHeadAttention(2, 2)(
             X, X, attention_mask=np.where(np.tril(np.ones((5, 5))), 0.0, -np.inf)[None]),
         "`attention_mask` must be a boolean or integer tensor, True (or 1) where a query "
         "may attend to a key. Received: attention_mask with dtype=float64"),
    Case("attention_query_mask_shape", "`MultiHeadAttention` with a query_mask of shape (2, 4)",
         lambda: MultiHeadAttention(2, 2)(X, X, query_mask=np.ones((2, 4), bool)),
         "`query_mask` must have shape (batch_size, target_length) = (2, 5). "
         "Received: query_mask.shape=(2, 4)"),
    Case("attention_value_mask_broadcast",
         "`MultiHeadAttention` with a value_mask of shape (2, 1) (would broadcast)",
         lambda: MultiHeadAttention(2, 2)(X, X, value_mask=np.ones((2, 1), bool)),
         "`value_mask` must have shape (batch_size, source_length) = (2, 5). "
         "Received: value_mask.shape=(2, 1)"),
    Case("transformer_padding_mask_broadcast",
         "`TransformerBlock` with a padding_mask of shape (2, 1) (would broadcast)",
         lambda: TransformerBlock(2, 8)(X, padding_mask=np.ones((2, 1), bool)),
         "`padding_mask` must have shape (batch_size, sequence_length) = (2, 5). "
         "Received: padding_mask.shape=(2, 1)"),
    Case("transformer_padding_mask_float", "`TransformerBlock` with a float32 padding_mask",
         lambda: TransformerBlock(2, 8)(X, padding_mask=np.ones((2, 5), "float32")),
         "`padding_mask` must be a boolean or integer tensor, True (or 1) where a token is "
         "real (not padding). Received: padding_mask with dtype=float32"),
    # -- initial states ------------------------------------------------------------------
    Case("lstm_initial_state_count", "`LSTM(3)` with one initial state instead of [h, c]",
         lambda: LSTM(3)(X, initial_state=[np.zeros((2, 3), "float32")]),
         f"{LSTM_STATES} Received: 1 with shape(s) (2, 3)"),
    Case("lstm_initial_state_width", "`LSTM(3)` with initial states of width 4",
         lambda: LSTM(3)(X, initial_state=[np.zeros((2, 4), "float32")] * 2),
         f"{LSTM_STATES} Received: 2 with shape(s) (2, 4), (2, 4)"),
    Case("simple_rnn_initial_state_batch", "`SimpleRNN(3)` on batch 2 with a state of batch 3",
         lambda: SimpleRNN(3)(X, initial_state=[np.zeros((3, 3), "float32")]),
         "`initial_state` must be 1 tensor(s) of shape(s) (2, 3) (batch_size, units). "
         "Received: 1 with shape(s) (3, 3)"),
    # -- lengths and start_index ------------------------------------------------------------
    Case("position_embedding_start_beyond",
         "`PositionEmbedding(8)` on length 5 with `start_index=4`",
         lambda: PositionEmbedding(8, name="positions")(X, start_index=4),
         "The input sequence length (5) starting at start_index=4 exceeds the "
         "`sequence_length` of `positions` (8): input length + start_index must be <= "
         "sequence_length=8. Received: inputs.shape=(2, 5, 4)"),
    Case("token_embedding_start_beyond",
         "`TokenAndPositionEmbedding(65, 8, 4)` on length 5 with `start_index=4`",
         lambda: tpe()(ids([1, 2, 3, 4, 5]), start_index=4),
         "The input sequence length (5) starting at start_index=4 exceeds the "
         "`sequence_length` of `tpe` (8): input length + start_index must be <= "
         "sequence_length=8. Received: inputs.shape=(1, 5)"),
    Case("token_embedding_too_long", "`TokenAndPositionEmbedding(65, 8, 4)` on length 9",
         lambda: tpe()(np.ones((1, 9), "int32")),
         "The input sequence length (9) exceeds the `sequence_length` of `tpe` (8): "
         "input length + start_index must be <= sequence_length=8. "
         "Received: inputs.shape=(1, 9)"),
    Case("position_embedding_start_negative", "`PositionEmbedding(8)` with `start_index=-1`",
         lambda: PositionEmbedding(8)(X, start_index=-1),
         "`start_index` must be non-negative. Received: start_index=-1"),
    Case("token_embedding_start_float", "`TokenAndPositionEmbedding` with `start_index=1.5`",
         lambda: tpe()(ids([1, 2]), start_index=1.5),
         "`start_index` must be a non-negative integer or an integer scalar tensor. "
         "Received: start_index=1.5"),
]


def keras_context_removed(message, name):
    """The message inside Keras's "Exception encountered when calling <name>" context."""
    prefix = f"Exception encountered when calling {name}.\n\n"
    assert message.startswith(prefix), message[:200]
    return re.match(r"\x1b\[1m(.*?)\x1b\[0m\n", message[len(prefix):], re.S).group(1)


def test_case_ids_are_unique_and_enough():
    names = [case.id for case in CASES]
    assert len(set(names)) == len(names)
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case):
    with pytest.raises(ValueError) as info:
        case.run()
    message = str(info.value)
    if case.in_model:
        message = keras_context_removed(message, "Functional.call()")
    assert message == case.message
    assert "\n" not in message


def test_docs_list_every_case():
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Library", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    for case in CASES:
        matching = [row for row in rows if row.startswith(f"| `{case.id}` |")]
        assert len(matching) == 1, case.id
        assert f"`` {case.message} ``" in matching[0], case.id
    assert len(rows) == len(CASES) + 1  # the header row, then one row per case


# ---------------------------------------------------------------- still accepted


def test_token_ids_of_any_integer_dtype_and_the_boundary_ids():
    layer = tpe(positional="sine")
    table = None
    for dtype in ("int32", "int64", "uint8", "int16"):
        tokens = np.array([[0, VOCAB - 1, 7]], dtype)
        outputs = ops.convert_to_numpy(layer(tokens))
        if table is None:
            table = ops.convert_to_numpy(layer.token_embedding.embeddings)
            sines = ops.convert_to_numpy(SinePositionEncoding()(np.zeros((1, 3, 4), "float32")))
        np.testing.assert_allclose(outputs, table[tokens.astype(int)] + sines, atol=ATOL)


def test_integer_masks_equal_boolean_masks():
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]])
    rnn = LSTM(3, return_sequences=True)
    np.testing.assert_allclose(ops.convert_to_numpy(rnn(X, mask=mask.astype("int32"))),
                               ops.convert_to_numpy(rnn(X, mask=mask.astype(bool))), atol=ATOL)
    attention = MultiHeadAttention(2, 2)
    causal = np.tril(np.ones((1, 5, 5), "int8"))
    np.testing.assert_allclose(
        ops.convert_to_numpy(attention(X, X, attention_mask=causal, value_mask=mask)),
        ops.convert_to_numpy(attention(X, X, use_causal_mask=True, value_mask=mask.astype(bool))),
        atol=ATOL)
    block = TransformerBlock(2, 8)
    np.testing.assert_allclose(
        ops.convert_to_numpy(block(X, padding_mask=mask.astype("int64"))),
        ops.convert_to_numpy(block(X, padding_mask=mask.astype(bool))), atol=ATOL)


def test_token_ids_checked_in_torch_training_not_in_compiled_steps():
    """PyTorch runs `fit` eagerly, so the ids are checked there too; TensorFlow
    and JAX compile the step, where ids have no values (documented)."""
    model = keras.Sequential([keras.Input((None,), dtype="int32"), tpe(positional="sine"),
                              keras.layers.Dense(VOCAB)])
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    good = np.array([[1, 2, 3]], "int32")
    history = model.fit(good, good, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    bad = np.array([[1, 2, 70]], "int32")
    if BACKEND == "torch":
        with pytest.raises(ValueError) as info:
            model.fit(bad, good, epochs=1, verbose=0)
        message = keras_context_removed(str(info.value), "Sequential.call()")
        assert message == f"{TOKEN_RANGE} Received: inputs[0, 2]=70"


# ---------------------------------------------------------------- has_values


class _Probe(keras.layers.Layer):
    """Records `has_values` of its input at every call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, inputs):
        self.seen.append(_fast_path.has_values(inputs))
        return inputs


def test_has_values_eager_symbolic_and_compiled():
    assert _fast_path.has_values(np.zeros(2))
    assert _fast_path.has_values(ops.ones((2,)))
    assert not _fast_path.has_values(keras.KerasTensor((2, 3)))
    # One predicate per backend, built once.
    assert _fast_path._traced_test(BACKEND) is _fast_path._traced_test(BACKEND)

    probe = _Probe()
    inputs = keras.Input((3,))
    model = keras.Model(inputs, probe(inputs))  # shape inference, no values
    model(np.zeros((1, 3), "float32"))  # eager
    model.predict(np.zeros((1, 3), "float32"), verbose=0)  # compiled on TF and JAX
    assert probe.seen[-2] is True
    assert probe.seen[-1] is (BACKEND == "torch")


def test_has_values_under_the_backend_tracers():
    seen = []

    def record(x):
        seen.append(_fast_path.has_values(x))
        return x

    if BACKEND == "tensorflow":
        import tensorflow as tf

        tf.function(record)(tf.zeros(2))
    elif BACKEND == "jax":
        import jax

        jax.jit(record)(np.zeros(2, "float32"))
    else:
        import torch

        torch.jit.trace(record, torch.zeros(2), check_trace=False)
        seen.append(_fast_path.has_values(torch.zeros(2, device="meta")))
    assert seen and not any(seen)


def test_id_range_fast_path_equals_keras_ops():
    tokens = ops.convert_to_tensor(np.array([[5, 0, 64], [-3, 7, 70]], "int32"))
    assert _fast_path.id_range(tokens) == (-3, 70)
    with _fast_path.enabled(False):  # keras.ops reductions on every backend
        assert _fast_path.id_range(tokens) == (-3, 70)
