"""A synthetic corpus with a known entropy rate: a random first-order Markov chain over tokens.

Chapter 04 (section 4, "the floor") asks for the perplexity of such a source
(:func:`source_perplexity`, a *derive* exercise), trains a GPT on text drawn from such a chain
and compares its cross-entropy with the chain's entropy rate, the lowest loss any model can
reach on it.

For a chain with transition matrix P [S, S] (row i is the distribution of the next state after
state i) and stationary distribution pi (pi P = pi), the entropy rate in nats per token is

    H = -sum_i pi_i sum_j P_ij log P_ij.
"""

from __future__ import annotations

import numbers
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

__all__ = [
    "entropy_rate",
    "markov_corpus",
    "random_transition_matrix",
    "source_perplexity",
    "stationary_distribution",
]


def _transition(transition) -> jax.Array:
    p = jnp.asarray(transition, jnp.float32)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 1:
        raise ValueError(f"transition must be a square matrix [S, S], got shape {p.shape}")
    if bool(jnp.any(p < 0)) or not bool(jnp.allclose(p.sum(-1), 1.0, atol=1e-4)):
        raise ValueError("transition rows must be probability distributions (>= 0, sum to 1)")
    return p


def random_transition_matrix(key, num_states: int, concentration: float = 0.2) -> jax.Array:
    """A random transition matrix whose rows are drawn from Dirichlet(concentration).

    Small concentrations (e.g. 0.2) give peaked rows, so the chain is far from uniform and its
    entropy rate well below log S.

    Returns:
        float32 [S, S], rows sum to 1.
    """
    if (
        isinstance(num_states, bool)
        or not isinstance(num_states, numbers.Integral)
        or num_states < 2
    ):
        raise ValueError(f"num_states must be an int >= 2, got {num_states!r}")
    if not concentration > 0:
        raise ValueError(f"concentration must be > 0, got {concentration}")
    alpha = jnp.full((num_states,), float(concentration))
    p = jax.random.dirichlet(key, alpha, shape=(num_states,))  # (S, S)
    p = jnp.maximum(p, 1e-12)  # no exact zeros, so every transition has a finite log
    return p / p.sum(-1, keepdims=True)


def stationary_distribution(transition) -> jax.Array:
    """The stationary distribution pi [S] with pi P = pi (left eigenvector for eigenvalue 1)."""
    p = np.asarray(_transition(transition), np.float64)
    values, vectors = np.linalg.eig(p.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    pi = pi / pi.sum()
    return jnp.asarray(np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum(), jnp.float32)


def entropy_rate(transition) -> float:
    """Entropy rate in nats per token: -sum_i pi_i sum_j P_ij log P_ij (a Python float)."""
    p = np.asarray(_transition(transition), np.float64)
    pi = np.asarray(stationary_distribution(p), np.float64)
    row_entropy = -np.sum(np.asarray(xlogy(p, p)), axis=-1)  # (S,)
    return float(pi @ row_entropy)


def source_perplexity(transition) -> jax.Array:
    """The lowest perplexity any model can reach on a long stream drawn from the chain.

    Chapter 04, section 4 (a *derive* exercise): the exponential of the entropy rate, in
    tokens. 1 only for a chain with no uncertainty, S for the uniform matrix of S states; zero
    entries of the matrix are allowed (an impossible transition contributes no surprise).

    Args:
        transition: float [S, S], row-stochastic (row i is the distribution of the token after
            token i), irreducible and aperiodic, so the stationary distribution is unique.

    Returns:
        float32 scalar (shape ()), >= 1.

    Raises:
        ValueError: if transition is not a square row-stochastic matrix.
    """
    return jnp.asarray(np.exp(entropy_rate(transition)), jnp.float32)


@partial(jax.jit, static_argnames=("length",))
def _sample(key, log_p, first, length):
    def step(state, key):
        nxt = jax.random.categorical(key, log_p[state]).astype(jnp.int32)
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, jax.random.split(key, length - 1))
    return jnp.concatenate([first[None], rest])


def markov_corpus(key, transition, length: int) -> jax.Array:
    """A token stream of the chain: int32 [length], the first state drawn from pi.

    Uses ``jax.random.split(key)`` into (first-state key, path key); the path key is split into
    one key per transition.
    """
    if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    p = _transition(transition)
    k0, k1 = jax.random.split(key)
    pi = stationary_distribution(p)
    first = jax.random.categorical(k0, jnp.log(pi)).astype(jnp.int32)
    if length == 1:
        return first[None]
    return _sample(k1, jnp.log(p), first, int(length))
