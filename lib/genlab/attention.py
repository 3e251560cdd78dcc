"""Reference implementations of chapter 03, self-attention.

The chapter (``solutions/03_self_attention/03_self_attention.ipynb``) teaches each function in
the section named below; the notebook's hidden tests compare the student's version with the one
here. Shape letters: B batch, H heads, T sequence length (T_q queries, T_k keys), D feature
width (d per head), V vocabulary.

    attention_scores              section 1, q k^T / sqrt(d)
    masked_softmax                sections 1 and 3 (a fully masked row gives zero weights)
    scaled_dot_product_attention  section 1, softmax(q k^T / sqrt(d)) v
    causal_mask, padding_mask     section 3 (boolean, True = may attend)
    causal_leakage                section 3, the leakage test (perturb the future)
    dot_product_variance          section 2, Var(q . k) for independent entries (why sqrt(d))
    softmax_entropy               sections 2 and 8 (how peaked the weights are)
    softmax_backward              section 2, the gradient of the loss with respect to the scores
    split_heads, merge_heads      section 4
    MultiHeadSelfAttention        section 4 (matches ``flax.nnx.MultiHeadAttention``)
    sinusoidal_positions          section 5 (Vaswani et al. 2017)
    LearnedPositions              section 5
    online_softmax_update         section 6, one step of the online-softmax recurrence
    online_softmax_attention      section 6 (blockwise, running max and normalizer)
    causal_blockwise_attention    section 6, the challenge (fully masked blocks skipped)
    ReverseModel, reverse_batch   section 7, the tiny trained example
    reverse_train_step            section 7 (loss, gradient, optimizer update)

Conventions: masks are boolean and True means "may attend"; they broadcast against the scores
``[..., T_q, T_k]``. A query whose keys are all masked gets zero weights and a zero output, never
NaN (a true mask, not a large negative number added to the scores).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genlab import initializers
from genlab.validate import broadcast_shapes, float_array, positive_int

__all__ = [
    "LearnedPositions",
    "MultiHeadSelfAttention",
    "ReverseModel",
    "attention_scores",
    "benchmark_kernels",
    "causal_blockwise_attention",
    "causal_leakage",
    "causal_mask",
    "dot_product_variance",
    "masked_softmax",
    "merge_heads",
    "naive_attention",
    "online_softmax_attention",
    "online_softmax_update",
    "padding_mask",
    "reverse_batch",
    "reverse_loss",
    "reverse_train_step",
    "scaled_dot_product_attention",
    "sinusoidal_positions",
    "softmax_backward",
    "softmax_entropy",
    "split_heads",
]


# --- argument checks -----------------------------------------------------------------------------


def _bool_mask(name: str, mask) -> jax.Array:
    if mask is None or isinstance(mask, (str, bytes, dict)):
        raise TypeError(f"{name} must be a boolean array, got {type(mask).__name__}")
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"{name} must be boolean (True = may attend), got dtype {mask.dtype}; "
            "use e.g. `mask > 0`, not an additive mask"
        )
    return mask


def _check_qkv(q, k, v=None):
    q = float_array("q", q, min_ndim=2)
    k = float_array("k", k, min_ndim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k need the same feature size d on the last axis, got q {q.shape}, k {k.shape}"
        )
    broadcast_shapes(("q batch", "k batch"), q.shape[:-2], k.shape[:-2])
    if v is None:
        return q, k
    v = float_array("v", v, min_ndim=2)
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"v must have one row per key (T_k = {k.shape[-2]} on axis -2), got v {v.shape}"
        )
    broadcast_shapes(("q batch", "k batch", "v batch"), q.shape[:-2], k.shape[:-2], v.shape[:-2])
    return q, k, v


# --- section 1: scores, softmax, attention -------------------------------------------------------


@jax.jit
def _scores(q: jax.Array, k: jax.Array) -> jax.Array:
    dtype = jnp.result_type(q, k)
    scale = jnp.asarray(1.0 / math.sqrt(q.shape[-1]), dtype)
    return jnp.einsum("...qd,...kd->...qk", q, k) * scale  # (..., T_q, T_k)


def attention_scores(q, k) -> jax.Array:
    """Scaled dot products ``q k^T / sqrt(d)`` (section 1).

    Args:
        q: queries ``[..., T_q, d]``, float.
        k: keys ``[..., T_k, d]``, float; leading axes broadcast against ``q``'s.

    Returns:
        ``[..., T_q, T_k]``: entry ``(i, j)`` is ``q_i . k_j / sqrt(d)``, ``d = q.shape[-1]``.
    """
    q, k = _check_qkv(q, k)
    return _scores(q, k)


@jax.jit
def _masked_softmax(scores: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    masked = jnp.where(mask, scores, -jnp.inf)  # (..., T_q, T_k)
    row_max = jnp.max(masked, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)  # fully masked rows: no shift
    exps = jnp.where(mask, jnp.exp(masked - jax.lax.stop_gradient(row_max)), 0.0)
    total = jnp.sum(exps, axis=-1, keepdims=True)
    return exps / jnp.where(total > 0, total, 1.0)  # fully masked rows stay 0


def masked_softmax(scores, mask=None) -> jax.Array:
    """Softmax over the key axis (-1) that ignores masked-out keys (sections 1 and 3).

    Args:
        scores: ``[..., T_q, T_k]``, float.
        mask: boolean, broadcastable against ``scores``; True = may attend. ``None`` means no
            mask (a plain softmax).

    Returns:
        Weights of the broadcast shape of ``scores`` and ``mask``: zero where the mask is False,
        each row summing to 1 over the keys it may attend to. A row with no allowed key is all
        zeros (never NaN).
    """
    scores = float_array("scores", scores, min_ndim=1)
    if mask is not None:
        mask = _bool_mask("mask", mask)
        broadcast_shapes(("scores", "mask"), scores.shape, mask.shape)
    return _masked_softmax(scores, mask)


@jax.jit
def _sdpa(q, k, v, mask):
    weights = _masked_softmax(_scores(q, k), mask)  # (..., T_q, T_k)
    out = jnp.einsum("...qk,...kd->...qd", weights.astype(v.dtype), v)  # (..., T_q, D_v)
    return out, weights


def scaled_dot_product_attention(q, k, v, mask=None) -> tuple[jax.Array, jax.Array]:
    """``softmax(q k^T / sqrt(d)) v`` with an optional boolean mask (section 1).

    Args:
        q: queries ``[..., T_q, d]``.
        k: keys ``[..., T_k, d]``.
        v: values ``[..., T_k, D_v]``; leading axes of q, k, v broadcast.
        mask: boolean, broadcastable against the scores ``[..., T_q, T_k]``; True = may attend.
            For heads ``[B, H, T_q, T_k]`` a padding mask ``[B, 1, T]`` needs ``[:, None]``.

    Returns:
        ``(out, weights)``: ``out [..., T_q, D_v]`` and ``weights [..., T_q, T_k]`` (rows sum to 1
        over allowed keys; a fully masked query gets zero weights and a zero output).

    Works inside ``jax.jit`` (the checks only read shapes and dtypes).
    """
    q, k, v = _check_qkv(q, k, v)
    if mask is not None:
        mask = _bool_mask("mask", mask)
        scores_shape = (
            *broadcast_shapes(("q", "k"), q.shape[:-2], k.shape[:-2]),
            q.shape[-2],
            k.shape[-2],
        )
        broadcast_shapes(("scores", "mask"), scores_shape, mask.shape)
    return _sdpa(q, k, v, mask)


def naive_attention(q, k, v, causal: bool = False) -> jax.Array:
    """The naive kernel of section 6: forms the full ``[..., T_q, T_k]`` matrix; returns out."""
    mask = causal_mask(q.shape[-2]) if causal else None
    return scaled_dot_product_attention(q, k, v, mask)[0]


def dot_product_variance(d: int, q_mean, q_var, k_mean, k_var) -> jax.Array:
    """Variance of ``q . k = sum_i q_i k_i`` for independent entries (chapter 03, section 2).

    All ``2 d`` entries are independent; every ``q_i`` has mean ``q_mean`` and variance ``q_var``,
    every ``k_i`` mean ``k_mean`` and variance ``k_var``. For one term,
    ``Var(q_i k_i) = E[q_i^2] E[k_i^2] - (E[q_i] E[k_i])^2``; the ``d`` terms are independent, so
    their variances add. Zero means and unit variances give ``d``: the reason for ``sqrt(d)``.

    Args:
        d: Python int >= 1, the width of a query (and of a key).
        q_mean, q_var, k_mean, k_var: floats or float arrays that broadcast together; the
            variances are >= 0.

    Returns:
        float32 array of the broadcast shape of the four moments.
    """
    d = positive_int("d", d)
    q_mean, q_var, k_mean, k_var = (jnp.asarray(a, jnp.float32)
                                    for a in (q_mean, q_var, k_mean, k_var))  # fmt: skip
    term = q_var * k_var + q_var * k_mean**2 + q_mean**2 * k_var  # Var(q_i k_i), expanded
    return d * term


@jax.jit
def _softmax_backward(scores: jax.Array, grad_weights: jax.Array) -> jax.Array:
    w = jax.nn.softmax(scores, axis=-1)  # (..., T)
    return w * (grad_weights - jnp.sum(w * grad_weights, axis=-1, keepdims=True))  # (..., T)


def softmax_backward(scores, grad_weights) -> jax.Array:
    """The gradient of a loss with respect to the scores, given its gradient w.r.t. the weights.

    With ``w = softmax(scores)`` over the last axis and ``g = dL/dw``, the chain rule through the
    softmax's Jacobian ``dw_i/ds_j = w_i (delta_ij - w_j)`` gives
    ``dL/ds_j = w_j (g_j - sum_i w_i g_i)`` (chapter 03, section 2): each row sums to 0, and it
    vanishes as the weights become one-hot.

    Args:
        scores: float ``[..., T]``, finite (large values such as 1e4 allowed).
        grad_weights: float ``[..., T]``, the same shape.

    Returns:
        float ``[..., T]``, ``dL/dscores``.
    """
    scores = float_array("scores", scores, min_ndim=1)
    grad_weights = float_array("grad_weights", grad_weights, min_ndim=1)
    if grad_weights.shape != scores.shape:
        raise ValueError(
            f"grad_weights must have the shape of scores {scores.shape}, got {grad_weights.shape}"
        )
    return _softmax_backward(scores, grad_weights)


@jax.jit
def _entropy(scores: jax.Array) -> jax.Array:
    log_p = jax.nn.log_softmax(scores, axis=-1)  # (..., T_k), -inf where a score is -inf
    p = jnp.exp(log_p)
    return -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)  # (...,), 0 log 0 = 0


def softmax_entropy(scores) -> jax.Array:
    """Entropy in nats of ``softmax(scores)`` over the last axis (sections 2 and 8).

    Args:
        scores: float ``[..., T_k]``; entries may be ``-inf`` (masked keys, probability 0,
            ``0 log 0 = 0``) but every row needs at least one finite entry.

    Returns:
        ``[...]``: ``-sum_j p_j log p_j`` with ``p = softmax(scores)``; between 0 (one-hot) and
        ``log T_k`` (uniform).
    """
    return _entropy(float_array("scores", scores, min_ndim=1))


def causal_leakage(attend, x, t: int) -> jax.Array:
    """How much outputs before position ``t`` move when inputs from ``t`` on change (section 3).

    Adds 1.0 to every feature of ``x`` at positions ``>= t`` (``x.at[..., t:, :].add(1.0)``) and
    returns ``max |attend(x)[..., :t, :] - attend(x_perturbed)[..., :t, :]|``, a float scalar.
    For a causal layer it is 0 (up to rounding); a layer that sees the future gives a positive
    number.

    Args:
        attend: a function ``[..., T, D] -> [..., T, D_out]``.
        x: float ``[..., T, D]``.
        t: the first perturbed position, ``1 <= t < T``.
    """
    x = float_array("x", x, min_ndim=2)
    t = positive_int("t", t)
    if t >= x.shape[-2]:
        raise ValueError(f"t must be < T = {x.shape[-2]}, got {t}")
    perturbed = x.at[..., t:, :].add(1.0)  # (..., T, D)
    before = attend(x)[..., :t, :]  # (..., t, D_out)
    after = attend(perturbed)[..., :t, :]
    return jnp.max(jnp.abs(after - before))


# --- section 3: masks ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _causal(T: int) -> jax.Array:
    return jnp.tril(jnp.ones((T, T), dtype=bool))


def causal_mask(T: int) -> jax.Array:
    """Boolean ``[T, T]``: entry ``(i, j)`` is True where key ``j <= query i`` (section 3)."""
    return _causal(positive_int("T", T))


def padding_mask(lengths, T: int) -> jax.Array:
    """Boolean ``[B, 1, T]``: True where key position ``< lengths[b]`` (section 3).

    Args:
        lengths: integer ``[B]``, the number of real (non-padding) tokens of each sequence.
        T: the padded length.

    The middle axis of size 1 broadcasts over the queries of ``[B, T_q, T_k]`` scores; add
    ``[:, None]`` for per-head scores ``[B, H, T_q, T_k]``.
    """
    T = positive_int("T", T)
    if lengths is None or isinstance(lengths, (str, bytes, dict)):
        raise TypeError(f"lengths must be an integer array [B], got {type(lengths).__name__}")
    lengths = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    if lengths.ndim != 1:
        raise ValueError(f"lengths must have shape [B], got {lengths.shape}")
    if not isinstance(lengths, jax.core.Tracer) and bool(jnp.any(lengths < 0)):
        raise ValueError(f"lengths must be >= 0, got {np.asarray(lengths)}")
    return (jnp.arange(T) < lengths[:, None])[:, None, :]  # (B, 1, T)


# --- section 4: heads ----------------------------------------------------------------------------


def split_heads(x, num_heads: int) -> jax.Array:
    """``[B, T, D] -> [B, num_heads, T, D // num_heads]`` (section 4).

    Head ``h`` takes features ``h * d : (h + 1) * d`` with ``d = D // num_heads``. Any number of
    leading axes is allowed: ``[..., T, D] -> [..., H, T, d]``.
    """
    x = float_array("x", x, min_ndim=2)
    num_heads = positive_int("num_heads", num_heads)
    *lead, T, D = x.shape
    if D % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide the feature size D={D}")
    x = x.reshape(*lead, T, num_heads, D // num_heads)  # (..., T, H, d)
    return jnp.swapaxes(x, -3, -2)  # (..., H, T, d)


def merge_heads(x) -> jax.Array:
    """The inverse of :func:`split_heads`: ``[B, H, T, d] -> [B, T, H * d]`` (section 4)."""
    x = float_array("x", x, min_ndim=3)
    *lead, H, T, d = x.shape
    x = jnp.swapaxes(x, -3, -2)  # (..., T, H, d)
    return x.reshape(*lead, T, H * d)  # (..., T, D)


class MultiHeadSelfAttention(nnx.Module):
    """Multi-head self-attention (section 4).

    ``x [B, T, D] -> [B, T, D]``: project to q, k, v with ``D x D`` linear maps (with bias),
    split into ``num_heads`` heads of width ``d = D // num_heads``, attend per head, merge, and
    project back. With the same weights it matches ``flax.nnx.MultiHeadAttention(num_heads, D,
    decode=False)``: its kernels ``[D, H, d]`` reshape to our ``[D, D]``.

    Args:
        num_heads: number of heads H (must divide ``d_model``).
        d_model: feature size D.
        rngs: random streams for the initializers (keyword-only).
    """

    def __init__(self, num_heads: int, d_model: int, *, rngs: nnx.Rngs):
        num_heads = positive_int("num_heads", num_heads)
        d_model = positive_int("d_model", d_model)
        if d_model % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide d_model={d_model}")
        self.num_heads, self.d_model = num_heads, d_model
        self.query = initializers.linear(d_model, d_model, rngs=rngs)
        self.key = initializers.linear(d_model, d_model, rngs=rngs)
        self.value = initializers.linear(d_model, d_model, rngs=rngs)
        self.out = initializers.linear(d_model, d_model, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, return_weights=False):
        """``x [B, T, D]``, ``mask`` broadcastable to ``[B, H, T, T]`` -> ``[B, T, D]``.

        With ``return_weights=True`` also returns the attention weights ``[B, H, T, T]``.
        """
        if x.ndim < 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape [..., T, {self.d_model}], got {x.shape}")
        q = split_heads(self.query(x), self.num_heads)  # (B, H, T, d)
        k = split_heads(self.key(x), self.num_heads)  # (B, H, T, d)
        v = split_heads(self.value(x), self.num_heads)  # (B, H, T, d)
        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, d), (B, H, T, T)
        out = self.out(merge_heads(out))  # (B, T, D)
        return (out, weights) if return_weights else out


# --- section 5: positions ------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sinusoidal(T: int, D: int) -> jax.Array:
    positions = jnp.arange(T, dtype=jnp.float32)[:, None]  # (T, 1)
    two_i = jnp.arange(0, D, 2, dtype=jnp.float32)[None, :]  # (1, ceil(D/2))
    angles = positions / jnp.power(10000.0, two_i / D)  # (T, ceil(D/2))
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # (T, ceil(D/2), 2)
    return pe.reshape(T, -1)[:, :D]  # (T, D)


def sinusoidal_positions(T: int, D: int) -> jax.Array:
    """Sinusoidal position encodings ``[T, D]`` (section 5; Vaswani et al. 2017), float32.

    ``PE[p, 2i] = sin(p / 10000^(2i / D))`` and ``PE[p, 2i + 1] = cos(p / 10000^(2i / D))``;
    for odd ``D`` the last column is a sine.
    """
    return _sinusoidal(positive_int("T", T), positive_int("D", D))


class LearnedPositions(nnx.Module):
    """Learned position embeddings (section 5): a table ``[max_len, D]``, one row per position.

    Call: ``positions(T) -> [T, D]`` (the first ``T`` rows); ``T <= max_len``.
    """

    def __init__(self, max_len: int, d_model: int, *, rngs: nnx.Rngs, stddev: float = 0.02):
        self.max_len = positive_int("max_len", max_len)
        self.d_model = positive_int("d_model", d_model)
        init = initializers.normal(stddev)
        self.table = nnx.Param(init(rngs.params(), (self.max_len, self.d_model)))

    def __call__(self, T: int) -> jax.Array:
        T = positive_int("T", T)
        if T > self.max_len:
            raise ValueError(f"T={T} exceeds max_len={self.max_len} of the position table")
        return self.table[...][:T]  # (T, D)


# --- section 6: the blockwise (online-softmax) kernel --------------------------------------------


def _broadcast_qkv(q, k, v):
    """q, k, v broadcast to common leading axes and one dtype."""
    batch = jnp.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    dtype = jnp.result_type(q, k, v)
    return batch, *(jnp.broadcast_to(x, (*batch, *x.shape[-2:])).astype(dtype) for x in (q, k, v))


def _blocks(x, block: int, num_blocks: int) -> jax.Array:
    """``[..., T, F] -> [N, ..., b, F]``: padded with zeros to ``N * b`` rows, blocks first."""
    widths = [(0, 0)] * (x.ndim - 2) + [(0, num_blocks * block - x.shape[-2]), (0, 0)]
    x = jnp.pad(x, widths).reshape(*x.shape[:-2], num_blocks, block, x.shape[-1])
    return jnp.moveaxis(x, -3, 0)  # (N, ..., b, F)


def _online_update(carry, s, allowed, v_j):
    """One step of the online-softmax recurrence over a block of scores ``s [..., T_q, b]``."""
    row_max, total, acc = carry  # (..., T_q), (..., T_q), (..., T_q, D_v)
    s = jnp.where(allowed, s, -jnp.inf)
    new_max = jnp.maximum(row_max, jnp.max(s, axis=-1))  # (..., T_q)
    safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    p = jnp.where(allowed, jnp.exp(s - safe_max[..., None]), 0.0)  # (..., T_q, b)
    rescale = jnp.exp(row_max - safe_max)  # 0 while nothing was seen (row_max = -inf)
    total = rescale * total + jnp.sum(p, axis=-1)
    acc = rescale[..., None] * acc + jnp.einsum("...qk,...kd->...qd", p, v_j)
    return new_max, total, acc


def _online_init(shape, D_v: int, dtype):
    return (jnp.full(shape, -jnp.inf, dtype), jnp.zeros(shape, dtype),
            jnp.zeros((*shape, D_v), dtype))  # fmt: skip


def _online_finish(total, acc):
    return acc / jnp.where(total > 0, total, 1.0)[..., None]  # a query with no key: zeros


@functools.partial(jax.jit, static_argnames=("block_size", "causal"))
def _online(q, k, v, block_size: int, causal: bool) -> jax.Array:
    """Every key block for all queries at once (the causal mask is applied, nothing skipped)."""
    batch, q, k, v = _broadcast_qkv(q, k, v)
    T_q, d = q.shape[-2:]
    T_k, D_v = v.shape[-2:]
    block = min(block_size, T_k)
    num_blocks = -(-T_k // block)
    k, v = _blocks(k, block, num_blocks), _blocks(v, block, num_blocks)  # (N, ..., b, d)
    q = q * jnp.asarray(1.0 / math.sqrt(d), q.dtype)
    query_index = jnp.arange(T_q)[:, None]  # (T_q, 1)

    def body(carry, inputs):
        j, k_j, v_j = inputs
        key_index = j * block + jnp.arange(block)[None, :]  # (1, b)
        allowed = key_index < T_k
        if causal:
            allowed = allowed & (key_index <= query_index)  # (T_q, b)
        s = jnp.einsum("...qd,...kd->...qk", q, k_j)  # (..., T_q, b)
        return _online_update(carry, s, allowed, v_j), None

    init = _online_init((*batch, T_q), D_v, q.dtype)
    (_, total, acc), _ = jax.lax.scan(body, init, (jnp.arange(num_blocks), k, v))
    return _online_finish(total, acc)  # (..., T_q, D_v)


_MAX_SCANS = 64  # above this many scans the causal kernel uses _online_causal_pairs instead


def _smallest_factor(n: int) -> int:
    return next(m for m in range(2, n + 1) if n % m == 0)


def _causal_scans(num_blocks: int) -> int:
    """How many ``lax.scan`` loops :func:`_causal_segments` emits for ``num_blocks`` blocks
    (``log2 N`` for a power of two, ``N - 1`` for a prime)."""
    n, scans = num_blocks, 0
    while n > 1:
        m = _smallest_factor(n)
        scans, n = scans + m - 1, n // m
    return scans


def _causal_segments(q, k, v, state, block: int):
    """Causal attention within each of ``S`` independent segments, continuing ``state``.

    ``q, k [..., S, n b, d]``, ``v [..., S, n b, D_v]``; ``state`` the running (max, normalizer,
    output) of those queries. A segment of ``n > 1`` blocks is cut into ``M`` parts of ``c = n /
    M`` blocks (``M`` the smallest factor of ``n``). Part ``p``'s queries need every key of parts
    ``0 .. p - 1`` (all in their past: no mask), which ``lax.scan`` visits one key block per step
    with the whole part's queries (scores ``[..., S, c b, b]``, ``p c`` steps, a trip count static
    per part); then each part is a segment of its own, recursively, keys in increasing order. A
    segment of one block is a diagonal pair ``(i, i)``, the only kind the causal mask cuts (the
    mask also hides the zero-padded keys of the last block from the real queries).
    Returns the updated state.
    """
    *lead, S, L, d = q.shape
    n = L // block
    if n == 1:
        position = jnp.arange(block)
        allowed = position[None, :] <= position[:, None]  # (b, b)
        s = jnp.einsum("...qd,...kd->...qk", q, k)  # (..., S, b, b)
        return _online_update(state, s, allowed, v)
    M = _smallest_factor(n)
    c = n // M
    rows = c * block  # queries per part
    row_axis = len(lead) + 1  # of q, k, v and of every state array

    def part(x, p):  # part p's rows: (..., S, c b, ...)
        return jax.lax.slice_in_dim(x, p * rows, (p + 1) * rows, axis=row_axis)

    parts = [tuple(part(x, p) for x in state) for p in range(M)]
    k_blocks = jnp.moveaxis(k.reshape(*lead, S, n, block, d), -3, 0)  # (n, ..., S, b, d)
    v_blocks = jnp.moveaxis(v.reshape(*lead, S, n, block, v.shape[-1]), -3, 0)  # (.., D_v)
    for p in range(1, M):  # part p x every key block of parts 0 .. p - 1, one per step
        q_p = part(q, p)  # (..., S, c b, d)

        def step(carry, kv, q_p=q_p):
            k_j, v_j = kv  # (..., S, b, d), (..., S, b, D_v)
            s = jnp.einsum("...qd,...kd->...qk", q_p, k_j)  # (..., S, c b, b)
            return _online_update(carry, s, True, v_j), None

        parts[p] = jax.lax.scan(step, parts[p], (k_blocks[: p * c], v_blocks[: p * c]))[0]
    state = tuple(jnp.concatenate(xs, axis=row_axis) for xs in zip(*parts))

    def split(x):  # (..., S, M c b, ...) -> (..., S M, c b, ...): every part a segment
        return x.reshape(*lead, S * M, rows, *x.shape[len(lead) + 2 :])

    state = _causal_segments(split(q), split(k), split(v), tuple(map(split, state)), block)
    return tuple(x.reshape(*lead, S, L, *x.shape[len(lead) + 2 :]) for x in state)


@functools.partial(jax.jit, static_argnames=("block_size",))
def _online_causal(q, k, v, block_size: int) -> jax.Array:
    """Causal attention that computes only the lower triangle of (query block, key block) pairs.

    The whole sequence (``N = ceil(T / b)`` blocks, zero-padded) is one segment for
    :func:`_causal_segments`: for ``N`` even, the second half of the queries takes every key of
    the first half (a full rectangle, one key block per scan step), then each half the same way,
    down to the ``N`` diagonal blocks. Exactly the ``N (N + 1) / 2`` pairs with key block ``j <=``
    query block ``i`` are computed, ``(N + 1) / (2 N)`` of the non-causal kernel's ``N^2``; the
    pairs ``j > i`` have no loop step, branch or product. Each query block sees its key blocks in
    the order ``0, 1, ..., i``, as the unskipped kernel does, so the result is the same to float32
    rounding. The steps of the first cuts are big products (half the queries x one key block);
    scores held at once are at most ``[..., T / 2, b]``. Above ``_MAX_SCANS`` scans (``N`` with a
    large prime factor) :func:`_online_causal_pairs` keeps the program small.
    """
    batch, q, k, v = _broadcast_qkv(q, k, v)
    T, d = q.shape[-2:]
    D_v = v.shape[-1]
    block = min(block_size, T)
    num_blocks = -(-T // block)
    if _causal_scans(num_blocks) > _MAX_SCANS:
        return _online_causal_pairs(q, k, v, block)
    pad = [(0, 0)] * len(batch) + [(0, num_blocks * block - T), (0, 0)]
    q = jnp.pad(q * jnp.asarray(1.0 / math.sqrt(d), q.dtype), pad)  # (..., N b, d)
    k, v = jnp.pad(k, pad), jnp.pad(v, pad)  # (..., N b, d), (..., N b, D_v)
    one = lambda x: x[..., None, :, :]  # noqa: E731  one segment: (..., 1, N b, ·)
    state = _online_init((*batch, 1, num_blocks * block), D_v, q.dtype)
    _, total, acc = _causal_segments(one(q), one(k), one(v), state, block)
    return _online_finish(total, acc)[..., 0, :T, :]  # (..., T, D_v)


def _online_causal_pairs(q, k, v, block: int) -> jax.Array:
    """:func:`_online_causal` as one ``lax.scan`` over the static list of the ``N (N - 1) / 2``
    pairs ``(i, j)``, ``j < i``, row by row, one ``b x b`` block per step (reading and writing
    query block ``i``'s running state), then the ``N`` diagonal blocks at once. The same pairs
    in the same order per query block, for any ``N``; slower on CPU (small products)."""
    batch = q.shape[:-2]
    T, d = q.shape[-2:]
    D_v = v.shape[-1]
    num_blocks = -(-T // block)
    q = _blocks(q * jnp.asarray(1.0 / math.sqrt(d), q.dtype), block, num_blocks)  # (N, ..., b, d)
    k, v = _blocks(k, block, num_blocks), _blocks(v, block, num_blocks)
    state = _online_init((num_blocks, *batch, block), D_v, q.dtype)  # (N, ..., b), .., (.., D_v)

    def pair(state, ij):
        i, j = ij[0], ij[1]
        carry = tuple(x[i] for x in state)  # query block i: (..., b), (..., b), (..., b, D_v)
        s = jnp.einsum("...qd,...kd->...qk", q[i], k[j])  # (..., b, b)
        new = _online_update(carry, s, True, v[j])
        return tuple(x.at[i].set(y) for x, y in zip(state, new)), None

    pairs = np.array([(i, j) for i in range(num_blocks) for j in range(i)], np.int32)
    if len(pairs):
        state, _ = jax.lax.scan(pair, state, pairs)  # (P, 2): P = N (N - 1) / 2 steps
    position = jnp.arange(block)
    allowed = position[None, :] <= position[:, None]  # (b, b): the diagonal blocks (i, i)
    s = jnp.einsum("n...qd,n...kd->n...qk", q, k)  # (N, ..., b, b)
    _, total, acc = _online_update(state, s, allowed, v)
    out = _online_finish(total, acc)  # (N, ..., b, D_v)
    out = jnp.moveaxis(out, 0, -3).reshape(*batch, num_blocks * block, D_v)
    return out[..., :T, :]  # (..., T, D_v)


@jax.jit
def _update_state(m, total, a, s_block, v_block):
    finite = jnp.isfinite(s_block)  # (..., T_q, b): -inf marks a masked key
    return _online_update((m, total, a), s_block, finite, v_block)


def online_softmax_update(m, l, a, s_block, v_block):  # noqa: E741 (l is the paper's name)
    """One step of the online-softmax recurrence (section 6, FlashAttention's Algorithm 1).

    The state of every query after some keys: ``m`` the largest score seen, ``l`` the sum of
    ``exp(s_j - m)`` and ``a`` the sum of ``exp(s_j - m) v_j`` over the keys seen. A new block
    of scores ``s_block`` (scaled already; ``-inf`` marks a masked key) with its values
    ``v_block`` arrives; the result is the state over the old keys and the new block, measured
    against the new maximum ``m' = max(m, max_j s_j)``: the old sums are rescaled by
    ``exp(m - m')`` and the new terms ``exp(s_j - m')`` added. Every exponent is ``<= 0``; a
    query whose maximum is still ``-inf`` (no allowed key yet) keeps ``l = 0``, ``a = 0``, and a
    block with no allowed key changes nothing.

    Args:
        m: float ``[..., T_q]``, finite or ``-inf``; l: float ``[..., T_q]`` (0 where ``m`` is
            ``-inf``); a: float ``[..., T_q, D_v]``.
        s_block: float ``[..., T_q, b]``, finite or ``-inf``.
        v_block: float ``[..., b, D_v]``.

    Returns:
        ``(m', l', a')`` with the shapes of ``(m, l, a)``, never NaN.
    """
    m = float_array("m", m)
    l = float_array("l", l)  # noqa: E741
    a = float_array("a", a, min_ndim=1)
    s_block = float_array("s_block", s_block, min_ndim=1)
    v_block = float_array("v_block", v_block, min_ndim=2)
    if l.shape != m.shape or a.shape[:-1] != m.shape or s_block.shape[:-1] != m.shape:
        raise ValueError(
            f"m, l must have one shape [..., T_q] and a, s_block that shape plus one axis, got "
            f"m {m.shape}, l {l.shape}, a {a.shape}, s_block {s_block.shape}"
        )
    if v_block.shape[-2] != s_block.shape[-1] or v_block.shape[-1] != a.shape[-1]:
        raise ValueError(
            f"v_block must be [..., b, D_v] with b = {s_block.shape[-1]} (s_block's last axis) "
            f"and D_v = {a.shape[-1]} (a's last axis), got {v_block.shape}"
        )
    return _update_state(m, l, a, s_block, v_block)


def online_softmax_attention(q, k, v, block_size: int, causal: bool = False) -> jax.Array:
    """Attention computed over key blocks with a running max and normalizer (section 6).

    The full ``[T_q, T_k]`` score matrix is never formed: ``lax.scan`` visits keys in blocks of
    ``block_size`` (the last block may be shorter; any ``T_k`` works), keeping for every query
    the running maximum ``m``, normalizer ``l`` and unnormalized output ``acc``; when the max
    grows, ``l`` and ``acc`` are rescaled by ``exp(m_old - m_new)`` (Milakov & Gimelshein 2018;
    FlashAttention, Algorithm 1).

    Args:
        q: ``[..., T_q, d]``; k: ``[..., T_k, d]``; v: ``[..., T_k, D_v]``.
        block_size: keys per block, an int >= 1 (static under jit).
        causal: if True, query ``i`` sees keys ``j <= i`` (needs ``T_q == T_k``); the queries
            are then cut into blocks too and fully masked block pairs are skipped
            (:func:`causal_blockwise_attention`), which saves about half the work.

    Returns:
        ``out [..., T_q, D_v]``, equal to ``scaled_dot_product_attention(q, k, v, mask)[0]``;
        a query with no allowed key gets zeros.
    """
    q, k, v = _check_qkv(q, k, v)
    block_size = positive_int("block_size", block_size)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"causal=True needs as many queries as keys, got T_q={q.shape[-2]}, T_k={k.shape[-2]}"
        )
    if causal:
        return causal_blockwise_attention(q, k, v, block_size)
    return _online(q, k, v, block_size=block_size, causal=False)


def causal_blockwise_attention(q, k, v, block_size: int) -> jax.Array:
    """Causal attention over query blocks and key blocks, skipping fully masked block pairs
    (section 6, the challenge).

    Queries and keys are cut into blocks of ``block_size`` (the last may be shorter). Query block
    ``i`` runs the online-softmax recurrence over key blocks ``j <= i`` only: every key of a block
    ``j > i`` is in the future of every query of block ``i``, so skipping it changes nothing and
    saves about half the work of :func:`online_softmax_attention` without the skip. The skipped
    pairs are not in the program at all (no branch decides at run time): of the ``N^2`` block
    pairs (``N = ceil(T / block_size)``) exactly ``N (N + 1) / 2`` are computed, the later
    queries against whole earlier key blocks in big products and the ``N`` diagonal blocks,
    the only ones the mask cuts, with the mask.

    Args:
        q, k: ``[..., T, d]``; v: ``[..., T, D_v]`` (as many queries as keys).
        block_size: an int >= 1.

    Returns:
        ``out [..., T, D_v]``, equal to ``online_softmax_attention(q, k, v, block_size, True)``.
    """
    q, k, v = _check_qkv(q, k, v)
    block_size = positive_int("block_size", block_size)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"causal attention needs as many queries as keys, got T_q={q.shape[-2]}, "
            f"T_k={k.shape[-2]}"
        )
    return _online_causal(q, k, v, block_size=block_size)


# --- section 7: a tiny trained example (reverse a sequence) --------------------------------------


def reverse_batch(key: jax.Array, batch_size: int, T: int, vocab_size: int):
    """A batch of the reversal task: ``(tokens [B, T] int32, targets [B, T] = tokens[:, ::-1])``."""
    tokens = jax.random.randint(key, (batch_size, T), 0, vocab_size, dtype=jnp.int32)
    return tokens, tokens[:, ::-1]


class ReverseModel(nnx.Module):
    """One attention layer that learns to reverse a sequence (section 7).

    Tokens ``[B, T]`` -> embeddings + learned positions ``[B, T, D]`` -> multi-head
    self-attention (no mask: every position may look everywhere) -> a linear readout to logits
    ``[B, T, V]``. There is no residual path, so each output token must be fetched by attention:
    the learned maps show the anti-diagonal ``j = T - 1 - i``.
    """

    def __init__(self, vocab_size: int, T: int, d_model: int, num_heads: int, *, rngs: nnx.Rngs):
        self.embed = initializers.embed(vocab_size, d_model, rngs=rngs)
        self.positions = LearnedPositions(T, d_model, rngs=rngs, stddev=1.0)
        self.attention = MultiHeadSelfAttention(num_heads, d_model, rngs=rngs)
        self.readout = initializers.linear(d_model, vocab_size, rngs=rngs)

    def __call__(self, tokens: jax.Array, *, return_weights: bool = False):
        """``tokens [B, T]`` -> logits ``[B, T, V]`` (and weights ``[B, H, T, T]`` if asked)."""
        x = self.embed(tokens) + self.positions(tokens.shape[-1])  # (B, T, D)
        h, weights = self.attention(x, return_weights=True)  # (B, T, D), (B, H, T, T)
        logits = self.readout(h)  # (B, T, V)
        return (logits, weights) if return_weights else logits


def _per_sequence_mean(values: jax.Array, kept: jax.Array) -> jax.Array:
    """Mean over the sequences that keep a position of each one's mean over its kept positions.

    ``values [B, T]`` float, ``kept [B, T]`` bool -> scalar; 0 (with a zero gradient) when no
    position is kept. Both divisions are guarded, so no NaN reaches the gradient.
    """
    counts = jnp.sum(kept, axis=-1)  # (B,)
    sums = jnp.sum(jnp.where(kept, values, 0.0), axis=-1)  # (B,)
    per_sequence = sums / jnp.maximum(counts, 1)  # (B,), 0 for a sequence with nothing kept
    present = counts > 0  # (B,)
    return jnp.sum(jnp.where(present, per_sequence, 0.0)) / jnp.maximum(jnp.sum(present), 1)


def reverse_loss(model: ReverseModel, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy (nats) and accuracy of ``model`` on ``(tokens, targets)``, per sequence.

    Targets equal to -1 are ignored. Each sequence's cross-entropy (accuracy) is the mean over
    its kept positions; the result is the mean of those over the sequences that keep at least
    one position, every such sequence weighing the same whatever its length (0 when no position
    is kept at all).
    """
    tokens, targets = batch
    if jnp.shape(tokens) != jnp.shape(targets):
        raise ValueError(
            "tokens and targets must have one shape, "
            f"got {jnp.shape(tokens)} and {jnp.shape(targets)}"
        )
    logits = model(tokens)  # (B, T, V)
    kept = targets >= 0  # (B, T)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_p, jnp.where(kept, targets, 0)[..., None], axis=-1)[..., 0]
    loss = _per_sequence_mean(-picked, kept)
    hits = (jnp.argmax(logits, axis=-1) == targets).astype(logits.dtype)  # (B, T)
    return loss, {"accuracy": _per_sequence_mean(hits, kept)}


def reverse_train_step(model: ReverseModel, optimizer: nnx.Optimizer, batch) -> jax.Array:
    """One training step of the reversal model (section 7); returns the loss before the update.

    ``batch = (tokens, targets)``, both integer ``[B, T]``; a target of -1 marks a position
    without a target (padding), which is ignored. The loss is a per-sequence mean: each
    sequence's mean cross-entropy (nats) of ``model(tokens)`` (logits ``[B, T, V]``) over its
    kept positions, averaged over the sequences that keep at least one position, so that every
    such sequence weighs the same whatever its length. Ignored positions and sequences change
    neither the loss nor the gradient; with no kept position the loss is 0 and the gradient is
    zero. Its gradient with respect to every ``nnx.Param`` of ``model`` is applied with
    ``optimizer.update(model, grads)``. Traceable: works under ``nnx.jit``, as a step for
    :func:`genlab.train.fit`.
    """

    def loss_fn(model):
        return reverse_loss(model, batch)[0]

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


# --- section 6: measuring the kernels ------------------------------------------------------------


def benchmark_kernels(
    lengths, *, block_size: int = 128, d: int = 64, num_heads: int = 1, repeats: int = 3, seed=0
) -> dict[str, np.ndarray]:
    """Time and scratch memory of the attention kernels for each length (section 6).

    For each ``T`` in ``lengths`` it draws q, k, v ``[1, num_heads, T, d]`` (float32), compiles
    the naive kernel, the blockwise one (non-causal), the blockwise one with ``causal=True``
    (masked block pairs skipped) and ``jax.nn.dot_product_attention`` (non-causal, its layout
    ``[B, T, H, d]``), and records the best of ``repeats`` wall-clock times per call (seconds,
    after one warm-up call). For the naive and the non-causal blockwise kernel it also records
    XLA's scratch ("temp") memory of the compiled program in bytes, what the kernel allocates
    besides its inputs and output (NaN where the backend does not report it).

    Returns:
        ``{"T", "naive_seconds", "blockwise_seconds", "causal_seconds", "jax_nn_seconds",
        "naive_bytes", "blockwise_bytes"}``, each an array ``[len(lengths)]``.
    """
    import time

    block_size = positive_int("block_size", block_size)
    to_bthd = functools.partial(jnp.swapaxes, axis1=1, axis2=2)
    kernels = {
        "naive": jax.jit(lambda q, k, v: _sdpa(q, k, v, None)[0]),
        "blockwise": jax.jit(lambda q, k, v: _online(q, k, v, block_size=block_size, causal=False)),
        "causal": jax.jit(lambda q, k, v: _online_causal(q, k, v, block_size=block_size)),
        "jax_nn": jax.jit(
            lambda q, k, v: jax.nn.dot_product_attention(to_bthd(q), to_bthd(k), to_bthd(v))
        ),
    }
    result = {"T": [], **{f"{name}_seconds": [] for name in kernels}}
    result.update(naive_bytes=[], blockwise_bytes=[])
    for T in lengths:
        T = positive_int("T", T)
        keys = jax.random.split(jax.random.key(seed), 3)
        q, k, v = (jax.random.normal(key, (1, num_heads, T, d)) for key in keys)
        result["T"].append(T)
        for name, kernel in kernels.items():
            if f"{name}_bytes" in result:
                analysis = kernel.lower(q, k, v).compile().memory_analysis()
                scratch = getattr(analysis, "temp_size_in_bytes", None)
                result[f"{name}_bytes"].append(float("nan") if scratch is None else float(scratch))
            kernel(q, k, v).block_until_ready()  # compile and warm up
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                kernel(q, k, v).block_until_ready()
                best = min(best, time.perf_counter() - start)
            result[f"{name}_seconds"].append(best)
    return {name: np.asarray(values) for name, values in result.items()}
