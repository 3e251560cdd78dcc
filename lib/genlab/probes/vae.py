"""Probes of chapter 02, the VAE ELBO (references in :mod:`genlab.vae`).

Shape letters: B batch, D data dimensions, Z latent dimensions, K importance samples, N Monte
Carlo samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genlab import check, vae
from genlab.probing import Case, Probe, call, close, f32, key_from

LOG_2 = float(np.log(2.0))
LOG_4 = float(np.log(4.0))


def _nonnegative(rtol: float, atol: float):
    """A comparison for a KL: close to the reference and never below -1e-5."""
    matches = close(rtol, atol)

    def compare(got, want, label: str) -> None:
        matches(got, want, label)
        smallest = float(np.min(np.asarray(got), initial=np.inf))
        check.is_true(smallest >= -1e-5, f"{label}: a KL must be >= 0; got {smallest:.4g}")

    return compare


def _finite_close(rtol: float, atol: float):
    """A comparison that first names non-finite outputs (overflowing logits), then compares."""
    matches = close(rtol, atol)

    def compare(got, want, label: str) -> None:
        check.finite(label, got)
        matches(got, want, label)

    return compare


def _near(value, rtol: float = 1e-5, atol: float = 1e-6):
    """A comparison with a known value (a statistical property) instead of the reference."""

    def compare(got, want, label: str) -> None:
        check.allclose(label, got, value, rtol=rtol, atol=atol)

    return compare


# --- section 3: Gaussian KL and likelihoods --------------------------------------------------


def gaussian_kl_standard_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("gaussian_kl_standard at the prior, mean and log_var of shape (2, 3)",
             call(jnp.zeros((2, 3)), jnp.zeros((2, 3)))),
        Case("gaussian_kl_standard(mean=[1, 0], log_var=[0, 0])",
             call(jnp.array([1.0, 0.0]), jnp.zeros(2))),
        Case("gaussian_kl_standard(mean=[0], log_var=[log 2])",
             call(jnp.zeros(1), jnp.array([LOG_2]))),
        Case("gaussian_kl_standard(mean=[0], log_var=[log 0.25])",
             call(jnp.zeros(1), jnp.array([-LOG_4]))),
    ]  # fmt: skip
    for shape in [(5,), (4, 3), (2, 3, 6)]:
        mean = f32(rng.normal(scale=2.0, size=shape))
        log_var = f32(rng.uniform(-4.0, 3.0, size=shape))
        cases.append(Case(f"gaussian_kl_standard(mean, log_var of shape {shape})",
                          call(mean, log_var), _nonnegative(1e-5, 1e-5)))  # fmt: skip
    mean = jnp.array([[0.0, 0.0, 3.0], [0.1, -2.0, 0.0]])
    log_var = jnp.array([[-10.0, 5.0, 0.0], [0.0, -0.5, 2.0]])
    cases.append(Case("gaussian_kl_standard with extreme log-variances (-10 and 5)",
                      call(mean, log_var), _nonnegative(1e-5, 1e-5)))  # fmt: skip
    return cases


def gaussian_kl_cases(rng: np.random.Generator) -> list[Case]:
    m, v = jnp.array([[0.3, -1.0], [2.0, 0.5]]), jnp.array([[0.2, -1.0], [1.0, 0.0]])
    one, zero, log4 = jnp.array([1.0]), jnp.array([0.0]), jnp.array([LOG_4])
    cases = [
        Case("gaussian_kl(q, q) for q of shape (2, 2)", call(m, v, m, v), close(1e-5, 1e-6)),
        Case("gaussian_kl(N(1, 1) || N(0, 4)), 1-D Gaussians given as shape (1,)",
             call(one, zero, zero, log4)),
        Case("gaussian_kl(N(0, 4) || N(1, 1))", call(zero, log4, one, zero)),
        Case("gaussian_kl(q of shape (2, 2), p of shape (2,)) (broadcasting)",
             call(m, v, jnp.zeros(2), jnp.zeros(2))),
    ]  # fmt: skip
    for shape_q, shape_p in [((4,), (4,)), ((3, 5), (5,)), ((2, 3, 2), (3, 2))]:
        mq = f32(rng.normal(scale=2.0, size=shape_q))
        vq = f32(rng.uniform(-3.0, 2.0, size=shape_q))
        mp = f32(rng.normal(size=shape_p))
        vp = f32(rng.uniform(-2.0, 3.0, size=shape_p))
        cases.append(
            Case(
                f"gaussian_kl(q of shape {shape_q}, p of shape {shape_p})",
                call(mq, vq, mp, vp),
                _nonnegative(1e-5, 1e-5),
            )
        )
        cases.append(
            Case(
                f"gaussian_kl(p of shape {shape_p}, q of shape {shape_q}) (arguments swapped)",
                call(mp, vp, mq, vq),
                _nonnegative(1e-5, 1e-5),
            )
        )
    return cases


def gaussian_log_likelihood_cases(rng: np.random.Generator) -> list[Case]:
    x, m, v = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.0, 1.0, 2.5]), jnp.array([0.0, 1.0, -2.0])
    zeros = jnp.zeros((2, 3))
    cases = [
        Case("gaussian_log_likelihood at the mean of N(0, I), shape (2, 3)",
             call(zeros, zeros, zeros), close(1e-6, 1e-6)),
        Case("gaussian_log_likelihood(x, mean, log_var of shape (3,)) vs norm.logpdf summed",
             call(x, m, v)),
        Case("gaussian_log_likelihood(x (4, 3), mean (3,), log_var (3,)) (broadcasting)",
             call(jnp.ones((4, 3)), m, v), close(1e-5, 1e-4)),
    ]  # fmt: skip
    for shape in [(6,), (3, 4), (2, 2, 5)]:
        x = f32(rng.normal(scale=2.0, size=shape))
        m = f32(rng.normal(size=shape))
        v = f32(rng.uniform(-3.0, 3.0, size=shape))
        cases.append(Case(f"gaussian_log_likelihood(x, mean, log_var of shape {shape})",
                          call(x, m, v), close(1e-5, 1e-4)))  # fmt: skip
    x = f32(rng.normal(size=(5, 2)))
    m, v = f32(rng.normal(size=2)), f32(rng.uniform(-2.0, 2.0, size=2))
    cases.append(Case("gaussian_log_likelihood(x (5, 2), mean (2,), log_var (2,))",
                      call(x, m, v), close(1e-5, 1e-4)))  # fmt: skip
    return cases


def bernoulli_log_likelihood_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("bernoulli_log_likelihood(x (1, 3), logits 0 of shape (1, 3))",
             call(jnp.array([[1.0, 0.0, 0.3]]), jnp.zeros((1, 3))), close(1e-6, 1e-6)),
        Case("bernoulli_log_likelihood(x=[1, 0], logits=[2, 2])",
             call(jnp.array([1.0, 0.0]), jnp.array([2.0, 2.0]))),
        Case("bernoulli_log_likelihood with logits +-200",
             call(jnp.array([1.0, 0.0, 1.0]), jnp.array([-200.0, 200.0, 200.0])),
             _finite_close(1e-5, 1e-6)),
    ]  # fmt: skip
    for shape in [(8,), (3, 5), (2, 3, 4)]:
        x = f32(rng.uniform(0.0, 1.0, size=shape))
        logits = f32(rng.normal(scale=4.0, size=shape))
        cases.append(Case(f"bernoulli_log_likelihood(x, logits of shape {shape})",
                          call(x, logits), close(1e-5, 1e-4)))  # fmt: skip
    x = jnp.array([[0.0, 1.0, 0.5, 1.0], [1.0, 0.0, 0.25, 0.0]])
    logits = jnp.array([[-150.0, 150.0, 90.0, -90.0], [0.0, -300.0, -40.0, 1e-3]])
    cases.append(
        Case(
            "bernoulli_log_likelihood(x (2, 4), extreme logits up to +-300)",
            call(x, logits),
            _finite_close(1e-5, 1e-4),
        )
    )
    cases.append(
        Case(
            "bernoulli_log_likelihood(x (2, 4), logits (4,)) (broadcasting)",
            call(x, logits[0]),
            _finite_close(1e-5, 1e-4),
        )
    )
    return cases


# --- section 4: reparameterization and gradient estimators -----------------------------------


def _reparameterize_grads(key, mean, log_var, argnum: int):
    def run(reparameterize):
        return jax.grad(lambda m, v: reparameterize(key, m, v).sum(), argnums=argnum)(mean, log_var)

    return run


def _sample_variance(key, n: int, log_var: float):
    def run(reparameterize):
        return np.var(np.asarray(reparameterize(key, jnp.zeros(n), jnp.full(n, log_var))))

    return run


def reparameterize_cases(rng: np.random.Generator) -> list[Case]:
    key = jax.random.key(0)
    mean, log_var = jnp.array([[0.0, 1.0, -2.0]]), jnp.array([[0.0, LOG_4, -1.0]])
    cases = [
        Case("reparameterize(key, mean (1, 3), log_var (1, 3)) vs mean + exp(0.5 * log_var) "
             "* normal(key, mean.shape)", call(key, mean, log_var),
             close(1e-6, 1e-6, dtype=jnp.float32)),
        Case("reparameterize with log_var = -40 (gives the mean back)",
             call(key, mean, jnp.full((1, 3), -40.0))),
        Case("sample variance of 20,000 draws of reparameterize with log_var = log 4",
             _sample_variance(jax.random.key(1), 20_000, LOG_4), _near(4.0, rtol=0.05)),
        Case("d sum(reparameterize(key, mean, log_var)) / d mean",
             _reparameterize_grads(key, mean, log_var, 0), close(1e-6, 1e-6)),
        Case("d sum(reparameterize(key, mean, log_var)) / d log_var",
             _reparameterize_grads(key, mean, log_var, 1), close(1e-5, 1e-6)),
    ]  # fmt: skip
    for shape in [(4,), (3, 2), (2, 3, 5)]:
        mean = f32(rng.normal(scale=2.0, size=shape))
        log_var = f32(rng.uniform(-4.0, 3.0, size=shape))
        cases.append(
            Case(
                f"reparameterize(key, mean, log_var of shape {shape}) vs the pinned recipe",
                call(key_from(rng), mean, log_var),
                close(1e-5, 1e-5),
            )
        )
    return cases


def _estimator_cases(name: str, rng: np.random.Generator, recipe: str, atol: float):
    """The cases shared by the two gradient estimators (one visible MC tolerance differs)."""
    theta = jnp.array([-1.0, 0.0, 0.5, 2.0])
    cases = [
        Case(f"{name}(key, theta (4,), 5) vs the pinned recipe {recipe}",
             call(jax.random.key(0), theta, 5), close(1e-5, 1e-5)),
        Case(f"{name} with 200,000 samples vs the true gradient 2 theta",
             call(jax.random.key(1), theta, 200_000), _near(2.0 * np.asarray(theta), atol=atol)),
        Case(f"{name}(key, scalar theta, 3)", call(jax.random.key(0), jnp.float32(1.0), 3),
             close(1e-5, 1e-5)),
    ]  # fmt: skip
    for shape, n in [((), 1), ((3,), 7), ((2, 3), 16)]:
        theta = f32(rng.normal(size=shape))
        cases.append(Case(f"{name}(key, theta of shape {shape}, {n}) vs the pinned recipe",
                          call(key_from(rng), theta, n), close(1e-5, 1e-5)))  # fmt: skip
    return cases


def score_function_grad_cases(rng: np.random.Generator) -> list[Case]:
    return _estimator_cases("score_function_grad", rng, "mean(z**2 * (z - theta), axis=0)", 0.15)


def reparameterization_grad_cases(rng: np.random.Generator) -> list[Case]:
    return _estimator_cases("reparameterization_grad", rng, "mean(2 (theta + eps), axis=0)", 0.03)


# --- section 5: the importance-weighted bound ------------------------------------------------


def iwae_bound_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("iwae_bound of equal log-weights -2.5, shape (4, 3)", call(jnp.full((4, 3), -2.5)),
             close(1e-6, 1e-6)),
        Case("iwae_bound([log 1, log 3])", call(jnp.log(jnp.array([1.0, 3.0]))),
             close(1e-6, 1e-6)),
        Case("iwae_bound with K = 1, shape (1, 2)", call(jnp.array([[0.7, -3.0]]))),
        Case("iwae_bound([-1000, -1001])", call(jnp.array([-1000.0, -1001.0])),
             _finite_close(1e-6, 1e-6)),
    ]  # fmt: skip
    for shape in [(5,), (7, 3), (3, 2, 4), (1, 6)]:
        log_weights = f32(50.0 * rng.normal(size=shape) - 300.0)
        cases.append(Case(f"iwae_bound(log_weights of shape {shape}, around -300)",
                          call(log_weights), close(1e-5, 1e-4)))  # fmt: skip
    inf = jnp.inf
    large = jnp.array([[1000.0, -inf, 3.0], [999.0, 2.0, -inf], [998.0, -1.0, 4.0]])
    cases.append(Case("iwae_bound(log_weights (3, 3) with entries near 1000 and -inf)",
                      call(large), close(1e-5, 1e-4)))  # fmt: skip
    some_inf = f32(rng.normal(size=(4, 3))).at[:, 1].set(-inf).at[2, 2].set(-inf)
    cases.append(Case("iwae_bound(log_weights (4, 3) with a column of -inf, so -inf there)",
                      call(some_inf), close(1e-5, 1e-4)))  # fmt: skip
    return cases


# --- section 6: the ELBO ---------------------------------------------------------------------


def _visible_pair(a):
    """The visible checks' linear encoder (log-variance -1) and decoder (3 z A^T)."""
    return (lambda x: (x @ a, jnp.full((x.shape[0], a.shape[1]), -1.0)),
            lambda z: 3.0 * z @ a.T)  # fmt: skip


def _random_pair(a_enc, a_dec):
    """A linear encoder with log-variances in (-1, 0) and a linear decoder; Z = a_dec rows."""
    z = a_dec.shape[0]
    return (lambda x: (x @ a_enc[:, :z], 0.5 * jnp.tanh(x @ a_enc[:, z:]) - 0.5),
            lambda latent: latent @ a_dec)  # fmt: skip


def _elbo_run(key, x, pair, *weights, beta=None, jit: bool = False):
    def run(elbo):
        encode, decode = pair(*weights)
        if jit:
            return jax.jit(lambda b: elbo(key, x, encode, decode, beta=b))(beta)
        if beta is None:
            return elbo(key, x, encode, decode)
        return elbo(key, x, encode, decode, beta=beta)

    return run


def _prior_pair(z: int, d: int):
    return (lambda x: (jnp.zeros((x.shape[0], z)), jnp.zeros((x.shape[0], z))),
            lambda latent: jnp.zeros((latent.shape[0], d)))  # fmt: skip


def elbo_cases(rng: np.random.Generator) -> list[Case]:
    key = jax.random.key(0)
    x = jnp.array([[1.0, 0.0, 0.5], [0.0, 0.0, 1.0]])  # (B, D) = (2, 3)
    a = jnp.array([[1.0, -0.5], [0.3, 0.2], [-1.0, 0.4]])  # (D, Z)
    cases = [
        Case("elbo(key, x (2, 3)) with a prior encoder and logits 0",
             _elbo_run(key, x, _prior_pair, 2, 3), close(1e-6, 1e-6)),
        Case("elbo(key, x (2, 3), linear encoder and decoder) with the default beta",
             _elbo_run(key, x, _visible_pair, a), close(1e-5, 1e-5)),
        Case("elbo(beta=0) is the reconstruction term",
             _elbo_run(key, x, _visible_pair, a, beta=0.0), close(1e-5, 1e-5)),
        Case("elbo(beta=4)", _elbo_run(key, x, _visible_pair, a, beta=4.0), close(1e-5, 1e-5)),
    ]  # fmt: skip
    for (b, d, z), beta in [((4, 5, 2), 1.0), ((3, 8, 3), 0.25), ((1, 6, 1), 3.0)]:
        x = f32(rng.uniform(size=(b, d)))
        a_enc = f32(rng.normal(size=(d, 2 * z)))
        a_dec = f32(2.0 * rng.normal(size=(z, d)))
        key = key_from(rng)
        cases.append(
            Case(
                f"elbo(key, x of shape {(b, d)}, linear encoder and decoder with "
                f"Z = {z}, beta={beta})",
                _elbo_run(key, x, _random_pair, a_enc, a_dec, beta=beta),
                close(1e-5, 1e-4),
            )
        )
    cases.append(
        Case(
            "elbo with a JAX scalar beta = float32(0.5)",
            _elbo_run(key, x, _random_pair, a_enc, a_dec, beta=jnp.float32(0.5)),
            close(1e-5, 1e-4),
        )
    )
    cases.append(
        Case(
            "elbo under jax.jit with a traced scalar beta = 0.5 (as in training)",
            _elbo_run(key, x, _random_pair, a_enc, a_dec, beta=jnp.float32(0.5), jit=True),
            close(1e-5, 1e-4),
        )
    )
    return cases


PROBES = [
    Probe("gaussian_kl_standard", vae.gaussian_kl_standard, gaussian_kl_standard_cases),
    Probe("gaussian_kl", vae.gaussian_kl, gaussian_kl_cases),
    Probe("gaussian_log_likelihood", vae.gaussian_log_likelihood, gaussian_log_likelihood_cases),
    Probe("bernoulli_log_likelihood", vae.bernoulli_log_likelihood,
          bernoulli_log_likelihood_cases),
    Probe("reparameterize", vae.reparameterize, reparameterize_cases),
    Probe("score_function_grad", vae.score_function_grad, score_function_grad_cases),
    Probe("reparameterization_grad", vae.reparameterization_grad, reparameterization_grad_cases),
    Probe("iwae_bound", vae.iwae_bound, iwae_bound_cases),
    Probe("elbo", vae.elbo, elbo_cases,
          uses=("reparameterize", "bernoulli_log_likelihood", "gaussian_kl_standard")),
]  # fmt: skip
