"""Multi-head scaled dot-product attention written out with `keras.ops`."""

import math
import string

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
    is_int,
    tensor_shape,
)

# Added to the logits of blocked positions before the softmax (the value the
# Keras `Softmax` layer uses for float32), so that a partly masked row gives
# exactly zero weight to its blocked keys.
_MASK_LOGIT = -1e9


def _check_rank3(name, shape):
    length = "target_length" if name == "query" else "source_length"
    check_rank(name, shape, 3, f"(batch_size, {length}, {name}_dim)")


def _check_mask_shape(name, mask_shape, target_shape):
    """Raises if `mask_shape` does not broadcast (numpy rules) to target."""
    mask_shape = tuple(mask_shape)
    fits = 1 <= len(mask_shape) <= len(target_shape)
    if fits:
        for m, t in zip(reversed(mask_shape), reversed(target_shape)):
            if m is not None and m != 1 and t is not None and m != t:
                fits = False
    if not fits:
        raise ValueError(
            f"`{name}` must broadcast to (batch_size, target_length, "
            f"source_length)={tuple(target_shape)}. "
            f"Received: {name}.shape={mask_shape}"
        )


# The arguments of `MultiHeadAttention.call`, in order (for `__call__`).
_CALL_ARGUMENTS = (
    "query",
    "value",
    "key",
    "query_mask",
    "value_mask",
    "key_mask",
    "attention_mask",
    "return_attention_scores",
    "training",
    "use_causal_mask",
)

# What True means in each mask, for the dtype message.
_MASK_MEANINGS = {
    "query_mask": "a query position is used",
    "value_mask": "a key position may be attended to",
    "key_mask": "a key position may be attended to",
    "attention_mask": "a query may attend to a key",
}


class _HeadProjection(keras.layers.Layer):
    """Dense projection `einsum(inputs, kernel) + bias` used by attention.

    Contracts the last `num_input_dims` axes of the input with the leading
    axes of `kernel` of shape `(*input_dims, *output_dims)`; the bias has
    shape `output_dims`. It exists so that the weights are named
    `<name>/kernel` and `<name>/bias` exactly as in
    `keras.layers.MultiHeadAttention`. Masks pass through untouched.
    """

    def __init__(
        self,
        input_dims,
        output_dims,
        use_bias,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        kernel_constraint,
        bias_constraint,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_dims = tuple(input_dims)
        self.output_dims = tuple(output_dims)
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = kernel_regularizer
        self.bias_regularizer = bias_regularizer
        self.kernel_constraint = kernel_constraint
        self.bias_constraint = bias_constraint
        self.supports_masking = True
        letters = string.ascii_lowercase
        n_in, n_out = len(self.input_dims), len(self.output_dims)
        contracted = letters[:n_in]
        produced = letters[n_in : n_in + n_out]
        # Leading (batch, length) axes use capitals so they never clash.
        self._equation = (
            f"AB{contracted},{contracted}{produced}->AB{produced}"
        )

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.input_dims + self.output_dims,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=self.output_dims,
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None

    def call(self, inputs):
        outputs = ops.einsum(self._equation, inputs, self.kernel)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2]) + self.output_dims


@keras.saving.register_keras_serializable(package="keraseq")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head scaled dot-product attention.

    Each of the `num_heads` heads projects the inputs, compares every query
    with every key and returns a weighted sum of the values:

    ```
    Q_h = query @ Wq_h + bq_h        # (batch_size, target_length, key_dim)
    K_h = key @ Wk_h + bk_h          # (batch_size, source_length, key_dim)
    V_h = value @ Wv_h + bv_h        # (batch_size, source_length, value_dim)
    A_h = softmax(Q_h @ K_h^T / sqrt(key_dim), masked)  # (batch_size, T, S)
    output = sum_h dropout(A_h) @ V_h @ Wo_h + bo
    ```

    The weights have the same names, shapes and order as
    `keras.layers.MultiHeadAttention` (`query/kernel` of shape
    `(query_dim, num_heads, key_dim)`, `query/bias` `(num_heads, key_dim)`,
    `key/...`, `value/kernel` `(value_in_dim, num_heads, value_dim)`,
    `value/bias`, `attention_output/kernel`
    `(num_heads, value_dim, output_dim)`, `attention_output/bias`
    `(output_dim,)`), so `set_weights(keras_layer.get_weights())` reproduces
    the Keras layer. Attention runs over axis 1 only.

    Masking: a boolean mask is `True` (or 1) where a query may attend to a
    key. The layer ANDs together `attention_mask` (broadcast to
    `(batch_size, target_length, source_length)`), the causal mask
    (`use_causal_mask=True`: query `i` sees keys `j <= i`), the query mask
    (masks whole rows) and the value and key masks (mask columns). Query,
    value and key masks are taken from the Keras masks of the inputs (for
    example set by `Embedding(mask_zero=True)`) unless given explicitly; the
    output carries the Keras mask of `query`.

    A query row whose keys are all masked gets attention weights of exactly
    0 (Keras's layer gives uniform weights there, torch's
    `nn.MultiheadAttention` gives NaN). Its attention output is therefore
    the output bias alone, and no NaN appears in outputs, scores or
    gradients, on either computation path.

    The softmax runs in float32 under mixed precision; its result is cast
    back to the compute dtype. With `use_fused=True` (the default) the layer
    calls `keras.ops.dot_product_attention` (the backend's fused kernel)
    whenever that gives the same result: no `return_attention_scores`, no
    active dropout (`dropout == 0` or not training) and
    `key_dim == value_dim`. Otherwise, or with `use_fused=False`, the
    weights are computed explicitly as written above. The two paths agree
    to float32 round-off.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        value_dim: int or `None`. Size of each head for value. Defaults to
            `None`, meaning `key_dim`.
        dropout: float in `[0, 1)`. Dropout rate on the attention weights.
            Defaults to `0.0`.
        use_bias: bool. Whether the projections have biases. Defaults to
            `True`.
        output_shape: int, tuple of ints or `None`. Size of the output
            features (without the batch and length axes). Defaults to
            `None`, meaning the last dimension of `query`.
        kernel_initializer: initializer for the kernels. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer for the biases. Defaults to `"zeros"`.
        kernel_regularizer: regularizer for the kernels. Defaults to `None`.
        bias_regularizer: regularizer for the biases. Defaults to `None`.
        activity_regularizer: regularizer applied to the layer's outputs
            (standard `Layer` behaviour; Keras's layer applies it to each
            projection instead). Defaults to `None`.
        kernel_constraint: constraint for the kernels. Defaults to `None`.
        bias_constraint: constraint for the biases. Defaults to `None`.
        seed: int or `None`. Seed of the attention dropout. Defaults to
            `None`.
        use_fused: bool. Whether to use `keras.ops.dot_product_attention`
            when it gives the same result (see above). Defaults to `True`.
        **kwargs: base `Layer` arguments such as `name` and `dtype`.

    Call arguments:
        query: tensor of shape `(batch_size, target_length, query_dim)`.
        value: tensor of shape `(batch_size, source_length, value_in_dim)`.
        key: optional tensor of shape
            `(batch_size, source_length, key_in_dim)`. Defaults to `value`.
        query_mask: optional boolean tensor `(batch_size, target_length)`.
            Defaults to the Keras mask of `query`.
        value_mask: optional boolean tensor `(batch_size, source_length)`.
            Defaults to the Keras mask of `value`.
        key_mask: optional boolean tensor `(batch_size, source_length)`.
            Defaults to the Keras mask of `key`.
        attention_mask: optional boolean tensor broadcastable to
            `(batch_size, target_length, source_length)`.
            Every mask may also be an integer tensor (nonzero = True); a
            float mask is refused, because an additive mask (0 = attend,
            -inf = block, as in PyTorch) would be read the other way round.
        return_attention_scores: bool. Whether to also return the attention
            weights (before dropout). Defaults to `False`.
        training: bool. Whether dropout is active. Defaults to `None`
            (inference unless set by the Keras training loop).
        use_causal_mask: bool. Whether query `i` may only see keys
            `j <= i`. Defaults to `False`.

    Returns:
        `attention_output` of shape
        `(batch_size, target_length, output_dim)` (`output_dim` from
        `output_shape`, else `query_dim`) in the compute dtype, and, with
        `return_attention_scores=True`, also `attention_scores` of shape
        `(batch_size, num_heads, target_length, source_length)` in the
        compute dtype.

    Raises:
        ValueError: for a bad constructor argument, a `query`, `value` or
            `key` that is not rank 3 or not numeric, `value` and `key` of
            different lengths, a `query_mask`, `value_mask` or `key_mask` of
            another shape than listed above, an `attention_mask` that does
            not broadcast to `(batch_size, target_length, source_length)`,
            or a mask whose dtype is not bool or integer.

    Example:

    ```python
    x = keras.random.normal((2, 8, 16))
    mha = keraseq.layers.MultiHeadAttention(num_heads=4, key_dim=4)
    y, scores = mha(x, x, use_causal_mask=True, return_attention_scores=True)
    # y: (2, 8, 16); scores: (2, 4, 8, 8), upper triangle 0.
    ```

    Reference:
        - [Vaswani et al., 2017. Attention Is All You Need](
          https://arxiv.org/abs/1706.03762)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed=None,
        use_fused=True,
        **kwargs,
    ):
        num_heads = check_positive_int("num_heads", num_heads)
        key_dim = check_positive_int("key_dim", key_dim)
        value_dim = check_positive_int("value_dim", value_dim, allow_none=True)
        dropout = check_rate("dropout", dropout)
        use_bias = check_bool("use_bias", use_bias)
        if output_shape is not None:
            is_sequence = isinstance(output_shape, (list, tuple))
            dims = tuple(output_shape) if is_sequence else (output_shape,)
            if not dims or not all(is_int(d) and d > 0 for d in dims):
                raise ValueError(
                    "`output_shape` must be None, a positive integer or a "
                    "tuple of positive integers. "
                    f"Received: output_shape={output_shape!r}"
                )
            dims = tuple(int(d) for d in dims)
            output_shape = dims if is_sequence else dims[0]
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int)
        ):
            raise ValueError(
                f"`seed` must be an integer or None. Received: seed={seed!r}"
            )
        use_fused = check_bool("use_fused", use_fused)
        resolved = {}
        for arg_name, value, getter in (
            ("kernel_initializer", kernel_initializer, keras.initializers.get),
            ("bias_initializer", bias_initializer, keras.initializers.get),
            ("kernel_regularizer", kernel_regularizer, keras.regularizers.get),
            ("bias_regularizer", bias_regularizer, keras.regularizers.get),
            ("kernel_constraint", kernel_constraint, keras.constraints.get),
            ("bias_constraint", bias_constraint, keras.constraints.get),
            (
                "activity_regularizer",
                activity_regularizer,
                keras.regularizers.get,
            ),
        ):
            resolved[arg_name] = check_lookup(arg_name, value, getter)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.output_shape = output_shape
        self.kernel_initializer = resolved["kernel_initializer"]
        self.bias_initializer = resolved["bias_initializer"]
        self.kernel_regularizer = resolved["kernel_regularizer"]
        self.bias_regularizer = resolved["bias_regularizer"]
        self.kernel_constraint = resolved["kernel_constraint"]
        self.bias_constraint = resolved["bias_constraint"]
        self.seed = seed
        self.use_fused = use_fused
        self.supports_masking = True
        self._value_dim = value_dim if value_dim is not None else key_dim
        self._inverse_sqrt_key_dim = 1.0 / math.sqrt(float(key_dim))

    def _output_dims(self, query_shape):
        if self.output_shape is None:
            return (query_shape[-1],)
        if isinstance(self.output_shape, int):
            return (self.output_shape,)
        return tuple(self.output_shape)

    def _check_shapes(self, query_shape, value_shape, key_shape):
        _check_rank3("query", query_shape)
        _check_rank3("value", value_shape)
        if key_shape is not None:
            _check_rank3("key", key_shape)
            v_len, k_len = value_shape[1], key_shape[1]
            if v_len is not None and k_len is not None and v_len != k_len:
                raise ValueError(
                    "`value` and `key` must have the same length. Received: "
                    f"value.shape={tuple(value_shape)}, "
                    f"key.shape={tuple(key_shape)}"
                )

    def __call__(self, *args, **kwargs):
        # Checked here, before Keras converts the inputs and wraps errors of
        # `call`, so that a bad input raises one ValueError with one line.
        arguments = dict(zip(_CALL_ARGUMENTS, args), **kwargs)
        self._check_call(arguments)
        return super().__call__(*args, **kwargs)

    def _check_call(self, arguments):
        query, value = arguments.get("query"), arguments.get("value")
        key = arguments.get("key")
        if query is None or value is None:
            return  # Keras raises its own TypeError for a missing argument
        query_shape, value_shape = tensor_shape(query), tensor_shape(value)
        key_shape = None if key is None else tensor_shape(key)
        self._check_shapes(query_shape, value_shape, key_shape)
        for name, tensor in (("query", query), ("value", value), ("key", key)):
            if tensor is not None:
                check_numeric(name, tensor)
        batch_size = query_shape[0]
        expected = {
            "query_mask": ((batch_size, query_shape[1]), "(batch_size, target_length)"),
            "value_mask": ((batch_size, value_shape[1]), "(batch_size, source_length)"),
            "key_mask": ((batch_size, value_shape[1]), "(batch_size, source_length)"),
        }
        for name, meaning in _MASK_MEANINGS.items():
            mask = arguments.get(name)
            if mask is None:
                continue
            if name == "attention_mask":
                if tensor_shape(mask) is not None:
                    _check_mask_shape(
                        name, tensor_shape(mask), (batch_size, query_shape[1], value_shape[1])
                    )
            else:
                check_mask_shape(name, tensor_shape(mask), *expected[name])
            check_mask_dtype(name, mask, meaning)

    def _projection(self, name, input_dims, output_dims):
        # A fresh initializer object per weight, as stateless initializers
        # with a fixed seed would otherwise give every kernel the same value.
        def clone(initializer):
            return initializer.__class__.from_config(initializer.get_config())

        return _HeadProjection(
            input_dims=input_dims,
            output_dims=output_dims,
            use_bias=self.use_bias,
            kernel_initializer=clone(self.kernel_initializer),
            bias_initializer=clone(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, value_shape, key_shape=None):
        self._check_shapes(query_shape, value_shape, key_shape)
        key_shape = value_shape if key_shape is None else key_shape
        for name, shape in (
            ("query", query_shape),
            ("value", value_shape),
            ("key", key_shape),
        ):
            check_last_axis_known(name, shape, f"{name}_dim")
        heads = self.num_heads
        # Creation order fixes the weight order: query, key, value, output.
        self._query_dense = self._projection(
            "query", (query_shape[-1],), (heads, self.key_dim)
        )
        self._query_dense.build(query_shape)
        self._key_dense = self._projection(
            "key", (key_shape[-1],), (heads, self.key_dim)
        )
        self._key_dense.build(key_shape)
        self._value_dense = self._projection(
            "value", (value_shape[-1],), (heads, self._value_dim)
        )
        self._value_dense.build(value_shape)
        self._dropout_layer = keras.layers.Dropout(
            rate=self.dropout,
            seed=self.seed,
            dtype=self.dtype_policy,
            name="attention_dropout",
        )
        self._output_dense = self._projection(
            "attention_output",
            (heads, self._value_dim),
            self._output_dims(query_shape),
        )
        self._output_dense.build(
            (query_shape[0], query_shape[1], heads, self._value_dim)
        )

    def _combined_mask(
        self,
        query,
        value,
        query_mask,
        value_mask,
        key_mask,
        attention_mask,
        use_causal_mask,
    ):
        """Boolean mask `(batch_size or 1, T or 1, S or 1)` or None."""
        mask = None

        def merge(mask, new):
            return new if mask is None else ops.logical_and(mask, new)

        if query_mask is not None:
            query_mask = ops.cast(query_mask, "bool")
            mask = merge(mask, ops.expand_dims(query_mask, -1))  # (B, T, 1)
        if value_mask is not None:
            value_mask = ops.cast(value_mask, "bool")
            mask = merge(mask, ops.expand_dims(value_mask, -2))  # (B, 1, S)
        if key_mask is not None:
            key_mask = ops.cast(key_mask, "bool")
            mask = merge(mask, ops.expand_dims(key_mask, -2))  # (B, 1, S)
        if attention_mask is not None:
            attention_mask = ops.cast(attention_mask, "bool")
            while len(attention_mask.shape) < 3:
                attention_mask = ops.expand_dims(attention_mask, 0)
            mask = merge(mask, attention_mask)  # (B, T, S)
        if use_causal_mask:
            target_length = ops.shape(query)[1]
            source_length = ops.shape(value)[1]
            rows = ops.expand_dims(ops.arange(target_length, dtype="int32"), 1)
            cols = ops.expand_dims(ops.arange(source_length, dtype="int32"), 0)
            causal = ops.expand_dims(ops.greater_equal(rows, cols), 0)
            mask = merge(mask, causal)  # (1, T, S)
        return mask

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        self._check_shapes(
            query.shape, value.shape, None if key is None else key.shape
        )
        if attention_mask is not None:
            _check_mask_shape(
                "attention_mask",
                attention_mask.shape,
                (query.shape[0], query.shape[1], value.shape[1]),
            )
        if key is None:
            key = value
        dropout_active = bool(training) and self.dropout > 0.0
        fused = (
            self.use_fused
            and not return_attention_scores
            and not dropout_active
            and self.key_dim == self._value_dim
            and _fast_path.fused_attention_supported(self.compute_dtype)
        )
        # Causal masking alone never empties a row, so it can go to the fused
        # kernel as `is_causal` instead of an explicit (T, S) mask.
        other_masks = (query_mask, value_mask, key_mask, attention_mask)
        causal_only = use_causal_mask and all(m is None for m in other_masks)
        mask = self._combined_mask(
            query,
            value,
            query_mask,
            value_mask,
            key_mask,
            attention_mask,
            use_causal_mask and not (fused and causal_only),
        )

        if (query is value and key is value and self.key_dim == self._value_dim
                and _fast_path.fuse_qkv_projection()):
            q, k, v = self._fused_qkv(query)
        else:
            q = self._query_dense(query)  # (B, T, N, key_dim)
            k = self._key_dense(key)  # (B, S, N, key_dim)
            v = self._value_dense(value)  # (B, S, N, value_dim)

        if fused:
            context = self._fused_attention(
                q, k, v, mask, use_causal_mask and causal_only
            )
            scores = None
        else:
            context, scores = self._explicit_attention(q, k, v, mask, training)
        output = self._output_dense(context)  # (B, T, *output_dims)
        if return_attention_scores:
            return output, scores
        return output

    def _fused_qkv(self, x):
        """Self-attention: the query, key and value projections as one einsum
        over the three kernels side by side, `(features, 3 * num_heads,
        key_dim)`, then split. Same weights, same math as three projections."""
        projections = (self._query_dense, self._key_dense, self._value_dense)
        kernel = ops.concatenate([p.kernel for p in projections], axis=-2)
        qkv = ops.einsum(self._query_dense._equation, x, kernel)  # (B, T, 3N, K)
        if self.use_bias:
            qkv = ops.add(qkv, ops.concatenate([p.bias for p in projections], axis=0))
        return ops.split(qkv, 3, axis=2)  # 3 x (B, T, N, K)

    def _explicit_attention(self, q, k, v, mask, training):
        q = ops.multiply(q, ops.cast(self._inverse_sqrt_key_dim, q.dtype))
        logits = ops.einsum("btnk,bsnk->bnts", q, k)  # (B, N, T, S)
        logits = ops.cast(logits, "float32")
        if mask is not None:
            mask = ops.expand_dims(mask, 1)  # (B, 1, T, S) over heads
            logits = ops.where(mask, logits, _MASK_LOGIT)
        # softmax over the keys, written out (stable: the row max is finite)
        logits = ops.subtract(logits, ops.max(logits, axis=-1, keepdims=True))
        weights = ops.exp(logits)
        weights = ops.divide(weights, ops.sum(weights, axis=-1, keepdims=True))
        if mask is not None:
            # Exact zeros at blocked keys, and whole zero rows where every
            # key is blocked (the softmax alone would be uniform there).
            weights = ops.multiply(weights, ops.cast(mask, weights.dtype))
        weights = ops.cast(weights, self.compute_dtype)  # (B, N, T, S)
        dropped = self._dropout_layer(weights, training=training)
        context = ops.einsum("bnts,bsnv->btnv", dropped, v)  # (B, T, N, V)
        return context, weights

    def _fused_attention(self, q, k, v, mask, is_causal):
        if mask is None:
            return ops.dot_product_attention(
                q,
                k,
                v,
                scale=self._inverse_sqrt_key_dim,
                is_causal=is_causal,
            )  # (B, T, N, V)
        # Rows with no visible key: open them for the kernel (keeps it free
        # of NaN) and zero their result afterwards.
        row_visible = ops.any(mask, axis=-1, keepdims=True)  # (B, T, 1)
        safe_mask = ops.logical_or(mask, ops.logical_not(row_visible))
        context = ops.dot_product_attention(
            q,
            k,
            v,
            mask=ops.expand_dims(safe_mask, 1),  # (B, 1, T, S)
            scale=self._inverse_sqrt_key_dim,
        )  # (B, T, N, V)
        row_visible = ops.expand_dims(row_visible, -1)  # (B, T, 1, 1)
        return ops.multiply(context, ops.cast(row_visible, context.dtype))

    def compute_mask(self, query, previous_mask=None):
        return previous_mask

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        self._check_shapes(query_shape, value_shape, key_shape)
        return tuple(query_shape[:2]) + self._output_dims(query_shape)

    def compute_output_spec(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        key_shape = None if key is None else key.shape
        output_shape = self.compute_output_shape(
            query.shape, value.shape, key_shape
        )
        if attention_mask is not None:
            _check_mask_shape(
                "attention_mask",
                attention_mask.shape,
                (query.shape[0], query.shape[1], value.shape[1]),
            )
        output = keras.KerasTensor(output_shape, dtype=self.compute_dtype)
        if return_attention_scores:
            scores_shape = (
                query.shape[0],
                self.num_heads,
                query.shape[1],
                value.shape[1],
            )
            scores = keras.KerasTensor(scores_shape, dtype=self.compute_dtype)
            return output, scores
        return output

    def get_config(self):
        base_config = super().get_config()
        output_shape = self.output_shape
        if isinstance(output_shape, tuple):
            output_shape = list(output_shape)
        config = {
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_shape": output_shape,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(
                self.kernel_regularizer
            ),
            "bias_regularizer": keras.regularizers.serialize(
                self.bias_regularizer
            ),
            "kernel_constraint": keras.constraints.serialize(
                self.kernel_constraint
            ),
            "bias_constraint": keras.constraints.serialize(
                self.bias_constraint
            ),
            "seed": self.seed,
            "use_fused": self.use_fused,
        }
        return {**base_config, **config}
