"""genlab.attention against independent references: jax.nn, flax.nnx, NumPy formulas, finite
differences, and the naive kernel for the blockwise one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from genlab import attention as A
from genlab import check, train


def normal(seed, *shapes):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return [jax.random.normal(key, shape) for key, shape in zip(keys, shapes)]


def to_bthd(x):  # (B, H, T, d) -> (B, T, H, d), jax.nn's layout
    return jnp.swapaxes(x, 1, 2)


def numpy_attention(q, k, v, mask=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(-1, keepdims=True)
    w = e / np.where(z > 0, z, 1.0)
    return w @ v, w


# --- attention_scores ----------------------------------------------------------------------------


def test_attention_scores_matches_numpy_formula():
    q, k = normal(0, (2, 5, 8), (2, 7, 8))
    expected = np.einsum("bqd,bkd->bqk", np.asarray(q), np.asarray(k)) / np.sqrt(8)
    np.testing.assert_allclose(A.attention_scores(q, k), expected, rtol=1e-5, atol=1e-6)


def test_attention_scores_broadcasts_batch_axes():
    q, k = normal(1, (2, 1, 5, 4), (3, 7, 4))
    assert A.attention_scores(q, k).shape == (2, 3, 5, 7)


def test_attention_scores_rejects_bad_input():
    q, k = normal(2, (5, 8), (7, 6))
    with pytest.raises(ValueError, match="same feature size d"):
        A.attention_scores(q, k)
    with pytest.raises(ValueError, match="q must have at least 2 axes"):
        A.attention_scores(jnp.ones(3), k)
    with pytest.raises(TypeError, match="q must be an array"):
        A.attention_scores("q", k)
    with pytest.raises(ValueError, match="do not broadcast"):
        A.attention_scores(jnp.ones((2, 5, 6)), jnp.ones((3, 7, 6)))


# --- masked_softmax ------------------------------------------------------------------------------


def test_masked_softmax_without_mask_is_jax_softmax():
    (s,) = normal(3, (4, 6, 9))
    np.testing.assert_allclose(A.masked_softmax(s), jax.nn.softmax(s, axis=-1), atol=1e-6)


def test_masked_softmax_matches_jax_softmax_where():
    (s,) = normal(4, (4, 6, 9))
    mask = jax.random.bernoulli(jax.random.key(5), 0.6, (4, 6, 9)).at[..., 0].set(True)
    expected = jax.nn.softmax(s, axis=-1, where=mask)
    expected = jnp.where(mask, expected, 0.0)
    np.testing.assert_allclose(A.masked_softmax(s, mask), expected, atol=1e-6)


def test_masked_softmax_fully_masked_row_is_zero_not_nan():
    (s,) = normal(6, (3, 4))
    mask = jnp.array([[True] * 4, [False] * 4, [True, False, False, False]])
    w = A.masked_softmax(s, mask)
    assert not np.isnan(np.asarray(w)).any()
    np.testing.assert_array_equal(w[1], 0.0)
    np.testing.assert_allclose(w.sum(-1), [1.0, 0.0, 1.0], atol=1e-6)
    grad = jax.grad(lambda s: jnp.sum(A.masked_softmax(s, mask) ** 2))(s)
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_array_equal(grad[1], 0.0)


def test_masked_softmax_is_stable_for_huge_scores():
    s = jnp.array([[1e30, 0.0, -1e30], [-1e30, -1e30, -1e30]], jnp.float32)
    w = A.masked_softmax(s, jnp.ones((2, 3), bool))
    np.testing.assert_allclose(w, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)


def test_masked_softmax_rejects_bad_mask():
    (s,) = normal(7, (3, 4))
    with pytest.raises(TypeError, match="mask must be boolean"):
        A.masked_softmax(s, jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="do not broadcast"):
        A.masked_softmax(s, jnp.ones((3, 5), bool))


# --- scaled_dot_product_attention ----------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_scaled_dot_product_attention_matches_jax_nn(causal):
    q, k, v = normal(8, (2, 3, 6, 8), (2, 3, 6, 8), (2, 3, 6, 8))
    mask = A.causal_mask(6) if causal else None
    out, weights = A.scaled_dot_product_attention(q, k, v, mask)
    expected = jax.nn.dot_product_attention(to_bthd(q), to_bthd(k), to_bthd(v), is_causal=causal)
    np.testing.assert_allclose(out, to_bthd(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


def test_scaled_dot_product_attention_matches_jax_nn_with_padding_mask():
    q, k, v = normal(9, (3, 2, 5, 4), (3, 2, 7, 4), (3, 2, 7, 4))
    mask = A.padding_mask(jnp.array([7, 3, 1]), 7)[:, None]  # (B, 1, 1, T_k)
    out, weights = A.scaled_dot_product_attention(q, k, v, mask)
    expected = jax.nn.dot_product_attention(to_bthd(q), to_bthd(k), to_bthd(v), mask=mask)
    np.testing.assert_allclose(out, to_bthd(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(weights[2, :, :, 1:]), 0.0)


def test_scaled_dot_product_attention_value_width_and_fully_masked_rows():
    q, k, v = normal(10, (4, 8), (6, 8), (6, 3))
    mask = jnp.ones((4, 6), bool).at[2].set(False)
    out, weights = A.scaled_dot_product_attention(q, k, v, mask)
    exp_out, exp_w = numpy_attention(q, k, v, np.asarray(mask))
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out, exp_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights, exp_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[2], 0.0)


def test_scaled_dot_product_attention_gradient_matches_jax_nn():
    q, k, v = normal(11, (1, 5, 2, 4), (1, 5, 2, 4), (1, 5, 2, 4))  # (B, T, H, d)

    def ours(q, k, v):
        bhtd = [jnp.swapaxes(a, 1, 2) for a in (q, k, v)]
        return jnp.sum(jnp.sin(A.scaled_dot_product_attention(*bhtd, A.causal_mask(5))[0]))

    def reference(q, k, v):
        return jnp.sum(jnp.sin(jax.nn.dot_product_attention(q, k, v, is_causal=True)))

    for got, want in zip(
        jax.grad(ours, (0, 1, 2))(q, k, v), jax.grad(reference, (0, 1, 2))(q, k, v)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_scaled_dot_product_attention_gradient_matches_finite_differences():
    q, k, v = normal(12, (3, 4), (5, 4), (5, 2))
    with jax.enable_x64(True):
        q, k, v = (jnp.asarray(np.asarray(a), jnp.float64) for a in (q, k, v))
        mask = jnp.array(np.random.default_rng(0).random((3, 5)) < 0.7).at[:, 0].set(True)

        def f(q):
            return jnp.sum(A.scaled_dot_product_attention(q, k, v, mask)[0] ** 2)

        grad = np.asarray(jax.grad(f)(q))
        eps, numeric = 1e-6, np.zeros(q.shape)
        for index in np.ndindex(q.shape):
            step = jnp.zeros(q.shape, jnp.float64).at[index].set(eps)
            numeric[index] = (f(q + step) - f(q - step)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_scaled_dot_product_attention_works_under_jit():
    q, k, v = normal(13, (2, 2, 4, 8), (2, 2, 4, 8), (2, 2, 4, 8))
    mask = A.causal_mask(4)
    jitted = jax.jit(lambda q, k, v, m: A.scaled_dot_product_attention(q, k, v, m)[0])
    np.testing.assert_allclose(jitted(q, k, v, mask), A.naive_attention(q, k, v, True), atol=1e-6)


def test_scaled_dot_product_attention_rejects_bad_input():
    q, k, v = normal(14, (4, 8), (6, 8), (5, 8))
    with pytest.raises(ValueError, match="one row per key"):
        A.scaled_dot_product_attention(q, k, v)
    with pytest.raises(ValueError, match="do not broadcast"):
        A.scaled_dot_product_attention(q, k, k, jnp.ones((5, 6), bool))
    with pytest.raises(TypeError, match="mask must be boolean"):
        A.scaled_dot_product_attention(q, k, k, jnp.zeros((4, 6)))


# --- masks ---------------------------------------------------------------------------------------


def test_causal_mask_blocks_future():
    mask = np.asarray(A.causal_mask(5))
    assert mask.dtype == bool and mask.shape == (5, 5)
    i, j = np.indices((5, 5))
    np.testing.assert_array_equal(mask, j <= i)


def test_causal_mask_rejects_bad_length():
    with pytest.raises(ValueError, match="T must be >= 1"):
        A.causal_mask(0)
    with pytest.raises(TypeError, match="T must be an int"):
        A.causal_mask(2.0)


def test_padding_mask_marks_real_tokens():
    mask = np.asarray(A.padding_mask(jnp.array([0, 2, 4, 6]), 4))
    assert mask.shape == (4, 1, 4) and mask.dtype == bool
    expected = np.arange(4)[None, :] < np.array([0, 2, 4, 6])[:, None]
    np.testing.assert_array_equal(mask[:, 0], expected)


def test_padding_mask_rejects_bad_input():
    with pytest.raises(TypeError, match="lengths must be integers"):
        A.padding_mask(jnp.array([1.0, 2.0]), 3)
    with pytest.raises(ValueError, match="lengths must have shape"):
        A.padding_mask(jnp.array([[1, 2]]), 3)
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        A.padding_mask(jnp.array([-1, 2]), 3)


def test_padding_and_causal_masks_combine():
    mask = A.padding_mask(jnp.array([2, 3]), 3) & A.causal_mask(3)  # (B, T, T)
    assert mask.shape == (2, 3, 3)
    np.testing.assert_array_equal(mask[0], [[1, 0, 0], [1, 1, 0], [1, 1, 0]])


# --- heads ---------------------------------------------------------------------------------------


def test_split_heads_takes_contiguous_feature_slices():
    x = jnp.arange(2 * 3 * 12, dtype=jnp.float32).reshape(2, 3, 12)
    heads = A.split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(heads[1, 2, 0], x[1, 0, 6:9])
    np.testing.assert_array_equal(A.merge_heads(heads), x)


def test_split_heads_rejects_bad_input():
    with pytest.raises(ValueError, match="num_heads=5 must divide"):
        A.split_heads(jnp.ones((1, 2, 12)), 5)
    with pytest.raises(ValueError, match="num_heads must be >= 1"):
        A.split_heads(jnp.ones((1, 2, 12)), 0)
    with pytest.raises(ValueError, match="x must have at least 3 axes"):
        A.merge_heads(jnp.ones((2, 12)))


def copy_from_flax(ours: A.MultiHeadSelfAttention, theirs: nnx.MultiHeadAttention):
    D = ours.d_model
    for name in ("query", "key", "value"):
        layer = getattr(theirs, name)
        getattr(ours, name).kernel[...] = layer.kernel[...].reshape(D, D)
        getattr(ours, name).bias[...] = layer.bias[...].reshape(D)
    ours.out.kernel[...] = theirs.out.kernel[...].reshape(D, D)
    ours.out.bias[...] = theirs.out.bias[...]


@pytest.mark.parametrize("masked", [False, True])
def test_multi_head_self_attention_matches_flax(masked):
    B, T, D, H = 2, 6, 16, 4
    theirs = nnx.MultiHeadAttention(
        num_heads=H, in_features=D, qkv_features=D, out_features=D, decode=False,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    theirs.out.bias[...] = jax.random.normal(jax.random.key(3), (D,))
    for name in ("query", "key", "value"):
        getattr(theirs, name).bias[...] = jax.random.normal(jax.random.key(4), (H, D // H))
    ours = A.MultiHeadSelfAttention(H, D, rngs=nnx.Rngs(1))
    copy_from_flax(ours, theirs)
    (x,) = normal(15, (B, T, D))
    mask = (A.causal_mask(T) & A.padding_mask(jnp.array([6, 4]), T))[:, None] if masked else None
    out, weights = ours(x, mask, return_weights=True)
    np.testing.assert_allclose(out, theirs(x, mask=mask), rtol=1e-5, atol=1e-5)
    assert weights.shape == (B, H, T, T)


def test_multi_head_self_attention_rejects_bad_config():
    with pytest.raises(ValueError, match="num_heads=3 must divide d_model=16"):
        A.MultiHeadSelfAttention(3, 16, rngs=nnx.Rngs(0))
    layer = A.MultiHeadSelfAttention(2, 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="x must have shape"):
        layer(jnp.ones((1, 3, 6)))


def test_multi_head_self_attention_is_permutation_equivariant():
    layer = A.MultiHeadSelfAttention(2, 8, rngs=nnx.Rngs(0))
    (x,) = normal(16, (1, 5, 8))
    perm = jnp.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(layer(x[:, perm]), layer(x)[:, perm], atol=1e-5)


# --- positions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("D", [8, 7])
def test_sinusoidal_positions_matches_formula(D):
    T = 11
    expected = np.zeros((T, D))
    for p in range(T):
        for c in range(D):
            angle = p / 10000 ** (2 * (c // 2) / D)
            expected[p, c] = np.sin(angle) if c % 2 == 0 else np.cos(angle)
    pe = A.sinusoidal_positions(T, D)
    assert pe.shape == (T, D) and pe.dtype == jnp.float32
    np.testing.assert_allclose(pe, expected, rtol=1e-5, atol=1e-5)


def test_sinusoidal_positions_rejects_bad_sizes():
    with pytest.raises(ValueError, match="D must be >= 1"):
        A.sinusoidal_positions(4, 0)


def test_learned_positions_returns_first_rows():
    positions = A.LearnedPositions(10, 4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(positions(3), positions.table[...][:3])
    with pytest.raises(ValueError, match="exceeds max_len"):
        positions(11)


# --- online_softmax_update -----------------------------------------------------------------------


def numpy_state(scores, values):
    """(m, l, a) over all keys at once, from the definitions, in float64."""
    scores, values = np.asarray(scores, np.float64), np.asarray(values, np.float64)
    m = scores.max(axis=-1)
    with np.errstate(invalid="ignore"):
        e = np.where(
            np.isfinite(m)[..., None],
            np.exp(scores - np.where(np.isfinite(m), m, 0)[..., None]),
            0.0,
        )
    return m, e.sum(axis=-1), e @ values


@pytest.mark.parametrize("block_size", [1, 3, 7, 40])
def test_online_softmax_update_streamed_equals_the_state_in_one_go(block_size):
    scores, values = normal(30, (2, 4, 29), (2, 29, 3))
    scores = 5.0 * scores + jnp.linspace(0.0, 60.0, 29)  # the maximum grows, exp would overflow
    scores = scores.at[0, 1].set(-jnp.inf).at[1, 2, :9].set(-jnp.inf)  # masked rows and prefixes
    state = (jnp.full((2, 4), -jnp.inf), jnp.zeros((2, 4)), jnp.zeros((2, 4, 3)))
    for start in range(0, 29, block_size):
        block = scores[..., start : start + block_size], values[:, start : start + block_size]
        state = A.online_softmax_update(*state, *block)
    for got, want in zip(state, numpy_state(scores, values)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_online_softmax_update_block_with_nothing_allowed_changes_nothing():
    m, total, a = jnp.array([3.0, -jnp.inf]), jnp.array([2.0, 0.0]), jnp.array([[1.0], [0.0]])
    got = A.online_softmax_update(m, total, a, jnp.full((2, 5), -jnp.inf), jnp.ones((5, 1)))
    for g, w in zip(got, (m, total, a)):
        np.testing.assert_array_equal(g, w)


def test_online_softmax_update_rejects_mismatched_shapes():
    m, total, a = jnp.zeros(3), jnp.ones(3), jnp.zeros((3, 2))
    with pytest.raises(ValueError, match="s_block"):
        A.online_softmax_update(m, total, a, jnp.zeros((4, 5)), jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="v_block"):
        A.online_softmax_update(m, total, a, jnp.zeros((3, 5)), jnp.zeros((4, 2)))


# --- online_softmax_attention --------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T", [1, 7, 16, 33])
@pytest.mark.parametrize("block_size", [1, 3, 4, 16, 64])
def test_online_softmax_attention_matches_naive(T, block_size, causal):
    q, k, v = normal(T + block_size, (2, 3, T, 8), (2, 3, T, 8), (2, 3, T, 5))
    expected = A.naive_attention(q, k, v, causal)
    out = A.online_softmax_attention(q, k, v, block_size, causal=causal)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-6)


def test_online_softmax_attention_matches_jax_nn_causal():
    q, k, v = normal(17, (1, 37, 2, 16), (1, 37, 2, 16), (1, 37, 2, 16))  # (B, T, H, d)
    out = A.online_softmax_attention(*(to_bthd(a) for a in (q, k, v)), 8, causal=True)
    expected = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(to_bthd(out), expected, rtol=1e-5, atol=1e-5)


def test_online_softmax_attention_handles_different_query_and_key_lengths():
    q, k, v = normal(18, (5, 4), (13, 4), (13, 6))
    np.testing.assert_allclose(
        A.online_softmax_attention(q, k, v, 4), A.naive_attention(q, k, v), rtol=1e-5, atol=1e-6
    )


def test_online_softmax_attention_is_stable_for_growing_scores():
    # Keys whose scores grow block after block force a rescale at every step.
    q = jnp.ones((2, 4)) * 10.0
    k = jnp.linspace(0, 30, 12)[:, None] * jnp.ones((12, 4))
    (v,) = normal(19, (12, 3))
    out = A.online_softmax_attention(q, k, v, 3)
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(out, A.naive_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_online_softmax_attention_gradient_matches_naive():
    q, k, v = normal(20, (9, 4), (9, 4), (9, 4))
    grads = jax.grad(lambda q: jnp.sum(A.online_softmax_attention(q, k, v, 4, True) ** 2))(q)
    expected = jax.grad(lambda q: jnp.sum(A.naive_attention(q, k, v, True) ** 2))(q)
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-5)


CAUSAL_SHAPES = [(1, 1), (7, 3), (16, 4), (33, 16), (33, 64), (35, 5), (50, 7)]


@pytest.mark.parametrize("T, block_size", CAUSAL_SHAPES)
def test_causal_blockwise_attention_equals_the_unskipped_kernel(T, block_size):
    # T not a multiple of the block size, N = ceil(T / b) a power of two, composite or prime.
    q, k, v = normal(T + 40, (2, 3, T, 8), (2, 3, T, 8), (2, 3, T, 5))
    skipped = A.causal_blockwise_attention(q, k, v, block_size)
    unskipped = A._online(q, k, v, block_size=block_size, causal=True)  # every block computed
    np.testing.assert_allclose(skipped, unskipped, rtol=1e-5, atol=2e-6)
    expected, _ = numpy_attention(q, k, v, np.tril(np.ones((T, T), bool)))
    np.testing.assert_allclose(skipped, expected, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(skipped, A.naive_attention(q, k, v, True), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(A.online_softmax_attention(q, k, v, block_size, True), skipped)
    # The fallback for block counts with a large prime factor visits the same pairs.
    pairs = A._online_causal_pairs(q, k, v, min(block_size, T))
    np.testing.assert_allclose(pairs, skipped, rtol=1e-5, atol=2e-6)


def test_causal_blockwise_attention_broadcasts_batch_axes_and_value_width():
    # q (B, 1, T, d), k (1, H, T, d), v (T, D_v): the leading axes broadcast.
    q, k, v = normal(44, (2, 1, 21, 6), (1, 3, 21, 6), (21, 4))
    out = A.causal_blockwise_attention(q, k, v, 4)
    assert out.shape == (2, 3, 21, 4)
    expected, _ = numpy_attention(*np.broadcast_arrays(q, k), v, np.tril(np.ones((21, 21), bool)))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-6)


def _block_pair_work(function, *args):
    """Multiplications of every matrix product in ``function``'s program, read from its jaxpr:
    each ``dot_general`` counts ``output size x contracted size`` times the trip counts of the
    scans around it. Static: a ``cond`` or ``while`` (work that depends on run-time values)
    raises."""

    def walk(jaxpr, repeat):
        total = 0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if name in ("cond", "while"):
                raise AssertionError(f"the kernel has a {name}: its work is not static")
            if name == "dot_general":
                (contract, _), _ = eqn.params["dimension_numbers"]
                shape = eqn.invars[0].aval.shape
                out_size = int(np.prod(eqn.outvars[0].aval.shape))
                total += repeat * out_size * int(np.prod([shape[a] for a in contract]))
            inner = repeat * eqn.params["length"] if name == "scan" else repeat
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else [value]:
                    if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                        total += walk(getattr(sub, "jaxpr", sub), inner)
        return total

    return walk(jax.make_jaxpr(function)(*args).jaxpr, 1)


@pytest.mark.parametrize("T, block_size", [(64, 8), (96, 8), (40, 8), (33, 8), (512, 64)])
def test_causal_blockwise_attention_visits_only_the_lower_triangle_of_block_pairs(T, block_size):
    # STRUCTURAL: N = ceil(T / b) blocks; the causal kernel's products cover exactly the
    # N (N + 1) / 2 pairs (query block i, key block j <= i), each b x b scores (q k^T, b^2 d
    # multiplications) and b x d outputs (p v, b^2 d): no pair j > i has a step or a product, and
    # there is no cond (the old kernel scanned all N^2 pairs and skipped half with lax.cond).
    # The non-causal kernel computes all N^2 pairs.
    d = 4
    q, k, v = normal(45, (1, T, d), (1, T, d), (1, T, d))
    N = -(-T // block_size)
    per_pair = 2 * block_size**2 * d
    causal = _block_pair_work(lambda q, k, v: A.causal_blockwise_attention(q, k, v, block_size),
                              q, k, v)  # fmt: skip
    full = _block_pair_work(lambda q, k, v: A._online(q, k, v, block_size, False), q, k, v)
    pairs = _block_pair_work(lambda q, k, v: A._online_causal_pairs(q, k, v, block_size), q, k, v)
    assert causal == pairs == N * (N + 1) // 2 * per_pair, (causal, pairs, N)
    # The non-causal kernel's score blocks have T rows, not N b (no padded queries).
    assert full == N * 2 * T * block_size * d
    assert causal / (N * N * per_pair) == pytest.approx((N + 1) / (2 * N))


def test_causal_blockwise_attention_skips_masked_blocks():
    # Counted by running the program one operation at a time (loops and branches as executed).
    from genlab.probes.attention import _executed_multiplications

    q, k, v = normal(41, (1, 64, 4), (1, 64, 4), (1, 64, 4))
    counts = {}
    kernels = {
        "skipping": A.causal_blockwise_attention,
        "unskipped": lambda q, k, v, b: A._online(q, k, v, b, True),
    }
    for name, kernel in kernels.items():
        _, small = _executed_multiplications(lambda q, k, v, f=kernel: f(q, k, v, 8), q, k, v)
        _, whole = _executed_multiplications(lambda q, k, v, f=kernel: f(q, k, v, 64), q, k, v)
        counts[name] = small.sum() / whole.sum()
    # 36 of 64 block pairs (0.56) plus the rescaling; the unskipped kernel computes all of them.
    assert counts["skipping"] < 0.7 and counts["unskipped"] > 1.0, counts


def test_blockwise_kernels_never_hold_a_score_matrix():
    from genlab.probes.attention import _intermediate_shapes, _no_score_matrix

    q, k, v = normal(42, (1, 48, 2), (1, 80, 2), (1, 80, 3))
    for causal, (T_q, T_k) in [(False, (48, 80)), (True, (48, 48))]:
        args = (q, k[:, :T_k], v[:, :T_k])
        kernel = lambda q, k, v, c=causal: A.online_softmax_attention(q, k, v, 8, c)  # noqa: E731
        table = _intermediate_shapes(kernel, *args)
        _no_score_matrix(T_q, T_k, 8)(table, None, f"causal={causal}")
    table = _intermediate_shapes(lambda q, k, v: A.naive_attention(q, k, v), q, k, v)
    with pytest.raises(check.CheckError, match="shape \\(1, 48, 80\\)"):
        _no_score_matrix(48, 80, 8)(table, None, "naive")


@pytest.mark.parametrize("T, block_size", [(9, 4), (13, 3), (16, 4)])
def test_causal_blockwise_attention_gradient_matches_naive(T, block_size):
    q, k, v = normal(43 + T, (2, 2, T, 4), (2, 2, T, 4), (2, 2, T, 3))
    w = normal(1, (2, 2, T, 3))[0]

    def loss(attend):
        return lambda q, k, v: jnp.sum(w * attend(q, k, v) ** 2)

    grads = jax.grad(loss(lambda q, k, v: A.causal_blockwise_attention(q, k, v, block_size)),
                     argnums=(0, 1, 2))(q, k, v)  # fmt: skip
    expected = jax.grad(loss(lambda q, k, v: A.naive_attention(q, k, v, True)),
                        argnums=(0, 1, 2))(q, k, v)  # fmt: skip
    for name, got, want in zip("qkv", grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_online_softmax_attention_rejects_bad_input():
    q, k, v = normal(21, (4, 8), (6, 8), (6, 8))
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        A.online_softmax_attention(q, k, v, 0)
    with pytest.raises(TypeError, match="block_size must be an int"):
        A.online_softmax_attention(q, k, v, 2.5)
    with pytest.raises(ValueError, match="causal=True needs as many queries as keys"):
        A.online_softmax_attention(q, k, v, 2, causal=True)


# --- dot_product_variance and softmax_backward ---------------------------------------------------


def _exact_dot_variance(d, q_mean, q_var, k_mean, k_var):
    """Var(q . k) by enumeration: every entry is a two-point variable mean +- std (p = 1/2)."""
    import itertools

    q_values = (q_mean - np.sqrt(q_var), q_mean + np.sqrt(q_var))
    k_values = (k_mean - np.sqrt(k_var), k_mean + np.sqrt(k_var))
    dots = [sum(q_values[a] * k_values[b] for a, b in zip(signs[:d], signs[d:]))
            for signs in itertools.product((0, 1), repeat=2 * d)]  # fmt: skip
    return np.var(np.array(dots, np.float64))  # every outcome has probability 2^(-2d)


@pytest.mark.parametrize(
    "d, q_mean, q_var, k_mean, k_var",
    [
        (1, 0.0, 1.0, 0.0, 1.0),
        (3, 0.5, 2.0, -1.0, 0.25),
        (4, 2.0, 0.0, 0.0, 3.0),
        (5, 1.0, 1.0, 1.0, 1.0),
    ],
)
def test_dot_product_variance_matches_enumeration(d, q_mean, q_var, k_mean, k_var):
    got = A.dot_product_variance(d, q_mean, q_var, k_mean, k_var)
    assert got.shape == () and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _exact_dot_variance(d, q_mean, q_var, k_mean, k_var), rtol=1e-5)


def test_dot_product_variance_matches_gaussian_samples_and_broadcasts():
    rng = np.random.default_rng(0)
    d, n = 16, 400_000
    q = rng.normal(0.3, np.sqrt(2.0), size=(n, d))
    k = rng.normal(-0.5, 1.0, size=(n, d))
    want = np.var(np.sum(q * k, axis=-1))
    np.testing.assert_allclose(A.dot_product_variance(d, 0.3, 2.0, -0.5, 1.0), want, rtol=0.02)
    unit = A.dot_product_variance(64, jnp.zeros(3), jnp.ones(3), 0.0, jnp.array([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(unit, [64.0, 128.0, 256.0])
    with pytest.raises(ValueError, match="d"):
        A.dot_product_variance(0, 0.0, 1.0, 0.0, 1.0)


@pytest.mark.parametrize("shape", [(5,), (3, 7), (2, 3, 4)])
def test_softmax_backward_matches_jax_vjp(shape):
    scores, grad = normal(3, shape, shape)
    scores = 4.0 * scores
    _, vjp = jax.vjp(lambda s: jax.nn.softmax(s, axis=-1), scores)
    (want,) = vjp(grad)
    got = A.softmax_backward(scores, grad)
    assert got.shape == shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.sum(got, axis=-1), 0.0, atol=1e-6
    )  # shifting all scores: no change


def test_softmax_backward_matches_finite_differences_and_stays_finite():
    rng = np.random.default_rng(1)
    s, g = rng.normal(size=6), rng.normal(size=6)

    def loss(scores):  # L = g . softmax(scores), in float64
        e = np.exp(scores - scores.max())
        return float(np.dot(g, e / e.sum()))

    eps = 1e-6
    numeric = [(loss(s + eps * np.eye(6)[j]) - loss(s - eps * np.eye(6)[j])) / (2 * eps)
               for j in range(6)]  # fmt: skip
    got = A.softmax_backward(jnp.asarray(s, jnp.float32), jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(got, numeric, rtol=1e-4, atol=1e-6)
    big = A.softmax_backward(jnp.array([1e4, 0.0, -1e4]), jnp.array([1.0, 2.0, 3.0]))
    assert np.all(np.isfinite(big)) and np.allclose(big, 0.0)  # one-hot: no gradient
    with pytest.raises(ValueError, match="grad_weights"):
        A.softmax_backward(jnp.zeros((2, 3)), jnp.zeros(3))


# --- softmax_entropy and the tiny trained example ------------------------------------------------


def test_softmax_entropy_of_uniform_is_log_n():
    np.testing.assert_allclose(
        A.softmax_entropy(jnp.zeros((3, 8))), np.log(8) * np.ones(3), rtol=1e-6
    )
    np.testing.assert_allclose(A.softmax_entropy(jnp.array([0.0, -1e9])), 0.0, atol=1e-6)


def test_softmax_entropy_matches_numpy_and_ignores_masked_keys():
    (s,) = normal(22, (4, 6))
    p = np.asarray(jax.nn.softmax(s, axis=-1), np.float64)
    np.testing.assert_allclose(A.softmax_entropy(s), -(p * np.log(p)).sum(-1), rtol=1e-5)
    masked = s.at[:, 3:].set(-jnp.inf)
    np.testing.assert_allclose(A.softmax_entropy(masked), A.softmax_entropy(s[:, :3]), rtol=1e-5)


def test_causal_leakage_is_zero_for_causal_attention_and_positive_for_inverted_mask():
    (x,) = normal(23, (2, 6, 4))

    def causal(x):
        return A.scaled_dot_product_attention(x, x, x, A.causal_mask(6))[0]

    def inverted(x):
        return A.scaled_dot_product_attention(x, x, x, ~A.causal_mask(6))[0]

    assert float(A.causal_leakage(causal, x, 3)) < 1e-6
    assert float(A.causal_leakage(inverted, x, 3)) > 0.1
    # By hand: attend = shift by one position backwards (position i sees i + 1).
    shifted = A.causal_leakage(lambda x: jnp.roll(x, -1, axis=-2), x, 3)
    np.testing.assert_allclose(shifted, 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="t must be < T"):
        A.causal_leakage(causal, x, 6)


def test_reverse_batch_targets_are_reversed_tokens():
    tokens, targets = A.reverse_batch(jax.random.key(0), 4, 6, 10)
    assert tokens.shape == (4, 6) and tokens.dtype == jnp.int32
    np.testing.assert_array_equal(targets, np.asarray(tokens)[:, ::-1])


def test_reverse_model_learns_the_anti_diagonal():
    model = A.ReverseModel(8, 6, 32, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    step = train.make_train_step(A.reverse_loss, has_aux=True)
    keys = jax.random.split(jax.random.key(1), 250)
    history = train.fit(
        step, model, optimizer, lambda i: A.reverse_batch(keys[i], 64, 6, 8), 250, progress=False
    )
    assert history.last("accuracy") > 0.95
    _, weights = model(A.reverse_batch(jax.random.key(2), 16, 6, 8)[0], return_weights=True)
    anti = np.asarray(weights).max(axis=1)[:, np.arange(6), np.arange(6)[::-1]]  # best head
    assert anti.mean() > 0.8


def test_reverse_train_step_matches_optax_by_hand():
    # One SGD step equals parameters - lr * jax.grad of the optax cross-entropy, computed apart.
    model = A.ReverseModel(10, 8, 16, 2, rngs=nnx.Rngs(0))
    tokens, targets = A.reverse_batch(jax.random.key(3), 4, 8, 10)
    graphdef, params = nnx.split(model, nnx.Param)

    def loss_fn(params):
        logits = nnx.merge(graphdef, params)(tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)
    got = A.reverse_train_step(model, optimizer, (tokens, targets))
    np.testing.assert_allclose(got, loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_reverse_train_step_ignores_targets_of_minus_one():
    # Independent: each sequence's kept positions are selected by NumPy boolean indexing outside
    # any trace, their optax cross-entropies averaged per sequence, and the per-sequence means
    # averaged in a Python loop over the sequences that keep something; one SGD step equals
    # parameters - lr * its gradient.
    model = A.ReverseModel(10, 8, 16, 2, rngs=nnx.Rngs(1))
    tokens, targets = A.reverse_batch(jax.random.key(4), 4, 8, 10)
    ignored = np.random.default_rng(0).random((4, 8)) < 0.4
    ignored[1] = True  # one sequence without any target
    ignored[2] = np.arange(8) != 5  # one sequence with a single kept position
    targets = jnp.where(ignored, -1, targets)
    kept_rows = [(b, np.flatnonzero(~ignored[b])) for b in range(4) if (~ignored[b]).any()]
    assert len(kept_rows) == 3
    graphdef, params = nnx.split(model, nnx.Param)

    def loss_fn(params):
        logits = nnx.merge(graphdef, params)(tokens)
        means = [
            optax.softmax_cross_entropy_with_integer_labels(
                logits[b, kept], np.asarray(targets)[b, kept]
            ).mean()
            for b, kept in kept_rows
        ]
        return sum(means) / len(means)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    got = nnx.jit(A.reverse_train_step)(model, nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param),
                                        (tokens, targets))  # fmt: skip
    np.testing.assert_allclose(got, loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The per-sequence mean is not the token mean on this batch: the lone kept position of
    # sequence 2 weighs as much as all the kept positions of sequence 0.
    fresh = A.ReverseModel(10, 8, 16, 2, rngs=nnx.Rngs(1))
    flat = np.flatnonzero(~ignored.ravel())
    token_mean = optax.softmax_cross_entropy_with_integer_labels(
        fresh(tokens).reshape(-1, 10)[flat], np.asarray(targets).ravel()[flat]
    ).mean()
    assert abs(float(token_mean) - float(loss)) > 1e-3
    # Nothing kept: loss 0, and SGD moves nothing.
    before = [np.asarray(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param))]
    got = A.reverse_train_step(model, nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param),
                               (tokens, jnp.full_like(targets, -1)))  # fmt: skip
    assert float(got) == 0.0
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="one shape"):
        A.reverse_train_step(model, nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param),
                             (tokens, targets[:, :4]))  # fmt: skip


def test_benchmark_kernels_reports_time_and_quadratic_naive_memory():
    result = A.benchmark_kernels([64, 128], block_size=32, d=16, repeats=1)
    assert result["T"].tolist() == [64, 128]
    for name in ("naive", "blockwise", "causal", "jax_nn"):
        assert (result[f"{name}_seconds"] > 0).all(), name
    if np.isfinite(result["naive_bytes"]).all():  # backends that report scratch memory
        # The naive kernel holds T x T float32 scores: at least 4 T^2 bytes, growing 4x.
        assert (result["naive_bytes"] >= 4 * result["T"] ** 2).all()
        assert result["naive_bytes"][1] / result["naive_bytes"][0] > 3.0
        assert result["blockwise_bytes"][1] < result["naive_bytes"][1]
