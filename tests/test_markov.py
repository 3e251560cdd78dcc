"""genlab.markov: the entropy rate against a closed form and a Monte Carlo estimate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlab import markov


def _binary_entropy(a: float) -> float:
    return -(a * np.log(a) + (1 - a) * np.log(1 - a))


def test_entropy_rate_two_state_closed_form():
    a, b = 0.1, 0.3
    p = jnp.array([[1 - a, a], [b, 1 - b]])
    pi0, pi1 = b / (a + b), a / (a + b)
    np.testing.assert_allclose(markov.stationary_distribution(p), [pi0, pi1], rtol=1e-5)
    want = pi0 * _binary_entropy(a) + pi1 * _binary_entropy(b)
    np.testing.assert_allclose(markov.entropy_rate(p), want, rtol=1e-5)


def test_entropy_rate_uniform_chain_is_log_s():
    np.testing.assert_allclose(markov.entropy_rate(jnp.full((5, 5), 0.2)), np.log(5), rtol=1e-5)


def test_entropy_rate_deterministic_cycle_is_zero():
    p = jnp.roll(jnp.eye(4), 1, axis=1)
    np.testing.assert_allclose(markov.entropy_rate(p), 0.0, atol=1e-7)


def test_markov_corpus_monte_carlo_entropy_matches_rate():
    p = markov.random_transition_matrix(jax.random.key(0), 6, concentration=0.5)
    tokens = np.asarray(markov.markov_corpus(jax.random.key(1), p, 200_000))
    log_p = np.log(np.asarray(p, np.float64))
    estimate = -log_p[tokens[:-1], tokens[1:]].mean()
    np.testing.assert_allclose(estimate, markov.entropy_rate(p), rtol=0.02)
    freq = np.bincount(tokens, minlength=6) / len(tokens)
    np.testing.assert_allclose(freq, markov.stationary_distribution(p), atol=0.01)


def test_random_transition_matrix_rows_sum_to_one():
    p = markov.random_transition_matrix(jax.random.key(2), 10, 0.2)
    assert p.shape == (10, 10)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    assert markov.entropy_rate(p) < np.log(10)


def test_markov_corpus_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        markov.markov_corpus(jax.random.key(0), jnp.ones((2, 3)) / 3, 10)
    with pytest.raises(ValueError, match="rows"):
        markov.entropy_rate(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="length"):
        markov.markov_corpus(jax.random.key(0), jnp.eye(2), 0)


def test_source_perplexity_two_state_closed_form():
    a, b = 0.2, 0.05
    p = jnp.array([[1 - a, a], [b, 1 - b]])
    want = np.exp((b * _binary_entropy(a) + a * _binary_entropy(b)) / (a + b))
    np.testing.assert_allclose(markov.source_perplexity(p), want, rtol=1e-5)


def test_source_perplexity_uniform_chain_is_s_and_independent_rows_give_row_perplexity():
    np.testing.assert_allclose(markov.source_perplexity(jnp.full((6, 6), 1 / 6)), 6.0, rtol=1e-5)
    q = np.array([0.5, 0.25, 0.125, 0.125, 0.0])  # a zero entry: no surprise, no nan
    row_entropy = -np.sum(q[q > 0] * np.log(q[q > 0]))
    got = markov.source_perplexity(jnp.asarray(np.tile(q, (5, 1)), jnp.float32))
    np.testing.assert_allclose(got, np.exp(row_entropy), rtol=1e-5)


def test_source_perplexity_matches_monte_carlo_perplexity_of_the_true_model():
    p = markov.random_transition_matrix(jax.random.key(2), 5, concentration=0.4)
    tokens = np.asarray(markov.markov_corpus(jax.random.key(3), p, 200_000))
    log_p = np.log(np.asarray(p, np.float64))
    estimate = np.exp(-log_p[tokens[:-1], tokens[1:]].mean())
    np.testing.assert_allclose(estimate, markov.source_perplexity(p), rtol=0.02)


def test_source_perplexity_rejects_a_non_stochastic_matrix():
    with pytest.raises(ValueError, match="transition"):
        markov.source_perplexity(jnp.ones((3, 3)))
