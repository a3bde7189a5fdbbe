"""Pre-norm causal transformer decoder block."""

import keras
from keras import ops

from keraseq.layers import _fast_path
from keraseq.layers._validation import (
    check_bool,
    check_last_axis_known,
    check_lookup,
    check_mask_dtype,
    check_mask_shape,
    check_numeric,
    check_positive_int,
    check_rank,
    check_rate,
    check_seed,
    is_number,
    tensor_shape,
)
from keraseq.layers.attention import MultiHeadAttention


@keras.saving.register_keras_serializable(package="keraseq")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm causal transformer block (self-attention and feedforward).

    Each sub-block normalises its input, transforms it and adds the result
    back to the residual stream (pre-norm, as in GPT-2):

    ```
    h = LayerNorm_1(x)
    x = x + Dropout(MultiHeadAttention(h, h, causal, padding mask))
    y = x + Dropout(W_out · activation(W_in · LayerNorm_2(x) + b_in) + b_out)
    ```

    The attention is `keraseq.layers.MultiHeadAttention` with `num_heads`
    heads of size `key_dim` (value heads of the same size, output size
    `hidden_dim`) and dropout `dropout` on its attention weights; the
    feedforward network has `intermediate_dim` hidden units.

    Masking: the padding mask (`padding_mask`, or else the Keras mask of
    `inputs`, for example from `Embedding(mask_zero=True)`) is `True` at
    real tokens. It masks both the keys (columns) and the queries (rows) of
    the attention, together with the causal mask. A padded query position
    thus sees no key: its attention weights are 0 and its attention output
    is the output bias of the attention, never NaN. Real tokens always see
    at least themselves. The Keras mask of `inputs` passes to the output.

    Args:
        num_heads: int. Number of attention heads.
        intermediate_dim: int. Hidden size of the feedforward network.
        key_dim: int or `None`. Size of each attention head. Defaults to
            `None`, meaning `hidden_dim // num_heads`, which must then be a
            whole number of at least 1.
        dropout: float in `[0, 1)`. Dropout rate of the attention weights
            and of both residual branches. Defaults to `0.0`.
        activation: activation of the feedforward hidden layer (name or
            callable). Defaults to `"gelu"` (the exact, erf-based GELU).
        layer_norm_epsilon: float > 0. Epsilon of both layer normalizations.
            Defaults to `1e-5`.
        kernel_initializer: initializer of the attention and feedforward
            kernels. Defaults to `"glorot_uniform"`.
        use_causal_mask: bool. Whether position `i` may only attend to
            positions `j <= i`. Defaults to `True`.
        seed: int or `None`. Seed of the three dropouts (the attention
            weights get `seed`, the two residual dropouts `seed + 1` and
            `seed + 2`). Defaults to `None` (Keras draws one; on torch
            unseeded dropout uses torch's global random state, so a run
            resumed from a backup draws other masks).
        **kwargs: base `Layer` arguments such as `name` and `dtype`.

    Call arguments:
        inputs: tensor of shape `(batch_size, sequence_length, hidden_dim)`.
        padding_mask: optional boolean tensor of shape
            `(batch_size, sequence_length)`, `True` at real tokens. Defaults
            to the Keras mask of `inputs`. An integer mask (nonzero = real)
            is accepted; a float mask is refused (an additive mask, 0 =
            keep, would be read the other way round).
        training: bool. Whether dropout is active. Defaults to `None`
            (inference unless set by the Keras training loop).
        mask: the Keras mask of `inputs`, filled in by Keras; used when
            `padding_mask` is `None`.
        return_attention_scores: bool. Whether to also return the attention
            weights of the self-attention. Defaults to `False`. When `True`
            the attention takes its explicit path (the weights are computed
            as written in `keraseq.layers.MultiHeadAttention`; the outputs
            agree with the fused path to float32 round-off).

    Returns:
        Tensor of shape `(batch_size, sequence_length, hidden_dim)` in the
        compute dtype. With `return_attention_scores=True`, a tuple
        `(outputs, scores)` where `scores` are the attention weights
        `softmax(Q K^T / sqrt(key_dim))` after masking (before dropout), of
        shape `(batch_size, num_heads, target_length, source_length)`
        (target and source length are both `sequence_length`) in the compute
        dtype: each row sums to 1 (a padded query row is all 0) and, with
        `use_causal_mask=True`, entries above the diagonal are exactly 0.

    Raises:
        ValueError: for a bad constructor argument, for inputs that are not
            rank 3, not numeric or whose last dimension is unknown, for a
            `padding_mask` whose shape is not `(batch_size, sequence_length)`
            or whose dtype is not bool or integer, and when `key_dim` is
            `None` and `hidden_dim` is not a multiple of `num_heads`.

    Example:

    ```python
    inputs = keras.Input((None, 16))
    outputs = keraseq.layers.TransformerBlock(num_heads=2,
                                              intermediate_dim=32)(inputs)
    model = keras.Model(inputs, outputs)
    y = model(keras.random.normal((4, 10, 16)))  # (4, 10, 16)
    block = model.layers[-1]
    y, scores = block(keras.random.normal((4, 10, 16)),
                      return_attention_scores=True)  # scores: (4, 2, 10, 10)
    ```

    Reference:
        - [Vaswani et al., 2017. Attention Is All You Need](
          https://arxiv.org/abs/1706.03762)
        - [Xiong et al., 2020. On Layer Normalization in the Transformer
          Architecture](https://arxiv.org/abs/2002.04745) (pre-norm)
        - Radford et al., 2019. Language Models are Unsupervised Multitask
          Learners (GPT-2).
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        key_dim=None,
        dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        use_causal_mask=True,
        seed=None,
        **kwargs,
    ):
        num_heads = check_positive_int("num_heads", num_heads)
        intermediate_dim = check_positive_int(
            "intermediate_dim", intermediate_dim
        )
        key_dim = check_positive_int("key_dim", key_dim, allow_none=True)
        dropout = check_rate("dropout", dropout)
        activation_fn = check_lookup(
            "activation", activation, keras.activations.get
        )
        if activation_fn is None:
            raise ValueError(
                "`activation` could not be interpreted. "
                f"Received: activation={activation!r}"
            )
        if not is_number(layer_norm_epsilon) or not layer_norm_epsilon > 0:
            raise ValueError(
                "`layer_norm_epsilon` must be a positive float. "
                f"Received: layer_norm_epsilon={layer_norm_epsilon!r}"
            )
        kernel_initializer_obj = check_lookup(
            "kernel_initializer", kernel_initializer, keras.initializers.get
        )
        use_causal_mask = check_bool("use_causal_mask", use_causal_mask)
        seed = check_seed(seed)
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.key_dim = key_dim
        self.dropout = dropout
        self.activation = activation_fn
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.kernel_initializer = kernel_initializer_obj
        self.use_causal_mask = use_causal_mask
        self.seed = seed
        self.supports_masking = True

    def _dropout_seed(self, offset):
        return None if self.seed is None else self.seed + offset

    def _clone_initializer(self):
        initializer = self.kernel_initializer
        return initializer.__class__.from_config(initializer.get_config())

    def _check_input_shape(self, input_shape):
        check_rank(
            "inputs",
            input_shape,
            3,
            "(batch_size, sequence_length, hidden_dim)",
        )
        check_last_axis_known("inputs", input_shape, "hidden_dim")

    def __call__(self, inputs, *args, **kwargs):
        # `call(inputs, padding_mask=None, training=None, mask=None, ...)`.
        # Checked here, before Keras converts the inputs and wraps errors of
        # `call`, so that a bad input raises one ValueError with one line.
        input_shape = tensor_shape(inputs)
        self._check_input_shape(input_shape)
        check_numeric("inputs", inputs)
        masks = {"padding_mask": args[0] if args else kwargs.get("padding_mask"),
                 "mask": args[2] if len(args) > 2 else kwargs.get("mask")}
        for name, mask in masks.items():
            if mask is not None:
                check_mask_shape(name, tensor_shape(mask), input_shape[:2],
                                 "(batch_size, sequence_length)")
                check_mask_dtype(name, mask, "a token is real (not padding)")
        return super().__call__(inputs, *args, **kwargs)

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        hidden_dim = input_shape[-1]
        key_dim = self.key_dim
        if key_dim is None:
            if hidden_dim % self.num_heads != 0:
                raise ValueError(
                    "With `key_dim=None` the hidden size must be a multiple "
                    "of `num_heads` (key_dim = hidden_dim // num_heads). "
                    f"Received: key_dim=None, num_heads={self.num_heads}, "
                    f"hidden_dim={hidden_dim}"
                )
            key_dim = hidden_dim // self.num_heads
        self._key_dim = key_dim
        self._self_attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="self_attention_layer_norm",
        )
        self._self_attention_layer_norm.build(input_shape)
        self._self_attention = MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=key_dim,
            dropout=self.dropout,
            seed=self.seed,
            kernel_initializer=self._clone_initializer(),
            dtype=self.dtype_policy,
            name="self_attention",
        )
        self._self_attention.build(input_shape, input_shape)
        self._self_attention_dropout = keras.layers.Dropout(
            rate=self.dropout,
            seed=self._dropout_seed(1),
            dtype=self.dtype_policy,
            name="self_attention_dropout",
        )
        self._feedforward_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="feedforward_layer_norm",
        )
        self._feedforward_layer_norm.build(input_shape)
        # The activation is applied in `call` (see `_activate`).
        self._feedforward_intermediate_dense = keras.layers.Dense(
            self.intermediate_dim,
            kernel_initializer=self._clone_initializer(),
            dtype=self.dtype_policy,
            name="feedforward_intermediate_dense",
        )
        self._feedforward_intermediate_dense.build(input_shape)
        self._feedforward_output_dense = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=self._clone_initializer(),
            dtype=self.dtype_policy,
            name="feedforward_output_dense",
        )
        self._feedforward_output_dense.build(
            tuple(input_shape[:-1]) + (self.intermediate_dim,)
        )
        self._feedforward_dropout = keras.layers.Dropout(
            rate=self.dropout,
            seed=self._dropout_seed(2),
            dtype=self.dtype_policy,
            name="feedforward_dropout",
        )

    def call(
        self,
        inputs,
        padding_mask=None,
        training=None,
        mask=None,
        return_attention_scores=False,
    ):
        self._check_input_shape(inputs.shape)
        if padding_mask is None:
            padding_mask = mask
        if padding_mask is not None:
            padding_mask = ops.cast(padding_mask, "bool")

        x = inputs  # (batch_size, sequence_length, hidden_dim)
        h = self._self_attention_layer_norm(x)
        # The masks are passed explicitly (both may be None) so that the
        # result never depends on a Keras mask riding on `h`.
        attended = self._self_attention(
            h,
            h,
            query_mask=padding_mask,
            value_mask=padding_mask,
            use_causal_mask=self.use_causal_mask,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        if return_attention_scores:
            attended, scores = attended  # scores: (B, num_heads, T, T)
        attended = self._self_attention_dropout(attended, training=training)
        x = ops.add(x, attended)

        h = self._feedforward_layer_norm(x)
        h = self._feedforward_intermediate_dense(h)  # (B, T, intermediate)
        h = self._activate(h)
        h = self._feedforward_output_dense(h)  # (B, T, hidden_dim)
        h = self._feedforward_dropout(h, training=training)
        outputs = ops.add(x, h)
        if return_attention_scores:
            return outputs, scores
        return outputs

    def _activate(self, h):
        if self.activation is keras.activations.gelu:
            return _fast_path.gelu(h)  # exact GELU; see _fast_path.gelu
        return self.activation(h)

    def compute_mask(self, inputs, previous_mask=None):
        return previous_mask

    def compute_output_shape(self, input_shape):
        self._check_input_shape(input_shape)
        return tuple(input_shape)

    def compute_output_spec(
        self,
        inputs,
        padding_mask=None,
        training=None,
        mask=None,
        return_attention_scores=False,
    ):
        output_shape = self.compute_output_shape(inputs.shape)
        outputs = keras.KerasTensor(output_shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        batch_size, sequence_length = output_shape[0], output_shape[1]
        scores = keras.KerasTensor(
            (batch_size, self.num_heads, sequence_length, sequence_length),
            dtype=self.compute_dtype,
        )
        return outputs, scores

    def get_config(self):
        base_config = super().get_config()
        config = {
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "key_dim": self.key_dim,
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "use_causal_mask": self.use_causal_mask,
            "seed": self.seed,
        }
        return {**base_config, **config}
