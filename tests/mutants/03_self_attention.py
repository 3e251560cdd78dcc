"""Mutants of chapter 03's graded exercises (solutions/03_self_attention/03_self_attention.ipynb).

``WRONG[name]`` maps a variant name to source code defining ``name`` with a plausible mistake;
each must fail the notebook's ``test_<name>`` cell (hidden tests included). ``CORRECT[name]``
holds valid alternatives to the solution; each must pass it. The sources are executed in the
kernel after the solution notebook has run, so they may use what its imports cell defined
(``jax``, ``jnp``, ``np``, ``nnx``, ``optax``) and the solution's functions (``split_heads``,
``merge_heads``, ``scaled_dot_product_attention``, ...).

The first wrong variant of the first exercise is the "wrong submission" of the nbgrader pipeline
test, so it must fail its own test cell and nothing else (no other solution calls
``attention_scores``).
"""

WRONG = {
    "attention_scores": {
        "no_scaling": """
def attention_scores(q, k):
    return jnp.einsum("...qd,...kd->...qk", q, k)
""",
        "scaled_by_d": """
def attention_scores(q, k):
    return jnp.einsum("...qd,...kd->...qk", q, k) / q.shape[-1]
""",
        "keys_times_queries": """
def attention_scores(q, k):
    return jnp.einsum("...qd,...kd->...kq", q, k) / jnp.sqrt(q.shape[-1])
""",
        "scaled_by_sqrt_of_key_count": """
def attention_scores(q, k):
    return jnp.einsum("...qd,...kd->...qk", q, k) / jnp.sqrt(k.shape[-2])
""",
        "full_transpose_breaks_batches": """
def attention_scores(q, k):
    return q @ k.T / jnp.sqrt(q.shape[-1])
""",
    },
    "masked_softmax": {
        "softmax_over_query_axis": """
def masked_softmax(scores, mask=None):
    if mask is None:
        return jax.nn.softmax(scores, axis=-2)
    masked = jnp.where(mask, scores, -jnp.inf)
    m = jnp.max(masked, axis=-2, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    e = jnp.where(mask, jnp.exp(masked - m), 0.0)
    z = jnp.sum(e, axis=-2, keepdims=True)
    return e / jnp.where(z > 0, z, 1.0)
""",
        "mask_inverted": """
def masked_softmax(scores, mask=None):
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    mask = ~mask
    masked = jnp.where(mask, scores, -jnp.inf)
    m = jnp.max(masked, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    e = jnp.where(mask, jnp.exp(masked - m), 0.0)
    z = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(z > 0, z, 1.0)
""",
        "mask_applied_after_softmax": """
def masked_softmax(scores, mask=None):
    w = jax.nn.softmax(scores, axis=-1)
    return w if mask is None else jnp.where(mask, w, 0.0)
""",
        "minus_1e9_fill": """
def masked_softmax(scores, mask=None):
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    return jax.nn.softmax(jnp.where(mask, scores, -1e9), axis=-1)
""",
        "minus_inf_fill_gives_nan": """
def masked_softmax(scores, mask=None):
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    return jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
""",
        "renormalised_after_softmax_underflows": """
def masked_softmax(scores, mask=None):
    w = jax.nn.softmax(scores, axis=-1)
    if mask is None:
        return w
    w = jnp.where(mask, w, 0.0)
    z = jnp.sum(w, axis=-1, keepdims=True)
    return w / jnp.where(z > 0, z, 1.0)
""",
        "no_max_subtraction_overflows": """
def masked_softmax(scores, mask=None):
    if mask is None:
        mask = jnp.ones(scores.shape, dtype=bool)
    e = jnp.where(mask, jnp.exp(scores), 0.0)
    z = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(z > 0, z, 1.0)
""",
    },
    "scaled_dot_product_attention": {
        "no_scaling": """
def scaled_dot_product_attention(q, k, v, mask=None):
    weights = masked_softmax(jnp.einsum("...qd,...kd->...qk", q, k), mask)
    return jnp.einsum("...qk,...kd->...qd", weights, v), weights
""",
        "scaled_by_d": """
def scaled_dot_product_attention(q, k, v, mask=None):
    weights = masked_softmax(jnp.einsum("...qd,...kd->...qk", q, k) / q.shape[-1], mask)
    return jnp.einsum("...qk,...kd->...qd", weights, v), weights
""",
        "softmax_over_query_axis": """
def scaled_dot_product_attention(q, k, v, mask=None):
    s = jnp.einsum("...qd,...kd->...qk", q, k) / jnp.sqrt(q.shape[-1])
    s = s if mask is None else jnp.where(mask, s, -1e30)
    weights = jax.nn.softmax(s, axis=-2)
    weights = weights if mask is None else jnp.where(mask, weights, 0.0)
    return jnp.einsum("...qk,...kd->...qd", weights, v), weights
""",
        "mask_inverted": """
def scaled_dot_product_attention(q, k, v, mask=None):
    s = jnp.einsum("...qd,...kd->...qk", q, k) / jnp.sqrt(q.shape[-1])
    weights = masked_softmax(s, None if mask is None else ~mask)
    return jnp.einsum("...qk,...kd->...qd", weights, v), weights
""",
        "mask_applied_after_softmax": """
def scaled_dot_product_attention(q, k, v, mask=None):
    s = jnp.einsum("...qd,...kd->...qk", q, k) / jnp.sqrt(q.shape[-1])
    weights = jax.nn.softmax(s, axis=-1)
    weights = weights if mask is None else jnp.where(mask, weights, 0.0)
    return jnp.einsum("...qk,...kd->...qd", weights, v), weights
""",
        "minus_1e9_fill": """
def scaled_dot_product_attention(q, k, v, mask=None):
    s = jnp.einsum("...qd,...kd->...qk", q, k) / jnp.sqrt(q.shape[-1])
    s = s if mask is None else jnp.where(mask, s, -1e9)
    weights = jax.nn.softmax(s, axis=-1)
    return jnp.einsum("...qk,...kd->...qd", weights, v), weights
""",
        "returns_weights_then_out": """
def scaled_dot_product_attention(q, k, v, mask=None):
    s = jnp.einsum("...qd,...kd->...qk", q, k) / jnp.sqrt(q.shape[-1])
    weights = masked_softmax(s, mask)
    return weights, jnp.einsum("...qk,...kd->...qd", weights, v)
""",
    },
    "dot_product_variance": {
        "means_ignored": """
def dot_product_variance(d, q_mean, q_var, k_mean, k_var):
    return d * q_var * k_var
""",
        "second_moments_only": """
def dot_product_variance(d, q_mean, q_var, k_mean, k_var):
    return d * (q_var + q_mean**2) * (k_var + k_mean**2)
""",
        "std_not_variance": """
def dot_product_variance(d, q_mean, q_var, k_mean, k_var):
    return jnp.sqrt(d * 1.0) * (q_var * k_var + q_var * k_mean**2 + q_mean**2 * k_var)
""",
        "terms_fully_correlated": """
def dot_product_variance(d, q_mean, q_var, k_mean, k_var):
    return d**2 * (q_var * k_var + q_var * k_mean**2 + q_mean**2 * k_var)
""",
        "variances_of_a_sum_of_q_and_k": """
def dot_product_variance(d, q_mean, q_var, k_mean, k_var):
    return d * (q_var + k_var)
""",
        "cross_terms_swapped": """
def dot_product_variance(d, q_mean, q_var, k_mean, k_var):
    return d * (q_var * k_var + q_var * q_mean**2 + k_mean**2 * k_var)
""",
    },
    "softmax_entropy": {
        "log_base_2": """
def softmax_entropy(scores):
    log_p = jax.nn.log_softmax(scores, axis=-1)
    p = jnp.exp(log_p)
    return -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1) / jnp.log(2.0)
""",
        "zero_log_zero_gives_nan": """
def softmax_entropy(scores):
    log_p = jax.nn.log_softmax(scores, axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
""",
        "no_max_subtraction_overflows": """
def softmax_entropy(scores):
    e = jnp.exp(scores)
    p = e / jnp.sum(e, axis=-1, keepdims=True)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0), axis=-1)
""",
        "missing_minus_sign": """
def softmax_entropy(scores):
    log_p = jax.nn.log_softmax(scores, axis=-1)
    p = jnp.exp(log_p)
    return jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)
""",
    },
    "softmax_backward": {
        "upstream_times_weights": """
def softmax_backward(scores, grad_weights):
    w = jax.nn.softmax(scores, axis=-1)
    return w * grad_weights
""",
        "jacobian_diagonal_only": """
def softmax_backward(scores, grad_weights):
    w = jax.nn.softmax(scores, axis=-1)
    return w * (1.0 - w) * grad_weights
""",
        "weights_factor_forgotten": """
def softmax_backward(scores, grad_weights):
    w = jax.nn.softmax(scores, axis=-1)
    return grad_weights - jnp.sum(w * grad_weights, axis=-1, keepdims=True)
""",
        "plain_mean_subtracted": """
def softmax_backward(scores, grad_weights):
    w = jax.nn.softmax(scores, axis=-1)
    return w * (grad_weights - jnp.mean(grad_weights, axis=-1, keepdims=True))
""",
        "sign_flipped": """
def softmax_backward(scores, grad_weights):
    w = jax.nn.softmax(scores, axis=-1)
    return w * (jnp.sum(w * grad_weights, axis=-1, keepdims=True) - grad_weights)
""",
        "softmax_without_max_shift": """
def softmax_backward(scores, grad_weights):
    e = jnp.exp(scores)
    w = e / jnp.sum(e, axis=-1, keepdims=True)
    return w * (grad_weights - jnp.sum(w * grad_weights, axis=-1, keepdims=True))
""",
        "autodiff_jax_vjp": """
def softmax_backward(scores, grad_weights):
    _, pullback = jax.vjp(lambda s: jax.nn.softmax(s, axis=-1), scores)
    return pullback(grad_weights)[0]
""",
        "autodiff_jax_grad_of_the_contraction": """
def softmax_backward(scores, grad_weights):
    return jax.grad(lambda s: jnp.sum(jax.nn.softmax(s, axis=-1) * grad_weights))(scores)
""",
        "autodiff_aliased_jacrev": """
from jax import jacrev as jacobian_of


def softmax_backward(scores, grad_weights):
    rows = scores.reshape(-1, scores.shape[-1])
    jacobians = jax.vmap(jacobian_of(jax.nn.softmax))(rows)  # (N, i, j)
    upstream = grad_weights.reshape(rows.shape)
    return jnp.einsum("ni,nij->nj", upstream, jacobians).reshape(scores.shape)
""",
        "autodiff_linearize_then_transpose": """
def softmax_backward(scores, grad_weights):
    _, forward = jax.linearize(lambda s: jax.nn.softmax(s, axis=-1), scores)
    return jax.linear_transpose(forward, scores)(grad_weights)[0]
""",
    },
    "causal_mask": {
        "mask_inverted": """
def causal_mask(T):
    return ~jnp.tril(jnp.ones((T, T), dtype=bool))
""",
        "upper_triangle": """
def causal_mask(T):
    return jnp.triu(jnp.ones((T, T), dtype=bool))
""",
        "strict_excludes_diagonal": """
def causal_mask(T):
    return jnp.tril(jnp.ones((T, T), dtype=bool), k=-1)
""",
        "float_not_bool": """
def causal_mask(T):
    return jnp.tril(jnp.ones((T, T)))
""",
    },
    "padding_mask": {
        "missing_query_axis": """
def padding_mask(lengths, T):
    return jnp.arange(T)[None, :] < lengths[:, None]
""",
        "off_by_one": """
def padding_mask(lengths, T):
    return (jnp.arange(T)[None, :] <= lengths[:, None])[:, None, :]
""",
        "mask_inverted": """
def padding_mask(lengths, T):
    return (jnp.arange(T)[None, :] >= lengths[:, None])[:, None, :]
""",
        "key_axis_in_the_middle": """
def padding_mask(lengths, T):
    return (jnp.arange(T)[None, :] < lengths[:, None])[:, :, None]
""",
    },
    "causal_leakage": {
        "perturbs_after_t_only": """
def causal_leakage(attend, x, t):
    x_new = x.at[..., t + 1:, :].add(1.0)
    return jnp.max(jnp.abs(attend(x_new)[..., :t, :] - attend(x)[..., :t, :]))
""",
        "compares_position_t_too": """
def causal_leakage(attend, x, t):
    x_new = x.at[..., t:, :].add(1.0)
    return jnp.max(jnp.abs(attend(x_new)[..., :t + 1, :] - attend(x)[..., :t + 1, :]))
""",
        "no_absolute_value": """
def causal_leakage(attend, x, t):
    x_new = x.at[..., t:, :].add(1.0)
    return jnp.max(attend(x_new)[..., :t, :] - attend(x)[..., :t, :])
""",
        "perturbs_features_not_positions": """
def causal_leakage(attend, x, t):
    x_new = x.at[..., t:].add(1.0)
    return jnp.max(jnp.abs(attend(x_new)[..., :t, :] - attend(x)[..., :t, :]))
""",
        "mean_instead_of_max": """
def causal_leakage(attend, x, t):
    x_new = x.at[..., t:, :].add(1.0)
    return jnp.mean(jnp.abs(attend(x_new)[..., :t, :] - attend(x)[..., :t, :]))
""",
    },
    "split_heads": {
        "reshape_without_transpose": """
def split_heads(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, num_heads, T, D // num_heads)
""",
        "heads_interleaved": """
def split_heads(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, T, D // num_heads, num_heads).transpose(0, 3, 1, 2)
""",
        "time_and_head_not_swapped": """
def split_heads(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, T, num_heads, D // num_heads)
""",
        "head_width_and_time_swapped": """
def split_heads(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, T, num_heads, D // num_heads).transpose(0, 2, 3, 1)
""",
    },
    "merge_heads": {
        "reshape_without_transpose": """
def merge_heads(x):
    B, H, T, d = x.shape
    return x.reshape(B, T, H * d)
""",
        "heads_interleaved": """
def merge_heads(x):
    B, H, T, d = x.shape
    return x.transpose(0, 2, 3, 1).reshape(B, T, H * d)
""",
        "heads_stacked_along_time": """
def merge_heads(x):
    B, H, T, d = x.shape
    return x.reshape(B, H * T, d)
""",
    },
    "MultiHeadSelfAttention": {
        "scaled_by_sqrt_d_model": """
class MultiHeadSelfAttention(nnx.Module):
    def __init__(self, num_heads, d_model, *, rngs):
        self.num_heads = num_heads
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, rngs=rngs)
        self.value = nnx.Linear(d_model, d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x, mask=None):
        q, k, v = (split_heads(f(x), self.num_heads) for f in (self.query, self.key, self.value))
        s = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(x.shape[-1])
        w = masked_softmax(s, mask)
        return self.out(merge_heads(jnp.einsum("bhqk,bhkd->bhqd", w, v)))
""",
        "heads_split_in_wrong_order": """
class MultiHeadSelfAttention(nnx.Module):
    def __init__(self, num_heads, d_model, *, rngs):
        self.num_heads = num_heads
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, rngs=rngs)
        self.value = nnx.Linear(d_model, d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x, mask=None):
        B, T, D = x.shape
        H = self.num_heads
        split = lambda y: y.reshape(B, H, T, D // H)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        heads, _ = scaled_dot_product_attention(q, k, v, mask)
        return self.out(heads.reshape(B, T, D))
""",
        "no_output_projection": """
class MultiHeadSelfAttention(nnx.Module):
    def __init__(self, num_heads, d_model, *, rngs):
        self.num_heads = num_heads
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, rngs=rngs)
        self.value = nnx.Linear(d_model, d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x, mask=None):
        q, k, v = (split_heads(f(x), self.num_heads) for f in (self.query, self.key, self.value))
        heads, _ = scaled_dot_product_attention(q, k, v, mask)
        return merge_heads(heads)
""",
        "mask_ignored": """
class MultiHeadSelfAttention(nnx.Module):
    def __init__(self, num_heads, d_model, *, rngs):
        self.num_heads = num_heads
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, rngs=rngs)
        self.value = nnx.Linear(d_model, d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x, mask=None):
        q, k, v = (split_heads(f(x), self.num_heads) for f in (self.query, self.key, self.value))
        heads, _ = scaled_dot_product_attention(q, k, v)
        return self.out(merge_heads(heads))
""",
        "keys_used_as_values": """
class MultiHeadSelfAttention(nnx.Module):
    def __init__(self, num_heads, d_model, *, rngs):
        self.num_heads = num_heads
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, rngs=rngs)
        self.value = nnx.Linear(d_model, d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x, mask=None):
        q, k = (split_heads(f(x), self.num_heads) for f in (self.query, self.key))
        heads, _ = scaled_dot_product_attention(q, k, k, mask)
        return self.out(merge_heads(heads))
""",
    },
    "sinusoidal_positions": {
        "sin_cos_swapped": """
def sinusoidal_positions(T, D):
    p = jnp.arange(T, dtype=jnp.float32)[:, None]
    angles = p / 10000.0 ** (jnp.arange(0, D, 2, dtype=jnp.float32)[None, :] / D)
    return jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1).reshape(T, D)
""",
        "exponent_i_over_d": """
def sinusoidal_positions(T, D):
    p = jnp.arange(T, dtype=jnp.float32)[:, None]
    angles = p / 10000.0 ** (jnp.arange(D // 2, dtype=jnp.float32)[None, :] / D)
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(T, D)
""",
        "halves_concatenated": """
def sinusoidal_positions(T, D):
    p = jnp.arange(T, dtype=jnp.float32)[:, None]
    angles = p / 10000.0 ** (jnp.arange(0, D, 2, dtype=jnp.float32)[None, :] / D)
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
""",
        "positions_from_one": """
def sinusoidal_positions(T, D):
    p = jnp.arange(1, T + 1, dtype=jnp.float32)[:, None]
    angles = p / 10000.0 ** (jnp.arange(0, D, 2, dtype=jnp.float32)[None, :] / D)
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(T, D)
""",
        "multiplied_instead_of_divided": """
def sinusoidal_positions(T, D):
    p = jnp.arange(T, dtype=jnp.float32)[:, None]
    angles = p * 10000.0 ** (-jnp.arange(0, D, 2, dtype=jnp.float32)[None, :])
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(T, D)
""",
    },
    "online_softmax_update": {
        "old_sums_not_rescaled": """
def online_softmax_update(m, l, a, s_block, v_block):
    m_new = jnp.maximum(m, jnp.max(s_block, axis=-1))
    shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    p = jnp.exp(s_block - shift[..., None])
    return m_new, l + jnp.sum(p, axis=-1), a + jnp.einsum("...qk,...kd->...qd", p, v_block)
""",
        "rescale_upside_down": """
def online_softmax_update(m, l, a, s_block, v_block):
    m_new = jnp.maximum(m, jnp.max(s_block, axis=-1))
    shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    p = jnp.exp(s_block - shift[..., None])
    rescale = jnp.where(jnp.isfinite(m), jnp.exp(shift - m), 0.0)
    l_new = rescale * l + jnp.sum(p, axis=-1)
    a_new = rescale[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_block)
    return m_new, l_new, a_new
""",
        "accumulator_not_rescaled": """
def online_softmax_update(m, l, a, s_block, v_block):
    m_new = jnp.maximum(m, jnp.max(s_block, axis=-1))
    shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    p = jnp.exp(s_block - shift[..., None])
    rescale = jnp.exp(m - shift)
    l_new = rescale * l + jnp.sum(p, axis=-1)
    return m_new, l_new, a + jnp.einsum("...qk,...kd->...qd", p, v_block)
""",
        "new_terms_against_the_old_maximum": """
def online_softmax_update(m, l, a, s_block, v_block):
    m_new = jnp.maximum(m, jnp.max(s_block, axis=-1))
    old = jnp.where(jnp.isfinite(m), m, 0.0)
    p = jnp.exp(s_block - old[..., None])
    shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    rescale = jnp.where(jnp.isfinite(m), jnp.exp(m - shift), 0.0)
    l_new = rescale * l + jnp.sum(p, axis=-1)
    a_new = rescale[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_block)
    return m_new, l_new, a_new
""",
        "block_maximum_only": """
def online_softmax_update(m, l, a, s_block, v_block):
    m_new = jnp.max(s_block, axis=-1)
    shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    p = jnp.exp(s_block - shift[..., None])
    rescale = jnp.exp(m - shift)
    l_new = rescale * l + jnp.sum(p, axis=-1)
    a_new = rescale[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_block)
    return m_new, l_new, a_new
""",
        "no_guard_for_minus_infinity": """
def online_softmax_update(m, l, a, s_block, v_block):
    m_new = jnp.maximum(m, jnp.max(s_block, axis=-1))
    p = jnp.exp(s_block - m_new[..., None])
    rescale = jnp.exp(m - m_new)
    l_new = rescale * l + jnp.sum(p, axis=-1)
    a_new = rescale[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_block)
    return m_new, l_new, a_new
""",
        "no_shift_at_all": """
def online_softmax_update(m, l, a, s_block, v_block):
    m_new = jnp.maximum(m, jnp.max(s_block, axis=-1))
    shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    p = jnp.exp(s_block)
    rescale = jnp.exp(m - shift)
    l_new = rescale * l + jnp.sum(p, axis=-1) * jnp.exp(-shift)
    new = jnp.einsum("...qk,...kd->...qd", p, v_block)
    a_new = rescale[..., None] * a + new * jnp.exp(-shift)[..., None]
    return m_new, l_new, a_new
""",
    },
    "online_softmax_attention": {
        "accumulator_not_rescaled": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    q = q / jnp.sqrt(d)
    m = jnp.full(q.shape[:-1], -jnp.inf)
    l = jnp.zeros(q.shape[:-1])
    a = jnp.zeros((*q.shape[:-1], v.shape[-1]))
    for start in range(0, k.shape[-2], block_size):
        k_j, v_j = k[..., start:start + block_size, :], v[..., start:start + block_size, :]
        s = jnp.einsum("...qd,...kd->...qk", q, k_j)
        if causal:
            ok = jnp.arange(start, start + k_j.shape[-2])[None, :] <= jnp.arange(T_q)[:, None]
            s = jnp.where(ok, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - m_safe[..., None])
        rescale = jnp.exp(m - m_safe)
        l = rescale * l + jnp.sum(p, axis=-1)
        a = a + jnp.einsum("...qk,...kd->...qd", p, v_j)
        m = m_new
    return a / l[..., None]
""",
        "normaliser_not_rescaled": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    q = q / jnp.sqrt(d)
    m = jnp.full(q.shape[:-1], -jnp.inf)
    l = jnp.zeros(q.shape[:-1])
    a = jnp.zeros((*q.shape[:-1], v.shape[-1]))
    for start in range(0, k.shape[-2], block_size):
        k_j, v_j = k[..., start:start + block_size, :], v[..., start:start + block_size, :]
        s = jnp.einsum("...qd,...kd->...qk", q, k_j)
        if causal:
            ok = jnp.arange(start, start + k_j.shape[-2])[None, :] <= jnp.arange(T_q)[:, None]
            s = jnp.where(ok, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - m_safe[..., None])
        rescale = jnp.exp(m - m_safe)
        l = l + jnp.sum(p, axis=-1)
        a = rescale[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_j)
        m = m_new
    return a / l[..., None]
""",
        "causal_excludes_diagonal": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    q = q / jnp.sqrt(d)
    m = jnp.full(q.shape[:-1], -jnp.inf)
    l = jnp.zeros(q.shape[:-1])
    a = jnp.zeros((*q.shape[:-1], v.shape[-1]))
    for start in range(0, k.shape[-2], block_size):
        k_j, v_j = k[..., start:start + block_size, :], v[..., start:start + block_size, :]
        s = jnp.einsum("...qd,...kd->...qk", q, k_j)
        if causal:
            ok = jnp.arange(start, start + k_j.shape[-2])[None, :] < jnp.arange(T_q)[:, None]
            s = jnp.where(ok, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - m_safe[..., None])
        rescale = jnp.exp(m - m_safe)
        l = rescale * l + jnp.sum(p, axis=-1)
        a = rescale[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_j)
        m = m_new
    return a / jnp.where(l > 0, l, 1.0)[..., None]
""",
        "drops_the_last_partial_block": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    q = q / jnp.sqrt(d)
    m = jnp.full(q.shape[:-1], -jnp.inf)
    l = jnp.zeros(q.shape[:-1])
    a = jnp.zeros((*q.shape[:-1], v.shape[-1]))
    for start in range(0, (k.shape[-2] // block_size) * block_size, block_size):
        k_j, v_j = k[..., start:start + block_size, :], v[..., start:start + block_size, :]
        s = jnp.einsum("...qd,...kd->...qk", q, k_j)
        if causal:
            ok = jnp.arange(start, start + k_j.shape[-2])[None, :] <= jnp.arange(T_q)[:, None]
            s = jnp.where(ok, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - m_safe[..., None])
        rescale = jnp.exp(m - m_safe)
        l = rescale * l + jnp.sum(p, axis=-1)
        a = rescale[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_j)
        m = m_new
    return a / jnp.where(l > 0, l, 1.0)[..., None]
""",
        "per_block_max_without_running_max": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    q = q / jnp.sqrt(d)
    l = jnp.zeros(q.shape[:-1])
    a = jnp.zeros((*q.shape[:-1], v.shape[-1]))
    for start in range(0, k.shape[-2], block_size):
        k_j, v_j = k[..., start:start + block_size, :], v[..., start:start + block_size, :]
        s = jnp.einsum("...qd,...kd->...qk", q, k_j)
        if causal:
            ok = jnp.arange(start, start + k_j.shape[-2])[None, :] <= jnp.arange(T_q)[:, None]
            s = jnp.where(ok, s, -jnp.inf)
        m_j = jnp.max(s, axis=-1)
        m_j = jnp.where(jnp.isfinite(m_j), m_j, 0.0)
        p = jnp.exp(s - m_j[..., None])
        l = l + jnp.sum(p, axis=-1)
        a = a + jnp.einsum("...qk,...kd->...qd", p, v_j)
    return a / l[..., None]
""",
        "causal_flag_ignored": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    q = q / jnp.sqrt(d)
    m = jnp.full(q.shape[:-1], -jnp.inf)
    l = jnp.zeros(q.shape[:-1])
    a = jnp.zeros((*q.shape[:-1], v.shape[-1]))
    for start in range(0, k.shape[-2], block_size):
        k_j, v_j = k[..., start:start + block_size, :], v[..., start:start + block_size, :]
        s = jnp.einsum("...qd,...kd->...qk", q, k_j)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        p = jnp.exp(s - m_new[..., None])
        rescale = jnp.exp(m - m_new)
        l = rescale * l + jnp.sum(p, axis=-1)
        a = rescale[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_j)
        m = m_new
    return a / l[..., None]
""",
        "naive_attention_returned": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    mask = causal_mask(q.shape[-2]) if causal else None
    return scaled_dot_product_attention(q, k, v, mask)[0]
""",
        "full_causal_mask_sliced_per_block": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    q = q / jnp.sqrt(d)
    allowed = causal_mask(T_q)  # a [T_q, T_k] array: what the kernel must not hold
    m = jnp.full(q.shape[:-1], -jnp.inf)
    l = jnp.zeros(q.shape[:-1])
    a = jnp.zeros((*q.shape[:-1], v.shape[-1]))
    for start in range(0, k.shape[-2], block_size):
        k_j, v_j = k[..., start:start + block_size, :], v[..., start:start + block_size, :]
        s = jnp.einsum("...qd,...kd->...qk", q, k_j)
        if causal:
            s = jnp.where(allowed[:, start:start + block_size], s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - safe[..., None])
        rescale = jnp.exp(m - safe)
        l = rescale * l + jnp.sum(p, axis=-1)
        a = rescale[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_j)
        m = m_new
    return a / l[..., None]
""",
        "block_size_ignored": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    block_size = 16  # a fixed block, whatever the caller asked
    q = q / jnp.sqrt(d)
    m = jnp.full(q.shape[:-1], -jnp.inf)
    l = jnp.zeros(q.shape[:-1])
    a = jnp.zeros((*q.shape[:-1], v.shape[-1]))
    for start in range(0, k.shape[-2], block_size):
        k_j, v_j = k[..., start:start + block_size, :], v[..., start:start + block_size, :]
        s = jnp.einsum("...qd,...kd->...qk", q, k_j)
        if causal:
            ok = jnp.arange(start, start + k_j.shape[-2])[None, :] <= jnp.arange(T_q)[:, None]
            s = jnp.where(ok, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - safe[..., None])
        rescale = jnp.exp(m - safe)
        l = rescale * l + jnp.sum(p, axis=-1)
        a = rescale[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_j)
        m = m_new
    return a / l[..., None]
""",
    },
    "causal_blockwise_attention": {
        "every_block_pair_masked_not_skipped": """
def causal_blockwise_attention(q, k, v, block_size):
    T, d = q.shape[-2:]
    q = q / jnp.sqrt(d)
    outputs = []
    for qs in range(0, T, block_size):
        q_i = q[..., qs:qs + block_size, :]
        qi = jnp.arange(qs, qs + q_i.shape[-2])[:, None]
        m = jnp.full(q_i.shape[:-1], -jnp.inf)
        l = jnp.zeros(q_i.shape[:-1])
        a = jnp.zeros((*q_i.shape[:-1], v.shape[-1]))
        for ks in range(0, T, block_size):
            k_j, v_j = k[..., ks:ks + block_size, :], v[..., ks:ks + block_size, :]
            s = jnp.einsum("...qd,...kd->...qk", q_i, k_j)
            s = jnp.where(jnp.arange(ks, ks + k_j.shape[-2])[None, :] <= qi, s, -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
            p = jnp.exp(s - safe[..., None])
            c = jnp.exp(m - safe)
            l = c * l + jnp.sum(p, axis=-1)
            a = c[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_j)
            m = m_new
        outputs.append(a / l[..., None])
    return jnp.concatenate(outputs, axis=-2)
""",
        "key_blocks_only_as_in_exercise_12": """
def causal_blockwise_attention(q, k, v, block_size):
    return online_softmax_attention(q, k, v, block_size, causal=True)
""",
        "naive_causal_attention": """
def causal_blockwise_attention(q, k, v, block_size):
    return scaled_dot_product_attention(q, k, v, causal_mask(q.shape[-2]))[0]
""",
        "diagonal_block_skipped_too": """
def causal_blockwise_attention(q, k, v, block_size):
    T, d = q.shape[-2:]
    q = q / jnp.sqrt(d)
    outputs = []
    for qs in range(0, T, block_size):
        q_i = q[..., qs:qs + block_size, :]
        m = jnp.full(q_i.shape[:-1], -jnp.inf)
        l = jnp.zeros(q_i.shape[:-1])
        a = jnp.zeros((*q_i.shape[:-1], v.shape[-1]))
        for ks in range(0, qs, block_size):
            k_j, v_j = k[..., ks:ks + block_size, :], v[..., ks:ks + block_size, :]
            s = jnp.einsum("...qd,...kd->...qk", q_i, k_j)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            p = jnp.exp(s - m_new[..., None])
            c = jnp.exp(m - m_new)
            l = c * l + jnp.sum(p, axis=-1)
            a = c[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_j)
            m = m_new
        outputs.append(a / jnp.where(l > 0, l, 1.0)[..., None])
    return jnp.concatenate(outputs, axis=-2)
""",
    },
    "reverse_train_step": {
        "optimizer_never_updates": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch
    log_p = jax.nn.log_softmax(model(tokens), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, targets[..., None], axis=-1))
""",
        "gradient_ascent": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch

    def loss_fn(model):
        log_p = jax.nn.log_softmax(model(tokens), axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_p, targets[..., None], axis=-1))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, jax.tree.map(lambda g: -g, grads))
    return loss
""",
        "tokens_as_targets": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch

    def loss_fn(model):
        log_p = jax.nn.log_softmax(model(tokens), axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_p, tokens[..., None], axis=-1))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "sum_instead_of_mean": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch

    def loss_fn(model):
        log_p = jax.nn.log_softmax(model(tokens), axis=-1)
        return -jnp.sum(jnp.take_along_axis(log_p, targets[..., None], axis=-1))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "loss_after_the_update": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch

    def loss_fn(model):
        log_p = jax.nn.log_softmax(model(tokens), axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_p, targets[..., None], axis=-1))

    grads = nnx.grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss_fn(model)
""",
        "softmax_over_time_axis": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch

    def loss_fn(model):
        log_p = jax.nn.log_softmax(model(tokens), axis=1)
        return -jnp.mean(jnp.take_along_axis(log_p, targets[..., None], axis=-1))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "ignored_targets_not_masked": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch

    def loss_fn(model):
        log_p = jax.nn.log_softmax(model(tokens), axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_p, targets[..., None], axis=-1))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "masked_but_divided_by_all_positions": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch
    kept = targets >= 0

    def loss_fn(model):
        log_p = jax.nn.log_softmax(model(tokens), axis=-1)
        picked = jnp.take_along_axis(log_p, jnp.where(kept, targets, 0)[..., None], axis=-1)[..., 0]
        return -jnp.sum(jnp.where(kept, picked, 0.0)) / targets.size

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "mean_over_every_sequence_including_empty": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch
    kept = targets >= 0

    def loss_fn(model):
        log_p = jax.nn.log_softmax(model(tokens), axis=-1)
        picked = jnp.take_along_axis(log_p, jnp.where(kept, targets, 0)[..., None], axis=-1)[..., 0]
        counts = jnp.maximum(kept.sum(-1), 1)
        per_sequence = -jnp.sum(jnp.where(kept, picked, 0.0), axis=-1) / counts
        return jnp.mean(per_sequence)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "token_mean_over_kept_positions": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch
    kept = targets >= 0
    safe_targets = jnp.where(kept, targets, 0)

    def loss_fn(model):
        log_p = jax.nn.log_softmax(model(tokens), axis=-1)
        picked = jnp.take_along_axis(log_p, safe_targets[..., None], axis=-1)[..., 0]
        return -jnp.sum(jnp.where(kept, picked, 0.0)) / jnp.maximum(jnp.sum(kept), 1)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
    },
}

CORRECT = {
    "attention_scores": {
        "matmul_with_swapaxes": """
def attention_scores(q, k):
    return q @ jnp.swapaxes(k, -1, -2) / jnp.sqrt(q.shape[-1])
""",
        "queries_scaled_first": """
def attention_scores(q, k):
    q = q * q.shape[-1] ** -0.5
    return jnp.matmul(q, jnp.moveaxis(k, -1, -2))
""",
        "numpy_style_sum": """
def attention_scores(q, k):
    return jnp.sum(q[..., :, None, :] * k[..., None, :, :], axis=-1) / np.sqrt(q.shape[-1])
""",
    },
    "masked_softmax": {
        "finfo_min_then_zeroed": """
def masked_softmax(scores, mask=None):
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    filled = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jnp.where(mask, jax.nn.softmax(filled, axis=-1), 0.0)
""",
        "jax_softmax_where": """
def masked_softmax(scores, mask=None):
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    mask = jnp.broadcast_to(mask, jnp.broadcast_shapes(mask.shape, scores.shape))
    scores = jnp.broadcast_to(scores, mask.shape)
    any_allowed = jnp.any(mask, axis=-1, keepdims=True)
    w = jax.nn.softmax(jnp.where(any_allowed, scores, 0.0), axis=-1, where=mask | ~any_allowed)
    return jnp.where(mask, w, 0.0)
""",
        "stop_gradient_max_and_tiny_denominator": """
def masked_softmax(scores, mask=None):
    if mask is None:
        mask = True
    s = jnp.where(mask, scores, -jnp.inf)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    e = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0))
    return e / jnp.maximum(e.sum(-1, keepdims=True), jnp.finfo(e.dtype).tiny)
""",
    },
    "scaled_dot_product_attention": {
        "composed_from_exercises": """
def scaled_dot_product_attention(q, k, v, mask=None):
    weights = masked_softmax(attention_scores(q, k), mask)
    return weights @ v, weights
""",
        "finfo_min_then_zeroed": """
def scaled_dot_product_attention(q, k, v, mask=None):
    s = q @ jnp.swapaxes(k, -1, -2) / jnp.sqrt(q.shape[-1])
    if mask is None:
        w = jax.nn.softmax(s, axis=-1)
    else:
        filled = jnp.where(mask, s, jnp.finfo(s.dtype).min)
        w = jnp.where(mask, jax.nn.softmax(filled, axis=-1), 0.0)
    return jnp.matmul(w, v), w
""",
        "genlab_style_einsum": """
def scaled_dot_product_attention(q, k, v, mask=None):
    s = jnp.einsum("...id,...jd->...ij", q / jnp.sqrt(q.shape[-1]), k)
    if mask is not None:
        s = jnp.where(mask, s, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0))
    w = e / jnp.maximum(jnp.sum(e, axis=-1, keepdims=True), jnp.finfo(e.dtype).tiny)
    return jnp.einsum("...ij,...jd->...id", w, v), w
""",
    },
    "dot_product_variance": {
        "second_moment_minus_squared_mean": """
def dot_product_variance(d, q_mean, q_var, k_mean, k_var):
    one_term = (q_var + q_mean**2) * (k_var + k_mean**2) - (q_mean * k_mean) ** 2
    return jnp.asarray(d * one_term, jnp.float32)
""",
        "numpy_float64": """
def dot_product_variance(d, q_mean, q_var, k_mean, k_var):
    qm, qv, km, kv = (np.asarray(a, np.float64) for a in (q_mean, q_var, k_mean, k_var))
    return np.float32(d) * (qv * kv + qv * km * km + qm * qm * kv).astype(np.float32)
""",
    },
    "softmax_entropy": {
        "entr": """
def softmax_entropy(scores):
    return jnp.sum(jax.scipy.special.entr(jax.nn.softmax(scores, axis=-1)), axis=-1)
""",
        "logsumexp_form": """
def softmax_entropy(scores):
    lse = jax.nn.logsumexp(scores, axis=-1, keepdims=True)
    p = jnp.exp(scores - lse)
    return -jnp.sum(jnp.where(p > 0, p * (scores - lse), 0.0), axis=-1)
""",
        "isfinite_guard": """
def softmax_entropy(scores):
    log_p = jax.nn.log_softmax(scores, axis=-1)
    return -jnp.sum(jnp.where(jnp.isfinite(log_p), jnp.exp(log_p) * log_p, 0.0), axis=-1)
""",
    },
    "softmax_backward": {
        "explicit_jacobian": """
def softmax_backward(scores, grad_weights):
    w = jax.nn.softmax(scores, axis=-1)  # (..., T)
    jacobian = w[..., :, None] * (jnp.eye(w.shape[-1]) - w[..., None, :])  # (..., i, j)
    return jnp.einsum("...i,...ij->...j", grad_weights, jacobian)
""",
        "log_space": """
def softmax_backward(scores, grad_weights):
    w = jnp.exp(scores - jax.scipy.special.logsumexp(scores, axis=-1, keepdims=True))
    return w * grad_weights - w * (w * grad_weights).sum(-1, keepdims=True)
""",
    },
    "causal_mask": {
        "index_comparison": """
def causal_mask(T):
    i = jnp.arange(T)
    return i[None, :] <= i[:, None]
""",
        "numpy_tri": """
def causal_mask(T):
    return jnp.asarray(np.tri(T, dtype=bool))
""",
        "not_upper_strict": """
def causal_mask(T):
    return ~jnp.triu(jnp.ones((T, T), dtype=bool), k=1)
""",
    },
    "padding_mask": {
        "three_axes_at_once": """
def padding_mask(lengths, T):
    return jnp.arange(T)[None, None, :] < lengths[:, None, None]
""",
        "numpy_loop": """
def padding_mask(lengths, T):
    rows = [[[j < int(n) for j in range(T)]] for n in np.asarray(lengths)]
    return jnp.asarray(np.array(rows, dtype=bool).reshape(len(rows), 1, T))
""",
        "expand_dims": """
def padding_mask(lengths, T):
    return jnp.expand_dims(jnp.arange(T) < jnp.expand_dims(lengths, -1), 1)
""",
    },
    "causal_leakage": {
        "concatenate_perturbation": """
def causal_leakage(attend, x, t):
    x_new = jnp.concatenate([x[..., :t, :], x[..., t:, :] + 1.0], axis=-2)
    return jnp.abs(attend(x)[..., :t, :] - attend(x_new)[..., :t, :]).max()
""",
        "mask_of_positions": """
def causal_leakage(attend, x, t):
    future = (jnp.arange(x.shape[-2]) >= t)[:, None]
    diff = attend(x + future.astype(x.dtype)) - attend(x)
    return jnp.max(jnp.abs(diff[..., :t, :]))
""",
    },
    "split_heads": {
        "moveaxis": """
def split_heads(x, num_heads):
    B, T, D = x.shape
    return jnp.moveaxis(x.reshape(B, T, num_heads, -1), 2, 1)
""",
        "stack_of_slices": """
def split_heads(x, num_heads):
    d = x.shape[-1] // num_heads
    return jnp.stack([x[..., h * d:(h + 1) * d] for h in range(num_heads)], axis=1)
""",
        "einsum_swap": """
def split_heads(x, num_heads):
    B, T, D = x.shape
    return jnp.einsum("bthd->bhtd", x.reshape(B, T, num_heads, D // num_heads))
""",
    },
    "merge_heads": {
        "concatenate_heads": """
def merge_heads(x):
    return jnp.concatenate([x[:, h] for h in range(x.shape[1])], axis=-1)
""",
        "swapaxes": """
def merge_heads(x):
    B, H, T, d = x.shape
    return jnp.swapaxes(x, 1, 2).reshape(B, T, -1)
""",
    },
    "MultiHeadSelfAttention": {
        "jax_nn_dot_product_attention": """
class MultiHeadSelfAttention(nnx.Module):
    def __init__(self, num_heads, d_model, *, rngs):
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, rngs=rngs)
        self.value = nnx.Linear(d_model, d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x, mask=None):
        B, T, D = x.shape
        shape = (B, T, self.num_heads, self.head_dim)  # jax.nn's [B, T, H, d] layout
        q, k, v = (f(x).reshape(shape) for f in (self.query, self.key, self.value))
        if mask is not None:
            mask = jnp.broadcast_to(mask, (B, self.num_heads, T, T))
            safe = jnp.any(mask, axis=-1, keepdims=True)
            out = jax.nn.dot_product_attention(q, k, v, mask=mask | ~safe)
            out = out * jnp.swapaxes(safe, 1, 2)  # queries with no key: zero output
        else:
            out = jax.nn.dot_product_attention(q, k, v)
        return self.out(out.reshape(B, T, D))
""",
        "own_einsums": """
class MultiHeadSelfAttention(nnx.Module):
    def __init__(self, num_heads, d_model, *, rngs):
        self.h = num_heads
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, rngs=rngs)
        self.value = nnx.Linear(d_model, d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x, mask=None):
        B, T, D = x.shape
        d = D // self.h
        q = self.query(x).reshape(B, T, self.h, d)
        k = self.key(x).reshape(B, T, self.h, d)
        v = self.value(x).reshape(B, T, self.h, d)
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
        w = masked_softmax(s, mask)
        return self.out(jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(B, T, D))
""",
    },
    "sinusoidal_positions": {
        "exp_log_form": """
def sinusoidal_positions(T, D):
    p = jnp.arange(T, dtype=jnp.float32)[:, None]
    inv_freq = jnp.exp(-jnp.log(10000.0) * jnp.arange(0, D, 2, dtype=jnp.float32) / D)
    angles = p * inv_freq[None, :]
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(T, D)
""",
        "numpy_loops": """
def sinusoidal_positions(T, D):
    pe = np.zeros((T, D), dtype=np.float32)
    for p in range(T):
        for i in range(D // 2):
            angle = p / 10000 ** (2 * i / D)
            pe[p, 2 * i], pe[p, 2 * i + 1] = np.sin(angle), np.cos(angle)
    return jnp.asarray(pe)
""",
    },
    "online_softmax_update": {
        "old_state_as_one_more_key": """
def online_softmax_update(m, l, a, s_block, v_block):
    everything = jnp.concatenate([m[..., None], s_block], axis=-1)  # (..., T_q, 1 + b)
    m_new = jnp.max(everything, axis=-1)
    safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    w = jnp.exp(everything - safe[..., None])  # the old state's factor first, then the block
    l_new = w[..., 0] * l + jnp.sum(w[..., 1:], axis=-1)
    a_new = w[..., :1] * a + w[..., 1:] @ v_block
    return m_new, l_new, a_new
""",
        "nan_cleaned_after": """
def online_softmax_update(m, l, a, s_block, v_block):
    m_new = jnp.maximum(m, s_block.max(axis=-1))
    p = jnp.nan_to_num(jnp.exp(s_block - m_new[..., None]), nan=0.0)
    rescale = jnp.nan_to_num(jnp.exp(m - m_new), nan=0.0)
    return (m_new, rescale * l + p.sum(axis=-1),
            rescale[..., None] * a + jnp.matmul(p, v_block))
""",
        "per_query_with_vmap": """
def online_softmax_update(m, l, a, s_block, v_block):
    def one(m, l, a, s, v):  # one query: (), (), (d_v,), (b,), (b, d_v)
        m_new = jnp.maximum(m, jnp.max(s))
        safe = jax.lax.select(jnp.isfinite(m_new), m_new, jnp.zeros_like(m_new))
        p = jnp.exp(s - safe)
        r = jnp.exp(m - safe)
        return m_new, r * l + p.sum(), r * a + p @ v
    lead = s_block.shape[:-2]
    v_block = jnp.broadcast_to(v_block, (*lead, *v_block.shape[-2:]))
    f = jax.vmap(one, in_axes=(0, 0, 0, 0, None))  # over queries
    for _ in lead:
        f = jax.vmap(f)
    return f(m, l, a, s_block, v_block)
""",
    },
    "online_softmax_attention": {
        "lax_scan_over_padded_blocks": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    T_k = k.shape[-2]
    n = -(-T_k // block_size)
    pad = [(0, 0)] * (k.ndim - 2) + [(0, n * block_size - T_k), (0, 0)]
    kb = jnp.moveaxis(jnp.pad(k, pad).reshape(*k.shape[:-2], n, block_size, d), -3, 0)
    vb = jnp.moveaxis(jnp.pad(v, pad).reshape(*v.shape[:-2], n, block_size, v.shape[-1]), -3, 0)
    q = q / np.sqrt(d)

    def body(carry, inputs):
        m, l, a = carry
        j, k_j, v_j = inputs
        idx = j * block_size + jnp.arange(block_size)
        ok = (idx < T_k)[None, :]
        if causal:
            ok = ok & (idx[None, :] <= jnp.arange(T_q)[:, None])
        s = jnp.where(ok, jnp.einsum("...qd,...kd->...qk", q, k_j), -jnp.inf)
        m_new = jnp.maximum(m, s.max(-1))
        base = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - base[..., None])
        c = jnp.exp(m - base)
        a = c[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_j)
        return (m_new, c * l + p.sum(-1), a), None

    init = (jnp.full(q.shape[:-1], -jnp.inf), jnp.zeros(q.shape[:-1]),
            jnp.zeros((*q.shape[:-1], v.shape[-1])))
    (_, l, a), _ = jax.lax.scan(body, init, (jnp.arange(n), kb, vb))
    return a / l[..., None]
""",
        "padded_blocks_with_where": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    T_k = k.shape[-2]
    n = -(-T_k // block_size)
    pad = [(0, 0)] * (k.ndim - 2) + [(0, n * block_size - T_k), (0, 0)]
    k, v = jnp.pad(k, pad), jnp.pad(v, pad)
    m = jnp.full(q.shape[:-1], -jnp.inf)
    l = jnp.zeros(q.shape[:-1])
    a = jnp.zeros((*q.shape[:-1], v.shape[-1]))
    for j in range(n):
        idx = j * block_size + jnp.arange(block_size)
        ok = (idx < T_k)[None, :]
        if causal:
            ok = ok & (idx[None, :] <= jnp.arange(T_q)[:, None])
        s = q @ jnp.swapaxes(k[..., idx, :], -1, -2) / np.sqrt(d)
        s = jnp.where(ok, s, -jnp.inf)
        m_new = jnp.maximum(m, s.max(-1))
        base = jnp.where(m_new == -jnp.inf, 0.0, m_new)
        p = jnp.where(ok, jnp.exp(s - base[..., None]), 0.0)
        c = jnp.where(m == -jnp.inf, 0.0, jnp.exp(m - base))
        l = c * l + p.sum(-1)
        a = c[..., None] * a + p @ v[..., idx, :]
        m = m_new
    return a / l[..., None]
""",
        "fori_loop_with_dynamic_slices": """
def online_softmax_attention(q, k, v, block_size, causal=False):
    T_q, d = q.shape[-2:]
    T_k = k.shape[-2]
    n = -(-T_k // block_size)
    pad = [(0, 0)] * (k.ndim - 2) + [(0, n * block_size - T_k), (0, 0)]
    kp, vp = jnp.pad(k, pad), jnp.pad(v, pad)
    q = q / jnp.sqrt(d)

    def body(j, carry):
        m, l, a = carry
        k_j = jax.lax.dynamic_slice_in_dim(kp, j * block_size, block_size, axis=-2)
        v_j = jax.lax.dynamic_slice_in_dim(vp, j * block_size, block_size, axis=-2)
        idx = j * block_size + jnp.arange(block_size)[None, :]
        ok = idx < T_k
        if causal:
            ok = ok & (idx <= jnp.arange(T_q)[:, None])
        s = jnp.where(ok, q @ jnp.swapaxes(k_j, -1, -2), -jnp.inf)
        m_new = jnp.maximum(m, s.max(-1))
        base = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - base[..., None])
        c = jnp.exp(m - base)
        return m_new, c * l + p.sum(-1), c[..., None] * a + p @ v_j

    init = (jnp.full(q.shape[:-1], -jnp.inf), jnp.zeros(q.shape[:-1]),
            jnp.zeros((*q.shape[:-1], v.shape[-1])))
    _, l, a = jax.lax.fori_loop(0, n, body, init)
    return a / l[..., None]
""",
    },
    "causal_blockwise_attention": {
        "scan_with_cond_over_key_blocks": """
def causal_blockwise_attention(q, k, v, block_size):
    T, d = q.shape[-2:]
    n = -(-T // block_size)
    pad = [(0, 0)] * (q.ndim - 2) + [(0, n * block_size - T), (0, 0)]

    def blocks(x):
        x = jnp.pad(x, pad)
        return jnp.moveaxis(x.reshape(*x.shape[:-2], n, block_size, x.shape[-1]), -3, 0)

    qb, kb, vb = blocks(q / np.sqrt(d)), blocks(k), blocks(v)
    offs = jnp.arange(block_size)

    def query_block(_, inputs):
        i, q_i = inputs
        qi = i * block_size + offs[:, None]

        def key_block(carry, inputs):
            j, k_j, v_j = inputs

            def visit(carry):
                m, l, a = carry
                s = jnp.einsum("...qd,...kd->...qk", q_i, k_j)
                s = jnp.where(j * block_size + offs[None, :] <= qi, s, -jnp.inf)
                m_new = jnp.maximum(m, s.max(-1))
                p = jnp.exp(s - m_new[..., None])
                c = jnp.exp(m - m_new)
                a = c[..., None] * a + jnp.einsum("...qk,...kd->...qd", p, v_j)
                return m_new, c * l + p.sum(-1), a

            return jax.lax.cond(j <= i, visit, lambda c: c, carry), None

        init = (jnp.full(q_i.shape[:-1], -jnp.inf), jnp.zeros(q_i.shape[:-1]),
                jnp.zeros((*q_i.shape[:-1], v.shape[-1])))
        (_, l, a), _ = jax.lax.scan(key_block, init, (jnp.arange(n), kb, vb))
        return None, a / l[..., None]

    _, out = jax.lax.scan(query_block, None, (jnp.arange(n), qb))
    out = jnp.moveaxis(out, 0, -3)
    return out.reshape(*out.shape[:-3], n * block_size, v.shape[-1])[..., :T, :]
""",
        "python_query_blocks_fori_loop_keys": """
def causal_blockwise_attention(q, k, v, block_size):
    T, d = q.shape[-2:]
    n = -(-T // block_size)
    pad = [(0, 0)] * (k.ndim - 2) + [(0, n * block_size - T), (0, 0)]
    kp, vp = jnp.pad(k, pad), jnp.pad(v, pad)
    q = q / jnp.sqrt(d)
    outs = []
    for i in range(n):
        q_i = q[..., i * block_size:(i + 1) * block_size, :]
        qi = i * block_size + jnp.arange(q_i.shape[-2])[:, None]

        def body(j, carry):
            m, l, a = carry
            k_j = jax.lax.dynamic_slice_in_dim(kp, j * block_size, block_size, axis=-2)
            v_j = jax.lax.dynamic_slice_in_dim(vp, j * block_size, block_size, axis=-2)
            s = jnp.where(j * block_size + jnp.arange(block_size)[None, :] <= qi,
                          q_i @ jnp.swapaxes(k_j, -1, -2), -jnp.inf)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            c = jnp.exp(m - m_new)
            return m_new, c * l + p.sum(-1), c[..., None] * a + p @ v_j

        init = (jnp.full(q_i.shape[:-1], -jnp.inf), jnp.zeros(q_i.shape[:-1]),
                jnp.zeros((*q_i.shape[:-1], v.shape[-1])))
        _, l, a = jax.lax.fori_loop(0, i + 1, body, init)
        outs.append(a / l[..., None])
    return jnp.concatenate(outs, axis=-2)
""",
    },
    "reverse_train_step": {
        "optax_cross_entropy": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch
    kept = targets >= 0
    counts = jnp.sum(kept, axis=1)
    present = counts > 0

    def loss_fn(model):
        labels = jnp.where(kept, targets, 0)
        per_token = optax.softmax_cross_entropy_with_integer_labels(model(tokens), labels)
        per_sequence = jnp.sum(per_token * kept, axis=1) / jnp.where(present, counts, 1)
        return jnp.sum(per_sequence * present) / jnp.maximum(jnp.sum(present), 1)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "split_and_merge_with_position_weights": """
def reverse_train_step(model, optimizer, batch):
    tokens, targets = batch
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    kept = (targets >= 0).astype(jnp.float32)
    counts = kept.sum(axis=-1, keepdims=True)
    sequences = jnp.sum(counts > 0)
    weights = kept / jnp.maximum(counts, 1.0) / jnp.maximum(sequences, 1)

    def loss_fn(params):
        logits = nnx.merge(graphdef, params, rest)(tokens)
        one_hot = jax.nn.one_hot(targets, logits.shape[-1])
        return -jnp.sum(weights * jnp.sum(one_hot * jax.nn.log_softmax(logits), axis=-1))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    optimizer.update(model, grads)
    return loss
""",
    },
}
