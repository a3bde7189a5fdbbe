"""Tests for keraseq.layers.positional and keraseq.layers.embeddings against numpy closed forms and table lookups."""

import keras
import numpy as np
import pytest
from keras import ops

from conftest import BACKEND
from keraseq.layers import embeddings, positional
from keraseq.layers.embeddings import TokenAndPositionEmbedding, TokenEmbedding
from keraseq.layers.positional import PositionEmbedding, SinePositionEncoding

ATOL = 1e-5  # float32


def np_(x):
    return ops.convert_to_numpy(x)


def sine_reference(length, hidden_dim, start_index=0, max_wavelength=10000.0):
    """Vaswani et al. (2017) encoding, interleaved sin/cos, float64 loops."""
    out = np.zeros((length, hidden_dim), dtype=np.float64)
    for p in range(length):
        position = p + start_index
        for j in range(hidden_dim):
            i = j // 2
            angle = position / (max_wavelength ** (2.0 * i / hidden_dim))
            out[p, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return out


# ---------------------------------------------------------------- SinePositionEncoding


@pytest.mark.parametrize(
    "length, hidden_dim, start_index",
    [(1, 4, 0), (7, 5, 0), (50, 16, 0), (50, 16, 13), (3000, 64, 0), (3000, 7, 0), (20, 32, 4090)],
)
def test_sine_matches_closed_form(rng, length, hidden_dim, start_index):
    inputs = rng.normal(size=(2, length, hidden_dim)).astype("float32")
    layer = SinePositionEncoding()
    outputs = np_(layer(inputs, start_index=start_index))
    expected = sine_reference(length, hidden_dim, start_index)
    assert outputs.shape == (2, length, hidden_dim)
    assert outputs.dtype == np.float32
    np.testing.assert_allclose(outputs[0], expected, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(outputs[0], outputs[1])  # broadcast over batch


def test_sine_far_positions_and_max_wavelength():
    # Positions around 10**6 and a short max_wavelength: still float64-accurate.
    layer = SinePositionEncoding(max_wavelength=100)
    outputs = np_(layer(np.zeros((1, 6, 10), "float32"), start_index=1_000_000))
    expected = sine_reference(6, 10, 1_000_000, max_wavelength=100.0)
    np.testing.assert_allclose(outputs[0], expected, rtol=0, atol=ATOL)


def test_sine_ignores_input_values_and_is_not_added(rng):
    layer = SinePositionEncoding()
    a = np_(layer(rng.normal(size=(1, 9, 6)).astype("float32")))
    b = np_(layer(np.zeros((1, 9, 6), "float32")))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(b[0], sine_reference(9, 6), rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "length, hidden_dim, start_index", [(5, 8, 21), (3000, 7, 0), (40, 64, 100_000)]
)
def test_sine_tensor_start_index_uses_traced_path(length, hidden_dim, start_index):
    # A tensor `start_index` takes the keras.ops path (exact float32 phase
    # reduction) instead of the numpy table; both must match float64.
    layer = SinePositionEncoding()
    inputs = np.zeros((1, length, hidden_dim), "float32")
    traced = np_(layer(inputs, start_index=ops.convert_to_tensor(start_index, "int32")))
    expected = sine_reference(length, hidden_dim, start_index)
    np.testing.assert_allclose(traced[0], expected, rtol=0, atol=ATOL)
    static = np_(layer(inputs, start_index=start_index))
    np.testing.assert_allclose(traced, static, rtol=0, atol=2e-6)


def test_sine_dynamic_length_in_compiled_model(rng):
    inputs = keras.Input(shape=(None, 12))
    model = keras.Model(inputs, inputs + SinePositionEncoding()(inputs))
    for length in (3, 40, 257):
        x = rng.normal(size=(2, length, 12)).astype("float32")
        y = model.predict(x, verbose=0)  # compiled (tf.function / jax.jit) path
        np.testing.assert_allclose(y, x + sine_reference(length, 12)[None], rtol=0, atol=ATOL)


def test_sine_compute_output_shape():
    layer = SinePositionEncoding()
    assert layer.compute_output_shape((None, None, 8)) == (None, None, 8)
    assert keras.Input(shape=(None, 8)).shape == (None, None, 8)
    assert layer(keras.Input(shape=(None, 8))).shape == (None, None, 8)


def test_sine_passes_mask_through():
    token_ids = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(10, 4, mask_zero=True)(token_ids)
    # keras.layers.Add merges masks; a plain `+` on Keras tensors drops them.
    x = keras.layers.Add()([x, SinePositionEncoding()(x)])
    pooled = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(token_ids, [x, pooled])
    ids = np.array([[3, 5, 0, 0]], "int32")
    full, pooled_values = model(ids)
    full = np_(full)
    np.testing.assert_allclose(np_(pooled_values)[0], full[0, :2].mean(0), rtol=0, atol=ATOL)


# Bad values are looped inside one test each: every test costs a
# `clear_session()` in conftest's teardown (~0.8 s on torch).
def test_sine_bad_max_wavelength():
    for bad in [0, -1, -0.5, "10000", True, None, float("inf")]:
        with pytest.raises(ValueError, match=r"`max_wavelength`.*Received: max_wavelength="):
            SinePositionEncoding(max_wavelength=bad)


def test_sine_bad_input_rank():
    for shape in [(2, 8), (2, 3, 4, 5)]:
        with pytest.raises(ValueError, match=r"inputs.*rank 3"):
            SinePositionEncoding()(np.zeros(shape, "float32"))
    with pytest.raises(ValueError, match="rank 3"):
        SinePositionEncoding().compute_output_shape((None, 4))


def test_sine_config_round_trip():
    layer = SinePositionEncoding(max_wavelength=500, name="pe")
    config = layer.get_config()
    assert config["max_wavelength"] == 500
    clone = SinePositionEncoding.from_config(config)
    x = np.zeros((1, 11, 6), "float32")
    np.testing.assert_array_equal(np_(layer(x)), np_(clone(x)))
    np.testing.assert_allclose(
        np_(clone(x))[0], sine_reference(11, 6, max_wavelength=500.0), rtol=0, atol=ATOL
    )


def test_sine_keras_file_round_trip(tmp_path, rng):
    inputs = keras.Input(shape=(None, 6))
    x = inputs + SinePositionEncoding(max_wavelength=321)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    data = rng.normal(size=(2, 9, 6)).astype("float32")
    path = tmp_path / "sine.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(data, verbose=0), model.predict(data, verbose=0), atol=ATOL
    )
    assert loaded.layers[1].max_wavelength == 321


@pytest.mark.parametrize("policy, tolerance", [("mixed_float16", 1e-3), ("mixed_bfloat16", 8e-3)])
def test_sine_mixed_precision(policy, tolerance):
    # Tolerance: half an ulp of the low-precision type near 1 (2**-11, 2**-8).
    keras.config.set_dtype_policy(policy)
    layer = SinePositionEncoding()
    outputs = layer(np.zeros((2, 300, 10), "float32"))
    assert keras.backend.standardize_dtype(outputs.dtype) == policy.split("_")[1]
    outputs = np_(ops.cast(outputs, "float32"))
    assert np.isfinite(outputs).all()
    np.testing.assert_allclose(outputs[0], sine_reference(300, 10), rtol=0, atol=tolerance)


def test_sine_fit_step(rng):
    inputs = keras.Input(shape=(5, 4))
    x = keras.layers.Dense(4, name="proj")(inputs)
    x = x + SinePositionEncoding()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np_(w) for w in model.get_layer("proj").weights]
    history = model.fit(
        rng.normal(size=(8, 5, 4)).astype("float32"),
        rng.normal(size=(8, 5, 1)).astype("float32"),
        epochs=1,
        batch_size=8,
        verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])
    after = [np_(w) for w in model.get_layer("proj").weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


# ---------------------------------------------------------------- PositionEmbedding


def test_position_embedding_returns_table_rows(rng):
    layer = PositionEmbedding(sequence_length=10)
    inputs = rng.normal(size=(3, 6, 4)).astype("float32")
    outputs = np_(layer(inputs))
    assert [w.path.split("/")[-1] for w in layer.weights] == ["embeddings"]
    table = np_(layer.embeddings)
    assert table.shape == (10, 4)
    for b in range(3):
        np.testing.assert_array_equal(outputs[b], table[:6])
    shifted = np_(layer(inputs, start_index=4))
    np.testing.assert_array_equal(shifted[1], table[4:10])
    tensor_start = np_(layer(inputs[:, :3], start_index=ops.convert_to_tensor(2)))
    np.testing.assert_array_equal(tensor_start[0], table[2:5])


def test_position_embedding_initializer():
    layer = PositionEmbedding(sequence_length=4, initializer=keras.initializers.Constant(0.25))
    outputs = np_(layer(np.zeros((1, 3, 2), "float32")))
    np.testing.assert_array_equal(outputs, np.full((1, 3, 2), 0.25, "float32"))


def test_position_embedding_dynamic_length_in_compiled_model(rng):
    layer = PositionEmbedding(sequence_length=16)
    inputs = keras.Input(shape=(None, 5))
    model = keras.Model(inputs, inputs + layer(inputs))
    table = np_(layer.embeddings)
    for length in (1, 7, 16):
        x = rng.normal(size=(2, length, 5)).astype("float32")
        np.testing.assert_allclose(model.predict(x, verbose=0), x + table[None, :length], atol=ATOL)


def test_position_embedding_too_long_raises():
    layer = PositionEmbedding(sequence_length=8)
    with pytest.raises(ValueError, match=r"\(9\).*sequence_length.*\(8\)"):
        layer(np.zeros((1, 9, 4), "float32"))  # at build
    layer(np.zeros((1, 8, 4), "float32"))
    with pytest.raises(ValueError, match=r"\(9\).*sequence_length.*\(8\)"):
        layer(np.zeros((1, 9, 4), "float32"))  # at call
    with pytest.raises(ValueError, match=r"start_index=3.*\(8\)"):
        layer(np.zeros((1, 6, 4), "float32"), start_index=3)
    with pytest.raises(ValueError, match=r"\(12\).*\(8\)"):
        layer.compute_output_shape((None, 12, 4))
    with pytest.raises(ValueError, match=r"\(12\).*\(8\)"):
        PositionEmbedding(sequence_length=8)(keras.Input(shape=(12, 4)))
    with pytest.raises(ValueError, match="start_index"):
        layer(np.zeros((1, 2, 4), "float32"), start_index=-1)


def test_position_embedding_bad_sequence_length():
    for bad in [0, -3, 2.5, "10", True, None]:
        with pytest.raises(ValueError, match=r"`sequence_length`.*Received: sequence_length="):
            PositionEmbedding(sequence_length=bad)


def test_position_embedding_bad_input_rank():
    for shape in [(2, 8), (2, 3, 4, 5)]:
        with pytest.raises(ValueError, match=r"inputs.*rank 3"):
            PositionEmbedding(sequence_length=8)(np.zeros(shape, "float32"))


def test_position_embedding_config_round_trip(rng):
    layer = PositionEmbedding(sequence_length=7, initializer="he_normal", name="pos")
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    expected = np_(layer(x))
    config = layer.get_config()
    assert config["sequence_length"] == 7
    assert keras.initializers.deserialize(config["initializer"]).__class__.__name__ == "HeNormal"
    clone = PositionEmbedding.from_config(config)
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np_(clone(x)), expected)


def test_position_embedding_keras_file_round_trip(tmp_path, rng):
    inputs = keras.Input(shape=(None, 4))
    x = inputs + PositionEmbedding(sequence_length=12)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    data = rng.normal(size=(3, 10, 4)).astype("float32")
    path = tmp_path / "position.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(data, verbose=0), model.predict(data, verbose=0), atol=ATOL
    )
    np.testing.assert_array_equal(np_(loaded.layers[1].embeddings), np_(model.layers[1].embeddings))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_position_embedding_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    layer = PositionEmbedding(sequence_length=6)
    outputs = layer(np.zeros((2, 4, 3), "float32"))
    assert keras.backend.standardize_dtype(outputs.dtype) == policy.split("_")[1]
    assert keras.backend.standardize_dtype(layer.embeddings.dtype) == "float32"
    outputs = np_(ops.cast(outputs, "float32"))
    assert np.isfinite(outputs).all()
    table = np_(layer.embeddings)
    np.testing.assert_allclose(outputs[0], table[:4], rtol=1e-2, atol=0)


def test_position_embedding_fit_step_updates_used_rows(rng):
    # loss = mean((x + P[:4] - y)**2) over all elements, so one SGD step gives
    # P[t] -= lr * sum_b 2 * (x + P[t] - y)[b, t] / (B * T * d) for t < 4 only.
    layer = PositionEmbedding(sequence_length=10)
    inputs = keras.Input(shape=(4, 3))
    model = keras.Model(inputs, inputs + layer(inputs))
    lr = 0.5
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    x = rng.normal(size=(8, 4, 3)).astype("float32")
    y = rng.normal(size=(8, 4, 3)).astype("float32")
    table = np_(layer.embeddings).astype(np.float64)
    residual = x + table[None, :4] - y
    expected = table.copy()
    expected[:4] -= lr * 2.0 * residual.sum(0) / residual.size
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_allclose(np_(layer.embeddings), expected, rtol=0, atol=ATOL)


# ---------------------------------------------------------------- TokenAndPositionEmbedding


def test_token_and_position_learned_values(rng):
    layer = TokenAndPositionEmbedding(vocabulary_size=11, sequence_length=9, embedding_dim=6)
    ids = rng.integers(0, 11, size=(3, 7)).astype("int32")
    outputs = np_(layer(ids))
    token_table = np_(layer.token_embedding.embeddings)
    position_table = np_(layer.position_embedding.embeddings)
    assert token_table.shape == (11, 6) and position_table.shape == (9, 6)
    expected = token_table[ids] + position_table[None, :7]
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=ATOL)
    shifted = np_(layer(ids[:, :4], start_index=5))
    np.testing.assert_allclose(
        shifted, token_table[ids[:, :4]] + position_table[None, 5:9], rtol=0, atol=ATOL
    )


@pytest.mark.parametrize("sequence_length", [None, 8])
def test_token_and_position_sine_values_any_length(rng, sequence_length):
    layer = TokenAndPositionEmbedding(
        vocabulary_size=20, sequence_length=sequence_length, embedding_dim=7, positional="sine"
    )
    ids = rng.integers(0, 20, size=(2, 30)).astype("int32")  # longer than sequence_length
    outputs = np_(layer(ids))
    token_table = np_(layer.token_embedding.embeddings)
    np.testing.assert_allclose(
        outputs, token_table[ids] + sine_reference(30, 7)[None], rtol=0, atol=ATOL
    )
    assert len(layer.weights) == 1  # only the token table


def test_token_and_position_mask(rng):
    layer = TokenAndPositionEmbedding(5, 6, 4, mask_zero=True)
    ids = np.array([[1, 2, 0, 0], [3, 0, 4, 0]], "int32")
    np.testing.assert_array_equal(np_(layer.compute_mask(ids)), ids != 0)
    unmasked = TokenAndPositionEmbedding(5, 6, 4)
    assert unmasked.compute_mask(ids) is None
    # The mask reaches downstream layers in a functional model.
    token_ids = keras.Input(shape=(None,), dtype="int32")
    embedded = layer(token_ids)
    model = keras.Model(token_ids, [embedded, keras.layers.GlobalAveragePooling1D()(embedded)])
    full, pooled = model(ids)
    full, pooled = np_(full), np_(pooled)
    np.testing.assert_allclose(pooled[0], full[0, :2].mean(0), rtol=0, atol=ATOL)
    np.testing.assert_allclose(pooled[1], full[1, [0, 2]].mean(0), rtol=0, atol=ATOL)


def test_token_and_position_too_long_raises():
    layer = TokenAndPositionEmbedding(5, 4, 3)
    with pytest.raises(ValueError, match=r"\(6\).*sequence_length.*\(4\)"):
        layer(np.zeros((1, 6), "int32"))
    with pytest.raises(ValueError, match=r"\(6\).*\(4\)"):
        layer.compute_output_shape((None, 6))


BAD_TOKEN_AND_POSITION_ARGUMENTS = [
    ({"vocabulary_size": 0}, "vocabulary_size"),
    ({"vocabulary_size": -2}, "vocabulary_size"),
    ({"vocabulary_size": 3.0}, "vocabulary_size"),
    ({"sequence_length": 0}, "sequence_length"),
    ({"sequence_length": "8"}, "sequence_length"),
    ({"sequence_length": None}, "sequence_length"),  # learned needs a length
    ({"embedding_dim": 0}, "embedding_dim"),
    ({"embedding_dim": 2.5}, "embedding_dim"),
    ({"embedding_dim": True}, "embedding_dim"),
    ({"positional": "rotary"}, "positional"),
    ({"positional": None}, "positional"),
    ({"mask_zero": "yes"}, "mask_zero"),
    ({"positional": "sine", "sequence_length": -1}, "sequence_length"),
]


def test_token_and_position_bad_arguments():
    for kwargs, argument in BAD_TOKEN_AND_POSITION_ARGUMENTS:
        arguments = {"vocabulary_size": 10, "sequence_length": 8, "embedding_dim": 4, **kwargs}
        with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
            TokenAndPositionEmbedding(**arguments)


def test_token_and_position_bad_input_rank():
    for shape in [(4,), (2, 3, 4)]:
        with pytest.raises(ValueError, match=r"inputs.*rank 2"):
            TokenAndPositionEmbedding(10, 8, 4)(np.zeros(shape, "int32"))


@pytest.mark.parametrize("positional", ["learned", "sine"])
def test_token_and_position_config_round_trip(rng, positional):
    layer = TokenAndPositionEmbedding(
        12, 8, 5, mask_zero=True, positional=positional, embeddings_initializer="glorot_uniform"
    )
    ids = rng.integers(0, 12, size=(2, 8)).astype("int32")
    expected = np_(layer(ids))
    config = layer.get_config()
    assert {k: config[k] for k in ("vocabulary_size", "sequence_length", "embedding_dim")} == {
        "vocabulary_size": 12,
        "sequence_length": 8,
        "embedding_dim": 5,
    }
    assert config["mask_zero"] is True and config["positional"] == positional
    clone = TokenAndPositionEmbedding.from_config(config)
    clone.build(ids.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np_(clone(ids)), expected)


@pytest.mark.parametrize("positional", ["learned", "sine"])
def test_token_and_position_keras_file_round_trip(tmp_path, rng, positional):
    token_ids = keras.Input(shape=(None,), dtype="int32")
    x = TokenAndPositionEmbedding(15, 10, 6, mask_zero=True, positional=positional)(token_ids)
    x = keras.layers.GlobalAveragePooling1D()(x)  # uses the mask
    model = keras.Model(token_ids, keras.layers.Dense(3)(x))
    ids = rng.integers(0, 15, size=(4, 10)).astype("int32")
    ids[:, 7:] = 0
    path = tmp_path / f"tok_{positional}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(ids, verbose=0), model.predict(ids, verbose=0), atol=ATOL
    )
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("positional", ["learned", "sine"])
def test_token_and_position_mixed_precision(rng, policy, positional):
    keras.config.set_dtype_policy(policy)
    layer = TokenAndPositionEmbedding(9, 16, 8, positional=positional)
    ids = rng.integers(0, 9, size=(2, 16)).astype("int32")
    outputs = layer(ids)
    assert keras.backend.standardize_dtype(outputs.dtype) == policy.split("_")[1]
    outputs = np_(ops.cast(outputs, "float32"))
    assert np.isfinite(outputs).all()
    token_table = np_(layer.token_embedding.embeddings)
    if positional == "learned":
        position = np_(layer.position_embedding.embeddings)[:16]
    else:
        position = sine_reference(16, 8)
    # Half-precision rounding of each term and of the sum (values up to ~1.05).
    np.testing.assert_allclose(outputs, token_table[ids] + position[None], rtol=0, atol=2e-2)


def test_token_and_position_fit_step(rng):
    vocabulary_size, length = 12, 6
    token_ids = keras.Input(shape=(length,), dtype="int32")
    layer = TokenAndPositionEmbedding(vocabulary_size, length, 8)
    logits = keras.layers.Dense(vocabulary_size)(layer(token_ids))
    model = keras.Model(token_ids, logits)
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ids = rng.integers(1, 6, size=(4, length)).astype("int32")  # ids 6.. never used
    targets = rng.integers(0, vocabulary_size, size=(4, length)).astype("int32")
    before = np_(layer.token_embedding.embeddings).copy()
    history = model.fit(ids, targets, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = np_(layer.token_embedding.embeddings)
    used = np.unique(ids)
    assert not np.allclose(after[used], before[used])
    np.testing.assert_array_equal(after[6:], before[6:])  # unused rows get no gradient
    np.testing.assert_array_equal(after[0], before[0])


def test_bad_initializers_name_the_argument():
    with pytest.raises(ValueError, match="`initializer` could not be interpreted.*'nope'"):
        PositionEmbedding(4, initializer="nope")
    with pytest.raises(ValueError, match="`embeddings_initializer` could not be.*'bad'"):
        TokenAndPositionEmbedding(5, 4, 3, embeddings_initializer="bad")


# ---------------------------------------------------------------- TokenEmbedding


def keras_twin(layer, ids_shape):
    """A `keras.layers.Embedding` of `layer`'s config with `layer`'s weights."""
    twin = keras.layers.Embedding.from_config({**layer.get_config(), "name": "keras_twin"})
    twin.build(ids_shape)
    twin.set_weights(layer.get_weights())
    return twin


@pytest.mark.parametrize("dtype", ["int32", "int64", "int16", "uint8"])
def test_token_embedding_equals_keras_embedding(rng, dtype):
    layer = TokenEmbedding(11, 6, mask_zero=True, embeddings_initializer="glorot_uniform")
    ids = rng.integers(0, 11, size=(3, 7)).astype(dtype)
    ids[:, 0] = [0, 10, 5]  # both boundary ids
    outputs = np_(layer(ids))
    twin = keras_twin(layer, ids.shape)
    np.testing.assert_array_equal(outputs, np_(twin(ids)))
    table = np_(layer.embeddings)
    assert table.shape == (11, 6) and outputs.dtype == np.float32
    np.testing.assert_array_equal(outputs, table[ids.astype(int)])  # output[b, t] = table[x[b, t]]
    np.testing.assert_array_equal(np_(layer.compute_mask(ids)), np_(twin.compute_mask(ids)))
    np.testing.assert_array_equal(np_(layer.compute_mask(ids)), ids != 0)
    assert TokenEmbedding(11, 6).compute_mask(ids) is None
    assert isinstance(layer, keras.layers.Embedding)


@pytest.mark.parametrize("initializer", ["uniform", "glorot_uniform", "zeros"])
def test_token_embedding_draws_the_table_keras_draws(initializer):
    """After the same seed, the same initial table as `keras.layers.Embedding`
    (and the same draws after it), so swapping one for the other in a model
    changes no number of a seeded run."""
    tables = []
    for embedding_class in (TokenEmbedding, keras.layers.Embedding):
        keras.utils.set_random_seed(7)
        layer = embedding_class(13, 4, embeddings_initializer=initializer)
        layer.build((None, None))
        after = keras.layers.Dense(3)
        after.build((None, 4))
        tables.append([np_(layer.embeddings), np_(after.kernel)])
    for ours, theirs in zip(*tables):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_token_embedding_any_input_shape_as_keras(rng, shape):
    layer = TokenEmbedding(9, 3)
    ids = rng.integers(0, 9, size=shape).astype("int32")
    outputs = np_(layer(ids))
    np.testing.assert_array_equal(outputs, np_(layer.embeddings)[ids])
    assert layer.compute_output_shape(shape) == (*shape, 3) == outputs.shape
    symbolic = layer(keras.Input(shape[1:], dtype="int32"))
    assert tuple(symbolic.shape) == (None, *shape[1:], 3)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="sparse and ragged ids are TensorFlow's")
def test_token_embedding_sparse_and_ragged_ids_as_keras():
    import tensorflow as tf

    def dense(x):
        return np_(x.to_tensor() if isinstance(x, tf.RaggedTensor) else x)

    layer = TokenEmbedding(5, 2)
    layer.build((None, None))
    twin = keras_twin(layer, (None, None))
    table = np_(layer.embeddings)
    sparse = tf.SparseTensor(indices=[[0, 0], [1, 2]], values=tf.constant([1, 3]),
                             dense_shape=[2, 3])
    ragged = tf.ragged.constant([[1, 2], [4]])
    for ids in (sparse, ragged):
        np.testing.assert_array_equal(dense(layer(ids)), dense(twin(ids)))
    np.testing.assert_array_equal(dense(layer(sparse))[1, 2], table[3])
    np.testing.assert_array_equal(dense(layer(ragged))[1, 0], table[4])
    with pytest.raises(ValueError, match=r"`inputs.values` must be token ids in \[0, 5\) .*"
                       r"Received: inputs.values\[1\]=7"):
        layer(tf.SparseTensor(indices=[[0, 0], [1, 2]], values=tf.constant([1, 7]),
                              dense_shape=[2, 3]))
    with pytest.raises(ValueError, match=r"Received: inputs\[1, 0\]=5"):
        layer(tf.ragged.constant([[1, 2], [5]]))


def test_token_embedding_mask_reaches_downstream_layers_as_in_keras(rng):
    ids = np.array([[1, 2, 0, 0], [3, 0, 4, 0]], "int32")

    def model_with(embedding):
        token_ids = keras.Input(shape=(None,), dtype="int32")
        pooled = keras.layers.GlobalAveragePooling1D()(embedding(token_ids))  # uses the mask
        return keras.Model(token_ids, pooled)

    layer = TokenEmbedding(5, 4, mask_zero=True)
    ours = np_(model_with(layer)(ids))
    theirs = np_(model_with(keras_twin(layer, ids.shape))(ids))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL)
    table = np_(layer.embeddings)
    np.testing.assert_allclose(ours[0], table[[1, 2]].mean(0), rtol=0, atol=ATOL)
    np.testing.assert_allclose(ours[1], table[[3, 4]].mean(0), rtol=0, atol=ATOL)


BAD_TOKEN_EMBEDDING_ARGUMENTS = [
    ({"input_dim": 0}, "input_dim"),
    ({"input_dim": -3}, "input_dim"),
    ({"input_dim": 2.5}, "input_dim"),
    ({"input_dim": True}, "input_dim"),
    ({"input_dim": "8"}, "input_dim"),
    ({"output_dim": 0}, "output_dim"),
    ({"output_dim": None}, "output_dim"),
    ({"mask_zero": "yes"}, "mask_zero"),
    ({"mask_zero": 1}, "mask_zero"),
    ({"embeddings_initializer": "nope"}, "embeddings_initializer"),
    ({"embeddings_regularizer": "l3"}, "embeddings_regularizer"),
    ({"embeddings_constraint": "tight"}, "embeddings_constraint"),
    ({"lora_rank": 0}, "lora_rank"),
    ({"lora_rank": 1.5}, "lora_rank"),
    ({"lora_alpha": -1.0}, "lora_alpha"),
    ({"lora_alpha": "big"}, "lora_alpha"),
]


@pytest.mark.parametrize("kwargs, argument", BAD_TOKEN_EMBEDDING_ARGUMENTS,
                         ids=[f"{a}={list(k.values())[0]!r}" for k, a in
                              BAD_TOKEN_EMBEDDING_ARGUMENTS])
def test_token_embedding_bad_arguments(kwargs, argument):
    arguments = {"input_dim": 10, "output_dim": 4, **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        TokenEmbedding(**arguments)


def test_token_embedding_bad_ids():
    layer = TokenEmbedding(6, 2, name="emb")
    cases = [
        (np.array([[1.0, 2.0]], "float32"), "must be integer token ids. Received: inputs with "
         "dtype=float32"),
        (keras.Input((None,), dtype="float32"), "dtype=float32"),  # symbolic: dtype only
        (np.array([["a"]]), "dtype=string"),
        (np.array([[True, False]]), "dtype=bool"),
        (np.array([[0, 5], [6, 1]], "int32"), r"in \[0, 6\) .*Received: inputs\[1, 0\]=6"),
        (np.array([[0, -2]], "int64"), r"in \[0, 6\) .*Received: inputs\[0, 1\]=-2"),
        (ops.convert_to_tensor(np.array([[9]], "int32")), r"Received: inputs\[0, 0\]=9"),
    ]
    for ids, message in cases:
        with pytest.raises(ValueError, match=message):
            layer(ids)
    # An out-of-range id inside a symbolic model is only known at call time.
    outputs = layer(keras.Input((None,), dtype="int32"))
    assert tuple(outputs.shape) == (None, None, 2)


def test_token_embedding_ids_in_compiled_steps_per_backend():
    """What the docstring says happens where ids have no values (TensorFlow
    and JAX compile `predict`); PyTorch runs it eagerly, so it checks."""
    token_ids = keras.Input((None,), dtype="int32")
    layer = TokenEmbedding(5, 2)
    model = keras.Model(token_ids, layer(token_ids))
    table = np_(layer.embeddings)
    too_large, negative = np.array([[1, 7]], "int32"), np.array([[-1, 2]], "int32")
    if BACKEND == "torch":
        for ids in (too_large, negative):
            with pytest.raises(ValueError, match="must be token ids in"):
                model.predict(ids, verbose=0)
        return
    np.testing.assert_array_equal(model.predict(negative, verbose=0)[0], table[[4, 2]])
    if BACKEND == "jax":
        outputs = model.predict(too_large, verbose=0)[0]
        np.testing.assert_array_equal(outputs[0], table[1])
        assert np.isnan(outputs[1]).all()
    else:
        with pytest.raises(Exception) as info:
            model.predict(too_large, verbose=0)
        assert type(info.value).__name__ == "InvalidArgumentError"


def test_token_embedding_config_round_trip(rng):
    layer = TokenEmbedding(12, 5, mask_zero=True, embeddings_initializer="glorot_uniform",
                           embeddings_regularizer="l2", name="tok")
    ids = rng.integers(0, 12, size=(2, 8)).astype("int32")
    expected = np_(layer(ids))
    config = layer.get_config()
    assert {k: config[k] for k in ("input_dim", "output_dim", "mask_zero")} == {
        "input_dim": 12, "output_dim": 5, "mask_zero": True}
    # Keras's own config: the same keys as `keras.layers.Embedding` writes.
    assert config.keys() == keras.layers.Embedding(12, 5).get_config().keys()
    clone = TokenEmbedding.from_config(config)
    clone.build(ids.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np_(clone(ids)), expected)
    assert clone.get_config() == config


def test_token_embedding_keras_file_round_trip(tmp_path, rng):
    token_ids = keras.Input(shape=(None,), dtype="int32")
    x = TokenEmbedding(15, 6, mask_zero=True, name="tok")(token_ids)
    x = keras.layers.GlobalAveragePooling1D()(x)  # uses the mask
    model = keras.Model(token_ids, keras.layers.Dense(3)(x))
    ids = rng.integers(1, 15, size=(4, 10)).astype("int32")
    ids[:, 7:] = 0
    path = tmp_path / "token_embedding.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("tok")) is TokenEmbedding
    np.testing.assert_allclose(
        loaded.predict(ids, verbose=0), model.predict(ids, verbose=0), atol=ATOL
    )
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"Received: inputs\[0, 0\]=15"):
        loaded.get_layer("tok")(np.array([[15]], "int32"))


def test_models_saved_with_keras_embedding_still_load(tmp_path, rng):
    """Run directories written before TokenEmbedding hold Keras's Embedding."""
    from keraseq.layers import LSTM

    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(13, 4, name="embedding")(tokens)
    x = LSTM(5, return_sequences=True, name="lstm_0")(x)
    model = keras.Model(tokens, keras.layers.Dense(13, name="logits")(x))
    path = tmp_path / "old.keras"
    model.save(path)
    import keraseq

    loaded = keraseq.load_model(path)
    assert type(loaded.get_layer("embedding")) is keras.layers.Embedding
    ids = rng.integers(0, 13, size=(2, 6)).astype("int32")
    np.testing.assert_allclose(np_(loaded(ids)), np_(model(ids)), rtol=0, atol=ATOL)


@pytest.mark.parametrize("architecture", ["lstm", "rnn"])
def test_recurrent_language_models_use_token_embedding(architecture):
    from keraseq.models import language_model

    model = language_model(architecture, 7, units=4, embedding_dim=3)
    embedding = model.get_layer("embedding")
    assert type(embedding) is TokenEmbedding
    assert (embedding.input_dim, embedding.output_dim) == (7, 3)
    with pytest.raises(ValueError, match=r"Received: inputs\[0, 1\]=-1"):
        model(np.array([[2, -1]], "int32"))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_token_embedding_mixed_precision(rng, policy):
    keras.config.set_dtype_policy(policy)
    layer = TokenEmbedding(9, 8, embeddings_initializer="glorot_uniform")
    ids = rng.integers(0, 9, size=(2, 16)).astype("int32")
    outputs = layer(ids)
    assert keras.backend.standardize_dtype(outputs.dtype) == policy.split("_")[1]
    assert keras.backend.standardize_dtype(layer.embeddings.dtype) == "float32"
    outputs = np_(ops.cast(outputs, "float32"))
    assert np.isfinite(outputs).all()
    table = np_(layer.embeddings)
    # One rounding of each float32 entry (|x| < 0.6): half an ulp of bfloat16
    # there is 2**-10; float16's is smaller.
    np.testing.assert_allclose(outputs, table[ids], rtol=0, atol=2e-3)


def test_token_embedding_fit_step_equals_keras_embedding(rng):
    vocabulary_size, length = 12, 6
    ids = rng.integers(1, 6, size=(4, length)).astype("int32")  # ids 6.. never used
    targets = rng.integers(0, vocabulary_size, size=(4, length)).astype("int32")
    models = []
    for embedding in (TokenEmbedding(vocabulary_size, 8, name="embedding"),
                      keras.layers.Embedding(vocabulary_size, 8, name="embedding")):
        token_ids = keras.Input(shape=(length,), dtype="int32")
        logits = keras.layers.Dense(vocabulary_size, name="logits")(embedding(token_ids))
        model = keras.Model(token_ids, logits)
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        models.append(model)
    ours, theirs = models
    theirs.set_weights(ours.get_weights())
    before = np_(ours.get_layer("embedding").embeddings).copy()
    losses = [m.fit(ids, targets, epochs=1, batch_size=4, verbose=0).history["loss"][0]
              for m in models]
    assert np.isfinite(losses[0])
    np.testing.assert_allclose(losses[0], losses[1], rtol=0, atol=ATOL)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    after = np_(ours.get_layer("embedding").embeddings)
    used = np.unique(ids)
    assert not np.allclose(after[used], before[used])
    np.testing.assert_array_equal(after[6:], before[6:])  # unused rows get no gradient


def test_positional_layers_still_import_from_embeddings(tmp_path):
    """`SinePositionEncoding` and `PositionEmbedding` moved to `keraseq.layers.positional`;
    the old import path gives the same classes, and a model saved with them loads."""
    assert embeddings.SinePositionEncoding is positional.SinePositionEncoding
    assert embeddings.PositionEmbedding is positional.PositionEmbedding
    inputs = keras.Input((6, 4))
    model = keras.Model(inputs, positional.PositionEmbedding(8)(inputs)
                        + positional.SinePositionEncoding()(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = np.arange(2 * 6 * 4, dtype="float32").reshape(2, 6, 4)
    np.testing.assert_allclose(np_(loaded(x)), np_(model(x)), rtol=0, atol=0)
    sine = np_(positional.SinePositionEncoding()(x))[0]  # Vaswani et al. (2017), section 3.5
    position, i = np.arange(6)[:, None], np.arange(2)[None, :]
    angle = position / 10000.0 ** (2 * i / 4)
    np.testing.assert_allclose(sine[:, 0::2], np.sin(angle), atol=1e-6)
    np.testing.assert_allclose(sine[:, 1::2], np.cos(angle), atol=1e-6)
