"""genlab.lstm: the LSTM language model and the batch-leakage diagnostic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genlab import gpt, lstm


@pytest.fixture(scope="module")
def small():
    config = lstm.LSTMConfig(vocab_size=7, d_embed=5, d_hidden=6, num_layers=2)
    return config, lstm.LSTMLM(config, rngs=nnx.Rngs(0))


def test_lstm_lm_shapes_and_parameter_count(small):
    config, model = small
    logits = model(jnp.zeros((3, 4), jnp.int32))
    assert logits.shape == (3, 4, 7) and logits.dtype == jnp.float32
    assert gpt.num_params(model) == config.num_params()


def test_lstm_lm_is_causal(small):
    _, model = small
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 7)
    changed = tokens.at[:, 5:].set((tokens[:, 5:] + 1) % 7)
    np.testing.assert_allclose(model(tokens)[:, :5], model(changed)[:, :5], atol=1e-6)
    assert not np.allclose(model(tokens)[:, 5:], model(changed)[:, 5:])


def test_lstm_lm_matches_a_step_by_step_loop(small):
    _, model = small
    tokens = jax.random.randint(jax.random.key(2), (2, 6), 0, 7)
    h = model.embed(tokens)
    for layer in model.layers:
        cell = layer.cell
        carry = cell.initialize_carry((2, h.shape[-1]), rngs=nnx.Rngs(0))  # zeros
        outputs = []
        for t in range(h.shape[1]):
            carry, y = cell(carry, h[:, t])
            outputs.append(y)
        h = jnp.stack(outputs, axis=1)
    np.testing.assert_allclose(model(tokens), model.head(h), rtol=1e-5, atol=1e-6)


def test_lstm_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="d_hidden"):
        lstm.LSTMConfig(d_hidden=0)


def test_lstm_lm_rejects_float_tokens(small):
    with pytest.raises(TypeError, match="integer"):
        small[1](jnp.zeros((2, 3)))


def _centred_then_pooled(v):
    """Each element minus its own mean, then the batch's average of that added to every row:
    a leak that a constant added to every feature of one element cannot show."""
    centred = v - v.mean(axis=(1, 2), keepdims=True)  # (B, T, D)
    return (v + centred.mean(axis=0))[:, -1]  # (B, D)


B3 = np.arange(3)
INDEPENDENT_FUNCTIONS = [
    lambda v: jnp.tanh(v).sum(axis=1),
    lambda v: jax.nn.softmax(v, axis=1),
]
LEAKING_FUNCTIONS = [
    (lambda v: jnp.cumsum(v, axis=0), B3[:, None] >= B3[None, :]),  # b reads every c <= b
    (lambda v: jnp.broadcast_to(v[-1:, -1], v[:, -1].shape), np.tile(B3 == 2, (3, 1))),
    (lambda v: v[:, -1] - v[:, -1].mean(axis=0), np.ones((3, 3), bool)),  # the batch mean
    (_centred_then_pooled, np.ones((3, 3), bool)),
]


@pytest.mark.parametrize("fn", INDEPENDENT_FUNCTIONS)
def test_batch_dependence_is_diagonal_for_independent_sequences(fn):
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    np.testing.assert_array_equal(lstm.batch_dependence(fn, x), np.eye(3, dtype=bool))


@pytest.mark.parametrize("fn, expected", LEAKING_FUNCTIONS)
def test_batch_dependence_closed_forms(fn, expected):
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    got = lstm.batch_dependence(fn, x)
    assert got.dtype == jnp.bool_ and got.shape == (3, 3)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("fn", INDEPENDENT_FUNCTIONS + [f for f, _ in LEAKING_FUNCTIONS])
def test_batch_dependence_matches_the_jacobian_blocks(fn):
    """Independent check: element b depends on element c where the Jacobian block d f_b / d x_c
    is not zero (every function here is smooth)."""
    x = jax.random.normal(jax.random.key(2), (3, 4, 2))
    jac = jax.jacfwd(lambda v: fn(v).reshape(3, -1))(x)  # (B, N, B, T, D)
    blocks = jnp.max(jnp.abs(jac), axis=(1, 3, 4))  # (B, B)
    np.testing.assert_array_equal(lstm.batch_dependence(fn, x), blocks > 1e-6)


def test_a_constant_change_misses_the_centred_leak():
    """Why the change is random: +1 on every feature of an element cancels in its centring."""
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    moved = _centred_then_pooled(x.at[0].add(1.0)) - _centred_then_pooled(x)
    assert float(jnp.max(jnp.abs(moved[1:]))) < 1e-6
    assert bool(lstm.batch_dependence(_centred_then_pooled, x)[1, 0])


@pytest.mark.parametrize("time_major", [False, True])
def test_last_outputs_is_nnx_rnn_then_the_last_column(time_major):
    cell = nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 5, 3))
    want = nnx.RNN(cell, time_major=time_major)(x)[:, -1]
    pure = lstm.last_outputs(cell, time_major=time_major)
    np.testing.assert_allclose(pure(x), want, atol=1e-6)
    np.testing.assert_allclose(jax.jit(pure)(x), want, atol=1e-6)
    assert jax.jacfwd(pure)(x).shape == (4, 4, 4, 5, 3)


def test_batch_dependence_of_a_time_major_rnn_fed_batch_major_data_is_lower_triangular():
    cell = nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 5, 3))
    right = lstm.last_outputs(cell, time_major=False)
    wrong = lstm.last_outputs(cell, time_major=True)
    np.testing.assert_array_equal(lstm.batch_dependence(right, x), np.eye(4, dtype=bool))
    np.testing.assert_array_equal(lstm.batch_dependence(wrong, x), np.tril(np.ones((4, 4), bool)))


def test_batch_dependence_rejects_a_single_sequence():
    with pytest.raises(ValueError, match="B >= 2"):
        lstm.batch_dependence(lambda v: v, jnp.zeros((1, 3, 2)))
