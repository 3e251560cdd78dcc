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


def test_batch_leakage_zero_for_independent_sequences():
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    assert float(lstm.batch_leakage(lambda v: jnp.tanh(v).sum(axis=1), x)) == 0.0


@pytest.mark.parametrize(
    "fn, expected",
    [
        (lambda v: jnp.cumsum(v, axis=0), 1.0),  # element 0 moves every later one by 1.0
        (lambda v: jnp.broadcast_to(v[-1:, -1], v[:, -1].shape), 1.0),  # only the last leaks
        (lambda v: v[:, -1] - v[:, -1].mean(axis=0), 1.0 / 3.0),  # batch mean over B = 3
    ],
)
def test_batch_leakage_closed_forms(fn, expected):
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    np.testing.assert_allclose(float(lstm.batch_leakage(fn, x)), expected, rtol=1e-5)


def test_batch_leakage_catches_a_time_major_rnn_fed_batch_major_data():
    cell = nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 5, 3))
    right = nnx.RNN(cell, time_major=False)
    wrong = nnx.RNN(cell, time_major=True)
    assert float(lstm.batch_leakage(lambda v: right(v)[:, -1], x)) < 1e-6
    assert float(lstm.batch_leakage(lambda v: wrong(v)[:, -1], x)) > 1e-3


def test_batch_leakage_rejects_a_single_sequence():
    with pytest.raises(ValueError, match="B >= 2"):
        lstm.batch_leakage(lambda v: v, jnp.zeros((1, 3, 2)))
